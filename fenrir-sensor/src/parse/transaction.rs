//! Deciding what dpkg's lines mean, across the runs of dpkg.
//!
//! In: parsed [`LogLine`]s in log order, and a call to [`Transactions::finish`] whenever a dpkg
//! run has ended. Out: [`PackageChange`]s, each decided at the line that settles it.
//!
//! State: the packages whose install, upgrade, downgrade or reinstall has started but not yet
//! reached a configured state, with the last state dpkg recorded for each. The state is
//! serializable so that a restart can resume in the middle of an apt transaction.
//!
//! dpkg writes `upgrade` for upgrades, downgrades and reinstalls alike; they are told apart by
//! comparing the versions with dpkg's own ordering. An install fails when dpkg rolls the
//! package back, when a new run starts while the package is half-installed or half-configured,
//! or when a run ends with the package anywhere short of configured. An `unpacked` package is
//! not judged at a new run's start: apt unpacks in one dpkg run and configures in the next.

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::dpkg::{Action, LineKind, LogLine, PackageRef, PackageState};
use super::version::Version;
use super::PackageChange;
use crate::event::Category;

/// Follows packages through dpkg's runs and turns log lines into package changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transactions {
    /// Unfinished installs, keyed by `name` or `name:arch` as the log spells the package.
    /// Three lines in four of a long history are status lines looked up here, so the hash is
    /// foldhash's, randomly seeded like std's and cheaper on short keys: a replay of 1.2 M
    /// corpus lines took 5 % less time with it.
    pending: HashMap<String, Pending, foldhash::fast::RandomState>,
    /// Upgrade lines whose versions could not be ordered.
    unordered_upgrades: u64,
}

/// The line being fed: where a change decided on it takes its time and text from.
struct Seen<'a> {
    timestamp: NaiveDateTime,
    raw: &'a str,
}

/// An install, upgrade, downgrade or reinstall that has not yet reached a configured state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    package: PackageRef,
    old_version: Option<String>,
    /// The version being installed; an action without one never becomes pending.
    new_version: String,
    /// The last state recorded for the package since the action, if any.
    state: Option<PackageState>,
    /// Whether a status line has named the new version since the action.
    #[serde(default)]
    has_new_version: bool,
    /// The time of the line that set `raw_line`.
    #[serde(with = "timestamp_text")]
    timestamp: NaiveDateTime,
    /// The last status line for the package, or the action line before any.
    raw_line: String,
}

impl Transactions {
    /// Creates a tracker with nothing pending.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one line in log order and returns the changes it settles.
    ///
    /// `raw` is the line as read; it is copied into the changes the line decides.
    pub fn feed(&mut self, line: &LogLine, raw: &str) -> Vec<PackageChange> {
        let seen = Seen {
            timestamp: line.timestamp,
            raw,
        };
        match &line.kind {
            LineKind::Action {
                action,
                package,
                old_version,
                new_version,
            } => {
                let versions = (old_version.as_deref(), new_version.as_deref());
                self.feed_action(*action, package, versions, &seen)
                    .into_iter()
                    .collect()
            }
            LineKind::Status {
                state,
                package,
                version,
            } => self
                .feed_status(*state, package, version.as_deref(), &seen)
                .into_iter()
                .collect(),
            LineKind::Startup { .. } => self.judge(|state| {
                matches!(
                    state,
                    Some(PackageState::HalfInstalled | PackageState::HalfConfigured)
                )
            }),
            LineKind::Conffile { .. } => Vec::new(),
        }
    }

    /// Ends a dpkg run: every install still short of a configured state has failed.
    pub fn finish(&mut self) -> Vec<PackageChange> {
        self.judge(|_| true)
    }

    /// Returns how many installs are waiting for their outcome.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Returns how many upgrade lines carried versions that could not be ordered; they were
    /// reported as upgrades unless both versions were spelled the same.
    #[must_use]
    pub fn unordered_upgrades(&self) -> u64 {
        self.unordered_upgrades
    }

