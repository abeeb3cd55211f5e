//! apk's log (`/var/log/apk.log`, apk-tools 3).
//!
//! In: one line at a time. Out: package changes. State: the time and command of the current
//! apk run, which its package lines carry.
//!
//! apk copies its output to the log, each run opened by a line naming the command and the
//! time in UTC; package lines carry no time of their own:
//!
//! ```text
//! Running `apk add --no-cache /tmp/glibc-2.43-r1.apk` at 2026-05-05 08:15:43
//! apk-tools 3.0.6-r0, compiled for aarch64.
//! (1/3) Installing glibc (2.43-r1)
//! ( 2/12) Upgrading musl (1.2.4-r1 -> 1.2.4-r2)
//! (1/1) Purging glibc-i18n (2.43-r1)
//! OK: 42.3 MiB in 19 packages
//! ```
//!
//! `Installing` is an install, `Purging` a removal, `Upgrading` and `Downgrading` say which
//! they are (apk decided with its version order), `Reinstalling` and `Replacing` (the same
//! version from another build) are reinstalls; a package name may carry its repository pin
//! (`name@edge`), which is not part of the name. Everything else apk prints changes nothing.

use std::path::Path;

use chrono::{Local, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::event::Category;
use crate::parse::manager::{
    line_text, local_from_utc, quote, Format, LineError, Manager, RunStart,
};
use crate::parse::{LoggedRun, PackageChange};

/// One line of apk.log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApkLine {
    /// An apk run started at this local time.
    Run {
        timestamp: NaiveDateTime,
        command: String,
    },
    /// A package change of the current run.
    Package {
        category: Category,
        name: String,
        /// The repository pin after `@`, if any.
        tag: Option<String>,
        old: Option<String>,
        new: Option<String>,
    },
    /// Anything else apk prints.
    Other,
}

/// Parses one line of apk.log.
///
/// # Errors
/// A line that is not text, a run line without its time, or a package line whose package
/// and versions cannot be read.
pub fn parse_line(bytes: &[u8]) -> Result<ApkLine, LineError> {
    if bytes.is_empty() {
        return Ok(ApkLine::Other);
    }
    let text = line_text(bytes)?;
    if let Some(rest) = text.strip_prefix("Running `") {
        let (command, stamp) = rest.rsplit_once("` at ").ok_or(LineError::BadTimestamp)?;
        let time = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
            .map_err(|_| LineError::BadTimestamp)?;
        return Ok(ApkLine::Run {
            timestamp: local_from_utc(time),
            command: command.to_owned(),
        });
    }
    let Some(rest) = progress_prefix(text) else {
        return Ok(ApkLine::Other);
    };
    parse_change(rest)
}

/// Returns what follows a `(n/total) ` progress counter, whose numbers apk may pad.
fn progress_prefix(text: &str) -> Option<&str> {
    let inner_end = text.find(") ")?;
    let inner = text.strip_prefix('(')?.get(..inner_end - 1)?;
    let (done, total) = inner.split_once('/')?;
    let is_number = |s: &str| {
        let s = s.trim_start();
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    };
    (is_number(done) && is_number(total)).then(|| &text[inner_end + 2..])
}

