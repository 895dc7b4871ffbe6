//! A snapshot must always load again: random keyspaces (every type, sizes
//! around Redis's encoding thresholds — listpack 128 entries / 64 bytes,
//! intset 512 — integers, compressible long strings, infinite and negative
//! zero scores, TTLs) are written to a node, SAVEd, and then
//! - `redis-check-rdb` accepts the file,
//! - a node restarted from it holds the same data,
//! - a real redis-server 7.0 started on it holds the same data.
//!
//! Needs redis-server and redis-check-rdb, hence `#[ignore]`. The case
//! count is PROPTEST_CASES (default 12); a failure prints the shrunk list
//! of commands that reproduces it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{Node, RealRedis};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::process::Command;

#[derive(Debug, Clone)]
enum Op {
    Set(u8, Vec<u8>),
    RPush(u8, Vec<Vec<u8>>),
    SAdd(u8, Vec<Vec<u8>>),
    ZAdd(u8, Vec<(f64, Vec<u8>)>),
    HSet(u8, Vec<(Vec<u8>, Vec<u8>)>),
    Expire(u8, u32),
}

fn element() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Integers: intsets, integer-encoded strings and listpack ints.
        any::<i64>().prop_map(|i| i.to_string().into_bytes()),
        (0i64..1000).prop_map(|i| i.to_string().into_bytes()),
        // Short text, around the 64-byte listpack value limit.
        proptest::collection::vec(any::<u8>(), 0..70),
        // Long and compressible: LZF in the file.
        (b'a'..=b'z', 20usize..400).prop_map(|(c, n)| vec![c; n]),
    ]
}

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        -1e6f64..1e6,
        any::<i32>().prop_map(f64::from),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..24;
    prop_oneof![
        (key.clone(), element()).prop_map(|(k, v)| Op::Set(k, v)),
        (key.clone(), proptest::collection::vec(element(), 1..200))
            .prop_map(|(k, v)| Op::RPush(k, v)),
        (key.clone(), proptest::collection::vec(element(), 1..600))
            .prop_map(|(k, v)| Op::SAdd(k, v)),
        (
            key.clone(),
            proptest::collection::vec((score(), element()), 1..200)
        )
            .prop_map(|(k, v)| Op::ZAdd(k, v)),
        (
            key.clone(),
            proptest::collection::vec((element(), element()), 1..150)
        )
            .prop_map(|(k, v)| Op::HSet(k, v)),
        (key, 100u32..100_000).prop_map(|(k, s)| Op::Expire(k, s)),
    ]
}

fn key(k: u8) -> String {
    format!("key:{k}")
}

fn apply(c: &mut redis::Connection, op: &Op) {
    let cmd = match op {
        Op::Set(k, v) => redis::cmd("SET").arg(key(*k)).arg(v).clone(),
        Op::RPush(k, v) => redis::cmd("RPUSH").arg(key(*k)).arg(v).clone(),
        Op::SAdd(k, v) => redis::cmd("SADD").arg(key(*k)).arg(v).clone(),
        Op::ZAdd(k, v) => {
            let mut c = redis::cmd("ZADD");
            c.arg(key(*k));
            for (s, m) in v {
                c.arg(*s).arg(m);
            }
            c
        }
        Op::HSet(k, v) => {
            let mut c = redis::cmd("HSET");
            c.arg(key(*k));
            for (f, v) in v {
                c.arg(f).arg(v);
            }
            c
        }
        Op::Expire(k, s) => redis::cmd("EXPIRE").arg(key(*k)).arg(*s).clone(),
    };
    // WRONGTYPE is part of the game: the key keeps its first type.
    let _ = cmd.query::<redis::Value>(c);
}

/// Everything in the keyspace, in a form both servers answer the same
/// way whatever encoding they picked.
fn contents(c: &mut redis::Connection) -> Contents {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
        let mut v: Vec<Vec<u8>> = match t.as_str() {
            "string" => vec![redis::cmd("GET").arg(&k).query(c).unwrap()],
            "list" => redis::cmd("LRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .query(c)
                .unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&k).query(c).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&k)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)
                .unwrap(),
            "hash" => redis::cmd("HGETALL").arg(&k).query(c).unwrap(),
            other => panic!("type {other}"),
        };
        match t.as_str() {
            "set" => v.sort(),
            "hash" => {
                let mut pairs: Vec<Vec<u8>> = v.chunks(2).map(|p| p.concat()).collect();
                pairs.sort();
                v = pairs;
            }
            _ => {}
        }
        let ttl: i64 = redis::cmd("TTL").arg(&k).query(c).unwrap();
        out.insert(k, (t, v, ttl > 0));
    }
    out
}

type Contents = BTreeMap<Vec<u8>, (String, Vec<Vec<u8>>, bool)>;

/// The first difference, short enough to read.
fn diff(got: &Contents, want: &Contents) -> Option<String> {
    let show = |v: &[Vec<u8>]| {
        v.iter()
            .map(|e| String::from_utf8_lossy(&e[..e.len().min(24)]).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (k, w) in want {
        match got.get(k) {
            None => return Some(format!("{} missing", String::from_utf8_lossy(k))),
            Some(g) if g != w => {
                let i = g.1.iter().zip(&w.1).position(|(a, b)| a != b).unwrap_or(0);
                let lo = i.saturating_sub(2);
                return Some(format!(
                    "{}: {} ttl {} vs want {} ttl {}; from element {lo}: [{}] vs want [{}]",
                    String::from_utf8_lossy(k),
                    g.0,
                    g.2,
                    w.0,
                    w.2,
                    show(&g.1[lo.min(g.1.len())..(lo + 6).min(g.1.len())]),
                    show(&w.1[lo.min(w.1.len())..(lo + 6).min(w.1.len())]),
                ));
            }
            _ => {}
        }
    }
    (got.len() != want.len()).then(|| format!("{} keys vs want {}", got.len(), want.len()))
}

#[test]
#[ignore = "needs redis-server and redis-check-rdb; run with --ignored"]
fn random_keyspaces_save_and_load_in_slotway_and_redis() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(op(), 1..60);
    runner
        .run(&strategy, |ops| {
            let node = Node::start(&[]);
            let mut c = node.client();
            for op in &ops {
                apply(&mut c, op);
            }
            let want = contents(&mut c);
            let _: () = redis::cmd("SAVE").query(&mut c).unwrap();
            drop(c);
            let dir = node.into_dir();
            let file = dir.path().join("dump.rdb");

            let check = Command::new("redis-check-rdb").arg(&file).output().unwrap();
            let report = String::from_utf8_lossy(&check.stdout).to_string();
            prop_assert!(
                check.status.success() && report.contains("RDB looks OK"),
                "{report}"
            );

            let real = RealRedis::start(dir.path(), &[]);
            let d = diff(&contents(&mut real.client()), &want);
            prop_assert!(d.is_none(), "redis-server view: {}", d.unwrap_or_default());
            drop(real);

            let again = Node::start_in(dir, &[]);
            let d = diff(&contents(&mut again.client()), &want);
            prop_assert!(
                d.is_none(),
                "slotway after restart: {}",
                d.unwrap_or_default()
            );
            Ok(())
        })
        .unwrap();
}
