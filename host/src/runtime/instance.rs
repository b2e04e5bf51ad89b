//! One agent's live instance: its store state, limits, the `host` import, and calls.
//!
//! Each call runs under a wall-clock budget for the guest's own computation (time spent inside
//! capabilities is excluded, through [`State::outside_guest`]), a memory cap and optional fuel.
//! A trap or limit hit discards the instance; the next call gets a fresh one from the plugin's
//! `InstancePre`. A lookup the town could not answer makes the whole handling void.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::component::{ResourceTable, TypedFunc};
use wasmtime::{Store, StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, wit};
use super::capabilities::Grants;
use super::engine::Runtime;
use super::lookup::Lookup;
use super::plugin::Plugin;
use crate::store::limits::Limits;
use crate::store::model::Digest;

/// Per-store state: WASI (empty: no files, no env, no network), limits and the agent's context.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    agent: String,
    lookup: Arc<dyn Lookup>,
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
}

impl State {
    /// Counts a lookup and keeps its failure; the guest gets an empty answer, which the host
    /// then throws away together with the whole handling.
    fn answer<T: Default>(&mut self, r: Result<T, String>) -> T {
        self.lookups += 1;
        r.unwrap_or_else(|e| {
            self.lookup_error.get_or_insert(e);
            T::default()
        })
    }

    /// The agent this instance serves.
    pub(crate) fn agent(&self) -> &str {
        &self.agent
    }

    /// Runs `f`, a capability waiting on the world (a program, a model, a response), outside
    /// the guest's time budget: the time it takes is not charged to the call's deadline. Every
    /// capability that blocks goes through here.
    pub(crate) fn outside_guest<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let started = Instant::now();
        let r = f(self);
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

impl bindings::tinytown::agent::types::Host for State {}

impl bindings::tinytown::agent::host::Host for State {
    fn now_ms(&mut self) -> u64 {
        crate::store::model::now_ms()
    }
    fn self_name(&mut self) -> String {
        self.agent.clone()
    }
    fn get_task(&mut self, id: String) -> Option<wit::TaskInfo> {
        let r = self.lookup.task(&id);
        self.answer(r)
    }
    fn get_agent(&mut self, name: String) -> Option<wit::AgentInfo> {
        let r = self.lookup.agent(&name);
        self.answer(r)
    }
    fn list_agents(&mut self, role: Option<String>) -> Vec<wit::AgentInfo> {
        let r = self.lookup.agents(role.as_deref());
        self.answer(r)
    }
    fn backlog(&mut self) -> Vec<wit::TaskInfo> {
        let r = self.lookup.backlog();
        self.answer(r)
    }
    fn get_state(&mut self, key: String) -> Option<String> {
        let r = self.lookup.state(&self.agent, &key);
        self.answer(r)
    }
    fn log(&mut self, level: wit::LogLevel, text: String) {
        let text: String = text.chars().take(4096).collect();
        match level {
            wit::LogLevel::Debug => tracing::debug!(agent = %self.agent, "{text}"),
            wit::LogLevel::Info => tracing::info!(agent = %self.agent, "{text}"),
            wit::LogLevel::Warn => tracing::warn!(agent = %self.agent, "{text}"),
            wit::LogLevel::Error => tracing::error!(agent = %self.agent, "{text}"),
        }
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
    pub fn instantiate(
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
        };
        inst.arm();
        let instance = plugin
            .pre()
            .instantiate(&mut inst.store)
            .map_err(|e| inst.failure(e, "while instantiating"))?;
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
            inst.arm();
            match init.call(&mut inst.store, (config.to_vec(),)) {
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

fn deadline_check(mut ctx: StoreContextMut<State>) -> Result<UpdateDeadline, wasmtime::Error> {
    let s = ctx.data_mut();
    let spent = s.call_started.elapsed().saturating_sub(s.excluded);
    if spent > s.call_limit {
        return Err(wasmtime::Error::new(TimeLimit(s.call_limit)));
    }
    Ok(UpdateDeadline::Continue(1))
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
}

impl Instance {
    /// Resets the per-call budget.
    fn arm(&mut self) {
        let s = self.store.data_mut();
        s.call_started = Instant::now();
        s.excluded = Duration::ZERO;
        s.limiter.denied = None;
        s.lookups = 0;
        s.lookup_error = None;
        self.store.set_epoch_deadline(1);
        if let Some(f) = self.fuel {
            let _ = self.store.set_fuel(f);
        }
    }

    /// Handles one message. On `Err` with `trapped`, this instance must be dropped.
    pub fn handle(&mut self, msg: wit::Message) -> Result<Vec<wit::Action>, Failure> {
        let Some(handle) = self.handle else {
            return Err(Failure::new(FailureKind::Trapped, "instance is not ready"));
        };
        self.arm();
        self.calls += 1;
        let r = handle.call(&mut self.store, (msg,));
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

    /// Names what stopped the guest, in words a person understands.
    fn failure(&self, e: wasmtime::Error, during: &str) -> Failure {
        let s = self.store.data();
        let reason = if let Some(t) = e.downcast_ref::<TimeLimit>() {
            format!("{t} (wall clock, exec time excluded)")
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
