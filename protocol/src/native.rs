//! The native protocol: one client connection as a state machine with no IO, for WebSocket and QUIC.
//!
//! Ops come in as JSON frames (`subscribe`, `unsubscribe`, `ping`, `bid`, `publish`, `auth`); batches go out as a
//! JSON array of events or binary records ([`Encoding`]). See `docs/PROTOCOL.md`. The adapter drives it through
//! [`Connection`].
//!
//! ```
//! use marquee_engine::{Encoding, Engine, EngineConfig, Tick, Price};
//! use marquee_protocol::{Connection, Session, SessionConfig};
//! use std::time::Instant;
//! let engine = Engine::new(EngineConfig::default());
//! let mut w = engine.create_topic("ticks.AAPL").unwrap();
//! w.publish_tick(&Tick { price: Price(5), size: 1, ..Default::default() }, 0).unwrap();
//! let mut s = Session::new(engine, Encoding::Json, SessionConfig::default());
//! s.handle_frame(br#"{"op":"subscribe","id":1,"topics":["ticks.AAPL"]}"#, Instant::now());
//! let frame = String::from_utf8(s.poll_transmit().unwrap().to_vec()).unwrap();
//! assert!(frame.starts_with(r#"[{"type":"ack","id":1},{"type":"snapshot","recovered":true,"#));
//! s.sent();
//! ```

use crate::conn::{AppOp, CloseReason, Conn, Connection, Identity, SessionConfig, code};
use bytes::Bytes;
use marquee_engine::fanout::{Signal, Subscriber};
use marquee_engine::{BatchWriter, Encoding, Engine, Position};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

#[derive(Deserialize)]
struct Op {
    op: String,
    id: Option<u64>,
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    since: Option<HashMap<String, Position>>,
    #[serde(default)]
    lot: Option<serde_json::Value>,
    #[serde(default)]
    amount: Option<serde_json::Value>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// `subscribe`: send this subscription's ticks as datagrams.
    #[serde(default)]
    datagrams: bool,
}

/// One native connection's protocol state.
pub struct Session {
    c: Conn,
    batch: BatchWriter,
    /// The datagram being built by [`Session::poll_datagram`].
    datagram: BatchWriter,
    /// A transport ping is due ([`Connection::poll_ping`]).
    ping_due: bool,
    /// `auth` ops handed to the adapter and not answered yet, with when they came: a refused token counts as a
    /// bad frame, so a client cannot try tokens without limit.
    auth_pending: Vec<(u64, Instant)>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("sub", &self.c.sub).field("close", &self.c.close).finish()
    }
}

impl Session {
    /// A session that sends `encoding`.
    pub fn new(engine: Arc<Engine>, encoding: Encoding, config: SessionConfig) -> Session {
        Session {
            c: Conn::new(engine, config),
            batch: BatchWriter::new(encoding),
            datagram: BatchWriter::new(encoding),
            ping_due: false,
            auth_pending: Vec::new(),
        }
    }

    /// The connection's identity.
    pub fn identity(&self) -> &Identity {
        &self.c.identity
    }

    /// The subscriptions.
    pub fn subscriber(&self) -> &Subscriber {
        &self.c.sub
    }

    fn handle_subscribe(&mut self, op: Op, now: Instant) {
        let Some(names) = op.topics.filter(|t| !t.is_empty()) else {
            return self.error(op.id, code::BAD_REQUEST, "subscribe needs a non-empty \"topics\" array", now);
        };
        if op.datagrams && !self.c.config.datagrams {
            return self.error(op.id, code::BAD_REQUEST, "\"datagrams\" needs a QUIC connection", now);
        }
        match self.c.subscribe_topics(&names, op.since.as_ref(), op.datagrams) {
            Ok(()) => self.batch.push_ack(op.id.unwrap_or(0)),
            Err((c, msg)) => self.error(op.id, c, &msg, now),
        }
    }

