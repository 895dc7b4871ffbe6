//! Differential tests of ZMPOP, BZMPOP, ZINTERCARD, LCS (standalone) and of
//! MOVE, SWAPDB, FAILOVER, LOLWUT as a cluster-mode redis-server 7.0 answers
//! them: the same raw commands against both, every raw reply compared byte
//! for byte.
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

fn cluster_pair() -> (Node, tempfile::TempDir, common::RealRedis, Pair) {
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
    (node, dir, real, p)
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn zmpop_zintercard_lcs_match_redis_byte_for_byte() {
    let (node, _dir, real) = standalone();
    let mut p = Pair::new(node.port, real.port);
    p.same(&[
        &["zadd", "z1", "1", "a", "2", "b", "3", "c", "4", "d"],
        &["zadd", "z2", "1.5", "b", "2", "c", "10", "x"],
        &["sadd", "s1", "a", "b", "c", "q"],
        &["set", "str", "v"],
        // ZMPOP
        &["zmpop", "1", "z1", "min"],
        &["zmpop", "2", "none", "z1", "max", "count", "2"],
        &["zmpop", "2", "none", "z1", "MIN", "COUNT", "10"],
        &["exists", "z1"],
        &["zmpop", "2", "none", "z1", "min"],
        &["zmpop", "0", "z1", "min"],
        &["zmpop", "-1", "z1", "min"],
        &["zmpop", "x", "z1", "min"],
        &["zmpop", "3", "z1", "min"],
        &["zmpop", "1", "z2", "mid"],
        &["zmpop", "1", "z2", "min", "count", "0"],
        &["zmpop", "1", "z2", "min", "count", "-1"],
        &["zmpop", "1", "z2", "min", "count", "x"],
        &["zmpop", "1", "z2", "min", "count", "1", "count", "1"],
        &["zmpop", "1", "z2", "min", "count"],
        &["zmpop", "1", "z2", "min", "extra"],
        &["zmpop", "1", "str", "min"],
        &["zmpop", "2", "none", "str", "min"],
        &["zmpop", "1", "z2"],
        &["zmpop", "1"],
        // BZMPOP with data, bad args and a timeout
        &["bzmpop", "0", "1", "z2", "max"],
        &["bzmpop", "0.01", "1", "none", "min"],
        &["bzmpop", "-1", "1", "z2", "min"],
        &["bzmpop", "x", "1", "z2", "min"],
        &["bzmpop", "0", "0", "z2", "min"],
        &["bzmpop", "0", "1", "z2", "left"],
        &["bzmpop", "0", "1", "z2", "min", "count", "0"],
        &["bzmpop", "0", "1", "str", "min"],
        &["bzmpop", "0", "1", "z2"],
        // ZINTERCARD
        &["zadd", "y1", "1", "a", "2", "b", "3", "c", "4", "d"],
        &["zadd", "y2", "1", "b", "2", "c", "3", "d", "4", "e"],
        &["zintercard", "2", "y1", "y2"],
        &["zintercard", "2", "y1", "y2", "limit", "0"],
        &["zintercard", "2", "y1", "y2", "limit", "2"],
        &["zintercard", "2", "y1", "y2", "LIMIT", "10"],
        &["zintercard", "2", "y1", "s1"],
        &["zintercard", "1", "y1"],
        &["zintercard", "2", "y1", "none"],
        &["zintercard", "2", "y1", "y2", "limit", "-1"],
        &["zintercard", "2", "y1", "y2", "limit", "x"],
        &["zintercard", "2", "y1", "y2", "limit"],
        &["zintercard", "2", "y1", "y2", "foo", "1"],
        &["zintercard", "0", "y1"],
        &["zintercard", "-1", "y1"],
        &["zintercard", "x", "y1"],
        &["zintercard", "3", "y1", "y2"],
        &["zintercard", "2", "y1", "str"],
        &["zintercard", "2", "str", "none"],
        // LCS
        &["mset", "ka", "ohmytext", "kb", "mynewtext"],
        &["lcs", "ka", "kb"],
        &["lcs", "ka", "kb", "len"],
        &["lcs", "ka", "kb", "idx"],
        &["lcs", "ka", "kb", "idx", "minmatchlen", "4"],
        &["lcs", "ka", "kb", "idx", "minmatchlen", "4", "withmatchlen"],
        &["lcs", "ka", "kb", "idx", "withmatchlen"],
        &["lcs", "ka", "kb", "idx", "minmatchlen", "-5"],
        &["lcs", "ka", "kb", "len", "idx"],
        &["lcs", "ka", "kb", "minmatchlen"],
        &["lcs", "ka", "kb", "minmatchlen", "x"],
        &["lcs", "ka", "kb", "foo"],
        &["lcs", "ka", "none"],
        &["lcs", "none", "none2", "idx"],
        &["lcs", "none", "none2", "len"],
        &["lcs", "ka", "z2"],
        &["lcs", "ka"],
        &["mset", "r1", "abcabcabcxyz", "r2", "xyzabcabc"],
        &["lcs", "r1", "r2", "idx", "withmatchlen"],
        &["lcs", "r2", "r1", "idx", "withmatchlen"],
        &["lcs", "r1", "r1", "idx", "withmatchlen"],
    ]);
    // RESP3: IDX is a map there.
    // The HELLO replies differ in the client id only.
    p.both(&["hello", "3"]);
    p.same(&[
        &["lcs", "ka", "kb", "idx", "withmatchlen"],
        &["zmpop", "1", "y1", "min", "count", "2"],
        &["zmpop", "1", "none", "min"],
        &["bzmpop", "0.01", "1", "none", "min"],
    ]);
    eprintln!("compared {} commands", p.compared);
}

/// Sends a command without reading its reply.
fn send(s: &mut TcpStream, args: &[&str]) {
    use std::io::Write;
    s.write_all(&slotway::resp::command_bytes(args)).unwrap();
}

fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(Some(n)) = slotway::resp::scan::frame_len(&out) {
            assert_eq!(n, out.len());
            return out;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed");
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn bzmpop_blocks_and_wakes_like_redis() {
    let (node, _dir, real) = standalone();
    let mut replies = Vec::new();
    for port in [node.port, real.port] {
        let mut blocked = TcpStream::connect(("127.0.0.1", port)).unwrap();
        blocked
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut other = TcpStream::connect(("127.0.0.1", port)).unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        send(
            &mut blocked,
            &["bzmpop", "0", "2", "b1", "b2", "max", "count", "2"],
        );
        std::thread::sleep(Duration::from_millis(200));
        got.push(exchange(
            &mut other,
            &["zadd", "b2", "1", "a", "2", "b", "3", "c"],
        ));
        got.push(read_reply(&mut blocked));
        got.push(exchange(
            &mut other,
            &["zrange", "b2", "0", "-1", "withscores"],
        ));
        // Nothing arrives: the timeout answers a nil array.
        send(&mut blocked, &["bzmpop", "0.3", "1", "b3", "min"]);
        std::thread::sleep(Duration::from_millis(50));
        got.push(read_reply(&mut blocked));
        got.push(exchange(&mut blocked, &["ping"]));
        replies.push(got);
    }
    let show = |v: &Vec<Vec<u8>>| {
        v.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&replies[0]), show(&replies[1]));
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn move_swapdb_failover_lolwut_match_cluster_mode_redis() {
    let (_node, _dir, _real, mut p) = cluster_pair();
    p.same(&[
        &["set", "k", "v"],
        &["move", "k", "1"],
        &["move", "k", "0"],
        &["move", "k", "x"],
        &["swapdb", "0", "1"],
        &["swapdb", "x", "y"],
        &["failover"],
        &["failover", "abort"],
        &["failover", "timeout", "-1"],
        &["failover", "to", "127.0.0.1", "1", "force"],
        &["move", "k"],
        &["swapdb", "0"],
        &["lolwut", "version", "x"],
    ]);
    let (a, b) = p.both(&["lolwut", "version", "7"]);
    assert_eq!(a, b);
    p.compared += 1;
    eprintln!("compared {} commands", p.compared);
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn move_swapdb_failover_errors_match_standalone_redis_for_db0() {
    let (node, _dir, real) = standalone();
    let mut p = Pair::new(node.port, real.port);
    p.same(&[
        &["set", "k", "v"],
        &["move", "k", "0"],
        &["move", "k", "16"],
        &["move", "k", "-1"],
        &["move", "k", "x"],
        &["swapdb", "x", "0"],
        &["swapdb", "0", "x"],
        &["swapdb", "0", "0"],
        &["failover", "abort"],
        &["failover", "timeout", "0"],
        &["failover", "timeout", "-1"],
        &["failover", "timeout", "x"],
        &["failover", "force"],
        &["failover", "bogus"],
        &["failover", "to", "h", "x"],
    ]);
    eprintln!("compared {} commands", p.compared);
}
