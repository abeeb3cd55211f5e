//! A real systemd for tests on a host that does not boot with one: a container booted with
//! `systemd-nspawn` over a copy-on-write view of this host's own root.
//!
//! In: nothing but root and `systemd-nspawn`. Out: a [`Container`] whose systemd runs as its
//! PID 1, commands run inside it with `nsenter`, and its files under [`Container::root`].
//! State: a tmpfs for the overlay's upper layer, the overlay itself and the nspawn process, all
//! gone when the handle drops. The host's files are never written: every change lands in the
//! tmpfs. The container has its own network namespace, so nothing it starts listens on the
//! host's ports, and it boots only to `basic.target`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long the container may take to boot or to shut down.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// A booted container; shut down and unmounted on drop.
pub struct Container {
    dir: tempfile::TempDir,
    nspawn: Option<Child>,
    leader: u32,
}

impl Container {
    /// Prepares the overlay; `prepare` may then add files under [`Container::root`] before
    /// [`Container::boot`] starts systemd.
    ///
    /// # Errors
    /// Fails when the overlay cannot be mounted.
    pub fn prepare() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fenrir-container-")
            .tempdir_in("/var/tmp")?;
        let layers = dir.path().join("layers");
        let root = dir.path().join("root");
        fs::create_dir(&layers)?;
        fs::create_dir(&root)?;
        mount(
            Some("tmpfs"),
            &layers,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        )
        .context("failed to mount the upper layer's tmpfs")?;
        let container = Self {
            dir,
            nspawn: None,
            leader: 0,
        };
        fs::create_dir(layers.join("upper"))?;
        fs::create_dir(layers.join("work"))?;
        let options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            layers.join("upper").display(),
            layers.join("work").display()
        );
        mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .context("failed to mount the overlay of the host's root")?;
        Ok(container)
    }

    /// Returns the container's root as the host sees it.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Boots systemd in the container with `capabilities` added to nspawn's default set and
    /// `syscalls` to the system calls its filter lets through, and waits until it has started
    /// everything it was asked to.
    ///
    /// # Errors
    /// Fails when nspawn does not start or systemd does not finish booting in time.
    pub fn boot(&mut self, capabilities: &[&str], syscalls: &[&str]) -> anyhow::Result<()> {
        let console = fs::File::create(self.dir.path().join("console.log"))?;
        let mut command = Command::new("systemd-nspawn");
        command
            .arg("--quiet")
            .arg(format!("--directory={}", self.root().display()))
            .args(["--private-network", "--register=no", "--keep-unit"]);
        if !capabilities.is_empty() {
            command.arg(format!("--capability={}", capabilities.join(",")));
        }
        if !syscalls.is_empty() {
            command.arg(format!("--system-call-filter={}", syscalls.join(" ")));
        }
        let child = command
            .args(["--boot", "--", "systemd.unit=basic.target"])
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .context("failed to start systemd-nspawn")?;
        let nspawn = child.id();
        self.nspawn = Some(child);

        let deadline = Instant::now() + BOOT_TIMEOUT;
        self.leader = loop {
            if let Some(pid) = child_named(nspawn, "systemd") {
                break pid;
            }
            if Instant::now() > deadline {
                bail!("no systemd in the container:\n{}", self.console());
            }
            if let Some(Ok(Some(status))) = self.nspawn.as_mut().map(Child::try_wait) {
                bail!("systemd-nspawn exited with {status}:\n{}", self.console());
            }
            thread::sleep(Duration::from_millis(100));
        };
        loop {
            let state = self.exec(&["systemctl", "is-system-running"])?;
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the container's systemd is still `{state}`:\n{}",
                    self.console()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Returns what the container printed on its console.
    #[must_use]
    pub fn console(&self) -> String {
        fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Runs `args` inside the container's namespaces and returns its output, whatever its
    /// exit status.
    ///
    /// # Errors
    /// Fails when `nsenter` cannot be started.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("nsenter")
            .arg(format!("--target={}", self.leader))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--"])
            .args(args)
            .output()
            .context("failed to start nsenter")
    }

    /// Runs `args` inside the container and returns its standard output; fails unless it
    /// succeeds.
    ///
    /// # Errors
    /// Fails when the command fails.
    pub fn exec_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.exec(args)?;
        if !output.status.success() {
            bail!(
                "{args:?} failed in the container with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Returns one property of a unit, as `systemctl show` prints it.
    ///
    /// # Errors
    /// Fails when `systemctl` fails.
    pub fn property(&self, unit: &str, name: &str) -> anyhow::Result<String> {
        let value = self.exec_ok(&["systemctl", "show", "--value", "-p", name, unit])?;
        Ok(value.trim().to_owned())
    }

    fn shut_down(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        // nspawn asks the container's systemd to halt when it gets SIGTERM.
        if let Ok(pid) = i32::try_from(nspawn.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(nspawn.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = nspawn.kill();
        let _ = nspawn.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.shut_down();
        // A process still holding a file in the overlay must not keep the mounts forever.
        let _ = umount2(&self.root(), MntFlags::MNT_DETACH);
        let _ = umount2(&self.dir.path().join("layers"), MntFlags::MNT_DETACH);
    }
}

/// Returns a child of `parent` whose command name is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
        // The command name is in parentheses and may itself hold spaces or parentheses.
        let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let parent_pid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (parent_pid == parent && comm == name).then_some(pid)
    })
}

/// Returns why no container can run here, if so.
#[must_use]
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("booting a container needs root".to_owned());
    }
    for tool in ["systemd-nspawn", "nsenter"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Some("no systemd to boot in the container".to_owned());
    }
    None
}
