//! Replication between real node processes: full sync then the command
//! stream (every type, TTLs, scripts, transactions, expiry), partial
//! resync after a short disconnect, full resync after a long one, WAIT,
//! promotion and PSYNC continuation, graceful shutdown, masterauth,
//! cluster-mode CLUSTER REPLICATE; and both directions against a real
//! redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{field, info_field, wait_until, Node, RealRedis};
use redis::Commands;
use std::time::Duration;

fn info(c: &mut redis::Connection, section: &str) -> String {
    redis::cmd("INFO").arg(section).query(c).unwrap()
}

fn replicaof(c: &mut redis::Connection, port: u16) {
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .query(c)
        .unwrap();
}

/// Waits until `replica` has applied everything `master` produced.
fn wait_synced(master: &mut redis::Connection, replica: &mut redis::Connection) {
    wait_until("replica to catch up", Duration::from_secs(20), || {
        let r = info(replica, "replication");
        let m = info_field(master, "replication", "master_repl_offset");
        field(&r, "master_link_status") == "up" && field(&r, "slave_repl_offset") == m
    });
}

fn dbsize(c: &mut redis::Connection) -> usize {
    redis::cmd("DBSIZE").query(c).unwrap()
}

#[test]
fn full_sync_then_the_stream_carries_every_kind_of_write() {
    let master = Node::start(&[]);
    let mut m = master.client();
    // Before the replica exists: goes through the snapshot.
    let _: () = m.set("before", "x").unwrap();
    let _: () = redis::cmd("SET")
        .arg("ttl-before")
        .arg("v")
        .arg("EX")
        .arg(500)
        .query(&mut m)
        .unwrap();
    let _: () = m.rpush("list", &["a", "b"]).unwrap();
    let replica = Node::start(&[]);
    let mut r = replica.client();
    replicaof(&mut r, master.port);
    wait_synced(&mut m, &mut r);
    let v: String = r.get("before").unwrap();
    assert_eq!(v, "x");
    let ttl: i64 = r.ttl("ttl-before").unwrap();
    assert!((490..=500).contains(&ttl), "{ttl}");
    // After: the command stream.
    let _: () = redis::cmd("SET")
        .arg("s")
        .arg("v")
        .arg("PX")
        .arg(100_000)
        .query(&mut m)
        .unwrap();
    let _: () = m.hset("h", "f", "1").unwrap();
    let _: f64 = m.hincr("h", "g", 2.5).unwrap();
    let _: f64 = redis::cmd("INCRBYFLOAT")
        .arg("fl")
        .arg("0.1")
        .query(&mut m)
        .unwrap();
    let _: () = m.sadd("set", &["a", "b", "c"]).unwrap();
    let _: Vec<String> = redis::cmd("SPOP").arg("set").arg(2).query(&mut m).unwrap();
    let _: () = m.zadd("z", "m", 1.5).unwrap();
    let _: () = m.rpush("q", &["1", "2"]).unwrap();
    let _: Option<(String, String)> = redis::cmd("BLPOP").arg("q").arg(1).query(&mut m).unwrap();
    let _: () = m.expire("list", 1000).unwrap();
    let _: () = redis::cmd("EVAL")
        .arg("redis.call('set', KEYS[1], 'from-lua', 'EX', 300) return redis.call('incr', 'counter')")
        .arg(1)
        .arg("lua")
        .query(&mut m)
        .unwrap();
    let _: () = redis::pipe()
        .atomic()
        .set("tx1", 1)
        .incr("tx1", 5)
        .query(&mut m)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(150)
        .query(&mut m)
        .unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(acked, 1);
    wait_synced(&mut m, &mut r);
    for k in [
        "s", "h", "fl", "set", "z", "q", "list", "lua", "counter", "tx1",
    ] {
        let want: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut m).unwrap();
        let got: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut r).unwrap();
        if k != "set" && k != "h" {
            assert_eq!(got, want, "{k} differs");
        }
        let want_ttl: i64 = m.pttl(k).unwrap();
        let got_ttl: i64 = r.pttl(k).unwrap();
        assert!(
            (want_ttl - got_ttl).abs() < 1000,
            "{k}: ttl {want_ttl} vs {got_ttl}"
        );
    }
    let ms: Vec<String> = m.smembers("set").unwrap();
    let rs: Vec<String> = r.smembers("set").unwrap();
    assert_eq!(ms, rs, "SPOP must replicate what it took");
    let mh: std::collections::BTreeMap<String, String> = m.hgetall("h").unwrap();
    let rh: std::collections::BTreeMap<String, String> = r.hgetall("h").unwrap();
    assert_eq!(mh, rh);
    // Expiry: the replica hides the key at once, and drops it when the
    // master's DEL arrives.
    wait_until(
        "the replica to hide the expired key",
        Duration::from_secs(5),
        || r.get::<_, Option<String>>("short").unwrap().is_none(),
    );
    wait_until(
        "master's DEL of the expired key",
        Duration::from_secs(10),
        || {
            let n: i64 = redis::cmd("EXISTS").arg("short").query(&mut m).unwrap();
            n == 0 && dbsize(&mut m) == dbsize(&mut r)
        },
    );
    // Read-only for normal clients.
    let e: redis::RedisResult<()> = r.set("nope", 1);
    assert_eq!(e.unwrap_err().code(), Some("READONLY"));
    assert_eq!(info_field(&mut m, "stats", "sync_full"), "1");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut r).unwrap();
    assert_eq!(role[0], redis::Value::BulkString(b"slave".to_vec()));
}

