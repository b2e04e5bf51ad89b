//! One agent's live instance: its store state, limits, the `host` import, and calls.
//!
//! Each call runs under a wall-clock budget for the guest's own computation (time spent inside
//! capabilities is excluded, through [`State::outside_guest`]), a memory cap and optional fuel.
//! A trap or limit hit discards the instance; the next call gets a fresh one from the plugin's
//! `InstancePre`. A lookup the town could not answer makes the whole handling void.
//!
//! Calls are async (wasmtime on tokio): a guest waiting on the town, a program or a model is a
//! suspended future, not a blocked thread, and a guest computing yields to other tasks at
//! every epoch tick. Every import call is recorded ([`super::record`]) for the journal.
//!
//! The `host` import (the read-only questions) is answered in [`super::questions`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::component::{ResourceTable, TypedFunc};
use wasmtime::{Store, StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::wit;
use super::capabilities::http::{gate::Gate, HttpGrant};
use super::capabilities::Grants;
use super::engine::Runtime;
use super::lookup::Lookup;
use super::plugin::Plugin;
use super::record::Call;
use super::replay::Script;
use super::ticker::{Running, Ticker};
use crate::store::limits::Limits;
use crate::store::model::Digest;

/// Per-store state: WASI (empty: no files, no env, no network), limits and the agent's context.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    pub(super) agent: String,
    pub(super) lookup: Arc<dyn Lookup>,
    /// What the agent's config grants; each capability's host code reads its own grant here.
    pub(crate) grants: Grants,
    call_started: Instant,
    /// Time spent inside capabilities during the current call; not charged to the guest.
    excluded: Duration,
    call_limit: Duration,
    /// Town lookups made during the current call (their answers may depend on unapplied work).
    lookups: u32,
    /// A lookup that could not be answered during the current call.
    lookup_error: Option<String>,
    /// Every import call of the current call, in order.
    calls: Vec<Call>,
    /// The task of the message being handled (budgets are kept per task too).
    task: Option<String>,
    http: WasiHttpCtx,
    /// Outgoing HTTP goes through here (an ungranted agent's gate refuses everything).
    gate: Gate,
    /// In a replay: the original handling's calls, which answer the candidate's.
    pub(super) replay: Option<Script>,
}

impl State {
    /// Counts and records a lookup and keeps its failure; the guest gets an empty answer,
    /// which the host then throws away together with the whole handling.
    pub(super) fn answer<T: Default + serde::Serialize>(
        &mut self,
        function: &str,
        request: impl serde::Serialize,
        started: Instant,
        r: Result<T, String>,
    ) -> T {
        self.lookups += 1;
        let v = r.unwrap_or_else(|e| {
            self.lookup_error.get_or_insert(e);
            T::default()
        });
        self.record(Call::new("host", function, request, &v, started.elapsed()));
        v
    }

    /// The agent this instance serves.
    pub(crate) fn agent(&self) -> &str {
        &self.agent
    }

    /// The task of the message being handled, if it names one.
    #[allow(dead_code)] // for capabilities that keep budgets per task (llm)
    pub(crate) fn task(&self) -> Option<&str> {
        self.task.as_deref()
    }

    /// The town as the runtime sees it (lookups, budgets).
    #[allow(dead_code)] // for capabilities that keep their books in the town (llm)
    pub(crate) fn town(&self) -> &Arc<dyn Lookup> {
        &self.lookup
    }

    /// Appends an import call to the current call's record.
    pub(crate) fn record(&mut self, call: Call) {
        self.calls.push(call);
    }

    /// Awaits `f`, a capability waiting on the world (a program, a model, a response),
    /// outside the guest's time budget: the time it takes is not charged to the call's
    /// deadline. Every capability that waits goes through here.
    pub(crate) async fn outside_guest<T>(&mut self, f: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let r = f.await;
        self.excluded += started.elapsed();
        r
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.gate,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Caps linear memory; remembers a refused growth so the failure can be named.
struct Limiter {
    memory_bytes: usize,
    denied: Option<usize>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool, wasmtime::Error> {
        if desired > self.memory_bytes {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool, wasmtime::Error> {
        Ok(desired <= 1_000_000)
    }
}

/// What kind of failure a call had; it decides retry and whether the instance survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest returned an error it calls permanent (or its output broke a limit): not retried.
    Permanent,
    /// The guest returned an error worth retrying; the instance lives on.
    Retryable,
    /// A trap or a limit hit: the instance is dead and was discarded; retried on a fresh one.
    Trapped,
    /// The town could not be asked: not the guest's fault, not a delivery attempt. The instance
    /// is discarded too (what it decided rested on an answer it did not get).
    Transient,
}

/// Why a call did not return actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub kind: FailureKind,
}

impl Failure {
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            kind,
        }
    }
    pub fn retryable(&self) -> bool {
        self.kind != FailureKind::Permanent
    }
    /// The instance is dead and was discarded.
    pub fn trapped(&self) -> bool {
        matches!(self.kind, FailureKind::Trapped | FailureKind::Transient)
    }
    pub fn transient(&self) -> bool {
        self.kind == FailureKind::Transient
    }
}

