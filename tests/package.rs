//! The Debian package as an administrator meets it: installed with the real dpkg into a
//! sandbox root, its files where they belong, its default configuration valid for the binary
//! it ships, its unit enabled, a changed configuration kept, and nothing left after a purge.
//! Also the man page it carries: it renders cleanly and names every option of the CLI.
//!
//! `cargo xtask test` builds the package and passes its path in `FENRIR_DEB`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use fenrir_tests::dist;
use fenrir_tests::dpkg::{require_root, Sandbox};
use fenrir_tests::sensor::binary;

/// The exposure `systemd-analyze security` gave the unit when it was written (1.7, in tenths);
/// a unit loosened past it fails here.
const EXPOSURE_THRESHOLD: &str = "17";

/// Returns the package to test, or prints why there is none.
fn package() -> Option<PathBuf> {
    let path = std::env::var_os("FENRIR_DEB").map(PathBuf::from);
    if path.is_none() {
        println!("skipping: FENRIR_DEB names no package; `cargo xtask test` builds one");
    }
    path
}

fn gunzip(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(fs::File::open(path)?).read_to_string(&mut text)?;
    Ok(text)
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}

fn admin_query(sandbox: &Sandbox, format: &str) -> anyhow::Result<String> {
    let output = Command::new("dpkg-query")
        .arg(format!("--admindir={}", sandbox.admin_dir().display()))
        .args(["-W", &format!("-f={format}"), "fenrir-sensor"])
        .output()?;
    anyhow::ensure!(output.status.success(), "dpkg-query failed");
    Ok(String::from_utf8(output.stdout)?)
}

/// The link `deb-systemd-helper enable` makes, under `root`.
fn enable_link(root: &Path) -> PathBuf {
    root.join("etc/systemd/system/multi-user.target.wants/fenrir.service")
}

#[test]
fn the_package_installs_its_files_an_enabled_unit_and_a_valid_config() -> anyhow::Result<()> {
    if !require_root("installing the package into a sandbox") {
        return Ok(());
    }
    let Some(deb) = package() else {
        return Ok(());
    };
    let host_link_before = enable_link(Path::new("/")).exists();
    let sandbox = Sandbox::new()?;
    // The sandbox's database lacks libc6 and friends; the host has them.
    sandbox.dpkg_ok(&["--force-depends", "-i", &deb.display().to_string()])?;
    let root = sandbox.root();

    let installed = root.join("usr/bin/fenrir-sensor");
    assert_eq!(mode(&installed)?, 0o755);
    let version = Command::new(&installed).arg("--version").output()?;
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("fenrir-sensor "),
        "the packaged binary runs"
    );
    let dist = dist::dist_dir();
    for (shipped, source) in [
        ("lib/systemd/system/fenrir.service", "fenrir.service"),
        ("etc/fenrir/fenrir.toml", "fenrir.toml"),
        ("etc/logrotate.d/fenrir", "fenrir.logrotate"),
        ("usr/share/doc/fenrir-sensor/copyright", "debian/copyright"),
    ] {
        assert_eq!(
            fs::read_to_string(root.join(shipped))?,
            fs::read_to_string(dist.join(source))?,
            "{shipped}"
        );
        assert_eq!(mode(&root.join(shipped))?, 0o644, "{shipped}");
    }
    assert_eq!(
        gunzip(&root.join("usr/share/man/man8/fenrir-sensor.8.gz"))?,
        fs::read_to_string(dist.join("fenrir-sensor.8"))?
    );
    assert!(
        gunzip(&root.join("usr/share/doc/fenrir-sensor/README.md.gz"))?.starts_with("# Fenrir")
    );

    let conffiles = admin_query(&sandbox, "${Conffiles}")?;
    assert!(conffiles.contains("/etc/fenrir/fenrir.toml"), "{conffiles}");
    assert!(conffiles.contains("/etc/logrotate.d/fenrir"), "{conffiles}");
    assert_eq!(admin_query(&sandbox, "${db:Status-Status}")?, "installed");
    assert!(admin_query(&sandbox, "${Depends}")?.contains("libc6"));

    // The installed binary accepts the installed configuration.
    let config = root.join("etc/fenrir/fenrir.toml");
    let check = Command::new(&installed)
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()?;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("configuration is valid"));

    // postinst enabled the unit inside the sandbox, not on the host.
    let link = enable_link(&root);
    assert_eq!(
        fs::read_link(&link)?,
        Path::new("/lib/systemd/system/fenrir.service")
    );
    assert_eq!(enable_link(Path::new("/")).exists(), host_link_before);
    Ok(())
}

