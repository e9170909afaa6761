//! In-process fan-out, no sockets: one published message made ready for N subscribers' next writes (publish,
//! wake flags, and every subscriber draining it into its own batch), all on one core. A delivery is one message
//! in one subscriber's batch.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use marquee_engine::{BatchWriter, Encoding, Engine, EngineConfig, Limits, Price, Subscriber, Tick};

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_fanout");
    for n_subs in [1usize, 100, 10_000] {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        let topic = engine.topic("ticks.AAPL").unwrap();
        let mut subs: Vec<(Subscriber, BatchWriter)> = (0..n_subs)
            .map(|_| {
                let mut s = Subscriber::new(engine.clone(), Limits::default());
                s.subscribe(topic.clone(), None).unwrap();
                let mut b = BatchWriter::new(Encoding::Json);
                s.drain(&mut b).unwrap();
                b.clear();
                (s, b)
            })
            .collect();
        let mut i = 0i64;
        g.throughput(Throughput::Elements(n_subs as u64));
        g.bench_function(BenchmarkId::new("one_to_many_json", n_subs), |b| {
            b.iter(|| {
                i += 1;
                w.publish_tick(&Tick { price: Price(i), size: 1, ..Default::default() }, i).unwrap();
                let mut delivered = 0;
                for (s, batch) in &mut subs {
                    delivered += s.drain(batch).unwrap().messages;
                    batch.clear();
                }
                assert_eq!(delivered, n_subs as u64);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
