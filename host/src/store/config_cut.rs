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

/// `text` without its `[agents.NAME...]` tables (headers and their lines), or `None` when it
/// cannot tell them apart by their headers alone.
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
