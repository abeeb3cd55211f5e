//! apt's own record of its runs (`/var/log/apt/history.log`), read into types and indexed.
//!
//! In: a history file's bytes, plain or gzip. Out: [`AptHistoryEntry`] values, one per apt
//! run, and an [`AptHistoryIndex`] that finds the run whose window covers a dpkg line and that
//! lists its package. State: counters of what was skipped; the index holds the entries.
//!
//! apt writes one entry per run, entries separated by a blank line:
//!
//! ```text
//! Start-Date: 2016-03-23  12:45:46
//! Commandline: apt-get install git
//! Requested-By: alice (1000)
//! Install: liberror-perl:amd64 (0.17-1.1, automatic), git:amd64 (1:1.9.1-1ubuntu0.3)
//! Upgrade: curl:amd64 (7.68.0-1ubuntu2.12, 7.68.0-1ubuntu2.13)
//! Error: Sub-process /usr/bin/dpkg returned an error code (1)
//! End-Date: 2016-03-23  12:47:58
//! ```
//!
//! Dates are the host's local wall-clock time, like dpkg.log's. `Requested-By` appears since
//! apt 1.2 when apt ran under sudo; `Commandline` is missing for runs started through
//! libapt by other programs. The package lists, `Commandline` and `Requested-By` are written
//! when the run starts; `Error` and `End-Date` when it ends, so a run that was killed leaves
//! an entry without `End-Date`.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use thiserror::Error;
use tracing::debug;

/// The longest line accepted, in bytes: a release upgrade lists thousands of packages on one
/// line, a few hundred kilobytes.
pub const MAX_LINE_LEN: usize = 4 * 1024 * 1024;

/// Why a history file, or one of its lines or entries, could not be read.
#[derive(Debug, Error)]
pub enum AptHistoryError {
    /// The file could not be opened or read.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A line is longer than [`MAX_LINE_LEN`].
    #[error("line {line_no} is longer than the {MAX_LINE_LEN} bytes accepted")]
    LineTooLong {
        /// One-based line number.
        line_no: u64,
    },
    /// A line is not UTF-8.
    #[error("line {line_no} is not valid utf-8")]
    InvalidUtf8 {
        /// One-based line number.
        line_no: u64,
    },
    /// A line is not `Field: value`.
    #[error("line {line_no} is not a `field: value` line")]
    NotAField {
        /// One-based line number.
        line_no: u64,
    },
    /// A `Start-Date` or `End-Date` is not `YYYY-MM-DD HH:MM:SS`.
    #[error("line {line_no} has an unreadable {field}")]
    BadDate {
        /// One-based line number.
        line_no: u64,
        /// `Start-Date` or `End-Date`.
        field: &'static str,
    },
    /// An item of a package list is not `name[:arch] (versions)`.
    #[error("line {line_no} has an unreadable package list from item {item}")]
    BadPackageList {
        /// One-based line number.
        line_no: u64,
        /// One-based position of the first unreadable item; the items before it are kept.
        item: usize,
    },
    /// An entry has no readable `Start-Date`, so no time can be given to it.
    #[error("entry ending at line {line_no} has no readable start-date")]
    MissingStartDate {
        /// One-based number of the entry's last line.
        line_no: u64,
    },
}

/// One package as an apt history list names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptPackage {
    /// The package name.
    pub name: String,
    /// The architecture after `:`; apt writes the native one for `Architecture: all` packages.
    pub arch: Option<String>,
    /// The versions in parentheses: one for installs and removals, old then new for upgrades
    /// and downgrades, none where apt wrote `()`. apt leaves out the epoch.
    pub versions: Vec<String>,
    /// apt installed the package only as a dependency.
    pub automatic: bool,
}

/// The packages of one apt run, per action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptPackages {
    /// `Install:` — newly installed.
    pub install: Vec<AptPackage>,
    /// `Upgrade:` — replaced by a newer version.
    pub upgrade: Vec<AptPackage>,
    /// `Downgrade:` — replaced by an older version.
    pub downgrade: Vec<AptPackage>,
    /// `Reinstall:` — installed again at the same version.
    pub reinstall: Vec<AptPackage>,
    /// `Remove:` — removed, config files kept.
    pub remove: Vec<AptPackage>,
    /// `Purge:` — removed with config files.
    pub purge: Vec<AptPackage>,
}

