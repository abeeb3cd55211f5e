//! zypper's history (libzypp's `/var/log/zypp/history`).
//!
//! In: one line at a time. Out: package changes, each with the command and user of the
//! `command` record before it. State: the versions the history has shown installed.
//!
//! libzypp writes one record per line, fields separated by `|`, the action padded to seven
//! characters, and comments (rpm's output for a package) after `#`:
//!
//! ```text
//! 2022-12-16 12:56:23|command|root@ec9fa6d67dda|'zypper' 'install' 'unzip'|
//! 2022-12-16 12:56:23|install|unzip|6.00-41.1|x86_64|root@ec9fa6d67dda|repo-oss|d7e42c…|
//! # 2022-12-16 12:57:50 unzip-6.00-41.1.x86_64 removed ok
//! 2022-12-16 12:57:50|remove |unzip|6.00-41.1|x86_64|root@ec9fa6d67dda|
//! ```
//!
//! `install` records name, edition (`[epoch:]version-release`), architecture, who asked for
//! it (empty for a dependency), the repository and the checksum; `remove` name, edition,
//! architecture and who asked. The time is local. An install is written the same way for a
//! fresh install, an upgrade, a downgrade and a reinstall, so it is decided with rpm's version
//! order against the versions the history has shown: the same version is a reinstall, a newer
//! one an upgrade, an older one a downgrade, an unknown package an install. Repository
//! (`radd`, `rremove`, …), `command` and `patch` records change no package.

use std::path::Path;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::{key_of, Installed};
use crate::event::Category;
use crate::parse::command::{shell_line, words};
use crate::parse::manager::{line_text, quote, Format, LineError, Manager, RunStart};
use crate::parse::{LoggedRun, PackageChange};

/// Length of `YYYY-MM-DD HH:MM:SS`.
const TIMESTAMP_LEN: usize = 19;

/// One record of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZyppRecord {
    /// A package was installed (or replaced another version of itself).
    Install {
        timestamp: NaiveDateTime,
        name: String,
        edition: String,
        arch: String,
        /// `user@host` when a person asked for it, `None` for a dependency.
        requested_by: Option<String>,
        repository: String,
    },
    /// A package was removed.
    Remove {
        timestamp: NaiveDateTime,
        name: String,
        edition: String,
        arch: String,
        requested_by: Option<String>,
    },
    /// A zypper command started: `user@host` and its quoted arguments.
    Command {
        timestamp: NaiveDateTime,
        user: String,
        command: String,
    },
    /// A comment, or a record that changes no package.
    Other,
}

/// Parses one line of the history.
///
/// # Errors
/// A line that is neither a comment nor a record with libzypp's time stamp, or an install or
/// remove record missing a field.
pub fn parse_line(bytes: &[u8]) -> Result<ZyppRecord, LineError> {
    let text = line_text(bytes)?;
    if text.starts_with('#') {
        return Ok(ZyppRecord::Other);
    }
    let stamp = text.get(..TIMESTAMP_LEN).ok_or(LineError::BadTimestamp)?;
    let timestamp = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
        .map_err(|_| LineError::BadTimestamp)?;
    let rest = text[TIMESTAMP_LEN..]
        .strip_prefix('|')
        .ok_or(LineError::BadTimestamp)?;
    let mut fields = rest.split('|');
    let action = fields.next().unwrap_or_default().trim_end();
    let mut next = |field: &'static str| {
        fields
            .next()
            .map(str::to_owned)
            .ok_or(LineError::MissingField { field })
    };
    let nonempty = |value: String, field: &'static str| {
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            Err(LineError::BadPackage { text: quote(field) })
        } else {
            Ok(value)
        }
    };
    let person = |value: String| Some(value).filter(|v| !v.is_empty());

    Ok(match action {
        "install" => ZyppRecord::Install {
            timestamp,
            name: nonempty(next("name")?, "name")?,
            edition: nonempty(next("edition")?, "edition")?,
            arch: nonempty(next("arch")?, "arch")?,
            requested_by: person(next("requested by")?),
            repository: next("repository")?,
        },
        "remove" => ZyppRecord::Remove {
            timestamp,
            name: nonempty(next("name")?, "name")?,
            edition: nonempty(next("edition")?, "edition")?,
            arch: nonempty(next("arch")?, "arch")?,
            requested_by: person(next("requested by")?),
        },
        "command" => ZyppRecord::Command {
            timestamp,
            user: next("user")?,
            command: next("command")?,
        },
        _ => ZyppRecord::Other,
    })
}

