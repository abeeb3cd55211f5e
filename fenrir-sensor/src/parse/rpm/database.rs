//! rpm's database of installed packages, as `rpm -qa` lists it, and what changed in it.
//!
//! In: the output of `rpm -qa --queryformat` with [`QUERY_FORMAT`], before and after a change.
//! Out: an [`RpmSnapshot`] of every installed package and the package changes between two
//! snapshots. No state beyond the snapshots, which the caller keeps.
//!
//! Packages are grouped by name and architecture; a group may hold several versions
//! (install-only packages such as kernels). One version leaving a group while another arrives
//! is an upgrade or a downgrade by rpm's version order; a version that stays under another
//! database record (a reinstall erases the old header and adds a new one) is a reinstall;
//! every other arrival is an install and every other departure a removal.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::{key_of, version};
use crate::event::Category;
use crate::parse::PackageChange;

/// The query format the snapshot reads: name, epoch, version, release, arch, and the header's
/// record number in the database.
pub const QUERY_FORMAT: &str =
    "%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{DBINSTANCE}\\n";

/// One installed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpmInstalled {
    /// `[epoch:]version-release`.
    pub version: String,
    /// The header's record in the database; a reinstall gets a new one.
    pub record: Option<u64>,
}

/// One name and architecture and its installed versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Group {
    name: String,
    arch: Option<String>,
    versions: Vec<RpmInstalled>,
}

/// Every installed package, by `name.arch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RpmSnapshot(BTreeMap<String, Group>);

impl RpmSnapshot {
    /// Reads `rpm -qa` output; returns the snapshot and how many lines were not in
    /// [`QUERY_FORMAT`].
    #[must_use]
    pub fn parse(output: &[u8]) -> (Self, usize) {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut malformed = 0;
        for line in output.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(text) = std::str::from_utf8(line) else {
                malformed += 1;
                continue;
            };
            let fields: Vec<&str> = text.split('\t').collect();
            let [name, epoch, version, release, arch, record] = fields[..] else {
                malformed += 1;
                continue;
            };
            if name.is_empty() || version.is_empty() {
                malformed += 1;
                continue;
            }
            let absent = |value: &str| value == "(none)" || value.is_empty();
            let evr = match (absent(epoch), absent(release)) {
                (true, true) => version.to_owned(),
                (true, false) => format!("{version}-{release}"),
                (false, true) => format!("{epoch}:{version}"),
                (false, false) => format!("{epoch}:{version}-{release}"),
            };
            let arch = (!absent(arch)).then(|| arch.to_owned());
            let group = groups
                .entry(key_of(name, arch.as_deref()))
                .or_insert_with(|| Group {
                    name: name.to_owned(),
                    arch,
                    versions: Vec::new(),
                });
            group.versions.push(RpmInstalled {
                version: evr,
                record: record.parse().ok(),
            });
        }
        (Self(groups), malformed)
    }

    /// Returns how many name and architecture groups are installed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Returns whether nothing is installed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns the changes from `self` to `after`, dated `at`.
    #[must_use]
    pub fn changes_to(&self, after: &Self, at: NaiveDateTime) -> Vec<PackageChange> {
        let empty = Vec::new();
        let mut changes = Vec::new();
        let mut keys: Vec<&String> = self.0.keys().chain(after.0.keys()).collect();
        keys.sort();
        keys.dedup();

        for key in keys {
            let (before, now) = (self.0.get(key), after.0.get(key));
            let Some(group) = now.or(before) else {
                continue;
            };
            let old = before.map_or(&empty, |g| &g.versions);
            let new = now.map_or(&empty, |g| &g.versions);
            let same = |a: &RpmInstalled, b: &RpmInstalled| {
                version::compare(&a.version, &b.version) == Ordering::Equal
            };
            let gone: Vec<&RpmInstalled> = old
                .iter()
                .filter(|o| !new.iter().any(|n| same(o, n)))
                .collect();
            let came: Vec<&RpmInstalled> = new
                .iter()
                .filter(|n| !old.iter().any(|o| same(o, n)))
                .collect();
            let change = |category, old: Option<&str>, new: Option<&str>| PackageChange {
                category,
                package: group.name.clone(),
                arch: group.arch.clone(),
                old_version: old.map(str::to_owned),
                new_version: new.map(str::to_owned),
                timestamp: at,
                raw_line: describe(group, new.or(old).unwrap_or_default()),
                last_state: None,
                logged_run: None,
            };

            for kept in new.iter().filter(|n| old.iter().any(|o| same(o, n))) {
                let before = old.iter().find(|o| same(o, kept));
                if before.is_some_and(|b| b.record != kept.record) {
                    let version = Some(kept.version.as_str());
                    changes.push(change(Category::PackageReinstall, version, version));
                }
            }
            if let ([from], [to]) = (gone.as_slice(), came.as_slice()) {
                let category = match version::compare(&to.version, &from.version) {
                    Ordering::Less => Category::PackageDowngrade,
                    _ => Category::PackageUpgrade,
                };
                changes.push(change(category, Some(&from.version), Some(&to.version)));
                continue;
            }
            for from in gone {
                changes.push(change(Category::PackageRemove, Some(&from.version), None));
            }
            for to in came {
                changes.push(change(Category::PackageInstall, None, Some(&to.version)));
            }
        }
        changes
    }
}

