//! Loads the kernel program, tells it which executables are package managers and reads its
//! records.
//!
//! In: the kernel object (embedded at build time or given as bytes), the running kernel's BTF,
//! the package-manager executables found on this host. Out: [`KernelRecord`]s, the count of
//! records the kernel dropped, per-program run statistics. State: the loaded programs, their
//! links and maps; dropping [`ExecTracer`] detaches everything.

use std::{
    io,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::BtfTracePoint,
    Btf, Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use fenrir_common::{
    ExecutableKey, KernelOffsets, ScriptPath, EXE_PACKAGE_MANAGER, EXE_SCRIPT_INTERPRETER,
    OFFSETS_GLOBAL,
};
use tokio::io::{unix::AsyncFd, Interest};

use super::{
    btf::{BtfError, KernelBtf},
    record::{decode, DecodeError, KernelRecord},
};

/// The kernel object this build carries; empty when it was built without one.
static EMBEDDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fenrir-ebpf.o"));

/// Programs in the object, by the tracepoint each one attaches to.
pub const PROGRAMS: [&str; 3] = [
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_exit",
];

/// Package-manager executables Fenrir tracks when they exist on the host.
///
/// dnf and yum are Python scripts (`dnf` a link to `dnf-3`, and `yum` too where dnf replaced
/// yum), tracked through their interpreter and path; rpm, zypper, pacman and apk are programs.
pub const PACKAGE_MANAGERS: [&str; 17] = [
    "/usr/bin/dpkg",
    "/usr/bin/apt",
    "/usr/bin/apt-get",
    "/usr/bin/aptitude",
    "/usr/bin/aptitude-curses",
    "/usr/bin/unattended-upgrade",
    "/usr/bin/rpm",
    "/usr/bin/dnf",
    "/usr/bin/dnf-3",
    "/usr/bin/dnf5",
    "/usr/bin/microdnf",
    "/usr/bin/yum",
    "/usr/bin/zypper",
    "/usr/bin/pacman",
    "/sbin/apk",
    "/usr/sbin/apk",
    "/usr/bin/apk",
];

/// Directories whose every file is a package-manager helper (apt's transport methods).
pub const PACKAGE_MANAGER_DIRS: [&str; 1] = ["/usr/lib/apt/methods"];

/// Why the exec tracer could not start.
///
/// Every variant means "run without attribution"; callers warn once and go on log-only.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// This build embeds no kernel program (built without `FENRIR_EBPF_OBJECT`).
    #[error("this build carries no kernel program")]
    NoKernelProgram,
    /// The kernel's BTF is missing or lacks a field the program reads.
    #[error("failed to resolve kernel structure offsets")]
    Btf(#[from] BtfError),
    /// aya could not parse the BTF it needs to load BTF tracepoints.
    #[error("failed to load kernel btf for program loading")]
    KernelBtf(#[source] aya::BtfError),
    /// The kernel refused the object: no privilege, no BPF, or the verifier rejected it.
    #[error("failed to load the kernel program")]
    Load(#[source] aya::EbpfError),
    /// The object lacks a program or map this loader expects.
    #[error("kernel object has no {name}")]
    Missing {
        /// Name of the program or map.
        name: &'static str,
    },
    /// A program could not be loaded or attached.
    #[error("failed to attach {name}")]
    Attach {
        /// The program.
        name: &'static str,
        /// aya's error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map could not be opened or written.
    #[error("failed to use map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// The ring buffer could not be registered with the async runtime.
    #[error("failed to watch the kernel ring buffer")]
    Watch(#[source] io::Error),
    /// A program's run statistics could not be read from `/proc/self/fdinfo`.
    #[error("failed to read program statistics")]
    Stats(#[source] io::Error),
}

impl LoadError {
    /// Returns whether the failure is a lack of privilege (not root, no `CAP_BPF`).
    #[must_use]
    pub fn is_permission_denied(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);

        while let Some(error) = source {
            if let Some(io) = error.downcast_ref::<io::Error>() {
                if io.kind() == io::ErrorKind::PermissionDenied {
                    return true;
                }
            }
            source = error.source();
        }

        false
    }
}

/// How the tracer loads.
#[derive(Debug, Clone)]
pub struct TracerConfig {
    /// Highest level of the kernel program's own diagnostics forwarded to `tracing`; `None`
    /// switches them off inside the kernel.
    pub kernel_log_level: Option<tracing::Level>,
    /// Executables whose runs are traced; missing files are skipped.
    pub executables: Vec<PathBuf>,
    /// How often records that did not wake userspace are drained.
    pub drain_interval: Duration,
}

impl Default for TracerConfig {
    fn default() -> Self {
        Self {
            kernel_log_level: Some(tracing::Level::WARN),
            executables: default_executables(),
            drain_interval: Duration::from_millis(200),
        }
    }
}

/// Lists the package-manager executables present on this host.
#[must_use]
pub fn default_executables() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = PACKAGE_MANAGERS.iter().map(PathBuf::from).collect();

    for dir in PACKAGE_MANAGER_DIRS {
        if let Ok(entries) = std::fs::read_dir(dir) {
            found.extend(entries.filter_map(Result::ok).map(|entry| entry.path()));
        }
    }

    found.retain(|path| path.exists());
    found
}

/// A package-manager executable as the kernel identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedExecutable {
    /// The path it was found at.
    pub path: PathBuf,
    /// The (device, inode) key the kernel matches: the file's own, or its interpreter's for a
    /// script.
    pub key: ExecutableKey,
    /// For a `#!` script, the interpreter it names; the kernel then also matches the path.
    pub interpreter: Option<PathBuf>,
}

/// Returns the kernel's identity of the file at `path` (symlinks followed).
pub fn executable_key(path: &Path) -> io::Result<ExecutableKey> {
    use std::os::unix::fs::MetadataExt;

    let meta = std::fs::metadata(path)?;
    let dev = meta.dev();

    // Userspace `dev_t` packs major and minor differently from the kernel's `s_dev`.
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));

    Ok(ExecutableKey::new(major as u32, minor as u32, meta.ino()))
}

// TODO: on an overlay file system (a container's root) stat() names the overlay's device
// while the kernel program keys the exec'd file by the file behind it, so package managers
// there are not recognised and their changes have no actor; registering the underlying file's
// identity too (as /proc/self/maps shows it for a mapping of the executable) would fix it.

/// Cumulative run statistics of one kernel program (needs `kernel.bpf_stats_enabled=1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Total nanoseconds spent in the program.
    pub run_time_ns: u64,
    /// Number of runs.
    pub run_count: u64,
}

