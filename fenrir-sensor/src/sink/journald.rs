//! The journald sink: events in, journal entries out.
//!
//! Each [`Event`] becomes one entry written over journald's native protocol: `MESSAGE`,
//! `PRIORITY` and `SYSLOG_IDENTIFIER` for people and tools that read the journal, plus one
//! `FENRIR_*` field per event field so `journalctl FENRIR_CATEGORY=package_install` selects
//! alerts, and `FENRIR_EVENT` carrying the whole event as JSON — in Fenrir's schema, or as an
//! ECS document when the sink is configured so (then `FENRIR_EVENT_FORMAT=ecs` says which).
//!
//! State: one unbound datagram socket, created on first use. Every send names the socket path
//! again, so a journald that restarts is reached without reconnecting. Entries too large for
//! one datagram travel in a sealed memfd passed alongside an empty datagram.

use std::io::{self, IoSlice, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use serde_json::Value;

use super::format::EventFormat;
use super::{Sink, SinkError};
use crate::event::Event;

/// The path where journald listens for native-protocol datagrams.
pub const DEFAULT_SOCKET_PATH: &str = "/run/systemd/journal/socket";

/// The identifier under which entries appear (`journalctl -t fenrir`).
const SYSLOG_IDENTIFIER: &str = "fenrir";

/// The prefix of every event field in the journal.
const FIELD_PREFIX: &str = "FENRIR_";

/// The longest field name journald accepts.
const FIELD_NAME_MAX: usize = 64;

/// Entries above this size skip the datagram attempt: the default socket buffer of Linux
/// (`net.core.wmem_default`, 208 KiB) rejects them anyway, after a copy of the whole entry.
const DATAGRAM_MAX: usize = 128 * 1024;

/// How long one send may wait for room in journald's receive queue before it fails, so a
/// stalled journald delays the pipeline but never stops it.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Delivers events to systemd-journald over its native protocol.
#[derive(Debug)]
pub struct JournaldSink {
    socket_path: PathBuf,
    socket: Option<UnixDatagram>,
    format: EventFormat,
}

impl JournaldSink {
    /// Creates a sink that writes to the journald socket at `socket_path`; nothing is opened
    /// until the first event.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            socket_path: socket_path.into(),
            socket: None,
            format: EventFormat::Fenrir,
        }
    }

    /// Sets the format of the `FENRIR_EVENT` field; the other fields stay Fenrir's, so
    /// `journalctl FENRIR_PACKAGE=…` matches entries of either format.
    #[must_use]
    pub fn with_format(mut self, format: EventFormat) -> Self {
        self.format = format;
        self
    }

    /// Returns the socket path this sink writes to.
    #[must_use]
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Asks whether journald is listening, without writing an entry. A datagram socket
    /// connects only to a socket some process still holds, so the file a dead journald left
    /// behind refuses here just as it would refuse the first event.
    ///
    /// # Errors
    /// Returns the error of connecting: `ECONNREFUSED` for a socket nobody holds, `ENOENT`
    /// for none at all.
    pub fn probe(&self) -> io::Result<()> {
        UnixDatagram::unbound()?.connect(&self.socket_path)
    }

    fn target(&self) -> String {
        format!("journald at {}", self.socket_path.display())
    }

    fn socket(&mut self) -> io::Result<&UnixDatagram> {
        let socket = if let Some(socket) = self.socket.take() {
            socket
        } else {
            let socket = UnixDatagram::unbound()?;
            socket.set_write_timeout(Some(SEND_TIMEOUT))?;
            socket
        };

        Ok(self.socket.insert(socket))
    }

    fn deliver(&mut self, entry: &[u8]) -> io::Result<()> {
        let path = self.socket_path.clone();
        let socket = self.socket()?;

        if entry.len() <= DATAGRAM_MAX {
            match socket.send_to(entry, &path) {
                Ok(_) => return Ok(()),
                Err(err) if is_too_large(&err) => {}
                Err(err) => return Err(err),
            }
        }

        send_memfd(socket, &path, entry)
    }
}

impl JournaldSink {
    /// Writes one entry of `fields` (`MESSAGE`, `PRIORITY`, …) as given, for the sensor's own
    /// records such as hook outcomes; `SYSLOG_IDENTIFIER=fenrir` is added.
    ///
    /// # Errors
    /// Fails when journald cannot be reached.
    pub fn send_fields(&mut self, fields: &[(String, String)]) -> io::Result<()> {
        let mut entry = Vec::with_capacity(512);
        append_field(
            &mut entry,
            "SYSLOG_IDENTIFIER",
            SYSLOG_IDENTIFIER.as_bytes(),
        );
        for (name, value) in fields {
            append_field(&mut entry, name, value.as_bytes());
        }
        self.deliver(&entry)
    }
}

