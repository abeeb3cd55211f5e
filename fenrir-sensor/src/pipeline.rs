//! The running sensor: tail → parse → event → sinks, with a checkpoint after each step.
//!
//! In: the configuration and a shutdown signal. Out: events delivered to the sinks as dpkg
//! and the other package managers write their logs, and a checkpoint per log in the state
//! directory. State: the sources (each log's tailer, reader and position last made durable),
//! the kernel tracer and the dispatcher.
//!
//! Wake-ups come from an inotify watch on each log's *directory* — a watch on the file itself
//! goes deaf after rename-and-create rotation — and from a slow safety-net timer. Every wake-up
//! reads every log to its end, so notifications that coalesce lose nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher};
use serde_json::Value;
use std::os::fd::OwnedFd;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::attribute::apt::AptRecord;
use crate::attribute::hold::{HoldOptions, HoldQueue};
use crate::attribute::ssh::{learn_since, SshCorrelator};
use crate::attribute::Attributor;
use crate::config::{Config, LogLevel};
use crate::event::Event;
use crate::integrity::Integrity;
use crate::parse::manager::{Manager, RunStart};
use crate::parse::PackageChange;
use crate::rule::{RuleEngine, Verdict};
use crate::service::{Notifier, WatchdogTimer};
use crate::sink::dispatch::{DispatchOptions, Dispatcher, SinkStats};
use crate::sink::hook::{Hooks, OutcomeJournal};
use crate::sink::journald::JournaldSink;
use crate::sink::json::JsonSink;
use crate::sink::store::{CoverageWatch, StoreOptions, StoreSink};
use crate::sink::Sink;
use crate::source::database::DatabaseKind;
use crate::source::exec::{ExecTracer, LoadError, TracerConfig};
use crate::source::followed::{
    rpm_locks_for, Delivery, FollowOptions, FollowedLog, RunEnd, Source, SourceSpec, SourceTag,
    FREE_POLLS_BEFORE_FINISH,
};
use crate::source::lock::{dpkg_lock_state, LockState};
use crate::source::offline::{Reconciler, OFFLINE};
use crate::source::origin::{event_id, Origin};
use crate::source::ssh::reader::{LoginSource, ReaderOptions};
use crate::source::tail::{Line, Position, StartAt, TailNotice, TailOptions, Tailer};

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
            let format = config.sinks.json.format_of(target);
            Box::new(JsonSink::new(target).with_format(format)) as Box<dyn Sink>
        })
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
            let sink = JournaldSink::new(journald.socket.clone()).with_format(journald.format);
            // Said at start, not at the first event, which may come days later.
            if let Err(err) = sink.probe() {
                warn!(
                    socket = %journald.socket.display(),
                    error = %err,
                    "journald is not accepting entries; its events wait in the backlog \
                     and are retried"
                );
            }
            sinks.push(Box::new(sink));
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
    /// dpkg's log first, then every other manager's.
    sources: Vec<Source>,
    /// The kernel exec stream and what it says about the followed log; absent in log-only mode.
    kernel: Option<(ExecTracer, Attributor)>,
    /// The kernel's drop counter when last looked at.
    dropped: u64,
    dispatcher: Dispatcher,
    host: String,
    /// dpkg's admin directory, whose lock tells when the offline comparison may run.
    admin_dir: PathBuf,
    /// What changed in dpkg's database while the sensor was down.
    offline: Reconciler,
    /// What the event store covers, when there is one.
    coverage: Option<CoverageWatch>,
    events: u64,
    /// `events` when free memory was last handed back to the kernel.
    events_at_release: u64,
    /// SSH logins for attribution and correlation; absent with `[ssh] source = "off"`.
    ssh: Option<SshCorrelator>,
    /// Events waiting for SSH logins still on their way.
    hold: HoldQueue,
    rules: RuleEngine,
    hooks: Option<Hooks>,
    suppressed: u64,
    /// Integrity checks: installed files, the log's own history, unlogged database changes.
    integrity: Integrity,
    /// apt's history log, for dpkg changes the kernel did not attribute.
    apt: AptRecord,
    /// Consecutive polls that found the dpkg database unlocked, for the integrity checks.
    quiet_polls: u32,
}

