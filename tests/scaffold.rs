//! `tt plugin new` (`tinytown::scaffold::new_plugin`): a scaffolded project builds with one
//! command and its component loads into the host runtime and behaves like its role.
//!
//! For every language a reviewer project is generated into a temp dir, built with
//! `bash NAME/build.sh`, loaded with an `exec` grant and instantiated with a config; then a few
//! messages check what it returns (fail closed: never an approve it did not earn). Rust builds
//! all three roles; `TT_SCAFFOLD_ALL=1` builds all three in every language.
//!
//! The Python, JS and C builds install their toolchains on first use into
//! `${TT_TOOLCHAINS:-~/.cache/tinytown/toolchains}` (pip: seconds, npm: ~20 s; C needs
//! wit-bindgen-cli: an existing one in plugins/.toolchains/cargo/bin or on PATH is used, else
//! `cargo install` takes minutes). The Rust builds share one cargo target dir under the
//! workspace's target/, so only the first run compiles wit-bindgen.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tinytown::host::describe;
use tinytown::runtime::capabilities::exec::ExecGrant;
use tinytown::runtime::lookup::Answer;
use tinytown::runtime::{wit, Grants, Instance, Lookup, NoTown, Plugin, Runtime};
use tinytown::scaffold::new_plugin;
use tinytown::store::limits::Limits;

const ROLES: [&str; 3] = ["worker", "reviewer", "conductor"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tt-scaffold-")
        .tempdir()
        .expect("temp dir")
}

/// The roles to build for a language other than Rust.
fn roles_for(lang: &str) -> Vec<&'static str> {
    if lang == "rust" || std::env::var_os("TT_SCAFFOLD_ALL").is_some_and(|v| v == "1") {
        ROLES.to_vec()
    } else {
        vec!["reviewer"]
    }
}

// ---- building ----

/// Runs `bash NAME/build.sh` from the project's parent (so it must not depend on the working
/// directory) and returns the component it reported, and how long the build took.
fn build(project: &Path) -> (PathBuf, Duration) {
    let name = project.file_name().unwrap().to_str().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(format!("{name}/build.sh"))
        .current_dir(project.parent().unwrap());
    // What `cargo test` sets for the test binary is not meant for a nested cargo.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || key == "CARGO_TARGET_TMPDIR"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    // One target dir for every scaffolded Rust project, kept between runs.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("scaffold-plugins");
    cmd.env("CARGO_TARGET_DIR", target);
    // A wit-bindgen-cli the repository's plugins already installed is good enough for C.
    let repo_bin = repo().join("plugins/.toolchains/cargo/bin");
    if repo_bin.join("wit-bindgen").is_file() {
        let mut paths = vec![repo_bin];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        cmd.env("PATH", std::env::join_paths(paths).unwrap());
    }

    let started = Instant::now();
    let out = cmd.output().expect("run bash");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bash {name}/build.sh failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // The scaffold compiles cleanly: no diagnostics about its own source (Rust, C).
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("src/lib.rs:") || l.contains("app.c:"))
        .collect();
    assert!(warned.is_empty(), "{name}: build warnings:\n{stderr}");
    let wasm = project.join(format!("{name}.wasm"));
    assert_eq!(
        stdout.lines().last(),
        Some(wasm.to_str().unwrap()),
        "build.sh should print the component's path last; stderr:\n{stderr}"
    );
    assert!(wasm.is_file(), "{} was not written", wasm.display());
    (wasm, took)
}

// ---- running ----

/// Where `name` is on PATH, canonical (as the exec allow-list wants it).
fn on_path(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH"))
        .canonicalize()
        .unwrap()
}

fn grants(allow: Vec<PathBuf>, dir: &Path) -> Grants {
    Grants::none().with(
        "exec",
        Arc::new(ExecGrant {
            allow,
            env: vec![],
            workdir: dir.to_path_buf(),
            town_dir: dir.to_path_buf(),
            timeout: Duration::from_secs(1),
            output_bytes: 1 << 20,
        }),
    )
}