impl AptPackages {
    /// Returns every listed package, whatever its action.
    pub fn all(&self) -> impl Iterator<Item = &AptPackage> {
        self.install
            .iter()
            .chain(&self.upgrade)
            .chain(&self.downgrade)
            .chain(&self.reinstall)
            .chain(&self.remove)
            .chain(&self.purge)
    }

    fn list_mut(&mut self, field: &str) -> Option<&mut Vec<AptPackage>> {
        match field {
            "Install" => Some(&mut self.install),
            "Upgrade" => Some(&mut self.upgrade),
            "Downgrade" => Some(&mut self.downgrade),
            "Reinstall" => Some(&mut self.reinstall),
            "Remove" => Some(&mut self.remove),
            "Purge" => Some(&mut self.purge),
            _ => None,
        }
    }
}

/// One apt run, as its history entry records it. Strings are as read, not yet escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptHistoryEntry {
    /// `Start-Date`, local wall-clock time.
    pub start: NaiveDateTime,
    /// `End-Date`, absent when the run did not finish writing its entry.
    pub end: Option<NaiveDateTime>,
    /// `Commandline`: the command as typed, when apt knew it.
    pub commandline: Option<String>,
    /// `Requested-By`: the user who ran apt through sudo, and their uid when written.
    pub requested_by: Option<(String, Option<u32>)>,
    /// `Error`: how the run failed, when it did.
    pub error: Option<String>,
    /// The packages the run changed, per action.
    pub packages: AptPackages,
}

/// Counters of one read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AptHistoryStats {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Entries kept.
    pub entries: u64,
    /// Lines that could not be read and were skipped.
    pub malformed_lines: u64,
    /// Entries without a readable `Start-Date`, skipped whole.
    pub malformed_entries: u64,
}

/// The entries of one history file, in file order.
#[derive(Debug, Clone, Default)]
pub struct AptHistory {
    /// The entries read.
    pub entries: Vec<AptHistoryEntry>,
    /// What was read and what was skipped.
    pub stats: AptHistoryStats,
}

/// Reads a history file, plain, gzip or xz (told apart by content, not by name).
///
/// # Errors
/// [`AptHistoryError::Read`] when the file cannot be opened or read; malformed lines and
/// entries are counted in the result, never returned.
pub fn read_file(path: &Path) -> Result<AptHistory, AptHistoryError> {
    let read_error = |source| AptHistoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = crate::replay::open_log(path).map_err(read_error)?;
    read_entries(&mut *reader, path).map_err(read_error)
}

/// Reads history entries from `reader`; `path` only labels diagnostics.
///
/// # Errors
/// Only what the reader returns; malformed lines and entries are counted and skipped.
pub fn read_entries(reader: &mut dyn BufRead, path: &Path) -> io::Result<AptHistory> {
    let mut history = AptHistory::default();
    let mut open = OpenEntry::default();
    let mut line = Vec::new();

    loop {
        line.clear();
        if crate::replay::read_bounded_line(reader, &mut line, MAX_LINE_LEN)? == 0 {
            break;
        }
        history.stats.lines += 1;
        let line_no = history.stats.lines;

        if let Err(err) = open.take_line(&line, line_no, path, &mut history) {
            history.stats.malformed_lines += 1;
            debug!(path = %path.display(), error = %err, "skipping unreadable apt history line");
        }
    }

    // A file cut short still yields its last entry: apt wrote the lists when the run started.
    open.close(history.stats.lines, &mut history, path);
    Ok(history)
}

/// The entry being read.
#[derive(Debug, Default)]
struct OpenEntry {
    has_lines: bool,
    start: Option<NaiveDateTime>,
    end: Option<NaiveDateTime>,
    commandline: Option<String>,
    requested_by: Option<(String, Option<u32>)>,
    error: Option<String>,
    packages: AptPackages,
}

