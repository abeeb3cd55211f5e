//! The rule engine's cost per event, for the benchmark.
//!
//! In: nothing but the rules of a realistic configuration (the built-in and one more
//! watchlist, address and user whitelists, a host role, lineage, two maintenance windows and
//! SSH correlation over a login history). Out: nanoseconds per evaluated event, several rounds
//! of a mix of events — local and SSH changes, watchlisted, whitelisted and unusual ones —
//! beside the cost of serializing the same events to their JSON line, the work every event
//! costs anyway. State: none kept between calls.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{Local, Utc};
use fenrir_sensor::attribute::history::LoginHistory;
use fenrir_sensor::attribute::ssh::SshCorrelator;
use fenrir_sensor::config::Config;
use fenrir_sensor::event::{Category, Event};
use fenrir_sensor::parse::PackageChange;
use fenrir_sensor::rule::RuleEngine;
use fenrir_sensor::source::ssh::{AuthMethod, SshEvent, SshLogin};
use serde_json::json;

/// Events in the mix evaluated per round.
const EVENTS: usize = 512;
/// Evaluations of the whole mix per round.
const PASSES: usize = 40;
/// Rounds measured, each one sample of the figure.
const ROUNDS: usize = 7;
/// Earlier logins the correlator remembers, so look-ups search a populated history.
const LOGINS: u32 = 200;
/// The first login's sshd; pids this high exist in no `/proc`, so no reuse check drops them.
const SSHD_BASE: u32 = u32::MAX - 10_000;

const RULES: &str = r#"
[rules]
ip_whitelist = ["10.0.0.0/8", "2001:db8::/32", "192.168.0.0/16"]
user_whitelist = ["ansible"]
host_role = "web"

[rules.roles]
web = "LOW"

[rules.correlation]
enabled = true
window_secs = 600

[rules.lineage]
enabled = true

[[rules.watchlist]]
name = "remote-admin"
packages = ["anydesk*", "teamviewer*", "rustdesk*"]
severity = "HIGH"

[[rules.maintenance]]
name = "patch-sunday"
timezone = "Europe/Berlin"
weekly = ["Sun 02:00-04:00"]
action = "lower"
severity = "LOW"

[[rules.maintenance]]
name = "db-migration"
timezone = "UTC"
from = "2026-05-03 10:00"
until = "2026-05-03 18:00"
"#;

/// Nanoseconds per event of the rule engine, and of serializing the event for comparison.
#[derive(Debug, Clone, Default)]
pub struct RuleCost {
    pub evaluate_ns: Vec<f64>,
    pub serialize_ns: Vec<f64>,
}

/// Measures the rule engine's cost per event, one sample per round.
///
/// # Errors
/// Fails when the benchmark's own rule configuration does not load.
pub fn measure() -> anyhow::Result<RuleCost> {
    let config = Config::parse(RULES, Path::new("rule-cost.toml"))
        .context("failed to load the benchmark's rules")?;
    let engine = RuleEngine::new(&config.rules);
    let ssh = correlator(&config);
    let events = event_mix(&ssh);

    let mut cost = RuleCost::default();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..PASSES {
            for event in &events {
                let mut event = event.clone();
                black_box(engine.evaluate(&mut event, Some(&ssh)));
                black_box(&event);
            }
        }
        let clones = clone_cost(&events);
        cost.evaluate_ns
            .push(per_event(started.elapsed().saturating_sub(clones)));

        let started = Instant::now();
        for _ in 0..PASSES {
            for event in &events {
                black_box(event.to_json_line());
            }
        }
        cost.serialize_ns.push(per_event(started.elapsed()));
    }
    Ok(cost)
}

/// Returns what cloning the mix costs over all passes, to take out of the evaluate figure.
fn clone_cost(events: &[Event]) -> Duration {
    let started = Instant::now();
    for _ in 0..PASSES {
        for event in events {
            black_box(event.clone());
        }
    }
    started.elapsed()
}

fn per_event(elapsed: Duration) -> f64 {
    let evaluations = u32::try_from(EVENTS * PASSES).unwrap_or(u32::MAX);
    elapsed.as_secs_f64() * 1e9 / f64::from(evaluations)
}

