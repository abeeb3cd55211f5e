//! Answers questions about past package changes from everything the host knows.
//!
//! In: a [`Filter`] and the [`Sources`] to read — the event store, dpkg's logs with apt's
//! history beside them, and the other managers' logs. Out: the matching events, time-sorted,
//! each once, with counters of what was read. No state between questions.
//!
//! The store holds what the sensor emitted, with the kernel's actors, rules and changes found
//! offline; the managers' logs reach back before the sensor ran and fill any time the store
//! does not cover. Both are read for the question's time range — store segments and log
//! files that cannot hold an answer are skipped unread — and merged: an event the store holds
//! and the same log line read again are one event, the stored one. They match when they have
//! the same raw line (which carries dpkg's time), category and package; for the other
//! managers, whose lines each make one change, the same raw line, package and time (compared
//! by a 128-bit hash of them). A log line written twice counts twice, and the log decides how
//! many times a line happened wherever it still has the line. With a limit, stored events are
//! kept as their places in the store until the answer is cut, and only those shown are read
//! again.
//!
//! Log files that lie wholly inside the time in which the store holds every line's event
//! (from the coverage the sensor records to its last checkpoint) are not read at all.
//!
//! Filters on what a line itself says (time, category, package, manager) apply before the
//! merge; filters on what only the store may know better (user, severity) apply after it, so
//! a stored event that fails them also hides its copy from the log.

pub mod cli;
pub mod output;
pub mod time;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset, Local};
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, warn};

use crate::event::{Category, Event, Severity};
use crate::parse::manager::{LogFormat, Manager};
use crate::replay::{self, HistorySource, ReplayError, Unfinished};
use crate::sink::store::reader::{self, LinePlace, LineReader, ScanStats};
use crate::sink::store::SegmentSummary;

/// Why a question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A filter's value is not valid.
    #[error("invalid {filter}: {message}")]
    Filter {
        /// The filter, as the command line spells it.
        filter: &'static str,
        /// What is wrong, control characters escaped.
        message: String,
    },
    /// The event store could not be read.
    #[error("failed to read the event store {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A log could not be read.
    #[error("failed to read the logs")]
    Logs(#[source] ReplayError),
}

/// What a question asks for. Every part is optional; an empty filter matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events at or after this instant.
    pub since: Option<DateTime<FixedOffset>>,
    /// Only events at or before this instant.
    pub until: Option<DateTime<FixedOffset>>,
    /// Only these categories; all when empty.
    pub categories: Vec<Category>,
    /// Only packages whose name (or `name:arch`, when the pattern has a `:`) matches.
    pub package: Option<PackagePattern>,
    /// Only events whose actor is this user: `user`, `login_user` or apt's `Requested-By`,
    /// or the uid or login uid when the name is a number.
    pub user: Option<String>,
    /// Only events at least this severe.
    pub min_severity: Option<Severity>,
    /// Only events of these package managers; all when empty.
    pub managers: Vec<String>,
}

/// A shell-style pattern (`*`, `?`, `[a-z]`) over package names.
#[derive(Debug, Clone)]
pub struct PackagePattern {
    text: String,
    matcher: glob::Pattern,
    /// Whether the pattern names the architecture too.
    with_arch: bool,
    /// The text every matching name starts with, when it is plain enough to search for
    /// directly in stored JSON.
    prefix: Option<String>,
}

impl PackagePattern {
    /// Compiles `text`.
    ///
    /// # Errors
    /// A pattern that is not a valid glob.
    pub fn new(text: &str) -> Result<Self, QueryError> {
        let matcher = glob::Pattern::new(text).map_err(|err| QueryError::Filter {
            filter: "--package",
            message: crate::event::escape_control(&err.to_string()).into_owned(),
        })?;
        let prefix: String = text
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-' | '_'))
            .collect();
        let with_arch = text.contains(':');
        Ok(Self {
            text: text.to_owned(),
            matcher,
            with_arch,
            prefix: (!prefix.is_empty()).then_some(prefix),
        })
    }

