//! The logs (and the one database) the sensor follows, each with its own tail and checkpoint.
//!
//! In: a manager's log path and the tail settings, and on every wake-up a [`Delivery`] to hand
//! changes to. Out: package changes, in log order, per source. State per source: the tailer,
//! the format's reader (changes still waiting for a later line), lines read but not yet
//! delivered, the position last made durable in `<state_dir>/checkpoints/`.
//!
//! Every log uses the same [`Tailer`] and [`CheckpointStore`]: rotations, truncations and
//! restarts behave alike whatever the manager. A log that does not exist yet is waited for
//! and read from its first line when it appears. A log first met without a checkpoint starts
//! at its end, but its existing lines are read once without reporting them, so readers that
//! decide from history (which versions yum or zypper installed before) know it.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use tracing::{debug, error, info, warn};

use super::checkpoint::{Checkpoint, CheckpointStore};
use super::database::{DatabaseKind, WatchedDatabase};
use super::lock::{dpkg_lock_state, lock_holder, LockState};
use super::origin::Origin;
use super::tail::{Line, Position, StartAt, TailNotice, TailOptions, Tailer};
use crate::parse::interpret::InterpretStats;
use crate::parse::manager::{ChangeLog, LogFormat, Manager, RunStart, MAX_LINE_LEN};
use crate::parse::PackageChange;
use crate::replay::read_bounded_line;

/// Lines read per batch: bounds memory when starting from the beginning of a long log.
const BATCH_LINES: usize = 1024;

/// How many consecutive polls must find the database unlocked before changes still waiting
/// are settled: a script running `dpkg --unpack` then `dpkg --configure` releases the lock
/// for an instant between the two.
pub const FREE_POLLS_BEFORE_FINISH: u32 = 2;

/// Which source a change came from, as the delivery needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTag {
    pub manager: Manager,
    /// The source's position in the pipeline's list, for attribution.
    pub index: usize,
}

/// Where a source hands its changes.
pub trait Delivery {
    /// Runs before a batch of lines is decided: the writer's kernel records must be in.
    fn before_lines(&mut self);

    /// Sees each batch `source`'s tailer read, its notices first, before the lines are queued;
    /// takes out of `lines` those that must not be handled again (a tampered log read again).
    fn after_read(
        &mut self,
        _source: SourceTag,
        _lines: &mut Vec<Line>,
        _notices: &[TailNotice],
        _tailer: &Tailer,
    ) {
    }

    /// Sees every line of `source` before it is decided.
    fn observe_line(&mut self, source: SourceTag, line: &Line);

    /// Returns what `source`'s checkpoint at `position` keeps of the log's content, for the
    /// integrity stage's log witness.
    fn witness_state(&mut self, _source: SourceTag, _position: &Position) -> Option<Value> {
        None
    }

    /// Runs before `source`'s checkpoint moves to a new position.
    fn before_checkpoint(&mut self, source: SourceTag);

    /// Learns that a line of `source` opened a run of its manager.
    fn run_started(&mut self, source: SourceTag, start: &RunStart);

    /// Sends changes to the sinks; returns whether every event was taken by some sink.
    /// `origin` is where in the log they were decided, which names them; `None` for changes
    /// no log line records.
    fn deliver(
        &mut self,
        source: SourceTag,
        changes: Vec<PackageChange>,
        origin: Option<Origin<'_>>,
    ) -> bool;

    /// Sends changes a database showed were made while the sensor was down, marked so.
    fn deliver_offline(&mut self, source: SourceTag, changes: Vec<PackageChange>) -> bool;

    /// Retries what the sinks have not taken; returns whether reading may go on.
    fn is_released(&mut self) -> bool;

    /// Learns that every line of `source` before `position` has been handed on, with the
    /// reader's saved state there: where a restart reads changes handed on later again.
    fn note_position(
        &mut self,
        _source: SourceTag,
        _position: &Position,
        _transactions: Option<&serde_json::Value>,
    ) {
    }

    /// Returns the noted position (with its state) that `source`'s checkpoint may not pass
    /// while changes handed on from after it are still on their way to the sinks.
    fn checkpoint_limit(
        &mut self,
        _source: SourceTag,
    ) -> Option<(Position, Option<serde_json::Value>)> {
        None
    }

