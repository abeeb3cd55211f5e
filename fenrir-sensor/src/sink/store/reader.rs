//! Reads the store's segments for a question, skipping every segment its summary rules out.
//!
//! In: the store directory and a test on summaries. Out: each complete line of every segment
//! that may hold an answer, oldest segment first, with counters of what was read and
//! skipped. No state. Runs beside a sensor that is writing: a last line without its newline
//! is being written and is left for the next read, and a segment deleted by retention while
//! the question runs is skipped. [`LineReader`] reads one line again by the place `scan`
//! gave it, so a question can keep places instead of lines until it knows which it shows.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::{data_path, list_segments, SegmentSummary};

/// Counters of one read of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Segments read, and segments their summary ruled out.
    pub segments_read: u64,
    pub segments_skipped: u64,
    /// Complete lines handed over.
    pub lines: u64,
}

/// Calls `each` with every complete line of every segment `wanted` does not rule out; with a
/// `needle`, only with the lines that contain it.
///
/// `wanted` gets the summary of a full segment; the segment being written, or one whose
/// summary is missing or stale, is always read. `each` gets the segment number, the line's
/// byte offset in its segment and the line's bytes. The needle is searched in the whole
/// segment at once, which for a rare one costs a fraction of looking at every line.
///
/// # Errors
/// The store directory cannot be listed, or a segment cannot be read for a reason other than
/// having been deleted.
pub fn scan(
    dir: &Path,
    wanted: impl Fn(&SegmentSummary) -> bool,
    needle: Option<&memchr::memmem::Finder<'_>>,
    mut each: impl FnMut(u64, u64, &[u8]),
) -> io::Result<ScanStats> {
    let mut stats = ScanStats::default();
    for segment in list_segments(dir)? {
        if segment.summary.as_ref().is_some_and(|s| !wanted(s)) {
            stats.segments_skipped += 1;
            continue;
        }
        let bytes = match fs::read(&segment.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        stats.segments_read += 1;

        let mut yield_line = |start: usize, end: usize| {
            let line = &bytes[start..end];
            if !line.is_empty() {
                each(segment.number, start as u64, line);
                stats.lines += 1;
            }
        };
        if let Some(needle) = needle {
            // Lines before `next` were handed over already.
            let mut next = 0;
            for found in needle.find_iter(&bytes) {
                if found < next {
                    continue;
                }
                let start = memchr::memrchr(b'\n', &bytes[..found]).map_or(0, |n| n + 1);
                // A last line without its newline is still being written.
                let Some(end) = memchr::memchr(b'\n', &bytes[found..]).map(|n| found + n) else {
                    break;
                };
                yield_line(start, end);
                next = end + 1;
            }
        } else {
            let mut start = 0;
            for newline in memchr::memchr_iter(b'\n', &bytes) {
                yield_line(start, newline);
                start = newline + 1;
            }
        }
    }
    Ok(stats)
}

/// Where `scan` found a line: its segment, its byte offset there and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinePlace {
    pub segment: u64,
    pub offset: u64,
    pub len: usize,
}

/// Reads lines again by their [`LinePlace`], keeping the last segment it read open: lines
/// asked for in time order mostly lie in the same segment.
#[derive(Debug)]
pub struct LineReader {
    dir: PathBuf,
    open: Option<(u64, File)>,
}

impl LineReader {
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            open: None,
        }
    }

    /// Returns the line at `place`.
    ///
    /// # Errors
    /// Its segment is gone (retention deleted it since it was scanned) or cannot be read.
    pub fn read(&mut self, place: LinePlace) -> io::Result<Vec<u8>> {
        let file = match &mut self.open {
            Some((segment, file)) if *segment == place.segment => file,
            open => {
                let file = File::open(data_path(&self.dir, place.segment))?;
                &mut open.insert((place.segment, file)).1
            }
        };
        let mut line = vec![0; place.len];
        file.read_exact_at(&mut line, place.offset)?;
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::sink::store::{data_path, StoreOptions, StoreSink};
    use crate::sink::Sink;

    #[test]
    fn summaries_rule_out_segments_and_a_partial_last_line_waits() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let event = |package: &str, time: &str| -> anyhow::Result<crate::event::Event> {
            Ok(serde_json::from_value(serde_json::json!({
                "source": "package", "category": "package_install", "severity": "INFO",
                "ip": null, "description": "", "raw_line": "", "host": "h", "manager": "dpkg",
                "actor": null, "rules": [],
                "parsed_data": {"type": "package_install", "package": package, "arch": null,
                    "old_version": null, "new_version": null, "timestamp": time},
            }))?)
        };
        let events = [
            event("old", "2026-01-01T00:00:00+00:00")?,
            event("old", "2026-01-02T00:00:00+00:00")?,
            event("new", "2026-06-01T00:00:00+00:00")?,
        ];
        // Two events per segment: the first segment is full and summarized.
        let size = events[0].to_json_line().len() as u64 + 1;
        let mut sink = StoreSink::new(
            dir.path().to_path_buf(),
            StoreOptions {
                segment_bytes: 2 * size,
                max_bytes: u64::MAX,
            },
        );
        for event in &events {
            sink.send(event)?;
        }
        drop(sink);
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(data_path(dir.path(), 2))?;
        file.write_all(b"{\"being\":\"written")?;

        let june = 1_780_272_000;
        let mut seen = Vec::new();
        let stats = scan(
            dir.path(),
            |summary| summary.may_overlap(Some(june), None),
            None,
            |segment, offset, line| seen.push((segment, offset, line.len())),
        )?;
        assert_eq!(stats.segments_skipped, 1);
        assert_eq!(stats.segments_read, 1);
        assert_eq!(seen.len(), 1, "only the June event; the partial line waits");
        assert_eq!(seen[0].0, 2);

        let all = scan(dir.path(), |_| true, None, |_, _, _| {})?;
        assert_eq!(all.lines, 3);
        assert_eq!(
            scan(&dir.path().join("absent"), |_| true, None, |_, _, _| {})?,
            ScanStats::default()
        );

        // With a needle, only the lines holding it, each once, and never the partial one.
        let needle = memchr::memmem::Finder::new("\"old\"");
        let mut old = Vec::new();
        scan(
            dir.path(),
            |_| true,
            Some(&needle),
            |segment, offset, _| old.push((segment, offset)),
        )?;
        let size = events[0].to_json_line().len() as u64 + 1;
        assert_eq!(old, [(1, 0), (1, size)]);
        let written = memchr::memmem::Finder::new("being");
        let mut partial = 0;
        scan(dir.path(), |_| true, Some(&written), |_, _, _| partial += 1)?;
        assert_eq!(partial, 0);

        // Every line scanned reads back by its place, across segments and out of order.
        let mut lines = Vec::new();
        scan(
            dir.path(),
            |_| true,
            None,
            |segment, offset, line| {
                let place = LinePlace {
                    segment,
                    offset,
                    len: line.len(),
                };
                lines.push((place, line.to_vec()));
            },
        )?;
        let mut reader = LineReader::new(dir.path());
        for (place, line) in lines.iter().rev().chain(&lines) {
            assert_eq!(&reader.read(*place)?, line);
        }
        // A segment retention deleted since is an error, not some other line.
        fs::remove_file(data_path(dir.path(), 1))?;
        let mut reader = LineReader::new(dir.path());
        let gone = reader.read(lines[0].0).expect_err("the segment is gone");
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
        Ok(())
    }
}
