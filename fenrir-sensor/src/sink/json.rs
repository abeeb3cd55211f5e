//! JSON lines on stdout or in a file.
//!
//! In: events. Out: one JSON object per line — Fenrir's schema or ECS, see [`EventFormat`] —
//! each line handed to the kernel in a single `write` as soon as the event exists, so a reader
//! tailing the output sees whole events within the same millisecond. No buffering.
//!
//! State, for a file: the open handle and the identity of the file it refers to, so a file
//! renamed away by logrotate is followed by a new one at the path; and the ids of the events
//! the file already held when the sensor started, so an event read again after a crash (the
//! checkpoint had not caught up with the output yet) is not written twice.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use tracing::{debug, info};

use super::format::EventFormat;
use super::{Sink, SinkError};
use crate::event::Event;

/// How much of an existing output is read back for the ids of the events it holds: more than
/// the events of the lines between two checkpoints, which are what a crash can repeat.
const RESUME_TAIL_BYTES: u64 = 8 * 1024 * 1024;

/// Where JSON lines go.
#[derive(Debug)]
enum Output {
    Stdout,
    File {
        path: PathBuf,
        file: Option<OpenFile>,
        /// Ids of the events the file held at start; `None` until it has been looked at.
        held: Option<HashSet<String>>,
    },
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
}

/// Writes events as JSON lines.
#[derive(Debug)]
pub struct JsonSink {
    name: String,
    output: Output,
    format: EventFormat,
}

impl JsonSink {
    /// Creates a sink writing to stdout when `target` is `-`, else appending to that file.
    ///
    /// The file is opened on first use and reopened after a failure, so a missing directory or
    /// a full disk at start only delays delivery.
    #[must_use]
    pub fn new(target: &str) -> Self {
        if target == "-" {
            Self {
                name: "json:stdout".to_owned(),
                output: Output::Stdout,
                format: EventFormat::Fenrir,
            }
        } else {
            Self {
                name: format!("json:{target}"),
                output: Output::File {
                    path: PathBuf::from(target),
                    file: None,
                    held: None,
                },
                format: EventFormat::Fenrir,
            }
        }
    }

    /// Writes events in `format` instead of Fenrir's own schema.
    #[must_use]
    pub fn with_format(mut self, format: EventFormat) -> Self {
        self.format = format;
        self
    }
}

impl Sink for JsonSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        match &mut self.output {
            // TODO: stdout cannot be read back, so after a crash it may repeat the events of
            // the lines since the last checkpoint (at most one batch); files do not.
            Output::Stdout => {
                let mut line = self.format.encode(event);
                line.push('\n');
                let mut stdout = io::stdout().lock();
                stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(|source| SinkError::Write {
                        target: "stdout".to_owned(),
                        source,
                    })
            }
            Output::File { path, file, held } => {
                let wrap = |source| SinkError::Write {
                    target: path.display().to_string(),
                    source,
                };
                let held = held.get_or_insert_with(|| held_ids(path));
                if let Some(id) = &event.id {
                    if held.remove(id) {
                        debug!(path = %path.display(), id, "event already in the output");
                        return Ok(());
                    }
                    // Repeats come first, in order; after the first new event there are none.
                    if !held.is_empty() {
                        *held = HashSet::new();
                    }
                }

                if file.as_ref().is_some_and(|open| !open.is_at(path)) {
                    info!(path = %path.display(), "output moved away; writing a new file");
                    *file = None;
                }
                if file.is_none() {
                    *file = Some(OpenFile::open(path).map_err(wrap)?);
                }
                let Some(open) = file.as_mut() else {
                    unreachable!("the file was opened just above");
                };
                let mut line = self.format.encode(event);
                line.push('\n');
                let before = open.file.metadata().map_err(wrap)?.len();
                if let Err(source) = open.file.write_all(line.as_bytes()) {
                    // A short write (disk full) would leave half an object that every later
                    // line is glued to; cut the file back to the last whole line.
                    let _ = open.file.set_len(before);
                    *file = None;
                    return Err(wrap(source));
                }
                Ok(())
            }
        }
    }
}

