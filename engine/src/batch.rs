//! Batches: many stored messages copied into one frame, with the framing of a connection's protocol around them.
//!
//! The fan-out copies each pending message's stored body (see [`crate::body`]) into a connection's
//! [`BatchWriter`]; what goes around the body is the business of the writer's [`Framing`]. The core ships the
//! framing of the native protocol, [`Native`] (a JSON array of events, or binary records); protocols with another
//! framing (SignalR's hub messages, in `marquee-protocol`) implement the trait themselves. The core never learns
//! which protocol a batch is for: a subscription carries an opaque [`Tag`] that the fan-out hands to the framing
//! with each of its messages.
//!
//! JSON batch ([`Native`] with [`Encoding::Json`]): `[` events separated by `,` `]`; an event is
//! `{"type":"tick",` + body, where the body is the rest of the object including its closing brace.
//!
//! Binary batch ([`Encoding::Binary`]): records back to back. A record is an 8-byte header `len: u32 LE` (bytes
//! after the length field), `type: u8`, `kind: u8`, `flags: u8`, `0: u8`, then the body. See `docs/PROTOCOL.md`
//! for every layout.

use crate::body::{Kind, object_members, push_json_str};
use bytes::{BufMut, Bytes, BytesMut};

/// Which stored body a framing copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyFormat {
    /// The JSON body (the event object after its `"type"` member).
    Json,
    /// The binary body (the record after its header).
    Binary,
    /// The MessagePack body: the whole event object as one map (see [`crate::msgpack`]).
    MsgPack,
}

/// A subscription's mark, opaque to the core: set by the protocol with [`crate::Subscriber::set_tag`], handed to
/// [`Framing::open_stored`] with each of the subscription's messages. 0 is the default.
pub type Tag = u32;

/// How a protocol frames the messages of a batch. The fan-out calls it around every stored body it copies and for
/// every `gap` it reports; the protocol's session adds messages of its own through [`BatchWriter::push_with`].
///
/// Implementations are called once per message on the hot path: they write a few bytes and never allocate.
pub trait Framing {
    /// The stored body the framing's messages carry.
    fn body(&self) -> BodyFormat;

    /// Writes what precedes a stored body of `body_len` bytes: `n` messages are in the batch already; `snapshot`
    /// is `Some(recovered)` for a snapshot, `None` for a live event. Returns an offset for
    /// [`Framing::close_stored`] (typically where the message starts).
    fn open_stored(
        &mut self,
        buf: &mut BytesMut,
        n: usize,
        kind: Kind,
        snapshot: Option<bool>,
        tag: Tag,
        body_len: usize,
    ) -> usize;

    /// Closes the message opened at `open` once its body is in `buf`; returns the number of messages the batch
    /// gained (1, or more when the framing writes the message more than once).
    fn close_stored(&mut self, buf: &mut BytesMut, open: usize) -> usize;

    /// Writes a `gap`: seqs `from..=to` of `topic` were skipped. `n` messages are in the batch already.
    fn push_gap(&mut self, buf: &mut BytesMut, n: usize, topic: &str, from: u64, to: u64);

    /// Completes a non-empty batch before it is handed to the socket (the closing `]` of a JSON array).
    fn finish(&mut self, buf: &mut BytesMut) {
        let _ = buf;
    }
}

/// The native protocol's two encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text frames (the default).
    Json,
    /// The compact binary encoding, chosen by the WebSocket subprotocol `marquee.bin`.
    Binary,
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

/// The native framing: a JSON array of event objects, or binary records (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Native(pub Encoding);

impl Native {
    /// Opens a record of the protocol's own (`ack`, `gap`...): the JSON separator and `{"type":"<ty>",`, or the
    /// binary header. Returns the offset for [`Native::close`].
    fn open(self, buf: &mut BytesMut, n: usize, json_type: &str, rec_type: u8) -> usize {
        let at = buf.len();
        match self.0 {
            Encoding::Json => {
                buf.put_u8(if n == 0 { b'[' } else { b',' });
                buf.extend_from_slice(b"{\"type\":\"");
                buf.extend_from_slice(json_type.as_bytes());
                buf.extend_from_slice(b"\",");
            }
            Encoding::Binary => buf.extend_from_slice(&[0, 0, 0, 0, rec_type, 0, 0, 0]),
        }
        at
    }

