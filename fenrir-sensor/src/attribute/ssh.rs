//! SSH attribution: sshd's logins in, `actor.ssh` and the event's `ip` out.
//!
//! In: [`SshBatch`]es from the login reader and events whose actor carries the kernel's
//! process ancestry. Out: for an event whose ancestry contains the sshd process of a login,
//! that login's client address, port, method, key and time — matched by pid, never by time —
//! plus, for the rule stage, the recent logins judged to come from an unusual address.
//!
//! State: the logins of sessions still open (or closed a short while ago), the recent
//! successful logins, and the [`LoginHistory`] each login is judged against *before* it is
//! recorded, so a login never vouches for itself. The history and the reader's position are
//! saved together, history first: after a crash a login may be learned twice, never lost.
//!
//! Nothing here waits: a change whose login has not been read yet is held by
//! [`super::hold`] until it is, and attributed then.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::history::LoginHistory;
use crate::event::{escape_control, Event};
use crate::rule::net::IpList;
use crate::source::checkpoint::{write_atomically, CheckpointStore};
use crate::source::ssh::reader::{LoginSource, Reader, ReaderOptions, Resume, SshBatch};
use crate::source::ssh::{SshConfig, SshEvent, SshLogin};

/// Sessions remembered at most; the oldest go first.
const MAX_SESSIONS: usize = 4096;
/// Recent successful logins remembered at most, for correlation.
const MAX_RECENT: usize = 10_000;
/// A closed session still attributes changes read this long after it closed: its last
/// dpkg lines may be read after sshd logged the close.
const CLOSED_GRACE: Duration = Duration::from_mins(10);
/// Sessions whose login could not be found, not waited for again.
const MAX_GAVE_UP: usize = 1024;
/// How often the history and position are saved when nothing urges it.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// A successful login and how it was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgedLogin {
    pub login: SshLogin,
    /// Whether the address was unusual for the user when the login happened.
    pub unusual: bool,
    closed: Option<DateTime<FixedOffset>>,
}

impl JudgedLogin {
    /// Returns the login as `actor.ssh` shows it.
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "sshd_pid": self.login.sshd_pid,
            "user": escape_control(&self.login.user),
            "client_ip": self.login.client_ip.to_string(),
            "client_port": self.login.client_port,
            "method": escape_control(self.login.method.as_str()),
            "fingerprint": self.login.fingerprint.as_deref().map(escape_control),
            "login_time": self.login.time.to_rfc3339(),
            "unusual_ip": self.unusual,
        })
    }
}

/// Where the journal reader's cursor is kept.
#[derive(Debug, Serialize, Deserialize)]
struct CursorFile {
    cursor: String,
}

/// Joins package changes to SSH logins.
#[derive(Debug)]
pub struct SshCorrelator {
    reader: Option<Reader>,
    sessions: HashMap<u32, JudgedLogin>,
    recent: VecDeque<JudgedLogin>,
    history: LoginHistory,
    whitelist: IpList,
    history_path: PathBuf,
    auth_log_store: Option<CheckpointStore>,
    cursor_path: PathBuf,
    unsaved: Option<Resume>,
    history_dirty: bool,
    last_save: Instant,
    recent_keep: Duration,
    gave_up: HashSet<u32>,
    caught_up: bool,
    failures: u64,
    wake: Arc<Notify>,
    /// Whether logins not read yet may still come: a reader runs, or a feeder said so.
    expects_logins: bool,
}

/// The processes above a change's package manager, as the kernel recorded them: each pid
/// and whether the process is an sshd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ancestry(Vec<(u32, bool)>);

impl Ancestry {
    /// Reads the ancestry of the event's actor; empty without one.
    #[must_use]
    pub fn of(event: &Event) -> Self {
        let Some(chain) = event.actor.as_ref().and_then(|a| a["ancestry"].as_array()) else {
            return Self::default();
        };
        Self(
            chain
                .iter()
                .filter_map(|a| {
                    let pid = u32::try_from(a["pid"].as_u64()?).ok()?;
                    let is_sshd = a["comm"].as_str().is_some_and(|c| c.starts_with("sshd"));
                    Some((pid, is_sshd))
                })
                .collect(),
        )
    }

    /// Returns whether an sshd is among the processes: the change was made over SSH.
    #[must_use]
    pub fn has_sshd(&self) -> bool {
        self.0.iter().any(|a| a.1)
    }