    fn feed_action(
        &mut self,
        action: Action,
        package: &PackageRef,
        (old_version, new_version): (Option<&str>, Option<&str>),
        seen: &Seen<'_>,
    ) -> Option<PackageChange> {
        let category = match action {
            Action::Install => Category::PackageInstall,
            Action::Upgrade => self.classify_upgrade(old_version, new_version),
            Action::Remove => Category::PackageRemove,
            Action::Purge => Category::PackagePurge,
            Action::Disappear => Category::PackageDisappear,
            Action::Configure | Action::Trigproc => return None,
        };

        // A new action decides the package's fate afresh, whatever an earlier one left behind.
        with_key(package, |key| self.pending.remove(key));
        if let (Action::Install | Action::Upgrade, Some(new)) = (action, new_version) {
            let pending = Pending {
                package: package.clone(),
                old_version: old_version.map(str::to_owned),
                new_version: new.to_owned(),
                state: None,
                has_new_version: false,
                timestamp: seen.timestamp,
                raw_line: seen.raw.to_owned(),
            };
            self.pending.insert(package.to_string(), pending);
        }

        Some(PackageChange {
            category,
            package: package.name.clone(),
            arch: package.arch.clone(),
            old_version: old_version.map(str::to_owned),
            new_version: new_version.map(str::to_owned),
            timestamp: seen.timestamp,
            raw_line: seen.raw.to_owned(),
            last_state: None,
            logged_run: None,
        })
    }

    fn classify_upgrade(&mut self, old: Option<&str>, new: Option<&str>) -> Category {
        let (Some(old), Some(new)) = (old, new) else {
            self.unordered_upgrades += 1;
            return Category::PackageUpgrade;
        };
        if let (Ok(old), Ok(new)) = (Version::parse(old), Version::parse(new)) {
            return match new.cmp(&old) {
                Ordering::Greater => Category::PackageUpgrade,
                Ordering::Equal => Category::PackageReinstall,
                Ordering::Less => Category::PackageDowngrade,
            };
        }

        // dpkg itself refuses such versions, so this is a hand-made or foreign log: report the
        // change rather than lose it.
        self.unordered_upgrades += 1;
        if old == new {
            Category::PackageReinstall
        } else {
            Category::PackageUpgrade
        }
    }

    fn feed_status(
        &mut self,
        state: PackageState,
        package: &PackageRef,
        version: Option<&str>,
        seen: &Seen<'_>,
    ) -> Option<PackageChange> {
        // Most lines of a long history speak of packages nothing waits for.
        if self.pending.is_empty() {
            return None;
        }
        with_key(package, |key| {
            // A log whose dpkg was upgraded across 1.16.2 names a package without and then
            // with its architecture.
            let key = if self.pending.contains_key(key) {
                key
            } else if package.arch.is_some() && self.pending.contains_key(&package.name) {
                package.name.as_str()
            } else {
                return None;
            };
            self.update_pending(key, state, version, seen)
        })
    }

    /// Records a status line of the pending install under `key`; returns its failure when the
    /// line shows it rolled back.
    fn update_pending(
        &mut self,
        key: &str,
        state: PackageState,
        version: Option<&str>,
        seen: &Seen<'_>,
    ) -> Option<PackageChange> {
        let pending = self.pending.get_mut(key)?;
        pending.state = Some(state);
        pending.timestamp = seen.timestamp;
        seen.raw.clone_into(&mut pending.raw_line);

        let is_new_version = version == Some(pending.new_version.as_str());
        pending.has_new_version |= is_new_version;

        // dpkg before 1.16.2 records a fresh package as not-installed (or as config-files of
        // the old version) right after the install line, before unpacking starts; only once
        // the new version was on disk does going back there mean a rollback.
        let rolled_back = match state {
            PackageState::NotInstalled | PackageState::ConfigFiles => pending.has_new_version,
            PackageState::Installed => !is_new_version,
            _ => false,
        };

        if state.is_configured() && is_new_version {
            self.pending.remove(key);
            None
        } else if rolled_back {
            self.pending.remove(key).map(Pending::into_failure)
        } else {
            None
        }
    }

