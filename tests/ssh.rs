//! SSH correlation end to end: a real sshd on loopback, logins with a key from 127.0.0.1 and
//! 127.0.0.2, then `sudo dpkg -i` inside the session. The event names the session's client
//! address, user, method and key, is HIGH for an address the user never came from, and is
//! not when that address is whitelisted — with logins read from the journal and from an
//! auth.log written by a real rsyslog, in both of its timestamp formats.
//!
//! Beyond that: password and keyboard-interactive logins through PAM name their method; a
//! login read only after a change made elsewhere still raises it; a change waiting for its
//! login holds back no other change and survives a crash; a killed `journalctl` is restarted
//! and an auth.log rotated by rename and create keeps being followed.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::journald::{unique_tag, Journald};
use fenrir_tests::sensor::Sensor;
use fenrir_tests::sshd::{Auth, LogTo, Method, Rsyslog, SshServer};
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
    let args = sandbox.run_args(&["--config", &path.display().to_string(), "--host", host]);
    let sensor = Sensor::start_wrapped(wrapper, &args)?;
    if !sensor.stderr().contains("attribution=true") {
        println!("skipping: the sensor runs without its kernel tracer here");
        return Ok(None);
    }
    Ok(Some(sensor))
}

/// An sshd whose logins a real rsyslog writes to its auth.log in RFC 3339 stamps, for the
/// test named `what`; `None` when the test cannot run here (not root, a program missing).
fn server_logging_to_rsyslog(what: &str) -> anyhow::Result<Option<(Rsyslog, SshServer)>> {
    if !require_root(what) {
        return Ok(None);
    }
    let Some(rsyslog) = Rsyslog::start(false)? else {
        return Ok(None);
    };
    let server = SshServer::start(&LogTo::Socket(rsyslog.socket()))?;
    Ok(server.map(|server| (rsyslog, server)))
}

/// Installs `package` through `sudo` in an SSH session from `from`.
fn install_over_ssh(
    server: &SshServer,
    sandbox: &Sandbox,
    from: &str,
    package: &str,
) -> anyhow::Result<()> {
    install_over_ssh_with(server, sandbox, Method::Publickey, from, package)
}

/// Installs `package` through `sudo` in an SSH session from `from`, logged in with `method`.
fn install_over_ssh_with(
    server: &SshServer,
    sandbox: &Sandbox,
    method: Method,
    from: &str,
    package: &str,
) -> anyhow::Result<()> {
    let command = install_command(sandbox, package)?;
    server.login_with(method, from, &command).map(drop)
}

