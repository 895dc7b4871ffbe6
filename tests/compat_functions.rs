//! Redis 7 Functions against a real redis-server 7.0: the same raw
//! commands to both, replies compared byte for byte; FUNCTION DUMP
//! payloads restored both ways; libraries surviving a restart of our node
//! and reaching its replica. Ignored in a plain `cargo test` (they need
//! `redis-server`); `.ci/run` runs them with `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{wait_until, Node, RealRedis};
use std::time::Duration;

/// Sends one command and reads exactly one reply.
fn exchange(s: &mut std::net::TcpStream, args: &[&str]) -> Vec<u8> {
    exchange_bytes(s, &args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
}

fn exchange_bytes(s: &mut std::net::TcpStream, args: &[&[u8]]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut wire = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        wire.extend_from_slice(a);
        wire.extend_from_slice(b"\r\n");
    }
    s.write_all(&wire).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Ok(Some(n)) = slotway::resp::scan::frame_len(&out) {
            assert_eq!(n, out.len(), "one reply per request: {args:?}");
            return out;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed");
        out.extend_from_slice(&buf[..n]);
    }
}

fn connect(port: u16) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The payload of a bulk-string reply.
fn bulk_body(reply: &[u8]) -> Vec<u8> {
    let text_end = reply.iter().position(|&c| c == b'\n').unwrap();
    assert_eq!(reply[0], b'$', "{}", String::from_utf8_lossy(reply));
    reply[text_end + 1..reply.len() - 2].to_vec()
}

