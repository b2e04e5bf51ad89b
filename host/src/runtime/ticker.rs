//! The epoch ticker: the thread that advances the engine's epoch while guest code runs.
//!
//! Every guest call has an epoch deadline of one tick, so the tick is both the resolution of
//! call time limits and the slice after which a computing guest yields to the other agents'
//! tasks (`runtime::instance`). A thread that ticked for ever woke 200 times a second in a
//! host with nothing to do, most of an idle host's CPU (0.45% of a core of its 0.75%, over
//! 20 s); so it ticks only while some guest call is in progress and otherwise parks, waking
//! once a second just to notice that the engine is gone.
//!
//! Each entry into guest code holds a [`Running`] for as long as it lasts. The first one
//! wakes a parked ticker; the ticker parks only after seeing none. Both sides publish their
//! own flag before reading the other's (sequentially consistent), so at least one of them sees
//! the other: a call never starts unseen by a ticker about to park.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances while guest code runs; the resolution of call deadlines.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How long a parked ticker sleeps before it looks whether its engine still exists.
const PARKED_CHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Ticker {
    /// Guest calls in progress (instantiation, `init`, `handle`).
    running: AtomicUsize,
    /// The ticker is parked, or about to be.
    parked: AtomicBool,
    /// Epochs advanced so far.
    ticks: AtomicU64,
    thread: OnceLock<std::thread::Thread>,
}

/// A guest call in progress: the ticker ticks while any is held.
pub struct Running(Arc<Ticker>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}

impl Ticker {
    /// Starts the ticker thread of `engine`; it ends within [`PARKED_CHECK`] of the engine's
    /// last clone being dropped.
    pub(super) fn start(engine: &Engine) -> std::io::Result<Arc<Ticker>> {
        let ticker = Arc::new(Ticker::default());
        let weak = engine.weak();
        let t = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("tt-epoch".into())
            .spawn(move || t.run(weak))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    fn run(&self, weak: EngineWeak) {
        loop {
            std::thread::sleep(EPOCH_TICK);
            let Some(engine) = weak.upgrade() else {
                return;
            };
            if self.running.load(SeqCst) > 0 {
                engine.increment_epoch();
                self.ticks.fetch_add(1, SeqCst);
                continue;
            }
            drop(engine);
            self.parked.store(true, SeqCst);
            if self.running.load(SeqCst) == 0 {
                std::thread::park_timeout(PARKED_CHECK);
            }
            self.parked.store(false, SeqCst);
        }
    }

    /// Marks a guest call in progress until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, SeqCst);
        if self.parked.load(SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        Running(self.clone())
    }

    /// Epochs advanced so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_ticks_only_while_a_guest_call_runs() {
        let engine = Engine::default();
        let ticker = Ticker::start(&engine).unwrap();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticker.ticks(), 0, "no call ran, yet the epoch advanced");
        // Generous waits: a loaded machine may run the ticker late, never early.
        let running = ticker.enter();
        std::thread::sleep(EPOCH_TICK * 40);
        let during = ticker.ticks();
        assert!(during >= 2, "a call ran for forty ticks and saw {during}");
        drop(running);
        std::thread::sleep(EPOCH_TICK * 20);
        let after = ticker.ticks();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(
            ticker.ticks(),
            after,
            "the ticker kept ticking after the call ended"
        );
    }
}
