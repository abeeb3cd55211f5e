//! The rpm family: dnf's, yum's and zypper's logs, and rpm's version order they all share.
//!
//! [`version`] orders versions as rpm does; [`dnf`], [`yum`] and [`zypper`] read each tool's
//! log, and [`database`] what `rpm -qa` lists, for changes rpm made by hand. This module splits the package names those logs write (`name-[epoch:]version-release
//! .arch`) into their parts, and keeps the installed versions a log has shown, for the logs
//! that do not say whether an install replaced an older or a newer version.

pub mod database;
pub mod dnf;
pub mod version;
pub mod yum;
pub mod zypper;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::manager::{quote, LineError};
use crate::event::Category;

/// A package as rpm-based logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nevra {
    pub name: String,
    /// `None` when the log wrote no epoch.
    pub epoch: Option<String>,
    pub version: String,
    pub release: String,
    /// `None` when the log wrote none (packages without an architecture, such as
    /// `gpg-pubkey`).
    pub arch: Option<String>,
}

impl Nevra {
    /// Splits `name-[epoch:]version-release[.arch]`, the way dnf writes packages, also
    /// accepting yum's `epoch:name-version-release.arch`.
    ///
    /// The release is after the last `-`, the version after the one before, the architecture
    /// after the last `.` of the release when it is a plain word.
    ///
    /// # Errors
    /// [`LineError::BadPackage`] when the text has no name, version or release.
    pub fn parse(text: &str) -> Result<Self, LineError> {
        let bad = || LineError::BadPackage { text: quote(text) };

        // yum puts a non-zero epoch in front of the whole name.
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (leading_epoch, text_rest) = match text.as_bytes().get(digits) {
            Some(b':') if digits > 0 => (Some(&text[..digits]), &text[digits + 1..]),
            _ => (None, text),
        };

        let (rest, release_arch) = text_rest.rsplit_once('-').ok_or_else(bad)?;
        let (name, version) = rest.rsplit_once('-').ok_or_else(bad)?;
        let (release, arch) = match release_arch.rsplit_once('.') {
            Some((release, arch)) if is_arch(arch) && !release.is_empty() => (release, Some(arch)),
            _ => (release_arch, None),
        };
        let (epoch, version) = match version.split_once(':') {
            Some((epoch, version)) if leading_epoch.is_none() => (Some(epoch), version),
            _ => (leading_epoch, version),
        };

        let is_ok = |part: &str| !part.is_empty() && !part.chars().any(char::is_whitespace);
        if !is_ok(name) || !is_ok(version) || !is_ok(release) {
            return Err(bad());
        }
        if epoch.is_some_and(|e| e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_owned(),
            epoch: epoch.map(str::to_owned),
            version: version.to_owned(),
            release: release.to_owned(),
            arch: arch.map(str::to_owned),
        })
    }

    /// Returns `[epoch:]version-release`, the version events carry.
    #[must_use]
    pub fn evr(&self) -> String {
        match &self.epoch {
            Some(epoch) => format!("{epoch}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }

    /// Returns the key a package is known by: `name.arch`, or `name` without an arch.
    #[must_use]
    pub fn key(&self) -> String {
        key_of(&self.name, self.arch.as_deref())
    }
}

/// Returns the key a package is known by in [`Installed`].
#[must_use]
pub fn key_of(name: &str, arch: Option<&str>) -> String {
    match arch {
        Some(arch) => format!("{name}.{arch}"),
        None => name.to_owned(),
    }
}

/// Whether a word is an rpm architecture (`x86_64`, `noarch`, `i686`, `aarch64`, `src`).
fn is_arch(word: &str) -> bool {
    !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && word.bytes().any(|b| b.is_ascii_alphabetic())
}

/// The versions a log has shown installed, per package key; bounded per package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Installed(BTreeMap<String, Vec<String>>);

/// Versions kept per package: more than install-only packages such as kernels keep.
const VERSIONS_PER_PACKAGE: usize = 8;

impl Installed {
    /// Returns whether nothing is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decides what an install of `new` means, given what is known installed: a reinstall of
    /// a known version, an upgrade from or a downgrade to the newest known one, or an
    /// install. Returns the category and the version replaced.
    ///
    /// TODO: packages zypper installs side by side (kernels, `multiversion` in zypp.conf)
    /// are not marked in its history, so a second version is reported as an upgrade of the
    /// first; reading zypp.conf's multiversion list would tell them apart.
    #[must_use]
    pub fn classify_install(&self, key: &str, new: &str) -> (Category, Option<String>) {
        let Some(known) = self.0.get(key).filter(|v| !v.is_empty()) else {
            return (Category::PackageInstall, None);
        };
        if let Some(same) = known
            .iter()
            .find(|v| version::compare(v, new) == Ordering::Equal)
        {
            return (Category::PackageReinstall, Some(same.clone()));
        }
        let newest = known.iter().max_by(|a, b| version::compare(a, b)).cloned();
        match newest {
            Some(old) if version::compare(new, &old) == Ordering::Greater => {
                (Category::PackageUpgrade, Some(old))
            }
            Some(old) => (Category::PackageDowngrade, Some(old)),
            None => (Category::PackageInstall, None),
        }
    }

    /// Records that `version` replaced every known version of the package.
    pub fn replace(&mut self, key: &str, version: &str) {
        self.0.insert(key.to_owned(), vec![version.to_owned()]);
    }

    /// Records that `version` is installed besides the known ones.
    pub fn add(&mut self, key: &str, version: &str) {
        let versions = self.0.entry(key.to_owned()).or_default();
        if !versions.iter().any(|v| v == version) {
            if versions.len() == VERSIONS_PER_PACKAGE {
                versions.remove(0);
            }
            versions.push(version.to_owned());
        }
    }

    /// Records that `version` was removed; `None` removes every known version.
    pub fn remove(&mut self, key: &str, version: Option<&str>) {
        match version {
            Some(version) => {
                if let Some(versions) = self.0.get_mut(key) {
                    versions.retain(|v| version::compare(v, version) != Ordering::Equal);
                    if versions.is_empty() {
                        self.0.remove(key);
                    }
                }
            }
            None => {
                self.0.remove(key);
            }
        }
    }

    /// Returns the known versions of a package.
    #[must_use]
    pub fn versions(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// Returns every known key whose package name is `name`, whatever its architecture.
    pub fn keys_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.0
            .keys()
            .filter(move |key| key.as_str() == name || key.starts_with(&format!("{name}.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nevra(name: &str, epoch: Option<&str>, version: &str, release: &str, arch: &str) -> Nevra {
        Nevra {
            name: name.to_owned(),
            epoch: epoch.map(str::to_owned),
            version: version.to_owned(),
            release: release.to_owned(),
            arch: Some(arch.to_owned()).filter(|a| !a.is_empty()),
        }
    }

    #[test]
    fn package_names_split_as_dnf_and_yum_write_them() {
        let cases = [
            (
                "linux-firmware-20200619-99.git3890db36.el8.noarch",
                nevra(
                    "linux-firmware",
                    None,
                    "20200619",
                    "99.git3890db36.el8",
                    "noarch",
                ),
            ),
            (
                "python3-nftables-1:0.9.3-16.el8.x86_64",
                nevra("python3-nftables", Some("1"), "0.9.3", "16.el8", "x86_64"),
            ),
            (
                "glibc-2.28-127.el8_3.2.x86_64",
                nevra("glibc", None, "2.28", "127.el8_3.2", "x86_64"),
            ),
            (
                "32:bind-utils-9.11.4-9.P2.el7.x86_64",
                nevra("bind-utils", Some("32"), "9.11.4", "9.P2.el7", "x86_64"),
            ),
            (
                "1:telnet-0.17-48.el6.x86_64",
                nevra("telnet", Some("1"), "0.17", "48.el6", "x86_64"),
            ),
            (
                "gpg-pubkey-fd431d51-4ae0493b",
                nevra("gpg-pubkey", None, "fd431d51", "4ae0493b", ""),
            ),
            (
                "microcode_ctl-4:20200609-2.el8.x86_64",
                nevra("microcode_ctl", Some("4"), "20200609", "2.el8", "x86_64"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Nevra::parse(text).as_ref(), Ok(&expected), "{text}");
        }
        assert_eq!(
            Nevra::parse("python3-nftables-1:0.9.3-16.el8.x86_64").map(|n| n.evr()),
            Ok("1:0.9.3-16.el8".to_owned())
        );

        for bad in [
            "tree",
            "tree-1.0",
            "-1.0-1.x86_64",
            "a-b c-1.x86_64",
            "x-y:1-1.noarch",
        ] {
            assert!(Nevra::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn installs_are_classified_against_known_versions() {
        let mut known = Installed::default();
        assert_eq!(
            known.classify_install("unzip.x86_64", "6.0-24.el7_9"),
            (Category::PackageInstall, None)
        );
        known.replace("unzip.x86_64", "6.0-24.el7_9");
        assert_eq!(
            known.classify_install("unzip.x86_64", "6.0-22.el7_9"),
            (Category::PackageDowngrade, Some("6.0-24.el7_9".to_owned()))
        );
        assert_eq!(
            known.classify_install("unzip.x86_64", "1:6.0-1"),
            (Category::PackageUpgrade, Some("6.0-24.el7_9".to_owned()))
        );
        assert_eq!(
            known.classify_install("unzip.x86_64", "0:6.0-24.el7_9"),
            (Category::PackageReinstall, Some("6.0-24.el7_9".to_owned()))
        );
        known.remove("unzip.x86_64", Some("6.0-24.el7_9"));
        assert!(known.is_empty());
    }
}
