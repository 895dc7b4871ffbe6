//! Compatibility with the real Redis tools: redis-cli and redis-benchmark
//! against our node. These need the Debian package `redis-tools`, so they
//! are `#[ignore]`d in a plain `cargo test`; `.ci/run` installs the tools
//! and runs them with `--include-ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Node;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a tool with a hard deadline; returns (success, stdout+stderr).
fn run_tool(bin: &str, args: &[&str], deadline: Duration) -> (bool, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin} (install redis-tools): {e}"));
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            return (status.success(), text);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cluster client that keeps writing and reading back (bounded in count
/// and time) while slots move underneath it, until told to stop.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Load {
    fn start(client: &redis::cluster::ClusterClient, keys: u64) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let client = client.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = client.get_connection().unwrap();
                let (mut ops, mut errors) = (0u64, Vec::new());
                let end = Instant::now() + Duration::from_secs(240);
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && Instant::now() < end
                    && ops < 200_000
                {
                    let k = format!("w{}", ops % keys);
                    if let Err(e) = redis::cmd("SET").arg(&k).arg(ops).query::<()>(&mut c) {
                        errors.push(e.to_string());
                    }
                    match redis::cmd("GET").arg(&k).query::<Option<u64>>(&mut c) {
                        Ok(Some(v)) if v == ops => {}
                        other => errors.push(format!("GET {k} after SET {ops}: {other:?}")),
                    }
                    ops += 1;
                }
                (ops, errors)
            })
        };
        Load { stop, thread }
    }

    /// Stops the client and checks it made progress without a single error.
    fn finish(self, what: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ops, errors) = self.thread.join().unwrap();
        assert!(ops > 100, "the writer made progress ({ops} ops)");
        assert!(
            errors.is_empty(),
            "{} errors during {what}, first: {:?}",
            errors.len(),
            errors.first()
        );
    }
}

#[test]
#[ignore = "needs redis-tools; run by .ci/run with --include-ignored"]
fn redis_cli_talks_to_a_node() {
    let node = Node::start(&[]);
    let p = node.port.to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["-p", p.as_str()];
        all.extend_from_slice(args);
        run_tool("redis-cli", &all, Duration::from_secs(20))
    };
    assert_eq!(cli(&["ping"]).1.trim(), "PONG");
    assert_eq!(cli(&["set", "greeting", "hello"]).1.trim(), "OK");
    assert_eq!(cli(&["get", "greeting"]).1.trim(), "hello");
    let (ok, info) = cli(&["info"]);
    assert!(ok);
    for needle in [
        "# Server",
        "redis_version:",
        "redis_mode:standalone",
        "# Clients",
        "# Memory",
        "# Replication",
        "role:master",
        "# Keyspace",
        "db0:keys=1",
    ] {
        assert!(
            info.contains(needle),
            "redis-cli info lacks {needle}:\n{info}"
        );
    }
    assert_eq!(cli(&["lpush", "l", "a", "b"]).1.trim(), "2");
    assert_eq!(cli(&["lrange", "l", "0", "-1"]).1, "b\na\n");
}

#[test]
#[ignore = "needs redis-tools; run by .ci/run with --include-ignored"]
fn redis_benchmark_pipelined_set_get() {
    let node = Node::start(&[]);
    let p = node.port.to_string();
    let (ok, out) = run_tool(
        "redis-benchmark",
        &[
            "-p", &p, "-t", "set,get", "-P", "16", "-n", "20000", "-r", "1000", "--csv",
        ],
        Duration::from_secs(120),
    );
    assert!(ok, "{out}");
    assert!(out.contains("\"SET\"") && out.contains("\"GET\""), "{out}");
    assert!(!out.contains("ERR"), "{out}");
    // The keys really landed.
    let mut c = node.client();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(n > 0 && n <= 1000, "{n}");
}

