//! How SignalR frames the engine's messages: every message is a hub message (an Invocation of target `tick`, `gap`,
//! `lotUpdate`..., or a StreamItem of a server-to-client stream) ending with the record separator `0x1E`; the
//! argument is the same object the native JSON encoding sends, copied from the same stored body. After a
//! MessagePack handshake ([`HubFraming::set_msgpack`]) the hub messages are VarInt-framed MessagePack arrays whose
//! argument is the stored MessagePack body ([`marquee_engine::msgpack`]), encoded once at publish like the JSON
//! one; only the few messages Marquee writes itself (gaps, answers) are transcoded from their JSON form (see
//! [`crate::msgpack`]). See `docs/SIGNALR.md`.

use bytes::{BufMut, BytesMut};
use marquee_engine::batch::{BodyFormat, Framing, Tag, json_opening, push_gap_json};
use marquee_engine::body::push_json_str;
use marquee_engine::msgpack::{MAP_HEADER_LEN, TICK_TYPE_MEMBER, map_len, str_header_len, type_name};
use marquee_engine::{BatchWriter, Kind};
use std::sync::Arc;

/// The SignalR record separator that ends every hub message.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A subscription whose messages are items of a server-to-client stream (`StreamTicks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubStream {
    /// The stream's invocation id.
    pub id: Arc<str>,
    /// The connection subscribed to the topic too (`Subscribe`): each message also goes as an Invocation.
    pub also_invocation: bool,
}

/// How an open hub message is closed once its event object is written.
#[derive(Clone, Copy, Debug)]
enum HubClose {
    /// `]}` + RS: an Invocation whose target was written up front.
    Arguments,
    /// `],"target":"<camelCase of the type name at this offset>"}` + RS: an Invocation of a named event, whose
    /// type name is only known once the stored body has been copied in.
    TargetFromBody(usize),
    /// `}` + RS: a StreamItem; also an Invocation of the same object when the bool is set.
    Item { item_at: usize, also_invocation: bool },
}

/// How an open MessagePack hub message is closed once its stored map is in the buffer.
#[derive(Clone, Copy, Debug)]
enum MsgPackClose {
    /// The Invocation's length and head were written up front: only the empty stream-ids array is missing.
    Invocation,
    /// The StreamItem is complete; when the bool is set, an Invocation of the same argument follows.
    Item { arg_at: usize, also_invocation: bool },
    /// Nothing is written before the stored map at `body_at` (snapshots, and named events whose target is in the
    /// body): the whole message is built around it at close. Not the live-tick path.
    Later { body_at: usize, kind: Kind, snapshot: Option<bool>, tag: Tag },
}

/// The SignalR framing of a connection's batches.
#[derive(Debug)]
pub struct HubFraming {
    /// Hub messages go as MessagePack (binary frames).
    msgpack: bool,
    /// Streams by tag (tag `i + 1` is `streams[i]`).
    streams: Vec<Option<HubStream>>,
    open: HubClose,
    msgpack_open: MsgPackClose,
    /// Reused buffers: transcoding the hub's own messages, wrapping MessagePack snapshots and named events.
    scratch: Vec<u8>,
    scratch_one: Vec<u8>,
}

impl Default for HubFraming {
    fn default() -> HubFraming {
        HubFraming {
            msgpack: false,
            streams: Vec::new(),
            open: HubClose::Arguments,
            msgpack_open: MsgPackClose::Invocation,
            scratch: Vec::new(),
            scratch_one: Vec::new(),
        }
    }
}

impl HubFraming {
    /// From now on, hub messages go as VarInt-length-prefixed MessagePack arrays.
    pub fn set_msgpack(&mut self, on: bool) {
        self.msgpack = on;
    }

    /// True when hub messages go as MessagePack.
    pub fn is_msgpack(&self) -> bool {
        self.msgpack
    }

    /// The stream of a subscription's tag.
    pub fn stream(&self, tag: Tag) -> Option<&HubStream> {
        self.streams.get((tag as usize).checked_sub(1)?)?.as_ref()
    }

    /// The stream a message goes to as a StreamItem: streams carry ticks (`StreamTicks`); anything else on the
    /// topic goes as an Invocation.
    fn tick_stream(&self, kind: Kind, tag: Tag) -> Option<&HubStream> {
        if kind == Kind::Tick { self.stream(tag) } else { None }
    }

