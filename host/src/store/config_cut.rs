//! Reading `tinytown.toml` without the agents' tables, for the commands that only touch
//! Redis: their cost must not grow with the number of agents declared (a big town declares
//! thousands).
//!
//! Cutting the tables out still reads and scans the whole file (about 2 ms for 10,000 agents,
//! nearly half of a `tt send`), so the cut text is kept in `.tt/` beside the file's stamp
//! ([`crate::store::stamp`]): the next command reads the small cut unless the file changed
//! since. A file changed too recently for its stamp to be trusted is cut but not kept.

use std::path::Path;

use anyhow::Result;

use super::{Config, FILE_NAME, STATE_DIR};
use crate::store::stamp::Stamp;

impl Config {
    /// [`Config::load`] without the `[agents.*]` tables: for commands that only touch Redis
    /// (`tt send`, `tt assign`, `tt inbox`, tasks and the backlog), so their time does not grow
    /// with the number of agents declared. The agents' tables are still checked by every
    /// command that uses them (and by `tt host`). A file this cannot cut safely (an `[agents]`
    /// table, quoted agent names), or whose cut text does not parse, is loaded whole, so its
    /// errors are reported as [`Config::load`] reports them.
    pub fn load_without_agents(dir: &Path) -> Result<Config> {
        let path = dir.join(FILE_NAME);
        let cache = dir.join(STATE_DIR).join(CUT_FILE);
        // Stamped before reading: a change made while it is read gets a stamp of its own.
        let Some(stamp) = Stamp::of(&path) else {
            return Config::load(dir);
        };
        let parsed = |text: &str| {
            Config::parse(text).ok().map(|mut config| {
                config.dir = dir.to_path_buf();
                config
            })
        };
        if let Some(config) = cached(&cache, &stamp).as_deref().and_then(parsed) {
            return Ok(config);
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Config::load(dir);
        };
        if let Some(cut) = without_agents(&text) {
            if let Some(config) = parsed(&cut) {
                keep(&cache, &stamp, &cut);
                return Ok(config);
            }
        }
        Config::load(dir)
    }
}

/// The cut's file in the state directory.
const CUT_FILE: &str = "config-without-agents.toml";
/// The kept cut's first line: the stamp of the file it was cut from.
fn header(stamp: &Stamp) -> String {
    format!("# cut of {FILE_NAME}: {}\n", stamp.text)
}

/// The kept cut when it was made from the file as it is now (`stamp`).
fn cached(cache: &Path, stamp: &Stamp) -> Option<String> {
    if !stamp.settled {
        return None;
    }
    let text = std::fs::read_to_string(cache).ok()?;
    text.strip_prefix(&header(stamp)).map(str::to_string)
}

/// Keeps `cut` for the next command. Best effort: a state directory that is missing or not
/// writable only means the next command cuts again. Written aside and renamed, so a reader
/// never sees half of it.
fn keep(cache: &Path, stamp: &Stamp, cut: &str) {
    let Some(state) = cache.parent().filter(|d| d.is_dir() && stamp.settled) else {
        return;
    };
    let aside = state.join(format!("{CUT_FILE}.{}", std::process::id()));
    let kept = std::fs::write(&aside, format!("{}{cut}", header(stamp))).is_ok()
        && std::fs::rename(&aside, cache).is_ok();
    if !kept {
        let _ = std::fs::remove_file(&aside);
    }
}

/// `text` without its `[agents]` and `[agents.NAME...]` tables (headers and their lines: what
/// `[agents]` holds is agents too, `NAME = {...}` or `NAME.role = ...`), or `None` when it
/// cannot tell them apart by their headers alone. `tt init` writes an empty `[agents]`.
fn without_agents(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            if let Some(rest) = t.strip_prefix("[agents.") {
                if rest.starts_with(['"', '\'']) {
                    return None;
                }
                skipping = true;
                continue;
            }
            if header_is(t, "agents") {
                skipping = true;
                continue;
            }
            if t.starts_with("[agents") || t.starts_with("[[agents") {
                return None;
            }
            skipping = false;
        } else if !skipping && (t.starts_with("agents.") || t.starts_with("agents =")) {
            return None;
        }
        if !skipping {
            out.push_str(line);
        }
    }
    Some(out)
}

