//! yum's log (`/var/log/yum.log`, yum 3 on RHEL/CentOS 5–7 and Amazon Linux).
//!
//! In: one line at a time. Out: package changes. State: the year the lines are in (yum does
//! not write it) and the versions the log has shown installed.
//!
//! yum writes `<Mon> <DD> <HH:MM:SS> <Action>: <package>`, local time without a year, with
//! `<package>` as `[epoch:]name-version-release.arch`; older yum names erased packages by
//! name only:
//!
//! ```text
//! Dec 01 14:37:39 Installed: 1:telnet-0.17-48.el6.x86_64
//! Dec 01 14:38:59 Updated: sysstat-9.0.4-31.el6.x86_64
//! Oct 01 01:16:31 Erased: 32:bind-utils-9.11.4-9.P2.el7.x86_64
//! Nov 29 10:37:18 Erased: tree
//! ```
//!
//! `Updated:` is an upgrade, `Erased:` and `Obsoleted:` removals. `Installed:` is what yum
//! writes for installs, reinstalls and downgrades alike, so it is decided with rpm's version
//! order against the versions the log has shown: the same version is a reinstall, an older
//! one a downgrade, a newer one an install beside the old (install-only packages such as
//! kernels; a real upgrade is written `Updated:`).
//!
//! The year of each line is inferred: a file read from its start begins in the year that
//! makes its last line fall before the file's modification time, counting a year each time
//! the date jumps back by months; a line read live belongs to the latest year that does not
//! put it in the future.

use std::cmp::Ordering;
use std::path::Path;

use chrono::{Datelike as _, Duration, Local, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};

use super::{version, Installed, Nevra};
use crate::event::Category;
use crate::parse::manager::{line_text, Format, LineError, Manager};
use crate::parse::PackageChange;

/// How far back the date must jump for the lines to have entered a new year.
const YEAR_ROLLOVER: i64 = 180;

/// What a yum.log line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YumAction {
    Installed,
    Updated,
    Erased,
    Obsoleted,
}

/// One yum.log line, before a year is given to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YumLine {
    pub month: u32,
    pub day: u32,
    pub time: NaiveTime,
    pub action: YumAction,
    /// The package, or `None` with `bare_name` set for an old yum's erased name.
    pub package: Option<Nevra>,
    pub bare_name: Option<String>,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses one yum.log line.
///
/// # Errors
/// A line without yum's time stamp, action and package.
pub fn parse_line(bytes: &[u8]) -> Result<YumLine, LineError> {
    let text = line_text(bytes)?;
    let (month, day, time, rest) = parse_stamp(text).ok_or(LineError::BadTimestamp)?;
    let (word, package) = rest
        .split_once(": ")
        .ok_or(LineError::MissingField { field: "action" })?;
    let action = match word {
        "Installed" => YumAction::Installed,
        "Updated" => YumAction::Updated,
        "Erased" => YumAction::Erased,
        "Obsoleted" => YumAction::Obsoleted,
        other => {
            return Err(LineError::UnknownAction {
                text: crate::parse::manager::quote(other),
            })
        }
    };
    let package = package.trim_end();
    let (package, bare_name) = match Nevra::parse(package) {
        Ok(nevra) => (Some(nevra), None),
        Err(_) if action == YumAction::Erased && is_bare_name(package) => {
            (None, Some(package.to_owned()))
        }
        Err(err) => return Err(err),
    };
    Ok(YumLine {
        month,
        day,
        time,
        action,
        package,
        bare_name,
    })
}

fn is_bare_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b))
}

/// Reads `Mon DD HH:MM:SS ` and returns the rest.
fn parse_stamp(text: &str) -> Option<(u32, u32, NaiveTime, &str)> {
    let month_name = text.get(..3)?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let rest = text.get(3..)?.strip_prefix(' ')?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (day, rest) = rest.split_once(' ')?;
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let (time, rest) = rest.split_once(' ')?;
    let time = NaiveTime::parse_from_str(time, "%H:%M:%S").ok()?;
    Some((month, day, time, rest))
}

/// Tells whether a line looks like yum.log's.
#[must_use]
pub fn is_typical(bytes: &[u8]) -> bool {
    parse_line(bytes).is_ok()
}