    /// Returns the pattern as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns whether the package matches.
    #[must_use]
    pub fn matches(&self, name: &str, arch: Option<&str>) -> bool {
        if self.with_arch {
            let full = match arch {
                Some(arch) => format!("{name}:{arch}"),
                None => name.to_owned(),
            };
            self.matcher.matches(&full)
        } else {
            self.matcher.matches(name)
        }
    }
}

/// Reads a `--type` value: short names (`install`, `upgrade`, `install_failed`,
/// `integrity_mismatch`, …) or full categories (`package_install`, `log_tamper`),
/// comma-separated.
///
/// # Errors
/// A name that is no category.
pub fn parse_categories(text: &str) -> Result<Vec<Category>, QueryError> {
    let mut categories = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let normalized = name.to_ascii_lowercase().replace('-', "_");
        let category = |full: String| serde_json::from_value::<Category>(Value::String(full));
        // `log_tamper` is a category of its own; every other is `package_` and a short name.
        let category = category(normalized.clone())
            .or_else(|_| category(format!("package_{normalized}")))
            .map_err(|_| QueryError::Filter {
                filter: "--type",
                message: format!(
                    "unknown type {:?}; known: install, upgrade, downgrade, reinstall, remove, \
                     purge, disappear, install_failed, scripts, integrity_mismatch, \
                     conffile_changed, change_unlogged (or their package_ names), log_tamper",
                    crate::event::escape_control(name)
                ),
            })?;
        if !categories.contains(&category) {
            categories.push(category);
        }
    }
    Ok(categories)
}

/// Reads a `--min-severity` value, in any case.
///
/// # Errors
/// A name that is no severity.
pub fn parse_severity(text: &str) -> Result<Severity, QueryError> {
    serde_json::from_value(Value::String(text.trim().to_ascii_uppercase())).map_err(|_| {
        QueryError::Filter {
            filter: "--min-severity",
            message: format!(
                "unknown severity {:?}; known: INFO, LOW, MEDIUM, HIGH, CRITICAL",
                crate::event::escape_control(text)
            ),
        }
    })
}

/// Where the answers come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The event store's directory, if it is to be read.
    pub store: Option<PathBuf>,
    /// dpkg's log and its rotations; empty to read no log.
    pub dpkg_logs: Vec<PathBuf>,
    /// apt's history, to attribute changes read from the logs.
    pub history: HistorySource,
    /// The host name events read from the logs carry.
    pub host: String,
    /// Whether dpkg may still be running, so installs the logs leave unfinished are not
    /// judged failed.
    pub unfinished: Unfinished,
    /// The time range in which the store holds the event of every line of the log, when
    /// known: log files wholly inside it are not read.
    pub covered: Option<(DateTime<FixedOffset>, DateTime<FixedOffset>)>,
    /// The other managers' logs, read like dpkg's.
    pub manager_logs: Vec<ManagerLogs>,
}

/// One other manager's log and its rotations.
#[derive(Debug, Clone)]
pub struct ManagerLogs {
    pub format: LogFormat,
    /// The log and its rotations beside it; dnf's `dnf.log*` beside them are found when read.
    pub files: Vec<PathBuf>,
    /// As [`Sources::covered`], for this log.
    pub covered: Option<(DateTime<FixedOffset>, DateTime<FixedOffset>)>,
}

/// Where a found event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The event store.
    Store,
    /// dpkg's logs, read for this question.
    Log,
}

/// One event of an answer.
#[derive(Debug, Clone)]
pub struct Found {
    /// The event's JSON, as stored or as built from the log.
    pub json: String,
    /// Its time, when readable.
    pub time: Option<DateTime<FixedOffset>>,
    pub origin: Origin,
    /// Its place in its source, for a stable order of events of the same second.
    order: u64,
    /// Where in the store a stored event's line is, while `json` is still to be read from
    /// there: with a limit, only the events shown are read twice, and the others cost no
    /// more memory than their place.
    place: Option<LinePlace>,
}

