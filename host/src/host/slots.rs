//! The bound on one host's live instances (`[host] max_instances`).
//!
//! Every live instance maps its linear memory and an async stack, and the kernel limits a
//! process's mappings (`vm.max_map_count`, 65,530 by default): ten thousand agents busy at once
//! made instantiation fail with `Cannot allocate memory`. So a runner takes a slot before its
//! agent's mail is read (and so before its instance is made) and gives it back when the
//! instance is dropped (idle for `idle_instance_ms`, standby, stopped). Reading only into a
//! slot also bounds the mail in a host's hands by the slots, not by the agents with mail
//! ([`crate::host::mailboxes`]). While slots are free an idle agent keeps its
//! instance; when a runner needs one and none is free, it asks one idle holder to give its slot
//! up ([`Slots::take`]): the agents waiting in their shared read are the least recently busy, so
//! the instances kept are those of the agents at work. A shadow's instance and a swapped-in
//! instance made ready beside the old one are not counted: they are few and short-lived.
//!
//! A `max_instances` the machine's mapping limit cannot hold is lowered to what it can
//! ([`fit`]), with a warning that names both fixes, and `tt doctor` reports it: past the limit
//! every instantiation fails, and the mail of the agents it fails for is dead-lettered.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::procfs;

/// Memory mappings one live instance holds: 7 measured (5,000 relay instances added 34,920
/// lines to `/proc/PID/maps`: the linear memory's reservation, its accessible part and its
/// copy-on-write image, the async stack and its guard, ...), and one to spare.
const MAPS_PER_INSTANCE: usize = 8;
/// Mappings left for everything else a host maps: threads, compiled code, the allocator's
/// arenas, shadows' and swaps' instances.
const MAPS_KEPT: usize = 4_096;

/// How many live instances a host may keep on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// `[host] max_instances`.
    pub configured: usize,
    /// `configured`, or fewer when the mapping limit cannot hold that many.
    pub max: usize,
    /// `vm.max_map_count`, when this system says it.
    pub limit: Option<usize>,
    /// The `vm.max_map_count` that `configured` would need.
    pub needed: usize,
}

impl Fit {
    /// Whether the configured number was lowered.
    pub fn lowered(&self) -> bool {
        self.max < self.configured
    }

    /// What a lowered bound means, and the two ways to fix it.
    pub fn explain(&self) -> (String, String) {
        (
            format!(
                "{} live instances need about {} memory mappings \
                 ({MAPS_PER_INSTANCE} each, and the host's own); this machine allows a process \
                 {} (vm.max_map_count), so a host keeps at most {} alive",
                self.configured,
                self.needed,
                self.limit.unwrap_or_default(),
                self.max
            ),
            format!(
                "lower [host] max_instances to {} or less, or raise the limit: \
                 sudo sysctl -w vm.max_map_count={}",
                self.max, self.needed
            ),
        )
    }
}

/// The instances that fit this process's mapping limit, given `configured`
/// (`[host] max_instances`). Where `/proc` does not say the limit, `configured` stands.
pub fn fit(configured: usize) -> Fit {
    let in_use = procfs::maps("self").unwrap_or(0);
    bound(configured, procfs::max_map_count(), in_use)
}

fn bound(configured: usize, limit: Option<usize>, in_use: usize) -> Fit {
    let needed = configured
        .saturating_mul(MAPS_PER_INSTANCE)
        .saturating_add(in_use + MAPS_KEPT);
    let max = match limit {
        Some(limit) => {
            let room = limit.saturating_sub(in_use + MAPS_KEPT) / MAPS_PER_INSTANCE;
            configured.min(room.max(1))
        }
        None => configured,
    };
    Fit {
        configured,
        max,
        limit,
        needed,
    }
}

pub(super) struct Slots {
    max: usize,
    free: Arc<Semaphore>,
    /// One permit per slot asked for and not yet given up: each wakes one idle holder (in
    /// order), and an ask no holder is idle for waits for the next one to be.
    asks: Semaphore,
}

impl Slots {
    pub(super) fn new(max: usize) -> Slots {
        Slots {
            max,
            free: Arc::new(Semaphore::new(max)),
            asks: Semaphore::new(0),
        }
    }

    /// How many slots are taken (the host's heartbeat says it).
    pub(super) fn live(&self) -> usize {
        self.max.saturating_sub(self.free.available_permits())
    }

    /// A slot for one instance: a free one, else the first an idle holder gives up.
    pub(super) async fn take(&self) -> OwnedSemaphorePermit {
        if let Ok(p) = self.free.clone().try_acquire_owned() {
            return p;
        }
        // Not withdrawn when a slot comes free otherwise: whose ask was answered cannot be
        // told apart, and a withdrawn ask of another waiter would leave it waiting for a
        // holder's idle timeout. An ask left over makes one idle holder give its slot up early.
        self.asks.add_permits(1);
        self.free
            .clone()
            .acquire_owned()
            .await
            .expect("the slots' semaphore is never closed")
    }

    /// Resolves when a runner waiting for a slot asks an idle holder to give one up.
    pub(super) async fn asked(&self) {
        if let Ok(ask) = self.asks.acquire().await {
            ask.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bound_past_the_mapping_limit_is_lowered_to_what_fits() {
        // The default fits the default limit with room to spare.
        let f = bound(1_000, Some(65_530), 100);
        assert_eq!((f.max, f.lowered()), (1_000, false));
        // Ten thousand do not: (65,530 - 100 - 4,096) / 8 = 7,666.
        let f = bound(10_000, Some(65_530), 100);
        assert_eq!(f.max, 7_666);
        assert!(f.lowered());
        assert_eq!(f.needed, 10_000 * 8 + 100 + 4_096);
        let (what, fix) = f.explain();
        assert!(
            what.starts_with("10000 live instances") && what.contains("65530"),
            "{what}"
        );
        assert!(
            what.contains("at most 7666") && fix.contains("vm.max_map_count=84196"),
            "{what}; {fix}"
        );
        // A limit too small for anything still leaves one instance; no limit known leaves the
        // configured number.
        assert_eq!(bound(10, Some(1_000), 900).max, 1);
        assert_eq!(bound(usize::MAX, None, 100).max, usize::MAX);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_an_idle_holder_gives_up() {
        let slots = Arc::new(Slots::new(1));
        let held = slots.take().await;
        // The holder, idle: gives its slot up when asked.
        let holder = {
            let slots = slots.clone();
            tokio::spawn(async move {
                slots.asked().await;
                drop(held);
            })
        };
        let got = tokio::time::timeout(Duration::from_secs(5), slots.take()).await;
        assert!(got.is_ok(), "the waiter got the slot");
        holder.await.unwrap();
    }

    #[tokio::test]
    async fn every_ask_is_answered_by_its_own_holder() {
        // Three holders go idle one after the other; three waiters each get a slot.
        let slots = Arc::new(Slots::new(3));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(slots.take().await);
        }
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move { slots.take().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for slot in held {
            tokio::time::timeout(Duration::from_secs(5), slots.asked())
                .await
                .expect("each ask reaches a holder");
            drop(slot);
        }
        for w in waiters {
            let _slot = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("each waiter gets a slot")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn an_ask_with_no_idle_holder_is_kept_for_the_next_one() {
        let slots = Arc::new(Slots::new(1));
        let held = slots.take().await;
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.take().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Only now does the holder go idle: the ask is waiting for it.
        tokio::time::timeout(Duration::from_secs(5), slots.asked())
            .await
            .expect("the ask was kept");
        drop(held);
        let _slot = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter got the slot")
            .unwrap();
    }
}
