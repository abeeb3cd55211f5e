//! The attribute stage: kernel exec records and dpkg.log lines in, the actor of each line out.
//!
//! In: [`KernelRecord`]s (every exec of a package manager and of its descendants, every exit),
//! and, for each log line, its time. Out: the actor — who ran the dpkg that wrote the line,
//! from which login session, through which command — as the JSON object events carry. State:
//! the recent dpkg runs on the followed admin directory (whichever log they write, so runs
//! that bypass the followed log can be named), those on other admin directories that write
//! the followed log (`dpkg --root`, `--admindir`: their lines speak of another database), and
//! the package-manager execs above them, all bounded.
//!
//! A line is attributed to a dpkg process only on evidence: dpkg holds an fcntl lock on its
//! admin directory for its whole run, so the lock holder, when it is a dpkg run the kernel saw
//! start on this log, wrote the line. When the writer has already exited, the last dpkg run
//! on this log that changed packages and ended after the line was written is the writer. When
//! neither holds — the line predates the sensor, the kernel saw no such run — the actor stays
//! `null`: no guess is presented as fact. The logs of the other managers are attributed the
//! same way by [`manager`], from each tool's own options and lifetime.

pub mod history;
pub mod manager;
pub mod script;
pub mod ssh;
mod users;

use std::collections::{HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{Local, NaiveDateTime, TimeZone};
use serde_json::{json, Value};

use crate::event::escape_control;
use crate::parse::dpkg::parse_timestamp;
use crate::parse::manager::{Manager, RunStart};
use crate::source::exec::{ExecRecord, ExitRecord, KernelRecord};
use crate::source::followed::SourceTag;
use crate::source::lock::{dpkg_lock_holder, LockState};
use manager::ManagerRuns;
use script::{PackageScripts, ScriptLog};
use users::UserNames;

/// dpkg runs remembered; older ones can no longer be the writer of a line being read.
const MAX_RUNS: usize = 256;
/// Package-manager execs remembered for naming the command above a dpkg run.
const MAX_MANAGERS: usize = 1024;
/// dpkg writes whole seconds; a line's real time lies within a second after its stamp.
const STAMP_SLACK: Duration = Duration::from_secs(2);
/// How far the kernel's clock, placed in wall time, may be off the wall clock dpkg stamps with.
const CLOCK_SLACK: Duration = Duration::from_millis(250);

/// dpkg options that change the database and so write the log.
const WRITING_OPTIONS: &[&str] = &[
    "-i",
    "--install",
    "--unpack",
    "--configure",
    "-r",
    "--remove",
    "-P",
    "--purge",
    "--triggers-only",
    "-a",
    "--pending",
    "--record-avail",
    "-A",
];

/// One dpkg process the kernel saw start on the followed admin directory or log.
#[derive(Debug, Clone)]
struct DpkgRun {
    exec: ExecRecord,
    started: SystemTime,
    ended: Option<SystemTime>,
    /// The log the run writes (`--log`, or dpkg's default).
    log: PathBuf,
    /// Whether that is the followed log, so the run's lines are attributed to it.
    writes_followed_log: bool,
    /// Whether the run changes the followed database; a run that does not is kept only to
    /// tell its lines in the followed log apart.
    on_followed_database: bool,
}

impl DpkgRun {
    /// Whether the run was going during the second a line is stamped with: a line's real time
    /// lies within the second after its stamp.
    fn was_running_in(&self, stamp: SystemTime) -> bool {
        self.started <= stamp + Duration::from_secs(1) + CLOCK_SLACK
            && self.ended.is_none_or(|ended| ended + CLOCK_SLACK >= stamp)
    }
}

/// A dpkg run that ended, with what its maintainer scripts ran.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// The run's actor, as its events carry it.
    pub actor: Value,
    pub ended: SystemTime,
    /// Per package, the commands its scripts started.
    pub scripts: Vec<PackageScripts>,
}

