//! Investigation hooks: events at or above a threshold go to a program and/or a webhook.
//!
//! In: every emitted event. Out: for events at or above the threshold, the event's JSON on
//! the stdin of an exec hook (killed when it overruns its timeout) and/or in the body of an
//! HTTP POST (retried with backoff), plus one journald entry and one diagnostic per outcome.
//! State: per hook a bounded queue and a worker thread; shared, the duplicate window (same
//! package and actor), the rate limiter and the counters.
//!
//! Nothing here can stall the pipeline: [`Hooks::submit`] only looks at a small table and
//! puts the event on a queue without waiting; a full queue drops the event and counts it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{debug, info, warn};

use super::journald::JournaldSink;
use crate::event::{escape_control, Event, Severity};

/// The `[hooks]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Events at or above this severity are dispatched.
    pub threshold: Severity,
    /// Events waiting per hook; more are dropped and counted.
    pub queue: usize,
    /// Events of the same package and actor within this time are dispatched once.
    pub dedup_window_secs: u64,
    /// Dispatches per minute at most, over all hooks.
    pub rate_limit_per_minute: u32,
    pub exec: Option<ExecHookConfig>,
    pub webhook: Option<WebhookConfig>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            threshold: Severity::High,
            queue: 256,
            dedup_window_secs: 600,
            rate_limit_per_minute: 30,
            exec: None,
            webhook: None,
        }
    }
}

/// A program run once per dispatched event, the event's JSON on its stdin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecHookConfig {
    /// The program and its arguments; no shell is involved.
    pub command: Vec<String>,
    #[serde(default = "exec_timeout")]
    pub timeout_ms: u64,
}

fn exec_timeout() -> u64 {
    10_000
}

/// An HTTP endpoint that receives each dispatched event as a JSON POST.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://`.
    pub url: String,
    #[serde(default = "webhook_timeout")]
    pub timeout_ms: u64,
    /// Further attempts after a failed one.
    #[serde(default = "webhook_retries")]
    pub retries: u32,
    #[serde(default = "retry_initial")]
    pub retry_initial_ms: u64,
    #[serde(default = "retry_max")]
    pub retry_max_ms: u64,
    /// Extra request headers (`Authorization = "Bearer …"`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn webhook_timeout() -> u64 {
    5_000
}
fn webhook_retries() -> u32 {
    3
}
fn retry_initial() -> u64 {
    500
}
fn retry_max() -> u64 {
    10_000
}

impl HooksConfig {
    /// Checks values serde cannot.
    ///
    /// # Errors
    /// Returns a message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue == 0 {
            return Err("key `hooks.queue`: must be greater than 0".into());
        }
        if self.rate_limit_per_minute == 0 {
            return Err("key `hooks.rate_limit_per_minute`: must be greater than 0".into());
        }
        if let Some(exec) = &self.exec {
            if exec.command.first().is_none_or(String::is_empty) {
                return Err("key `hooks.exec.command`: needs a program".into());
            }
            if exec.timeout_ms == 0 {
                return Err("key `hooks.exec.timeout_ms`: must be greater than 0".into());
            }
        }
        if let Some(webhook) = &self.webhook {
            let url = webhook.url.to_ascii_lowercase();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || webhook.url.parse::<ureq::http::Uri>().is_err()
            {
                return Err(format!(
                    "key `hooks.webhook.url`: `{}` is not an http:// or https:// URL",
                    webhook.url
                ));
            }
            if webhook.timeout_ms == 0 {
                return Err("key `hooks.webhook.timeout_ms`: must be greater than 0".into());
            }
            if webhook.retry_initial_ms > webhook.retry_max_ms {
                return Err(
                    "key `hooks.webhook.retry_initial_ms`: must not exceed retry_max_ms".into(),
                );
            }
        }
        Ok(())
    }
}

/// Counters of one hook.
#[derive(Debug, Default)]
pub struct HookCounters {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Further attempts of the webhook.
    pub retries: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// A snapshot of one hook's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookStats {
    pub name: String,
    pub queued: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub dropped: u64,
}

