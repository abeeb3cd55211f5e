//! `fenrir-sensor replay` on real logs from public systems: a rotated set with `.gz` and `.xz`
//! members given in any order, local time zones, and input that is not a dpkg log at all.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context as _;
use fenrir_tests::sensor::binary;
use serde_json::Value;

/// The three rotations of one real host's dpkg.log, newest first.
fn corpus_set() -> Option<[PathBuf; 3]> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/dpkg");
    let base = dir.join("PhoenixYanrongLi__ServerLog__dpkg.log");
    if !base.exists() {
        println!("skipping: the dpkg corpus is not at {}", dir.display());
        return None;
    }
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", base.display()));
    Some([base.clone(), rotated(1), rotated(2)])
}

fn replay(args: &[&Path], tz: &str) -> anyhow::Result<Output> {
    Command::new(binary()?)
        .arg("replay")
        .args(["--host", "replay-host", "--log-level", "error"])
        .args(args)
        .env("TZ", tz)
        .output()
        .context("failed to run fenrir-sensor replay")
}

fn events(output: &Output) -> anyhow::Result<Vec<Value>> {
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())?
        .lines()
        .map(|line| serde_json::from_str(line).context("replay printed a line that is not JSON"))
        .collect()
}

#[test]
fn rotated_set_in_any_order_replays_oldest_first() -> anyhow::Result<()> {
    let Some([current, first, second]) = corpus_set() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;

    // logrotate compresses older rotations, with gzip or the `compresscmd` it is given (xz
    // here); the replay must read them whatever their name.
    let compress = |source: &Path, rotated: &str, program: &str| -> anyhow::Result<PathBuf> {
        let plain = dir.path().join(rotated);
        fs::copy(source, &plain)?;
        let status = Command::new(program).arg(&plain).status()?;
        let suffix = if program == "gzip" { "gz" } else { "xz" };
        let compressed = dir.path().join(format!("{rotated}.{suffix}"));
        anyhow::ensure!(status.success() && compressed.exists(), "{program} failed");
        Ok(compressed)
    };
    let gz = compress(&second, "dpkg.log.2", "gzip")?;
    let xz = compress(&first, "dpkg.log.1", "xz")?;

    let shuffled = events(&replay(&[&current, &gz, &xz], "UTC")?)?;

    // The same history as one plain file, oldest first, is the reference.
    let joined = dir.path().join("joined.log");
    let mut text = fs::read(&second)?;
    text.extend(fs::read(&first)?);
    text.extend(fs::read(&current)?);
    fs::write(&joined, text)?;
    let reference = events(&replay(&[&joined], "UTC")?)?;
    assert_eq!(shuffled.len(), reference.len());
    for (a, b) in shuffled.iter().zip(&reference) {
        assert_eq!(a["raw_line"], b["raw_line"]);
        assert_eq!(a["category"], b["category"]);
    }

    // Oldest first: timestamps never go back.
    let stamps: Vec<&str> = shuffled
        .iter()
        .filter_map(|e| e["parsed_data"]["timestamp"].as_str())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "events out of order"
    );

    // Every package action line of the three files is one event, counted independently.
    let mut actions = 0;
    for path in [&second, &first, &current] {
        for line in fs::read_to_string(path)?.lines() {
            let word = line.split(' ').nth(2).unwrap_or_default();
            if matches!(
                word,
                "install" | "upgrade" | "remove" | "purge" | "disappear"
            ) {
                actions += 1;
            }
        }
    }
    let changes = shuffled
        .iter()
        .filter(|e| e["category"] != "package_install_failed")
        .count();
    assert_eq!(changes, actions);
    Ok(())
}

#[test]
fn timestamps_carry_the_local_offset_of_their_date() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("dpkg.log");
    fs::write(
        &log,
        "2026-01-15 10:00:00 remove a:amd64 1.0 <none>\n2026-07-15 10:00:00 remove b:amd64 1.0 <none>\n",
    )?;
    let stamp = |events: &[Value], i: usize| {
        events[i]["parsed_data"]["timestamp"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let new_york = events(&replay(&[&log], "America/New_York")?)?;
    assert_eq!(stamp(&new_york, 0), "2026-01-15T10:00:00-05:00");
    assert_eq!(stamp(&new_york, 1), "2026-07-15T10:00:00-04:00");

    let utc = events(&replay(&[&log], "UTC")?)?;
    assert_eq!(stamp(&utc, 0), "2026-01-15T10:00:00+00:00");
    Ok(())
}

#[test]
fn input_that_is_not_a_log_yields_nothing_and_no_panic() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut garbage = fs::read("/bin/true")?;
    garbage.extend_from_slice(b"\n\xff\xfe invalid utf-8\n");
    garbage.extend(vec![b'y'; 2_000_000]);
    garbage.extend_from_slice(b"\n2026-05-03 14:32:11 remove vim:amd64 2:9.0 <none>\n");
    let path = dir.path().join("garbage.log");
    fs::write(&path, garbage)?;

    let found = events(&replay(&[&path], "UTC")?)?;
    assert_eq!(
        found.len(),
        1,
        "only the one real line is an event: {found:#?}"
    );
    assert_eq!(found[0]["parsed_data"]["package"], "vim");

    let missing = replay(&[&dir.path().join("absent.log")], "UTC")?;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("absent.log"), "{stderr}");
    Ok(())
}

