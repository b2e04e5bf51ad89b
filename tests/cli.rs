//! End-to-end tests of the `tt` command line against a real `redis-server`.
//!
//! Every test runs in its own town (temp dir + `tt init`, which starts the town's embedded
//! Redis on `.tt/redis.sock`) and checks what a person would see: the exit code, the output,
//! the `error:`/`hint:` lines of a refused command, and that a refused command changed nothing.
//!
//! Tests marked `#[ignore = "bug: …"]` show a bug in host/src; they pass once it is fixed.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{expect_code, ids, refusal, run, tt_bin, ExternalRedis, TestTown};
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

fn state_of_task(town: &TestTown, id: &str) -> String {
    town.task(id)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn state_of_agent(town: &TestTown, name: &str) -> String {
    let a = town
        .agent(name)
        .unwrap_or_else(|| panic!("agent {name} is not listed"));
    a["state"].as_str().unwrap_or_default().to_string()
}

/// The messages waiting in a mailbox, as JSON objects (`message` of each item).
fn waiting(town: &TestTown, name: &str) -> Vec<Value> {
    town.inbox(name)["waiting"]
        .as_array()
        .expect("waiting is an array")
        .iter()
        .map(|item| item["message"].clone())
        .collect()
}

fn event_count(town: &TestTown) -> usize {
    town.events().len()
}

// ----- init -----------------------------------------------------------------------------------

#[test]
fn init_creates_config_state_dir_gitignore_and_a_private_socket() {
    let town = TestTown::bare();
    let out = town.ok(&["init", "--name", "test"]);
    assert!(out.starts_with("town test ready in "), "{out}");

    let config = town.read_config();
    assert!(
        config.contains("[town]") && config.contains("name = \"test\""),
        "{config}"
    );

    let state = std::fs::metadata(town.path().join(".tt")).expect(".tt exists");
    assert!(state.is_dir());
    assert_eq!(
        state.permissions().mode() & 0o777,
        0o700,
        ".tt must be private"
    );

    let gitignore = std::fs::read_to_string(town.path().join(".gitignore")).expect(".gitignore");
    assert!(gitignore.lines().any(|l| l == ".tt/"), "{gitignore:?}");

    let socket = std::fs::metadata(town.socket()).expect("the redis socket exists");
    assert!(socket.file_type().is_socket());
    assert_eq!(
        socket.permissions().mode() & 0o777,
        0o700,
        "socket must be private"
    );

    assert_eq!(town.redis(&["PING"]), "PONG");
    // Unix socket only: the embedded server listens on no TCP port.
    assert_eq!(town.redis(&["CONFIG", "GET", "port"]), "port\n0");
    assert!(town.ok(&["list"]).contains("no agents"));
}

#[test]
fn second_init_is_refused_without_force_and_force_rewrites_the_file_only() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let edited = format!("# edited by hand\n{}", town.read_config());
    town.write_config(&edited);

    let r = town.refused(
        &["init", "--name", "test"],
        1,
        &["tinytown.toml", "already exists"],
    );
    assert!(r.hint.contains("--force"), "{}", r.hint);
    assert_eq!(
        town.read_config(),
        edited,
        "a refused init must not touch the file"
    );

    let out = town.ok(&["init", "--name", "test", "--force"]);
    assert!(out.contains("ready"), "{out}");
    assert!(!town.read_config().contains("# edited by hand"));
    // The town's data in Redis is kept.
    assert_eq!(town.agent_names(), ["alice"]);
    let gitignore = std::fs::read_to_string(town.path().join(".gitignore")).unwrap();
    assert_eq!(
        gitignore.lines().filter(|l| *l == ".tt/").count(),
        1,
        "{gitignore:?}"
    );
}

#[test]
fn init_appends_to_an_existing_gitignore() {
    let town = TestTown::bare();
    std::fs::write(town.path().join(".gitignore"), "target").unwrap();
    town.ok(&["init", "--name", "test"]);
    let gitignore = std::fs::read_to_string(town.path().join(".gitignore")).unwrap();
    assert_eq!(gitignore, "target\n.tt/\n");
}

#[test]
fn init_with_an_invalid_town_name_is_a_usage_error_and_writes_nothing() {
    let town = TestTown::bare();
    for bad in ["a b", "../x", "-x"] {
        let r = town.refused(
            &["init", &format!("--name={bad}")],
            2,
            &["invalid town name"],
        );
        assert!(r.hint.contains("--name"), "{}", r.hint);
    }
    assert!(!town.path().join("tinytown.toml").exists());
    assert!(!town.path().join(".tt").exists());
}

#[test]
fn init_without_a_name_names_the_town_after_its_directory() {
    let town = TestTown::bare();
    town.ok(&["init"]);
    let dir_name = town
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert_eq!(town.json(&["status", "--json"])["town"], dir_name.as_str());
}

// ----- agents ---------------------------------------------------------------------------------

#[test]
fn spawn_and_list_show_agents_in_text_and_json() {
    let town = TestTown::new();
    assert!(town.ok(&["list"]).contains("no agents"));
    assert_eq!(town.json(&["list", "--json"]), json!([]));

    assert_eq!(
        town.ok(&["spawn", "alice"]).trim(),
        "spawned alice (worker, builtin:worker)"
    );
    // A role with no built-in and no plugin: a mailbox only.
    assert_eq!(
        town.ok(&["spawn", "sink", "--role", "sink"]).trim(),
        "spawned sink (sink, no plugin yet)"
    );
    town.ok(&["kill", "sink"]);
    town.ok(&["prune"]);
    town.ok(&["spawn", "bob", "--role", "reviewer", "--nickname", "Bobby"]);

    let agents = town.agents();
    assert_eq!(town.agent_names(), ["alice", "bob"]);
    let bob = &agents[1];
    assert_eq!(bob["role"], "reviewer");
    assert_eq!(bob["nickname"], "Bobby");
    assert_eq!(bob["state"], "idle");
    // No --plugin: the built-in of its role, known by its digest like any plugin.
    assert_eq!(bob["plugin"], "builtin:reviewer");
    assert_eq!(bob["digest"].as_str().map(str::len), Some(64));
    assert_eq!(
        (bob["waiting"].as_u64(), bob["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(bob["active_tasks"], 0);
    assert!(bob["created_ms"].as_u64().unwrap() > 0);
    assert_eq!(agents[0]["role"], "worker");
    assert_eq!(agents[0]["nickname"], Value::Null);

    let text = town.ok(&["list"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("bob "))
        .expect("bob listed");
    for part in ["reviewer", "idle", "waiting 0", "(Bobby)"] {
        assert!(line.contains(part), "{line:?} lacks {part:?}");
    }
    let events = town.events();
    assert!(
        events.iter().any(|e| e["type"] == "agent"
            && e["agent"] == "bob"
            && e["to"] == "idle"
            && e["role"] == "reviewer"),
        "no spawn event for bob: {events:?}"
    );
}

#[test]
fn spawn_with_a_plugin_records_its_path_and_digest() {
    use sha2::{Digest, Sha256};
    let town = TestTown::new();
    let bytes = b"\0asm: not a real component, only hashed";
    std::fs::write(town.path().join("role.wasm"), bytes).unwrap();
    let digest: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let out = town.ok(&["spawn", "alice", "--plugin", "role.wasm"]);
    assert_eq!(out.trim(), "spawned alice (worker, role.wasm)");
    let alice = town.agent("alice").unwrap();
    assert_eq!(alice["plugin"], "role.wasm");
    assert_eq!(alice["digest"], digest.as_str());
    let deep = town.ok(&["status", "--deep"]);
    assert!(
        deep.contains(&format!("plugin role.wasm @{}", &digest[..12])),
        "{deep}"
    );

    // Without --plugin, the [agents.NAME] section of tinytown.toml names it.
    let config = town
        .read_config()
        .replace("[agents]", "[agents.carol]\nplugin = \"role.wasm\"");
    town.write_config(&config);
    town.ok(&["spawn", "carol"]);
    assert_eq!(town.agent("carol").unwrap()["digest"], digest.as_str());

    let r = town.refused(
        &["spawn", "bob", "--plugin", "missing.wasm"],
        1,
        &["missing.wasm"],
    );
    assert!(r.hint.contains("build"), "{}", r.hint);
    assert!(
        town.agent("bob").is_none(),
        "a refused spawn must not create the agent"
    );
}

#[test]
fn spawning_a_duplicate_name_is_refused_and_changes_nothing() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let before = town.agent("alice");
    let events = event_count(&town);
    let r = town.refused(
        &["spawn", "alice", "--role", "reviewer"],
        1,
        &["alice", "already exists"],
    );
    assert!(r.hint.contains("prune"), "{}", r.hint);
    assert_eq!(town.agent("alice"), before);
    assert_eq!(town.agents().len(), 1);
    assert_eq!(event_count(&town), events);
}

#[test]
fn invalid_agent_names_are_usage_errors() {
    let town = TestTown::new();
    let too_long = "x".repeat(65);
    for bad in [
        "../x",
        "a b",
        "a\u{1}b",
        "tab\tx",
        "new\nline",
        "a:b",
        "-x",
        "",
        "é",
        &too_long,
    ] {
        // After `--`, so that `-x` reaches tt instead of being taken for a flag.
        let r = town.refused(&["spawn", "--", bad], 2, &["invalid agent name"]);
        assert!(r.hint.contains("letters, digits"), "{}", r.hint);
    }
    assert!(town.agents().is_empty());
    // 64 characters is the limit.
    town.ok(&["spawn", &"x".repeat(64)]);
    assert_eq!(town.agents().len(), 1);
}

#[test]
fn every_command_taking_an_agent_name_checks_it() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["backlog", "add", "job"]);
    let events = event_count(&town);
    let cases: &[&[&str]] = &[
        &["kill", "../x"],
        &["interrupt", "a b"],
        &["resume", "../x"],
        &["close", "a\u{7}b"],
        &["send", "../x", "hi"],
        &["send", "alice", "hi", "--from", "../x"],
        &["inbox", "../x"],
        &["assign", "../x", "job"],
        &["backlog", "claim", "t1", "../x"],
    ];
    for args in cases {
        town.refused(args, 2, &["invalid agent name"]);
    }
    assert!(waiting(&town, "alice").is_empty());
    assert_eq!(ids(&town.json(&["tasks", "--json"])), ["t1"]);
    assert_eq!(town.backlog_ids(), ["t1"]);
    assert_eq!(event_count(&town), events);
}

#[test]
fn assign_checks_the_sender_name() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.refused(
        &["assign", "alice", "job", "--from", "../x"],
        2,
        &["invalid agent name"],
    );
    town.refused(
        &["assign", "alice", "job", "--from", "evil\nline"],
        2,
        &["invalid agent name"],
    );
    assert_eq!(town.json(&["tasks", "--json"]), json!([]));
    assert!(waiting(&town, "alice").is_empty());
}

