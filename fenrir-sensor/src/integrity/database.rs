//! The database witness: changes to dpkg's status database that never reached the log.
//!
//! In: every line read from the log, a flag set by a file-system watch on the admin directory
//! (`status`, `updates/`), and dpkg's database read at a quiet moment. Out: [`Unlogged`]
//! changes. State: the installed set as the log describes it (the database at the last check,
//! moved on by each `status` line read since), a digest of each package's record, and whether
//! any line was read since the last check.
//!
//! dpkg writes a `status` line to its log for every state it records in the database, before
//! it releases its lock. So once no package manager holds the lock and the log is read to its
//! end, the log's view and the database agree — unless a change bypassed the log: a dpkg run
//! with `--log=/dev/null`, a log deleted under a run, or a direct edit of the database. Each
//! package whose presence, version or state differs is an unlogged change.
//!
//! Records also change in fields the log never mentions (`Conffiles`, `Depends`, …) when dpkg
//! runs. A record that changed beyond the selection (`hold`, `install`, which `dpkg
//! --set-selections` sets without logging) is reported only when no line at all was read since
//! the last check and the kernel saw no dpkg run on this database: an edit by something else.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::parse::dpkg::{parse_line, LineKind, PackageRef};
use crate::parse::status::{read_records, InstalledPackage, InstalledSet, Stanza, StatusError};

/// One package whose change the log does not explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlogged {
    pub package: PackageRef,
    /// As the log (and the last check) knew it; `None`: not present.
    pub before: Option<InstalledPackage>,
    /// As the database has it now; `None`: gone.
    pub after: Option<InstalledPackage>,
    /// For a record that changed beyond presence, version and state: the fields that differ.
    pub fields: Vec<String>,
}

/// Compares dpkg's database with what the log said.
#[derive(Debug)]
pub struct DatabaseWitness {
    admin_dir: PathBuf,
    /// The database as the log describes it; `None` until the first read.
    logged: Option<InstalledSet>,
    /// Per package, a digest of each field of its record at the last check.
    records: HashMap<PackageRef, BTreeMap<String, [u8; 32]>>,
    lines_since_check: u64,
    changed: Arc<AtomicBool>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl DatabaseWitness {
    /// Starts watching `admin_dir`; the first [`DatabaseWitness::check`] takes the baseline.
    #[must_use]
    pub fn start(admin_dir: &Path) -> Self {
        let changed = Arc::new(AtomicBool::new(true));
        let watcher = match watch(admin_dir, Arc::clone(&changed)) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                warn!(error = %format!("{err:#}"), "no watch on the dpkg database; checking it on every quiet poll");
                None
            }
        };
        Self {
            admin_dir: admin_dir.to_path_buf(),
            logged: None,
            records: HashMap::new(),
            lines_since_check: 0,
            changed,
            _watcher: watcher,
        }
    }

    /// Moves the log's view by one line read from the log.
    pub fn observe(&mut self, line: &[u8]) {
        self.lines_since_check += 1;
        let Some(logged) = self.logged.as_mut() else {
            return;
        };
        // Most lines are not status lines; the word after the timestamp tells.
        if line.get(19..27) != Some(b" status ".as_slice()) {
            return;
        }
        if let Ok(parsed) = parse_line(line) {
            if let LineKind::Status {
                state,
                package,
                version,
            } = parsed.kind
            {
                logged.apply_status(&package, state, version.as_deref());
            }
        }
    }

    /// Returns the database as the log describes it: the last reading, moved on by every
    /// `status` line observed since; `None` before the first reading.
    #[must_use]
    pub fn view(&self) -> Option<&InstalledSet> {
        self.logged.as_ref()
    }

    /// Returns whether the database may have changed since the last check.
    #[must_use]
    pub fn is_due(&self) -> bool {
        self.changed.load(Ordering::Relaxed)
    }

    /// Compares the database with the log's view; call only when no package manager holds the
    /// database and the log is read to its end. `kernel_saw_run` says whether the kernel saw a
    /// dpkg run on this database since the last check.
    ///
    /// # Errors
    /// When the database cannot be read; the check is retried on the next call.
    pub fn check(&mut self, kernel_saw_run: bool) -> Result<Vec<Unlogged>, StatusError> {
        self.changed.store(false, Ordering::Relaxed);
        let records = match read_records(&self.admin_dir) {
            Ok(records) => records,
            Err(err) => {
                self.changed.store(true, Ordering::Relaxed);
                return Err(err);
            }
        };
        let database: InstalledSet = records
            .values()
            .filter_map(|s| InstalledPackage::from_stanza(s).ok())
            .collect::<Vec<_>>()
            .into();
        let digests: HashMap<PackageRef, BTreeMap<String, [u8; 32]>> = records
            .iter()
            .map(|(key, stanza)| (key.clone(), field_digests(stanza)))
            .collect();

        let quiet = self.lines_since_check == 0 && !kernel_saw_run;
        self.lines_since_check = 0;
        let Some(logged) = self.logged.replace(database) else {
            debug!(packages = records.len(), "dpkg database baseline taken");
            self.records = digests;
            return Ok(Vec::new());
        };
        let database = self.logged.clone().unwrap_or_default();

        let mut found: Vec<Unlogged> = logged
            .differences(&database)
            .into_iter()
            .map(|(before, after)| Unlogged {
                package: before.or(after).map_or(
                    PackageRef {
                        name: String::new(),
                        arch: None,
                    },
                    InstalledPackage::package_ref,
                ),
                before: before.cloned(),
                after: after.cloned(),
                fields: Vec::new(),
            })
            .collect();
        if quiet {
            for (key, now) in &digests {
                if found.iter().any(|u| &u.package == key) {
                    continue;
                }
                let Some(then) = self.records.get(key) else {
                    continue;
                };
                let fields: Vec<String> = now
                    .iter()
                    .filter(|(name, digest)| then.get(*name) != Some(digest))
                    .map(|(name, _)| name.clone())
                    .chain(then.keys().filter(|name| !now.contains_key(*name)).cloned())
                    .collect();
                if !fields.is_empty() {
                    let package = database.get(key).cloned();
                    found.push(Unlogged {
                        package: key.clone(),
                        before: package.clone(),
                        after: package,
                        fields,
                    });
                }
            }
        }
        self.records = digests;
        Ok(found)
    }
}

