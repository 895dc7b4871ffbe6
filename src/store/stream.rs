//! The stream value type: entries keyed by 128-bit IDs, the consumer
//! groups with their pending entries lists, and a model of Redis's
//! macro nodes (the listpacks of its radix tree).
//!
//! Entries live in one ordered map; the node model is kept beside it only
//! because approximate trimming (`MAXLEN ~`, `MINID ~`) removes whole
//! nodes, so the counts it answers depend on where Redis would have cut
//! them. A node closes when it holds `NODE_MAX_ENTRIES` entries (live and
//! deleted) or its listpack would reach `NODE_MAX_BYTES`, the 7.0 defaults.

use super::value::Sds;
use std::collections::{BTreeMap, BTreeSet};

/// stream-node-max-entries (default).
pub const NODE_MAX_ENTRIES: u64 = 100;
/// stream-node-max-bytes (default).
pub const NODE_MAX_BYTES: usize = 4096;

/// A stream entry ID: milliseconds and sequence, ordered as a 128-bit
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    pub fn is_zero(&self) -> bool {
        self.ms == 0 && self.seq == 0
    }

    /// The next ID, None past the last possible one.
    pub fn incr(&self) -> Option<StreamId> {
        if self.seq == u64::MAX {
            if self.ms == u64::MAX {
                None
            } else {
                Some(StreamId::new(self.ms + 1, 0))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq + 1))
        }
    }

    /// The previous ID, None before 0-0.
    pub fn decr(&self) -> Option<StreamId> {
        if self.seq == 0 {
            if self.ms == 0 {
                None
            } else {
                Some(StreamId::new(self.ms - 1, u64::MAX))
            }
        } else {
            Some(StreamId::new(self.ms, self.seq - 1))
        }
    }

    /// The 16 big-endian bytes Redis uses as radix tree key and in RDB.
    pub fn to_be_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn from_be_bytes(b: &[u8]) -> Option<StreamId> {
        let ms = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        Some(StreamId { ms, seq })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One macro node of the model: where Redis's listpack boundaries are.
#[derive(Debug, Clone)]
pub struct Node {
    /// The master entry's fields (those of the node's first entry).
    pub fields: Vec<Sds>,
    pub live: u64,
    pub deleted: u64,
    /// ID of the last entry appended (deleted or not).
    pub last: StreamId,
    /// Listpack bytes other than the header, the terminator and the two
    /// counters at the front (those are sized from `live` and `deleted`).
    pub body: usize,
}

impl Node {
    fn bytes(&self) -> usize {
        6 + 1 + lp_int_size(self.live as i64) + lp_int_size(self.deleted as i64) + self.body
    }
}

/// A pending entry of a group: delivered, not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Nack {
    pub consumer: Sds,
    pub delivery_time: u64,
    pub delivery_count: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Consumer {
    pub seen_time: u64,
    pub pel: BTreeSet<StreamId>,
}

/// A consumer group. `entries_read` is None where Redis holds its
/// "invalid" counter (-1).
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub last_id: StreamId,
    pub entries_read: Option<u64>,
    pub pel: BTreeMap<StreamId, Nack>,
    pub consumers: BTreeMap<Sds, Consumer>,
}

#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// Field-value pairs, flat, per entry.
    pub entries: BTreeMap<StreamId, Vec<Sds>>,
    /// The node model, keyed by each node's master (first) ID.
    pub nodes: BTreeMap<StreamId, Node>,
    pub last_id: StreamId,
    pub max_deleted: StreamId,
    pub entries_added: u64,
    pub groups: BTreeMap<Sds, Group>,
    /// Deleted entries still inside a node (Redis flags them in place): the
    /// edge ID an approximate MINID trim propagates may be one of them.
    pub tombs: BTreeSet<StreamId>,
}

/// How trimming is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

impl Stream {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// First live entry ID, 0-0 when empty (Redis's `first_id`).
    pub fn first_id(&self) -> StreamId {
        self.entries.keys().next().copied().unwrap_or_default()
    }

    /// Last live entry ID, 0-0 when empty (`streamLastValidID`).
    pub fn last_valid_id(&self) -> StreamId {
        self.entries.keys().next_back().copied().unwrap_or_default()
    }

