//! Ring publish and read: the cost of one publish (encode both formats, write the slot, notify) and of one read
//! (copy a stored message into a batch).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use marquee_engine::{BatchWriter, Encoding, Engine, EngineConfig, Framing, Limits, Price, Subscriber, Tick};
use marquee_protocol::HubFraming;
use std::hint::black_box;

fn tick(i: i64) -> Tick {
    Tick {
        price: Price(187_230_000_000 + i % 100 * 10_000_000),
        size: 100,
        bid: Some(Price(187_220_000_000)),
        ask: Some(Price(187_240_000_000)),
        bid_size: Some(300),
        ask_size: Some(200),
    }
}

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_ring");
    g.throughput(Throughput::Elements(1));
    for n_subs in [0usize, 1] {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        let mut subs: Vec<Subscriber> =
            (0..n_subs).map(|_| Subscriber::new(engine.clone(), Limits::default())).collect();
        for s in &mut subs {
            s.subscribe(engine.topic("ticks.AAPL").unwrap(), None).unwrap();
        }
        let mut batch = BatchWriter::new(Encoding::Json);
        let mut i = 0i64;
        g.bench_function(format!("publish_{n_subs}_subscriber"), |b| {
            b.iter(|| {
                i += 1;
                w.publish_tick(black_box(&tick(i)), i).unwrap();
                // Drain now and then so the subscriber's wake flag is cleared as in real use.
                if i % 64 == 0 {
                    for s in &mut subs {
                        s.drain(&mut batch).unwrap();
                        batch.clear();
                    }
                }
            })
        });
    }
    fn read_64<F: Framing>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        mut batch: BatchWriter<F>,
    ) {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        let mut sub = Subscriber::new(engine.clone(), Limits::default());
        sub.subscribe(engine.topic("ticks.AAPL").unwrap(), None).unwrap();
        sub.drain(&mut batch).unwrap();
        batch.clear();
        g.throughput(Throughput::Elements(64));
        g.bench_function(format!("read_64_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    for i in 0..64 {
                        w.publish_tick(&tick(i), i).unwrap();
                    }
                    let t0 = std::time::Instant::now();
                    let d = sub.drain(&mut batch).unwrap();
                    total += t0.elapsed();
                    assert_eq!(d.messages, 64);
                    batch.clear();
                }
                total
            })
        });
    }
    read_64(&mut g, "json", BatchWriter::new(Encoding::Json));
    read_64(&mut g, "binary", BatchWriter::new(Encoding::Binary));
    read_64(&mut g, "signalr", BatchWriter::with_framing(HubFraming::default()));
    let mut msgpack = HubFraming::default();
    msgpack.set_msgpack(true);
    read_64(&mut g, "signalr_msgpack", BatchWriter::with_framing(msgpack));
    g.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