    /// Fills in the binary length field of the record opened at `at`.
    fn close(self, buf: &mut [u8], at: usize) {
        if self.0 == Encoding::Binary {
            let len = (buf.len() - at - 4) as u32;
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
    }
}

impl Framing for Native {
    fn body(&self) -> BodyFormat {
        match self.0 {
            Encoding::Json => BodyFormat::Json,
            Encoding::Binary => BodyFormat::Binary,
        }
    }

    fn open_stored(
        &mut self,
        buf: &mut BytesMut,
        n: usize,
        kind: Kind,
        snapshot: Option<bool>,
        _tag: Tag,
        _body_len: usize,
    ) -> usize {
        let at = buf.len();
        match self.0 {
            Encoding::Json => {
                buf.put_u8(if n == 0 { b'[' } else { b',' });
                buf.extend_from_slice(json_opening(kind, snapshot));
            }
            Encoding::Binary => {
                let (rec, flags) = match snapshot {
                    None => (record::EVENT, 0),
                    Some(r) => (record::SNAPSHOT, r as u8),
                };
                buf.extend_from_slice(&[0, 0, 0, 0, rec, kind as u8, flags, 0]);
            }
        }
        at
    }

    fn close_stored(&mut self, buf: &mut BytesMut, open: usize) -> usize {
        self.close(buf, open);
        1
    }

    fn push_gap(&mut self, buf: &mut BytesMut, n: usize, topic: &str, from: u64, to: u64) {
        let at = self.open(buf, n, "gap", record::GAP);
        match self.0 {
            Encoding::Json => push_gap_json(buf, topic, from, to),
            Encoding::Binary => {
                buf.extend_from_slice(&from.to_le_bytes());
                buf.extend_from_slice(&to.to_le_bytes());
                let t = &topic.as_bytes()[..topic.len().min(255)];
                buf.put_u8(t.len() as u8);
                buf.extend_from_slice(t);
            }
        }
        self.close(buf, at);
    }

    fn finish(&mut self, buf: &mut BytesMut) {
        if self.0 == Encoding::Json {
            buf.put_u8(b']');
        }
    }
}

/// The opening of a stored message's JSON event object, up to where its stored body starts. A named event's body
/// starts with its type name's JSON string, so only the member name goes here. Shared by every framing that
/// carries the JSON event objects.
pub fn json_opening(kind: Kind, snapshot: Option<bool>) -> &'static [u8] {
    match (kind.is_named(), snapshot) {
        (true, None) => b"{\"type\":",
        (true, Some(true)) => b"{\"type\":\"snapshot\",\"recovered\":true,\"event\":",
        (true, Some(false)) => b"{\"type\":\"snapshot\",\"recovered\":false,\"event\":",
        (false, None) => b"{\"type\":\"tick\",",
        (false, Some(true)) => b"{\"type\":\"snapshot\",\"recovered\":true,",
        (false, Some(false)) => b"{\"type\":\"snapshot\",\"recovered\":false,",
    }
}

/// The members of a `gap` event after its `"type"`: `"topic":T,"from":N,"to":M}`.
pub fn push_gap_json(buf: &mut BytesMut, topic: &str, from: u64, to: u64) {
    let mut ib = itoa::Buffer::new();
    buf.extend_from_slice(b"\"topic\":\"");
    push_json_str(buf, topic);
    buf.extend_from_slice(b"\",\"from\":");
    buf.extend_from_slice(ib.format(from).as_bytes());
    buf.extend_from_slice(b",\"to\":");
    buf.extend_from_slice(ib.format(to).as_bytes());
    buf.put_u8(b'}');
}

/// Builds one batch (one frame) in a reusable buffer: many messages, one write.
///
/// Messages can be written speculatively with [`BatchWriter::mark`] and rolled back with
/// [`BatchWriter::rollback`] (the ring reader does so when a slot was overwritten while it copied).
///
/// The batch is built in a `BytesMut` and handed to the socket as `Bytes` ([`BatchWriter::take_frame`]) without
/// another copy; the frame takes the allocation with it and the writer starts the next batch in a new one.
#[derive(Debug)]
pub struct BatchWriter<F = Native> {
    framing: F,
    buf: BytesMut,
    n: usize,
    finished: bool,
    /// Bytes at the front of every frame for a length prefix (QUIC streams), filled in by `take_frame`.
    prefix: usize,
}

