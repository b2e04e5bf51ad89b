//! Redis alone, for `tt bench scale`: how much of the big town's busy throughput against the
//! 10-agent town's is Redis's own.
//!
//! Two servers started as a town's are (the embedded Redis, its settings and its append-only
//! file, but no town in them and no host) take the busy runs' mail through bare mailboxes: each
//! message appended (`XADD`, in the order and calls the bench fills the towns' mailboxes), read
//! through the mailbox's consumer group as a host reads (`XREADGROUP`, 64 a stream and call)
//! and settled as the applier settles it (`XPENDING` of the entry, `XACK`). One server has as
//! many mailboxes as the big town has agents, the other 10; both hold the same entries in all,
//! so what differs is only how many streams they are spread over. The runs are taken in turns
//! beside the towns' own and reported the same way: each turn's pair, its ratio, the median of
//! the ratios. A town costs Redis several times more a message than this (scripts, events,
//! journals, the forward to the next agent), so this is a floor of what the number of mailboxes
//! costs Redis, not the whole of it.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::redis_stats::{redis_cpu, settled};
use super::scratch::{fill_order, Scratch, FILL_OPS};
use super::{median_by, turn_ratios, BenchOptions};
use crate::store::streams;

/// A server holding `streams` mailboxes and nothing else.
struct Server {
    s: Scratch,
    /// (agent, its mailbox's key)
    streams: Vec<(String, String)>,
    /// The `id` field of the next entry, as the applier numbers messages.
    seq: u64,
}

/// One run: messages a second and Redis's CPU per message (its children's included).
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    cpu: Duration,
}

/// The two servers and their runs so far.
pub(super) struct Alone {
    big: Server,
    small: Server,
    turns: Vec<(Run, Run)>,
}

impl Alone {
    /// Both servers, each given `first` messages (the towns' first mail) before any turn.
    pub(super) async fn start(opts: &BenchOptions, n: usize, first: usize) -> Result<Alone> {
        let mut a = Alone {
            big: Server::start(opts, n).await?,
            small: Server::start(opts, 10).await?,
            turns: Vec::new(),
        };
        a.big.mail(first).await?;
        a.small.mail(first).await?;
        Ok(a)
    }

    /// One turn: `total` messages to each server, the 10 streams first as in the towns' turns.
    pub(super) async fn turn(&mut self, total: usize) -> Result<()> {
        let small = self.small.mail(total).await?;
        let big = self.big.mail(total).await?;
        self.turns.push((big, small));
        Ok(())
    }

    /// Its lines of the report: the medians, CPU per message, the turns and the median ratio.
    pub(super) fn report(&self, n: usize) {
        let (bigs, smalls): (Vec<Run>, Vec<Run>) = self.turns.iter().copied().unzip();
        let (Some(big), Some(small)) =
            (median_by(&bigs, |r| r.rate), median_by(&smalls, |r| r.rate))
        else {
            return;
        };
        let pairs = |f: fn(&Run) -> f64| -> Vec<(f64, f64)> {
            self.turns.iter().map(|(b, s)| (f(b), f(s))).collect()
        };
        let (turns, ratio) = turn_ratios(&pairs(|r| r.rate));
        let (_, cpu_ratio) = turn_ratios(&pairs(|r| r.cpu.as_secs_f64()));
        println!(
            "  Redis alone, the same mail through {n} bare mailboxes / 10 (appended, read by a \
             group, acknowledged; no town, no host): {:.0} / {:.0} msg/s, CPU per message \
             {:.2} / {:.2} µs (median of the turns' ratios {:.2})",
            big.rate,
            small.rate,
            big.cpu.as_secs_f64() * 1e6,
            small.cpu.as_secs_f64() * 1e6,
            cpu_ratio
        );
        println!("    turns: {turns}; median ratio {ratio:.2}");
    }
}

impl Server {
    async fn start(opts: &BenchOptions, n: usize) -> Result<Server> {
        let s = Scratch::new(opts, &[]).await?;
        let streams = (0..n)
            .map(|i| {
                let name = format!("r{i:05}");
                let key = s.town.db.keys.inbox(&name);
                (name, key)
            })
            .collect();
        let server = Server { s, streams, seq: 0 };
        let mut groups = Batch::new(server.s.town.db.conn.clone());
        for (_, key) in &server.streams {
            groups
                .cmd("XGROUP")
                .arg(&["CREATE", key, GROUP, "0", "MKSTREAM"]);
            groups.sent().await?;
        }
        groups.flush().await?;
        Ok(server)
    }

    /// `total` messages through the mailboxes: appended, then read and acknowledged.
    async fn mail(&mut self, total: usize) -> Result<Run> {
        settled(&self.s).await?;
        let (cpu0, t) = (redis_cpu(&self.s).await?, Instant::now());
        let sent = self.append(total).await?;
        self.consume().await?;
        let rate = sent as f64 / t.elapsed().as_secs_f64();
        let cpu = redis_cpu(&self.s).await?.saturating_sub(cpu0) / sent;
        Ok(Run { rate, cpu })
    }

