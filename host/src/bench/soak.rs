//! `tt bench soak`: a week of traffic in minutes. 500,000 messages go through ten no-op agents
//! with the default retention policy, in rounds measured the way `tt bench`'s host figure is:
//! the round's messages are sent with no host running, then a host starts and the time until
//! they are all handled is taken (start included). Redis's `used_memory` is printed after each
//! round: after a warm-up (the capped streams full), what stays per message must be near zero,
//! and the rounds' throughput must hold against the plain host figure of the same run.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::scratch::{start_host, Scratch, Spec};
use super::BenchOptions;

const AGENTS: usize = 10;
const ROUNDS: usize = 10;

pub(super) async fn soak(opts: &BenchOptions) -> Result<()> {
    let total = (opts.messages * 25).max(ROUNDS * 1_000);
    let round = total / ROUNDS;
    let names: Vec<String> = (0..AGENTS).map(|i| format!("s{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    // The same-run baseline: the plain host figure (20,000 messages by default).
    super::throughput::host_throughput(opts, AGENTS).await?;
    let s = Scratch::new(opts, &specs).await?;
    let start_mem = s.town.db.memory().await?.used;
    println!(
        "soak: {total} messages through {AGENTS} no-op agents in {ROUNDS} rounds, default \
         [retention]; Redis used_memory at start {:.1} MB",
        start_mem as f64 / 1e6
    );
    let (mut busy, mut after) = (Duration::ZERO, Vec::new());
    for r in 1..=ROUNDS {
        s.fill(&names, round / AGENTS, "x").await?;
        let t = Instant::now();
        let (stop, handle) = start_host(&s.town);
        while !s.drained(&names).await? {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let el = t.elapsed();
        busy += el;
        // A sweep runs as each host starts and every sweep_ms; one more before stopping.
        tokio::time::sleep(Duration::from_millis(
            s.town.config.retention.sweep_ms.min(10_000) + 200,
        ))
        .await;
        let _ = stop.send(true);
        handle.await??;
        let used = s.town.db.memory().await?.used;
        after.push(used);
        println!(
            "  round {r:>2}: {:>7} messages handled, {:.0} msg/s, used_memory {:.1} MB",
            r * round,
            round as f64 / el.as_secs_f64(),
            used as f64 / 1e6
        );
    }
    // Warm-up: the first fifth (the event stream and mailbox histories fill to their caps).
    let warm = ROUNDS / 5;
    let grew = after[ROUNDS - 1] as f64 - after[warm - 1] as f64;
    let per_message = grew / ((ROUNDS - warm) * round) as f64;
    println!(
        "soak: {:.0} msg/s over all rounds (start included, as the host figure above); retained \
         after warm-up: {per_message:.1} bytes/message (target < 20), used_memory {:.1} -> \
         {:.1} MB",
        total as f64 / busy.as_secs_f64(),
        after[warm - 1] as f64 / 1e6,
        after[ROUNDS - 1] as f64 / 1e6
    );
    Ok(())
}
