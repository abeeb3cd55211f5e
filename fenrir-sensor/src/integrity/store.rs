//! Fenrir's own record of every package's files as they were when it was installed.
//!
//! In: one [`PackageRecord`] per verified install. Out: `<state_dir>/integrity/records.log`,
//! appended to and never rewritten, and `<state_dir>/integrity/head`, the last record's number
//! and hash. State on disk only.
//!
//! Each line is `<hash> <json>`, where the hash is the SHA-256 of the previous line's hash
//! (64 zeros for the first) followed by the JSON exactly as written: a hash chain. Reading the
//! store checks every link, so:
//!
//! - an edited record (a file's hash, a path, a version) breaks its own link;
//! - a record removed, inserted or moved breaks the link of the record after it and the
//!   numbering;
//! - records cut off the end are caught against `head` and, while the sensor runs, against the
//!   head it holds in memory; every mismatch event carries the head, so copies of the events
//!   kept elsewhere vouch for the store up to that record.
//!
//! What it cannot do: root can rewrite the whole store — every record, the chain and `head` —
//! consistently, or delete it, and nothing on this host can tell a consistent rewrite from the
//! original. The chain turns a silent edit into one that needs the whole file recomputed, and
//! the heads shipped in events (to journald, a remote collector) are what a rewrite cannot
//! reach. Appends take an exclusive `flock` so the sensor and `fenrir-sensor verify --record`
//! never interleave.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::warn;

use super::check::FileKind;
use super::sums::hex;
use crate::source::checkpoint::write_atomically;

/// The hash before the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The longest unfinished last line taken for a torn append: a record of a package with
/// tens of thousands of files.
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One file as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative to the root, no leading `/` (lossy UTF-8).
    pub path: String,
    pub kind: FileKind,
    /// dpkg's MD5 for it at install time (md5sums or the conffile hash), if dpkg had one.
    pub md5: Option<String>,
    /// The SHA-256 of the file on disk at install time; `None` when it was missing then.
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// A package's files as they were when Fenrir verified its install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub time: String,
    pub admin_dir: String,
    pub root: String,
    pub package: String,
    pub arch: Option<String>,
    pub version: Option<String>,
    pub files: Vec<FileRecord>,
}

/// The line written: the record with its number.
#[derive(Debug, Serialize, Deserialize)]
struct Numbered {
    seq: u64,
    #[serde(flatten)]
    record: PackageRecord,
}