#[test]
fn sending_as_an_unknown_agent_is_refused() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.refused(
        &["send", "alice", "hi", "--from", "ghost"],
        1,
        &["ghost", "not found"],
    );
    town.refused(
        &["assign", "alice", "job", "--from", "ghost"],
        1,
        &["ghost", "not found"],
    );
    assert!(waiting(&town, "alice").is_empty());
    assert_eq!(town.json(&["tasks", "--json"]), json!([]));
}

#[test]
fn agent_filters_check_the_name() {
    let town = TestTown::new();
    town.refused(&["tasks", "--agent", "../x"], 2, &["invalid agent name"]);
    town.refused(&["events", "--agent", "../x"], 2, &["invalid agent name"]);
}

#[test]
fn reserved_names_cannot_be_spawned() {
    let town = TestTown::new();
    for name in ["conductor", "supervisor"] {
        let r = town.refused(&["spawn", name], 1, &[name, "reserved"]);
        assert!(r.hint.contains("humans"), "{}", r.hint);
    }
    assert!(town.agents().is_empty());
    assert_eq!(town.redis(&["EXISTS", &town.key("agent:conductor")]), "0");
    assert_eq!(town.redis(&["EXISTS", &town.key("agent:supervisor")]), "0");
}

#[test]
fn commands_on_an_unknown_agent_fail_naming_it() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["backlog", "add", "job"]);
    let events = event_count(&town);
    let cases: &[&[&str]] = &[
        &["kill", "nobody"],
        &["interrupt", "nobody"],
        &["resume", "nobody"],
        &["close", "nobody"],
        &["send", "nobody", "hi"],
        &["inbox", "nobody"],
        &["assign", "nobody", "job"],
        &["backlog", "claim", "t1", "nobody"],
    ];
    for args in cases {
        let r = town.refused(args, 1, &["agent `nobody` not found"]);
        assert!(r.hint.contains("tt list"), "{}", r.hint);
    }
    assert_eq!(town.agent_names(), ["alice"]);
    assert_eq!(
        ids(&town.json(&["tasks", "--json"])),
        ["t1"],
        "a refused assign creates no task"
    );
    assert_eq!(town.backlog_ids(), ["t1"]);
    assert_eq!(town.task("t1")["owner"], Value::Null);
    assert_eq!(event_count(&town), events);
    // The refused assign did not use up a task id.
    assert_eq!(
        town.ok(&["assign", "alice", "next"]).trim(),
        "assigned t2 to alice"
    );
}

// ----- lifecycle ------------------------------------------------------------------------------