impl ProgramStats {
    /// Returns the mean cost of one run in nanoseconds, `None` before the first run.
    #[must_use]
    pub fn ns_per_run(&self) -> Option<f64> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a mean needs no more than 52 bits"
        )]
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

/// Forwards the kernel program's aya-log diagnostics to `tracing`.
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(%message, "kernel program diagnostic"),
            log::Level::Warn => tracing::warn!(%message, "kernel program diagnostic"),
            log::Level::Info => tracing::info!(%message, "kernel program diagnostic"),
            log::Level::Debug => tracing::debug!(%message, "kernel program diagnostic"),
            log::Level::Trace => tracing::trace!(%message, "kernel program diagnostic"),
        }
    }

    fn flush(&self) {}
}

fn aya_log_level(level: Option<tracing::Level>) -> u8 {
    let Some(level) = level else {
        return 0;
    };

    let level = match level {
        tracing::Level::ERROR => aya_log::Level::Error,
        tracing::Level::WARN => aya_log::Level::Warn,
        tracing::Level::INFO => aya_log::Level::Info,
        tracing::Level::DEBUG => aya_log::Level::Debug,
        tracing::Level::TRACE => aya_log::Level::Trace,
    };
    level as u8
}

/// The loaded and attached kernel program.
pub struct ExecTracer {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    watch: Option<AsyncFd<OwnedFd>>,
    logger: Option<EbpfLogger<TracingLog>>,
    dropped: PerCpuArray<MapData, u64>,
    offsets: KernelOffsets,
    tracked: Vec<TrackedExecutable>,
    drain_interval: Duration,
}

