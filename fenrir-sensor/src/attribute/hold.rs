//! Holding events until the SSH logins they are judged against have been read.
//!
//! In: events with their kernel actor, as their lines are read. Out: the same events, ready
//! for SSH attribution and the rules, once the login reader has read everything sshd logged
//! up to `log_delay` after the change was read — so a login of another session that reaches
//! auth.log or the journal a moment after the change still counts for `ssh-unusual-login` —
//! and, for a change made in an SSH session whose login has not been read, once that login is
//! read; never later than `wait` after the change was read. State: the held events in the
//! order they came, and per followed source resume points: log positions with the reader's
//! state there, from which a restart would read every held event's line again. A released
//! event no sink took keeps its point pinned until the sinks have taken everything.
//!
//! Only the events that wait are held back. Events of other dpkg runs overtake them; events
//! of one run (one dpkg process, or none) leave in the order they came, so a run's
//! maintainer-script summary never precedes its changes.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::debug;

use super::ssh::{Ancestry, SshCorrelator};
use crate::event::{Category, Event};
use crate::source::ssh::reader::LoginSource;
use crate::source::ssh::SshConfig;
use crate::source::tail::Position;

/// dpkg stamps whole seconds, and the pipeline may read a line a moment after it was written:
/// a change whose stamp is older than the log delay by more than this was read late, when
/// every login before it has long reached the reader, and is not held for logins.
const LATE_READ: Duration = Duration::from_secs(5);
/// Events held at most, by default.
const CAPACITY: usize = 10_000;

/// How events are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldOptions {
    /// How long sshd's messages may take to reach the reader.
    pub log_delay: Duration,
    /// How long an event is held at most.
    pub wait: Duration,
    /// Whether rules correlate changes with other sessions' logins, so that every recent
    /// change waits for the log delay, not only those whose own login is missing.
    pub correlate: bool,
    /// Events held at most; beyond it the oldest is judged at once.
    pub capacity: usize,
}

/// A log position to resume from and the reader's saved state there.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    pub position: Position,
    pub transactions: Option<Value>,
    source: usize,
    seq: u64,
}

/// An event leaving the queue, with the resume point it still needs while no sink has
/// taken it.
#[derive(Debug)]
pub struct Released {
    pub event: Event,
    pub pin: Option<Pin>,
}

/// A resume point a released event needs until the sinks take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    source: usize,
    seq: u64,
}

#[derive(Debug)]
struct Held {
    event: Event,
    /// The dpkg process that wrote the change; events of one run keep their order.
    run: Option<u64>,
    /// The followed source the event came from.
    source: Option<usize>,
    ancestry: Ancestry,
    read_at: Instant,
    /// Whether the event waits for the reader to pass `read_at + log_delay`.
    settles: bool,
    /// The resume point before the event's line, for events the checkpoint protects.
    point: Option<u64>,
}

impl Held {
    fn pin(&self) -> Option<Pin> {
        Some(Pin {
            source: self.source?,
            seq: self.point?,
        })
    }
}

impl HoldOptions {
    /// Returns the options for logins read from `source` as `ssh` configures it; without a
    /// source nothing waits.
    #[must_use]
    pub fn for_source(ssh: &SshConfig, source: Option<&LoginSource>, correlate: bool) -> Self {
        Self {
            log_delay: if source.is_some() {
                ssh.log_delay()
            } else {
                Duration::ZERO
            },
            wait: Duration::from_millis(ssh.attribution_wait_ms),
            correlate,
            capacity: CAPACITY,
        }
    }
}

/// Events waiting for their SSH logins.
#[derive(Debug)]
pub struct HoldQueue {
    options: HoldOptions,
    held: VecDeque<Held>,
    points: VecDeque<ResumePoint>,
    /// Points of released events no sink has taken yet.
    pins: Vec<Pin>,
    next_seq: u64,
    /// Whether the sensor is stopping: nothing waits any more.
    closing: bool,
    /// Events judged early because the queue was full.
    pub overflowed: u64,
}

