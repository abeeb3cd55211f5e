//! Hashing off the pipeline's thread.
//!
//! In: [`Job`]s — packages whose dpkg run has ended — through a bounded queue. Out:
//! [`Outcome`]s through a channel, and a wake-up of the pipeline for each batch. State: the
//! thread's record store.
//!
//! One thread at a lowered CPU priority hashes whole packages, so a package of gigabytes
//! delays the next package's check but no event of the pipeline. The queue is bounded: when it
//! is full a package is not checked, which is counted and reported. Jobs are taken in batches
//! so the status database is read once per batch, not once per package.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde_json::Value;
use tracing::{debug, error, info, warn};

use super::check::{verify_package, Verification};
use super::store::{Head, RecordStore};
use crate::parse::dpkg::PackageRef;
use crate::parse::status::{read_records, InstalledPackage};

/// A package to check.
#[derive(Debug, Clone)]
pub struct Job {
    pub package: PackageRef,
    /// The version the change installed; a job for another version than the database's is
    /// dropped (a later change superseded it).
    pub version: Option<String>,
    /// The actor of the change, carried into the event.
    pub actor: Option<Value>,
}

/// What checking one job gave.
#[derive(Debug)]
pub enum Outcome {
    /// The package was hashed and recorded.
    Verified {
        verification: Verification,
        actor: Option<Value>,
        /// The store's head after the record, `None` when it could not be written.
        head: Option<Head>,
    },
    /// The store failed its chain check when the thread started.
    StoreBroken {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The hashing thread and its queues.
#[derive(Debug)]
pub struct Verifier {
    jobs: Option<SyncSender<Job>>,
    outcomes: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
    /// Jobs dropped because the queue was full.
    pub dropped: u64,
}

/// Where the thread works.
#[derive(Debug, Clone)]
pub struct VerifierOptions {
    pub root: PathBuf,
    pub admin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub queue: usize,
}

impl Verifier {
    /// Starts the thread; `wake` is notified whenever outcomes are ready.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        options: VerifierOptions,
        wake: Arc<tokio::sync::Notify>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel(options.queue);
        let (done, outcomes) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("fenrir-verify".to_owned())
            .spawn(move || work(&options, &queue, &done, &wake))?;
        Ok(Self {
            jobs: Some(jobs),
            outcomes,
            thread: Some(thread),
            dropped: 0,
        })
    }

    /// Queues a job; returns false (and counts it) when the queue is full.
    pub fn submit(&mut self, job: Job) -> bool {
        let Some(jobs) = self.jobs.as_ref() else {
            return false;
        };
        match jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job)) => {
                self.dropped += 1;
                warn!(package = %job.package.name, dropped = self.dropped, "verification queue full; package not checked");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Returns the outcomes ready now.
    pub fn take(&mut self) -> Vec<Outcome> {
        self.outcomes.try_iter().collect()
    }

    /// Lets the thread finish the queued jobs and returns their outcomes.
    #[must_use]
    pub fn close(mut self) -> Vec<Outcome> {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.take()
    }
}

/// Lowers the calling thread's CPU priority, so hashing yields to the pipeline.
fn lower_priority() {
    // SAFETY: `setpriority` takes plain integers; on Linux a `PRIO_PROCESS` target of 0 is the
    // calling thread, and failure only leaves the priority as it was.
    let result = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 10) };
    if result != 0 {
        debug!("cannot lower the verification thread's priority");
    }
}

fn work(
    options: &VerifierOptions,
    queue: &Receiver<Job>,
    done: &mpsc::Sender<Outcome>,
    wake: &tokio::sync::Notify,
) {
    lower_priority();
    let mut store = RecordStore::new(&options.state_dir);
    match store.scan(&|_| false) {
        Ok(scan) if !scan.is_intact() => {
            error!(path = %store.path().display(), problems = ?scan.problems, "record store failed its chain check");
            let _ = done.send(Outcome::StoreBroken {
                path: store.path().to_path_buf(),
                problems: scan.problems,
            });
            wake.notify_one();
        }
        Ok(scan) => info!(records = scan.records, "record store intact"),
        Err(err) => {
            warn!(error = %format!("{:#}", anyhow::Error::new(err)), "cannot read the record store");
        }
    }

    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while let Ok(job) = queue.try_recv() {
            batch.push(job);
        }
        let records = match read_records(&options.admin_dir) {
            Ok(records) => records,
            Err(err) => {
                error!(error = %format!("{:#}", anyhow::Error::new(err)), packages = batch.len(), "cannot read the dpkg database; packages not checked");
                continue;
            }
        };
        for job in batch {
            let Some(stanza) = records.get(&job.package) else {
                debug!(package = %job.package.name, "package gone before its check");
                continue;
            };
            let Ok(installed) = InstalledPackage::from_stanza(stanza) else {
                continue;
            };
            if !installed.state.is_configured() || installed.version != job.version {
                debug!(package = %job.package.name, "package changed again before its check");
                continue;
            }
            let verification = match verify_package(&options.root, &options.admin_dir, stanza) {
                Ok(verification) => verification,
                Err(err) => {
                    warn!(package = %job.package.name, error = %err, "cannot read the package's md5sums");
                    continue;
                }
            };
            let record = verification.to_record(&options.admin_dir, &options.root);
            let head = match store.append(record) {
                Ok(head) => Some(head),
                Err(err) => {
                    error!(error = %format!("{:#}", anyhow::Error::new(err)), "cannot record the package's files");
                    None
                }
            };
            debug!(package = %job.package.name, files = verification.files.len(), bytes = verification.bytes, findings = verification.findings.len(), "package verified");
            if done
                .send(Outcome::Verified {
                    verification,
                    actor: job.actor,
                    head,
                })
                .is_err()
            {
                return;
            }
        }
        wake.notify_one();
    }
}
