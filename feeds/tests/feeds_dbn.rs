//! DBN replay end to end: files written with Databento's own encoder (plain and zstd, every schema replayed),
//! replayed at `--speed max` into an engine, and read back as a subscriber reads them (binary batches from
//! seq 1), so prices are checked to the unit.

use dbn::encode::{DbnEncoder, EncodeRecordRef};
use dbn::{
    BidAskPair, FlagSet, MappingInterval, MboMsg, Mbp1Msg, Mbp10Msg, Metadata, MetadataBuilder, OhlcvMsg, RecordBuf,
    RecordHeader, SType, Schema, SymbolMapping, SymbolMappingMsg, TradeMsg, UNDEF_PRICE, rtype,
};
use marquee_engine::{
    BatchWriter, BookLevel, Encoding, Engine, EngineConfig, Limits, Position, Price, RingConfig, Side, Subscriber,
};
use marquee_feeds::Speed;
use marquee_feeds::dbn_replay::{DbnError, DbnReplay};
use marquee_feeds::md_replay::{MAX_BATCH, MdOptions, MdSummary, TimeBound};
use marquee_protocol::decode::{BinRecord, decode_bin_batch};
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// 2024-03-15 13:30:00 UTC.
const T0: u64 = 1_710_509_400_000_000_000;
const SEC: u64 = 1_000_000_000;

fn px(s: &str) -> i64 {
    s.parse::<Price>().unwrap().units()
}

fn tmp(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("marquee-feeds-dbn-{}-{n}-{name}", std::process::id()))
}

/// Metadata for `schema` whose symbology maps each `(symbol, instrument_id)` on T0's day.
fn meta(schema: Schema, symbols: &[(&str, u32)]) -> Metadata {
    let day = MetadataBuilder::new()
        .dataset("XNAS.ITCH")
        .schema(Some(schema))
        .start(T0)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let (d0, d1) = (day.start().date(), day.start().date().next_day().unwrap());
    let mappings = symbols
        .iter()
        .map(|&(s, iid)| SymbolMapping {
            raw_symbol: s.to_owned(),
            intervals: vec![MappingInterval { start_date: d0, end_date: d1, symbol: iid.to_string() }],
        })
        .collect();
    Metadata { symbols: symbols.iter().map(|s| s.0.to_owned()).collect(), mappings, ..day }
}

fn write(name: &str, zstd: bool, meta: &Metadata, records: &[RecordBuf]) -> PathBuf {
    let path = tmp(if zstd { format!("{name}.dbn.zst") } else { format!("{name}.dbn") }.as_str());
    let file = std::fs::File::create(&path).unwrap();
    if zstd {
        let mut enc = DbnEncoder::with_zstd(file, meta).unwrap();
        records.iter().for_each(|r| enc.encode_record_ref(r.as_rec_ref()).unwrap());
    } else {
        let mut enc = DbnEncoder::new(file, meta).unwrap();
        records.iter().for_each(|r| enc.encode_record_ref(r.as_rec_ref()).unwrap());
    }
    path
}

fn opts(path: &Path) -> MdOptions {
    MdOptions {
        path: path.to_owned(),
        speed: Speed::Max,
        looped: false,
        symbols: Vec::new(),
        start: None,
        end: None,
        depth: 10,
        progress: Default::default(),
    }
}

fn engine() -> Arc<Engine> {
    Engine::new(EngineConfig { epoch: 1, ..Default::default() })
}

fn replay(engine: &Arc<Engine>, opts: MdOptions) -> MdSummary {
    let path = opts.path.clone();
    let summary = DbnReplay::prepare(engine, opts).unwrap().run(&AtomicBool::new(false)).unwrap();
    std::fs::remove_file(path).unwrap();
    summary
}

/// Everything `topic` published, read by a subscriber that resumes from before seq 1.
fn history(engine: &Arc<Engine>, topic: &str) -> Vec<BinRecord> {
    let Some(t) = engine.topic(topic) else { return Vec::new() };
    let mut sub = Subscriber::new(engine.clone(), Limits::default());
    sub.subscribe(t, Some(Position { epoch: engine.epoch(), seq: 0 })).unwrap();
    let mut batch = BatchWriter::new(Encoding::Binary);
    let mut out = Vec::new();
    loop {
        let d = sub.drain(&mut batch).unwrap();
        if let Some(frame) = batch.finish() {
            out.extend(decode_bin_batch(frame).expect("batch decodes"));
        }
        batch.clear();
        if !d.more {
            return out;
        }
    }
}

