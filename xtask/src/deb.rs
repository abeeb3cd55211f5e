//! Builds Fenrir's Debian package with `dpkg-deb` from the files in `fenrir-sensor/dist`.
//!
//! In: a built sensor binary and the workspace. Out: `target/deb/fenrir-sensor_<version>_<arch>.deb`
//! holding the stripped binary, the systemd unit, the default configuration (a conffile), the
//! logrotate rule, the man page and the README. State: the staging tree under
//! `target/deb/work`, rebuilt from scratch every time.
//!
//! `Depends` comes from `dpkg-shlibdeps` over the binary, so it names what the build really
//! links against.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The package name, also the name of the staging directory `dpkg-shlibdeps` expects.
const PACKAGE: &str = "fenrir-sensor";

/// Debian packages the build uses: dpkg-deb, dpkg-shlibdeps, strip and gzip.
pub const BUILD_PACKAGES: &[&str] = &["dpkg", "dpkg-dev", "binutils", "gzip"];

/// Builds the package around `binary` and returns its path.
pub fn build_deb(root: &Path, binary: &Path) -> Result<PathBuf> {
    let dist = root.join("fenrir-sensor/dist");
    let out = root.join("target/deb");
    let work = out.join("work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("failed to clear {}", work.display()))?;
    }
    let stage = work.join("debian").join(PACKAGE);

    let installed = stage.join("usr/bin/fenrir-sensor");
    create_parent(&installed)?;
    // The release profile keeps line tables for backtraces; the package ships without them.
    crate::run_checked(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&installed)
            .arg(binary),
    )?;
    set_mode(&installed, 0o755)?;

    copy(
        &dist.join("fenrir.service"),
        &stage.join("lib/systemd/system/fenrir.service"),
    )?;
    copy(
        &dist.join("fenrir.toml"),
        &stage.join("etc/fenrir/fenrir.toml"),
    )?;
    copy(
        &dist.join("fenrir.logrotate"),
        &stage.join("etc/logrotate.d/fenrir"),
    )?;
    copy(
        &dist.join("debian/copyright"),
        &stage.join("usr/share/doc/fenrir-sensor/copyright"),
    )?;
    gzip(
        &dist.join("fenrir-sensor.8"),
        &stage.join("usr/share/man/man8/fenrir-sensor.8.gz"),
    )?;
    gzip(
        &root.join("README.md"),
        &stage.join("usr/share/doc/fenrir-sensor/README.md.gz"),
    )?;

    let control_dir = stage.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    for script in ["postinst", "prerm", "postrm"] {
        let target = control_dir.join(script);
        fs::copy(dist.join("debian").join(script), &target)
            .with_context(|| format!("failed to copy the {script} script"))?;
        set_mode(&target, 0o755)?;
    }
    write(
        &control_dir.join("conffiles"),
        "/etc/fenrir/fenrir.toml\n/etc/logrotate.d/fenrir\n",
    )?;
    write_md5sums(&stage)?;

    let version = package_version(root)?;
    let arch = command_text(Command::new("dpkg").arg("--print-architecture"))?;
    let control = fs::read_to_string(dist.join("debian/control"))?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", arch.trim())
        .replace("@INSTALLED_SIZE@", &installed_size_kib(&stage)?.to_string())
        .replace("@DEPENDS@", &library_depends(&work, &installed)?);
    write(&control_dir.join("control"), &control)?;

    let deb = out.join(format!("{PACKAGE}_{version}_{}.deb", arch.trim()));
    crate::run_checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The version of the sensor crate, from its manifest.
fn package_version(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("fenrir-sensor/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|line| {
            let value = line
                .strip_prefix("version")?
                .trim_start()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .context("fenrir-sensor/Cargo.toml names no version")
}

/// Runs `dpkg-shlibdeps` on the staged binary and returns its `Depends` list.
fn library_depends(work: &Path, binary: &Path) -> Result<String> {
    // dpkg-shlibdeps reads the source package's control file from `debian/`.
    write(
        &work.join("debian/control"),
        &format!("Source: fenrir\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let output = command_text(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg(binary.strip_prefix(work).unwrap_or(binary))
            .current_dir(work),
    )?;
    output
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .context("dpkg-shlibdeps printed no shlibs:Depends")
}

/// Sums the sizes of the staged files, as `Installed-Size` wants them: KiB, rounded up.
fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut bytes = 0;
    for file in files_under(stage)? {
        if !file.starts_with(stage.join("DEBIAN")) {
            bytes += fs::metadata(&file)?.len();
        }
    }
    Ok(bytes.div_ceil(1024))
}

/// Writes `DEBIAN/md5sums` for every shipped file but the conffiles, as dpkg's tools do.
fn write_md5sums(stage: &Path) -> Result<()> {
    let mut relative: Vec<PathBuf> = files_under(stage)?
        .into_iter()
        .filter_map(|file| file.strip_prefix(stage).ok().map(Path::to_path_buf))
        .filter(|file| !file.starts_with("DEBIAN") && !file.starts_with("etc"))
        .collect();
    relative.sort();
    let sums = command_text(Command::new("md5sum").args(&relative).current_dir(stage))?;
    write(&stage.join("DEBIAN/md5sums"), &sums)
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            fs::read_dir(&dir).with_context(|| format!("failed to list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().context("a staged file has a directory")?;
    fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    create_parent(to)?;
    fs::copy(from, to).with_context(|| format!("failed to copy {}", from.display()))?;
    set_mode(to, 0o644)
}

fn write(path: &Path, text: &str) -> Result<()> {
    create_parent(path)?;
    fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))?;
    set_mode(path, 0o644)
}

/// Compresses `from` into `to` the way Debian ships documentation: best, without a name or
/// time stamp, so the same input gives the same bytes.
fn gzip(from: &Path, to: &Path) -> Result<()> {
    create_parent(to)?;
    let output = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(from)
        .output()
        .context("failed to start gzip")?;
    if !output.status.success() {
        bail!("gzip {} failed with {}", from.display(), output.status);
    }
    fs::File::create(to)
        .and_then(|mut file| file.write_all(&output.stdout))
        .with_context(|| format!("failed to write {}", to.display()))?;
    set_mode(to, 0o644)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to set the mode of {}", path.display()))
}

/// Runs a command and returns its standard output, failing with its standard error.
fn command_text(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("failed to start {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
