//! MessagePack bodies: each stored message's event object as one MessagePack map, encoded once at publish like
//! the JSON and binary bodies (see [`crate::body`]): ticks, books and trades by direct encoders
//! ([`crate::body::TickEncoder::encode_msgpack`], [`crate::depth::encode_book_msgpack`]), named events by
//! transcoding their JSON object here ([`encode_body`]). Both give the same bytes (tests check it).
//!
//! The layout is fixed so that framings can build a snapshot or wrap the map without parsing it: objects are
//! map32 (`0xdf` + a u32 BE count) and arrays array32 (`0xdd` + count), strings the shortest str header, integers a
//! fixint or int64 (uint64 above `i64::MAX`), other numbers float64. A stored map's first member is always
//! `"type"`: for ticks `"type":"tick"` (the 10 bytes [`TICK_TYPE_MEMBER`]), for named events their type name
//! ([`type_name`]). A framing that builds a snapshot reads the count from bytes 1..5 ([`map_len`]) and copies the
//! members after the type. `marquee-protocol` uses the same transcoder for the SignalR MessagePack hub messages
//! it writes itself.

use crate::batch::json_opening;
use crate::body::Kind;

/// The text given to the transcoder is not JSON (never the case for a body the engine encoded or checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotJson;

impl std::fmt::Display for NotJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not JSON")
    }
}

impl std::error::Error for NotJson {}

/// Bytes of a map32 or array32 header.
pub const MAP_HEADER_LEN: usize = 5;

/// `"type":"tick"` in MessagePack: the first member of every stored tick map.
pub const TICK_TYPE_MEMBER: &[u8] = b"\xa4type\xa4tick";

/// Encodes the MessagePack body of a stored message from its JSON body (the object after its `"type"` member, see
/// [`crate::body`]): the whole event object as a live event carries it. `Err` only if the JSON is not valid,
/// which a body the engine encoded or checked never is.
pub fn encode_body(kind: Kind, json_body: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), NotJson> {
    scratch.clear();
    scratch.extend_from_slice(json_opening(kind, None));
    scratch.extend_from_slice(json_body);
    let mut sc = Scan::new(scratch);
    value(&mut sc, out)?;
    if sc.peek().is_some() { Err(NotJson) } else { Ok(()) }
}

/// The member count of a stored map (see the module docs); 0 when `map` is not one.
pub fn map_len(map: &[u8]) -> u32 {
    match map {
        [0xdf, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// The type name of a stored named event's map (the value of its first member), as raw bytes.
pub fn type_name(map: &[u8]) -> Option<&[u8]> {
    let rest = map.get(MAP_HEADER_LEN..)?.strip_prefix(b"\xa4type")?;
    let (len, at) = match *rest.first()? {
        b @ 0xa0..=0xbf => ((b & 0x1f) as usize, 1),
        0xd9 => (*rest.get(1)? as usize, 2),
        _ => return None,
    };
    rest.get(at..at + len)
}

/// A JSON scanner over text Marquee wrote (or checked): spans, no allocation.
#[derive(Debug)]
pub struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    /// A scanner at the start of `s`.
    pub fn new(s: &'a [u8]) -> Scan<'a> {
        Scan { s, i: 0 }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    /// Consumes `c` (after whitespace) or fails.
    pub fn eat(&mut self, c: u8) -> Result<(), NotJson> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(NotJson)
        }
    }

    /// The raw bytes of a string (between the quotes, escapes kept).
    pub fn string(&mut self) -> Result<&'a [u8], NotJson> {
        self.eat(b'"')?;
        let start = self.i;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Ok(&self.s[start..self.i - 1]);
                }
                _ => self.i += 1,
            }
        }
        Err(NotJson)
    }

    /// Skips one value; returns its span.
    pub fn value_span(&mut self) -> Result<&'a [u8], NotJson> {
        self.ws();
        let start = self.i;
        match self.peek().ok_or(NotJson)? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                while self.i < self.s.len() {
                    match self.s[self.i] {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(&self.s[start..self.i]);
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                return Err(NotJson);
            }
            _ => {
                while self.i < self.s.len()
                    && !matches!(self.s[self.i], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                {
                    self.i += 1;
                }
            }
        }
        Ok(&self.s[start..self.i])
    }
}

