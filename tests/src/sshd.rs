//! A real OpenSSH server on a loopback port, a test user with a key, and a real rsyslog.
//!
//! In: tests that need SSH logins. Out: an [`SshServer`] listening on a free port of
//! 127.0.0.1 with its own host key and configuration (`UsePAM yes`, so sessions get a login
//! uid and an audit session), a throw-away user allowed to run anything with `sudo -n`, and
//! [`Rsyslog`], an rsyslogd writing sshd's messages to a file of the test's.
//!
//! sshd logs through `/dev/log`. To send its lines to a private rsyslog socket without
//! touching the host's logging, sshd runs in a mount namespace of its own in which that
//! socket is bind-mounted over `/dev/log`. Everything started here is stopped, and the user
//! and its sudoers drop-in removed, when the handle drops.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

/// The sshd Debian installs.
pub const SSHD: &str = "/usr/sbin/sshd";
/// The socket journald reads syslog datagrams from.
pub const JOURNAL_SYSLOG_SOCKET: &str = "/run/systemd/journal/dev-log";

/// Where sshd's syslog lines go.
#[derive(Debug, Clone)]
pub enum LogTo {
    /// journald's syslog socket.
    Journal,
    /// A syslog socket of the test's, such as an [`Rsyslog`]'s.
    Socket(PathBuf),
}

/// A running sshd and its test user.
pub struct SshServer {
    child: Child,
    dir: TempDir,
    port: u16,
    user: String,
    sudoers: PathBuf,
}

impl SshServer {
    /// Starts sshd, or prints `skipping: <reason>` and returns `None` where it cannot run.
    pub fn start(log_to: &LogTo) -> anyhow::Result<Option<Self>> {
        if !nix::unistd::geteuid().is_root() {
            println!("skipping: the ssh tests need root");
            return Ok(None);
        }
        for program in [SSHD, "/usr/bin/ssh", "/usr/bin/sudo", "/usr/bin/unshare"] {
            if !Path::new(program).exists() {
                println!("skipping: {program} is not installed");
                return Ok(None);
            }
        }
        let dir = tempfile::Builder::new().prefix("fenrir-sshd-").tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let user = unique_user();
        let home = dir.path().join("home");
        fs::create_dir(&home)?;
        run_ok(
            Command::new("useradd")
                .args(["-M", "-s", "/bin/sh", "-d"])
                .arg(&home)
                .arg(&user),
        )?;
        let sudoers = PathBuf::from(format!("/etc/sudoers.d/fenrir-test-{user}"));
        let mut server = Self {
            child: Command::new("true").spawn()?,
            dir,
            port: 0,
            user,
            sudoers,
        };
        nix::unistd::chown(
            &home,
            nix::unistd::User::from_name(&server.user)?.map(|u| u.uid),
            None,
        )?;
        fs::write(
            &server.sudoers,
            format!("{} ALL=(root) NOPASSWD: ALL\n", server.user),
        )?;
        fs::set_permissions(&server.sudoers, fs::Permissions::from_mode(0o440))?;

        let dir = server.dir.path().to_path_buf();
        for key in ["host_key", "user_key"] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(dir.join(key)),
            )?;
        }
        fs::copy(
            dir.join("user_key.pub"),
            dir.join(format!("{}.keys", server.user)),
        )?;
        server.port = free_port()?;
        fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile \
                 {dir}/sshd.pid\nUsePAM yes\nStrictModes no\nAuthorizedKeysFile {dir}/%u.keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel INFO\n\
                 SyslogFacility AUTH\n",
                port = server.port,
                dir = dir.display()
            ),
        )?;
        // Debian's init script makes sshd's privilege-separation directory.
        fs::create_dir_all("/run/sshd")?;
        ensure_dev_log()?;

        let socket = match log_to {
            LogTo::Journal => PathBuf::from(JOURNAL_SYSLOG_SOCKET),
            LogTo::Socket(path) => path.clone(),
        };
        let script = format!(
            "mount --bind {} /dev/log && exec {SSHD} -D -f {}/sshd_config",
            socket.display(),
            dir.display()
        );
        server.child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start sshd")?;
        server.wait_until_listening()?;
        Ok(Some(server))
    }

    fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
                }
                bail!("sshd exited with {status}: {stderr}");
            }
            if Instant::now() >= deadline {
                bail!("sshd did not listen on port {} in time", self.port);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Returns the test user's name.
    #[must_use]
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Logs in as the test user from the local address `from` and runs `command`.
    pub fn login(&self, from: &str, command: &str) -> anyhow::Result<Output> {
        let output = Command::new("ssh")
            .args(["-i"])
            .arg(self.dir.path().join("user_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-b",
                from,
                "-p",
                &self.port.to_string(),
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .context("failed to run ssh")?;
        if !output.status.success() {
            bail!(
                "ssh from {from} running `{command}` failed with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.sudoers);
        // Sessions end with their ssh client; a straggler would keep userdel from working.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.user])
            .status();
        let _ = Command::new("userdel")
            .arg(&self.user)
            .stderr(Stdio::null())
            .status();
    }
}

/// An rsyslogd of the test's, writing `auth` and `authpriv` messages to its own file.
pub struct Rsyslog {
    child: Child,
    dir: TempDir,
}

impl Rsyslog {
    /// Starts rsyslogd; `traditional` picks `Mon DD HH:MM:SS` stamps instead of Debian 12's
    /// default RFC 3339 ones. Prints `skipping:` and returns `None` without rsyslogd.
    pub fn start(traditional: bool) -> anyhow::Result<Option<Self>> {
        let program = "/usr/sbin/rsyslogd";
        if !Path::new(program).exists() {
            println!("skipping: {program} is not installed");
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("fenrir-rsyslog-")
            .tempdir()?;
        let path = dir.path();
        let template = if traditional {
            "$ActionFileDefaultTemplate RSYSLOG_TraditionalFileFormat\n"
        } else {
            ""
        };
        fs::write(
            path.join("rsyslog.conf"),
            format!(
                "module(load=\"imuxsock\" SysSock.Name=\"{dir}/devlog\")\n$WorkDirectory {dir}\n\
                 {template}auth,authpriv.* {dir}/auth.log\n",
                dir = path.display()
            ),
        )?;
        let child = Command::new(program)
            .arg("-n")
            .arg("-f")
            .arg(path.join("rsyslog.conf"))
            .arg("-i")
            .arg(path.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start rsyslogd")?;
        let rsyslog = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rsyslog.socket().exists() {
            if Instant::now() >= deadline {
                bail!("rsyslogd made no socket in time");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(rsyslog))
    }

    /// Returns the socket sshd should log to.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("devlog")
    }

    /// Returns the file rsyslog writes sshd's lines to.
    #[must_use]
    pub fn auth_log(&self) -> PathBuf {
        self.dir.path().join("auth.log")
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user name no other test or run uses, short enough for every tool.
fn unique_user() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("fnr{}x{n}", std::process::id())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A host with systemd has `/dev/log` pointing at journald; a bare container may not. The
/// bind mount in sshd's namespace needs something there to mount over.
fn ensure_dev_log() -> anyhow::Result<()> {
    let dev_log = Path::new("/dev/log");
    if dev_log.symlink_metadata().is_err() {
        if let Err(err) = std::os::unix::fs::symlink(JOURNAL_SYSLOG_SOCKET, dev_log) {
            if err.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(err).context("failed to create /dev/log");
            }
        }
    }
    Ok(())
}

fn run_ok(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("failed to run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
