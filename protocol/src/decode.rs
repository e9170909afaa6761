//! Client-side decoding of the native binary encoding, for loadgen, the tests and anyone writing a client in Rust:
//! [`decode_bin_batch`] decodes every record into owned values, [`RawRecords`] walks a batch without allocating.
//! The server never decodes what it sends.

pub use marquee_engine::batch::record;
use marquee_engine::body::ABSENT;
use marquee_engine::depth::BIN_LEVEL_LEN;
use marquee_engine::{BookLevel, Kind, Price, Side, Tick, Trade};

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
    Book(BinBook),
    /// A trade print (kind 4) or its snapshot.
    Trade(BinTrade),
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
                BinRecord::Book(decode_book(ty, flags, body)?)
            }
            record::EVENT | record::SNAPSHOT if rest.first() == Some(&(Kind::Trade as u8)) => {
                BinRecord::Trade(decode_trade(ty, flags, body)?)
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

/// The fuzzing harness of the client decoders (`fuzz/fuzz_targets/bin_batch.rs`, and its corpus as a regression
/// test): whatever the bytes, nothing may panic.
#[doc(hidden)]
pub fn fuzz_bin_batch(data: &[u8]) {
    let _ = decode_bin_batch(data);
    for rec in RawRecords::new(data).flatten() {
        let _ = (rec.position(), rec.gap());
    }
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

/// A decoded binary book record (for clients and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinBook {
    /// Record type: event or snapshot.
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
    /// Bids, best first.
    pub bids: Vec<BookLevel>,
    /// Asks, best first.
    pub asks: Vec<BookLevel>,
}

/// A decoded binary trade record (for clients and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinTrade {
    /// Record type: event or snapshot.
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
    /// The print.
    pub trade: Trade,
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

fn topic_at(b: &[u8], i: usize) -> Option<String> {
    let tl = *b.get(i)? as usize;
    let t = b.get(i + 1..i + 1 + tl)?;
    if i + 1 + tl != b.len() {
        return None;
    }
    Some(std::str::from_utf8(t).ok()?.to_owned())
}

/// Decodes a book body; `None` when malformed (never panics).
pub fn decode_book(record_type: u8, flags: u8, body: &[u8]) -> Option<BinBook> {
    let n_bids = u16::from_le_bytes(body.get(24..26)?.try_into().ok()?) as usize;
    let n_asks = u16::from_le_bytes(body.get(26..28)?.try_into().ok()?) as usize;
    let levels_end = 28 + (n_bids + n_asks) * BIN_LEVEL_LEN;
    let levels = body.get(28..levels_end)?;
    let mut all = levels.chunks_exact(BIN_LEVEL_LEN).map(|l| BookLevel {
        price: Price(u64_at(l, 0).unwrap_or_default() as i64),
        size: u64_at(l, 8).unwrap_or_default(),
        orders: u32::from_le_bytes(l[16..20].try_into().unwrap_or_default()),
    });
    let bids = all.by_ref().take(n_bids).collect();
    let asks = all.collect();
    Some(BinBook {
        record_type,
        recovered: flags & 1 == 1,
        topic: topic_at(body, levels_end)?,
        epoch: u64_at(body, 0)?,
        seq: u64_at(body, 8)?,
        ts: u64_at(body, 16)? as i64,
        bids,
        asks,
    })
}

/// Decodes a trade body; `None` when malformed (never panics).
pub fn decode_trade(record_type: u8, flags: u8, body: &[u8]) -> Option<BinTrade> {
    Some(BinTrade {
        record_type,
        recovered: flags & 1 == 1,
        topic: topic_at(body, 41)?,
        epoch: u64_at(body, 0)?,
        seq: u64_at(body, 8)?,
        ts: u64_at(body, 16)? as i64,
        trade: Trade {
            price: Price(u64_at(body, 24)? as i64),
            size: u64_at(body, 32)?,
            side: Side::from_u8(*body.get(40)?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use marquee_engine::body::*;
    use marquee_engine::{BatchWriter, Encoding};

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
        w.push_stored(Kind::Tick, Some(true), 0, &body, &[]);
        w.push_stored(Kind::Tick, None, 0, &body, &[]);
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
        w.push_stored(Kind::Tick, Some(false), 0, &[], &body);
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
        w.push_stored(Kind::Event, None, 0, &j, &[]);
        w.push_stored(Kind::Event, Some(false), 0, &j, &[]);
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
        w.push_stored(Kind::Event, None, 0, &j, &[]);
        let v: serde_json::Value = serde_json::from_slice(w.finish().unwrap()).unwrap();
        assert_eq!(v[0], serde_json::json!({"type":"ping_me","topic":"lots.1","epoch":1,"seq":1,"ts":2}));
    }

    #[test]
    fn codec_event_binary_round_trips() {
        let (_, b) = event_bodies(9);
        let mut w = BatchWriter::new(Encoding::Binary);
        w.push_stored(Kind::Event, Some(true), 0, &[], &b);
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
        w.push_stored(Kind::Event, None, 0, &[], &b);
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
        w.push_stored(Kind::Tick, None, 0, &[], &body);
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
        w.push_stored(Kind::Tick, None, 0, &[], &body);
        let bytes = w.finish().unwrap().to_vec();
        for cut in 0..bytes.len() {
            let r = decode_bin_batch(&bytes[..cut]);
            assert!(cut == 0 || r.is_none(), "cut {cut}");
        }
    }

    fn lv(cents: i64, size: u64, orders: u32) -> BookLevel {
        BookLevel { price: Price::from_cents(cents), size, orders }
    }

    #[test]
    fn depth_book_and_trade_round_trip_in_binary() {
        use marquee_engine::depth::*;
        let bids = [lv(18722, 300, 2), lv(18721, 500, 3)];
        let asks = [lv(18724, 200, 1)];
        let mut bin = Vec::new();
        encode_book_bin(&mut bin, "book.AAPL", 5, 9, 11, &bids, &asks);
        let mut b = BatchWriter::new(Encoding::Binary);
        b.push_stored(Kind::Book, None, 0, &[], &bin);
        let recs = decode_bin_batch(b.finish().unwrap()).unwrap();
        let BinRecord::Book(book) = &recs[0] else { panic!("{recs:?}") };
        assert_eq!((book.topic.as_str(), book.epoch, book.seq, book.ts), ("book.AAPL", 5, 9, 11));
        assert_eq!((book.bids.as_slice(), book.asks.as_slice()), (&bids[..], &asks[..]));
        for side in [Some(Side::Buy), Some(Side::Sell), None] {
            let t = Trade { price: Price::from_cents(10), size: 7, side };
            let mut bin = Vec::new();
            encode_trade_bin(&mut bin, "trades.T", 1, 2, 3, &t);
            let mut b = BatchWriter::new(Encoding::Binary);
            b.push_stored(Kind::Trade, Some(false), 0, &[], &bin);
            let recs = decode_bin_batch(b.finish().unwrap()).unwrap();
            assert_eq!(recs.len(), 1);
            let BinRecord::Trade(got) = &recs[0] else { panic!("{recs:?}") };
            assert_eq!((got.trade, got.topic.as_str(), got.seq), (t, "trades.T", 2));
        }
    }

    #[test]
    fn depth_malformed_binary_is_refused_not_panicked() {
        let mut bin = Vec::new();
        marquee_engine::depth::encode_book_bin(&mut bin, "book.AAPL", 1, 1, 1, &[lv(1, 1, 1)], &[lv(2, 2, 2)]);
        for cut in 0..bin.len() {
            assert!(decode_book(1, 0, &bin[..cut]).is_none(), "cut at {cut}");
        }
        bin[24] = 200; // n_bids far beyond the body
        assert!(decode_book(1, 0, &bin).is_none());
        assert!(decode_trade(1, 0, &[0; 40]).is_none());
    }
}
