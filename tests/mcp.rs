//! MCP end to end: `tt mcp` over stdio (a real child process speaking JSON-RPC lines) and
//! `/mcp` on a real `tt serve` over streamable HTTP. Initialize, list tools, a read tool, a
//! write tool, refusals without the scope or without a key, and resources.

mod common;
mod townhall;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use common::{tt_bin, TestTown};
use townhall::{key, Server};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

/// `tt mcp` with `TT_API_KEY=key`, one JSON-RPC message per line each way. Killed on drop.
struct Stdio_ {
    child: std::process::Child,
    lines: mpsc::Receiver<Value>,
}

impl Stdio_ {
    fn start(town: &TestTown, key: Option<&str>) -> Stdio_ {
        let mut cmd = Command::new(tt_bin());
        cmd.arg("mcp")
            .env("TT_TOWN", town.path())
            .env_remove("TT_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(k) = key {
            cmd.env("TT_API_KEY", k);
        }
        let mut child = cmd.spawn().expect("tt mcp");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                let v = serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Stdio_ { child, lines }
    }

    fn send(&mut self, msg: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends a request and returns the answer with the same id.
    fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        );
        loop {
            let v = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .expect("an answer");
            if v["id"] == id {
                return v;
            }
        }
    }
}

impl Drop for Stdio_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool_text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn check_tools(list: &Value) {
    let tools = list["result"]["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for n in [
        "status",
        "list_agents",
        "list_tasks",
        "inbox",
        "send",
        "assign",
        "complete_task",
        "backlog",
        "dlq",
        "dlq_retry",
        "swap",
        "shadow_report",
    ] {
        assert!(names.contains(&n), "no tool {n}: {names:?}");
    }
    let by = |n: &str| tools.iter().find(|t| t["name"] == n).unwrap().clone();
    assert_eq!(by("status")["annotations"]["readOnlyHint"], true);
    assert_eq!(by("swap")["annotations"]["destructiveHint"], true);
    assert_eq!(by("send")["annotations"]["readOnlyHint"], false);
    let schema = &by("send")["inputSchema"];
    assert_eq!(schema["properties"]["to"]["type"], "string", "{schema}");
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("body")),
        "{schema}"
    );
}

#[test]
fn stdio_serves_tools_and_resources_within_the_keys_scope() {
    let town = TestTown::new();
    town.spawn_agents(&["alice"]);
    town.ok(&["assign", "alice", "write the docs"]);
    let writer = key(&town, "claude", "write");
    let mut mcp = Stdio_::start(&town, Some(&writer));
    mcp.send(INIT);
    let init = mcp.lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "tinytown", "{init}");
    mcp.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    check_tools(&mcp.call(2, "tools/list", json!({})));

    let status = mcp.call(3, "tools/call", json!({"name": "status", "arguments": {}}));
    let st: Value = serde_json::from_str(&tool_text(&status)).unwrap();
    assert_eq!(st["agents"][0]["name"], "alice");
    let sent = mcp.call(
        4,
        "tools/call",
        json!({"name": "send", "arguments": {"to": "alice", "body": "from claude"}}),
    );
    assert_eq!(sent["result"]["isError"], false, "{sent}");
    assert_eq!(
        town.inbox("alice")["waiting"][1]["message"]["body"],
        "from claude"
    );
    let done = mcp.call(
        5,
        "tools/call",
        json!({"name": "complete_task", "arguments": {"id": "t1", "text": "ok"}}),
    );
    assert_eq!(town.task("t1")["state"], "completed", "{done}");
    // A refusal of the town is a tool error naming the thing, with the hint.
    let again = mcp.call(
        6,
        "tools/call",
        json!({"name": "complete_task", "arguments": {"id": "t1", "text": "ok"}}),
    );
    assert_eq!(again["result"]["isError"], true);
    assert!(
        tool_text(&again).starts_with("409") && tool_text(&again).contains("t1"),
        "{again}"
    );
    // Above the key's scope: refused, audited, nothing changed.
    let swap = mcp.call(
        7,
        "tools/call",
        json!({"name": "swap", "arguments": {"agent": "alice", "plugin": "x.wasm"}}),
    );
    assert!(
        swap["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs scope manage"),
        "{swap}"
    );
    assert!(town.events().iter().any(|e| e["type"] == "audit"
        && e["who"] == "claude"
        && e["body"] == "mcp swap"
        && e["status"] == "403"
        && e["from"] == "stdio"));

    let res = mcp.call(8, "resources/list", json!({}));
    let uris: Vec<&str> = res["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            "tinytown://town",
            "tinytown://agents/alice",
            "tinytown://tasks/t1"
        ]
    );
    let task = mcp.call(9, "resources/read", json!({"uri": "tinytown://tasks/t1"}));
    let text = task["result"]["contents"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap()["state"],
        "completed"
    );
    let missing = mcp.call(10, "resources/read", json!({"uri": "tinytown://tasks/t9"}));
    assert!(
        missing["error"]["message"].as_str().unwrap().contains("t9"),
        "{missing}"
    );
}

#[test]
fn stdio_refuses_to_start_without_a_valid_key() {
    let town = TestTown::new();
    let out = common::run(town.command(&["mcp"]));
    common::refusal(
        &["mcp"],
        2,
        &common::expect_code(&["mcp"], &out, 2),
        &["API key"],
    );
    let mut c = town.command(&["mcp"]);
    c.env("TT_API_KEY", "tt_nope_nope");
    let out = common::run(c);
    common::refusal(
        &["mcp"],
        1,
        &common::expect_code(&["mcp"], &out, 1),
        &["not valid"],
    );
}

fn post_mcp(s: &Server, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = townhall::agent()
        .post(&s.url("/mcp"))
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18");
    if let Some(t) = token {
        r = r.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = r.send_json(body).expect("POST /mcp");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn http_mcp_needs_a_key_and_keeps_no_session() {
    let town = TestTown::new();
    town.spawn_agents(&["alice"]);
    let s = Server::start(&town, &[]);
    let reader = key(&town, "viewer", "read");
    let writer = key(&town, "conductor-bot", "write");
    let init: Value = serde_json::from_str(INIT).unwrap();
    let (status, _) = post_mcp(&s, None, init.clone());
    assert_eq!(status, 401);
    let (status, answer) = post_mcp(&s, Some(&reader), init);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["serverInfo"]["name"], "tinytown");
    // Every further request stands alone: no session id, the key in each.
    let (_, list) = post_mcp(
        &s,
        Some(&reader),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    check_tools(&list);
    let call = |token: &str, id: u64, name: &str, args: Value| {
        post_mcp(&s, Some(token), json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}})).1
    };
    let agents = call(&reader, 3, "list_agents", json!({}));
    assert!(tool_text(&agents).contains("\"alice\""), "{agents}");
    let refused = call(&reader, 4, "send", json!({"to": "alice", "body": "no"}));
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs scope write"),
        "{refused}"
    );
    assert!(
        town.inbox("alice")["waiting"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a refusal changes nothing"
    );
    let sent = call(
        &writer,
        5,
        "send",
        json!({"to": "alice", "body": "over http"}),
    );
    assert_eq!(sent["result"]["isError"], false, "{sent}");
    assert_eq!(
        town.inbox("alice")["waiting"][0]["message"]["body"],
        "over http"
    );
    let audit = town
        .events()
        .into_iter()
        .find(|e| e["type"] == "audit" && e["who"] == "conductor-bot")
        .expect("audited");
    assert!(
        audit["from"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{audit}"
    );
}
