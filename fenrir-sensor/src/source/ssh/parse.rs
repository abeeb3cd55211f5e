//! sshd's log messages → [`SshEvent`]s.
//!
//! In: one syslog line as rsyslog writes it to auth.log (traditional `Mon DD HH:MM:SS host
//! sshd[pid]: …` or RFC 3339 `2026-05-03T14:32:11.123456+02:00 host sshd[pid]: …`), or one
//! message with its pid and time taken from a journal entry. Out: the [`SshEvent`] it
//! reports, or `None` for the many sshd messages that are not logins, failures or sessions.
//! No state.
//!
//! The formats are OpenSSH's own (`auth.c`: `Accepted %s for %s%.100s from %.200s port %d
//! ssh2`, with `: KEYTYPE SHA256:…` appended for public keys) and `pam_unix`'s session lines.

use std::net::IpAddr;

use chrono::{DateTime, Datelike, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};

use super::{AuthMethod, SshEvent, SshFailure, SshLogin};

/// Program names under which sshd logs: OpenSSH 9.8 and later log sessions as
/// `sshd-session`.
pub const SSHD_IDENTIFIERS: &[&str] = &["sshd", "sshd-session"];

/// The header of one syslog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogLine<'a> {
    pub time: DateTime<FixedOffset>,
    pub identifier: &'a str,
    pub pid: u32,
    pub message: &'a str,
}

/// Splits one auth.log line into time, program, pid and message.
///
/// Traditional timestamps carry no year: the year is the one that puts the line at most a
/// day after `now`, so a December line read in January belongs to the year before.
#[must_use]
pub fn parse_syslog_line(line: &str, now: DateTime<Local>) -> Option<SyslogLine<'_>> {
    let (time, rest) =
        parse_rfc3339_prefix(line).or_else(|| parse_traditional_prefix(line, now))?;

    // After the time: the host name, then `ident[pid]: message`.
    let rest = rest.trim_start();
    let (_host, rest) = rest.split_once(' ')?;
    let (tag, message) = rest.split_once(": ")?;
    let (identifier, pid) = tag.strip_suffix(']')?.split_once('[')?;
    let pid = pid.parse().ok()?;
    Some(SyslogLine {
        time,
        identifier,
        pid,
        message,
    })
}

fn parse_rfc3339_prefix(line: &str) -> Option<(DateTime<FixedOffset>, &str)> {
    let (stamp, rest) = line.split_once(' ')?;
    if !stamp.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let time = DateTime::parse_from_rfc3339(stamp).ok()?;
    Some((time, rest))
}

fn parse_traditional_prefix(
    line: &str,
    now: DateTime<Local>,
) -> Option<(DateTime<FixedOffset>, &str)> {
    // `Mmm dd HH:MM:SS`: always 15 bytes, the day padded with a space.
    let stamp = line.get(..15)?;
    let rest = line.get(15..)?;
    let month = match stamp.get(..3)? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let day: u32 = stamp.get(4..6)?.trim_start().parse().ok()?;
    let clock = chrono::NaiveTime::parse_from_str(stamp.get(7..15)?, "%H:%M:%S").ok()?;
    for year in [now.year(), now.year() - 1] {
        let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
            continue;
        };
        let naive = NaiveDateTime::new(date, clock);
        let Some(time) = Local.from_local_datetime(&naive).earliest() else {
            continue;
        };
        if time <= now + chrono::Duration::days(1) {
            return Some((time.fixed_offset(), rest));
        }
    }
    None
}

/// Reads one sshd message logged by process `pid` at `time`.
#[must_use]
pub fn parse_message(message: &str, pid: u32, time: DateTime<FixedOffset>) -> Option<SshEvent> {
    let message = message.trim_end();
    let message = message.strip_suffix(" [preauth]").unwrap_or(message);

    if let Some(rest) = message.strip_prefix("Accepted ") {
        let (method, rest) = rest.split_once(" for ")?;
        let (user, ip, port, tail) = parse_user_from_port(rest)?;
        let fingerprint = tail
            .strip_prefix(" ssh2: ")
            .and_then(|key| key.split(' ').nth(1))
            .filter(|f| f.contains(':'))
            .map(str::to_owned);
        return Some(SshEvent::Login(SshLogin {
            time,
            user: user.to_owned(),
            client_ip: ip,
            client_port: port,
            method: AuthMethod::parse(method),
            fingerprint,
            sshd_pid: pid,
        }));
    }
    if let Some(rest) = message.strip_prefix("Failed ") {
        let (method, rest) = rest.split_once(" for ")?;
        let (invalid_user, rest) = match rest.strip_prefix("invalid user ") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let (user, ip, port, _) = parse_user_from_port(rest)?;
        return Some(SshEvent::Failure(SshFailure {
            time,
            user: user.to_owned(),
            invalid_user,
            client_ip: ip,
            client_port: port,
            method: AuthMethod::parse(method),
            sshd_pid: pid,
        }));
    }
    if let Some(rest) = message.strip_prefix("Invalid user ") {
        let (user, ip, port, _) = parse_user_from_port(rest)?;
        return Some(SshEvent::Failure(SshFailure {
            time,
            user: user.to_owned(),
            invalid_user: true,
            client_ip: ip,
            client_port: port,
            method: AuthMethod::Other("none".to_owned()),
            sshd_pid: pid,
        }));
    }
    if let Some(rest) = message.strip_prefix("pam_unix(sshd:session): session opened for user ") {
        // `alice(uid=1000) by (uid=0)` since Linux-PAM 1.4, `alice by (uid=0)` before.
        let user = rest.split_once(" by ").map_or(rest, |(user, _)| user);
        let user = user.split_once("(uid=").map_or(user, |(user, _)| user);
        return Some(SshEvent::SessionOpened {
            time,
            user: user.to_owned(),
            sshd_pid: pid,
        });
    }
    if let Some(user) = message.strip_prefix("pam_unix(sshd:session): session closed for user ") {
        return Some(SshEvent::SessionClosed {
            time,
            user: user.to_owned(),
            sshd_pid: pid,
        });
    }
    None
}