    /// Gives `stream` a tag (reusing `tag` when it is one already), for [`marquee_engine::Subscriber::set_tag`].
    pub fn set_stream(&mut self, tag: Tag, stream: HubStream) -> Tag {
        if let Some(slot) = (tag as usize).checked_sub(1).and_then(|i| self.streams.get_mut(i)) {
            *slot = Some(stream);
            return tag;
        }
        match self.streams.iter().position(Option::is_none) {
            Some(i) => {
                self.streams[i] = Some(stream);
                i as Tag + 1
            }
            None => {
                self.streams.push(Some(stream));
                self.streams.len() as Tag
            }
        }
    }

    /// Frees a tag's stream.
    pub fn clear_stream(&mut self, tag: Tag) {
        if let Some(slot) = (tag as usize).checked_sub(1).and_then(|i| self.streams.get_mut(i)) {
            *slot = None;
        }
    }

    /// Opens a MessagePack hub message for a stored map of `body_len` bytes. On the live path (a tick, book or
    /// trade as an Invocation or a stream item) the length prefix and the head are written here, so the stored
    /// map is copied once into its final place; see [`MsgPackClose`] for the rest.
    fn open_msgpack(
        &mut self,
        buf: &mut BytesMut,
        kind: Kind,
        snapshot: Option<bool>,
        tag: Tag,
        body_len: usize,
    ) -> usize {
        let at = buf.len();
        if snapshot.is_some() || kind == Kind::Event {
            self.msgpack_open = MsgPackClose::Later { body_at: at, kind, snapshot, tag };
            return at;
        }
        match self.tick_stream(kind, tag) {
            Some(stream) => {
                put_item_head(buf, stream.id.as_bytes(), body_len);
                self.msgpack_open = MsgPackClose::Item { arg_at: buf.len(), also_invocation: stream.also_invocation };
            }
            None => {
                put_invocation_head(buf, kind.name().as_bytes(), body_len);
                self.msgpack_open = MsgPackClose::Invocation;
            }
        }
        at
    }

    /// Closes the MessagePack hub message opened by [`HubFraming::open_msgpack`]; returns the messages written.
    fn close_msgpack(&mut self, buf: &mut BytesMut) -> usize {
        match self.msgpack_open {
            MsgPackClose::Invocation => {
                buf.put_u8(0x90);
                1
            }
            MsgPackClose::Item { also_invocation: false, .. } => 1,
            MsgPackClose::Item { arg_at, also_invocation: true } => {
                // The same event object again, as an Invocation for the connection's `Subscribe` of the topic.
                let end = buf.len();
                put_invocation_head(buf, b"tick", end - arg_at);
                let at = buf.len();
                buf.resize(at + end - arg_at, 0);
                buf.copy_within(arg_at..end, at);
                buf.put_u8(0x90);
                2
            }
            MsgPackClose::Later { body_at, kind, snapshot, tag } => {
                // Snapshots and named events (one per subscribe, or a topic's rare events): the message is built
                // in the scratch buffer around the stored map, then put in place of it.
                let mut out = std::mem::take(&mut self.scratch);
                out.clear();
                let n = self.build_msgpack(&buf[body_at..], kind, snapshot, tag, &mut out);
                buf.truncate(body_at);
                buf.extend_from_slice(&out);
                self.scratch = out;
                n
            }
        }
    }

    /// Writes the hub message(s) for the stored `map` into `out`, each with its length prefix; returns how many.
    fn build_msgpack(&mut self, map: &[u8], kind: Kind, snapshot: Option<bool>, tag: Tag, out: &mut Vec<u8>) -> usize {
        let mut arg = std::mem::take(&mut self.scratch_one);
        arg.clear();
        match snapshot {
            None => arg.extend_from_slice(map),
            Some(recovered) => {
                // The members of the JSON snapshot, in its order: `type`, `recovered`, then for a named kind
                // `event` with the type name, for a tick nothing; then the stored members after the stored
                // `"type"` member.
                let after_header = map.get(MAP_HEADER_LEN..).unwrap_or_default();
                let (extra, rest) = match after_header.strip_prefix(TICK_TYPE_MEMBER) {
                    Some(rest) if !kind.is_named() => (1, rest),
                    _ => (2, after_header.strip_prefix(b"\xa4type").unwrap_or_default()),
                };
                arg.push(0xdf);
                arg.extend_from_slice(&(map_len(map) + extra).to_be_bytes());
                arg.extend_from_slice(b"\xa4type\xa8snapshot\xa9recovered");
                arg.push(if recovered { 0xc3 } else { 0xc2 });
                if extra == 2 {
                    arg.extend_from_slice(b"\xa5event");
                }
                arg.extend_from_slice(rest);
            }
        }
        let n = match self.tick_stream(kind, tag) {
            Some(stream) => {
                put_item_head(out, stream.id.as_bytes(), arg.len());
                out.extend_from_slice(&arg);
                if stream.also_invocation {
                    push_invocation(out, b"tick", &arg);
                    2
                } else {
                    1
                }
            }
            None => {
                let mut target = [0u8; 64];
                let name: &[u8] = match kind {
                    Kind::Event => type_name(map).unwrap_or_default(),
                    _ => kind.name().as_bytes(),
                };
                let mut t = &mut target[..];
                let before = t.len();
                push_hub_target(&mut t, &name[..name.len().min(64)]);
                let len = before - t.len();
                push_invocation(out, &target[..len], &arg);
                1
            }
        };
        self.scratch_one = arg;
        n
    }

