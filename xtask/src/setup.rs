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
    "systemd", // gzip builds rotated `.gz` logs for replay tests.
    "gzip",    // python3 takes an fcntl lock the way dpkg does in the lock tests.
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
];

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
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("failed to start apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed with {update}");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("failed to start apt-get install")?;
    if !install.success() {
        bail!(
            "apt-get install {} failed with {install}",
            missing.join(" ")
        );
    }
    Ok(())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
}
