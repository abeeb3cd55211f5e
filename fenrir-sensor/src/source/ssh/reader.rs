//! The threads that read sshd's messages: a tail of auth.log, or a supervised `journalctl`.
//!
//! In: the chosen [`LoginSource`]. Out: [`SshBatch`]es on a bounded channel, each with the
//! position to persist once its events are handled, so the consumer — not the reader —
//! decides when a login counts as seen; and how far the source has been read
//! ([`Reader::read_through`]), so a consumer can wait until every login sshd logged before
//! some moment has passed through. State: the tailer or the journal cursor.
//!
//! Neither reader ever blocks the pipeline: they run on their own threads, and when the
//! channel is full they wait, not the pipeline. A reader wakes its consumer through a
//! [`Notify`] when it sends logins, or when it has read its whole source after the consumer
//! asked it to ([`Reader::request_read`]): auth.log is then read at once instead of at the
//! next poll; the journal is read to its end by a separate, short `journalctl` run, because
//! `journalctl --follow` hears of new entries only when journald announces them, a few
//! hundred milliseconds after they were written. Entries both runs report are passed on once.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local};
use serde_json::Value;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::parse::{parse_message, parse_syslog_line, SSHD_IDENTIFIERS};
use super::SshEvent;
use crate::event::escape_control;
use crate::source::checkpoint::{Checkpoint, CheckpointStore};
use crate::source::tail::{StartAt, TailNotice, TailOptions, Tailer};

/// Batches waiting for the consumer; a reader pauses when this many are queued.
const CHANNEL_BATCHES: usize = 256;
/// Lines read from auth.log per batch.
const BATCH_LINES: usize = 512;
/// The journal reader restarts `journalctl` no faster than this, doubling up to the maximum.
const RESTART_INITIAL: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_mins(1);
/// A `journalctl` that ran this long before dying restarts without delay.
const HEALTHY_RUN: Duration = Duration::from_mins(1);
/// A short `journalctl` run that reads the journal to its end is killed after this.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// After a short run failed, the next is tried no sooner than this.
const SYNC_RETRY: Duration = Duration::from_secs(10);
/// Journal cursors remembered to pass an entry reported by both runs on once.
const SEEN_CURSORS: usize = 4096;

/// Where logins are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginSource {
    AuthLog(PathBuf),
    Journal { journalctl: PathBuf },
}

/// Where a reader is, to be persisted after its batch was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    AuthLog(Checkpoint),
    /// A journal cursor (`__CURSOR`).
    Journal(String),
}

/// Events read in one go, and where to resume after them.
#[derive(Debug, Clone)]
pub struct SshBatch {
    pub events: Vec<SshEvent>,
    pub resume: Option<Resume>,
    /// Set on the first batch after the reader caught up with what existed at start.
    pub caught_up: bool,
}

/// Settings of the readers.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    pub poll_interval: Duration,
    pub max_line_bytes: usize,
    pub rotated_grace: Duration,
    /// Without a saved position, how far back the journal is read to learn logins.
    pub learn_since: SystemTime,
}

/// How far a reader has read its source, shared between the reader and its consumer.
#[derive(Debug)]
struct Progress {
    started: Instant,
    /// Nanoseconds after `started` at which a read that reached the end of the source began:
    /// everything the source held then has been sent.
    through_ns: AtomicU64,
    /// Whether the source can be read to its end; without it there is nothing to wait for.
    live: AtomicBool,
    /// Whether the consumer waits to hear that the source was read through a later moment.
    requested: AtomicBool,
    wake: Arc<Notify>,
}

impl Progress {
    fn new(wake: Arc<Notify>) -> Self {
        Self {
            started: Instant::now(),
            through_ns: AtomicU64::new(0),
            live: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            wake,
        }
    }

    /// Records that everything the source held at `at` was sent, and wakes a consumer that
    /// asked for it.
    fn read_through(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.started).as_nanos();
        self.through_ns
            .fetch_max(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Release);
        if self.requested.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        if !live && self.requested.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    fn through(&self) -> Instant {
        if !self.live.load(Ordering::Acquire) {
            return Instant::now();
        }
        self.started + Duration::from_nanos(self.through_ns.load(Ordering::Acquire))
    }
}

