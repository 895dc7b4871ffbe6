//! A slotway node: the listener, client connections, command families and
//! the periodic housekeeping (expiry, LRU clock).

pub mod aof;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod connection;
pub mod pubsub;
pub mod server;
pub mod shared;
pub mod snapshot;

pub use server::{run, NodeError};
