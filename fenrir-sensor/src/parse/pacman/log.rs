//! pacman's log (`/var/log/pacman.log`).
//!
//! In: one line at a time. Out: package changes. No state: every package line says what
//! happened and names both versions.
//!
//! pacman writes `[<time>] [<caller>] <message>`; the time is `2014-08-03 15:21` (local,
//! pacman before 5.1) or `2020-11-24T22:30:56+0100` (with its offset), the caller `ALPM`
//! (libalpm), `PACMAN` (the front end, which wrote the package lines itself before 5.0),
//! `ALPM-SCRIPTLET` (install-script output) or another front end's name; the oldest logs have
//! no caller. Package lines are:
//!
//! ```text
//! [2021-01-01T17:29:35+0000] [ALPM] installed systemd (247.2-1)
//! [2024-11-26T05:07:01-0600] [ALPM] upgraded alsa-lib (1.2.12-1 -> 1.2.13-1)
//! [2024-11-26T06:51:24-0600] [ALPM] downgraded alsa-lib (1.2.13-1 -> 1.2.12-1)
//! [2021-01-01T17:29:30+0000] [ALPM] reinstalled findutils (4.7.0-2)
//! [2020-11-24T22:40:01+0100] [ALPM] removed linux-api-headers (5.8-1)
//! ```
//!
//! pacman before 4.1 wrote `upgraded` for downgrades and reinstalls too, so an `upgraded`
//! line is decided with pacman's version order. Script output is never read as a package
//! line, and lines without a time stamp continue a multi-line message.

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::version;
use crate::event::Category;
use crate::parse::manager::{line_text, local_time, quote, Format, LineError, Manager, RunStart};
use crate::parse::PackageChange;

/// What a package line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacmanAction {
    Installed,
    Upgraded,
    Downgraded,
    Reinstalled,
    Removed,
}

/// One line of pacman.log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacmanLine {
    /// The host's local wall-clock time of the line.
    pub timestamp: NaiveDateTime,
    /// The caller in the second brackets, if any.
    pub caller: Option<String>,
    pub kind: PacmanLineKind,
}

/// What a line of pacman.log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacmanLineKind {
    /// A package changed; `old` is set for upgrades and downgrades.
    Package {
        action: PacmanAction,
        name: String,
        old: Option<String>,
        new: String,
    },
    /// A pacman command started (`Running 'pacman -S vim'`).
    Command(String),
    /// Any other message.
    Other,
}

/// Parses one line of pacman.log.
///
/// # Errors
/// A line without a bracketed time stamp, or a package line whose package and versions
/// cannot be read.
pub fn parse_line(bytes: &[u8]) -> Result<PacmanLine, LineError> {
    let text = line_text(bytes)?;
    let rest = text.strip_prefix('[').ok_or(LineError::BadTimestamp)?;
    let (stamp, rest) = rest.split_once("] ").ok_or(LineError::BadTimestamp)?;
    let timestamp = parse_timestamp(stamp).ok_or(LineError::BadTimestamp)?;

    let (caller, message) = match rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((caller, message)) if is_caller(caller) => (Some(caller), message),
        _ => (None, rest),
    };
    let is_manager = matches!(caller, None | Some("ALPM" | "PACMAN"));

    let kind = if !is_manager {
        PacmanLineKind::Other
    } else if let Some(command) = message
        .strip_prefix("Running '")
        .and_then(|c| c.strip_suffix('\''))
    {
        PacmanLineKind::Command(command.to_owned())
    } else {
        parse_package(message)?
    };
    Ok(PacmanLine {
        timestamp,
        caller: caller.map(str::to_owned),
        kind,
    })
}

fn is_caller(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Reads `2014-08-03 15:21` (local) or `2020-11-24T22:30:56+0100`.
fn parse_timestamp(stamp: &str) -> Option<NaiveDateTime> {
    if let Ok(time) = DateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%z") {
        return Some(local_time(time));
    }
    NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M").ok()
}

/// Reads a package message, or [`PacmanLineKind::Other`] for any other message.
fn parse_package(message: &str) -> Result<PacmanLineKind, LineError> {
    let Some((word, rest)) = message.split_once(' ') else {
        return Ok(PacmanLineKind::Other);
    };
    let action = match word {
        "installed" => PacmanAction::Installed,
        "upgraded" => PacmanAction::Upgraded,
        "downgraded" => PacmanAction::Downgraded,
        "reinstalled" => PacmanAction::Reinstalled,
        "removed" => PacmanAction::Removed,
        _ => return Ok(PacmanLineKind::Other),
    };
    let bad = || LineError::BadPackage { text: quote(rest) };
    let (name, versions) = rest.split_once(" (").ok_or_else(bad)?;
    let versions = versions.strip_suffix(')').ok_or_else(bad)?;
    let (old, new) = match versions.split_once(" -> ") {
        Some((old, new)) => (Some(old), new),
        None => (None, versions),
    };
    let is_word = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    if !is_word(name) || !is_word(new) || old.is_some_and(|o| !is_word(o)) {
        return Err(bad());
    }
    let has_two = matches!(action, PacmanAction::Upgraded | PacmanAction::Downgraded);
    if has_two != old.is_some() {
        return Err(bad());
    }
    Ok(PacmanLineKind::Package {
        action,
        name: name.to_owned(),
        old: old.map(str::to_owned),
        new: new.to_owned(),
    })
}