    /// Emits a failure for, and forgets, every pending install whose last state `is_failed`.
    fn judge(&mut self, is_failed: impl Fn(Option<PackageState>) -> bool) -> Vec<PackageChange> {
        let mut failed: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, pending)| is_failed(pending.state))
            .map(|(key, _)| key.clone())
            .collect();
        // Failures decided together are reported in one order, whatever the map's.
        failed.sort_unstable();
        failed
            .iter()
            .filter_map(|key| self.pending.remove(key))
            .map(Pending::into_failure)
            .collect()
    }
}

impl Pending {
    fn into_failure(self) -> PackageChange {
        PackageChange {
            category: Category::PackageInstallFailed,
            package: self.package.name,
            arch: self.package.arch,
            old_version: self.old_version,
            new_version: Some(self.new_version),
            timestamp: self.timestamp,
            raw_line: self.raw_line,
            // Before any status line the package is where dpkg's action left it: unpacking
            // had started, which dpkg records as half-installed.
            last_state: Some(
                self.state
                    .unwrap_or(PackageState::HalfInstalled)
                    .as_str()
                    .to_owned(),
            ),
            logged_run: None,
        }
    }
}

/// The longest `name:arch` key [`with_key`] spells on the stack; longer ones are allocated.
const STACK_KEY_LEN: usize = 128;

/// Calls `f` with the package's key in the pending map, `name` or `name:arch` as the log
/// spells it.
///
/// Three lines in four of a long history look a key up, so a short one is spelled in a
/// buffer on the stack rather than formatted into a fresh string.
fn with_key<R>(package: &PackageRef, f: impl FnOnce(&str) -> R) -> R {
    let Some(arch) = &package.arch else {
        return f(&package.name);
    };
    let name = package.name.as_bytes();
    let len = name.len() + 1 + arch.len();
    if len > STACK_KEY_LEN {
        return f(&package.to_string());
    }

    let mut buffer = [0_u8; STACK_KEY_LEN];
    buffer[..name.len()].copy_from_slice(name);
    buffer[name.len()] = b':';
    buffer[name.len() + 1..len].copy_from_slice(arch.as_bytes());
    // Two strings joined by an ASCII colon are UTF-8, so this borrows the buffer.
    f(&String::from_utf8_lossy(&buffer[..len]))
}

/// Stores a log timestamp as dpkg writes it, so checkpoints stay readable.
mod timestamp_text {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

    pub fn serialize<S: Serializer>(
        time: &NaiveDateTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&time.format(FORMAT))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        NaiveDateTime::parse_from_str(&text, FORMAT).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::parse::dpkg::{corpus, parse_line};

    /// Feeds every line of a log, then ends the run, as a replay of a finished log does.
    fn replay(tracker: &mut Transactions, text: &str) -> Vec<PackageChange> {
        let mut changes = Vec::new();
        for raw in text.lines() {
            match parse_line(raw.as_bytes()) {
                Ok(line) => changes.extend(tracker.feed(&line, raw)),
                Err(err) => panic!("{raw}: {err}"),
            }
        }
        changes.extend(tracker.finish());
        changes
    }

