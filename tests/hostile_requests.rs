//! Requests whose cost the client chooses (counts, offsets, lengths): no
//! single one may take the node down, and each answers as redis-server 7.0
//! does (error texts checked against a real one on loopback).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{wait_until, Node};
use redis::Commands;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const RANGE_ERR: &str =
    "value is out of range, value must between -9223372036854775807 and 9223372036854775807";

fn cmd_err(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(c) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{args:?} answered {v:?}, not an error"),
    }
}

/// Resident memory of the node process, from /proc.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends one raw request and reads the first `want` bytes of its reply.
fn read_prefix(port: u16, request: &[u8], want: usize) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut got = vec![0u8; want];
    s.read_exact(&mut got).unwrap();
    (s, got)
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

#[test]
fn random_pick_counts_are_range_checked_like_redis() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let _: i64 = c.sadd("s", "a").unwrap();
    let _: i64 = c.zadd("z", "a", 1).unwrap();
    let _: i64 = c.hset("h", "f", "v").unwrap();
    for args in [
        &["SRANDMEMBER", "s", "-9223372036854775808"][..],
        &["ZRANDMEMBER", "z", "-9223372036854775808"],
        &["HRANDFIELD", "h", "-9223372036854775808"],
    ] {
        let e = cmd_err(&mut c, args);
        assert!(e.contains(RANGE_ERR), "{args:?}: {e}");
    }
    for args in [
        &["ZRANDMEMBER", "z", "-4611686018427387904", "WITHSCORES"][..],
        &["ZRANDMEMBER", "z", "4611686018427387904", "WITHSCORES"],
        &["HRANDFIELD", "h", "-4611686018427387904", "WITHVALUES"],
    ] {
        let e = cmd_err(&mut c, args);
        assert!(
            e.contains("value is out of range") && !e.contains("must between"),
            "{args:?}: {e}"
        );
    }
    // The largest counts allowed are answered: positive ones with the whole
    // collection.
    let all: Vec<String> = redis::cmd("ZRANDMEMBER")
        .arg("z")
        .arg("4611686018427387903")
        .arg("WITHSCORES")
        .query(&mut c)
        .unwrap();
    assert_eq!(all, vec!["a", "1"]);
    let all: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg("s")
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    assert_eq!(all, vec!["a"]);
}

#[test]
fn spop_with_a_huge_count_returns_the_whole_set() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let _: i64 = c.sadd("s", &["a", "b"]).unwrap();
    let mut got: Vec<String> = redis::cmd("SPOP")
        .arg("s")
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    got.sort();
    assert_eq!(got, vec!["a", "b"]);
    assert!(!c.exists::<_, bool>("s").unwrap());
    let e = cmd_err(&mut c, &["SPOP", "s", "-1"]);
    assert!(e.contains("value is out of range, must be positive"), "{e}");
}

/// A hundred million picks from a one-member set: the reply (700 MB) is
/// streamed, so the node's memory does not follow it, and other clients are
/// served while it goes out.
#[test]
fn a_huge_negative_pick_count_streams_without_growing_the_node() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let _: i64 = c.sadd("s", "a").unwrap();
    let _: i64 = c.zadd("z", "m", 1.5).unwrap();
    let _: i64 = c.hset("h", "f", "v").unwrap();
    let before = rss_kb(node.pid());
    let cases: [(&[&str], &[u8], &[u8]); 4] = [
        (
            &["SRANDMEMBER", "s", "-100000000"],
            b"*100000000\r\n",
            b"$1\r\na\r\n",
        ),
        (
            &["ZRANDMEMBER", "z", "-100000000", "WITHSCORES"],
            b"*200000000\r\n",
            b"$1\r\nm\r\n$3\r\n1.5\r\n",
        ),
        (
            &["HRANDFIELD", "h", "-9223372036854775807"],
            b"*9223372036854775807\r\n",
            b"$1\r\nf\r\n",
        ),
        (
            &["HRANDFIELD", "h", "-4611686018427387903", "WITHVALUES"],
            b"*9223372036854775806\r\n",
            b"$1\r\nf\r\n$1\r\nv\r\n",
        ),
    ];
    for (args, header, unit) in cases {
        // Read 8 MB of the reply: far past any single buffer, then hang up.
        let (s, got) = read_prefix(node.port, &resp(args), 8 << 20);
        assert!(got.starts_with(header), "{args:?}");
        let body = &got[header.len()..];
        let whole = body.len() / unit.len() * unit.len();
        assert!(
            body[..whole].chunks(unit.len()).all(|u| u == unit),
            "{args:?}: the picks are not all the one entry"
        );
        drop(s);
        assert_eq!(c.get::<_, Option<String>>("nothing").unwrap(), None);
    }
    let after = rss_kb(node.pid());
    assert!(
        after < before + 200 * 1024,
        "RSS grew from {before} kB to {after} kB while streaming"
    );
}

