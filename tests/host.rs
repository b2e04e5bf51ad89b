//! End-to-end tests of `tt host`: real Redis, real compiled plugins (plugins/dist, built by
//! `bash plugins/build.sh`), the real `tt` binary.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fleet::Host;
use common::{
    assert_demo_task_done, demo_town, expect_code, host_until_idle, plugin, run_timeout, TestTown,
};
use serde_json::Value;
use tinytown::store::applier::{Op, Outcome};
use tinytown::store::model::{Kind, Stream};

fn sha256(path: &str) -> String {
    tinytown::store::model::Digest::of(&std::fs::read(path).unwrap()).to_string()
}

fn config(body: &str) -> String {
    format!("[town]\nname = \"test\"\n\n[host]\nlease_ms = 2000\nheartbeat_ms = 200\n\n{body}")
}

fn dead_letters(town: &TestTown) -> Vec<Value> {
    town.json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn state(town: &TestTown, agent: &str, key: &str) -> String {
    town.redis(&["HGET", &town.key(&format!("state:{agent}")), key])
}

fn chaos_town(extra: &str) -> TestTown {
    let town = TestTown::new();
    town.write_config(&config(&format!(
        "[agents.c]\nrole = \"chaos\"\nplugin = \"{}\"\n{extra}",
        plugin("chaos")
    )));
    town.ok(&["spawn", "c", "--role", "chaos"]);
    town
}

#[test]
fn review_loop_end_to_end() {
    let town = TestTown::new();
    demo_town(&town, &config(""));
    let (worker, reviewer, conductor) = (plugin("worker"), plugin("reviewer"), plugin("conductor"));
    host_until_idle(&town, Duration::from_secs(60));

    let events = assert_demo_task_done(&town);
    let pos = |pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("event missing in {events:#?}"))
    };
    let reject =
        pos(&|e| e["type"] == "sent" && e["kind"] == "verdict:reject" && e["to"] == "alice");
    let second_review = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "sent" && e["kind"] == "review-request")
        .map(|(i, _)| i)
        .nth(1)
        .expect("a second review request");
    let completed = pos(&|e| e["type"] == "task" && e["to"] == "completed");
    let informed = pos(&|e| e["type"] == "sent" && e["to"] == "conductor");
    assert!(reject < second_review && second_review < completed && completed < informed);
    let body = events[reject]["body"].as_str().unwrap();
    assert!(
        body.contains(r#"expected "Hello, tinytown!", got "Helo, tinytown!""#),
        "{body}"
    );

    // Every handling records the digest of the plugin that decided it.
    let digests = [
        ("alice", sha256(&worker)),
        ("bob", sha256(&reviewer)),
        ("mayor", sha256(&conductor)),
    ];
    let handled: Vec<&Value> = events.iter().filter(|e| e["type"] == "handled").collect();
    assert!(handled.len() >= 7, "{handled:#?}");
    for e in handled {
        let want = &digests.iter().find(|(a, _)| e["agent"] == *a).unwrap().1;
        assert_eq!(e["digest"].as_str().unwrap(), want);
    }
    assert!(dead_letters(&town).is_empty());
}

