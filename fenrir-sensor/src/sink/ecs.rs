//! Fenrir's events as Elastic Common Schema documents, for Elasticsearch and its forks.
//!
//! In: an [`Event`]. Out: one ECS document (nested JSON objects, fields of ECS 8.17) that an
//! ingest pipeline can index without a mapping of its own. No state.
//!
//! ECS has a place for most of what Fenrir knows: the package, the change as
//! `event.category: package` with `event.type` installation, change or deletion, who asked
//! for it (`user.*`, the login user when the kernel knew one), the dpkg process and its parent
//! and session leader (`process.*`), the remote address (`source.ip`). What ECS lacks — the
//! old version, Fenrir's own category and severity names, the whole actor with its ancestry,
//! the rules and maintainer-script commands — goes under `fenrir.*`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::event::{Category, Event, Severity};

/// The ECS version whose field names the documents use.
pub const ECS_VERSION: &str = "8.17.0";

/// Returns the ECS document for `event`.
#[must_use]
pub fn document(event: &Event) -> Value {
    let mut doc = Map::new();
    let data = &event.parsed_data;

    doc.insert("@timestamp".into(), json!(utc_timestamp(&data.timestamp)));
    doc.insert("message".into(), json!(event.description));
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    doc.insert("event".into(), event_fields(event));
    doc.insert("log".into(), json!({ "level": log_level(event.severity) }));
    doc.insert("package".into(), package_fields(event));
    doc.insert(
        "host".into(),
        json!({ "name": event.host, "hostname": event.host }),
    );
    doc.insert(
        "observer".into(),
        json!({
            "type": "sensor",
            "vendor": "Fenrir",
            "product": "fenrir-sensor",
            "version": env!("CARGO_PKG_VERSION"),
            "hostname": event.host,
        }),
    );

    if let Some(actor) = &event.actor {
        insert_non_empty(&mut doc, "user", user_fields(actor));
        insert_non_empty(&mut doc, "process", process_fields(actor));
        let related: Vec<&str> = ["login_user", "user"]
            .iter()
            .filter_map(|key| actor[*key].as_str())
            .fold(Vec::new(), |mut names, name| {
                if !names.contains(&name) {
                    names.push(name);
                }
                names
            });
        if !related.is_empty() {
            doc.insert("related".into(), json!({ "user": related }));
        }
    }
    let ip = event.ip.as_deref().or_else(|| {
        event
            .actor
            .as_ref()
            .and_then(|actor| actor["ssh"]["client_ip"].as_str())
    });
    if let Some(ip) = ip {
        doc.insert("source".into(), json!({ "ip": ip }));
    }
    let rule_names: Vec<&str> = event
        .rules
        .iter()
        .filter_map(|rule| rule["rule"].as_str().or_else(|| rule["name"].as_str()))
        .collect();
    if !rule_names.is_empty() {
        doc.insert("rule".into(), json!({ "name": rule_names }));
    }

    doc.insert("fenrir".into(), fenrir_fields(event));
    Value::Object(doc)
}

/// The `event.*` fields: the categorization ECS dashboards and detection rules filter on.
fn event_fields(event: &Event) -> Value {
    let mut fields = Map::new();
    // Raised above its category's default, the event is a rule's verdict, not a plain record.
    let kind = if event.severity > event.category.default_severity() {
        "alert"
    } else {
        "event"
    };
    fields.insert("kind".into(), json!(kind));
    fields.insert("category".into(), json!(["package"]));
    fields.insert("type".into(), json!([event_type(event.category)]));
    fields.insert("action".into(), json!(event.category.as_str()));
    if let Some(outcome) = outcome(event.category) {
        fields.insert("outcome".into(), json!(outcome));
    }
    fields.insert("severity".into(), json!(severity_number(event.severity)));
    fields.insert("risk_score".into(), json!(risk_score(event.severity)));
    fields.insert("module".into(), json!("fenrir"));
    fields.insert("dataset".into(), json!("fenrir.package"));
    fields.insert("provider".into(), json!(event.manager));
    if !event.raw_line.is_empty() {
        fields.insert("original".into(), json!(event.raw_line));
    }
    if let Some(id) = &event.id {
        fields.insert("id".into(), json!(id));
    }
    Value::Object(fields)
}

/// The ECS event type of each category; ECS expects installation, change, deletion or info
/// for `event.category: package`.
fn event_type(category: Category) -> &'static str {
    match category {
        Category::PackageInstall | Category::PackageReinstall | Category::PackageInstallFailed => {
            "installation"
        }
        // The integrity categories: what is on disk differs from what was installed or logged.
        Category::PackageUpgrade
        | Category::PackageDowngrade
        | Category::PackageIntegrityMismatch
        | Category::PackageConffileChanged
        | Category::PackageChangeUnlogged => "change",
        Category::PackageRemove | Category::PackagePurge | Category::PackageDisappear => "deletion",
        Category::PackageScripts | Category::LogTamper => "info",
    }
}

