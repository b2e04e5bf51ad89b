//! The dashboard in a real browser: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver over HTTP) against a real `tt serve` and a real town. The page
//! loads from the binary's embedded assets, shows the agents and tasks, shows a `tt send` in
//! its live feed within a second without a reload (the page follows SSE; the test only reads
//! the DOM), and retries a dead letter with its button.
//!
//! Set `TT_DASHBOARD_SCREENSHOT=path.png` to keep a screenshot (the README's comes from it).

mod common;
mod townhall;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::TestTown;
use townhall::{key, Server};

/// A chromedriver on a free port with one headless chromium session. Both end on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: bash tests/prereqs.sh installs chromium-driver");
        let base = format!("http://127.0.0.1:{port}");
        let http = townhall::agent();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1000"],
            }
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        let r = b.post("/session", caps);
        b.session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        b
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let mut resp = self
            .http
            .post(&format!("{}{path}", self.base))
            .send_json(body)
            .expect("webdriver");
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        self.post(&format!("/session/{}{path}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.cmd("/url", json!({"url": url}));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn js(&self, script: &str) -> Value {
        self.cmd("/execute/sync", json!({"script": script, "args": []}))["value"].clone()
    }

    fn text(&self, css: &str) -> String {
        let s =
            format!("const e = document.querySelector({css:?}); return e ? e.innerText : null;");
        self.js(&s).as_str().unwrap_or_default().to_string()
    }

    /// Waits until the text of `css` contains `needle`; returns how long that took.
    fn wait_text(&self, css: &str, needle: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.text(css).contains(needle) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{css} never showed {needle:?}; it shows:\n{}\nerror: {}",
                self.text(css),
                self.text("#error")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn click(&self, css: &str) {
        let e = self.cmd("/element", json!({"using": "css selector", "value": css}));
        let id = e["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {css}: {e}"))
            .to_string();
        let r = self.cmd(&format!("/element/{id}/click"), json!({}));
        assert!(r["value"].is_null(), "clicking {css}: {r}");
    }

    fn screenshot(&self, path: &str) {
        let mut resp = self
            .http
            .get(&format!(
                "{}/session/{}/screenshot",
                self.base, self.session
            ))
            .call()
            .unwrap();
        let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        let png = decode_base64(v["value"].as_str().unwrap());
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(&format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !b"=\n\r".contains(c)).collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The demo town run to the end by a real host (its plugins decide; task t1 completes after
/// one rejection), then one more task assigned to alice for the board.
fn demo(town: &TestTown) {
    common::demo_town(town, "[town]\nname = \"test\"\n");
    common::host_until_idle(town, Duration::from_secs(60));
    common::assert_demo_task_done(town);
    town.ok(&["assign", "alice", "Review the README"]);
}

#[test]
fn the_dashboard_shows_the_town_live_and_retries_a_dead_letter() {
    let town = TestTown::new();
    demo(&town);
    let s = Server::start(&town, &[]);
    let token = key(&town, "browser", "write");
    let b = Browser::start();
    b.goto(&format!("{}/#key={token}", s.base));
    b.wait_text("#conn", "live", Duration::from_secs(15));
    assert_eq!(b.text("#town"), "test");
    for name in ["alice", "bob", "mayor"] {
        b.wait_text("#agents", name, Duration::from_secs(5));
    }
    let board = b.text("#board");
    assert!(
        board.contains("t1") && board.contains("t2") && board.contains("Review the README"),
        "{board}"
    );
    b.wait_text(
        "#inbox",
        "task t1 completed by alice",
        Duration::from_secs(5),
    );
    // The agents show the plugin that decided (its digest), and t1's history is one click away.
    let digest = town.agent("alice").unwrap()["digest"].as_str().unwrap()[..12].to_string();
    assert!(b.text("#agents").contains(&digest), "{}", b.text("#agents"));
    b.click("[data-task=t1]");
    b.wait_text("#history", "in-review → completed", Duration::from_secs(5));
    assert!(
        b.js("return location.hash").as_str() == Some(""),
        "the key left the URL"
    );

    // A message sent from the terminal appears in the live feed within a second.
    let start = Instant::now();
    town.ok(&["send", "bob", "hello from the terminal"]);
    let shown =
        start.elapsed() + b.wait_text("#feed", "hello from the terminal", Duration::from_secs(1));
    assert!(shown < Duration::from_secs(1), "took {shown:?}");
    // ...and the agents table follows without a reload: bob has one message waiting.
    let deadline = Instant::now() + Duration::from_secs(2);
    while b
        .js("return document.querySelector('tr[data-agent=bob] td:nth-child(6)').innerText")
        .as_str()
        != Some("1")
    {
        assert!(
            Instant::now() < deadline,
            "bob's waiting count did not update: {}",
            b.text("#agents")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Ok(path) = std::env::var("TT_DASHBOARD_SCREENSHOT") {
        b.screenshot(&path);
    }

    // A dead letter (bob pruned with mail unread) shows up, and its button puts it back.
    town.ok(&["kill", "bob"]);
    town.ok(&["prune"]);
    b.wait_text(
        "#dlq",
        "agent pruned before handling it",
        Duration::from_secs(2),
    );
    town.ok(&["spawn", "bob", "--role", "reviewer"]);
    // Let the page redraw after the spawn, so the button clicked is the one on screen.
    b.wait_text("#agents", "bob", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    b.click("#dlq li button.retry");
    b.wait_text("#dlq", "none", Duration::from_secs(2));
    assert_eq!(town.json(&["dlq", "list", "--json"]), json!([]));
    assert_eq!(
        town.inbox("bob")["waiting"][0]["message"]["body"],
        "hello from the terminal"
    );
    // The retry was audited as the browser's key.
    assert!(town
        .events()
        .iter()
        .any(|e| e["type"] == "audit" && e["who"] == "browser" && e["status"] == "200"));
}

#[test]
fn the_dashboard_refuses_actions_beyond_its_keys_scope() {
    let town = TestTown::new();
    town.spawn_agents(&["carol"]);
    town.ok(&["send", "carol", "stuck"]);
    town.ok(&["kill", "carol"]);
    town.ok(&["prune"]);
    town.spawn_agents(&["carol"]);
    let s = Server::start(&town, &[]);
    let token = key(&town, "viewer", "read");
    let b = Browser::start();
    b.goto(&format!("{}/#key={token}", s.base));
    b.wait_text("#dlq", "agent pruned", Duration::from_secs(15));
    b.click("#dlq li button.retry");
    b.wait_text("#error", "403", Duration::from_secs(2));
    assert!(
        b.text("#error").contains("needs write"),
        "{}",
        b.text("#error")
    );
    assert_eq!(
        town.json(&["dlq", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing changed"
    );
}
