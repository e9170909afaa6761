//! The protocol core: one client connection as a state machine with no IO.
//!
//! Call order (the transport adapter's loop):
//! 1. [`Session::handle_frame`] for every frame the client sends;
//! 2. when [`Session::signal`] is ready or after a frame, [`Session::poll_transmit`] returns the next batch (one
//!    frame: acks, errors, snapshots and messages together); after writing it, call [`Session::sent`];
//! 3. [`Session::poll_close`] says whether the connection must close and with which code.
//!
//! Time comes in as arguments, so tests run on simulated time. WebSocket, and later QUIC and SignalR, only move
//! bytes in and out of this type.
//!
//! ```
//! use marquee_engine::{Encoding, Engine, EngineConfig, Session, SessionConfig, Tick, Price};
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

use crate::codec::{BatchWriter, Encoding};
use crate::fanout::{Limits, Signal, SlowConsumer, Start, Subscriber};
use crate::sync::Arc;
use crate::topic::{Engine, Position, valid_topic_name};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

mod signalr;

/// Per-connection protocol settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Fan-out bounds.
    pub limits: Limits,
    /// Largest client frame handled; larger ones get `frame_too_large`.
    pub max_frame_bytes: usize,
    /// Errors tolerated within `error_window` before the connection is closed with 1008.
    pub max_errors: u32,
    /// See `max_errors`.
    pub error_window: Duration,
    /// The transport can carry datagrams (QUIC): `subscribe` may ask for `"datagrams": true`, and the adapter
    /// calls [`Session::poll_datagram`]. Off, such a subscribe is refused with `bad_request`.
    pub datagrams: bool,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            limits: Limits::default(),
            max_frame_bytes: 64 * 1024,
            max_errors: 20,
            error_window: Duration::from_secs(10),
            datagrams: false,
        }
    }
}

/// Why the server closes a connection. Codes 1000-2999 follow RFC 6455; 4000-4999 are Marquee's. A client
/// reconnects (with `since`) after every code but [`CloseReason::PolicyViolation`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1008: sustained bad input.
    PolicyViolation(String),
    /// 4008: a reliable topic lapped this connection.
    SlowConsumer(SlowConsumer),
    /// 4000: nothing received from the client for too long.
    IdleTimeout,
    /// 1000: the client said it is leaving (a SignalR Close message).
    Normal,
    /// 1002: SignalR: the handshake was refused (the reason went out as the handshake's `error`).
    HandshakeFailed(String),
    /// 1002: SignalR: a hub message that is not valid; the reason starts with a stable code.
    ProtocolError(String),
    /// 1009: SignalR: a hub message over the size limit.
    MessageTooLarge(String),
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::GoingAway => 1001,
            CloseReason::PolicyViolation(_) => 1008,
            CloseReason::SlowConsumer(_) => 4008,
            CloseReason::IdleTimeout => 4000,
            CloseReason::Normal => 1000,
            CloseReason::HandshakeFailed(_) | CloseReason::ProtocolError(_) => 1002,
            CloseReason::MessageTooLarge(_) => 1009,
        }
    }

    /// The close reason text (at most 123 bytes, as WebSocket allows).
    pub fn reason(&self) -> String {
        let mut s = self.to_string();
        while s.len() > 123 {
            s.pop();
        }
        s
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::GoingAway => f.write_str("server shutting down"),
            CloseReason::PolicyViolation(why) => write!(f, "policy violation: {why}"),
            CloseReason::SlowConsumer(s) => s.fmt(f),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::Normal => f.write_str("closed by the client"),
            CloseReason::HandshakeFailed(why) => write!(f, "handshake failed: {why}"),
            CloseReason::ProtocolError(why) => write!(f, "protocol error: {why}"),
            CloseReason::MessageTooLarge(why) => write!(f, "message too large: {why}"),
        }
    }
}

/// Stable error codes sent in `error` events.
pub mod code {
    /// The frame is not JSON.
    pub const BAD_JSON: &str = "bad_json";
    /// JSON, but not a valid op (missing or mistyped field).
    pub const BAD_REQUEST: &str = "bad_request";
    /// `op` names no known operation.
    pub const UNKNOWN_OP: &str = "unknown_op";
    /// A topic that does not exist.
    pub const UNKNOWN_TOPIC: &str = "unknown_topic";
    /// A name that can never be a topic.
    pub const INVALID_TOPIC: &str = "invalid_topic";
    /// Over the per-connection topic limit.
    pub const TOO_MANY_TOPICS: &str = "too_many_topics";
    /// Over the frame size limit.
    pub const FRAME_TOO_LARGE: &str = "frame_too_large";
    /// The op needs a logged-in user (a token on the connection).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The identity may not do this (another user's private topic; `publish` without a publisher token).
    pub const FORBIDDEN: &str = "forbidden";
    /// SignalR: no hub method of that name.
    pub const UNKNOWN_METHOD: &str = "unknown_method";
    /// SignalR: more invocations in flight than the connection may have.
    pub const TOO_MANY_INVOCATIONS: &str = "too_many_invocations";
}

