//! Running roles: Wasm components of the `tinytown:agent` world, sandboxed and limited.
//!
//! - [`Runtime`] owns the engine (epoch interruption on, fuel only when some agent asks for it),
//!   the on-disk cache of compiled components (by digest and engine compatibility hash), and one
//!   `InstancePre` per plugin digest and grant set.
//! - [`Instance`] is one agent's long-lived instance. Each call runs under a wall-clock budget
//!   for the guest's own computation (time spent in a granted `exec` is not counted), a memory
//!   cap and optional fuel. A trap or limit hit discards the instance; the next call gets a
//!   fresh one.
//! - Imports are read-only lookups ([`Lookup`]) and, only for agents granted it, `exec`.
//!   A component that imports an ungranted capability is refused at load, by name.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable, TypedFunc};
use wasmtime::{Engine, Store, StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::error;
use crate::exec::ExecGrant;
use crate::limits::Limits;
use crate::plugin::Digest;

wasmtime::component::bindgen!({ world: "agent-exec", path: "../wit" });

pub use tinytown::agent::types as wit;

/// The WIT version this host implements; components must import this package version.
pub const WIT_VERSION: &str = "0.1.0";
/// How often the epoch advances; the resolution of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Read-only questions a guest can ask about the town (the `host` import). An `Err` means the
/// town could not be asked (Redis is away): the handling is then thrown away and retried, never
/// decided on a made-up answer.
pub trait Lookup: Send + Sync {
    fn task(&self, id: &str) -> Result<Option<wit::TaskInfo>, String>;
    fn agent(&self, name: &str) -> Result<Option<wit::AgentInfo>, String>;
    fn agents(&self, role: Option<&str>) -> Result<Vec<wit::AgentInfo>, String>;
    fn backlog(&self) -> Result<Vec<wit::TaskInfo>, String>;
    fn state(&self, agent: &str, key: &str) -> Result<Option<String>, String>;
}

/// A lookup that knows nothing (for `tt plugin check` and tests without a town).
pub struct NoTown;

impl Lookup for NoTown {
    fn task(&self, _: &str) -> Result<Option<wit::TaskInfo>, String> {
        Ok(None)
    }
    fn agent(&self, _: &str) -> Result<Option<wit::AgentInfo>, String> {
        Ok(None)
    }
    fn agents(&self, _: Option<&str>) -> Result<Vec<wit::AgentInfo>, String> {
        Ok(Vec::new())
    }
    fn backlog(&self) -> Result<Vec<wit::TaskInfo>, String> {
        Ok(Vec::new())
    }
    fn state(&self, _: &str, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// What an agent's instance may do beyond handling messages.
#[derive(Clone, Default)]
pub struct Grants {
    pub exec: Option<Arc<ExecGrant>>,
}

/// Per-store state: WASI (empty: no files, no env, no network), limits and the agent's context.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    agent: String,
    lookup: Arc<dyn Lookup>,
    exec: Option<Arc<ExecGrant>>,
    call_started: Instant,
    /// Time spent waiting on `exec` during the current call; not charged to the guest.
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

impl tinytown::agent::types::Host for State {}

impl tinytown::agent::host::Host for State {
    fn now_ms(&mut self) -> u64 {
        crate::model::now_ms()
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

impl tinytown::agent::exec::Host for State {
    fn run(
        &mut self,
        cmd: tinytown::agent::exec::Command,
    ) -> Result<tinytown::agent::exec::Output, String> {
        let Some(grant) = self.exec.clone() else {
            return Err("exec is not granted to this agent".into());
        };
        let started = Instant::now();
        let out = grant.run(&self.agent, cmd);
        self.excluded += started.elapsed();
        out
    }
}

/// Why a call did not return actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub retryable: bool,
    /// The instance is dead (trap or limit) and was discarded.
    pub trapped: bool,
    /// The town could not be asked: not the guest's fault, not a delivery attempt.
    pub transient: bool,
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

/// A compiled plugin, ready to instantiate with a given grant set.
#[derive(Clone)]
pub struct Plugin {
    pub digest: Digest,
    pub path: PathBuf,
    pub imports: Vec<String>,
    pre: InstancePre<State>,
    has_init: bool,
}

pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    fuel: bool,
    compiled: Mutex<HashMap<Digest, Component>>,
    /// Held while compiling, so agents starting together compile a plugin once, not once each.
    compiling: Mutex<()>,
    _ticker: std::thread::JoinHandle<()>,
}

impl Runtime {
    /// `cache_dir` holds compiled components; `fuel` turns on fuel metering engine-wide.
    pub fn new(cache_dir: Option<PathBuf>, fuel: bool) -> Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let weak = engine.weak();
        let ticker = std::thread::Builder::new()
            .name("tt-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Runtime {
            engine,
            cache_dir,
            fuel,
            compiled: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn cache_path(&self, digest: &Digest) -> Option<PathBuf> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let dir = self.cache_dir.as_ref()?;
        // The compatibility hash covers the wasmtime version and every setting that matters.
        Some(dir.join(format!("{digest}-{:016x}.cwasm", h.finish())))
    }

    /// Compiles `bytes` (or loads them from the cache). Errors name the file and what is wrong.
    pub fn compile(&self, path: &Path, bytes: &[u8]) -> Result<(Digest, Component, bool)> {
        let digest = Digest::of(bytes);
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok((digest, c.clone(), true));
        }
        check_is_component(path, bytes)?;
        let _one_at_a_time = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok((digest, c.clone(), true));
        }
        let cached = self.cache_path(&digest);
        let mut from_cache = false;
        let mut component = None;
        if let Some(p) = cached.as_ref().filter(|p| p.exists()) {
            // Safety: the file was written by `precompile_component` of an engine with the same
            // compatibility hash (it is in the name), in the town's private directory.
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, p) } {
                component = Some(c);
                from_cache = true;
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let compiled =
                    self.engine.precompile_component(bytes).map_err(|e| {
                        error::fail(
                        format!("{} is not a valid component: {}", path.display(), e.root_cause()),
                        "rebuild it with a component toolchain; `tt plugin check FILE` explains",
                    )
                    })?;
                if let Some(p) = &cached {
                    if let Err(e) = write_atomically(p, &compiled) {
                        tracing::warn!(
                            "cannot cache the compiled {} at {}: {e}",
                            path.display(),
                            p.display()
                        );
                    }
                }
                // Safety: bytes just produced by this engine.
                unsafe { Component::deserialize(&self.engine, &compiled) }
                    .map_err(|e| anyhow::anyhow!("loading compiled {}: {e}", path.display()))?
            }
        };
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, component.clone());
        Ok((digest, component, from_cache))
    }

    /// Loads a plugin for an agent with `grants`: compiles, links, and checks its exports.
    pub fn load(&self, agent: &str, path: &Path, grants: &Grants) -> Result<Plugin> {
        let bytes = std::fs::read(path).map_err(|e| {
            error::fail(
                format!("plugin {} of agent `{agent}`: {e}", path.display()),
                "build the plugins (`bash plugins/build.sh`) or fix the plugin path",
            )
        })?;
        let (digest, component, _) = self.compile(path, &bytes)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        for name in &imports {
            check_import(agent, path, name, grants)?;
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if !exports.iter().any(|e| e == "handle") {
            return Err(error::fail(
                format!(
                    "{} does not export `handle`: it is not a tinytown:agent component \
                     (exports: {})",
                    path.display(),
                    if exports.is_empty() {
                        "none".into()
                    } else {
                        exports.join(", ")
                    }
                ),
                "build it against world `agent` or `agent-exec` of wit/agent.wit",
            ));
        }
        let linker = self.linker(grants)?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            error::fail(
                format!(
                    "{} cannot be linked for agent `{agent}`: {}",
                    path.display(),
                    e.root_cause()
                ),
                format!("it must be built against tinytown:agent@{WIT_VERSION} (wit/agent.wit)"),
            )
        })?;
        Ok(Plugin {
            digest,
            path: path.to_path_buf(),
            imports,
            pre,
            has_init: exports.iter().any(|e| e == "init"),
        })
    }

    fn linker(&self, grants: &Grants) -> Result<Linker<State>> {
        let mut linker = Linker::<State>::new(&self.engine);
        let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e}");
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wrap)?;
        tinytown::agent::types::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(wrap)?;
        tinytown::agent::host::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(wrap)?;
        if grants.exec.is_some() {
            tinytown::agent::exec::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
                .map_err(wrap)?;
        }
        Ok(linker)
    }

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
            exec: grants.exec.clone(),
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
            .pre
            .instantiate(&mut inst.store)
            .map_err(|e| inst.failure(e, "while instantiating"))?;
        let handle = instance
            .get_typed_func::<(wit::Message,), (Result<Vec<wit::Action>, wit::Error>,)>(
                &mut inst.store,
                "handle",
            )
            .map_err(|e| Failure {
                reason: format!("export `handle` has the wrong type: {}", e.root_cause()),
                retryable: false,
                trapped: false,
                transient: false,
            })?;
        if plugin.has_init {
            let init = instance
                .get_typed_func::<(Vec<(String, String)>,), (Result<(), wit::Error>,)>(
                    &mut inst.store,
                    "init",
                )
                .map_err(|e| Failure {
                    reason: format!("export `init` has the wrong type: {}", e.root_cause()),
                    retryable: false,
                    trapped: false,
                    transient: false,
                })?;
            inst.arm();
            match init.call(&mut inst.store, (config.to_vec(),)) {
                Ok((Ok(()),)) => {}
                Ok((Err(e),)) => {
                    return Err(Failure {
                        reason: format!("init refused: {}", e.message),
                        retryable: e.retryable,
                        trapped: false,
                        transient: false,
                    })
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

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn deadline_check(mut ctx: StoreContextMut<State>) -> Result<UpdateDeadline, wasmtime::Error> {
    let s = ctx.data_mut();
    let spent = s.call_started.elapsed().saturating_sub(s.excluded);
    if spent > s.call_limit {
        return Err(wasmtime::Error::new(TimeLimit(s.call_limit)));
    }
    Ok(UpdateDeadline::Continue(1))
}

/// Refuses a component whose bytes are not a component, with a message that says what they are.
pub fn check_is_component(path: &Path, bytes: &[u8]) -> Result<()> {
    let what = if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        "not a WebAssembly file"
    } else if bytes[4..8] == [1, 0, 0, 0] {
        "a core Wasm module, not a component"
    } else {
        return Ok(());
    };
    Err(error::fail(
        format!("{} is {what}", path.display()),
        "build a component: cargo build --target wasm32-wasip2, componentize-py, jco, \
         or `wasm-tools component new` for a core module",
    ))
}

fn check_import(agent: &str, path: &Path, name: &str, grants: &Grants) -> Result<()> {
    if let Some(rest) = name.strip_prefix("tinytown:agent/") {
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let compatible = version
            .strip_prefix("0.1.")
            .is_some_and(|patch| patch.parse::<u32>().is_ok_and(|p| p == 0));
        if !compatible {
            return Err(error::fail(
                format!(
                    "{} imports tinytown:agent/{iface}@{version}; this host implements \
                     tinytown:agent@{WIT_VERSION}",
                    path.display()
                ),
                "rebuild the plugin against this repository's wit/agent.wit",
            ));
        }
        match iface {
            "types" | "host" => Ok(()),
            "exec" if grants.exec.is_some() => Ok(()),
            "exec" => Err(error::fail(
                format!(
                    "agent `{agent}`: plugin {} imports the `exec` capability, which is not \
                     granted to it",
                    path.display()
                ),
                format!("grant it in tinytown.toml: [agents.{agent}.exec] allow = [\"program\"]"),
            )),
            other => Err(error::fail(
                format!(
                    "{} imports unknown interface tinytown:agent/{other}",
                    path.display()
                ),
                "rebuild the plugin against this repository's wit/agent.wit",
            )),
        }
    } else if name.starts_with("wasi:") {
        Ok(())
    } else {
        Err(error::fail(
            format!(
                "{} imports `{name}`, which no tinytown host provides",
                path.display()
            ),
            "a role may import only tinytown:agent/* and wasi:* interfaces",
        ))
    }
}

impl Plugin {
    pub fn has_init(&self) -> bool {
        self.has_init
    }
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
            return Err(Failure {
                reason: "instance is not ready".into(),
                retryable: true,
                trapped: true,
                transient: false,
            });
        };
        self.arm();
        self.calls += 1;
        let r = handle.call(&mut self.store, (msg,));
        if let Some(e) = self.store.data_mut().lookup_error.take() {
            // Whatever the guest decided rested on an answer it did not get.
            return Err(Failure {
                reason: format!("the town could not be asked ({e}); will retry"),
                retryable: true,
                trapped: true,
                transient: true,
            });
        }
        match r {
            Ok((Ok(actions),)) => Ok(actions),
            Ok((Err(e),)) => Err(Failure {
                reason: e.message,
                retryable: e.retryable,
                trapped: false,
                transient: false,
            }),
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
        Failure {
            reason,
            retryable: true,
            trapped: true,
            transient: false,
        }
    }
}
