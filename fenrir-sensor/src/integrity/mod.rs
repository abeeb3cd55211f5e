//! Integrity and tamper evidence: Fenrir's three witnesses — the log, the kernel and dpkg's
//! database — compared, and the package files checked against what was installed.
//!
//! In: what the pipeline reads (log lines, tail notices, package changes with their actor),
//! the kernel's record of dpkg runs, and quiet moments when no package manager holds the
//! database. Out: events of the integrity categories — `package_integrity_mismatch`,
//! `package_conffile_changed`, `log_tamper`, `package_change_unlogged` — each with an
//! `evidence` object. State: the packages waiting for their dpkg run to end, the log witness
//! ([`log`]), the database witness ([`database`]) and the hashing thread ([`worker`]), which
//! appends to Fenrir's own record store ([`store`]).
//!
//! [`sums`] reads dpkg's md5sums and conffile hashes, [`check`] hashes a package's files and
//! judges them, [`cli`] is `fenrir-sensor verify`.

pub mod check;
pub mod cli;
pub mod database;
pub mod log;
pub mod store;
pub mod sums;
pub mod worker;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{debug, error, warn};

use crate::config::Config;
use crate::event::{escape_control, Category, Event, IntegritySubject};
use crate::parse::dpkg::PackageRef;
use crate::parse::status::InstalledSet;
use crate::parse::PackageChange;
use crate::source::checkpoint::{Checkpoint, FileIdentity};
use crate::source::lock::{dpkg_lock_state, LockState};
use crate::source::tail::{Line, Position, TailNotice, Tailer};
use check::{FileKind, Verification};
use database::{DatabaseWitness, Unlogged};
use log::{LogWitness, Tamper, WitnessOptions, WitnessState};
use store::Head;
use worker::{Job, Outcome, Verifier, VerifierOptions};

/// The `[integrity]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Check each installed, upgraded or reinstalled package's files once its run ends.
    pub verify: bool,
    /// Packages waiting to be hashed at most; beyond, a package is not checked (counted).
    pub queue: usize,
    /// Files listed in one event at most; the rest are counted.
    pub max_listed: usize,
    /// Notice a log shortened or rewritten without a rotation.
    pub log_tamper: bool,
    /// How long a rotation may take to put the old content beside the log.
    pub rotation_settle_secs: u64,
    /// How often the whole consumed part of the log is re-hashed while running.
    pub full_check_secs: u64,
    /// Notice changes of dpkg's database that never reached the log.
    pub unlogged: bool,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        Self {
            verify: true,
            queue: 4096,
            max_listed: 32,
            log_tamper: true,
            rotation_settle_secs: 10,
            full_check_secs: 600,
            unlogged: true,
        }
    }
}

impl IntegrityConfig {
    /// Checks the values serde cannot.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue == 0 {
            return Err("key `integrity.queue`: must be greater than 0".into());
        }
        if self.max_listed == 0 {
            return Err("key `integrity.max_listed`: must be greater than 0".into());
        }
        if self.full_check_secs == 0 {
            return Err("key `integrity.full_check_secs`: must be greater than 0".into());
        }
        Ok(())
    }
}