/// Tells whether a line looks like the history's: a comment or a time-stamped record.
#[must_use]
pub fn is_typical(bytes: &[u8]) -> bool {
    !bytes.starts_with(b"#") && bytes.get(TIMESTAMP_LEN) == Some(&b'|') && parse_line(bytes).is_ok()
}

/// Follows the history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZyppHistory {
    installed: Installed,
    /// The run the last `command` record opened, until it is taken.
    #[serde(skip)]
    run_start: Option<RunStart>,
    /// The run the last `command` record opened: libzypp writes one when a program takes
    /// its lock, before any package record of that program.
    #[serde(skip)]
    run: Option<LoggedRun>,
}

impl Format for ZyppHistory {
    const MANAGER: Manager = Manager::Zypper;

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<PackageChange>, LineError> {
        let record = parse_line(bytes)?;
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let change = match record {
            ZyppRecord::Install {
                timestamp,
                name,
                edition,
                arch,
                ..
            } => {
                let key = key_of(&name, Some(&arch));
                let (category, old) = self.installed.classify_install(&key, &edition);
                if category == Category::PackageInstall {
                    self.installed.add(&key, &edition);
                } else {
                    self.installed.replace(&key, &edition);
                }
                PackageChange {
                    category,
                    package: name,
                    arch: Some(arch),
                    old_version: old,
                    new_version: Some(edition),
                    timestamp,
                    raw_line: raw,
                    last_state: None,
                    logged_run: self.run.clone(),
                }
            }
            ZyppRecord::Remove {
                timestamp,
                name,
                edition,
                arch,
                ..
            } => {
                self.installed
                    .remove(&key_of(&name, Some(&arch)), Some(&edition));
                PackageChange {
                    category: Category::PackageRemove,
                    package: name,
                    arch: Some(arch),
                    old_version: Some(edition),
                    new_version: None,
                    timestamp,
                    raw_line: raw,
                    last_state: None,
                    logged_run: self.run.clone(),
                }
            }
            ZyppRecord::Command {
                timestamp,
                command,
                user,
            } => {
                let user = user.split_once('@').map_or(user.as_str(), |(name, _)| name);
                self.run = Some(LoggedRun {
                    started: timestamp,
                    command: Some(shell_line(&words(&command))),
                    user: Some(user.to_owned()).filter(|u| !u.is_empty()),
                });
                self.run_start = Some(RunStart { command, timestamp });
                return Ok(Vec::new());
            }
            ZyppRecord::Other => return Ok(Vec::new()),
        };
        Ok(vec![change])
    }

    // Only a file's own lines say which run its lines belong to: the files replay is given
    // may come from different hosts, and a run cut by a rotation is rare.
    fn begin_file(&mut self, _path: &Path) {
        self.run = None;
    }