/// A running reader: the channel its batches arrive on, and its stop switch.
#[derive(Debug)]
pub struct Reader {
    pub batches: Receiver<SshBatch>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<thread::JoinHandle<()>>,
    progress: Arc<Progress>,
    /// Cuts the auth.log reader's wait for its next poll short.
    poke: SyncSender<()>,
}

impl Reader {
    /// Starts reading `source` on its own thread, resuming after `resume` when given;
    /// `wake` is notified when logins arrive or a requested read is done.
    ///
    /// # Errors
    /// Fails when the thread cannot be started.
    pub fn start(
        source: &LoginSource,
        resume: Option<Resume>,
        options: ReaderOptions,
        wake: Arc<Notify>,
    ) -> std::io::Result<Self> {
        let (sender, batches) = std::sync::mpsc::sync_channel(CHANNEL_BATCHES);
        let (poke, poked) = std::sync::mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let child = Arc::new(Mutex::new(None));
        let progress = Arc::new(Progress::new(wake));
        let link = Link {
            sender,
            stop: Arc::clone(&stop),
            progress: Arc::clone(&progress),
        };
        let thread = match source.clone() {
            LoginSource::AuthLog(path) => {
                let checkpoint = match resume {
                    Some(Resume::AuthLog(checkpoint)) => Some(checkpoint),
                    _ => None,
                };
                thread::Builder::new()
                    .name("fenrir-auth-log".into())
                    .spawn(move || {
                        follow_auth_log(&path, checkpoint.as_ref(), &options, &link, &poked);
                    })?
            }
            LoginSource::Journal { journalctl } => {
                let cursor = match resume {
                    Some(Resume::Journal(cursor)) => Some(cursor),
                    _ => None,
                };
                let child = Arc::clone(&child);
                let seen = Arc::new(Mutex::new(SeenEntries::default()));
                let sync = link.clone();
                let (sync_program, sync_seen) = (journalctl.clone(), Arc::clone(&seen));
                let sync_options = options.clone();
                thread::Builder::new()
                    .name("fenrir-journal-sync".into())
                    .spawn(move || {
                        sync_journal(&sync_program, &sync_options, &sync, &sync_seen, &poked);
                    })?;
                thread::Builder::new()
                    .name("fenrir-journal".into())
                    .spawn(move || {
                        follow_journal(&journalctl, cursor, &options, &link, &child, &seen);
                    })?
            }
        };
        Ok(Self {
            batches,
            stop,
            child,
            thread: Some(thread),
            progress,
            poke,
        })
    }

    /// Returns a moment up to which every line the source held has been sent on
    /// [`Reader::batches`]: batches received after this call cover it.
    ///
    /// While the source cannot be read (`journalctl` restarting, auth.log unreadable) there is
    /// nothing to wait for, and the present moment is returned.
    #[must_use]
    pub fn read_through(&self) -> Instant {
        self.progress.through()
    }

    /// Asks the reader to read its source now and to notify once it is read through a moment
    /// after this call.
    pub fn request_read(&self) {
        self.progress.requested.store(true, Ordering::Release);
        let _ = self.poke.try_send(());
    }