    /// Appends an entry whose ID the caller checked is above `last_id`.
    pub fn append(&mut self, id: StreamId, pairs: Vec<Sds>) {
        let totlen: usize = pairs.iter().map(|p| p.len()).sum();
        let fields: Vec<&Sds> = pairs.iter().step_by(2).collect();
        let tail = self.nodes.iter_mut().next_back();
        let open = match tail {
            Some((_, n)) => {
                n.bytes() + totlen < NODE_MAX_BYTES && n.live + n.deleted < NODE_MAX_ENTRIES
            }
            None => false,
        };
        let numfields = fields.len() as i64;
        if open {
            if let Some((master, n)) = self.nodes.iter_mut().next_back() {
                let same = n.fields.len() == fields.len()
                    && n.fields.iter().zip(&fields).all(|(a, b)| a == *b);
                n.body += entry_size(*master, id, &pairs, same, numfields);
                n.live += 1;
                n.last = id;
            }
        } else {
            let mut body = lp_int_size(numfields);
            body += fields.iter().map(|f| lp_str_size(f)).sum::<usize>();
            body += lp_int_size(0);
            body += entry_size(id, id, &pairs, true, numfields);
            self.nodes.insert(
                id,
                Node {
                    fields: fields.into_iter().cloned().collect(),
                    live: 1,
                    deleted: 0,
                    last: id,
                    body,
                },
            );
        }
        self.entries.insert(id, pairs);
        self.last_id = id;
        self.entries_added += 1;
    }

    /// Marks an entry deleted (XDEL); a node left with no live entry goes.
    pub fn delete(&mut self, id: StreamId) -> bool {
        if self.entries.remove(&id).is_none() {
            return false;
        }
        let master = self.nodes.range(..=id).next_back().map(|(k, _)| *k);
        if let Some(m) = master {
            if let Some(n) = self.nodes.get_mut(&m) {
                n.live = n.live.saturating_sub(1);
                n.deleted += 1;
                if n.live == 0 {
                    self.drop_node(m);
                } else {
                    self.tombs.insert(id);
                }
            }
        }
        true
    }

    /// Trims from the head as Redis's `streamTrim`; `limit` 0 is none.
    /// Returns the number of entries removed.
    pub fn trim(&mut self, how: Trim, approx: bool, limit: u64) -> u64 {
        let mut deleted = 0u64;
        loop {
            if let Trim::MaxLen(max) = how {
                if self.len() as u64 <= max {
                    break;
                }
            }
            let Some((&master, node)) = self.nodes.iter().next() else {
                break;
            };
            let live = node.live;
            if limit != 0 && deleted + live > limit {
                break;
            }
            let remove = match how {
                Trim::MaxLen(max) => self.len() as u64 - live >= max,
                Trim::MinId(min) => node.last < min,
            };
            if remove {
                let next = self
                    .nodes
                    .range(master..)
                    .nth(1)
                    .map(|(k, _)| *k)
                    .unwrap_or(StreamId::MAX);
                let doomed: Vec<StreamId> =
                    self.entries.range(master..next).map(|(k, _)| *k).collect();
                for k in doomed {
                    self.entries.remove(&k);
                }
                self.drop_node(master);
                deleted += live;
                continue;
            }
            if approx {
                break;
            }
            // Within the node: mark entries deleted one by one.
            let ids: Vec<StreamId> = self.entries.range(master..).map(|(k, _)| *k).collect();
            let mut from_node = 0u64;
            for id in ids {
                let stop = match how {
                    Trim::MaxLen(max) => self.len() as u64 <= max,
                    Trim::MinId(min) => id >= min,
                };
                if stop {
                    break;
                }
                self.entries.remove(&id);
                self.tombs.insert(id);
                from_node += 1;
            }
            if let Some(n) = self.nodes.get_mut(&master) {
                n.live -= from_node.min(n.live);
                n.deleted += from_node;
            }
            deleted += from_node;
            break;
        }
        deleted
    }

    /// Forgets a node and the tombstones it held.
    fn drop_node(&mut self, master: StreamId) {
        if let Some(n) = self.nodes.remove(&master) {
            let gone: Vec<StreamId> = self.tombs.range(master..=n.last).copied().collect();
            for t in gone {
                self.tombs.remove(&t);
            }
        }
    }

    /// `streamEstimateDistanceFromFirstEverEntry`: the logical read counter
    /// of `id`, None where it cannot be known.
    pub fn estimate_distance(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        let len = self.len() as u64;
        if len == 0 && id <= self.last_id {
            return Some(self.entries_added);
        }
        if id == self.last_id {
            return Some(self.entries_added);
        }
        if id > self.last_id {
            return None;
        }
        let first = self.first_id();
        if self.max_deleted.is_zero() || self.max_deleted < first {
            if id < first {
                return Some(self.entries_added - len);
            }
            if id == first {
                return Some(self.entries_added - len + 1);
            }
        }
        None
    }

    /// `streamRangeHasTombstones` for `[start, +inf)`.
    pub fn has_tombstones_from(&self, start: StreamId) -> bool {
        if self.is_empty() || self.max_deleted.is_zero() {
            return false;
        }
        if self.first_id() > self.max_deleted {
            return false;
        }
        start <= self.max_deleted
    }