#[test]
fn interrupt_close_and_resume_follow_the_allowed_moves() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);

    assert_eq!(
        town.ok(&["interrupt", "alice"]).trim(),
        "alice is now interrupted"
    );
    assert_eq!(state_of_agent(&town, "alice"), "interrupted");
    let r = town.refused(
        &["interrupt", "alice"],
        1,
        &["alice", "interrupted", "cannot become interrupted"],
    );
    assert!(r.hint.contains("tt list"), "{}", r.hint);
    assert_eq!(state_of_agent(&town, "alice"), "interrupted");

    assert_eq!(town.ok(&["close", "alice"]).trim(), "alice is now closing");
    town.refused(
        &["close", "alice"],
        1,
        &["alice", "closing", "cannot become closing"],
    );
    assert_eq!(state_of_agent(&town, "alice"), "closing");

    assert_eq!(
        town.ok(&["interrupt", "alice"]).trim(),
        "alice is now interrupted"
    );
    assert_eq!(town.ok(&["resume", "alice"]).trim(), "alice is now idle");
    let events = event_count(&town);
    town.refused(
        &["resume", "alice"],
        1,
        &["alice", "idle", "cannot become idle"],
    );
    assert_eq!(state_of_agent(&town, "alice"), "idle");
    assert_eq!(event_count(&town), events);

    assert_eq!(town.ok(&["close", "alice"]).trim(), "alice is now closing");
    assert_eq!(town.ok(&["resume", "alice"]).trim(), "alice is now idle");

    let moves: Vec<(String, String)> = town
        .events()
        .iter()
        .filter(|e| e["type"] == "agent" && e["agent"] == "alice" && e.get("from").is_some())
        .map(|e| {
            (
                e["from"].as_str().unwrap().into(),
                e["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("idle", "interrupted"),
        ("interrupted", "closing"),
        ("closing", "interrupted"),
        ("interrupted", "idle"),
        ("idle", "closing"),
        ("closing", "idle"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(moves, expected);
}

#[test]
fn kill_stops_an_agent_and_resume_brings_it_back() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    assert_eq!(town.ok(&["kill", "alice"]).trim(), "alice is now stopped");
    assert_eq!(state_of_agent(&town, "alice"), "stopped");
    assert_eq!(town.ok(&["resume", "alice"]).trim(), "alice is now idle");
    town.ok(&["interrupt", "alice"]);
    assert_eq!(town.ok(&["kill", "alice"]).trim(), "alice is now stopped");
    assert!(town.events().iter().any(|e| e["type"] == "agent"
        && e["agent"] == "alice"
        && e["from"] == "interrupted"
        && e["to"] == "stopped"));
}

/// alice has two unread messages (one urgent), bob one; alice is stopped. Prunes and checks.
fn check_prune_dead_letters(town: &TestTown) {
    assert_eq!(town.xlen("dlq"), 0);
    assert_eq!(town.ok(&["prune"]).trim(), "pruned alice");
    assert_eq!(town.agent_names(), ["bob"]);
    assert_eq!(
        town.xlen("dlq"),
        2,
        "alice's unread mail goes to the dead letters"
    );
    let dlq = town.redis(&["XRANGE", &town.key("dlq"), "-", "+"]);
    for part in [
        "alice",
        "agent pruned before handling it",
        "first",
        "second",
    ] {
        assert!(dlq.contains(part), "dead letters lack {part:?}:\n{dlq}");
    }
    assert_eq!(town.json(&["status", "--json"])["dead_letters"], 2);
    assert_eq!(
        waiting(town, "bob").len(),
        1,
        "other mailboxes are untouched"
    );
    for stream in ["inbox:alice", "urgent:alice", "agent:alice"] {
        assert_eq!(
            town.redis(&["EXISTS", &town.key(stream)]),
            "0",
            "{stream} left behind"
        );
    }
    town.refused(&["inbox", "alice"], 1, &["agent `alice` not found"]);
    assert!(town
        .events()
        .iter()
        .any(|e| e["type"] == "agent" && e["agent"] == "alice" && e["to"] == "pruned"));
    assert_eq!(town.ok(&["prune"]).trim(), "nothing to prune");
    // The name can be used again, with an empty mailbox.
    town.ok(&["spawn", "alice"]);
    assert!(waiting(town, "alice").is_empty());
}

fn mail_for_prune(town: &TestTown) {
    town.spawn_agents(&["alice", "bob"]);
    town.ok(&["send", "alice", "first"]);
    town.ok(&["send", "alice", "second", "--urgent"]);
    town.ok(&["send", "bob", "for bob"]);
}

#[test]
fn prune_of_a_killed_agent_moves_its_unread_mail_to_the_dead_letters() {
    let town = TestTown::new();
    mail_for_prune(&town);
    town.ok(&["kill", "alice"]);
    check_prune_dead_letters(&town);
}

#[test]
fn prune_of_a_stopped_agent_moves_its_unread_mail_to_the_dead_letters() {
    let town = TestTown::new();
    mail_for_prune(&town);
    // `tt kill` is broken (see the ignored kill tests), so stop alice in Redis directly.
    town.redis(&["HSET", &town.key("agent:alice"), "state", "stopped"]);
    check_prune_dead_letters(&town);
}

#[test]
fn prune_keeps_live_agents_and_all_also_removes_cold_ones() {
    let town = TestTown::new();
    town.spawn_agents(&["alice", "bob", "carol"]);
    assert_eq!(town.ok(&["prune"]).trim(), "nothing to prune");
    town.ok(&["interrupt", "carol"]);
    // No tt command makes an agent cold (its host does); set it in Redis directly.
    town.redis(&["HSET", &town.key("agent:bob"), "state", "cold"]);
    assert_eq!(town.ok(&["prune"]).trim(), "nothing to prune");
    assert_eq!(town.agent_names(), ["alice", "bob", "carol"]);
    assert_eq!(town.ok(&["prune", "--all"]).trim(), "pruned bob");
    assert_eq!(town.agent_names(), ["alice", "carol"]);
}

#[test]
fn the_conductor_mailbox_has_no_lifecycle() {
    let town = TestTown::new();
    let events = event_count(&town);
    for cmd in ["interrupt", "close", "resume", "kill"] {
        let r = town.refused(&[cmd, "conductor"], 1, &["conductor", "no lifecycle"]);
        assert!(r.hint.contains("humans"), "{}", r.hint);
    }
    assert_eq!(event_count(&town), events);
    assert!(town.agents().is_empty());
}

#[test]
fn the_supervisor_alias_has_no_lifecycle_either() {
    let town = TestTown::new();
    let events = event_count(&town);
    for cmd in ["interrupt", "close", "resume", "kill"] {
        town.refused(&[cmd, "supervisor"], 1, &["no lifecycle"]);
    }
    assert_eq!(town.redis(&["EXISTS", &town.key("agent:supervisor")]), "0");
    assert_eq!(event_count(&town), events);
}

// ----- messages -------------------------------------------------------------------------------

#[test]
fn send_stores_kind_priority_and_sender_and_urgent_mail_comes_first() {
    let town = TestTown::new();
    town.spawn_agents(&["alice", "bob"]);
    assert_eq!(
        town.ok(&["send", "alice", "hello"]).trim(),
        "sent m1 to alice"
    );
    assert_eq!(
        town.ok(&["send", "alice", "look here", "--urgent", "--query"])
            .trim(),
        "sent m2 to alice (urgent)"
    );
    assert_eq!(
        town.ok(&["send", "alice", "fyi", "--info", "--from", "bob"])
            .trim(),
        "sent m3 to alice"
    );
    assert_eq!(
        town.ok(&["send", "alice", "thanks", "--ack"]).trim(),
        "sent m4 to alice"
    );

    let inbox = town.inbox("alice");
    assert_eq!(inbox["agent"], "alice");
    assert_eq!(inbox["delivered"], json!([]));
    let items = inbox["waiting"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str, &str, bool, &str)> = items
        .iter()
        .map(|i| {
            let m = &i["message"];
            (
                i["stream"].as_str().unwrap(),
                m["id"].as_str().unwrap(),
                m["kind"].as_str().unwrap(),
                m["from"].as_str().unwrap(),
                m["urgent"].as_bool().unwrap(),
                m["body"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("urgent", "m2", "query", "conductor", true, "look here"),
            ("inbox", "m1", "task", "conductor", false, "hello"),
            ("inbox", "m3", "info", "bob", false, "fyi"),
            ("inbox", "m4", "ack", "conductor", false, "thanks"),
        ]
    );
    for i in items {
        assert_eq!(i["message"]["to"], "alice");
        assert_eq!(i["message"]["task"], Value::Null);
        assert!(i["message"]["ts"].as_u64().unwrap() > 0);
    }

    let text = town.ok(&["inbox", "alice"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "alice: 4 waiting, 0 delivered and not yet acknowledged"
    );
    assert!(
        lines[1].contains("URGENT m2 query from conductor: look here"),
        "{text}"
    );
    assert!(lines[3].contains("m3 info from bob: fyi"), "{text}");

    assert_eq!(town.agent("alice").unwrap()["waiting"], 4);
    assert!(town.events().iter().any(|e| e["type"] == "sent"
        && e["msg"] == "m2"
        && e["urgent"] == "1"
        && e["to"] == "alice"
        && e["kind"] == "query"));
}

#[test]
fn inbox_is_non_destructive() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["send", "alice", "a"]);
    town.ok(&["send", "alice", "b", "--urgent"]);
    let first = town.inbox("alice");
    let second = town.inbox("alice");
    assert_eq!(first, second);
    assert_eq!(first["waiting"].as_array().unwrap().len(), 2);
    assert_eq!(town.ok(&["inbox", "alice"]), town.ok(&["inbox", "alice"]));
    assert_eq!(town.agent("alice").unwrap()["waiting"], 2);
}

#[test]
fn inbox_all_shows_every_mailbox_conductor_first() {
    let town = TestTown::new();
    town.spawn_agents(&["bob", "alice"]);
    town.ok(&["send", "alice", "for alice"]);
    town.ok(&["send", "conductor", "for the humans"]);
    let all = town.json(&["inbox", "--all", "--json"]);
    let boxes: Vec<(&str, usize)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["agent"].as_str().unwrap(),
                b["waiting"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(boxes, [("conductor", 1), ("alice", 1), ("bob", 0)]);
    let text = town.ok(&["inbox", "--all"]);
    for part in [
        "conductor: 1 waiting",
        "alice: 1 waiting",
        "bob: 0 waiting",
        "for the humans",
    ] {
        assert!(text.contains(part), "{text}");
    }
    // Without an agent, `tt inbox` is the conductor's.
    assert!(town.ok(&["inbox"]).starts_with("conductor: 1 waiting"));
}

#[test]
fn supervisor_and_conductor_are_one_mailbox() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["send", "supervisor", "to the humans"]);
    let conductor = town.inbox("conductor");
    assert_eq!(conductor["agent"], "conductor");
    let msgs = waiting(&town, "conductor");
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        (msgs[0]["body"].as_str(), msgs[0]["to"].as_str()),
        (Some("to the humans"), Some("conductor"))
    );
    assert_eq!(town.inbox("supervisor"), conductor);

    town.ok(&["send", "conductor", "again", "--urgent"]);
    let bodies: Vec<String> = waiting(&town, "supervisor")
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies, ["again", "to the humans"]);

    town.ok(&["send", "alice", "hi", "--from", "supervisor"]);
    assert_eq!(waiting(&town, "alice")[0]["from"], "conductor");
}

#[test]
fn inbox_clear_empties_only_the_conductor_mailbox() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["send", "alice", "keep me"]);
    town.ok(&["send", "conductor", "a"]);
    town.ok(&["send", "supervisor", "b", "--urgent"]);

    let r = town.refused(
        &["inbox", "alice", "--clear"],
        2,
        &["--clear", "conductor", "alice"],
    );
    assert!(r.hint.contains("host"), "{}", r.hint);
    assert_eq!(waiting(&town, "alice").len(), 1);
    assert_eq!(waiting(&town, "conductor").len(), 2);

    // It shows what it clears, then clears that.
    let out = town.ok(&["inbox", "--clear"]);
    assert!(
        out.contains("a") && out.trim().ends_with("marked 2 messages read"),
        "{out}"
    );
    assert!(waiting(&town, "conductor").is_empty());
    assert_eq!(
        waiting(&town, "alice").len(),
        1,
        "agents' mail is not touched"
    );

    town.ok(&["send", "conductor", "c"]);
    assert!(town
        .ok(&["inbox", "supervisor", "--clear"])
        .trim()
        .ends_with("marked 1 messages read"));
    assert!(waiting(&town, "conductor").is_empty());
    town.fails(&["inbox", "--all", "--clear"], 2);
}

