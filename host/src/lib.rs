//! tinytown: a town of agents whose mailboxes and tasks live in Redis and whose roles run as
//! sandboxed WebAssembly components.
//!
//! - [`town`] is the service layer every command goes through; [`db`] and `lua/apply.lua` are
//!   the one write path (atomic, checked, idempotent); [`keys`] names every Redis key.
//! - [`config`] reads `tinytown.toml`; [`limits`] holds every default limit.
//! - [`embedded`] runs the town's private `redis-server` when no URL is configured.
//! - [`host`] is `tt host`: one runner per agent feeding its mailbox to a Wasm instance made by
//!   [`runtime`]; [`actions`] turns what the role returns into applier operations; [`exec`] is
//!   the one capability that acts in the world; [`lookup`] answers the role's questions.
//! - [`cli`] is the `tt` command line, a thin shell over [`town`].

pub mod actions;
pub mod bench;
pub mod cli;
pub mod config;
pub mod db;
pub mod embedded;
pub mod error;
pub mod exec;
pub mod host;
pub mod keys;
pub mod limits;
pub mod lookup;
pub mod model;
pub mod plugin;
pub mod runtime;
pub mod scaffold;
pub mod streams;
pub mod swap;
pub mod town;
