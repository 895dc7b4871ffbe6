//! Streams in RDB as Redis 7.0 writes them (`RDB_TYPE_STREAM_LISTPACKS_2`):
//! one listpack per macro node, keyed by its master ID, then the stream's
//! counters, then each consumer group with its pending entries and
//! consumers. Loading also reads types 15 (6.x) and 21 (7.2), and rebuilds
//! the node model from the listpacks so approximate trimming after a
//! reload cuts where Redis would.

use super::{corrupt, listpack, put_len, put_string, Input, RdbError};
use crate::resp::parse_i64;
use crate::store::stream::{lp_as_int, Consumer, Group, Nack, Node, Stream, StreamId};
use crate::store::value::{sds, Sds};
use std::io::Read;

const FLAG_DELETED: i64 = 1;
const FLAG_SAMEFIELDS: i64 = 2;

// ---- listpack writing -------------------------------------------------------

struct Lp {
    body: Vec<u8>,
    count: usize,
}

impl Lp {
    fn new() -> Lp {
        Lp {
            body: Vec::new(),
            count: 0,
        }
    }

    fn backlen(&mut self, l: usize) {
        let l = l as u64;
        let b = &mut self.body;
        if l <= 127 {
            b.push(l as u8);
        } else if l < 16383 {
            b.extend_from_slice(&[(l >> 7) as u8, (l & 127) as u8 | 128]);
        } else if l < 2097151 {
            b.extend_from_slice(&[
                (l >> 14) as u8,
                ((l >> 7) & 127) as u8 | 128,
                (l & 127) as u8 | 128,
            ]);
        } else if l < 268435455 {
            b.extend_from_slice(&[
                (l >> 21) as u8,
                ((l >> 14) & 127) as u8 | 128,
                ((l >> 7) & 127) as u8 | 128,
                (l & 127) as u8 | 128,
            ]);
        } else {
            b.extend_from_slice(&[
                (l >> 28) as u8,
                ((l >> 21) & 127) as u8 | 128,
                ((l >> 14) & 127) as u8 | 128,
                ((l >> 7) & 127) as u8 | 128,
                (l & 127) as u8 | 128,
            ]);
        }
    }

    fn int(&mut self, v: i64) {
        let start = self.body.len();
        let b = &mut self.body;
        if (0..=127).contains(&v) {
            b.push(v as u8);
        } else if (-4096..=4095).contains(&v) {
            let u = if v < 0 { (1 << 13) + v } else { v } as u64;
            b.extend_from_slice(&[0xC0 | ((u >> 8) as u8 & 0x1f), u as u8]);
        } else if i16::try_from(v).is_ok() {
            b.push(0xF1);
            b.extend_from_slice(&(v as i16).to_le_bytes());
        } else if (-(1 << 23)..(1 << 23)).contains(&v) {
            let u = if v < 0 { (1 << 24) + v } else { v } as u32;
            b.push(0xF2);
            b.extend_from_slice(&u.to_le_bytes()[..3]);
        } else if i32::try_from(v).is_ok() {
            b.push(0xF3);
            b.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            b.push(0xF4);
            b.extend_from_slice(&v.to_le_bytes());
        }
        let l = self.body.len() - start;
        self.backlen(l);
        self.count += 1;
    }

    fn string(&mut self, s: &[u8]) {
        if let Some(v) = lp_as_int(s) {
            return self.int(v);
        }
        let start = self.body.len();
        let b = &mut self.body;
        let n = s.len();
        if n < 64 {
            b.push(0x80 | n as u8);
        } else if n < 4096 {
            b.extend_from_slice(&[0xE0 | (n >> 8) as u8, n as u8]);
        } else {
            b.push(0xF0);
            b.extend_from_slice(&(n as u32).to_le_bytes());
        }
        b.extend_from_slice(s);
        let l = self.body.len() - start;
        self.backlen(l);
        self.count += 1;
    }

    fn finish(self) -> Vec<u8> {
        let total = 6 + self.body.len() + 1;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&(self.count.min(65535) as u16).to_le_bytes());
        out.extend_from_slice(&self.body);
        out.push(0xFF);
        out
    }
}

