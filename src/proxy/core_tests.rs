//! The proxy core against in-memory fake nodes ([`memnet`]) on tokio's
//! paused clock: a real session serves a client over an in-memory pipe,
//! and each test scripts what the nodes answer — MOVED, ASK, TRYAGAIN, a
//! connection lost with the request in flight, no answer at all, answers
//! out of order — and checks what the client sees. Time only moves when
//! every task waits, so deadlines and backoffs run instantly and exactly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::cluster::key_hash_slot;
use crate::proxy::backend::BackendCtx;
use crate::proxy::config::ProxyConfig;
use crate::proxy::memnet::{Link, MemNet, Request};
use crate::proxy::metrics::Metrics;
use crate::proxy::router::{Layout, Router};
use crate::proxy::{commands, session, Proxy};
use crate::resp::scan::FrameScanner;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

const A: &str = "10.0.0.1:7000";
const B: &str = "10.0.0.2:7000";

/// A proxy over the fake network; A owns slots 0-8191, B the rest.
struct World {
    proxy: Arc<Proxy>,
    net: Arc<MemNet>,
    _shutdown: watch::Sender<bool>,
}

fn world(cfg: ProxyConfig) -> World {
    let net = Arc::new(MemNet::default());
    let table = commands::table().unwrap();
    let metrics = Arc::new(Metrics::new(&table.metric_names).unwrap());
    let ctx = Arc::new(BackendCtx {
        user: String::new(),
        password: String::new(),
        connect_timeout: cfg.connect_timeout(),
        conns_per_node: 1,
        max_reply_bytes: cfg.max_reply_bytes,
        metrics: metrics.clone(),
        on_failure: Arc::new(Notify::new()),
        memnet: Some(net.clone()),
    });
    let router = Arc::new(Router::new(ctx));
    router.apply_layout(&Layout {
        ranges: vec![
            (0, 8191, A.to_string(), vec![]),
            (8192, 16383, B.to_string(), vec![]),
        ],
    });
    let (tx, rx) = watch::channel(false);
    let proxy = Arc::new(Proxy {
        cfg: Arc::new(cfg),
        router,
        metrics,
        table,
        node_id: "0".repeat(40),
        listen: SocketAddr::from(([127, 0, 0, 1], 7777)),
        started: std::time::Instant::now(),
        next_client: AtomicU64::new(1),
        commands_processed: AtomicU64::new(0),
        rotate: AtomicU64::new(0),
        shutdown: rx,
    });
    World {
        proxy,
        net,
        _shutdown: tx,
    }
}

/// What a fake node does with one send.
enum Answer {
    Reply(Vec<u8>),
    /// Reply after a while (others may overtake it).
    Later(Duration, Vec<u8>),
    /// The connection dies with the request written.
    Lose,
    /// Never answer.
    Hang,
}

/// A fake node at `addr`: `script` sees each send's commands (and how
/// many sends this node got before) and decides.
fn node(
    w: &World,
    addr: &str,
    script: impl Fn(&[Vec<Bytes>], u32) -> Answer + Send + Sync + 'static,
) -> Arc<AtomicU32> {
    let mut links = w.net.listen(addr);
    let script = Arc::new(script);
    let sends = Arc::new(AtomicU32::new(0));
    let count = sends.clone();
    tokio::spawn(async move {
        while let Some(link) = links.recv().await {
            tokio::spawn(serve_link(link, script.clone(), count.clone()));
        }
    });
    sends
}

async fn serve_link(
    mut link: Link,
    script: Arc<impl Fn(&[Vec<Bytes>], u32) -> Answer + Send + Sync + 'static>,
    sends: Arc<AtomicU32>,
) {
    while let Some(req) = link.recv().await {
        let n = sends.fetch_add(1, Ordering::SeqCst);
        let answer = script(&req.commands(), n);
        match answer {
            Answer::Reply(bytes) => req.reply(&bytes),
            Answer::Later(after, bytes) => {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    req.reply(&bytes);
                });
            }
            Answer::Lose => {
                req.lose();
                return link.break_off();
            }
            Answer::Hang => Request::hang(req),
        }
    }
}

/// A key whose slot is in `lo..=hi`, distinct per `n`.
fn key_in(lo: u16, hi: u16, n: usize) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| (lo..=hi).contains(&key_hash_slot(k.as_bytes())))
        .nth(n)
        .unwrap()
}

fn bulk(s: &str) -> Vec<u8> {
    format!("${}\r\n{s}\r\n", s.len()).into_bytes()
}

/// What the order test's nodes answer: each key named back (GET k gives
/// "k", MGET a b gives ["a", "b"]).
fn echo_keys(cmd: &[Bytes]) -> Vec<u8> {
    if arg(cmd, 0) == "MGET" {
        let mut r = format!("*{}\r\n", cmd.len() - 1).into_bytes();
        for i in 1..cmd.len() {
            r.extend(bulk(&arg(cmd, i)));
        }
        return r;
    }
    bulk(&arg(cmd, 1))
}