    fn sshd_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter(|a| a.1).map(|a| a.0)
    }
}

impl SshCorrelator {
    /// Loads the history and the reader's position from `state_dir` and starts the reader.
    ///
    /// Logins are kept for `recent_keep` for correlation. Without a reader (`source = off`)
    /// nothing is attributed.
    ///
    /// # Errors
    /// Fails when the reader's thread cannot start.
    pub fn start(
        config: &SshConfig,
        source: Option<&LoginSource>,
        whitelist: IpList,
        state_dir: &Path,
        reader_options: ReaderOptions,
        recent_keep: Duration,
    ) -> anyhow::Result<Self> {
        let dir = state_dir.join("ssh");
        let history_path = dir.join("history.json");
        let period = i64::try_from(config.learning_period().as_secs()).unwrap_or(i64::MAX);
        let mut history = LoginHistory::load(&history_path, config.history_max_entries, period)
            .unwrap_or_else(|err| {
                warn!(path = %history_path.display(), error = %err, "login history unusable; starting empty");
                LoginHistory::new(config.history_max_entries, period)
            });
        history.expire(Utc::now().timestamp());
        let cursor_path = dir.join("journal-cursor.json");
        let mut auth_log_store = None;
        let resume = match source {
            Some(LoginSource::AuthLog(path)) => {
                let store = CheckpointStore::for_log(&dir, path);
                let checkpoint = store.load().unwrap_or_else(|err| {
                    warn!(error = %format!("{err:#}"), "ssh log checkpoint unusable; rereading the log");
                    None
                });
                auth_log_store = Some(store);
                checkpoint.map(Resume::AuthLog)
            }
            Some(LoginSource::Journal { .. }) => std::fs::read(&cursor_path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<CursorFile>(&bytes).ok())
                .map(|file| Resume::Journal(file.cursor)),
            None => None,
        };
        info!(
            source = ?source,
            learned = history.len(),
            resumed = resume.is_some(),
            "ssh login correlation ready"
        );
        let wake = Arc::new(Notify::new());
        let reader = match source {
            Some(source) => Some(Reader::start(
                source,
                resume,
                reader_options,
                Arc::clone(&wake),
            )?),
            None => None,
        };
        Ok(Self {
            reader,
            sessions: HashMap::new(),
            recent: VecDeque::new(),
            history,
            whitelist,
            history_path,
            auth_log_store,
            cursor_path,
            unsaved: None,
            history_dirty: false,
            last_save: Instant::now(),
            recent_keep,
            gave_up: HashSet::new(),
            caught_up: false,
            failures: 0,
            wake,
            expects_logins: source.is_some(),
        })
    }

    /// Creates a correlator without a reader, fed by [`SshCorrelator::ingest`] (for tests and
    /// tools).
    #[must_use]
    pub fn detached(whitelist: IpList, history: LoginHistory, recent_keep: Duration) -> Self {
        Self {
            reader: None,
            sessions: HashMap::new(),
            recent: VecDeque::new(),
            history,
            whitelist,
            history_path: PathBuf::new(),
            auth_log_store: None,
            cursor_path: PathBuf::new(),
            unsaved: None,
            history_dirty: false,
            last_save: Instant::now(),
            recent_keep,
            gave_up: HashSet::new(),
            caught_up: true,
            failures: 0,
            wake: Arc::new(Notify::new()),
            expects_logins: false,
        }
    }

    /// Makes a detached correlator treat a change over SSH whose login it has not been given
    /// as waiting for that login, as a reader-fed one does.
    #[must_use]
    pub fn expecting_logins(mut self) -> Self {
        self.expects_logins = true;
        self
    }

    /// Returns what is notified when logins arrive or a requested read is done.
    #[must_use]
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Returns a moment up to which every login the source held will have been taken by the
    /// next [`SshCorrelator::drain`]; the present moment without a reader.
    #[must_use]
    pub fn read_through(&self) -> Instant {
        self.reader
            .as_ref()
            .map_or_else(Instant::now, Reader::read_through)
    }

    /// Asks the reader to read its source now; [`SshCorrelator::wake`] is notified when done.
    pub fn request_read(&self) {
        if let Some(reader) = &self.reader {
            reader.request_read();
        }
    }

    /// Takes every batch the reader has ready.
    pub fn drain(&mut self) {
        let mut batches = Vec::new();
        if let Some(reader) = &self.reader {
            while let Ok(batch) = reader.batches.try_recv() {
                batches.push(batch);
            }
        }
        for batch in batches {
            self.take(batch);
        }
        self.save_if_due(false);
    }

