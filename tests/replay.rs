//! Replay (issue 12): the journal of handlings, `tt replay` of a candidate on the town's past,
//! the determinism self-check of the reviewers in all four languages, and the gated swap.
//! Real hosts, real Redis, real plugins.

mod common;
mod townhall;

use std::path::PathBuf;
use std::time::Duration;

use common::{host_until_idle, plugin, TestTown};
use serde_json::Value;
use tinytown::store::applier::Op;

const REVIEWERS: [&str; 4] = ["reviewer", "reviewer-py", "reviewer-js", "reviewer-c"];

/// A town whose reviewers `agents` (name, plugin) run `check.sh` (passes when the work says
/// "good"); each reviews the works `bodies`. Returns the town after one host run.
fn reviewed(agents: &[(&str, &str)], bodies: &[&str], retention: &str) -> TestTown {
    let town = TestTown::new();
    let check: PathBuf = town.path().join("check.sh");
    std::fs::write(
        &check,
        "#!/bin/sh\ngrep -q good || { echo 'not good enough' >&2; exit 1; }\n",
    )
    .unwrap();
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 2000\nheartbeat_ms = 200\n\n\
         [retention]\n{retention}\n\n[agents.owner]\nrole = \"mailbox\"\n\n"
    );
    for (name, p) in agents {
        config.push_str(&format!(
            "[agents.{name}]\nrole = \"reviewer\"\nplugin = \"{}\"\n\
             config = {{ program = \"./check.sh\" }}\n\
             exec = {{ allow = [\"./check.sh\"], env = [\"PATH\"] }}\n\n",
            plugin(p)
        ));
    }
    town.write_config(&config);
    town.ok(&["spawn", "owner"]);
    for (name, _) in agents {
        town.ok(&["spawn", name]);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        for (name, _) in agents {
            for body in bodies {
                let id = t.assign("owner", "some work", None).await.unwrap();
                let op = Op::RequestReview {
                    task: id,
                    reviewer: name.to_string(),
                    body: body.to_string(),
                };
                t.db.apply_ops("owner", vec![op]).await.unwrap();
            }
        }
    });
    host_until_idle(&town, Duration::from_secs(300));
    town
}

