//! Replaying a Databento DBN file (`.dbn`, or zstd-compressed `.dbn.zst`): books, prints and bars from its
//! records.
//!
//! This module does not decode DBN (Databento's [`dbn`] crate does, through its sans-IO [`DbnFsm`]), does not
//! encode messages ([`crate::market`] does), and does not read DBN version 4, legacy DBZ, or files that mix
//! schemas: it maps the records of one schema onto books, prints and bars, and paces them by the file's own
//! timestamps ([`crate::md_replay`]).
//!
//! | schema | book (`book.*`, and L1 in `ticks.*`) | print (`trades.*`) | other |
//! |---|---|---|---|
//! | `mbo` | built order by order (below) | `T` records | |
//! | `mbp-1`, `mbp-10` | the record's levels, as they stand after it | `T` records | |
//! | `trades` | | every record | |
//! | `ohlcv-1s`, `ohlcv-1m` | | | a `bar` event on `bars.<SYMBOL>`; `ticks.*` shows the close |
//!
//! A print's `side` is the aggressor, as DBN's `side` field is for trades: `B` buy, `A` sell, `N` unknown.
//! Prices are DBN's own fixed-point integers (1e-9), the scale of [`Price`]: nothing is converted.
//! MBP levels whose price is `UNDEF_PRICE` or whose size is 0 are empty and left out.
//!
//! ## MBO actions
//! As Databento's own book builders apply them (their docs, "State management of resting orders" and "Limit
//! order book construction", and the Rust, Python and C++ examples there):
//! - `A` add: the order rests at the back of its level. An add with `F_TOB` (venues that publish only their
//!   top of book) replaces that venue's previous top on that side; one with `UNDEF_PRICE` empties it.
//! - `C` cancel: `size` is the size *cancelled* (part or all); the order leaves when nothing is left.
//! - `M` modify: `price` and `size` are the new ones; the order keeps its place only at the same price
//!   without growing. A modify of an order the book does not hold adds it (Databento's examples do the same).
//! - `R` clear: every order of the instrument leaves (an MBO snapshot starts with one).
//! - `T` trade: a print, and no book change. `F` fill and `N` none: nothing. "Trade and Fill actions do not
//!   affect the book because all fills will be accompanied by cancel actions that do update the book."
//!
//! A cancel or modify of an order the book does not hold (a file that starts after its add), or an add of an
//! id already resting, is counted in [`MdSummary::book_errors`] and ignored.
//!
//! ## Symbols
//! Instrument ids map to symbols through the metadata's symbology (`TsSymbolMap`, by each record's index
//! timestamp) and any `SymbolMapping` records in the stream (live captures carry them). An instrument the
//! symbology does not name is published under its id (`ticks.12345`). Characters a topic name cannot hold
//! become `_` (`AAPL  240119C00190000` is `AAPL__240119C00190000`); `--symbols` matches either form.
//! [`DbnReplay::prepare`] creates the topics of every symbol the metadata names and the filter keeps, so they
//! are listed before the first message; others are created when the file first names them.
//!
//! ## Time
//! Records are paced by their index timestamp, which is `ts_recv` for `mbo`, `mbp-*` and `trades` and the bar's
//! open (`ts_event`) for `ohlcv-*`: Databento sorts files by it and names it the timestamp to sort and look
//! symbols up by; `ts_event` is the venue's clock, which may step back across channels and is the original
//! order time in MBO snapshots. `--start` and `--end` compare the same timestamp (a time of day is on the
//! UTC day of the first record). Records before `--start` build the books without publishing anything (prints
//! and bars are dropped); the first batch at `--start` publishes every book as it stands then. The first record
//! at or after `--end` ends the pass.
//!
//! Books are published only between events: a venue event normalized into several records ends with the
//! record flagged `F_LAST` ("the book state should only be examined after a record with F_LAST set"), so
//! the records after one without it, up to the next `F_LAST` and at the same timestamp, are applied with no
//! flush in between, and a subscriber never sees a half-applied event.
//!
//! ## Bad input
//! - A file that is not DBN (no `DBN` header, inside or outside zstd), or whose header is damaged, or DBN
//!   version 4: [`DbnError::NotDbn`] from [`DbnReplay::prepare`]. Any schema outside the table:
//!   [`DbnError::Schema`], naming the schemas replayed.
//! - A file that ends inside a record (a cut download; for `.dbn.zst`, a cut compressed stream): the replay
//!   ends cleanly after the last whole record and [`MdSummary::truncated_at`] says where the cut one starts.
//! - A record whose type or length does not fit the schema: skipped and reported with its byte offset
//!   ([`MdSummary::first_errors`]); decoding goes on at the length its header states.
//! - A record header whose length is shorter than a header: DBN has no sync marker, so nothing after it can be
//!   trusted. It is reported with its offset and the pass ends cleanly there (as does a zstd stream that
//!   fails to decompress).
//!
//! Byte offsets count the DBN stream: in a `.dbn.zst` file, the decompressed bytes. Records are read as the
//! file stores them (`VersionUpgradePolicy::AsIs`: the layouts of the records replayed are the same in DBN
//! versions 1 to 3), so offsets are exact, no record is rewritten on the way, and none of `dbn`'s upgrade
//! paths (which assert on malformed records) runs.
//!
//! ## Limits
//! Books are per symbol, not per venue: a file that mixes publishers (`publisher_id`) merges their orders into
//! one book, their order ids must not collide, and a clear from one venue empties the symbol's whole book. With
//! parent symbology (`ES.FUT`) every child instrument maps to the parent symbol; use raw or continuous symbols.
//!
//! ```
//! use dbn::encode::{DbnEncoder, EncodeRecord};
//! use dbn::{FlagSet, MetadataBuilder, RecordHeader, SType, Schema, TradeMsg, rtype};
//! use marquee_engine::{Engine, EngineConfig};
//! use marquee_feeds::Speed;
//! use marquee_feeds::dbn_replay::DbnReplay;
//! use marquee_feeds::md_replay::MdOptions;
//! use std::sync::atomic::AtomicBool;
//!
//! let path = std::env::temp_dir().join(format!("marquee-dbn-doc-{}.dbn", std::process::id()));
//! // No symbology in the metadata: instrument 7 is published as symbol "7".
//! let meta = MetadataBuilder::new()
//!     .dataset("XNAS.ITCH")
//!     .schema(Some(Schema::Trades))
//!     .start(1_710_509_400_000_000_000)
//!     .stype_in(Some(SType::InstrumentId))
//!     .stype_out(SType::InstrumentId)
//!     .build();
//! let trade = TradeMsg {
//!     hd: RecordHeader::new::<TradeMsg>(rtype::MBP_0, 1, 7, 1_710_509_400_000_000_000),
//!     price: 187_230_000_000, // 187.23
//!     size: 100,
//!     action: b'T' as _,
//!     side: b'B' as _,
//!     flags: FlagSet::empty().set_last(),
//!     depth: 0,
//!     ts_recv: 1_710_509_400_000_000_000,
//!     ts_in_delta: 0,
//!     sequence: 1,
//! };
//! let mut enc = DbnEncoder::new(std::fs::File::create(&path).unwrap(), &meta).unwrap();
//! enc.encode_record(&trade).unwrap();
//! drop(enc);
//!
//! let engine = Engine::new(EngineConfig::default());
//! let mut opts = MdOptions::new(&path);
//! opts.speed = Speed::Max;
//! let summary = DbnReplay::prepare(&engine, opts).unwrap().run(&AtomicBool::new(false)).unwrap();
//! assert_eq!((summary.messages, summary.published.trades), (1, 1));
//! let (_, json) = engine.topic("trades.7").unwrap().latest_json().unwrap();
//! assert!(json.ends_with(br#""price":187.23,"size":100,"side":"buy"}"#));
//! # std::fs::remove_file(&path).unwrap();
//! ```

