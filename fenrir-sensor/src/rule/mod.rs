//! The rule stage: an attributed event in, its final severity and the rules that set it out.
//!
//! In: an [`Event`] with its actor (and `actor.ssh` when it came from an SSH session), the
//! recent SSH logins, and the rules of the configuration. Out: the event's `severity` and
//! `rules` — one entry per rule that fired, with its reason and the severity before and
//! after — or the verdict that the event is suppressed. No state beyond the configuration.
//!
//! Rules run in one fixed order, so the same event and configuration always give the same
//! result:
//!
//! 1. `severity:<category>` — the category's severity, when the configuration overrides it;
//! 2. `watchlist:<name>` — the package matches a watchlist glob: raised;
//! 3. `lineage:<reason>` — the package manager ran from a daemon account or process, from a
//!    scheduler, without tty and login session, or installed a local `.deb`: raised;
//! 4. `ssh-unusual-session` — the change's own SSH session came from an unusual address;
//! 5. `ssh-unusual-login` — another successful login from an unusual address happened within
//!    the correlation window before the change;
//! 6. `maintenance:<name>` — inside a maintenance window: lowered or suppressed;
//! 7. `whitelist-user`, `whitelist-ip` — a whitelisted login user or client address: lowered;
//! 8. `host-role:<role>` — the host's role sets the severity of every change.
//!
//! Raising takes the higher of the current and the rule's severity, lowering the lower.
//! Steps 6–8 spare an event a watchlist rule fired on, unless
//! `watchlist_overrides_lowering = false`. `package_scripts` events and the integrity
//! categories only get step 1.

pub mod net;
pub mod window;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::attribute::ssh::SshCorrelator;
use crate::event::{Category, Event, Severity};
use net::IpList;
use window::{LocalTime, OneOffWindow, WeeklyWindow, Zone};

/// A shell-style glob (`xmrig*`, `php-fpm[0-9]*`), matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(glob::Pattern);

impl Glob {
    /// Parses a glob.
    ///
    /// # Errors
    /// Says where the pattern is broken.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty glob matches nothing".to_owned());
        }
        glob::Pattern::new(text)
            .map(Self)
            .map_err(|err| format!("`{text}` is not a valid glob: {}", err.msg))
    }

    /// Returns whether `name` matches.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        let options = glob::MatchOptions {
            case_sensitive: false,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        self.0.matches_with(name, options)
    }

    /// Returns the pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn globs(patterns: &[&str]) -> Vec<Glob> {
    patterns
        .iter()
        .filter_map(|p| Glob::parse(p).ok())
        .collect()
}

/// Attacker tooling a defender does not expect on a server: privilege-escalation kits,
/// reverse shells and relays, miners, scanners, crackers and tunnels.
pub const DEFAULT_WATCHLIST: &[&str] = &[
    "linux-exploit-suggester*",
    "les",
    "linpeas*",
    "pwncat*",
    "ncat",
    "socat",
    "netcat-traditional",
    "xmrig*",
    "cpuminer*",
    "minerd",
    "ethminer",
    "*cryptominer*",
    "*coinminer*",
    "nmap",
    "masscan",
    "zmap",
    "hydra*",
    "medusa",
    "ncrack",
    "john",
    "hashcat*",
    "chisel",
    "proxychains*",
    "sshpass",
    "tor",
    "torsocks",
    "iodine",
    "dns2tcp",
    "ptunnel*",
    "sqlmap",
    "nikto",
    "metasploit-framework",
    "exploitdb",
    "python3-impacket",
    "crackmapexec",
    "weevely",
    "dsniff",
    "ettercap*",
];

/// Accounts that serve the network and have no business running a package manager.
pub const DEFAULT_DAEMON_ACCOUNTS: &[&str] = &[
    "www-data",
    "nginx",
    "apache",
    "apache2",
    "httpd",
    "php-fpm",
    "postgres",
    "mysql",
    "mariadb",
    "redis",
    "tomcat",
    "tomcat9",
    "tomcat10",
    "jetty",
    "nobody",
    "daemon",
    "bind",
    "named",
    "squid",
    "proxy",
    "memcache",
    "mongodb",
    "elasticsearch",
    "rabbitmq",
    "zabbix",
    "nagios",
];

