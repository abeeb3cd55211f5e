//! Fuzzes the sensor's parsers with libFuzzer through cargo-fuzz.
//!
//! In: the workspace root, the inputs to run per target and the real logs of the shared
//! corpus beside the checkout; out: one `inputs` line per target and a failure when a target
//! panics. State: `target/fuzz-tools` (cargo-fuzz, built from crates.io once),
//! `target/fuzz-build` (the instrumented build) and `target/fuzz-corpus/<target>` (the corpus,
//! seeded from the real logs and kept between runs so that a long run starts where the last
//! one left off). Crashes land in `fenrir-sensor/fuzz/artifacts/<target>/`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _};

/// The cargo-fuzz release that builds with the pinned toolchains.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every fuzz target of `fenrir-sensor/fuzz`, with the longest input each is given.
pub const TARGETS: &[(&str, usize)] = &[
    ("dpkg_line", 4096),
    ("dpkg_log", 65536),
    ("apt_history", 65536),
    ("manager_log", 65536),
    ("config", 16384),
    ("version_order", 1024),
];

/// Seeds at most this many inputs of one kind, spread over the corpus.
const MAX_SEEDS: usize = 3000;

/// Lines of a real log in one seed of a whole-log target.
const LINES_PER_SEED: usize = 120;

/// Builds the fuzz targets and runs each one for `inputs` inputs, `only` naming one target.
pub fn fuzz(root: &Path, inputs: u64, only: Option<&str>) -> anyhow::Result<()> {
    let targets: Vec<(&str, usize)> = TARGETS
        .iter()
        .copied()
        .filter(|(name, _)| only.is_none_or(|wanted| wanted == *name))
        .collect();
    if targets.is_empty() {
        let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
        bail!("no fuzz target named {only:?}; the targets are {names:?}");
    }
    let cargo_fuzz = ensure_cargo_fuzz(root)?;
    let corpus_root = shared_corpus(root)?;
    let fuzz_dir = root.join("fenrir-sensor/fuzz");
    let build_dir = root.join("target/fuzz-build");

    // libFuzzer's coverage instrumentation; panics are what the targets check for, and the
    // parsers are safe Rust, so no sanitizer slows the inputs down.
    let mut build = fuzz_command(&cargo_fuzz, &fuzz_dir, "build", &build_dir);
    crate::run_checked(&mut build)?;

    let mut total = 0_u64;
    for (name, max_len) in targets {
        let corpus = root.join("target/fuzz-corpus").join(name);
        let seeds = seed_corpus(name, &corpus_root, root, &corpus)?;
        let runs = run_target(
            &cargo_fuzz,
            &fuzz_dir,
            &build_dir,
            name,
            max_len,
            &corpus,
            inputs,
        )?;
        println!("fuzz {name}: {runs} inputs, no failure (corpus seeded with {seeds} real inputs)");
        total += runs;
    }
    println!("fuzz: {total} inputs in all, no failure");
    Ok(())
}

/// Installs cargo-fuzz under `target/fuzz-tools` unless it is there; returns its binary.
fn ensure_cargo_fuzz(root: &Path) -> anyhow::Result<PathBuf> {
    let tools = root.join("target/fuzz-tools");
    let binary = tools.join("bin/cargo-fuzz");
    if binary.is_file() {
        return Ok(binary);
    }
    let mut install = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    install
        .args(["install", "--locked", "--root"])
        .arg(&tools)
        .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"));
    crate::run_checked(&mut install)?;
    Ok(binary)
}

/// The real logs shared beside the checkout.
fn shared_corpus(root: &Path) -> anyhow::Result<PathBuf> {
    let corpus = root.join("../shared/corpus");
    if !corpus.join("dpkg").is_dir() {
        bail!(
            "no corpus of real logs at {}; the fuzz corpus is seeded from it",
            corpus.display()
        );
    }
    Ok(corpus)
}

