//! Which run of dnf, yum, zypper, pacman or apk wrote a line of the log the sensor follows.
//!
//! In: the execs and exits of package managers the kernel reports, and for a log line its
//! time. Out: the exec record of the run that wrote it, or `None`. State: per followed log,
//! the recent runs of its manager whose options point at that log, bounded.
//!
//! Each tool writes its own log from its own process (dnf and yum run rpm in-process, zypper
//! records its history itself while rpm runs as its child), so the writer is a run of the
//! log's manager. A run belongs to a log when the log its options resolve to — the tool's
//! `--installroot`/`--root`/`--logfile`/… applied to its default — is the followed one.
//!
//! While an rpm transaction runs, its lock names the process writing dnf's and yum's package
//! lines. pacman, zypper and apk open each run's lines with the command they run (`Running
//! '…'`, a `command` record): that line is given to the oldest run the kernel saw start with
//! exactly those arguments that has no line yet, and the lines after it are that run's while
//! it lives; dnf opens each run with a start line naming no command, given to the oldest run
//! without one that still runs. Without such a line (yum, apk's database), a line is the
//! run's when the run had started and had not yet ended when the line was written; when
//! several runs qualify, only a run whose command changes packages is taken, if it is the
//! only one. Anything less certain leaves the actor `null`.
//!
//! The rpm database changes under dnf, yum and zypper too; a change of it is rpm's own only
//! when the one changing `rpm` run alive at the database's modification time (exact on both
//! sides, so the margin is a clock tick) is one the kernel saw started outside any other
//! package manager, and no other changing run came and went since the previous change, whose
//! changes would be in the same reading.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::parse::manager::Manager;
use crate::source::exec::ExecRecord;
use crate::source::lock::{lock_holder, LockState};

/// Runs remembered per followed log.
const MAX_RUNS: usize = 64;

/// Log times are whole seconds; a line's real time lies within a second after its stamp.
const STAMP_SLACK: Duration = Duration::from_secs(2);

/// A file's modification time lags the write by up to one clock tick of the kernel.
const DATABASE_SLACK: Duration = Duration::from_millis(10);

/// One run of a package manager on the followed log.
#[derive(Debug, Clone)]
struct Run {
    exec: ExecRecord,
    started: SystemTime,
    ended: Option<SystemTime>,
    is_changing: bool,
    /// Whether a command line of the log was given to this run.
    has_section: bool,
}

/// The run whose command line the log wrote last; `None` when no run the kernel saw has
/// that command.
#[derive(Debug, Clone, Copy)]
struct Section {
    tgid: Option<u32>,
}

/// A followed log and the runs that write it.
#[derive(Debug)]
struct Target {
    manager: Manager,
    /// The followed file (apk: its log or its database), normalized.
    path: PathBuf,
    /// rpm's transaction locks of the log's root, for dnf and yum.
    locks: Vec<PathBuf>,
    /// For rpm: the database inside a root that a run without `--dbpath` uses.
    rpm_dbpath: PathBuf,
    runs: VecDeque<Run>,
    section: Option<Section>,
    /// For rpm: the database times of the change being attributed and of the one before.
    change_times: (Option<SystemTime>, Option<SystemTime>),
}

impl Target {
    fn slack(&self) -> Duration {
        if self.manager == Manager::Rpm {
            DATABASE_SLACK
        } else {
            STAMP_SLACK
        }
    }

    /// Returns whether a run of the target's manager with `args` writes the target's file.
    fn is_written_by(&self, manager: Manager, args: &[String]) -> bool {
        if self.manager == Manager::Rpm {
            let root = option(args, &["--root", "-r"]).unwrap_or("/");
            let dbpath = option(args, &["--dbpath"]).map_or_else(
                || self.rpm_dbpath.to_string_lossy().into_owned(),
                str::to_owned,
            );
            return manager == Manager::Rpm && super::normalize(&under(root, &dbpath)) == self.path;
        }
        writes(manager, args)
            .iter()
            .any(|(m, path)| *m == self.manager && super::normalize(path) == self.path)
    }
}

