//! `cargo xtask torture`: the real sensor against what a host does to its log and its outputs,
//! with every line counted.
//!
//! Each scenario runs `fenrir-sensor run` on a log of its own, writes lines that each make one
//! event (`remove torture-<scenario>-<n>`), and reads the JSON lines output back:
//!
//! - 100 rename-and-create rotations under a writer that, like dpkg, keeps writing the renamed
//!   file until it opens the log again;
//! - 100 copytruncate rotations under a writer that never reopens;
//! - `kill -9` of the sensor at random moments, and a restart, while the writer goes on;
//! - bursts of 10,000 lines;
//! - an output directory made read-only for a while (a bind mount), the sensor restarted into it;
//! - a journald (one of its own) killed while lines keep coming, and started again;
//! - a deleted log whose inode the new log reuses, with the sensor running and stopped.
//!
//! Counts per scenario: lines written, events delivered, lost (a line no event came for) and
//! duplicated (a line with more than one event). The process exits non-zero when any lost or
//! duplicated count is not 0. `--long` repeats everything ten times over.
//!
//! copytruncate cannot be followed without loss by any reader: a line written after logrotate
//! copied the file and before it truncated it is in no file afterwards. For that mode, `lost`
//! counts lines that the rotated copies or the live file hold and no event came for; the lines
//! in no file are shown on their own as `vanished` (and whether the sensor saw them anyway).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use fenrir_tests::private_journald::PrivateJournald;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a starting sensor may take to report `sensor ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the outputs may stay unchanged before the count is taken as final.
const SETTLE: Duration = Duration::from_secs(5);
/// The longest a scenario waits for its last events.
const DRAIN_TIMEOUT: Duration = Duration::from_mins(2);

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("fenrir-torture: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line: `[--long] [--seed N] [--only NAME]`.
struct Options {
    long: bool,
    seed: u64,
    only: Option<String>,
    binary: PathBuf,
}

fn options() -> anyhow::Result<Options> {
    let mut long = false;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--long" => long = true,
            "--short" => long = false,
            "--seed" => seed = args.next().context("--seed takes a number")?.parse()?,
            "--only" => only = Some(args.next().context("--only takes a scenario name")?),
            other => bail!("unknown argument {other}; use [--long] [--seed N] [--only NAME]"),
        }
    }
    let binary = match std::env::var_os("FENRIR_SENSOR_BIN") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .context("the torture binary has a directory")?
            .join("fenrir-sensor"),
    };
    if !binary.exists() {
        bail!("{} not found; set FENRIR_SENSOR_BIN", binary.display());
    }
    Ok(Options {
        long,
        seed,
        only,
        binary,
    })
}

fn run() -> anyhow::Result<bool> {
    let options = options()?;
    let scale = if options.long { 10 } else { 1 };
    println!(
        "fenrir torture ({}, seed {}) — {}",
        if options.long { "long" } else { "short" },
        options.seed,
        options.binary.display()
    );
    let mut rng = Rng(options.seed);
    let scenarios: Vec<(&str, Scenario)> = vec![
        (
            "rename",
            Box::new(move |t, r| rotations(t, r, Rotation::RenameCreate, 100 * scale)),
        ),
        (
            "copytruncate",
            Box::new(move |t, r| rotations(t, r, Rotation::CopyTruncate, 100 * scale)),
        ),
        ("kill", Box::new(move |t, r| kills(t, r, 10 * scale))),
        ("burst", Box::new(move |t, _| bursts(t, 3 * scale))),
        (
            "read-only",
            Box::new(move |t, _| read_only_output(t, scale)),
        ),
        ("journald", Box::new(move |t, _| killed_journald(t, scale))),
        ("inode-reuse", Box::new(move |t, _| inode_reuse(t, scale))),
    ];

    println!(
        "{:<30} {:>9} {:>10} {:>6} {:>11}  notes",
        "scenario", "written", "delivered", "lost", "duplicated"
    );
    let mut clean = true;
    for (name, scenario) in scenarios {
        if options.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let torture = Torture {
            binary: options.binary.clone(),
            tag: name.to_owned(),
        };
        match scenario(&torture, &mut rng) {
            Ok(Run::Done(outcomes)) => {
                for outcome in outcomes {
                    clean &= outcome.lost == 0 && outcome.duplicated == 0;
                    outcome.print();
                }
            }
            Ok(Run::Skipped(reason)) => println!("skipping: {name}: {reason}"),
            Err(err) => {
                clean = false;
                println!("{name:<30} failed: {err:#}");
            }
        }
    }
    println!(
        "torture {}: lost and duplicated must be 0",
        if clean { "passed" } else { "FAILED" }
    );
    Ok(clean)
}

