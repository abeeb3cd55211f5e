//! The sensor as a service: what it tells the service manager over `NOTIFY_SOCKET`, and that
//! the capabilities the shipped unit grants are the ones it needs — no fewer, and that its
//! children get none of them.
//!
//! A real datagram socket stands in for systemd's notification socket: the protocol is one
//! datagram per message, so what the test receives is what systemd would read.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fenrir_tests::dist;
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::sensor::Sensor;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A bound socket playing the service manager's part.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        Self { socket, path }
    }

    /// Returns the next message, or `None` when none comes within `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        let mut buffer = [0_u8; 4096];
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("set read timeout");
        let n = self.socket.recv(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
    }

    /// Returns every message that arrives within `window`.
    fn collect(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut messages = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return messages;
            }
            if let Some(message) = self.next(left) {
                messages.push(message);
            }
        }
    }
}

fn pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| *m == "WATCHDOG=1").count()
}

fn log_only_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--no-journald".into(),
        "--no-ebpf".into(),
        "--host".into(),
        "service-host".into(),
        "--dpkg-log".into(),
        dir.join("dpkg.log").display().to_string(),
        "--dpkg-admindir".into(),
        dir.display().to_string(),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log");
    file.write_all(text.as_bytes()).expect("append to the log");
}

#[test]
fn readiness_watchdog_and_stopping_reach_the_service_manager() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    File::create(dir.path().join("dpkg.log"))?;
    let manager = Manager::bind(dir.path());
    let env = [
        ("NOTIFY_SOCKET", manager.path.as_os_str()),
        // 400 ms: the sensor pings every 200 ms.
        ("WATCHDOG_USEC", OsStr::new("400000")),
    ];
    let sensor = Sensor::start_with(&[], &env, &log_only_args(dir.path(), &[]))?;

    let ready = manager.next(WAIT).expect("READY=1 arrives");
    let log = dir.path().join("dpkg.log");
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=following {}", log.display())
    );

    let running = manager.collect(Duration::from_secs(2));
    assert!(
        pings(&running) >= 4,
        "a 400 ms watchdog gets a ping about every 200 ms: {running:?}"
    );
    assert_eq!(pings(&running), running.len(), "{running:?}");

    let (status, _) = sensor.stop()?;
    assert!(status.success(), "{status}");
    let after = manager.collect(Duration::from_millis(300));
    assert!(
        after.iter().any(|m| m.starts_with("STOPPING=1\n")),
        "STOPPING=1 on SIGTERM: {after:?}"
    );
    Ok(())
}

#[test]
fn a_stalled_pipeline_stops_pinging_and_resumes_when_it_moves_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("dpkg.log");
    File::create(&log)?;
    let fifo = dir.path().join("events.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;

    let manager = Manager::bind(dir.path());
    let env = [
        ("NOTIFY_SOCKET", manager.path.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new("400000")),
    ];
    let fifo_arg = fifo.display().to_string();
    let args = log_only_args(dir.path(), &["--json", &fifo_arg]);
    let _sensor = Sensor::start_with(&[], &env, &args)?;
    assert!(manager.next(WAIT).is_some_and(|m| m.starts_with("READY=1")));
    assert!(pings(&manager.collect(Duration::from_secs(1))) >= 2);

    // The JSON sink opens a FIFO nobody reads: the open blocks, and the loop with it.
    append(
        &log,
        "2026-05-03 14:32:11 remove stall-probe:amd64 1.0-1 <none>\n",
    );
    let _ = manager.collect(Duration::from_millis(700));
    let stalled = manager.collect(Duration::from_millis(1500));
    assert_eq!(
        pings(&stalled),
        0,
        "a stalled loop must not ping: {stalled:?}"
    );

    // Reading on a thread: should the sensor never open the FIFO, the test fails in time.
    let (sender, lines) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = File::open(&path).and_then(|f| BufReader::new(f).read_line(&mut line));
        let _ = sender.send(read.map(|_| line));
    });
    let line = lines.recv_timeout(WAIT)??;
    let event: Value = serde_json::from_str(&line)?;
    assert_eq!(event["parsed_data"]["package"], "stall-probe");
    let moving = manager.collect(Duration::from_secs(1));
    assert!(pings(&moving) >= 2, "pings resume: {moving:?}");
    Ok(())
}

/// Capabilities as `/proc/<pid>/status` shows them.
#[derive(Debug)]
struct CapabilitySets {
    effective: u64,
    ambient: u64,
}

fn capability_sets(pid: u32) -> anyhow::Result<CapabilitySets> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .ok_or_else(|| anyhow::anyhow!("{name} missing"))?;
        Ok(u64::from_str_radix(line.trim(), 16)?)
    };
    Ok(CapabilitySets {
        effective: field("CapEff:")?,
        ambient: field("CapAmb:")?,
    })
}