/// The guest's own computation ran past its budget.
#[derive(Debug)]
struct TimeLimit(Duration);

impl std::fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exceeded its time limit of {} ms", self.0.as_millis())
    }
}

impl std::error::Error for TimeLimit {}

fn guest_kind(retryable: bool) -> FailureKind {
    if retryable {
        FailureKind::Retryable
    } else {
        FailureKind::Permanent
    }
}

impl Runtime {
    /// A fresh instance of `plugin` for `agent`, with `init(config)` already called.
    pub async fn instantiate(
        &self,
        plugin: &Plugin,
        agent: &str,
        limits: &Limits,
        grants: &Grants,
        config: &[(String, String)],
        lookup: Arc<dyn Lookup>,
    ) -> Result<Instance, Failure> {
        let state = State {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes: (limits.memory_mb as usize) << 20,
                denied: None,
            },
            agent: agent.to_string(),
            lookup,
            grants: grants.clone(),
            call_started: Instant::now(),
            excluded: Duration::ZERO,
            call_limit: Duration::from_millis(limits.call_timeout_ms),
            lookups: 0,
            lookup_error: None,
            calls: Vec::new(),
            task: None,
            replay: None,
            http: WasiHttpCtx::new(),
            gate: Gate {
                grant: grants.get::<HttpGrant>(),
                agent: agent.to_string(),
                calls: Arc::new(Mutex::new(Vec::new())),
                waited: Arc::new(Mutex::new(Duration::ZERO)),
                replaying: false,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(deadline_check);
        let mut inst = Instance {
            store,
            handle: None,
            digest: plugin.digest,
            // With metering on, every store needs fuel; agents without a budget get no limit.
            fuel: self.fuel.then_some(if limits.fuel > 0 {
                limits.fuel
            } else {
                u64::MAX
            }),
            calls: 0,
            dead: false,
            ticker: self.ticker.clone(),
        };
        let running = inst.arm();
        let instance = plugin
            .pre()
            .instantiate_async(&mut inst.store)
            .await
            .map_err(|e| inst.failure(e, "while instantiating"))?;
        drop(running);
        let handle = instance
            .get_typed_func::<(wit::Message,), (Result<Vec<wit::Action>, wit::Error>,)>(
                &mut inst.store,
                "handle",
            )
            .map_err(|e| {
                Failure::new(
                    FailureKind::Permanent,
                    format!("export `handle` has the wrong type: {}", e.root_cause()),
                )
            })?;
        if plugin.has_init() {
            let init = instance
                .get_typed_func::<(Vec<(String, String)>,), (Result<(), wit::Error>,)>(
                    &mut inst.store,
                    "init",
                )
                .map_err(|e| {
                    Failure::new(
                        FailureKind::Permanent,
                        format!("export `init` has the wrong type: {}", e.root_cause()),
                    )
                })?;
            let _running = inst.arm();
            match init.call_async(&mut inst.store, (config.to_vec(),)).await {
                Ok((Ok(()),)) => {}
                Ok((Err(e),)) => {
                    return Err(Failure::new(
                        guest_kind(e.retryable),
                        format!("init refused: {}", e.message),
                    ))
                }
                Err(e) => {
                    let f = inst.failure(e, "in init");
                    return Err(f);
                }
            }
        }
        inst.handle = Some(handle);
        Ok(inst)
    }
}

impl Runtime {
    /// [`Runtime::instantiate`] for callers outside async code (`tt plugin check`, swap
    /// validation, `tt doctor`): runs it on a runtime of its own, on this thread.
    pub fn instantiate_blocking(
        &self,
        plugin: &Plugin,
        agent: &str,
        limits: &Limits,
        grants: &Grants,
        config: &[(String, String)],
        lookup: Arc<dyn Lookup>,
    ) -> Result<Instance, Failure> {
        super::block_on(self.instantiate(plugin, agent, limits, grants, config, lookup))
    }
}

fn deadline_check(mut ctx: StoreContextMut<State>) -> Result<UpdateDeadline, wasmtime::Error> {
    let s = ctx.data_mut();
    let http = *s.gate.waited.lock().unwrap_or_else(|p| p.into_inner());
    let spent = s
        .call_started
        .elapsed()
        .saturating_sub(s.excluded)
        .saturating_sub(http);
    if spent > s.call_limit {
        return Err(wasmtime::Error::new(TimeLimit(s.call_limit)));
    }
    // A guest that computes lets the other agents' tasks run between epoch ticks.
    Ok(UpdateDeadline::Yield(1))
}

/// The typed `handle` export.
type HandleFn = TypedFunc<(wit::Message,), (Result<Vec<wit::Action>, wit::Error>,)>;

/// One agent's live instance.
pub struct Instance {
    store: Store<State>,
    handle: Option<HandleFn>,
    pub digest: Digest,
    /// Fuel per call, when the engine meters fuel.
    fuel: Option<u64>,
    pub calls: u64,
    /// Trapped: only its record of the last call may still be read.
    dead: bool,
    ticker: Arc<Ticker>,
}

impl Instance {
    /// Resets the per-call budget. The epoch ticks, for this call's deadline, while the
    /// returned guard lives: hold it until the guest returns.
    #[must_use]
    fn arm(&mut self) -> Running {
        let s = self.store.data_mut();
        s.call_started = Instant::now();
        s.excluded = Duration::ZERO;
        s.limiter.denied = None;
        s.lookups = 0;
        s.lookup_error = None;
        s.calls.clear();
        s.gate
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *s.gate.waited.lock().unwrap_or_else(|p| p.into_inner()) = Duration::ZERO;
        self.store.set_epoch_deadline(1);
        if let Some(f) = self.fuel {
            let _ = self.store.set_fuel(f);
        }
        self.ticker.enter()
    }