/// The package as `rpm -q` names it, which an event quotes as its line.
fn describe(group: &Group, version: &str) -> String {
    match &group.arch {
        Some(arch) => format!("{}-{version}.{arch}", group.name),
        None => format!("{}-{version}", group.name),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::parse::manager::corpus::summary;

    fn at() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2026-05-05 08:15:43", "%Y-%m-%d %H:%M:%S")
            .unwrap_or_default()
    }

    #[test]
    fn query_output_reads_into_groups_of_versions() {
        // As `rpm -qa --queryformat QUERY_FORMAT` prints it.
        let output = b"fenrir-hello\t(none)\t1.0\t1\tnoarch\t1796353424\n\
kernel-core\t(none)\t4.18.0\t240.el8\tx86_64\t1700000000\n\
kernel-core\t(none)\t4.18.0\t193.el8\tx86_64\t1690000000\n\
gpg-pubkey\t(none)\tfd431d51\t4ae0493b\t(none)\t1600000000\n\
dbus-common\t1\t1.12.8\t12.el8_3\tnoarch\t1614672329\n\
garbage\n";
        let (snapshot, malformed) = RpmSnapshot::parse(output);
        assert_eq!((snapshot.len(), malformed), (4, 1));
        let installs = RpmSnapshot::default().changes_to(&snapshot, at());
        assert_eq!(
            summary(&installs),
            [
                "package_install dbus-common - 1:1.12.8-12.el8_3",
                "package_install fenrir-hello - 1.0-1",
                "package_install gpg-pubkey - fd431d51-4ae0493b",
                "package_install kernel-core - 4.18.0-240.el8",
                "package_install kernel-core - 4.18.0-193.el8",
            ]
        );
        assert_eq!(installs[1].raw_line, "fenrir-hello-1.0-1.noarch");
        assert_eq!(installs[2].arch, None);
    }

    #[test]
    fn changes_between_snapshots_are_told_apart_by_version_and_record() {
        let (before, _) = RpmSnapshot::parse(
            b"a\t(none)\t1.0\t1\tnoarch\t10\n\
b\t(none)\t2.0\t1\tnoarch\t10\n\
c\t(none)\t1.0\t1\tnoarch\t10\n\
d\t(none)\t1.0\t1\tnoarch\t10\n\
kernel\t(none)\t5.0\t1\tx86_64\t10\n",
        );
        let (after, _) = RpmSnapshot::parse(
            b"a\t(none)\t2.0\t1\tnoarch\t20\n\
b\t(none)\t1.0\t1\tnoarch\t20\n\
c\t(none)\t1.0\t1\tnoarch\t20\n\
e\t(none)\t1.0\t1\tnoarch\t20\n\
kernel\t(none)\t5.0\t1\tx86_64\t10\n\
kernel\t(none)\t5.1\t1\tx86_64\t20\n",
        );
        assert_eq!(
            summary(&before.changes_to(&after, at())),
            [
                "package_upgrade a 1.0-1 2.0-1",
                "package_downgrade b 2.0-1 1.0-1",
                "package_reinstall c 1.0-1 1.0-1",
                "package_remove d 1.0-1 -",
                "package_install e - 1.0-1",
                "package_install kernel - 5.1-1",
            ]
        );
        assert!(after.changes_to(&after, at()).is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_output_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let (snapshot, _) = RpmSnapshot::parse(&bytes);
            let _ = RpmSnapshot::default().changes_to(&snapshot, at());
        }
    }
}
