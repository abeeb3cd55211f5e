//! The event store: every event the sensor emits, kept on the host for later questions.
//!
//! In: events, through [`StoreSink`] like any other sink. Out: JSON lines in size-rotated
//! segment files under `<state_dir>/events/`, and a [`SegmentSummary`] beside each full
//! segment, which lets a reader skip whole segments by time, package, category or manager.
//! State on disk only: the segments and their summaries.
//!
//! ```text
//! events/segment-00000000000000000001.jsonl         full, never written again
//! events/segment-00000000000000000001.summary.json  its summary
//! events/segment-00000000000000000002.jsonl         the segment being written
//! ```
//!
//! `events/coverage.json` says since when the store holds the event of every line of the
//! followed dpkg log: from the first start, as long as each run stops cleanly (`events/running`
//! is removed then), the next resumes from its checkpoint, the store takes every event, and
//! retention has not deleted them. A reader may
//! skip log files that lie wholly inside that time.
//!
//! Each line is an event exactly as the JSON sink writes it. Segments are numbered in the
//! order they were started; the highest-numbered one without a summary is the one being
//! written. A summary names the size of the segment it describes, so a summary that does not
//! fit its segment (the segment was cut after a crash) is ignored and the segment is read
//! whole.

pub mod reader;
pub mod writer;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

pub use writer::{StoreOptions, StoreSink};

use crate::sink::Sink as _;

/// The version of the summary format; a summary of another version is ignored.
const SUMMARY_VERSION: u32 = 1;

/// The prefix of every segment file name.
const SEGMENT_PREFIX: &str = "segment-";
/// The suffix of a segment's data file.
const DATA_SUFFIX: &str = ".jsonl";
/// The suffix of a segment's summary file.
const SUMMARY_SUFFIX: &str = ".summary.json";

/// What a full segment holds, written once when the segment is full.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// The format of this summary.
    pub version: u32,
    /// The size of the data file it describes, in bytes.
    pub bytes: u64,
    /// Events in the segment.
    pub events: u64,
    /// The earliest and latest event time, in seconds since the epoch; absent when no event
    /// had a readable time.
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// Whether some event had no readable time, so a time range cannot exclude the segment.
    pub has_untimed: bool,
    /// Every package name, category and manager of its events.
    pub packages: BTreeSet<String>,
    pub categories: BTreeSet<String>,
    pub managers: BTreeSet<String>,
}

impl SegmentSummary {
    fn new() -> Self {
        Self {
            version: SUMMARY_VERSION,
            ..Self::default()
        }
    }

    /// Takes one event line into the summary.
    fn add(&mut self, line: &str) {
        self.bytes += line.len() as u64 + 1;
        self.events += 1;
        let Ok(fields) = serde_json::from_str::<SummaryFields<'_>>(line) else {
            self.has_untimed = true;
            return;
        };
        match DateTime::parse_from_rfc3339(&fields.parsed_data.timestamp) {
            Ok(time) => {
                let seconds = time.timestamp();
                self.first = Some(self.first.map_or(seconds, |f| f.min(seconds)));
                self.last = Some(self.last.map_or(seconds, |l| l.max(seconds)));
            }
            Err(_) => self.has_untimed = true,
        }
        insert_new(&mut self.packages, &fields.parsed_data.package);
        insert_new(&mut self.categories, &fields.category);
        insert_new(&mut self.managers, &fields.manager);
    }

    /// Returns whether some event of the segment may lie between `from` and `to` (seconds
    /// since the epoch, inclusive).
    #[must_use]
    pub fn may_overlap(&self, from: Option<i64>, to: Option<i64>) -> bool {
        if self.has_untimed {
            return true;
        }
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return false;
        };
        from.is_none_or(|from| last >= from) && to.is_none_or(|to| first <= to)
    }
}

fn insert_new(set: &mut BTreeSet<String>, value: &str) {
    if !set.contains(value) {
        set.insert(value.to_owned());
    }
}

/// The fields of an event line a summary needs; everything else is skipped unread.
#[derive(Deserialize)]
struct SummaryFields<'a> {
    #[serde(borrow, default)]
    category: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    manager: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    parsed_data: SummaryData<'a>,
}

#[derive(Deserialize)]
struct SummaryData<'a> {
    #[serde(borrow, default)]
    package: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    timestamp: std::borrow::Cow<'a, str>,
}

/// The name of the coverage file in the store directory.
const COVERAGE_FILE: &str = "coverage.json";
/// Present while a sensor writes the store; found at start, it tells of a run that did not stop.
const RUNNING_FILE: &str = "running";

