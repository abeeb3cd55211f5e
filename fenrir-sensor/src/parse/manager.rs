//! The package managers Fenrir reads, and what every log format's reader has in common.
//!
//! In: raw log lines of one format, in order. Out: package changes, through the [`ChangeLog`]
//! interface the pipeline and replay use for every format, dpkg's included. State: each
//! format's own (installs waiting for their outcome, versions known to be installed), which
//! is serializable so a restart resumes where it stopped.
//!
//! A format implements [`Format`]: it reads one line into the changes that line settles. The
//! [`Reader`] around it counts lines, skips and counts malformed ones with a debug message, and
//! never lets a line stop the stream.

use std::fmt;
use std::path::Path;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone as _, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tracing::{debug, warn};

use super::interpret::{InterpretStats, LogInterpreter};
use super::PackageChange;
use crate::event::escape_control;

/// The longest line accepted by every format, in bytes.
pub const MAX_LINE_LEN: usize = super::dpkg::MAX_LINE_LEN;

/// How much of an offending field an error message quotes.
const QUOTE_LEN: usize = 64;

/// A package manager whose changes Fenrir reports; the name is the event's `manager`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Manager {
    Dpkg,
    Dnf,
    Yum,
    Zypper,
    Pacman,
    Apk,
    /// rpm run by hand (`rpm -i`), seen through the rpm database.
    Rpm,
}

impl Manager {
    /// Every manager other than dpkg, in the order sources are listed.
    pub const OTHERS: [Self; 5] = [Self::Dnf, Self::Yum, Self::Zypper, Self::Pacman, Self::Apk];

    /// Returns the name events carry in `manager`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dpkg => "dpkg",
            Self::Dnf => "dnf",
            Self::Yum => "yum",
            Self::Zypper => "zypper",
            Self::Pacman => "pacman",
            Self::Apk => "apk",
            Self::Rpm => "rpm",
        }
    }

    /// Returns where the manager writes its log (rpm: its database), relative to its root
    /// directory.
    #[must_use]
    pub fn default_log(self) -> &'static str {
        match self {
            Self::Dpkg => "var/log/dpkg.log",
            Self::Dnf => "var/log/dnf.rpm.log",
            Self::Yum => "var/log/yum.log",
            Self::Zypper => "var/log/zypp/history",
            Self::Pacman => "var/log/pacman.log",
            Self::Apk => "var/log/apk.log",
            Self::Rpm => "var/lib/rpm",
        }
    }
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a line of a package manager's log was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    /// The line holds nothing.
    #[error("line is empty")]
    Empty,
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("line is {len} bytes long, more than the {MAX_LINE_LEN} accepted")]
    TooLong {
        /// The line's length in bytes.
        len: usize,
    },
    /// The line is not UTF-8.
    #[error("line is not valid utf-8 at byte {offset}")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// The line does not start with the format's time stamp.
    #[error("line does not start with a valid timestamp")]
    BadTimestamp,
    /// The line ends before a field it needs.
    #[error("missing {field} field")]
    MissingField {
        /// The first missing field.
        field: &'static str,
    },
    /// A package field cannot be split into name and version.
    #[error("invalid package {text:?}")]
    BadPackage {
        /// The field, escaped and shortened.
        text: String,
    },
    /// A version is not one the manager writes.
    #[error("invalid version {text:?}")]
    BadVersion {
        /// The field, escaped and shortened.
        text: String,
    },
    /// The line has the shape of a package action the format does not know.
    #[error("unknown action {text:?}")]
    UnknownAction {
        /// The action word, escaped and shortened.
        text: String,
    },
}

/// Returns a line as text, or the error naming its first problem.
pub(crate) fn line_text(bytes: &[u8]) -> Result<&str, LineError> {
    if bytes.is_empty() {
        return Err(LineError::Empty);
    }
    if bytes.len() > MAX_LINE_LEN {
        return Err(LineError::TooLong { len: bytes.len() });
    }
    std::str::from_utf8(bytes).map_err(|err| LineError::InvalidUtf8 {
        offset: err.valid_up_to(),
    })
}

/// Returns a field, shortened and with control characters escaped, for an error message.
pub(crate) fn quote(text: &str) -> String {
    let end = text
        .char_indices()
        .nth(QUOTE_LEN)
        .map_or(text.len(), |(i, _)| i);
    let mut quoted = escape_control(&text[..end]).into_owned();
    if end < text.len() {
        quoted.push('…');
    }
    quoted
}

/// Converts an instant a log wrote with its UTC offset to the host's local wall-clock time,
/// the time base of every package change.
pub(crate) fn local_time(time: DateTime<FixedOffset>) -> NaiveDateTime {
    time.with_timezone(&Local).naive_local()
}

