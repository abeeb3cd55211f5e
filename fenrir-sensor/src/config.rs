//! The sensor's settings: a TOML file, then command-line overrides.
//!
//! In: `/etc/fenrir/fenrir.toml` (optional) or the file named by `--config` (required to
//! exist). Out: a validated [`Config`]. Every knob has a default, so an empty file is a valid
//! configuration. Unknown keys and bad values are errors that name the file, the line and the
//! key, reported before anything starts.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::integrity::IntegrityConfig;
use crate::parse::manager::Manager;
use crate::rule::RulesConfig;
use crate::sink::format::EventFormat;
use crate::sink::hook::HooksConfig;
use crate::source::ssh::SshConfig;

/// Where the configuration is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fenrir/fenrir.toml";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The host name events carry; the kernel's host name when absent.
    pub host: Option<String>,
    /// Where checkpoints and other state live.
    pub state_dir: PathBuf,
    /// Read existing log content on a first start instead of starting at its end.
    pub from_start: bool,
    pub dpkg: DpkgConfig,
    pub managers: ManagersConfig,
    pub sinks: SinksConfig,
    pub ebpf: EbpfConfig,
    pub tail: TailConfig,
    pub delivery: DeliveryConfig,
    pub diagnostics: DiagnosticsConfig,
    pub ssh: SshConfig,
    pub rules: RulesConfig,
    pub hooks: HooksConfig,
    pub integrity: IntegrityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: None,
            state_dir: PathBuf::from("/var/lib/fenrir"),
            from_start: false,
            dpkg: DpkgConfig::default(),
            managers: ManagersConfig::default(),
            sinks: SinksConfig::default(),
            ebpf: EbpfConfig::default(),
            tail: TailConfig::default(),
            delivery: DeliveryConfig::default(),
            diagnostics: DiagnosticsConfig::default(),
            ssh: SshConfig::default(),
            rules: RulesConfig::default(),
            hooks: HooksConfig::default(),
            integrity: IntegrityConfig::default(),
        }
    }
}

/// Where dpkg keeps its log and database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpkgConfig {
    pub log: PathBuf,
    /// The admin directory whose lock tells when a dpkg run has ended.
    pub admin_dir: PathBuf,
    /// The root dpkg installs into; derived from `admin_dir` when absent.
    pub root: Option<PathBuf>,
}

impl Default for DpkgConfig {
    fn default() -> Self {
        Self {
            log: PathBuf::from("/var/log/dpkg.log"),
            admin_dir: PathBuf::from("/var/lib/dpkg"),
            root: None,
        }
    }
}

/// The package managers other than dpkg whose logs are followed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagersConfig {
    pub dnf: ManagerConfig,
    pub yum: ManagerConfig,
    pub zypper: ManagerConfig,
    pub pacman: ManagerConfig,
    pub apk: ApkConfig,
    pub rpm: RpmConfig,
}

/// rpm run by hand, seen through the rpm database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpmConfig {
    /// Follow the database; it is followed when it exists at start and the kernel tracer
    /// runs, which alone tells a change rpm made by hand from one of dnf, yum or zypper.
    pub enabled: bool,
    /// The root whose database is followed.
    pub root: PathBuf,
    /// The database inside the root, and where rpm keeps it when `--dbpath` is not given.
    pub dbpath: PathBuf,
}

impl Default for RpmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: PathBuf::from("/"),
            dbpath: PathBuf::from("/var/lib/rpm"),
        }
    }
}

/// One package manager's log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerConfig {
    /// Follow the log; a log that does not exist yet is waited for.
    pub enabled: bool,
    /// The log; the manager's own default when absent.
    pub log: Option<PathBuf>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            log: None,
        }
    }
}

/// apk's log, and its database for hosts where apk writes no log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApkConfig {
    pub enabled: bool,
    /// `/var/log/apk.log` when absent.
    pub log: Option<PathBuf>,
    /// Followed instead of the log when the log does not exist at start but this does;
    /// `/lib/apk/db/installed` when absent.
    pub database: Option<PathBuf>,
}