/// `trades.<sym>` as `(price, size, aggressor)`.
fn prints(engine: &Arc<Engine>, sym: &str) -> Vec<(i64, u64, Option<Side>)> {
    let recs = history(engine, &format!("trades.{sym}"));
    recs.into_iter()
        .map(|r| match r {
            BinRecord::Trade(t) => (t.trade.price.units(), t.trade.size, t.trade.side),
            other => panic!("not a trade: {other:?}"),
        })
        .collect()
}

/// Every `book.<sym>` published, as `(bids, asks)`.
fn books(engine: &Arc<Engine>, sym: &str) -> Vec<(Vec<BookLevel>, Vec<BookLevel>)> {
    let recs = history(engine, &format!("book.{sym}"));
    recs.into_iter()
        .map(|r| match r {
            BinRecord::Book(b) => (b.bids, b.asks),
            other => panic!("not a book: {other:?}"),
        })
        .collect()
}

fn last_book(engine: &Arc<Engine>, sym: &str) -> (Vec<BookLevel>, Vec<BookLevel>) {
    books(engine, sym).pop().unwrap_or_else(|| panic!("no book.{sym}"))
}

fn lv(price: &str, size: u64, orders: u32) -> BookLevel {
    BookLevel { price: Price(px(price)), size, orders }
}

fn flags(last: bool) -> FlagSet {
    if last { FlagSet::empty().set_last() } else { FlagSet::empty() }
}

#[allow(clippy::too_many_arguments)]
fn mbo(t: u64, iid: u32, action: u8, side: u8, id: u64, price: i64, size: u32, last: bool) -> RecordBuf {
    RecordBuf::from(MboMsg {
        hd: RecordHeader::new::<MboMsg>(rtype::MBO, 1, iid, t),
        order_id: id,
        price,
        size,
        flags: flags(last),
        channel_id: 0,
        action: action as c_char,
        side: side as c_char,
        ts_recv: t,
        ts_in_delta: 0,
        sequence: 0,
    })
}

fn trade(t: u64, iid: u32, price: &str, size: u32, side: u8) -> RecordBuf {
    RecordBuf::from(TradeMsg {
        hd: RecordHeader::new::<TradeMsg>(rtype::MBP_0, 1, iid, t),
        price: px(price),
        size,
        action: b'T' as c_char,
        side: side as c_char,
        flags: flags(true),
        depth: 0,
        ts_recv: t,
        ts_in_delta: 0,
        sequence: 0,
    })
}

fn pair(bid: (&str, u32, u32), ask: (&str, u32, u32)) -> BidAskPair {
    let p = |s: &str| if s.is_empty() { UNDEF_PRICE } else { px(s) };
    BidAskPair { bid_px: p(bid.0), ask_px: p(ask.0), bid_sz: bid.1, ask_sz: ask.1, bid_ct: bid.2, ask_ct: ask.2 }
}

