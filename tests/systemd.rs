//! The packaged service under a real systemd: a container boots systemd over a copy of this
//! host, the `.deb` is installed in it with dpkg (whose postinst enables and starts the
//! unit), and systemd itself sees the sensor become ready, reports a package change it made,
//! keeps writing through a rotation by the packaged logrotate policy, restarts it when its
//! watchdog stops, and stops it cleanly. The kernel confirms that the state directory is the
//! one place the confined sensor can write.
//!
//! Everything the unit asks of the kernel — the dynamic user, the capabilities, the syscall
//! filter, the read-only file system — is applied by systemd here, not imitated.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fenrir_tests::container::{unavailable, Container};
use fenrir_tests::dpkg::{PackageSpec, Sandbox};
use serde_json::Value;

const UNIT: &str = "fenrir.service";
const WAIT: Duration = Duration::from_secs(30);

/// A shorter watchdog than the shipped 30 s, so a restart is seen within the test.
const WATCHDOG_DROP_IN: &str = "[Service]\nWatchdogSec=3s\n";

/// Waits until `done`, failing after `WAIT` with what systemd says about the unit.
fn wait_until(
    container: &Container,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done()? {
        if Instant::now() > deadline {
            let status = container.exec(&["systemctl", "status", "--no-pager", "-l", UNIT])?;
            let journal = container.exec(&["journalctl", "-u", UNIT, "--no-pager"])?;
            anyhow::bail!(
                "timed out waiting for {what}:\n{}\n{}",
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The capability sets of a process inside the container, from its `/proc` status.
fn status_field(container: &Container, pid: &str, field: &str) -> anyhow::Result<String> {
    let status = container.exec_ok(&["cat", &format!("/proc/{pid}/status")])?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|value| value.trim().to_owned())
        .with_context(|| format!("{field} missing for pid {pid}"))
}

/// The packaged configuration's JSON output, inside the unit's state directory.
const EVENTS: &str = "/var/lib/fenrir/events.jsonl";

fn events(container: &Container) -> anyhow::Result<Vec<Value>> {
    events_in(container, EVENTS)
}

fn events_in(container: &Container, path: &str) -> anyhow::Result<Vec<Value>> {
    let text = container.exec_ok(&["cat", path])?;
    text.lines()
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

/// Boots a container with the package and a probe package in `/root`, and a short watchdog.
fn container_with_package(deb: &Path, sandbox: &Sandbox) -> anyhow::Result<Container> {
    let mut container = Container::prepare()?;
    let root = container.root();
    fs::copy(deb, root.join("root/fenrir.deb"))?;
    let probe = sandbox.build(&PackageSpec::new("fenrir-unit-probe", "1.0-1"))?;
    fs::copy(&probe, root.join("root/probe.deb"))?;
    let drop_in = root.join("etc/systemd/system/fenrir.service.d");
    fs::create_dir_all(&drop_in)?;
    fs::write(drop_in.join("watchdog.conf"), WATCHDOG_DROP_IN)?;
    // This host's own policy forbids maintainer scripts to start services; the container
    // plays a host without one, so dpkg's postinst starts the unit as on any Debian system.
    let policy = root.join("usr/sbin/policy-rc.d");
    if policy.exists() {
        fs::remove_file(&policy)?;
    }
    // nspawn keeps the kernel tracer's capabilities and bpf() from its containers by default.
    container.boot(&["CAP_BPF", "CAP_PERFMON"], &["bpf"])?;
    Ok(container)
}

/// Checks the running unit as systemd sees it and returns the sensor's pid.
fn assert_ready_and_confined(container: &Container) -> anyhow::Result<String> {
    assert_eq!(
        container
            .exec_ok(&["systemctl", "is-enabled", UNIT])?
            .trim(),
        "enabled"
    );
    wait_until(container, "the service to be active", || {
        Ok(container.property(UNIT, "ActiveState")? == "active")
    })?;
    assert_eq!(container.property(UNIT, "Type")?, "notify");
    assert_eq!(
        container.property(UNIT, "StatusText")?,
        "following /var/log/dpkg.log"
    );
    assert_eq!(container.property(UNIT, "WatchdogUSec")?, "3s");

    let pid = container.property(UNIT, "MainPID")?;
    let uid = status_field(container, &pid, "Uid:")?;
    assert_ne!(uid.split_whitespace().next(), Some("0"), "a dynamic user");
    // CAP_DAC_READ_SEARCH (bit 2), CAP_PERFMON (38), CAP_BPF (39); nothing for children.
    assert_eq!(
        status_field(container, &pid, "CapEff:")?,
        "000000c000000004"
    );
    assert_eq!(
        status_field(container, &pid, "CapAmb:")?,
        "0000000000000000"
    );
    let journal = container.exec_ok(&["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"])?;
    assert!(
        journal.contains("attribution=true"),
        "the kernel tracer loads under the unit:\n{journal}"
    );
    Ok(pid)
}

/// Checks that the sensor's state directory is the one place it can write: kernel interfaces
/// and the service's private temporary directories aside, every mount the sensor sees is
/// read-only or hidden under one that is. The kernel itself answers, from inside the unit's
/// mount namespace: `access(W_OK)` fails with EROFS on a read-only mount even for root.
fn assert_only_state_writable(container: &Container, pid: &str) -> anyhow::Result<()> {
    const KERNEL_INTERFACES: [&str; 7] = [
        "proc",
        "sysfs",
        "devpts",
        "mqueue",
        "hugetlbfs",
        "cgroup",
        "cgroup2",
    ];
    let table = container.exec_ok(&["cat", &format!("/proc/{pid}/mountinfo")])?;
    // id parent dev root mount-point options [optional...] - type source super-options
    let mut mounts = Vec::new();
    for line in table.lines() {
        let (mount, rest) = line.split_once(" - ").context("a mountinfo line")?;
        let fields: Vec<&str> = mount.split(' ').collect();
        let fs_type = rest.split(' ').next().unwrap_or_default();
        mounts.push((fields[3], fields[4], fields[5], fs_type));
    }
    let private: BTreeSet<&str> = mounts
        .iter()
        .filter(|(root, ..)| root.contains("/systemd-private-"))
        .map(|(_, point, ..)| *point)
        .collect();
    let mut writable = BTreeSet::new();
    for (_, point, options, fs_type) in mounts {
        if !options.split(',').any(|o| o == "rw")
            || KERNEL_INTERFACES.contains(&fs_type)
            || private.contains(point)
        {
            continue;
        }
        let probe =
            container.exec(&["nsenter", "--target", pid, "--mount", "test", "-w", point])?;
        if probe.status.success() {
            writable.insert(point.to_owned());
        }
    }
    assert_eq!(
        writable.into_iter().collect::<Vec<_>>(),
        ["/var/lib/private/fenrir"],
        "{table}"
    );
    Ok(())
}

/// Installs the probe package in the container and waits for its event in the JSON file and
/// the container's journal.
fn assert_change_reported(container: &Container) -> anyhow::Result<()> {
    container.exec_ok(&["dpkg", "-i", "/root/probe.deb"])?;
    let probe = |events: &[Value]| {
        events
            .iter()
            .find(|e| e["parsed_data"]["package"] == "fenrir-unit-probe")
            .cloned()
    };
    wait_until(container, "the probe's event", || {
        Ok(probe(&events(container).unwrap_or_default()).is_some())
    })?;
    let event = probe(&events(container)?).context("the probe's event")?;
    assert_eq!(event["category"], "package_install");
    // The container's root is an overlay of the host's: the kernel program sees the real file
    // behind /usr/bin/dpkg there, not the overlay's, and does not recognise it (a TODO of the
    // loader). On the host the unit's capabilities attribute changes (tests/service.rs).
    println!("actor in the container: {}", event["actor"]);
    wait_until(container, "the probe's journal entry", || {
        let entries = container.exec_ok(&[
            "journalctl",
            "--no-pager",
            "-o",
            "json",
            "FENRIR_PACKAGE=fenrir-unit-probe",
        ])?;
        Ok(entries.contains("package_install"))
    })
}

/// Rotates the JSON output with the packaged logrotate policy, removes the probe, and checks
/// that the removal lands in a new file the sensor made, with the rotated file left whole.
fn assert_rotation_followed(container: &Container) -> anyhow::Result<()> {
    container.exec_ok(&[
        "logrotate",
        "--force",
        "--state",
        "/tmp/logrotate.state",
        "/etc/logrotate.d/fenrir",
    ])?;
    container.exec_ok(&["dpkg", "-r", "fenrir-unit-probe"])?;
    let removed = |events: &[Value]| {
        events.iter().any(|e| {
            e["parsed_data"]["package"] == "fenrir-unit-probe" && e["category"] == "package_remove"
        })
    };
    wait_until(container, "the removal in the new file", || {
        Ok(removed(&events(container).unwrap_or_default()))
    })?;
    let rotated = events_in(container, &format!("{EVENTS}.1"))?;
    assert!(
        rotated.iter().any(|e| e["category"] == "package_install"),
        "the install stays in the rotated file: {rotated:?}"
    );
    assert!(!removed(&rotated), "the removal went to the new file only");
    let current = events(container)?;
    assert!(
        current.iter().all(|e| e["category"] != "package_install"),
        "nothing written twice: {current:?}"
    );
    let owner = container.exec_ok(&["stat", "-c", "%U", EVENTS])?;
    assert_ne!(
        owner.trim(),
        "root",
        "the sensor made the new file as its own user"
    );
    Ok(())
}

#[test]
fn the_packaged_unit_runs_under_systemd() -> anyhow::Result<()> {
    if let Some(reason) = unavailable() {
        println!("skipping: {reason}");
        return Ok(());
    }
    let Some(deb) = std::env::var_os("FENRIR_DEB") else {
        println!("skipping: FENRIR_DEB names no package; `cargo xtask test` builds one");
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let container = container_with_package(Path::new(&deb), &sandbox)?;

    // dpkg's postinst enables and starts the unit; start returns once READY=1 arrived.
    container.exec_ok(&["dpkg", "-i", "/root/fenrir.deb"])?;
    let pid = assert_ready_and_confined(&container)?;
    assert_only_state_writable(&container, &pid)?;
    assert_change_reported(&container)?;
    assert_rotation_followed(&container)?;

    // A sensor that stops answering is killed by the watchdog and started again.
    container.exec_ok(&["kill", "-STOP", &pid])?;
    wait_until(&container, "the watchdog to restart the sensor", || {
        Ok(container.property(UNIT, "NRestarts")? == "1"
            && container.property(UNIT, "ActiveState")? == "active")
    })?;
    assert_ne!(container.property(UNIT, "MainPID")?, pid);
    let journal = container.exec_ok(&["journalctl", "-u", UNIT, "--no-pager"])?;
    assert!(journal.contains("Watchdog timeout"), "{journal}");

    let analysis = container.exec(&["systemd-analyze", "security", "--no-pager", UNIT])?;
    let report = String::from_utf8_lossy(&analysis.stdout);
    if let Some(line) = report.lines().find(|l| l.contains("Overall exposure")) {
        println!("in the container: {line}");
    }
    let verify = container.exec(&["systemd-analyze", "verify", "--man=no", UNIT])?;
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    container.exec_ok(&["systemctl", "stop", UNIT])?;
    assert_eq!(container.property(UNIT, "ActiveState")?, "inactive");
    assert_eq!(container.property(UNIT, "Result")?, "success");
    let journal = container.exec_ok(&["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"])?;
    assert!(journal.contains("sensor stopped"), "{journal}");
    let checkpoints = container.root().join("var/lib/private/fenrir/checkpoints");
    assert!(checkpoints.is_dir(), "state lands in the state directory");
    Ok(())
}
