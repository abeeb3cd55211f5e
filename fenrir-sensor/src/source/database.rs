//! Package databases followed by snapshot: apk's where apk writes no log, and rpm's for the
//! changes rpm makes when run by hand.
//!
//! In: the database's path, and a wake-up whenever its directory changes or the poll ticks.
//! Out: the package changes between the last snapshot delivered and the database now, dated
//! with the database's modification time. State: that snapshot, changes found but not yet
//! taken by a sink, and what the files looked like when last read; the snapshot is kept in the
//! checkpoint, so changes made while the sensor was down are reported when it starts.
//!
//! apk replaces its database by renaming a new file over it, so a change shows as a new
//! inode, size or modification time, and a read never sees half a database. rpm's database is
//! a directory (`rpmdb.sqlite` and its write-ahead log, or `Packages`); it is read with
//! `rpm -qa` once rpm's transaction lock is free, so a transaction is seen whole. Without a
//! checkpoint, the first reading is the baseline and reports nothing.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use chrono::{DateTime, Local, NaiveDateTime};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::checkpoint::{Checkpoint, CheckpointStore, FileIdentity};
use super::followed::{Delivery, FollowOptions, SourceTag};
use super::lock::{lock_holder, LockState};
use crate::parse::apk::installed::Snapshot;
use crate::parse::interpret::InterpretStats;
use crate::parse::rpm::database::{RpmSnapshot, QUERY_FORMAT};
use crate::parse::PackageChange;

/// A database followed by snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    /// apk's `installed` file.
    Apk { file: PathBuf },
    /// rpm's database directory `dbpath` inside `root`.
    Rpm { root: PathBuf, dbpath: PathBuf },
}