    fn take(&mut self, batch: SshBatch) {
        let urgent = batch.events.iter().any(|e| matches!(e, SshEvent::Login(_)));
        for event in batch.events {
            self.ingest(event);
        }
        if batch.resume.is_some() {
            self.unsaved = batch.resume;
        }
        if batch.caught_up && !self.caught_up {
            self.caught_up = true;
            info!(learned = self.history.len(), "ssh login history caught up");
        }
        if urgent {
            self.save_if_due(true);
        }
    }

    /// Handles one sshd event: a login is judged against the history, then recorded.
    pub fn ingest(&mut self, event: SshEvent) {
        match event {
            SshEvent::Login(login) => {
                let at = login.time.timestamp();
                let whitelisted = self.whitelist.contains(login.client_ip);
                let unusual =
                    !whitelisted && !self.history.has_seen(&login.user, login.client_ip, at);
                debug!(
                    user = %escape_control(&login.user),
                    ip = %login.client_ip,
                    sshd_pid = login.sshd_pid,
                    unusual,
                    whitelisted,
                    "ssh login"
                );
                self.history.record(&login.user, login.client_ip, at);
                self.history_dirty = true;
                let judged = JudgedLogin {
                    login,
                    unusual,
                    closed: None,
                };
                if self.sessions.len() >= MAX_SESSIONS {
                    self.forget_oldest_session();
                }
                self.gave_up.remove(&judged.login.sshd_pid);
                self.sessions.insert(judged.login.sshd_pid, judged.clone());
                if self.recent.len() >= MAX_RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(judged);
            }
            SshEvent::SessionClosed { time, sshd_pid, .. } => {
                if let Some(session) = self.sessions.get_mut(&sshd_pid) {
                    session.closed = Some(time);
                }
            }
            SshEvent::Failure(failure) => {
                self.failures += 1;
                debug!(
                    user = %escape_control(&failure.user),
                    ip = %failure.client_ip,
                    invalid_user = failure.invalid_user,
                    "ssh authentication failed"
                );
            }
            SshEvent::SessionOpened { .. } => {}
        }
        self.prune();
    }

    fn forget_oldest_session(&mut self) {
        if let Some(oldest) = self
            .sessions
            .iter()
            .min_by_key(|(_, s)| s.login.time)
            .map(|(pid, _)| *pid)
        {
            self.sessions.remove(&oldest);
        }
    }

    fn prune(&mut self) {
        let now = Utc::now().fixed_offset();
        let grace = chrono::Duration::from_std(CLOSED_GRACE).unwrap_or_default();
        self.sessions
            .retain(|_, s| s.closed.is_none_or(|closed| now - closed <= grace));
        let keep = chrono::Duration::from_std(self.recent_keep).unwrap_or_default();
        while self
            .recent
            .front()
            .is_some_and(|login| now - login.login.time > keep)
        {
            self.recent.pop_front();
        }
    }

    /// Fills `actor.ssh` and `ip` from the login whose sshd process is in the event's
    /// ancestry, as far as logins have been read.
    pub fn attribute(&self, event: &mut Event) {
        let ancestry = Ancestry::of(event);
        if !ancestry.has_sshd() {
            return;
        }
        let Some(login) = self.find(&ancestry) else {
            debug!(sshd_pids = ?ancestry.sshd_pids().collect::<Vec<_>>(), "no login known for the ssh session");
            return;
        };
        event.ip = Some(login.login.client_ip.to_string());
        if let Some(actor) = event.actor.as_mut() {
            actor["ssh"] = login.to_json();
        }
    }

    /// Returns whether a change with this ancestry was made in an SSH session whose login
    /// has not been read yet and is still worth waiting for.
    #[must_use]
    pub fn awaits_login(&self, ancestry: &Ancestry) -> bool {
        self.expects_logins
            && ancestry.has_sshd()
            && !ancestry.sshd_pids().any(|pid| self.gave_up.contains(&pid))
            && self.find(ancestry).is_none()
    }

