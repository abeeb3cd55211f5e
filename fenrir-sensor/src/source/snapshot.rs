//! The installed set as the sensor last knew it, kept across restarts.
//!
//! In: the set to keep. Out: `<state_dir>/snapshots/<admin dir>.json`, written atomically, and
//! read back at the next start. State on disk only.
//!
//! The snapshot always describes the database as of the checkpoint's position in the log (or
//! later): the pipeline writes it before the checkpoint, so a crash between the two leaves a
//! snapshot that already includes what the lines after the checkpoint will report again,
//! which is harmless, and never one that misses lines the checkpoint counts as delivered.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::checkpoint::{state_file_name, write_atomically};
use crate::parse::status::InstalledSet;

/// The format of snapshot files; a file of another version is not used.
const FORMAT_VERSION: u32 = 1;

/// The installed set at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// The admin directory whose database this is.
    pub admin_dir: PathBuf,
    /// When the snapshot was written: changes it does not know of happened after this.
    pub saved_at: DateTime<FixedOffset>,
    pub packages: InstalledSet,
}

impl Snapshot {
    /// Creates a snapshot of `packages` taken now.
    #[must_use]
    pub fn new(admin_dir: PathBuf, packages: InstalledSet) -> Self {
        Self {
            version: FORMAT_VERSION,
            admin_dir,
            saved_at: chrono::Local::now().fixed_offset(),
            packages,
        }
    }
}

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("failed to read snapshot {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot {path} has format version {found}, not {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("failed to persist snapshot {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The snapshot file of one admin directory inside the state directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    path: PathBuf,
}

impl SnapshotStore {
    /// Names the snapshot of `admin_dir` inside `state_dir`, one file per admin directory.
    #[must_use]
    pub fn for_admin_dir(state_dir: &Path, admin_dir: &Path) -> Self {
        Self {
            path: state_dir
                .join("snapshots")
                .join(format!("{}.json", state_file_name(admin_dir))),
        }
    }

    /// Returns where the snapshot lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the snapshot; `Ok(None)` when none was ever written.
    ///
    /// # Errors
    /// A snapshot that exists but cannot be read or understood.
    pub fn load(&self) -> Result<Option<Snapshot>, SnapshotError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SnapshotError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let snapshot: Snapshot =
            serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if snapshot.version != FORMAT_VERSION {
            return Err(SnapshotError::Version {
                path: self.path.clone(),
                found: snapshot.version,
            });
        }
        Ok(Some(snapshot))
    }

    /// Replaces the snapshot atomically and durably.
    pub fn save(&self, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        let wrap = |source| SnapshotError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(snapshot).map_err(|e| wrap(io::Error::other(e)))?;
        bytes.push(b'\n');
        write_atomically(&self.path, &bytes).map_err(wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::dpkg::PackageState;
    use crate::parse::status::InstalledPackage;

    #[test]
    fn saved_snapshot_loads_back_and_corruption_is_reported() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = SnapshotStore::for_admin_dir(dir.path(), Path::new("/var/lib/dpkg"));
        assert!(store.load()?.is_none());
        assert!(store.path().ends_with("snapshots/var_lib_dpkg.json"));

        let packages: InstalledSet = vec![InstalledPackage {
            name: "vim".into(),
            arch: Some("amd64".into()),
            version: Some("2:9.0-1".into()),
            state: PackageState::Installed,
        }]
        .into();
        let snapshot = Snapshot::new("/var/lib/dpkg".into(), packages);
        store.save(&snapshot)?;
        assert_eq!(store.load()?, Some(snapshot));

        fs::write(store.path(), b"{\"version\":1,\"adm")?;
        assert!(matches!(store.load(), Err(SnapshotError::Corrupt { .. })));
        Ok(())
    }
}
