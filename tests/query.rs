//! `fenrir-sensor query` on real logs of known content, and on the event store a real sensor
//! filled while real dpkg ran: filters, formats, rotated `.gz` sets (a damaged one too), apt's
//! history for who, and the merge of stored events with the same lines read again from the log.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context as _;
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::sensor::{binary, Sensor};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn corpus(relative: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(relative);
    if path.exists() {
        Some(path)
    } else {
        println!("skipping: the corpus has no {}", path.display());
        None
    }
}

fn gzip(path: &Path) -> anyhow::Result<PathBuf> {
    let status = Command::new("gzip").arg(path).status()?;
    anyhow::ensure!(status.success(), "gzip {} failed", path.display());
    Ok(PathBuf::from(format!("{}.gz", path.display())))
}

/// Lays out one corpus host as `/var/log` would hold it: `dpkg.log*` with `apt/history.log*`
/// beside, the oldest rotation of each gzipped. Returns the live log's path.
fn host_logs(
    dir: &Path,
    host: &str,
    rotations: &[&str],
    history: &[&str],
) -> anyhow::Result<Option<PathBuf>> {
    let log = dir.join("log");
    fs::create_dir_all(log.join("apt"))?;
    for (i, suffix) in rotations.iter().enumerate() {
        let Some(source) = corpus(&format!("dpkg/{host}__dpkg.log{suffix}")) else {
            return Ok(None);
        };
        let target = log.join(format!("dpkg.log{suffix}"));
        fs::copy(source, &target)?;
        if i + 1 == rotations.len() && i > 0 {
            gzip(&target)?;
        }
    }
    for (i, suffix) in history.iter().enumerate() {
        let Some(source) = corpus(&format!(
            "other/apt_history/{host}__apt__history.log{suffix}"
        )) else {
            return Ok(None);
        };
        let target = log.join(format!("apt/history.log{suffix}"));
        fs::copy(source, &target)?;
        if i + 1 == history.len() && i > 0 {
            gzip(&target)?;
        }
    }
    Ok(Some(log.join("dpkg.log")))
}

fn query(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(binary()?)
        .arg("query")
        .args(args)
        .env("TZ", "UTC")
        .output()
        .context("failed to run fenrir-sensor query")
}

fn json_events(output: &Output) -> anyhow::Result<Vec<Value>> {
    anyhow::ensure!(
        output.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())?
        .lines()
        .map(|line| serde_json::from_str(line).context("query printed a line that is not JSON"))
        .collect()
}