    /// Stops waiting for the login of this ancestry's sessions: it was not found in time, and
    /// later changes of the same sessions are judged without it at once.
    pub fn give_up(&mut self, ancestry: &Ancestry) {
        debug!(sshd_pids = ?ancestry.sshd_pids().collect::<Vec<_>>(), "no login found for the ssh session in time");
        if self.gave_up.len() >= MAX_GAVE_UP {
            self.gave_up.clear();
        }
        self.gave_up.extend(ancestry.sshd_pids());
    }

    /// Finds the nearest ancestor that is the sshd process of a known login.
    fn find(&self, ancestry: &Ancestry) -> Option<&JudgedLogin> {
        ancestry.0.iter().find_map(|(pid, _)| {
            let session = self.sessions.get(pid)?;
            is_same_process(*pid, &session.login).then_some(session)
        })
    }

    /// Returns the successful logins from unusual addresses made up to `window` before `at`.
    #[must_use]
    pub fn unusual_logins_before(
        &self,
        at: DateTime<FixedOffset>,
        window: Duration,
    ) -> Vec<&JudgedLogin> {
        let window = chrono::Duration::from_std(window).unwrap_or_default();
        // dpkg stamps whole seconds; a login in the same second may follow the stamp.
        let slack = chrono::Duration::seconds(2);
        self.recent
            .iter()
            .filter(|l| l.unusual && l.login.time >= at - window && l.login.time <= at + slack)
            .collect()
    }

    /// Returns whether `ip` is whitelisted.
    #[must_use]
    pub fn is_whitelisted(&self, ip: IpAddr) -> bool {
        self.whitelist.contains(ip)
    }

    /// Returns the failed authentications seen so far.
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.failures
    }

    fn save_if_due(&mut self, urgent: bool) {
        if !self.history_dirty && self.unsaved.is_none() {
            return;
        }
        if !urgent && self.last_save.elapsed() < SAVE_INTERVAL {
            return;
        }
        self.last_save = Instant::now();
        if self.history_dirty && !self.history_path.as_os_str().is_empty() {
            if let Err(err) = self.history.save(&self.history_path) {
                warn!(path = %self.history_path.display(), error = %err, "failed to save the login history");
                return;
            }
            self.history_dirty = false;
        }
        match self.unsaved.take() {
            Some(Resume::AuthLog(checkpoint)) => {
                if let Some(store) = &self.auth_log_store {
                    if let Err(err) = store.save(&checkpoint) {
                        warn!(error = %format!("{err:#}"), "failed to save the ssh log checkpoint");
                    }
                }
            }
            Some(Resume::Journal(cursor)) => {
                let mut bytes = serde_json::to_vec(&CursorFile { cursor }).unwrap_or_default();
                bytes.push(b'\n');
                if let Err(err) = write_atomically(&self.cursor_path, &bytes) {
                    warn!(path = %self.cursor_path.display(), error = %err, "failed to save the journal cursor");
                }
            }
            None => {}
        }
    }

    /// Saves what is unsaved and stops the reader.
    pub fn close(&mut self) {
        self.drain();
        self.save_if_due(true);
        if let Some(mut reader) = self.reader.take() {
            reader.stop();
        }
    }
}

impl Drop for SshCorrelator {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.close();
        }
    }
}

/// Guards against pid reuse: a live process under the login's pid must have started before
/// the login. A process that has exited cannot be checked and is taken as the login's.
fn is_same_process(pid: u32, login: &SshLogin) -> bool {
    match process_start(pid) {
        Some(started) => started <= SystemTime::from(login.time) + START_SLACK,
        None => true,
    }
}

/// How much later than its login an sshd may seem to have started: log stamps are cut to
/// whole seconds, and the wall clock may have been stepped since.
const START_SLACK: Duration = Duration::from_secs(10);

/// Returns when process `pid` started, in today's wall-clock terms, from `/proc`.
///
/// The start is kept in clock ticks since boot; it is placed relative to the current uptime
/// rather than to the boot time `/proc/stat` recorded, which a stepped clock leaves behind.
fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last `)`.
    let after = stat.rsplit_once(')')?.1;
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|&hz| hz > 0)?;
    let age = Duration::try_from_secs_f64(uptime)
        .ok()?
        .checked_sub(Duration::from_millis(ticks * 1000 / hz))
        .unwrap_or_default();
    SystemTime::now().checked_sub(age)
}

