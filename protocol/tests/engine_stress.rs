//! One publisher, many reader threads, a small ring that laps them: every reader must see each topic's messages
//! in increasing seq order, each exactly once, with bodies intact, and gaps only where it was lapped.

use marquee_engine::{BatchWriter, Encoding, Engine, EngineConfig, Limits, Price, RingConfig, Subscriber, Tick};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

#[test]
fn engine_stress_one_publisher_many_readers() {
    const N_TOPICS: usize = 4;
    const N_READERS: usize = 6;
    const N_MESSAGES: i64 = 40_000;
    let engine = Engine::new(EngineConfig {
        epoch: 1,
        ring: RingConfig { capacity: 64, slot_bytes: 512 },
        ..Default::default()
    });
    let mut writers: Vec<_> = (0..N_TOPICS).map(|i| engine.create_topic(&format!("ticks.S{i}")).unwrap()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..N_READERS)
        .map(|r| {
            let engine = engine.clone();
            let done = done.clone();
            thread::spawn(move || {
                let limits = Limits { max_batch_messages: 7 + r, ..Limits::default() };
                let mut sub = Subscriber::new(engine.clone(), limits);
                for i in 0..N_TOPICS {
                    sub.subscribe(engine.topic(&format!("ticks.S{i}")).unwrap(), None).unwrap();
                }
                let mut last = [0u64; N_TOPICS];
                let mut batch = BatchWriter::new(if r % 2 == 0 { Encoding::Json } else { Encoding::Binary });
                let (mut n_msgs, mut n_gaps) = (0u64, 0u64);
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let d = sub.drain(&mut batch).unwrap();
                    let enc = batch.encoding();
                    if let Some(frame) = batch.finish() {
                        check_frame(frame, enc, &mut last, &mut n_gaps);
                        n_msgs += d.messages;
                    }
                    batch.clear();
                    if finished && !d.more {
                        break;
                    }
                }
                assert!(last.iter().all(|&s| s == N_MESSAGES as u64), "reader {r} ended at {last:?}");
                (n_msgs, n_gaps)
            })
        })
        .collect();
    for i in 1..=N_MESSAGES {
        for w in &mut writers {
            // Price and size derive from seq, so a torn body shows up as a mismatch.
            w.publish_tick(&Tick { price: Price::from_parts(i, 250_000_000), size: i as u64, ..Default::default() }, i)
                .unwrap();
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        let (msgs, gaps) = r.join().unwrap();
        assert!(msgs > 0);
        eprintln!("reader: {msgs} messages, {gaps} gaps");
    }
}

fn check_frame(frame: &[u8], enc: Encoding, last: &mut [u64], n_gaps: &mut u64) {
    fn idx(topic: &str) -> usize {
        topic.strip_prefix("ticks.S").unwrap().parse().unwrap()
    }
    fn seen(last: &mut [u64], topic: &str, kind: &str, seq: u64, price: i64, size: u64, ts: i64) {
        let t = idx(topic);
        assert!(seq > last[t], "{topic}: seq {seq} after {} ({kind})", last[t]);
        if kind == "tick" {
            assert_eq!(seq, last[t] + 1, "{topic}: a tick must follow the previous seq or a gap");
        }
        assert_eq!(
            (price, size, ts),
            (Price::from_parts(seq as i64, 250_000_000).units(), seq, seq as i64),
            "torn message {topic} {seq}"
        );
        last[t] = seq;
    }
    match enc {
        Encoding::Json => {
            let v: Vec<serde_json::Value> = serde_json::from_slice(frame).expect("batch is valid JSON");
            for e in v {
                let topic = e["topic"].as_str().unwrap();
                if e["type"] == "gap" {
                    let t = idx(topic);
                    assert_eq!(e["from"].as_u64().unwrap(), last[t] + 1);
                    last[t] = e["to"].as_u64().unwrap();
                    *n_gaps += 1;
                    continue;
                }
                let price: Price = e["price"].to_string().parse().unwrap();
                let (seq, size, ts) =
                    (e["seq"].as_u64().unwrap(), e["size"].as_u64().unwrap(), e["ts"].as_i64().unwrap());
                seen(last, topic, e["type"].as_str().unwrap(), seq, price.units(), size, ts);
            }
        }
        Encoding::Binary => {
            use marquee_protocol::decode::{BinRecord, decode_bin_batch, record};
            for rec in decode_bin_batch(frame).expect("batch decodes") {
                match rec {
                    BinRecord::Tick(t) => {
                        let kind = if t.record_type == record::SNAPSHOT { "snapshot" } else { "tick" };
                        seen(last, &t.topic, kind, t.seq, t.tick.price.units(), t.tick.size, t.ts)
                    }
                    BinRecord::Gap { topic, from, to } => {
                        let i = idx(&topic);
                        assert_eq!(from, last[i] + 1);
                        last[i] = to;
                        *n_gaps += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
}