impl Default for ApkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            log: None,
            database: None,
        }
    }
}

impl ManagersConfig {
    /// Returns whether `manager`'s log is followed, and the log.
    #[must_use]
    pub fn log_of(&self, manager: Manager) -> Option<PathBuf> {
        let (enabled, log) = match manager {
            Manager::Dpkg | Manager::Rpm => return None,
            Manager::Dnf => (self.dnf.enabled, &self.dnf.log),
            Manager::Yum => (self.yum.enabled, &self.yum.log),
            Manager::Zypper => (self.zypper.enabled, &self.zypper.log),
            Manager::Pacman => (self.pacman.enabled, &self.pacman.log),
            Manager::Apk => (self.apk.enabled, &self.apk.log),
        };
        enabled.then(|| {
            log.clone()
                .unwrap_or_else(|| Path::new("/").join(manager.default_log()))
        })
    }

    /// Returns apk's database.
    #[must_use]
    pub fn apk_database(&self) -> PathBuf {
        self.apk
            .database
            .clone()
            .unwrap_or_else(|| PathBuf::from("/lib/apk/db/installed"))
    }

    fn validate(&self) -> Result<(), String> {
        let logs = [
            ("dnf.log", &self.dnf.log),
            ("yum.log", &self.yum.log),
            ("zypper.log", &self.zypper.log),
            ("pacman.log", &self.pacman.log),
            ("apk.log", &self.apk.log),
            ("apk.database", &self.apk.database),
        ];
        if !self.rpm.dbpath.is_absolute() || !self.rpm.root.is_absolute() {
            return Err("key `managers.rpm.root`/`dbpath`: must be absolute paths".into());
        }
        for (key, path) in logs {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("key `managers.{key}`: must not be empty"));
            }
        }
        Ok(())
    }
}

/// Where events go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    pub json: JsonSinkConfig,
    pub journald: JournaldSinkConfig,
    pub store: StoreSinkConfig,
}

/// JSON lines outputs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonSinkConfig {
    /// `-` for stdout, or file paths; empty disables JSON output.
    pub outputs: Vec<String>,
    /// Fenrir's own schema or Elastic Common Schema documents.
    pub format: EventFormat,
    /// The format of single outputs, by their entry in `outputs`, where it differs.
    pub output_formats: BTreeMap<String, EventFormat>,
}

impl Default for JsonSinkConfig {
    fn default() -> Self {
        Self {
            outputs: vec!["-".to_owned()],
            format: EventFormat::Fenrir,
            output_formats: BTreeMap::new(),
        }
    }
}

impl JsonSinkConfig {
    /// Returns the format `output` is written in.
    #[must_use]
    pub fn format_of(&self, output: &str) -> EventFormat {
        self.output_formats
            .get(output)
            .copied()
            .unwrap_or(self.format)
    }
}

/// The journald output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournaldSinkConfig {
    pub enabled: bool,
    /// The native-protocol socket.
    pub socket: PathBuf,
    /// The shape of each entry's `FENRIR_EVENT` field.
    pub format: EventFormat,
}

impl Default for JournaldSinkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from("/run/systemd/journal/socket"),
            format: EventFormat::Fenrir,
        }
    }
}

/// The event store in the state directory, which `query` and `mcp` read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSinkConfig {
    pub enabled: bool,
    /// A segment file is closed and summarized at this size.
    pub segment_bytes: u64,
    /// Retention: the oldest segments are deleted while all exceed this size.
    pub max_bytes: u64,
}

impl Default for StoreSinkConfig {
    fn default() -> Self {
        let options = crate::sink::store::StoreOptions::default();
        Self {
            enabled: true,
            segment_bytes: options.segment_bytes,
            max_bytes: options.max_bytes,
        }
    }
}

