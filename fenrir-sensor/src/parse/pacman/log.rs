//! pacman's log (`/var/log/pacman.log`).
//!
//! In: one line at a time. Out: package changes, each with the command pacman logged for its
//! transaction where one is known. State: the last command logged and whether a transaction
//! is underway; every package line itself says what happened and names both versions.
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

use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use serde::{Deserialize, Serialize};

use super::version;
use crate::event::Category;
use crate::parse::command::pacman_may_transact;
use crate::parse::manager::{line_text, local_time, quote, Format, LineError, Manager, RunStart};
use crate::parse::{LoggedRun, PackageChange};

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
    /// libalpm began committing a transaction (`transaction started`, pacman 5.0 and later).
    TransactionStarted,
    /// libalpm's transaction ended: `transaction completed`, `failed` or `interrupted`.
    TransactionEnded,
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
    } else if caller == Some("ALPM") && message == "transaction started" {
        PacmanLineKind::TransactionStarted
    } else if caller == Some("ALPM")
        && matches!(
            message,
            "transaction completed" | "transaction failed" | "transaction interrupted"
        )
    {
        PacmanLineKind::TransactionEnded
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

/// Follows pacman.log, and which `Running` line each transaction's package lines belong to.
///
/// pacman writes its command line once it has its database lock, and libalpm frames each
/// transaction with `transaction started` and `transaction completed` (pacman 5.0 and
/// later). A transaction belongs to the last command before it that can start one and has
/// not started another: a refresh alone (`-Sy`) starts none, and the lines of a transaction
/// another front end committed without writing its command get no command. Logs of pacman
/// before 5.0 have no frames: there the front end wrote the package lines itself, under the
/// last command it logged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacmanLog {
    /// The run the last `Running` line opened, until it is taken.
    #[serde(skip)]
    run_start: Option<RunStart>,
    /// The last command that may start a transaction and has not started one yet.
    #[serde(skip)]
    waiting: Option<LoggedRun>,
    /// The command of the transaction underway, if one is and its command is known.
    #[serde(skip)]
    current: Option<LoggedRun>,
    /// Whether a transaction is underway.
    #[serde(skip)]
    in_transaction: bool,
    /// Whether this log frames its transactions, so package lines outside a frame belong to
    /// no command.
    #[serde(skip)]
    has_frames: bool,
}

