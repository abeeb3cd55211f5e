//! Reads a stream of raw dpkg.log lines into package changes.
//!
//! In: raw lines (bytes, any content) with where they came from. Out: package changes in log
//! order. State: the transaction tracker, and counters of lines seen and skipped. Shared by
//! the live tail and by replay, so both decide every line the same way.

use std::path::Path;

use tracing::{debug, warn};

use super::dpkg::{parse_line, LogLine, ParseError};
use super::transaction::Transactions;
use super::PackageChange;

/// Counters of one interpreter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterpretStats {
    pub lines: u64,
    /// Lines that are not something dpkg writes: counted and skipped.
    pub malformed: u64,
    pub changes: u64,
}

/// Turns dpkg.log lines into package changes.
#[derive(Debug, Default)]
pub struct LogInterpreter {
    transactions: Transactions,
    stats: InterpretStats,
}

impl LogInterpreter {
    /// Resumes with the transaction state saved by [`LogInterpreter::saved_state`]; state that
    /// cannot be read back is dropped with a warning (pending installs are then not judged).
    #[must_use]
    pub fn resume(state: Option<&serde_json::Value>) -> Self {
        let transactions = match state.map(|s| serde_json::from_value(s.clone())) {
            Some(Ok(transactions)) => transactions,
            Some(Err(err)) => {
                warn!(error = %err, "dropping unreadable saved transaction state");
                Transactions::default()
            }
            None => Transactions::default(),
        };
        Self {
            transactions,
            stats: InterpretStats::default(),
        }
    }

    /// Reads one line; `path` and `line_no` only label diagnostics.
    pub fn line(&mut self, bytes: &[u8], path: &Path, line_no: u64) -> Vec<PackageChange> {
        let parsed = parse_line(bytes);

        // A line that parsed is valid UTF-8 except in a conffile path, which decides nothing.
        let raw = match parsed {
            Ok(_) => String::from_utf8_lossy(bytes),
            Err(_) => std::borrow::Cow::Borrowed(""),
        };
        self.parsed(parsed, &raw, path, line_no)
    }

    /// Takes one line already parsed with [`parse_line`], so parsing can run on another thread;
    /// `raw` is the line's text, which the changes it decides carry.
    pub fn parsed(
        &mut self,
        parsed: Result<LogLine, ParseError>,
        raw: &str,
        path: &Path,
        line_no: u64,
    ) -> Vec<PackageChange> {
        self.stats.lines += 1;
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                self.stats.malformed += 1;
                debug!(path = %path.display(), line_no, error = %err, "skipping unparsable dpkg line");
                return Vec::new();
            }
        };
        let changes = self.transactions.feed(&parsed, raw);
        self.stats.changes += changes.len() as u64;
        changes
    }

    /// Judges every install still waiting: dpkg's run has ended.
    pub fn finish(&mut self) -> Vec<PackageChange> {
        let changes = self.transactions.finish();
        self.stats.changes += changes.len() as u64;
        changes
    }

    /// Returns whether some install or upgrade has not yet reached the installed state.
    #[must_use]
    pub fn has_pending(&self) -> bool {
        self.transactions.pending() > 0
    }

    /// Returns the state a restart needs to judge installs still in progress.
    #[must_use]
    pub fn saved_state(&self) -> Option<serde_json::Value> {
        if self.has_pending() {
            serde_json::to_value(&self.transactions).ok()
        } else {
            None
        }
    }

    /// Returns the counters.
    #[must_use]
    pub fn stats(&self) -> InterpretStats {
        self.stats
    }
}
