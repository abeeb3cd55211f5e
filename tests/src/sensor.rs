//! The real `fenrir-sensor` binary, started as a child process and read as a user would.
//!
//! Events are read from the child's stdout as JSON lines and its diagnostics from stderr, each
//! by its own thread, so a test can wait for "sensor ready" and then for events with a
//! deadline instead of sleeping.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Returns the sensor binary, building it once per test process if needed.
///
/// `FENRIR_SENSOR_BIN` names a binary to use instead (the benchmarks use a release build).
pub fn binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Ok(path) = std::env::var("FENRIR_SENSOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "fenrir-sensor"])
                .status()
                .map_err(|e| format!("failed to start cargo: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p fenrir-sensor failed with {status}"));
            }
            // Test executables live in target/<profile>/deps; the binary one level up.
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or_else(|| "unexpected test executable location".to_owned())?;
            Ok(profile_dir.join("fenrir-sensor"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A running `fenrir-sensor`.
pub struct Sensor {
    child: Child,
    events: Receiver<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Sensor {
    /// Starts `fenrir-sensor` with `args` (starting with the subcommand) and waits until it
    /// reports `sensor ready`.
    pub fn start(args: &[String]) -> anyhow::Result<Self> {
        Self::start_wrapped(&[], args)
    }

    /// Starts the sensor under `wrapper` (a command such as `setpriv --reuid=…` that executes
    /// its remaining arguments), then as [`Sensor::start`].
    pub fn start_wrapped(wrapper: &[&str], args: &[String]) -> anyhow::Result<Self> {
        Self::start_with(wrapper, &[], args)
    }

    /// Starts the sensor under `wrapper` (may be empty) with `env` added to its environment,
    /// then as [`Sensor::start`].
    pub fn start_with(
        wrapper: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        args: &[String],
    ) -> anyhow::Result<Self> {
        let binary = binary()?;
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        // The host's SSH logins (the ssh tests log in from first-seen addresses) would raise
        // every change of a test that does not configure the sensor itself.
        let is_plain_run =
            args.first().is_some_and(|a| a == "run") && !args.iter().any(|a| a == "--config");
        let mut child = command
            .args(args)
            .args(is_plain_run.then_some("--no-ssh"))
            .env("RUST_LOG", "fenrir_sensor=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start fenrir-sensor")?;

        let (event_tx, events) = mpsc::channel();
        let stdout = child.stdout.take().context("sensor stdout is piped")?;
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Value::String(format!("not JSON ({e}): {line}")));
                if event_tx.send(value).is_err() {
                    break;
                }
            }
        });

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = mpsc::channel();
        let pipe = child.stderr.take().context("sensor stderr is piped")?;
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let ready = line.contains("sensor ready");
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line);
                }
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });

        let mut sensor = Self {
            child,
            events,
            stderr,
        };
        if ready.recv_timeout(Duration::from_secs(20)).is_err() {
            let status = sensor.child.try_wait().ok().flatten();
            let _ = sensor.child.kill();
            bail!(
                "sensor never became ready (exit: {status:?}); stderr:\n{}",
                sensor.stderr()
            );
        }
        Ok(sensor)
    }

    /// Returns the sensor's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns everything the sensor wrote to stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// Waits for the next event.
    pub fn next_event(&self, timeout: Duration) -> anyhow::Result<Value> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Timeout) => {
                bail!("no event within {timeout:?}; stderr:\n{}", self.stderr())
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("sensor output closed; stderr:\n{}", self.stderr())
            }
        }
    }

    /// Collects exactly `count` events, failing when they do not all come in time.
    pub fn events(&self, count: usize, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            events.push(self.next_event(left).with_context(|| {
                format!("after {} of {count} events: {events:#?}", events.len())
            })?);
        }
        Ok(events)
    }

    /// Returns every further event that arrives within `quiet`.
    #[must_use]
    pub fn drain(&self, quiet: Duration) -> Vec<Value> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.recv_timeout(quiet) {
            events.push(event);
        }
        events
    }

    /// Stops the sensor with SIGTERM and returns its exit status and remaining events.
    pub fn stop(mut self) -> anyhow::Result<(ExitStatus, Vec<Value>)> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid fits in i32")?);
        kill(pid, Signal::SIGTERM).context("failed to signal the sensor")?;
        let status = self.child.wait().context("failed to wait for the sensor")?;
        let rest = self.events.try_iter().collect::<Vec<_>>();
        let mut rest = rest;
        rest.extend(self.drain(Duration::from_millis(200)));
        Ok((status, rest))
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