fn pairs(config: &[(&str, &str)]) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn instantiate(
    runtime: &Runtime,
    plugin: &Plugin,
    grants: &Grants,
    config: &[(&str, &str)],
    lookup: Arc<dyn Lookup>,
) -> Instance {
    runtime
        .instantiate_blocking(
            plugin,
            "probe",
            &Limits::default(),
            grants,
            &pairs(config),
            lookup,
        )
        .unwrap_or_else(|f| panic!("instantiate with {config:?}: {f:?}"))
}

fn message(kind: wit::Kind, task_id: Option<&str>, body: &str) -> wit::Message {
    wit::Message {
        id: "m-1".into(),
        sender: "boss".into(),
        recipient: "probe".into(),
        kind,
        body: body.into(),
        priority: wit::Priority::Normal,
        task_id: task_id.map(Into::into),
        correlation_id: None,
        sent_at_ms: 0,
        attempt: 1,
    }
}

fn handle(inst: &mut Instance, msg: wit::Message) -> (Vec<String>, Vec<wit::Action>) {
    let actions = tinytown::runtime::block_on(inst.handle(msg))
        .unwrap_or_else(|f| panic!("handle failed: {f:?}"));
    (actions.iter().map(describe).collect(), actions)
}

/// A town with some agents, a backlog and one known task.
struct FakeTown {
    agents: Vec<wit::AgentInfo>,
    backlog: Vec<wit::TaskInfo>,
}

fn agent(name: &str, role: &str, state: &str, active_tasks: u32) -> wit::AgentInfo {
    wit::AgentInfo {
        name: name.into(),
        role: role.into(),
        state: state.into(),
        nickname: None,
        inbox: 0,
        active_tasks,
    }
}

fn task(id: &str, description: &str) -> wit::TaskInfo {
    wit::TaskInfo {
        id: id.into(),
        description: description.into(),
        state: "pending".into(),
        owner: None,
        reviewer: None,
        result: None,
        rejections: 0,
        tags: vec![],
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> Answer<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

impl Lookup for FakeTown {
    fn task<'a>(&'a self, id: &'a str) -> Answer<'a, Option<wit::TaskInfo>> {
        ready(self.backlog.iter().find(|t| t.id == id).cloned())
    }
    fn agent<'a>(&'a self, name: &'a str) -> Answer<'a, Option<wit::AgentInfo>> {
        ready(self.agents.iter().find(|a| a.name == name).cloned())
    }
    fn agents<'a>(&'a self, role: Option<&'a str>) -> Answer<'a, Vec<wit::AgentInfo>> {
        ready(
            self.agents
                .iter()
                .filter(|a| role.is_none_or(|r| a.role == r))
                .cloned()
                .collect(),
        )
    }
    fn backlog(&self) -> Answer<'_, Vec<wit::TaskInfo>> {
        ready(self.backlog.clone())
    }
    fn state<'a>(&'a self, _: &'a str, _: &'a str) -> Answer<'a, Option<String>> {
        ready(None)
    }
}

/// Loads the component the way the brief of `tt plugin check` does (exec granted, nothing
/// allowed) and instantiates it with a config every role accepts.
fn load(runtime: &Runtime, wasm: &Path, dir: &Path) -> Plugin {
    let none = grants(vec![], dir);
    let plugin = runtime
        .load("probe", wasm, &none)
        .unwrap_or_else(|e| panic!("load {}: {e:?}", wasm.display()));
    assert!(plugin.has_init(), "the scaffold exports init");
    instantiate(
        runtime,
        &plugin,
        &none,
        &[("program", "true"), ("reviewer", "x")],
        Arc::new(NoTown),
    );
    plugin
}

