//! A throwaway town under /tmp with its own embedded Redis, and hosts serving it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;

use super::BenchOptions;
use crate::host::{self, HostOptions};
use crate::store::applier::Op;
use crate::store::config::{AgentSection, Config};
use crate::store::embedded::Embedded;
use crate::store::model::Kind;
use crate::town::Town;

/// The most messages [`Scratch::fill`] sends in one applier call.
pub(super) const FILL_OPS: usize = 500;

/// The recipient of each of `n` messages to every one of `agents`, in the order
/// [`Scratch::fill`] sends them: blocks of 500 messages to each agent in turn.
pub(super) fn fill_order<T>(agents: &[T], n: usize) -> impl Iterator<Item = &T> {
    (0..n).step_by(500).flat_map(move |start| {
        let block = (n - start).min(500);
        agents
            .iter()
            .flat_map(move |a| std::iter::repeat_n(a, block))
    })
}

/// An agent of a scratch town: name, plugin (file stem in plugins/dist; empty for a
/// mailbox-only agent), init config.
pub(super) type Spec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// A throwaway town; its Redis stops and its directory goes when dropped.
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
    pub(super) town: Arc<Town>,
}

impl Scratch {
    pub(super) async fn new(opts: &BenchOptions, agents: &[Spec<'_>]) -> Result<Scratch> {
        Scratch::with(opts, agents, |_| {}).await
    }

    /// [`Scratch::new`], with the config changed by `tweak` before the town opens.
    pub(super) async fn with(
        opts: &BenchOptions,
        agents: &[Spec<'_>],
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Scratch> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ttb{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut config = Config::new("bench", &dir);
        config.redis.appendfsync = Some(opts.appendfsync.clone());
        for (name, plugin, cfg) in agents {
            config.agents.insert(
                name.to_string(),
                AgentSection {
                    role: Some(
                        if plugin.is_empty() {
                            "mailbox"
                        } else {
                            "bench"
                        }
                        .into(),
                    ),
                    // The bench's roles keep no state: any host may serve them.
                    mode: crate::store::config::ServeMode::Shared,
                    // An empty plugin name makes a mailbox-only agent.
                    plugin: (!plugin.is_empty())
                        .then(|| opts.plugins.join(format!("{plugin}.wasm"))),
                    config: cfg
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                },
            );
        }
        tweak(&mut config);
        config.save()?;
        let town = Arc::new(Town::open(&dir).await?);
        // From here on, dropping the scratch town stops its Redis, whatever fails next.
        let scratch = Scratch { dir, town };
        for (name, plugin, _) in agents {
            // Without a plugin: a mailbox the bench itself reads, not an agent left unserved.
            let role = if plugin.is_empty() {
                "mailbox"
            } else {
                "bench"
            };
            scratch.town.spawn(name, role, None, None).await?;
        }
        Ok(scratch)
    }

    pub(super) fn socket(&self) -> PathBuf {
        Embedded::new(&self.town.config).socket()
    }

    /// Sends `n` messages to each of `agents`: for each block of up to 500 rounds, every
    /// agent's messages of the block together, in applier calls of at most [`FILL_OPS`]
    /// messages whatever the number of agents. A town of 10,000 agents is filled in calls of
    /// the same size as one of 10, so its first agents do not wait for the last one's mail.
    pub(super) async fn fill(&self, agents: &[String], n: usize, body: &str) -> Result<()> {
        let mut ops = Vec::new();
        for a in fill_order(agents, n) {
            ops.push(Op::send(a, Kind::Task, body));
            if ops.len() == FILL_OPS {
                self.town
                    .db
                    .apply_human("conductor", std::mem::take(&mut ops))
                    .await?;
            }
        }
        if !ops.is_empty() {
            self.town.db.apply_human("conductor", ops).await?;
        }
        Ok(())
    }

    /// True when every mailbox of `agents` is empty. Polls gently: the bench must not be what
    /// loads Redis.
    pub(super) async fn drained(&self, agents: &[String]) -> Result<bool> {
        tokio::time::sleep(Duration::from_millis(agents.len() as u64 / 4)).await;
        for a in agents {
            if self.town.mailbox_depth(a).await? != (0, 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Embedded::new(&self.town.config).stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn start_host(
    town: &Arc<Town>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>) {
    start_named_host(town, "bench")
}

pub(super) fn start_named_host(
    town: &Arc<Town>,
    name: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>) {
    let (tx, rx) = watch::channel(false);
    let opts = HostOptions {
        name: name.into(),
        until_idle: false,
        agents: vec![],
    };
    let handle = tokio::spawn(host::run_until(town.clone(), opts, tx.clone(), rx));
    (tx, handle)
}

#[cfg(test)]
mod tests {
    use super::fill_order;

    #[test]
    fn the_fill_sends_blocks_of_500_to_each_agent_in_turn() {
        let order = |n| fill_order(&['a', 'b'], n).collect::<String>();
        assert_eq!(order(3), "aaabbb");
        let long = order(1_200);
        let runs: Vec<(char, usize)> = long.chars().fold(Vec::new(), |mut runs, c| {
            match runs.last_mut() {
                Some((last, k)) if *last == c => *k += 1,
                _ => runs.push((c, 1)),
            }
            runs
        });
        assert_eq!(
            runs,
            [
                ('a', 500),
                ('b', 500),
                ('a', 500),
                ('b', 500),
                ('a', 200),
                ('b', 200)
            ]
        );
    }
}
