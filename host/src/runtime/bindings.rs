//! The generated host bindings of `wit/agent.wit`, in a module of their own so that the engine,
//! the instance and each capability can use them without importing each other.
//!
//! bindgen binds the world `agent-host`, which imports every interface a host may link; the
//! worlds guests build against (`agent`, `agent-exec`) are subsets of it.

wasmtime::component::bindgen!({ world: "agent-host", path: "../wit" });

pub use tinytown::agent::types as wit;

/// The WIT version this host implements; components must import this package version.
pub const WIT_VERSION: &str = "0.1.0";
