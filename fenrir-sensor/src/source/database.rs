//! apk's database of installed packages, followed by snapshot where apk writes no log.
//!
//! In: the database's path, and a wake-up whenever its directory changes or the poll ticks.
//! Out: the package changes between the last snapshot delivered and the database now, dated
//! with the database's modification time. State: that snapshot, changes found but not yet
//! taken by a sink, and what the file looked like when last read; the snapshot is kept in the
//! checkpoint, so changes made while the sensor was down are reported when it starts.
//!
//! apk replaces the database by renaming a new file over it, so a change shows as a new
//! inode, size or modification time, and a read never sees half a database. Without a
//! checkpoint, the first reading is the baseline and reports nothing.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Local};
use tracing::{debug, info, warn};

use super::checkpoint::{Checkpoint, CheckpointStore, FileIdentity};
use super::followed::{Delivery, FollowOptions, SourceTag};
use crate::parse::apk::installed::Snapshot;
use crate::parse::interpret::InterpretStats;
use crate::parse::PackageChange;

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

/// apk's database, followed by snapshot.
#[derive(Debug)]
pub struct WatchedDatabase {
    tag: SourceTag,
    path: PathBuf,
    store: CheckpointStore,
    /// The packages as last delivered.
    snapshot: Snapshot,
    /// A newer reading whose changes are still being delivered.
    next: Option<(Snapshot, Look)>,
    undelivered: VecDeque<PackageChange>,
    /// The file when last read; `None` makes the next wake-up read it.
    look: Option<Look>,
    resumed: bool,
    stats: InterpretStats,
}

impl WatchedDatabase {
    /// Starts following the database at `path`, from its checkpoint when there is one.
    #[must_use]
    pub fn open(tag: SourceTag, path: &Path, options: &FollowOptions) -> Self {
        let store = CheckpointStore::for_log(&options.state_dir, path);
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
            .and_then(|state| match serde_json::from_value::<Snapshot>(state) {
                Ok(snapshot) => Some(snapshot),
                Err(err) => {
                    warn!(error = %err, "dropping unreadable saved database snapshot");
                    None
                }
            });

        let mut database = Self {
            tag,
            path: path.to_path_buf(),
            store,
            snapshot: Snapshot::default(),
            next: None,
            undelivered: VecDeque::new(),
            look: None,
            resumed: saved_snapshot.is_some(),
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
            debug!(path = %self.path.display(), "no database yet");
            return;
        };
        info!(path = %self.path.display(), packages = snapshot.len(), "database baseline taken");
        self.snapshot = snapshot;
        self.look = Some(look);
        self.save_checkpoint();
    }

    /// Reads the database; `None` when it cannot be read now.
    fn read(&mut self) -> Option<(Snapshot, Look)> {
        let look = match Look::of(&self.path) {
            Ok(look) => look,
            Err(err) => {
                debug!(path = %self.path.display(), error = %err, "cannot look at the database");
                return None;
            }
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) => {
                warn!(path = %self.path.display(), error = %err, "cannot read the database");
                return None;
            }
        };
        let (snapshot, stats) = Snapshot::parse(&bytes);
        self.stats.lines += 1;
        if stats.incomplete + stats.malformed_lines > 0 {
            self.stats.malformed += (stats.incomplete + stats.malformed_lines) as u64;
            debug!(
                path = %self.path.display(),
                incomplete = stats.incomplete,
                malformed_lines = stats.malformed_lines,
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
        if !self.undelivered.is_empty() && !out.is_released() {
            return;
        }
        if self.next.is_none() {
            let Ok(look) = Look::of(&self.path) else {
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
            self.next = Some((after, look));
            out.before_lines();
        }

        // A change no sink took is kept by the sinks for retry; the rest wait for that.
        while let Some(change) = self.undelivered.pop_front() {
            self.stats.changes += 1;
            if !out.deliver(self.tag, vec![change]) {
                return;
            }
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
        is_refusing: bool,
    }

    impl Delivery for Collect {
        fn before_lines(&mut self) {}

        fn run_started(&mut self, _source: SourceTag, _start: &crate::parse::manager::RunStart) {}

        /// Like the dispatcher, keeps what it refuses for its own retries.
        fn deliver(&mut self, _source: SourceTag, changes: Vec<PackageChange>) -> bool {
            self.changes.extend(changes);
            !self.is_refusing
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

        let mut database = WatchedDatabase::open(tag, &path, &options);
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
        let mut database = WatchedDatabase::open(tag, &path, &options);
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
    }
}