#[test]
#[ignore = "needs redis-tools; run by .ci/run with --include-ignored"]
fn redis_cli_cluster_create_and_check_against_slotway_nodes() {
    let nodes: Vec<Node> = (0..6)
        .map(|_| Node::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(Node::addr).collect();
    let mut args: Vec<&str> = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    let (ok, out) = run_tool("redis-cli", &args, Duration::from_secs(120));
    assert!(ok, "{out}");
    assert!(out.contains("[OK] All 16384 slots covered."), "{out}");
    assert!(
        out.contains("Master[0] -> Slots 0 - 5460")
            && out.contains("Master[2] -> Slots 10923 - 16383"),
        "{out}"
    );
    let (ok, out) = run_tool(
        "redis-cli",
        &["--cluster", "check", &addrs[0]],
        Duration::from_secs(60),
    );
    assert!(
        ok && out.contains("[OK] All nodes agree about slots configuration."),
        "{out}"
    );
    // A master takes writes only after its startup delay (as in Redis).
    let p = nodes[0].port.to_string();
    common::wait_until(
        "cluster_state:ok everywhere",
        Duration::from_secs(20),
        || {
            nodes.iter().all(|n| {
                run_tool(
                    "redis-cli",
                    &["-p", &n.port.to_string(), "cluster", "info"],
                    Duration::from_secs(20),
                )
                .1
                .contains("cluster_state:ok")
            })
        },
    );
    // redis-cli -c follows MOVED to whichever master owns each key.
    for key in ["foo", "bar", "baz"] {
        let (_, set) = run_tool(
            "redis-cli",
            &["-c", "-p", &p, "set", key, "v"],
            Duration::from_secs(20),
        );
        assert_eq!(set.trim(), "OK", "{set}");
        let (_, get) = run_tool(
            "redis-cli",
            &["-c", "-p", &p, "get", key],
            Duration::from_secs(20),
        );
        assert_eq!(get.trim(), "v");
    }
    // Roles reach every node through the bus.
    common::wait_until(
        "3 masters and 3 slaves in CLUSTER NODES",
        Duration::from_secs(30),
        || {
            let (_, listing) = run_tool(
                "redis-cli",
                &["-p", &p, "cluster", "nodes"],
                Duration::from_secs(20),
            );
            listing.lines().filter(|l| l.contains("master")).count() == 3
                && listing.lines().filter(|l| l.contains("slave")).count() == 3
        },
    );
}

/// `redis-cli` with `args`, which must succeed; its output.
fn cluster_cli(args: &[&str]) -> String {
    let (ok, out) = run_tool("redis-cli", args, Duration::from_secs(300));
    assert!(ok, "redis-cli {args:?}:\n{out}");
    out
}

/// Slotway nodes: the first three made a cluster by `redis-cli --cluster
/// create` and loaded with `keys` keys k0.., plus `spares` empty nodes to
/// add later. Returns the nodes, their addresses and a cluster client.
fn three_masters_and_spares(
    spares: usize,
    keys: usize,
) -> (Vec<Node>, Vec<String>, redis::cluster::ClusterClient) {
    let nodes: Vec<Node> = (0..3 + spares)
        .map(|_| Node::start(&["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(Node::addr).collect();
    let (ok, out) = run_tool(
        "redis-cli",
        &[
            "--cluster",
            "create",
            &addrs[0],
            &addrs[1],
            &addrs[2],
            "--cluster-yes",
        ],
        Duration::from_secs(120),
    );
    assert!(ok, "{out}");
    let urls: Vec<String> = nodes[..3].iter().map(Node::url).collect();
    let client = redis::cluster::ClusterClient::builder(urls)
        .retries(20)
        .build()
        .unwrap();
    let mut c = client.get_connection().unwrap();
    for i in 0..keys {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    (nodes, addrs, client)
}

#[test]
#[ignore = "needs redis-tools; run by .ci/run with --include-ignored"]
fn add_node_reshard_del_node_lose_no_key_under_load() {
    let (nodes, addrs, client) = three_masters_and_spares(1, 500);
    let mut c = client.get_connection().unwrap();
    // A client keeps writing and reading while slots move underneath it.
    let load = Load::start(&client, 300);
    let cli = cluster_cli;
    cli(&["--cluster", "add-node", &addrs[3], &addrs[0]]);
    let new_id = {
        let mut c = nodes[3].client();
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query::<String>(&mut c)
            .unwrap()
    };
    common::wait_until("new node known everywhere", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            let mut c = n.client();
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut c)
                .unwrap()
                .contains("cluster_known_nodes:4")
        })
    });
    // A node that just joined refuses keys (RESTORE-ASKING too) until it
    // has learned every slot's owner and reports cluster_state:ok.
    common::wait_until(
        "new node in cluster_state ok",
        Duration::from_secs(30),
        || {
            let mut c = nodes[3].client();
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut c)
                .unwrap()
                .contains("cluster_state:ok")
        },
    );
    // Small moves keep the debug-build test fast; rebalance uses the same
    // per-slot migration and was exercised by hand (see the issue note).
    cli(&[
        "--cluster",
        "reshard",
        &addrs[0],
        "--cluster-from",
        "all",
        "--cluster-to",
        &new_id,
        "--cluster-slots",
        "90",
        "--cluster-yes",
    ]);
    let first_id = {
        let mut c = nodes[0].client();
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query::<String>(&mut c)
            .unwrap()
    };
    cli(&[
        "--cluster",
        "reshard",
        &addrs[0],
        "--cluster-from",
        &new_id,
        "--cluster-to",
        &first_id,
        "--cluster-slots",
        "90",
        "--cluster-yes",
    ]);
    cli(&["--cluster", "del-node", &addrs[0], &new_id]);
    load.finish("resharding");
    let check = cli(&["--cluster", "check", &addrs[0]]);
    assert!(
        check.contains("[OK] All 16384 slots covered.") && !check.contains("[WARNING]"),
        "{check}"
    );
    for i in 0..500 {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, Some(i), "key k{i} lost");
    }
}

