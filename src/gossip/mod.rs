//! The cluster bus: the wire codec and the sans-IO state machine (discovery,
//! PING/PONG, failure detection, slot ownership by epoch). Elections and
//! UPDATE messages arrive with failover.

pub mod state;
pub mod wire;