    fn has_state(&self) -> bool {
        !self.installed.is_empty()
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

    fn read(text: &str) -> (Vec<PackageChange>, Reader<ZyppHistory>) {
        corpus::read(text.as_bytes(), "history")
    }

    #[test]
    fn a_real_tool_session_reads_as_its_changes() {
        // Written by Debian's zypper 1.14 against a sandbox root.
        let log = "\
2026-12-04 02:12:00|command|root@vm|'zypper' '--non-interactive' 'install' 'fenrir-hello-1.0-1.noarch.rpm'|
# 2026-12-04 02:12:00 fenrir-hello-1.0-1.noarch.rpm installed ok
# Additional rpm output:
# rpm: However assuming you know what you are doing...
# 
2026-12-04 02:12:00|install|fenrir-hello|1.0-1|noarch|root@vm|_tmpRPMcache_||
2026-12-04 02:12:06|install|fenrir-hello|2.0-1|noarch|root@vm|_tmpRPMcache_||
2026-12-04 02:12:06|install|fenrir-hello|0.5-1|noarch|root@vm|_tmpRPMcache_||
2026-12-04 02:12:07|install|fenrir-hello|0.5-1|noarch|root@vm|_tmpRPMcache_||
2026-12-04 02:12:07|remove |fenrir-hello|0.5-1|noarch|root@vm|
";
        let (changes, reader) = read(log);
        assert_eq!(
            summary(&changes),
            [
                "package_install fenrir-hello - 1.0-1",
                "package_upgrade fenrir-hello 1.0-1 2.0-1",
                "package_downgrade fenrir-hello 2.0-1 0.5-1",
                "package_reinstall fenrir-hello 0.5-1 0.5-1",
                "package_remove fenrir-hello 0.5-1 -",
            ]
        );
        assert_eq!(reader.stats().malformed, 0);
        assert!(reader.saved_state().is_none(), "nothing left installed");
    }

    #[test]
    fn changes_carry_the_command_and_user_of_their_run() {
        let Some((name, bytes)) = corpus::file("zypper", "suse__zypp__history.1") else {
            return;
        };
        let (changes, _) = read(&String::from_utf8_lossy(&bytes));
        let runs: Vec<String> = changes
            .iter()
            .filter(|c| c.package == "unzip")
            .map(|c| {
                let run = c
                    .logged_run
                    .as_ref()
                    .expect("every change follows a command");
                format!(
                    "{} {} {}",
                    c.category,
                    run.user.as_deref().unwrap_or("-"),
                    run.command.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(
            runs,
            [
                "package_install root zypper install unzip",
                "package_remove root zypper remove unzip",
                "package_install root zypper install unzip",
            ],
            "{name}"
        );

        // Records before any command record have no run; a command without a user names none.
        let (changes, _) = read(
            "2022-12-16 12:56:23|install|a|1-1|x86_64||repo|x|\n\
             2022-12-16 12:56:24|command||'zypper' 'in' 'b c'|\n\
             2022-12-16 12:56:25|install|b c|1-1|x86_64||repo|x|\n\
             2022-12-16 12:56:25|install|b|1-1|x86_64||repo|x|\n",
        );
        assert_eq!(changes.len(), 2, "a name with a space is no package");
        assert_eq!(changes[0].logged_run, None);
        let run = changes[1].logged_run.as_ref().expect("b has its run");
        assert_eq!(run.command.as_deref(), Some("zypper in 'b c'"));
        assert_eq!(run.user, None);
    }

    #[test]
    fn records_keep_their_fields() {
        let line = b"2022-12-16 12:57:50|remove |unzip|6.00-41.1|x86_64|root@ec9fa6d67dda|";
        let expected = ZyppRecord::Remove {
            timestamp: NaiveDateTime::parse_from_str("2022-12-16 12:57:50", "%Y-%m-%d %H:%M:%S")
                .unwrap_or_default(),
            name: "unzip".to_owned(),
            edition: "6.00-41.1".to_owned(),
            arch: "x86_64".to_owned(),
            requested_by: Some("root@ec9fa6d67dda".to_owned()),
        };
        assert_eq!(parse_line(line), Ok(expected));

        let cases: [(&[u8], LineError); 5] = [
            (b"", LineError::Empty),
            (b"2022-12-16 12:57:50 remove unzip", LineError::BadTimestamp),
            (
                b"2022-13-16 12:57:50|remove |unzip|1|x|",
                LineError::BadTimestamp,
            ),
            (
                b"2022-12-16 12:57:50|install|unzip|6.00-41.1",
                LineError::MissingField { field: "arch" },
            ),
            (
                b"2022-12-16 12:57:50|install||1|x86_64|||",
                LineError::BadPackage {
                    text: "name".to_owned(),
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
    fn every_corpus_record_reads() {
        let Some(files) = corpus::files("zypper") else {
            return;
        };
        let mut total = 0;
        for (name, bytes) in &files {
            let text = String::from_utf8_lossy(bytes);
            let (changes, reader) = read(&text);
            assert_eq!(reader.stats().malformed, 0, "{name}");
            let records = |action: &str| {
                lines(bytes)
                    .filter(|l| {
                        l.get(19..)
                            .is_some_and(|r| r.starts_with(action.as_bytes()))
                    })
                    .count()
            };
            let count = |category| changes.iter().filter(|c| c.category == category).count();
            // Every package of these histories is installed once, so every install record is
            // a fresh install.
            assert_eq!(
                count(Category::PackageInstall),
                records("|install|"),
                "{name}"
            );
            assert_eq!(
                count(Category::PackageRemove),
                records("|remove |"),
                "{name}"
            );
            assert_eq!(changes.len(), records("|install|") + records("|remove |"));
            total += changes.len();
        }
        assert!(total >= 100, "only {total} corpus changes");

        // The fox-it history installs unzip, removes it, then installs it again.
        if let Some((_, bytes)) = corpus::file("zypper", "fox-it") {
            let (changes, _) = read(&String::from_utf8_lossy(&bytes));
            let unzip: Vec<String> = summary(&changes)
                .into_iter()
                .filter(|s| s.contains(" unzip "))
                .collect();
            assert_eq!(
                unzip,
                [
                    "package_install unzip - 6.00-41.1",
                    "package_remove unzip 6.00-41.1 -",
                    "package_install unzip - 6.00-41.1",
                ]
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ZyppHistory::default().feed(&bytes);
        }

        #[test]
        fn arbitrary_fields_after_a_timestamp_never_panic(tail in "[|a-z0-9 .-]{0,60}") {
            let _ = ZyppHistory::default().feed(format!("2022-12-16 12:57:50|{tail}").as_bytes());
        }
    }
}