struct Worker {
    name: &'static str,
    sender: Option<SyncSender<Arc<Event>>>,
    counters: Arc<HookCounters>,
    thread: Option<thread::JoinHandle<()>>,
}

/// The hooks the configuration asks for.
pub struct Hooks {
    threshold: Severity,
    workers: Vec<Worker>,
    dedup_window: Duration,
    seen: HashMap<String, Instant>,
    rate_per_minute: f64,
    tokens: f64,
    refilled: Instant,
    /// Collapsed as duplicates, and held back by the rate limit.
    pub duplicates: u64,
    pub rate_limited: u64,
    last_rate_warning: Option<Instant>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("threshold", &self.threshold)
            .field(
                "hooks",
                &self.workers.iter().map(|w| w.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Where outcome entries go.
#[derive(Debug, Clone)]
pub struct OutcomeJournal {
    pub socket: Option<PathBuf>,
    pub host: String,
}

impl Hooks {
    /// Starts a worker per configured hook; `None` when no hook is configured.
    ///
    /// # Errors
    /// Fails when a worker thread cannot start.
    pub fn start(config: &HooksConfig, journal: &OutcomeJournal) -> std::io::Result<Option<Self>> {
        let mut workers = Vec::new();
        if let Some(exec) = &config.exec {
            let exec = exec.clone();
            workers.push(spawn_worker(
                "exec",
                config.queue,
                journal,
                move |event, counters| run_exec(&exec, event, counters),
            )?);
        }
        if let Some(webhook) = &config.webhook {
            let webhook = webhook.clone();
            let agent = webhook_agent(&webhook);
            workers.push(spawn_worker(
                "webhook",
                config.queue,
                journal,
                move |event, counters| post_webhook(&agent, &webhook, event, counters),
            )?);
        }
        if workers.is_empty() {
            return Ok(None);
        }
        let rate = f64::from(config.rate_limit_per_minute);
        Ok(Some(Self {
            threshold: config.threshold,
            workers,
            dedup_window: Duration::from_secs(config.dedup_window_secs),
            seen: HashMap::new(),
            rate_per_minute: rate,
            tokens: rate,
            refilled: Instant::now(),
            duplicates: 0,
            rate_limited: 0,
            last_rate_warning: None,
        }))
    }

    /// Queues `event` for every hook when it is at or above the threshold, is not a duplicate
    /// and the rate limit allows; never waits.
    pub fn submit(&mut self, event: &Event) {
        if event.severity < self.threshold {
            return;
        }
        let now = Instant::now();
        let key = dedup_key(event);
        self.seen
            .retain(|_, at| now.duration_since(*at) < self.dedup_window);
        if self.seen.contains_key(&key) {
            self.duplicates += 1;
            debug!(package = %event.parsed_data.package, "hook dispatch collapsed as a duplicate");
            return;
        }
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens =
            (self.tokens + elapsed * self.rate_per_minute / 60.0).min(self.rate_per_minute);
        if self.tokens < 1.0 {
            self.rate_limited += 1;
            if self
                .last_rate_warning
                .is_none_or(|at| now.duration_since(at) >= Duration::from_mins(1))
            {
                warn!(
                    held_back = self.rate_limited,
                    "hook rate limit reached; events not dispatched"
                );
                self.last_rate_warning = Some(now);
            }
            return;
        }
        self.tokens -= 1.0;
        self.seen.insert(key, now);

        let event = Arc::new(event.clone());
        for worker in &self.workers {
            let Some(sender) = &worker.sender else {
                continue;
            };
            match sender.try_send(Arc::clone(&event)) {
                Ok(()) => {
                    worker.counters.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    let dropped = worker.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    warn!(
                        hook = worker.name,
                        dropped, "hook queue full; event dropped for it"
                    );
                }
            }
        }
    }

    /// Returns the counters of every hook.
    #[must_use]
    pub fn stats(&self) -> Vec<HookStats> {
        self.workers
            .iter()
            .map(|w| HookStats {
                name: w.name.to_owned(),
                queued: w.counters.queued.load(Ordering::Relaxed),
                delivered: w.counters.delivered.load(Ordering::Relaxed),
                failed: w.counters.failed.load(Ordering::Relaxed),
                retries: w.counters.retries.load(Ordering::Relaxed),
                dropped: w.counters.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Lets the workers finish what is queued for up to `grace`, then reports the counters.
    pub fn close(mut self, grace: Duration) -> Vec<HookStats> {
        for worker in &mut self.workers {
            worker.sender = None;
        }
        let deadline = Instant::now() + grace;
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                while !thread.is_finished() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                if thread.is_finished() {
                    let _ = thread.join();
                }
            }
        }
        let stats = self.stats();
        for hook in &stats {
            info!(
                hook = hook.name,
                queued = hook.queued,
                delivered = hook.delivered,
                failed = hook.failed,
                retries = hook.retries,
                dropped = hook.dropped,
                duplicates = self.duplicates,
                rate_limited = self.rate_limited,
                "hook summary"
            );
        }
        stats
    }
}

/// The same package changed by the same person in the same session is one investigation.
fn dedup_key(event: &Event) -> String {
    let actor = event.actor.as_ref();
    let field = |name: &str| actor.map_or(String::new(), |a| a[name].to_string());
    format!(
        "{}|{}|{}|{}|{}",
        event.parsed_data.package,
        event.parsed_data.arch.as_deref().unwrap_or_default(),
        field("loginuid"),
        field("sessionid"),
        event.ip.as_deref().unwrap_or_default(),
    )
}

/// How one delivery ended.
struct Outcome {
    delivered: bool,
    attempts: u32,
    detail: String,
}

fn spawn_worker(
    name: &'static str,
    queue: usize,
    journal: &OutcomeJournal,
    deliver: impl Fn(&Event, &HookCounters) -> Outcome + Send + 'static,
) -> std::io::Result<Worker> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Arc<Event>>(queue);
    let counters = Arc::new(HookCounters::default());
    let shared = Arc::clone(&counters);
    let journal = journal.clone();
    let thread = thread::Builder::new()
        .name(format!("fenrir-hook-{name}"))
        .spawn(move || work(name, &receiver, &shared, &journal, &deliver))?;
    Ok(Worker {
        name,
        sender: Some(sender),
        counters,
        thread: Some(thread),
    })
}

fn work(
    name: &'static str,
    receiver: &Receiver<Arc<Event>>,
    counters: &HookCounters,
    journal: &OutcomeJournal,
    deliver: &impl Fn(&Event, &HookCounters) -> Outcome,
) {
    let mut journald = journal.socket.clone().map(JournaldSink::new);
    while let Ok(event) = receiver.recv() {
        let outcome = deliver(&event, counters);
        let package = &event.parsed_data.package;
        if outcome.delivered {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            debug!(hook = name, package = %package, attempts = outcome.attempts, "hook delivered");
        } else {
            let failed = counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                hook = name,
                package = %package,
                attempts = outcome.attempts,
                failed,
                error = %outcome.detail,
                "hook failed"
            );
        }
        if let Some(journald) = journald.as_mut() {
            let fields = outcome_fields(name, &event, &outcome, &journal.host);
            if let Err(err) = journald.send_fields(&fields) {
                debug!(hook = name, error = %err, "cannot record the hook outcome in journald");
            }
        }
    }
}

fn outcome_fields(
    name: &str,
    event: &Event,
    outcome: &Outcome,
    host: &str,
) -> Vec<(String, String)> {
    let verdict = if outcome.delivered {
        "delivered"
    } else {
        "failed"
    };
    let mut fields = vec![
        (
            "MESSAGE".to_owned(),
            format!(
                "Hook {name} {verdict} for {}: {}",
                event.severity.as_str(),
                event.description
            ),
        ),
        (
            "PRIORITY".to_owned(),
            if outcome.delivered { "6" } else { "4" }.to_owned(),
        ),
        ("FENRIR_HOOK".to_owned(), name.to_owned()),
        ("FENRIR_HOOK_OUTCOME".to_owned(), verdict.to_owned()),
        (
            "FENRIR_HOOK_ATTEMPTS".to_owned(),
            outcome.attempts.to_string(),
        ),
        ("FENRIR_HOST".to_owned(), host.to_owned()),
        (
            "FENRIR_PACKAGE".to_owned(),
            event.parsed_data.package.clone(),
        ),
        (
            "FENRIR_CATEGORY".to_owned(),
            event.category.as_str().to_owned(),
        ),
        (
            "FENRIR_SEVERITY".to_owned(),
            event.severity.as_str().to_owned(),
        ),
        (
            "FENRIR_TIMESTAMP".to_owned(),
            event.parsed_data.timestamp.clone(),
        ),
    ];
    if !outcome.detail.is_empty() {
        fields.push((
            "FENRIR_HOOK_DETAIL".to_owned(),
            escape_control(&outcome.detail).into_owned(),
        ));
    }
    fields
}

fn run_exec(config: &ExecHookConfig, event: &Event, _counters: &HookCounters) -> Outcome {
    let failed = |detail: String| Outcome {
        delivered: false,
        attempts: 1,
        detail,
    };
    let Some((program, args)) = config.command.split_first() else {
        return failed("no program".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("FENRIR_SEVERITY", event.severity.as_str())
        // Its own process group, so an overrun kills whatever the hook started too.
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return failed(format!("cannot start {program}: {err}")),
    };
    let body = event.to_json_line() + "\n";
    let stdin = child.stdin.take();
    // A hook that does not read its input must not block the worker: write on the side.
    let writer = thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(body.as_bytes());
        }
    });
    let stderr = child.stderr.take();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(4096).read_to_string(&mut text);
        }
        text
    });

    let deadline = Instant::now() + Duration::from_millis(config.timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(err) => return failed(format!("cannot wait for {program}: {err}")),
        }
    };
    let Some(status) = status else {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = writer.join();
        return failed(format!(
            "killed after its timeout of {} ms",
            config.timeout_ms
        ));
    };
    let _ = writer.join();
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        Outcome {
            delivered: true,
            attempts: 1,
            detail: String::new(),
        }
    } else {
        failed(format!("exited with {status}: {}", stderr.trim()))
    }
}