/// `cargo fuzz <verb>` for the sensor's fuzz crate with the nightly toolchain.
fn fuzz_command(cargo_fuzz: &Path, fuzz_dir: &Path, verb: &str, build_dir: &Path) -> Command {
    let mut command = crate::ebpf::nightly_command(&cargo_fuzz.to_string_lossy());
    command
        .arg("fuzz")
        .arg(verb)
        .args(["--sanitizer", "none", "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg("--target-dir")
        .arg(build_dir)
        .current_dir(fuzz_dir.parent().unwrap_or(fuzz_dir));
    command
}

/// Runs one target and returns the inputs libFuzzer reports it ran.
fn run_target(
    cargo_fuzz: &Path,
    fuzz_dir: &Path,
    build_dir: &Path,
    name: &str,
    max_len: usize,
    corpus: &Path,
    inputs: u64,
) -> anyhow::Result<u64> {
    let mut command = fuzz_command(cargo_fuzz, fuzz_dir, "run", build_dir);
    command
        .arg(name)
        .arg(corpus)
        .arg("--")
        .arg(format!("-runs={inputs}"))
        .arg(format!("-max_len={max_len}"))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    println!("xtask: fuzzing {name} for {inputs} inputs");
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start cargo fuzz run {name}"))?;

    // libFuzzer reports on stderr; its periodic lines are kept short, a failure in full.
    let mut runs = None;
    let mut tail = Vec::new();
    let stderr = child.stderr.take().context("stderr is piped")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        if let Some(count) = line
            .strip_prefix("Done ")
            .and_then(|rest| rest.split_whitespace().next())
        {
            runs = count.parse::<u64>().ok();
        }
        if line.contains(" pulse ") || line.starts_with("Done ") {
            println!("  {name}: {line}");
        }
        tail.push(line);
        if tail.len() > 200 {
            tail.drain(..100);
        }
    }
    let status = child.wait().context("failed to wait for cargo fuzz")?;
    if !status.success() {
        for line in &tail {
            eprintln!("  {name}: {line}");
        }
        bail!("fuzz target {name} failed with {status}; the input is in fuzz/artifacts/{name}/");
    }
    let runs = runs.with_context(|| format!("libFuzzer reported no run count for {name}"))?;
    println!(
        "  {name}: {runs} inputs in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(runs)
}

/// Writes the seeds of `target` into `corpus` (once per seed: a seed's name is its content's
/// hash) and returns how many seeds the target has.
fn seed_corpus(target: &str, shared: &Path, root: &Path, corpus: &Path) -> anyhow::Result<usize> {
    fs::create_dir_all(corpus).with_context(|| format!("failed to create {}", corpus.display()))?;
    let seeds = match target {
        "dpkg_line" => unique_lines(&files_in(&shared.join("dpkg"))?)?,
        "dpkg_log" => windows(&files_in(&shared.join("dpkg"))?)?,
        "apt_history" => windows(&files_in(&shared.join("other/apt_history"))?)?,
        "manager_log" => manager_seeds(shared)?,
        "config" => config_seeds(root)?,
        "version_order" => version_pairs(&files_in(&shared.join("dpkg"))?)?,
        other => bail!("no seeds for fuzz target {other}"),
    };
    for seed in &seeds {
        let path = corpus.join(format!("seed-{:016x}", fingerprint(seed)));
        if !path.exists() {
            fs::write(&path, seed)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
    }
    Ok(seeds.len())
}

/// The log files of a corpus folder, sorted; its `SOURCES.tsv` is not a log.
fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && !path.ends_with("SOURCES.tsv"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every distinct line of the files, at most `MAX_SEEDS` spread evenly over them.
fn unique_lines(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut lines = BTreeSet::new();
    for file in files {
        let text = fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    Ok(spread(lines.into_iter().collect()))
}

/// Consecutive runs of `LINES_PER_SEED` lines of each file.
fn windows(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut seeds = Vec::new();
    for file in files {
        let text = fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
        let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        seeds.extend(lines.chunks(LINES_PER_SEED).map(<[&[u8]]>::concat));
    }
    Ok(spread(seeds))
}

/// A manager's name on the first line, then a window of one of its real logs.
fn manager_seeds(shared: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut seeds = Vec::new();
    for manager in ["dnf", "yum", "zypper", "pacman", "apk"] {
        for mut window in windows(&files_in(&shared.join("other").join(manager))?)? {
            let mut seed = format!("{manager}\n").into_bytes();
            seed.append(&mut window);
            seeds.push(seed);
        }
    }
    Ok(spread(seeds))
}

/// The packaged configuration and every TOML example of the README.
fn config_seeds(root: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let packaged = root.join("fenrir-sensor/dist/fenrir.toml");
    let mut seeds =
        vec![fs::read(&packaged)
            .with_context(|| format!("failed to read {}", packaged.display()))?];
    let readme = fs::read_to_string(root.join("README.md")).context("failed to read README.md")?;
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (&mut block, line.trim_start()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(text), "```") => {
                seeds.push(std::mem::take(text).into_bytes());
                block = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    Ok(seeds)
}

/// The old and new versions of the corpus's upgrades, joined by a NUL as the target splits
/// them.
fn version_pairs(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut pairs = BTreeSet::new();
    for file in files {
        let text = fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
        for line in String::from_utf8_lossy(&text).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [_, _, "upgrade", _, old, new, ..] = fields.as_slice() {
                pairs.insert(format!("{old}\0{new}").into_bytes());
            }
        }
    }
    Ok(spread(pairs.into_iter().collect()))
}

/// At most `MAX_SEEDS` of `items`, taken at even steps so every file is represented.
fn spread(items: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    if items.len() <= MAX_SEEDS {
        return items;
    }
    let step = items.len().div_ceil(MAX_SEEDS);
    items.into_iter().step_by(step).collect()
}

/// FNV-1a of a seed: a stable name, so a seed is written once however often runs seed.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