#[test]
fn short_disconnect_continues_long_one_resyncs_fully() {
    let master = Node::start(&[]);
    let replica = Node::start(&[]);
    let (mut m, mut r) = (master.client(), replica.client());
    let _: () = m.set("k0", "v").unwrap();
    replicaof(&mut r, master.port);
    wait_synced(&mut m, &mut r);
    assert_eq!(info_field(&mut m, "stats", "sync_full"), "1");
    // Short: the replica reconnects within a second and continues.
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut r)
        .unwrap();
    assert_eq!(n, 1);
    for i in 1..50 {
        let _: () = m.set(format!("k{i}"), "v").unwrap();
    }
    wait_synced(&mut m, &mut r);
    assert_eq!(info_field(&mut m, "stats", "sync_partial_ok"), "1");
    assert_eq!(info_field(&mut m, "stats", "sync_full"), "1");
    assert_eq!(dbsize(&mut r), 50);
    // Long: more was written than the backlog holds.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-backlog-size")
        .arg("16384")
        .query(&mut m)
        .unwrap();
    // CONFIG SET resizes the backlog at once, as in Redis.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut r)
        .unwrap();
    let big = "x".repeat(1000);
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.set(format!("big{i}"), &big).ignore();
    }
    let _: () = pipe.query(&mut m).unwrap();
    wait_synced(&mut m, &mut r);
    assert_eq!(info_field(&mut m, "stats", "sync_full"), "2");
    assert_eq!(dbsize(&mut r), 250);
}