    /// Stops the reader and the `journalctl` it runs.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut child) = self.child.lock() {
            if let Some(child) = child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Drain so a reader waiting for room sees the stop switch.
        while self.batches.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && Instant::now() < deadline {
                while self.batches.try_recv().is_ok() {}
                thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a reader thread shares with its consumer.
#[derive(Clone)]
struct Link {
    sender: SyncSender<SshBatch>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl Link {
    fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sends a batch, waiting for room but giving up when the reader is being stopped; a
    /// batch with logins wakes the consumer.
    fn send(&self, mut batch: SshBatch) -> bool {
        let has_events = !batch.events.is_empty();
        loop {
            match self.sender.try_send(batch) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if self.is_stopped() {
                        return false;
                    }
                    batch = back;
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        if has_events {
            self.progress.wake.notify_one();
        }
        true
    }
}

fn follow_auth_log(
    path: &Path,
    checkpoint: Option<&Checkpoint>,
    options: &ReaderOptions,
    link: &Link,
    poked: &Receiver<()>,
) {
    // Without a checkpoint the whole current file is read: it is the history to learn from.
    let tail_options = TailOptions {
        max_line_bytes: options.max_line_bytes,
        rotated_grace: options.rotated_grace,
        start_at: StartAt::Beginning,
    };
    let mut tailer = loop {
        match Tailer::open(path.to_path_buf(), checkpoint, tail_options.clone()) {
            Ok((tailer, _)) => break tailer,
            Err(err) => {
                warn!(path = %path.display(), error = %err, "cannot open the ssh log; retrying");
                if link.is_stopped() {
                    return;
                }
                thread::sleep(RESTART_MAX.min(Duration::from_secs(5)));
            }
        }
    };
    info!(path = %path.display(), "reading ssh logins from the log");
    link.progress.set_live(true);
    let mut caught_up = false;
    let mut failing = false;
    while !link.is_stopped() {
        let started = Instant::now();
        let (lines, notices) = match tailer.read_lines(BATCH_LINES) {
            Ok(read) => {
                if std::mem::take(&mut failing) {
                    info!(path = %path.display(), "ssh log readable again");
                    link.progress.set_live(true);
                }
                read
            }
            Err(err) => {
                if !failing {
                    warn!(path = %path.display(), error = %err, "cannot read the ssh log; retrying");
                    failing = true;
                    link.progress.set_live(false);
                }
                wait_for_poll(poked, options.poll_interval);
                continue;
            }
        };
        for notice in &notices {
            match notice {
                TailNotice::Rotated => info!(path = %path.display(), "ssh log rotated"),
                TailNotice::Truncated => info!(path = %path.display(), "ssh log truncated"),
                TailNotice::LineTooLong { bytes } => {
                    debug!(path = %path.display(), bytes, "skipping over-long ssh log line");
                }
                TailNotice::RetiredWithPartialLine { .. } => {}
            }
        }
        let full = lines.len() == BATCH_LINES;
        let now = Local::now();
        let mut events = Vec::new();
        for line in &lines {
            let text = String::from_utf8_lossy(&line.bytes);
            if let Some(syslog) = parse_syslog_line(&text, now) {
                if SSHD_IDENTIFIERS.contains(&syslog.identifier) {
                    events.extend(parse_message(syslog.message, syslog.pid, syslog.time));
                }
            }
        }
        let resume = lines.last().map(|last| {
            Resume::AuthLog(Checkpoint::new(
                path.to_path_buf(),
                last.position.identity,
                last.position.fingerprint.clone(),
                last.position.offset,
            ))
        });
        let now_caught_up = !full && !caught_up;
        if !events.is_empty() || resume.is_some() || now_caught_up {
            caught_up |= now_caught_up;
            let batch = SshBatch {
                events,
                resume,
                caught_up: now_caught_up,
            };
            if !link.send(batch) {
                return;
            }
        }
        if !full {
            // This read reached the end: whatever rsyslog had written when it began is sent.
            link.progress.read_through(started);
            wait_for_poll(poked, options.poll_interval);
        }
    }
}

/// Sleeps until the next poll of auth.log, or until the consumer asks for a read.
fn wait_for_poll(poked: &Receiver<()>, interval: Duration) {
    match poked.recv_timeout(interval) {
        Ok(()) | Err(RecvTimeoutError::Timeout) => {}
        // The reader is being dropped; its stop switch ends the loop.
        Err(RecvTimeoutError::Disconnected) => thread::sleep(interval),
    }
}

/// The journal entries already passed on, by cursor, and the newest of them.
#[derive(Debug, Default)]
struct SeenEntries {
    cursors: std::collections::HashSet<String>,
    order: std::collections::VecDeque<String>,
    newest: Option<String>,
    /// When `journalctl --follow` first reached the end of the journal.
    caught_up_at: Option<SystemTime>,
}

impl SeenEntries {
    /// Records an entry; returns whether it is new.
    fn is_new(&mut self, cursor: &str) -> bool {
        if self.cursors.contains(cursor) {
            return false;
        }
        if self.order.len() >= SEEN_CURSORS {
            if let Some(oldest) = self.order.pop_front() {
                self.cursors.remove(&oldest);
            }
        }
        self.cursors.insert(cursor.to_owned());
        self.order.push_back(cursor.to_owned());
        self.newest = Some(cursor.to_owned());
        true
    }
}

/// Passes one `journalctl -o json` line on; returns false when the reader is stopped.
fn pass_entry(entry: &[u8], link: &Link, seen: &Mutex<SeenEntries>) -> bool {
    let Some((event, cursor)) = parse_journal_entry(entry) else {
        return true;
    };
    if let Some(cursor) = &cursor {
        let is_new = seen.lock().map_or(true, |mut seen| seen.is_new(cursor));
        if !is_new {
            return true;
        }
    }
    link.send(SshBatch {
        events: event.into_iter().collect(),
        resume: cursor.map(Resume::Journal),
        caught_up: false,
    })
}

fn follow_journal(
    journalctl: &Path,
    mut cursor: Option<String>,
    options: &ReaderOptions,
    link: &Link,
    slot: &Mutex<Option<Child>>,
    seen: &Mutex<SeenEntries>,
) {
    let mut backoff = RESTART_INITIAL;
    let mut caught_up = false;
    while !link.is_stopped() {
        let started = Instant::now();
        let mut command = journal_command(journalctl, cursor.as_deref(), options);
        let mut child = match command.arg("--follow").spawn() {
            Ok(child) => child,
            Err(err) => {
                warn!(program = %journalctl.display(), error = %err, "cannot start journalctl; retrying");
                sleep_unless_stopped(backoff, &link.stop);
                backoff = (backoff * 2).min(RESTART_MAX);
                continue;
            }
        };
        let stdout = child.stdout.take();
        let errors = collect_stderr(&mut child);
        if let Ok(mut guard) = slot.lock() {
            *guard = Some(child);
        }
        info!(program = %journalctl.display(), resumed = cursor.is_some(), "reading ssh logins from the journal");
        link.progress.set_live(true);

        if let Some(stdout) = stdout {
            let mut reader = BufReader::new(stdout);
            let mut entry = Vec::new();
            loop {
                entry.clear();
                match read_bounded_line(&mut reader, &mut entry, options.max_line_bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // A restart resumes after what this run printed, passed on or not.
                if let Some((_, Some(entry_cursor))) = parse_journal_entry(&entry) {
                    cursor = Some(entry_cursor);
                }
                if !pass_entry(&entry, link, seen) {
                    return;
                }
                // journalctl prints the backlog at once; the first pause means it caught up.
                if !caught_up && reader.buffer().is_empty() {
                    caught_up = true;
                    if let Ok(mut seen) = seen.lock() {
                        seen.caught_up_at = Some(SystemTime::now());
                    }
                    let _ = link.send(SshBatch {
                        events: Vec::new(),
                        resume: None,
                        caught_up: true,
                    });
                }
            }
        }

        let status = slot
            .lock()
            .ok()
            .and_then(|mut guard| guard.take())
            .map(|mut child| {
                let _ = child.kill();
                child.wait()
            });
        if link.is_stopped() {
            return;
        }
        let stderr = errors.join().unwrap_or_default();
        warn!(
            status = ?status.and_then(Result::ok),
            stderr = %escape_control(stderr.trim()),
            "journalctl ended; restarting it"
        );
        if started.elapsed() >= HEALTHY_RUN {
            backoff = RESTART_INITIAL;
        }
        sleep_unless_stopped(backoff, &link.stop);
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

/// Reads a child's stderr on the side, keeping its first lines for a diagnostic.
fn collect_stderr(child: &mut Child) -> thread::JoinHandle<String> {
    let stderr = child.stderr.take();
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .take(20)
            {
                text.push_str(&line);
                text.push(' ');
            }
        }
        text
    })
}

/// Answers requests to read the journal to its end with a short `journalctl` run after the
/// newest entry passed on.
fn sync_journal(
    journalctl: &Path,
    options: &ReaderOptions,
    link: &Link,
    seen: &Mutex<SeenEntries>,
    pokes: &Receiver<()>,
) {
    let mut usable = true;
    loop {
        match pokes.recv_timeout(if usable { RESTART_MAX } else { SYNC_RETRY }) {
            Err(RecvTimeoutError::Timeout) if usable => continue,
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if link.is_stopped() {
            return;
        }
        let (after, caught_up_at) = seen
            .lock()
            .map(|seen| (seen.newest.clone(), seen.caught_up_at))
            .unwrap_or_default();
        // Until `--follow` has printed the backlog, the logins to learn from come from it.
        let Some(caught_up_at) = caught_up_at else {
            continue;
        };
        let started = Instant::now();
        // Without any sshd entry passed on yet, the follower has printed everything before it
        // caught up.
        let options = ReaderOptions {
            learn_since: caught_up_at
                .checked_sub(Duration::from_mins(1))
                .unwrap_or(SystemTime::UNIX_EPOCH),
            ..options.clone()
        };
        let command = journal_command(journalctl, after.as_deref(), &options);
        match read_journal_once(command, options.max_line_bytes) {
            Ok(lines) => {
                for line in lines {
                    if !pass_entry(&line, link, seen) {
                        return;
                    }
                }
                if !usable {
                    info!(program = %journalctl.display(), "the journal can be read again");
                }
                usable = true;
                link.progress.set_live(true);
                link.progress.read_through(started);
            }
            Err(err) => {
                if usable {
                    warn!(program = %journalctl.display(), error = %err, "cannot read the journal to its end; changes do not wait for logins");
                }
                usable = false;
                link.progress.set_live(false);
            }
        }
    }
}

/// Runs a `journalctl` that prints what the journal holds and exits; returns its lines,
/// over-long ones empty.
fn read_journal_once(mut command: Command, max_line_bytes: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let mut child = command.spawn()?;
    let stdout = child.stdout.take();
    let errors = collect_stderr(&mut child);
    let output = thread::spawn(move || {
        let mut lines = Vec::new();
        if let Some(stdout) = stdout {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match read_bounded_line(&mut reader, &mut line, max_line_bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => lines.push(line),
                }
            }
        }
        lines
    });
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "journalctl did not finish in time",
            ));
        }
        thread::sleep(Duration::from_millis(2));
    };
    let lines = output.join().unwrap_or_default();
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "journalctl exited with {status}: {}",
            escape_control(stderr.trim())
        )));
    }
    Ok(lines)
}