fn raw_lines(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["raw_line"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every dpkg action line of the given files, oldest file first, read by a plain scan.
fn action_lines(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for file in files {
        let text = if file.extension().is_some_and(|e| e == "gz") {
            let out = Command::new("zcat").arg(file).output()?;
            String::from_utf8(out.stdout)?
        } else {
            fs::read_to_string(file)?
        };
        for line in text.lines() {
            let action = line.split(' ').nth(2).unwrap_or_default();
            if matches!(
                action,
                "install" | "upgrade" | "remove" | "purge" | "disappear"
            ) {
                lines.push(line.to_owned());
            }
        }
    }
    Ok(lines)
}

#[test]
fn a_damaged_rotation_costs_only_its_own_lost_lines() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(log) = host_logs(
        dir.path(),
        "PhoenixYanrongLi__ServerLog",
        &["", ".1", ".2"],
        &[],
    )?
    else {
        return Ok(());
    };
    // A rotation cut short, as a full disk during compression leaves it.
    let gz = log.with_extension("log.2.gz");
    let whole = fs::read(&gz)?;
    fs::write(&gz, &whole[..whole.len() / 2])?;
    let log_arg = log.display().to_string();
    let output = query(&[
        "--no-store",
        "--dpkg-log",
        &log_arg,
        "--now",
        "2016-03-24T00:00:00Z",
        "--format",
        "json",
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let events = json_events(&output)?;
    assert!(
        stderr.contains("stops decompressing") && stderr.contains("dpkg.log.2.gz"),
        "{stderr}"
    );

    // The intact files give every action; the damaged one what came before the damage, in
    // whole lines only.
    let intact = action_lines(&[log.with_extension("log.1"), log.clone()])?;
    let original = corpus("dpkg/PhoenixYanrongLi__ServerLog__dpkg.log.2").context("corpus")?;
    let original_text = fs::read_to_string(&original)?;
    let original_lines: BTreeSet<&str> = original_text.lines().collect();
    let rotated = action_lines(&[original])?;
    let lines = raw_lines(&events);
    for line in &intact {
        assert!(lines.contains(line), "{line} is answered");
    }
    let from_damaged: BTreeSet<&String> = lines.iter().filter(|l| !intact.contains(l)).collect();
    assert!(
        from_damaged.contains(&rotated[0]),
        "the damaged file's first half is read"
    );
    assert!(
        !from_damaged.contains(&rotated[rotated.len() - 1]),
        "its second half is lost"
    );
    for line in from_damaged {
        assert!(
            original_lines.contains(line.as_str()),
            "{line} is a whole line of the rotation"
        );
    }
    Ok(())
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one walk through the filters over one rotated set, each expectation beside its query"
)]
fn filters_select_from_a_rotated_gzipped_set() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(log) = host_logs(
        dir.path(),
        "PhoenixYanrongLi__ServerLog",
        &["", ".1", ".2"],
        &["", ".1", ".2"],
    )?
    else {
        return Ok(());
    };
    let log_arg = log.display().to_string();
    let base = [
        "--no-store",
        "--dpkg-log",
        &log_arg,
        "--now",
        "2016-03-24T00:00:00Z",
    ];
    let all_files = [
        log.with_extension("log.2.gz"),
        log.with_extension("log.1"),
        log.clone(),
    ];
    let every_action = action_lines(&all_files)?;

    // The last day: only the live log holds it, and only it is read.
    let mut args = base.to_vec();
    args.extend([
        "--since",
        "24h",
        "--type",
        "install",
        "--format",
        "json",
        "--log-level",
        "debug",
    ]);
    let output = query(&args)?;
    let day = json_events(&output)?;
    let expected: Vec<String> = action_lines(std::slice::from_ref(&log))?
        .into_iter()
        .filter(|l| l.split(' ').nth(2) == Some("install"))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(raw_lines(&day), expected);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("files=1"),
        "only the live log is read: {stderr}"
    );
    // apt's history names the command behind each.
    assert!(
        day.iter()
            .all(|e| e["actor"]["command"] == "apt-get install git"),
        "{day:#?}"
    );

    // A package pattern over the whole set, the gzipped rotation included.
    let mut args = base.to_vec();
    args.extend(["--package", "liba*", "--format", "json"]);
    let liba = json_events(&query(&args)?)?;
    let expected: Vec<String> = every_action
        .iter()
        .filter(|l| l.split(' ').nth(3).is_some_and(|p| p.starts_with("liba")))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(raw_lines(&liba), expected);

    // Everything, in time order, each action line once.
    let mut args = base.to_vec();
    args.extend(["--format", "json"]);
    let everything = json_events(&query(&args)?)?;
    let changes: Vec<Value> = everything
        .iter()
        .filter(|e| e["category"] != "package_install_failed")
        .cloned()
        .collect();
    assert_eq!(raw_lines(&changes), every_action);
    let stamps: Vec<&str> = everything
        .iter()
        .filter_map(|e| e["parsed_data"]["timestamp"].as_str())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "not time-sorted");

    // A closed time range, both ends inclusive.
    let mut args = base.to_vec();
    args.extend([
        "--since",
        "2016-03-07T00:00:00Z",
        "--until",
        "2016-03-07 23:59:59",
        "--type",
        "upgrade,downgrade,reinstall,package_remove",
        "--format",
        "json",
    ]);
    let march = json_events(&query(&args)?)?;
    let expected: Vec<String> = every_action
        .iter()
        .filter(|l| l.starts_with("2016-03-07"))
        .filter(|l| matches!(l.split(' ').nth(2), Some("upgrade" | "remove")))
        .cloned()
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(raw_lines(&march), expected);
    assert!(march.iter().all(|e| e["category"] != "package_install"));

    // Severity: installs are MEDIUM, upgrades INFO.
    let mut args = base.to_vec();
    args.extend(["--min-severity", "medium", "--format", "json"]);
    let severe = json_events(&query(&args)?)?;
    assert!(!severe.is_empty());
    assert!(severe
        .iter()
        .all(|e| matches!(e["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL"))));
    Ok(())
}

