//! Package managers beyond dpkg, for real: dnf, zypper and pacman change a sandbox root and
//! write their own logs, the sensor follows those logs and reports every install, upgrade,
//! downgrade, reinstall and removal with the manager named and, with the kernel tracer, the
//! run that made it; replay reads the real logs of other hosts; apk's database is followed by
//! snapshot.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use fenrir_tests::dpkg::require_root;
use fenrir_tests::managers::{require_program, ManagerSandbox};
use fenrir_tests::sensor::{binary, Sensor};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn start_sensor(config: &Path) -> anyhow::Result<Sensor> {
    Sensor::start(&[
        "run".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ])
}

/// Returns whether the sensor attributes changes, printing why not when it does not.
fn has_tracer(sensor: &Sensor) -> bool {
    let attributed = sensor.stderr().contains("attribution=true");
    if !attributed {
        println!(
            "skipping: actor checks, the sensor runs without its kernel tracer here:\n{}",
            sensor.stderr()
        );
    }
    attributed
}

/// Checks that `event` names the run of `program` whose command line holds every word of
/// `command`: as root, with its process chain, without dpkg's own field.
fn expect_actor(event: &Value, program: &str, command: &[&str]) {
    let actor = &event["actor"];
    assert!(actor.is_object(), "no actor: {event:#}");
    assert!(
        actor["pid"].as_u64().is_some_and(|pid| pid > 1),
        "{actor:#}"
    );
    assert_eq!(actor["uid"], 0, "{actor:#}");
    assert_eq!(actor["user"], "root", "{actor:#}");
    let line = actor["command"].as_str().unwrap_or_default();
    assert!(line.contains(program), "{line}");
    for word in command {
        assert!(line.contains(word), "{word} missing from {line}");
    }
    assert!(actor.get("dpkg_command").is_none(), "{actor:#}");
    assert!(
        actor["ancestry"].as_array().is_some_and(|a| !a.is_empty()),
        "{actor:#}"
    );
}

/// Returns the names of the rules that fired on `event`.
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

/// Returns whether a command-line argument names an rpm file.
fn is_rpm_file(argument: &str) -> bool {
    Path::new(argument)
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("rpm"))
}