#[test]
fn send_refuses_two_kinds_at_once() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let stderr = town.fails(&["send", "alice", "x", "--info", "--query"], 2);
    assert!(
        stderr.contains("--info") && stderr.contains("--query"),
        "{stderr}"
    );
    assert!(waiting(&town, "alice").is_empty());
}

#[test]
fn large_bodies_up_to_the_argv_limit_are_delivered_intact() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let body = "x".repeat(100 * 1024);
    town.ok(&["send", "alice", &body]);
    assert_eq!(
        waiting(&town, "alice")[0]["body"].as_str().unwrap().len(),
        body.len()
    );
}

#[test]
fn a_body_over_one_mib_is_a_usage_error() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let body = "x".repeat((1 << 20) + 1);
    let mut child = town
        .command(&["send", "alice", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting tt send");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(body.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    let stderr = expect_code(&["send", "alice", "<1 MiB + 1>"], &out, 2);
    refusal(&["send"], 2, &stderr, &["message body", "limit"]);
    assert!(waiting(&town, "alice").is_empty());
}

#[test]
fn a_description_over_64_kib_is_a_usage_error() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let too_big = "d".repeat(64 * 1024 + 1);
    let r = town.refused(
        &["assign", "alice", &too_big],
        2,
        &["task description", "65537 bytes", "65536"],
    );
    assert!(r.hint.contains("path or a summary"), "{}", r.hint);
    town.refused(
        &["backlog", "add", &too_big],
        2,
        &["task description", "65537 bytes"],
    );
    assert_eq!(town.json(&["tasks", "--json"]), json!([]));
    assert!(waiting(&town, "alice").is_empty());
    // Exactly at the limit is fine.
    town.ok(&["backlog", "add", &"d".repeat(64 * 1024)]);
    assert_eq!(town.backlog_ids(), ["t1"]);
}

// ----- tasks ----------------------------------------------------------------------------------

#[test]
fn assign_creates_an_assigned_task_and_tells_the_agent() {
    let town = TestTown::new();
    town.spawn_agents(&["alice", "bob"]);
    assert_eq!(
        town.ok(&["assign", "alice", "write the docs"]).trim(),
        "assigned t1 to alice"
    );

    let t = town.task("t1");
    assert_eq!(t["id"], "t1");
    assert_eq!(t["state"], "assigned");
    assert_eq!(t["owner"], "alice");
    assert_eq!(t["description"], "write the docs");
    assert_eq!(t["result"], Value::Null);
    assert_eq!(t["rejections"], 0);
    assert_eq!(t["tags"], json!([]));
    assert!(t["created_ms"].as_u64().unwrap() > 0);

    let mail = waiting(&town, "alice");
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0]["kind"], "task-assign");
    assert_eq!(mail[0]["task"], "t1");
    assert_eq!(mail[0]["body"], "write the docs");
    assert_eq!(mail[0]["from"], "conductor");
    assert_eq!(town.agent("alice").unwrap()["active_tasks"], 1);

    let text = town.ok(&["task", "show", "t1"]);
    assert!(text.starts_with("t1 [assigned] write the docs\n"), "{text}");
    assert!(text.contains("owner: alice"), "{text}");

    assert_eq!(
        town.ok(&["assign", "bob", "review it", "--from", "alice"])
            .trim(),
        "assigned t2 to bob"
    );
    assert_eq!(waiting(&town, "bob")[0]["from"], "alice");
    let moves: Vec<(Value, Value, Value)> = town
        .events()
        .iter()
        .filter(|e| e["type"] == "task" && e["task"] == "t2")
        .map(|e| {
            (
                e.get("from").cloned().unwrap_or(Value::Null),
                e["to"].clone(),
                e["by"].clone(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            (Value::Null, json!("pending"), json!("alice")),
            (json!("pending"), json!("assigned"), json!("alice"))
        ]
    );
    town.refused(&["assign", "conductor", "x"], 1, &["conductor mailbox"]);
    town.refused(&["assign", "supervisor", "x"], 1, &["conductor mailbox"]);
    assert_eq!(ids(&town.json(&["tasks", "--json"])), ["t1", "t2"]);
}

#[test]
fn tasks_filters_by_state_and_agent() {
    let town = TestTown::new();
    town.spawn_agents(&["alice", "bob"]);
    town.ok(&["assign", "alice", "a"]);
    town.ok(&["assign", "bob", "b"]);
    town.ok(&["assign", "alice", "c"]);
    town.ok(&["task", "complete", "t3", "--result", "ok"]);
    town.ok(&["backlog", "add", "d"]);

    let list = |args: &[&str]| ids(&town.json(&[&["tasks", "--json"][..], args].concat()));
    assert_eq!(list(&[]), ["t1", "t2", "t3", "t4"]);
    assert_eq!(list(&["--state", "assigned"]), ["t1", "t2"]);
    assert_eq!(list(&["--state", "completed"]), ["t3"]);
    assert_eq!(list(&["--state", "pending"]), ["t4"]);
    assert_eq!(list(&["--agent", "alice"]), ["t1", "t3"]);
    assert_eq!(list(&["--agent", "alice", "--state", "assigned"]), ["t1"]);
    assert!(list(&["--agent", "nobody"]).is_empty());

    assert_eq!(town.ok(&["tasks", "--state", "failed"]).trim(), "no tasks");
    let text = town.ok(&["tasks"]);
    assert_eq!(text.lines().count(), 4, "{text}");
    let t1 = text.lines().next().unwrap();
    assert!(
        t1.starts_with("t1")
            && t1.contains("assigned")
            && t1.contains("alice")
            && t1.ends_with(" a"),
        "{t1:?}"
    );

    let r = town.refused(
        &["tasks", "--state", "bogus"],
        2,
        &["unknown task state", "bogus"],
    );
    assert!(
        r.hint.contains("pending") && r.hint.contains("cancelled"),
        "{}",
        r.hint
    );
}

#[test]
fn complete_fail_and_cancel_finish_tasks() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    for d in ["one", "two", "three"] {
        town.ok(&["assign", "alice", d]);
    }
    assert_eq!(town.agent("alice").unwrap()["active_tasks"], 3);
    assert_eq!(
        town.ok(&["task", "complete", "t1", "--result", "all done"])
            .trim(),
        "t1 is now completed"
    );
    assert_eq!(
        town.ok(&["task", "fail", "t2", "--error", "it broke"])
            .trim(),
        "t2 is now failed"
    );
    assert_eq!(
        town.ok(&["task", "cancel", "t3"]).trim(),
        "t3 is now cancelled"
    );

    let t1 = town.task("t1");
    assert_eq!(
        (t1["state"].as_str(), t1["result"].as_str()),
        (Some("completed"), Some("all done"))
    );
    let t2 = town.task("t2");
    assert_eq!(
        (t2["state"].as_str(), t2["result"].as_str()),
        (Some("failed"), Some("it broke"))
    );
    let t3 = town.task("t3");
    assert_eq!(
        (t3["state"].as_str(), t3["result"].as_str()),
        (Some("cancelled"), None)
    );
    assert_eq!(town.agent("alice").unwrap()["active_tasks"], 0);
    assert!(town
        .ok(&["task", "show", "t1"])
        .contains("result: all done"));

    let finished: Vec<(Value, Value)> = town
        .events()
        .iter()
        .filter(|e| e["type"] == "task" && e["from"] == "assigned")
        .map(|e| (e["task"].clone(), e["to"].clone()))
        .collect();
    assert_eq!(
        finished,
        [
            (json!("t1"), json!("completed")),
            (json!("t2"), json!("failed")),
            (json!("t3"), json!("cancelled"))
        ]
    );
}

