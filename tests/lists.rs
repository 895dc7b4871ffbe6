//! List commands, including the blocking ones, against the real binary with
//! the `redis` crate and byte-exact raw RESP where the nil shape matters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Node;
use redis::{Commands, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Runs one command and returns its error text (panics if it succeeded).
fn error_of(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(c) {
        Ok(v) => panic!("{args:?} succeeded with {v:?}"),
        Err(e) => {
            let code = e.code().unwrap_or("");
            let detail = e.detail().unwrap_or("");
            format!("{code} {detail}").trim().to_string()
        }
    }
}

fn q<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c).unwrap()
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// A raw connection for byte-exact, timed exchanges.
struct Raw(TcpStream);

impl Raw {
    fn connect(node: &Node) -> Raw {
        let s = TcpStream::connect(node.addr()).unwrap();
        s.set_nodelay(true).unwrap();
        Raw(s)
    }

    fn send(&mut self, cmds: &[&[&str]]) {
        let mut buf = Vec::new();
        for c in cmds {
            buf.extend_from_slice(&resp(c));
        }
        // One write: the server sees the whole pipeline in one read.
        self.0.write_all(&buf).unwrap();
    }

    /// Reads until exactly `want` bytes arrived (or `deadline` passes).
    fn read_exact_within(&mut self, want: usize, deadline: Duration) -> Vec<u8> {
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < want {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.0.set_read_timeout(Some(left)).unwrap();
            match self.0.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }

    fn expect(&mut self, want: &[u8], deadline: Duration) {
        let got = self.read_exact_within(want.len(), deadline);
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }
}

/// Starts `blocking` on a fresh raw connection, pipelined behind an RPUSH to
/// `ready`, and waits until that RPUSH ran: the server runs a pipeline in
/// order within one batch, so from then on the blocking command is parked.
fn block_raw(node: &Node, ready: &str, blocking: &[&str]) -> Raw {
    let mut c = node.client();
    let before: i64 = c.llen(ready).unwrap();
    let mut raw = Raw::connect(node);
    raw.send(&[&["RPUSH", ready, "x"], blocking]);
    common::wait_until("blocking command to start", Duration::from_secs(10), || {
        c.llen::<_, i64>(ready).unwrap() > before
    });
    let ack = format!(":{}\r\n", before + 1);
    raw.expect(ack.as_bytes(), Duration::from_secs(5));
    raw
}

// ---- non-blocking commands -----------------------------------------------

#[test]
fn push_pop_and_lengths() {
    let node = Node::start(&[]);
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["LPUSH", "l", "a", "b", "c"]), 3);
    assert_eq!(q::<i64>(&mut c, &["RPUSH", "l", "d", "e"]), 5);
    let all: Vec<String> = c.lrange("l", 0, -1).unwrap();
    assert_eq!(all, ["c", "b", "a", "d", "e"]);
    assert_eq!(q::<i64>(&mut c, &["LPUSHX", "missing", "a"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RPUSHX", "missing", "a"]), 0);
    assert!(!c.exists::<_, bool>("missing").unwrap());
    assert_eq!(q::<i64>(&mut c, &["LPUSHX", "l", "z"]), 6);
    assert_eq!(q::<i64>(&mut c, &["RPUSHX", "l", "y", "z"]), 8);
    assert_eq!(c.llen::<_, i64>("l").unwrap(), 8);
    assert_eq!(c.llen::<_, i64>("missing").unwrap(), 0);

    assert_eq!(
        q::<Option<String>>(&mut c, &["LPOP", "l"]).as_deref(),
        Some("z")
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["RPOP", "l"]).as_deref(),
        Some("z")
    );
    assert_eq!(q::<Vec<String>>(&mut c, &["LPOP", "l", "2"]), ["c", "b"]);
    assert_eq!(q::<Vec<String>>(&mut c, &["RPOP", "l", "2"]), ["y", "e"]);
    assert_eq!(
        q::<Vec<String>>(&mut c, &["LPOP", "l", "0"]),
        Vec::<String>::new()
    );
    assert_eq!(q::<Vec<String>>(&mut c, &["LPOP", "l", "100"]), ["a", "d"]);
    // The emptied list is gone.
    assert!(!c.exists::<_, bool>("l").unwrap());
    assert_eq!(q::<String>(&mut c, &["TYPE", "l"]), "none");

    let e = error_of(&mut c, &["LPOP", "l", "-1"]);
    assert_eq!(e, "ERR value is out of range, must be positive");
    let e = error_of(&mut c, &["LPOP", "l", "x"]);
    assert_eq!(e, "ERR value is out of range, must be positive");
    let e = error_of(&mut c, &["LPOP", "l", "1", "2"]);
    assert_eq!(e, "ERR wrong number of arguments for 'lpop' command");
    let e = error_of(&mut c, &["LPUSH", "l"]);
    assert_eq!(e, "ERR wrong number of arguments for 'lpush' command");
}

#[test]
fn nil_shapes_are_byte_exact() {
    let node = Node::start(&[]);
    let r = node.raw(&[resp(&["LPOP", "missing"]), resp(&["RPOP", "missing"])].concat());
    assert_eq!(r, b"$-1\r\n$-1\r\n");
    let r = node.raw(
        &[
            resp(&["LPOP", "missing", "2"]),
            resp(&["RPOP", "missing", "0"]),
            resp(&["LMPOP", "1", "missing", "LEFT"]),
        ]
        .concat(),
    );
    assert_eq!(r, b"*-1\r\n*-1\r\n*-1\r\n");
    let r = node.raw(
        &[
            resp(&["LINDEX", "missing", "0"]),
            resp(&["LMOVE", "missing", "d", "LEFT", "LEFT"]),
            resp(&["RPOPLPUSH", "missing", "d"]),
            resp(&["LPOS", "missing", "a"]),
            resp(&["LPOS", "missing", "a", "COUNT", "0"]),
            resp(&["LRANGE", "missing", "0", "-1"]),
        ]
        .concat(),
    );
    assert_eq!(r, b"$-1\r\n$-1\r\n$-1\r\n$-1\r\n*0\r\n*0\r\n");
    // RESP3 has one null.
    let r = node.raw(
        &[
            resp(&["HELLO", "3"]),
            resp(&["LPOP", "missing"]),
            resp(&["LPOP", "missing", "2"]),
            resp(&["LMPOP", "1", "missing", "RIGHT"]),
        ]
        .concat(),
    );
    assert!(
        r.ends_with(b"_\r\n_\r\n_\r\n"),
        "{}",
        String::from_utf8_lossy(&r)
    );
}

#[test]
fn wrongtype_on_a_string_key() {
    let node = Node::start(&[]);
    let mut c = node.client();
    c.set::<_, _, ()>("s", "str").unwrap();
    c.rpush::<_, _, ()>("l", "a").unwrap();
    for cmd in [
        &["LPUSH", "s", "a"][..],
        &["RPUSH", "s", "a"],
        &["LPUSHX", "s", "a"],
        &["RPUSHX", "s", "a"],
        &["LPOP", "s"],
        &["RPOP", "s", "2"],
        &["LLEN", "s"],
        &["LRANGE", "s", "0", "-1"],
        &["LINDEX", "s", "0"],
        &["LSET", "s", "0", "a"],
        &["LINSERT", "s", "BEFORE", "a", "b"],
        &["LREM", "s", "0", "a"],
        &["LTRIM", "s", "0", "1"],
        &["LPOS", "s", "a"],
        &["LMOVE", "s", "l", "LEFT", "LEFT"],
        &["LMOVE", "l", "s", "LEFT", "LEFT"],
        &["RPOPLPUSH", "l", "s"],
        &["LMPOP", "2", "missing", "s", "LEFT"],
        &["BLPOP", "missing", "s", "0"],
        &["BRPOP", "s", "0"],
        &["BLMOVE", "l", "s", "LEFT", "LEFT", "0"],
        &["BRPOPLPUSH", "l", "s", "0"],
        &["BLMPOP", "0", "1", "s", "LEFT"],
    ] {
        assert_eq!(error_of(&mut c, cmd), WRONGTYPE, "{cmd:?}");
    }
    // Nothing was changed by the failed commands.
    assert_eq!(c.get::<_, String>("s").unwrap(), "str");
    assert_eq!(c.lrange::<_, Vec<String>>("l", 0, -1).unwrap(), ["a"]);
    // The destination is only checked when there is something to move.
    let v: Option<String> = q(&mut c, &["LMOVE", "missing", "s", "LEFT", "LEFT"]);
    assert_eq!(v, None);
    // The first non-empty list wins before a later key's type is looked at.
    let v: Vec<Value> = q(&mut c, &["LMPOP", "2", "l", "s", "LEFT"]);
    assert_eq!(v.len(), 2);
}

#[test]
fn ranges_indexes_and_lset() {
    let node = Node::start(&[]);
    let mut c = node.client();
    c.rpush::<_, _, ()>("l", &["a", "b", "c", "d", "e"])
        .unwrap();
    let r = |c: &mut redis::Connection, s: &str, e: &str| -> Vec<String> {
        q(c, &["LRANGE", "l", s, e])
    };
    assert_eq!(r(&mut c, "0", "-1"), ["a", "b", "c", "d", "e"]);
    assert_eq!(r(&mut c, "-2", "-1"), ["d", "e"]);
    assert_eq!(r(&mut c, "-100", "1"), ["a", "b"]);
    assert_eq!(r(&mut c, "3", "100"), ["d", "e"]);
    assert!(r(&mut c, "3", "1").is_empty());
    assert!(r(&mut c, "5", "10").is_empty());
    assert!(r(&mut c, "0", "-6").is_empty());
    assert_eq!(
        r(&mut c, "-9223372036854775808", "9223372036854775807").len(),
        5
    );
    let e = error_of(&mut c, &["LRANGE", "l", "x", "1"]);
    assert_eq!(e, "ERR value is not an integer or out of range");
    let e = error_of(&mut c, &["LRANGE", "l", "0", "9223372036854775808"]);
    assert_eq!(e, "ERR value is not an integer or out of range");

    let idx = |c: &mut redis::Connection, i: &str| -> Option<String> { q(c, &["LINDEX", "l", i]) };
    assert_eq!(idx(&mut c, "0").as_deref(), Some("a"));
    assert_eq!(idx(&mut c, "-1").as_deref(), Some("e"));
    assert_eq!(idx(&mut c, "-5").as_deref(), Some("a"));
    assert_eq!(idx(&mut c, "5"), None);
    assert_eq!(idx(&mut c, "-6"), None);
    assert_eq!(idx(&mut c, "9223372036854775807"), None);
    let e = error_of(&mut c, &["LINDEX", "l", "foo"]);
    assert_eq!(e, "ERR value is not an integer or out of range");
    // A missing key answers nil before the index is parsed (as Redis).
    assert_eq!(
        q::<Option<String>>(&mut c, &["LINDEX", "missing", "foo"]),
        None
    );

    assert_eq!(q::<String>(&mut c, &["LSET", "l", "0", "A"]), "OK");
    assert_eq!(q::<String>(&mut c, &["LSET", "l", "-1", "E"]), "OK");
    assert_eq!(
        error_of(&mut c, &["LSET", "l", "5", "x"]),
        "ERR index out of range"
    );
    assert_eq!(
        error_of(&mut c, &["LSET", "l", "-6", "x"]),
        "ERR index out of range"
    );
    assert_eq!(
        error_of(&mut c, &["LSET", "missing", "0", "x"]),
        "ERR no such key"
    );
    assert_eq!(
        error_of(&mut c, &["LSET", "missing", "foo", "x"]),
        "ERR no such key"
    );
    assert_eq!(
        error_of(&mut c, &["LSET", "l", "foo", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(r(&mut c, "0", "-1"), ["A", "b", "c", "d", "E"]);
}

#[test]
fn benchmark_sized_ranges() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let vals: Vec<String> = (0..600).map(|i| format!("v{i}")).collect();
    assert_eq!(c.lpush::<_, _, i64>("mylist", &vals).unwrap(), 600);
    for n in [100, 300, 450, 600] {
        let got: Vec<String> = c.lrange("mylist", 0, n - 1).unwrap();
        assert_eq!(got.len(), n as usize);
        assert_eq!(got[0], "v599");
        assert_eq!(got[n as usize - 1], format!("v{}", 600 - n));
    }
}

#[test]
fn linsert_lrem_ltrim() {
    let node = Node::start(&[]);
    let mut c = node.client();
    c.rpush::<_, _, ()>("l", &["a", "b", "c"]).unwrap();
    assert_eq!(q::<i64>(&mut c, &["LINSERT", "l", "before", "a", "pre"]), 4);
    assert_eq!(q::<i64>(&mut c, &["LINSERT", "l", "AFTER", "c", "post"]), 5);
    assert_eq!(q::<i64>(&mut c, &["LINSERT", "l", "AFTER", "b", "mid"]), 6);
    assert_eq!(
        q::<i64>(&mut c, &["LINSERT", "l", "AFTER", "nothere", "x"]),
        -1
    );
    assert_eq!(
        q::<i64>(&mut c, &["LINSERT", "missing", "BEFORE", "a", "x"]),
        0
    );
    assert!(!c.exists::<_, bool>("missing").unwrap());
    assert_eq!(
        error_of(&mut c, &["LINSERT", "l", "MIDDLE", "a", "x"]),
        "ERR syntax error"
    );
    let all: Vec<String> = c.lrange("l", 0, -1).unwrap();
    assert_eq!(all, ["pre", "a", "b", "mid", "c", "post"]);

    c.del::<_, ()>("r").unwrap();
    c.rpush::<_, _, ()>("r", &["a", "b", "a", "c", "a", "d", "a"])
        .unwrap();
    assert_eq!(q::<i64>(&mut c, &["LREM", "r", "2", "a"]), 2);
    assert_eq!(
        c.lrange::<_, Vec<String>>("r", 0, -1).unwrap(),
        ["b", "c", "a", "d", "a"]
    );
    assert_eq!(q::<i64>(&mut c, &["LREM", "r", "-1", "a"]), 1);
    assert_eq!(
        c.lrange::<_, Vec<String>>("r", 0, -1).unwrap(),
        ["b", "c", "a", "d"]
    );
    assert_eq!(q::<i64>(&mut c, &["LREM", "r", "0", "zz"]), 0);
    c.rpush::<_, _, ()>("r", &["a", "a"]).unwrap();
    assert_eq!(q::<i64>(&mut c, &["LREM", "r", "0", "a"]), 3);
    assert_eq!(
        c.lrange::<_, Vec<String>>("r", 0, -1).unwrap(),
        ["b", "c", "d"]
    );
    assert_eq!(q::<i64>(&mut c, &["LREM", "missing", "0", "a"]), 0);
    assert_eq!(
        error_of(&mut c, &["LREM", "r", "x", "a"]),
        "ERR value is not an integer or out of range"
    );
    for v in ["b", "c", "d"] {
        assert_eq!(q::<i64>(&mut c, &["LREM", "r", "1", v]), 1);
    }
    assert!(!c.exists::<_, bool>("r").unwrap());

    c.rpush::<_, _, ()>("t", &["1", "2", "3", "4", "5"])
        .unwrap();
    assert_eq!(q::<String>(&mut c, &["LTRIM", "t", "1", "-2"]), "OK");
    assert_eq!(
        c.lrange::<_, Vec<String>>("t", 0, -1).unwrap(),
        ["2", "3", "4"]
    );
    assert_eq!(q::<String>(&mut c, &["LTRIM", "t", "-100", "100"]), "OK");
    assert_eq!(c.llen::<_, i64>("t").unwrap(), 3);
    assert_eq!(q::<String>(&mut c, &["LTRIM", "t", "-1", "-1"]), "OK");
    assert_eq!(c.lrange::<_, Vec<String>>("t", 0, -1).unwrap(), ["4"]);
    assert_eq!(q::<String>(&mut c, &["LTRIM", "t", "5", "10"]), "OK");
    assert!(!c.exists::<_, bool>("t").unwrap());
    assert_eq!(q::<String>(&mut c, &["LTRIM", "missing", "0", "1"]), "OK");
    assert_eq!(
        error_of(&mut c, &["LTRIM", "t", "x", "1"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn lpos_options() {
    let node = Node::start(&[]);
    let mut c = node.client();
    c.rpush::<_, _, ()>("p", &["a", "b", "c", "1", "2", "3", "c", "c"])
        .unwrap();
    let pos = |c: &mut redis::Connection, extra: &[&str]| -> Value {
        let mut args = vec!["LPOS", "p", "c"];
        args.extend_from_slice(extra);
        q(c, &args)
    };
    let ints = |v: &[i64]| Value::Array(v.iter().map(|&i| Value::Int(i)).collect());
    assert_eq!(pos(&mut c, &[]), Value::Int(2));
    assert_eq!(pos(&mut c, &["RANK", "2"]), Value::Int(6));
    assert_eq!(pos(&mut c, &["RANK", "-1"]), Value::Int(7));
    assert_eq!(pos(&mut c, &["RANK", "-1", "COUNT", "2"]), ints(&[7, 6]));
    assert_eq!(pos(&mut c, &["COUNT", "0"]), ints(&[2, 6, 7]));
    assert_eq!(pos(&mut c, &["COUNT", "10"]), ints(&[2, 6, 7]));
    assert_eq!(pos(&mut c, &["COUNT", "2", "MAXLEN", "3"]), ints(&[2]));
    assert_eq!(pos(&mut c, &["MAXLEN", "2"]), Value::Nil);
    assert_eq!(pos(&mut c, &["MAXLEN", "2", "COUNT", "1"]), ints(&[]));
    assert_eq!(pos(&mut c, &["MAXLEN", "0"]), Value::Int(2));
    assert_eq!(pos(&mut c, &["RANK", "10"]), Value::Nil);
    assert_eq!(
        pos(&mut c, &["RANK", "2", "COUNT", "1", "RANK", "1"]),
        ints(&[2])
    );
    // Redis 7.0 quirk: RANK LLONG_MIN counts from the tail and ignores COUNT.
    assert_eq!(
        pos(&mut c, &["RANK", "-9223372036854775808", "COUNT", "1"]),
        ints(&[7, 6, 2])
    );
    assert_eq!(q::<Value>(&mut c, &["LPOS", "p", "zz"]), Value::Nil);
    assert_eq!(
        q::<Value>(&mut c, &["LPOS", "p", "zz", "COUNT", "0"]),
        ints(&[])
    );
    assert_eq!(
        error_of(&mut c, &["LPOS", "p", "c", "RANK", "0"]),
        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"
    );
    assert_eq!(
        error_of(&mut c, &["LPOS", "p", "c", "COUNT", "-1"]),
        "ERR COUNT can't be negative"
    );
    assert_eq!(
        error_of(&mut c, &["LPOS", "p", "c", "MAXLEN", "-1"]),
        "ERR MAXLEN can't be negative"
    );
    assert_eq!(
        error_of(&mut c, &["LPOS", "p", "c", "FOO", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        error_of(&mut c, &["LPOS", "p", "c", "RANK"]),
        "ERR syntax error"
    );
    assert_eq!(
        error_of(&mut c, &["LPOS", "p", "c", "RANK", "x"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn lmove_rpoplpush_lmpop() {
    let node = Node::start(&[]);
    let mut c = node.client();
    c.rpush::<_, _, ()>("src", &["a", "b", "c"]).unwrap();
    let mv = |c: &mut redis::Connection, args: &[&str]| -> Option<String> { q(c, args) };
    assert_eq!(
        mv(&mut c, &["LMOVE", "src", "dst", "LEFT", "RIGHT"]).as_deref(),
        Some("a")
    );
    assert_eq!(
        mv(&mut c, &["LMOVE", "src", "dst", "right", "left"]).as_deref(),
        Some("c")
    );
    assert_eq!(
        c.lrange::<_, Vec<String>>("dst", 0, -1).unwrap(),
        ["c", "a"]
    );
    assert_eq!(
        error_of(&mut c, &["LMOVE", "src", "dst", "UP", "LEFT"]),
        "ERR syntax error"
    );
    // Rotating a one-element list onto itself keeps it.
    assert_eq!(
        mv(&mut c, &["LMOVE", "src", "src", "LEFT", "RIGHT"]).as_deref(),
        Some("b")
    );
    assert_eq!(c.lrange::<_, Vec<String>>("src", 0, -1).unwrap(), ["b"]);
    assert_eq!(
        mv(&mut c, &["RPOPLPUSH", "src", "dst"]).as_deref(),
        Some("b")
    );
    assert!(!c.exists::<_, bool>("src").unwrap());
    assert_eq!(mv(&mut c, &["RPOPLPUSH", "src", "dst"]), None);
    assert_eq!(
        c.lrange::<_, Vec<String>>("dst", 0, -1).unwrap(),
        ["b", "c", "a"]
    );
    // Rotation of a longer list.
    assert_eq!(
        mv(&mut c, &["RPOPLPUSH", "dst", "dst"]).as_deref(),
        Some("a")
    );
    assert_eq!(
        c.lrange::<_, Vec<String>>("dst", 0, -1).unwrap(),
        ["a", "b", "c"]
    );

    let v: (String, Vec<String>) = q(&mut c, &["LMPOP", "1", "dst", "LEFT"]);
    assert_eq!(v, ("dst".to_string(), vec!["a".to_string()]));
    let v: (String, Vec<String>) = q(
        &mut c,
        &["LMPOP", "2", "missing", "dst", "RIGHT", "COUNT", "10"],
    );
    assert_eq!(
        v,
        ("dst".to_string(), vec!["c".to_string(), "b".to_string()])
    );
    assert!(!c.exists::<_, bool>("dst").unwrap());
    assert_eq!(
        q::<Value>(&mut c, &["LMPOP", "2", "missing", "dst", "LEFT"]),
        Value::Nil
    );
    for (args, msg) in [
        (
            &["LMPOP", "0", "a", "LEFT"][..],
            "ERR numkeys should be greater than 0",
        ),
        (
            &["LMPOP", "x", "a", "LEFT"],
            "ERR numkeys should be greater than 0",
        ),
        (&["LMPOP", "3", "a", "b", "LEFT"], "ERR syntax error"),
        (&["LMPOP", "2", "a", "b"], "ERR syntax error"),
        (
            &["LMPOP", "9223372036854775807", "a", "LEFT"],
            "ERR syntax error",
        ),
        (&["LMPOP", "1", "a", "MIDDLE"], "ERR syntax error"),
        (
            &["LMPOP", "1", "a", "LEFT", "COUNT", "0"],
            "ERR count should be greater than 0",
        ),
        (
            &["LMPOP", "1", "a", "LEFT", "COUNT", "x"],
            "ERR count should be greater than 0",
        ),
        (
            &["LMPOP", "1", "a", "LEFT", "COUNT", "1", "COUNT", "2"],
            "ERR syntax error",
        ),
        (&["LMPOP", "1", "a", "LEFT", "COUNT"], "ERR syntax error"),
    ] {
        assert_eq!(error_of(&mut c, args), msg, "{args:?}");
    }
}

// ---- blocking commands -----------------------------------------------------

#[test]
fn blocking_forms_serve_existing_data_at_once() {
    let node = Node::start(&[]);
    let mut c = node.client();
    c.rpush::<_, _, ()>("bl", &["1", "2", "3"]).unwrap();
    let v: (String, String) = q(&mut c, &["BLPOP", "missing", "bl", "0"]);
    assert_eq!(v, ("bl".to_string(), "1".to_string()));
    let v: (String, String) = q(&mut c, &["BRPOP", "missing", "bl", "0"]);
    assert_eq!(v, ("bl".to_string(), "3".to_string()));
    let v: Option<String> = q(&mut c, &["BLMOVE", "bl", "bm", "RIGHT", "LEFT", "0"]);
    assert_eq!(v.as_deref(), Some("2"));
    let v: Option<String> = q(&mut c, &["BRPOPLPUSH", "bm", "bn", "0"]);
    assert_eq!(v.as_deref(), Some("2"));
    c.rpush::<_, _, ()>("bl", &["4", "5"]).unwrap();
    let v: (String, Vec<String>) = q(
        &mut c,
        &["BLMPOP", "0", "2", "x", "bl", "RIGHT", "COUNT", "5"],
    );
    assert_eq!(
        v,
        ("bl".to_string(), vec!["5".to_string(), "4".to_string()])
    );
    assert!(!c.exists::<_, bool>("bl").unwrap());

    for (args, msg) in [
        (
            &["BLPOP", "k", "x"][..],
            "ERR timeout is not a float or out of range",
        ),
        (
            &["BLPOP", "k", "nan"],
            "ERR timeout is not a float or out of range",
        ),
        (&["BLPOP", "k", "-1"], "ERR timeout is negative"),
        (&["BLPOP", "k", "inf"], "ERR timeout is negative"),
        (
            &["BRPOP", "k", "0.01", "x"],
            "ERR timeout is not a float or out of range",
        ),
        (&["BLMOVE", "a", "b", "UP", "LEFT", "x"], "ERR syntax error"),
        (
            &["BLMOVE", "a", "b", "LEFT", "LEFT", "x"],
            "ERR timeout is not a float or out of range",
        ),
        (&["BRPOPLPUSH", "a", "b", "-0.5"], "ERR timeout is negative"),
        (
            &["BLMPOP", "x", "0", "a", "LEFT"],
            "ERR numkeys should be greater than 0",
        ),
        (
            &["BLMPOP", "x", "1", "a", "LEFT", "COUNT", "0"],
            "ERR count should be greater than 0",
        ),
        (
            &["BLMPOP", "x", "1", "a", "LEFT"],
            "ERR timeout is not a float or out of range",
        ),
        (&["BLMPOP", "0", "1", "a", "UP"], "ERR syntax error"),
    ] {
        assert_eq!(error_of(&mut c, args), msg, "{args:?}");
    }
}

#[test]
fn blocking_timeouts_reply_nil_after_the_timeout() {
    let node = Node::start(&[]);
    let mut raw = Raw::connect(&node);
    for cmd in [
        &["BLPOP", "missing", "0.2"][..],
        &["BRPOP", "missing", "other", "0.2"],
        &["BLMOVE", "missing", "dst", "LEFT", "RIGHT", "0.2"],
        &["BRPOPLPUSH", "missing", "dst", "0.2"],
        &["BLMPOP", "0.2", "2", "missing", "other", "LEFT"],
    ] {
        let t0 = Instant::now();
        raw.send(&[cmd]);
        // Redis 7.0 answers every blocking timeout with a nil array.
        raw.expect(b"*-1\r\n", Duration::from_secs(5));
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(3),
            "{cmd:?} took {took:?}"
        );
    }
    // A sub-millisecond timeout rounds up to 1 ms rather than forever.
    raw.send(&[&["BLPOP", "missing", "0.0001"]]);
    raw.expect(b"*-1\r\n", Duration::from_secs(5));
    // RESP3 null.
    raw.send(&[&["HELLO", "3"]]);
    let hello = raw.read_exact_within(1, Duration::from_secs(5));
    assert_eq!(hello.first(), Some(&b'%'));
    // Drain the rest of the HELLO map before the next exchange.
    raw.0
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut sink = [0u8; 4096];
    while raw.0.read(&mut sink).is_ok_and(|n| n > 0) {}
    raw.send(&[&["BLPOP", "missing", "0.05"]]);
    raw.expect(b"_\r\n", Duration::from_secs(5));
    assert!(!node.client().exists::<_, bool>("dst").unwrap());
}

#[test]
fn blpop_is_served_by_a_later_push() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let t0 = Instant::now();
    let mut raw = block_raw(&node, "ready", &["BLPOP", "k1", "k2", "10"]);
    assert_eq!(c.lpush::<_, _, i64>("k2", "hello").unwrap(), 1);
    raw.expect(b"*2\r\n$2\r\nk2\r\n$5\r\nhello\r\n", Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(8));
    // The element was handed over, not left behind.
    assert!(!c.exists::<_, bool>("k2").unwrap());

    let mut raw = block_raw(&node, "ready", &["BRPOP", "k1", "0"]);
    c.rpush::<_, _, ()>("k1", &["a", "b"]).unwrap();
    raw.expect(b"*2\r\n$2\r\nk1\r\n$1\r\nb\r\n", Duration::from_secs(5));
    assert_eq!(c.lrange::<_, Vec<String>>("k1", 0, -1).unwrap(), ["a"]);

    // Same through the redis crate, from another thread.
    c.del::<_, ()>("k1").unwrap();
    let url = node.url();
    let h = thread::spawn(move || {
        let mut b = redis::Client::open(url).unwrap().get_connection().unwrap();
        let (_, v): (i64, Option<(String, String)>) = redis::pipe()
            .cmd("RPUSH")
            .arg("ready2")
            .arg("x")
            .cmd("BLPOP")
            .arg("k1")
            .arg(10)
            .query(&mut b)
            .unwrap();
        v
    });
    common::wait_until("crate client to block", Duration::from_secs(10), || {
        c.exists::<_, bool>("ready2").unwrap()
    });
    c.lpush::<_, _, ()>("k1", "v").unwrap();
    assert_eq!(h.join().unwrap(), Some(("k1".to_string(), "v".to_string())));
}

#[test]
fn blmove_brpoplpush_and_blmpop_are_served_by_a_later_push() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let mut raw = block_raw(
        &node,
        "ready",
        &["BLMOVE", "src", "dst", "RIGHT", "LEFT", "10"],
    );
    c.rpush::<_, _, ()>("src", &["a", "b"]).unwrap();
    raw.expect(b"$1\r\nb\r\n", Duration::from_secs(5));
    assert_eq!(c.lrange::<_, Vec<String>>("dst", 0, -1).unwrap(), ["b"]);
    assert_eq!(c.lrange::<_, Vec<String>>("src", 0, -1).unwrap(), ["a"]);
    c.del::<_, ()>("src").unwrap();

    let mut raw = block_raw(&node, "ready", &["BRPOPLPUSH", "src", "dst", "0"]);
    c.lpush::<_, _, ()>("src", "z").unwrap();
    raw.expect(b"$1\r\nz\r\n", Duration::from_secs(5));
    assert_eq!(
        c.lrange::<_, Vec<String>>("dst", 0, -1).unwrap(),
        ["z", "b"]
    );
    assert!(!c.exists::<_, bool>("src").unwrap());

    let mut raw = block_raw(
        &node,
        "ready",
        &["BLMPOP", "0", "2", "m1", "m2", "LEFT", "COUNT", "2"],
    );
    c.rpush::<_, _, ()>("m2", &["x", "y", "z"]).unwrap();
    raw.expect(
        b"*2\r\n$2\r\nm2\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(c.lrange::<_, Vec<String>>("m2", 0, -1).unwrap(), ["z"]);
}

#[test]
fn several_clients_blocked_on_one_key_each_get_one_element() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let mut waiters: Vec<Raw> = (0..4)
        .map(|_| block_raw(&node, "ready", &["BLPOP", "q", "10"]))
        .collect();
    assert_eq!(c.rpush::<_, _, i64>("q", &["a", "b", "c", "d"]).unwrap(), 4);
    let mut got = Vec::new();
    for w in &mut waiters {
        let r = w.read_exact_within(
            b"*2\r\n$1\r\nq\r\n$1\r\na\r\n".len(),
            Duration::from_secs(5),
        );
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("*2\r\n$1\r\nq\r\n$1\r\n"), "{text:?}");
        got.push(text.chars().nth(text.len() - 3).unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, ['a', 'b', 'c', 'd']);
    assert!(!c.exists::<_, bool>("q").unwrap());
}

#[test]
fn a_wake_up_with_nothing_to_take_keeps_the_original_deadline() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let t0 = Instant::now();
    let mut raw = block_raw(&node, "ready", &["BLPOP", "q", "1"]);
    // Keep touching the key without ever leaving an element: each touch
    // wakes the blocked client, which finds nothing and must block again
    // until its first deadline, not a fresh one.
    let mut reply = Vec::new();
    raw.0.set_nonblocking(true).unwrap();
    while t0.elapsed() < Duration::from_secs(4) {
        let (_, _): (i64, Option<String>) = redis::pipe()
            .cmd("LPUSH")
            .arg("q")
            .arg("tmp")
            .cmd("LPOP")
            .arg("q")
            .query(&mut c)
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = raw.0.read(&mut buf) {
            reply.extend_from_slice(&buf[..n]);
            if reply.len() >= 5 {
                break;
            }
        }
        thread::sleep(Duration::from_millis(30));
    }
    let took = t0.elapsed();
    assert_eq!(reply, b"*-1\r\n");
    assert!(
        took < Duration::from_millis(2500),
        "timed out after {took:?}"
    );
}

#[test]
fn a_blocked_client_that_disconnects_does_not_break_the_server() {
    let node = Node::start(&[]);
    let mut c = node.client();
    for _ in 0..20 {
        let raw = block_raw(&node, "ready", &["BLPOP", "q", "0"]);
        drop(raw);
    }
    let live = block_raw(&node, "ready", &["BRPOP", "q", "0"]);
    drop(live);
    // The element must go to the one live waiter, not to a closed connection.
    let mut raw = block_raw(&node, "ready", &["BLPOP", "q", "10"]);
    c.rpush::<_, _, ()>("q", "v").unwrap();
    raw.expect(b"*2\r\n$1\r\nq\r\n$1\r\nv\r\n", Duration::from_secs(5));
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
}

#[test]
fn pipelined_commands_after_a_blocking_one_wait_and_keep_order() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let mut raw = Raw::connect(&node);
    raw.send(&[
        &["RPUSH", "ready", "x"],
        &["BLPOP", "q", "10"],
        &["PING"],
        &["LLEN", "q"],
        &["ECHO", "after"],
    ]);
    common::wait_until("blocking command to start", Duration::from_secs(10), || {
        c.exists::<_, bool>("ready").unwrap()
    });
    raw.expect(b":1\r\n", Duration::from_secs(5));
    // Nothing behind the blocked command may be answered yet.
    raw.0
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        raw.0.read(&mut buf).is_err(),
        "a reply overtook the blocked BLPOP"
    );
    // More commands arriving while blocked also wait their turn.
    raw.send(&[&["ECHO", "late"]]);
    c.rpush::<_, _, ()>("q", &["v", "w"]).unwrap();
    raw.expect(
        b"*2\r\n$1\r\nq\r\n$1\r\nv\r\n+PONG\r\n:1\r\n$5\r\nafter\r\n$4\r\nlate\r\n",
        Duration::from_secs(5),
    );
}
