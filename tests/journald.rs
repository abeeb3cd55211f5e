//! The journald sink against a real systemd-journald: what is sent is what `journalctl`
//! reads back, field by field.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;

use fenrir_sensor::event::{escape_control, Category, Event, Severity};
use fenrir_sensor::parse::PackageChange;
use fenrir_sensor::sink::format::EventFormat;
use fenrir_sensor::sink::journald::{encode_event, JournaldSink};
use fenrir_sensor::sink::{Sink, SinkError};
use fenrir_tests::journald::{unique_tag, Journald, SOCKET_PATH};
use serde_json::{Map, Value};

type Entry = Map<String, Value>;

fn change(category: Category, package: &str, raw_line: &str) -> PackageChange {
    PackageChange {
        category,
        package: package.to_owned(),
        arch: Some("amd64".to_owned()),
        old_version: Some("1.0-1".to_owned()),
        new_version: Some("1.1-1".to_owned()),
        timestamp: "2024-05-01T10:20:30"
            .parse()
            .expect("the timestamp is valid"),
        raw_line: raw_line.to_owned(),
        last_state: None,
        logged_run: None,
    }
}

/// Builds an event whose host is a unique tag, so its entries can be found again.
fn tagged_event(category: Category, package: &str, raw_line: &str) -> (Event, String) {
    let host = unique_tag("host");
    let event = Event::from_change(&change(category, package, raw_line), &host, "dpkg");
    (event, host)
}

fn send(event: &Event) {
    let mut sink = JournaldSink::new(SOCKET_PATH);
    sink.send(event).expect("journald accepts the event");
}

fn text<'a>(entry: &'a Entry, field: &str) -> &'a str {
    entry
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{field} is a text field of {entry:?}"))
}

fn only_entry(journald: &Journald, host: &str) -> Entry {
    let mut entries = journald
        .wait_for_entries(&[("FENRIR_HOST", host)], 1)
        .expect("the entry reaches the journal");
    assert_eq!(entries.len(), 1, "one event gives one entry");
    entries.remove(0)
}

/// Asserts that `entry` holds exactly the event's fields, compared to the event itself.
fn assert_entry_matches(entry: &Entry, event: &Event) {
    assert_eq!(text(entry, "MESSAGE"), event.description);
    assert_eq!(
        text(entry, "PRIORITY"),
        event.severity.syslog_priority().to_string()
    );
    assert_eq!(text(entry, "SYSLOG_IDENTIFIER"), "fenrir");

    let data = &event.parsed_data;
    let mut expected = vec![
        ("FENRIR_SOURCE", event.source.clone()),
        ("FENRIR_CATEGORY", event.category.as_str().to_owned()),
        ("FENRIR_SEVERITY", event.severity.as_str().to_owned()),
        ("FENRIR_DESCRIPTION", event.description.clone()),
        ("FENRIR_RAW_LINE", event.raw_line.clone()),
        ("FENRIR_HOST", event.host.clone()),
        ("FENRIR_MANAGER", event.manager.clone()),
        ("FENRIR_PACKAGE", data.package.clone()),
        ("FENRIR_TIMESTAMP", data.timestamp.clone()),
        (
            "FENRIR_RULES",
            serde_json::to_string(&event.rules).expect("rules serialize"),
        ),
    ];
    let optional = [
        ("FENRIR_IP", &event.ip),
        ("FENRIR_ARCH", &data.arch),
        ("FENRIR_OLD_VERSION", &data.old_version),
        ("FENRIR_NEW_VERSION", &data.new_version),
        ("FENRIR_LAST_STATE", &data.last_state),
    ];
    expected.extend(
        optional
            .iter()
            .filter_map(|(name, value)| Some((*name, (*value).clone()?))),
    );
    if let Some(actor) = &event.actor {
        expected.push(("FENRIR_ACTOR", actor.to_string()));
    }

    for (name, value) in &expected {
        assert_eq!(text(entry, name), value, "{name}");
    }

    let round_trip: Event =
        serde_json::from_str(text(entry, "FENRIR_EVENT")).expect("FENRIR_EVENT holds an event");
    assert_eq!(&round_trip, event);

    // No field beyond the event's own: nulls are left out, `type` is not repeated.
    let present: BTreeSet<&str> = entry
        .keys()
        .map(String::as_str)
        .filter(|key| key.starts_with("FENRIR_"))
        .collect();
    let mut wanted: BTreeSet<&str> = expected.iter().map(|(name, _)| *name).collect();
    wanted.insert("FENRIR_EVENT");
    assert_eq!(present, wanted);
}

