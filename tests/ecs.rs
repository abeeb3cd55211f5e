//! `--format ecs` on real events: a dpkg run traced by the kernel, and a replayed history, come
//! out as Elastic Common Schema documents with the package, the change, the process and the
//! user where ECS keeps them.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::journald::{unique_tag, Journald, SOCKET_PATH};
use fenrir_tests::sensor::{binary, Sensor};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The login uid the dpkg runs of the live test carry: `nobody`, present on every Debian host.
const LOGIN_UID: u32 = 65534;

fn text<'a>(doc: &'a Value, path: &str) -> &'a str {
    path.split('.')
        .fold(doc, |value, key| &value[key])
        .as_str()
        .unwrap_or_else(|| panic!("{path} is text in {doc:#}"))
}

/// Orders severities from INFO to CRITICAL.
fn rank(severity: &Value) -> usize {
    let names = ["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"];
    names
        .iter()
        .position(|name| severity == name)
        .unwrap_or_else(|| panic!("a severity: {severity}"))
}

/// Runs dpkg on the sandbox as root from a session whose audit login uid is `LOGIN_UID`.
fn dpkg_from_a_login(sandbox: &Sandbox, args: &str) -> anyhow::Result<()> {
    let script = format!(
        "echo {LOGIN_UID} > /proc/self/loginuid && exec /usr/bin/dpkg --root={} --log={} \
         --force-script-chrootless {args}",
        sandbox.root().display(),
        sandbox.log().display(),
    );
    let output = Command::new("/bin/sh").args(["-c", &script]).output()?;
    anyhow::ensure!(
        output.status.success(),
        "dpkg {args} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[test]
fn traced_changes_become_ecs_documents_with_package_process_and_user() -> anyhow::Result<()> {
    if !require_root("the ECS end-to-end test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let args = sandbox.run_args(&["--no-journald", "--format", "ecs", "--host", "ecs-host"]);
    let sensor = Sensor::start(&args)?;
    let traced = sensor.stderr().contains("attribution=true");

    let v1 = sandbox.build(&PackageSpec::new("fenrir-ecs", "1.0-1"))?;
    let v2 = sandbox.build(&PackageSpec::new("fenrir-ecs", "1.1-1"))?;
    dpkg_from_a_login(&sandbox, &format!("-i {}", v1.display()))?;
    dpkg_from_a_login(&sandbox, &format!("-i {}", v2.display()))?;
    dpkg_from_a_login(&sandbox, "-r fenrir-ecs")?;
    let docs = sensor.events(3, WAIT)?;

    let log = fs::read_to_string(sandbox.log())?;
    let expected = [
        ("package_install", "installation", "1.0-1"),
        ("package_upgrade", "change", "1.1-1"),
        ("package_remove", "deletion", "1.1-1"),
    ];
    let mut ids = BTreeSet::new();
    for (doc, (action, kind, version)) in docs.iter().zip(expected) {
        // A rule that raised the severity (a package from a local file) makes it an alert.
        let raised = doc["fenrir"]["rules"]
            .as_array()
            .is_some_and(|rules| rules.iter().any(|r| rank(&r["to"]) > rank(&r["from"])));
        let expected_kind = if raised { "alert" } else { "event" };
        assert_eq!(doc["event"]["kind"], expected_kind, "{doc:#}");
        if raised {
            assert!(doc["rule"]["name"].is_array(), "{doc:#}");
        }
        assert_eq!(doc["event"]["category"], serde_json::json!(["package"]));
        assert_eq!(doc["event"]["type"], serde_json::json!([kind]));
        assert_eq!(doc["event"]["action"], action);
        assert_eq!(doc["event"]["outcome"], "success");
        assert_eq!(doc["event"]["provider"], "dpkg");
        assert!(doc["event"]["severity"].is_u64());
        assert!(doc["event"]["risk_score"].is_f64());
        assert!(ids.insert(text(doc, "event.id").to_owned()), "ids differ");
        assert!(text(doc, "@timestamp").ends_with('Z'));
        assert_eq!(doc["ecs"]["version"], "8.17.0");
        assert_eq!(doc["package"]["name"], "fenrir-ecs");
        assert_eq!(doc["package"]["version"], version);
        assert_eq!(doc["package"]["architecture"], "all");
        assert_eq!(doc["package"]["type"], "deb");
        assert_eq!(doc["host"]["name"], "ecs-host");
        assert_eq!(doc["observer"]["product"], "fenrir-sensor");
        assert_eq!(doc["fenrir"]["category"], action);
        assert!(text(doc, "message").contains("fenrir-ecs"));
        let original = text(doc, "event.original");
        assert!(
            log.lines().any(|line| line == original),
            "event.original is a line of the log: {original}"
        );

        if !traced {
            assert!(doc.get("process").is_none() && doc.get("user").is_none());
            continue;
        }
        assert_eq!(doc["user"]["name"], "nobody", "the login user: {doc:#}");
        assert_eq!(doc["user"]["id"], LOGIN_UID.to_string());
        assert_eq!(doc["user"]["effective"]["id"], "0");
        assert_eq!(
            doc["related"]["user"],
            serde_json::json!(["nobody", "root"])
        );
        let process = &doc["process"];
        assert_eq!(process["name"], "dpkg");
        assert_eq!(process["executable"], "/usr/bin/dpkg");
        assert_eq!(process["real_user"]["name"], "root");
        assert_eq!(
            process["pid"], doc["fenrir"]["actor"]["pid"],
            "the dpkg process"
        );
        assert!(text(doc, "process.command_line").contains("--force-script-chrootless"));
        assert!(process["parent"]["pid"].is_u64());
    }
    if !traced {
        println!("skipping: no kernel tracer here; process and user fields were not checked");
    }
    Ok(())
}

/// Replays `file` in `format` and returns one JSON value per line.
fn replay(file: &Path, format: &str) -> anyhow::Result<Vec<Value>> {
    let output = Command::new(binary()?)
        .args([
            "replay",
            "--no-apt-history",
            "--host",
            "replayed",
            "--format",
        ])
        .arg(format)
        .arg(file)
        .output()
        .context("failed to run the replay")?;
    anyhow::ensure!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)?
        .lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

#[test]
fn replayed_histories_keep_every_event_in_ecs() -> anyhow::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/dpkg");
    // Between them: installs, reinstalls, upgrades, removals and installs that failed.
    let files = [
        "fox-it__dissect.target__tests___data__plugins__os__unix__linux__debian__dpkg__dpkg.log",
        "lucchouina__RimRoot_Ubuntu_12.04lts_x86_64__var__log__dpkg.log",
        "Ornias1993__truecommand-dump__var__log__dpkg.log",
    ];
    if !corpus.join(files[0]).exists() {
        println!("skipping: the shared corpus is not at {}", corpus.display());
        return Ok(());
    }
    let mut categories = BTreeSet::new();
    for file in files {
        let path = corpus.join(file);
        let fenrir = replay(&path, "fenrir")?;
        let ecs = replay(&path, "ecs")?;
        assert!(fenrir.len() > 100, "{file}: {} events", fenrir.len());
        assert_eq!(ecs.len(), fenrir.len(), "{file}: one document per event");

        for (event, doc) in fenrir.iter().zip(&ecs) {
            let category = text(event, "category");
            categories.insert(category.to_owned());
            assert_eq!(doc["fenrir"]["category"], category);
            assert_eq!(doc["event"]["action"], category);
            let (kind, outcome) = match category {
                "package_install" | "package_reinstall" => ("installation", "success"),
                "package_install_failed" => ("installation", "failure"),
                "package_upgrade" | "package_downgrade" => ("change", "success"),
                "package_remove" | "package_purge" | "package_disappear" => ("deletion", "success"),
                other => panic!("unexpected category {other}"),
            };
            assert_eq!(doc["event"]["type"], serde_json::json!([kind]));
            assert_eq!(doc["event"]["outcome"], outcome);
            assert_eq!(doc["package"]["name"], event["parsed_data"]["package"]);
            assert_eq!(doc["event"]["original"], event["raw_line"]);
            assert_eq!(doc["message"], event["description"]);
            assert_eq!(
                chrono_utc(text(doc, "@timestamp")),
                chrono_utc(text(event, "parsed_data.timestamp")),
                "the same instant in UTC"
            );
        }
    }
    assert_eq!(categories.len(), 5, "{categories:?}");
    Ok(())
}

/// Parses an RFC 3339 time to seconds since the epoch, with its offset applied.
fn chrono_utc(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|err| panic!("{text} is RFC 3339: {err}"))
        .timestamp()
}

/// Waits until `path` holds at least one JSON line and returns the first.
fn first_line(path: &Path) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            return serde_json::from_str(line).with_context(|| format!("a JSON line: {line}"));
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "nothing written to {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a log-only sensor on the sandbox with the configuration `config`.
fn start_with_config(sandbox: &Sandbox, config: &str) -> anyhow::Result<Sensor> {
    let path = sandbox.path().join("fenrir.toml");
    fs::write(&path, config)?;
    let args = sandbox.run_args(&["--config", &path.display().to_string(), "--no-ebpf"]);
    Sensor::start(&args)
}

#[test]
fn one_output_can_be_ecs_while_another_keeps_fenrirs_schema() -> anyhow::Result<()> {
    if !require_root("the per-output format test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let plain = sandbox.path().join("events.jsonl");
    let ecs = sandbox.path().join("ecs.jsonl");
    let config = format!(
        "[sinks.json]\noutputs = [{plain:?}, {ecs:?}]\n\
         [sinks.json.output_formats]\n{ecs:?} = \"ecs\"\n\
         [sinks.journald]\nenabled = false\n",
        plain = plain.display().to_string(),
        ecs = ecs.display().to_string(),
    );
    let _sensor = start_with_config(&sandbox, &config)?;
    sandbox.install(&PackageSpec::new("fenrir-two-formats", "1.0-1"))?;

    let event = first_line(&plain)?;
    assert_eq!(event["category"], "package_install", "{event:#}");
    assert_eq!(event["parsed_data"]["package"], "fenrir-two-formats");
    let doc = first_line(&ecs)?;
    assert_eq!(text(&doc, "event.action"), "package_install");
    assert_eq!(text(&doc, "package.name"), "fenrir-two-formats");
    assert!(doc["category"].is_null(), "{doc:#}");
    Ok(())
}

#[test]
fn journal_entries_can_carry_ecs_documents_and_keep_their_fields() -> anyhow::Result<()> {
    let Some(journald) = Journald::shared() else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let config = format!(
        "[sinks.json]\noutputs = [\"-\"]\n\
         [sinks.journald]\nsocket = {SOCKET_PATH:?}\nformat = \"ecs\"\n"
    );
    let sensor = start_with_config(&sandbox, &config)?;
    let package = unique_tag("fenrir-ecs-journal");
    sandbox.install(&PackageSpec::new(&package, "1.0-1"))?;
    // The JSON output keeps Fenrir's schema: the journald format is the journal's alone.
    let event = sensor.next_event(WAIT)?;
    assert_eq!(
        event["parsed_data"]["package"],
        package.as_str(),
        "{event:#}"
    );

    let entries = journald.wait_for_entries(&[("FENRIR_PACKAGE", &package)], 1)?;
    let entry = &entries[0];
    let field = |name: &str| {
        entry[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is text in {entry:?}"))
    };
    assert_eq!(field("FENRIR_CATEGORY"), "package_install");
    assert_eq!(field("FENRIR_EVENT_FORMAT"), "ecs");
    let doc: Value = serde_json::from_str(field("FENRIR_EVENT"))?;
    assert_eq!(text(&doc, "package.name"), package);
    assert_eq!(text(&doc, "package.version"), "1.0-1");
    assert_eq!(text(&doc, "event.action"), "package_install");
    assert_eq!(doc["event"]["category"], serde_json::json!(["package"]));
    assert_eq!(
        text(&doc, "event.id"),
        event["id"].as_str().unwrap_or_default()
    );
    Ok(())
}