#[test]
fn wait_returns_the_number_of_acknowledging_replicas() {
    let master = Node::start(&[]);
    let mut m = master.client();
    let _: () = m.set("a", 1).unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(100).query(&mut m).unwrap();
    assert_eq!(n, 0, "no replicas");
    let r1 = Node::start(&[]);
    let r2 = Node::start(&[]);
    replicaof(&mut r1.client(), master.port);
    replicaof(&mut r2.client(), master.port);
    wait_synced(&mut m, &mut r1.client());
    wait_synced(&mut m, &mut r2.client());
    for i in 0..20 {
        let _: () = m.set(format!("w{i}"), i).unwrap();
        let n: i64 = redis::cmd("WAIT").arg(2).arg(0).query(&mut m).unwrap();
        assert_eq!(n, 2);
    }
    let t = std::time::Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(3).arg(300).query(&mut m).unwrap();
    assert_eq!(n, 2);
    assert!(t.elapsed() >= Duration::from_millis(250));
    // WAIT blocks only its own client.
    let mut other = master.client();
    let _: () = other.set("free", 1).unwrap();
    let e: redis::RedisResult<i64> = redis::cmd("WAIT").arg(1).arg(10).query(&mut r1.client());
    assert!(e.is_err());
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_master() {
    let mut master = Node::start(&[]);
    let replica = Node::start(&[]);
    let (mut m, mut r) = (master.client(), replica.client());
    replicaof(&mut r, master.port);
    wait_synced(&mut m, &mut r);
    // A writer that WAITs for one replica after each write; its acked keys.
    let port = master.port;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = progress.clone();
    let writer = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let mut acked = Vec::new();
        for i in 0..5000 {
            if c.set::<_, _, ()>(format!("w{i}"), i).is_err() {
                break;
            }
            match redis::cmd("WAIT").arg(1).arg(0).query::<i64>(&mut c) {
                Ok(1) => acked.push(i),
                _ => break,
            }
            seen.store(acked.len(), std::sync::atomic::Ordering::Relaxed);
        }
        acked
    });
    // Kill the master mid-stream, once some writes were acknowledged.
    wait_until("50 acknowledged writes", Duration::from_secs(20), || {
        progress.load(std::sync::atomic::Ordering::Relaxed) >= 50
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());
    assert!(master.wait_exit(Duration::from_secs(5)));
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r)
        .unwrap();
    for i in &acked {
        let v: Option<i64> = r.get(format!("w{i}")).unwrap();
        assert_eq!(v, Some(*i), "acknowledged write w{i} lost");
    }
    // Promoted: it takes writes now.
    let _: () = r.set("after", 1).unwrap();
}

#[test]
fn promotion_lets_siblings_and_the_old_master_continue_partially() {
    let mut master = Node::start(&[]);
    let r1 = Node::start(&[]);
    let r2 = Node::start(&[]);
    let mut m = master.client();
    for i in 0..100 {
        let _: () = m.set(format!("k{i}"), i).unwrap();
    }
    for r in [&r1, &r2] {
        replicaof(&mut r.client(), master.port);
        wait_synced(&mut m, &mut r.client());
    }
    let _: () = m.set("last", 1).unwrap();
    wait_synced(&mut m, &mut r1.client());
    wait_synced(&mut m, &mut r2.client());
    // Graceful stop of the master: it waits for its replicas, then saves
    // its position with the data.
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("SAVE").query(&mut m);
    assert!(master.wait_exit(Duration::from_secs(20)));
    let mut c1 = r1.client();
    let old_id = info_field(&mut c1, "replication", "master_replid");
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c1)
        .unwrap();
    assert_eq!(info_field(&mut c1, "replication", "master_replid2"), old_id);
    let _: () = c1.set("after-promotion", 1).unwrap();
    // The sibling follows the promoted replica without a full sync.
    replicaof(&mut r2.client(), r1.port);
    wait_synced(&mut c1, &mut r2.client());
    assert_eq!(info_field(&mut c1, "stats", "sync_partial_ok"), "1");
    assert_eq!(info_field(&mut c1, "stats", "sync_full"), "0");
    // The old master comes back from its snapshot and continues too.
    let old = Node::start_in(master.into_dir(), &[]);
    let mut o = old.client();
    assert_eq!(info_field(&mut o, "replication", "master_replid"), old_id);
    replicaof(&mut o, r1.port);
    wait_synced(&mut c1, &mut o);
    assert_eq!(info_field(&mut c1, "stats", "sync_partial_ok"), "2");
    let v: i64 = o.get("after-promotion").unwrap();
    assert_eq!(v, 1);
    assert_eq!(dbsize(&mut o), 102);
}

#[test]
fn shutdown_of_a_master_waits_until_its_replicas_have_everything() {
    let mut master = Node::start(&[]);
    let replica = Node::start(&[]);
    let (mut m, mut r) = (master.client(), replica.client());
    replicaof(&mut r, master.port);
    wait_synced(&mut m, &mut r);
    // Writes and SHUTDOWN in one go: nothing reaches the replica after the
    // reply unless the master waits for it.
    let value = "v".repeat(4096);
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.set(format!("k{i}"), &value).ignore();
    }
    pipe.cmd("SHUTDOWN").arg("NOSAVE");
    let _: redis::RedisResult<()> = pipe.query(&mut m);
    assert!(master.wait_exit(Duration::from_secs(20)));
    assert_eq!(dbsize(&mut r), 3000);
}