/// A streamed reply keeps its place in the pipeline and inside EXEC, in
/// RESP3 too (pairs nest there).
#[test]
fn streamed_replies_keep_pipeline_order_and_exec_shape() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let _: i64 = c.zadd("z", "m", 2).unwrap();
    let mut req = resp(&["ZRANDMEMBER", "z", "-5000", "WITHSCORES"]);
    req.extend(resp(&["PING"]));
    req.extend(resp(&["MULTI"]));
    req.extend(resp(&["SET", "k", "v"]));
    req.extend(resp(&["ZRANDMEMBER", "z", "-3000"]));
    req.extend(resp(&["EXEC"]));
    let mut want = b"*10000\r\n".to_vec();
    for _ in 0..5000 {
        want.extend_from_slice(b"$1\r\nm\r\n$1\r\n2\r\n");
    }
    want.extend_from_slice(b"+PONG\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n*3000\r\n");
    for _ in 0..3000 {
        want.extend_from_slice(b"$1\r\nm\r\n");
    }
    let (_s, got) = read_prefix(node.port, &req, want.len());
    assert_eq!(got, want);

    // RESP3: HELLO alone first, read until it is complete, then the rest.
    let mut s = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.write_all(&resp(&["HELLO", "3"])).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    while !hello.ends_with(b"modules\r\n*0\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "HELLO 3 reply cut short");
        hello.extend_from_slice(&buf[..n]);
    }
    let mut req = resp(&["ZRANDMEMBER", "z", "-2000", "WITHSCORES"]);
    req.extend(resp(&["PING"]));
    s.write_all(&req).unwrap();
    let mut want = b"*2000\r\n".to_vec();
    for _ in 0..2000 {
        want.extend_from_slice(b"*2\r\n$1\r\nm\r\n,2\r\n");
    }
    want.extend_from_slice(b"+PONG\r\n");
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
}

/// A client that asks for 2^63 picks and stops reading holds only its own
/// connection: others are served, CLIENT KILL ends it.
#[test]
fn a_stalled_streaming_client_can_be_killed() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let _: i64 = c.sadd("s", "a").unwrap();
    let mut stalled = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    stalled
        .write_all(&resp(&["CLIENT", "SETNAME", "stalled"]))
        .unwrap();
    stalled
        .write_all(&resp(&["SRANDMEMBER", "s", "-9223372036854775807"]))
        .unwrap();
    let mut id_of_stalled = || -> Option<String> {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).ok()?;
        list.lines()
            .find(|l| l.contains("name=stalled") && l.contains("cmd=srandmember"))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_string)
    };
    let mut id = None;
    wait_until(
        "the stalled client to be streaming",
        Duration::from_secs(20),
        || {
            id = id_of_stalled();
            id.is_some()
        },
    );
    let mut c = node.client();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id.unwrap())
        .query(&mut c)
        .unwrap();
    assert_eq!(killed, 1);
    // The killed client's socket drains what was sent and then ends.
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(
                start.elapsed() < Duration::from_secs(30),
                "the killed client's stream did not end"
            ),
        }
    }
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
}

/// Offsets and pop counts at the edges: refused with Redis's texts or capped
/// by the data, never an allocation of the client's size.
#[test]
fn offsets_and_pop_counts_at_the_limits() {
    let node = Node::start(&[]);
    let mut c = node.client();
    for offset in ["536870912", "9223372036854775807"] {
        let e = cmd_err(&mut c, &["SETRANGE", "k", offset, "x"]);
        assert!(
            e.contains("string exceeds maximum allowed size (proto-max-bulk-len)"),
            "{offset}: {e}"
        );
    }
    let e = cmd_err(&mut c, &["SETRANGE", "k", "-1", "x"]);
    assert!(e.contains("offset is out of range"), "{e}");
    let _: i64 = c.rpush("l", &["a", "b"]).unwrap();
    let e = cmd_err(&mut c, &["LPOP", "l", "-1"]);
    assert!(e.contains("value is out of range, must be positive"), "{e}");
    let all: Vec<String> = redis::cmd("RPOP")
        .arg("l")
        .arg(i64::MAX)
        .query(&mut c)
        .unwrap();
    assert_eq!(all, vec!["b", "a"]);
    assert!(!c.exists::<_, bool>("l").unwrap());
}