fn parse_change(rest: &str) -> Result<ApkLine, LineError> {
    let bad = || LineError::BadPackage { text: quote(rest) };
    // apk marks a reinstall it had to skip; nothing changed.
    if rest.starts_with('[') {
        return Ok(ApkLine::Other);
    }
    let (verb, rest) = rest.split_once(' ').ok_or_else(bad)?;
    let category = match verb {
        "Installing" => Category::PackageInstall,
        "Purging" => Category::PackageRemove,
        "Upgrading" => Category::PackageUpgrade,
        "Downgrading" => Category::PackageDowngrade,
        "Reinstalling" | "Replacing" => Category::PackageReinstall,
        // `Updating pinning` moves a package to another repository; it stays as it is.
        "Updating" => return Ok(ApkLine::Other),
        other => return Err(LineError::UnknownAction { text: quote(other) }),
    };
    let (package, versions) = rest.split_once(" (").ok_or_else(bad)?;
    let versions = versions.strip_suffix(')').ok_or_else(bad)?;
    let (name, tag) = match package.split_once('@') {
        Some((name, tag)) => (name, Some(tag)),
        None => (package, None),
    };
    let is_word = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    if !is_word(name) || tag.is_some_and(|t| !is_word(t)) {
        return Err(bad());
    }
    let (old, new) = match (category, versions.split_once(" -> ")) {
        (
            Category::PackageUpgrade | Category::PackageDowngrade | Category::PackageReinstall,
            Some((old, new)),
        ) if is_word(old) && is_word(new) => (Some(old), Some(new)),
        (Category::PackageInstall, None) if is_word(versions) => (None, Some(versions)),
        (Category::PackageRemove, None) if is_word(versions) => (Some(versions), None),
        (Category::PackageReinstall, None) if is_word(versions) => (Some(versions), Some(versions)),
        _ => return Err(bad()),
    };
    Ok(ApkLine::Package {
        category,
        name: name.to_owned(),
        tag: tag.map(str::to_owned),
        old: old.map(str::to_owned),
        new: new.map(str::to_owned),
    })
}

/// Tells whether a line is typical of apk.log: a run line or a package line.
#[must_use]
pub fn is_typical(bytes: &[u8]) -> bool {
    matches!(
        parse_line(bytes),
        Ok(ApkLine::Run { .. } | ApkLine::Package { .. })
    )
}

/// Follows apk.log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApkLog {
    /// When the current run started.
    #[serde(default, with = "optional_time")]
    run_started: Option<NaiveDateTime>,
    /// The run the last `Running` line opened, until it is taken.
    #[serde(skip)]
    run_start: Option<RunStart>,
    /// The command of the current run, which its package lines carry.
    #[serde(skip)]
    run: Option<LoggedRun>,
}

impl Format for ApkLog {
    const MANAGER: Manager = Manager::Apk;

    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<PackageChange>, LineError> {
        match parse_line(bytes)? {
            ApkLine::Run { timestamp, command } => {
                self.run_started = Some(timestamp);
                self.run = Some(LoggedRun {
                    started: timestamp,
                    command: Some(command.clone()),
                    user: None,
                });
                self.run_start = Some(RunStart { command, timestamp });
                Ok(Vec::new())
            }
            ApkLine::Package {
                category,
                name,
                old,
                new,
                ..
            } => Ok(vec![PackageChange {
                category,
                package: name,
                arch: None,
                old_version: old,
                new_version: new,
                // A line read before its run's first line was seen gets the time it is read.
                timestamp: self
                    .run_started
                    .unwrap_or_else(|| Local::now().naive_local()),
                raw_line: String::from_utf8_lossy(bytes).into_owned(),
                last_state: None,
                logged_run: self.run.clone(),
            }]),
            ApkLine::Other => Ok(Vec::new()),
        }
    }

    // Only a file's own lines say which run its lines belong to: the files replay is given
    // may come from different hosts, and a run cut by a rotation is rare.
    fn begin_file(&mut self, _path: &Path) {
        self.run = None;
    }

    fn has_state(&self) -> bool {
        self.run_started.is_some()
    }

    fn take_run_start(&mut self) -> Option<RunStart> {
        self.run_start.take()
    }
}

/// Stores an optional log time as text.
mod optional_time {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

