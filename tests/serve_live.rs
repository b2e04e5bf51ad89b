//! `tt serve` while the town lives: server-sent events (live, resumed with `Last-Event-ID`),
//! `/metrics` and `/readyz` following a real `tt host` running the demo town's plugins.

mod common;
mod townhall;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{demo_town, TestTown};
use townhall::{assert_problem, key, Server};

#[test]
fn metrics_are_prometheus_text_from_the_town() {
    let town = TestTown::new();
    let s = Server::start(&town, &[]);
    let token = key(&town, "prom", "read");
    town.spawn_agents(&["alice"]);
    town.ok(&["send", "alice", "one"]);
    town.ok(&["send", "alice", "two"]);
    town.ok(&["assign", "alice", "a task"]);
    let m = s.get("/metrics", &token);
    assert_eq!(m.status, 200);
    assert!(
        m.content_type.starts_with("text/plain"),
        "{}",
        m.content_type
    );
    for line in [
        "tt_mailbox_waiting{agent=\"alice\"} 3",
        "tt_mailbox_in_hand{agent=\"alice\"} 0",
        "tt_tasks{state=\"assigned\"} 1",
        "tt_backlog 0",
        "tt_dead_letters 0",
        "# TYPE tt_handling_latency_seconds histogram",
        "tt_handling_latency_seconds_bucket{le=\"+Inf\"}",
        "# TYPE tt_messages_handled_total counter",
        "tt_swaps_total 0",
    ] {
        assert!(m.text.contains(line), "no {line:?} in\n{}", m.text);
    }
    assert_problem(&s.call("GET", "/metrics", None, None), 401, &["API key"]);
}

#[test]
fn metrics_and_readiness_follow_a_real_host() {
    let town = TestTown::new();
    demo_town(
        &town,
        "[town]\nname = \"test\"\n\n[host]\nheartbeat_ms = 200\n",
    );
    let s = Server::start(&town, &[]);
    let token = key(&town, "prom", "read");
    let ready = s.call("GET", "/readyz", None, None);
    assert_eq!(ready.status, 503, "no host yet: {ready:?}");
    assert!(
        ready.body["why"].as_str().unwrap().contains("heartbeat"),
        "{ready:?}"
    );
    let host = town.start(&["host", "--name", "h1"]);
    town.ok(&["wait", "--timeout", "60"]);
    let ready = s.call("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.body["hosts_alive"], json!(["h1"]));
    // The counters come from the event stream the server follows; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let m = s.get("/metrics", &token).text;
        if m.contains("tt_messages_handled_total{agent=\"mayor\"}") || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for needle in [
        "tt_messages_handled_total{agent=\"alice\"}",
        "tt_messages_handled_total{agent=\"bob\"}",
        "tt_host_messages_handled{host=\"h1\",agent=\"alice\"}",
        "tt_host_heartbeat_age_seconds{host=\"h1\"}",
        "tt_tasks{state=\"completed\"} 1",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    common::assert_demo_task_done(&town);
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tt_handling_latency_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(count >= 5, "latency histogram count {count}:\n{text}");
    host.stop();
}

/// Reads server-sent events from a response body on a thread: (id, data) pairs.
fn sse_reader(
    resp: ureq::http::Response<ureq::Body>,
) -> std::sync::mpsc::Receiver<(String, Value)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        let mut id = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                let data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                if tx.send((id.clone(), data)).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn open_events(
    s: &Server,
    token: &str,
    last: Option<&str>,
) -> std::sync::mpsc::Receiver<(String, Value)> {
    let mut req = townhall::agent()
        .get(&s.url("/v1/events"))
        .header("Authorization", &format!("Bearer {token}"));
    if let Some(l) = last {
        req = req.header("Last-Event-ID", l);
    }
    let resp = req.call().expect("GET /v1/events");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    sse_reader(resp)
}

fn next_sent(rx: &std::sync::mpsc::Receiver<(String, Value)>) -> (String, Value) {
    loop {
        let (id, e) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an event within 5 s");
        if e["type"] == "sent" {
            return (id, e);
        }
    }
}

#[test]
fn events_stream_live_and_resume_exactly_after_last_event_id() {
    let town = TestTown::new();
    let s = Server::start(&town, &[]);
    let token = key(&town, "watcher", "read");
    town.spawn_agents(&["alice"]);
    let rx = open_events(&s, &token, None);
    std::thread::sleep(Duration::from_millis(200));
    let start = std::time::Instant::now();
    town.ok(&["send", "alice", "first"]);
    let (first_id, first) = next_sent(&rx);
    assert_eq!(first["body"], "first");
    assert_eq!(first["id"], first_id, "the SSE id is the stream id");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    town.ok(&["send", "alice", "second"]);
    town.ok(&["send", "alice", "third"]);
    let (_, second) = next_sent(&rx);
    assert_eq!(second["body"], "second");
    drop(rx);

    // A reconnect with Last-Event-ID gets exactly what followed the first event.
    let again = open_events(&s, &token, Some(&first_id));
    let bodies: Vec<Value> = (0..2)
        .map(|_| next_sent(&again).1["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("second"), json!("third")]);
    assert!(
        again.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing more"
    );
    // ?since= does the same on a first connection.
    let since = townhall::agent()
        .get(&s.url(&format!("/v1/events?since={first_id}")))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(next_sent(&sse_reader(since)).1["body"], "second");

    let bad = townhall::agent()
        .get(&s.url("/v1/events"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Last-Event-ID", "yesterday")
        .call()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);
}

#[test]
fn live_streams_are_capped_and_a_closed_one_frees_its_place() {
    let town = TestTown::new();
    let cfg = town.read_config();
    town.write_config(&format!("{cfg}\n[serve]\nmax_streams = 1\n"));
    let s = Server::start(&town, &[]);
    let token = key(&town, "watcher", "read");
    town.spawn_agents(&["alice"]);
    let first = open_events(&s, &token, None);
    let second = s.get("/v1/events", &token);
    assert_problem(&second, 503, &["live event streams"]);
    drop(first);
    // The server learns the client left when it next writes to it: give it an event.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        town.ok(&["send", "alice", "ping"]);
        std::thread::sleep(Duration::from_millis(100));
        let again = townhall::agent()
            .get(&s.url("/v1/events"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was never freed"
        );
    }
}