impl Default for JournaldSink {
    fn default() -> Self {
        Self::new(DEFAULT_SOCKET_PATH)
    }
}

impl Sink for JournaldSink {
    fn name(&self) -> &'static str {
        "journald"
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let entry = encode_event(event, self.format);

        match self.deliver(&entry) {
            Ok(()) => Ok(()),
            Err(source) if is_unavailable(&source) => Err(SinkError::Unavailable {
                target: self.target(),
                source,
            }),
            Err(source) => {
                // A socket in an unknown state is not worth keeping; the next send opens anew.
                self.socket = None;
                Err(SinkError::Write {
                    target: self.target(),
                    source,
                })
            }
        }
    }
}

/// Encodes one event as a native-protocol journal entry, its `FENRIR_EVENT` in `format`.
#[must_use]
pub fn encode_event(event: &Event, format: EventFormat) -> Vec<u8> {
    let mut entry = Vec::with_capacity(2 * event.raw_line.len() + 1024);

    append_field(&mut entry, "MESSAGE", event.description.as_bytes());
    append_field(
        &mut entry,
        "PRIORITY",
        event.severity.syslog_priority().to_string().as_bytes(),
    );
    append_field(
        &mut entry,
        "SYSLOG_IDENTIFIER",
        SYSLOG_IDENTIFIER.as_bytes(),
    );

    for (name, value) in event_fields(event, format) {
        append_field(&mut entry, &name, value.as_bytes());
    }

    entry
}

/// Flattens an event into `FENRIR_*` journal fields, in the order of its JSON form.
///
/// Top-level scalars and the members of `parsed_data` become one field each; nested objects
/// and arrays are written as compact JSON; nulls are left out; `FENRIR_EVENT` holds the whole
/// event in `format`, and `FENRIR_EVENT_FORMAT` names a format other than Fenrir's. Driven by
/// the JSON form, so fields added to [`Event`] appear without changes here.
#[must_use]
pub fn event_fields(event: &Event, format: EventFormat) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();

    // Serializing a tree of strings, options and JSON values cannot fail; an empty field list
    // still leaves MESSAGE and PRIORITY, so nothing is lost silently beyond the extras.
    let Ok(Value::Object(top)) = serde_json::to_value(event) else {
        return fields;
    };

    for (key, value) in &top {
        if key == "parsed_data" {
            if let Value::Object(members) = value {
                for (member, value) in members {
                    // `type` always equals the category, which already has its field.
                    if member == "type" {
                        continue;
                    }
                    let mut name = field_name(member);
                    if fields.iter().any(|(existing, _)| *existing == name) {
                        name = field_name(&format!("{key}_{member}"));
                    }
                    push_value(&mut fields, name, value);
                }
                continue;
            }
        }
        push_value(&mut fields, field_name(key), value);
    }

    fields.push((field_name("event"), format.encode(event)));
    if format == EventFormat::Ecs {
        fields.push((field_name("event_format"), "ecs".to_owned()));
    }
    fields
}

fn push_value(fields: &mut Vec<(String, String)>, name: String, value: &Value) {
    let text = match value {
        Value::Null => return,
        Value::String(text) => text.clone(),
        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => value.to_string(),
    };
    fields.push((name, text));
}

/// Turns an event key into a valid journal field name: `FENRIR_` followed by the key in upper
/// case, every character outside `A-Z0-9_` replaced by `_`, at most 64 characters.
#[must_use]
pub fn field_name(key: &str) -> String {
    let mut name = String::with_capacity(FIELD_PREFIX.len() + key.len());
    name.push_str(FIELD_PREFIX);

    for c in key.chars() {
        if name.len() == FIELD_NAME_MAX {
            break;
        }
        let upper = c.to_ascii_uppercase();
        name.push(if upper.is_ascii_uppercase() || upper.is_ascii_digit() {
            upper
        } else {
            '_'
        });
    }

    name
}

/// Appends one field: `NAME=value\n`, or for a value containing a newline the binary form
/// `NAME\n`, its length as little-endian u64, the bytes and `\n`.
fn append_field(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());

    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }

    entry.extend_from_slice(value);
    entry.push(b'\n');
}

/// Passes `entry` to journald in a sealed memfd, the protocol's path for entries that do not
/// fit a datagram.
fn send_memfd(socket: &UnixDatagram, path: &Path, entry: &[u8]) -> io::Result<()> {
    let memfd = memfd_create(
        c"fenrir-journal",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(entry)?;
    let memfd = OwnedFd::from(file);

    // journald maps only sealed memfds, so the content cannot change under it once sent.
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals))?;

    let address = UnixAddr::new(path)?;
    let fds = [memfd.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    let no_data: [IoSlice<'_>; 0] = [];
    sendmsg(
        socket.as_raw_fd(),
        &no_data,
        &control,
        MsgFlags::empty(),
        Some(&address),
    )?;

    Ok(())
}

fn is_too_large(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if code == Errno::EMSGSIZE as i32
        || code == Errno::ENOBUFS as i32)
}