/// Transcodes one JSON value into MessagePack (objects as map32, arrays as array32, integers as the smallest
/// fixint or int64, other numbers as float64).
pub fn value(sc: &mut Scan<'_>, out: &mut Vec<u8>) -> Result<(), NotJson> {
    match sc.peek().ok_or(NotJson)? {
        b'{' => container(sc, out, 0xdf, b'}', |sc, out| {
            let key = sc.string()?;
            str_bytes(key, out)?;
            sc.eat(b':')?;
            value(sc, out)
        })?,
        b'[' => container(sc, out, 0xdd, b']', value)?,
        b'"' => {
            let s = sc.string()?;
            str_bytes(s, out)?;
        }
        _ => {
            let tok = sc.value_span()?;
            scalar(tok, out)?;
        }
    }
    Ok(())
}

/// An object (`marker` map32) or array (`marker` array32) up to `close`: a count placeholder, the items, then the
/// count patched in.
fn container(
    sc: &mut Scan<'_>,
    out: &mut Vec<u8>,
    marker: u8,
    close: u8,
    mut item: impl FnMut(&mut Scan<'_>, &mut Vec<u8>) -> Result<(), NotJson>,
) -> Result<(), NotJson> {
    sc.i += 1;
    let at = out.len();
    out.extend_from_slice(&[marker, 0, 0, 0, 0]);
    let mut n = 0u32;
    if sc.peek() == Some(close) {
        sc.i += 1;
    } else {
        loop {
            item(sc, out)?;
            n += 1;
            match sc.peek() {
                Some(b',') => sc.i += 1,
                Some(c) if c == close => {
                    sc.i += 1;
                    break;
                }
                _ => return Err(NotJson),
            }
        }
    }
    out[at + 1..at + 5].copy_from_slice(&n.to_be_bytes());
    Ok(())
}

fn scalar(tok: &[u8], out: &mut Vec<u8>) -> Result<(), NotJson> {
    match tok {
        b"null" => out.push(0xc0),
        b"true" => out.push(0xc3),
        b"false" => out.push(0xc2),
        _ => {
            let text = std::str::from_utf8(tok).map_err(|_| NotJson)?;
            if !text.contains(['.', 'e', 'E']) {
                if let Ok(v) = text.parse::<i64>() {
                    put_int(out, v);
                    return Ok(());
                }
                if let Ok(v) = text.parse::<u64>() {
                    out.push(0xcf);
                    out.extend_from_slice(&v.to_be_bytes());
                    return Ok(());
                }
            }
            let f: f64 = text.parse().map_err(|_| NotJson)?;
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
    Ok(())
}

/// Appends an integer: a positive or negative fixint when it fits, else int64.
pub fn put_int(out: &mut Vec<u8>, v: i64) {
    if (0..128).contains(&v) {
        out.push(v as u8);
    } else if (-32..0).contains(&v) {
        out.push(v as i8 as u8);
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends an unsigned integer as the transcoder writes a JSON integer: [`put_int`] up to `i64::MAX`, uint64 above.
pub fn put_uint(out: &mut Vec<u8>, v: u64) {
    match i64::try_from(v) {
        Ok(v) => put_int(out, v),
        Err(_) => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// A JSON string's raw bytes (escapes kept) as a MessagePack str.
pub fn str_bytes(raw: &[u8], out: &mut Vec<u8>) -> Result<(), NotJson> {
    if !raw.contains(&b'\\') {
        str_header(raw.len(), out);
        out.extend_from_slice(raw);
        return Ok(());
    }
    // Rare (escaped quotes, control characters): unescape with serde_json.
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    let s: String = serde_json::from_slice(&quoted).map_err(|_| NotJson)?;
    str_header(s.len(), out);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Bytes of the str header [`str_header`] writes for `n` bytes.
pub fn str_header_len(n: usize) -> usize {
    match n {
        0..32 => 1,
        32..256 => 2,
        256..65536 => 3,
        _ => 5,
    }
}

/// Appends a str header for `n` bytes.
pub fn str_header(n: usize, out: &mut impl bytes::BufMut) {
    if n < 32 {
        out.put_u8(0xa0 | n as u8);
    } else if n < 256 {
        out.put_slice(&[0xd9, n as u8]);
    } else if n < 65536 {
        out.put_u8(0xda);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdb);
        out.put_u32(n as u32);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::body::TickEncoder;
    use crate::{Price, Tick};
    use proptest::prelude::*;

    fn price() -> impl Strategy<Value = Price> {
        prop_oneof![
            any::<i64>().prop_map(|v| Price(v / 4)),
            (-1_000_000i64..1_000_000).prop_map(Price::from_cents),
            (-1000i64..1000).prop_map(|w| Price::from_parts(w, 0)),
            (-(1i64 << 53)..=1 << 53).prop_map(Price),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        /// A price's float64 is the one its decimal text parses to, on both sides of the 2^53-unit boundary
        /// where the encoder switches from dividing to parsing.
        #[test]
        fn msgpack_price_is_its_decimal_text_parsed(units in prop_oneof![
            (-(1i64 << 53)..=1 << 53),
            ((1i64 << 53) - 1000..(1 << 53) + 1000),
            any::<i64>(),
        ]) {
            let price = Price(units);
            let (mut direct, mut text) = (Vec::new(), Vec::new());
            price.write_msgpack(&mut direct);
            price.write_decimal(&mut text);
            let mut transcoded = Vec::new();
            value(&mut Scan::new(&text), &mut transcoded).unwrap();
            prop_assert_eq!(direct, transcoded);
        }
    }

    proptest! {
        /// The direct tick encoder writes the bytes the transcoder makes of the tick's JSON body.
        #[test]
        fn msgpack_direct_tick_body_is_the_transcoded_json(
            epoch in any::<u64>(), seq in any::<u64>(), ts in any::<i64>(),
            price in price(), size in any::<u64>(),
            bid in proptest::option::of(price()), ask in proptest::option::of(price()),
            bid_size in proptest::option::of(any::<u64>()), ask_size in proptest::option::of(any::<u64>()),
            symbol in "[A-Z]{1,40}",
        ) {
            let enc = TickEncoder::new(&format!("ticks.{symbol}"), epoch);
            let t = Tick { price, size, bid, ask, bid_size, ask_size };
            let (mut json, mut direct, mut transcoded) = (Vec::new(), Vec::new(), Vec::new());
            enc.encode_json(&mut json, seq, ts, &t);
            enc.encode_msgpack(&mut direct, seq, ts, &t);
            encode_body(Kind::Tick, &json, &mut Vec::new(), &mut transcoded).unwrap();
            prop_assert_eq!(direct, transcoded);
        }
    }

    fn level() -> impl Strategy<Value = crate::BookLevel> {
        (price(), any::<u64>(), any::<u32>()).prop_map(|(price, size, orders)| crate::BookLevel { price, size, orders })
    }

    proptest! {
        /// The direct book and trade encoders write the bytes the transcoder makes of their JSON bodies.
        #[test]
        fn msgpack_direct_book_and_trade_bodies_are_the_transcoded_json(
            epoch in any::<u64>(), seq in any::<u64>(), ts in any::<i64>(), symbol in "[A-Z]{1,40}",
            bids in proptest::collection::vec(level(), 0..12), asks in proptest::collection::vec(level(), 0..12),
            price in price(), size in any::<u64>(), side in proptest::option::of(any::<bool>()),
        ) {
            use crate::depth::*;
            let (mut json, mut direct, mut transcoded) = (Vec::new(), Vec::new(), Vec::new());
            let topic = format!("book.{symbol}");
            encode_book_json(&mut json, &topic, epoch, seq, ts, &bids, &asks);
            encode_book_msgpack(&mut direct, &topic, epoch, seq, ts, &bids, &asks);
            encode_body(Kind::Book, &json, &mut Vec::new(), &mut transcoded).unwrap();
            prop_assert_eq!(&direct, &transcoded);
            let trade = crate::Trade { price, size, side: side.map(|b| if b { crate::Side::Buy } else { crate::Side::Sell }) };
            let topic = format!("trades.{symbol}");
            let (mut json, mut direct, mut transcoded) = (Vec::new(), Vec::new(), Vec::new());
            encode_trade_json(&mut json, &topic, epoch, seq, ts, &trade);
            encode_trade_msgpack(&mut direct, &topic, epoch, seq, ts, &trade);
            encode_body(Kind::Trade, &json, &mut Vec::new(), &mut transcoded).unwrap();
            prop_assert_eq!(direct, transcoded);
        }
    }

    #[test]
    fn msgpack_named_event_map_gives_its_type_name() {
        let mut json = Vec::new();
        crate::body::encode_event_json(&mut json, "lots.7", 1, 2, 3, "lot_update", r#"{"a":[1,{"b":null}]}"#);
        let mut map = Vec::new();
        encode_body(Kind::Event, &json, &mut Vec::new(), &mut map).unwrap();
        assert_eq!(type_name(&map), Some(&b"lot_update"[..]));
        assert_eq!(map_len(&map), 6, "type, topic, epoch, seq, ts, a");
        assert_eq!(encode_body(Kind::Event, b"\"x\",", &mut Vec::new(), &mut Vec::new()), Err(NotJson));
    }
}
