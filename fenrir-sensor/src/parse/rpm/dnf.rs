//! dnf's log of rpm transactions (`/var/log/dnf.rpm.log`, dnf 4).
//!
//! In: one line at a time. Out: package changes. State: upgrades and downgrades whose new
//! package is on disk while the old one has not yet been cleaned up.
//!
//! dnf writes `<time> <LEVEL> <message>`, the time as `2021-03-02T08:05:29Z` (UTC, older dnf)
//! or `2023-05-01T10:00:00+0200` (local with offset), and for every package of a transaction a
//! `SUBDEBUG <Action>: <package>` line with `<package>` as `name-[epoch:]version-release.arch`:
//!
//! ```text
//! 2021-03-02T08:05:29Z INFO --- logging initialized ---
//! 2021-03-02T08:05:58Z SUBDEBUG Installed: kernel-core-4.18.0-240.15.1.el8_3.x86_64
//! 2021-03-02T08:05:29Z SUBDEBUG Upgrade: tzdata-2021a-1.el8.noarch
//! 2021-03-02T08:07:01Z SUBDEBUG Upgraded: tzdata-2020d-1.el8.noarch
//! 2020-10-31T05:09:36Z SUBDEBUG Erase: linux-firmware-20200619-99.git3890db36.el8.noarch
//! ```
//!
//! An upgrade is two lines: `Upgrade:` when the new package is installed, `Upgraded:` when
//! the old one is erased in the transaction's clean-up phase, often many lines later. The
//! event is decided at the second line, with both versions and the first line's time and
//! text; an `Upgrade:` never paired (the transaction stopped halfway) is reported without its
//! old version when the next dnf run starts or the run is known to have ended. `Downgrade:`
//! and `Downgraded:` pair the same way; `Reinstall:` is reported at once and `Reinstalled:`
//! adds nothing; `Obsolete:` installs a package that replaces another, `Obsoleted:` removes
//! the one replaced. Every other message (scriptlet output, the start marker) changes
//! nothing, and lines without a time stamp are the continuation of a multi-line message.
//!
//! TODO: dnf5 writes its own `/var/log/dnf5.log` instead, in a format not checked here
//! against a real dnf5 (Debian has none); hosts with dnf5 alone report no dnf changes.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::Nevra;
use crate::event::Category;
use crate::parse::manager::{
    line_text, local_from_utc, local_time, Format, LineError, Manager, RunStart,
};
use crate::parse::{LoggedRun, PackageChange};

/// The message dnf writes when a run starts.
const START_MARKER: &str = "--- logging initialized ---";

/// What a package line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DnfAction {
    Installed,
    Upgrade,
    Upgraded,
    Downgrade,
    Downgraded,
    Reinstall,
    Reinstalled,
    Erase,
    Obsolete,
    Obsoleted,
}

impl DnfAction {
    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "Installed" => Self::Installed,
            "Upgrade" => Self::Upgrade,
            "Upgraded" => Self::Upgraded,
            "Downgrade" => Self::Downgrade,
            "Downgraded" => Self::Downgraded,
            "Reinstall" => Self::Reinstall,
            "Reinstalled" => Self::Reinstalled,
            "Erase" => Self::Erase,
            "Obsolete" => Self::Obsolete,
            "Obsoleted" => Self::Obsoleted,
            _ => return None,
        })
    }
}

/// One line of dnf.rpm.log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnfLine {
    /// The host's local wall-clock time of the line.
    pub timestamp: NaiveDateTime,
    pub kind: DnfLineKind,
}

/// What a line of dnf.rpm.log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnfLineKind {
    /// A package action of a transaction.
    Package { action: DnfAction, package: Nevra },
    /// A dnf run started.
    Start,
    /// Any other message.
    Other,
}

