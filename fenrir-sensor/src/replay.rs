//! Reads whole package-manager logs — plain, gzip or xz, a rotated set in any order — into
//! events.
//!
//! In: file paths, and apt's history logs of the same host. Out: one JSON line per event on a
//! writer, oldest file first, each file in line order, with default severities. Each file's
//! format (dpkg.log, dnf.rpm.log, yum.log, zypper's history, pacman.log, apk.log) is told from
//! its first lines; the dpkg logs come first, then each other format's files. State: one reader
//! per format across all its files, so an install unpacked at the end of one file and
//! configured at the start of the next is judged once; the history entries, indexed by start
//! time.
//!
//! Past changes have no kernel record, so their actor comes from what the logs themselves
//! wrote about each run. dpkg's from apt's own history: an event whose dpkg line falls inside
//! one apt run's window and whose package that run lists gets the run's command and
//! requesting user. The other managers' from their own logs: pacman's `Running` line for the
//! transaction, zypper's `command` record (command and user), dnf.log's `Command:` line for
//! the run, apk's `Running` line. Anything else keeps a `null` actor.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;

use chrono::NaiveDateTime;
use flate2::read::MultiGzDecoder;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::event::{escape_control, local_rfc3339, Event};
use crate::parse::apk::log::{self as apk_log, ApkLine};
use crate::parse::apt_history::{self, AptHistoryEntry, AptHistoryError, AptHistoryIndex};
use crate::parse::dpkg::{parse_line, LogLine, ParseError};
use crate::parse::interpret::{InterpretStats, LogInterpreter};
use crate::parse::manager::{LogFormat, Manager};
use crate::parse::pacman::log as pacman_log;
use crate::parse::rpm::dnf::{self, DnfCommands};
use crate::parse::{LoggedRun, PackageChange};

/// Longest line kept; longer ones are counted as malformed.
const MAX_LINE_BYTES: usize = crate::parse::dpkg::MAX_LINE_LEN;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write events")]
    Write(#[source] io::Error),
    #[error("failed to load apt history")]
    History(#[source] AptHistoryError),
}

/// Counters of one replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// What the dpkg logs held.
    pub interpret: InterpretStats,
    /// Events given an actor from apt's history.
    pub attributed: u64,
}

/// Where the apt history that attributes replayed events comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistorySource {
    /// No attribution: every actor is `null`.
    Disabled,
    /// These files; one that cannot be read stops the replay.
    Files(Vec<PathBuf>),
    /// Every `apt/history.log*` in the directories of the dpkg logs, the layout of
    /// `/var/log`; one that cannot be read (it is often readable by `adm` only) is skipped
    /// with a warning.
    BesideLogs,
}

/// Bytes read from a log at once: large reads keep a long history's system calls few.
const READ_BUFFER: usize = 64 * 1024;

/// The first bytes of a gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The first bytes of an xz stream.
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// The suffixes logrotate gives the compressions [`open_log`] reads.
const COMPRESSED_SUFFIXES: [&str; 2] = [".gz", ".xz"];

/// Opens a log, decompressing it when it starts with the gzip or xz magic, whatever its name.
pub(crate) fn open_log(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = File::open(path)?;
    let mut magic = [0_u8; XZ_MAGIC.len()];
    let mut n = 0;
    while n < magic.len() {
        match file.read(&mut magic[n..])? {
            0 => break,
            read => n += read,
        }
    }
    let head = io::Cursor::new(magic[..n].to_vec());
    let stream = head.chain(file);
    let reader: Box<dyn Read> = if magic[..n].starts_with(&GZIP_MAGIC) {
        Box::new(Damaged::new(path, MultiGzDecoder::new(stream)))
    } else if magic[..n] == XZ_MAGIC {
        // Concatenated streams, as `xz` appends them, are read as one.
        Box::new(Damaged::new(path, lzma_rust2::XzReader::new(stream, true)))
    } else {
        Box::new(stream)
    };
    Ok(Box::new(BufReader::with_capacity(READ_BUFFER, reader)))
}

/// A decompressing reader that ends where its input stops decompressing, with a warning.
///
/// A rotated log cut short (a full disk during compression) or damaged must not cost the
/// answers every other file holds: its whole lines up to the damage are used, and the line the
/// damage cut (which could read as a change with a shortened version) is dropped.
struct Damaged<R> {
    path: PathBuf,
    inner: R,
    /// Decompressed bytes up to a newline, handed out from `at`.
    ready: Vec<u8>,
    at: usize,
    /// Decompressed bytes after the last newline, held until their line is whole.
    pending: Vec<u8>,
    chunk: Vec<u8>,
    done: bool,
}

