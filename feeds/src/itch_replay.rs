//! Replaying a NASDAQ TotalView-ITCH 5.0 file: books from its order flow, prints from its executions.
//!
//! This module does not parse bytes ([`crate::itch`] does) or encode messages ([`crate::market`] does): it maps
//! ITCH semantics onto books and prints, and paces the file by its own timestamps ([`crate::md_replay`]).
//!
//! | message | book | print (`trades.*`) |
//! |---|---|---|
//! | `R` stock directory | the locate code names a symbol; its topics are created | |
//! | `A`, `F` add order | the order rests at the back of its level | |
//! | `E` executed | the resting order shrinks or leaves | at the order's price; the aggressor is the other side |
//! | `C` executed with price | as `E` | at the execution price, only when printable |
//! | `X` cancel, `D` delete | the order shrinks or leaves | |
//! | `U` replace | the old order leaves; the new one rests at the back of its level | |
//! | `P` trade (non-displayed) | | at its price; the aggressor is the other side of the matched order |
//! | `Q` cross | | at the cross price, side unknown (when shares > 0) |
//! | others (`S`, `H`, `B`, NOII, ...) | | |
//!
//! A reference to an order the book does not hold (a file cut after the order's add) is counted in
//! [`MdSummary::book_errors`] and ignored; with a `--symbols` filter, references to the orders of other symbols
//! are expected and silently ignored. Messages before `--start` build the books without publishing anything;
//! the first batch at `--start` publishes every book as it stands then.

use crate::book::{BookError, BookSide};
use crate::itch::{self, Message, ReadError};
use crate::market::{MarketError, MarketOut};
use crate::md_replay::{MdOptions, MdSummary, Pacer, RecordError};
use crate::replay::ReplayError;
use marquee_engine::{CreateTopicError, Engine, Price, Side, Trade};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Messages [`ItchBooks::warm`] looks ahead over.
pub const WARM_AHEAD: usize = 64;

/// A locate code not seen yet.
const UNKNOWN: u32 = u32::MAX;
/// A locate code whose symbol the `--symbols` filter leaves out.
const FILTERED: u32 = u32::MAX - 1;

/// What applying one message did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The book or tape changed (or the message carries nothing for them).
    Ok,
    /// It referred to an order the book does not hold, or added one it does.
    BookError,
    /// A message of a symbol the filter leaves out.
    Filtered,
    /// The message cannot be used: the reason, reported with the record's offset.
    Bad(&'static str),
}

/// ITCH semantics over a [`MarketOut`]: the locate table and the mapping of each message onto books and prints.
#[derive(Debug)]
pub struct ItchBooks {
    /// Symbol index by stock locate code.
    locates: Vec<u32>,
    symbols: Vec<String>,
}

impl Default for ItchBooks {
    fn default() -> ItchBooks {
        ItchBooks::new(&[])
    }
}

fn price(p: u32) -> Price {
    Price(i64::from(p) * itch::PRICE_TO_UNITS)
}

fn book_side(side: u8) -> BookSide {
    if side == b'S' { BookSide::Ask } else { BookSide::Bid }
}

/// The aggressor of a trade against a resting order of `side`.
fn aggressor(side: BookSide) -> Side {
    match side {
        BookSide::Bid => Side::Sell,
        BookSide::Ask => Side::Buy,
    }
}

impl ItchBooks {
    /// Books for the symbols in `symbols` (empty: every symbol).
    pub fn new(symbols: &[String]) -> ItchBooks {
        ItchBooks { locates: vec![UNKNOWN; 1 << 16], symbols: symbols.to_vec() }
    }

