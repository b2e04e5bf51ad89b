//! A bench's view of the forwards its relay agents put in the mailbox-only `sink`: waiting for
//! one (latency, a blocking read) or for a whole run of them (counted, not read).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::store::conn::Conn;
use crate::store::streams;

/// How many entries `stream` was ever given (trimming does not lower it).
pub(super) async fn added(conn: &mut Conn, stream: &str) -> Result<u64> {
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await?;
    streams::flat_map(&info)
        .get("entries-added")
        .and_then(streams::int)
        .map(|n| n.max(0) as u64)
        .context("XINFO STREAM says no entries-added (Redis 7.0 or later is needed)")
}

/// Waits until the sink's inbox was given `n` entries after its first `before`, counting every
/// few milliseconds instead of reading them: reading a run's hundred thousand forwards made the
/// bench itself a load on the two cores it measures.
pub(super) async fn counted(conn: &mut Conn, sink: &str, before: u64, n: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = added(conn, sink).await?.saturating_sub(before);
        if seen >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{seen} of {n} forwards arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits for `n` more forwards in the sink's inbox.
pub(super) async fn forwarded(
    reader: &mut Conn,
    sink: &str,
    last: &mut String,
    n: usize,
) -> Result<()> {
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < n {
        anyhow::ensure!(Instant::now() < deadline, "{seen} of {n} forwards arrived");
        let entries =
            streams::read_after(reader, sink, last, Some(10_000), Duration::from_secs(1)).await?;
        if let Some(e) = entries.last() {
            *last = e.id.clone();
        }
        seen += entries.len();
    }
    Ok(())
}