fn arg(cmd: &[Bytes], i: usize) -> String {
    cmd.get(i)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .unwrap_or_default()
}

/// A client of the proxy over an in-memory pipe.
struct Client {
    io: DuplexStream,
    buf: BytesMut,
}

impl Client {
    fn connect(w: &World) -> Client {
        Client::with_buffer(w, 1 << 16)
    }

    /// A client whose pipe holds at most `bytes` unread.
    fn with_buffer(w: &World, bytes: usize) -> Client {
        let (ours, theirs) = tokio::io::duplex(bytes);
        let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
        tokio::spawn(session::serve_client(
            w.proxy.clone(),
            theirs,
            peer,
            w.proxy.listen,
        ));
        Client {
            io: ours,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, args: &[&str]) {
        self.io
            .write_all(&crate::resp::command_bytes(args))
            .await
            .unwrap();
    }

    /// The next reply frame, as text.
    async fn reply(&mut self) -> String {
        loop {
            if let Ok(Some(n)) = FrameScanner::new().scan(&self.buf) {
                let frame = self.buf.split_to(n);
                return String::from_utf8_lossy(&frame).into_owned();
            }
            let n = self.io.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "the proxy closed the connection");
        }
    }

    async fn call(&mut self, args: &[&str]) -> String {
        self.send(args).await;
        self.reply().await
    }
}