/// A point to roll a [`BatchWriter`] back to.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    len: usize,
    n: usize,
}

impl BatchWriter<Native> {
    /// An empty batch of the native protocol in `encoding`.
    pub fn new(encoding: Encoding) -> BatchWriter<Native> {
        BatchWriter::with_framing(Native(encoding))
    }

    /// The batch's native encoding.
    pub fn encoding(&self) -> Encoding {
        self.framing.0
    }

    /// `{"type":"ack","id":N}`.
    pub fn push_ack(&mut self, id: u64) {
        self.push_id_record("ack", record::ACK, id);
    }

    /// `{"type":"pong","id":N}`.
    pub fn push_pong(&mut self, id: u64) {
        self.push_id_record("pong", record::PONG, id);
    }

    /// `{"type":"ack","id":N,<members of fields>}`: an ack carrying a result (`fields` is one JSON object,
    /// e.g. `{"bid_id":"7-3"}`). In binary, the ack body is `id u64` followed by the fields object text.
    pub fn push_ack_with(&mut self, id: u64, fields: &str) {
        let members = object_members(fields);
        self.push_with(|f, buf, n| {
            let at = f.open(buf, n, "ack", record::ACK);
            match f.0 {
                Encoding::Json => {
                    buf.extend_from_slice(b"\"id\":");
                    buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
                    if !members.is_empty() {
                        buf.put_u8(b',');
                        buf.extend_from_slice(members.as_bytes());
                    }
                    buf.put_u8(b'}');
                }
                Encoding::Binary => {
                    buf.extend_from_slice(&id.to_le_bytes());
                    buf.put_u8(b'{');
                    buf.extend_from_slice(members.as_bytes());
                    buf.put_u8(b'}');
                }
            }
            f.close(buf, at);
        });
    }

    fn push_id_record(&mut self, name: &str, rec: u8, id: u64) {
        self.push_with(|f, buf, n| {
            let at = f.open(buf, n, name, rec);
            match f.0 {
                Encoding::Json => {
                    buf.extend_from_slice(b"\"id\":");
                    buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
                    buf.put_u8(b'}');
                }
                Encoding::Binary => buf.extend_from_slice(&id.to_le_bytes()),
            }
            f.close(buf, at);
        });
    }

    /// `{"type":"error","id":N,"code":C,"message":M}`; `id` is omitted (0 in binary) when the op had none.
    pub fn push_error(&mut self, id: Option<u64>, code: &str, message: &str) {
        self.push_with(|f, buf, n| {
            let at = f.open(buf, n, "error", record::ERROR);
            match f.0 {
                Encoding::Json => {
                    if let Some(id) = id {
                        buf.extend_from_slice(b"\"id\":");
                        buf.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
                        buf.put_u8(b',');
                    }
                    buf.extend_from_slice(b"\"code\":\"");
                    push_json_str(buf, code);
                    buf.extend_from_slice(b"\",\"message\":\"");
                    push_json_str(buf, message);
                    buf.extend_from_slice(b"\"}");
                }
                Encoding::Binary => {
                    buf.extend_from_slice(&id.unwrap_or(0).to_le_bytes());
                    let c = &code.as_bytes()[..code.len().min(255)];
                    buf.put_u8(c.len() as u8);
                    buf.extend_from_slice(c);
                    let m = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
                    buf.extend_from_slice(&(m.len() as u16).to_le_bytes());
                    buf.extend_from_slice(m);
                }
            }
            f.close(buf, at);
        });
    }
}

impl<F: Framing> BatchWriter<F> {
    /// An empty batch framed by `framing`.
    pub fn with_framing(framing: F) -> BatchWriter<F> {
        BatchWriter { framing, buf: BytesMut::with_capacity(256), n: 0, finished: false, prefix: 0 }
    }

    /// Starts every frame with its length as a u32 big-endian (the framing of QUIC streams), written by
    /// [`BatchWriter::take_frame`] into room kept at the front, so the prefix costs no copy either.
    pub fn set_length_prefix(&mut self) {
        self.prefix = 4;
        self.clear();
    }

    /// The framing.
    pub fn framing(&self) -> &F {
        &self.framing
    }

