//! The learning history: from which addresses each user has logged in successfully.
//!
//! In: successful logins. Out: whether a (user, address) pair was seen within the learning
//! period. State: the pairs with the time each was last seen, bounded in number, persisted as
//! JSON in the state directory and replaced atomically (write, fsync, rename, fsync of the
//! directory) so a crash leaves the old or the new file, never a torn one.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::source::checkpoint::write_atomically;

/// Version of the history file's format.
const FORMAT_VERSION: u32 = 1;

/// One remembered pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    user: String,
    ip: IpAddr,
    /// Unix seconds of the last successful login.
    last_seen: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct HistoryFile {
    version: u32,
    entries: Vec<Entry>,
}

/// Successful logins per user and address.
#[derive(Debug, Clone, Default)]
pub struct LoginHistory {
    seen: HashMap<(String, IpAddr), i64>,
    max_entries: usize,
    /// Seconds a pair stays remembered after its last login.
    period: i64,
}

impl LoginHistory {
    /// Creates an empty history keeping at most `max_entries` pairs for `period_secs`.
    #[must_use]
    pub fn new(max_entries: usize, period_secs: i64) -> Self {
        Self {
            seen: HashMap::new(),
            max_entries: max_entries.max(1),
            period: period_secs,
        }
    }

    /// Returns whether `user` logged in from `ip` within the period before `at` (Unix seconds).
    #[must_use]
    pub fn has_seen(&self, user: &str, ip: IpAddr, at: i64) -> bool {
        self.seen
            .get(&(user.to_owned(), ip))
            .is_some_and(|&last| last <= at + 1 && at - last <= self.period)
    }

    /// Records a successful login; the oldest pairs go when the bound is reached.
    pub fn record(&mut self, user: &str, ip: IpAddr, at: i64) {
        let last = self.seen.entry((user.to_owned(), ip)).or_insert(at);
        *last = (*last).max(at);
        if self.seen.len() > self.max_entries {
            self.evict(self.seen.len() - self.max_entries);
        }
    }

    /// Forgets pairs last seen more than the period before `now`.
    pub fn expire(&mut self, now: i64) {
        self.seen.retain(|_, last| now - *last <= self.period);
    }

    fn evict(&mut self, count: usize) {
        let mut by_age: Vec<(i64, (String, IpAddr))> =
            self.seen.iter().map(|(k, &v)| (v, k.clone())).collect();
        by_age.sort_unstable();
        for (_, key) in by_age.into_iter().take(count) {
            self.seen.remove(&key);
        }
    }

    /// Returns how many pairs are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Returns whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Reads the history from `path`; a missing file is an empty history.
    ///
    /// # Errors
    /// Fails when the file exists but cannot be read or understood.
    pub fn load(path: &Path, max_entries: usize, period_secs: i64) -> io::Result<Self> {
        let mut history = Self::new(max_entries, period_secs);
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(history),
            Err(err) => return Err(err),
        };
        let file: HistoryFile = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        if file.version != FORMAT_VERSION {
            return Err(io::Error::other(format!(
                "history format version {} is not {FORMAT_VERSION}",
                file.version
            )));
        }
        for entry in file.entries {
            history.record(&entry.user, entry.ip, entry.last_seen);
        }
        Ok(history)
    }

    /// Replaces the file at `path` with this history, atomically and durably.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut entries: Vec<Entry> = self
            .seen
            .iter()
            .map(|((user, ip), &last_seen)| Entry {
                user: user.clone(),
                ip: *ip,
                last_seen,
            })
            .collect();
        entries.sort_unstable_by(|a, b| (&a.user, a.ip).cmp(&(&b.user, b.ip)));
        let mut bytes = serde_json::to_vec(&HistoryFile {
            version: FORMAT_VERSION,
            entries,
        })
        .map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_atomically(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn a_pair_is_seen_only_within_the_period_and_per_user() {
        let mut history = LoginHistory::new(10, 100);
        history.record("alice", ip("10.0.0.1"), 1_000);
        assert!(history.has_seen("alice", ip("10.0.0.1"), 1_050));
        assert!(history.has_seen("alice", ip("10.0.0.1"), 1_100));
        assert!(!history.has_seen("alice", ip("10.0.0.1"), 1_101));
        assert!(!history.has_seen("bob", ip("10.0.0.1"), 1_050));
        assert!(!history.has_seen("alice", ip("10.0.0.2"), 1_050));
        // A login is not evidence for a time before it.
        assert!(!history.has_seen("alice", ip("10.0.0.1"), 900));
    }

    #[test]
    fn the_bound_evicts_the_least_recently_seen() {
        let mut history = LoginHistory::new(2, 1_000);
        history.record("a", ip("10.0.0.1"), 1);
        history.record("a", ip("10.0.0.2"), 2);
        history.record("a", ip("10.0.0.1"), 3);
        history.record("a", ip("10.0.0.3"), 4);
        assert_eq!(history.len(), 2);
        assert!(history.has_seen("a", ip("10.0.0.1"), 5));
        assert!(!history.has_seen("a", ip("10.0.0.2"), 5));
    }

    #[test]
    fn history_survives_a_save_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ssh/history.json");
        let mut history = LoginHistory::new(10, 1_000);
        history.record("alice", ip("2001:db8::1"), 500);
        history.save(&path).expect("saved");
        let loaded = LoginHistory::load(&path, 10, 1_000).expect("loaded");
        assert!(loaded.has_seen("alice", ip("2001:db8::1"), 600));
        assert_eq!(
            LoginHistory::load(&dir.path().join("none"), 10, 1)
                .expect("empty")
                .len(),
            0
        );
        fs::write(&path, b"{garbage").expect("written");
        assert!(LoginHistory::load(&path, 10, 1).is_err());
    }
}