fn is_unavailable(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if code == Errno::ENOENT as i32
        || code == Errno::ECONNREFUSED as i32
        || code == Errno::ENOTDIR as i32)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::event::Category;
    use crate::parse::PackageChange;

    fn upgrade_event() -> Event {
        let timestamp = NaiveDate::from_ymd_opt(2024, 5, 1)
            .and_then(|d| d.and_hms_opt(10, 20, 30))
            .expect("the date is valid");
        let change = PackageChange {
            category: Category::PackageUpgrade,
            package: "openssl".to_owned(),
            arch: Some("amd64".to_owned()),
            old_version: Some("3.0.11-1".to_owned()),
            new_version: Some("3.0.13-1".to_owned()),
            timestamp,
            raw_line: "2024-05-01 10:20:30 upgrade openssl:amd64 3.0.11-1 3.0.13-1".to_owned(),
            last_state: None,
            logged_run: None,
        };
        Event::from_change(&change, "web-1", "dpkg")
    }

    /// Splits an encoded entry back into fields, as journald reads it.
    fn decode(mut entry: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut fields = Vec::new();
        while !entry.is_empty() {
            let end = entry
                .iter()
                .position(|&b| b == b'\n')
                .expect("every field ends in \\n");
            let line = &entry[..end];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                let name = String::from_utf8(line[..eq].to_vec()).expect("names are ASCII");
                fields.push((name, line[eq + 1..].to_vec()));
                entry = &entry[end + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).expect("names are ASCII");
                let rest = &entry[end + 1..];
                let len_bytes: [u8; 8] = rest[..8].try_into().expect("eight length bytes");
                let len = u64::from_le_bytes(len_bytes) as usize;
                fields.push((name, rest[8..8 + len].to_vec()));
                assert_eq!(rest[8 + len], b'\n', "binary value is followed by \\n");
                entry = &rest[8 + len + 1..];
            }
        }
        fields
    }

    #[test]
    fn simple_values_use_the_key_value_form() {
        let mut entry = Vec::new();
        append_field(
            &mut entry,
            "MESSAGE",
            b"Package upgraded: vim 2:9.0 -> 2:9.1",
        );
        assert_eq!(entry, b"MESSAGE=Package upgraded: vim 2:9.0 -> 2:9.1\n");
    }

    #[test]
    fn values_with_newlines_use_the_binary_form() {
        let mut entry = Vec::new();
        append_field(&mut entry, "FENRIR_RAW_LINE", b"a\nb=c");

        let mut expected = b"FENRIR_RAW_LINE\n".to_vec();
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb=c\n");
        assert_eq!(entry, expected);
    }

    #[test]
    fn arbitrary_bytes_survive_encoding() {
        let values: [&[u8]; 4] = [b"", b"\n", b"\0\xff=\r\x1b[2J", b"x\n\n=\ny"];
        let mut entry = Vec::new();
        for value in values {
            append_field(&mut entry, "FENRIR_X", value);
        }

        let decoded: Vec<Vec<u8>> = decode(&entry).into_iter().map(|(_, v)| v).collect();
        assert_eq!(decoded, values.map(<[u8]>::to_vec));
    }

    #[test]
    fn an_ecs_entry_changes_the_event_field_alone() {
        let event = upgrade_event();
        let fenrir = event_fields(&event, EventFormat::Fenrir);
        let mut ecs = event_fields(&event, EventFormat::Ecs);

        assert_eq!(
            ecs.pop(),
            Some(("FENRIR_EVENT_FORMAT".to_owned(), "ecs".to_owned()))
        );
        let (name, document) = ecs.pop().expect("the event field");
        assert_eq!(name, "FENRIR_EVENT");
        let document: Value = serde_json::from_str(&document).expect("a JSON document");
        assert_eq!(document["package"]["name"], "openssl");
        assert_eq!(document["event"]["type"], serde_json::json!(["change"]));
        assert_eq!(ecs, fenrir[..fenrir.len() - 1]);
    }

    #[test]
    fn field_names_are_sanitized() {
        assert_eq!(field_name("raw_line"), "FENRIR_RAW_LINE");
        assert_eq!(field_name("old-version.x"), "FENRIR_OLD_VERSION_X");
        assert_eq!(field_name("_lead"), "FENRIR__LEAD");
        assert_eq!(field_name("zeit\u{e4}"), "FENRIR_ZEIT_");
        assert_eq!(field_name("9lives"), "FENRIR_9LIVES");

        let long = field_name(&"k".repeat(100));
        assert_eq!(long.len(), FIELD_NAME_MAX);
        assert!(long.starts_with("FENRIR_KKK"));
    }

    #[test]
    fn event_fields_flatten_every_member() {
        let mut event = upgrade_event();
        event.actor = Some(serde_json::json!({"uid": 0, "comm": "apt"}));
        event.rules = vec![serde_json::json!({"id": "r1"})];
        let fields: std::collections::HashMap<String, String> =
            event_fields(&event, EventFormat::Fenrir)
                .into_iter()
                .collect();

        let expected = [
            ("FENRIR_SOURCE", "package"),
            ("FENRIR_CATEGORY", "package_upgrade"),
            ("FENRIR_SEVERITY", "INFO"),
            (
                "FENRIR_DESCRIPTION",
                "Package upgraded: openssl 3.0.11-1 -> 3.0.13-1",
            ),
            ("FENRIR_HOST", "web-1"),
            ("FENRIR_MANAGER", "dpkg"),
            ("FENRIR_PACKAGE", "openssl"),
            ("FENRIR_ARCH", "amd64"),
            ("FENRIR_OLD_VERSION", "3.0.11-1"),
            ("FENRIR_NEW_VERSION", "3.0.13-1"),
            ("FENRIR_ACTOR", r#"{"comm":"apt","uid":0}"#),
            ("FENRIR_RULES", r#"[{"id":"r1"}]"#),
        ];
        for (name, value) in expected {
            assert_eq!(fields.get(name).map(String::as_str), Some(value), "{name}");
        }
        assert_eq!(fields["FENRIR_RAW_LINE"], event.raw_line);
        assert_eq!(fields["FENRIR_TIMESTAMP"], event.parsed_data.timestamp);
        assert_eq!(fields["FENRIR_EVENT"], event.to_json_line());

        // Nulls (ip, last_state) are left out and `type` repeats the category.
        assert!(!fields.contains_key("FENRIR_IP"));
        assert!(!fields.contains_key("FENRIR_LAST_STATE"));
        assert!(!fields.contains_key("FENRIR_TYPE"));
        assert!(!fields.contains_key("FENRIR_PARSED_DATA"));
    }

    #[test]
    fn encoded_event_carries_message_priority_and_identifier() {
        let event = upgrade_event();
        let decoded = decode(&encode_event(&event, EventFormat::Fenrir));

        assert_eq!(
            decoded[0],
            ("MESSAGE".to_owned(), event.description.clone().into_bytes())
        );
        assert_eq!(decoded[1], ("PRIORITY".to_owned(), b"6".to_vec()));
        assert_eq!(
            decoded[2],
            ("SYSLOG_IDENTIFIER".to_owned(), b"fenrir".to_vec())
        );
        assert_eq!(
            decoded.len(),
            3 + event_fields(&event, EventFormat::Fenrir).len()
        );
    }

    #[test]
    fn missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let mut sink = JournaldSink::new(dir.path().join("absent.socket"));

        let err = sink
            .send(&upgrade_event())
            .expect_err("nothing listens there");
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
    }

    #[test]
    fn probe_tells_a_listening_socket_from_one_left_behind() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let path = dir.path().join("journal.socket");
        let listener = UnixDatagram::bind(&path).expect("a socket can be bound");
        let sink = JournaldSink::new(&path);

        sink.probe().expect("a bound socket accepts a connection");

        drop(listener);
        assert!(path.exists(), "closing a socket leaves its file");
        let err = sink.probe().expect_err("nobody holds the socket any more");
        assert_eq!(
            err.raw_os_error(),
            Some(Errno::ECONNREFUSED as i32),
            "{err}"
        );
        assert!(is_unavailable(&err));
    }

    #[test]
    fn stalled_reader_fails_the_send_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let path = dir.path().join("stalled.socket");
        let _listener = UnixDatagram::bind(&path).expect("a socket can be bound");
        let mut sink = JournaldSink::new(&path);
        let event = upgrade_event();

        // Nobody reads, so the receive queue fills and a send has to wait for room.
        let started = std::time::Instant::now();
        let failure = (0..10_000).find_map(|_| sink.send(&event).err());

        let err = failure.expect("a full queue fails a send");
        assert!(matches!(err, SinkError::Write { .. }), "{err:?}");
        assert!(
            started.elapsed() < SEND_TIMEOUT * 5,
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn entries_reach_a_listening_socket_whole() {
        let dir = tempfile::tempdir().expect("a temporary directory can be created");
        let path = dir.path().join("journal.socket");
        let listener = UnixDatagram::bind(&path).expect("a socket can be bound");
        let mut sink = JournaldSink::new(&path);
        let event = upgrade_event();

        sink.send(&event).expect("the listener accepts datagrams");

        let mut buffer = vec![0; 64 * 1024];
        let len = listener.recv(&mut buffer).expect("the datagram arrived");
        assert_eq!(
            &buffer[..len],
            encode_event(&event, EventFormat::Fenrir).as_slice()
        );
    }
}