impl OpenEntry {
    /// Takes one line; a blank line or a new `Start-Date` closes the entry before it.
    fn take_line(
        &mut self,
        bytes: &[u8],
        line_no: u64,
        path: &Path,
        history: &mut AptHistory,
    ) -> Result<(), AptHistoryError> {
        if bytes.len() > MAX_LINE_LEN {
            self.has_lines = true;
            return Err(AptHistoryError::LineTooLong { line_no });
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            self.has_lines = true;
            return Err(AptHistoryError::InvalidUtf8 { line_no });
        };
        let text = text.strip_suffix('\r').unwrap_or(text);

        if text.trim().is_empty() {
            self.close(line_no - 1, history, path);
            return Ok(());
        }

        let Some((field, value)) = text.split_once(':') else {
            self.has_lines = true;
            return Err(AptHistoryError::NotAField { line_no });
        };
        let value = value.trim();

        // An entry cut short is followed directly by the next one, without a blank line.
        if field == "Start-Date" && self.has_lines {
            self.close(line_no - 1, history, path);
        }
        self.has_lines = true;

        match field {
            "Start-Date" => {
                self.start = Some(parse_date(value).ok_or(AptHistoryError::BadDate {
                    line_no,
                    field: "start-date",
                })?);
            }
            "End-Date" => {
                self.end = Some(parse_date(value).ok_or(AptHistoryError::BadDate {
                    line_no,
                    field: "end-date",
                })?);
            }
            "Commandline" => self.commandline = Some(value.to_owned()),
            "Requested-By" => self.requested_by = Some(parse_requested_by(value)),
            "Error" => self.error = Some(value.to_owned()),
            _ => {
                if let Some(list) = self.packages.list_mut(field) {
                    let (packages, failed_at) = parse_packages(value);
                    list.extend(packages);
                    if let Some(item) = failed_at {
                        return Err(AptHistoryError::BadPackageList { line_no, item });
                    }
                }
                // Fields a newer apt may add are not errors; they carry nothing Fenrir uses.
            }
        }
        Ok(())
    }

    /// Ends the entry whose last line is `line_no`, keeping it when it has a start.
    fn close(&mut self, line_no: u64, history: &mut AptHistory, path: &Path) {
        let open = std::mem::take(self);
        if !open.has_lines {
            return;
        }
        let Some(start) = open.start else {
            history.stats.malformed_entries += 1;
            let err = AptHistoryError::MissingStartDate { line_no };
            debug!(path = %path.display(), error = %err, "skipping apt history entry");
            return;
        };
        history.stats.entries += 1;
        history.entries.push(AptHistoryEntry {
            start,
            end: open.end,
            commandline: open.commandline,
            requested_by: open.requested_by,
            error: open.error,
            packages: open.packages,
        });
    }
}

/// Reads `2016-03-23  12:45:46`; apt pads with two spaces, any run of blanks is accepted.
fn parse_date(text: &str) -> Option<NaiveDateTime> {
    let mut parts = text.split_whitespace();
    let (date, time) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S").ok()
}

/// Reads `alice (1000)`; a name without a readable uid keeps the whole text as the name.
fn parse_requested_by(text: &str) -> (String, Option<u32>) {
    if let Some((name, rest)) = text.rsplit_once(" (") {
        if let Some(uid) = rest.strip_suffix(')').and_then(|u| u.trim().parse().ok()) {
            return (name.trim().to_owned(), Some(uid));
        }
    }
    (text.to_owned(), None)
}

/// Reads `a:amd64 (1.0, automatic), b:amd64 (1.0, 2.0), c:all ()`.
///
/// Returns the items read and, when one could not be, its one-based position; reading stops
/// there, since the separators after a broken item cannot be trusted.
fn parse_packages(text: &str) -> (Vec<AptPackage>, Option<usize>) {
    let mut packages = Vec::new();
    let mut rest = text.trim();

    while !rest.is_empty() {
        let item = packages.len() + 1;
        let Some((head, tail)) = rest.split_once('(') else {
            return (packages, Some(item));
        };
        let Some((inside, after)) = tail.split_once(')') else {
            return (packages, Some(item));
        };
        let head = head.trim();
        let (name, arch) = match head.split_once(':') {
            Some((name, arch)) => (name, Some(arch)),
            None => (head, None),
        };
        let is_word = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace());
        if !is_word(name) || !arch.is_none_or(is_word) {
            return (packages, Some(item));
        }

        let mut versions = Vec::new();
        let mut automatic = false;
        for part in inside.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "automatic" {
                automatic = true;
            } else {
                versions.push(part.to_owned());
            }
        }
        packages.push(AptPackage {
            name: name.to_owned(),
            arch: arch.map(str::to_owned),
            versions,
            automatic,
        });

        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if after.is_empty() => after,
            None => return (packages, Some(item + 1)),
        };
    }
    (packages, None)
}

