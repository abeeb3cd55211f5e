//! The running sensor: tail → parse → event → sinks, with a checkpoint after each step.
//!
//! In: the configuration and a shutdown signal. Out: events delivered to the sinks as dpkg
//! writes its log, and a checkpoint in the state directory. State: the tailer, the interpreter
//! (installs still in progress), the dispatcher, and the position last made durable.
//!
//! Wake-ups come from an inotify watch on the log's *directory* — a watch on the file itself
//! goes deaf after rename-and-create rotation — and from a slow safety-net timer. Every wake-up
//! reads to the end of the log, so notifications that coalesce lose nothing.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher};
use std::os::fd::OwnedFd;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::attribute::hold::{HoldOptions, HoldQueue};
use crate::attribute::ssh::{learn_since, SshCorrelator};
use crate::attribute::Attributor;
use crate::config::{Config, LogLevel};
use crate::event::Event;
use crate::parse::interpret::LogInterpreter;
use crate::parse::PackageChange;
use crate::rule::{RuleEngine, Verdict};
use crate::sink::dispatch::{DispatchOptions, Dispatcher, SinkStats};
use crate::sink::hook::{Hooks, OutcomeJournal};
use crate::sink::journald::JournaldSink;
use crate::sink::json::JsonSink;
use crate::sink::store::{CoverageWatch, StoreOptions, StoreSink};
use crate::sink::Sink;
use crate::source::checkpoint::{Checkpoint, CheckpointStore};
use crate::source::exec::{ExecTracer, LoadError, TracerConfig};
use crate::source::lock::{dpkg_lock_state, LockState};
use crate::source::offline::Reconciler;
use crate::source::ssh::reader::{LoginSource, ReaderOptions};
use crate::source::tail::{Line, Position, StartAt, TailNotice, TailOptions, Tailer};

/// Lines read per batch: bounds memory when starting from the beginning of a long log.
const BATCH_LINES: usize = 1024;

/// How many consecutive polls must find the dpkg database unlocked before installs still in
/// progress are judged: a script running `dpkg --unpack` then `dpkg --configure` releases the
/// lock for an instant between the two.
const FREE_POLLS_BEFORE_FINISH: u32 = 2;

/// What a run did, reported when it stops.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub lines: u64,
    pub malformed: u64,
    pub events: u64,
    pub sinks: Vec<SinkStats>,
}

/// Builds the sinks the configuration asks for.
fn build_sinks(config: &Config) -> Vec<Box<dyn Sink>> {
    let mut sinks: Vec<Box<dyn Sink>> = config
        .sinks
        .json
        .outputs
        .iter()
        .map(|target| Box::new(JsonSink::new(target)) as Box<dyn Sink>)
        .collect();

    let store = &config.sinks.store;
    if store.enabled {
        let options = StoreOptions {
            segment_bytes: store.segment_bytes,
            max_bytes: store.max_bytes,
        };
        sinks.push(Box::new(StoreSink::new(
            store_dir(&config.state_dir),
            options,
        )));
    }

    let journald = &config.sinks.journald;
    if journald.enabled {
        if journald.socket.exists() {
            sinks.push(Box::new(JournaldSink::new(journald.socket.clone())));
        } else {
            warn!(
                socket = %journald.socket.display(),
                "no journald socket; events go to the other sinks only"
            );
        }
    }
    sinks
}

/// Returns the event store's directory inside the state directory.
#[must_use]
pub fn store_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("events")
}

/// The pipeline's state between wake-ups.
struct Pipeline {
    tailer: Tailer,
    /// The kernel exec stream and what it says about the followed log; absent in log-only mode.
    kernel: Option<(ExecTracer, Attributor)>,
    /// The kernel's drop counter when last looked at.
    dropped: u64,
    interpreter: LogInterpreter,
    dispatcher: Dispatcher,
    store: CheckpointStore,
    host: String,
    admin_dir: PathBuf,
    /// Lines read but not yet handled, because delivery is held.
    queued: VecDeque<Line>,
    /// The position after the line whose events no sink has taken yet.
    held: Option<Position>,
    saved: Option<Checkpoint>,
    free_polls: u32,
    /// Whether the last read of the log failed, so the failure is reported once.
    read_failing: bool,
    /// What changed in dpkg's database while the sensor was down.
    offline: Reconciler,
    /// What the event store covers, when there is one.
    coverage: Option<CoverageWatch>,
    events: u64,
    too_long: u64,
    /// SSH logins for attribution and correlation; absent with `[ssh] source = "off"`.
    ssh: Option<SshCorrelator>,
    /// Events waiting for SSH logins still on their way.
    hold: HoldQueue,
    rules: RuleEngine,
    hooks: Option<Hooks>,
    suppressed: u64,
}