/// Attributes dpkg.log lines to the processes that wrote them.
#[derive(Debug)]
pub struct Attributor {
    log: PathBuf,
    admin_dir: PathBuf,
    sensor_started: SystemTime,
    /// Wall-clock time minus kernel monotonic time, to place exec records in wall time.
    boot_offset: Duration,
    runs: VecDeque<DpkgRun>,
    managers: HashMap<u32, ExecRecord>,
    users: UserNames,
    scripts: ScriptLog,
    /// Packages each run installed or upgraded, to place scripts of the unpacked archive.
    unpacked: HashMap<u32, Vec<(String, Option<String>)>>,
    finished: Vec<FinishedRun>,
    /// Whether the lines since the last `startup` line were written by a run on another
    /// database; `None` when that run is not known.
    segment_elsewhere: Option<bool>,
    /// The runs that write the other managers' logs.
    manager_runs: ManagerRuns,
}

impl Attributor {
    /// Creates an attributor for the dpkg runs that write `log` and lock `admin_dir`.
    #[must_use]
    pub fn new(log: &Path, admin_dir: &Path) -> Self {
        Self {
            log: normalize(log),
            admin_dir: normalize(admin_dir),
            sensor_started: SystemTime::now(),
            boot_offset: boot_offset(),
            runs: VecDeque::new(),
            managers: HashMap::new(),
            users: UserNames::default(),
            scripts: ScriptLog::default(),
            unpacked: HashMap::new(),
            finished: Vec::new(),
            segment_elsewhere: None,
            manager_runs: ManagerRuns::default(),
        }
    }

    /// Also attributes the lines of `source`, another manager's log (or apk's or rpm's
    /// database) at `path`; `rpm_dbpath` is where rpm keeps its database in a root when run
    /// without `--dbpath`.
    pub fn follow(&mut self, source: SourceTag, path: &Path, rpm_dbpath: &Path) {
        if source.manager != Manager::Dpkg {
            self.manager_runs
                .follow(source.index, source.manager, path, rpm_dbpath);
        }
    }

    /// Takes one kernel record.
    pub fn record(&mut self, record: KernelRecord) {
        match record {
            KernelRecord::Exec(exec) => self.record_exec(exec),
            KernelRecord::Exit(exit) => self.record_exit(&exit),
        }
    }

    fn record_exec(&mut self, exec: ExecRecord) {
        tracing::trace!(
            pid = exec.tgid,
            filename = %escape_control(&exec.filename),
            ancestry = ?exec.ancestry.iter().map(|a| a.pid).collect::<Vec<_>>(),
            "kernel exec record"
        );
        let run = self
            .runs
            .iter()
            .rev()
            .filter(|run| run.on_followed_database)
            .find(|run| exec.ancestry.iter().any(|a| a.pid == run.exec.tgid))
            .map(|run| run.exec.tgid);
        if let Some(run) = run {
            let command = command_line(&exec);
            self.scripts.record(run, &exec, &command);
        }
        if !exec.is_package_manager {
            return;
        }
        self.manager_runs
            .record_exec(&exec, self.wall_time(exec.ktime));
        if is_dpkg(&exec) {
            let (log, admin_dir) = dpkg_paths(&exec.argv);
            // Runs that log elsewhere are kept too: their changes never reach the followed log.
            // Runs on another database that log here are kept to tell their lines apart.
            let on_followed_database = admin_dir == self.admin_dir;
            let writes_followed_log = log == self.log;
            if (on_followed_database || writes_followed_log) && is_writing(&exec.argv) {
                let started = self.wall_time(exec.ktime);
                if self.runs.len() == MAX_RUNS {
                    self.runs.pop_front();
                }
                self.runs.push_back(DpkgRun {
                    exec: exec.clone(),
                    started,
                    ended: None,
                    writes_followed_log,
                    on_followed_database,
                    log,
                });
            }
        }
        if self.managers.len() >= MAX_MANAGERS {
            // Forget the oldest half; the commands still needed belong to recent runs.
            let mut by_age: Vec<(u64, u32)> =
                self.managers.values().map(|e| (e.ktime, e.tgid)).collect();
            by_age.sort_unstable();
            for (_, tgid) in by_age.iter().take(MAX_MANAGERS / 2) {
                self.managers.remove(tgid);
            }
        }
        self.managers.insert(exec.tgid, exec);
    }

