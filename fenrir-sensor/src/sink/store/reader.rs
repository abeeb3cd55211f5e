//! Reads the store's segments for a question, skipping every segment its summary rules out.
//!
//! In: the store directory and a test on summaries. Out: each complete line of every segment
//! that may hold an answer, oldest segment first, with counters of what was read and
//! skipped. No state. Runs beside a sensor that is writing: a last line without its newline
//! is being written and is left for the next read, and a segment deleted by retention while
//! the question runs is skipped.

use std::fs;
use std::io;
use std::path::Path;

use super::{list_segments, SegmentSummary};

/// Counters of one read of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Segments read, and segments their summary ruled out.
    pub segments_read: u64,
    pub segments_skipped: u64,
    /// Complete lines handed over.
    pub lines: u64,
}

/// Calls `each` with every complete line of every segment `wanted` does not rule out.
///
/// `wanted` gets the summary of a full segment; the segment being written, or one whose
/// summary is missing or stale, is always read. `each` gets the segment number, the line's
/// index in its segment and the line's bytes.
///
/// # Errors
/// The store directory cannot be listed, or a segment cannot be read for a reason other than
/// having been deleted.
pub fn scan(
    dir: &Path,
    wanted: impl Fn(&SegmentSummary) -> bool,
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

        let mut start = 0;
        let mut index = 0;
        for newline in memchr::memchr_iter(b'\n', &bytes) {
            let line = &bytes[start..newline];
            start = newline + 1;
            if line.is_empty() {
                continue;
            }
            each(segment.number, index, line);
            index += 1;
            stats.lines += 1;
        }
    }
    Ok(stats)
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
            |segment, index, line| seen.push((segment, index, line.len())),
        )?;
        assert_eq!(stats.segments_skipped, 1);
        assert_eq!(stats.segments_read, 1);
        assert_eq!(seen.len(), 1, "only the June event; the partial line waits");
        assert_eq!(seen[0].0, 2);

        let all = scan(dir.path(), |_| true, |_, _, _| {})?;
        assert_eq!(all.lines, 3);
        assert_eq!(
            scan(&dir.path().join("absent"), |_| true, |_, _, _| {})?,
            ScanStats::default()
        );
        Ok(())
    }
}