/// CLUSTER NODES of `node` as (id, flags, master) per line.
fn roles(node: &Node) -> Vec<(String, String, String)> {
    let mut c = node.client();
    let listing: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).unwrap();
    listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

#[test]
#[ignore = "needs redis-tools; run by .ci/run with --include-ignored"]
fn rebalance_onto_an_empty_master_and_add_a_replica_under_load() {
    let (nodes, addrs, client) = three_masters_and_spares(2, 1000);
    let mut c = client.get_connection().unwrap();
    let cli = cluster_cli;
    // A cluster-aware client nobody here wrote keeps writing and reading
    // while slots move.
    let load = Load::start(&client, 500);
    cli(&["--cluster", "add-node", &addrs[3], &addrs[0]]);
    let wait_ok = |n: &Node| {
        common::wait_until("cluster_state:ok", Duration::from_secs(30), || {
            let mut c = n.client();
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut c)
                .unwrap()
                .contains("cluster_state:ok")
        })
    };
    wait_ok(&nodes[3]);
    let mut c3 = nodes[3].client();
    let new_id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut c3).unwrap();
    // A small weight for the new master keeps the debug-build test short
    // (~170 slots move); the plan and the moves are rebalance's own.
    let weight = format!("{new_id}=0.031");
    let out = cli(&[
        "--cluster",
        "rebalance",
        &addrs[0],
        "--cluster-use-empty-masters",
        "--cluster-weight",
        &weight,
    ]);
    assert!(out.contains("Rebalancing across 4 nodes"), "{out}");
    // Slots are split by weight: 1 : 1 : 1 : 0.031.
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c3).unwrap();
    let mut per_master = std::collections::HashMap::<i64, i64>::new();
    for r in &slots {
        let (redis::Value::Int(lo), redis::Value::Int(hi)) = (&r[0], &r[1]) else {
            panic!("{r:?}")
        };
        let redis::Value::Array(m) = &r[2] else {
            panic!("{r:?}")
        };
        let redis::Value::Int(port) = &m[1] else {
            panic!("{m:?}")
        };
        *per_master.entry(*port).or_default() += hi - lo + 1;
    }
    assert_eq!(per_master.len(), 4, "{per_master:?}");
    let new_slots = per_master[&(i64::from(nodes[3].port))];
    assert!((150..=180).contains(&new_slots), "{per_master:?}");
    assert!(
        per_master
            .values()
            .filter(|n| (5350..=5450).contains(*n))
            .count()
            == 3,
        "{per_master:?}"
    );
    // A replica joins the new master with --cluster-slave.
    cli(&[
        "--cluster",
        "add-node",
        &addrs[4],
        &addrs[0],
        "--cluster-slave",
        "--cluster-master-id",
        &new_id,
    ]);
    common::wait_until(
        "the replica is known everywhere",
        Duration::from_secs(30),
        || {
            let replica_id = roles(&nodes[4])
                .into_iter()
                .find(|(_, f, _)| f.contains("myself"))
                .unwrap();
            nodes.iter().all(|n| {
                roles(n)
                    .iter()
                    .any(|(id, f, m)| *id == replica_id.0 && f.contains("slave") && *m == new_id)
            })
        },
    );
    load.finish("rebalance");
    let check = cli(&["--cluster", "check", &addrs[0]]);
    assert!(
        check.contains("[OK] All 16384 slots covered.") && !check.contains("[WARNING]"),
        "{check}"
    );
    for i in 0..1000 {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, Some(i), "key k{i} lost");
    }
}

