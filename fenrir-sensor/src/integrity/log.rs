//! The log witness: notices a dpkg.log that was shortened or rewritten without a rotation.
//!
//! In: every line the tailer returns (with its position), the tailer's notices, and a timer.
//! Out: [`Tamper`] findings, and a [`WitnessState`] the checkpoint keeps. State: per followed
//! file, a SHA-256 over every byte consumed so far (a running hash of the prefix) and the
//! hashes of the last [`RING_LINES`] lines; suspicions waiting for a rotation to settle.
//!
//! How each check works, and what it costs:
//!
//! - **Consumed prefix.** The running hash covers bytes `[0, offset)` of the file. At start
//!   the checkpoint's hash is re-verified by hashing the file up to its offset (one read of the
//!   log); while running the same full re-check runs every `full_check_secs` and whenever the
//!   tailer reports a rotation or truncation.
//! - **Tail window.** Every poll re-reads the bytes of the last [`RING_LINES`] consumed lines
//!   (a few kilobytes) and compares them line by line, so an in-place edit of recent lines is
//!   seen within a poll and named by line number.
//! - **Rotation or tamper.** When the consumed content is no longer at the path (the file was
//!   replaced, shrank, or its first line changed), the witness looks for it: in the file the
//!   tailer still holds when it was renamed (rename and create), and in every file beside the
//!   log named `<log>.*` or `<log>-*`, plain or gzip-compressed (`copytruncate`,
//!   `delaycompress`, `compress`), by hashing its first `offset` bytes. Found: a rotation.
//!   Not found within `rotation_settle_secs` (a compression may be under way): tamper.
//!
//! - **After tamper.** While consumed content is missing and no rotated file explains it, the
//!   lines the tailer reads again from the file at the path (it restarts a shortened file from
//!   its start, and reads a replacing file whole) are delivered only after the last one that is
//!   one of the lines already consumed (the last [`RING_LINES`] while running, the last
//!   [`SAVED_LINES`] kept with the checkpoint): what was delivered is not delivered again, and
//!   what dpkg wrote after the tampering still is. A file read empty, between the truncation
//!   and the write of a rewrite (`cat edited > dpkg.log`), is judged again once it has lines.
//!
//! - **Copy and truncate racing a write.** A line dpkg writes after logrotate's copy and
//!   before its truncation is in neither file afterwards, and when the sensor read it in that
//!   moment, no file holds everything read. A copy that holds all of it but such a tail (whole
//!   lines, at most [`RACE_MAX_BYTES`]) and was written within [`RACE_WINDOW`] of the
//!   truncation being noticed is the rotation it looks like: the lines were delivered, and
//!   their loss from the files is logged, not reported as tamper.
//!
//! What cannot be told apart: a copy-and-truncate by logrotate and one by an attacker who
//! keeps the copy intact beside the log (nothing is lost, so nothing is reported), or who
//! makes the copy, writes and truncates within [`RACE_WINDOW`] (what was written was read and
//! delivered all the same); lines appended after the last read and cut away before the next
//! one, which were never read (logrotate's `copytruncate` has the same race and loses such
//! lines too); and a log rotated into another directory (`olddir`), which looks deleted and
//! is reported as tamper, as is a rotation configured with `rotate 0` (the old content is
//! deleted).

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::sums::hex;
use crate::source::checkpoint::{fingerprint, FileIdentity};
use crate::source::tail::{Line, Tailer};

/// Lines whose bytes are re-read and compared on every poll.
pub const RING_LINES: usize = 256;

/// Hashes of the last consumed lines kept with the checkpoint, to know them again after a
/// restart in a log tampered with while the sensor was down.
pub const SAVED_LINES: usize = 16;

/// Bytes read per positional read while hashing a prefix.
const CHUNK: usize = 256 * 1024;

/// How long before a truncation is noticed a copy beside the log may have been written and
/// still be logrotate's copy of the same run: logrotate truncates right after it copies.
pub const RACE_WINDOW: Duration = Duration::from_secs(2);

/// The most bytes read from a log that a copy racing a write may lack: far more than dpkg
/// writes in the moment between logrotate's copy and its truncation.
pub const RACE_MAX_BYTES: u64 = 64 * 1024;

/// A SHA-256 digest.
type Digest32 = [u8; 32];

/// What the checkpoint keeps: the hash of the first `offset` bytes of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessState {
    pub identity: FileIdentity,
    pub offset: u64,
    /// SHA-256 of bytes `[0, offset)`, hex.
    pub digest: String,
    pub fingerprint: Option<String>,
    /// SHA-256 of each of the last lines before `offset` (newline included), oldest first, hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
}

/// One finding of tamper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub log: PathBuf,
    /// What was seen: `shortened`, `first_line_changed`, `changed`, `replaced`.
    pub seen: &'static str,
    /// A sentence for people; paths are not yet escaped.
    pub detail: String,
    /// Bytes of the file that had been read.
    pub offset: u64,
    /// The file's size when the change was seen, if it still exists.
    pub size: Option<u64>,
    /// The number of the first changed line, when known.
    pub line_no: Option<u64>,
}

/// One consumed line.
#[derive(Debug, Clone)]
struct Entry {
    start: u64,
    end: u64,
    line_no: u64,
    line_hash: Digest32,
    /// The hash of `[0, end)`.
    digest: Digest32,
}

/// What is known of one followed file.
#[derive(Debug, Clone)]
struct Chain {
    identity: FileIdentity,
    fingerprint: Option<String>,
    hasher: Sha256,
    end: u64,
    ring: VecDeque<Entry>,
    /// The hash at the end of the content hashed without lines (at start or after a reset).
    base: (u64, Digest32),
}

impl Chain {
    /// Hashes `[0, end)` of `file` as the starting point.
    fn baseline(file: &File, identity: FileIdentity, end: u64) -> io::Result<Self> {
        let mut hasher = Sha256::new();
        hash_range(file, 0, end, &mut hasher)?;
        let digest = hasher.clone().finalize().into();
        Ok(Self {
            identity,
            fingerprint: fingerprint_of(file),
            hasher,
            end,
            ring: VecDeque::new(),
            base: (end, digest),
        })
    }