impl std::fmt::Debug for ExecTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecTracer")
            .field("offsets", &self.offsets)
            .field("tracked", &self.tracked)
            .finish_non_exhaustive()
    }
}

impl ExecTracer {
    /// Returns whether this build embeds a kernel program.
    #[must_use]
    pub fn has_embedded_object() -> bool {
        !EMBEDDED_OBJECT.is_empty()
    }

    /// Loads and attaches the kernel program embedded in this build.
    ///
    /// # Errors
    ///
    /// [`LoadError::NoKernelProgram`] for a build without one; any other variant when the
    /// kernel cannot run it (see [`LoadError::is_permission_denied`]).
    pub fn load(config: &TracerConfig) -> Result<Self, LoadError> {
        Self::load_object(EMBEDDED_OBJECT, config)
    }

    /// Loads and attaches the kernel program in `object`.
    pub fn load_object(object: &[u8], config: &TracerConfig) -> Result<Self, LoadError> {
        if object.is_empty() {
            return Err(LoadError::NoKernelProgram);
        }

        let offsets = KernelBtf::from_sys_fs()?.kernel_offsets()?;
        let btf = Btf::from_sys_fs().map_err(LoadError::KernelBtf)?;
        let log_level = aya_log_level(config.kernel_log_level);

        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(OFFSETS_GLOBAL, &offsets, true)
            .override_global(aya_log::LEVEL, &log_level, false)
            .load(object)
            .map_err(LoadError::Load)?;

        // Diagnostics are optional: a build with all kernel logging compiled out has no map.
        let logger = if log_level > 0 {
            EbpfLogger::init_with_logger(&mut ebpf, TracingLog)
                .inspect_err(|error| tracing::debug!(%error, "kernel diagnostics unavailable"))
                .ok()
        } else {
            None
        };

        let tracked = fill_tracked_executables(&mut ebpf, &config.executables)?;

        for name in PROGRAMS {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(LoadError::Missing { name })?
                .try_into()
                .map_err(|source| LoadError::Attach { name, source })?;
            program
                .load(name, &btf)
                .map_err(|source| LoadError::Attach { name, source })?;
            program
                .attach()
                .map_err(|source| LoadError::Attach { name, source })?;
        }

        let events = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or(LoadError::Missing { name: "EVENTS" })?,
        )
        .map_err(|source| LoadError::Map {
            name: "EVENTS",
            source,
        })?;
        let dropped = PerCpuArray::try_from(
            ebpf.take_map("DROPPED")
                .ok_or(LoadError::Missing { name: "DROPPED" })?,
        )
        .map_err(|source| LoadError::Map {
            name: "DROPPED",
            source,
        })?;

        tracing::info!(executables = tracked.len(), "exec tracer attached");