#[test]
fn illegal_transitions_are_refused_and_change_nothing() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["assign", "alice", "a"]);
    town.ok(&["assign", "alice", "b"]);
    town.ok(&["task", "cancel", "t1"]);
    town.ok(&["task", "complete", "t2", "--result", "ok"]);
    town.ok(&["backlog", "add", "c"]);
    let before: Vec<Value> = ["t1", "t2", "t3"].iter().map(|id| town.task(id)).collect();
    let events = event_count(&town);

    let r = town.refused(
        &["task", "complete", "t1", "--result", "late"],
        1,
        &["t1", "cancelled", "cannot become completed"],
    );
    assert!(r.hint.contains("tt task show"), "{}", r.hint);
    town.refused(
        &["task", "cancel", "t2"],
        1,
        &["t2", "completed", "cannot become cancelled"],
    );
    town.refused(
        &["task", "fail", "t2", "--error", "e"],
        1,
        &["t2", "cannot become failed"],
    );
    town.refused(
        &["task", "complete", "t2", "--result", "again"],
        1,
        &["t2", "cannot become completed"],
    );
    // A backlog task cannot be finished before someone takes it.
    town.refused(
        &["task", "complete", "t3", "--result", "r"],
        1,
        &["t3", "pending", "cannot become completed"],
    );
    town.refused(
        &["task", "fail", "t3", "--error", "r"],
        1,
        &["t3", "pending", "cannot become failed"],
    );

    let after: Vec<Value> = ["t1", "t2", "t3"].iter().map(|id| town.task(id)).collect();
    assert_eq!(after, before);
    assert_eq!(town.backlog_ids(), ["t3"]);
    assert_eq!(event_count(&town), events);
}

#[test]
fn unknown_task_ids_fail_and_malformed_ones_are_usage_errors() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let unknown: &[&[&str]] = &[
        &["task", "show", "t99"],
        &["task", "show", "t99", "--json"],
        &["task", "complete", "t99", "--result", "r"],
        &["task", "fail", "t99", "--error", "e"],
        &["task", "cancel", "t99"],
        &["backlog", "claim", "t99", "alice"],
        &["backlog", "remove", "t99"],
    ];
    for args in unknown {
        let r = town.refused(args, 1, &["task `t99` not found"]);
        assert!(r.hint.contains("tt tasks"), "{}", r.hint);
    }
    let too_long = format!("t{}", "9".repeat(24));
    for bad in ["x1", "t", "t1a", "T1", "t-1", "1", "", too_long.as_str()] {
        for args in [
            vec!["task", "show", bad],
            vec!["task", "cancel", bad],
            vec!["task", "complete", bad, "--result", "r"],
            vec!["backlog", "claim", bad, "alice"],
            vec!["backlog", "remove", bad],
        ] {
            let r = town.refused(&args, 2, &["invalid task id"]);
            assert!(r.hint.contains("t12"), "{}", r.hint);
        }
    }
    assert_eq!(town.json(&["tasks", "--json"]), json!([]));
    assert!(waiting(&town, "alice").is_empty());
}

// ----- backlog --------------------------------------------------------------------------------

#[test]
fn backlog_add_list_claim_and_remove() {
    let town = TestTown::new();
    town.spawn_agents(&["alice", "bob"]);
    assert_eq!(town.ok(&["backlog", "list"]).trim(), "backlog is empty");
    assert_eq!(town.json(&["backlog", "list", "--json"]), json!([]));

    assert_eq!(
        town.ok(&["backlog", "add", "first job", "--tags", "docs,urgent"])
            .trim(),
        "added t1 to the backlog"
    );
    assert_eq!(
        town.ok(&["backlog", "add", "second job"]).trim(),
        "added t2 to the backlog"
    );
    let list = town.json(&["backlog", "list", "--json"]);
    assert_eq!(ids(&list), ["t1", "t2"]);
    assert_eq!(list[0]["tags"], json!(["docs", "urgent"]));
    assert_eq!(
        (list[0]["state"].as_str(), &list[0]["owner"]),
        (Some("pending"), &Value::Null)
    );
    assert_eq!(list[1]["tags"], json!([]));
    let text = town.ok(&["backlog", "list"]);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("t1")
            && first.contains("pending")
            && first.ends_with("first job [docs,urgent]"),
        "{first:?}"
    );
    assert!(town
        .ok(&["task", "show", "t1"])
        .contains("tags: docs, urgent"));

    assert_eq!(
        town.ok(&["backlog", "claim", "t1", "alice"]).trim(),
        "t1 claimed by alice"
    );
    let t1 = town.task("t1");
    assert_eq!(
        (t1["state"].as_str(), t1["owner"].as_str()),
        (Some("assigned"), Some("alice"))
    );
    assert_eq!(town.backlog_ids(), ["t2"]);
    let mail = waiting(&town, "alice");
    assert_eq!(mail.len(), 1);
    assert_eq!(
        (mail[0]["kind"].as_str(), mail[0]["task"].as_str()),
        (Some("task-assign"), Some("t1"))
    );
    assert_eq!(mail[0]["body"], "first job");
    assert_eq!(town.agent("alice").unwrap()["active_tasks"], 1);

    // Claiming an already-claimed task fails and changes nothing.
    let events = event_count(&town);
    let r = town.refused(
        &["backlog", "claim", "t1", "bob"],
        1,
        &["t1", "not in the backlog"],
    );
    assert!(r.hint.contains("tt backlog list"), "{}", r.hint);
    assert_eq!(town.task("t1"), t1);
    assert!(waiting(&town, "bob").is_empty());
    assert_eq!(waiting(&town, "alice").len(), 1);
    assert_eq!(event_count(&town), events);

    assert_eq!(
        town.ok(&["backlog", "remove", "t2"]).trim(),
        "t2 removed from the backlog (cancelled)"
    );
    let t2 = town.task("t2");
    assert_eq!(
        (t2["state"].as_str(), t2["result"].as_str()),
        (Some("cancelled"), Some("removed from the backlog"))
    );
    assert!(town.backlog_ids().is_empty());
    town.refused(
        &["backlog", "remove", "t2"],
        1,
        &["t2", "not in the backlog"],
    );
    town.refused(
        &["backlog", "claim", "t2", "alice"],
        1,
        &["t2", "not in the backlog"],
    );
    town.refused(
        &["backlog", "remove", "t1"],
        1,
        &["t1", "not in the backlog"],
    );
    assert_eq!(town.task("t2"), t2);
    assert_eq!(town.task("t1"), t1);
}

