//! Live policy changes: `tt swap`, `--rollback`, shadow mode, and swaps that must fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{host_until_idle, plugin_path, TestTown};
use serde_json::Value;
use tinytown::store::applier::Op;
use tinytown::store::model::Kind;

fn digest(path: &Path) -> String {
    tinytown::store::model::Digest::of(&std::fs::read(path).unwrap()).to_string()
}

/// The same component with a custom section appended: same behaviour, another digest.
fn second_build(town: &TestTown, of: &Path) -> PathBuf {
    let mut bytes = std::fs::read(of).unwrap();
    let (name, payload) = (b"tt-build", b"2");
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let out = town.path().join("v2.wasm");
    std::fs::write(&out, bytes).unwrap();
    out
}

fn setup(agent_plugin: &Path, extra: &str) -> TestTown {
    let town = TestTown::new();
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[agents.c]\nrole = \"chaos\"\nplugin = \"{}\"\n{extra}",
        agent_plugin.display()
    ));
    town.ok(&["spawn", "c", "--role", "chaos"]);
    town
}

fn count(town: &TestTown) -> u64 {
    town.redis(&["HGET", &town.key("state:c"), "count"])
        .parse()
        .unwrap_or(0)
}

#[test]
fn ten_thousand_messages_through_a_hundred_swaps() {
    let v1 = plugin_path("chaos");
    let town = setup(&v1, "");
    let v2 = second_build(&town, &v1);
    let (d1, d2) = (digest(&v1), digest(&v2));
    let mut host = town
        .command(&["host", "--name", "h1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt
        .block_on(tinytown::town::Town::open(town.path()))
        .unwrap();
    let mut swapped_at = Vec::new();
    for round in 0..100 {
        let ops: Vec<Op> = (0..100)
            .map(|_| Op::send("c", Kind::Task, "count"))
            .collect();
        rt.block_on(t.db.apply_ops("conductor", ops)).unwrap();
        let next = if round % 2 == 0 { &v2 } else { &v1 };
        town.ok(&["swap", "c", next.to_str().unwrap()]);
        swapped_at.push(Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&town) < 10_000 {
        assert!(
            Instant::now() < deadline,
            "only {} of 10000 handled",
            count(&town)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(host.id() as i32, libc::SIGTERM) };
    assert!(host.wait().unwrap().success());

    assert_eq!(count(&town), 10_000, "every message handled exactly once");
    assert!(town
        .json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    let events = town.events();
    let handled: Vec<(usize, &str)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "handled" && e["agent"] == "c")
        .map(|(i, e)| (i, e["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(handled.len(), 10_000);
    let swaps: Vec<(usize, &str)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "swap")
        .map(|(i, e)| (i, e["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(swaps.len(), 100);
    // Each handling ran on a plugin that was live when it began: the one named by the latest
    // swap before it, or (for a batch already in hand when the swap was recorded) the one
    // before that. Never an older one, never one not yet swapped in.
    for (pos, d) in &handled {
        let before: Vec<&str> = swaps
            .iter()
            .filter(|(p, _)| p < pos)
            .map(|(_, d)| *d)
            .collect();
        let latest = before.last().copied().unwrap_or(&d1);
        let previous = if before.len() >= 2 {
            before[before.len() - 2]
        } else {
            &d1
        };
        assert!(
            *d == latest || *d == previous,
            "event {pos} ran on {d}, live was {latest}"
        );
        assert!(*d == d1 || *d == d2);
    }
    // The digests switch in the order of the swaps.
    let mut runs: Vec<&str> = Vec::new();
    for (_, d) in &handled {
        if runs.last() != Some(d) {
            runs.push(d);
        }
    }
    for pair in runs.windows(2) {
        assert_ne!(pair[0], pair[1]);
    }
    println!("handled on {} runs of digests across 100 swaps", runs.len());
}

#[test]
fn failed_swaps_leave_the_old_plugin_serving() {
    let noop = plugin_path("noop");
    let town = setup(&noop, "config = { init = \"trap\" }\n");
    let before = digest(&noop);
    let garbage = town.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let core = town.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases: [(&Path, &[&str]); 4] = [
        (&garbage, &["not a WebAssembly file"]),
        (&core, &["a core Wasm module, not a component"]),
        (
            &plugin_path("worker"),
            &["imports the `exec` capability, which is not granted"],
        ),
        (&plugin_path("chaos"), &["cannot serve agent `c`", "init"]),
    ];
    for (file, needles) in cases {
        let r = town.refused(&["swap", "c", file.to_str().unwrap()], 1, needles);
        assert!(!r.hint.is_empty());
        let a = town.agent("c").unwrap();
        assert_eq!(
            a["digest"],
            before.as_str(),
            "a failed swap changed the plugin"
        );
    }
    town.ok(&["send", "c", "ok"]);
    host_until_idle(&town, Duration::from_secs(120));
    let handled: Vec<Value> = town
        .events()
        .into_iter()
        .filter(|e| e["type"] == "handled")
        .collect();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0]["digest"], before.as_str());
    let r = town.refused(&["swap", "ghost", noop.to_str().unwrap()], 1, &["ghost"]);
    assert!(r.hint.contains("tt list"));
}

#[test]
fn rollback_returns_to_the_previous_plugin() {
    let v1 = plugin_path("chaos");
    let town = setup(&v1, "");
    let v2 = second_build(&town, &v1);
    town.refused(&["swap", "c", "--rollback"], 1, &["has not been swapped"]);
    town.ok(&["swap", "c", v2.to_str().unwrap()]);
    assert_eq!(town.agent("c").unwrap()["digest"], digest(&v2).as_str());
    let out = town.ok(&["swap", "c", "--rollback"]);
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(town.agent("c").unwrap()["digest"], digest(&v1).as_str());
    let status = town.ok(&["status", "--deep"]);
    assert!(
        status.contains(&digest(&v1)[..12]) && status.contains("swapped"),
        "{status}"
    );
}

#[test]
fn shadow_mode_reports_exactly_the_decisions_that_differ() {
    // Live: chaos (on "count" it sets state and logs). Shadow: noop (does nothing). They agree
    // on "ok" and differ on "count".
    let town = setup(&plugin_path("chaos"), "");
    town.ok(&[
        "swap",
        "c",
        plugin_path("noop").to_str().unwrap(),
        "--shadow",
    ]);
    let mut differ = Vec::new();
    for i in 0..30 {
        let body = if i % 3 == 0 { "count" } else { "ok" };
        let out = town.ok(&["send", "c", body]);
        let id = out.split_whitespace().nth(1).unwrap().to_string();
        if body == "count" {
            differ.push(id);
        }
    }
    host_until_idle(&town, Duration::from_secs(120));
    assert_eq!(count(&town), 10, "the live plugin's actions were applied");
    let r = town.json(&["shadow", "report", "c", "--json"]);
    assert_eq!(r["compared"], 30, "{r}");
    assert_eq!(r["agreed"], 20, "{r}");
    let listed: Vec<String> = r["differed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["msg"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, differ);
    let d = &r["differed"][0];
    assert!(
        d["live"].as_str().unwrap().contains("set-state count=1"),
        "{d}"
    );
    assert_eq!(d["shadow"], "");
    // The shadow's actions were never applied: no second count, no shadow state.
    assert_eq!(count(&town), 10);
    let text = town.ok(&["shadow", "report", "c"]);
    assert!(
        text.contains("30 decisions compared, 20 agreed, 10 differed"),
        "{text}"
    );
    // The shadow's disagreements, replayed: the shadow itself reproduces each of them, the live
    // plugin none.
    let noop_s = plugin_path("noop");
    let chaos_s = plugin_path("chaos");
    for (candidate, different) in [(&noop_s, 10), (&chaos_s, 0)] {
        let r = town.json(&[
            "replay",
            "c",
            "--plugin",
            candidate.to_str().unwrap(),
            "--disagreed",
            "--json",
        ]);
        assert_eq!(r["handlings"], 10, "{r}");
        assert_eq!(r["different"], different, "{r}");
    }
    town.ok(&["shadow", "promote", "c"]);
    assert_eq!(
        town.agent("c").unwrap()["digest"],
        digest(&plugin_path("noop")).as_str()
    );
    town.refused(&["shadow", "stop", "c"], 1, &["has no shadow"]);
}

/// Handled events of agent `c`, in order: their digests.
fn handled_digests(town: &TestTown) -> Vec<String> {
    town.events()
        .into_iter()
        .filter(|e| e["type"] == "handled" && e["agent"] == "c")
        .map(|e| e["digest"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits until agent `c` has handled `n` messages.
fn wait_handled(town: &TestTown, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = handled_digests(town);
        if d.len() >= n {
            return d;
        }
        assert!(Instant::now() < deadline, "only {} of {n} handled", d.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_swap_switches_to_an_instance_initialised_with_the_agents_config() {
    // c serves on noop; the relay it is swapped to forwards each message to `next`, which it
    // reads in `init`. The host makes the relay ready while noop serves, then switches.
    let (noop, relay) = (plugin_path("noop"), plugin_path("relay"));
    let town = setup(&noop, "config = { next = \"sink\" }\n");
    town.ok(&["spawn", "sink", "--role", "mailbox"]);
    let host = town.start(&["host", "--name", "h1"]);
    for i in 0..5 {
        town.ok(&["send", "c", &format!("before {i}")]);
    }
    wait_handled(&town, 5);
    town.ok(&["swap", "c", relay.to_str().unwrap()]);
    let (mut sent, deadline) = (5, Instant::now() + Duration::from_secs(120));
    // Steady traffic until a message has been handled on the relay, and a few more after it.
    let mut after = None;
    while after.is_none_or(|first: usize| sent < first + 5) {
        assert!(Instant::now() < deadline, "the swap never took effect");
        town.ok(&["send", "c", &format!("m {sent}")]);
        sent += 1;
        let d = wait_handled(&town, sent);
        if after.is_none() {
            after = d.iter().position(|x| *x == digest(&relay)).map(|_| sent);
        }
    }
    let digests = wait_handled(&town, sent);
    let stderr = host.stop();
    assert_eq!(digests.len(), sent, "each message handled once: {stderr}");
    // One switch, from noop to relay, and none back.
    let first = digests.iter().position(|d| *d == digest(&relay)).unwrap();
    assert!(first >= 5, "{digests:?}");
    assert!(digests[..first].iter().all(|d| *d == digest(&noop)));
    assert!(digests[first..].iter().all(|d| *d == digest(&relay)));
    // Every message the relay handled, its first included, went where its `init` config says.
    let forwarded = town.inbox("sink");
    let forwarded = forwarded["waiting"].as_array().unwrap_or_else(|| {
        panic!("sink inbox: {forwarded}");
    });
    assert_eq!(forwarded.len(), sent - first, "{forwarded:?}");
    assert!(town
        .json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_candidate_that_cannot_start_on_the_host_leaves_the_old_plugin_serving() {
    // `tt swap` validates a candidate before recording it; a host whose config differs (here:
    // the record written directly, past validation) must still refuse to switch to a plugin
    // whose `init` fails, and keep the old one serving instead of dead-lettering the mail.
    let (noop, chaos) = (plugin_path("noop"), plugin_path("chaos"));
    let town = setup(&noop, "config = { init = \"trap\" }\n");
    let log = town.path().join("host.log");
    let mut host = town
        .command(&["host", "--name", "h1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    town.ok(&["send", "c", "ok"]);
    wait_handled(&town, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt
        .block_on(tinytown::town::Town::open(town.path()))
        .unwrap();
    let op = Op::AgentPlugin {
        name: "c".into(),
        plugin: chaos.display().to_string(),
        digest: digest(&chaos),
        judged: None,
    };
    rt.block_on(t.db.apply_human("conductor", vec![op]))
        .unwrap();
    for i in 0..5 {
        town.ok(&["send", "c", &format!("ok {i}")]);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The host says why it did not switch (once it has tried).
    let deadline = Instant::now() + Duration::from_secs(120);
    let said = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot serve agent `c` on this host") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    town.ok(&["send", "c", "ok after"]);
    let digests = wait_handled(&town, 7);
    unsafe { libc::kill(host.id() as i32, libc::SIGTERM) };
    assert!(host.wait().unwrap().success());
    assert_eq!(digests.len(), 7, "{said}");
    assert!(
        digests.iter().all(|d| *d == digest(&noop)),
        "{digests:?}\n{said}"
    );
    assert!(
        said.contains("cannot serve agent `c` on this host") && said.contains("in init"),
        "{said}"
    );
    assert!(said.contains("the old plugin keeps serving"), "{said}");
    assert!(town
        .json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
    // The refusal is recorded: the agent's record names the plugin that serves, with the reason
    // shown by `tt status`, and an event says it.
    let agent = town.agent("c").unwrap();
    assert_eq!(agent["digest"], digest(&noop).as_str(), "{agent}");
    assert_eq!(
        agent["plugin"],
        noop.display().to_string().as_str(),
        "{agent}"
    );
    let refused = agent["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains(&digest(&chaos)[..12]) && refused.contains("in init"),
        "{agent}"
    );
    let status = town.ok(&["status"]);
    assert!(status.contains("SWAP REFUSED"), "{status}");
    let events = town.ok(&["events", "--agent", "c"]);
    assert!(events.contains("SWAP REFUSED"), "{events}");
    // The next swap clears the mark.
    town.ok(&["swap", "c", noop.to_str().unwrap()]);
    assert!(town.agent("c").unwrap()["refused"].is_null());
}

#[test]
fn a_shadow_started_while_the_host_serves_compares_once_ready() {
    // The shadow is made ready beside the serving plugin, then compared on each message that
    // follows; no message waits for it, and none is handled twice or lost.
    let (chaos, noop) = (plugin_path("chaos"), plugin_path("noop"));
    let town = setup(&chaos, "");
    let host = town.start(&["host", "--name", "h1"]);
    town.ok(&["send", "c", "count"]);
    wait_handled(&town, 1);
    town.ok(&["swap", "c", noop.to_str().unwrap(), "--shadow"]);
    let (mut sent, deadline) = (1, Instant::now() + Duration::from_secs(120));
    let compared = loop {
        town.ok(&["send", "c", "count"]);
        sent += 1;
        wait_handled(&town, sent);
        let r = town.json(&["shadow", "report", "c", "--json"]);
        if r["compared"].as_u64().unwrap_or(0) > 0 {
            break r;
        }
        assert!(Instant::now() < deadline, "the shadow never compared: {r}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Each one it compared, it disagreed with (noop does nothing, chaos counts).
    assert_eq!(compared["agreed"], 0, "{compared}");
    assert_eq!(
        count(&town),
        sent as u64,
        "every message applied once, by the live plugin"
    );
    town.ok(&["shadow", "stop", "c"]);
    drop(host);
    assert!(town
        .json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .is_empty());
}