        Ok(Self {
            ebpf,
            events,
            watch: None,
            logger,
            dropped,
            offsets,
            tracked,
            drain_interval: config.drain_interval,
        })
    }

    /// Returns the structure offsets the program was loaded with.
    #[must_use]
    pub fn offsets(&self) -> KernelOffsets {
        self.offsets
    }

    /// Returns the package-manager executables the kernel watches for.
    #[must_use]
    pub fn tracked_executables(&self) -> &[TrackedExecutable] {
        &self.tracked
    }

    /// Returns the number of records lost to a full ring buffer since load, over all CPUs.
    pub fn dropped(&self) -> Result<u64, LoadError> {
        let per_cpu = self.dropped.get(&0, 0).map_err(|source| LoadError::Map {
            name: "DROPPED",
            source,
        })?;

        Ok(per_cpu.iter().sum())
    }

    /// Returns a duplicate of the ring buffer's descriptor, which polls readable when a record
    /// woke userspace, for callers that wait on it in their own event loop.
    pub fn ring_fd(&self) -> io::Result<OwnedFd> {
        self.events.as_fd().try_clone_to_owned()
    }

    /// Decodes every record waiting in the ring buffer into `out`, without blocking.
    ///
    /// Returns how many records failed to decode; each is logged and skipped, the rest still
    /// arrive.
    pub fn drain(&mut self, out: &mut Vec<KernelRecord>) -> usize {
        let mut undecodable = 0;

        while let Some(item) = self.events.next() {
            match decode(&item) {
                Ok(record) => out.push(record),
                Err(error) => {
                    undecodable += 1;
                    log_decode_error(&error);
                }
            }
        }

        if let Some(logger) = &mut self.logger {
            logger.flush();
        }

        undecodable
    }

    /// Waits until a package-manager record wakes userspace or the drain interval passes, then
    /// drains every waiting record into `out`.
    ///
    /// Must run inside a Tokio runtime with I/O enabled.
    pub async fn next_batch(&mut self, out: &mut Vec<KernelRecord>) -> Result<(), LoadError> {
        if self.watch.is_none() {
            let fd = self
                .events
                .as_fd()
                .try_clone_to_owned()
                .map_err(LoadError::Watch)?;
            // SAFETY: the AsyncFd owns this duplicate, which stays open (and refers to the
            // ring buffer's file description) until the AsyncFd is dropped.
            let watch = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(|error| LoadError::Watch(io::Error::other(error.to_string())))?;
            self.watch = Some(watch);
        }

        if let Some(watch) = &self.watch {
            if let Ok(guard) = tokio::time::timeout(self.drain_interval, watch.readable()).await {
                guard.map_err(LoadError::Watch)?.clear_ready();
            }
        }

        self.drain(out);
        Ok(())
    }

    /// Reads run statistics of one program from `/proc/self/fdinfo`.
    ///
    /// The kernel only counts while `kernel.bpf_stats_enabled` is 1.
    pub fn program_stats(&self, name: &'static str) -> Result<ProgramStats, LoadError> {
        let program = self.ebpf.program(name).ok_or(LoadError::Missing { name })?;
        let fd = program
            .fd()
            .map_err(|source| LoadError::Attach { name, source })?;
        let raw = fd.as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))
            .map_err(LoadError::Stats)?;

        let field = |key: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(key)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };

        Ok(ProgramStats {
            run_time_ns: field("run_time_ns:"),
            run_count: field("run_cnt:"),
        })
    }
}

fn log_decode_error(error: &DecodeError) {
    tracing::error!(%error, "skipping undecodable kernel record");
}

/// Returns the interpreter a `#!` file names, `None` for any other file.
fn script_interpreter(path: &Path) -> Option<PathBuf> {
    use std::io::Read as _;

    let mut head = [0; 256];
    let len = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..len].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let interpreter = line
        .split(u8::is_ascii_whitespace)
        .find(|word| !word.is_empty())?;

    Some(PathBuf::from(std::ffi::OsStr::from_bytes(interpreter)))
}

/// Paths the kernel may see for one script: as configured, with symlinks resolved, and in the
/// `/bin` or `/sbin` spelling where that leads to the same file (merged-usr systems).
fn script_spellings(path: &Path) -> Vec<PathBuf> {
    let mut spellings = vec![path.to_path_buf()];

    if let Ok(canonical) = std::fs::canonicalize(path) {
        if let Some(name) = canonical.file_name() {
            for alias in ["/bin", "/sbin", "/usr/bin", "/usr/sbin"] {
                let alias = Path::new(alias).join(name);
                if std::fs::canonicalize(&alias).is_ok_and(|resolved| resolved == canonical) {
                    spellings.push(alias);
                }
            }
        }
        spellings.push(canonical);
    }

    spellings.sort();
    spellings.dedup();
    spellings
}

