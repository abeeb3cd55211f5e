//! `fenrir-sensor mcp` driven by a scripted client speaking the Model Context Protocol to the
//! real binary over its stdin and stdout: every request's response is checked field by field,
//! garbage included.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context as _};
use fenrir_tests::sensor::binary;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// A client session with a running server.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    responses: Receiver<String>,
}

impl Session {
    fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary()?)
            .arg("mcp")
            .args(args)
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start fenrir-sensor mcp")?;
        let stdin = child.stdin.take().context("stdin is piped")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (sender, responses) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin: Some(stdin),
            responses,
        })
    }

    /// Sends raw bytes as one message line.
    fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("input already closed")?;
        stdin.write_all(bytes)?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes the server's input and waits for it to exit.
    fn finish(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        drop(self.stdin.take());
        Ok(self.child.wait()?)
    }

    /// Sends a message and returns the one response line, parsed.
    fn exchange_raw(&mut self, bytes: &[u8]) -> anyhow::Result<Value> {
        self.send_raw(bytes)?;
        let line = self
            .responses
            .recv_timeout(WAIT)
            .context("no response from the server")?;
        serde_json::from_str(&line).with_context(|| format!("response is not JSON: {line}"))
    }

    fn exchange(&mut self, request: &Value) -> anyhow::Result<Value> {
        self.exchange_raw(request.to_string().as_bytes())
    }

    /// Sends a message that must get no response.
    fn notify(&mut self, message: &Value) -> anyhow::Result<()> {
        self.send_raw(message.to_string().as_bytes())?;
        if let Ok(line) = self.responses.recv_timeout(Duration::from_millis(500)) {
            bail!("a notification was answered: {line}");
        }
        Ok(())
    }

    fn call(&mut self, id: u64, tool: &str, arguments: &Value) -> anyhow::Result<Value> {
        self.exchange(&json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_error(response: &Value, id: &Value, code: i64) {
    assert_eq!(response["jsonrpc"], "2.0", "{response}");
    assert_eq!(&response["id"], id, "{response}");
    assert_eq!(response["error"]["code"], code, "{response}");
    assert!(response["error"]["message"].is_string(), "{response}");
    assert!(response.get("result").is_none(), "{response}");
}

/// The log of a real host, where apt's history names a requesting user.
fn corpus_log(dir: &Path) -> anyhow::Result<Option<String>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let dpkg = corpus.join("dpkg/teliten__log.pinga__dpkg.log");
    let history = corpus.join("other/apt_history/teliten__log.pinga__apt__history.log");
    if !dpkg.exists() || !history.exists() {
        println!("skipping: the corpus is not at {}", corpus.display());
        return Ok(None);
    }
    std::fs::create_dir_all(dir.join("apt"))?;
    std::fs::copy(dpkg, dir.join("dpkg.log"))?;
    std::fs::copy(history, dir.join("apt/history.log"))?;
    Ok(Some(dir.join("dpkg.log").display().to_string()))
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one session's transcript, each response checked where it is read"
)]
fn a_scripted_session_gets_answers_field_by_field() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(log) = corpus_log(dir.path())? else {
        return Ok(());
    };
    let state = dir.path().join("state").display().to_string();
    let mut session = Session::start(&[
        "--dpkg-log",
        &log,
        "--state-dir",
        &state,
        "--host",
        "mcp-host",
        "--now",
        "2021-08-21T00:00:00Z",
    ])?;

    // initialize: the client's version is spoken back, the tools capability offered.
    let response = session.exchange(&json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "fenrir-test-client", "version": "1.0"}},
    }))?;
    assert_eq!(response["jsonrpc"], "2.0");
    assert_eq!(response["id"], 1);
    let result = &response["result"];
    assert_eq!(result["protocolVersion"], "2025-03-26");
    assert_eq!(result["capabilities"]["tools"]["listChanged"], false);
    assert_eq!(result["serverInfo"]["name"], "fenrir");
    assert!(result["serverInfo"]["version"].is_string());
    assert!(response.get("error").is_none());

    session.notify(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;

    // A version this server does not speak: it offers its newest.
    let response = session.exchange(&json!({
        "jsonrpc": "2.0", "id": "again", "method": "initialize",
        "params": {"protocolVersion": "1999-01-01", "capabilities": {}},
    }))?;
    assert_eq!(response["id"], "again");
    assert_eq!(response["result"]["protocolVersion"], "2025-06-18");

    let response = session.exchange(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))?;
    assert_eq!(response["id"], 2);
    assert_eq!(response["result"], json!({}));

    // tools/list: both tools, each with a JSON Schema of its arguments.
    let response = session.exchange(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))?;
    let tools = response["result"]["tools"]
        .as_array()
        .context("tools array")?;
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["search_package_events", "who_changed"]);
    for tool in tools {
        assert!(tool["description"].as_str().is_some_and(|d| d.len() > 20));
        assert_eq!(tool["inputSchema"]["type"], "object");
        assert_eq!(tool["inputSchema"]["additionalProperties"], false);
    }
    let search = &tools[0]["inputSchema"]["properties"];
    for property in [
        "since",
        "until",
        "types",
        "package",
        "user",
        "min_severity",
        "managers",
        "limit",
    ] {
        assert!(search[property]["type"].is_string(), "{property}: {search}");
    }
    assert_eq!(tools[1]["inputSchema"]["required"], json!(["package"]));

    // search_package_events: what one user installed in the day before the fixed now.
    let response = session.call(
        4,
        "search_package_events",
        &json!({"since": "24h", "types": ["install"], "user": "adobrin", "limit": 100}),
    )?;
    assert_eq!(response["id"], 4);
    let result = &response["result"];
    assert_eq!(result["isError"], false);
    let structured = &result["structuredContent"];
    let events = structured["events"].as_array().context("events")?;
    assert_eq!(structured["count"], events.len());
    let rsync = events
        .iter()
        .find(|e| e["raw_line"] == "2021-08-20 10:38:58 install rsync:amd64 <none> 3.1.3-6")
        .context("the rsync install")?;
    assert_eq!(rsync["category"], "package_install");
    assert_eq!(rsync["package"], "rsync");
    assert_eq!(rsync["new_version"], "3.1.3-6");
    assert_eq!(rsync["time"], "2021-08-20T10:38:58+00:00");
    assert_eq!(rsync["who"], "adobrin");
    assert_eq!(rsync["command"], "apt install rsync");
    assert_eq!(rsync["host"], "mcp-host");
    for event in events {
        assert_eq!(event["category"], "package_install");
        assert_eq!(event["who"], "adobrin");
        assert!(
            event["time"]
                .as_str()
                .is_some_and(|t| t.starts_with("2021-08-20")),
            "{event}"
        );
    }
    // The text content carries the same answer for clients without structured content.
    assert_eq!(result["content"][0]["type"], "text");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap_or(""))?;
    assert_eq!(&text, structured);

    // The limit keeps the newest.
    let response = session.call(5, "search_package_events", &json!({"limit": 2}))?;
    let structured = &response["result"]["structuredContent"];
    assert_eq!(structured["count"], 2);
    assert!(structured["omitted"].as_u64().is_some_and(|n| n > 0));

    // who_changed: each change of the package with the chain behind it.
    let response = session.call(6, "who_changed", &json!({"package": "rsync"}))?;
    let structured = &response["result"]["structuredContent"];
    assert_eq!(structured["package"], "rsync");
    let events = structured["events"].as_array().context("events")?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["chain"][0]["recorded_by"], "apt history");
    assert_eq!(events[0]["chain"][0]["user"], "adobrin");
    assert_eq!(events[0]["chain"][0]["command"], "apt install rsync");
    assert_eq!(events[0]["chain_text"], "apt install rsync (adobrin)");

    // A filter value that cannot be read is a tool error the assistant can correct.
    let response = session.call(
        7,
        "search_package_events",
        &json!({"since": "last tuesday"}),
    )?;
    assert_eq!(response["id"], 7);
    assert_eq!(response["result"]["isError"], true);
    let message = response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert!(
        message.contains("since") && message.contains("24h"),
        "{message}"
    );

    // After all of that the server still answers.
    let response = session.exchange(&json!({"jsonrpc": "2.0", "id": 22, "method": "ping"}))?;
    assert_eq!(response["id"], 22);

    // End of input ends the server cleanly.
    let status = session.finish()?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn garbage_and_bad_requests_get_their_errors_and_the_server_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state").display().to_string();
    let log = dir.path().join("dpkg.log").display().to_string();
    let mut session = Session::start(&["--dpkg-log", &log, "--state-dir", &state])?;

    // Protocol errors.
    let cases: Vec<(Vec<u8>, Value, i64)> = vec![
        (b"{not json".to_vec(), Value::Null, -32700),
        (b"\xff\xfe\x00garbage".to_vec(), Value::Null, -32700),
        (b"[]".to_vec(), Value::Null, -32600),
        (b"42".to_vec(), Value::Null, -32600),
        (br#"{"jsonrpc":"1.0","id":8,"method":"ping"}"#.to_vec(), json!(8), -32600),
        (br#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#.to_vec(), Value::Null, -32600),
        (br#"{"jsonrpc":"2.0","id":9,"method":7}"#.to_vec(), json!(9), -32600),
        (br#"{"jsonrpc":"2.0","id":10,"method":"resources/list"}"#.to_vec(), json!(10), -32601),
        (br#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"rm_rf"}}"#.to_vec(), json!(11), -32602),
        (br#"{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"search_package_events","arguments":{"limit":"ten"}}}"#.to_vec(), json!(12), -32602),
        (br#"{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"search_package_events","arguments":{"colour":"red"}}}"#.to_vec(), json!(13), -32602),
        (br#"{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"who_changed","arguments":{}}}"#.to_vec(), json!(14), -32602),
        (br#"{"jsonrpc":"2.0","id":15,"method":"tools/call","params":[1,2]}"#.to_vec(), json!(15), -32602),
        (br#"{"jsonrpc":"2.0","id":16,"method":"initialize","params":{}}"#.to_vec(), json!(16), -32602),
    ];
    for (request, id, code) in cases {
        let response = session.exchange_raw(&request)?;
        assert_error(&response, &id, code);
    }

    // A message longer than the server reads is refused without buffering it.
    let mut huge = br#"{"jsonrpc":"2.0","id":17,"method":"ping","params":{"x":""#.to_vec();
    huge.extend(vec![b'a'; 2 * 1024 * 1024]);
    huge.extend_from_slice(br#""}}"#);
    let response = session.exchange_raw(&huge)?;
    assert_error(&response, &Value::Null, -32700);

    // Unknown notifications are ignored, not answered.
    session.notify(&json!({"jsonrpc": "2.0", "method": "notifications/whatever"}))?;

    // A batch gets one array with an answer per request and none for its notification.
    let response = session.exchange(&json!([
        {"jsonrpc": "2.0", "id": 20, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 21, "method": "nope"},
    ]))?;
    let answers = response.as_array().context("a batch answer")?;
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["id"], 20);
    assert_eq!(answers[0]["result"], json!({}));
    assert_error(&answers[1], &json!(21), -32601);

    let response = session.exchange(&json!({"jsonrpc": "2.0", "id": 22, "method": "ping"}))?;
    assert_eq!(response["id"], 22);
    assert_eq!(response["result"], json!({}));
    assert!(session.finish()?.success());
    Ok(())
}
