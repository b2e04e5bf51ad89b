//! Several hosts on one town, swap latency, polyglot plugin load times.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::scratch::{start_host, start_named_host, Scratch, Spec};
use super::{ms, percentile, BenchOptions};
use crate::store::applier::Op;
use crate::store::model::Kind;

/// Throughput of 10 no-op agents served by 1, 2 or 3 hosts (in one process, so on two cores the
/// gain is small; what matters is that it does not fall and nothing is lost).
pub(super) async fn several_hosts(opts: &BenchOptions, hosts: usize) -> Result<()> {
    let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    let s = Scratch::new(opts, &specs).await?;
    let per_agent = (opts.messages / 10).max(200);
    s.fill(&names, per_agent, "x").await?;
    let t = Instant::now();
    let running: Vec<_> = (0..hosts)
        .map(|i| start_named_host(&s.town, &format!("h{i}")))
        .collect();
    while !s.drained(&names).await? {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let el = t.elapsed();
    for (stop, handle) in running {
        let _ = stop.send(true);
        handle.await??;
    }
    let mut c = s.town.db.conn.clone();
    let handled: u64 = redis::cmd("XLEN")
        .arg(s.town.db.keys.events())
        .query_async(&mut c)
        .await?;
    println!(
        "{hosts} host(s), 10 agents:                         {:.0} msg/s ({} messages in {:.2} s; events {handled})",
        (per_agent * 10) as f64 / el.as_secs_f64(),
        per_agent * 10,
        el.as_secs_f64()
    );
    Ok(())
}

/// How long from `tt swap` returning until the first message runs on the new version, and the
/// longest gap in handling around a swap, with messages arriving at 500/s.
pub(super) async fn swap_latency(opts: &BenchOptions) -> Result<()> {
    let s = Scratch::new(opts, &[("c", "chaos", &[])]).await?;
    let v1 = opts.plugins.join("chaos.wasm");
    let v2 = s.dir.join("chaos-v2.wasm");
    let mut bytes = std::fs::read(&v1)?;
    bytes.extend_from_slice(&[0, 10, 8]);
    bytes.extend_from_slice(b"tt-build2");
    std::fs::write(&v2, bytes)?;
    let (stop, handle) = start_host(&s.town);
    let sender = {
        let town = s.town.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            for _ in 0..2500 {
                tick.tick().await;
                town.db
                    .apply_human("conductor", vec![Op::send("c", Kind::Task, "ok")])
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for i in 0..8 {
        let file = if i % 2 == 0 { &v2 } else { &v1 };
        let digest = crate::host::swap::swap(&s.town, "c", file, false)
            .await?
            .to_string();
        let t = Instant::now();
        loop {
            let events = s.town.events(20, Some("c")).await?;
            if events.iter().any(|e| {
                e.fields.get("type").map(String::as_str) == Some("handled")
                    && e.fields.get("digest") == Some(&digest)
            }) {
                latencies.push(t.elapsed());
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("swap to {digest} never took effect");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sender.await??;
    let _ = stop.send(true);
    handle.await??;
    // The longest gap between two handled messages, over the whole run.
    let events = s.town.events(20_000, Some("c")).await?;
    let ts: Vec<u64> = events
        .iter()
        .filter(|e| e.fields.get("type").map(String::as_str) == Some("handled"))
        .filter_map(|e| e.fields.get("ts")?.parse().ok())
        .collect();
    let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    latencies.sort();
    println!(
        "swap: command to first message on the new version: median {}  max {}; longest pause in handling {gap} ms (messages every 2 ms)",
        ms(percentile(&latencies, 0.5)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}

/// Loading the heavy (Python, JavaScript) reviewers: compiling versus from the on-disk cache.
pub(super) fn polyglot_load(opts: &BenchOptions) -> Result<()> {
    for name in ["reviewer-py", "reviewer-js", "reviewer-c", "reviewer"] {
        let path = opts.plugins.join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            println!("load {name}: not built (bash plugins/build.sh)");
            continue;
        };
        let cache = std::env::temp_dir().join(format!("ttb-cache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let cold = {
            let rt = crate::runtime::Runtime::new(Some(cache.clone()), false)?;
            let t = Instant::now();
            rt.compile(&path, &bytes)?;
            t.elapsed()
        };
        let warm = {
            let rt = crate::runtime::Runtime::new(Some(cache.clone()), false)?;
            let t = Instant::now();
            let (_, _, from_cache) = rt.compile(&path, &bytes)?;
            anyhow::ensure!(from_cache, "{name} was not loaded from the cache");
            t.elapsed()
        };
        let _ = std::fs::remove_dir_all(&cache);
        println!(
            "load {name:<12} ({:>5.1} MB): compile {:>9}, from cache {:>8}",
            bytes.len() as f64 / 1e6,
            ms(cold),
            ms(warm)
        );
    }
    Ok(())
}