#[test]
fn feeds_dbn_mbo_builds_the_book_databento_does() {
    let (a, m) = (1, 2); // AAPL, MSFT
    let recs = [
        mbo(T0, a, b'A', b'B', 1, px("100.00"), 300, true),
        mbo(T0 + 1, a, b'A', b'B', 2, px("100.00"), 200, true),
        mbo(T0 + 2, a, b'A', b'A', 3, px("100.05"), 400, true),
        mbo(T0 + 3, a, b'A', b'A', 4, px("100.10"), 100, true),
        // Partial cancel: 100 of order 1's 300 leave.
        mbo(T0 + 4, a, b'C', b'B', 1, px("100.00"), 100, true),
        // Modify to a new price: order 2 moves to 99.95.
        mbo(T0 + 5, a, b'M', b'B', 2, px("99.95"), 200, true),
        // One event: the sell aggressor's trade, the resting order's fill, the cancel that changes the book.
        mbo(T0 + 6, a, b'T', b'A', 0, px("100.00"), 50, false),
        mbo(T0 + 6, a, b'F', b'B', 1, px("100.00"), 50, false),
        mbo(T0 + 6, a, b'C', b'B', 1, px("100.00"), 50, true),
        // Modify down in size at the same price: order 3 keeps its place with 300.
        mbo(T0 + 7, a, b'M', b'A', 3, px("100.05"), 300, true),
        // A cancel of an order never added: a book error, not fatal.
        mbo(T0 + 8, a, b'C', b'A', 99, px("100.05"), 10, true),
        // MSFT: an add, a clear, an add after it.
        mbo(T0 + 9, m, b'A', b'B', 10, px("50"), 10, true),
        mbo(T0 + 10, m, b'R', b'N', 0, UNDEF_PRICE, 0, true),
        mbo(T0 + 11, m, b'A', b'A', 11, px("51.5"), 5, true),
        // A buy-aggressor trade with no book change, and one of unknown side.
        mbo(T0 + 12, a, b'T', b'B', 0, px("100.05"), 7, true),
        mbo(T0 + 13, a, b'T', b'N', 0, px("100.05"), 1, true),
    ];
    for zstd in [false, true] {
        let path = write("mbo", zstd, &meta(Schema::Mbo, &[("AAPL", a), ("MSFT", m)]), &recs);
        let e = engine();
        let r = DbnReplay::prepare(&e, opts(&path)).unwrap();
        assert_eq!(r.symbols(), ["AAPL", "MSFT"]);
        for t in ["ticks.AAPL", "book.AAPL", "trades.AAPL", "ticks.MSFT"] {
            assert!(e.topic(t).is_some(), "{t} exists before the first message");
        }
        let s = r.run(&AtomicBool::new(false)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((s.messages, s.book_errors, s.skipped, s.truncated_at, s.loops), (16, 1, 0, None, 1), "{s:?}");
        assert_eq!(
            last_book(&e, "AAPL"),
            (vec![lv("100", 150, 1), lv("99.95", 200, 1)], vec![lv("100.05", 300, 1), lv("100.1", 100, 1)])
        );
        assert_eq!(last_book(&e, "MSFT"), (vec![], vec![lv("51.5", 5, 1)]));
        assert_eq!(
            prints(&e, "AAPL"),
            [(px("100"), 50, Some(Side::Sell)), (px("100.05"), 7, Some(Side::Buy)), (px("100.05"), 1, None)]
        );
        let BinRecord::Tick(t) = history(&e, "ticks.AAPL").pop().unwrap() else { panic!("tick") };
        assert_eq!(
            (t.tick.price, t.tick.size, t.tick.bid, t.tick.ask),
            (Price(px("100.05")), 1, Some(Price(px("100"))), Some(Price(px("100.05"))))
        );
    }
}

/// Regression guard for `F_LAST`: a flush that fell between an event's cancel and its add would publish a book
/// with the level gone for one message.
#[test]
fn feeds_dbn_books_go_out_between_events_only() {
    let (a, m) = (1, 2);
    let mut recs = vec![mbo(T0, a, b'A', b'B', 1, px("10"), 100, true)];
    // Single-record events on another symbol, so that the pacer's every-MAX_BATCH flush falls on the
    // second record of the AAPL event below.
    let fillers = u64::from(MAX_BATCH) - 3;
    recs.extend((0..fillers).map(|k| mbo(T0 + 1 + k, m, b'A', b'B', 1000 + k, px("5"), 1, true)));
    let t = T0 + 1 + fillers;
    recs.push(mbo(t, a, b'C', b'B', 1, px("10"), 100, false));
    recs.push(mbo(t, a, b'A', b'B', 2, px("10"), 100, true));
    // One more event: the batch flush falls before it, after the whole AAPL event.
    recs.push(mbo(t + 1, a, b'A', b'B', 3, px("9"), 1, true));
    let path = write("events", false, &meta(Schema::Mbo, &[("AAPL", a), ("MSFT", m)]), &recs);
    let e = engine();
    // Paced (so fast that nothing sleeps): books go out every MAX_BATCH messages, not once per millisecond as
    // at `max`, so the flush lands where this test puts it.
    let mut o = opts(&path);
    o.speed = Speed::Factor(1e12);
    let s = replay(&e, o);
    assert_eq!(s.messages, recs.len() as u64);
    let published = books(&e, "AAPL");
    assert!(published.len() >= 2, "the book went out at the batch flush and at the end: {}", published.len());
    for (bids, _) in published {
        assert_eq!(bids.first(), Some(&lv("10", 100, 1)), "a half-applied event was published");
    }
}

#[test]
fn feeds_dbn_mbp_levels_and_prints() {
    let a = 1;
    let top = |bid: &str, bsz, ask: &str, asz| pair((bid, bsz, 3), (ask, asz, 2));
    let mbp1 = |t, action: u8, side: u8, price: &str, size, l: BidAskPair| {
        RecordBuf::from(Mbp1Msg {
            hd: RecordHeader::new::<Mbp1Msg>(rtype::MBP_1, 1, a, t),
            price: px(price),
            size,
            action: action as c_char,
            side: side as c_char,
            flags: flags(true),
            depth: 0,
            ts_recv: t,
            ts_in_delta: 0,
            sequence: 0,
            levels: [l],
        })
    };
    let recs1 = [
        mbp1(T0, b'A', b'B', "187.22", 300, top("187.22", 300, "187.24", 200)),
        mbp1(T0 + 1, b'T', b'A', "187.22", 100, top("187.22", 200, "187.24", 200)),
        mbp1(T0 + 2, b'C', b'A', "187.24", 200, top("187.22", 200, "", 0)),
    ];
    let mut levels: [BidAskPair; 10] = std::array::from_fn(|_| BidAskPair::default());
    for (k, l) in levels.iter_mut().enumerate().take(7) {
        let k = k as i64;
        *l = BidAskPair {
            bid_px: px("99.99") - k * px("0.01"),
            ask_px: px("100.01") + k * px("0.01"),
            bid_sz: 10 + k as u32,
            ask_sz: 20 + k as u32,
            bid_ct: 1,
            ask_ct: 2,
        };
    }
    levels[3].ask_sz = 0; // an emptied level is left out
    levels[7] = pair(("", 0, 0), ("", 0, 0));
    let mbp10 = |t, action: u8, levels| {
        RecordBuf::from(Mbp10Msg {
            hd: RecordHeader::new::<Mbp10Msg>(rtype::MBP_10, 1, a, t),
            price: px("100.01"),
            size: 5,
            action: action as c_char,
            side: b'B' as c_char,
            flags: flags(true),
            depth: 0,
            ts_recv: t,
            ts_in_delta: 0,
            sequence: 0,
            levels,
        })
    };
    let recs10 = [mbp10(T0, b'A', std::array::from_fn(|_| BidAskPair::default())), mbp10(T0 + 1, b'T', levels)];
    for zstd in [false, true] {
        let e = engine();
        replay(&e, opts(&write("mbp1", zstd, &meta(Schema::Mbp1, &[("AAPL", a)]), &recs1)));
        assert_eq!(last_book(&e, "AAPL"), (vec![lv("187.22", 200, 3)], vec![]));
        assert_eq!(prints(&e, "AAPL"), [(px("187.22"), 100, Some(Side::Sell))]);

        let e = engine();
        replay(&e, opts(&write("mbp10", zstd, &meta(Schema::Mbp10, &[("AAPL", a)]), &recs10)));
        let (bids, asks) = last_book(&e, "AAPL");
        let want_bids: Vec<_> = (0..7)
            .map(|k| BookLevel { price: Price(px("99.99") - k * px("0.01")), size: 10 + k as u64, orders: 1 })
            .collect();
        let want_asks: Vec<_> = (0..7)
            .filter(|&k| k != 3)
            .map(|k| BookLevel { price: Price(px("100.01") + k * px("0.01")), size: 20 + k as u64, orders: 2 })
            .collect();
        assert_eq!((bids, asks), (want_bids, want_asks));
        assert_eq!(prints(&e, "AAPL"), [(px("100.01"), 5, Some(Side::Buy))]);
    }
}

#[test]
fn feeds_dbn_trades_arrive_in_order_with_exact_prices() {
    let recs: Vec<_> = (0..40u32)
        .map(|k| {
            let (iid, side) = if k % 3 == 0 { (2, b'A') } else { (1, [b'B', b'N'][k as usize % 2]) };
            trade(T0 + u64::from(k) * 1000, iid, &format!("187.{:09}", 123_456_789 + k), 100 + k, side)
        })
        .collect();
    for zstd in [false, true] {
        let e = engine();
        let s = replay(&e, opts(&write("trades", zstd, &meta(Schema::Trades, &[("AAPL", 1), ("MSFT", 2)]), &recs)));
        assert_eq!((s.messages, s.published.trades), (40, 40));
        let want = |iid| {
            (0..40u32)
                .filter(|k| (k % 3 == 0) == (iid == 2))
                .map(|k| {
                    let side = if iid == 2 { Some(Side::Sell) } else { [Some(Side::Buy), None][k as usize % 2] };
                    (px("187.123456789") + i64::from(k), u64::from(100 + k), side)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(prints(&e, "AAPL"), want(1));
        assert_eq!(prints(&e, "MSFT"), want(2));
    }
}

#[test]
fn feeds_dbn_bars_are_events_with_exact_decimals() {
    let bar = |t, rt, o: &str, h: &str, l: &str, c: &str, v| {
        RecordBuf::from(OhlcvMsg {
            hd: RecordHeader::new::<OhlcvMsg>(rt, 1, 1, t),
            open: px(o),
            high: px(h),
            low: px(l),
            close: px(c),
            volume: v,
        })
    };
    for (schema, rt, step, interval) in
        [(Schema::Ohlcv1S, rtype::OHLCV_1S, SEC, 1), (Schema::Ohlcv1M, rtype::OHLCV_1M, 60 * SEC, 60)]
    {
        let recs = [
            bar(T0, rt, "187.23", "187.5", "187", "187.25", 1200),
            bar(T0 + step, rt, "187.25", "188.000000001", "186.999999999", "187.9", 3),
        ];
        for zstd in [false, true] {
            let e = engine();
            let path = write("bars", zstd, &meta(schema, &[("AAPL", 1)]), &recs);
            let r = DbnReplay::prepare(&e, opts(&path)).unwrap();
            assert!(e.topic("bars.AAPL").is_some(), "bars.AAPL exists before the first bar");
            r.run(&AtomicBool::new(false)).unwrap();
            std::fs::remove_file(path).unwrap();
            let got: Vec<_> = history(&e, "bars.AAPL")
                .into_iter()
                .map(|r| match r {
                    BinRecord::Event(ev) => (ev.event_type, ev.fields),
                    other => panic!("not an event: {other:?}"),
                })
                .collect();
            let f = |o, h, l, c, v| {
                (
                    "bar".to_owned(),
                    format!(r#"{{"open":{o},"high":{h},"low":{l},"close":{c},"volume":{v},"interval_s":{interval}}}"#),
                )
            };
            assert_eq!(
                got,
                [
                    f("187.23", "187.5", "187", "187.25", 1200),
                    f("187.25", "188.000000001", "186.999999999", "187.9", 3)
                ]
            );
            let BinRecord::Tick(t) = history(&e, "ticks.AAPL").pop().unwrap() else { panic!("tick") };
            assert_eq!((t.tick.price, t.tick.size), (Price(px("187.9")), 3), "ticks show the last close");
        }
    }
}

#[test]
fn feeds_dbn_symbols_filter_and_time_bounds() {
    let recs: Vec<_> = (0..6)
        .flat_map(|k| [trade(T0 + k * SEC, 1, &format!("10{k}"), 1, b'B'), trade(T0 + k * SEC, 2, "5", 1, b'A')])
        .collect();
    let m = meta(Schema::Trades, &[("AAPL", 1), ("MSFT", 2)]);

    let e = engine();
    let mut o = opts(&write("filter", false, &m, &recs));
    o.symbols = vec!["MSFT".to_owned()];
    replay(&e, o);
    assert!(e.topic("trades.AAPL").is_none() && e.topic("ticks.AAPL").is_none(), "AAPL is filtered out");
    assert_eq!(prints(&e, "MSFT").len(), 6);

    let e = engine();
    let mut o = opts(&write("window", true, &m, &recs));
    let at = |k: u64| TimeBound::Instant { unix_ns: (T0 + k * SEC) as i64, tod_ns: 0 };
    (o.start, o.end) = (Some(at(2)), Some(at(4)));
    replay(&e, o);
    assert_eq!(prints(&e, "AAPL"), [(px("102"), 1, Some(Side::Buy)), (px("103"), 1, Some(Side::Buy))]);

    // A time of day is on the first record's UTC day: 13:30:01 to 13:30:03.
    let e = engine();
    let mut o = opts(&write("tod", false, &m, &recs));
    (o.start, o.end) = (Some("13:30:01".parse().unwrap()), Some("13:30:03".parse().unwrap()));
    replay(&e, o);
    assert_eq!(prints(&e, "AAPL").iter().map(|p| p.0).collect::<Vec<_>>(), [px("101"), px("102")]);
}

#[test]
fn feeds_dbn_start_builds_books_without_publishing() {
    let recs = [
        mbo(T0, 1, b'A', b'B', 1, px("10"), 100, true),
        mbo(T0 + SEC, 1, b'T', b'A', 0, px("10"), 5, true),
        mbo(T0 + SEC, 1, b'C', b'B', 1, px("10"), 5, true),
        mbo(T0 + 3 * SEC, 1, b'T', b'A', 0, px("10"), 7, true),
    ];
    let e = engine();
    let mut o = opts(&write("start", false, &meta(Schema::Mbo, &[("AAPL", 1)]), &recs));
    o.start = Some(TimeBound::Instant { unix_ns: (T0 + 2 * SEC) as i64, tod_ns: 0 });
    let s = replay(&e, o);
    assert_eq!((s.messages, s.book_errors), (4, 0));
    assert_eq!(prints(&e, "AAPL"), [(px("10"), 7, Some(Side::Sell))], "the print before --start is not published");
    assert_eq!(books(&e, "AAPL"), [(vec![lv("10", 95, 1)], vec![])], "one book: the state at --start");
}

#[test]
fn feeds_dbn_stream_symbol_mappings_and_unmapped_ids() {
    let no_symbology = MetadataBuilder::new()
        .dataset("XNAS.ITCH")
        .schema(Some(Schema::Trades))
        .start(T0)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let mapping =
        SymbolMappingMsg::new(5, T0, SType::RawSymbol, "TSLA", SType::InstrumentId, "TSLA", T0, T0 + 3600 * SEC)
            .unwrap();
    let recs = [RecordBuf::from(mapping), trade(T0 + 1, 5, "170.5", 3, b'B'), trade(T0 + 2, 6, "1.25", 4, b'A')];
    let e = engine();
    let s = replay(&e, opts(&write("mapping", false, &no_symbology, &recs)));
    assert_eq!(s.messages, 3);
    assert_eq!(prints(&e, "TSLA"), [(px("170.5"), 3, Some(Side::Buy))]);
    assert_eq!(prints(&e, "6"), [(px("1.25"), 4, Some(Side::Sell))], "an unmapped instrument goes by its id");
}

#[test]
fn feeds_dbn_loop_replays_again_until_stopped() {
    let recs: Vec<_> = (0..5u64).map(|k| trade(T0 + k, 1, &format!("1.{k}"), 1, b'B')).collect();
    let path = write("loop", false, &meta(Schema::Trades, &[("AAPL", 1)]), &recs);
    let e = engine();
    let mut o = opts(&path);
    o.looped = true;
    let r = DbnReplay::prepare(&e, o).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let run = std::thread::spawn({
        let stop = stop.clone();
        move || r.run(&stop).unwrap()
    });
    let topic = e.topic("trades.AAPL").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while topic.head() < 15 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let s = run.join().unwrap();
    std::fs::remove_file(path).unwrap();
    assert!(s.loops >= 2, "{s:?}");
    let got = prints(&e, "AAPL");
    assert!(got.len() >= 15);
    for (k, p) in got.iter().take(15).enumerate() {
        assert_eq!(p.0, px(&format!("1.{}", k % 5)), "pass after pass, in file order");
    }
}

fn mbo_file(zstd: bool) -> (PathBuf, Vec<u8>) {
    let recs: Vec<_> = (0..8).map(|k| mbo(T0 + k, 1, b'A', b'B', k + 1, px("10") + k as i64, 10, true)).collect();
    let path = write("bytes", zstd, &meta(Schema::Mbo, &[("AAPL", 1)]), &recs);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Replays `bytes` into a small engine (thousands of these run in a test) and says what it did.
fn replay_bytes(name: &str, bytes: &[u8]) -> Result<MdSummary, DbnError> {
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    let ring = RingConfig { capacity: 16, slot_bytes: 512 };
    let e = Engine::new(EngineConfig { epoch: 1, ring, ..Default::default() });
    let r = DbnReplay::prepare(&e, MdOptions { depth: 1, ..opts(&path) }).and_then(|r| r.run(&AtomicBool::new(false)));
    std::fs::remove_file(path).unwrap();
    r
}

const MBO_LEN: usize = std::mem::size_of::<MboMsg>();

#[test]
fn feeds_dbn_truncated_file_ends_cleanly() {
    let (path, bytes) = mbo_file(false);
    std::fs::remove_file(path).unwrap();
    let last = bytes.len() - MBO_LEN;
    let s = replay_bytes("cut.dbn", &bytes[..bytes.len() - 10]).unwrap();
    assert_eq!((s.messages, s.truncated_at, s.skipped), (7, Some(last as u64), 0));

    // zstd: the cut is in the compressed stream; what decompressed before it is replayed. Cut at the frame's
    // end, every record decompressed and the missing end is still reported.
    let (path, z) = mbo_file(true);
    std::fs::remove_file(path).unwrap();
    let s = replay_bytes("end.dbn.zst", &z[..z.len() - 3]).unwrap();
    assert_eq!((s.messages, s.truncated_at), (8, Some(bytes.len() as u64)), "{s:?}");
    // A cut inside the stream: zstd decompresses whole blocks (up to 128 KiB), so the file needs a few.
    let mut x = 1u64;
    let recs: Vec<_> = (0..6000u64)
        .map(|k| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            mbo(T0 + k, 1, b'A', b'B', x, (x >> 20) as i64, (x >> 40) as u32, true)
        })
        .collect();
    let path = write("big", true, &meta(Schema::Mbo, &[("AAPL", 1)]), &recs);
    let z = std::fs::read(&path).unwrap();
    std::fs::remove_file(path).unwrap();
    let s = replay_bytes("cut-inside.dbn.zst", &z[..z.len() * 3 / 4]).unwrap();
    assert!(s.truncated_at.is_some() && s.messages > 0 && s.messages < 6000 && s.skipped == 0, "{s:?}");
}

#[test]
fn feeds_dbn_corrupt_record_is_reported_with_its_offset() {
    let (path, bytes) = mbo_file(false);
    std::fs::remove_file(path).unwrap();
    let n = bytes.len();
    let rec = |k: usize| n - (8 - k) * MBO_LEN;
    // A record of another type: skipped, the rest replays.
    let mut b = bytes.clone();
    b[rec(3) + 1] = 0xEE;
    let s = replay_bytes("rtype.dbn", &b).unwrap();
    assert_eq!((s.messages, s.skipped, s.first_errors[0].offset), (7, 1, rec(3) as u64), "{s:?}");
    assert!(
        s.first_errors[0].to_string().ends_with("record type 0xee of 56 bytes is not of schema mbo"),
        "{}",
        s.first_errors[0]
    );
    // A length shorter than a header: nothing after it can be framed, the pass ends there.
    let mut b = bytes;
    b[rec(5)] = 1;
    let s = replay_bytes("length.dbn", &b).unwrap();
    assert_eq!((s.messages, s.skipped, s.first_errors[0].offset), (5, 1, rec(5) as u64), "{s:?}");
}

#[test]
fn feeds_dbn_refuses_what_it_cannot_replay() {
    let err = |name: &str, bytes: &[u8]| replay_bytes(name, bytes).unwrap_err();
    let e = err("notes.dbn", b"time,symbol,price\n1,AAPL,1\n");
    assert!(matches!(e, DbnError::NotDbn { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("notes.dbn: not a readable DBN file: ") && msg.ends_with("invalid DBN header"), "{msg}");
    assert!(err("empty.dbn", b"").to_string().ends_with("not a readable DBN file: the file is empty"));
    let (path, bytes) = mbo_file(false);
    std::fs::remove_file(path).unwrap();
    assert!(err("header.dbn", &bytes[..20]).to_string().ends_with("the file ends inside the header"));
    let mut v4 = bytes.clone();
    v4[3] = 4;
    assert!(matches!(err("v4.dbn", &v4), DbnError::NotDbn { .. }));

    let path = write("stats", false, &meta(Schema::Statistics, &[]), &[]);
    let e = DbnReplay::prepare(&engine(), opts(&path)).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(e, DbnError::Schema { schema: Some(Schema::Statistics), .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.ends_with(
            "DBN schema statistics is not replayed; replay takes mbo, mbp-1, mbp-10, trades, ohlcv-1s and ohlcv-1m"
        ),
        "{msg}"
    );
}

/// Every prefix of a file and every single-byte corruption of it: an error or a summary, never a panic.
#[test]
fn feeds_dbn_never_panics_on_damaged_files() {
    for zstd in [false, true] {
        let (path, bytes) = mbo_file(zstd);
        std::fs::remove_file(path).unwrap();
        for cut in 0..bytes.len() {
            let _ = replay_bytes("prefix.dbn", &bytes[..cut]);
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0xA5;
            let _ = replay_bytes("flip.dbn", &b);
        }
    }
}
