//! dpkg's database of packages (`<admindir>/status` and its journal `<admindir>/updates/`),
//! read into types.
//!
//! In: the bytes of the status file and of each journal file. Out: [`Stanza`]s (every field of
//! one record, for any reader of the database) and an [`InstalledSet`]: the packages dpkg
//! knows as present, with architecture, version and state. State: counters of what was
//! skipped.
//!
//! The status file is a sequence of deb822 records separated by blank lines:
//!
//! ```text
//! Package: vim
//! Status: install ok installed
//! Architecture: amd64
//! Version: 2:9.0.1378-2
//! Description: Vi IMproved - enhanced vi editor
//!  Vim is an almost compatible version of the UNIX editor Vi.
//! ```
//!
//! A line starting with a space or a tab continues the field above it. Field names are
//! case-insensitive. `Status` holds three words — the selection, a flag and the state — and
//! only the state says what is on disk. While a run is going on, dpkg records every change as
//! one record per file in `updates/` (files named by a number, applied in order) before it
//! folds them into `status`, so the database is `status` with the journal applied on top.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::debug;

use super::dpkg::{PackageRef, PackageState};

/// The longest line accepted, in bytes; longer ones are cut and the record is skipped when
/// the cut line is one Fenrir reads.
pub const MAX_LINE_LEN: usize = 1024 * 1024;

/// Why the database could not be read.
#[derive(Debug, Error)]
pub enum StatusError {
    /// A file of the database could not be opened or read.
    #[error("failed to read {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

/// One record of the database: its fields in file order, continuation lines joined with
/// `\n`. Bytes that are not UTF-8 are replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    /// `(name, value)` pairs, names as written.
    pub fields: Vec<(String, String)>,
    /// The one-based line the record starts on.
    pub line_no: u64,
    /// Whether a line of the record was longer than [`MAX_LINE_LEN`] and was cut.
    pub has_cut_line: bool,
}

impl Stanza {
    /// Returns the value of the first field named `name`, compared case-insensitively.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Reads the records of one database file; `path` only labels diagnostics.
///
/// # Errors
/// Only what the reader returns.
pub fn read_stanzas(reader: &mut dyn BufRead, path: &Path) -> io::Result<Vec<Stanza>> {
    let mut stanzas = Vec::new();
    let mut open = Stanza::default();
    let mut line = Vec::new();
    let mut line_no = 0_u64;

    loop {
        line.clear();
        if crate::replay::read_bounded_line(reader, &mut line, MAX_LINE_LEN)? == 0 {
            break;
        }
        line_no += 1;
        let cut = line.len() > MAX_LINE_LEN;
        if cut {
            line.truncate(MAX_LINE_LEN);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.strip_suffix('\r').unwrap_or(&text);

        if text.trim().is_empty() {
            if !open.fields.is_empty() || open.has_cut_line {
                stanzas.push(std::mem::take(&mut open));
            }
            open = Stanza::default();
            continue;
        }
        if open.fields.is_empty() && !open.has_cut_line {
            open.line_no = line_no;
        }
        open.has_cut_line |= cut;

        if text.starts_with([' ', '\t']) {
            match open.fields.last_mut() {
                Some((_, value)) => {
                    value.push('\n');
                    value.push_str(text.trim_start_matches([' ', '\t']));
                }
                None => {
                    debug!(path = %path.display(), line_no, "continuation line without a field");
                }
            }
            continue;
        }
        if let Some((name, value)) = text.split_once(':') {
            open.fields
                .push((name.trim().to_owned(), value.trim().to_owned()));
        } else {
            debug!(path = %path.display(), line_no, "skipping a line that is no field");
        }
    }
    if !open.fields.is_empty() || open.has_cut_line {
        stanzas.push(open);
    }
    Ok(stanzas)
}

/// One package dpkg's database knows, as far as Fenrir compares packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    /// The package name.
    pub name: String,
    /// `Architecture`, absent in records of very old dpkg versions.
    pub arch: Option<String>,
    /// `Version`, absent for a package that is known but has nothing on disk.
    pub version: Option<String>,
    /// The third word of `Status`: what is on disk.
    pub state: PackageState,
}

impl InstalledPackage {
    /// Reads the package of one record.
    ///
    /// # Errors
    /// A record without `Package`, without a readable `Status`, or with a cut line among those
    /// fields is refused with the reason.
    pub fn from_stanza(stanza: &Stanza) -> Result<Self, &'static str> {
        let name = stanza.field("Package").ok_or("no Package field")?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err("invalid Package field");
        }
        let status = stanza.field("Status").ok_or("no Status field")?;
        let state = status
            .split_whitespace()
            .nth(2)
            .and_then(|word| word.parse::<PackageState>().ok())
            .ok_or("unreadable Status field")?;
        if stanza.has_cut_line {
            return Err("a line longer than the limit");
        }
        let non_empty = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(str::to_owned);
        Ok(Self {
            name: name.to_owned(),
            arch: non_empty(stanza.field("Architecture")),
            version: non_empty(stanza.field("Version")),
            state,
        })
    }

    /// Returns the package as dpkg names it in its log.
    #[must_use]
    pub fn package_ref(&self) -> PackageRef {
        PackageRef {
            name: self.name.clone(),
            arch: self.arch.clone(),
        }
    }
}

