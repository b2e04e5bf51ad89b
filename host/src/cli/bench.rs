//! `tt bench`: measure speed and memory in a throwaway town (the work is in [`crate::bench`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// One suite instead of all: `exec` (the cost of confining a program), `soak` (memory and
    /// throughput over 25 times --messages), `serve` (the townhall: REST, SSE and MCP
    /// latency), `replay` (the journal's cost, the replay rate), `llm` (roles waiting on a
    /// model) or `swap` (the pause in handling a swap causes); `soak` and `serve` run only when
    /// named.
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
    } = args;
    // The scratch towns live elsewhere: their configs need the plugins' absolute paths.
    let plugins = plugins.canonicalize().unwrap_or(plugins);
    crate::bench::run(
        suite.as_deref(),
        crate::bench::BenchOptions {
            plugins,
            messages,
            appendfsync,
        },
    )
    .await
}
