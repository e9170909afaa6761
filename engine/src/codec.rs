//! Wire codecs: how events are laid out in JSON and in the `marquee.bin` binary encoding.
//!
//! Every message is encoded once per format at publish time, as a *body*. A body lacks the few bytes that differ
//! between a live event and a snapshot (the JSON `"type"` member, the binary record header), so the same stored
//! bytes serve both: [`BatchWriter`] writes that header while it copies the body into a connection's batch.
//!
//! JSON batch: `[` events separated by `,` `]`; an event is `{"type":"tick",` + body, where the body is the rest
//! of the object including its closing brace.
//!
//! Binary batch: records back to back. A record is an 8-byte header `len: u32 LE` (bytes after the length field),
//! `type: u8`, `kind: u8`, `flags: u8`, `0: u8`, then the body. See `docs/PROTOCOL.md` for every layout.

use crate::{Price, Tick};

/// A wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text frames (the default).
    Json,
    /// The compact binary encoding, chosen by the WebSocket subprotocol `marquee.bin`.
    Binary,
    /// The SignalR hub protocol: every event is a hub message (an Invocation of target `tick`, `gap`,
    /// `lotUpdate`..., or a StreamItem of a server-to-client stream) ending with the record separator `0x1E`; the
    /// argument is the same object the `Json` encoding sends. After a MessagePack handshake
    /// ([`BatchWriter::set_msgpack`]) each message is transcoded into the MessagePack framing. See `docs/SIGNALR.md`.
    SignalR,
}

/// The SignalR record separator that ends every hub message.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// What a stored message is; picks the JSON `"type"` and the binary `kind` byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Kind {
    /// A market tick.
    Tick = 1,
    /// A named event with JSON fields (`bid_result`, `lot_update`, or any type a publisher chose). Its JSON
    /// `"type"` is stored in the body, not implied by the kind.
    Event = 2,
    /// The top of an order book (`book.*`, [`crate::depth`]). In JSON it travels like a named event `book`.
    Book = 3,
    /// A trade print (`trades.*`, [`crate::depth`]). In JSON it travels like a named event `trade`.
    Trade = 4,
}

impl Kind {
    /// Every stored kind byte is one the writer wrote from a `Kind`.
    pub(crate) fn from_u8(v: u8) -> Kind {
        match v {
            2 => Kind::Event,
            3 => Kind::Book,
            4 => Kind::Trade,
            _ => Kind::Tick,
        }
    }

    /// True for kinds whose JSON body starts with their type name (named events, books, trades), which the
    /// batch writer frames as named events.
    pub(crate) fn is_named(self) -> bool {
        self != Kind::Tick
    }

    /// The JSON `"type"` of a live event of this kind (`"event"` for [`Kind::Event`], whose real type name is
    /// per message).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tick => "tick",
            Kind::Event => "event",
            Kind::Book => "book",
            Kind::Trade => "trade",
        }
    }
}

/// Binary record types (`type` byte of the record header).
pub mod record {
    /// A live event; `kind` says which.
    pub const EVENT: u8 = 1;
    /// A snapshot of a topic's last value; `kind` says which; flag bit 0 is `recovered`.
    pub const SNAPSHOT: u8 = 2;
    /// Answer to an op: body `id: u64`.
    pub const ACK: u8 = 3;
    /// Answer to `ping`: body `id: u64`.
    pub const PONG: u8 = 4;
    /// Skipped sequence numbers: body `from: u64`, `to: u64`, `topic_len: u8`, topic.
    pub const GAP: u8 = 5;
    /// An error: body `id: u64` (0 when none), `code_len: u8`, code, `msg_len: u16`, message.
    pub const ERROR: u8 = 6;
    /// Header size in bytes.
    pub const HEADER_LEN: usize = 8;
}

/// Absent optional price or size in the binary tick body.
pub const ABSENT: i64 = i64::MIN;

/// Encodes ticks of one topic. What never changes for the topic (its name, symbol and epoch) is rendered once
/// here, so a publish only formats the seq, the time and the numbers.
#[derive(Clone, Debug)]
pub struct TickEncoder {
    /// `"topic":"ticks.AAPL","epoch":E,"seq":`
    json_head: Vec<u8>,
    /// `,"symbol":"AAPL","price":`
    json_symbol: Vec<u8>,
    /// `topic_len u8` + topic, the tail of the binary body.
    bin_topic: Vec<u8>,
    epoch: u64,
}

impl TickEncoder {
    /// An encoder for `topic` (`ticks.AAPL`; the symbol is the part after `ticks.`) in `epoch`.
    pub fn new(topic: &str, epoch: u64) -> TickEncoder {
        let symbol = topic.strip_prefix(crate::TICKS_PREFIX).unwrap_or(topic);
        let mut json_head = b"\"topic\":\"".to_vec();
        push_json_str(&mut json_head, topic);
        json_head.extend_from_slice(b"\",\"epoch\":");
        json_head.extend_from_slice(itoa::Buffer::new().format(epoch).as_bytes());
        json_head.extend_from_slice(b",\"seq\":");
        let mut json_symbol = b",\"symbol\":\"".to_vec();
        push_json_str(&mut json_symbol, symbol);
        json_symbol.extend_from_slice(b"\",\"price\":");
        let t = &topic.as_bytes()[..topic.len().min(255)];
        let mut bin_topic = vec![t.len() as u8];
        bin_topic.extend_from_slice(t);
        TickEncoder { json_head, json_symbol, bin_topic, epoch }
    }

