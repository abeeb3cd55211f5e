//! Developer tasks for Fenrir: `cargo xtask <task>`.

mod ebpf;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
enum Task {
    /// Builds the kernel program and prints the path of its object.
    #[command(hide = true)]
    BuildEbpf,
}

fn main() -> anyhow::Result<()> {
    let workspace_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();

    match Task::parse() {
        Task::BuildEbpf => println!("{}", ebpf::build_ebpf(&workspace_root)?.display()),
    }

    Ok(())
}