use crate::book::{BookError, BookSide};
use crate::dbn_source::{Source, Step};
use crate::market::{MarketError, MarketOut};
use crate::md_replay::{MdOptions, MdSummary, Pacer, RecordError};
use crate::replay::Speed;
use dbn::{
    BidAskPair, MboMsg, Mbp1Msg, Mbp10Msg, OhlcvMsg, Record, RecordRef, Schema, TradeMsg, TsSymbolMap, UNDEF_PRICE,
    rtype,
};
use marquee_engine::{BookLevel, Engine, Price, Side, TopicWriter, Trade, bars_topic};
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The schemas replayed, as named in errors.
pub const SUPPORTED_SCHEMAS: &str = "mbo, mbp-1, mbp-10, trades, ohlcv-1s and ohlcv-1m";

/// The stop flag is read at least every this many records, also while none is paced (before `--start`, or
/// when `--symbols` leaves them all out).
const STOP_POLL_RECORDS: u64 = 4096;

/// Why a DBN replay could not be prepared or did not finish.
#[derive(Debug)]
#[non_exhaustive]
pub enum DbnError {
    /// A [`Speed::Factor`] that is not finite and above zero.
    InvalidSpeed(f64),
    /// The file could not be opened.
    Io { file: PathBuf, error: io::Error },
    /// The file is not DBN this replay reads: no DBN header (plain or in zstd), a damaged header, an empty
    /// file, or DBN version 4.
    NotDbn { file: PathBuf, reason: String },
    /// The file's schema is not one of [`SUPPORTED_SCHEMAS`] (`None`: the file mixes schemas).
    Schema { file: PathBuf, schema: Option<Schema> },
    /// The metadata's symbology cannot map instrument ids to symbols.
    Symbology { file: PathBuf, reason: String },
    /// A topic could not be created (another source owns it), or the engine refused a message.
    Market { file: PathBuf, error: MarketError },
}