    /// Appends the JSON body (everything after `{"type":"tick",`).
    pub fn encode_json(&self, out: &mut Vec<u8>, seq: u64, ts: i64, t: &Tick) {
        let mut ib = itoa::Buffer::new();
        out.extend_from_slice(&self.json_head);
        out.extend_from_slice(ib.format(seq).as_bytes());
        out.extend_from_slice(b",\"ts\":");
        out.extend_from_slice(ib.format(ts).as_bytes());
        out.extend_from_slice(&self.json_symbol);
        t.price.write_decimal(out);
        out.extend_from_slice(b",\"size\":");
        out.extend_from_slice(ib.format(t.size).as_bytes());
        if let Some(p) = t.bid {
            out.extend_from_slice(b",\"bid\":");
            p.write_decimal(out);
        }
        if let Some(p) = t.ask {
            out.extend_from_slice(b",\"ask\":");
            p.write_decimal(out);
        }
        if let Some(s) = t.bid_size {
            out.extend_from_slice(b",\"bid_size\":");
            out.extend_from_slice(ib.format(s).as_bytes());
        }
        if let Some(s) = t.ask_size {
            out.extend_from_slice(b",\"ask_size\":");
            out.extend_from_slice(ib.format(s).as_bytes());
        }
        out.push(b'}');
    }

    /// Appends the binary body: `epoch u64, seq u64, ts i64, price i64, size u64, bid i64, ask i64,
    /// bid_size i64, ask_size i64` (little-endian, [`ABSENT`] for a missing optional), `topic_len u8`, topic.
    pub fn encode_bin(&self, out: &mut Vec<u8>, seq: u64, ts: i64, t: &Tick) {
        let opt = |v: Option<u64>| v.map_or(ABSENT, |v| v as i64);
        let fields = [
            self.epoch as i64,
            seq as i64,
            ts,
            t.price.units(),
            t.size as i64,
            t.bid.map_or(ABSENT, Price::units),
            t.ask.map_or(ABSENT, Price::units),
            opt(t.bid_size),
            opt(t.ask_size),
        ];
        let mut raw = [0u8; 72];
        for (chunk, v) in raw.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&raw);
        out.extend_from_slice(&self.bin_topic);
    }
}

/// Encodes a tick's JSON body (everything after `{"type":"tick",`). Publishing uses a cached [`TickEncoder`].
pub fn encode_tick_json(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, t: &Tick) {
    TickEncoder::new(topic, epoch).encode_json(out, seq, ts, t);
}

/// Encodes a tick's binary body; see [`TickEncoder::encode_bin`].
pub fn encode_tick_bin(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, t: &Tick) {
    TickEncoder::new(topic, epoch).encode_bin(out, seq, ts, t);
}

/// Event type names that would collide with the protocol's own `type`s.
const RESERVED_EVENT_TYPES: &[&str] = &["tick", "book", "trade", "snapshot", "ack", "pong", "gap", "error", "event"];

/// Fields every event carries, which a publisher's fields may therefore not name.
pub const RESERVED_EVENT_FIELDS: &[&str] = &["type", "topic", "epoch", "seq", "ts", "event", "recovered"];

/// True for a usable event type name: 1-64 bytes of `[A-Za-z0-9_.-]`, not one of the protocol's own types.
pub fn valid_event_type(ty: &str) -> bool {
    !ty.is_empty()
        && ty.len() <= 64
        && ty.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !RESERVED_EVENT_TYPES.contains(&ty)
}

/// Why event fields were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventFieldsError {
    /// Not a JSON object.
    NotAnObject,
    /// A member named like one of [`RESERVED_EVENT_FIELDS`].
    ReservedField,
}

impl std::fmt::Display for EventFieldsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventFieldsError::NotAnObject => "event fields must be one JSON object",
            EventFieldsError::ReservedField => {
                "event fields may not name type, topic, epoch, seq, ts, event or recovered"
            }
        })
    }
}

impl std::error::Error for EventFieldsError {}

/// Checks that `fields` is one JSON object none of whose top-level members is reserved. Allocates nothing.
pub fn check_event_fields(fields: &str) -> Result<(), EventFieldsError> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Obj;
    struct Key;
    impl<'de> Visitor<'de> for Key {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<bool, E> {
            Ok(RESERVED_EVENT_FIELDS.contains(&k))
        }
    }
    impl<'de> serde::de::DeserializeSeed<'de> for Key {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for Obj {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut reserved = false;
            while let Some(r) = map.next_key_seed(Key)? {
                reserved |= r;
                map.next_value::<IgnoredAny>()?;
            }
            Ok(reserved)
        }
    }
    let mut de = serde_json::Deserializer::from_str(fields);
    let reserved = (&mut de).deserialize_map(Obj).map_err(|_| EventFieldsError::NotAnObject)?;
    de.end().map_err(|_| EventFieldsError::NotAnObject)?;
    if reserved { Err(EventFieldsError::ReservedField) } else { Ok(()) }
}

/// The members of a JSON object text without its braces (`{"a":1}` gives `"a":1`; `{}` gives ``).
fn object_members(fields: &str) -> &str {
    let t = fields.trim();
    t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or("").trim()
}

/// Appends an event's JSON body: `"<ty>","topic":T,"epoch":E,"seq":S,"ts":TS,<members of fields>}`. The batch
/// writer puts `{"type":` (live) or `{"type":"snapshot","recovered":R,"event":` (snapshot) before it. `fields`
/// must have passed [`check_event_fields`].
pub fn encode_event_json(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, ty: &str, fields: &str) {
    let mut ib = itoa::Buffer::new();
    out.push(b'"');
    push_json_str(out, ty);
    out.extend_from_slice(b"\",\"topic\":\"");
    push_json_str(out, topic);
    out.extend_from_slice(b"\",\"epoch\":");
    out.extend_from_slice(ib.format(epoch).as_bytes());
    out.extend_from_slice(b",\"seq\":");
    out.extend_from_slice(ib.format(seq).as_bytes());
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(ib.format(ts).as_bytes());
    let members = object_members(fields);
    if !members.is_empty() {
        out.push(b',');
        out.extend_from_slice(members.as_bytes());
    }
    out.push(b'}');
}