/// One node's listpack: master entry, then its entries (tombstones
/// written as deleted entries with empty values, as they carry no data
/// anyone can read).
fn node_listpack(s: &Stream, master: StreamId, node: &Node, end: StreamId) -> Vec<u8> {
    let mut lp = Lp::new();
    let live: Vec<(&StreamId, &Vec<Sds>)> = s.entries.range(master..=end).collect();
    let tombs: Vec<StreamId> = s.tombs.range(master..=end).copied().collect();
    lp.int(live.len() as i64);
    lp.int(tombs.len() as i64);
    lp.int(node.fields.len() as i64);
    for f in &node.fields {
        lp.string(f);
    }
    lp.int(0);
    let mut all: Vec<(StreamId, Option<&Vec<Sds>>)> =
        live.iter().map(|(k, v)| (**k, Some(*v))).collect();
    all.extend(tombs.into_iter().map(|t| (t, None)));
    all.sort_by_key(|e| e.0);
    for (id, pairs) in all {
        let ms = id.ms.wrapping_sub(master.ms) as i64;
        let seq = id.seq.wrapping_sub(master.seq) as i64;
        match pairs {
            None => {
                lp.int(FLAG_DELETED | FLAG_SAMEFIELDS);
                lp.int(ms);
                lp.int(seq);
                for _ in &node.fields {
                    lp.string(b"");
                }
                lp.int(node.fields.len() as i64 + 3);
            }
            Some(p) => {
                let nf = p.len() / 2;
                let same = nf == node.fields.len()
                    && p.iter().step_by(2).zip(&node.fields).all(|(a, b)| a == b);
                lp.int(if same { FLAG_SAMEFIELDS } else { 0 });
                lp.int(ms);
                lp.int(seq);
                if same {
                    for v in p.iter().skip(1).step_by(2) {
                        lp.string(v);
                    }
                    lp.int(nf as i64 + 3);
                } else {
                    lp.int(nf as i64);
                    for x in p {
                        lp.string(x);
                    }
                    lp.int(2 * nf as i64 + 4);
                }
            }
        }
    }
    lp.finish()
}

fn put_ms(out: &mut Vec<u8>, t: u64) {
    out.extend_from_slice(&t.to_le_bytes());
}