/// Parses one line of dnf.rpm.log.
///
/// # Errors
/// A line without dnf's time stamp and level, or a package action whose package cannot be
/// split into its parts.
pub fn parse_line(bytes: &[u8]) -> Result<DnfLine, LineError> {
    let text = line_text(bytes)?;
    let (stamp, rest) = text.split_once(' ').ok_or(LineError::BadTimestamp)?;
    let timestamp = parse_timestamp(stamp).ok_or(LineError::BadTimestamp)?;
    let (level, message) = rest.split_once(' ').unwrap_or((rest, ""));
    if level.is_empty() || !level.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(LineError::MissingField { field: "level" });
    }

    let kind = if message == START_MARKER {
        DnfLineKind::Start
    } else {
        match message
            .split_once(": ")
            .and_then(|(word, package)| Some((DnfAction::from_word(word)?, package)))
        {
            Some((action, package)) => DnfLineKind::Package {
                action,
                package: Nevra::parse(package.trim_end())?,
            },
            None => DnfLineKind::Other,
        }
    };
    Ok(DnfLine { timestamp, kind })
}

/// Reads dnf's time stamp: `Z` for UTC, or an offset as `+HHMM` or `+HH:MM`.
fn parse_timestamp(stamp: &str) -> Option<NaiveDateTime> {
    if let Some(utc) = stamp.strip_suffix('Z') {
        let time = NaiveDateTime::parse_from_str(utc, "%Y-%m-%dT%H:%M:%S").ok()?;
        return Some(local_from_utc(time));
    }
    let time = DateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%z")
        .or_else(|_| DateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%:z"))
        .ok()?;
    Some(local_time(time))
}

/// Tells whether a line looks like dnf.rpm.log's: its time stamp and an upper-case level.
#[must_use]
pub fn is_typical(bytes: &[u8]) -> bool {
    parse_line(bytes).is_ok()
}

/// How far apart dnf's two logs may stamp the start line of one run.
const START_SLACK: chrono::Duration = chrono::Duration::seconds(1);

/// The commands of dnf's runs, read from dnf.log, which dnf writes beside dnf.rpm.log: every
/// run opens both logs with the same start line, and dnf.log then names its command
/// (`DDEBUG Command: dnf install vim`).
#[derive(Debug, Clone, Default)]
pub struct DnfCommands {
    /// Each run's start time and command, in the order read.
    runs: Vec<(NaiveDateTime, Option<String>)>,
}

impl DnfCommands {
    /// Reads one line of dnf.log; lines that are not a start or a command are ignored.
    pub fn line(&mut self, bytes: &[u8]) {
        let Ok(text) = line_text(bytes) else {
            return;
        };
        let Some((stamp, rest)) = text.split_once(' ') else {
            return;
        };
        let Some(timestamp) = parse_timestamp(stamp) else {
            return;
        };
        let message = rest.split_once(' ').map_or("", |(_, message)| message);
        if message == START_MARKER {
            self.runs.push((timestamp, None));
        } else if let Some(command) = message.strip_prefix("Command: ") {
            if let Some((_, slot @ None)) = self.runs.last_mut() {
                *slot = Some(command.trim_end().to_owned());
            }
        }
    }

    /// Returns the command of the run whose start line dnf.rpm.log stamped `started`: the
    /// one run of dnf.log that started in the same second or, when none did, the one that
    /// started within a second of it (the two lines straddled a second). Two runs that fit
    /// equally cannot be told apart, and give none.
    #[must_use]
    pub fn command_of(&self, started: NaiveDateTime) -> Option<&str> {
        let only = |slack: chrono::Duration| {
            let mut near = self
                .runs
                .iter()
                .filter(move |(time, _)| (*time - started).abs() <= slack);
            match (near.next(), near.next()) {
                (Some(run), None) => Some(Some(run)),
                (None, _) => None,
                (Some(_), Some(_)) => Some(None),
            }
        };
        let run = only(chrono::Duration::zero()).or_else(|| only(START_SLACK))??;
        run.1.as_deref()
    }

    /// Returns how many runs were read.
    #[must_use]
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Returns whether no run was read.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// A new package on disk whose old version has not been erased yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    category: Category,
    name: String,
    arch: Option<String>,
    new_version: String,
    #[serde(with = "crate::parse::manager::timestamp_text")]
    timestamp: NaiveDateTime,
    raw_line: String,
}

impl Pending {
    fn into_change(self, old_version: Option<String>) -> PackageChange {
        PackageChange {
            category: self.category,
            package: self.name,
            arch: self.arch,
            old_version,
            new_version: Some(self.new_version),
            timestamp: self.timestamp,
            raw_line: self.raw_line,
            last_state: None,
            logged_run: None,
        }
    }
}

/// Follows dnf.rpm.log and pairs the two halves of upgrades and downgrades.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnfLog {
    /// Upgrades and downgrades waiting for their old package, keyed by `name.arch`.
    pending: BTreeMap<String, Pending>,
    /// The run the last start line opened, until it is taken; dnf writes no command.
    #[serde(skip)]
    run_start: Option<RunStart>,
    /// The run the package lines belong to: the last start line's, with no command, which
    /// is in dnf.log beside this log.
    #[serde(skip)]
    run: Option<LoggedRun>,
}