/// The corpus's history logs of one host, or `None` (with a skip line) when absent.
fn corpus_history(host: &str, suffixes: &[&str]) -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/other/apt_history");
    let files: Vec<PathBuf> = suffixes
        .iter()
        .map(|suffix| dir.join(format!("{host}__apt__history.log{suffix}")))
        .collect();
    if files.iter().all(|f| f.exists()) {
        Some(files)
    } else {
        println!(
            "skipping: the apt history corpus is not at {}",
            dir.display()
        );
        None
    }
}

/// One apt run as this test reads it, independently of Fenrir's parser.
struct AptRun {
    start: String,
    end: Option<String>,
    /// `name` and `arch` of every package the run lists, whatever the action.
    packages: Vec<(String, Option<String>)>,
}

fn apt_runs(files: &[PathBuf]) -> anyhow::Result<Vec<AptRun>> {
    let mut runs: Vec<AptRun> = Vec::new();
    for file in files {
        for line in fs::read_to_string(file)?.lines() {
            let Some((field, value)) = line.split_once(": ") else {
                continue;
            };
            let date = || value.split_whitespace().collect::<Vec<_>>().join(" ");
            match field {
                "Start-Date" => runs.push(AptRun {
                    start: date(),
                    end: None,
                    packages: Vec::new(),
                }),
                "End-Date" => {
                    if let Some(run) = runs.last_mut() {
                        run.end = Some(date());
                    }
                }
                "Install" | "Upgrade" | "Downgrade" | "Reinstall" | "Remove" | "Purge" => {
                    let Some(run) = runs.last_mut() else { continue };
                    for item in value.split("), ") {
                        let name = item.split(" (").next().unwrap_or_default();
                        let (name, arch) = match name.split_once(':') {
                            Some((name, arch)) => (name, Some(arch.to_owned())),
                            None => (name, None),
                        };
                        run.packages.push((name.to_owned(), arch));
                    }
                }
                _ => {}
            }
        }
    }
    runs.sort_by(|a, b| a.start.cmp(&b.start));
    Ok(runs)
}

/// The dpkg action lines that exactly one apt run covers and lists, by a plain scan.
fn lines_apt_explains(dpkg_logs: &[PathBuf], runs: &[AptRun]) -> anyhow::Result<Vec<String>> {
    let mut explained = Vec::new();
    for log in dpkg_logs {
        for line in fs::read_to_string(log)?.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let action = fields.get(2).copied().unwrap_or_default();
            if !matches!(
                action,
                "install" | "upgrade" | "remove" | "purge" | "disappear"
            ) {
                continue;
            }
            let stamp = fields[..2].join(" ");
            let (name, arch) = match fields[3].split_once(':') {
                Some((name, arch)) => (name, Some(arch)),
                None => (fields[3], None),
            };
            let covering = runs.iter().enumerate().filter(|(i, run)| {
                let inside = run.start <= stamp
                    && match (&run.end, runs.get(i + 1)) {
                        (Some(end), _) => stamp <= *end,
                        (None, Some(next)) => stamp < next.start,
                        (None, None) => true,
                    };
                let listed = run.packages.iter().any(|(n, a)| {
                    n == name
                        && match (a.as_deref(), arch) {
                            (Some(a), Some(b)) => a == b || a == "all" || b == "all",
                            _ => true,
                        }
                });
                inside && listed
            });
            if covering.count() == 1 {
                explained.push(line.to_owned());
            }
        }
    }
    explained.sort();
    Ok(explained)
}

fn gzip(path: &Path) -> anyhow::Result<PathBuf> {
    let status = Command::new("gzip").arg(path).status()?;
    anyhow::ensure!(status.success(), "gzip {} failed", path.display());
    Ok(PathBuf::from(format!("{}.gz", path.display())))
}

fn attributed_lines(events: &[Value]) -> Vec<String> {
    let mut lines: Vec<String> = events
        .iter()
        .filter(|e| !e["actor"].is_null() && e["category"] != "package_install_failed")
        .filter_map(|e| e["raw_line"].as_str().map(str::to_owned))
        .collect();
    lines.sort();
    lines
}

fn event_of<'a>(events: &'a [Value], raw_line: &str) -> &'a Value {
    match events.iter().find(|e| e["raw_line"] == raw_line) {
        Some(event) => event,
        None => panic!("no event for {raw_line}"),
    }
}