impl HoldQueue {
    /// Creates an empty queue.
    #[must_use]
    pub fn new(options: HoldOptions) -> Self {
        Self {
            options,
            held: VecDeque::new(),
            points: VecDeque::new(),
            pins: Vec::new(),
            next_seq: 0,
            closing: false,
            overflowed: 0,
        }
    }

    /// Returns whether no event is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Records that every line of `source` before `position` has been handled and that its
    /// reader's state there is `transactions`: events of later lines are read again from
    /// here after a restart.
    pub fn note_position(
        &mut self,
        source: usize,
        position: &Position,
        transactions: Option<&Value>,
    ) {
        let latest = self.points.iter().rev().find(|p| p.source == source);
        if latest
            .is_some_and(|p| &p.position == position && p.transactions.as_ref() == transactions)
        {
            return;
        }
        self.points.push_back(ResumePoint {
            position: position.clone(),
            transactions: transactions.cloned(),
            source,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        self.forget_unused_points();
    }

    /// Returns the point `source`'s checkpoint may not pass: the one before the line of its
    /// oldest event still held or pinned; `None` when there is none.
    #[must_use]
    pub fn checkpoint_limit(&self, source: usize) -> Option<&ResumePoint> {
        let oldest = self
            .held
            .iter()
            .filter_map(Held::pin)
            .chain(self.pins.iter().copied())
            .filter(|pin| pin.source == source)
            .map(|pin| pin.seq)
            .min()?;
        self.points
            .iter()
            .find(|p| p.source == source && p.seq == oldest)
    }

    /// Returns whether no event of `source` is held.
    #[must_use]
    pub fn is_settled(&self, source: usize) -> bool {
        !self.held.iter().any(|h| h.source == Some(source))
    }

    /// Keeps `pin`'s point while the event it belongs to waits in a sink's backlog.
    pub fn pin(&mut self, pin: Pin) {
        self.pins.push(pin);
    }

    /// Releases every pin: the sinks have taken every event.
    pub fn unpin_all(&mut self) {
        if !self.pins.is_empty() {
            self.pins.clear();
            self.forget_unused_points();
        }
    }

    /// Makes every event leave at the next [`HoldQueue::release`]: the sensor is stopping.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Adds an event read just now from the followed source `source` (`None`: no log line
    /// of it that a restart would read again). The checkpoint of `source` does not pass the
    /// event's line while it is held.
    pub fn push(&mut self, event: Event, source: Option<usize>) {
        let settles = self.options.correlate
            && !self.options.log_delay.is_zero()
            && event.category != Category::PackageScripts
            && event.observed.is_none()
            && self.is_recent(&event);
        let run = event.actor.as_ref().and_then(|a| a["pid"].as_u64());
        let point = source.and_then(|source| {
            self.points
                .iter()
                .rev()
                .find(|p| p.source == source)
                .map(|p| p.seq)
        });
        self.held.push_back(Held {
            ancestry: Ancestry::of(&event),
            event,
            run,
            source,
            read_at: Instant::now(),
            settles,
            point,
        });
    }

    fn is_recent(&self, event: &Event) -> bool {
        let Ok(at) = DateTime::parse_from_rfc3339(&event.parsed_data.timestamp) else {
            return true;
        };
        let age = (Utc::now() - at.with_timezone(&Utc))
            .to_std()
            .unwrap_or_default();
        age <= self.options.log_delay + LATE_READ
    }

    /// Takes the logins read so far and returns the events that need not wait any longer,
    /// in order; asks the reader for a read when an event waits for one.
    ///
    /// The points of released events stay until the next [`HoldQueue::note_position`], so
    /// that one no sink takes can still be pinned.
    pub fn release(&mut self, ssh: Option<&mut SshCorrelator>) -> Vec<Released> {
        let Some(ssh) = ssh else {
            return self.release_all();
        };
        if self.closing {
            ssh.drain();
            return self.release_all();
        }

        // Read first: batches taken after this moment cover it.
        let through = ssh.read_through();
        ssh.drain();
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut blocked = HashSet::new();
        let mut wants_read = false;
        let overflow = self.held.len().saturating_sub(self.options.capacity);
        for (index, held) in std::mem::take(&mut self.held).into_iter().enumerate() {
            if index < overflow {
                self.overflowed += 1;
                debug!(
                    package = %held.event.parsed_data.package,
                    "too many events held for ssh logins; judging the oldest now"
                );
                ready.push(held.into());
                continue;
            }
            if blocked.contains(&held.run) {
                self.held.push_back(held);
                continue;
            }
            let awaits_login = ssh.awaits_login(&held.ancestry);
            let settle_at = held.read_at + self.options.log_delay;
            let settled = !held.settles || through >= settle_at;
            let expired = now >= held.read_at + self.options.wait;
            if (settled && !awaits_login) || expired {
                if awaits_login {
                    ssh.give_up(&held.ancestry);
                }
                ready.push(held.into());
            } else {
                wants_read |= !settled && now >= settle_at;
                blocked.insert(held.run);
                self.held.push_back(held);
            }
        }
        if wants_read {
            ssh.request_read();
        }
        ready
    }

    /// Returns every held event, in order, without waiting.
    pub fn release_all(&mut self) -> Vec<Released> {
        self.held.drain(..).map(Released::from).collect()
    }

    /// Returns when a held event may next become ready by time alone; arriving logins and
    /// finished reads are announced by the reader.
    #[must_use]
    pub fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        self.held
            .iter()
            .flat_map(|h| {
                let settle_at = h.read_at + self.options.log_delay;
                let settle = (h.settles && settle_at > now).then_some(settle_at);
                settle.into_iter().chain([h.read_at + self.options.wait])
            })
            .min()
    }

    /// Keeps each source's newest point, for its next held event, and the points held or
    /// pinned events still need.
    fn forget_unused_points(&mut self) {
        let needed: HashSet<u64> = self
            .held
            .iter()
            .filter_map(Held::pin)
            .chain(self.pins.iter().copied())
            .map(|pin| pin.seq)
            .collect();
        let mut newest = HashSet::new();
        let mut kept = VecDeque::with_capacity(self.points.len());
        for point in std::mem::take(&mut self.points).into_iter().rev() {
            if newest.insert(point.source) || needed.contains(&point.seq) {
                kept.push_front(point);
            }
        }
        self.points = kept;
    }
}

impl From<Held> for Released {
    fn from(held: Held) -> Self {
        Self {
            pin: held.pin(),
            event: held.event,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::json;

    use super::*;
    use crate::attribute::history::LoginHistory;
    use crate::rule::net::IpList;
    use crate::source::checkpoint::FileIdentity;
    use crate::source::ssh::{AuthMethod, SshEvent, SshLogin};

    fn options(wait_ms: u64) -> HoldOptions {
        HoldOptions {
            log_delay: Duration::ZERO,
            wait: Duration::from_millis(wait_ms),
            correlate: true,
            capacity: 100,
        }
    }

    fn event(package: &str, dpkg_pid: u64, sshd_pid: Option<u32>) -> Event {
        let change = crate::parse::PackageChange {
            category: Category::PackageInstall,
            package: package.into(),
            arch: None,
            old_version: None,
            new_version: Some("1".into()),
            timestamp: chrono::Local::now().naive_local(),
            raw_line: String::new(),
            last_state: None,
            logged_run: None,
        };
        let mut event = Event::from_change(&change, "h", "dpkg");
        let mut ancestry = vec![json!({"pid": dpkg_pid + 1, "comm": "sudo"})];
        if let Some(pid) = sshd_pid {
            ancestry.push(json!({"pid": pid, "comm": "sshd"}));
        }
        event.actor = Some(json!({"pid": dpkg_pid, "ancestry": ancestry}));
        event
    }

    fn correlator() -> SshCorrelator {
        SshCorrelator::detached(
            IpList::default(),
            LoginHistory::new(100, 86_400),
            Duration::from_mins(10),
        )
    }

    fn login(sshd_pid: u32) -> SshEvent {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        SshEvent::Login(SshLogin {
            time: Utc::now().fixed_offset(),
            user: "alice".into(),
            client_ip: ip,
            client_port: 2222,
            method: AuthMethod::Password,
            fingerprint: None,
            sshd_pid,
        })
    }

    fn packages(events: &[Released]) -> Vec<&str> {
        events
            .iter()
            .map(|r| r.event.parsed_data.package.as_str())
            .collect()
    }

    fn position(offset: u64) -> Position {
        Position {
            identity: FileIdentity { dev: 1, ino: 2 },
            fingerprint: None,
            offset,
        }
    }

    #[test]
    fn without_a_login_source_nothing_waits() {
        let mut hold = HoldQueue::new(options(60_000));
        hold.push(event("a", 10, Some(u32::MAX - 1)), Some(0));
        assert_eq!(packages(&hold.release(None)), ["a"]);
        assert!(hold.is_empty());
    }

    #[test]
    fn a_change_waits_for_its_own_login_while_other_runs_go_on() {
        let mut hold = HoldQueue::new(options(60_000));
        let mut ssh = correlator().expecting_logins();
        // Pids far above pid_max exist in no /proc, so no reuse check applies.
        let sshd = u32::MAX - 5;
        hold.push(event("over-ssh", 10, Some(sshd)), Some(0));
        hold.push(event("over-ssh-too", 10, Some(sshd)), Some(0));
        hold.push(event("local", 20, None), Some(0));
        assert_eq!(packages(&hold.release(Some(&mut ssh))), ["local"]);
        assert!(hold.next_wake().is_some());

        ssh.ingest(login(sshd));
        let mut released = hold.release(Some(&mut ssh));
        assert_eq!(packages(&released), ["over-ssh", "over-ssh-too"]);
        ssh.attribute(&mut released[0].event);
        assert_eq!(released[0].event.ip.as_deref(), Some("192.0.2.7"));
    }

    #[test]
    fn a_session_whose_login_never_comes_is_waited_for_once() {
        let mut hold = HoldQueue::new(options(50));
        let mut ssh = correlator().expecting_logins();
        let sshd = u32::MAX - 6;
        hold.push(event("first", 10, Some(sshd)), Some(0));
        assert!(hold.release(Some(&mut ssh)).is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(packages(&hold.release(Some(&mut ssh))), ["first"]);
        hold.push(event("second", 11, Some(sshd)), Some(0));
        assert_eq!(packages(&hold.release(Some(&mut ssh))), ["second"]);
    }

    #[test]
    fn events_of_one_run_keep_their_order_behind_a_held_one() {
        let mut hold = HoldQueue::new(HoldOptions {
            log_delay: Duration::from_mins(1),
            ..options(60_000)
        });
        let mut ssh = correlator();
        hold.push(event("first", 10, None), Some(0));
        // An event that does not wait for the reader: a maintainer-script summary of run 10
        // and another of run 20.
        let mut scripts = event("scripts-10", 10, None);
        scripts.category = Category::PackageScripts;
        hold.push(scripts, None);
        let mut other = event("scripts-20", 20, None);
        other.category = Category::PackageScripts;
        hold.push(other, None);
        let released = hold.release(Some(&mut ssh));
        assert_eq!(
            packages(&released),
            ["scripts-20"],
            "run 10's summary waits behind its change"
        );
        assert_eq!(
            packages(&hold.release_all()),
            ["first", "scripts-10"],
            "in order"
        );
    }

    #[test]
    fn a_change_waits_no_longer_than_the_wait() {
        let mut hold = HoldQueue::new(HoldOptions {
            log_delay: Duration::from_mins(1),
            ..options(50)
        });
        let mut ssh = correlator();
        hold.push(event("a", 10, None), Some(0));
        assert!(hold.release(Some(&mut ssh)).is_empty());
        let wake = hold.next_wake().expect("a deadline");
        assert!(wake <= Instant::now() + Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(packages(&hold.release(Some(&mut ssh))), ["a"]);
    }

    #[test]
    fn old_lines_and_offline_changes_do_not_wait_for_logins() {
        let mut hold = HoldQueue::new(HoldOptions {
            log_delay: Duration::from_mins(1),
            ..options(60_000)
        });
        let mut ssh = correlator();
        let mut old = event("old", 10, None);
        old.parsed_data.timestamp = "2020-01-01T00:00:00+00:00".into();
        hold.push(old, Some(0));
        let mut offline = event("offline", 20, None);
        offline.observed = Some("offline".into());
        hold.push(offline, None);
        assert_eq!(packages(&hold.release(Some(&mut ssh))), ["old", "offline"]);
    }

    #[test]
    fn the_checkpoint_stops_before_the_line_of_the_oldest_held_event() {
        let mut hold = HoldQueue::new(HoldOptions {
            log_delay: Duration::from_mins(1),
            ..options(60_000)
        });
        let mut ssh = correlator();
        hold.note_position(0, &position(100), None);
        hold.note_position(1, &position(7), None);
        hold.push(event("a", 10, None), Some(0));
        hold.note_position(0, &position(200), Some(&json!({"pending": 1})));
        hold.push(event("b", 20, None), Some(0));
        hold.note_position(0, &position(300), None);
        assert!(hold.release(Some(&mut ssh)).is_empty());
        let limit = hold.checkpoint_limit(0).expect("held events limit it");
        assert_eq!(limit.position.offset, 100);
        assert_eq!(hold.checkpoint_limit(1), None, "another source is free");
        assert!(!hold.is_settled(0));
        assert!(hold.is_settled(1));

        // Run 10's event leaves first; the limit moves to b's point with its state.
        let first = hold.held.pop_front().expect("a");
        assert_eq!(first.event.parsed_data.package, "a");
        let limit = hold.checkpoint_limit(0).expect("b still held");
        assert_eq!(limit.position.offset, 200);
        assert_eq!(limit.transactions, Some(json!({"pending": 1})));

        // b leaves but no sink takes it: its point stays until the sinks have caught up.
        let released = hold.release_all();
        hold.pin(released[0].pin.expect("b came from a line"));
        assert_eq!(
            hold.checkpoint_limit(0).map(|p| p.position.offset),
            Some(200)
        );
        hold.unpin_all();
        assert_eq!(hold.checkpoint_limit(0), None);
        assert_eq!(
            hold.points.len(),
            2,
            "only each source's newest point is kept"
        );
    }

    #[test]
    fn a_closing_queue_lets_everything_go() {
        let mut hold = HoldQueue::new(HoldOptions {
            log_delay: Duration::from_mins(1),
            ..options(60_000)
        });
        let mut ssh = correlator().expecting_logins();
        hold.push(event("a", 10, Some(u32::MAX - 7)), Some(0));
        hold.push(event("b", 11, None), Some(0));
        assert!(hold.release(Some(&mut ssh)).is_empty());
        hold.close();
        assert_eq!(packages(&hold.release(Some(&mut ssh))), ["a", "b"]);
    }

    #[test]
    fn a_full_queue_judges_its_oldest_event_at_once() {
        let mut hold = HoldQueue::new(HoldOptions {
            log_delay: Duration::from_mins(1),
            capacity: 2,
            ..options(60_000)
        });
        let mut ssh = correlator();
        for (n, package) in ["a", "b", "c"].iter().enumerate() {
            hold.push(event(package, 10 + n as u64, None), Some(0));
        }
        assert_eq!(packages(&hold.release(Some(&mut ssh))), ["a"]);
        assert_eq!(hold.overflowed, 1);
    }
}
