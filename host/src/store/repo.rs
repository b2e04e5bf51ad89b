//! A repository town's `[repo]` section: the git repository the town works on.
//!
//! In a repository town a task is a branch (`tt/<task-id>`) in a worktree of its own under
//! `worktrees`, and it is done only when its change is on the `target` branch: a reviewer's
//! approval moves the task to `approved` and hands it to the `merger` agent, which merges
//! approved branches one at a time and alone may complete them (the applier enforces it:
//! `applier/lua/tasks.lua`). The roles learn these settings through their `init` config
//! (`repo-target`, `repo-check`, `repo-worktrees`, `repo-merger`), so one section configures
//! the worker, the reviewer and the merger alike.

use serde::{Deserialize, Serialize};

use crate::store::model::validate_name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoSection {
    /// The branch approved work is merged into.
    pub target: String,
    /// The command line that must pass on a change and on every merged result (exit 0).
    pub check: String,
    /// Where task worktrees live, relative to the repository root (the town directory).
    #[serde(default = "default_worktrees")]
    pub worktrees: String,
    /// The agent that runs the merge queue.
    #[serde(default = "default_merger")]
    pub merger: String,
}

fn default_worktrees() -> String {
    ".tt/worktrees".to_string()
}

fn default_merger() -> String {
    "merger".to_string()
}

impl RepoSection {
    /// Checks the values; the error names the field and what to write instead.
    pub fn check(&self) -> Result<(), String> {
        let t = &self.target;
        let bad_ref = t.is_empty()
            || t.starts_with(['-', '/', '.'])
            || t.ends_with(['/', '.'])
            || t.contains("..")
            || t.contains("//")
            || t.ends_with(".lock")
            || t.chars()
                .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
        if bad_ref {
            return Err(format!(
                "[repo] target = {:?}: not a branch name; name the branch approved work is \
                 merged into, e.g. target = \"main\"",
                t.escape_debug().to_string()
            ));
        }
        if self.check.split_whitespace().next().is_none() {
            return Err("[repo] check is empty: give the command that must pass, \
                 e.g. check = \"python3 -m unittest\""
                .to_string());
        }
        let w = std::path::Path::new(&self.worktrees);
        if self.worktrees.is_empty()
            || w.is_absolute()
            || w.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!(
                "[repo] worktrees = {:?}: use a directory inside the repository, relative to \
                 it, e.g. worktrees = \".tt/worktrees\"",
                self.worktrees
            ));
        }
        validate_name(&self.merger).map_err(|e| {
            format!(
                "[repo] merger = {:?}: {}",
                self.merger.escape_debug().to_string(),
                crate::store::error::one_line(&e)
            )
        })?;
        Ok(())
    }

    /// What every role's `init` gets from this section (after the agent's own keys, which a
    /// role reads first).
    pub fn init_config(&self) -> Vec<(String, String)> {
        vec![
            ("repo-target".into(), self.target.clone()),
            ("repo-check".into(), self.check.clone()),
            ("repo-worktrees".into(), self.worktrees.clone()),
            ("repo-merger".into(), self.merger.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use crate::store::config::Config;

    fn parse(repo: &str) -> Result<Config, String> {
        Config::parse(&format!("[town]\nname = \"r\"\n[repo]\n{repo}\n"))
    }

    #[test]
    fn a_repo_section_has_defaults_and_reaches_init() {
        let c = parse("target = \"main\"\ncheck = \"python3 -m unittest\"").unwrap();
        let r = c.repo.as_ref().unwrap();
        assert_eq!(r.worktrees, ".tt/worktrees");
        assert_eq!(r.merger, "merger");
        let init = c.init_config("anyone");
        assert!(
            init.contains(&("repo-target".into(), "main".into())),
            "{init:?}"
        );
    }

    #[test]
    fn bad_repo_settings_are_named() {
        for (text, want) in [
            ("target = \"ma in\"\ncheck = \"x\"", "[repo] target"),
            ("target = \"\"\ncheck = \"x\"", "[repo] target"),
            ("target = \"main\"\ncheck = \"  \"", "[repo] check is empty"),
            (
                "target = \"main\"\ncheck = \"x\"\nworktrees = \"../out\"",
                "[repo] worktrees",
            ),
            (
                "target = \"main\"\ncheck = \"x\"\nmerger = \"a b\"",
                "[repo] merger",
            ),
            ("target = \"main\"", "missing field `check`"),
            (
                "target = \"main\"\ncheck = \"x\"\nbranch = \"y\"",
                "unknown field",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
