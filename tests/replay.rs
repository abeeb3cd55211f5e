//! `fenrir-sensor replay` on real logs from public systems: a rotated set with a `.gz` member
//! given in any order, local time zones, and input that is not a dpkg log at all.

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

    // logrotate compresses older rotations; the replay must read them whatever their name.
    let gz = dir.path().join("dpkg.log.2.gz");
    fs::copy(&second, dir.path().join("dpkg.log.2"))?;
    let status = Command::new("gzip")
        .arg(dir.path().join("dpkg.log.2"))
        .status()?;
    assert!(status.success() && gz.exists());

    let shuffled = events(&replay(&[&current, &gz, &first], "UTC")?)?;

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
