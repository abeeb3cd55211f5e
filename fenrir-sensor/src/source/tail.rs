//! Follows one log file through appends, rotations and truncations.
//!
//! In: a path and, optionally, the checkpoint of an earlier run. Out: complete lines, each with
//! the position just after it, in the order they were written. State: the open file, the
//! offset of the first unread byte, a partial last line, the rotated-away files still being
//! drained, and the files met so far (identity and first line), which tell a rotation missed
//! between two reads, or a copy left by copytruncate, from the log's history.
//!
//! The tailer does no waiting of its own: the caller calls [`Tailer::read_lines`] whenever
//! the directory watch fires or a timer ticks, and the tailer reads to the end of every file it
//! follows. That makes it deaf to nothing: coalesced notifications, a watch set up late, or a
//! rotation between two wake-ups all end in the same read.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::checkpoint::{
    fingerprint, fingerprint_of_head, Checkpoint, FileIdentity, FINGERPRINT_SPAN,
};

/// Bytes read per `read` call.
const CHUNK: usize = 64 * 1024;

/// One complete line of the log and where it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line without its newline.
    pub bytes: Vec<u8>,
    /// The line's number in its file, from 1, for diagnostics.
    pub line_no: u64,
    /// The position just after the line's newline: where a restart resumes.
    pub position: Position,
}

/// A place in a specific file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub identity: FileIdentity,
    pub fingerprint: Option<String>,
    pub offset: u64,
}

/// What the tailer noticed while reading, for diagnostics and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailNotice {
    /// The file at the path was replaced (rotation, delete and recreate, inode reuse).
    Rotated,
    /// The file shrank below the read offset or its first line changed (copytruncate).
    Truncated,
    /// A line longer than the limit was dropped.
    LineTooLong { bytes: u64 },
    /// The rotated-away file went quiet and was closed, with a partial line dropped.
    RetiredWithPartialLine { bytes: usize },
}

/// Where to start in a file that has no usable checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    End,
}

/// Settings of one tailer.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Longer lines are dropped and reported, never buffered whole.
    pub max_line_bytes: usize,
    /// How long a rotated-away file is still drained after it last grew: dpkg keeps writing
    /// to the file it opened until it exits.
    pub rotated_grace: Duration,
    /// Where to begin when there is no checkpoint and the file exists at start.
    pub start_at: StartAt,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: 64 * 1024,
            rotated_grace: Duration::from_mins(1),
            start_at: StartAt::End,
        }
    }
}

/// An open file being read.
#[derive(Debug)]
struct Followed {
    file: File,
    identity: FileIdentity,
    fingerprint: Option<String>,
    /// Offset of the first byte not yet read.
    read_offset: u64,
    /// Bytes after the last newline read so far.
    partial: Vec<u8>,
    /// Bytes of an over-long line being skipped; the line ends at the next newline.
    skipping: Option<u64>,
    /// Newlines before `read_offset`, for line numbers in diagnostics.
    lines_read: u64,
    last_growth: Instant,
    /// The first bytes of the file as this reader read them from offset 0, so its fingerprint
    /// describes what it read, not what the file holds a moment later.
    head: Vec<u8>,
    /// Whether reading started at offset 0, so `head` is the file's beginning.
    head_from_start: bool,
}

/// Where a reader stood before a read, to go back there when the read raced a truncation.
#[derive(Debug)]
struct Mark {
    read_offset: u64,
    partial: Vec<u8>,
    skipping: Option<u64>,
    lines_read: u64,
    fingerprint: Option<String>,
    head: Vec<u8>,
    head_from_start: bool,
}