#[tokio::test(start_paused = true)]
async fn moved_updates_the_map_and_resends() {
    let w = world(ProxyConfig::default());
    let key = key_in(0, 8191, 0);
    let slot = key_hash_slot(key.as_bytes());
    let moved = format!("-MOVED {slot} {B}\r\n").into_bytes();
    node(&w, A, move |_, _| Answer::Reply(moved.clone()));
    node(&w, B, |cmds, _| {
        Answer::Reply(bulk(&format!("from B: {}", arg(&cmds[0], 1))))
    });
    let mut c = Client::connect(&w);
    let want = String::from_utf8(bulk(&format!("from B: {key}"))).unwrap();
    assert_eq!(c.call(&["GET", &key]).await, want);
    let map = w.proxy.router.load();
    assert_eq!(map.master_of(slot).unwrap().addr, B);
    assert_eq!(w.proxy.metrics.moved.get(), 1);
    // The next request for the slot goes straight to B.
    assert_eq!(c.call(&["GET", &key]).await, want);
    assert_eq!(w.proxy.metrics.moved.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn ask_sends_asking_to_the_target_and_keeps_the_map() {
    let w = world(ProxyConfig::default());
    let key = key_in(0, 8191, 0);
    let slot = key_hash_slot(key.as_bytes());
    let ask = format!("-ASK {slot} {B}\r\n").into_bytes();
    let a_sends = node(&w, A, move |_, _| Answer::Reply(ask.clone()));
    node(&w, B, move |cmds, _| {
        // An importing node serves the key only right after ASKING.
        match cmds {
            [asking, get] if arg(asking, 0) == "ASKING" && arg(get, 0) == "GET" => {
                let mut r = b"+OK\r\n".to_vec();
                r.extend(bulk("imported"));
                Answer::Reply(r)
            }
            _ => Answer::Reply(format!("-MOVED {slot} {A}\r\n").into_bytes()),
        }
    });
    let mut c = Client::connect(&w);
    assert_eq!(c.call(&["GET", &key]).await, "$8\r\nimported\r\n");
    assert_eq!(w.proxy.router.load().master_of(slot).unwrap().addr, A);
    assert_eq!(w.proxy.metrics.ask.get(), 1);
    // Still A's slot: the next request asks A first again.
    assert_eq!(c.call(&["GET", &key]).await, "$8\r\nimported\r\n");
    assert_eq!(a_sends.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn tryagain_is_retried_with_backoff_until_it_succeeds() {
    let cfg = ProxyConfig {
        retry_backoff_initial_ms: 10,
        retry_backoff_max_ms: 40,
        ..ProxyConfig::default()
    };
    let w = world(cfg);
    let key = key_in(0, 8191, 0);
    let sends = node(&w, A, |_, n| {
        if n < 3 {
            Answer::Reply(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n".to_vec())
        } else {
            Answer::Reply(b"+OK\r\n".to_vec())
        }
    });
    let mut c = Client::connect(&w);
    let t0 = Instant::now();
    assert_eq!(c.call(&["SET", &key, "v"]).await, "+OK\r\n");
    assert_eq!(sends.load(Ordering::SeqCst), 4);
    // Backoffs of 10, 20 and 40 ms passed on the paused clock.
    assert!(
        t0.elapsed() >= Duration::from_millis(70),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn tryagain_past_the_deadline_returns_the_nodes_error() {
    let cfg = ProxyConfig {
        request_deadline_ms: 200,
        retry_backoff_initial_ms: 50,
        retry_backoff_max_ms: 50,
        ..ProxyConfig::default()
    };
    let w = world(cfg);
    let key = key_in(0, 8191, 0);
    let text = "-TRYAGAIN Multiple keys request during rehashing of slot\r\n";
    node(&w, A, move |_, _| Answer::Reply(text.as_bytes().to_vec()));
    let mut c = Client::connect(&w);
    assert_eq!(c.call(&["GET", &key]).await, text);
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_fails_a_write_and_resends_a_read() {
    let w = world(ProxyConfig::default());
    let key = key_in(0, 8191, 0);
    // The SET and the first try of the GET are lost with their
    // connections.
    node(&w, A, |_, n| {
        if n < 2 {
            Answer::Lose
        } else {
            Answer::Reply(bulk("v"))
        }
    });
    let mut c = Client::connect(&w);
    let lost = c.call(&["SET", &key, "v"]).await;
    assert_eq!(
        lost,
        format!(
            "-ERR proxy: connection to {A} lost while the command was in flight; \
             it may or may not have been executed\r\n"
        )
    );
    // A read is safe to send again, on a new connection.
    assert_eq!(c.call(&["GET", &key]).await, "$1\r\nv\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_gets_a_deadline_error() {
    let cfg = ProxyConfig {
        request_deadline_ms: 1000,
        ..ProxyConfig::default()
    };
    let w = world(cfg);
    let key = key_in(0, 8191, 0);
    node(&w, A, |_, _| Answer::Hang);
    let mut c = Client::connect(&w);
    let t0 = Instant::now();
    assert_eq!(
        c.call(&["GET", &key]).await,
        format!("-ERR proxy: no reply from {A} within 1000 ms\r\n")
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(1100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn replies_keep_request_order_when_nodes_answer_out_of_order() {
    let w = world(ProxyConfig::default());
    // A answers each request later than the one before; B at once.
    node(&w, A, |cmds, n| {
        let after = Duration::from_millis(30 * u64::from(3 - n.min(3)));
        Answer::Later(after, echo_keys(&cmds[0]))
    });
    node(&w, B, |cmds, _| Answer::Reply(echo_keys(&cmds[0])));
    let keys = [
        key_in(0, 8191, 0),
        key_in(8192, 16383, 0),
        key_in(0, 8191, 1),
        key_in(8192, 16383, 1),
        key_in(0, 8191, 2),
    ];
    let mut c = Client::connect(&w);
    for k in &keys {
        c.send(&["GET", k]).await;
    }
    for k in &keys {
        assert_eq!(c.reply().await, String::from_utf8(bulk(k)).unwrap());
    }
    // A fan-out (MGET over both nodes) merges in key order too.
    c.send(&["MGET", &keys[0], &keys[1], &keys[2]]).await;
    let want = format!(
        "*3\r\n{}{}{}",
        String::from_utf8(bulk(&keys[0])).unwrap(),
        String::from_utf8(bulk(&keys[1])).unwrap(),
        String::from_utf8(bulk(&keys[2])).unwrap()
    );
    assert_eq!(c.reply().await, want);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_master_is_retried_until_the_deadline() {
    let cfg = ProxyConfig {
        request_deadline_ms: 300,
        ..ProxyConfig::default()
    };
    let w = world(cfg);
    let key = key_in(0, 8191, 0);
    // Nobody listens at A.
    let mut c = Client::connect(&w);
    assert_eq!(
        c.call(&["GET", &key]).await,
        format!("-CLUSTERDOWN proxy: master {A} unreachable and no failover within 300 ms\r\n")
    );
    // A node that comes back is used again.
    node(&w, A, |_, _| Answer::Reply(bulk("back")));
    assert_eq!(c.call(&["GET", &key]).await, "$4\r\nback\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_closed_at_its_byte_limit_mid_write() {
    let cfg = ProxyConfig {
        client_output_stall_secs: 0,
        client_output_limit_bytes: 64 << 10,
        ..ProxyConfig::default()
    };
    let w = world(cfg);
    let big = bulk(&"x".repeat(16 << 10));
    // One reply every 10 ms: the first ones reach the session and fill
    // the pipe (4 KiB), so its write blocks while later ones pile up in
    // its mailbox.
    node(&w, A, move |_, n| {
        Answer::Later(Duration::from_millis(10 * (u64::from(n) + 1)), big.clone())
    });
    let key = key_in(0, 8191, 0);
    let mut c = Client::with_buffer(&w, 4096);
    for _ in 0..64 {
        c.send(&["GET", &key]).await;
    }
    let closed = &w.proxy.metrics.clients_output_limit;
    for _ in 0..1000 {
        if closed.get() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(closed.get(), 1, "the client was never closed");
    // What was written can be read, then the connection ends.
    let mut total = 0;
    loop {
        let n = c.io.read_buf(&mut c.buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total < 64 * (16 << 10), "{total}");
}
