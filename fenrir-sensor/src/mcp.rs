//! A Model Context Protocol server on stdin and stdout, so an assistant can ask what changed.
//!
//! In: JSON-RPC 2.0 messages, one per line (the protocol's stdio transport). Out: one response
//! line per request, none for notifications. State: none between messages; every tool call
//! reads the event store and the logs afresh, like `fenrir-sensor query`.
//!
//! Methods: `initialize` (the protocol versions of [`PROTOCOL_VERSIONS`], the `tools`
//! capability), `ping`, `tools/list` and `tools/call` with two tools: `search_package_events`
//! takes the filters of `query`, `who_changed` a package and returns each of its changes with
//! the chain of processes behind it. Malformed input gets the JSON-RPC error it calls for —
//! parse error, invalid request, unknown method, invalid params — and the server goes on; a
//! filter value that cannot be read is a tool result with `isError`, so the assistant can
//! correct itself.

use std::io::{BufRead, Write};

use serde_json::{json, Map, Value};
use tracing::debug;

use crate::config::Config;
use crate::event::escape_control;
use crate::query::cli::{FilterArgs, SourceArgs};
use crate::query::output::{escape_strings, row};
use crate::query::{self, Answer, QueryError};

/// The protocol versions this server speaks, newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// The longest message read; longer ones are answered with a parse error and skipped.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Events a tool returns when the call names no limit, and the most it returns.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 1000;

/// JSON-RPC's error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;

/// Serves requests from `input` until it ends, answering on `out`.
///
/// # Errors
/// Only when `input` cannot be read or `out` cannot be written.
pub fn serve(
    sources: &SourceArgs,
    config: &Config,
    mut input: impl BufRead,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let server = Server { sources, config };
    let mut line = Vec::new();
    loop {
        line.clear();
        if crate::replay::read_bounded_line(&mut input, &mut line, MAX_MESSAGE_BYTES)? == 0 {
            return Ok(());
        }
        let Some(response) = server.handle_line(&line) else {
            continue;
        };
        let mut text = response.to_string();
        text.push('\n');
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
}

struct Server<'a> {
    sources: &'a SourceArgs,
    config: &'a Config,
}

/// A JSON-RPC error response.
fn error(id: Value, code: i64, message: &str) -> Value {
    reply(id, "error", json!({"code": code, "message": message}))
}

fn success(id: Value, result: Value) -> Value {
    reply(id, "result", result)
}

fn reply(id: Value, kind: &str, body: Value) -> Value {
    let mut reply = Map::new();
    reply.insert("jsonrpc".to_owned(), Value::String("2.0".to_owned()));
    reply.insert("id".to_owned(), id);
    reply.insert(kind.to_owned(), body);
    Value::Object(reply)
}

