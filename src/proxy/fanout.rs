//! Commands that need more than one node: multi-key commands split per slot
//! (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) and keyless commands sent to
//! every master (DBSIZE, KEYS, FLUSHALL, SCRIPT LOAD ...), and how their
//! replies are merged back in the client's order. SCAN's composite cursor
//! lives here too.
//!
//! Sub-requests are plain [`Routed`] requests addressed by slot, so each one
//! follows redirects and survives a failover on its own.

use crate::cluster::key_hash_slot;
use crate::proxy::commands::{Merge, Split};
use crate::proxy::forward::{error_frame, Routed, Target};
use crate::proxy::metrics::Outcome;
use crate::proxy::router::SlotMap;
use crate::proxy::Proxy;
use crate::resp::encode_command;
use crate::resp::scan::{array_elements, integer, text};
use crate::resp::{Proto, Reply};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

/// How sub-replies become the client's reply.
pub enum Plan {
    /// For each key of the request, in order: (sub-request, element).
    Mget(Vec<(usize, usize)>),
    Mset,
    Count,
    All(Merge),
    /// INFO: the proxy's own sections (`head`) and the masters' Keyspace
    /// sections summed, encoded for the client's protocol.
    Info {
        head: String,
        resp3: bool,
    },
}

pub struct Fanout {
    pub subs: Vec<Routed>,
    pub plan: Plan,
}

/// Splits a multi-key command by slot. `None` when every key is in one
/// slot: the command then goes as it is, to one node.
pub fn split(
    deadline: Instant,
    kind: Split,
    args: &[Bytes],
    positions: &[usize],
    readonly: bool,
) -> Option<Fanout> {
    let slots: Vec<u16> = positions
        .iter()
        .map(|&i| args.get(i).map_or(0, |k| key_hash_slot(k)))
        .collect();
    let first = *slots.first()?;
    if slots.iter().all(|s| *s == first) {
        return None;
    }
    let name = args.first().cloned().unwrap_or_default();
    // Groups in order of first appearance, each with its arguments.
    let mut groups: Vec<(u16, Vec<&[u8]>)> = Vec::new();
    let mut where_: Vec<(usize, usize)> = Vec::with_capacity(positions.len());
    for (&pos, &slot) in positions.iter().zip(&slots) {
        let g = match groups.iter().position(|(s, _)| *s == slot) {
            Some(g) => g,
            None => {
                groups.push((slot, vec![&name[..]]));
                groups.len() - 1
            }
        };
        let Some((_, a)) = groups.get_mut(g) else {
            continue;
        };
        let key = args.get(pos).map_or(&[][..], |b| &b[..]);
        where_.push((g, a.len() - 1));
        a.push(key);
        if kind == Split::Mset {
            let val = args.get(pos + 1).map_or(&[][..], |b| &b[..]);
            a.push(val);
        }
    }
    let subs = groups
        .iter()
        .map(|(slot, a)| {
            let mut out = BytesMut::new();
            encode_command(&mut out, a);
            Routed::new(out.freeze(), Target::Slot(*slot), deadline, readonly)
        })
        .collect();
    let plan = match kind {
        Split::Mget => Plan::Mget(where_),
        Split::Mset => Plan::Mset,
        Split::Count => Plan::Count,
    };
    Some(Fanout { subs, plan })
}

/// INFO with a Keyspace section: `INFO keyspace` to every master, merged
/// under the proxy's own sections. None without a topology.
pub fn info(proxy: &Proxy, sections: &[Bytes], resp3: bool, deadline: Instant) -> Option<Fanout> {
    let mut frame = BytesMut::new();
    encode_command(&mut frame, &[&b"INFO"[..], b"keyspace"]);
    let mut f = all_masters(proxy, &frame.freeze(), Merge::AllOk, deadline, true);
    if f.subs.is_empty() {
        return None;
    }
    f.plan = Plan::Info {
        head: crate::proxy::local::info_sections(proxy, sections),
        resp3,
    };
    Some(f)
}

/// The same command to the master of every shard.
pub fn all_masters(
    proxy: &Proxy,
    frame: &Bytes,
    merge: Merge,
    deadline: Instant,
    readonly: bool,
) -> Fanout {
    let map = proxy.router.load();
    let subs = map
        .shard_first_slots()
        .into_iter()
        .map(|slot| Routed::new(frame.clone(), Target::Slot(slot), deadline, readonly))
        .collect();
    Fanout {
        subs,
        plan: Plan::All(merge),
    }
}