type Scenario = Box<dyn Fn(&Torture, &mut Rng) -> anyhow::Result<Run>>;

/// What a scenario measured, or why it could not run here.
enum Run {
    Done(Vec<Outcome>),
    Skipped(String),
}

/// The counts of one scenario.
struct Outcome {
    scenario: String,
    written: usize,
    delivered: usize,
    lost: usize,
    duplicated: usize,
    note: String,
    /// A few of the lines lost or repeated, to start looking from.
    examples: String,
}

impl Outcome {
    /// Counts `counts` (events per line) against the lines `expected` to have an event.
    fn tally(scenario: String, written: usize, expected: &BTreeSet<u64>, counts: &Counts) -> Self {
        let lost = expected
            .iter()
            .filter(|seq| !counts.events.contains_key(seq))
            .count();
        let duplicated = counts.events.values().filter(|&&n| n > 1).count();
        let mut examples = String::new();
        let lost_lines: Vec<&u64> = expected
            .iter()
            .filter(|seq| !counts.events.contains_key(seq))
            .take(5)
            .collect();
        if !lost_lines.is_empty() {
            let _ = write!(examples, "lost lines {lost_lines:?} ");
        }
        let mut repeated: Vec<&u64> = counts
            .events
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(seq, _)| seq)
            .collect();
        repeated.sort();
        repeated.truncate(5);
        if !repeated.is_empty() {
            let _ = write!(examples, "repeated lines {repeated:?}");
        }
        Self {
            scenario,
            written,
            delivered: counts.events.len(),
            lost,
            duplicated,
            note: String::new(),
            examples,
        }
    }

    fn with_note(mut self, note: String) -> Self {
        self.note = note;
        self
    }

    fn print(&self) {
        println!(
            "{:<30} {:>9} {:>10} {:>6} {:>11}  {}",
            self.scenario, self.written, self.delivered, self.lost, self.duplicated, self.note
        );
        if !self.examples.is_empty() {
            println!("{:<30} {}", "", self.examples);
        }
    }
}

/// A small xorshift generator: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration uniformly in `low..high`.
    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_micros().max(1) as u64;
        low + Duration::from_micros(self.next() % span)
    }
}

/// What every scenario shares: the sensor binary and the scenario's name.
struct Torture {
    binary: PathBuf,
    tag: String,
}

/// One scenario's files: log, state, output.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new(tag: &str) -> anyhow::Result<Self> {
        // On the root file system, not a tmpfs: ext4 reuses freed inodes, tmpfs does not.
        let dir = tempfile::Builder::new()
            .prefix(&format!("fenrir-torture-{tag}-"))
            .tempdir_in("/var/tmp")?;
        for sub in ["log", "out", "admin"] {
            fs::create_dir(dir.path().join(sub))?;
        }
        Ok(Self { dir })
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log/dpkg.log")
    }

    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn out(&self) -> PathBuf {
        self.out_dir().join("events.jsonl")
    }
}

/// A running sensor; killed when dropped.
struct Sensor {
    child: Child,
}