/// Checks that the lineage rule names the local package file a run installed.
fn expect_local_package(event: &Value, file: &str) {
    let rule = event["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == "lineage:local-package"));
    let reason = rule.and_then(|r| r["reason"].as_str()).unwrap_or_default();
    assert!(
        reason.contains(file),
        "no local-package rule for {file}: {event:#}"
    );
}

/// Waits for one event and checks what users rely on: category, package, both versions
/// and the manager.
fn expect(
    sensor: &Sensor,
    manager: &str,
    category: &str,
    package: &str,
    versions: (Option<&str>, Option<&str>),
) -> anyhow::Result<Value> {
    let event = sensor.next_event(WAIT)?;
    assert_eq!(event["category"], category, "{event:#}");
    assert_eq!(event["manager"], manager, "{event:#}");
    assert_eq!(event["host"], "managers-host");
    let data = &event["parsed_data"];
    assert_eq!(data["package"], package, "{event:#}");
    assert_eq!(data["old_version"].as_str(), versions.0, "{event:#}");
    assert_eq!(data["new_version"].as_str(), versions.1, "{event:#}");
    assert!(
        event["raw_line"].as_str().is_some_and(|l| !l.is_empty()),
        "{event:#}"
    );
    Ok(event)
}

#[test]
fn dnf_installs_upgrades_downgrades_and_removals_are_reported() -> anyhow::Result<()> {
    if !require_root("the dnf test") || !require_program("dnf", "the dnf test") {
        return Ok(());
    }
    let sandbox = ManagerSandbox::new()?;
    let v1 = sandbox
        .build_rpm("fenrir-dnf", "1.0")?
        .display()
        .to_string();
    let v2 = sandbox
        .build_rpm("fenrir-dnf", "2.0")?
        .display()
        .to_string();
    let sensor = start_sensor(&sandbox.sensor_config("dnf", &sandbox.dnf_log())?)?;
    let attributed = has_tracer(&sensor);

    let (one, two) = (Some("1.0-1"), Some("2.0-1"));
    let steps = [
        ("install", v1.as_str(), "package_install", (None, one)),
        ("upgrade", v2.as_str(), "package_upgrade", (one, two)),
        ("reinstall", v2.as_str(), "package_reinstall", (two, two)),
        ("downgrade", v1.as_str(), "package_downgrade", (two, one)),
        ("remove", "fenrir-dnf", "package_remove", (one, None)),
    ];
    for (command, argument, category, versions) in steps {
        sandbox.dnf(&[command, argument])?;
        let event = expect(&sensor, "dnf", category, "fenrir-dnf", versions)?;
        assert_eq!(event["parsed_data"]["arch"], "noarch");
        if attributed {
            // dnf is a Python script: the run is the interpreter running /usr/bin/dnf.
            expect_actor(
                &event,
                "/usr/bin/dnf",
                &[command, argument, "--installroot="],
            );
            if is_rpm_file(argument) {
                expect_local_package(&event, argument);
            }
        }
    }

    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

#[test]
fn zypper_changes_are_told_apart_by_rpm_version_order() -> anyhow::Result<()> {
    if !require_root("the zypper test") || !require_program("zypper", "the zypper test") {
        return Ok(());
    }
    let sandbox = ManagerSandbox::new()?;
    let rpm = |version| -> anyhow::Result<String> {
        Ok(sandbox
            .build_rpm("fenrir-zypper", version)?
            .display()
            .to_string())
    };
    let (v1, v2, v05) = (rpm("1.0")?, rpm("2.0")?, rpm("0.5")?);
    let anchor = sandbox
        .build_rpm("fenrir-anchor", "1.0")?
        .display()
        .to_string();
    let sensor = start_sensor(&sandbox.sensor_config("zypper", &sandbox.zypper_log())?)?;
    let attributed = has_tracer(&sensor);

    // zypper 1.14 fails after removing the last package of a root (rpmdb2solv cannot cache
    // an empty rpm database), so another package stays installed throughout.
    let (one, two, half) = (Some("1.0-1"), Some("2.0-1"), Some("0.5-1"));
    sandbox.zypper(&["install", "--allow-unsigned-rpm", &anchor])?;
    expect(
        &sensor,
        "zypper",
        "package_install",
        "fenrir-anchor",
        (None, one),
    )?;

    // zypper writes an `install` record for every one of these; the versions decide.
    let name = "fenrir-zypper";
    let unsigned = "--allow-unsigned-rpm";
    let steps: [(&[&str], &str, _); 5] = [
        (&["install", unsigned, &v1], "package_install", (None, one)),
        (&["install", unsigned, &v2], "package_upgrade", (one, two)),
        (
            &["install", "--oldpackage", unsigned, &v05],
            "package_downgrade",
            (two, half),
        ),
        (
            &["install", "--force", unsigned, &v05],
            "package_reinstall",
            (half, half),
        ),
        (&["remove", name], "package_remove", (half, None)),
    ];
    for (args, category, versions) in steps {
        sandbox.zypper(args)?;
        let event = expect(&sensor, "zypper", category, name, versions)?;
        if attributed {
            // zypper runs rpm as its child; the history is written by zypper itself.
            expect_actor(&event, "zypper", args);
            if let Some(file) = args.iter().find(|a| is_rpm_file(a)) {
                expect_local_package(&event, file);
            }
        }
    }

    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

#[test]
fn pacman_changes_are_reported_as_pacman_logs_them() -> anyhow::Result<()> {
    if !require_root("the pacman test") || !require_program("pacman", "the pacman test") {
        return Ok(());
    }
    let sandbox = ManagerSandbox::new()?;
    let package = |version| -> anyhow::Result<String> {
        Ok(sandbox
            .build_pacman("fenrir-pacman", version)?
            .display()
            .to_string())
    };
    let (v1, v2, v05) = (package("1.0-1")?, package("2.0-1")?, package("0.5-1")?);
    let (one, two, half) = (Some("1.0-1"), Some("2.0-1"), Some("0.5-1"));
    let name = "fenrir-pacman";

    // Written before the sensor started: reported from the log, but no one can say who.
    sandbox.pacman(&["-U", &v1])?;
    let config = sandbox.sensor_config_from_start("pacman", &sandbox.pacman_log())?;
    let sensor = start_sensor(&config)?;
    let attributed = has_tracer(&sensor);
    let event = expect(&sensor, "pacman", "package_install", name, (None, one))?;
    assert!(event["actor"].is_null(), "{event:#}");

    let steps = [
        (["-U", v2.as_str()], "package_upgrade", (one, two)),
        (["-U", v2.as_str()], "package_reinstall", (two, two)),
        (["-U", v05.as_str()], "package_downgrade", (two, half)),
        (["-R", name], "package_remove", (half, None)),
    ];
    for (args, category, versions) in steps {
        sandbox.pacman(&args)?;
        let event = expect(&sensor, "pacman", category, name, versions)?;
        if attributed {
            expect_actor(&event, "pacman", &args);
            if args[0] == "-U" {
                expect_local_package(&event, args[1]);
            }
        }
    }

    // The watchlist knows no manager: attacker tooling from pacman is as loud as from dpkg.
    let socat = sandbox.build_pacman("socat", "1.8.0.0-1")?;
    sandbox.pacman(&["-U", &socat.display().to_string()])?;
    let event = expect(
        &sensor,
        "pacman",
        "package_install",
        "socat",
        (None, Some("1.8.0.0-1")),
    )?;
    assert_eq!(event["severity"], "HIGH", "{event:#}");
    assert!(
        rule_names(&event).contains(&"watchlist:attacker-tooling".to_owned()),
        "{event:#}"
    );

    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

#[test]
fn rpm_run_by_hand_is_reported_and_dnf_changes_are_left_to_dnf() -> anyhow::Result<()> {
    if !require_root("the rpm test") || !require_program("dnf", "the rpm test") {
        return Ok(());
    }
    let sandbox = ManagerSandbox::new()?;
    let v1 = sandbox
        .build_rpm("fenrir-rpm", "1.0")?
        .display()
        .to_string();
    let v2 = sandbox
        .build_rpm("fenrir-rpm", "2.0")?
        .display()
        .to_string();
    let other = sandbox
        .build_rpm("fenrir-via-dnf", "1.0")?
        .display()
        .to_string();
    let sensor = start_sensor(&sandbox.rpm_and_dnf_config()?)?;
    if !has_tracer(&sensor) {
        return Ok(());
    }
    assert!(
        sensor.stderr().contains("manager=rpm"),
        "the rpm database is followed: {}",
        sensor.stderr()
    );

    // rpm itself writes no log: the database tells what changed, the kernel who did it.
    let (one, two) = (Some("1.0-1"), Some("2.0-1"));
    let steps: [(&[&str], &str, _); 5] = [
        (&["-i", &v1], "package_install", (None, one)),
        (&["-U", &v2], "package_upgrade", (one, two)),
        (
            &["-U", "--oldpackage", &v1],
            "package_downgrade",
            (two, one),
        ),
        (&["--reinstall", &v1], "package_reinstall", (one, one)),
        (&["-e", "fenrir-rpm"], "package_remove", (one, None)),
    ];
    for (args, category, versions) in steps {
        sandbox.rpm(args)?;
        let event = expect(&sensor, "rpm", category, "fenrir-rpm", versions)
            .with_context(|| format!("after rpm {args:?}"))?;
        assert_eq!(
            event["raw_line"]
                .as_str()
                .map(|l| l.starts_with("fenrir-rpm-")),
            Some(true)
        );
        expect_actor(&event, "rpm", args);
        if let Some(file) = args.iter().find(|a| is_rpm_file(a)) {
            expect_local_package(&event, file);
        }
    }

    // dnf changes the same database in its own process and logs it: one event, dnf's.
    sandbox.dnf(&["install", &other])?;
    let event = expect(
        &sensor,
        "dnf",
        "package_install",
        "fenrir-via-dnf",
        (None, one),
    )?;
    expect_actor(&event, "/usr/bin/dnf", &["install"]);
    let extra = sensor.drain(Duration::from_secs(4));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

fn stanza(name: &str, version: &str) -> String {
    format!("C:Q1{name}{version}=\nP:{name}\nV:{version}\nA:x86_64\nF:usr/bin\nR:{name}\n\n")
}

/// Replaces the database the way apk does: a new file renamed over the old one.
fn write_database(path: &Path, text: &str) -> anyhow::Result<()> {
    let next = path.with_extension("new");
    fs::write(&next, text)?;
    fs::rename(&next, path)?;
    Ok(())
}

#[test]
fn apk_database_changes_are_reported_where_apk_writes_no_log() -> anyhow::Result<()> {
    if !require_root("the apk database test") {
        return Ok(());
    }
    let sandbox = ManagerSandbox::new()?;
    let database = sandbox.root().join("lib/apk/db/installed");
    fs::create_dir_all(database.parent().context("database folder")?)?;
    write_database(
        &database,
        &(stanza("musl", "1.2.4-r1") + &stanza("curl", "8.6.0-r0") + &stanza("zlib", "1.3.1-r0")),
    )?;
    let config = sandbox.sensor_config("apk", &sandbox.root().join("var/log/apk.log"))?;
    let apk_log = format!(
        "log = \"{}\"\n",
        sandbox.root().join("var/log/apk.log").display()
    );
    let text = fs::read_to_string(&config)?.replace(
        &apk_log,
        &format!("{apk_log}database = \"{}\"\n", database.display()),
    );
    fs::write(&config, text)?;
    let sensor = start_sensor(&config)?;
    assert!(
        sensor.stderr().contains("database baseline taken"),
        "{}",
        sensor.stderr()
    );

    write_database(
        &database,
        &(stanza("musl", "1.2.4-r2") + &stanza("curl", "8.5.0-r0") + &stanza("vim", "9.1.0-r0")),
    )?;
    let mut events = sensor.events(4, WAIT)?;
    events.sort_by_key(|e| e["parsed_data"]["package"].as_str().map(str::to_owned));
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            let data = &e["parsed_data"];
            format!(
                "{} {} {} {} {}",
                e["manager"].as_str().unwrap_or_default(),
                e["category"].as_str().unwrap_or_default(),
                data["package"].as_str().unwrap_or_default(),
                data["old_version"].as_str().unwrap_or("-"),
                data["new_version"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "apk package_downgrade curl 8.6.0-r0 8.5.0-r0",
            "apk package_upgrade musl 1.2.4-r1 1.2.4-r2",
            "apk package_install vim - 9.1.0-r0",
            "apk package_remove zlib 1.3.1-r0 -",
        ]
    );
    assert_eq!(events[1]["raw_line"], "P:musl V:1.2.4-r2 A:x86_64");
    assert!(
        events.iter().all(|e| e.get("observed").is_none()),
        "{events:#?}"
    );
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");

    // Changed while the sensor was down: found at the next start from the checkpoint.
    let (status, _) = sensor.stop()?;
    assert!(status.success(), "the sensor stops cleanly");
    write_database(
        &database,
        &(stanza("curl", "8.5.0-r0") + &stanza("vim", "9.1.0-r0")),
    )?;
    let sensor = start_sensor(&config)?;
    let event = sensor.next_event(WAIT)?;
    assert_eq!(event["category"], "package_remove", "{event:#}");
    assert_eq!(event["parsed_data"]["package"], "musl");
    assert_eq!(event["observed"], "offline", "{event:#}");
    assert!(event["description"]
        .as_str()
        .is_some_and(|d| d.ends_with("while the sensor was down")));
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

/// Runs `fenrir-sensor` with `args` (in UTC) and returns the JSON events it prints.
fn events_of(args: &[&std::ffi::OsStr]) -> anyhow::Result<Vec<Value>> {
    let output = std::process::Command::new(binary()?)
        .args(args)
        .env("TZ", "UTC")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "fenrir-sensor {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

/// Returns `(package, category, actor source, user, command)` of each event.
fn who(events: &[Value]) -> Vec<(String, String, String, String, String)> {
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    events
        .iter()
        .map(|e| {
            let actor = &e["actor"];
            (
                text(&e["parsed_data"]["package"]),
                text(&e["category"]),
                text(&actor["source"]),
                text(&actor["user"]),
                text(&actor["command"]),
            )
        })
        .collect()
}

/// Compresses `path` into `target` with the real gzip, removing `path`.
fn gzip_to(path: &Path, target: &Path) -> anyhow::Result<()> {
    let compressed = std::process::Command::new("gzip")
        .arg("-c")
        .arg(path)
        .output()?;
    anyhow::ensure!(compressed.status.success(), "gzip failed");
    fs::write(target, compressed.stdout)?;
    fs::remove_file(path)?;
    Ok(())
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story: three real managers, their logs replayed, then queried"
)]
fn replay_and_query_name_the_command_each_managers_log_recorded() -> anyhow::Result<()> {
    if !require_root("the log attribution test")
        || !require_program("pacman", "the log attribution test")
        || !require_program("zypper", "the log attribution test")
        || !require_program("dnf", "the log attribution test")
    {
        return Ok(());
    }
    let sandbox = ManagerSandbox::new()?;
    let pacman_v1 = sandbox.build_pacman("fenrir-who", "1.0-1")?;
    let pacman_v2 = sandbox.build_pacman("fenrir-who", "2.0-1")?;
    let rpm = sandbox.build_rpm("fenrir-who", "1.0")?;
    let (pacman_v1, pacman_v2, rpm) = (
        pacman_v1.display().to_string(),
        pacman_v2.display().to_string(),
        rpm.display().to_string(),
    );

    // pacman: the first install's log is rotated away and compressed before the rest.
    sandbox.pacman(&["-U", &pacman_v1])?;
    let pacman_log = sandbox.pacman_log();
    gzip_to(&pacman_log, &sandbox.root().join("var/log/pacman.log.1.gz"))?;
    sandbox.pacman(&["-U", &pacman_v2])?;
    sandbox.pacman(&["-R", "fenrir-who"])?;

    // zypper: rotated with a date, as its logrotate rule does, and compressed with xz. zypper
    // 1.14 fails after removing a root's last package, so another one stays.
    let anchor = sandbox
        .build_rpm("fenrir-anchor", "1.0")?
        .display()
        .to_string();
    sandbox.zypper(&["install", "--allow-unsigned-rpm", &anchor, &rpm])?;
    let zypper_log = sandbox.zypper_log();
    let zypper_rotated = zypper_log.with_file_name("history-20260101");
    fs::rename(&zypper_log, &zypper_rotated)?;
    let history = fs::read_to_string(&zypper_rotated)?;
    let compressed = std::process::Command::new("xz")
        .arg(&zypper_rotated)
        .status()?;
    anyhow::ensure!(compressed.success(), "xz failed");
    let zypper_rotated = zypper_log.with_file_name("history-20260101.xz");
    sandbox.zypper(&["remove", "fenrir-who"])?;

    // dnf: dnf.rpm.log has the changes, dnf.log beside it the commands.
    let dnf_sandbox = ManagerSandbox::new()?;
    dnf_sandbox.dnf(&["install", &rpm])?;
    // Runs that start in the same second cannot be paired with their dnf.log lines.
    std::thread::sleep(Duration::from_millis(2100));
    dnf_sandbox.dnf(&["remove", "fenrir-who"])?;
    let dnf_log = dnf_sandbox.dnf_log();

    // Replay: every change names the command of its own run, as the log wrote it.
    let pacman_set = [
        sandbox.root().join("var/log/pacman.log.1.gz"),
        pacman_log.clone(),
    ];
    let args: Vec<&std::ffi::OsStr> = std::iter::once("replay".as_ref())
        .chain(pacman_set.iter().map(|p| p.as_os_str()))
        .collect();
    let pacman = who(&events_of(&args)?);
    let is_pacman_run = |row: &(String, String, String, String, String),
                         category: &str,
                         operation: &str,
                         operand: &str| {
        row.0 == "fenrir-who"
            && row.1 == category
            && row.2 == "pacman-log"
            && row.3 == "-"
            && row.4.starts_with("pacman ")
            && row.4.contains(operation)
            && row.4.ends_with(operand)
    };
    assert_eq!(pacman.len(), 3, "{pacman:#?}");
    assert!(
        is_pacman_run(&pacman[0], "package_install", "-U", &pacman_v1),
        "{pacman:#?}"
    );
    assert!(
        is_pacman_run(&pacman[1], "package_upgrade", "-U", &pacman_v2),
        "{pacman:#?}"
    );
    assert!(
        is_pacman_run(&pacman[2], "package_remove", "-R", "fenrir-who"),
        "{pacman:#?}"
    );

    let zypper = who(&events_of(&[
        "replay".as_ref(),
        zypper_log.as_os_str(),
        zypper_rotated.as_os_str(),
    ])?);
    let user = history
        .lines()
        .find_map(|l| l.split('|').nth(2).filter(|_| l.contains("|command|")))
        .and_then(|user| user.split('@').next())
        .context("the history has a command record")?;
    // zypper installs the two packages of one run in an order of its own.
    let mut summary: Vec<(&str, &str)> = zypper
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str()))
        .collect();
    summary[..2].sort_unstable();
    assert_eq!(
        summary,
        [
            ("fenrir-anchor", "package_install"),
            ("fenrir-who", "package_install"),
            ("fenrir-who", "package_remove")
        ]
    );
    for (row, operation) in zypper.iter().zip(["install", "install", "remove"]) {
        assert_eq!(row.2, "zypp-history", "{zypper:#?}");
        assert_eq!(row.3, user, "{zypper:#?}");
        assert!(row.4.starts_with("zypper --non-interactive"), "{zypper:#?}");
        assert!(row.4.contains(&format!(" {operation} ")), "{zypper:#?}");
    }

    let dnf_events = who(&events_of(&["replay".as_ref(), dnf_log.as_os_str()])?);
    assert_eq!(dnf_events.len(), 2, "{dnf_events:#?}");
    for (row, operation) in dnf_events.iter().zip(["install", "remove"]) {
        assert_eq!(row.2, "dnf-log", "{dnf_events:#?}");
        assert_eq!(row.3, "-", "dnf.log names no user");
        assert!(row.4.starts_with("dnf -y -q"), "{dnf_events:#?}");
        assert!(row.4.contains(&format!(" {operation} ")), "{dnf_events:#?}");
    }
    assert!(dnf_events[0].4.ends_with(&rpm), "{dnf_events:#?}");

    // Query reads every followed manager's log and its rotations, and filters on the user
    // a log names.
    let config = sandbox.config_following(&[
        ("pacman", &pacman_log),
        ("zypper", &zypper_log),
        ("dnf", &dnf_log),
    ])?;
    let state_dir = sandbox.path().join("state");
    let query = |extra: &[&str]| -> anyhow::Result<Vec<Value>> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--config".as_ref(),
            config.as_os_str(),
            "query".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            "--state-dir".as_ref(),
            state_dir.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        events_of(&args)
    };
    let all = query(&[])?;
    let mut by_manager = std::collections::BTreeMap::new();
    for event in &all {
        *by_manager
            .entry(event["manager"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        by_manager,
        [
            ("dnf".to_owned(), 2),
            ("pacman".to_owned(), 3),
            ("zypper".to_owned(), 3)
        ]
        .into_iter()
        .collect(),
        "{all:#?}"
    );
    let mut replayed: Vec<_> = pacman.into_iter().chain(zypper).chain(dnf_events).collect();
    let mut queried = who(&all);
    replayed.sort();
    queried.sort();
    assert_eq!(queried, replayed, "query names who replay names");
    let times: Vec<&str> = all
        .iter()
        .filter_map(|e| e["parsed_data"]["timestamp"].as_str())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted, "oldest first");

    let by_user = query(&["--user", user])?;
    assert_eq!(
        by_user.len(),
        3,
        "only zypper's history names a user: {by_user:#?}"
    );
    assert!(by_user.iter().all(|e| e["manager"] == "zypper"));
    let pacman_only = query(&["--manager", "pacman", "--type", "upgrade"])?;
    assert_eq!(who(&pacman_only).len(), 1, "{pacman_only:#?}");
    assert!(query(&["--no-logs"])?.is_empty());
    Ok(())
}

/// Tells whether a line of one format records a package change.
type Rule = fn(&str) -> bool;

/// Counts the lines of `text` that `is_change` says record one package change.
fn count_lines(text: &str, is_change: impl Fn(&str) -> bool) -> usize {
    text.lines().filter(|line| is_change(line)).count()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the expectations of every format are read side by side"
)]
fn replay_reads_every_format_and_names_its_manager() -> anyhow::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/other");
    if !corpus.exists() {
        println!("skipping: no corpus at {}", corpus.display());
        return Ok(());
    }
    // Each format's change lines, told apart with nothing but its own words.
    let rules: [(&str, &str, &str, Rule); 5] = [
        ("dnf", "dnf", "dnf.rpm.log", |l| {
            [" Installed: ", " Erase: ", " Upgrade: "]
                .iter()
                .any(|w| l.contains(w))
        }),
        ("yum", "yum", "yum.log", |l| !l.is_empty()),
        ("zypper", "zypper", "history", |l| {
            l.contains("|install|") || l.contains("|remove |")
        }),
        ("pacman", "pacman", "pacman.log", |l| {
            !l.contains("[ALPM-SCRIPTLET]")
                && [
                    "installed ",
                    "upgraded ",
                    "downgraded ",
                    "reinstalled ",
                    "removed ",
                ]
                .iter()
                .any(|w| l.split("] ").any(|part| part.starts_with(w)))
        }),
        ("apk", "apk", "apk.log", |l| {
            l.starts_with('(') && (l.contains(") Installing ") || l.contains(") Purging "))
        }),
    ];

    let mut files = Vec::new();
    let mut expected = std::collections::BTreeMap::new();
    for (dir, manager, part, rule) in rules {
        for entry in fs::read_dir(corpus.join(dir))? {
            let path = entry?.path();
            if !path.to_string_lossy().contains(part) {
                continue;
            }
            let text = String::from_utf8_lossy(&fs::read(&path)?).into_owned();
            *expected.entry(manager).or_insert(0) += count_lines(&text, rule);
            files.push(path);
        }
    }
    // dnf.log names the command of each run dnf.rpm.log records; it has no changes itself.
    for entry in fs::read_dir(corpus.join("dnf"))? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with("__dnf.log") {
            files.push(path);
        }
    }
    // A file that is no log at all is counted as malformed lines, not fatal.
    let garbage = tempfile::NamedTempFile::new()?;
    fs::write(garbage.path(), b"\x00\xff garbage\nmore garbage\n")?;
    files.push(garbage.path().to_path_buf());

    let output = std::process::Command::new(binary()?)
        .arg("replay")
        .args(["--host", "replay-host", "--log-level", "info"])
        .args(&files)
        .env("TZ", "UTC")
        .output()?;
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: Vec<Value> = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut found = std::collections::BTreeMap::new();
    for event in &events {
        let manager = event["manager"].as_str().context("manager is a string")?;
        *found.entry(manager).or_insert(0) += 1;
        assert!(event["parsed_data"]["timestamp"].is_string());
        // Who acted is only what the manager's own log wrote, marked as read from it.
        let actor = &event["actor"];
        if actor.is_null() {
            continue;
        }
        let sources = [
            ("dnf", "dnf-log"),
            ("zypper", "zypp-history"),
            ("pacman", "pacman-log"),
            ("apk", "apk-log"),
        ];
        let source = sources.iter().find(|(m, _)| *m == manager).map(|(_, s)| *s);
        assert_eq!(actor["source"].as_str(), source, "{event:#}");
        assert!(actor["uid"].is_null(), "no log names a uid: {event:#}");
        assert!(actor.get("pid").is_none(), "{event:#}");
    }
    // Every change the corpus logs with a command before it is named by that command.
    let named = |manager: &str, command: &str| {
        events
            .iter()
            .filter(|e| e["manager"] == manager && e["actor"]["command"] == command)
            .count()
    };
    // Each copy of the history: update-alternatives and unzip twice.
    assert_eq!(named("zypper", "zypper install unzip"), 6);
    assert_eq!(
        named("dnf", "yum -C -y --noplugins remove linux-firmware"),
        1
    );
    assert_eq!(named("apk", "apk del glibc-i18n"), 1);
    assert!(named("pacman", "pacman -S --noconfirm lolcat") > 0);
    // The excerpts hold no command record: their two changes are no one's.
    let zypper: Vec<&Value> = events.iter().filter(|e| e["manager"] == "zypper").collect();
    let unnamed = zypper.iter().filter(|e| e["actor"].is_null()).count();
    assert_eq!(unnamed, 2, "{zypper:#?}");
    assert!(
        zypper
            .iter()
            .filter(|e| !e["actor"].is_null())
            .all(|e| e["actor"]["user"] == "root"),
        "zypper's history names root for every run"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["manager"] == "yum")
            .all(|e| e["actor"].is_null()),
        "yum.log names no one"
    );
    assert_eq!(found, expected);
    assert!(events.len() > 500, "only {} events", events.len());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("replay finished"), "{stderr}");
    Ok(())
}