/// The runs of every followed log other than dpkg's, by source position.
#[derive(Debug, Default)]
pub struct ManagerRuns {
    targets: Vec<Option<Target>>,
}

impl ManagerRuns {
    /// Follows the runs that write `path`, `manager`'s log, the `index`-th source; for rpm,
    /// `path` is the database and `rpm_dbpath` where a run without `--dbpath` has it.
    pub fn follow(&mut self, index: usize, manager: Manager, path: &Path, rpm_dbpath: &Path) {
        if self.targets.len() <= index {
            self.targets.resize_with(index + 1, || None);
        }
        let path = super::normalize(path);
        let locks = match manager {
            Manager::Dnf | Manager::Yum => {
                let root = root_for(manager, &path).unwrap_or_else(|| PathBuf::from("/"));
                RPM_LOCKS.iter().map(|lock| root.join(lock)).collect()
            }
            _ => Vec::new(),
        };
        self.targets[index] = Some(Target {
            manager,
            path,
            locks,
            rpm_dbpath: rpm_dbpath.to_path_buf(),
            runs: VecDeque::new(),
            section: None,
            change_times: (None, None),
        });
    }

    /// Takes the exec of a package manager, seen starting at `started`.
    pub fn record_exec(&mut self, exec: &ExecRecord, started: SystemTime) {
        let Some(manager) = manager_of(exec) else {
            return;
        };
        let Some(args) = options_of(exec) else {
            return;
        };
        for target in self.targets.iter_mut().flatten() {
            if !target.is_written_by(manager, args) {
                continue;
            }
            if target.runs.len() == MAX_RUNS {
                target.runs.pop_front();
            }
            target.runs.push_back(Run {
                exec: exec.clone(),
                started,
                ended: None,
                is_changing: is_changing(manager, args),
                has_section: false,
            });
        }
    }

    /// Takes the end of a process.
    pub fn record_exit(&mut self, tgid: u32, ended: SystemTime) {
        for target in self.targets.iter_mut().flatten() {
            for run in target.runs.iter_mut().rev() {
                if run.exec.tgid == tgid && run.ended.is_none() {
                    run.ended = Some(ended);
                }
            }
        }
    }

    /// Gives the `index`-th source's line that opened a run with `command`, written at
    /// `written`, to the oldest run started with exactly that command that has no line yet.
    pub fn open_section(&mut self, index: usize, command: &str, written: SystemTime) {
        let Some(Some(target)) = self.targets.get_mut(index) else {
            return;
        };
        let manager = target.manager;
        let slack = target.slack();
        let unassigned = |run: &&mut Run| !run.has_section && is_alive_at(run, written, slack);
        let run = if matches!(manager, Manager::Dnf | Manager::Yum) {
            // dnf's start line names no command: it is the oldest run without a line that
            // still runs (it writes that line first, then resolves and installs), or, read
            // late, the oldest that was alive when the line was written.
            let mut candidates: Vec<&mut Run> = target.runs.iter_mut().filter(unassigned).collect();
            let running = candidates.iter().position(|run| run.ended.is_none());
            match running {
                Some(position) => Some(candidates.swap_remove(position)),
                None => candidates.into_iter().next(),
            }
        } else {
            target
                .runs
                .iter_mut()
                .filter(unassigned)
                .find(|run| command_matches(manager, command, &run.exec))
        };
        let tgid = run.map(|run| {
            run.has_section = true;
            run.exec.tgid
        });
        target.section = Some(Section { tgid });
    }