/// The last record of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// How many records the chain holds.
    pub seq: u64,
    /// The hash of the last record.
    pub hash: String,
    /// The length of the records file after it.
    pub len: u64,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to read record store {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to append to record store {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What reading the whole store found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Records read.
    pub records: u64,
    /// The end of the chain as read (the last record whose link held).
    pub head: Option<Head>,
    /// Every broken link or mismatch, in words, at most 32.
    pub problems: Vec<String>,
    /// The newest record of each wanted package, by `(admin_dir, package, arch)`.
    pub latest: HashMap<(String, String, Option<String>), PackageRecord>,
}

impl Scan {
    /// Returns whether the chain held from the first record to `head`.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The record store in one state directory.
///
/// TODO: the store is never compacted; it grows by about 150 bytes per file per install.
#[derive(Debug)]
pub struct RecordStore {
    path: PathBuf,
    head_path: PathBuf,
    /// The head after this process's last append, to notice records cut off while running.
    known: Option<Head>,
}

impl RecordStore {
    /// Names the store inside `state_dir`; nothing is opened yet.
    #[must_use]
    pub fn new(state_dir: &Path) -> Self {
        let dir = state_dir.join("integrity");
        Self {
            path: dir.join("records.log"),
            head_path: dir.join("head"),
            known: None,
        }
    }

    /// Returns the records file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and checks the whole store, keeping the newest record of each package `wanted`
    /// accepts.
    ///
    /// # Errors
    /// Only when the file exists and cannot be read; a broken chain is a [`Scan`] problem.
    pub fn scan(&self, wanted: &dyn Fn(&PackageRecord) -> bool) -> Result<Scan, StoreError> {
        let mut scan = Scan::default();
        let read_error = |source| StoreError::Read {
            path: self.path.clone(),
            source,
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if self.read_head().is_some() {
                    scan.problems
                        .push("the records file is gone but its head remains".to_owned());
                }
                return Ok(scan);
            }
            Err(err) => return Err(read_error(err)),
        };
        let mut reader = BufReader::new(file);
        let mut previous = GENESIS.to_owned();
        let mut offset = 0_u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(read_error)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            // An unfinished last line is an append in progress, or one a crash cut short.
            if line.last() != Some(&b'\n') {
                break;
            }
            let expected_seq = scan.records + 1;
            match check_line(&line[..n - 1], &previous, expected_seq) {
                Ok((hash, numbered)) => {
                    scan.records = expected_seq;
                    previous.clone_from(&hash);
                    scan.head = Some(Head {
                        seq: expected_seq,
                        hash,
                        len: offset,
                    });
                    if wanted(&numbered.record) {
                        let record = numbered.record;
                        let key = (
                            record.admin_dir.clone(),
                            record.package.clone(),
                            record.arch.clone(),
                        );
                        scan.latest.insert(key, record);
                    }
                }
                Err(problem) => {
                    push_problem(
                        &mut scan.problems,
                        format!(
                            "record {expected_seq} (byte {}): {problem}",
                            offset - n as u64
                        ),
                    );
                    // Go on from this line as if it held, so each edit is reported once.
                    if let Some((hash, _)) = split_line(&line[..n - 1]) {
                        hash.clone_into(&mut previous);
                    }
                    scan.records = expected_seq;
                }
            }
        }

        let last = scan.head.as_ref().map_or(0, |h| h.seq);
        for (head, whose) in [
            (self.read_head(), "its head file"),
            (self.known.clone(), "the sensor"),
        ] {
            if let Some(head) = head {
                if head.seq > last {
                    push_problem(
                        &mut scan.problems,
                        format!(
                            "the store ends at record {last} but {whose} names record {}: \
                             records were removed from its end",
                            head.seq
                        ),
                    );
                }
            }
        }
        Ok(scan)
    }

    /// Appends one record under an exclusive lock and returns the new head.
    ///
    /// # Errors
    /// When the store cannot be read or written (disk full, permissions).
    pub fn append(&mut self, record: PackageRecord) -> Result<Head, StoreError> {
        let write_error = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(write_error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(write_error)?;
        let mut locked = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| write_error(io::Error::from(errno)))?;
        let mut len = locked.metadata().map_err(write_error)?.len();

        // A crash in the middle of an append leaves part of a line past the last head written;
        // the record never counted, and the chain goes on from the last whole one.
        if let Some(torn) = self.torn_tail(&locked, len).map_err(write_error)? {
            locked.set_len(torn).map_err(write_error)?;
            warn!(
                path = %self.path.display(),
                bytes = len - torn,
                "dropped the unfinished record a crash left at the end of the record store"
            );
            len = torn;
        }

        // Another writer may have appended since; the chain continues from the file's end.
        let tail = match &self.known {
            Some(head) if head.len == len => Some(head.clone()),
            _ if len == 0 => None,
            _ => self.scan(&|_| false)?.head,
        };
        let (seq, previous) = tail.map_or((1, GENESIS.to_owned()), |h| (h.seq + 1, h.hash));
        let body = serde_json::to_string(&Numbered { seq, record })
            .map_err(|err| write_error(io::Error::other(err)))?;
        let hash = link(&previous, body.as_bytes());
        let line = format!("{hash} {body}\n");
        locked.write_all(line.as_bytes()).map_err(write_error)?;
        locked.sync_data().map_err(write_error)?;
        let head = Head {
            seq,
            hash,
            len: len + line.len() as u64,
        };
        let text = serde_json::to_vec(&head).map_err(|err| write_error(io::Error::other(err)))?;
        write_atomically(&self.head_path, &text).map_err(write_error)?;
        self.known = Some(head.clone());
        Ok(head)
    }

    /// Returns where the unfinished last line starts when the file ends in one past the saved
    /// head: bytes after the head's end with no newline among them.
    fn torn_tail(&self, file: &File, len: u64) -> io::Result<Option<u64>> {
        use std::os::unix::fs::FileExt as _;

        let Some(head) = self.read_head() else {
            return Ok(None);
        };
        let Some(past) = len.checked_sub(head.len).filter(|n| *n > 0) else {
            return Ok(None);
        };
        // One line at most: a longer tail holds more than a torn append.
        let Ok(size) = usize::try_from(past) else {
            return Ok(None);
        };
        if size > MAX_LINE_BYTES {
            return Ok(None);
        }
        let mut tail = vec![0; size];
        file.read_exact_at(&mut tail, head.len)?;
        Ok((!tail.contains(&b'\n')).then_some(head.len))
    }

    fn read_head(&self) -> Option<Head> {
        let bytes = fs::read(&self.head_path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn push_problem(problems: &mut Vec<String>, problem: String) {
    if problems.len() < 32 {
        problems.push(problem);
    }
}

/// The hash of a record after `previous`.
fn link(previous: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(body);
    hex(&hasher.finalize())
}

fn split_line(line: &[u8]) -> Option<(&str, &[u8])> {
    let space = line.iter().position(|&b| b == b' ')?;
    let hash = std::str::from_utf8(&line[..space]).ok()?;
    Some((hash, &line[space + 1..]))
}

/// Checks one line against the previous hash; returns its hash and record.
fn check_line(
    line: &[u8],
    previous: &str,
    expected_seq: u64,
) -> Result<(String, Numbered), &'static str> {
    let (hash, body) = split_line(line).ok_or("not a record line")?;
    if link(previous, body) != hash {
        return Err("its hash does not follow from the record before and its own content");
    }
    let numbered: Numbered = serde_json::from_slice(body).map_err(|_| "unreadable record")?;
    if numbered.seq != expected_seq {
        return Err("out of sequence");
    }
    Ok((hash.to_owned(), numbered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(package: &str, sha: &str) -> PackageRecord {
        PackageRecord {
            time: "2026-05-03T14:00:00+00:00".into(),
            admin_dir: "/var/lib/dpkg".into(),
            root: "/".into(),
            package: package.into(),
            arch: Some("amd64".into()),
            version: Some("1.0".into()),
            files: vec![FileRecord {
                path: "usr/bin/x".into(),
                kind: FileKind::File,
                md5: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
                sha256: Some(sha.into()),
                size: Some(0),
            }],
        }
    }

    fn filled(dir: &Path) -> anyhow::Result<RecordStore> {
        let mut store = RecordStore::new(dir);
        for (package, sha) in [("a", "aa"), ("b", "bb"), ("a", "cc")] {
            store.append(record(package, sha))?;
        }
        Ok(store)
    }

    #[test]
    fn an_intact_store_yields_the_newest_record_of_each_package() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = filled(dir.path())?;
        let scan = store.scan(&|_| true)?;
        assert!(scan.is_intact(), "{:?}", scan.problems);
        assert_eq!(scan.records, 3);
        let a = &scan.latest[&("/var/lib/dpkg".into(), "a".into(), Some("amd64".into()))];
        assert_eq!(a.files[0].sha256.as_deref(), Some("cc"));
        Ok(())
    }

    #[test]
    fn an_append_cut_short_by_a_crash_is_dropped_and_the_chain_goes_on() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = filled(dir.path())?;
        let whole = fs::read(store.path())?;
        let mut file = OpenOptions::new().append(true).open(store.path())?;
        file.write_all(b"4a1f0c {\"seq\":4,\"record\":{\"pack")?;
        drop(file);

        // The next run appends after the last whole record.
        let mut next = RecordStore::new(dir.path());
        next.append(record("c", "dd"))?;
        let scan = next.scan(&|_| true)?;
        assert!(scan.is_intact(), "{:?}", scan.problems);
        assert_eq!(scan.records, 4);
        assert!(fs::read(store.path())?.starts_with(&whole));

        // A whole line past the head is another writer's record, not a torn one: kept.
        let before = fs::read(store.path())?;
        let mut file = OpenOptions::new().append(true).open(store.path())?;
        file.write_all(b"garbage that ends its line\n")?;
        drop(file);
        let mut again = RecordStore::new(dir.path());
        let _ = again.append(record("d", "ee"));
        assert!(fs::read(store.path())?.starts_with(&before));
        assert!(!again.scan(&|_| true)?.is_intact());
        Ok(())
    }

    #[test]
    fn an_edited_record_breaks_the_chain() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = filled(dir.path())?;
        let text = fs::read_to_string(store.path())?;
        fs::write(store.path(), text.replacen("\"bb\"", "\"b0\"", 1))?;
        let scan = RecordStore::new(dir.path()).scan(&|_| true)?;
        assert_eq!(scan.problems.len(), 1, "{:?}", scan.problems);
        assert!(
            scan.problems[0].starts_with("record 2 "),
            "{:?}",
            scan.problems
        );
        Ok(())
    }

    #[test]
    fn a_removed_or_reordered_record_breaks_the_chain() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = filled(dir.path())?;
        let text = fs::read_to_string(store.path())?;
        let lines: Vec<&str> = text.lines().collect();

        fs::write(store.path(), format!("{}\n{}\n", lines[0], lines[2]))?;
        let scan = RecordStore::new(dir.path()).scan(&|_| true)?;
        assert!(
            scan.problems[0].starts_with("record 2 "),
            "{:?}",
            scan.problems
        );

        fs::write(
            store.path(),
            format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]),
        )?;
        let scan = RecordStore::new(dir.path()).scan(&|_| true)?;
        assert!(scan.problems.len() >= 2, "{:?}", scan.problems);
        Ok(())
    }

    #[test]
    fn records_cut_off_the_end_are_caught_by_the_head() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = filled(dir.path())?;
        let text = fs::read_to_string(store.path())?;
        let kept: String = text.lines().take(2).flat_map(|l| [l, "\n"]).collect();
        fs::write(store.path(), kept)?;
        let scan = store.scan(&|_| true)?;
        assert_eq!(scan.problems.len(), 2, "{:?}", scan.problems);
        assert!(scan
            .problems
            .iter()
            .all(|p| p.contains("removed from its end")));
        Ok(())
    }

    #[test]
    fn a_consistent_rewrite_is_not_detectable_on_the_host() -> anyhow::Result<()> {
        // What the store does not protect against, stated as a test: root rebuilding the
        // chain and its head from scratch leaves nothing to notice locally.
        let dir = tempfile::tempdir()?;
        let original = filled(dir.path())?;
        let shipped = original.scan(&|_| false)?.head;
        fs::remove_file(original.path())?;
        let mut forged = RecordStore::new(dir.path());
        for (package, sha) in [("a", "aa"), ("b", "bb"), ("a", "ff")] {
            forged.append(record(package, sha))?;
        }
        let scan = RecordStore::new(dir.path()).scan(&|_| true)?;
        assert!(scan.is_intact());
        // Only a head kept elsewhere (as shipped in events) shows the difference.
        assert_ne!(scan.head.map(|h| h.hash), shipped.map(|h| h.hash));
        Ok(())
    }

    #[test]
    fn another_writers_append_is_continued_not_forked() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut first = RecordStore::new(dir.path());
        first.append(record("a", "aa"))?;
        let mut second = RecordStore::new(dir.path());
        second.append(record("b", "bb"))?;
        first.append(record("c", "cc"))?;
        let scan = RecordStore::new(dir.path()).scan(&|_| true)?;
        assert!(scan.is_intact(), "{:?}", scan.problems);
        assert_eq!(scan.records, 3);
        Ok(())
    }

    #[test]
    fn an_unfinished_last_line_is_not_a_record() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = filled(dir.path())?;
        let mut file = OpenOptions::new().append(true).open(store.path())?;
        file.write_all(b"abc {\"seq\":4")?;
        let scan = RecordStore::new(dir.path()).scan(&|_| true)?;
        assert!(scan.is_intact(), "{:?}", scan.problems);
        assert_eq!(scan.records, 3);
        Ok(())
    }
}