/// Runs the sensor as `nobody` holding exactly `capabilities`, following `sandbox`.
fn start_unprivileged(sandbox: &Sandbox, capabilities: &[String]) -> anyhow::Result<Sensor> {
    let state = sandbox.path().join("state-nobody");
    fs::create_dir_all(&state)?;
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None)?;
    fs::set_permissions(sandbox.path(), fs::Permissions::from_mode(0o755))?;

    let list = capabilities.iter().fold(String::new(), |mut list, c| {
        list.push_str(",+");
        list.push_str(&c.trim_start_matches("CAP_").to_lowercase());
        list
    });
    let inheritable = format!("--inh-caps=-all{list}");
    let ambient = format!("--ambient-caps=-all{list}");
    let bounding = format!("--bounding-set=-all{list}");
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inheritable,
        &ambient,
        &bounding,
        "--",
    ];
    let args: Vec<String> = vec![
        "run".into(),
        "--no-journald".into(),
        "--host".into(),
        "unit-capabilities".into(),
        "--dpkg-log".into(),
        sandbox.log().display().to_string(),
        "--dpkg-admindir".into(),
        sandbox.admin_dir().display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    Sensor::start_with(&wrapper, &[], &args)
}

fn capability_bit(name: &str) -> u64 {
    match name {
        "CAP_DAC_READ_SEARCH" => 1 << 2,
        "CAP_PERFMON" => 1 << 38,
        "CAP_BPF" => 1 << 39,
        other => panic!("the unit grants {other}, which this test does not know"),
    }
}

/// Installs two packages in one dpkg run whose second postinst sleeps, and returns the event
/// of the first install: it is read while dpkg still runs and holds its lock.
fn install_while_dpkg_runs(sandbox: &Sandbox, sensor: &Sensor) -> anyhow::Result<Value> {
    let first = sandbox.build(&PackageSpec::new("fenrir-cap-first", "1.0-1"))?;
    let slow = sandbox.build(&PackageSpec::new("fenrir-cap-slow", "1.0-1").postinst("sleep 3"))?;
    sandbox.dpkg_ok(&[
        "-i",
        &first.display().to_string(),
        &slow.display().to_string(),
    ])?;
    loop {
        let event = sensor.next_event(WAIT)?;
        if event["parsed_data"]["package"] == "fenrir-cap-first"
            && event["category"] == "package_install"
        {
            return Ok(event);
        }
    }
}

fn unit_capabilities() -> anyhow::Result<Vec<String>> {
    let unit = dist::read_unit()?;
    let granted = dist::values(&unit, "AmbientCapabilities");
    assert_eq!(
        granted,
        dist::values(&unit, "CapabilityBoundingSet"),
        "the unit grants what it bounds"
    );
    Ok(granted)
}

#[test]
fn the_units_capabilities_attribute_a_running_dpkg_and_children_inherit_none() -> anyhow::Result<()>
{
    if !require_root("running the sensor with the unit's capabilities") {
        return Ok(());
    }
    let granted = unit_capabilities()?;
    let sandbox = Sandbox::new()?;
    // The sandbox's log must exist for an unprivileged reader before the first run.
    File::create(sandbox.log())?;
    let sensor = start_unprivileged(&sandbox, &granted)?;
    if sensor.stderr().contains("attribution=false") {
        println!("skipping: the kernel exec tracer does not load on this host");
        return Ok(());
    }

    let sets = capability_sets(sensor.pid())?;
    let wanted = granted
        .iter()
        .map(|c| capability_bit(c))
        .fold(0, |a, b| a | b);
    assert_eq!(sets.effective, wanted, "{sets:?}");
    assert_eq!(sets.ambient, 0, "children of the sensor inherit nothing");

    let event = install_while_dpkg_runs(&sandbox, &sensor)?;
    assert_eq!(
        event["actor"]["dpkg_command"]
            .as_str()
            .map(|c| c.contains("fenrir-cap-slow")),
        Some(true),
        "attributed with only the unit's capabilities: {event:#}"
    );
    Ok(())
}

#[test]
fn without_any_one_of_the_units_capabilities_something_is_lost() -> anyhow::Result<()> {
    if !require_root("running the sensor with fewer capabilities than the unit") {
        return Ok(());
    }
    let granted = unit_capabilities()?;
    let fewer = |dropped: &str| -> Vec<String> {
        assert!(granted.iter().any(|c| c == dropped), "{granted:?}");
        granted.iter().filter(|c| *c != dropped).cloned().collect()
    };

    // The control: with all of them the tracer loads here, or the rest proves nothing.
    let sandbox = Sandbox::new()?;
    File::create(sandbox.log())?;
    if start_unprivileged(&sandbox, &granted)?
        .stderr()
        .contains("attribution=false")
    {
        println!("skipping: the kernel exec tracer does not load on this host");
        return Ok(());
    }

    for dropped in ["CAP_BPF", "CAP_PERFMON"] {
        let sensor = start_unprivileged(&sandbox, &fewer(dropped))?;
        assert!(
            sensor.stderr().contains("attribution=false"),
            "without {dropped} the tracer must not load: {}",
            sensor.stderr()
        );
    }

    // Without CAP_DAC_READ_SEARCH the tracer loads, but dpkg's lock (root, 0640) cannot be
    // asked who holds it, so a line read while its dpkg still runs has no actor.
    let sensor = start_unprivileged(&sandbox, &fewer("CAP_DAC_READ_SEARCH"))?;
    assert!(sensor.stderr().contains("attribution=true"));
    let event = install_while_dpkg_runs(&sandbox, &sensor)?;
    assert!(event["actor"].is_null(), "{event:#}");
    Ok(())
}