/// Digests each field of a record, the selection and flag words of `Status` left out.
fn field_digests(stanza: &Stanza) -> BTreeMap<String, [u8; 32]> {
    stanza
        .fields
        .iter()
        .map(|(name, value)| {
            let name = name.to_ascii_lowercase();
            let value = if name == "status" {
                value.split_whitespace().nth(2).unwrap_or_default()
            } else {
                value.as_str()
            };
            (name, Sha256::digest(value.as_bytes()).into())
        })
        .collect()
}

/// Watches the admin directory and its journal for writes to the database.
fn watch(admin_dir: &Path, changed: Arc<AtomicBool>) -> anyhow::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let relevant = match &result {
            // Readers of the database (this sensor, dpkg-query, apt) open it without writing.
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => false,
            Ok(event) => {
                event.paths.is_empty()
                    || event.paths.iter().any(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            n.starts_with("status")
                                || n.bytes().all(|b| b.is_ascii_digit())
                                || n == "updates"
                        })
                    })
            }
            Err(_) => true,
        };
        if relevant {
            changed.store(true, Ordering::Relaxed);
        }
    })?;
    watcher.watch(admin_dir, RecursiveMode::NonRecursive)?;
    let updates = admin_dir.join("updates");
    if updates.is_dir() {
        watcher.watch(&updates, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::parse::dpkg::PackageState;

    const VIM: &str = "Package: vim\nStatus: install ok installed\nArchitecture: amd64\n\
                       Version: 2:9.0-1\nDepends: libc6\n";

    fn admin(status: &str) -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        fs::create_dir(dir.path().join("updates"))?;
        fs::write(dir.path().join("status"), status)?;
        Ok(dir)
    }

    #[test]
    fn a_change_the_log_reported_is_no_finding() -> anyhow::Result<()> {
        let dir = admin(VIM)?;
        let mut witness = DatabaseWitness::start(dir.path());
        assert!(witness.check(false)?.is_empty());
        fs::write(dir.path().join("status"), VIM.replace("2:9.0-1", "2:9.0-2"))?;
        witness.observe(b"2026-05-03 10:00:00 status half-installed vim:amd64 2:9.0-1");
        witness.observe(b"2026-05-03 10:00:01 status installed vim:amd64 2:9.0-2");
        assert_eq!(witness.check(true)?, []);
        Ok(())
    }

    #[test]
    fn a_change_without_its_lines_is_unlogged() -> anyhow::Result<()> {
        let dir = admin(VIM)?;
        let mut witness = DatabaseWitness::start(dir.path());
        witness.check(false)?;
        let added = "\nPackage: xmrig\nStatus: install ok installed\nArchitecture: amd64\n\
                     Version: 6.0\n";
        fs::write(dir.path().join("status"), format!("{VIM}{added}"))?;
        let found = witness.check(true)?;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].package.name, "xmrig");
        assert_eq!(found[0].before, None);
        assert_eq!(
            found[0].after.as_ref().map(|p| p.state),
            Some(PackageState::Installed)
        );
        // Reported once.
        assert_eq!(witness.check(false)?, []);
        Ok(())
    }

    #[test]
    fn an_edited_record_counts_only_when_nothing_else_ran() -> anyhow::Result<()> {
        let dir = admin(VIM)?;
        let mut witness = DatabaseWitness::start(dir.path());
        witness.check(false)?;
        fs::write(
            dir.path().join("status"),
            VIM.replace("libc6", "libc6, evil"),
        )?;
        assert_eq!(witness.check(true)?, [], "a dpkg run explains it");

        fs::write(
            dir.path().join("status"),
            VIM.replace("libc6", "libc6, worse"),
        )?;
        let found = witness.check(false)?;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].fields, ["depends"]);

        // A new selection is what `dpkg --set-selections` and `apt-mark hold` write.
        fs::write(
            dir.path().join("status"),
            VIM.replace("libc6", "libc6, worse")
                .replace("install ok", "hold ok"),
        )?;
        assert_eq!(witness.check(false)?, []);
        Ok(())
    }
}