impl OpenFile {
    fn open(path: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;

        // A line cut short (a crash in the middle of a write) must not swallow the next one.
        if meta.is_file() && meta.len() > 0 && last_byte(path)? != Some(b'\n') {
            file.write_all(b"\n")?;
        }
        Ok(Self {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether the path still names this file: logrotate renames it away.
    fn is_at(&self, path: &Path) -> bool {
        fs::metadata(path).is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino)
    }
}

fn last_byte(path: &Path) -> io::Result<Option<u8>> {
    let mut file = File::open(path)?;
    if file.seek(SeekFrom::End(0))? == 0 {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut byte = [0_u8; 1];
    file.read_exact(&mut byte)?;
    Ok(Some(byte[0]))
}

/// Reads the ids of the events in the last part of an existing output.
///
/// An output that cannot be read yet (it does not exist) holds nothing; every line that is not
/// JSON with an id is passed over.
fn held_ids(path: &Path) -> HashSet<String> {
    let mut ids = HashSet::new();
    // Opening a FIFO or a device to read it back would block or consume what others wait for.
    if !fs::metadata(path).is_ok_and(|meta| meta.is_file()) {
        return ids;
    }
    let Ok(mut file) = File::open(path) else {
        return ids;
    };
    let Ok(len) = file.seek(SeekFrom::End(0)) else {
        return ids;
    };
    let start = len.saturating_sub(RESUME_TAIL_BYTES);
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut tail).is_err() {
        return ids;
    }

    // Starting inside a line, the first piece is not a whole object.
    let whole = if start > 0 {
        memchr::memchr(b'\n', &tail).map_or(&tail[..0], |newline| &tail[newline + 1..])
    } else {
        &tail[..]
    };
    for line in whole.split(|&b| b == b'\n') {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) {
            if let Some(id) = EventFormat::id_of(&value) {
                ids.insert(id.to_owned());
            }
        }
    }
    if !ids.is_empty() {
        debug!(path = %path.display(), events = ids.len(), "ids of the events already written");
    }
    ids
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::event::Category;
    use crate::parse::PackageChange;

    fn sample() -> Event {
        let change = PackageChange {
            category: Category::PackageInstall,
            package: "vim".into(),
            arch: Some("amd64".into()),
            old_version: None,
            new_version: Some("2:9.0.1378-2".into()),
            timestamp: NaiveDate::from_ymd_opt(2026, 5, 3)
                .and_then(|d| d.and_hms_opt(14, 32, 11))
                .expect("valid time"),
            raw_line: "2026-05-03 14:32:11 install vim:amd64 <none> 2:9.0.1378-2".into(),
            last_state: None,
            logged_run: None,
        };
        Event::from_change(&change, "web-1", "dpkg")
    }

    #[test]
    fn file_sink_appends_one_object_per_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.jsonl");
        let mut sink = JsonSink::new(&path.to_string_lossy());
        sink.send(&sample())?;
        sink.send(&sample())?;

        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let parsed: Event = serde_json::from_str(lines[0])?;
        assert_eq!(parsed, sample());
        Ok(())
    }

    fn with_id(id: &str) -> Event {
        let mut event = sample();
        event.id = Some(id.to_owned());
        event
    }

    fn ids_in(path: &Path) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for line in std::fs::read_to_string(path)?.lines() {
            let value: serde_json::Value = serde_json::from_str(line)?;
            ids.push(EventFormat::id_of(&value).unwrap_or("-").to_owned());
        }
        Ok(ids)
    }

    #[test]
    fn events_already_in_the_file_at_start_are_not_written_again() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.jsonl");
        let target = path.to_string_lossy().into_owned();
        let mut before_crash = JsonSink::new(&target);
        for id in ["a", "b", "c"] {
            before_crash.send(&with_id(id))?;
        }

        // After a crash the checkpoint still points before b: b and c come again, then d.
        let mut restarted = JsonSink::new(&target);
        for id in ["b", "c", "d"] {
            restarted.send(&with_id(id))?;
        }
        assert_eq!(ids_in(&path)?, ["a", "b", "c", "d"]);
        Ok(())
    }

    #[test]
    fn a_renamed_output_is_followed_by_a_new_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.jsonl");
        let mut sink = JsonSink::new(&path.to_string_lossy());
        sink.send(&with_id("old"))?;
        std::fs::rename(&path, dir.path().join("events.jsonl.1"))?;
        sink.send(&with_id("new"))?;

        assert_eq!(ids_in(&dir.path().join("events.jsonl.1"))?, ["old"]);
        assert_eq!(ids_in(&path)?, ["new"]);
        Ok(())
    }

    #[test]
    fn a_line_cut_short_is_ended_before_the_next() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"id\":\"half")?;
        let mut sink = JsonSink::new(&path.to_string_lossy());
        sink.send(&with_id("whole"))?;
        let text = std::fs::read_to_string(&path)?;
        let last: serde_json::Value =
            serde_json::from_str(text.lines().last().unwrap_or_default())?;
        assert_eq!(EventFormat::id_of(&last), Some("whole"));
        Ok(())
    }

    #[test]
    fn the_ecs_format_writes_ecs_documents() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("events.jsonl");
        let mut sink = JsonSink::new(&path.to_string_lossy()).with_format(EventFormat::Ecs);
        sink.send(&sample())?;
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        assert_eq!(doc["event"]["category"], serde_json::json!(["package"]));
        assert_eq!(doc["package"]["name"], "vim");
        Ok(())
    }

    #[test]
    fn unwritable_target_fails_then_recovers() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("later").join("events.jsonl");
        let mut sink = JsonSink::new(&path.to_string_lossy());
        assert!(matches!(sink.send(&sample()), Err(SinkError::Write { .. })));

        std::fs::create_dir(dir.path().join("later"))?;
        sink.send(&sample())?;
        assert_eq!(std::fs::read_to_string(&path)?.lines().count(), 1);
        Ok(())
    }
}
