//! Who did it: with the kernel exec tracer loaded, every event names the dpkg run that wrote its
//! line, the login behind it, and the chain of processes in between — through a change of user
//! and a setuid step, as `sudo` would do it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use fenrir_tests::dpkg::{require_root, PackageSpec, Sandbox};
use fenrir_tests::sensor::Sensor;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The uid the test's login session belongs to: `nobody`, present on every Debian host.
const LOGIN_UID: u32 = 65534;

fn sensor_args(sandbox: &Sandbox) -> Vec<String> {
    sandbox.run_args(&["--no-journald", "--host", "attribution-host"])
}

/// Starts the sensor without its kernel tracer (`--no-ebpf`).
fn start_log_only(sandbox: &Sandbox) -> anyhow::Result<Sensor> {
    let mut args = sensor_args(sandbox);
    args.push("--no-ebpf".to_owned());
    Sensor::start(&args)
}

/// Starts the sensor with the tracer, or prints why the test cannot run here.
fn start_with_tracer(sandbox: &Sandbox) -> anyhow::Result<Option<Sensor>> {
    let sensor = Sensor::start(&sensor_args(sandbox))?;
    if !sensor.stderr().contains("attribution=true") {
        println!(
            "skipping: the sensor runs without its kernel tracer here:\n{}",
            sensor.stderr()
        );
        return Ok(None);
    }
    Ok(Some(sensor))
}

/// Builds a setuid-root program that runs its arguments as root, the step `sudo` makes.
fn build_setuid_helper(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let source = dir.join("become-root.c");
    fs::write(
        &source,
        "#include <unistd.h>\n\
         int main(int argc, char **argv) {\n\
           (void)argc;\n\
           if (setgid(0) != 0 || setuid(0) != 0) return 126;\n\
           execv(argv[1], argv + 1);\n\
           return 127;\n\
         }\n",
    )?;
    let helper = dir.join("become-root");
    let status = Command::new("gcc")
        .arg("-o")
        .arg(&helper)
        .arg(&source)
        .status()?;
    if !status.success() {
        bail!("gcc failed to build the setuid helper");
    }
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o4755))?;
    Ok(helper)
}