#[test]
fn a_changed_config_survives_a_reinstall_and_a_purge_leaves_nothing() -> anyhow::Result<()> {
    if !require_root("installing the package into a sandbox") {
        return Ok(());
    }
    let Some(deb) = package() else {
        return Ok(());
    };
    let sandbox = Sandbox::new()?;
    let deb = deb.display().to_string();
    sandbox.dpkg_ok(&["--force-depends", "-i", &deb])?;
    let root = sandbox.root();
    let config = root.join("etc/fenrir/fenrir.toml");
    let changed = format!(
        "{}\nhost = \"edited-by-admin\"\n",
        fs::read_to_string(&config)?
    );
    fs::write(&config, &changed)?;
    // What a running service would have left behind.
    fs::create_dir_all(root.join("var/lib/private/fenrir/checkpoints"))?;
    fs::write(root.join("var/lib/private/fenrir/events.jsonl"), "{}\n")?;

    sandbox.dpkg_ok(&["--force-depends", "--force-confold", "-i", &deb])?;
    assert_eq!(
        fs::read_to_string(&config)?,
        changed,
        "the admin's edit stays"
    );

    sandbox.dpkg_ok(&["--purge", "fenrir-sensor"])?;
    for gone in [
        "usr/bin/fenrir-sensor",
        "lib/systemd/system/fenrir.service",
        "etc/fenrir/fenrir.toml",
        "etc/logrotate.d/fenrir",
        "var/lib/private/fenrir",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is left after a purge");
    }
    assert!(
        fs::symlink_metadata(enable_link(&root)).is_err(),
        "the enable link is gone"
    );
    Ok(())
}

/// Returns every long option `fenrir-sensor <command> --help` lists.
fn long_options(command: &[&str]) -> anyhow::Result<BTreeSet<String>> {
    let output = Command::new(binary()?)
        .args(command)
        .arg("--help")
        .output()?;
    anyhow::ensure!(output.status.success(), "{command:?} --help failed");
    let help = String::from_utf8(output.stdout)?;
    Ok(help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .filter(|word| !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect())
}

fn subcommands() -> anyhow::Result<Vec<String>> {
    let output = Command::new(binary()?).arg("--help").output()?;
    let help = String::from_utf8(output.stdout)?;
    Ok(help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_man_page_renders_and_names_every_command_and_option() -> anyhow::Result<()> {
    let page = fs::read_to_string(dist::dist_dir().join("fenrir-sensor.8"))?;
    let commands = subcommands()?;
    assert!(commands.len() >= 3, "{commands:?}");
    for command in &commands {
        assert!(
            page.contains(&format!(".B {command}\n")),
            "the man page has no entry for `{command}`"
        );
        for option in long_options(&[command])? {
            let roff = format!("\\-\\-{}", option.replace('-', "\\-"));
            assert!(
                page.contains(&roff),
                "the man page does not document `{command} --{option}`"
            );
        }
    }

    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(dist::dist_dir().join("fenrir-sensor.8"))
        .output();
    match groff {
        Ok(output) => assert!(
            output.status.success() && output.stderr.is_empty(),
            "groff warns: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(err) => println!("skipping: groff is not installed ({err}); rendering unchecked"),
    }
    Ok(())
}

#[test]
fn the_unit_stays_as_confined_as_when_it_was_written() {
    let analysis = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={EXPOSURE_THRESHOLD}"))
        .arg(dist::unit_path())
        .output();
    let output = match analysis {
        Ok(output) => output,
        Err(err) => {
            println!("skipping: systemd-analyze is not installed ({err})");
            return;
        }
    };
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exposure above {EXPOSURE_THRESHOLD}:\n{report}"
    );
    if let Some(line) = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    {
        println!("{line}");
    }
}