/// The most bytes [`Damaged`] holds back waiting for a newline; a longer line is too long
/// for any reader of logs and is passed on as it is.
const DAMAGED_HOLD_MAX: usize = 1 << 20;

impl<R: Read> Damaged<R> {
    fn new(path: &Path, inner: R) -> Self {
        Self {
            path: path.to_path_buf(),
            inner,
            ready: Vec::new(),
            at: 0,
            pending: Vec::new(),
            chunk: vec![0_u8; READ_BUFFER],
            done: false,
        }
    }

    /// Decompresses the next chunk into `ready` or `pending`.
    fn fill(&mut self) {
        self.ready.clear();
        self.at = 0;
        match self.inner.read(&mut self.chunk) {
            Ok(0) => {
                // A whole stream's last line needs no newline.
                self.ready = std::mem::take(&mut self.pending);
                self.done = true;
            }
            Ok(n) => {
                self.pending.extend_from_slice(&self.chunk[..n]);
                let cut = match memchr::memrchr(b'\n', &self.pending) {
                    Some(newline) => newline + 1,
                    None if self.pending.len() > DAMAGED_HOLD_MAX => self.pending.len(),
                    None => return,
                };
                self.ready = self.pending.drain(..cut).collect();
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                warn_damaged_once(&self.path, &err);
                self.pending.clear();
                self.done = true;
            }
        }
    }
}

