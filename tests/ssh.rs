//! SSH correlation end to end: a real sshd on loopback, logins with a key from 127.0.0.1 and
//! 127.0.0.2, then `sudo dpkg -i` inside the session. The event names the session's client
//! address, user, method and key, is HIGH for an address the user never came from, and is
//! not when that address is whitelisted — with logins read from the journal and from an
//! auth.log written by a real rsyslog, in both of its timestamp formats.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::journald::{unique_tag, Journald};
use fenrir_tests::sensor::Sensor;
use fenrir_tests::sshd::{LogTo, Rsyslog, SshServer};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The correlation window the tests use, so a learning login's window has passed before the
/// change that is judged.
const WINDOW_SECS: u64 = 2;

fn start_sensor(
    sandbox: &Sandbox,
    host: &str,
    config: &str,
    wrapper: &[&str],
) -> anyhow::Result<Option<Sensor>> {
    let path = sandbox.path().join("fenrir.toml");
    fs::write(&path, config)?;
    let args: Vec<String> = [
        "run",
        "--config",
        &path.display().to_string(),
        "--host",
        host,
        "--dpkg-log",
        &sandbox.log().display().to_string(),
        "--dpkg-admindir",
        &sandbox.admin_dir().display().to_string(),
        "--state-dir",
        &sandbox.path().join("state").display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let sensor = Sensor::start_wrapped(wrapper, &args)?;
    if !sensor.stderr().contains("attribution=true") {
        println!("skipping: the sensor runs without its kernel tracer here");
        return Ok(None);
    }
    Ok(Some(sensor))
}

/// Installs `package` through `sudo` in an SSH session from `from`.
fn install_over_ssh(
    server: &SshServer,
    sandbox: &Sandbox,
    from: &str,
    package: &str,
) -> anyhow::Result<()> {
    let deb = sandbox.build(&PackageSpec::new(package, "1.0-1"))?;
    let command = format!(
        "sudo -n /usr/bin/dpkg --root={} --log={} --force-script-chrootless -i {}",
        sandbox.root().display(),
        sandbox.log().display(),
        deb.display()
    );
    server.login(from, &command).map(drop)
}

/// Waits until the sensor has read a login of `user` from `ip`.
fn wait_for_login(sensor: &Sensor, user: &str, ip: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let seen = sensor.stderr().lines().any(|l| {
            l.contains("ssh login") && l.contains(user) && l.contains(&format!("ip={ip}"))
        });
        if seen {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!(
        "the sensor never read the login from {ip}:\n{}",
        sensor.stderr()
    )
}

fn next_install(sensor: &Sensor, package: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = sensor.next_event(left)?;
        if event["category"] == "package_install" && event["parsed_data"]["package"] == package {
            return Ok(event);
        }
    }
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

/// Checks what every SSH-attributed event carries.
fn assert_session(event: &Value, server: &SshServer, ip: &str) {
    assert_eq!(event["ip"], ip, "{event:#}");
    let actor = &event["actor"];
    assert_eq!(actor["login_user"], server.user(), "{actor:#}");
    assert_eq!(actor["user"], "root", "through sudo");
    let ssh = &actor["ssh"];
    assert_eq!(ssh["client_ip"], ip, "{ssh:#}");
    assert_eq!(ssh["user"], server.user());
    assert_eq!(ssh["method"], "publickey");
    assert!(
        ssh["client_port"].as_u64().is_some_and(|p| p > 0),
        "{ssh:#}"
    );
    assert!(
        ssh["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")),
        "{ssh:#}"
    );
    assert!(ssh["login_time"].is_string(), "{ssh:#}");
    // The monitor process that logged the login is an ancestor of the session's dpkg.
    let sshd_pid = ssh["sshd_pid"].clone();
    assert!(
        actor["ancestry"].as_array().is_some_and(|chain| chain
            .iter()
            .any(|a| a["pid"] == sshd_pid && a["comm"] == "sshd")),
        "{actor:#}"
    );
}

#[test]
fn logins_from_the_journal_attribute_changes_and_raise_a_first_seen_address() -> anyhow::Result<()>
{
    if !require_root("the ssh journal test") {
        return Ok(());
    }
    let Some(journald) = Journald::shared() else {
        return Ok(());
    };
    let Some(server) = SshServer::start(&LogTo::Journal)? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let host = unique_tag("ssh-journal");
    let hook_out = sandbox.path().join("hook.jsonl");
    let config = format!(
        "[ssh]\nsource = \"journal\"\n[rules.correlation]\nwindow_secs = {WINDOW_SECS}\n\
         [hooks.exec]\ncommand = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n",
        hook_out.display()
    );
    let Some(sensor) = start_sensor(&sandbox, &host, &config, &[])? else {
        return Ok(());
    };

    // The first login teaches the sensor that this user comes from 127.0.0.1.
    server.login("127.0.0.1", "true")?;
    wait_for_login(&sensor, server.user(), "127.0.0.1")?;
    thread::sleep(Duration::from_secs(WINDOW_SECS + 1));

    install_over_ssh(&server, &sandbox, "127.0.0.1", "fenrir-ssh-known")?;
    let known = next_install(&sensor, "fenrir-ssh-known")?;
    assert_session(&known, &server, "127.0.0.1");
    assert_eq!(known["actor"]["ssh"]["unusual_ip"], false);
    assert_ne!(known["severity"], "HIGH", "{known:#}");
    assert!(
        !rule_names(&known).iter().any(|r| r.starts_with("ssh-")),
        "{known:#}"
    );

    install_over_ssh(&server, &sandbox, "127.0.0.2", "fenrir-ssh-first-seen")?;
    let first_seen = next_install(&sensor, "fenrir-ssh-first-seen")?;
    assert_session(&first_seen, &server, "127.0.0.2");
    assert_eq!(first_seen["severity"], "HIGH", "{first_seen:#}");
    assert!(
        rule_names(&first_seen).contains(&"ssh-unusual-session".to_owned()),
        "{first_seen:#}"
    );

    // The exec hook got the HIGH event, once, and its outcome is in the journal.
    let deadline = Instant::now() + WAIT;
    while !fs::read_to_string(&hook_out).is_ok_and(|t| t.contains("fenrir-ssh-first-seen")) {
        anyhow::ensure!(Instant::now() < deadline, "the exec hook got nothing");
        thread::sleep(Duration::from_millis(100));
    }
    let entries = journald.wait_for_entries(
        &[
            ("FENRIR_HOST", &host),
            ("FENRIR_HOOK", "exec"),
            ("FENRIR_HOOK_OUTCOME", "delivered"),
        ],
        1,
    )?;
    assert_eq!(entries[0]["FENRIR_PACKAGE"], "fenrir-ssh-first-seen");
    thread::sleep(Duration::from_secs(1));
    let received: Vec<Value> = fs::read_to_string(&hook_out)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("the hook's input is JSON lines")?;
    assert_eq!(received.len(), 1, "exactly once: {received:#?}");
    assert_eq!(
        received[0]["parsed_data"]["package"],
        "fenrir-ssh-first-seen"
    );
    assert_eq!(received[0]["ip"], "127.0.0.2");
    Ok(())
}

/// Runs the auth.log variant; `traditional` selects rsyslog's timestamp format and whether
/// the whitelist comes from the `IP_WHITELIST` environment variable instead of the file.
fn auth_log_case(traditional: bool) -> anyhow::Result<()> {
    let Some(rsyslog) = Rsyslog::start(traditional)? else {
        return Ok(());
    };
    let Some(server) = SshServer::start(&LogTo::Socket(rsyslog.socket()))? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let whitelist = if traditional {
        String::new()
    } else {
        "ip_whitelist = [\"127.0.0.2/32\"]\n".to_owned()
    };
    let config = format!(
        "[ssh]\nsource = \"auth-log\"\nauth_log = \"{}\"\npoll_interval_ms = 100\n[sinks.journald]\n\
         enabled = false\n[rules]\n{whitelist}[rules.correlation]\nwindow_secs = {WINDOW_SECS}\n",
        rsyslog.auth_log().display()
    );
    let wrapper: &[&str] = if traditional {
        &["env", "IP_WHITELIST=[\"127.0.0.2\"]"]
    } else {
        &[]
    };
    let Some(sensor) = start_sensor(&sandbox, "ssh-auth-log", &config, wrapper)? else {
        return Ok(());
    };

    // A first-ever start has no history: the user's very first address is unusual.
    install_over_ssh(&server, &sandbox, "127.0.0.1", "fenrir-authlog-first")?;
    let first = next_install(&sensor, "fenrir-authlog-first")?;
    assert_session(&first, &server, "127.0.0.1");
    assert_eq!(first["severity"], "HIGH", "{first:#}");
    assert!(rule_names(&first).contains(&"ssh-unusual-session".to_owned()));
    thread::sleep(Duration::from_secs(WINDOW_SECS + 1));

    // 127.0.0.2 was never seen either, but it is whitelisted.
    install_over_ssh(&server, &sandbox, "127.0.0.2", "fenrir-authlog-whitelisted")?;
    let whitelisted = next_install(&sensor, "fenrir-authlog-whitelisted")?;
    assert_session(&whitelisted, &server, "127.0.0.2");
    assert_eq!(whitelisted["actor"]["ssh"]["unusual_ip"], false);
    assert_ne!(whitelisted["severity"], "HIGH", "{whitelisted:#}");
    let names = rule_names(&whitelisted);
    assert!(
        !names.iter().any(|r| r.starts_with("ssh-")),
        "{whitelisted:#}"
    );
    assert!(
        names.contains(&"whitelist-ip".to_owned()),
        "{whitelisted:#}"
    );

    let log = fs::read_to_string(rsyslog.auth_log())?;
    let stamp_is_traditional = log.lines().all(|l| !l.starts_with("20"));
    assert_eq!(
        stamp_is_traditional, traditional,
        "rsyslog's format:\n{log}"
    );
    assert!(Path::new(&sandbox.path().join("state/ssh/history.json")).exists());
    Ok(())
}

#[test]
fn logins_from_an_rsyslog_auth_log_with_rfc3339_stamps_are_judged() -> anyhow::Result<()> {
    if !require_root("the ssh auth.log test") {
        return Ok(());
    }
    auth_log_case(false)
}

#[test]
fn logins_from_a_traditional_auth_log_honour_the_environment_whitelist() -> anyhow::Result<()> {
    if !require_root("the ssh auth.log test") {
        return Ok(());
    }
    auth_log_case(true)
}