impl Found {
    /// Returns the event as a JSON value; an unreadable one becomes `null`.
    #[must_use]
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

/// What a question read and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryStats {
    pub store: ScanStats,
    /// Store lines that are not events, skipped.
    pub store_malformed: u64,
    /// Log files read, and events built from them.
    pub log_files: u64,
    pub log_events: u64,
    /// Log events dropped because the store holds them.
    pub duplicates: u64,
    /// Matching events left out by the limit.
    pub omitted: u64,
    /// Matching stored events whose segment was deleted before they could be shown.
    pub vanished: u64,
}

/// An answer: events oldest first.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub events: Vec<Found>,
    pub stats: QueryStats,
}

/// The fields of an event that filters and the merge look at, borrowed from its JSON.
#[derive(Deserialize)]
struct View<'a> {
    #[serde(borrow, default)]
    category: Cow<'a, str>,
    #[serde(borrow, default)]
    severity: Cow<'a, str>,
    #[serde(borrow, default)]
    raw_line: Cow<'a, str>,
    #[serde(borrow, default)]
    manager: Cow<'a, str>,
    #[serde(borrow)]
    parsed_data: ViewData<'a>,
    #[serde(borrow, default)]
    actor: Option<ViewActor<'a>>,
}

#[derive(Deserialize)]
struct ViewData<'a> {
    #[serde(borrow, default)]
    package: Cow<'a, str>,
    #[serde(borrow, default)]
    arch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ViewActor<'a> {
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    login_user: Option<Cow<'a, str>>,
    #[serde(default)]
    uid: Option<u64>,
    #[serde(default)]
    loginuid: Option<u64>,
}

/// The identity of a log line's event, for the merge: a 128-bit hash of its raw line, its
/// package, for dpkg its category (the other managers' lines each make one change, whose
/// category may depend on how much of the log the reader had seen: zypper's upgrades) and
/// for the others its time in seconds (apk's lines carry no time of their own).
///
/// A question keeps one key per stored event, so the key is the hash, not the strings. Two
/// hashers, each seeded afresh by every process, give 128 bits: a false match between events
/// of one host is out of reach by chance, and nobody can prepare one (say, by naming a
/// package) without the seeds of the very `query` run it is meant to fool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key(u64, u64);

impl Key {
    /// Returns the key of an event with a raw line, `None` for one without.
    fn of(
        raw_line: &str,
        category: &str,
        package: &str,
        manager: &str,
        time: Option<&DateTime<FixedOffset>>,
    ) -> Option<Self> {
        static SEEDS: OnceLock<[foldhash::quality::RandomState; 2]> = OnceLock::new();

        if raw_line.is_empty() {
            return None;
        }
        let is_dpkg = manager == Manager::Dpkg.as_str();
        let identity = (
            raw_line,
            if is_dpkg { category } else { "" },
            package,
            (!is_dpkg).then(|| time.map(DateTime::timestamp)).flatten(),
        );
        let [first, second] = SEEDS.get_or_init(Default::default);
        Some(Self(first.hash_one(identity), second.hash_one(identity)))
    }
}

/// How often the store holds one key, and how often the logs had it so far.
#[derive(Debug, Default)]
struct Seen {
    stored: u32,
    logged: u32,
}

/// A filter prepared for fast matching.
struct Matcher<'a> {
    filter: &'a Filter,
    from: Option<i64>,
    to: Option<i64>,
    categories: Vec<&'static str>,
    /// Byte strings one of which every matching stored line contains.
    category_needles: Vec<memchr::memmem::Finder<'static>>,
    package_needle: Option<memchr::memmem::Finder<'static>>,
}

impl<'a> Matcher<'a> {
    fn new(filter: &'a Filter) -> Self {
        let categories: Vec<&'static str> = filter.categories.iter().map(|c| c.as_str()).collect();
        Self {
            filter,
            from: filter.since.map(|t| t.timestamp()),
            to: filter.until.map(|t| t.timestamp()),
            category_needles: categories
                .iter()
                .map(|c| memchr::memmem::Finder::new(&format!("\"category\":\"{c}\"")).into_owned())
                .collect(),
            categories,
            package_needle: filter
                .package
                .as_ref()
                .and_then(|p| p.prefix.as_ref())
                .map(|prefix| {
                    memchr::memmem::Finder::new(&format!("\"package\":\"{prefix}")).into_owned()
                }),
        }
    }