impl Pipeline {
    /// Reads and handles everything available; stops early while delivery is held.
    ///
    /// A read error (the log unreadable for a moment) is reported once and retried on the next
    /// wake-up; nothing already read is lost and the sensor keeps running.
    fn pump(&mut self) {
        loop {
            if !self.release_hold() {
                return;
            }
            let Some(line) = self.queued.pop_front() else {
                let (lines, notices) = match self.tailer.read_lines(BATCH_LINES) {
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
                if lines.is_empty() {
                    break;
                }
                // The writer's exec record reached the ring buffer before its first line did.
                self.drain_kernel();
                self.queued.extend(lines);
                continue;
            };

            self.offline.observe(&line.bytes);
            let changes = self
                .interpreter
                .line(&line.bytes, self.tailer.path(), line.line_no);
            if !self.deliver(changes) {
                self.held = Some(line.position);
                return;
            }
            self.free_polls = 0;
        }
        self.release_waiting();
        if self.held.is_none() {
            self.save_checkpoint(self.tailer.position());
        }
    }

    /// Sends changes to the sinks; returns whether every event was taken by some sink.
    fn deliver(&mut self, changes: Vec<PackageChange>) -> bool {
        for change in changes {
            let mut event = Event::from_change(&change, &self.host, "dpkg");
            if let Some((_, attributor)) = self.kernel.as_mut() {
                event.actor = attributor.actor_for_line(change.timestamp);
                if let (Some(actor), true) = (&event.actor, change.category.unpacks()) {
                    attributor.note_unpacked(actor, &change.package, change.arch.as_deref());
                }
            }
            self.hold.push(event, true);
        }
        let all_taken = self.release_held();
        if !all_taken {
            error!("no sink accepted an event; holding the log until one does");
        }
        all_taken
    }

    /// Judges and dispatches the held events that need not wait any longer; returns whether
    /// every one was taken by some sink.
    fn release_held(&mut self) -> bool {
        let mut all_taken = true;
        for mut event in self.hold.release(self.ssh.as_mut()) {
            if !self.judge(&mut event) {
                continue;
            }
            self.events += 1;
            all_taken &= self.dispatcher.dispatch(event);
        }
        all_taken
    }

    /// Releases held events when a login arrived or their time came, outside a read.
    fn release_waiting(&mut self) {
        if !self.release_held() && self.held.is_none() {
            error!("no sink accepted an event; holding the log until one does");
            self.held = self.tailer.position();
        }
    }

    /// Attributes the SSH session, runs the rules and hands the event to the hooks; returns
    /// whether the event is emitted.
    fn judge(&mut self, event: &mut Event) -> bool {
        if let Some(ssh) = self.ssh.as_ref() {
            ssh.attribute(event);
        }
        if self.rules.evaluate(event, self.ssh.as_ref()) == Verdict::Suppress {
            self.suppressed += 1;
            // The store does not get it either: questions must read its line from the log.
            if let Some(coverage) = self.coverage.as_mut() {
                coverage.interrupt();
            }
            debug!(package = %event.parsed_data.package, "event suppressed by a maintenance window");
            return false;
        }
        if let Some(hooks) = self.hooks.as_mut() {
            hooks.submit(event);
        }
        true
    }

    /// Retries a held delivery; returns whether reading may go on.
    fn release_hold(&mut self) -> bool {
        let Some(position) = self.held.clone() else {
            return true;
        };
        self.dispatcher.retry_due();
        if self.dispatcher.has_unaccepted() {
            return false;
        }
        info!("a sink accepted the held event; reading resumes");
        self.held = None;
        self.save_checkpoint(Some(position));
        true
    }

    /// Judges installs still in progress once no package manager holds the database.
    fn finish_runs_if_idle(&mut self) {
        if !self.interpreter.has_pending() || self.held.is_some() {
            return;
        }
        match dpkg_lock_state(&self.admin_dir) {
            Ok(LockState::Free) => self.free_polls += 1,
            Ok(LockState::Held { pid }) => {
                debug!(?pid, "dpkg database locked; installs still in progress");
                self.free_polls = 0;
                return;
            }
            Err(err) => {
                // Without the lock the end of a run is inferred from silence alone.
                debug!(error = %err, "cannot query the dpkg lock");
                self.free_polls += 1;
            }
        }
        if self.free_polls < FREE_POLLS_BEFORE_FINISH {
            return;
        }

        // The last lines of the run may have landed since the previous read.
        self.pump();
        if self.held.is_some() {
            return;
        }
        // Changes held for their logins are judged again from the log after a crash.
        if let Some(position) = self.tailer.position() {
            self.hold
                .note_position(position, self.interpreter.saved_state());
        }
        let changes = self.interpreter.finish();
        let position = self.tailer.position();
        if !self.deliver(changes) {
            self.held = position;
            return;
        }
        self.save_checkpoint(position);
    }

    /// Moves every waiting kernel record into the attributor.
    fn drain_kernel(&mut self) {
        let Some((tracer, attributor)) = self.kernel.as_mut() else {
            return;
        };
        let mut records = Vec::new();
        tracer.drain(&mut records);
        for record in records {
            attributor.record(record);
        }

        // A run that ended has told all its scripts did; report them now.
        for run in attributor.take_finished() {
            for scripts in &run.scripts {
                let event = Event::from_scripts(scripts, run.actor.clone(), run.ended, &self.host);
                self.hold.push(event, false);
            }
        }
    }

    /// Reports records the kernel could not hand over since the last look.
    fn check_kernel_drops(&mut self) {
        let Some((tracer, _)) = self.kernel.as_ref() else {
            return;
        };
        match tracer.dropped() {
            Ok(dropped) if dropped > self.dropped => {
                error!(
                    lost = dropped - self.dropped,
                    total = dropped,
                    "kernel ring buffer full; exec records lost, some actors may be null"
                );
                self.dropped = dropped;
            }
            Ok(_) => {}
            Err(err) => debug!(error = %err, "cannot read the kernel drop counter"),
        }
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

    fn save_checkpoint(&mut self, position: Option<Position>) {
        let Some(position) = position else { return };
        let transactions = self.interpreter.saved_state();
        self.hold
            .note_position(position.clone(), transactions.clone());
        // Events still held keep the checkpoint before their lines.
        let (position, transactions) = match self.hold.checkpoint_limit() {
            Some(limit) => (limit.position.clone(), limit.transactions.clone()),
            None => (position, transactions),
        };
        let mut checkpoint = Checkpoint::new(
            self.tailer.path().to_path_buf(),
            position.identity,
            position.fingerprint,
            position.offset,
        );
        checkpoint.transactions = transactions;
        if self.saved.as_ref() == Some(&checkpoint) {
            return;
        }
        // The snapshot must not be older than the position.
        if let Some(coverage) = self.coverage.as_mut() {
            coverage.observe(&self.dispatcher.stats());
        }
        if !self.dispatcher.has_unaccepted() {
            self.offline.persist();
        }
        match self.store.save(&checkpoint) {
            Ok(()) => self.saved = Some(checkpoint),
            // Events are already out; a stale checkpoint only risks repeats after a crash.
            Err(err) => warn!(error = %format!("{err:#}"), "failed to save checkpoint"),
        }
    }
}

/// Starts reading SSH logins from `source`, keeping them for the correlation `window`.
fn start_ssh(
    config: &Config,
    source: &LoginSource,
    window: Duration,
) -> anyhow::Result<SshCorrelator> {
    let options = ReaderOptions {
        poll_interval: Duration::from_millis(config.ssh.poll_interval_ms),
        max_line_bytes: config.tail.max_line_bytes,
        rotated_grace: Duration::from_secs(config.tail.rotated_grace_secs),
        learn_since: learn_since(&config.ssh),
    };
    SshCorrelator::start(
        &config.ssh,
        Some(source),
        config.rules.ip_whitelist.clone(),
        &config.state_dir,
        options,
        window + Duration::from_mins(1),
    )
}

/// Starts a directory watch that wakes `notify` whenever the log or a rotation of it changes.
fn watch_log_directory(
    log: &Path,
    wake: Arc<Notify>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let name = log
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    let dir = match log.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let relevant = match &result {
            // The directory of /var/log is busy; only the log and its rotations matter.
            Ok(event) => {
                event.paths.is_empty()
                    || event.paths.iter().any(|p| {
                        p.file_name().is_some_and(|n| {
                            n == name.as_os_str()
                                || n.to_string_lossy()
                                    .starts_with(&format!("{}.", name.to_string_lossy()))
                        })
                    })
            }
            Err(_) => true,
        };
        if relevant {
            wake.notify_one();
        }
    })
    .context("failed to create a file-system watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("failed to watch {}", dir.display()))?;
    Ok(watcher)
}

impl Pipeline {
    /// Sets up every stage from the configuration: checkpoint, tail, interpreter and sinks.
    fn start(config: &Config, host: String, tracer: Option<ExecTracer>) -> anyhow::Result<Self> {
        let log = config.dpkg.log.clone();
        std::fs::create_dir_all(&config.state_dir).with_context(|| {
            format!(
                "failed to create state directory {}",
                config.state_dir.display()
            )
        })?;

        let store = CheckpointStore::for_log(&config.state_dir, &log);
        let checkpoint = store.load().unwrap_or_else(|err| {
            warn!(error = %format!("{err:#}"), "checkpoint unusable; starting at the end of the log");
            None
        });

        let options = TailOptions {
            max_line_bytes: config.tail.max_line_bytes,
            rotated_grace: Duration::from_secs(config.tail.rotated_grace_secs),
            start_at: if config.from_start {
                StartAt::Beginning
            } else {
                StartAt::End
            },
        };
        let (tailer, notices) = Tailer::open(log.clone(), checkpoint.as_ref(), options)
            .with_context(|| format!("failed to open {}", log.display()))?;

        // The store holds every line's event since the last break in reading the log.
        let continuous =
            checkpoint.is_some() && (notices.is_empty() || tailer.is_draining_rotated());
        let coverage = CoverageWatch::for_config(config, continuous);

        let delivery = &config.delivery;
        let dispatcher = Dispatcher::new(
            build_sinks(config),
            DispatchOptions {
                backlog: delivery.backlog,
                retry_initial: Duration::from_millis(delivery.retry_initial_ms),
                retry_max: Duration::from_millis(delivery.retry_max_ms),
            },
        );
        let saved_transactions = checkpoint.as_ref().and_then(|c| c.transactions.as_ref());
        let kernel = tracer.map(|tracer| {
            (
                tracer,
                Attributor::new(&config.dpkg.log, &config.dpkg.admin_dir),
            )
        });
        let rules = RuleEngine::new(&config.rules);
        let source = config.ssh.resolve();
        let hold = HoldQueue::new(HoldOptions::for_source(
            &config.ssh,
            source.as_ref(),
            config.rules.correlation.enabled,
        ));
        let ssh = match source {
            Some(source) => Some(start_ssh(config, &source, rules.correlation_window())?),
            None => None,
        };
        let journal = OutcomeJournal {
            socket: config
                .sinks
                .journald
                .enabled
                .then(|| config.sinks.journald.socket.clone()),
            host: host.clone(),
        };
        let hooks = Hooks::start(&config.hooks, &journal).context("failed to start the hooks")?;
        let mut pipeline = Self {
            tailer,
            kernel,
            dropped: 0,
            interpreter: LogInterpreter::resume(saved_transactions),
            dispatcher,
            store,
            host,
            admin_dir: config.dpkg.admin_dir.clone(),
            queued: VecDeque::new(),
            held: None,
            saved: checkpoint,
            free_polls: 0,
            read_failing: false,
            offline: Reconciler::start(&config.state_dir, &config.dpkg.admin_dir, &log),
            coverage,
            events: 0,
            too_long: 0,
            ssh,
            hold,
            rules,
            hooks,
            suppressed: 0,
        };
        if let Some(position) = pipeline.tailer.position() {
            let transactions = pipeline.interpreter.saved_state();
            pipeline.hold.note_position(position, transactions);
        }
        pipeline.note(&notices);
        Ok(pipeline)
    }

