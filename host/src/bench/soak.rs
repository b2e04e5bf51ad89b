//! `tt bench soak`: a week of traffic in minutes. Messages go through ten no-op agents in rounds
//! with the default retention policy, and Redis's `used_memory` is printed as it goes: after a
//! warm-up (the capped streams full), what stays per message must be near zero. The same-run
//! baselines: the plain `tt bench` host figure, and the same rounds with no retention sweep
//! (a fifth as many messages), so the sweep's cost shows apart from the rounds' own.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::scratch::{start_host, Scratch, Spec};
use super::BenchOptions;

const AGENTS: usize = 10;
const ROUND: usize = 10_000;

pub(super) async fn soak(opts: &BenchOptions) -> Result<()> {
    let total = (opts.messages * 25).max(ROUND * 10);
    // The same-run baselines: the plain host figure, and these rounds with no sweep.
    super::throughput::host_throughput(opts, AGENTS).await?;
    let unswept = rounds(opts, total / 5, false).await?;
    let swept = rounds(opts, total, true).await?;
    println!(
        "soak: {swept:.0} msg/s with the retention sweep, {unswept:.0} msg/s without it: {:.0}% \
         (target >= 90%)",
        100.0 * swept / unswept
    );
    Ok(())
}

/// Runs `total` messages in rounds; prints memory as it goes (when `sweep`); returns msg/s.
async fn rounds(opts: &BenchOptions, total: usize, sweep: bool) -> Result<f64> {
    let names: Vec<String> = (0..AGENTS).map(|i| format!("s{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    let s = Scratch::new_with(opts, &specs, |c| {
        if !sweep {
            c.retention.sweep_ms = u64::MAX / 2;
        }
    })
    .await?;
    let (stop, handle) = start_host(&s.town);
    let start_mem = s.town.db.memory().await?.used;
    println!(
        "soak: {total} messages through {AGENTS} no-op agents in rounds of {ROUND}, {}; Redis \
         used_memory at start {:.1} MB",
        if sweep {
            "default [retention]"
        } else {
            "no retention sweep"
        },
        start_mem as f64 / 1e6
    );
    let warm_up = total / 5;
    let settle = Duration::from_millis(s.town.config.retention.sweep_ms.min(60_000) + 200);
    let (mut sent, mut busy) = (0usize, Duration::ZERO);
    let mut at_warm_up = None;
    let mut last_print = 0;
    while sent < total {
        let t = Instant::now();
        s.fill(&names, ROUND / AGENTS, "x").await?;
        while !s.drained(&names).await? {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        busy += t.elapsed();
        sent += ROUND;
        if sent >= warm_up && at_warm_up.is_none() {
            // Let a sweep pass, so the trimmed streams are at their steady size.
            if sweep {
                tokio::time::sleep(settle).await;
            }
            at_warm_up = Some((sent, s.town.db.memory().await?.used));
        }
        if sent - last_print >= total / 10 {
            last_print = sent;
            println!(
                "  {sent:>8} messages: used_memory {:>6.1} MB, {:.0} msg/s so far",
                s.town.db.memory().await?.used as f64 / 1e6,
                sent as f64 / busy.as_secs_f64()
            );
        }
    }
    if sweep {
        tokio::time::sleep(settle).await;
    }
    let end = s.town.db.memory().await?.used;
    let _ = stop.send(true);
    handle.await??;
    let (warm_sent, warm_mem) = at_warm_up.unwrap_or((0, start_mem));
    let per_message = (end as f64 - warm_mem as f64) / (total - warm_sent).max(1) as f64;
    let rate = total as f64 / busy.as_secs_f64();
    println!(
        "soak: {rate:.0} msg/s sustained (sending included); retained after warm-up \
         ({warm_sent} messages): {per_message:.1} bytes/message{}, used_memory {:.1} -> {:.1} MB",
        if sweep { " (target < 20)" } else { "" },
        warm_mem as f64 / 1e6,
        end as f64 / 1e6
    );
    Ok(rate)
}
