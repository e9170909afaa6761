//! Message bodies: how events are laid out in JSON and in the `marquee.bin` binary encoding, encoded once per
//! format at publish time.
//!
//! A body lacks the few bytes that differ between a live event and a snapshot (the JSON `"type"` member, the binary
//! record header), so the same stored bytes serve both: a [`crate::BatchWriter`]'s framing writes them while the
//! fan-out copies the body into a connection's batch. See `docs/PROTOCOL.md` for every layout.

use crate::{Price, Tick};

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
    pub fn is_named(self) -> bool {
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
    /// MessagePack `"type":"tick","topic":T,"epoch":E,"seq":` (see [`crate::msgpack`]).
    msgpack_head: Vec<u8>,
    /// MessagePack `"symbol":S,"price":`.
    msgpack_symbol: Vec<u8>,
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
        use crate::msgpack::{put_uint, str_header};
        let mut msgpack_head = crate::msgpack::TICK_TYPE_MEMBER.to_vec();
        msgpack_head.extend_from_slice(b"\xa5topic");
        str_header(topic.len(), &mut msgpack_head);
        msgpack_head.extend_from_slice(topic.as_bytes());
        msgpack_head.extend_from_slice(b"\xa5epoch");
        put_uint(&mut msgpack_head, epoch);
        msgpack_head.extend_from_slice(b"\xa3seq");
        let mut msgpack_symbol = b"\xa6symbol".to_vec();
        str_header(symbol.len(), &mut msgpack_symbol);
        msgpack_symbol.extend_from_slice(symbol.as_bytes());
        msgpack_symbol.extend_from_slice(b"\xa5price");
        TickEncoder { json_head, json_symbol, bin_topic, msgpack_head, msgpack_symbol, epoch }
    }

    /// Appends the MessagePack body: the whole tick object as one map, the bytes
    /// [`crate::msgpack::encode_body`] makes of the JSON body (a test checks it), written directly because
    /// ticks are the most published message.
    pub fn encode_msgpack(&self, out: &mut Vec<u8>, seq: u64, ts: i64, t: &Tick) {
        use crate::msgpack::{put_int, put_uint};
        let optional = [t.bid.is_some(), t.ask.is_some(), t.bid_size.is_some(), t.ask_size.is_some()];
        let members = 8 + optional.iter().filter(|&&o| o).count() as u32;
        out.push(0xdf);
        out.extend_from_slice(&members.to_be_bytes());
        out.extend_from_slice(&self.msgpack_head);
        put_uint(out, seq);
        out.extend_from_slice(b"\xa2ts");
        put_int(out, ts);
        out.extend_from_slice(&self.msgpack_symbol);
        t.price.write_msgpack(out);
        out.extend_from_slice(b"\xa4size");
        put_uint(out, t.size);
        if let Some(p) = t.bid {
            out.extend_from_slice(b"\xa3bid");
            p.write_msgpack(out);
        }
        if let Some(p) = t.ask {
            out.extend_from_slice(b"\xa3ask");
            p.write_msgpack(out);
        }
        if let Some(s) = t.bid_size {
            out.extend_from_slice(b"\xa8bid_size");
            put_uint(out, s);
        }
        if let Some(s) = t.ask_size {
            out.extend_from_slice(b"\xa8ask_size");
            put_uint(out, s);
        }
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

/// True when two event type names are the same to a client that ignores case and the separators `_`, `-`, `.`:
/// the SignalR JavaScript client matches targets without regard to case, and `lot_update` travels as `lotUpdate`,
/// so `Tick`, `lotUpdate` and `Bid-Result` would reach the handlers of `tick`, `lot_update` and `bid_result`.
///
/// ```
/// use marquee_engine::same_event_type;
/// assert!(same_event_type("bid_result", "bidResult") && same_event_type("bid_result", "Bid-Result"));
/// assert!(!same_event_type("bid_result", "bid_results"));
/// ```
pub fn same_event_type(a: &str, b: &str) -> bool {
    fn key(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().filter(|c| !matches!(c, b'_' | b'-' | b'.')).map(|c| c.to_ascii_lowercase())
    }
    key(a).eq(key(b))
}

/// True for a usable event type name: 1-64 bytes of `[A-Za-z0-9_.-]`, not one of the protocol's own types in any
/// case or spelling ([`same_event_type`]).
pub fn valid_event_type(ty: &str) -> bool {
    !ty.is_empty()
        && ty.len() <= 64
        && ty.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !RESERVED_EVENT_TYPES.iter().any(|r| same_event_type(r, ty))
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
pub fn object_members(fields: &str) -> &str {
    let t = fields.trim();
    t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or("").trim()
}

/// Appends an event's JSON body: `"<ty>","topic":T,"epoch":E,"seq":S,"ts":TS,<members of fields>}`. The batch
/// writer puts `{"type":` (live) or `{"type":"snapshot","recovered":R,"event":` (snapshot) before it. `fields`
/// must have passed [`check_event_fields`].
pub fn encode_event_json(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, ty: &str, fields: &str) {
    push_event_head(out, ty, topic, epoch, seq, ts);
    let members = object_members(fields);
    if !members.is_empty() {
        out.push(b',');
        out.extend_from_slice(members.as_bytes());
    }
    out.push(b'}');
}

/// Appends `"<ty>","topic":"T","epoch":E,"seq":S,"ts":TS`: how the JSON body of every named kind (events, books,
/// trades) starts.
pub(crate) fn push_event_head(out: &mut Vec<u8>, ty: &str, topic: &str, epoch: u64, seq: u64, ts: i64) {
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

/// Appends `s` JSON-escaped (without quotes), to a scratch `Vec` or a batch's `BytesMut`.
pub fn push_json_str(out: &mut impl bytes::BufMut, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.put_slice(b"\\\""),
            b'\\' => out.put_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.put_slice(b"\\u00");
                out.put_u8(HEX[(b >> 4) as usize]);
                out.put_u8(HEX[(b & 0xf) as usize]);
            }
            _ => out.put_u8(b),
        }
    }
}
