//! slotway: a Redis-Cluster-compatible node, a smart-routing proxy and an
//! admin CLI in one crate. A request's path reads in one direction:
//! socket → `resp` → `node::cmd` → `store` (node), or → `proxy` (proxy).

// One malformed request must never panic a thread: index with `.get()`
// (or `cmd::Argv` for command arguments). Scoped to the crate's own
// code; tests may index (clippy.toml allows it in #[cfg(test)]).
#![deny(clippy::indexing_slicing)]

pub mod cli;
pub mod cluster;
pub mod glob;
pub mod gossip;
pub mod node;
pub mod persist;
pub mod proxy;
pub mod replication;
pub mod resp;
pub mod runtime;
pub mod store;
pub mod util;
