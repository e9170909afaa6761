//! Loom models of the wake-up protocol on the production paths, called as the gateway calls them: a real
//! [`TopicWriter::publish_tick`](crate::TopicWriter::publish_tick) (slot, head store, SC fence, `notify` through the
//! writer's cached subscriber list) races a real [`Subscriber::subscribe`] and [`Subscriber::drain`] (empty
//! drain, clear, SC fence, second look) into a real [`BatchWriter`]. Nothing here restates the protocol, so a
//! change to any of those functions is checked by these models.
//!
//! Every model ends the same way. Once the publisher's thread is done, a message the subscriber has not delivered
//! yet must be owed to it by a scheduled signal (else its connection would sleep with the message in the ring: a
//! lost wake-up). The model then drains while the signal is scheduled, as the connection task does, and checks
//! that the subscriber delivered every message from where it started up to the head, once each and in order.
//!
//! Rings have more slots than a model publishes, so no message is overwritten and the only race is the wake-up
//! (the seqlock has its own model, `ring::loom_tests`). Left out of the models, and not swapped for loom's types
//! in `sync.rs`: the registry's `RwLock` (topics are created and looked up before the threads start; the hot path
//! holds `Arc<Topic>`) and the `AtomicWaker` in [`crate::Signal`] (the models check the flag whose rising edge
//! calls `wake`).
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p marquee-engine --lib --release -- loom`

use crate::sync::Arc;
use crate::{BatchWriter, Encoding, Engine, EngineConfig, Limits, Position, Price, RingConfig, Subscriber, Tick};
use loom::thread;

const TOPIC: &str = "ticks.A";
const EPOCH: u64 = 5;

fn engine() -> Arc<Engine> {
    let ring = RingConfig { capacity: 4, slot_bytes: 384 };
    Engine::new(EngineConfig { epoch: EPOCH, ring, reliable_ring: ring })
}

fn tick(p: i64) -> Tick {
    Tick { price: Price(p), size: 1, ..Tick::default() }
}

/// One delivered message: its seq, and whether it came as the subscription's snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Got {
    seq: u64,
    snapshot: bool,
}

/// One real drain into a JSON batch; what it delivered, in batch order.
fn drain(sub: &mut Subscriber) -> Vec<Got> {
    let mut batch = BatchWriter::new(Encoding::Json);
    sub.drain(&mut batch).expect("nothing is overwritten, so nothing is lapped");
    let Some(bytes) = batch.finish() else { return Vec::new() };
    let events: serde_json::Value = serde_json::from_slice(bytes).expect("a batch is a JSON array");
    let events = events.as_array().expect("a batch is a JSON array");
    events
        .iter()
        .map(|e| {
            let ty = e["type"].as_str().expect("every event has a type");
            assert!(ty == "tick" || ty == "snapshot", "unexpected {e}: nothing was skipped");
            Got { seq: e["seq"].as_u64().expect("every message has a seq"), snapshot: ty == "snapshot" }
        })
        .collect()
}

/// What the connection task does when woken: drains, and drains once more while the signal stays scheduled.
fn drain_as_woken(sub: &mut Subscriber, got: &mut Vec<Got>) {
    got.extend(drain(sub));
    if sub.signal().is_scheduled() {
        got.extend(drain(sub));
    }
}

/// Runs after the publisher's thread joined, with `head` the topic's final head and `first` the seq the
/// subscription starts at (`None`: a snapshot, whose seq the race decides).
fn assert_delivered_all(sub: &mut Subscriber, mut got: Vec<Got>, head: u64, first: Option<u64>) {
    let last = got.last().map_or(0, |g| g.seq);
    assert!(
        last == head || sub.signal().is_scheduled(),
        "lost wake-up: delivered up to seq {last} of {head} and the signal is clear ({got:?})"
    );
    // Each drain either delivers something or clears the flag, so this ends within head + 1 drains.
    for _ in 0..=head {
        if !sub.signal().is_scheduled() {
            break;
        }
        got.extend(drain(sub));
    }
    assert!(!sub.signal().is_scheduled(), "drains that find nothing clear the signal ({got:?})");
    let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
    assert!(got.iter().skip(1).all(|g| !g.snapshot), "only the first message may be a snapshot ({got:?})");
    match first {
        Some(first) => {
            assert!(got.first().is_none_or(|g| !g.snapshot), "a replay sends no snapshot ({got:?})");
            assert_eq!(seqs, (first..=head).collect::<Vec<_>>(), "every message once, in order ({got:?})");
        }
        None => {
            let from = match got.first() {
                Some(g) if g.snapshot => g.seq,
                _ => 1,
            };
            assert_eq!(seqs, (from..=head).collect::<Vec<_>>(), "snapshot, then every later message ({got:?})");
        }
    }
}

/// A subscriber whose last drain came up empty (flag clear) races two publishes: each publish is delivered by the
/// racing drains or leaves the signal scheduled for the next one.
#[test]
fn loom_publish_wakes_a_drained_subscriber() {
    loom::model(|| {
        let engine = engine();
        let mut writer = engine.create_topic(TOPIC).unwrap();
        let topic = engine.topic(TOPIC).unwrap();
        let mut sub = Subscriber::new(engine.clone(), Limits::default());
        sub.subscribe(topic.clone(), None).unwrap();
        assert_eq!(drain(&mut sub), [], "an empty topic has no snapshot");
        assert!(!sub.signal().is_scheduled());

        let publisher = thread::spawn(move || {
            for p in 1..=2 {
                writer.publish_tick(&tick(p), 0).unwrap();
            }
        });
        let mut got = Vec::new();
        drain_as_woken(&mut sub, &mut got);
        publisher.join().unwrap();
        assert_delivered_all(&mut sub, got, topic.head(), Some(1));
    });
}

/// A new subscription (snapshot) races a publish: the publish lands in the snapshot, or after it and is
/// delivered live; it never falls between the head the subscription read and its registration with the writer.
#[test]
fn loom_subscribe_snapshot_races_publish() {
    subscribe_races_publish(None, None);
}

/// A resuming subscription (since seq 0: a replay from seq 1, already published) races the publish of seq 2: the
/// replay and the live stream together hold every message after the resume point, once each.
#[test]
fn loom_subscribe_replay_races_publish() {
    subscribe_races_publish(Some(Position { epoch: EPOCH, seq: 0 }), Some(1));
}

/// Seq 1 is published; then `subscribe(since)` and drains race the publishing of seqs 2 and 3; every message from
/// `first` (the start the subscription must deliver from, `None` for a snapshot) to the head arrives once, in order.
fn subscribe_races_publish(since: Option<Position>, first: Option<u64>) {
    loom::model(move || {
        let engine = engine();
        let mut writer = engine.create_topic(TOPIC).unwrap();
        writer.publish_tick(&tick(1), 0).unwrap();
        let topic = engine.topic(TOPIC).unwrap();

        let publisher = thread::spawn(move || {
            for p in 2..=3 {
                writer.publish_tick(&tick(p), 0).unwrap();
            }
        });
        let mut sub = Subscriber::new(engine.clone(), Limits::default());
        sub.subscribe(topic.clone(), since).unwrap();
        let mut got = Vec::new();
        drain_as_woken(&mut sub, &mut got);
        publisher.join().unwrap();
        assert_delivered_all(&mut sub, got, topic.head(), first);
    });
}
