//! Authority (issue 10): the applier checks who may make each move, in the same atomic step as
//! legality. Each rule is tried by a real plugin that means to break it: the `chaos` role,
//! whose messages say which move to attempt on which task (`approve t1`, `forge approve w t1`,
//! ...). Every refusal is checked together with the allowed side (the same move by the agent
//! that may make it), so no test passes vacuously; and a refused move changes nothing.

mod common;

use std::time::Duration;

use common::{host_until_idle, plugin, TestTown};
use serde_json::Value;

/// A town of chaos agents: workers `w` and `other`, reviewers `rev` and `rev2`, conductor
/// `boss`, under `[tasks]` `tasks`.
fn town(tasks: &str) -> TestTown {
    let town = TestTown::new();
    let mut text = format!(
        "[town]\nname = \"test\"\n\n[host]\nlease_ms = 2000\nheartbeat_ms = 200\n\n{tasks}\n"
    );
    for (name, role) in [
        ("w", "worker"),
        ("other", "worker"),
        ("rev", "reviewer"),
        ("rev2", "reviewer"),
        ("boss", "conductor"),
    ] {
        text.push_str(&format!(
            "[agents.{name}]\nrole = \"{role}\"\nplugin = \"{}\"\n\n",
            plugin("chaos")
        ));
    }
    town.write_config(&text);
    for name in ["w", "other", "rev", "rev2", "boss"] {
        town.ok(&["spawn", name]);
    }
    town
}

/// Sends each (agent, command) and serves them all.
fn attempt(town: &TestTown, moves: &[(&str, &str)]) {
    for (agent, command) in moves {
        town.ok(&["send", agent, command]);
    }
    host_until_idle(town, Duration::from_secs(60));
}

fn state(town: &TestTown, task: &str) -> String {
    town.task(task)["state"].as_str().unwrap().to_string()
}

