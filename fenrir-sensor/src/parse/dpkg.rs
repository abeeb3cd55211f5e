//! Lines of dpkg's log (`/var/log/dpkg.log`), read into types.
//!
//! In: one line as bytes, without its newline. Out: a [`LogLine`] or a [`ParseError`] naming
//! what is wrong. No state: every line stands alone, and [`super::transaction`] decides what a
//! sequence of lines means.
//!
//! dpkg writes `YYYY-MM-DD HH:MM:SS ` followed by one of
//!
//! ```text
//! install|upgrade|remove|purge|configure|trigproc|disappear <pkg> <installed> <available>
//! status <state> <pkg> <installed>
//! startup archives|packages <command>
//! conffile <path> install|keep
//! ```
//!
//! where `<pkg>` is `name:arch` since dpkg 1.16.2 and a bare `name` before, and a version
//! absent from the package database is written `<none>`. Fields are separated by one space;
//! only a conffile path may itself contain spaces.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::version::{Version, VersionError};
use crate::event::escape_control;

/// The longest line accepted, in bytes; dpkg's own lines stay far below it.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Length of `YYYY-MM-DD HH:MM:SS`.
const TIMESTAMP_LEN: usize = 19;

/// How much of an offending field an error message quotes.
const QUOTE_LEN: usize = 64;

/// How dpkg writes an absent version.
const NO_VERSION: &str = "<none>";

/// Why a line is not a dpkg log line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The line holds nothing.
    #[error("line is empty")]
    Empty,
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("line is {len} bytes long, more than the {MAX_LINE_LEN} accepted")]
    TooLong {
        /// The line's length in bytes.
        len: usize,
    },
    /// The line does not start with a valid `YYYY-MM-DD HH:MM:SS ` stamp.
    #[error("line does not start with a valid timestamp")]
    BadTimestamp,
    /// Bytes other than in a conffile path are not UTF-8.
    #[error("line is not valid utf-8 at byte {offset}")]
    InvalidUtf8 {
        /// Offset of the first invalid byte in the line.
        offset: usize,
    },
    /// The word after the timestamp is not one dpkg writes.
    #[error("unknown line kind {kind:?}")]
    UnknownKind {
        /// The word, escaped and shortened.
        kind: String,
    },
    /// The line ends before a field it needs.
    #[error("missing {field} field")]
    MissingField {
        /// The name of the first missing field.
        field: &'static str,
    },
    /// The line has more fields than its kind.
    #[error("unexpected field {text:?} after the last field")]
    ExtraField {
        /// The first extra field, escaped and shortened.
        text: String,
    },
    /// The package field is not `name` or `name:arch`.
    #[error("invalid package {text:?}")]
    BadPackage {
        /// The field, escaped and shortened.
        text: String,
    },
    /// A version field is neither `<none>` nor a Debian version.
    #[error("invalid {field} version {text:?}")]
    BadVersion {
        /// Which version field.
        field: &'static str,
        /// The field, escaped and shortened.
        text: String,
        /// What is wrong with it.
        #[source]
        source: VersionError,
    },
    /// The state of a status line is not one of dpkg's eight.
    #[error("unknown package state {text:?}")]
    BadState {
        /// The field, escaped and shortened.
        text: String,
    },
    /// A startup line names neither `archives` nor `packages`, or no valid command.
    #[error("invalid startup {field} {text:?}")]
    BadStartup {
        /// `scope` or `command`.
        field: &'static str,
        /// The field, escaped and shortened.
        text: String,
    },
    /// A conffile line ends in neither `install` nor `keep`.
    #[error("invalid conffile decision {text:?}")]
    BadDecision {
        /// The field, escaped and shortened.
        text: String,
    },
}

/// One parsed line of dpkg's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The local wall-clock time dpkg wrote.
    pub timestamp: NaiveDateTime,
    /// What the line records.
    pub kind: LineKind,
}