    fn digest(&self) -> Digest32 {
        self.hasher.clone().finalize().into()
    }

    /// The hash of what was read up to the end of each recent line, and up to the base.
    fn prefixes(&self) -> Vec<(u64, Digest32)> {
        let ends = self.ring.iter().map(|e| (e.end, e.digest));
        std::iter::once(self.base).chain(ends).collect()
    }

    fn digest_at(&self, offset: u64) -> Option<Digest32> {
        if offset == self.end {
            return Some(self.digest());
        }
        if offset == self.base.0 {
            return Some(self.base.1);
        }
        self.ring.iter().find(|e| e.end == offset).map(|e| e.digest)
    }

    /// Adds one consumed line; bytes skipped before it (over-long lines) are read from `file`.
    fn extend(&mut self, line: &Line, file: Option<&File>) -> io::Result<()> {
        let end = line.position.offset;
        let own = line.bytes.len() as u64 + 1;
        let start = end.saturating_sub(own);
        let mut element = Sha256::new();
        if start > self.end {
            let file = file.ok_or_else(|| io::Error::other("skipped bytes without a file"))?;
            // Both hashes need the gap; reading it twice is cheaper than keeping it.
            hash_range(file, self.end, start, &mut self.hasher)?;
            hash_range(file, self.end, start, &mut element)?;
        }
        self.hasher.update(&line.bytes);
        self.hasher.update(b"\n");
        element.update(&line.bytes);
        element.update(b"\n");
        if self.fingerprint.is_none() {
            self.fingerprint.clone_from(&line.position.fingerprint);
        }
        let entry = Entry {
            start: self.end,
            end,
            line_no: line.line_no,
            line_hash: element.finalize().into(),
            digest: self.hasher.clone().finalize().into(),
        };
        self.end = end;
        if self.ring.len() == RING_LINES {
            self.ring.pop_front();
        }
        self.ring.push_back(entry);
        Ok(())
    }

    fn state(&self) -> WitnessState {
        WitnessState {
            identity: self.identity,
            offset: self.end,
            digest: hex(&self.digest()),
            fingerprint: self.fingerprint.clone(),
            lines: self.saved_lines(self.end),
        }
    }

    /// Returns the hashes of the last [`SAVED_LINES`] lines ending at or before `offset`, hex.
    fn saved_lines(&self, offset: u64) -> Vec<String> {
        let before: Vec<&Entry> = self.ring.iter().filter(|e| e.end <= offset).collect();
        let from = before.len().saturating_sub(SAVED_LINES);
        before[from..].iter().map(|e| hex(&e.line_hash)).collect()
    }
}

/// A consumed prefix that is no longer where it was, waiting to be found in a rotated file.
#[derive(Debug, Clone)]
struct Suspicion {
    state: WitnessState,
    since: Instant,
    /// The first description of what was seen, kept for the report.
    finding: Tamper,
    /// The hashes of lines known to have been consumed from the missing content.
    lines: Vec<Digest32>,
    /// The hash of what was read up to each recent line end, to recognise a copy that lacks
    /// only the last lines read; empty when known from a checkpoint alone.
    prefixes: Vec<(u64, Digest32)>,
    /// When the content was first missed, to tell logrotate's copy from an older file.
    noticed: SystemTime,
}

impl Suspicion {
    fn new(state: WitnessState, since: Instant, finding: Tamper, chain: Option<&Chain>) -> Self {
        let lines = match chain {
            Some(chain) => chain.ring.iter().map(|e| e.line_hash).collect(),
            None => state
                .lines
                .iter()
                .filter_map(|h| digest_from_hex(h))
                .collect(),
        };
        Self {
            state,
            since,
            finding,
            lines,
            prefixes: chain.map(Chain::prefixes).unwrap_or_default(),
            noticed: SystemTime::now(),
        }
    }
}

/// Settings of the witness.
#[derive(Debug, Clone)]
pub struct WitnessOptions {
    /// How long a rotation may take to put the old content in a file beside the log.
    pub settle: Duration,
    /// How often the whole consumed prefix is re-hashed while running.
    pub full_check: Duration,
}

/// Checks that what was read from the log stays as it was read.
#[derive(Debug)]
pub struct LogWitness {
    log: PathBuf,
    options: WitnessOptions,
    chains: Vec<Chain>,
    suspicions: Vec<Suspicion>,
    last_full_check: Instant,
    /// The state last handed to a checkpoint, reused while no newer one fits.
    saved: Option<WitnessState>,
    /// Lines of this file up to this offset were delivered before the content was tampered
    /// with: they are not delivered again.
    skip: Option<(FileIdentity, u64)>,
    /// The file at the path was empty when the skip was planned (between the truncation and
    /// the write of a rewrite): the lines consumed before, to plan again once it has lines.
    replan: Option<HashSet<Digest32>>,
}

impl LogWitness {
    /// Starts watching what `tailer` reads, after checking what the checkpoint's `saved` state
    /// says was read before.
    pub fn start(
        log: &Path,
        tailer: &Tailer,
        saved: Option<WitnessState>,
        options: WitnessOptions,
    ) -> (Self, Vec<Tamper>) {
        let mut witness = Self {
            log: log.to_path_buf(),
            options,
            chains: Vec::new(),
            suspicions: Vec::new(),
            last_full_check: Instant::now(),
            saved: saved.clone(),
            skip: None,
            replan: None,
        };
        for followed in tailer.followed() {
            let identity = followed.position.identity;
            match Chain::baseline(followed.file, identity, followed.position.offset) {
                Ok(chain) => witness.chains.push(chain),
                Err(err) => debug!(error = %err, "cannot hash the followed log"),
            }
        }
        let mut found = Vec::new();
        if let Some(state) = saved {
            if let Some(finding) = witness.judge(&state, tailer, "while the sensor was down") {
                witness
                    .suspicions
                    .push(Suspicion::new(state, Instant::now(), finding, None));
                witness.plan_skip(tailer);
                found.extend(witness.poll_suspicions(tailer, Instant::now()));
            }
        }
        (witness, found)
    }

