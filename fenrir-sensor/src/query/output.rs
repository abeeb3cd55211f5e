//! Writes an answer for a person (a table) or for a script (JSON lines, CSV).
//!
//! In: found events. Out: text on a writer. No state. Every string that reaches the output
//! passes through [`escape_control`] again, whatever its source, so no control character from
//! a log or a command line reaches a terminal or a spreadsheet raw.

use std::io::{self, Write};

use chrono::{DateTime, Local};
use serde_json::Value;

use super::Found;
use crate::event::escape_control;

/// How an answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns: time, action, package, versions, who, from where, command.
    Table,
    /// One event per line, as the sensor emits them.
    Json,
    /// A header, then one row per event.
    Csv,
}

/// Writes `events` to `out` in `format`.
///
/// # Errors
/// Only what writing to `out` returns.
pub fn write(events: &[Found], format: Format, out: &mut dyn Write) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    match format {
        Format::Json => {
            for found in events {
                let mut value = found.value();
                escape_strings(&mut value);
                serde_json::to_writer(&mut out, &value)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => write_csv(events, &mut out)?,
        Format::Table => write_table(events, &mut out)?,
    }
    out.flush()
}

/// Escapes every string in a JSON tree; strings already escaped stay as they are.
pub fn escape_strings(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let std::borrow::Cow::Owned(escaped) = escape_control(text) {
                *text = escaped;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_strings),
        Value::Object(members) => members.values_mut().for_each(escape_strings),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The readable cells of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub time: String,
    pub action: String,
    pub package: String,
    pub versions: String,
    pub who: String,
    pub from: String,
    pub command: String,
}

fn text(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

/// Builds the cells of `event`, escaped.
#[must_use]
pub fn row(event: &Value) -> Row {
    let data = &event["parsed_data"];
    let category = event["category"].as_str().unwrap_or("?");
    let short = category.strip_prefix("package_").unwrap_or(category);
    let mut action = short.to_owned();
    if event["observed"] == "offline" {
        action.push_str(" (offline)");
    }

    let time = data["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(
            || data["timestamp"].as_str().unwrap_or("?").to_owned(),
            |t| {
                t.with_timezone(&Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            },
        );

    let mut package = data["package"].as_str().unwrap_or("").to_owned();
    if let Some(arch) = text(&data["arch"]) {
        package = format!("{package}:{arch}");
    }

    let (old, new) = (text(&data["old_version"]), text(&data["new_version"]));
    let versions = match (short, old, new) {
        ("upgrade" | "downgrade", Some(old), Some(new)) => format!("{old} -> {new}"),
        ("install", Some(old), Some(new)) => format!("{new} (over {old})"),
        ("install_failed", _, Some(new)) => match text(&data["last_state"]) {
            Some(state) => format!("{new} ({state})"),
            None => new.to_owned(),
        },
        (_, old, new) => new.or(old).unwrap_or("").to_owned(),
    };

    let actor = &event["actor"];
    let user = text(&actor["user"])
        .map(str::to_owned)
        .or_else(|| actor["uid"].as_u64().map(|uid| format!("uid {uid}")));
    let login = text(&actor["login_user"]).map(str::to_owned).or_else(|| {
        actor["loginuid"]
            .as_u64()
            .filter(|&uid| uid != u64::from(u32::MAX))
            .map(|uid| format!("uid {uid}"))
    });
    let who = match (login, user) {
        (Some(login), Some(user)) if login != user => format!("{login} as {user}"),
        (Some(login), _) => login,
        (None, Some(user)) => user,
        (None, None) => "-".to_owned(),
    };

    let mut from = Vec::new();
    if let Some(ip) = text(&event["ip"]) {
        from.push(ip.to_owned());
    } else if actor["ssh"].is_object() {
        from.push("ssh".to_owned());
    }
    if let Some(tty) = text(&actor["tty"]) {
        from.push(tty.to_owned());
    }
    if let Some(log) = actor["source"].as_str().and_then(recorded_by) {
        from.push(log.to_owned());
    }
    let from = if from.is_empty() {
        "-".to_owned()
    } else {
        from.join(" ")
    };

    let command = text(&actor["command"])
        .or_else(|| text(&actor["dpkg_command"]))
        .unwrap_or("-")
        .to_owned();

    let escape = |s: String| escape_control(&s).into_owned();
    Row {
        time: escape(time),
        action: escape(action),
        package: escape(package),
        versions: escape(versions),
        who: escape(who),
        from: escape(from),
        command: escape(command),
    }
}

/// Names the log an actor was read from, for an actor a log recorded rather than the
/// kernel: apt's history, or the manager's own log.
#[must_use]
pub fn recorded_by(source: &str) -> Option<&'static str> {
    Some(match source {
        "apt-history" => "apt history",
        "pacman-log" => "pacman.log",
        "zypp-history" => "zypp history",
        "dnf-log" => "dnf.log",
        "apk-log" => "apk.log",
        _ => return None,
    })
}

/// Widest a table cell gets; longer cells are cut with `…`.
const MAX_CELL: usize = 60;

fn write_table(events: &[Found], out: &mut impl Write) -> io::Result<()> {
    let header = Row {
        time: "TIME".into(),
        action: "ACTION".into(),
        package: "PACKAGE".into(),
        versions: "VERSIONS".into(),
        who: "WHO".into(),
        from: "FROM".into(),
        command: "COMMAND".into(),
    };
    let rows: Vec<Row> = std::iter::once(header)
        .chain(events.iter().map(|f| row(&f.value())))
        .collect();
    let cells = |r: &Row| -> [String; 7] {
        [
            &r.time,
            &r.action,
            &r.package,
            &r.versions,
            &r.who,
            &r.from,
            &r.command,
        ]
        .map(|cell| cut(cell, MAX_CELL))
    };
    let table: Vec<[String; 7]> = rows.iter().map(cells).collect();
    let mut widths = [0_usize; 7];
    for line in &table {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for line in &table {
        let mut text = String::new();
        for (column, cell) in line.iter().enumerate() {
            if column + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                let pad = widths[column] - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    if events.is_empty() {
        writeln!(out, "(no matching events)")?;
    }
    Ok(())
}

fn cut(cell: &str, max: usize) -> String {
    if cell.chars().count() <= max {
        return cell.to_owned();
    }
    let mut cut: String = cell.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 17] = [
    "time",
    "category",
    "severity",
    "package",
    "arch",
    "old_version",
    "new_version",
    "who",
    "user",
    "login_user",
    "from",
    "command",
    "host",
    "manager",
    "observed",
    "raw_line",
    "description",
];

fn write_csv(events: &[Found], out: &mut impl Write) -> io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(CSV_COLUMNS)?;
    for found in events {
        let event = found.value();
        let readable = row(&event);
        let data = &event["parsed_data"];
        let field = |value: &Value| escape_control(value.as_str().unwrap_or("")).into_owned();
        writer.write_record([
            field(&data["timestamp"]),
            field(&event["category"]),
            field(&event["severity"]),
            field(&data["package"]),
            field(&data["arch"]),
            field(&data["old_version"]),
            field(&data["new_version"]),
            readable.who,
            field(&event["actor"]["user"]),
            field(&event["actor"]["login_user"]),
            readable.from,
            readable.command,
            field(&event["host"]),
            field(&event["manager"]),
            field(&event["observed"]),
            field(&event["raw_line"]),
            field(&event["description"]),
        ])?;
    }
    writer.flush()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_say_who_from_where_and_what() {
        let event = json!({
            "category": "package_upgrade", "severity": "INFO", "ip": null,
            "parsed_data": {"package": "openssl", "arch": "amd64", "old_version": "3.0.11-1",
                "new_version": "3.0.13-1", "timestamp": "2026-05-03T14:32:11+00:00"},
            "actor": {"user": "root", "login_user": "alice", "tty": "pts0",
                "ssh": {"sshd_pid": 1}, "command": "apt-get upgrade\u{1b}[2J"},
        });
        let row = row(&event);
        assert_eq!(row.action, "upgrade");
        assert_eq!(row.package, "openssl:amd64");
        assert_eq!(row.versions, "3.0.11-1 -> 3.0.13-1");
        assert_eq!(row.who, "alice as root");
        assert_eq!(row.from, "ssh pts0");
        assert_eq!(row.command, "apt-get upgrade\\x1b[2J");

        let offline = json!({
            "category": "package_remove", "observed": "offline",
            "parsed_data": {"package": "nano", "arch": null, "old_version": "7.2-1",
                "new_version": null, "timestamp": "bad"},
            "actor": {"source": "apt-history", "user": "bob", "uid": 1000,
                "command": "apt remove nano"},
        });
        let row = super::row(&offline);
        assert_eq!(row.action, "remove (offline)");
        assert_eq!(row.versions, "7.2-1");
        assert_eq!(row.who, "bob");
        assert_eq!(row.from, "apt history");
        assert_eq!(row.time, "bad");

        let pacman = json!({
            "category": "package_install",
            "parsed_data": {"package": "vim", "new_version": "9.1-1", "timestamp": "bad"},
            "actor": {"source": "pacman-log", "user": null, "uid": null,
                "command": "pacman -S vim"},
        });
        let row = super::row(&pacman);
        assert_eq!(row.who, "-", "pacman.log names no user");
        assert_eq!(row.from, "pacman.log");
        assert_eq!(row.command, "pacman -S vim");
    }

    #[test]
    fn json_output_escapes_strings_it_did_not_make() -> io::Result<()> {
        let found = Found {
            json: r#"{"actor":{"command":"a\u001b]0;pwned\u0007"},"parsed_data":{}}"#.to_owned(),
            time: None,
            origin: super::super::Origin::Store,
            order: 0,
            place: None,
        };
        let mut out = Vec::new();
        write(&[found], Format::Json, &mut out)?;
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(r"a\\x1b]0;pwned\\x07"), "{text}");
        assert!(!text.contains('\u{1b}'));
        Ok(())
    }
}
