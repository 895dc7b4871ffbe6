//! Micro-benchmarks of the pure hot paths: request parsing, key → slot, and
//! reply encoding. Run with `cargo bench --bench micro`. Whole-server
//! throughput is measured by `bench/run.sh` with redis-benchmark instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use slotway::cluster::key_hash_slot;
use slotway::resp::{Limits, Proto, Reply, RequestParser};
use std::hint::black_box;

fn pipeline(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let key = format!("key:{i:012}");
        v.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$3\r\nxxx\r\n",
                key.len()
            )
            .as_bytes(),
        );
    }
    v
}

fn parse(c: &mut Criterion) {
    let wire = pipeline(16);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(16));
    g.bench_function("set_pipeline_16", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                let mut p = RequestParser::new();
                let limits = Limits::default();
                while let Some(args) = p.parse(&mut buf, &limits).unwrap() {
                    black_box(args);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn slots(c: &mut Criterion) {
    c.bench_function("key_hash_slot/16B", |b| {
        b.iter(|| key_hash_slot(black_box(b"key:000000123456")))
    });
    c.bench_function("key_hash_slot/tagged", |b| {
        b.iter(|| key_hash_slot(black_box(b"{user1000}.following")))
    });
}

fn encode(c: &mut Criterion) {
    let r = Reply::Array(
        (0..100)
            .map(|i| Reply::bulk(format!("value-{i}")))
            .collect(),
    );
    c.bench_function("encode/array_100", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            r.encode(Proto::Resp2, &mut out);
            black_box(out.len())
        })
    });
}

/// The proxy's per-request routing work: command lookup, key positions,
/// slot, slot-map lookup; and finding a reply's frame boundary.
fn proxy(c: &mut Criterion) {
    use bytes::Bytes;
    use slotway::proxy::backend::BackendCtx;
    use slotway::proxy::commands::{table, Lookup};
    use slotway::proxy::metrics::Metrics;
    use slotway::proxy::router::{Layout, Router};
    use std::sync::Arc;
    let t = table().unwrap();
    let ctx = Arc::new(BackendCtx {
        user: String::new(),
        password: String::new(),
        connect_timeout: std::time::Duration::from_secs(1),
        conns_per_node: 1,
        max_reply_bytes: 1 << 20,
        metrics: Arc::new(Metrics::new(&t.metric_names).unwrap()),
        on_failure: Arc::new(tokio::sync::Notify::new()),
        memnet: None,
    });
    let router = Router::new(ctx);
    router.apply_layout(&Layout {
        ranges: vec![
            (0, 5460, "127.0.0.1:1".into(), vec![]),
            (5461, 10922, "127.0.0.1:2".into(), vec![]),
            (10923, 16383, "127.0.0.1:3".into(), vec![]),
        ],
    });
    let args = vec![
        Bytes::from_static(b"SET"),
        Bytes::from_static(b"key:000000123456"),
        Bytes::from_static(b"xxx"),
    ];
    c.bench_function("proxy/route_set", |b| {
        b.iter(|| {
            let Lookup::Found(cmd) = t.lookup(black_box(&args)) else {
                unreachable!()
            };
            let mut slot = 0;
            cmd.for_each_key(&args, |i| slot = key_hash_slot(&args[i]));
            let map = router.load();
            black_box(map.master_of(slot).map(|p| p.addr.len()))
        })
    });
    let reply: Vec<u8> = {
        let mut v = b"*100\r\n".to_vec();
        for i in 0..100 {
            let s = format!("value-{i}");
            v.extend_from_slice(format!("${}\r\n{s}\r\n", s.len()).as_bytes());
        }
        v
    };
    c.bench_function("proxy/frame_len_array_100", |b| {
        b.iter(|| slotway::resp::scan::frame_len(black_box(&reply)).unwrap())
    });
}

criterion_group!(benches, parse, slots, encode, proxy);
criterion_main!(benches);