    /// Closes the hub message open since `open` (still JSON).
    fn close_json(&mut self, buf: &mut BytesMut) {
        match self.open {
            HubClose::Arguments => buf.extend_from_slice(b"]}\x1e"),
            HubClose::Item { .. } => buf.extend_from_slice(b"}\x1e"),
            HubClose::TargetFromBody(body_at) => {
                // The body starts with the type name as a JSON string; valid type names need no escaping.
                let mut name = [0u8; 64];
                let rest = buf.get(body_at + 1..).unwrap_or_default();
                let n = rest.iter().take(64).take_while(|&&b| b != b'"').count();
                name[..n].copy_from_slice(&rest[..n]);
                buf.extend_from_slice(b"],\"target\":\"");
                push_hub_target(buf, &name[..n]);
                buf.extend_from_slice(b"\"}\x1e");
            }
        }
    }

    /// Rewrites the JSON hub messages in `buf[from..]` (each ending with the separator) as MessagePack frames.
    fn transcode_to_msgpack(&mut self, buf: &mut BytesMut, from: usize) {
        let (mut out, mut one) = (std::mem::take(&mut self.scratch), std::mem::take(&mut self.scratch_one));
        out.clear();
        for m in buf[from..].split(|&b| b == RECORD_SEPARATOR).filter(|m| !m.is_empty()) {
            one.clear();
            if crate::msgpack::hub_message(m, &mut one).is_ok() {
                crate::msgpack::put_varint(&mut out, one.len());
                out.extend_from_slice(&one);
            } else {
                debug_assert!(false, "hub message Marquee wrote is not JSON: {:?}", String::from_utf8_lossy(m));
            }
        }
        buf.truncate(from);
        buf.extend_from_slice(&out);
        (self.scratch, self.scratch_one) = (out, one);
    }

    /// Appends one complete hub message (a JSON object) and its record separator, in the connection's protocol.
    fn push_json_message(&mut self, buf: &mut BytesMut, json: &[u8]) {
        let at = buf.len();
        buf.extend_from_slice(json);
        buf.put_u8(RECORD_SEPARATOR);
        if self.msgpack {
            self.transcode_to_msgpack(buf, at);
        }
    }
}

impl Framing for HubFraming {
    fn body(&self) -> BodyFormat {
        if self.msgpack { BodyFormat::MsgPack } else { BodyFormat::Json }
    }

    fn open_stored(
        &mut self,
        buf: &mut BytesMut,
        _n: usize,
        kind: Kind,
        snapshot: Option<bool>,
        tag: Tag,
        body_len: usize,
    ) -> usize {
        if self.msgpack {
            return self.open_msgpack(buf, kind, snapshot, tag, body_len);
        }
        let at = buf.len();
        let stream = self.tick_stream(kind, tag);
        if let Some(stream) = stream {
            let also_invocation = stream.also_invocation;
            buf.extend_from_slice(b"{\"type\":2,\"invocationId\":\"");
            push_json_str(buf, &stream.id);
            buf.extend_from_slice(b"\",\"item\":");
            self.open = HubClose::Item { item_at: buf.len(), also_invocation };
        } else if kind == Kind::Tick {
            buf.extend_from_slice(b"{\"type\":1,\"target\":\"tick\",\"arguments\":[");
            self.open = HubClose::Arguments;
        } else {
            buf.extend_from_slice(b"{\"type\":1,\"arguments\":[");
        }
        buf.extend_from_slice(json_opening(kind, snapshot));
        if kind.is_named() {
            self.open = HubClose::TargetFromBody(buf.len());
        }
        at
    }