/// The body of a stream value (after its type byte).
pub(super) fn put_stream(out: &mut Vec<u8>, s: &Stream) {
    put_len(out, s.nodes.len() as u64);
    let masters: Vec<StreamId> = s.nodes.keys().copied().collect();
    for (i, (master, node)) in s.nodes.iter().enumerate() {
        // A node's entries run up to the next node's master.
        let end = masters
            .get(i + 1)
            .and_then(|n| n.decr())
            .unwrap_or(StreamId::MAX);
        put_string(out, &master.to_be_bytes());
        put_string(out, &node_listpack(s, *master, node, end));
    }
    put_len(out, s.len() as u64);
    put_len(out, s.last_id.ms);
    put_len(out, s.last_id.seq);
    let first = s.first_id();
    put_len(out, first.ms);
    put_len(out, first.seq);
    put_len(out, s.max_deleted.ms);
    put_len(out, s.max_deleted.seq);
    put_len(out, s.entries_added);
    put_len(out, s.groups.len() as u64);
    for (name, g) in &s.groups {
        put_string(out, name);
        put_len(out, g.last_id.ms);
        put_len(out, g.last_id.seq);
        put_len(out, g.entries_read.unwrap_or(u64::MAX));
        put_len(out, g.pel.len() as u64);
        for (id, n) in &g.pel {
            out.extend_from_slice(&id.to_be_bytes());
            put_ms(out, n.delivery_time);
            put_len(out, n.delivery_count);
        }
        put_len(out, g.consumers.len() as u64);
        for (cname, c) in &g.consumers {
            put_string(out, cname);
            put_ms(out, c.seen_time);
            put_len(out, c.pel.len() as u64);
            for id in &c.pel {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
}

// ---- reading ------------------------------------------------------------------

fn int_of(e: Option<&Sds>) -> Result<i64, RdbError> {
    e.and_then(|s| parse_i64(s))
        .ok_or(corrupt("stream listpack: integer expected"))
}

/// Adds one node's entries to `s` and returns its model.
fn load_node(s: &mut Stream, master: StreamId, lp: &[u8]) -> Result<Node, RdbError> {
    let els = listpack(lp)?;
    if els.is_empty() {
        return Err(corrupt("empty stream listpack"));
    }
    let bad = || corrupt("stream listpack: truncated entry");
    let mut it = els.iter();
    let live = int_of(it.next())?;
    let deleted = int_of(it.next())?;
    let nmaster = usize::try_from(int_of(it.next())?).map_err(|_| bad())?;
    let mut fields = Vec::with_capacity(nmaster.min(1024));
    for _ in 0..nmaster {
        fields.push(it.next().ok_or_else(bad)?.clone());
    }
    if int_of(it.next())? != 0 {
        return Err(corrupt("stream listpack: master entry terminator"));
    }
    let mut last = master;
    let mut body = crate::store::stream::lp_int_size(nmaster as i64)
        + fields
            .iter()
            .map(|f| crate::store::stream::lp_str_size(f))
            .sum::<usize>()
        + crate::store::stream::lp_int_size(0);
    let mut seen = 0i64;
    while let Some(flags) = it.next() {
        let flags = int_of(Some(flags))?;
        let ms = int_of(it.next())?;
        let seq = int_of(it.next())?;
        let id = StreamId::new(
            master.ms.wrapping_add(ms as u64),
            master.seq.wrapping_add(seq as u64),
        );
        let mut pairs = Vec::new();
        let mut item_size = crate::store::stream::lp_int_size(flags)
            + crate::store::stream::lp_int_size(ms)
            + crate::store::stream::lp_int_size(seq);
        if flags & FLAG_SAMEFIELDS != 0 {
            for f in &fields {
                let v = it.next().ok_or_else(bad)?;
                item_size += crate::store::stream::lp_str_size(v);
                pairs.push(f.clone());
                pairs.push(v.clone());
            }
        } else {
            let n = int_of(it.next())?;
            item_size += crate::store::stream::lp_int_size(n);
            for _ in 0..n.max(0) {
                let f = it.next().ok_or_else(bad)?;
                let v = it.next().ok_or_else(bad)?;
                item_size +=
                    crate::store::stream::lp_str_size(f) + crate::store::stream::lp_str_size(v);
                pairs.push(f.clone());
                pairs.push(v.clone());
            }
        }
        let lp_count = int_of(it.next())?;
        item_size += crate::store::stream::lp_int_size(lp_count);
        body += item_size;
        if flags & FLAG_DELETED != 0 {
            s.tombs.insert(id);
        } else {
            s.entries.insert(id, pairs);
        }
        last = id;
        seen += 1;
    }
    if seen != live + deleted {
        return Err(corrupt("stream listpack: entry count"));
    }
    Ok(Node {
        fields,
        live: live as u64,
        deleted: deleted as u64,
        last,
        body,
    })
}

fn id_of<R: Read>(inp: &mut Input<R>) -> Result<StreamId, RdbError> {
    Ok(StreamId::new(inp.len()?, inp.len()?))
}

fn raw_id<R: Read>(inp: &mut Input<R>) -> Result<StreamId, RdbError> {
    let b: [u8; 16] = inp.array()?;
    StreamId::from_be_bytes(&b).ok_or(corrupt("stream ID"))
}

/// Reads a stream of type 15, 19 or 21 (`version` 1, 2 or 3).
pub(super) fn read_stream<R: Read>(inp: &mut Input<R>, version: u8) -> Result<Stream, RdbError> {
    let mut s = Stream::default();
    let nodes = inp.len()?;
    for _ in 0..nodes {
        let key = inp.string()?;
        let master = StreamId::from_be_bytes(&key)
            .filter(|_| key.len() == 16)
            .ok_or(corrupt("stream node key"))?;
        let lp = inp.string()?;
        let node = load_node(&mut s, master, &lp)?;
        if node.live == 0 {
            // Redis never saves a node without live entries; drop it.
            continue;
        }
        s.nodes.insert(master, node);
    }
    let length = inp.len()?;
    if length != s.len() as u64 {
        return Err(corrupt("stream length"));
    }
    s.last_id = id_of(inp)?;
    if version >= 2 {
        let _first = id_of(inp)?;
        s.max_deleted = id_of(inp)?;
        s.entries_added = inp.len()?;
    } else {
        s.entries_added = length;
    }
    let ngroups = inp.len()?;
    for _ in 0..ngroups {
        let name = sds(&inp.string()?);
        let mut g = Group {
            last_id: id_of(inp)?,
            ..Group::default()
        };
        if version >= 2 {
            let r = inp.len()?;
            g.entries_read = (r != u64::MAX).then_some(r);
        } else {
            g.entries_read = s.estimate_distance(g.last_id);
        }
        let npel = inp.len()?;
        for _ in 0..npel {
            let id = raw_id(inp)?;
            let t = u64::from_le_bytes(inp.array()?);
            let count = inp.len()?;
            g.pel.insert(
                id,
                Nack {
                    consumer: Sds::default(),
                    delivery_time: t,
                    delivery_count: count,
                },
            );
        }
        let nconsumers = inp.len()?;
        for _ in 0..nconsumers {
            let cname = sds(&inp.string()?);
            let seen = u64::from_le_bytes(inp.array()?);
            if version >= 3 {
                // 7.2 adds the active time after the seen time.
                let _active: [u8; 8] = inp.array()?;
            }
            let mut c = Consumer {
                seen_time: seen,
                ..Consumer::default()
            };
            let n = inp.len()?;
            for _ in 0..n {
                let id = raw_id(inp)?;
                let nack = g
                    .pel
                    .get_mut(&id)
                    .ok_or(corrupt("consumer PEL entry not in the group PEL"))?;
                nack.consumer = cname.clone();
                c.pel.insert(id);
            }
            g.consumers.insert(cname, c);
        }
        if g.pel.values().any(|n| n.consumer.is_empty()) {
            return Err(corrupt("group PEL entry without a consumer"));
        }
        s.groups.insert(name, g);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listpack_round_trips_through_the_reader() {
        let mut lp = Lp::new();
        for v in [
            0i64,
            127,
            128,
            -1,
            4095,
            -4096,
            30000,
            -30000,
            1 << 22,
            -(1 << 22),
            1 << 30,
            i64::MIN,
        ] {
            lp.int(v);
        }
        lp.string(b"hello");
        lp.string(&[b'x'; 100]);
        lp.string(&[b'y'; 5000]);
        let b = lp.finish();
        let got = listpack(&b).unwrap();
        let want: Vec<String> = [
            0i64,
            127,
            128,
            -1,
            4095,
            -4096,
            30000,
            -30000,
            1 << 22,
            -(1 << 22),
            1 << 30,
            i64::MIN,
        ]
        .iter()
        .map(|v| v.to_string())
        .collect();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.as_slice(), w.as_bytes());
        }
        assert_eq!(got[12].as_slice(), b"hello");
        assert_eq!(got[13].len(), 100);
        assert_eq!(got[14].len(), 5000);
    }

    #[test]
    fn stream_round_trips() {
        let mut s = Stream::default();
        for i in 1..=150u64 {
            s.append(
                StreamId::new(i, 0),
                vec![sds(b"f"), sds(i.to_string().as_bytes())],
            );
        }
        s.append(
            StreamId::new(200, 1),
            vec![sds(b"other"), sds(b"x"), sds(b"g"), sds(b"y")],
        );
        s.delete(StreamId::new(3, 0));
        s.max_deleted = StreamId::new(3, 0);
        let mut g = Group {
            last_id: StreamId::new(5, 0),
            entries_read: Some(5),
            ..Group::default()
        };
        g.pel.insert(
            StreamId::new(4, 0),
            Nack {
                consumer: sds(b"alice"),
                delivery_time: 1234,
                delivery_count: 2,
            },
        );
        let mut c = Consumer {
            seen_time: 99,
            ..Consumer::default()
        };
        c.pel.insert(StreamId::new(4, 0));
        g.consumers.insert(sds(b"alice"), c);
        s.groups.insert(sds(b"grp"), g);
        let mut out = Vec::new();
        put_stream(&mut out, &s);
        let mut inp = Input {
            inner: &out[..],
            digest: super::super::CRC64.digest(),
        };
        let back = read_stream(&mut inp, 2).unwrap();
        assert!(inp.inner.is_empty());
        assert_eq!(back.len(), s.len());
        assert_eq!(back.entries, s.entries);
        assert_eq!(back.tombs, s.tombs);
        assert_eq!(back.nodes.len(), s.nodes.len());
        for ((ka, a), (kb, b)) in back.nodes.iter().zip(&s.nodes) {
            assert_eq!(
                (ka, a.live, a.deleted, a.last, a.body),
                (kb, b.live, b.deleted, b.last, b.body)
            );
        }
        assert_eq!(back.last_id, s.last_id);
        assert_eq!(back.entries_added, s.entries_added);
        let g = &back.groups[&b"grp"[..]];
        assert_eq!(g.pel[&StreamId::new(4, 0)].consumer.as_slice(), b"alice");
        assert_eq!(g.entries_read, Some(5));
    }
}
