//! Harnesses of the fuzz targets that live in this crate (`fuzz/fuzz_targets/`): the sessions as a client drives
//! them, frame by frame, and the MessagePack decoder. `feeds/tests/feeds_fuzz_corpus.rs` runs the committed corpora
//! through them on stable Rust. Whatever the bytes, nothing may panic, and a session keeps answering or closes.

use crate::conn::{Connection, Identity, SessionConfig};
use crate::hub::HubSession;
use crate::native::Session;
use marquee_engine::fanout::Limits;
use marquee_engine::{Encoding, Engine, EngineConfig, Price, RingConfig, Tick};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An engine with a tick topic, a lot topic and alice's private topic, each with a message.
fn engine() -> Arc<Engine> {
    let ring = RingConfig { capacity: 8, slot_bytes: 512 };
    let reliable = RingConfig { capacity: 8, slot_bytes: 1536 };
    let e = Engine::new(EngineConfig { ring, reliable_ring: reliable, epoch: 1 });
    let mut w = e.create_topic("ticks.AAPL").unwrap_or_else(|_| unreachable!("a fresh engine"));
    let _ = w.publish_tick(&Tick { price: Price::from_cents(100), size: 1, ..Default::default() }, 1);
    for (topic, ty) in [("lots.1", "lot_update"), ("users.alice", "bid_result")] {
        if let Ok(mut w) = e.create_topic(topic) {
            let _ = w.publish_event(ty, r#"{"lot":"1"}"#, 2);
        }
    }
    e
}

/// Feeds one frame, answers the ops it started (alternately yes and no), and takes what the session sends.
fn step(s: &mut impl Connection, frame: &[u8], now: Instant, n: &mut u64) {
    s.handle_frame(frame, now);
    while let Some(op) = s.poll_op() {
        let (crate::AppOp::Bid { id, .. } | crate::AppOp::Publish { id, .. } | crate::AppOp::Auth { id, .. }) = op;
        *n += 1;
        let result = if *n % 2 == 0 { Ok(r#"{"ok":true}"#) } else { Err(("refused", "no")) };
        s.handle_op_result(id, result);
    }
    s.handle_timeout(now);
    while s.poll_transmit().is_some() {
        s.sent();
        if s.poll_close().is_some() {
            break;
        }
    }
}

/// The native session: the first byte picks the encoding and whether the client is logged in; the rest is
/// frames separated by `\n`, a second apart on the session's clock.
#[doc(hidden)]
pub fn native_frames(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let encoding = if first & 1 == 0 { Encoding::Json } else { Encoding::Binary };
    let config = SessionConfig { limits: Limits { max_topics: 4, ..Limits::default() }, ..SessionConfig::default() };
    let mut s = Session::new(engine(), encoding, config);
    if first & 2 != 0 {
        s.set_identity(Identity { user: Some("alice".into()), publisher: first & 4 != 0 });
    }
    let (mut now, mut n) = (Instant::now(), 0);
    for frame in rest.split(|&b| b == b'\n') {
        step(&mut s, frame, now, &mut n);
        now += Duration::from_secs(1);
    }
}

/// The SignalR session: the first byte picks the handshake (JSON or MessagePack, a version, stateful reconnect,
/// long polling); the rest is frames separated by `\n` (each may hold several hub messages).
#[doc(hidden)]
pub fn hub_frames(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let mut s = HubSession::new(engine(), SessionConfig::default());
    if first & 1 != 0 {
        s.enable_stateful_reconnect(4096, crate::ReplayBudget::new(8192));
    }
    if first & 2 != 0 {
        s.set_inherent_keep_alive();
    }
    s.set_identity(Identity { user: Some("alice".into()), publisher: false });
    let protocol = if first & 4 != 0 { "messagepack" } else { "json" };
    let handshake = format!("{{\"protocol\":\"{protocol}\",\"version\":{}}}\u{1e}", (first >> 3) % 3);
    let (mut now, mut n) = (Instant::now(), 0);
    step(&mut s, handshake.as_bytes(), now, &mut n);
    for frame in rest.split(|&b| b == b'\n') {
        now += Duration::from_secs(1);
        step(&mut s, frame, now, &mut n);
    }
    let _ = s.resume();
}

/// The MessagePack decoder and its translation of client hub messages.
#[doc(hidden)]
pub fn msgpack(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((len, at))) = crate::msgpack::get_varint(rest) {
        let Some(message) = rest.get(at..at + len) else { break };
        if let Ok((v, _)) = crate::msgpack::decode(message) {
            let _ = crate::msgpack::hub_message_to_json(v);
        }
        rest = &rest[at + len..];
    }
    let _ = crate::msgpack::decode(data);
}