/// Tells whether a line looks like pacman.log's.
#[must_use]
pub fn is_typical(bytes: &[u8]) -> bool {
    bytes.starts_with(b"[") && parse_line(bytes).is_ok()
}

/// Follows pacman.log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacmanLog {
    /// The run the last `Running` line opened, until it is taken.
    #[serde(skip)]
    run_start: Option<RunStart>,
}

impl Format for PacmanLog {
    const MANAGER: Manager = Manager::Pacman;

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<PackageChange>, LineError> {
        let line = parse_line(bytes)?;
        if let PacmanLineKind::Command(command) = &line.kind {
            self.run_start = Some(RunStart {
                command: command.clone(),
                timestamp: line.timestamp,
            });
        }
        let PacmanLineKind::Package {
            action,
            name,
            old,
            new,
        } = line.kind
        else {
            return Ok(Vec::new());
        };
        let (category, old, new) = match action {
            PacmanAction::Installed => (Category::PackageInstall, None, Some(new)),
            PacmanAction::Removed => (Category::PackageRemove, Some(new), None),
            PacmanAction::Reinstalled => (Category::PackageReinstall, Some(new.clone()), Some(new)),
            PacmanAction::Downgraded => (Category::PackageDowngrade, old, Some(new)),
            PacmanAction::Upgraded => {
                let category = match old.as_deref().map(|o| version::compare(&new, o)) {
                    Some(std::cmp::Ordering::Less) => Category::PackageDowngrade,
                    Some(std::cmp::Ordering::Equal) => Category::PackageReinstall,
                    _ => Category::PackageUpgrade,
                };
                (category, old, Some(new))
            }
        };
        Ok(vec![PackageChange {
            category,
            package: name,
            arch: None,
            old_version: old,
            new_version: new,
            timestamp: line.timestamp,
            raw_line: String::from_utf8_lossy(bytes).into_owned(),
            last_state: None,
        }])
    }