#[test]
fn errors_are_retried_then_dead_lettered_with_the_reason() {
    let town = chaos_town("limits = { max_deliveries = 3 }\n");
    for body in ["error", "fatal", "flaky 3", "ok"] {
        town.ok(&["send", "c", body]);
    }
    host_until_idle(&town, Duration::from_secs(30));
    let dlq = dead_letters(&town);
    assert_eq!(dlq.len(), 2, "{dlq:#?}");
    let by_body = |b: &str| {
        dlq.iter()
            .find(|d| d["orig.body"] == b)
            .unwrap_or_else(|| panic!("{b} not dead-lettered"))
    };
    let e = by_body("error");
    assert_eq!(e["attempts"], "3");
    assert_eq!(e["reason"], "failed 3 times; last: chaos: retryable error");
    let f = by_body("fatal");
    assert_eq!(f["attempts"], "1");
    assert_eq!(f["reason"], "permanent error: chaos: permanent error");
    let logs: Vec<Value> = town
        .events()
        .into_iter()
        .filter(|e| e["type"] == "log")
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["body"] == "flaky succeeded at attempt 3"),
        "{logs:#?}"
    );

    // A dead letter can be put back: it fails again and returns, still with its reason.
    let id = e["id"].as_str().unwrap().to_string();
    town.ok(&["dlq", "retry", &id]);
    assert_eq!(dead_letters(&town).len(), 1);
    host_until_idle(&town, Duration::from_secs(30));
    assert_eq!(dead_letters(&town).len(), 2);
    town.ok(&["dlq", "drop", "--all"]);
    assert!(dead_letters(&town).is_empty());
    let err = town.fails(&["dlq", "retry", "1-1"], 1);
    assert!(
        err.contains("dead letter 1-1 not found") && err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn a_trap_gets_a_fresh_instance_and_the_agent_keeps_serving() {
    let town = chaos_town("limits = { max_deliveries = 2 }\n");
    for body in ["count", "panic", "count", "trap", "count"] {
        town.ok(&["send", "c", body]);
    }
    host_until_idle(&town, Duration::from_secs(30));
    assert_eq!(state(&town, "c", "count"), "3");
    let dlq = dead_letters(&town);
    assert_eq!(dlq.len(), 2, "{dlq:#?}");
    for d in &dlq {
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("failed 2 times; last: trapped"),
            "{reason}"
        );
    }
}

