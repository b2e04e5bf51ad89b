//! `tt plugin check`: what a file is, and a clear refusal for everything that is not ours.

mod common;

use std::path::{Path, PathBuf};

use common::{plugin_path, TestTown};

/// A copy of `of` with every `from` replaced by `to` (same length, so the binary stays valid).
fn patched(town: &TestTown, of: &Path, from: &str, to: &str, out: &str) -> PathBuf {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(of).unwrap();
    let mut hits = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from.as_bytes() {
            bytes[i..i + from.len()].copy_from_slice(to.as_bytes());
            hits += 1;
        }
        i += 1;
    }
    assert!(hits > 0, "{from:?} not found in {}", of.display());
    let p = town.path().join(out);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn check_describes_our_components_and_precompiles_them() {
    let town = TestTown::new();
    let r = town.json(&[
        "plugin",
        "check",
        plugin_path("reviewer").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["world"], "agent-exec");
    assert_eq!(r["wit_version"], "0.2.0");
    assert_eq!(r["capabilities"], serde_json::json!(["exec"]));
    assert_eq!(r["exports_init"], true);
    let cache = town.path().join(".tt/cache");
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
    assert!(cached.iter().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with(r["digest"].as_str().unwrap())));

    let r = town.json(&[
        "plugin",
        "check",
        plugin_path("noop").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["world"], "agent");
    assert_eq!(r["capabilities"], serde_json::json!([]));
    let text = town.ok(&[
        "plugin",
        "check",
        plugin_path("noop").to_str().unwrap(),
        "--role",
        "reviewer",
    ]);
    assert!(
        text.contains("tinytown:agent@0.2.0") && text.contains("does not import `exec`"),
        "{text}"
    );
    // A component from another toolchain (the Python and JavaScript ones take seconds to
    // compile; the conformance suite loads them).
    let c = plugin_path("reviewer-c");
    let r = town.json(&["plugin", "check", c.to_str().unwrap(), "--json"]);
    assert_eq!(r["world"], "agent-exec", "{r}");
    // A build against the frozen 0.1.0 contract is still ours.
    let old = common::fixture_0_1("reviewer");
    let r = town.json(&["plugin", "check", old.to_str().unwrap(), "--json"]);
    assert_eq!(r["wit_version"], "0.1.0", "{r}");
    assert_eq!(r["world"], "agent-exec", "{r}");
    assert_eq!(r["capabilities"], serde_json::json!(["exec"]));
}

#[test]
fn check_refuses_what_is_not_ours_with_a_reason() {
    let town = TestTown::new();
    let garbage = town.path().join("notes.txt");
    std::fs::write(&garbage, "hello").unwrap();
    let core = town.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let noop = plugin_path("noop");
    let newer = patched(
        &town,
        &plugin_path("chaos"),
        "tinytown:agent/host@0.2.0",
        "tinytown:agent/host@0.9.0",
        "newer.wasm",
    );
    let foreign = patched(
        &town,
        &noop,
        "wasi:cli/environment",
        "wasx:cli/environment",
        "foreign.wasm",
    );
    let other_world = patched(&town, &noop, "handle", "hxndle", "other.wasm");
    let missing = town.path().join("missing.wasm");
    let cases: [(&Path, &[&str]); 6] = [
        (&garbage, &["not a WebAssembly file"]),
        (&core, &["a core Wasm module, not a component"]),
        (
            &newer,
            &[
                "imports tinytown:agent/host@0.9.0",
                "implements tinytown:agent@0.2.0 and @0.1.0",
            ],
        ),
        (
            &foreign,
            &["wasx:cli/environment", "which no tinytown host provides"],
        ),
        (
            &other_world,
            &["does not export `handle`", "not a tinytown:agent component"],
        ),
        (&missing, &["missing.wasm"]),
    ];
    for (file, needles) in cases {
        let r = town.refused(&["plugin", "check", file.to_str().unwrap()], 1, needles);
        assert!(!r.hint.is_empty(), "{file:?}");
    }
}

#[test]
fn check_against_an_agent_shows_its_grants_and_confinement() {
    let town = TestTown::new();
    let config = town.read_config();
    town.write_config(&format!(
        "{config}\n[agents.w]\nrole = \"worker\"\n\n[agents.w.exec]\nallow = [\"/bin/sh\"]\n\n\
         [agents.open.exec]\nallow = [\"/bin/sh\"]\nsandbox = \"off\"\n\n[agents.plain]\nrole = \"worker\"\n"
    ));
    let worker = plugin_path("worker");
    let worker = worker.to_str().unwrap();
    let text = town.ok(&["plugin", "check", worker, "--agent", "w"]);
    let line = text
        .lines()
        .find(|l| l.contains("agent `w`"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("exec: landlock") && line.contains("net none"),
        "{text}"
    );
    let r = town.json(&["plugin", "check", worker, "--agent", "open", "--json"]);
    assert_eq!(r["agent"]["name"], "open");
    assert_eq!(r["agent"]["missing"], serde_json::json!([]));
    assert!(
        r["agent"]["granted"][0]
            .as_str()
            .unwrap()
            .starts_with("exec: sandbox off"),
        "{r}"
    );
    // Without the grant the agent could not load it: refused, naming the grant to add.
    let r = town.refused(
        &["plugin", "check", worker, "--agent", "plain"],
        1,
        &["agent `plain` is not granted `exec`", "would not load"],
    );
    assert!(r.hint.contains("[agents.plain.exec]"), "{}", r.hint);
    // A plugin that imports nothing fits any declared agent.
    let noop = plugin_path("noop");
    town.ok(&[
        "plugin",
        "check",
        noop.to_str().unwrap(),
        "--agent",
        "plain",
    ]);
    town.refused(
        &["plugin", "check", worker, "--agent", "nobody"],
        1,
        &["agent `nobody` is not declared"],
    );
}

#[test]
fn a_plugin_file_rewritten_in_place_is_loaded_anew() {
    use tinytown::runtime::{Grants, Runtime};
    use tinytown::store::model::Digest;
    use tinytown::store::stamp::SETTLE;
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(Some(dir.path().join("cache")), false).unwrap();
    let (noop, relay) = (
        std::fs::read(plugin_path("noop")).unwrap(),
        std::fs::read(plugin_path("relay")).unwrap(),
    );
    let path = dir.path().join("role.wasm");
    let load = || runtime.load("a", &path, &Grants::none()).unwrap().digest;
    std::fs::write(&path, &noop).unwrap();
    assert_eq!(load(), Digest::of(&noop));
    // Unchanged and settled: known by its stamp (not read again), still the same plugin.
    std::thread::sleep(SETTLE * 2);
    assert_eq!(load(), Digest::of(&noop));
    assert_eq!(load(), Digest::of(&noop));
    // Rewritten at once, in place: a new stamp, so read again.
    std::fs::write(&path, &relay).unwrap();
    assert_eq!(load(), Digest::of(&relay));
    std::thread::sleep(SETTLE * 2);
    assert_eq!(load(), Digest::of(&relay));
    // Gone: the load fails and names the file, whatever was known of it.
    std::fs::remove_file(&path).unwrap();
    let e = runtime.load("a", &path, &Grants::none()).err().unwrap();
    assert!(format!("{e:#}").contains("role.wasm"), "{e:#}");
}