    /// Returns whether every change of `source` handed on has gone on to the sinks.
    fn is_settled(&mut self, _source: SourceTag) -> bool {
        true
    }
}

/// How the end of a manager's run is known, when changes wait for it.
#[derive(Debug, Clone)]
pub enum RunEnd {
    /// dpkg and its front ends lock the admin directory.
    DpkgLock(PathBuf),
    /// rpm locks `<dbpath>/.rpm.lock` for a transaction; any of these paths.
    RpmLock(Vec<PathBuf>),
    /// No lock is known: the run is over when the log has been quiet.
    Quiet,
}

impl RunEnd {
    /// Returns whether a run still holds the database.
    fn is_busy(&self) -> bool {
        let state = match self {
            Self::DpkgLock(admin_dir) => dpkg_lock_state(admin_dir),
            Self::RpmLock(files) => lock_holder(files),
            Self::Quiet => return false,
        };
        match state {
            Ok(LockState::Held { pid }) => {
                debug!(?pid, "package database locked; changes still in progress");
                true
            }
            Ok(LockState::Free) => false,
            Err(err) => {
                // Without the lock the end of a run is inferred from silence alone.
                debug!(error = %err, "cannot query the package database lock");
                false
            }
        }
    }
}

/// Returns the rpm lock files of the root a dnf log belongs to (`<root>/var/log/dnf.rpm.log`).
#[must_use]
pub fn rpm_locks_for(log: &Path) -> Vec<PathBuf> {
    let root = root_of(log, Manager::Dnf.default_log()).unwrap_or_else(|| PathBuf::from("/"));
    ["var/lib/rpm/.rpm.lock", "usr/lib/sysimage/rpm/.rpm.lock"]
        .iter()
        .map(|lock| root.join(lock))
        .collect()
}

/// Returns the root a path lies under when it ends in `relative` (`/srv/r/var/log/x` under
/// `var/log/x` is `/srv/r`).
#[must_use]
pub fn root_of(path: &Path, relative: &str) -> Option<PathBuf> {
    let mut root = path.to_path_buf();
    for _ in Path::new(relative).components() {
        if !root.pop() {
            return None;
        }
    }
    (root.join(relative) == path).then_some(root)
}

/// The settings every followed log shares.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    pub state_dir: PathBuf,
    pub tail: TailOptions,
}

/// One followed log.
#[derive(Debug)]
pub struct FollowedLog {
    tag: SourceTag,
    tailer: Tailer,
    reader: Box<dyn ChangeLog>,
    run_end: RunEnd,
    store: CheckpointStore,
    /// Lines read but not yet handled, because delivery is held.
    queued: VecDeque<Line>,
    /// The position after the line whose events no sink has taken yet.
    held: Option<Position>,
    saved: Option<Checkpoint>,
    free_polls: u32,
    /// Whether the last read failed, so the failure is reported once.
    read_failing: bool,
    too_long: u64,
    /// Whether reading resumed exactly where the last run stopped, in the same file.
    is_continuous: bool,
}

impl FollowedLog {
    /// Opens `log` in `format`, resuming from its checkpoint.
    ///
    /// # Errors
    /// The log exists but cannot be opened.
    pub fn open(
        tag: SourceTag,
        log: &Path,
        format: LogFormat,
        run_end: RunEnd,
        options: &FollowOptions,
    ) -> anyhow::Result<Self> {
        let store = CheckpointStore::for_log(&options.state_dir, log);
        let checkpoint = store.load().unwrap_or_else(|err| {
            warn!(error = %format!("{err:#}"), "checkpoint unusable; starting at the end of the log");
            None
        });
        let (tailer, notices) =
            Tailer::open(log.to_path_buf(), checkpoint.as_ref(), options.tail.clone())
                .with_context(|| format!("failed to open {}", log.display()))?;
        let saved_state = checkpoint.as_ref().and_then(|c| c.transactions.as_ref());
        let mut reader = format.reader(saved_state);

        // A fresh reader reads what is already written, silently, to learn its history.
        if checkpoint.is_none() && format != LogFormat::Dpkg && log.exists() {
            reader.begin_file(log);
            if options.tail.start_at == StartAt::End {
                let end = tailer.position().map_or(0, |p| p.offset);
                if let Err(err) = learn(reader.as_mut(), log, end) {
                    warn!(path = %log.display(), error = %err, "cannot read the log's history");
                }
            }
        }

        let is_continuous =
            checkpoint.is_some() && (notices.is_empty() || tailer.is_draining_rotated());
        let mut followed = Self {
            tag,
            tailer,
            reader,
            run_end,
            store,
            queued: VecDeque::new(),
            held: None,
            saved: checkpoint,
            free_polls: 0,
            read_failing: false,
            too_long: 0,
            is_continuous,
        };
        followed.note(&notices);
        Ok(followed)
    }

