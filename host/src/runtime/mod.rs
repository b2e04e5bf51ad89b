//! Layer 3, the runtime: roles as Wasm components of the `tinytown:agent` world, sandboxed and
//! limited. It may depend on `store` (not on `town`, `host` or `cli`; `tests/layers.rs` checks):
//! the serving layer hands it the town's answers through [`Lookup`].
//!
//! - [`bindings`]: the generated WIT bindings (one module, so nothing imports in a circle).
//! - [`engine`]: the engine and compiled-code cache ([`Runtime`]).
//! - [`ticker`]: the epoch ticker, which ticks only while guest code runs.
//! - `stacks`: fiber stacks, kept for the next instance instead of unmapped.
//! - [`plugin`]: loading a component for an agent and `tt plugin check`'s report.
//! - [`instance`]: one agent's live instance, its limits and the `host` import.
//! - [`lookup`]: the read-only questions a guest may ask, as a trait; `questions` answers the
//!   `host` import with it.
//! - [`record`]: what a handling asked the world, call by call (the journal's entries).
//! - [`replay`]: a candidate's calls answered from a journaled handling's record.
//! - [`builtin`]: what an agent's plugin resolves to; how a built-in role is set up.
//! - [`capabilities`]: imports that act in the world (`exec`), one folder each, one registry.

pub mod bindings;
pub mod builtin;
pub mod capabilities;
pub mod engine;
pub mod instance;
pub mod lookup;
pub mod plugin;
mod questions;
pub mod record;
pub mod replay;
mod stacks;
pub mod ticker;

pub use bindings::{wit, WIT_VERSION, WIT_VERSIONS};
pub use capabilities::Grants;
pub use engine::{check_is_component, Runtime};
pub use instance::{Failure, FailureKind, Instance};
pub use lookup::{Lookup, NoTown};
pub use plugin::{check, check_bytes, CheckReport, Plugin};

/// Runs `f` to the end on a runtime of its own, on this thread: for callers outside async code
/// (`tt plugin check`, swap validation in a blocking task, tests). Not for use inside a tokio
/// runtime's worker.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime builds")
        .block_on(f)
}
