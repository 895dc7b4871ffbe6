//! Cluster model shared by the node, the proxy and the CLI: hash slots.
//! Pure functions only; the bus and the slot map arrive with cluster mode.

pub mod slot;

pub use slot::{key_hash_slot, SLOTS};