/// Appends an event's binary body: `epoch u64, seq u64, ts i64, topic_len u8, topic, type_len u8, type`, then the
/// fields as one JSON object text up to the end of the record.
pub fn encode_event_bin(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, ty: &str, fields: &str) {
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    let t = &topic.as_bytes()[..topic.len().min(255)];
    out.push(t.len() as u8);
    out.extend_from_slice(t);
    let y = &ty.as_bytes()[..ty.len().min(255)];
    out.push(y.len() as u8);
    out.extend_from_slice(y);
    out.push(b'{');
    out.extend_from_slice(object_members(fields).as_bytes());
    out.push(b'}');
}

/// A decoded binary event record (kind 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinEvent {
    /// Record type: [`record::EVENT`] or [`record::SNAPSHOT`].
    pub record_type: u8,
    /// Snapshot `recovered` flag.
    pub recovered: bool,
    /// Topic name.
    pub topic: String,
    /// Epoch.
    pub epoch: u64,
    /// Sequence number.
    pub seq: u64,
    /// Publish time, Unix ns.
    pub ts: i64,
    /// The event's type name (`bid_result`, ...).
    pub event_type: String,
    /// The event's fields: one JSON object.
    pub fields: String,
}

/// A decoded binary tick record (for clients and tests; the server never decodes ticks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinTick {
    /// Record type: [`record::EVENT`] or [`record::SNAPSHOT`].
    pub record_type: u8,
    /// Snapshot `recovered` flag.
    pub recovered: bool,
    /// Topic name.
    pub topic: String,
    /// Epoch.
    pub epoch: u64,
    /// Sequence number.
    pub seq: u64,
    /// Publish time, Unix ns.
    pub ts: i64,
    /// The tick.
    pub tick: Tick,
}

/// One record of a binary batch, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BinRecord {
    /// A tick event or snapshot.
    Tick(BinTick),
    /// A named event (kind 2) or its snapshot.
    Event(BinEvent),
    /// An order book (kind 3) or its snapshot.
    Book(crate::depth::BinBook),
    /// A trade print (kind 4) or its snapshot.
    Trade(crate::depth::BinTrade),
    /// `ack` for op `id`.
    Ack(u64),
    /// `ack` for op `id` carrying result fields (one JSON object), e.g. the `bid_id` of a bid.
    AckWith { id: u64, fields: String },
    /// `pong` for op `id`.
    Pong(u64),
    /// Seqs `from..=to` of `topic` were skipped.
    Gap { topic: String, from: u64, to: u64 },
    /// An error answer.
    Error { id: u64, code: String, message: String },
}

/// Splits a binary batch into records. Returns `None` on malformed input (never panics).
pub fn decode_bin_batch(mut buf: &[u8]) -> Option<Vec<BinRecord>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        let rec = buf.get(4..4 + len)?;
        buf = &buf[4 + len..];
        let (&ty, rest) = rec.split_first()?;
        let body = rest.get(3..)?;
        let flags = rest[1];
        let u64_at =
            |b: &[u8], i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
        out.push(match ty {
            record::EVENT | record::SNAPSHOT if rest.first() == Some(&(Kind::Book as u8)) => {
                BinRecord::Book(crate::depth::decode_book(ty, flags, body)?)
            }
            record::EVENT | record::SNAPSHOT if rest.first() == Some(&(Kind::Trade as u8)) => {
                BinRecord::Trade(crate::depth::decode_trade(ty, flags, body)?)
            }
            record::EVENT | record::SNAPSHOT if rest.first() == Some(&(Kind::Event as u8)) => {
                let tl = *body.get(24)? as usize;
                let topic = std::str::from_utf8(body.get(25..25 + tl)?).ok()?.to_owned();
                let yl_at = 25 + tl;
                let yl = *body.get(yl_at)? as usize;
                let event_type = std::str::from_utf8(body.get(yl_at + 1..yl_at + 1 + yl)?).ok()?.to_owned();
                let fields = std::str::from_utf8(body.get(yl_at + 1 + yl..)?).ok()?.to_owned();
                BinRecord::Event(BinEvent {
                    record_type: ty,
                    recovered: flags & 1 == 1,
                    topic,
                    epoch: u64_at(body, 0)?,
                    seq: u64_at(body, 8)?,
                    ts: u64_at(body, 16)? as i64,
                    event_type,
                    fields,
                })
            }
            record::EVENT | record::SNAPSHOT => {
                let v = |i: usize| u64_at(body, i * 8).map(|v| v as i64);
                let opt_p = |x: i64| (x != ABSENT).then_some(Price(x));
                let opt_s = |x: i64| (x != ABSENT).then_some(x as u64);
                let tl = *body.get(72)? as usize;
                let topic = std::str::from_utf8(body.get(73..73 + tl)?).ok()?.to_owned();
                BinRecord::Tick(BinTick {
                    record_type: ty,
                    recovered: flags & 1 == 1,
                    topic,
                    epoch: v(0)? as u64,
                    seq: v(1)? as u64,
                    ts: v(2)?,
                    tick: Tick {
                        price: Price(v(3)?),
                        size: v(4)? as u64,
                        bid: opt_p(v(5)?),
                        ask: opt_p(v(6)?),
                        bid_size: opt_s(v(7)?),
                        ask_size: opt_s(v(8)?),
                    },
                })
            }
            record::ACK if body.len() > 8 => {
                BinRecord::AckWith { id: u64_at(body, 0)?, fields: std::str::from_utf8(&body[8..]).ok()?.to_owned() }
            }
            record::ACK => BinRecord::Ack(u64_at(body, 0)?),
            record::PONG => BinRecord::Pong(u64_at(body, 0)?),
            record::GAP => {
                let tl = *body.get(16)? as usize;
                BinRecord::Gap {
                    from: u64_at(body, 0)?,
                    to: u64_at(body, 8)?,
                    topic: std::str::from_utf8(body.get(17..17 + tl)?).ok()?.to_owned(),
                }
            }
            record::ERROR => {
                let cl = *body.get(8)? as usize;
                let code = std::str::from_utf8(body.get(9..9 + cl)?).ok()?.to_owned();
                let ml_at = 9 + cl;
                let ml = u16::from_le_bytes(body.get(ml_at..ml_at + 2)?.try_into().ok()?) as usize;
                let message = std::str::from_utf8(body.get(ml_at + 2..ml_at + 2 + ml)?).ok()?.to_owned();
                BinRecord::Error { id: u64_at(body, 0)?, code, message }
            }
            _ => return None,
        });
    }
    Some(out)
}