    /// Whether a segment's summary allows a match.
    fn segment(&self, summary: &SegmentSummary) -> bool {
        if !summary.may_overlap(self.from, self.to) {
            return false;
        }
        if !self.categories.is_empty()
            && !self
                .categories
                .iter()
                .any(|c| summary.categories.contains(*c))
        {
            return false;
        }
        if !self.filter.managers.is_empty()
            && !self
                .filter
                .managers
                .iter()
                .any(|m| summary.managers.contains(m))
        {
            return false;
        }
        if let Some(pattern) = &self.filter.package {
            // The summary keeps names only; a pattern with an architecture checks the name part.
            let by_name = if pattern.with_arch {
                true
            } else {
                summary
                    .packages
                    .iter()
                    .any(|name| pattern.matches(name, None))
            };
            if !by_name {
                return false;
            }
        }
        true
    }

    /// Whether a stored line can match at all, by a byte search before any parsing.
    fn may_match_line(&self, line: &[u8]) -> bool {
        if !self.category_needles.is_empty()
            && !self
                .category_needles
                .iter()
                .any(|needle| needle.find(line).is_some())
        {
            return false;
        }
        self.package_needle
            .as_ref()
            .is_none_or(|needle| needle.find(line).is_some())
    }

    /// Filters on what the log line itself says: time, category, package, manager.
    fn line_facts(
        &self,
        time: Option<&DateTime<FixedOffset>>,
        category: &str,
        package: &str,
        arch: Option<&str>,
        manager: &str,
    ) -> bool {
        if self.from.is_some() || self.to.is_some() {
            let Some(time) = time else { return false };
            let seconds = time.timestamp();
            if self.from.is_some_and(|from| seconds < from)
                || self.to.is_some_and(|to| seconds > to)
            {
                return false;
            }
        }
        if !self.categories.is_empty() && !self.categories.contains(&category) {
            return false;
        }
        if !self.filter.managers.is_empty() && !self.filter.managers.iter().any(|m| m == manager) {
            return false;
        }
        self.filter
            .package
            .as_ref()
            .is_none_or(|pattern| pattern.matches(package, arch))
    }

    /// Filters on what the store may know better than the log: who, and how severe.
    fn store_facts(&self, severity: &str, actor: Option<&ViewActor<'_>>) -> bool {
        if let Some(minimum) = self.filter.min_severity {
            let severity: Option<Severity> =
                serde_json::from_value(Value::String(severity.to_owned())).ok();
            if severity.is_none_or(|s| s < minimum) {
                return false;
            }
        }
        let Some(user) = self.filter.user.as_deref() else {
            return true;
        };
        let Some(actor) = actor else { return false };
        let by_name = [&actor.user, &actor.login_user]
            .into_iter()
            .flatten()
            .any(|name| name == user);
        let by_uid = user
            .parse::<u64>()
            .is_ok_and(|uid| actor.uid == Some(uid) || actor.loginuid == Some(uid));
        by_name || by_uid
    }
}

