//! What both sessions share: settings, identity, close reasons, error codes, the operations handed to the
//! adapter, and [`Conn`], the per-connection state under either protocol (subscriptions, error budget, close).

use bytes::Bytes;
use marquee_engine::fanout::{Limits, Signal, SlowConsumer, Start, Subscriber};
use marquee_engine::{BatchWriter, Engine, Framing, PRIVATE_PREFIX, Position, valid_topic_name};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// calls [`crate::Session::poll_datagram`]. Off, such a subscribe is refused with `bad_request`.
    pub datagrams: bool,
    /// The session's timers (none by default: the adapter sets those its transport needs).
    pub timers: Timers,
}

/// The timers a session runs, on the time the adapter passes in ([`Connection::handle_timeout`]): the session
/// owns them, the adapter only sleeps until [`Connection::poll_timeout`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    /// How often the connection shows it is alive: a transport ping the adapter sends when
    /// [`Connection::poll_ping`] says so (native WebSocket), or a hub Ping message in the next batch (SignalR).
    pub keep_alive: Option<Duration>,
    /// Nothing heard from the client for this long closes the connection ([`CloseReason::IdleTimeout`], 4000).
    pub idle_timeout: Option<Duration>,
    /// SignalR: no handshake within this long after the session started closes it.
    pub handshake_timeout: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            limits: Limits::default(),
            max_frame_bytes: 64 * 1024,
            max_errors: 20,
            error_window: Duration::from_secs(10),
            datagrams: false,
            timers: Timers::default(),
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
    /// 1009: a message over the size limit (a SignalR hub message, or a WebSocket message over the transport's
    /// hard limit).
    MessageTooLarge(String),
    /// 1007: a WebSocket text message that is not UTF-8.
    InvalidPayload(String),
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
            CloseReason::InvalidPayload(_) => 1007,
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
            CloseReason::InvalidPayload(why) => write!(f, "invalid payload: {why}"),
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

/// The interface a transport adapter drives, whichever protocol the connection speaks.
///
/// Call order (the adapter's loop): [`Connection::handle_frame`] for every frame the client sends; when
/// [`Connection::signal`] is ready or after a frame, [`Connection::poll_transmit`] returns the next batch (one
/// frame); after writing it, [`Connection::sent`]; [`Connection::poll_close`] says whether to close and with which
/// code. Ops the session cannot carry out itself come out of [`Connection::poll_op`].
pub trait Connection {
    /// Handles one client frame.
    fn handle_frame(&mut self, frame: &[u8], now: Instant);
    /// Drains the subscriptions into the pending batch and returns the frame to send, if any: the batch's own
    /// bytes, handed over without a copy (see [`marquee_engine::BatchWriter::take_frame`]).
    fn poll_transmit(&mut self) -> Option<Bytes>;
    /// The frame from [`Connection::poll_transmit`] was written: count it.
    fn sent(&mut self);
    /// Set once the connection must be closed; send what [`Connection::poll_transmit`] still returns first.
    fn poll_close(&self) -> Option<&CloseReason>;
    /// Asks the session to close (server shutdown, idle timeout).
    fn close(&mut self, reason: CloseReason);
    /// The next op for the adapter to carry out (see [`AppOp`]).
    fn poll_op(&mut self) -> Option<AppOp>;
    /// Answers an [`AppOp`]: `Ok` with result fields (one JSON object), or `Err((code, message))`.
    fn handle_op_result(&mut self, id: u64, result: Result<&str, (&str, &str)>);
    /// Sets who the connection belongs to.
    fn set_identity(&mut self, identity: Identity);
    /// Ready when the session has messages to send.
    fn signal(&self) -> &Arc<Signal>;
    /// The client showed it is alive without sending a frame the session reads (a WebSocket pong, a new socket
    /// for the connection). Also arms the timers, as every call that passes a time does.
    fn heard(&mut self, now: Instant);
    /// When [`Connection::handle_timeout`] is due next; `None` when no timer runs (none configured, not armed
    /// yet, or the connection is closing). Arm the timers by passing a time once, e.g. with
    /// [`Connection::heard`] when the transport connects.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Runs the timers due at `now`: a keep-alive, the idle timeout, the handshake deadline.
    fn handle_timeout(&mut self, now: Instant);
    /// True once when a transport-level ping is due (see [`Timers::keep_alive`]); protocols that ping in-band
    /// never ask.
    fn poll_ping(&mut self) -> bool {
        false
    }
    /// The batches are binary (native binary encoding, SignalR MessagePack): binary WebSocket frames.
    fn binary_frames(&self) -> bool;
}

