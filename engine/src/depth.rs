//! Market depth and trade prints: the messages of `book.<SYMBOL>` and `trades.<SYMBOL>`, and their encoders.
//!
//! A book message is the visible top of one symbol's order book (up to N levels per side, best first), never a
//! delta: any single message is the whole state a screen needs, so these topics conflate like ticks. A trade is
//! one print of the time-and-sales tape. Who builds the book (a replayed ITCH or DBN file, the synthetic market)
//! is the feeds' business; this module only lays the messages out, once per publish, for both wire formats.
//!
//! On the JSON wire both travel like named events (their body starts with the type name, so a snapshot carries
//! `"event":"book"`), with fixed fields; in binary each has a record kind and a fixed layout of its own
//! (`docs/PROTOCOL.md`, "Market depth and trades").
//!
//! ```
//! use marquee_engine::{BookLevel, Engine, EngineConfig, Price, Side, Trade, book_topic, trades_topic};
//! let engine = Engine::new(EngineConfig::default());
//! let mut book = engine.create_book_topic(&book_topic("AAPL"), 10).unwrap();
//! let bids = [BookLevel { price: Price::from_cents(18722), size: 300, orders: 2 }];
//! let asks = [BookLevel { price: Price::from_cents(18724), size: 200, orders: 1 }];
//! book.publish_book(&bids, &asks, 7).unwrap();
//! let (_, json) = engine.topic("book.AAPL").unwrap().latest_json().unwrap();
//! assert!(json.ends_with(br#""symbol":"AAPL","bids":[[187.22,300,2]],"asks":[[187.24,200,1]]}"#));
//!
//! let mut tape = engine.create_topic(&trades_topic("AAPL")).unwrap();
//! tape.publish_trade(&Trade { price: Price::from_cents(18724), size: 100, side: Some(Side::Buy) }, 8).unwrap();
//! let (_, json) = engine.topic("trades.AAPL").unwrap().latest_json().unwrap();
//! assert!(json.starts_with(br#"{"type":"trade","topic":"trades.AAPL","#));
//! assert!(json.ends_with(br#""price":187.24,"size":100,"side":"buy"}"#));
//! ```

use crate::Price;
use crate::body::push_json_str;
use crate::ring::RingConfig;

/// The prefix of order book topics: `book.AAPL`.
pub const BOOK_PREFIX: &str = "book.";
/// The prefix of trade print topics: `trades.AAPL`.
pub const TRADES_PREFIX: &str = "trades.";
/// The prefix of OHLCV bar topics: `bars.AAPL`.
pub const BARS_PREFIX: &str = "bars.";
/// The most levels per side a book message may carry.
pub const MAX_DEPTH: usize = 50;

/// `book.<symbol>`.
pub fn book_topic(symbol: &str) -> String {
    format!("{BOOK_PREFIX}{symbol}")
}

/// `trades.<symbol>`.
pub fn trades_topic(symbol: &str) -> String {
    format!("{TRADES_PREFIX}{symbol}")
}

/// `bars.<symbol>`.
pub fn bars_topic(symbol: &str) -> String {
    format!("{BARS_PREFIX}{symbol}")
}

/// One price level of a book: the price, the total size resting there and how many orders make it up (0 when
/// the source does not say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BookLevel {
    /// Level price.
    pub price: Price,
    /// Total resting size.
    pub size: u64,
    /// Resting orders; 0 when unknown.
    pub orders: u32,
}

/// Which side took liquidity in a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The buyer was the aggressor (lifted the offer).
    Buy,
    /// The seller was the aggressor (hit the bid).
    Sell,
}

impl Side {
    /// The binary `side` byte: 0 unknown, 1 buy, 2 sell.
    pub fn to_u8(side: Option<Side>) -> u8 {
        match side {
            None => 0,
            Some(Side::Buy) => 1,
            Some(Side::Sell) => 2,
        }
    }