fn check_reviewer(runtime: &Runtime, plugin: &Plugin, dir: &Path, lang: &str) {
    let review =
        |task_id: Option<&str>, body: &str| message(wit::Kind::ReviewRequest, task_id, body);
    let check = dir.join("check.sh");
    std::fs::write(
        &check,
        "#!/bin/sh\ncat >/dev/null\necho 'too short' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let allowed = grants(
        vec![
            on_path("true"),
            on_path("false"),
            check.canonicalize().unwrap(),
        ],
        dir,
    );
    let town: Arc<dyn Lookup> = Arc::new(NoTown);

    // Exit 0 approves.
    let mut inst = instantiate(
        runtime,
        plugin,
        &allowed,
        &[("program", "true")],
        town.clone(),
    );
    let (got, _) = handle(&mut inst, review(Some("t-1"), "the work"));
    assert_eq!(got, ["approve t-1: check passed"], "{lang}");
    // Other kinds of message: nothing to do.
    let (got, _) = handle(&mut inst, message(wit::Kind::Info, Some("t-1"), "fyi"));
    assert!(got.is_empty(), "{lang}: {got:?}");
    // Fail closed: no task id, empty work.
    let (got, _) = handle(&mut inst, review(None, "the work"));
    assert_eq!(
        got,
        ["escalate: review request from boss has no task id"],
        "{lang}"
    );
    let (got, _) = handle(&mut inst, review(Some("t-1"), "  \n"));
    assert_eq!(got, ["reject t-1: nothing to review"], "{lang}");

    // A failing check rejects, with its output as the feedback.
    let mut inst = instantiate(
        runtime,
        plugin,
        &allowed,
        &[("program", "false")],
        town.clone(),
    );
    let (got, _) = handle(&mut inst, review(Some("t-2"), "the work"));
    assert_eq!(got, ["reject t-2: check failed (exit 1)"], "{lang}");
    let program = check.to_str().unwrap();
    let mut inst = instantiate(
        runtime,
        plugin,
        &allowed,
        &[("program", program)],
        town.clone(),
    );
    let (got, _) = handle(&mut inst, review(Some("t-3"), "the work"));
    assert_eq!(
        got,
        ["reject t-3: check failed (exit 3): too short"],
        "{lang}"
    );

    // A check that cannot run (not allow-listed): reject and escalate, never approve.
    let none = grants(vec![], dir);
    let mut inst = instantiate(runtime, plugin, &none, &[("program", "true")], town.clone());
    let (got, _) = handle(&mut inst, review(Some("t-4"), "the work"));
    assert_eq!(got.len(), 2, "{lang}: {got:?}");
    assert!(
        got[0].starts_with("reject t-4: check could not run: program `true`")
            && got[0].contains("is not in the exec allow-list"),
        "{lang}: {got:?}"
    );
    assert!(
        got[1].starts_with("escalate: reviewer probe cannot run its check: "),
        "{lang}: {got:?}"
    );

    // Without `program`, init refuses.
    let refused =
        runtime.instantiate_blocking(plugin, "probe", &Limits::default(), &none, &[], town);
    match refused {
        Ok(_) => panic!("{lang}: a reviewer without `program` was accepted"),
        Err(f) => assert!(f.reason.contains("program"), "{lang}: {f:?}"),
    }
}

