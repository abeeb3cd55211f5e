//! SSH logins: who connected from where, read from sshd's own log lines.
//!
//! In: sshd's messages, from `/var/log/auth.log` (rsyslog) or from the systemd journal.
//! Out: [`SshEvent`]s — successful logins with their client address, method and key, failed
//! attempts, session opens and closes — each naming the sshd process that handled it, which
//! is how a package change made in that session is tied to its login (by pid, not by time).

use std::net::IpAddr;

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
