//! A real systemd-journald for tests, and a way to read its entries back.
//!
//! In: tests that need a listening journald. Out: a [`Journald`] handle that keeps one
//! running while it lives, and [`Journald::wait_for_entries`], which reads entries back with
//! `journalctl -o json`.
//!
//! State: one process-wide record of the daemon. A journald that already listens is used as
//! is; otherwise the first handle starts `systemd-journald` and the last one to drop stops it.
//! A file lock keeps test processes running side by side from starting two daemons or
//! stopping one that another process still uses.

use std::fs::{File, OpenOptions};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use fenrir_sensor::sink::journald::DEFAULT_SOCKET_PATH;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{Map, Value};

/// The journald binary Debian installs.
pub const JOURNALD_BINARY: &str = "/lib/systemd/systemd-journald";

/// Where the tests' journald listens: the system path, since `journalctl` reads the journal
/// files of the daemon that owns it.
pub const SOCKET_PATH: &str = DEFAULT_SOCKET_PATH;

/// Serializes starting and stopping the daemon across test processes.
const LOCK_PATH: &str = "/run/fenrir-tests-journald.lock";

/// How long a started journald may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an entry may take to become readable; journald writes asynchronously.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The process-wide record of the daemon the tests use.
struct Daemon {
    /// Handles alive in this process.
    users: usize,
    /// The journald this process started, if it started one.
    child: Option<Child>,
    /// Held shared while this process uses journald, exclusive while it starts or stops one.
    lock: Option<Flock<File>>,
}

static DAEMON: Mutex<Daemon> = Mutex::new(Daemon {
    users: 0,
    child: None,
    lock: None,
});

/// Shared by ordinary tests; taken exclusively by a test that kills and restarts journald.
static ACCESS: RwLock<()> = RwLock::new(());

