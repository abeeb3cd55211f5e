//! apk's database of installed packages (`/lib/apk/db/installed`) and what changed in it.
//!
//! In: the database's bytes, before and after a change. Out: a [`Snapshot`] of every
//! installed package, and the package changes between two snapshots. No state beyond the
//! snapshots themselves, which the caller keeps.
//!
//! The database is text: one stanza per package, stanzas separated by a blank line, each line
//! a one-letter key, `:` and a value:
//!
//! ```text
//! C:Q1EyN5AdpAOBJWKMR89pp/C66o+OE=
//! P:musl
//! V:1.2.4-r2
//! A:x86_64
//! ```
//!
//! `P` is the name, `V` the version, `A` the architecture and `C` the checksum of the package
//! (other keys list files, dependencies and metadata). A package present only after is an
//! install, one present only before a removal; a changed version is an upgrade or a downgrade
//! by apk's version order, and the same version with another checksum a reinstall of a
//! different build. apk writes the database to a new file and renames it into place, so a
//! reader never sees half of one.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::version;
use crate::event::Category;
use crate::parse::PackageChange;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub version: String,
    pub arch: Option<String>,
    pub checksum: Option<String>,
}

/// Every package in the database, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Snapshot(BTreeMap<String, InstalledPackage>);

/// What reading a database skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub packages: usize,
    /// Stanzas without a name or a version.
    pub incomplete: usize,
    /// Lines that are not `key:value`.
    pub malformed_lines: usize,
}

impl Snapshot {
    /// Reads a database. Bytes that are not UTF-8 (file names may be anything) are only
    /// allowed in values that name no package.
    #[must_use]
    pub fn parse(bytes: &[u8]) -> (Self, SnapshotStats) {
        let mut packages = BTreeMap::new();
        let mut stats = SnapshotStats::default();
        let mut stanza = Stanza::default();

        for line in bytes.split(|&b| b == b'\n') {
            if line.is_empty() {
                stanza.close(&mut packages, &mut stats);
                continue;
            }
            match line {
                [key, b':', value @ ..] if key.is_ascii_alphanumeric() => {
                    stanza.field(*key, value);
                }
                _ => stats.malformed_lines += 1,
            }
        }
        stanza.close(&mut packages, &mut stats);
        stats.packages = packages.len();
        (Self(packages), stats)
    }

    /// Returns how many packages are installed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Returns whether no package is installed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns the changes from `self` to `after`, by package name, dated `at`.
    #[must_use]
    pub fn changes_to(&self, after: &Self, at: NaiveDateTime) -> Vec<PackageChange> {
        let mut changes = Vec::new();
        let change = |category, name: &str, package: &InstalledPackage, old, new| PackageChange {
            category,
            package: name.to_owned(),
            arch: package.arch.clone(),
            old_version: old,
            new_version: new,
            timestamp: at,
            raw_line: describe(name, package),
            last_state: None,
        };

        for (name, old) in &self.0 {
            match after.0.get(name) {
                None => changes.push(change(
                    Category::PackageRemove,
                    name,
                    old,
                    Some(old.version.clone()),
                    None,
                )),
                Some(new) => {
                    let category = match version::compare(&new.version, &old.version) {
                        Ordering::Greater => Some(Category::PackageUpgrade),
                        Ordering::Less => Some(Category::PackageDowngrade),
                        Ordering::Equal if new.version != old.version => {
                            Some(Category::PackageReinstall)
                        }
                        Ordering::Equal if new.checksum != old.checksum => {
                            Some(Category::PackageReinstall)
                        }
                        Ordering::Equal => None,
                    };
                    if let Some(category) = category {
                        changes.push(change(
                            category,
                            name,
                            new,
                            Some(old.version.clone()),
                            Some(new.version.clone()),
                        ));
                    }
                }
            }
        }
        for (name, new) in &after.0 {
            if !self.0.contains_key(name) {
                changes.push(change(
                    Category::PackageInstall,
                    name,
                    new,
                    None,
                    Some(new.version.clone()),
                ));
            }
        }
        changes
    }
}

/// The package's stanza lines an event quotes, as one line.
fn describe(name: &str, package: &InstalledPackage) -> String {
    let mut text = format!("P:{name} V:{}", package.version);
    if let Some(arch) = &package.arch {
        text.push_str(" A:");
        text.push_str(arch);
    }
    text
}

/// The fields of the stanza being read.
#[derive(Debug, Default)]
struct Stanza {
    name: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    checksum: Option<String>,
    has_fields: bool,
}

impl Stanza {
    fn field(&mut self, key: u8, value: &[u8]) {
        self.has_fields = true;
        let text = || std::str::from_utf8(value).ok().map(str::to_owned);
        match key {
            b'P' => self.name = text(),
            b'V' => self.version = text(),
            b'A' => self.arch = text(),
            b'C' => self.checksum = text(),
            _ => {}
        }
    }

