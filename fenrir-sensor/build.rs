//! Embeds the kernel program named by `FENRIR_EBPF_OBJECT`, or an empty placeholder.
//!
//! The kernel crate needs nightly and bpf-linker (`cargo xtask build-ebpf` builds it); a plain
//! `cargo build` on stable gets an empty object, which the loader reports as "this build
//! carries no kernel program".

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=FENRIR_EBPF_OBJECT");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo always sets OUT_DIR"));
    let target = out_dir.join("fenrir-ebpf.o");

    match env::var_os("FENRIR_EBPF_OBJECT").filter(|path| !path.is_empty()) {
        Some(object) => {
            let object = PathBuf::from(object);
            println!("cargo::rerun-if-changed={}", object.display());
            if let Err(error) = fs::copy(&object, &target) {
                panic!("failed to copy kernel object {}: {error}", object.display());
            }
        }
        None => {
            if let Err(error) = fs::write(&target, []) {
                panic!("failed to write {}: {error}", target.display());
            }
        }
    }
}