/// What one line of dpkg's log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    /// dpkg started an action on a package.
    Action {
        /// Which action.
        action: Action,
        /// The package acted on.
        package: PackageRef,
        /// The installed version before the action; `None` for `<none>`.
        old_version: Option<String>,
        /// The version being installed; `None` for `<none>`.
        new_version: Option<String>,
    },
    /// dpkg recorded a new state for a package.
    Status {
        /// The state now in the database.
        state: PackageState,
        /// The package.
        package: PackageRef,
        /// The installed version; `None` for `<none>`.
        version: Option<String>,
    },
    /// A dpkg run began.
    Startup {
        /// Whether the run works on archives or on installed packages.
        scope: StartupScope,
        /// The command, such as `unpack` or `configure`.
        command: String,
    },
    /// dpkg decided about a changed configuration file.
    Conffile {
        /// The file; bytes that are not UTF-8 are replaced.
        path: String,
        /// Whether the packaged file was installed or the local one kept.
        decision: ConffileDecision,
    },
}

/// A package as dpkg names it in the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageRef {
    /// The package name.
    pub name: String,
    /// The architecture qualifier; `None` in logs of dpkg before 1.16.2.
    pub arch: Option<String>,
}

impl fmt::Display for PackageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arch {
            Some(arch) => write!(f, "{}:{arch}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Defines a field enum whose variants each have one spelling in the log.
macro_rules! spelled_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Returns the word dpkg writes for this value.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = ();

            fn from_str(text: &str) -> Result<Self, ()> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled_enum! {
    /// The action word of an action line.
    Action {
        /// A package not installed is unpacked (possibly over its leftover config files).
        Install => "install",
        /// An installed package is replaced by another version, or by the same one.
        Upgrade => "upgrade",
        /// An installed package is removed, keeping its config files.
        Remove => "remove",
        /// A package is removed with its config files.
        Purge => "purge",
        /// An unpacked package is configured.
        Configure => "configure",
        /// Pending triggers of a package are processed.
        Trigproc => "trigproc",
        /// A package whose files were all taken over by others is dropped.
        Disappear => "disappear",
    }
}

spelled_enum! {
    /// A package's state in dpkg's database.
    PackageState {
        /// Not installed, no config files left.
        NotInstalled => "not-installed",
        /// Only the config files are left.
        ConfigFiles => "config-files",
        /// Unpacking or removal started and did not finish.
        HalfInstalled => "half-installed",
        /// Unpacked, not configured.
        Unpacked => "unpacked",
        /// Configuration started and did not finish.
        HalfConfigured => "half-configured",
        /// Configured, waiting for another package to process triggers.
        TriggersAwaited => "triggers-awaited",
        /// Configured, with triggers of its own still to process.
        TriggersPending => "triggers-pending",
        /// Unpacked and configured.
        Installed => "installed",
    }
}

spelled_enum! {
    /// What a dpkg run works on, as named on its startup line.
    StartupScope {
        /// .deb archives (`--unpack`, `--install`, `--record-avail`).
        Archives => "archives",
        /// Installed packages (`--configure`, `--remove`, `--purge`, `--triggers-only`).
        Packages => "packages",
    }
}

spelled_enum! {
    /// dpkg's decision about a configuration file changed both locally and in the package.
    ConffileDecision {
        /// The packaged version was installed.
        Install => "install",
        /// The local version was kept.
        Keep => "keep",
    }
}

impl PackageState {
    /// Tells whether the package is configured: the state a finished install ends in.
    #[must_use]
    pub fn is_configured(self) -> bool {
        matches!(
            self,
            Self::Installed | Self::TriggersPending | Self::TriggersAwaited
        )
    }
}

/// Parses one line of dpkg's log, given without its newline.
///
/// # Errors
///
/// Returns a [`ParseError`] naming the first problem found. Lines longer than [`MAX_LINE_LEN`]
/// are refused before any of their content is read.
pub fn parse_line(line: &[u8]) -> Result<LogLine, ParseError> {
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    if line.len() > MAX_LINE_LEN {
        return Err(ParseError::TooLong { len: line.len() });
    }

    let timestamp = parse_timestamp(line)?;
    let rest = match line.get(TIMESTAMP_LEN..) {
        None | Some([]) => return Err(ParseError::MissingField { field: "kind" }),
        Some([b' ', rest @ ..]) => rest,
        Some(_) => return Err(ParseError::BadTimestamp),
    };

    // A conffile path is a file name, which Linux lets be any bytes, so it alone is decoded
    // lossily; everywhere else invalid UTF-8 means the line is not dpkg's.
    let kind = if let Some(tail) = rest.strip_prefix(b"conffile ") {
        parse_conffile(tail)?
    } else {
        let rest = std::str::from_utf8(rest).map_err(|err| ParseError::InvalidUtf8 {
            offset: TIMESTAMP_LEN + 1 + err.valid_up_to(),
        })?;
        parse_rest(rest)?
    };

    Ok(LogLine { timestamp, kind })
}

/// Reads the `YYYY-MM-DD HH:MM:SS` stamp a dpkg.log line begins with.
///
/// # Errors
/// [`ParseError::BadTimestamp`] for a line that does not begin with one.
pub fn parse_timestamp(line: &[u8]) -> Result<NaiveDateTime, ParseError> {
    let Some(stamp) = line.get(..TIMESTAMP_LEN) else {
        return Err(ParseError::BadTimestamp);
    };
    let shape_ok = stamp.iter().enumerate().all(|(i, &b)| match i {
        4 | 7 => b == b'-',
        10 => b == b' ',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    if !shape_ok {
        return Err(ParseError::BadTimestamp);
    }

    let number = |range: std::ops::Range<usize>| {
        stamp[range]
            .iter()
            .fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'))
    };
    let date = NaiveDate::from_ymd_opt(number(0..4).cast_signed(), number(5..7), number(8..10));
    let time = NaiveTime::from_hms_opt(number(11..13), number(14..16), number(17..19));
    match (date, time) {
        (Some(date), Some(time)) => Ok(date.and_time(time)),
        _ => Err(ParseError::BadTimestamp),
    }
}

fn parse_conffile(tail: &[u8]) -> Result<LineKind, ParseError> {
    let Some(space) = tail.iter().rposition(|&b| b == b' ') else {
        return Err(if tail.is_empty() {
            ParseError::MissingField { field: "path" }
        } else {
            ParseError::MissingField { field: "decision" }
        });
    };
    let (path, decision) = (&tail[..space], &tail[space + 1..]);
    if path.is_empty() {
        return Err(ParseError::MissingField { field: "path" });
    }

    let decision = std::str::from_utf8(decision)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| ParseError::BadDecision {
            text: quote(&String::from_utf8_lossy(decision)),
        })?;

    Ok(LineKind::Conffile {
        path: String::from_utf8_lossy(path).into_owned(),
        decision,
    })
}

fn parse_rest(rest: &str) -> Result<LineKind, ParseError> {
    let mut fields = Fields::new(rest);
    let kind = fields.next("kind")?;

    let line = if let Ok(action) = kind.parse::<Action>() {
        LineKind::Action {
            action,
            package: parse_package(fields.next("package")?)?,
            old_version: parse_version(fields.next("installed version")?, "installed")?,
            new_version: parse_version(fields.next("available version")?, "available")?,
        }
    } else {
        match kind {
            "status" => {
                let state = fields.next("state")?;
                let state = state
                    .parse()
                    .map_err(|()| ParseError::BadState { text: quote(state) })?;
                LineKind::Status {
                    state,
                    package: parse_package(fields.next("package")?)?,
                    version: parse_version(fields.next("version")?, "installed")?,
                }
            }
            "startup" => {
                let scope = fields.next("scope")?;
                let scope = scope.parse().map_err(|()| ParseError::BadStartup {
                    field: "scope",
                    text: quote(scope),
                })?;
                let command = fields.next("command")?;
                if !is_command(command) {
                    return Err(ParseError::BadStartup {
                        field: "command",
                        text: quote(command),
                    });
                }
                LineKind::Startup {
                    scope,
                    command: command.to_owned(),
                }
            }
            _ => return Err(ParseError::UnknownKind { kind: quote(kind) }),
        }
    };

    fields.finish()?;
    Ok(line)
}

/// The fields of a line, split on single spaces, naming the one that is missing.
///
/// Splitting on bytes with `memchr` keeps replay of long histories fast; a space is ASCII, so
/// every split point is a character boundary.
struct Fields<'a>(Option<&'a str>);

impl<'a> Fields<'a> {
    fn new(text: &'a str) -> Self {
        Self(Some(text))
    }

    fn split(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        if let Some(space) = memchr::memchr(b' ', rest.as_bytes()) {
            self.0 = Some(&rest[space + 1..]);
            Some(&rest[..space])
        } else {
            self.0 = None;
            Some(rest)
        }
    }

    fn next(&mut self, field: &'static str) -> Result<&'a str, ParseError> {
        self.split().ok_or(ParseError::MissingField { field })
    }

    fn finish(mut self) -> Result<(), ParseError> {
        match self.split() {
            Some(text) => Err(ParseError::ExtraField { text: quote(text) }),
            None => Ok(()),
        }
    }
}

fn parse_package(text: &str) -> Result<PackageRef, ParseError> {
    let (name, arch) = match memchr::memchr(b':', text.as_bytes()) {
        Some(colon) => (&text[..colon], Some(&text[colon + 1..])),
        None => (text, None),
    };

    // dpkg allows `-+._` besides letters and digits in names; architectures are Debian
    // architecture names (`amd64`, `all`, `armhf`, `kfreebsd-i386`, …).
    let name_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b));
    let arch_ok = arch.is_none_or(|arch| {
        !arch.is_empty()
            && arch
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if !name_ok || !arch_ok {
        return Err(ParseError::BadPackage { text: quote(text) });
    }

    Ok(PackageRef {
        name: name.to_owned(),
        arch: arch.map(str::to_owned),
    })
}

fn parse_version(text: &str, field: &'static str) -> Result<Option<String>, ParseError> {
    if text == NO_VERSION {
        return Ok(None);
    }
    match Version::validate(text) {
        Ok(()) => Ok(Some(text.to_owned())),
        Err(source) => Err(ParseError::BadVersion {
            field,
            text: quote(text),
            source,
        }),
    }
}

/// Tells whether `text` looks like a dpkg command name (`unpack`, `record-avail`).
fn is_command(text: &str) -> bool {
    text.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

/// Returns a field, shortened and with control characters escaped, for an error message.
fn quote(text: &str) -> String {
    let end = text
        .char_indices()
        .nth(QUOTE_LEN)
        .map_or(text.len(), |(i, _)| i);
    let mut quoted = escape_control(&text[..end]).into_owned();
    if end < text.len() {
        quoted.push('…');
    }
    quoted
}

/// The sample logs under `shared/corpus/dpkg`, shared by the parse stage's tests.
#[cfg(test)]
pub(crate) mod corpus {
    use std::path::PathBuf;

    /// Returns the corpus folder: `FENRIR_DPKG_CORPUS`, or the shared one next to the
    /// workspace.
    fn dir() -> PathBuf {
        std::env::var_os("FENRIR_DPKG_CORPUS").map_or_else(
            || {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/corpus/dpkg"
                ))
            },
            PathBuf::from,
        )
    }

    /// Returns every corpus log as (file name, bytes), sorted by name, or `None` after
    /// printing why the corpus is missing.
    pub(crate) fn files() -> Option<Vec<(String, Vec<u8>)>> {
        let dir = dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            println!("skipping: no dpkg log corpus at {}", dir.display());
            return None;
        };
        let mut files: Vec<(String, Vec<u8>)> = entries
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().contains("dpkg.log"))
            .filter_map(|entry| {
                let bytes = std::fs::read(entry.path()).ok()?;
                Some((entry.file_name().to_string_lossy().into_owned(), bytes))
            })
            .collect();
        files.sort();
        assert!(
            files.len() >= 10,
            "corpus at {} holds too few logs",
            dir.display()
        );
        Some(files)
    }

