//! A topic's ring of recent messages: one writer, any number of lock-free readers, overwrite-oldest.
//!
//! Each slot is a small seqlock made only of atomics, so reads and writes need no `unsafe` (the memory itself comes
//! from `zeroed.rs`, lazily zeroed): the slot's first word holds the seq of the message in it (or [`BUSY`] while
//! the writer rewrites it); the rest hold the publish time, the body lengths and the encoded bodies (JSON, binary,
//! then MessagePack) packed into `u64` words. A reader copies the words it
//! needs straight into its connection's batch and then checks that the slot's seq did not move; if it did, the
//! copy is rolled back and the reader learns it was lapped.
//!
//! ## Capacity
//! A power of two (default 4096). Seq `s` lives in slot `s & (capacity - 1)`; the ring holds seqs
//! `head - capacity + 1 ..= head`.
//!
//! ## Lagging
//! The writer never waits for readers. A reader whose next seq fell out of the ring gets
//! [`ReadOutcome::Overwritten`] and decides what that means for its topic: conflate (ticks) or close (reliable).
//!
//! ```
//! use marquee_engine::{Engine, EngineConfig, RingConfig, Tick, Price};
//! let engine = Engine::new(EngineConfig { ring: RingConfig { capacity: 4, slot_bytes: 512 }, ..Default::default() });
//! let mut w = engine.create_topic("ticks.AAPL").unwrap();
//! for i in 1..=6 {
//!     w.publish_tick(&Tick { price: Price(i), size: 1, ..Default::default() }, 0);
//! }
//! let t = engine.topic("ticks.AAPL").unwrap();
//! assert_eq!(t.head(), 6);
//! assert_eq!(t.oldest(), 3); // seqs 1 and 2 were overwritten
//! ```

use crate::batch::{BatchWriter, BodyFormat, Framing, Tag};
use crate::body::Kind;
use crate::sync::{AtomicU64, Ordering, fence};
use crate::zeroed::ZeroedWords;
use crossbeam_utils::CachePadded;

/// Marks a slot the writer is rewriting.
const BUSY: u64 = u64::MAX;
/// Words before the data in each slot: seq, ts, JSON and binary lengths with the kind, MessagePack length.
const HEADER_WORDS: usize = 4;

/// Size of a topic's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Slots; a power of two.
    pub capacity: usize,
    /// Room per slot for one message's JSON, binary and MessagePack bodies together.
    pub slot_bytes: usize,
}

impl RingConfig {
    /// The default for reliable topics (`lots.*`, `users.*`): 256 slots of 1.5 KiB (about 400 KiB per topic).
    /// Events carry JSON fields, so slots are wider than a tick's; there is one such topic per user and per
    /// lot, and each sees far fewer messages than a tick topic, so there are fewer of them.
    pub const RELIABLE: RingConfig = RingConfig { capacity: 256, slot_bytes: 1536 };
    /// The default for private topics (`users.<name>`, one per user): 64 slots of 1.5 KiB (about 100 KiB). A user
    /// hears a few events per bid, so 64 is far more than a connected client ever has pending.
    pub const PRIVATE: RingConfig = RingConfig { capacity: 64, slot_bytes: 1536 };
}

impl Default for RingConfig {
    fn default() -> RingConfig {
        RingConfig { capacity: 4096, slot_bytes: 512 }
    }
}

/// What a read of one seq found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// The message was appended to the batch.
    Copied,
    /// The slot holds a newer message (or is being rewritten): the reader was lapped.
    Overwritten,
    /// The slot holds an older message: the seq is not published yet, or the source skipped it.
    Missing,
}

pub(crate) struct Ring {
    mask: u64,
    /// `HEADER_WORDS` + data words.
    stride: usize,
    slot_bytes: usize,
    words: ZeroedWords,
    /// Highest published seq, 0 before the first. Written only by the topic's writer (Release, after the slot);
    /// read by readers (Acquire) to learn how far they may read.
    head: CachePadded<AtomicU64>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("capacity", &self.capacity()).field("head", &self.head()).finish()
    }
}