    fn sandbox_log(name: &str) -> String {
        let path = format!("{}/tests/data/{name}.log", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    fn summary(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
                format!(
                    "{} {} {} {}{}",
                    c.category,
                    c.package,
                    version(&c.old_version),
                    version(&c.new_version),
                    c.last_state
                        .as_deref()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn sandbox_lifecycle_tells_upgrades_reinstalls_and_downgrades_apart() {
        let mut tracker = Transactions::new();
        let changes = replay(&mut tracker, &sandbox_log("lifecycle"));
        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-ok - 1.0",
                "package_upgrade fenrir-ok 1.0 2.0",
                "package_reinstall fenrir-ok 2.0 2.0",
                "package_downgrade fenrir-ok 2.0 1.0",
                "package_upgrade fenrir-ok 1.0 1:0.5",
                "package_remove fenrir-ok 1:0.5 -",
                "package_install fenrir-ok 1:0.5 1.0",
                "package_remove fenrir-ok 1.0 -",
                "package_purge fenrir-ok 1.0 -",
            ]
        );
        assert!(changes.iter().all(|c| c.arch.as_deref() == Some("all")));
        assert_eq!((tracker.pending(), tracker.unordered_upgrades()), (0, 0));
    }

    #[test]
    fn failing_postinst_is_reported_when_the_next_run_starts() {
        let mut tracker = Transactions::new();
        let log = sandbox_log("failing-postinst");
        let lines: Vec<&str> = log.lines().collect();
        let mut failure_at = None;
        let mut changes = Vec::new();
        for (index, raw) in lines.iter().enumerate() {
            let line = parse_line(raw.as_bytes()).map_err(|err| format!("{raw}: {err}"));
            let decided = tracker.feed(&line.unwrap_or_else(|err| panic!("{err}")), raw);
            if decided
                .iter()
                .any(|c| c.category == Category::PackageInstallFailed)
            {
                failure_at = Some(index);
            }
            changes.extend(decided);
        }
        changes.extend(tracker.finish());

        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-bad - 1.0",
                "package_install_failed fenrir-bad - 1.0 half-configured",
                "package_install fenrir-ok - 1.0",
            ]
        );
        // Judged at the second run's startup line, reported with the last line dpkg wrote
        // about the package.
        assert_eq!(failure_at, Some(6));
        assert!(lines[6].ends_with(" startup archives install"));
        assert!(changes[1]
            .raw_line
            .ends_with(" status half-configured fenrir-bad:all 1.0"));
        assert_eq!(changes[1].raw_line, lines[5]);
    }