/// One record of a binary batch, borrowed and undecoded: what a client on the hot path reads without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// [`record`] type.
    pub record_type: u8,
    /// Event kind (1 = tick) for events and snapshots.
    pub kind: u8,
    /// Flags (bit 0: `recovered`).
    pub flags: u8,
    /// The body after the 8-byte header.
    pub body: &'a [u8],
}

impl RawRecord<'_> {
    /// `(epoch, seq, ts)` of an event or snapshot (the first three fields of every event body).
    pub fn position(&self) -> Option<(u64, u64, i64)> {
        if !matches!(self.record_type, record::EVENT | record::SNAPSHOT) {
            return None;
        }
        let f = |i: usize| Some(u64::from_le_bytes(self.body.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        Some((f(0)?, f(1)?, f(2)? as i64))
    }

    /// For a `gap` record: `(from, to)`.
    pub fn gap(&self) -> Option<(u64, u64)> {
        if self.record_type != record::GAP {
            return None;
        }
        let f = |i: usize| Some(u64::from_le_bytes(self.body.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        Some((f(0)?, f(1)?))
    }
}

/// Iterates over the records of a binary batch without decoding bodies; yields `Err(())` once and stops at
/// malformed framing.
#[derive(Clone, Debug)]
pub struct RawRecords<'a> {
    buf: &'a [u8],
}

impl<'a> RawRecords<'a> {
    /// Records of `buf`.
    pub fn new(buf: &'a [u8]) -> RawRecords<'a> {
        RawRecords { buf }
    }
}

impl<'a> Iterator for RawRecords<'a> {
    type Item = Result<RawRecord<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let rec = (|| {
            let len = u32::from_le_bytes(self.buf.get(..4)?.try_into().ok()?) as usize;
            let rec = self.buf.get(4..4 + len)?;
            let head = rec.get(..4)?;
            self.buf = &self.buf[4 + len..];
            Some(RawRecord { record_type: head[0], kind: head[1], flags: head[2], body: &rec[4..] })
        })();
        if rec.is_none() {
            self.buf = &[];
        }
        Some(rec.ok_or(()))
    }
}

/// Appends `s` JSON-escaped (without quotes).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            _ => out.push(b),
        }
    }
}

/// Appends a SignalR target for a Marquee event type: snake_case becomes camelCase (`lot_update` is
/// `lotUpdate`), the way .NET names hub client methods.
pub fn push_hub_target(out: &mut Vec<u8>, type_name: &[u8]) {
    let mut upper = false;
    for &b in type_name {
        if b == b'_' {
            upper = true;
        } else if b == b'"' || b == b'\\' || b < 0x20 {
            // Never in a valid type name; keep the output valid JSON anyway.
        } else {
            out.push(if upper { b.to_ascii_uppercase() } else { b });
            upper = false;
        }
    }
}

/// Builds one batch (one WebSocket frame) in a reusable buffer: many events, one write.
///
/// Events can be written speculatively with [`BatchWriter::mark`] and rolled back with
/// [`BatchWriter::rollback`] (the ring reader does so when a slot was overwritten while it copied).
#[derive(Debug)]
pub struct BatchWriter {
    encoding: Encoding,
    buf: Vec<u8>,
    n_events: usize,
    /// SignalR: the stream invocation the next stored events belong to (`None`: they go as Invocations).
    stream: Option<HubStream>,
    /// SignalR: where the open stored event's object starts, for a copy as an Invocation too.
    item_at: usize,
    /// SignalR over MessagePack: every hub message is written as JSON, then transcoded in place.
    msgpack: bool,
    /// Reused buffers of the transcoding.
    scratch: Vec<u8>,
    scratch_one: Vec<u8>,
    /// SignalR: how to close the hub message that [`BatchWriter::begin_stored`] or `begin` opened.
    open: HubClose,
}

/// SignalR: a subscription whose messages are items of a server-to-client stream (`StreamTicks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubStream {
    /// The stream's invocation id.
    pub id: std::sync::Arc<str>,
    /// The connection subscribed to the topic too (`Subscribe`): each message also goes as an Invocation.
    pub also_invocation: bool,
}

/// How an open SignalR hub message is closed once its event object is written.
#[derive(Clone, Copy, Debug)]
enum HubClose {
    /// `]}` + RS: an Invocation whose target was written up front.
    Arguments,
    /// `],"target":"<camelCase of the type name at this offset>"}` + RS: an Invocation of a named event, whose
    /// type name is only known once the stored body has been copied in.
    TargetFromBody(usize),
    /// `}` + RS: a StreamItem.
    Item,
}

/// A point to roll a [`BatchWriter`] back to.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    len: usize,
    n_events: usize,
}

impl BatchWriter {
    /// An empty batch for `encoding`.
    pub fn new(encoding: Encoding) -> BatchWriter {
        BatchWriter {
            encoding,
            buf: Vec::with_capacity(256),
            n_events: 0,
            stream: None,
            item_at: 0,
            msgpack: false,
            scratch: Vec::new(),
            scratch_one: Vec::new(),
            open: HubClose::Arguments,
        }
    }