#[test]
fn a_failed_claim_leaves_the_task_in_the_backlog() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["backlog", "add", "job"]);
    let before = town.task("t1");
    let events = event_count(&town);

    town.refused(
        &["backlog", "claim", "t1", "../x"],
        2,
        &["invalid agent name"],
    );
    town.refused(
        &["backlog", "claim", "t1", "nobody"],
        1,
        &["agent `nobody` not found"],
    );
    town.refused(
        &["backlog", "claim", "t1", "conductor"],
        1,
        &["conductor mailbox"],
    );
    town.refused(
        &["backlog", "claim", "t1", "supervisor"],
        1,
        &["conductor mailbox"],
    );

    assert_eq!(town.backlog_ids(), ["t1"]);
    assert_eq!(town.task("t1"), before);
    assert!(waiting(&town, "alice").is_empty());
    assert!(waiting(&town, "conductor").is_empty());
    assert_eq!(event_count(&town), events);
    town.ok(&["backlog", "claim", "t1", "alice"]);
}

#[test]
fn a_cancelled_task_s_owner_is_told_and_nobody_else() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["assign", "alice", "a"]);
    town.ok(&["backlog", "add", "unowned"]);
    town.ok(&["task", "cancel", "t1"]);
    town.ok(&["task", "cancel", "t2"]);
    let inbox = town.inbox("alice");
    let kinds: Vec<(&str, &str, &str)> = inbox["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let m = &m["message"];
            (
                m["kind"].as_str().unwrap(),
                m["task"].as_str().unwrap_or(""),
                m["body"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("task-assign", "t1", "a"),
            ("info", "t1", "task t1 was cancelled by conductor")
        ],
        "{inbox}"
    );
}

#[test]
fn cancelling_a_backlog_task_takes_it_out_of_the_backlog() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["backlog", "add", "job"]);
    assert_eq!(
        town.ok(&["task", "cancel", "t1"]).trim(),
        "t1 is now cancelled"
    );
    assert!(town.backlog_ids().is_empty());
    town.refused(
        &["backlog", "claim", "t1", "alice"],
        1,
        &["not in the backlog"],
    );
    assert_eq!(state_of_task(&town, "t1"), "cancelled");
}

#[test]
fn backlog_add_tells_conductor_agents() {
    let town = TestTown::new();
    town.ok(&["spawn", "boss", "--role", "conductor"]);
    town.ok(&["spawn", "alice"]);
    town.ok(&["backlog", "add", "new work"]);
    let mail = waiting(&town, "boss");
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0]["kind"], "info");
    assert_eq!(mail[0]["task"], "t1");
    assert_eq!(mail[0]["body"], "backlog: t1 new work");
    assert!(waiting(&town, "alice").is_empty());
}

// ----- status and events ----------------------------------------------------------------------

#[test]
fn status_summarises_the_town() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["spawn", "bob", "--role", "reviewer"]);
    town.ok(&["assign", "alice", "a"]);
    town.ok(&["assign", "alice", "b"]);
    town.ok(&["task", "complete", "t2", "--result", "ok"]);
    town.ok(&["backlog", "add", "c"]);
    town.ok(&["backlog", "add", "d"]);
    town.ok(&["backlog", "remove", "t4"]);

    let s = town.json(&["status", "--json"]);
    assert_eq!(s["town"], "test");
    assert_eq!(s["redis"], "embedded");
    let agents = s["agents"].as_array().unwrap();
    let names: Vec<&str> = agents.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(agents[0]["active_tasks"], 1);
    assert_eq!(agents[0]["waiting"], 2, "two task-assign messages");
    assert_eq!(agents[1]["role"], "reviewer");
    assert_eq!(
        s["tasks"],
        json!({"assigned": 1, "completed": 1, "pending": 1, "cancelled": 1})
    );
    assert_eq!(s["backlog"], 1);
    assert_eq!(s["dead_letters"], 0);
    assert_eq!(s["conductor_inbox"], 0);
    assert_eq!(s["hosts"], json!([]));
    assert_eq!(
        s["recent_events"],
        json!(town.json_lines(&["events", "-n", "5", "--json"]))
    );

    let deep = town.json(&["status", "--deep", "--json"]);
    let all = town.events();
    assert!(all.len() > 5, "enough history to tell 5 from 20");
    let expect = &all[all.len().saturating_sub(20)..];
    assert_eq!(deep["recent_events"], json!(expect));

    let text = town.ok(&["status"]);
    for part in [
        "town test (redis: embedded)",
        "agents: 2   conductor inbox: 0   backlog: 1   dead letters: 0",
        "tasks: assigned 1, cancelled 1, completed 1, pending 1",
        "recent events:",
    ] {
        assert!(text.contains(part), "status lacks {part:?}:\n{text}");
    }
    let alice = text
        .lines()
        .find(|l| l.trim_start().starts_with("alice"))
        .unwrap();
    assert!(
        alice.contains("waiting 2") && alice.contains("tasks 1"),
        "{alice:?}"
    );
    assert!(!text.contains("hosts:"));
    let deep = town.ok(&["status", "--deep"]);
    assert!(deep.contains("hosts:\n  none running"), "{deep}");
    // No plugin given: the built-ins of their roles, by digest.
    assert!(deep.contains("plugin builtin:worker @"), "{deep}");
    assert!(deep.contains("plugin builtin:reviewer @"), "{deep}");
}

#[test]
fn status_counts_the_conductor_inbox() {
    let town = TestTown::new();
    town.ok(&["send", "conductor", "a"]);
    town.ok(&["send", "supervisor", "b", "--urgent"]);
    assert_eq!(town.json(&["status", "--json"])["conductor_inbox"], 2);
    assert!(town.ok(&["status"]).contains("conductor inbox: 2"));
}

