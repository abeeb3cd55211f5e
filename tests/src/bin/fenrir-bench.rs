//! `cargo xtask bench`: prints the figures behind Fenrir's speed and memory promises.
//!
//! - append → event latency of `fenrir-sensor run` (p50/p99 over many appends), beside a
//!   reader that polls the log every 2 seconds, as agent-based file monitors do by default;
//! - replay throughput over a history of more than a million real dpkg lines;
//! - resident memory of a running sensor after bursts of lines.
//!
//! The machine is shared and noisy: every figure is measured several times in one run and shown
//! as min / median / max, and comparisons are ratios from the same run.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Appends measured for the latency figure.
const LATENCY_APPENDS: usize = 2000;
/// Appends measured against the polling reader (each waits up to one poll period).
const POLL_APPENDS: usize = 10;
const POLL_PERIOD: Duration = Duration::from_secs(2);
/// Lines of the replay history.
const HISTORY_LINES: usize = 1_200_000;

fn main() -> anyhow::Result<()> {
    let binary = sensor_binary()?;
    let work = tempfile::Builder::new().prefix("fenrir-bench-").tempdir()?;
    println!("fenrir benchmark — {}", binary.display());
    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "figure", "min", "median", "max"
    );

    let latency = append_latency(&binary, work.path())?;
    let polling = polling_latency(work.path())?;
    let replay = replay_throughput(&binary, work.path())?;
    let rss = steady_rss(&binary, work.path())?;

    row("append→event p50 (µs)", &latency.p50);
    row("append→event p99 (µs)", &latency.p99);
    row("2 s polling reader append→read (µs)", &polling);
    row("replay throughput (MB/s)", &replay);
    row("run RSS after 3×10k-line bursts (kB)", &rss);

    let p50 = median(&latency.p50);
    println!();
    println!("targets: p50 ≤ 300 µs, p99 ≤ 2000 µs, replay ≥ 200 MB/s, RSS ≤ 16384 kB");
    println!(
        "polling reader median / fenrir p50 median: {:.0}× slower",
        median(&polling) / p50.max(1.0)
    );
    Ok(())
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

fn row(name: &str, samples: &[f64]) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (min, max) = (
        sorted.first().copied().unwrap_or(0.0),
        sorted.last().copied().unwrap_or(0.0),
    );
    println!(
        "{name:<44} {min:>12.1} {:>12.1} {max:>12.1}",
        median(&sorted)
    );
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

/// Starts `fenrir-sensor run` on `log` with events on stdout; returns the child and a reader.
fn start_sensor(
    binary: &Path,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<(std::process::Child, BufReader<std::process::ChildStdout>)> {
    let state = dir.join(format!(
        "state-{}",
        log.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut child = Command::new(binary)
        .args([
            "run",
            "--no-journald",
            "--no-ebpf",
            "--host",
            "bench",
            "--log-level",
            "warn",
        ])
        .arg("--dpkg-log")
        .arg(log)
        .arg("--dpkg-admindir")
        .arg(dir)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("failed to start fenrir-sensor")?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    // Give the sensor time to open the log and set its watch.
    thread::sleep(Duration::from_millis(500));
    Ok((child, BufReader::new(stdout)))
}

/// A real dpkg line that produces exactly one event and leaves no install pending.
fn remove_line(n: usize) -> String {
    format!("2026-05-03 14:32:11 remove bench-pkg-{n}:amd64 1.{n}-1 <none>\n")
}

fn append_latency(binary: &Path, dir: &Path) -> anyhow::Result<Latency> {
    let log = dir.join("latency.log");
    File::create(&log)?;
    let (mut child, mut events) = start_sensor(binary, dir, &log)?;
    let mut writer = OpenOptions::new().append(true).open(&log)?;

    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut line = String::new();
    for round in 0..5 {
        let mut samples = Vec::with_capacity(LATENCY_APPENDS / 5);
        for i in 0..LATENCY_APPENDS / 5 {
            let text = remove_line(round * 100_000 + i);
            let start = Instant::now();
            // One write per line, as dpkg does on its O_APPEND handle.
            writer.write_all(text.as_bytes())?;
            line.clear();
            events.read_line(&mut line)?;
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
    child.kill()?;
    child.wait()?;
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

/// Builds a history of real dpkg lines from the corpus, repeated to the wanted size.
fn build_history(dir: &Path) -> anyhow::Result<PathBuf> {
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
    let history = dir.join("history.log");
    let mut out = std::io::BufWriter::new(File::create(&history)?);
    for line in lines.iter().cycle().take(HISTORY_LINES) {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(history)
}

fn replay_throughput(binary: &Path, dir: &Path) -> anyhow::Result<Vec<f64>> {
    let history = build_history(dir)?;
    // A history of a few hundred megabytes is exact in an f64.
    let bytes = f64::from(u32::try_from(fs::metadata(&history)?.len())?);
    println!(
        "replay history: {HISTORY_LINES} real lines, {:.1} MB",
        bytes / 1e6
    );
    let mut samples = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let status = Command::new(binary)
            .args(["replay", "--host", "bench", "--log-level", "error"])
            .arg(&history)
            .stdout(Stdio::null())
            .status()?;
        let seconds = start.elapsed().as_secs_f64();
        if !status.success() {
            bail!("replay failed with {status}");
        }
        samples.push(bytes / 1e6 / seconds);
    }
    Ok(samples)
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

fn steady_rss(binary: &Path, dir: &Path) -> anyhow::Result<Vec<f64>> {
    let log = dir.join("rss.log");
    File::create(&log)?;
    let (mut child, mut events) = start_sensor(binary, dir, &log)?;
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
            events.read_line(&mut line)?;
        }
        thread::sleep(Duration::from_millis(300));
        samples.push(rss_kb(child.id())?);
    }
    child.kill()?;
    child.wait()?;
    Ok(samples)
}
