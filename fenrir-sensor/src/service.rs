//! What the service manager hears from the sensor: readiness, liveness and shutdown.
//!
//! In: `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, which systemd sets for a unit of
//! `Type=notify` with `WatchdogSec=`. Out: `READY=1`, `WATCHDOG=1`, `STOPPING=1` and `STATUS=`
//! datagrams on that socket, in the format of systemd's notification protocol. State: one
//! unbound datagram socket and the manager's address; nothing at all outside a service
//! manager, where every call does nothing.
//!
//! The watchdog is pinged from the pipeline's own loop, never from a thread of its own: a loop
//! that stalls (a sink blocked in a system call, a runaway batch) stops pinging, and the
//! service manager restarts the sensor.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::{debug, info, warn};

/// The environment variable naming the service manager's notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The environment variable holding the watchdog timeout in microseconds.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The environment variable naming the process the watchdog timeout is meant for.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// Sends the sensor's lifecycle to the service manager, when there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
    /// Whether a failed send was already reported, so a vanished manager warns once.
    warned: Cell<bool>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    address: SocketAddr,
    /// The socket as named in the environment, for diagnostics.
    shown: String,
}

impl Notifier {
    /// Builds the notifier from the process environment.
    #[must_use]
    pub fn from_environment() -> Self {
        let socket = std::env::var_os(NOTIFY_SOCKET_ENV);
        let usec = std::env::var(WATCHDOG_USEC_ENV).ok();
        let pid = std::env::var(WATCHDOG_PID_ENV).ok();
        Self::from_values(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// Builds the notifier from the values of the three variables and this process's pid.
    #[must_use]
    pub fn from_values(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Self {
        let target = socket.and_then(|name| match Target::open(name) {
            Ok(target) => Some(target),
            Err(err) => {
                warn!(
                    socket = %name.to_string_lossy(),
                    error = %err,
                    "cannot reach the service manager's notification socket"
                );
                None
            }
        });
        let watchdog = target
            .as_ref()
            .and_then(|_| watchdog_interval(watchdog_usec, watchdog_pid, own_pid));
        Self {
            target,
            watchdog,
            warned: Cell::new(false),
        }
    }

    /// Returns whether a service manager listens.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Returns how often the watchdog must be pinged: half the manager's timeout, so one late
    /// wake-up of a busy host does not cost a restart.
    #[must_use]
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Tells the manager the sensor follows its logs, with a status line for `systemctl`.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// Tells the manager the pipeline's loop still turns.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Tells the manager the sensor is delivering what is left and will exit.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: delivering what is already written");
    }

    /// Replaces the status line `systemctl status` shows.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else { return };
        match target
            .socket
            .send_to_addr(message.as_bytes(), &target.address)
        {
            Ok(_) => debug!(
                socket = target.shown,
                message, "notified the service manager"
            ),
            Err(err) if !self.warned.replace(true) => warn!(
                socket = target.shown,
                error = %err,
                "cannot notify the service manager"
            ),
            Err(err) => debug!(socket = target.shown, error = %err, "notification failed"),
        }
    }
}

impl Target {
    /// Parses a socket name as systemd passes it: an absolute path, or `@` and an abstract
    /// name.
    fn open(name: &OsStr) -> io::Result<Self> {
        let bytes = name.as_bytes();
        let address = match bytes.split_first() {
            Some((b'@', abstract_name)) => SocketAddr::from_abstract_name(abstract_name)?,
            Some((b'/', _)) => SocketAddr::from_pathname(name)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an abstract socket name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A manager that stops reading must not stall the pipeline's loop on a full queue.
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            address,
            shown: name.to_string_lossy().into_owned(),
        })
    }
}

/// Returns half of the watchdog timeout, when it is meant for this process.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec = usec?;
    let Ok(timeout) = usec.trim().parse::<u64>() else {
        warn!(value = usec, "ignoring an unparsable {WATCHDOG_USEC_ENV}");
        return None;
    };
    if timeout == 0 {
        return None;
    }

    // A variable inherited from a parent that runs under a watchdog is not addressed to us.
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            debug!(
                watchdog_pid = pid,
                "the watchdog is meant for another process"
            );
            return None;
        }
    }

    let interval = Duration::from_micros(timeout / 2);
    info!(
        interval_ms = interval.as_millis(),
        "service watchdog enabled"
    );
    Some(interval)
}