impl Server<'_> {
    /// Answers one line: a message, a batch of messages, or garbage.
    fn handle_line(&self, line: &[u8]) -> Option<Value> {
        if line.len() > MAX_MESSAGE_BYTES {
            return Some(error(
                Value::Null,
                PARSE_ERROR,
                &format!("message longer than {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let message: Value = match serde_json::from_slice(line) {
            Ok(message) => message,
            Err(err) => {
                debug!(error = %err, "unreadable message");
                return Some(error(
                    Value::Null,
                    PARSE_ERROR,
                    "parse error: not a JSON value",
                ));
            }
        };
        match message {
            Value::Array(batch) if batch.is_empty() => {
                Some(error(Value::Null, INVALID_REQUEST, "empty batch"))
            }
            Value::Array(batch) => {
                let answers: Vec<Value> =
                    batch.into_iter().filter_map(|m| self.handle(m)).collect();
                (!answers.is_empty()).then_some(Value::Array(answers))
            }
            message => self.handle(message),
        }
    }

    /// Answers one message; `None` for a notification or a response.
    fn handle(&self, message: Value) -> Option<Value> {
        let Value::Object(message) = message else {
            return Some(error(
                Value::Null,
                INVALID_REQUEST,
                "a message must be an object",
            ));
        };
        let id = match message.get("id") {
            None => None,
            Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id.clone()),
            Some(_) => {
                return Some(error(
                    Value::Null,
                    INVALID_REQUEST,
                    "id must be a string or a number",
                ))
            }
        };
        let reply_id = id.clone().unwrap_or(Value::Null);
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Some(error(reply_id, INVALID_REQUEST, "jsonrpc must be \"2.0\""));
        }
        let Some(method) = message.get("method") else {
            // A response to a request this server never sends: nothing to answer.
            if message.contains_key("result") || message.contains_key("error") {
                return None;
            }
            return Some(error(reply_id, INVALID_REQUEST, "method is missing"));
        };
        let Some(method) = method.as_str() else {
            return Some(error(reply_id, INVALID_REQUEST, "method must be a string"));
        };
        let params = match message.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(params)) => params.clone(),
            Some(_) => return Some(error(reply_id, INVALID_PARAMS, "params must be an object")),
        };

        // Notifications are never answered, not even with an error.
        let id = id?;
        let outcome = match method {
            "initialize" => Self::initialize(&params),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": tools()})),
            "tools/call" => self.call(&params),
            _ => Err((
                METHOD_NOT_FOUND,
                format!("method not found: {}", escape_control(method)),
            )),
        };
        Some(match outcome {
            Ok(result) => success(id, result),
            Err((code, message)) => error(id, code, &message),
        })
    }

    fn initialize(params: &Map<String, Value>) -> Result<Value, (i64, String)> {
        let Some(requested) = params.get("protocolVersion").and_then(Value::as_str) else {
            return Err((
                INVALID_PARAMS,
                "protocolVersion must be a string".to_owned(),
            ));
        };
        // The client's version when this server speaks it, else the newest this one speaks.
        let version = PROTOCOL_VERSIONS
            .iter()
            .find(|v| **v == requested)
            .unwrap_or(&PROTOCOL_VERSIONS[0]);
        Ok(json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {
                "name": "fenrir",
                "title": "Fenrir package-change sensor",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "instructions": "Answers questions about package installs, upgrades, downgrades and \
                removals on this host, from Fenrir's event store and dpkg's and apt's logs. \
                Times are RFC 3339; spans such as 24h or 7d count back from now.",
        }))
    }

    fn call(&self, params: &Map<String, Value>) -> Result<Value, (i64, String)> {
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Err((INVALID_PARAMS, "name must be a string".to_owned()));
        };
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(arguments)) => arguments.clone(),
            Some(_) => return Err((INVALID_PARAMS, "arguments must be an object".to_owned())),
        };
        let (filter, limit) = match name {
            "search_package_events" => search_arguments(&arguments)?,
            "who_changed" => who_changed_arguments(&arguments)?,
            _ => {
                return Err((
                    INVALID_PARAMS,
                    format!("unknown tool: {}", escape_control(name)),
                ))
            }
        };

        let answer = match self.answer(&filter, limit) {
            Ok(answer) => answer,
            Err(Failure::Filter(message)) => return Ok(tool_error(&message)),
            Err(Failure::Sources(message)) => return Err((INTERNAL_ERROR, message)),
        };
        let events: Vec<Value> = answer
            .events
            .iter()
            .map(|found| {
                let event = found.value();
                if name == "who_changed" {
                    changed_by(&event)
                } else {
                    summarize(&event)
                }
            })
            .collect();
        let mut structured = json!({
            "count": events.len(),
            "omitted": answer.stats.omitted,
            "skipped_store_lines": answer.stats.store_malformed,
            "events": events,
        });
        if name == "who_changed" {
            structured["package"] = arguments["package"].clone();
        }
        escape_strings(&mut structured);
        Ok(json!({
            "content": [{"type": "text", "text": structured.to_string()}],
            "structuredContent": structured,
            "isError": false,
        }))
    }

    fn answer(&self, filter: &FilterArgs, limit: u64) -> Result<Answer, Failure> {
        let now = self
            .sources
            .now()
            .map_err(|e| Failure::Filter(mcp_message(&e)))?;
        let filter = filter
            .filter(now, self.sources.now.is_some())
            .map_err(|e| Failure::Filter(mcp_message(&e)))?;
        let sources = self
            .sources
            .sources(self.config)
            .map_err(|e| Failure::Sources(format!("{e:#}")))?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        query::run(&filter, &sources, Some(limit)).map_err(|e| match e {
            QueryError::Filter { .. } => Failure::Filter(mcp_message(&e)),
            other => Failure::Sources(
                escape_control(&format!("{:#}", anyhow::Error::new(other))).into_owned(),
            ),
        })
    }
}

