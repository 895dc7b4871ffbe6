//! The node's replication drivers, the networking over `crate::replication`'s
//! protocol and state: [`master`] serves replicas (PSYNC, full resync by
//! snapshot, the stream, REPLCONF ACK), [`replica`] follows a master
//! (handshake, loading the payload, applying the stream as a master
//! client). They are the only replication code that knows the server.

pub mod master;
pub mod replica;