    /// Returns the log's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.tailer.path()
    }

    /// Returns the log's tailer, for readers that check what it read.
    #[must_use]
    pub fn tailer(&self) -> &Tailer {
        &self.tailer
    }

    /// Returns the checkpoint last made durable (at start, the one resumed from).
    #[must_use]
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.saved.as_ref()
    }

    /// Reads and hands on everything available; stops early while delivery is held.
    ///
    /// A read error (the log unreadable for a moment) is reported once and retried on the next
    /// wake-up; nothing already read is lost and the sensor keeps running.
    pub fn pump(&mut self, out: &mut dyn Delivery) {
        // With nothing held, every line read has been handed on.
        if let (None, Some(position)) = (&self.held, self.tailer.position()) {
            out.note_position(self.tag, &position, self.reader.saved_state().as_ref());
        }
        loop {
            if !self.release_hold(out) {
                return;
            }
            let Some(line) = self.queued.pop_front() else {
                // A checkpoint per batch bounds what a crash can make the sinks see twice.
                self.save_checkpoint(out, self.tailer.position());
                let (mut lines, notices) = match self.tailer.read_lines(BATCH_LINES) {
                    Ok(read) => read,
                    Err(err) => {
                        if !self.read_failing {
                            let path = self.tailer.path().display().to_string();
                            error!(path, error = %err, "cannot read the log; retrying");
                            self.read_failing = true;
                        }
                        return;
                    }
                };
                if std::mem::take(&mut self.read_failing) {
                    info!(path = %self.tailer.path().display(), "log readable again");
                }
                self.note(&notices);
                let is_end = lines.is_empty();
                out.after_read(self.tag, &mut lines, &notices, &self.tailer);
                if is_end {
                    break;
                }
                // The writer's exec record reached the ring buffer before its first line did.
                out.before_lines();
                self.queued.extend(lines);
                continue;
            };

            out.observe_line(self.tag, &line);
            let changes = self
                .reader
                .line(&line.bytes, self.tailer.path(), line.line_no);
            if let Some(start) = self.reader.take_run_start() {
                out.run_started(self.tag, &start);
            }
            if !out.deliver(self.tag, changes, Some(Origin::Line(&line.position))) {
                self.held = Some(line.position);
                return;
            }
            self.free_polls = 0;
        }
        self.save_checkpoint(out, self.tailer.position());
    }

    /// Retries a held delivery; returns whether reading may go on.
    fn release_hold(&mut self, out: &mut dyn Delivery) -> bool {
        let Some(position) = self.held.clone() else {
            return true;
        };
        if !out.is_released() {
            return false;
        }
        info!("a sink accepted the held event; reading resumes");
        self.held = None;
        self.save_checkpoint(out, Some(position));
        true
    }

    /// Settles changes still waiting once the manager's run is over.
    pub fn finish_if_idle(&mut self, out: &mut dyn Delivery) {
        if !self.reader.has_pending() || self.held.is_some() {
            return;
        }
        if self.run_end.is_busy() {
            self.free_polls = 0;
            return;
        }
        self.free_polls += 1;
        if self.free_polls < FREE_POLLS_BEFORE_FINISH {
            return;
        }

        // The last lines of the run may have landed since the previous read.
        self.pump(out);
        if self.held.is_some() {
            return;
        }
        let position = self.tailer.position();
        if let Some(position) = &position {
            out.note_position(self.tag, position, self.reader.saved_state().as_ref());
        }
        let changes = self.reader.finish();
        let file = position.as_ref().map(|p| p.identity);
        if !out.deliver(self.tag, changes, Some(Origin::RunEnd(file))) {
            self.held = position;
            return;
        }
        self.save_checkpoint(out, position);
    }

    fn note(&mut self, notices: &[TailNotice]) {
        let path = self.tailer.path().display().to_string();
        for notice in notices {
            match notice {
                TailNotice::Rotated => info!(path, "log rotated; following the new file"),
                TailNotice::Truncated => info!(path, "log truncated; reading it from the start"),
                TailNotice::LineTooLong { bytes } => {
                    self.too_long += 1;
                    debug!(path, bytes, "skipping over-long line");
                }
                TailNotice::RetiredWithPartialLine { bytes } => {
                    warn!(
                        path,
                        bytes, "rotated log ended in a partial line; dropping it"
                    );
                }
            }
        }
    }

    fn save_checkpoint(&mut self, out: &mut dyn Delivery, position: Option<Position>) {
        let Some(position) = position else { return };
        let transactions = self.reader.saved_state();
        out.note_position(self.tag, &position, transactions.as_ref());
        // Changes still on their way keep the checkpoint before their lines.
        let (position, transactions) = out
            .checkpoint_limit(self.tag)
            .unwrap_or((position, transactions));
        let witness = out.witness_state(self.tag, &position);
        let mut checkpoint = Checkpoint::new(
            self.tailer.path().to_path_buf(),
            position.identity,
            position.fingerprint,
            position.offset,
        );
        checkpoint.transactions = transactions;
        checkpoint.witness = witness;
        if self.saved.as_ref() == Some(&checkpoint) {
            return;
        }
        out.before_checkpoint(self.tag);
        match self.store.save(&checkpoint) {
            Ok(()) => self.saved = Some(checkpoint),
            // Events are already out; a stale checkpoint only risks repeats after a crash.
            Err(err) => warn!(error = %format!("{err:#}"), "failed to save checkpoint"),
        }
    }
}