    /// Takes the lines the tailer returned, after their batch's notices were given to
    /// [`LogWitness::notice`].
    pub fn observe(&mut self, lines: &[Line], tailer: &Tailer) {
        let followed = tailer.followed();
        for line in lines {
            let identity = line.position.identity;
            let file = followed
                .iter()
                .find(|f| f.position.identity == identity)
                .map(|f| f.file);
            let start = line
                .position
                .offset
                .saturating_sub(line.bytes.len() as u64 + 1);
            let index = self.chains.iter().position(|c| c.identity == identity);
            let index = match index {
                Some(index) if self.chains[index].end <= start => index,
                // A file never seen, or one read again from an earlier offset (truncated):
                // what is before this line is the new starting point.
                other => {
                    if let Some(index) = other {
                        self.chains.remove(index);
                    }
                    let Some(file) = file else { continue };
                    match Chain::baseline(file, identity, start) {
                        Ok(chain) => self.chains.push(chain),
                        Err(err) => {
                            debug!(error = %err, "cannot hash the followed log");
                            continue;
                        }
                    }
                    self.chains.len() - 1
                }
            };
            if let Err(err) = self.chains[index].extend(line, file) {
                debug!(error = %err, "cannot hash skipped bytes; restarting the hash");
                self.chains.remove(index);
            }
        }
        self.chains
            .retain(|c| followed.iter().any(|f| f.position.identity == c.identity));
    }

    /// Judges every followed file again after the tailer noticed a rotation or truncation,
    /// before the lines of the same read are given to [`LogWitness::drop_delivered`] and
    /// observed.
    pub fn notice(&mut self, tailer: &Tailer) -> Vec<Tamper> {
        let states: Vec<WitnessState> = self.chains.iter().map(Chain::state).collect();
        for state in states {
            if let Some(finding) = self.judge(&state, tailer, "") {
                // The content is gone from this file; start afresh with what is there now.
                let index = self
                    .chains
                    .iter()
                    .position(|c| c.identity == state.identity);
                let chain = index.map(|index| self.chains.remove(index));
                let suspicion = Suspicion::new(state, Instant::now(), finding, chain.as_ref());
                if !self.copy_raced_a_write(&suspicion) {
                    self.suspicions.push(suspicion);
                }
            }
        }
        self.plan_skip(tailer);
        self.poll_suspicions(tailer, Instant::now())
    }

    /// Leaves out of `lines` those that were delivered before the log was tampered with.
    pub fn drop_delivered(&mut self, lines: &mut Vec<Line>, tailer: &Tailer) {
        if !lines.is_empty() {
            if let Some(known) = self.replan.take() {
                self.plan_skip_among(tailer, known);
            }
        }
        let Some((identity, end)) = self.skip else {
            return;
        };
        lines.retain(|line| line.position.identity != identity || line.position.offset > end);
        // Past the last line delivered before: the rest of the file is new.
        if lines.iter().any(|line| line.position.identity == identity) {
            self.skip = None;
        }
    }

    /// While consumed content is missing unexplained, finds the last line of the file at the
    /// path that is one of the lines consumed before: the tailer reads that file from its
    /// start, and the lines up to there were delivered already.
    ///
    /// Resuming after it, rather than at the end, still delivers what dpkg wrote after the
    /// tampering; with none of them left (the log emptied, or cut before them) the file is
    /// read whole.
    fn plan_skip(&mut self, tailer: &Tailer) {
        let known: HashSet<Digest32> = self
            .suspicions
            .iter()
            .flat_map(|s| s.lines.iter().copied())
            .collect();
        self.plan_skip_among(tailer, known);
    }

    /// Plans the skip with `known` as the lines consumed before.
    fn plan_skip_among(&mut self, tailer: &Tailer, known: HashSet<Digest32>) {
        self.skip = None;
        self.replan = None;
        if known.is_empty() {
            return;
        }
        let followed = tailer.followed();
        let Some(current) = followed.iter().find(|f| f.is_at_path) else {
            return;
        };
        let end = match last_known_line_end(current.file, &known) {
            Ok(Some(end)) => end,
            Ok(None) => {
                // Emptied for now; a rewrite in two steps (truncate, then write) comes next.
                if current.file.metadata().is_ok_and(|m| m.len() == 0) {
                    self.replan = Some(known);
                }
                return;
            }
            Err(err) => {
                debug!(error = %err, "cannot look for the lines already read");
                return;
            }
        };
        let identity = current.position.identity;
        info!(
            log = %self.log.display(),
            offset = end,
            "the log was tampered with; its lines up to the last one already read are not delivered again"
        );
        self.skip = Some((identity, end));
        // What is kept of the file from now on starts after them.
        self.chains.retain(|c| c.identity != identity);
        match Chain::baseline(current.file, identity, end) {
            Ok(chain) => self.chains.push(chain),
            Err(err) => debug!(error = %err, "cannot hash the followed log"),
        }
    }