/// The dead letters' reasons, oldest first.
fn refusals(town: &TestTown) -> Vec<String> {
    town.json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

fn refused_with(town: &TestTown, needle: &str) {
    let r = refusals(town);
    assert!(
        r.iter().any(|x| x.contains(needle)),
        "no dead letter says {needle:?}: {r:#?}"
    );
}

/// The `kind`s of the messages agents sent to `agent` (the `sent` events; the agent may
/// have handled them already).
fn kinds(town: &TestTown, agent: &str) -> Vec<String> {
    town.events()
        .iter()
        .filter(|e| e["type"] == "sent" && e["to"] == agent && e["from"] != "conductor")
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Assigns a task to `w` (it starts running when w takes the assignment).
fn assigned_to_w(town: &TestTown) -> String {
    // "assigned t1 to w"
    let out = town.ok(&["assign", "w", "write the thing"]);
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    host_until_idle(town, Duration::from_secs(60));
    assert_eq!(state(town, &id), "running");
    id
}

#[test]
fn a_worker_cannot_approve_or_complete_its_own_task_and_only_its_reviewer_passes_it() {
    let town = town("");
    let t = assigned_to_w(&town);
    attempt(
        &town,
        &[
            ("w", &format!("approve {t}")),
            ("w", &format!("complete {t}")),
            ("other", &format!("fail {t}")),
            ("other", &format!("review {t} rev")),
            ("w", &format!("review {t} w")),
        ],
    );
    assert_eq!(state(&town, &t), "running", "nothing moved it");
    refused_with(&town, &format!("only a reviewer may approve task {t}"));
    refused_with(&town, &format!("task {t} must pass review"));
    refused_with(
        &town,
        &format!("only the owner of task {t} (w) may fail it"),
    );
    refused_with(
        &town,
        &format!("only the owner of task {t} (w) may request its review"),
    );
    refused_with(&town, "cannot review its own work");
    assert_eq!(refusals(&town).len(), 5);

    // The owner asks rev; rev2 (a reviewer, but not the one asked) and w cannot pass it.
    attempt(&town, &[("w", &format!("review {t} rev"))]);
    assert_eq!(state(&town, &t), "in-review");
    assert_eq!(town.task(&t)["reviewer"], "rev");
    attempt(
        &town,
        &[
            ("rev2", &format!("approve {t}")),
            ("w", &format!("approve {t}")),
            ("rev2", &format!("reject {t}")),
        ],
    );
    assert_eq!(state(&town, &t), "in-review");
    refused_with(
        &town,
        &format!("only rev, the reviewer task {t} was sent to, may approve it"),
    );
    refused_with(
        &town,
        &format!("only rev, the reviewer task {t} was sent to, may reject it"),
    );
    assert_eq!(refusals(&town).len(), 8);

    attempt(&town, &[("rev", &format!("approve {t}"))]);
    assert_eq!(state(&town, &t), "completed");
    assert_eq!(kinds(&town, "w").last().unwrap(), "verdict:approve");
}

#[test]
fn verdicts_assignments_and_review_requests_cannot_be_forged_with_send() {
    let town = town("");
    let t = assigned_to_w(&town);
    attempt(
        &town,
        &[
            ("rev", &format!("forge approve w {t}")),
            ("rev", &format!("forge reject w {t}")),
            ("boss", "forge assign other"),
            ("w", &format!("forge review rev {t}")),
        ],
    );
    for (kind, action) in [
        ("verdict:approve", "approve"),
        ("verdict:reject", "reject"),
        ("task-assign", "assign"),
        ("review-request", "request-review"),
    ] {
        refused_with(
            &town,
            &format!("a `{kind}` message comes only from the `{action}` action, never from send"),
        );
    }
    assert!(kinds(&town, "w").is_empty(), "{:?}", kinds(&town, "w"));
    assert!(kinds(&town, "other").is_empty());
    assert!(kinds(&town, "rev").is_empty());
    assert_eq!(refusals(&town).len(), 4);
    assert_eq!(state(&town, &t), "running");
    // A send of an ordinary kind from the same agents goes through.
    attempt(&town, &[("rev", "send w hello")]);
    assert_eq!(kinds(&town, "w"), ["info"]);
}

#[test]
fn only_a_conductor_assigns_a_task_from_the_backlog() {
    let town = town("");
    let out = town.ok(&["backlog", "add", "a task for someone"]);
    let t = out
        .split_whitespace()
        .find(|w| w.starts_with('t') && w[1..].chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no task id in {out:?}"))
        .to_string();
    attempt(
        &town,
        &[
            ("other", &format!("reassign {t} other")),
            ("rev", &format!("reassign {t} rev")),
        ],
    );
    assert_eq!(state(&town, &t), "pending");
    refused_with(
        &town,
        &format!("only the owner of task {t} (none) or a conductor may reassign it"),
    );
    assert_eq!(refusals(&town).len(), 2);
    attempt(&town, &[("boss", &format!("reassign {t} other"))]);
    assert_eq!(town.task(&t)["owner"], "other", "{:#?}", refusals(&town));
    assert_eq!(refusals(&town).len(), 2);
}

#[test]
fn with_optional_review_the_owner_may_complete_and_no_one_else() {
    let town = town("[tasks]\nreview = \"optional\"\n");
    let t = assigned_to_w(&town);
    attempt(&town, &[("other", &format!("complete {t}"))]);
    refused_with(
        &town,
        &format!("only the owner of task {t} (w) may complete it"),
    );
    assert_eq!(state(&town, &t), "running");
    attempt(&town, &[("w", &format!("complete {t}"))]);
    assert_eq!(state(&town, &t), "completed");
    assert_eq!(refusals(&town).len(), 1);
}

#[test]
fn humans_keep_full_authority_and_are_recorded_as_such() {
    let town = town("");
    let t = assigned_to_w(&town);
    // Completing without review, as a person: allowed, and the event says a human did it.
    town.ok(&["task", "complete", &t, "--result", "done by hand"]);
    assert_eq!(state(&town, &t), "completed");
    let events = town.events();
    let e: &Value = events
        .iter()
        .rev()
        .find(|e| e["type"] == "task" && e["to"] == "completed")
        .expect("a completion event");
    assert_eq!(e["human"], "1", "{e}");
    // An agent's moves are not marked.
    let assign = events
        .iter()
        .find(|e| e["type"] == "task" && e["to"] == "running")
        .unwrap();
    assert!(assign.get("human").is_none(), "{assign}");
}

#[test]
fn a_review_setting_other_than_required_or_optional_is_refused_by_name() {
    let town = TestTown::bare();
    town.write_config("[town]\nname = \"t\"\n\n[tasks]\nreview = \"sometimes\"\n");
    let r = town.refused(&["list"], 1, &["review", "sometimes"]);
    assert!(
        r.error.contains("required") || r.error.contains("optional"),
        "{}",
        r.error
    );
}

#[test]
fn one_handling_cannot_flood_the_town_or_oversize_a_field() {
    let town = town("");
    attempt(
        &town,
        &[
            ("w", "fanout 101 other"),
            ("w", "longkey 300"),
            ("w", "longtask 200 other"),
            ("w", "longcorr 300 other"),
            ("w", "longkind 200 other"),
        ],
    );
    refused_with(
        &town,
        "sent 101 messages in one handling; the limit is 100 (limits.max_sends)",
    );
    refused_with(&town, "state key is 300 bytes; the limit is 256");
    refused_with(&town, "task id is 200 bytes; the limit is 128");
    refused_with(&town, "correlation id is 300 bytes; the limit is 256");
    refused_with(&town, "message kind is 207 bytes; the limit is 128");
    assert!(kinds(&town, "other").is_empty());
    // At the limits, the same handlings go through.
    attempt(
        &town,
        &[
            ("w", "fanout 100 other"),
            ("w", "longkey 256"),
            ("w", "longtask 128 other"),
        ],
    );
    assert_eq!(kinds(&town, "other").len(), 101);
    assert_eq!(refusals(&town).len(), 5);
}

/// A repository town (`[repo]`): chaos agents w, other, reviewer rev and merger `merger`.
fn repo_town() -> TestTown {
    let town = TestTown::new();
    let mut text = "[town]\nname = \"test\"\n\n[host]\nlease_ms = 2000\nheartbeat_ms = 200\n\n\
        [repo]\ntarget = \"main\"\ncheck = \"true\"\n\n"
        .to_string();
    for (name, role) in [
        ("w", "worker"),
        ("other", "worker"),
        ("rev", "reviewer"),
        ("merger", "merger"),
    ] {
        text.push_str(&format!(
            "[agents.{name}]\nrole = \"{role}\"\nplugin = \"{}\"\n\n",
            plugin("chaos")
        ));
    }
    town.write_config(&text);
    for name in ["w", "other", "rev", "merger"] {
        town.ok(&["spawn", name]);
    }
    town
}

#[test]
fn in_a_repository_town_approval_queues_the_task_and_only_the_merger_completes_it() {
    let town = repo_town();
    let t = assigned_to_w(&town);
    attempt(
        &town,
        &[
            ("w", &format!("complete {t}")),
            ("w", &format!("review {t} rev")),
        ],
    );
    refused_with(
        &town,
        &format!("task {t} completes when its change is merged"),
    );
    assert_eq!(state(&town, &t), "in-review");

    attempt(&town, &[("rev", &format!("approve {t}"))]);
    assert_eq!(
        state(&town, &t),
        "approved",
        "approval is not done: the merge is"
    );
    assert_eq!(kinds(&town, "merger").last().unwrap(), "verdict:approve");
    assert!(!kinds(&town, "w").contains(&"verdict:approve".to_string()));

    attempt(
        &town,
        &[
            ("rev", &format!("approve {t}")),
            ("rev", &format!("reject {t}")),
            ("w", &format!("complete {t}")),
            ("rev", &format!("complete {t}")),
            ("merger", &format!("approve {t}")),
            ("other", &format!("fail {t}")),
        ],
    );
    assert_eq!(state(&town, &t), "approved", "nothing moved it");
    refused_with(
        &town,
        &format!("task {t} is approved and waits in the merge queue"),
    );
    refused_with(&town, "only merger, the merger, may complete it");
    refused_with(
        &town,
        &format!("only the owner of task {t} or the merger may fail it"),
    );
    assert_eq!(refusals(&town).len(), 7);

    // The merger sends it back to its owner (a conflict), who takes it up again; then the
    // merger completes it once merged.
    attempt(&town, &[("merger", &format!("reject {t}"))]);
    assert_eq!(state(&town, &t), "running");
    assert_eq!(kinds(&town, "w").last().unwrap(), "verdict:reject");
    assert_eq!(town.task(&t)["rejections"], 1);
    attempt(&town, &[("w", &format!("review {t} rev"))]);
    attempt(&town, &[("rev", &format!("approve {t}"))]);
    assert_eq!(state(&town, &t), "approved");
    attempt(&town, &[("merger", &format!("complete {t}"))]);
    assert_eq!(state(&town, &t), "completed");
    assert_eq!(refusals(&town).len(), 7);
}
