//! dpkg's own record of what a package put on disk, read into types.
//!
//! In: the bytes of `<admindir>/info/<pkg>.md5sums` (or `<pkg>:<arch>.md5sums` for a package
//! installed for several architectures) and the `Conffiles` field of the package's record in
//! the status database. Out: [`FileSum`]s and [`Conffile`]s. No state.
//!
//! An md5sums line is 32 hex digits, two spaces (md5sum's binary marker ` *` is accepted too)
//! and the path relative to dpkg's root, without the leading `/`. A `Conffiles` line is
//! ` /etc/path <md5> [obsolete] [remove-on-upgrade]`, where the hash is `newconffile` until
//! the package's first configuration has recorded one. Paths are bytes: dpkg does not require
//! UTF-8 in file names.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

/// An MD5 digest.
pub type Md5 = [u8; 16];

/// One line of an md5sums file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSum {
    /// The path relative to dpkg's root, no leading `/`.
    pub path: PathBuf,
    pub md5: Md5,
}

/// One conffile of a package, as the status database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conffile {
    /// The path relative to dpkg's root, no leading `/`.
    pub path: PathBuf,
    /// The hash of the file as installed; `None` while dpkg records `newconffile`.
    pub md5: Option<Md5>,
    /// The package no longer ships this file; it stays the administrator's.
    pub is_obsolete: bool,
    /// dpkg removes the file on the next upgrade.
    pub is_remove_on_upgrade: bool,
}

/// What an md5sums file held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Md5sums {
    pub files: Vec<FileSum>,
    /// Lines that were not `<md5>  <path>` with a safe relative path.
    pub malformed: u64,
}

/// Parses the bytes of an md5sums file; malformed lines are counted and skipped.
#[must_use]
pub fn parse_md5sums(bytes: &[u8]) -> Md5sums {
    let mut sums = Md5sums::default();
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        match parse_md5sums_line(line) {
            Some(sum) => sums.files.push(sum),
            None => sums.malformed += 1,
        }
    }
    sums
}

fn parse_md5sums_line(line: &[u8]) -> Option<FileSum> {
    let (hex, rest) = (line.get(..32)?, line.get(32..)?);
    let md5 = parse_md5(hex)?;
    let path = rest
        .strip_prefix(b"  ")
        .or_else(|| rest.strip_prefix(b" *"))?;
    Some(FileSum {
        path: relative_path(path)?,
        md5,
    })
}

/// Parses the value of a `Conffiles` field (continuation lines joined with `\n`); lines that
/// cannot be read are skipped.
#[must_use]
pub fn parse_conffiles(value: &str) -> Vec<Conffile> {
    value.lines().filter_map(parse_conffile_line).collect()
}

fn parse_conffile_line(line: &str) -> Option<Conffile> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let mut is_obsolete = false;
    let mut is_remove_on_upgrade = false;
    // Flags follow the hash; the path is everything before it and may hold spaces.
    while let Some(&last) = words.last() {
        match last {
            "obsolete" => is_obsolete = true,
            "remove-on-upgrade" => is_remove_on_upgrade = true,
            _ => break,
        }
        words.pop();
    }
    let hash = words.pop()?;
    if words.is_empty() {
        return None;
    }
    let md5 = if hash == "newconffile" {
        None
    } else {
        Some(parse_md5(hash.as_bytes())?)
    };
    let start = line.find(words[0])?;
    let end = line.rfind(hash)?;
    let path = line.get(start..end)?.trim_end();
    Some(Conffile {
        path: relative_path(path.as_bytes())?,
        md5,
        is_obsolete,
        is_remove_on_upgrade,
    })
}

/// Reads 32 hex digits.
#[must_use]
pub fn parse_md5(hex: &[u8]) -> Option<Md5> {
    if hex.len() != 32 {
        return None;
    }
    let mut md5 = [0_u8; 16];
    for (byte, pair) in md5.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(md5)
}

/// Writes bytes as lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, b| {
            let _ = write!(text, "{b:02x}");
            text
        })
}

