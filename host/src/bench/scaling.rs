//! Several hosts on one town, polyglot plugin load times.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::scratch::{start_named_host, Scratch, Spec};
use super::{ms, BenchOptions};

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
