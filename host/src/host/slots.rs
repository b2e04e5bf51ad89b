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

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