    #[test]
    fn failing_preinst_is_reported_when_dpkg_rolls_back() {
        let mut tracker = Transactions::new();
        let changes = replay(&mut tracker, &sandbox_log("failing-preinst"));
        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-badpre - 1.0",
                "package_install_failed fenrir-badpre - 1.0 not-installed"
            ]
        );
        assert!(changes[1]
            .raw_line
            .ends_with(" status not-installed fenrir-badpre:all <none>"));
    }

    #[test]
    fn upgrade_rolled_back_to_the_old_version_is_a_failure() {
        let mut tracker = Transactions::new();
        let changes = replay(&mut tracker, &sandbox_log("failing-upgrade"));
        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-ok - 1.0",
                "package_upgrade fenrir-ok 1.0 3.0",
                "package_install_failed fenrir-ok 1.0 3.0 installed",
            ]
        );
        assert!(changes[2]
            .raw_line
            .ends_with(" status installed fenrir-ok:all 1.0"));
    }

    #[test]
    fn purge_and_disappear_carry_the_version_that_was_there() {
        let mut tracker = Transactions::new();
        let changes = replay(&mut tracker, &sandbox_log("purge-and-disappear"));
        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-ok - 1.0",
                "package_remove fenrir-ok 1.0 -",
                "package_purge fenrir-ok 1.0 -",
                "package_install fenrir-lone - 1.0",
                "package_install fenrir-heir - 1.0",
                "package_disappear fenrir-lone 1.0 -",
            ]
        );
    }

    #[test]
    fn unpack_run_then_configure_run_is_no_failure() {
        let mut tracker = Transactions::new();
        let changes = replay(&mut tracker, &sandbox_log("unpack-then-configure"));
        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-ok - 1.0",
                "package_upgrade fenrir-ok 1.0 2.0"
            ]
        );
        assert_eq!(tracker.pending(), 0);
    }

    #[test]
    fn unpacked_package_is_judged_only_when_the_run_ends() {
        let log = sandbox_log("unpack-then-configure");
        let unpack_run: Vec<&str> = log.lines().take(4).collect();
        let mut tracker = Transactions::new();
        let mut changes = Vec::new();
        for raw in &unpack_run {
            let line = parse_line(raw.as_bytes()).map_err(|err| err.to_string());
            changes.extend(tracker.feed(&line.unwrap_or_else(|err| panic!("{err}")), raw));
        }
        assert_eq!(summary(&changes), ["package_install fenrir-ok - 1.0"]);
        assert_eq!(tracker.pending(), 1);

        // A new run starting does not judge an unpacked package: apt configures it there.
        let startup = "2026-12-03 20:05:06 startup packages configure";
        let line = parse_line(startup.as_bytes()).map_err(|err| err.to_string());
        assert!(tracker
            .feed(&line.unwrap_or_else(|err| panic!("{err}")), startup)
            .is_empty());
        assert_eq!(tracker.pending(), 1);

        let failures = tracker.finish();
        assert_eq!(
            summary(&failures),
            ["package_install_failed fenrir-ok - 1.0 unpacked"]
        );
        assert_eq!(failures[0].raw_line, unpack_run[3]);
        assert_eq!(tracker.pending(), 0);
        assert!(tracker.finish().is_empty(), "a package is judged once");
    }

    #[test]
    fn pending_installs_survive_a_checkpoint_round_trip() {
        let log = sandbox_log("unpack-then-configure");
        let lines: Vec<&str> = log.lines().collect();
        let (first_run, rest) = lines.split_at(4);

        let mut tracker = Transactions::new();
        for raw in first_run {
            let line = parse_line(raw.as_bytes()).map_err(|err| err.to_string());
            tracker.feed(&line.unwrap_or_else(|err| panic!("{err}")), raw);
        }
        let saved = serde_json::to_string(&tracker).map_err(|err| err.to_string());
        let saved = saved.unwrap_or_else(|err| panic!("{err}"));
        let restored: Result<Transactions, _> = serde_json::from_str(&saved);
        let mut restored = restored.unwrap_or_else(|err| panic!("{err}: {saved}"));
        assert_eq!(restored, tracker);
        assert!(saved.contains("fenrir-ok:all"), "{saved}");

        // Without the checkpoint the configure run could not know the package was pending;
        // with it, the run ends cleanly.
        let changes = replay(&mut restored, &rest.join("\n"));
        assert_eq!(summary(&changes), ["package_upgrade fenrir-ok 1.0 2.0"]);
    }

    #[test]
    fn status_with_arch_finishes_an_install_logged_without_it() {
        // Lines 15-23 of the corpus log teliten/log.pinga: dpkg, bootstrapping itself, names
        // the package first without and then with its architecture.
        let log = "\
2021-03-23 05:26:26 startup archives install
2021-03-23 05:26:26 upgrade dpkg 1.19.7 1.19.7
2021-03-23 05:26:26 status half-configured dpkg 1.19.7
2021-03-23 05:26:26 status unpacked dpkg 1.19.7
2021-03-23 05:26:26 status half-installed dpkg 1.19.7
2021-03-23 05:26:26 status unpacked dpkg:amd64 1.19.7
2021-03-23 05:26:26 configure dpkg:amd64 1.19.7 1.19.7
2021-03-23 05:26:26 status half-configured dpkg:amd64 1.19.7
2021-03-23 05:26:26 status installed dpkg:amd64 1.19.7
";
        let mut tracker = Transactions::new();
        let changes = replay(&mut tracker, log);
        assert_eq!(summary(&changes), ["package_reinstall dpkg 1.19.7 1.19.7"]);
        assert_eq!(changes[0].arch, None);
    }

    #[test]
    fn installs_are_followed_whatever_the_length_of_their_key() {
        // Keys up to the stack buffer's length and past it take different paths to the map.
        for name_len in [1, STACK_KEY_LEN - 6, STACK_KEY_LEN - 5, STACK_KEY_LEN, 300] {
            let name = "p".repeat(name_len);
            let log = format!(
                "2026-05-03 10:00:00 install {name}:all <none> 1.0\n\
                 2026-05-03 10:00:00 status half-installed {name}:all 1.0\n\
                 2026-05-03 10:00:00 status unpacked {name}:all 1.0\n\
                 2026-05-03 10:00:01 install q:all <none> 1.0\n\
                 2026-05-03 10:00:01 status installed {name}:all 1.0\n\
                 2026-05-03 10:00:02 status half-installed q:all 1.0\n\
                 2026-05-03 10:00:02 status not-installed q:all <none>\n"
            );
            let mut tracker = Transactions::new();
            let changes = replay(&mut tracker, &log);
            assert_eq!(
                summary(&changes),
                [
                    format!("package_install {name} - 1.0"),
                    "package_install q - 1.0".to_owned(),
                    "package_install_failed q - 1.0 not-installed".to_owned(),
                ],
                "a name of {name_len} bytes"
            );
            assert_eq!(tracker.pending(), 0, "a name of {name_len} bytes");
        }
    }

    #[test]
    fn unorderable_versions_fall_back_to_spelling() {
        let mut tracker = Transactions::new();
        let package = PackageRef {
            name: "vim".to_owned(),
            arch: None,
        };
        let line = |old: &str, new: &str| LogLine {
            timestamp: NaiveDateTime::default(),
            kind: LineKind::Action {
                action: Action::Upgrade,
                package: package.clone(),
                old_version: Some(old.to_owned()),
                new_version: Some(new.to_owned()),
            },
        };
        let same = tracker.feed(&line("1.0 beta", "1.0 beta"), "");
        let other = tracker.feed(&line("1.0 beta", "0.9"), "");
        assert_eq!(same[0].category, Category::PackageReinstall);
        assert_eq!(other[0].category, Category::PackageUpgrade);
        assert_eq!(tracker.unordered_upgrades(), 2);
    }

    /// Counts from nothing but the action word and the spelling of the versions.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct WordCounts {
        install: usize,
        upgrade_same_spelling: usize,
        upgrade_other_spelling: usize,
        remove: usize,
        purge: usize,
        disappear: usize,
    }

    fn word_counts(text: &str) -> WordCounts {
        let mut counts = WordCounts::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.get(2..) {
                Some(["install", ..]) => counts.install += 1,
                Some(["upgrade", _, old, new]) if old == new => counts.upgrade_same_spelling += 1,
                Some(["upgrade", ..]) => counts.upgrade_other_spelling += 1,
                Some(["remove", ..]) => counts.remove += 1,
                Some(["purge", ..]) => counts.purge += 1,
                Some(["disappear", ..]) => counts.disappear += 1,
                _ => {}
            }
        }
        counts
    }

    #[test]
    fn corpus_changes_match_the_action_lines() {
        let Some(files) = corpus::files() else { return };
        let mut failures = Vec::new();
        let mut totals: BTreeMap<&str, usize> = BTreeMap::new();

        for (name, bytes) in &files {
            let text = String::from_utf8_lossy(bytes);
            let mut tracker = Transactions::new();
            let changes = replay(&mut tracker, &text);
            let count = |category| changes.iter().filter(|c| c.category == category).count();

            let words = word_counts(&text);
            let decided = WordCounts {
                install: count(Category::PackageInstall),
                upgrade_same_spelling: count(Category::PackageReinstall),
                upgrade_other_spelling: count(Category::PackageUpgrade)
                    + count(Category::PackageDowngrade),
                remove: count(Category::PackageRemove),
                purge: count(Category::PackagePurge),
                disappear: count(Category::PackageDisappear),
            };
            assert_eq!(decided, words, "{name}");
            assert_eq!(
                (tracker.pending(), tracker.unordered_upgrades()),
                (0, 0),
                "{name}"
            );

            for change in &changes {
                *totals.entry(change.category.as_str()).or_insert(0) += 1;
            }
            failures.extend(
                changes
                    .into_iter()
                    .filter(|c| c.category == Category::PackageInstallFailed)
                    .map(|c| {
                        format!(
                            "{name}: {} ({})",
                            c.raw_line,
                            c.last_state.unwrap_or_default()
                        )
                    }),
            );
        }

        println!("{totals:?}");

        // Real failures, each checked by reading the lines around it: unpack errors rolled
        // back to not-installed, postinsts that left half-configured packages behind when the
        // next run started, and a package unpacked and never configured before the log ends.
        let lucchouina = "lucchouina__RimRoot_Ubuntu_12.04lts_x86_64__var__log__dpkg.log";
        let pinga = "teliten__log.pinga__dpkg.log";
        let expected: Vec<String> = [
            (
                lucchouina,
                "2013-01-10 11:17:18 status half-configured kexec-tools 1:2.0.2-3ubuntu4.1",
                "half-configured",
            ),
            (
                lucchouina,
                "2013-01-10 12:14:06 status half-configured x11-common 1:7.6+12ubuntu1",
                "half-configured",
            ),
            (
                lucchouina,
                "2013-01-10 13:01:43 status half-configured ntp 1:4.2.6.p3+dfsg-1ubuntu3.1",
                "half-configured",
            ),
            (
                lucchouina,
                "2013-05-15 12:29:32 status half-configured nfs-common 1:1.2.5-3ubuntu3.1",
                "half-configured",
            ),
            (
                lucchouina,
                "2013-01-10 11:17:17 status unpacked kdump-tools 1.3.7-2",
                "unpacked",
            ),
            (
                pinga,
                "2021-08-19 14:32:46 status not-installed keybase:amd64 <none>",
                "not-installed",
            ),
            (
                pinga,
                "2021-08-19 14:39:07 status not-installed keybase:amd64 <none>",
                "not-installed",
            ),
            (
                pinga,
                "2021-08-20 23:06:22 status not-installed python-setuptools:all <none>",
                "not-installed",
            ),
        ]
        .iter()
        .map(|(file, line, state)| format!("{file}: {line} ({state})"))
        .collect();

        // The fox-it and plaso logs are excerpts cut in the middle of a run, so what they
        // left unfinished is judged when the input ends.
        let (excerpts, complete): (Vec<&String>, Vec<&String>) = failures
            .iter()
            .partition(|f| f.starts_with("fox-it") || f.starts_with("log2timeline"));
        assert_eq!(complete, expected.iter().collect::<Vec<_>>());
        assert_eq!(excerpts.len(), 79);
        assert!(excerpts
            .iter()
            .all(|f| f.ends_with("(unpacked)") || f.starts_with("log2timeline")));
    }

    #[test]
    fn old_dpkg_not_installed_before_unpacking_is_no_rollback() {
        // From the corpus log lucchouina/RimRoot_Ubuntu_12.04lts (dpkg 1.16.1): the package
        // is recorded as not-installed between its install line and its unpacking.
        let log = "\
2013-01-07 12:42:14 startup archives unpack
2013-01-07 12:42:14 install ntfs-3g <none> 1:2012.1.15AR.1-1ubuntu1
2013-01-07 12:42:14 status triggers-pending initramfs-tools 0.99ubuntu13
2013-01-07 12:42:14 status not-installed ntfs-3g <none>
2013-01-07 12:42:14 status half-installed ntfs-3g 1:2012.1.15AR.1-1ubuntu1
2013-01-07 12:42:14 status unpacked ntfs-3g 1:2012.1.15AR.1-1ubuntu1
2013-01-07 12:42:14 status unpacked ntfs-3g 1:2012.1.15AR.1-1ubuntu1
2013-01-07 12:42:28 startup packages configure
2013-01-07 12:42:28 configure ntfs-3g 1:2012.1.15AR.1-1ubuntu1 <none>
2013-01-07 12:42:28 status unpacked ntfs-3g 1:2012.1.15AR.1-1ubuntu1
2013-01-07 12:42:28 status half-configured ntfs-3g 1:2012.1.15AR.1-1ubuntu1
2013-01-07 12:42:29 status triggers-awaited ntfs-3g 1:2012.1.15AR.1-1ubuntu1
";
        let mut tracker = Transactions::new();
        let changes = replay(&mut tracker, log);
        assert_eq!(
            summary(&changes),
            ["package_install ntfs-3g - 1:2012.1.15AR.1-1ubuntu1"]
        );
    }
}
