//! Cross-language conformance of the reviewer role: the Rust reference
//! (plugins/reviewer/src/lib.rs) and its Python, JavaScript and C ports must return the same
//! actions for the same message, byte for byte.
//!
//! The cases are data, in tests/conformance/:
//! - `checks.json`: the check programs (small shell scripts), written into a temp dir;
//! - `reviews.json`: review cases, each a reviewer config, a message, the check it runs and the
//!   expected actions as [`describe`] strings (`{dir}` stands for the temp dir);
//! - `init.json`: config tables and the exact `init refused: ...` text (or `null` for success).
//!
//! Every reviewer runs every case against real `exec` (the scripts, allow-listed by canonical
//! path). A port passes a case when its actions `describe` as expected *and* its full action
//! list (`Debug` of `Vec<wit::Action>`, so every field) equals the Rust reviewer's. The expected
//! texts keep the suite from passing when all four are wrong the same way.
//!
//! Each plugin is compiled once (one [`Runtime`], one temp cache dir). As in the host, one
//! instance is long-lived: each reviewer keeps one instance per distinct config and feeds it the
//! cases with that config in file order; init cases get a fresh instance each.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tinytown::host::describe;
use tinytown::runtime::capabilities::exec::ExecGrant;
use tinytown::runtime::{wit, Grants, Instance, NoTown, Plugin, Runtime};
use tinytown::store::limits::Limits;

/// The reference first: every port is compared with it.
/// The current builds, then 0.1.0 builds of the same reviewers (tests/fixtures/wit-0.1.0/):
/// a component built against the frozen contract must decide exactly as before.
const REVIEWERS: [&str; 6] = [
    "reviewer",
    "reviewer-py",
    "reviewer-js",
    "reviewer-c",
    "reviewer@0.1.0",
    "reviewer-c@0.1.0",
];
/// The reviewer agent's name (it appears in allow-list errors and escalations).
const AGENT: &str = "rev-1";
/// The grant's exec timeout: the cap when the reviewer passes none.
const EXEC_TIMEOUT: Duration = Duration::from_millis(1000);

// ---- the data files ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksFile {
    #[serde(rename = "about")]
    _about: String,
    checks: BTreeMap<String, Check>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    about: String,
    /// The script's body (a `#!/bin/sh` line is added); none: the program does not exist.
    script: Option<String>,
    /// In the exec allow-list (the default).
    #[serde(default = "yes")]
    allow: bool,
}

fn yes() -> bool {
    true
}

/// A config table: an object, or a list of `[key, value]` pairs (to repeat a key).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum ConfigData {
    Pairs(Vec<(String, String)>),
    Map(BTreeMap<String, String>),
}