/// Feeds the first `end` bytes of `log` (a line boundary) to `reader`, dropping the changes:
/// history only. The file is streamed, so a long log costs no memory.
fn learn(reader: &mut dyn ChangeLog, log: &Path, end: u64) -> io::Result<()> {
    use std::io::Read as _;

    let file = std::fs::File::open(log)?;
    let mut input = io::BufReader::new(file.take(end));
    let mut line = Vec::new();
    let mut line_no = 0_u64;
    loop {
        line.clear();
        if read_bounded_line(&mut input, &mut line, MAX_LINE_LEN)? == 0 {
            break;
        }
        line_no += 1;
        let _ = reader.line(&line, log, line_no);
    }
    let _ = reader.finish();
    // Runs of the past are no one the kernel saw.
    let _ = reader.take_run_start();
    debug!(path = %log.display(), lines = line_no, "read the log's history");
    Ok(())
}

/// Anything the sensor follows.
#[derive(Debug)]
pub enum Source {
    Log(Box<FollowedLog>),
    Database(Box<WatchedDatabase>),
}

impl Source {
    /// Returns which manager and position the source has.
    #[must_use]
    pub fn tag(&self) -> SourceTag {
        match self {
            Self::Log(log) => log.tag,
            Self::Database(database) => database.tag(),
        }
    }

