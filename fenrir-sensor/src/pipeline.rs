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

use crate::attribute::ssh::{learn_since, SshCorrelator};
use crate::attribute::Attributor;
use crate::config::{Config, LogLevel};
use crate::event::Event;
use crate::parse::interpret::LogInterpreter;
use crate::parse::PackageChange;
use crate::rule::{RuleEngine, Verdict};
use crate::service::{Notifier, WatchdogTimer};
use crate::sink::dispatch::{DispatchOptions, Dispatcher, SinkStats};
use crate::sink::hook::{Hooks, OutcomeJournal};
use crate::sink::journald::JournaldSink;
use crate::sink::json::JsonSink;
use crate::sink::Sink;
use crate::source::checkpoint::{Checkpoint, CheckpointStore};
use crate::source::exec::{ExecTracer, LoadError, TracerConfig};
use crate::source::lock::{dpkg_lock_state, LockState};
use crate::source::origin::{event_id, Origin};
use crate::source::ssh::reader::ReaderOptions;
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
        .map(|target| {
            Box::new(JsonSink::new(target).with_format(config.sinks.json.format)) as Box<dyn Sink>
        })
        .collect();

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
    events: u64,
    too_long: u64,
    /// SSH logins for attribution and correlation; absent with `[ssh] source = "off"`.
    ssh: Option<SshCorrelator>,
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
                // A checkpoint per batch bounds what a crash can make the sinks see twice.
                self.save_checkpoint(self.tailer.position());
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

            let changes = self
                .interpreter
                .line(&line.bytes, self.tailer.path(), line.line_no);
            if !self.deliver(changes, Origin::Line(&line.position)) {
                self.held = Some(line.position);
                return;
            }
            self.free_polls = 0;
        }
        self.save_checkpoint(self.tailer.position());
    }

    /// Sends changes to the sinks; returns whether every event was taken by some sink.
    fn deliver(&mut self, changes: Vec<PackageChange>, origin: Origin<'_>) -> bool {
        let mut all_taken = true;
        for (index, change) in changes.into_iter().enumerate() {
            let mut event = Event::from_change(&change, &self.host, "dpkg");
            event.id = Some(event_id(origin, &change.raw_line, index));
            if let Some((_, attributor)) = self.kernel.as_mut() {
                event.actor = attributor.actor_for_line(change.timestamp);
                if let (Some(actor), true) = (&event.actor, change.category.unpacks()) {
                    attributor.note_unpacked(actor, &change.package, change.arch.as_deref());
                }
            }
            if !self.judge(&mut event) {
                continue;
            }
            self.events += 1;
            if !self.dispatcher.dispatch(event) {
                all_taken = false;
            }
        }
        if !all_taken {
            error!("no sink accepted an event; holding the log until one does");
        }
        all_taken
    }

    /// Attributes the SSH session, runs the rules and hands the event to the hooks; returns
    /// whether the event is emitted.
    fn judge(&mut self, event: &mut Event) -> bool {
        if let Some(ssh) = self.ssh.as_mut() {
            ssh.drain();
            ssh.attribute(event);
        }
        if self.rules.evaluate(event, self.ssh.as_ref()) == Verdict::Suppress {
            self.suppressed += 1;
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
        let changes = self.interpreter.finish();
        let position = self.tailer.position();
        let file = position.as_ref().map(|p| p.identity);
        if !self.deliver(changes, Origin::RunEnd(file)) {
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
                let mut event =
                    Event::from_scripts(scripts, run.actor.clone(), run.ended, &self.host);
                if !self.judge(&mut event) {
                    continue;
                }
                self.events += 1;
                if !self.dispatcher.dispatch(event) {
                    warn!(
                        "no sink accepted a maintainer-script event; it is retried with its sink"
                    );
                }
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
        let mut checkpoint = Checkpoint::new(
            self.tailer.path().to_path_buf(),
            position.identity,
            position.fingerprint,
            position.offset,
        );
        checkpoint.transactions = self.interpreter.saved_state();
        if self.saved.as_ref() == Some(&checkpoint) {
            return;
        }
        match self.store.save(&checkpoint) {
            Ok(()) => self.saved = Some(checkpoint),
            // Events are already out; a stale checkpoint only risks repeats after a crash.
            Err(err) => warn!(error = %format!("{err:#}"), "failed to save checkpoint"),
        }
    }
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
        let ssh = match config.ssh.resolve() {
            Some(source) => {
                let options = ReaderOptions {
                    poll_interval: Duration::from_millis(config.ssh.poll_interval_ms),
                    max_line_bytes: config.tail.max_line_bytes,
                    rotated_grace: Duration::from_secs(config.tail.rotated_grace_secs),
                    learn_since: learn_since(&config.ssh),
                };
                Some(SshCorrelator::start(
                    &config.ssh,
                    Some(&source),
                    config.rules.ip_whitelist.clone(),
                    &config.state_dir,
                    options,
                    rules.correlation_window() + Duration::from_mins(1),
                )?)
            }
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
            events: 0,
            too_long: 0,
            ssh,
            rules,
            hooks,
            suppressed: 0,
        };
        pipeline.note(&notices);
        Ok(pipeline)
    }

    /// Delivers what is already written, closes the sinks and reports what the run did.
    fn stop(mut self) -> RunSummary {
        // Deliver what is already written before stopping, so a restart repeats nothing.
        self.pump();
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
    let notifier = Notifier::from_environment();
    notifier.ready(&format!("following {}", config.dpkg.log.display()));
    let mut watchdog = WatchdogTimer::for_notifier(&notifier);
    pipeline.pump();

    let mut poll = tokio::time::interval(config.tail.poll_interval());
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let retry = pipeline
            .dispatcher
            .next_retry()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            () = &mut shutdown => break,
            () = watchdog.tick() => notifier.watchdog(),
            () = wake.notified() => pipeline.pump(),
            _ = poll.tick() => {
                pipeline.pump();
                pipeline.finish_runs_if_idle();
                pipeline.check_kernel_drops();
                if let Some(ssh) = pipeline.ssh.as_mut() {
                    ssh.drain();
                }
            }
            ready = ring_readable(ring.as_ref()), if ring.is_some() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                pipeline.drain_kernel();
            }
            _ = kernel_drain.tick(), if pipeline.kernel.is_some() => pipeline.drain_kernel(),
            () = sleep_until(retry) => {
                pipeline.dispatcher.retry_due();
                pipeline.pump();
            }
        }
    }
    notifier.stopping();
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

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