impl ConfigData {
    fn pairs(&self) -> Vec<(String, String)> {
        match self {
            ConfigData::Pairs(p) => p.clone(),
            ConfigData::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewCase {
    name: String,
    /// The check program's behaviour, a key of checks.json. It is the config's `program`
    /// (`./checks/<check>.sh`) unless the config sets `program` itself.
    check: String,
    config: ConfigData,
    message: MessageData,
    /// The actions, as `describe` strings, in order.
    expect: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MessageData {
    id: String,
    sender: String,
    /// task, query, info, ack, task-assign, review-request, verdict:approve,
    /// verdict:reject:REASON or custom:NAME.
    kind: String,
    body: String,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    urgent: bool,
    #[serde(default)]
    attempt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitCase {
    name: String,
    config: ConfigData,
    /// The `Failure` reason `Runtime::instantiate` gives; none: init succeeds.
    expect: Option<String>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
}

fn read_json<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn kind(s: &str) -> wit::Kind {
    match s {
        "task" => wit::Kind::Task,
        "query" => wit::Kind::Query,
        "info" => wit::Kind::Info,
        "ack" => wit::Kind::Ack,
        "task-assign" => wit::Kind::TaskAssign,
        "review-request" => wit::Kind::ReviewRequest,
        "verdict:approve" => wit::Kind::Verdict(wit::Verdict::Approve),
        _ => {
            if let Some(reason) = s.strip_prefix("verdict:reject:") {
                wit::Kind::Verdict(wit::Verdict::Reject(reason.to_string()))
            } else if let Some(name) = s.strip_prefix("custom:") {
                wit::Kind::Custom(name.to_string())
            } else {
                panic!("reviews.json: unknown message kind `{s}`")
            }
        }
    }
}

impl MessageData {
    fn to_wit(&self) -> wit::Message {
        wit::Message {
            id: self.id.clone(),
            sender: self.sender.clone(),
            recipient: AGENT.to_string(),
            kind: kind(&self.kind),
            body: self.body.clone(),
            priority: if self.urgent {
                wit::Priority::Urgent
            } else {
                wit::Priority::Normal
            },
            task_id: self.task_id.clone(),
            correlation_id: self.correlation_id.clone(),
            sent_at_ms: 1_700_000_000_000,
            attempt: self.attempt.unwrap_or(1),
        }
    }
}

// ---- running ----

/// What one reviewer did with one case, in comparable form.
#[derive(Clone)]
struct Outcome {
    /// `describe` of each action, or one line naming the failure.
    described: Vec<String>,
    /// `Debug` of the whole action list (or of the failure): compared across languages.
    full: String,
    /// What is wrong beyond the texts (fields `describe` leaves out).
    notes: Vec<String>,
}

impl Outcome {
    fn actions(actions: &[wit::Action], msg: &wit::Message) -> Outcome {
        let mut notes = Vec::new();
        // `describe` shows a send's recipient, kind and body; the rest is checked here.
        for a in actions {
            if let wit::Action::Send(o) = a {
                if o.task_id != msg.task_id {
                    notes.push(format!(
                        "send has task-id {:?}, not the message's {:?}",
                        o.task_id, msg.task_id
                    ));
                }
                if o.correlation_id.as_deref() != Some(msg.id.as_str()) {
                    notes.push(format!(
                        "send has correlation-id {:?}, not the message id {:?}",
                        o.correlation_id, msg.id
                    ));
                }
                if !matches!(o.priority, wit::Priority::Normal) {
                    notes.push(format!("send has priority {:?}, not normal", o.priority));
                }
            }
        }
        Outcome {
            described: actions.iter().map(describe).collect(),
            full: format!("{actions:?}"),
            notes,
        }
    }

    fn failed(what: &str, f: &tinytown::runtime::Failure) -> Outcome {
        let line = format!(
            "{what}: {} (retryable: {}, trapped: {})",
            f.reason,
            f.retryable(),
            f.trapped()
        );
        Outcome {
            described: vec![line.clone()],
            full: line,
            notes: Vec::new(),
        }
    }
}

struct Env {
    dir: PathBuf,
    runtime: Runtime,
    grants: Grants,
    checks: BTreeMap<String, Check>,
}

impl Env {
    fn new(dir: &Path, checks: BTreeMap<String, Check>) -> Env {
        let dir = dir.canonicalize().unwrap();
        let scripts = dir.join("checks");
        std::fs::create_dir_all(&scripts).unwrap();
        let mut allow = Vec::new();
        for (name, check) in &checks {
            let Some(script) = &check.script else {
                continue;
            };
            let path = scripts.join(format!("{name}.sh"));
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            if check.allow {
                allow.push(path.canonicalize().unwrap());
            }
        }
        let grant = ExecGrant {
            allow,
            env: std::env::var("PATH")
                .map(|p| vec![("PATH".to_string(), p)])
                .unwrap_or_default(),
            workdir: dir.clone(),
            town_dir: dir.clone(),
            timeout: EXEC_TIMEOUT,
            output_bytes: 1 << 20,
        };
        let runtime = Runtime::new(Some(dir.join("cache")), false).unwrap();
        Env {
            dir,
            runtime,
            grants: Grants::none().with("exec", Arc::new(grant)),
            checks,
        }
    }

    fn load(&self, reviewer: &str) -> Result<Plugin, String> {
        let path = match reviewer.strip_suffix("@0.1.0") {
            Some(name) => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/wit-0.1.0")
                .join(format!("{name}.wasm")),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/dist")
                .join(format!("{reviewer}.wasm")),
        };
        if !path.exists() {
            return Err(format!(
                "{} is missing: run `bash plugins/build.sh` first",
                path.display()
            ));
        }
        self.runtime
            .load(AGENT, &path, &self.grants)
            .map_err(|e| format!("loading {}: {e:#}", path.display()))
    }

    fn instantiate(
        &self,
        plugin: &Plugin,
        config: &[(String, String)],
    ) -> Result<Instance, tinytown::runtime::Failure> {
        self.runtime.instantiate_blocking(
            plugin,
            AGENT,
            &Limits::default(),
            &self.grants,
            config,
            Arc::new(NoTown),
        )
    }
}

/// A review case's config, with `program` defaulting to its check.
fn review_config(case: &ReviewCase) -> Vec<(String, String)> {
    let mut pairs = case.config.pairs();
    if !pairs.iter().any(|(k, _)| k == "program") {
        pairs.insert(
            0,
            ("program".to_string(), format!("./checks/{}.sh", case.check)),
        );
    }
    pairs
}

/// Runs every review case through one reviewer, in order, reusing one instance per config.
fn run_reviews(env: &Env, plugin: &Plugin, cases: &[ReviewCase]) -> Vec<Outcome> {
    let mut instances: HashMap<Vec<(String, String)>, Instance> = HashMap::new();
    cases
        .iter()
        .map(|case| {
            let config = review_config(case);
            let msg = case.message.to_wit();
            if !instances.contains_key(&config) {
                match env.instantiate(plugin, &config) {
                    Ok(i) => {
                        instances.insert(config.clone(), i);
                    }
                    Err(f) => return Outcome::failed("instantiate failed", &f),
                }
            }
            let inst = instances.get_mut(&config).unwrap();
            match tinytown::runtime::block_on(inst.handle(msg.clone())) {
                Ok(actions) => Outcome::actions(&actions, &msg),
                Err(f) => {
                    if f.trapped() {
                        instances.remove(&config);
                    }
                    Outcome::failed("handle failed", &f)
                }
            }
        })
        .collect()
}

/// Instantiates one reviewer fresh for each init case.
fn run_inits(env: &Env, plugin: &Plugin, cases: &[InitCase]) -> Vec<Outcome> {
    cases
        .iter()
        .map(|case| match env.instantiate(plugin, &case.config.pairs()) {
            Ok(_) => Outcome {
                described: vec!["ok".into()],
                full: "ok".into(),
                notes: Vec::new(),
            },
            Err(f) => {
                let line = format!("{:?}", f);
                let mut notes = Vec::new();
                if f.retryable() || f.trapped() {
                    notes.push(format!(
                        "init refusal should be permanent and not a trap: {line}"
                    ));
                }
                Outcome {
                    described: vec![f.reason.clone()],
                    full: line,
                    notes,
                }
            }
        })
        .collect()
}

// ---- reporting ----

/// A positional diff of two lists of texts, one line per entry.
fn diff(expected: &[String], actual: &[String], who: &str) -> String {
    let mut out = String::new();
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if e == a => writeln!(out, "      = {e:?}").unwrap(),
            (e, a) => {
                if let Some(e) = e {
                    writeln!(out, "      - {e:?}   (expected)").unwrap();
                }
                if let Some(a) = a {
                    writeln!(out, "      + {a:?}   ({who})").unwrap();
                }
            }
        }
    }
    if expected.is_empty() && actual.is_empty() {
        out.push_str("      (no actions)\n");
    }
    out
}

/// Compares every reviewer's outcome of one case with the expected texts and with the Rust
/// reviewer's full outcome; returns a readable report of what disagrees, if anything.
fn judge(title: &str, expected: &[String], outcomes: &[(&str, &Outcome)]) -> Option<String> {
    let mut report = String::new();
    // Reviewers that are wrong the same way are reported together.
    let mut groups: Vec<(Vec<&str>, &Vec<String>)> = Vec::new();
    for &(who, got) in outcomes.iter().filter(|(_, o)| o.described != expected) {
        match groups.iter_mut().find(|(_, d)| **d == got.described) {
            Some((names, _)) => names.push(who),
            None => groups.push((vec![who], &got.described)),
        }
    }
    for (names, described) in &groups {
        let who = names.join(", ");
        write!(
            report,
            "    {who}: not the expected actions:\n{}",
            diff(expected, described, &who)
        )
        .unwrap();
    }
    let (ref_name, reference) = outcomes[0];
    let dissenters: Vec<&str> = outcomes
        .iter()
        .filter(|(_, o)| o.full != reference.full)
        .map(|(w, _)| *w)
        .collect();
    if !dissenters.is_empty() {
        writeln!(
            report,
            "    disagree with {ref_name} (Rust): {}",
            dissenters.join(", ")
        )
        .unwrap();
    }
    for &(who, got) in outcomes {
        if got.described == reference.described && got.full != reference.full {
            // Same texts, different fields (priority, task-id, correlation-id, ...).
            write!(
                report,
                "      {ref_name}: {}\n      {who}: {}\n",
                reference.full, got.full
            )
            .unwrap();
        }
        for note in &got.notes {
            writeln!(report, "    {who}: {note}").unwrap();
        }
    }
    (!report.is_empty()).then(|| format!("case {title}:\n{report}"))
}

/// The comparison itself must catch a port that differs only in a field `describe` leaves out,
/// and name it.
#[test]
fn judge_reports_disagreements() {
    let msg = MessageData {
        id: "m-1".into(),
        sender: "w".into(),
        kind: "review-request".into(),
        body: "work".into(),
        task_id: Some("t-1".into()),
        correlation_id: None,
        urgent: false,
        attempt: None,
    }
    .to_wit();
    let send = |priority, correlation_id: Option<&str>| {
        vec![
            wit::Action::Approve(wit::TaskOutcome {
                task_id: "t-1".into(),
                text: "check passed".into(),
            }),
            wit::Action::Send(wit::Outgoing {
                to: "mayor".into(),
                kind: wit::Kind::Info,
                body: "approved t-1: check passed".into(),
                priority,
                task_id: Some("t-1".into()),
                correlation_id: correlation_id.map(str::to_string),
            }),
        ]
    };
    let good = Outcome::actions(&send(wit::Priority::Normal, Some("m-1")), &msg);
    let urgent = Outcome::actions(&send(wit::Priority::Urgent, Some("m-1")), &msg);
    let uncorrelated = Outcome::actions(&send(wit::Priority::Normal, None), &msg);
    let expected = good.described.clone();
    assert_eq!(
        judge(
            "same",
            &expected,
            &[("reviewer", &good), ("reviewer-c", &good)]
        ),
        None
    );

    let report = judge(
        "fields",
        &expected,
        &[("reviewer", &good), ("reviewer-py", &urgent)],
    )
    .unwrap();
    assert!(
        report.contains("disagree with reviewer (Rust): reviewer-py"),
        "{report}"
    );
    assert!(report.contains("reviewer-py: [Action::Approve"), "{report}");
    assert!(
        report.contains("reviewer-py: send has priority Priority::Urgent, not normal"),
        "{report}"
    );

    let report = judge(
        "corr",
        &expected,
        &[("reviewer", &uncorrelated), ("reviewer-js", &uncorrelated)],
    )
    .unwrap();
    assert!(
        report.contains("reviewer-js: send has correlation-id None"),
        "{report}"
    );

    let wrong = Outcome {
        described: vec!["approve t-1: ok".into()],
        full: "x".into(),
        notes: vec![],
    };
    let report = judge(
        "texts",
        &expected,
        &[
            ("reviewer", &good),
            ("reviewer-py", &wrong),
            ("reviewer-c", &wrong),
        ],
    )
    .unwrap();
    assert!(
        report.contains("reviewer-py, reviewer-c: not the expected actions"),
        "{report}"
    );
    assert!(
        report.contains("- \"approve t-1: check passed\"   (expected)"),
        "{report}"
    );
    assert!(
        report.contains("+ \"approve t-1: ok\"   (reviewer-py, reviewer-c)"),
        "{report}"
    );
}

#[test]
fn reviewers_agree_across_languages() {
    let started = Instant::now();
    let checks: ChecksFile = read_json("checks.json");
    let reviews: Vec<ReviewCase> = read_json("reviews.json");
    let inits: Vec<InitCase> = read_json("init.json");
    assert!(!reviews.is_empty() && !inits.is_empty());
    let mut names = std::collections::HashSet::new();
    for case in &reviews {
        assert!(
            names.insert(&case.name),
            "reviews.json: duplicate case name {:?}",
            case.name
        );
        assert!(
            checks.checks.contains_key(&case.check),
            "reviews.json: case {:?} names unknown check {:?}",
            case.name,
            case.check
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let env = Env::new(tmp.path(), checks.checks);
    let dir = env.dir.display().to_string();

    // Per reviewer that loaded: (name, review outcomes, init outcomes).
    let mut results: Vec<(&str, Vec<Outcome>, Vec<Outcome>)> = Vec::new();
    let mut problems = Vec::new();
    let mut timings = Vec::new();
    for reviewer in REVIEWERS {
        let t = Instant::now();
        let plugin = match env.load(reviewer) {
            Ok(p) => p,
            // Without the reference there is nothing to compare with.
            Err(e) if reviewer == REVIEWERS[0] => panic!("{e}"),
            Err(e) => {
                problems.push(format!(
                    "{reviewer} did not load, so it was not compared: {e}\n"
                ));
                continue;
            }
        };
        let compiled = t.elapsed();
        let t = Instant::now();
        let reviewed = run_reviews(&env, &plugin, &reviews);
        let review_time = t.elapsed();
        let t = Instant::now();
        let inited = run_inits(&env, &plugin, &inits);
        timings.push(format!(
            "{reviewer}: load {:.1}s, {} reviews {:.1}s, {} inits {:.1}s",
            compiled.as_secs_f64(),
            reviews.len(),
            review_time.as_secs_f64(),
            inits.len(),
            t.elapsed().as_secs_f64()
        ));
        results.push((reviewer, reviewed, inited));
    }

    for (i, case) in reviews.iter().enumerate() {
        let expected: Vec<String> = case
            .expect
            .iter()
            .map(|e| e.replace("{dir}", &dir))
            .collect();
        let outcomes: Vec<(&str, &Outcome)> = results.iter().map(|(r, o, _)| (*r, &o[i])).collect();
        let check = &env.checks[&case.check].about;
        let title = format!(
            "{:?} (reviews.json; check `{}`: {check})",
            case.name, case.check
        );
        problems.extend(judge(&title, &expected, &outcomes));
    }
    for (i, case) in inits.iter().enumerate() {
        let expected = vec![case.expect.clone().unwrap_or_else(|| "ok".into())];
        let outcomes: Vec<(&str, &Outcome)> = results.iter().map(|(r, _, o)| (*r, &o[i])).collect();
        problems.extend(judge(
            &format!("{:?} (init.json)", case.name),
            &expected,
            &outcomes,
        ));
    }

    eprintln!(
        "{}\ntotal {:.1}s",
        timings.join("\n"),
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} conformance problem(s) in {} cases (- expected, + actual):\n\n{}",
        problems.len(),
        reviews.len() + inits.len(),
        problems.join("\n")
    );
}