    /// Runs the periodic checks: suspicions that settled, the tail window and, when due, the
    /// whole prefix of the file at the path.
    pub fn poll(&mut self, tailer: &Tailer) -> Vec<Tamper> {
        let now = Instant::now();
        let mut found = self.poll_suspicions(tailer, now);
        let full = now.duration_since(self.last_full_check) >= self.options.full_check;
        if full {
            self.last_full_check = now;
        }
        let followed = tailer.followed();
        let Some(current) = followed.iter().find(|f| f.is_at_path) else {
            return found;
        };
        let Some(index) = self
            .chains
            .iter()
            .position(|c| c.identity == current.position.identity)
        else {
            return found;
        };
        // Deleted with no new file yet: the tailer notices nothing until one appears.
        if !is_linked(current.file) {
            let state = self.chains[index].state();
            if let Some(finding) = self.judge(&state, tailer, "") {
                let chain = self.chains.remove(index);
                self.suspicions
                    .push(Suspicion::new(state, now, finding, Some(&chain)));
            }
            return found;
        }
        let chain = &self.chains[index];
        // A file shorter than what was read is the tailer's to notice first (a truncation).
        let len = current.file.metadata().map_or(0, |m| m.len());
        if len < chain.end {
            return found;
        }
        let changed = match window_change(chain, current.file) {
            Ok(changed) => changed,
            Err(err) => {
                debug!(error = %err, "cannot re-read the tail of the log");
                return found;
            }
        };
        let changed = match changed {
            Some(line_no) => Some((Some(line_no), "a line already read changed in place")),
            None if full => match prefix_digest(current.file, chain.end) {
                Ok(Some(digest)) if digest == chain.digest() => None,
                Ok(_) => Some((None, "content before the last line read changed in place")),
                Err(err) => {
                    debug!(error = %err, "cannot re-hash the log");
                    None
                }
            },
            None => None,
        };
        if let Some((line_no, what)) = changed {
            let end = chain.end;
            let detail = match line_no {
                Some(line_no) => format!("{what}: line {line_no} is not what was read"),
                None => format!("{what}: the first {end} bytes no longer hash as read"),
            };
            found.push(Tamper {
                log: self.log.clone(),
                seen: "changed",
                detail,
                offset: end,
                size: Some(len),
                line_no,
            });
            // Report each edit once: what is there now is the new starting point.
            let identity = current.position.identity;
            match Chain::baseline(current.file, identity, end) {
                Ok(chain) => self.chains[index] = chain,
                Err(_) => {
                    self.chains.remove(index);
                }
            }
        }
        found
    }

    /// Returns the state to keep with a checkpoint at `identity` and `offset`.
    pub fn state_for(&mut self, identity: FileIdentity, offset: u64) -> Option<WitnessState> {
        let chain = self.chains.iter().find(|c| c.identity == identity);
        if let Some(digest) = chain.and_then(|c| c.digest_at(offset)) {
            let chain = chain?;
            self.saved = Some(WitnessState {
                identity,
                offset,
                digest: hex(&digest),
                fingerprint: chain.fingerprint.clone(),
                lines: chain.saved_lines(offset),
            });
        }
        self.saved
            .clone()
            .filter(|s| s.identity == identity && s.offset <= offset)
    }

    /// Re-judges waiting suspicions; returns those that settled unexplained.
    fn poll_suspicions(&mut self, tailer: &Tailer, now: Instant) -> Vec<Tamper> {
        let mut found = Vec::new();
        let suspicions = std::mem::take(&mut self.suspicions);
        for suspicion in suspicions {
            match self.judge(&suspicion.state, tailer, "") {
                None => {}
                Some(_) if self.copy_raced_a_write(&suspicion) => {}
                Some(_) if now.duration_since(suspicion.since) >= self.options.settle => {
                    found.push(suspicion.finding);
                }
                Some(_) => self.suspicions.push(suspicion),
            }
        }
        found
    }

    /// Whether a truncated log's missing content is in a copy beside it but for the last lines
    /// read, written after logrotate copied and before it truncated (see the module notes).
    fn copy_raced_a_write(&self, suspicion: &Suspicion) -> bool {
        if !matches!(suspicion.finding.seen, "shortened" | "first_line_changed") {
            return false;
        }
        let read = suspicion.state.offset;
        for candidate in siblings(&self.log) {
            // Older rotations are skipped before anything of them is read.
            let modified = fs::metadata(&candidate).and_then(|m| m.modified());
            let Ok(modified) = modified else { continue };
            let apart = suspicion
                .noticed
                .duration_since(modified)
                .or_else(|_| modified.duration_since(suspicion.noticed))
                .unwrap_or(Duration::MAX);
            if apart > RACE_WINDOW {
                continue;
            }
            let Some((len, digest)) = content_summary(&candidate) else {
                continue;
            };
            let matches = suspicion
                .prefixes
                .iter()
                .any(|&(end, known)| end == len && known == digest);
            if matches && len < read && read - len <= RACE_MAX_BYTES {
                info!(
                    log = %self.log.display(),
                    copy = %candidate.display(),
                    lost_bytes = read - len,
                    "a copy-and-truncate raced a write: lines read and delivered are in \
                     neither file; a rotation, not tamper"
                );
                return true;
            }
        }
        false
    }

