//! The files the Debian package ships from `fenrir-sensor/dist`, read as tests need them.

use std::path::PathBuf;

use anyhow::Context as _;

/// Returns the directory of the packaged files.
#[must_use]
pub fn dist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fenrir-sensor/dist")
}

/// Returns the path of the systemd unit.
#[must_use]
pub fn unit_path() -> PathBuf {
    dist_dir().join("fenrir.service")
}

/// Reads the systemd unit.
pub fn read_unit() -> anyhow::Result<String> {
    let path = unit_path();
    std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))
}

/// Returns every whitespace-separated value of every `key=` assignment in `unit`, in order.
#[must_use]
pub fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}
