//! Server behaviour: scripting (Redlock), INFO, CONFIG, CLIENT, COMMAND,
//! auth, limits, memory policies, daemonizing and config errors — against
//! the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{run_bin, wait_until, Node};
use redis::Commands;
use std::time::Duration;

const UNLOCK: &str = r#"if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) else return 0 end"#;

#[test]
fn redlock_acquire_and_compare_and_delete() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let got: Option<String> = redis::cmd("SET")
        .arg("res")
        .arg("token-a")
        .arg("NX")
        .arg("PX")
        .arg(30000)
        .query(&mut c)
        .unwrap();
    assert!(got.is_some());
    let script = redis::Script::new(UNLOCK);
    // Wrong token: nothing deleted (EVALSHA falls back to EVAL the first time).
    assert_eq!(
        script
            .key("res")
            .arg("token-b")
            .invoke::<i64>(&mut c)
            .unwrap(),
        0
    );
    assert!(c.exists::<_, bool>("res").unwrap());
    assert_eq!(
        script
            .key("res")
            .arg("token-a")
            .invoke::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert!(!c.exists::<_, bool>("res").unwrap());
    // SCRIPT LOAD + EVALSHA + EXISTS + FLUSH.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(UNLOCK)
        .query(&mut c)
        .unwrap();
    assert_eq!(sha, script.get_hash());
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    let e = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("res")
        .arg("x")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOSCRIPT"), "{e}");
}

#[test]
fn scripting_conversions_and_errors() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let v: Vec<redis::Value> = redis::cmd("EVAL")
        .arg("return {1,'two',{3},4.9}")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(v.len(), 4);
    let r = node.raw(b"SET foo bar\r\nEVAL \"return redis.call('incr','foo')\" 0\r\nEVAL \"return redis.pcall('incr','foo')\" 0\r\nEVAL \"x = 1\" 0\r\n");
    let text = String::from_utf8_lossy(&r);
    assert!(text.contains("-ERR value is not an integer or out of range script: 22c9dbdd80709fb523d10691f558682a9d7129bf, on @user_script:1.\r\n"), "{text}");
    assert!(
        text.contains("\r\n-ERR value is not an integer or out of range\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Attempt to modify a readonly table"),
        "{text}"
    );
    // A script's writes are atomic and visible together.
    let _: () = redis::cmd("EVAL")
        .arg("redis.call('set','a','1'); redis.call('set','b','2')")
        .arg(0)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        c.mget::<_, Vec<String>>(&["a", "b"]).unwrap(),
        vec!["1", "2"]
    );
    // Runtime errors never take the server down.
    let e = redis::cmd("EVAL")
        .arg("return nosuch()")
        .arg(0)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("nonexistent global"), "{e}");
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
}

#[test]
fn info_sections_and_fields() {
    let node = Node::start(&["--cluster-enabled", "yes"]);
    let mut c = node.client();
    // A lone cluster node serves keys once it owns every slot.
    assert_eq!(
        node.raw(b"SET k v\r\n"),
        b"-CLUSTERDOWN The cluster is down\r\n"
    );
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query(&mut c)
        .unwrap();
    // As in Redis, a master declares the state ok only after a short delay.
    common::wait_until("cluster_state:ok", Duration::from_secs(10), || {
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut c)
            .unwrap()
            .contains("cluster_state:ok")
    });
    c.set::<_, _, ()>("k", "v").unwrap();
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for needle in [
        "# Server",
        "redis_version:7.0.15",
        "redis_mode:cluster",
        &format!("tcp_port:{}", node.port),
        "# Clients",
        "connected_clients:",
        "# Memory",
        "used_memory:",
        "maxmemory_policy:noeviction",
        "# Stats",
        "total_commands_processed:",
        "# Replication",
        "role:master",
        "# Cluster",
        "cluster_enabled:1",
        "# Keyspace",
        "db0:keys=1,expires=0",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}");
    }
    let one: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    assert!(one.starts_with("# Memory\r\n") && !one.contains("# Server"));
}

#[test]
fn config_get_set_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("node.conf");
    std::fs::write(
        &conf,
        "# my settings\nmaxmemory 512mb\ncluster-node-timeout 5000\n",
    )
    .unwrap();
    let node = Node::start(&[]);
    drop(node);
    let port = common::free_port();
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "node",
            conf.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.path().to_str().unwrap(),
            "--save",
            "",
        ])
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    wait_until("node up", Duration::from_secs(20), || {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .is_ok()
    });
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let v: Vec<(String, String)> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec![("maxmemory".into(), "536870912".into())]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .arg("timeout")
        .arg("300")
        .query(&mut c)
        .unwrap();
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("lots")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("argument must be a memory value"),
        "{e}"
    );
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("nosuch")
        .arg("1")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("Unknown option"), "{e}");
    let _: () = redis::cmd("CONFIG").arg("REWRITE").query(&mut c).unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.starts_with("# my settings\n"), "{text}");
    assert!(
        text.contains("maxmemory-policy allkeys-lru") && text.contains("timeout 300"),
        "{text}"
    );
    let _: () = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query(&mut c)
        .unwrap_or(());
    let _ = child.wait();
}

