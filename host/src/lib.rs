//! tinytown: a town of agents whose mailboxes and tasks live in Redis and whose roles run as
//! sandboxed WebAssembly components.
//!
//! The crate is in layers that only point down (ARCHITECTURE.md at the repository root is the
//! map; `tests/layers.rs` fails when a module imports upward):
//!
//! 1. [`store`]: config, limits, errors, keys, records, streams, connections, the embedded
//!    Redis and the applier (the one write path). No wasmtime.
//! 2. [`town`]: the services, everything a person or a host can do to a town.
//! 3. [`runtime`]: roles as Wasm components: bindings, engine, cache, instances, capabilities.
//! 4. [`host`]: `tt host`, the serving loop; swaps.
//! 5. [`cli`] (the `tt` command line), with the tools beside it: [`scaffold`] (`tt plugin new`)
//!    and [`bench`] (`tt bench`), and [`serve`] (`tt serve`, `tt mcp`: HTTP, MCP, dashboard).

pub mod bench;
pub mod cli;
pub mod host;
pub mod runtime;
pub mod scaffold;
pub mod serve;
pub mod store;
pub mod town;
