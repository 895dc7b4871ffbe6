//! HyperLogLog against a real redis-server 7.0: the same raw commands on a
//! fresh redis-server and a fresh node must get identical raw replies, and
//! the values left behind (GET) identical bytes, sparse and dense, valid
//! and corrupt. DUMP payloads cross both ways. Needs `redis-server`, so
//! ignored in a plain `cargo test`; `.ci/run` runs it with
//! `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Node;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request on an open connection; its whole reply, raw.
fn exchange(s: &mut TcpStream, args: &[Vec<u8>]) -> Vec<u8> {
    s.write_all(&slotway::resp::command_bytes(args)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Ok(Some(n)) = slotway::resp::scan::frame_len(&out) {
            assert_eq!(n, out.len(), "one reply per request: {args:?}");
            return out;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed during {args:?}");
        out.extend_from_slice(&buf[..n]);
    }
}

/// A command from words; `\xNN` inside a word is the byte NN, so any
/// byte (HLL headers, opcodes) can be written.
fn words(cmd: &[&str]) -> Vec<Vec<u8>> {
    cmd.iter().map(|w| unescape(w)).collect()
}

fn unescape(w: &str) -> Vec<u8> {
    let b = w.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() + 1 {
            if let Ok(v) = u8::from_str_radix(&w[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The two servers, one connection each, and the count of compared
/// commands.
struct Pair {
    ours: TcpStream,
    theirs: TcpStream,
    compared: usize,
}

impl Pair {
    fn both(&mut self, args: Vec<Vec<u8>>) -> Vec<u8> {
        let a = exchange(&mut self.ours, &args);
        let b = exchange(&mut self.theirs, &args);
        let shown: Vec<String> = args
            .iter()
            .map(|x| String::from_utf8_lossy(&x[..x.len().min(40)]).into_owned())
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "reply to {shown:?}"
        );
        assert_eq!(a, b, "raw reply to {shown:?}");
        self.compared += 1;
        a
    }

    fn run(&mut self, cmd: &[&str]) -> Vec<u8> {
        self.both(words(cmd))
    }

    fn script(&mut self, script: &[&[&str]]) {
        for cmd in script {
            self.run(cmd);
        }
    }

    /// PFADD of `n` elements named `prefix0`.. one command at a time,
    /// GET after each: every step of the sparse form must match.
    fn add_one_by_one(&mut self, key: &str, prefix: &str, range: std::ops::Range<usize>) {
        for i in range {
            self.run(&["pfadd", key, &format!("{prefix}{i}")]);
            self.run(&["get", key]);
        }
    }

    /// One PFADD with many elements.
    fn add_many(&mut self, key: &str, prefix: &str, range: std::ops::Range<usize>) {
        let mut args = vec![b"pfadd".to_vec(), key.as_bytes().to_vec()];
        args.extend(range.map(|i| format!("{prefix}{i}").into_bytes()));
        self.both(args);
    }

    /// DUMP on one side, RESTORE of the payload on the other, then the
    /// value and the count must agree on both.
    fn dump_across(&mut self, key: &str, to_ours: bool) {
        let dump = words(&["dump", key]);
        let payload = if to_ours {
            exchange(&mut self.theirs, &dump)
        } else {
            exchange(&mut self.ours, &dump)
        };
        let payload = bulk_body(&payload);
        let restored = format!("{key}-restored");
        let restore = vec![
            b"restore".to_vec(),
            restored.as_bytes().to_vec(),
            b"0".to_vec(),
            payload,
        ];
        // The other side restores its own payload too, so both hold it.
        let (self_side, other) = if to_ours {
            (&mut self.theirs, &mut self.ours)
        } else {
            (&mut self.ours, &mut self.theirs)
        };
        assert_eq!(exchange(other, &restore), b"+OK\r\n");
        assert_eq!(exchange(self_side, &restore), b"+OK\r\n");
        self.run(&["get", &restored]);
        self.run(&["pfcount", &restored]);
        self.run(&["get", &restored]);
        self.run(&["pfdebug", "encoding", &restored]);
        self.run(&["del", &restored]);
    }
}

/// The body of a RESP bulk string reply.
fn bulk_body(reply: &[u8]) -> Vec<u8> {
    assert_eq!(
        reply.first(),
        Some(&b'$'),
        "{:?}",
        String::from_utf8_lossy(reply)
    );
    let nl = reply.iter().position(|&b| b == b'\n').unwrap();
    let len: usize = std::str::from_utf8(&reply[1..nl - 1])
        .unwrap()
        .parse()
        .unwrap();
    reply[nl + 1..nl + 1 + len].to_vec()
}

/// The 16-byte header of a sparse HLL with a stale cache, in `\x` form.
const SPARSE_HDR: &str = "HYLL\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x80";

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn hyperloglog_commands_match_redis_byte_for_byte() {
    let node = Node::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let real = common::RealRedis::start(dir.path(), &["--appendonly", "no"]);
    let ours = TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let theirs = TcpStream::connect(("127.0.0.1", real.port)).unwrap();
    for t in [&ours, &theirs] {
        t.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    }
    let mut p = Pair {
        ours,
        theirs,
        compared: 0,
    };

    // Small sets, the cache, the errors of the simple forms.
    p.script(&[
        &["pfadd", "h"],
        &["get", "h"],
        &["pfadd", "h"],
        &["pfcount", "h"],
        &["get", "h"],
        &["pfadd", "h", "a", "b", "c"],
        &["get", "h"],
        &["pfadd", "h", "a", "b", "c"],
        &["pfcount", "h"],
        &["get", "h"],
        &["pfcount", "h"],
        &["pfdebug", "encoding", "h"],
        &["pfdebug", "decode", "h"],
        &[
            "pfadd",
            "h",
            "",
            "\\x00",
            "\\xff\\xfe",
            "a-rather-longer-element-of-bytes",
        ],
        &["get", "h"],
        &["pfcount", "missing"],
        &["pfcount", "h", "missing"],
        &["pfcount", "missing", "missing2"],
        &["exists", "missing"],
        &["pfadd", "ttl", "x"],
        &["expire", "ttl", "1000"],
        &["pfadd", "ttl", "y", "z"],
        &["pfcount", "ttl"],
        &["ttl", "ttl"],
        &["get", "ttl"],
        &["type", "h"],
        &["strlen", "h"],
    ]);
    p.add_one_by_one("s1", "e", 0..300);
    p.run(&["pfcount", "s1"]);
    p.run(&["pfdebug", "decode", "s1"]);
    p.run(&["get", "s1"]);

    // Crossing sparse -> dense at hll-sparse-max-bytes, one element at a
    // time and in one big PFADD; dense sets then keep growing.
    p.add_many("s2", "m", 0..1500);
    p.run(&["pfdebug", "encoding", "s2"]);
    p.run(&["strlen", "s2"]);
    p.add_one_by_one("s2", "n", 0..400);
    p.run(&["pfdebug", "encoding", "s2"]);
    p.run(&["pfcount", "s2"]);
    p.run(&["get", "s2"]);
    p.add_many("big", "b", 0..20000);
    p.run(&["pfcount", "big"]);
    p.run(&["get", "big"]);
    p.run(&["pfdebug", "encoding", "big"]);
    p.run(&["pfdebug", "decode", "big"]);
    p.add_many("big", "b", 0..20000);
    p.add_many("big", "c", 0..100);
    p.run(&["get", "big"]);
    p.run(&["pfcount", "big"]);
    // The threshold is the config; small values promote early.
    p.script(&[
        &["config", "get", "hll-sparse-max-bytes"],
        &["config", "set", "hll-sparse-max-bytes", "60"],
        &["config", "get", "hll-sparse-max-bytes"],
        &["config", "set", "hll-sparse-max-bytes", "-1"],
        &["config", "set", "hll-sparse-max-bytes", "abc"],
        &[
            "config",
            "set",
            "hll-sparse-max-bytes",
            "9223372036854775808",
        ],
        &["config", "get", "hll-sparse-max-bytes"],
    ]);
    p.add_one_by_one("tiny", "t", 0..40);
    p.run(&["pfdebug", "encoding", "tiny"]);
    p.run(&["config", "set", "hll-sparse-max-bytes", "0"]);
    p.add_one_by_one("zero", "t", 0..3);
    p.run(&["config", "set", "hll-sparse-max-bytes", "1kb"]);
    p.run(&["config", "get", "hll-sparse-max-bytes"]);
    p.add_many("kb", "k", 0..800);
    p.run(&["get", "kb"]);
    p.run(&["config", "set", "hll-sparse-max-bytes", "3000"]);

    // PFMERGE: sparse + sparse stays sparse, any dense source makes the
    // destination dense, missing sources are empty, the destination is
    // a source and keeps its TTL.
    p.add_many("m1", "x", 0..50);
    p.add_many("m2", "y", 0..70);
    p.script(&[
        &["pfmerge", "d1", "m1", "m2"],
        &["get", "d1"],
        &["pfdebug", "encoding", "d1"],
        &["pfcount", "d1"],
        &["pfcount", "m1", "m2"],
        &["pfmerge", "d2", "m1", "big"],
        &["get", "d2"],
        &["pfdebug", "encoding", "d2"],
        &["pfcount", "d2"],
        &["pfcount", "m1", "big", "s1", "missing"],
        &["pfmerge", "m1", "m2"],
        &["get", "m1"],
        &["pfmerge", "empty"],
        &["get", "empty"],
        &["pfmerge", "empty2", "missing", "missing2"],
        &["get", "empty2"],
        &["expire", "m2", "5000"],
        &["pfmerge", "m2", "s1", "s2"],
        &["ttl", "m2"],
        &["get", "m2"],
        &["pfdebug", "encoding", "m2"],
        &["pfmerge", "s1", "s1"],
        &["get", "s1"],
        &["pfmerge", "d3", "s1", "m1"],
        &["get", "d3"],
        &["pfmerge", "d3", "big"],
        &["get", "d3"],
    ]);
    p.add_many("near", "q", 0..600);
    p.add_many("near2", "r", 0..600);
    // Two sparse sources whose union no longer fits: promotion mid-merge.
    p.run(&["pfmerge", "near", "near2"]);
    p.run(&["get", "near"]);
    p.run(&["pfdebug", "encoding", "near"]);

    // PFDEBUG.
    p.script(&[
        &["pfdebug", "getreg", "m1"],
        &["get", "m1"],
        &["pfdebug", "encoding", "m1"],
        &["pfdebug", "todense", "m1"],
        &["pfdebug", "todense", "m1"],
        &["pfdebug", "decode", "m1"],
        &["pfdebug", "todense", "d1"],
        &["get", "d1"],
        &["pfdebug", "GetReg", "d1"],
        &["pfdebug", "nosuch", "d1"],
        &["pfdebug", "nosuch", "missing"],
        &["pfdebug", "getreg", "missing"],
        &["pfdebug", "decode", "missing"],
    ]);

    // Wrong types and strings that are no HLL.
    p.script(&[
        &["set", "str", "hello"],
        &["lpush", "list", "a"],
        &["pfadd", "str", "a"],
        &["pfadd", "list", "a"],
        &["pfcount", "str"],
        &["pfcount", "list"],
        &["pfcount", "h", "str"],
        &["pfcount", "h", "list"],
        &["pfcount", "list", "str"],
        &["pfmerge", "d1", "str"],
        &["pfmerge", "list", "h"],
        &["pfmerge", "str", "h"],
        &["pfdebug", "encoding", "str"],
        &["pfdebug", "getreg", "list"],
        &["get", "d1"],
        &["set", "short", "HYLL"],
        &["pfadd", "short", "a"],
        &[
            "set",
            "nomagic",
            "HYLX\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x7f\\xff",
        ],
        &["pfcount", "nomagic"],
        &[
            "set",
            "enc2",
            "HYLL\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x7f\\xff",
        ],
        &["pfcount", "enc2"],
        &[
            "set",
            "shortdense",
            "HYLL\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00",
        ],
        &["pfcount", "shortdense"],
        &["pfadd", "shortdense", "a"],
        &["set", "int", "12345678901234567890"],
        &["pfadd", "int", "a"],
        &["set", "num", "123"],
        &["pfcount", "num"],
    ]);

    // Corrupt sparse data, made with SET and SETRANGE: the errors, and
    // the bytes left behind, with no crash.
    let sparse = |ops: &str| format!("{SPARSE_HDR}{ops}");
    let corrupt_values = [
        ("c-empty", sparse("")),
        ("c-half-xzero", sparse("\\x7f")),
        ("c-last-xzero", sparse("\\x7f\\xfe\\x40")),
        ("c-short", sparse("\\x7f\\x00")),
        ("c-long", sparse("\\x7f\\xff\\x7f\\xff")),
        ("c-vals", sparse(&"\\xff".repeat(40))),
        ("c-val-over", sparse("\\x7f\\xfe\\xff")),
        ("c-zeros", sparse(&"\\x3f".repeat(300))),
        ("c-one-reg", sparse("\\x7f\\xfe\\x00\\x00")),
        ("c-xzero-1", sparse("\\x40\\x00\\x7f\\xfe")),
    ];
    for (key, value) in &corrupt_values {
        p.run(&["set", key, value]);
        p.run(&["pfcount", key]);
        p.run(&["pfcount", key, "h"]);
        p.run(&["pfcount", "h", key]);
        p.run(&["pfmerge", "cd", key]);
        p.run(&["pfmerge", "cd-dense", "big", key]);
        p.run(&["pfdebug", "decode", key]);
        p.run(&["pfadd", key, "a", "b", "c", "d", "e"]);
        p.run(&["get", key]);
        p.run(&["pfadd", key, "e9"]);
        p.run(&["get", key]);
        p.run(&["pfdebug", "encoding", key]);
        p.run(&["pfdebug", "todense", key]);
        p.run(&["get", key]);
        p.run(&["pfdebug", "getreg", key]);
        p.run(&["pfcount", key]);
    }
    p.script(&[&["get", "cd"], &["get", "cd-dense"]]);
    // SETRANGE over real values: a garbled sparse body, a dense one with
    // any register bytes (always valid), a cache made valid by hand.
    p.add_many("g1", "g", 0..30);
    p.script(&[
        &["setrange", "g1", "20", "\\xff\\xff\\xff\\xff\\x00"],
        &["pfcount", "g1"],
        &["pfadd", "g1", "zz"],
        &["get", "g1"],
        &["pfmerge", "g2", "g1"],
        &["setrange", "g1", "15", "\\x00"],
        &["pfcount", "g1"],
        &[
            "setrange",
            "g1",
            "8",
            "\\x07\\x00\\x00\\x00\\x00\\x00\\x00\\x00",
        ],
        &["pfcount", "g1"],
        &["setrange", "g1", "4", "\\x00"],
        &["pfcount", "g1"],
        &["append", "g1", "x"],
        &["pfcount", "g1"],
        &["pfmerge", "dd", "big"],
        &["setrange", "dd", "100", "\\xff\\xff\\xff\\xff\\xff\\xff"],
        &["setrange", "dd", "12303", "\\xff"],
        &["setrange", "dd", "15", "\\x80"],
        &["pfcount", "dd"],
        &["get", "dd"],
        &["pfcount", "dd", "h"],
        &["pfadd", "dd", "new1", "new2"],
        &["get", "dd"],
        &["pfdebug", "getreg", "dd"],
        &["setrange", "dd", "12304", "x"],
        &["pfcount", "dd"],
    ]);

    // DUMP / RESTORE both ways, sparse and dense.
    for key in ["h", "s1", "big", "d1", "near"] {
        p.dump_across(key, true);
        p.dump_across(key, false);
    }

    // Arity, the key table, MULTI, and the self test.
    p.script(&[
        &["pfadd"],
        &["pfcount"],
        &["pfmerge"],
        &["pfdebug", "encoding"],
        &["pfdebug", "encoding", "h", "x"],
        &["pfselftest", "x"],
        &["command", "getkeys", "pfadd", "k", "a"],
        &["command", "getkeys", "pfcount", "k1", "k2", "k3"],
        &["command", "getkeys", "pfmerge", "d", "s1", "s2"],
        &["command", "getkeys", "pfdebug", "getreg", "k"],
        &["multi"],
        &["pfadd", "tx", "a"],
        &["pfcount", "tx"],
        &["pfcount", "tx", "h"],
        &["pfmerge", "tx2", "tx"],
        &["exec"],
        &["get", "tx"],
        &["get", "tx2"],
        &["pfselftest"],
    ]);
    let names = ["pfadd", "pfcount", "pfmerge", "pfdebug", "pfselftest"];
    let mut info = vec!["command", "info"];
    info.extend(names);
    let head = |reply: Vec<u8>| -> Vec<Vec<bytes::Bytes>> {
        let all = slotway::resp::scan::array_elements(&reply.into()).unwrap();
        all.iter()
            .map(|e| {
                let fields = slotway::resp::scan::array_elements(e).unwrap();
                fields.into_iter().take(6).collect()
            })
            .collect()
    };
    let a = head(exchange(&mut p.ours, &words(&info)));
    let b = head(exchange(&mut p.theirs, &words(&info)));
    assert_eq!(a.len(), names.len());
    assert_eq!(a, b, "COMMAND INFO of the HyperLogLog commands");
    eprintln!("compared {} commands", p.compared);
    assert!(p.compared > 1000);
}

/// The HyperLogLog commands through the proxy: routed by their keys
/// (PFDEBUG's key is its second argument), multi-key forms in one slot.
#[test]
fn hyperloglog_commands_route_through_the_proxy() {
    use common::proxy::{addrs, slotway_cluster, ProxyProc};
    let nodes = slotway_cluster(3, &[]);
    let proxy = ProxyProc::start(&addrs(&nodes)[..1], &[]);
    proxy.wait_covered();
    let mut c = proxy.client();
    let q = |c: &mut redis::Connection, args: &[&str]| -> redis::RedisResult<redis::Value> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(c)
    };
    let int = |v: redis::RedisResult<redis::Value>| match v {
        Ok(redis::Value::Int(n)) => n,
        other => panic!("{other:?}"),
    };
    // Keys on every master.
    for i in 0..30 {
        let key = format!("hll:{i}");
        assert_eq!(int(q(&mut c, &["pfadd", &key, "a", "b", &key])), 1);
        assert_eq!(int(q(&mut c, &["pfcount", &key])), 3);
        let enc = q(&mut c, &["pfdebug", "encoding", &key]).unwrap();
        assert_eq!(enc, redis::Value::SimpleString("sparse".into()), "{key}");
    }
    assert_eq!(int(q(&mut c, &["pfadd", "{t}a", "x", "y"])), 1);
    assert_eq!(int(q(&mut c, &["pfadd", "{t}b", "y", "z"])), 1);
    assert_eq!(int(q(&mut c, &["pfcount", "{t}a", "{t}b"])), 3);
    assert_eq!(
        q(&mut c, &["pfmerge", "{t}c", "{t}a", "{t}b"]).unwrap(),
        redis::Value::Okay
    );
    assert_eq!(int(q(&mut c, &["pfcount", "{t}c"])), 3);
    let cross = q(&mut c, &["pfcount", "hll:1", "hll:2", "hll:3"]).unwrap_err();
    assert_eq!(cross.code(), Some("CROSSSLOT"), "{cross:?}");
    // The value is a string that GET carries whole.
    match q(&mut c, &["get", "{t}c"]).unwrap() {
        redis::Value::BulkString(b) => assert_eq!(&b[..4], b"HYLL"),
        other => panic!("{other:?}"),
    }
}