    fn close(
        &mut self,
        packages: &mut BTreeMap<String, InstalledPackage>,
        stats: &mut SnapshotStats,
    ) {
        let stanza = std::mem::take(self);
        if !stanza.has_fields {
            return;
        }
        match (stanza.name, stanza.version) {
            (Some(name), Some(version)) if !name.is_empty() && !version.is_empty() => {
                packages.insert(
                    name,
                    InstalledPackage {
                        version,
                        arch: stanza.arch,
                        checksum: stanza.checksum,
                    },
                );
            }
            _ => stats.incomplete += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use proptest::prelude::*;

    use super::*;

    const BEFORE: &str = "\
C:Q1EyN5AdpAOBJWKMR89pp/C66o+OE=
P:musl
V:1.2.4-r1
A:x86_64
S:383152
I:622592
T:the musl c library (libc) implementation
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1zsd6Br7G0xNw6XOaqGgCN8Ha8KM=

C:Q1C4uoV7SdMdDhYg4OCVmI71D8HIA=
P:busybox
V:1.36.1-r15
A:x86_64

C:Q1oldzlib=
P:zlib
V:1.3.1-r0
A:x86_64

C:Q1curl=
P:curl
V:8.6.0-r0
A:x86_64

C:Q1gone=
P:glibc-i18n
V:2.43-r1
A:aarch64
";

    const AFTER: &str = "\
C:Q1newmusl=
P:musl
V:1.2.4-r2
A:x86_64
R:ld-musl-x86_64.so.1

C:Q1C4uoV7SdMdDhYg4OCVmI71D8HIA=
P:busybox
V:1.36.1-r15
A:x86_64

C:Q1newzlib=
P:zlib
V:1.3.1-r0
A:x86_64

C:Q1curl-old=
P:curl
V:8.5.0-r0
A:x86_64

C:Q1vim=
P:vim
V:9.1.0-r0
A:x86_64
F:usr/bin
R:vim
";

    fn at() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2026-05-05 08:15:43", "%Y-%m-%d %H:%M:%S")
            .unwrap_or_default()
    }

    #[test]
    fn a_crafted_database_change_reads_as_its_changes() {
        let (before, stats) = Snapshot::parse(BEFORE.as_bytes());
        assert_eq!(
            stats,
            SnapshotStats {
                packages: 5,
                incomplete: 0,
                malformed_lines: 0
            }
        );
        let (after, _) = Snapshot::parse(AFTER.as_bytes());
        let changes = before.changes_to(&after, at());
        let summary: Vec<String> = changes
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
            .collect();
        assert_eq!(
            summary,
            [
                "package_downgrade curl x86_64 8.6.0-r0 8.5.0-r0",
                "package_remove glibc-i18n aarch64 2.43-r1 -",
                "package_upgrade musl x86_64 1.2.4-r1 1.2.4-r2",
                "package_reinstall zlib x86_64 1.3.1-r0 1.3.1-r0",
                "package_install vim x86_64 - 9.1.0-r0",
            ]
        );
        assert_eq!(changes[2].raw_line, "P:musl V:1.2.4-r2 A:x86_64");
        assert!(changes.iter().all(|c| c.timestamp == at()));
        assert!(after.changes_to(&after, at()).is_empty());
    }

    #[test]
    fn broken_stanzas_are_counted_and_skipped() {
        let text =
            b"P:musl\nV:1\n\nP:noversion\n\ngarbage line\nV:2\n\n\xff\xfe\n\nP:a\nV:1\nR:caf\xe9\n";
        let (snapshot, stats) = Snapshot::parse(text);
        assert_eq!(snapshot.len(), 2);
        assert_eq!(stats.incomplete, 2);
        assert_eq!(stats.malformed_lines, 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let (snapshot, _) = Snapshot::parse(&bytes);
            let _ = Snapshot::default().changes_to(&snapshot, at());
        }

        #[test]
        fn every_package_of_a_database_is_read(
            packages in prop::collection::btree_map("[a-z][a-z0-9.+_-]{0,12}", "[0-9]{1,3}(\\.[0-9]{1,3}){0,2}-r[0-9]", 0..20),
        ) {
            let mut text = String::new();
            for (name, version) in &packages {
                let _ = write!(text, "C:Q1x=\nP:{name}\nV:{version}\nA:x86_64\n\n");
            }
            let (snapshot, stats) = Snapshot::parse(text.as_bytes());
            prop_assert_eq!(stats.packages, packages.len());
            let installs = Snapshot::default().changes_to(&snapshot, at());
            prop_assert_eq!(installs.len(), packages.len());
            prop_assert!(installs.iter().all(|c| c.category == Category::PackageInstall));
        }
    }
}