impl Followed {
    fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let identity = FileIdentity::of_file(&file)?;
        let fingerprint = fingerprint(&mut file)?;
        let mut followed = Self {
            file,
            identity,
            fingerprint,
            read_offset: 0,
            partial: Vec::new(),
            skipping: None,
            lines_read: 0,
            last_growth: Instant::now(),
            head: Vec::new(),
            head_from_start: false,
        };
        followed.seek_to(offset)?;
        Ok(followed)
    }

    fn mark(&self) -> Mark {
        Mark {
            read_offset: self.read_offset,
            partial: self.partial.clone(),
            skipping: self.skipping,
            lines_read: self.lines_read,
            fingerprint: self.fingerprint.clone(),
            head: self.head.clone(),
            head_from_start: self.head_from_start,
        }
    }

    fn rewind(&mut self, mark: Mark) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(mark.read_offset))?;
        self.read_offset = mark.read_offset;
        self.partial = mark.partial;
        self.skipping = mark.skipping;
        self.lines_read = mark.lines_read;
        self.fingerprint = mark.fingerprint;
        self.head = mark.head;
        self.head_from_start = mark.head_from_start;
        Ok(())
    }

    /// Moves to `offset`, a line boundary, counting the lines before it once so diagnostics
    /// can name line numbers (a memchr-speed pass over a log of a few megabytes).
    fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut lines = 0_u64;
        let mut remaining = offset;
        let mut chunk = vec![0_u8; CHUNK];
        while remaining > 0 {
            let want = remaining.min(CHUNK as u64) as usize;
            let n = self.file.read(&mut chunk[..want])?;
            if n == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &chunk[..n]).count() as u64;
            remaining -= n as u64;
        }
        self.file.seek(SeekFrom::Start(offset))?;
        self.read_offset = offset;
        self.lines_read = lines;
        self.partial.clear();
        self.skipping = None;
        self.head.clear();
        self.head_from_start = offset == 0;
        Ok(())
    }

    /// The offset just after the last complete line.
    fn line_offset(&self) -> u64 {
        self.read_offset - self.partial.len() as u64 - self.skipping.unwrap_or(0)
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            identity: self.identity,
            fingerprint: self.fingerprint.clone(),
            offset,
        }
    }

    /// Whether the content under our offset is gone: the file shrank, or its first line
    /// changed because it was truncated and written again between two reads.
    fn is_truncated(&mut self) -> io::Result<bool> {
        let len = self.file.metadata()?.len();
        if len < self.read_offset {
            return Ok(true);
        }
        if let Some(known) = &self.fingerprint {
            let current = fingerprint(&mut self.file)?;
            self.file.seek(SeekFrom::Start(self.read_offset))?;
            if current.as_ref() != Some(known) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn restart_from_beginning(&mut self) -> io::Result<()> {
        // Known again from the first line this reader reads, whatever the file holds by then.
        self.fingerprint = None;
        self.seek_to(0)
    }

    /// Reads up to `max_lines` complete lines; returns whether the end of file was reached.
    fn read_into(
        &mut self,
        out: &mut Vec<Line>,
        max_lines: usize,
        max_line_bytes: usize,
        notices: &mut Vec<TailNotice>,
    ) -> io::Result<bool> {
        let mut chunk = vec![0_u8; CHUNK];
        while out.len() < max_lines {
            let n = match self.file.read(&mut chunk) {
                Ok(0) => {
                    self.refresh_fingerprint_if_missing()?;
                    return Ok(true);
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.last_growth = Instant::now();
            let base = self.read_offset;
            if self.head_from_start && base < FINGERPRINT_SPAN as u64 {
                let take = n.min(FINGERPRINT_SPAN - base as usize);
                self.head.extend_from_slice(&chunk[..take]);
            }
            self.read_offset += n as u64;
            self.split_lines(&chunk[..n], base, out, max_line_bytes, notices);
        }
        self.refresh_fingerprint_if_missing()?;
        Ok(false)
    }

    /// Fingerprints the file once its first line is complete; until then positions carry none.
    fn refresh_fingerprint_if_missing(&mut self) -> io::Result<()> {
        if self.fingerprint.is_some() || self.read_offset == 0 {
            return Ok(());
        }
        if self.head_from_start {
            self.fingerprint = fingerprint_of_head(&self.head);
            return Ok(());
        }
        self.fingerprint = fingerprint(&mut self.file)?;
        self.file.seek(SeekFrom::Start(self.read_offset))?;
        Ok(())
    }

    fn split_lines(
        &mut self,
        data: &[u8],
        base: u64,
        out: &mut Vec<Line>,
        max_line_bytes: usize,
        notices: &mut Vec<TailNotice>,
    ) {
        let mut start = 0;
        for (index, _) in data.iter().enumerate().filter(|(_, &b)| b == b'\n') {
            let end_offset = base + index as u64 + 1;
            self.lines_read += 1;
            if let Some(skipped) = self.skipping.take() {
                notices.push(TailNotice::LineTooLong {
                    bytes: skipped + index as u64 - start as u64,
                });
            } else if self.partial.len() + (index - start) > max_line_bytes {
                notices.push(TailNotice::LineTooLong {
                    bytes: (self.partial.len() + index - start) as u64,
                });
                self.partial.clear();
            } else {
                let mut bytes = std::mem::take(&mut self.partial);
                bytes.extend_from_slice(&data[start..index]);
                out.push(Line {
                    bytes,
                    line_no: self.lines_read,
                    position: self.position(end_offset),
                });
            }
            start = index + 1;
        }

        let rest = &data[start..];
        if let Some(skipped) = self.skipping.as_mut() {
            *skipped += rest.len() as u64;
        } else if self.partial.len() + rest.len() > max_line_bytes {
            // Keep only a count: an endless line must not grow memory without bound.
            self.skipping = Some((self.partial.len() + rest.len()) as u64);
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(rest);
        }
    }
}

/// Follows the file at one path.
#[derive(Debug)]
pub struct Tailer {
    path: PathBuf,
    options: TailOptions,
    current: Option<Followed>,
    /// Rotated-away files, oldest first, that may still receive lines from a running dpkg.
    retired: Vec<Followed>,
    /// Files already met at the path or beside it, so that a sibling never met is known to be
    /// one the path held between two reads.
    known: Known,
    /// When the path was last looked at: a rotation missed since was written after it.
    last_look: SystemTime,
    /// The file was truncated: once it is read to its end, look for copies never seen.
    copies_pending: bool,
}

/// The files the tailer has met, each as its identity with the fingerprint of its first line
/// (an inode is reused by files of other content), oldest forgotten first.
#[derive(Debug, Default)]
struct Known {
    files: HashSet<(FileIdentity, Option<String>)>,
    fingerprints: HashSet<String>,
    order: VecDeque<(FileIdentity, Option<String>)>,
}

impl Known {
    fn remember(&mut self, identity: FileIdentity, fingerprint: Option<String>) {
        if !self.files.insert((identity, fingerprint.clone())) {
            return;
        }
        if let Some(fingerprint) = &fingerprint {
            self.fingerprints.insert(fingerprint.clone());
        }
        self.order.push_back((identity, fingerprint));
        while self.order.len() > KNOWN_FILES {
            if let Some(file) = self.order.pop_front() {
                if let Some(fingerprint) = &file.1 {
                    self.fingerprints.remove(fingerprint);
                }
                self.files.remove(&file);
            }
        }
    }
}

/// Files remembered in [`Known`]. Forgetting one is harmless once it has not been written for
/// a while: only files written since the last look are taken for missed rotations.
const KNOWN_FILES: usize = 4096;

/// How often one call reads the file again after a read raced a truncation.
const RACED_READS: usize = 4;

/// Rotated files still drained at most; the oldest is closed first. A dpkg run writing a file
/// rotated this many times since it opened it is long over in practice.
const MAX_RETIRED: usize = 16;

/// How much older than the last look a missed rotation's last write may seem (time stamps
/// of different file systems and clocks are coarse).
const LOOK_SLACK: Duration = Duration::from_secs(2);

/// Siblings that are compressed rotations: never the log itself, never read.
const COMPRESSED: [&str; 4] = [".gz", ".xz", ".bz2", ".zst"];

impl Tailer {
    /// Starts following `path`, resuming from `checkpoint` when it still describes a file
    /// that can be found.
    ///
    /// With a checkpoint whose file was rotated away while the sensor was down, the rotated
    /// file (found among the path's siblings by identity) is finished first and the new file
    /// is read from its beginning, so nothing written in between is missed.
    pub fn open(
        path: PathBuf,
        checkpoint: Option<&Checkpoint>,
        options: TailOptions,
    ) -> io::Result<(Self, Vec<TailNotice>)> {
        let mut tailer = Self {
            path,
            options,
            current: None,
            retired: Vec::new(),
            known: Known::default(),
            last_look: SystemTime::now(),
            copies_pending: false,
        };
        let mut notices = Vec::new();
        // What lies beside the log now is history: never mistaken later for a missed rotation.
        for sibling in tailer.siblings() {
            if let Ok(file) = Followed::open(&sibling, 0) {
                tailer.remember(&file);
            }
        }

        // TODO: a file the path held only while the sensor was down (two rotations since the
        // checkpoint) is taken for history here and never read; its lines are missed.
        if !tailer.path.exists() {
            // Rotated away while the sensor was down and not yet recreated: finish the old file.
            if let Some(checkpoint) = checkpoint {
                tailer.retired.extend(tailer.find_rotated(checkpoint)?);
            }
            return Ok((tailer, notices));
        }

        let Some(checkpoint) = checkpoint else {
            let offset = match tailer.options.start_at {
                StartAt::Beginning => 0,
                StartAt::End => fs::metadata(&tailer.path)?.len(),
            };
            let current = Followed::open(&tailer.path, offset)?;
            tailer.remember(&current);
            tailer.current = Some(current);
            return Ok((tailer, notices));
        };

        let current = Followed::open(&tailer.path, 0)?;
        tailer.remember(&current);
        if matches_checkpoint(&current, checkpoint)? {
            let mut current = current;
            current.seek_to(checkpoint.offset)?;
            tailer.current = Some(current);
            return Ok((tailer, notices));
        }

        notices.push(TailNotice::Rotated);
        if let Some(rotated) = tailer.find_rotated(checkpoint)? {
            tailer.retired.push(rotated);
        } else if current.identity == checkpoint.identity {
            // Copied and truncated while the sensor was down: the rest is in the copy.
            notices.push(TailNotice::Truncated);
            tailer.retired.extend(find_copy(
                &tailer.path,
                current.identity,
                checkpoint.fingerprint.as_deref(),
                checkpoint.offset,
            )?);
        }
        tailer.current = Some(current);
        Ok((tailer, notices))
    }

    /// Looks among the path's siblings for the file the checkpoint was taken in.
    fn find_rotated(&self, checkpoint: &Checkpoint) -> io::Result<Option<Followed>> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(None);
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) else {
            return Ok(None);
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let Ok(candidate) = Followed::open(&entry.path(), 0) else {
                continue;
            };
            if candidate.identity == checkpoint.identity
                && matches_checkpoint(&candidate, checkpoint)?
            {
                let mut candidate = candidate;
                candidate.seek_to(checkpoint.offset)?;
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// Returns the path being followed.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the position after the last complete line of the file at the path, the place a
    /// checkpoint taken now would resume from when every returned line has been handled.
    #[must_use]
    pub fn position(&self) -> Option<Position> {
        self.current.as_ref().map(|f| f.position(f.line_offset()))
    }

    /// Reads every complete line available now, up to `max_lines`, rotated file first.
    ///
    /// Call again while it returns `max_lines` lines. Notices say what was detected on the
    /// way (rotation, truncation, over-long lines).
    pub fn read_lines(&mut self, max_lines: usize) -> io::Result<(Vec<Line>, Vec<TailNotice>)> {
        let read = self.read_lines_once(max_lines);
        // First lines learned while reading are what tells a copy of the log from a rotation.
        let open: Vec<(FileIdentity, Option<String>)> = self
            .current
            .iter()
            .chain(&self.retired)
            .map(|f| (f.identity, f.fingerprint.clone()))
            .collect();
        for (identity, fingerprint) in open {
            self.known.remember(identity, fingerprint);
        }
        read
    }

    fn read_lines_once(&mut self, max_lines: usize) -> io::Result<(Vec<Line>, Vec<TailNotice>)> {
        let mut lines = Vec::new();
        let mut notices = Vec::new();
        let max_line_bytes = self.options.max_line_bytes;

        if self.drain_retired(&mut lines, max_lines, &mut notices)? {
            return Ok((lines, notices));
        }

        let truncated = match self.current.as_mut() {
            Some(current) => current.is_truncated()?,
            None => false,
        };
        if truncated {
            notices.push(TailNotice::Truncated);
            self.read_copies(&mut lines, &mut notices)?;
        }
        // A truncation between the check above and the read, or during it, would pass off
        // bytes of the new content as the old file's: read, check again, and on a truncation
        // go back and take the old file's rest from its copy.
        let mut at_end = true;
        for _ in 0..RACED_READS {
            let Some(current) = self.current.as_mut() else {
                break;
            };
            let (mark, before) = (current.mark(), lines.len());
            at_end = current.read_into(&mut lines, max_lines, max_line_bytes, &mut notices)?;
            if !current.is_truncated()? {
                break;
            }
            lines.truncate(before);
            current.rewind(mark)?;
            notices.push(TailNotice::Truncated);
            self.read_copies(&mut lines, &mut notices)?;
        }
        if !at_end {
            return Ok((lines, notices));
        }
        if self.copies_pending {
            self.read_missed_copies(&mut lines, &mut notices)?;
        }

        self.follow_path_changes(&mut lines, max_lines, &mut notices)?;
        Ok((lines, notices))
    }

    /// Handles a truncation of the followed file: what came after the last read is in the copy
    /// copytruncate made first; it is read before the file is read again from its start.
    fn read_copies(
        &mut self,
        lines: &mut Vec<Line>,
        notices: &mut Vec<TailNotice>,
    ) -> io::Result<()> {
        let Some(current) = self.current.as_ref() else {
            return Ok(());
        };
        let max_line_bytes = self.options.max_line_bytes;
        let (identity, fingerprint) = (current.identity, current.fingerprint.clone());
        let copy = find_copy(
            &self.path,
            identity,
            fingerprint.as_deref(),
            current.line_offset(),
        )?;
        if let Some(current) = self.current.as_mut() {
            current.restart_from_beginning()?;
        }
        if let Some(mut copy) = copy {
            copy.read_into(lines, usize::MAX, max_line_bytes, notices)?;
            self.remember(&copy);
        }
        self.known.remember(identity, fingerprint);
        self.copies_pending = true;
        Ok(())
    }

    /// After a truncation, once the file is read to its end: reads the copies of content never
    /// seen that copytruncates between two reads left, and files the path held meanwhile.
    fn read_missed_copies(
        &mut self,
        lines: &mut Vec<Line>,
        notices: &mut Vec<TailNotice>,
    ) -> io::Result<()> {
        let Some(identity) = self.current.as_ref().map(|c| c.identity) else {
            return Ok(());
        };
        self.copies_pending = false;
        let max_line_bytes = self.options.max_line_bytes;
        for mut file in self.missed_rotations(identity) {
            file.read_into(lines, usize::MAX, max_line_bytes, notices)?;
        }
        Ok(())
    }

    /// Reads every rotated-away file to its end, oldest first, and forgets those quiet for
    /// longer than the grace period; returns whether `max_lines` was reached.
    fn drain_retired(
        &mut self,
        lines: &mut Vec<Line>,
        max_lines: usize,
        notices: &mut Vec<TailNotice>,
    ) -> io::Result<bool> {
        let max_line_bytes = self.options.max_line_bytes;
        for retired in &mut self.retired {
            retired.read_into(lines, max_lines, max_line_bytes, notices)?;
            if lines.len() >= max_lines {
                return Ok(true);
            }
        }
        let grace = self.options.rotated_grace;
        self.retired.retain(|retired| {
            if retired.last_growth.elapsed() < grace {
                return true;
            }
            if !retired.partial.is_empty() {
                notices.push(TailNotice::RetiredWithPartialLine {
                    bytes: retired.partial.len(),
                });
            }
            false
        });
        Ok(false)
    }

    /// Returns the path's siblings that may be uncompressed rotations of it: `<log>.*`.
    fn siblings(&self) -> Vec<PathBuf> {
        let (Some(name), dir) = (self.path.file_name(), self.path.parent()) else {
            return Vec::new();
        };
        let dir = match dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.starts_with(&prefix) && !COMPRESSED.iter().any(|ext| name.ends_with(ext))
            })
            .map(|entry| entry.path())
            .collect()
    }

    fn remember(&mut self, file: &Followed) {
        self.known.remember(file.identity, file.fingerprint.clone());
    }

    /// Whether a file was met before: the same file with the same first line, or another file
    /// beginning with a line already read (a copy of the log).
    fn has_met(&self, file: &Followed) -> bool {
        let mut open = self.current.iter().chain(&self.retired);
        self.known
            .files
            .contains(&(file.identity, file.fingerprint.clone()))
            || file
                .fingerprint
                .as_ref()
                .is_some_and(|f| self.known.fingerprints.contains(f))
            || open.any(|f| {
                f.identity == file.identity
                    || (file.fingerprint.is_some() && f.fingerprint == file.fingerprint)
            })
    }

    /// Opens the rotations the path held between two reads: siblings never met, written since
    /// the last look, with a first line never read; oldest last write first.
    fn missed_rotations(&mut self, next: FileIdentity) -> Vec<Followed> {
        let since = self.last_look.checked_sub(LOOK_SLACK).unwrap_or(UNIX_EPOCH);
        let mut missed: Vec<(SystemTime, Followed)> = Vec::new();
        for path in self.siblings() {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let identity = FileIdentity {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            let Ok(modified) = meta.modified() else {
                continue;
            };
            if identity == next || modified < since {
                continue;
            }
            match Followed::open(&path, 0) {
                Ok(file) if !self.has_met(&file) => missed.push((modified, file)),
                _ => {}
            }
        }
        missed.sort_by_key(|(modified, _)| *modified);
        let missed: Vec<Followed> = missed.into_iter().map(|(_, file)| file).collect();
        for file in &missed {
            self.remember(file);
        }
        missed
    }

    /// Switches to a new file at the path once the current one is drained.
    ///
    /// A file the path held only between two reads (two rotations within one wake-up, or a
    /// long batch) is found among the siblings as one never met, and read before the new one.
    fn follow_path_changes(
        &mut self,
        lines: &mut Vec<Line>,
        max_lines: usize,
        notices: &mut Vec<TailNotice>,
    ) -> io::Result<()> {
        let looked = SystemTime::now();
        let identity = match FileIdentity::of_path(&self.path) {
            Ok(identity) => identity,
            // Renamed or deleted: keep draining the open file, a running dpkg still writes it.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.identity == identity)
        {
            self.last_look = looked;
            return Ok(());
        }

        let fresh = match Followed::open(&self.path, 0) {
            Ok(fresh) => fresh,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        if let Some(previous) = self.current.take() {
            notices.push(TailNotice::Rotated);
            self.retired.push(previous);
        }
        let missed = self.missed_rotations(fresh.identity);
        self.retired.extend(missed);
        if self.retired.len() > MAX_RETIRED {
            let closed = self.retired.len() - MAX_RETIRED;
            self.retired.drain(..closed);
        }
        self.remember(&fresh);
        self.last_look = looked;
        // A file that appears after start is new: every line in it is unread.
        self.current = Some(fresh);
        if self.drain_retired(lines, max_lines, notices)? {
            return Ok(());
        }
        if let Some(current) = self.current.as_mut() {
            current.read_into(lines, max_lines, self.options.max_line_bytes, notices)?;
        }
        Ok(())
    }

    /// Returns whether a rotated-away file is still being drained.
    #[must_use]
    pub fn is_draining_rotated(&self) -> bool {
        !self.retired.is_empty()
    }

    /// Returns the files being followed — the one at the path, then a rotated-away one still
    /// drained — with the position after their last complete line, for readers that check
    /// what was read (positional reads on the handle do not move the tailer's offset).
    #[must_use]
    pub fn followed(&self) -> Vec<FollowedFile<'_>> {
        self.current
            .iter()
            .map(|f| (f, true))
            .chain(self.retired.iter().map(|f| (f, false)))
            .map(|(f, at_path)| FollowedFile {
                file: &f.file,
                position: f.position(f.line_offset()),
                is_at_path: at_path,
            })
            .collect()
    }
}

/// A file the tailer follows, as [`Tailer::followed`] lends it.
#[derive(Debug)]
pub struct FollowedFile<'a> {
    pub file: &'a File,
    pub position: Position,
    /// Whether it is the file at the followed path (not a rotated-away one).
    pub is_at_path: bool,
}

/// Finds the copy `copytruncate` left of a truncated log, positioned at `offset`: a sibling
/// `<log>.*` that is another file than the log (`live`), begins with the line whose
/// fingerprint the log had, and is at least `offset` long.
///
/// Lines written between logrotate's copy and its truncation are in neither file; this finds
/// only what a copy holds. A copy compressed at once (`compress` without `delaycompress`) is
/// not read.
fn find_copy(
    path: &Path,
    live: FileIdentity,
    fingerprint: Option<&str>,
    offset: u64,
) -> io::Result<Option<Followed>> {
    let (Some(fingerprint), Some(name)) = (fingerprint, path.file_name()) else {
        return Ok(None);
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut best: Option<(u64, Followed)> = None;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let Ok(candidate) = Followed::open(&entry.path(), 0) else {
            continue;
        };
        let len = candidate.file.metadata()?.len();
        if candidate.identity != live
            && candidate.fingerprint.as_deref() == Some(fingerprint)
            && len >= offset
            && best.as_ref().is_none_or(|(longest, _)| len > *longest)
        {
            best = Some((len, candidate));
        }
    }
    let Some((_, mut copy)) = best else {
        return Ok(None);
    };
    copy.seek_to(offset)?;
    Ok(Some(copy))
}

/// Whether `followed` is the file `checkpoint` was taken in, still holding what was read.
fn matches_checkpoint(followed: &Followed, checkpoint: &Checkpoint) -> io::Result<bool> {
    if followed.identity != checkpoint.identity {
        return Ok(false);
    }
    if followed.file.metadata()?.len() < checkpoint.offset {
        return Ok(false);
    }
    Ok(match (&checkpoint.fingerprint, &followed.fingerprint) {
        (Some(saved), Some(now)) => saved == now,
        // No complete first line when the checkpoint was taken: the offset is then 0 too.
        (None, _) => true,
        (Some(_), None) => false,
    })
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("append");
        file.write_all(text.as_bytes()).expect("write");
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    fn read_all(tailer: &mut Tailer) -> Vec<String> {
        let (lines, _) = tailer.read_lines(10_000).expect("read");
        texts(&lines)
    }

    /// A log of one line, `first`, in a directory of its own, followed from its start with
    /// that line read.
    fn following(first: &str) -> (tempfile::TempDir, PathBuf, Tailer) {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, &format!("{first}\n"));
        let (mut tailer, _) =
            Tailer::open(log.clone(), None, options(StartAt::Beginning)).expect("open");
        assert_eq!(read_all(&mut tailer), [first]);
        (dir, log, tailer)
    }

    fn checkpoint_of(tailer: &Tailer) -> Checkpoint {
        let p = tailer.position().expect("position");
        Checkpoint::new(
            tailer.path().to_path_buf(),
            p.identity,
            p.fingerprint,
            p.offset,
        )
    }

    fn options(start_at: StartAt) -> TailOptions {
        TailOptions {
            start_at,
            rotated_grace: Duration::from_mins(1),
            ..TailOptions::default()
        }
    }

    #[test]
    fn starts_at_end_without_checkpoint() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "old 1\nold 2\n");
        let (mut tailer, _) = Tailer::open(log.clone(), None, options(StartAt::End)).expect("open");
        assert!(read_all(&mut tailer).is_empty());
        append(&log, "new 1\n");
        assert_eq!(read_all(&mut tailer), ["new 1"]);
    }

    #[test]
    fn from_start_reads_existing_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "old 1\nold 2\n");
        let (mut tailer, _) =
            Tailer::open(log.clone(), None, options(StartAt::Beginning)).expect("open");
        assert_eq!(read_all(&mut tailer), ["old 1", "old 2"]);
    }

    #[test]
    fn partial_last_line_waits_for_its_newline() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "");
        let (mut tailer, _) = Tailer::open(log.clone(), None, options(StartAt::End)).expect("open");
        append(&log, "first\nsecond half");
        assert_eq!(read_all(&mut tailer), ["first"]);
        assert_eq!(tailer.position().map(|p| p.offset), Some(6));
        append(&log, " done\n");
        assert_eq!(read_all(&mut tailer), ["second half done"]);
    }

    #[test]
    fn rename_and_create_finishes_old_file_first() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "");
        let (mut tailer, _) = Tailer::open(log.clone(), None, options(StartAt::End)).expect("open");
        append(&log, "a\n");
        assert_eq!(read_all(&mut tailer), ["a"]);

        // A running dpkg still holds the old file: its last lines land after the rename.
        let mut held = OpenOptions::new().append(true).open(&log).expect("hold");
        fs::rename(&log, dir.path().join("dpkg.log.1")).expect("rename");
        append(&log, "c\n");
        held.write_all(b"b\n").expect("late write");

        assert_eq!(read_all(&mut tailer), ["b", "c"]);
        assert!(tailer.is_draining_rotated());
        held.write_all(b"d\n").expect("later write");
        append(&log, "e\n");
        assert_eq!(read_all(&mut tailer), ["d", "e"]);
    }

    #[test]
    fn copytruncate_rereads_from_start() {
        let (dir, log, mut tailer) = following("2026-01-01 one");

        fs::copy(&log, dir.path().join("dpkg.log.1")).expect("copy");
        OpenOptions::new()
            .write(true)
            .open(&log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        append(&log, "2026-02-01 two\n");
        let (lines, notices) = tailer.read_lines(100).expect("read");
        assert_eq!(texts(&lines), ["2026-02-01 two"]);
        assert!(notices.contains(&TailNotice::Truncated));
    }

    fn copy_and_truncate(log: &Path, copy: &Path) {
        fs::copy(log, copy).expect("copy");
        OpenOptions::new()
            .write(true)
            .open(log)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
    }

    #[test]
    fn lines_written_before_a_copytruncate_are_read_from_the_copy() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "2026-01-01 one\n");
        fs::write(dir.path().join("dpkg.log.2"), "2025-12-01 older rotation\n").expect("old");
        let (mut tailer, _) =
            Tailer::open(log.clone(), None, options(StartAt::Beginning)).expect("open");
        assert_eq!(read_all(&mut tailer), ["2026-01-01 one"]);

        // Written and copied, but truncated before the tailer read them.
        append(&log, "2026-01-01 two\n2026-01-01 three\n");
        copy_and_truncate(&log, &dir.path().join("dpkg.log.1"));
        append(&log, "2026-02-01 four\n");
        assert_eq!(
            read_all(&mut tailer),
            ["2026-01-01 two", "2026-01-01 three", "2026-02-01 four"]
        );
        assert_eq!(read_all(&mut tailer), Vec::<String>::new());
    }

    #[test]
    fn two_copytruncates_between_reads_lose_nothing_a_copy_holds() {
        let (dir, log, mut tailer) = following("2026-01-01 one");

        append(&log, "2026-01-01 two\n");
        copy_and_truncate(&log, &dir.path().join("dpkg.log.1"));
        append(&log, "2026-01-02 three\n");
        copy_and_truncate(&log, &dir.path().join("dpkg.log.2"));
        append(&log, "2026-01-03 four\n");
        // The second copy's content was never seen at the path: it comes last.
        assert_eq!(
            read_all(&mut tailer),
            ["2026-01-01 two", "2026-01-03 four", "2026-01-02 three"]
        );
        assert_eq!(read_all(&mut tailer), Vec::<String>::new());
    }

    #[test]
    fn a_copytruncate_while_stopped_resumes_in_the_copy() {
        let (dir, log, tailer) = following("2026-01-01 one");
        let checkpoint = checkpoint_of(&tailer);
        drop(tailer);

        append(&log, "2026-01-01 two\n");
        copy_and_truncate(&log, &dir.path().join("dpkg.log.1"));
        append(&log, "2026-02-01 three\n");
        let (mut tailer, notices) =
            Tailer::open(log, Some(&checkpoint), options(StartAt::End)).expect("reopen");
        assert!(notices.contains(&TailNotice::Truncated));
        assert_eq!(
            read_all(&mut tailer),
            ["2026-01-01 two", "2026-02-01 three"]
        );
    }

    fn rotate(log: &Path, to: &str) {
        fs::rename(log, log.with_file_name(to)).expect("rotate");
        append(log, "");
    }

    #[test]
    fn a_file_rotated_in_and_out_between_two_reads_is_read_in_order() {
        let (_dir, log, mut tailer) = following("2026-01-01 a1");

        append(&log, "2026-01-01 a2\n");
        rotate(&log, "dpkg.log.1");
        append(&log, "2026-01-01 b1\n");
        rotate(&log, "dpkg.log.2");
        append(&log, "2026-01-01 c1\n");
        assert_eq!(
            read_all(&mut tailer),
            ["2026-01-01 a2", "2026-01-01 b1", "2026-01-01 c1"]
        );
    }

    #[test]
    fn a_writer_still_on_a_file_rotated_twice_away_is_followed() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "2026-01-01 a1\n");
        let (mut tailer, _) =
            Tailer::open(log.clone(), None, options(StartAt::Beginning)).expect("open");
        let mut slow_writer = OpenOptions::new().append(true).open(&log).expect("writer");
        assert_eq!(read_all(&mut tailer), ["2026-01-01 a1"]);

        rotate(&log, "dpkg.log.1");
        assert_eq!(read_all(&mut tailer), Vec::<String>::new());
        rotate(&log, "dpkg.log.2");
        assert_eq!(read_all(&mut tailer), Vec::<String>::new());
        slow_writer.write_all(b"2026-01-01 a2\n").expect("write");
        assert_eq!(read_all(&mut tailer), ["2026-01-01 a2"]);
    }

    #[test]
    fn rotated_logs_older_than_the_tailer_are_never_read() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        fs::write(dir.path().join("dpkg.log.1"), "2025-12-01 old\n").expect("old log");
        append(&log, "2026-01-01 a1\n");
        let (mut tailer, _) =
            Tailer::open(log.clone(), None, options(StartAt::Beginning)).expect("open");
        assert_eq!(read_all(&mut tailer), ["2026-01-01 a1"]);

        // logrotate shifts the old one away and writes it again (touching its times).
        fs::rename(dir.path().join("dpkg.log.1"), dir.path().join("dpkg.log.2")).expect("shift");
        append(&dir.path().join("dpkg.log.2"), "");
        rotate(&log, "dpkg.log.1");
        append(&log, "2026-02-01 b1\n");
        assert_eq!(read_all(&mut tailer), ["2026-02-01 b1"]);
    }

    #[test]
    fn truncation_regrown_past_offset_is_caught_by_fingerprint() {
        let (_dir, log, mut tailer) = following("2026-01-01 one");

        fs::write(&log, "2026-03-01 replaced line that is longer\n").expect("rewrite");
        assert_eq!(
            read_all(&mut tailer),
            ["2026-03-01 replaced line that is longer"]
        );
    }

    #[test]
    fn delete_and_recreate_is_followed() {
        let (_dir, log, mut tailer) = following("a");
        fs::remove_file(&log).expect("remove");
        assert!(read_all(&mut tailer).is_empty());
        append(&log, "b\n");
        assert_eq!(read_all(&mut tailer), ["b"]);
    }

    #[test]
    fn missing_file_is_waited_for_and_read_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        let (mut tailer, _) = Tailer::open(log.clone(), None, options(StartAt::End)).expect("open");
        assert!(read_all(&mut tailer).is_empty());
        append(&log, "first ever\n");
        assert_eq!(read_all(&mut tailer), ["first ever"]);
    }

    #[test]
    fn restart_from_checkpoint_resumes_exactly() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "a\nb\n");
        let (mut tailer, _) =
            Tailer::open(log.clone(), None, options(StartAt::Beginning)).expect("open");
        assert_eq!(read_all(&mut tailer), ["a", "b"]);
        append(&log, "c\npart");
        assert_eq!(read_all(&mut tailer), ["c"]);
        let saved = checkpoint_of(&tailer);
        drop(tailer);

        append(&log, "ial\nd\n");
        let (mut tailer, notices) =
            Tailer::open(log.clone(), Some(&saved), options(StartAt::End)).expect("reopen");
        assert!(notices.is_empty());
        let (lines, _) = tailer.read_lines(100).expect("read");
        assert_eq!(texts(&lines), ["partial", "d"]);
        assert_eq!(lines.iter().map(|l| l.line_no).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn restart_after_rotation_while_down_finishes_rotated_file() {
        let (dir, log, tailer) = following("a");
        let saved = checkpoint_of(&tailer);
        drop(tailer);

        append(&log, "b\n");
        fs::rename(&log, dir.path().join("dpkg.log.1")).expect("rotate");
        append(&log, "c\n");
        let (mut tailer, _) =
            Tailer::open(log.clone(), Some(&saved), options(StartAt::End)).expect("reopen");
        assert_eq!(read_all(&mut tailer), ["b", "c"]);
    }

    #[test]
    fn inode_reuse_is_caught_by_fingerprint() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "2026-01-01 old first line\nold second\n");
        let (mut tailer, _) =
            Tailer::open(log.clone(), None, options(StartAt::Beginning)).expect("open");
        read_all(&mut tailer);
        let mut saved = checkpoint_of(&tailer);
        drop(tailer);

        // Same device and inode, other content: what a reused inode number looks like.
        fs::write(
            &log,
            "2026-06-01 new first line that is long enough to pass\nx\n",
        )
        .expect("rewrite");
        saved.identity = FileIdentity::of_path(&log).expect("identity");
        let (mut tailer, notices) =
            Tailer::open(log.clone(), Some(&saved), options(StartAt::End)).expect("reopen");
        assert!(notices.contains(&TailNotice::Truncated));
        assert_eq!(
            read_all(&mut tailer),
            ["2026-06-01 new first line that is long enough to pass", "x"]
        );
    }

    #[test]
    fn over_long_line_is_dropped_and_the_next_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("dpkg.log");
        append(&log, "");
        let options = TailOptions {
            max_line_bytes: 100,
            ..options(StartAt::End)
        };
        let (mut tailer, _) = Tailer::open(log.clone(), None, options).expect("open");
        append(&log, &"x".repeat(1_000_000));
        let (lines, _) = tailer.read_lines(100).expect("read");
        assert!(lines.is_empty());
        append(&log, "\nok\n");
        let (lines, notices) = tailer.read_lines(100).expect("read");
        assert_eq!(texts(&lines), ["ok"]);
        assert_eq!(lines[0].line_no, 2);
        assert_eq!(notices, [TailNotice::LineTooLong { bytes: 1_000_000 }]);
        assert_eq!(tailer.position().map(|p| p.offset), Some(1_000_004));
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Step {
        Append(u8),
        Read,
        RenameRotate,
        /// Two rotations with lines in between before the tailer reads again.
        DoubleRotate(u8),
        CopyTruncate,
        /// copytruncate as logrotate does it: a copy first.
        CopyThenTruncate,
        DeleteRecreate,
        Restart,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1_u8..20).prop_map(Step::Append),
            3 => Just(Step::Read),
            1 => Just(Step::RenameRotate),
            1 => (1_u8..10).prop_map(Step::DoubleRotate),
            1 => Just(Step::CopyTruncate),
            1 => Just(Step::CopyThenTruncate),
            1 => Just(Step::DeleteRecreate),
            1 => Just(Step::Restart),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the sequence of writes, rotations, truncations and restarts, the tailer
        /// yields every line once, in order; only lines copytruncate cut before they were read
        /// are gone (they live on in the copy).
        #[test]
        fn random_histories_lose_and_repeat_nothing(steps in proptest::collection::vec(step(), 1..40)) {
            let dir = tempfile::tempdir().expect("dir");
            let log = dir.path().join("dpkg.log");
            append(&log, "");
            let open = |checkpoint: Option<&Checkpoint>| {
                Tailer::open(log.clone(), checkpoint, options(StartAt::End)).expect("open").0
            };
            let mut tailer = open(None);
            let (mut written, mut expected, mut got) = (0_u32, Vec::new(), Vec::new());
            let mut unread = Vec::new();
            let mut rotations = 0;
            // Lines in the live file, and whether the tailer has seen its first line: only
            // then can it tell the file was copied and truncated under it.
            let (mut live, mut known_first) = (0_usize, false);
            // Lines only a copy holds, of content the tailer never saw: they may come back when
            // the copy is met as a rotation the tailer missed, in no particular place.
            let mut maybe = Vec::new();
            // Lines a copy holds that the tailer reads there at its next look.
            let mut from_copy = Vec::new();

            for step in steps {
                match step {
                    Step::Append(n) => {
                        let mut text = String::new();
                        for _ in 0..n {
                            written += 1;
                            let line = format!("2026-01-01 00:00:00 line {written}");
                            text.push_str(&line);
                            text.push('\n');
                            unread.push(line);
                        }
                        live += usize::from(n);
                        append(&log, &text);
                    }
                    Step::Read => {
                        got.extend(read_all(&mut tailer));
                        expected.append(&mut from_copy);
                        expected.append(&mut unread);
                        known_first |= live > 0;
                    }
                    // The directory watch wakes the tailer on each rotation, so a read follows.
                    Step::RenameRotate => {
                        rotations += 1;
                        fs::rename(&log, dir.path().join(format!("dpkg.log.{rotations}")))
                            .expect("rotate");
                        append(&log, "");
                        got.extend(read_all(&mut tailer));
                        expected.append(&mut from_copy);
                        expected.append(&mut unread);
                        (live, known_first) = (0, false);
                    }
                    Step::DoubleRotate(n) => {
                        for _ in 0..2 {
                            rotations += 1;
                            fs::rename(&log, dir.path().join(format!("dpkg.log.{rotations}")))
                                .expect("rotate");
                            append(&log, "");
                            let mut text = String::new();
                            for _ in 0..n {
                                written += 1;
                                let line = format!("2026-01-01 00:00:00 line {written}");
                                text.push_str(&line);
                                text.push('\n');
                                unread.push(line);
                            }
                            append(&log, &text);
                        }
                        got.extend(read_all(&mut tailer));
                        expected.append(&mut from_copy);
                        expected.append(&mut unread);
                        (live, known_first) = (usize::from(n), true);
                    }
                    Step::CopyThenTruncate => {
                        rotations += 1;
                        fs::copy(&log, dir.path().join(format!("dpkg.log.{rotations}")))
                            .expect("copy");
                        OpenOptions::new()
                            .write(true)
                            .open(&log)
                            .and_then(|f| f.set_len(0))
                            .expect("truncate");
                        // Unseen, the file's old content cannot be told from new content.
                        if known_first {
                            from_copy.append(&mut unread);
                        } else {
                            maybe.append(&mut unread);
                        }
                        (live, known_first) = (0, false);
                    }
                    Step::CopyTruncate => {
                        unread.clear();
                        (live, known_first) = (0, false);
                        OpenOptions::new()
                            .write(true)
                            .open(&log)
                            .and_then(|f| f.set_len(0))
                            .expect("truncate");
                    }
                    Step::DeleteRecreate => {
                        fs::remove_file(&log).expect("delete");
                        append(&log, "");
                        got.extend(read_all(&mut tailer));
                        expected.append(&mut from_copy);
                        expected.append(&mut unread);
                        (live, known_first) = (0, false);
                    }
                    Step::Restart => {
                        got.extend(read_all(&mut tailer));
                        expected.append(&mut from_copy);
                        expected.append(&mut unread);
                        let saved = tailer.position().map(|p| {
                            Checkpoint::new(log.clone(), p.identity, p.fingerprint, p.offset)
                        });
                        drop(tailer);
                        tailer = open(saved.as_ref());
                        known_first = live > 0;
                    }
                }
            }
            got.extend(read_all(&mut tailer));
            expected.append(&mut from_copy);
                        expected.append(&mut unread);
            for line in &maybe {
                let copies = got.iter().filter(|g| *g == line).count();
                proptest::prop_assert!(copies <= 1, "{line} read {copies} times");
            }
            got.retain(|line| !maybe.contains(line));
            proptest::prop_assert_eq!(got, expected);
        }
    }
}