/// Counters of one read of the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusStats {
    /// Records read, from `status` and the journal.
    pub records: u64,
    /// Journal files applied on top of `status`.
    pub journal_files: u64,
    /// Records that could not be read and were skipped.
    pub malformed: u64,
}

/// The packages present in the database, by name and architecture: every state except
/// `not-installed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<InstalledPackage>", into = "Vec<InstalledPackage>")]
pub struct InstalledSet {
    packages: BTreeMap<PackageRef, InstalledPackage>,
}

impl From<Vec<InstalledPackage>> for InstalledSet {
    fn from(packages: Vec<InstalledPackage>) -> Self {
        let mut set = Self::default();
        for package in packages {
            set.set(package);
        }
        set
    }
}

impl From<InstalledSet> for Vec<InstalledPackage> {
    fn from(set: InstalledSet) -> Self {
        set.packages.into_values().collect()
    }
}

impl InstalledSet {
    /// Records `package` as the database now has it; `not-installed` removes it.
    pub fn set(&mut self, package: InstalledPackage) {
        let key = package.package_ref();
        if package.state == PackageState::NotInstalled {
            self.packages.remove(&key);
        } else {
            self.packages.insert(key, package);
        }
    }

    /// Applies one `status` line of dpkg's log: dpkg writes one whenever it changes a
    /// package's state in the database.
    ///
    /// A line without architecture (dpkg before 1.16.2) applies to the one package of that
    /// name when there is exactly one.
    pub fn apply_status(
        &mut self,
        package: &PackageRef,
        state: PackageState,
        version: Option<&str>,
    ) {
        let mut target = package.clone();
        if target.arch.is_none() {
            let mut same_name = self.packages.keys().filter(|k| k.name == package.name);
            if let (Some(only), None) = (same_name.next(), same_name.next()) {
                target = only.clone();
            }
        }
        self.set(InstalledPackage {
            name: target.name,
            arch: target.arch,
            version: version.map(str::to_owned),
            state,
        });
    }

    /// Returns the package of that name and architecture.
    #[must_use]
    pub fn get(&self, package: &PackageRef) -> Option<&InstalledPackage> {
        self.packages.get(package)
    }

    /// Returns the packages, ordered by name then architecture.
    pub fn iter(&self) -> impl Iterator<Item = &InstalledPackage> {
        self.packages.values()
    }

    /// Returns how many packages are present.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Returns whether no package is present.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// Returns every name and architecture whose entry differs between `self` and `other`,
    /// with both sides.
    #[must_use]
    pub fn differences<'a>(
        &'a self,
        other: &'a Self,
    ) -> Vec<(Option<&'a InstalledPackage>, Option<&'a InstalledPackage>)> {
        let mut keys: Vec<&PackageRef> =
            self.packages.keys().chain(other.packages.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|key| (self.packages.get(key), other.packages.get(key)))
            .filter(|(before, after)| before != after)
            .collect()
    }
}

/// Reads dpkg's database in `admin_dir`: `status`, then every journal file in `updates/` in
/// the order dpkg applies them.
///
/// # Errors
/// A missing or unreadable `status` file; a journal file that vanished while being listed
/// (dpkg folded it into `status`) is skipped. Malformed records are counted, never returned.
pub fn read_database(admin_dir: &Path) -> Result<(InstalledSet, StatusStats), StatusError> {
    let mut set = InstalledSet::default();
    let mut stats = StatusStats::default();

    read_into(&admin_dir.join("status"), &mut set, &mut stats, false)?;
    for path in journal_files(admin_dir)? {
        if read_into(&path, &mut set, &mut stats, true)? {
            stats.journal_files += 1;
        }
    }
    Ok((set, stats))
}