/// The prefix of private topics: `users.<name>` is readable only by the connection of user `<name>`.
pub const PRIVATE_PREFIX: &str = "users.";

/// Who is on the other end of a connection, as the transport authenticated it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user name; `None` for an anonymous connection (ticks and lots only).
    pub user: Option<String>,
    /// May publish events (`publish` op).
    pub publisher: bool,
}

/// An op the session validated but cannot carry out itself (it needs the auction house or the publish path):
/// the adapter takes it with [`Session::poll_op`] and answers with [`Session::handle_op_result`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppOp {
    /// `{"op":"bid","id":n,"lot":"7","amount":"105.00","key":"<uuid>"}` from a logged-in user.
    Bid { id: u64, user: String, lot: String, amount: String, key: String },
    /// `{"op":"publish","id":n,...}` from a publisher: the whole frame, for the publish API's own parser.
    Publish { id: u64, frame: Vec<u8> },
    /// `{"op":"auth","id":n,"access_token":"..."}` on an anonymous connection, for transports that carry no
    /// token in their handshake (QUIC): the adapter checks the token, then calls [`Session::set_identity`] and
    /// answers with [`Session::handle_op_result`].
    Auth { id: u64, token: String },
}

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

/// One connection's protocol state.
pub struct Session {
    sub: Subscriber,
    batch: BatchWriter,
    config: SessionConfig,
    errors_in_window: u32,
    window_start: Option<Instant>,
    close: Option<CloseReason>,
    last_drain_messages: u64,
    identity: Identity,
    ops: std::collections::VecDeque<AppOp>,
    /// The datagram being built by [`Session::poll_datagram`].
    datagram: BatchWriter,
    /// SignalR hub protocol state; `None` for the native encodings.
    hub: Option<Box<signalr::HubState>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("sub", &self.sub).field("close", &self.close).finish()
    }
}

impl Session {
    /// A session that sends `encoding`.
    pub fn new(engine: Arc<Engine>, encoding: Encoding, config: SessionConfig) -> Session {
        Session {
            sub: Subscriber::new(engine, config.limits),
            batch: BatchWriter::new(encoding),
            config,
            errors_in_window: 0,
            window_start: None,
            close: None,
            last_drain_messages: 0,
            identity: Identity::default(),
            ops: Default::default(),
            datagram: BatchWriter::new(encoding),
            hub: (encoding == Encoding::SignalR).then(Default::default),
        }
    }

    /// Sets who the connection belongs to (before its first frame).
    pub fn set_identity(&mut self, identity: Identity) {
        self.identity = identity;
    }

    /// The connection's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The next op for the adapter to carry out (see [`AppOp`]).
    pub fn poll_op(&mut self) -> Option<AppOp> {
        self.ops.pop_front()
    }

    /// Answers an [`AppOp`]: an `ack` carrying `fields` (one JSON object), or an `error` with a stable code.
    /// Refusals here are the application's verdicts, not bad frames: they do not count toward `max_errors`.
    pub fn handle_op_result(&mut self, id: u64, result: Result<&str, (&str, &str)>) {
        if self.hub.is_some() {
            return self.hub_op_result(id, result);
        }
        match result {
            Ok(fields) => self.batch.push_ack_with(id, fields),
            Err((code, message)) => self.batch.push_error(Some(id), code, message),
        }
        self.sub.signal().schedule();
    }

    /// Ready when the session has messages to send.
    pub fn signal(&self) -> &Arc<Signal> {
        self.sub.signal()
    }

    /// The subscriptions.
    pub fn subscriber(&self) -> &Subscriber {
        &self.sub
    }

