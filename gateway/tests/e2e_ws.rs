//! End-to-end: the real server on an ephemeral port, real WebSocket clients.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn e2e_subscribe_gets_ack_snapshot_then_increasing_seqs() {
    let server = Server::start(&["--tick-rate", "5000"]);
    let mut ws = connect(&server, None).await;
    send(&mut ws, json!({"op":"subscribe","id":1,"topics":["ticks.AAPL","ticks.MSFT"]})).await;
    let first = next_batch(&mut ws, 5).await;
    assert_eq!(first[0], json!({"type":"ack","id":1}));
    let mut last = std::collections::HashMap::new();
    let mut n_ticks = 0;
    let mut events: Vec<Value> = first[1..].to_vec();
    while n_ticks < 100 {
        for e in events.drain(..) {
            let topic = e["topic"].as_str().unwrap().to_owned();
            match e["type"].as_str().unwrap() {
                "snapshot" => {
                    assert!(!last.contains_key(&topic), "snapshot comes first, once");
                    assert_eq!(e["recovered"], true);
                    last.insert(topic, seq(&e));
                }
                "tick" => {
                    let prev = last.get(&topic).copied().expect("snapshot before the first tick");
                    assert_eq!(seq(&e), prev + 1, "{topic}: seqs increase by one");
                    assert!(e["price"].as_f64().unwrap() > 0.0);
                    assert_eq!(e["symbol"], topic.trim_start_matches("ticks."));
                    assert!(e["bid"].as_f64().unwrap() < e["ask"].as_f64().unwrap());
                    last.insert(topic, seq(&e));
                    n_ticks += 1;
                }
                other => panic!("unexpected event {other}: {e}"),
            }
        }
        events = next_batch(&mut ws, 5).await;
    }
    send(&mut ws, json!({"op":"ping","id":7})).await;
    events_until(&mut ws, 5, |e| e == &json!({"type":"pong","id":7})).await;
}

#[tokio::test]
async fn e2e_resume_with_since_delivers_exactly_the_missed_ticks() {
    let server = Server::start(&["--tick-rate", "2000"]);
    let mut ws = connect(&server, None).await;
    send(&mut ws, json!({"op":"subscribe","id":1,"topics":["ticks.NVDA"]})).await;
    let evs = events_until(&mut ws, 10, |e| e["type"] == "tick" && seq(e) > 0).await;
    let last = evs.iter().rev().find(|e| e["type"] == "tick").unwrap().clone();
    let (epoch, last_seq) = (last["epoch"].as_u64().unwrap(), seq(&last));
    drop(ws);
    // Wait until the topic moved on by at least 10 ticks.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = http_get(server.addr, "/api/quotes/NVDA").await;
        let q: Value = serde_json::from_str(&body).unwrap();
        if seq(&q) >= last_seq + 10 {
            break;
        }
        assert!(Instant::now() < deadline, "topic did not advance");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = connect(&server, None).await;
    send(
        &mut ws,
        json!({"op":"subscribe","id":2,"topics":["ticks.NVDA"],"since":{"ticks.NVDA":{"epoch":epoch,"seq":last_seq}}}),
    )
    .await;
    let evs = events_until(&mut ws, 10, |e| e["type"] == "tick" && seq(e) >= last_seq + 10).await;
    assert_eq!(evs[0], json!({"type":"ack","id":2}));
    let seqs: Vec<u64> = evs[1..]
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "tick", "a resumed subscription gets no snapshot: {e}");
            seq(e)
        })
        .collect();
    let want: Vec<u64> = (last_seq + 1..=*seqs.last().unwrap()).collect();
    assert_eq!(seqs, want, "exactly the missed ticks, in order");

    // A stale epoch cannot be resumed: snapshot marked recovered:false.
    send(&mut ws, json!({"op":"unsubscribe","id":3,"topics":["ticks.NVDA"]})).await;
    events_until(&mut ws, 5, |e| e == &json!({"type":"ack","id":3})).await;
    send(&mut ws, json!({"op":"subscribe","id":4,"topics":["ticks.NVDA"],"since":{"ticks.NVDA":{"epoch":1,"seq":5}}}))
        .await;
    let evs = events_until(&mut ws, 5, |e| e["type"] == "snapshot").await;
    assert_eq!(evs.last().unwrap()["recovered"], false);
}