#[test]
fn client_list_setname_kill_and_command_info() {
    let node = Node::start(&[]);
    let mut c = node.client();
    let mut victim = node.client();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("victim")
        .query(&mut victim)
        .unwrap();
    let e = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("a b")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("Client names cannot contain spaces"),
        "{e}"
    );
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let line = list.lines().find(|l| l.contains("name=victim")).unwrap();
    let id: String = line
        .split(' ')
        .next()
        .unwrap()
        .trim_start_matches("id=")
        .into();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(&mut c)
        .unwrap();
    assert_eq!(killed, 1);
    assert!(
        redis::cmd("PING").query::<String>(&mut victim).is_err(),
        "killed client must be disconnected"
    );
    assert!(
        redis::cmd("COMMAND")
            .arg("COUNT")
            .query::<i64>(&mut c)
            .unwrap()
            > 150
    );
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .query(&mut c)
        .unwrap();
    assert_eq!(info.len(), 1);
    let keys: Vec<String> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, vec!["a", "b"]);
}

#[test]
fn requirepass_and_maxclients() {
    let node = Node::start(&["--requirepass", "s3cret", "--maxclients", "3"]);
    assert_eq!(
        node.raw(b"GET k\r\n"),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        node.raw(b"AUTH wrong\r\n"),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(node.raw(b"AUTH s3cret\r\nPING\r\n"), b"+OK\r\n+PONG\r\n");
    let url = format!("redis://:s3cret@127.0.0.1:{}/", node.port);
    let client = redis::Client::open(url).unwrap();
    let _a = client.get_connection().unwrap();
    let _b = client.get_connection().unwrap();
    let _c = client.get_connection().unwrap();
    let r = common::raw_exchange(node.port, b"");
    assert_eq!(r, b"-ERR max number of clients reached\r\n");
}

#[test]
fn noeviction_answers_oom_and_reads_still_work() {
    let node = Node::start(&["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"]);
    let mut c = node.client();
    let big = "x".repeat(10_000);
    let mut oom = None;
    for i in 0..5000 {
        match c.set::<_, _, ()>(format!("k{i}"), &big) {
            Ok(()) => {}
            Err(e) => {
                oom = Some(e.to_string());
                break;
            }
        }
    }
    let oom = oom.expect("writes must eventually be refused");
    assert!(
        oom.contains("command not allowed when used memory > 'maxmemory'"),
        "{oom}"
    );
    assert_eq!(c.get::<_, String>("k0").unwrap().len(), 10_000);
    let _: i64 = c.del("k0").unwrap();
}

#[test]
fn allkeys_lru_evicts_and_stays_bounded() {
    let node = Node::start(&["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut c = node.client();
    let big = "x".repeat(10_000);
    for i in 0..3000 {
        c.set::<_, _, ()>(format!("k{i}"), &big).unwrap();
    }
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    let evicted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(evicted > 0);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert!(dbsize < 3000, "{dbsize}");
    let mem: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let used: u64 = mem
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(used < 12 * 1024 * 1024, "used_memory {used}");
}

#[test]
fn daemonize_pidfile_logfile_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let pidfile = dir.path().join("node.pid");
    let logfile = dir.path().join("node.log");
    let (ok, out) = run_bin(
        &[
            "node",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--pidfile",
            pidfile.to_str().unwrap(),
            "--logfile",
            logfile.to_str().unwrap(),
            "--dir",
            dir.path().to_str().unwrap(),
            "--save",
            "",
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    wait_until("pidfile", Duration::from_secs(20), || pidfile.exists());
    let url = format!("redis://127.0.0.1:{port}/");
    wait_until("daemon answers", Duration::from_secs(20), || {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .is_ok()
    });
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 0);
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut c);
    wait_until("pidfile removed", Duration::from_secs(20), || {
        !pidfile.exists()
    });
    let log = std::fs::read_to_string(&logfile).unwrap();
    assert!(log.contains("Ready to accept connections"), "{log}");
}

#[test]
fn a_log_file_that_cannot_be_opened_stops_the_start_before_detaching() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (ok, out) = run_bin(
        &[
            "node",
            "--port",
            &port.to_string(),
            "--daemonize",
            "yes",
            "--logfile",
            "no-such-dir/node.log",
            "--pidfile",
            dir.path().join("node.pid").to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!ok, "a daemon that cannot log must not start: {out}");
    assert!(
        out.contains("Can't open the log file: No such file or directory"),
        "{out}"
    );
    assert!(!dir.path().join("node.pid").exists());
}

#[test]
fn a_cluster_node_refuses_a_port_whose_bus_port_would_not_exist() {
    // The bus listens on port + 10000: Redis refuses ports above 55535.
    let port = (55536..=u16::MAX)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_bin(
        &[
            "node",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("Your Redis port number must be 55535 or less."),
        "{out}"
    );
}

#[test]
fn config_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "port 7000\n# fine\nfrobnicate yes\n").unwrap();
    let (ok, out) = run_bin(&["node", conf.to_str().unwrap()], dir.path());
    assert!(!ok);
    assert!(
        out.contains("bad.conf") && out.contains("line 3") && out.contains("frobnicate"),
        "{out}"
    );
    std::fs::write(&conf, "maxmemory lots\n").unwrap();
    let (ok, out) = run_bin(&["node", conf.to_str().unwrap()], dir.path());
    assert!(!ok && out.contains("line 1"), "{out}");
}

#[test]
fn idle_clients_are_closed_after_timeout() {
    let node = Node::start(&["--timeout", "1"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 16];
    // The server closes the idle connection: read returns 0 (EOF).
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn hello_negotiates_resp3() {
    let node = Node::start(&[]);
    let r = node.raw(b"HELLO 3\r\nHGETALL nokey\r\nGET nokey\r\nHELLO 4\r\n");
    let text = String::from_utf8_lossy(&r);
    assert!(text.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(
        text.ends_with("%0\r\n_\r\n-NOPROTO unsupported protocol version\r\n"),
        "{text}"
    );
}

// needs redis-server; run by .ci/run
#[test]
#[ignore]
fn command_getkeys_matches_redis() {
    // COMMAND GETKEYS shows the key table the slot checks use, so every
    // rule of it (numkeys, keywords, SORT, MIGRATE, subcommands, the
    // errors) is compared with a real redis-server byte for byte.
    let node = Node::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let redis = common::RealRedis::start(dir.path(), &[]);
    let calls = [
        "get k",
        "mset a 1 b 2",
        "eval s 0",
        "eval s 2 a b c",
        "eval s 5 a",
        "eval s x a",
        "lmpop 0 a LEFT",
        "lmpop 2 a b LEFT",
        "blmpop 0 1 a LEFT",
        "zunionstore d 0 a",
        "zunionstore d 2 a b weights 1 2",
        "sort k store d",
        "sort k by w get o limit 0 1",
        "object encoding k",
        "object",
        "memory usage k",
        "xread count 1 streams a b 0 0",
        "georadius k 0 0 1 km store d",
        "migrate h 1 k 0 10",
        "migrate h 1 \"\" 0 10 keys a b",
        "spublish ch m",
        "ping",
        "get",
        "set k",
        "nosuchcommand a",
        "config get x",
        "sintercard 2 a b",
        "fcall f 0",
    ];
    for call in calls {
        let args: Vec<&str> = call
            .split(' ')
            .map(|a| if a == "\"\"" { "" } else { a })
            .collect();
        let mut full = vec!["COMMAND", "GETKEYS"];
        full.extend(&args);
        let wire = slotway::resp::command_bytes(&full);
        let ours = common::raw_exchange(node.port, &wire);
        let theirs = common::raw_exchange(redis.port, &wire);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "COMMAND GETKEYS {call}"
        );
    }
}

/// One SLOWLOG GET entry as the redis crate returns it.
type SlowEntry = (i64, i64, i64, Vec<String>, String, String);

#[test]
fn slowlog_records_commands_as_redis_does() {
    let node = Node::start(&["--slowlog-log-slower-than", "0"]);
    let mut c = node.client();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("app")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: i64 = redis::cmd("EVAL")
        .arg("redis.call('set','a','1') return 1")
        .arg(0)
        .query(&mut c)
        .unwrap();
    let _: () = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("b")
        .arg("2")
        .ignore()
        .query(&mut c)
        .unwrap();
    let _: () = c.set("k".repeat(200), "v").unwrap();
    let _: redis::RedisResult<()> = redis::cmd("AUTH").arg("u").arg("secret").query(&mut c);
    let got: Vec<SlowEntry> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut c)
        .unwrap();
    let args: Vec<Vec<String>> = got.iter().map(|e| e.3.clone()).collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Newest first; EXEC itself is not logged, its commands are; the
    // script's own call is, under no client.
    assert_eq!(
        args,
        vec![
            s(&["AUTH", "(redacted)", "(redacted)"]),
            s(&[
                "SET",
                &format!("{}... (72 more bytes)", "k".repeat(128)),
                "v"
            ]),
            s(&["SET", "b", "2"]),
            s(&["MULTI"]),
            s(&["EVAL", "redis.call('set','a','1') return 1", "0"]),
            s(&["set", "a", "1"]),
            s(&["SLOWLOG", "RESET"]),
        ]
    );
    let ids: Vec<i64> = got.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1] + 1), "{ids:?}");
    let script_call = &got[5];
    assert_eq!(
        (script_call.4.as_str(), script_call.5.as_str()),
        ("?:0", "")
    );
    assert_eq!(got[0].5, "app");
    assert!(got[0].4.starts_with("127.0.0.1:"));

    // The length limit applies from the next entry on; -1 turns logging off.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-max-len")
        .arg(2)
        .query(&mut c)
        .unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert_eq!(len, 2);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(-1)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = c.set("x", 1).unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert_eq!(len, 0);

    let e = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-2)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("count should be greater than or equal to -1"),
        "{e}"
    );
    let e = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(-2)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string().contains("argument must be between -1 and"),
        "{e}"
    );
}