/// Since when the store holds the event of every line of the followed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Coverage {
    version: u32,
    since: DateTime<FixedOffset>,
}

/// Returns since when the store in `dir` holds every event of the followed log, if it knows.
#[must_use]
pub fn read_coverage(dir: &Path) -> Option<DateTime<FixedOffset>> {
    let bytes = fs::read(dir.join(COVERAGE_FILE)).ok()?;
    let coverage: Coverage = serde_json::from_slice(&bytes).ok()?;
    (coverage.version == SUMMARY_VERSION).then_some(coverage.since)
}

/// Records that the store in `dir` holds every event of the followed log since `since`.
///
/// # Errors
/// The file cannot be written.
pub fn write_coverage(dir: &Path, since: DateTime<FixedOffset>) -> io::Result<()> {
    let coverage = Coverage {
        version: SUMMARY_VERSION,
        since,
    };
    let mut bytes = serde_json::to_vec(&coverage).map_err(io::Error::other)?;
    bytes.push(b'\n');
    crate::source::checkpoint::write_atomically(&dir.join(COVERAGE_FILE), &bytes)
}

/// Forgets what the store in `dir` covers: events may be missing from it from now on.
///
/// # Errors
/// The file exists and cannot be removed.
pub fn clear_coverage(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(COVERAGE_FILE)) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Moves the coverage of the store in `dir` to no earlier than `since`.
///
/// # Errors
/// The file cannot be written.
pub fn narrow_coverage(dir: &Path, since: DateTime<FixedOffset>) -> io::Result<()> {
    match read_coverage(dir) {
        Some(known) if known >= since => Ok(()),
        _ => write_coverage(dir, since),
    }
}

/// Keeps the coverage record true while the sensor runs: a store that falls behind (a
/// backlog in memory that a crash would lose, or events dropped) covers only what comes after.
#[derive(Debug)]
pub struct CoverageWatch {
    dir: PathBuf,
    name: String,
    lost: u64,
}

impl CoverageWatch {
    /// Starts watching the store the configuration names, or forgets what a disabled store
    /// covers. `continuous` says whether the tailer resumed exactly where the last run
    /// stopped; otherwise the store covers the log from now on, or from the first line of the
    /// log on a first start that reads it from its beginning.
    #[must_use]
    pub fn for_config(config: &crate::config::Config, continuous: bool) -> Option<Self> {
        let dir = crate::pipeline::store_dir(&config.state_dir);
        if !config.sinks.store.enabled {
            if let Err(err) = clear_coverage(&dir) {
                tracing::warn!(dir = %dir.display(), error = %err, "failed to clear what the event store covers");
            }
            return None;
        }
        let from_first_line = (!continuous && config.from_start)
            .then(|| crate::replay::first_line_time(&config.dpkg.log))
            .flatten()
            .map(crate::event::local_rfc3339)
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok());
        let from = from_first_line.unwrap_or_else(|| chrono::Local::now().fixed_offset());
        let name = StoreSink::new(dir.clone(), StoreOptions::default())
            .name()
            .to_owned();
        Some(Self::begin(&dir, &name, continuous, from))
    }

    /// Starts watching the store in `dir` (the sink named `name`). When the sensor does not
    /// resume where it stopped (`continuous` is false) or nothing was recorded yet, the store
    /// covers the log from `from` on.
    pub fn begin(dir: &Path, name: &str, continuous: bool, from: DateTime<FixedOffset>) -> Self {
        let known = read_coverage(dir).is_some();
        // Left behind by a run that did not stop: its last second may not have reached the disk.
        let marker = dir.join(RUNNING_FILE);
        let clean = !marker.exists();
        if let Err(err) = writer::create_store_dir(dir).and_then(|()| fs::write(&marker, b"")) {
            tracing::warn!(dir = %dir.display(), error = %err, "failed to mark the event store in use");
        }
        if !(continuous && known && clean) {
            if let Err(err) = writer::create_store_dir(dir).and_then(|()| write_coverage(dir, from))
            {
                tracing::warn!(dir = %dir.display(), error = %err, "failed to record what the event store covers");
            }
        }
        Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            lost: 0,
        }
    }

    /// Takes the final counters at stop; a store that lost nothing is then known complete.
    pub fn finish(&mut self, stats: &[crate::sink::dispatch::SinkStats]) {
        self.observe(stats);
        if let Err(err) = fs::remove_file(self.dir.join(RUNNING_FILE)) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "failed to mark the event store closed");
        }
    }

    /// Records that an event of the log was not stored (a rule suppressed it): the store covers
    /// only what comes after.
    pub fn interrupt(&mut self) {
        let now = chrono::Local::now().fixed_offset();
        if let Err(err) = narrow_coverage(&self.dir, now) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "failed to record what the event store covers");
        }
    }

    /// Looks at the dispatcher's counters after a delivery.
    pub fn observe(&mut self, stats: &[crate::sink::dispatch::SinkStats]) {
        let Some(store) = stats.iter().find(|s| s.name == self.name) else {
            return;
        };
        if store.backlog == 0 && store.lost == self.lost {
            return;
        }
        self.lost = store.lost;
        let now = chrono::Local::now().fixed_offset();
        if let Err(err) = narrow_coverage(&self.dir, now) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "failed to record what the event store covers");
        }
    }
}

