//! Changes made while the sensor was not running, found in dpkg's database.
//!
//! In: the snapshot saved while the sensor last ran, every `status` line the tailer delivers,
//! and dpkg's database read at a quiet moment. Out: events marked `"observed": "offline"` for
//! what the database has and neither the snapshot nor the delivered lines explain; a new
//! snapshot. State: the installed set as of the last line delivered (the snapshot moved on by
//! each `status` line), and whether the comparison has been made since the start.
//!
//! The tailer resumes at its checkpoint, so changes whose lines are still in the followed log
//! arrive as ordinary events, and their `status` lines move the tracked set too: they are no
//! difference and are reported once. What remains was made with the log rotated away twice,
//! written elsewhere (`dpkg --log`), lost with a checkpoint, or never logged. For each such
//! change, the rotated logs beside the followed one are searched: when their lines lead
//! step by step from the snapshot's state to the database's, those lines are the events
//! (their time, raw line and apt's actor); otherwise one event per change is built from the
//! database alone, timed when it was noticed, with an empty raw line and no actor.
//!
//! dpkg's database does not record a reinstall of the same version, so a reinstall made while
//! the sensor was down is reported only from the log.
//!
//! While the sensor runs, the integrity stage's database witness compares the database with
//! the log at every quiet moment and reports what bypassed the log as it happens; each set it
//! compared is taken in ([`Reconciler::take_in`]), so the snapshot holds what it reported and
//! the next start does not report it again.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, Local};
use tracing::{debug, info, warn};

use super::snapshot::{Snapshot, SnapshotStore};
use crate::event::{escape_control, Category, Event};
use crate::parse::dpkg::{parse_line, LineKind, PackageRef, PackageState};
use crate::parse::status::{InstalledPackage, InstalledSet};
use crate::parse::version::Version;
use crate::parse::PackageChange;
use crate::replay::{self, HistorySource, Unfinished};

/// The value of `observed` on events found this way.
pub const OFFLINE: &str = "offline";

/// Compares the database with what the sensor knew, once per start.
#[derive(Debug)]
pub struct Reconciler {
    store: SnapshotStore,
    admin_dir: PathBuf,
    /// The followed log; its rotations and apt's history beside it give details.
    log: PathBuf,
    /// The installed set as of the last line delivered; `None` until there is a baseline.
    tracked: Option<InstalledSet>,
    /// When the loaded snapshot was saved: offline changes happened after it.
    since: Option<DateTime<FixedOffset>>,
    reconciled: bool,
    /// Whether `tracked` changed since it was last saved.
    dirty: bool,
}

impl Reconciler {
    /// Loads the snapshot of `admin_dir` from `state_dir`; an unreadable one is reported and
    /// replaced by a fresh baseline.
    #[must_use]
    pub fn start(state_dir: &Path, admin_dir: &Path, log: &Path) -> Self {
        let store = SnapshotStore::for_admin_dir(state_dir, admin_dir);
        let snapshot = store.load().unwrap_or_else(|err| {
            warn!(
                error = %format!("{:#}", anyhow::Error::new(err)),
                "snapshot unusable; changes made while the sensor was down cannot be found this time"
            );
            None
        });
        Self {
            store,
            admin_dir: admin_dir.to_path_buf(),
            log: log.to_path_buf(),
            since: snapshot.as_ref().map(|s| s.saved_at),
            tracked: snapshot.map(|s| s.packages),
            reconciled: false,
            dirty: false,
        }
    }

    /// Moves the tracked set by one delivered log line, if it is a `status` line. The pipeline
    /// leaves out the lines the kernel saw a `dpkg --root` or `--admindir` run write: they
    /// describe another database.
    ///
    /// TODO: such a run's lines written while the sensor was down, or while it ran without its
    /// kernel tracer, have no known writer and move this set all the same, so the next start
    /// reports their packages as removed while the sensor was down.
    pub fn observe(&mut self, line: &[u8]) {
        let Some(tracked) = self.tracked.as_mut() else {
            return;
        };
        // Most lines are not status lines; the word after the timestamp tells.
        if line.get(19..27) != Some(b" status ".as_slice()) {
            return;
        }
        if let Ok(parsed) = parse_line(line) {
            if let LineKind::Status {
                state,
                package,
                version,
            } = parsed.kind
            {
                tracked.apply_status(&package, state, version.as_deref());
                self.dirty = true;
            }
        }
    }

