//! Builds the kernel program: toolchain pieces first, then the `fenrir-ebpf` crate.
//!
//! In: the workspace root; out: the path of the eBPF object. State: `target/ebpf-tools`
//! (bpf-linker and the libLLVM prefix it is linked against, reused across runs) and
//! `target/ebpf` (the kernel crate's build directory).
//!
//! Every step checks whether its result exists first, so a second run only rebuilds the
//! kernel crate, which cargo itself keeps incremental.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// The bpf-linker release that links for LLVM 22, the LLVM of the pinned nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The kernel crate's target.
const TARGET: &str = "bpfel-unknown-none";

/// Builds the kernel program and returns the path of its object.
pub fn build_ebpf(workspace_root: &Path) -> Result<PathBuf> {
    let target_dir = workspace_root.join("target/ebpf");
    let status = kernel_cargo(workspace_root, "build")?
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("failed to run cargo for the kernel crate")?;
    if !status.success() {
        bail!("kernel crate build failed: {status}");
    }

    let object = target_dir.join(TARGET).join("release/fenrir-ebpf");
    if !object.is_file() {
        bail!("kernel build left no object at {}", object.display());
    }

    Ok(object)
}

/// Runs clippy on the kernel crate for its own target, warnings denied.
pub fn lint_ebpf(workspace_root: &Path) -> Result<()> {
    let target_dir = workspace_root.join("target/ebpf-clippy");
    let mut command = kernel_cargo(workspace_root, "clippy")?;
    command
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "-D", "warnings"]);
    crate::run_checked(&mut command)
}

/// A nightly cargo command for the kernel crate with the toolchain pieces it needs in place.
fn kernel_cargo(workspace_root: &Path, verb: &str) -> Result<Command> {
    let tools = workspace_root.join("target/ebpf-tools");
    ensure_rust_src()?;
    let linker_bin = ensure_bpf_linker(&tools)?;

    let path = env::var_os("PATH").unwrap_or_default();
    let mut search = vec![linker_bin];
    search.extend(env::split_paths(&path));
    let path = env::join_paths(search).context("failed to build PATH for bpf-linker")?;

    let mut command = nightly_command("cargo");
    command
        .current_dir(workspace_root.join("fenrir-ebpf"))
        .env("PATH", path)
        .args([
            verb,
            "--release",
            "-j",
            "2",
            "-Z",
            "build-std=core",
            "--target",
            TARGET,
        ]);
    Ok(command)
}

/// A command run with the nightly toolchain, cleared of the variables the outer stable cargo
/// set (they would point the nested build at the stable compiler).
pub(crate) fn nightly_command(program: &str) -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", "nightly", program]);

    for (key, _) in env::vars_os() {
        let key_text = key.to_string_lossy();
        let is_outer = key_text.starts_with("CARGO_")
            || key_text.starts_with("RUSTUP_TOOLCHAIN")
            || matches!(
                &*key_text,
                "RUSTC" | "RUSTDOC" | "RUSTC_WRAPPER" | "RUSTFLAGS"
            );
        if is_outer && key_text != "CARGO_HOME" {
            command.env_remove(key);
        }
    }

    command
}

fn output_text(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("failed to run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }

    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `-Z build-std=core` needs the standard library's sources.
fn ensure_rust_src() -> Result<()> {
    let installed = output_text(
        Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]),
        "rustup component list",
    )?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(());
    }

    let status = Command::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .status()
        .context("failed to run rustup component add")?;
    if !status.success() {
        bail!("rustup component add rust-src failed: {status}");
    }

    Ok(())
}

/// Builds bpf-linker from crates.io against nightly's own libLLVM, unless already built.
///
/// Returns the directory holding the `bpf-linker` binary.
fn ensure_bpf_linker(tools: &Path) -> Result<PathBuf> {
    let bin = tools.join("bin");
    let linker = bin.join("bpf-linker");
    if Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        return Ok(bin);
    }

    let sysroot = output_text(
        nightly_command("rustc").args(["--print", "sysroot"]),
        "rustc --print sysroot",
    )?;
    let sysroot_lib = PathBuf::from(sysroot.trim()).join("lib");
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("failed to create {}", prefix_lib.display()))?;

    // The link step looks for `libLLVM.so`; the runtime loader wants the soname file.
    let mut major = None;
    for entry in fs::read_dir(&sysroot_lib)
        .with_context(|| format!("failed to list {}", sysroot_lib.display()))?
    {
        let entry = entry.context("failed to read the toolchain's lib directory")?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("libLLVM") {
            continue;
        }

        replace_symlink(&entry.path(), &prefix_lib.join(&*name))?;
        if let Some(version) = name.strip_prefix("libLLVM.so.") {
            major = version.split('.').next().map(str::to_owned);
            replace_symlink(&entry.path(), &prefix_lib.join("libLLVM.so"))?;
        }
    }
    let Some(major) = major else {
        bail!("no libLLVM.so.* in {}", sysroot_lib.display());
    };

    let status = Command::new("cargo")
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
            "-j",
            "2",
        ])
        .arg("--root")
        .arg(tools)
        .status()
        .context("failed to run cargo install bpf-linker")?;
    if !status.success() {
        bail!("building bpf-linker failed: {status}");
    }

    Ok(bin)
}

fn replace_symlink(original: &Path, link: &Path) -> Result<()> {
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).with_context(|| format!("failed to replace {}", link.display()))?;
    }

    std::os::unix::fs::symlink(original, link)
        .with_context(|| format!("failed to link {}", link.display()))
}