fn replay(town: &TestTown, agent: &str, candidate: &str, more: &[&str]) -> Value {
    let mut args = vec!["replay", agent, "--plugin", candidate, "--json"];
    args.extend_from_slice(more);
    let out = common::run_timeout(town.command(&args), Duration::from_secs(300));
    assert!(
        out.status.success(),
        "tt {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What a replay must not change: the keys, the events, the journal, the tasks.
fn fingerprint(town: &TestTown) -> String {
    format!(
        "{} {}",
        entries_added(town, "events"),
        fingerprint_but_events(town)
    )
}

/// [`fingerprint`] without the events: over REST every write request, allowed or refused, is
/// audited as an event.
fn fingerprint_but_events(town: &TestTown) -> String {
    format!(
        "{} {} {}",
        town.redis(&["DBSIZE"]),
        entries_added(town, "journal:r"),
        town.ok(&["tasks", "--json"])
    )
}

/// How many entries stream `k` of the town ever had.
fn entries_added(town: &TestTown, k: &str) -> String {
    let info = town.redis(&["XINFO", "STREAM", &town.key(k)]);
    info.lines()
        .skip_while(|l| !l.contains("entries-added"))
        .nth(1)
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_reviewer_replayed_on_its_own_journal_decides_exactly_the_same_in_every_language() {
    let agents: Vec<(String, &str)> = REVIEWERS.iter().map(|p| (format!("r-{p}"), *p)).collect();
    let named: Vec<(&str, &str)> = agents.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let town = reviewed(&named, &["good work", "bad work", "good again"], "");
    for (name, p) in &named {
        let r = replay(&town, name, &plugin(p), &[]);
        assert_eq!(r["handlings"], 3, "{name}: {r}");
        assert_eq!(
            r["same"], 3,
            "{name} is not deterministic on its own journal: {r}"
        );
        assert_eq!(r["diverged"], 0, "{name}: {r}");
    }
}

#[test]
fn a_different_policy_shows_each_decision_it_would_change_and_changes_nothing() {
    let town = reviewed(
        &[("r", "reviewer")],
        &["good 1", "bad 2", "good 3", "bad 4"],
        "",
    );
    let journal = town.json(&["journal", "r", "--json"]);
    assert_eq!(journal.as_array().unwrap().len(), 4, "{journal}");
    let before = fingerprint(&town);

    // The lenient approver approves what the reviewer rejected, and asks a question the
    // reviewer never asked (get-task), answered empty without --live.
    let approver = plugin("approver");
    let r = replay(&town, "r", &approver, &[]);
    // It approves what passed with another text, and approves what the reviewer rejected.
    assert_eq!(
        (r["handlings"].as_u64(), r["same"].as_u64()),
        (Some(4), Some(0)),
        "{r}"
    );
    assert_eq!(
        r["totals"],
        serde_json::json!({ "reject -> approve": 2, "same actions, different content": 2 }),
        "{r}"
    );
    assert_eq!(r["diverged"], 4, "{r}");
    let case = &r["cases"][1];
    assert_eq!(case["message"]["body"], "bad 2", "{case}");
    assert_eq!(case["difference"], "reject -> approve");
    assert!(
        case["original"].to_string().contains("not good enough"),
        "{case}"
    );
    assert_eq!(case["divergences"][0]["function"], "get-task", "{case}");
    assert_eq!(case["divergences"][0]["answered"], "empty", "{case}");
    assert!(
        case["candidate"]
            .to_string()
            .contains("approved without a check: \""),
        "{case}"
    );
    // --live answers the new question from the town.
    let r = replay(&town, "r", &approver, &["--live", "--last", "2"]);
    assert_eq!(r["handlings"], 2, "{r}");
    let text = r["cases"][1]["candidate"].to_string();
    assert!(text.contains("approved without a check: some work"), "{r}");
    assert_eq!(r["cases"][0]["divergences"][0]["answered"], "live");
    // The text report names the flip.
    let text = town.ok(&["replay", "r", "--plugin", &approver]);
    assert!(text.contains("2 reject -> approve"), "{text}");
    // --max-diff: all 4 differ.
    town.refused(
        &["replay", "r", "--plugin", &approver, "--max-diff", "10%"],
        1,
        &[
            "4 of 4 handlings differ (100.0%)",
            "more than --max-diff 10.0%",
        ],
    );
    town.ok(&["replay", "r", "--plugin", &approver, "--max-diff", "1"]);
    // Its own plugin passes the tightest gate.
    town.ok(&[
        "replay",
        "r",
        "--plugin",
        &plugin("reviewer"),
        "--max-diff",
        "0",
    ]);
    town.refused(
        &["replay", "r", "--plugin", &approver, "--max-diff", "lots"],
        1,
        &["--max-diff `lots`"],
    );
    // Nothing of the town changed.
    assert_eq!(fingerprint(&town), before);

    // The gated swap refuses when too many differ, and the reviewer keeps its plugin...
    let r = town.refused(
        &[
            "swap",
            "r",
            &approver,
            "--replay",
            "10",
            "--max-diff",
            "10%",
        ],
        1,
        &[
            "swap refused",
            "4 handlings of r replayed",
            "2 reject -> approve",
        ],
    );
    assert!(r.hint.contains("--max-diff"), "{}", r.hint);
    assert_eq!(fingerprint(&town), before);
    let plugin_of_r = || {
        town.agents()
            .into_iter()
            .find(|a| a["name"] == "r")
            .map(|a| a["plugin"].as_str().unwrap_or("").to_string())
            .unwrap()
    };
    assert!(
        plugin_of_r().ends_with("reviewer.wasm"),
        "{}",
        plugin_of_r()
    );
    // ...and accepts under a looser gate, keeping what it was judged on.
    let out = town.ok(&[
        "swap",
        "r",
        &approver,
        "--replay",
        "10",
        "--max-diff",
        "100%",
    ]);
    assert!(
        out.contains("judged on: 4 handlings of r replayed"),
        "{out}"
    );
    assert!(
        plugin_of_r().ends_with("approver.wasm"),
        "{}",
        plugin_of_r()
    );
    let events = town.ok(&["events", "--json", "-n", "5"]);
    assert!(
        events.contains("\"judged\":\"4 handlings of r replayed"),
        "{events}"
    );
    let status = town.ok(&["status", "--deep"]);
    assert!(
        status.contains("swap judged on: 4 handlings of r replayed"),
        "{status}"
    );
}

#[test]
fn replay_and_the_gated_swap_over_rest() {
    let town = reviewed(
        &[("r", "reviewer")],
        &["good 1", "bad 2", "good 3", "bad 4"],
        "",
    );
    let s = townhall::Server::start(&town, &[]);
    let manage = townhall::key(&town, "ops", "manage");
    let writer = townhall::key(&town, "w", "write");
    let approver = plugin("approver");
    let before = fingerprint_but_events(&town);

    // The report, as `tt replay --json` gives it; nothing written.
    let r = s.post(
        "/v1/agents/r/replay",
        &manage,
        serde_json::json!({"plugin": approver, "last": 10}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["handlings"], 4, "{}", r.text);
    assert_eq!(r.body["totals"]["reject -> approve"], 2, "{}", r.text);
    assert_eq!(fingerprint_but_events(&town), before);
    townhall::assert_problem(
        &s.post(
            "/v1/agents/nobody/replay",
            &manage,
            serde_json::json!({"plugin": approver}),
        ),
        404,
        &["nobody"],
    );
    townhall::assert_problem(
        &s.post(
            "/v1/agents/r/replay",
            &writer,
            serde_json::json!({"plugin": approver}),
        ),
        403,
        &["manage"],
    );

    // A gated swap that differs too much: 409 with the report, and r keeps its plugin.
    let refused = s.post(
        "/v1/agents/r/swap",
        &manage,
        serde_json::json!({"plugin": approver, "replay": 10, "max_diff": 0.1}),
    );
    townhall::assert_problem(
        &refused,
        409,
        &["swap refused", "4 handlings of r replayed"],
    );
    assert_eq!(refused.body["report"]["different"], 4, "{}", refused.text);
    assert_eq!(fingerprint_but_events(&town), before);
    townhall::assert_problem(
        &s.post(
            "/v1/agents/r/swap",
            &manage,
            serde_json::json!({"plugin": approver, "replay": 10, "max_diff": 5}),
        ),
        422,
        &["max-diff 5"],
    );
    // Within the gate: swapped, with what it was judged on.
    let ok = s.post(
        "/v1/agents/r/swap",
        &manage,
        serde_json::json!({"plugin": approver, "replay": 10, "max_diff": 1.0}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(
        ok.body["judged"]
            .as_str()
            .unwrap()
            .starts_with("4 handlings of r replayed"),
        "{}",
        ok.text
    );
    let agent = s.get("/v1/agents/r", &manage);
    assert!(
        agent.body["plugin"]
            .as_str()
            .unwrap()
            .ends_with("approver.wasm"),
        "{}",
        agent.text
    );
}

#[test]
fn the_journal_keeps_what_the_retention_says() {
    let town = reviewed(
        &[("r", "reviewer")],
        &["good 1", "bad 2", "good 3", "bad 4", "good 5"],
        "journal = 2",
    );
    let journal = town.json(&["journal", "r", "--json"]);
    let entries = journal.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{journal}");
    // The newest two, each with the message, the calls and the actions.
    let e = &entries[1]["entry"];
    assert_eq!(e["message"]["body"], "good 5", "{e}");
    assert!(e["actions"][0]["Approve"].is_object(), "{e}");
    let r = replay(&town, "r", &plugin("reviewer"), &[]);
    assert_eq!(
        (r["handlings"].as_u64(), r["same"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
}