impl Pipeline {
    /// Reads and handles everything available in every source; a source whose delivery is
    /// held stops early and keeps its place.
    fn pump(&mut self) {
        let mut sources = std::mem::take(&mut self.sources);
        for source in &mut sources {
            source.pump(self);
        }
        self.sources = sources;
        // Maintainer-script summaries collected with the lines may be ready.
        self.release_waiting();
    }

    /// Hands the memory a burst of events left free back to the kernel: after every
    /// [`RELEASE_EVERY_EVENTS`] events, and on a poll (`on_poll`) after any.
    ///
    /// A burst (an upgrade of the whole system, a log read from its start) allocates while it
    /// lasts; an idle allocator would keep those pages resident until the next burst.
    fn release_memory_after_burst(&mut self, on_poll: bool) {
        let since = self.events - self.events_at_release;
        if since >= RELEASE_EVERY_EVENTS || (on_poll && since > 0) {
            let started = Instant::now();
            release_free_memory();
            self.events_at_release = self.events;
            debug!(
                events = since,
                took_us = started.elapsed().as_micros(),
                "free memory released"
            );
        }
    }

    /// Sends changes to the sinks; returns whether every event was taken by some sink.
    /// `offline` marks changes a database showed were made while the sensor was down.
    fn deliver(
        &mut self,
        source: SourceTag,
        changes: Vec<PackageChange>,
        origin: Option<Origin<'_>>,
        offline: bool,
    ) -> bool {
        for (index, change) in changes.into_iter().enumerate() {
            let mut event = Event::from_change(&change, &self.host, source.manager.as_str());
            event.id = origin.map(|origin| event_id(origin, &change.raw_line, index));
            if offline {
                event.observed = Some(OFFLINE.to_owned());
                event.description.push_str(" while the sensor was down");
            }
            if let Some((_, attributor)) = self.kernel.as_mut() {
                event.actor = attributor.actor_for_change(source, change.timestamp);
                let is_dpkg = source.manager == Manager::Dpkg;
                if let (Some(actor), true) = (&event.actor, is_dpkg && change.category.unpacks()) {
                    attributor.note_unpacked(actor, &change.package, change.arch.as_deref());
                }
            }
            if source.manager == Manager::Dpkg && event.actor.is_none() {
                event.actor =
                    self.apt
                        .actor_for(change.timestamp, &change.package, change.arch.as_deref());
            }
            if source.manager == Manager::Dpkg {
                self.integrity.change(&change, event.actor.as_ref());
            }
            // The rpm database also changes under dnf, yum and zypper, whose logs report it:
            // only a change an rpm run by hand made is rpm's.
            if source.manager == Manager::Rpm && event.actor.is_none() {
                debug!(package = %change.package, "rpm database change made by another manager");
                continue;
            }
            self.hold.push(event, Some(source.index));
        }
        let all_taken = self.release_held();
        if !all_taken {
            error!("no sink accepted an event; holding the log until one does");
        }
        all_taken
    }

    /// Judges and dispatches the held events that need not wait any longer; returns whether
    /// every one was taken by some sink. One no sink took keeps its source's checkpoint
    /// before its line until the sinks have taken it.
    fn release_held(&mut self) -> bool {
        let mut all_taken = true;
        for released in self.hold.release(self.ssh.as_mut()) {
            let mut event = released.event;
            if !self.judge(&mut event) {
                continue;
            }
            self.events += 1;
            if !self.dispatcher.dispatch(event) {
                all_taken = false;
                if let Some(pin) = released.pin {
                    self.hold.pin(pin);
                }
            }
        }
        all_taken
    }