#[test]
fn masterauth_against_a_master_with_requirepass() {
    let master = Node::start(&["--requirepass", "s3cret"]);
    let mut m = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", master.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = m.set("k", "v").unwrap();
    let wrong = Node::start(&["--masterauth", "nope"]);
    replicaof(&mut wrong.client(), master.port);
    let good = Node::start(&["--masterauth", "s3cret"]);
    replicaof(&mut good.client(), master.port);
    wait_synced(&mut m, &mut good.client());
    let v: String = good.client().get("k").unwrap();
    assert_eq!(v, "v");
    let mut w = wrong.client();
    assert_eq!(
        info_field(&mut w, "replication", "master_link_status"),
        "down"
    );
    assert_eq!(dbsize(&mut w), 0);
}

#[test]
fn replicaof_is_refused_in_cluster_mode_and_cluster_replicate_makes_data_flow() {
    let a = Node::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
    let b = Node::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]);
    let (mut ca, mut cb) = (a.client(), b.client());
    let e: redis::RedisResult<()> = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(a.port)
        .query(&mut cb);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("not allowed in cluster mode"));
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query(&mut ca)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("MEET")
        .arg("127.0.0.1")
        .arg(b.port)
        .query(&mut ca)
        .unwrap();
    let a_id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut ca).unwrap();
    wait_until("b to know a", Duration::from_secs(20), || {
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut cb).unwrap();
        nodes.contains(&a_id) && !nodes.contains("handshake")
    });
    let _: () = redis::cmd("CLUSTER")
        .arg("REPLICATE")
        .arg(&a_id)
        .query(&mut cb)
        .unwrap();
    // As in Redis, a master takes writes once its startup delay is over.
    wait_until("cluster_state:ok", Duration::from_secs(20), || {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut ca).unwrap();
        info.contains("cluster_state:ok")
    });
    let _: () = ca.set("k", "v").unwrap();
    wait_synced(&mut ca, &mut cb);
    // Reads on the replica after READONLY; MOVED before.
    let moved: redis::RedisResult<String> = cb.get("k");
    assert_eq!(moved.unwrap_err().code(), Some("MOVED"));
    let _: () = redis::cmd("READONLY").query(&mut cb).unwrap();
    let v: String = cb.get("k").unwrap();
    assert_eq!(v, "v");
    assert_eq!(info_field(&mut cb, "replication", "role"), "slave");
}

// ---- against a real redis-server ------------------------------------------

#[test]
#[ignore = "needs redis-tools; CI runs it with --ignored"]
fn a_real_redis_server_replicates_from_us() {
    let master = Node::start(&[]);
    let mut m = master.client();
    let _: () = m.rpush("list", &["a", "b"]).unwrap();
    let _: () = m.hset("h", "f", "v").unwrap();
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut m)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = master.port.to_string();
    let redis = RealRedis::start(dir.path(), &["--replicaof", "127.0.0.1", &port]);
    let mut r = redis.client();
    wait_synced(&mut m, &mut r);
    let _: () = m.zadd("z", "m", 2.5).unwrap();
    let _: f64 = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("1.25")
        .query(&mut m)
        .unwrap();
    let _: () = redis::cmd("EVAL")
        .arg("redis.call('sadd', 's', 'x', 'y')")
        .arg(0)
        .query(&mut m)
        .unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(n, 1);
    let l: Vec<String> = r.lrange("list", 0, -1).unwrap();
    assert_eq!(l, ["a", "b"]);
    let f: String = r.get("f").unwrap();
    assert_eq!(f, "1.25");
    let s: usize = r.scard("s").unwrap();
    assert_eq!(s, 2);
    let z: f64 = r.zscore("z", "m").unwrap();
    assert_eq!(z, 2.5);
    let ttl: i64 = r.ttl("ttl").unwrap();
    assert!(ttl > 90);
    assert_eq!(info_field(&mut m, "replication", "connected_slaves"), "1");
}

