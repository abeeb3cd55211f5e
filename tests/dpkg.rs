//! `fenrir-sensor run` against real dpkg: every package change made in a sandbox appears once,
//! with the right category, severity, versions and line, through rotations and restarts.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::private_journald::PrivateJournald;
use fenrir_tests::sensor::Sensor;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The arguments of a sensor following `sandbox`'s log with JSON on stdout only.
fn run_args(sandbox: &Sandbox, extra: &[&str]) -> Vec<String> {
    let options = [
        &["--no-journald", "--no-ebpf", "--host", "sandbox-host"],
        extra,
    ]
    .concat();
    sandbox.run_args(&options)
}

/// `(category, package, old_version, new_version)` of an event, for exact comparisons.
fn summary(event: &Value) -> (String, String, Option<String>, Option<String>) {
    let data = &event["parsed_data"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    (
        event["category"].as_str().unwrap_or("?").to_owned(),
        data["package"].as_str().unwrap_or("?").to_owned(),
        text(&data["old_version"]),
        text(&data["new_version"]),
    )
}

fn expect(
    category: &str,
    package: &str,
    old: Option<&str>,
    new: Option<&str>,
) -> (String, String, Option<String>, Option<String>) {
    (
        category.into(),
        package.into(),
        old.map(Into::into),
        new.map(Into::into),
    )
}

fn log_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_kind_of_change_is_reported_once_with_its_line() -> anyhow::Result<()> {
    if !require_root("the dpkg end-to-end test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;

    let hello = |version: &str| PackageSpec::new("fenrir-hello", version).conffile();
    sandbox.install(&hello("1.0-1"))?;
    sandbox.install(&hello("1.1-1"))?;
    sandbox.install(&hello("1.0-1"))?; // downgrade
    sandbox.install(&hello("1:0.9-1"))?; // epoch upgrade: numerically lower, still newer
    sandbox.install(&hello("1:0.9-1"))?; // reinstall
    sandbox.dpkg_ok(&["--remove", "fenrir-hello"])?;
    sandbox.install(&hello("1:0.9-2"))?; // over the remaining config files
    sandbox.dpkg_ok(&["--purge", "fenrir-hello"])?;

    let expected = vec![
        expect("package_install", "fenrir-hello", None, Some("1.0-1")),
        expect(
            "package_upgrade",
            "fenrir-hello",
            Some("1.0-1"),
            Some("1.1-1"),
        ),
        expect(
            "package_downgrade",
            "fenrir-hello",
            Some("1.1-1"),
            Some("1.0-1"),
        ),
        expect(
            "package_upgrade",
            "fenrir-hello",
            Some("1.0-1"),
            Some("1:0.9-1"),
        ),
        expect(
            "package_reinstall",
            "fenrir-hello",
            Some("1:0.9-1"),
            Some("1:0.9-1"),
        ),
        expect("package_remove", "fenrir-hello", Some("1:0.9-1"), None),
        expect(
            "package_install",
            "fenrir-hello",
            Some("1:0.9-1"),
            Some("1:0.9-2"),
        ),
        // dpkg --purge of an installed package removes it, then purges its config files.
        expect("package_remove", "fenrir-hello", Some("1:0.9-2"), None),
        expect("package_purge", "fenrir-hello", Some("1:0.9-2"), None),
    ];
    let events = sensor.events(expected.len(), WAIT)?;
    assert_eq!(events.iter().map(summary).collect::<Vec<_>>(), expected);

    // Nothing else: no duplicate and no failure for installs that completed.
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");

    let severities: Vec<&str> = events
        .iter()
        .map(|e| e["severity"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        severities,
        ["MEDIUM", "INFO", "MEDIUM", "INFO", "LOW", "LOW", "MEDIUM", "LOW", "LOW"]
    );

    assert_lines_and_fields(&events, &log_lines(&sandbox.log()));
    assert_eq!(
        events[0]["description"],
        "Package installed: fenrir-hello 1.0-1"
    );

    let (status, rest) = sensor.stop()?;
    assert!(status.success(), "sensor exit: {status}");
    assert!(rest.is_empty(), "events after stop: {rest:#?}");
    Ok(())
}

/// Checks that each event carries the exact log line it came from, and fields derived from it.
fn assert_lines_and_fields(events: &[Value], lines: &[String]) {
    for event in events {
        let raw = event["raw_line"].as_str().unwrap_or_default();
        assert!(
            lines.iter().any(|l| l == raw),
            "raw_line {raw:?} is not a line of the log"
        );
        assert_eq!(event["parsed_data"]["type"], event["category"]);
        assert_eq!(event["parsed_data"]["arch"], "all");
        assert_eq!(event["host"], "sandbox-host");
        assert_eq!(event["manager"], "dpkg");
        assert_eq!(event["source"], "package");
        assert_eq!(event["actor"], Value::Null);
        let timestamp = event["parsed_data"]["timestamp"]
            .as_str()
            .unwrap_or_default();
        assert!(
            chrono_like(timestamp),
            "timestamp {timestamp:?} is not RFC 3339"
        );
        assert_eq!(
            &timestamp[..10],
            &raw[..10],
            "timestamp keeps the log's local date"
        );
        assert_eq!(
            &timestamp[11..19],
            &raw[11..19],
            "timestamp keeps the log's local time"
        );
    }
}

/// `YYYY-MM-DDTHH:MM:SS±HH:MM`.
fn chrono_like(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 25
        && bytes[10] == b'T'
        && (bytes[19] == b'+' || bytes[19] == b'-')
        && bytes[22] == b':'
}

#[test]
fn failing_postinst_reports_the_install_and_its_failure() -> anyhow::Result<()> {
    if !require_root("the failing-install test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &["--log-level", "debug"]))?;

    let broken = PackageSpec::new("fenrir-broken", "2.0-1").postinst("echo failing >&2; exit 1");
    let deb = sandbox.build(&broken)?;
    let output = sandbox.dpkg(&["-i", &deb.to_string_lossy()])?;
    assert!(!output.status.success(), "the postinst must make dpkg fail");

    let events = sensor.events(2, WAIT)?;
    assert_eq!(
        summary(&events[0]),
        expect("package_install", "fenrir-broken", None, Some("2.0-1"))
    );
    assert_eq!(
        summary(&events[1]),
        expect(
            "package_install_failed",
            "fenrir-broken",
            None,
            Some("2.0-1")
        )
    );
    assert_eq!(events[1]["severity"], "MEDIUM");
    assert_eq!(events[1]["parsed_data"]["last_state"], "half-configured");
    assert!(events[1]["raw_line"]
        .as_str()
        .is_some_and(|l| l.contains("half-configured")));

    // A later successful install of another package brings no second failure report.
    sandbox.install(&PackageSpec::new("fenrir-fine", "1.0"))?;
    let next = sensor.events(1, WAIT)?;
    assert_eq!(
        summary(&next[0]),
        expect("package_install", "fenrir-fine", None, Some("1.0"))
    );
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

#[test]
fn restart_resumes_without_loss_or_repeat() -> anyhow::Result<()> {
    if !require_root("the restart test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    sandbox.install(&PackageSpec::new("fenrir-one", "1.0"))?;
    assert_eq!(sensor.events(1, WAIT)?.len(), 1);
    let (status, rest) = sensor.stop()?;
    assert!(status.success());
    assert!(rest.is_empty());

    // Changes while the sensor is down are read on the next start, once.
    sandbox.install(&PackageSpec::new("fenrir-two", "1.0"))?;
    sandbox.dpkg_ok(&["--remove", "fenrir-one"])?;

    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let events = sensor.events(2, WAIT)?;
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            expect("package_install", "fenrir-two", None, Some("1.0")),
            expect("package_remove", "fenrir-one", Some("1.0"), None),
        ]
    );
    // They came from the log's lines, not from the database comparison as well.
    assert!(
        events.iter().all(|e| e.get("observed").is_none()),
        "{events:#?}"
    );
    let extra = sensor.drain(Duration::from_secs(2));
    assert!(extra.is_empty(), "repeated events: {extra:#?}");
    Ok(())
}

#[test]
fn rotations_under_a_running_sensor_lose_nothing() -> anyhow::Result<()> {
    if !require_root("the rotation test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let log = sandbox.log();

    sandbox.install(&PackageSpec::new("fenrir-a", "1.0"))?;
    assert_eq!(summary(&sensor.events(1, WAIT)?[0]).1, "fenrir-a");

    // logrotate's default for dpkg: rename, then create a new empty file.
    fs::rename(&log, log.with_extension("log.1"))?;
    fs::write(&log, b"")?;
    sandbox.install(&PackageSpec::new("fenrir-b", "1.0"))?;
    assert_eq!(summary(&sensor.events(1, WAIT)?[0]).1, "fenrir-b");

    // copytruncate: copy, then cut the live file to zero.
    fs::copy(&log, log.with_extension("log.2"))?;
    OpenOptions::new().write(true).open(&log)?.set_len(0)?;
    sandbox.install(&PackageSpec::new("fenrir-c", "1.0"))?;
    assert_eq!(summary(&sensor.events(1, WAIT)?[0]).1, "fenrir-c");

    // Deleted and recreated by hand.
    fs::remove_file(&log)?;
    sandbox.install(&PackageSpec::new("fenrir-d", "1.0"))?;
    assert_eq!(summary(&sensor.events(1, WAIT)?[0]).1, "fenrir-d");

    let extra = sensor.drain(Duration::from_secs(2));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

/// Returns the ids of the events in a JSON lines file, in order.
fn ids_in(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for line in fs::read_to_string(path)?.lines() {
        let event: Value = serde_json::from_str(line)?;
        ids.push(event["id"].as_str().unwrap_or("no id").to_owned());
    }
    Ok(ids)
}

fn wait_for_lines(path: &Path, count: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    while fs::read_to_string(path).unwrap_or_default().lines().count() < count {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} never held {count} events",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn a_crash_before_the_checkpoint_writes_no_event_twice() -> anyhow::Result<()> {
    if !require_root("the crash-repeat test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let out = sandbox.path().join("events.jsonl");
    let out_arg = out.display().to_string();
    let args = run_args(&sandbox, &["--json", &out_arg]);
    let checkpoints = sandbox.path().join("state/checkpoints");

    let sensor = Sensor::start(&args)?;
    sandbox.install(&PackageSpec::new("fenrir-one", "1.0"))?;
    wait_for_lines(&out, 1)?;
    // What the checkpoint said before the next events: a crash right after writing them
    // leaves it there.
    let early: Vec<(std::path::PathBuf, Vec<u8>)> = fs::read_dir(&checkpoints)?
        .map(|entry| {
            let path = entry?.path();
            let bytes = fs::read(&path)?;
            Ok((path, bytes))
        })
        .collect::<std::io::Result<_>>()?;
    sandbox.install(&PackageSpec::new("fenrir-two", "1.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-three", "1.0"))?;
    wait_for_lines(&out, 3)?;
    sensor.stop()?;
    let before = ids_in(&out)?;
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.iter().all(|id| id.len() == 32), "{before:?}");

    for (path, bytes) in &early {
        fs::write(path, bytes)?;
    }
    let sensor = Sensor::start(&args)?;
    sandbox.install(&PackageSpec::new("fenrir-four", "1.0"))?;
    wait_for_lines(&out, 4)?;
    sensor.stop()?;

    let after = ids_in(&out)?;
    assert_eq!(after[..3], before[..], "the old events stay as they were");
    assert_eq!(
        after.len(),
        4,
        "two and three are not written again: {after:?}"
    );
    let last: Value = serde_json::from_str(fs::read_to_string(&out)?.lines().last().unwrap_or(""))?;
    assert_eq!(last["parsed_data"]["package"], "fenrir-four");
    Ok(())
}

#[test]
fn garbage_in_the_log_is_skipped_and_the_stream_goes_on() -> anyhow::Result<()> {
    if !require_root("the malformed-input test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let log = sandbox.log();
    {
        let mut file = OpenOptions::new().create(true).append(true).open(&log)?;
        file.write_all(b"garbage line\n\xff\xfe\x00binary\n")?;
        file.write_all(&vec![b'x'; 1_000_000])?;
        file.write_all(b"\n2026-05-03 14:32:11 install vim:amd64 <none>\n")?;
        file.write_all(b"2026-05-03 14:32:11 install evil\x1b[31m:amd64 <none> 1.0\n")?;
        file.write_all(b"2026-05-03 14:32:12 remove nano:amd64 7.2-1 <none>\n")?;
    }
    let events = sensor.events(1, WAIT)?;
    assert_eq!(
        summary(&events[0]),
        expect("package_remove", "nano", Some("7.2-1"), None)
    );

    sandbox.install(&PackageSpec::new("fenrir-after", "1.0"))?;
    assert_eq!(summary(&sensor.events(1, WAIT)?[0]).1, "fenrir-after");
    let extra = sensor.drain(Duration::from_secs(2));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");

    let stderr = sensor.stderr();
    assert!(stderr.contains("skipping unparsable dpkg line"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "a control character reached the terminal"
    );
    Ok(())
}

#[test]
fn a_full_disk_sink_does_not_stop_the_other() -> anyhow::Result<()> {
    if !require_root("the failing-sink test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let out = sandbox.path().join("events.jsonl");
    let out_arg = out.display().to_string();
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let sensor = Sensor::start(&run_args(
        &sandbox,
        &["--json", "/dev/full", "--json", &out_arg],
    ))?;
    sandbox.install(&PackageSpec::new("fenrir-x", "1.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-y", "1.0"))?;

    let deadline = std::time::Instant::now() + WAIT;
    while fs::read_to_string(&out).unwrap_or_default().lines().count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "file sink got no events: {}",
            sensor.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = sensor.stop()?;
    assert!(status.success());
    let text = fs::read_to_string(&out)?;
    let packages: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).map(|e| summary(&e).1))
        .collect::<Result<_, _>>()?;
    assert_eq!(packages, ["fenrir-x", "fenrir-y"]);
    Ok(())
}

#[test]
fn events_no_sink_took_are_delivered_after_restart() -> anyhow::Result<()> {
    if !require_root("the held-delivery test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    sandbox.install(&PackageSpec::new("fenrir-seed", "1.0"))?;

    // Every sink fails: the sensor must not move its checkpoint past the undelivered event.
    let sensor = Sensor::start(&run_args(&sandbox, &["--json", "/dev/full", "--no-store"]))?;
    sandbox.install(&PackageSpec::new("fenrir-held", "1.0"))?;
    let deadline = std::time::Instant::now() + WAIT;
    while !sensor.stderr().contains("no sink accepted an event") {
        assert!(std::time::Instant::now() < deadline, "{}", sensor.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = sensor.stop()?;
    assert!(status.success());

    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let events = sensor.events(1, WAIT)?;
    assert_eq!(
        summary(&events[0]),
        expect("package_install", "fenrir-held", None, Some("1.0"))
    );
    Ok(())
}

#[test]
fn broken_config_names_file_line_and_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("fenrir.toml");
    fs::write(
        &config,
        "host = \"h\"\n[dpkg]\nlog_path = \"/var/log/dpkg.log\"\n",
    )?;
    let output = Command::new(fenrir_tests::sensor::binary()?)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("log_path"), "{stderr}");

    fs::write(&config, "[sinks.journald]\nenabled = false\n")?;
    let output = Command::new(fenrir_tests::sensor::binary()?)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn a_dead_journald_is_reported_at_start_and_gets_its_events_when_it_returns() -> anyhow::Result<()>
{
    if !require_root("the dead-journald test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    // Killed as a crash would, journald leaves its socket file behind.
    let mut journald = PrivateJournald::start(&sandbox.path().join("journald"))?;
    journald.kill()?;
    let socket_arg = journald.socket().display().to_string();
    let mut args = run_args(&sandbox, &["--journald-socket", &socket_arg]);
    args.retain(|a| a != "--no-journald");

    let sensor = Sensor::start(&args)?;
    let stderr = sensor.stderr();
    let warning = stderr
        .lines()
        .find(|line| line.contains("journald is not accepting entries"))
        .unwrap_or_else(|| panic!("no warning before the first event:\n{stderr}"));
    assert!(warning.contains(&socket_arg), "{warning}");

    sandbox.install(&PackageSpec::new("fenrir-unjournaled", "1.0"))?;
    let events = sensor.events(1, WAIT)?;
    assert_eq!(
        summary(&events[0]),
        expect("package_install", "fenrir-unjournaled", None, Some("1.0"))
    );

    // The event waited in the journald sink's backlog and goes there once it listens again.
    journald.restart()?;
    let wanted = ["FENRIR_PACKAGE=fenrir-unjournaled".to_owned()];
    let deadline = std::time::Instant::now() + WAIT;
    let entries = loop {
        let entries = journald.entries(&wanted).unwrap_or_default();
        if !entries.is_empty() || std::time::Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(entries.len(), 1, "{entries:#?}\n{}", sensor.stderr());
    assert_eq!(entries[0]["FENRIR_RAW_LINE"], events[0]["raw_line"]);
    let (status, _) = sensor.stop()?;
    assert!(status.success());
    Ok(())
}

#[test]
fn events_reach_journald_with_their_fields() -> anyhow::Result<()> {
    if !require_root("the journald end-to-end test") {
        return Ok(());
    }
    let Some(journald) = fenrir_tests::journald::Journald::shared() else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let host = fenrir_tests::journald::unique_tag("e2e-host");
    let mut args = run_args(&sandbox, &[]);
    args.retain(|a| a != "--no-journald");
    let host_at = args.iter().position(|a| a == "sandbox-host").unwrap_or(0);
    args[host_at].clone_from(&host);
    let sensor = Sensor::start(&args)?;
    assert!(
        !sensor.stderr().contains("not accepting entries"),
        "{}",
        sensor.stderr()
    );

    sandbox.install(&PackageSpec::new("fenrir-journal", "3:1.2~rc1-1"))?;
    let event = sensor.events(1, WAIT)?.remove(0);
    let entries = journald.wait_for_entries(&[("FENRIR_HOST", &host)], 1)?;
    assert_eq!(
        entries.len(),
        1,
        "exactly one journal entry per event: {entries:#?}"
    );
    let entry = &entries[0];

    assert_eq!(entry["MESSAGE"], event["description"]);
    assert_eq!(entry["PRIORITY"], "4");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "fenrir");
    assert_eq!(entry["FENRIR_CATEGORY"], "package_install");
    assert_eq!(entry["FENRIR_SEVERITY"], "MEDIUM");
    assert_eq!(entry["FENRIR_PACKAGE"], "fenrir-journal");
    assert_eq!(entry["FENRIR_ARCH"], "all");
    assert_eq!(entry["FENRIR_NEW_VERSION"], "3:1.2~rc1-1");
    assert_eq!(entry["FENRIR_RAW_LINE"], event["raw_line"]);
    assert_eq!(entry["FENRIR_TIMESTAMP"], event["parsed_data"]["timestamp"]);
    assert!(
        entry.get("FENRIR_OLD_VERSION").is_none(),
        "null fields are left out"
    );
    Ok(())
}