fn worst(outcomes: &[Outcome]) -> Outcome {
    let rank = |o: &Outcome| match o {
        Outcome::Ok => 0,
        Outcome::Error => 1,
        Outcome::RedirectError => 2,
        Outcome::Timeout => 3,
    };
    outcomes
        .iter()
        .copied()
        .max_by_key(rank)
        .unwrap_or(Outcome::Ok)
}

fn is_error(b: &[u8]) -> bool {
    matches!(b.first(), Some(b'-' | b'!'))
}

fn array(items: impl IntoIterator<Item = Bytes>, n: usize) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(b"*");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
    for i in items {
        out.extend_from_slice(&i);
    }
    out.freeze()
}

fn int(n: i64) -> Bytes {
    let mut out = BytesMut::new();
    crate::resp::reply::put_int(&mut out, n);
    out.freeze()
}

/// Merges the sub-replies (in sub-request order) into one reply.
pub fn merge(plan: &Plan, replies: Vec<(Bytes, Outcome)>) -> (Bytes, Outcome) {
    let outcome = worst(&replies.iter().map(|(_, o)| *o).collect::<Vec<_>>());
    let first_error = replies
        .iter()
        .find(|(b, _)| is_error(b))
        .map(|(b, _)| b.clone());
    let bad = |what: &str| {
        (
            error_frame(&format!(
                "ERR proxy: unexpected reply to {what} from a node"
            )),
            Outcome::Error,
        )
    };
    match plan {
        Plan::Mget(where_) => {
            if let Some(e) = first_error {
                return (e, outcome);
            }
            let mut parts = Vec::with_capacity(replies.len());
            for (b, _) in &replies {
                match array_elements(b) {
                    Some(els) => parts.push(els),
                    None => return bad("MGET"),
                }
            }
            let mut items = Vec::with_capacity(where_.len());
            for (g, i) in where_ {
                match parts.get(*g).and_then(|p| p.get(*i)) {
                    Some(v) => items.push(v.clone()),
                    None => return bad("MGET"),
                }
            }
            let n = items.len();
            (array(items, n), outcome)
        }
        Plan::Mset | Plan::All(Merge::AllOk) => match first_error {
            Some(e) => (e, outcome),
            None => match replies.into_iter().next() {
                Some((b, _)) => (b, outcome),
                None => (Bytes::from_static(b"+OK\r\n"), outcome),
            },
        },
        Plan::Count | Plan::All(Merge::Sum) => {
            if let Some(e) = first_error {
                return (e, outcome);
            }
            let mut sum: i64 = 0;
            for (b, _) in &replies {
                match integer(b) {
                    Some(n) => sum = sum.saturating_add(n),
                    None => return bad("a counting command"),
                }
            }
            (int(sum), outcome)
        }
        Plan::All(Merge::Concat) => {
            if let Some(e) = first_error {
                return (e, outcome);
            }
            let mut items = Vec::new();
            for (b, _) in &replies {
                match array_elements(b) {
                    Some(els) => items.extend(els),
                    None => return bad("KEYS"),
                }
            }
            let n = items.len();
            (array(items, n), outcome)
        }
        Plan::All(Merge::AndArray) => {
            if let Some(e) = first_error {
                return (e, outcome);
            }
            let mut acc: Option<Vec<i64>> = None;
            for (b, _) in &replies {
                let Some(els) = array_elements(b) else {
                    return bad("SCRIPT EXISTS");
                };
                let vals: Vec<i64> = els.iter().map(|e| integer(e).unwrap_or(0)).collect();
                acc = Some(match acc {
                    None => vals,
                    Some(a) => a
                        .iter()
                        .zip(vals.iter())
                        .map(|(x, y)| (*x).min(*y))
                        .collect(),
                });
            }
            let vals = acc.unwrap_or_default();
            let n = vals.len();
            (array(vals.into_iter().map(int), n), outcome)
        }
        Plan::Info { head, resp3 } => {
            let mut body = head.clone();
            if !body.is_empty() {
                body.push_str("\r\n");
            }
            body.push_str("# Keyspace\r\n");
            // A master that did not answer leaves the section empty rather
            // than undercounted.
            let bodies: Option<Vec<&[u8]>> = replies.iter().map(|(b, _)| text(b)).collect();
            if let Some(bodies) = bodies {
                body.push_str(&sum_keyspaces(&bodies));
            }
            let mut out = BytesMut::new();
            let proto = if *resp3 { Proto::Resp3 } else { Proto::Resp2 };
            Reply::Verbatim(Bytes::from(body)).encode(proto, &mut out);
            (out.freeze(), Outcome::Ok)
        }
        Plan::All(Merge::AnyOk) => match replies.iter().find(|(b, _)| !is_error(b)) {
            Some((b, _)) => (b.clone(), Outcome::Ok),
            None => match replies.into_iter().next() {
                Some((b, o)) => (b, o),
                None => (Bytes::from_static(b"+OK\r\n"), outcome),
            },
        },
    }
}

