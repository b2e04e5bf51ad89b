//! Latency of one message, cold start, memory per idle agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::scratch::{start_host, Scratch, Spec};
use super::{ms, percentile, rss_kib, BenchOptions};
use crate::store::applier::Op;
use crate::store::model::Kind;
use crate::store::streams;

/// Send-to-applied latency at a steady 1,000 msg/s: a relay forwards each message to a sink
/// mailbox, and the time from the send call to the forward's arrival is measured.
pub(super) async fn latency(opts: &BenchOptions) -> Result<()> {
    // The sink has no plugin: its mailbox is read by the bench itself.
    let s = Scratch::new(
        opts,
        &[("relay", "relay", &[("next", "sink")]), ("sink", "", &[])],
    )
    .await?;
    let (stop, handle) = start_host(&s.town);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = 3000;
    let sink = s.town.db.keys.inbox("sink");
    let mut reader = s.town.db.dedicated(Duration::from_secs(1)).await?;
    let sent_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; n]));
    let sender = {
        let town = s.town.clone();
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            for i in 0..n {
                tick.tick().await;
                sent_at.lock().unwrap()[i] = Some(Instant::now());
                let op = Op::send("relay", Kind::Task, i.to_string());
                town.db.apply_human("conductor", vec![op]).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut lat = Vec::with_capacity(n);
    let mut last = "0-0".to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lat.len() < n && Instant::now() < deadline {
        let entries =
            streams::read_after(&mut reader, &sink, &last, None, Duration::from_millis(200))
                .await?;
        let now = Instant::now();
        for e in entries {
            last = e.id.clone();
            let body = e.text_map().get("body").cloned().unwrap_or_default();
            if let Ok(i) = body.parse::<usize>() {
                if let Some(t) = sent_at.lock().unwrap().get(i).copied().flatten() {
                    lat.push(now - t);
                }
            }
        }
    }
    sender.await.context("sender")??;
    let _ = stop.send(true);
    handle.await??;
    lat.sort();
    println!(
        "send -> applied latency at 1,000 msg/s ({} msgs): p50 {}  p99 {}  max {}   (target p99 < 5 ms)",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    Ok(())
}

/// Time from starting a host until three agents with three different plugins (compiled cache
/// warm) have each handled their first message.
pub(super) async fn cold_start(opts: &BenchOptions) -> Result<()> {
    let agents: [Spec; 3] = [("a", "noop", &[]), ("b", "relay", &[]), ("c", "chaos", &[])];
    let s = Scratch::new(opts, &agents).await?;
    let names: Vec<String> = agents.iter().map(|a| a.0.to_string()).collect();
    // Warm the on-disk cache, as a previous run of the town would have.
    {
        let (stop, handle) = start_host(&s.town);
        s.fill(&names, 1, "ok").await?;
        while !s.drained(&names).await? {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop.send(true);
        handle.await??;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        s.fill(&names, 1, "ok").await?;
        let t = Instant::now();
        let (stop, handle) = start_host(&s.town);
        while !s.drained(&names).await? {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(t.elapsed());
        let _ = stop.send(true);
        handle.await??;
    }
    times.sort();
    println!(
        "cold start, 3 plugins from cache, to 3 handled: median {}  max {}   (target < 300 ms; in-process, new engine each time)",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}

/// Resident memory per idle agent (instance, runner, its own Redis connection).
pub(super) async fn idle_memory(opts: &BenchOptions) -> Result<()> {
    let names: Vec<String> = (0..100).map(|i| format!("i{i}")).collect();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| (n.as_str(), "noop", &[][..]))
        .collect();
    let s = Scratch::new(opts, &specs).await?;
    let (stop, handle) = start_host(&s.town);
    // One message each, so every agent has a live instance, then idle.
    s.fill(&names, 1, "x").await?;
    while !s.drained(&names).await? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss_kib();
    let _ = stop.send(true);
    handle.await??;
    // The same host with a single agent.
    let one = Scratch::new(opts, &[("solo", "noop", &[])]).await?;
    let (stop, handle) = start_host(&one.town);
    one.fill(&["solo".to_string()], 1, "x").await?;
    while !one.drained(&["solo".to_string()]).await? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib();
    let _ = stop.send(true);
    handle.await??;
    let per = (with as f64 - base as f64) / 99.0;
    println!(
        "memory per idle agent (100 vs 1 agent, RSS):   {:.0} KiB   (host RSS with 100 agents: {} MiB)",
        per.max(0.0),
        with / 1024
    );
    Ok(())
}
