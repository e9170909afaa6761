//! Writes `data/sample.mbo.dbn.zst`: a Databento MBO file (DBN, zstd) of five Nasdaq symbols' order flow over
//! 60 seconds, about 20,000 records. Nothing is downloaded.
//!
//! ```sh
//! cargo run -p marquee-feeds --example make_dbn -- feeds/data/sample.mbo.dbn.zst
//! ```
//!
//! SYNTHETIC: a deterministic random order flow (seed below), not real market data; prices start near the
//! symbols' levels on 2024-03-15, instrument ids are made up. The output depends on nothing but the seed, so
//! rerunning it reproduces the committed file.
//!
//! The file reads as a Databento capture does: each book opens with a clear and a snapshot of resting orders
//! (`F_SNAPSHOT`), then adds, cancels (full and partial), modifies (smaller in place, or a new price at the back
//! of its queue) and trades, each trade a `T` (the aggressor's side), then per resting order filled an `F` and
//! the `C` that takes it off the book. Records of one event share `ts_recv` and only the last has `F_LAST`.
//! Books never cross, and every cancel, modify and fill names a resting order.

use dbn::encode::{DbnEncoder, DynWriter, EncodeRecord};
use dbn::{
    FlagSet, MappingInterval, MboMsg, Metadata, MetadataBuilder, RecordHeader, SType, Schema, SymbolMapping,
    UNDEF_PRICE, rtype,
};
use marquee_feeds::synthetic::SplitMix64;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::c_char;
use std::num::NonZeroU64;

/// Symbol, instrument id (made up), opening bid in cents (near its level on 2024-03-15), relative activity.
const SYMBOLS: [(&str, u32, i64, u64); 5] = [
    ("AAPL", 38, 17_262, 3),
    ("MSFT", 7152, 41_642, 2),
    ("NVDA", 7335, 87_837, 4),
    ("TSLA", 9358, 16_357, 3),
    ("AMZN", 443, 17_442, 2),
];
const SEED: u64 = 2024;
const RECORDS: usize = 20_000;
/// 2024-03-15T14:30:00Z, an hour into the session.
const T0: u64 = 1_710_513_000_000_000_000;
const SPAN_NS: u64 = 60_000_000_000;
/// A cent in DBN's fixed-point prices (1e-9).
const CENT: i64 = 10_000_000;
/// Databento's publisher id of Nasdaq TotalView-ITCH (`XNAS.ITCH`).
const PUBLISHER: u16 = 2;
/// zstd level: the sample is committed, so smaller beats faster.
const ZSTD_LEVEL: i32 = 19;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: make_dbn OUT.mbo.dbn.zst");
        std::process::exit(2);
    };
    let records = Flow::new(SEED).run();
    let end = records.last().map_or(T0, |r| r.ts_recv) + 1;
    let day = MetadataBuilder::new()
        .dataset("XNAS.ITCH")
        .schema(Some(Schema::Mbo))
        .start(T0)
        .end(NonZeroU64::new(end))
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let (d0, d1) = (day.start().date(), day.start().date().next_day().ok_or("date")?);
    let mappings = SYMBOLS
        .iter()
        .map(|&(sym, iid, ..)| SymbolMapping {
            raw_symbol: sym.to_owned(),
            intervals: vec![MappingInterval { start_date: d0, end_date: d1, symbol: iid.to_string() }],
        })
        .collect();
    let meta = Metadata { symbols: SYMBOLS.iter().map(|s| s.0.to_owned()).collect(), mappings, ..day };
    let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut enc = DbnEncoder::new(DynWriter::with_compression_level(file, ZSTD_LEVEL)?, &meta)?;
    for r in &records {
        enc.encode_record(r)?;
    }
    enc.get_mut().finish()?;
    eprintln!(
        "wrote {} MBO records of {} symbols over {:.1} s to {path}",
        records.len(),
        SYMBOLS.len(),
        (end - T0) as f64 / 1e9
    );
    Ok(())
}

/// A resting order; prices in cents.
#[derive(Clone, Copy)]
struct Order {
    bid: bool,
    cents: i64,
    size: u32,
}

/// One symbol's book as the generator keeps it, so that what it writes stays consistent.
struct Book {
    iid: u32,
    /// Where new bids gather (cents); asks gather a cent above. Drifts, and follows trades that empty a level.
    fair: i64,
    orders: HashMap<u64, Order>,
    /// Resting ids, to pick from (a `HashMap`'s order is not deterministic).
    live: Vec<u64>,
    /// Price (cents) to its queue of ids, oldest first.
    bids: BTreeMap<i64, VecDeque<u64>>,
    asks: BTreeMap<i64, VecDeque<u64>>,
}

impl Book {
    fn side(&mut self, bid: bool) -> &mut BTreeMap<i64, VecDeque<u64>> {
        if bid { &mut self.bids } else { &mut self.asks }
    }

    fn best(&self, bid: bool) -> Option<i64> {
        if bid { self.bids.keys().next_back().copied() } else { self.asks.keys().next().copied() }
    }

    fn n_orders(&self, bid: bool) -> usize {
        if bid { self.bids.values().map(VecDeque::len).sum() } else { self.asks.values().map(VecDeque::len).sum() }
    }