/// Server processes a package manager should never descend from.
pub const DEFAULT_DAEMON_PROCESSES: &[&str] = &[
    "nginx*",
    "apache2",
    "httpd",
    "lighttpd",
    "php-fpm*",
    "php*",
    "postgres",
    "mysqld",
    "mariadbd",
    "redis-server",
    "memcached",
    "uwsgi",
    "gunicorn*",
    "node",
    "tomcat*",
    "named",
    "squid",
    "vsftpd",
    "proftpd",
    "exim4",
    "postfix*",
    "dovecot",
];

/// Schedulers whose jobs should not install software unattended.
pub const DEFAULT_SCHEDULERS: &[&str] = &["cron", "crond", "anacron", "atd"];

/// A named list of package globs that raises an event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchlistRule {
    pub name: String,
    pub packages: Vec<Glob>,
    #[serde(default = "high")]
    pub severity: Severity,
}

fn high() -> Severity {
    Severity::High
}

/// Correlation of changes with SSH logins from unusual addresses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    pub enabled: bool,
    /// How long after a login from an unusual address changes are raised.
    pub window_secs: u64,
    /// Severity of a change within the window of such a login.
    pub login_severity: Severity,
    /// Severity of a change made in a session from an unusual address.
    pub session_severity: Severity,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 600,
            login_severity: Severity::High,
            session_severity: Severity::High,
        }
    }
}

/// Suspicious ancestry of a package-manager run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineageConfig {
    pub enabled: bool,
    pub accounts: Vec<String>,
    pub processes: Vec<Glob>,
    pub schedulers: Vec<Glob>,
    /// Run by or below a daemon account or process.
    pub daemon_severity: Severity,
    /// Run below a scheduler.
    pub scheduler_severity: Severity,
    /// Run without a tty and without a login session.
    pub unattended_severity: Severity,
    /// `dpkg -i` of a local file, or apt given a `.deb` path.
    pub local_package_severity: Severity,
}

impl Default for LineageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            accounts: DEFAULT_DAEMON_ACCOUNTS
                .iter()
                .map(|&a| a.to_owned())
                .collect(),
            processes: globs(DEFAULT_DAEMON_PROCESSES),
            schedulers: globs(DEFAULT_SCHEDULERS),
            daemon_severity: Severity::High,
            scheduler_severity: Severity::Medium,
            unattended_severity: Severity::Medium,
            local_package_severity: Severity::Medium,
        }
    }
}

/// What a maintenance window does to the changes inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowAction {
    /// Lower to the window's severity.
    Lower,
    /// Emit nothing (counted in the diagnostics).
    Suppress,
}

/// A maintenance window as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawWindow")]
pub struct MaintenanceWindow {
    pub name: String,
    pub zone: Zone,
    pub weekly: Vec<WeeklyWindow>,
    pub once: Option<OneOffWindow>,
    pub action: WindowAction,
    pub severity: Severity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    name: String,
    timezone: Zone,
    #[serde(default)]
    weekly: Vec<WeeklyWindow>,
    from: Option<LocalTime>,
    until: Option<LocalTime>,
    #[serde(default = "lower")]
    action: WindowAction,
    #[serde(default = "low")]
    severity: Severity,
}

fn lower() -> WindowAction {
    WindowAction::Lower
}

fn low() -> Severity {
    Severity::Low
}

impl TryFrom<RawWindow> for MaintenanceWindow {
    type Error = String;

