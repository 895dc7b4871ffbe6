//! Replication: the propagation stream every write feeds, replication ids
//! and offsets, the backlog, and the master and replica sides of Redis's
//! replication protocol (PSYNC, full and partial resync, REPLCONF ACK).
//!
//! The protocol logic is sans-IO and testable without sockets; the drivers
//! around it do the networking.

pub mod propagate;