    /// Returns the file followed.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::Log(log) => log.path(),
            Self::Database(database) => database.path(),
        }
    }

    /// Returns the followed log, for a source that is one.
    #[must_use]
    pub fn log(&self) -> Option<&FollowedLog> {
        match self {
            Self::Log(log) => Some(log),
            Self::Database(_) => None,
        }
    }

    /// Returns rpm's root and database directory, for the rpm source.
    #[must_use]
    pub fn rpm_database(&self) -> Option<(&Path, &Path)> {
        match self {
            Self::Database(database) => match database.kind() {
                DatabaseKind::Rpm { root, dbpath } => Some((root, dbpath)),
                DatabaseKind::Apk { .. } => None,
            },
            Self::Log(_) => None,
        }
    }

    /// Returns whether reading resumed where the last run stopped, with nothing skipped.
    #[must_use]
    pub fn is_continuous(&self) -> bool {
        match self {
            Self::Log(log) => log.is_continuous,
            Self::Database(database) => database.is_resumed(),
        }
    }

    /// Returns whether delivery of the source's changes is held until a sink takes them.
    #[must_use]
    pub fn is_held(&self) -> bool {
        match self {
            Self::Log(log) => log.held.is_some(),
            Self::Database(database) => database.is_held(),
        }
    }

    /// Returns whether the source resumed from a checkpoint.
    #[must_use]
    pub fn is_resumed(&self) -> bool {
        match self {
            Self::Log(log) => log.saved.is_some(),
            Self::Database(database) => database.is_resumed(),
        }
    }

    /// Reads and hands on everything available.
    pub fn pump(&mut self, out: &mut dyn Delivery) {
        match self {
            Self::Log(log) => log.pump(out),
            Self::Database(database) => database.pump(out),
        }
    }

    /// Settles changes still waiting once the manager's run is over.
    pub fn finish_if_idle(&mut self, out: &mut dyn Delivery) {
        if let Self::Log(log) = self {
            log.finish_if_idle(out);
        }
    }

    /// Returns the counters, with over-long lines counted as malformed.
    #[must_use]
    pub fn stats(&self) -> InterpretStats {
        match self {
            Self::Log(log) => {
                let mut stats = log.reader.stats();
                stats.malformed += log.too_long;
                stats
            }
            Self::Database(database) => database.stats(),
        }
    }
}

/// Options for opening every source of a configuration.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub manager: Manager,
    /// The log; `None` for a manager followed only through its database (rpm).
    pub log: Option<PathBuf>,
    /// The database followed instead of a log that does not exist at start (apk), or always.
    pub database: Option<DatabaseKind>,
    pub run_end: RunEnd,
}

