//! The command-line face of questions: flags into a [`Filter`] and [`Sources`], shared by
//! `fenrir-sensor query` and `fenrir-sensor mcp`.
//!
//! In: parsed flags and the configuration. Out: a filter, the sources to read, and for
//! `query` the answer on stdout. No state.

use std::io::{self, IsTerminal};
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, Local};
use tracing::warn;

use super::output::{self, Format};
use super::time::parse_time;
use super::{
    parse_categories, parse_severity, Filter, ManagerLogs, PackagePattern, QueryError, Sources,
};
use crate::config::Config;
use crate::parse::manager::{LogFormat, Manager};
use crate::replay::{self, HistorySource, Unfinished};
use crate::source::lock::{dpkg_lock_state, LockState};

/// Where answers come from; defaults from the configuration.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// The state directory whose event store is read [default: /var/lib/fenrir]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The dpkg log; its rotations beside it (.1, .N.gz, .N.xz) and apt/history.log* beside those
    /// are read too [default: /var/log/dpkg.log]
    #[arg(long, value_name = "PATH")]
    pub dpkg_log: Option<PathBuf>,
    /// dpkg's admin directory, whose lock tells whether dpkg is still running
    /// [default: /var/lib/dpkg]
    #[arg(long, value_name = "DIR")]
    pub dpkg_admindir: Option<PathBuf>,
    /// Host name that events read from the logs carry [default: this host's name]
    #[arg(long)]
    pub host: Option<String>,
    /// Do not read the event store
    #[arg(long)]
    pub no_store: bool,
    /// Do not read the package managers' logs (dpkg's and the other managers' followed ones)
    #[arg(long)]
    pub no_logs: bool,
    /// Do not attribute events read from the logs with apt's history
    #[arg(long)]
    pub no_apt_history: bool,
    /// The moment relative times count back from and the end of the window unless --until
    /// says otherwise, RFC 3339 [default: now, with no end]
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

impl SourceArgs {
    /// Builds the sources from these flags over `config`.
    ///
    /// # Errors
    /// The host name cannot be read.
    pub fn sources(&self, config: &Config) -> anyhow::Result<Sources> {
        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| config.state_dir.clone());
        let log = self
            .dpkg_log
            .clone()
            .unwrap_or_else(|| config.dpkg.log.clone());
        let admin_dir = self
            .dpkg_admindir
            .clone()
            .unwrap_or_else(|| config.dpkg.admin_dir.clone());
        let host = match self.host.clone().or_else(|| config.host.clone()) {
            Some(host) => host,
            None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
        };
        let unfinished = match dpkg_lock_state(&admin_dir) {
            Ok(LockState::Held { .. }) => Unfinished::Wait,
            _ => Unfinished::Judge,
        };
        let store = (!self.no_store).then(|| crate::pipeline::store_dir(&state_dir));
        let manager_logs = if self.no_logs {
            Vec::new()
        } else {
            manager_logs(
                config,
                store.as_deref().map(|dir| (dir, state_dir.as_path())),
            )
        };
        Ok(Sources {
            covered: store
                .as_deref()
                .and_then(|dir| covered(dir, &state_dir, &log)),
            store,
            dpkg_logs: if self.no_logs {
                Vec::new()
            } else {
                replay::rotations_of(&log)
            },
            history: if self.no_apt_history {
                HistorySource::Disabled
            } else {
                HistorySource::BesideLogs
            },
            manager_logs,
            host,
            unfinished,
        })
    }

    /// Returns the moment relative times count back from.
    ///
    /// # Errors
    /// A `--now` that is not RFC 3339.
    pub fn now(&self) -> Result<DateTime<FixedOffset>, QueryError> {
        match &self.now {
            Some(text) => DateTime::parse_from_rfc3339(text).map_err(|_| QueryError::Filter {
                filter: "--now",
                message: format!(
                    "{:?} is not an RFC 3339 time such as 2026-05-03T14:32:11+00:00",
                    crate::event::escape_control(text)
                ),
            }),
            None => Ok(Local::now().fixed_offset()),
        }
    }
}

/// Returns the logs of the managers the configuration follows, each with its rotations
/// beside it and, given the store and state directories, the time the store covers it.
fn manager_logs(
    config: &Config,
    store: Option<(&std::path::Path, &std::path::Path)>,
) -> Vec<ManagerLogs> {
    Manager::OTHERS
        .iter()
        .filter_map(|&manager| {
            let log = config.managers.log_of(manager)?;
            let format = LogFormat::of(manager)?;
            let files = replay::rotations_of(&log);
            (!files.is_empty()).then(|| ManagerLogs {
                format,
                files,
                covered: store.and_then(|(store, state_dir)| covered(store, state_dir, &log)),
            })
        })
        .collect()
}