/// One request on an open connection; its whole reply, raw.
fn exchange(s: &mut std::net::TcpStream, args: &[&str]) -> Vec<u8> {
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

#[test]
#[ignore = "needs redis-server; run by .ci/run with --include-ignored"]
fn bitmap_commands_match_redis_byte_for_byte() {
    // The same script on a fresh redis-server 7.0 and a fresh node, one
    // connection each: every raw reply (integers, arrays, nils, the exact
    // error texts) must be identical, and so must the values left behind
    // (the GETs and the DUMP-free STRLEN / GETRANGE checks in the list).
    let node = Node::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let real = common::RealRedis::start(dir.path(), &["--appendonly", "no"]);
    let script: &[&[&str]] = &[
        // SETBIT / GETBIT
        &["setbit", "b", "7", "1"],
        &["setbit", "b", "7", "1"],
        &["setbit", "b", "7", "0"],
        &["setbit", "b", "100", "1"],
        &["get", "b"],
        &["getbit", "b", "100"],
        &["getbit", "b", "101"],
        &["getbit", "b", "999999"],
        &["getbit", "missing", "0"],
        &["setbit", "b", "-1", "1"],
        &["setbit", "b", "x", "1"],
        &["setbit", "b", "#1", "1"],
        &["setbit", "b", "1", "2"],
        &["setbit", "b", "1", "-1"],
        &["setbit", "b", "1", "x"],
        &["setbit", "b", "4294967296", "1"],
        &["getbit", "b", "4294967296"],
        &["getbit", "b", "4294967295"],
        &["getbit", "b", "-1"],
        &["set", "ttl", "\x00"],
        &["expire", "ttl", "1000"],
        &["setbit", "ttl", "3", "1"],
        &["setbit", "ttl", "30", "1"],
        &["ttl", "ttl"],
        &["get", "ttl"],
        // BITCOUNT
        &["set", "s", "foobar"],
        &["bitcount", "s"],
        &["bitcount", "s", "0", "0"],
        &["bitcount", "s", "1", "1"],
        &["bitcount", "s", "0", "-1"],
        &["bitcount", "s", "-2", "-1"],
        &["bitcount", "s", "-1", "-2"],
        &["bitcount", "s", "-1", "-2", "nonsense"],
        &["bitcount", "s", "-100", "100"],
        &["bitcount", "s", "5", "3"],
        &["bitcount", "s", "0", "0", "BYTE"],
        &["bitcount", "s", "5", "30", "BIT"],
        &["bitcount", "s", "5", "30", "bit"],
        &["bitcount", "s", "3", "3", "BIT"],
        &["bitcount", "s", "-5", "-1", "BIT"],
        &["bitcount", "s", "0", "-1", "BIT"],
        &["bitcount", "s", "47", "100", "BIT"],
        &["bitcount", "s", "0", "1", "nibble"],
        &["bitcount", "s", "0"],
        &["bitcount", "s", "0", "1", "bit", "x"],
        &["bitcount", "s", "a", "1"],
        &["bitcount", "s", "0", "b"],
        &["bitcount", "missing", "a", "b"],
        &["bitcount", "missing"],
        // BITPOS
        &["set", "ones", "\u{7f}"],
        &["setrange", "allones", "0", "\u{7f}"],
        &["bitop", "not", "allones", "zero3"],
        &["set", "zero3", "\x00\x00\x00"],
        &["bitop", "not", "allones", "zero3"],
        &["bitpos", "allones", "0"],
        &["bitpos", "allones", "1"],
        &["bitpos", "allones", "0", "0"],
        &["bitpos", "allones", "0", "0", "-1"],
        &["bitpos", "allones", "0", "1", "-1", "bit"],
        &["bitpos", "allones", "0", "0", "-1", "BIT"],
        &["bitpos", "zero3", "1"],
        &["bitpos", "zero3", "0"],
        &["bitpos", "zero3", "1", "0", "-1", "BIT"],
        &["bitpos", "zero3", "0", "5", "9", "BIT"],
        &["set", "empty", ""],
        &["bitpos", "empty", "0"],
        &["bitpos", "empty", "1"],
        &["bitpos", "empty", "0", "0"],
        &["bitpos", "empty", "0", "0", "-1", "bit"],
        &["bitpos", "missing", "0"],
        &["bitpos", "missing", "1"],
        &["bitpos", "missing", "1", "x"],
        &["bitpos", "s", "1"],
        &["bitpos", "s", "0"],
        &["bitpos", "s", "1", "2"],
        &["bitpos", "s", "1", "-1"],
        &["bitpos", "s", "0", "-3", "-1"],
        &["bitpos", "s", "1", "7", "15", "BIT"],
        &["bitpos", "s", "0", "7", "15", "bit"],
        &["bitpos", "s", "1", "9", "9", "BIT"],
        &["bitpos", "s", "0", "9", "9", "BIT"],
        &["bitpos", "s", "1", "-10", "-1", "BIT"],
        &["bitpos", "s", "0", "-10", "-1", "BYTE"],
        &["bitpos", "s", "1", "3", "2"],
        &["bitpos", "s", "2"],
        &["bitpos", "s", "-1"],
        &["bitpos", "s", "x"],
        &["bitpos", "s", "1", "x"],
        &["bitpos", "s", "1", "0", "x"],
        &["bitpos", "s", "1", "0", "1", "word"],
        &["bitpos", "s", "1", "x", "1", "word"],
        &["bitpos", "s", "1", "0", "1", "bit", "x"],
        // BITOP
        &["set", "k1", "foobar"],
        &["set", "k2", "abcdef"],
        &["set", "k3", "xyz"],
        &["bitop", "and", "dest", "k1", "k2"],
        &["get", "dest"],
        &["bitop", "OR", "dest", "k1", "k3"],
        &["get", "dest"],
        &["bitop", "xor", "dest", "k1", "k2", "k3"],
        &["get", "dest"],
        &["bitop", "and", "dest", "k1", "k3", "missing"],
        &["get", "dest"],
        &["bitop", "not", "dest", "k3"],
        &["get", "dest"],
        &["bitop", "not", "dest", "k1", "k2"],
        &["bitop", "nand", "dest", "k1"],
        &["expire", "dest", "100"],
        &["bitop", "or", "dest", "k1"],
        &["ttl", "dest"],
        &["bitop", "or", "dest", "missing", "missing2"],
        &["exists", "dest"],
        &["bitop", "or", "dest", "empty"],
        &["exists", "dest"],
        &["rpush", "list", "a"],
        &["bitop", "or", "dest", "k1", "list"],
        &["bitop", "or", "list", "k1"],
        &["type", "list"],
        &["setbit", "list", "0", "1"],
        &["getbit", "list", "0"],
        &["bitcount", "list"],
        &["bitcount", "list", "x", "y"],
        &["bitpos", "list", "1"],
        &["bitpos", "list", "2"],
        &["rpush", "list2", "a"],
        &["bitfield", "list2", "get", "u8", "0"],
        &["bitfield", "list2", "set", "u8", "0", "1"],
        &["bitfield_ro", "list2", "get", "u8", "0"],
        &["bitfield", "list2"],
        &["bitfield", "list2", "get", "u99", "0"],
        // BITFIELD
        &[
            "bitfield", "f", "set", "i8", "0", "-100", "get", "i8", "0", "get", "u8", "0",
        ],
        &[
            "bitfield", "f", "incrby", "i5", "100", "1", "get", "u4", "0",
        ],
        &[
            "bitfield", "f", "set", "u8", "#2", "255", "get", "u8", "16", "get", "u8", "#2",
        ],
        &["get", "f"],
        &[
            "bitfield", "f", "incrby", "u2", "102", "1", "overflow", "sat", "incrby", "u2", "102",
            "1",
        ],
        &[
            "bitfield", "f", "incrby", "u2", "102", "1", "overflow", "fail", "incrby", "u2", "102",
            "1",
        ],
        &[
            "bitfield", "w", "overflow", "wrap", "incrby", "u8", "0", "300",
        ],
        &[
            "bitfield", "w", "overflow", "wrap", "incrby", "u8", "0", "-600",
        ],
        &[
            "bitfield", "w", "overflow", "sat", "incrby", "u8", "0", "-600",
        ],
        &[
            "bitfield", "w", "overflow", "sat", "incrby", "u8", "0", "600",
        ],
        &[
            "bitfield", "w", "overflow", "fail", "incrby", "u8", "0", "1",
        ],
        &[
            "bitfield", "w", "overflow", "fail", "incrby", "u8", "0", "-1",
        ],
        &["bitfield", "w", "overflow", "wrap", "set", "u8", "0", "-1"],
        &["bitfield", "w", "overflow", "sat", "set", "u8", "0", "-1"],
        &["bitfield", "w", "overflow", "sat", "set", "u8", "0", "1000"],
        &["bitfield", "w", "overflow", "fail", "set", "u8", "0", "256"],
        &[
            "bitfield", "w", "overflow", "sat", "set", "i8", "0", "-1000", "get", "i8", "0",
        ],
        &[
            "bitfield", "w", "overflow", "wrap", "set", "i8", "0", "200", "get", "i8", "0",
        ],
        &[
            "bitfield", "w", "overflow", "fail", "incrby", "i8", "0", "-1000",
        ],
        &[
            "bitfield", "w", "overflow", "wrap", "incrby", "i8", "0", "-1000",
        ],
        &[
            "bitfield", "w", "overflow", "sat", "incrby", "i8", "0", "127", "incrby", "i8", "0",
            "1",
        ],
        &[
            "bitfield", "w", "overflow", "sat", "incrby", "i8", "0", "-1000",
        ],
        &["bitfield", "i64", "set", "i64", "0", "9223372036854775807"],
        &["bitfield", "i64", "incrby", "i64", "0", "1"],
        &["bitfield", "i64", "incrby", "i64", "0", "-1"],
        &[
            "bitfield",
            "i64",
            "overflow",
            "sat",
            "incrby",
            "i64",
            "0",
            "-2",
            "incrby",
            "i64",
            "0",
            "-9223372036854775808",
        ],
        &[
            "bitfield", "i64", "overflow", "fail", "incrby", "i64", "0", "-1",
        ],
        &[
            "bitfield",
            "i64",
            "overflow",
            "wrap",
            "incrby",
            "i64",
            "0",
            "9223372036854775807",
        ],
        &[
            "bitfield",
            "i64",
            "overflow",
            "sat",
            "incrby",
            "i64",
            "0",
            "9223372036854775807",
            "incrby",
            "i64",
            "0",
            "9223372036854775807",
        ],
        &[
            "bitfield", "i64", "get", "i64", "0", "get", "u63", "1", "get", "u63", "0", "get",
            "i64", "3",
        ],
        &[
            "bitfield",
            "u63",
            "set",
            "u63",
            "0",
            "9223372036854775807",
            "get",
            "u63",
            "0",
        ],
        &[
            "bitfield", "u63", "overflow", "wrap", "incrby", "u63", "0", "1",
        ],
        &[
            "bitfield",
            "u63",
            "overflow",
            "sat",
            "incrby",
            "u63",
            "0",
            "-1",
            "incrby",
            "u63",
            "0",
            "-9223372036854775808",
        ],
        &[
            "bitfield", "u63", "set", "u63", "0", "-1", "overflow", "sat", "set", "u63", "0", "-5",
        ],
        &[
            "bitfield", "u63", "overflow", "fail", "set", "u63", "0", "-5", "get", "u1", "0",
        ],
        &[
            "bitfield", "u63", "set", "u1", "3", "5", "set", "i1", "4", "1", "get", "i1", "4",
        ],
        &["get", "u63"],
        &[
            "bitfield", "fresh", "overflow", "fail", "incrby", "u2", "10", "10",
        ],
        &["get", "fresh"],
        &[
            "bitfield", "nothing", "get", "u8", "0", "get", "i64", "1000",
        ],
        &["exists", "nothing"],
        &["bitfield", "nothing"],
        &["bitfield", "f", "get", "u64", "0"],
        &["bitfield", "f", "get", "i65", "0"],
        &["bitfield", "f", "get", "i0", "0"],
        &["bitfield", "f", "get", "x8", "0"],
        &["bitfield", "f", "get", "I8", "0"],
        &["bitfield", "f", "get", "u08", "0"],
        &["bitfield", "f", "get", "", "0"],
        &["bitfield", "f", "get", "u8", "-1"],
        &["bitfield", "f", "get", "u8", "#-1"],
        &["bitfield", "f", "get", "u8", "#x"],
        &["bitfield", "f", "get", "u8", "##1"],
        &["bitfield", "f", "get", "u8", "4294967296"],
        &["bitfield", "f", "get", "u8", "4294967295"],
        &["bitfield", "f", "get", "u8", "#536870912"],
        &["bitfield", "f", "get", "u8", "#536870911"],
        &["bitfield", "f", "get", "u8", "#1152921504606846976"],
        &["bitfield", "f", "get", "u8", "#2305843009213693953"],
        &["bitfield", "f", "get", "u8"],
        &["bitfield", "f", "set", "u8", "0"],
        &["bitfield", "f", "set", "u8", "0", "x"],
        &["bitfield", "f", "incrby", "u8", "0", "1.5"],
        &["bitfield", "f", "overflow"],
        &["bitfield", "f", "overflow", "saturate", "get", "u8", "0"],
        &["bitfield", "f", "OVERFLOW", "SAT", "INCRBY", "U8", "0", "1"],
        &["bitfield", "f", "GET", "u8", "0", "Incrby", "u8", "0", "1"],
        &["bitfield", "f", "get", "u8", "0", "bogus"],
        &["bitfield", "f", "set", "u8", "0", "1", "get", "u99", "0"],
        &["bitfield_ro", "f", "get", "u8", "0", "get", "i4", "#3"],
        &["bitfield_ro", "f", "set", "u8", "0", "1"],
        &["bitfield_ro", "f", "incrby", "u8", "0", "1"],
        &["bitfield_ro", "f", "overflow", "sat"],
        &["bitfield_ro", "f", "get", "u64", "0"],
        &["bitfield_ro", "missing", "get", "u8", "0"],
        &["bitfield_ro", "f"],
        &["get", "f"],
        // arity
        &["setbit", "b", "1"],
        &["getbit", "b"],
        &["bitcount"],
        &["bitpos", "b"],
        &["bitop", "and", "d"],
        &["bitfield"],
        &["bitfield_ro"],
        // the key table: BITOP's destination and sources are all keys
        &["command", "getkeys", "bitop", "and", "d", "a", "b"],
        &["command", "getkeys", "bitfield", "k", "get", "u8", "0"],
        &["command", "getkeys", "bitfield_ro", "k", "get", "u8", "0"],
        &["command", "getkeys", "setbit", "k", "1", "1"],
        &["command", "getkeys", "bitpos", "k", "1"],
    ];
    let mut ours = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let mut theirs = std::net::TcpStream::connect(("127.0.0.1", real.port)).unwrap();
    for t in [&ours, &theirs] {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    for args in script {
        let a = exchange(&mut ours, args);
        let b = exchange(&mut theirs, args);
        assert_eq!(
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b),
            "reply to {args:?}"
        );
    }
    // COMMAND INFO: name, arity, flags and the legacy key triple. (The
    // node's entries stop there: no ACL categories, tips or key specs in
    // its COMMAND INFO for any command.)
    let names = [
        "setbit",
        "getbit",
        "bitcount",
        "bitpos",
        "bitop",
        "bitfield",
        "bitfield_ro",
    ];
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
    let (a, b) = (
        head(exchange(&mut ours, &info)),
        head(exchange(&mut theirs, &info)),
    );
    assert_eq!(a.len(), names.len());
    assert_eq!(a, b, "COMMAND INFO of the bitmap commands");
}