/// One segment found in the store directory.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its number: segments are started in this order.
    pub number: u64,
    /// The data file.
    pub path: PathBuf,
    /// The data file's size when listed.
    pub bytes: u64,
    /// Its summary, when it has one that fits the data file.
    pub summary: Option<SegmentSummary>,
}

/// Returns the data file of segment `number` in `dir`.
fn data_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{number:020}{DATA_SUFFIX}"))
}

/// Returns the summary file of segment `number` in `dir`.
fn summary_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{number:020}{SUMMARY_SUFFIX}"))
}

/// Lists the segments in `dir`, oldest first, with the summaries that still fit them.
///
/// A directory that does not exist holds no segment.
///
/// # Errors
/// The directory cannot be listed.
pub fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut segments = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            .and_then(|n| n.strip_suffix(DATA_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        // Removed by retention between the listing and now: it is simply gone.
        let Ok(meta) = entry.metadata() else { continue };
        segments.push(Segment {
            number,
            path: entry.path(),
            bytes: meta.len(),
            summary: None,
        });
    }
    segments.sort_by_key(|s| s.number);
    for segment in &mut segments {
        segment.summary = read_summary(dir, segment.number).filter(|s| s.bytes == segment.bytes);
    }
    Ok(segments)
}

/// Reads the summary of segment `number`, or `None` when it is missing or unreadable.
fn read_summary(dir: &Path, number: u64) -> Option<SegmentSummary> {
    let text = fs::read(summary_path(dir, number)).ok()?;
    let summary: SegmentSummary = serde_json::from_slice(&text).ok()?;
    (summary.version == SUMMARY_VERSION).then_some(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_holds_only_across_clean_continuous_runs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let time = |text: &str| DateTime::parse_from_rfc3339(text).expect("valid time");
        let first = time("2026-01-01T00:00:00Z");
        let later = time("2026-02-01T00:00:00Z");

        let mut watch = CoverageWatch::begin(dir.path(), "store", false, first);
        watch.finish(&[]);
        assert_eq!(read_coverage(dir.path()), Some(first));

        // Resumed where the last run stopped: the coverage goes on.
        let watch = CoverageWatch::begin(dir.path(), "store", true, later);
        assert_eq!(read_coverage(dir.path()), Some(first));
        drop(watch);

        // The last run never stopped: its last events may be missing.
        let mut watch = CoverageWatch::begin(dir.path(), "store", true, later);
        assert_eq!(read_coverage(dir.path()), Some(later));

        // A store that falls behind covers only what comes after.
        let behind = crate::sink::dispatch::SinkStats {
            name: "store".into(),
            backlog: 3,
            ..Default::default()
        };
        watch.observe(&[behind]);
        assert!(read_coverage(dir.path()).is_some_and(|since| since > later));
        Ok(())
    }

    #[test]
    fn summary_collects_times_names_and_skips_unreadable_lines() {
        let mut summary = SegmentSummary::new();
        summary.add(r#"{"category":"package_install","manager":"dpkg","parsed_data":{"package":"vim","timestamp":"2026-05-03T14:32:11+02:00"}}"#);
        summary.add(r#"{"category":"package_remove","manager":"dpkg","parsed_data":{"package":"nano","timestamp":"2026-05-01T00:00:00+00:00"}}"#);
        assert_eq!(summary.events, 2);
        assert_eq!(summary.first, Some(1_777_593_600));
        assert_eq!(summary.last, Some(1_777_811_531));
        assert!(!summary.has_untimed);
        assert!(summary.may_overlap(Some(1_777_811_531), None));
        assert!(!summary.may_overlap(Some(1_777_811_532), None));
        assert!(!summary.may_overlap(None, Some(1_777_593_599)));
        assert_eq!(summary.packages.iter().collect::<Vec<_>>(), ["nano", "vim"]);

        summary.add("not json");
        assert!(summary.has_untimed);
        assert!(summary.may_overlap(Some(i64::MAX), None));
    }
}
