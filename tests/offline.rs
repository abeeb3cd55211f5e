//! Nothing missed between runs: real dpkg changes the sandbox while no sensor runs, and the
//! next start reports them from dpkg's database as `"observed": "offline"`, with the details
//! the rotated logs and apt's history still have, and never twice.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::sensor::Sensor;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn run_args(sandbox: &Sandbox, extra: &[&str]) -> Vec<String> {
    let options = [
        &["--no-journald", "--no-ebpf", "--host", "offline-host"],
        extra,
    ]
    .concat();
    sandbox.run_args(&options)
}

/// `(category, package, old_version, new_version)` of an event.
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

/// Runs dpkg on the sandbox with its log written somewhere the sensor never looks.
fn dpkg_elsewhere(sandbox: &Sandbox, args: &[&str]) -> anyhow::Result<()> {
    let elsewhere = sandbox.path().join("elsewhere");
    fs::create_dir_all(&elsewhere)?;
    let output = sandbox.dpkg_logging_to(&elsewhere.join("other.log"), args)?;
    anyhow::ensure!(
        output.status.success(),
        "dpkg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn changes_made_outside_the_log_while_stopped_are_reported_offline_once() -> anyhow::Result<()> {
    if !require_root("the offline-change test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    sandbox.install(&PackageSpec::new("fenrir-up", "1.0-1"))?;
    sandbox.install(&PackageSpec::new("fenrir-gone", "1.0").conffile())?;
    sandbox.install(&PackageSpec::new("fenrir-down", "2.0"))?;
    assert_eq!(sensor.events(3, WAIT)?.len(), 3);
    let (status, rest) = sensor.stop()?;
    assert!(status.success() && rest.is_empty(), "{rest:#?}");

    // While no sensor runs, dpkg writes its log elsewhere: the followed log has none of this.
    let up = sandbox.build(&PackageSpec::new("fenrir-up", "1:0.5-1"))?;
    dpkg_elsewhere(&sandbox, &["-i", &up.to_string_lossy()])?;
    dpkg_elsewhere(&sandbox, &["--purge", "fenrir-gone"])?;
    let down = sandbox.build(&PackageSpec::new("fenrir-down", "1.9"))?;
    dpkg_elsewhere(&sandbox, &["-i", &down.to_string_lossy()])?;
    let new = sandbox.build(&PackageSpec::new("fenrir-new", "3.0"))?;
    dpkg_elsewhere(&sandbox, &["-i", &new.to_string_lossy()])?;

    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let events = sensor.events(5, WAIT)?;
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            expect("package_downgrade", "fenrir-down", Some("2.0"), Some("1.9")),
            expect("package_remove", "fenrir-gone", Some("1.0"), None),
            expect("package_purge", "fenrir-gone", Some("1.0"), None),
            expect("package_install", "fenrir-new", None, Some("3.0")),
            // An epoch makes 1:0.5 newer than 1.0.
            expect(
                "package_upgrade",
                "fenrir-up",
                Some("1.0-1"),
                Some("1:0.5-1")
            ),
        ]
    );
    for event in &events {
        assert_eq!(event["observed"], "offline", "{event:#}");
        assert_eq!(event["raw_line"], "", "no log holds these lines");
        assert_eq!(event["actor"], Value::Null);
        assert_eq!(event["host"], "offline-host");
        assert!(event["description"]
            .as_str()
            .is_some_and(|d| d.ends_with("while the sensor was down")));
    }
    assert_eq!(events[0]["severity"], "MEDIUM");
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "reported twice: {extra:#?}");
    let (status, _) = sensor.stop()?;
    assert!(status.success());

    // Reported once: the next start finds nothing new.
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let again = sensor.drain(Duration::from_secs(3));
    assert!(again.is_empty(), "reported again: {again:#?}");
    drop(sensor);

    // The store kept them, and query shows them as offline.
    let output = Command::new(fenrir_tests::sensor::binary()?)
        .args(["query", "--no-logs", "--format", "json", "--state-dir"])
        .arg(sandbox.path().join("state"))
        .output()?;
    let stored: Vec<Value> = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let offline = stored.iter().filter(|e| e["observed"] == "offline").count();
    assert_eq!(offline, 5, "{stored:#?}");
    Ok(())
}