    /// The group's lag as XINFO reports it (None = nil).
    pub fn lag(&self, g: &Group) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if let Some(read) = g.entries_read {
            if !self.has_tombstones_from(g.last_id) {
                return Some(self.entries_added.saturating_sub(read));
            }
        }
        self.estimate_distance(g.last_id)
            .map(|r| self.entries_added.saturating_sub(r))
    }

    /// Moves the group's last delivered ID to `id`, keeping its read
    /// counter as Redis does when it delivers `id`.
    pub fn advance_group(&mut self, group: &[u8], id: StreamId) {
        let tomb = self.has_tombstones_from(id);
        let est = self.estimate_distance(id);
        let added = self.entries_added;
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if id <= g.last_id {
            return;
        }
        match g.entries_read {
            Some(r) if !tomb => g.entries_read = Some(r + 1),
            _ if added != 0 => g.entries_read = est,
            _ => {}
        }
        g.last_id = id;
    }

    /// Rebuilds the node model from whole listpack nodes as loaded (RDB):
    /// `(master id, master fields, live, deleted, last id, body bytes)`.
    pub fn push_loaded_node(&mut self, master: StreamId, node: Node) {
        self.nodes.insert(master, node);
    }
}

impl Group {
    /// Removes a pending entry from the group and its consumer.
    pub fn ack(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(n) => {
                if let Some(c) = self.consumers.get_mut(&n.consumer) {
                    c.pel.remove(&id);
                }
                true
            }
            None => false,
        }
    }
}

// ---- listpack sizes ----------------------------------------------------

/// Redis's `lpStringToInt64`: the strings a listpack stores as integers.
pub fn lp_as_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let v = crate::resp::parse_i64(s)?;
    let mut buf = itoa::Buffer::new();
    (buf.format(v).as_bytes() == s).then_some(v)
}

fn backlen_size(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// Bytes of an integer element (encoding plus back length).
pub fn lp_int_size(v: i64) -> usize {
    let enc = if (0..=127).contains(&v) {
        1
    } else if (-4096..=4095).contains(&v) {
        2
    } else if i16::try_from(v).is_ok() {
        3
    } else if (-(1 << 23)..(1 << 23)).contains(&v) {
        4
    } else if i32::try_from(v).is_ok() {
        5
    } else {
        9
    };
    enc + backlen_size(enc)
}

/// Bytes of a string element, stored as an integer when it is one.
pub fn lp_str_size(s: &[u8]) -> usize {
    if let Some(v) = lp_as_int(s) {
        return lp_int_size(v);
    }
    let enc = match s.len() {
        0..=63 => 1 + s.len(),
        64..=4095 => 2 + s.len(),
        _ => 5 + s.len(),
    };
    enc + backlen_size(enc)
}

/// Listpack bytes of one entry appended to the node of `master`.
fn entry_size(master: StreamId, id: StreamId, pairs: &[Sds], same: bool, numfields: i64) -> usize {
    let flags = if same { 2 } else { 0 };
    let mut n = lp_int_size(flags);
    n += lp_int_size(id.ms.wrapping_sub(master.ms) as i64);
    n += lp_int_size(id.seq.wrapping_sub(master.seq) as i64);
    let mut lp_count = numfields + 3;
    if same {
        n += pairs
            .iter()
            .skip(1)
            .step_by(2)
            .map(|v| lp_str_size(v))
            .sum::<usize>();
    } else {
        n += lp_int_size(numfields);
        n += pairs.iter().map(|v| lp_str_size(v)).sum::<usize>();
        lp_count += numfields + 1;
    }
    n + lp_int_size(lp_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sds;

    fn add(s: &mut Stream, ms: u64) {
        s.append(StreamId::new(ms, 0), vec![sds(b"f"), sds(b"v")]);
    }

    #[test]
    fn nodes_close_at_one_hundred_entries_and_approx_trim_removes_whole_nodes() {
        let mut s = Stream::default();
        for i in 1..=250 {
            add(&mut s, i);
        }
        assert_eq!(s.nodes.len(), 3);
        assert_eq!(s.trim(Trim::MaxLen(120), true, 10_000), 100);
        assert_eq!(s.len(), 150);
        assert_eq!(s.trim(Trim::MaxLen(120), false, 0), 30);
        assert_eq!(s.first_id(), StreamId::new(131, 0));
        assert_eq!(s.trim(Trim::MinId(StreamId::new(201, 0)), true, 0), 70);
    }

    #[test]
    fn listpack_sizes() {
        assert_eq!(lp_str_size(b"1"), 2);
        assert_eq!(lp_str_size(b"01"), 4);
        assert_eq!(lp_str_size(b"1000"), 3);
        assert_eq!(lp_int_size(-1), 3);
        assert_eq!(lp_str_size(&[b'a'; 70]), 73);
    }

    #[test]
    fn id_steps() {
        assert_eq!(StreamId::new(1, u64::MAX).incr(), Some(StreamId::new(2, 0)));
        assert_eq!(StreamId::MAX.incr(), None);
        assert_eq!(StreamId::new(2, 0).decr(), Some(StreamId::new(1, u64::MAX)));
        assert_eq!(StreamId::MIN.decr(), None);
        let id = StreamId::new(7, 9);
        assert_eq!(StreamId::from_be_bytes(&id.to_be_bytes()), Some(id));
    }
}