/// Builds the `journalctl` that prints sshd's entries after `cursor`, or from the start of
/// the learning period without one; `--follow` makes it go on.
fn journal_command(journalctl: &Path, cursor: Option<&str>, options: &ReaderOptions) -> Command {
    let mut command = Command::new(journalctl);
    command.args([
        "--output=json",
        "--all",
        "--no-pager",
        "--quiet",
        "--lines=all",
    ]);
    if let Some(cursor) = cursor {
        command.arg(format!("--after-cursor={cursor}"));
    } else {
        let since = options
            .learn_since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        command.arg(format!("--since=@{since}"));
    }
    for identifier in SSHD_IDENTIFIERS {
        command.arg(format!("SYSLOG_IDENTIFIER={identifier}"));
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only calls prctl, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // journalctl must not outlive the sensor, however the sensor ends.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    command
}

fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50).min(duration));
    }
}

/// Reads one line of at most `max` bytes; longer lines are consumed and returned empty.
fn read_bounded_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match memchr::memchr(b'\n', buffer) {
            Some(at) => (&buffer[..=at], true),
            None => (buffer, false),
        };
        let used = chunk.len();
        if !too_long && line.len() + used <= max {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line.clear();
        }
        total += used;
        reader.consume(used);
        if done {
            return Ok(total);
        }
    }
}