#[test]
fn offline_changes_take_line_time_and_actor_from_the_rotated_logs() -> anyhow::Result<()> {
    if !require_root("the offline-change test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    sandbox.install(&PackageSpec::new("fenrir-before", "1.0"))?;
    sensor.events(1, WAIT)?;
    let (status, _) = sensor.stop()?;
    assert!(status.success());

    // Installed while no sensor runs, as apt would: apt records who asked.
    let log = sandbox.log();
    let before = fs::read_to_string(&log)?.lines().count();
    sandbox.install(&PackageSpec::new("fenrir-while", "2.0"))?;
    let text = fs::read_to_string(&log)?;
    let run: Vec<&str> = text.lines().skip(before).collect();
    let stamp = |line: &str| line.get(..19).unwrap_or_default().replacen(' ', "  ", 1);
    let apt = log.parent().context("log directory")?.join("apt");
    fs::create_dir_all(&apt)?;
    fs::write(
        apt.join("history.log"),
        format!(
            "\nStart-Date: {}\nCommandline: apt-get install fenrir-while\nRequested-By: alice (1000)\n\
             Install: fenrir-while:all (2.0)\nEnd-Date: {}\n",
            stamp(run.first().context("lines of the run")?),
            stamp(run.last().context("lines of the run")?),
        ),
    )?;
    let line = run
        .iter()
        .find(|l| l.contains(" install fenrir-while"))
        .context("the install line")?
        .to_string();

    // Rotated twice while down: the checkpoint's file is gone, its lines live on in .gz.
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated)?;
    let status = Command::new("gzip").arg(&rotated).status()?;
    assert!(status.success());
    fs::write(&log, b"")?;

    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let event = sensor.next_event(WAIT)?;
    assert_eq!(
        summary(&event),
        expect("package_install", "fenrir-while", None, Some("2.0"))
    );
    assert_eq!(event["observed"], "offline");
    assert_eq!(event["raw_line"], line.as_str());
    assert_eq!(
        &event["parsed_data"]["timestamp"]
            .as_str()
            .unwrap_or_default()[11..19],
        &line[11..19]
    );
    assert_eq!(event["actor"]["source"], "apt-history");
    assert_eq!(event["actor"]["command"], "apt-get install fenrir-while");
    assert_eq!(event["actor"]["user"], "alice");
    assert_eq!(event["actor"]["uid"], 1000);
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "{extra:#?}");
    Ok(())
}

#[test]
fn a_first_start_takes_a_snapshot_and_reports_nothing_old() -> anyhow::Result<()> {
    if !require_root("the first-start test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    sandbox.install(&PackageSpec::new("fenrir-old", "1.0"))?;

    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let events = sensor.drain(Duration::from_secs(3));
    assert!(events.is_empty(), "{events:#?}");
    let (status, _) = sensor.stop()?;
    assert!(status.success());
    let snapshots = sandbox.path().join("state/snapshots");
    let snapshot = fs::read_dir(&snapshots)?
        .find_map(Result::ok)
        .context("a snapshot file")?
        .path();
    let snapshot: Value = serde_json::from_slice(&fs::read(snapshot)?)?;
    assert_eq!(snapshot["packages"][0]["name"], "fenrir-old");
    assert_eq!(snapshot["packages"][0]["state"], "installed");

    // A first start that replays the log reports the old install from its line, not offline.
    let state = sandbox.path().join("state-replayed");
    let mut args = run_args(&sandbox, &["--from-start"]);
    let at = args
        .iter()
        .position(|a| a == "--state-dir")
        .context("state dir flag")?
        + 1;
    args[at] = state.display().to_string();
    let sensor = Sensor::start(&args)?;
    let replayed = sensor.events(1, WAIT)?;
    assert_eq!(
        summary(&replayed[0]),
        expect("package_install", "fenrir-old", None, Some("1.0"))
    );
    assert!(replayed[0].get("observed").is_none());
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "{extra:#?}");
    assert!(Path::new(&state).join("snapshots").exists());
    Ok(())
}