/// Whether `line` (trimmed at the start) is the header `[name]`, a comment allowed after it.
fn header_is(line: &str, name: &str) -> bool {
    let Some(rest) = line
        .strip_prefix('[')
        .and_then(|r| r.trim_start().strip_prefix(name))
    else {
        return false;
    };
    let Some(after) = rest.trim_start().strip_prefix(']') else {
        return false;
    };
    let after = after.trim();
    after.is_empty() || after.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::{without_agents, CUT_FILE};
    use crate::store::config::{Config, FILE_NAME, STATE_DIR};
    use crate::store::stamp::SETTLE;

    const TOWN: &str = "[town]\nname = \"first\"\n\n[agents.a]\nrole = \"worker\"\n";

    #[test]
    fn the_cut_is_kept_and_read_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(STATE_DIR)).unwrap();
        std::fs::write(dir.path().join(FILE_NAME), TOWN).unwrap();
        let cache = dir.path().join(STATE_DIR).join(CUT_FILE);
        // Just written: its stamp may be the next write's too, so nothing is kept yet.
        assert_eq!(
            Config::load_without_agents(dir.path()).unwrap().town.name,
            "first"
        );
        assert!(!cache.exists());
        std::thread::sleep(SETTLE * 2);
        assert_eq!(
            Config::load_without_agents(dir.path()).unwrap().town.name,
            "first"
        );
        let kept = std::fs::read_to_string(&cache).unwrap();
        assert!(!kept.contains("agents"), "{kept}");
        // The kept cut is what the next load reads (shown by changing it behind the file's back).
        std::fs::write(&cache, kept.replace("first", "kept")).unwrap();
        let config = Config::load_without_agents(dir.path()).unwrap();
        assert_eq!(config.town.name, "kept");
        assert_eq!(config.dir, dir.path());
        // Any write to the file, even of the same size, makes the next load cut again.
        std::fs::write(dir.path().join(FILE_NAME), TOWN.replace("first", "after")).unwrap();
        assert_eq!(
            Config::load_without_agents(dir.path()).unwrap().town.name,
            "after"
        );
        std::thread::sleep(SETTLE * 2);
        assert_eq!(
            Config::load_without_agents(dir.path()).unwrap().town.name,
            "after"
        );
        // A kept cut that no longer parses is cut again, not an error.
        let kept = std::fs::read_to_string(&cache).unwrap();
        std::fs::write(&cache, kept.replace("[town]", "[town")).unwrap();
        assert_eq!(
            Config::load_without_agents(dir.path()).unwrap().town.name,
            "after"
        );
    }

    #[test]
    fn without_a_state_directory_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), TOWN).unwrap();
        std::thread::sleep(SETTLE * 2);
        assert_eq!(
            Config::load_without_agents(dir.path()).unwrap().town.name,
            "first"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn agents_tables_go_and_the_rest_stays() {
        let text = "[town]\nname = \"t\"\n\n[agents]\n\n[agents.a]\nrole = \"worker\"\n\
                    [agents.a.exec]\nallow = [\"x\"]\n\n[host]\nconnections = 8\n";
        let cut = without_agents(text).unwrap();
        assert_eq!(cut, "[town]\nname = \"t\"\n\n[host]\nconnections = 8\n");
        // What an `[agents]` table holds is agents too.
        let inline =
            "[agents] # the town's agents\nb = { role = \"worker\" }\n[limits]\nfuel = 1\n";
        assert_eq!(without_agents(inline).unwrap(), "[limits]\nfuel = 1\n");
    }

    #[test]
    fn what_headers_cannot_tell_apart_is_loaded_whole() {
        for text in [
            "[agents.\"a b\"]\nrole = \"w\"\n",
            "[[agents]]\nname = \"a\"\n",
            "[agentsx]\n",
            "[town]\nagents.a.role = \"w\"\n",
        ] {
            assert!(without_agents(text).is_none(), "{text}");
        }
    }
}