/// Converts a UTC wall-clock time to the host's local wall-clock time.
pub(crate) fn local_from_utc(time: NaiveDateTime) -> NaiveDateTime {
    Utc.from_utc_datetime(&time)
        .with_timezone(&Local)
        .naive_local()
}

/// Stores a log time as text, so checkpoints stay readable.
pub(crate) mod timestamp_text {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

    pub fn serialize<S: Serializer>(
        time: &NaiveDateTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&time.format(FORMAT))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        NaiveDateTime::parse_from_str(&text, FORMAT).map_err(serde::de::Error::custom)
    }
}

/// A line that opened a manager's run: the command the log recorded and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The command as the log wrote it (pacman and apk join the arguments with spaces,
    /// zypper quotes each one).
    pub command: String,
    /// The host's local time of the line.
    pub timestamp: NaiveDateTime,
}

/// A log format: reads lines in order and decides what they mean.
///
/// The whole value is the format's state; it is saved in the checkpoint while
/// [`Format::has_state`] says so.
pub trait Format: Default + Serialize + DeserializeOwned + Send + fmt::Debug {
    /// The manager whose log this is.
    const MANAGER: Manager;

    /// Reads one line and returns the changes it settles.
    ///
    /// # Errors
    /// A line the format cannot read; it is counted and skipped.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<PackageChange>, LineError>;

    /// Prepares for the lines of `path`, read from its first line (replay, a fresh start).
    fn begin_file(&mut self, _path: &Path) {}

    /// Settles everything still waiting: the manager's run has ended.
    fn finish(&mut self) -> Vec<PackageChange> {
        Vec::new()
    }

    /// Returns whether a change still waits for a later line.
    fn has_pending(&self) -> bool {
        false
    }

    /// Returns, once, the run the line read last opened, for logs that record each run's
    /// command.
    fn take_run_start(&mut self) -> Option<RunStart> {
        None
    }

    /// Returns whether the state carries anything a restart needs.
    fn has_state(&self) -> bool {
        false
    }
}

/// Turns a log's lines into package changes, whatever its format.
pub trait ChangeLog: Send + fmt::Debug {
    /// Reads one line; `path` and `line_no` only label diagnostics.
    fn line(&mut self, bytes: &[u8], path: &Path, line_no: u64) -> Vec<PackageChange>;

    /// Prepares for reading `path` from its first line.
    fn begin_file(&mut self, path: &Path);

    /// Settles everything still waiting: the manager's run has ended.
    fn finish(&mut self) -> Vec<PackageChange>;

    /// Returns whether some change still waits for a later line.
    fn has_pending(&self) -> bool;

    /// Returns, once, the run the line read last opened, if the log records runs.
    fn take_run_start(&mut self) -> Option<RunStart>;

    /// Returns the state a restart needs, if any.
    fn saved_state(&self) -> Option<serde_json::Value>;

    /// Returns the counters.
    fn stats(&self) -> InterpretStats;
}

/// A [`Format`] with its counters.
#[derive(Debug, Default)]
pub struct Reader<F> {
    format: F,
    stats: InterpretStats,
}

impl<F: Format> Reader<F> {
    /// Resumes with state saved by [`ChangeLog::saved_state`]; state that cannot be read back
    /// is dropped with a warning.
    #[must_use]
    pub fn resume(state: Option<&serde_json::Value>) -> Self {
        let format = match state.map(|s| F::deserialize(s)) {
            Some(Ok(format)) => format,
            Some(Err(err)) => {
                warn!(manager = %F::MANAGER, error = %err, "dropping unreadable saved log state");
                F::default()
            }
            None => F::default(),
        };
        Self {
            format,
            stats: InterpretStats::default(),
        }
    }

    /// Returns the format's state.
    #[must_use]
    pub fn format(&self) -> &F {
        &self.format
    }
}

impl<F: Format> ChangeLog for Reader<F> {
    fn line(&mut self, bytes: &[u8], path: &Path, line_no: u64) -> Vec<PackageChange> {
        self.stats.lines += 1;
        match self.format.feed(bytes) {
            Ok(changes) => {
                self.stats.changes += changes.len() as u64;
                changes
            }
            Err(err) => {
                self.stats.malformed += 1;
                debug!(
                    manager = %F::MANAGER,
                    path = %path.display(),
                    line_no,
                    error = %err,
                    "skipping unparsable line"
                );
                Vec::new()
            }
        }
    }

    fn begin_file(&mut self, path: &Path) {
        self.format.begin_file(path);
    }

