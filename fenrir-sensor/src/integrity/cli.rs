//! `fenrir-sensor verify [PKG...]`: checks installed packages now, against dpkg's database and
//! Fenrir's own record.
//!
//! In: the command line and the configuration. Out: one line per package (text, or JSON lines
//! with `--json`), a summary, and an exit code for scripts. State: none; with `--record`, a
//! record is appended for each package the store has none for.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;

use super::check::{verify_package, FileKind, Verification, Witness};
use super::dpkg_root;
use super::store::{RecordStore, Scan};
use crate::config::Config;
use crate::event::escape_control;
use crate::parse::dpkg::PackageRef;
use crate::parse::status::{read_records, InstalledPackage, Stanza};

/// Exit code: every package matches.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (unreadable database, a named package not installed).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: a package file is missing or differs (dpkg's md5sums or Fenrir's record).
pub const EXIT_MISMATCH: u8 = 2;
/// Exit code: Fenrir's record store failed its chain check (and no file differs).
pub const EXIT_STORE_BROKEN: u8 = 3;

/// The arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// dpkg's admin directory [default: /var/lib/dpkg]
    #[arg(long, value_name = "DIR")]
    pub dpkg_admindir: Option<PathBuf>,
    /// The root dpkg installs into [default: derived from the admin directory, else /]
    #[arg(long, value_name = "DIR")]
    pub dpkg_root: Option<PathBuf>,
    /// Where Fenrir's record store lives [default: /var/lib/fenrir]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print JSON lines instead of text
    #[arg(long)]
    pub json: bool,
    /// Record the files of packages the store has no record of (for their installed version)
    #[arg(long)]
    pub record: bool,
    /// Packages to check, as `name` or `name:arch` [default: every installed package]
    #[arg(value_name = "PKG")]
    pub packages: Vec<String>,
}

/// What was found for one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Against {
    /// The store has a record of this version and it was compared.
    Compared(u64),
    /// The store has records of other versions only.
    OtherVersion,
    /// No record.
    None,
}

/// Runs `verify`, writing to `out`; returns the exit code.
///
/// # Errors
/// When the database cannot be read at all or the output cannot be written.
pub fn run(args: &VerifyArgs, config: &Config, out: &mut dyn Write) -> anyhow::Result<u8> {
    let admin_dir = args
        .dpkg_admindir
        .clone()
        .unwrap_or_else(|| config.dpkg.admin_dir.clone());
    let root = dpkg_root(
        args.dpkg_root.as_deref().or(config.dpkg.root.as_deref()),
        &admin_dir,
    );
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| config.state_dir.clone());
    let records = read_records(&admin_dir)
        .with_context(|| format!("failed to read dpkg's database in {}", admin_dir.display()))?;

    let (selected, missing) = select(args, &records, out)?;
    let mut code = if missing { EXIT_ERROR } else { EXIT_OK };

    let admin_text = admin_dir.display().to_string();
    let mut store = RecordStore::new(&state_dir);
    let scan = store
        .scan(&|record| {
            record.admin_dir == admin_text
                && selected.contains_key(&PackageRef {
                    name: record.package.clone(),
                    arch: record.arch.clone(),
                })
        })
        .context("failed to read Fenrir's record store")?;

    let (mut clean, mut mismatched, mut conffiles_only) = (0_u64, 0_u64, 0_u64);
    for (key, stanza) in &selected {
        let mut verification = match verify_package(&root, &admin_dir, stanza) {
            Ok(verification) => verification,
            Err(err) => {
                code = code.max(EXIT_ERROR);
                writeln!(
                    out,
                    "{}: cannot read its md5sums: {err}",
                    escape_control(&key.name)
                )?;
                continue;
            }
        };
        let record = scan
            .latest
            .get(&(admin_text.clone(), key.name.clone(), key.arch.clone()));
        let against = match record {
            Some(record) if record.version == verification.version => {
                verification.compare_with_record(record, &root);
                Against::Compared(0)
            }
            Some(_) => Against::OtherVersion,
            None => Against::None,
        };
        let against = match (against, args.record) {
            (Against::OtherVersion | Against::None, true) => {
                let head = store
                    .append(verification.to_record(&admin_dir, &root))
                    .context("failed to append to Fenrir's record store")?;
                Against::Compared(head.seq)
            }
            (other, _) => other,
        };
        if verification.has_file_findings() {
            mismatched += 1;
            code = EXIT_MISMATCH;
        } else if verification.findings.is_empty() {
            clean += 1;
        } else {
            conffiles_only += 1;
        }
        report(out, &verification, against, args.json)?;
    }

    if !scan.is_intact() && (code == EXIT_OK || code == EXIT_ERROR) {
        code = EXIT_STORE_BROKEN;
    }
    let counts = [selected.len() as u64, clean, mismatched, conffiles_only];
    summarize(out, &store, &scan, counts, code, args.json)?;
    Ok(code)
}