fn map_error(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

fn fill_tracked_executables(
    ebpf: &mut Ebpf,
    executables: &[PathBuf],
) -> Result<Vec<TrackedExecutable>, LoadError> {
    let [Some(exes), Some(scripts)] = ebpf.maps_disjoint_mut(["TRACKED_EXES", "TRACKED_SCRIPTS"])
    else {
        return Err(LoadError::Missing {
            name: "TRACKED_EXES or TRACKED_SCRIPTS",
        });
    };
    let mut exes: HashMap<_, ExecutableKey, u32> =
        HashMap::try_from(exes).map_err(map_error("TRACKED_EXES"))?;
    let mut scripts: HashMap<_, ScriptPath, u32> =
        HashMap::try_from(scripts).map_err(map_error("TRACKED_SCRIPTS"))?;
    let mut tracked = Vec::new();

    for path in executables {
        let key = match executable_key(path) {
            Ok(key) => key,
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "package manager not present");
                continue;
            }
        };

        // The kernel sees a script's interpreter, not the script: mark the interpreter and
        // let the exec'd path decide.
        let (key, interpreter) = match script_interpreter(path) {
            Some(interpreter) => match executable_key(&interpreter) {
                Ok(interpreter_key) => (interpreter_key, Some(interpreter)),
                Err(error) => {
                    let interpreter = interpreter.display();
                    tracing::warn!(path = %path.display(), %interpreter, %error,
                        "package-manager script has no usable interpreter");
                    continue;
                }
            },
            None => (key, None),
        };

        let bit = if interpreter.is_some() {
            for spelling in script_spellings(path) {
                let Some(script) = ScriptPath::new(spelling.as_os_str().as_bytes()) else {
                    tracing::warn!(path = %spelling.display(), "script path too long to track");
                    continue;
                };
                scripts
                    .insert(script, 1, 0)
                    .map_err(map_error("TRACKED_SCRIPTS"))?;
            }
            EXE_SCRIPT_INTERPRETER
        } else {
            EXE_PACKAGE_MANAGER
        };
        let previous = exes.get(&key, 0).unwrap_or(0);
        exes.insert(key, previous | bit, 0)
            .map_err(map_error("TRACKED_EXES"))?;

        tracked.push(TrackedExecutable {
            path: path.clone(),
            key,
            interpreter,
        });
    }

    Ok(tracked)
}

#[cfg(test)]
mod tests {
    use super::{executable_key, ExecTracer, LoadError, TracerConfig};

    #[test]
    fn empty_object_is_a_typed_error() {
        let error = ExecTracer::load_object(&[], &TracerConfig::default())
            .expect_err("an empty object cannot load");

        assert!(matches!(error, LoadError::NoKernelProgram));
        assert!(!error.is_permission_denied());
    }

    #[test]
    fn garbage_object_is_a_typed_error() {
        if std::fs::metadata(super::super::btf::VMLINUX_BTF).is_err() {
            println!("skipping: no kernel btf to get past offset resolution");
            return;
        }

        let error = ExecTracer::load_object(b"not an elf file", &TracerConfig::default())
            .expect_err("garbage cannot load");

        assert!(matches!(error, LoadError::Load(_)), "{error:?}");
    }

    #[test]
    fn script_interpreter_reads_the_shebang_and_ignores_binaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("upgrade");
        std::fs::write(&script, b"#! /usr/bin/python3 -E\nprint()\n").expect("write");
        let env_script = dir.path().join("env-upgrade");
        std::fs::write(&env_script, b"#!/usr/bin/env python3\n").expect("write");

        assert_eq!(
            super::script_interpreter(&script),
            Some("/usr/bin/python3".into())
        );
        assert_eq!(
            super::script_interpreter(&env_script),
            Some("/usr/bin/env".into())
        );
        assert_eq!(
            super::script_interpreter(std::path::Path::new("/bin/true")),
            None
        );
    }

    #[test]
    fn executable_key_follows_symlinks_and_matches_stat() {
        use std::os::unix::fs::MetadataExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("tool");
        std::fs::write(&target, b"#!/bin/sh\n").expect("write");
        let link = dir.path().join("dpkg");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");

        let key = executable_key(&link).expect("stat");
        let meta = std::fs::metadata(&target).expect("stat");

        assert_eq!(key.ino, meta.ino());
        assert_eq!(key, executable_key(&target).expect("stat"));
    }
}