/// Splits `USER from IP port PORT TAIL`; the user name is everything before the last
/// ` from ` that is followed by an address, so a name cannot forge the address.
fn parse_user_from_port(text: &str) -> Option<(&str, IpAddr, u16, &str)> {
    let mut search_end = text.len();
    while let Some(at) = text[..search_end].rfind(" from ") {
        let user = &text[..at];
        let after = &text[at + " from ".len()..];
        if let Some((ip, rest)) = after.split_once(" port ") {
            let ip = ip.split('%').next().unwrap_or(ip);
            if let Ok(ip) = ip.parse::<IpAddr>() {
                let digits = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                if let Ok(port) = rest[..digits].parse::<u16>() {
                    if !user.is_empty() {
                        return Some((user, ip, port, &rest[digits..]));
                    }
                }
            }
        }
        search_end = at;
    }
    None
}

impl AuthMethod {
    /// Reads a method as sshd names it (`keyboard-interactive/pam` is keyboard-interactive).
    #[must_use]
    pub fn parse(text: &str) -> Self {
        match text.split('/').next().unwrap_or(text) {
            "password" => Self::Password,
            "publickey" => Self::Publickey,
            "keyboard-interactive" => Self::KeyboardInteractive,
            "hostbased" => Self::Hostbased,
            "gssapi-with-mic" | "gssapi-keyex" | "gssapi" => Self::Gssapi,
            _ => Self::Other(crate::event::escape_control(text).into_owned()),
        }
    }

