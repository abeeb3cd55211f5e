//! Checks one installed package's files against dpkg's record and Fenrir's own.
//!
//! In: dpkg's root and admin directory, the package's record in the status database, and
//! optionally the record Fenrir kept when the package was installed. Out: a [`Verification`]:
//! every file hashed once (MD5 for dpkg's md5sums, SHA-256 for Fenrir's record) and the
//! [`Finding`]s. No state.
//!
//! Like debsums, conffiles are judged against the hashes in the status database, not against
//! md5sums, and apart from the other files: a changed conffile is usually an administrator's
//! edit, a changed binary is not. Files are opened without following a symlink in the last
//! component and must be regular files, so a file swapped for a FIFO, a device or a link is
//! reported instead of read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{FileRecord, PackageRecord};
use super::sums::{self, parse_conffiles, parse_md5sums, Conffile};
use crate::event::escape_control;
use crate::parse::status::Stanza;

/// Bytes read per `read` call while hashing.
const HASH_CHUNK: usize = 256 * 1024;

/// What kind of file a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A file of the package that is not a conffile.
    File,
    /// A conffile the package ships.
    Conffile,
    /// A conffile the package no longer ships; dpkg keeps it for the administrator.
    ObsoleteConffile,
}

/// What is wrong with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    Missing,
    Changed,
    /// Not a regular file any more (a symlink, a FIFO, a device, a directory).
    NotRegular,
    /// It exists but cannot be read.
    Unreadable,
    /// dpkg's md5sums (or conffile hash) for the file is not what it was at install time.
    HashEdited,
}

impl Problem {
    /// Returns the word shown for the problem.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Changed => "changed",
            Self::NotRegular => "not a regular file",
            Self::Unreadable => "unreadable",
            Self::HashEdited => "dpkg hash edited",
        }
    }
}

/// Which witness a finding comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Witness {
    /// dpkg's md5sums and the status database's conffile hashes.
    Dpkg,
    /// Fenrir's own record of the install.
    Record,
}

/// One file that does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The absolute path inside dpkg's root, escaped for display.
    pub path: String,
    pub kind: FileKind,
    pub problem: Problem,
    pub against: Witness,
}

/// A file as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Hashed {
        md5: sums::Md5,
        sha256: [u8; 32],
        size: u64,
    },
    Missing,
    NotRegular,
    Unreadable(String),
}

/// One file of the package with what dpkg expects and what is on disk.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    pub path: PathBuf,
    pub kind: FileKind,
    /// dpkg's MD5; `None` for a conffile dpkg has no hash for yet.
    pub expected: Option<sums::Md5>,
    pub seen: Seen,
}

/// The outcome of checking one package.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub package: String,
    pub arch: Option<String>,
    pub version: Option<String>,
    pub files: Vec<CheckedFile>,
    /// Whether dpkg has an md5sums file for the package.
    pub has_md5sums: bool,
    /// Bytes hashed.
    pub bytes: u64,
    pub findings: Vec<Finding>,
}

impl Verification {
    /// Returns whether a file that is not a conffile is missing or differs.
    #[must_use]
    pub fn has_file_findings(&self) -> bool {
        self.findings.iter().any(|f| f.kind == FileKind::File)
    }

    /// Returns the record Fenrir keeps of this state of the package.
    #[must_use]
    pub fn to_record(&self, admin_dir: &Path, root: &Path) -> PackageRecord {
        PackageRecord {
            time: chrono::Local::now().to_rfc3339(),
            admin_dir: admin_dir.display().to_string(),
            root: root.display().to_string(),
            package: self.package.clone(),
            arch: self.arch.clone(),
            version: self.version.clone(),
            files: self
                .files
                .iter()
                .map(|file| FileRecord {
                    path: display_relative(&file.path),
                    kind: file.kind,
                    md5: file.expected.map(|m| sums::hex(&m)),
                    sha256: match &file.seen {
                        Seen::Hashed { sha256, .. } => Some(sums::hex(sha256)),
                        _ => None,
                    },
                    size: match &file.seen {
                        Seen::Hashed { size, .. } => Some(*size),
                        _ => None,
                    },
                })
                .collect(),
        }
    }