/// Returns the time range in which the store holds the event of every line of `log`: from the
/// coverage the sensor records to its last checkpoint, whose lines it had all delivered.
fn covered(
    store: &std::path::Path,
    state_dir: &std::path::Path,
    log: &std::path::Path,
) -> Option<(DateTime<FixedOffset>, DateTime<FixedOffset>)> {
    let since = crate::sink::store::read_coverage(store)?;
    let checkpoint = crate::source::checkpoint::CheckpointStore::for_log(state_dir, log);
    let saved = std::fs::metadata(checkpoint.path()).ok()?.modified().ok()?;
    // A line written in the same second as the checkpoint may not have been read yet.
    let until = DateTime::<Local>::from(saved).fixed_offset() - chrono::Duration::seconds(2);
    Some((since, until))
}

/// What to look for.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only changes since then: 24h, 7d, 2w, an RFC 3339 time or a local date
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only changes until then, in the same forms as --since
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only these kinds of change.
    #[arg(
        long = "type",
        value_name = "TYPES",
        help = "Only these kinds: install, upgrade, downgrade, reinstall, remove, purge, \
                disappear, install_failed, scripts, integrity_mismatch, conffile_changed, \
                change_unlogged, log_tamper or full categories (package_install); \
                comma-separated or repeated"
    )]
    pub types: Vec<String>,
    /// Only packages matching this pattern (*, ?, [a-z]); with a `:` it matches name:arch
    #[arg(long, value_name = "GLOB")]
    pub package: Option<String>,
    /// Only changes made by this user: the actor's user or login user, or apt's
    /// Requested-By; a number matches uid and login uid
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Only events at least this severe: INFO, LOW, MEDIUM, HIGH, CRITICAL
    #[arg(long, value_name = "SEVERITY")]
    pub min_severity: Option<String>,
    /// Only changes of these package managers (dpkg, …); comma-separated or repeated
    #[arg(long, value_name = "NAMES")]
    pub manager: Vec<String>,
}

impl FilterArgs {
    /// Builds the filter, with relative times counted back from `now`; a `fixed` now also
    /// ends the window when no `--until` does, so an answer can be reproduced later.
    ///
    /// # Errors
    /// A value that cannot be read, named by its flag.
    pub fn filter(&self, now: DateTime<FixedOffset>, fixed: bool) -> Result<Filter, QueryError> {
        let time = |flag: &'static str, text: &Option<String>| {
            text.as_deref()
                .map(|t| parse_time(t, now))
                .transpose()
                .map_err(|err| QueryError::Filter {
                    filter: flag,
                    message: err.to_string(),
                })
        };
        let mut categories = Vec::new();
        for text in &self.types {
            for category in parse_categories(text)? {
                if !categories.contains(&category) {
                    categories.push(category);
                }
            }
        }
        Ok(Filter {
            since: time("--since", &self.since)?,
            until: time("--until", &self.until)?.or(fixed.then_some(now)),
            categories,
            package: self
                .package
                .as_deref()
                .map(PackagePattern::new)
                .transpose()?,
            user: self.user.clone().filter(|u| !u.is_empty()),
            min_severity: self
                .min_severity
                .as_deref()
                .map(parse_severity)
                .transpose()?,
            managers: self
                .manager
                .iter()
                .flat_map(|m| m.split(','))
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// `fenrir-sensor query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Output format [default: table on a terminal, json otherwise]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Show only the newest N matching events
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Answers the question on stdout.
///
/// # Errors
/// A filter that cannot be read, or sources that cannot be.
pub fn run_query(args: &QueryArgs, config: &Config) -> anyhow::Result<()> {
    let filter = args
        .filter
        .filter(args.sources.now()?, args.sources.now.is_some())?;
    let sources = args.sources.sources(config)?;
    let answer = super::run(&filter, &sources, args.limit)?;
    if answer.stats.omitted > 0 {
        warn!(
            omitted = answer.stats.omitted,
            "more events matched than --limit shows; the oldest are left out"
        );
    }
    let format = args.format.unwrap_or(if io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    });
    match output::write(&answer.events, format, &mut io::stdout().lock()) {
        // A reader such as `head` that has seen enough is no failure.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