fn webhook_agent(config: &WebhookConfig) -> ureq::Agent {
    let agent_config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
        .http_status_as_error(false)
        .user_agent(concat!("fenrir/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::new_with_config(agent_config)
}

fn post_webhook(
    agent: &ureq::Agent,
    config: &WebhookConfig,
    event: &Event,
    counters: &HookCounters,
) -> Outcome {
    let body = event.to_json_line();
    let mut backoff = Duration::from_millis(config.retry_initial_ms);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut request = agent
            .post(&config.url)
            .header("Content-Type", "application/json");
        for (name, value) in &config.headers {
            request = request.header(name, value);
        }
        let detail = match request.send(body.as_bytes()) {
            Ok(response) if response.status().is_success() => {
                return Outcome {
                    delivered: true,
                    attempts,
                    detail: String::new(),
                }
            }
            Ok(response) => format!("HTTP status {}", response.status()),
            Err(err) => err.to_string(),
        };
        if attempts > config.retries {
            return Outcome {
                delivered: false,
                attempts,
                detail,
            };
        }
        debug!(attempts, error = %detail, "webhook attempt failed; retrying");
        counters.retries.fetch_add(1, Ordering::Relaxed);
        thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(config.retry_max_ms));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::net::TcpListener;

    use chrono::NaiveDate;

    use super::*;
    use crate::event::Category;
    use crate::parse::PackageChange;

    fn event(package: &str, severity: Severity) -> Event {
        let change = PackageChange {
            category: Category::PackageInstall,
            package: package.into(),
            arch: None,
            old_version: None,
            new_version: Some("1".into()),
            timestamp: NaiveDate::from_ymd_opt(2026, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("valid time"),
            raw_line: String::new(),
            last_state: None,
        };
        let mut event = Event::from_change(&change, "h", "dpkg");
        event.severity = severity;
        event
    }

    fn exec_hooks(dir: &std::path::Path, extra: &str) -> (Hooks, PathBuf) {
        let out = dir.join("received");
        let config: HooksConfig = toml::from_str(&format!(
            "{extra}\n[exec]\ncommand = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n",
            out.display()
        ))
        .expect("valid");
        config.validate().expect("valid");
        let journal = OutcomeJournal {
            socket: None,
            host: "h".into(),
        };
        let hooks = Hooks::start(&config, &journal)
            .expect("started")
            .expect("a hook");
        (hooks, out)
    }

    #[test]
    fn only_events_at_the_threshold_reach_the_exec_hook_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut hooks, out) = exec_hooks(dir.path(), "");
        hooks.submit(&event("vim", Severity::Medium));
        hooks.submit(&event("xmrig", Severity::High));
        hooks.submit(&event("xmrig", Severity::High));
        hooks.submit(&event("socat", Severity::Critical));
        assert_eq!(hooks.duplicates, 1);
        let stats = hooks.close(Duration::from_secs(10));
        assert_eq!(stats[0].delivered, 2);
        let text = std::fs::read_to_string(out).expect("hook output");
        let packages: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["parsed_data"]
                    ["package"]
                    .to_string()
            })
            .collect();
        assert_eq!(packages, ["\"xmrig\"", "\"socat\""]);
    }

    #[test]
    fn the_rate_limit_holds_back_what_exceeds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut hooks, _) = exec_hooks(dir.path(), "rate_limit_per_minute = 2");
        for n in 0..5 {
            hooks.submit(&event(&format!("p{n}"), Severity::High));
        }
        assert_eq!(hooks.rate_limited, 3);
        let stats = hooks.close(Duration::from_secs(10));
        assert_eq!(stats[0].delivered, 2);
    }

    #[test]
    fn an_overrunning_exec_hook_is_killed() {
        let config = ExecHookConfig {
            command: vec!["/bin/sleep".into(), "30".into()],
            timeout_ms: 200,
        };
        let started = Instant::now();
        let outcome = run_exec(
            &config,
            &event("x", Severity::High),
            &HookCounters::default(),
        );
        assert!(!outcome.delivered);
        assert!(outcome.detail.contains("timeout"), "{}", outcome.detail);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn the_webhook_posts_json_and_retries_a_failing_receiver() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let server = thread::spawn(move || {
            let mut bodies = Vec::new();
            for (n, stream) in listener.incoming().take(2).enumerate() {
                let mut stream = stream.expect("stream");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("header");
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; length];
                std::io::Read::read_exact(&mut reader, &mut body).expect("body");
                bodies.push(String::from_utf8(body).expect("utf-8"));
                let status = if n == 0 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
            bodies
        });
        let config = WebhookConfig {
            url,
            timeout_ms: 2_000,
            retries: 2,
            retry_initial_ms: 10,
            retry_max_ms: 20,
            headers: BTreeMap::new(),
        };
        let counters = HookCounters::default();
        let outcome = post_webhook(
            &webhook_agent(&config),
            &config,
            &event("xmrig", Severity::High),
            &counters,
        );
        assert!(outcome.delivered, "{}", outcome.detail);
        assert_eq!(outcome.attempts, 2);
        let bodies = server.join().expect("server");
        assert!(bodies[1].contains("\"xmrig\""), "{bodies:?}");
    }

    #[test]
    fn bad_hook_settings_are_rejected() {
        for bad in [
            "[webhook]\nurl = \"ftp://x\"",
            "[webhook]\nurl = \"http://\"",
            "[exec]\ncommand = []",
            "queue = 0",
        ] {
            let config: HooksConfig = toml::from_str(bad).expect("parses");
            assert!(config.validate().is_err(), "{bad}");
        }
    }
}
