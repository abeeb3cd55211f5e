//! The kernel exec tracer against the real kernel, real dpkg and real execs.
//!
//! Needs root and a sensor built with the kernel object embedded:
//! `FENRIR_EBPF_OBJECT=$(cargo xtask build-ebpf) cargo test -p fenrir-tests --test ebpf`.
//! Without either, each test prints one `skipping: <reason>` line. The cost figures come from
//! `-- --ignored exec_program_cost`.

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use fenrir_sensor::source::exec::{
    ExecRecord, ExecTracer, ExitRecord, KernelRecord, LoadError, TracerConfig,
};

/// Loaded tracers see every exec on the host: tests that count records must not overlap.
static KERNEL: Mutex<()> = Mutex::new(());

/// Login uid the dpkg test gives its session.
const TEST_LOGINUID: u32 = 4242;

/// Environment variable that turns a test process into the unprivileged loader.
const UNPRIVILEGED_CHILD: &str = "FENRIR_EBPF_UNPRIVILEGED_CHILD";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns the kernel lock if the tests can run here, or prints why not.
fn privileged() -> Option<MutexGuard<'static, ()>> {
    if !ExecTracer::has_embedded_object() {
        println!("skipping: sensor built without FENRIR_EBPF_OBJECT (run cargo xtask build-ebpf)");
        return None;
    }
    if !is_root() {
        println!("skipping: eBPF tests need root");
        return None;
    }

    Some(
        KERNEL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn load() -> ExecTracer {
    ExecTracer::load(&TracerConfig::default()).expect("the kernel program loads as root")
}

/// Drains records until `done` says the wanted ones arrived or `limit` passes.
fn collect_until(
    tracer: &mut ExecTracer,
    limit: Duration,
    mut done: impl FnMut(&[KernelRecord]) -> bool,
) -> Vec<KernelRecord> {
    let rt = runtime();
    let start = Instant::now();
    let mut records = Vec::new();

    while start.elapsed() < limit && !done(&records) {
        rt.block_on(tracer.next_batch(&mut records))
            .expect("the ring buffer stays readable");
    }

    records
}

fn execs(records: &[KernelRecord]) -> impl Iterator<Item = &ExecRecord> {
    records.iter().filter_map(|record| match record {
        KernelRecord::Exec(exec) => Some(exec),
        KernelRecord::Exit(_) => None,
    })
}

fn exits(records: &[KernelRecord]) -> impl Iterator<Item = &ExitRecord> {
    records.iter().filter_map(|record| match record {
        KernelRecord::Exit(exit) => Some(exit),
        KernelRecord::Exec(_) => None,
    })
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Prints `offsetof` of every field the program reads, from a C program compiled against
/// bpftool's dump of the kernel's BTF: an oracle that shares no code with Fenrir's reader.
fn offsets_from_c(dir: &Path) -> Option<Vec<(String, u32)>> {
    let header = Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "c",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    fs::write(dir.join("vmlinux.h"), header.stdout).expect("write vmlinux.h");

    let fields = [
        ("task_pid", "task_struct", "pid"),
        ("task_tgid", "task_struct", "tgid"),
        ("task_real_parent", "task_struct", "real_parent"),
        ("task_cred", "task_struct", "cred"),
        ("task_comm", "task_struct", "comm"),
        ("task_loginuid", "task_struct", "loginuid"),
        ("task_sessionid", "task_struct", "sessionid"),
        ("task_signal", "task_struct", "signal"),
        ("task_mm", "task_struct", "mm"),
        ("task_exit_code", "task_struct", "exit_code"),
        ("cred_uid", "cred", "uid"),
        ("cred_euid", "cred", "euid"),
        ("cred_gid", "cred", "gid"),
        ("signal_tty", "signal_struct", "tty"),
        ("signal_live", "signal_struct", "live"),
        ("tty_index", "tty_struct", "index"),
        ("tty_name", "tty_struct", "name"),
        ("binprm_file", "linux_binprm", "file"),
        ("binprm_filename", "linux_binprm", "filename"),
        ("file_inode", "file", "f_inode"),
        ("inode_ino", "inode", "i_ino"),
        ("inode_sb", "inode", "i_sb"),
        ("sb_dev", "super_block", "s_dev"),
        ("mm_arg_start", "mm_struct", "arg_start"),
        ("mm_arg_end", "mm_struct", "arg_end"),
    ];
    let mut source = String::from(
        "#define BPF_NO_PRESERVE_ACCESS_INDEX\n#include \"vmlinux.h\"\n\
         int printf(const char *, ...);\nint main(void) {\n",
    );
    for (name, strukt, field) in fields {
        let _ = writeln!(
            source,
            "printf(\"{name} %lu\\n\", (unsigned long)__builtin_offsetof(struct {strukt}, \
             {field}));"
        );
    }
    source.push_str("return 0; }\n");
    fs::write(dir.join("offsets.c"), source).expect("write offsets.c");

    run(Command::new("gcc")
        .current_dir(dir)
        .args(["-w", "-o", "offsets", "offsets.c"]));
    let printed = run(&mut Command::new(dir.join("offsets")));

    Some(
        printed
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

#[test]
fn program_attaches_with_offsets_equal_to_compiled_c() {
    let Some(_kernel) = privileged() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(expected) = offsets_from_c(dir.path()) else {
        println!("skipping: bpftool missing (cargo xtask build-ebpf installs it)");
        return;
    };

    let tracer = load();
    let loaded: Vec<(String, u32)> = tracer
        .offsets()
        .fields()
        .iter()
        .map(|&(name, value)| (name.to_owned(), value))
        .collect();

    assert_eq!(
        loaded, expected,
        "btf reader (left) disagrees with compiled C (right)"
    );
    assert!(
        tracer
            .tracked_executables()
            .iter()
            .any(|tracked| tracked.path == Path::new("/usr/bin/dpkg")),
        "dpkg is tracked"
    );
    assert_eq!(tracer.dropped().expect("DROPPED reads"), 0);
}

/// Builds `fenrir-probe_1.0_all.deb`, whose postinst drops to `nobody` and runs the marker.
fn build_probe_package(dir: &Path) -> std::path::PathBuf {
    let pkg = dir.join("pkg");
    fs::create_dir_all(pkg.join("DEBIAN")).expect("mkdir DEBIAN");
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: fenrir-probe\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: Fenrir Tests <tests@fenrir.invalid>\nDescription: exec tracer probe\n",
    )
    .expect("write control");
    let postinst = pkg.join("DEBIAN/postinst");
    fs::write(
        &postinst,
        "#!/bin/sh\nsetpriv --reuid=65534 --regid=65534 --clear-groups /bin/true --fenrir-marker\n",
    )
    .expect("write postinst");
    fs::set_permissions(&postinst, fs::Permissions::from_mode(0o755)).expect("chmod postinst");

    let deb = dir.join("fenrir-probe_1.0_all.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(&deb));
    deb
}

#[test]
fn dpkg_run_is_attributed_to_the_login_and_its_scripts_are_traced() {
    let Some(_kernel) = privileged() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    for sub in ["info", "updates", "triggers"] {
        fs::create_dir_all(root.join("var/lib/dpkg").join(sub)).expect("mkdir admin dir");
    }
    fs::write(root.join("var/lib/dpkg/status"), "").expect("touch status");
    let deb = build_probe_package(dir.path());
    let log = dir.path().join("dpkg.log");

    let mut tracer = load();

    // The shell takes a login uid (allowed once, as root, while it has none), then runs dpkg
    // as a non-final command so that it stays dpkg's parent.
    let script = format!(
        "echo {TEST_LOGINUID} > /proc/self/loginuid || exit 97\n\
         dpkg --root=\"$1\" --log=\"$2\" --force-script-chrootless -i \"$3\"\nexit $?"
    );
    let mut shell = Command::new("/bin/sh")
        .args(["-c", &script, "sh"])
        .arg(&root)
        .arg(&log)
        .arg(&deb)
        .spawn()
        .expect("shell starts");
    let shell_pid = shell.id();
    let status = shell.wait().expect("shell ends");
    assert!(status.success(), "dpkg install failed: {status}");
    assert!(
        fs::read_to_string(&log)
            .expect("dpkg log")
            .contains("status installed fenrir-probe"),
        "dpkg installed the probe"
    );

    let records = collect_until(&mut tracer, Duration::from_secs(5), |records| {
        let marker = execs(records).any(|exec| exec.argv.iter().any(|a| a == "--fenrir-marker"));
        let dpkg = execs(records).find(|exec| exec.is_package_manager && exec.comm == "dpkg");
        marker && dpkg.is_some_and(|dpkg| exits(records).any(|exit| exit.tgid == dpkg.tgid))
    });

    let dpkg = execs(&records)
        .find(|exec| exec.is_package_manager && exec.ppid == shell_pid)
        .unwrap_or_else(|| panic!("no record of dpkg started by the shell: {records:#?}"));
    assert_eq!(dpkg.filename, "/usr/bin/dpkg");
    assert_eq!(dpkg.comm, "dpkg");
    assert_eq!((dpkg.uid, dpkg.euid, dpkg.gid), (0, 0, 0));
    assert_eq!(dpkg.loginuid, Some(TEST_LOGINUID));
    assert!(
        dpkg.sessionid.is_some(),
        "writing loginuid opens an audit session"
    );
    assert!(
        dpkg.argv.iter().any(|a| a.starts_with("--root=")),
        "{:?}",
        dpkg.argv
    );
    assert!(dpkg.argv.iter().any(|a| a == "-i"), "{:?}", dpkg.argv);
    assert_eq!(dpkg.tracked_root, dpkg.tgid);
    let parent = dpkg.ancestry.first().expect("dpkg has ancestors");
    assert_eq!(parent.pid, shell_pid);
    assert_eq!(parent.loginuid, Some(TEST_LOGINUID));
    assert!(
        dpkg.ancestry.iter().any(|a| a.pid == std::process::id()),
        "the ancestry reaches the test process: {:?}",
        dpkg.ancestry
    );

    let marker = execs(&records)
        .find(|exec| exec.argv == ["/bin/true", "--fenrir-marker"])
        .unwrap_or_else(|| panic!("no record of the postinst's marker: {records:#?}"));
    assert!(!marker.is_package_manager);
    assert_eq!(marker.filename, "/bin/true");
    assert_eq!(
        (marker.uid, marker.euid),
        (65534, 65534),
        "setpriv dropped privileges"
    );
    assert_eq!(
        marker.loginuid,
        Some(TEST_LOGINUID),
        "the login uid survives setpriv"
    );
    assert_eq!(marker.tracked_root, dpkg.tgid);
    assert!(
        marker.ancestry.iter().any(|a| a.pid == dpkg.tgid),
        "{:?}",
        marker.ancestry
    );

    println!("dpkg record: {dpkg:#?}\nmarker record: {marker:#?}");
    println!("{} records for the dpkg run", records.len());

    let dpkg_exit = exits(&records)
        .find(|exit| exit.tgid == dpkg.tgid)
        .expect("dpkg exit");
    assert_eq!(dpkg_exit.status(), Some(0));
    assert_eq!(tracer.dropped().expect("DROPPED reads"), 0);
}

#[test]
fn unrelated_exec_burst_leaves_no_record() {
    let Some(_kernel) = privileged() else { return };
    let mut tracer = load();
    let me = std::process::id();

    let mut spawned = HashSet::new();
    for _ in 0..10_000 {
        let child = Command::new("/bin/true").spawn().expect("/bin/true starts");
        spawned.insert(child.id());
        let mut child = child;
        child.wait().expect("/bin/true ends");
    }

    // Positive control: a tracked binary right after the burst shows the tracer was live.
    run(Command::new("dpkg").arg("--version"));
    let records = collect_until(&mut tracer, Duration::from_secs(3), |records| {
        execs(records).any(|exec| exec.is_package_manager && exec.ppid == me)
    });

    let ours: Vec<&KernelRecord> = records
        .iter()
        .filter(|record| match record {
            KernelRecord::Exec(exec) => spawned.contains(&exec.tgid) || exec.ppid == me,
            KernelRecord::Exit(exit) => spawned.contains(&exit.tgid),
        })
        .collect();
    let control: Vec<_> = execs(&records).filter(|exec| exec.ppid == me).collect();
    println!(
        "burst of {} execs: {} records in total, {} from this test",
        spawned.len(),
        records.len(),
        ours.len()
    );

    assert_eq!(
        control.len(),
        1,
        "exactly the dpkg --version control: {ours:#?}"
    );
    assert_eq!(control[0].argv, ["dpkg", "--version"]);
    assert!(
        ours.iter().all(
            |record| matches!(record, KernelRecord::Exec(exec) if exec.ppid == me)
                || matches!(record, KernelRecord::Exit(exit) if exit.tgid == control[0].tgid)
        ),
        "no /bin/true record: {ours:#?}"
    );
    assert_eq!(tracer.dropped().expect("DROPPED reads"), 0);
}

#[test]
fn scripts_count_by_interpreter_and_path_and_a_fake_comm_does_not() {
    let Some(_kernel) = privileged() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let write_script = |name: &str, body: &str| {
        let path = dir.path().join(name);
        fs::write(&path, body).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
        path
    };
    let script = write_script("pm-probe", "#!/bin/sh\n/bin/true --fenrir-script-marker\n");
    let decoy = write_script("decoy", "#!/bin/sh\n/bin/true --fenrir-decoy\n");
    // Same comm as the real dpkg, different file.
    let fake = dir.path().join("dpkg");
    std::os::unix::fs::symlink("/bin/true", &fake).expect("symlink");

    let mut config = TracerConfig::default();
    config.executables.push(script.clone());
    let mut tracer = ExecTracer::load(&config).expect("the kernel program loads as root");

    run(&mut Command::new(&decoy));
    run(Command::new(&fake).arg("--fenrir-fake-dpkg"));
    run(&mut Command::new(&script));
    let records = collect_until(&mut tracer, Duration::from_secs(5), |records| {
        execs(records).any(|exec| exec.argv.iter().any(|a| a == "--fenrir-script-marker"))
    });

    let probe = execs(&records)
        .find(|exec| exec.filename == script.to_string_lossy())
        .unwrap_or_else(|| panic!("no record of the tracked script: {records:#?}"));
    assert!(probe.is_package_manager);
    assert_eq!(
        probe.argv,
        ["/bin/sh".to_owned(), script.to_string_lossy().into_owned()]
    );
    let marker = execs(&records)
        .find(|exec| exec.argv.iter().any(|a| a == "--fenrir-script-marker"))
        .expect("marker record");
    assert_eq!(marker.tracked_root, probe.tgid);

    let leaked: Vec<_> = execs(&records)
        .filter(|exec| {
            exec.argv
                .iter()
                .any(|a| a == "--fenrir-decoy" || a == "--fenrir-fake-dpkg")
                || exec.filename == decoy.to_string_lossy()
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "decoy or fake dpkg recorded: {leaked:#?}"
    );
}

#[test]
fn the_other_package_managers_are_tracked_by_inode_and_dnf_by_its_interpreter() {
    let Some(_kernel) = privileged() else { return };
    let programs = ["/usr/bin/rpm", "/usr/bin/zypper", "/usr/bin/pacman"];
    let present: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect();
    let has_dnf = Path::new("/usr/bin/dnf").exists();
    if present.len() < programs.len() || !has_dnf {
        println!("skipping: rpm, dnf, zypper or pacman is not installed (cargo xtask test installs them)");
        return;
    }
    let mut tracer = load();

    // rpm, zypper and pacman are programs, matched by the device and inode of the file.
    for program in &present {
        let tracked = tracer
            .tracked_executables()
            .iter()
            .find(|t| t.path == Path::new(program))
            .unwrap_or_else(|| panic!("{program} is not tracked"));
        assert_eq!(
            tracked.key,
            fenrir_sensor::source::exec::executable_key(Path::new(program)).expect("stat")
        );
        assert!(tracked.interpreter.is_none(), "{program} is a program");
    }
    // dnf is a Python script: its interpreter's inode and its path decide.
    let dnf = tracer
        .tracked_executables()
        .iter()
        .find(|t| t.path == Path::new("/usr/bin/dnf"))
        .expect("dnf is tracked");
    let interpreter = dnf.interpreter.clone().expect("dnf is a script");
    assert_eq!(
        dnf.key,
        fenrir_sensor::source::exec::executable_key(&interpreter).expect("stat interpreter")
    );

    // Real runs are recorded as package managers; the same interpreter running another
    // script is not. Nothing may reach the host's /var/log: zypper's debug log goes to a
    // temporary file, and dnf's Python stops at start-up, before dnf writes any log.
    let scratch = tempfile::tempdir().expect("tempdir");
    fs::write(
        scratch.path().join("sitecustomize.py"),
        "import os\nos._exit(0)\n",
    )
    .expect("write sitecustomize");
    for program in &present {
        run(Command::new(program)
            .arg("--version")
            .env("ZYPP_LOGFILE", scratch.path().join("zypper.log")));
    }
    run(Command::new("/usr/bin/dnf")
        .arg("--version")
        .env("PYTHONPATH", scratch.path()));
    run(Command::new(&interpreter).args(["-c", "print('fenrir-not-dnf')"]));
    let records = collect_until(&mut tracer, Duration::from_secs(10), |records| {
        present.iter().chain(&["/usr/bin/dnf"]).all(|program| {
            execs(records).any(|exec| exec.filename == *program && exec.is_package_manager)
        })
    });
    for program in present.iter().chain(&["/usr/bin/dnf"]) {
        assert!(
            execs(&records).any(|exec| exec.filename == *program && exec.is_package_manager),
            "no package-manager record of {program}: {records:#?}"
        );
    }
    assert!(
        !execs(&records).any(|exec| exec.argv.iter().any(|a| a.contains("fenrir-not-dnf"))),
        "a plain python3 run was recorded"
    );
}

#[test]
fn build_without_object_is_a_typed_error() {
    let error = ExecTracer::load_object(&[], &TracerConfig::default())
        .expect_err("an empty object does not load");

    assert!(matches!(error, LoadError::NoKernelProgram), "{error:?}");
}

#[test]
fn unprivileged_load_is_a_typed_error() {
    if std::env::var_os(UNPRIVILEGED_CHILD).is_some() {
        // Child mode: this process runs as `nobody`.
        assert!(!is_root(), "the child runs without privilege");
        let error = ExecTracer::load(&TracerConfig::default())
            .expect_err("an unprivileged process cannot load the program");
        assert!(
            error.is_permission_denied(),
            "not a permission error: {error:?}"
        );
        println!("unprivileged load refused: {error}");
        return;
    }

    if privileged().is_none() {
        return;
    }

    // The test binary may sit in a directory `nobody` cannot enter: run a copy.
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    let copy = dir.path().join("ebpf-test");
    fs::copy(std::env::current_exe().expect("test binary path"), &copy).expect("copy test binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod test binary");

    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args([
            "--exact",
            "unprivileged_load_is_a_typed_error",
            "--nocapture",
        ])
        .env(UNPRIVILEGED_CHILD, "1")
        .output()
        .expect("setpriv starts");
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(
        output.status.success(),
        "unprivileged child failed: {stdout}"
    );
    assert!(
        stdout.contains("unprivileged load refused"),
        "child did not run: {stdout}"
    );
}

/// Prints the cost of the exec program; a figure to read, not a pass/fail check.
#[test]
#[ignore = "benchmark: prints figures, takes about a minute"]
fn exec_program_cost() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 5_000;

    let Some(_kernel) = privileged() else { return };
    let stats_sysctl = Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let previous = fs::read_to_string(stats_sysctl).expect("read bpf_stats_enabled");

    let burst = || {
        let start = Instant::now();
        for _ in 0..PER_ROUND {
            Command::new("/bin/true").status().expect("/bin/true runs");
        }
        start.elapsed()
    };

    fs::write(stats_sysctl, "1").expect("enable bpf stats");
    let mut without = Duration::ZERO;
    let mut with = Duration::ZERO;
    let mut stats = Vec::new();

    // Alternate rounds so that the shared machine's drift hits both sides alike.
    for _ in 0..ROUNDS {
        without += burst();
        let tracer = load();
        with += burst();
        stats.push(
            tracer
                .program_stats("sched_process_exec")
                .expect("fdinfo reads"),
        );
    }
    fs::write(stats_sysctl, previous.trim()).expect("restore bpf_stats_enabled");

    let run_time: u64 = stats.iter().map(|s| s.run_time_ns).sum();
    let runs: u64 = stats.iter().map(|s| s.run_count).sum();
    #[expect(clippy::cast_precision_loss, reason = "figures for display")]
    let ns_per_run = run_time as f64 / runs.max(1) as f64;
    println!(
        "exec program: {ns_per_run:.0} ns/run over {runs} runs; {} fork+execs: \
         {:.3} s without, {:.3} s with, ratio {:.3}",
        ROUNDS * PER_ROUND,
        without.as_secs_f64(),
        with.as_secs_f64(),
        with.as_secs_f64() / without.as_secs_f64()
    );
}