    fn finish(&mut self) -> Vec<PackageChange> {
        let changes = self.format.finish();
        self.stats.changes += changes.len() as u64;
        changes
    }

    fn has_pending(&self) -> bool {
        self.format.has_pending()
    }

    fn take_run_start(&mut self) -> Option<RunStart> {
        self.format.take_run_start()
    }

    fn saved_state(&self) -> Option<serde_json::Value> {
        if self.format.has_state() {
            serde_json::to_value(&self.format).ok()
        } else {
            None
        }
    }

    fn stats(&self) -> InterpretStats {
        self.stats
    }
}

impl ChangeLog for LogInterpreter {
    fn line(&mut self, bytes: &[u8], path: &Path, line_no: u64) -> Vec<PackageChange> {
        LogInterpreter::line(self, bytes, path, line_no)
    }

    fn begin_file(&mut self, _path: &Path) {}

    fn finish(&mut self) -> Vec<PackageChange> {
        LogInterpreter::finish(self)
    }

    fn has_pending(&self) -> bool {
        LogInterpreter::has_pending(self)
    }

    fn take_run_start(&mut self) -> Option<RunStart> {
        None
    }

    fn saved_state(&self) -> Option<serde_json::Value> {
        LogInterpreter::saved_state(self)
    }

    fn stats(&self) -> InterpretStats {
        LogInterpreter::stats(self)
    }
}

/// The log formats Fenrir reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogFormat {
    /// `/var/log/dpkg.log`.
    Dpkg,
    /// dnf's `/var/log/dnf.rpm.log`.
    DnfRpm,
    /// `/var/log/yum.log`.
    Yum,
    /// zypper's (libzypp's) `/var/log/zypp/history`.
    ZyppHistory,
    /// `/var/log/pacman.log`.
    Pacman,
    /// `/var/log/apk.log` of apk-tools 3.
    Apk,
}

/// Lines looked at to tell a file's format.
const DETECT_LINES: usize = 200;

impl LogFormat {
    /// Every format, in detection order.
    pub const ALL: [Self; 6] = [
        Self::Dpkg,
        Self::DnfRpm,
        Self::Yum,
        Self::ZyppHistory,
        Self::Pacman,
        Self::Apk,
    ];

    /// Returns the manager whose log this is.
    #[must_use]
    pub fn manager(self) -> Manager {
        match self {
            Self::Dpkg => Manager::Dpkg,
            Self::DnfRpm => Manager::Dnf,
            Self::Yum => Manager::Yum,
            Self::ZyppHistory => Manager::Zypper,
            Self::Pacman => Manager::Pacman,
            Self::Apk => Manager::Apk,
        }
    }

    /// Returns the format of `manager`'s log; rpm writes none.
    #[must_use]
    pub fn of(manager: Manager) -> Option<Self> {
        Some(match manager {
            Manager::Dpkg => Self::Dpkg,
            Manager::Dnf => Self::DnfRpm,
            Manager::Yum => Self::Yum,
            Manager::Zypper => Self::ZyppHistory,
            Manager::Pacman => Self::Pacman,
            Manager::Apk => Self::Apk,
            Manager::Rpm => return None,
        })
    }

    /// Returns a reader of this format, resuming from saved state.
    #[must_use]
    pub fn reader(self, state: Option<&serde_json::Value>) -> Box<dyn ChangeLog> {
        match self {
            Self::Dpkg => Box::new(LogInterpreter::resume(state)),
            Self::DnfRpm => Box::new(Reader::<super::rpm::dnf::DnfLog>::resume(state)),
            Self::Yum => Box::new(Reader::<super::rpm::yum::YumLog>::resume(state)),
            Self::ZyppHistory => Box::new(Reader::<super::rpm::zypper::ZyppHistory>::resume(state)),
            Self::Pacman => Box::new(Reader::<super::pacman::log::PacmanLog>::resume(state)),
            Self::Apk => Box::new(Reader::<super::apk::log::ApkLog>::resume(state)),
        }
    }

    /// Tells whether one line is typical of this format: what detection counts.
    #[must_use]
    pub fn is_typical(self, line: &[u8]) -> bool {
        match self {
            Self::Dpkg => super::dpkg::parse_line(line).is_ok(),
            Self::DnfRpm => super::rpm::dnf::is_typical(line),
            Self::Yum => super::rpm::yum::is_typical(line),
            Self::ZyppHistory => super::rpm::zypper::is_typical(line),
            Self::Pacman => super::pacman::log::is_typical(line),
            Self::Apk => super::apk::log::is_typical(line),
        }
    }

