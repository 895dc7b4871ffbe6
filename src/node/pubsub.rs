//! The pub/sub registry: which clients listen on which channels, patterns
//! and shard channels, and delivery of published messages to their queues.

/// Subscriptions of every client of this node.
#[derive(Default)]
pub struct PubSub {}

impl PubSub {
    /// Drops every subscription of a departing client.
    pub fn remove_client(&mut self, _id: u64) {}
}