    #[expect(
        clippy::ref_option,
        reason = "serde's `with` hands the field by reference"
    )]
    pub fn serialize<S: Serializer>(
        time: &Option<NaiveDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.collect_str(&time.format(FORMAT)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<NaiveDateTime>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| NaiveDateTime::parse_from_str(&t, FORMAT).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::parse::manager::corpus::summary;
    use crate::parse::manager::{corpus, ChangeLog, Reader};

    fn read(bytes: &[u8]) -> (Vec<PackageChange>, Reader<ApkLog>) {
        corpus::read(bytes, "apk.log")
    }

    #[test]
    fn the_corpus_log_reads_as_its_runs_say() {
        let Some((_, bytes)) = corpus::file("apk", "apk.log") else {
            return;
        };
        let (changes, reader) = read(&bytes);
        assert_eq!(
            summary(&changes),
            [
                "package_install glibc - 2.43-r1",
                "package_install glibc-bin - 2.43-r1",
                "package_install glibc-i18n - 2.43-r1",
                "package_remove glibc-i18n 2.43-r1 -",
                "package_install libgcc - 15.2.0-r2",
                "package_install libstdc++ - 15.2.0-r2",
            ]
        );
        // Each change carries its run's time, written in UTC.
        let run = |stamp: &str| {
            NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
                .map(local_from_utc)
                .ok()
        };
        assert_eq!(Some(changes[0].timestamp), run("2026-05-05 08:15:43"));
        assert_eq!(Some(changes[3].timestamp), run("2026-05-05 08:15:44"));
        assert_eq!(Some(changes[5].timestamp), run("2026-05-05 08:15:45"));
        assert_eq!(reader.stats().malformed, 0);

        // And its run's command, as apk logged it; apk names no user.
        let command = |index: usize| {
            let run = changes[index]
                .logged_run
                .as_ref()
                .expect("every change has a run");
            assert_eq!(run.user, None);
            assert_eq!(Some(run.started), Some(changes[index].timestamp));
            run.command.clone().unwrap_or_default()
        };
        assert_eq!(
            command(0),
            "apk add --no-cache /tmp/glibc-2.43-r1.apk /tmp/glibc-bin-2.43-r1.apk \
             /tmp/glibc-i18n-2.43-r1.apk"
        );
        assert_eq!(command(3), "apk del glibc-i18n");
    }

    #[test]
    fn every_verb_and_pin_is_read() {
        let log = b"Running `apk upgrade` at 2026-05-05 08:15:42\n\
( 1/12) Upgrading musl (1.2.4-r1 -> 1.2.4-r2)\n\
( 2/12) Downgrading curl@edge (8.6.0-r0 -> 8.5.0-r0)\n\
( 3/12) Reinstalling busybox (1.36.1-r15)\n\
( 4/12) Replacing zlib (1.3.1-r0 -> 1.3.1-r0)\n\
( 5/12) Updating pinning ca-certificates@edge (20240226-r0)\n\
( 6/12) [APK unavailable, skipped] Reinstalling tzdata (2024a-r0)\n\
(10/12) Purging .build-deps (20240505.081542)\n\
WARNING: opening from cache https://dl-cdn.alpinelinux.org/alpine/v3.23/main: No such file\n\
Executing busybox-1.36.1-r15.trigger\n";
        let (changes, reader) = read(log);
        assert_eq!(
            summary(&changes),
            [
                "package_upgrade musl 1.2.4-r1 1.2.4-r2",
                "package_downgrade curl 8.6.0-r0 8.5.0-r0",
                "package_reinstall busybox 1.36.1-r15 1.36.1-r15",
                "package_reinstall zlib 1.3.1-r0 1.3.1-r0",
                "package_remove .build-deps 20240505.081542 -",
            ]
        );
        assert_eq!(reader.stats().malformed, 0);
    }

    #[test]
    fn malformed_lines_are_rejected_with_the_reason() {
        let cases: [(&[u8], LineError); 5] = [
            (b"Running `apk add` at yesterday", LineError::BadTimestamp),
            (
                b"(1/1) Installing glibc",
                LineError::BadPackage {
                    text: "Installing glibc".to_owned(),
                },
            ),
            (
                b"(1/1) Upgrading glibc (2.43-r1)",
                LineError::BadPackage {
                    text: "Upgrading glibc (2.43-r1)".to_owned(),
                },
            ),
            (
                b"(1/1) Exploding glibc (2.43-r1)",
                LineError::UnknownAction {
                    text: "Exploding".to_owned(),
                },
            ),
            (
                b"(1/1) Installing \xff (1)",
                LineError::InvalidUtf8 { offset: 17 },
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
        assert_eq!(parse_line(b"(1/x) Installing a (1)"), Ok(ApkLine::Other));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ApkLog::default().feed(&bytes);
        }

        #[test]
        fn arbitrary_package_lines_never_panic(tail in "\\PC{0,60}") {
            let _ = ApkLog::default().feed(format!("(1/2) {tail}").as_bytes());
        }
    }
}
