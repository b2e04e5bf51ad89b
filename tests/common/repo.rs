//! Repository towns for `tests/repo.rs`: a real git repository (the example project of
//! `examples/repo/`) in a temp dir with a town in its root, workers running the stand-in
//! coding CLI (`examples/repo/fake-cli.py`), a reviewer and a merger, all real plugins.

use std::path::Path;
use std::process::Command;

use super::{plugin, TestTown};

/// The check every test town runs: the unit tests (`-B`: no bytecode cache, whose staleness
/// check an edit of the same size in the same second would fool, running the old code), slowed
/// down in the merger's scratch
/// worktree while `.tt/worktrees/slow-merge` exists (it touches `.tt/worktrees/merging`
/// first, so a test knows when to kill the host).
const CHECK: &str = r#"#!/bin/sh
case "$PWD" in
  */_merge) if [ -e ../slow-merge ]; then touch ../merging; sleep 15; fi ;;
esac
exec python3 -B -m unittest -q 2>&1
"#;

/// `git args` in `dir`; panics unless it succeeds; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository town: the example project committed on `main`, `tt init` in its root, and
/// workers `alice` and `carol`, reviewer `rita` and the merger `merger`. `cli_timeout_ms` is
/// the workers' CLI timeout.
pub fn repo_town(cli_timeout_ms: u32) -> TestTown {
    let town = TestTown::bare();
    let root = town.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/repo");
    for f in std::fs::read_dir(example.join("project")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), root.join(f.file_name())).unwrap();
    }
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "The example project"]);
    // The merger moves main without touching the main worktree: keep it off the branch.
    git(root, &["checkout", "-q", "--detach"]);
    town.ok(&["init", "--name", super::TOWN]);
    let bin = root.join(".tt/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(example.join("fake-cli.py"), bin.join("fake-cli.py")).unwrap();
    std::fs::write(bin.join("check.sh"), CHECK).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("check.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exec = r#"{ allow = ["git", ".tt/bin/fake-cli.py", ".tt/bin/check.sh"], env = ["PATH"], workdir = ".tt/worktrees", write = [".git"], read = [".tt/bin"], timeout_ms = 60000 }"#;
    let mut text = format!(
        "[town]\nname = \"{}\"\n\n[host]\nlease_ms = 1000\nheartbeat_ms = 200\n\n\
         [repo]\ntarget = \"main\"\ncheck = \".tt/bin/check.sh\"\n\n",
        super::TOWN
    );
    for w in ["alice", "carol"] {
        text.push_str(&format!(
            "[agents.{w}]\nrole = \"worker\"\nplugin = \"{}\"\n\
             config = {{ cli = \".tt/bin/fake-cli.py\", reviewer = \"rita\", timeout-ms = \"{cli_timeout_ms}\" }}\n\
             exec = {exec}\n\n",
            plugin("repo-worker")
        ));
    }
    text.push_str(&format!(
        "[agents.rita]\nrole = \"reviewer\"\nplugin = \"{}\"\nexec = {exec}\n\n\
         [agents.merger]\nrole = \"merger\"\nplugin = \"{}\"\nexec = {exec}\n",
        plugin("repo-reviewer"),
        plugin("merger")
    ));
    town.write_config(&text);
    for (n, r) in [
        ("alice", "worker"),
        ("carol", "worker"),
        ("rita", "reviewer"),
        ("merger", "merger"),
    ] {
        town.ok(&["spawn", n, "--role", r]);
    }
    town
}

/// A task for the stand-in CLI that appends `code` to `file` (and `test` to `test_file`).
pub fn append_task(title: &str, file: &str, code: &str, test_file: &str, test: &str) -> String {
    format!("{title}\n@@ append {file}\n{code}\n@@ end\n@@ append {test_file}\n{test}\n@@ end\n")
}

/// Assigns `desc` to `agent`; the new task's id.
pub fn assign(town: &TestTown, agent: &str, desc: &str) -> String {
    let out = town.ok(&["assign", agent, desc]);
    out.split_whitespace().nth(1).unwrap().to_string()
}

/// Whether the unit tests pass at `commit` of the repository in `root` (checked out in a
/// throwaway worktree).
pub fn check_passes_at(root: &Path, commit: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path().join("wt");
    git(
        root,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            wt.to_str().unwrap(),
            commit,
        ],
    );
    let ok = Command::new("python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(&wt)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap()
        .status
        .success();
    git(
        root,
        &["worktree", "remove", "--force", wt.to_str().unwrap()],
    );
    ok
}

/// The first-parent history of `main`, newest first.
pub fn main_history(root: &Path) -> Vec<String> {
    git(root, &["rev-list", "--first-parent", "main"])
        .lines()
        .map(str::to_string)
        .collect()
}