/// Returns the root dpkg installs into: `[dpkg] root`, else the admin directory's root when it
/// ends in `var/lib/dpkg` (as `dpkg --root` lays it out), else `/`.
#[must_use]
pub fn dpkg_root(configured: Option<&Path>, admin_dir: &Path) -> PathBuf {
    if let Some(root) = configured {
        return root.to_path_buf();
    }
    let suffix = Path::new("var/lib/dpkg");
    admin_dir
        .strip_prefix("/")
        .ok()
        .filter(|relative| relative.ends_with(suffix))
        .and_then(|_| admin_dir.ancestors().nth(3))
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// A dpkg run the kernel saw on the followed database.
#[derive(Debug, Clone)]
pub struct RunSeen {
    /// The actor, as events carry it.
    pub actor: Value,
    /// The log the run wrote (`--log`, or dpkg's default).
    pub log: PathBuf,
    /// Whether that log is the one the sensor follows.
    pub writes_followed_log: bool,
    pub ended: Option<SystemTime>,
}

/// The integrity stage of the running sensor.
#[derive(Debug)]
pub struct Integrity {
    host: String,
    admin_dir: PathBuf,
    max_listed: usize,
    queue: usize,
    verifier: Option<Verifier>,
    /// Packages installed since the database was last quiet, waiting for their run to end.
    pending: Vec<Job>,
    witness: Option<LogWitness>,
    database: Option<DatabaseWitness>,
    /// How far each followed file was written when the database was read at start: the
    /// lines up to there are in that reading already.
    written_at_baseline: Vec<(FileIdentity, u64)>,
    /// When the database was last compared, for the kernel's runs since.
    last_check: SystemTime,
    ready: Arc<tokio::sync::Notify>,
}

impl Integrity {
    /// Starts the stage for a pipeline that follows `tailer`, resumed from `checkpoint`;
    /// returns it with the tamper found at start.
    pub fn start(
        config: &Config,
        tailer: &Tailer,
        checkpoint: Option<&Checkpoint>,
        host: &str,
    ) -> (Self, Vec<Event>) {
        let settings = &config.integrity;
        let admin_dir = config.dpkg.admin_dir.clone();
        let ready = Arc::new(tokio::sync::Notify::new());
        let verifier = if settings.verify {
            let options = VerifierOptions {
                root: dpkg_root(config.dpkg.root.as_deref(), &admin_dir),
                admin_dir: admin_dir.clone(),
                state_dir: config.state_dir.clone(),
                queue: settings.queue,
            };
            match Verifier::start(options, Arc::clone(&ready)) {
                Ok(verifier) => Some(verifier),
                Err(err) => {
                    error!(error = %err, "cannot start the verification thread; files are not checked");
                    None
                }
            }
        } else {
            None
        };

        let mut events = Vec::new();
        let witness = settings.log_tamper.then(|| {
            let saved: Option<WitnessState> = checkpoint
                .and_then(|c| c.witness.clone())
                .and_then(|value| serde_json::from_value(value).ok());
            let options = WitnessOptions {
                settle: Duration::from_secs(settings.rotation_settle_secs),
                full_check: Duration::from_secs(settings.full_check_secs),
            };
            let (witness, found) = LogWitness::start(&config.dpkg.log, tailer, saved, options);
            events.extend(found.iter().map(|t| tamper_event(t, host)));
            witness
        });
        let mut written_at_baseline = Vec::new();
        let database = settings.unlogged.then(|| {
            let mut database = DatabaseWitness::start(&admin_dir);
            // The baseline is the database as the sensor starts, so a change made right after
            // the start is already compared with it; a database in use waits for a quiet poll.
            if matches!(dpkg_lock_state(&admin_dir), Ok(LockState::Free)) {
                // Sizes first: a line written after them is applied, harmlessly, twice.
                let written: Vec<(FileIdentity, u64)> = tailer
                    .followed()
                    .iter()
                    .filter_map(|f| Some((f.position.identity, f.file.metadata().ok()?.len())))
                    .collect();
                match database.check(false) {
                    Ok(_) => written_at_baseline = written,
                    Err(err) => {
                        debug!(error = %format!("{:#}", anyhow::Error::new(err)), "cannot read the dpkg database yet");
                    }
                }
            }
            database
        });
        let stage = Self {
            host: host.to_owned(),
            admin_dir,
            max_listed: settings.max_listed,
            queue: settings.queue,
            verifier,
            pending: Vec::new(),
            witness,
            database,
            written_at_baseline,
            last_check: SystemTime::now(),
            ready,
        };
        (stage, events)
    }

    /// Returns the notifier woken when verification outcomes are ready.
    #[must_use]
    pub fn ready(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.ready)
    }

    /// Takes one batch the tailer read: its notices first, then its lines. Lines delivered
    /// before the log was tampered with, which the tailer reads again, are taken out of
    /// `lines`.
    pub fn read(
        &mut self,
        lines: &mut Vec<Line>,
        notices: &[TailNotice],
        tailer: &Tailer,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        // What a shortened file holds at an offset below its old size was written later.
        if notices.contains(&TailNotice::Truncated) {
            self.written_at_baseline.clear();
        }
        if let Some(witness) = self.witness.as_mut() {
            if notices
                .iter()
                .any(|n| matches!(n, TailNotice::Rotated | TailNotice::Truncated))
            {
                let found = witness.notice(tailer);
                events.extend(found.iter().map(|t| tamper_event(t, &self.host)));
            }
            witness.drop_delivered(lines, tailer);
            witness.observe(lines, tailer);
        }
        events
    }

    /// Takes one line as it is handled, in order; the pipeline leaves out the lines the kernel
    /// saw a `dpkg --root` or `--admindir` run write, which describe another database.
    ///
    /// TODO: without the kernel tracer such a run's status lines are taken as the followed
    /// database's, so the next check reports its packages as changed without a log line.
    pub fn line(&mut self, line: &Line) {
        let Some(database) = self.database.as_mut() else {
            return;
        };
        // A line the log already held when the database was read at start is in that
        // reading: applying it again would move the view by lines of another time (or, for a
        // `dpkg --root` run, of another database).
        let position = &line.position;
        if let Some(index) = self
            .written_at_baseline
            .iter()
            .position(|(identity, _)| *identity == position.identity)
        {
            if position.offset <= self.written_at_baseline[index].1 {
                return;
            }
            self.written_at_baseline.swap_remove(index);
        }
        database.observe(&line.bytes);
    }

    /// Reads dpkg's database as the database witness's baseline when it has none yet; call at
    /// a quiet moment, with the log read to its end.
    pub fn take_database_baseline(&mut self) {
        let Some(database) = self.database.as_mut() else {
            return;
        };
        if database.view().is_some() {
            return;
        }
        match database.check(false) {
            Ok(_) => self.last_check = SystemTime::now(),
            Err(err) => {
                debug!(error = %format!("{:#}", anyhow::Error::new(err)), "cannot read the dpkg database yet");
            }
        }
    }

    /// Returns dpkg's database as the database witness last compared it, moved on by every
    /// `status` line since; `None` without the witness or before its first reading.
    #[must_use]
    pub fn database_view(&self) -> Option<&InstalledSet> {
        self.database.as_ref().and_then(DatabaseWitness::view)
    }

    /// Notes a change read from the log; installs are checked once their run ends.
    pub fn change(&mut self, change: &PackageChange, actor: Option<&Value>) {
        if self.verifier.is_none() || !change.category.unpacks() {
            return;
        }
        let package = PackageRef {
            name: change.package.clone(),
            arch: change.arch.clone(),
        };
        self.queue_check(package, change.new_version.clone(), actor.cloned());
    }

    fn queue_check(&mut self, package: PackageRef, version: Option<String>, actor: Option<Value>) {
        self.pending.retain(|job| job.package != package);
        if self.pending.len() >= self.queue {
            warn!(package = %escape_control(&package.name), "too many packages waiting for their run to end; package not checked");
            return;
        }
        self.pending.push(Job {
            package,
            version,
            actor,
        });
    }

    /// Returns whether a quiet moment of the database has work to do.
    #[must_use]
    pub fn has_idle_work(&self) -> bool {
        !self.pending.is_empty() || self.database.as_ref().is_some_and(DatabaseWitness::is_due)
    }

    /// Returns when the database was last compared with the log: the kernel's dpkg runs
    /// since then are what [`Integrity::idle`] wants.
    #[must_use]
    pub fn checked_at(&self) -> SystemTime {
        self.last_check
    }

    /// Runs what waits for the database to be quiet: no package manager holds it and the log
    /// is read to its end. `runs` are the dpkg runs the kernel saw since
    /// [`Integrity::checked_at`], `None` without the tracer.
    pub fn idle(&mut self, runs: Option<&[RunSeen]>) -> Vec<Event> {
        let mut events = Vec::new();
        let now = SystemTime::now();
        if let Some(database) = self.database.as_mut() {
            if database.is_due() {
                let saw_run = runs.is_some_and(|r| !r.is_empty());
                match database.check(saw_run) {
                    Ok(found) => {
                        self.last_check = now;
                        for unlogged in found {
                            let actor_run = runs.and_then(pick_writer);
                            if let Some(after) = unlogged.after.as_ref() {
                                if after.state.is_configured()
                                    && unlogged.before.as_ref().map(|b| &b.version)
                                        != Some(&after.version)
                                {
                                    self.queue_check(
                                        unlogged.package.clone(),
                                        after.version.clone(),
                                        actor_run.map(|r| r.actor.clone()),
                                    );
                                }
                            }
                            events.push(unlogged_event(
                                &unlogged,
                                actor_run,
                                runs.is_some(),
                                &self.admin_dir,
                                &self.host,
                            ));
                        }
                    }
                    Err(err) => {
                        debug!(error = %format!("{:#}", anyhow::Error::new(err)), "cannot read the dpkg database; retrying");
                    }
                }
            }
        }
        if let Some(verifier) = self.verifier.as_mut() {
            for job in self.pending.drain(..) {
                verifier.submit(job);
            }
        }
        events
    }

    /// Runs the periodic checks of the log.
    pub fn poll(&mut self, tailer: &Tailer) -> Vec<Event> {
        let Some(witness) = self.witness.as_mut() else {
            return Vec::new();
        };
        witness
            .poll(tailer)
            .iter()
            .map(|t| tamper_event(t, &self.host))
            .collect()
    }

    /// Returns the events of the verifications that finished.
    pub fn take_verified(&mut self) -> Vec<Event> {
        let outcomes = self
            .verifier
            .as_mut()
            .map(Verifier::take)
            .unwrap_or_default();
        self.outcome_events(outcomes)
    }

    fn outcome_events(&self, outcomes: Vec<Outcome>) -> Vec<Event> {
        outcomes
            .into_iter()
            .filter_map(|outcome| match outcome {
                Outcome::Verified {
                    verification,
                    actor,
                    head,
                } => verification_event(
                    &verification,
                    actor,
                    head.as_ref(),
                    self.max_listed,
                    &self.host,
                ),
                Outcome::StoreBroken { path, problems } => {
                    Some(store_event(&path, &problems, &self.host))
                }
            })
            .collect()
    }

    /// Returns what the checkpoint at `position` keeps for the log witness.
    pub fn witness_state(&mut self, position: &Position) -> Option<Value> {
        let state = self
            .witness
            .as_mut()?
            .state_for(position.identity, position.offset)?;
        serde_json::to_value(state).ok()
    }

    /// Finishes the queued verifications and returns their events.
    pub fn close(&mut self) -> Vec<Event> {
        if let Some(verifier) = self.verifier.as_mut() {
            for job in self.pending.drain(..) {
                verifier.submit(job);
            }
        }
        let outcomes = self
            .verifier
            .take()
            .map(Verifier::close)
            .unwrap_or_default();
        self.outcome_events(outcomes)
    }
}

