//! How an event is written as one JSON line: Fenrir's own schema or an ECS document.
//!
//! In: events, or JSON lines of events already written in Fenrir's schema. Out: one JSON
//! object per event in the chosen [`EventFormat`]. No state beyond a partial line.

use std::io::{self, Write};

use serde::Deserialize;

use super::ecs;
use crate::event::Event;

/// The shape of the JSON objects a sink writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    /// The event as README and fenrir-sensor(8) document it.
    #[default]
    Fenrir,
    /// An Elastic Common Schema document.
    Ecs,
}

impl EventFormat {
    /// Returns the event as one line of JSON without the newline.
    ///
    /// # Panics
    /// Never: both forms are trees of strings, numbers and JSON values.
    #[must_use]
    pub fn encode(self, event: &Event) -> String {
        match self {
            Self::Fenrir => event.to_json_line(),
            Self::Ecs => ecs::document(event).to_string(),
        }
    }

    /// Returns the event id a line written in this format carries, if any.
    #[must_use]
    pub fn id_of(line: &serde_json::Value) -> Option<&str> {
        line.get("id")
            .or_else(|| line.get("event").and_then(|event| event.get("id")))
            .and_then(serde_json::Value::as_str)
    }
}

/// Re-encodes the Fenrir JSON lines written to it as ECS documents for `inner`.
///
/// Lets a writer of Fenrir lines (the replay) produce ECS without knowing about formats; a
/// line that is not an event is passed on unchanged.
#[derive(Debug)]
pub struct EcsLines<W: Write> {
    inner: W,
    partial: Vec<u8>,
}

impl<W: Write> EcsLines<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            partial: Vec::new(),
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match serde_json::from_slice::<Event>(line) {
            Ok(event) => self
                .inner
                .write_all(EventFormat::Ecs.encode(&event).as_bytes())?,
            Err(_) => self.inner.write_all(line)?,
        }
        self.inner.write_all(b"\n")
    }
}

impl<W: Write> Write for EcsLines<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut rest = bytes;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                self.write_line(&rest[..newline])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..newline]);
                self.write_line(&line)?;
            }
            rest = &rest[newline + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.write_line(&line)?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::event::Category;
    use crate::parse::PackageChange;

    fn event() -> Event {
        let change = PackageChange {
            category: Category::PackagePurge,
            package: "nano".into(),
            arch: Some("amd64".into()),
            old_version: Some("7.2-1".into()),
            new_version: None,
            timestamp: NaiveDate::from_ymd_opt(2026, 1, 2)
                .and_then(|d| d.and_hms_opt(3, 4, 5))
                .expect("valid time"),
            raw_line: "2026-01-02 03:04:05 purge nano:amd64 7.2-1 <none>".into(),
            last_state: None,
            logged_run: None,
        };
        let mut event = Event::from_change(&change, "h", "dpkg");
        event.id = Some("0123abcd".into());
        event
    }

    #[test]
    fn lines_written_in_pieces_come_out_as_ecs_documents() -> anyhow::Result<()> {
        let line = format!("{}\n", event().to_json_line());
        let mut out = Vec::new();
        {
            let mut writer = EcsLines::new(&mut out);
            let (head, tail) = line.as_bytes().split_at(17);
            writer.write_all(head)?;
            writer.write_all(tail)?;
            writer.write_all(b"not an event\n")?;
            writer.flush()?;
        }
        let text = String::from_utf8(out)?;
        let mut lines = text.lines();
        let doc: serde_json::Value = serde_json::from_str(lines.next().unwrap_or_default())?;
        assert_eq!(doc["event"]["type"], serde_json::json!(["deletion"]));
        assert_eq!(doc["package"]["version"], "7.2-1");
        assert_eq!(EventFormat::id_of(&doc), Some("0123abcd"));
        assert_eq!(lines.next(), Some("not an event"));
        Ok(())
    }

    #[test]
    fn both_formats_carry_the_id() -> anyhow::Result<()> {
        for format in [EventFormat::Fenrir, EventFormat::Ecs] {
            let line: serde_json::Value = serde_json::from_str(&format.encode(&event()))?;
            assert_eq!(EventFormat::id_of(&line), Some("0123abcd"), "{format:?}");
        }
        Ok(())
    }
}