impl Sensor {
    fn start(torture: &Torture, work: &Work, extra: &[String]) -> anyhow::Result<Self> {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(work.dir.path().join("sensor.stderr"))?;
        let mut command = Command::new(&torture.binary);
        command
            .args([
                "run",
                "--no-ebpf",
                "--no-ssh",
                "--from-start",
                "--host",
                "torture",
            ])
            .args(["--log-level", "info"])
            .arg("--dpkg-log")
            .arg(work.log())
            .arg("--dpkg-admindir")
            .arg(work.dir.path().join("admin"))
            .arg("--state-dir")
            .arg(work.dir.path().join("state"))
            .arg("--json")
            .arg(work.out());
        if !extra.iter().any(|a| a == "--journald-socket") {
            command.arg("--no-journald");
        }
        let mut child = command
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start fenrir-sensor")?;
        let pipe = child.stderr.take().context("stderr is piped")?;
        let (ready_tx, ready) = mpsc::channel();
        thread::spawn(move || {
            let mut stderr = stderr;
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("sensor ready") {
                    let _ = ready_tx.send(());
                }
                let _ = writeln!(stderr, "{line}");
            }
        });
        if ready.recv_timeout(READY_TIMEOUT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the sensor never became ready; see {}",
                work.dir.path().join("sensor.stderr").display()
            );
        }
        Ok(Self { child })
    }

    fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, Signal::SIGTERM)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the sensor exited with {status} on SIGTERM");
        }
        Ok(())
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A dpkg line that makes exactly one event and leaves nothing pending.
fn line(tag: &str, seq: u64) -> String {
    format!("2026-05-03 14:32:11 remove torture-{tag}-{seq}:amd64 1.{seq}-1 <none>\n")
}