    fn symbol(&mut self, locate: u16, stock: &str, out: &mut MarketOut) -> Result<Result<u32, Applied>, MarketError> {
        let known = self.locates[usize::from(locate)];
        if known == FILTERED {
            return Ok(Err(Applied::Filtered));
        }
        if known != UNKNOWN {
            return Ok(Ok(known));
        }
        if !self.symbols.is_empty() && !self.symbols.iter().any(|s| s == stock) {
            self.locates[usize::from(locate)] = FILTERED;
            return Ok(Err(Applied::Filtered));
        }
        match out.symbol(stock) {
            Ok(i) => {
                self.locates[usize::from(locate)] = i;
                Ok(Ok(i))
            }
            Err(MarketError::Topic { error: CreateTopicError::InvalidName, .. }) => {
                Ok(Err(Applied::Bad("stock symbol is not a valid topic name")))
            }
            Err(e) => Err(e),
        }
    }

    fn book_result<T>(&self, r: Result<T, BookError>) -> Result<T, Applied> {
        r.map_err(|_| if self.symbols.is_empty() { Applied::BookError } else { Applied::Filtered })
    }

    /// Loads the orders that the next [`WARM_AHEAD`] whole messages of `upcoming` (a reader's unread bytes,
    /// length prefixes included) will execute, cancel, delete or replace. Applying a message that names an order
    /// resting since long ago costs two dependent cache misses (the id's page entry, then the order); issued here
    /// back to back for a batch, the misses of different messages overlap instead of following one another.
    pub fn warm(upcoming: &[u8], books: &crate::book::Books) -> u64 {
        let mut at = 0;
        let mut sum = 0u64;
        for _ in 0..WARM_AHEAD {
            let Some(len) = upcoming.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
                break;
            };
            let Some(m) = upcoming.get(at + 2..at + 2 + len) else { break };
            if len >= 19 && matches!(m[0], b'E' | b'C' | b'X' | b'D' | b'U') {
                let id = u64::from_be_bytes(m[11..19].try_into().unwrap_or_default());
                sum = sum.wrapping_add(books.peek_size(id));
            }
            at += 2 + len;
        }
        sum
    }

    /// Applies one message; `ts` stamps any print it publishes.
    pub fn apply(&mut self, msg: &Message<'_>, out: &mut MarketOut, ts: i64) -> Result<Applied, MarketError> {
        let r = match *msg {
            Message::StockDirectory { header, stock } => self.symbol(header.locate, stock, out)?.map(drop),
            Message::AddOrder(a) => match self.symbol(a.header.locate, a.stock(), out)? {
                Ok(i) => match out.books().add(i, a.order_ref, book_side(a.side), price(a.price), a.shares.into()) {
                    Ok(()) => {
                        out.touch(i);
                        Ok(())
                    }
                    Err(_) => Err(Applied::BookError),
                },
                Err(e) => Err(e),
            },
            Message::Executed { order_ref, shares, .. } => {
                match self.book_result(out.books().execute(order_ref, shares.into())) {
                    Ok(fill) => {
                        out.touch(fill.book);
                        let t = Trade { price: fill.price, size: fill.size, side: Some(aggressor(fill.side)) };
                        out.trade(fill.book, &t, ts)?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Message::ExecutedWithPrice { order_ref, shares, printable, price: p, .. } => {
                match self.book_result(out.books().execute(order_ref, shares.into())) {
                    Ok(fill) => {
                        out.touch(fill.book);
                        if printable {
                            let t = Trade { price: price(p), size: fill.size, side: Some(aggressor(fill.side)) };
                            out.trade(fill.book, &t, ts)?;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Message::Cancel { order_ref, shares, .. } => {
                self.book_result(out.books().cancel(order_ref, shares.into())).map(|b| out.touch(b))
            }
            Message::Delete { order_ref, .. } => self.book_result(out.books().delete(order_ref)).map(|b| out.touch(b)),
            Message::Replace { old_ref, new_ref, shares, price: p, .. } => {
                self.book_result(out.books().replace(old_ref, new_ref, price(p), shares.into())).map(|b| out.touch(b))
            }
            Message::Trade { header, side, shares, stock, price: p, .. } => {
                match self.symbol(header.locate, stock, out)? {
                    Ok(i) => {
                        let t = Trade { price: price(p), size: shares.into(), side: Some(aggressor(book_side(side))) };
                        out.trade(i, &t, ts)?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Message::CrossTrade { header, shares, stock, price: p, .. } if shares > 0 => {
                match self.symbol(header.locate, stock, out)? {
                    Ok(i) => {
                        out.trade(i, &Trade { price: price(p), size: shares, side: None }, ts)?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        };
        Ok(r.err().unwrap_or(Applied::Ok))
    }
}

/// An ITCH replay ready to run on any thread.
#[derive(Debug)]
pub struct ItchReplay {
    opts: MdOptions,
    out: MarketOut,
}

impl ItchReplay {
    /// Checks that the file opens; topics are created as the file's stock directory names symbols.
    pub fn prepare(engine: &Arc<Engine>, opts: MdOptions) -> Result<ItchReplay, ReplayError> {
        std::fs::File::open(&opts.path).map_err(|error| ReplayError::Io { file: opts.path.clone(), error })?;
        let out = MarketOut::new(engine.clone(), opts.depth);
        Ok(ItchReplay { opts, out })
    }

    /// Replays the file until it ends (never, when looped) or `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) -> Result<MdSummary, ReplayError> {
        let mut summary = MdSummary::default();
        let mut pacer = Pacer::new(self.opts.speed, self.opts.progress.clone());
        let mut books = ItchBooks::new(&self.opts.symbols);
        let (start, end) = (self.opts.start.map(|b| b.tod_ns() as u64), self.opts.end.map(|b| b.tod_ns() as u64));
        let file = self.opts.path.clone();
        let io = |error| ReplayError::Io { file: file.clone(), error };
        loop {
            let mut reader = itch::Reader::new(std::fs::File::open(&file).map_err(io)?);
            self.out.set_muted(start.is_some());
            let mut muted = start.is_some();
            let mut stopped = false;
            let mut since_warm = WARM_AHEAD;
            loop {
                if since_warm == WARM_AHEAD {
                    std::hint::black_box(ItchBooks::warm(reader.unread(), self.out.books_ref()));
                    since_warm = 0;
                }
                since_warm += 1;
                let Some(next) = reader.next_message() else { break };
                let (offset, bytes) = match next {
                    Ok(m) => m,
                    Err(ReadError::Truncated { offset }) => {
                        summary.truncated_at = Some(offset);
                        break;
                    }
                    Err(ReadError::Io(error)) => return Err(io(error)),
                };
                let msg = match itch::parse(bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        summary.skip(RecordError { file: file.clone(), offset, reason: e.to_string() });
                        continue;
                    }
                };
                let src = msg.header().ts;
                if end.is_some_and(|e| src >= e) {
                    break;
                }
                let ts = if muted && start.is_some_and(|s| src < s) {
                    if summary.messages % 4096 == 0 && stop.load(Ordering::Relaxed) {
                        stopped = true;
                        break;
                    }
                    0
                } else {
                    if muted {
                        muted = false;
                        self.out.set_muted(false);
                    }
                    match pacer.pace(src as i64, &mut self.out, stop).map_err(ReplayError::Market)? {
                        Some(ts) => ts,
                        None => {
                            stopped = true;
                            break;
                        }
                    }
                };
                match books.apply(&msg, &mut self.out, ts).map_err(ReplayError::Market)? {
                    Applied::Ok | Applied::Filtered => summary.messages += 1,
                    Applied::BookError => {
                        summary.messages += 1;
                        summary.book_errors += 1;
                    }
                    Applied::Bad(reason) => {
                        summary.skip(RecordError { file: file.clone(), offset, reason: reason.to_owned() })
                    }
                }
            }
            self.out.set_muted(false);
            pacer.flush(&mut self.out).map_err(ReplayError::Market)?;
            summary.published = self.out.counts();
            if stopped {
                return Ok(summary);
            }
            summary.loops += 1;
            if !self.opts.looped || stop.load(Ordering::Relaxed) {
                return Ok(summary);
            }
            pacer.end_pass();
            self.out.reset_books();
        }
    }
}
