//! Strings and generic key commands against the real binary with the
//! `redis` crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Node;
use redis::Commands;

#[test]
fn set_options_for_redlock() {
    let node = Node::start(&[]);
    let mut c = node.client();
    // The Redlock acquire: SET key token NX PX ms.
    let ok: Option<String> = redis::cmd("SET")
        .arg("lock")
        .arg("tok1")
        .arg("NX")
        .arg("PX")
        .arg(30000)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok.as_deref(), Some("OK"));
    let again: Option<String> = redis::cmd("SET")
        .arg("lock")
        .arg("tok2")
        .arg("NX")
        .arg("PX")
        .arg(30000)
        .query(&mut c)
        .unwrap();
    assert_eq!(again, None);
    let pttl: i64 = c.pttl("lock").unwrap();
    assert!(pttl > 29000 && pttl <= 30000, "{pttl}");
    let old: Option<String> = redis::cmd("SET")
        .arg("lock")
        .arg("tok3")
        .arg("XX")
        .arg("KEEPTTL")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("tok1"));
    assert!(c.pttl::<_, i64>("lock").unwrap() > 0);
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg(0)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("invalid expire time"), "{err}");
}

#[test]
fn counters_and_ranges() {
    let node = Node::start(&[]);
    let mut c = node.client();
    assert_eq!(c.incr::<_, _, i64>("n", 5).unwrap(), 5);
    assert_eq!(redis::cmd("DECR").arg("n").query::<i64>(&mut c).unwrap(), 4);
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("10.5")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "10.5");
    c.set::<_, _, ()>("s", "Hello World").unwrap();
    assert_eq!(c.getrange::<_, String>("s", -5, -1).unwrap(), "World");
    assert_eq!(c.append::<_, _, i64>("s", "!").unwrap(), 12);
    assert_eq!(c.setrange::<_, _, i64>("s", 6, "Redis").unwrap(), 12);
    assert_eq!(c.get::<_, String>("s").unwrap(), "Hello Redis!");
    c.set::<_, _, ()>("t", "abc").unwrap();
    let e = c.incr::<_, _, i64>("t", 1).unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    c.set::<_, _, ()>("big", i64::MAX.to_string()).unwrap();
    let e = c.incr::<_, _, i64>("big", 1).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
}

#[test]
fn mget_mset_del_exists_ttl() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query(&mut c)
        .unwrap();
    let v: Vec<Option<String>> = c.mget(&["a", "b", "nope"]).unwrap();
    assert_eq!(v, vec![Some("1".into()), Some("2".into()), None]);
    assert_eq!(c.exists::<_, i64>(&["a", "b", "nope"]).unwrap(), 2);
    assert!(c.expire::<_, bool>("a", 100).unwrap());
    assert_eq!(c.ttl::<_, i64>("a").unwrap(), 100);
    assert_eq!(c.ttl::<_, i64>("b").unwrap(), -1);
    assert_eq!(c.ttl::<_, i64>("nope").unwrap(), -2);
    assert!(c.persist::<_, bool>("a").unwrap());
    assert_eq!(c.del::<_, i64>(&["a", "b", "nope"]).unwrap(), 2);
    let t: String = redis::cmd("TYPE").arg("a").query(&mut c).unwrap();
    assert_eq!(t, "none");
}

#[test]
fn keys_expire_lazily_and_actively() {
    let node = Node::start(&[]);
    let mut c = node.client();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .arg("PX")
            .arg(50)
            .query(&mut c)
            .unwrap();
    }
    c.set::<_, _, ()>("stay", "v").unwrap();
    // Active expiry must shrink DBSIZE without anyone touching the keys.
    common::wait_until("active expiry", std::time::Duration::from_secs(5), || {
        redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap() == 1
    });
    assert_eq!(c.get::<_, Option<String>>("k1").unwrap(), None);
}

#[test]
fn scan_returns_every_key_once_and_keys_matches() {
    let node = Node::start(&[]);
    let mut c = node.client();
    for i in 0..300 {
        c.set::<_, _, ()>(format!("user:{i}"), i).unwrap();
    }
    c.set::<_, _, ()>("other", 1).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(20)
            .query(&mut c)
            .unwrap();
        for k in keys {
            assert!(seen.insert(k), "duplicate key from SCAN");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 300);
    let mut keys: Vec<String> = c.keys("user:1?").unwrap();
    keys.sort();
    assert_eq!(keys.len(), 10);
    let _: () = redis::cmd("RENAME")
        .arg("other")
        .arg("renamed")
        .query(&mut c)
        .unwrap();
    assert!(c.exists::<_, bool>("renamed").unwrap());
    let e = redis::cmd("RENAME")
        .arg("missing")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("no such key"));
}

#[test]
fn bad_input_gets_redis_errors_and_only_closes_that_client() {
    let node = Node::start(&[]);
    let mut bystander = node.client();
    bystander.set::<_, _, ()>("x", "1").unwrap();
    let r = node.raw(b"*2\r\n$3\r\nGET\r\n");
    assert!(r.is_empty(), "incomplete request must not be answered");
    let r = node.raw(b"*1\r\n+PING\r\n");
    assert_eq!(r, b"-ERR Protocol error: expected '$', got '+'\r\n");
    let r = node.raw(b"*-3x\r\n");
    assert_eq!(r, b"-ERR Protocol error: invalid multibulk length\r\n");
    let r = node.raw(b"*1\r\n$999999999999\r\n");
    assert_eq!(r, b"-ERR Protocol error: invalid bulk length\r\n");
    let r = node.raw(b"NOSUCH a b\r\nGET\r\nSET a\r\n");
    assert_eq!(
        String::from_utf8_lossy(&r),
        "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n-ERR wrong number of arguments for 'get' command\r\n-ERR wrong number of arguments for 'set' command\r\n"
    );
    let r = node.raw(b"INCRBY x notanumber\r\n");
    assert_eq!(r, b"-ERR value is not an integer or out of range\r\n");
    // Random garbage never takes the server down.
    for seed in 0u32..12 {
        let junk: Vec<u8> = (0..200u32)
            .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 13) as u8)
            .collect();
        let _ = node.raw(&junk);
    }
    assert_eq!(bystander.get::<_, String>("x").unwrap(), "1");
}

#[test]
fn pipelined_replies_come_back_in_order() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        p.cmd("GET").arg(format!("p{i}"));
    }
    let vals: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(vals, (0..1000).collect::<Vec<i64>>());
}

#[test]
fn inline_commands_work() {
    let node = Node::start(&[]);
    let r = node.raw(b"SET greeting \"hello world\"\r\nGET greeting\r\nPING\r\n");
    assert_eq!(r, b"+OK\r\n$11\r\nhello world\r\n+PONG\r\n");
}