/// The kernel exec tracer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    pub enabled: bool,
    /// Highest level of the kernel program's own diagnostics passed on to the sensor's.
    pub log_level: LogLevel,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            log_level: LogLevel::Warn,
        }
    }
}

/// How the log is followed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Longer lines are dropped and counted.
    pub max_line_bytes: usize,
    /// A safety-net re-read of the log even without a file-system notification.
    pub poll_interval_ms: u64,
    /// How long a rotated-away log is still drained after it last grew.
    pub rotated_grace_secs: u64,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            max_line_bytes: 64 * 1024,
            poll_interval_ms: 1000,
            rotated_grace_secs: 60,
        }
    }
}

impl TailConfig {
    /// Returns the polling interval.
    #[must_use]
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// How failing sinks are retried.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Events kept per failing sink.
    pub backlog: usize,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            backlog: 10_000,
            retry_initial_ms: 200,
            retry_max_ms: 30_000,
        }
    }
}

/// The sensor's own diagnostics (not its alerts).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsConfig {
    pub level: LogLevel,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
        }
    }
}

/// A diagnostics level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Returns the matching `tracing` level.
    #[must_use]
    pub fn to_tracing(self) -> tracing::Level {
        match self {
            Self::Error => tracing::Level::ERROR,
            Self::Warn => tracing::Level::WARN,
            Self::Info => tracing::Level::INFO,
            Self::Debug => tracing::Level::DEBUG,
            Self::Trace => tracing::Level::TRACE,
        }
    }

    /// Returns the level as `tracing` spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The message names the line, column and key, as rendered by the TOML parser.
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Loads the configuration from `path`, or from the default path when `None`, and adds
    /// the addresses of the `IP_WHITELIST` environment variable to `rules.ip_whitelist`.
    ///
    /// A file named explicitly must exist; the default one may be absent.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = Self::load_file(path)?;
        let from_env =
            crate::rule::net::ip_whitelist_from_env().map_err(|message| ConfigError::Invalid {
                path: path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH)).to_owned(),
                message,
            })?;
        config.rules.ip_whitelist.extend(from_env);
        Ok(config)
    }

    fn load_file(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if !required && err.kind() == io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    /// Parses and validates configuration text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let config: Self =
            toml::from_str(text).map_err(|err| invalid(render_toml_error(&err, text)))?;
        config
            .validate()
            .map_err(|message| invalid(with_line(&message, text)))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self
            .host
            .as_deref()
            .is_some_and(|h| h.trim().is_empty() || h.chars().any(char::is_control))
        {
            return Err("key `host`: must be a non-empty name without control characters".into());
        }
        if self.tail.max_line_bytes < 256 {
            return Err("key `tail.max_line_bytes`: must be at least 256".into());
        }
        if self.tail.poll_interval_ms == 0 {
            return Err("key `tail.poll_interval_ms`: must be greater than 0".into());
        }
        if self.delivery.backlog == 0 {
            return Err("key `delivery.backlog`: must be greater than 0".into());
        }
        if self.delivery.retry_initial_ms > self.delivery.retry_max_ms {
            return Err("key `delivery.retry_initial_ms`: must not exceed retry_max_ms".into());
        }
        self.managers.validate()?;
        let store = &self.sinks.store;
        if store.segment_bytes < 64 * 1024 {
            return Err("key `sinks.store.segment_bytes`: must be at least 65536".into());
        }
        if store.max_bytes < store.segment_bytes.saturating_mul(2) {
            return Err("key `sinks.store.max_bytes`: must be at least twice segment_bytes".into());
        }
        self.integrity.validate()?;
        for output in &self.sinks.json.outputs {
            if output.is_empty() {
                return Err("key `sinks.json.outputs`: an output is empty".into());
            }
        }
        for output in self.sinks.json.output_formats.keys() {
            if !self.sinks.json.outputs.contains(output) {
                return Err(format!(
                    "key `sinks.json.output_formats`: {output:?} is not one of the outputs"
                ));
            }
        }
        if self.ssh.poll_interval_ms == 0 {
            return Err("key `ssh.poll_interval_ms`: must be greater than 0".into());
        }
        if self.ssh.learning_days == 0 || self.ssh.history_max_entries == 0 {
            return Err("key `ssh.learning_days`: learning needs days and room".into());
        }
        if self.ssh.log_delay_ms > self.ssh.attribution_wait_ms {
            return Err("key `ssh.log_delay_ms`: must not exceed attribution_wait_ms".into());
        }
        self.rules.validate()?;
        self.hooks.validate()
    }
}

