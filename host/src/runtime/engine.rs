//! The engine and the compiled-plugin cache.
//!
//! [`Runtime`] owns the wasmtime engine (epoch interruption on, fuel only when some agent asks
//! for it, a [`Ticker`] advancing the epoch while guest code runs), the on-disk cache of
//! compiled components (by digest and the engine's compatibility hash), and compiles each
//! plugin once per process. A plugin is also linked once per set of granted capabilities (the
//! linker depends on nothing else): ten thousand agents of one role share one `InstancePre`,
//! where building a linker with every WASI function for each of them was most of a big town's
//! start-up CPU.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::Engine;

use super::bindings;
use super::capabilities::{self, Grants};
use super::instance::State;
use super::ticker::Ticker;
use crate::store::error;
use crate::store::model::Digest;

/// What linking a plugin for a set of capabilities gives; shared by every agent it serves.
#[derive(Clone)]
pub(super) struct Linked {
    pub(super) imports: Vec<String>,
    pub(super) pre: InstancePre<State>,
    pub(super) has_init: bool,
}

pub struct Runtime {
    pub(super) engine: Engine,
    cache_dir: Option<PathBuf>,
    pub(super) fuel: bool,
    compiled: Mutex<HashMap<Digest, Component>>,
    /// Linked plugins by digest and granted capabilities: imports, pre-instance, has `init`.
    linked: Mutex<HashMap<(Digest, Vec<&'static str>), Linked>>,
    /// Held while compiling, so agents starting together compile a plugin once, not once each.
    compiling: Mutex<()>,
    /// The digest of each plugin file loaded, with the file's stamp then: a file unchanged
    /// since is not read and hashed again (ten thousand agents load the same file).
    pub(super) digests: Mutex<HashMap<PathBuf, (String, Digest)>>,
    pub(super) ticker: Arc<Ticker>,
}

impl Runtime {
    /// `cache_dir` holds compiled components; `fuel` turns on fuel metering engine-wide.
    pub fn new(cache_dir: Option<PathBuf>, fuel: bool) -> Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .with_host_stack(Arc::new(super::stacks::Creator(Default::default())));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let ticker = Ticker::start(&engine)?;
        Ok(Runtime {
            engine,
            cache_dir,
            fuel,
            compiled: Mutex::new(HashMap::new()),
            linked: Mutex::new(HashMap::new()),
            digests: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
            ticker,
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

    /// A plugin of `digest` linked before for the same granted capabilities.
    pub(super) fn already_linked(&self, digest: Digest, grants: &Grants) -> Option<Linked> {
        let linked = self.linked.lock().unwrap_or_else(|p| p.into_inner());
        linked.get(&(digest, grants.names())).cloned()
    }

    pub(super) fn keep_linked(&self, digest: Digest, grants: &Grants, linked: Linked) {
        self.linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((digest, grants.names()), linked);
    }

    fn already_compiled(&self, digest: &Digest) -> Option<Component> {
        let compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        compiled.get(digest).cloned()
    }

    /// Compiles `bytes` (or loads them from the cache). Errors name the file and what is wrong.
    pub fn compile(&self, path: &Path, bytes: &[u8]) -> Result<(Digest, Component, bool)> {
        let digest = Digest::of(bytes);
        if let Some(c) = self.already_compiled(&digest) {
            return Ok((digest, c, true));
        }
        check_is_component(path, bytes)?;
        let _one_at_a_time = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = self.already_compiled(&digest) {
            return Ok((digest, c, true));
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

    /// A linker with WASI (no files, no env, no network), the contract's own interfaces in
    /// every version this host binds, and the capabilities `grants` allows.
    pub(super) fn linker(&self, grants: &Grants) -> Result<Linker<State>> {
        let mut linker = Linker::<State>::new(&self.engine);
        let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e}");
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wrap)?;
        bindings::tinytown::agent::types::add_to_linker::<State, HasSelf<State>>(
            &mut linker,
            |s| s,
        )
        .map_err(wrap)?;
        bindings::tinytown::agent::host::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(wrap)?;
        // 0.1.0: its `types` are the 0.2.0 ones (an interface of types only, no functions).
        linker
            .instance("tinytown:agent/types@0.1.0")
            .map_err(wrap)?;
        bindings::v0_1::tinytown::agent::host::add_to_linker::<State, HasSelf<State>>(
            &mut linker,
            |s| s,
        )
        .map_err(wrap)?;
        capabilities::add_granted_to_linker(&mut linker, grants)?;
        Ok(linker)
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