fn check_worker(runtime: &Runtime, plugin: &Plugin, dir: &Path, lang: &str) {
    let town: Arc<dyn Lookup> = Arc::new(FakeTown {
        agents: vec![],
        backlog: vec![task("t-1", "write hello")],
    });
    let allowed = grants(vec![on_path("cat")], dir);
    let config = [("program", "cat"), ("reviewer", "rev")];
    let mut inst = instantiate(runtime, plugin, &allowed, &config, town.clone());

    // The task runs with its text on stdin; its output goes to the reviewer.
    let (got, actions) = handle(
        &mut inst,
        message(wit::Kind::TaskAssign, Some("t-1"), "write hello"),
    );
    assert_eq!(got, ["request-review t-1 from rev"], "{lang}");
    let wit::Action::RequestReview(r) = &actions[0] else {
        unreachable!()
    };
    assert_eq!(r.body, "exit 0\nwrite hello", "{lang}");

    // A rejection runs it again with the feedback appended.
    let reject = wit::Kind::Verdict(wit::Verdict::Reject("say it louder".into()));
    let (got, actions) = handle(&mut inst, message(reject, Some("t-1"), ""));
    assert_eq!(got, ["request-review t-1 from rev"], "{lang}");
    let wit::Action::RequestReview(r) = &actions[0] else {
        unreachable!()
    };
    assert_eq!(
        r.body, "exit 0\nwrite hello\n\nReviewer feedback:\nsay it louder",
        "{lang}"
    );
    // An approval needs nothing but a log line.
    let approve = wit::Kind::Verdict(wit::Verdict::Approve);
    let (got, _) = handle(&mut inst, message(approve, Some("t-1"), ""));
    assert_eq!(got, ["log: task t-1 approved"], "{lang}");

    // A program that cannot run fails the task and escalates.
    let none = grants(vec![], dir);
    let mut inst = instantiate(runtime, plugin, &none, &config, town.clone());
    let (got, _) = handle(
        &mut inst,
        message(wit::Kind::TaskAssign, Some("t-1"), "write hello"),
    );
    assert_eq!(got.len(), 2, "{lang}: {got:?}");
    assert!(
        got[0].starts_with("fail t-1: worker probe could not run `cat`: program `cat`")
            && got[0].contains("is not in the exec allow-list"),
        "{lang}: {got:?}"
    );
    assert!(got[1].starts_with("escalate: "), "{lang}: {got:?}");

    // Without `reviewer`, init refuses.
    let refused = runtime.instantiate_blocking(
        plugin,
        "probe",
        &Limits::default(),
        &allowed,
        &pairs(&[("program", "cat")]),
        town,
    );
    match refused {
        Ok(_) => panic!("{lang}: a worker without `reviewer` was accepted"),
        Err(f) => assert!(f.reason.contains("reviewer"), "{lang}: {f:?}"),
    }
}

fn check_conductor(runtime: &Runtime, plugin: &Plugin, dir: &Path, lang: &str) {
    let town: Arc<dyn Lookup> = Arc::new(FakeTown {
        agents: vec![
            agent("w-b", "worker", "idle", 0),
            agent("w-c", "worker", "working", 1),
            agent("rev", "reviewer", "idle", 0),
            agent("w-a", "worker", "idle", 0),
            agent("w-d", "worker", "stopped", 0),
        ],
        backlog: vec![task("t-1", "one"), task("t-2", "two"), task("t-3", "three")],
    });
    let mut inst = instantiate(runtime, plugin, &grants(vec![], dir), &[], town);
    let (got, actions) = handle(&mut inst, message(wit::Kind::Info, None, "wake up"));
    assert_eq!(
        got,
        [
            "assign t-1 to w-a",
            "log: assigned t-1 to w-a",
            "assign t-2 to w-b",
            "log: assigned t-2 to w-b"
        ],
        "{lang}"
    );
    let wit::Action::Assign(a) = &actions[0] else {
        unreachable!()
    };
    assert_eq!(a.description, "one", "{lang}");

    // Nobody idle: nothing to do.
    let quiet: Arc<dyn Lookup> = Arc::new(FakeTown {
        agents: vec![agent("w-c", "worker", "working", 1)],
        backlog: vec![task("t-1", "one")],
    });
    let mut inst = instantiate(runtime, plugin, &grants(vec![], dir), &[], quiet);
    let (got, _) = handle(&mut inst, message(wit::Kind::Info, None, "wake up"));
    assert!(got.is_empty(), "{lang}: {got:?}");
}