impl DnfLog {
    fn change(
        category: Category,
        package: &Nevra,
        versions: (Option<String>, Option<String>),
        line: &DnfLine,
        raw: &str,
    ) -> PackageChange {
        PackageChange {
            category,
            package: package.name.clone(),
            arch: package.arch.clone(),
            old_version: versions.0,
            new_version: versions.1,
            timestamp: line.timestamp,
            raw_line: raw.to_owned(),
            last_state: None,
            logged_run: None,
        }
    }

    /// Finds the pending half an old package completes: the same `name.arch`, or the one
    /// pending package of that name when the architecture changed.
    fn take_pending(&mut self, package: &Nevra, category: Category) -> Option<Pending> {
        let key = package.key();
        if self
            .pending
            .get(&key)
            .is_some_and(|p| p.category == category)
        {
            return self.pending.remove(&key);
        }
        let mut same_name = self
            .pending
            .iter()
            .filter(|(_, p)| p.name == package.name && p.category == category)
            .map(|(key, _)| key.clone());
        match (same_name.next(), same_name.next()) {
            (Some(key), None) => self.pending.remove(&key),
            _ => None,
        }
    }

    fn feed_package(
        &mut self,
        action: DnfAction,
        package: &Nevra,
        line: &DnfLine,
        raw: &str,
    ) -> Vec<PackageChange> {
        let version = package.evr();
        match action {
            DnfAction::Installed | DnfAction::Obsolete => vec![Self::change(
                Category::PackageInstall,
                package,
                (None, Some(version)),
                line,
                raw,
            )],
            DnfAction::Reinstall => vec![Self::change(
                Category::PackageReinstall,
                package,
                (Some(version.clone()), Some(version)),
                line,
                raw,
            )],
            DnfAction::Erase | DnfAction::Obsoleted => vec![Self::change(
                Category::PackageRemove,
                package,
                (Some(version), None),
                line,
                raw,
            )],
            DnfAction::Reinstalled => Vec::new(),
            DnfAction::Upgrade | DnfAction::Downgrade => {
                let category = if action == DnfAction::Upgrade {
                    Category::PackageUpgrade
                } else {
                    Category::PackageDowngrade
                };
                let pending = Pending {
                    category,
                    name: package.name.clone(),
                    arch: package.arch.clone(),
                    new_version: version,
                    timestamp: line.timestamp,
                    raw_line: raw.to_owned(),
                };
                // A half still waiting for the same package can no longer be completed.
                self.pending
                    .insert(package.key(), pending)
                    .map(|unpaired| unpaired.into_change(None))
                    .into_iter()
                    .collect()
            }
            DnfAction::Upgraded | DnfAction::Downgraded => {
                let category = if action == DnfAction::Upgraded {
                    Category::PackageUpgrade
                } else {
                    Category::PackageDowngrade
                };
                match self.take_pending(package, category) {
                    Some(pending) => vec![pending.into_change(Some(version))],
                    // The new half was written before the sensor read this log.
                    None => vec![Self::change(
                        category,
                        package,
                        (Some(version), None),
                        line,
                        raw,
                    )],
                }
            }
        }
    }
}

impl Format for DnfLog {
    const MANAGER: Manager = Manager::Dnf;

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<PackageChange>, LineError> {
        let line = parse_line(bytes)?;
        let raw = String::from_utf8_lossy(bytes);
        Ok(match &line.kind {
            DnfLineKind::Package { action, package } => {
                let mut changes = self.feed_package(*action, package, &line, &raw);
                // A pending half is completed or given up within the run that wrote it.
                for change in &mut changes {
                    change.logged_run.clone_from(&self.run);
                }
                changes
            }
            // A new dnf run: the previous one's transaction is over.
            DnfLineKind::Start => {
                self.run_start = Some(RunStart {
                    command: String::new(),
                    timestamp: line.timestamp,
                });
                let unpaired = self.finish();
                self.run = Some(LoggedRun {
                    started: line.timestamp,
                    command: None,
                    user: None,
                });
                unpaired
            }
            DnfLineKind::Other => Vec::new(),
        })
    }