    /// The framing, to change its settings (e.g. SignalR switching to MessagePack after the handshake).
    pub fn framing_mut(&mut self) -> &mut F {
        &mut self.framing
    }

    /// Messages in the batch so far.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when no message has been written.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes in the batch so far (the length prefix not counted).
    pub fn n_bytes(&self) -> usize {
        self.buf.len() - self.prefix
    }

    /// A point to roll back to.
    pub fn mark(&self) -> Mark {
        Mark { len: self.buf.len(), n: self.n }
    }

    /// Forgets everything written since `mark`.
    pub fn rollback(&mut self, mark: Mark) {
        self.buf.truncate(mark.len);
        self.n = mark.n;
    }

    /// Appends one message of the protocol's own (an answer, an error, a hub message): `write` gets the framing,
    /// the buffer and the number of messages already in the batch.
    pub fn push_with(&mut self, write: impl FnOnce(&mut F, &mut BytesMut, usize)) {
        write(&mut self.framing, &mut self.buf, self.n);
        self.n += 1;
    }

    /// Writes a `gap`: seqs `from..=to` of `topic` were skipped.
    pub fn push_gap(&mut self, topic: &str, from: u64, to: u64) {
        self.framing.push_gap(&mut self.buf, self.n, topic, from, to);
        self.n += 1;
    }

    /// Opens a stored message; the caller appends its body to [`BatchWriter::buf_mut`] and then calls
    /// [`BatchWriter::close_stored`] with the returned offset.
    pub(crate) fn open_stored(&mut self, kind: Kind, snapshot: Option<bool>, tag: Tag, body_len: usize) -> usize {
        self.framing.open_stored(&mut self.buf, self.n, kind, snapshot, tag, body_len)
    }

    pub(crate) fn close_stored(&mut self, open: usize) {
        self.n += self.framing.close_stored(&mut self.buf, open);
    }

    pub(crate) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Writes a complete stored message from its bodies (for snapshots built outside a ring, and tests); a
    /// MessagePack framing gets the body encoded from `json_body` here (not a hot path).
    pub fn push_stored(&mut self, kind: Kind, snapshot: Option<bool>, tag: Tag, json_body: &[u8], bin_body: &[u8]) {
        let mut msgpack = Vec::new();
        let body = match self.framing.body() {
            BodyFormat::Json => json_body,
            BodyFormat::Binary => bin_body,
            BodyFormat::MsgPack => {
                let encoded = crate::msgpack::encode_body(kind, json_body, &mut Vec::new(), &mut msgpack);
                debug_assert!(encoded.is_ok(), "a JSON body that is not JSON");
                &msgpack
            }
        };
        let at = self.open_stored(kind, snapshot, tag, body.len());
        self.buf.extend_from_slice(body);
        self.close_stored(at);
    }

    /// Closes the batch and returns its bytes (valid until the next write; the length prefix not included);
    /// `None` when empty. Call [`BatchWriter::clear`] once the frame has been handed over.
    pub fn finish(&mut self) -> Option<&[u8]> {
        if self.n == 0 {
            return None;
        }
        if !self.finished {
            self.framing.finish(&mut self.buf);
            self.finished = true;
        }
        Some(&self.buf[self.prefix..])
    }

    /// Closes the batch and hands its bytes over without a copy (with the length prefix, when asked for), then
    /// starts the next batch in a new buffer; `None` when empty. The returned bytes own their allocation, which
    /// is freed when the transport drops them.
    pub fn take_frame(&mut self) -> Option<Bytes> {
        let len = self.finish()?.len();
        if self.prefix == 4 {
            self.buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
        }
        // The batch's buffer goes with the frame; the next batch gets a fresh one about the size of this one.
        // Measured against the alternatives (bench-results/README.md, "Before and after the protocol-core
        // restructure"): `split()` keeps one shared allocation per connection but pays an atomic refcount on a
        // cold line per batch and a move of the next batch's start when it reclaims the room, which cost more
        // than a fresh allocation from the thread-local allocator and its free after the socket write.
        let next = (2 * self.buf.len()).clamp(256, self.buf.capacity().max(256));
        let frame = std::mem::replace(&mut self.buf, BytesMut::with_capacity(next)).freeze();
        self.clear();
        Some(frame)
    }

    /// Empties the batch, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.resize(self.prefix, 0);
        self.n = 0;
        self.finished = false;
    }
}
