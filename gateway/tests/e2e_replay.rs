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
