//! `tt bench replay`: what the journal costs the host, and how fast a candidate replays.
//!
//! - The journal's cost: the host figure (10 no-op agents) with the journal on (the default)
//!   and off (`[retention] journal = 0`), interleaved, in the same run; and the CPU per
//!   message of the host and of Redis, which a machine shared with other work blurs less.
//! - The replay rate: a reviewer's journal of 10,000 handlings (20 real review requests served
//!   by a host, their entries repeated), replayed on the same plugin, for the Rust and the
//!   Python reviewer.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::scratch::{start_host, Scratch, Spec};
use super::BenchOptions;
use crate::host::replay::{replay, ReplayOptions};
use crate::store::applier::Op;

pub(super) async fn suite(opts: &BenchOptions) -> Result<()> {
    journal_cost(opts).await?;
    for plugin in ["reviewer", "reviewer-py"] {
        replay_rate(opts, plugin).await?;
    }
    Ok(())
}

/// Messages per second, and CPU µs per message of the host and of Redis.
async fn host_figure(opts: &BenchOptions, journal: u64) -> Result<(f64, f64, f64)> {
    let f = super::throughput::host_figure_measured(opts, 10, |c| c.retention.journal = journal)
        .await?;
    let n = f.messages as f64;
    Ok((
        n / f.elapsed.as_secs_f64(),
        f.host_cpu * 1e6 / n,
        f.redis_cpu * 1e6 / n,
    ))
}

async fn journal_cost(opts: &BenchOptions) -> Result<()> {
    const RUNS: usize = 3;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        off.push(host_figure(opts, 0).await?);
        on.push(host_figure(opts, 1_000).await?);
    }
    let mean = |v: &[(f64, f64, f64)], f: fn(&(f64, f64, f64)) -> f64| {
        v.iter().map(f).sum::<f64>() / v.len() as f64
    };
    let (a, b) = (mean(&on, |x| x.0), mean(&off, |x| x.0));
    println!(
        "journal cost, tt host with 10 no-op agents: journal on {a:.0} msg/s, off {b:.0} msg/s \
         (same run, {RUNS} runs each, interleaved): {:.1}% slower   (target < 10%)",
        (1.0 - a / b) * 100.0
    );
    let (ha, hb) = (mean(&on, |x| x.1), mean(&off, |x| x.1));
    let (ra, rb) = (mean(&on, |x| x.2), mean(&off, |x| x.2));
    println!(
        "journal cost in CPU per message: host {ha:.0} µs on, {hb:.0} µs off; Redis {ra:.1} µs \
         on, {rb:.1} µs off; together {:.1}% more",
        ((ha + ra) / (hb + rb) - 1.0) * 100.0
    );
    Ok(())
}

async fn replay_rate(opts: &BenchOptions, plugin: &str) -> Result<()> {
    if !opts.plugins.join(format!("{plugin}.wasm")).exists() {
        println!("replay rate, {plugin}: not built (bash plugins/build.sh)");
        return Ok(());
    }
    let specs: Vec<Spec> = vec![
        ("owner", "", &[][..]),
        ("r", plugin, &[("program", "/bin/true")][..]),
    ];
    let s = Scratch::with(opts, &specs, |c| {
        let exec: toml::Value = toml::from_str("allow = [\"/bin/true\"]").expect("literal");
        if let Some(a) = c.agents.get_mut("r") {
            a.grants.insert("exec".into(), exec);
        }
        c.retention.journal = 20_000;
    })
    .await?;
    for i in 0..20 {
        let id = s.town.assign("owner", "work", None).await?;
        let op = Op::RequestReview {
            task: id,
            reviewer: "r".into(),
            body: format!("work {i}"),
        };
        s.town.db.apply_ops("owner", vec![op]).await?;
    }
    let (stop, handle) = start_host(&s.town);
    while s.town.db.journal_read("r", 100).await?.len() < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    handle.await??;
    let real = s.town.db.journal_read("r", 100).await?;
    for i in 0..(10_000 - real.len()) {
        let (_, e) = &real[i % real.len()];
        s.town.db.journal_append("r", e, 20_000).await?;
    }
    let path = opts.plugins.join(format!("{plugin}.wasm"));
    let options = ReplayOptions::default();
    // Once to compile (cached after), then timed.
    replay(
        &s.town,
        "r",
        &path.to_string_lossy(),
        &ReplayOptions {
            last: 1,
            ..Default::default()
        },
    )
    .await?;
    let t = Instant::now();
    let report = replay(&s.town, "r", &path.to_string_lossy(), &options).await?;
    let el = t.elapsed();
    let target = if plugin == "reviewer" { 20_000 } else { 2_000 };
    println!(
        "replay rate, {plugin} on its own journal: {:.0} handlings/s ({} handlings in {:.2} s, \
         {} the same)   (target >= {target})",
        report.handlings as f64 / el.as_secs_f64(),
        report.handlings,
        el.as_secs_f64(),
        report.same
    );
    Ok(())
}
