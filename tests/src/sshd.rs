//! A real OpenSSH server on a loopback port, a test user with a key, and a real rsyslog.
//!
//! In: tests that need SSH logins. Out: an [`SshServer`] listening on a free port of
//! 127.0.0.1 with its own host key and configuration (`UsePAM yes`, so sessions get a login
//! uid and an audit session), a throw-away user allowed to run anything with `sudo -n`, who
//! logs in with a key or, on a server started with [`Auth::Passwords`], with a password set
//! by `chpasswd` — through sshd's `password` method or PAM's keyboard-interactive prompts,
//! answered by an `SSH_ASKPASS` program since the client has no terminal — and
//! [`Rsyslog`], an rsyslogd writing sshd's messages to a file of the test's, which it can
//! rotate the way logrotate does.
//!
//! sshd logs through `/dev/log`. To send its lines to a private rsyslog socket without
//! touching the host's logging, sshd runs in a mount namespace of its own in which `/dev/log`
//! leads to that socket. Everything started here is stopped, and the user and its sudoers
//! drop-in removed, when the handle drops.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// How the test user may authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// A key only.
    Key,
    /// A key, a password (`password` method) and PAM's prompts (`keyboard-interactive`).
    Passwords,
}

/// The method a client logs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Publickey,
    Password,
    KeyboardInteractive,
}

impl Method {
    /// Returns the method as ssh's `PreferredAuthentications` spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publickey => "publickey",
            Self::Password => "password",
            Self::KeyboardInteractive => "keyboard-interactive",
        }
    }
}

/// The test user's password on a server started with [`Auth::Passwords`].
const PASSWORD: &str = "fenrir-Test-pw-7";

/// A running sshd and its test user.
pub struct SshServer {
    child: Child,
    dir: TempDir,
    port: u16,
    user: String,
    sudoers: PathBuf,
}

impl SshServer {
    /// Starts sshd with key logins only, or prints `skipping: <reason>` and returns `None`
    /// where it cannot run.
    pub fn start(log_to: &LogTo) -> anyhow::Result<Option<Self>> {
        Self::start_with(log_to, Auth::Key)
    }