#[test]
fn events_name_the_login_user_command_and_process_chain() -> anyhow::Result<()> {
    if !require_root("the attribution test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_with_tracer(&sandbox)? else {
        return Ok(());
    };

    // Everything the unprivileged user runs must be reachable for it.
    let tools = tempfile::Builder::new().prefix("fenrir-attr-").tempdir()?;
    fs::set_permissions(tools.path(), fs::Permissions::from_mode(0o755))?;
    let become_root = build_setuid_helper(tools.path())?;
    // A shell under a name of its own marks the user's session in the ancestry.
    let marker = tools.path().join("fenrir-marker-shell");
    fs::copy("/bin/dash", &marker)?;
    let deb = sandbox.build(&PackageSpec::new("fenrir-attributed", "1.0-1"))?;
    fs::set_permissions(
        deb.parent().context("deb has a folder")?,
        fs::Permissions::from_mode(0o755),
    )?;
    fs::set_permissions(&deb, fs::Permissions::from_mode(0o644))?;

    let dpkg = format!(
        "{} /usr/bin/dpkg --root={} --log={} --force-script-chrootless -i {}",
        become_root.display(),
        sandbox.root().display(),
        sandbox.log().display(),
        deb.display()
    );
    // A login sets the audit loginuid; it survives the change to nobody and back to root.
    let script = format!(
        "echo {LOGIN_UID} > /proc/self/loginuid && exec setpriv --reuid={LOGIN_UID} \
         --regid={LOGIN_UID} --clear-groups -- {} -c '{dpkg}'",
        marker.display()
    );
    let output = Command::new("/bin/sh").args(["-c", &script]).output()?;
    assert!(
        output.status.success(),
        "dpkg through the login chain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let event = sensor.events(1, WAIT)?.remove(0);
    assert_eq!(event["category"], "package_install");
    let actor = &event["actor"];
    assert!(actor.is_object(), "no actor: {event:#}");
    assert_eq!(actor["uid"], 0);
    assert_eq!(actor["user"], "root");
    assert_eq!(actor["loginuid"], LOGIN_UID);
    assert_eq!(actor["login_user"], "nobody");
    assert!(actor["sessionid"].is_u64(), "a login session id: {actor:#}");
    assert!(actor["pid"].as_u64().is_some_and(|pid| pid > 1));

    let command = actor["dpkg_command"].as_str().unwrap_or_default();
    assert!(command.starts_with("/usr/bin/dpkg --root="), "{command}");
    assert!(
        command.contains(" -i ") && command.ends_with("fenrir-attributed_1.0-1_all.deb"),
        "{command}"
    );
    assert_eq!(
        actor["command"], actor["dpkg_command"],
        "no package manager above dpkg"
    );

    let ancestry = actor["ancestry"].as_array().context("ancestry is a list")?;
    let marker_entry = ancestry
        .iter()
        .find(|a| a["comm"] == "fenrir-marker-s")
        .with_context(|| format!("the marker shell is not in the ancestry: {ancestry:#?}"))?;
    assert_eq!(marker_entry["uid"], LOGIN_UID);
    assert_eq!(marker_entry["user"], "nobody");
    assert!(actor["ssh"].is_null());
    Ok(())
}

/// Writes an apt configuration that installs into `sandbox` and touches nothing of the host.
fn sandbox_apt_config(sandbox: &Sandbox) -> anyhow::Result<std::path::PathBuf> {
    let apt = sandbox.path().join("apt");
    for dir in [
        "cache/archives/partial",
        "state/lists/partial",
        "sources.list.d",
    ] {
        fs::create_dir_all(apt.join(dir))?;
    }
    // apt's history beside dpkg's log, as Debian lays out /var/log.
    let history_dir = sandbox.log().with_file_name("apt");
    fs::create_dir_all(&history_dir)?;
    fs::write(apt.join("sources.list"), "")?;
    let config = apt.join("apt.conf");
    fs::write(
        &config,
        format!(
            "Dir::State::status \"{status}\";\n\
             Dir::Cache \"{apt}/cache\";\n\
             Dir::State \"{apt}/state\";\n\
             Dir::Log \"{history}\";\n\
             Dir::Etc::SourceList \"{apt}/sources.list\";\n\
             Dir::Etc::SourceParts \"{apt}/sources.list.d\";\n\
             APT::Sandbox::User \"root\";\n\
             DPkg::Options {{ \"--root={root}\"; \"--log={log}\"; \"--force-script-chrootless\"; }};\n",
            status = sandbox.admin_dir().join("status").display(),
            apt = apt.display(),
            history = history_dir.display(),
            root = sandbox.root().display(),
            log = sandbox.log().display(),
        ),
    )?;
    Ok(config)
}

#[test]
fn apt_get_runs_are_attributed_to_the_apt_command() -> anyhow::Result<()> {
    if !require_root("the apt attribution test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_with_tracer(&sandbox)? else {
        return Ok(());
    };
    let deb = sandbox.build(&PackageSpec::new("fenrir-via-apt", "2.0-1"))?;
    let local = sandbox.path().join("fenrir-via-apt.deb");
    fs::copy(&deb, &local)?;

    // apt installs a local file without any network; its dpkg runs unpack, then configure.
    let output = Command::new("apt-get")
        .args(["install", "-y", "./fenrir-via-apt.deb"])
        .current_dir(sandbox.path())
        .env("APT_CONFIG", sandbox_apt_config(&sandbox)?)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()?;
    assert!(
        output.status.success(),
        "apt-get failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let event = sensor.events(1, WAIT)?.remove(0);
    assert_eq!(event["category"], "package_install");
    assert_eq!(event["parsed_data"]["package"], "fenrir-via-apt");
    let actor = &event["actor"];
    assert_eq!(
        actor["command"], "apt-get install -y ./fenrir-via-apt.deb",
        "{actor:#}"
    );
    let dpkg_command = actor["dpkg_command"].as_str().unwrap_or_default();
    assert!(
        dpkg_command.contains("--unpack"),
        "apt's dpkg run: {dpkg_command}"
    );
    assert!(actor["ancestry"]
        .as_array()
        .is_some_and(|chain| chain.iter().any(|a| a["comm"] == "apt-get")));

    // apt's separate unpack and configure runs make one install, not a failed one.
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

#[test]
fn maintainer_script_commands_are_reported_with_their_package() -> anyhow::Result<()> {
    if !require_root("the maintainer-script test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_with_tracer(&sandbox)? else {
        return Ok(());
    };
    let spec = PackageSpec::new("fenrir-scripted", "1.0-1")
        .preinst("/bin/echo fenrir-preinst-marker >/dev/null")
        .postinst("/bin/true --fenrir-postinst-marker\n/bin/sh -c 'exit 0'");
    sandbox.install(&spec)?;

    let events = sensor.events(2, WAIT)?;
    assert_eq!(events[0]["category"], "package_install");
    let scripts = &events[1];
    assert_eq!(scripts["category"], "package_scripts", "{scripts:#}");
    assert_eq!(scripts["severity"], "INFO");
    assert_eq!(scripts["parsed_data"]["package"], "fenrir-scripted");
    assert_eq!(
        scripts["actor"]["pid"], events[0]["actor"]["pid"],
        "same dpkg run"
    );

    let commands = scripts["scripts"]["commands"]
        .as_array()
        .context("commands")?;
    let find = |needle: &str| {
        commands
            .iter()
            .find(|c| {
                c["command"]
                    .as_str()
                    .is_some_and(|text| text.contains(needle))
            })
            .cloned()
    };
    // The new archive's preinst runs from dpkg's tmp.ci, which names no package.
    let preinst = find("fenrir-preinst-marker").context("preinst's command is listed")?;
    assert_eq!(preinst["script"], "preinst");
    let marker = find("/bin/true --fenrir-postinst-marker")
        .with_context(|| format!("postinst command missing: {commands:#?}"))?;
    assert_eq!(marker["script"], "postinst");
    assert!(
        find("fenrir-scripted.postinst configure").is_some(),
        "{commands:#?}"
    );
    assert!(
        scripts["description"]
            .as_str()
            .is_some_and(|d| d.contains("true")),
        "{scripts:#}"
    );

    let extra = sensor.drain(Duration::from_secs(2));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    Ok(())
}

#[test]
fn without_the_tracer_events_still_flow_with_a_null_actor() -> anyhow::Result<()> {
    if !require_root("the log-only test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = start_log_only(&sandbox)?;
    assert!(
        sensor.stderr().contains("attribution=false"),
        "{}",
        sensor.stderr()
    );

    sandbox.install(&PackageSpec::new("fenrir-unattributed", "1.0"))?;
    let event = sensor.events(1, WAIT)?.remove(0);
    assert_eq!(event["parsed_data"]["package"], "fenrir-unattributed");
    assert_eq!(event["actor"], Value::Null);
    Ok(())
}

#[test]
fn an_unprivileged_sensor_warns_once_and_still_reports() -> anyhow::Result<()> {
    if !require_root("the unprivileged-sensor test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    // The unprivileged sensor reads the log and writes its own state, nothing more.
    fs::set_permissions(sandbox.path(), fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(
        sandbox.path().join("log"),
        fs::Permissions::from_mode(0o755),
    )?;
    let state = sandbox.path().join("state");
    fs::create_dir(&state)?;
    nix::unistd::chown(&state, Some(LOGIN_UID.into()), Some(LOGIN_UID.into()))?;

    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let sensor = Sensor::start_wrapped(&wrapper, &sensor_args(&sandbox))?;
    let stderr = sensor.stderr();
    assert!(stderr.contains("attribution=false"), "{stderr}");
    assert_eq!(
        stderr.matches("kernel exec tracer").count(),
        1,
        "one warning: {stderr}"
    );

    sandbox.install(&PackageSpec::new("fenrir-unprivileged", "1.0"))?;
    let event = sensor.events(1, WAIT)?.remove(0);
    assert_eq!(event["parsed_data"]["package"], "fenrir-unprivileged");
    assert_eq!(event["actor"], Value::Null);
    Ok(())
}

/// Packages in the burst: each writes six lines to dpkg.log, so a run of them writes more
/// than 2,000 lines, and each postinst adds descendants the tracer follows.
const BURST_PACKAGES: usize = 350;

#[test]
fn a_burst_of_package_lines_loses_no_kernel_record() -> anyhow::Result<()> {
    if !require_root("the burst test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let Some(sensor) = start_with_tracer(&sandbox)? else {
        return Ok(());
    };
    let mut debs = Vec::with_capacity(BURST_PACKAGES);
    for n in 0..BURST_PACKAGES {
        let spec = PackageSpec::new(&format!("fenrir-burst-{n:03}"), "1.0-1")
            .postinst("/bin/true --fenrir-burst");
        debs.push(sandbox.build(&spec)?.display().to_string());
    }

    let mut args = vec!["-i"];
    args.extend(debs.iter().map(String::as_str));
    sandbox.dpkg_ok(&args)?;
    let written = fs::read_to_string(sandbox.log())?.lines().count();
    assert!(written >= 2_000, "the run wrote only {written} lines");

    // One install and one scripts event per package.
    let events = sensor.events(2 * BURST_PACKAGES, Duration::from_secs(90))?;
    let installs: Vec<&Value> = events
        .iter()
        .filter(|e| e["category"] == "package_install")
        .collect();
    assert_eq!(installs.len(), BURST_PACKAGES);
    let pid = &installs[0]["actor"]["pid"];
    assert!(
        pid.is_u64(),
        "the first install has no actor: {:#}",
        installs[0]
    );
    for install in &installs {
        assert_eq!(&install["actor"]["pid"], pid, "one dpkg run: {install:#}");
    }
    let scripts = events
        .iter()
        .filter(|e| e["category"] == "package_scripts")
        .filter(|e| {
            e["scripts"]["commands"].as_array().is_some_and(|commands| {
                commands
                    .iter()
                    .any(|c| c["command"] == "/bin/true --fenrir-burst")
            })
        })
        .count();
    assert_eq!(
        scripts, BURST_PACKAGES,
        "every postinst's command was traced"
    );

    // The sensor reads the kernel's drop counter on every poll and reports any loss.
    let extra = sensor.drain(Duration::from_secs(3));
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");
    let stderr = sensor.stderr();
    assert!(
        !stderr.contains("ring buffer full"),
        "kernel records were lost:\n{stderr}"
    );
    Ok(())
}

#[test]
fn without_the_kernel_an_apt_run_is_named_from_apts_own_record() -> anyhow::Result<()> {
    if !require_root("the apt history attribution test") {
        return Ok(());
    }
    let sandbox = Sandbox::new()?;
    let sensor = start_log_only(&sandbox)?;
    let deb = sandbox.build(&PackageSpec::new("fenrir-apt-record", "1.0-1"))?;
    fs::copy(&deb, sandbox.path().join("fenrir-apt-record.deb"))?;

    // apt names the user a `sudo` ran it for in `Requested-By`, from `SUDO_UID`.
    let output = Command::new("apt-get")
        .args(["install", "-y", "./fenrir-apt-record.deb"])
        .current_dir(sandbox.path())
        .env("APT_CONFIG", sandbox_apt_config(&sandbox)?)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("SUDO_UID", LOGIN_UID.to_string())
        .output()?;
    assert!(
        output.status.success(),
        "apt-get failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let event = sensor.events(1, WAIT)?.remove(0);
    assert_eq!(event["category"], "package_install");
    let actor = &event["actor"];
    assert_eq!(actor["source"], "apt-history", "{actor:#}");
    assert_eq!(
        actor["command"],
        "apt-get install -y ./fenrir-apt-record.deb"
    );
    assert_eq!(actor["user"], "nobody");
    assert_eq!(actor["uid"], LOGIN_UID);

    // What the record cannot know (a terminal, a login session) raises nothing; the service
    // account it names as requester, and the local file it names, do.
    let rules: Vec<&str> = event["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(|rule| rule["rule"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        rules,
        ["lineage:daemon-account", "lineage:local-package"],
        "{:#}",
        event["rules"]
    );

    // A dpkg run of its own, outside any apt run, stays unattributed.
    let other = sandbox.build(&PackageSpec::new("fenrir-apt-record-bare", "1.0-1"))?;
    sandbox.dpkg(&["-i", &other.display().to_string()])?;
    let event = sensor.events(1, WAIT)?.remove(0);
    assert_eq!(event["parsed_data"]["package"], "fenrir-apt-record-bare");
    assert!(event["actor"].is_null(), "{:#}", event["actor"]);
    Ok(())
}