    fn try_from(raw: RawWindow) -> Result<Self, String> {
        let once = match (raw.from, raw.until) {
            (Some(from), Some(until)) => Some(
                OneOffWindow::new(from.0, until.0, raw.timezone.0)
                    .map_err(|err| format!("window `{}`: {err}", raw.name))?,
            ),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "window `{}`: `from` and `until` go together",
                    raw.name
                ))
            }
        };
        if raw.weekly.is_empty() && once.is_none() {
            return Err(format!(
                "window `{}` needs `weekly` times or `from` and `until`",
                raw.name
            ));
        }
        Ok(Self {
            name: raw.name,
            zone: raw.timezone,
            weekly: raw.weekly,
            once,
            action: raw.action,
            severity: raw.severity,
        })
    }
}

impl MaintenanceWindow {
    /// Returns whether `at` is inside one of the window's ranges.
    #[must_use]
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.once.is_some_and(|once| once.contains(at))
            || self.weekly.iter().any(|w| w.contains(at, self.zone.0))
    }
}

/// The `[rules]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Per-category severity overrides (`package_install = "INFO"`).
    pub severity: HashMap<Category, Severity>,
    /// Addresses and networks never unusual, and lowered by `whitelist-ip`.
    pub ip_whitelist: IpList,
    /// Login users whose changes are lowered by `whitelist-user`.
    pub user_whitelist: Vec<String>,
    /// Severity whitelisted changes are lowered to.
    pub whitelist_severity: Severity,
    /// This host's role, a key of `roles`.
    pub host_role: Option<String>,
    /// Severity every change gets on a host of each role.
    pub roles: HashMap<String, Severity>,
    /// Whether the built-in `attacker-tooling` watchlist is used.
    pub default_watchlist: bool,
    /// Watchlists beyond the built-in one.
    pub watchlist: Vec<WatchlistRule>,
    /// Whether windows, whitelists and roles spare events a watchlist rule fired on.
    pub watchlist_overrides_lowering: bool,
    pub correlation: CorrelationConfig,
    pub lineage: LineageConfig,
    pub maintenance: Vec<MaintenanceWindow>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            severity: HashMap::new(),
            ip_whitelist: IpList::default(),
            user_whitelist: Vec::new(),
            whitelist_severity: Severity::Info,
            host_role: None,
            roles: HashMap::from([("ci".to_owned(), Severity::Info)]),
            default_watchlist: true,
            watchlist: Vec::new(),
            watchlist_overrides_lowering: true,
            correlation: CorrelationConfig::default(),
            lineage: LineageConfig::default(),
            maintenance: Vec::new(),
        }
    }
}

impl RulesConfig {
    /// Checks what serde cannot: names that must be unique or exist.
    ///
    /// # Errors
    /// Returns a message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(role) = &self.host_role {
            if !self.roles.contains_key(role) {
                return Err(format!(
                    "key `rules.host_role`: role `{role}` is not defined in `rules.roles`"
                ));
            }
        }
        let mut names: Vec<&str> = self.watchlist.iter().map(|w| w.name.as_str()).collect();
        names.extend(self.maintenance.iter().map(|w| w.name.as_str()));
        for (i, name) in names.iter().enumerate() {
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return Err("key `name`: rule names must be non-empty and printable".into());
            }
            if names[..i].contains(name) {
                return Err(format!("key `name`: the name `{name}` is used twice"));
            }
        }
        if self.correlation.window_secs == 0 {
            return Err("key `rules.correlation.window_secs`: must be greater than 0".into());
        }
        Ok(())
    }
}

/// What the rules decided beyond the severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Emit,
    /// A maintenance window suppresses the event: it goes to no sink.
    Suppress,
}

/// Applies the configured rules to events.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    config: RulesConfig,
    watchlists: Vec<WatchlistRule>,
}

impl RuleEngine {
    /// Compiles the rules of `config`.
    #[must_use]
    pub fn new(config: &RulesConfig) -> Self {
        let mut watchlists = Vec::new();
        if config.default_watchlist {
            watchlists.push(WatchlistRule {
                name: "attacker-tooling".to_owned(),
                packages: globs(DEFAULT_WATCHLIST),
                severity: Severity::High,
            });
        }
        watchlists.extend(config.watchlist.iter().cloned());
        Self {
            config: config.clone(),
            watchlists,
        }
    }