    /// Adds the findings of comparing the files now with Fenrir's record of the install.
    ///
    /// A file the record has and the disk does not is missing; one whose SHA-256 differs
    /// changed; one whose md5sums entry differs from the one recorded had its dpkg hash
    /// edited. Files new since the record (another version) are not judged here.
    pub fn compare_with_record(&mut self, record: &PackageRecord, root: &Path) {
        let now: HashMap<String, &CheckedFile> = self
            .files
            .iter()
            .map(|f| (display_relative(&f.path), f))
            .collect();
        let mut found = Vec::new();
        for recorded in &record.files {
            let shown = shown_path(&recorded.path);
            let Some(file) = now.get(&recorded.path) else {
                // dpkg no longer lists it: judge the disk alone.
                let path = root.join(&recorded.path);
                let seen = hash_file(&path);
                if let Some(problem) = compare_seen(&seen, recorded.sha256.as_deref()) {
                    found.push((shown, recorded.kind, problem));
                }
                continue;
            };
            if let Some(problem) = compare_seen(&file.seen, recorded.sha256.as_deref()) {
                found.push((shown.clone(), recorded.kind, problem));
            }
            let dpkg_md5 = file.expected.map(|m| sums::hex(&m));
            if recorded.md5.is_some() && dpkg_md5 != recorded.md5 {
                found.push((shown, recorded.kind, Problem::HashEdited));
            }
        }
        for (path, kind, problem) in found {
            let finding = Finding {
                path,
                kind,
                problem,
                against: Witness::Record,
            };
            if !self.findings.contains(&finding) {
                self.findings.push(finding);
            }
        }
    }
}

/// Compares a file on disk with a SHA-256 recorded for it (`None`: it was missing then).
fn compare_seen(seen: &Seen, recorded: Option<&str>) -> Option<Problem> {
    match (seen, recorded) {
        (Seen::Hashed { sha256, .. }, Some(recorded)) => {
            (sums::hex(sha256) != recorded).then_some(Problem::Changed)
        }
        (Seen::Missing, Some(_)) => Some(Problem::Missing),
        (Seen::NotRegular, Some(_)) => Some(Problem::NotRegular),
        (Seen::Unreadable(_), Some(_)) => Some(Problem::Unreadable),
        (_, None) => None,
    }
}

/// Checks the files of the package whose status record is `stanza` against dpkg's md5sums and
/// conffile hashes, hashing each file under `root` once.
///
/// # Errors
/// Only when the md5sums file exists and cannot be read.
pub fn verify_package(root: &Path, admin_dir: &Path, stanza: &Stanza) -> io::Result<Verification> {
    let package = stanza.field("Package").unwrap_or_default().to_owned();
    let arch = stanza
        .field("Architecture")
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    let version = stanza
        .field("Version")
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let conffiles: Vec<Conffile> = stanza
        .field("Conffiles")
        .map(parse_conffiles)
        .unwrap_or_default();

    let mut verification = Verification {
        package: package.clone(),
        arch: arch.clone(),
        version,
        ..Verification::default()
    };
    let md5sums = match sums::md5sums_path(admin_dir, &package, arch.as_deref()) {
        Some(path) => {
            verification.has_md5sums = true;
            parse_md5sums(&std::fs::read(path)?)
        }
        None => sums::Md5sums::default(),
    };

    // dpkg's own md5sums list conffiles too; the status database's hash is the one to judge.
    let is_conffile = |path: &Path| conffiles.iter().any(|c| c.path == path);
    for sum in md5sums.files.iter().filter(|s| !is_conffile(&s.path)) {
        verification.files.push(CheckedFile {
            path: sum.path.clone(),
            kind: FileKind::File,
            expected: Some(sum.md5),
            seen: hash_file(&root.join(&sum.path)),
        });
    }
    for conffile in &conffiles {
        verification.files.push(CheckedFile {
            path: conffile.path.clone(),
            kind: if conffile.is_obsolete {
                FileKind::ObsoleteConffile
            } else {
                FileKind::Conffile
            },
            expected: conffile.md5,
            seen: hash_file(&root.join(&conffile.path)),
        });
    }

    for file in &verification.files {
        if let Seen::Hashed { size, .. } = file.seen {
            verification.bytes += size;
        }
        let problem = match (&file.seen, file.expected) {
            (_, None) => None,
            (Seen::Hashed { md5, .. }, Some(expected)) => {
                (*md5 != expected).then_some(Problem::Changed)
            }
            (Seen::Missing, Some(_)) => Some(Problem::Missing),
            (Seen::NotRegular, Some(_)) => Some(Problem::NotRegular),
            (Seen::Unreadable(_), Some(_)) => Some(Problem::Unreadable),
        };
        if let Some(problem) = problem {
            verification.findings.push(Finding {
                path: shown_path(&display_relative(&file.path)),
                kind: file.kind,
                problem,
                against: Witness::Dpkg,
            });
        }
    }
    Ok(verification)
}