/// Why a tool call found no answer.
enum Failure {
    /// A filter value the assistant can correct.
    Filter(String),
    /// The sources could not be read.
    Sources(String),
}

/// Words a filter error the way the tool's arguments are named, not the command line's.
fn mcp_message(err: &QueryError) -> String {
    let text = err.to_string().replace("--min-severity", "min_severity");
    let text = text.replace("--type", "types").replace("--", "");
    escape_control(&text).into_owned()
}

fn tool_error(message: &str) -> Value {
    json!({
        "content": [{"type": "text", "text": message}],
        "isError": true,
    })
}

/// The tools, with JSON Schemas of their arguments.
fn tools() -> Value {
    let time = |what: &str| {
        json!({
            "type": "string",
            "description": format!("{what}: a span before now such as 30m, 24h, 7d or 2w, an RFC 3339 time, or a local date such as 2026-05-03"),
        })
    };
    let limit = json!({
        "type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT,
        "description": "Return at most this many events, the newest",
    });
    json!([
        {
            "name": "search_package_events",
            "title": "Search package changes",
            "description": "Lists package changes on this host (installs, upgrades, downgrades, \
                reinstalls, removals, purges, failed installs), oldest first, with who made \
                each and from where. Covers the time before the sensor ran and while it was \
                down, from dpkg's and apt's logs.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "since": time("Only changes at or after this time"),
                    "until": time("Only changes at or before this time"),
                    "types": {
                        "type": "array",
                        "items": {"type": "string", "enum": [
                            "install", "upgrade", "downgrade", "reinstall", "remove", "purge",
                            "disappear", "install_failed", "scripts", "integrity_mismatch",
                            "conffile_changed", "change_unlogged", "log_tamper"]},
                        "description": "Only these kinds of change",
                    },
                    "package": {"type": "string", "description": "Only packages whose name matches this shell pattern (*, ?, [a-z]); with a colon it matches name:arch"},
                    "user": {"type": "string", "description": "Only changes made by this user: the user, the login user or the user apt recorded; a number matches a uid"},
                    "min_severity": {"type": "string", "enum": ["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"], "description": "Only events at least this severe"},
                    "managers": {"type": "array", "items": {"type": "string"}, "description": "Only changes of these package managers, such as dpkg"},
                    "limit": limit,
                },
                "additionalProperties": false,
            },
        },
        {
            "name": "who_changed",
            "title": "Who changed a package",
            "description": "Lists every change of the packages matching a name, oldest first, \
                each with the chain of processes behind it: the login, each program up to the \
                package manager, and the command typed, or what apt recorded for changes from \
                before the sensor ran.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "package": {"type": "string", "description": "The package name, or a shell pattern (*, ?, [a-z])"},
                    "since": time("Only changes at or after this time"),
                    "until": time("Only changes at or before this time"),
                    "limit": limit,
                },
                "required": ["package"],
                "additionalProperties": false,
            },
        },
    ])
}

/// Reads the arguments named `allowed` from `arguments`, refusing any other.
fn check_names(arguments: &Map<String, Value>, allowed: &[&str]) -> Result<(), (i64, String)> {
    match arguments.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err((
            INVALID_PARAMS,
            format!("unknown argument: {}", escape_control(unknown)),
        )),
        None => Ok(()),
    }
}

fn string(arguments: &Map<String, Value>, name: &str) -> Result<Option<String>, (i64, String)> {
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err((INVALID_PARAMS, format!("{name} must be a string"))),
    }
}

fn strings(arguments: &Map<String, Value>, name: &str) -> Result<Vec<String>, (i64, String)> {
    match arguments.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    (
                        INVALID_PARAMS,
                        format!("{name} must be an array of strings"),
                    )
                })
            })
            .collect(),
        Some(_) => Err((
            INVALID_PARAMS,
            format!("{name} must be an array of strings"),
        )),
    }
}