    fn record_exit(&mut self, exit: &ExitRecord) {
        tracing::trace!(pid = exit.tgid, code = exit.exit_code, "kernel exit record");
        let ended = self.wall_time(exit.ktime);
        self.manager_runs.record_exit(exit.tgid, ended);
        let Some(run) = self
            .runs
            .iter_mut()
            .rev()
            .find(|r| r.exec.tgid == exit.tgid)
        else {
            return;
        };
        if run.ended.is_some() {
            return;
        }
        run.ended = Some(ended);
        if !run.on_followed_database {
            return;
        }
        let exec = run.exec.clone();

        let mut scripts = self.scripts.finish(exec.tgid);
        let unpacked = self.unpacked.remove(&exec.tgid).unwrap_or_default();
        if let [(package, arch)] = unpacked.as_slice() {
            // With one archive in the run, its unpack-time scripts can only be that package's.
            script::assign_unpacked(&mut scripts, package, arch.as_deref());
        }
        if !scripts.is_empty() {
            let actor = self.actor(&exec);
            self.finished.push(FinishedRun {
                actor,
                ended,
                scripts,
            });
        }
    }

    /// Notes that the run named in `actor` installed or upgraded `package`.
    pub fn note_unpacked(&mut self, actor: &Value, package: &str, arch: Option<&str>) {
        let Some(pid) = actor["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
        else {
            return;
        };
        if self.unpacked.len() >= MAX_RUNS && !self.unpacked.contains_key(&pid) {
            // Runs whose exit was never seen; none of them can still be placed.
            self.unpacked.clear();
        }
        let packages = self.unpacked.entry(pid).or_default();
        if packages.len() < 2 && !packages.iter().any(|(p, _)| p == package) {
            packages.push((package.to_owned(), arch.map(str::to_owned)));
        }
    }

    /// Returns the dpkg runs that ended since the last call, with their scripts' activity.
    pub fn take_finished(&mut self) -> Vec<FinishedRun> {
        std::mem::take(&mut self.finished)
    }

    fn wall_time(&self, ktime: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.boot_offset + Duration::from_nanos(ktime)
    }

    /// Returns the actor of a line stamped `timestamp` (the log's local time), or `None` when
    /// the writer is not known for certain.
    pub fn actor_for_line(&mut self, timestamp: NaiveDateTime) -> Option<Value> {
        let written = Local
            .from_local_datetime(&timestamp)
            .earliest()
            .map(SystemTime::from)?;
        if written + STAMP_SLACK < self.sensor_started {
            return None;
        }
        let run = self.writer(written)?.clone();
        Some(self.actor(&run.exec))
    }

    /// Returns the dpkg runs on the followed admin directory that were still running at or
    /// started after `since`, oldest first.
    pub fn runs_since(&mut self, since: SystemTime) -> Vec<crate::integrity::RunSeen> {
        let runs: Vec<DpkgRun> = self
            .runs
            .iter()
            .filter(|run| run.on_followed_database)
            .filter(|run| run.ended.is_none_or(|ended| ended + STAMP_SLACK >= since))
            .cloned()
            .collect();
        runs.into_iter()
            .map(|run| crate::integrity::RunSeen {
                actor: self.actor(&run.exec),
                log: run.log,
                writes_followed_log: run.writes_followed_log,
                ended: run.ended,
            })
            .collect()
    }

    /// Takes each line of the followed log in order and returns whether a dpkg run on another
    /// admin directory (`dpkg --root`, `--admindir`) wrote it; its `status` lines then describe
    /// that other database, not the followed one.
    ///
    /// Every dpkg run begins its lines with a `startup` line, written once it holds its lock:
    /// the newest run the kernel saw start on the followed log by then wrote it and the lines
    /// up to the next `startup` line. Lines older than the sensor, and lines of a run the
    /// kernel did not see, are taken as the followed database's.
    pub fn wrote_other_database(&mut self, line: &[u8]) -> bool {
        if line.get(19..28) == Some(b" startup ".as_slice()) {
            self.segment_elsewhere = self
                .startup_writer(line)
                .map(|run| !run.on_followed_database);
        }
        self.segment_elsewhere == Some(true)
    }

    /// Finds the run that wrote a `startup` line: the newest one started by its stamp and not
    /// ended before it.
    fn startup_writer(&self, line: &[u8]) -> Option<&DpkgRun> {
        // Without a run on another database in sight, the answer cannot be "elsewhere".
        if !self.runs.iter().any(|run| !run.on_followed_database) {
            return None;
        }
        let stamp = parse_timestamp(line)
            .ok()
            .and_then(|stamp| Local.from_local_datetime(&stamp).earliest())
            .map(SystemTime::from)?;
        if stamp + STAMP_SLACK < self.sensor_started {
            return None;
        }
        self.runs
            .iter()
            .filter(|run| run.writes_followed_log && run.was_running_in(stamp))
            .max_by_key(|run| run.started)
    }

    /// Returns the actor of a change `source` read from a line stamped `timestamp` (the host's
    /// local time), or `None` when the writer is not known for certain.
    ///
    /// For managers other than dpkg the actor has no `dpkg_command`.
    pub fn actor_for_change(
        &mut self,
        source: SourceTag,
        timestamp: NaiveDateTime,
    ) -> Option<Value> {
        if source.manager == Manager::Dpkg {
            return self.actor_for_line(timestamp);
        }
        let written = Local
            .from_local_datetime(&timestamp)
            .earliest()
            .map(SystemTime::from)?;
        if written + STAMP_SLACK < self.sensor_started {
            return None;
        }
        let exec = self.manager_runs.writer(source.index, written)?.clone();
        // rpm run by dnf's or zypper's transaction is theirs, and their logs report it.
        if source.manager == Manager::Rpm && exec.tracked_root != exec.tgid {
            return None;
        }
        let mut actor = self.actor(&exec);
        if let Some(object) = actor.as_object_mut() {
            object.remove("dpkg_command");
        }
        Some(actor)
    }

    /// Learns that a line of `source` opened a run of its manager, so the lines that follow
    /// are that run's.
    pub fn run_started(&mut self, source: SourceTag, start: &RunStart) {
        let Some(written) = Local
            .from_local_datetime(&start.timestamp)
            .earliest()
            .map(SystemTime::from)
        else {
            return;
        };
        self.manager_runs
            .open_section(source.index, &start.command, written);
    }

    /// Finds the dpkg run that wrote a line at `written`.
    fn writer(&self, written: SystemTime) -> Option<&DpkgRun> {
        let started_before = |run: &&DpkgRun| {
            run.on_followed_database
                && run.writes_followed_log
                && run.started <= written + STAMP_SLACK
        };

        // The lock holder is the writer, if it is a run the kernel saw start in time.
        if let Ok(LockState::Held { pid: Some(pid) }) = dpkg_lock_holder(&self.admin_dir) {
            if let Some(run) = self
                .runs
                .iter()
                .rev()
                .filter(started_before)
                .find(|r| r.exec.tgid == pid)
            {
                return Some(run);
            }
        }

        // Already gone: the last run that ended after the line was written.
        self.runs.iter().rev().filter(started_before).find(|run| {
            run.ended
                .is_some_and(|ended| ended + STAMP_SLACK >= written)
        })
    }

    /// Builds the actor object from the dpkg exec record and the execs above it.
    fn actor(&mut self, dpkg: &ExecRecord) -> Value {
        // The farthest package manager above dpkg is the command a person typed.
        let top = dpkg
            .ancestry
            .iter()
            .rev()
            .filter_map(|ancestor| self.managers.get(&ancestor.pid))
            .find(|exec| !is_dpkg(exec))
            .cloned();
        let dpkg_command = command_line(dpkg);
        let command = top
            .as_ref()
            .map_or_else(|| dpkg_command.clone(), command_line);

        let ancestry: Vec<Value> = dpkg
            .ancestry
            .iter()
            .map(|a| {
                json!({
                    "pid": a.pid,
                    "comm": escape_control(&a.comm),
                    "uid": a.uid,
                    "user": self.users.name(a.uid),
                })
            })
            .collect();
        let ssh = dpkg
            .ancestry
            .iter()
            .find(|a| a.comm.starts_with("sshd"))
            .map(|sshd| json!({ "sshd_pid": sshd.pid }));

        json!({
            "pid": dpkg.tgid,
            "uid": dpkg.uid,
            "user": self.users.name(dpkg.uid),
            "euid": dpkg.euid,
            "loginuid": dpkg.loginuid,
            "login_user": dpkg.loginuid.and_then(|uid| self.users.name(uid)),
            "sessionid": dpkg.sessionid,
            "tty": dpkg.tty.as_deref().map(escape_control),
            "command": command,
            "dpkg_command": dpkg_command,
            "ancestry": ancestry,
            "session_leader": ancestry.last().cloned(),
            "ssh": ssh,
        })
    }
}

/// Whether an exec is dpkg itself (not dpkg-deb, dpkg-query, …).
fn is_dpkg(exec: &ExecRecord) -> bool {
    Path::new(&exec.filename)
        .file_name()
        .is_some_and(|name| name == "dpkg")
}

/// Whether dpkg's arguments ask for a change of the database (and so for log lines).
fn is_writing(argv: &[String]) -> bool {
    argv.iter().skip(1).any(|arg| {
        WRITING_OPTIONS.contains(&arg.as_str())
            || (arg.starts_with('-') && !arg.starts_with("--") && arg.len() > 2 && {
                // Bundled short options such as `-iB`.
                arg[1..]
                    .chars()
                    .any(|c| matches!(c, 'i' | 'r' | 'P' | 'a' | 'A'))
            })
    })
}

/// Returns the log and admin directory a dpkg invocation uses, from its arguments.
fn dpkg_paths(argv: &[String]) -> (PathBuf, PathBuf) {
    let mut log = None;
    let mut admin_dir = None;
    let mut root = None;
    let mut rest = argv.iter().skip(1);
    while let Some(arg) = rest.next() {
        let take = |name: &str| -> Option<String> {
            if let Some(value) = arg.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
                Some(value.to_owned())
            } else if arg == name {
                rest.clone().next().cloned()
            } else {
                None
            }
        };
        if let Some(value) = take("--log") {
            log = Some(PathBuf::from(value));
        } else if let Some(value) = take("--admindir") {
            admin_dir = Some(PathBuf::from(value));
        } else if let Some(value) = take("--root") {
            root = Some(PathBuf::from(value));
        }
    }
    let admin_dir = admin_dir.unwrap_or_else(|| match &root {
        Some(root) => root.join("var/lib/dpkg"),
        None => PathBuf::from("/var/lib/dpkg"),
    });
    let log = log.unwrap_or_else(|| PathBuf::from("/var/log/dpkg.log"));
    (normalize(&log), normalize(&admin_dir))
}