    fn close_stored(&mut self, buf: &mut BytesMut, _open: usize) -> usize {
        if self.msgpack {
            return self.close_msgpack(buf);
        }
        self.close_json(buf);
        let mut n = 1;
        if let HubClose::Item { item_at, also_invocation: true } = self.open {
            // The same event object again, as an Invocation for the connection's `Subscribe` of the topic.
            let end = buf.len() - 2;
            buf.extend_from_slice(b"{\"type\":1,\"target\":\"tick\",\"arguments\":[");
            let at = buf.len();
            buf.resize(at + end - item_at, 0);
            buf.copy_within(item_at..end, at);
            buf.extend_from_slice(b"]}\x1e");
            n += 1;
        }
        n
    }

    fn push_gap(&mut self, buf: &mut BytesMut, _n: usize, topic: &str, from: u64, to: u64) {
        let at = buf.len();
        buf.extend_from_slice(b"{\"type\":1,\"target\":\"gap\",\"arguments\":[{\"type\":\"gap\",");
        push_gap_json(buf, topic, from, to);
        buf.extend_from_slice(b"]}\x1e");
        if self.msgpack {
            self.transcode_to_msgpack(buf, at);
        }
    }
}

/// SignalR's additions to a batch.
pub trait HubBatch {
    /// Appends one complete hub message (a JSON object) and its record separator: the handshake answer, a
    /// Completion, a Ping or a Close (transcoded to MessagePack when the connection speaks it).
    fn push_hub_message(&mut self, json: &[u8]);
}

impl HubBatch for BatchWriter<HubFraming> {
    fn push_hub_message(&mut self, json: &[u8]) {
        self.push_with(|f, buf, _| f.push_json_message(buf, json));
    }
}

/// Appends a SignalR target for a Marquee event type: snake_case becomes camelCase (`lot_update` is
/// `lotUpdate`), the way .NET names hub client methods.
pub fn push_hub_target(out: &mut impl BufMut, type_name: &[u8]) {
    let mut upper = false;
    for &b in type_name {
        if b == b'_' {
            upper = true;
        } else if b == b'"' || b == b'\\' || b < 0x20 {
            // Never in a valid type name; keep the output valid JSON anyway.
        } else {
            out.put_u8(if upper { b.to_ascii_uppercase() } else { b });
            upper = false;
        }
    }
}

/// Writes the length prefix and `[2, {}, id, ` of a StreamItem whose item has `item_len` bytes.
fn put_item_head(buf: &mut impl BufMut, id: &[u8], item_len: usize) {
    crate::msgpack::put_varint(buf, 3 + str_header_len(id.len()) + id.len() + item_len);
    buf.put_slice(&[0x94, 0x02, 0x80]);
    marquee_engine::msgpack::str_header(id.len(), buf);
    buf.put_slice(id);
}

/// Writes the length prefix and `[1, {}, nil, target, [` of an Invocation whose one argument has `arg_len` bytes;
/// the argument and the `0x90` of no stream ids follow.
fn put_invocation_head(buf: &mut impl BufMut, target: &[u8], arg_len: usize) {
    let head_len = 4 + str_header_len(target.len()) + target.len() + 5;
    crate::msgpack::put_varint(buf, head_len + arg_len + 1);
    buf.put_slice(&[0x96, 0x01, 0x80, 0xc0]);
    marquee_engine::msgpack::str_header(target.len(), buf);
    buf.put_slice(target);
    buf.put_slice(&[0xdd, 0, 0, 0, 1]);
}