/// Lists the journal files in `admin_dir/updates` in the order dpkg applies them.
///
/// # Errors
/// An `updates` directory that exists but cannot be listed.
pub fn journal_files(admin_dir: &Path) -> Result<Vec<PathBuf>, StatusError> {
    let updates = admin_dir.join("updates");
    let mut journal: Vec<(u64, PathBuf)> = match fs::read_dir(&updates) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                // dpkg's journal files are named by decimal numbers; others are its temporaries.
                let name = entry.file_name();
                let name = name.to_str()?;
                let number = name
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| name.parse::<u64>().ok())??;
                Some((number, entry.path()))
            })
            .collect(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(StatusError::Read {
                path: updates,
                source,
            })
        }
    };
    journal.sort();
    Ok(journal.into_iter().map(|(_, path)| path).collect())
}

/// Reads every record of the database in `admin_dir` (`status`, then the journal on top),
/// keyed by package name and architecture, for readers that need fields beyond the
/// installed set (`Conffiles`, …). Records of `not-installed` packages are left out.
///
/// # Errors
/// As [`read_database`].
pub fn read_records(admin_dir: &Path) -> Result<BTreeMap<PackageRef, Stanza>, StatusError> {
    let mut records = BTreeMap::new();
    let mut files = vec![admin_dir.join("status")];
    files.extend(journal_files(admin_dir)?);
    for (index, path) in files.iter().enumerate() {
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(err) if index > 0 && err.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StatusError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        let mut reader = io::BufReader::with_capacity(256 * 1024, file);
        let stanzas = read_stanzas(&mut reader, path).map_err(|source| StatusError::Read {
            path: path.clone(),
            source,
        })?;
        for stanza in stanzas {
            let Ok(package) = InstalledPackage::from_stanza(&stanza) else {
                continue;
            };
            if package.state == PackageState::NotInstalled {
                records.remove(&package.package_ref());
            } else {
                records.insert(package.package_ref(), stanza);
            }
        }
    }
    Ok(records)
}