fn limit(arguments: &Map<String, Value>) -> Result<u64, (i64, String)> {
    match arguments.get("limit") {
        None | Some(Value::Null) => Ok(DEFAULT_LIMIT),
        Some(value) => value
            .as_u64()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                (
                    INVALID_PARAMS,
                    format!("limit must be an integer from 1 to {MAX_LIMIT}"),
                )
            }),
    }
}

fn search_arguments(arguments: &Map<String, Value>) -> Result<(FilterArgs, u64), (i64, String)> {
    check_names(
        arguments,
        &[
            "since",
            "until",
            "types",
            "package",
            "user",
            "min_severity",
            "managers",
            "limit",
        ],
    )?;
    let filter = FilterArgs {
        since: string(arguments, "since")?,
        until: string(arguments, "until")?,
        types: strings(arguments, "types")?,
        package: string(arguments, "package")?,
        user: string(arguments, "user")?,
        min_severity: string(arguments, "min_severity")?,
        manager: strings(arguments, "managers")?,
    };
    Ok((filter, limit(arguments)?))
}

fn who_changed_arguments(
    arguments: &Map<String, Value>,
) -> Result<(FilterArgs, u64), (i64, String)> {
    check_names(arguments, &["package", "since", "until", "limit"])?;
    let Some(package) = string(arguments, "package")?.filter(|p| !p.is_empty()) else {
        return Err((INVALID_PARAMS, "package is required".to_owned()));
    };
    let filter = FilterArgs {
        since: string(arguments, "since")?,
        until: string(arguments, "until")?,
        package: Some(package),
        ..FilterArgs::default()
    };
    Ok((filter, limit(arguments)?))
}

/// The facts of an event an assistant needs, without the raw kernel detail.
fn summarize(event: &Value) -> Value {
    let data = &event["parsed_data"];
    let readable = row(event);
    let mut summary = json!({
        "time": data["timestamp"],
        "category": event["category"],
        "severity": event["severity"],
        "package": data["package"],
        "arch": data["arch"],
        "old_version": data["old_version"],
        "new_version": data["new_version"],
        "who": readable.who,
        "from": readable.from,
        "command": readable.command,
        "host": event["host"],
        "manager": event["manager"],
        "description": event["description"],
        "raw_line": event["raw_line"],
    });
    if let Some(observed) = event.get("observed") {
        summary["observed"] = observed.clone();
    }
    if let Some(state) = data.get("last_state") {
        summary["last_state"] = state.clone();
    }
    summary
}

/// An event with the chain of processes behind it, login first.
fn changed_by(event: &Value) -> Value {
    let mut summary = summarize(event);
    let actor = &event["actor"];
    let mut chain: Vec<Value> = Vec::new();
    if actor["source"] == "apt-history" {
        chain.push(json!({
            "user": actor["user"],
            "uid": actor["uid"],
            "command": actor["command"],
            "recorded_by": "apt history",
        }));
    } else if actor.is_object() {
        if let Some(ancestry) = actor["ancestry"].as_array() {
            chain.extend(ancestry.iter().rev().cloned());
        }
        chain.push(json!({
            "pid": actor["pid"],
            "comm": "dpkg",
            "uid": actor["uid"],
            "user": actor["user"],
            "command": actor["dpkg_command"],
        }));
    }
    let text: Vec<String> = chain
        .iter()
        .map(|step| {
            let program = step["comm"]
                .as_str()
                .or_else(|| step["command"].as_str())
                .unwrap_or("?");
            match step["user"].as_str() {
                Some(user) => format!("{program} ({user})"),
                None => program.to_owned(),
            }
        })
        .collect();
    summary["chain"] = Value::Array(chain);
    summary["chain_text"] = Value::String(text.join(" -> "));
    summary["login_user"] = actor["login_user"].clone();
    summary["session_leader"] = actor["session_leader"].clone();
    summary["ssh"] = actor["ssh"].clone();
    summary["tty"] = actor["tty"].clone();
    summary
}