    fn handle_bid(&mut self, op: Op, now: Instant) {
        let Some(user) = self.c.identity.user.clone() else {
            return self.error(op.id, code::UNAUTHORIZED, "bid needs a logged-in connection (access_token)", now);
        };
        // Lot ids and amounts may come as JSON strings or numbers; amounts are parsed exactly downstream.
        let text = |v: &Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let (Some(lot), Some(amount), Some(key)) = (text(&op.lot), text(&op.amount), op.key.clone()) else {
            return self.error(op.id, code::BAD_REQUEST, "bid needs \"lot\", \"amount\" and \"key\"", now);
        };
        self.c.ops.push_back(AppOp::Bid { id: op.id.unwrap_or(0), user, lot, amount, key });
    }

    fn handle_unsubscribe(&mut self, op: Op, now: Instant) {
        let Some(names) = op.topics.filter(|t| !t.is_empty()) else {
            return self.error(op.id, code::BAD_REQUEST, "unsubscribe needs a non-empty \"topics\" array", now);
        };
        for name in &names {
            self.c.sub.unsubscribe(name);
        }
        self.batch.push_ack(op.id.unwrap_or(0));
    }

    fn error(&mut self, id: Option<u64>, code: &str, message: &str, now: Instant) {
        self.batch.push_error(id, code, message);
        self.c.count_error(now);
    }

    /// Starts every stream frame with its length as a u32 big-endian (QUIC's framing), in the same buffer.
    pub fn length_prefixed(mut self) -> Session {
        self.batch.set_length_prefix();
        self
    }

    /// The next datagram, at most `max_bytes` (unless one message alone is larger): ticks of the topics
    /// subscribed with `"datagrams": true`, one batch in the connection's encoding (under JSON, an array of
    /// events, each with its seq, and `gap` events where values were skipped), handed over without a copy;
    /// datagrams are fire-and-forget, so there is no `sent`. Call until it returns `None`.
    pub fn poll_datagram(&mut self, max_bytes: usize) -> Option<Bytes> {
        self.datagram.clear();
        if self.c.close.is_some() {
            return None;
        }
        let d = self.c.sub.drain_datagrams(&mut self.datagram, max_bytes);
        let m = self.c.sub.engine().metrics();
        m.add(&m.gaps, d.gaps);
        if !self.datagram.is_empty() {
            m.add(&m.batches, 1);
            m.add(&m.deliveries, d.messages);
            m.add(&m.bytes_out, self.datagram.n_bytes() as u64 + 1);
        }
        self.datagram.take_frame()
    }
}

