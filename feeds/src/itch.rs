//! NASDAQ TotalView-ITCH 5.0: a zero-copy message parser, the length-prefixed file reader, and an encoder.
//!
//! This module does not build books or publish anything ([`crate::itch_replay`] does), and it does not speak
//! MoldUDP64 or SoupBinTCP: it reads the *file* format NASDAQ distributes, where each message is preceded by
//! its length as a big-endian `u16`. Hand-written rather than a crate's: it is the replay hot path (tens of
//! millions of messages), parsing borrows the file buffer and allocates nothing, and the layouts are a fixed
//! table from the specification. It is fuzzed (`fuzz/fuzz_targets/itch.rs`) and property-tested.
//!
//! ## Layouts
//! Every message starts with `type u8, stock_locate u16, tracking u16, timestamp u48` (nanoseconds since
//! midnight), big-endian throughout; prices are `u32` with four implied decimals. [`message_len`] gives each
//! type's fixed length. A message whose length disagrees with its type's, or whose type the specification
//! does not define, is a [`ParseError`]; a reader skips it by its length prefix and goes on.
//!
//! ```
//! use marquee_feeds::itch::{self, Message};
//! let mut file = Vec::new();
//! itch::encode::add_order(&mut file, 7, 34_200_000_000_000, 42, b'B', 100, "AAPL", 1_872_300, None);
//! let mut reader = itch::Reader::new(&file[..]);
//! let (offset, bytes) = reader.next_message().unwrap().unwrap();
//! assert_eq!(offset, 0);
//! let Ok(Message::AddOrder(a)) = itch::parse(bytes) else { panic!() };
//! assert_eq!((a.order_ref, a.shares, a.stock(), a.price), (42, 100, "AAPL", 1_872_300));
//! ```

use std::fmt;
use std::io::{self, Read};

/// Price units (1e-9) per ITCH price unit (1e-4).
pub const PRICE_TO_UNITS: i64 = 100_000;

/// The length of a message of type `ty` (without the length prefix), or `None` for a type ITCH 5.0 does not
/// define.
pub const fn message_len(ty: u8) -> Option<usize> {
    Some(match ty {
        b'S' => 12,
        b'R' => 39,
        b'H' => 25,
        b'Y' => 20,
        b'L' => 26,
        b'V' => 35,
        b'W' => 12,
        b'K' => 28,
        b'J' => 35,
        b'h' => 21,
        b'A' => 36,
        b'F' => 40,
        b'E' => 31,
        b'C' => 36,
        b'X' => 23,
        b'D' => 19,
        b'U' => 35,
        b'P' => 44,
        b'Q' => 40,
        b'B' => 19,
        b'I' => 50,
        b'N' => 20,
        b'O' => 48,
        _ => return None,
    })
}

/// Why a message did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// A zero-length message.
    Empty,
    /// A type byte the specification does not define.
    UnknownType(u8),
    /// The length does not match the type's.
    BadLength { ty: u8, expected: usize, got: usize },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty message"),
            ParseError::UnknownType(t) => write!(f, "unknown message type 0x{t:02x}"),
            ParseError::BadLength { ty, expected, got } => {
                write!(f, "message type {:?} is {expected} bytes, got {got}", *ty as char)
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// The header every message starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Stock locate code (0 for market-wide messages).
    pub locate: u16,
    /// Nanoseconds since midnight.
    pub ts: u64,
}

/// `A` and `F`: an order rests on the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddOrder<'a> {
    pub header: Header,
    pub order_ref: u64,
    /// `B` buy or `S` sell.
    pub side: u8,
    pub shares: u32,
    stock: &'a [u8],
    /// Four implied decimals.
    pub price: u32,
    /// `F` messages: the market participant.
    pub mpid: Option<&'a [u8]>,
}

impl<'a> AddOrder<'a> {
    /// The stock symbol, right-padded spaces removed.
    pub fn stock(&self) -> &'a str {
        stock_str(self.stock)
    }
}

