//! The cluster bus: the wire codec now; the sans-IO state machine (PING/PONG
//! gossip, failure detection, elections, UPDATE) builds on it with cluster
//! mode.

pub mod wire;