    /// Returns `None` when the content `state` describes is still in the file or in a rotated
    /// copy beside it, else what was seen.
    fn judge(&self, state: &WitnessState, tailer: &Tailer, when: &str) -> Option<Tamper> {
        let followed = tailer.followed();
        let same = followed
            .iter()
            .find(|f| f.position.identity == state.identity);
        if let Some(same) = same {
            // Still the same file and content, and still reachable (renamed or not): a
            // rotation loses nothing. An unlinked file only the tailer still holds is gone.
            if is_linked(same.file) && holds(same.file, state) {
                return None;
            }
        }
        for candidate in siblings(&self.log) {
            if candidate_holds(&candidate, state) {
                info!(
                    log = %self.log.display(),
                    copy = %candidate.display(),
                    "what was read is in a rotated file; a rotation, not tamper"
                );
                return None;
            }
        }

        let when = if when.is_empty() {
            String::new()
        } else {
            format!(" {when}")
        };
        let offset = state.offset;
        let log = self.log.display();
        let same_file = same.map(|f| f.file).filter(|f| is_linked(f));
        let same_size = same_file.and_then(|f| f.metadata().ok()).map(|m| m.len());
        let (seen, detail, size) = match (same_file, same_size) {
            (Some(_), Some(size)) if size < offset => (
                "shortened",
                format!(
                    "{log} shrank from {offset} to {size} bytes{when} without a rotation: \
                     no file beside it holds the {offset} bytes read"
                ),
                Some(size),
            ),
            (Some(file), size) if fingerprint_of(file) != state.fingerprint => (
                "first_line_changed",
                format!(
                    "the first line of {log} changed{when} without a rotation (fingerprint {} \
                     became {})",
                    state.fingerprint.as_deref().unwrap_or("none"),
                    fingerprint_of(file).as_deref().unwrap_or("none")
                ),
                size,
            ),
            (Some(_), size) => (
                "changed",
                format!(
                    "the first {offset} bytes of {log}, already read, changed{when} without a \
                     rotation"
                ),
                size,
            ),
            (None, _) => {
                let now_at_path = File::open(&self.log).ok();
                let rewritten = now_at_path.as_ref().is_some_and(|f| {
                    fingerprint_of(f).is_some() && fingerprint_of(f) == state.fingerprint
                });
                let tail = if rewritten {
                    format!(
                        "; the file now at {log} begins with the same first line, a rewritten copy"
                    )
                } else {
                    String::new()
                };
                (
                    "replaced",
                    format!(
                        "{log} was deleted or replaced{when} and no file beside it holds the \
                         {offset} bytes read{tail}"
                    ),
                    now_at_path.and_then(|f| f.metadata().ok()).map(|m| m.len()),
                )
            }
        };
        Some(Tamper {
            log: self.log.clone(),
            seen,
            detail,
            offset,
            size,
            line_no: None,
        })
    }
}

/// Returns the line number of the first recent line whose bytes differ from what was read.
fn window_change(chain: &Chain, file: &File) -> io::Result<Option<u64>> {
    let Some(first) = chain.ring.front() else {
        return Ok(None);
    };
    let span = usize::try_from(chain.end - first.start).map_err(io::Error::other)?;
    let mut bytes = vec![0_u8; span];
    file.read_exact_at(&mut bytes, first.start)?;
    for entry in &chain.ring {
        let from = (entry.start - first.start) as usize;
        let to = (entry.end - first.start) as usize;
        let hash: Digest32 = Sha256::digest(&bytes[from..to]).into();
        if hash != entry.line_hash {
            return Ok(Some(entry.line_no));
        }
    }
    Ok(None)
}

/// Returns the offset after the last complete line of `file` whose hash (newline included) is
/// in `known`.
fn last_known_line_end(file: &File, known: &HashSet<Digest32>) -> io::Result<Option<u64>> {
    let mut chunk = vec![0_u8; CHUNK];
    let mut line = Sha256::new();
    let mut at = 0_u64;
    let mut last = None;
    loop {
        let n = match file.read_at(&mut chunk, at) {
            Ok(0) => return Ok(last),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &chunk[..n]) {
            line.update(&chunk[start..=newline]);
            let hash: Digest32 = std::mem::take(&mut line).finalize().into();
            if known.contains(&hash) {
                last = Some(at + newline as u64 + 1);
            }
            start = newline + 1;
        }
        line.update(&chunk[start..n]);
        at += n as u64;
    }
}

/// Reads a hex SHA-256 digest.
fn digest_from_hex(text: &str) -> Option<Digest32> {
    let mut digest = [0_u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

/// Whether a file still has a name somewhere.
fn is_linked(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    file.metadata().is_ok_and(|m| m.nlink() > 0)
}

/// Whether the first `state.offset` bytes of `file` hash to `state.digest`.
fn holds(file: &File, state: &WitnessState) -> bool {
    matches!(prefix_digest(file, state.offset), Ok(Some(d)) if hex(&d) == state.digest)
}

/// Whether a file beside the log (plain or gzip) begins with the content `state` describes.
fn candidate_holds(path: &Path, state: &WitnessState) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let is_gzip = path.extension().is_some_and(|e| e == "gz");
    let digest = if is_gzip {
        Ok(reader_digest(
            flate2::read::MultiGzDecoder::new(file),
            state.offset,
        ))
    } else {
        if file.metadata().map_or(true, |m| m.len() < state.offset) {
            return false;
        }
        prefix_digest(&file, state.offset)
    };
    matches!(digest, Ok(Some(d)) if hex(&d) == state.digest)
}

/// The length and hash of the content of a file beside the log, plain or gzip-compressed;
/// `None` when it cannot be read.
fn content_summary(path: &Path) -> Option<(u64, Digest32)> {
    let file = File::open(path).ok()?;
    if path.extension().is_some_and(|e| e == "gz") {
        hash_reader(flate2::read::MultiGzDecoder::new(file), u64::MAX)
    } else {
        hash_reader(file, u64::MAX)
    }
}

/// Hashes the first `len` bytes of `file`; `None` when it is shorter.
fn prefix_digest(file: &File, len: u64) -> io::Result<Option<Digest32>> {
    let mut hasher = Sha256::new();
    if hash_range(file, 0, len, &mut hasher)? < len {
        return Ok(None);
    }
    Ok(Some(hasher.finalize().into()))
}

/// Hashes the first `len` bytes a reader yields; `None` when it ends before.
fn reader_digest(reader: impl Read, len: u64) -> Option<Digest32> {
    hash_reader(reader, len)
        .filter(|&(total, _)| total == len)
        .map(|(_, digest)| digest)
}

/// Hashes what a reader yields, at most `limit` bytes; returns how many there were.
fn hash_reader(reader: impl Read, limit: u64) -> Option<(u64, Digest32)> {
    let mut hasher = Sha256::new();
    let mut limited = reader.take(limit);
    let mut chunk = vec![0_u8; CHUNK];
    let mut total = 0_u64;
    loop {
        match limited.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&chunk[..n]);
                total += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // A gzip file still being written ends early or is corrupt: it does not hold it yet.
            Err(_) => return None,
        }
    }
    Some((total, hasher.finalize().into()))
}

