//! `tt serve` end to end: a real server on a loopback port over a real town (its own
//! redis-server), driven over HTTP. Every route's success and refusal statuses, scopes on every
//! documented route, the audit trail and Redis going away. (Keys, the rate limit, the bind
//! guard and TLS are in `serve_security.rs`; events and metrics in `serve_live.rs`.)

mod common;
mod townhall;

use std::time::Duration;

use serde_json::{json, Value};

use common::TestTown;
use townhall::{assert_problem, key, Server};

#[test]
fn rest_does_what_the_cli_does_and_refuses_with_the_right_status() {
    let town = TestTown::new();
    let s = Server::start(&town, &[]);
    let m = key(&town, "ops", "manage");

    // Agents: spawn, refusals, lifecycle. The CLI sees what REST did (one service layer).
    let a = s.post("/v1/agents", &m, json!({"name": "alice", "role": "worker"}));
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["name"], "alice");
    assert!(town.agent_names().contains(&"alice".to_string()));
    assert_problem(
        &s.post("/v1/agents", &m, json!({"name": "alice"})),
        409,
        &["alice", "already exists"],
    );
    assert_problem(
        &s.post("/v1/agents", &m, json!({"name": "no way!"})),
        422,
        &["no way!"],
    );
    assert_problem(
        &s.post("/v1/agents", &m, json!({"nam": "x"})),
        422,
        &["JSON body"],
    );
    assert_problem(&s.get("/v1/agents/ghost", &m), 404, &["ghost"]);
    assert_eq!(s.ok("/v1/agents/alice", &m)["waiting"], 0);
    assert_eq!(
        s.post("/v1/agents/alice/interrupt", &m, json!({})).body["state"],
        "interrupted"
    );
    assert_eq!(
        s.post("/v1/agents/alice/resume", &m, json!({})).body["state"],
        "idle"
    );
    assert_eq!(
        s.post("/v1/agents/alice/kill", &m, json!({})).body["state"],
        "stopped"
    );
    assert_problem(
        &s.post("/v1/agents/alice/interrupt", &m, json!({})),
        409,
        &["alice", "stopped"],
    );
    assert_eq!(
        s.post("/v1/agents/alice/resume", &m, json!({})).body["state"],
        "idle"
    );

    // Mail.
    let sent = s.post(
        "/v1/mail",
        &m,
        json!({"to": "alice", "body": "hello over http", "urgent": true}),
    );
    assert_eq!(sent.status, 200, "{sent:?}");
    let inbox = s.ok("/v1/inbox/alice", &m);
    assert_eq!(
        inbox["waiting"][0]["message"]["body"], "hello over http",
        "{inbox}"
    );
    assert_eq!(town.inbox("alice")["waiting"].as_array().unwrap().len(), 1);
    assert_problem(
        &s.post("/v1/mail", &m, json!({"to": "ghost", "body": "x"})),
        404,
        &["ghost"],
    );
    assert_problem(
        &s.post(
            "/v1/mail",
            &m,
            json!({"to": "alice", "body": "x", "kind": "shout"}),
        ),
        422,
        &["shout"],
    );
    assert_problem(&s.get("/v1/inbox/ghost", &m), 404, &["ghost"]);
    s.post(
        "/v1/mail",
        &m,
        json!({"to": "conductor", "body": "for the humans", "kind": "info"}),
    );
    assert_eq!(
        s.ok("/v1/inbox/conductor", &m)["waiting"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.post("/v1/inbox/conductor/clear", &m, json!({})).body["cleared"],
        1
    );

    // Tasks: assign, show, move; an illegal move is 409 and changes nothing.
    let t = s.post(
        "/v1/tasks",
        &m,
        json!({"agent": "alice", "description": "write the docs"}),
    );
    assert_eq!(t.body["state"], "assigned", "{t:?}");
    let id = t.body["id"].as_str().unwrap().to_string();
    assert_eq!(s.ok(&format!("/v1/tasks/{id}"), &m)["owner"], "alice");
    let done = s.post(
        &format!("/v1/tasks/{id}/complete"),
        &m,
        json!({"text": "done"}),
    );
    assert_eq!(done.body["state"], "completed", "{done:?}");
    assert_problem(
        &s.post(&format!("/v1/tasks/{id}/cancel"), &m, json!({})),
        409,
        &[&id, "completed"],
    );
    assert_eq!(town.task(&id)["state"], "completed");
    assert_problem(&s.get("/v1/tasks/t999", &m), 404, &["t999"]);
    // A move's body may be left out; a body that is not declared JSON is 415.
    let t2 = s.post(
        "/v1/tasks",
        &m,
        json!({"agent": "alice", "description": "spare"}),
    );
    let t2 = t2.body["id"].as_str().unwrap().to_string();
    let bare = townhall::agent()
        .post(&s.url(&format!("/v1/tasks/{t2}/cancel")))
        .header("Authorization", &format!("Bearer {m}"))
        .send_empty()
        .unwrap();
    assert_eq!(bare.status().as_u16(), 200);
    assert_eq!(town.task(&t2)["state"], "cancelled");
    let text = townhall::agent()
        .post(&s.url(&format!("/v1/tasks/{t2}/fail")))
        .header("Authorization", &format!("Bearer {m}"))
        .header("Content-Type", "text/plain")
        .send("oops")
        .unwrap();
    assert_eq!(text.status().as_u16(), 415);
    assert_problem(
        &s.post("/v1/tasks/t999/fail", &m, json!({"text": "x"})),
        404,
        &["t999"],
    );
    assert_problem(&s.get("/v1/tasks?state=bogus", &m), 422, &["bogus"]);
    assert_problem(
        &s.post(
            "/v1/tasks",
            &m,
            json!({"agent": "ghost", "description": "x"}),
        ),
        404,
        &["ghost"],
    );
    let listed = s.ok("/v1/tasks?state=completed", &m);
    assert_eq!(
        s.ok("/v1/tasks?state=cancelled", &m)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Backlog: add, claim once, the second claim is a conflict; remove.
    let b = s.post(
        "/v1/backlog",
        &m,
        json!({"description": "triage", "tags": ["ops"]}),
    );
    let bid = b.body["id"].as_str().unwrap().to_string();
    assert_eq!(s.ok("/v1/backlog", &m).as_array().unwrap().len(), 1);
    let claimed = s.post(
        &format!("/v1/backlog/{bid}/claim"),
        &m,
        json!({"agent": "alice"}),
    );
    assert_eq!(claimed.body["owner"], "alice", "{claimed:?}");
    assert_problem(
        &s.post(
            &format!("/v1/backlog/{bid}/claim"),
            &m,
            json!({"agent": "alice"}),
        ),
        409,
        &[&bid],
    );
    let b2 = s.post("/v1/backlog", &m, json!({"description": "later"}));
    let b2 = b2.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.call("DELETE", &format!("/v1/backlog/{b2}"), Some(&m), None)
            .status,
        200
    );
    assert_problem(
        &s.call("DELETE", &format!("/v1/backlog/{b2}"), Some(&m), None),
        409,
        &[&b2],
    );

    // Dead letters, swaps, shadows: refusals name the thing.
    assert_eq!(s.ok("/v1/dlq", &m), json!([]));
    assert_problem(&s.post("/v1/dlq/1-0/retry", &m, json!({})), 404, &["1-0"]);
    assert_problem(&s.post("/v1/dlq/zzz/retry", &m, json!({})), 422, &["zzz"]);
    assert_problem(
        &s.call("DELETE", "/v1/dlq/1-0", Some(&m), None),
        404,
        &["1-0"],
    );
    assert_problem(
        &s.post("/v1/agents/alice/shadow/stop", &m, json!({})),
        409,
        &["alice"],
    );
    assert_problem(
        &s.post(
            "/v1/agents/alice/swap",
            &m,
            json!({"plugin": "missing.wasm"}),
        ),
        422,
        &["missing.wasm"],
    );
    assert_eq!(s.ok("/v1/swaps", &m), json!([]));

    // Status and events reflect all of it.
    let st = s.ok("/v1/status?events=5", &m);
    assert_eq!(st["town"], "test");
    assert_eq!(st["agents"][0]["name"], "alice");
    assert_eq!(st["recent_events"].as_array().unwrap().len(), 5);
    let ev = s.ok("/v1/events/recent?n=1000", &m);
    assert!(
        ev.as_array().unwrap().iter().any(|e| e["type"] == "sent"),
        "{ev}"
    );

    // Prune: kill then prune removes alice; her five unread messages (the urgent one, three
    // task assignments and the notice that t2 was cancelled) go to the dead letters, and one
    // can be retried once she is back.
    s.post("/v1/agents/alice/kill", &m, json!({}));
    assert_eq!(
        s.post("/v1/prune", &m, json!({})).body["removed"],
        json!(["alice"])
    );
    let dlq = s.ok("/v1/dlq", &m);
    assert_eq!(dlq.as_array().unwrap().len(), 5, "{dlq}");
    let first = dlq[0]["id"].as_str().unwrap().to_string();
    assert_problem(
        &s.post(&format!("/v1/dlq/{first}/retry"), &m, json!({})),
        404,
        &["alice"],
    );
    s.post("/v1/agents", &m, json!({"name": "alice"}));
    assert_eq!(
        s.post(&format!("/v1/dlq/{first}/retry"), &m, json!({}))
            .status,
        200
    );
    assert_eq!(
        s.ok("/v1/inbox/alice", &m)["waiting"][0]["message"]["body"],
        "hello over http"
    );
    let second = dlq[1]["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.call("DELETE", &format!("/v1/dlq/{second}"), Some(&m), None)
            .status,
        200
    );
    assert_eq!(s.ok("/v1/dlq", &m).as_array().unwrap().len(), 3);

    // Routes that do not exist, and methods a route does not take: problem details too.
    assert_problem(&s.get("/v1/nothing", &m), 404, &["/v1/nothing"]);
    assert_problem(
        &s.call("PUT", "/v1/agents", Some(&m), Some(json!({}))),
        405,
        &["PUT"],
    );
    let raw = townhall::agent()
        .post(&s.url("/v1/mail"))
        .header("Authorization", &format!("Bearer {m}"))
        .header("Content-Type", "application/json")
        .send("{not json")
        .unwrap();
    assert_eq!(raw.status().as_u16(), 422);
}

