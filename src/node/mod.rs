//! A slotway node: the listener, client connections, command families and
//! the periodic housekeeping (expiry, LRU clock), plus the drivers that run
//! the lower layers over the server's state: snapshots (`snapshot`), the
//! append-only log (`aof`) and replication links (`replication`). The
//! layers below (`persist`, `replication`, `store`) never import `node`.

pub mod aof;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod connection;
pub mod pubsub;
pub mod replication;
pub mod server;
pub mod shared;
pub mod slowlog;
pub mod snapshot;

pub use server::{run, NodeError};