impl<R: Read> Read for Damaged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.ready.len() {
            if self.done {
                return Ok(0);
            }
            self.fill();
        }
        let n = buf.len().min(self.ready.len() - self.at);
        buf[..n].copy_from_slice(&self.ready[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Warns of a damaged compressed log once per process, however often it is opened.
fn warn_damaged_once(path: &Path, err: &io::Error) {
    static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
    if warned.insert(path.to_path_buf()) {
        warn!(
            path = %path.display(),
            error = %err,
            "a compressed log stops decompressing here; its lines before are used, the rest \
             is lost"
        );
    }
}

/// A rotated file's name without the suffix of its compression.
fn without_compression(name: &str) -> &str {
    COMPRESSED_SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// Returns how old a file's name says it is within its rotated set, larger being older:
/// `dpkg.log` 0, `dpkg.log.3.gz` 3; a dated `history-20240101` is older than a later date
/// and than the live file.
fn rotation_age(path: &Path) -> u64 {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = without_compression(&name);
    if let Some(number) = name.rsplit('.').next().and_then(|n| n.parse::<u64>().ok()) {
        return number;
    }
    match name.rsplit('-').next().and_then(|d| d.parse::<u64>().ok()) {
        Some(date) if date >= 10_000_000 => (1 << 40) - date.min(1 << 39),
        _ => 0,
    }
}

/// Returns the time a line of any known log format starts with, in the host's local time:
/// dpkg's and zypper's `2024-01-01 10:00:00`, pacman's bracketed stamp, dnf's ISO stamp,
/// apk's `Running … at` line. yum's lines carry no year, and give none.
fn line_time(line: &[u8]) -> Option<NaiveDateTime> {
    let plain = line
        .get(..19)
        .and_then(|head| std::str::from_utf8(head).ok())
        .and_then(|text| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok());
    if plain.is_some() {
        return plain;
    }
    match line.first()? {
        b'[' => pacman_log::parse_line(line).ok().map(|l| l.timestamp),
        b'R' => match apk_log::parse_line(line) {
            Ok(ApkLine::Run { timestamp, .. }) => Some(timestamp),
            _ => None,
        },
        b'0'..=b'9' => dnf::parse_line(line).ok().map(|l| l.timestamp),
        _ => None,
    }
}

/// Returns the time of the first line of a log (plain or compressed) that has one.
#[must_use]
pub fn first_line_time(path: &Path) -> Option<NaiveDateTime> {
    let reader = open_log(path).ok()?;
    reader
        .split(b'\n')
        .take(1000)
        .map_while(Result::ok)
        .find_map(|line| line_time(&line))
}

/// Returns the time of the last line of a plain log that has one, reading only its tail; `None`
/// for a compressed log, which cannot be read from its end.
fn last_timestamp(path: &Path) -> Option<NaiveDateTime> {
    use std::io::{Seek, SeekFrom};

    let mut file = File::open(path).ok()?;
    let mut magic = [0_u8; 2];
    if file.read(&mut magic).ok()? == 2 && magic == [0x1f, 0x8b] {
        return None;
    }
    let length = file.metadata().ok()?.len();
    let start = length.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    tail.split(|&b| b == b'\n').rev().find_map(line_time)
}

/// Orders files oldest first: by their first timestamp, then by the age their names give
/// (a higher rotation number or an earlier date is older), then as given.
#[must_use]
pub fn chronological(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(Option<NaiveDateTime>, u64, usize, &PathBuf)> = paths
        .iter()
        .enumerate()
        .map(|(index, path)| (first_line_time(path), rotation_age(path), index, path))
        .collect();
    keyed.sort_by(|a, b| match (&a.0, &b.0) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => b.1.cmp(&a.1).then(a.2.cmp(&b.2)),
    });
    keyed
        .into_iter()
        .map(|(_, _, _, path)| path.clone())
        .collect()
}

/// Lines handed at once from the parsing thread to the deciding one.
const BATCH_LINES: usize = 4096;

/// Batches in flight between the two threads; each is reused once the deciding thread is done
/// with it, so a long history costs a fixed amount of memory and no fresh pages.
const BATCHES_IN_FLIGHT: usize = 8;

/// Consecutive lines of one file, parsed.
struct Batch {
    path: Arc<PathBuf>,
    /// The lines' bytes, back to back.
    text: BatchText,
    lines: Vec<ParsedLine>,
}

/// A batch's bytes, checked for UTF-8 once on the parsing thread.
enum BatchText {
    Utf8(String),
    /// Some line is not UTF-8: each line is then converted on its own.
    Bytes(Vec<u8>),
}

impl BatchText {
    fn checked(bytes: Vec<u8>) -> Self {
        String::from_utf8(bytes).map_or_else(|err| Self::Bytes(err.into_bytes()), Self::Utf8)
    }

    fn line(&self, range: Range<usize>) -> Cow<'_, str> {
        match self {
            Self::Utf8(text) => Cow::Borrowed(&text[range]),
            Self::Bytes(bytes) => String::from_utf8_lossy(&bytes[range]),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Self::Utf8(text) => text.into_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }
}

impl Batch {
    fn empty() -> Self {
        Self {
            path: Arc::new(PathBuf::new()),
            text: BatchText::Bytes(Vec::with_capacity(BATCH_LINES * 128)),
            lines: Vec::with_capacity(BATCH_LINES),
        }
    }
}

struct ParsedLine {
    range: Range<usize>,
    line_no: u64,
    parsed: Result<LogLine, ParseError>,
}

/// Tells the format of a log from its first lines; a file of no known format is read as
/// dpkg.log, whose reader counts every line it cannot read.
fn detect_format(path: &Path) -> Result<LogFormat, ReplayError> {
    let mut reader = open_log(path).map_err(|source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut head = Vec::new();
    let mut line = Vec::new();
    for _ in 0..200 {
        line.clear();
        match read_bounded_line(reader.as_mut(), &mut line, MAX_LINE_BYTES) {
            Ok(0) => break,
            Ok(_) => head.push(line.clone()),
            Err(source) => {
                return Err(ReplayError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let format = LogFormat::detect(head.iter().map(Vec::as_slice)).unwrap_or(LogFormat::Dpkg);
    debug!(path = %path.display(), %format, "log format");
    Ok(format)
}

/// Writes the events of `paths` to `out` as JSON lines: the dpkg logs first, then the logs
/// of each other format.
///
/// # Errors
/// An unreadable file stops the replay with its path; malformed lines never do, nor does a
/// compressed file damaged partway (its whole lines before the damage are read).
pub fn replay(
    paths: &[PathBuf],
    host: &str,
    history: &AptHistoryIndex,
    out: &mut dyn Write,
) -> Result<ReplayStats, ReplayError> {
    let mut groups: BTreeMap<LogFormat, Vec<PathBuf>> = BTreeMap::new();
    for path in paths {
        groups
            .entry(detect_format(path)?)
            .or_default()
            .push(path.clone());
    }
    let mut stats = ReplayStats::default();
    for (format, paths) in groups {
        let group = if format == LogFormat::Dpkg {
            let mut out = BufWriter::with_capacity(256 * 1024, &mut *out);
            let stats = for_each_event(&paths, host, history, Unfinished::Judge, |event| {
                write_event(&event, &mut out)
            })?;
            out.flush().map_err(ReplayError::Write)?;
            stats
        } else {
            replay_other(format, &paths, host, out)?
        };
        stats.interpret.lines += group.interpret.lines;
        stats.interpret.malformed += group.interpret.malformed;
        stats.interpret.changes += group.interpret.changes;
        stats.attributed += group.attributed;
    }
    Ok(stats)
}

/// Replays logs of a format other than dpkg's, oldest first.
fn replay_other(
    format: LogFormat,
    paths: &[PathBuf],
    host: &str,
    out: &mut dyn Write,
) -> Result<ReplayStats, ReplayError> {
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let stats = for_each_other_event(format, paths, host, |event| write_event(&event, &mut out))?;
    out.flush().map_err(ReplayError::Write)?;
    Ok(stats)
}

/// Calls `each` with the event of every change in `paths`, logs of `format` (not dpkg's),
/// oldest file first, each file in line order.
///
/// Their past has no kernel record, so an event's actor is what the manager's own log wrote
/// about the run that made it (see [`logged_actor`]), and `null` where it wrote nothing. dnf's
/// commands are in dnf.log: every `dnf.log*` beside the given files (and any given) is read
/// for them, not for changes.
///
/// # Errors
/// An unreadable file stops the replay with its path; malformed lines never do. An error
/// `each` returns stops it too.
pub fn for_each_other_event(
    format: LogFormat,
    paths: &[PathBuf],
    host: &str,
    mut each: impl FnMut(Event) -> Result<(), ReplayError>,
) -> Result<ReplayStats, ReplayError> {
    let (commands, paths) = if format == LogFormat::DnfRpm {
        let (command_logs, change_logs): (Vec<PathBuf>, Vec<PathBuf>) =
            paths.iter().cloned().partition(|path| is_dnf_log(path));
        (
            Some(dnf_commands(&change_logs, &command_logs)?),
            change_logs,
        )
    } else {
        (None, paths.to_vec())
    };
    let mut reader = format.reader(None);
    let manager = format.manager();
    let mut attributed = 0_u64;
    let mut event_of = |change: &PackageChange| {
        let mut event = Event::from_change(change, host, manager.as_str());
        event.actor = change
            .logged_run
            .as_ref()
            .and_then(|run| logged_actor(manager, run, commands.as_ref()));
        attributed += u64::from(event.actor.is_some());
        event
    };
    let mut line = Vec::new();
    for path in chronological(&paths) {
        let read_error = |source| ReplayError::Read {
            path: path.clone(),
            source,
        };
        let mut input = open_log(&path).map_err(read_error)?;
        reader.begin_file(&path);
        let mut line_no = 0_u64;
        loop {
            line.clear();
            if read_bounded_line(input.as_mut(), &mut line, MAX_LINE_BYTES).map_err(read_error)?
                == 0
            {
                break;
            }
            line_no += 1;
            for change in reader.line(&line, &path, line_no) {
                each(event_of(&change))?;
            }
        }
    }
    for change in reader.finish() {
        each(event_of(&change))?;
    }
    Ok(ReplayStats {
        interpret: reader.stats(),
        attributed,
    })
}

/// Returns whether a file is dnf's own log (`dnf.log`, `dnf.log.1`, `host-dnf.log`), which
/// names each run's command, rather than its log of rpm transactions (`dnf.rpm.log`).
fn is_dnf_log(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    let name = without_compression(&name);
    let name = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let name = name.strip_suffix('.').unwrap_or(name);
    name.ends_with("dnf.log")
}

/// Reads the commands of dnf's runs from `command_logs` and from every `dnf.log*` beside
/// `change_logs`. A file found beside that cannot be read is skipped with a warning.
fn dnf_commands(
    change_logs: &[PathBuf],
    command_logs: &[PathBuf],
) -> Result<DnfCommands, ReplayError> {
    let beside: BTreeSet<PathBuf> = change_logs
        .iter()
        .flat_map(|log| {
            let dir = match log.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            rotations_of(&dir.join("dnf.log"))
        })
        .filter(|path| !command_logs.contains(path))
        .collect();
    let mut commands = DnfCommands::default();
    let mut line = Vec::new();
    let files = command_logs
        .iter()
        .map(|p| (p, true))
        .chain(beside.iter().map(|p| (p, false)));
    for (path, named) in files {
        let read_error = |source| ReplayError::Read {
            path: path.clone(),
            source,
        };
        let result = open_log(path).and_then(|mut input| loop {
            line.clear();
            if read_bounded_line(input.as_mut(), &mut line, MAX_LINE_BYTES)? == 0 {
                return Ok(());
            }
            commands.line(&line);
        });
        match result {
            Ok(()) => {}
            Err(err) if named => return Err(read_error(err)),
            Err(err) => {
                warn!(path = %path.display(), error = %err, "skipping unreadable dnf log");
            }
        }
    }
    debug!(runs = commands.len(), "dnf commands read");
    Ok(commands)
}

/// Builds the actor of a change from what its manager's log wrote about the run that made
/// it: `{"source": "<manager>-log", "command", "user", "uid", "run_start"}`, shaped like
/// apt's history actor. `user` is what the log names (zypper's history), `uid` is never
/// known; a run the log gave neither a command nor a user has no actor.
#[must_use]
pub fn logged_actor(
    manager: Manager,
    run: &LoggedRun,
    commands: Option<&DnfCommands>,
) -> Option<Value> {
    let command = run
        .command
        .as_deref()
        .or_else(|| commands.and_then(|c| c.command_of(run.started)));
    if command.is_none() && run.user.is_none() {
        return None;
    }
    let escape = |text: &str| escape_control(text).into_owned();
    Some(json!({
        "source": logged_source(manager),
        "command": command.map(escape),
        "user": run.user.as_deref().map(escape),
        "uid": null,
        "run_start": local_rfc3339(run.started),
    }))
}

/// Returns the `source` an actor read from `manager`'s log carries.
#[must_use]
pub fn logged_source(manager: Manager) -> &'static str {
    match manager {
        Manager::Dpkg => "dpkg-log",
        Manager::Dnf => "dnf-log",
        Manager::Yum => "yum-log",
        Manager::Zypper => "zypp-history",
        Manager::Pacman => "pacman-log",
        Manager::Apk => "apk-log",
        Manager::Rpm => "rpm-database",
    }
}

/// What to do at the end of the input with installs that have not reached the installed
/// state yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfinished {
    /// Report them as failed: the logs are a finished history.
    Judge,
    /// Leave them: dpkg may still be running and write how they end.
    Wait,
}

/// Calls `each` with the event of every change in `paths`, oldest file first, each file in
/// line order, attributed from `history`.
///
/// Parsing, which needs no state, runs on its own thread while this one follows dpkg's runs
/// and builds events, so a long history is read at the speed of the slower half.
///
/// # Errors
/// An unreadable file stops the replay with its path; malformed lines never do. An error
/// `each` returns stops it too.
pub fn for_each_event(
    paths: &[PathBuf],
    host: &str,
    history: &AptHistoryIndex,
    unfinished: Unfinished,
    each: impl FnMut(Event) -> Result<(), ReplayError>,
) -> Result<ReplayStats, ReplayError> {
    for_each_event_of(paths, host, history, unfinished, &|_| true, each)
}

/// As [`for_each_event`], reading only the lines `keep` accepts, which it sees raw before
/// they are parsed. A caller that wants the events of some packages only keeps the lines that
/// name them and the `startup` lines, which judge unfinished installs: the events of those
/// packages are then the same, at a fraction of the cost.
///
/// # Errors
/// As [`for_each_event`].
pub fn for_each_event_of(
    paths: &[PathBuf],
    host: &str,
    history: &AptHistoryIndex,
    unfinished: Unfinished,
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
    mut each: impl FnMut(Event) -> Result<(), ReplayError>,
) -> Result<ReplayStats, ReplayError> {
    let ordered = chronological(paths);
    let mut actors = HistoryActors::new(history);
    let (sender, batches) = mpsc::sync_channel::<Result<Batch, ReplayError>>(BATCHES_IN_FLIGHT);
    let (recycle, spares) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
    for _ in 0..BATCHES_IN_FLIGHT {
        // The channel has room for every spare, so this never blocks or fails.
        let _ = recycle.try_send(Batch::empty());
    }

    thread::scope(|scope| {
        scope.spawn(move || read_and_parse(&ordered, keep, &sender, &spares));

        let mut interpreter = LogInterpreter::default();
        for batch in batches {
            let mut batch = batch?;
            for line in batch.lines.drain(..) {
                let raw = batch.text.line(line.range);
                for change in interpreter.parsed(line.parsed, &raw, &batch.path, line.line_no) {
                    each(actors.event(&change, host))?;
                }
            }
            // The parsing thread may have stopped already; the batch is then simply dropped.
            let _ = recycle.send(batch);
        }

        if unfinished == Unfinished::Judge {
            for change in interpreter.finish() {
                each(actors.event(&change, host))?;
            }
        }
        Ok(ReplayStats {
            interpret: interpreter.stats(),
            attributed: actors.attributed,
        })
    })
}

/// Returns `log` and its rotations beside it, the ones that exist, in no particular order:
/// numbered as logrotate and dnf number them (`dpkg.log.1`, `dpkg.log.2.gz`) or dated as
/// logrotate's `dateext` (the default of Fedora, RHEL and SUSE) dates them
/// (`history-20240101`, `yum.log-2024010112.gz`, `history-20240101.xz` as SUSE compresses
/// them).
#[must_use]
pub fn rotations_of(log: &Path) -> Vec<PathBuf> {
    let Some(name) = log.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = match log.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = entry_name.strip_prefix(name.as_str()) else {
                return false;
            };
            let rest = without_compression(rest);
            let digits = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            rest.is_empty()
                || rest.strip_prefix('.').is_some_and(digits)
                || rest
                    .strip_prefix('-')
                    .is_some_and(|date| digits(date) && matches!(date.len(), 8 | 10))
        })
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    found
}

/// One file of a rotated set and the times its lines span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpan {
    pub path: PathBuf,
    /// The time of its first line, when one is readable.
    pub first: Option<NaiveDateTime>,
    /// The time of its last line: read from the tail of a plain file; for a compressed one,
    /// the first line of the next newer file, which bounds it.
    pub last: Option<NaiveDateTime>,
}

/// Returns the files of a rotated set oldest first, with the times they span.
#[must_use]
pub fn spans(paths: &[PathBuf]) -> Vec<LogSpan> {
    let ordered = chronological(paths);
    let starts: Vec<Option<NaiveDateTime>> = ordered.iter().map(|p| first_line_time(p)).collect();
    ordered
        .iter()
        .enumerate()
        .map(|(index, path)| LogSpan {
            path: path.clone(),
            first: starts[index],
            last: last_timestamp(path)
                .or_else(|| starts[index + 1..].iter().flatten().next().copied()),
        })
        .collect()
}

/// Returns the files of a rotated set that may hold lines between `from` and `to` (local
/// wall-clock times, inclusive), oldest first.
///
/// A file's lines run from its first timestamp to its last ([`LogSpan`]); the newest runs on
/// to now. A file whose first timestamp cannot be read is kept.
#[must_use]
pub fn overlapping(
    paths: &[PathBuf],
    from: Option<NaiveDateTime>,
    to: Option<NaiveDateTime>,
) -> Vec<PathBuf> {
    let spans = spans(paths);
    let newest = spans.len().saturating_sub(1);
    spans
        .into_iter()
        .enumerate()
        .filter(|(index, span)| {
            let end = if *index == newest { None } else { span.last };
            let starts_in_time = match (span.first, to) {
                (Some(start), Some(to)) => start <= to,
                _ => true,
            };
            let ends_in_time = match (end, from) {
                (Some(end), Some(from)) => end >= from,
                _ => true,
            };
            starts_in_time && ends_in_time
        })
        .map(|(_, span)| span.path)
        .collect()
}

/// The history index with each entry's actor object built once.
struct HistoryActors<'a> {
    index: &'a AptHistoryIndex,
    actors: Vec<Value>,
    attributed: u64,
}

impl<'a> HistoryActors<'a> {
    fn new(index: &'a AptHistoryIndex) -> Self {
        Self {
            index,
            actors: index.entries().map(history_actor).collect(),
            attributed: 0,
        }
    }

    /// Builds the event of `change`, with the actor of the one apt run that made it, if any.
    fn event(&mut self, change: &PackageChange, host: &str) -> Event {
        let mut event = Event::from_change(change, host, "dpkg");
        let found = self
            .index
            .find(change.timestamp, &change.package, change.arch.as_deref());
        if let Some(actor) = found.and_then(|position| self.actors.get(position)) {
            event.actor = Some(actor.clone());
            self.attributed += 1;
        }
        event
    }
}

/// Builds the actor object of one apt run; every string from the file is escaped.
pub(crate) fn history_actor(entry: &AptHistoryEntry) -> Value {
    let escape = |text: &str| escape_control(text).into_owned();
    let (user, uid) = match &entry.requested_by {
        Some((name, uid)) => (Some(escape(name)), *uid),
        None => (None, None),
    };
    json!({
        "source": "apt-history",
        "command": entry.commandline.as_deref().map(escape),
        "user": user,
        "uid": uid,
        "apt_start": local_rfc3339(entry.start),
    })
}

/// Returns every `apt/history.log*` file in the directories holding `dpkg_logs`, sorted.
#[must_use]
pub fn history_beside(dpkg_logs: &[PathBuf]) -> Vec<PathBuf> {
    let dirs: BTreeSet<PathBuf> = dpkg_logs
        .iter()
        .map(|log| match log.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join("apt"),
            _ => PathBuf::from("apt"),
        })
        .collect();
    let mut found = BTreeSet::new();
    for dir in dirs {
        let Ok(items) = fs::read_dir(&dir) else {
            continue;
        };
        for item in items.flatten() {
            let is_history = item
                .file_name()
                .to_string_lossy()
                .starts_with("history.log");
            if is_history && item.path().is_file() {
                found.insert(item.path());
            }
        }
    }
    found.into_iter().collect()
}