/// Scaffolds, builds, loads and exercises `lang` for its roles.
fn scaffold_builds_and_runs(lang: &str) {
    let tmp = tempdir();
    let runtime = Runtime::new(None, false).expect("runtime");
    let mut report = Vec::new();
    for role in roles_for(lang) {
        let name = format!("my-{lang}-{role}");
        let project = new_plugin(tmp.path(), &name, lang, role).expect("new_plugin");
        assert_eq!(project, tmp.path().join(&name));
        let (wasm, took) = build(&project);
        let bytes = std::fs::metadata(&wasm).unwrap().len();
        let started = Instant::now();
        let plugin = load(&runtime, &wasm, tmp.path());
        let load_took = started.elapsed();
        let imports_exec = plugin
            .imports
            .iter()
            .any(|i| i.starts_with("tinytown:agent/exec"));
        assert_eq!(
            imports_exec,
            role != "conductor",
            "{lang} {role}: {:?}",
            plugin.imports
        );
        match role {
            "worker" => check_worker(&runtime, &plugin, tmp.path(), lang),
            "reviewer" => check_reviewer(&runtime, &plugin, tmp.path(), lang),
            _ => check_conductor(&runtime, &plugin, tmp.path(), lang),
        }
        report.push(format!(
            "scaffold: {lang:6} {role:9} built in {:5.1} s, {bytes:>9} bytes, loaded in {:4.1} s",
            took.as_secs_f64(),
            load_took.as_secs_f64()
        ));
    }
    for line in report {
        eprintln!("{line}");
    }
}

#[test]
fn rust_plugins_build_and_run() {
    scaffold_builds_and_runs("rust");
}

#[test]
fn python_plugin_builds_and_runs() {
    scaffold_builds_and_runs("python");
}

#[test]
fn js_plugin_builds_and_runs() {
    scaffold_builds_and_runs("js");
}

#[test]
fn c_plugin_builds_and_runs() {
    scaffold_builds_and_runs("c");
}

/// `--llm`: the Rust reviewer and the Python worker that ask a model build on their own, are
/// components of world agent-llm (they import `llm`, not `exec`) and instantiate.
#[test]
fn the_llm_variants_build_and_import_llm() {
    let tmp = tempdir();
    let runtime = Runtime::new(None, false).expect("runtime");
    for (lang, role, config) in [
        ("rust", "reviewer", vec![("model", "m")]),
        ("python", "worker", vec![("model", "m"), ("reviewer", "r")]),
    ] {
        let name = format!("llm-{lang}-{role}");
        let project = tinytown::scaffold::new_plugin_with(tmp.path(), &name, lang, role, true)
            .expect("new_plugin_with");
        let (wasm, _) = build(&project);
        let grants = Grants::probe();
        let plugin = runtime
            .load("probe", &wasm, &grants)
            .unwrap_or_else(|e| panic!("load {}: {e:?}", wasm.display()));
        let imports = &plugin.imports;
        assert!(
            imports.iter().any(|i| i.starts_with("tinytown:agent/llm")),
            "{lang}: {imports:?}"
        );
        assert!(
            !imports.iter().any(|i| i.starts_with("tinytown:agent/exec")),
            "{lang}: {imports:?}"
        );
        instantiate(&runtime, &plugin, &grants, &config, Arc::new(NoTown));
    }
}

// ---- what is generated, and what is refused ----

