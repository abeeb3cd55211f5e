//! Real dpkg against a sandbox: tiny packages built with `dpkg-deb`, installed with `dpkg`
//! into a private root, admin directory and log.
//!
//! Maintainer scripts run without chroot (`--force-script-chrootless`), so the sandbox needs no
//! shell of its own; everything dpkg writes stays inside the sandbox's temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

/// A package to build.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Body of the postinst script (`#!/bin/sh` is added), if any.
    pub postinst: Option<String>,
    /// Body of the preinst script, if any.
    pub preinst: Option<String>,
    /// A conffile under `/etc/<name>.conf`, so removal leaves config files behind.
    pub with_conffile: bool,
    /// More data files: a path relative to the root and its content.
    pub files: Vec<(String, String)>,
}

impl PackageSpec {
    /// A package with one data file and no scripts.
    #[must_use]
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            arch: "all".to_owned(),
            postinst: None,
            preinst: None,
            with_conffile: false,
            files: Vec::new(),
        }
    }

    /// Adds a data file at `path` (relative to the root) with `content`.
    #[must_use]
    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.push((path.to_owned(), content.to_owned()));
        self
    }

    /// Adds a postinst script.
    #[must_use]
    pub fn postinst(mut self, body: &str) -> Self {
        self.postinst = Some(body.to_owned());
        self
    }

    /// Adds a preinst script.
    #[must_use]
    pub fn preinst(mut self, body: &str) -> Self {
        self.preinst = Some(body.to_owned());
        self
    }

    /// Adds a conffile.
    #[must_use]
    pub fn conffile(mut self) -> Self {
        self.with_conffile = true;
        self
    }
}

/// A private dpkg installation: root directory, admin directory and log.
pub struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    /// Creates an empty dpkg database in a fresh temporary directory.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("fenrir-dpkg-").tempdir()?;
        let admin = dir.path().join("root/var/lib/dpkg");
        for sub in ["info", "updates", "triggers"] {
            fs::create_dir_all(admin.join(sub))?;
        }
        fs::write(admin.join("status"), b"")?;
        fs::create_dir_all(dir.path().join("debs"))?;
        fs::create_dir_all(dir.path().join("log"))?;
        Ok(Self { dir })
    }

    /// Returns the sandbox's top directory, for state and outputs of the test.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the root dpkg installs into.
    #[must_use]
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Returns dpkg's admin directory inside the root.
    #[must_use]
    pub fn admin_dir(&self) -> PathBuf {
        self.root().join("var/lib/dpkg")
    }

    /// Returns the log dpkg writes.
    #[must_use]
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("log/dpkg.log")
    }

    /// Returns the arguments of `fenrir-sensor run` with `options`, pointed at this sandbox:
    /// its log, its admin directory and a state directory inside it.
    #[must_use]
    pub fn run_args(&self, options: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_owned()];
        args.extend(options.iter().map(|s| (*s).to_owned()));
        for (option, value) in [
            ("--dpkg-log", self.log()),
            ("--dpkg-admindir", self.admin_dir()),
            ("--state-dir", self.path().join("state")),
        ] {
            args.push(option.to_owned());
            args.push(value.display().to_string());
        }
        args
    }

    /// Builds a `.deb` with `dpkg-deb --build` and returns its path.
    pub fn build(&self, spec: &PackageSpec) -> anyhow::Result<PathBuf> {
        let tree = self
            .dir
            .path()
            .join(format!("build-{}-{}", spec.name, sanitize(&spec.version)));
        if tree.exists() {
            fs::remove_dir_all(&tree)?;
        }
        let debian = tree.join("DEBIAN");
        fs::create_dir_all(&debian)?;
        fs::write(
            debian.join("control"),
            format!(
                "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Fenrir Tests \
                 <tests@fenrir.invalid>\nDescription: Fenrir test package\n",
                spec.name, spec.version, spec.arch
            ),
        )?;
        let data = tree.join(format!("usr/share/{}", spec.name));
        fs::create_dir_all(&data)?;
        fs::write(data.join("version"), format!("{}\n", spec.version))?;
        for (path, content) in &spec.files {
            let path = tree.join(path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(path, content)?;
        }
        if spec.with_conffile {
            fs::create_dir_all(tree.join("etc"))?;
            fs::write(
                tree.join(format!("etc/{}.conf", spec.name)),
                "setting = 1\n",
            )?;
            fs::write(
                debian.join("conffiles"),
                format!("/etc/{}.conf\n", spec.name),
            )?;
        }
        for (name, body) in [("preinst", &spec.preinst), ("postinst", &spec.postinst)] {
            if let Some(body) = body {
                let script = debian.join(name);
                fs::write(&script, format!("#!/bin/sh\n{body}\n"))?;
                fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
            }
        }

        let deb = self.dir.path().join(format!(
            "debs/{}_{}_{}.deb",
            spec.name,
            sanitize(&spec.version),
            spec.arch
        ));
        let output = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&tree)
            .arg(&deb)
            .output()
            .context("failed to start dpkg-deb")?;
        if !output.status.success() {
            bail!(
                "dpkg-deb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(deb)
    }

    /// Runs dpkg on the sandbox with `args` and returns its output, whatever its exit status.
    pub fn dpkg(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.dpkg_logging_to(&self.log(), args)
    }

    /// Runs dpkg on the sandbox writing its log to `log` instead of the sandbox's, as
    /// `dpkg --log` lets anyone do.
    pub fn dpkg_logging_to(&self, log: &Path, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("dpkg")
            .arg(format!("--root={}", self.root().display()))
            .arg(format!("--log={}", log.display()))
            .arg("--force-script-chrootless")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("failed to start dpkg")
    }

    /// Runs dpkg and fails unless it succeeds.
    pub fn dpkg_ok(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = self.dpkg(args)?;
        if !output.status.success() {
            bail!(
                "dpkg {args:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Installs a package built from `spec`.
    pub fn install(&self, spec: &PackageSpec) -> anyhow::Result<()> {
        let deb = self.build(spec)?;
        self.dpkg_ok(&["-i", &deb.to_string_lossy()])
    }
}

fn sanitize(version: &str) -> String {
    version.replace(':', "%3a")
}

/// Returns whether this process runs as root, printing `skipping: <reason>` when not.
#[must_use]
pub fn require_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    println!("skipping: {what} needs root to run dpkg against a sandbox");
    false
}
