//! Creating a town (`tt init`): the directory, `tinytown.toml`, `.tt/`, a `.tt/` line in
//! `.gitignore`, and a first connection to its Redis (which starts the embedded one).

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Town;
use crate::store::config::{Config, FILE_NAME, STATE_DIR};
use crate::store::error;
use crate::store::model::validate_name;

/// A town [`init`] made ready.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The town's name, as written to `tinytown.toml`.
    pub name: String,
    /// The town directory, canonical.
    pub dir: PathBuf,
    /// The configured Redis URL; `None` for the embedded Redis (`.tt/redis.sock`).
    pub redis_url: Option<String>,
}

/// What `tt init` writes under `[town]` besides the name.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// `default_cli`: the coding CLI the built-in worker runs (`None`: [`DEFAULT_CLI`]).
    pub cli: Option<String>,
    /// `default_check`: the check the built-in reviewer runs (`None`: not written).
    pub check: Option<String>,
}

/// The coding CLI a new town's built-in worker runs unless `tt init --cli` says otherwise.
pub const DEFAULT_CLI: &str = "claude";

/// Makes `dir` a town named `name` (default: [`default_town_name`] of the directory).
///
/// Refuses to overwrite an existing `tinytown.toml` unless `force`; agents and tasks in Redis
/// are kept either way. If the town's Redis cannot be reached, `tinytown.toml` is put back as
/// it was (or removed), so that a second `init` is not refused.
pub async fn init(
    dir: &Path,
    name: Option<&str>,
    force: bool,
    defaults: Defaults,
) -> Result<Initialized> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let file = dir.join(FILE_NAME);
    if file.exists() && !force {
        return Err(error::fail(
            format!("{} already exists", file.display()),
            "pass --force to overwrite it (agents and tasks in Redis are kept)",
        ));
    }
    let name = match name {
        Some(n) => n.to_string(),
        None => default_town_name(&dir),
    };
    validate_name(&name)
        .map_err(|_| error::usage(format!("invalid town name {name:?}"), "pass --name NAME"))?;
    let mut config = Config::new(&name, &dir);
    config.town.default_cli = Some(defaults.cli.unwrap_or_else(|| DEFAULT_CLI.into()));
    config.town.default_check = defaults.check;
    let previous = std::fs::read(&file).ok();
    config.save()?;
    std::fs::create_dir_all(dir.join(STATE_DIR))?;
    add_to_gitignore(&dir)?;
    let town = match Town::open(&dir).await {
        Ok(t) => t,
        Err(e) => {
            // Leave no half-made town behind: a second `tt init` must not be refused.
            match previous {
                Some(bytes) => std::fs::write(&file, bytes)?,
                None => std::fs::remove_file(&file)?,
            }
            return Err(e);
        }
    };
    let mut c = town.db.conn.clone();
    let _: String = redis::cmd("PING").query_async(&mut c).await?;
    Ok(Initialized {
        name,
        dir,
        redis_url: town.config.redis.url.clone(),
    })
}

/// A town name from the directory's name: characters other than ASCII letters, digits, `-`
/// and `_` become `-`, leading dashes go, at most 64 characters; `town` if nothing is left.
pub fn default_town_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('-').to_string();
    if cleaned.is_empty() {
        "town".into()
    } else {
        cleaned.chars().take(64).collect()
    }
}

/// Adds `.tt/` to `dir/.gitignore` (creating it) unless a line already ignores `.tt`. In the
/// root of a git repository (a repository town) it goes to `.git/info/exclude` instead, so the
/// repository's own files stay unchanged and the town's state is never committed.
pub fn add_to_gitignore(dir: &Path) -> Result<()> {
    let path = if dir.join(".git").is_dir() {
        std::fs::create_dir_all(dir.join(".git/info"))?;
        dir.join(".git/info/exclude")
    } else {
        dir.join(".gitignore")
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text
        .lines()
        .any(|l| l.trim() == ".tt/" || l.trim() == ".tt" || l.trim() == "/.tt")
    {
        return Ok(());
    }
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    std::fs::write(&path, format!("{text}{sep}.tt/\n"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_come_from_the_directory() {
        assert_eq!(default_town_name(Path::new("/x/my town")), "my-town");
        assert_eq!(default_town_name(Path::new("/x/.hidden")), "hidden");
        assert_eq!(default_town_name(Path::new("/x/---")), "town");
        assert_eq!(default_town_name(Path::new("/")), "town");
        assert_eq!(
            default_town_name(&Path::new("/x").join("a".repeat(80))).len(),
            64
        );
    }

    #[test]
    fn a_git_repository_excludes_the_state_dir_without_changing_its_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        add_to_gitignore(dir.path()).unwrap();
        add_to_gitignore(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(".git/info/exclude")).unwrap();
        assert_eq!(text, ".tt/\n");
        assert!(!dir.path().join(".gitignore").exists());
    }

    #[test]
    fn gitignore_gets_one_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gitignore");
        add_to_gitignore(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ".tt/\n");
        add_to_gitignore(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ".tt/\n");
        std::fs::write(&path, "target").unwrap();
        add_to_gitignore(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "target\n.tt/\n");
        std::fs::write(&path, "/.tt\n").unwrap();
        add_to_gitignore(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "/.tt\n");
    }
}