/// Reads the apt history `source` names into an index.
///
/// # Errors
/// A named file that cannot be read; files found beside the logs are skipped instead.
pub fn load_history(
    source: &HistorySource,
    dpkg_logs: &[PathBuf],
) -> Result<AptHistoryIndex, ReplayError> {
    let (files, strict) = match source {
        HistorySource::Disabled => return Ok(AptHistoryIndex::default()),
        HistorySource::Files(files) => (files.clone(), true),
        HistorySource::BesideLogs => (history_beside(dpkg_logs), false),
    };

    let mut entries = Vec::new();
    for path in &files {
        match apt_history::read_file(path) {
            Ok(history) => {
                let stats = history.stats;
                if stats.malformed_lines + stats.malformed_entries > 0 {
                    warn!(
                        path = %path.display(),
                        malformed_lines = stats.malformed_lines,
                        malformed_entries = stats.malformed_entries,
                        "skipped unreadable parts of apt history"
                    );
                }
                debug!(path = %path.display(), entries = stats.entries, "read apt history");
                entries.extend(history.entries);
            }
            Err(err) if strict => return Err(ReplayError::History(err)),
            Err(err) => {
                let err = error_chain(&err);
                warn!(path = %path.display(), error = %err, "skipping unreadable apt history");
            }
        }
    }

    let index = AptHistoryIndex::new(entries);
    info!(
        files = files.len(),
        entries = index.len(),
        "apt history loaded"
    );
    Ok(index)
}