#[test]
fn events_show_history_with_count_agent_filter_and_json() {
    let town = TestTown::new();
    town.spawn_agents(&["alice", "bob"]);
    town.ok(&["send", "alice", "one"]);
    town.ok(&["send", "bob", "two"]);
    town.ok(&["assign", "bob", "job"]);

    let all = town.events();
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["agent", "agent", "sent", "sent", "task", "task", "sent"]
    );
    for e in &all {
        assert!(e["id"].as_str().is_some_and(|id| id.contains('-')), "{e}");
        assert!(e["ts"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    }
    assert_eq!(
        town.json_lines(&["events", "-n", "3", "--json"]),
        &all[all.len() - 3..]
    );
    let text = town.ok(&["events", "-n", "3"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[2].ends_with("conductor -> bob  task-assign [t1]  job"),
        "{text}"
    );
    assert!(
        lines[1].contains("task t1  pending -> assigned  by conductor"),
        "{text}"
    );
    assert_eq!(
        town.ok(&["events"]).lines().count(),
        all.len(),
        "-n defaults to 50"
    );
    assert_eq!(town.ok(&["events", "-n", "0"]), "");

    let bob = town.json_lines(&["events", "--agent", "bob", "--json"]);
    assert!(!bob.is_empty());
    for e in &bob {
        assert!(
            ["agent", "from", "to", "by"].iter().any(|k| e[*k] == "bob"),
            "{e} is not about bob"
        );
    }
    let bodies: Vec<&str> = bob.iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies, ["two", "job"]);
    let last = town.json_lines(&["events", "--agent", "bob", "-n", "1", "--json"]);
    assert_eq!(last, &bob[bob.len() - 1..]);
}

#[test]
fn events_follow_prints_new_events_as_they_happen() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    let follow = town.start(&["events", "--follow", "-n", "1", "--json"]);
    let past: Value = serde_json::from_str(&follow.next_line(10 * SECOND)).unwrap();
    assert_eq!(
        (past["type"].as_str(), past["agent"].as_str()),
        (Some("agent"), Some("alice"))
    );

    town.ok(&["send", "alice", "are you there?"]);
    let new: Value = serde_json::from_str(&follow.next_line(10 * SECOND)).unwrap();
    assert_eq!(new["type"], "sent");
    assert_eq!(new["to"], "alice");
    assert_eq!(new["body"], "are you there?");
    let stderr = follow.stop();
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn events_follow_can_watch_one_agent() {
    let town = TestTown::new();
    town.spawn_agents(&["alice", "bob"]);
    let follow = town.start(&["events", "--follow", "-n", "1", "--agent", "bob"]);
    let past = follow.next_line(10 * SECOND);
    assert!(past.contains("agent bob  idle"), "{past:?}");
    town.ok(&["send", "alice", "not for bob"]);
    town.ok(&["send", "bob", "for bob"]);
    let line = follow.next_line(10 * SECOND);
    assert!(
        line.ends_with("conductor -> bob  task  for bob"),
        "{line:?}"
    );
    follow.stop();
}

// ----- wait -----------------------------------------------------------------------------------

#[test]
fn wait_times_out_while_a_task_is_open_and_returns_once_all_are_finished() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    assert_eq!(town.ok(&["wait", "--timeout", "5"]).trim(), "town is idle");

    town.ok(&["assign", "alice", "job"]);
    // An interrupted agent's mail does not count; only the open task keeps the town busy.
    town.ok(&["interrupt", "alice"]);
    let start = Instant::now();
    let r = town.refused(&["wait", "--timeout", "0.3"], 1, &["still busy"]);
    let took = start.elapsed();
    assert!(r.hint.contains("tt status"), "{}", r.hint);
    assert!(
        took >= Duration::from_millis(300) && took < 10 * SECOND,
        "{took:?}"
    );
    assert_eq!(state_of_task(&town, "t1"), "assigned");

    let mut wait = town.start(&["wait", "--timeout", "20"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(wait.is_running(), "wait returned while t1 was open");
    town.ok(&["task", "complete", "t1", "--result", "done"]);
    let status = wait
        .wait_for_exit(10 * SECOND)
        .expect("wait returns once the task is done");
    assert!(status.success(), "{status:?}");
    assert_eq!(wait.next_line(SECOND), "town is idle");
}

#[test]
fn wait_counts_unhandled_mail_of_live_agents() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["send", "alice", "hi"]);
    town.refused(&["wait", "--timeout", "0.2"], 1, &["still busy"]);
    town.ok(&["interrupt", "alice"]);
    assert_eq!(town.ok(&["wait", "--timeout", "5"]).trim(), "town is idle");
}

// ----- shutdown -------------------------------------------------------------------------------

#[test]
fn shutdown_stops_redis_and_the_next_command_restarts_it_with_the_data() {
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.ok(&["send", "alice", "persisted"]);
    assert_eq!(town.ok(&["shutdown"]).trim(), "embedded Redis stopped");
    assert!(!town.socket().exists(), "the socket is removed");
    assert_eq!(
        town.ok(&["shutdown"]).trim(),
        "embedded Redis was not running"
    );

    // Any command starts the server again, with the town's data (append-only file).
    assert_eq!(town.agent_names(), ["alice"]);
    assert_eq!(waiting(&town, "alice")[0]["body"], "persisted");
    assert!(town.socket().exists());
}

// ----- configuration and connection errors ----------------------------------------------------