#[test]
#[ignore = "needs redis-tools; CI runs it with --ignored"]
fn we_replicate_from_a_real_redis_server() {
    let dir = tempfile::tempdir().unwrap();
    // Diskless sync without delay: the EOF-marked payload.
    let redis = RealRedis::start(dir.path(), &["--repl-diskless-sync-delay", "0"]);
    let mut m = redis.client();
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.sadd("bigset", format!("m{i}")).ignore();
        pipe.hset("h", format!("f{i}"), i).ignore();
    }
    pipe.rpush("l", &["a", "b", "c"]).ignore();
    pipe.sadd("ints", &[1, 2, 3]).ignore();
    pipe.zadd("z", "a", 1).ignore();
    pipe.set("s", "x".repeat(200)).ignore();
    let _: () = pipe.query(&mut m).unwrap();
    // A key in another database: a node has only db 0, it must not land there.
    let mut db1 = redis::Client::open(format!("redis://127.0.0.1:{}/1", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = db1.set("elsewhere", 1).unwrap();
    let node = Node::start(&[]);
    let mut r = node.client();
    replicaof(&mut r, redis.port);
    wait_synced(&mut m, &mut r);
    assert_eq!(dbsize(&mut r), 6);
    let _: () = m.set("live", "1").unwrap();
    let _: () = redis::cmd("SET")
        .arg("px")
        .arg("v")
        .arg("PX")
        .arg(100_000)
        .query(&mut m)
        .unwrap();
    let _: () = m.lpush("l", "z").unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(n, 1, "our REPLCONF ACKs count for redis-server's WAIT");
    wait_synced(&mut m, &mut r);
    let l: Vec<String> = r.lrange("l", 0, -1).unwrap();
    assert_eq!(l, ["z", "a", "b", "c"]);
    let h: usize = r.hlen("h").unwrap();
    assert_eq!(h, 300);
    let t: i64 = r.pttl("px").unwrap();
    assert!(t > 90_000);
    let other: i64 = redis::cmd("EXISTS")
        .arg("elsewhere")
        .arg("elsewhere-live")
        .query(&mut r)
        .unwrap();
    assert_eq!(other, 0);
    // A partial resync from the real master after a short disconnect.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut r)
        .unwrap();
    let _: () = m.set("during", "1").unwrap();
    wait_synced(&mut m, &mut r);
    assert_eq!(info_field(&mut m, "stats", "sync_partial_ok"), "1");
    let v: String = r.get("during").unwrap();
    assert_eq!(v, "1");
}

#[test]
fn client_pause_write_holds_writes_not_reads_and_unpause_releases_them() {
    let master = Node::start(&[]);
    let replica = Node::start(&[]);
    let (mut m, mut r) = (master.client(), replica.client());
    replicaof(&mut r, master.port);
    wait_synced(&mut m, &mut r);
    let _: () = redis::cmd("SET")
        .arg("exp")
        .arg("v")
        .arg("PX")
        .arg(50)
        .query(&mut m)
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut m)
        .unwrap();
    let offset = info_field(&mut m, "replication", "master_repl_offset");
    let port = master.port;
    let writer = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = c.set("held", 1).unwrap();
        std::time::Instant::now()
    });
    // The held write counts as a blocked client (flag b), as in Redis.
    wait_until("the write to be held", Duration::from_secs(10), || {
        info_field(&mut m, "clients", "blocked_clients") == "1"
    });
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut m).unwrap();
    assert!(list.contains(" flags=b "), "{list}");
    // Reads go on; the expired key reads as gone but no DEL enters the
    // stream while paused, so the offset stays put for a failover.
    let mut other = master.client();
    wait_until("exp to read as gone", Duration::from_secs(5), || {
        other.get::<_, Option<String>>("exp").unwrap().is_none()
    });
    let held: Option<i64> = other.get("held").unwrap();
    assert!(held.is_none(), "the write must wait");
    assert_eq!(
        info_field(&mut other, "replication", "master_repl_offset"),
        offset
    );
    let unpaused_at = std::time::Instant::now();
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut other)
        .unwrap();
    let written_at = writer.join().unwrap();
    assert!(
        written_at >= unpaused_at,
        "the write went through before UNPAUSE"
    );
    let held: i64 = other.get("held").unwrap();
    assert_eq!(held, 1);
    let e: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10)
        .arg("SOME")
        .query(&mut other);
    assert!(e.is_err());
}

