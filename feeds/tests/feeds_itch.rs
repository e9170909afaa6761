//! ITCH 5.0 replay: books against a naive reference model over random order flow, prints, bad and torn input.

use marquee_engine::{
    BatchWriter, BookLevel, Encoding, Engine, EngineConfig, Limits, Position, Price, Side, Subscriber, Trade,
};
use marquee_feeds::book::BookSide;
use marquee_feeds::itch::{self, encode};
use marquee_feeds::itch_replay::{Applied, ItchBooks};
use marquee_feeds::market::MarketOut;
use marquee_feeds::{Replay, ReplayOptions, Speed};
use marquee_protocol::decode::{BinRecord, decode_bin_batch};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

const SYMS: [&str; 3] = ["AAPL", "MSFT", "NVDA"];

/// The reference: a flat list of resting orders; books and queues are computed from it the obvious way.
#[derive(Clone, Debug, Default)]
struct Model {
    orders: Vec<(u64, usize, bool, u32, u32, u64)>, // id, symbol, buy, price, shares, arrival
    arrivals: u64,
}

impl Model {
    fn find(&self, id: u64) -> Option<usize> {
        self.orders.iter().position(|o| o.0 == id)
    }

    fn add(&mut self, id: u64, sym: usize, buy: bool, price: u32, shares: u32) {
        self.arrivals += 1;
        self.orders.push((id, sym, buy, price, shares, self.arrivals));
    }

    fn reduce(&mut self, id: u64, by: u32) {
        let i = self.find(id).unwrap();
        self.orders[i].4 -= by.min(self.orders[i].4);
        if self.orders[i].4 == 0 {
            self.orders.remove(i);
        }
    }

    fn top(&self, sym: usize, buy: bool, depth: usize) -> Vec<BookLevel> {
        let mut levels: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
        for o in self.orders.iter().filter(|o| o.1 == sym && o.2 == buy) {
            let l = levels.entry(o.3).or_default();
            l.0 += u64::from(o.4);
            l.1 += 1;
        }
        let level = |(&p, &(size, orders)): (&u32, &(u64, u32))| BookLevel {
            price: Price(i64::from(p) * itch::PRICE_TO_UNITS),
            size,
            orders,
        };
        if buy {
            levels.iter().rev().take(depth).map(level).collect()
        } else {
            levels.iter().take(depth).map(level).collect()
        }
    }

    fn queue(&self, sym: usize, buy: bool, price: u32) -> Vec<u64> {
        let mut q: Vec<_> = self.orders.iter().filter(|o| o.1 == sym && o.2 == buy && o.3 == price).collect();
        q.sort_by_key(|o| o.5);
        q.iter().map(|o| o.0).collect()
    }
}

/// One random step, resolved against the model's current orders so most steps are valid.
#[derive(Clone, Debug)]
enum Op {
    Add { sym: usize, buy: bool, tick: u32, shares: u32 },
    Execute { pick: usize, shares: u32, with_price: bool },
    Cancel { pick: usize, shares: u32 },
    Delete { pick: usize },
    Replace { pick: usize, tick: u32, shares: u32 },
    Unknown,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, any::<bool>(), 0..12u32, 1..900u32).prop_map(|(sym, buy, tick, shares)| Op::Add { sym, buy, tick, shares }),
        2 => (any::<usize>(), 1..900u32, any::<bool>()).prop_map(|(pick, shares, with_price)| Op::Execute { pick, shares, with_price }),
        1 => (any::<usize>(), 1..900u32).prop_map(|(pick, shares)| Op::Cancel { pick, shares }),
        2 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        1 => (any::<usize>(), 0..12u32, 1..900u32).prop_map(|(pick, tick, shares)| Op::Replace { pick, tick, shares }),
        1 => Just(Op::Unknown),
    ]
}