fn outcome(category: Category) -> Option<&'static str> {
    match category {
        Category::PackageInstallFailed => Some("failure"),
        Category::PackageScripts
        | Category::PackageIntegrityMismatch
        | Category::PackageConffileChanged
        | Category::LogTamper
        | Category::PackageChangeUnlogged => None,
        _ => Some("success"),
    }
}

/// Severity as a number that grows with urgency: INFO 1 to CRITICAL 5.
fn severity_number(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// Severity on the 0–100 scale of `event.risk_score`, at the points Elastic's detection
/// rules use for low, medium, high and critical.
fn risk_score(severity: Severity) -> f64 {
    match severity {
        Severity::Info => 0.0,
        Severity::Low => 21.0,
        Severity::Medium => 47.0,
        Severity::High => 73.0,
        Severity::Critical => 99.0,
    }
}

/// The syslog level name of the priority journald stores for the same severity.
fn log_level(severity: Severity) -> &'static str {
    match severity.syslog_priority() {
        2 => "crit",
        3 => "err",
        4 => "warning",
        5 => "notice",
        _ => "info",
    }
}

fn package_fields(event: &Event) -> Value {
    let data = &event.parsed_data;
    let mut fields = Map::new();
    if !data.package.is_empty() {
        fields.insert("name".into(), json!(data.package));
    }
    // The version the package has after the change; a removal names the one that went.
    if let Some(version) = data.new_version.as_ref().or(data.old_version.as_ref()) {
        fields.insert("version".into(), json!(version));
    }
    if let Some(arch) = &data.arch {
        fields.insert("architecture".into(), json!(arch));
    }
    fields.insert("type".into(), json!(package_type(&event.manager)));
    Value::Object(fields)
}

/// The package file type ECS asks for in `package.type`, from the manager that logged it.
fn package_type(manager: &str) -> &str {
    match manager {
        "dpkg" | "apt" => "deb",
        "rpm" | "dnf" | "yum" | "zypper" => "rpm",
        other => other,
    }
}

/// The user behind the change: the login user when the kernel knew one (whoever they became
/// through sudo), else the user dpkg or apt ran as.
fn user_fields(actor: &Value) -> Value {
    let mut fields = Map::new();
    let login = actor["login_user"].as_str().zip(actor["loginuid"].as_u64());
    if let Some((name, uid)) = login {
        fields.insert("name".into(), json!(name));
        fields.insert("id".into(), json!(uid.to_string()));
    } else {
        if let Some(name) = actor["user"].as_str() {
            fields.insert("name".into(), json!(name));
        }
        if let Some(uid) = actor["uid"].as_u64() {
            fields.insert("id".into(), json!(uid.to_string()));
        }
    }
    if let Some(euid) = actor["euid"].as_u64() {
        let mut effective = Map::new();
        effective.insert("id".into(), json!(euid.to_string()));
        if actor["uid"].as_u64() == Some(euid) {
            if let Some(name) = actor["user"].as_str() {
                effective.insert("name".into(), json!(name));
            }
        }
        fields.insert("effective".into(), Value::Object(effective));
    }
    Value::Object(fields)
}

/// The dpkg process that wrote the line, as the kernel saw it start.
fn process_fields(actor: &Value) -> Value {
    let mut fields = Map::new();
    let Some(pid) = actor["pid"].as_u64() else {
        return Value::Object(fields);
    };
    fields.insert("pid".into(), json!(pid));
    if let Some(command) = actor["dpkg_command"].as_str() {
        fields.insert("command_line".into(), json!(command));
        if let Some(program) = command.split(' ').next().filter(|p| p.starts_with('/')) {
            fields.insert("executable".into(), json!(program));
        }
        fields.insert("name".into(), json!(program_name(command)));
    }
    if let Some(euid) = actor["euid"].as_u64() {
        fields.insert("user".into(), json!({ "id": euid.to_string() }));
    }
    if let Some(uid) = actor["uid"].as_u64() {
        let mut real = Map::new();
        real.insert("id".into(), json!(uid.to_string()));
        if let Some(name) = actor["user"].as_str() {
            real.insert("name".into(), json!(name));
        }
        fields.insert("real_user".into(), Value::Object(real));
    }
    fields.insert("interactive".into(), json!(actor["tty"].is_string()));

    if let Some(parent) = actor["ancestry"].get(0) {
        let mut parent_fields = linked_process(parent);
        // The package manager above dpkg is usually its parent: apt runs dpkg itself.
        if let (Some(command), Some(comm)) = (actor["command"].as_str(), parent["comm"].as_str()) {
            if !comm.is_empty() && program_name(command).starts_with(comm) {
                parent_fields.insert("command_line".into(), json!(command));
            }
        }
        fields.insert("parent".into(), Value::Object(parent_fields));
    }
    if let Some(leader) = actor.get("session_leader").filter(|l| l.is_object()) {
        fields.insert(
            "session_leader".into(),
            Value::Object(linked_process(leader)),
        );
    }
    Value::Object(fields)
}