/// Gives a yum line its date in `year`; `None` for a day that year does not have.
fn dated(year: i32, month: u32, day: u32, time: NaiveTime) -> Option<NaiveDateTime> {
    NaiveDate::from_ymd_opt(year, month, day).map(|date| date.and_time(time))
}

/// Returns the year the first line of a log belongs to, given its lines and the time its
/// last line can be at latest.
#[must_use]
pub fn first_year<'a>(lines: impl IntoIterator<Item = &'a [u8]>, latest: NaiveDateTime) -> i32 {
    // Rollovers are counted in a leap year so that every February 29 has a date.
    let mut rollovers = 0;
    let mut previous: Option<NaiveDateTime> = None;
    for line in lines {
        let Ok(line) = parse_line(line) else { continue };
        let Some(at) = dated(2000 + 4 * rollovers, line.month, line.day, line.time) else {
            continue;
        };
        let at = match previous {
            Some(previous) if at < previous - Duration::days(YEAR_ROLLOVER) => {
                rollovers += 1;
                dated(2000 + 4 * rollovers, line.month, line.day, line.time).unwrap_or(at)
            }
            _ => at,
        };
        previous = Some(at);
    }
    let Some(last) = previous else {
        return latest.year();
    };
    let last_year = if (last.month(), last.day()) > (latest.month(), latest.day()) {
        latest.year() - 1
    } else {
        latest.year()
    };
    last_year - rollovers
}

/// Follows yum.log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct YumLog {
    /// The year of the line read last, once known.
    year: Option<i32>,
    /// The time of the line read last.
    #[serde(default)]
    last: Option<NaiveDateTime>,
    installed: Installed,
}

impl YumLog {
    /// Gives a line its full local time, moving to the next year when the date jumped back.
    fn timestamp(&mut self, line: &YumLine) -> Option<NaiveDateTime> {
        // Read live: the latest year that does not put the line in the future.
        let year = self.year.unwrap_or_else(|| {
            let now = Local::now().naive_local();
            match dated(now.year(), line.month, line.day, line.time) {
                Some(at) if at > now + Duration::days(1) => now.year() - 1,
                _ => now.year(),
            }
        });
        let mut at = dated(year, line.month, line.day, line.time);
        if let (Some(candidate), Some(last)) = (at, self.last) {
            if candidate < last - Duration::days(YEAR_ROLLOVER) {
                at = dated(year + 1, line.month, line.day, line.time);
            }
        }
        let at = at?;
        self.year = Some(at.year());
        self.last = Some(at);
        Some(at)
    }

    fn decide(&mut self, line: &YumLine, timestamp: NaiveDateTime, raw: &str) -> PackageChange {
        let change = |category, name: &str, arch: Option<&str>, old, new| PackageChange {
            category,
            package: name.to_owned(),
            arch: arch.map(str::to_owned),
            old_version: old,
            new_version: new,
            timestamp,
            raw_line: raw.to_owned(),
            last_state: None,
        };

        let Some(package) = &line.package else {
            // An erased package named without version or architecture.
            let name = line.bare_name.as_deref().unwrap_or_default();
            let keys: Vec<String> = self.installed.keys_named(name).cloned().collect();
            let (arch, old) = match keys.as_slice() {
                [key] => {
                    let arch = key.strip_prefix(name).and_then(|a| a.strip_prefix('.'));
                    let old = match self.installed.versions(key) {
                        [only] => Some(only.clone()),
                        _ => None,
                    };
                    (arch.map(str::to_owned), old)
                }
                _ => (None, None),
            };
            for key in keys {
                self.installed.remove(&key, None);
            }
            return change(Category::PackageRemove, name, arch.as_deref(), old, None);
        };

        let key = package.key();
        let name = package.name.as_str();
        let arch = package.arch.as_deref();
        let new = package.evr();
        match line.action {
            YumAction::Installed => {
                let known = self.installed.versions(&key);
                let same = known
                    .iter()
                    .find(|v| version::compare(v, &new) == Ordering::Equal)
                    .cloned();
                let newer = known
                    .iter()
                    .filter(|v| version::compare(v, &new) == Ordering::Greater)
                    .max_by(|a, b| version::compare(a, b))
                    .cloned();
                if let Some(same) = same {
                    change(
                        Category::PackageReinstall,
                        name,
                        arch,
                        Some(same),
                        Some(new),
                    )
                } else if let Some(newer) = newer {
                    self.installed.replace(&key, &new);
                    change(
                        Category::PackageDowngrade,
                        name,
                        arch,
                        Some(newer),
                        Some(new),
                    )
                } else {
                    self.installed.add(&key, &new);
                    change(Category::PackageInstall, name, arch, None, Some(new))
                }
            }
            YumAction::Updated => {
                let old = self
                    .installed
                    .versions(&key)
                    .iter()
                    .filter(|v| version::compare(v, &new) == Ordering::Less)
                    .max_by(|a, b| version::compare(a, b))
                    .cloned();
                self.installed.replace(&key, &new);
                change(Category::PackageUpgrade, name, arch, old, Some(new))
            }
            YumAction::Erased | YumAction::Obsoleted => {
                self.installed.remove(&key, Some(&new));
                change(Category::PackageRemove, name, arch, Some(new), None)
            }
        }
    }
}

