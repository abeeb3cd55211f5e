//! `fenrir-sensor`: parses the command line, builds the pipeline, runs it.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fenrir_sensor::config::{Config, LogLevel, DEFAULT_CONFIG_PATH};
use fenrir_sensor::sink::format::{EcsLines, EventFormat};
use fenrir_sensor::{mcp, pipeline, query, replay};
use tracing::{info, warn};

// Replaying a long history allocates a few small strings per line on one thread and frees
// them on another; glibc's arenas serialize that on a lock, mimalloc's per-thread heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fenrir: real-time package-change sensor.
#[derive(Debug, Parser)]
#[command(name = "fenrir-sensor", version, about)]
struct Cli {
    /// Configuration file [default: /etc/fenrir/fenrir.toml, optional]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Diagnostics level (overrides the configuration; `RUST_LOG` overrides both)
    #[arg(long, global = true, value_enum)]
    log_level: Option<LogLevel>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Follow dpkg.log and emit an event for every package change
    Run(RunArgs),
    /// Print the events of whole log files (plain, .gz or .xz, a rotated set in any order)
    #[command(after_help = "\
Each FILE may be a log of dpkg, dnf (dnf.rpm.log), yum, zypper (zypp/history), pacman or apk; \
its format is told from its first lines. The other managers' events carry what their own log \
wrote about the run (pacman's and apk's command, zypper's command and user, dnf's command from \
the dnf.log beside dnf.rpm.log). dpkg events are attributed from apt's history log: an event \
whose dpkg line falls inside one apt \
run (Start-Date to End-Date) that lists its package gets that run's command and requesting \
user as its actor; otherwise the actor stays null. Without --apt-history, every \
apt/history.log* in the directory of each FILE is used, so replaying /var/log/dpkg.log* \
reads /var/log/apt/history.log*.")]
    Replay {
        /// Host name the events carry [default: this host's name]
        #[arg(long)]
        host: Option<String>,
        /// apt history log to attribute events from (plain, .gz or .xz); repeatable
        /// [default: every apt/history.log* beside the FILEs]
        #[arg(long, value_name = "FILE")]
        apt_history: Vec<PathBuf>,
        /// Attribute nothing from apt's history log
        #[arg(long, conflicts_with = "apt_history")]
        no_apt_history: bool,
        /// Shape of the JSON lines [default: the configured sinks.json.format]
        #[arg(long, value_enum)]
        format: Option<EventFormat>,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Check installed packages' files against dpkg's database and Fenrir's own record
    #[command(after_help = "\
Exit codes: 0 every file matches (changed config files are listed, not failures); 1 an error \
(unreadable database, a named package not installed); 2 a package file is missing or differs \
from dpkg's md5sums or from Fenrir's record of the install; 3 Fenrir's record store failed its \
chain check.")]
    Verify(fenrir_sensor::integrity::cli::VerifyArgs),
    /// Answer a question about past package changes from the event store and the logs
    #[command(after_help = "\
Events come from the event store in the state directory and, for any time it does not cover, \
from dpkg.log and its rotations (plain, .gz or .xz) with apt's history.log* for who, and from the \
other managers' followed logs and their rotations; the same log line from both is shown once, \
as stored. Output: a table on a terminal, JSON lines otherwise.")]
    Query(query::cli::QueryArgs),
    /// Serve the Model Context Protocol on stdin and stdout, with tools that answer questions
    /// about past package changes
    Mcp(query::cli::SourceArgs),
    /// Validate the configuration and exit
    CheckConfig,
}

#[derive(Debug, clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "each flag is an independent command-line switch"
)]
struct RunArgs {
    /// The dpkg log to follow [default: /var/log/dpkg.log]
    #[arg(long, value_name = "PATH")]
    dpkg_log: Option<PathBuf>,
    /// dpkg's admin directory, whose lock marks the end of a run [default: /var/lib/dpkg]
    #[arg(long, value_name = "DIR")]
    dpkg_admindir: Option<PathBuf>,
    /// The root dpkg installs into [default: derived from the admin directory, else /]
    #[arg(long, value_name = "DIR")]
    dpkg_root: Option<PathBuf>,
    /// Where checkpoints live [default: /var/lib/fenrir]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// JSON lines output, `-` for stdout; repeatable [default: -]
    #[arg(long, value_name = "PATH")]
    json: Vec<String>,
    /// Do not send events to journald
    #[arg(long)]
    no_journald: bool,
    /// Do not keep events in the event store
    #[arg(long)]
    no_store: bool,
    /// journald's native socket [default: /run/systemd/journal/socket]
    #[arg(long, value_name = "PATH")]
    journald_socket: Option<PathBuf>,
    /// Do not load the kernel exec tracer
    #[arg(long)]
    no_ebpf: bool,
    /// Do not read SSH logins (no `actor.ssh` details, no login correlation)
    #[arg(long)]
    no_ssh: bool,
    /// On a first start, read the existing log instead of starting at its end
    #[arg(long)]
    from_start: bool,
    /// Host name events carry [default: this host's name]
    #[arg(long)]
    host: Option<String>,
    /// Shape of the JSON lines: Fenrir's schema or Elastic Common Schema [default: fenrir]
    #[arg(long, value_enum)]
    format: Option<EventFormat>,
}