/// A process of the ancestry (`{pid, comm, uid, user}`) as ECS process fields.
fn linked_process(process: &Value) -> Map<String, Value> {
    let mut fields = Map::new();
    if let Some(pid) = process["pid"].as_u64() {
        fields.insert("pid".into(), json!(pid));
    }
    if let Some(comm) = process["comm"].as_str() {
        fields.insert("name".into(), json!(comm));
    }
    if let Some(uid) = process["uid"].as_u64() {
        let mut user = Map::new();
        user.insert("id".into(), json!(uid.to_string()));
        if let Some(name) = process["user"].as_str() {
            user.insert("name".into(), json!(name));
        }
        fields.insert("user".into(), Value::Object(user));
    }
    fields
}

/// The file name of a command line's program: `dpkg` for `/usr/bin/dpkg --unpack …`.
fn program_name(command: &str) -> &str {
    let program = command.split(' ').next().unwrap_or(command);
    program.rsplit('/').next().unwrap_or(program)
}

/// What ECS has no field for, under Fenrir's own names.
fn fenrir_fields(event: &Event) -> Value {
    let data = &event.parsed_data;
    let mut fields = Map::new();
    fields.insert("category".into(), json!(event.category.as_str()));
    fields.insert("severity".into(), json!(event.severity.as_str()));
    fields.insert("source".into(), json!(event.source));
    fields.insert("manager".into(), json!(event.manager));
    for (key, value) in [
        ("old_version", &data.old_version),
        ("new_version", &data.new_version),
        ("last_state", &data.last_state),
    ] {
        if let Some(value) = value {
            fields.insert(key.into(), json!(value));
        }
    }
    fields.insert("log_timestamp".into(), json!(data.timestamp));
    if let Some(actor) = &event.actor {
        fields.insert("actor".into(), actor.clone());
    }
    if !event.rules.is_empty() {
        fields.insert("rules".into(), json!(event.rules));
    }
    if let Some(scripts) = &event.scripts {
        fields.insert("scripts".into(), scripts.clone());
    }
    if let Some(evidence) = &event.evidence {
        fields.insert("evidence".into(), evidence.clone());
    }
    if let Some(observed) = &event.observed {
        fields.insert("observed".into(), json!(observed));
    }
    Value::Object(fields)
}

fn insert_non_empty(doc: &mut Map<String, Value>, key: &str, value: Value) {
    if value.as_object().is_some_and(|o| !o.is_empty()) {
        doc.insert(key.into(), value);
    }
}