#[test]
fn user_filter_matches_who_apt_recorded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(log) = host_logs(dir.path(), "teliten__log.pinga", &[""], &[""])? else {
        return Ok(());
    };
    let log_arg = log.display().to_string();
    let found = json_events(&query(&[
        "--no-store",
        "--dpkg-log",
        &log_arg,
        "--user",
        "adobrin",
        "--format",
        "json",
    ])?)?;
    let rsync = "2021-08-20 10:38:58 install rsync:amd64 <none> 3.1.3-6";
    assert!(raw_lines(&found).iter().any(|l| l == rsync), "{found:#?}");
    assert!(found.iter().all(|e| e["actor"]["user"] == "adobrin"));

    // The same as replay's events attributed to that user, which replay's tests check
    // against a plain reading of the files.
    let replayed = Command::new(binary()?)
        .args(["replay", "--log-level", "error"])
        .arg(&log)
        .env("TZ", "UTC")
        .output()?;
    let replayed = json_events(&replayed)?;
    let by_adobrin: Vec<Value> = replayed
        .into_iter()
        .filter(|e| e["actor"]["user"] == "adobrin")
        .collect();
    assert_eq!(raw_lines(&found), raw_lines(&by_adobrin));

    // By uid too.
    let by_uid = json_events(&query(&[
        "--no-store",
        "--dpkg-log",
        &log_arg,
        "--user",
        "1000",
    ])?)?;
    assert_eq!(by_uid.len(), found.len());
    let nobody = json_events(&query(&[
        "--no-store",
        "--dpkg-log",
        &log_arg,
        "--user",
        "mallory",
    ])?)?;
    assert!(nobody.is_empty());
    Ok(())
}

#[test]
fn table_and_csv_are_readable_and_escaped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("dpkg.log");
    fs::write(
        &log,
        "2026-05-03 14:32:11 startup archives unpack\n\
         2026-05-03 14:32:12 upgrade vim:amd64 2:9.0.1378-1 2:9.0.1378-2\n\
         2026-05-03 14:32:12 status installed vim:amd64 2:9.0.1378-2\n\
         2026-05-03 14:32:13 remove nano:amd64 7.2-1 <none>\n\
         2026-05-03 14:32:13 status not-installed nano:amd64 <none>\n",
    )?;
    // apt recorded a command line with escape sequences that would retitle and clear a terminal.
    fs::create_dir(dir.path().join("apt"))?;
    fs::write(
        dir.path().join("apt/history.log"),
        "\nStart-Date: 2026-05-03  14:32:10\nCommandline: apt upgrade \x1b]0;owned\x07\x1b[2J\n\
         Requested-By: eve\x1b[8m (1000)\nUpgrade: vim:amd64 (2:9.0.1378-1, 2:9.0.1378-2)\n\
         Remove: nano:amd64 (7.2-1)\nEnd-Date: 2026-05-03  14:32:14\n",
    )?;
    let log_arg = log.display().to_string();
    let base = [
        "--no-store",
        "--dpkg-log",
        &log_arg,
        "--now",
        "2026-05-04T00:00:00Z",
    ];

    let mut args = base.to_vec();
    args.extend(["--format", "table"]);
    let output = query(&args)?;
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout)?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("TIME"), "{table}");
    for column in ["ACTION", "PACKAGE", "VERSIONS", "WHO", "FROM", "COMMAND"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].starts_with("2026-05-03 14:32:12  upgrade"),
        "{table}"
    );
    assert!(lines[1].contains("vim:amd64"), "{table}");
    assert!(lines[1].contains("2:9.0.1378-1 -> 2:9.0.1378-2"), "{table}");
    assert!(lines[1].contains("apt history"), "{table}");
    assert!(
        lines[1].ends_with("apt upgrade \\x1b]0;owned\\x07\\x1b[2J"),
        "{table}"
    );
    assert!(
        lines[2].contains("remove") && lines[2].contains("7.2-1"),
        "{table}"
    );
    assert!(lines[2].contains("eve\\x1b[8m"), "{table}");
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{7}'),
        "a control character reached the terminal"
    );

    let mut args = base.to_vec();
    args.extend(["--format", "csv", "--type", "remove"]);
    let output = query(&args)?;
    let csv = String::from_utf8(output.stdout)?;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[0].starts_with("time,category,severity,package"),
        "{csv}"
    );
    assert!(
        rows[1].starts_with("2026-05-03T14:32:13+00:00,package_remove,LOW,nano,amd64,7.2-1,,"),
        "{csv}"
    );

    // A pipe gets JSON lines without asking, escaped too.
    let output = query(&base)?;
    assert!(!output.stdout.contains(&0x1b));
    let plain = json_events(&output)?;
    assert_eq!(plain.len(), 2);
    assert_eq!(
        plain[0]["actor"]["command"],
        "apt upgrade \\x1b]0;owned\\x07\\x1b[2J"
    );

    // Bad filters stop with a message naming the flag.
    for (flag, value) in [
        ("--since", "yesterday"),
        ("--type", "installs"),
        ("--min-severity", "loud"),
        ("--package", "[x"),
    ] {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        let output = query(&args)?;
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
    Ok(())
}