/// Reads one `journalctl -o json` line: the sshd event it reports (if any) and its cursor.
#[must_use]
pub fn parse_journal_entry(line: &[u8]) -> Option<(Option<SshEvent>, Option<String>)> {
    let entry: Value = serde_json::from_slice(line).ok()?;
    let cursor = entry["__CURSOR"].as_str().map(str::to_owned);
    let event = (|| {
        let message = journal_text(&entry["MESSAGE"])?;
        let pid = journal_text(&entry["_PID"])
            .or_else(|| journal_text(&entry["SYSLOG_PID"]))?
            .parse()
            .ok()?;
        let micros: i64 = journal_text(&entry["__REALTIME_TIMESTAMP"])?.parse().ok()?;
        let time = DateTime::from_timestamp_micros(micros)?.with_timezone(&Local);
        parse_message(&message, pid, time.fixed_offset())
    })();
    Some((event, cursor))
}

/// A journal field as text: a string, or an array of bytes for values that are not UTF-8.
fn journal_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(bytes) => {
            let bytes: Option<Vec<u8>> = bytes
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes?).into_owned())
        }
        _ => None,
    }
}

/// Returns the store of the auth.log reader's position.
#[must_use]
pub fn auth_log_store(state_dir: &Path, path: &Path) -> CheckpointStore {
    CheckpointStore::for_log(state_dir, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_with_text_or_byte_messages_are_read() {
        let line = br#"{"__CURSOR":"s=1;i=2","_PID":"17383","SYSLOG_PID":"17383","__REALTIME_TIMESTAMP":"1796349974151457","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"Accepted publickey for fenrirx from 127.0.0.2 port 56531 ssh2: ED25519 SHA256:OM1z"}"#;
        let (event, cursor) = parse_journal_entry(line).expect("an entry");
        assert_eq!(cursor.as_deref(), Some("s=1;i=2"));
        let Some(SshEvent::Login(login)) = event else {
            panic!("a login: {event:?}");
        };
        assert_eq!(login.sshd_pid, 17383);
        assert_eq!(login.time.timestamp(), 1_796_349_974);
        assert_eq!(login.fingerprint.as_deref(), Some("SHA256:OM1z"));

        // "session closed for user x\xff" as journald writes a non-UTF-8 message.
        let mut bytes: Vec<String> = b"pam_unix(sshd:session): session closed for user x"
            .iter()
            .map(u8::to_string)
            .collect();
        bytes.push("255".into());
        let line = format!(
            r#"{{"_PID":"9","__REALTIME_TIMESTAMP":"1796349974151457","MESSAGE":[{}]}}"#,
            bytes.join(",")
        );
        let (event, cursor) = parse_journal_entry(line.as_bytes()).expect("an entry");
        assert_eq!(cursor, None);
        assert!(
            matches!(event, Some(SshEvent::SessionClosed { sshd_pid: 9, .. })),
            "{event:?}"
        );
    }

    #[test]
    fn broken_journal_lines_are_skipped() {
        assert!(parse_journal_entry(b"not json").is_none());
        let (event, _) = parse_journal_entry(
            br#"{"MESSAGE":"Accepted password for a from 1.2.3.4 port 1 ssh2"}"#,
        )
        .expect("json");
        assert_eq!(event, None, "no pid and no time");
    }

    #[test]
    fn over_long_lines_are_consumed_and_dropped() {
        let text = format!("{}\nshort\n", "x".repeat(100));
        let mut reader = BufReader::with_capacity(16, text.as_bytes());
        let mut line = Vec::new();
        assert_eq!(
            read_bounded_line(&mut reader, &mut line, 50).expect("read"),
            101
        );
        assert!(line.is_empty());
        line.clear();
        read_bounded_line(&mut reader, &mut line, 50).expect("read");
        assert_eq!(line, b"short\n");
    }
}
