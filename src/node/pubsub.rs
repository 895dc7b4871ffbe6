//! The pub/sub registry: which clients listen on which channels, patterns
//! and shard channels, and delivery of published messages to their queues.
//!
//! Delivery never blocks a publisher: each subscriber has a bounded queue,
//! and one that falls that far behind is disconnected (Redis's pubsub
//! output-buffer limit does the same).

use crate::glob::glob_match;
use crate::node::client::ClientHandle;
use crate::resp::Reply;
use bytes::Bytes;
use hashbrown::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc::{error::TrySendError, Sender};

/// A subscriber's mailbox and the handle used to cut it off.
#[derive(Clone)]
pub struct Subscriber {
    pub tx: Sender<Reply>,
    pub handle: Arc<ClientHandle>,
}

type Subs = HashMap<Bytes, HashMap<u64, Subscriber>>;

#[derive(Default)]
pub struct PubSub {
    channels: Subs,
    patterns: Subs,
    shard: Subs,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

fn deliver(sub: &Subscriber, msg: Reply) -> bool {
    match sub.tx.try_send(msg) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            tracing::warn!(
                client = sub.handle.id,
                "pubsub queue full, disconnecting subscriber"
            );
            sub.handle.killed.store(true, Ordering::Release);
            sub.handle.kill.notify_one();
            false
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

impl PubSub {
    fn map(&mut self, kind: Kind) -> &mut Subs {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard,
        }
    }

    pub fn subscribe(&mut self, kind: Kind, name: &Bytes, sub: Subscriber) {
        self.map(kind)
            .entry(name.clone())
            .or_default()
            .insert(sub.handle.id, sub);
    }

    pub fn unsubscribe(&mut self, kind: Kind, name: &[u8], id: u64) {
        let m = self.map(kind);
        if let Some(subs) = m.get_mut(name) {
            subs.remove(&id);
            if subs.is_empty() {
                m.remove(name);
            }
        }
    }

    /// Drops every subscription of a departing client.
    pub fn remove_client(&mut self, id: u64) {
        for m in [&mut self.channels, &mut self.patterns, &mut self.shard] {
            m.retain(|_, subs| {
                subs.remove(&id);
                !subs.is_empty()
            });
        }
    }

    /// PUBLISH: channel subscribers and matching patterns. Returns how many
    /// clients received it.
    pub fn publish(&mut self, channel: &Bytes, message: &Bytes) -> usize {
        let mut n = 0;
        if let Some(subs) = self.channels.get(channel) {
            for s in subs.values() {
                let msg = Reply::Push(vec![
                    Reply::bulk("message"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(message.clone()),
                ]);
                n += usize::from(deliver(s, msg));
            }
        }
        for (pattern, subs) in &self.patterns {
            if glob_match(pattern, channel, false) {
                for s in subs.values() {
                    let msg = Reply::Push(vec![
                        Reply::bulk("pmessage"),
                        Reply::Bulk(pattern.clone()),
                        Reply::Bulk(channel.clone()),
                        Reply::Bulk(message.clone()),
                    ]);
                    n += usize::from(deliver(s, msg));
                }
            }
        }
        n
    }

    /// SPUBLISH: shard channel subscribers only.
    pub fn publish_shard(&mut self, channel: &Bytes, message: &Bytes) -> usize {
        let mut n = 0;
        if let Some(subs) = self.shard.get(channel) {
            for s in subs.values() {
                let msg = Reply::Push(vec![
                    Reply::bulk("smessage"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(message.clone()),
                ]);
                n += usize::from(deliver(s, msg));
            }
        }
        n
    }

    /// Active channel names (PUBSUB CHANNELS / SHARDCHANNELS).
    pub fn names(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let m = match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard,
        };
        m.keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c, false)))
            .cloned()
            .collect()
    }

    pub fn count(&self, kind: Kind, name: &[u8]) -> usize {
        let m = match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard,
        };
        m.get(name).map_or(0, HashMap::len)
    }

    /// Number of distinct patterns (PUBSUB NUMPAT).
    pub fn numpat(&self) -> usize {
        self.patterns.len()
    }
}
