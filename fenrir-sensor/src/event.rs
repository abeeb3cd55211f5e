//! The security event Fenrir emits for every package change.
//!
//! In: a [`PackageChange`] from the parse stage plus the host's identity. Out: an [`Event`] whose
//! JSON form is Fenrir's public schema, shared by every sink. No state.
//!
//! Everything that came from a log line passes through [`escape_control`] before it is stored
//! in an event, so no control character from a log reaches a terminal, a JSON consumer or
//! journald raw.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use chrono::{DateTime, FixedOffset, Local, LocalResult, NaiveDateTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::attribute::script::PackageScripts;
use crate::parse::PackageChange;

/// What happened to a package. The serialized names are stable codes: a retired one is never
/// reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A package that was not installed (or only had its config files left) was installed.
    PackageInstall,
    /// A newer version replaced an installed one.
    PackageUpgrade,
    /// An older version replaced an installed one.
    PackageDowngrade,
    /// The installed version was installed again.
    PackageReinstall,
    /// A package was removed; its config files stay.
    PackageRemove,
    /// A package was removed together with its config files.
    PackagePurge,
    /// Every file of a package was taken over by others, so dpkg dropped it.
    PackageDisappear,
    /// An install or upgrade ended its dpkg run short of the installed state.
    PackageInstallFailed,
    /// What a package's maintainer scripts ran, reported when its dpkg run ends.
    PackageScripts,
    /// Files of an installed package are missing or differ from what was installed.
    PackageIntegrityMismatch,
    /// Only config files of a package differ from what was installed: usually admin work.
    PackageConffileChanged,
    /// dpkg.log (or Fenrir's own record) was shortened or rewritten without a rotation.
    LogTamper,
    /// dpkg's database changed without the change reaching the log.
    PackageChangeUnlogged,
}

impl Category {
    /// Returns the stable code, as serialized.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PackageInstall => "package_install",
            Self::PackageUpgrade => "package_upgrade",
            Self::PackageDowngrade => "package_downgrade",
            Self::PackageReinstall => "package_reinstall",
            Self::PackageRemove => "package_remove",
            Self::PackagePurge => "package_purge",
            Self::PackageDisappear => "package_disappear",
            Self::PackageInstallFailed => "package_install_failed",
            Self::PackageScripts => "package_scripts",
            Self::PackageIntegrityMismatch => "package_integrity_mismatch",
            Self::PackageConffileChanged => "package_conffile_changed",
            Self::LogTamper => "log_tamper",
            Self::PackageChangeUnlogged => "package_change_unlogged",
        }
    }

    /// Returns whether the category reports a disagreement between the log, the kernel and
    /// the package database rather than a change read from the log.
    #[must_use]
    pub fn is_integrity(self) -> bool {
        matches!(
            self,
            Self::PackageIntegrityMismatch
                | Self::PackageConffileChanged
                | Self::LogTamper
                | Self::PackageChangeUnlogged
        )
    }

    /// Returns whether the change puts a package's files from an archive on disk.
    #[must_use]
    pub fn unpacks(self) -> bool {
        matches!(
            self,
            Self::PackageInstall
                | Self::PackageUpgrade
                | Self::PackageDowngrade
                | Self::PackageReinstall
        )
    }

    /// Returns the severity an event of this category has before any rule looks at it.
    #[must_use]
    pub fn default_severity(self) -> Severity {
        match self {
            Self::PackageInstall | Self::PackageDowngrade | Self::PackageInstallFailed => {
                Severity::Medium
            }
            Self::PackageUpgrade | Self::PackageScripts | Self::PackageConffileChanged => {
                Severity::Info
            }
            Self::PackageIntegrityMismatch | Self::LogTamper | Self::PackageChangeUnlogged => {
                Severity::High
            }
            Self::PackageReinstall
            | Self::PackageRemove
            | Self::PackagePurge
            | Self::PackageDisappear => Severity::Low,
        }
    }

    /// Returns the verb used in event descriptions.
    fn verb(self) -> &'static str {
        match self {
            Self::PackageInstall => "installed",
            Self::PackageUpgrade => "upgraded",
            Self::PackageDowngrade => "downgraded",
            Self::PackageReinstall => "reinstalled",
            Self::PackageRemove => "removed",
            Self::PackagePurge => "purged",
            Self::PackageDisappear => "disappeared",
            Self::PackageInstallFailed => "install failed",
            Self::PackageScripts => "scripts ran",
            Self::PackageIntegrityMismatch => "files differ",
            Self::PackageConffileChanged => "config files changed",
            Self::LogTamper => "log tampered",
            Self::PackageChangeUnlogged => "changed without a log line",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgently an operator should look at an event, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Returns the syslog priority journald stores for this severity.
    #[must_use]
    pub fn syslog_priority(self) -> u8 {
        match self {
            Self::Info => 6,
            Self::Low => 5,
            Self::Medium => 4,
            Self::High => 3,
            Self::Critical => 2,
        }
    }

    /// Returns the name as serialized.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Critical => "CRITICAL",
        }
    }
}