    /// The batch's wire format.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Events in the batch so far.
    pub fn len(&self) -> usize {
        self.n_events
    }

    /// True when no event has been written.
    pub fn is_empty(&self) -> bool {
        self.n_events == 0
    }

    /// Bytes in the batch so far.
    pub fn n_bytes(&self) -> usize {
        self.buf.len()
    }

    /// A point to roll back to.
    pub fn mark(&self) -> Mark {
        Mark { len: self.buf.len(), n_events: self.n_events }
    }

    /// Forgets everything written since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.buf.truncate(mark.len);
        self.n_events = mark.n_events;
    }

    /// Starts an event: the JSON separator and `{"type":"<ty>",`, or the binary record header. Returns the
    /// offset of the binary length field, for [`BatchWriter::end_event`].
    fn begin(&mut self, json_type: &str, rec_type: u8, kind: u8, flags: u8) -> usize {
        let at = self.buf.len();
        match self.encoding {
            Encoding::Json => {
                self.buf.push(if self.n_events == 0 { b'[' } else { b',' });
                self.buf.extend_from_slice(b"{\"type\":\"");
                self.buf.extend_from_slice(json_type.as_bytes());
                self.buf.extend_from_slice(b"\",");
            }
            Encoding::Binary => {
                self.buf.extend_from_slice(&[0, 0, 0, 0, rec_type, kind, flags, 0]);
            }
            Encoding::SignalR => {
                self.buf.extend_from_slice(b"{\"type\":1,\"target\":\"");
                self.buf.extend_from_slice(json_type.as_bytes());
                self.buf.extend_from_slice(b"\",\"arguments\":[{\"type\":\"");
                self.buf.extend_from_slice(json_type.as_bytes());
                self.buf.extend_from_slice(b"\",");
                self.open = HubClose::Arguments;
            }
        }
        self.n_events += 1;
        at
    }

    fn end_event(&mut self, at: usize) {
        match self.encoding {
            Encoding::Json => {}
            Encoding::Binary => {
                let len = (self.buf.len() - at - 4) as u32;
                self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Encoding::SignalR => match self.open {
                HubClose::Arguments => self.buf.extend_from_slice(b"]}\x1e"),
                HubClose::Item => self.buf.extend_from_slice(b"}\x1e"),
                HubClose::TargetFromBody(body_at) => {
                    // The body starts with the type name as a JSON string; valid type names need no escaping.
                    let mut name = [0u8; 64];
                    let rest = self.buf.get(body_at + 1..).unwrap_or_default();
                    let n = rest.iter().take(64).take_while(|&&b| b != b'"').count();
                    name[..n].copy_from_slice(&rest[..n]);
                    self.buf.extend_from_slice(b"],\"target\":\"");
                    push_hub_target(&mut self.buf, &name[..n]);
                    self.buf.extend_from_slice(b"\"}\x1e");
                }
            },
        }
    }

    /// Ends an event begun with `begin`: [`BatchWriter::end_event`], then the MessagePack form when chosen.
    fn end_record(&mut self, at: usize) {
        self.end_event(at);
        if self.msgpack {
            self.transcode_to_msgpack(at);
        }
    }

    /// SignalR over MessagePack: from now on, hub messages go as VarInt-length-prefixed MessagePack arrays.
    pub fn set_msgpack(&mut self, on: bool) {
        self.msgpack = on;
    }

    /// True when hub messages go as MessagePack (binary frames).
    pub fn is_msgpack(&self) -> bool {
        self.msgpack
    }

    /// Rewrites the JSON hub messages in `buf[from..]` (each ending with the separator) as MessagePack frames.
    fn transcode_to_msgpack(&mut self, from: usize) {
        let (mut out, mut one) = (std::mem::take(&mut self.scratch), std::mem::take(&mut self.scratch_one));
        out.clear();
        for m in self.buf[from..].split(|&b| b == RECORD_SEPARATOR).filter(|m| !m.is_empty()) {
            one.clear();
            if crate::msgpack::hub_message(m, &mut one).is_ok() {
                crate::msgpack::put_varint(&mut out, one.len());
                out.extend_from_slice(&one);
            } else {
                debug_assert!(false, "hub message Marquee wrote is not JSON: {:?}", String::from_utf8_lossy(m));
            }
        }
        self.buf.truncate(from);
        self.buf.extend_from_slice(&out);
        (self.scratch, self.scratch_one) = (out, one);
    }

    /// SignalR: the stream invocation that the stored events written next belong to; `None` sends them as
    /// Invocations. The fan-out sets it per subscription.
    pub fn set_stream(&mut self, stream: Option<HubStream>) {
        self.stream = stream;
    }

    /// SignalR: true while stored events go to a stream.
    pub fn has_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// SignalR: appends one complete hub message (a JSON object) and its record separator: the handshake
    /// answer, a Completion, a Ping or a Close.
    pub fn push_hub_message(&mut self, json: &[u8]) {
        let at = self.buf.len();
        self.buf.extend_from_slice(json);
        self.buf.push(RECORD_SEPARATOR);
        self.n_events += 1;
        if self.msgpack {
            self.transcode_to_msgpack(at);
        }
    }

    /// Writes the header of a stored message's event; the caller appends the stored body, then calls
    /// [`BatchWriter::finish_stored`] with the returned token.
    pub(crate) fn begin_stored(&mut self, kind: Kind, snapshot: Option<bool>) -> usize {
        let at = self.buf.len();
        // The event object's opening, up to where the stored body starts. A named event's body starts with its
        // type name's JSON string, so only the member name goes here.
        let object: &[u8] = match (kind.is_named(), snapshot) {
            (true, None) => b"{\"type\":",
            (true, Some(true)) => b"{\"type\":\"snapshot\",\"recovered\":true,\"event\":",
            (true, Some(false)) => b"{\"type\":\"snapshot\",\"recovered\":false,\"event\":",
            (false, None) => b"{\"type\":\"tick\",",
            (false, Some(true)) => b"{\"type\":\"snapshot\",\"recovered\":true,",
            (false, Some(false)) => b"{\"type\":\"snapshot\",\"recovered\":false,",
        };
        match self.encoding {
            Encoding::Json => {
                self.buf.push(if self.n_events == 0 { b'[' } else { b',' });
                self.buf.extend_from_slice(object);
            }
            Encoding::Binary => {
                let (rec, flags) = match snapshot {
                    None => (record::EVENT, 0),
                    Some(r) => (record::SNAPSHOT, r as u8),
                };
                self.buf.extend_from_slice(&[0, 0, 0, 0, rec, kind as u8, flags, 0]);
            }
            Encoding::SignalR => {
                // Streams carry ticks (`StreamTicks`); anything else on the topic goes as an Invocation.
                if let Some(stream) = self.stream.as_ref().filter(|_| kind == Kind::Tick) {
                    self.buf.extend_from_slice(b"{\"type\":2,\"invocationId\":\"");
                    push_json_str(&mut self.buf, &stream.id);
                    self.buf.extend_from_slice(b"\",\"item\":");
                    self.open = HubClose::Item;
                    self.item_at = self.buf.len();
                } else if kind == Kind::Tick {
                    self.buf.extend_from_slice(b"{\"type\":1,\"target\":\"tick\",\"arguments\":[");
                    self.open = HubClose::Arguments;
                } else {
                    self.buf.extend_from_slice(b"{\"type\":1,\"arguments\":[");
                }
                self.buf.extend_from_slice(object);
                if kind.is_named() {
                    self.open = HubClose::TargetFromBody(self.buf.len());
                }
            }
        }
        self.n_events += 1;
        at
    }

    /// The bytes written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(crate) fn finish_stored(&mut self, at: usize) {
        let item = matches!(self.open, HubClose::Item);
        // Still JSON here: the Invocation copy below is made from the item's JSON; both are transcoded after.
        self.end_event(at);
        if item && self.stream.as_ref().is_some_and(|s| s.also_invocation) {
            // The same event object again, as an Invocation for the connection's `Subscribe` of the topic.
            let (start, end) = (self.item_at, self.buf.len() - 2);
            self.buf.extend_from_slice(b"{\"type\":1,\"target\":\"tick\",\"arguments\":[");
            self.buf.extend_from_within(start..end);
            self.buf.extend_from_slice(b"]}\x1e");
            self.n_events += 1;
        }
        if self.msgpack {
            self.transcode_to_msgpack(at);
        }
    }

    /// Writes a complete stored event from its body (used for snapshots and tests).
    pub fn push_stored(&mut self, kind: Kind, snapshot: Option<bool>, json_body: &[u8], bin_body: &[u8]) {
        let at = self.begin_stored(kind, snapshot);
        let body = match self.encoding {
            Encoding::Json | Encoding::SignalR => json_body,
            Encoding::Binary => bin_body,
        };
        self.buf.extend_from_slice(body);
        self.finish_stored(at);
    }

    /// `{"type":"ack","id":N}`.
    pub fn push_ack(&mut self, id: u64) {
        self.push_id_event("ack", record::ACK, id);
    }

    /// `{"type":"pong","id":N}`.
    pub fn push_pong(&mut self, id: u64) {
        self.push_id_event("pong", record::PONG, id);
    }

    /// `{"type":"ack","id":N,<members of fields>}`: an ack carrying a result (`fields` is one JSON object,
    /// e.g. `{"bid_id":"7-3"}`). In binary, the ack body is `id u64` followed by the fields object text.
    pub fn push_ack_with(&mut self, id: u64, fields: &str) {
        let at = self.begin("ack", record::ACK, 0, 0);
        let members = object_members(fields);
        match self.encoding {
            Encoding::Json | Encoding::SignalR => {
                self.buf.extend_from_slice(b"\"id\":");
                self.buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
                if !members.is_empty() {
                    self.buf.push(b',');
                    self.buf.extend_from_slice(members.as_bytes());
                }
                self.buf.push(b'}');
            }
            Encoding::Binary => {
                self.buf.extend_from_slice(&id.to_le_bytes());
                self.buf.push(b'{');
                self.buf.extend_from_slice(members.as_bytes());
                self.buf.push(b'}');
            }
        }
        self.end_record(at);
    }

    fn push_id_event(&mut self, name: &str, rec: u8, id: u64) {
        let at = self.begin(name, rec, 0, 0);
        match self.encoding {
            Encoding::Json | Encoding::SignalR => {
                self.buf.extend_from_slice(b"\"id\":");
                self.buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
                self.buf.push(b'}');
            }
            Encoding::Binary => self.buf.extend_from_slice(&id.to_le_bytes()),
        }
        self.end_record(at);
    }

    /// `{"type":"gap","topic":T,"from":N,"to":M}`: seqs `from..=to` were skipped.
    pub fn push_gap(&mut self, topic: &str, from: u64, to: u64) {
        let at = self.begin("gap", record::GAP, 0, 0);
        match self.encoding {
            Encoding::Json | Encoding::SignalR => {
                let mut ib = itoa::Buffer::new();
                self.buf.extend_from_slice(b"\"topic\":\"");
                push_json_str(&mut self.buf, topic);
                self.buf.extend_from_slice(b"\",\"from\":");
                self.buf.extend_from_slice(ib.format(from).as_bytes());
                self.buf.extend_from_slice(b",\"to\":");
                self.buf.extend_from_slice(ib.format(to).as_bytes());
                self.buf.push(b'}');
            }
            Encoding::Binary => {
                self.buf.extend_from_slice(&from.to_le_bytes());
                self.buf.extend_from_slice(&to.to_le_bytes());
                let t = &topic.as_bytes()[..topic.len().min(255)];
                self.buf.push(t.len() as u8);
                self.buf.extend_from_slice(t);
            }
        }
        self.end_record(at);
    }

    /// `{"type":"error","id":N,"code":C,"message":M}`; `id` is omitted (0 in binary) when the op had none.
    pub fn push_error(&mut self, id: Option<u64>, code: &str, message: &str) {
        let at = self.begin("error", record::ERROR, 0, 0);
        match self.encoding {
            Encoding::Json | Encoding::SignalR => {
                if let Some(id) = id {
                    self.buf.extend_from_slice(b"\"id\":");
                    self.buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
                    self.buf.push(b',');
                }
                self.buf.extend_from_slice(b"\"code\":\"");
                push_json_str(&mut self.buf, code);
                self.buf.extend_from_slice(b"\",\"message\":\"");
                push_json_str(&mut self.buf, message);
                self.buf.extend_from_slice(b"\"}");
            }
            Encoding::Binary => {
                self.buf.extend_from_slice(&id.unwrap_or(0).to_le_bytes());
                let c = &code.as_bytes()[..code.len().min(255)];
                self.buf.push(c.len() as u8);
                self.buf.extend_from_slice(c);
                let m = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
                self.buf.extend_from_slice(&(m.len() as u16).to_le_bytes());
                self.buf.extend_from_slice(m);
            }
        }
        self.end_record(at);
    }

    /// Closes the batch and returns its bytes (valid until the next write); `None` when empty. Call
    /// [`BatchWriter::clear`] once the frame has been handed to the socket.
    pub fn finish(&mut self) -> Option<&[u8]> {
        if self.n_events == 0 {
            return None;
        }
        if self.encoding == Encoding::Json && self.buf.last() != Some(&b']') {
            self.buf.push(b']');
        }
        Some(&self.buf)
    }

    /// Empties the batch, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.n_events = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick() -> Tick {
        Tick {
            price: "187.23".parse().unwrap(),
            size: 100,
            bid: Some("187.22".parse().unwrap()),
            ask: Some("187.24".parse().unwrap()),
            bid_size: Some(300),
            ask_size: None,
        }
    }

    #[test]
    fn codec_json_batch_is_an_array_of_objects() {
        let mut body = Vec::new();
        encode_tick_json(&mut body, "ticks.AAPL", 7, 42, 1_700_000_000_000_000_000, &tick());
        let mut w = BatchWriter::new(Encoding::Json);
        w.push_ack(1);
        w.push_stored(Kind::Tick, Some(true), &body, &[]);
        w.push_stored(Kind::Tick, None, &body, &[]);
        w.push_gap("ticks.AAPL", 3, 9);
        w.push_error(None, "bad_json", "quote \" here");
        let v: serde_json::Value = serde_json::from_slice(w.finish().unwrap()).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a[0], serde_json::json!({"type":"ack","id":1}));
        assert_eq!(a[1]["type"], "snapshot");
        assert_eq!(a[1]["recovered"], true);
        assert_eq!(a[2]["type"], "tick");
        assert_eq!(a[2]["symbol"], "AAPL");
        assert_eq!(a[2]["seq"], 42);
        assert_eq!(a[2]["price"].to_string(), "187.23");
        assert_eq!(a[2]["bid_size"], 300);
        assert!(a[2].get("ask_size").is_none());
        assert_eq!(a[3], serde_json::json!({"type":"gap","topic":"ticks.AAPL","from":3,"to":9}));
        assert_eq!(a[4]["message"], "quote \" here");
    }

    #[test]
    fn codec_binary_batch_round_trips() {
        let mut body = Vec::new();
        encode_tick_bin(&mut body, "ticks.AAPL", 7, 42, -5, &tick());
        let mut w = BatchWriter::new(Encoding::Binary);
        w.push_ack(9);
        w.push_stored(Kind::Tick, Some(false), &[], &body);
        w.push_gap("ticks.MSFT", 1, 2);
        w.push_error(Some(4), "unknown_op", "no such op");
        let recs = decode_bin_batch(w.finish().unwrap()).unwrap();
        assert_eq!(recs[0], BinRecord::Ack(9));
        let BinRecord::Tick(t) = &recs[1] else { panic!("{recs:?}") };
        assert_eq!((t.record_type, t.recovered, t.seq, t.ts), (record::SNAPSHOT, false, 42, -5));
        assert_eq!(t.topic, "ticks.AAPL");
        assert_eq!(t.tick, tick());
        assert_eq!(recs[2], BinRecord::Gap { topic: "ticks.MSFT".into(), from: 1, to: 2 });
        assert_eq!(recs[3], BinRecord::Error { id: 4, code: "unknown_op".into(), message: "no such op".into() });
    }

    proptest::proptest! {
        /// The reference decoder never panics, whatever the bytes.
        #[test]
        fn codec_decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_bin_batch(&bytes);
        }
    }

    fn event_bodies(seq: u64) -> (Vec<u8>, Vec<u8>) {
        let fields = r#"{"bid_id":"7-3","amount":"105.00","nested":{"a":[1,2]}}"#;
        check_event_fields(fields).unwrap();
        let (mut j, mut b) = (Vec::new(), Vec::new());
        encode_event_json(&mut j, "users.alice", 7, seq, 11, "bid_result", fields);
        encode_event_bin(&mut b, "users.alice", 7, seq, 11, "bid_result", fields);
        (j, b)
    }

    #[test]
    fn codec_event_json_live_and_snapshot() {
        let (j, _) = event_bodies(4);
        let mut w = BatchWriter::new(Encoding::Json);
        w.push_stored(Kind::Event, None, &j, &[]);
        w.push_stored(Kind::Event, Some(false), &j, &[]);
        w.push_ack_with(3, r#"{"bid_id":"7-3"}"#);
        let v: serde_json::Value = serde_json::from_slice(w.finish().unwrap()).unwrap();
        assert_eq!(
            v[0],
            serde_json::json!({"type":"bid_result","topic":"users.alice","epoch":7,"seq":4,"ts":11,
                "bid_id":"7-3","amount":"105.00","nested":{"a":[1,2]}})
        );
        assert_eq!(
            v[1],
            serde_json::json!({"type":"snapshot","event":"bid_result","recovered":false,"topic":"users.alice",
                "epoch":7,"seq":4,"ts":11,"bid_id":"7-3","amount":"105.00","nested":{"a":[1,2]}})
        );
        assert_eq!(v[2], serde_json::json!({"type":"ack","id":3,"bid_id":"7-3"}));
    }

    #[test]
    fn codec_event_without_fields_is_still_an_object() {
        let mut j = Vec::new();
        encode_event_json(&mut j, "lots.1", 1, 1, 2, "ping_me", " { } ");
        let mut w = BatchWriter::new(Encoding::Json);
        w.push_stored(Kind::Event, None, &j, &[]);
        let v: serde_json::Value = serde_json::from_slice(w.finish().unwrap()).unwrap();
        assert_eq!(v[0], serde_json::json!({"type":"ping_me","topic":"lots.1","epoch":1,"seq":1,"ts":2}));
    }

    #[test]
    fn codec_event_binary_round_trips() {
        let (_, b) = event_bodies(9);
        let mut w = BatchWriter::new(Encoding::Binary);
        w.push_stored(Kind::Event, Some(true), &[], &b);
        w.push_ack_with(5, r#"{"bid_id":"1-1"}"#);
        w.push_ack(6);
        let recs = decode_bin_batch(w.finish().unwrap()).unwrap();
        let BinRecord::Event(e) = &recs[0] else { panic!("{recs:?}") };
        assert_eq!((e.record_type, e.recovered, e.epoch, e.seq, e.ts), (record::SNAPSHOT, true, 7, 9, 11));
        assert_eq!((e.topic.as_str(), e.event_type.as_str()), ("users.alice", "bid_result"));
        let f: serde_json::Value = serde_json::from_str(&e.fields).unwrap();
        assert_eq!(f["nested"]["a"][1], 2);
        assert_eq!(recs[1], BinRecord::AckWith { id: 5, fields: r#"{"bid_id":"1-1"}"#.into() });
        assert_eq!(recs[2], BinRecord::Ack(6));
    }

    #[test]
    fn codec_event_fields_and_types_are_checked() {
        assert_eq!(check_event_fields("[1]"), Err(EventFieldsError::NotAnObject));
        assert_eq!(check_event_fields("{\"a\":1} x"), Err(EventFieldsError::NotAnObject));
        assert_eq!(check_event_fields("{\"a\":"), Err(EventFieldsError::NotAnObject));
        assert_eq!(check_event_fields("{\"seq\":1}"), Err(EventFieldsError::ReservedField));
        // An escaped spelling of a reserved name is the same name.
        assert_eq!(check_event_fields("{\"\\u0074ype\":1}"), Err(EventFieldsError::ReservedField));
        assert_eq!(check_event_fields("{\"data\":{\"type\":\"nested is fine\"}}"), Ok(()));
        assert!(valid_event_type("order_completed"));
        assert!(!valid_event_type("snapshot"));
        assert!(!valid_event_type("has space"));
        assert!(!valid_event_type(""));
    }

    #[test]
    fn codec_event_decoder_rejects_truncation_without_panic() {
        let (_, b) = event_bodies(1);
        let mut w = BatchWriter::new(Encoding::Binary);
        w.push_stored(Kind::Event, None, &[], &b);
        let bytes = w.finish().unwrap().to_vec();
        for cut in 1..bytes.len() {
            assert!(decode_bin_batch(&bytes[..cut]).is_none(), "cut {cut}");
        }
    }

    #[test]
    fn codec_raw_records_match_the_full_decoder() {
        let mut body = Vec::new();
        encode_tick_bin(&mut body, "ticks.AAPL", 7, 42, -5, &tick());
        let mut w = BatchWriter::new(Encoding::Binary);
        w.push_ack(9);
        w.push_stored(Kind::Tick, None, &[], &body);
        w.push_gap("ticks.AAPL", 43, 50);
        let frame = w.finish().unwrap().to_vec();
        let raw: Vec<RawRecord> = RawRecords::new(&frame).map(Result::unwrap).collect();
        assert_eq!(raw.len(), 3);
        assert_eq!((raw[0].record_type, raw[0].position()), (record::ACK, None));
        assert_eq!((raw[1].record_type, raw[1].kind, raw[1].position()), (record::EVENT, 1, Some((7, 42, -5))));
        assert_eq!(raw[2].gap(), Some((43, 50)));
        let cut: Vec<_> = RawRecords::new(&frame[..frame.len() - 1]).collect();
        assert_eq!(cut.last(), Some(&Err(())));
    }

    #[test]
    fn codec_decoder_rejects_truncation_without_panic() {
        let mut body = Vec::new();
        encode_tick_bin(&mut body, "ticks.AAPL", 1, 1, 1, &tick());
        let mut w = BatchWriter::new(Encoding::Binary);
        w.push_stored(Kind::Tick, None, &[], &body);
        let bytes = w.finish().unwrap().to_vec();
        for cut in 0..bytes.len() {
            let r = decode_bin_batch(&bytes[..cut]);
            assert!(cut == 0 || r.is_none(), "cut {cut}");
        }
    }
}