/// Hashes one file with MD5 and SHA-256 in one pass.
#[must_use]
pub fn hash_file(path: &Path) -> Seen {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path);
    let mut file: File = match file {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Seen::Missing,
        // O_NOFOLLOW on a symlink fails with ELOOP.
        Err(err) if err.raw_os_error() == Some(nix::libc::ELOOP) => return Seen::NotRegular,
        Err(err) => return Seen::Unreadable(err.to_string()),
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Seen::NotRegular,
        Err(err) => return Seen::Unreadable(err.to_string()),
    }
    let mut md5 = Md5::new();
    let mut sha256 = Sha256::new();
    let mut size = 0_u64;
    let mut chunk = vec![0_u8; HASH_CHUNK];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                md5.update(&chunk[..n]);
                sha256.update(&chunk[..n]);
                size += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Seen::Unreadable(err.to_string()),
        }
    }
    Seen::Hashed {
        md5: md5.finalize().into(),
        sha256: sha256.finalize().into(),
        size,
    }
}

/// Renders a relative path as stored in records: lossy UTF-8, no leading `/`.
fn display_relative(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Renders a file of the root for people: `/usr/bin/x`, escaped.
fn shown_path(relative: &str) -> String {
    escape_control(&format!("/{relative}")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(fields: &[(&str, &str)]) -> Stanza {
        Stanza {
            fields: fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            line_no: 1,
            has_cut_line: false,
        }
    }

    fn md5_of(bytes: &[u8]) -> String {
        sums::hex(&Md5::digest(bytes))
    }

    /// A root with one package `p`: a binary, a doc file, a conffile and an obsolete one.
    fn installed() -> anyhow::Result<(tempfile::TempDir, Stanza)> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        let admin = root.join("var/lib/dpkg");
        std::fs::create_dir_all(admin.join("info"))?;
        std::fs::create_dir_all(root.join("usr/bin"))?;
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::write(root.join("usr/bin/p"), b"binary")?;
        std::fs::write(root.join("usr/bin/doc"), b"doc")?;
        std::fs::write(root.join("etc/p.conf"), b"a=1\n")?;
        std::fs::write(root.join("etc/old.conf"), b"old\n")?;
        std::fs::write(
            admin.join("info/p:amd64.md5sums"),
            format!(
                "{}  usr/bin/p\n{}  usr/bin/doc\n{}  etc/p.conf\n",
                md5_of(b"binary"),
                md5_of(b"doc"),
                md5_of(b"a=1\n")
            ),
        )?;
        let conffiles = format!(
            "\n/etc/p.conf {}\n/etc/old.conf {} obsolete\n/etc/new.conf newconffile",
            md5_of(b"a=1\n"),
            md5_of(b"old\n")
        );
        let stanza = stanza(&[
            ("Package", "p"),
            ("Status", "install ok installed"),
            ("Architecture", "amd64"),
            ("Version", "1.0"),
            ("Conffiles", &conffiles),
        ]);
        Ok((dir, stanza))
    }

    #[test]
    fn an_untouched_package_has_no_findings() -> anyhow::Result<()> {
        let (dir, stanza) = installed()?;
        let admin = dir.path().join("var/lib/dpkg");
        let verification = verify_package(dir.path(), &admin, &stanza)?;
        assert!(verification.has_md5sums);
        assert_eq!(verification.findings, []);
        // The conffile listed in md5sums is judged once, as a conffile.
        assert_eq!(verification.files.len(), 5);
        assert_eq!(verification.bytes, 6 + 3 + 4 + 4);
        Ok(())
    }

    #[test]
    fn binaries_and_conffiles_are_judged_apart() -> anyhow::Result<()> {
        let (dir, stanza) = installed()?;
        let root = dir.path();
        let admin = root.join("var/lib/dpkg");
        std::fs::write(root.join("usr/bin/p"), b"trojan")?;
        std::fs::remove_file(root.join("usr/bin/doc"))?;
        std::fs::write(root.join("etc/p.conf"), b"a=2\n")?;
        std::fs::remove_file(root.join("etc/old.conf"))?;
        let verification = verify_package(root, &admin, &stanza)?;
        let seen: Vec<(&str, FileKind, Problem)> = verification
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.kind, f.problem))
            .collect();
        assert_eq!(
            seen,
            [
                ("/usr/bin/p", FileKind::File, Problem::Changed),
                ("/usr/bin/doc", FileKind::File, Problem::Missing),
                ("/etc/p.conf", FileKind::Conffile, Problem::Changed),
                (
                    "/etc/old.conf",
                    FileKind::ObsoleteConffile,
                    Problem::Missing
                ),
            ]
        );
        assert!(verification.has_file_findings());
        Ok(())
    }

    #[test]
    fn a_file_swapped_for_a_link_or_fifo_is_not_followed() -> anyhow::Result<()> {
        let (dir, stanza) = installed()?;
        let root = dir.path();
        std::fs::remove_file(root.join("usr/bin/p"))?;
        std::os::unix::fs::symlink("/dev/zero", root.join("usr/bin/p"))?;
        std::fs::remove_file(root.join("usr/bin/doc"))?;
        nix::unistd::mkfifo(&root.join("usr/bin/doc"), nix::sys::stat::Mode::S_IRWXU)?;
        let verification = verify_package(root, &root.join("var/lib/dpkg"), &stanza)?;
        let problems: Vec<Problem> = verification.findings.iter().map(|f| f.problem).collect();
        assert_eq!(problems, [Problem::NotRegular, Problem::NotRegular]);
        Ok(())
    }

    #[test]
    fn the_record_catches_a_change_hidden_by_an_edited_md5sums() -> anyhow::Result<()> {
        let (dir, stanza) = installed()?;
        let root = dir.path();
        let admin = root.join("var/lib/dpkg");
        let record = verify_package(root, &admin, &stanza)?.to_record(&admin, root);

        std::fs::write(root.join("usr/bin/p"), b"trojan")?;
        std::fs::write(
            admin.join("info/p:amd64.md5sums"),
            format!(
                "{}  usr/bin/p\n{}  usr/bin/doc\n",
                md5_of(b"trojan"),
                md5_of(b"doc")
            ),
        )?;
        let mut verification = verify_package(root, &admin, &stanza)?;
        assert_eq!(
            verification.findings,
            [],
            "dpkg's database was made to agree"
        );
        verification.compare_with_record(&record, root);
        let seen: Vec<(&str, Problem, Witness)> = verification
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.problem, f.against))
            .collect();
        assert_eq!(
            seen,
            [
                ("/usr/bin/p", Problem::Changed, Witness::Record),
                ("/usr/bin/p", Problem::HashEdited, Witness::Record),
            ]
        );
        Ok(())
    }
}
