//! The threads that read sshd's messages: a tail of auth.log, or a supervised `journalctl`.
//!
//! In: the chosen [`LoginSource`]. Out: [`SshBatch`]es on a bounded channel, each with the
//! position to persist once its events are handled, so the consumer — not the reader —
//! decides when a login counts as seen. State: the tailer or the journal cursor.
//!
//! Neither reader ever blocks the pipeline: they run on their own threads, and when the
//! channel is full they wait, not the pipeline.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local};
use serde_json::Value;
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

/// A running reader: the channel its batches arrive on, and its stop switch.
#[derive(Debug)]
pub struct Reader {
    pub batches: Receiver<SshBatch>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reader {
    /// Starts reading `source` on its own thread, resuming after `resume` when given.
    ///
    /// # Errors
    /// Fails when the thread cannot be started.
    pub fn start(
        source: &LoginSource,
        resume: Option<Resume>,
        options: ReaderOptions,
    ) -> std::io::Result<Self> {
        let (sender, batches) = std::sync::mpsc::sync_channel(CHANNEL_BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let child = Arc::new(Mutex::new(None));
        let thread = match source.clone() {
            LoginSource::AuthLog(path) => {
                let checkpoint = match resume {
                    Some(Resume::AuthLog(checkpoint)) => Some(checkpoint),
                    _ => None,
                };
                let stop = Arc::clone(&stop);
                thread::Builder::new()
                    .name("fenrir-auth-log".into())
                    .spawn(move || {
                        follow_auth_log(&path, checkpoint.as_ref(), &options, &sender, &stop);
                    })?
            }
            LoginSource::Journal { journalctl } => {
                let cursor = match resume {
                    Some(Resume::Journal(cursor)) => Some(cursor),
                    _ => None,
                };
                let stop = Arc::clone(&stop);
                let child = Arc::clone(&child);
                thread::Builder::new()
                    .name("fenrir-journal".into())
                    .spawn(move || {
                        follow_journal(&journalctl, cursor, &options, &sender, &stop, &child);
                    })?
            }
        };
        Ok(Self {
            batches,
            stop,
            child,
            thread: Some(thread),
        })
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

/// Sends a batch, waiting for room but giving up when the reader is being stopped.
fn send(sender: &SyncSender<SshBatch>, mut batch: SshBatch, stop: &AtomicBool) -> bool {
    loop {
        match sender.try_send(batch) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                batch = back;
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn follow_auth_log(
    path: &Path,
    checkpoint: Option<&Checkpoint>,
    options: &ReaderOptions,
    sender: &SyncSender<SshBatch>,
    stop: &AtomicBool,
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
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep(RESTART_MAX.min(Duration::from_secs(5)));
            }
        }
    };
    info!(path = %path.display(), "reading ssh logins from the log");
    let mut caught_up = false;
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let (lines, notices) = match tailer.read_lines(BATCH_LINES) {
            Ok(read) => {
                if std::mem::take(&mut failing) {
                    info!(path = %path.display(), "ssh log readable again");
                }
                read
            }
            Err(err) => {
                if !failing {
                    warn!(path = %path.display(), error = %err, "cannot read the ssh log; retrying");
                    failing = true;
                }
                thread::sleep(options.poll_interval);
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
            if !send(sender, batch, stop) {
                return;
            }
        }
        if !full {
            thread::sleep(options.poll_interval);
        }
    }
}

fn follow_journal(
    journalctl: &Path,
    mut cursor: Option<String>,
    options: &ReaderOptions,
    sender: &SyncSender<SshBatch>,
    stop: &AtomicBool,
    slot: &Mutex<Option<Child>>,
) {
    let mut backoff = RESTART_INITIAL;
    let mut caught_up = false;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut child = match journal_command(journalctl, cursor.as_deref(), options).spawn() {
            Ok(child) => child,
            Err(err) => {
                warn!(program = %journalctl.display(), error = %err, "cannot start journalctl; retrying");
                sleep_unless_stopped(backoff, stop);
                backoff = (backoff * 2).min(RESTART_MAX);
                continue;
            }
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        if let Ok(mut guard) = slot.lock() {
            *guard = Some(child);
        }
        info!(program = %journalctl.display(), resumed = cursor.is_some(), "reading ssh logins from the journal");
        let errors = thread::spawn(move || {
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
        });

        if let Some(stdout) = stdout {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match read_bounded_line(&mut reader, &mut line, options.max_line_bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Some((event, entry_cursor)) = parse_journal_entry(&line) else {
                    continue;
                };
                if let Some(entry_cursor) = entry_cursor {
                    cursor = Some(entry_cursor);
                }
                let batch = SshBatch {
                    events: event.into_iter().collect(),
                    resume: cursor.clone().map(Resume::Journal),
                    caught_up: false,
                };
                if !send(sender, batch, stop) {
                    return;
                }
                // journalctl prints the backlog at once; the first pause means it caught up.
                if !caught_up && reader.buffer().is_empty() {
                    caught_up = true;
                    let _ = send(
                        sender,
                        SshBatch {
                            events: Vec::new(),
                            resume: None,
                            caught_up: true,
                        },
                        stop,
                    );
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
        if stop.load(Ordering::Relaxed) {
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
        sleep_unless_stopped(backoff, stop);
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

/// Builds the `journalctl` that follows sshd's entries after `cursor`, or from the start of
/// the learning period without one.
fn journal_command(journalctl: &Path, cursor: Option<&str>, options: &ReaderOptions) -> Command {
    let mut command = Command::new(journalctl);
    command.args([
        "--follow",
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
