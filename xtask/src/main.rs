//! `cargo xtask`: the project's own set-up, run, test and benchmark commands.
//!
//! Every command installs what it needs first (Debian packages, toolchain parts), idempotently,
//! so a fresh machine needs nothing but the repository.

mod deb;
mod ebpf;
mod fuzz;
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
    /// Print the benchmark figures beside their baselines: append-to-event latency against a
    /// 2 s poller, replay throughput, memory and exec cost against an auditd execve rule
    Bench,
    /// Build the Debian package (release binary, unit, config, man page) under target/deb
    Deb,
    /// Torture the release sensor: rotations, kill -9, bursts, read-only output, a killed
    /// journald, inode reuse; prints lost and duplicated counts and fails unless both are 0
    Torture {
        /// Ten times the rotations, kills, bursts and rounds of the short run
        #[arg(long)]
        long: bool,
        /// Seed of the random timings, to repeat a run
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Fuzz the parsers (dpkg lines and logs, apt history, other managers' logs, configuration,
    /// version order) with libFuzzer, the corpus seeded from real logs; fails on a panic
    Fuzz {
        /// Inputs to run per target
        #[arg(long, default_value_t = 10_000_000)]
        inputs: u64,
        /// Fuzz only this target
        #[arg(long)]
        target: Option<String>,
    },
    /// Build the kernel program and print the path of its object
    #[command(hide = true)]
    BuildEbpf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Task::Run { args } => run_sensor(&root, &args),
        Task::Test => test(&root),
        Task::Bench => bench(&root),
        Task::Torture { long, seed } => {
            let object = ebpf::build_ebpf(&root)?;
            run_checked(&mut cargo(
                &root,
                &object,
                &["build", "--release", "--locked", "-p", "fenrir-sensor"],
            ))?;
            torture(&root, &object, long, seed)
        }
        Task::Fuzz { inputs, target } => fuzz::fuzz(&root, inputs, target.as_deref()),
        Task::Deb => {
            let deb = build_release_deb(&root)?;
            println!("xtask: built {}", deb.display());
            Ok(())
        }
        Task::BuildEbpf => {
            println!("{}", ebpf::build_ebpf(&root)?.display());
            Ok(())
        }
    }
}

/// Inputs per fuzz target in the short run of `cargo xtask test`; `cargo xtask fuzz` runs
/// ten million by default.
const FUZZ_SHORT_INPUTS: u64 = 50_000;

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the workspace root")
}

/// Runs a command in the workspace root and fails with its name when it fails.
pub(crate) fn run_checked(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}").replace('"', "");
    println!("xtask: {shown}");
    let status = command
        .status()
        .with_context(|| format!("failed to start {shown}"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}

/// A cargo command in the workspace root that embeds the kernel program at `object`.
fn cargo(root: &Path, object: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command
        .args(args)
        .current_dir(root)
        .env("FENRIR_EBPF_OBJECT", object);
    command
}

fn run_sensor(root: &Path, args: &[String]) -> anyhow::Result<()> {
    setup::ensure_packages(setup::RUN_PACKAGES)?;
    let object = ebpf::build_ebpf(root)?;
    run_checked(&mut cargo(
        root,
        &object,
        &["build", "--release", "-p", "fenrir-sensor"],
    ))?;

    if !is_root() {
        eprintln!("xtask: not root: the kernel tracer and /var/lib/fenrir need root");
    }
    let binary = root.join("target/release/fenrir-sensor");
    run_checked(Command::new(&binary).arg("run").args(args))
}

fn test(root: &Path) -> anyhow::Result<()> {
    setup::ensure_packages(setup::TEST_PACKAGES)?;
    let object = ebpf::build_ebpf(root)?;

    run_checked(&mut cargo(
        root,
        &object,
        &["fmt", "--all", "--", "--check"],
    ))?;
    let lint = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ];
    run_checked(&mut cargo(root, &object, &lint))?;
    ebpf::lint_ebpf(root)?;

    // The end-to-end tests drive the real binary, so it must exist before they start.
    run_checked(&mut cargo(
        root,
        &object,
        &["build", "--locked", "-p", "fenrir-sensor"],
    ))?;
    // The package the tests install is the one `cargo xtask deb` ships: release build.
    let deb = build_release_deb(root)?;
    if !is_root() {
        eprintln!("xtask: not root: privileged tests will print `skipping:` lines");
    }
    let mut tests = cargo(
        root,
        &object,
        &["test", "--workspace", "--locked", "--no-fail-fast"],
    );
    run_checked(tests.env("FENRIR_DEB", &deb))?;
    torture(root, &object, false, None)?;
    fuzz::fuzz(root, FUZZ_SHORT_INPUTS, None)?;

    let mut doc = cargo(
        root,
        &object,
        &["doc", "--workspace", "--no-deps", "--locked"],
    );
    run_checked(doc.env("RUSTDOCFLAGS", "-D warnings"))?;
    println!("xtask: every check passed");
    Ok(())
}

fn bench(root: &Path) -> anyhow::Result<()> {
    setup::ensure_packages(setup::TEST_PACKAGES)?;
    // auditd is the comparison's baseline; what is installed for it goes again afterwards.
    let _auditd = setup::TemporaryPackages::install(setup::BENCH_PACKAGES)?;
    let object = ebpf::build_ebpf(root)?;
    let build = [
        "build",
        "--release",
        "--locked",
        "-p",
        "fenrir-sensor",
        "-p",
        "fenrir-tests",
    ];
    run_checked(&mut cargo(root, &object, &build))?;
    run_checked(&mut Command::new(root.join("target/release/fenrir-bench")))
}

/// Runs the torture suite against the release sensor, which must be built.
fn torture(root: &Path, object: &Path, long: bool, seed: Option<u64>) -> anyhow::Result<()> {
    setup::ensure_packages(setup::TEST_PACKAGES)?;
    run_checked(&mut cargo(
        root,
        object,
        &[
            "build",
            "--locked",
            "-p",
            "fenrir-tests",
            "--bin",
            "fenrir-torture",
        ],
    ))?;
    let mut torture = Command::new(root.join("target/debug/fenrir-torture"));
    torture.env(
        "FENRIR_SENSOR_BIN",
        root.join("target/release/fenrir-sensor"),
    );
    if long {
        torture.arg("--long");
    }
    if let Some(seed) = seed {
        torture.args(["--seed", &seed.to_string()]);
    }
    run_checked(&mut torture)
}

/// Builds the release sensor with its kernel program and packs it into a `.deb`.
fn build_release_deb(root: &Path) -> anyhow::Result<PathBuf> {
    setup::ensure_packages(deb::BUILD_PACKAGES)?;
    let object = ebpf::build_ebpf(root)?;
    run_checked(&mut cargo(
        root,
        &object,
        &["build", "--release", "--locked", "-p", "fenrir-sensor"],
    ))?;
    deb::build_deb(root, &root.join("target/release/fenrir-sensor"))
}

/// Whether this process runs as root: `/proc/self` is owned by the effective uid.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}