/// One connection's state under either protocol.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) sub: Subscriber,
    pub(crate) config: SessionConfig,
    errors_in_window: u32,
    window_start: Option<Instant>,
    pub(crate) close: Option<CloseReason>,
    last_drain_messages: u64,
    /// Payload bytes of the frame handed out by `poll_transmit` and not yet `sent`.
    in_flight: usize,
    pub(crate) identity: Identity,
    pub(crate) ops: VecDeque<AppOp>,
    /// When the timers were armed (the first time passed in).
    armed_at: Option<Instant>,
    last_heard: Option<Instant>,
    next_keep_alive: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(engine: Arc<Engine>, config: SessionConfig) -> Conn {
        Conn {
            sub: Subscriber::new(engine, config.limits),
            config,
            errors_in_window: 0,
            window_start: None,
            close: None,
            last_drain_messages: 0,
            in_flight: 0,
            identity: Identity::default(),
            ops: VecDeque::new(),
            armed_at: None,
            last_heard: None,
            next_keep_alive: None,
        }
    }

    /// Starts the timers at the first time passed in.
    fn arm(&mut self, now: Instant) {
        if self.armed_at.is_none() {
            self.armed_at = Some(now);
            self.last_heard = Some(now);
            self.next_keep_alive = self.config.timers.keep_alive.map(|k| now + k);
        }
    }

    /// The client was heard from at `now`.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.arm(now);
        self.last_heard = Some(self.last_heard.map_or(now, |h| h.max(now)));
    }

    /// The next timer's instant (see [`Connection::poll_timeout`]); `handshaking` adds the handshake deadline.
    pub(crate) fn poll_timeout(&self, handshaking: bool) -> Option<Instant> {
        if self.close.is_some() {
            return None;
        }
        let (armed, t) = (self.armed_at?, self.config.timers);
        let idle = t.idle_timeout.zip(self.last_heard).map(|(d, h)| h + d);
        let handshake = t.handshake_timeout.filter(|_| handshaking).map(|d| armed + d);
        let keep_alive = t.keep_alive.and(self.next_keep_alive);
        [keep_alive, idle, handshake].into_iter().flatten().min()
    }

    /// Runs the timers due at `now`; true when a keep-alive is due (the session sends it its own way).
    pub(crate) fn handle_timeout(&mut self, now: Instant, handshaking: bool) -> bool {
        self.arm(now);
        if self.close.is_some() {
            return false;
        }
        let t = self.config.timers;
        if let Some(idle) = t.idle_timeout.zip(self.last_heard).map(|(d, h)| h + d)
            && now >= idle
        {
            self.close = Some(CloseReason::IdleTimeout);
            return false;
        }
        if let Some(d) = t.handshake_timeout.filter(|_| handshaking)
            && now >= self.armed_at.unwrap_or(now) + d
        {
            self.close = Some(CloseReason::HandshakeFailed("no handshake within the handshake timeout".into()));
            return false;
        }
        match (self.next_keep_alive, t.keep_alive) {
            (Some(at), Some(every)) if now >= at => {
                self.next_keep_alive = Some(now + every);
                true
            }
            _ => false,
        }
    }

    /// Counts a refused request; past `max_errors` within `error_window`, the connection closes with 1008.
    pub(crate) fn count_error(&mut self, now: Instant) {
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

    /// Subscribes to every topic in `names`, or to none when one of them cannot be (the error says which).
    pub(crate) fn subscribe_topics(
        &mut self,
        names: &[String],
        since: Option<&HashMap<String, Position>>,
        datagrams: bool,
    ) -> Result<(), (&'static str, String)> {
        let engine = self.sub.engine().clone();
        // All or nothing: check every name before subscribing to any.
        let mut topics = Vec::with_capacity(names.len());
        // A topic named twice in one request is subscribed, and counted against the limit, once.
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        for name in names {
            if !seen.insert(name.as_str()) {
                continue;
            }
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

    /// Drains the subscriptions into `batch` unless the connection is closing; a lapped reliable topic closes it.
    pub(crate) fn drain<F: Framing>(&mut self, batch: &mut BatchWriter<F>) {
        if self.close.is_some() {
            return;
        }
        match self.sub.drain(batch) {
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

    /// Takes the finished batch out of `batch` for the transport, without a copy.
    pub(crate) fn take_frame<F: Framing>(&mut self, batch: &mut BatchWriter<F>) -> Option<Bytes> {
        let payload = batch.n_bytes();
        let frame = batch.take_frame()?;
        self.in_flight = payload;
        Some(frame)
    }

    /// Counts the frame written.
    pub(crate) fn sent(&mut self) {
        if self.in_flight > 0 {
            let m = self.sub.engine().metrics();
            m.add(&m.batches, 1);
            m.add(&m.deliveries, self.last_drain_messages);
            m.add(&m.bytes_out, self.in_flight as u64);
        }
        self.last_drain_messages = 0;
        self.in_flight = 0;
    }
}