/// Feeds `[from, to)` of `file` to `hasher`; returns how many bytes there were.
fn hash_range(file: &File, from: u64, to: u64, hasher: &mut Sha256) -> io::Result<u64> {
    let mut chunk = vec![
        0_u8;
        CHUNK
            .min(usize::try_from(to.saturating_sub(from)).unwrap_or(CHUNK))
            .max(1)
    ];
    let mut at = from;
    while at < to {
        let want = chunk
            .len()
            .min(usize::try_from(to - at).unwrap_or(chunk.len()));
        match file.read_at(&mut chunk[..want], at) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&chunk[..n]);
                at += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(at - from)
}

/// The tailer's fingerprint of a file's first line, read without moving its offset.
fn fingerprint_of(file: &File) -> Option<String> {
    let mut own = file.try_clone().ok()?;
    // `try_clone` shares the offset; the fingerprint seeks, so restore it after.
    let at = io::Seek::stream_position(&mut own).ok()?;
    let print = fingerprint(&mut own).ok()?;
    io::Seek::seek(&mut own, io::SeekFrom::Start(at)).ok()?;
    print
}

/// Lists the files beside `log` that a rotation may have produced: `<name>.*` and `<name>-*`.
fn siblings(log: &Path) -> Vec<PathBuf> {
    let (Some(name), dir) = (log.file_name(), log.parent()) else {
        return Vec::new();
    };
    let dir = match dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = name.to_string_lossy();
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let other = entry.file_name();
            let other = other.to_string_lossy();
            other.len() > name.len()
                && other.starts_with(name.as_ref())
                && matches!(other.as_bytes()[name.len()], b'.' | b'-')
        })
        .map(|entry| entry.path())
        .collect();
    // The most recent rotation is the likeliest holder: `.1` before `.2.gz`.
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write as _;

    use super::*;
    use crate::source::tail::{StartAt, TailOptions};

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("append");
        file.write_all(text.as_bytes()).expect("write");
    }

    fn options() -> WitnessOptions {
        WitnessOptions {
            settle: Duration::ZERO,
            full_check: Duration::ZERO,
        }
    }

    /// A tailer and witness over a log with a few lines already read.
    struct Fixture {
        dir: tempfile::TempDir,
        log: PathBuf,
        tailer: Tailer,
        witness: LogWitness,
        /// Every line handed on, as the pipeline would deliver it.
        delivered: Vec<String>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("dir");
            let log = dir.path().join("dpkg.log");
            append(&log, "");
            let tail = TailOptions {
                start_at: StartAt::Beginning,
                ..TailOptions::default()
            };
            let (tailer, _) = Tailer::open(log.clone(), None, tail).expect("open");
            let (witness, found) = LogWitness::start(&log, &tailer, None, options());
            assert!(found.is_empty());
            let mut fixture = Self {
                dir,
                log,
                tailer,
                witness,
                delivered: Vec::new(),
            };
            fixture.write("2026-05-03 10:00:00 startup archives unpack\n");
            fixture.write("2026-05-03 10:00:01 install vim:amd64 <none> 2:9.0-1\n");
            fixture.write("2026-05-03 10:00:02 status installed vim:amd64 2:9.0-1\n");
            fixture
        }

        fn write(&mut self, text: &str) -> Vec<Tamper> {
            append(&self.log, text);
            self.read()
        }

        /// One wake-up of the pipeline: read, notices first, then lines, then a poll.
        fn read(&mut self) -> Vec<Tamper> {
            let (mut lines, notices) = self.tailer.read_lines(1000).expect("read");
            let mut found = Vec::new();
            if !notices.is_empty() {
                found.extend(self.witness.notice(&self.tailer));
            }
            self.witness.drop_delivered(&mut lines, &self.tailer);
            self.witness.observe(&lines, &self.tailer);
            self.delivered.extend(
                lines
                    .iter()
                    .map(|l| String::from_utf8_lossy(&l.bytes).into_owned()),
            );
            found.extend(self.witness.poll(&self.tailer));
            found
        }

        /// Returns the lines delivered since the last call.
        fn take_delivered(&mut self) -> Vec<String> {
            std::mem::take(&mut self.delivered)
        }

        /// Replaces the log's content in place: same inode, as `cat copy > dpkg.log` does.
        fn rewrite_in_place(&self, text: &str) {
            OpenOptions::new()
                .write(true)
                .open(&self.log)
                .and_then(|f| {
                    f.set_len(0)?;
                    f.write_all_at(text.as_bytes(), 0)
                })
                .expect("rewrite");
        }

        fn sibling(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn seen(found: &[Tamper]) -> Vec<&'static str> {
        found.iter().map(|t| t.seen).collect()
    }

    #[test]
    fn appends_are_no_tamper() {
        let mut fixture = Fixture::new();
        let found = fixture.write("2026-05-03 10:00:03 startup packages configure\n");
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_log_shortened_in_place_is_tamper() {
        let mut fixture = Fixture::new();
        let text = fs::read_to_string(&fixture.log).expect("read");
        let kept: String = text.lines().take(1).flat_map(|l| [l, "\n"]).collect();
        OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| {
                f.set_len(0)?;
                f.write_all_at(kept.as_bytes(), 0)
            })
            .expect("shorten");
        let found = fixture.read();
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
        assert!(
            found[0].detail.contains("shrank from"),
            "{}",
            found[0].detail
        );
    }

    #[test]
    fn a_line_rewritten_in_place_is_named() {
        let mut fixture = Fixture::new();
        let text = fs::read_to_string(&fixture.log).expect("read");
        let forged = text.replace("install vim:amd64", "install vi0:amd64");
        fs::OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.write_all_at(forged.as_bytes(), 0))
            .expect("rewrite");
        let found = fixture.read();
        assert_eq!(seen(&found), ["changed"], "{found:?}");
        assert_eq!(found[0].line_no, Some(2));
        // Reported once.
        assert!(fixture.read().is_empty());
    }

    #[test]
    fn a_first_line_changed_is_tamper() {
        let mut fixture = Fixture::new();
        let text = fs::read_to_string(&fixture.log).expect("read");
        let forged = text.replacen("10:00:00", "09:59:59", 1);
        fs::OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.write_all_at(forged.as_bytes(), 0))
            .expect("rewrite");
        append(
            &fixture.log,
            "2026-05-03 10:00:04 startup packages configure\n",
        );
        let found = fixture.read();
        assert_eq!(seen(&found), ["first_line_changed"], "{found:?}");
    }

    #[test]
    fn a_rewritten_copy_in_place_of_the_log_is_tamper() {
        let mut fixture = Fixture::new();
        let text = fs::read_to_string(&fixture.log).expect("read");
        let forged: String = text
            .lines()
            .filter(|l| !l.contains("vim"))
            .flat_map(|l| [l, "\n"])
            .collect();
        // What `sed -i` does: a new file renamed over the log.
        let temporary = fixture.sibling("sedXYZ");
        fs::write(&temporary, forged).expect("write");
        fs::rename(&temporary, &fixture.log).expect("rename");
        let found = fixture.read();
        assert_eq!(seen(&found), ["replaced"], "{found:?}");
        assert!(
            found[0].detail.contains("rewritten copy"),
            "{}",
            found[0].detail
        );
    }

    const NEXT: &str = "2026-05-03 10:00:09 startup packages configure";

    /// The fixture's log as it is, less its install line: an edit that hides a change.
    fn without_the_install(fixture: &Fixture) -> String {
        fs::read_to_string(&fixture.log)
            .expect("read")
            .lines()
            .filter(|l| !l.contains(" install "))
            .flat_map(|l| [l, "\n"])
            .collect()
    }

    #[test]
    fn lines_left_in_a_tampered_log_are_not_delivered_again() {
        // Shortened in place: the install line cut out, the lines around it kept.
        let mut fixture = Fixture::new();
        fixture.take_delivered();
        let kept = without_the_install(&fixture);
        fixture.rewrite_in_place(&kept);
        let found = fixture.read();
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
        assert_eq!(fixture.take_delivered(), Vec::<String>::new());
        // What dpkg writes after the tampering is delivered, once.
        fixture.write(&format!("{NEXT}\n"));
        assert_eq!(fixture.take_delivered(), [NEXT]);
        assert!(fixture.read().is_empty());
        assert!(fixture.take_delivered().is_empty());

        // Rewritten through a new file renamed over the log (`sed -i '/ install /d'`), with a
        // line appended to it.
        let mut fixture = Fixture::new();
        fixture.take_delivered();
        let forged = format!("{}{NEXT}\n", without_the_install(&fixture));
        let temporary = fixture.sibling("sedXYZ");
        fs::write(&temporary, forged).expect("write");
        fs::rename(&temporary, &fixture.log).expect("rename");
        let found = fixture.read();
        assert_eq!(seen(&found), ["replaced"], "{found:?}");
        assert_eq!(fixture.take_delivered(), [NEXT]);

        // Emptied and written again: nothing of the old content is left, every line is new.
        let mut fixture = Fixture::new();
        fixture.take_delivered();
        fixture.rewrite_in_place(&format!("{NEXT}\n"));
        let found = fixture.read();
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
        assert_eq!(fixture.take_delivered(), [NEXT]);
    }

    #[test]
    fn a_rewrite_read_between_its_truncation_and_its_write_delivers_nothing_again() {
        let mut fixture = Fixture::new();
        fixture.take_delivered();
        let kept = without_the_install(&fixture);
        // `cat edited > dpkg.log`: the shell truncates, the sensor reads, then cat writes.
        OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        let found = fixture.read();
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
        append(&fixture.log, &kept);
        assert!(fixture.read().is_empty());
        assert_eq!(fixture.take_delivered(), Vec::<String>::new());
        fixture.write(&format!("{NEXT}\n"));
        assert_eq!(fixture.take_delivered(), [NEXT]);
    }

    #[test]
    fn lines_after_a_rotation_are_all_delivered() {
        let mut fixture = Fixture::new();
        fixture.take_delivered();
        fs::copy(&fixture.log, fixture.sibling("dpkg.log.1")).expect("copy");
        let text = fs::read_to_string(&fixture.log).expect("read");
        // The first line again, as a new run in the same second may write it.
        let first = text.lines().next().expect("a line").to_owned();
        fixture.rewrite_in_place(&format!("{first}\n{NEXT}\n"));
        assert!(fixture.read().is_empty());
        assert_eq!(fixture.take_delivered(), [first.as_str(), NEXT]);
    }

    #[test]
    fn lines_left_in_a_log_shortened_while_the_sensor_was_down_are_not_delivered_again() {
        let fixture = Fixture::new();
        let position = fixture.tailer.position().expect("position");
        let mut witness = fixture.witness;
        let state = witness
            .state_for(position.identity, position.offset)
            .expect("state");
        assert_eq!(state.lines.len(), 3);
        let checkpoint = crate::source::checkpoint::Checkpoint::new(
            fixture.log.clone(),
            position.identity,
            position.fingerprint.clone(),
            position.offset,
        );
        let text = fs::read_to_string(&fixture.log).expect("read");
        let kept: String = text.lines().take(2).flat_map(|l| [l, "\n"]).collect();
        OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| {
                f.set_len(0)?;
                f.write_all_at(format!("{kept}{NEXT}\n").as_bytes(), 0)
            })
            .expect("shorten");

        let (mut tailer, notices) = Tailer::open(
            fixture.log.clone(),
            Some(&checkpoint),
            TailOptions::default(),
        )
        .expect("open");
        assert!(notices.contains(&crate::source::tail::TailNotice::Truncated));
        let (mut witness, found) = LogWitness::start(&fixture.log, &tailer, Some(state), options());
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
        let (mut lines, _) = tailer.read_lines(1000).expect("read");
        assert_eq!(lines.len(), 3, "the tailer reads the file from its start");
        witness.drop_delivered(&mut lines, &tailer);
        let texts: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect();
        assert_eq!(texts, [NEXT]);
    }

    #[test]
    fn rename_and_create_is_a_rotation() {
        let mut fixture = Fixture::new();
        fs::rename(&fixture.log, fixture.sibling("dpkg.log.1")).expect("rotate");
        let found = fixture.write("2026-06-01 00:00:00 startup archives unpack\n");
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn copytruncate_is_a_rotation_when_the_copy_holds_what_was_read() {
        let mut fixture = Fixture::new();
        fs::copy(&fixture.log, fixture.sibling("dpkg.log.1")).expect("copy");
        OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        let found = fixture.write("2026-06-01 00:00:00 startup archives unpack\n");
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn copytruncate_into_a_gzip_copy_is_a_rotation() {
        let mut fixture = Fixture::new();
        let text = fs::read(&fixture.log).expect("read");
        let gz = File::create(fixture.sibling("dpkg.log.1.gz")).expect("create");
        let mut encoder = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
        encoder.write_all(&text).expect("compress");
        encoder.finish().expect("finish");
        OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        let found = fixture.write("2026-06-01 00:00:00 startup archives unpack\n");
        assert!(found.is_empty(), "{found:?}");
    }

    /// Copies the log as logrotate does, then lets `between` write and the tailer read before
    /// the truncation; returns what the witness found once a new line came.
    fn copytruncate_racing(
        fixture: &mut Fixture,
        between: &str,
        copy_age: Duration,
    ) -> Vec<Tamper> {
        let copy = fixture.sibling("dpkg.log.1");
        fs::copy(&fixture.log, &copy).expect("copy");
        let modified = SystemTime::now() - copy_age;
        File::options()
            .write(true)
            .open(&copy)
            .and_then(|f| f.set_modified(modified))
            .expect("set the copy's time");
        let mut found = fixture.write(between);
        OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        found.extend(fixture.write("2026-06-01 00:00:00 startup archives unpack\n"));
        found
    }

    #[test]
    fn a_copytruncate_racing_a_write_is_a_rotation() {
        let mut fixture = Fixture::new();
        fixture.take_delivered();
        let between = "2026-05-03 10:00:03 remove vim:amd64 2:9.0-1 <none>\n";
        let found = copytruncate_racing(&mut fixture, between, Duration::ZERO);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(
            fixture.take_delivered(),
            [
                "2026-05-03 10:00:03 remove vim:amd64 2:9.0-1 <none>",
                "2026-06-01 00:00:00 startup archives unpack"
            ]
        );
    }

    #[test]
    fn an_old_copy_lacking_lines_read_is_tamper() {
        let mut fixture = Fixture::new();
        let between = "2026-05-03 10:00:03 remove vim:amd64 2:9.0-1 <none>\n";
        let found = copytruncate_racing(&mut fixture, between, Duration::from_hours(1));
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
    }

    #[test]
    fn a_copy_lacking_more_than_a_race_can_write_is_tamper() {
        let mut fixture = Fixture::new();
        let line = format!(
            "2026-05-03 10:00:03 status installed {}:amd64 1\n",
            "p".repeat(400)
        );
        let lines = usize::try_from(RACE_MAX_BYTES).expect("small") / line.len() + 1;
        let found = copytruncate_racing(&mut fixture, &line.repeat(lines), Duration::ZERO);
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
    }

    #[test]
    fn a_truncation_without_a_copy_is_tamper() {
        let mut fixture = Fixture::new();
        OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        let found = fixture.write("2026-06-01 00:00:00 startup archives unpack\n");
        assert_eq!(seen(&found), ["shortened"], "{found:?}");
    }

    #[test]
    fn a_deleted_log_is_tamper() {
        let mut fixture = Fixture::new();
        fs::remove_file(&fixture.log).expect("remove");
        let found = fixture.write("2026-06-01 00:00:00 startup archives unpack\n");
        assert_eq!(seen(&found), ["replaced"], "{found:?}");
    }

    #[test]
    fn over_long_lines_are_part_of_the_hash() {
        let mut fixture = Fixture::new();
        let long = format!("{}\n", "x".repeat(100_000));
        let mut found = fixture.write(&long);
        found.extend(fixture.write("2026-05-03 10:00:05 startup packages configure\n"));
        assert!(found.is_empty(), "{found:?}");
        let state = fixture.witness.chains[0].state();
        let file = File::open(&fixture.log).expect("open");
        assert!(holds(&file, &state));
    }

    #[test]
    fn a_restart_verifies_the_checkpoints_prefix() {
        let fixture = Fixture::new();
        let position = fixture.tailer.position().expect("position");
        let mut witness = fixture.witness;
        let state = witness
            .state_for(position.identity, position.offset)
            .expect("state");
        let checkpoint = crate::source::checkpoint::Checkpoint::new(
            fixture.log.clone(),
            position.identity,
            position.fingerprint.clone(),
            position.offset,
        );
        let reopen = |state: WitnessState| {
            let (tailer, _) = Tailer::open(
                fixture.log.clone(),
                Some(&checkpoint),
                TailOptions::default(),
            )
            .expect("open");
            LogWitness::start(&fixture.log, &tailer, Some(state), options()).1
        };
        assert!(reopen(state.clone()).is_empty());

        // Edited while the sensor was down: same size, same first line.
        let text = fs::read_to_string(&fixture.log).expect("read");
        fs::OpenOptions::new()
            .write(true)
            .open(&fixture.log)
            .and_then(|f| f.write_all_at(text.replace("2:9.0-1", "2:9.0-2").as_bytes(), 0))
            .expect("edit");
        let found = reopen(state);
        assert_eq!(seen(&found), ["changed"], "{found:?}");
        assert!(found[0].detail.contains("while the sensor was down"));
    }
}