/// Applies the records of one file; returns whether the file was there.
fn read_into(
    path: &Path,
    set: &mut InstalledSet,
    stats: &mut StatusStats,
    may_vanish: bool,
) -> Result<bool, StatusError> {
    let read_error = |source| StatusError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if may_vanish && err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(read_error(err)),
    };
    let mut reader = io::BufReader::with_capacity(256 * 1024, file);
    for stanza in read_stanzas(&mut reader, path).map_err(read_error)? {
        stats.records += 1;
        match InstalledPackage::from_stanza(&stanza) {
            Ok(package) => set.set(package),
            Err(reason) => {
                stats.malformed += 1;
                debug!(path = %path.display(), line_no = stanza.line_no, reason, "skipping unreadable database record");
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn read(text: &[u8]) -> Vec<Stanza> {
        let mut reader = io::BufReader::new(text);
        match read_stanzas(&mut reader, Path::new("test")) {
            Ok(stanzas) => stanzas,
            Err(err) => panic!("reading from memory failed: {err}"),
        }
    }

    fn package(name: &str, arch: &str, version: &str, state: PackageState) -> InstalledPackage {
        InstalledPackage {
            name: name.to_owned(),
            arch: Some(arch.to_owned()),
            version: Some(version.to_owned()),
            state,
        }
    }

    /// Records as dpkg 1.21 writes them on Debian 12, one per state that matters.
    const STATUS: &str = "\
Package: adduser
Status: install ok installed
Priority: important
Section: admin
Installed-Size: 849
Maintainer: Debian Adduser Developers <adduser@packages.debian.org>
Architecture: all
Multi-Arch: foreign
Version: 3.134
Depends: passwd
Conffiles:
 /etc/adduser.conf cc3493ecf3bd6e5e4c6bd4b0fdd5f0de
 /etc/deluser.conf 11a06baf8245fd1ec7ed5bb7a1bdd3bd
Description: add and remove users and groups
 This package includes the 'adduser' and 'deluser' commands for creating
 and removing users.

Package: libc6
Status: hold ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: nano
Status: deinstall ok config-files
Architecture: amd64
Version: 7.2-1
Conffiles:
 /etc/nanorc 8ebab7b7a6a3d2b2ee9d1a3a5d0d2b3c

Package: broken
Status: install reinstreq half-configured
Architecture: amd64
Version: 1.0-1

Package: forgotten
Status: purge ok not-installed
Architecture: amd64
";

    #[test]
    fn status_records_read_into_packages_by_name_and_architecture() {
        let stanzas = read(STATUS.as_bytes());
        assert_eq!(stanzas.len(), 6);
        assert_eq!(stanzas[1].line_no, 18);
        assert_eq!(
            stanzas[0].field("conffiles"),
            Some("\n/etc/adduser.conf cc3493ecf3bd6e5e4c6bd4b0fdd5f0de\n/etc/deluser.conf 11a06baf8245fd1ec7ed5bb7a1bdd3bd")
        );

        let set: InstalledSet = stanzas
            .iter()
            .filter_map(|s| InstalledPackage::from_stanza(s).ok())
            .collect::<Vec<_>>()
            .into();
        let all: Vec<&InstalledPackage> = set.iter().collect();
        assert_eq!(
            all,
            [
                &package("adduser", "all", "3.134", PackageState::Installed),
                &package("broken", "amd64", "1.0-1", PackageState::HalfConfigured),
                &package("libc6", "amd64", "2.36-9+deb12u4", PackageState::Installed),
                &package("libc6", "i386", "2.36-9+deb12u4", PackageState::Installed),
                &package("nano", "amd64", "7.2-1", PackageState::ConfigFiles),
            ],
            "not-installed records are not present packages"
        );
    }

    #[test]
    fn malformed_records_are_refused_with_a_reason() {
        let stanzas = read(
            b"Status: install ok installed\nVersion: 1\n\n\
              Package: a\nStatus: install ok exploded\n\n\
              Package: b\nVersion: 1\n\n\
              : no name\nPackage: c\nStatus: install ok unpacked\r\nArchitecture: amd64\r\n\n\
              \xff\xfe\n",
        );
        let results: Vec<Result<InstalledPackage, &str>> =
            stanzas.iter().map(InstalledPackage::from_stanza).collect();
        assert_eq!(results[0], Err("no Package field"));
        assert_eq!(results[1], Err("unreadable Status field"));
        assert_eq!(results[2], Err("no Status field"));
        assert_eq!(
            results[3],
            Ok(InstalledPackage {
                name: "c".into(),
                arch: Some("amd64".into()),
                version: None,
                state: PackageState::Unpacked,
            })
        );
        assert_eq!(results.len(), 4, "a line that is no field starts no record");
    }

    #[test]
    fn over_long_line_cuts_its_record_only() {
        let mut text =
            b"Package: big\nStatus: install ok installed\nVersion: 1\nDescription: ".to_vec();
        text.extend(vec![b'x'; MAX_LINE_LEN + 10]);
        text.extend_from_slice(b"\n\nPackage: small\nStatus: install ok installed\nVersion: 2\n");
        let stanzas = read(&text);
        assert_eq!(stanzas.len(), 2);
        assert!(stanzas[0].has_cut_line);
        assert!(InstalledPackage::from_stanza(&stanzas[0]).is_err());
        assert_eq!(
            InstalledPackage::from_stanza(&stanzas[1]).map(|p| p.version),
            Ok(Some("2".into()))
        );
    }

    #[test]
    fn journal_files_apply_on_top_of_status_in_number_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("status"), STATUS)?;
        fs::create_dir(dir.path().join("updates"))?;
        // dpkg upgraded nano, then removed adduser, and was still running.
        fs::write(
            dir.path().join("updates/0001"),
            "Package: nano\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.2-2\n",
        )?;
        fs::write(
            dir.path().join("updates/0000"),
            "Package: nano\nStatus: install ok unpacked\nArchitecture: amd64\nVersion: 7.2-2\n",
        )?;
        fs::write(
            dir.path().join("updates/0002"),
            "Package: adduser\nStatus: purge ok not-installed\nArchitecture: all\n",
        )?;
        fs::write(
            dir.path().join("updates/tmp.i"),
            "Package: junk\nStatus: install ok installed\n",
        )?;

        let (set, stats) = read_database(dir.path())?;
        assert_eq!(stats.journal_files, 3);
        assert_eq!(stats.malformed, 0);
        let nano = PackageRef {
            name: "nano".into(),
            arch: Some("amd64".into()),
        };
        assert_eq!(
            set.get(&nano),
            Some(&package("nano", "amd64", "7.2-2", PackageState::Installed))
        );
        assert!(set.iter().all(|p| p.name != "adduser" && p.name != "junk"));
        assert_eq!(set.len(), 4);

        assert!(matches!(
            read_database(&dir.path().join("absent")),
            Err(StatusError::Read { .. })
        ));
        Ok(())
    }

    #[test]
    fn status_lines_of_the_log_move_the_set_like_the_database() {
        let mut set = InstalledSet::default();
        let vim = PackageRef {
            name: "vim".into(),
            arch: Some("amd64".into()),
        };
        set.apply_status(&vim, PackageState::HalfInstalled, Some("2:9.0-1"));
        set.apply_status(&vim, PackageState::Installed, Some("2:9.0-1"));
        assert_eq!(
            set.get(&vim).map(|p| p.state),
            Some(PackageState::Installed)
        );

        // An old dpkg names no architecture: the one vim is meant.
        let bare = PackageRef {
            name: "vim".into(),
            arch: None,
        };
        set.apply_status(&bare, PackageState::ConfigFiles, Some("2:9.0-1"));
        assert_eq!(
            set.get(&vim).map(|p| p.state),
            Some(PackageState::ConfigFiles)
        );
        assert_eq!(set.len(), 1);

        set.apply_status(&vim, PackageState::NotInstalled, None);
        assert!(set.is_empty());
    }

    #[test]
    fn differences_pair_both_sides() {
        let before: InstalledSet = vec![
            package("a", "amd64", "1", PackageState::Installed),
            package("b", "amd64", "1", PackageState::Installed),
        ]
        .into();
        let after: InstalledSet = vec![
            package("b", "amd64", "2", PackageState::Installed),
            package("c", "all", "1", PackageState::Installed),
        ]
        .into();
        let diff = before.differences(&after);
        let names: Vec<(Option<&str>, Option<&str>)> = diff
            .iter()
            .map(|(x, y)| (x.map(|p| p.name.as_str()), y.map(|p| p.name.as_str())))
            .collect();
        assert_eq!(
            names,
            [(Some("a"), None), (Some("b"), Some("b")), (None, Some("c"))]
        );
        assert!(before.differences(&before).is_empty());
    }

    #[test]
    fn the_set_survives_a_json_round_trip() -> anyhow::Result<()> {
        let set: InstalledSet = vec![package(
            "a",
            "amd64",
            "1:2.0~rc1",
            PackageState::HalfConfigured,
        )]
        .into();
        let text = serde_json::to_string(&set)?;
        assert_eq!(serde_json::from_str::<InstalledSet>(&text)?, set);
        Ok(())
    }

    #[test]
    fn the_hosts_own_database_reads_without_loss() -> anyhow::Result<()> {
        let admin = Path::new("/var/lib/dpkg");
        if !admin.join("status").exists() {
            println!("skipping: this host has no dpkg database");
            return Ok(());
        }
        let (set, stats) = read_database(admin)?;
        assert_eq!(stats.malformed, 0);
        // dpkg-query reads the same database; every package it lists as present is here.
        let output = std::process::Command::new("dpkg-query")
            .args([
                "-W",
                "-f=${db:Status-Status} ${Package}:${Architecture} ${Version}\\n",
            ])
            .output()?;
        let listed: Vec<String> = String::from_utf8(output.stdout)?
            .lines()
            .filter(|l| !l.starts_with("not-installed"))
            .map(str::to_owned)
            .collect();
        let ours: Vec<String> = set
            .iter()
            .map(|p| {
                format!(
                    "{} {}:{} {}",
                    p.state,
                    p.name,
                    p.arch.as_deref().unwrap_or(""),
                    p.version.as_deref().unwrap_or("")
                )
            })
            .collect();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        let mut ours_sorted = ours;
        ours_sorted.sort();
        assert_eq!(ours_sorted, listed_sorted);
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            for stanza in read(&bytes) {
                let _ = InstalledPackage::from_stanza(&stanza);
            }
        }
    }
}