    fn finish(&mut self) -> Vec<PackageChange> {
        let mut unpaired: Vec<Pending> = std::mem::take(&mut self.pending).into_values().collect();
        unpaired.sort_by_key(|p| p.timestamp);
        let mut changes: Vec<PackageChange> =
            unpaired.into_iter().map(|p| p.into_change(None)).collect();
        for change in &mut changes {
            change.logged_run.clone_from(&self.run);
        }
        changes
    }

    // Only a file's own lines say which run its lines belong to: the files replay is given
    // may come from different hosts, and a run cut by a rotation is rare.
    fn begin_file(&mut self, _path: &Path) {
        self.run = None;
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn has_state(&self) -> bool {
        self.has_pending()
    }

    fn take_run_start(&mut self) -> Option<RunStart> {
        self.run_start.take()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::parse::dpkg::corpus::lines;
    use crate::parse::manager::{corpus, ChangeLog, Reader};

    fn read(text: &str) -> (Vec<PackageChange>, Reader<DnfLog>) {
        let (mut changes, mut reader) = corpus::read(text.as_bytes(), "dnf.rpm.log");
        changes.extend(reader.finish());
        (changes, reader)
    }

    fn summary(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
                format!(
                    "{} {} {} {} {}",
                    c.category,
                    c.package,
                    c.arch.as_deref().unwrap_or("-"),
                    v(&c.old_version),
                    v(&c.new_version)
                )
            })
            .collect()
    }

    #[test]
    fn commands_come_from_dnf_log_for_the_run_that_made_each_change() {
        let (Some((_, rpm_log)), Some((_, dnf_log))) = (
            corpus::file("dnf", "dnf.rpm.log"),
            corpus::file("dnf", "__dnf.log"),
        ) else {
            return;
        };
        let (changes, _) = read(&String::from_utf8_lossy(&rpm_log));
        let mut commands = DnfCommands::default();
        for line in lines(&dnf_log) {
            commands.line(line);
        }
        assert_eq!(commands.len(), 10);
        let command_of = |package: &str| {
            let change = changes
                .iter()
                .find(|c| c.package == package)
                .expect("the corpus has the package");
            let run = change.logged_run.as_ref().expect("every change has a run");
            assert_eq!(run.command, None, "dnf.rpm.log names no command");
            commands.command_of(run.started).map(str::to_owned)
        };
        assert_eq!(
            command_of("linux-firmware").as_deref(),
            Some("yum -C -y --noplugins remove linux-firmware")
        );
        assert_eq!(command_of("systemd-udev").as_deref(), Some("yum update -y"));
        assert_eq!(
            command_of("libwebp").as_deref(),
            Some("yum install -y nginx")
        );

        // Two runs in the same second cannot be told apart; a start without a command has none.
        let mut twice = DnfCommands::default();
        for line in [
            "2021-03-02T08:10:50Z INFO --- logging initialized ---",
            "2021-03-02T08:10:50Z DDEBUG Command: dnf install a",
            "2021-03-02T08:10:50Z INFO --- logging initialized ---",
            "2021-03-02T08:10:50Z DDEBUG Command: dnf install b",
            "2021-03-02T08:20:00Z INFO --- logging initialized ---",
            "garbage \u{1b}",
        ] {
            twice.line(line.as_bytes());
        }
        let at = |stamp: &str| parse_timestamp(stamp).expect("valid stamp");
        assert_eq!(twice.command_of(at("2021-03-02T08:10:50Z")), None);
        // A second apart, each run has its own.
        let mut apart = DnfCommands::default();
        for line in [
            "2021-03-02T08:10:50Z INFO --- logging initialized ---",
            "2021-03-02T08:10:50Z DDEBUG Command: dnf install a",
            "2021-03-02T08:10:51Z INFO --- logging initialized ---",
            "2021-03-02T08:10:51Z DDEBUG Command: dnf remove a",
        ] {
            apart.line(line.as_bytes());
        }
        assert_eq!(
            apart.command_of(at("2021-03-02T08:10:50Z")),
            Some("dnf install a")
        );
        assert_eq!(
            apart.command_of(at("2021-03-02T08:10:51Z")),
            Some("dnf remove a")
        );
        assert_eq!(
            apart.command_of(at("2021-03-02T08:10:52Z")),
            Some("dnf remove a")
        );
        assert_eq!(
            apart.command_of(at("2021-03-02T08:10:49Z")),
            Some("dnf install a")
        );
        assert_eq!(twice.command_of(at("2021-03-02T08:20:00Z")), None);
        assert_eq!(twice.command_of(at("2021-03-02T09:00:00Z")), None);
    }

