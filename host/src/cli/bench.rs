//! `tt bench`: measure speed and memory in a throwaway town (the work is in [`crate::bench`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// One suite instead of all: `exec` (the cost of confining a program), `soak` (memory and
    /// throughput over 25 times --messages), `serve` (the townhall: REST, SSE and MCP
    /// latency), `replay` (the journal's cost, the replay rate), `llm` (roles waiting on a
    /// model), `swap` (the pause in handling a swap causes) or `scale` (a big town on one
    /// host); `soak`, `serve` and `scale` run only when named.
    pub suite: Option<String>,
    /// Where the compiled plugins are (noop, relay, chaos and the reviewers).
    #[arg(long, default_value = "plugins/dist")]
    pub plugins: PathBuf,
    /// Messages per throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// The embedded Redis's AOF fsync policy: always, everysec or no.
    #[arg(long, default_value = crate::store::config::DEFAULT_APPENDFSYNC)]
    pub appendfsync: String,
    /// `scale`: the town sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub agents: Vec<usize>,
    /// `scale`: how long to measure an idle town's CPU, in seconds.
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// `scale`: busy runs of each town, taken in turns; more turns give a steadier median
    /// ratio on a machine whose speed drifts.
    #[arg(long, default_value_t = 5)]
    pub turns: usize,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.suite.as_deref() == Some("serve") {
        return crate::serve::bench::suite().await;
    }
    let BenchArgs {
        suite,
        plugins,
        messages,
        appendfsync,
        agents,
        idle_secs,
        turns,
    } = args;
    if agents.contains(&0) || agents.is_empty() {
        return Err(crate::store::error::usage(
            "--agents needs town sizes above 0",
            "give them comma-separated, for example --agents 1000,10000",
        ));
    }
    if turns == 0 {
        return Err(crate::store::error::usage(
            "--turns needs 1 or more",
            "the busy runs of each town, for example --turns 15 (the default is 5)",
        ));
    }
    // The scratch towns live elsewhere: their configs need the plugins' absolute paths.
    let plugins = plugins.canonicalize().unwrap_or(plugins);
    crate::bench::run(
        suite.as_deref(),
        crate::bench::BenchOptions {
            plugins,
            messages,
            appendfsync,
            scale_agents: agents,
            idle: std::time::Duration::from_secs(idle_secs.max(1)),
            turns,
        },
    )
    .await
}
