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
        }
    }

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

/// Tells whether a line of one format records a package change.
type Rule = fn(&str) -> bool;

/// Counts the lines of `text` that `is_change` says record one package change.
fn count_lines(text: &str, is_change: impl Fn(&str) -> bool) -> usize {
    text.lines().filter(|line| is_change(line)).count()
}

#[test]
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
        assert!(event["actor"].is_null(), "{event:#}");
        assert!(event["parsed_data"]["timestamp"].is_string());
    }
    assert_eq!(found, expected);
    assert!(events.len() > 500, "only {} events", events.len());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("replay finished"), "{stderr}");
    Ok(())
}