    /// Gives up the comparison for this run, keeping the saved snapshot for the next.
    pub fn skip(&mut self) {
        self.reconciled = true;
        self.dirty = false;
        self.tracked = None;
    }

    /// Returns whether the comparison is still to be made. It runs once per start; later
    /// changes that bypass the log are the database witness's to report.
    #[must_use]
    pub fn is_due(&self) -> bool {
        !self.reconciled
    }

    /// Takes in the database as a comparison made while running found it (the database
    /// witness's view after its check), so the changes that comparison reported are in the
    /// next snapshot. Before this start's own comparison, or after it was skipped, the saved
    /// snapshot stays as it is: what it lacks is still to be reported.
    pub fn take_in(&mut self, database: &InstalledSet) {
        if !self.reconciled {
            return;
        }
        let Some(tracked) = self.tracked.as_mut() else {
            return;
        };
        if tracked != database {
            database.clone_into(tracked);
            self.dirty = true;
        }
    }

    /// Compares `database`, read at a quiet moment with the log read to its end, with the
    /// tracked set, and returns the events of what changed offline. The database becomes the
    /// tracked set.
    pub fn reconcile(&mut self, database: InstalledSet, host: &str) -> Vec<Event> {
        self.reconciled = true;
        self.dirty = true;
        let Some(tracked) = self.tracked.replace(database) else {
            info!(
                packages = self.tracked.as_ref().map_or(0, InstalledSet::len),
                "first snapshot of the dpkg database taken"
            );
            return Vec::new();
        };
        let Some(database) = self.tracked.as_ref() else {
            return Vec::new();
        };
        let differences = tracked.differences(database);
        if differences.is_empty() {
            debug!("dpkg database unchanged since the sensor last ran");
            return Vec::new();
        }

        let logged = self.logged_events(&differences, host);
        let now = Local::now().naive_local();
        let mut events = Vec::new();
        for (before, after) in &differences {
            let key = before.or(*after).map(InstalledPackage::package_ref);
            let chain = key.as_ref().and_then(|key| logged.get(key));
            match chain.filter(|chain| explains(chain, *before, *after)) {
                Some(chain) => events.extend(chain.iter().cloned()),
                None => events.extend(
                    changes_between(*before, *after, now)
                        .iter()
                        .map(|change| Event::from_change(change, host, "dpkg")),
                ),
            }
        }
        for event in &mut events {
            event.observed = Some(OFFLINE.to_owned());
            event.description.push_str(" while the sensor was down");
        }
        info!(
            changes = differences.len(),
            events = events.len(),
            "found changes made while the sensor was down"
        );
        events
    }

    /// Reads the events of the packages in `differences` from the rotated logs, after the
    /// snapshot was saved, by package in log order.
    fn logged_events(
        &self,
        differences: &[(Option<&InstalledPackage>, Option<&InstalledPackage>)],
        host: &str,
    ) -> BTreeMap<PackageRef, Vec<Event>> {
        let mut logged: BTreeMap<PackageRef, Vec<Event>> = BTreeMap::new();
        let Some(since) = self.since else {
            return logged;
        };
        let wanted: Vec<PackageRef> = differences
            .iter()
            .filter_map(|(before, after)| before.or(*after).map(InstalledPackage::package_ref))
            .collect();
        // Log times are local wall-clock times; a day's margin covers any offset change.
        let from = since.with_timezone(&Local).naive_local() - chrono::Duration::days(1);
        let files = replay::overlapping(&replay::rotations_of(&self.log), Some(from), None);
        if files.is_empty() {
            return logged;
        }
        let history = replay::load_history(&HistorySource::BesideLogs, &files).unwrap_or_default();
        let result = replay::for_each_event(&files, host, &history, Unfinished::Judge, |event| {
            let package = PackageRef {
                name: event.parsed_data.package.clone(),
                arch: event.parsed_data.arch.clone(),
            };
            let after_snapshot = DateTime::parse_from_rfc3339(&event.parsed_data.timestamp)
                .is_ok_and(|time| time.timestamp() >= since.timestamp());
            if after_snapshot && wanted.contains(&package) {
                logged.entry(package).or_default().push(event);
            }
            Ok(())
        });
        if let Err(err) = result {
            warn!(
                error = %format!("{:#}", anyhow::Error::new(err)),
                "cannot read the rotated logs; offline changes are reported from the database alone"
            );
            logged.clear();
        }
        logged
    }