    /// Returns the run of the `index`-th source's manager that wrote a line at `written`.
    pub fn writer(&mut self, index: usize, written: SystemTime) -> Option<&ExecRecord> {
        let target = self.targets.get_mut(index)?.as_mut()?;
        if target.manager == Manager::Rpm {
            return rpm_writer(target, written);
        }
        let slack = target.slack();

        // Inside an rpm transaction only its holder writes package lines (dnf, yum).
        if let Ok(LockState::Held { pid: Some(pid) }) = lock_holder(&target.locks) {
            if let Some(run) = target.runs.iter().rev().find(|run| run.exec.tgid == pid) {
                return Some(&run.exec);
            }
        }
        match target.section {
            Some(Section { tgid: Some(tgid) }) => {
                let run = target.runs.iter().rev().find(|run| run.exec.tgid == tgid);
                // Lines after the run ended are another writer's (a front end without a
                // command line).
                if let Some(run) = run.filter(|run| is_alive_at(run, written, slack)) {
                    return Some(&run.exec);
                }
            }
            // The log names a run the kernel did not show: no one else wrote its lines.
            Some(Section { tgid: None }) => return None,
            None => {}
        }

        let covering: Vec<&Run> = target
            .runs
            .iter()
            .filter(|run| is_alive_at(run, written, slack))
            .collect();
        if let [only] = covering.as_slice() {
            return Some(&only.exec);
        }
        if covering.is_empty() {
            return None;
        }

        let mut changing = covering.iter().filter(|run| run.is_changing);
        match (changing.next(), changing.next()) {
            (Some(run), None) => Some(&run.exec),
            _ => None,
        }
    }
}

/// Returns the rpm run that changed the database at `changed`: the one changing run alive
/// then, when no other changing run started after the previous change and ended before this
/// one (its changes would be in the same reading).
fn rpm_writer(target: &mut Target, changed: SystemTime) -> Option<&ExecRecord> {
    if target.change_times.0 != Some(changed) {
        target.change_times = (Some(changed), target.change_times.0);
    }
    let previous = target.change_times.1.unwrap_or(SystemTime::UNIX_EPOCH);
    let mut alive = target
        .runs
        .iter()
        .filter(|run| run.is_changing && is_alive_at(run, changed, DATABASE_SLACK));
    let (Some(writer), None) = (alive.next(), alive.next()) else {
        return None;
    };
    let came_and_went = target.runs.iter().any(|run| {
        run.is_changing
            && run.exec.tgid != writer.exec.tgid
            && run.started > previous
            && run
                .ended
                .is_some_and(|ended| ended + DATABASE_SLACK < changed)
    });
    // TODO: two rpm runs by hand between two readings of the database (a second or less
    // apart) leave their changes unattributed, and so unreported; so does a changing run
    // that failed and changed nothing just before another. The install transaction id of
    // each new header could tell the runs apart.
    (!came_and_went).then_some(&writer.exec)
}

/// Whether a run had started and not yet ended, within `slack`, when a line stamped
/// `written` was written.
fn is_alive_at(run: &Run, written: SystemTime, slack: Duration) -> bool {
    run.started <= written + slack && run.ended.is_none_or(|ended| ended + slack >= written)
}

/// Whether the command a log wrote is the one `exec` ran: pacman and apk join the arguments
/// with spaces, zypper quotes each in single quotes. A cut argument list matches its start.
fn command_matches(manager: Manager, logged: &str, exec: &ExecRecord) -> bool {
    let written = match manager {
        Manager::Zypper => exec
            .argv
            .iter()
            .map(|arg| format!("'{arg}'"))
            .collect::<Vec<_>>()
            .join(" "),
        Manager::Pacman | Manager::Apk => exec.argv.join(" "),
        Manager::Dpkg | Manager::Dnf | Manager::Yum | Manager::Rpm => return false,
    };
    if exec.is_truncated {
        logged.starts_with(&written)
    } else {
        logged == written
    }
}

/// rpm's transaction lock, relative to a root, where rpm-based distributions keep it.
const RPM_LOCKS: [&str; 2] = ["var/lib/rpm/.rpm.lock", "usr/lib/sysimage/rpm/.rpm.lock"];