/// `dbN:keys=K,expires=E,avg_ttl=T` lines of several nodes' INFO
/// keyspace, added per database; avg_ttl weighted by each node's expires.
fn sum_keyspaces(bodies: &[&[u8]]) -> String {
    // db index → (keys, expires, sum of avg_ttl × expires)
    let mut dbs: std::collections::BTreeMap<u64, (u64, u64, u128)> = Default::default();
    for body in bodies {
        for line in String::from_utf8_lossy(body).lines() {
            let Some((db, fields)) = line.trim_end().split_once(':') else {
                continue;
            };
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            let field = |name: &str| -> u64 {
                fields
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0)
            };
            let (keys, expires, ttl) = (field("keys"), field("expires"), field("avg_ttl"));
            let e = dbs.entry(n).or_default();
            e.0 = e.0.saturating_add(keys);
            e.1 = e.1.saturating_add(expires);
            e.2 = e.2.saturating_add(u128::from(ttl) * u128::from(expires));
        }
    }
    let mut out = String::new();
    for (n, (keys, expires, ttl_sum)) in dbs {
        let avg = if expires == 0 {
            0
        } else {
            ttl_sum / u128::from(expires)
        };
        out.push_str(&format!(
            "db{n}:keys={keys},expires={expires},avg_ttl={avg}\r\n"
        ));
    }
    out
}

/// Bits of a composite SCAN cursor that name the shard (by a slot it owns).
const SLOT_BITS: u32 = 14;

/// Splits a client's SCAN cursor into (slot naming the shard, node cursor).
pub fn scan_cursor(cursor: &[u8]) -> Option<(u16, u64)> {
    let c: u64 = std::str::from_utf8(cursor).ok()?.parse().ok()?;
    Some(((c & 0x3FFF) as u16, c >> SLOT_BITS))
}

/// The SCAN request for one shard: the client's arguments with the node's
/// own cursor.
pub fn scan_request(args: &[Bytes], node_cursor: u64) -> Bytes {
    let cursor = node_cursor.to_string();
    let mut a: Vec<&[u8]> = args.iter().map(|b| &b[..]).collect();
    if let Some(c) = a.get_mut(1) {
        *c = cursor.as_bytes();
    }
    let mut out = BytesMut::new();
    encode_command(&mut out, &a);
    out.freeze()
}