/// Waits for the first event of `category`, failing on any event of another category.
fn next_of(sensor: &Sensor, category: &str) -> anyhow::Result<Value> {
    let event = sensor
        .next_event(WAIT)
        .with_context(|| format!("waiting for {category}"))?;
    anyhow::ensure!(event["category"] == category, "not {category}: {event:#}");
    Ok(event)
}

#[test]
fn a_change_reported_live_as_unlogged_is_not_reported_offline_at_the_next_start(
) -> anyhow::Result<()> {
    if !require_root("the offline-change test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    sandbox.install(&PackageSpec::new("fenrir-logged", "1.0"))?;
    next_of(&sensor, "package_install")?;

    // While the sensor runs, dpkg writes its log elsewhere: the database witness sees it.
    let hidden = sandbox.build(&PackageSpec::new("fenrir-hidden", "6.0"))?;
    dpkg_elsewhere(&sandbox, &["-i", &hidden.to_string_lossy()])?;
    let event = next_of(&sensor, "package_change_unlogged")?;
    assert_eq!(event["parsed_data"]["package"], "fenrir-hidden");
    assert_eq!(event["parsed_data"]["new_version"], "6.0");
    assert!(event.get("observed").is_none(), "{event:#}");
    let (status, rest) = sensor.stop()?;
    assert!(status.success() && rest.is_empty(), "{rest:#?}");

    // While it is down, the same again: that one is the offline comparison's.
    let down = sandbox.build(&PackageSpec::new("fenrir-while-down", "2.0"))?;
    dpkg_elsewhere(&sandbox, &["-i", &down.to_string_lossy()])?;

    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let event = next_of(&sensor, "package_install")?;
    assert_eq!(
        summary(&event),
        expect("package_install", "fenrir-while-down", None, Some("2.0"))
    );
    assert_eq!(event["observed"], "offline", "{event:#}");
    // Neither reported twice: not fenrir-hidden as offline, not fenrir-while-down as unlogged.
    let extra = sensor.drain(Duration::from_secs(4));
    assert!(extra.is_empty(), "reported twice: {extra:#?}");
    let (status, rest) = sensor.stop()?;
    assert!(status.success() && rest.is_empty(), "{rest:#?}");
    Ok(())
}

#[test]
fn a_dpkg_root_run_logging_to_the_followed_log_leaves_its_database_alone() -> anyhow::Result<()> {
    if !require_root("the other-database test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let chroot = Sandbox::new()?;
    let mut args = run_args(&sandbox, &[]);
    args.retain(|a| a != "--no-ebpf");
    let sensor = Sensor::start(&args)?;
    if !sensor.stderr().contains("attribution=true") {
        println!(
            "skipping: the sensor runs without its kernel tracer here:\n{}",
            sensor.stderr()
        );
        return Ok(());
    }
    sandbox.install(&PackageSpec::new("fenrir-host", "1.0"))?;
    next_of(&sensor, "package_install")?;

    // dpkg --root on another tree, logging to the followed log, as a chroot build might.
    let deb = chroot.build(&PackageSpec::new("fenrir-chroot", "3.0"))?;
    let output = chroot.dpkg_logging_to(&sandbox.log(), &["-i", &deb.to_string_lossy()])?;
    anyhow::ensure!(
        output.status.success(),
        "dpkg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The log says it happened, so it is reported; the followed database never changed.
    let event = next_of(&sensor, "package_install")?;
    assert_eq!(event["parsed_data"]["package"], "fenrir-chroot");
    let extra = sensor.drain(Duration::from_secs(4));
    assert!(
        !extra
            .iter()
            .any(|e| e["category"] == "package_change_unlogged"),
        "{extra:#?}"
    );
    let (status, _) = sensor.stop()?;
    assert!(status.success());

    // Nor did the snapshot take it in: nothing is removed while the sensor was down.
    let sensor = Sensor::start(&run_args(&sandbox, &[]))?;
    let again = sensor.drain(Duration::from_secs(4));
    assert!(again.is_empty(), "{again:#?}");
    Ok(())
}