#[test]
fn a_master_frees_its_backlog_after_repl_backlog_ttl_without_replicas() {
    let master = Node::start(&["--repl-backlog-ttl", "1"]);
    let replica = Node::start(&[]);
    let (mut m, mut r) = (master.client(), replica.client());
    replicaof(&mut r, master.port);
    wait_synced(&mut m, &mut r);
    assert_eq!(
        info_field(&mut m, "replication", "repl_backlog_active"),
        "1"
    );
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r)
        .unwrap();
    wait_until("the backlog to be freed", Duration::from_secs(10), || {
        info_field(&mut m, "replication", "repl_backlog_active") == "0"
    });
    // Writes go on, with nothing to feed.
    let _: () = m.set("k", 1).unwrap();
    assert_eq!(
        info_field(&mut m, "replication", "repl_backlog_histlen"),
        "0"
    );
}

/// ZMPOP and a BZMPOP woken by another client's ZADD reach a real
/// redis-server replica as commands it applies to the same data (Redis
/// propagates them as ZPOPMIN/ZPOPMAX of the chosen key).
#[test]
#[ignore = "needs redis-tools; CI runs it with --ignored"]
fn zmpop_and_a_woken_bzmpop_reach_a_real_redis_replica() {
    use std::io::{Read, Write};
    let master = Node::start(&[]);
    let mut m = master.client();
    let dir = tempfile::tempdir().unwrap();
    let port = master.port.to_string();
    let redis = RealRedis::start(dir.path(), &["--replicaof", "127.0.0.1", &port]);
    let mut r = redis.client();
    wait_synced(&mut m, &mut r);
    let _: () = m
        .zadd_multiple("za", &[(1, "a"), (2, "b"), (3, "c")])
        .unwrap();
    let _: redis::Value = redis::cmd("ZMPOP")
        .arg(2)
        .arg("none")
        .arg("za")
        .arg("MAX")
        .arg("COUNT")
        .arg(2)
        .query(&mut m)
        .unwrap();

    let mut blocked = std::net::TcpStream::connect(("127.0.0.1", master.port)).unwrap();
    blocked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    blocked
        .write_all(
            b"*6\r\n$6\r\nBZMPOP\r\n$1\r\n0\r\n$1\r\n2\r\n$2\r\nzb\r\n$2\r\nzc\r\n$3\r\nMIN\r\n",
        )
        .unwrap();
    wait_until("BZMPOP to block", Duration::from_secs(10), || {
        info_field(&mut m, "clients", "blocked_clients") == "1"
    });
    let _: () = m.zadd_multiple("zc", &[(5, "x"), (6, "y")]).unwrap();
    let want = b"*2\r\n$2\r\nzc\r\n*1\r\n*2\r\n$1\r\nx\r\n$1\r\n5\r\n";
    let mut got = vec![0u8; want.len()];
    blocked.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));

    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();
    assert_eq!(n, 1);
    for k in ["za", "zc"] {
        let on_master: Vec<(String, f64)> = m.zrange_withscores(k, 0, -1).unwrap();
        let on_replica: Vec<(String, f64)> = r.zrange_withscores(k, 0, -1).unwrap();
        assert_eq!(on_master, on_replica, "{k}");
    }
    let za: Vec<String> = r.zrange("za", 0, -1).unwrap();
    assert_eq!(za, ["a"]);
    let zc: Vec<String> = r.zrange("zc", 0, -1).unwrap();
    assert_eq!(zc, ["y"]);
}
