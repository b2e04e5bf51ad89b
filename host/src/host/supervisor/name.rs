//! This process's host name: claiming it (refusing a second live process under the same name,
//! taking it over at once from one that crashed) and the heartbeat that says what it serves.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use anyhow::Result;
use redis::AsyncCommands;
use serde_json::json;

use super::{blocked, Runners};
use crate::store::model::now_ms;
use crate::store::procfs;
use crate::town::Town;

/// Claims host name `name` for this process (instance `instance`), or refuses naming the live
/// process that holds it. A holder whose heartbeat says it ran on this machine with a pid that
/// is gone has crashed: its claim is taken at once, so a restart after a crash is not delayed.
pub(in crate::host) async fn claim_name(town: &Town, name: &str, instance: &str) -> Result<()> {
    let ttl = town.config.host.lease();
    let Some(other) = town.db.claim_host(name, instance, None, ttl).await? else {
        return Ok(());
    };
    let mut c = town.db.conn.clone();
    let beat: Option<String> = c.hget(town.db.keys.hosts(), name).await?;
    let beat: serde_json::Value = beat
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or_default();
    let pid = beat["pid"].as_i64().unwrap_or(0) as i32;
    let here = beat["machine"].as_str() == Some(super::super::default_host_name().as_str());
    let crashed = beat["instance"].as_str() == Some(other.as_str())
        && here
        && pid > 0
        && !alive(pid, beat["pid_start"].as_u64());
    if crashed
        && town
            .db
            .claim_host(name, instance, Some(&other), ttl)
            .await?
            .is_none()
    {
        tracing::info!(
            host = name,
            "took over the name from a process that is gone (pid {pid})"
        );
        return Ok(());
    }
    let who = match beat["seen_ms"].as_u64() {
        Some(seen) => format!(
            "pid {} on {}, last heartbeat {} ms ago",
            beat["pid"],
            beat["machine"].as_str().unwrap_or("?"),
            now_ms().saturating_sub(seen)
        ),
        None => format!("instance {other}, no heartbeat yet"),
    };
    Err(crate::store::error::fail(
        format!("host name `{name}` is in use by another live `tt host` ({who})"),
        format!(
            "stop that one first, or start this one with --name OTHER; a claim lapses {} ms \
             after its process stops renewing it",
            ttl.as_millis()
        ),
    ))
}

/// Whether process `pid` runs: it exists, is not a zombie (killed, not yet reaped) and, when
/// `start` is known, is the process that started then: a pid reused by another process, or by
/// a thread of one (busy machines cycle through pids fast), is not it.
fn alive(pid: i32, start: Option<u64>) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM };
    let fields = procfs::stat(pid).unwrap_or_default();
    let zombie = procfs::ended(&fields);
    let same = start.is_none_or(|s| fields.get(19).and_then(|f| f.parse::<u64>().ok()) == Some(s));
    exists && !zombie && same
}

/// When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_ticks(pid: i32) -> Option<u64> {
    procfs::stat(pid)?.get(19)?.parse().ok()
}

/// The counts of the agents a host serves as they were last written to [`Keys::served`]
/// (`None` until a write of them all succeeds): each beat writes only what changed since, so an
/// idle host's beat costs the same with ten agents or ten thousand.
///
/// [`Keys::served`]: crate::store::keys::Keys::served
#[derive(Default)]
pub(in crate::host) struct Served(Option<HashMap<String, u64>>);

/// Writes the heartbeat (a few fields, however many agents) and the changes of the served
/// counts, in one round trip. A failed write leaves the counts unknown: the next beat writes
/// them all again.
pub(super) async fn write_heartbeat(
    town: &Town,
    (host, instance): (&str, &str),
    started: u64,
    runners: &Runners,
    instances: usize,
    served: &mut Served,
) {
    let key = town.db.keys.served(host);
    let mut p = redis::pipe();
    if served.0.is_none() {
        p.del(&key).ignore();
    }
    let written = served.0.as_ref();
    let (mut serving, mut handled) = (0u64, 0u64);
    let mut changed: Vec<(String, u64)> = Vec::new();
    for (name, (a, _)) in runners.iter().filter(|(_, (a, _))| a.serving()) {
        let n = a.handled.load(Ordering::Relaxed);
        (serving, handled) = (serving + 1, handled + n);
        if written.and_then(|w| w.get(name)) != Some(&n) {
            changed.push((name.clone(), n));
        }
    }
    let gone: Vec<String> = written
        .into_iter()
        .flat_map(|w| w.keys())
        .filter(|n| !runners.get(*n).is_some_and(|(a, _)| a.serving()))
        .cloned()
        .collect();
    for chunk in changed.chunks(1000) {
        p.hset_multiple(&key, chunk).ignore();
    }
    if !gone.is_empty() {
        p.hdel(&key, &gone).ignore();
    }
    // What `tt status` marks: the agents this host cannot serve, and why.
    let blocked: BTreeMap<&String, String> = runners
        .iter()
        .filter_map(|(n, (a, _))| Some((n, blocked(a)?)))
        .collect();
    let beat = json!({
        "name": host, "instance": instance, "machine": super::super::default_host_name(),
        "pid": std::process::id(), "pid_start": start_ticks(std::process::id() as i32),
        "started_ms": started, "seen_ms": now_ms(),
        "serving": serving, "handled": handled, "blocked": blocked, "instances": instances,
    });
    p.hset(town.db.keys.hosts(), host, beat.to_string())
        .ignore();
    let mut c = town.db.conn.clone();
    if p.query_async::<()>(&mut c).await.is_err() {
        served.0 = None;
        return;
    }
    let w = served.0.get_or_insert_with(HashMap::new);
    for n in &gone {
        w.remove(n);
    }
    w.extend(changed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_not_the_process_that_claimed_the_name() {
        let me = std::process::id() as i32;
        let start = start_ticks(me);
        assert!(start.is_some());
        assert!(alive(me, start));
        assert!(alive(me, None));
        assert!(!alive(me, start.map(|s| s + 1)));
        assert!(!alive(i32::MAX, None));
    }
}