impl Connection for Session {
    /// Handles one client frame (text or binary; both carry JSON ops).
    fn handle_frame(&mut self, frame: &[u8], now: Instant) {
        self.c.heard(now);
        if self.c.close.is_some() {
            return;
        }
        if frame.len() > self.c.config.max_frame_bytes {
            let msg = format!("frame of {} bytes exceeds {}", frame.len(), self.c.config.max_frame_bytes);
            return self.error(None, code::FRAME_TOO_LARGE, &msg, now);
        }
        let op: Op = match serde_json::from_slice(frame) {
            Ok(op) => op,
            Err(e) if e.is_data() => return self.error(None, code::BAD_REQUEST, &e.to_string(), now),
            Err(e) => return self.error(None, code::BAD_JSON, &e.to_string(), now),
        };
        match op.op.as_str() {
            "subscribe" => self.handle_subscribe(op, now),
            "unsubscribe" => self.handle_unsubscribe(op, now),
            "ping" => self.batch.push_pong(op.id.unwrap_or(0)),
            "bid" => self.handle_bid(op, now),
            "auth" => {
                let Some(token) = op.access_token else {
                    return self.error(op.id, code::BAD_REQUEST, "auth needs \"access_token\"", now);
                };
                if self.c.identity.user.is_some() {
                    return self.error(op.id, code::FORBIDDEN, "the connection is already logged in", now);
                }
                self.auth_pending.push((op.id.unwrap_or(0), now));
                self.c.ops.push_back(AppOp::Auth { id: op.id.unwrap_or(0), token });
            }
            "publish" => {
                let id = op.id.unwrap_or(0);
                if !self.c.identity.publisher {
                    return self.error(op.id, code::FORBIDDEN, "publish needs a publisher token", now);
                }
                self.c.ops.push_back(AppOp::Publish { id, frame: frame.to_vec() });
            }
            other => {
                let msg = format!("unknown op {other:?}; expected subscribe, unsubscribe, ping, bid, publish or auth");
                self.error(op.id, code::UNKNOWN_OP, &msg, now)
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Bytes> {
        self.c.drain(&mut self.batch);
        self.c.take_frame(&mut self.batch)
    }

    fn sent(&mut self) {
        self.c.sent();
    }

    fn poll_close(&self) -> Option<&CloseReason> {
        self.c.close.as_ref()
    }

    fn close(&mut self, reason: CloseReason) {
        self.c.close.get_or_insert(reason);
    }

    fn poll_op(&mut self) -> Option<AppOp> {
        self.c.ops.pop_front()
    }

    /// Refusals here are the application's verdicts, not bad frames: they do not count toward `max_errors`.
    fn handle_op_result(&mut self, id: u64, result: Result<&str, (&str, &str)>) {
        if let Some(i) = self.auth_pending.iter().position(|&(a, _)| a == id) {
            let (_, at) = self.auth_pending.swap_remove(i);
            if result.is_err() {
                self.c.count_error(at);
            }
        }
        match result {
            Ok(fields) => self.batch.push_ack_with(id, fields),
            Err((code, message)) => self.batch.push_error(Some(id), code, message),
        }
        self.c.sub.signal().schedule();
    }

    fn set_identity(&mut self, identity: Identity) {
        self.c.identity = identity;
    }

    fn signal(&self) -> &Arc<Signal> {
        self.c.sub.signal()
    }

    fn heard(&mut self, now: Instant) {
        self.c.heard(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.c.poll_timeout(false)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.c.handle_timeout(now, false) {
            self.ping_due = true;
        }
    }

    fn binary_frames(&self) -> bool {
        self.batch.encoding() == Encoding::Binary
    }

    fn poll_ping(&mut self) -> bool {
        std::mem::take(&mut self.ping_due) && self.c.close.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_engine::fanout::Limits;
    use marquee_engine::{EngineConfig, Price, RingConfig, Tick};
    use std::time::Duration;

    struct Harness {
        s: Session,
        now: Instant,
    }

    impl Harness {
        fn new(engine: &Arc<Engine>, config: SessionConfig) -> Harness {
            Harness { s: Session::new(engine.clone(), Encoding::Json, config), now: Instant::now() }
        }
        fn send(&mut self, frame: &str) -> Vec<serde_json::Value> {
            self.s.handle_frame(frame.as_bytes(), self.now);
            self.recv()
        }
        fn recv(&mut self) -> Vec<serde_json::Value> {
            let out = match self.s.poll_transmit() {
                Some(f) => serde_json::from_slice::<Vec<serde_json::Value>>(&f).unwrap(),
                None => Vec::new(),
            };
            self.s.sent();
            out
        }
    }

    fn setup() -> (Arc<Engine>, marquee_engine::TopicWriter) {
        let e = Engine::new(EngineConfig {
            epoch: 3,
            ring: RingConfig { capacity: 64, slot_bytes: 512 },
            ..Default::default()
        });
        let mut w = e.create_topic("ticks.AAPL").unwrap();
        w.publish_tick(&Tick { price: Price(1), size: 1, ..Default::default() }, 0).unwrap();
        (e, w)
    }

    /// Refused tokens count as bad frames: a client cannot try tokens without limit.
    #[test]
    fn session_refused_auth_counts_toward_the_error_limit() {
        let (e, _w) = setup();
        let mut h = Harness::new(&e, SessionConfig { max_errors: 2, ..Default::default() });
        for id in 1..=3 {
            assert!(h.send(&format!(r#"{{"op":"auth","id":{id},"access_token":"wrong"}}"#)).is_empty());
            assert!(matches!(h.s.poll_op(), Some(AppOp::Auth { .. })));
            h.s.handle_op_result(id, Err(("invalid_token", "bad signature")));
            let ev = h.recv();
            assert_eq!(ev[0]["code"], "invalid_token");
        }
        assert_eq!(h.s.poll_close().map(CloseReason::code), Some(1008));
    }

    #[test]
    fn session_a_topic_named_twice_counts_once_against_the_limit() {
        let (e, _w) = setup();
        e.create_topic("ticks.MSFT").unwrap();
        let limits = marquee_engine::Limits { max_topics: 2, ..Default::default() };
        let mut h = Harness::new(&e, SessionConfig { limits, ..Default::default() });
        let ev = h.send(r#"{"op":"subscribe","id":1,"topics":["ticks.AAPL","ticks.AAPL","ticks.AAPL"]}"#);
        assert_eq!(ev[0], serde_json::json!({"type":"ack","id":1}));
        assert_eq!(ev.iter().filter(|m| m["type"] == "snapshot").count(), 1, "one snapshot for one topic: {ev:?}");
        let ev = h.send(r#"{"op":"subscribe","id":2,"topics":["ticks.MSFT","ticks.MSFT","ticks.AAPL"]}"#);
        assert_eq!(ev[0], serde_json::json!({"type":"ack","id":2}));
        e.create_topic("ticks.IBM").unwrap();
        let ev = h.send(r#"{"op":"subscribe","id":3,"topics":["ticks.IBM"]}"#);
        assert_eq!(ev[0]["code"], code::TOO_MANY_TOPICS);
    }

    #[test]
    fn session_bad_input_gets_stable_codes_and_stays_usable() {
        let (e, _w) = setup();
        let mut h = Harness::new(&e, SessionConfig { max_frame_bytes: 200, ..Default::default() });
        let cases = [
            ("not json", code::BAD_JSON),
            ("{\"op\":\"subscribe\",\"id\":1", code::BAD_JSON),
            ("[1,2]", code::BAD_REQUEST),
            ("{\"id\":1}", code::BAD_REQUEST),
            ("{\"op\":\"subscribe\",\"id\":\"x\",\"topics\":[\"ticks.AAPL\"]}", code::BAD_REQUEST),
            ("{\"op\":\"fly\",\"id\":2}", code::UNKNOWN_OP),
            ("{\"op\":\"subscribe\",\"id\":3,\"topics\":[]}", code::BAD_REQUEST),
            ("{\"op\":\"subscribe\",\"id\":4,\"topics\":[\"ticks.NOPE\"]}", code::UNKNOWN_TOPIC),
            ("{\"op\":\"subscribe\",\"id\":5,\"topics\":[\"bad topic!\"]}", code::INVALID_TOPIC),
        ];
        for (frame, want) in cases {
            let ev = h.send(frame);
            assert_eq!(ev.len(), 1, "{frame}");
            assert_eq!(ev[0]["type"], "error", "{frame}");
            assert_eq!(ev[0]["code"], want, "{frame}");
        }
        let big = format!("{{\"op\":\"ping\",\"id\":1,\"pad\":\"{}\"}}", "x".repeat(300));
        assert_eq!(h.send(&big)[0]["code"], code::FRAME_TOO_LARGE);
        let ev = h.send("{\"op\":\"subscribe\",\"id\":9,\"topics\":[\"ticks.AAPL\"]}");
        assert_eq!(ev[0], serde_json::json!({"type":"ack","id":9}));
        assert_eq!(ev[1]["type"], "snapshot");
        assert_eq!(h.send("{\"op\":\"ping\",\"id\":10}"), [serde_json::json!({"type":"pong","id":10})]);
        assert!(h.s.poll_close().is_none());
    }

    #[test]
    fn session_sustained_abuse_closes_with_1008() {
        let (e, _w) = setup();
        let mut h = Harness::new(&e, SessionConfig { max_errors: 3, ..Default::default() });
        for _ in 0..3 {
            h.send("garbage");
        }
        assert!(h.s.poll_close().is_none());
        h.now += Duration::from_secs(11);
        for _ in 0..3 {
            h.send("garbage");
        }
        assert!(h.s.poll_close().is_none(), "the window restarted");
        h.send("garbage");
        assert_eq!(h.s.poll_close().map(CloseReason::code), Some(1008));
    }

    #[test]
    fn session_unknown_topic_subscribes_nothing() {
        let (e, _w) = setup();
        let mut h = Harness::new(&e, SessionConfig::default());
        let ev = h.send("{\"op\":\"subscribe\",\"id\":1,\"topics\":[\"ticks.AAPL\",\"ticks.ZZZ\"]}");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["code"], code::UNKNOWN_TOPIC);
        assert_eq!(h.s.subscriber().n_topics(), 0);
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Any bytes from a client (chunked into frames any way) get answers or errors, never a panic, and every
        /// frame the session produces is a valid JSON array.
        #[test]
        fn session_survives_arbitrary_frames(frames in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                proptest::string::string_regex(r#"\{"op":"(subscribe|unsubscribe|ping|x)","id":[0-9]{1,3},"topics":\["ticks\.(AAPL|Z)"\](,"since":\{"ticks\.AAPL":\{"epoch":[0-9],"seq":[0-9]\}\})?\}"#)
                    .unwrap()
                    .prop_map(String::into_bytes),
            ],
            1..20,
        )) {
            let (e, _w) = setup();
            let mut h = Harness::new(&e, SessionConfig::default());
            for f in frames {
                let f: Vec<u8> = f;
                h.s.handle_frame(&f, h.now);
                h.recv();
            }
        }
    }

    #[test]
    fn session_private_topics_and_app_ops_follow_the_identity() {
        let (e, _w) = setup();
        let _alice = e.create_topic("users.alice").unwrap();
        let mut anon = Harness::new(&e, SessionConfig::default());
        let ev = anon.send(r#"{"op":"subscribe","id":1,"topics":["users.alice"]}"#);
        assert_eq!(ev[0]["code"], code::FORBIDDEN);
        let ev = anon.send(r#"{"op":"bid","id":2,"lot":"1","amount":"5","key":"k"}"#);
        assert_eq!(ev[0]["code"], code::UNAUTHORIZED);
        assert!(anon.s.poll_op().is_none());

        let mut bob = Harness::new(&e, SessionConfig::default());
        bob.s.set_identity(Identity { user: Some("bob".into()), publisher: false });
        assert_eq!(bob.send(r#"{"op":"subscribe","id":1,"topics":["users.alice"]}"#)[0]["code"], code::FORBIDDEN);
        assert_eq!(bob.send(r#"{"op":"publish","id":3,"topic":"x","type":"y"}"#)[0]["code"], code::FORBIDDEN);
        assert!(bob.send(r#"{"op":"bid","id":4,"lot":7,"amount":105.5,"key":"k1"}"#).is_empty());
        let want = AppOp::Bid { id: 4, user: "bob".into(), lot: "7".into(), amount: "105.5".into(), key: "k1".into() };
        assert_eq!(bob.s.poll_op(), Some(want));
        bob.s.handle_op_result(4, Ok(r#"{"bid_id":"7-1"}"#));
        bob.s.handle_op_result(5, Err(("bid_too_low", "too low")));
        let ev = bob.recv();
        assert_eq!(ev[0], serde_json::json!({"type":"ack","id":4,"bid_id":"7-1"}));
        assert_eq!((ev[1]["id"].as_u64(), ev[1]["code"].as_str()), (Some(5), Some("bid_too_low")));
        assert_eq!(bob.send(r#"{"op":"bid","id":6,"lot":"7"}"#)[0]["code"], code::BAD_REQUEST);

        let mut anon = Harness::new(&e, SessionConfig::default());
        assert_eq!(anon.send(r#"{"op":"auth","id":7}"#)[0]["code"], code::BAD_REQUEST);
        assert!(anon.send(r#"{"op":"auth","id":8,"access_token":"t"}"#).is_empty());
        assert_eq!(anon.s.poll_op(), Some(AppOp::Auth { id: 8, token: "t".into() }));
        assert_eq!(bob.send(r#"{"op":"auth","id":9,"access_token":"t"}"#)[0]["code"], code::FORBIDDEN);
        let mut alice = Harness::new(&e, SessionConfig::default());
        alice.s.set_identity(Identity { user: Some("alice".into()), publisher: false });
        assert_eq!(alice.send(r#"{"op":"subscribe","id":1,"topics":["users.alice"]}"#)[0]["type"], "ack");

        let mut publisher = Harness::new(&e, SessionConfig::default());
        publisher.s.set_identity(Identity { user: Some("svc".into()), publisher: true });
        let frame = r#"{"op":"publish","id":9,"topic":"users.alice","type":"x","data":{}}"#;
        assert!(publisher.send(frame).is_empty());
        assert_eq!(publisher.s.poll_op(), Some(AppOp::Publish { id: 9, frame: frame.as_bytes().to_vec() }));
    }

    #[test]
    fn session_datagram_ticks_leave_the_stream_and_pack_into_datagrams() {
        let (e, mut w) = setup();
        let mut lot = e.create_topic("lots.1").unwrap();
        let sub = r#"{"op":"subscribe","id":1,"topics":["ticks.AAPL","lots.1"],"datagrams":true}"#;
        let mut ws = Harness::new(&e, SessionConfig::default());
        assert_eq!(ws.send(sub)[0]["code"], code::BAD_REQUEST, "no datagrams without QUIC");
        let mut h = Harness::new(&e, SessionConfig { datagrams: true, ..Default::default() });
        assert_eq!(h.send(sub), [serde_json::json!({"type":"ack","id":1})], "ticks left the stream");
        lot.publish_event("bid", r#"{"amount":"5"}"#, 0).unwrap();
        assert_eq!(h.recv()[0]["type"], "bid", "reliable topics never go as datagrams");
        let dg: Vec<serde_json::Value> = serde_json::from_slice(&h.s.poll_datagram(1200).unwrap()).unwrap();
        assert_eq!((dg.len(), dg[0]["type"].as_str()), (1, Some("snapshot")));
        assert!(h.s.poll_datagram(1200).is_none());
        for i in 2..=40 {
            w.publish_tick(&Tick { price: Price(i), size: 1, ..Default::default() }, 0).unwrap();
        }
        let mut seqs = Vec::new();
        while let Some(d) = h.s.poll_datagram(600) {
            assert!(d.len() <= 600, "{} bytes", d.len());
            let evs: Vec<serde_json::Value> = serde_json::from_slice(&d).unwrap();
            assert!(evs.len() > 1, "several ticks per datagram");
            seqs.extend(evs.iter().map(|e| e["seq"].as_u64().unwrap()));
        }
        assert_eq!(seqs, (2..=40).collect::<Vec<_>>());
        assert!(h.recv().is_empty(), "nothing on the stream");
        // Back to the stream with a plain subscribe.
        h.send(r#"{"op":"subscribe","id":2,"topics":["ticks.AAPL"]}"#);
        w.publish_tick(&Tick { price: Price(41), size: 1, ..Default::default() }, 0).unwrap();
        assert_eq!(h.recv()[0]["seq"], 41);
        assert!(h.s.poll_datagram(1200).is_none());
    }

    #[test]
    fn session_datagram_subscriber_far_behind_skips_to_the_newest() {
        let (e, mut w) = setup();
        let limits = Limits { max_pending_messages: 4, ..Limits::default() };
        let mut h = Harness::new(&e, SessionConfig { datagrams: true, limits, ..Default::default() });
        h.send(r#"{"op":"subscribe","id":1,"topics":["ticks.AAPL"],"datagrams":true}"#);
        while h.s.poll_datagram(1200).is_some() {}
        for i in 2..=30 {
            w.publish_tick(&Tick { price: Price(i), size: 1, ..Default::default() }, 0).unwrap();
        }
        let evs: Vec<serde_json::Value> = serde_json::from_slice(&h.s.poll_datagram(1200).unwrap()).unwrap();
        assert_eq!(evs[0], serde_json::json!({"type":"gap","topic":"ticks.AAPL","from":2,"to":29}));
        assert_eq!(evs[1]["seq"], 30);
        assert!(h.s.poll_datagram(1200).is_none());
    }

    #[test]
    fn session_resume_with_since_and_unsubscribe() {
        let (e, mut w) = setup();
        for i in 2..=5 {
            w.publish_tick(&Tick { price: Price(i), size: 1, ..Default::default() }, 0).unwrap();
        }
        let mut h = Harness::new(&e, SessionConfig::default());
        let ev =
            h.send(r#"{"op":"subscribe","id":1,"topics":["ticks.AAPL"],"since":{"ticks.AAPL":{"epoch":3,"seq":2}}}"#);
        let seqs: Vec<_> = ev[1..].iter().map(|e| (e["type"].as_str().unwrap(), e["seq"].as_u64().unwrap())).collect();
        assert_eq!(seqs, [("tick", 3), ("tick", 4), ("tick", 5)]);
        assert_eq!(h.send(r#"{"op":"unsubscribe","id":2,"topics":["ticks.AAPL"]}"#)[0]["type"], "ack");
        w.publish_tick(&Tick { price: Price(6), size: 1, ..Default::default() }, 0).unwrap();
        assert!(h.recv().is_empty());
    }

    #[test]
    fn session_timers_ping_and_idle_close_on_simulated_time() {
        let (e, _w) = setup();
        let timers = crate::Timers {
            keep_alive: Some(Duration::from_secs(15)),
            idle_timeout: Some(Duration::from_secs(40)),
            handshake_timeout: None,
        };
        let mut s = Session::new(e, Encoding::Json, SessionConfig { timers, ..Default::default() });
        assert_eq!(s.poll_timeout(), None, "not armed before a time is passed in");
        let t0 = Instant::now();
        s.heard(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(15)));
        s.handle_timeout(t0 + Duration::from_secs(14));
        assert!(!s.poll_ping(), "nothing due early");
        s.handle_timeout(t0 + Duration::from_secs(15));
        assert!(s.poll_ping() && !s.poll_ping(), "one ping per keep-alive");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        // A frame at 35 s postpones the idle timeout to 75 s.
        s.handle_frame(br#"{"op":"ping","id":1}"#, t0 + Duration::from_secs(35));
        s.handle_timeout(t0 + Duration::from_secs(45));
        assert!(s.poll_close().is_none());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        s.handle_timeout(t0 + Duration::from_secs(75));
        assert_eq!(s.poll_close(), Some(&CloseReason::IdleTimeout));
        assert_eq!(s.poll_timeout(), None, "no timers once closing");
        assert!(!s.poll_ping());
    }

    #[test]
    fn session_without_timers_never_times_out() {
        let (e, _w) = setup();
        let mut s = Session::new(e, Encoding::Json, SessionConfig::default());
        let t0 = Instant::now();
        s.heard(t0);
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t0 + Duration::from_secs(1_000_000));
        assert!(s.poll_close().is_none() && !s.poll_ping());
    }
}