    /// Releases held events when a login arrived or their time came, outside a read.
    fn release_waiting(&mut self) {
        if !self.release_held() {
            error!("no sink accepted an event; it is retried with its sink");
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

    /// Sends events of the integrity stage (not tied to a log line) to the sinks.
    fn emit(&mut self, events: Vec<Event>) {
        for mut event in events {
            if !self.judge(&mut event) {
                continue;
            }
            self.events += 1;
            if !self.dispatcher.dispatch(event) {
                warn!("no sink accepted an integrity event; it is retried with its sink");
            }
        }
    }

    /// Runs the integrity checks due on a poll, and those that wait for a quiet database: no
    /// package manager holds it for two polls and the log is read to its end.
    fn check_integrity(&mut self) {
        // dpkg's log is always the first source.
        if let Some(tailer) = self
            .sources
            .first()
            .and_then(Source::log)
            .map(FollowedLog::tailer)
        {
            let found = self.integrity.poll(tailer);
            self.emit(found);
        }
        let dpkg_held = self.sources.first().is_some_and(Source::is_held);
        // The offline comparison goes first: what the database holds at start is its to report.
        if !self.integrity.has_idle_work() || dpkg_held || self.offline.is_due() {
            self.quiet_polls = 0;
            return;
        }
        match dpkg_lock_state(&self.admin_dir) {
            Ok(LockState::Held { .. }) => {
                self.quiet_polls = 0;
                return;
            }
            Ok(LockState::Free) | Err(_) => self.quiet_polls += 1,
        }
        if self.quiet_polls < FREE_POLLS_BEFORE_FINISH {
            return;
        }
        self.pump();
        self.drain_kernel();
        if self.sources.first().is_some_and(Source::is_held) {
            return;
        }
        let since = self.integrity.checked_at();
        let runs = self
            .kernel
            .as_mut()
            .map(|(_, attributor)| attributor.runs_since(since));
        let found = self.integrity.idle(runs.as_deref());
        self.emit(found);
        if let Some(view) = self.integrity.database_view() {
            self.offline.take_in(view);
        }
        if !self.dispatcher.has_unaccepted() {
            self.offline.persist();
        }
    }

    /// Retries a held delivery; returns whether reading may go on.
    fn release_hold(&mut self) -> bool {
        self.dispatcher.retry_due();
        !self.dispatcher.has_unaccepted()
    }

    /// Settles changes still waiting (installs in progress) once no package manager holds
    /// their database.
    fn finish_runs_if_idle(&mut self) {
        let mut sources = std::mem::take(&mut self.sources);
        for source in &mut sources {
            source.finish_if_idle(self);
        }
        self.sources = sources;
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
                self.hold.push(event, None);
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
}

impl Delivery for Pipeline {
    fn before_lines(&mut self) {
        self.drain_kernel();
    }

    fn after_read(
        &mut self,
        source: SourceTag,
        lines: &mut Vec<Line>,
        notices: &[TailNotice],
        tailer: &Tailer,
    ) {
        if source.manager == Manager::Dpkg {
            let found = self.integrity.read(lines, notices, tailer);
            self.emit(found);
        }
    }

    fn observe_line(&mut self, source: SourceTag, line: &Line) {
        if source.manager != Manager::Dpkg {
            return;
        }
        // A `dpkg --root` run's status lines describe another database than the followed one.
        let other_database = self
            .kernel
            .as_mut()
            .is_some_and(|(_, attributor)| attributor.wrote_other_database(&line.bytes));
        if !other_database {
            self.integrity.line(line);
            self.offline.observe(&line.bytes);
        }
    }

    fn witness_state(&mut self, source: SourceTag, position: &Position) -> Option<Value> {
        if source.manager != Manager::Dpkg {
            return None;
        }
        self.integrity.witness_state(position)
    }

    fn before_checkpoint(&mut self, source: SourceTag) {
        if source.manager != Manager::Dpkg {
            return;
        }
        // The snapshot must not be older than the position.
        if let Some(coverage) = self.coverage.as_mut() {
            coverage.observe(&self.dispatcher.stats());
        }
        if !self.dispatcher.has_unaccepted() {
            self.offline.persist();
        }
    }

    fn run_started(&mut self, source: SourceTag, start: &RunStart) {
        if let Some((_, attributor)) = self.kernel.as_mut() {
            attributor.run_started(source, start);
        }
    }

    fn deliver(
        &mut self,
        source: SourceTag,
        changes: Vec<PackageChange>,
        origin: Option<Origin<'_>>,
    ) -> bool {
        Pipeline::deliver(self, source, changes, origin, false)
    }

    fn deliver_offline(&mut self, source: SourceTag, changes: Vec<PackageChange>) -> bool {
        Pipeline::deliver(self, source, changes, None, true)
    }

    fn is_released(&mut self) -> bool {
        self.release_hold()
    }

    fn note_position(
        &mut self,
        source: SourceTag,
        position: &Position,
        transactions: Option<&serde_json::Value>,
    ) {
        self.hold
            .note_position(source.index, position, transactions);
    }

    fn checkpoint_limit(
        &mut self,
        source: SourceTag,
    ) -> Option<(Position, Option<serde_json::Value>)> {
        if !self.dispatcher.has_unaccepted() {
            self.hold.unpin_all();
        }
        self.hold
            .checkpoint_limit(source.index)
            .map(|limit| (limit.position.clone(), limit.transactions.clone()))
    }

    fn is_settled(&mut self, source: SourceTag) -> bool {
        self.hold.is_settled(source.index)
    }
}

/// Returns every source the configuration asks for: dpkg's log first, then each other
/// manager's. rpm's database is only followed with the kernel tracer, which alone tells a
/// change rpm made by hand from one dnf, yum or zypper made and logged.
fn source_specs(config: &Config, has_tracer: bool) -> Vec<SourceSpec> {
    let mut specs = vec![SourceSpec {
        manager: Manager::Dpkg,
        log: Some(config.dpkg.log.clone()),
        database: None,
        run_end: RunEnd::DpkgLock(config.dpkg.admin_dir.clone()),
    }];
    for manager in Manager::OTHERS {
        let Some(log) = config.managers.log_of(manager) else {
            continue;
        };
        let run_end = match manager {
            Manager::Dnf => RunEnd::RpmLock(rpm_locks_for(&log)),
            _ => RunEnd::Quiet,
        };
        let database = (manager == Manager::Apk).then(|| DatabaseKind::Apk {
            file: config.managers.apk_database(),
        });
        specs.push(SourceSpec {
            manager,
            log: Some(log),
            database,
            run_end,
        });
    }
    let rpm = &config.managers.rpm;
    let database = DatabaseKind::Rpm {
        root: rpm.root.clone(),
        dbpath: rpm.dbpath.clone(),
    };
    if rpm.enabled && has_tracer && database.path().is_dir() {
        specs.push(SourceSpec {
            manager: Manager::Rpm,
            log: None,
            database: Some(database),
            run_end: RunEnd::Quiet,
        });
    }
    specs
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

/// Starts one directory watch that wakes `notify` whenever a followed file or a rotation of
/// it changes. Directories that do not exist are left to the poll.
fn watch_log_directories(
    files: &[PathBuf],
    wake: Arc<Notify>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let mut names: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        names.entry(dir).or_default().push(name);
    }
    let wanted: Vec<String> = names.values().flatten().cloned().collect();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let relevant = match &result {
            // The directory of /var/log is busy; only the logs and their rotations matter.
            Ok(event) => {
                event.paths.is_empty()
                    || event.paths.iter().any(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            wanted
                                .iter()
                                .any(|name| n == *name || n.starts_with(&format!("{name}.")))
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
    for dir in names.keys() {
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {}
            Err(err) if !dir.exists() => {
                debug!(dir = %dir.display(), error = %err, "no such directory to watch; polling it");
            }
            Err(err) => {
                return Err(err).with_context(|| format!("failed to watch {}", dir.display()))
            }
        }
    }
    Ok(watcher)
}

impl Pipeline {
    /// Sets up every stage from the configuration: sources (tail, checkpoint, reader), the
    /// kernel attribution and the sinks.
    fn start(config: &Config, host: String, tracer: Option<ExecTracer>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.state_dir).with_context(|| {
            format!(
                "failed to create state directory {}",
                config.state_dir.display()
            )
        })?;

        let options = FollowOptions {
            state_dir: config.state_dir.clone(),
            tail: TailOptions {
                max_line_bytes: config.tail.max_line_bytes,
                rotated_grace: Duration::from_secs(config.tail.rotated_grace_secs),
                start_at: if config.from_start {
                    StartAt::Beginning
                } else {
                    StartAt::End
                },
            },
        };
        let mut sources = Vec::new();
        for spec in source_specs(config, tracer.is_some()) {
            sources.push(spec.open(sources.len(), &options)?);
        }

        // The store holds every line's event since the last break in reading dpkg's log.
        let continuous = sources.first().is_some_and(Source::is_continuous);
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
        let kernel = tracer.map(|tracer| {
            let mut attributor = Attributor::new(&config.dpkg.log, &config.dpkg.admin_dir);
            for source in &sources {
                attributor.follow(source.tag(), source.path(), &config.managers.rpm.dbpath);
            }
            (tracer, attributor)
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
        let dpkg = sources.first().and_then(Source::log);
        let (integrity, found) = match dpkg {
            Some(log) => Integrity::start(config, log.tailer(), log.checkpoint(), &host),
            None => anyhow::bail!("dpkg's log is not followed"),
        };
        let mut pipeline = Self {
            sources,
            kernel,
            dropped: 0,
            dispatcher,
            host,
            admin_dir: config.dpkg.admin_dir.clone(),
            offline: Reconciler::start(&config.state_dir, &config.dpkg.admin_dir, &config.dpkg.log),
            coverage,
            events: 0,
            events_at_release: 0,
            ssh,
            hold,
            rules,
            hooks,
            suppressed: 0,
            integrity,
            apt: AptRecord::beside(&config.dpkg.log),
            quiet_polls: 0,
        };
        pipeline.emit(found);
        Ok(pipeline)
    }

    /// Compares dpkg's database with the snapshot of the last run, once per start, at a
    /// moment when no package manager holds the database and the log is read to its end.
    fn reconcile_offline(&mut self) {
        let dpkg_held = |pipeline: &Self| pipeline.sources.first().is_some_and(Source::is_held);
        if !self.offline.is_due() || dpkg_held(self) {
            return;
        }
        let is_free = |dir: &Path| !matches!(dpkg_lock_state(dir), Ok(LockState::Held { .. }));
        if !is_free(&self.admin_dir) {
            return;
        }
        let dpkg_read = |pipeline: &Self| {
            let stats = pipeline
                .sources
                .first()
                .map(Source::stats)
                .unwrap_or_default();
            (stats.lines, stats.malformed)
        };
        self.pump();
        let read = dpkg_read(self);
        // The database witness's reading at start, moved by the lines written since, is the
        // line between the two: what it saw is offline, what it will see is live.
        self.integrity.take_database_baseline();
        let database = match self.integrity.database_view() {
            Some(view) => Ok(view.clone()),
            None => crate::parse::status::read_database(&self.admin_dir).map(|(set, _)| set),
        };
        let database = match database {
            Ok(database) => database,
            Err(err) => {
                warn!(error = %format!("{:#}", anyhow::Error::new(err)), "cannot read the dpkg database; changes made while the sensor was down are not looked for");
                self.offline.skip();
                return;
            }
        };
        // A run that started meanwhile may have changed the database ahead of its log lines.
        self.pump();
        if read != dpkg_read(self) || dpkg_held(self) || !is_free(&self.admin_dir) {
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

    /// Gives held events the time they may still wait for their logins, then lets everything
    /// go and reads once more, so that every checkpoint moves past what was delivered.
    fn release_before_stop(&mut self) {
        while let Some(wake) = self.hold.next_wake() {
            self.release_waiting();
            let pause = wake.saturating_duration_since(std::time::Instant::now());
            std::thread::sleep(pause.min(Duration::from_millis(20)));
        }
        self.hold.close();
        self.pump();
    }

    /// Delivers what is already written, closes the sinks and reports what the run did.
    fn stop(mut self) -> RunSummary {
        // Deliver what is already written before stopping, so a restart repeats nothing.
        self.pump();
        self.release_before_stop();
        let found = self.integrity.close();
        self.emit(found);
        if !self.dispatcher.has_unaccepted() {
            self.offline.persist();
        }
        if let Some(ssh) = self.ssh.as_mut() {
            ssh.close();
        }
        if let Some(hooks) = self.hooks.take() {
            hooks.close(Duration::from_secs(5));
        }
        let (lines, malformed) = self.sources.iter().fold((0, 0), |(lines, malformed), s| {
            let stats = s.stats();
            (lines + stats.lines, malformed + stats.malformed)
        });
        let summary = RunSummary {
            lines,
            malformed,
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

/// Registers the kernel's ring buffer with the runtime; `None` in log-only mode.
///
/// A package manager's exec wakes this descriptor; its descendants' records do not, and are
/// collected by the drain timer and before every batch of lines.
fn ring_of(pipeline: &Pipeline) -> anyhow::Result<Option<AsyncFd<OwnedFd>>> {
    let Some((tracer, _)) = pipeline.kernel.as_ref() else {
        return Ok(None);
    };
    let fd = tracer
        .ring_fd()
        .context("failed to duplicate the ring buffer descriptor")?;
    // SAFETY: the AsyncFd owns this duplicate descriptor, which refers to the ring buffer for
    // as long as the AsyncFd lives.
    let ring = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("failed to poll the ring buffer: {err}"))?;
    Ok(Some(ring))
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
    let mut files: Vec<PathBuf> = Vec::new();
    for spec in source_specs(config, config.ebpf.enabled) {
        files.extend(spec.database.iter().flat_map(DatabaseKind::watched_files));
        files.extend(spec.log);
    }
    let _watcher = match watch_log_directories(&files, Arc::clone(&wake)) {
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
    let verified = pipeline.integrity.ready();

    let ring = ring_of(&pipeline)?;
    for source in &pipeline.sources {
        info!(
            manager = %source.tag().manager,
            path = %source.path().display(),
            present = source.path().exists(),
            "following"
        );
    }
    info!(
        log = %config.dpkg.log.display(),
        state_dir = %config.state_dir.display(),
        resumed = pipeline.sources.iter().any(Source::is_resumed),
        attribution = pipeline.kernel.is_some(),
        "sensor ready"
    );
    let notifier = Notifier::from_environment();
    notifier.ready(&format!("following {}", config.dpkg.log.display()));
    let mut watchdog = WatchdogTimer::for_notifier(&notifier);
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
            () = watchdog.tick() => notifier.watchdog(),
            () = wake.notified() => {
                pipeline.pump();
                pipeline.release_memory_after_burst(false);
            }
            _ = poll.tick() => {
                // Off the path of each event: a sync per event would cost its latency.
                pipeline.dispatcher.sync();
                pipeline.pump();
                pipeline.reconcile_offline();
                pipeline.finish_runs_if_idle();
                pipeline.check_integrity();
                pipeline.check_kernel_drops();
                pipeline.release_waiting();
                pipeline.release_memory_after_burst(true);
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
            () = verified.notified() => {
                let found = pipeline.integrity.take_verified();
                pipeline.emit(found);
            }
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

/// Events between two calls of [`release_free_memory`] while a burst lasts. A call took
/// 0.2–0.6 ms after a burst of 10,000 events, which themselves take about a second.
const RELEASE_EVERY_EVENTS: u64 = 1024;

/// Hands memory the allocator holds free back to the kernel.
///
/// mimalloc returns free pages lazily, from within later allocations; a sensor idle after a
/// peak would keep them resident until its next one. The peaks: loading the tracer, which
/// parses the kernel's whole BTF (tens of megabytes, free again once it is attached), and
/// bursts of events. Only the calling thread's heap is collected: the pipeline's.
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
