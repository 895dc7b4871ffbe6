//! Cluster model shared by the node, the proxy and the CLI: hash slots, node
//! ids, flags, epochs, which arguments of a command are keys, and the
//! `CLUSTER NODES` / nodes.conf formats. Pure
//! functions and data only; the bus state machine builds on this.

pub mod keyspec;
pub mod slot;
pub mod topology;

pub use slot::{key_hash_slot, SLOTS};