#[test]
fn a_directory_without_a_town_says_to_run_init() {
    let town = TestTown::bare();
    let cases: &[&[&str]] = &[
        &["list"],
        &["status"],
        &["send", "alice", "hi"],
        &["shutdown"],
    ];
    for args in cases {
        let r = town.refused(args, 1, &["tinytown.toml"]);
        assert!(r.hint.contains("tt init"), "{}", r.hint);
    }
    // Without TT_TOWN, tt looks in the current directory and its parents.
    let mut c = std::process::Command::new(tt_bin());
    c.arg("list").env_remove("TT_TOWN").current_dir(town.path());
    let out = run(c);
    let stderr = expect_code(&["list"], &out, 1);
    let dir = town.path().to_string_lossy().to_string();
    let r = refusal(&["list"], 1, &stderr, &["no tinytown.toml in", &dir]);
    assert!(r.hint.contains("tt init"), "{}", r.hint);
    assert_eq!(
        std::fs::read_dir(town.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[test]
fn a_broken_config_names_the_line_and_the_field() {
    let town = TestTown::bare();
    town.write_config("[town]\nname = \"test\"\nbogus = 1\n");
    let r = town.refused(&["list"], 1, &["tinytown.toml", "line 3", "bogus"]);
    assert!(r.hint.contains("line and field"), "{}", r.hint);

    town.write_config("[town]\nname = 5\n");
    town.refused(&["status"], 1, &["tinytown.toml", "line 2"]);
    town.write_config("[town]\nname = \"../x\"\n");
    town.refused(&["list"], 1, &["[town] name"]);
    town.write_config("[town]\nname = \"t\"\n\n[redis]\nappendfsync = \"sometimes\"\n");
    town.refused(&["list"], 1, &["appendfsync", "sometimes"]);
    town.write_config("[town]\nname = \"t\"\n\n[limits]\nmemroy_mb = 1\n");
    town.refused(&["list"], 1, &["line 5", "memroy_mb"]);
    assert!(
        !town.path().join(".tt").exists(),
        "no Redis was started for a broken config"
    );
}

#[test]
fn status_deep_shows_each_agents_confinement() {
    let town = TestTown::new();
    let config = town.read_config();
    town.write_config(&format!(
        "{config}\n[agents.w]\nrole = \"worker\"\n\n[agents.w.exec]\nallow = [\"/bin/sh\"]\n\n\
         [agents.open]\nrole = \"worker\"\n\n[agents.open.exec]\nallow = [\"/bin/sh\"]\nsandbox = \"off\"\n\n\
         [agents.broken]\nrole = \"worker\"\n\n[agents.broken.exec]\nallow = [\"no-such-program\"]\n"
    ));
    for a in ["w", "open", "broken", "plain"] {
        town.ok(&["spawn", a]);
    }
    let deep = town.ok(&["status", "--deep"]);
    let line_after = |agent: &str| {
        let mut lines = deep
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(agent));
        lines.next();
        lines.next().unwrap_or("").to_string()
    };
    let w = line_after("w ");
    assert!(
        w.contains("exec: landlock") && w.contains("net none"),
        "{deep}"
    );
    assert!(line_after("open ").contains("exec: sandbox off"), "{deep}");
    assert!(
        line_after("broken ").contains("grants cannot be resolved")
            && deep.contains("no-such-program"),
        "{deep}"
    );
    assert!(!line_after("plain ").contains("exec:"), "{deep}");
}

#[test]
fn a_grant_of_an_unknown_or_misspelt_capability_is_refused_by_name() {
    let town = TestTown::bare();
    town.write_config("[town]\nname = \"t\"\n\n[agents.w.exce]\nallow = [\"sh\"]\n");
    let r = town.refused(&["list"], 1, &["[agents.w.exce]", "no capability `exce`"]);
    assert!(r.hint.contains("exec"), "{}", r.hint);
    town.write_config("[town]\nname = \"t\"\n\n[agents.w.exec]\nalow = [\"sh\"]\n");
    town.refused(&["list"], 1, &["[agents.w.exec] is not valid", "alow"]);
    assert!(
        !town.path().join(".tt").exists(),
        "no Redis was started for a refused grant"
    );
}

#[test]
fn an_unreachable_redis_fails_fast_with_a_hint() {
    let town = TestTown::bare();
    town.write_config("[town]\nname = \"test\"\n\n[redis]\nurl = \"redis://127.0.0.1:1\"\n");
    for args in [&["list"][..], &["spawn", "alice"]] {
        let start = Instant::now();
        let r = town.refused(args, 1, &["cannot reach Redis", "redis://127.0.0.1:1"]);
        assert!(start.elapsed() < 15 * SECOND, "took {:?}", start.elapsed());
        assert!(r.hint.contains("[redis] url"), "{}", r.hint);
    }
    assert!(
        !town.path().join(".tt").exists(),
        "no embedded Redis when a url is set"
    );
}

#[test]
fn a_command_draws_no_error_reply_from_redis() {
    // Each command is a process of its own that connects once: nothing of its set-up may cost
    // a round trip Redis refuses (redis-rs's `CLIENT SETINFO`, unknown to Redis 7.0).
    let town = TestTown::new();
    town.ok(&["spawn", "alice"]);
    town.redis(&["CONFIG", "RESETSTAT"]);
    town.ok(&["send", "alice", "hello"]);
    town.ok(&["inbox", "alice"]);
    let stats = town.redis(&["INFO", "stats"]);
    let errors = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("total_error_replies:"))
        .expect("INFO stats names total_error_replies");
    assert_eq!(errors, "0", "{}", town.redis(&["INFO", "errorstats"]));
}

#[test]
fn init_without_redis_server_says_how_to_install_it() {
    let town = TestTown::bare();
    let bin = town.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let mut c = town.command(&["init", "--name", "test"]);
    c.env("PATH", &bin);
    let out = run(c);
    let stderr = expect_code(&["init"], &out, 1);
    let r = refusal(&["init"], 1, &stderr, &["redis-server", "not installed"]);
    assert!(
        r.hint.contains("apt-get install") && r.hint.contains("redis-server"),
        "{}",
        r.hint
    );
    assert!(r.hint.contains("[redis] url"), "{}", r.hint);
    assert!(!town.socket().exists());
}

#[test]
fn init_can_be_retried_after_a_failure() {
    let town = TestTown::bare();
    let bin = town.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let mut c = town.command(&["init", "--name", "test"]);
    c.env("PATH", &bin);
    expect_code(&["init"], &run(c), 1);
    town.ok(&["init", "--name", "test"]);
}

fn password_env_config(url: &str) -> String {
    format!("[town]\nname = \"test\"\n\n[redis]\nurl = \"{url}\"\npassword_env = \"TT_TEST_REDIS_PASSWORD\"\n")
}

/// `tt args…` with TT_TEST_REDIS_PASSWORD set to `password` (unset for `None`).
fn with_password(town: &TestTown, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut c = town.command(args);
    match password {
        Some(p) => c.env("TT_TEST_REDIS_PASSWORD", p),
        None => c.env_remove("TT_TEST_REDIS_PASSWORD"),
    };
    run(c)
}

#[test]
fn the_right_password_from_env_works_and_wrong_or_unset_ones_fail() {
    let redis = ExternalRedis::start(&["--requirepass", "secret"]);
    let town = TestTown::bare();
    town.write_config(&password_env_config(&redis.url()));

    let out = with_password(&town, &["list"], None);
    let stderr = expect_code(&["list"], &out, 1);
    let r = refusal(
        &["list"],
        1,
        &stderr,
        &["TT_TEST_REDIS_PASSWORD", "not set"],
    );
    assert!(
        r.hint.contains("export TT_TEST_REDIS_PASSWORD"),
        "{}",
        r.hint
    );

    let out = with_password(&town, &["spawn", "alice"], Some("wrong"));
    let stderr = expect_code(&["spawn"], &out, 1);
    let r = refusal(&["spawn"], 1, &stderr, &[]);
    assert!(r.error.to_lowercase().contains("password"), "{}", r.error);

    let out = with_password(&town, &["spawn", "alice"], Some("secret"));
    common::expect_ok(&["spawn", "alice"], &out);
    let out = with_password(&town, &["list", "--json"], Some("secret"));
    let list: Value = serde_json::from_str(&common::expect_ok(&["list"], &out)).unwrap();
    assert_eq!(list[0]["name"], "alice");
}

#[test]
fn a_wrong_password_is_reported_as_refused() {
    let redis = ExternalRedis::start(&["--requirepass", "secret"]);
    let town = TestTown::bare();
    town.write_config(&password_env_config(&redis.url()));
    let out = with_password(&town, &["list"], Some("wrong"));
    let stderr = expect_code(&["list"], &out, 1);
    let r = refusal(&["list"], 1, &stderr, &["refused the password"]);
    assert!(r.hint.contains("password_env"), "{}", r.hint);
}

#[test]
fn a_missing_password_gets_a_hint() {
    let redis = ExternalRedis::start(&["--requirepass", "secret"]);
    let town = TestTown::bare();
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[redis]\nurl = \"{}\"\n",
        redis.url()
    ));
    for args in [&["list"][..], &["spawn", "alice"]] {
        let r = town.refused(args, 1, &[]);
        let error = r.error.to_lowercase();
        assert!(
            error.contains("password") || error.contains("credentials"),
            "{}",
            r.error
        );
        assert!(r.hint.contains("password_env"), "{}", r.hint);
    }
}

#[test]
fn a_password_file_must_be_private() {
    let redis = ExternalRedis::start(&["--requirepass", "secret"]);
    let town = TestTown::bare();
    let file = town.path().join("redis.pass");
    std::fs::write(&file, "secret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    town.write_config(&format!(
        "[town]\nname = \"test\"\n\n[redis]\nurl = \"{}\"\npassword_file = \"redis.pass\"\n",
        redis.url()
    ));
    let r = town.refused(&["list"], 1, &["redis.pass", "readable by others", "644"]);
    assert_eq!(r.hint, format!("chmod 600 {}", file.display()));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    town.ok(&["spawn", "alice"]);
    assert_eq!(town.agent_names(), ["alice"]);

    std::fs::write(&file, "not the password\n").unwrap();
    town.fails(&["list"], 1);
}

#[test]
fn config_values_out_of_range_are_refused_naming_the_field() {
    let town = TestTown::bare();
    for (section, needle) in [
        (
            "[host]\nlease_ms = 2\n",
            "[host] lease_ms = 2: use 300 or more",
        ),
        (
            "[host]\nlease_ms = 1000\nheartbeat_ms = 1000\n",
            "[host] heartbeat_ms = 1000: it must be above 0 and below lease_ms (1000)",
        ),
        (
            "[limits]\nmax_deliveries = 0\n",
            "[limits] max_deliveries = 0",
        ),
        (
            "[agents.w]\nrole = \"worker\"\n\n[agents.w.limits]\nmax_sends = 0\n",
            "[agents.w.limits] max_sends = 0",
        ),
        ("[retention]\nevents = 0\n", "[retention] events = 0"),
        (
            "[retention]\njournal_total = 0\n",
            "[retention] journal_total = 0",
        ),
        (
            "[retention]\nmailbox_history_total = 0\n",
            "[retention] mailbox_history_total = 0",
        ),
        (
            "[retention]\nmaxmemory_mb = 4\n",
            "[retention] maxmemory_mb = 4",
        ),
        ("[retention]\nsweep_ms = 1\n", "[retention] sweep_ms = 1"),
        (
            "[host]\nconnections = 1\n",
            "[host] connections = 1: use 2 or more",
        ),
        (
            "[host]\nmax_instances = 0\n",
            "[host] max_instances = 0: use 1 or more",
        ),
    ] {
        town.write_config(&format!("[town]\nname = \"t\"\n\n{section}"));
        town.refused(&["list"], 1, &[needle]);
    }
    assert!(
        !town.path().join(".tt").exists(),
        "no Redis was started for a refused config"
    );
    // The boundary values are accepted.
    town.write_config(
        "[town]\nname = \"t\"\n\n[host]\nlease_ms = 300\nheartbeat_ms = 100\n\n[retention]\nmaxmemory_mb = 16\n",
    );
    town.ok(&["list"]);
}