#[test]
fn entries_carry_every_event_field() {
    let Some(journald) = Journald::shared() else {
        return;
    };

    let (upgrade, upgrade_host) = tagged_event(
        Category::PackageUpgrade,
        "openssl",
        "2024-05-01 10:20:30 upgrade openssl:amd64 1.0-1 1.1-1",
    );
    send(&upgrade);
    assert_entry_matches(&only_entry(&journald, &upgrade_host), &upgrade);

    // Every optional member set, and a severity raised by a rule.
    let mut failed_change = change(
        Category::PackageInstallFailed,
        "backdoor",
        "2024-05-01 10:20:31 status half-configured backdoor:amd64 1.1-1",
    );
    failed_change.last_state = Some("half-configured".to_owned());
    let host = unique_tag("host");
    let mut failed = Event::from_change(&failed_change, &host, "dpkg");
    failed.ip = Some("192.0.2.7".to_owned());
    failed.severity = Severity::Critical;
    failed.actor = Some(serde_json::json!({"uid": 0, "comm": "apt-get", "ssh": {"ip": "::1"}}));
    failed.rules = vec![serde_json::json!({"id": "unexpected-package", "severity": "CRITICAL"})];
    send(&failed);

    let entry = only_entry(&journald, &host);
    assert_entry_matches(&entry, &failed);
    assert_eq!(text(&entry, "PRIORITY"), "2");
}

#[test]
fn hostile_raw_line_arrives_escaped() {
    let Some(journald) = Journald::shared() else {
        return;
    };
    let raw = "2024-05-01 10:20:30 install \u{1b}[2Jevil\r:amd64 <none> 1\u{202e}0\u{7}\u{0}";
    let (event, host) = tagged_event(Category::PackageInstall, "evil\u{1b}]0;pwned\u{7}", raw);

    send(&event);

    let entry = only_entry(&journald, &host);
    assert_eq!(text(&entry, "FENRIR_RAW_LINE"), escape_control(raw));
    assert_eq!(text(&entry, "FENRIR_PACKAGE"), "evil\\x1b]0;pwned\\x07");
    for (name, value) in entry.iter().filter(|(name, _)| !name.starts_with('_')) {
        let value = value
            .as_str()
            .unwrap_or_else(|| panic!("{name} arrived as text"));
        assert!(
            !value.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{name} carries a control character: {value:?}"
        );
    }
}

#[test]
fn event_too_large_for_a_datagram_arrives_whole() {
    let Some(journald) = Journald::shared() else {
        return;
    };
    let raw = format!(
        "2024-05-01 10:20:30 install big:amd64 <none> {}",
        "9".repeat(200 * 1024)
    );
    let (event, host) = tagged_event(Category::PackageInstall, "big", &raw);

    // The entry really is beyond what one datagram carries, so it must go another way.
    let probe = UnixDatagram::unbound().expect("a socket can be created");
    let direct = probe.send_to(&encode_event(&event, EventFormat::Fenrir), SOCKET_PATH);
    assert_eq!(
        direct.map_err(|err| err.raw_os_error()).err(),
        Some(Some(nix::libc::EMSGSIZE)),
        "the entry fits a datagram"
    );

    send(&event);

    let entry = only_entry(&journald, &host);
    assert_eq!(text(&entry, "FENRIR_RAW_LINE").len(), raw.len());
    assert_entry_matches(&entry, &event);
}

#[test]
fn entries_are_selected_by_category() {
    let Some(journald) = Journald::shared() else {
        return;
    };
    let host = unique_tag("host");
    let install = Event::from_change(
        &change(
            Category::PackageInstall,
            "netcat",
            "2024-05-01 10:20:30 install netcat",
        ),
        &host,
        "dpkg",
    );
    let remove = Event::from_change(
        &change(
            Category::PackageRemove,
            "netcat",
            "2024-05-01 10:21:30 remove netcat",
        ),
        &host,
        "dpkg",
    );

    send(&install);
    send(&remove);

    // Both arrived, so a filter that returns one of them filtered.
    let all = journald
        .wait_for_entries(&[("FENRIR_HOST", &host)], 2)
        .expect("both arrive");
    assert_eq!(all.len(), 2);
    let installs = journald
        .wait_for_entries(
            &[
                ("FENRIR_HOST", &host),
                ("FENRIR_CATEGORY", "package_install"),
            ],
            1,
        )
        .expect("the install is found by its category");
    assert_eq!(installs.len(), 1);
    assert_entry_matches(&installs[0], &install);
}

#[test]
fn missing_socket_is_unavailable() {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let mut sink = JournaldSink::new(dir.path().join("no-journald.socket"));
    let (event, _) = tagged_event(Category::PackageInstall, "vim", "install vim");

    let err = sink.send(&event).expect_err("nothing listens there");
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
}

#[test]
fn sink_delivers_again_after_journald_restarts() {
    let Some(journald) = Journald::exclusive() else {
        return;
    };
    if !journald.may_restart() {
        println!("skipping: journald was not started by this test process or is shared");
        return;
    }
    let mut sink = JournaldSink::new(SOCKET_PATH);
    let (before, before_host) = tagged_event(Category::PackageInstall, "curl", "install curl");
    sink.send(&before).expect("journald accepts the event");
    only_entry(&journald, &before_host);

    journald
        .kill()
        .expect("the journald started here can be killed");
    let (lost, _) = tagged_event(Category::PackageInstall, "wget", "install wget");
    let err = sink
        .send(&lost)
        .expect_err("nobody listens while journald is down");
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");

    journald.restart().expect("journald starts again");
    let (after, after_host) = tagged_event(Category::PackageRemove, "curl", "remove curl");
    sink.send(&after)
        .expect("the same sink reaches the new journald");
    assert_entry_matches(&only_entry(&journald, &after_host), &after);
}
