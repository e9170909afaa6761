//! Encoding: a tick's bodies at publish, a batch of stored events into one frame, and the frame's handoff.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use marquee_engine::body::{TickEncoder, encode_tick_bin, encode_tick_json};
use marquee_engine::{BatchWriter, Encoding, Framing, Kind, Price, Tick};
use marquee_protocol::HubFraming;
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
    g.bench_function("encode_tick_msgpack", |b| {
        b.iter(|| {
            buf.clear();
            enc.encode_msgpack(&mut buf, black_box(123_456), 1_763_000_000_123_456_789, &t);
        })
    });
    let (mut json, mut bin) = (Vec::new(), Vec::new());
    encode_tick_json(&mut json, "ticks.AAPL", 1, 1, 1, &t);
    encode_tick_bin(&mut bin, "ticks.AAPL", 1, 1, 1, &t);
    g.throughput(Throughput::Elements(64));
    fn batch_64<F: Framing>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        mut w: BatchWriter<F>,
        json: &[u8],
        bin: &[u8],
    ) {
        g.bench_function(format!("batch_64_{name}"), |b| {
            b.iter(|| {
                w.clear();
                for _ in 0..64 {
                    w.push_stored(Kind::Tick, None, 0, black_box(json), black_box(bin));
                }
                w.finish().map(<[u8]>::len)
            })
        });
    }
    batch_64(&mut g, "json", BatchWriter::new(Encoding::Json), &json, &bin);
    batch_64(&mut g, "binary", BatchWriter::new(Encoding::Binary), &json, &bin);
    batch_64(&mut g, "signalr", BatchWriter::with_framing(HubFraming::default()), &json, &bin);
    // The handoff of a finished 64-tick binary batch to the transport, dropped as the socket drops it: the batch's
    // buffer leaving with the frame (`take_frame`, what the code does) against copying the batch into a new
    // exact-size `Bytes` (what it did before the protocol-core restructure).
    let mut w = BatchWriter::new(Encoding::Binary);
    g.bench_function("frame_64_binary_take", |b| {
        b.iter(|| {
            for _ in 0..64 {
                w.push_stored(Kind::Tick, None, 0, black_box(&json), black_box(&bin));
            }
            drop(black_box(w.take_frame()));
        })
    });
    let mut w = BatchWriter::new(Encoding::Binary);
    g.bench_function("frame_64_binary_copy", |b| {
        b.iter(|| {
            w.clear();
            for _ in 0..64 {
                w.push_stored(Kind::Tick, None, 0, black_box(&json), black_box(&bin));
            }
            drop(black_box(w.finish().map(bytes::Bytes::copy_from_slice)));
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