/// Rewrites a node's SCAN reply: its cursor becomes a composite one that
/// goes on to the next shard when this one is finished.
pub fn scan_reply(reply: &Bytes, slot: u16, map: &SlotMap) -> Bytes {
    let Some(els) = array_elements(reply) else {
        return reply.clone();
    };
    let (Some(cursor), Some(keys)) = (els.first(), els.get(1)) else {
        return reply.clone();
    };
    let Some(node_cursor) = crate::resp::scan::text(cursor)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return reply.clone();
    };
    if node_cursor >= 1 << (64 - SLOT_BITS) {
        return error_frame("ERR proxy: a node's SCAN cursor is too large to combine");
    }
    let next: u64 = if node_cursor != 0 {
        (node_cursor << SLOT_BITS) | u64::from(slot)
    } else {
        // This shard is done: on to the shard with the next lowest slot.
        let firsts = map.shard_first_slots();
        let mine = map
            .shard_of(slot)
            .and_then(|s| {
                firsts.iter().copied().find(|f| {
                    map.shard_of(*f)
                        .is_some_and(|o| o.master.addr == s.master.addr)
                })
            })
            .unwrap_or(slot);
        firsts
            .iter()
            .copied()
            .find(|f| *f > mine)
            .map_or(0, u64::from)
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(b"*2\r\n");
    crate::resp::reply::put_bulk(&mut out, next.to_string().as_bytes());
    out.extend_from_slice(keys);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_keyspaces_add_up_with_ttl_weighted_by_expires() {
        let a = b"# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\n";
        let b = b"# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=3000\r\n";
        let empty = b"# Keyspace\r\n";
        assert_eq!(
            sum_keyspaces(&[&a[..], &b[..], &empty[..]]),
            "db0:keys=15,expires=8,avg_ttl=2500\r\n"
        );
        assert_eq!(sum_keyspaces(&[&empty[..]]), "");
        // One master down: no undercounted figure.
        let (frame, _) = merge(
            &Plan::Info {
                head: String::new(),
                resp3: false,
            },
            vec![
                (
                    Bytes::from_static(
                        b"$47\r\n# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\n\r\n",
                    ),
                    Outcome::Ok,
                ),
                (Bytes::from_static(b"-ERR down\r\n"), Outcome::Error),
            ],
        );
        assert_eq!(&frame[..], b"$12\r\n# Keyspace\r\n\r\n");
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn mget_merges_in_key_order() {
        // keys a, b, c where a and c went to sub 0, b to sub 1.
        let plan = Plan::Mget(vec![(0, 0), (1, 0), (0, 1)]);
        let (r, o) = merge(
            &plan,
            vec![
                (b("*2\r\n$1\r\n1\r\n$-1\r\n"), Outcome::Ok),
                (b("*1\r\n$1\r\n2\r\n"), Outcome::Ok),
            ],
        );
        assert_eq!(&r[..], b"*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n");
        assert_eq!(o, Outcome::Ok);
    }

    #[test]
    fn counts_sum_and_errors_win() {
        let (r, _) = merge(
            &Plan::Count,
            vec![(b(":2\r\n"), Outcome::Ok), (b(":3\r\n"), Outcome::Ok)],
        );
        assert_eq!(&r[..], b":5\r\n");
        let (r, o) = merge(
            &Plan::Mset,
            vec![
                (b("+OK\r\n"), Outcome::Ok),
                (b("-OOM no\r\n"), Outcome::Error),
            ],
        );
        assert_eq!(&r[..], b"-OOM no\r\n");
        assert_eq!(o, Outcome::Error);
        let (r, _) = merge(
            &Plan::All(Merge::AndArray),
            vec![
                (b("*2\r\n:1\r\n:1\r\n"), Outcome::Ok),
                (b("*2\r\n:1\r\n:0\r\n"), Outcome::Ok),
            ],
        );
        assert_eq!(&r[..], b"*2\r\n:1\r\n:0\r\n");
        let (r, _) = merge(
            &Plan::All(Merge::Concat),
            vec![
                (b("*1\r\n$1\r\na\r\n"), Outcome::Ok),
                (b("*0\r\n"), Outcome::Ok),
                (b("*1\r\n$1\r\nb\r\n"), Outcome::Ok),
            ],
        );
        assert_eq!(&r[..], b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        let (r, o) = merge(
            &Plan::All(Merge::AnyOk),
            vec![
                (b("-NOTBUSY\r\n"), Outcome::Error),
                (b("+OK\r\n"), Outcome::Ok),
            ],
        );
        assert_eq!((&r[..], o), (&b"+OK\r\n"[..], Outcome::Ok));
    }

    #[test]
    fn scan_cursors_round_trip() {
        assert_eq!(scan_cursor(b"0"), Some((0, 0)));
        let c = (77u64 << 14) | 5461;
        assert_eq!(scan_cursor(c.to_string().as_bytes()), Some((5461, 77)));
        assert_eq!(scan_cursor(b"x"), None);
        let req = scan_request(&[b("SCAN"), b("123"), b("COUNT"), b("10")], 9);
        assert_eq!(
            &req[..],
            b"*4\r\n$4\r\nSCAN\r\n$1\r\n9\r\n$5\r\nCOUNT\r\n$2\r\n10\r\n"
        );
    }
}