/// The package-level facts of an event, as read from the log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedData {
    /// Always equal to the event's category.
    #[serde(rename = "type")]
    pub kind: Category,
    pub package: String,
    pub arch: Option<String>,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    /// The log's local time with the host's UTC offset at that moment.
    pub timestamp: String,
    /// For `package_install_failed`: the last dpkg state the package was seen in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_state: Option<String>,
}

/// The package (if any) and actor an integrity event is about, all text already escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegritySubject {
    /// Empty when the event concerns no package (a tampered log).
    pub package: String,
    pub arch: Option<String>,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
    pub actor: Option<serde_json::Value>,
}

/// One security event: the JSON object every sink receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What produced the event; always `package` for package changes.
    pub source: String,
    pub category: Category,
    pub severity: Severity,
    /// The remote address behind the change, when one is known.
    pub ip: Option<String>,
    pub description: String,
    /// The log line the event came from, control characters escaped.
    pub raw_line: String,
    pub parsed_data: ParsedData,
    pub host: String,
    /// The package manager whose log recorded the change.
    pub manager: String,
    /// Who made the change; null when it cannot be attributed.
    pub actor: Option<serde_json::Value>,
    /// The rules that fired on this event, in evaluation order.
    pub rules: Vec<serde_json::Value>,
    /// For `package_scripts`: `{commands: [{pid, uid, script, command}], omitted}`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scripts: Option<serde_json::Value>,
    /// Names the event the same way whenever its log line is read again (after a restart or
    /// a rotation), so a sink can tell a repeat from a new event; absent where no log line
    /// records the event.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// For the integrity categories: what the witnesses showed (files, log, database).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub evidence: Option<serde_json::Value>,
    /// How the change was seen: absent when read from the log as dpkg wrote it; `offline`
    /// when found by comparing dpkg's database with the state saved while the sensor last ran.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub observed: Option<String>,
}

impl Event {
    /// Builds the event for one package change seen in `manager`'s log on `host`.
    #[must_use]
    pub fn from_change(change: &PackageChange, host: &str, manager: &str) -> Self {
        let package = escape_control(&change.package).into_owned();
        let new_version = change
            .new_version
            .as_deref()
            .map(|v| escape_control(v).into_owned());
        let old_version = change
            .old_version
            .as_deref()
            .map(|v| escape_control(v).into_owned());
        let description = describe(
            change.category,
            &package,
            old_version.as_deref(),
            new_version.as_deref(),
            change.last_state.as_deref(),
        );

        Self {
            source: "package".to_owned(),
            category: change.category,
            severity: change.category.default_severity(),
            ip: None,
            description,
            raw_line: escape_control(&change.raw_line).into_owned(),
            parsed_data: ParsedData {
                kind: change.category,
                package,
                arch: change
                    .arch
                    .as_deref()
                    .map(|a| escape_control(a).into_owned()),
                old_version,
                new_version,
                timestamp: local_rfc3339(change.timestamp),
                last_state: change.last_state.clone(),
            },
            host: host.to_owned(),
            manager: manager.to_owned(),
            actor: None,
            rules: Vec::new(),
            scripts: None,
            id: None,
            evidence: None,
            observed: None,
        }
    }

    /// Builds the event reporting what one package's maintainer scripts ran in a dpkg run
    /// that ended at `ended`. No log line records this, so `raw_line` is empty.
    #[must_use]
    pub fn from_scripts(
        scripts: &PackageScripts,
        actor: serde_json::Value,
        ended: std::time::SystemTime,
        host: &str,
    ) -> Self {
        let package = scripts.package.as_deref().map(escape_control);
        let programs: Vec<&str> = scripts
            .commands
            .iter()
            .filter_map(|c| c["command"].as_str())
            .filter_map(|command| command.split(' ').next())
            .map(|program| program.rsplit('/').next().unwrap_or(program))
            .collect();
        let mut shown: Vec<&str> = Vec::new();
        for program in programs {
            if !shown.contains(&program) && shown.len() < 8 {
                shown.push(program);
            }
        }
        let subject = match &package {
            Some(package) => format!("Maintainer scripts of {package}"),
            None => "Maintainer scripts of a package being unpacked".to_owned(),
        };
        let category = Category::PackageScripts;

        Self {
            source: "package".to_owned(),
            category,
            severity: category.default_severity(),
            ip: None,
            description: format!("{subject} ran: {}", shown.join(", ")),
            raw_line: String::new(),
            parsed_data: ParsedData {
                kind: category,
                package: package
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default(),
                arch: scripts
                    .arch
                    .as_deref()
                    .map(|a| escape_control(a).into_owned()),
                old_version: None,
                new_version: None,
                timestamp: DateTime::<Local>::from(ended).to_rfc3339(),
                last_state: None,
            },
            host: host.to_owned(),
            manager: "dpkg".to_owned(),
            actor: Some(actor),
            rules: Vec::new(),
            scripts: Some(serde_json::json!({
                "commands": scripts.commands,
                "omitted": scripts.omitted,
            })),
            id: None,
            evidence: None,
            observed: None,
        }
    }