impl fmt::Display for DbnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbnError::InvalidSpeed(x) => write!(f, "invalid speed {x}"),
            DbnError::Io { file, error } => write!(f, "{}: {error}", file.display()),
            DbnError::NotDbn { file, reason } => write!(f, "{}: not a readable DBN file: {reason}", file.display()),
            DbnError::Schema { file, schema: Some(s) } => {
                write!(f, "{}: DBN schema {s} is not replayed; replay takes {SUPPORTED_SCHEMAS}", file.display())
            }
            DbnError::Schema { file, schema: None } => {
                write!(f, "{}: the DBN file mixes schemas; replay takes one of {SUPPORTED_SCHEMAS}", file.display())
            }
            DbnError::Symbology { file, reason } => write!(f, "{}: symbology: {reason}", file.display()),
            DbnError::Market { file, error } => write!(f, "{}: {error}", file.display()),
        }
    }
}

impl std::error::Error for DbnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbnError::Io { error, .. } => Some(error),
            DbnError::Market { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A record, normalized: what each schema contributes.
enum Rec<'a> {
    Mbo(&'a MboMsg),
    Mbp(Mbp<'a>),
    Trade(&'a TradeMsg),
    Bar(&'a OhlcvMsg),
}

/// An `mbp-1` or `mbp-10` record: the event, then the book after it.
#[derive(Clone, Copy)]
struct Mbp<'a> {
    action: u8,
    side: u8,
    price: i64,
    size: u32,
    levels: &'a [BidAskPair],
}

/// An MBP record of either depth as [`Rec::Mbp`].
fn mbp(action: std::ffi::c_char, side: std::ffi::c_char, price: i64, size: u32, levels: &[BidAskPair]) -> Rec<'_> {
    Rec::Mbp(Mbp { action: action as u8, side: side as u8, price, size, levels })
}

/// What applying one record did.
enum Applied {
    Ok,
    BookError,
    Bad(String),
}

/// Where an instrument's records go for index timestamps in `from..until`.
#[derive(Clone, Copy, Debug)]
struct Route {
    from: u64,
    until: u64,
    /// `None`: the `--symbols` filter leaves it out.
    idx: Option<u32>,
}

/// A book operation's outcome: refused operations leave the books as they were.
fn done<T>(r: Result<T, BookError>) -> Applied {
    if r.is_ok() { Applied::Ok } else { Applied::BookError }
}

/// The aggressor named by a DBN `side`.
fn aggressor(side: u8) -> Option<Side> {
    match side {
        b'B' => Some(Side::Buy),
        b'A' => Some(Side::Sell),
        _ => None,
    }
}

fn book_side(side: u8) -> Option<BookSide> {
    match side {
        b'B' => Some(BookSide::Bid),
        b'A' => Some(BookSide::Ask),
        _ => None,
    }
}

/// `symbol` as a topic name's last part: trimmed, characters outside `[A-Za-z0-9._-]` replaced by `_`.
fn topic_symbol(symbol: &str) -> Cow<'_, str> {
    let s = symbol.trim();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !s.is_empty() && s.chars().all(ok) {
        return Cow::Borrowed(s);
    }
    let t: String = s.chars().map(|c| if ok(c) { c } else { '_' }).collect();
    Cow::Owned(if t.is_empty() { "_".to_owned() } else { t })
}

/// The symbol `map` gives `iid` at `ts`, and the span of timestamps the answer holds for.
fn lookup(map: &TsSymbolMap, iid: u32, ts: u64) -> (u64, u64, Option<&str>) {
    let Some(intervals) = map.inner().get(&iid) else { return (0, u64::MAX, None) };
    let iv = intervals.intervals();
    let i = iv.partition_point(|x| x.start_ts <= ts);
    if i > 0 && ts < iv[i - 1].end_ts {
        let x = &iv[i - 1];
        return (x.start_ts, x.end_ts, Some(&x.symbol));
    }
    let from = if i > 0 { iv[i - 1].end_ts } else { 0 };
    (from, iv.get(i).map_or(u64::MAX, |x| x.start_ts), None)
}

/// The publishing side: the market topics, the `bars.*` writers, and scratch space reused across records.
#[derive(Debug)]
struct Out {
    market: MarketOut,
    /// `bars.<SYMBOL>` writers by symbol index (ohlcv schemas only).
    bars: Vec<Option<TopicWriter>>,
    /// Seconds per bar; 0 for schemas without bars.
    interval_s: u32,
    bids: Vec<BookLevel>,
    asks: Vec<BookLevel>,
    fields: Vec<u8>,
    /// The synthetic order holding each `(symbol, publisher, side)` top of book (`F_TOB` adds).
    tob: FxHashMap<(u32, u16, BookSide), u64>,
    /// Next synthetic order id, counting down from `u64::MAX` (venue ids are far below).
    next_tob_id: u64,
}

impl Out {
    fn symbol(&mut self, name: &str) -> Result<u32, MarketError> {
        let i = self.market.symbol(name)?;
        if self.interval_s > 0 {
            if self.bars.len() <= i as usize {
                self.bars.resize_with(i as usize + 1, || None);
            }
            if self.bars[i as usize].is_none() {
                let topic = bars_topic(name);
                let w =
                    self.market.engine().create_topic(&topic).map_err(|error| MarketError::Topic { topic, error })?;
                self.bars[i as usize] = Some(w);
            }
        }
        Ok(i)
    }

    fn mbo(&mut self, i: u32, m: &MboMsg, ts: i64) -> Result<Applied, MarketError> {
        let side = book_side(m.side as u8);
        let books = self.market.books();
        let applied = match m.action as u8 {
            b'A' if m.flags.is_tob() => {
                let Some(side) = side else { return Ok(Applied::Bad("top-of-book add without a side".into())) };
                if let Some(old) = self.tob.remove(&(i, m.hd.publisher_id, side)) {
                    // Gone already when a clear came in between.
                    let _ = books.delete(old);
                }
                if m.price != UNDEF_PRICE && m.size > 0 {
                    let id = self.next_tob_id;
                    self.next_tob_id -= 1;
                    if books.add(i, id, side, Price(m.price), m.size.into()).is_ok() {
                        self.tob.insert((i, m.hd.publisher_id, side), id);
                    }
                }
                Applied::Ok
            }
            // Databento's examples skip such adds: no order to rest.
            b'A' if m.price == UNDEF_PRICE => return Ok(Applied::Ok),
            b'A' => match side {
                Some(side) => done(books.add(i, m.order_id, side, Price(m.price), m.size.into())),
                None => return Ok(Applied::Bad("add without a side".into())),
            },
            b'C' => match books.order(m.order_id) {
                Some((b, ..)) if b == i => done(books.cancel(m.order_id, m.size.into())),
                _ => return Ok(Applied::BookError),
            },
            b'M' if m.price == UNDEF_PRICE => return Ok(Applied::Bad("modify without a price".into())),
            b'M' => match (books.order(m.order_id), side) {
                (Some((b, ..)), _) if b == i => done(books.modify(m.order_id, Price(m.price), m.size.into())),
                (Some(_), _) => return Ok(Applied::BookError),
                (None, Some(side)) => done(books.add(i, m.order_id, side, Price(m.price), m.size.into())),
                (None, None) => return Ok(Applied::Bad("modify of an unknown order without a side".into())),
            },
            b'R' => {
                books.clear(i);
                self.tob.retain(|k, _| k.0 != i);
                Applied::Ok
            }
            b'T' if m.price == UNDEF_PRICE => return Ok(Applied::Bad("trade without a price".into())),
            b'T' => {
                let t = Trade { price: Price(m.price), size: m.size.into(), side: aggressor(m.side as u8) };
                self.market.trade(i, &t, ts)?;
                return Ok(Applied::Ok);
            }
            b'F' | b'N' => return Ok(Applied::Ok),
            a => return Ok(Applied::Bad(format!("unknown MBO action {:?}", char::from(a)))),
        };
        if matches!(applied, Applied::Ok) {
            self.market.touch(i);
        }
        Ok(applied)
    }

    fn mbp(&mut self, i: u32, m: &Mbp<'_>, ts: i64) -> Result<Applied, MarketError> {
        let Mbp { action, side, price, size, levels } = *m;
        let level = |price: i64, size: u32, orders: u32| {
            (price != UNDEF_PRICE && size > 0).then_some(BookLevel { price: Price(price), size: size.into(), orders })
        };
        self.bids.clear();
        self.bids.extend(levels.iter().filter_map(|l| level(l.bid_px, l.bid_sz, l.bid_ct)));
        self.asks.clear();
        self.asks.extend(levels.iter().filter_map(|l| level(l.ask_px, l.ask_sz, l.ask_ct)));
        self.market.set_levels(i, &self.bids, &self.asks);
        if action == b'T' {
            if price == UNDEF_PRICE {
                return Ok(Applied::Bad("trade without a price".into()));
            }
            self.market.trade(i, &Trade { price: Price(price), size: size.into(), side: aggressor(side) }, ts)?;
        }
        Ok(Applied::Ok)
    }

    fn trade(&mut self, i: u32, t: &TradeMsg, ts: i64) -> Result<Applied, MarketError> {
        if t.price == UNDEF_PRICE {
            return Ok(Applied::Bad("trade without a price".into()));
        }
        self.market.trade(
            i,
            &Trade { price: Price(t.price), size: t.size.into(), side: aggressor(t.side as u8) },
            ts,
        )?;
        Ok(Applied::Ok)
    }

    /// Publishes a bar (unless `muted`, before `--start`) and shows its close in `ticks.*`.
    fn bar(&mut self, i: u32, b: &OhlcvMsg, ts: i64, muted: bool) -> Result<Applied, MarketError> {
        if [b.open, b.high, b.low, b.close].contains(&UNDEF_PRICE) {
            return Ok(Applied::Bad("bar without a price".into()));
        }
        if !muted {
            let f = &mut self.fields;
            f.clear();
            for (name, p) in
                [("{\"open\":", b.open), (",\"high\":", b.high), (",\"low\":", b.low), (",\"close\":", b.close)]
            {
                f.extend_from_slice(name.as_bytes());
                Price(p).write_decimal(f);
            }
            // Writing into a Vec cannot fail.
            let _ = write!(f, ",\"volume\":{},\"interval_s\":{}}}", b.volume, self.interval_s);
            // Only ASCII digits, signs, points and the literals above were written.
            let fields = std::str::from_utf8(f).unwrap_or("{}");
            if let Some(Some(w)) = self.bars.get_mut(i as usize) {
                w.publish_event("bar", fields, ts)
                    .map_err(|error| MarketError::Publish { topic: w.topic().name().to_owned(), error })?;
            }
        }
        self.market.set_last(i, Price(b.close), b.volume);
        Ok(Applied::Ok)
    }
}

/// A DBN replay whose topics exist, ready to run on any thread.
pub struct DbnReplay {
    opts: MdOptions,
    schema: Schema,
    /// The metadata's symbology: every pass starts from it.
    file_symbols: TsSymbolMap,
    /// The metadata's symbols the filter keeps (as topic names), in the metadata's order.
    symbols: Vec<String>,
    /// The file as `prepare` opened it, at its first record; later passes reopen the file. Boxed, as is `out`,
    /// so that a prepared replay is small to move between threads.
    source: Option<Box<Source>>,
    out: Box<Out>,
}

impl fmt::Debug for DbnReplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbnReplay")
            .field("path", &self.opts.path)
            .field("schema", &self.schema)
            .field("symbols", &self.symbols.len())
            .finish_non_exhaustive()
    }
}