/// Substitutes path parameters with names that exist nowhere.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "nobody" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_documented_route_is_served_with_its_scope_enforced_and_writes_audited() {
    let town = TestTown::new();
    let s = Server::start(&town, &[]);
    let reader = key(&town, "reader", "read");
    let writer = key(&town, "writer", "write");
    let doc = s.call("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().expect("paths").clone();
    assert!(paths.len() >= 25, "{} paths", paths.len());
    let mut checked = 0;
    for (path, ops) in &paths {
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
            let url = concrete(path);
            if path == "/v1/events" {
                continue; // a stream; checked below without reading it forever
            }
            let body = op.get("requestBody").map(|_| json!({}));
            let open = s.call(&method, &url, None, body.clone());
            let scope = op["x-scope"].as_str();
            match scope {
                None => assert_ne!(open.status, 401, "{method} {path} is open"),
                Some(_) => assert_problem(&open, 401, &["API key"]),
            }
            assert_ne!(
                open.status, 405,
                "{method} {path} documented but not routed"
            );
            let as_reader = s.call(&method, &url, Some(&reader), body.clone());
            match scope {
                Some("write") | Some("manage") => {
                    assert_problem(&as_reader, 403, &["reader", scope.unwrap()])
                }
                _ => assert!(
                    ![401, 403, 405].contains(&as_reader.status)
                        && !as_reader.text.contains("no route"),
                    "{method} {path} as reader: {as_reader:?}"
                ),
            }
            if scope == Some("manage") {
                assert_problem(
                    &s.call(&method, &url, Some(&writer), body),
                    403,
                    &["writer", "manage"],
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "checked {checked} operations");
    // The stream route is guarded as documented too.
    assert_eq!(paths["/v1/events"]["get"]["x-scope"], "read");
    assert_problem(&s.call("GET", "/v1/events", None, None), 401, &["API key"]);

    // Each refused write left an audit event: who, what, from where, the status.
    let events = town.events();
    let audits: Vec<&Value> = events.iter().filter(|e| e["type"] == "audit").collect();
    let refused = audits
        .iter()
        .find(|e| e["who"] == "reader" && e["body"] == "POST /v1/mail")
        .unwrap_or_else(|| panic!("no audit of reader's POST /v1/mail: {audits:?}"));
    assert_eq!(refused["status"], "403");
    assert!(
        refused["from"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{refused}"
    );
    assert!(audits
        .iter()
        .any(|e| e["who"] == "(no valid key)" && e["status"] == "401"));
    // An allowed write is audited with its status too.
    s.post("/v1/backlog", &writer, json!({"description": "audited"}));
    let events = town.events();
    assert!(events.iter().any(|e| e["type"] == "audit"
        && e["who"] == "writer"
        && e["body"] == "POST /v1/backlog"
        && e["status"] == "200"));
}

#[test]
fn redis_away_is_503_and_health_stays_up() {
    let town = TestTown::new();
    let s = Server::start(&town, &[]);
    let token = key(&town, "ops", "write");
    assert_eq!(s.get("/v1/status", &token).status, 200);
    town.ok(&["shutdown"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_problem(&s.get("/v1/status", &token), 503, &["Redis"]);
    assert_problem(
        &s.post("/v1/mail", &token, json!({"to": "x", "body": "y"})),
        503,
        &["Redis"],
    );
    assert_eq!(s.call("GET", "/readyz", None, None).status, 503);
    assert_eq!(s.call("GET", "/healthz", None, None).status, 200);
}
