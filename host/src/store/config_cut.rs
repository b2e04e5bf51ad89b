//! Reading `tinytown.toml` without the agents' tables, for the commands that only touch
//! Redis: their cost must not grow with the number of agents declared (a big town declares
//! thousands).

use std::path::Path;

use anyhow::Result;

use super::{Config, FILE_NAME};

impl Config {
    /// [`Config::load`] without the `[agents.*]` tables: for commands that only touch Redis
    /// (`tt send`, `tt assign`, `tt inbox`, tasks and the backlog), so their time does not grow
    /// with the number of agents declared. The agents' tables are still checked by every
    /// command that uses them (and by `tt host`). A file this cannot cut safely (an `[agents]`
    /// table, quoted agent names), or whose cut text does not parse, is loaded whole, so its
    /// errors are reported as [`Config::load`] reports them.
    pub fn load_without_agents(dir: &Path) -> Result<Config> {
        let path = dir.join(FILE_NAME);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Config::load(dir);
        };
        match without_agents(&text).map(|t| Config::parse(&t)) {
            Some(Ok(mut config)) => {
                config.dir = dir.to_path_buf();
                Ok(config)
            }
            _ => Config::load(dir),
        }
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
    use super::without_agents;

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
