//! The SignalR hub protocols as a session of their own, [`HubSession`]: the handshake, hub messages (JSON separated
//! by `0x1E`, or VarInt-framed MessagePack, see [`crate::msgpack`]), the hub methods `Subscribe`, `Unsubscribe`,
//! `PlaceBid` and `StreamTicks`, and stateful reconnect (Ack, Sequence, resend). Subscriptions, batching,
//! conflation and slow-consumer rules are the core's, as for the native protocol; outgoing events are framed by
//! [`HubFraming`].
//!
//! Specification: `HubProtocol.md` in dotnet/aspnetcore `src/SignalR/docs/specs/`; where the official clients
//! differ, this follows the clients (see `docs/SIGNALR.md`).

use crate::conn::{AppOp, CloseReason, Conn, Connection, Identity, SessionConfig, code};
use crate::hub_framing::{HubBatch, HubFraming, HubStream, RECORD_SEPARATOR};
use bytes::Bytes;
use marquee_engine::body::push_json_str;
use marquee_engine::fanout::{Signal, Subscriber};
use marquee_engine::{BatchWriter, Engine, PRIVATE_PREFIX, Position, TICKS_PREFIX, Tag};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Invocations waiting for an asynchronous answer (bids) at once; more are refused.
const MAX_PENDING_INVOCATIONS: usize = 64;
/// The hub protocol version implemented, for JSON and MessagePack alike; a handshake may ask for any version up to
/// this one.
const HUB_PROTOCOL_VERSION: u64 = 2;
/// Server-to-client streams open at once on one connection.
const MAX_STREAMS: usize = 64;

/// Hub message types (`"type"`).
mod ty {
    pub const INVOCATION: u64 = 1;
    pub const STREAM_ITEM: u64 = 2;
    pub const COMPLETION: u64 = 3;
    pub const STREAM_INVOCATION: u64 = 4;
    pub const CANCEL_INVOCATION: u64 = 5;
    pub const PING: u64 = 6;
    pub const CLOSE: u64 = 7;
    pub const ACK: u64 = 8;
    pub const SEQUENCE: u64 = 9;
}

/// One connection's hub protocol state.
#[derive(Debug, Default)]
struct HubState {
    handshake_done: bool,
    /// The start of a hub message whose separator has not arrived yet.
    partial: Vec<u8>,
    /// Internal op ids of invocations answered later (bids), to the client's `invocationId`.
    pending: HashMap<u64, Box<str>>,
    next_id: u64,
    /// Open `StreamTicks` streams: invocation id to topic.
    streams: HashMap<Arc<str>, String>,
    close_sent: bool,
    /// The transport carries text only (Server-Sent Events): MessagePack is refused.
    text_only: bool,
    /// Stateful reconnect, when negotiated.
    replay: Option<Box<Replay>>,
}

/// The bytes every connection's stateful-reconnect buffer holds, against a limit for all of them together, so
/// many clients that never acknowledge cannot take the server's memory (each is also bounded on its own).
#[derive(Debug)]
pub struct ReplayBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ReplayBudget {
    /// A budget of `limit` bytes for all buffers together.
    pub fn new(limit: usize) -> Arc<ReplayBudget> {
        Arc::new(ReplayBudget { used: AtomicUsize::new(0), limit })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn exhausted(&self) -> bool {
        self.used() > self.limit
    }
}

/// Stateful reconnect (SignalR, .NET 8+): the trackable messages (Invocation, StreamItem, Completion) the server
/// sent and the client has not acknowledged, kept to be sent again on a new socket; and the numbering of the
/// client's messages, so its resent ones are handled once.
#[derive(Debug, Default)]
struct Replay {
    /// The budget of all connections' buffers, and how much of it this one holds.
    budget: Option<Arc<ReplayBudget>>,
    charged: usize,
    /// Unacknowledged bytes kept before the connection stops taking new messages from its topics (they wait in
    /// the rings meanwhile, where conflation and the slow-consumer rules apply as usual).
    limit: usize,
    /// Unacknowledged messages back to back, each with its separator, from `head` on.
    buf: Vec<u8>,
    head: usize,
    /// Where each unacknowledged message starts in `buf`, oldest first.
    starts: std::collections::VecDeque<usize>,
    /// Id of the oldest unacknowledged message (ids count trackable messages from 1).
    first_id: u64,
    /// Id of the client's last trackable message handled, and of the one being read.
    last_in: u64,
    next_in: u64,
    /// An Ack of `last_in` is owed to the client.
    ack_due: bool,
}

impl Replay {
    /// Keeps the trackable messages of a batch that was just written.
    fn record(&mut self, batch: &[u8], msgpack: bool) {
        if msgpack {
            // VarInt length, then an array whose first element is the type.
            let mut rest = batch;
            while let Ok(Some((n, head))) = crate::msgpack::get_varint(rest) {
                let Some(m) = rest.get(..head + n) else { break };
                if matches!(m.get(head + 1), Some(1..=3)) {
                    self.starts.push_back(self.buf.len());
                    self.buf.extend_from_slice(m);
                }
                rest = &rest[head + n..];
            }
        } else {
            for m in batch.split_inclusive(|&b| b == RECORD_SEPARATOR) {
                let trackable =
                    [&b"{\"type\":1,"[..], b"{\"type\":2,", b"{\"type\":3,"].iter().any(|p| m.starts_with(p));
                if trackable {
                    self.starts.push_back(self.buf.len());
                    self.buf.extend_from_slice(m);
                }
            }
        }
        self.settle();
    }

    /// Brings the budget up to date with what the buffer holds (after every change to it: `record`, `ack`).
    fn settle(&mut self) {
        let held = self.unacked_bytes();
        if let Some(b) = &self.budget {
            if held > self.charged {
                b.used.fetch_add(held - self.charged, Ordering::Relaxed);
            } else {
                b.used.fetch_sub(self.charged - held, Ordering::Relaxed);
            }
        }
        self.charged = held;
    }

    /// True when no new topic messages may be taken: this buffer is over its own limit, or the buffers together
    /// are over theirs and this one holds something (a connection with nothing unacknowledged may always send).
    fn paused(&self) -> bool {
        let held = self.unacked_bytes();
        held > self.limit || (held > 0 && self.budget.as_ref().is_some_and(|b| b.exhausted()))
    }

    /// The client has everything up to id `n`.
    fn ack(&mut self, n: u64) {
        while self.first_id <= n && self.starts.pop_front().is_some() {
            self.first_id += 1;
        }
        match self.starts.front() {
            None => {
                self.buf.clear();
                self.head = 0;
                // Give back what a burst grew the buffer to.
                if self.buf.capacity() > 64 * 1024 {
                    self.buf.shrink_to(64 * 1024);
                }
            }
            Some(&at) => {
                self.head = at;
                if self.head >= 64 * 1024 && self.head * 2 >= self.buf.len() {
                    self.buf.drain(..self.head);
                    self.starts.iter_mut().for_each(|s| *s -= self.head);
                    self.head = 0;
                }
            }
        }
        self.settle();
    }

    fn unacked_bytes(&self) -> usize {
        self.buf.len() - self.head
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.used.fetch_sub(self.charged, Ordering::Relaxed);
        }
    }
}