/// Renders an error with its causes, `outer: inner`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn write_event(event: &Event, out: &mut impl Write) -> Result<(), ReplayError> {
    serde_json::to_writer(&mut *out, event).map_err(|err| ReplayError::Write(err.into()))?;
    out.write_all(b"\n").map_err(ReplayError::Write)
}

/// Reads every file in order and sends its lines parsed, in batches taken from `spares`;
/// stops when the receiver is gone.
fn read_and_parse(
    paths: &[PathBuf],
    keep: &(dyn Fn(&[u8]) -> bool + Sync),
    sender: &mpsc::SyncSender<Result<Batch, ReplayError>>,
    spares: &mpsc::Receiver<Batch>,
) {
    // A batch being filled keeps its text as bytes; it is checked for UTF-8 when it is sent.
    let next_batch = |path: &Arc<PathBuf>| {
        let mut batch = spares.recv().ok()?;
        batch.path = Arc::clone(path);
        let mut text =
            std::mem::replace(&mut batch.text, BatchText::Bytes(Vec::new())).into_bytes();
        text.clear();
        batch.lines.clear();
        Some((batch, text))
    };
    let seal = |(mut batch, text): (Batch, Vec<u8>)| {
        batch.text = BatchText::checked(text);
        batch
    };
    for path in paths {
        let path = Arc::new(path.clone());
        let read_error = |source| ReplayError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = match open_log(&path) {
            Ok(reader) => reader,
            Err(err) => {
                let _ = sender.send(Err(read_error(err)));
                return;
            }
        };

        let Some(mut filling) = next_batch(&path) else {
            return;
        };
        let mut line_no = 0_u64;
        loop {
            let (batch, text) = &mut filling;

            // Lines are read straight into the batch: one copy from the reader's buffer.
            let start = text.len();
            match read_bounded_line(&mut reader, text, MAX_LINE_BYTES) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    let _ = sender.send(Err(read_error(err)));
                    return;
                }
            }
            line_no += 1;
            if !keep(&text[start..]) {
                text.truncate(start);
                continue;
            }

            // An over-long line arrives cut one byte past the limit, which parse_line refuses.
            let range = start..text.len();
            let parsed = parse_line(&text[range.clone()]);
            batch.lines.push(ParsedLine {
                range,
                line_no,
                parsed,
            });

            if batch.lines.len() == BATCH_LINES {
                let Some(fresh) = next_batch(&path) else {
                    return;
                };
                let full = std::mem::replace(&mut filling, fresh);
                if sender.send(Ok(seal(full))).is_err() {
                    return;
                }
            }
        }
        if !filling.0.lines.is_empty() && sender.send(Ok(seal(filling))).is_err() {
            return;
        }
    }
}

