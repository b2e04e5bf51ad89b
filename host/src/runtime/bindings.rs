//! The generated host bindings of the WIT contract, one module per version (after Zed's
//! extension host), so that the engine, the instance and each capability can use them without
//! importing each other.
//!
//! - [`v0_2`] is the current contract, `wit/agent.wit` (`tinytown:agent@0.2.0`). Every import
//!   is async: a handling that waits on the town, a program or a model holds no OS thread.
//! - [`v0_1`] is the frozen `wit/0.1.0/agent.wit`. Its `types` are the 0.2.0 ones (0.2.0 only
//!   added), so a 0.1.0 component's messages, actions and answers are the same Rust values;
//!   only its `host` and `exec` imports are bound again, under their 0.1.0 names, and answered
//!   by the 0.2.0 code ([`super::instance`], the exec capability).
//!
//! Each binds its world `agent-host`, which imports every interface a host may link; the
//! worlds guests build against (`agent`, `agent-exec`, `agent-llm`, ...) are subsets of it.

pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "agent-host",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        // Answers and actions are recorded with their handling (the journal) as JSON.
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "agent-host",
        path: "../wit/0.1.0",
        imports: { default: async },
        exports: { default: async },
        with: { "tinytown:agent/types@0.1.0": super::v0_2::tinytown::agent::types },
    });
}

pub use v0_2::tinytown;
pub use v0_2::tinytown::agent::types as wit;

/// The WIT version this host implements in full; components may import this one or any
/// version in [`WIT_VERSIONS`].
pub const WIT_VERSION: &str = "0.2.0";

/// Every version of `tinytown:agent` this host binds, newest first.
pub const WIT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];