fn run_args(sandbox: &Sandbox, extra: &[&str]) -> Vec<String> {
    let options = [
        &["--no-journald", "--no-ebpf", "--host", "sensor-host"],
        extra,
    ]
    .concat();
    sandbox.run_args(&options)
}

#[test]
fn stored_events_and_their_log_lines_show_once() -> anyhow::Result<()> {
    if !require_root("the event store test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    sandbox.install(&PackageSpec::new("fenrir-one", "1.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-one", "2.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-two", "1.0"))?;
    let emitted = sensor.events(3, WAIT)?;
    let (status, rest) = sensor.stop()?;
    assert!(status.success() && rest.is_empty(), "{rest:#?}");

    // Written while no sensor runs: only the log has it.
    sandbox.dpkg_ok(&["--remove", "fenrir-two"])?;

    let state = sandbox.path().join("state").display().to_string();
    let log = sandbox.log().display().to_string();
    let admin = sandbox.admin_dir().display().to_string();
    let sources = [
        "--state-dir",
        &state,
        "--dpkg-log",
        &log,
        "--dpkg-admindir",
        &admin,
        "--host",
        "query-host",
        "--format",
        "json",
    ];
    let merged = json_events(&query(&sources)?)?;
    let hosts: Vec<(&str, &str)> = merged
        .iter()
        .map(|e| {
            (
                e["parsed_data"]["package"].as_str().unwrap_or("?"),
                e["host"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            ("fenrir-one", "sensor-host"),
            ("fenrir-one", "sensor-host"),
            ("fenrir-two", "sensor-host"),
            ("fenrir-two", "query-host"),
        ],
        "stored events are shown as stored, the rest from the log: {merged:#?}"
    );
    assert_eq!(raw_lines(&merged[..3]), raw_lines(&emitted));
    for (stored, shown) in emitted.iter().zip(&merged) {
        assert_eq!(stored, shown, "the stored event comes back unchanged");
    }

    // The store alone, and the log alone, each give what they hold.
    let mut args = sources.to_vec();
    args.push("--no-logs");
    assert_eq!(json_events(&query(&args)?)?.len(), 3);
    let mut args = sources.to_vec();
    args.push("--no-store");
    let logged = json_events(&query(&args)?)?;
    assert_eq!(raw_lines(&logged), raw_lines(&merged));
    assert!(logged.iter().all(|e| e["host"] == "query-host"));

    // A limit shows the newest; the stored one among them is read back from the store as is.
    let mut args = sources.to_vec();
    args.extend(["--limit", "2"]);
    assert_eq!(json_events(&query(&args)?)?, merged[2..].to_vec());
    args.push("--no-logs");
    assert_eq!(json_events(&query(&args)?)?, merged[1..3].to_vec());

    // A line dpkg wrote twice is two events, even though the store holds one of them.
    let lines = fs::read_to_string(sandbox.log())?;
    let install_two = lines
        .lines()
        .find(|l| l.contains(" install fenrir-two"))
        .context("the install line of fenrir-two")?
        .to_owned();
    OpenOptions::new()
        .append(true)
        .open(sandbox.log())?
        .write_all(format!("{install_two}\n").as_bytes())?;
    let twice = json_events(&query(&sources)?)?;
    let copies: Vec<&Value> = twice
        .iter()
        .filter(|e| e["raw_line"] == install_two.as_str() && e["category"] == "package_install")
        .collect();
    assert_eq!(copies.len(), 2, "{twice:#?}");
    assert_eq!(copies[0]["host"], "sensor-host");
    assert_eq!(copies[1]["host"], "query-host");
    Ok(())
}

#[test]
fn unreadable_store_lines_are_skipped_and_counted() -> anyhow::Result<()> {
    if !require_root("the event store test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    sandbox.install(&PackageSpec::new("fenrir-kept", "1.0"))?;
    sensor.events(1, WAIT)?;
    let (status, _) = sensor.stop()?;
    assert!(status.success());

    let segment = fs::read_dir(sandbox.path().join("state/events"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .context("a segment file")?;
    let mut file = OpenOptions::new().append(true).open(&segment)?;
    file.write_all(b"garbage\n{\"no\":\"event\"}\n\xff\xfe\x1b[2J\n")?;
    drop(file);

    let state = sandbox.path().join("state").display().to_string();
    let output = query(&["--state-dir", &state, "--no-logs", "--format", "table"])?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8(output.stdout)?;
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("fenrir-kept"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("malformed=3"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'));
    Ok(())
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` at `dir`, or says why it cannot.
    fn tmpfs(dir: &Path, size: &str) -> anyhow::Result<Option<Self>> {
        fs::create_dir_all(dir)?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()?;
        if !output.status.success() {
            println!(
                "skipping: cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return Ok(None);
        }
        Ok(Some(Self(dir.to_path_buf())))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_store_fails_like_any_sink_and_catches_up() -> anyhow::Result<()> {
    if !require_root("the full-disk store test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let events_dir = sandbox.path().join("state/events");
    let Some(_mount) = Mount::tmpfs(&events_dir, "1m")? else {
        return Ok(());
    };
    // Fill the disk to the last byte.
    let filler = events_dir.join("filler");
    let mut file = fs::File::create(&filler)?;
    let block = vec![0_u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.write_all(&[0]);
    drop(file);

    // Retried every second at most, so the catch-up is quick.
    let config = sandbox.path().join("fenrir.toml");
    fs::write(&config, "[delivery]\nretry_max_ms = 1000\n")?;
    let config = config.display().to_string();
    let sensor = Sensor::start(&run_args(&sandbox, &["--config", &config]))?;
    sandbox.install(&PackageSpec::new("fenrir-full-1", "1.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-full-2", "1.0"))?;
    // The other sink has them at once.
    let emitted = sensor.events(2, WAIT)?;
    let deadline = std::time::Instant::now() + WAIT;
    while !sensor.stderr().contains("sink failed; retrying") {
        assert!(std::time::Instant::now() < deadline, "{}", sensor.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sensor.stderr().contains("store:"), "{}", sensor.stderr());

    // Space again: the store catches up from its backlog, in order.
    fs::remove_file(&filler)?;
    let state = sandbox.path().join("state").display().to_string();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stored = json_events(&query(&["--state-dir", &state, "--no-logs"])?)?;
        if stored.len() == 2 {
            assert_eq!(raw_lines(&stored), raw_lines(&emitted));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store never caught up: {stored:#?}\n{}",
            sensor.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        sensor.stderr().contains("sink recovered"),
        "{}",
        sensor.stderr()
    );
    let (status, _) = sensor.stop()?;
    assert!(status.success());
    Ok(())
}