    /// `total` messages spread evenly over the streams, in [`Scratch::fill`]'s order and
    /// calls: a pipeline of at most [`FILL_OPS`] entries a round trip. Returns how many.
    async fn append(&mut self, total: usize) -> Result<u32> {
        let per = total.div_ceil(self.streams.len());
        let mut pipe = Batch::new(self.s.town.db.conn.clone());
        for (name, stream) in fill_order(&self.streams, per) {
            self.seq += 1;
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg(&["id", &format!("m{}", self.seq), "from", "conductor", "to"])
                .arg(name)
                .arg(&["kind", "task", "body", "x", "prio", "normal", "task", ""])
                .arg(&["corr", "", "ts", "0"]);
            pipe.sent().await?;
        }
        pipe.flush().await?;
        Ok((per * self.streams.len()) as u32)
    }

    /// Reads every mailbox through its consumer group as a host does (at most [`READ`] entries
    /// a stream and call), and settles each entry as the applier does (`XPENDING` of the entry,
    /// then `XACK`), until every mailbox is read.
    async fn consume(&mut self) -> Result<()> {
        let mut c = self.s.town.db.conn.clone();
        let mut open: Vec<&String> = self.streams.iter().map(|(_, k)| k).collect();
        while !open.is_empty() {
            let mut full = Vec::new();
            let mut acks = Batch::new(c.clone());
            for chunk in open.chunks(FILL_OPS) {
                let mut reads = redis::pipe();
                for key in chunk {
                    reads
                        .cmd("XREADGROUP")
                        .arg(&["GROUP", GROUP, "bench", "COUNT"])
                        .arg(READ)
                        .arg(&["STREAMS", key.as_str(), ">"]);
                }
                let replies: Vec<redis::Value> = reads.query_async(&mut c).await?;
                for (key, reply) in chunk.iter().zip(&replies) {
                    let entries: Vec<_> = streams::read_reply(reply)
                        .into_iter()
                        .flat_map(|(_, e)| e)
                        .collect();
                    if entries.len() == READ {
                        full.push(*key);
                    }
                    for e in entries {
                        acks.cmd("XPENDING").arg(&[key, GROUP, &e.id, &e.id, "1"]);
                        acks.sent().await?;
                        acks.cmd("XACK").arg(&[key.as_str(), GROUP, &e.id]);
                        acks.sent().await?;
                    }
                }
            }
            acks.flush().await?;
            open = full;
        }
        Ok(())
    }
}

/// The bench's consumer group of every mailbox.
const GROUP: &str = "alone";
/// Entries a read takes from one mailbox, as a host's read does.
const READ: usize = 64;

/// A pipeline sent every [`FILL_OPS`] commands, replies ignored (an error reply fails it).
struct Batch {
    c: crate::store::conn::Conn,
    pipe: redis::Pipeline,
    queued: usize,
}

impl Batch {
    fn new(c: crate::store::conn::Conn) -> Batch {
        Batch {
            c,
            pipe: redis::pipe(),
            queued: 0,
        }
    }

    fn cmd(&mut self, name: &str) -> &mut redis::Pipeline {
        self.pipe.cmd(name)
    }

    /// Counts the command just queued, and sends the pipeline once it is full.
    async fn sent(&mut self) -> Result<()> {
        self.pipe.ignore();
        self.queued += 1;
        if self.queued == FILL_OPS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.queued > 0 {
            self.pipe.query_async::<()>(&mut self.c).await?;
            self.pipe.clear();
            self.queued = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message goes through its mailbox: appended, read by the group (in reads of
    /// [`READ`], the last one short) and acknowledged, none left pending or unread.
    #[tokio::test]
    async fn every_message_goes_through_its_mailbox() {
        let opts = BenchOptions {
            plugins: Default::default(),
            messages: 0,
            appendfsync: "everysec".into(),
            scale_agents: vec![],
            idle: Duration::ZERO,
            turns: 1,
        };
        let mut server = Server::start(&opts, 3).await.unwrap();
        let run = server.mail(600).await.unwrap();
        assert!(run.rate > 0.0, "{}", run.rate);
        let mut c = server.s.town.db.conn.clone();
        for (_, key) in &server.streams {
            let len: i64 = redis::cmd("XLEN")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(len, 200, "{key}");
            let groups: redis::Value = redis::cmd("XINFO")
                .arg(&["GROUPS", key])
                .query_async(&mut c)
                .await
                .unwrap();
            let group = streams::flat_map(&streams::array(&groups)[0]);
            let field = |f: &str| group.get(f).and_then(streams::int);
            assert_eq!(field("pending"), Some(0), "{key}");
            assert_eq!(field("entries-read"), Some(200), "{key}");
        }
    }
}
