//! `tt bench swap`: what a policy swap costs the mail that keeps arriving.
//!
//! A relay forwards each message to a sink mailbox that the bench reads; a message is sent
//! every millisecond, and each one's wait, from its send to its forward's arrival, is timed
//! on the bench's clock (µs; the event stream's millisecond stamps would blur it). The relay is
//! swapped sixteen times between two builds (same behaviour, other digests). A pause in
//! handling shows as messages that wait longer; compared are the longest waits of messages
//! sent
//!
//! - across a swap: from the swap's record (the `tt swap` call returning) until 50 ms after
//!   the first message handled on the new version: the host's part, making the new instance
//!   ready beside the old one and switching (`host/runner/switch.rs`);
//! - the same from the call's start, so with the candidate's validation in the window (it
//!   runs in this process, as a CLI would on the same machine, and takes the same cores);
//! - without a swap, same run: in a window of the same length in the quiet stretch after
//!   each swap (a longest wait is a maximum, so it is compared over equal spans of time).
//!
//! Each window's longest wait is taken; the medians of the two sets of windows are compared
//! (a maximum over all of them is decided by the machine's worst hiccup, not by the swap),
//! and their maxima printed beside. The difference is the pause a swap adds (target under 2 ms). On a loaded machine the
//! host's part is mostly the CPU that loading and instantiating the candidate takes from the
//! serving threads: the switch itself is an assignment between two batches. Redis syncs its append-only
//! file every second here, not on every write: the pause is the host's, not the disk's. Also
//! printed: the time from the swap call returning to the first message handled on the new
//! version.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::scratch::{start_host, Scratch};
use super::{ms, percentile, BenchOptions};
use crate::store::applier::Op;
use crate::store::model::Kind;
use crate::store::streams;

const SWAPS: usize = 16;

pub(super) async fn suite(opts: &BenchOptions) -> Result<()> {
    swap_pause(opts).await
}

/// The longest wait of a message sent inside one of `windows`.
fn longest_wait(waits: &[(Instant, Duration)], windows: &[(Instant, Instant)]) -> Duration {
    waits
        .iter()
        .filter(|(sent, _)| windows.iter().any(|(a, b)| sent >= a && sent <= b))
        .map(|(_, wait)| *wait)
        .max()
        .unwrap_or_default()
}

pub(super) async fn swap_pause(opts: &BenchOptions) -> Result<()> {
    let s = Scratch::with(
        opts,
        &[("c", "relay", &[("next", "sink")]), ("sink", "", &[])],
        |c| c.redis.appendfsync = Some("everysec".into()),
    )
    .await?;
    let v1 = opts.plugins.join("relay.wasm");
    let v2 = s.dir.join("relay-v2.wasm");
    let mut bytes = std::fs::read(&v1)?;
    bytes.extend_from_slice(&[0, 10, 8]);
    bytes.extend_from_slice(b"tt-build2");
    std::fs::write(&v2, bytes)?;
    let (stop, handle) = start_host(&s.town);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let sender = {
        let (town, done, sent) = (s.town.clone(), done.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut i = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Instant::now());
                let op = Op::send("c", Kind::Task, i.to_string());
                town.db.apply_human("conductor", vec![op]).await?;
                i += 1;
            }
            anyhow::Ok(())
        })
    };
    let arrivals: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let reader = {
        let (town, done, arrivals) = (s.town.clone(), done.clone(), arrivals.clone());
        tokio::spawn(async move {
            let sink = town.db.keys.inbox("sink");
            let mut conn = town.db.dedicated(Duration::from_secs(1)).await?;
            let mut last = "0-0".to_string();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let block = Duration::from_millis(100);
                let entries = streams::read_after(&mut conn, &sink, &last, None, block).await?;
                let now = Instant::now();
                for e in entries {
                    last = e.id.clone();
                    let body = e.text_map().remove("body").unwrap_or_default();
                    if let Ok(i) = body.parse() {
                        arrivals
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, now));
                    }
                }
            }
            anyhow::Ok(())
        })
    };
    // Each change of the digest handling `c`'s mail, and when it was seen: a follower of the
    // event stream, running the whole time, so watching costs the same in the quiet
    // stretches as across a swap.
    let switches: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let watcher = {
        let (town, done, switches) = (s.town.clone(), done.clone(), switches.clone());
        tokio::spawn(async move {
            let mut follow = town.follow(None, Duration::from_millis(100)).await?;
            let mut serving = String::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for e in follow.next().await? {
                    let f = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
                    if f("type") == "handled" && f("agent") == "c" && f("digest") != serving {
                        serving = f("digest");
                        switches
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((serving.clone(), Instant::now()));
                    }
                }
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut swapping, mut validating) = (Vec::new(), Vec::new());
    let (mut quiet, mut to_first) = (Vec::new(), Vec::new());
    for i in 0..SWAPS {
        let file = if i % 2 == 0 { &v2 } else { &v1 };
        let began = Instant::now();
        let before = switches.lock().unwrap_or_else(|p| p.into_inner()).len();
        let digest = crate::host::swap::swap(&s.town, "c", file, false)
            .await?
            .to_string();
        let returned = Instant::now();
        let switched = loop {
            let seen = switches.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some((_, at)) = seen[before.min(seen.len())..]
                .iter()
                .find(|(d, _)| *d == digest)
            {
                break *at;
            }
            anyhow::ensure!(
                returned.elapsed() < Duration::from_secs(10),
                "swap to {digest} never took effect"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        to_first.push(switched - returned);
        swapping.push((returned, switched + Duration::from_millis(50)));
        validating.push((began, switched + Duration::from_millis(50)));
        let span = switched + Duration::from_millis(50) - returned;
        let calm = Instant::now() + Duration::from_millis(200);
        quiet.push((calm, calm + span));
        tokio::time::sleep(Duration::from_millis(200) + span + Duration::from_millis(200)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.context("sender")??;
    reader.await.context("reader")??;
    watcher.await.context("watcher")??;
    let _ = stop.send(true);
    handle.await??;
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let waits: Vec<(Instant, Duration)> = arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|(i, at)| sent.get(*i).map(|s| (*s, *at - *s)))
        .collect();
    // Per window, its longest wait; compared by their medians (one hiccup of the machine in
    // one window does not decide it) and by their maxima.
    let per_window = |windows: &[(Instant, Instant)]| {
        let mut v: Vec<Duration> = windows
            .iter()
            .map(|w| longest_wait(&waits, std::slice::from_ref(w)))
            .collect();
        v.sort();
        v
    };
    let (across, validated, without) = (
        per_window(&swapping),
        per_window(&validating),
        per_window(&quiet),
    );
    let median = |v: &[Duration]| percentile(v, 0.5);
    let max = |v: &[Duration]| v.last().copied().unwrap_or_default();
    to_first.sort();
    println!(
        "swap pause, a relay at 1,000 msg/s, {SWAPS} swaps: longest wait of a message per window, \
         median / max: across a swap {} / {} (from the call's start, validation included: {} / \
         {}), without a swap, same run, windows of the same length {} / {}: the swap adds {} \
         (median)   (target < 2 ms)",
        ms(median(&across)),
        ms(max(&across)),
        ms(median(&validated)),
        ms(max(&validated)),
        ms(median(&without)),
        ms(max(&without)),
        ms(median(&across).saturating_sub(median(&without)))
    );
    println!(
        "swap: call returned -> first message on the new version: median {}  max {}",
        ms(percentile(&to_first, 0.5)),
        ms(to_first.last().copied().unwrap_or_default())
    );
    Ok(())
}