/// One entry in the index, with the end of the window it covers and its packages by name.
#[derive(Debug)]
struct IndexedEntry {
    entry: AptHistoryEntry,
    /// The last second the run covers: its `End-Date`, else the second before the next run
    /// started, else forever.
    covers_until: NaiveDateTime,
    /// Listed architectures per package name (`None` where apt wrote none).
    listed: HashMap<String, Vec<Option<String>>>,
}

/// History entries ordered by start, to find the apt run behind a dpkg line.
#[derive(Debug, Default)]
pub struct AptHistoryIndex {
    entries: Vec<IndexedEntry>,
    /// For each position, the latest `covers_until` of it and every entry before it, so a
    /// lookup knows when no earlier, overlapping run can cover a time any more.
    latest_until: Vec<NaiveDateTime>,
}

impl AptHistoryIndex {
    /// Builds the index from entries of any number of files in any order; an entry read
    /// twice (the same rotation given twice) counts once.
    #[must_use]
    pub fn new(mut entries: Vec<AptHistoryEntry>) -> Self {
        entries.sort_by_key(|e| e.start);
        let mut unique: Vec<AptHistoryEntry> = Vec::with_capacity(entries.len());
        for entry in entries {
            let seen = unique
                .iter()
                .rev()
                .take_while(|kept| kept.start == entry.start)
                .any(|kept| *kept == entry);
            if !seen {
                unique.push(entry);
            }
        }

        let starts: Vec<NaiveDateTime> = unique.iter().map(|e| e.start).collect();
        let mut indexed = Vec::with_capacity(unique.len());
        let mut latest_until = Vec::with_capacity(unique.len());
        for entry in unique {
            let next_start = starts[starts.partition_point(|s| *s <= entry.start)..]
                .first()
                .copied();
            let covers_until = match (entry.end, next_start) {
                (Some(end), _) => end,
                (None, Some(next)) => next - chrono::Duration::seconds(1),
                (None, None) => NaiveDateTime::MAX,
            };
            let mut listed: HashMap<String, Vec<Option<String>>> = HashMap::new();
            for package in entry.packages.all() {
                listed
                    .entry(package.name.clone())
                    .or_default()
                    .push(package.arch.clone());
            }
            let latest = latest_until
                .last()
                .map_or(covers_until, |l: &NaiveDateTime| (*l).max(covers_until));
            latest_until.push(latest);
            indexed.push(IndexedEntry {
                entry,
                covers_until,
                listed,
            });
        }

        Self {
            entries: indexed,
            latest_until,
        }
    }

    /// Returns the number of distinct entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether the index holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Returns the entry at `position`, as numbered by [`AptHistoryIndex::find`].
    #[must_use]
    pub fn entry(&self, position: usize) -> Option<&AptHistoryEntry> {
        self.entries.get(position).map(|e| &e.entry)
    }

    /// Returns the entries in start order.
    pub fn entries(&self) -> impl Iterator<Item = &AptHistoryEntry> {
        self.entries.iter().map(|e| &e.entry)
    }

    /// Finds the one apt run that covers `at` (inclusive at both ends) and lists `package`.
    ///
    /// Architectures must agree when both sides name one, except `all`: apt writes the native
    /// architecture for packages dpkg logs as `all`. Returns `None` when no run, or more than
    /// one, fits: a change is never pinned on a run by guess.
    #[must_use]
    pub fn find(&self, at: NaiveDateTime, package: &str, arch: Option<&str>) -> Option<usize> {
        let started = self.entries.partition_point(|e| e.entry.start <= at);
        let mut found = None;
        for position in (0..started).rev() {
            if self.latest_until[position] < at {
                break;
            }
            let candidate = &self.entries[position];
            if candidate.covers_until >= at && candidate.lists(package, arch) {
                if found.is_some() {
                    return None;
                }
                found = Some(position);
            }
        }
        found
    }
}