    fn rest(&mut self, id: u64, o: Order) {
        self.orders.insert(id, o);
        self.live.push(id);
        self.side(o.bid).entry(o.cents).or_default().push_back(id);
    }

    /// Takes `id` off its level's queue (and off the book when `gone`).
    fn unqueue(&mut self, id: u64, gone: bool) -> Order {
        let o = self.orders[&id];
        let levels = self.side(o.bid);
        if let Some(q) = levels.get_mut(&o.cents) {
            q.retain(|&x| x != id);
            if q.is_empty() {
                levels.remove(&o.cents);
            }
        }
        if gone {
            self.orders.remove(&id);
            self.live.retain(|&x| x != id);
        }
        o
    }

    /// A price for a new order on `bid`'s side `depth` cents behind where orders gather, that does not cross.
    fn price(&self, bid: bool, depth: i64) -> i64 {
        if bid {
            let p = self.fair - depth;
            self.best(false).map_or(p, |ask| p.min(ask - 1))
        } else {
            let p = self.fair + 1 + depth;
            self.best(true).map_or(p, |b| p.max(b + 1))
        }
    }
}

/// The generator: books, the random source, and the records so far with their unscaled times.
struct Flow {
    rng: SplitMix64,
    books: Vec<Book>,
    next_id: u64,
    /// Unscaled time of the current event; scaled onto `SPAN_NS` at the end.
    clock: u64,
    records: Vec<MboMsg>,
    event_start: usize,
}