    /// Builds an event of an integrity category, seen now rather than read from a log line:
    /// `raw_line` is empty and `evidence` says what was seen. `description` and the package
    /// facts must already be escaped.
    #[must_use]
    pub fn from_evidence(
        category: Category,
        subject: &IntegritySubject,
        description: String,
        evidence: serde_json::Value,
        host: &str,
    ) -> Self {
        Self {
            source: "integrity".to_owned(),
            category,
            severity: category.default_severity(),
            ip: None,
            description,
            raw_line: String::new(),
            parsed_data: ParsedData {
                kind: category,
                package: subject.package.clone(),
                arch: subject.arch.clone(),
                old_version: subject.old_version.clone(),
                new_version: subject.new_version.clone(),
                timestamp: Local::now().to_rfc3339(),
                last_state: None,
            },
            host: host.to_owned(),
            manager: "dpkg".to_owned(),
            actor: subject.actor.clone(),
            rules: Vec::new(),
            scripts: None,
            evidence: Some(evidence),
            observed: None,
            id: None,
        }
    }

    /// Serializes the event as one JSON line without the trailing newline.
    ///
    /// # Panics
    /// Never: an event is a tree of strings, options and JSON values, which always serialize.
    #[must_use]
    pub fn to_json_line(&self) -> String {
        // Serializing a tree of strings, options and JSON values cannot fail.
        serde_json::to_string(self).expect("events serialize to JSON")
    }
}

/// Writes the human sentence an operator reads first.
fn describe(
    category: Category,
    package: &str,
    old_version: Option<&str>,
    new_version: Option<&str>,
    last_state: Option<&str>,
) -> String {
    let mut text = format!("Package {}: {package}", category.verb());
    match category {
        Category::PackageUpgrade | Category::PackageDowngrade => {
            let _ = write!(
                text,
                " {} -> {}",
                old_version.unwrap_or("<none>"),
                new_version.unwrap_or("<none>")
            );
        }
        Category::PackageInstall => {
            if let Some(new) = new_version {
                let _ = write!(text, " {new}");
            }
            if let Some(old) = old_version {
                let _ = write!(text, " (over config files of {old})");
            }
        }
        Category::PackageInstallFailed => {
            if let Some(new) = new_version {
                let _ = write!(text, " {new}");
            }
            if let Some(state) = last_state {
                let _ = write!(text, " (left {state})");
            }
        }
        Category::PackageReinstall
        | Category::PackageRemove
        | Category::PackagePurge
        | Category::PackageDisappear
        | Category::PackageScripts
        | Category::PackageIntegrityMismatch
        | Category::PackageConffileChanged
        | Category::LogTamper
        | Category::PackageChangeUnlogged => {
            if let Some(version) = old_version.or(new_version) {
                let _ = write!(text, " {version}");
            }
        }
    }
    text
}

/// Renders a log's local wall-clock time as RFC 3339 with the host's offset at that moment.
///
/// `TZ` is honoured. A time that falls in a daylight-saving overlap takes the earlier offset; a
/// time inside a spring-forward gap, which no clock showed, keeps the offset in force before it.
#[must_use]
pub fn local_rfc3339(naive: NaiveDateTime) -> String {
    let resolved: DateTime<FixedOffset> = match Local.from_local_datetime(&naive) {
        LocalResult::Single(time) | LocalResult::Ambiguous(time, _) => time.fixed_offset(),
        LocalResult::None => {
            let before = naive - chrono::Duration::hours(1);
            let offset = match Local.from_local_datetime(&before) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.fixed_offset(),
                LocalResult::None => return naive.and_utc().to_rfc3339(),
            };
            match offset.offset().from_local_datetime(&naive) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                LocalResult::None => return naive.and_utc().to_rfc3339(),
            }
        }
    };
    resolved.to_rfc3339()
}

/// Returns `text` with every control or bidirectional-formatting character written as an
/// escape (`\x1b`, `\u{202e}`), so log content cannot steer a terminal or hide text.
#[must_use]
pub fn escape_control(text: &str) -> Cow<'_, str> {
    // Nearly every log line is printable ASCII, which a byte scan settles without decoding.
    let is_printable_ascii = text.bytes().all(|b| matches!(b, b' '..=b'~'));
    if is_printable_ascii || !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            escaped.push(c);
        } else if u32::from(c) < 0x100 {
            let _ = write!(escaped, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(escaped, "\\u{{{:04x}}}", u32::from(c));
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        || c == '\u{feff}'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("vim\u{1b}[31m"), "vim\\x1b[31m");
        assert_eq!(escape_control("a\nb\rc\u{7f}"), "a\\x0ab\\x0dc\\x7f");
        assert_eq!(escape_control("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(escape_control("plain 2:9.0-1~bpo+1"), "plain 2:9.0-1~bpo+1");
    }

    #[test]
    fn severities_order_from_info_to_critical() {
        assert!(Severity::Info < Severity::Low);
        assert!(Severity::Medium < Severity::High);
        assert_eq!(Severity::High.syslog_priority(), 3);
        assert_eq!(
            serde_json::to_string(&Severity::Medium).ok().as_deref(),
            Some("\"MEDIUM\"")
        );
    }
}