/// Appends one line without its newline to `line`, keeping at most one byte past `max` of it
/// so a huge line costs no memory; returns the bytes consumed (0 at end of input).
pub(crate) fn read_bounded_line(
    reader: &mut dyn BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    let mut consumed = 0;
    let limit = line.len() + max + 1;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match memchr::memchr(b'\n', available) {
            Some(newline) => (&available[..newline], Some(newline + 1)),
            None => (available, None),
        };
        let room = limit.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        consumed += used;
        if done.is_some() {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_compressed_log_gives_its_whole_lines_up_to_the_damage() {
        let dir = tempfile::tempdir().expect("dir");
        let mut text = String::new();
        for n in 0..5000 {
            let line = format!("2026-05-03 10:00:00 install p{n}:amd64 <none> 1.{n}-1\n");
            text.push_str(&line);
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).expect("compress");
        let gz = encoder.finish().expect("finish");
        let path = dir.path().join("dpkg.log.2.gz");
        fs::write(&path, &gz[..gz.len() / 2]).expect("write");

        let mut read = String::new();
        open_log(&path)
            .expect("open")
            .read_to_string(&mut read)
            .expect("the damage ends the file, it fails nothing");
        assert!(
            !read.is_empty() && read.len() < text.len(),
            "{}",
            read.len()
        );
        assert!(read.ends_with('\n'), "the cut line is dropped");
        assert!(text.starts_with(&read), "what is read is the file's start");
    }

    #[test]
    fn rotation_names_order_older_first() {
        let age = |name: &str| rotation_age(Path::new(name));
        assert_eq!(age("/var/log/dpkg.log"), 0);
        assert_eq!(age("/var/log/dpkg.log.1"), 1);
        assert_eq!(age("/var/log/dpkg.log.12.gz"), 12);
        assert!(age("/var/log/zypp/history-20240101") > age("/var/log/zypp/history-20240201"));
        assert!(age("/var/log/zypp/history-20240201.gz") > age("/var/log/zypp/history"));
        assert!(age("/var/log/zypp/history-20240101.xz") > age("/var/log/zypp/history-20240201"));
        assert_eq!(age("/var/log/pacman.log.2.xz"), 2);
        assert_eq!(age("/var/log/dnf.rpm.log"), 0);
    }

    #[test]
    fn dnfs_own_log_is_told_from_its_rpm_log() {
        for name in [
            "/var/log/dnf.log",
            "dnf.log.3",
            "dnf.log.2.gz",
            "dnf.log.4.xz",
            "host__dnf.log",
        ] {
            assert!(is_dnf_log(Path::new(name)), "{name}");
        }
        for name in [
            "/var/log/dnf.rpm.log",
            "dnf.rpm.log.1",
            "hawkey.log",
            "dnf.log-x",
            "",
        ] {
            assert!(!is_dnf_log(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn every_formats_line_times_are_read() {
        let time = |line: &str| line_time(line.as_bytes()).map(|t| t.to_string());
        assert_eq!(
            time("2026-03-01 10:00:00 remove a:amd64 1.0 <none>").as_deref(),
            Some("2026-03-01 10:00:00")
        );
        assert_eq!(
            time("2022-12-16 12:56:23|command|root@h|'zypper' 'in' 'a'|").as_deref(),
            Some("2022-12-16 12:56:23")
        );
        assert_eq!(
            time("[2014-08-03 15:21] [PACMAN] installed a (1-1)").as_deref(),
            Some("2014-08-03 15:21:00")
        );
        assert!(time("[2024-11-26T05:07:01-0600] [ALPM] transaction started").is_some());
        assert!(time("2021-03-02T08:05:29Z INFO --- logging initialized ---").is_some());
        assert!(time("Running `apk del a` at 2026-05-05 08:15:44").is_some());
        assert_eq!(time("(1/3) Installing glibc (2.43-r1)"), None);
        assert_eq!(time(""), None);
        assert_eq!(time("\u{1b}[2J"), None);
    }

    #[test]
    fn bounded_line_reader_caps_memory_and_keeps_the_next_line() -> io::Result<()> {
        let mut input = vec![b'x'; 1_000_000];
        input.extend_from_slice(b"\nnext\nlast-without-newline");
        let mut reader: Box<dyn BufRead> = Box::new(BufReader::new(&input[..]));
        let mut line = Vec::new();
        assert_eq!(
            read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES)?,
            1_000_001
        );
        assert_eq!(line.len(), MAX_LINE_BYTES + 1);
        line.clear();
        read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES)?;
        assert_eq!(line, b"next");
        line.clear();
        read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES)?;
        assert_eq!(line, b"last-without-newline");
        line.clear();
        assert_eq!(
            read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES)?,
            0
        );
        Ok(())
    }
}
