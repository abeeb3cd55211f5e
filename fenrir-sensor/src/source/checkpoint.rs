//! Where the tail stopped, kept across restarts.
//!
//! In: the position after the last line whose events reached a sink. Out: a small JSON file in
//! the state directory, replaced atomically (write, fsync, rename, fsync of the directory) so a
//! crash leaves either the old or the new checkpoint, never a torn one.
//!
//! A position names the file by device and inode *and* by a fingerprint of its first line: an
//! inode number freed by a deleted log can be handed to a new file, and only the content tells
//! the two apart.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many bytes of the first line the fingerprint covers.
pub const FINGERPRINT_SPAN: usize = 1024;

/// The checkpoint format version; a file with another version is ignored with a warning.
const FORMAT_VERSION: u32 = 1;

/// A file as the kernel names it: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl FileIdentity {
    /// Returns the identity of an open file.
    pub fn of_file(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Returns the identity of the file at `path`, following symlinks.
    pub fn of_path(path: &Path) -> io::Result<Self> {
        let meta = fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Hashes the first complete line of `file` (at most 1 KiB of it).
///
/// Returns `None` while the file has no complete first line: a fingerprint taken from half a
/// line would change once the line is finished and look like a replaced file.
pub fn fingerprint(file: &mut File) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(FINGERPRINT_SPAN);
    file.seek(SeekFrom::Start(0))?;
    Read::by_ref(file)
        .take(FINGERPRINT_SPAN as u64)
        .read_to_end(&mut head)?;

    Ok(fingerprint_of_head(&head))
}

/// Hashes the first complete line in `head`, the first bytes of a file (1 KiB of them, or the
/// whole file when shorter), as [`fingerprint`] does.
#[must_use]
pub fn fingerprint_of_head(head: &[u8]) -> Option<String> {
    let head = &head[..head.len().min(FINGERPRINT_SPAN)];
    let span = match head.iter().position(|&b| b == b'\n') {
        Some(newline) => &head[..=newline],
        None if head.len() == FINGERPRINT_SPAN => head,
        None => return None,
    };
    let digest = Sha256::digest(span);
    Some(digest.iter().take(12).fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// The position after the last delivered line of one log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The log path the position belongs to, as configured.
    pub path: PathBuf,
    pub identity: FileIdentity,
    pub fingerprint: Option<String>,
    /// Bytes of the file consumed, always at a line boundary.
    pub offset: u64,
    /// Parse-stage state that must survive a restart (installs still waiting for dpkg to
    /// finish), opaque to the source stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<serde_json::Value>,
    /// What the log witness knows of the consumed content (a hash of the prefix), opaque to
    /// the source stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<serde_json::Value>,
}

impl Checkpoint {
    /// Creates a checkpoint in the current format.
    #[must_use]
    pub fn new(
        path: PathBuf,
        identity: FileIdentity,
        fingerprint: Option<String>,
        offset: u64,
    ) -> Self {
        Self {
            version: FORMAT_VERSION,
            path,
            identity,
            fingerprint,
            offset,
            transactions: None,
            witness: None,
        }
    }
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("failed to read checkpoint {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {path} has format version {found}, expected {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("failed to persist checkpoint {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The checkpoint file of one log inside the state directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    path: PathBuf,
}

impl CheckpointStore {
    /// Names the checkpoint of `log` inside `state_dir`, one file per log path.
    #[must_use]
    pub fn for_log(state_dir: &Path, log: &Path) -> Self {
        Self {
            path: state_dir
                .join("checkpoints")
                .join(format!("{}.json", state_file_name(log))),
        }
    }

    /// Returns where the checkpoint lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint; `Ok(None)` when none was ever written.
    ///
    /// # Errors
    /// A checkpoint that exists but cannot be read or understood is an error: the caller
    /// decides whether to start over.
    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let checkpoint: Checkpoint =
            serde_json::from_slice(&text).map_err(|source| CheckpointError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        if checkpoint.version != FORMAT_VERSION {
            return Err(CheckpointError::Version {
                path: self.path.clone(),
                found: checkpoint.version,
            });
        }
        Ok(Some(checkpoint))
    }

    /// Replaces the checkpoint atomically and durably.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let wrap = |source| CheckpointError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes =
            serde_json::to_vec(checkpoint).map_err(|err| wrap(io::Error::other(err)))?;
        bytes.push(b'\n');
        write_atomically(&self.path, &bytes).map_err(wrap)
    }
}

/// Names the state file kept about `path`: the path with every character but letters,
/// digits, `.` and `-` turned into `_` (`/var/log/dpkg.log` → `var_log_dpkg.log`).
pub(crate) fn state_file_name(path: &Path) -> String {
    path.to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Replaces `path` with `bytes` atomically and durably: write a temporary file beside it,
/// fsync, rename over, fsync the directory. A crash leaves the old file or the new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;

    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);

    fs::rename(&temporary, path)?;

    // The rename is only durable once the directory entry itself reaches the disk.
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_checkpoint_loads_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = CheckpointStore::for_log(dir.path(), Path::new("/var/log/dpkg.log"));
        assert!(store.load()?.is_none());

        let mut checkpoint = Checkpoint::new(
            "/var/log/dpkg.log".into(),
            FileIdentity { dev: 1, ino: 2 },
            Some("abc".into()),
            42,
        );
        checkpoint.transactions = Some(serde_json::json!({"pending": []}));
        store.save(&checkpoint)?;
        assert_eq!(store.load()?, Some(checkpoint));
        assert!(store.path().ends_with("checkpoints/var_log_dpkg.log.json"));
        Ok(())
    }

    #[test]
    fn corrupt_checkpoint_is_reported_not_trusted() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = CheckpointStore::for_log(dir.path(), Path::new("/x.log"));
        fs::create_dir_all(store.path().parent().unwrap_or(dir.path()))?;
        fs::write(store.path(), b"{\"version\":1,\"offs")?;
        assert!(matches!(store.load(), Err(CheckpointError::Corrupt { .. })));
        Ok(())
    }

    #[test]
    fn fingerprint_waits_for_a_complete_first_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        fs::write(&path, b"2026-05-03 14:32:11 startup")?;
        assert_eq!(fingerprint(&mut File::open(&path)?)?, None);

        fs::write(&path, b"2026-05-03 14:32:11 startup archives unpack\nmore")?;
        let first = fingerprint(&mut File::open(&path)?)?;
        assert!(first.is_some());

        fs::write(
            &path,
            b"2026-05-03 14:32:11 startup archives unpack\nother tail\n",
        )?;
        assert_eq!(fingerprint(&mut File::open(&path)?)?, first);

        fs::write(&path, b"2026-05-04 09:00:00 startup archives unpack\n")?;
        assert_ne!(fingerprint(&mut File::open(&path)?)?, first);
        Ok(())
    }
}