/// The line number a package name carries, when it is one of `tag`'s.
fn seq_of(tag: &str, package: &str) -> Option<u64> {
    package
        .strip_prefix("torture-")?
        .strip_prefix(tag)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// How many output lines that are not events of written lines a failure shows.
const MALFORMED_EXAMPLES: usize = 3;

/// Events per line, read from an output as it grows.
#[derive(Default)]
struct Counts {
    events: HashMap<u64, usize>,
    malformed: usize,
    /// The first few output lines that were not an event of a written line, for the report.
    malformed_examples: Vec<String>,
}

/// Reads a JSON lines output incrementally.
struct OutputReader {
    path: PathBuf,
    tag: String,
    offset: u64,
    partial: Vec<u8>,
    counts: Counts,
}

impl OutputReader {
    fn new(path: PathBuf, tag: &str) -> Self {
        Self {
            path,
            tag: tag.to_owned(),
            offset: 0,
            partial: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn refresh(&mut self) -> anyhow::Result<()> {
        let Ok(mut file) = File::open(&self.path) else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        self.offset += file.read_to_end(&mut bytes)? as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for raw in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let seq = serde_json::from_slice::<Value>(raw).ok().and_then(|event| {
                event["parsed_data"]["package"]
                    .as_str()
                    .and_then(|p| seq_of(&self.tag, p))
            });
            if let Some(seq) = seq {
                *self.counts.events.entry(seq).or_default() += 1;
                continue;
            }
            self.counts.malformed += 1;
            if self.counts.malformed_examples.len() < MALFORMED_EXAMPLES {
                let text = String::from_utf8_lossy(raw);
                let text: String = text.chars().take(600).collect();
                self.counts
                    .malformed_examples
                    .push(text.escape_debug().to_string());
            }
        }
        Ok(())
    }

    /// Waits until every line of `expected` has an event, or the output stops growing.
    fn settle(&mut self, expected: &BTreeSet<u64>) -> anyhow::Result<&Counts> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut last_change = Instant::now();
        let mut seen = usize::MAX;
        loop {
            self.refresh()?;
            let total: usize = self.counts.events.values().sum();
            if total != seen {
                seen = total;
                last_change = Instant::now();
            }
            let complete = expected.iter().all(|s| self.counts.events.contains_key(s));
            // A last look a moment later catches duplicates that trail the last new event.
            if (complete && last_change.elapsed() > Duration::from_millis(500))
                || last_change.elapsed() > SETTLE
                || Instant::now() > deadline
            {
                return Ok(&self.counts);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes lines on a thread of its own: to an open handle, reopened when asked (as dpkg
/// opens the log at the start of each run).
struct Writer {
    stop: Arc<AtomicBool>,
    reopen_at: Arc<Mutex<Option<Instant>>>,
    thread: JoinHandle<anyhow::Result<u64>>,
}

impl Writer {
    fn spawn(path: PathBuf, tag: String, first: u64, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reopen_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (stop_flag, reopen) = (Arc::clone(&stop), Arc::clone(&reopen_at));
        let thread = thread::spawn(move || -> anyhow::Result<u64> {
            let open = |path: &Path| OpenOptions::new().create(true).append(true).open(path);
            let mut file = open(&path)?;
            let mut seq = first;
            while !stop_flag.load(Ordering::Relaxed) {
                // One write per line, on an O_APPEND handle, as dpkg writes its log.
                file.write_all(line(&tag, seq).as_bytes())?;
                seq += 1;
                let due = reopen
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .take_if(|at| *at <= Instant::now());
                if due.is_some() {
                    file = open(&path)?;
                }
                thread::sleep(pace);
            }
            Ok(seq)
        });
        Self {
            stop,
            reopen_at,
            thread,
        }
    }

    fn reopen_at(&self, at: Instant) {
        if let Ok(mut slot) = self.reopen_at.lock() {
            *slot = Some(at);
        }
    }

    /// Stops the writer and returns the number after the last line it wrote.
    fn finish(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))?
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rotation {
    RenameCreate,
    CopyTruncate,
}

/// Rotates the log `count` times under a running writer.
fn rotations(
    torture: &Torture,
    rng: &mut Rng,
    mode: Rotation,
    count: usize,
) -> anyhow::Result<Run> {
    let work = Work::new(&torture.tag)?;
    let log = work.log();
    File::create(&log)?;
    let sensor = Sensor::start(torture, &work, &[])?;
    let writer = Writer::spawn(
        log.clone(),
        torture.tag.clone(),
        0,
        Duration::from_micros(300),
    );

    let period = Duration::from_millis(40);
    for n in 1..=count {
        thread::sleep(rng.between(period / 2, period * 3 / 2));
        let rotated = log.with_file_name(format!("dpkg.log.{n}"));
        match mode {
            Rotation::RenameCreate => {
                fs::rename(&log, &rotated)?;
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&log)?;
                // The run that had the log open ends a little later, well before the next
                // rotation, as every dpkg run does; the tailer drains one rotated file at a time.
                writer.reopen_at(Instant::now() + rng.between(Duration::ZERO, period / 4));
            }
            Rotation::CopyTruncate => {
                fs::copy(&log, &rotated)?;
                OpenOptions::new().write(true).open(&log)?.set_len(0)?;
            }
        }
    }
    thread::sleep(period);
    let end = writer.finish()?;
    let written: BTreeSet<u64> = (0..end).collect();

    let mut output = OutputReader::new(work.out(), &torture.tag);
    let name = match mode {
        Rotation::RenameCreate => format!("rename+create ×{count}"),
        Rotation::CopyTruncate => format!("copytruncate ×{count}"),
    };
    let outcome = if mode == Rotation::RenameCreate {
        let counts = output.settle(&written)?;
        let note =
            format!("{count} rotations; the writer kept the renamed file open until it reopened");
        Outcome::tally(name, written.len(), &written, counts).with_note(note)
    } else {
        // What the files hold is what any reader could have read.
        let mut held = BTreeSet::new();
        for n in 0..=count {
            let path = if n == 0 {
                log.clone()
            } else {
                log.with_file_name(format!("dpkg.log.{n}"))
            };
            // A copy taken in the middle of a write may end in a partial line: not a line.
            let text = fs::read_to_string(&path)?;
            let whole = text.rfind('\n').map_or("", |end| &text[..end]);
            for raw in whole.lines() {
                let package = raw.split(' ').nth(3).unwrap_or_default();
                let package = package.split(':').next().unwrap_or_default();
                if let Some(seq) = seq_of(&torture.tag, package) {
                    held.insert(seq);
                }
            }
        }
        let counts = output.settle(&held)?;
        let vanished: Vec<u64> = written.difference(&held).copied().collect();
        let seen = vanished
            .iter()
            .filter(|s| counts.events.contains_key(s))
            .count();
        let note = format!(
            "lost counts lines in a copy or the live file; {} vanished between copy and \
             truncate (in no file), {seen} of them reported anyway",
            vanished.len()
        );
        Outcome::tally(name, written.len(), &held, counts).with_note(note)
    };
    check_malformed(&output)?;
    drop(sensor);
    Ok(Run::Done(vec![outcome]))
}

fn check_malformed(output: &OutputReader) -> anyhow::Result<()> {
    if output.counts.malformed > 0 {
        bail!(
            "{} lines of the output are not whole events; the first:\n{}",
            output.counts.malformed,
            output.counts.malformed_examples.join("\n")
        );
    }
    Ok(())
}

/// Kills the sensor with SIGKILL `count` times while the writer goes on.
fn kills(torture: &Torture, rng: &mut Rng, count: usize) -> anyhow::Result<Run> {
    let work = Work::new(&torture.tag)?;
    File::create(work.log())?;
    let mut sensor = Sensor::start(torture, &work, &[])?;
    let writer = Writer::spawn(
        work.log(),
        torture.tag.clone(),
        0,
        Duration::from_micros(500),
    );
    for _ in 0..count {
        thread::sleep(rng.between(Duration::from_millis(100), Duration::from_millis(700)));
        sensor.kill9()?;
        sensor = Sensor::start(torture, &work, &[])?;
    }
    thread::sleep(Duration::from_millis(200));
    let end = writer.finish()?;
    let written: BTreeSet<u64> = (0..end).collect();
    let mut output = OutputReader::new(work.out(), &torture.tag);
    let outcome = Outcome::tally(
        format!("kill -9 and restart ×{count}"),
        written.len(),
        &written,
        output.settle(&written)?,
    )
    .with_note("killed at random moments while lines kept coming".to_owned());
    check_malformed(&output)?;
    drop(sensor);
    Ok(Run::Done(vec![outcome]))
}

/// Writes `count` bursts of 10,000 lines as fast as the disk takes them.
fn bursts(torture: &Torture, count: usize) -> anyhow::Result<Run> {
    const BURST: u64 = 10_000;
    let work = Work::new(&torture.tag)?;
    File::create(work.log())?;
    let sensor = Sensor::start(torture, &work, &[])?;
    let mut file = OpenOptions::new().append(true).open(work.log())?;
    let mut output = OutputReader::new(work.out(), &torture.tag);
    let mut written = BTreeSet::new();
    let mut slowest = Duration::ZERO;
    for burst in 0..count as u64 {
        let start = Instant::now();
        for seq in burst * BURST..(burst + 1) * BURST {
            file.write_all(line(&torture.tag, seq).as_bytes())?;
            written.insert(seq);
        }
        output.settle(&written)?;
        slowest = slowest.max(start.elapsed());
    }
    let outcome = Outcome::tally(
        format!("10,000-line bursts ×{count}"),
        written.len(),
        &written,
        &output.counts,
    )
    .with_note(format!(
        "slowest burst delivered in {:.2} s",
        slowest.as_secs_f64()
    ));
    check_malformed(&output)?;
    drop(sensor);
    Ok(Run::Done(vec![outcome]))
}

/// Makes `dir` read-only through a bind mount of itself, until dropped.
struct ReadOnly {
    dir: PathBuf,
}

impl ReadOnly {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .context("failed to bind the output directory")?;
        let guard = Self {
            dir: dir.to_path_buf(),
        };
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .context("failed to make the output directory read-only")?;
        Ok(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
    }
}

/// Restarts the sensor into a read-only output directory while lines keep coming.
fn read_only_output(torture: &Torture, rounds: usize) -> anyhow::Result<Run> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(Run::Skipped("a read-only bind mount needs root".to_owned()));
    }
    let work = Work::new(&torture.tag)?;
    File::create(work.log())?;
    let mut output = OutputReader::new(work.out(), &torture.tag);
    let mut written = BTreeSet::new();
    let mut seq = 0;
    let mut write = |count: u64, written: &mut BTreeSet<u64>| -> anyhow::Result<()> {
        let mut file = OpenOptions::new().append(true).open(work.log())?;
        for _ in 0..count {
            file.write_all(line(&torture.tag, seq).as_bytes())?;
            written.insert(seq);
            seq += 1;
        }
        Ok(())
    };

    let mut sensor = Sensor::start(torture, &work, &[])?;
    let mut held_lines = 0;
    for _ in 0..rounds {
        write(500, &mut written)?;
        output.settle(&written)?;
        sensor.stop()?;

        let read_only = ReadOnly::new(&work.out_dir())?;
        sensor = Sensor::start(torture, &work, &[])?;
        let before: usize = {
            output.refresh()?;
            output.counts.events.values().sum()
        };
        write(500, &mut written)?;
        thread::sleep(Duration::from_secs(3));
        output.refresh()?;
        let during: usize = output.counts.events.values().sum();
        if during != before {
            bail!("events were written into a read-only directory");
        }
        if !sensor.is_running() {
            bail!("the sensor stopped when its output became read-only");
        }
        held_lines += 500;
        drop(read_only);
        write(500, &mut written)?;
        output.settle(&written)?;
    }
    let outcome = Outcome::tally(
        format!("read-only output dir ×{rounds}"),
        written.len(),
        &written,
        &output.counts,
    )
    .with_note(format!(
        "{held_lines} lines held in the log for 3 s each time, then delivered"
    ));
    check_malformed(&output)?;
    drop(sensor);
    Ok(Run::Done(vec![outcome]))
}

/// Kills the scenario's own journald while lines keep coming, and starts it again.
fn killed_journald(torture: &Torture, rounds: usize) -> anyhow::Result<Run> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(Run::Skipped("a journald of its own needs root".to_owned()));
    }
    if !Path::new(fenrir_tests::journald::JOURNALD_BINARY).exists() {
        return Ok(Run::Skipped("systemd-journald is not installed".to_owned()));
    }
    let work = Work::new(&torture.tag)?;
    File::create(work.log())?;
    let mut journald = PrivateJournald::start(&work.dir.path().join("journald"))?;
    let socket = journald.socket().display().to_string();
    let sensor = Sensor::start(torture, &work, &["--journald-socket".to_owned(), socket])?;
    let mut output = OutputReader::new(work.out(), &torture.tag);
    let mut written = BTreeSet::new();
    let mut seq = 0;
    let mut write = |count: u64, written: &mut BTreeSet<u64>| -> anyhow::Result<()> {
        let mut file = OpenOptions::new().append(true).open(work.log())?;
        for _ in 0..count {
            file.write_all(line(&torture.tag, seq).as_bytes())?;
            written.insert(seq);
            seq += 1;
            thread::sleep(Duration::from_micros(500));
        }
        Ok(())
    };

    for _ in 0..rounds {
        write(300, &mut written)?;
        output.settle(&written)?;
        wait_for_journal(&journald, &torture.tag, written.len())?;
        // Quiet at this instant: nothing is in journald's socket queue to die with it.
        journald.kill()?;
        write(300, &mut written)?;
        journald.restart()?;
        write(300, &mut written)?;
    }
    output.settle(&written)?;
    let journal = wait_for_journal(&journald, &torture.tag, written.len())?;
    let json = Outcome::tally(
        format!("journald killed ×{rounds}: json"),
        written.len(),
        &written,
        &output.counts,
    )
    .with_note("the file output went on throughout".to_owned());
    let journal = Outcome::tally(
        format!("journald killed ×{rounds}: journal"),
        written.len(),
        &written,
        &journal,
    )
    .with_note("a third of the lines came while journald was dead".to_owned());
    check_malformed(&output)?;
    drop(sensor);
    Ok(Run::Done(vec![json, journal]))
}

/// Waits until the private journal holds `count` of `tag`'s events, or stops growing.
fn wait_for_journal(journald: &PrivateJournald, tag: &str, count: usize) -> anyhow::Result<Counts> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut last_change = Instant::now();
    let mut seen = 0;
    loop {
        let mut counts = Counts::default();
        for entry in journald.entries(&["FENRIR_HOST=torture".to_owned()])? {
            match entry
                .get("FENRIR_PACKAGE")
                .and_then(Value::as_str)
                .and_then(|p| seq_of(tag, p))
            {
                Some(seq) => *counts.events.entry(seq).or_default() += 1,
                None => counts.malformed += 1,
            }
        }
        let total: usize = counts.events.values().sum();
        if total != seen {
            seen = total;
            last_change = Instant::now();
        }
        if counts.events.len() >= count
            || last_change.elapsed() > SETTLE * 2
            || Instant::now() > deadline
        {
            return Ok(counts);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes the log and creates a new one, with the sensor running (its open handle keeps the
/// old inode in use) and with it stopped, where the new log can get the old log's inode and
/// the checkpoint's inode then names another file.
fn inode_reuse(torture: &Torture, rounds: usize) -> anyhow::Result<Run> {
    let work = Work::new(&torture.tag)?;
    let log = work.log();
    File::create(&log)?;
    let mut output = OutputReader::new(work.out(), &torture.tag);
    let mut written = BTreeSet::new();
    let mut seq = 0;
    let mut write = |count: u64, written: &mut BTreeSet<u64>| -> anyhow::Result<()> {
        let mut file = OpenOptions::new().append(true).create(true).open(&log)?;
        for _ in 0..count {
            file.write_all(line(&torture.tag, seq).as_bytes())?;
            written.insert(seq);
            seq += 1;
        }
        Ok(())
    };
    let mut reused = 0;
    let mut stopped = 0;

    let mut sensor = Sensor::start(torture, &work, &[])?;
    for _ in 0..rounds * 4 {
        // Running: delete and create a new log.
        write(200, &mut written)?;
        output.settle(&written)?;
        fs::remove_file(work.log())?;
        write(200, &mut written)?;
        output.settle(&written)?;

        // Stopped: the new log on the old inode, with other lines, found at the next start.
        sensor.stop()?;
        let old = fs::metadata(work.log())?.ino();
        stopped += 1;
        if recreate_on_inode(&work.log(), old)? {
            reused += 1;
        }
        write(200, &mut written)?;
        sensor = Sensor::start(torture, &work, &[])?;
        output.settle(&written)?;
    }
    let outcome = Outcome::tally(
        format!("deleted log, inode reuse ×{stopped}"),
        written.len(),
        &written,
        &output.counts,
    )
    .with_note(format!(
        "{stopped} deletions while running, {stopped} while stopped; the new log had the \
         deleted log's inode {reused} of {stopped} times"
    ));
    check_malformed(&output)?;
    drop(sensor);
    Ok(Run::Done(vec![outcome]))
}

/// Deletes `path` and creates it again on inode `ino`: ext4 hands out the lowest free inode
/// first, so spare files take the free inodes below it until one gets it; returns whether
/// one did.
fn recreate_on_inode(path: &Path, ino: u64) -> anyhow::Result<bool> {
    fs::remove_file(path)?;
    let spares = path.with_file_name("spares");
    fs::create_dir_all(&spares)?;
    let mut found = false;
    for n in 0..20_000 {
        let spare = spares.join(n.to_string());
        File::create(&spare)?;
        if fs::metadata(&spare)?.ino() == ino {
            fs::rename(&spare, path)?;
            found = true;
            break;
        }
    }
    fs::remove_dir_all(&spares)?;
    if !found {
        File::create(path)?;
    }
    Ok(found)
}
