//! SSH logins: who connected from where, read from sshd's own log lines.
//!
//! In: sshd's messages, from `/var/log/auth.log` (rsyslog) or from the systemd journal.
//! Out: [`SshEvent`]s — successful logins with their client address, method and key, failed
//! attempts, session opens and closes — each naming the sshd process that handled it, which
//! is how a package change made in that session is tied to its login (by pid, not by time).
//!
//! [`parse`] reads sshd's messages, [`reader`] runs the thread that follows auth.log or a
//! supervised `journalctl`, and [`SshConfig`] says which of the two is used.
//!
//! sshd logs "Accepted …" from the session's privileged monitor process: the process that
//! forked the unprivileged child which in turn runs the user's shell. Its pid is therefore in
//! the ancestry the kernel records for every command of the session, and the audit session
//! starts in it (`pam_loginuid` runs there), so the kernel's ancestry walk, which stops one
//! process above the session, always includes it.

pub mod parse;
pub mod reader;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

/// How a user proved who they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    Password,
    Publickey,
    KeyboardInteractive,
    Hostbased,
    Gssapi,
    /// Another method, as sshd spelled it.
    Other(String),
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshLogin {
    pub time: DateTime<FixedOffset>,
    pub user: String,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub method: AuthMethod,
    /// The key's fingerprint (`SHA256:…`) for public-key logins, when sshd logged it.
    pub fingerprint: Option<String>,
    /// The sshd process that logged the login: the session's privileged monitor.
    pub sshd_pid: u32,
}

/// A failed authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshFailure {
    pub time: DateTime<FixedOffset>,
    pub user: String,
    /// Whether sshd said the user does not exist.
    pub invalid_user: bool,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub method: AuthMethod,
    pub sshd_pid: u32,
}

/// Something sshd reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SshEvent {
    Login(SshLogin),
    Failure(SshFailure),
    SessionOpened {
        time: DateTime<FixedOffset>,
        user: String,
        sshd_pid: u32,
    },
    SessionClosed {
        time: DateTime<FixedOffset>,
        user: String,
        sshd_pid: u32,
    },
}

impl SshEvent {
    /// Returns the sshd process that logged the event.
    #[must_use]
    pub fn sshd_pid(&self) -> u32 {
        match self {
            Self::Login(login) => login.sshd_pid,
            Self::Failure(failure) => failure.sshd_pid,
            Self::SessionOpened { sshd_pid, .. } | Self::SessionClosed { sshd_pid, .. } => {
                *sshd_pid
            }
        }
    }
}

/// Where the sensor reads logins from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceChoice {
    /// auth.log when it exists and was written to recently, else the journal.
    Auto,
    Journal,
    AuthLog,
    Off,
}

/// The `[ssh]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshConfig {
    pub source: SourceChoice,
    /// The syslog file sshd's messages land in.
    pub auth_log: PathBuf,
    /// The program that reads the journal.
    pub journalctl: PathBuf,
    /// How long a successful login from an address is remembered for its user.
    pub learning_days: u32,
    /// (user, address) pairs remembered at most; the least recently seen go first.
    pub history_max_entries: usize,
    /// How long a change made in an SSH session may wait for its login to be read.
    pub attribution_wait_ms: u64,
    /// How long sshd's messages may take to reach auth.log or the journal; above 0, every
    /// recent change waits this long for other sessions' logins still on their way. 0, the
    /// default, keeps changes from waiting for any login but their own session's.
    pub log_delay_ms: u64,
    /// How often auth.log is read.
    pub poll_interval_ms: u64,
}

impl Default for SshConfig {
    fn default() -> Self {
        Self {
            source: SourceChoice::Auto,
            auth_log: PathBuf::from("/var/log/auth.log"),
            journalctl: PathBuf::from("journalctl"),
            learning_days: 30,
            history_max_entries: 10_000,
            attribution_wait_ms: 2_000,
            log_delay_ms: 0,
            poll_interval_ms: 250,
        }
    }
}

/// How recently auth.log must have been written for `auto` to choose it.
const AUTH_LOG_FRESH: Duration = Duration::from_hours(7 * 24);

impl SshConfig {
    /// Decides where logins come from: `auto` takes auth.log when it exists and was written
    /// within the last week (rsyslog is running), the journal otherwise.
    #[must_use]
    pub fn resolve(&self) -> Option<reader::LoginSource> {
        let journal = reader::LoginSource::Journal {
            journalctl: self.journalctl.clone(),
        };
        match self.source {
            SourceChoice::Off => None,
            SourceChoice::AuthLog => Some(reader::LoginSource::AuthLog(self.auth_log.clone())),
            SourceChoice::Journal => Some(journal),
            SourceChoice::Auto => {
                if is_fresh(&self.auth_log) {
                    Some(reader::LoginSource::AuthLog(self.auth_log.clone()))
                } else {
                    Some(journal)
                }
            }
        }
    }

    /// Returns how long sshd's messages may take to reach the source.
    #[must_use]
    pub fn log_delay(&self) -> Duration {
        Duration::from_millis(self.log_delay_ms)
    }

    /// Returns how long logins are remembered.
    #[must_use]
    pub fn learning_period(&self) -> Duration {
        Duration::from_secs(u64::from(self.learning_days) * 24 * 3600)
    }
}

fn is_fresh(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .is_ok_and(|modified| {
            SystemTime::now()
                .duration_since(modified)
                .map_or(true, |age| age <= AUTH_LOG_FRESH)
        })
}