impl Flow {
    fn new(seed: u64) -> Flow {
        let books = SYMBOLS
            .iter()
            .map(|&(_, iid, cents, _)| Book {
                iid,
                fair: cents,
                orders: HashMap::new(),
                live: Vec::new(),
                bids: BTreeMap::new(),
                asks: BTreeMap::new(),
            })
            .collect();
        Flow { rng: SplitMix64::new(seed), books, next_id: 1_000, clock: 0, records: Vec::new(), event_start: 0 }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// A displayed size: mostly round lots, some odd lots, now and then a large order.
    fn size(&mut self) -> u32 {
        match self.below(20) {
            0..=2 => 1 + self.below(99) as u32,
            3 => 1_000 * (1 + self.below(5) as u32),
            _ => 100 * (1 + self.below(5) as u32),
        }
    }

    /// Some round lots of an order of `size` (over 100), leaving at least one share.
    fn lots_off(&mut self, size: u32) -> u32 {
        let lots = 1 + self.below(u64::from(size - 1) / 100) as u32;
        (100 * lots).min(size - 1)
    }

    /// The next event's symbol, by activity.
    fn pick_symbol(&mut self) -> usize {
        let mut at = self.below(SYMBOLS.iter().map(|s| s.3).sum());
        for (b, s) in SYMBOLS.iter().enumerate() {
            if at < s.3 {
                return b;
            }
            at -= s.3;
        }
        0
    }

    fn record(&mut self, b: usize, action: u8, bid: Option<bool>, id: u64, price: i64, size: u32) {
        let side = match bid {
            Some(true) => b'B',
            Some(false) => b'A',
            None => b'N',
        };
        self.records.push(MboMsg {
            hd: RecordHeader::new::<MboMsg>(rtype::MBO, PUBLISHER, self.books[b].iid, 0),
            order_id: id,
            price,
            size,
            flags: FlagSet::empty(),
            channel_id: 0,
            action: action as c_char,
            side: side as c_char,
            ts_recv: self.clock,
            ts_in_delta: 0,
            sequence: 0,
        });
    }

    /// Ends the event: its last record gets `F_LAST`.
    fn end_event(&mut self) {
        if self.records.len() > self.event_start {
            if let Some(r) = self.records.last_mut() {
                r.flags = r.flags.set_last();
            }
        }
        self.event_start = self.records.len();
    }

    fn add(&mut self, b: usize, bid: bool, depth: i64) {
        let cents = self.books[b].price(bid, depth);
        let size = self.size();
        self.next_id += 1 + self.below(4);
        let id = self.next_id;
        self.books[b].rest(id, Order { bid, cents, size });
        self.record(b, b'A', Some(bid), id, cents * CENT, size);
    }

    /// Clear, then 12 levels a side of 1 to 4 orders each, as one event.
    fn snapshot(&mut self, b: usize) {
        self.record(b, b'R', None, 0, UNDEF_PRICE, 0);
        for level in 0..12 {
            for bid in [true, false] {
                for _ in 0..1 + self.below(4) {
                    self.add(b, bid, level);
                }
            }
        }
        for r in &mut self.records[self.event_start..] {
            r.flags = r.flags.set_snapshot();
        }
        self.end_event();
    }

    /// An add near the top: how deep is skewed towards the touch, with a long tail.
    fn add_near(&mut self, b: usize, bid: bool) {
        let depth = if self.below(12) == 0 { 6 + self.below(12) } else { self.below(4) * self.below(4) / 2 };
        self.add(b, bid, depth as i64);
    }

    /// A resting order of book `b`, at random.
    fn any_order(&mut self, b: usize) -> u64 {
        let at = self.below(self.books[b].live.len() as u64) as usize;
        self.books[b].live[at]
    }

    fn cancel(&mut self, b: usize) {
        let id = self.any_order(b);
        let o = self.books[b].orders[&id];
        if o.size > 100 && self.below(5) == 0 {
            // Partial: `size` is the amount cancelled.
            let by = self.lots_off(o.size);
            if let Some(x) = self.books[b].orders.get_mut(&id) {
                x.size -= by;
            }
            self.record(b, b'C', Some(o.bid), id, o.cents * CENT, by);
        } else {
            self.books[b].unqueue(id, true);
            self.record(b, b'C', Some(o.bid), id, o.cents * CENT, o.size);
        }
    }

    fn modify(&mut self, b: usize) {
        let id = self.any_order(b);
        let o = self.books[b].orders[&id];
        let new = if o.size > 100 && self.below(2) == 0 {
            // Smaller at the same price: it keeps its place.
            Order { size: o.size - self.lots_off(o.size), ..o }
        } else {
            // A cent away from or towards the touch (not crossing): the back of the new level's queue.
            let step = if self.below(2) == 0 { 1 } else { -1 };
            let cents = o.cents + if o.bid { step } else { -step };
            let book = &self.books[b];
            let cents = if o.bid {
                book.best(false).map_or(cents, |a| cents.min(a - 1))
            } else {
                book.best(true).map_or(cents, |x| cents.max(x + 1))
            };
            let size = if self.below(3) == 0 { self.size() } else { o.size };
            Order { cents, size, ..o }
        };
        let book = &mut self.books[b];
        if new.cents != o.cents || new.size > o.size {
            book.unqueue(id, false);
            book.side(new.bid).entry(new.cents).or_default().push_back(id);
        }
        book.orders.insert(id, new);
        self.record(b, b'M', Some(o.bid), id, new.cents * CENT, new.size);
    }

    /// A marketable order against the touch: per resting order it fills, `T`, `F` and `C`. A level it empties
    /// moves where orders gather.
    fn trade(&mut self, b: usize, buy: bool) {
        let Some(cents) = self.books[b].best(!buy) else { return };
        let mut left = self.size();
        while left > 0 {
            let Some(&id) = self.books[b].side(!buy).get(&cents).and_then(VecDeque::front) else { break };
            let o = self.books[b].orders[&id];
            let fill = left.min(o.size);
            left -= fill;
            self.record(b, b'T', Some(buy), 0, cents * CENT, fill);
            self.record(b, b'F', Some(o.bid), id, cents * CENT, fill);
            self.record(b, b'C', Some(o.bid), id, cents * CENT, fill);
            if fill == o.size {
                self.books[b].unqueue(id, true);
            } else if let Some(x) = self.books[b].orders.get_mut(&id) {
                x.size -= fill;
            }
        }
        let book = &mut self.books[b];
        if !book.side(!buy).contains_key(&cents) {
            book.fair = if buy { cents } else { cents - 1 };
        }
    }

    fn run(mut self) -> Vec<MboMsg> {
        for b in 0..self.books.len() {
            self.snapshot(b);
        }
        while self.records.len() < RECORDS {
            // Mostly spread out, sometimes a burst.
            self.clock += if self.below(8) == 0 { 1 + self.below(20) } else { 1 + self.below(2_000) };
            let b = self.pick_symbol();
            if self.below(10) == 0 {
                let book = &mut self.books[b];
                book.fair += if self.rng.below(2) == 0 { 1 } else { -1 };
            }
            let (n_bids, n_asks) = (self.books[b].n_orders(true), self.books[b].n_orders(false));
            let roll = self.below(100);
            if n_bids < 15 || n_asks < 15 {
                self.add_near(b, n_bids < n_asks);
            } else if n_bids + n_asks > 160 || roll < 33 {
                self.cancel(b);
            } else if roll < 78 {
                let bid = self.below(2) == 0;
                self.add_near(b, bid);
            } else if roll < 88 {
                self.modify(b);
            } else {
                let buy = self.below(2) == 0;
                self.trade(b, buy);
            }
            self.end_event();
        }
        self.stamp();
        self.records
    }

    /// Scales the unscaled times onto `SPAN_NS` from `T0` and fills in the venue's clock and sequence numbers.
    fn stamp(&mut self) {
        let last = self.records.last().map_or(1, |r| r.ts_recv.max(1));
        let mut sequence = 0u32;
        let mut prev = u64::MAX;
        for k in 0..self.records.len() {
            let raw = self.records[k].ts_recv;
            if raw != prev {
                sequence += 1;
                prev = raw;
            }
            let latency = 20_000 + self.below(60_000);
            let delta = 5_000 + self.below(15_000);
            let r = &mut self.records[k];
            r.ts_recv = T0 + (u128::from(raw) * u128::from(SPAN_NS) / u128::from(last)) as u64;
            r.hd.ts_event = if r.flags.is_snapshot() { r.ts_recv - 3_600_000_000_000 } else { r.ts_recv - latency };
            r.ts_in_delta = delta as i32;
            r.sequence = sequence;
        }
    }
}