impl Ring {
    pub(crate) fn new(cfg: RingConfig) -> Ring {
        assert!(cfg.capacity.is_power_of_two(), "ring capacity must be a power of two");
        let stride = HEADER_WORDS + cfg.slot_bytes.div_ceil(8) + 1;
        let words = ZeroedWords::new(cfg.capacity * stride);
        Ring {
            mask: cfg.capacity as u64 - 1,
            stride,
            slot_bytes: cfg.slot_bytes,
            words,
            head: CachePadded::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.mask + 1
    }

    pub(crate) fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    pub(crate) fn head(&self) -> u64 {
        // Acquire pairs with the Release in `write`: a reader that sees head >= s sees slot s written.
        self.head.load(Ordering::Acquire)
    }

    fn slot(&self, seq: u64) -> &[AtomicU64] {
        let base = (seq & self.mask) as usize * self.stride;
        &self.words[base..base + self.stride]
    }

    /// Stores message `seq`. Only the topic's single writer calls this, with `seq` greater than every seq
    /// written before; the caller checked that the bodies fit ([`Bodies::fit`]).
    pub(crate) fn write(&self, seq: u64, ts: i64, kind: Kind, bodies: Bodies<'_>) {
        let Bodies { json, bin, msgpack } = bodies;
        debug_assert!(seq != 0 && seq != BUSY);
        let slot = self.slot(seq);
        // Relaxed + the Release fence below: any reader that observes one of the data words stored after the
        // fence, and then runs its Acquire fence, must see BUSY (or later) when it re-reads the seq word.
        slot[0].store(BUSY, Ordering::Relaxed);
        fence(Ordering::Release);
        slot[1].store(ts as u64, Ordering::Relaxed);
        let lens = json.len() as u64 | (bin.len() as u64) << 24 | (kind as u64) << 48;
        slot[2].store(lens, Ordering::Relaxed);
        slot[3].store(msgpack.len() as u64, Ordering::Relaxed);
        let json_end = HEADER_WORDS + json.len().div_ceil(8);
        let bin_end = json_end + bin.len().div_ceil(8);
        pack(&slot[HEADER_WORDS..json_end], json);
        pack(&slot[json_end..bin_end], bin);
        pack(&slot[bin_end..], msgpack);
        // Release: publishes the data words together with the seq that validates them.
        slot[0].store(seq, Ordering::Release);
        self.head.store(seq, Ordering::Release);
    }

    /// Appends message `seq` to `batch` as an event (or as a snapshot when `snapshot` is `Some(recovered)`),
    /// framed for the subscription tagged `tag`.
    pub(crate) fn read_into<F: Framing>(
        &self,
        seq: u64,
        snapshot: Option<bool>,
        tag: Tag,
        batch: &mut BatchWriter<F>,
    ) -> ReadOutcome {
        let slot = self.slot(seq);
        // Acquire pairs with the Release store of the seq word: the data words we read below are at least as new
        // as that message.
        let s1 = slot[0].load(Ordering::Acquire);
        if s1 != seq {
            return if s1 == BUSY || s1 > seq { ReadOutcome::Overwritten } else { ReadOutcome::Missing };
        }
        let lens = slot[2].load(Ordering::Relaxed);
        let json_len = (lens & 0xff_ffff) as usize;
        let bin_len = ((lens >> 24) & 0xff_ffff) as usize;
        let kind = Kind::from_u8((lens >> 48) as u8);
        let (start, len) = match batch.framing().body() {
            BodyFormat::Json => (HEADER_WORDS, json_len),
            BodyFormat::Binary => (HEADER_WORDS + json_len.div_ceil(8), bin_len),
            BodyFormat::MsgPack => {
                let msgpack_len = slot[3].load(Ordering::Relaxed) as usize & 0xff_ffff;
                (HEADER_WORDS + json_len.div_ceil(8) + bin_len.div_ceil(8), msgpack_len)
            }
        };
        let mark = batch.mark();
        let words = len.div_ceil(8);
        // A torn read can show garbage lengths; clamp so the copy stays inside the slot. The seq check below
        // then throws the copy away.
        let end = (start + words).min(slot.len());
        let at = batch.open_stored(kind, snapshot, tag, len);
        let buf = batch.buf_mut();
        let body_start = buf.len();
        // One resize, then plain stores: far cheaper than an `extend` (capacity check) per word.
        buf.resize(body_start + (end - start) * 8, 0);
        for (dst, w) in buf[body_start..].chunks_exact_mut(8).zip(&slot[start..end]) {
            dst.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        buf.truncate(body_start + len.min((end - start) * 8));
        // Acquire fence: orders the data loads above before the seq re-check (the seqlock read side).
        fence(Ordering::Acquire);
        if slot[0].load(Ordering::Relaxed) != seq {
            batch.rollback(mark);
            return ReadOutcome::Overwritten;
        }
        batch.close_stored(at);
        ReadOutcome::Copied
    }

    /// Publish time of message `seq` if the slot still holds it.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn ts_of(&self, seq: u64) -> Option<i64> {
        let slot = self.slot(seq);
        let s1 = slot[0].load(Ordering::Acquire);
        let ts = slot[1].load(Ordering::Relaxed) as i64;
        fence(Ordering::Acquire);
        (s1 == seq && slot[0].load(Ordering::Relaxed) == seq).then_some(ts)
    }
}

/// Packs `bytes` little-endian into `dst` words (Relaxed: the slot's seq word publishes them).
fn pack(dst: &[AtomicU64], bytes: &[u8]) {
    let mut chunks = bytes.chunks_exact(8);
    for (w, chunk) in dst.iter().zip(&mut chunks) {
        w.store(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        dst[bytes.len() / 8].store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

/// A message's bodies, one per stored format (see [`crate::body`] and [`crate::msgpack`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bodies<'a> {
    pub(crate) json: &'a [u8],
    pub(crate) bin: &'a [u8],
    pub(crate) msgpack: &'a [u8],
}

impl Bodies<'_> {
    /// True when the bodies fit a slot of `slot_bytes` (each rounded up to whole words; the slot has one word
    /// of slack for that rounding).
    pub(crate) fn fit(&self, slot_bytes: usize) -> bool {
        let words = self.json.len().div_ceil(8) + self.bin.len().div_ceil(8) + self.msgpack.len().div_ceil(8);
        words <= slot_bytes.div_ceil(8) + 1 && [self.json, self.bin, self.msgpack].iter().all(|b| b.len() < 1 << 24)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Encoding;
    use proptest::prelude::*;

    fn body(seq: u64) -> Vec<u8> {
        format!("\"n\":{seq}}}").into_bytes()
    }

    fn read_json(ring: &Ring, seq: u64) -> Result<String, ReadOutcome> {
        let mut b = BatchWriter::new(Encoding::Json);
        match ring.read_into(seq, None, 0, &mut b) {
            ReadOutcome::Copied => Ok(String::from_utf8(b.finish().unwrap().to_vec()).unwrap()),
            other => Err(other),
        }
    }

    #[test]
    fn ring_reads_back_what_was_written() {
        let ring = Ring::new(RingConfig { capacity: 4, slot_bytes: 64 });
        assert_eq!(read_json(&ring, 1), Err(ReadOutcome::Missing));
        ring.write(1, 11, Kind::Tick, Bodies { json: &body(1), bin: b"\x01\x02\x03", msgpack: b"\x80" });
        assert_eq!(ring.head(), 1);
        assert_eq!(read_json(&ring, 1).unwrap(), "[{\"type\":\"tick\",\"n\":1}]");
        let mut b = BatchWriter::new(Encoding::Binary);
        assert_eq!(ring.read_into(1, None, 0, &mut b), ReadOutcome::Copied);
        assert_eq!(b.finish().unwrap(), &[7, 0, 0, 0, 1, 1, 0, 0, 1, 2, 3]);
        let mut b = BatchWriter::with_framing(BareMsgPack);
        assert_eq!(ring.read_into(1, None, 0, &mut b), ReadOutcome::Copied);
        assert_eq!(b.finish().unwrap(), b"\x80");
        assert_eq!(ring.ts_of(1), Some(11));
    }

    /// A framing that copies the MessagePack body and nothing else.
    struct BareMsgPack;

    impl Framing for BareMsgPack {
        fn body(&self) -> BodyFormat {
            BodyFormat::MsgPack
        }
        fn open_stored(
            &mut self,
            buf: &mut bytes::BytesMut,
            _: usize,
            _: Kind,
            _: Option<bool>,
            _: Tag,
            _: usize,
        ) -> usize {
            buf.len()
        }
        fn close_stored(&mut self, _: &mut bytes::BytesMut, _: usize) -> usize {
            1
        }
        fn push_gap(&mut self, _: &mut bytes::BytesMut, _: usize, _: &str, _: u64, _: u64) {}
    }

    #[derive(Debug, Clone)]
    enum Op {
        Publish(u8),
        Read(u8),
    }

    proptest! {
        /// Model: a Vec of every message ever published. The ring must return exactly the last `capacity` of
        /// them, report older ones as overwritten and newer ones as missing.
        #[test]
        fn ring_matches_model_across_wraparound(
            cap_log in 0u32..5,
            ops in proptest::collection::vec(
                prop_oneof![(1u8..20).prop_map(Op::Publish), any::<u8>().prop_map(Op::Read)], 1..200),
        ) {
            let cap = 1u64 << cap_log;
            let ring = Ring::new(RingConfig { capacity: cap as usize, slot_bytes: 48 });
            let mut model: Vec<Vec<u8>> = Vec::new();
            for op in ops {
                match op {
                    Op::Publish(n) => {
                        let seq = model.len() as u64 + 1;
                        let json = vec![b'a' + n % 26; n as usize];
                        ring.write(seq, seq as i64, Kind::Tick, Bodies { json: &json, bin: &[], msgpack: &[] });
                        model.push(json);
                    }
                    Op::Read(r) => {
                        let head = model.len() as u64;
                        let seq = u64::from(r) % (head + 2) + 1;
                        let got = read_json(&ring, seq);
                        if seq > head {
                            prop_assert_eq!(got, Err(ReadOutcome::Missing));
                        } else if seq + cap <= head {
                            prop_assert_eq!(got, Err(ReadOutcome::Overwritten));
                        } else {
                            let want = format!("[{{\"type\":\"tick\",{}]",
                                String::from_utf8(model[seq as usize - 1].clone()).unwrap());
                            prop_assert_eq!(got, Ok(want));
                        }
                    }
                }
                prop_assert_eq!(ring.head(), model.len() as u64);
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::Encoding;
    use loom::sync::Arc;
    use loom::thread;

    /// A reader racing a writer that laps it either copies the exact message it asked for or learns it was
    /// overwritten: never a torn mix of two messages.
    #[test]
    fn loom_ring_read_never_torn() {
        loom::model(|| {
            let ring = Arc::new(Ring::new(RingConfig { capacity: 1, slot_bytes: 16 }));
            ring.write(1, 1, Kind::Tick, Bodies { json: b"aaaaaaaaaaaaaaa}", bin: &[], msgpack: &[] });
            let w = ring.clone();
            let writer = thread::spawn(move || {
                w.write(2, 2, Kind::Tick, Bodies { json: b"bbbbbbbbbbbbbbb}", bin: &[], msgpack: &[] })
            });
            let mut b = BatchWriter::new(Encoding::Json);
            match ring.read_into(1, None, 0, &mut b) {
                ReadOutcome::Copied => {
                    assert_eq!(b.finish().unwrap(), b"[{\"type\":\"tick\",aaaaaaaaaaaaaaa}]")
                }
                ReadOutcome::Overwritten => assert!(b.is_empty()),
                ReadOutcome::Missing => panic!("seq 1 was published before the reader started"),
            }
            writer.join().unwrap();
        });
    }
}
