//! `tt bench`: the speed and memory numbers, measured on this machine, printed.
//!
//! Each run makes a throwaway town under /tmp with its own embedded Redis and the compiled
//! plugins from `--plugins DIR` (default `plugins/dist` under the current directory), so the numbers include everything a real town pays: Lua
//! applier, AOF, consumer groups, Wasm calls. Targets are printed beside the numbers; nothing
//! here fails on a miss (that is what a benchmark is for, not a test).
//!
//! It drives the town only through the library's public services (`Town`, the applier, the
//! host's `run_until`, the runtime), as any embedder would.
//!
//! - [`scratch`]: the throwaway town and hosts.
//! - [`throughput`]: Redis baseline, `tt send`, library and host throughput.
//! - [`latency`]: latency, cold start, idle memory.
//! - [`scaling`]: several hosts, polyglot load times.
//! - [`swap`]: the pause in handling a swap causes (`tt bench swap`).
//! - [`big`]: a big town on one host (`tt bench scale`): start, memory, connections, idle
//!   CPU, latency, throughput and `tt send`, beside a 10-agent town of the same run;
//!   [`alone`]: the same mail through bare mailboxes on two Redis servers, what the number of
//!   mailboxes costs Redis itself.
//! - [`exec`]: what confining a program costs per `exec`.
//! - [`soak`]: memory and throughput over a long run (`tt bench soak`).

mod alone;
mod big;
mod exec;
mod latency;
mod llm;
mod redis_stats;
mod replay;
mod scaling;
mod scratch;
mod sink;
mod soak;
mod swap;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

pub struct BenchOptions {
    pub plugins: PathBuf,
    /// Messages per agent count in the throughput runs.
    pub messages: usize,
    pub appendfsync: String,
    /// The town sizes of `tt bench scale`.
    pub scale_agents: Vec<usize>,
    /// How long `tt bench scale` measures an idle town's CPU.
    pub idle: Duration,
    /// Busy runs of each town in `tt bench scale`.
    pub turns: usize,
}

pub(crate) fn rss_kib() -> u64 {
    crate::store::procfs::status("self", "VmRSS").unwrap_or(0)
}

/// The item of median `rate` (`tt bench scale`'s runs; a NaN rate, a run that did not finish,
/// counts as the slowest), or None for no items.
pub(crate) fn median_by<T: Clone>(items: &[T], rate: impl Fn(&T) -> f64) -> Option<T> {
    let key = |t: &T| Some(rate(t)).filter(|r| !r.is_nan()).unwrap_or(f64::MIN);
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len() / 2).cloned()
}

/// Turns of two rates taken one after the other, `(this, baseline)`: each pair with its ratio,
/// as text, and the median of the ratios (the ratio of a pair is what a machine's drift
/// disturbs least).
pub(crate) fn turn_ratios(pairs: &[(f64, f64)]) -> (String, f64) {
    let mut ratios: Vec<f64> = pairs.iter().map(|(b, s)| b / s).collect();
    let turns: Vec<String> = (pairs.iter().zip(&ratios))
        .map(|((b, s), r)| format!("{b:.0} / {s:.0} ({r:.2})"))
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    (turns.join(", "), median)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A duration in microseconds, for per-message costs.
pub(crate) fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

/// The suites `tt bench SUITE` runs alone.
pub const SUITES: [&str; 7] = ["exec", "soak", "serve", "replay", "llm", "swap", "scale"];

pub async fn run(suite: Option<&str>, opts: BenchOptions) -> Result<()> {
    match suite {
        None => {}
        Some("exec") => return exec::suite(&opts).await,
        Some("soak") => return soak::soak(&opts).await,
        Some("replay") => return replay::suite(&opts).await,
        Some("llm") => return llm::suite(&opts).await,
        Some("swap") => return swap::suite(&opts).await,
        Some("scale") => return big::suite(&opts, &opts.scale_agents, opts.idle).await,
        Some(other) => {
            return Err(crate::store::error::fail(
                format!("there is no bench suite `{other}`"),
                format!("run `tt bench` for all, or one of: {}", SUITES.join(", ")),
            ))
        }
    }
    for p in ["noop", "relay", "chaos"] {
        let f = opts.plugins.join(format!("{p}.wasm"));
        if !f.exists() {
            return Err(crate::store::error::fail(
                format!("{} is missing", f.display()),
                "build the plugins first: bash plugins/build.sh (or pass --plugins DIR)",
            ));
        }
    }
    println!(
        "tinytown bench (appendfsync {}, {} cores)",
        opts.appendfsync,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    exec::confinement_cost(&format!("(host RSS {} MiB)", rss_kib() / 1024)).await?;
    throughput::redis_baseline(&opts).await?;
    throughput::cli_send_time(&opts).await?;
    throughput::library_throughput(&opts).await?;
    for agents in [1, 10, 100] {
        throughput::host_throughput(&opts, agents).await?;
    }
    latency::latency(&opts).await?;
    latency::cold_start(&opts).await?;
    latency::idle_memory(&opts).await?;
    for hosts in [1, 2, 3] {
        scaling::several_hosts(&opts, hosts).await?;
    }
    swap::swap_pause(&opts).await?;
    scaling::polyglot_load(&opts)?;
    exec::confinement_cost(&format!("(host RSS {} MiB)", rss_kib() / 1024)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_did_not_finish_counts_as_the_slowest() {
        let rates = [3.0, f64::NAN, 1.0, 2.0, 5.0];
        assert_eq!(median_by(&rates, |r| *r), Some(2.0));
        assert_eq!(median_by(&[] as &[f64], |r| *r), None);
    }

    #[test]
    fn turns_are_shown_with_their_ratios_and_the_median_ratio() {
        let (turns, median) = turn_ratios(&[(90.0, 100.0), (110.0, 100.0), (50.0, 100.0)]);
        assert_eq!(turns, "90 / 100 (0.90), 110 / 100 (1.10), 50 / 100 (0.50)");
        assert_eq!(median, 0.9);
    }
}