    /// Returns how long logins must be remembered for correlation.
    #[must_use]
    pub fn correlation_window(&self) -> Duration {
        Duration::from_secs(self.config.correlation.window_secs)
    }

    /// Sets `event.severity` and `event.rules`; returns whether the event is emitted.
    pub fn evaluate(&self, event: &mut Event, ssh: Option<&SshCorrelator>) -> Verdict {
        let mut steps = Steps {
            event,
            fired: Vec::new(),
        };

        let category = steps.event.category;
        if let Some(&severity) = self.config.severity.get(&category) {
            steps.set(
                &format!("severity:{category}"),
                format!("configured severity of {category}"),
                severity,
            );
        }
        // Evidence of tampering is never lowered by windows, whitelists or roles.
        if category == Category::PackageScripts || category.is_integrity() {
            return steps.finish(Verdict::Emit);
        }

        let package = steps.event.parsed_data.package.clone();
        let mut watchlisted = false;
        if category.unpacks() || category == Category::PackageInstallFailed {
            for rule in &self.watchlists {
                if let Some(glob) = rule.packages.iter().find(|g| g.matches(&package)) {
                    watchlisted = true;
                    steps.raise(
                        &format!("watchlist:{}", rule.name),
                        format!("package {package} matches `{}`", glob.as_str()),
                        rule.severity,
                    );
                }
            }
        }

        if self.config.lineage.enabled {
            for (reason, text, severity) in self.lineage(steps.event.actor.as_ref()) {
                steps.raise(&format!("lineage:{reason}"), text, severity);
            }
        }

        let at = event_time(steps.event);
        if self.config.correlation.enabled {
            self.correlate(&mut steps, ssh, at);
        }

        let spared = watchlisted && self.config.watchlist_overrides_lowering;
        if !spared {
            for window in &self.config.maintenance {
                if !window.contains(at) {
                    continue;
                }
                match window.action {
                    WindowAction::Lower => steps.lower(
                        &format!("maintenance:{}", window.name),
                        format!("inside maintenance window {}", window.name),
                        window.severity,
                    ),
                    WindowAction::Suppress => {
                        let from = steps.event.severity;
                        steps.fired.push(json!({
                            "rule": format!("maintenance:{}", window.name),
                            "reason": format!("inside maintenance window {}; suppressed", window.name),
                            "from": from,
                            "to": from,
                            "suppressed": true,
                        }));
                        return steps.finish(Verdict::Suppress);
                    }
                }
            }
            self.whitelist(&mut steps);
            if let Some(role) = &self.config.host_role {
                if let Some(&severity) = self.config.roles.get(role) {
                    steps.set(
                        &format!("host-role:{role}"),
                        format!("this host's role is {role}"),
                        severity,
                    );
                }
            }
        }
        steps.finish(Verdict::Emit)
    }

    fn correlate(&self, steps: &mut Steps<'_>, ssh: Option<&SshCorrelator>, at: DateTime<Utc>) {
        let session = steps
            .event
            .actor
            .as_ref()
            .map_or(Value::Null, |a| a["ssh"].clone());
        let own_pid = session["sshd_pid"].as_u64();
        if session["unusual_ip"] == true {
            steps.raise(
                "ssh-unusual-session",
                format!(
                    "made in an SSH session of {} from {}, an address not seen for that user",
                    session["user"].as_str().unwrap_or("?"),
                    session["client_ip"].as_str().unwrap_or("?"),
                ),
                self.config.correlation.session_severity,
            );
        }
        let Some(ssh) = ssh else { return };
        // TODO: only logins already read count here; a login of another session that reaches
        // the sensor after the change (within the reader's latency) does not raise it.
        let window = self.correlation_window();
        let nearby = ssh
            .unusual_logins_before(at.fixed_offset(), window)
            .into_iter()
            .find(|login| Some(u64::from(login.login.sshd_pid)) != own_pid);
        if let Some(login) = nearby {
            steps.raise(
                "ssh-unusual-login",
                format!(
                    "{}s after {} logged in over SSH from {}, an address not seen for that user",
                    (at - login.login.time.with_timezone(&Utc))
                        .num_seconds()
                        .max(0),
                    crate::event::escape_control(&login.login.user),
                    login.login.client_ip,
                ),
                self.config.correlation.login_severity,
            );
        }
    }