#[derive(Deserialize)]
struct Handshake {
    protocol: String,
    version: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HubMessage {
    #[serde(rename = "type")]
    ty: u64,
    #[serde(default)]
    invocation_id: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    arguments: Option<Vec<Value>>,
    #[serde(default)]
    stream_ids: Option<Vec<String>>,
    #[serde(default)]
    sequence_id: Option<u64>,
}

/// A refused invocation: a stable code and a message, sent as the Completion's `error` (`"code: message"`).
type Refusal = (&'static str, String);

fn bad_args(method: &str, signature: &str) -> Refusal {
    (code::BAD_REQUEST, format!("{method} takes ({signature})"))
}

/// One SignalR connection's protocol state.
pub struct HubSession {
    c: Conn,
    batch: BatchWriter<HubFraming>,
    hub: HubState,
    /// Stateful reconnect: the frame handed to the transport and not yet `sent`.
    in_flight: Option<Bytes>,
    /// The client timeout, which runs only from the client's first Ping on, as in ASP.NET Core (a client on a
    /// transport with a keep-alive of its own, such as long polling, never pings).
    client_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for HubSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSession").field("sub", &self.c.sub).field("close", &self.c.close).finish()
    }
}

impl HubSession {
    /// A session that waits for the client's handshake.
    pub fn new(engine: Arc<Engine>, config: SessionConfig) -> HubSession {
        let client_timeout = config.timers.idle_timeout;
        let timers = crate::Timers { idle_timeout: None, ..config.timers };
        HubSession {
            c: Conn::new(engine, SessionConfig { timers, ..config }),
            client_timeout,
            batch: BatchWriter::with_framing(HubFraming::default()),
            hub: HubState::default(),
            in_flight: None,
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

    /// The stream a subscription feeds, if any.
    fn stream_of(&self, topic: &str) -> Option<&HubStream> {
        self.batch.framing().stream(self.c.sub.tag_of(topic)?)
    }

    /// Sends a subscription's ticks as items of `stream`, or (with `None`) as Invocations again.
    fn set_stream(&mut self, topic: &str, stream: Option<HubStream>) {
        let Some(tag) = self.c.sub.tag_of(topic) else { return };
        let tag: Tag = match stream {
            Some(s) => self.batch.framing_mut().set_stream(tag, s),
            None => {
                self.batch.framing_mut().clear_stream(tag);
                0
            }
        };
        self.c.sub.set_tag(topic, tag);
    }
}

impl Connection for HubSession {
    fn handle_frame(&mut self, frame: &[u8], now: Instant) {
        self.c.heard(now);
        if self.c.close.is_none() {
            self.handle_hub_frame(frame, now);
        }
    }

    fn poll_transmit(&mut self) -> Option<Bytes> {
        // Stateful reconnect over its buffer: topics wait until the client acknowledges (an Ack reschedules).
        if self.hub_before_drain() {
            self.c.sub.signal().clear();
        } else {
            self.c.drain(&mut self.batch);
        }
        // A closing connection's last batch ends with the Close message saying why.
        if self.c.close.is_some() {
            self.push_hub_close();
        }
        let frame = self.c.take_frame(&mut self.batch)?;
        if self.hub.replay.is_some() {
            // Stateful reconnect keeps what the frame held once it is written (a handle, not a copy).
            self.in_flight = Some(frame.clone());
        }
        Some(frame)
    }

    fn sent(&mut self) {
        self.hub_sent();
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

    fn handle_op_result(&mut self, id: u64, result: Result<&str, (&str, &str)>) {
        self.hub_op_result(id, result);
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

    /// MessagePack goes in binary frames (its first batch still starts with the JSON handshake answer, which the
    /// clients read from binary frames too).
    fn binary_frames(&self) -> bool {
        self.batch.framing().is_msgpack()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.c.poll_timeout(!self.hub.handshake_done)
    }

    /// A due keep-alive is a hub Ping (`{"type":6}`) in the next batch, which a client needs to hear at least
    /// every 15 s or it gives the connection up; the idle timeout is the client timeout.
    fn handle_timeout(&mut self, now: Instant) {
        let was_open = self.c.close.is_none();
        if self.c.handle_timeout(now, !self.hub.handshake_done) {
            self.keep_alive();
        }
        if was_open && self.c.close.is_some() {
            self.cancel_handshake();
            // The batch that carries the Close message must go out.
            self.c.sub.signal().schedule();
        }
    }
}

impl HubSession {
    fn handle_hub_frame(&mut self, frame: &[u8], now: Instant) {
        let max = self.c.config.max_frame_bytes;
        let hub = &mut self.hub;
        let mut buf = std::mem::take(&mut hub.partial);
        buf.extend_from_slice(frame);
        let mut pos = 0;
        while self.c.close.is_none() {
            let rest = &buf[pos..];
            // The batch writer knows whether the handshake chose MessagePack.
            let msgpack = self.batch.framing().is_msgpack();
            // JSON messages end with 0x1E (the handshake too, always); MessagePack ones carry a VarInt length.
            let (msg, used) = if msgpack {
                match crate::msgpack::get_varint(rest) {
                    Ok(Some((n, _))) if n > max => {
                        let why = format!("a hub message of {n} bytes exceeds the limit of {max}");
                        self.c.close = Some(CloseReason::MessageTooLarge(why));
                        break;
                    }
                    Ok(Some((n, head))) if rest.len() >= head + n => (&rest[head..head + n], head + n),
                    Ok(_) => break,
                    Err(e) => {
                        self.c.close = Some(CloseReason::ProtocolError(format!("bad_request: {e}")));
                        break;
                    }
                }
            } else {
                match rest.iter().position(|&b| b == RECORD_SEPARATOR) {
                    Some(i) => (&rest[..i], i + 1),
                    None => break,
                }
            };
            if msg.len() > max {
                let why = format!("a hub message of {} bytes exceeds the limit of {max}", msg.len());
                self.c.close = Some(CloseReason::MessageTooLarge(why));
                break;
            }
            if msgpack {
                self.handle_msgpack_message(msg, now);
            } else {
                self.handle_hub_message(msg, now);
            }
            pos += used;
        }
        if self.c.close.is_some() {
            return;
        }
        buf.drain(..pos);
        if buf.len() > max {
            let why = format!("a hub message of over {max} bytes without its end");
            self.c.close = Some(CloseReason::MessageTooLarge(why));
            self.cancel_handshake();
            return;
        }
        self.hub.partial = buf;
    }

    /// A connection closed before its handshake completed gets the handshake answer ASP.NET Core sends then.
    fn cancel_handshake(&mut self) {
        if !self.hub.handshake_done && !self.hub.close_sent {
            self.hub.close_sent = true;
            self.batch.push_hub_message(b"{\"error\":\"Handshake was canceled.\"}");
        }
    }

    fn handle_msgpack_message(&mut self, msg: &[u8], now: Instant) {
        let parsed = crate::msgpack::decode(msg)
            .and_then(|(v, used)| if used == msg.len() { Ok(v) } else { Err("trailing bytes".into()) })
            .and_then(crate::msgpack::hub_message_to_json)
            .and_then(|v| serde_json::from_value::<HubMessage>(v).map_err(|e| e.to_string()));
        match parsed {
            Ok(m) => self.dispatch_hub_message(m, now),
            Err(e) => self.c.close = Some(CloseReason::ProtocolError(format!("bad_request: {e}"))),
        }
    }

    fn handle_hub_message(&mut self, msg: &[u8], now: Instant) {
        let hub = &mut self.hub;
        if !hub.handshake_done {
            return self.handle_handshake(msg);
        }
        let m: HubMessage = match serde_json::from_slice(msg) {
            Ok(m) => m,
            Err(e) => {
                let c = if e.is_data() { code::BAD_REQUEST } else { code::BAD_JSON };
                self.c.close = Some(CloseReason::ProtocolError(format!("{c}: {e}")));
                return;
            }
        };
        self.dispatch_hub_message(m, now);
    }

    fn dispatch_hub_message(&mut self, m: HubMessage, now: Instant) {
        if let Some(r) = self.hub.replay.as_mut() {
            match m.ty {
                ty::INVOCATION..=ty::CANCEL_INVOCATION => {
                    r.next_in += 1;
                    if r.next_in <= r.last_in {
                        // Resent after a reconnect, and handled already.
                        return;
                    }
                    r.last_in = r.next_in;
                    r.ack_due = true;
                }
                ty::ACK => {
                    r.ack(m.sequence_id.unwrap_or(0));
                    self.c.sub.signal().schedule();
                    return;
                }
                ty::SEQUENCE => {
                    let s = m.sequence_id.unwrap_or(0);
                    if s == 0 || s > r.last_in + 1 {
                        let why =
                            format!("bad_request: Sequence {s} is past the last message received ({})", r.last_in);
                        self.c.close = Some(CloseReason::ProtocolError(why));
                    } else {
                        r.next_in = s - 1;
                    }
                    return;
                }
                _ => {}
            }
        }
        match m.ty {
            ty::INVOCATION | ty::STREAM_INVOCATION => self.invoke(m, now),
            ty::CANCEL_INVOCATION => {
                if let Some(id) = m.invocation_id {
                    self.end_stream(&id);
                }
            }
            ty::CLOSE => self.c.close = Some(CloseReason::Normal),
            // Pings only prove the client is alive (the adapter saw the frame). Client results and client-to-server
            // stream items have no meaning here; Ack and Sequence only with stateful reconnect (above); and the
            // specification tells receivers to ignore message types they do not know.
            // The first Ping starts the client timeout.
            ty::PING if self.c.config.timers.idle_timeout.is_none() && self.client_timeout.is_some() => {
                self.c.config.timers.idle_timeout = self.client_timeout;
                self.c.heard(now);
            }
            ty::PING | ty::STREAM_ITEM | ty::COMPLETION => {}
            _ => {}
        }
    }

    fn handle_handshake(&mut self, msg: &[u8]) {
        let text_only = self.hub.text_only;
        let handshake = serde_json::from_slice::<Handshake>(msg);
        // Protocol names match without regard to case, as ASP.NET Core's resolver does.
        let msgpack = handshake.as_ref().is_ok_and(|h| h.protocol.eq_ignore_ascii_case("messagepack"));
        let json = handshake.as_ref().is_ok_and(|h| h.protocol.eq_ignore_ascii_case("json"));
        let handshake_version = handshake.as_ref().map_or(0, |h| h.version);
        let refusal = match handshake {
            Err(e) => Some(format!("bad_request: the handshake must be {{\"protocol\":\"json\",\"version\":1}}: {e}")),
            Ok(_) if msgpack && text_only => Some(
                "The protocol 'messagepack' needs a transport with the Binary transfer format (WebSockets or long \
                 polling), not Server-Sent Events."
                    .to_owned(),
            ),
            Ok(h) if !json && !msgpack => Some(format!(
                "The protocol '{}' is not supported; this server speaks the 'json' and 'messagepack' hub protocols.",
                h.protocol
            )),
            // As ASP.NET Core's `IsVersionSupported`: every version up to the one implemented (2, which adds Ack and
            // Sequence for stateful reconnect) is accepted, 0 and 1 included.
            Ok(h) if h.version > HUB_PROTOCOL_VERSION => {
                Some(format!("The server does not support version {} of the '{}' protocol.", h.version, h.protocol))
            }
            Ok(_) => None,
        };
        if let Some(why) = refusal {
            let mut out = b"{\"error\":\"".to_vec();
            push_json_str(&mut out, &why);
            out.extend_from_slice(b"\"}");
            self.batch.push_hub_message(&out);
            self.c.close = Some(CloseReason::HandshakeFailed(why));
            self.c.sub.signal().schedule();
            return;
        }
        let hub = &mut self.hub;
        hub.handshake_done = true;
        // Ack and Sequence exist from version 2 on: a client that asked for less gets no stateful reconnect, as
        // ASP.NET Core disables it for such a handshake.
        if handshake_version < 2 {
            hub.replay = None;
        }
        // The handshake answer is JSON text whatever the protocol; what follows is in the protocol.
        self.batch.push_hub_message(b"{}");
        self.batch.framing_mut().set_msgpack(msgpack);
        // `Clients.User`: a logged-in connection hears its own private topic without asking, from now on.
        if let Some(user) = &self.c.identity.user {
            let name = format!("{}{user}", PRIVATE_PREFIX);
            if let Some(topic) = self.c.sub.engine().topic(&name) {
                let since = Position { epoch: topic.epoch(), seq: topic.head() };
                let _ = self.c.sub.subscribe(topic, Some(since));
            }
        }
        self.c.sub.signal().schedule();
    }

    fn invoke(&mut self, m: HubMessage, now: Instant) {
        let streaming = m.ty == ty::STREAM_INVOCATION;
        // An empty id asks for no answer, as in ASP.NET Core.
        let id = m.invocation_id.filter(|id| !id.is_empty());
        let target = m.target.unwrap_or_default();
        let args = m.arguments.unwrap_or_default();
        let result: Result<Option<String>, Refusal> = if m.stream_ids.is_some_and(|s| !s.is_empty()) {
            Err((code::BAD_REQUEST, "client-to-server streams are not supported".to_owned()))
        } else if streaming && id.is_none() {
            Err((code::BAD_REQUEST, "a StreamInvocation needs an invocationId".to_owned()))
        } else {
            // Hub method names match without regard to case, as in ASP.NET Core.
            match (target.to_ascii_lowercase().as_str(), streaming) {
                ("subscribe", false) => self.hub_subscribe(&args).map(|()| None),
                ("unsubscribe", false) => self.hub_unsubscribe(&args).map(|()| None),
                ("placebid", false) => match self.hub_place_bid(id.as_deref(), &args) {
                    // Answered when the auction house has taken the bid.
                    Ok(()) => return,
                    Err(e) => Err(e),
                },
                ("streamticks", true) => match self.hub_stream_ticks(id.as_deref().unwrap_or_default(), &args) {
                    // Completed when the stream ends.
                    Ok(()) => return,
                    Err(e) => Err(e),
                },
                ("streamticks", false) => {
                    Err((code::BAD_REQUEST, "StreamTicks is a streaming method: call it with stream()".to_owned()))
                }
                ("subscribe" | "unsubscribe" | "placebid", true) => {
                    Err((code::BAD_REQUEST, format!("{target} is not a streaming method: call it with invoke()")))
                }
                _ => Err((
                    code::UNKNOWN_METHOD,
                    format!(
                        "unknown hub method {target:?}; the hub has Subscribe, Unsubscribe, PlaceBid and StreamTicks"
                    ),
                )),
            }
        };
        if result.is_err() {
            self.c.count_error(now);
        }
        if let Some(id) = id {
            self.push_completion(&id, result.as_ref().map(|r| r.as_deref()).map_err(|(c, m)| (*c, m.as_str())));
        }
    }

    fn hub_subscribe(&mut self, args: &[Value]) -> Result<(), Refusal> {
        const SIGNATURE: &str = "topics: string[], non-empty; since?: {topic: {epoch, seq}}";
        // The optional second argument resumes topics from positions, as the native `since`.
        let (names, since) = match args {
            [topics] => (topic_list(std::slice::from_ref(topics)), None),
            [topics, since] => {
                let since = serde_json::from_value::<Option<HashMap<String, Position>>>(since.clone())
                    .map_err(|e| (code::BAD_REQUEST, format!("Subscribe's since: {e}")))?;
                (topic_list(std::slice::from_ref(topics)), since)
            }
            _ => (None, None),
        };
        let names = names.ok_or_else(|| bad_args("Subscribe", SIGNATURE))?;
        self.c.subscribe_topics(&names, since.as_ref(), false)?;
        // A topic a stream already reads: its messages now go both ways.
        for name in &names {
            if let Some(stream) = self.stream_of(name).cloned() {
                self.set_stream(name, Some(HubStream { also_invocation: true, ..stream }));
            }
        }
        Ok(())
    }

    fn hub_unsubscribe(&mut self, args: &[Value]) -> Result<(), Refusal> {
        let names = topic_list(args).ok_or_else(|| bad_args("Unsubscribe", "topics: string[], non-empty"))?;
        for name in &names {
            match self.stream_of(name).cloned() {
                // A stream keeps reading the topic; only the Invocations stop.
                Some(stream) => {
                    self.set_stream(name, Some(HubStream { also_invocation: false, ..stream }));
                }
                None => {
                    self.c.sub.unsubscribe(name);
                }
            }
        }
        Ok(())
    }

    fn hub_place_bid(&mut self, id: Option<&str>, args: &[Value]) -> Result<(), Refusal> {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let [lot, amount, Value::String(key)] = args else {
            return Err(bad_args("PlaceBid", "lotId: string, amount: string, idempotencyKey: string"));
        };
        let (Some(lot), Some(amount)) = (text(lot), text(amount)) else {
            return Err(bad_args("PlaceBid", "lotId: string, amount: string, idempotencyKey: string"));
        };
        let Some(user) = self.c.identity.user.clone() else {
            return Err((code::UNAUTHORIZED, "PlaceBid needs a logged-in connection (access_token)".to_owned()));
        };
        let hub = &mut self.hub;
        let op_id = match id {
            // A non-blocking invocation: the bid is placed, its answer dropped (the outcome still comes by push).
            None => 0,
            Some(_) if hub.pending.len() >= MAX_PENDING_INVOCATIONS => {
                let msg = format!("at most {MAX_PENDING_INVOCATIONS} invocations may wait for an answer at once");
                return Err((code::TOO_MANY_INVOCATIONS, msg));
            }
            Some(id) => {
                hub.next_id += 1;
                hub.pending.insert(hub.next_id, id.into());
                hub.next_id
            }
        };
        self.c.ops.push_back(AppOp::Bid { id: op_id, user, lot, amount, key: key.clone() });
        Ok(())
    }

    fn hub_stream_ticks(&mut self, id: &str, args: &[Value]) -> Result<(), Refusal> {
        let [Value::String(symbol)] = args else { return Err(bad_args("StreamTicks", "symbol: string")) };
        let topic = format!("{TICKS_PREFIX}{symbol}");
        let hub = &self.hub;
        if hub.streams.contains_key(id) {
            return Err((code::BAD_REQUEST, format!("stream {id:?} is already open")));
        }
        if hub.streams.len() >= MAX_STREAMS {
            return Err((code::TOO_MANY_INVOCATIONS, format!("at most {MAX_STREAMS} streams per connection")));
        }
        // One stream per topic: a newer one takes the topic over and the older completes.
        if let Some(old) = self.stream_of(&topic).cloned() {
            self.end_stream(&old.id);
        }
        let subscribed = self.c.sub.is_subscribed(&topic);
        if !subscribed {
            self.c.subscribe_topics(std::slice::from_ref(&topic), None, false)?;
        }
        let id: Arc<str> = id.into();
        self.set_stream(&topic, Some(HubStream { id: id.clone(), also_invocation: subscribed }));
        self.hub.streams.insert(id, topic);
        self.c.sub.signal().schedule();
        Ok(())
    }

    /// Ends stream `id` (cancelled, or its topic unsubscribed or taken over) with its Completion.
    fn end_stream(&mut self, id: &str) {
        let Some(topic) = self.hub.streams.remove(id) else { return };
        if self.stream_of(&topic).is_some_and(|s| s.also_invocation) {
            self.set_stream(&topic, None);
        } else {
            self.c.sub.unsubscribe(&topic);
        }
        self.push_completion(id, Ok(None));
    }

    fn hub_op_result(&mut self, op_id: u64, result: Result<&str, (&str, &str)>) {
        let Some(id) = self.hub.pending.remove(&op_id) else { return };
        self.push_completion(&id, result.map(Some));
    }

    /// `{"type":3,"invocationId":ID}` with `result` (raw JSON), `error` (`"code: message"`), or neither.
    fn push_completion(&mut self, id: &str, result: Result<Option<&str>, (&str, &str)>) {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"type\":3,\"invocationId\":\"");
        push_json_str(&mut out, id);
        out.push(b'"');
        match result {
            Ok(None) => {}
            Ok(Some(json)) => {
                out.extend_from_slice(b",\"result\":");
                out.extend_from_slice(json.as_bytes());
            }
            Err((c, m)) => {
                out.extend_from_slice(b",\"error\":\"");
                push_json_str(&mut out, c);
                out.extend_from_slice(b": ");
                push_json_str(&mut out, m);
                out.push(b'"');
            }
        }
        out.push(b'}');
        self.batch.push_hub_message(&out);
        self.c.sub.signal().schedule();
    }

    /// Queues a Ping (`{"type":6}`). A no-op before the handshake and after a close.
    fn keep_alive(&mut self) {
        if self.c.close.is_none() && self.hub.handshake_done {
            self.batch.push_hub_message(b"{\"type\":6}");
            self.c.sub.signal().schedule();
        }
    }

    /// SignalR: turns on stateful reconnect (negotiated with `useStatefulReconnect`): trackable messages are kept
    /// until the client acknowledges them, up to `limit` bytes for this connection and `budget` for all together,
    /// and [`HubSession::resume`] sends them again on a new socket.
    pub fn enable_stateful_reconnect(&mut self, limit: usize, budget: Arc<ReplayBudget>) {
        let mut replay = Box::new(Replay::default());
        (replay.limit, replay.first_id, replay.budget) = (limit, 1, Some(budget));
        self.hub.replay = Some(replay);
    }

    /// SignalR stateful reconnect: the first frame for a new socket of this connection: a Sequence message with
    /// the id of the oldest unacknowledged message, then those messages again. `None` without stateful reconnect.
    pub fn resume(&mut self) -> Option<Vec<u8>> {
        let r = self.hub.replay.as_ref()?;
        let mut out = Vec::with_capacity(r.unacked_bytes() + 16);
        if self.batch.framing().is_msgpack() {
            let mut m = vec![0x92, 9];
            crate::msgpack::put_int(&mut m, r.first_id as i64);
            crate::msgpack::put_varint(&mut out, m.len());
            out.extend_from_slice(&m);
        } else {
            out.extend_from_slice(format!("{{\"type\":9,\"sequenceId\":{}}}\u{1e}", r.first_id).as_bytes());
        }
        out.extend_from_slice(&r.buf[r.head..]);
        self.c.sub.signal().schedule();
        Some(out)
    }

    /// Stateful reconnect: owes the client an Ack; true while the unacknowledged bytes are over the limit, when
    /// no new topic messages are taken.
    fn hub_before_drain(&mut self) -> bool {
        let Some(r) = self.hub.replay.as_mut() else { return false };
        if r.ack_due {
            r.ack_due = false;
            let ack = format!("{{\"type\":8,\"sequenceId\":{}}}", r.last_in);
            let paused = r.paused();
            self.batch.push_hub_message(ack.as_bytes());
            return paused;
        }
        r.paused()
    }

    /// Stateful reconnect: keeps what the batch about to be cleared held.
    fn hub_sent(&mut self) {
        let msgpack = self.batch.framing().is_msgpack();
        if let (Some(r), Some(frame)) = (self.hub.replay.as_mut(), self.in_flight.take()) {
            r.record(&frame, msgpack);
        }
    }

    /// SignalR: the transport carries text only (Server-Sent Events), so a MessagePack handshake is refused.
    pub fn set_text_only(&mut self) {
        self.hub.text_only = true;
    }

    /// Stateful reconnect is on: negotiated, and the handshake asked for a protocol version that has it (2). A
    /// connection without it ends when its WebSocket drops.
    pub fn stateful_reconnect(&self) -> bool {
        self.hub.replay.is_some()
    }

    /// The transport keeps the connection alive by itself (long polling, whose clients send no Pings): no hub
    /// Pings are sent, as in ASP.NET Core; a poller that stops polling is the transport's to notice.
    pub fn set_inherent_keep_alive(&mut self) {
        self.c.config.timers.keep_alive = None;
        self.client_timeout = None;
        self.c.config.timers.idle_timeout = None;
    }

    /// SignalR: true once the handshake succeeded.
    pub fn handshake_done(&self) -> bool {
        self.hub.handshake_done
    }

    /// The Close message (`{"type":7,...}`) that tells a SignalR client why the server closes, once.
    fn push_hub_close(&mut self) {
        let Some(reason) = &self.c.close else { return };
        let hub = &mut self.hub;
        if hub.close_sent || !hub.handshake_done {
            return;
        }
        hub.close_sent = true;
        let (error, reconnect) = match reason {
            CloseReason::Normal => (None, false),
            CloseReason::GoingAway | CloseReason::SlowConsumer(_) | CloseReason::IdleTimeout => {
                (Some(reason.to_string()), true)
            }
            _ => (Some(reason.to_string()), false),
        };
        let Some(error) = error else { return };
        let mut out = b"{\"type\":7,\"error\":\"".to_vec();
        push_json_str(&mut out, &format!("{}: {error}", reason.code()));
        out.extend_from_slice(if reconnect { b"\",\"allowReconnect\":true}" } else { b"\"}" });
        self.batch.push_hub_message(&out);
    }
}

/// The one argument of Subscribe/Unsubscribe: a non-empty array of strings.
fn topic_list(args: &[Value]) -> Option<Vec<String>> {
    let [Value::Array(items)] = args else { return None };
    if items.is_empty() {
        return None;
    }
    items.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_engine::{EngineConfig, Price, Tick};
    use std::time::Duration;

    fn tick(p: i64) -> Tick {
        Tick { price: Price(p * 1_000_000_000), size: 1, ..Default::default() }
    }

    /// The hub messages of one batch, parsed.
    fn recv(s: &mut HubSession) -> Vec<Value> {
        let Some(f) = s.poll_transmit() else { return Vec::new() };
        assert_eq!(f.last(), Some(&RECORD_SEPARATOR), "every batch ends with a separator");
        let out =
            f[..f.len() - 1].split(|&b| b == RECORD_SEPARATOR).map(|m| serde_json::from_slice(m).unwrap()).collect();
        s.sent();
        out
    }

    fn connected(engine: &Arc<Engine>) -> HubSession {
        let mut s = HubSession::new(engine.clone(), SessionConfig::default());
        s.handle_frame(b"{\"protocol\":\"json\",\"version\":1}\x1e", Instant::now());
        assert_eq!(recv(&mut s), vec![serde_json::json!({})]);
        s
    }

    #[test]
    fn signalr_subscribe_completes_then_ticks_arrive_as_invocations_in_one_frame() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        w.publish_tick(&tick(1), 10).unwrap();
        let mut s = connected(&engine);
        // Two messages in one frame, the second split across frames.
        s.handle_frame(b"{\"type\":6}\x1e{\"type\":1,\"invocationId\":\"0\",\"target\":\"subscribe\",", Instant::now());
        s.handle_frame(b"\"arguments\":[[\"ticks.AAPL\"]]}\x1e", Instant::now());
        let out = recv(&mut s);
        assert_eq!(out[0], serde_json::json!({"type": 3, "invocationId": "0"}));
        assert_eq!(out[1]["type"], 1);
        assert_eq!(out[1]["target"], "tick");
        assert_eq!(out[1]["arguments"][0]["type"], "snapshot");
        w.publish_tick(&tick(2), 11).unwrap();
        w.publish_tick(&tick(3), 12).unwrap();
        let out = recv(&mut s);
        assert_eq!(out.len(), 2, "two ticks batched into one frame");
        for (m, seq) in out.iter().zip([2, 3]) {
            assert_eq!(m["target"], "tick");
            assert_eq!(m["arguments"][0]["type"], "tick");
            assert_eq!(m["arguments"][0]["seq"], seq);
            assert_eq!(m["arguments"][0]["symbol"], "AAPL");
        }
    }

    #[test]
    fn signalr_bad_handshake_is_answered_with_an_error_and_closes() {
        let engine = Engine::new(EngineConfig::default());
        for (hs, want) in [
            (&b"{\"protocol\":\"bson\",\"version\":1}\x1e"[..], "bson"),
            (b"{\"protocol\":\"json\",\"version\":7}\x1e", "version 7"),
            (b"hello\x1e", "bad_request"),
        ] {
            let mut s = HubSession::new(engine.clone(), SessionConfig::default());
            s.handle_frame(hs, Instant::now());
            let out = recv(&mut s);
            assert!(out[0]["error"].as_str().unwrap().contains(want), "{out:?}");
            assert_eq!(out.len(), 1, "no Close message after a failed handshake");
            assert_eq!(s.poll_close().map(CloseReason::code), Some(1002));
        }
    }

    #[test]
    fn signalr_every_hub_protocol_version_up_to_2_is_accepted_as_aspnet_core_does() {
        let engine = Engine::new(EngineConfig::default());
        for protocol in ["json", "messagepack"] {
            for version in 0..=2 {
                let mut s = HubSession::new(engine.clone(), SessionConfig::default());
                let hs = format!("{{\"protocol\":\"{protocol}\",\"version\":{version}}}\x1e");
                s.handle_frame(hs.as_bytes(), Instant::now());
                let out = s.poll_transmit().unwrap().to_vec();
                s.sent();
                assert_eq!(out, b"{}\x1e", "{protocol} version {version}");
                assert!(s.handshake_done() && s.poll_close().is_none(), "{protocol} version {version}");
            }
            let mut s = HubSession::new(engine.clone(), SessionConfig::default());
            s.handle_frame(format!("{{\"protocol\":\"{protocol}\",\"version\":3}}\x1e").as_bytes(), Instant::now());
            let out = String::from_utf8(s.poll_transmit().unwrap().to_vec()).unwrap();
            assert!(out.contains("does not support version 3"), "{out}");
        }
        // Below version 2 there is no Ack or Sequence, so no stateful reconnect even when negotiated.
        let mut s = HubSession::new(engine.clone(), SessionConfig::default());
        s.enable_stateful_reconnect(1 << 20, ReplayBudget::new(usize::MAX));
        s.handle_frame(b"{\"protocol\":\"json\",\"version\":1}\x1e", Instant::now());
        recv(&mut s);
        assert!(s.resume().is_none());
    }

    #[test]
    fn signalr_unknown_method_and_wrong_arguments_get_error_completions_and_keep_the_connection() {
        let engine = Engine::new(EngineConfig::default());
        engine.create_topic("ticks.AAPL").unwrap();
        let mut s = connected(&engine);
        let cases: [(&[u8], &str); 5] = [
            (b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Nope\",\"arguments\":[]}\x1e", "unknown_method: "),
            (b"{\"type\":1,\"invocationId\":\"2\",\"target\":\"Subscribe\",\"arguments\":[5]}\x1e", "bad_request: "),
            (
                b"{\"type\":1,\"invocationId\":\"3\",\"target\":\"Subscribe\",\"arguments\":[[\"ticks.ZZZ\"]]}\x1e",
                "unknown_topic: ",
            ),
            (
                b"{\"type\":1,\"invocationId\":\"4\",\"target\":\"PlaceBid\",\"arguments\":[\"1\",\"2\",\"k\"]}\x1e",
                "unauthorized: ",
            ),
            (
                b"{\"type\":1,\"invocationId\":\"5\",\"target\":\"StreamTicks\",\"arguments\":[\"AAPL\"]}\x1e",
                "bad_request: ",
            ),
        ];
        for (msg, want) in cases {
            s.handle_frame(msg, Instant::now());
            let out = recv(&mut s);
            assert_eq!(out[0]["type"], 3);
            assert!(out[0]["error"].as_str().unwrap().starts_with(want), "{out:?}");
        }
        assert!(s.poll_close().is_none());
        // No reply for a non-blocking invocation, even a failing one.
        s.handle_frame(b"{\"type\":1,\"target\":\"Nope\",\"arguments\":[]}\x1e", Instant::now());
        assert!(recv(&mut s).is_empty());
    }

    #[test]
    fn signalr_stream_items_then_cancel_completes_and_stops_them() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        let mut s = connected(&engine);
        s.handle_frame(
            b"{\"type\":4,\"invocationId\":\"7\",\"target\":\"StreamTicks\",\"arguments\":[\"AAPL\"]}\x1e",
            Instant::now(),
        );
        w.publish_tick(&tick(1), 1).unwrap();
        let out = recv(&mut s);
        assert_eq!(out, vec![serde_json::json!({"type": 2, "invocationId": "7", "item": out[0]["item"].clone()})]);
        assert_eq!(out[0]["item"]["type"], "snapshot", "a stream starts with the topic's last value");
        w.publish_tick(&tick(2), 2).unwrap();
        let out = recv(&mut s);
        assert_eq!((out[0]["item"]["type"].as_str(), out[0]["item"]["seq"].as_u64()), (Some("tick"), Some(2)));
        s.handle_frame(b"{\"type\":5,\"invocationId\":\"7\"}\x1e", Instant::now());
        assert_eq!(recv(&mut s), vec![serde_json::json!({"type": 3, "invocationId": "7"})]);
        w.publish_tick(&tick(3), 3).unwrap();
        assert!(recv(&mut s).is_empty(), "no items after the cancel");
        assert!(!s.subscriber().is_subscribed("ticks.AAPL"));
    }

    #[test]
    fn signalr_a_stream_and_a_subscribe_of_the_same_topic_both_get_every_tick() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        w.publish_tick(&tick(1), 1).unwrap();
        let mut s = connected(&engine);
        s.handle_frame(
            b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Subscribe\",\"arguments\":[[\"ticks.AAPL\"]]}\x1e",
            Instant::now(),
        );
        assert_eq!(recv(&mut s).len(), 2, "completion and snapshot");
        s.handle_frame(
            b"{\"type\":4,\"invocationId\":\"2\",\"target\":\"StreamTicks\",\"arguments\":[\"AAPL\"]}\x1e",
            Instant::now(),
        );
        w.publish_tick(&tick(2), 2).unwrap();
        let out = recv(&mut s);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!((out[0]["type"].as_u64(), out[0]["item"]["seq"].as_u64()), (Some(2), Some(2)));
        assert_eq!((out[1]["target"].as_str(), out[1]["arguments"][0]["seq"].as_u64()), (Some("tick"), Some(2)));
        // Unsubscribe leaves the stream; cancelling it then ends the subscription too.
        s.handle_frame(
            b"{\"type\":1,\"invocationId\":\"3\",\"target\":\"Unsubscribe\",\"arguments\":[[\"ticks.AAPL\"]]}\x1e",
            Instant::now(),
        );
        w.publish_tick(&tick(3), 3).unwrap();
        let out = recv(&mut s);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], serde_json::json!({"type": 3, "invocationId": "3"}));
        assert_eq!(out[1]["item"]["seq"], 3);
        s.handle_frame(b"{\"type\":5,\"invocationId\":\"2\"}\x1e", Instant::now());
        assert_eq!(recv(&mut s), vec![serde_json::json!({"type": 3, "invocationId": "2"})]);
        assert!(!s.subscriber().is_subscribed("ticks.AAPL"));
    }

    #[test]
    fn signalr_stateful_reconnect_resends_what_was_not_acked_and_drops_resent_client_messages() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        w.publish_tick(&tick(1), 1).unwrap();
        let mut s = HubSession::new(engine.clone(), SessionConfig::default());
        s.enable_stateful_reconnect(1 << 20, ReplayBudget::new(usize::MAX));
        s.handle_frame(b"{\"protocol\":\"json\",\"version\":2}\x1e", Instant::now());
        let sub = b"{\"type\":1,\"invocationId\":\"s\",\"target\":\"Subscribe\",\"arguments\":[[\"ticks.AAPL\"]]}\x1e";
        s.handle_frame(sub, Instant::now());
        let out = recv(&mut s);
        // Handshake answer, Completion (id 1), our Ack of the client's message 1, snapshot (id 2).
        assert_eq!(out[0], serde_json::json!({}));
        assert_eq!(out[1], serde_json::json!({"type": 3, "invocationId": "s"}));
        assert!(out.contains(&serde_json::json!({"type": 8, "sequenceId": 1})), "{out:?}");
        w.publish_tick(&tick(2), 2).unwrap();
        w.publish_tick(&tick(3), 3).unwrap();
        assert_eq!(recv(&mut s).len(), 2, "ticks 2 and 3 are messages 3 and 4");
        // The client saw up to message 2; its socket drops; on the new one, 3 and 4 come again after a Sequence.
        s.handle_frame(b"{\"type\":8,\"sequenceId\":2}\x1e", Instant::now());
        let resume = s.resume().unwrap();
        let msgs: Vec<Value> = resume[..resume.len() - 1]
            .split(|&b| b == RECORD_SEPARATOR)
            .map(|m| serde_json::from_slice(m).unwrap())
            .collect();
        assert_eq!(msgs[0], serde_json::json!({"type": 9, "sequenceId": 3}));
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(
            (msgs[1]["arguments"][0]["seq"].as_u64(), msgs[2]["arguments"][0]["seq"].as_u64()),
            (Some(2), Some(3))
        );
        // The client resends its Subscribe (message 1) after its own Sequence: handled once, so no second Completion.
        s.handle_frame(b"{\"type\":9,\"sequenceId\":1}\x1e", Instant::now());
        s.handle_frame(sub, Instant::now());
        let out = recv(&mut s);
        assert!(out.iter().all(|m| m["type"] != 3), "{out:?}");
        // Everything acked: a resume has nothing to resend.
        s.handle_frame(b"{\"type\":8,\"sequenceId\":4}\x1e", Instant::now());
        assert_eq!(s.resume().unwrap(), b"{\"type\":9,\"sequenceId\":5}\x1e");
        // A Sequence past what the server received is a protocol error.
        s.handle_frame(b"{\"type\":9,\"sequenceId\":7}\x1e", Instant::now());
        assert_eq!(s.poll_close().map(CloseReason::code), Some(1002));
    }

    /// A JSON hub connection with stateful reconnect (`limit` bytes, `budget` shared), subscribed to `ticks.AAPL`,
    /// its handshake answer, Completion and snapshot taken.
    fn stateful_subscriber(engine: &Arc<Engine>, limit: usize, budget: Arc<ReplayBudget>) -> HubSession {
        let mut s = HubSession::new(engine.clone(), SessionConfig::default());
        s.enable_stateful_reconnect(limit, budget);
        s.handle_frame(b"{\"protocol\":\"json\",\"version\":2}\x1e", Instant::now());
        let sub = b"{\"type\":1,\"invocationId\":\"s\",\"target\":\"Subscribe\",\"arguments\":[[\"ticks.AAPL\"]]}\x1e";
        s.handle_frame(sub, Instant::now());
        recv(&mut s);
        s
    }

    #[test]
    fn signalr_stateful_reconnect_stops_taking_topic_messages_past_its_buffer_until_acked() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        let mut s = stateful_subscriber(&engine, 300, ReplayBudget::new(usize::MAX));
        for i in 0..4 {
            w.publish_tick(&tick(i + 1), i).unwrap();
        }
        let first = recv(&mut s);
        assert!(!first.is_empty());
        w.publish_tick(&tick(9), 9).unwrap();
        assert!(recv(&mut s).is_empty(), "over the buffer: nothing new until an Ack");
        s.handle_frame(b"{\"type\":8,\"sequenceId\":100}\x1e", Instant::now());
        assert!(!recv(&mut s).is_empty(), "the Ack frees the buffer");
    }

    /// Connections that never acknowledge stop taking topic messages once their buffers together pass the shared
    /// budget, even though each is under its own limit; an Ack and a connection's end give the bytes back.
    #[test]
    fn signalr_stateful_reconnect_buffers_share_a_total_budget() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        let budget = ReplayBudget::new(600);
        let mut sessions: Vec<HubSession> =
            (0..3).map(|_| stateful_subscriber(&engine, 1 << 20, budget.clone())).collect();
        assert!(budget.used() > 0 && budget.used() <= 600, "the snapshots are held: {}", budget.used());
        for round in 0..4 {
            w.publish_tick(&tick(round + 1), round).unwrap();
            for s in &mut sessions {
                recv(s);
            }
        }
        let held = budget.used();
        assert!(held > 600, "past the budget after a few rounds: {held}");
        w.publish_tick(&tick(50), 50).unwrap();
        for s in &mut sessions {
            assert!(recv(s).is_empty(), "over the total budget: nothing new until an Ack");
        }
        assert_eq!(budget.used(), held, "nothing more was buffered");
        sessions[0].handle_frame(b"{\"type\":8,\"sequenceId\":1000}\x1e", Instant::now());
        assert!(budget.used() < held, "an Ack gives bytes back");
        sessions.clear();
        assert_eq!(budget.used(), 0, "closed connections give everything back");
    }

    #[test]
    fn signalr_subscribe_with_since_resumes_from_a_position() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        for i in 1..=5 {
            w.publish_tick(&tick(i), i).unwrap();
        }
        let epoch = engine.topic("ticks.AAPL").unwrap().epoch();
        let mut s = connected(&engine);
        let sub = serde_json::json!({"type": 1, "invocationId": "1", "target": "Subscribe",
            "arguments": [["ticks.AAPL"], {"ticks.AAPL": {"epoch": epoch, "seq": 3}}]});
        s.handle_frame(format!("{sub}\u{1e}").as_bytes(), Instant::now());
        let out = recv(&mut s);
        assert_eq!(out[0], serde_json::json!({"type": 3, "invocationId": "1"}));
        let seqs: Vec<u64> = out[1..].iter().map(|m| m["arguments"][0]["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [4, 5], "the ticks after seq 3, no snapshot");
        let bad = r#"{"type":1,"invocationId":"2","target":"Subscribe","arguments":[["ticks.AAPL"],{"ticks.AAPL":7}]}"#;
        s.handle_frame(format!("{bad}\u{1e}").as_bytes(), Instant::now());
        assert!(recv(&mut s)[0]["error"].as_str().unwrap().starts_with("bad_request: Subscribe's since"));
    }

    /// The MessagePack frames of one batch, decoded.
    fn recv_msgpack(s: &mut HubSession) -> Vec<Value> {
        let Some(f) = s.poll_transmit() else { return Vec::new() };
        let mut rest = &f[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (n, head) = crate::msgpack::get_varint(rest).unwrap().unwrap();
            let (v, used) = crate::msgpack::decode(&rest[head..head + n]).unwrap();
            assert_eq!(used, n);
            out.push(v);
            rest = &rest[head + n..];
        }
        s.sent();
        out
    }

    #[test]
    fn signalr_messagepack_handshake_then_binary_hub_messages_both_ways() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("ticks.AAPL").unwrap();
        w.publish_tick(&tick(1), 1).unwrap();
        let mut s = HubSession::new(engine.clone(), SessionConfig::default());
        // The handshake is JSON; the Subscribe after it, in the same frame, is MessagePack:
        // [1, {}, "0", "Subscribe", [["ticks.AAPL"]], []].
        let mut frame = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec();
        let sub = [
            0x96, 0x01, 0x80, 0xa1, b'0', 0xa9, b'S', b'u', b'b', b's', b'c', b'r', b'i', b'b', b'e', 0x91, 0x91, 0xaa,
            b't', b'i', b'c', b'k', b's', b'.', b'A', b'A', b'P', b'L', 0x90,
        ];
        crate::msgpack::put_varint(&mut frame, sub.len());
        frame.extend_from_slice(&sub);
        s.handle_frame(&frame, Instant::now());
        assert!(s.binary_frames());
        let f = s.poll_transmit().unwrap().to_vec();
        s.sent();
        assert!(f.starts_with(b"{}\x1e"), "the handshake answer is JSON text");
        let mut rest = &f[3..];
        let mut msgs = Vec::new();
        while !rest.is_empty() {
            let (n, head) = crate::msgpack::get_varint(rest).unwrap().unwrap();
            msgs.push(crate::msgpack::decode(&rest[head..head + n]).unwrap().0);
            rest = &rest[head + n..];
        }
        assert_eq!(msgs[0], serde_json::json!([3, {}, "0", 2]), "a void Completion");
        assert_eq!((msgs[1][0].as_u64(), msgs[1][3].as_str()), (Some(1), Some("tick")));
        assert_eq!(msgs[1][4][0]["type"], "snapshot");
        w.publish_tick(&tick(2), 2).unwrap();
        let out = recv_msgpack(&mut s);
        assert_eq!((out[0][4][0]["seq"].as_u64(), out[0][4][0]["price"].as_f64()), (Some(2), Some(2.0)));
        s.keep_alive();
        assert_eq!(recv_msgpack(&mut s), vec![serde_json::json!([6])]);
        // Garbage in MessagePack closes with a Close message, in MessagePack.
        s.handle_frame(&[0x02, 0xc1, 0xc1], Instant::now());
        let out = recv_msgpack(&mut s);
        assert_eq!(out[0][0], 7, "{out:?}");
        assert!(out[0][1].as_str().unwrap().contains("bad_request"), "{out:?}");
    }

    #[test]
    fn signalr_messagepack_is_refused_on_a_text_only_transport() {
        let engine = Engine::new(EngineConfig::default());
        let mut s = HubSession::new(engine.clone(), SessionConfig::default());
        s.set_text_only();
        s.handle_frame(b"{\"protocol\":\"messagepack\",\"version\":1}\x1e", Instant::now());
        let out = recv(&mut s);
        assert!(out[0]["error"].as_str().unwrap().contains("Binary transfer format"), "{out:?}");
    }

    #[test]
    fn signalr_user_events_reach_the_user_with_camel_case_targets_and_bids_complete_with_their_id() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_topic("users.alice").unwrap();
        w.publish_event("bid_result", r#"{"status":"accepted"}"#, 1).unwrap();
        let mut s = HubSession::new(engine.clone(), SessionConfig::default());
        s.set_identity(Identity { user: Some("alice".into()), publisher: false });
        s.handle_frame(b"{\"protocol\":\"json\",\"version\":1}\x1e", Instant::now());
        assert_eq!(recv(&mut s), vec![serde_json::json!({})], "no snapshot of old private events");
        s.handle_frame(
            b"{\"type\":1,\"invocationId\":\"9\",\"target\":\"PlaceBid\",\"arguments\":[\"7\",\"105.00\",\"k1\"]}\x1e",
            Instant::now(),
        );
        let Some(AppOp::Bid { id, user, lot, amount, key }) = s.poll_op() else { panic!("no bid op") };
        assert_eq!((user.as_str(), lot.as_str(), amount.as_str(), key.as_str()), ("alice", "7", "105.00", "k1"));
        s.handle_op_result(id, Ok(r#"{"bid_id":"7-1"}"#));
        w.publish_event("bid_result", r#"{"status":"accepted","key":"k1"}"#, 2).unwrap();
        let out = recv(&mut s);
        assert_eq!(out[0], serde_json::json!({"type": 3, "invocationId": "9", "result": {"bid_id": "7-1"}}));
        assert_eq!(out[1]["target"], "bidResult");
        assert_eq!(out[1]["arguments"][0]["type"], "bid_result");
        assert_eq!(out[1]["arguments"][0]["key"], "k1");
    }

    #[test]
    fn signalr_oversized_or_garbled_messages_close_with_a_close_message() {
        let engine = Engine::new(EngineConfig::default());
        let cfg = SessionConfig { max_frame_bytes: 1024, ..SessionConfig::default() };
        let mut s = HubSession::new(engine.clone(), cfg);
        s.handle_frame(b"{\"protocol\":\"json\",\"version\":1}\x1e", Instant::now());
        recv(&mut s);
        s.handle_frame(&[b' '; 2000], Instant::now());
        assert_eq!(s.poll_close().map(CloseReason::code), Some(1009));
        let out = recv(&mut s);
        assert_eq!(out[0]["type"], 7);
        assert!(out[0]["error"].as_str().unwrap().contains("too large"));

        let mut s = connected(&engine);
        s.handle_frame(b"{not json\x1e", Instant::now());
        let out = recv(&mut s);
        assert_eq!(out[0]["type"], 7);
        assert!(out[0]["error"].as_str().unwrap().contains("bad_json"), "{out:?}");
    }

    fn timed(engine: &Arc<Engine>) -> HubSession {
        let timers = crate::Timers {
            keep_alive: Some(Duration::from_secs(15)),
            idle_timeout: Some(Duration::from_secs(30)),
            handshake_timeout: Some(Duration::from_secs(15)),
        };
        HubSession::new(engine.clone(), SessionConfig { timers, ..SessionConfig::default() })
    }

    #[test]
    fn signalr_no_handshake_in_time_closes_on_simulated_time() {
        let engine = Engine::new(EngineConfig::default());
        let mut s = timed(&engine);
        let t0 = Instant::now();
        s.heard(t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(15)));
        s.handle_timeout(t0 + Duration::from_secs(15));
        assert_eq!(s.poll_close().map(CloseReason::code), Some(1002));
        assert!(s.poll_close().unwrap().to_string().contains("no handshake"));
        // No Ping and no Close message before a handshake: the handshake answer ASP.NET Core sends then.
        assert_eq!(recv(&mut s), vec![serde_json::json!({"error": "Handshake was canceled."})]);
    }

    #[test]
    fn signalr_keep_alive_pings_then_the_client_timeout_closes_with_a_reconnectable_close() {
        let engine = Engine::new(EngineConfig::default());
        let mut s = timed(&engine);
        let t0 = Instant::now();
        s.handle_frame(b"{\"protocol\":\"json\",\"version\":1}\x1e", t0);
        assert_eq!(recv(&mut s), vec![serde_json::json!({})]);
        s.handle_timeout(t0 + Duration::from_secs(15));
        assert_eq!(recv(&mut s), vec![serde_json::json!({"type": 6})], "a Ping every keep-alive");
        // The client pings at 20 s; its timeout runs from there.
        s.handle_frame(b"{\"type\":6}\x1e", t0 + Duration::from_secs(20));
        s.handle_timeout(t0 + Duration::from_secs(30));
        assert_eq!(recv(&mut s), vec![serde_json::json!({"type": 6})]);
        assert!(s.poll_close().is_none());
        s.handle_timeout(t0 + Duration::from_secs(50));
        assert!(s.signal().is_scheduled(), "the Close message is due");
        let out = recv(&mut s);
        assert_eq!(out, vec![serde_json::json!({"type": 7, "error": "4000: idle timeout", "allowReconnect": true})]);
        assert_eq!(s.poll_close(), Some(&CloseReason::IdleTimeout));
    }

    #[test]
    fn signalr_client_timeout_waits_for_the_first_ping_and_long_polling_gets_no_pings() {
        let engine = Engine::new(EngineConfig::default());
        let mut s = timed(&engine);
        let t0 = Instant::now();
        s.handle_frame(b"{\"protocol\":\"JSON\",\"version\":1}\x1e", t0);
        assert_eq!(recv(&mut s), vec![serde_json::json!({})], "protocol names in any case");
        // A client that never pings is never timed out by the hub (its transport's own timeouts apply).
        s.handle_timeout(t0 + Duration::from_secs(300));
        assert!(s.poll_close().is_none());
        // An empty invocation id asks for no answer.
        s.handle_frame(b"{\"type\":1,\"invocationId\":\"\",\"target\":\"Nope\",\"arguments\":[]}\x1e", t0);
        assert!(recv(&mut s).iter().all(|m| m["type"] != 3));
        let mut lp = timed(&engine);
        lp.set_inherent_keep_alive();
        lp.handle_frame(b"{\"protocol\":\"json\",\"version\":1}\x1e", t0);
        recv(&mut lp);
        assert_eq!(lp.poll_timeout(), None, "no keep-alive and no client timeout on long polling");
        lp.handle_frame(b"{\"type\":6}\x1e", t0);
        assert_eq!(lp.poll_timeout(), None);
    }
}
