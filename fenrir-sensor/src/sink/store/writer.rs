//! Appends events to the store's segments, rotates them by size and keeps the total bounded.
//!
//! In: events. Out: one JSON line per event appended to the segment being written; when it
//! reaches the segment size, its summary is written and a new segment begins; when all
//! segments together exceed the size limit, the oldest are deleted. State: the open segment,
//! its summary so far, and whether it holds lines not yet made durable.
//!
//! Durability: every event reaches the kernel in one `write` before the next sink sees it, so
//! a crash of the sensor loses nothing. [`StoreSink::sync`] (`fdatasync`) runs about once a
//! second, when a segment is full and when the sink is dropped at stop, so a power loss can
//! take the last second of events from the store; dpkg's log still has their lines, and the
//! store's coverage record (see the module above) makes `query` read the log for that time. A
//! line cut by a power loss is removed when the store is next opened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use chrono::DateTime;
use tracing::{debug, info, warn};

use super::{data_path, list_segments, summary_path, SegmentSummary};
use crate::event::Event;
use crate::sink::{Sink, SinkError};
use crate::source::checkpoint::write_atomically;

/// Segments hold the commands people typed: readable by root and the store's group only.
const SEGMENT_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

/// Creates the store directory, closed to other users; an existing one keeps its mode.
pub(super) fn create_store_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Size and retention of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
    /// The oldest segments are deleted while all together exceed this size.
    pub max_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 8 * 1024 * 1024,
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The segment being written.
#[derive(Debug)]
struct Active {
    number: u64,
    file: File,
    summary: SegmentSummary,
    /// Whether lines were written since the last `fdatasync`.
    unsynced: bool,
}

/// The store as a sink.
#[derive(Debug)]
pub struct StoreSink {
    dir: PathBuf,
    name: String,
    options: StoreOptions,
    /// Opened on first use and after a failure, so a store that cannot be written at start
    /// only delays delivery to it.
    active: Option<Active>,
}

impl StoreSink {
    /// Creates the sink for the store in `dir`; nothing is touched until the first event.
    #[must_use]
    pub fn new(dir: PathBuf, options: StoreOptions) -> Self {
        Self {
            name: format!("store:{}", dir.display()),
            dir,
            options,
            active: None,
        }
    }

    fn wrap(&self, source: io::Error) -> SinkError {
        SinkError::Write {
            target: self.dir.display().to_string(),
            source,
        }
    }

    /// Opens the newest segment that has no summary yet, or starts a new one.
    fn open_active(&self) -> io::Result<Active> {
        create_store_dir(&self.dir)?;
        let segments = list_segments(&self.dir)?;
        let newest = segments.last();
        if let Some(segment) = newest.filter(|s| s.summary.is_none()) {
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&segment.path)?;
            let summary = repair_and_summarize(&mut file, &segment.path)?;
            debug!(path = %segment.path.display(), events = summary.events, "continuing store segment");
            return Ok(Active {
                number: segment.number,
                file,
                summary,
                unsynced: false,
            });
        }
        let number = newest.map_or(1, |s| s.number + 1);
        self.start_segment(number)
    }

    fn start_segment(&self, number: u64) -> io::Result<Active> {
        let path = data_path(&self.dir, number);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(SEGMENT_MODE)
            .open(&path)?;
        // The new name must survive a power loss before events in it count as stored.
        sync_dir(&self.dir)?;
        Ok(Active {
            number,
            file,
            summary: SegmentSummary::new(),
            unsynced: false,
        })
    }

    /// Closes the full segment: its data is made durable, then its summary is written.
    fn seal(&mut self) -> io::Result<()> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        active.file.sync_data()?;
        let mut bytes = serde_json::to_vec(&active.summary).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_atomically(&summary_path(&self.dir, active.number), &bytes)?;
        debug!(
            segment = active.number,
            events = active.summary.events,
            "store segment full"
        );
        self.enforce_retention()?;
        self.active = Some(self.start_segment(active.number + 1)?);
        Ok(())
    }

    /// Deletes the oldest full segments while the store is larger than allowed.
    fn enforce_retention(&self) -> io::Result<()> {
        let segments = list_segments(&self.dir)?;
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        for segment in &segments {
            if total <= self.options.max_bytes {
                break;
            }
            // The segment being written is never deleted; it is the newest.
            if segments
                .last()
                .is_some_and(|last| last.number == segment.number)
            {
                break;
            }
            // Data first: a summary without data is ignored, data without summary is read.
            fs::remove_file(&segment.path)?;
            let _ = fs::remove_file(summary_path(&self.dir, segment.number));
            total -= segment.bytes;
            // The deleted events are no longer here: the store covers only what came after.
            let after = segment
                .summary
                .as_ref()
                .and_then(|s| s.last)
                .and_then(|last| DateTime::from_timestamp(last + 1, 0).map(|t| t.fixed_offset()));
            match after {
                Some(after) => super::narrow_coverage(&self.dir, after)?,
                None => super::clear_coverage(&self.dir)?,
            }
            info!(
                segment = segment.number,
                events = segment.summary.as_ref().map(|s| s.events),
                "store retention deleted the oldest segment"
            );
        }
        Ok(())
    }
}

