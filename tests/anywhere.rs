//! `tt` anywhere: the built-in roles, the README's tour run as written, and agents that cannot
//! be served reported (never idling silently). `tt doctor`'s own checks: tests/doctor.rs.
//! Real `redis-server`s and the real built-in components; no mocks.

mod common;
#[path = "common/doctor.rs"]
mod doctor_lines;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{plugin, plugin_path, refusal, run_timeout, TestTown};
use doctor_lines::{assert_fails, check, doctor};
use serde_json::Value;

/// A stand-in for a coding CLI: reads the task on stdin, writes greet.sh, says what it did.
const STAND_IN_CLI: &str =
    "#!/bin/sh\ntask=$(cat)\nprintf '#!/bin/sh\\necho Hello\\n' > greet.sh\necho \"did: $task\"\n";

/// A directory of programs for PATH: a copy of `tt` and a stand-in `claude`.
fn bin_dir(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(common::tt_bin(), bin.join("tt")).unwrap();
    let cli = bin.join("claude");
    std::fs::write(&cli, STAND_IN_CLI).unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The first ```sh block after `## A five-minute tour` in the README.
fn readme_tour() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("reading README.md");
    let tour = &readme[readme
        .find("## A five-minute tour")
        .expect("the README has a tour")..];
    let start = tour.find("```sh\n").expect("the tour has a sh block") + 6;
    let len = tour[start..].find("```").expect("the block ends");
    tour[start..start + len].to_string()
}

/// A `tt` command for a town in `dir` with PATH limited to `path` and HOME in the temp dir.
fn tt_in(dir: &Path, path: &str, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(Path::new(path.split(':').next().unwrap()).join("tt"));
    c.args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", home)
        .env("TT_TOWN", dir)
        .env_remove("TT_REDIS_SERVER")
        .env_remove("TT_LOG")
        .stdin(Stdio::null());
    c
}