/// Returns how far back the journal is read on a first start: the learning period.
#[must_use]
pub fn learn_since(config: &SshConfig) -> SystemTime {
    SystemTime::now()
        .checked_sub(config.learning_period())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ssh::AuthMethod;

    fn login(user: &str, ip: &str, pid: u32, time: DateTime<FixedOffset>) -> SshEvent {
        SshEvent::Login(SshLogin {
            time,
            user: user.into(),
            client_ip: ip.parse().expect("ip"),
            client_port: 40_000,
            method: AuthMethod::Publickey,
            fingerprint: Some("SHA256:abc".into()),
            sshd_pid: pid,
        })
    }

    fn correlator(whitelist: &[&str]) -> SshCorrelator {
        SshCorrelator::detached(
            IpList::parse(whitelist).expect("valid"),
            LoginHistory::new(100, 30 * 86_400),
            Duration::from_mins(10),
        )
    }

    fn event_with_ancestry(pids: &[(u32, &str)]) -> Event {
        let change = crate::parse::PackageChange {
            category: crate::event::Category::PackageInstall,
            package: "x".into(),
            arch: None,
            old_version: None,
            new_version: Some("1".into()),
            timestamp: Utc::now().naive_local(),
            raw_line: String::new(),
            last_state: None,
            logged_run: None,
        };
        let mut event = Event::from_change(&change, "h", "dpkg");
        let ancestry: Vec<Value> = pids
            .iter()
            .map(|(pid, comm)| json!({"pid": pid, "comm": comm}))
            .collect();
        event.actor = Some(json!({"ancestry": ancestry, "ssh": {"sshd_pid": pids[0].0}}));
        event
    }

    #[test]
    fn a_login_is_judged_before_it_is_recorded() {
        let mut ssh = correlator(&[]);
        let now = Utc::now().fixed_offset();
        ssh.ingest(login("alice", "192.0.2.1", u32::MAX - 1, now));
        ssh.ingest(login("alice", "192.0.2.1", u32::MAX - 2, now));
        ssh.ingest(login("bob", "192.0.2.1", u32::MAX - 3, now));
        let unusual: Vec<u32> = ssh
            .unusual_logins_before(now, Duration::from_mins(1))
            .iter()
            .map(|l| l.login.sshd_pid)
            .collect();
        assert_eq!(
            unusual,
            [u32::MAX - 1, u32::MAX - 3],
            "first sight per user only"
        );
    }

    #[test]
    fn whitelisted_addresses_are_never_unusual() {
        let mut ssh = correlator(&["192.0.2.0/24"]);
        let now = Utc::now().fixed_offset();
        ssh.ingest(login("alice", "192.0.2.1", u32::MAX - 1, now));
        assert!(ssh
            .unusual_logins_before(now, Duration::from_mins(1))
            .is_empty());
    }

    #[test]
    fn the_session_is_found_by_the_pid_in_the_ancestry() {
        let mut ssh = correlator(&[]);
        let now = Utc::now().fixed_offset();
        // Pids far above pid_max exist in no /proc, so no reuse check applies.
        ssh.ingest(login("alice", "2001:db8::5", u32::MAX - 10, now));
        let mut event = event_with_ancestry(&[
            (u32::MAX - 20, "sudo"),
            (u32::MAX - 11, "sshd"),
            (u32::MAX - 10, "sshd"),
            (u32::MAX - 9, "sshd"),
        ]);
        ssh.attribute(&mut event);
        assert_eq!(event.ip.as_deref(), Some("2001:db8::5"));
        let ssh_json = &event.actor.as_ref().expect("actor")["ssh"];
        assert_eq!(ssh_json["sshd_pid"], u32::MAX - 10);
        assert_eq!(ssh_json["client_port"], 40_000);
        assert_eq!(ssh_json["method"], "publickey");
        assert_eq!(ssh_json["unusual_ip"], true);

        let mut other = event_with_ancestry(&[(u32::MAX - 30, "sshd")]);
        ssh.attribute(&mut other);
        assert_eq!(other.ip, None, "another session is not this login's");
    }

    #[test]
    fn a_reused_pid_does_not_inherit_an_old_login() {
        let mut ssh = correlator(&[]);
        // This test process is alive and started before now; a login "an hour ago" under
        // its pid cannot be its own.
        let pid = std::process::id();
        let long_ago = Utc::now().fixed_offset() - chrono::Duration::days(3650);
        ssh.ingest(login("alice", "192.0.2.1", pid, long_ago));
        let mut event = event_with_ancestry(&[(pid, "sshd")]);
        ssh.attribute(&mut event);
        assert_eq!(event.ip, None);
    }
}