    /// Returns the method as events spell it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Password => "password",
            Self::Publickey => "publickey",
            Self::KeyboardInteractive => "keyboard-interactive",
            Self::Hostbased => "hostbased",
            Self::Gssapi => "gssapi",
            Self::Other(text) => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-12-04T02:05:50+00:00").expect("valid time")
    }

    fn login(message: &str) -> SshLogin {
        match parse_message(message, 17383, at()) {
            Some(SshEvent::Login(login)) => login,
            other => panic!("not a login: {other:?} from {message}"),
        }
    }

    #[test]
    fn accepted_lines_of_openssh_9_2_become_logins() {
        let key = login(
            "Accepted publickey for fenrirx from 127.0.0.1 port 59414 ssh2: ED25519 \
             SHA256:OM1zYKzaGYca27mRiXIklA1XS9WYwN8HKuD3rF9SqrY",
        );
        assert_eq!(key.user, "fenrirx");
        assert_eq!(key.client_ip, "127.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(key.client_port, 59414);
        assert_eq!(key.method, AuthMethod::Publickey);
        assert_eq!(
            key.fingerprint.as_deref(),
            Some("SHA256:OM1zYKzaGYca27mRiXIklA1XS9WYwN8HKuD3rF9SqrY")
        );
        assert_eq!(key.sshd_pid, 17383);

        let password = login("Accepted password for alice from 2001:db8::7 port 50022 ssh2");
        assert_eq!(password.method, AuthMethod::Password);
        assert_eq!(
            password.client_ip,
            "2001:db8::7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(password.fingerprint, None);

        let kbd = login("Accepted keyboard-interactive/pam for bob from 10.1.2.3 port 4242 ssh2");
        assert_eq!(kbd.method, AuthMethod::KeyboardInteractive);

        let cert = login(
            "Accepted publickey for carol from 192.0.2.9 port 22022 ssh2: ED25519-CERT \
             SHA256:abcDEF ID carol@example (serial 7) CA ED25519 SHA256:caKEY",
        );
        assert_eq!(cert.fingerprint.as_deref(), Some("SHA256:abcDEF"));
    }

    #[test]
    fn a_user_name_cannot_forge_the_address() {
        let forged =
            login("Accepted password for eve from 6.6.6.6 port 1 from 10.0.0.5 port 5000 ssh2");
        assert_eq!(forged.client_ip, "10.0.0.5".parse::<IpAddr>().expect("ip"));
        assert_eq!(forged.user, "eve from 6.6.6.6 port 1");
    }

    #[test]
    fn failures_and_invalid_users_are_failures() {
        let cases = [
            (
                "Failed password for root from 203.0.113.4 port 40000 ssh2",
                "root",
                false,
            ),
            (
                "Failed password for invalid user admin from 203.0.113.4 port 40001 ssh2",
                "admin",
                true,
            ),
            (
                "Invalid user nosuchuser from 127.0.0.1 port 59426",
                "nosuchuser",
                true,
            ),
            (
                "Failed publickey for alice from 198.51.100.1 port 2222 ssh2: RSA SHA256:xyz",
                "alice",
                false,
            ),
        ];
        for (message, user, invalid) in cases {
            match parse_message(message, 1, at()) {
                Some(SshEvent::Failure(failure)) => {
                    assert_eq!(failure.user, user, "{message}");
                    assert_eq!(failure.invalid_user, invalid, "{message}");
                }
                other => panic!("{message}: {other:?}"),
            }
        }
    }

    #[test]
    fn pam_session_lines_open_and_close_sessions() {
        let opened = parse_message(
            "pam_unix(sshd:session): session opened for user fenrirx(uid=1001) by (uid=0)",
            17383,
            at(),
        );
        assert!(
            matches!(opened, Some(SshEvent::SessionOpened { ref user, sshd_pid: 17383, .. }) if user == "fenrirx")
        );
        let old = parse_message(
            "pam_unix(sshd:session): session opened for user alice by (uid=0)",
            5,
            at(),
        );
        assert!(matches!(old, Some(SshEvent::SessionOpened { ref user, .. }) if user == "alice"));
        let closed = parse_message(
            "pam_unix(sshd:session): session closed for user fenrirx",
            17383,
            at(),
        );
        assert!(
            matches!(closed, Some(SshEvent::SessionClosed { ref user, .. }) if user == "fenrirx")
        );
    }

    #[test]
    fn other_and_malformed_messages_are_ignored() {
        for message in [
            "Server listening on 127.0.0.1 port 42222.",
            "Received disconnect from 127.0.0.1 port 59414:11: disconnected by user",
            "Disconnected from user fenrirx 127.0.0.1 port 59414",
            "pam_systemd(sshd:session): Failed to connect to system bus: No such file or directory",
            "Connection closed by invalid user nosuchuser 127.0.0.1 port 59426 [preauth]",
            "Accepted publickey for x from not-an-ip port 1 ssh2",
            "Accepted publickey for x from 1.2.3.4 port 99999 ssh2",
            "Accepted",
            "Accepted  for  from  port ",
            "",
        ] {
            assert_eq!(parse_message(message, 1, at()), None, "{message}");
        }
    }

    #[test]
    fn syslog_headers_of_both_rsyslog_formats_are_read() {
        let now = Local::now();
        let line = parse_syslog_line(
            "2026-12-04T02:05:50.527495+00:00 vm sshd[17383]: Accepted publickey for a from \
             127.0.0.1 port 1 ssh2",
            now,
        )
        .expect("rfc 3339 line");
        assert_eq!(line.identifier, "sshd");
        assert_eq!(line.pid, 17383);
        assert!(line.message.starts_with("Accepted"));
        assert_eq!(line.time.to_rfc3339(), "2026-12-04T02:05:50.527495+00:00");

        let line = parse_syslog_line(
            "Dec  4 02:06:14 vm sshd[18115]: pam_unix(sshd:session): session closed for user x",
            now,
        )
        .expect("traditional line");
        assert_eq!(line.pid, 18115);
        assert_eq!(line.identifier, "sshd");
        assert!(line.time <= now.fixed_offset() + chrono::Duration::days(1));

        for garbage in [
            "",
            "Dec",
            "Foo  4 02:06:14 vm sshd[1]: x",
            "2026-12-04T02:05:50Z vm sshd: x",
        ] {
            assert_eq!(parse_syslog_line(garbage, now), None, "{garbage}");
        }
    }

    #[test]
    fn a_december_line_read_in_january_is_last_year() {
        let now = Local
            .with_ymd_and_hms(2027, 1, 2, 10, 0, 0)
            .earliest()
            .expect("valid time");
        let line = parse_syslog_line("Dec 31 23:59:59 vm sshd[1]: x", now).expect("line");
        assert_eq!(line.time.year(), 2026);
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(text in ".{0,200}") {
            let _ = parse_message(&text, 1, at());
            let _ = parse_syslog_line(&text, Local::now());
        }
    }
}
