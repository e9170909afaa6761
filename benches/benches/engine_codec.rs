//! Encoding: a tick's bodies at publish, and a batch of stored events into one frame.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use marquee_engine::codec::{TickEncoder, encode_tick_bin, encode_tick_json};
use marquee_engine::{BatchWriter, Encoding, Kind, Price, Tick};
use std::hint::black_box;

fn codec(c: &mut Criterion) {
    let t = Tick {
        price: Price(187_230_000_000),
        size: 100,
        bid: Some(Price(187_220_000_000)),
        ask: Some(Price(187_240_000_000)),
        bid_size: Some(300),
        ask_size: Some(200),
    };
    let mut g = c.benchmark_group("engine_codec");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(256);
    let enc = TickEncoder::new("ticks.AAPL", 1_763_000_000_000);
    g.bench_function("encode_tick_json", |b| {
        b.iter(|| {
            buf.clear();
            enc.encode_json(&mut buf, black_box(123_456), 1_763_000_000_123_456_789, &t);
        })
    });
    g.bench_function("encode_tick_bin", |b| {
        b.iter(|| {
            buf.clear();
            enc.encode_bin(&mut buf, black_box(123_456), 1_763_000_000_123_456_789, &t);
        })
    });
    let (mut json, mut bin) = (Vec::new(), Vec::new());
    encode_tick_json(&mut json, "ticks.AAPL", 1, 1, 1, &t);
    encode_tick_bin(&mut bin, "ticks.AAPL", 1, 1, 1, &t);
    g.throughput(Throughput::Elements(64));
    for enc in [Encoding::Json, Encoding::Binary, Encoding::SignalR] {
        let mut w = BatchWriter::new(enc);
        g.bench_function(format!("batch_64_{enc:?}").to_lowercase(), |b| {
            b.iter(|| {
                w.clear();
                for _ in 0..64 {
                    w.push_stored(Kind::Tick, None, black_box(&json), black_box(&bin));
                }
                w.finish().map(<[u8]>::len)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