    /// The inverse of [`Side::to_u8`]; any other byte is unknown.
    pub fn from_u8(b: u8) -> Option<Side> {
        match b {
            1 => Some(Side::Buy),
            2 => Some(Side::Sell),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// One trade print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Trade {
    /// Execution price.
    pub price: Price,
    /// Executed size.
    pub size: u64,
    /// The aggressor, when the source knows it.
    pub side: Option<Side>,
}

/// Bytes of one binary book level: `price i64, size u64, orders u32`.
pub const BIN_LEVEL_LEN: usize = 20;

/// The ring a `book.*` topic of `depth` levels per side needs: slots wide enough for the largest message of the
/// three stored formats (a level is at most about 52 bytes of JSON, 32 of MessagePack and 20 of binary), and few
/// of them, since a reader of a conflating topic only ever wants the newest book.
pub fn book_ring(depth: usize) -> RingConfig {
    let depth = depth.clamp(1, MAX_DEPTH);
    let bytes = 384 + 2 * depth * (52 + 32 + BIN_LEVEL_LEN);
    RingConfig { capacity: 256, slot_bytes: bytes.next_multiple_of(64) }
}

/// Appends `"<ty>","topic":"T","epoch":E,"seq":S,"ts":TS,"symbol":"SYM"`: the common start of a book or trade
/// JSON body (the batch writer puts `{"type":` before it).
fn json_head(out: &mut Vec<u8>, ty: &str, topic: &str, prefix: &str, epoch: u64, seq: u64, ts: i64) {
    crate::body::push_event_head(out, ty, topic, epoch, seq, ts);
    out.extend_from_slice(b",\"symbol\":\"");
    push_json_str(out, topic.strip_prefix(prefix).unwrap_or(topic));
    out.push(b'"');
}

fn push_topic_tail(out: &mut Vec<u8>, topic: &str) {
    let t = &topic.as_bytes()[..topic.len().min(255)];
    out.push(t.len() as u8);
    out.extend_from_slice(t);
}

/// Appends a book's JSON body: the common head, then `"bids":[[price,size,orders],...],"asks":[...]}`.
pub fn encode_book_json(
    out: &mut Vec<u8>,
    topic: &str,
    epoch: u64,
    seq: u64,
    ts: i64,
    bids: &[BookLevel],
    asks: &[BookLevel],
) {
    json_head(out, "book", topic, BOOK_PREFIX, epoch, seq, ts);
    let mut ib = itoa::Buffer::new();
    for (name, levels) in [(&b",\"bids\":["[..], bids), (&b"],\"asks\":["[..], asks)] {
        out.extend_from_slice(name);
        for (i, l) in levels.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"[" } else { b",[" });
            l.price.write_decimal(out);
            out.push(b',');
            out.extend_from_slice(ib.format(l.size).as_bytes());
            out.push(b',');
            out.extend_from_slice(ib.format(l.orders).as_bytes());
            out.push(b']');
        }
    }
    out.extend_from_slice(b"]}");
}

/// Appends the MessagePack members a book or trade map starts with: `"type":ty`, `"topic"`, `"epoch"`, `"seq"`,
/// `"ts"`, `"symbol"` (the map header is the caller's).
fn msgpack_head(out: &mut Vec<u8>, ty: &str, topic: &str, prefix: &str, epoch: u64, seq: u64, ts: i64) {
    use crate::msgpack::{put_int, put_uint, str_header};
    out.extend_from_slice(b"\xa4type");
    str_header(ty.len(), out);
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\xa5topic");
    str_header(topic.len(), out);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(b"\xa5epoch");
    put_uint(out, epoch);
    out.extend_from_slice(b"\xa3seq");
    put_uint(out, seq);
    out.extend_from_slice(b"\xa2ts");
    put_int(out, ts);
    let symbol = topic.strip_prefix(prefix).unwrap_or(topic);
    out.extend_from_slice(b"\xa6symbol");
    str_header(symbol.len(), out);
    out.extend_from_slice(symbol.as_bytes());
}

/// Appends a book's MessagePack body: the bytes [`crate::msgpack::encode_body`] makes of its JSON body (a test
/// checks it), written directly because a book goes with every tick of a replay or the synthetic market.
pub fn encode_book_msgpack(
    out: &mut Vec<u8>,
    topic: &str,
    epoch: u64,
    seq: u64,
    ts: i64,
    bids: &[BookLevel],
    asks: &[BookLevel],
) {
    use crate::msgpack::{put_int, put_uint};
    out.push(0xdf);
    out.extend_from_slice(&8u32.to_be_bytes());
    msgpack_head(out, "book", topic, BOOK_PREFIX, epoch, seq, ts);
    for (name, levels) in [(&b"\xa4bids"[..], bids), (&b"\xa4asks"[..], asks)] {
        out.extend_from_slice(name);
        out.push(0xdd);
        out.extend_from_slice(&(levels.len() as u32).to_be_bytes());
        for l in levels {
            out.extend_from_slice(&[0xdd, 0, 0, 0, 3]);
            l.price.write_msgpack(out);
            put_uint(out, l.size);
            put_int(out, i64::from(l.orders));
        }
    }
}

/// Appends a trade's MessagePack body (see [`encode_book_msgpack`]).
pub fn encode_trade_msgpack(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, t: &Trade) {
    let members: u32 = if t.side.is_some() { 9 } else { 8 };
    out.push(0xdf);
    out.extend_from_slice(&members.to_be_bytes());
    msgpack_head(out, "trade", topic, TRADES_PREFIX, epoch, seq, ts);
    out.extend_from_slice(b"\xa5price");
    t.price.write_msgpack(out);
    out.extend_from_slice(b"\xa4size");
    crate::msgpack::put_uint(out, t.size);
    if let Some(side) = t.side {
        out.extend_from_slice(b"\xa4side");
        crate::msgpack::str_header(side.name().len(), out);
        out.extend_from_slice(side.name().as_bytes());
    }
}