/// The packages to check: those named (an unknown one is reported), or every package, kept
/// only when its files are all on disk; returns whether a named package is not installed.
fn select<'a>(
    args: &VerifyArgs,
    records: &'a BTreeMap<PackageRef, Stanza>,
    out: &mut dyn Write,
) -> std::io::Result<(BTreeMap<PackageRef, &'a Stanza>, bool)> {
    let mut missing = false;
    let mut selected: BTreeMap<PackageRef, &Stanza> = BTreeMap::new();
    for wanted in &args.packages {
        let (name, arch) = match wanted.split_once(':') {
            Some((name, arch)) => (name, Some(arch)),
            None => (wanted.as_str(), None),
        };
        let matching: Vec<_> = records
            .iter()
            .filter(|(key, _)| key.name == name && (arch.is_none() || key.arch.as_deref() == arch))
            .collect();
        if matching.is_empty() {
            missing = true;
            let shown = escape_control(wanted);
            if args.json {
                writeln!(
                    out,
                    "{}",
                    json!({"package": shown, "status": "not_installed"})
                )?;
            } else {
                writeln!(out, "{shown}: not installed")?;
            }
        }
        selected.extend(matching.into_iter().map(|(k, v)| (k.clone(), v)));
    }
    if args.packages.is_empty() {
        selected.extend(records.iter().map(|(k, v)| (k.clone(), v)));
    }
    // Only packages whose files are all on disk can be checked.
    selected.retain(|_, stanza| {
        InstalledPackage::from_stanza(stanza).is_ok_and(|p| p.state.is_configured())
    });

    Ok((selected, missing))
}

/// Writes the closing summary line.
fn summarize(
    out: &mut dyn Write,
    store: &RecordStore,
    scan: &Scan,
    counts: [u64; 4],
    code: u8,
    as_json: bool,
) -> std::io::Result<()> {
    let [packages, clean, mismatched, conffiles_only] = counts;
    let store_text = if scan.is_intact() {
        format!("intact, {} records", scan.records)
    } else {
        format!("BROKEN: {}", scan.problems.join("; "))
    };
    let store_text = escape_control(&store_text);
    if as_json {
        writeln!(
            out,
            "{}",
            json!({
                "summary": {
                    "packages": packages,
                    "ok": clean,
                    "mismatch": mismatched,
                    "conffiles_changed": conffiles_only,
                    "store": {
                        "path": escape_control(&store.path().to_string_lossy()),
                        "records": scan.records,
                        "intact": scan.is_intact(),
                        "problems": scan.problems.iter().map(|p| escape_control(p)).collect::<Vec<_>>(),
                    },
                    "exit": code,
                }
            })
        )?;
    } else {
        writeln!(
            out,
            "{} packages checked: {clean} ok, {mismatched} with files that differ, \
             {conffiles_only} with changed config files; record store {}: {store_text}",
            packages,
            escape_control(&store.path().to_string_lossy()),
        )?;
    }
    Ok(())
}

fn report(
    out: &mut dyn Write,
    verification: &Verification,
    against: Against,
    as_json: bool,
) -> std::io::Result<()> {
    let name = escape_control(&verification.package);
    let arch = escape_control(verification.arch.as_deref().unwrap_or(""));
    let version = escape_control(verification.version.as_deref().unwrap_or(""));
    let status = if verification.has_file_findings() {
        "mismatch"
    } else if verification.findings.is_empty() {
        "ok"
    } else {
        "conffiles_changed"
    };
    let record = match against {
        Against::Compared(_) => "compared",
        Against::OtherVersion => "other_version",
        Against::None => "none",
    };
    if as_json {
        let line = json!({
            "package": name,
            "arch": arch,
            "version": version,
            "status": status,
            "files_checked": verification.files.len(),
            "bytes_hashed": verification.bytes,
            "md5sums": verification.has_md5sums,
            "record": record,
            "findings": verification.findings,
        });
        return writeln!(out, "{line}");
    }
    let record = match against {
        Against::Compared(seq) if seq > 0 => format!("recorded now as #{seq}"),
        Against::Compared(_) => "checked against Fenrir's record too".to_owned(),
        Against::OtherVersion => "Fenrir's record is of another version".to_owned(),
        Against::None => "no record by Fenrir".to_owned(),
    };
    let md5sums = if verification.has_md5sums {
        ""
    } else {
        ", no md5sums"
    };
    writeln!(
        out,
        "{name}:{arch} {version}: {} ({} files{md5sums}; {record})",
        status.to_uppercase(),
        verification.files.len()
    )?;
    for finding in &verification.findings {
        let kind = match finding.kind {
            FileKind::File => "file",
            FileKind::Conffile => "conffile",
            FileKind::ObsoleteConffile => "obsolete conffile",
        };
        let witness = match finding.against {
            Witness::Dpkg => "dpkg",
            Witness::Record => "fenrir record",
        };
        writeln!(
            out,
            "  {:<18} {kind:<17} {}  [{witness}]",
            finding.problem.as_str(),
            finding.path
        )?;
    }
    Ok(())
}