/// With a password required, an anonymous client may send at most 10
/// arguments of 16 KiB each (Redis 7.0's rule), so it cannot make the node
/// buffer a 512 MB argument before AUTH.
#[test]
fn unauthenticated_requests_are_small() {
    let node = Node::start(&["--requirepass", "pw"]);
    let eleven = resp(&["DEL", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
    assert_eq!(
        node.raw(&eleven),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert_eq!(
        node.raw(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"),
        b"-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    // Once authenticated, the same request is an ordinary one.
    let mut req = resp(&["AUTH", "pw"]);
    req.extend(eleven);
    assert_eq!(node.raw(&req), b"+OK\r\n:0\r\n");
}

/// The count and limit arguments of the later families (streams, geo,
/// SORT, LPOS, ZRANGE LIMIT) at i64::MAX: each reply is cut by the data
/// (two items here), as redis-server 7.0 answers, and the node never sizes
/// a buffer by the client's number.
#[test]
fn huge_counts_in_streams_geo_and_sort_are_cut_by_the_data() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let max = i64::MAX.to_string();
    let max = max.as_str();
    let setup: &[&[&str]] = &[
        &["XADD", "{s}s", "1-1", "a", "1"],
        &["XADD", "{s}s", "2-1", "b", "2"],
        &["XGROUP", "CREATE", "{s}s", "g", "0"],
        &[
            "GEOADD", "{s}g", "13.36", "38.11", "p", "15.08", "37.50", "q",
        ],
        &["RPUSH", "{s}l", "3", "1", "2", "1"],
        &["ZADD", "{s}z", "1", "a", "2", "b"],
    ];
    for args in setup {
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        let _: redis::Value = cmd.query(&mut c).unwrap();
    }
    let two_items: &[&[&str]] = &[
        &["XRANGE", "{s}s", "-", "+", "COUNT", max],
        &["XREVRANGE", "{s}s", "+", "-", "COUNT", max],
        &["XPENDING", "{s}s", "g", "-", "+", max],
        &[
            "GEOSEARCH",
            "{s}g",
            "FROMLONLAT",
            "15",
            "37",
            "BYRADIUS",
            "1000",
            "km",
            "COUNT",
            max,
        ],
        &[
            "GEORADIUS",
            "{s}g",
            "15",
            "37",
            "1000",
            "km",
            "COUNT",
            max,
            "ANY",
        ],
        &["SORT", "{s}l", "LIMIT", "2", max],
        &["LPOS", "{s}l", "1", "COUNT", max, "MAXLEN", max],
        &[
            "ZRANGE", "{s}z", "-inf", "+inf", "BYSCORE", "LIMIT", "0", max,
        ],
    ];
    // XREADGROUP first, so XPENDING has two pending entries to list.
    let read: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "g", "c", "COUNT", max, "STREAMS", "{s}s", ">"])
        .query(&mut c)
        .unwrap();
    assert!(
        matches!(read, redis::Value::Array(ref v) if v.len() == 1),
        "{read:?}"
    );
    for args in two_items {
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        let reply: redis::Value = cmd.query(&mut c).unwrap();
        match reply {
            redis::Value::Array(items) => assert_eq!(items.len(), 2, "{args:?}"),
            other => panic!("{args:?} answered {other:?}"),
        }
    }
    // XAUTOCLAIM refuses a count whose attempts budget would overflow, as Redis.
    let e = cmd_err(
        &mut c,
        &["XAUTOCLAIM", "{s}s", "g", "c2", "0", "0", "COUNT", max],
    );
    assert!(e.contains("COUNT must be > 0"), "{e}");
    let full: redis::Value = redis::cmd("XINFO")
        .arg(&["STREAM", "{s}s", "FULL", "COUNT", max])
        .query(&mut c)
        .unwrap();
    assert!(matches!(full, redis::Value::Array(_)), "{full:?}");
}
