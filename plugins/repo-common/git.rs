//! What the repository roles (`repo-worker`, `repo-reviewer`, `merger`) share: the `[repo]`
//! settings they get through `init`, where a task's branch and worktree are, and running git
//! and command lines through the exec capability.
//!
//! Included by each of them as `#[path = "../../repo-common/git.rs"] mod git;` rather than
//! being a crate: it calls the plugin's own `exec` bindings, which `wit_bindgen::generate!`
//! puts in each plugin crate (see `tinytown-guest` for why a shared crate cannot have them).
//!
//! Paths are relative to the agent's exec work area, which a repository town sets to the
//! worktrees directory (`[agents.X.exec] workdir = ".tt/worktrees"`, the same as `[repo]
//! worktrees`), with the repository's `.git` writable (`write = [".git"]`). It cannot be the
//! repository root: that holds the town's `.tt/`, which a confined program must never reach.
//! So a task's worktree is the directory named by its id, and the repository itself is
//! reached from there with `--git-dir` ([`Repo::git_dir`]), never through the main worktree.

// Each role uses a different part of it.
#![allow(dead_code)]

use crate::tinytown::agent::exec;
use tinytown_guest::{ConfigError, Table};

/// The repository as `[repo]` describes it (keys `repo-*` of the `init` config).
pub struct Repo {
    pub target: String,
    pub check: Vec<String>,
    pub worktrees: String,
    pub merger: String,
}

impl Repo {
    pub fn from(config: &Table) -> Result<Repo, ConfigError> {
        let need = |k: &str, what: &str| config.required(k, what).map(str::to_owned);
        let check = config.words("repo-check");
        if check.is_empty() {
            need(
                "repo-check",
                "the check command ([repo] check in tinytown.toml)",
            )?;
        }
        Ok(Repo {
            target: need(
                "repo-target",
                "the target branch ([repo] target in tinytown.toml)",
            )?,
            check,
            worktrees: config
                .get("repo-worktrees")
                .unwrap_or(".tt/worktrees")
                .trim_end_matches('/')
                .to_owned(),
            merger: config.get("repo-merger").unwrap_or("merger").to_owned(),
        })
    }

    /// The branch of task `id`.
    pub fn branch(&self, id: &str) -> String {
        format!("tt/{id}")
    }

    /// The worktree of task `id`, relative to the work area (the worktrees directory).
    pub fn worktree(&self, id: &str) -> String {
        id.to_owned()
    }

    /// The repository's `.git`, relative to the work area: as many `..` as `worktrees` is deep.
    pub fn git_dir(&self) -> String {
        let depth = self
            .worktrees
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .count();
        format!("{}.git", "../".repeat(depth))
    }

    /// `git --git-dir <repo> args` in the work area: commands on the repository itself.
    pub fn git(&self, args: &[&str]) -> Result<exec::Output, String> {
        let dir = self.git_dir();
        git(".", &[&["--git-dir", dir.as_str()], args].concat())
    }

    /// [`Repo::git`] that must succeed (see [`git_ok`]).
    pub fn git_ok(&self, args: &[&str]) -> Result<String, String> {
        let dir = self.git_dir();
        git_ok(".", &[&["--git-dir", dir.as_str()], args].concat())
    }

    /// [`Repo::git`], whether it exits 0.
    pub fn git_test(&self, args: &[&str]) -> Result<bool, String> {
        Ok(self.git(args)?.status == Some(0))
    }

    /// Removes task `id`'s worktree and branch (each may already be gone): a merged or a
    /// cancelled task's. A failed task's are kept for inspection.
    pub fn remove_task(&self, id: &str) {
        let _ = self.git(&["worktree", "remove", "--force", &self.worktree(id)]);
        let _ = self.git(&["worktree", "prune"]);
        let _ = self.git(&["branch", "-D", &self.branch(id)]);
    }

    /// The check as a command line, for messages.
    pub fn check_line(&self) -> String {
        self.check.join(" ")
    }
}

/// Runs `git args` in `dir`, with an identity for the commits it makes.
pub fn git(dir: &str, args: &[&str]) -> Result<exec::Output, String> {
    let mut all: Vec<String> = [
        "-c",
        "user.name=tinytown",
        "-c",
        "user.email=tinytown@localhost",
        "-c",
        "core.hooksPath=/dev/null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    exec::run_in(
        dir,
        &exec::Command {
            program: "git".into(),
            args: all,
            stdin: None,
            timeout_ms: Some(120_000),
        },
    )
}

/// `git args` in `dir` that must succeed: its trimmed stdout, or an error naming the command
/// and what git said.
pub fn git_ok(dir: &str, args: &[&str]) -> Result<String, String> {
    let out = git(dir, args)?;
    if out.status == Some(0) {
        Ok(out.stdout.trim().to_owned())
    } else {
        Err(format!(
            "`git {}` in {dir} failed: {}",
            args.join(" "),
            tail(&format!("{}{}", out.stderr, out.stdout), 1000).trim()
        ))
    }
}

/// Whether `git args` in `dir` exits 0 (an error only when git cannot be run at all).
pub fn git_test(dir: &str, args: &[&str]) -> Result<bool, String> {
    Ok(git(dir, args)?.status == Some(0))
}

/// Runs the command line `words` in `dir`, stdin `stdin`.
pub fn run_line(
    dir: &str,
    words: &[String],
    stdin: Option<String>,
    timeout_ms: Option<u32>,
) -> Result<exec::Output, String> {
    let (program, args) = words
        .split_first()
        .ok_or_else(|| "an empty command line".to_owned())?;
    exec::run_in(
        dir,
        &exec::Command {
            program: program.clone(),
            args: args.to_vec(),
            stdin,
            timeout_ms,
        },
    )
}

/// The last `max` bytes of `text` (at a character boundary), marked when cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes cut]\n{}", &text[start..])
}

/// How a finished command went, in one phrase: "exit 1", "timed out", "killed by a signal".
pub fn how(out: &exec::Output) -> String {
    if out.timed_out {
        "timed out".to_owned()
    } else {
        match out.status {
            Some(n) => format!("exit {n}"),
            None => "killed by a signal".to_owned(),
        }
    }
}

/// Output of a command for a message: stdout and stderr, the last 3000 bytes.
pub fn output_tail(out: &exec::Output) -> String {
    tail(format!("{}{}", out.stdout, out.stderr).trim(), 3000)
}

/// The 40-hex commit named after the last `commit ` in `text`.
pub fn commit_in(text: &str) -> Option<String> {
    let at = text.rfind("commit ")?;
    let sha: String = text[at + 7..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    (sha.len() == 40).then_some(sha)
}