    /// Saves the tracked set when it changed; called before the checkpoint is saved.
    pub fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(tracked) = self.tracked.as_ref() else {
            return;
        };
        let snapshot = Snapshot::new(self.admin_dir.clone(), tracked.clone());
        match self.store.save(&snapshot) {
            Ok(()) => self.dirty = false,
            // The old snapshot stays: the next start may report some changes as offline again.
            Err(err) => {
                warn!(error = %format!("{:#}", anyhow::Error::new(err)), "failed to save the snapshot");
            }
        }
    }
}

/// A package's state as the log's events move it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Absent,
    /// Only config files are left — or nothing, after a removal of a package without any.
    Removed(Option<String>),
    Present(Option<String>),
}

impl Step {
    fn of(package: Option<&InstalledPackage>) -> Self {
        let version =
            |p: &InstalledPackage| p.version.as_deref().map(|v| escape_control(v).into_owned());
        match package {
            None => Self::Absent,
            Some(p) if p.state == PackageState::ConfigFiles => Self::Removed(version(p)),
            Some(p) => Self::Present(version(p)),
        }
    }
}

/// Returns whether `events`, in order, lead from `before` to `after`.
fn explains(
    events: &[Event],
    before: Option<&InstalledPackage>,
    after: Option<&InstalledPackage>,
) -> bool {
    let mut step = Step::of(before);
    for event in events {
        let data = &event.parsed_data;
        let (old, new) = (data.old_version.clone(), data.new_version.clone());
        step = match (event.category, &step) {
            (Category::PackageInstall, Step::Absent) if old.is_none() => Step::Present(new),
            (Category::PackageInstall, Step::Removed(version)) if old == *version => {
                Step::Present(new)
            }
            (
                Category::PackageUpgrade | Category::PackageDowngrade | Category::PackageReinstall,
                Step::Present(version),
            ) if old == *version => Step::Present(new),
            (Category::PackageRemove, Step::Present(version)) if old == *version => {
                Step::Removed(old)
            }
            (Category::PackagePurge, Step::Removed(_) | Step::Present(_))
            | (Category::PackageDisappear, _) => Step::Absent,
            (Category::PackageInstallFailed | Category::PackageScripts, _) => step,
            _ => return false,
        };
    }
    match (Step::of(after), step) {
        (Step::Absent, Step::Absent | Step::Removed(_)) => true,
        (Step::Removed(expected), Step::Removed(found)) => expected == found,
        (expected, found) => expected == found,
    }
}

/// Builds the changes that take a package from `before` to `after`, the database's states.
fn changes_between(
    before: Option<&InstalledPackage>,
    after: Option<&InstalledPackage>,
    at: chrono::NaiveDateTime,
) -> Vec<PackageChange> {
    let Some(package) = after.or(before) else {
        return Vec::new();
    };
    let change =
        |category, old: Option<&InstalledPackage>, new: Option<&InstalledPackage>| PackageChange {
            category,
            package: package.name.clone(),
            arch: package.arch.clone(),
            old_version: old.and_then(|p| p.version.clone()),
            new_version: new.and_then(|p| p.version.clone()),
            timestamp: at,
            raw_line: String::new(),
            last_state: None,
        };
    let failed = |new: &InstalledPackage| {
        (!new.state.is_configured() && new.state != PackageState::ConfigFiles).then(|| {
            let mut failure = change(Category::PackageInstallFailed, None, Some(new));
            failure.last_state = Some(new.state.as_str().to_owned());
            failure
        })
    };
    let is_removed = |p: &InstalledPackage| p.state == PackageState::ConfigFiles;

    let mut changes = Vec::new();
    match (before, after) {
        (None, Some(new)) if is_removed(new) => {
            changes.push(change(Category::PackageRemove, Some(new), None));
        }
        (None, Some(new)) => {
            changes.push(change(Category::PackageInstall, None, Some(new)));
            changes.extend(failed(new));
        }
        (Some(old), None) => {
            if !is_removed(old) {
                changes.push(change(Category::PackageRemove, Some(old), None));
            }
            changes.push(change(Category::PackagePurge, Some(old), None));
        }
        (Some(old), Some(new)) if is_removed(new) => {
            changes.push(change(Category::PackageRemove, Some(old), None));
        }
        (Some(old), Some(new)) if is_removed(old) => {
            changes.push(change(Category::PackageInstall, Some(old), Some(new)));
            changes.extend(failed(new));
        }
        (Some(old), Some(new)) => {
            if old.version != new.version {
                changes.push(change(upgrade_kind(old, new), Some(old), Some(new)));
            }
            changes.extend(failed(new));
        }
        (None, None) => {}
    }
    changes
}

