//! End-to-end: `marquee replay` of the sample CSV delivers every row, in order, with exact prices.

mod common;

use common::*;
use marquee_engine::Price;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The sample's rows per symbol as (price, size), read with a plain split (independent of the feeds crate).
/// (price, size) of each row, per symbol.
type Rows = HashMap<String, Vec<(Price, u64)>>;

fn expected_rows() -> (Vec<String>, Rows) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../feeds/data/sample.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (sym, price, size) = (col("symbol"), col("price"), col("size"));
    let mut order = Vec::new();
    let mut rows = Rows::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        if !rows.contains_key(f[sym]) {
            order.push(f[sym].to_owned());
        }
        rows.entry(f[sym].to_owned()).or_default().push((f[price].parse().unwrap(), f[size].parse().unwrap()));
    }
    (order, rows)
}

#[tokio::test]
async fn e2e_replay_sample_csv_delivers_every_row_in_order_with_exact_prices() {
    let (symbols, want) = expected_rows();
    assert!(want.values().map(Vec::len).sum::<usize>() >= 100);
    let server = Server::start(&["replay", "../feeds/data/sample.csv", "--speed", "max"]);
    let (_, _, body) = http_get(server.addr, "/api/symbols").await;
    let mut listed: Vec<String> = serde_json::from_str(&body).unwrap();
    listed.sort();
    let mut sorted = symbols.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    // Wait until the replay is complete (every topic at its row count), then resume from seq 0 to get it all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut epoch = 0;
    for s in &symbols {
        loop {
            let (status, _, body) = http_get(server.addr, &format!("/api/quotes/{s}")).await;
            if status == 200 {
                let q: Value = serde_json::from_str(&body).unwrap();
                epoch = q["epoch"].as_u64().unwrap();
                if q["seq"].as_u64().unwrap() == want[s].len() as u64 {
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "replay of {s} did not finish");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let topics: Vec<String> = symbols.iter().map(|s| format!("ticks.{s}")).collect();
    let since: serde_json::Map<String, Value> =
        topics.iter().map(|t| (t.clone(), json!({"epoch": epoch, "seq": 0}))).collect();
    let mut ws = connect(&server, None).await;
    send(&mut ws, json!({"op":"subscribe","id":1,"topics":topics,"since":since})).await;
    let total: usize = want.values().map(Vec::len).sum();
    let mut got: HashMap<String, Vec<(u64, Price, u64)>> = HashMap::new();
    let mut n = 0;
    while n < total {
        for e in next_batch(&mut ws, 10).await {
            if e["type"] == "ack" {
                continue;
            }
            assert_eq!(e["type"], "tick", "{e}");
            let price: Price = e["price"].to_string().parse().unwrap();
            got.entry(e["symbol"].as_str().unwrap().to_owned()).or_default().push((
                e["seq"].as_u64().unwrap(),
                price,
                e["size"].as_u64().unwrap(),
            ));
            n += 1;
        }
    }
    for s in &symbols {
        let rows = &got[s];
        let seqs: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=want[s].len() as u64).collect::<Vec<_>>(), "{s}: every row, in order");
        let values: Vec<(Price, u64)> = rows.iter().map(|r| (r.1, r.2)).collect();
        assert_eq!(values, want[s], "{s}: exact prices and sizes");
    }
}

/// The top 10 levels per side after every message of an ITCH file, by a naive model: a map of resting orders,
/// aggregated by price (independent of the feeds crate's book; only its parser is shared).
fn itch_reference(file: &[u8]) -> HashMap<String, (Vec<Value>, Vec<Value>)> {
    use marquee_feeds::itch::{self, Message};
    let mut orders: HashMap<u64, (String, bool, u32, u32)> = HashMap::new();
    let mut r = itch::Reader::new(file);
    while let Some(Ok((_, bytes))) = r.next_message() {
        let reduce = |orders: &mut HashMap<u64, (String, bool, u32, u32)>, id: u64, by: u32| {
            let o = orders.get_mut(&id).unwrap();
            o.3 -= by.min(o.3);
            if o.3 == 0 {
                orders.remove(&id);
            }
        };
        match itch::parse(bytes).unwrap() {
            Message::AddOrder(a) => {
                orders.insert(a.order_ref, (a.stock().to_owned(), a.side == b'B', a.price, a.shares));
            }
            Message::Executed { order_ref, shares, .. }
            | Message::ExecutedWithPrice { order_ref, shares, .. }
            | Message::Cancel { order_ref, shares, .. } => reduce(&mut orders, order_ref, shares),
            Message::Delete { order_ref, .. } => reduce(&mut orders, order_ref, u32::MAX),
            Message::Replace { old_ref, new_ref, shares, price, .. } => {
                let (sym, buy, ..) = orders.remove(&old_ref).unwrap();
                orders.insert(new_ref, (sym, buy, price, shares));
            }
            _ => {}
        }
    }
    let mut levels: HashMap<(String, bool), std::collections::BTreeMap<u32, (u64, u64)>> = HashMap::new();
    for (sym, buy, price, shares) in orders.into_values() {
        let l = levels.entry((sym, buy)).or_default().entry(price).or_default();
        l.0 += u64::from(shares);
        l.1 += 1;
    }
    let mut out: HashMap<String, (Vec<Value>, Vec<Value>)> = HashMap::new();
    for ((sym, buy), m) in levels {
        let as_json = |(p, (size, n)): (&u32, &(u64, u64))| {
            // The decimal as the server writes it (`76`, not `76.0`), read back as a JSON number.
            let price: Value = serde_json::from_str(&Price(i64::from(*p) * 100_000).to_string()).unwrap();
            json!([price, size, n])
        };
        let side: Vec<Value> =
            if buy { m.iter().rev().take(10).map(as_json).collect() } else { m.iter().take(10).map(as_json).collect() };
        let e = out.entry(sym).or_default();
        if buy {
            e.0 = side;
        } else {
            e.1 = side;
        }
    }
    out
}

#[tokio::test]
async fn e2e_replay_itch_books_match_a_reference_at_the_end() {
    let mut g = marquee_feeds::itch_gen::ItchGenerator::new(11, 5, 10_000);
    let mut file = Vec::new();
    g.write_header(&mut file);
    g.write_messages(&mut file, 50_000);
    let path = std::env::temp_dir().join(format!("marquee-e2e-{}.itch", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let want = itch_reference(&file);
    let syms: Vec<String> = g.symbols().iter().map(|s| s.to_string()).collect();
    let line = replay_and_match_books(&path, &syms, &want).await;
    assert!(line.contains("50006 messages") && line.contains(" 0 malformed skipped"), "{line}");
}

/// The instruments of the DBN test: instrument id, symbol, a starting mid and a tick, in DBN units (1e-9).
const DBN_INSTRUMENTS: [(u32, &str, i64, i64); 3] = [
    (101, "AAPL", 187_250_000_000, 10_000_000),
    (202, "ESM4", 5_200_000_000_000, 250_000_000),
    (303, "SIRI", 3_500_000_000, 100_000),
];

/// A deterministic random MBO stream over [`DBN_INSTRUMENTS`]: adds, partial and full cancels, modifies (price
/// and size), trades and fills, each record its own event (`F_LAST`), `ts_recv` increasing. Cancels, modifies
/// and fills name resting orders only.
fn dbn_mbo_stream(seed: u64, n: usize) -> Vec<dbn::MboMsg> {
    use dbn::{FlagSet, MboMsg, RecordHeader, rtype};
    let mut state = seed;
    let mut rnd = move |below: u64| {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below.max(1)
    };
    let mut mids: Vec<i64> = DBN_INSTRUMENTS.iter().map(|i| i.2).collect();
    // Resting orders: id -> (instrument index, side, price, size); `live` lists their ids.
    let mut resting: HashMap<u64, (usize, u8, i64, u32)> = HashMap::new();
    let mut live: Vec<u64> = Vec::new();
    let mut next_id = 1_000_000u64;
    let mut ts_recv = 1_710_509_400_000_000_000u64; // 2024-03-15 13:30:00 UTC
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        ts_recv += 1 + rnd(50_000);
        let roll = if live.len() < 50 { 0 } else { rnd(100) };
        let (i, action, side, id, price, size) = if roll < 35 {
            let i = rnd(3) as usize;
            let tick = DBN_INSTRUMENTS[i].3;
            mids[i] += (rnd(3) as i64 - 1) * tick;
            let away = (rnd(8) * rnd(8)) as i64 * tick;
            let (side, price) = if rnd(2) == 0 { (b'B', mids[i] - away) } else { (b'A', mids[i] + tick + away) };
            let size = if rnd(4) == 0 { 1 + rnd(99) as u32 } else { 100 * (1 + rnd(10) as u32) };
            next_id += 1 + rnd(7);
            resting.insert(next_id, (i, side, price, size));
            live.push(next_id);
            (i, b'A', side, next_id, price, size)
        } else if roll < 45 {
            // A partial cancel (a full one when a single unit rests): `size` is the amount cancelled.
            let at = rnd(live.len() as u64) as usize;
            let id = live[at];
            let o = resting.get_mut(&id).unwrap();
            let by = if o.3 > 1 { 1 + rnd(u64::from(o.3 - 1)) as u32 } else { 1 };
            o.3 -= by;
            let (i, side, price, left) = *o;
            if left == 0 {
                resting.remove(&id);
                live.swap_remove(at);
            }
            (i, b'C', side, id, price, by)
        } else if roll < 65 {
            let id = live.swap_remove(rnd(live.len() as u64) as usize);
            let (i, side, price, size) = resting.remove(&id).unwrap();
            (i, b'C', side, id, price, size)
        } else if roll < 80 {
            // Price and size both become the new ones: up, down or the same.
            let id = live[rnd(live.len() as u64) as usize];
            let o = resting.get_mut(&id).unwrap();
            let tick = DBN_INSTRUMENTS[o.0].3;
            o.2 += (rnd(5) as i64 - 2) * tick;
            o.3 = 1 + rnd(1000) as u32;
            let (i, side, price, size) = *o;
            (i, b'M', side, id, price, size)
        } else if roll < 90 {
            // A trade: the aggressor's side, or none; no book change.
            let i = rnd(3) as usize;
            (i, b'T', [b'A', b'B', b'N'][rnd(3) as usize], 0, mids[i], 1 + rnd(500) as u32)
        } else {
            // A fill of a resting order: no book change (its cancel would follow in a real feed).
            let id = live[rnd(live.len() as u64) as usize];
            let (i, side, price, size) = resting[&id];
            (i, b'F', side, id, price, 1 + rnd(u64::from(size)) as u32)
        };
        let ts_event = ts_recv - 1_000 - rnd(20_000);
        out.push(MboMsg {
            hd: RecordHeader::new::<MboMsg>(rtype::MBO, 1, DBN_INSTRUMENTS[i].0, ts_event),
            order_id: id,
            price,
            size,
            flags: FlagSet::empty().set_last(),
            channel_id: 0,
            action: action as std::ffi::c_char,
            side: side as std::ffi::c_char,
            ts_recv,
            ts_in_delta: 0,
            sequence: out.len() as u32 + 1,
        });
    }
    out
}

/// Writes `records` as a `.dbn.zst` file whose metadata maps each of [`DBN_INSTRUMENTS`] to its symbol.
fn write_dbn_mbo(path: &std::path::Path, records: &[dbn::MboMsg]) {
    use dbn::encode::{DbnEncoder, EncodeRecord};
    use dbn::{MappingInterval, Metadata, MetadataBuilder, SType, Schema, SymbolMapping};
    let day = MetadataBuilder::new()
        .dataset("XNAS.ITCH")
        .schema(Some(Schema::Mbo))
        .start(records[0].ts_recv)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    let (d0, d1) = (day.start().date(), day.start().date().next_day().unwrap());
    let mappings = DBN_INSTRUMENTS
        .iter()
        .map(|&(iid, sym, ..)| SymbolMapping {
            raw_symbol: sym.to_owned(),
            intervals: vec![MappingInterval { start_date: d0, end_date: d1, symbol: iid.to_string() }],
        })
        .collect();
    let meta = Metadata { symbols: DBN_INSTRUMENTS.iter().map(|i| i.1.to_owned()).collect(), mappings, ..day };
    let mut enc = DbnEncoder::with_zstd(std::fs::File::create(path).unwrap(), &meta).unwrap();
    records.iter().for_each(|r| enc.encode_record(r).unwrap());
}

/// The top 10 levels per side after every record of an MBO stream, by a naive model: a map of resting orders,
/// aggregated by price (independent of the feeds crate).
fn dbn_mbo_reference(records: &[dbn::MboMsg]) -> HashMap<String, (Vec<Value>, Vec<Value>)> {
    let mut orders: HashMap<u64, (u32, bool, i64, u64)> = HashMap::new();
    for m in records {
        match m.action as u8 {
            b'A' => {
                let o = (m.hd.instrument_id, m.side as u8 == b'B', m.price, u64::from(m.size));
                assert!(orders.insert(m.order_id, o).is_none(), "order ids are unique");
            }
            b'C' => {
                let o = orders.get_mut(&m.order_id).unwrap();
                o.3 -= u64::from(m.size);
                if o.3 == 0 {
                    orders.remove(&m.order_id);
                }
            }
            b'M' => {
                let o = orders.get_mut(&m.order_id).unwrap();
                (o.2, o.3) = (m.price, u64::from(m.size));
            }
            _ => {}
        }
    }
    let mut levels: HashMap<(u32, bool), std::collections::BTreeMap<i64, (u64, u64)>> = HashMap::new();
    for (iid, buy, price, size) in orders.into_values() {
        let l = levels.entry((iid, buy)).or_default().entry(price).or_default();
        l.0 += size;
        l.1 += 1;
    }
    let mut out = HashMap::new();
    for &(iid, sym, ..) in &DBN_INSTRUMENTS {
        // The shortest decimal, as JSON reads it: `187` is an integer, `187.03` a float.
        let as_json =
            |(p, (size, n)): (&i64, &(u64, u64))| json!([Price(*p).to_string().parse::<Value>().unwrap(), size, n]);
        let (bids, asks) = (&levels[&(iid, true)], &levels[&(iid, false)]);
        let bids = bids.iter().rev().take(10).map(as_json).collect();
        let asks = asks.iter().take(10).map(as_json).collect();
        out.insert(sym.to_owned(), (bids, asks));
    }
    out
}

#[tokio::test]
async fn e2e_replay_dbn_mbo_books_match_a_reference_at_the_end() {
    let records = dbn_mbo_stream(7, 20_000);
    for a in [b'A', b'C', b'M', b'T', b'F'] {
        assert!(records.iter().filter(|m| m.action as u8 == a).count() > 1000, "{} is exercised", a as char);
    }
    let path = std::env::temp_dir().join(format!("marquee-e2e-{}.mbo.dbn.zst", std::process::id()));
    write_dbn_mbo(&path, &records);
    let want = dbn_mbo_reference(&records);
    assert!(want.values().all(|(b, a)| b.len() == 10 && a.len() == 10), "every book is ten levels deep");
    let syms: Vec<String> = DBN_INSTRUMENTS.iter().map(|i| i.1.to_owned()).collect();
    let line = replay_and_match_books(&path, &syms, &want).await;
    let clean = [" 0 malformed skipped", " 0 unknown-order references"];
    assert!(line.contains("20000 messages") && clean.iter().all(|c| line.contains(c)), "{line}");
}

/// Replays `path` at `--speed max` in the real server, then checks that it lists exactly `symbols` and that a
/// WebSocket client's snapshot of each `book.<SYMBOL>` is `want`'s (bids, asks). Removes the file; returns the
/// server's "replay finished" line.
async fn replay_and_match_books(
    path: &std::path::Path,
    symbols: &[String],
    want: &HashMap<String, (Vec<Value>, Vec<Value>)>,
) -> String {
    let server = Server::start(&["replay", path.to_str().unwrap(), "--speed", "max"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let finished = loop {
        let line = server.log.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).unwrap();
        if line.contains("replay finished") {
            break line;
        }
    };
    let _ = std::fs::remove_file(path);
    let (_, _, body) = http_get(server.addr, "/api/symbols").await;
    let mut listed: Vec<String> = serde_json::from_str(&body).unwrap();
    listed.sort();
    let mut syms = symbols.to_vec();
    syms.sort();
    assert_eq!(listed, syms);

    let mut ws = connect(&server, None).await;
    let topics: Vec<String> = syms.iter().map(|s| format!("book.{s}")).collect();
    send(&mut ws, json!({"op":"subscribe","id":1,"topics":topics})).await;
    let mut seen = 0;
    while seen < syms.len() {
        for e in next_batch(&mut ws, 10).await {
            if e["type"] != "snapshot" {
                continue;
            }
            assert_eq!(e["event"], "book", "{e}");
            let sym = e["symbol"].as_str().unwrap();
            let (bids, asks) = &want[sym];
            assert_eq!(e["bids"].as_array().unwrap(), bids, "{sym} bids");
            assert_eq!(e["asks"].as_array().unwrap(), asks, "{sym} asks");
            seen += 1;
        }
    }
    finished
}