/// Chooses the run that made unlogged changes: one that wrote another log, else the last.
fn pick_writer(runs: &[RunSeen]) -> Option<&RunSeen> {
    runs.iter()
        .rev()
        .find(|r| !r.writes_followed_log)
        .or_else(|| runs.last())
}

fn version_text(version: Option<&str>) -> String {
    escape_control(version.unwrap_or("<none>")).into_owned()
}

/// Builds the event of a verification with findings; `None` when everything matched.
fn verification_event(
    verification: &Verification,
    actor: Option<Value>,
    head: Option<&Head>,
    max_listed: usize,
    host: &str,
) -> Option<Event> {
    if verification.findings.is_empty() {
        return None;
    }
    let category = if verification.has_file_findings() {
        Category::PackageIntegrityMismatch
    } else {
        Category::PackageConffileChanged
    };
    let package = escape_control(&verification.package).into_owned();
    let version = verification
        .version
        .as_deref()
        .map(|v| escape_control(v).into_owned());
    let mut listed: Vec<&check::Finding> = verification.findings.iter().collect();
    // Files before conffiles: the findings that matter most come first in a bounded list.
    listed.sort_by_key(|f| f.kind != FileKind::File);
    let total = listed.len();
    listed.truncate(max_listed);
    let mut description = match category {
        Category::PackageIntegrityMismatch => format!(
            "Package files differ from what was installed: {package} {}",
            version_text(version.as_deref())
        ),
        _ => format!(
            "Package config files changed since install: {package} {}",
            version_text(version.as_deref())
        ),
    };
    let shown: Vec<String> = listed
        .iter()
        .take(3)
        .map(|f| format!("{} {}", f.path, f.problem.as_str()))
        .collect();
    let _ = write!(description, " ({}", shown.join(", "));
    if total > shown.len() {
        let _ = write!(description, ", {} more", total - shown.len());
    }
    description.push(')');
    let subject = IntegritySubject {
        package,
        arch: verification
            .arch
            .as_deref()
            .map(|a| escape_control(a).into_owned()),
        old_version: None,
        new_version: version,
        actor,
    };
    let evidence = json!({
        "files_checked": verification.files.len(),
        "bytes_hashed": verification.bytes,
        "md5sums": verification.has_md5sums,
        "findings": listed,
        "findings_total": total,
        "omitted": total - listed.len(),
        "record": head.map(|h| json!({"seq": h.seq, "hash": h.hash})),
    });
    Some(Event::from_evidence(
        category,
        &subject,
        description,
        evidence,
        host,
    ))
}