#[test]
fn every_project_is_complete() {
    let tmp = tempdir();
    let wit = std::fs::read_to_string(repo().join("wit/agent.wit")).unwrap();
    for lang in ["rust", "python", "js", "c"] {
        for role in ROLES {
            let name = format!("{lang}_{role}");
            let dir = new_plugin(tmp.path(), &name, lang, role).unwrap();
            let source = match lang {
                "rust" => "src/lib.rs",
                "python" => "app.py",
                "js" => "app.js",
                _ => "app.c",
            };
            for file in [
                "build.sh",
                "README.md",
                ".gitignore",
                "wit/agent.wit",
                source,
            ] {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(
                    !text.contains("{{"),
                    "{}: a placeholder is left",
                    path.display()
                );
            }
            assert_eq!(
                std::fs::read_to_string(dir.join("wit/agent.wit")).unwrap(),
                wit
            );
            let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
            assert!(readme.contains("bash build.sh"), "{readme}");
            assert!(
                readme.contains(&format!("tt plugin check {name}.wasm")),
                "{readme}"
            );
            assert!(
                readme.contains(&format!("tt swap AGENT {name}.wasm")),
                "{readme}"
            );
            let keys: &[&str] = match role {
                "worker" => &["`program`", "`reviewer`"],
                "reviewer" => &["`program`"],
                _ => &["no config keys"],
            };
            for key in keys {
                assert!(
                    readme.contains(key),
                    "{lang} {role} README lacks {key}: {readme}"
                );
            }
            let world = if role == "conductor" {
                "agent"
            } else {
                "agent-exec"
            };
            let src = std::fs::read_to_string(dir.join(source)).unwrap();
            let build = std::fs::read_to_string(dir.join("build.sh")).unwrap();
            let names_world = match lang {
                "rust" => src.contains(&format!("world: \"{world}\"")),
                "c" => build.contains(&format!("--world {world}")),
                _ => build.contains(&format!(" {world} ")),
            };
            assert!(names_world, "{lang} {role}: world {world} not used");
            if matches!(lang, "js" | "c") {
                assert!(dir.join("toolchain/package-lock.json").is_file());
            }
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(dir.join("build.sh"))
                    .unwrap()
                    .permissions(),
            );
            assert_eq!(mode & 0o111, 0o111, "build.sh is executable");
        }
    }
}

fn user_error(err: &anyhow::Error) -> tinytown::store::error::UserError {
    tinytown::store::error::user_error(err)
        .unwrap_or_else(|| panic!("not a user error: {err:?}"))
        .clone()
}

#[test]
fn refuses_an_existing_folder_a_bad_name_and_unknown_choices() {
    let tmp = tempdir();

    // An existing folder is left alone.
    let existing = tmp.path().join("taken");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep.txt"), "mine").unwrap();
    let err = new_plugin(tmp.path(), "taken", "rust", "worker").unwrap_err();
    let e = user_error(&err);
    assert!(!e.usage, "{e:?}");
    assert!(e.message.contains("already exists"), "{e:?}");
    assert!(e.hint.is_some());
    assert_eq!(
        std::fs::read_to_string(existing.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 1);
    // So is an existing file of that name.
    std::fs::write(tmp.path().join("a-file"), "x").unwrap();
    let err = new_plugin(tmp.path(), "a-file", "c", "reviewer").unwrap_err();
    assert!(user_error(&err).message.contains("already exists"));

    // Usage errors, and nothing created.
    for (name, lang, role, says) in [
        ("bad name", "rust", "worker", "invalid plugin name"),
        ("../escape", "rust", "worker", "invalid"),
        ("-dash", "python", "reviewer", "invalid"),
        ("", "js", "reviewer", "invalid"),
        ("ok", "cobol", "worker", "language"),
        ("ok", "Rust", "worker", "language"),
        ("ok", "rust", "mayor", "role"),
    ] {
        let err = new_plugin(tmp.path(), name, lang, role).unwrap_err();
        let e = user_error(&err);
        assert!(e.usage, "{name:?} {lang} {role}: {e:?}");
        assert!(e.message.contains(says), "{name:?} {lang} {role}: {e:?}");
        assert!(e.hint.is_some());
    }
    let mut left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["a-file", "taken"]);

    // A folder that does not exist is an error too, not a panic.
    let err = new_plugin(&tmp.path().join("no/such/dir"), "p", "rust", "worker").unwrap_err();
    assert!(
        user_error(&err).message.contains("cannot create"),
        "{err:?}"
    );
}