    /// Handles one client frame (text or binary; both carry JSON ops).
    pub fn handle_frame(&mut self, frame: &[u8], now: Instant) {
        if self.close.is_some() {
            return;
        }
        if self.hub.is_some() {
            return self.handle_hub_frame(frame, now);
        }
        if frame.len() > self.config.max_frame_bytes {
            let msg = format!("frame of {} bytes exceeds {}", frame.len(), self.config.max_frame_bytes);
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
                if self.identity.user.is_some() {
                    return self.error(op.id, code::FORBIDDEN, "the connection is already logged in", now);
                }
                self.ops.push_back(AppOp::Auth { id: op.id.unwrap_or(0), token });
            }
            "publish" => {
                let id = op.id.unwrap_or(0);
                if !self.identity.publisher {
                    return self.error(op.id, code::FORBIDDEN, "publish needs a publisher token", now);
                }
                self.ops.push_back(AppOp::Publish { id, frame: frame.to_vec() });
            }
            other => {
                let msg = format!("unknown op {other:?}; expected subscribe, unsubscribe, ping, bid, publish or auth");
                self.error(op.id, code::UNKNOWN_OP, &msg, now)
            }
        }
    }

    fn handle_subscribe(&mut self, op: Op, now: Instant) {
        let Some(names) = op.topics.filter(|t| !t.is_empty()) else {
            return self.error(op.id, code::BAD_REQUEST, "subscribe needs a non-empty \"topics\" array", now);
        };
        if op.datagrams && !self.config.datagrams {
            return self.error(op.id, code::BAD_REQUEST, "\"datagrams\" needs a QUIC connection", now);
        }
        match self.subscribe_topics(&names, op.since.as_ref(), op.datagrams) {
            Ok(()) => self.batch.push_ack(op.id.unwrap_or(0)),
            Err((c, msg)) => self.error(op.id, c, &msg, now),
        }
    }

    /// Subscribes to every topic in `names`, or to none when one of them cannot be (the error says which).
    fn subscribe_topics(
        &mut self,
        names: &[String],
        since: Option<&HashMap<String, Position>>,
        datagrams: bool,
    ) -> Result<(), (&'static str, String)> {
        let engine = self.sub.engine().clone();
        // All or nothing: check every name before subscribing to any.
        let mut topics = Vec::with_capacity(names.len());
        for name in names {
            if !valid_topic_name(name) {
                return Err((code::INVALID_TOPIC, format!("invalid topic name {name:?}")));
            }
            if let Some(owner) = name.strip_prefix(PRIVATE_PREFIX)
                && self.identity.user.as_deref() != Some(owner)
            {
                return Err((code::FORBIDDEN, format!("{name:?} is private to user {owner:?}")));
            }
            match engine.topic(name) {
                Some(t) => topics.push(t),
                None => return Err((code::UNKNOWN_TOPIC, format!("no topic {name:?}"))),
            }
        }
        let new = topics.iter().filter(|t| !self.sub.is_subscribed(t.name())).count();
        if !self.sub.has_room_for(new) {
            return Err((
                code::TOO_MANY_TOPICS,
                format!("at most {} topics per connection", self.config.limits.max_topics),
            ));
        }
        for t in topics {
            let since = since.and_then(|s| s.get(t.name()).copied());
            let name = t.name().to_owned();
            match self.sub.subscribe(t, since) {
                Ok(Start::Already | Start::Snapshot { .. } | Start::Replay { .. }) => {}
                Err(_) => unreachable!("room was checked above"),
            }
            // The latest subscribe decides; reliable topics stay on the stream whatever was asked.
            self.sub.set_datagram(&name, datagrams);
        }
        Ok(())
    }

    fn handle_bid(&mut self, op: Op, now: Instant) {
        let Some(user) = self.identity.user.clone() else {
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
        self.ops.push_back(AppOp::Bid { id: op.id.unwrap_or(0), user, lot, amount, key });
    }

    fn handle_unsubscribe(&mut self, op: Op, now: Instant) {
        let Some(names) = op.topics.filter(|t| !t.is_empty()) else {
            return self.error(op.id, code::BAD_REQUEST, "unsubscribe needs a non-empty \"topics\" array", now);
        };
        for name in &names {
            self.sub.unsubscribe(name);
        }
        self.batch.push_ack(op.id.unwrap_or(0));
    }

    fn error(&mut self, id: Option<u64>, code: &str, message: &str, now: Instant) {
        self.batch.push_error(id, code, message);
        self.count_error(now);
    }

    /// Counts a refused request; past `max_errors` within `error_window`, the connection closes with 1008.
    fn count_error(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) > self.config.error_window {
            self.window_start = Some(now);
            self.errors_in_window = 0;
        }
        self.errors_in_window += 1;
        if self.errors_in_window > self.config.max_errors {
            let why = format!("more than {} bad frames in {:?}", self.config.max_errors, self.config.error_window);
            self.close = Some(CloseReason::PolicyViolation(why));
        }
    }

    /// Drains the subscriptions into the pending batch and returns the frame to send, if any. Call
    /// [`Session::sent`] after writing it.
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        // Stateful reconnect over its buffer: topics wait until the client acknowledges (an Ack reschedules).
        let paused = self.hub.is_some() && self.hub_before_drain();
        if paused {
            self.sub.signal().clear();
        }
        if self.close.is_none() && !paused {
            match self.sub.drain(&mut self.batch) {
                Ok(d) => {
                    self.last_drain_messages = d.messages;
                    let m = self.sub.engine().metrics();
                    m.add(&m.gaps, d.gaps);
                }
                Err(slow) => {
                    let m = self.sub.engine().metrics();
                    m.add(&m.slow_consumer_disconnects, 1);
                    self.close = Some(CloseReason::SlowConsumer(slow));
                }
            }
        }
        // SignalR: a closing connection's last batch ends with the Close message saying why.
        if self.hub.is_some() && self.close.is_some() {
            self.push_hub_close();
        }
        self.batch.finish()
    }

    /// The next datagram, at most `max_bytes` (unless one message alone is larger): ticks of the topics
    /// subscribed with `"datagrams": true`, one batch in the connection's encoding (under JSON, an array of
    /// events, each with its seq, and `gap` events where values were skipped). The bytes are valid until the
    /// next call; datagrams are fire-and-forget, so there is no `sent`. Call until it returns `None`.
    pub fn poll_datagram(&mut self, max_bytes: usize) -> Option<&[u8]> {
        self.datagram.clear();
        if self.close.is_some() {
            return None;
        }
        let d = self.sub.drain_datagrams(&mut self.datagram, max_bytes);
        let m = self.sub.engine().metrics();
        m.add(&m.gaps, d.gaps);
        if !self.datagram.is_empty() {
            m.add(&m.batches, 1);
            m.add(&m.deliveries, d.messages);
            m.add(&m.bytes_out, self.datagram.n_bytes() as u64 + 1);
        }
        self.datagram.finish()
    }

    /// The frame from [`Session::poll_transmit`] was written: count it and reuse the buffer.
    pub fn sent(&mut self) {
        if self.hub.is_some() {
            self.hub_sent();
        }
        if !self.batch.is_empty() {
            let m = self.sub.engine().metrics();
            m.add(&m.batches, 1);
            m.add(&m.deliveries, self.last_drain_messages);
            m.add(&m.bytes_out, self.batch.n_bytes() as u64);
        }
        self.last_drain_messages = 0;
        self.batch.clear();
    }

    /// Asks the session to close (server shutdown, idle timeout).
    pub fn close(&mut self, reason: CloseReason) {
        self.close.get_or_insert(reason);
    }

    /// Set once the connection must be closed; send what [`Session::poll_transmit`] still returns first.
    pub fn poll_close(&self) -> Option<&CloseReason> {
        self.close.as_ref()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{EngineConfig, Price, RingConfig, Tick};

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
                Some(f) => serde_json::from_slice::<Vec<serde_json::Value>>(f).unwrap(),
                None => Vec::new(),
            };
            self.s.sent();
            out
        }
    }

    fn setup() -> (Arc<Engine>, crate::TopicWriter) {
        let e = Engine::new(EngineConfig {
            epoch: 3,
            ring: RingConfig { capacity: 64, slot_bytes: 256 },
            ..Default::default()
        });
        let mut w = e.create_topic("ticks.AAPL").unwrap();
        w.publish_tick(&Tick { price: Price(1), size: 1, ..Default::default() }, 0).unwrap();
        (e, w)
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
        let dg: Vec<serde_json::Value> = serde_json::from_slice(h.s.poll_datagram(1200).unwrap()).unwrap();
        assert_eq!((dg.len(), dg[0]["type"].as_str()), (1, Some("snapshot")));
        assert!(h.s.poll_datagram(1200).is_none());
        for i in 2..=40 {
            w.publish_tick(&Tick { price: Price(i), size: 1, ..Default::default() }, 0).unwrap();
        }
        let mut seqs = Vec::new();
        while let Some(d) = h.s.poll_datagram(600) {
            assert!(d.len() <= 600, "{} bytes", d.len());
            let evs: Vec<serde_json::Value> = serde_json::from_slice(d).unwrap();
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
        let evs: Vec<serde_json::Value> = serde_json::from_slice(h.s.poll_datagram(1200).unwrap()).unwrap();
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
}