impl DatabaseKind {
    /// Returns the file (apk) or directory (rpm) followed.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Apk { file } => file.clone(),
            Self::Rpm { root, dbpath } => root.join(dbpath.strip_prefix("/").unwrap_or(dbpath)),
        }
    }

    /// Returns the files whose changes mean the database changed, for the directory watch.
    #[must_use]
    pub fn watched_files(&self) -> Vec<PathBuf> {
        match self {
            Self::Apk { file } => vec![file.clone()],
            Self::Rpm { .. } => {
                let dir = self.path();
                RPM_FILES.iter().map(|name| dir.join(name)).collect()
            }
        }
    }

    /// Looks at the database's files: identity, size and latest modification.
    fn look(&self) -> std::io::Result<Look> {
        match self {
            Self::Apk { file } => Look::of(file),
            Self::Rpm { .. } => {
                let dir = self.path();
                let mut look = Look::of(&dir)?;
                look.len = 0;
                for entry in std::fs::read_dir(&dir)?.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // Readers write the shared-memory index; the lock file is not data.
                    if name.ends_with("-shm") || name.starts_with('.') {
                        continue;
                    }
                    let Ok(meta) = entry.metadata() else { continue };
                    look.len += meta.len();
                    look.modified = look.modified.max(meta.modified().ok());
                }
                Ok(look)
            }
        }
    }

    /// Reads the database; `Ok(None)` when it cannot be read consistently right now.
    fn read(&self, stats: &mut InterpretStats) -> std::io::Result<Option<DatabaseSnapshot>> {
        match self {
            Self::Apk { file } => {
                let bytes = std::fs::read(file)?;
                let (snapshot, read) = Snapshot::parse(&bytes);
                stats.malformed += (read.incomplete + read.malformed_lines) as u64;
                Ok(Some(DatabaseSnapshot::Apk(snapshot)))
            }
            Self::Rpm { root, dbpath } => {
                // A transaction in progress is read once it is whole: the lock is free and
                // nothing wrote while `rpm -qa` read.
                let lock = [self.path().join(".rpm.lock")];
                let before = self.look()?;
                if matches!(lock_holder(&lock)?, LockState::Held { .. }) {
                    return Ok(None);
                }
                let output = Command::new("rpm")
                    .arg("--root")
                    .arg(root)
                    .arg("--dbpath")
                    .arg(dbpath)
                    .args(["-qa", "--queryformat", QUERY_FORMAT])
                    .output()?;
                if !output.status.success() {
                    return Err(std::io::Error::other(format!(
                        "rpm -qa failed with {}: {}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    )));
                }
                if self.look()? != before || matches!(lock_holder(&lock)?, LockState::Held { .. }) {
                    return Ok(None);
                }
                let (snapshot, malformed) = RpmSnapshot::parse(&output.stdout);
                stats.malformed += malformed as u64;
                Ok(Some(DatabaseSnapshot::Rpm(snapshot)))
            }
        }
    }
}

/// The files of an rpm database directory, whatever its back end.
const RPM_FILES: [&str; 4] = [
    "rpmdb.sqlite",
    "rpmdb.sqlite-wal",
    "Packages",
    "Packages.db",
];

/// The packages of a database, as last read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "database", content = "packages", rename_all = "lowercase")]
enum DatabaseSnapshot {
    Apk(Snapshot),
    Rpm(RpmSnapshot),
}

impl DatabaseSnapshot {
    fn empty(kind: &DatabaseKind) -> Self {
        match kind {
            DatabaseKind::Apk { .. } => Self::Apk(Snapshot::default()),
            DatabaseKind::Rpm { .. } => Self::Rpm(RpmSnapshot::default()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Apk(snapshot) => snapshot.len(),
            Self::Rpm(snapshot) => snapshot.len(),
        }
    }

    fn changes_to(&self, after: &Self, at: NaiveDateTime) -> Vec<PackageChange> {
        match (self, after) {
            (Self::Apk(before), Self::Apk(after)) => before.changes_to(after, at),
            (Self::Rpm(before), Self::Rpm(after)) => before.changes_to(after, at),
            // A checkpoint of another database kind was dropped when it was loaded.
            _ => Vec::new(),
        }
    }
}

/// What the file looked like when it was last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    identity: FileIdentity,
    len: u64,
    modified: Option<SystemTime>,
}

impl Look {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            identity: FileIdentity {
                dev: meta.dev(),
                ino: meta.ino(),
            },
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// A database followed by snapshot.
#[derive(Debug)]
pub struct WatchedDatabase {
    tag: SourceTag,
    kind: DatabaseKind,
    path: PathBuf,
    store: CheckpointStore,
    /// The packages as last delivered.
    snapshot: DatabaseSnapshot,
    /// A newer reading whose changes are still being delivered.
    next: Option<(DatabaseSnapshot, Look)>,
    undelivered: VecDeque<PackageChange>,
    /// The file when last read; `None` makes the next wake-up read it.
    look: Option<Look>,
    resumed: bool,
    /// Whether a snapshot to compare with exists (read, or from the checkpoint).
    has_baseline: bool,
    /// Whether the changes being delivered were made while the sensor was down: the first
    /// reading after a start from a checkpoint.
    is_offline: bool,
    stats: InterpretStats,
}

impl WatchedDatabase {
    /// Starts following a database, from its checkpoint when there is one.
    #[must_use]
    pub fn open(tag: SourceTag, kind: DatabaseKind, options: &FollowOptions) -> Self {
        let path = kind.path();
        let store = CheckpointStore::for_log(&options.state_dir, &path);
        let saved = match store.load() {
            Ok(saved) => saved,
            Err(err) => {
                warn!(error = %format!("{err:#}"), "checkpoint unusable; taking a new baseline");
                None
            }
        };
        let saved_snapshot = saved
            .as_ref()
            .and_then(|c| c.transactions.clone())
            .and_then(
                |state| match serde_json::from_value::<DatabaseSnapshot>(state) {
                    Ok(snapshot)
                        if std::mem::discriminant(&snapshot)
                            == std::mem::discriminant(&DatabaseSnapshot::empty(&kind)) =>
                    {
                        Some(snapshot)
                    }
                    Ok(_) => {
                        warn!("saved snapshot is of another database; taking a new baseline");
                        None
                    }
                    Err(err) => {
                        warn!(error = %err, "dropping unreadable saved database snapshot");
                        None
                    }
                },
            );

        let mut database = Self {
            tag,
            snapshot: DatabaseSnapshot::empty(&kind),
            kind,
            path,
            store,
            next: None,
            undelivered: VecDeque::new(),
            look: None,
            resumed: saved_snapshot.is_some(),
            has_baseline: saved_snapshot.is_some(),
            is_offline: false,
            stats: InterpretStats::default(),
        };
        match saved_snapshot {
            Some(snapshot) => database.snapshot = snapshot,
            None => database.take_baseline(),
        }
        database
    }

    fn take_baseline(&mut self) {
        let Some((snapshot, look)) = self.read() else {
            debug!(path = %self.path.display(), "no database baseline yet");
            return;
        };
        info!(path = %self.path.display(), packages = snapshot.len(), "database baseline taken");
        self.snapshot = snapshot;
        self.look = Some(look);
        self.has_baseline = true;
        self.save_checkpoint();
    }

    /// Reads the database; `None` when it cannot be read now.
    fn read(&mut self) -> Option<(DatabaseSnapshot, Look)> {
        let look = match self.kind.look() {
            Ok(look) => look,
            Err(err) => {
                debug!(path = %self.path.display(), error = %err, "cannot look at the database");
                return None;
            }
        };
        let malformed = self.stats.malformed;
        let snapshot = match self.kind.read(&mut self.stats) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => {
                debug!(path = %self.path.display(), "database in use; reading it later");
                return None;
            }
            Err(err) => {
                warn!(path = %self.path.display(), error = %err, "cannot read the database");
                return None;
            }
        };
        self.stats.lines += 1;
        if self.stats.malformed > malformed {
            debug!(
                path = %self.path.display(),
                skipped = self.stats.malformed - malformed,
                "skipped unreadable parts of the database"
            );
        }
        Some((snapshot, look))
    }

    /// Returns which manager and position the source has.
    #[must_use]
    pub fn tag(&self) -> SourceTag {
        self.tag
    }

    /// Returns the database's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns which database this is.
    #[must_use]
    pub fn kind(&self) -> &DatabaseKind {
        &self.kind
    }

    /// Returns whether changes found are still waiting for a sink to take them.
    #[must_use]
    pub fn is_held(&self) -> bool {
        !self.undelivered.is_empty()
    }

    /// Returns whether the snapshot came from a checkpoint.
    #[must_use]
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// Returns the counters: readings as lines, skipped stanzas and lines as malformed.
    #[must_use]
    pub fn stats(&self) -> InterpretStats {
        self.stats
    }

    /// Reads the database when it changed and hands on what changed in it.
    pub fn pump(&mut self, out: &mut dyn Delivery) {
        // A database locked or missing at start gets its baseline at the first reading.
        if !self.has_baseline {
            self.take_baseline();
            return;
        }
        if !self.undelivered.is_empty() && !out.is_released() {
            return;
        }
        if self.next.is_none() {
            let Ok(look) = self.kind.look() else {
                return;
            };
            if self.look == Some(look) {
                return;
            }
            let Some((after, look)) = self.read() else {
                return;
            };
            let at = look.modified.map_or_else(
                || Local::now().naive_local(),
                |t| DateTime::<Local>::from(t).naive_local(),
            );
            self.undelivered = self.snapshot.changes_to(&after, at).into();
            debug!(
                path = %self.path.display(),
                changes = self.undelivered.len(),
                packages = after.len(),
                "database read"
            );
            self.next = Some((after, look));
            // What a resumed snapshot's first reading finds happened while the sensor was down.
            self.is_offline = self.resumed && self.stats.lines == 1;
            out.before_lines();
        }

        // A change no sink took is kept by the sinks for retry; the rest wait for that.
        while let Some(change) = self.undelivered.pop_front() {
            self.stats.changes += 1;
            let taken = if self.is_offline {
                out.deliver_offline(self.tag, vec![change])
            } else {
                out.deliver(self.tag, vec![change], None)
            };
            if !taken {
                return;
            }
        }
        // A restart must compare with the old snapshot while a change is on its way.
        if !out.is_settled(self.tag) {
            return;
        }
        if let Some((snapshot, look)) = self.next.take() {
            self.snapshot = snapshot;
            self.look = Some(look);
            self.save_checkpoint();
        }
    }

    fn save_checkpoint(&mut self) {
        let Some(look) = self.look else { return };
        let mut checkpoint = Checkpoint::new(self.path.clone(), look.identity, None, look.len);
        checkpoint.transactions = serde_json::to_value(&self.snapshot).ok();
        if let Err(err) = self.store.save(&checkpoint) {
            warn!(error = %format!("{err:#}"), "failed to save checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::manager::Manager;
    use crate::source::tail::TailOptions;

    #[derive(Default)]
    struct Collect {
        changes: Vec<PackageChange>,
        offline: usize,
        is_refusing: bool,
    }

    impl Delivery for Collect {
        fn before_lines(&mut self) {}

        fn observe_line(&mut self, _source: SourceTag, _line: &crate::source::tail::Line) {}

        fn before_checkpoint(&mut self, _source: SourceTag) {}

        fn run_started(&mut self, _source: SourceTag, _start: &crate::parse::manager::RunStart) {}

        /// Like the dispatcher, keeps what it refuses for its own retries.
        fn deliver(
            &mut self,
            _source: SourceTag,
            changes: Vec<PackageChange>,
            _origin: Option<crate::source::origin::Origin<'_>>,
        ) -> bool {
            self.changes.extend(changes);
            !self.is_refusing
        }

        fn deliver_offline(&mut self, source: SourceTag, changes: Vec<PackageChange>) -> bool {
            self.offline += changes.len();
            self.deliver(source, changes, None)
        }

        fn is_released(&mut self) -> bool {
            !self.is_refusing
        }
    }

    fn stanza(name: &str, version: &str) -> String {
        format!("C:Q1{name}{version}=\nP:{name}\nV:{version}\nA:x86_64\n\n")
    }

    /// Replaces the database the way apk does: a new file renamed over the old one.
    fn write_database(path: &Path, text: &str) {
        let next = path.with_extension("new");
        std::fs::write(&next, text).expect("write");
        std::fs::rename(&next, path).expect("rename");
    }

    fn summary(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {}", c.category, c.package))
            .collect()
    }

    #[test]
    fn changes_between_readings_are_reported_once_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("installed");
        let options = FollowOptions {
            state_dir: dir.path().join("state"),
            tail: TailOptions::default(),
        };
        let tag = SourceTag {
            manager: Manager::Apk,
            index: 2,
        };
        write_database(
            &path,
            &(stanza("musl", "1.2.4-r1") + &stanza("busybox", "1.36.1-r15")),
        );

        let mut database =
            WatchedDatabase::open(tag, DatabaseKind::Apk { file: path.clone() }, &options);
        assert!(!database.is_resumed());
        let mut out = Collect::default();
        database.pump(&mut out);
        assert!(out.changes.is_empty(), "the baseline reports nothing");

        let next = stanza("musl", "1.2.4-r2") + &stanza("vim", "9.1.0-r0");
        write_database(&path, &(next + &stanza("busybox", "1.36.1-r15")));
        out.is_refusing = true;
        database.pump(&mut out);
        database.pump(&mut out);
        assert_eq!(
            summary(&out.changes),
            ["package_upgrade musl"],
            "held after it"
        );
        out.is_refusing = false;
        database.pump(&mut out);
        database.pump(&mut out);
        assert_eq!(
            summary(&out.changes),
            ["package_upgrade musl", "package_install vim"]
        );

        // Changed while the sensor was down: found at the next start.
        drop(database);
        write_database(&path, &stanza("musl", "1.2.4-r2"));
        let mut database =
            WatchedDatabase::open(tag, DatabaseKind::Apk { file: path.clone() }, &options);
        assert!(database.is_resumed());
        database.pump(&mut out);
        assert_eq!(
            summary(&out.changes),
            [
                "package_upgrade musl",
                "package_install vim",
                "package_remove busybox",
                "package_remove vim"
            ]
        );
        assert_eq!(database.stats().changes, 2);
        assert_eq!(
            out.offline, 2,
            "found at the start: made while the sensor was down"
        );
    }
}
