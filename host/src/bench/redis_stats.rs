//! What Redis says of its own work, for `tt bench scale`: CPU (its children's included),
//! command statistics, clients, whether a background save is running, and (from `/proc`) how
//! long it waited for a CPU.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::scratch::Scratch;
use crate::store::embedded::Embedded;

/// Redis's CPU time (user + system) so far.
pub(super) async fn redis_cpu(s: &Scratch) -> Result<Duration> {
    let mut c = s.town.db.conn.clone();
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut c).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // With its children's: a rewrite of the append-only file runs in a child Redis forks, on
    // the town's behalf (a busy big town writes enough to start one).
    Ok(Duration::from_secs_f64(
        [
            "used_cpu_sys",
            "used_cpu_user",
            "used_cpu_sys_children",
            "used_cpu_user_children",
        ]
        .into_iter()
        .map(field)
        .sum(),
    ))
}

/// The embedded Redis's main thread so far: (ns run, ns runnable but waiting for a CPU), from
/// the scheduler; None where `/proc` does not say.
pub(super) fn redis_sched(s: &Scratch) -> Option<(u64, u64)> {
    Embedded::new(&s.town.config)
        .pid()
        .and_then(crate::store::procfs::schedstat)
}

/// The share of its running time Redis's main thread waited for a CPU between two readings
/// of [`redis_sched`].
pub(super) fn waited(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((r0, w0), (r1, w1)) = (before?, after?);
    (r1 > r0).then(|| w1.saturating_sub(w0) as f64 / (r1 - r0) as f64)
}

/// A share as a percentage, or `n/a`.
pub(super) fn percent(share: Option<f64>) -> String {
    share.map_or("n/a".to_string(), |w| format!("{:.1}%", w * 100.0))
}

/// Starts Redis's command statistics afresh, for [`top_commands`] over a window.
pub(super) async fn reset_stats(s: &Scratch) -> Result<()> {
    let mut c = s.town.db.conn.clone();
    Ok(redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await?)
}

/// The four commands Redis spent most time on since its stats were reset, with their calls.
pub(super) async fn top_commands(s: &Scratch) -> Result<String> {
    let mut c = s.town.db.conn.clone();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    let mut stats: Vec<(u64, u64, String)> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((field("usec")?, field("calls")?, name.to_string()))
        })
        .collect();
    stats.sort_by(|a, b| b.cmp(a));
    Ok(stats
        .iter()
        .take(4)
        .map(|(us, calls, name)| format!("{name} {calls} calls {} ms", us / 1000))
        .collect::<Vec<_>>()
        .join(", "))
}

pub(super) async fn clients(s: &Scratch) -> Result<usize> {
    let mut c = s.town.db.conn.clone();
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut c).await?;
    Ok(list.lines().count())
}

/// Waits (up to a minute) for Redis's background saves to end: a busy run writes enough to
/// start a rewrite of the append-only file, whose child would take a core from what follows.
pub(super) async fn settled(s: &Scratch) -> Result<()> {
    let mut c = s.town.db.conn.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut c)
            .await?;
        let busy = ["aof_rewrite_in_progress:1", "rdb_bgsave_in_progress:1"]
            .iter()
            .any(|f| info.lines().any(|l| l.trim() == *f));
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
