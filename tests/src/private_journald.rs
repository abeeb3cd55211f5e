//! A systemd-journald of a test's own, which the test may kill and start again at will.
//!
//! In: a directory. Out: a [`PrivateJournald`] listening on `<dir>/socket/socket` and writing
//! its journal under `<dir>/files`, read back with [`PrivateJournald::entries`]. State: the
//! daemon's process.
//!
//! journald always binds `/run/systemd/journal/socket` and writes `/run/log/journal`; this
//! one runs in a mount namespace of its own where both are the test's directories, so it
//! never meets the host's journald or the one the other tests share, and killing it touches
//! nobody else.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{Map, Value};

use crate::journald::JOURNALD_BINARY;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A journald in a mount namespace of its own.
pub struct PrivateJournald {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateJournald {
    /// Starts journald with its socket and files under `dir`.
    ///
    /// # Errors
    /// Fails when journald or `unshare` is missing, or journald does not listen in time.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir.join("socket"))?;
        fs::create_dir_all(dir.join("files"))?;
        let mut journald = Self {
            dir: dir.to_path_buf(),
            child: None,
        };
        journald.spawn()?;
        Ok(journald)
    }

    /// Returns the socket the daemon receives native-protocol entries on.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("socket/socket")
    }

    /// Kills the daemon as a crash would, leaving its socket file behind.
    ///
    /// # Errors
    /// Fails when the daemon cannot be signalled or reaped.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .context("failed to kill the private journald")?;
            child
                .wait()
                .context("failed to reap the private journald")?;
        }
        Ok(())
    }

    /// Starts the daemon again after [`PrivateJournald::kill`].
    ///
    /// # Errors
    /// As [`PrivateJournald::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Reads every entry whose fields match all `FIELD=value` of `matches`.
    ///
    /// # Errors
    /// Fails when `journalctl` fails or prints something that is not JSON.
    pub fn entries(&self, matches: &[String]) -> anyhow::Result<Vec<Map<String, Value>>> {
        let output = Command::new("journalctl")
            .arg(format!("--directory={}", self.journal_dir()?.display()))
            .args(["--output=json", "--all", "--no-pager", "--quiet"])
            .args(matches)
            .output()
            .context("failed to run journalctl")?;
        String::from_utf8(output.stdout)?
            .lines()
            .map(|line| Ok(serde_json::from_str(line)?))
            .collect()
    }

    /// The directory journald made for this machine's journal files.
    fn journal_dir(&self) -> anyhow::Result<PathBuf> {
        let files = self.dir.join("files");
        fs::read_dir(&files)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.is_dir())
            .with_context(|| format!("journald wrote nothing under {}", files.display()))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        // The host's /run stays outside: journald finds only the test's directories there.
        let script = format!(
            "set -e\n\
             mount -t tmpfs tmpfs /run\n\
             mkdir -p /run/systemd/journal /run/log/journal\n\
             mount --bind '{socket}' /run/systemd/journal\n\
             mount --bind '{files}' /run/log/journal\n\
             if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi\n\
             exec {JOURNALD_BINARY}\n",
            socket = self.dir.join("socket").display(),
            files = self.dir.join("files").display(),
        );
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start unshare for a private journald")?;

        let deadline = Instant::now() + START_TIMEOUT;
        let socket = self.socket();
        loop {
            if UnixDatagram::unbound().is_ok_and(|s| s.connect(&socket).is_ok()) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("the private journald exited with {status} before listening");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the private journald did not listen on {}",
                    socket.display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateJournald {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