#[test]
fn readme_tour_runs_in_an_empty_directory_on_the_builtin_roles() {
    // A fresh directory, a copy of the binary, and nothing of the repository in reach.
    let root = tempfile::Builder::new()
        .prefix("tour")
        .tempdir_in("/tmp")
        .unwrap();
    let bin = bin_dir(root.path());
    let home = root.path().join("home");
    let cwd = root.path().join("empty");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let script = root.path().join("tour.sh");
    std::fs::write(&script, readme_tour()).unwrap();
    let mut c = Command::new("bash");
    c.arg("-eu")
        .arg(&script)
        .current_dir(&cwd)
        .env("PATH", &path)
        .env("HOME", &home);
    c.env_remove("TT_TOWN")
        .env_remove("TT_REDIS_SERVER")
        .env_remove("TT_LOG");
    let out = run_timeout(c, Duration::from_secs(240));
    let town = cwd.join("mytown");
    // The tour ends with `tt shutdown`; reading the town starts its Redis again (stopped below).
    let stop = || {
        let _ = run_timeout(
            tt_in(&town, &path, &home, &["shutdown"]),
            Duration::from_secs(20),
        );
    };
    if !out.status.success() {
        stop();
        panic!(
            "the README tour failed ({:?}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = |args: &[&str]| -> Value {
        let o = run_timeout(tt_in(&town, &path, &home, args), Duration::from_secs(30));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let t1 = json(&["task", "show", "t1", "--json"]);
    let t2 = json(&["task", "show", "t2", "--json"]);
    let agents = json(&["list", "--json"]);
    let events: Vec<Value> = {
        let o = run_timeout(
            tt_in(&town, &path, &home, &["events", "-n", "1000", "--json"]),
            Duration::from_secs(30),
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    stop();
    // Served by the built-ins: the worker ran the stand-in CLI, the reviewer's check passed,
    // and the conductor handed t2 from the backlog to alice.
    for t in [&t1, &t2] {
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(
            (t["owner"].as_str(), t["reviewer"].as_str()),
            (Some("alice"), Some("bob")),
            "{t}"
        );
    }
    for (name, builtin) in [
        ("alice", "worker"),
        ("bob", "reviewer"),
        ("mayor", "conductor"),
    ] {
        let a = agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap();
        assert_eq!(a["plugin"], format!("builtin:{builtin}"), "{a}");
    }
    let reached_review = events
        .iter()
        .any(|e| e["type"] == "task" && e["task"] == "t1" && e["to"] == "in-review");
    assert!(reached_review, "t1 never reached review: {events:?}");
    let assigned_by_mayor = events.iter().any(|e| {
        e["type"] == "task" && e["task"] == "t2" && e["to"] == "assigned" && e["by"] == "mayor"
    });
    assert!(assigned_by_mayor, "mayor did not assign t2: {events:?}");
    assert!(
        town.join("work/greet.sh").is_file(),
        "the stand-in CLI wrote greet.sh in the shared work dir"
    );
}

#[test]
fn builtin_components_are_the_example_plugins() {
    // host/builtin/ must be byte for byte a fresh build of plugins/ (bash plugins/build.sh,
    // which tests/run.sh runs first). On a mismatch: bash plugins/bless-builtins.sh.
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("builtin");
    for name in ["worker", "reviewer", "conductor"] {
        let shipped = std::fs::read(builtin.join(format!("{name}.wasm"))).unwrap();
        let built = std::fs::read(plugin_path(name)).unwrap();
        assert!(
            shipped == built,
            "host/builtin/{name}.wasm differs from a fresh build of plugins/{name} \
             (rustc: {}); run `bash plugins/bless-builtins.sh` and commit the result",
            String::from_utf8_lossy(
                &Command::new("rustc")
                    .arg("--version")
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
            .trim()
        );
    }
}

#[test]
fn plugin_list_and_export_show_and_write_the_builtins() {
    let town = TestTown::bare();
    let list = town.json(&["plugin", "list", "--json"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["worker", "reviewer", "conductor"]);
    for b in list.as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let bytes = std::fs::read(plugin_path(name)).unwrap();
        let digest = sha256_hex(&bytes);
        assert_eq!(b["digest"], digest, "{b}");
        assert_eq!(b["wit_version"], "0.2.0");
        assert_eq!(b["plugin"], format!("builtin:{name}"));
    }
    assert_eq!(list[0]["capabilities"], serde_json::json!(["exec"]));
    assert_eq!(
        list[2]["world"], "agent",
        "the conductor only asks questions"
    );
    let text = town.ok(&["plugin", "list"]);
    assert!(
        text.contains("builtin:worker") && text.contains(list[0]["digest"].as_str().unwrap()),
        "{text}"
    );

    // Both: the Rust project tt plugin new would write, and the component where build.sh puts it.
    let dir = town.path().join("mine");
    town.ok(&["plugin", "export", "reviewer", dir.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(dir.join("reviewer.wasm")).unwrap(),
        std::fs::read(plugin_path("reviewer")).unwrap()
    );
    let src = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(
        src.contains("fn review(") && src.contains("path: \"wit\""),
        "the example's own source"
    );
    for f in [
        "Cargo.toml",
        "build.sh",
        "guest/src/lib.rs",
        "wit/agent.wit",
        "README.md",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // A non-empty directory is refused, and nothing in it changes.
    let r = town.refused(
        &["plugin", "export", "worker", dir.to_str().unwrap()],
        1,
        &["is not empty"],
    );
    assert!(r.hint.contains("empty directory"), "{r:?}");
    assert!(!dir.join("worker.wasm").exists());
    // Only the component; only the source.
    let only = town.path().join("only");
    town.ok(&[
        "plugin",
        "export",
        "conductor",
        only.to_str().unwrap(),
        "--component",
    ]);
    let files: Vec<_> = std::fs::read_dir(&only)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, [std::ffi::OsString::from("conductor.wasm")]);
    let source = town.path().join("source");
    town.ok(&[
        "plugin",
        "export",
        "worker",
        source.to_str().unwrap(),
        "--source",
    ]);
    assert!(source.join("build.sh").is_file() && !source.join("worker.wasm").exists());
    let under_a_file = town.path().join("only/conductor.wasm/sub");
    let args = ["plugin", "export", "worker", under_a_file.to_str().unwrap()];
    let r = town.refused(&args, 1, &["cannot create"]);
    assert!(r.hint.contains("directory you can write to"), "{r:?}");
    let r = town.refused(
        &["plugin", "export", "mayor", "x"],
        1,
        &["no built-in role `mayor`"],
    );
    assert!(r.hint.contains("worker, reviewer, conductor"), "{r:?}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

#[test]
fn spawn_records_the_builtin_of_a_role_and_refuses_an_unknown_one() {
    let town = TestTown::new();
    town.ok(&["spawn", "w", "--role", "worker"]);
    let w = town.agent("w").unwrap();
    assert_eq!(w["plugin"], "builtin:worker");
    assert_eq!(
        w["digest"],
        sha256_hex(&std::fs::read(plugin_path("worker")).unwrap())
    );
    // Another role's built-in, named.
    town.ok(&[
        "spawn",
        "v",
        "--role",
        "checker",
        "--plugin",
        "builtin:reviewer",
    ]);
    assert_eq!(town.agent("v").unwrap()["plugin"], "builtin:reviewer");
    let r = town.refused(
        &["spawn", "x", "--plugin", "builtin:nope"],
        1,
        &["no built-in role `nope`"],
    );
    assert!(r.hint.contains("worker, reviewer, conductor"), "{r:?}");
    assert!(town.agent("x").is_none(), "a refused spawn changes nothing");
}

/// `tt host --until-idle` in `town`: (exit code, stderr).
fn host_until_idle(town: &TestTown) -> (i32, String) {
    let args = ["host", "--until-idle", "--name", "h1"];
    let out = run_timeout(town.command(&args), Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked at"), "{err}");
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn agents_that_cannot_be_served_are_reported_and_until_idle_exits_1() {
    let town = TestTown::new();
    let config = town.read_config();
    // default_cli names a CLI that is not installed; no default_check.
    town.write_config(&format!(
        "{}\n[agents.carol]\nrole = \"worker\"\nplugin = \"{}\"\nconfig = {{ program = \"true\", reviewer = \"bob\" }}\n",
        config.replace("default_cli = \"claude\"", "default_cli = \"no-such-cli\""),
        plugin("worker")
    ));
    town.ok(&["spawn", "alice", "--role", "worker"]); // built-in worker, CLI missing
    town.ok(&["spawn", "bob", "--role", "reviewer"]); // built-in reviewer, no check set
    town.ok(&["spawn", "sink", "--role", "sink"]); // no plugin, no built-in
    town.ok(&["spawn", "carol"]); // a plugin importing exec, not granted
    town.ok(&["spawn", "idle", "--role", "sink"]); // cannot be served either, but has no mail
                                                   // Spawned before its role had a built-in: no plugin recorded.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = tinytown::town::Town::open(town.path()).await.unwrap();
        let op = tinytown::store::applier::Op::Spawn {
            name: "old".into(),
            role: "worker".into(),
            plugin: None,
            digest: None,
            nickname: None,
        };
        t.db.apply_ops("conductor", vec![op]).await.unwrap();
    });
    for a in ["alice", "bob", "sink", "carol", "old"] {
        town.ok(&["send", a, "hello"]);
    }
    let (code, err) = host_until_idle(&town);
    assert_eq!(code, 1, "{err}");
    let r = refusal(
        &["host"],
        1,
        &err,
        &["mail is waiting for agents that cannot run"],
    );
    for (agent, why) in [
        (
            "alice",
            "[town] default_cli = \"no-such-cli\": `no-such-cli` is not installed",
        ),
        ("bob", "[town] default_check is not set"),
        ("sink", "role `sink` has no built-in"),
        (
            "carol",
            "imports the `exec` capability, which is not granted",
        ),
        ("old", "give it one: tt swap old builtin:worker"),
    ] {
        assert!(
            r.error.contains(why),
            "{agent}: {why:?} not in {:?}",
            r.error
        );
        assert!(
            r.hint.contains(agent),
            "{agent} not in the hint {:?}",
            r.hint
        );
        // A log line naming the agent, and a town event with the fix.
        assert!(
            err.lines()
                .any(|l| l.contains("cannot be served") && l.contains(&format!("agent={agent}"))),
            "no log line for {agent}: {err}"
        );
        let events = town.events();
        let event = events
            .iter()
            .find(|e| e["type"] == "log" && e["agent"] == agent && e["level"] == "error");
        let body = event
            .map(|e| e["body"].as_str().unwrap_or(""))
            .unwrap_or("");
        assert!(
            body.contains("cannot be served, its mail waits"),
            "no event for {agent}: {events:?}"
        );
        // Nothing lost: waiting, or read and kept in hand (a plugin loads with the first
        // mail, so an agent whose plugin fails has taken its mail and holds it, pending).
        let inbox = town.inbox(agent);
        let kept = inbox["waiting"].as_array().unwrap().len()
            + inbox["delivered"].as_array().unwrap().len();
        assert_eq!(kept, 1, "{agent}'s mail is kept: {inbox}");
    }
    assert!(
        !r.error.contains("agent `idle`"),
        "idle has no mail: {:?}",
        r.error
    );
    // The fixes are in the lines: how to install the CLI, which setting to set.
    assert!(
        r.error.contains("set default_check = \"make test\""),
        "{:?}",
        r.error
    );
    assert!(r.error.contains("tt swap sink PLUGIN"), "{:?}", r.error);

    // tt status marks them, with no host running, in text and JSON: those it can tell
    // without loading a plugin (a built-in's settings and program, no plugin at all).
    let marked_in = |text: &str, agent: &str| {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("  {agent} ")))
            .unwrap();
        lines
            .get(at + 1)
            .is_some_and(|l| l.contains("CANNOT BE SERVED"))
    };
    let text = town.ok(&["status"]);
    for agent in ["alice", "bob", "sink"] {
        assert!(marked_in(&text, agent), "{agent} not marked:\n{text}");
    }
    assert!(!marked_in(&text, "idle"), "idle has no mail:\n{text}");
    // A running host reports every one it cannot serve (carol's plugin does not link).
    let host = town.start(&["host", "--name", "h2"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = town.json(&["status", "--json"]);
        if status["cannot_serve"].get("carol").is_some() || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = town.ok(&["status"]);
    drop(host);
    assert!(
        marked_in(&text, "carol"),
        "carol not marked while a host runs:\n{text}"
    );
    let marked: Vec<&String> = status["cannot_serve"].as_object().unwrap().keys().collect();
    assert_eq!(
        marked,
        ["alice", "bob", "carol", "idle", "old", "sink"],
        "{status}"
    );
    // tt doctor says the same, with the fixes.
    let (code, checks) = doctor(&town, &[]);
    assert_eq!(code, 1);
    assert_fails(
        &checks,
        "agent sink",
        "has no plugin",
        "tt swap sink PLUGIN",
    );
    assert_fails(
        &checks,
        "agent bob",
        "default_check is not set",
        "default_check = \"make test\"",
    );
    // The fix named for `old` works.
    town.ok(&["swap", "old", "builtin:conductor"]);
    assert_eq!(town.agent("old").unwrap()["plugin"], "builtin:conductor");
}

#[test]
fn builtins_without_their_settings_or_peers_say_what_to_set() {
    let town = TestTown::new();
    // No default_cli at all, and no reviewer in the town.
    town.write_config(&town.read_config().replace("default_cli = \"claude\"\n", ""));
    town.ok(&["spawn", "alice", "--role", "worker"]);
    town.ok(&["assign", "alice", "do it"]);
    let (code, err) = host_until_idle(&town);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[town] default_cli is not set"), "{err}");
    assert!(
        err.contains("default_cli = \"claude\""),
        "the fix names a value: {err}"
    );
    // With the CLI set (found on PATH) the next thing missing is a reviewer.
    town.write_config(
        &town
            .read_config()
            .replace("[town]\n", "[town]\ndefault_cli = \"true\"\n"),
    );
    let (code, err) = host_until_idle(&town);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the town has no agent of role reviewer"),
        "{err}"
    );
    assert!(err.contains("tt spawn bob --role reviewer"), "{err}");
    // A reviewer with a check: served; `true` as the CLI, `true` as the check.
    town.write_config(
        &town
            .read_config()
            .replace("[town]\n", "[town]\ndefault_check = \"true\"\n"),
    );
    town.ok(&["spawn", "bob", "--role", "reviewer"]);
    // A mailbox people read (role `mailbox`) with mail waiting is not a fault.
    town.ok(&["spawn", "desk", "--role", "mailbox"]);
    town.ok(&["send", "desk", "for the humans"]);
    let (code, err) = host_until_idle(&town);
    assert_eq!(code, 0, "{err}");
    assert_eq!(town.task("t1")["state"], "completed");
    assert_eq!(town.inbox("desk")["waiting"].as_array().unwrap().len(), 1);
    let status = town.json(&["status", "--json"]);
    assert_eq!(status["cannot_serve"], serde_json::json!({}), "{status}");
    let (code, checks) = doctor(&town, &[]);
    assert_eq!(code, 0, "{checks:?}");
    assert!(check(&checks, "agent desk")["detail"]
        .as_str()
        .unwrap()
        .contains("a mailbox people read"));
}

#[test]
fn swap_to_a_builtin_and_back() {
    let town = TestTown::new();
    let chaos = plugin("chaos");
    town.ok(&["spawn", "c", "--role", "conductor", "--plugin", &chaos]);
    town.ok(&["swap", "c", "builtin:conductor"]);
    let c = town.agent("c").unwrap();
    assert_eq!(c["plugin"], "builtin:conductor", "{c}");
    assert_eq!(
        c["digest"],
        sha256_hex(&std::fs::read(plugin_path("conductor")).unwrap())
    );
    // A built-in is validated like a file: the reviewer needs its check, which is not set.
    let r = town.refused(
        &["swap", "c", "builtin:reviewer"],
        1,
        &["[town] default_check is not set"],
    );
    assert!(r.hint.contains("default_check"), "{r:?}");
    town.refused(
        &["swap", "c", "builtin:nope"],
        1,
        &["no built-in role `nope`"],
    );
    assert_eq!(
        town.agent("c").unwrap()["plugin"],
        "builtin:conductor",
        "refusals change nothing"
    );
    town.ok(&["swap", "--rollback", "c"]);
    assert_eq!(
        town.agent("c").unwrap()["plugin"].as_str(),
        Some(chaos.as_str())
    );
}