/// One ITCH 5.0 message, borrowing the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// `S`: start/end of messages, system hours, market hours.
    SystemEvent { header: Header, code: u8 },
    /// `R`: the stock (symbol) behind a locate code.
    StockDirectory { header: Header, stock: &'a str },
    /// `A` (no attribution) and `F` (with MPID).
    AddOrder(AddOrder<'a>),
    /// `E`: part or all of a resting order executed at its price.
    Executed { header: Header, order_ref: u64, shares: u32, match_number: u64 },
    /// `C`: an execution at a price other than the order's; `printable` says whether it goes on the tape.
    ExecutedWithPrice { header: Header, order_ref: u64, shares: u32, match_number: u64, printable: bool, price: u32 },
    /// `X`: part of a resting order cancelled.
    Cancel { header: Header, order_ref: u64, shares: u32 },
    /// `D`: a resting order deleted.
    Delete { header: Header, order_ref: u64 },
    /// `U`: an order replaced by a new one (new reference, shares and price; it loses its time priority).
    Replace { header: Header, old_ref: u64, new_ref: u64, shares: u32, price: u32 },
    /// `P`: a trade against a non-displayed order (no book change).
    Trade { header: Header, order_ref: u64, side: u8, shares: u32, stock: &'a str, price: u32, match_number: u64 },
    /// `Q`: the opening, closing or halt cross.
    CrossTrade { header: Header, shares: u64, stock: &'a str, price: u32, match_number: u64, cross_type: u8 },
    /// `B`: an execution was broken.
    BrokenTrade { header: Header, match_number: u64 },
    /// Any other defined type (trading action, Reg SHO, MWCB, NOII, ...): nothing a book or tape needs.
    Other { header: Header, ty: u8 },
}

impl Message<'_> {
    /// The header every message has.
    pub fn header(&self) -> Header {
        match *self {
            Message::SystemEvent { header, .. }
            | Message::StockDirectory { header, .. }
            | Message::Executed { header, .. }
            | Message::ExecutedWithPrice { header, .. }
            | Message::Cancel { header, .. }
            | Message::Delete { header, .. }
            | Message::Replace { header, .. }
            | Message::Trade { header, .. }
            | Message::CrossTrade { header, .. }
            | Message::BrokenTrade { header, .. }
            | Message::Other { header, .. } => header,
            Message::AddOrder(a) => a.header,
        }
    }
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

fn stock_str(b: &[u8]) -> &str {
    let end = b.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    // Non-ASCII stock bytes make an empty symbol, which no topic name accepts: the caller skips the message.
    std::str::from_utf8(&b[..end]).unwrap_or("")
}

/// Parses one message (the bytes after its length prefix).
pub fn parse(m: &[u8]) -> Result<Message<'_>, ParseError> {
    let &ty = m.first().ok_or(ParseError::Empty)?;
    let expected = message_len(ty).ok_or(ParseError::UnknownType(ty))?;
    if m.len() != expected {
        return Err(ParseError::BadLength { ty, expected, got: m.len() });
    }
    // Every length is at least 12, so the header is there; each arm reads inside its type's fixed length.
    let header = Header { locate: be(&m[1..3]) as u16, ts: be(&m[5..11]) };
    let u32_at = |i: usize| be(&m[i..i + 4]) as u32;
    let u64_at = |i: usize| be(&m[i..i + 8]);
    Ok(match ty {
        b'S' => Message::SystemEvent { header, code: m[11] },
        b'R' => Message::StockDirectory { header, stock: stock_str(&m[11..19]) },
        b'A' | b'F' => Message::AddOrder(AddOrder {
            header,
            order_ref: u64_at(11),
            side: m[19],
            shares: u32_at(20),
            stock: &m[24..32],
            price: u32_at(32),
            mpid: (ty == b'F').then(|| &m[36..40]),
        }),
        b'E' => Message::Executed { header, order_ref: u64_at(11), shares: u32_at(19), match_number: u64_at(23) },
        b'C' => Message::ExecutedWithPrice {
            header,
            order_ref: u64_at(11),
            shares: u32_at(19),
            match_number: u64_at(23),
            printable: m[31] == b'Y',
            price: u32_at(32),
        },
        b'X' => Message::Cancel { header, order_ref: u64_at(11), shares: u32_at(19) },
        b'D' => Message::Delete { header, order_ref: u64_at(11) },
        b'U' => {
            Message::Replace { header, old_ref: u64_at(11), new_ref: u64_at(19), shares: u32_at(27), price: u32_at(31) }
        }
        b'P' => Message::Trade {
            header,
            order_ref: u64_at(11),
            side: m[19],
            shares: u32_at(20),
            stock: stock_str(&m[24..32]),
            price: u32_at(32),
            match_number: u64_at(36),
        },
        b'Q' => Message::CrossTrade {
            header,
            shares: u64_at(11),
            stock: stock_str(&m[19..27]),
            price: u32_at(27),
            match_number: u64_at(31),
            cross_type: m[39],
        },
        b'B' => Message::BrokenTrade { header, match_number: u64_at(11) },
        _ => Message::Other { header, ty },
    })
}

/// What [`Reader::next_message`] found instead of a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The file ends inside the record starting at `offset` (a torn last record).
    Truncated { offset: u64 },
    /// The file could not be read.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Truncated { offset } => write!(f, "file ends inside the record at byte {offset}"),
            ReadError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads length-prefixed messages from a file (or any reader) through one reused buffer.
#[derive(Debug)]
pub struct Reader<R> {
    src: R,
    buf: Vec<u8>,
    /// Unread bytes are `buf[at..end]`.
    at: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

/// Buffer size: room for any record (2 + 65,535 bytes) twice over, and small enough that what a refill copies
/// in is still in L2 when it is parsed (a 1 MiB buffer measured 15-20% slower: every line missed to L3).
const BUF: usize = 128 << 10;

impl<R: Read> Reader<R> {
    /// A reader of `src` from its current position (offset 0).
    pub fn new(src: R) -> Reader<R> {
        Reader { src, buf: vec![0; BUF], at: 0, end: 0, base: 0, eof: false }
    }

    /// The next message's file offset (of its length prefix) and bytes; `None` at a clean end of file.
    pub fn next_message(&mut self) -> Option<Result<(u64, &[u8]), ReadError>> {
        loop {
            let avail = self.end - self.at;
            if avail >= 2 {
                let len = usize::from(u16::from_be_bytes([self.buf[self.at], self.buf[self.at + 1]]));
                if avail >= 2 + len {
                    let (offset, start) = (self.base + self.at as u64, self.at + 2);
                    self.at = start + len;
                    return Some(Ok((offset, &self.buf[start..start + len])));
                }
            }
            if self.eof {
                if avail == 0 {
                    return None;
                }
                let offset = self.base + self.at as u64;
                self.at = self.end;
                return Some(Err(ReadError::Truncated { offset }));
            }
            // The buffer holds any record (at most 2 + 65,535 bytes) once its unread tail is moved to the front.
            if let Err(e) = self.refill() {
                return Some(Err(ReadError::Io(e)));
            }
        }
    }

    /// The bytes read from the source and not yet returned: the next messages, the last of them possibly cut
    /// short (it is whole once a later call refills the buffer).
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.at..self.end]
    }

    /// Moves the unread tail to the front and reads until the buffer is full or the source ends.
    fn refill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.at..self.end, 0);
        self.base += self.at as u64;
        self.end -= self.at;
        self.at = 0;
        while self.end < self.buf.len() {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// True when `head` (a file's first bytes) starts like an ITCH 5.0 file: its first two records have defined
/// types and their types' lengths (one record when the file is that short).
pub fn looks_like_itch(head: &[u8]) -> bool {
    let mut at = 0;
    for i in 0..2 {
        let (Some(&a), Some(&b), Some(&ty)) = (head.get(at), head.get(at + 1), head.get(at + 2)) else {
            return i > 0 && at == head.len();
        };
        if message_len(ty) != Some(usize::from(u16::from_be_bytes([a, b]))) {
            return false;
        }
        at += 2 + usize::from(u16::from_be_bytes([a, b]));
    }
    true
}

/// Writes ITCH 5.0 messages, each with its length prefix, for tests, fuzz seeds and the file generator.
pub mod encode {
    fn start(out: &mut Vec<u8>, ty: u8, locate: u16, ts: u64) {
        let len = super::message_len(ty).unwrap_or(0) as u16;
        out.extend_from_slice(&len.to_be_bytes());
        out.push(ty);
        out.extend_from_slice(&locate.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes()[2..]);
    }

    fn stock(out: &mut Vec<u8>, s: &str) {
        let mut b = [b' '; 8];
        let n = s.len().min(8);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        out.extend_from_slice(&b);
    }

    /// `S`.
    pub fn system_event(out: &mut Vec<u8>, ts: u64, code: u8) {
        start(out, b'S', 0, ts);
        out.push(code);
    }

    /// `R` (round lots of 100, market category `Q`, the other fields neutral).
    pub fn stock_directory(out: &mut Vec<u8>, locate: u16, ts: u64, symbol: &str) {
        start(out, b'R', locate, ts);
        stock(out, symbol);
        out.extend_from_slice(b"QN");
        out.extend_from_slice(&100u32.to_be_bytes());
        out.extend_from_slice(b"NCZ PNN1N");
        out.extend_from_slice(&0u32.to_be_bytes());
        out.push(b'N');
    }

    /// `A`, or `F` with `mpid`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_order(
        out: &mut Vec<u8>,
        locate: u16,
        ts: u64,
        order_ref: u64,
        side: u8,
        shares: u32,
        symbol: &str,
        price: u32,
        mpid: Option<&[u8; 4]>,
    ) {
        start(out, if mpid.is_some() { b'F' } else { b'A' }, locate, ts);
        out.extend_from_slice(&order_ref.to_be_bytes());
        out.push(side);
        out.extend_from_slice(&shares.to_be_bytes());
        stock(out, symbol);
        out.extend_from_slice(&price.to_be_bytes());
        if let Some(m) = mpid {
            out.extend_from_slice(m);
        }
    }

    /// `E`.
    pub fn executed(out: &mut Vec<u8>, locate: u16, ts: u64, order_ref: u64, shares: u32, match_number: u64) {
        start(out, b'E', locate, ts);
        out.extend_from_slice(&order_ref.to_be_bytes());
        out.extend_from_slice(&shares.to_be_bytes());
        out.extend_from_slice(&match_number.to_be_bytes());
    }

    /// `C`.
    #[allow(clippy::too_many_arguments)]
    pub fn executed_with_price(
        out: &mut Vec<u8>,
        locate: u16,
        ts: u64,
        order_ref: u64,
        shares: u32,
        match_number: u64,
        printable: bool,
        price: u32,
    ) {
        start(out, b'C', locate, ts);
        out.extend_from_slice(&order_ref.to_be_bytes());
        out.extend_from_slice(&shares.to_be_bytes());
        out.extend_from_slice(&match_number.to_be_bytes());
        out.push(if printable { b'Y' } else { b'N' });
        out.extend_from_slice(&price.to_be_bytes());
    }

    /// `X`.
    pub fn cancel(out: &mut Vec<u8>, locate: u16, ts: u64, order_ref: u64, shares: u32) {
        start(out, b'X', locate, ts);
        out.extend_from_slice(&order_ref.to_be_bytes());
        out.extend_from_slice(&shares.to_be_bytes());
    }

    /// `D`.
    pub fn delete(out: &mut Vec<u8>, locate: u16, ts: u64, order_ref: u64) {
        start(out, b'D', locate, ts);
        out.extend_from_slice(&order_ref.to_be_bytes());
    }

    /// `U`.
    pub fn replace(out: &mut Vec<u8>, locate: u16, ts: u64, old_ref: u64, new_ref: u64, shares: u32, price: u32) {
        start(out, b'U', locate, ts);
        out.extend_from_slice(&old_ref.to_be_bytes());
        out.extend_from_slice(&new_ref.to_be_bytes());
        out.extend_from_slice(&shares.to_be_bytes());
        out.extend_from_slice(&price.to_be_bytes());
    }

    /// `P`.
    #[allow(clippy::too_many_arguments)]
    pub fn trade(
        out: &mut Vec<u8>,
        locate: u16,
        ts: u64,
        order_ref: u64,
        side: u8,
        shares: u32,
        symbol: &str,
        price: u32,
        match_number: u64,
    ) {
        start(out, b'P', locate, ts);
        out.extend_from_slice(&order_ref.to_be_bytes());
        out.push(side);
        out.extend_from_slice(&shares.to_be_bytes());
        stock(out, symbol);
        out.extend_from_slice(&price.to_be_bytes());
        out.extend_from_slice(&match_number.to_be_bytes());
    }

    /// `Q`.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_trade(
        out: &mut Vec<u8>,
        locate: u16,
        ts: u64,
        shares: u64,
        symbol: &str,
        price: u32,
        match_number: u64,
        cross_type: u8,
    ) {
        start(out, b'Q', locate, ts);
        out.extend_from_slice(&shares.to_be_bytes());
        stock(out, symbol);
        out.extend_from_slice(&price.to_be_bytes());
        out.extend_from_slice(&match_number.to_be_bytes());
        out.push(cross_type);
    }

    /// Any defined type, zero-filled after the header (trading actions, NOII, ...): what a parser must skip.
    pub fn other(out: &mut Vec<u8>, ty: u8, locate: u16, ts: u64) {
        start(out, ty, locate, ts);
        let body = super::message_len(ty).unwrap_or(11).saturating_sub(11);
        out.extend(std::iter::repeat_n(0u8, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itch_every_encoded_type_has_its_length_and_parses_back() {
        let mut f = Vec::new();
        encode::system_event(&mut f, 1, b'O');
        encode::stock_directory(&mut f, 3, 2, "AAPL");
        encode::add_order(&mut f, 3, 3, 10, b'S', 200, "AAPL", 1_872_400, Some(b"GSCO"));
        encode::executed(&mut f, 3, 4, 10, 50, 900);
        encode::executed_with_price(&mut f, 3, 5, 10, 50, 901, false, 1_872_300);
        encode::cancel(&mut f, 3, 6, 10, 25);
        encode::replace(&mut f, 3, 7, 10, 11, 300, 1_872_500);
        encode::delete(&mut f, 3, 8, 11);
        encode::trade(&mut f, 3, 9, 0, b'B', 100, "AAPL", 1_872_450, 902);
        encode::cross_trade(&mut f, 3, 10, 5000, "AAPL", 1_872_450, 903, b'O');
        for ty in [b'H', b'Y', b'L', b'V', b'W', b'K', b'J', b'h', b'B', b'I', b'N', b'O'] {
            encode::other(&mut f, ty, 3, 11);
        }
        let mut r = Reader::new(&f[..]);
        let mut got = Vec::new();
        while let Some(m) = r.next_message() {
            let (_, bytes) = m.unwrap();
            got.push(parse(bytes).unwrap_or_else(|e| panic!("{e}")).clone_kind());
        }
        assert_eq!(got.len(), 22);
        assert_eq!(&got[..4], ["S", "R AAPL", "A AAPL 10 S 200 1872400 F", "E 10 50"]);
        assert_eq!(got[6], "U 10 11 300 1872500");
        assert_eq!(got[9], "Q 5000 AAPL");
        assert!(looks_like_itch(&f));
        assert!(!looks_like_itch(b"timestamp,symbol,price,size\n"));
    }

    impl Message<'_> {
        fn clone_kind(&self) -> String {
            match self {
                Message::SystemEvent { .. } => "S".into(),
                Message::StockDirectory { stock, .. } => format!("R {stock}"),
                Message::AddOrder(a) => format!(
                    "A {} {} {} {} {} {}",
                    a.stock(),
                    a.order_ref,
                    a.side as char,
                    a.shares,
                    a.price,
                    if a.mpid.is_some() { "F" } else { "A" }
                ),
                Message::Executed { order_ref, shares, .. } => format!("E {order_ref} {shares}"),
                Message::Replace { old_ref, new_ref, shares, price, .. } => {
                    format!("U {old_ref} {new_ref} {shares} {price}")
                }
                Message::CrossTrade { shares, stock, .. } => format!("Q {shares} {stock}"),
                other => format!("{other:?}"),
            }
        }
    }

    #[test]
    fn itch_bad_lengths_types_and_torn_tails_are_errors_not_panics() {
        assert_eq!(parse(&[]), Err(ParseError::Empty));
        assert_eq!(parse(b"Z123456789012"), Err(ParseError::UnknownType(b'Z')));
        assert_eq!(parse(&[b'A'; 12]), Err(ParseError::BadLength { ty: b'A', expected: 36, got: 12 }));
        let mut f = Vec::new();
        encode::delete(&mut f, 1, 1, 1);
        let whole = f.len();
        encode::delete(&mut f, 1, 1, 2);
        for cut in whole + 1..f.len() {
            let mut r = Reader::new(&f[..cut]);
            assert!(r.next_message().unwrap().is_ok());
            assert!(matches!(r.next_message(), Some(Err(ReadError::Truncated { offset })) if offset == whole as u64));
            assert!(r.next_message().is_none());
        }
    }

    #[test]
    fn itch_reader_crosses_buffer_refills() {
        let mut f = Vec::new();
        let n = BUF / 19 * 3;
        for i in 0..n as u64 {
            encode::delete(&mut f, 1, i, i);
        }
        let mut r = Reader::new(&f[..]);
        let mut i = 0u64;
        while let Some(m) = r.next_message() {
            let (off, bytes) = m.unwrap();
            assert_eq!(off, i * 21);
            assert_eq!(parse(bytes), Ok(Message::Delete { header: Header { locate: 1, ts: i }, order_ref: i }));
            i += 1;
        }
        assert_eq!(i, n as u64);
    }
}