/// Tells an upgrade from a downgrade by dpkg's version order.
fn upgrade_kind(old: &InstalledPackage, new: &InstalledPackage) -> Category {
    let parse = |p: &InstalledPackage| p.version.as_deref().and_then(|v| Version::parse(v).ok());
    match (parse(old), parse(new)) {
        (Some(old), Some(new)) => match new.cmp(&old) {
            Ordering::Greater => Category::PackageUpgrade,
            Ordering::Equal => Category::PackageReinstall,
            Ordering::Less => Category::PackageDowngrade,
        },
        _ => Category::PackageUpgrade,
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn package(name: &str, version: &str, state: PackageState) -> InstalledPackage {
        InstalledPackage {
            name: name.to_owned(),
            arch: Some("amd64".to_owned()),
            version: Some(version.to_owned()),
            state,
        }
    }

    fn at() -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 5, 3)
            .and_then(|d| d.and_hms_opt(9, 0, 0))
            .expect("valid time")
    }

    /// Category, old version, new version and last state of a change.
    type Facts = (Category, Option<String>, Option<String>, Option<String>);

    fn kinds(before: Option<&InstalledPackage>, after: Option<&InstalledPackage>) -> Vec<Facts> {
        changes_between(before, after, at())
            .into_iter()
            .map(|c| (c.category, c.old_version, c.new_version, c.last_state))
            .collect()
    }

    #[expect(clippy::unnecessary_wraps, reason = "compared with optional versions")]
    fn s(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    #[test]
    fn database_differences_become_the_changes_dpkg_would_log() {
        use PackageState::{ConfigFiles, HalfConfigured, Installed};
        let v1 = package("a", "1.0-1", Installed);
        let v2 = package("a", "1:0.9-1", Installed);
        let conf = package("a", "1.0-1", ConfigFiles);
        let broken = package("a", "2.0-1", HalfConfigured);

        assert_eq!(
            kinds(None, Some(&v1)),
            [(Category::PackageInstall, None, s("1.0-1"), None)]
        );
        // An epoch makes 1:0.9 newer than 1.0.
        assert_eq!(
            kinds(Some(&v1), Some(&v2)),
            [(Category::PackageUpgrade, s("1.0-1"), s("1:0.9-1"), None)]
        );
        assert_eq!(
            kinds(Some(&v2), Some(&v1)),
            [(Category::PackageDowngrade, s("1:0.9-1"), s("1.0-1"), None)]
        );
        assert_eq!(
            kinds(Some(&v1), Some(&conf)),
            [(Category::PackageRemove, s("1.0-1"), None, None)]
        );
        assert_eq!(
            kinds(Some(&conf), None),
            [(Category::PackagePurge, s("1.0-1"), None, None)]
        );
        assert_eq!(
            kinds(Some(&v1), None),
            [
                (Category::PackageRemove, s("1.0-1"), None, None),
                (Category::PackagePurge, s("1.0-1"), None, None)
            ]
        );
        assert_eq!(
            kinds(Some(&conf), Some(&v1)),
            [(Category::PackageInstall, s("1.0-1"), s("1.0-1"), None)]
        );
        assert_eq!(
            kinds(Some(&v1), Some(&broken)),
            [
                (Category::PackageUpgrade, s("1.0-1"), s("2.0-1"), None),
                (
                    Category::PackageInstallFailed,
                    None,
                    s("2.0-1"),
                    s("half-configured")
                )
            ]
        );
    }

    fn event(category: Category, old: Option<&str>, new: Option<&str>) -> Event {
        let change = PackageChange {
            category,
            package: "a".into(),
            arch: Some("amd64".into()),
            old_version: old.map(str::to_owned),
            new_version: new.map(str::to_owned),
            timestamp: at(),
            raw_line: "line".into(),
            last_state: None,
        };
        Event::from_change(&change, "h", "dpkg")
    }

    #[test]
    fn log_lines_explain_a_change_only_step_by_step() {
        use PackageState::{ConfigFiles, Installed};
        let v1 = package("a", "1.0", Installed);
        let v3 = package("a", "3.0", Installed);
        let install = event(Category::PackageInstall, None, Some("1.0"));
        let up12 = event(Category::PackageUpgrade, Some("1.0"), Some("2.0"));
        let up23 = event(Category::PackageUpgrade, Some("2.0"), Some("3.0"));
        let remove = event(Category::PackageRemove, Some("3.0"), None);
        let purge = event(Category::PackagePurge, Some("3.0"), None);

        assert!(explains(std::slice::from_ref(&install), None, Some(&v1)));
        assert!(explains(
            &[up12.clone(), up23.clone()],
            Some(&v1),
            Some(&v3)
        ));
        // The step from 1.0 to 2.0 is missing from the logs.
        assert!(!explains(std::slice::from_ref(&up23), Some(&v1), Some(&v3)));
        assert!(!explains(
            std::slice::from_ref(&install),
            Some(&v1),
            Some(&v1)
        ));
        assert!(explains(
            &[up12, up23, remove.clone(), purge],
            Some(&v1),
            None
        ));
        assert!(explains(
            &[remove],
            Some(&v3),
            Some(&package("a", "3.0", ConfigFiles))
        ));
        assert!(!explains(&[], Some(&v1), Some(&v3)));
    }

    #[test]
    fn status_lines_move_the_tracked_set_and_the_first_start_takes_a_baseline() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("dpkg.log");
        let mut reconciler = Reconciler::start(dir.path(), Path::new("/admin"), &log);
        reconciler.observe(b"2026-05-03 09:00:00 status installed a:amd64 1.0");
        let database: InstalledSet = vec![package("a", "1.0", PackageState::Installed)].into();
        assert!(
            reconciler.reconcile(database.clone(), "h").is_empty(),
            "no baseline yet"
        );
        reconciler.persist();

        // The next start: two lines delivered from the checkpoint explain a; b changed offline.
        let mut reconciler = Reconciler::start(dir.path(), Path::new("/admin"), &log);
        reconciler.observe(b"2026-05-03 10:00:00 upgrade a:amd64 1.0 2.0");
        reconciler.observe(b"2026-05-03 10:00:01 status installed a:amd64 2.0");
        reconciler.observe(b"garbage");
        let database: InstalledSet = vec![
            package("a", "2.0", PackageState::Installed),
            package("b", "5", PackageState::Installed),
        ]
        .into();
        let events = reconciler.reconcile(database, "h");
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0].category, Category::PackageInstall);
        assert_eq!(events[0].parsed_data.package, "b");
        assert_eq!(events[0].observed.as_deref(), Some(OFFLINE));
        assert_eq!(events[0].raw_line, "");
        assert!(events[0].description.ends_with("while the sensor was down"));
        assert!(!reconciler.is_due());
        Ok(())
    }

    #[test]
    fn a_change_a_live_comparison_reported_is_not_reported_again_at_the_next_start(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("dpkg.log");
        let a = package("a", "1.0", PackageState::Installed);
        let b = package("b", "5", PackageState::Installed);
        let before: InstalledSet = vec![a.clone()].into();
        let after: InstalledSet = vec![a.clone(), b.clone()].into();

        let mut reconciler = Reconciler::start(dir.path(), Path::new("/admin"), &log);
        assert!(reconciler.reconcile(before.clone(), "h").is_empty());
        // The database witness found b installed without a log line and reported it.
        reconciler.take_in(&after);
        reconciler.persist();

        let mut reconciler = Reconciler::start(dir.path(), Path::new("/admin"), &log);
        // Before this start's comparison, a live view does not replace the snapshot.
        let later: InstalledSet = vec![a, b, package("c", "1", PackageState::Installed)].into();
        reconciler.take_in(&later);
        let events = reconciler.reconcile(later, "h");
        let packages: Vec<&str> = events
            .iter()
            .map(|e| e.parsed_data.package.as_str())
            .collect();
        assert_eq!(packages, ["c"], "{events:#?}");
        Ok(())
    }
}
