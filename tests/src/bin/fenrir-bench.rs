//! `cargo xtask bench`: prints the figures behind Fenrir's speed and memory promises.
//!
//! - append → event latency of `fenrir-sensor run` (p50/p99 over many appends), beside a
//!   reader that polls the log every 2 seconds, as agent-based file monitors do by default;
//! - replay throughput over a history of more than a million real dpkg lines, beside awk
//!   printing the same history's action lines;
//! - resident memory of a running sensor after bursts of lines, without and with the kernel
//!   exec tracer;
//! - the cost of checking an installed package's files (`fenrir-sensor verify`: MD5 and
//!   SHA-256 of every file in one pass) per megabyte, beside `md5sum` and `sha256sum` reading
//!   the same files;
//! - `fenrir-sensor query` over an event store of a million events and a year of rotated dpkg
//!   logs (twelve monthly files, ten of them gzipped): the last day, with and without the store
//!   covering the logs, one user's last week, and one package over the whole year; and the
//!   peak resident memory of a whole year's question with `--limit 50` and without;
//! - the kernel tracer's cost: in-kernel nanoseconds per run of its programs (from the
//!   sensor's own `/proc/<pid>/fdinfo`, with `kernel.bpf_stats_enabled`) and the wall time of
//!   many fork+execs with nothing attached, with a running sensor, and with an auditd execve
//!   rule (Debian's auditd, run with a configuration of its own), in rotating rounds;
//! - resident memory of the sensor with its tracer beside auditd's after those execs;
//! - the rule engine's cost per event, in process, beside serializing the same event.
//!
//! The machine is shared and noisy: every figure is measured several times in one run and shown
//! as min / median / max, each beside its baseline from the same run, and comparisons are
//! ratios from that run.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Appends measured for the latency figure.
const LATENCY_APPENDS: usize = 2000;
/// Appends measured with a log delay for SSH logins, each held about `log_delay_ms`.
const HELD_LATENCY_APPENDS: usize = 200;
/// Appends measured against the polling reader (each waits up to one poll period).
const POLL_APPENDS: usize = 10;
const POLL_PERIOD: Duration = Duration::from_secs(2);
/// Lines of the replay history.
const HISTORY_LINES: usize = 1_200_000;
/// Fork+execs of `/bin/true` in one round of the exec figures.
const EXECS_PER_ROUND: usize = 5_000;
/// Rounds of the exec figures on each side (with and without a sensor).
const EXEC_ROUNDS: usize = 4;
/// Files and megabytes each of the package hashed for the verify figure.
const VERIFY_FILES: usize = 32;
const VERIFY_FILE_MB: usize = 4;
/// The switch that makes the kernel count run time and runs of every BPF program.
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// How long a starting sensor may take to report `sensor ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The argument that makes the bench run the rest of its arguments as a command and print
/// that command's peak resident memory: a process with one child reads the child's own peak
/// from `getrusage(RUSAGE_CHILDREN)`, which in the bench itself mixes every child it ran.
const PEAK_RSS_OF: &str = "--peak-rss-of";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((PEAK_RSS_OF, command)) = args.split_first().map(|(f, r)| (f.as_str(), r)) {
        return print_peak_rss_of(command);
    }
    let binary = sensor_binary()?;
    let work = tempfile::Builder::new().prefix("fenrir-bench-").tempdir()?;
    println!("fenrir benchmark — {}", binary.display());

    let latency = append_latency(&binary, work.path(), Correlation::Off, LATENCY_APPENDS)?;
    let held = append_latency(
        &binary,
        work.path(),
        Correlation::Delayed,
        HELD_LATENCY_APPENDS,
    )?;
    let polling = polling_latency(work.path())?;
    let replay = replay_throughput(&binary, work.path())?;
    let query = query_figures(&binary, work.path())?;
    let rss = steady_rss(&binary, work.path(), Tracer::Off)?;
    let verify = verify_cost(&binary, work.path())?;
    let kernel = kernel_figures(&binary, work.path())?;
    let rules = fenrir_tests::rule_cost::measure()?;

    println!();
    println!(
        "{:<44} {:>26}   {:>26}  baseline",
        "figure", "fenrir min / median / max", "baseline min / median / max"
    );
    latency_rows(&latency, &held, &polling);
    row(
        "replay throughput (MB/s)",
        &replay.fenrir,
        Some((&replay.awk, "awk printing the action lines")),
    );
    query.print_rows();
    row("run RSS, log only, after 3×10k lines (kB)", &rss, None);
    row(
        "verify cost per MB (ms)",
        &verify.fenrir,
        Some((&verify.coreutils, "md5sum + sha256sum")),
    );
    match &kernel {
        Kernel::Measured(figures) => figures.print_rows(),
        Kernel::Skipped(reason) => println!("skipping: {reason}"),
    }

    row(
        "rule engine per event (ns)",
        &rules.evaluate_ns,
        Some((&rules.serialize_ns, "event → JSON line")),
    );
    let p50 = median(&latency.p50);
    println!();
    println!(
        "targets: p50 ≤ 300 µs, p99 ≤ 2000 µs (SSH correlation off), replay ≥ 200 MB/s, \
         RSS ≤ 16384 kB"
    );
    println!("         query ≤ 500 ms over 1 M stored events and a year of logs");
    println!("         exec program ≤ 1500 ns/run, fork+exec slowdown ≤ 1 %");
    println!(
        "polling reader median / fenrir p50 median: {:.0}× slower",
        median(&polling) / p50.max(1.0)
    );
    println!(
        "replay / awk printing the action lines, throughput medians: {:.2}×",
        median(&replay.fenrir) / median(&replay.awk).max(1e-9)
    );
    println!(
        "verify / (md5sum + sha256sum) per MB, medians: {:.2}×",
        median(&verify.fenrir) / median(&verify.coreutils).max(1e-9)
    );
    if let Kernel::Measured(figures) = &kernel {
        figures.print_summary();
    }
    println!(
        "rule engine / JSON line per event, medians: {:.2}×",
        median(&rules.evaluate_ns) / median(&rules.serialize_ns).max(1e-9)
    );
    Ok(())
}