    /// Tells a log's format from its first lines: the format most of them are typical of.
    /// Returns `None` when no line is typical of any format.
    #[must_use]
    pub fn detect<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut counts = [0_usize; Self::ALL.len()];
        for line in lines.into_iter().take(DETECT_LINES) {
            for (count, format) in counts.iter_mut().zip(Self::ALL) {
                if format.is_typical(line) {
                    *count += 1;
                }
            }
        }
        // Ties go to the earlier format; a line typical of two formats is rare.
        let (best, count) = counts
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?;
        (*count > 0).then(|| Self::ALL[best])
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dpkg => "dpkg.log",
            Self::DnfRpm => "dnf.rpm.log",
            Self::Yum => "yum.log",
            Self::ZyppHistory => "zypp history",
            Self::Pacman => "pacman.log",
            Self::Apk => "apk.log",
        })
    }
}

/// The sample logs under `shared/corpus/other`, shared by the parse stage's tests.
#[cfg(test)]
pub(crate) mod corpus {
    use std::path::PathBuf;

    use super::{ChangeLog as _, Format, PackageChange, Reader};
    use crate::parse::dpkg::corpus::lines;

    /// Feeds `bytes` to a fresh reader of `F` line by line, split as a tailer splits them and
    /// numbered from 1 as lines of the file `name`; returns the changes and the reader.
    pub(crate) fn read<F: Format + Default>(
        bytes: &[u8],
        name: &str,
    ) -> (Vec<PackageChange>, Reader<F>) {
        let mut reader = Reader::<F>::default();
        let mut changes = Vec::new();
        for (index, line) in lines(bytes).enumerate() {
            changes.extend(reader.line(line, name.as_ref(), index as u64 + 1));
        }
        (changes, reader)
    }

    /// Renders changes as `category package old new` lines (`-` for no version), the shape
    /// the parsers' tests compare.
    pub(crate) fn summary(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
                format!(
                    "{} {} {} {}",
                    c.category,
                    c.package,
                    v(&c.old_version),
                    v(&c.new_version)
                )
            })
            .collect()
    }

    /// Returns every file of `shared/corpus/other/<dir>` except `SOURCES.tsv`, sorted, as
    /// (file name, bytes), or `None` after printing why the corpus is missing.
    pub(crate) fn files(dir: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let root = std::env::var_os("FENRIR_OTHER_CORPUS").map_or_else(
            || {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/corpus/other"
                ))
            },
            PathBuf::from,
        );
        let path = root.join(dir);
        let Ok(entries) = std::fs::read_dir(&path) else {
            println!("skipping: no corpus at {}", path.display());
            return None;
        };
        let mut files: Vec<(String, Vec<u8>)> = entries
            .flatten()
            .filter(|entry| entry.file_name() != "SOURCES.tsv")
            .filter_map(|entry| {
                let bytes = std::fs::read(entry.path()).ok()?;
                Some((entry.file_name().to_string_lossy().into_owned(), bytes))
            })
            .collect();
        files.sort();
        Some(files)
    }

    /// Returns one corpus file's bytes, or `None` after printing why it is missing.
    pub(crate) fn file(dir: &str, name_part: &str) -> Option<(String, Vec<u8>)> {
        let found = files(dir)?
            .into_iter()
            .find(|(name, _)| name.contains(name_part));
        if found.is_none() {
            println!("skipping: no {name_part} in the {dir} corpus");
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::dpkg::corpus::lines;

    #[test]
    fn every_corpus_log_is_detected_as_its_format() {
        let dirs = [
            ("dnf", "dnf.rpm.log", LogFormat::DnfRpm),
            ("yum", "yum.log", LogFormat::Yum),
            ("zypper", "history", LogFormat::ZyppHistory),
            ("pacman", "pacman.log", LogFormat::Pacman),
            ("apk", "apk.log", LogFormat::Apk),
        ];
        let mut seen = 0;
        for (dir, part, format) in dirs {
            let Some(files) = corpus::files(dir) else {
                return;
            };
            for (name, bytes) in files.iter().filter(|(name, _)| name.contains(part)) {
                assert_eq!(LogFormat::detect(lines(bytes)), Some(format), "{name}");
                seen += 1;
            }
        }
        assert!(seen >= 10, "only {seen} corpus logs");

        if let Some(files) = crate::parse::dpkg::corpus::files() {
            for (name, bytes) in &files {
                assert_eq!(
                    LogFormat::detect(lines(bytes)),
                    Some(LogFormat::Dpkg),
                    "{name}"
                );
            }
        }
        let garbage: [&[u8]; 3] = [b"hello", b"\xff\xfe", b""];
        assert_eq!(LogFormat::detect(garbage), None);
    }
}
