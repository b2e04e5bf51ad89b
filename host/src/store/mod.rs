//! Layer 1, the store: everything about a town that lives in files and in Redis, and nothing
//! that runs a role. It may not depend on `town`, `runtime`, `host` or `cli`, nor on wasmtime
//! (`tests/layers.rs` checks).
//!
//! - [`config`] reads `tinytown.toml` and decides where Redis is ([`llm`]: its model providers,
//!   aliases and grants); [`limits`] holds every default limit of a handling, [`policy`] the
//!   town's rules and retention, [`repo`] a repository town's `[repo]`.
//! - [`model`] is the town's records and their checks; [`keys`] names every Redis key;
//!   [`streams`] reads stream replies.
//! - [`conn`] connects (single server or cluster); [`embedded`] runs the private `redis-server`;
//!   [`procfs`] reads a process's `/proc` entries.
//! - [`applier`] is the one write path (typed ops, one atomic Lua call per batch of units);
//!   [`lease`] fences exclusive agents; [`budget`] reserves and settles model spend; [`sweep`] keeps the town within its retention policy.
//! - [`builtin`] is the table of the roles shipped inside `tt` (their bytes and digests).
//! - [`error`] is how a failure reaches a person: a message that names the thing, and a hint.

pub mod applier;
pub mod budget;
pub mod builtin;
pub mod config;
pub mod conn;
pub mod embedded;
pub mod error;
pub mod journal;
pub mod keys;
pub mod lease;
pub mod limits;
pub mod llm;
pub mod model;
pub mod policy;
pub mod procfs;
pub mod repo;
pub mod script;
pub mod stamp;
pub mod streams;
pub mod sweep;