    /// Splits a log into its lines the way a tailer does: at `\n`, keeping a final line that
    /// has no newline.
    pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes.split(|&b| b == b'\n')
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn time(text: &str) -> NaiveDateTime {
        match NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
            Ok(time) => time,
            Err(err) => panic!("bad test timestamp {text}: {err}"),
        }
    }

    fn package(name: &str, arch: Option<&str>) -> PackageRef {
        PackageRef {
            name: name.to_owned(),
            arch: arch.map(str::to_owned),
        }
    }

    fn action(
        action: Action,
        name: &str,
        arch: Option<&str>,
        old: Option<&str>,
        new: Option<&str>,
    ) -> LineKind {
        LineKind::Action {
            action,
            package: package(name, arch),
            old_version: old.map(str::to_owned),
            new_version: new.map(str::to_owned),
        }
    }

    fn status(
        state: PackageState,
        name: &str,
        arch: Option<&str>,
        version: Option<&str>,
    ) -> LineKind {
        LineKind::Status {
            state,
            package: package(name, arch),
            version: version.map(str::to_owned),
        }
    }

    fn startup(scope: StartupScope, command: &str) -> LineKind {
        LineKind::Startup {
            scope,
            command: command.to_owned(),
        }
    }

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "one table of real lines reads best in one place"
    )]
    fn real_lines_parse_into_their_fields() {
        use Action::{Configure, Install, Purge, Remove, Trigproc, Upgrade};
        use PackageState::*;
        use StartupScope::{Archives, Packages};

        // Every line below was copied from a log in the corpus.
        let cases = [
            // dpkg before 1.16.2: no architecture.
            (
                "2013-01-10 13:31:56 install dhcp3-client <none> 4.1.ESV-R4-0ubuntu5.5",
                action(
                    Install,
                    "dhcp3-client",
                    None,
                    None,
                    Some("4.1.ESV-R4-0ubuntu5.5"),
                ),
            ),
            (
                concat!(
                    "2013-01-10 13:31:56 install isc-dhcp-client ",
                    "4.1.ESV-R4-0ubuntu5.5 4.1.ESV-R4-0ubuntu5.5"
                ),
                action(
                    Install,
                    "isc-dhcp-client",
                    None,
                    Some("4.1.ESV-R4-0ubuntu5.5"),
                    Some("4.1.ESV-R4-0ubuntu5.5"),
                ),
            ),
            (
                "2009-10-19 05:06:24 upgrade dpkg 1.14.24ubuntu1 1.14.24ubuntu1",
                action(
                    Upgrade,
                    "dpkg",
                    None,
                    Some("1.14.24ubuntu1"),
                    Some("1.14.24ubuntu1"),
                ),
            ),
            (
                "2013-01-10 11:23:48 remove grub-pc 1.99-21ubuntu3.7 <none>",
                action(Remove, "grub-pc", None, Some("1.99-21ubuntu3.7"), None),
            ),
            (
                "2009-10-19 05:06:23 configure base-passwd 3.5.21 3.5.21",
                action(
                    Configure,
                    "base-passwd",
                    None,
                    Some("3.5.21"),
                    Some("3.5.21"),
                ),
            ),
            (
                "2009-10-19 05:06:31 trigproc libc6 2.9-4ubuntu6 2.9-4ubuntu6",
                action(
                    Trigproc,
                    "libc6",
                    None,
                    Some("2.9-4ubuntu6"),
                    Some("2.9-4ubuntu6"),
                ),
            ),
            // Multi-arch, epochs and tildes.
            (
                "2020-07-16 15:15:53 upgrade libgnutls30:amd64 3.6.7-4+deb10u3 3.6.7-4+deb10u4",
                action(
                    Upgrade,
                    "libgnutls30",
                    Some("amd64"),
                    Some("3.6.7-4+deb10u3"),
                    Some("3.6.7-4+deb10u4"),
                ),
            ),
            (
                "2020-07-16 15:29:59 remove g++:amd64 4:8.3.0-1 <none>",
                action(Remove, "g++", Some("amd64"), Some("4:8.3.0-1"), None),
            ),
            (
                "2012-07-07 07:38:18 purge libconsole:powerpc 1:0.2.3dbs-69.1 <none>",
                action(
                    Purge,
                    "libconsole",
                    Some("powerpc"),
                    Some("1:0.2.3dbs-69.1"),
                    None,
                ),
            ),
            (
                "2012-07-07 07:38:25 purge librpcsecgss3:powerpc 0.19-4 <none>",
                action(
                    Purge,
                    "librpcsecgss3",
                    Some("powerpc"),
                    Some("0.19-4"),
                    None,
                ),
            ),
            (
                "2012-07-07 07:38:25 purge libtalloc1:powerpc 1.2.0~git20080616-1 <none>",
                action(
                    Purge,
                    "libtalloc1",
                    Some("powerpc"),
                    Some("1.2.0~git20080616-1"),
                    None,
                ),
            ),
            (
                "2021-11-03 06:01:44 purge mksh:riscv64 59c-14 <none>",
                action(Purge, "mksh", Some("riscv64"), Some("59c-14"), None),
            ),
            (
                "2020-07-16 15:15:54 configure libgnutls30:amd64 3.6.7-4+deb10u4 <none>",
                action(
                    Configure,
                    "libgnutls30",
                    Some("amd64"),
                    Some("3.6.7-4+deb10u4"),
                    None,
                ),
            ),
            (
                "2020-07-16 15:17:35 trigproc systemd:amd64 241-7~deb10u4 <none>",
                action(
                    Trigproc,
                    "systemd",
                    Some("amd64"),
                    Some("241-7~deb10u4"),
                    None,
                ),
            ),
            (
                "2021-08-20 23:03:39 install dpkg-dev:all <none> 1.19.7",
                action(Install, "dpkg-dev", Some("all"), None, Some("1.19.7")),
            ),
            // Every state dpkg records.
            (
                "2020-07-16 15:29:59 status not-installed g++:amd64 <none>",
                status(NotInstalled, "g++", Some("amd64"), None),
            ),
            (
                "2020-07-16 15:29:59 status config-files g++:amd64 4:8.3.0-1",
                status(ConfigFiles, "g++", Some("amd64"), Some("4:8.3.0-1")),
            ),
            (
                "2020-07-16 15:15:53 status half-installed sensible-utils:all 0.0.12",
                status(HalfInstalled, "sensible-utils", Some("all"), Some("0.0.12")),
            ),
            (
                "2020-07-16 15:15:53 status unpacked sensible-utils:all 0.0.12",
                status(Unpacked, "sensible-utils", Some("all"), Some("0.0.12")),
            ),
            (
                "2020-07-16 15:15:53 status half-configured libgnutls30:amd64 3.6.7-4+deb10u3",
                status(
                    HalfConfigured,
                    "libgnutls30",
                    Some("amd64"),
                    Some("3.6.7-4+deb10u3"),
                ),
            ),
            (
                "2016-03-07 04:03:51 status triggers-awaited x11-common:all 1:7.7+1ubuntu8.1",
                status(
                    TriggersAwaited,
                    "x11-common",
                    Some("all"),
                    Some("1:7.7+1ubuntu8.1"),
                ),
            ),
            (
                "2020-07-16 15:15:53 status triggers-pending libc-bin:amd64 2.28-10",
                status(TriggersPending, "libc-bin", Some("amd64"), Some("2.28-10")),
            ),
            (
                "2020-07-16 15:15:54 status installed libgnutls30:amd64 3.6.7-4+deb10u4",
                status(
                    Installed,
                    "libgnutls30",
                    Some("amd64"),
                    Some("3.6.7-4+deb10u4"),
                ),
            ),
            (
                "2021-03-23 05:26:26 status half-configured dpkg 1.19.7",
                status(HalfConfigured, "dpkg", None, Some("1.19.7")),
            ),
            // Every startup form in the corpus.
            (
                "2020-07-16 15:15:53 startup archives unpack",
                startup(Archives, "unpack"),
            ),
            (
                "2009-10-19 05:06:23 startup archives install",
                startup(Archives, "install"),
            ),
            (
                "2020-07-16 15:15:54 startup packages configure",
                startup(Packages, "configure"),
            ),
            (
                "2012-07-07 07:38:09 startup packages purge",
                startup(Packages, "purge"),
            ),
            (
                "2020-07-16 15:29:59 startup packages remove",
                startup(Packages, "remove"),
            ),
            (
                "2009-02-25 11:45:23 conffile /etc/X11/Xsession keep",
                LineKind::Conffile {
                    path: "/etc/X11/Xsession".to_owned(),
                    decision: ConffileDecision::Keep,
                },
            ),
        ];

        for (line, expected) in cases {
            let parsed = parse_line(line.as_bytes());
            let expected = LogLine {
                timestamp: time(&line[..19]),
                kind: expected,
            };
            assert_eq!(parsed, Ok(expected), "{line}");
        }
    }

    #[test]
    fn states_are_spelled_as_dpkg_spells_them() {
        for word in [
            "not-installed",
            "config-files",
            "half-installed",
            "unpacked",
            "half-configured",
            "triggers-awaited",
            "triggers-pending",
            "installed",
        ] {
            let state: Result<PackageState, ()> = word.parse();
            assert_eq!(state.map(PackageState::as_str), Ok(word));
        }
    }

    #[test]
    fn conffile_paths_keep_spaces_and_survive_invalid_utf8() {
        let parsed = parse_line(b"2023-05-01 10:00:00 conffile /etc/my app/app.conf install");
        let expected = LineKind::Conffile {
            path: "/etc/my app/app.conf".to_owned(),
            decision: ConffileDecision::Install,
        };
        assert_eq!(parsed.map(|line| line.kind), Ok(expected));

        let parsed = parse_line(b"2023-05-01 10:00:00 conffile /etc/caf\xe9.conf keep");
        let expected = LineKind::Conffile {
            path: "/etc/caf\u{fffd}.conf".to_owned(),
            decision: ConffileDecision::Keep,
        };
        assert_eq!(parsed.map(|line| line.kind), Ok(expected));

        assert_eq!(
            parse_line(b"2023-05-01 10:00:00 conffile /etc/a.conf replace").err(),
            Some(ParseError::BadDecision {
                text: "replace".to_owned()
            })
        );
        assert_eq!(
            parse_line(b"2023-05-01 10:00:00 conffile keep").err(),
            Some(ParseError::MissingField { field: "decision" })
        );
    }

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "one table of malformed lines reads best in one place"
    )]
    fn malformed_lines_are_rejected_with_the_reason() {
        let long = format!(
            "2023-05-01 10:00:00 install {}:amd64 <none> 1.0",
            "a".repeat(1 << 20)
        );
        let cases: Vec<(&[u8], ParseError)> = vec![
            (b"", ParseError::Empty),
            (b"garbage", ParseError::BadTimestamp),
            (b"\x00\x01\x02\xff\xfe", ParseError::BadTimestamp),
            (
                b"2026-02-30 10:00:00 startup archives unpack",
                ParseError::BadTimestamp,
            ),
            (
                b"2023-05-01 24:00:00 startup archives unpack",
                ParseError::BadTimestamp,
            ),
            (
                b"2023-05-01 10:00:60 startup archives unpack",
                ParseError::BadTimestamp,
            ),
            (
                b"2023-05-01T10:00:00 startup archives unpack",
                ParseError::BadTimestamp,
            ),
            (
                b"2023-05-01 10:00:00",
                ParseError::MissingField { field: "kind" },
            ),
            (
                b"2023-05-01 10:00:00 ",
                ParseError::UnknownKind {
                    kind: String::new(),
                },
            ),
            (
                b"2023-05-01 10:00:00 install vim:amd64 <none>",
                ParseError::MissingField {
                    field: "available version",
                },
            ),
            (
                b"2023-05-01 10:00:00 install",
                ParseError::MissingField { field: "package" },
            ),
            (
                b"2023-05-01 10:00:00 status installed vim:amd64",
                ParseError::MissingField { field: "version" },
            ),
            (
                b"2023-05-01 10:00:00 install vim:amd64 <none> 2:9.0 extra",
                ParseError::ExtraField {
                    text: "extra".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 startup archives unpack now",
                ParseError::ExtraField {
                    text: "now".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 status installed vim:amd64 2:9.0 ",
                ParseError::ExtraField {
                    text: String::new(),
                },
            ),
            (
                b"2023-05-01 10:00:00 reinstall vim:amd64 <none> 2:9.0",
                ParseError::UnknownKind {
                    kind: "reinstall".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 install vim\x1b[31m:amd64 <none> 2:9.0",
                ParseError::BadPackage {
                    text: "vim\\x1b[31m:amd64".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 install vim:AMD64 <none> 2:9.0",
                ParseError::BadPackage {
                    text: "vim:AMD64".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 install -vim <none> 2:9.0",
                ParseError::BadPackage {
                    text: "-vim".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 install vim: <none> 2:9.0",
                ParseError::BadPackage {
                    text: "vim:".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 install  vim:amd64 <none> 2:9.0",
                ParseError::BadPackage {
                    text: String::new(),
                },
            ),
            (
                b"2023-05-01 10:00:00 status broken vim:amd64 2:9.0",
                ParseError::BadState {
                    text: "broken".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 startup everything unpack",
                ParseError::BadStartup {
                    field: "scope",
                    text: "everything".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 startup archives Unpack",
                ParseError::BadStartup {
                    field: "command",
                    text: "Unpack".to_owned(),
                },
            ),
            (
                b"2023-05-01 10:00:00 install vim:amd64 <none> 2:9.0\xff",
                ParseError::InvalidUtf8 { offset: 50 },
            ),
            (long.as_bytes(), ParseError::TooLong { len: long.len() }),
        ];

        for (line, expected) in cases {
            assert_eq!(
                parse_line(line).err(),
                Some(expected),
                "{}",
                line.escape_ascii()
            );
        }

        let bad_version = parse_line(b"2023-05-01 10:00:00 upgrade vim:amd64 2:9.0 2:9.0\r");
        assert!(
            matches!(
                bad_version,
                Err(ParseError::BadVersion {
                    field: "available",
                    ..
                })
            ),
            "{bad_version:?}"
        );
        let message = bad_version
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(!message.contains('\r'), "{message:?}");
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_read() {
        let head = "2023-05-01 10:00:00 conffile /";
        let tail = " keep";
        let path = "a".repeat(MAX_LINE_LEN - head.len() - tail.len());
        let line = format!("{head}{path}{tail}");
        assert_eq!(line.len(), MAX_LINE_LEN);
        assert!(parse_line(line.as_bytes()).is_ok());
    }

    /// Counts lines per action word and state with nothing but splitting on spaces, to check
    /// the parser against.
    fn naive_counts(bytes: &[u8]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in corpus::lines(bytes) {
            let text = String::from_utf8_lossy(line);
            let words: Vec<&str> = text.split(' ').collect();
            let key = match words.get(2) {
                Some(&"status") => format!("status {}", words.get(3).unwrap_or(&"")),
                Some(word) => (*word).to_owned(),
                None => continue,
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    fn parsed_counts(lines: &[LogLine]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in lines {
            let key = match &line.kind {
                LineKind::Action { action, .. } => action.as_str().to_owned(),
                LineKind::Status { state, .. } => format!("status {state}"),
                LineKind::Startup { .. } => "startup".to_owned(),
                LineKind::Conffile { .. } => "conffile".to_owned(),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn every_corpus_line_parses() {
        let Some(files) = corpus::files() else { return };
        let mut total = 0;

        for (name, bytes) in &files {
            let mut parsed = Vec::new();
            for (index, line) in corpus::lines(bytes).enumerate() {
                match parse_line(line) {
                    Ok(line) => parsed.push(line),
                    Err(err) => panic!("{name}:{}: {err}: {}", index + 1, line.escape_ascii()),
                }
            }
            total += parsed.len();
            assert_eq!(parsed_counts(&parsed), naive_counts(bytes), "{name}");
        }

        println!("parsed {total} corpus lines in {} files", files.len());
        assert!(total > 30_000, "only {total} corpus lines");
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9+.-]{0,30}"
    }

    fn arch() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[a-z0-9][a-z0-9-]{0,10}")
    }

    fn version() -> impl Strategy<Value = Option<String>> {
        prop::option::of(crate::parse::version::strategy::version_text())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line(&bytes);
        }

        #[test]
        fn arbitrary_tails_after_a_timestamp_never_panic(tail in "\\PC{0,80}") {
            let _ = parse_line(format!("2023-05-01 10:00:00 {tail}").as_bytes());
        }

        #[test]
        fn well_formed_action_lines_keep_their_fields(
            word in prop::sample::select(vec![
                "install", "upgrade", "remove", "purge", "configure", "trigproc", "disappear",
            ]),
            name in name(),
            arch in arch(),
            old in version(),
            new in version(),
        ) {
            let package = PackageRef { name, arch };
            let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "<none>".to_owned());
            let line =
                format!("2021-11-03 06:01:44 {word} {package} {} {}", field(&old), field(&new));
            let expected = LogLine {
                timestamp: time("2021-11-03 06:01:44"),
                kind: LineKind::Action {
                    action: word.parse().map_err(|()| TestCaseError::fail("action"))?,
                    package,
                    old_version: old,
                    new_version: new,
                },
            };
            prop_assert_eq!(parse_line(line.as_bytes()), Ok(expected));
        }
    }
}
