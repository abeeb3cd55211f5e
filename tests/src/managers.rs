//! Real dnf, zypper and pacman against sandbox roots, and tiny packages built for them with
//! the real tools (`rpmbuild`; `tar --zstd` with a `.PKGINFO`, the layout pacman reads).
//!
//! Everything the tools write stays inside the sandbox: dnf's `--installroot` and zypper's
//! and pacman's `--root` hold their databases, caches, locks and logs, zypper's debug log goes
//! where `ZYPP_LOGFILE` says; `HOME` points into the sandbox so rpm reads its macros there,
//! which put the rpm database at `/var/lib/rpm` inside the root as on an rpm-based host.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

/// A sandbox root for rpm-family and pacman tools, with a place to build packages.
pub struct ManagerSandbox {
    dir: TempDir,
}

impl ManagerSandbox {
    /// Creates an empty root.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("fenrir-mgr-").tempdir()?;
        for sub in [
            "root/var/log",
            "root/var/lib/pacman",
            "home",
            "packages",
            "state",
        ] {
            fs::create_dir_all(dir.path().join(sub))?;
        }
        fs::write(
            dir.path().join("home/.rpmmacros"),
            "%_dbpath /var/lib/rpm\n",
        )?;
        fs::write(
            dir.path().join("pacman.conf"),
            "[options]\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Never\n",
        )?;
        Ok(Self { dir })
    }

    /// Returns the sandbox's top directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the root the tools install into.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Builds a noarch rpm with `rpmbuild` and returns its path.
    pub fn build_rpm(&self, name: &str, version: &str) -> anyhow::Result<PathBuf> {
        let spec = self.dir.path().join(format!("{name}-{version}.spec"));
        fs::write(
            &spec,
            format!(
                "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: Fenrir test package\n\
                 License: MIT\nBuildArch: noarch\n%description\nFenrir test package\n\
                 %install\nmkdir -p %{{buildroot}}/usr/share/{name}\n\
                 echo {version} > %{{buildroot}}/usr/share/{name}/version\n\
                 %files\n/usr/share/{name}/version\n"
            ),
        )?;
        let top = self.dir.path().join("rpmbuild");
        let output = Command::new("rpmbuild")
            .args(["-bb", "--quiet"])
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg(&spec)
            .env("HOME", self.dir.path().join("home"))
            .output()
            .context("failed to start rpmbuild")?;
        if !output.status.success() {
            bail!(
                "rpmbuild failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let rpm = top.join(format!("RPMS/noarch/{name}-{version}-1.noarch.rpm"));
        if !rpm.exists() {
            bail!("rpmbuild left no {}", rpm.display());
        }
        Ok(rpm)
    }

    /// Builds a pacman package (`.pkg.tar.zst` with a `.PKGINFO`) and returns its path.
    pub fn build_pacman(&self, name: &str, version: &str) -> anyhow::Result<PathBuf> {
        let tree = self.dir.path().join(format!("pkg-{name}-{version}"));
        let data = tree.join(format!("usr/share/{name}"));
        fs::create_dir_all(&data)?;
        fs::write(data.join("version"), format!("{version}\n"))?;
        fs::write(
            tree.join(".PKGINFO"),
            format!(
                "pkgname = {name}\npkgbase = {name}\npkgver = {version}\n\
                 pkgdesc = Fenrir test package\nurl = https://fenrir.invalid\n\
                 builddate = 1700000000\npackager = Fenrir Tests\nsize = 8\narch = any\n\
                 license = MIT\n"
            ),
        )?;
        let package = self
            .dir
            .path()
            .join(format!("packages/{name}-{version}-any.pkg.tar.zst"));
        let output = Command::new("tar")
            .arg("--zstd")
            .arg("-cf")
            .arg(&package)
            .arg("-C")
            .arg(&tree)
            .args([".PKGINFO", "usr"])
            .output()
            .context("failed to start tar")?;
        if !output.status.success() {
            bail!("tar failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(package)
    }

    fn run(&self, mut command: Command, what: &str) -> anyhow::Result<Output> {
        // zypper's own debug log would otherwise grow the host's /var/log/zypper.log.
        let output = command
            .env("HOME", self.dir.path().join("home"))
            .env("ZYPP_LOGFILE", self.dir.path().join("zypper.log"))
            .env("LC_ALL", "C")
            .output()
            .with_context(|| format!("failed to start {what}"))?;
        if !output.status.success() {
            bail!(
                "{what} failed with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }

    /// Returns dnf's command line for this root, without any repository.
    #[must_use]
    pub fn dnf_command(&self) -> Command {
        let mut command = Command::new("dnf");
        command
            .args(["-y", "-q"])
            .arg(format!("--installroot={}", self.root().display()))
            .args([
                "--setopt=reposdir=/dev/null",
                "--releasever=1",
                "--disablerepo=*",
            ]);
        command
    }

    /// Runs dnf on the root; fails unless it succeeds.
    pub fn dnf(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = self.dnf_command();
        command.args(args);
        self.run(command, &format!("dnf {args:?}"))
    }

    /// Returns the dnf log of the root.
    #[must_use]
    pub fn dnf_log(&self) -> PathBuf {
        self.root().join("var/log/dnf.rpm.log")
    }

    /// Returns zypper's command line for this root.
    #[must_use]
    pub fn zypper_command(&self) -> Command {
        let mut command = Command::new("zypper");
        command
            .args(["--non-interactive", "--no-gpg-checks", "--root"])
            .arg(self.root());
        command
    }

    /// Runs zypper on the root; fails unless it succeeds.
    pub fn zypper(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = self.zypper_command();
        command.args(args);
        self.run(command, &format!("zypper {args:?}"))
    }

    /// Returns zypper's history of the root.
    #[must_use]
    pub fn zypper_log(&self) -> PathBuf {
        self.root().join("var/log/zypp/history")
    }

    /// Returns pacman's command line for this root.
    #[must_use]
    pub fn pacman_command(&self) -> Command {
        let mut command = Command::new("pacman");
        command
            .args(["--noconfirm", "--root"])
            .arg(self.root())
            .arg("--config")
            .arg(self.dir.path().join("pacman.conf"));
        command
    }

    /// Runs pacman on the root; fails unless it succeeds.
    pub fn pacman(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = self.pacman_command();
        command.args(args);
        self.run(command, &format!("pacman {args:?}"))
    }

    /// Returns pacman's log of the root.
    #[must_use]
    pub fn pacman_log(&self) -> PathBuf {
        self.root().join("var/log/pacman.log")
    }

    /// Writes a sensor configuration that follows only `manager`'s `log` (and a dpkg log
    /// nothing writes), with state and outputs inside the sandbox and no SSH logins read (the
    /// host's would change the rules' verdicts); returns its path.
    pub fn sensor_config(&self, manager: &str, log: &Path) -> anyhow::Result<PathBuf> {
        self.write_config(&[(manager, log)], false)
    }

    /// Like [`ManagerSandbox::sensor_config`], reading the existing log from its start.
    pub fn sensor_config_from_start(&self, manager: &str, log: &Path) -> anyhow::Result<PathBuf> {
        self.write_config(&[(manager, log)], true)
    }

    /// Writes a sensor configuration that follows the rpm database of the root (initialized
    /// here) and dnf's log; returns its path.
    pub fn rpm_and_dnf_config(&self) -> anyhow::Result<PathBuf> {
        self.rpm(&["--initdb"])?;
        let root = self.root();
        self.write_config(&[("rpm", &root), ("dnf", &self.dnf_log())], false)
    }

    /// Follows each manager's log (for rpm: the database of that root), nothing else.
    fn write_config(&self, follow: &[(&str, &Path)], from_start: bool) -> anyhow::Result<PathBuf> {
        let mut text = format!(
            "host = \"managers-host\"\nfrom_start = {from_start}\nstate_dir = \"{}\"\n\
             [dpkg]\nlog = \"{}\"\nadmin_dir = \"{}\"\n[sinks.journald]\nenabled = false\n\
             [ssh]\nsource = \"off\"\n",
            self.dir.path().join("state").display(),
            self.dir.path().join("dpkg.log").display(),
            self.dir.path().join("dpkg-admin").display(),
        );
        for manager in ["dnf", "yum", "zypper", "pacman", "apk", "rpm"] {
            let _ = writeln!(text, "[managers.{manager}]");
            match follow.iter().find(|(name, _)| *name == manager) {
                Some(("rpm", root)) => {
                    let _ = writeln!(text, "root = \"{}\"", root.display());
                }
                Some((_, log)) => {
                    let _ = writeln!(text, "log = \"{}\"", log.display());
                }
                None => text.push_str("enabled = false\n"),
            }
        }
        let path = self.dir.path().join("fenrir.toml");
        fs::write(&path, text)?;
        Ok(path)
    }

    /// Runs rpm itself on the root, its database at `/var/lib/rpm` inside it; fails unless
    /// it succeeds.
    pub fn rpm(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new("rpm");
        command
            .arg("--root")
            .arg(self.root())
            .args(["--dbpath", "/var/lib/rpm"])
            .args(args);
        self.run(command, &format!("rpm {args:?}"))
    }
}

/// Returns whether `program` is installed (an executable file on `PATH`), printing
/// `skipping: <reason>` when not. It is not run: dnf and zypper would write their own logs
/// into the host's `/var/log`.
#[must_use]
pub fn require_program(program: &str, what: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;

    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(program))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    });
    if !found {
        println!("skipping: {what} needs {program}, which is not installed");
    }
    found
}