/// One pass's symbology: the map (the metadata's plus the stream's mappings so far) and the routes resolved.
struct Router {
    map: TsSymbolMap,
    routes: FxHashMap<u32, Route>,
}

impl DbnReplay {
    /// Opens the file, reads its metadata, checks its schema and creates the topics of every symbol the
    /// metadata names and `opts.symbols` keeps.
    pub fn prepare(engine: &Arc<Engine>, opts: MdOptions) -> Result<DbnReplay, DbnError> {
        if let Speed::Factor(x) = opts.speed {
            if !(x.is_finite() && x > 0.0) {
                return Err(DbnError::InvalidSpeed(x));
            }
        }
        let file = opts.path.clone();
        let (source, meta) = Source::open(&file)?;
        let interval_s = match meta.schema {
            Some(Schema::Mbo | Schema::Mbp1 | Schema::Mbp10 | Schema::Trades) => 0,
            Some(Schema::Ohlcv1S) => 1,
            Some(Schema::Ohlcv1M) => 60,
            schema => return Err(DbnError::Schema { file, schema }),
        };
        let schema = meta.schema.unwrap_or(Schema::Mbo);
        let file_symbols = if meta.mappings.is_empty() {
            TsSymbolMap::new()
        } else {
            meta.symbol_map().map_err(|e| DbnError::Symbology { file: file.clone(), reason: e.to_string() })?
        };
        // `symbol_map` succeeded, so one of the stypes is instrument_id.
        let inverse = meta.is_inverse().unwrap_or(false);
        let named: Vec<&str> = if inverse {
            meta.mappings.iter().flat_map(|m| m.intervals.iter().map(|i| i.symbol.as_str())).collect()
        } else {
            let mapped = |m: &&dbn::SymbolMapping| m.intervals.iter().any(|i| !i.symbol.is_empty());
            meta.mappings.iter().filter(mapped).map(|m| m.raw_symbol.as_str()).collect()
        };
        let mut out = Box::new(Out {
            market: MarketOut::new(engine.clone(), opts.depth),
            bars: Vec::new(),
            interval_s,
            bids: Vec::new(),
            asks: Vec::new(),
            fields: Vec::new(),
            tob: FxHashMap::default(),
            next_tob_id: u64::MAX,
        });
        let mut symbols: Vec<String> = Vec::new();
        for name in named.into_iter().filter(|s| !s.is_empty()) {
            let topic = topic_symbol(name);
            if (opts.wants(name) || opts.wants(&topic)) && !symbols.iter().any(|s| *s == topic) {
                out.symbol(&topic).map_err(|error| DbnError::Market { file: file.clone(), error })?;
                symbols.push(topic.into_owned());
            }
        }
        Ok(DbnReplay { opts, schema, file_symbols, symbols, source: Some(Box::new(source)), out })
    }

