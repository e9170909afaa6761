//! How SignalR frames the engine's messages: every message is a hub message (an Invocation of target `tick`, `gap`,
//! `lotUpdate`..., or a StreamItem of a server-to-client stream) ending with the record separator `0x1E`; the
//! argument is the same object the native JSON encoding sends, copied from the same stored body. After a
//! MessagePack handshake ([`HubFraming::set_msgpack`]) each hub message is transcoded into the VarInt-framed
//! MessagePack form (see [`crate::msgpack`]). See `docs/SIGNALR.md`.

use bytes::{BufMut, BytesMut};
use marquee_engine::batch::{BodyFormat, Framing, Tag, json_opening, push_gap_json};
use marquee_engine::body::push_json_str;
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

/// The SignalR framing of a connection's batches.
#[derive(Debug)]
pub struct HubFraming {
    /// Hub messages go as MessagePack (binary frames).
    msgpack: bool,
    /// Streams by tag (tag `i + 1` is `streams[i]`).
    streams: Vec<Option<HubStream>>,
    open: HubClose,
    /// Reused buffers of the transcoding.
    scratch: Vec<u8>,
    scratch_one: Vec<u8>,
}

impl Default for HubFraming {
    fn default() -> HubFraming {
        HubFraming {
            msgpack: false,
            streams: Vec::new(),
            open: HubClose::Arguments,
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
        BodyFormat::Json
    }

    fn open_stored(&mut self, buf: &mut BytesMut, _n: usize, kind: Kind, snapshot: Option<bool>, tag: Tag) -> usize {
        let at = buf.len();
        // Streams carry ticks (`StreamTicks`); anything else on the topic goes as an Invocation.
        let stream = if kind == Kind::Tick && tag != 0 { self.stream(tag) } else { None };
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

    fn close_stored(&mut self, buf: &mut BytesMut, open: usize) -> usize {
        // Still JSON here: the Invocation copy below is made from the item's JSON; both are transcoded after.
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
        if self.msgpack {
            self.transcode_to_msgpack(buf, open);
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