/// A library with one write function `set1`, one read-only `get1` and a
/// function per error path, one function per name so that no reply
/// depends on the order of Redis's dict.
const MAIN: &str = "#!lua name=mainlib
redis.register_function('set1', function(keys, args) return redis.call('set', keys[1], args[1]) end)
redis.register_function{function_name='get1', callback=function(keys, args) return redis.call('get', keys[1]) end, flags={'no-writes'}, description='reads one key'}
redis.register_function{function_name='sneaky', callback=function(keys, args) return redis.call('set', keys[1], 'x') end, flags={'no-writes'}}
redis.register_function('boom', function(keys, args) error('boom') end)
redis.register_function('badcmd', function(keys, args) return redis.call('nosuch') end)
redis.register_function('pc', function(keys, args) return redis.pcall('incr', keys[1]) end)
redis.register_function('tbl', function(keys, args) return {1, 'two', {3, false}, 4.5} end)
redis.register_function('st', function(keys, args) return redis.status_reply('FINE') end)
redis.register_function('er', function(keys, args) return redis.error_reply('MY error') end)
redis.register_function('ver', function(keys, args) return redis.REDIS_VERSION .. ' ' .. redis.REDIS_VERSION_NUM end)
redis.register_function('glob', function(keys, args) return undefined_thing end)
redis.register_function('nkeys', function(keys, args) return {#keys, #args} end)
redis.register_function{function_name='raised', callback=function() error({err='MYCODE raised'}) end}
";

/// One library with one function: its FUNCTION LIST entry is fully
/// determined.
const SMALL: &str = "#!lua name=small\nredis.register_function{function_name='hello', callback=function(k, a) return 'hi ' .. (a[1] or '') end, flags={'no-writes', 'allow-stale'}, description='greets'}\n";
const SMALL_V2: &str =
    "#!lua name=small\nredis.register_function('hello', function(k, a) return 'v2' end)\n";
const CLASH: &str = "#!lua name=clash\nredis.register_function('hello', function() return 1 end)\n";

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn functions_match_redis_byte_for_byte() {
    let node = Node::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let real = RealRedis::start(dir.path(), &["--appendonly", "no"]);
    let script: &[&[&str]] = &[
        // Arity and subcommands.
        &["function"],
        &["function", "nosuch"],
        &["function", "load"],
        &["function", "delete"],
        &["function", "delete", "a", "b"],
        &["function", "dump", "x"],
        &["function", "stats", "x"],
        &["function", "kill", "x"],
        &["function", "help", "x"],
        &["function", "flush", "a", "b"],
        &["function", "restore"],
        &["function", "restore", "a", "b", "c"],
        &["function", "help"],
        &["function", "kill"],
        &["function", "list"],
        &["function", "stats"],
        &["function", "dump"],
        // LOAD: options and the shebang.
        &["function", "load", "replace"],
        &["function", "load", "foo", "bar"],
        &["function", "load", "return 1"],
        &["function", "load", "#!lua name=x"],
        &["function", "load", "#!lua\nreturn 1"],
        &["function", "load", "#!lua name=a name=b\nreturn 1"],
        &["function", "load", "#!lua foo=bar\nreturn 1"],
        &["function", "load", "#!lua name=a-b\nreturn 1"],
        &["function", "load", "#!lua name=\nreturn 1"],
        &["function", "load", "#!lua \"name=x\nreturn 1"],
        &["function", "load", "#!js name=x\nreturn 1"],
        &["function", "load", "#!lua name=x\nreturn 1"],
        // LOAD: the load-time scope and register_function's rules.
        &["function", "load", "#!lua name=x\nredis.call('set','a','b')"],
        &["function", "load", "#!lua name=x\nlocal n = string.len('a')"],
        &["function", "load", "#!lua name=x\nerror('no')"],
        &["function", "load", "#!lua name=x\nx = 1"],
        &["function", "load", "#!lua name=x\nlocal function f( "],
        &["function", "load", "#!lua name=x\nredis.register_function()"],
        &["function", "load", "#!lua name=x\nredis.register_function(1)"],
        &["function", "load", "#!lua name=x\nredis.register_function(1, 2)"],
        &["function", "load", "#!lua name=x\nredis.register_function({}, 2)"],
        &["function", "load", "#!lua name=x\nredis.register_function('a', 'b', 'c')"],
        &["function", "load", "#!lua name=x\nredis.register_function('a-b', function() end)"],
        &["function", "load", "#!lua name=x\nredis.register_function('', function() end)"],
        &["function", "load", "#!lua name=x\nredis.register_function('f', function() end)\nredis.register_function('f', function() end)"],
        &["function", "load", "#!lua name=x\nredis.register_function{function_name='f'}"],
        &["function", "load", "#!lua name=x\nredis.register_function{callback=function() end}"],
        &["function", "load", "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, flags={'bad'}}"],
        &["function", "load", "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, flags='no-writes'}"],
        &["function", "load", "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, other=1}"],
        &["function", "load", "#!lua name=x\nredis.register_function{function_name='f', callback=1}"],
        &["function", "load", "#!lua name=x\nredis.register_function{function_name={}, callback=function() end}"],
        &["function", "load", "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, description={}}"],
        &["function", "list"],
        // A real library, then its calls.
        &["function", "load", MAIN],
        &["function", "load", MAIN],
        &["function", "load", "REPLACE", MAIN],
        &["fcall", "set1", "1", "k", "v"],
        &["get", "k"],
        &["fcall", "get1", "1", "k"],
        &["fcall_ro", "get1", "1", "k"],
        &["fcall_ro", "set1", "1", "k", "v2"],
        &["fcall", "sneaky", "1", "k"],
        &["fcall_ro", "sneaky", "1", "k"],
        &["get", "k"],
        &["fcall", "boom", "0"],
        &["fcall", "badcmd", "0"],
        &["fcall", "pc", "1", "k"],
        &["fcall", "tbl", "0"],
        &["fcall", "st", "0"],
        &["fcall", "er", "0"],
        &["fcall", "ver", "0"],
        &["fcall", "glob", "0"],
        &["fcall", "nkeys", "2", "a", "b", "c"],
        &["fcall", "nkeys", "0"],
        &["fcall", "raised", "0"],
        &["fcall", "nosuch", "0"],
        &["fcall", "set1", "x"],
        &["fcall", "set1", "-1"],
        &["fcall", "set1", "3", "a"],
        &["fcall", "SET1", "0"],
        &["fcall"],
        &["fcall_ro", "get1"],
        // LIST / STATS / DELETE / FLUSH around a second library.
        &["function", "load", SMALL],
        &["function", "list", "libraryname", "small"],
        &["function", "list", "LIBRARYNAME", "sm*", "WITHCODE"],
        &["function", "list", "withcode", "libraryname", "nomatch*"],
        &["function", "list", "libraryname"],
        &["function", "list", "withcode", "withcode"],
        &["function", "list", "foo"],
        &["function", "stats"],
        &["fcall_ro", "hello", "0", "you"],
        &["function", "load", CLASH],
        &["function", "load", "replace", SMALL_V2],
        &["fcall", "hello", "0"],
        &["function", "list", "libraryname", "small"],
        &["function", "delete", "nosuch"],
        &["function", "delete", "small"],
        &["fcall", "hello", "0"],
        &["function", "load", CLASH],
        &["fcall", "hello", "0"],
        &["function", "stats"],
        &["function", "flush", "foo"],
        &["function", "flush", "async"],
        &["function", "list"],
        &["fcall", "set1", "1", "k", "v"],
        &["function", "load", SMALL],
        &["function", "flush", "SYNC"],
        &["function", "flush"],
        &["function", "stats"],
        // RESTORE's argument checks (payloads are checked below).
        &["function", "restore", "xxx"],
        &["function", "restore", "abc", "foo"],
        &["function", "restore", "0123456789ab"],
    ];
    let mut ours = connect(node.port);
    let mut theirs = connect(real.port);
    for args in script {
        let a = exchange(&mut ours, args);
        let b = exchange(&mut theirs, args);
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "reply to {args:?}"
        );
    }
    let compared = script.len();

    // DUMP / RESTORE both ways: each side restores the other's payload
    // and then lists the same libraries with the same code. (Redis
    // LZF-compresses long library strings and we write them plain, so the
    // payloads themselves differ in bytes.)
    let restore_checks: &[&[&str]] = &[
        &["function", "list", "libraryname", "small", "withcode"],
        &["fcall_ro", "hello", "0", "there"],
        &["function", "stats"],
    ];
    let mut n = 0;
    for (from, to) in [(0, 1), (1, 0)] {
        let mut conns = [connect(node.port), connect(real.port)];
        for c in conns.iter_mut() {
            exchange(c, &["function", "flush"]);
            exchange(c, &["function", "load", SMALL]);
        }
        let payload = bulk_body(&exchange(&mut conns[from], &["function", "dump"]));
        for c in conns.iter_mut() {
            // Both refuse an APPEND that collides, both accept REPLACE.
            let dup = exchange_bytes(c, &[b"function", b"restore", &payload]);
            assert!(
                dup.starts_with(b"-ERR Library small already exists"),
                "{}",
                String::from_utf8_lossy(&dup)
            );
            exchange(c, &["function", "flush"]);
        }
        let ok = exchange_bytes(&mut conns[to], &[b"function", b"restore", &payload]);
        assert_eq!(ok, b"+OK\r\n");
        exchange(&mut conns[from], &["function", "restore", "x", "flush"]);
        let from_again = exchange_bytes(
            &mut conns[from],
            &[b"function", b"restore", &payload, b"FLUSH"],
        );
        assert_eq!(from_again, b"+OK\r\n");
        for args in restore_checks {
            let [a, b] = &mut conns;
            assert_eq!(
                String::from_utf8_lossy(&exchange(a, args)),
                String::from_utf8_lossy(&exchange(b, args)),
                "after restoring a payload of side {from}: {args:?}"
            );
            n += 1;
        }
        // A payload with a flipped byte is refused alike.
        let mut bad = payload.clone();
        bad[3] ^= 0xff;
        let [a, b] = &mut conns;
        assert_eq!(
            exchange_bytes(a, &[b"function", b"restore", &bad]),
            exchange_bytes(b, &[b"function", b"restore", &bad]),
        );
        n += 1;
    }
    eprintln!("compared {} replies", compared + n);
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn functions_persist_in_our_rdb_and_load_in_redis_server() {
    let node = Node::start(&[]);
    let mut c = connect(node.port);
    assert_eq!(
        exchange(&mut c, &["function", "load", SMALL]),
        b"$5\r\nsmall\r\n"
    );
    assert_eq!(exchange(&mut c, &["set", "k", "v"]), b"+OK\r\n");
    assert_eq!(exchange(&mut c, &["save"]), b"+OK\r\n");
    drop(c);
    let dir = node.into_dir();
    let rdb = dir.path().join("dump.rdb");
    // Our file loads in redis-server with the library in it...
    let real_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&rdb, real_dir.path().join("dump.rdb")).unwrap();
    let real = RealRedis::start(real_dir.path(), &["--appendonly", "no"]);
    let mut r = connect(real.port);
    assert_eq!(
        exchange(&mut r, &["fcall", "hello", "0", "x"]),
        b"$4\r\nhi x\r\n"
    );
    // ...and after a restart of our node, the library is still there.
    let node = Node::start_in(dir, &[]);
    let mut c = connect(node.port);
    let list = ["function", "list", "withcode"];
    assert_eq!(
        String::from_utf8_lossy(&exchange(&mut c, &list)),
        String::from_utf8_lossy(&exchange(&mut r, &list)),
    );
    assert_eq!(
        exchange(&mut c, &["fcall", "hello", "0", "x"]),
        b"$4\r\nhi x\r\n"
    );
    // And redis-server's own RDB, with a library of its own, loads in ours.
    exchange(&mut r, &["function", "load", MAIN]);
    assert_eq!(exchange(&mut r, &["save"]), b"+OK\r\n");
    drop(c);
    let ours_dir = node.into_dir();
    std::fs::copy(
        real_dir.path().join("dump.rdb"),
        ours_dir.path().join("dump.rdb"),
    )
    .unwrap();
    let node = Node::start_in(ours_dir, &[]);
    let mut c = connect(node.port);
    assert_eq!(
        exchange(&mut c, &["fcall", "get1", "1", "k"]),
        b"$1\r\nv\r\n"
    );
    let stats = ["function", "stats"];
    assert_eq!(
        String::from_utf8_lossy(&exchange(&mut c, &stats)),
        String::from_utf8_lossy(&exchange(&mut r, &stats)),
    );
}

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn function_changes_reach_a_replica_and_the_aof() {
    let master = Node::start(&["--appendonly", "yes"]);
    let replica = Node::start(&[]);
    let mut m = connect(master.port);
    let mut r = connect(replica.port);
    exchange(&mut m, &["function", "load", SMALL]);
    let port = master.port.to_string();
    assert_eq!(
        exchange(&mut r, &["replicaof", "127.0.0.1", &port]),
        b"+OK\r\n"
    );
    // The full sync carries the library...
    wait_until(
        "the replica to get the library",
        Duration::from_secs(20),
        || exchange(&mut r, &["fcall_ro", "hello", "0", "r"]) == b"$4\r\nhi r\r\n",
    );
    // ...and later changes stream to it; writes to it are refused.
    exchange(&mut m, &["function", "load", MAIN]);
    exchange(&mut m, &["fcall", "set1", "1", "k", "from-fcall"]);
    wait_until(
        "the replica to get FCALL's effect",
        Duration::from_secs(20),
        || exchange(&mut r, &["get", "k"]) == b"$10\r\nfrom-fcall\r\n",
    );
    assert_eq!(
        exchange(&mut r, &["fcall_ro", "get1", "1", "k"]),
        b"$10\r\nfrom-fcall\r\n"
    );
    assert_eq!(
        exchange(&mut r, &["fcall", "set1", "1", "k", "v"]),
        b"-READONLY Can not run script with write flag on readonly replica\r\n"
    );
    assert_eq!(
        exchange(&mut r, &["function", "flush"]),
        b"-READONLY You can't write against a read only replica.\r\n"
    );
    exchange(&mut m, &["function", "delete", "small"]);
    wait_until(
        "the replica to drop the library",
        Duration::from_secs(20),
        || exchange(&mut r, &["fcall_ro", "hello", "0"]) == b"-ERR Function not found\r\n",
    );
    // The master's AOF replays the same libraries after a restart.
    drop(m);
    let dir = master.into_dir();
    let master = Node::start_in(dir, &["--appendonly", "yes"]);
    let mut m = connect(master.port);
    assert_eq!(
        exchange(&mut m, &["fcall_ro", "hello", "0"]),
        b"-ERR Function not found\r\n"
    );
    assert_eq!(
        exchange(&mut m, &["fcall_ro", "get1", "1", "k"]),
        b"$10\r\nfrom-fcall\r\n"
    );
    // Also after BGREWRITEAOF (the libraries go into the RDB base).
    assert!(exchange(&mut m, &["bgrewriteaof"]).starts_with(b"+"));
    std::thread::sleep(Duration::from_secs(2));
    drop(m);
    let dir = master.into_dir();
    let master = Node::start_in(dir, &["--appendonly", "yes"]);
    let mut m = connect(master.port);
    assert_eq!(
        exchange(&mut m, &["fcall_ro", "get1", "1", "k"]),
        b"$10\r\nfrom-fcall\r\n"
    );
}