    /// The file's schema.
    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// The symbols whose topics `prepare` created, in the metadata's order.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Replays the file until it ends (never, when looped) or `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) -> Result<MdSummary, DbnError> {
        let file = self.opts.path.clone();
        let market = |error| DbnError::Market { file: file.clone(), error };
        let mut summary = MdSummary::default();
        let mut pacer = Pacer::new(self.opts.speed, self.opts.progress.clone());
        loop {
            let mut source = match self.source.take() {
                Some(s) => s,
                None => Box::new(Source::open(&file)?.0),
            };
            let mut router = Router { map: self.file_symbols.clone(), routes: FxHashMap::default() };
            let (stopped, replayed) =
                self.pass(&mut source, &mut router, &mut pacer, &mut summary, stop).map_err(market)?;
            self.out.market.set_muted(false);
            pacer.flush(&mut self.out.market).map_err(market)?;
            summary.published = self.out.market.counts();
            if stopped {
                return Ok(summary);
            }
            summary.loops += 1;
            // A pass that replayed nothing would loop without pause.
            if !self.opts.looped || stop.load(Ordering::Relaxed) || replayed == 0 {
                return Ok(summary);
            }
            pacer.end_pass();
            self.out.market.reset_books();
            self.out.tob.clear();
        }
    }

    /// Where `iid`'s records at `ts` go: `Ok(None)` when filtered out.
    fn route(&mut self, router: &mut Router, iid: u32, ts: u64) -> Result<Option<u32>, MarketError> {
        if let Some(r) = router.routes.get(&iid) {
            if r.from <= ts && ts < r.until {
                return Ok(r.idx);
            }
        }
        let (from, until, name) = lookup(&router.map, iid, ts);
        let name: Cow<'_, str> = name.map_or_else(|| Cow::Owned(iid.to_string()), Cow::Borrowed);
        let topic = topic_symbol(&name);
        let idx = if self.opts.wants(&name) || self.opts.wants(&topic) { Some(self.out.symbol(&topic)?) } else { None };
        router.routes.insert(iid, Route { from, until, idx });
        Ok(idx)
    }

    /// One pass over `source`: whether `stop` ended it, and how many records it replayed at or after `--start`.
    fn pass(
        &mut self,
        source: &mut Source,
        router: &mut Router,
        pacer: &mut Pacer,
        summary: &mut MdSummary,
        stop: &AtomicBool,
    ) -> Result<(bool, u64), MarketError> {
        let file = self.opts.path.clone();
        let bad = |offset, reason| RecordError { file: file.clone(), offset, reason };
        // Resolved at the first record: a time of day is on its UTC day.
        let mut bounds: Option<(Option<i64>, Option<i64>)> = None;
        let mut muted = self.opts.start.is_some();
        self.out.market.set_muted(muted);
        // The open event (a record without F_LAST was applied): its source time and publish time.
        let mut event: Option<(i64, i64)> = None;
        let mut last_src = 0i64;
        let mut replayed = 0u64;
        let mut seen = 0u64;
        loop {
            seen += 1;
            if seen % STOP_POLL_RECORDS == 0 && stop.load(Ordering::Relaxed) {
                return Ok((true, replayed));
            }
            let offset = match source.next() {
                Step::Record(offset) => offset,
                Step::End => return Ok((false, replayed)),
                Step::Truncated(offset) => {
                    summary.truncated_at = Some(offset);
                    return Ok((false, replayed));
                }
                Step::Broken { offset, reason } => {
                    summary.skip(bad(offset, format!("{reason}; the rest of the file is not read")));
                    return Ok((false, replayed));
                }
            };
            let Some(rec) = source.last_record() else { continue };
            let rt = rec.header().rtype;
            if rt == rtype::SYMBOL_MAPPING {
                match router.map.on_record(rec) {
                    Ok(()) => summary.messages += 1,
                    Err(e) => summary.skip(bad(offset, format!("symbol mapping: {e}"))),
                }
                router.routes.clear();
                continue;
            }
            if rt == rtype::SYSTEM || rt == rtype::ERROR {
                continue;
            }
            let Some((r, index_ts, last)) = self.normalize(rec) else {
                let reason = format!(
                    "record type {rt:#04x} of {} bytes is not of schema {}",
                    rec.record_size(),
                    self.schema.as_str()
                );
                summary.skip(bad(offset, reason));
                continue;
            };
            let src = i64::try_from(index_ts).unwrap_or(last_src);
            last_src = src;
            let (start, end) = *bounds.get_or_insert_with(|| {
                (self.opts.start.map(|b| b.unix_ns(src)), self.opts.end.map(|b| b.unix_ns(src)))
            });
            if end.is_some_and(|e| src >= e) {
                return Ok((false, replayed));
            }
            let Some(i) = self.route(router, rec.header().instrument_id, index_ts)? else {
                summary.messages += 1;
                continue;
            };
            let ts = if muted && start.is_some_and(|s| src < s) {
                0
            } else {
                if muted {
                    muted = false;
                    self.out.market.set_muted(false);
                }
                replayed += 1;
                match event {
                    Some((s, ts)) if s == src => ts,
                    _ => match pacer.pace(src, &mut self.out.market, stop)? {
                        Some(ts) => ts,
                        None => return Ok((true, replayed)),
                    },
                }
            };
            event = if last { None } else { Some((src, ts)) };
            let applied = match r {
                Rec::Mbo(m) => self.out.mbo(i, m, ts)?,
                Rec::Mbp(m) => self.out.mbp(i, &m, ts)?,
                Rec::Trade(t) => self.out.trade(i, t, ts)?,
                Rec::Bar(b) => self.out.bar(i, b, ts, muted)?,
            };
            match applied {
                Applied::Ok => summary.messages += 1,
                Applied::BookError => {
                    summary.messages += 1;
                    summary.book_errors += 1;
                }
                Applied::Bad(reason) => summary.skip(bad(offset, reason)),
            }
        }
    }

    /// The record as this file's schema reads it, its index timestamp, and whether it ends its event (`F_LAST`;
    /// bars have no flags and each is one event). `None`: not a record of the schema.
    fn normalize<'a>(&self, rec: RecordRef<'a>) -> Option<(Rec<'a>, u64, bool)> {
        Some(match self.schema {
            Schema::Mbo => {
                let m = rec.try_get::<MboMsg>().ok()?;
                (Rec::Mbo(m), m.raw_index_ts(), m.flags.is_last())
            }
            // The two MBP layouts differ only in how many levels they carry.
            Schema::Mbp1 => {
                let m = rec.try_get::<Mbp1Msg>().ok()?;
                (mbp(m.action, m.side, m.price, m.size, &m.levels), m.raw_index_ts(), m.flags.is_last())
            }
            Schema::Mbp10 => {
                let m = rec.try_get::<Mbp10Msg>().ok()?;
                (mbp(m.action, m.side, m.price, m.size, &m.levels), m.raw_index_ts(), m.flags.is_last())
            }
            Schema::Trades => {
                let m = rec.try_get::<TradeMsg>().ok()?;
                (Rec::Trade(m), m.raw_index_ts(), m.flags.is_last())
            }
            _ => {
                let m = rec.try_get::<OhlcvMsg>().ok()?;
                (Rec::Bar(m), m.raw_index_ts(), true)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway prepares a replay on its own thread and runs it on another.
    #[test]
    fn dbn_replay_is_send() {
        fn send<T: Send>() {}
        send::<DbnReplay>();
    }

    #[test]
    fn dbn_topic_symbols_are_valid_topic_names() {
        assert_eq!(topic_symbol("AAPL"), "AAPL");
        assert_eq!(topic_symbol("ES.c.0"), "ES.c.0");
        assert_eq!(topic_symbol("AAPL  240119C00190000"), "AAPL__240119C00190000");
        assert_eq!(topic_symbol(" BRK B "), "BRK_B");
        assert_eq!(topic_symbol("   "), "_");
        assert_eq!(topic_symbol("ÉTÉ"), "_T_");
    }

    #[test]
    fn dbn_lookup_reports_the_span_of_its_answer() {
        let mut map = TsSymbolMap::new();
        map.insert(7, 100, 200, "AAPL").unwrap();
        map.insert(7, 300, 400, "MSFT").unwrap();
        assert_eq!(lookup(&map, 7, 150), (100, 200, Some("AAPL")));
        assert_eq!(lookup(&map, 7, 250), (200, 300, None));
        assert_eq!(lookup(&map, 7, 50), (0, 100, None));
        assert_eq!(lookup(&map, 7, 400), (400, u64::MAX, None));
        assert_eq!(lookup(&map, 8, 150), (0, u64::MAX, None));
    }

    #[test]
    fn dbn_aggressor_follows_the_side_field() {
        assert_eq!(aggressor(b'B'), Some(Side::Buy));
        assert_eq!(aggressor(b'A'), Some(Side::Sell));
        assert_eq!(aggressor(b'N'), None);
    }
}