#[tokio::test]
async fn e2e_binary_subprotocol_sends_binary_records() {
    use futures_util::StreamExt;
    use marquee_protocol::decode::{BinRecord, decode_bin_batch, record};
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start(&["--tick-rate", "5000"]);
    let mut ws = connect(&server, Some("marquee.bin")).await;
    send(&mut ws, json!({"op":"subscribe","id":5,"topics":["ticks.TSLA"]})).await;
    let mut recs = Vec::new();
    while recs.iter().filter(|r| matches!(r, BinRecord::Tick(t) if t.record_type == record::EVENT)).count() < 5 {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Binary(b) = msg {
            recs.extend(decode_bin_batch(&b).expect("valid binary batch"));
        }
    }
    assert_eq!(recs[0], BinRecord::Ack(5));
    let BinRecord::Tick(snap) = &recs[1] else { panic!("{:?}", recs[1]) };
    assert_eq!((snap.record_type, snap.recovered, snap.topic.as_str()), (record::SNAPSHOT, true, "ticks.TSLA"));
    let mut prev = snap.seq;
    for r in &recs[2..] {
        let BinRecord::Tick(t) = r else { panic!("{r:?}") };
        assert_eq!(t.seq, prev + 1);
        assert!(t.tick.bid.unwrap() < t.tick.ask.unwrap());
        prev = t.seq;
    }
}

#[tokio::test]
async fn e2e_stalled_reader_does_not_delay_others_and_gets_gaps() {
    let server = Server::start(&["--tick-rate", "20000", "--max-pending", "2000"]);
    let all: Vec<String> = {
        let (_, _, body) = http_get(server.addr, "/api/symbols").await;
        serde_json::from_str::<Vec<String>>(&body).unwrap().into_iter().map(|s| format!("ticks.{s}")).collect()
    };
    // `stalled` takes every symbol (20,000 ticks/s) and then reads nothing for 4 s; `reader` watches five symbols
    // (about 2,000 ticks/s) and keeps up.
    let mut stalled = connect_small_rcvbuf(&server).await;
    send(&mut stalled, json!({"op":"subscribe","id":1,"topics":all})).await;
    let mut reader = connect(&server, None).await;
    send(&mut reader, json!({"op":"subscribe","id":1,"topics":all[..5]})).await;
    let start = Instant::now();
    let (mut n, mut worst_ms) = (0u64, 0f64);
    let mut windows = [0u64; 8];
    while start.elapsed() < Duration::from_secs(4) {
        for e in next_batch(&mut reader, 2).await {
            if e["type"] == "tick" {
                n += 1;
                let lat_ms = (now_ns() - e["ts"].as_i64().unwrap()) as f64 / 1e6;
                worst_ms = worst_ms.max(lat_ms);
                windows[(start.elapsed().as_millis() / 500).min(7) as usize] += 1;
            }
        }
    }
    assert!(windows.iter().all(|&w| w > 0), "the reader got ticks in every half second: {windows:?}");
    assert!(n > 1_000, "the reader kept receiving ({n} ticks in 4 s)");
    assert!(worst_ms < 1000.0, "the reader was not held up (worst latency {worst_ms:.1} ms)");
    // The stalled client now reads: every topic's stream must stay continuous (each tick follows the previous
    // seq, or a gap covers the skipped ones), and conflation must have produced at least one gap.
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let (mut n_gaps, mut after_gap) = (0, 0);
    while n_gaps == 0 || after_gap < 500 {
        for e in next_batch(&mut stalled, 30).await {
            let Some(topic) = e["topic"].as_str().map(str::to_owned) else { continue };
            match e["type"].as_str().unwrap() {
                "snapshot" => {
                    last.insert(topic, seq(&e));
                }
                "tick" => {
                    assert_eq!(seq(&e), last[&topic] + 1, "{topic}: tick after {}", last[&topic]);
                    last.insert(topic, seq(&e));
                }
                "gap" => {
                    assert_eq!(e["from"].as_u64().unwrap(), last[&topic] + 1, "{e}");
                    assert!(e["to"].as_u64().unwrap() >= e["from"].as_u64().unwrap());
                    last.insert(topic, e["to"].as_u64().unwrap());
                    n_gaps += 1;
                }
                other => panic!("unexpected {other}"),
            }
            if n_gaps > 0 {
                after_gap += 1;
            }
        }
    }
}

#[tokio::test]
async fn e2e_thousand_clients_all_receive_a_published_tick() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let server = Server::start(&["--tick-rate", "500"]);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let url = server.ws_url();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
            drop(permit);
            send(&mut ws, json!({"op":"subscribe","id":i,"topics":["ticks.AAPL"]})).await;
            // The snapshot and the first live tick may share a batch: collect up to the tick.
            let evs = events_until(&mut ws, 30, |e| e["type"] == "tick").await;
            let snap = evs.iter().find(|e| e["type"] == "snapshot").expect("a snapshot before the first tick");
            assert_eq!(seq(evs.last().unwrap()), seq(snap) + 1);
            ws
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.expect("every client received a live tick"));
    }
    let (_, _, metrics) = http_get(server.addr, "/metrics").await;
    assert!(metrics.contains("marquee_connections 1000\n"), "{metrics}");
}