/// Returns the shell command that installs `package` into the sandbox through `sudo`.
fn install_command(sandbox: &Sandbox, package: &str) -> anyhow::Result<String> {
    let deb = sandbox.build(&PackageSpec::new(package, "1.0-1"))?;
    Ok(format!(
        "sudo -n /usr/bin/dpkg --root={} --log={} --force-script-chrootless -i {}",
        sandbox.root().display(),
        sandbox.log().display(),
        deb.display()
    ))
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

/// Checks what every SSH-attributed event of a key login carries.
fn assert_session(event: &Value, server: &SshServer, ip: &str) {
    assert_session_with(event, server, ip, Method::Publickey);
}

/// Checks what every SSH-attributed event carries, for a login with `method`.
fn assert_session_with(event: &Value, server: &SshServer, ip: &str, method: Method) {
    assert_eq!(event["ip"], ip, "{event:#}");
    let actor = &event["actor"];
    assert_eq!(actor["login_user"], server.user(), "{actor:#}");
    assert_eq!(actor["user"], "root", "through sudo");
    let ssh = &actor["ssh"];
    assert_eq!(ssh["client_ip"], ip, "{ssh:#}");
    assert_eq!(ssh["user"], server.user());
    assert_eq!(ssh["method"], method.as_str(), "{ssh:#}");
    assert!(
        ssh["client_port"].as_u64().is_some_and(|p| p > 0),
        "{ssh:#}"
    );
    if method == Method::Publickey {
        assert!(
            ssh["fingerprint"]
                .as_str()
                .is_some_and(|f| f.starts_with("SHA256:")),
            "{ssh:#}"
        );
    } else {
        assert!(ssh["fingerprint"].is_null(), "{ssh:#}");
    }
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

#[test]
fn password_and_keyboard_interactive_logins_name_their_method() -> anyhow::Result<()> {
    if !require_root("the ssh password test") {
        return Ok(());
    }
    let Some(rsyslog) = Rsyslog::start(false)? else {
        return Ok(());
    };
    let Some(server) = SshServer::start_with(&LogTo::Socket(rsyslog.socket()), Auth::Passwords)?
    else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let config = format!(
        "[ssh]\nsource = \"auth-log\"\nauth_log = \"{}\"\npoll_interval_ms = 100\n\
         [sinks.journald]\nenabled = false\n",
        rsyslog.auth_log().display()
    );
    let Some(sensor) = start_sensor(&sandbox, "ssh-password", &config, &[])? else {
        return Ok(());
    };

    for (method, from, package) in [
        (Method::Password, "127.0.0.1", "fenrir-ssh-password"),
        (
            Method::KeyboardInteractive,
            "127.0.0.2",
            "fenrir-ssh-keyboard",
        ),
    ] {
        install_over_ssh_with(&server, &sandbox, method, from, package)?;
        let event = next_install(&sensor, package)?;
        assert_session_with(&event, &server, from, method);
    }

    // sshd took both through PAM: keyboard-interactive is PAM's own conversation.
    let log = fs::read_to_string(rsyslog.auth_log())?;
    let user = server.user();
    assert!(
        log.contains(&format!("Accepted password for {user} from 127.0.0.1")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Accepted keyboard-interactive/pam for {user} from 127.0.0.2"
        )),
        "{log}"
    );
    Ok(())
}

/// Where the late-login tests log in from; the other tests' addresses are whitelisted, so
/// their logins, in a journal shared by every test, raise nothing there.
const LATE_LOGIN_FROM: &str = "127.0.3.3";
const LATE_LOGIN_CONFIG: &str = "[rules]\nip_whitelist = [\"127.0.0.0/24\"]\n";

/// Logs in from an address new to the user, makes a change outside SSH right after, and
/// checks the change is raised for that login although the login is read after the change:
/// the sensor runs with a log delay, which the default leaves off.
fn late_login_case(server: &SshServer, sandbox: &Sandbox, sensor: &Sensor) -> anyhow::Result<()> {
    server.login(LATE_LOGIN_FROM, "true")?;
    sandbox.install(&PackageSpec::new("fenrir-after-a-login", "1.0"))?;
    let event = next_install(sensor, "fenrir-after-a-login")?;
    assert!(
        event["actor"]["ssh"].is_null() || event["actor"]["ssh"]["client_ip"].is_null(),
        "not made over SSH: {event:#}"
    );
    assert_eq!(event["severity"], "HIGH", "{event:#}");
    let rule = event["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == "ssh-unusual-login"))
        .cloned()
        .unwrap_or_default();
    let reason = rule["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(server.user()) && reason.contains(LATE_LOGIN_FROM),
        "{event:#}"
    );
    Ok(())
}

#[test]
fn a_login_read_after_a_change_from_the_journal_still_raises_it() -> anyhow::Result<()> {
    if !require_root("the late login test") {
        return Ok(());
    }
    let Some(_journald) = Journald::shared() else {
        return Ok(());
    };
    let Some(server) = SshServer::start(&LogTo::Journal)? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_sensor(
        &sandbox,
        &unique_tag("ssh-late-journal"),
        &format!("[ssh]\nsource = \"journal\"\nlog_delay_ms = 100\n{LATE_LOGIN_CONFIG}"),
        &[],
    )?
    else {
        return Ok(());
    };
    late_login_case(&server, &sandbox, &sensor)
}

#[test]
fn a_login_read_after_a_change_from_auth_log_still_raises_it() -> anyhow::Result<()> {
    let Some((rsyslog, server)) = server_logging_to_rsyslog("the late login test")? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    // auth.log is read only every 5 s: the change's own wait makes the reader look at once.
    let config = format!(
        "[ssh]\nsource = \"auth-log\"\nauth_log = \"{}\"\npoll_interval_ms = 5000\n\
         log_delay_ms = 100\n\
         [sinks.journald]\nenabled = false\n{LATE_LOGIN_CONFIG}",
        rsyslog.auth_log().display()
    );
    let Some(sensor) = start_sensor(&sandbox, "ssh-late-auth-log", &config, &[])? else {
        return Ok(());
    };
    late_login_case(&server, &sandbox, &sensor)
}

/// A sensor reading an auth.log that never receives the server's logins.
fn start_blind_sensor(
    sandbox: &Sandbox,
    host: &str,
    wait_ms: u64,
) -> anyhow::Result<Option<Sensor>> {
    let auth_log = sandbox.path().join("elsewhere-auth.log");
    if !auth_log.exists() {
        fs::write(&auth_log, "")?;
    }
    let config = format!(
        "[ssh]\nsource = \"auth-log\"\nauth_log = \"{}\"\npoll_interval_ms = 100\n\
         attribution_wait_ms = {wait_ms}\n[sinks.journald]\nenabled = false\n",
        auth_log.display()
    );
    start_sensor(sandbox, host, &config, &[])
}

#[test]
fn a_change_waiting_for_its_login_holds_back_no_other_change() -> anyhow::Result<()> {
    let Some((_rsyslog, server)) = server_logging_to_rsyslog("the held change test")? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_blind_sensor(&sandbox, "ssh-held", 6_000)? else {
        return Ok(());
    };

    install_over_ssh(&server, &sandbox, "127.0.0.1", "fenrir-waits-for-login")?;
    sandbox.install(&PackageSpec::new("fenrir-made-later", "1.0"))?;
    let first = sensor.next_event(WAIT)?;
    assert_eq!(
        first["parsed_data"]["package"], "fenrir-made-later",
        "the later change went first: {first:#}"
    );
    let held = next_install(&sensor, "fenrir-waits-for-login")?;
    // Its login never came: no address, but the kernel's chain still shows the sshd.
    assert_eq!(held["ip"], Value::Null, "{held:#}");
    assert!(held["actor"]["ssh"]["client_ip"].is_null(), "{held:#}");
    assert!(
        held["actor"]["ancestry"]
            .as_array()
            .is_some_and(|chain| chain.iter().any(|a| a["comm"] == "sshd")),
        "{held:#}"
    );
    Ok(())
}

#[test]
fn a_crash_while_a_change_waits_for_its_login_loses_nothing() -> anyhow::Result<()> {
    let Some((_rsyslog, server)) = server_logging_to_rsyslog("the held change crash test")? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_blind_sensor(&sandbox, "ssh-held-crash", 60_000)? else {
        return Ok(());
    };
    install_over_ssh(&server, &sandbox, "127.0.0.1", "fenrir-held-at-crash")?;
    // The safety-net poll saves the checkpoint every second meanwhile.
    thread::sleep(Duration::from_secs(3));
    assert!(
        sensor.drain(Duration::from_millis(100)).is_empty(),
        "still held"
    );
    // Killed without a chance to deliver, as a crash would.
    drop(sensor);

    let Some(restarted) = start_blind_sensor(&sandbox, "ssh-held-crash", 500)? else {
        return Ok(());
    };
    let event = next_install(&restarted, "fenrir-held-at-crash")?;
    assert_eq!(event["parsed_data"]["new_version"], "1.0-1", "{event:#}");
    Ok(())
}

/// Returns the pid of the `journalctl --follow` the sensor `sensor_pid` started.
fn journalctl_child(sensor_pid: u32) -> anyhow::Result<Option<u32>> {
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let parent = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let follows = cmdline.split(|&b| b == 0).any(|arg| arg == b"--follow");
        if comm == "journalctl" && parent == Some(sensor_pid) && follows {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

#[test]
fn a_killed_journalctl_is_restarted_and_later_logins_are_attributed() -> anyhow::Result<()> {
    if !require_root("the journalctl restart test") {
        return Ok(());
    }
    let Some(_journald) = Journald::shared() else {
        return Ok(());
    };
    let Some(server) = SshServer::start(&LogTo::Journal)? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_sensor(
        &sandbox,
        &unique_tag("ssh-journalctl-restart"),
        "[ssh]\nsource = \"journal\"\n[sinks.journald]\nenabled = false\n",
        &[],
    )?
    else {
        return Ok(());
    };
    server.login("127.0.0.1", "true")?;
    wait_for_login(&sensor, server.user(), "127.0.0.1")?;

    let deadline = Instant::now() + WAIT;
    let first = loop {
        if let Some(pid) = journalctl_child(sensor.pid())? {
            break pid;
        }
        anyhow::ensure!(Instant::now() < deadline, "the sensor runs no journalctl");
        thread::sleep(Duration::from_millis(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let restarted = loop {
        match journalctl_child(sensor.pid())? {
            Some(pid) if pid != first => break pid,
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "journalctl was not restarted:\n{}",
            sensor.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        sensor.stderr().contains("journalctl ended; restarting it"),
        "{}",
        sensor.stderr()
    );

    // A login after the restart is read and attributes the change made in its session.
    install_over_ssh(&server, &sandbox, "127.0.0.2", "fenrir-after-restart")?;
    let event = next_install(&sensor, "fenrir-after-restart")?;
    assert_session(&event, &server, "127.0.0.2");
    assert_eq!(journalctl_child(sensor.pid())?, Some(restarted));
    Ok(())
}

#[test]
fn a_rotated_auth_log_is_followed_and_its_sessions_stay_attributed() -> anyhow::Result<()> {
    let Some((rsyslog, server)) = server_logging_to_rsyslog("the auth.log rotation test")? else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let config = format!(
        "[ssh]\nsource = \"auth-log\"\nauth_log = \"{}\"\npoll_interval_ms = 100\n\
         [sinks.journald]\nenabled = false\n",
        rsyslog.auth_log().display()
    );
    let Some(sensor) = start_sensor(&sandbox, "ssh-rotation", &config, &[])? else {
        return Ok(());
    };

    // A session logs in, then changes a package only after the log was rotated.
    let marker = sandbox.path().join("rotated");
    let command = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; {}",
        marker.display(),
        install_command(&sandbox, "fenrir-across-rotation")?
    );
    let mut session = server.spawn_login("127.0.0.1", &command)?;
    wait_for_login(&sensor, server.user(), "127.0.0.1")?;
    let rotated = rsyslog.rotate()?;
    fs::write(&marker, "")?;
    let status = session.wait()?;
    anyhow::ensure!(status.success(), "the session failed: {status}");
    let across = next_install(&sensor, "fenrir-across-rotation")?;
    assert_session(&across, &server, "127.0.0.1");

    // A login after the rotation lands in the new file and is read from it.
    install_over_ssh(&server, &sandbox, "127.0.0.2", "fenrir-after-rotation")?;
    let after = next_install(&sensor, "fenrir-after-rotation")?;
    assert_session(&after, &server, "127.0.0.2");
    let old = fs::read_to_string(&rotated)?;
    let new = fs::read_to_string(rsyslog.auth_log())?;
    assert!(
        old.contains("from 127.0.0.1") && !old.contains("from 127.0.0.2"),
        "{old}"
    );
    assert!(new.contains("from 127.0.0.2"), "{new}");
    assert!(
        sensor.stderr().contains("ssh log rotated"),
        "{}",
        sensor.stderr()
    );
    Ok(())
}