/// Answers `filter` from `sources`; with a `limit`, only the newest that many events.
///
/// The store and the logs are read at the same time, on two threads, and merged after.
///
/// # Errors
/// The store directory or a log that exists cannot be read. Unreadable store lines and log
/// lines are counted and skipped.
pub fn run(filter: &Filter, sources: &Sources, limit: Option<usize>) -> Result<Answer, QueryError> {
    let matcher = Matcher::new(filter);
    let mut stats = QueryStats::default();

    let (stored, logged) = std::thread::scope(|scope| {
        let logs = scope.spawn(|| read_logs(&matcher, sources));
        let stored = sources
            .store
            .as_deref()
            .map(|dir| read_store(&matcher, dir, limit.is_none()))
            .transpose();
        let logged = logs.join().unwrap_or_else(|_| {
            Err(QueryError::Logs(ReplayError::Write(std::io::Error::other(
                "the log reader panicked",
            ))))
        });
        (stored, logged)
    });
    let mut store = stored?.unwrap_or_default();
    let logged = logged?;
    stats.store = store.scan;
    stats.store_malformed = store.malformed;
    stats.log_files = logged.files;
    if store.malformed > 0 {
        warn!(
            malformed = store.malformed,
            "skipped lines of the event store that are not events"
        );
    }

    // A log event the store holds is the stored one; the rest are added.
    for candidate in logged.candidates {
        stats.log_events += 1;
        if let Some(key) = candidate.key {
            let counts = store.seen.entry(key).or_default();
            counts.logged += 1;
            if counts.logged <= counts.stored {
                stats.duplicates += 1;
                continue;
            }
        }
        if candidate.keep {
            store.found.push(candidate.found);
        }
    }

    // The log decides how often a line happened where it still has it: a stored event the
    // sensor delivered again after a crash shows once.
    let mut dropped = vec![false; store.found.len()];
    for (key, positions) in &store.positions {
        let Some(counts) = store.seen.get(key) else {
            continue;
        };
        if counts.logged > 0 && positions.len() > counts.logged as usize {
            for &position in &positions[counts.logged as usize..] {
                dropped[position] = true;
            }
        }
    }
    let mut events: Vec<Found> = store
        .found
        .into_iter()
        .zip(dropped)
        .filter_map(|(found, dropped)| (!dropped).then_some(found))
        .collect();

    events.sort_by(|a, b| {
        let time = |f: &Found| f.time.map(|t| t.timestamp());
        time(a)
            .cmp(&time(b))
            .then(a.origin.cmp(&b.origin))
            .then(a.order.cmp(&b.order))
    });
    if let Some(limit) = limit {
        let omitted = events.len().saturating_sub(limit);
        stats.omitted = omitted as u64;
        events.drain(..omitted);
    }
    if let Some(dir) = sources.store.as_deref() {
        read_placed_lines(dir, &mut events, &mut stats);
    }
    Ok(Answer { events, stats })
}

/// Reads the lines of the stored events that kept only their place; an event whose segment
/// retention deleted since the scan is dropped with a warning and counted.
fn read_placed_lines(dir: &std::path::Path, events: &mut Vec<Found>, stats: &mut QueryStats) {
    let mut reader = LineReader::new(dir);
    events.retain_mut(|found| {
        let Some(place) = found.place.take() else {
            return true;
        };
        match reader.read(place) {
            Ok(line) => {
                found.json = String::from_utf8_lossy(&line).into_owned();
                true
            }
            Err(err) => {
                warn!(
                    segment = place.segment,
                    offset = place.offset,
                    error = %err,
                    "a stored event vanished from the store while the question ran"
                );
                stats.vanished += 1;
                false
            }
        }
    });
}

/// What the store gave a question.
#[derive(Default)]
struct Stored {
    /// Stored events that match, in store order.
    found: Vec<Found>,
    /// How often each log line's event is stored (matching the filters or not).
    seen: HashMap<Key, Seen>,
    /// For each key, the positions in `found` of its stored events.
    positions: HashMap<Key, Vec<usize>>,
    scan: ScanStats,
    malformed: u64,
}