    /// Compares dpkg's database with the snapshot of the last run, once per start, at a
    /// moment when no package manager holds the database and the log is read to its end.
    fn reconcile_offline(&mut self) {
        if !self.offline.is_due() || self.held.is_some() {
            return;
        }
        let is_free = |dir: &Path| !matches!(dpkg_lock_state(dir), Ok(LockState::Held { .. }));
        if !is_free(&self.admin_dir) {
            return;
        }
        self.pump();
        let read = (self.interpreter.stats().lines, self.too_long);
        let database = match crate::parse::status::read_database(&self.admin_dir) {
            Ok((database, _)) => database,
            Err(err) => {
                warn!(error = %format!("{:#}", anyhow::Error::new(err)), "cannot read the dpkg database; changes made while the sensor was down are not looked for");
                self.offline.skip();
                return;
            }
        };
        // A run that started meanwhile may have changed the database ahead of its log lines.
        self.pump();
        if read != (self.interpreter.stats().lines, self.too_long)
            || self.held.is_some()
            || !is_free(&self.admin_dir)
        {
            return;
        }
        if let Some(ssh) = self.ssh.as_mut() {
            ssh.drain();
        }
        for mut event in self.offline.reconcile(database, &self.host) {
            if !self.judge(&mut event) {
                continue;
            }
            self.events += 1;
            if !self.dispatcher.dispatch(event) {
                warn!("no sink accepted an offline change; it is retried with its sink");
            }
        }
        if !self.dispatcher.has_unaccepted() {
            self.offline.persist();
        }
    }