/// Prints the latency rows, each beside the polling reader.
fn latency_rows(latency: &Latency, held: &Latency, polling: &[f64]) {
    let poller = "2 s polling reader, per append";
    row(
        "append→event p50 (µs)",
        &latency.p50,
        Some((polling, poller)),
    );
    row(
        "append→event p99 (µs)",
        &latency.p99,
        Some((polling, poller)),
    );
    row(
        "append→event p50, SSH log delay 100 ms (µs)",
        &held.p50,
        Some((polling, poller)),
    );
    row(
        "append→event p99, SSH log delay 100 ms (µs)",
        &held.p99,
        Some((polling, poller)),
    );
}

fn sensor_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("FENRIR_SENSOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let candidate = exe
        .parent()
        .context("bench binary has a directory")?
        .join("fenrir-sensor");
    if !candidate.exists() {
        bail!(
            "{} not found; build it with cargo build --release -p fenrir-sensor",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Prints one figure as min / median / max, with its baseline beside it.
fn row(name: &str, samples: &[f64], baseline: Option<(&[f64], &str)>) {
    match baseline {
        Some((base, what)) => println!(
            "{name:<44} {:>26}   {:>26}  {what}",
            spread(samples),
            spread(base)
        ),
        None => println!("{name:<44} {:>26}", spread(samples)),
    }
}

fn row_beside(name: &str, samples: &[f64], baseline: Option<&(Vec<f64>, &str)>) {
    row(
        name,
        samples,
        baseline.map(|(values, what)| (values.as_slice(), *what)),
    );
}

fn spread(samples: &[f64]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (min, max) = (
        sorted.first().copied().unwrap_or(0.0),
        sorted.last().copied().unwrap_or(0.0),
    );
    format!("{min:.1} / {:.1} / {max:.1}", median(&sorted))
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Returns the `per_mille`/1000 quantile of sorted samples (nearest rank).
fn percentile(sorted: &[f64], per_mille: usize) -> f64 {
    let index = (sorted.len().saturating_sub(1) * per_mille + 500) / 1000;
    sorted.get(index).copied().unwrap_or(0.0)
}

struct Latency {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// Whether a started sensor loads the kernel exec tracer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracer {
    Off,
    On,
}

/// A running `fenrir-sensor run` with events on a pipe.
///
/// Killed when dropped, so that an error in the bench never leaves a sensor (and its kernel
/// programs) running.
struct RunningSensor {
    child: Child,
    events: BufReader<ChildStdout>,
    /// Whether the sensor reported its kernel tracer attached.
    attribution: bool,
    /// What the sensor said before it became ready, to explain a missing tracer.
    startup: Vec<String>,
}

impl RunningSensor {
    /// Starts the sensor on `log` and waits until it reports `sensor ready`.
    fn start(binary: &Path, dir: &Path, log: &Path, tracer: Tracer) -> anyhow::Result<Self> {
        Self::start_with(binary, dir, log, tracer, &[])
    }

    /// Like [`RunningSensor::start`], with more arguments for `fenrir-sensor run`.
    fn start_with(
        binary: &Path,
        dir: &Path,
        log: &Path,
        tracer: Tracer,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let state = dir.join(format!(
            "state-{}",
            log.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        // An empty dpkg database: the sensor compares it with its snapshot at every start.
        let status = dir.join("status");
        if !status.exists() {
            File::create(&status)?;
        }
        let mut command = Command::new(binary);
        command.args([
            "run",
            "--no-journald",
            "--host",
            "bench",
            "--log-level",
            "info",
        ]);
        if tracer == Tracer::Off {
            command.arg("--no-ebpf");
        }
        command.args(extra);
        let mut child = command
            .arg("--dpkg-log")
            .arg(log)
            .arg("--dpkg-admindir")
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start fenrir-sensor")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let mut sensor = Self {
            child,
            events: BufReader::new(stdout),
            attribution: false,
            startup: Vec::new(),
        };

        // Startup lines come back to decide readiness; later ones only matter when they warn.
        let (startup_tx, startup_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut ready = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !ready {
                    ready = line.contains("sensor ready");
                    let _ = startup_tx.send(line);
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("sensor: {line}");
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = startup_rx.recv_timeout(left) else {
                bail!(
                    "sensor never became ready; it said:\n{}",
                    sensor.startup.join("\n")
                );
            };
            let ready = line.contains("sensor ready");
            sensor.attribution |= ready && line.contains("attribution=true");
            sensor.startup.push(line);
            if ready {
                return Ok(sensor);
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Explains why the sensor runs without its tracer, from what it said at startup.
    fn why_untraced(&self) -> String {
        self.startup
            .iter()
            .find(|line| line.contains("kernel exec tracer"))
            .map_or_else(
                || "the sensor did not attach its kernel exec tracer".to_owned(),
                |line| format!("the sensor did not attach its kernel exec tracer: {line}"),
            )
    }
}

impl Drop for RunningSensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real dpkg line that produces exactly one event and leaves no install pending.
/// A removal line stamped now, as dpkg stamps its lines.
fn remove_line(n: usize) -> String {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    format!("{now} remove bench-pkg-{n}:amd64 1.{n}-1 <none>\n")
}

/// Whether the measured sensor correlates changes with SSH logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Correlation {
    /// `--no-ssh`: the pipeline alone.
    Off,
    /// `log_delay_ms = 100`: every recent change waits until the login source has been read
    /// that long after it, so another session's login logged just before it counts.
    Delayed,
}

fn append_latency(
    binary: &Path,
    dir: &Path,
    correlation: Correlation,
    appends: usize,
) -> anyhow::Result<Latency> {
    let log = dir.join(format!("latency-{correlation:?}.log"));
    File::create(&log)?;
    let config = dir.join("log-delay.toml");
    fs::write(&config, "[ssh]\nlog_delay_ms = 100\n")?;
    let config = config.display().to_string();
    let extra: &[&str] = match correlation {
        Correlation::Off => &["--no-ssh"],
        Correlation::Delayed => &["--config", &config],
    };
    let mut sensor = RunningSensor::start_with(binary, dir, &log, Tracer::Off, extra)?;
    let mut writer = OpenOptions::new().append(true).open(&log)?;

    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut line = String::new();
    for round in 0..5 {
        let mut samples = Vec::with_capacity(appends / 5);
        for i in 0..appends / 5 {
            let text = remove_line(round * 100_000 + i);
            let start = Instant::now();
            // One write per line, as dpkg does on its O_APPEND handle.
            writer.write_all(text.as_bytes())?;
            line.clear();
            sensor.events.read_line(&mut line)?;
            samples.push(start.elapsed().as_secs_f64() * 1e6);
            if !line.contains("package_remove") {
                bail!("unexpected sensor output: {line}");
            }
            // Space the appends so each is a separate wake-up, like real dpkg lines.
            thread::sleep(Duration::from_micros(200));
        }
        samples.sort_by(f64::total_cmp);
        p50.push(percentile(&samples, 500));
        p99.push(percentile(&samples, 990));
    }
    Ok(Latency { p50, p99 })
}

/// A reader that looks at the log every two seconds, as an agent's polling loop does.
fn polling_latency(dir: &Path) -> anyhow::Result<Vec<f64>> {
    let log = dir.join("polled.log");
    File::create(&log)?;
    let appended: std::sync::Arc<std::sync::Mutex<Vec<Instant>>> = std::sync::Arc::default();
    let marks = std::sync::Arc::clone(&appended);
    let path = log.clone();
    let reader = thread::spawn(move || -> anyhow::Result<Vec<f64>> {
        let mut file = File::open(&path)?;
        let mut offset = 0;
        let mut seen = 0;
        let mut latencies = Vec::new();
        while seen < POLL_APPENDS {
            thread::sleep(POLL_PERIOD);
            file.seek(SeekFrom::Start(offset))?;
            let mut text = String::new();
            offset += file.read_to_string(&mut text)? as u64;
            let now = Instant::now();
            let marks = marks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            for _ in text.lines() {
                if let Some(at) = marks.get(seen) {
                    latencies.push(now.duration_since(*at).as_secs_f64() * 1e6);
                }
                seen += 1;
            }
        }
        Ok(latencies)
    });

    let mut writer = OpenOptions::new().append(true).open(&log)?;
    for i in 0..POLL_APPENDS {
        // Appends land at arbitrary points of the poll period.
        thread::sleep(Duration::from_millis(700 + (i as u64 * 373) % 1500));
        if let Ok(mut marks) = appended.lock() {
            marks.push(Instant::now());
        }
        writer.write_all(remove_line(i).as_bytes())?;
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("polling reader panicked"))?
}

/// Returns every line of the dpkg corpus.
fn corpus_lines() -> anyhow::Result<Vec<Vec<u8>>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/dpkg");
    let mut lines = Vec::new();
    for entry in
        fs::read_dir(&corpus).with_context(|| format!("failed to read {}", corpus.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            continue;
        }
        lines.extend(
            fs::read(&path)?
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    if lines.is_empty() {
        bail!("no corpus lines in {}", corpus.display());
    }
    Ok(lines)
}

/// Builds a history of real dpkg lines from the corpus, repeated to the wanted size.
fn build_history(dir: &Path) -> anyhow::Result<PathBuf> {
    let lines = corpus_lines()?;
    let history = dir.join("history.log");
    let mut out = std::io::BufWriter::new(File::create(&history)?);
    for line in lines.iter().cycle().take(HISTORY_LINES) {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(history)
}

struct VerifyCost {
    /// Milliseconds per megabyte of `fenrir-sensor verify`, per round.
    fenrir: Vec<f64>,
    /// Milliseconds per megabyte of `md5sum` then `sha256sum` over the same files.
    coreutils: Vec<f64>,
}

/// Lays out an installed package of `VERIFY_FILES` files under a root with its md5sums and
/// status record, as dpkg leaves them; returns the root, the admin directory and the files.
fn build_installed_package(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, Vec<PathBuf>)> {
    let root = dir.join("verify-root");
    let admin = root.join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info"))?;
    let data = root.join("usr/lib/fenrir-bench");
    fs::create_dir_all(&data)?;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut files = Vec::new();
    for index in 0..VERIFY_FILES {
        let path = data.join(format!("blob-{index}"));
        let mut out = std::io::BufWriter::new(File::create(&path)?);
        for _ in 0..VERIFY_FILE_MB * (1 << 20) / 8 {
            // xorshift: incompressible bytes without a dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.write_all(&state.to_le_bytes())?;
        }
        out.flush()?;
        files.push(path);
    }
    let sums = Command::new("md5sum")
        .args(&files)
        .current_dir(&root)
        .output()?;
    if !sums.status.success() {
        bail!("md5sum failed");
    }
    let listing = String::from_utf8(sums.stdout)?.replace(&format!("  {}/", root.display()), "  ");
    fs::write(admin.join("info/fenrir-bench.md5sums"), listing)?;
    fs::write(
        admin.join("status"),
        "Package: fenrir-bench\nStatus: install ok installed\nArchitecture: all\n\
         Version: 1.0\nDescription: benchmark package\n",
    )?;
    Ok((root, admin, files))
}

fn verify_cost(binary: &Path, dir: &Path) -> anyhow::Result<VerifyCost> {
    let (root, admin, files) = build_installed_package(dir)?;
    let megabytes = f64::from(u32::try_from(VERIFY_FILES * VERIFY_FILE_MB)?);
    let state = dir.join("verify-state");
    let mut cost = VerifyCost {
        fenrir: Vec::new(),
        coreutils: Vec::new(),
    };
    // The first round of each warms the page cache; what is measured is the hashing.
    for round in 0..6 {
        let start = Instant::now();
        let output = Command::new(binary)
            .arg("verify")
            .arg("--dpkg-admindir")
            .arg(&admin)
            .arg("--dpkg-root")
            .arg(&root)
            .arg("--state-dir")
            .arg(&state)
            .arg("fenrir-bench")
            .output()?;
        let fenrir = start.elapsed().as_secs_f64() * 1000.0 / megabytes;
        if output.status.code() != Some(0) {
            bail!(
                "verify failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let start = Instant::now();
        for tool in ["md5sum", "sha256sum"] {
            let status = Command::new(tool)
                .args(&files)
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("{tool} failed with {status}");
            }
        }
        let coreutils = start.elapsed().as_secs_f64() * 1000.0 / megabytes;
        if round > 0 {
            cost.fenrir.push(fenrir);
            cost.coreutils.push(coreutils);
        }
    }
    Ok(cost)
}

/// The awk program of the replay baseline: the lines of dpkg's actions that make events.
const AWK_ACTIONS: &str =
    r#"$3 == "install" || $3 == "upgrade" || $3 == "remove" || $3 == "purge""#;

struct ReplayFigures {
    /// Megabytes per second of `fenrir-sensor replay`, per round.
    fenrir: Vec<f64>,
    /// Megabytes per second of awk printing the same history's action lines, per round: what
    /// an operator types to list changes, and a gauge of how fast the machine reads text.
    awk: Vec<f64>,
}

fn replay_throughput(binary: &Path, dir: &Path) -> anyhow::Result<ReplayFigures> {
    let history = build_history(dir)?;
    // A history of a few hundred megabytes is exact in an f64.
    let megabytes = f64::from(u32::try_from(fs::metadata(&history)?.len())?) / 1e6;
    println!("replay history: {HISTORY_LINES} real lines, {megabytes:.1} MB");
    let mut figures = ReplayFigures {
        fenrir: Vec::new(),
        awk: Vec::new(),
    };
    // Alternating the two keeps a change in the machine's load from favouring either.
    for _ in 0..3 {
        let mut replay = Command::new(binary);
        replay
            .args(["replay", "--host", "bench", "--log-level", "error"])
            .arg(&history);
        figures.fenrir.push(megabytes / timed_run(&mut replay)?);

        let mut awk = Command::new("awk");
        awk.arg(AWK_ACTIONS).arg(&history);
        figures.awk.push(megabytes / timed_run(&mut awk)?);
    }
    Ok(figures)
}

/// Runs `command` with its output discarded; returns the seconds it took.
fn timed_run(command: &mut Command) -> anyhow::Result<f64> {
    let start = Instant::now();
    let status = command.stdout(Stdio::null()).status()?;
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(seconds)
}

/// Events in the store of the query figures.
const STORED_EVENTS: usize = 1_000_000;
/// Lines of dpkg log per month of the query figures' year.
const LOG_LINES_PER_MONTH: usize = 100_000;
/// Runs of each query figure.
const QUERY_RUNS: usize = 5;
/// The moment the query figures' year ends, and the package and user they ask about.
const QUERY_NOW: &str = "2026-06-30T12:00:00+00:00";
const QUERY_PACKAGE: &str = "openssh-server";
const QUERY_USER: &str = "alice";

struct QueryFigures {
    day: Vec<f64>,
    day_uncovered: Vec<f64>,
    package_year_uncovered: Vec<f64>,
    user_week: Vec<f64>,
    package_year: Vec<f64>,
    /// Peak resident memory of a whole year's question, with and without a limit.
    limited_peak_kb: Vec<f64>,
    unlimited_peak_kb: Vec<f64>,
}

impl QueryFigures {
    /// Thousands of stored events a second that a query over the whole year reads, when the
    /// store covers the logs.
    fn store_throughput(&self) -> Vec<f64> {
        #[expect(clippy::cast_precision_loss, reason = "figures for display")]
        let events = STORED_EVENTS as f64;
        self.package_year
            .iter()
            .map(|ms| events / ms.max(f64::MIN_POSITIVE))
            .collect()
    }

    /// Prints the query rows of the table.
    fn print_rows(&self) {
        row("query --since 24h (ms)", &self.day, None);
        row(
            "query --since 24h, logs not covered (ms)",
            &self.day_uncovered,
            None,
        );
        row("query --since 7d --user (ms)", &self.user_week, None);
        row("query --package, whole year (ms)", &self.package_year, None);
        row(
            "query --package, year, logs not covered (ms)",
            &self.package_year_uncovered,
            None,
        );
        row(
            "query throughput, whole store (k events/s)",
            &self.store_throughput(),
            None,
        );
        row(
            "query --limit 50, whole year, peak RSS (kB)",
            &self.limited_peak_kb,
            Some((&self.unlimited_peak_kb, "the same query without --limit")),
        );
    }
}

/// Writes twelve months of dpkg log from the corpus lines, oldest first, lines spread evenly
/// over each; returns the directory and the bytes on disk.
fn write_year_of_logs(
    dir: &Path,
    start: chrono::NaiveDateTime,
    lines: &[Vec<u8>],
) -> anyhow::Result<(PathBuf, u64)> {
    use chrono::Duration as Span;

    let logs = dir.join("query-logs");
    fs::create_dir_all(&logs)?;

    // Twelve months, oldest first, lines spread evenly over each; all but the two newest
    // gzipped, as logrotate leaves dpkg's logs.
    let month = Span::days(365) / 12;
    let mut cycle = lines.iter().cycle();
    for index in (0..12).rev() {
        let name = match index {
            0 => "dpkg.log".to_owned(),
            n => format!("dpkg.log.{n}"),
        };
        let path = logs.join(&name);
        let first = start + month * (11 - index);
        let mut out = std::io::BufWriter::new(File::create(&path)?);
        for n in 0..LOG_LINES_PER_MONTH {
            let at = first + month * i32::try_from(n)? / i32::try_from(LOG_LINES_PER_MONTH)?;
            let line = cycle.next().context("corpus lines cycle")?;
            out.write_all(at.format("%Y-%m-%d %H:%M:%S").to_string().as_bytes())?;
            out.write_all(line.get(19..).unwrap_or_default())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        drop(out);
        if index >= 2 {
            let status = Command::new("gzip").arg("-f").arg(&path).status()?;
            if !status.success() {
                bail!("gzip {} failed", path.display());
            }
        }
    }
    let log_bytes: u64 = fs::read_dir(&logs)?
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    Ok((logs, log_bytes))
}

/// Fills an event store with the corpus's events spread over the year a million times over;
/// returns the state directory and the store's directory.
fn fill_store(
    dir: &Path,
    start: chrono::NaiveDateTime,
    lines: &[Vec<u8>],
) -> anyhow::Result<(PathBuf, PathBuf)> {
    use chrono::Duration as Span;

    // The events of the corpus, spread over the same year a million times over, a third with
    // the actor the kernel tracer gives.
    let corpus_log = dir.join("query-corpus.log");
    let mut text = Vec::new();
    for line in lines {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    fs::write(&corpus_log, text)?;
    let mut samples = Vec::new();
    fenrir_sensor::replay::for_each_event(
        &[corpus_log],
        "bench",
        &fenrir_sensor::parse::apt_history::AptHistoryIndex::default(),
        fenrir_sensor::replay::Unfinished::Judge,
        |event| {
            samples.push(event);
            Ok(())
        },
    )?;
    if samples.is_empty() {
        bail!("the corpus gave no events");
    }
    let state = dir.join("query-state");
    let store_dir = state.join("events");
    let mut store = fenrir_sensor::sink::store::StoreSink::new(
        store_dir.clone(),
        fenrir_sensor::sink::store::StoreOptions {
            segment_bytes: 8 * 1024 * 1024,
            max_bytes: 8 * 1024 * 1024 * 1024,
        },
    );
    let users = [QUERY_USER, "bob", "carol"];
    let step = Span::days(365) / i32::try_from(STORED_EVENTS)?;
    for n in 0..STORED_EVENTS {
        let mut event = samples[n % samples.len()].clone();
        let at = start + step * i32::try_from(n)?;
        let stamp = at.format("%Y-%m-%d %H:%M:%S").to_string();
        event.parsed_data.timestamp = at.and_utc().fixed_offset().to_rfc3339();
        if event.raw_line.len() >= 19 {
            event.raw_line.replace_range(..19, &stamp);
        }
        if n % 3 == 0 {
            let user = users[(n / 3) % users.len()];
            event.actor = Some(serde_json::json!({
                "pid": 20_000 + n % 10_000, "uid": 0, "user": "root", "euid": 0,
                "loginuid": 1000, "login_user": user, "sessionid": 8, "tty": "pts0",
                "command": format!("apt-get install -y {}", event.parsed_data.package),
                "dpkg_command": "/usr/bin/dpkg --status-fd 37 --no-triggers --unpack --auto-deconfigure",
                "ancestry": [
                    {"pid": 29941, "comm": "apt-get", "uid": 0, "user": "root"},
                    {"pid": 29930, "comm": "sudo", "uid": 0, "user": "root"},
                    {"pid": 29912, "comm": "bash", "uid": 1000, "user": user},
                ],
                "session_leader": {"pid": 29912, "comm": "bash", "uid": 1000, "user": user},
                "ssh": {"sshd_pid": 29901},
            }));
        }
        fenrir_sensor::sink::Sink::send(&mut store, &event)?;
    }
    fenrir_sensor::sink::Sink::sync(&mut store)?;
    drop(store);
    Ok((state, store_dir))
}

/// Builds a year of logs and a store of a million events, then times queries over them.
fn query_figures(binary: &Path, dir: &Path) -> anyhow::Result<QueryFigures> {
    use chrono::{DateTime, Duration as Span};

    let end = DateTime::parse_from_rfc3339(QUERY_NOW)?.naive_utc();
    let start = end - Span::days(365);
    let lines = corpus_lines()?;
    let (logs, log_bytes) = write_year_of_logs(dir, start, &lines)?;
    let (state, store_dir) = fill_store(dir, start, &lines)?;
    let store_bytes: u64 = fs::read_dir(&store_dir)?
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    #[expect(clippy::cast_precision_loss, reason = "sizes for display")]
    {
        println!(
            "query data: {STORED_EVENTS} stored events, {:.0} MB; 12 monthly logs of \
             {LOG_LINES_PER_MONTH} real lines, {:.0} MB on disk",
            store_bytes as f64 / 1e6,
            log_bytes as f64 / 1e6
        );
    }

    let log = logs.join("dpkg.log");
    // Every question reads the same store and logs, asked at the same moment.
    let question: Vec<OsString> = [
        "query",
        "--format",
        "json",
        "--no-apt-history",
        "--now",
        QUERY_NOW,
        "--state-dir",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([
        state.clone().into(),
        "--dpkg-log".into(),
        log.clone().into(),
    ])
    .collect();
    let timed = |extra: &[&str]| -> anyhow::Result<Vec<f64>> {
        let mut times = Vec::with_capacity(QUERY_RUNS);
        for _ in 0..QUERY_RUNS {
            let begin = Instant::now();
            let output = Command::new(binary)
                .args(&question)
                .args(extra)
                .env("TZ", "UTC")
                .stderr(Stdio::null())
                .output()?;
            times.push(begin.elapsed().as_secs_f64() * 1e3);
            if !output.status.success() || output.stdout.is_empty() {
                bail!("query {extra:?} failed or found nothing");
            }
        }
        Ok(times)
    };

    // Without a record of what the store covers, the logs of the window are read too.
    let day_uncovered = timed(&["--since", "24h"])?;
    let package_year_uncovered = timed(&["--package", QUERY_PACKAGE])?;

    // The sensor ran all year: the store covers the logs up to its last checkpoint.
    let since = (start - Span::days(1)).and_utc().fixed_offset();
    fenrir_sensor::sink::store::write_coverage(&store_dir, since)?;
    let checkpoint = fenrir_sensor::source::checkpoint::CheckpointStore::for_log(&state, &log);
    let identity = fenrir_sensor::source::checkpoint::FileIdentity::of_path(&log)?;
    checkpoint.save(&fenrir_sensor::source::checkpoint::Checkpoint::new(
        log.clone(),
        identity,
        None,
        fs::metadata(&log)?.len(),
    ))?;
    thread::sleep(Duration::from_secs(3));

    let peak = |extra: &[&str]| -> anyhow::Result<Vec<f64>> {
        let year = start.and_utc().to_rfc3339();
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg(PEAK_RSS_OF)
            .arg(binary)
            .args(&question)
            .args(["--since", &year])
            .args(extra)
            .env("TZ", "UTC");
        (0..3).map(|_| peak_rss_kb(&mut command)).collect()
    };

    Ok(QueryFigures {
        day: timed(&["--since", "24h"])?,
        day_uncovered,
        package_year_uncovered,
        user_week: timed(&["--since", "7d", "--user", QUERY_USER])?,
        package_year: timed(&["--package", QUERY_PACKAGE])?,
        limited_peak_kb: peak(&["--limit", "50"])?,
        unlimited_peak_kb: peak(&[])?,
    })
}

/// Runs `command` (built to call this bench with [`PEAK_RSS_OF`]) and returns the peak
/// resident memory it printed, in kB.
fn peak_rss_kb(command: &mut Command) -> anyhow::Result<f64> {
    let output = command.stderr(Stdio::inherit()).output()?;
    if !output.status.success() {
        bail!("{command:?} failed with {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("no peak memory in {text:?}"))
}

/// Runs `command` with its output discarded, then prints its peak resident memory in kB.
fn print_peak_rss_of(command: &[String]) -> anyhow::Result<()> {
    let Some((program, args)) = command.split_first() else {
        bail!("{PEAK_RSS_OF} needs a command");
    };
    let status = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("{program} failed with {status}");
    }
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    // Linux reports `ru_maxrss` in kilobytes.
    println!("{}", usage.max_rss());
    Ok(())
}

fn rss_kb(pid: u32) -> anyhow::Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS missing")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Returns `VmRSS` of a sensor after each of three 10,000-line bursts.
fn steady_rss(binary: &Path, dir: &Path, tracer: Tracer) -> anyhow::Result<Vec<f64>> {
    let log = dir.join(match tracer {
        Tracer::Off => "rss.log",
        Tracer::On => "rss-traced.log",
    });
    File::create(&log)?;
    let mut sensor = RunningSensor::start(binary, dir, &log, tracer)?;
    let mut writer = OpenOptions::new().append(true).open(&log)?;
    let mut samples = Vec::new();
    let mut line = String::new();
    for burst in 0..3 {
        let text: String = (0..10_000)
            .map(|i| remove_line(burst * 10_000 + i))
            .collect();
        writer.write_all(text.as_bytes())?;
        for _ in 0..10_000 {
            line.clear();
            sensor.events.read_line(&mut line)?;
        }
        thread::sleep(Duration::from_millis(300));
        samples.push(rss_kb(sensor.pid())?);
    }
    Ok(samples)
}

/// The kernel tracer's figures, or why they could not be measured here.
enum Kernel {
    Measured(KernelFigures),
    Skipped(String),
}

struct KernelFigures {
    /// In-kernel ns per run of each program, one sample per traced round.
    exec_ns: Vec<f64>,
    fork_ns: Vec<f64>,
    exit_ns: Vec<f64>,
    /// Wall time of one round of fork+execs, in ms: nothing attached, the sensor, auditd.
    without_ms: Vec<f64>,
    with_ms: Vec<f64>,
    audit_ms: Vec<f64>,
    rss: Vec<f64>,
    audit_rss: Vec<f64>,
    /// Why auditd could not be compared here, if so.
    audit_skipped: Option<String>,
    /// Other processes' programs on the exec tracepoint when the figures were taken.
    foreign_programs: usize,
}

impl KernelFigures {
    fn print_rows(&self) {
        let compared = !self.audit_ms.is_empty();
        let auditd = |values: &[f64]| -> Option<(Vec<f64>, &'static str)> {
            compared.then(|| (values.to_vec(), "auditd, execve rule"))
        };
        row_beside(
            "run+eBPF RSS after 3×10k lines / auditd (kB)",
            &self.rss,
            auditd(&self.audit_rss).as_ref(),
        );
        row("exec program, untracked exec (ns/run)", &self.exec_ns, None);
        row("fork program (ns/run)", &self.fork_ns, None);
        row("exit program (ns/run)", &self.exit_ns, None);
        row(
            &format!("{EXECS_PER_ROUND} fork+exec /bin/true, nothing (ms)"),
            &self.without_ms,
            None,
        );
        row_beside(
            &format!("{EXECS_PER_ROUND} fork+exec /bin/true, watched (ms)"),
            &self.with_ms,
            auditd(&self.audit_ms).as_ref(),
        );
        let slowdown = |watched: &[f64]| -> Vec<f64> {
            watched
                .iter()
                .zip(&self.without_ms)
                .map(|(with, without)| (with / without - 1.0) * 100.0)
                .collect()
        };
        let per_exec = |watched: &[f64]| -> Vec<f64> {
            #[expect(clippy::cast_precision_loss, reason = "figures for display")]
            let execs = EXECS_PER_ROUND as f64;
            watched
                .iter()
                .zip(&self.without_ms)
                .map(|(with, without)| (with - without) * 1e3 / execs)
                .collect()
        };
        row_beside(
            "fork+exec slowdown, paired rounds (%)",
            &slowdown(&self.with_ms),
            auditd(&slowdown(&self.audit_ms)).as_ref(),
        );
        row_beside(
            "added wall time per fork+exec (µs)",
            &per_exec(&self.with_ms),
            auditd(&per_exec(&self.audit_ms)).as_ref(),
        );
        if let Some(reason) = &self.audit_skipped {
            println!("skipping: auditd comparison: {reason}");
        }
    }

    fn print_summary(&self) {
        let ratio = median(&self.with_ms) / median(&self.without_ms).max(f64::MIN_POSITIVE);
        println!(
            "fork+exec with sensor / without, ratio of medians: {ratio:.4} ({:+.2} %)",
            (ratio - 1.0) * 100.0
        );
        if !self.audit_ms.is_empty() {
            let audit = median(&self.audit_ms) / median(&self.without_ms).max(f64::MIN_POSITIVE);
            println!(
                "fork+exec with an auditd execve rule / without: {audit:.4} ({:+.2} %)",
                (audit - 1.0) * 100.0
            );
        }
        if self.foreign_programs > 0 {
            println!(
                "note: {} other program(s) on sched_process_exec were attached on this host \
                 and ran on every side",
                self.foreign_programs
            );
        }
    }
}

/// Measures the kernel tracer in one run, alternating rounds with and without a sensor.
fn kernel_figures(binary: &Path, dir: &Path) -> anyhow::Result<Kernel> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(Kernel::Skipped(
            "kernel figures need root to load the exec tracer".to_owned(),
        ));
    }
    if !Path::new(BPF_STATS_SYSCTL).exists() {
        return Ok(Kernel::Skipped(format!(
            "{BPF_STATS_SYSCTL} is missing: this kernel cannot count BPF run time"
        )));
    }

    let log = dir.join("exec.log");
    File::create(&log)?;
    let probe = RunningSensor::start(binary, dir, &log, Tracer::On)?;
    if !probe.attribution {
        return Ok(Kernel::Skipped(probe.why_untraced()));
    }
    if let Err(error) = tracepoint_programs(probe.pid()) {
        return Ok(Kernel::Skipped(format!("{error:#}")));
    }
    let foreign_programs = foreign_exec_programs(probe.pid());
    drop(probe);

    let rss = steady_rss(binary, dir, Tracer::On)?;
    let mut figures = KernelFigures {
        exec_ns: Vec::new(),
        fork_ns: Vec::new(),
        exit_ns: Vec::new(),
        without_ms: Vec::new(),
        with_ms: Vec::new(),
        audit_ms: Vec::new(),
        rss,
        audit_rss: Vec::new(),
        audit_skipped: None,
        foreign_programs,
    };
    let mut auditd = match Auditd::start(dir)? {
        Ok(auditd) => Some(auditd),
        Err(reason) => {
            figures.audit_skipped = Some(reason);
            None
        }
    };

    // Every side runs with statistics on, so their own small cost cannot pass for the sensor's.
    let _stats = BpfStats::enable()?;
    for round in 0..EXEC_ROUNDS {
        // Rotate the order every round so that drift of the shared machine hits every side.
        for side in (0..3).map(|n| (n + round) % 3) {
            match side {
                0 => figures.without_ms.push(exec_burst()?),
                1 => traced_round(binary, dir, &log, &mut figures)?,
                _ => {
                    if let Some(auditd) = auditd.as_mut() {
                        figures.audit_ms.push(auditd.with_execve_rule(exec_burst)??);
                        figures.audit_rss.push(rss_kb(auditd.pid())?);
                    }
                }
            }
        }
    }
    drop(auditd);
    Ok(Kernel::Measured(figures))
}

/// Runs one round of fork+execs under a fresh sensor and records its programs' cost.
fn traced_round(
    binary: &Path,
    dir: &Path,
    log: &Path,
    figures: &mut KernelFigures,
) -> anyhow::Result<()> {
    let sensor = RunningSensor::start(binary, dir, log, Tracer::On)?;
    if !sensor.attribution {
        bail!("{}", sensor.why_untraced());
    }
    let before = tracepoint_programs(sensor.pid())?;
    figures.with_ms.push(exec_burst()?);
    let after = tracepoint_programs(sensor.pid())?;

    for (tracepoint, samples) in [
        ("sched_process_exec", &mut figures.exec_ns),
        ("sched_process_fork", &mut figures.fork_ns),
        ("sched_process_exit", &mut figures.exit_ns),
    ] {
        let (Some(start), Some(end)) = (before.get(tracepoint), after.get(tracepoint)) else {
            bail!("the sensor has no program on {tracepoint}");
        };
        let runs = end.run_count.saturating_sub(start.run_count);
        if runs == 0 {
            bail!("the program on {tracepoint} never ran: is kernel.bpf_stats_enabled reset?");
        }
        #[expect(clippy::cast_precision_loss, reason = "figures for display")]
        let ns_per_run = end.run_time_ns.saturating_sub(start.run_time_ns) as f64 / runs as f64;
        samples.push(ns_per_run);
    }
    Ok(())
}

/// Times `EXECS_PER_ROUND` fork+execs of `/bin/true`, each waited for; returns ms.
fn exec_burst() -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..EXECS_PER_ROUND {
        let status = Command::new("/bin/true")
            .status()
            .context("failed to run /bin/true")?;
        if !status.success() {
            bail!("/bin/true exited with {status}");
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Turns `kernel.bpf_stats_enabled` on and back to its previous value when dropped.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let previous = fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("failed to read {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("failed to enable {BPF_STATS_SYSCTL}"))?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(error) = fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "failed to restore {BPF_STATS_SYSCTL} to {}: {error}",
                self.previous
            );
        }
    }
}

/// Run statistics of one loaded program, as its fdinfo shows them.
#[derive(Debug, Clone, Copy)]
struct ProgramRuns {
    run_time_ns: u64,
    run_count: u64,
}

/// Reads the run statistics of every program `pid` holds attached to a tracepoint, by name.
///
/// The kernel cuts program names to 15 bytes (`sched_process_e` is both exec and exit), so
/// the name comes from the link's `tp_name` and the link's `prog_id` leads to the program.
fn tracepoint_programs(pid: u32) -> anyhow::Result<HashMap<String, ProgramRuns>> {
    let mut links = Vec::new();
    let mut programs = HashMap::new();
    for fdinfo in fdinfos(pid)? {
        let field = |key: &str| {
            fdinfo.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name == key).then(|| value.trim().to_owned())
            })
        };
        let number = |key: &str| field(key).and_then(|value| value.parse::<u64>().ok());
        match (field("tp_name"), field("prog_type"), number("prog_id")) {
            (Some(tracepoint), _, Some(id)) => links.push((tracepoint, id)),
            (None, Some(_), Some(id)) => {
                let runs = ProgramRuns {
                    run_time_ns: number("run_time_ns").unwrap_or(0),
                    run_count: number("run_cnt").unwrap_or(0),
                };
                programs.insert(id, runs);
            }
            _ => {}
        }
    }

    let attached: HashMap<String, ProgramRuns> = links
        .into_iter()
        .filter_map(|(tracepoint, id)| Some((tracepoint, *programs.get(&id)?)))
        .collect();
    if !attached.contains_key("sched_process_exec") {
        bail!("no program on sched_process_exec among the fds of sensor pid {pid}");
    }
    Ok(attached)
}

/// Returns the fdinfo text of every open fd of `pid`.
fn fdinfos(pid: u32) -> anyhow::Result<Vec<String>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = fs::read_dir(&dir).with_context(|| format!("failed to list {dir}"))?;

    // An fd closed between the listing and the read is simply gone.
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| fs::read_to_string(entry.path()).ok())
        .collect())
}

/// Counts other processes holding a program on the exec tracepoint, which runs on both sides.
fn foreign_exec_programs(sensor: u32) -> usize {
    let Ok(processes) = fs::read_dir("/proc") else {
        return 0;
    };
    processes
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != sensor)
        .filter_map(|pid| fdinfos(pid).ok())
        .map(|infos| {
            infos
                .iter()
                .filter(|info| {
                    info.lines().any(|line| {
                        line.split_once(':').is_some_and(|(key, value)| {
                            key == "tp_name" && value.trim() == "sched_process_exec"
                        })
                    })
                })
                .count()
        })
        .sum()
}

/// The audit rule the comparison adds, and removes again: every execve of the native ABI.
const AUDIT_RULE: [&str; 7] = [
    "always,exit",
    "-F",
    "arch=b64",
    "-S",
    "execve",
    "-k",
    "fenrir-bench",
];

/// Debian's auditd, started by the bench with a configuration of its own in a temporary
/// directory, so it writes nowhere else and starts no plugin.
///
/// Stopped when dropped, with the rule removed and the kernel's audit switch as it was; an
/// auditd that already runs on the host is never touched (the comparison is skipped).
struct Auditd {
    child: Child,
    enabled_before: String,
    rule_added: bool,
}

impl Auditd {
    /// Starts auditd, or returns why the comparison cannot run here.
    fn start(dir: &Path) -> anyhow::Result<Result<Self, String>> {
        let Ok(status) = audit_status() else {
            return Ok(Err(
                "auditctl cannot talk to the kernel's audit subsystem".to_owned()
            ));
        };
        if !Path::new("/sbin/auditd").exists() {
            return Ok(Err(
                "auditd is not installed (cargo xtask bench installs it)".to_owned(),
            ));
        }
        match status.get("pid").map(String::as_str) {
            Some("0") | None => {}
            Some(pid) => {
                return Ok(Err(format!(
                    "an auditd already runs (pid {pid}); the bench leaves it alone"
                )))
            }
        }
        let enabled_before = status.get("enabled").cloned().unwrap_or_else(|| "0".into());

        let config = dir.join("audit");
        fs::create_dir_all(config.join("plugins.d"))?;
        fs::write(
            config.join("auditd.conf"),
            format!(
                "local_events = yes\nwrite_logs = yes\nlog_file = {log}\nlog_format = ENRICHED\n\
                 flush = INCREMENTAL_ASYNC\nfreq = 50\nmax_log_file = 1024\nnum_logs = 1\n\
                 max_log_file_action = IGNORE\nspace_left = 2\nspace_left_action = IGNORE\n\
                 admin_space_left = 1\nadmin_space_left_action = IGNORE\n\
                 disk_full_action = IGNORE\ndisk_error_action = IGNORE\nq_depth = 2000\n\
                 overflow_action = IGNORE\nplugin_dir = {plugins}\nend_of_event_timeout = 2\n",
                log = config.join("audit.log").display(),
                plugins = config.join("plugins.d").display(),
            ),
        )?;
        fs::set_permissions(
            config.join("auditd.conf"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )?;
        let child = Command::new("/sbin/auditd")
            .arg("-n")
            .arg("-c")
            .arg(&config)
            .args(["-s", "nochange"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start auditd")?;
        let auditd = Self {
            child,
            enabled_before,
            rule_added: false,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let pid = auditd.pid().to_string();
        while audit_status()?.get("pid") != Some(&pid) {
            if Instant::now() > deadline {
                return Ok(Err("auditd did not register with the kernel".to_owned()));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Ok(auditd))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `work` with auditing on and the execve rule in place, and takes both away after.
    fn with_execve_rule<T>(&mut self, work: impl FnOnce() -> T) -> anyhow::Result<T> {
        auditctl(&["-e", "1"])?;
        auditctl(&rule_args("-a"))?;
        self.rule_added = true;
        let result = work();
        self.remove_rule();
        auditctl(&["-e", "0"])?;
        Ok(result)
    }

    fn remove_rule(&mut self) {
        if std::mem::take(&mut self.rule_added) {
            if let Err(error) = auditctl(&rule_args("-d")) {
                eprintln!("failed to remove the bench's audit rule: {error:#}");
            }
        }
    }
}

/// `auditctl <verb> always,exit -F arch=b64 -S execve -k fenrir-bench`.
fn rule_args(verb: &str) -> Vec<&str> {
    std::iter::once(verb).chain(AUDIT_RULE).collect()
}

impl Drop for Auditd {
    fn drop(&mut self) {
        self.remove_rule();
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
        if let Err(error) = auditctl(&["-e", &self.enabled_before]) {
            eprintln!(
                "failed to set the audit switch back to {}: {error:#}",
                self.enabled_before
            );
        }
    }
}

fn auditctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("auditctl")
        .args(args)
        .output()
        .context("failed to run auditctl")?;
    if !output.status.success() {
        bail!(
            "auditctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `auditctl -s` as key and value.
fn audit_status() -> anyhow::Result<HashMap<String, String>> {
    let output = Command::new("auditctl")
        .arg("-s")
        .output()
        .context("failed to run auditctl")?;
    if !output.status.success() {
        bail!("auditctl -s failed");
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().to_owned()))
        })
        .collect())
}