    /// Starts sshd allowing `auth`, or prints `skipping: <reason>` and returns `None` where
    /// it cannot run.
    pub fn start_with(log_to: &LogTo, auth: Auth) -> anyhow::Result<Option<Self>> {
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
        let passwords = if auth == Auth::Passwords {
            server.allow_passwords()?;
            "yes"
        } else {
            "no"
        };
        server.port = free_port()?;
        fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile \
                 {dir}/sshd.pid\nUsePAM yes\nStrictModes no\nAuthorizedKeysFile {dir}/%u.keys\n\
                 PasswordAuthentication {passwords}\nKbdInteractiveAuthentication {passwords}\n\
                 LogLevel INFO\nSyslogFacility AUTH\n",
                port = server.port,
                dir = dir.display()
            ),
        )?;
        // Debian's init script makes sshd's privilege-separation directory.
        fs::create_dir_all("/run/sshd")?;
        ensure_dev_log()?;

        let redirect = match log_to {
            LogTo::Journal => String::new(),
            LogTo::Socket(path) => redirect_dev_log(path),
        };
        let script = format!("{redirect}exec {SSHD} -D -f {}/sshd_config", dir.display());
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

    /// Gives the user the test password and writes the askpass program that answers it.
    fn allow_passwords(&self) -> anyhow::Result<()> {
        set_password(&self.user)?;
        let askpass = self.dir.path().join("askpass");
        fs::write(&askpass, format!("#!/bin/sh\necho '{PASSWORD}'\n"))?;
        fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700))?;
        Ok(())
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

    /// Logs in as the test user with a key from the local address `from` and runs
    /// `command`.
    pub fn login(&self, from: &str, command: &str) -> anyhow::Result<Output> {
        self.login_with(Method::Publickey, from, command)
    }

    /// Logs in as the test user with `method` from the local address `from` and runs
    /// `command`.
    pub fn login_with(&self, method: Method, from: &str, command: &str) -> anyhow::Result<Output> {
        let output = self
            .ssh_command(method, from, command)
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

impl SshServer {
    /// Starts a key login from `from` running `command` and returns at once; the session
    /// lasts as long as the command.
    pub fn spawn_login(&self, from: &str, command: &str) -> anyhow::Result<Child> {
        self.ssh_command(Method::Publickey, from, command)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to run ssh")
    }

    fn ssh_command(&self, method: Method, from: &str, command: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            &format!("PreferredAuthentications={}", method.as_str()),
            "-b",
            from,
            "-p",
            &self.port.to_string(),
        ]);
        if method == Method::Publickey {
            ssh.arg("-i")
                .arg(self.dir.path().join("user_key"))
                .args(["-o", "BatchMode=yes"]);
        } else {
            // No terminal: ssh asks the askpass program, in a session of its own so that it
            // cannot find one.
            ssh.args([
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "NumberOfPasswordPrompts=1",
            ])
            .env("SSH_ASKPASS", self.dir.path().join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env_remove("DISPLAY");
            // SAFETY: the closure only calls setsid, which is async-signal-safe.
            unsafe {
                ssh.pre_exec(|| {
                    nix::unistd::setsid()
                        .map(drop)
                        .map_err(std::io::Error::from)
                });
            }
        }
        ssh.arg(format!("{}@127.0.0.1", self.user))
            .arg(command)
            .stdin(Stdio::null());
        ssh
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

/// Gives `user` the test password.
fn set_password(user: &str) -> anyhow::Result<()> {
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to start chpasswd")?;
    if let Some(mut stdin) = chpasswd.stdin.take() {
        std::io::Write::write_all(&mut stdin, format!("{user}:{PASSWORD}\n").as_bytes())?;
    }
    let output = chpasswd.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "chpasswd failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
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

    /// Rotates the log as logrotate's `create` does for rsyslog: renames it to `auth.log.1`,
    /// creates an empty `auth.log` and tells rsyslogd with SIGHUP to reopen its files.
    /// Returns the rotated file.
    pub fn rotate(&self) -> anyhow::Result<PathBuf> {
        let rotated = self.dir.path().join("auth.log.1");
        fs::rename(self.auth_log(), &rotated).context("failed to rename auth.log")?;
        let created = fs::File::create(self.auth_log()).context("failed to create auth.log")?;
        created.set_permissions(fs::Permissions::from_mode(0o640))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
            .context("failed to signal rsyslogd")?;
        Ok(rotated)
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user name no other test or run uses, short enough for every tool.
///
/// The sensor learns each user's addresses from the journal's past logins, and the journal
/// outlives test runs. A process id alone repeats from run to run (a fresh pid namespace hands
/// out the same ones), so the name also carries the clock: a name reused from an earlier run
/// would make an address that run logged in from look familiar.
fn unique_user() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    // At most 10 hex digits; the clock wraps after 2^40 µs, about 12 days, so a name repeats
    // only for the same pid and counter at the same microsecond of that cycle.
    let clock = micros % (1 << 40);
    format!("fnr{clock:x}p{}x{n}", std::process::id())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Returns shell commands that, in sshd's mount namespace, make `/dev/log` lead to `socket`.
///
/// `/dev/log` is usually a symlink into journald's runtime directory. A bind mount over the
/// socket it leads to would not last: when journald starts again it replaces that socket, and
/// the kernel detaches mounts on a replaced file in every namespace — sshd's lines would go
/// to the journal. A private tmpfs over the directory, holding a symlink of the same name,
/// is out of journald's reach. Before any journald has run, that directory does not exist
/// yet, so it is made (`readlink -f` would fail on it without a word).
fn redirect_dev_log(socket: &Path) -> String {
    format!(
        "target=$(readlink -m /dev/log) && dir=$(dirname \"$target\") && mkdir -p \"$dir\" && \
         if [ \"$dir\" = /dev ]; then mount --bind {socket} /dev/log; \
         else mount -t tmpfs -o mode=0755 fenrir-dev-log \"$dir\" && \
         ln -s {socket} \"$target\"; fi || \
         {{ echo \"cannot lead /dev/log to {socket}\" >&2; exit 1; }}; ",
        socket = socket.display()
    )
}

/// A host with systemd has `/dev/log` pointing at journald; a bare container may not. The
/// redirection in sshd's namespace needs something there to follow or mount over.
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
