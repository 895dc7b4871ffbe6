//! Differential tests of the commands added for the rest of the Redis 7.0
//! table (SORT, ZMPOP, ZINTERCARD, LCS, container subcommands in COMMAND,
//! LATENCY ...): the same script of raw commands against a fresh
//! redis-server 7.0 and a fresh node, every raw reply compared byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Node;
use std::net::TcpStream;
use std::time::Duration;

fn exchange(s: &mut TcpStream, args: &[&str]) -> Vec<u8> {
    use std::io::{Read, Write};
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

/// Two connections, ours and Redis's, fed the same commands.
struct Pair {
    ours: TcpStream,
    theirs: TcpStream,
    compared: usize,
}

impl Pair {
    fn new(ours: u16, theirs: u16) -> Pair {
        let ours = TcpStream::connect(("127.0.0.1", ours)).unwrap();
        let theirs = TcpStream::connect(("127.0.0.1", theirs)).unwrap();
        for t in [&ours, &theirs] {
            t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        Pair {
            ours,
            theirs,
            compared: 0,
        }
    }

    /// Both raw replies.
    fn both(&mut self, args: &[&str]) -> (Vec<u8>, Vec<u8>) {
        (
            exchange(&mut self.ours, args),
            exchange(&mut self.theirs, args),
        )
    }

    /// Runs every command on both sides and requires identical replies.
    fn same(&mut self, script: &[&[&str]]) {
        for args in script {
            let (a, b) = self.both(args);
            assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "reply to {args:?}"
            );
            self.compared += 1;
        }
    }
}

fn standalone() -> (Node, tempfile::TempDir, common::RealRedis) {
    let node = Node::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let real = common::RealRedis::start(dir.path(), &["--appendonly", "no"]);
    (node, dir, real)
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn sort_matches_redis_byte_for_byte() {
    let (node, _dir, real) = standalone();
    let mut p = Pair::new(node.port, real.port);
    p.same(&[
        &["rpush", "l", "3", "1", "2", "10", "-5", "1.5"],
        &["sort", "l"],
        &["sort", "l", "desc"],
        &["sort", "l", "limit", "1", "2"],
        &["sort", "l", "limit", "-1", "2"],
        &["sort", "l", "limit", "2", "-1"],
        &["sort", "l", "limit", "10", "2"],
        &["sort", "l", "limit", "0", "0"],
        &["sort", "l", "desc", "limit", "1", "3"],
        &["sort", "l", "alpha"],
        &["sort", "l", "alpha", "desc"],
        &["sort", "l", "by", "nosort"],
        &["sort", "l", "by", "nosort", "desc"],
        &["sort", "l", "by", "nosort", "limit", "1", "2"],
        &["sort", "l", "by", "nosort", "desc", "limit", "1", "2"],
        &["rpush", "w", "a", "b", "c"],
        &["sort", "w"],
        &["sort", "w", "alpha"],
        &["set", "w_3", "30"],
        &["set", "w_1", "10"],
        &["set", "w_2", "5"],
        &["set", "w_10", "-1"],
        &["sort", "l", "by", "w_*"],
        &["sort", "l", "by", "w_*", "get", "#", "get", "w_*"],
        &["sort", "l", "by", "w_*", "get", "#", "get", "w_*", "desc"],
        &["sort", "l", "by", "w_*", "alpha", "get", "w_*"],
        &["hset", "h_1", "f", "9"],
        &["hset", "h_2", "f", "8"],
        &["sort", "l", "by", "h_*->f", "get", "h_*->f", "get", "#"],
        &["sort", "l", "get", "h_*->"],
        &["sort", "l", "get", "nostar"],
        &["sort", "l", "store", "dst"],
        &["lrange", "dst", "0", "-1"],
        &["sort", "l", "by", "w_*", "get", "w_*", "store", "dst2"],
        &["lrange", "dst2", "0", "-1"],
        &["sort", "missing", "store", "dst"],
        &["exists", "dst"],
        &["sort", "missing"],
        &["sadd", "s", "5", "2", "9", "1"],
        &["sort", "s"],
        &["sort", "s", "desc"],
        &["sort", "s", "by", "nosort"],
        &["sort", "s", "by", "nosort", "store", "ss"],
        &["lrange", "ss", "0", "-1"],
        &["sadd", "s2", "b", "a", "c"],
        &["sort", "s2", "by", "nosort", "store", "ss2"],
        &["lrange", "ss2", "0", "-1"],
        &["sort", "s2", "alpha"],
        &["zadd", "z", "3", "a", "1", "b", "2", "c"],
        &["sort", "z"],
        &["sort", "z", "alpha"],
        &["sort", "z", "by", "nosort"],
        &["sort", "z", "by", "nosort", "desc"],
        &["sort", "z", "by", "nosort", "limit", "1", "1"],
        &["sort", "z", "by", "nosort", "desc", "limit", "1", "5"],
        &["set", "str", "x"],
        &["sort", "str"],
        &["sort", "l", "limit"],
        &["sort", "l", "limit", "a", "b"],
        &["sort", "l", "foo"],
        &["sort", "l", "store"],
        &["sort_ro", "l", "store", "x"],
        &["sort_ro", "l", "desc", "limit", "0", "2"],
        &["sort_ro"],
        &["rpush", "e", "", " 1", "2"],
        &["sort", "e"],
        &["rpush", "bad", "1", "x"],
        &["sort", "bad"],
        &["sort", "bad", "alpha"],
        &["rpush", "bad2", "1", "1 "],
        &["sort", "bad2"],
        &["rpush", "bad3", "1e400"],
        &["sort", "bad3"],
        &["sort", "l", "by", "w_*", "limit", "1", "2"],
    ]);
    eprintln!("compared {} SORT replies", p.compared);
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn sort_patterns_are_refused_in_cluster_mode_as_redis_does() {
    let node = Node::start(&["--cluster-enabled", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    let real = common::RealRedis::start(dir.path(), &["--cluster-enabled", "yes"]);
    let mut p = Pair::new(node.port, real.port);
    p.same(&[&["cluster", "addslotsrange", "0", "16383"]]);
    common::wait_until("both clusters up", Duration::from_secs(20), || {
        let (a, b) = p.both(&["cluster", "info"]);
        let ok = |r: &[u8]| String::from_utf8_lossy(r).contains("cluster_state:ok");
        ok(&a) && ok(&b)
    });
    p.same(&[
        &["rpush", "l", "3", "1", "2"],
        &["sort", "l", "by", "w_*"],
        &["sort", "l", "by", "nosort"],
        &["sort", "l", "by", "nosort", "desc"],
        &["sort", "l", "get", "#"],
        // 7.0 refuses patterns even when their hash tag is the key's slot.
        &["sort", "l", "get", "{l}*"],
        &["sort", "l", "by", "{l}w_*"],
        &["sort_ro", "l", "get", "x_*"],
        &["sort", "l", "store", "{l}x"],
        &["lrange", "{l}x", "0", "-1"],
        &["sort", "l", "store", "x"],
    ]);
}