    fn take_run_start(&mut self) -> Option<RunStart> {
        self.run_start.take()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::parse::dpkg::corpus::lines;
    use crate::parse::manager::{corpus, ChangeLog, Reader};

    fn read(bytes: &[u8]) -> (Vec<PackageChange>, Reader<PacmanLog>) {
        let mut reader = Reader::<PacmanLog>::default();
        let mut changes = Vec::new();
        for (index, line) in lines(bytes).enumerate() {
            changes.extend(reader.line(line, "pacman.log".as_ref(), index as u64 + 1));
        }
        (changes, reader)
    }

    fn summary(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
                format!(
                    "{} {} {} {}",
                    c.category,
                    c.package,
                    v(&c.old_version),
                    v(&c.new_version)
                )
            })
            .collect()
    }

    #[test]
    fn a_real_tool_session_reads_as_its_changes() {
        // Written by Debian's pacman 6.0 against a sandbox root.
        let log = b"\
[2026-12-04T02:12:22+0000] [PACMAN] Running 'pacman --noconfirm --root /tmp/p -U fenrir-hello-2.0-1-any.pkg.tar.zst'
[2026-12-04T02:12:22+0000] [ALPM] transaction started
[2026-12-04T02:12:22+0000] [ALPM] upgraded fenrir-hello (1.0-1 -> 2.0-1)
[2026-12-04T02:12:22+0000] [ALPM] transaction completed
[2026-12-04T02:12:22+0000] [ALPM] reinstalled fenrir-hello (2.0-1)
[2026-12-04T02:12:22+0000] [ALPM] downgraded fenrir-hello (2.0-1 -> 0.5-1)
[2026-12-04T02:12:22+0000] [ALPM] removed fenrir-hello (0.5-1)
[2026-12-04T02:12:22+0000] [ALPM-SCRIPTLET] installed fake (1.0-1)
";
        let (changes, reader) = read(log);
        assert_eq!(
            summary(&changes),
            [
                "package_upgrade fenrir-hello 1.0-1 2.0-1",
                "package_reinstall fenrir-hello 2.0-1 2.0-1",
                "package_downgrade fenrir-hello 2.0-1 0.5-1",
                "package_remove fenrir-hello 0.5-1 -",
            ]
        );
        assert_eq!(reader.stats().malformed, 0);
    }

    #[test]
    fn old_upgraded_lines_are_decided_by_version() {
        let (changes, _) = read(
            b"[2012-03-01 10:00] upgraded a (2.0-1 -> 1.0-1)\n\
              [2012-03-01 10:00] upgraded b (1:1.0-1 -> 1:1.0-1)\n\
              [2012-03-01 10:00] [PACMAN] upgraded c (1.0rc1-1 -> 1.0-1)",
        );
        assert_eq!(
            summary(&changes),
            [
                "package_downgrade a 2.0-1 1.0-1",
                "package_reinstall b 1:1.0-1 1:1.0-1",
                "package_upgrade c 1.0rc1-1 1.0-1",
            ]
        );
    }

    #[test]
    fn malformed_lines_are_rejected_with_the_reason() {
        let cases: [(&[u8], LineError); 5] = [
            (b"", LineError::Empty),
            (b"filesystem: 755  package: 2755", LineError::BadTimestamp),
            (
                b"[2021-13-01T17:29:35+0000] [ALPM] installed a (1-1)",
                LineError::BadTimestamp,
            ),
            (
                b"[2021-01-01T17:29:35+0000] [ALPM] installed a",
                LineError::BadPackage {
                    text: "a".to_owned(),
                },
            ),
            (
                b"[2021-01-01T17:29:35+0000] [ALPM] upgraded a (1-1)",
                LineError::BadPackage {
                    text: "a (1-1)".to_owned(),
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
    }

    #[test]
    fn every_corpus_package_line_reads() {
        let Some(files) = corpus::files("pacman") else {
            return;
        };
        let mut total = 0;
        for (name, bytes) in &files {
            let (changes, reader) = read(bytes);
            // Expectations from the words alone: each package word of the manager, outside
            // script output, is one change of its kind.
            let text = String::from_utf8_lossy(bytes);
            let words = |word: &str| {
                text.lines()
                    .filter(|l| !l.contains("[ALPM-SCRIPTLET]"))
                    .filter(|l| l.split("] ").any(|part| part.starts_with(word)))
                    .count()
            };
            let count = |category| changes.iter().filter(|c| c.category == category).count();
            assert_eq!(
                count(Category::PackageInstall),
                words("installed "),
                "{name}"
            );
            assert_eq!(
                count(Category::PackageReinstall),
                words("reinstalled "),
                "{name}"
            );
            assert_eq!(count(Category::PackageRemove), words("removed "), "{name}");
            assert_eq!(
                count(Category::PackageUpgrade) + count(Category::PackageDowngrade),
                words("upgraded ") + words("downgraded "),
                "{name}"
            );
            // Lines without a time stamp continue a multi-line message.
            let untimed = lines(bytes).filter(|l| !l.starts_with(b"[")).count() as u64;
            assert_eq!(reader.stats().malformed, untimed, "{name}");
            total += changes.len();
        }
        assert!(total > 300, "only {total} corpus changes");

        // The excerpt from a real downgrade: pacman's own words agree with its version order.
        if let Some((_, bytes)) = corpus::file("pacman", "issue_excerpts") {
            let (changes, _) = read(&bytes);
            assert_eq!(
                summary(&changes),
                [
                    "package_upgrade alsa-lib 1.2.12-1 1.2.13-1",
                    "package_upgrade alsa-utils 1.2.12-1 1.2.13-1",
                    "package_downgrade alsa-ucm-conf 1.2.13-1 1.2.12-1",
                    "package_downgrade alsa-lib 1.2.13-1 1.2.12-1",
                    "package_downgrade alsa-utils 1.2.13-1 1.2.12-1",
                ]
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = PacmanLog::default().feed(&bytes);
        }

        #[test]
        fn arbitrary_messages_never_panic(message in "\\PC{0,60}") {
            let line = format!("[2021-01-01T17:29:35+0000] [ALPM] {message}");
            let _ = PacmanLog::default().feed(line.as_bytes());
        }

        #[test]
        fn well_formed_upgrades_keep_their_fields(
            name in "[a-z0-9][a-z0-9@._+-]{0,20}",
            old in "[0-9][0-9a-z.]{0,6}-[0-9]",
            new in "[0-9][0-9a-z.]{0,6}-[0-9]",
        ) {
            let line = format!("[2021-01-01T17:29:35+0000] [ALPM] upgraded {name} ({old} -> {new})");
            let changes = PacmanLog::default()
                .feed(line.as_bytes())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(changes.len(), 1);
            prop_assert_eq!(&changes[0].package, &name);
            prop_assert_eq!(changes[0].old_version.as_deref(), Some(old.as_str()));
            prop_assert_eq!(changes[0].new_version.as_deref(), Some(new.as_str()));
        }
    }
}