/// Returns the root a manager's followed file lies under, from its default location.
fn root_for(manager: Manager, path: &Path) -> Option<PathBuf> {
    crate::source::followed::root_of(path, manager.default_log())
}

/// Names each manager's programs go by; yum is dnf on systems where dnf replaced it.
fn manager_of(exec: &ExecRecord) -> Option<Manager> {
    let name = Path::new(&exec.filename).file_name()?.to_str()?;
    Some(match name {
        "dnf" | "dnf-3" | "dnf4" | "dnf5" | "microdnf" => Manager::Dnf,
        "yum" | "yum-3" => Manager::Yum,
        "zypper" => Manager::Zypper,
        "pacman" => Manager::Pacman,
        "apk" => Manager::Apk,
        "rpm" => Manager::Rpm,
        _ => return None,
    })
}

/// Returns the arguments after the program: for a script (dnf, yum) the kernel's argument
/// list starts with the interpreter, then the script.
fn options_of(exec: &ExecRecord) -> Option<&[String]> {
    let script = Path::new(&exec.filename).file_name()?;
    let position = exec
        .argv
        .iter()
        .position(|arg| Path::new(arg).file_name() == Some(script) || *arg == exec.filename)?;
    Some(&exec.argv[position + 1..])
}

/// Returns the value of option `name` (`--name=value`, `--name value`, or a short `-x value`).
fn option<'a>(args: &'a [String], names: &[&str]) -> Option<&'a str> {
    let mut value = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        for name in names {
            if let Some(v) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
                if name.starts_with("--") {
                    value = Some(v);
                }
            } else if arg == name {
                value = rest.clone().next().map(String::as_str);
            }
        }
    }
    value
}

/// Returns every `--setopt=key=value` (or `--setopt key=value`) value for `key`, the last.
fn setopt<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    let mut value = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let setting = match arg.strip_prefix("--setopt") {
            Some(v) if v.starts_with('=') => Some(&v[1..]),
            Some("") => rest.clone().next().map(String::as_str),
            _ => None,
        };
        if let Some(v) = setting.and_then(|s| s.strip_prefix(key)?.strip_prefix('=')) {
            value = Some(v);
        }
    }
    value
}

/// Joins a root and an absolute path inside it.
fn under(root: &str, path: &str) -> PathBuf {
    Path::new(root).join(path.trim_start_matches('/'))
}

/// Returns the files a run with `args` writes, for each manager it could be writing for.
fn writes(manager: Manager, args: &[String]) -> Vec<(Manager, PathBuf)> {
    match manager {
        Manager::Dnf | Manager::Yum => {
            let root = option(args, &["--installroot"]).unwrap_or("/");
            let logdir = setopt(args, "logdir").unwrap_or("/var/log");
            // On dnf-based systems `yum` is dnf and writes dnf's log; the old yum its own.
            vec![
                (Manager::Dnf, under(root, logdir).join("dnf.rpm.log")),
                (Manager::Yum, under(root, logdir).join("yum.log")),
            ]
        }
        Manager::Zypper => {
            let root = option(args, &["--root", "-R"]).unwrap_or("/");
            vec![(Manager::Zypper, under(root, "/var/log/zypp/history"))]
        }
        Manager::Pacman => vec![(Manager::Pacman, pacman_log(args))],
        Manager::Apk => {
            let root = option(args, &["--root", "-p"]).unwrap_or("/");
            let mut files = vec![(Manager::Apk, under(root, "/lib/apk/db/installed"))];
            if !args.iter().any(|a| a == "--no-logfile") {
                files.push((Manager::Apk, under(root, "/var/log/apk.log")));
            }
            files
        }
        // rpm's database depends on the follower's default; see `Target::is_written_by`.
        Manager::Dpkg | Manager::Rpm => Vec::new(),
    }
}