/// Appends a book's binary body: `epoch u64, seq u64, ts i64, n_bids u16, n_asks u16`, the levels (bids, then
/// asks, best first; [`BIN_LEVEL_LEN`] bytes each), `topic_len u8`, topic.
pub fn encode_book_bin(
    out: &mut Vec<u8>,
    topic: &str,
    epoch: u64,
    seq: u64,
    ts: i64,
    bids: &[BookLevel],
    asks: &[BookLevel],
) {
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&(bids.len() as u16).to_le_bytes());
    out.extend_from_slice(&(asks.len() as u16).to_le_bytes());
    for l in bids.iter().chain(asks) {
        out.extend_from_slice(&l.price.units().to_le_bytes());
        out.extend_from_slice(&l.size.to_le_bytes());
        out.extend_from_slice(&l.orders.to_le_bytes());
    }
    push_topic_tail(out, topic);
}

/// Appends a trade's JSON body: the common head, then `"price":P,"size":N` and `"side":"buy"|"sell"` when known.
pub fn encode_trade_json(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, t: &Trade) {
    json_head(out, "trade", topic, TRADES_PREFIX, epoch, seq, ts);
    out.extend_from_slice(b",\"price\":");
    t.price.write_decimal(out);
    out.extend_from_slice(b",\"size\":");
    out.extend_from_slice(itoa::Buffer::new().format(t.size).as_bytes());
    if let Some(side) = t.side {
        out.extend_from_slice(b",\"side\":\"");
        out.extend_from_slice(side.name().as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
}

/// Appends a trade's binary body: `epoch u64, seq u64, ts i64, price i64, size u64, side u8`, `topic_len u8`,
/// topic.
pub fn encode_trade_bin(out: &mut Vec<u8>, topic: &str, epoch: u64, seq: u64, ts: i64, t: &Trade) {
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&t.price.units().to_le_bytes());
    out.extend_from_slice(&t.size.to_le_bytes());
    out.push(Side::to_u8(t.side));
    push_topic_tail(out, topic);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchWriter, Encoding, Engine, EngineConfig, Kind};

    fn lv(cents: i64, size: u64, orders: u32) -> BookLevel {
        BookLevel { price: Price::from_cents(cents), size, orders }
    }

    #[test]
    fn depth_book_json_is_a_named_event_with_level_arrays() {
        let bids = [lv(18722, 300, 2), lv(18721, 500, 3)];
        let asks = [lv(18724, 200, 1)];
        let (mut json, mut bin) = (Vec::new(), Vec::new());
        encode_book_json(&mut json, "book.AAPL", 5, 9, 11, &bids, &asks);
        encode_book_bin(&mut bin, "book.AAPL", 5, 9, 11, &bids, &asks);
        let mut b = BatchWriter::new(Encoding::Json);
        b.push_stored(Kind::Book, None, 0, &json, &bin);
        b.push_stored(Kind::Book, Some(true), 0, &json, &bin);
        let text = std::str::from_utf8(b.finish().unwrap()).unwrap().to_owned();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["type"], "book");
        assert_eq!(v[0]["symbol"], "AAPL");
        assert_eq!(v[0]["bids"], serde_json::json!([[187.22, 300, 2], [187.21, 500, 3]]));
        assert_eq!(v[0]["asks"], serde_json::json!([[187.24, 200, 1]]));
        assert_eq!((v[1]["type"].as_str(), v[1]["event"].as_str()), (Some("snapshot"), Some("book")));
    }

    #[test]
    fn depth_empty_book_sides_are_empty_arrays() {
        let mut json = Vec::new();
        encode_book_json(&mut json, "book.X", 1, 1, 1, &[], &[]);
        assert!(json.ends_with(br#""symbol":"X","bids":[],"asks":[]}"#), "{}", String::from_utf8_lossy(&json));
    }

    #[test]
    fn depth_trade_json_side_is_optional() {
        for side in [Some(Side::Buy), Some(Side::Sell), None] {
            let t = Trade { price: Price::from_cents(10), size: 7, side };
            let mut json = Vec::new();
            encode_trade_json(&mut json, "trades.T", 1, 2, 3, &t);
            let mut b = BatchWriter::new(Encoding::Json);
            b.push_stored(Kind::Trade, None, 0, &json, &[]);
            let v: serde_json::Value = serde_json::from_slice(b.finish().unwrap()).unwrap();
            assert_eq!(v[0]["type"], "trade");
            assert_eq!(v[0]["price"], serde_json::json!(0.1));
            assert_eq!(v[0]["side"].as_str(), side.map(Side::name));
        }
    }

    #[test]
    fn depth_deepest_book_fits_its_ring() {
        let engine = Engine::new(EngineConfig::default());
        let mut w = engine.create_book_topic("book.ABCDEFGHIJKLMNOP", MAX_DEPTH).unwrap();
        let max = lv(i64::MAX / 10_000_000, u64::MAX, u32::MAX);
        let side = vec![max; MAX_DEPTH];
        w.publish_book(&side, &side, i64::MAX).unwrap();
        let mut w = engine.create_book_topic("book.B", 10).unwrap();
        assert!(w.publish_book(&side, &side, 0).is_err(), "50 levels do not fit a 10-level ring");
    }
}
