//! JSON lines on stdout or in a file.
//!
//! In: events. Out: one JSON object per line, each line handed to the kernel in a single
//! `write` as soon as the event exists, so a reader tailing the output sees whole events within
//! the same millisecond. No buffering, no state beyond the open handle.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use super::{Sink, SinkError};
use crate::event::Event;

/// Where JSON lines go.
#[derive(Debug)]
enum Output {
    Stdout,
    File { path: PathBuf, file: Option<File> },
}

/// Writes events as JSON lines.
#[derive(Debug)]
pub struct JsonSink {
    name: String,
    output: Output,
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
            }
        } else {
            Self {
                name: format!("json:{target}"),
                output: Output::File {
                    path: PathBuf::from(target),
                    file: None,
                },
            }
        }
    }
}

impl Sink for JsonSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let mut line = event.to_json_line();
        line.push('\n');

        match &mut self.output {
            Output::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.flush())
                    .map_err(|source| SinkError::Write {
                        target: "stdout".to_owned(),
                        source,
                    })
            }
            Output::File { path, file } => {
                let wrap = |source| SinkError::Write {
                    target: path.display().to_string(),
                    source,
                };
                if file.is_none() {
                    *file = Some(
                        OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&*path)
                            .map_err(wrap)?,
                    );
                }
                let Some(handle) = file.as_mut() else {
                    unreachable!("the file was opened just above");
                };
                let before = handle.metadata().map_err(wrap)?.len();
                if let Err(source) = handle.write_all(line.as_bytes()) {
                    // A short write (disk full) would leave half an object that every later
                    // line is glued to; cut the file back to the last whole line.
                    let _ = handle.set_len(before);
                    *file = None;
                    return Err(wrap(source));
                }
                Ok(())
            }
        }
    }
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
