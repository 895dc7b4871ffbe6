//! The pub/sub registry: which clients listen on which channels, patterns
//! and shard channels, and delivery of published messages to their queues.
//!
//! Delivery never blocks a publisher: each subscriber has a bounded queue,
//! and one that falls that far behind is disconnected (Redis's pubsub
//! output-buffer limit does the same).

use crate::glob::glob_match;
use crate::node::client::ClientHandle;
use crate::resp::Reply;
use crate::runtime::clock::mono_ms;
use crate::runtime::config::OutputLimit;
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

/// What a queued message counts against the pubsub output-buffer limit:
/// about its RESP size. The connection takes the same amount off when it
/// writes the message out.
pub fn push_cost(msg: &Reply) -> u64 {
    match msg {
        Reply::Push(items) | Reply::Array(items) => {
            8 + items
                .iter()
                .map(|i| match i {
                    Reply::Bulk(b) => b.len() as u64 + 16,
                    _ => 16,
                })
                .sum::<u64>()
        }
        _ => 16,
    }
}

/// Queues `msg` for `sub`, or disconnects a subscriber whose queue broke
/// the pubsub output-buffer limit (as Redis does; the publisher is never
/// held up by a slow reader).
fn deliver(sub: &Subscriber, msg: Reply, limit: &OutputLimit) -> bool {
    let h = &sub.handle;
    if h.killed.load(Ordering::Acquire) {
        return false;
    }
    let cost = push_cost(&msg);
    let pending = h.push_bytes.fetch_add(cost, Ordering::AcqRel) + cost;
    let now = mono_ms();
    let mut since = match h.push_soft_since.load(Ordering::Acquire) {
        0 => None,
        t => Some(t),
    };
    let over = limit.exceeded(pending, &mut since, now);
    h.push_soft_since
        .store(since.unwrap_or(0), Ordering::Release);
    let full = !over
        && match sub.tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Closed(_)) => false,
        };
    h.push_bytes.fetch_sub(cost, Ordering::AcqRel);
    if over || full {
        h.log_output_limit_close(pending);
        h.killed.store(true, Ordering::Release);
        h.kill.notify_one();
    }
    false
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
    pub fn publish(&mut self, channel: &Bytes, message: &Bytes, limit: &OutputLimit) -> usize {
        let mut n = 0;
        if let Some(subs) = self.channels.get(channel) {
            for s in subs.values() {
                let msg = Reply::Push(vec![
                    Reply::bulk("message"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(message.clone()),
                ]);
                n += usize::from(deliver(s, msg, limit));
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
                    n += usize::from(deliver(s, msg, limit));
                }
            }
        }
        n
    }

    /// SPUBLISH: shard channel subscribers only.
    pub fn publish_shard(
        &mut self,
        channel: &Bytes,
        message: &Bytes,
        limit: &OutputLimit,
    ) -> usize {
        let mut n = 0;
        if let Some(subs) = self.shard.get(channel) {
            for s in subs.values() {
                let msg = Reply::Push(vec![
                    Reply::bulk("smessage"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(message.clone()),
                ]);
                n += usize::from(deliver(s, msg, limit));
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