/// Renders a TOML error as one line: `line L, column C: what is wrong`.
fn render_toml_error(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim().to_owned();
    let Some(span) = err.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let key = text.get(span.clone()).unwrap_or_default().trim();
    let located = match enclosing_key(text, span.start) {
        Some(name) => format!("line {line}, column {column}, key `{name}`"),
        None => format!("line {line}, column {column}"),
    };
    if key.is_empty() || key.contains('\n') {
        format!("{located}: {message}")
    } else {
        format!("{located}, at `{key}`: {message}")
    }
}

/// Prefixes a validation message `key `a.b`: …` with the line where that key is set.
fn with_line(message: &str, text: &str) -> String {
    let Some(dotted) = message
        .strip_prefix("key `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key)
    else {
        return message.to_owned();
    };
    let (table, name) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .clone_into(&mut current);
            continue;
        }
        let Some((key, _)) = trimmed.split_once('=') else {
            continue;
        };
        if key.trim() == name && (current == table || table.is_empty() && current.is_empty()) {
            return format!("line {}, {message}", index + 1);
        }
    }
    message.to_owned()
}

/// Names the key whose value contains byte `at`: the nearest `name =` at or above it,
/// prefixed with the table header above that (`rules.ip_whitelist`).
fn enclosing_key(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at.min(text.len()))?;
    let mut key = None;
    for line in before.lines().rev() {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            let table = header.trim_start_matches('[').split(']').next()?.trim();
            return Some(match key {
                Some(key) => format!("{table}.{key}"),
                None => table.to_owned(),
            });
        }
        if key.is_none() {
            if let Some((name, _)) = trimmed.split_once('=') {
                let name = name.trim();
                if !name.is_empty() && !name.starts_with('#') && !name.contains(['"', ' ']) {
                    key = Some(name.to_owned());
                }
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/fenrir/fenrir.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_the_default_configuration() {
        assert_eq!(parse(""), Ok(Config::default()));
    }

    #[test]
    fn every_section_parses() {
        let config = parse(
            r#"
host = "web-1"
state_dir = "/tmp/fenrir"
from_start = true
[dpkg]
log = "/srv/dpkg.log"
admin_dir = "/srv/admin"
[managers.dnf]
log = "/srv/root/var/log/dnf.rpm.log"
[managers.zypper]
enabled = false
[managers.apk]
database = "/srv/root/lib/apk/db/installed"
[sinks.json]
outputs = ["-", "/var/lib/fenrir/events.jsonl"]
format = "ecs"
[sinks.journald]
enabled = false
format = "ecs"
[sinks.store]
segment_bytes = 1048576
max_bytes = 10485760
[ebpf]
enabled = false
[tail]
poll_interval_ms = 250
[diagnostics]
level = "debug"
"#,
        )
        .expect("valid config");
        assert_eq!(config.host.as_deref(), Some("web-1"));
        assert_eq!(config.sinks.json.outputs.len(), 2);
        assert_eq!(config.sinks.json.format, EventFormat::Ecs);
        assert!(!config.sinks.journald.enabled);
        assert_eq!(config.sinks.journald.format, EventFormat::Ecs);
        assert_eq!(config.sinks.store.max_bytes, 10_485_760);
        assert_eq!(config.diagnostics.level, LogLevel::Debug);
        let managers = &config.managers;
        assert_eq!(
            managers.log_of(Manager::Dnf),
            Some(PathBuf::from("/srv/root/var/log/dnf.rpm.log"))
        );
        assert_eq!(managers.log_of(Manager::Zypper), None);
        assert_eq!(
            managers.log_of(Manager::Pacman),
            Some(PathBuf::from("/var/log/pacman.log"))
        );
        assert_eq!(
            managers.apk_database(),
            PathBuf::from("/srv/root/lib/apk/db/installed")
        );
    }

    #[test]
    fn a_single_output_can_take_its_own_format() {
        let config = parse(
            r#"
[sinks.json]
outputs = ["-", "/var/lib/fenrir/events.jsonl", "/var/lib/fenrir/ecs.jsonl"]
[sinks.json.output_formats]
"/var/lib/fenrir/ecs.jsonl" = "ecs"
"#,
        )
        .expect("valid config");
        let json = &config.sinks.json;
        assert_eq!(json.format_of("-"), EventFormat::Fenrir);
        assert_eq!(
            json.format_of("/var/lib/fenrir/events.jsonl"),
            EventFormat::Fenrir
        );
        assert_eq!(
            json.format_of("/var/lib/fenrir/ecs.jsonl"),
            EventFormat::Ecs
        );

        let err = parse(
            "[sinks.json]\noutputs = [\"-\"]\n[sinks.json.output_formats]\n\"/tmp/x\" = \"ecs\"\n",
        )
        .expect_err("a format for no output");
        assert!(err.contains("sinks.json.output_formats"), "{err}");
    }
    #[test]
    fn bad_manager_keys_name_line_and_key() {
        let err = parse("[managers.dnf]\nlogfile = \"/x\"\n").expect_err("unknown key");
        assert!(err.contains("line 2") && err.contains("logfile"), "{err}");
        let err = parse("[managers.portage]\nenabled = true\n").expect_err("unknown manager");
        assert!(err.contains("line 1") && err.contains("portage"), "{err}");
        let err = parse("[managers.pacman]\nenabled = \"yes\"\n").expect_err("bad value");
        assert!(err.contains("line 2"), "{err}");
        let err = parse("[managers.apk]\ndatabase = \"\"\n").expect_err("empty");
        assert!(err.contains("managers.apk.database"), "{err}");
        let err = parse("[managers.rpm]\nroot = \"srv\"\n").expect_err("relative");
        assert!(err.contains("managers.rpm.root"), "{err}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("host = \"a\"\n[dpkg]\nlogg = \"/x\"\n").expect_err("unknown key");
        assert!(err.contains("/etc/fenrir/fenrir.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("logg"), "{err}");
    }

    #[test]
    fn bad_value_names_line_and_key() {
        let err = parse("[diagnostics]\nlevel = \"loud\"\n").expect_err("bad level");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("loud"), "{err}");

        let err = parse("[tail]\npoll_interval_ms = -5\n").expect_err("negative");
        assert!(err.contains("line 2"), "{err}");

        let err = parse("[tail]\npoll_interval_ms = 0\n").expect_err("zero");
        assert!(err.contains("tail.poll_interval_ms"), "{err}");

        let err = parse("[sinks.store]\nmax_bytes = 1000\n").expect_err("retention too small");
        assert!(err.contains("sinks.store.max_bytes"), "{err}");
    }

    #[test]
    fn unknown_format_names_line_and_key() {
        let err = parse("[sinks.json]\nformat = \"xml\"\n").expect_err("bad format");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("xml"), "{err}");
    }

    #[test]
    fn shipped_default_config_is_valid() {
        let text = include_str!("../dist/fenrir.toml");
        let config = parse(text).expect("the packaged configuration parses");
        assert_eq!(config.sinks.json.outputs, ["/var/lib/fenrir/events.jsonl"]);
        assert_eq!(config.state_dir, Config::default().state_dir);
    }

    #[test]
    fn broken_syntax_is_an_error() {
        let err = parse("[dpkg\nlog = 1").expect_err("syntax");
        assert!(err.contains("line 1"), "{err}");
    }
}