    /// Gives held events the time they may still wait for their logins, then judges them all.
    fn release_before_stop(&mut self) {
        while let Some(wake) = self.hold.next_wake() {
            if self.held.is_some() {
                break;
            }
            self.release_waiting();
            let pause = wake.saturating_duration_since(std::time::Instant::now());
            std::thread::sleep(pause.min(Duration::from_millis(20)));
        }
        if let Some(ssh) = self.ssh.as_mut() {
            ssh.drain();
        }
        for mut event in self.hold.release_all() {
            if self.judge(&mut event) {
                self.events += 1;
                self.dispatcher.dispatch(event);
            }
        }
        if self.held.is_none() && !self.dispatcher.has_unaccepted() {
            self.save_checkpoint(self.tailer.position());
        }
    }

    /// Delivers what is already written, closes the sinks and reports what the run did.
    fn stop(mut self) -> RunSummary {
        // Deliver what is already written before stopping, so a restart repeats nothing.
        self.pump();
        self.release_before_stop();
        if !self.dispatcher.has_unaccepted() {
            self.offline.persist();
        }
        if let Some(ssh) = self.ssh.as_mut() {
            ssh.close();
        }
        if let Some(hooks) = self.hooks.take() {
            hooks.close(Duration::from_secs(5));
        }
        let stats = self.interpreter.stats();
        let summary = RunSummary {
            lines: stats.lines,
            malformed: stats.malformed + self.too_long,
            events: self.events,
            sinks: self.dispatcher.close(),
        };
        if let Some(coverage) = self.coverage.as_mut() {
            coverage.finish(&summary.sinks);
        }
        for sink in &summary.sinks {
            if sink.lost > 0 {
                error!(sink = sink.name, lost = sink.lost, "events lost for a sink");
            }
            info!(
                sink = sink.name,
                delivered = sink.delivered,
                failures = sink.failures,
                retried = sink.retried,
                "sink summary"
            );
        }
        info!(
            lines = summary.lines,
            malformed = summary.malformed,
            events = summary.events,
            suppressed = self.suppressed,
            "sensor stopped"
        );
        summary
    }
}

/// Runs the sensor until `shutdown` completes.
///
/// # Errors
/// Fails before starting when the state directory or the log cannot be set up, and while
/// running only when the log cannot be read at all.
pub async fn run(
    config: &Config,
    host: String,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunSummary> {
    // The watch comes first so that nothing written while the tail opens goes unnoticed.
    let wake = Arc::new(Notify::new());
    let _watcher = match watch_log_directory(&config.dpkg.log, Arc::clone(&wake)) {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            warn!(error = %format!("{err:#}"), "no file-system watch; polling only");
            None
        }
    };
    let tracer = if config.ebpf.enabled {
        load_tracer(config.ebpf.log_level)
    } else {
        None
    };
    let mut kernel_drain = tokio::time::interval(TracerConfig::default().drain_interval);
    let mut pipeline = Pipeline::start(config, host, tracer)?;

    // A package manager's exec wakes this descriptor; its descendants' records do not, and
    // are collected by the drain timer and before every batch of lines.
    let ring = match pipeline.kernel.as_ref() {
        Some((tracer, _)) => {
            let fd = tracer
                .ring_fd()
                .context("failed to duplicate the ring buffer descriptor")?;
            // SAFETY: the AsyncFd owns this duplicate descriptor, which refers to the ring
            // buffer for as long as the AsyncFd lives.
            let ring = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(|err| anyhow::anyhow!("failed to poll the ring buffer: {err}"))?;
            Some(ring)
        }
        None => None,
    };
    info!(
        log = %config.dpkg.log.display(),
        state_dir = %config.state_dir.display(),
        resumed = pipeline.saved.is_some(),
        attribution = pipeline.kernel.is_some(),
        "sensor ready"
    );
    pipeline.pump();
    pipeline.reconcile_offline();

    let ssh_wake = pipeline.ssh.as_ref().map(SshCorrelator::wake);
    let mut poll = tokio::time::interval(config.tail.poll_interval());
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let retry = pipeline
            .dispatcher
            .next_retry()
            .map(tokio::time::Instant::from_std);
        let held = pipeline
            .hold
            .next_wake()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            () = &mut shutdown => break,
            () = wake.notified() => pipeline.pump(),
            _ = poll.tick() => {
                // Off the path of each event: a sync per event would cost its latency.
                pipeline.dispatcher.sync();
                pipeline.pump();
                pipeline.reconcile_offline();
                pipeline.finish_runs_if_idle();
                pipeline.check_kernel_drops();
                pipeline.release_waiting();
            }
            () = notified(ssh_wake.as_deref()) => pipeline.release_waiting(),
            () = sleep_until(held) => pipeline.release_waiting(),
            ready = ring_readable(ring.as_ref()), if ring.is_some() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                pipeline.drain_kernel();
                pipeline.release_waiting();
            }
            _ = kernel_drain.tick(), if pipeline.kernel.is_some() => {
                pipeline.drain_kernel();
                pipeline.release_waiting();
            }
            () = sleep_until(retry) => {
                pipeline.dispatcher.retry_due();
                pipeline.pump();
            }
        }
    }
    Ok(pipeline.stop())
}