impl SourceSpec {
    /// Opens the source as the `index`-th of the pipeline.
    ///
    /// # Errors
    /// The log exists but cannot be opened.
    pub fn open(&self, index: usize, options: &FollowOptions) -> anyhow::Result<Source> {
        let tag = SourceTag {
            manager: self.manager,
            index,
        };
        let log_exists = self.log.as_ref().is_some_and(|log| log.exists());
        if let Some(database) = self.database.as_ref().filter(|_| !log_exists) {
            if database.path().exists() || self.log.is_none() {
                return Ok(Source::Database(Box::new(WatchedDatabase::open(
                    tag,
                    database.clone(),
                    options,
                ))));
            }
        }
        let log = self
            .log
            .as_ref()
            .with_context(|| format!("{} has no log to follow", self.manager))?;
        let format = LogFormat::of(self.manager)
            .with_context(|| format!("{} writes no log to follow", self.manager))?;
        Ok(Source::Log(Box::new(FollowedLog::open(
            tag,
            log,
            format,
            self.run_end.clone(),
            options,
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// Collects what a source hands on; reports it refused while `is_refusing`.
    #[derive(Default)]
    struct Collect {
        changes: Vec<(SourceTag, PackageChange)>,
        is_refusing: bool,
    }

    impl Delivery for Collect {
        fn before_lines(&mut self) {}

        fn observe_line(&mut self, _source: SourceTag, _line: &Line) {}

        fn before_checkpoint(&mut self, _source: SourceTag) {}

        fn run_started(&mut self, _source: SourceTag, _start: &RunStart) {}

        /// Like the dispatcher, keeps what it refuses for its own retries.
        fn deliver(
            &mut self,
            source: SourceTag,
            changes: Vec<PackageChange>,
            _origin: Option<Origin<'_>>,
        ) -> bool {
            let is_empty = changes.is_empty();
            self.changes
                .extend(changes.into_iter().map(|change| (source, change)));
            is_empty || !self.is_refusing
        }

        fn deliver_offline(&mut self, source: SourceTag, changes: Vec<PackageChange>) -> bool {
            self.deliver(source, changes, None)
        }

        fn is_released(&mut self) -> bool {
            !self.is_refusing
        }
    }

    fn append(path: &Path, text: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("append");
        file.write_all(text.as_bytes()).expect("write");
    }

    fn options(state: &Path) -> FollowOptions {
        FollowOptions {
            state_dir: state.to_path_buf(),
            tail: TailOptions::default(),
        }
    }

    fn summary(out: &Collect) -> Vec<String> {
        out.changes
            .iter()
            .map(|(tag, c)| format!("{} {} {}", tag.manager, c.category, c.package))
            .collect()
    }

    #[test]
    fn history_before_the_start_decides_later_lines_without_being_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("history");
        append(
            &log,
            "2022-12-16 12:56:23|install|unzip|6.00-41.1|x86_64|root@h|repo-oss||\n",
        );
        let spec = SourceSpec {
            manager: Manager::Zypper,
            log: Some(log.clone()),
            database: None,
            run_end: RunEnd::Quiet,
        };
        let mut source = spec.open(3, &options(dir.path())).expect("open");
        let mut out = Collect::default();
        source.pump(&mut out);
        assert!(out.changes.is_empty(), "history is not reported");

        append(
            &log,
            "2022-12-17 10:00:00|install|unzip|6.00-42.1|x86_64|root@h|repo-oss||\n",
        );
        source.pump(&mut out);
        assert_eq!(summary(&out), ["zypper package_upgrade unzip"]);
        assert_eq!(out.changes[0].0.index, 3);
        assert_eq!(out.changes[0].1.old_version.as_deref(), Some("6.00-41.1"));

        // A restart resumes from the checkpoint, state included.
        drop(source);
        append(
            &log,
            "2022-12-18 10:00:00|install|unzip|6.00-41.1|x86_64|root@h|repo-oss||\n",
        );
        let mut source = spec.open(3, &options(dir.path())).expect("reopen");
        assert!(source.is_resumed());
        source.pump(&mut out);
        assert_eq!(
            summary(&out),
            [
                "zypper package_upgrade unzip",
                "zypper package_downgrade unzip"
            ]
        );
    }

    #[test]
    fn a_held_delivery_keeps_the_line_until_a_sink_takes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("pacman.log");
        append(&log, "");
        let spec = SourceSpec {
            manager: Manager::Pacman,
            log: Some(log.clone()),
            database: None,
            run_end: RunEnd::Quiet,
        };
        let mut source = spec.open(0, &options(dir.path())).expect("open");
        append(
            &log,
            "[2021-01-01T17:29:35+0000] [ALPM] installed a (1-1)\n\
             [2021-01-01T17:29:36+0000] [ALPM] installed b (1-1)\n",
        );
        let mut out = Collect {
            is_refusing: true,
            ..Collect::default()
        };
        source.pump(&mut out);
        source.pump(&mut out);
        assert_eq!(summary(&out), ["pacman package_install a"], "held after it");
        out.is_refusing = false;
        source.pump(&mut out);
        assert_eq!(
            summary(&out),
            ["pacman package_install a", "pacman package_install b"]
        );
    }

    #[test]
    fn an_unpaired_dnf_upgrade_is_settled_once_the_run_is_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("var/log/dnf.rpm.log");
        std::fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
        append(&log, "");
        let spec = SourceSpec {
            manager: Manager::Dnf,
            log: Some(log.clone()),
            database: None,
            run_end: RunEnd::RpmLock(rpm_locks_for(&log)),
        };
        assert_eq!(
            rpm_locks_for(&log)[0],
            dir.path().join("var/lib/rpm/.rpm.lock")
        );
        let mut source = spec.open(1, &options(dir.path())).expect("open");
        append(
            &log,
            "2021-03-02T08:05:29Z SUBDEBUG Upgrade: tzdata-2021a-1.el8.noarch\n",
        );
        let mut out = Collect::default();
        source.pump(&mut out);
        assert!(out.changes.is_empty(), "waits for the old half");
        for _ in 0..FREE_POLLS_BEFORE_FINISH {
            source.finish_if_idle(&mut out);
        }
        assert_eq!(summary(&out), ["dnf package_upgrade tzdata"]);
        assert_eq!(out.changes[0].1.old_version, None);
    }

    #[test]
    fn roots_are_found_under_default_paths() {
        assert_eq!(
            root_of(
                Path::new("/srv/r/var/log/dnf.rpm.log"),
                "var/log/dnf.rpm.log"
            ),
            Some(PathBuf::from("/srv/r"))
        );
        assert_eq!(
            root_of(Path::new("/var/log/dnf.rpm.log"), "var/log/dnf.rpm.log"),
            Some(PathBuf::from("/"))
        );
        assert_eq!(
            root_of(Path::new("/srv/dnf.log"), "var/log/dnf.rpm.log"),
            None
        );
    }
}