impl Format for YumLog {
    const MANAGER: Manager = Manager::Yum;

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<PackageChange>, LineError> {
        let line = parse_line(bytes)?;
        let timestamp = self.timestamp(&line).ok_or(LineError::BadTimestamp)?;
        let raw = String::from_utf8_lossy(bytes);
        Ok(vec![self.decide(&line, timestamp, &raw)])
    }

    fn begin_file(&mut self, path: &Path) {
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        let latest = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_or_else(
                |_| Local::now().naive_local(),
                |t| chrono::DateTime::<Local>::from(t).naive_local(),
            );
        let lines = bytes
            .strip_suffix(b"\n")
            .unwrap_or(&bytes)
            .split(|&b| b == b'\n');
        self.year = Some(first_year(lines, latest));
        self.last = None;
    }

    fn has_state(&self) -> bool {
        self.year.is_some() || !self.installed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::parse::dpkg::corpus::lines;
    use crate::parse::manager::{corpus, ChangeLog, Reader};

    fn time(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    fn read_from_start(text: &str, first_year: i32) -> (Vec<PackageChange>, Reader<YumLog>) {
        let state = serde_json::json!({ "year": first_year, "installed": {} });
        let mut reader = Reader::<YumLog>::resume(Some(&state));
        let mut changes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            changes.extend(reader.line(line.as_bytes(), "yum.log".as_ref(), index as u64 + 1));
        }
        (changes, reader)
    }

    fn summary(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
                format!(
                    "{} {} {} {} {}",
                    c.timestamp.format("%Y-%m-%d"),
                    c.category,
                    c.package,
                    v(&c.old_version),
                    v(&c.new_version)
                )
            })
            .collect()
    }

    #[test]
    fn installed_lines_are_told_apart_by_version() {
        // The fox-it corpus log: install, a downgrade written as an install, an update
        // back, a removal and a fresh install.
        let Some((_, bytes)) = corpus::file("yum", "fox-it") else {
            return;
        };
        let (changes, reader) = read_from_start(&String::from_utf8_lossy(&bytes), 2022);
        assert_eq!(
            summary(&changes),
            [
                "2022-12-16 package_install unzip - 6.0-24.el7_9",
                "2022-12-16 package_downgrade unzip 6.0-24.el7_9 6.0-22.el7_9",
                "2022-12-16 package_upgrade unzip 6.0-22.el7_9 6.0-24.el7_9",
                "2022-12-16 package_remove unzip 6.0-24.el7_9 -",
                "2022-12-16 package_install unzip - 6.0-24.el7_9",
            ]
        );
        assert_eq!(reader.stats().malformed, 0);
    }

    #[test]
    fn a_name_only_erase_removes_the_known_package() {
        let Some((_, bytes)) = corpus::file("yum", "KnewHow") else {
            return;
        };
        let (changes, _) = read_from_start(&String::from_utf8_lossy(&bytes), 2016);
        let summary = summary(&changes);
        assert_eq!(summary[0], "2016-11-29 package_install tree - 1.5.3-3.el6");
        assert_eq!(summary[1], "2016-11-29 package_remove tree 1.5.3-3.el6 -");
        assert_eq!(changes[1].arch.as_deref(), Some("x86_64"));
        assert_eq!(summary[2], "2016-11-29 package_install tree - 1.5.3-3.el6");
        // Updated lines without an earlier version in the log have no old version.
        assert_eq!(
            summary[4],
            "2016-12-01 package_upgrade sysstat - 9.0.4-31.el6"
        );
        // December, then the next year's lines.
        assert!(summary.iter().all(|s| s.starts_with("2016-1")));
        assert_eq!(changes.len(), lines(&bytes).count());
    }

    #[test]
    fn the_year_advances_when_the_date_jumps_back() {
        let log =
            b"Dec 31 23:59:00 Installed: a-1-1.noarch\nJan 01 00:01:00 Installed: b-1-1.noarch\n";
        let lines: Vec<&[u8]> = lines(log).collect();
        assert_eq!(
            first_year(lines.iter().copied(), time("2021-03-01 00:00:00")),
            2020
        );
        // A last line later in the year than the file's time belongs to the year before.
        let late = b"Dec 31 23:59:00 Installed: a-1-1.noarch";
        assert_eq!(first_year([&late[..]], time("2021-03-01 00:00:00")), 2020);
        // A clock stepping back a little is no new year.
        let step =
            b"Mar 01 10:00:05 Installed: a-1-1.noarch\nMar 01 10:00:03 Installed: b-1-1.noarch";
        assert_eq!(
            first_year(lines_of(step), time("2021-03-01 12:00:00")),
            2021
        );

        let (changes, _) = read_from_start(&String::from_utf8_lossy(log), 2020);
        assert_eq!(
            summary(&changes),
            [
                "2020-12-31 package_install a - 1-1",
                "2021-01-01 package_install b - 1-1"
            ]
        );
    }

    fn lines_of(bytes: &[u8]) -> Vec<&[u8]> {
        lines(bytes).collect()
    }

    #[test]
    fn every_corpus_line_reads() {
        let Some(files) = corpus::files("yum") else {
            return;
        };
        let mut total = 0;
        for (name, bytes) in &files {
            let (changes, reader) = read_from_start(&String::from_utf8_lossy(bytes), 2020);
            assert_eq!(reader.stats().malformed, 0, "{name}");
            // One change per line: yum writes nothing else.
            assert_eq!(changes.len(), lines(bytes).count(), "{name}");
            let words = |word: &str| {
                String::from_utf8_lossy(bytes)
                    .lines()
                    .filter(|l| l.contains(word))
                    .count()
            };
            let count = |category| changes.iter().filter(|c| c.category == category).count();
            assert_eq!(count(Category::PackageRemove), words(" Erased: "), "{name}");
            assert_eq!(
                count(Category::PackageUpgrade),
                words(" Updated: "),
                "{name}"
            );
            total += changes.len();
        }
        assert!(total > 40, "only {total} corpus changes");
    }

    #[test]
    fn malformed_lines_are_rejected_with_the_reason() {
        let cases: [(&[u8], LineError); 5] = [
            (b"", LineError::Empty),
            (
                b"Foo 01 10:00:00 Installed: a-1-1.noarch",
                LineError::BadTimestamp,
            ),
            (
                b"Dec 32 10:00:00 Installed: a-1-1.noarch",
                LineError::BadTimestamp,
            ),
            (
                b"Dec 01 10:00:00 Installed a-1-1.noarch",
                LineError::MissingField { field: "action" },
            ),
            (
                b"Dec 01 10:00:00 Installed: a",
                LineError::BadPackage {
                    text: "a".to_owned(),
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse_line(line).err(),
                Some(expected),
                "{}",
                line.escape_ascii()
            );
        }
        // February 29 in a year without it is counted, not a panic.
        let mut log = YumLog {
            year: Some(2021),
            ..YumLog::default()
        };
        assert_eq!(
            log.feed(b"Feb 29 10:00:00 Installed: a-1-1.noarch").err(),
            Some(LineError::BadTimestamp)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            let _ = YumLog::default().feed(&bytes);
            let _ = first_year([&bytes[..]], time("2021-03-01 00:00:00"));
        }
    }
}