impl IndexedEntry {
    fn lists(&self, package: &str, arch: Option<&str>) -> bool {
        self.listed.get(package).is_some_and(|arches| {
            arches.iter().any(|listed| match (listed.as_deref(), arch) {
                (Some(a), Some(b)) => a == b || a == "all" || b == "all",
                _ => true,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use proptest::prelude::*;

    use super::*;

    fn corpus(name: &str) -> Option<PathBuf> {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/corpus/other/apt_history"
        ))
        .join(name);
        if path.exists() {
            Some(path)
        } else {
            println!("skipping: the apt history corpus has no {}", path.display());
            None
        }
    }

    fn time(text: &str) -> NaiveDateTime {
        match NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
            Ok(time) => time,
            Err(err) => panic!("bad test timestamp {text}: {err}"),
        }
    }

    fn read_bytes(bytes: &[u8]) -> AptHistory {
        let mut reader = BufReader::new(bytes);
        match read_entries(&mut reader, Path::new("test")) {
            Ok(history) => history,
            Err(err) => panic!("reading from memory failed: {err}"),
        }
    }

    fn package(name: &str, arch: &str, versions: &[&str], automatic: bool) -> AptPackage {
        AptPackage {
            name: name.to_owned(),
            arch: Some(arch.to_owned()),
            versions: versions.iter().map(|v| (*v).to_owned()).collect(),
            automatic,
        }
    }

    /// Real entries from public hosts, with what each field means.
    #[test]
    fn real_entries_read_into_their_fields() -> Result<(), AptHistoryError> {
        struct Case {
            file: &'static str,
            index: usize,
            start: &'static str,
            end: Option<&'static str>,
            commandline: Option<&'static str>,
            requested_by: Option<(&'static str, Option<u32>)>,
            check: fn(&AptPackages),
        }
        let cases = [
            // A plain install: two automatic dependencies and the package asked for.
            Case {
                file: "PhoenixYanrongLi__ServerLog__apt__history.log",
                index: 0,
                start: "2016-03-23 12:45:46",
                end: Some("2016-03-23 12:47:58"),
                commandline: Some("apt-get install git"),
                requested_by: None,
                check: |p| {
                    assert_eq!(
                        p.install,
                        vec![
                            package("liberror-perl", "amd64", &["0.17-1.1"], true),
                            package("git-man", "amd64", &["1.9.1-1ubuntu0.3"], true),
                            package("git", "amd64", &["1.9.1-1ubuntu0.3"], false),
                        ]
                    );
                    assert!(p.upgrade.is_empty() && p.remove.is_empty());
                },
            },
            // Run through sudo by a named user: apt records who asked.
            Case {
                file: "Tang-Haojin__riscv64-debian__var__log__apt__history.log",
                index: 0,
                start: "2021-11-02 16:11:18",
                end: Some("2021-11-02 16:11:24"),
                commandline: Some("apt upgrade"),
                requested_by: Some(("debian", Some(1000))),
                check: |p| {
                    assert_eq!(p.upgrade.len(), 3);
                    assert_eq!(
                        p.upgrade[1],
                        package("debconf", "riscv64", &["1.5.78", "1.5.79"], false)
                    );
                },
            },
            // A purge started without a command line (libapt called by another program),
            // where apt wrote no version for packages already gone.
            Case {
                file: "Stonie__Kurobox-DebianWheezy__var__log__apt__history.log",
                index: 2,
                start: "2012-07-07 07:38:08",
                end: Some("2012-07-07 07:38:35"),
                commandline: None,
                requested_by: None,
                check: |p| {
                    assert_eq!(p.purge.len(), 21);
                    assert_eq!(p.purge[0], package("libtalloc1", "powerpc", &[], false));
                },
            },
        ];

        for case in cases {
            let Some(path) = corpus(case.file) else {
                continue;
            };
            let history = read_file(&path)?;
            assert_eq!(history.stats.malformed_lines, 0, "{}", case.file);
            let entry = &history.entries[case.index];
            assert_eq!(entry.start, time(case.start), "{}", case.file);
            assert_eq!(entry.end, case.end.map(time), "{}", case.file);
            assert_eq!(entry.commandline.as_deref(), case.commandline);
            assert_eq!(
                entry
                    .requested_by
                    .as_ref()
                    .map(|(name, uid)| (name.as_str(), *uid)),
                case.requested_by
            );
            (case.check)(&entry.packages);
        }
        Ok(())
    }

    #[test]
    fn every_corpus_file_reads_without_loss() -> Result<(), AptHistoryError> {
        let Some(any) = corpus("SOURCES.tsv") else {
            return Ok(());
        };
        let dir = any.parent().unwrap_or(Path::new("."));
        let mut files = 0;
        for item in std::fs::read_dir(dir).map_err(|source| AptHistoryError::Read {
            path: dir.to_path_buf(),
            source,
        })? {
            let path = match item {
                Ok(item) => item.path(),
                Err(source) => {
                    return Err(AptHistoryError::Read {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
            };
            if path.extension().is_some_and(|e| e == "tsv") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| AptHistoryError::Read {
                path: path.clone(),
                source,
            })?;
            let history = read_file(&path)?;
            let starts = text
                .lines()
                .filter(|l| l.starts_with("Start-Date:"))
                .count();
            let ends = text.lines().filter(|l| l.starts_with("End-Date:")).count();
            assert_eq!(history.entries.len(), starts, "{}", path.display());
            let read_ends = history.entries.iter().filter(|e| e.end.is_some()).count();
            assert_eq!(read_ends, ends, "{}", path.display());
            assert_eq!(history.stats.malformed_lines, 0, "{}", path.display());
            files += 1;
        }
        assert!(files > 10, "only {files} corpus files found");
        Ok(())
    }

    #[test]
    fn malformed_lines_and_entries_are_counted_and_the_rest_kept() {
        let mut input = Vec::new();
        input.extend_from_slice(b"garbage without a colon\n\n");
        input.extend_from_slice(b"Commandline: entry without a start\n\n");
        input.extend_from_slice(b"Start-Date: 2020-01-02  03:04:05\n");
        input.extend_from_slice(b"Commandline: apt install \xff\xfe\n");
        input.extend_from_slice(b"Install: good:amd64 (1.0), broken:amd64 1.0, never:amd64 (2)\n");
        input.extend_from_slice(b"Remove: ");
        input.extend(vec![b'x'; MAX_LINE_LEN + 10]);
        input.extend_from_slice(b"\nEnd-Date: 2020-01-02  03:05:00\n");
        // A truncated entry at the end of the file, cut inside its package list.
        input.extend_from_slice(b"Start-Date: 2020-01-03  00:00:00\nInstall: a:amd64 (1.0), b:am");

        let history = read_bytes(&input);
        assert_eq!(history.stats.malformed_entries, 2);
        assert_eq!(history.stats.malformed_lines, 5);
        assert_eq!(history.entries.len(), 2);

        let first = &history.entries[0];
        assert_eq!(first.commandline, None);
        assert_eq!(
            first.packages.install,
            vec![package("good", "amd64", &["1.0"], false)]
        );
        assert_eq!(first.end, Some(time("2020-01-02 03:05:00")));

        let cut = &history.entries[1];
        assert_eq!(cut.end, None);
        assert_eq!(
            cut.packages.install,
            vec![package("a", "amd64", &["1.0"], false)]
        );
    }

    #[test]
    fn an_entry_without_blank_line_before_the_next_still_ends() {
        let history = read_bytes(
            b"Start-Date: 2020-01-02  03:04:05\nCommandline: apt install a\n\
              Start-Date: 2020-01-02  04:00:00\r\nCommandline: apt install b\r\n",
        );
        assert_eq!(history.entries.len(), 2);
        assert_eq!(
            history.entries[1].commandline.as_deref(),
            Some("apt install b")
        );
        assert_eq!(history.entries[1].start, time("2020-01-02 04:00:00"));
    }

    #[test]
    fn requested_by_without_uid_keeps_the_name() {
        assert_eq!(
            parse_requested_by("alice (1000)"),
            ("alice".to_owned(), Some(1000))
        );
        assert_eq!(parse_requested_by("alice"), ("alice".to_owned(), None));
        assert_eq!(
            parse_requested_by("alice (x)"),
            ("alice (x)".to_owned(), None)
        );
    }

    fn entry(start: &str, end: Option<&str>, command: &str, install: &[&str]) -> AptHistoryEntry {
        AptHistoryEntry {
            start: time(start),
            end: end.map(time),
            commandline: Some(command.to_owned()),
            requested_by: None,
            error: None,
            packages: AptPackages {
                install: install
                    .iter()
                    .map(|name| package(name, "amd64", &["1"], false))
                    .collect(),
                ..AptPackages::default()
            },
        }
    }

    #[test]
    fn index_finds_the_run_whose_window_and_list_fit() {
        let index = AptHistoryIndex::new(vec![
            entry("2020-01-01 12:00:00", None, "killed", &["k"]),
            entry(
                "2020-01-01 10:00:00",
                Some("2020-01-01 10:05:00"),
                "first",
                &["a"],
            ),
            entry(
                "2020-01-01 10:00:00",
                Some("2020-01-01 10:05:00"),
                "first",
                &["a"],
            ),
            entry("2020-01-01 11:00:00", None, "cut", &["a"]),
            entry(
                "2020-01-01 11:30:00",
                Some("2020-01-01 11:31:00"),
                "next",
                &["b"],
            ),
        ]);
        let command = |at: &str, name: &str, arch: Option<&str>| {
            index
                .find(time(at), name, arch)
                .and_then(|p| index.entry(p))
                .and_then(|e| e.commandline.clone())
        };

        assert_eq!(index.len(), 4, "the duplicate entry counts once");
        assert_eq!(
            command("2020-01-01 10:00:00", "a", None).as_deref(),
            Some("first")
        );
        assert_eq!(
            command("2020-01-01 10:05:00", "a", Some("amd64")).as_deref(),
            Some("first")
        );
        assert_eq!(command("2020-01-01 10:05:01", "a", None), None);
        assert_eq!(command("2020-01-01 09:59:59", "a", None), None);
        assert_eq!(command("2020-01-01 10:01:00", "b", None), None);
        assert_eq!(command("2020-01-01 10:01:00", "a", Some("i386")), None);
        assert_eq!(
            command("2020-01-01 10:01:00", "a", Some("all")).as_deref(),
            Some("first")
        );
        // Without an end, a run covers up to the next run's start, excluded.
        assert_eq!(
            command("2020-01-01 11:29:59", "a", None).as_deref(),
            Some("cut")
        );
        assert_eq!(command("2020-01-01 11:30:00", "a", None), None);
        // The last run without an end covers everything after it.
        assert_eq!(
            command("2030-01-01 00:00:00", "k", None).as_deref(),
            Some("killed")
        );
    }

    #[test]
    fn overlapping_runs_listing_the_same_package_attribute_nothing() {
        let index = AptHistoryIndex::new(vec![
            entry(
                "2020-01-01 10:00:00",
                Some("2020-01-05 00:00:00"),
                "long",
                &["a", "c"],
            ),
            entry(
                "2020-01-02 10:00:00",
                Some("2020-01-02 10:01:00"),
                "short",
                &["a", "b"],
            ),
        ]);
        assert_eq!(index.find(time("2020-01-02 10:00:30"), "a", None), None);
        assert_eq!(index.find(time("2020-01-02 10:00:30"), "b", None), Some(1));
        assert_eq!(index.find(time("2020-01-02 10:00:30"), "c", None), Some(0));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = read_bytes(&bytes);
        }

        #[test]
        fn arbitrary_field_values_never_panic(
            field in prop::sample::select(vec![
                "Start-Date", "End-Date", "Install", "Upgrade", "Purge", "Requested-By", "X",
            ]),
            value in "\\PC{0,80}",
        ) {
            let text = format!("Start-Date: 2020-01-02  03:04:05\n{field}: {value}\n");
            let history = read_bytes(text.as_bytes());
            prop_assert!(history.entries.len() <= 1);
        }
    }
}