    fn whitelist(&self, steps: &mut Steps<'_>) {
        let actor = steps.event.actor.clone().unwrap_or(Value::Null);
        let user = actor["login_user"]
            .as_str()
            .or_else(|| actor["user"].as_str())
            .map(str::to_owned);
        if let Some(user) = user {
            if self.config.user_whitelist.contains(&user) {
                steps.lower(
                    "whitelist-user",
                    format!("made by whitelisted user {user}"),
                    self.config.whitelist_severity,
                );
            }
        }
        let ip = steps.event.ip.as_deref().and_then(|ip| ip.parse().ok());
        if let Some(ip) = ip {
            if self.config.ip_whitelist.contains(ip) {
                steps.lower(
                    "whitelist-ip",
                    format!("made from whitelisted address {ip}"),
                    self.config.whitelist_severity,
                );
            }
        }
    }

    /// Finds what is suspicious about the chain of processes above the package manager.
    fn lineage(&self, actor: Option<&Value>) -> Vec<(&'static str, String, Severity)> {
        let lineage = &self.config.lineage;
        let mut found = Vec::new();
        let Some(actor) = actor else {
            return found;
        };
        let chain: Vec<&Value> = actor["ancestry"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();

        let mut users: Vec<&str> = vec![actor["user"].as_str().unwrap_or_default()];
        users.extend(chain.iter().filter_map(|a| a["user"].as_str()));
        if let Some(user) = users
            .iter()
            .find(|u| lineage.accounts.iter().any(|a| a == *u))
        {
            found.push((
                "daemon-account",
                format!("run by or below the service account {user}"),
                lineage.daemon_severity,
            ));
        }
        let comms: Vec<&str> = chain.iter().filter_map(|a| a["comm"].as_str()).collect();
        if let Some(comm) = comms
            .iter()
            .find(|c| lineage.processes.iter().any(|g| g.matches(c)))
        {
            found.push((
                "daemon-process",
                format!("run below the server process {comm}"),
                lineage.daemon_severity,
            ));
        }
        if let Some(comm) = comms
            .iter()
            .find(|c| lineage.schedulers.iter().any(|g| g.matches(c)))
        {
            found.push((
                "scheduler",
                format!("run from the scheduler {comm}"),
                lineage.scheduler_severity,
            ));
        }
        if actor["tty"].is_null() && actor["loginuid"].is_null() {
            found.push((
                "unattended",
                "run without a terminal and outside any login session".to_owned(),
                lineage.unattended_severity,
            ));
        }
        let command = actor["command"].as_str().unwrap_or_default();
        if let Some(file) = local_package(command) {
            found.push((
                "local-package",
                format!("installs the local file {file} instead of a repository package"),
                lineage.local_package_severity,
            ));
        }
        found
    }
}

/// Returns the local `.deb` a command line installs, if it does: `dpkg -i FILE` (not apt's
/// own `dpkg --unpack` of its cache) or `apt install ./FILE.deb`.
fn local_package(command: &str) -> Option<String> {
    let mut words = command.split(' ');
    let program = words.next()?;
    let program = Path::new(program.trim_matches('\''))
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let args: Vec<&str> = words.collect();
    let deb = args.iter().map(|a| a.trim_matches('\'')).find(|a| {
        Path::new(a)
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("deb"))
            && !a.starts_with('-')
    })?;
    let is_install = match program.as_str() {
        "dpkg" => args.iter().any(|a| {
            matches!(*a, "-i" | "--install" | "--unpack")
                || (a.starts_with('-') && !a.starts_with("--") && a.contains('i'))
        }),
        "apt" | "apt-get" => true,
        _ => false,
    };
    if !is_install || deb.starts_with("/var/cache/apt/archives/") {
        return None;
    }
    Some(crate::event::escape_control(deb).into_owned())
}