/// Turns a path as dpkg writes it (`usr/bin/x`, `/etc/x`, `./usr/x`) into a relative path
/// that cannot leave the root: `..` components and empty paths are refused.
fn relative_path(bytes: &[u8]) -> Option<PathBuf> {
    let path = Path::new(OsStr::from_bytes(bytes));
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

/// Returns the md5sums file of a package: `<name>:<arch>.md5sums` when dpkg keeps one per
/// architecture, else `<name>.md5sums`; `None` when the package has none.
#[must_use]
pub fn md5sums_path(admin_dir: &Path, name: &str, arch: Option<&str>) -> Option<PathBuf> {
    let info = admin_dir.join("info");
    if let Some(arch) = arch {
        let qualified = info.join(format!("{name}:{arch}.md5sums"));
        if qualified.exists() {
            return Some(qualified);
        }
    }
    let plain = info.join(format!("{name}.md5sums"));
    plain.exists().then_some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5sums_lines_read_into_paths_and_digests() {
        let sums = parse_md5sums(
            b"e3e885c01810c7cb5ea999884c4042c2  sbin/start-stop-daemon\n\
              1b7bcfb2ca9f6f6b155d00a8e0187dd7  usr/share/doc/a b/with space\r\n\
              3fa2bedc580076dd391eb79adf668de5 *./usr/lib/x\n\
              \n\
              not a line\n\
              3fa2bedc580076dd391eb79adf668de5  ../../etc/shadow\n\
              3fa2bedc580076dd391eb79adf668dzz  usr/bad-hex\n\
              3fa2bedc580076dd391eb79adf668de5 one-space\n",
        );
        let paths: Vec<&Path> = sums.files.iter().map(|f| f.path.as_path()).collect();
        assert_eq!(
            paths,
            [
                Path::new("sbin/start-stop-daemon"),
                Path::new("usr/share/doc/a b/with space"),
                Path::new("usr/lib/x"),
            ]
        );
        assert_eq!(hex(&sums.files[0].md5), "e3e885c01810c7cb5ea999884c4042c2");
        assert_eq!(sums.malformed, 4);
    }

    #[test]
    fn non_utf8_paths_are_kept_as_bytes() {
        let sums = parse_md5sums(b"e3e885c01810c7cb5ea999884c4042c2  usr/share/caf\xe9\n");
        assert_eq!(
            sums.files[0].path.as_os_str().as_bytes(),
            b"usr/share/caf\xe9"
        );
    }

    #[test]
    fn conffiles_keep_their_flags_and_pending_hashes() {
        let value = "\n/etc/adduser.conf cc3493ecf3bd6e5e4c6bd4b0fdd5f0de\n\
                     /etc/old.conf 11a06baf8245fd1ec7ed5bb7a1bdd3bd obsolete\n\
                     /etc/dpkg/dpkg.cfg.d/pkg-config-hook-config newconffile remove-on-upgrade\n\
                     /etc/with space.conf 11a06baf8245fd1ec7ed5bb7a1bdd3bd\n\
                     garbage\n\
                     /etc/x nothex";
        let conffiles = parse_conffiles(value);
        assert_eq!(conffiles.len(), 4);
        assert_eq!(conffiles[0].path, Path::new("etc/adduser.conf"));
        assert!(!conffiles[0].is_obsolete);
        assert!(conffiles[1].is_obsolete);
        assert_eq!(conffiles[2].md5, None);
        assert!(conffiles[2].is_remove_on_upgrade);
        assert_eq!(conffiles[3].path, Path::new("etc/with space.conf"));
    }

    /// Every md5sums file of this host's dpkg database parses without a malformed line, and
    /// every conffile its status database lists parses too.
    #[test]
    fn this_hosts_md5sums_and_conffiles_parse_cleanly() -> anyhow::Result<()> {
        let info = Path::new("/var/lib/dpkg/info");
        if !info.is_dir() {
            println!("skipping: this host has no dpkg database");
            return Ok(());
        }
        let mut files = 0;
        for entry in std::fs::read_dir(info)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "md5sums") {
                let sums = parse_md5sums(&std::fs::read(&path)?);
                assert_eq!(sums.malformed, 0, "{}", path.display());
                files += sums.files.len();
            }
        }
        assert!(files > 100, "only {files} files listed");

        let records = crate::parse::status::read_records(Path::new("/var/lib/dpkg"))?;
        let mut listed = 0;
        for stanza in records.values() {
            if let Some(value) = stanza.field("Conffiles") {
                let expected = value.lines().filter(|l| !l.trim().is_empty()).count();
                assert_eq!(parse_conffiles(value).len(), expected, "{value}");
                listed += expected;
            }
        }
        assert!(listed > 0);
        Ok(())
    }
}