impl PacmanLog {
    /// Moves the command bookkeeping by one line; returns the run a package line belongs to.
    fn follow_runs(&mut self, line: &PacmanLine) -> Option<LoggedRun> {
        match &line.kind {
            PacmanLineKind::Command(command) => {
                self.waiting = pacman_may_transact(command).then(|| LoggedRun {
                    started: line.timestamp,
                    command: Some(command.clone()),
                    user: None,
                });
                None
            }
            PacmanLineKind::TransactionStarted => {
                self.has_frames = true;
                self.in_transaction = true;
                self.current = self.waiting.take();
                None
            }
            PacmanLineKind::TransactionEnded => {
                self.in_transaction = false;
                self.current = None;
                None
            }
            PacmanLineKind::Package { .. } if self.in_transaction => self.current.clone(),
            // Before frames, pacman itself wrote its package lines; a line another caller
            // wrote is no pacman command's.
            PacmanLineKind::Package { .. } if !self.has_frames => {
                matches!(line.caller.as_deref(), None | Some("PACMAN"))
                    .then(|| self.waiting.clone())
                    .flatten()
            }
            PacmanLineKind::Package { .. } | PacmanLineKind::Other => None,
        }
    }
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
        let logged_run = self.follow_runs(&line);
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
            logged_run,
        }])
    }

    // Only a file's own lines say which run its lines belong to: the files replay is given
    // may come from different hosts, and a run cut by a rotation is rare.
    fn begin_file(&mut self, _path: &Path) {
        self.waiting = None;
        self.current = None;
        self.in_transaction = false;
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
    use crate::parse::manager::corpus::summary;
    use crate::parse::manager::{corpus, ChangeLog, Reader};

    fn read(bytes: &[u8]) -> (Vec<PackageChange>, Reader<PacmanLog>) {
        corpus::read(bytes, "pacman.log")
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

    fn commands(changes: &[PackageChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let command = c.logged_run.as_ref().and_then(|r| r.command.as_deref());
                format!("{} {}", c.package, command.unwrap_or("-"))
            })
            .collect()
    }

    #[test]
    fn each_transaction_gets_the_command_that_started_it() {
        let (changes, reader) = read(
            b"\
[2024-11-26T05:00:00-0600] [PACMAN] Running 'pacman -Syu'
[2024-11-26T05:00:00-0600] [PACMAN] synchronizing package lists
[2024-11-26T05:00:01-0600] [ALPM] transaction started
[2024-11-26T05:00:01-0600] [ALPM] upgraded a (1-1 -> 2-1)
[2024-11-26T05:00:01-0600] [ALPM] transaction completed
[2024-11-26T05:10:00-0600] [PACMAN] Running 'pacman -Sy'
[2024-11-26T05:10:00-0600] [PACMAN] synchronizing package lists
[2024-11-26T05:20:00-0600] [ALPM] transaction started
[2024-11-26T05:20:00-0600] [ALPM] installed b (1-1)
[2024-11-26T05:20:00-0600] [ALPM] transaction completed
[2024-11-26T05:30:00-0600] [PACMAN] Running 'pacman -S c'
[2024-11-26T05:30:00-0600] [ALPM] transaction started
[2024-11-26T05:30:00-0600] [ALPM] installed c (1-1)
[2024-11-26T05:30:01-0600] [ALPM] transaction interrupted
[2024-11-26T05:40:00-0600] [ALPM] transaction started
[2024-11-26T05:40:00-0600] [ALPM] removed c (1-1)
[2024-11-26T05:40:00-0600] [ALPM] transaction completed
",
        );
        // A refresh starts no transaction, and a command starts one only: the installs of
        // another front end and the later removal have no command in the log.
        assert_eq!(
            commands(&changes),
            ["a pacman -Syu", "b -", "c pacman -S c", "c -"]
        );
        let run = changes[0].logged_run.as_ref().expect("a has its run");
        // Runs carry the host's local time, as changes do.
        let started = DateTime::parse_from_rfc3339("2024-11-26T05:00:00-06:00").expect("time");
        assert_eq!(run.started, local_time(started));
        assert_eq!(run.user, None, "pacman.log names no user");
        assert_eq!(reader.stats().malformed, 0);
    }

    #[test]
    fn logs_without_frames_give_pacmans_own_lines_their_command() {
        let (changes, _) = read(
            b"\
[2014-08-03 15:21] [PACMAN] Running 'pacman -S base'
[2014-08-03 15:31] [PACMAN] installed a (1-1)
[2014-08-03 15:31] [PACKAGEKIT] installed b (1-1)
[2014-08-03 15:31] installed c (1-1)
[2014-08-03 15:40] [PACMAN] Running 'pacman -Scc'
[2014-08-03 15:41] [PACMAN] removed d (1-1)
",
        );
        assert_eq!(
            commands(&changes),
            ["a pacman -S base", "c pacman -S base", "d -"]
        );
    }

    #[test]
    fn corpus_changes_carry_a_command_the_log_wrote_before_them() {
        let Some(files) = corpus::files("pacman") else {
            return;
        };
        let mut named = 0;
        for (name, bytes) in &files {
            let (changes, _) = read(bytes);
            let text = String::from_utf8_lossy(bytes);
            for change in &changes {
                let Some(command) = change.logged_run.as_ref().and_then(|r| r.command.as_ref())
                else {
                    continue;
                };
                named += 1;
                let running = format!("Running '{command}'");
                let at = text.find(&running).expect("the command is logged");
                assert!(
                    at < text.find(&change.raw_line).unwrap_or(0),
                    "{name}: {command}"
                );
            }
        }
        // 293 of the 397 changes; the rest are in a transaction no logged command started.
        assert!(named > 250, "only {named} changes have a command");
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
