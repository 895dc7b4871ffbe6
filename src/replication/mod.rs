//! Replication: the propagation stream every write feeds, replication ids
//! and offsets, the backlog, and the master and replica sides of Redis's
//! replication protocol (PSYNC, full and partial resync, REPLCONF ACK).
//!
//! The protocol logic is sans-IO and testable without sockets; the drivers
//! around it do the networking.

pub mod propagate;

use std::sync::{Mutex, MutexGuard};

/// A new random replication id (40 hex characters), as Redis makes one
/// at start and at each promotion.
pub fn new_replid() -> String {
    (0..40)
        .map(|_| {
            let v: u32 = rand::random::<u32>() % 16;
            char::from_digit(v, 16).unwrap_or('0')
        })
        .collect()
}

/// The replication stream's identity and position.
#[derive(Debug)]
pub struct Feed {
    pub replid: String,
    /// The id we had as a replica before a promotion (PSYNC continuation
    /// for former siblings), and the offset up to which it is valid.
    pub replid2: String,
    pub second_offset: Option<u64>,
    /// master_repl_offset: bytes of stream produced (or, on a replica,
    /// received from the master) so far.
    pub offset: u64,
}

/// Replication state shared by the node.
pub struct Repl {
    feed: Mutex<Feed>,
}

impl Default for Repl {
    fn default() -> Self {
        Self::new()
    }
}

impl Repl {
    pub fn new() -> Self {
        Repl {
            feed: Mutex::new(Feed {
                replid: new_replid(),
                replid2: "0".repeat(40),
                second_offset: None,
                offset: 0,
            }),
        }
    }

    pub fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (replication id, offset) of the stream now. Read under the keyspace
    /// lock it is the position of the keyspace's current state.
    pub fn position(&self) -> (String, u64) {
        let f = self.feed();
        (f.replid.clone(), f.offset)
    }
}
