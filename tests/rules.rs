//! Rules and hooks end to end, with real dpkg: a miner-named package is HIGH with the
//! watchlist rule named, a maintenance window lowers what happens inside it and leaves the
//! rest alone, HIGH events reach the exec hook and the webhook exactly once, a webhook that
//! is down and an exec hook that hangs are retried and counted without holding anything up,
//! and broken configurations are refused with the file, line and key named.

use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{Datelike as _, Utc};
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::sensor::{binary, Sensor};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn start(sandbox: &Sandbox, config: &str) -> anyhow::Result<Sensor> {
    let path = sandbox.path().join("fenrir.toml");
    fs::write(
        &path,
        format!("[ssh]\nsource = \"off\"\n[sinks.journald]\nenabled = false\n{config}"),
    )?;
    let args = sandbox.run_args(&["--config", &path.display().to_string(), "--no-ebpf"]);
    Sensor::start(&args)
}

fn rule_names(event: &Value) -> Vec<String> {
    event["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| r["rule"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A weekly window around now, or one three days away, in UTC.
fn window(around_now: bool) -> String {
    let now = Utc::now() + chrono::Duration::days(if around_now { 0 } else { 3 });
    let start = now - chrono::Duration::hours(1);
    let end = now + chrono::Duration::hours(1);
    format!(
        "[[rules.maintenance]]\nname = \"patching\"\ntimezone = \"UTC\"\nweekly = [\"{} {}-{}\"]\n\
         severity = \"INFO\"\n",
        start.weekday(),
        start.format("%H:%M"),
        end.format("%H:%M")
    )
}

#[test]
fn a_miner_named_package_is_high_and_names_the_watchlist_rule() -> anyhow::Result<()> {
    if !require_root("the watchlist test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = start(&sandbox, "")?;
    sandbox.install(&PackageSpec::new("xmrig-fenrir", "6.21.0-1"))?;
    sandbox.install(&PackageSpec::new("fenrir-plain", "1.0"))?;
    let events = sensor.events(2, WAIT)?;
    assert_eq!(events[0]["parsed_data"]["package"], "xmrig-fenrir");
    assert_eq!(events[0]["severity"], "HIGH", "{:#}", events[0]);
    let rule = events[0]["rules"]
        .as_array()
        .and_then(|rules| {
            rules
                .iter()
                .find(|r| r["rule"] == "watchlist:attacker-tooling")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(rule["to"], "HIGH", "{:#}", events[0]);
    assert!(rule["reason"]
        .as_str()
        .is_some_and(|r| r.contains("xmrig*")));
    assert_eq!(events[1]["severity"], "MEDIUM", "{:#}", events[1]);
    Ok(())
}

#[test]
fn a_maintenance_window_lowers_only_what_falls_inside_it() -> anyhow::Result<()> {
    if !require_root("the maintenance window test") {
        return Ok(());
    }
    for (inside, package) in [(true, "fenrir-in-window"), (false, "fenrir-out-of-window")] {
        let sandbox = Sandbox::new()?;
        let sensor = start(&sandbox, &window(inside))?;
        sandbox.install(&PackageSpec::new(package, "1.0"))?;
        let event = sensor.events(1, WAIT)?.remove(0);
        let names = rule_names(&event);
        if inside {
            assert_eq!(event["severity"], "INFO", "{event:#}");
            assert!(
                names.contains(&"maintenance:patching".to_owned()),
                "{event:#}"
            );
        } else {
            assert_eq!(event["severity"], "MEDIUM", "{event:#}");
            assert!(names.is_empty(), "{event:#}");
        }
    }
    Ok(())
}

/// A minimal HTTP receiver: answers 200 and passes each request body on.
fn receiver() -> anyhow::Result<(String, mpsc::Receiver<String>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/fenrir", listener.local_addr()?);
    let (sender, bodies) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if sender
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    Ok((url, bodies))
}

#[test]
fn high_events_reach_the_exec_hook_and_the_webhook_once() -> anyhow::Result<()> {
    if !require_root("the hook test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let (url, bodies) = receiver()?;
    let out = sandbox.path().join("exec-hook.jsonl");
    let sensor = start(
        &sandbox,
        &format!(
            "[hooks.exec]\ncommand = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n[hooks.webhook]\nurl = \"{url}\"\n",
            out.display()
        ),
    )?;
    sandbox.install(&PackageSpec::new("socat", "1.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-quiet", "1.0"))?;
    // The same package and actor again: a duplicate within the window.
    sandbox.dpkg_ok(&["-r", "socat"])?;
    sandbox.install(&PackageSpec::new("socat", "1.0"))?;
    let events = sensor.events(4, WAIT)?;
    let high: Vec<&Value> = events.iter().filter(|e| e["severity"] == "HIGH").collect();
    assert_eq!(high.len(), 2, "{events:#?}");

    let body = bodies.recv_timeout(WAIT)?;
    let posted: Value = serde_json::from_str(&body)?;
    assert_eq!(posted["parsed_data"]["package"], "socat");
    assert_eq!(posted["severity"], "HIGH");
    assert!(
        bodies.recv_timeout(Duration::from_secs(2)).is_err(),
        "posted once"
    );

    let deadline = Instant::now() + WAIT;
    while fs::read_to_string(&out).map_or(0, |t| t.lines().count()) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the exec hook got nothing");
        thread::sleep(Duration::from_millis(50));
    }
    let lines: Vec<Value> = fs::read_to_string(&out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["parsed_data"]["package"], "socat");
    Ok(())
}

#[test]
fn a_webhook_that_is_down_is_retried_and_stalls_nothing() -> anyhow::Result<()> {
    if !require_root("the webhook failure test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let closed = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/down", closed.local_addr()?);
    drop(closed);
    let sensor = start(
        &sandbox,
        &format!(
            "[hooks]\ndedup_window_secs = 0\n[hooks.webhook]\nurl = \"{url}\"\ntimeout_ms = 500\n\
             retries = 3\nretry_initial_ms = 1000\nretry_max_ms = 2000\n"
        ),
    )?;
    // Each HIGH event keeps the webhook busy for several seconds of retries.
    let started = Instant::now();
    for n in 0..4 {
        sandbox.install(&PackageSpec::new(&format!("xmrig-down-{n}"), "1.0"))?;
    }
    sandbox.install(&PackageSpec::new("fenrir-after-the-outage", "1.0"))?;
    let events = sensor.events(5, WAIT)?;
    let elapsed = started.elapsed();
    assert_eq!(
        events[4]["parsed_data"]["package"],
        "fenrir-after-the-outage"
    );
    assert!(
        elapsed < Duration::from_secs(8),
        "events waited for the webhook: {elapsed:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while !sensor.stderr().contains("hook failed") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no failure reported:\n{}",
            sensor.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let stderr = sensor.stderr();
    assert!(stderr.contains("attempts=4"), "{stderr}");
    assert!(stderr.contains("hook attempt failed; retrying"), "{stderr}");
    let (status, _) = sensor.stop()?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn a_hanging_exec_hook_is_killed_retried_and_counted_and_stalls_nothing() -> anyhow::Result<()> {
    if !require_root("the exec hook failure test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = start(
        &sandbox,
        "[hooks]\ndedup_window_secs = 0\n[hooks.exec]\n\
         command = [\"/bin/sh\", \"-c\", \"cat > /dev/null; exec sleep 30\"]\n\
         timeout_ms = 1000\nretries = 1\nretry_initial_ms = 500\nretry_max_ms = 500\n",
    )?;
    // Each HIGH event keeps the hook busy for two runs of a second and the pause between.
    let started = Instant::now();
    for n in 0..4 {
        sandbox.install(&PackageSpec::new(&format!("xmrig-stuck-{n}"), "1.0"))?;
    }
    sandbox.install(&PackageSpec::new("fenrir-after-the-hang", "1.0"))?;
    let events = sensor.events(5, WAIT)?;
    let elapsed = started.elapsed();
    assert_eq!(events[4]["parsed_data"]["package"], "fenrir-after-the-hang");
    assert!(
        elapsed < Duration::from_secs(8),
        "events waited for the exec hook: {elapsed:?}"
    );

    // Failures are counted one by one, each after its retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second_failure = |stderr: &str| {
        stderr
            .lines()
            .any(|l| l.contains("hook failed") && l.contains("failed=2"))
    };
    while !second_failure(&sensor.stderr()) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no second failure reported:\n{}",
            sensor.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let stderr = sensor.stderr();
    let failure = stderr
        .lines()
        .find(|l| l.contains("hook failed"))
        .unwrap_or_default();
    assert!(failure.contains("attempts=2"), "{stderr}");
    assert!(failure.contains("killed after its timeout"), "{stderr}");
    assert!(stderr.contains("hook attempt failed; retrying"), "{stderr}");
    let (status, _) = sensor.stop()?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn broken_configurations_name_file_line_and_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = [
        ("[rules]\nip_whitelist = [\"10.0.0.0/33\"]\n", "line 2", "rules.ip_whitelist", "10.0.0.0/33"),
        (
            "[rules]\n\n[[rules.maintenance]]\nname = \"w\"\ntimezone = \"UTC\"\nweekly = [\"Sun 02:00\"]\n",
            "line 6",
            "rules.maintenance.weekly",
            "Sun 02:00",
        ),
        (
            "[[rules.maintenance]]\nname = \"w\"\ntimezone = \"Moon/Base\"\nweekly = [\"Sun 02:00-04:00\"]\n",
            "line 3",
            "rules.maintenance.timezone",
            "Moon/Base",
        ),
        (
            "[[rules.watchlist]]\nname = \"x\"\npackages = [\"[unclosed\"]\n",
            "line 3",
            "rules.watchlist.packages",
            "[unclosed",
        ),
        ("[ssh]\nsourze = \"auto\"\n", "line 2", "sourze", "unknown field"),
        ("[rules.severity]\npackage_install = \"LOUD\"\n", "line 2", "package_install", "LOUD"),
        ("[hooks.webhook]\nurl = \"gopher://x\"\n", "line 2", "hooks.webhook.url", "gopher"),
    ];
    for (n, (text, line, key, detail)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{n}.toml"));
        fs::write(&path, text)?;
        let output = Command::new(binary()?)
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}: accepted");
        for needle in [path.display().to_string().as_str(), line, key, detail] {
            assert!(
                stderr.contains(needle),
                "{text}: `{needle}` missing from: {stderr}"
            );
        }
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    Ok(())
}
