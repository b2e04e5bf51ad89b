//! Races between `tt` processes on one town: exactly one of several claims wins, the embedded
//! Redis is started once, and concurrent writers never hand out the same id twice.

mod common;

use std::process::Output;
use std::sync::Barrier;

use common::{expect_ok, refusal, TestTown};
use serde_json::Value;

const CLAIMERS: usize = 8;
const ROUNDS: usize = 5;

/// Runs every command line at (nearly) the same moment, each as its own `tt` process: the
/// threads wait on a barrier and then start their process together.
fn race(town: &TestTown, commands: &[Vec<String>]) -> Vec<Output> {
    let barrier = Barrier::new(commands.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = commands
            .iter()
            .map(|args| {
                let barrier = &barrier;
                s.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let cmd = town.command(&args);
                    barrier.wait();
                    common::run(cmd)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer thread panicked"))
            .collect()
    })
}

fn agent_name(i: usize) -> String {
    format!("a{i}")
}

#[test]
fn exactly_one_of_eight_concurrent_claims_wins() {
    let town = TestTown::new();
    let agents: Vec<String> = (0..CLAIMERS).map(agent_name).collect();
    for a in &agents {
        town.ok(&["spawn", a]);
    }

    for round in 0..ROUNDS {
        let added = town.ok(&["backlog", "add", &format!("job {round}")]);
        let task = format!("t{}", round + 1);
        assert_eq!(added.trim(), format!("added {task} to the backlog"));

        let commands: Vec<Vec<String>> = agents
            .iter()
            .map(|a| vec!["backlog".into(), "claim".into(), task.clone(), a.clone()])
            .collect();
        let outputs = race(&town, &commands);

        let winners: Vec<usize> = (0..CLAIMERS)
            .filter(|&i| outputs[i].status.success())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one claim wins, got {winners:?}"
        );
        let winner = &agents[winners[0]];
        let out = expect_ok(&["backlog", "claim"], &outputs[winners[0]]);
        assert_eq!(out.trim(), format!("{task} claimed by {winner}"));

        for (i, o) in outputs.iter().enumerate() {
            if i == winners[0] {
                continue;
            }
            assert_eq!(
                o.status.code(),
                Some(1),
                "round {round}: loser {} exit code",
                agents[i]
            );
            let stderr = String::from_utf8_lossy(&o.stderr);
            let r = refusal(
                &["backlog", "claim", &task, &agents[i]],
                1,
                &stderr,
                &[&task, "not in the backlog"],
            );
            assert!(r.hint.contains("tt backlog list"), "{}", r.hint);
        }

        // The task is assigned exactly once, to the winner.
        let t = town.task(&task);
        assert_eq!(t["state"], "assigned", "round {round}");
        assert_eq!(t["owner"], winner.as_str(), "round {round}");
        assert!(!town.backlog_ids().contains(&task));

        // Exactly one task-assign message for it across all eight mailboxes, in the winner's.
        let inboxes = town.json(&["inbox", "--all", "--json"]);
        let assigns: Vec<String> = inboxes
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let owner = b["agent"].as_str().unwrap().to_string();
                b["waiting"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| {
                        m["message"]["kind"] == "task-assign"
                            && m["message"]["task"] == task.as_str()
                    })
                    .map(move |_| owner.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            assigns,
            std::slice::from_ref(winner),
            "round {round}: task-assign messages"
        );

        // Exactly one pending -> assigned event.
        let events = town.events();
        let moves: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "task" && e["task"] == task.as_str() && e["to"] == "assigned")
            .collect();
        assert_eq!(moves.len(), 1, "round {round}: {moves:?}");
        assert_eq!(moves[0]["from"], "pending");
    }

    // Every round's winner holds its task; nothing was assigned twice.
    let total: u64 = town
        .agents()
        .iter()
        .map(|a| a["active_tasks"].as_u64().unwrap())
        .sum();
    assert_eq!(total, ROUNDS as u64);
    let assigned = town.json(&["tasks", "--state", "assigned", "--json"]);
    assert_eq!(assigned.as_array().unwrap().len(), ROUNDS);
}

#[test]
fn concurrent_commands_start_one_embedded_redis() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["shutdown"]);
    assert!(!town.socket().exists());

    let commands: Vec<Vec<String>> = (0..CLAIMERS)
        .map(|i| vec!["send".into(), "alice".into(), format!("hi {i}")])
        .collect();
    for o in race(&town, &commands) {
        expect_ok(&["send"], &o);
    }
    // One server for this town: every message is in the one mailbox, and only one live
    // redis-server process listens on the town's socket.
    let inbox = town.inbox("alice");
    assert_eq!(inbox["waiting"].as_array().unwrap().len(), CLAIMERS);
    let socket = town.socket().to_string_lossy().to_string();
    let servers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("redis-server") && c.contains(&socket))
        .count();
    assert_eq!(servers, 1, "redis-server processes for {socket}");
}

#[test]
fn concurrent_assigns_get_distinct_task_and_message_ids() {
    let town = TestTown::new();
    let agents: Vec<String> = (0..CLAIMERS).map(agent_name).collect();
    for a in &agents {
        town.ok(&["spawn", a]);
    }
    let commands: Vec<Vec<String>> = agents
        .iter()
        .map(|a| vec!["assign".into(), a.clone(), format!("work for {a}")])
        .collect();
    let mut task_ids: Vec<String> = race(&town, &commands)
        .iter()
        .map(|o| {
            expect_ok(&["assign"], o)
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    task_ids.sort_by_key(|t| t[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (1..=CLAIMERS).map(|i| format!("t{i}")).collect();
    assert_eq!(task_ids, expected);

    let mut message_ids: Vec<String> = Vec::new();
    for a in &agents {
        let t = &town.json(&["tasks", "--agent", a, "--json"])[0];
        assert_eq!(t["description"], format!("work for {a}").as_str());
        let inbox = town.inbox(a);
        let waiting = inbox["waiting"].as_array().unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0]["message"]["task"], t["id"]);
        message_ids.push(waiting[0]["message"]["id"].as_str().unwrap().to_string());
    }
    message_ids.sort();
    message_ids.dedup();
    assert_eq!(message_ids.len(), CLAIMERS);
}