/// Loads the kernel exec tracer, or explains once why events will have no actor.
fn load_tracer(log_level: LogLevel) -> Option<ExecTracer> {
    let config = TracerConfig {
        kernel_log_level: Some(log_level.to_tracing()),
        ..TracerConfig::default()
    };
    match ExecTracer::load(&config) {
        Ok(tracer) => {
            release_free_memory();
            Some(tracer)
        }
        Err(LoadError::NoKernelProgram) => {
            warn!("this build carries no kernel exec tracer; events have no actor");
            None
        }
        Err(err) => {
            let reason = format!("{:#}", anyhow::Error::new(err));
            warn!(error = %reason, "kernel exec tracer unavailable; events have no actor");
            None
        }
    }
}

/// Hands memory the allocator holds free back to the kernel.
///
/// Loading the tracer parses the kernel's whole BTF, tens of megabytes that are free again
/// once it is attached; an idle allocator would keep them resident for the sensor's lifetime.
fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called at any time; it only returns
    // free pages of mimalloc's heaps, and does nothing when mimalloc is not in use.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Waits until the ring buffer polls readable, or forever without one.
async fn ring_readable(
    ring: Option<&AsyncFd<OwnedFd>>,
) -> std::io::Result<AsyncFdReadyGuard<'_, OwnedFd>> {
    match ring {
        Some(ring) => ring.readable().await,
        None => std::future::pending().await,
    }
}

/// Waits for a notification, or forever without a notifier.
async fn notified(notify: Option<&Notify>) {
    match notify {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