/// Renders an RFC 3339 time with offset as UTC with milliseconds, the form Elasticsearch
/// stores; an unparsable text is passed on as it is.
fn utc_timestamp(text: &str) -> String {
    DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_owned(),
        |time| {
            time.with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        },
    )
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::parse::PackageChange;

    fn change(category: Category, old: Option<&str>, new: Option<&str>) -> PackageChange {
        PackageChange {
            category,
            package: "vim".into(),
            arch: Some("amd64".into()),
            old_version: old.map(Into::into),
            new_version: new.map(Into::into),
            timestamp: NaiveDate::from_ymd_opt(2026, 5, 3)
                .and_then(|d| d.and_hms_opt(14, 32, 11))
                .expect("valid time"),
            raw_line: "2026-05-03 14:32:11 upgrade vim:amd64 2:9.0-1 2:9.1-1".into(),
            last_state: None,
            logged_run: None,
        }
    }

    fn kernel_actor() -> Value {
        json!({
            "pid": 29942, "uid": 0, "user": "root", "euid": 0,
            "loginuid": 1000, "login_user": "alice", "sessionid": 8, "tty": "pts0",
            "command": "apt-get install -y vim",
            "dpkg_command": "/usr/bin/dpkg --status-fd 37 --unpack /var/cache/apt/vim.deb",
            "ancestry": [
                {"pid": 29941, "comm": "apt-get", "uid": 0, "user": "root"},
                {"pid": 29912, "comm": "bash", "uid": 1000, "user": "alice"}
            ],
            "session_leader": {"pid": 29912, "comm": "bash", "uid": 1000, "user": "alice"},
            "ssh": null
        })
    }

    #[test]
    fn each_category_maps_to_its_ecs_event_type() {
        let cases = [
            (Category::PackageInstall, "installation", Some("success")),
            (Category::PackageReinstall, "installation", Some("success")),
            (
                Category::PackageInstallFailed,
                "installation",
                Some("failure"),
            ),
            (Category::PackageUpgrade, "change", Some("success")),
            (Category::PackageDowngrade, "change", Some("success")),
            (Category::PackageRemove, "deletion", Some("success")),
            (Category::PackagePurge, "deletion", Some("success")),
            (Category::PackageDisappear, "deletion", Some("success")),
            (Category::PackageScripts, "info", None),
        ];
        for (category, kind, outcome) in cases {
            let event = Event::from_change(&change(category, None, Some("1")), "h", "dpkg");
            let doc = document(&event);
            assert_eq!(doc["event"]["type"], json!([kind]), "{category}");
            assert_eq!(doc["event"]["category"], json!(["package"]));
            assert_eq!(doc["event"]["action"], category.as_str());
            assert_eq!(doc["event"]["outcome"].as_str(), outcome, "{category}");
        }
    }

    #[test]
    fn an_attributed_upgrade_fills_package_user_and_process() {
        let mut event = Event::from_change(
            &change(Category::PackageUpgrade, Some("2:9.0-1"), Some("2:9.1-1")),
            "web-1",
            "dpkg",
        );
        event.actor = Some(kernel_actor());
        let doc = document(&event);

        assert_eq!(doc["@timestamp"].as_str().map(str::len), Some(24));
        assert_eq!(doc["package"]["name"], "vim");
        assert_eq!(doc["package"]["version"], "2:9.1-1");
        assert_eq!(doc["package"]["architecture"], "amd64");
        assert_eq!(doc["package"]["type"], "deb");
        assert_eq!(doc["fenrir"]["old_version"], "2:9.0-1");
        assert_eq!(doc["event"]["kind"], "event");
        assert_eq!(doc["event"]["severity"], 1);
        assert_eq!(doc["log"]["level"], "info");
        assert_eq!(doc["event"]["original"], event.raw_line);

        assert_eq!(doc["user"]["name"], "alice");
        assert_eq!(doc["user"]["id"], "1000");
        assert_eq!(doc["user"]["effective"]["id"], "0");
        assert_eq!(doc["user"]["effective"]["name"], "root");
        assert_eq!(doc["related"]["user"], json!(["alice", "root"]));

        let process = &doc["process"];
        assert_eq!(process["pid"], 29942);
        assert_eq!(process["name"], "dpkg");
        assert_eq!(process["executable"], "/usr/bin/dpkg");
        assert_eq!(process["real_user"]["name"], "root");
        assert_eq!(process["interactive"], true);
        assert_eq!(process["parent"]["pid"], 29941);
        assert_eq!(process["parent"]["name"], "apt-get");
        assert_eq!(process["parent"]["command_line"], "apt-get install -y vim");
        assert_eq!(process["session_leader"]["name"], "bash");
        assert_eq!(process["session_leader"]["user"]["name"], "alice");
        assert_eq!(doc["fenrir"]["actor"], kernel_actor());
    }

    #[test]
    fn a_raised_severity_makes_an_alert_with_its_rules() {
        let mut event =
            Event::from_change(&change(Category::PackageRemove, None, None), "h", "dpkg");
        event.severity = Severity::Critical;
        event.ip = Some("203.0.113.9".into());
        event.rules = vec![json!({"rule": "offhours", "from": "LOW", "to": "CRITICAL"})];
        let doc = document(&event);
        assert_eq!(doc["event"]["kind"], "alert");
        assert_eq!(doc["event"]["severity"], 5);
        assert_eq!(doc["event"]["risk_score"], 99.0);
        assert_eq!(doc["log"]["level"], "crit");
        assert_eq!(doc["source"]["ip"], "203.0.113.9");
        assert_eq!(doc["rule"]["name"], json!(["offhours"]));
        assert!(doc["package"].get("version").is_none());
    }

    #[test]
    fn an_apt_history_actor_names_the_requesting_user() {
        let mut event = Event::from_change(
            &change(Category::PackageInstall, None, Some("1")),
            "h",
            "dpkg",
        );
        event.actor = Some(json!({
            "source": "apt-history", "command": "apt install vim",
            "user": "bob", "uid": 1001, "apt_start": "2026-05-03T14:32:00+00:00"
        }));
        let doc = document(&event);
        assert_eq!(doc["user"]["name"], "bob");
        assert_eq!(doc["user"]["id"], "1001");
        assert!(
            doc.get("process").is_none(),
            "no process without a kernel record"
        );
    }
}