fn tamper_event(tamper: &Tamper, host: &str) -> Event {
    let log = escape_control(&tamper.log.to_string_lossy()).into_owned();
    let detail = escape_control(&tamper.detail).into_owned();
    let evidence = json!({
        "log": log,
        "seen": tamper.seen,
        "detail": detail,
        "bytes_read": tamper.offset,
        "size": tamper.size,
        "line_no": tamper.line_no,
    });
    Event::from_evidence(
        Category::LogTamper,
        &IntegritySubject::default(),
        format!("Log tampered: {detail}"),
        evidence,
        host,
    )
}

fn store_event(path: &Path, problems: &[String], host: &str) -> Event {
    let path = escape_control(&path.to_string_lossy()).into_owned();
    let problems: Vec<String> = problems
        .iter()
        .map(|p| escape_control(p).into_owned())
        .collect();
    let evidence = json!({
        "log": path,
        "seen": "record_store_broken",
        "detail": problems.first(),
        "problems": problems,
    });
    Event::from_evidence(
        Category::LogTamper,
        &IntegritySubject::default(),
        format!(
            "Log tampered: Fenrir's record store {path} failed its chain check: {}",
            problems.first().map_or("", String::as_str)
        ),
        evidence,
        host,
    )
}

fn unlogged_event(
    unlogged: &Unlogged,
    run: Option<&RunSeen>,
    has_tracer: bool,
    admin_dir: &Path,
    host: &str,
) -> Event {
    let side = |package: Option<&crate::parse::status::InstalledPackage>| {
        package.map(|p| {
            json!({
                "state": p.state.to_string(),
                "version": p.version.as_deref().map(escape_control),
            })
        })
    };
    let package = escape_control(&unlogged.package.name).into_owned();
    let before = unlogged.before.as_ref().and_then(|p| p.version.clone());
    let after = unlogged.after.as_ref().and_then(|p| p.version.clone());
    let state = unlogged
        .after
        .as_ref()
        .map_or_else(|| "not-installed".to_owned(), |p| p.state.to_string());
    let what = if unlogged.fields.is_empty() {
        format!(
            "{package} {} -> {} ({state})",
            version_text(before.as_deref()),
            version_text(after.as_deref())
        )
    } else {
        format!(
            "{package} record edited ({})",
            escape_control(&unlogged.fields.join(", "))
        )
    };
    let by = match run {
        Some(run) => format!(
            " by {}",
            run.actor["dpkg_command"].as_str().unwrap_or("dpkg")
        ),
        None if has_tracer => {
            " with no package manager running (a direct edit of dpkg's database)".to_owned()
        }
        None => String::new(),
    };
    let subject = IntegritySubject {
        package,
        arch: unlogged
            .package
            .arch
            .as_deref()
            .map(|a| escape_control(a).into_owned()),
        old_version: before.as_deref().map(|v| escape_control(v).into_owned()),
        new_version: after.as_deref().map(|v| escape_control(v).into_owned()),
        actor: run.map(|r| r.actor.clone()),
    };
    let evidence = json!({
        "database": escape_control(&admin_dir.to_string_lossy()),
        "before": side(unlogged.before.as_ref()),
        "after": side(unlogged.after.as_ref()),
        "fields": unlogged.fields,
        "writer": if run.is_some() { Value::from("dpkg") } else { Value::Null },
        "log": run.map(|r| escape_control(&r.log.to_string_lossy()).into_owned()),
        "tracer": has_tracer,
    });
    Event::from_evidence(
        Category::PackageChangeUnlogged,
        &subject,
        format!("Package changed without a log line: {what}{by}"),
        evidence,
        host,
    )
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::source::tail::{StartAt, TailOptions};

    #[test]
    fn lines_the_log_held_when_the_database_was_read_do_not_move_its_view() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let admin = dir.path().join("admin");
        fs::create_dir_all(admin.join("updates"))?;
        fs::write(
            admin.join("status"),
            "Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n",
        )?;
        let log = dir.path().join("dpkg.log");
        // Already in the log at start: a status line of another database (`dpkg --root`).
        fs::write(&log, "2026-05-03 10:00:00 status installed other:all 9\n")?;
        let mut config = Config::default();
        config.dpkg.log.clone_from(&log);
        config.dpkg.admin_dir.clone_from(&admin);
        config.state_dir = dir.path().join("state");
        config.integrity.verify = false;
        config.integrity.log_tamper = false;
        let options = TailOptions {
            start_at: StartAt::Beginning,
            ..TailOptions::default()
        };
        let (mut tailer, _) = Tailer::open(log.clone(), None, options)?;
        let (mut integrity, found) = Integrity::start(&config, &tailer, None, "h");
        assert!(found.is_empty());

        let names = |integrity: &Integrity| -> Vec<String> {
            integrity
                .database_view()
                .map(|view| view.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default()
        };
        let (lines, _) = tailer.read_lines(100)?;
        for line in &lines {
            integrity.line(line);
        }
        assert_eq!(names(&integrity), ["a"], "a line older than the reading");

        fs::write(
            &log,
            "2026-05-03 10:00:00 status installed other:all 9\n\
             2026-05-03 10:00:05 status installed b:all 2\n",
        )?;
        let (lines, _) = tailer.read_lines(100)?;
        assert_eq!(lines.len(), 1);
        integrity.line(&lines[0]);
        assert_eq!(names(&integrity), ["a", "b"], "a line written after it");
        Ok(())
    }

    #[test]
    fn the_root_follows_the_admin_directory() {
        assert_eq!(dpkg_root(None, Path::new("/var/lib/dpkg")), Path::new("/"));
        assert_eq!(
            dpkg_root(None, Path::new("/srv/sandbox/root/var/lib/dpkg")),
            Path::new("/srv/sandbox/root")
        );
        assert_eq!(dpkg_root(None, Path::new("/srv/admin")), Path::new("/"));
        assert_eq!(
            dpkg_root(Some(Path::new("/mnt")), Path::new("/srv/admin")),
            Path::new("/mnt")
        );
    }
}