fn price_of(sym: usize, buy: bool, tick: u32) -> u32 {
    let mid = 1_000_000 + sym as u32 * 500_000;
    if buy { mid - tick * 100 } else { mid + 100 + tick * 100 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// After every message, each symbol's top 5 levels per side and every level's queue equal the model's.
    #[test]
    fn itch_books_match_the_reference_after_every_message(ops in prop::collection::vec(op(), 1..300)) {
        let engine = Engine::new(EngineConfig::default());
        let mut out = MarketOut::new(engine.clone(), 5);
        let mut books = ItchBooks::new(&[]);
        let mut model = Model::default();
        let mut next_id = 1u64;
        let mut file = Vec::new();
        for (i, s) in SYMS.iter().enumerate() {
            encode::stock_directory(&mut file, i as u16 + 1, 0, s);
        }
        let mut expect_error = Vec::new();
        let (mut applied, mut n_errors) = (0, 0);
        for (step, op) in ops.iter().enumerate() {
            let ts = step as u64 + 1;
            let pick = |p: usize, m: &Model| (!m.orders.is_empty()).then(|| m.orders[p % m.orders.len()]);
            match *op {
                Op::Add { sym, buy, tick, shares } => {
                    let p = price_of(sym, buy, tick);
                    encode::add_order(&mut file, sym as u16 + 1, ts, next_id, if buy { b'B' } else { b'S' }, shares, SYMS[sym], p, (tick % 3 == 0).then_some(b"MPID"));
                    model.add(next_id, sym, buy, p, shares);
                    next_id += 1;
                }
                Op::Execute { pick: k, shares, with_price } => {
                    let Some(o) = pick(k, &model) else { continue };
                    if with_price {
                        encode::executed_with_price(&mut file, o.1 as u16 + 1, ts, o.0, shares, ts, shares % 2 == 0, o.3 + 100);
                    } else {
                        encode::executed(&mut file, o.1 as u16 + 1, ts, o.0, shares, ts);
                    }
                    model.reduce(o.0, shares);
                }
                Op::Cancel { pick: k, shares } => {
                    let Some(o) = pick(k, &model) else { continue };
                    encode::cancel(&mut file, o.1 as u16 + 1, ts, o.0, shares);
                    model.reduce(o.0, shares);
                }
                Op::Delete { pick: k } => {
                    let Some(o) = pick(k, &model) else { continue };
                    encode::delete(&mut file, o.1 as u16 + 1, ts, o.0);
                    model.reduce(o.0, u32::MAX);
                }
                Op::Replace { pick: k, tick, shares } => {
                    let Some(o) = pick(k, &model) else { continue };
                    let p = price_of(o.1, o.2, tick);
                    encode::replace(&mut file, o.1 as u16 + 1, ts, o.0, next_id, shares, p);
                    model.reduce(o.0, u32::MAX);
                    model.add(next_id, o.1, o.2, p, shares);
                    next_id += 1;
                }
                Op::Unknown => {
                    encode::delete(&mut file, 1, ts, 1 << 40);
                    expect_error.push(step);
                }
            }
            // Apply what this step wrote, then compare.
            let mut reader = itch::Reader::new(&file[applied..]);
            while let Some(m) = reader.next_message() {
                let (_, bytes) = m.unwrap();
                let msg = itch::parse(bytes).unwrap();
                if books.apply(&msg, &mut out, 0).unwrap() == Applied::BookError {
                    n_errors += 1;
                }
            }
            applied = file.len();
            prop_assert_eq!(n_errors, expect_error.len());
            for (sym, name) in SYMS.iter().enumerate() {
                let (mut bids, mut asks) = (Vec::new(), Vec::new());
                out.books_ref().top(sym as u32, 5, &mut bids, &mut asks);
                prop_assert_eq!(&bids, &model.top(sym, true, 5), "bids of {} after step {}", name, step);
                prop_assert_eq!(&asks, &model.top(sym, false, 5), "asks of {} after step {}", name, step);
                for l in bids.iter().chain(&asks) {
                    let buy = bids.contains(l);
                    let side = if buy { BookSide::Bid } else { BookSide::Ask };
                    let p = (l.price.units() / itch::PRICE_TO_UNITS) as u32;
                    prop_assert_eq!(out.books_ref().queue(sym as u32, side, l.price), model.queue(sym, buy, p));
                }
            }
        }
    }
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("marquee-feeds-itch-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every message of `topic` as a binary client decodes it, from seq 1.
fn received(engine: &Arc<Engine>, topic: &str) -> Vec<BinRecord> {
    let mut sub = Subscriber::new(engine.clone(), Limits { max_pending_messages: u64::MAX, ..Limits::default() });
    sub.subscribe(engine.topic(topic).unwrap(), Some(Position { epoch: engine.epoch(), seq: 0 })).unwrap();
    let mut batch = BatchWriter::new(Encoding::Binary);
    let mut out = Vec::new();
    loop {
        batch.clear();
        let d = sub.drain(&mut batch).unwrap();
        let Some(bytes) = batch.finish() else { break };
        out.extend(decode_bin_batch(bytes).unwrap());
        if !d.more {
            break;
        }
    }
    out
}

fn replay(path: &std::path::Path, symbols: &[&str]) -> (Arc<Engine>, marquee_feeds::ReplaySummary) {
    let engine = Engine::new(EngineConfig::default());
    let mut o = ReplayOptions::new(path);
    o.speed = Speed::Max;
    o.symbols = symbols.iter().map(|s| s.to_string()).collect();
    let r = Replay::prepare(&engine, o).unwrap();
    assert_eq!(r.format(), marquee_feeds::FileFormat::Itch);
    let s = r.run(&AtomicBool::new(false)).unwrap();
    (engine, s)
}

#[test]
fn itch_replay_publishes_prints_books_and_ticks_and_skips_bad_records() {
    let mut f = Vec::new();
    encode::system_event(&mut f, 1, b'O');
    encode::stock_directory(&mut f, 1, 2, "AAPL");
    encode::stock_directory(&mut f, 2, 2, "MSFT");
    encode::add_order(&mut f, 1, 3, 1, b'B', 300, "AAPL", 1_872_200, None);
    encode::add_order(&mut f, 1, 4, 2, b'S', 200, "AAPL", 1_872_400, Some(b"GSCO"));
    encode::add_order(&mut f, 2, 4, 3, b'B', 100, "MSFT", 4_150_000, None);
    let bad_at = f.len() as u64;
    f.extend_from_slice(&[0, 12, b'A', 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // an add 12 bytes long
    let unknown_at = f.len() as u64;
    f.extend_from_slice(&[0, 3, b'Z', 1, 2]);
    encode::executed(&mut f, 1, 5, 2, 50, 77); // a buyer lifts 50 of the offer
    encode::executed_with_price(&mut f, 1, 6, 1, 100, 78, true, 1_872_100); // a seller hits the bid at 187.21
    encode::executed_with_price(&mut f, 1, 7, 1, 100, 79, false, 1_872_100); // not printable: book only
    encode::trade(&mut f, 1, 8, 0, b'S', 10, "AAPL", 1_872_300, 80); // hidden sell order lifted
    encode::cross_trade(&mut f, 2, 9, 5_000, "MSFT", 4_150_000, 81, b'C');
    encode::cancel(&mut f, 1, 10, 2, 50);
    encode::replace(&mut f, 1, 11, 1, 9, 400, 1_872_300);
    encode::delete(&mut f, 1, 12, 12345); // unknown order: counted, not fatal
    let whole = f.len() as u64;
    encode::add_order(&mut f, 1, 13, 10, b'B', 1, "AAPL", 1, None);
    f.truncate(f.len() - 5); // a torn last record

    let file = TempFile::new("flow.itch", &f);
    let (engine, s) = replay(&file.0, &[]);
    let m = s.market.unwrap();
    assert_eq!(m.skipped, 2, "{m:?}");
    assert_eq!(m.first_errors[0].offset, bad_at);
    assert!(m.first_errors[0].to_string().contains("message type 'A' is 36 bytes, got 12"), "{}", m.first_errors[0]);
    assert_eq!(m.first_errors[1].offset, unknown_at);
    assert_eq!(m.truncated_at, Some(whole));
    assert_eq!(m.book_errors, 1);

    let prints: Vec<Trade> = received(&engine, "trades.AAPL")
        .into_iter()
        .map(|r| match r {
            BinRecord::Trade(t) => t.trade,
            other => panic!("{other:?}"),
        })
        .collect();
    let t = |cents: i64, size, side| Trade { price: Price::from_cents(cents), size, side };
    assert_eq!(
        prints,
        [t(18724, 50, Some(Side::Buy)), t(18721, 100, Some(Side::Sell)), t(18723, 10, Some(Side::Buy)),]
    );
    let BinRecord::Trade(cross) = &received(&engine, "trades.MSFT")[0] else { panic!() };
    assert_eq!((cross.trade.size, cross.trade.side), (5_000, None));

    // The last book: order 1 was replaced by 9 (400 @ 187.23); of the offer's 200, 50 executed, 50 cancelled.
    let books = received(&engine, "book.AAPL");
    let Some(BinRecord::Book(last)) = books.last() else { panic!("{books:?}") };
    assert_eq!(last.bids, [BookLevel { price: Price::from_cents(18723), size: 400, orders: 1 }]);
    assert_eq!(last.asks, [BookLevel { price: Price::from_cents(18724), size: 100, orders: 1 }]);
    let ticks = received(&engine, "ticks.AAPL");
    let Some(BinRecord::Tick(tick)) = ticks.last() else { panic!() };
    assert_eq!(
        (tick.tick.price, tick.tick.bid, tick.tick.ask),
        (Price::from_cents(18723), Some(Price::from_cents(18723)), Some(Price::from_cents(18724)))
    );
}

#[test]
fn itch_replay_symbol_filter_and_generated_file() {
    let mut g = marquee_feeds::itch_gen::ItchGenerator::new(5, 6, 1_000);
    let mut f = Vec::new();
    g.write_header(&mut f);
    g.write_messages(&mut f, 30_000);
    let file = TempFile::new("gen.itch", &f);
    let (engine, s) = replay(&file.0, &[]);
    let m = s.market.unwrap();
    assert_eq!((m.skipped, m.book_errors, m.truncated_at), (0, 0, None), "a generated file is consistent");
    assert_eq!(m.messages, 30_000 + 7);
    // Every print goes out; books at least once per symbol (at `max`, once per 10 ms and at the end).
    assert!(m.published.trades > 1_000 && m.published.books >= 6, "{m:?}");
    assert_eq!(engine.topic_names("book.").len(), 6);

    let (engine, s) = replay(&file.0, &[g.symbols()[0]]);
    let m = s.market.unwrap();
    assert_eq!((m.skipped, m.book_errors), (0, 0), "other symbols' orders are not errors under a filter");
    assert_eq!(engine.topic_names("book."), [format!("book.{}", g.symbols()[0])]);
}