    #[test]
    fn a_real_tool_session_reads_as_its_changes() {
        // Written by Debian's dnf 4.14 against a sandbox root.
        let log = "\
2026-12-04T02:11:43+0000 INFO --- logging initialized ---
2026-12-04T02:11:43+0000 SUBDEBUG Installed: fenrir-hello-1.0-1.noarch
2026-12-04T02:11:55+0000 INFO --- logging initialized ---
2026-12-04T02:11:55+0000 SUBDEBUG Upgrade: fenrir-hello-2.0-1.noarch
2026-12-04T02:11:55+0000 SUBDEBUG Upgraded: fenrir-hello-1.0-1.noarch
2026-12-04T02:11:55+0000 INFO --- logging initialized ---
2026-12-04T02:11:55+0000 SUBDEBUG Reinstall: fenrir-hello-2.0-1.noarch
2026-12-04T02:11:55+0000 SUBDEBUG Reinstalled: fenrir-hello-2.0-1.noarch
2026-12-04T02:11:56+0000 INFO --- logging initialized ---
2026-12-04T02:11:56+0000 SUBDEBUG Downgrade: fenrir-hello-1.0-1.noarch
2026-12-04T02:11:56+0000 SUBDEBUG Downgraded: fenrir-hello-2.0-1.noarch
2026-12-04T02:11:56+0000 INFO --- logging initialized ---
2026-12-04T02:11:56+0000 SUBDEBUG Erase: fenrir-hello-1.0-1.noarch
";
        let (changes, reader) = read(log);
        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-hello noarch - 1.0-1",
                "package_upgrade fenrir-hello noarch 1.0-1 2.0-1",
                "package_reinstall fenrir-hello noarch 2.0-1 2.0-1",
                "package_downgrade fenrir-hello noarch 2.0-1 1.0-1",
                "package_remove fenrir-hello noarch 1.0-1 -",
            ]
        );
        assert!(changes[1]
            .raw_line
            .ends_with("Upgrade: fenrir-hello-2.0-1.noarch"));
        assert_eq!(reader.stats().malformed, 0);
    }

    #[test]
    fn an_upgrade_never_cleaned_up_is_reported_when_the_next_run_starts() {
        let log = "\
2021-03-02T08:05:29Z SUBDEBUG Upgrade: tzdata-2021a-1.el8.noarch
2021-03-02T08:06:00Z INFO --- logging initialized ---
";
        let mut reader = Reader::<DnfLog>::default();
        let mut lines = log.lines();
        let first = reader.line(lines.next().unwrap_or_default().as_bytes(), "l".as_ref(), 1);
        assert!(first.is_empty());
        assert!(reader.has_pending());
        let saved = reader.saved_state();
        assert!(saved.is_some());

        // A restart with the saved state still knows the half.
        let mut resumed = Reader::<DnfLog>::resume(saved.as_ref());
        let second = resumed.line(lines.next().unwrap_or_default().as_bytes(), "l".as_ref(), 2);
        assert_eq!(
            summary(&second),
            ["package_upgrade tzdata noarch - 2021a-1.el8"]
        );
        assert!(!resumed.has_pending());
    }

    #[test]
    fn timestamps_are_read_in_utc_and_with_offsets() {
        let utc = parse_line(b"2021-03-02T08:05:29Z INFO x").map(|l| l.timestamp);
        let offset = parse_line(b"2021-03-02T10:05:29+0200 INFO x").map(|l| l.timestamp);
        let colon = parse_line(b"2021-03-02T03:05:29-05:00 INFO x").map(|l| l.timestamp);
        assert!(utc.is_ok());
        assert_eq!(utc, offset);
        assert_eq!(utc, colon);
    }

    #[test]
    fn malformed_lines_are_rejected_with_the_reason() {
        let cases: [(&[u8], LineError); 7] = [
            (b"", LineError::Empty),
            (b"Failed to add dependency on unit", LineError::BadTimestamp),
            (b"2021-13-02T08:05:29Z INFO x", LineError::BadTimestamp),
            (
                b"2021-03-02T08:05:29Z info x",
                LineError::MissingField { field: "level" },
            ),
            (
                b"2021-03-02T08:05:29Z SUBDEBUG Upgrade: tzdata",
                LineError::BadPackage {
                    text: "tzdata".to_owned(),
                },
            ),
            (
                b"2021-03-02T08:05:29Z INFO \xff",
                LineError::InvalidUtf8 { offset: 26 },
            ),
            (b"2021-03-02T08:05:29Z", LineError::BadTimestamp),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(line).err(),
                Some(expected),
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn the_corpus_log_reads_as_its_package_lines_say() {
        let Some((name, bytes)) = corpus::file("dnf", "dnf.rpm.log") else {
            return;
        };
        let text = String::from_utf8_lossy(&bytes);
        let (changes, reader) = read(&text);

        // Expectations from the action words alone: each `Upgrade:` pairs with one
        // `Upgraded:` of the same package, so each pair is one upgrade.
        let mut words: BTreeMap<&str, usize> = BTreeMap::new();
        for line in text.lines() {
            if let Some(word) = line.split(' ').nth(2) {
                *words.entry(word).or_default() += 1;
            }
        }
        let count = |category| changes.iter().filter(|c| c.category == category).count();
        assert_eq!(
            count(Category::PackageInstall),
            words["Installed:"],
            "{name}"
        );
        assert_eq!(count(Category::PackageRemove), words["Erase:"]);
        assert_eq!(words["Upgrade:"], words["Upgraded:"]);
        assert_eq!(count(Category::PackageUpgrade), words["Upgrade:"]);
        assert_eq!(changes.len(), 93 + 15 + 52);
        assert!(changes
            .iter()
            .filter(|c| c.category == Category::PackageUpgrade)
            .all(|c| c.old_version.is_some() && c.new_version.is_some()));

        // One upgrade read by hand: the pair for dbus-common, an epoch-1 package.
        let dbus = changes
            .iter()
            .find(|c| c.package == "dbus-common")
            .map(|c| (c.old_version.clone(), c.new_version.clone(), c.arch.clone()));
        assert_eq!(
            dbus,
            Some((
                Some("1:1.12.8-11.el8".to_owned()),
                Some("1:1.12.8-12.el8_3".to_owned()),
                Some("noarch".to_owned())
            ))
        );

        // Lines without a time stamp continue multi-line scriptlet output.
        let untimed = lines(&bytes)
            .filter(|line| !line.starts_with(b"20"))
            .count() as u64;
        assert_eq!(reader.stats().malformed, untimed);
        assert!(!reader.has_pending());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = DnfLog::default().feed(&bytes);
        }

        #[test]
        fn well_formed_installs_keep_their_fields(
            name in "[a-z][a-z0-9_+-]{0,20}[a-z]",
            epoch in prop::option::of(0u32..20),
            version in "[0-9][0-9a-z.+~^]{0,10}",
            release in "[0-9][0-9a-z._]{0,10}",
            arch in prop::sample::select(vec!["x86_64", "noarch", "aarch64", "i686"]),
        ) {
            let evr = match epoch {
                Some(e) => format!("{e}:{version}-{release}"),
                None => format!("{version}-{release}"),
            };
            let line = format!("2021-03-02T08:05:29Z SUBDEBUG Installed: {name}-{evr}.{arch}");
            let changes = DnfLog::default()
                .feed(line.as_bytes())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(changes.len(), 1);
            prop_assert_eq!(&changes[0].package, &name);
            prop_assert_eq!(changes[0].new_version.as_deref(), Some(evr.as_str()));
            prop_assert_eq!(changes[0].arch.as_deref(), Some(arch));
        }
    }
}