    /// Handles one message. On `Err` with `trapped`, this instance must not be called again
    /// ([`Instance::mark_dead`]; its [`Instance::recorded`] calls may still be read).
    pub async fn handle(&mut self, msg: wit::Message) -> Result<Vec<wit::Action>, Failure> {
        let Some(handle) = self.handle.filter(|_| !self.dead) else {
            return Err(Failure::new(FailureKind::Trapped, "instance is not ready"));
        };
        let running = self.arm();
        self.calls += 1;
        self.store.data_mut().task = msg.task_id.clone();
        let r = handle.call_async(&mut self.store, (msg,)).await;
        drop(running);
        let s = self.store.data_mut();
        let http = std::mem::take(&mut *s.gate.calls.lock().unwrap_or_else(|p| p.into_inner()));
        s.calls.extend(http);
        if let Some(e) = self.store.data_mut().lookup_error.take() {
            // Whatever the guest decided rested on an answer it did not get.
            return Err(Failure::new(
                FailureKind::Transient,
                format!("the town could not be asked ({e}); will retry"),
            ));
        }
        match r {
            Ok((Ok(actions),)) => Ok(actions),
            Ok((Err(e),)) => Err(Failure::new(guest_kind(e.retryable), e.message)),
            Err(e) => Err(self.failure(e, "while handling")),
        }
    }

    /// How many town lookups the last call made.
    pub fn lookups(&self) -> u32 {
        self.store.data().lookups
    }

    /// Answers the next call's imports from `script` (a replay) instead of the world; its
    /// outgoing HTTP is refused meanwhile.
    pub fn set_replay(&mut self, script: Script) {
        let s = self.store.data_mut();
        s.replay = Some(script);
        s.gate.replaying = true;
    }

    /// Ends a replay; what is left of the script (its divergences, its unused calls).
    pub fn take_replay(&mut self) -> Option<Script> {
        let s = self.store.data_mut();
        s.gate.replaying = false;
        s.replay.take()
    }

    /// After a trap: the instance is not to be called again.
    pub fn mark_dead(&mut self) {
        self.dead = true;
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The import calls of the last call, in order (the journal's record of it).
    pub fn recorded(&self) -> &[Call] {
        &self.store.data().calls
    }

    /// Names what stopped the guest, in words a person understands.
    fn failure(&self, e: wasmtime::Error, during: &str) -> Failure {
        let s = self.store.data();
        let reason = if let Some(t) = e.downcast_ref::<TimeLimit>() {
            format!("{t} (wall clock, time waiting on capabilities excluded)")
        } else if let Some(bytes) = s.limiter.denied {
            format!(
                "hit its memory limit of {} MiB (tried to grow to {} MiB) and trapped",
                s.limiter.memory_bytes >> 20,
                bytes >> 20
            )
        } else {
            match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => {
                    format!(
                        "ran out of fuel ({} units per call)",
                        self.fuel.unwrap_or(0)
                    )
                }
                Some(Trap::UnreachableCodeReached) => {
                    format!("trapped {during}: the guest panicked or aborted (wasm `unreachable`)")
                }
                Some(t) => format!("trapped {during}: {t}"),
                None => format!("failed {during}: {}", e.root_cause()),
            }
        };
        Failure::new(FailureKind::Trapped, reason)
    }
}