/// Appends a length-prefixed Invocation of `target` with the one argument `arg`.
fn push_invocation(out: &mut Vec<u8>, target: &[u8], arg: &[u8]) {
    put_invocation_head(out, target, arg.len());
    out.extend_from_slice(arg);
    out.push(0x90);
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_engine::depth::encode_book_json;
    use marquee_engine::{BookLevel, Price};

    fn lv(cents: i64, size: u64, orders: u32) -> BookLevel {
        BookLevel { price: Price::from_cents(cents), size, orders }
    }

    #[test]
    fn hub_framing_book_target_is_book() {
        let mut json = Vec::new();
        encode_book_json(&mut json, "book.A", 1, 1, 1, &[lv(1, 1, 1)], &[]);
        let mut b = BatchWriter::with_framing(HubFraming::default());
        b.push_stored(Kind::Book, None, 0, &json, &[]);
        let text = String::from_utf8(b.finish().unwrap().to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end_matches('\x1e')).unwrap();
        assert_eq!(v["target"], "book");
        assert_eq!(v["arguments"][0]["bids"], serde_json::json!([[0.01, 1, 1]]));
    }

    #[test]
    fn hub_framing_messagepack_carries_book_levels_as_nested_arrays() {
        let mut json = Vec::new();
        encode_book_json(&mut json, "book.A", 1, 1, 1, &[lv(18722, 300, 2), lv(18721, 5, 1)], &[lv(18724, 7, 1)]);
        let mut b = BatchWriter::with_framing(HubFraming::default());
        b.framing_mut().set_msgpack(true);
        b.push_stored(Kind::Book, None, 0, &json, &[]);
        let frame = b.finish().unwrap().to_vec();
        let (len, at) = crate::msgpack::get_varint(&frame).unwrap().unwrap();
        let (msg, _) = crate::msgpack::decode(&frame[at..at + len]).unwrap();
        // [1, headers, invocationId, target, arguments]: the argument is the native event, levels included.
        assert_eq!(msg[3], "book");
        assert_eq!(msg[4][0]["bids"], serde_json::json!([[187.22, 300, 2], [187.21, 5, 1]]));
        assert_eq!(msg[4][0]["asks"], serde_json::json!([[187.24, 7, 1]]));
    }

    /// The frame of one stored message (`n` framed messages) written as MessagePack from the stored MessagePack
    /// body, and as JSON then transcoded message by message (how every MessagePack hub message was written
    /// before bodies were encoded once at publish).
    fn both_ways(
        framing: &HubFraming,
        kind: Kind,
        snapshot: Option<bool>,
        tag: Tag,
        json: &[u8],
    ) -> (Vec<u8>, Vec<u8>) {
        let mut direct =
            BatchWriter::with_framing(HubFraming { streams: framing.streams.clone(), ..Default::default() });
        direct.framing_mut().set_msgpack(true);
        direct.push_stored(kind, snapshot, tag, json, &[]);
        let mut old = BatchWriter::with_framing(HubFraming { streams: framing.streams.clone(), ..Default::default() });
        old.push_stored(kind, snapshot, tag, json, &[]);
        let mut buf = BytesMut::from(old.finish().unwrap());
        let mut f = HubFraming::default();
        f.transcode_to_msgpack(&mut buf, 0);
        (direct.finish().unwrap().to_vec(), buf.to_vec())
    }

    #[test]
    fn hub_framing_messagepack_from_stored_bodies_is_byte_for_byte_the_transcoded_json() {
        use marquee_engine::body::{TickEncoder, encode_event_json};
        use marquee_engine::depth::encode_trade_json;
        use marquee_engine::{Side, Tick, Trade};
        let mut bodies: Vec<(Kind, Vec<u8>)> = Vec::new();
        let enc = TickEncoder::new("ticks.AAPL", 1_700_000_000);
        for t in [
            Tick { price: Price::from_cents(18725), size: 100, ..Default::default() },
            Tick {
                price: Price::from_cents(-5),
                size: u64::MAX,
                bid: Some(Price::from_cents(1)),
                ask: Some(Price::from_cents(922_337_203_685)),
                bid_size: Some(0),
                ask_size: Some(127),
            },
        ] {
            let mut j = Vec::new();
            enc.encode_json(&mut j, 42, -1, &t);
            bodies.push((Kind::Tick, j));
        }
        let mut j = Vec::new();
        encode_book_json(&mut j, "book.AAPL", 3, 7, 1, &[lv(18722, 300, 2), lv(18721, 5, 1)], &[lv(18724, 7, 1)]);
        bodies.push((Kind::Book, j));
        let mut j = Vec::new();
        encode_book_json(&mut j, "book.X", 3, 7, 1, &[], &[]);
        bodies.push((Kind::Book, j));
        let mut j = Vec::new();
        let trade = Trade { price: Price::from_cents(10), size: 3, side: Some(Side::Sell) };
        encode_trade_json(&mut j, "trades.AAPL", 3, 8, 2, &trade);
        bodies.push((Kind::Trade, j));
        for (ty, fields) in [
            ("lot_update", r#"{"lot":"7","price":"105.00","bids":[1,-2,3.5,1e300,18446744073709551615],"open":true}"#),
            ("order.done-2", r#"{"note":"a \"quoted\" \u00e9 line\nbreak","nested":{"a":[{},[]],"b":null},"x":-33}"#),
            ("e", "{}"),
            ("a_very_long_event_type_name_that_needs_the_str8_header_0123456789", r#"{"k":"ünïcödé"}"#),
        ] {
            let mut j = Vec::new();
            encode_event_json(&mut j, "users.alice", 9, 10, 11, ty, fields);
            bodies.push((Kind::Event, j));
        }
        let mut streams = HubFraming::default();
        let plain = streams.set_stream(0, HubStream { id: "7".into(), also_invocation: false });
        let both = streams.set_stream(0, HubStream { id: "x\"\u{1}é".into(), also_invocation: true });
        let long = streams.set_stream(0, HubStream { id: "i".repeat(300).into(), also_invocation: true });
        let mut cases = 0;
        for (kind, json) in &bodies {
            for snapshot in [None, Some(true), Some(false)] {
                for tag in [0, plain, both, long] {
                    let (direct, transcoded) = both_ways(&streams, *kind, snapshot, tag, json);
                    assert_eq!(
                        direct,
                        transcoded,
                        "{kind:?} snapshot {snapshot:?} tag {tag}: {}",
                        String::from_utf8_lossy(json)
                    );
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, bodies.len() * 12);
    }

    #[test]
    fn hub_framing_messagepack_reads_the_ring_bodies_the_engine_encoded() {
        use marquee_engine::fanout::Limits;
        use marquee_engine::{Engine, EngineConfig, Subscriber, Tick};
        let engine = Engine::new(EngineConfig::default());
        let mut ticks = engine.create_topic("ticks.AAPL").unwrap();
        let mut lots = engine.create_topic("lots.7").unwrap();
        ticks.publish_tick(&Tick { price: Price::from_cents(100), size: 1, ..Default::default() }, 5).unwrap();
        lots.publish_event("lot_update", r#"{"lot":"7","price":"1.50"}"#, 6).unwrap();
        let mut subs: Vec<(Subscriber, BatchWriter<HubFraming>)> = [false, true]
            .into_iter()
            .map(|msgpack| {
                let mut sub = Subscriber::new(engine.clone(), Limits::default());
                for t in ["ticks.AAPL", "lots.7"] {
                    sub.subscribe(engine.topic(t).unwrap(), None).unwrap();
                }
                let mut b = BatchWriter::with_framing(HubFraming::default());
                b.framing_mut().set_msgpack(msgpack);
                (sub, b)
            })
            .collect();
        let mut frames = Vec::new();
        for round in 0..2 {
            for (sub, b) in &mut subs {
                sub.drain(b).unwrap();
                let mut buf = BytesMut::from(b.finish().unwrap());
                if !b.framing().is_msgpack() {
                    HubFraming::default().transcode_to_msgpack(&mut buf, 0);
                }
                frames.push(buf.to_vec());
                b.clear();
            }
            if round == 0 {
                ticks.publish_tick(&Tick { price: Price::from_cents(101), size: 2, ..Default::default() }, 7).unwrap();
                lots.publish_event("bid_accepted", r#"{"amount":"2.00","by":"bob"}"#, 8).unwrap();
            }
        }
        // Round 0: the snapshots of both topics; round 1: the live tick and event.
        assert_eq!(frames[1], frames[0], "snapshots");
        assert_eq!(frames[3], frames[2], "live messages");
        let mut targets = Vec::new();
        for f in [&frames[1], &frames[3]] {
            let mut rest = &f[..];
            while let Ok(Some((len, at))) = crate::msgpack::get_varint(rest) {
                let (msg, _) = crate::msgpack::decode(&rest[at..at + len]).unwrap();
                targets.push(msg[3].as_str().unwrap().to_owned());
                rest = &rest[at + len..];
            }
        }
        assert_eq!(targets, ["tick", "lotUpdate", "tick", "bidAccepted"]);
    }

    #[test]
    fn hub_framing_stream_tags_are_reused_and_freed() {
        let mut f = HubFraming::default();
        let s = |id: &str| HubStream { id: id.into(), also_invocation: false };
        let a = f.set_stream(0, s("a"));
        let b = f.set_stream(0, s("b"));
        assert_ne!(a, b);
        assert_eq!(f.set_stream(a, s("a2")), a);
        assert_eq!(f.stream(a).map(|s| &*s.id), Some("a2"));
        f.clear_stream(a);
        assert!(f.stream(a).is_none() && f.stream(0).is_none() && f.stream(99).is_none());
        assert_eq!(f.set_stream(0, s("c")), a, "a freed tag is reused");
    }
}
