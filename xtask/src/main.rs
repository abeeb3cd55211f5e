//! `cargo xtask`: the project's own set-up, run, test and benchmark commands.
//!
//! Every command installs what it needs first (Debian packages, toolchain parts), idempotently,
//! so a fresh machine needs nothing but the repository.

mod setup;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Fenrir's build, run, test and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the sensor and run it on this host (as root); extra arguments go to `run`
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every check and test: format, lints, unit and privileged end-to-end tests, docs
    Test,
    /// Print the benchmark figures: append-to-event latency, replay throughput, memory
    Bench,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Task::Run { args } => run_sensor(&root, &args),
        Task::Test => test(&root),
        Task::Bench => bench(&root),
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the workspace root")
}

/// Runs a command in the workspace root and fails with its name when it fails.
pub(crate) fn run_checked(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    println!("xtask: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("failed to start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn run_sensor(root: &Path, args: &[String]) -> anyhow::Result<()> {
    setup::ensure_packages(setup::RUN_PACKAGES)?;
    run_checked(
        root,
        &cargo(),
        &["build", "--release", "-p", "fenrir-sensor"],
    )?;

    let binary = root.join("target/release/fenrir-sensor");
    if !is_root() {
        eprintln!("xtask: not root: the kernel tracer and /var/lib/fenrir need root");
    }
    let mut command = Command::new(&binary);
    command.arg("run").args(args);
    println!("xtask: {} run {}", binary.display(), args.join(" "));
    let status = command
        .status()
        .with_context(|| format!("failed to start {}", binary.display()))?;
    if !status.success() {
        bail!("fenrir-sensor exited with {status}");
    }
    Ok(())
}

fn test(root: &Path) -> anyhow::Result<()> {
    setup::ensure_packages(setup::TEST_PACKAGES)?;
    let cargo = cargo();

    run_checked(root, &cargo, &["fmt", "--all", "--", "--check"])?;
    run_checked(
        root,
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;

    // The end-to-end tests drive the real binary, so it must exist before they start.
    run_checked(root, &cargo, &["build", "--locked", "-p", "fenrir-sensor"])?;
    if !is_root() {
        eprintln!("xtask: not root: privileged tests will print `skipping:` lines");
    }
    run_checked(
        root,
        &cargo,
        &["test", "--workspace", "--locked", "--no-fail-fast"],
    )?;

    let status = Command::new(&cargo)
        .args(["doc", "--workspace", "--no-deps", "--locked"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(root)
        .status()
        .context("failed to start cargo doc")?;
    if !status.success() {
        bail!("cargo doc failed with {status}");
    }
    println!("xtask: every check passed");
    Ok(())
}

fn bench(root: &Path) -> anyhow::Result<()> {
    setup::ensure_packages(setup::TEST_PACKAGES)?;
    run_checked(
        root,
        &cargo(),
        &["build", "--release", "--locked", "-p", "fenrir-sensor"],
    )?;
    run_checked(
        root,
        &cargo(),
        &[
            "run",
            "--release",
            "--locked",
            "-p",
            "fenrir-tests",
            "--bin",
            "fenrir-bench",
            "--",
        ],
    )
}

/// Whether this process runs as root: `/proc/self` is owned by the effective uid.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}
