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

criterion_group!(benches, parse, slots, encode);
criterion_main!(benches);