enum Access {
    Shared(#[expect(dead_code, reason = "held for its drop")] RwLockReadGuard<'static, ()>),
    Exclusive(#[expect(dead_code, reason = "held for its drop")] RwLockWriteGuard<'static, ()>),
}

/// A running journald, kept running while this handle lives.
pub struct Journald {
    access: Access,
}

impl Journald {
    /// Makes sure journald listens, sharing it with other tests that run at the same time.
    ///
    /// Prints `skipping: <reason>` and returns `None` when no journald can be had (not root,
    /// no journald binary, no `journalctl`).
    #[must_use]
    pub fn shared() -> Option<Self> {
        let guard = ACCESS.read().unwrap_or_else(PoisonError::into_inner);
        Self::acquire(Access::Shared(guard))
    }

    /// Like [`Journald::shared`], but no other test of this process uses journald while the
    /// handle lives, so the handle may kill and restart it.
    #[must_use]
    pub fn exclusive() -> Option<Self> {
        let guard = ACCESS.write().unwrap_or_else(PoisonError::into_inner);
        Self::acquire(Access::Exclusive(guard))
    }

    fn acquire(access: Access) -> Option<Self> {
        if let Err(reason) = check_prerequisites() {
            println!("skipping: {reason}");
            return None;
        }

        let mut daemon = lock_daemon();
        if daemon.users == 0 {
            if let Err(err) = daemon.start_or_join() {
                println!("skipping: no journald could be started: {err:#}");
                return None;
            }
        }
        daemon.users += 1;

        Some(Self { access })
    }

    /// Returns whether this handle may kill and restart journald: it is exclusive, this
    /// process started the daemon, and no other test process uses it.
    ///
    /// On `true` the file lock turns exclusive, so other test processes wait to join until
    /// this handle is dropped.
    #[must_use]
    pub fn may_restart(&self) -> bool {
        if !matches!(self.access, Access::Exclusive(_)) {
            return false;
        }
        let daemon = lock_daemon();
        if daemon.child.is_none() {
            return false;
        }

        daemon
            .lock
            .as_ref()
            .is_some_and(|lock| lock.relock(FlockArg::LockExclusiveNonblock).is_ok())
    }

    /// Kills the journald this process started, as a crash would, leaving its socket behind.
    ///
    /// # Errors
    /// Fails on a shared handle or when this process did not start the journald. Call
    /// [`Journald::may_restart`] first.
    pub fn kill(&self) -> anyhow::Result<()> {
        if !matches!(self.access, Access::Exclusive(_)) {
            bail!("only an exclusive handle may kill journald");
        }
        let mut daemon = lock_daemon();
        let Some(mut child) = daemon.child.take() else {
            bail!("journald was not started by this process");
        };

        child.kill().context("failed to kill journald")?;
        child.wait().context("failed to reap journald")?;
        Ok(())
    }

    /// Starts journald again after [`Journald::kill`] and waits until it listens.
    ///
    /// # Errors
    /// Fails on a shared handle, when a journald runs already, or when it does not come up.
    pub fn restart(&self) -> anyhow::Result<()> {
        if !matches!(self.access, Access::Exclusive(_)) {
            bail!("only an exclusive handle may restart journald");
        }
        let mut daemon = lock_daemon();
        if daemon.child.is_some() || is_listening(Path::new(SOCKET_PATH)) {
            bail!("journald is still running");
        }

        daemon.child = Some(spawn_journald()?);
        Ok(())
    }

    /// Reads back the entries that match every `FIELD=value` in `matches`, polling until at
    /// least `count` are there.
    ///
    /// # Errors
    /// Fails when `journalctl` fails or fewer than `count` entries appear in time.
    pub fn wait_for_entries(
        &self,
        matches: &[(&str, &str)],
        count: usize,
    ) -> anyhow::Result<Vec<Map<String, Value>>> {
        let deadline = Instant::now() + READ_TIMEOUT;

        loop {
            let entries = read_entries(matches)?;
            if entries.len() >= count {
                return Ok(entries);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {count} entries matching {matches:?} appeared",
                    entries.len()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let mut daemon = lock_daemon();
        daemon.users -= 1;
        if daemon.users == 0 {
            daemon.stop();
        }
    }
}

impl Daemon {
    /// Joins a listening journald or starts one, under the exclusive file lock.
    fn start_or_join(&mut self) -> anyhow::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .with_context(|| format!("failed to open {LOCK_PATH}"))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("failed to lock {LOCK_PATH}"))?;

        if !is_listening(Path::new(SOCKET_PATH)) {
            if !Path::new(JOURNALD_BINARY).exists() {
                bail!("nothing listens on {SOCKET_PATH} and {JOURNALD_BINARY} is missing");
            }
            self.child = Some(spawn_journald()?);
        }

        // Others may now join the daemon; they hold the lock shared as this process does.
        lock.relock(FlockArg::LockShared)
            .context("failed to share the journald lock")?;
        self.lock = Some(lock);
        Ok(())
    }

    /// Stops the journald this process started, unless another process still uses it.
    fn stop(&mut self) {
        let lock = self.lock.take();
        let Some(mut child) = self.child.take() else {
            return;
        };

        // The lock stays held until journald is gone, so no process joins one that is ending.
        let alone = lock
            .as_ref()
            .is_some_and(|lock| lock.relock(FlockArg::LockExclusiveNonblock).is_ok());
        if !alone {
            // Another test process joined this journald; it keeps running for that one.
            return;
        }

        // SIGTERM lets journald close its files cleanly; a kill is the fallback.
        let pid = i32::try_from(child.id()).map(Pid::from_raw);
        if let Ok(pid) = pid {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn lock_daemon() -> MutexGuard<'static, Daemon> {
    DAEMON.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("journald tests need root".to_owned());
    }

    let journalctl = Command::new("journalctl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !journalctl.is_ok_and(|status| status.success()) {
        return Err("journalctl is not installed".to_owned());
    }

    Ok(())
}

/// Starts journald and waits until it listens on [`SOCKET_PATH`].
fn spawn_journald() -> anyhow::Result<Child> {
    let mut child = Command::new(JOURNALD_BINARY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("failed to start {JOURNALD_BINARY}"))?;

    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if is_listening(Path::new(SOCKET_PATH)) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{JOURNALD_BINARY} exited with {status} before listening");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{JOURNALD_BINARY} did not listen on {SOCKET_PATH} within {START_TIMEOUT:?}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Returns whether a process receives datagrams on `path`; a socket file left by a dead
/// journald refuses the connection.
fn is_listening(path: &Path) -> bool {
    UnixDatagram::unbound().is_ok_and(|socket| socket.connect(path).is_ok())
}

fn read_entries(matches: &[(&str, &str)]) -> anyhow::Result<Vec<Map<String, Value>>> {
    // `--all` because journalctl otherwise prints fields over 4 KiB as null.
    let output = Command::new("journalctl")
        .args(["--output=json", "--all", "--no-pager", "--quiet"])
        .args(
            matches
                .iter()
                .map(|(field, value)| format!("{field}={value}")),
        )
        .output()
        .context("failed to run journalctl")?;
    if !output.status.success() {
        bail!(
            "journalctl failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    let mut entries = Vec::new();
    for line in output
        .stdout
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
    {
        let entry: Map<String, Value> =
            serde_json::from_slice(line).context("failed to parse journalctl output")?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Returns a value no other test, run or process uses, to tag and find a test's entries.
#[must_use]
pub fn unique_tag(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("fenrir-test-{label}-{}-{nanos}-{n}", std::process::id())
}