/// Returns when the change happened: its log time, or now when that cannot be read.
fn event_time(event: &Event) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&event.parsed_data.timestamp)
        .map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc))
}

/// The rules fired so far on one event.
struct Steps<'a> {
    event: &'a mut Event,
    fired: Vec<Value>,
}

impl Steps<'_> {
    fn record(&mut self, rule: &str, reason: String, to: Severity) {
        let from = self.event.severity;
        let mut step = json!({
            "rule": rule,
            "from": from,
            "to": to,
        });
        step["reason"] = Value::String(reason);
        self.fired.push(step);
        self.event.severity = to;
    }

    fn set(&mut self, rule: &str, reason: String, severity: Severity) {
        self.record(rule, reason, severity);
    }

    fn raise(&mut self, rule: &str, reason: String, severity: Severity) {
        let to = self.event.severity.max(severity);
        self.record(rule, reason, to);
    }

    fn lower(&mut self, rule: &str, reason: String, severity: Severity) {
        let to = self.event.severity.min(severity);
        self.record(rule, reason, to);
    }

    fn finish(self, verdict: Verdict) -> Verdict {
        self.event.rules = self.fired;
        verdict
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use chrono::NaiveDateTime;
    use serde_json::json;

    use super::*;
    use crate::attribute::history::LoginHistory;
    use crate::parse::PackageChange;
    use crate::source::ssh::{AuthMethod, SshEvent, SshLogin};

    fn event(category: Category, package: &str, at: &str) -> Event {
        let change = PackageChange {
            category,
            package: package.into(),
            arch: Some("amd64".into()),
            old_version: None,
            new_version: Some("1".into()),
            timestamp: NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S").expect("valid"),
            raw_line: String::new(),
            last_state: None,
        };
        let mut event = Event::from_change(&change, "h", "dpkg");
        // Rules read the resolved time; pin it to UTC whatever the test host's zone.
        event.parsed_data.timestamp = format!("{}+00:00", at.replace(' ', "T"));
        event.actor = Some(json!({
            "user": "root", "uid": 0, "loginuid": 1000, "login_user": "alice", "tty": "pts0",
            "command": "apt-get install -y x",
            "ancestry": [{"pid": 10, "comm": "sudo", "user": "root"},
                         {"pid": 9, "comm": "bash", "user": "alice"}],
        }));
        event
    }

    fn config(text: &str) -> RulesConfig {
        let config: RulesConfig = toml::from_str(text).expect("valid rules");
        config.validate().expect("valid rules");
        config
    }

    fn names(event: &Event) -> Vec<String> {
        event
            .rules
            .iter()
            .map(|r| r["rule"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn an_ordinary_install_keeps_its_category_severity_and_fires_nothing() {
        let engine = RuleEngine::new(&RulesConfig::default());
        let mut event = event(Category::PackageInstall, "vim", "2026-05-03 14:00:00");
        assert_eq!(engine.evaluate(&mut event, None), Verdict::Emit);
        assert_eq!(event.severity, Severity::Medium);
        assert!(event.rules.is_empty(), "{:?}", event.rules);
    }

    #[test]
    fn watchlisted_packages_are_high_with_the_rule_named() {
        let engine = RuleEngine::new(&RulesConfig::default());
        for package in [
            "xmrig",
            "xmrig-cuda",
            "cpuminer-opt",
            "socat",
            "linux-exploit-suggester",
            "NMAP",
        ] {
            let mut event = event(Category::PackageInstall, package, "2026-05-03 14:00:00");
            engine.evaluate(&mut event, None);
            assert_eq!(event.severity, Severity::High, "{package}");
            assert_eq!(names(&event), ["watchlist:attacker-tooling"], "{package}");
            assert!(event.rules[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains(package)));
        }
        let mut removal = event(Category::PackageRemove, "xmrig", "2026-05-03 14:00:00");
        engine.evaluate(&mut removal, None);
        assert_eq!(
            removal.severity,
            Severity::Low,
            "removing a miner is no alarm"
        );
    }

    #[test]
    fn rules_run_in_the_documented_order() {
        let engine = RuleEngine::new(&config(
            r#"
            user_whitelist = ["alice"]
            host_role = "ci"
            watchlist_overrides_lowering = false
            [severity]
            package_install = "LOW"
            [[maintenance]]
            name = "patch"
            timezone = "UTC"
            weekly = ["Sun 13:00-15:00"]
            severity = "LOW"
            "#,
        ));
        // 2026-05-03 is a Sunday.
        let mut event = event(Category::PackageInstall, "socat", "2026-05-03 14:00:00");
        if let Some(actor) = event.actor.as_mut() {
            actor["ancestry"][0]["comm"] = json!("cron");
        }
        engine.evaluate(&mut event, None);
        assert_eq!(
            names(&event),
            [
                "severity:package_install",
                "watchlist:attacker-tooling",
                "lineage:scheduler",
                "maintenance:patch",
                "whitelist-user",
                "host-role:ci"
            ]
        );
        let changes: Vec<(String, String)> = event
            .rules
            .iter()
            .map(|r| (r["from"].to_string(), r["to"].to_string()))
            .collect();
        assert_eq!(changes[0], ("\"MEDIUM\"".into(), "\"LOW\"".into()));
        assert_eq!(changes[1], ("\"LOW\"".into(), "\"HIGH\"".into()));
        assert_eq!(changes[3], ("\"HIGH\"".into(), "\"LOW\"".into()));
        assert_eq!(event.severity, Severity::Info);
    }

    #[test]
    fn watchlist_hits_are_spared_by_windows_and_whitelists_by_default() {
        let engine = RuleEngine::new(&config(
            r#"
            user_whitelist = ["alice"]
            [[maintenance]]
            name = "always"
            timezone = "UTC"
            from = "2000-01-01 00:00"
            until = "2100-01-01 00:00"
            "#,
        ));
        let mut miner = event(Category::PackageInstall, "xmrig", "2026-05-03 14:00:00");
        engine.evaluate(&mut miner, None);
        assert_eq!(miner.severity, Severity::High);
        let mut vim = event(Category::PackageInstall, "vim", "2026-05-03 14:00:00");
        engine.evaluate(&mut vim, None);
        assert_eq!(names(&vim), ["maintenance:always", "whitelist-user"]);
        assert_eq!(vim.severity, Severity::Info);
    }

    #[test]
    fn a_suppressing_window_suppresses_only_inside() {
        let engine = RuleEngine::new(&config(
            r#"
            [[maintenance]]
            name = "quiet"
            timezone = "Europe/Berlin"
            weekly = ["Sun 02:00-04:00"]
            action = "suppress"
            "#,
        ));
        // 00:30 UTC is 02:30 in Berlin in summer (the log times here are read as UTC by TZ).
        let mut inside = event(Category::PackageInstall, "vim", "2026-07-05 02:30:00");
        let mut outside = event(Category::PackageInstall, "vim", "2026-07-05 05:30:00");
        inside.parsed_data.timestamp = "2026-07-05T02:30:00+02:00".into();
        outside.parsed_data.timestamp = "2026-07-05T05:30:00+02:00".into();
        assert_eq!(engine.evaluate(&mut inside, None), Verdict::Suppress);
        assert_eq!(engine.evaluate(&mut outside, None), Verdict::Emit);
        assert!(outside.rules.is_empty());
    }

    #[test]
    fn lineage_names_each_suspicious_ancestor() {
        let engine = RuleEngine::new(&RulesConfig::default());
        let mut event = event(Category::PackageInstall, "vim", "2026-05-03 14:00:00");
        event.actor = Some(json!({
            "user": "root", "loginuid": null, "tty": null,
            "command": "/usr/bin/dpkg -i /tmp/x.deb",
            "ancestry": [{"pid": 3, "comm": "sh", "user": "www-data"},
                         {"pid": 2, "comm": "php-fpm8.2", "user": "www-data"}],
        }));
        engine.evaluate(&mut event, None);
        assert_eq!(
            names(&event),
            [
                "lineage:daemon-account",
                "lineage:daemon-process",
                "lineage:unattended",
                "lineage:local-package"
            ]
        );
        assert_eq!(event.severity, Severity::High);
    }

    #[test]
    fn local_packages_are_told_from_repository_installs() {
        assert_eq!(local_package("dpkg -i ./x.deb").as_deref(), Some("./x.deb"));
        assert_eq!(
            local_package("/usr/bin/dpkg --install /tmp/y_1_all.deb").as_deref(),
            Some("/tmp/y_1_all.deb")
        );
        assert_eq!(
            local_package("apt-get install -y ./z.deb").as_deref(),
            Some("./z.deb")
        );
        assert_eq!(local_package("apt-get install -y vim"), None);
        assert_eq!(
            local_package(
                "/usr/bin/dpkg --status-fd 37 --unpack /var/cache/apt/archives/vim_1_amd64.deb"
            ),
            None
        );
        assert_eq!(local_package("dpkg -r x.deb"), None);
    }

    #[test]
    fn unusual_logins_raise_their_session_and_changes_nearby() {
        let mut ssh = SshCorrelator::detached(
            IpList::default(),
            LoginHistory::new(10, 86_400),
            Duration::from_hours(1),
        );
        let now = Utc::now();
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        ssh.ingest(SshEvent::Login(SshLogin {
            time: now.fixed_offset() - chrono::Duration::seconds(30),
            user: "mallory".into(),
            client_ip: ip,
            client_port: 1,
            method: AuthMethod::Password,
            fingerprint: None,
            sshd_pid: 77,
        }));
        let engine = RuleEngine::new(&RulesConfig::default());
        let mut nearby = event(Category::PackageInstall, "vim", "2026-05-03 14:00:00");
        nearby.parsed_data.timestamp = now.to_rfc3339();
        engine.evaluate(&mut nearby, Some(&ssh));
        assert_eq!(names(&nearby), ["ssh-unusual-login"]);
        assert_eq!(nearby.severity, Severity::High);

        let mut later = event(Category::PackageInstall, "vim", "2026-05-03 14:00:00");
        later.parsed_data.timestamp = (now + chrono::Duration::minutes(11)).to_rfc3339();
        engine.evaluate(&mut later, Some(&ssh));
        assert!(later.rules.is_empty(), "outside the window");

        let mut own = event(Category::PackageInstall, "vim", "2026-05-03 14:00:00");
        own.parsed_data.timestamp = now.to_rfc3339();
        if let Some(actor) = own.actor.as_mut() {
            actor["ssh"] = json!({"sshd_pid": 77, "user": "mallory", "client_ip": "203.0.113.9", "unusual_ip": true});
        }
        engine.evaluate(&mut own, Some(&ssh));
        assert_eq!(
            names(&own),
            ["ssh-unusual-session"],
            "its own login counts once"
        );
    }

    #[test]
    fn bad_rule_values_are_rejected() {
        for bad in [
            "ip_whitelist = [\"10.0.0.0/33\"]",
            "[[watchlist]]\nname = \"x\"\npackages = [\"[abc\"]",
            "[[maintenance]]\nname = \"m\"\ntimezone = \"Mars/Olympus\"\nweekly = [\"Sun 02:00-04:00\"]",
            "[[maintenance]]\nname = \"m\"\ntimezone = \"UTC\"\nweekly = [\"Sun 02:00\"]",
            "[[maintenance]]\nname = \"m\"\ntimezone = \"UTC\"",
            "[severity]\npackage_instal = \"HIGH\"",
            "[severity]\npackage_install = \"SEVERE\"",
        ] {
            assert!(toml::from_str::<RulesConfig>(bad).is_err(), "{bad}");
        }
        let unknown_role: RulesConfig = toml::from_str("host_role = \"db\"").expect("parses");
        assert!(unknown_role.validate().is_err());
    }
}