impl RunArgs {
    /// Lays command-line flags over the configuration file's values.
    fn apply(self, config: &mut Config) {
        if let Some(log) = self.dpkg_log {
            config.dpkg.log = log;
        }
        if let Some(dir) = self.dpkg_admindir {
            config.dpkg.admin_dir = dir;
        }
        if let Some(dir) = self.dpkg_root {
            config.dpkg.root = Some(dir);
        }
        if let Some(dir) = self.state_dir {
            config.state_dir = dir;
        }
        if !self.json.is_empty() {
            config.sinks.json.outputs = self.json;
        }
        if self.no_journald {
            config.sinks.journald.enabled = false;
        }
        if self.no_store {
            config.sinks.store.enabled = false;
        }
        if let Some(socket) = self.journald_socket {
            config.sinks.journald.socket = socket;
        }
        if self.no_ebpf {
            config.ebpf.enabled = false;
        }
        if self.no_ssh {
            config.ssh.source = fenrir_sensor::source::ssh::SourceChoice::Off;
        }
        if self.from_start {
            config.from_start = true;
        }
        if let Some(host) = self.host {
            config.host = Some(host);
        }
        if let Some(format) = self.format {
            config.sinks.json.format = format;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let text = fenrir_sensor::event::escape_control(&format!("{err:#}")).into_owned();
            eprintln!("fenrir-sensor: error: {text}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A broken configuration stops everything before any work starts.
    let mut config = Config::load(cli.config.as_deref())?;
    // A question's answer is its output; lifecycle notes would only clutter the terminal.
    let quiet = matches!(cli.command, Command::Query(_) | Command::Mcp(_));
    let default_level = if quiet {
        LogLevel::Warn
    } else {
        config.diagnostics.level
    };
    init_diagnostics(cli.log_level.unwrap_or(default_level));

    match cli.command {
        Command::CheckConfig => {
            let path = cli
                .config
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            println!("configuration is valid: {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            host,
            apt_history,
            no_apt_history,
            format,
            files,
        } => {
            let host = host.or(config.host).map_or_else(system_host, Ok)?;
            let source = if no_apt_history {
                replay::HistorySource::Disabled
            } else if apt_history.is_empty() {
                replay::HistorySource::BesideLogs
            } else {
                replay::HistorySource::Files(apt_history)
            };
            let history = replay::load_history(&source, &files)?;
            let stdout = io::stdout().lock();
            let mut out: Box<dyn io::Write> = match format.unwrap_or(config.sinks.json.format) {
                EventFormat::Fenrir => Box::new(stdout),
                EventFormat::Ecs => Box::new(EcsLines::new(stdout)),
            };
            let stats = replay::replay(&files, &host, &history, &mut out)?;
            out.flush().context("failed to write the events")?;
            info!(
                lines = stats.interpret.lines,
                malformed = stats.interpret.malformed,
                changes = stats.interpret.changes,
                attributed = stats.attributed,
                "replay finished"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let code =
                fenrir_sensor::integrity::cli::run(&args, &config, &mut io::stdout().lock())?;
            Ok(ExitCode::from(code))
        }
        Command::Query(args) => {
            query::cli::run_query(&args, &config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp(args) => {
            mcp::serve(&args, &config, io::stdin().lock(), &mut io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            args.apply(&mut config);
            fenrir_sensor::service::keep_capabilities_from_children();
            let host = config.host.clone().map_or_else(system_host, Ok)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            runtime.block_on(pipeline::run(&config, host, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};

    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        warn!("cannot install signal handlers; stop the sensor with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => info!(signal = "SIGINT", "shutting down"),
        _ = terminate.recv() => info!(signal = "SIGTERM", "shutting down"),
    }
}

fn system_host() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname().context("failed to read the host name")?;
    Ok(name.to_string_lossy().into_owned())
}

fn init_diagnostics(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_str()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}