/// Returns the log pacman writes: `--logfile`, else the configuration's `LogFile`, else the
/// default inside `--root`; everything inside `--sysroot` when given.
fn pacman_log(args: &[String]) -> PathBuf {
    let sysroot = option(args, &["--sysroot"]);
    let config = option(args, &["--config"]).unwrap_or("/etc/pacman.conf");
    let config = match sysroot {
        Some(sysroot) => under(sysroot, config),
        None => PathBuf::from(config),
    };
    let log = option(args, &["--logfile"])
        .map(PathBuf::from)
        .or_else(|| configured_log_file(&config))
        .unwrap_or_else(|| {
            let root = option(args, &["--root", "-r"]).unwrap_or("/");
            under(root, "/var/log/pacman.log")
        });
    match sysroot {
        Some(sysroot) => under(sysroot, &log.to_string_lossy()),
        None => log,
    }
}

/// Reads `LogFile = …` from the `[options]` section of a pacman configuration.
fn configured_log_file(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let mut in_options = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_options = line == "[options]";
        } else if in_options {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "LogFile" {
                    return Some(PathBuf::from(value.trim()));
                }
            }
        }
    }
    None
}

/// Whether a run's command changes packages, for telling apart runs alive at once.
fn is_changing(manager: Manager, args: &[String]) -> bool {
    let command = |skip_values: &[&str]| {
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if skip_values.contains(&arg.as_str()) {
                rest.next();
            } else if !arg.starts_with('-') {
                return Some(arg.as_str());
            }
        }
        None
    };
    match manager {
        Manager::Dnf | Manager::Yum => command(&["--installroot", "--setopt", "-c", "--config"])
            .is_some_and(|c| {
                matches!(
                    c,
                    "install"
                        | "in"
                        | "localinstall"
                        | "reinstall"
                        | "rei"
                        | "remove"
                        | "rm"
                        | "erase"
                        | "upgrade"
                        | "up"
                        | "update"
                        | "upgrade-minimal"
                        | "downgrade"
                        | "dg"
                        | "distro-sync"
                        | "dsync"
                        | "autoremove"
                        | "swap"
                        | "group"
                        | "groupinstall"
                        | "groupremove"
                        | "module"
                        | "history"
                        | "shell"
                )
            }),
        Manager::Zypper => command(&["--root", "-R", "--config", "-c"]).is_some_and(|c| {
            matches!(
                c,
                "install"
                    | "in"
                    | "remove"
                    | "rm"
                    | "update"
                    | "up"
                    | "dist-upgrade"
                    | "dup"
                    | "patch"
                    | "install-new-recommends"
                    | "inr"
            )
        }),
        Manager::Pacman => args.iter().any(|arg| {
            let operations = if let Some(long) = arg.strip_prefix("--") {
                return matches!(long, "sync" | "upgrade" | "remove");
            } else if let Some(short) = arg.strip_prefix('-') {
                short
            } else {
                return false;
            };
            operations.contains(['S', 'U', 'R'])
        }),
        Manager::Apk => command(&["--root", "-p", "-X", "--repository"])
            .is_some_and(|c| matches!(c, "add" | "del" | "upgrade" | "fix")),
        // rpm's mode is its first option: -i, -U, -F, -e, or their long names.
        Manager::Rpm => args.iter().any(|arg| {
            matches!(
                arg.as_str(),
                "--install" | "--upgrade" | "--freshen" | "--erase" | "--reinstall" | "--import"
            ) || (arg.len() > 1
                && !arg.starts_with("--")
                && arg.starts_with('-')
                && matches!(arg.as_bytes()[1], b'i' | b'U' | b'F' | b'e'))
        }),
        Manager::Dpkg => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn exec(tgid: u32, filename: &str, argv: &[&str]) -> ExecRecord {
        ExecRecord {
            pid: tgid,
            tgid,
            ppid: 1,
            uid: 0,
            euid: 0,
            gid: 0,
            loginuid: None,
            sessionid: None,
            tty: None,
            cgroup_id: 0,
            comm: "x".to_owned(),
            filename: filename.to_owned(),
            argv: args(argv),
            ancestry: Vec::new(),
            ktime: 0,
            executable: (0, 0),
            tracked_root: tgid,
            is_package_manager: true,
            is_truncated: false,
            is_partial: false,
        }
    }

    #[test]
    fn each_tool_writes_the_log_its_options_name() {
        let dnf = args(&["-y", "--installroot=/srv/r", "install", "x.rpm"]);
        assert_eq!(
            writes(Manager::Dnf, &dnf)[0],
            (Manager::Dnf, PathBuf::from("/srv/r/var/log/dnf.rpm.log"))
        );
        let dnf = args(&["--setopt", "logdir=/l", "install", "x"]);
        assert_eq!(
            writes(Manager::Dnf, &dnf)[0].1,
            PathBuf::from("/l/dnf.rpm.log")
        );
        let zypper = args(&["--non-interactive", "--root", "/srv/z", "install", "x"]);
        assert_eq!(
            writes(Manager::Zypper, &zypper),
            [(
                Manager::Zypper,
                PathBuf::from("/srv/z/var/log/zypp/history")
            )]
        );
        let pacman = args(&[
            "--noconfirm",
            "-r",
            "/srv/p",
            "--config",
            "/nonexistent",
            "-U",
            "x",
        ]);
        assert_eq!(
            pacman_log(&pacman),
            PathBuf::from("/srv/p/var/log/pacman.log")
        );
        let pacman = args(&["--logfile", "/l/p.log", "-S", "x"]);
        assert_eq!(pacman_log(&pacman), PathBuf::from("/l/p.log"));
        let apk = args(&["--root", "/srv/a", "add", "x"]);
        assert_eq!(
            writes(Manager::Apk, &apk),
            [
                (Manager::Apk, PathBuf::from("/srv/a/lib/apk/db/installed")),
                (Manager::Apk, PathBuf::from("/srv/a/var/log/apk.log")),
            ]
        );
    }

    #[test]
    fn pacman_reads_its_log_file_from_its_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("pacman.conf");
        std::fs::write(
            &config,
            "[options]\nLogFile = /custom/pacman.log\n[core]\nLogFile = /not/this\n",
        )
        .expect("write");
        let config = config.display().to_string();
        assert_eq!(
            pacman_log(&args(&["--config", &config, "-r", "/srv/p", "-S", "x"])),
            PathBuf::from("/custom/pacman.log")
        );
        assert_eq!(
            pacman_log(&args(&["--sysroot", "/srv/s", "-S", "x"])),
            PathBuf::from("/srv/s/var/log/pacman.log")
        );
    }

    #[test]
    fn scripts_are_read_after_their_interpreter() {
        let dnf = exec(
            7,
            "/usr/bin/dnf",
            &["/usr/bin/python3", "/usr/bin/dnf", "-y", "install", "x"],
        );
        assert_eq!(manager_of(&dnf), Some(Manager::Dnf));
        assert_eq!(options_of(&dnf), Some(&args(&["-y", "install", "x"])[..]));
        let pacman = exec(8, "/usr/bin/pacman", &["pacman", "-U", "x"]);
        assert_eq!(options_of(&pacman), Some(&args(&["-U", "x"])[..]));
        assert_eq!(
            manager_of(&exec(9, "/usr/bin/rpm", &["rpm", "-i"])),
            Some(Manager::Rpm)
        );
        assert_eq!(
            manager_of(&exec(9, "/usr/bin/rpmbuild", &["rpmbuild"])),
            None
        );
    }

    #[test]
    fn a_line_is_given_only_to_the_one_run_alive_when_it_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let log = root.join("var/log/pacman.log");
        let root_arg = root.display().to_string();
        let mut runs = ManagerRuns::default();
        runs.follow(1, Manager::Pacman, &log, Path::new("/var/lib/rpm"));

        let t = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs);
        let install = exec(
            10,
            "/usr/bin/pacman",
            &["pacman", "-r", &root_arg, "-U", "a"],
        );
        let query = exec(11, "/usr/bin/pacman", &["pacman", "-r", &root_arg, "-Q"]);
        let elsewhere = exec(12, "/usr/bin/pacman", &["pacman", "-U", "b"]);
        runs.record_exec(&install, t(0));
        runs.record_exec(&elsewhere, t(0));
        assert_eq!(runs.writer(1, t(1)).map(|e| e.tgid), Some(10));

        // A query run alive at the same time: the changing run is still the writer.
        runs.record_exec(&query, t(5));
        assert_eq!(runs.writer(1, t(6)).map(|e| e.tgid), Some(10));
        runs.record_exit(10, t(7));
        runs.record_exit(11, t(8));
        assert_eq!(runs.writer(1, t(7)).map(|e| e.tgid), Some(10));

        // Before any run, long after the last, or with two changing runs alive: unknown.
        assert_eq!(
            runs.writer(1, t(0) - Duration::from_mins(1))
                .map(|e| e.tgid),
            None
        );
        assert_eq!(runs.writer(1, t(60)).map(|e| e.tgid), None);
        let second = exec(
            13,
            "/usr/bin/pacman",
            &["pacman", "-r", &root_arg, "-R", "a"],
        );
        let third = exec(
            14,
            "/usr/bin/pacman",
            &["pacman", "-r", &root_arg, "-S", "c"],
        );
        runs.record_exec(&second, t(100));
        runs.record_exec(&third, t(100));
        assert_eq!(runs.writer(1, t(101)).map(|e| e.tgid), None);
        assert_eq!(
            runs.writer(2, t(101)).map(|e| e.tgid),
            None,
            "no such source"
        );
    }

    #[test]
    fn command_lines_give_back_to_back_runs_of_one_command_their_own_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root").display().to_string();
        let log = Path::new(&root).join("var/log/pacman.log");
        let mut runs = ManagerRuns::default();
        runs.follow(0, Manager::Pacman, &log, Path::new("/var/lib/rpm"));
        let t = |millis: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(5_000_000 + millis);
        let argv = ["pacman", "-r", root.as_str(), "-U", "x.pkg.tar.zst"];
        let command = argv.join(" ");

        // Two runs of the same command within one second: the second's lines are its own.
        let first = exec(20, "/usr/bin/pacman", &argv);
        let second = exec(21, "/usr/bin/pacman", &argv);
        runs.record_exec(&first, t(0));
        runs.open_section(0, &command, t(0));
        assert_eq!(runs.writer(0, t(0)).map(|e| e.tgid), Some(20));
        runs.record_exit(20, t(100));
        runs.record_exec(&second, t(300));
        runs.open_section(0, &command, t(0));
        assert_eq!(runs.writer(0, t(0)).map(|e| e.tgid), Some(21));

        // A command no run the kernel saw has: its lines have no actor.
        runs.open_section(0, "pacman -S other", t(400));
        assert_eq!(runs.writer(0, t(400)).map(|e| e.tgid), None);

        // zypper quotes every argument.
        let zypper = exec(
            30,
            "/usr/bin/zypper",
            &["zypper", "--root", "/r", "in", "a b"],
        );
        assert!(command_matches(
            Manager::Zypper,
            "'zypper' '--root' '/r' 'in' 'a b'",
            &zypper
        ));
        assert!(!command_matches(
            Manager::Zypper,
            "'zypper' '--root' '/r' 'in' 'a'",
            &zypper
        ));
    }

    #[test]
    fn dnf_start_lines_go_to_the_run_still_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().display().to_string();
        let log = dir.path().join("var/log/dnf.rpm.log");
        let mut runs = ManagerRuns::default();
        runs.follow(1, Manager::Dnf, &log, Path::new("/var/lib/rpm"));
        let t = |millis: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(7_000_000 + millis);
        let installroot = format!("--installroot={root}");
        let dnf = |tgid, command: &str| {
            let argv = [
                "/usr/bin/python3",
                "/usr/bin/dnf",
                "-y",
                &installroot,
                command,
                "x",
            ];
            exec(tgid, "/usr/bin/dnf", &argv)
        };

        // The reinstall ended a moment before the downgrade wrote its lines in the same second.
        runs.record_exec(&dnf(50, "reinstall"), t(0));
        runs.open_section(1, "", t(0));
        runs.record_exit(50, t(400));
        runs.record_exec(&dnf(51, "downgrade"), t(450));
        runs.open_section(1, "", t(0));
        assert_eq!(runs.writer(1, t(0)).map(|e| e.tgid), Some(51));
    }

    #[test]
    fn an_rpm_database_change_is_given_to_the_one_rpm_run_alive_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().display().to_string();
        let mut runs = ManagerRuns::default();
        let dbpath = Path::new("/var/lib/rpm");
        runs.follow(3, Manager::Rpm, &dir.path().join("var/lib/rpm"), dbpath);
        let t = |millis: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(9_000_000 + millis);
        let rpm =
            |tgid, mode: &str| exec(tgid, "/usr/bin/rpm", &["rpm", "--root", &root, mode, "x"]);

        // Back to back: the install ended 20 ms before the upgrade wrote.
        runs.record_exec(&rpm(40, "-i"), t(0));
        assert_eq!(runs.writer(3, t(300)).map(|e| e.tgid), Some(40));
        runs.record_exit(40, t(350));
        runs.record_exec(&rpm(41, "-U"), t(360));
        assert_eq!(runs.writer(3, t(370)).map(|e| e.tgid), Some(41));
        runs.record_exit(41, t(400));

        // The sensor's own queries change nothing; dnf's transactions run no rpm at all.
        runs.record_exec(&rpm(42, "-qa"), t(500));
        assert_eq!(runs.writer(3, t(505)).map(|e| e.tgid), None);

        // A whole run came and went since the last change: its changes are in this reading.
        runs.record_exec(&rpm(43, "-e"), t(600));
        runs.record_exit(43, t(650));
        runs.record_exec(&rpm(44, "-i"), t(700));
        assert_eq!(runs.writer(3, t(750)).map(|e| e.tgid), None);
    }

    #[test]
    fn changing_commands_are_told_from_queries() {
        assert!(is_changing(
            Manager::Dnf,
            &args(&["-y", "--installroot", "/r", "install", "x"])
        ));
        assert!(!is_changing(
            Manager::Dnf,
            &args(&["--installroot", "/r", "list"])
        ));
        assert!(is_changing(
            Manager::Zypper,
            &args(&["--root", "/r", "in", "x"])
        ));
        assert!(!is_changing(
            Manager::Zypper,
            &args(&["--root", "/r", "search", "x"])
        ));
        assert!(is_changing(Manager::Pacman, &args(&["-Syu"])));
        assert!(!is_changing(Manager::Pacman, &args(&["-Qi", "x"])));
        assert!(is_changing(Manager::Apk, &args(&["-p", "/r", "add", "x"])));
        assert!(!is_changing(Manager::Apk, &args(&["info"])));
        assert!(is_changing(
            Manager::Rpm,
            &args(&["--root", "/r", "-ivh", "x.rpm"])
        ));
        assert!(is_changing(Manager::Rpm, &args(&["-e", "x"])));
        assert!(!is_changing(Manager::Rpm, &args(&["-qi", "x"])));
        assert!(!is_changing(
            Manager::Rpm,
            &args(&["-qa", "--queryformat", "%{NAME}"])
        ));
    }
}