impl Sink for StoreSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let mut line = event.to_json_line();
        if self.active.is_none() {
            self.active = Some(self.open_active().map_err(|e| self.wrap(e))?);
        }
        let Some(active) = self.active.as_mut() else {
            unreachable!("the segment was opened just above");
        };

        let before = active.summary.bytes;
        line.push('\n');
        if let Err(source) = active.file.write_all(line.as_bytes()) {
            // A short write (disk full) would glue the next event to half of this one.
            let _ = active.file.set_len(before);
            self.active = None;
            return Err(self.wrap(source));
        }
        line.pop();
        active.summary.add(&line);
        active.unsynced = true;

        if active.summary.bytes >= self.options.segment_bytes {
            // The event is stored; a failure to rotate only leaves this segment open longer.
            if let Err(err) = self.seal() {
                warn!(dir = %self.dir.display(), error = %err, "failed to rotate the event store");
                self.active = None;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SinkError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if !active.unsynced {
            return Ok(());
        }
        if let Err(source) = active.file.sync_data() {
            self.active = None;
            return Err(self.wrap(source));
        }
        active.unsynced = false;
        Ok(())
    }
}

impl Drop for StoreSink {
    fn drop(&mut self) {
        if let Err(err) = self.sync() {
            warn!(error = %err, "failed to make the last stored events durable");
        }
    }
}

/// Cuts a segment back to its last complete line — a power loss can leave half a line — and
/// summarizes what remains.
fn repair_and_summarize(file: &mut File, path: &Path) -> io::Result<SegmentSummary> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    if complete < bytes.len() {
        warn!(
            path = %path.display(),
            bytes = bytes.len() - complete,
            "removing a partial line from the event store"
        );
        file.set_len(complete as u64)?;
        file.sync_data()?;
        bytes.truncate(complete);
    }
    let mut summary = SegmentSummary::new();
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        summary.add(&String::from_utf8_lossy(line));
    }
    // Blank lines count toward the size the summary must match.
    summary.bytes = bytes.len() as u64;
    Ok(summary)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::event::Category;
    use crate::parse::PackageChange;

    fn event(package: &str, day: u32) -> Event {
        let change = PackageChange {
            category: Category::PackageInstall,
            package: package.into(),
            arch: Some("amd64".into()),
            old_version: None,
            new_version: Some("1.0-1".into()),
            timestamp: NaiveDate::from_ymd_opt(2026, 1, day)
                .and_then(|d| d.and_hms_opt(12, 0, 0))
                .expect("valid time"),
            raw_line: format!("2026-01-{day:02} 12:00:00 install {package}:amd64 <none> 1.0-1"),
            last_state: None,
        };
        Event::from_change(&change, "h", "dpkg")
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn segments_rotate_by_size_with_summaries_and_stay_bounded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let one = event("a", 1).to_json_line().len() as u64 + 1;
        let options = StoreOptions {
            segment_bytes: one * 3,
            max_bytes: one * 7,
        };
        let mut sink = StoreSink::new(dir.path().to_path_buf(), options);
        for day in 1..=10 {
            sink.send(&event(&format!("p{day}"), day))?;
        }
        sink.sync()?;

        let segments = list_segments(dir.path())?;
        // 10 events in segments of 3: 3 full ones and one with the last; the oldest full one
        // was deleted when the total passed 7 events.
        let numbers: Vec<u64> = segments.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [2, 3, 4]);
        let summary = segments[0]
            .summary
            .as_ref()
            .expect("full segment has a summary");
        assert_eq!(summary.events, 3);
        assert_eq!(
            summary.packages.iter().collect::<Vec<_>>(),
            ["p4", "p5", "p6"]
        );
        assert!(
            segments[2].summary.is_none(),
            "the segment being written has none"
        );
        assert_eq!(lines(&segments[2].path).len(), 1);
        Ok(())
    }

    #[test]
    fn the_store_is_closed_to_other_users() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir()?;
        let store = dir.path().join("events");
        let mut sink = StoreSink::new(store.clone(), StoreOptions::default());
        sink.send(&event("a", 1))?;
        let mode = |path: &Path| -> anyhow::Result<u32> {
            Ok(fs::metadata(path)?.permissions().mode() & 0o777)
        };
        assert_eq!(mode(&store)? & 0o007, 0, "no access for others");
        assert_eq!(mode(&data_path(&store, 1))? & 0o007, 0);
        Ok(())
    }

    #[test]
    fn reopening_cuts_a_torn_line_and_continues_the_segment() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut sink = StoreSink::new(dir.path().to_path_buf(), StoreOptions::default());
        sink.send(&event("a", 1))?;
        drop(sink);

        let path = data_path(dir.path(), 1);
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(br#"{"source":"package","categ"#)?;
        drop(file);

        let mut sink = StoreSink::new(dir.path().to_path_buf(), StoreOptions::default());
        sink.send(&event("b", 2))?;
        let stored = lines(&path);
        assert_eq!(stored.len(), 2);
        for line in &stored {
            serde_json::from_str::<Event>(line)?;
        }
        Ok(())
    }

    #[test]
    fn a_full_disk_fails_the_send_and_leaves_whole_lines() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut sink = StoreSink::new(dir.path().join("store"), StoreOptions::default());
        sink.send(&event("a", 1))?;
        // /dev/full fails every write with ENOSPC, as a full disk does.
        sink.active = Some(Active {
            number: 99,
            file: OpenOptions::new().append(true).open("/dev/full")?,
            summary: SegmentSummary::new(),
            unsynced: false,
        });
        let err = sink
            .send(&event("b", 2))
            .expect_err("writes to a full disk fail");
        assert!(matches!(err, SinkError::Write { .. }));

        // Reopened after the failure, the store goes on where it was.
        sink.send(&event("c", 3))?;
        assert_eq!(lines(&data_path(&dir.path().join("store"), 1)).len(), 2);
        Ok(())
    }
}
