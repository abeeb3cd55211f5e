//! Fleet shipping through engines that already exist: the sensor's journald entries travel
//! with `systemd-journal-upload` to a `systemd-journal-remote` collector on loopback, and are
//! found there with `journalctl --directory` by their `FENRIR_*` fields, whole.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::journald::{unique_tag, Journald};
use fenrir_tests::sensor::Sensor;
use serde_json::{Map, Value};

const REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const UPLOAD: &str = "/lib/systemd/systemd-journal-upload";
const WAIT: Duration = Duration::from_secs(30);

/// A child process killed when the test is done with it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a collector writing to `dir/fleet.journal` on a free loopback port.
fn start_collector(dir: &Path) -> anyhow::Result<(Daemon, u16)> {
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(REMOTE)
            .arg(format!("--listen-http=127.0.0.1:{port}"))
            .arg(format!("--output={}", dir.join("fleet.journal").display()))
            .arg("--split-mode=none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start systemd-journal-remote")?;
        let mut collector = Daemon(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok((collector, port));
            }
            if collector.0.try_wait()?.is_some() {
                // Another process took the port between the probe and the bind.
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    bail!("systemd-journal-remote never listened on loopback")
}

/// Returns the cursor of the newest entry of the local journal, if any.
fn newest_cursor() -> anyhow::Result<Option<String>> {
    let output = Command::new("journalctl")
        .args([
            "--merge",
            "--lines=1",
            "--output=json",
            "--no-pager",
            "--quiet",
        ])
        .output()?;
    let text = String::from_utf8(output.stdout)?;
    let Some(line) = text.lines().next() else {
        return Ok(None);
    };
    let entry: Map<String, Value> = serde_json::from_str(line)?;
    Ok(entry["__CURSOR"].as_str().map(str::to_owned))
}

/// Reads the collector's entries that match every `FIELD=value`.
fn collected(dir: &Path, matches: &[String]) -> anyhow::Result<Vec<Map<String, Value>>> {
    let output = Command::new("journalctl")
        .arg(format!("--directory={}", dir.display()))
        .args(["--output=json", "--all", "--no-pager", "--quiet"])
        .args(matches)
        .output()?;
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

/// Waits until the collector holds an entry of `category` from `host`, and returns them all.
fn wait_collected(
    dir: &Path,
    host: &str,
    category: &str,
) -> anyhow::Result<Vec<Map<String, Value>>> {
    let matches = [
        format!("FENRIR_HOST={host}"),
        format!("FENRIR_CATEGORY={category}"),
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let entries = collected(dir, &matches)?;
        if !entries.is_empty() || Instant::now() > deadline {
            return Ok(entries);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn text<'a>(entry: &'a Map<String, Value>, field: &str) -> &'a str {
    entry[field].as_str().unwrap_or_default()
}

#[test]
fn entries_reach_a_journal_collector_through_journal_upload() -> anyhow::Result<()> {
    if !require_root("the journal upload test") {
        return Ok(());
    }
    if !Path::new(REMOTE).exists() || !Path::new(UPLOAD).exists() {
        println!("skipping: systemd-journal-remote is not installed");
        return Ok(());
    }
    let Some(_journald) = Journald::shared() else {
        return Ok(());
    };
    let collector_dir = tempfile::Builder::new().prefix("fenrir-fleet-").tempdir()?;
    let (_collector, port) = start_collector(collector_dir.path())?;

    // Upload from now on: the journal's older entries are not this test's business.
    let mut upload = Command::new(UPLOAD);
    upload
        .arg(format!("--url=http://127.0.0.1:{port}"))
        .arg("--merge")
        .arg(format!(
            "--save-state={}",
            collector_dir.path().join("upload.state").display()
        ));
    if let Some(cursor) = newest_cursor()? {
        upload.arg(format!("--after-cursor={cursor}"));
    }
    let _upload = Daemon(
        upload
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start systemd-journal-upload")?,
    );

    let sandbox = Sandbox::new()?;
    let host = unique_tag("fleet");
    let args = sandbox.run_args(&["--no-ebpf", "--host", &host]);
    let sensor = Sensor::start(&args)?;
    sandbox.install(&PackageSpec::new("fenrir-fleet", "1.0-1"))?;
    sandbox.dpkg_ok(&["-r", "fenrir-fleet"])?;
    let sent = sensor.events(2, WAIT)?;

    let install = wait_collected(collector_dir.path(), &host, "package_install")?;
    assert_eq!(
        install.len(),
        1,
        "one install from this host at the collector"
    );
    let entry = &install[0];
    assert_eq!(text(entry, "SYSLOG_IDENTIFIER"), "fenrir");
    assert_eq!(text(entry, "PRIORITY"), "4", "MEDIUM");
    assert_eq!(text(entry, "FENRIR_PACKAGE"), "fenrir-fleet");
    assert_eq!(
        text(entry, "MESSAGE"),
        "Package installed: fenrir-fleet 1.0-1"
    );
    let shipped: Value = serde_json::from_str(text(entry, "FENRIR_EVENT"))?;
    assert_eq!(shipped, sent[0], "the whole event arrives unchanged");

    let removal = wait_collected(collector_dir.path(), &host, "package_remove")?;
    assert_eq!(removal.len(), 1, "the removal follows");
    assert_eq!(
        journal_files(collector_dir.path())?,
        [collector_dir.path().join("fleet.journal")]
    );
    Ok(())
}

fn journal_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "journal"))
        .collect();
    files.sort();
    Ok(files)
}
