//! Installs what the sensor, its tests and benchmarks need on a fresh Debian host.
//!
//! Every step checks first and does nothing when the need is already met, so the commands stay
//! cheap on a machine that has seen them before.

use std::process::Command;

use anyhow::{bail, Context as _};

/// Debian packages `cargo xtask run` needs: dpkg itself and journald, the sensor's default sink.
pub const RUN_PACKAGES: &[&str] = &["dpkg", "systemd"];

/// Debian packages the tests and benchmarks drive for real.
pub const TEST_PACKAGES: &[&str] = &[
    // dpkg and dpkg-deb run against sandbox roots.
    "dpkg",
    // systemd-journald and journalctl, started and read back by the journald tests.
    "systemd",
    // gzip and xz build the rotated `.gz` and `.xz` logs of the replay tests.
    "gzip",
    "xz-utils",
    // python3 takes an fcntl lock the way dpkg does in the lock tests.
    "python3",
    // bpftool dumps the kernel's types so a test can check the offsets read from BTF.
    "bpftool",
    // gcc compiles that test's offsetof program; setpriv (util-linux) changes users in tests.
    "gcc",
    "util-linux",
    // The other package managers run against sandbox roots; rpm brings rpmbuild, which builds
    // their packages, and the version order is checked against rpm's own.
    "rpm",
    "dnf",
    "zypper",
    "pacman-package-manager",
    // vercmp, pacman's version order, and zstd, which packs pacman packages.
    "makepkg",
    "zstd",
    // The SSH tests start their own sshd on loopback, log in with ssh, change packages
    // through sudo, and have rsyslog write an auth.log.
    "openssh-server",
    "openssh-client",
    "sudo",
    "rsyslog",
    // The package test builds the .deb (dpkg-shlibdeps, strip), lets its maintainer scripts
    // enable the unit in a sandbox (deb-systemd-helper) and renders the man page (groff).
    "dpkg-dev",
    "binutils",
    "init-system-helpers",
    "groff-base",
    // The service test boots systemd in a container over a copy of this host and runs the
    // unit there; the fleet test ships journal entries to a journal collector.
    "systemd-container",
    "systemd-journal-remote",
    // The integrity tests rotate the sandbox's log with the real logrotate in every mode.
    "logrotate",
];

/// Where Debian's maintainer scripts ask whether they may start a service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Installs the packages of `packages` that are missing, with one `apt-get update` at most.
pub fn ensure_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !super::is_root() {
        bail!("missing Debian packages {missing:?}; install them or run as root");
    }
    println!("xtask: installing {}", missing.join(" "));
    // openssh-server and rsyslog would start their daemons (sshd on port 22) on install; the
    // tests start their own, so nothing is started here and nothing is left running.
    let policy = ServiceStartBlock::install()?;
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("failed to start apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed with {update}");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        // Another apt run on the same host holds the lock for a while; wait for it.
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("failed to start apt-get install")?;
    drop(policy);
    if !install.success() {
        bail!(
            "apt-get install {} failed with {install}",
            missing.join(" ")
        );
    }
    Ok(())
}

/// Debian packages the benchmark compares the sensor with, installed only while it runs.
pub const BENCH_PACKAGES: &[&str] = &["auditd"];

/// Packages installed for a while: whatever was missing is installed now, and exactly what
/// this installed (dependencies included) is purged again when the guard drops, so the host
/// is left as it was found.
pub struct TemporaryPackages {
    installed: Vec<String>,
}

impl TemporaryPackages {
    /// Installs the packages of `packages` that are missing.
    pub fn install(packages: &[&str]) -> anyhow::Result<Self> {
        let before = installed_packages()?;
        ensure_packages(packages)?;
        let installed: Vec<String> = installed_packages()?
            .into_iter()
            .filter(|package| !before.contains(package))
            .collect();
        if !installed.is_empty() {
            println!("xtask: installed {} for this run only", installed.join(" "));
        }
        Ok(Self { installed })
    }
}

impl Drop for TemporaryPackages {
    fn drop(&mut self) {
        if self.installed.is_empty() {
            return;
        }
        println!("xtask: purging {}", self.installed.join(" "));
        let purge = Command::new("apt-get")
            .args(["purge", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600"])
            .args(&self.installed)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if !purge.is_ok_and(|status| status.success()) {
            eprintln!(
                "xtask: failed to purge {}; remove them by hand",
                self.installed.join(" ")
            );
        }
    }
}

/// Every package dpkg counts as installed.
fn installed_packages() -> anyhow::Result<std::collections::BTreeSet<String>> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status} ${Package}\n"])
        .output()
        .context("failed to run dpkg-query")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("installed "))
        .map(str::to_owned)
        .collect())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
}

/// A `policy-rc.d` that forbids starting services, present while it lives; one the host
/// already has is left alone.
struct ServiceStartBlock {
    created: bool,
}

impl ServiceStartBlock {
    fn install() -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;

        let path = std::path::Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(Self { created: false });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# Written by cargo xtask while it installs packages.\nexit 101\n",
        )
        .with_context(|| format!("failed to write {POLICY_RC_D}"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("failed to make {POLICY_RC_D} executable"))?;
        Ok(Self { created: true })
    }
}

impl Drop for ServiceStartBlock {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}
