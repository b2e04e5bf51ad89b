//! Repository towns (issue 14): coding agents on a real git repository. Each test makes a
//! real repository (the example project), runs real `tt host` processes with the compiled
//! `repo-worker`, `repo-reviewer` and `merger` plugins and the stand-in coding CLI, and checks
//! the repository afterwards: what is on `main`, that every commit `main` ever pointed at
//! passes the check, and that the worktrees and branches of finished tasks are gone.

mod common;
#[path = "common/llm_server.rs"]
mod llm_server;

use std::path::Path;
use std::time::{Duration, Instant};

use common::repo::{append_task, assign, check_passes_at, git, main_history, repo_town};
use common::{host_until_idle, plugin, Running, TestTown};
use llm_server::{openai_text, LlmServer, Reply};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(240);

fn state(town: &TestTown, task: &str) -> String {
    town.task(task)["state"].as_str().unwrap().to_string()
}

/// The texts of the `reject` verdicts `from` sent about `task`, oldest first.
fn rejections_by(town: &TestTown, from: &str, task: &str) -> Vec<String> {
    town.events()
        .iter()
        .filter(|e| {
            e["type"] == "sent"
                && e["kind"] == "verdict:reject"
                && e["from"] == from
                && e["task"] == task
        })
        .map(|e| e["body"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Everything in `agent`'s normal mailbox stream, handled or not, as one text (the events
/// carry only the first 160 bytes of a body).
fn mail_of(town: &TestTown, agent: &str) -> String {
    town.redis(&["XRANGE", &town.key(&format!("inbox:{agent}")), "-", "+"])
}

/// The states task `id` went through, in order.
fn states_of(town: &TestTown, id: &str) -> Vec<String> {
    town.events()
        .iter()
        .filter(|e| e["type"] == "task" && e["task"] == id)
        .filter_map(|e| e["to"].as_str().map(str::to_string))
        .collect()
}

/// Every commit main's first-parent history passes the check, and no task's worktree or
/// branch outlived it (failed ones excepted).
fn assert_tidy(root: &Path, kept: &[&str]) {
    for c in main_history(root) {
        assert!(
            check_passes_at(root, &c),
            "main was at {c}, whose check fails"
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(root.join(".tt/worktrees"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    left.sort();
    assert_eq!(left, kept, "worktrees left");
    let branches = git(
        root,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
    );
    let mut branches: Vec<&str> = branches.lines().collect();
    branches.sort();
    let mut want: Vec<String> = kept.iter().map(|k| format!("tt/{k}")).collect();
    want.push("main".into());
    want.sort();
    assert_eq!(branches, want, "branches left");
    assert_eq!(
        git(root, &["status", "--porcelain", "--untracked-files=no"]),
        "",
        "the main worktree follows main"
    );
}

fn dead_letters(town: &TestTown) -> Vec<Value> {
    town.json(&["dlq", "list", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn three_tasks_two_workers_a_rejection_and_a_conflict_end_merged_on_main() {
    let town = repo_town(60_000);
    let root = town.path();
    let start = git(root, &["rev-parse", "main"]);
    // t1 and t2 both append to calc.py from the same main: whichever merges second conflicts.
    let t1 = assign(&town, "alice", &append_task(
        "Add mul to calc",
        "calc.py", "def mul(a, b):\n    return a * b",
        "test_calc.py", "class TestMul(unittest.TestCase):\n    def test_mul(self):\n        self.assertEqual(calc.mul(2, 3), 6)",
    ));
    let t2 = assign(&town, "carol", &append_task(
        "Add sub to calc",
        "calc.py", "def sub(a, b):\n    return a - b",
        "test_calc.py", "class TestSub(unittest.TestCase):\n    def test_sub(self):\n        self.assertEqual(calc.sub(5, 3), 2)",
    ));
    // t3 is wrong on its first attempt: the reviewer's check rejects it, the fix passes.
    let t3 = assign(&town, "alice", &format!("{}@@ wrong-first .upper() => .lower()\n", append_task(
        "Add shout to text",
        "text.py", "def shout(s):\n    return s.upper() + \"!\"",
        "test_text.py", "class TestShout(unittest.TestCase):\n    def test_shout(self):\n        self.assertEqual(text.shout(\"hi\"), \"HI!\")",
    )));
    let began = Instant::now();
    host_until_idle(&town, LONG);
    eprintln!("three tasks merged in {:?}", began.elapsed());

    for t in [&t1, &t2, &t3] {
        assert_eq!(
            state(&town, t),
            "completed",
            "{}\nalice's mail:\n{}",
            town.task(t),
            mail_of(&town, "alice")
        );
        let s = states_of(&town, t);
        assert!(
            s.ends_with(&["approved".into(), "completed".into()]),
            "{t}: {s:?}"
        );
    }
    // The reviewer rejected t3 with the failing test's output.
    let r = rejections_by(&town, "rita", &t3);
    assert_eq!(
        r.len(),
        1,
        "{r:?}\nalice's mail:\n{}",
        mail_of(&town, "alice")
    );
    assert!(
        r[0].contains("failed at commit") && mail_of(&town, "alice").contains("test_shout"),
        "{r:?}"
    );
    // Exactly one of t1, t2 was sent back by the merger with the conflicting files.
    let back: Vec<String> = [&t1, &t2]
        .iter()
        .flat_map(|t| rejections_by(&town, "merger", t))
        .collect();
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(
        back[0].contains("merge conflict with main") && back[0].contains("calc.py"),
        "{back:?}"
    );

    // main has all three changes, merged one at a time onto where main was.
    let calc = git(root, &["show", "main:calc.py"]);
    assert!(
        calc.contains("def mul") && calc.contains("def sub"),
        "{calc}"
    );
    let history = main_history(root);
    assert_eq!(
        history.len(),
        4,
        "three merges on the first commit: {history:?}"
    );
    assert_eq!(history.last().unwrap(), &start);
    assert_tidy(root, &[]);
    assert!(dead_letters(&town).is_empty(), "{:?}", dead_letters(&town));
    // Each task worked in its own worktree on its own branch.
    let log = git(root, &["log", "--format=%s", "main"]);
    for t in [&t1, &t2, &t3] {
        assert!(log.contains(&format!("Merge tt/{t} ({t})")), "{log}");
        assert!(log.contains(&format!("tt/{t}: Add")), "{log}");
    }
}

#[test]
fn a_merged_check_that_fails_sends_the_task_back_and_leaves_main_alone() {
    let town = repo_town(60_000);
    let root = town.path();
    // Each passes on its own; together t2's test fails (t1 adds the thing it says is absent).
    let t1 = assign(&town, "alice", &append_task(
        "Add triple to calc",
        "calc.py", "def triple(x):\n    return 3 * x",
        "test_calc.py", "class TestTriple(unittest.TestCase):\n    def test_triple(self):\n        self.assertEqual(calc.triple(2), 6)",
    ));
    host_until_idle(&town, LONG);
    assert_eq!(state(&town, &t1), "completed");
    let after_t1 = git(root, &["rev-parse", "main"]);
    // t2 was branched before t1 merged: make its worktree from the first commit.
    let first = main_history(root).last().unwrap().clone();
    let t2 = assign(&town, "carol", &append_task(
        "Say calc has no triple",
        "text.py", "import calc",
        "test_text.py", "class TestNoTriple(unittest.TestCase):\n    def test_no_triple(self):\n        self.assertFalse(hasattr(text.calc, \"triple\"))",
    ));
    git(
        root,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            &format!("tt/{t2}"),
            &format!(".tt/worktrees/{t2}"),
            &first,
        ],
    );
    host_until_idle(&town, LONG);

    let back = rejections_by(&town, "merger", &t2);
    assert!(!back.is_empty(), "{}", town.task(&t2));
    assert!(
        back[0].contains("failed on the merge with main")
            && back[0].contains("main is unchanged")
            && mail_of(&town, "carol").contains("test_no_triple"),
        "{back:?}"
    );
    assert_eq!(
        git(root, &["rev-parse", "main"]),
        after_t1,
        "main did not move"
    );
    assert_ne!(state(&town, &t2), "completed");
    // Sent back, the worker merged main in; the stand-in CLI had nothing more to do.
    assert_eq!(state(&town, &t2), "failed", "{}", town.task(&t2));
    assert!(town.task(&t2)["result"]
        .as_str()
        .unwrap()
        .contains("made no change"));
    assert_tidy(root, &[&t2]);
}

#[test]
fn a_host_killed_mid_merge_restarts_with_main_at_a_passing_commit() {
    let town = repo_town(60_000);
    let root = town.path();
    std::fs::create_dir_all(root.join(".tt/worktrees")).unwrap();
    std::fs::write(root.join(".tt/worktrees/slow-merge"), "").unwrap();
    let t1 = assign(&town, "alice", &append_task(
        "Add mul to calc",
        "calc.py", "def mul(a, b):\n    return a * b",
        "test_calc.py", "class TestMul(unittest.TestCase):\n    def test_mul(self):\n        self.assertEqual(calc.mul(2, 3), 6)",
    ));
    let before = git(root, &["rev-parse", "main"]);
    let args = ["host", "--name", "h1"];
    let host = Running::start(town.command(&args), &args);
    let deadline = Instant::now() + LONG;
    while !root.join(".tt/worktrees/merging").exists() {
        assert!(Instant::now() < deadline, "the merge never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL while the merged check runs.
    host.stop();
    assert_eq!(
        git(root, &["rev-parse", "main"]),
        before,
        "main moved before its check passed"
    );
    assert_eq!(state(&town, &t1), "approved", "still in the queue");

    std::fs::remove_file(root.join(".tt/worktrees/slow-merge")).unwrap();
    host_until_idle(&town, LONG);
    assert_eq!(state(&town, &t1), "completed", "{}", town.task(&t1));
    let main = git(root, &["rev-parse", "main"]);
    assert_ne!(main, before);
    assert_eq!(
        git(root, &["rev-parse", "main^1"]),
        before,
        "merged once, onto the old main"
    );
    std::fs::remove_file(root.join(".tt/worktrees/merging")).unwrap();
    assert_tidy(root, &[]);
    assert!(dead_letters(&town).is_empty(), "{:?}", dead_letters(&town));
}

#[test]
fn a_cli_that_hangs_or_fails_fails_its_task_and_keeps_the_worktree() {
    let town = repo_town(1_500);
    let root = town.path();
    let hang = assign(&town, "alice", "Think for a long time\n@@ sleep 30\n");
    let fail = assign(&town, "carol", "Give up\n@@ fail\n");
    let began = Instant::now();
    host_until_idle(&town, LONG);
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
    let t = town.task(&hang);
    assert_eq!(t["state"], "failed", "{t}");
    assert!(t["result"].as_str().unwrap().contains("timed out"), "{t}");
    let t = town.task(&fail);
    assert_eq!(t["state"], "failed", "{t}");
    let why = t["result"].as_str().unwrap();
    assert!(
        why.contains("exit 1") && why.contains("told to fail"),
        "{t}"
    );
    // Kept for inspection, and main never moved.
    assert_eq!(main_history(root).len(), 1);
    assert_tidy(root, &[&hang, &fail]);
}

#[test]
fn a_task_cancelled_while_its_cli_runs_loses_its_worktree_and_branch() {
    let town = repo_town(60_000);
    let root = town.path();
    let t = assign(
        &town,
        "alice",
        &format!("@@ sleep 3\n{}", append_task(
            "Add mul to calc",
            "calc.py", "def mul(a, b):\n    return a * b",
            "test_calc.py", "class TestMul(unittest.TestCase):\n    def test_mul(self):\n        self.assertEqual(calc.mul(2, 3), 6)",
        )),
    );
    let args = ["host", "--name", "h1"];
    let host = Running::start(town.command(&args), &args);
    let deadline = Instant::now() + LONG;
    while !root.join(".tt/worktrees").join(&t).exists() {
        assert!(
            Instant::now() < deadline,
            "the worker never made the worktree"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        town.ok(&["task", "cancel", &t]).trim(),
        format!("{t} is now cancelled")
    );
    // The owner is told; the CLI's change goes nowhere: no review, no failure, no dead letter.
    assert!(mail_of(&town, "alice").contains(&format!("task {t} was cancelled by conductor")));
    while root.join(".tt/worktrees").join(&t).exists() {
        assert!(
            Instant::now() < deadline,
            "the cancelled task's worktree stayed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    host.stop();
    host_until_idle(&town, LONG);
    assert_eq!(state(&town, &t), "cancelled");
    assert_eq!(
        states_of(&town, &t).last().map(String::as_str),
        Some("cancelled")
    );
    assert!(
        !town
            .events()
            .iter()
            .any(|e| e["type"] == "sent" && e["kind"] == "review-request"),
        "a cancelled task was sent to review"
    );
    assert!(dead_letters(&town).is_empty(), "{:?}", dead_letters(&town));
    assert_eq!(main_history(root).len(), 1);
    assert_tidy(root, &[]);
}

#[test]
fn a_reviewer_granted_a_model_asks_it_about_each_change_that_passes_the_check() {
    let verdict = |v: &str, reason: &str| {
        let text = json!({"verdict": v, "reason": reason}).to_string();
        Reply::json(200, openai_text(&text, 40, 9))
    };
    let s = LlmServer::start(
        vec![
            verdict("approve", "adds mul as asked"),
            verdict("reject", "shout must end with three exclamation marks"),
        ],
        Some(Reply::text(500, "no third call was expected")),
    );
    let town = repo_town(60_000);
    let root = town.path();
    // rita becomes repo-reviewer-llm, granted the model `fast` of a provider on loopback.
    std::env::set_var("TT_TEST_REPO_LLM_KEY", "sk-repo-test");
    let text = std::fs::read_to_string(root.join("tinytown.toml")).unwrap();
    let reviewer = format!("plugin = \"{}\"", plugin("repo-reviewer"));
    assert!(text.contains(&reviewer));
    let text = text.replace(
        &reviewer,
        &format!(
            "plugin = \"{}\"\nconfig = {{ model = \"fast\" }}",
            plugin("repo-reviewer-llm")
        ),
    ) + &format!(
        "\n[llm.providers.p]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key_env = \"TT_TEST_REPO_LLM_KEY\"\ntimeout_ms = 5000\nretries = 0\n\
         [llm.models.fast]\nprovider = \"p\"\nmodel = \"m-1\"\nmax_tokens = 100\n\
         [agents.rita.llm]\nmodels = [\"fast\"]\n",
        s.openai_url()
    );
    // Without its model named, the swap is refused and rita stays as she was.
    town.write_config(&text.replace("config = { model = \"fast\" }", ""));
    let refused = town.fails(&["swap", "rita", &plugin("repo-reviewer-llm")], 1);
    assert!(refused.contains("model"), "{refused}");
    town.write_config(&text);
    town.ok(&["swap", "rita", &plugin("repo-reviewer-llm")]);

    // A change that passes the check and that the model approves is merged.
    let t1 = assign(&town, "alice", &append_task(
        "Add mul to calc",
        "calc.py", "def mul(a, b):\n    return a * b",
        "test_calc.py", "class TestMul(unittest.TestCase):\n    def test_mul(self):\n        self.assertEqual(calc.mul(2, 3), 6)",
    ));
    host_until_idle(&town, LONG);
    assert_eq!(state(&town, &t1), "completed", "{}", town.task(&t1));
    assert_eq!(s.count(), 1);
    let asked = s.seen()[0].body.to_string();
    assert!(
        asked.contains("Add mul to calc") && asked.contains("+def mul(a, b):"),
        "the model sees the task and the diff: {asked}"
    );
    let approval = mail_of(&town, "merger");
    assert!(
        approval.contains("passed at commit") && approval.contains("the model approved: adds mul"),
        "{approval}"
    );

    // One the model rejects goes back with its reason; the stand-in CLI has nothing to change
    // on the feedback, so the task fails, and main keeps only the approved change.
    let t2 = assign(&town, "alice", &append_task(
        "Add shout to text",
        "text.py", "def shout(s):\n    return s.upper() + \"!\"",
        "test_text.py", "class TestShout(unittest.TestCase):\n    def test_shout(self):\n        self.assertEqual(text.shout(\"hi\"), \"HI!\")",
    ));
    host_until_idle(&town, LONG);
    assert_eq!(s.count(), 2);
    let r = rejections_by(&town, "rita", &t2);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        mail_of(&town, "alice")
            .contains("the model rejected the change: shout must end with three"),
        "{}",
        mail_of(&town, "alice")
    );
    assert_eq!(state(&town, &t2), "failed", "{}", town.task(&t2));
    assert_eq!(main_history(root).len(), 2);
    assert_tidy(root, &[&t2]);
}

#[test]
fn a_repo_worker_without_a_repo_section_is_refused_by_name() {
    let town = repo_town(60_000);
    let text = std::fs::read_to_string(town.path().join("tinytown.toml")).unwrap();
    let start = text.find("[repo]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    town.write_config(&format!("{}{}", &text[..start], &text[end + 2..]));
    town.ok(&["assign", "alice", "anything"]);
    host_until_idle(&town, LONG);
    let reasons: Vec<String> = dead_letters(&town)
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("init refused: repo-worker needs config key `repo-")
            && reasons[0].contains("in tinytown.toml"),
        "{reasons:?}"
    );
    assert_eq!(
        state(&town, "t1"),
        "running",
        "nothing but the pick-up moved it"
    );
}