/// A correlator that has seen many logins, one of them recent and from an unusual address.
fn correlator(config: &Config) -> SshCorrelator {
    let mut ssh = SshCorrelator::detached(
        config.rules.ip_whitelist.clone(),
        LoginHistory::new(10_000, 30 * 86_400),
        Duration::from_mins(20),
    );
    let now = Utc::now().fixed_offset();
    for n in 0..LOGINS {
        let usual = n % 10 != 0;
        let client_ip = if usual {
            IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8])
        } else {
            IpAddr::from([198, 51, 100, (n % 256) as u8])
        };
        ssh.ingest(SshEvent::Login(SshLogin {
            time: now - chrono::Duration::seconds(i64::from(LOGINS - n) * 5),
            user: format!("user{}", n % 16),
            client_ip,
            client_port: 40_000,
            method: AuthMethod::Publickey,
            fingerprint: None,
            sshd_pid: SSHD_BASE + n,
        }));
    }
    ssh
}

/// Changes as a busy host sees them: half over SSH (attributed by `ssh` as the pipeline
/// would before the rules), some watchlisted, some by whitelisted users or from daemons.
fn event_mix(ssh: &SshCorrelator) -> Vec<Event> {
    const NAMES: [&str; 8] = [
        "libc6", "openssl", "nginx", "nmap", "anydesk", "python3", "curl", "socat",
    ];
    let now = Local::now().naive_local();
    (0..EVENTS)
        .map(|n| {
            let change = PackageChange {
                category: if n % 3 == 0 {
                    Category::PackageInstall
                } else {
                    Category::PackageUpgrade
                },
                package: format!("{}-{}", NAMES[n % NAMES.len()], n % 5),
                arch: Some("amd64".into()),
                old_version: (n % 3 != 0).then(|| "1.0-1".into()),
                new_version: Some("1.0-2".into()),
                timestamp: now,
                raw_line: String::new(),
                last_state: None,
                logged_run: None,
            };
            let mut event = Event::from_change(&change, "bench-host", "dpkg");
            let login_user = match n % 4 {
                0 => "ansible".to_owned(),
                _ => format!("user{}", n % 16),
            };
            let parent = if n % 7 == 0 { "nginx" } else { "bash" };
            let over_ssh = n % 2 == 0;
            let sshd = SSHD_BASE + u32::try_from(n).unwrap_or(0) % LOGINS;
            let leader = if over_ssh {
                json!({ "pid": sshd, "comm": "sshd", "uid": 0, "user": "root" })
            } else {
                json!({ "pid": 1, "comm": "systemd", "uid": 0, "user": "root" })
            };
            let session = over_ssh.then(|| json!({ "sshd_pid": sshd }));
            event.actor = Some(json!({
                "pid": 4000 + n,
                "uid": 0,
                "user": "root",
                "euid": 0,
                "loginuid": 1000,
                "login_user": login_user,
                "sessionid": 7,
                "tty": "pts/0",
                "command": "apt-get install -y pkg",
                "dpkg_command": "dpkg --unpack pkg.deb",
                "ancestry": [
                    { "pid": 3000, "comm": "apt-get", "uid": 0, "user": "root" },
                    { "pid": 2000, "comm": "sudo", "uid": 1000, "user": login_user },
                    { "pid": 1500, "comm": parent, "uid": 1000, "user": login_user },
                    leader,
                ],
                "session_leader": leader,
                "ssh": session,
            }));
            ssh.attribute(&mut event);
            event
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_measured_mix_exercises_every_kind_of_rule() {
        let config = Config::parse(RULES, Path::new("rule-cost.toml")).expect("valid rules");
        let engine = RuleEngine::new(&config.rules);
        let ssh = correlator(&config);
        let mut fired = BTreeSet::new();
        for mut event in event_mix(&ssh) {
            engine.evaluate(&mut event, Some(&ssh));
            for rule in event.rules.iter().filter_map(|r| r["rule"].as_str()) {
                fired.insert(rule.split(':').next().unwrap_or(rule).to_owned());
            }
        }
        for kind in [
            "watchlist",
            "lineage",
            "host-role",
            "ssh-unusual-session",
            "ssh-unusual-login",
            "whitelist-user",
            "whitelist-ip",
        ] {
            assert!(fired.contains(kind), "{kind} never fired: {fired:?}");
        }
    }
}