/// Reads the store's segments that may hold an answer; without `keep_lines`, a matching
/// event keeps only its place, for [`read_placed_lines`] to read once the answer is cut.
fn read_store(
    matcher: &Matcher<'_>,
    dir: &std::path::Path,
    keep_lines: bool,
) -> Result<Stored, QueryError> {
    let mut stored = Stored::default();
    // The rarest needle is searched in whole segments; the others line by line.
    let needle = matcher
        .package_needle
        .as_ref()
        .or(match matcher.category_needles.as_slice() {
            [only] => Some(only),
            _ => None,
        });
    stored.scan = reader::scan(
        dir,
        |summary| matcher.segment(summary),
        needle,
        |segment, offset, line| {
            if !matcher.may_match_line(line) {
                return;
            }
            let Ok(view) = serde_json::from_slice::<View<'_>>(line) else {
                stored.malformed += 1;
                debug!(segment, offset, "skipping an unreadable event store line");
                return;
            };
            let time = DateTime::parse_from_rfc3339(&view.parsed_data.timestamp).ok();
            let data = &view.parsed_data;
            if !matcher.line_facts(
                time.as_ref(),
                &view.category,
                &data.package,
                data.arch.as_deref(),
                &view.manager,
            ) {
                return;
            }
            let keep = matcher.store_facts(&view.severity, view.actor.as_ref());
            let key = Key::of(
                &view.raw_line,
                &view.category,
                &data.package,
                &view.manager,
                time.as_ref(),
            );
            if let Some(key) = &key {
                stored.seen.entry(*key).or_default().stored += 1;
            }
            if keep {
                if let Some(key) = key {
                    stored
                        .positions
                        .entry(key)
                        .or_default()
                        .push(stored.found.len());
                }
                let place = LinePlace {
                    segment,
                    offset,
                    len: line.len(),
                };
                stored.found.push(Found {
                    json: if keep_lines {
                        String::from_utf8_lossy(line).into_owned()
                    } else {
                        String::new()
                    },
                    time,
                    origin: Origin::Store,
                    order: (segment << 40) | offset,
                    place: (!keep_lines).then_some(place),
                });
            }
        },
    )
    .map_err(|source| QueryError::Store {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(stored)
}

/// An event read from the logs, before the merge.
struct Candidate {
    key: Option<Key>,
    /// Whether it passes the filters the store may know better.
    keep: bool,
    found: Found,
}

/// What the logs gave a question.
#[derive(Default)]
struct Logged {
    candidates: Vec<Candidate>,
    files: u64,
}

/// Reads the log files that may hold an answer: dpkg's, then each other manager's.
fn read_logs(matcher: &Matcher<'_>, sources: &Sources) -> Result<Logged, QueryError> {
    let mut logged = Logged::default();
    let mut order = 0_u64;
    let dpkg_files = files_to_read(matcher, sources, &sources.dpkg_logs, sources.covered);
    logged.files += dpkg_files.len() as u64;
    if !dpkg_files.is_empty() {
        read_dpkg_logs(matcher, sources, &dpkg_files, &mut logged, &mut order)?;
    }

    for logs in &sources.manager_logs {
        let files = files_to_read(matcher, sources, &logs.files, logs.covered);
        if files.is_empty() {
            continue;
        }
        logged.files += files.len() as u64;
        let replayed = replay::for_each_other_event(logs.format, &files, &sources.host, |event| {
            order += 1;
            logged.candidates.extend(candidate(matcher, &event, order));
            Ok(())
        })
        .map_err(QueryError::Logs)?;
        debug!(
            format = %logs.format,
            files = files.len(),
            lines = replayed.interpret.lines,
            "logs read"
        );
    }
    Ok(logged)
}

/// Returns the files of a rotated set that may hold an answer: those overlapping the
/// question's time, less those wholly inside the time the store covers for that log.
fn files_to_read(
    matcher: &Matcher<'_>,
    sources: &Sources,
    set: &[PathBuf],
    covered: Option<(DateTime<FixedOffset>, DateTime<FixedOffset>)>,
) -> Vec<PathBuf> {
    if set.is_empty() {
        return Vec::new();
    }
    // Log times are local wall-clock times; the margin covers a daylight-saving change.
    let margin = chrono::Duration::hours(3);
    let local = |t: &DateTime<FixedOffset>| t.with_timezone(&Local).naive_local();
    let from = matcher.filter.since.as_ref().map(|t| local(t) - margin);
    let to = matcher.filter.until.as_ref().map(|t| local(t) + margin);
    let mut files = replay::overlapping(set, from, to);

    // A file wholly inside the store's coverage holds only events the store has.
    if let (Some((since, until)), Some(_)) = (covered, &sources.store) {
        let (since, until) = (local(&since) + margin, local(&until) - margin);
        let spans = replay::spans(&files);
        files.retain(|file| {
            let span = spans.iter().find(|s| s.path == *file);
            let inside = span.is_some_and(|span| {
                span.first.is_some_and(|first| first >= since)
                    && span.last.is_some_and(|last| last <= until)
            });
            !inside
        });
    }
    files
}

/// Reads dpkg's logs, attributed from apt's history.
fn read_dpkg_logs(
    matcher: &Matcher<'_>,
    sources: &Sources,
    files: &[PathBuf],
    logged: &mut Logged,
    order: &mut u64,
) -> Result<(), QueryError> {
    let history = replay::load_history(&sources.history, files).map_err(QueryError::Logs)?;

    // With a package pattern, only the lines that may name a match are parsed, and the
    // startup lines that judge unfinished installs.
    let needle = matcher
        .filter
        .package
        .as_ref()
        .and_then(|p| p.prefix.as_deref())
        .map(|prefix| format!(" {prefix}").into_bytes());
    let keep_line = |line: &[u8]| {
        needle.as_ref().is_none_or(|needle| {
            line.get(19..28) == Some(b" startup ".as_slice())
                || memchr::memmem::find(line, needle).is_some()
        })
    };

    let replayed = replay::for_each_event_of(
        files,
        &sources.host,
        &history,
        sources.unfinished,
        &keep_line,
        |event: Event| {
            *order += 1;
            logged.candidates.extend(candidate(matcher, &event, *order));
            Ok(())
        },
    )
    .map_err(QueryError::Logs)?;
    debug!(
        files = files.len(),
        lines = replayed.interpret.lines,
        events = logged.candidates.len(),
        "logs read"
    );
    Ok(())
}

/// Returns the candidate an event read from a log makes, if it passes the filters on what
/// its line says.
fn candidate(matcher: &Matcher<'_>, event: &Event, order: u64) -> Option<Candidate> {
    let time = DateTime::parse_from_rfc3339(&event.parsed_data.timestamp).ok();
    let data = &event.parsed_data;
    if !matcher.line_facts(
        time.as_ref(),
        event.category.as_str(),
        &data.package,
        data.arch.as_deref(),
        &event.manager,
    ) {
        return None;
    }
    let key = Key::of(
        &event.raw_line,
        event.category.as_str(),
        &data.package,
        &event.manager,
        time.as_ref(),
    );
    let actor = event.actor.as_ref().map(|actor| ViewActor {
        user: actor["user"].as_str().map(Cow::Borrowed),
        login_user: actor["login_user"].as_str().map(Cow::Borrowed),
        uid: actor["uid"].as_u64(),
        loginuid: actor["loginuid"].as_u64(),
    });
    let keep = matcher.store_facts(event.severity.as_str(), actor.as_ref());
    Some(Candidate {
        key,
        keep,
        found: Found {
            json: if keep {
                event.to_json_line()
            } else {
                String::new()
            },
            time,
            origin: Origin::Log,
            order,
            place: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_take_short_and_full_names() -> Result<(), QueryError> {
        assert_eq!(
            parse_categories("install, package_upgrade,install-failed,install")?,
            [
                Category::PackageInstall,
                Category::PackageUpgrade,
                Category::PackageInstallFailed
            ]
        );
        let err = parse_categories("instal").expect_err("unknown type");
        assert!(err.to_string().contains("install_failed"), "{err}");
        Ok(())
    }

    #[test]
    fn types_take_the_integrity_categories() -> Result<(), QueryError> {
        assert_eq!(
            parse_categories(
                "integrity_mismatch,conffile-changed,change_unlogged,log_tamper,\
                 package_change_unlogged,LOG-TAMPER"
            )?,
            [
                Category::PackageIntegrityMismatch,
                Category::PackageConffileChanged,
                Category::PackageChangeUnlogged,
                Category::LogTamper
            ]
        );
        assert!(parse_categories("package_log_tamper").is_err());
        let err = parse_categories("tamper").expect_err("unknown type");
        assert!(err.to_string().contains("log_tamper"), "{err}");
        Ok(())
    }

    #[test]
    fn severities_read_in_any_case() -> Result<(), QueryError> {
        assert_eq!(parse_severity("medium")?, Severity::Medium);
        assert!(parse_severity("loud").is_err());
        Ok(())
    }

    #[test]
    fn an_event_stored_twice_after_a_crash_shows_as_often_as_the_log_has_its_line(
    ) -> anyhow::Result<()> {
        use crate::sink::Sink as _;

        let dir = tempfile::tempdir()?;
        let log = dir.path().join("dpkg.log");
        let line = "2026-03-01 10:00:00 remove twice:amd64 1.0 <none>";
        std::fs::write(&log, format!("{line}\n"))?;
        let mut store = crate::sink::store::StoreSink::new(
            dir.path().join("events"),
            crate::sink::store::StoreOptions::default(),
        );
        let mut interpreter = crate::parse::interpret::LogInterpreter::default();
        let changes = interpreter.line(line.as_bytes(), &log, 1);
        let event = Event::from_change(&changes[0], "sensor-host", "dpkg");
        // Delivered, then delivered again after a crash before the checkpoint moved.
        store.send(&event)?;
        store.send(&event)?;
        drop(store);

        let sources = Sources {
            store: Some(dir.path().join("events")),
            dpkg_logs: replay::rotations_of(&log),
            history: HistorySource::Disabled,
            host: "query-host".into(),
            unfinished: Unfinished::Judge,
            covered: None,
            manager_logs: Vec::new(),
        };
        let answer = run(&Filter::default(), &sources, None)?;
        assert_eq!(answer.events.len(), 1, "the log has the line once");
        assert_eq!(answer.events[0].origin, Origin::Store);
        assert_eq!(answer.stats.duplicates, 1);

        // Without the log, the store is all there is.
        let alone = Sources {
            dpkg_logs: Vec::new(),
            ..sources
        };
        assert_eq!(run(&Filter::default(), &alone, None)?.events.len(), 2);
        Ok(())
    }

    #[test]
    fn log_files_wholly_inside_the_stores_coverage_are_not_read() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("dpkg.log");
        // An old rotation from before the store began, and one the store covers.
        std::fs::write(
            dir.path().join("dpkg.log.1"),
            "2026-01-01 10:00:00 remove old:amd64 1.0 <none>\n",
        )?;
        std::fs::write(
            &log,
            "2026-03-01 10:00:00 remove covered:amd64 1.0 <none>\n",
        )?;
        let time = |text: &str| DateTime::parse_from_rfc3339(text).expect("valid time");
        let mut sources = Sources {
            store: Some(dir.path().join("events")),
            dpkg_logs: replay::rotations_of(&log),
            history: HistorySource::Disabled,
            host: "h".into(),
            unfinished: Unfinished::Judge,
            covered: None,
            manager_logs: Vec::new(),
        };
        let packages = |answer: &Answer| -> Vec<String> {
            answer
                .events
                .iter()
                .map(|f| {
                    f.value()["parsed_data"]["package"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        };

        let all = run(&Filter::default(), &sources, None)?;
        assert_eq!(packages(&all), ["old", "covered"]);

        // The store holds every event from February to April: only the old file is read.
        sources.covered = Some((time("2026-02-01T00:00:00Z"), time("2026-04-01T00:00:00Z")));
        let answer = run(&Filter::default(), &sources, None)?;
        assert_eq!(packages(&answer), ["old"]);
        assert_eq!(answer.stats.log_files, 1);

        // Coverage that ends before the file's last line does not skip it.
        sources.covered = Some((time("2026-02-01T00:00:00Z"), time("2026-03-01T10:00:00Z")));
        assert_eq!(
            packages(&run(&Filter::default(), &sources, None)?),
            ["old", "covered"]
        );
        Ok(())
    }

    #[test]
    fn package_patterns_match_names_or_names_with_architecture() -> Result<(), QueryError> {
        let ssh = PackagePattern::new("openssh-*")?;
        assert!(ssh.matches("openssh-server", Some("amd64")));
        assert!(!ssh.matches("libssh-4", Some("amd64")));
        assert_eq!(ssh.prefix.as_deref(), Some("openssh-"));

        let i386 = PackagePattern::new("*:i386")?;
        assert!(i386.matches("libc6", Some("i386")));
        assert!(!i386.matches("libc6", Some("amd64")));
        assert_eq!(i386.prefix, None);

        assert!(PackagePattern::new("[unclosed").is_err());
        Ok(())
    }
}