#[test]
fn runaway_guests_are_stopped_and_others_are_unaffected() {
    let chaos = plugin("chaos");
    let town = TestTown::new();
    town.write_config(&config(&format!(
        r#"
[agents.looper]
plugin = "{chaos}"
limits = {{ call_timeout_ms = 100, max_deliveries = 2 }}

[agents.hog]
plugin = "{chaos}"
limits = {{ memory_mb = 16, max_deliveries = 1 }}

[agents.steady]
plugin = "{chaos}"
"#
    )));
    for n in ["looper", "hog", "steady"] {
        town.ok(&["spawn", n, "--role", "chaos"]);
    }
    town.ok(&["send", "looper", "loop"]);
    town.ok(&["send", "hog", "alloc"]);
    for _ in 0..30 {
        town.ok(&["send", "steady", "count"]);
    }
    let started = Instant::now();
    let log = host_until_idle(&town, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(state(&town, "steady", "count"), "30");
    let dlq = dead_letters(&town);
    let reason = |a: &str| {
        dlq.iter()
            .find(|d| d["agent"] == a)
            .map(|d| d["reason"].as_str().unwrap().to_string())
    };
    let r = reason("looper").expect("looper dead-lettered");
    assert!(r.contains("exceeded its time limit of 100 ms"), "{r}");
    let r = reason("hog").expect("hog dead-lettered");
    assert!(r.contains("memory limit of 16 MiB"), "{r}");
    assert!(
        log.contains("looper") && log.contains("time limit"),
        "the log names agent and limit: {log}"
    );
}

#[test]
fn a_plugin_importing_ungranted_exec_is_refused_at_load() {
    let town = TestTown::new();
    town.write_config(&config(&format!(
        "[agents.w]\nrole = \"worker\"\nplugin = \"{}\"\nconfig = {{ program = \"true\", reviewer = \"w\" }}\n",
        plugin("worker")
    )));
    town.ok(&["spawn", "w"]);
    town.ok(&["assign", "w", "do it"]);
    let args = ["host", "--until-idle"];
    let out = run_timeout(town.command(&args), Duration::from_secs(30));
    let err = expect_code(&args, &out, 1);
    assert!(
        err.contains("imports the `exec` capability, which is not granted"),
        "{err}"
    );
    assert!(err.contains("[agents.w.exec]"), "{err}");
    // Nothing was lost: the assignment is still in the mailbox.
    let inbox = town.inbox("w");
    let n =
        inbox["waiting"].as_array().unwrap().len() + inbox["delivered"].as_array().unwrap().len();
    assert_eq!(n, 1, "{inbox}");
}

#[test]
fn a_redelivered_message_whose_actions_were_applied_is_only_acknowledged() {
    let town = TestTown::new();
    town.ok(&["spawn", "r"]);
    town.ok(&["spawn", "sink", "--role", "mailbox"]);
    town.ok(&["send", "r", "hello"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let keys = t.db.keys.clone();
        let mut c = t.db.conn.clone();
        // Host A takes the message; its lease runs out and host B reclaims it.
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("tt")
            .arg("hostA")
            .arg("STREAMS")
            .arg(keys.inbox("r"))
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        let (_, entries) = tinytown::store::streams::read_reply(&v).pop().unwrap();
        let entry = entries[0].id.clone();
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(keys.inbox("r"))
            .arg("tt")
            .arg("hostB")
            .arg(0)
            .arg(&entry)
            .query_async(&mut c)
            .await
            .unwrap();
        // Both handle it and apply the same effects; only the first takes effect.
        let unit = tinytown::store::applier::Unit {
            ops: vec![Op::send("sink", Kind::Task, "forwarded")],
            by: Some("r".into()),
            ack: Some(tinytown::store::applier::Ack {
                stream: keys.inbox("r"),
                entry: entry.clone(),
                agent: "r".into(),
                kind: Stream::Inbox,
                member: format!("inbox/{entry}"),
            }),
            dlq: true,
            ..Default::default()
        };
        let first = t.db.apply(std::slice::from_ref(&unit)).await.unwrap();
        let second = t.db.apply(std::slice::from_ref(&unit)).await.unwrap();
        assert_eq!(first[0].outcome, Outcome::Ok);
        assert_eq!(second[0].outcome, Outcome::Dup);
    });
    assert_eq!(town.xlen("inbox:sink"), 1);
    let inbox = town.inbox("r");
    assert_eq!(
        inbox["delivered"].as_array().unwrap().len(),
        0,
        "acknowledged: {inbox}"
    );
}

#[test]
fn sigterm_finishes_the_messages_in_hand_and_loses_nothing() {
    let town = chaos_town("");
    let n = 300;
    for _ in 0..n {
        town.ok(&["send", "c", "count"]);
    }
    let mut child = town
        .command(&["host", "--name", "h1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&town, "c", "count").parse::<u32>().unwrap_or(0) < 20 {
        assert!(Instant::now() < deadline, "host handled nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "host did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    host_until_idle(&town, Duration::from_secs(60));
    assert_eq!(
        state(&town, "c", "count"),
        n.to_string(),
        "every message handled exactly once"
    );
    assert!(dead_letters(&town).is_empty());
}

#[test]
fn exec_runs_only_allow_listed_programs_in_a_bare_environment() {
    let town = TestTown::new();
    let dir = town.path();
    let script = |name: &str, body: &str| {
        let p: PathBuf = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    script("check.sh", "cat >/dev/null; env | sort >&2; exit 3");
    script("other.sh", "exit 0");
    script("slow.sh", "sleep 5");
    std::os::unix::fs::symlink(dir.join("other.sh"), dir.join("sneaky.sh")).unwrap();
    let reviewer = plugin("reviewer");
    let section = |name: &str, program: &str| {
        format!(
            "[agents.{name}]\nrole = \"reviewer\"\nplugin = \"{reviewer}\"\n\
             config = {{ program = \"{program}\" }}\n\
             exec = {{ allow = [\"./check.sh\", \"./slow.sh\"], env = [\"PATH\"], timeout_ms = 300 }}\n\
             limits = {{ call_timeout_ms = 100 }}\n\n"
        )
    };
    town.write_config(&config(&format!(
        "{}{}{}",
        section("plain", "./check.sh"),
        section("sneaky", "./sneaky.sh"),
        section("slow", "./slow.sh")
    )));
    for n in ["plain", "sneaky", "slow"] {
        town.ok(&["spawn", n, "--role", "reviewer"]);
    }
    // The owner's mailbox is read by people: no plugin, not served.
    town.ok(&["spawn", "owner", "--role", "mailbox"]);
    // Put one task per reviewer in review, as a worker would.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        for (i, reviewer) in ["plain", "sneaky", "slow"].iter().enumerate() {
            let id = t.assign("owner", "work", None).await.unwrap();
            assert_eq!(id, format!("t{}", i + 1));
            let op = Op::RequestReview {
                task: id,
                reviewer: reviewer.to_string(),
                body: "diff".into(),
            };
            t.db.apply_ops("owner", vec![op]).await.unwrap();
        }
    });
    host_until_idle(&town, Duration::from_secs(30));
    // A bare environment: only the allow-listed PATH, nothing of ours.
    let r1 = town.task("t1")["result"].as_str().unwrap().to_string();
    assert!(r1.starts_with("check failed (exit 3): PATH="), "{r1}");
    assert!(!r1.contains("HOME=") && !r1.contains("TT_TOWN"), "{r1}");
    // A symlink to a program outside the allow-list is judged by where it leads.
    let r2 = town.task("t2")["result"].as_str().unwrap().to_string();
    assert!(
        r2.starts_with("check could not run: program `./sneaky.sh`"),
        "{r2}"
    );
    assert!(
        r2.contains("other.sh") && r2.contains("not in the exec allow-list"),
        "{r2}"
    );
    // The exec timeout (300 ms) applies, and exec time does not count against the
    // guest's own 100 ms budget.
    assert_eq!(town.task("t3")["result"], "check timed out");
    assert!(dead_letters(&town).is_empty());
    let escalations = town.inbox("conductor");
    assert!(
        escalations
            .to_string()
            .contains("reviewer sneaky cannot run its check"),
        "{escalations}"
    );
    // Each handling that ran a program is journaled with the call and its answer.
    let journal = town.json(&["journal", "plain", "--json"]);
    let entries = journal.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{journal}");
    let e = &entries[0]["entry"];
    assert_eq!(e["task"], "t1");
    assert!(e["outcome"].as_str().unwrap().starts_with("ok: "), "{e}");
    let exec: Vec<&serde_json::Value> = e["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["interface"] == "exec")
        .collect();
    assert_eq!(exec.len(), 1, "{e}");
    assert_eq!(exec[0]["function"], "run");
    assert_eq!(exec[0]["request"][1]["program"], "./check.sh", "{e}");
    assert_eq!(exec[0]["response"]["Ok"]["status"], 3, "{e}");
    let text = town.ok(&["journal", "slow"]);
    assert!(
        text.contains("exec.run") && text.contains("timed_out"),
        "{text}"
    );
    town.refused(&["journal", "nobody"], 1, &["nobody"]);
}

#[test]
fn an_exclusive_agent_has_one_host_and_a_paused_host_is_fenced_out() {
    let town = chaos_town("mode = \"exclusive\"\n");
    let lease_key = town.key("lease:c");
    // Killed on drop, so a failing run leaves no host behind.
    let mut h1 = Host::start(&town, "h1", 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !town.redis(&["GET", &lease_key]).starts_with("h1/") {
        assert!(Instant::now() < deadline, "h1 never took the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut h2 = Host::start(&town, "h2", 0);
    for _ in 0..100 {
        town.ok(&["send", "c", "count"]);
    }
    let wait_count = |n: u32| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while state(&town, "c", "count").parse::<u32>().unwrap_or(0) < n {
            assert!(
                Instant::now() < deadline,
                "count stuck at {}",
                state(&town, "c", "count")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_count(100);
    let first = town.redis(&["GET", &lease_key]);
    assert!(
        first.starts_with("h1/"),
        "the lease moved without cause: {first}"
    );
    // h1 freezes past its lease (config: lease_ms = 2000): h2 takes over with a new token.
    unsafe { libc::kill(h1.pid() as i32, libc::SIGSTOP) };
    for _ in 0..100 {
        town.ok(&["send", "c", "count"]);
    }
    wait_count(200);
    let second = town.redis(&["GET", &lease_key]);
    assert!(second.starts_with("h2/") && second != first, "{second}");
    // h2 freezes too (for less than its lease), mail for `c` comes, and h1 wakes first. Its
    // claim had lapsed: it reads none of that mail (h2's now) before its supervisor has
    // renewed the claim and found the lease taken, so none waits in its hands, fenced out.
    // Five sends and the wait stay well inside h2's 2 s lease, so it keeps the lease.
    unsafe { libc::kill(h2.pid() as i32, libc::SIGSTOP) };
    for _ in 0..5 {
        town.ok(&["send", "c", "count"]);
    }
    unsafe { libc::kill(h1.pid() as i32, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(300));
    let in_h1s_hands = town.redis(&[
        "XPENDING",
        &town.key("inbox:c"),
        "tt",
        "-",
        "+",
        "100",
        "h1",
    ]);
    unsafe { libc::kill(h2.pid() as i32, libc::SIGCONT) };
    assert_eq!(
        in_h1s_hands, "",
        "h1 read mail of an agent whose lease it had lost"
    );
    wait_count(205);
    // A unit fenced with the old holder's token is refused: nothing applied, nothing acked.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let unit = tinytown::store::applier::Unit {
            ops: vec![Op::SetState {
                key: "count".into(),
                value: Some("0".into()),
            }],
            by: Some("c".into()),
            fence: Some(tinytown::store::applier::Fence {
                agent: "c".into(),
                holder: first.clone(),
            }),
            ..Default::default()
        };
        let r = t.db.apply(&[unit]).await.unwrap();
        assert_eq!(r[0].outcome, Outcome::Fenced);
    });
    for _ in 0..50 {
        town.ok(&["send", "c", "count"]);
    }
    wait_count(255);
    for h in [&mut h1, &mut h2] {
        assert!(h.sigterm(Duration::from_secs(30)).success(), "{}", h.log());
    }
    assert_eq!(
        state(&town, "c", "count"),
        "255",
        "exactly once across the takeover"
    );
    assert!(dead_letters(&town).is_empty());
}

#[test]
fn an_agent_pruned_and_spawned_again_while_the_host_runs_is_served() {
    // A slow heartbeat: the host's loop runs on changes, not on a beat between them.
    let chaos = plugin("chaos");
    let town = TestTown::new();
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 30000\nheartbeat_ms = 10000\n\n\
         [agents.c]\nrole = \"chaos\"\nplugin = \"{chaos}\"\n"
    ));
    town.ok(&["spawn", "c", "--role", "chaos"]);
    let h = Host::start(&town, "h1", 0);
    let handled = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let events = town.ok(&["events", "--json", "-n", "1000"]);
            let count = events
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["type"] == "handled" && e["agent"] == "c")
                .count();
            if count >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "c handled {count} of {n} messages; the host's log:\n{}",
                h.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    town.ok(&["send", "c", "count"]);
    handled(1);
    town.ok(&["kill", "c"]);
    town.ok(&["prune"]);
    let deadline = Instant::now() + Duration::from_secs(8);
    while !h.log().contains("pruned: no longer served here") {
        assert!(Instant::now() < deadline, "the runner of c did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    town.ok(&["spawn", "c", "--role", "chaos"]);
    town.ok(&["send", "c", "count"]);
    handled(2);
}