/// Keeps a status text on one line, as the protocol's `KEY=value` lines require.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// A timer that fires at the watchdog interval, or never without a watchdog.
#[derive(Debug)]
pub struct WatchdogTimer {
    interval: Option<tokio::time::Interval>,
}

impl WatchdogTimer {
    /// Creates the timer for `notifier`'s watchdog; it first fires one interval from now.
    #[must_use]
    pub fn for_notifier(notifier: &Notifier) -> Self {
        let interval = notifier.watchdog_interval().map(|period| {
            let start = tokio::time::Instant::now() + period;
            let mut interval = tokio::time::interval_at(start, period);
            // A stalled loop must look stalled: no burst of pings to catch up afterwards.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Self { interval }
    }

    /// Completes when the next ping is due.
    pub async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Clears the ambient capability set, so programs the sensor starts (hooks, `journalctl`) do
/// not inherit the capabilities the service manager granted the sensor.
///
/// The sensor's own permitted and effective sets are untouched. Does nothing, without error,
/// where the kernel has no ambient set or nothing is in it.
pub fn keep_capabilities_from_children() {
    // SAFETY: PR_CAP_AMBIENT with PR_CAP_AMBIENT_CLEAR_ALL takes no pointers and only changes
    // this process's ambient capability set.
    let result = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if result != 0 {
        debug!(error = %io::Error::last_os_error(), "cannot clear the ambient capabilities");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0_u8; 4096];
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        let n = socket.recv(&mut buffer).expect("a notification arrives");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_socket_named_by_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind receiver");

        let notifier = Notifier::from_values(Some(path.as_os_str()), None, None, 1);
        assert!(notifier.is_enabled());
        notifier.ready("following /var/log/dpkg.log");
        notifier.watchdog();
        notifier.stopping();

        assert_eq!(
            receive(&receiver),
            "READY=1\nSTATUS=following /var/log/dpkg.log"
        );
        assert_eq!(receive(&receiver), "WATCHDOG=1");
        assert!(receive(&receiver).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!(
            "fenrir-notify-test-{}-{:?}",
            std::process::id(),
            Instant::now()
        );
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind abstract receiver");

        let variable = format!("@{name}");
        let notifier = Notifier::from_values(Some(OsStr::new(&variable)), None, None, 1);
        notifier.status("two\nlines");
        assert_eq!(receive(&receiver), "STATUS=two lines");
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let _receiver = UnixDatagram::bind(&path).expect("bind receiver");
        let socket = Some(path.as_os_str());

        let ours = Notifier::from_values(socket, Some("3000000"), Some("42"), 42);
        assert_eq!(ours.watchdog_interval(), Some(Duration::from_millis(1500)));
        let unaddressed = Notifier::from_values(socket, Some("3000000"), None, 42);
        assert_eq!(
            unaddressed.watchdog_interval(),
            Some(Duration::from_millis(1500))
        );

        let other = Notifier::from_values(socket, Some("3000000"), Some("41"), 42);
        assert_eq!(other.watchdog_interval(), None);
        let garbage = Notifier::from_values(socket, Some("soon"), None, 42);
        assert_eq!(garbage.watchdog_interval(), None);
        let off = Notifier::from_values(socket, Some("0"), None, 42);
        assert_eq!(off.watchdog_interval(), None);
    }

    #[test]
    fn no_manager_means_no_watchdog_and_silent_calls() {
        let notifier = Notifier::from_values(None, Some("3000000"), None, 1);
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready("ignored");

        let relative = Notifier::from_values(Some(OsStr::new("notify.sock")), None, None, 1);
        assert!(!relative.is_enabled());
    }

    #[test]
    fn a_vanished_manager_does_not_fail_the_sender() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind receiver");
        let notifier = Notifier::from_values(Some(path.as_os_str()), None, None, 1);
        drop(receiver);
        notifier.watchdog();
        notifier.watchdog();
        assert!(notifier.warned.get());
    }
}