/// Makes a path comparable: symlinks resolved where it exists, `.` and `..` folded otherwise.
fn normalize(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let mut folded = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                folded.pop();
            }
            Component::CurDir => {}
            other => folded.push(other),
        }
    }
    folded
}

/// Renders an exec's arguments as a shell would show them, quoting where needed.
fn command_line(exec: &ExecRecord) -> String {
    let argv = complete_argv(exec);
    let words: Vec<String> = argv
        .iter()
        .map(|arg| {
            let arg = escape_control(arg);
            if arg.is_empty() || arg.contains([' ', '\'', '"', '$', '`', '\\']) {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg.into_owned()
            }
        })
        .collect();
    words.join(" ")
}

/// Returns the full argument list: the kernel's, completed from `/proc` when the kernel had to
/// cut it and the process still runs the same program.
fn complete_argv(exec: &ExecRecord) -> Vec<String> {
    if !exec.is_truncated {
        return exec.argv.clone();
    }
    let Ok(bytes) = std::fs::read(format!("/proc/{}/cmdline", exec.tgid)) else {
        return exec.argv.clone();
    };
    let full: Vec<String> = bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if full.len() >= exec.argv.len() && full.first() == exec.argv.first() {
        full
    } else {
        exec.argv.clone()
    }
}

/// Returns wall-clock time minus `CLOCK_MONOTONIC`, the clock of the kernel's timestamps.
fn boot_offset() -> Duration {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::new(t.tv_sec().unsigned_abs(), t.tv_nsec().unsigned_abs() as u32))
        .unwrap_or_default();
    now.saturating_sub(monotonic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn dpkg_paths_follow_its_options() {
        let (log, admin) = dpkg_paths(&args(&["dpkg", "-i", "x.deb"]));
        assert_eq!(log, normalize(Path::new("/var/log/dpkg.log")));
        assert_eq!(admin, normalize(Path::new("/var/lib/dpkg")));

        let (log, admin) = dpkg_paths(&args(&[
            "dpkg",
            "--root=/srv/r",
            "--log",
            "/srv/l/dpkg.log",
            "-i",
        ]));
        assert_eq!(log, PathBuf::from("/srv/l/dpkg.log"));
        assert_eq!(admin, PathBuf::from("/srv/r/var/lib/dpkg"));

        let (_, admin) = dpkg_paths(&args(&[
            "dpkg",
            "--root=/srv/r",
            "--admindir=/srv/a/../b",
            "-r",
        ]));
        assert_eq!(admin, PathBuf::from("/srv/b"));
    }

    fn dpkg_exec(tgid: u32, argv: &[&str]) -> ExecRecord {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| Duration::new(t.tv_sec().unsigned_abs(), t.tv_nsec().unsigned_abs() as u32))
            .unwrap_or_default();
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
            comm: "dpkg".into(),
            filename: "/usr/bin/dpkg".into(),
            argv: args(argv),
            ancestry: Vec::new(),
            ktime: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
            executable: (0, 0),
            tracked_root: tgid,
            is_package_manager: true,
            is_truncated: false,
            is_partial: false,
        }
    }

    #[test]
    fn lines_a_run_on_another_database_wrote_to_the_followed_log_are_told_apart(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("dpkg.log");
        let admin = dir.path().join("admin");
        std::fs::create_dir_all(&admin)?;
        std::fs::write(&log, b"")?;
        let mut attributor = Attributor::new(&log, &admin);
        let stamp = Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
        let startup = format!("{stamp} startup archives unpack");
        let status = format!("{stamp} status installed hello:all 1.0");
        assert!(
            !attributor.wrote_other_database(startup.as_bytes()),
            "no runs"
        );
        assert!(!attributor.wrote_other_database(status.as_bytes()));

        let log_arg = format!("--log={}", log.display());
        let chroot = dpkg_exec(
            100,
            &["dpkg", "--root=/srv/chroot", &log_arg, "-i", "x.deb"],
        );
        attributor.record(KernelRecord::Exec(chroot));
        assert!(
            attributor.runs_since(SystemTime::UNIX_EPOCH).is_empty(),
            "not a run on the followed database"
        );
        // The run's lines go from its startup line to the next one.
        assert!(attributor.wrote_other_database(startup.as_bytes()));
        assert!(attributor.wrote_other_database(status.as_bytes()));

        // The next run, on the followed database, writes the lines after its startup line.
        let admin_arg = format!("--admindir={}", admin.display());
        let mut own = dpkg_exec(200, &["dpkg", &admin_arg, &log_arg, "-i", "y.deb"]);
        own.ktime += 1;
        attributor.record(KernelRecord::Exec(own));
        assert!(!attributor.wrote_other_database(startup.as_bytes()));
        assert!(!attributor.wrote_other_database(status.as_bytes()));
        assert_eq!(attributor.runs_since(SystemTime::UNIX_EPOCH).len(), 1);

        // Lines from before the sensor started have no known writer.
        let old = b"2001-01-01 00:00:00 startup packages configure";
        assert!(!attributor.wrote_other_database(old));
        Ok(())
    }

    #[test]
    fn only_changing_invocations_can_write_the_log() {
        assert!(is_writing(&args(&["dpkg", "-i", "x.deb"])));
        assert!(is_writing(&args(&[
            "dpkg",
            "--status-fd",
            "7",
            "--configure",
            "--pending"
        ])));
        assert!(is_writing(&args(&["dpkg", "-iB", "x.deb"])));
        assert!(!is_writing(&args(&[
            "dpkg",
            "--print-foreign-architectures"
        ])));
        assert!(!is_writing(&args(&[
            "dpkg",
            "--compare-versions",
            "1",
            "lt",
            "2"
        ])));
    }
}