#[test]
fn history_beside_the_logs_names_the_command_behind_each_change() -> anyhow::Result<()> {
    let Some(dpkg) = corpus_set() else {
        return Ok(());
    };
    let host = "PhoenixYanrongLi__ServerLog";
    let Some(history) = corpus_history(host, &["", ".1", ".2"]) else {
        return Ok(());
    };

    // The layout of /var/log: dpkg.log* with apt/history.log* beside, one rotation gzipped.
    let root = tempfile::tempdir()?;
    let log = root.path().join("log");
    fs::create_dir_all(log.join("apt"))?;
    let mut dpkg_logs = Vec::new();
    for (source, name) in dpkg.iter().zip(["dpkg.log", "dpkg.log.1", "dpkg.log.2"]) {
        fs::copy(source, log.join(name))?;
        dpkg_logs.push(log.join(name));
    }
    for (source, name) in history
        .iter()
        .zip(["history.log", "history.log.1", "history.log.2"])
    {
        fs::copy(source, log.join("apt").join(name))?;
    }
    gzip(&log.join("apt/history.log.2"))?;

    let paths: Vec<&Path> = dpkg_logs.iter().map(PathBuf::as_path).collect();
    let found = events(&replay(&paths, "UTC")?)?;

    let git = event_of(
        &found,
        "2016-03-23 12:46:05 install git:amd64 <none> 1:1.9.1-1ubuntu0.3",
    );
    assert_eq!(git["actor"]["source"], "apt-history");
    assert_eq!(git["actor"]["command"], "apt-get install git");
    assert_eq!(git["actor"]["apt_start"], "2016-03-23T12:45:46+00:00");
    assert!(git["actor"]["user"].is_null() && git["actor"]["uid"].is_null());

    // apt lists an `Architecture: all` package under the native architecture.
    let man = event_of(
        &found,
        "2016-03-23 12:45:57 install git-man:all <none> 1:1.9.1-1ubuntu0.3",
    );
    assert_eq!(man["actor"]["command"], "apt-get install git");

    // The gzipped rotation is read: its runs attribute events too.
    let oldest = apt_runs(&history[2..])?;
    let in_oldest = found.iter().filter(|e| {
        oldest.iter().any(|run| {
            let start = run.start.replace(' ', "T") + "+00:00";
            e["actor"]["apt_start"] == start.as_str()
        })
    });
    assert!(
        in_oldest.count() > 0,
        "nothing attributed from history.log.2.gz"
    );

    let expected = lines_apt_explains(&dpkg_logs, &apt_runs(&history)?)?;
    assert!(!expected.is_empty());
    assert_eq!(attributed_lines(&found), expected);

    // Turned off, nothing is attributed.
    let mut args: Vec<&Path> = vec![Path::new("--no-apt-history")];
    args.extend(&paths);
    let plain = events(&replay(&args, "UTC")?)?;
    assert_eq!(plain.len(), found.len());
    assert!(plain.iter().all(|e| e["actor"].is_null()));
    Ok(())
}

#[test]
fn gzipped_history_attributes_only_what_a_run_lists() -> anyhow::Result<()> {
    let host = "teliten__log.pinga";
    let dpkg = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../shared/corpus/dpkg/{host}__dpkg.log"));
    if !dpkg.exists() {
        println!("skipping: the dpkg corpus has no {}", dpkg.display());
        return Ok(());
    }
    let Some(history) = corpus_history(host, &[""]) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    fs::copy(&history[0], dir.path().join("pinga-history"))?;
    let gz = gzip(&dir.path().join("pinga-history"))?;

    let found = events(&replay(&[Path::new("--apt-history"), &gz, &dpkg], "UTC")?)?;

    // Run through sudo: apt recorded who asked.
    let rsync = event_of(
        &found,
        "2021-08-20 10:38:58 install rsync:amd64 <none> 3.1.3-6",
    );
    assert_eq!(rsync["actor"]["command"], "apt install rsync");
    assert_eq!(rsync["actor"]["user"], "adobrin");
    assert_eq!(rsync["actor"]["uid"], 1000);

    // A run with no End-Date covers up to the next run's start.
    let xdg = event_of(
        &found,
        "2021-08-20 23:06:25 install python-xdg:all <none> 0.25-5",
    );
    assert_eq!(xdg["actor"]["command"], "apt install python-pip");

    // `dpkg -i` outside any apt run, and a package an apt run did not list although dpkg
    // touched it during that run: both stay unattributed.
    let manual = "2021-08-19 14:31:25 install keybase:amd64 <none> 5.7.1-20210623205749.763227b4c6";
    assert!(event_of(&found, manual)["actor"].is_null());
    let unlisted = "2021-08-28 22:43:56 upgrade arbore:amd64 0.3.2-153 0.3.2-153";
    assert!(event_of(&found, unlisted)["actor"].is_null());

    let expected = lines_apt_explains(&[dpkg], &apt_runs(&history)?)?;
    let attributed = attributed_lines(&found);
    assert!(attributed.len() < found.len(), "some events must stay null");
    assert_eq!(attributed, expected);

    // A named history file that cannot be read stops the replay, naming it.
    let missing = dir.path().join("absent-history");
    let failed = replay(&[Path::new("--apt-history"), &missing, &gz], "UTC")?;
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("absent-history"), "{stderr}");
    Ok(())
}
