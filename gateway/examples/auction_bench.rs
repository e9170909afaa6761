//! Auction benchmark (for the loadgen `auction` scenario to pick up): how long from `POST /api/lots/{id}/bids` to
//! the pushed `bid_result`, against the same bid followed by polling `GET /api/bids/{key}` every 100 ms and every
//! 1 s; and how many bids per second the journal sustains with its fsync on.
//!
//! ```sh
//! cargo run --release -- --bid-rate 1000000 --bid-burst 1000000 &
//! cargo run --release -p marquee-gateway --example auction_bench -- --url http://127.0.0.1:8080
//! ```
//!
//! Push latency is measured from each bid's *scheduled* send time at a constant rate (no coordinated omission).
//! Prints a Markdown report. Needs a server with the demo lots (the default) and no effective bid rate limit.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    addr: SocketAddr,
    users: usize,
    rate: f64,
    secs: u64,
    poll_bids: usize,
    clients: usize,
}

fn parse_args() -> Args {
    let mut a =
        Args { addr: "127.0.0.1:8080".parse().unwrap(), users: 20, rate: 200.0, secs: 10, poll_bids: 50, clients: 32 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--url" => {
                a.addr = v.trim_start_matches("http://").trim_end_matches('/').parse().expect("--url http://HOST:PORT")
            }
            "--users" => a.users = v.parse().expect("--users N"),
            "--rate" => a.rate = v.parse().expect("--rate BIDS_PER_S"),
            "--secs" => a.secs = v.parse().expect("--secs N"),
            "--poll-bids" => a.poll_bids = v.parse().expect("--poll-bids N"),
            "--clients" => a.clients = v.parse().expect("--clients N"),
            other => panic!("unknown flag {other}; flags: --url --users --rate --secs --poll-bids --clients"),
        }
    }
    a
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(k) = key {
        req.push_str(&format!("Idempotency-Key: {k}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// A Markdown row with the sample's percentiles, in ms.
fn summary(name: &str, mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return format!("| {name} | 0 | – | – | – | – |");
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!("| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |", v.len(), p(0.5), p(0.99), p(0.999), v[v.len() - 1])
}

/// Amounts above every earlier bid (step 100, above any increment), so bids pass the increment check on any lot.
static NEXT_AMOUNT: AtomicU64 = AtomicU64::new(10_000);
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn next_bid() -> (String, String) {
    let amount = format!("{}.00", NEXT_AMOUNT.fetch_add(100, Ordering::Relaxed));
    let key = format!("bench-{}-{}", std::process::id(), NEXT_KEY.fetch_add(1, Ordering::Relaxed));
    (amount, key)
}

async fn open_lots(addr: SocketAddr) -> Vec<String> {
    let (_, lots) = http(addr, "GET", "/api/lots", None, None, "").await.expect("GET /api/lots");
    let lots = lots.as_array().cloned().unwrap_or_default();
    lots.iter().filter(|l| l["state"] == "open").filter_map(|l| l["lot"].as_str().map(str::to_owned)).collect()
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(addr).await else { return 0.0 };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    if s.write_all(req.as_bytes()).await.is_err() || s.read_to_string(&mut buf).await.is_err() {
        return 0.0;
    }
    let prefix = format!("{name} ");
    buf.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// Phase 1: bids at a constant rate; latency from each bid's scheduled time to its pushed `bid_result`.
async fn push_phase(a: &Args, users: &[(String, String)], lots: &[String]) -> (u64, u64, Vec<f64>) {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let push_lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    for (name, token) in users {
        let url = format!("ws://{}/ws?access_token={token}", a.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
        let sub = json!({"op":"subscribe","id":1,"topics":[format!("users.{name}")]});
        ws.send(Message::text(sub.to_string())).await.expect("subscribe");
        let (sent, push_lat) = (sent.clone(), push_lat.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                let now = Instant::now();
                let Ok(Value::Array(events)) = serde_json::from_str::<Value>(&t) else { continue };
                for e in events {
                    if e["type"] != "bid_result" {
                        continue;
                    }
                    let t0 = sent.lock().await.remove(e["key"].as_str().unwrap_or(""));
                    if let Some(t0) = t0 {
                        push_lat.lock().await.push(now.duration_since(t0).as_secs_f64() * 1e3);
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = (a.rate * a.secs as f64) as u64;
    let start = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / a.rate);
        tokio::time::sleep_until(due.into()).await;
        let token = users[i as usize % users.len()].1.clone();
        let lot = lots[i as usize % lots.len()].clone();
        let (sent, errors, addr) = (sent.clone(), errors.clone(), a.addr);
        tasks.push(tokio::spawn(async move {
            let (amount, key) = next_bid();
            sent.lock().await.insert(key.clone(), due);
            let body = json!({ "amount": amount }).to_string();
            let r = http(addr, "POST", &format!("/api/lots/{lot}/bids"), Some(&token), Some(&key), &body).await;
            if !matches!(r, Ok((202, _))) {
                sent.lock().await.remove(&key);
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lat = push_lat.lock().await.clone();
    (n, errors.load(Ordering::Relaxed), lat)
}

/// Phase 2: the same bid, then polling its status every `interval_ms` until it is no longer pending.
async fn poll_phase(a: &Args, token: &str, lots: &[String], interval_ms: u64) -> Vec<f64> {
    let mut waits = Vec::new();
    for i in 0..a.poll_bids {
        let (token, lot, addr) = (token.to_owned(), lots[i % lots.len()].clone(), a.addr);
        let phase_ms = (i as u64 * interval_ms) / a.poll_bids.max(1) as u64;
        waits.push(tokio::spawn(async move {
            let (amount, key) = next_bid();
            let t0 = Instant::now();
            let body = json!({ "amount": amount }).to_string();
            let path = format!("/api/lots/{lot}/bids");
            let (s, _) = http(addr, "POST", &path, Some(&token), Some(&key), &body).await.ok()?;
            if s != 202 {
                return None;
            }
            // A poller runs on its own cadence, not the bid's: the first look comes after a phase spread evenly
            // over the interval, then one every interval.
            tokio::time::sleep(Duration::from_millis(phase_ms)).await;
            loop {
                let (_, v) = http(addr, "GET", &format!("/api/bids/{key}"), Some(&token), None, "").await.ok()?;
                if v["status"] != "pending" {
                    return Some(t0.elapsed().as_secs_f64() * 1e3);
                }
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            }
        }));
        // Spread the bids over the polling interval, as independent clients would be.
        tokio::time::sleep(Duration::from_millis(interval_ms / 7 + 1)).await;
    }
    let mut lat = Vec::new();
    for w in waits {
        if let Ok(Some(ms)) = w.await {
            lat.push(ms);
        }
    }
    lat
}

/// Phase 3: closed-loop clients for `secs`; bids answered 202 per second and the mean group-commit size.
async fn throughput_phase(a: &Args, users: &[(String, String)], lots: &[String]) -> (f64, f64) {
    let bids0 = metric(a.addr, "marquee_auction_bids_journaled_total").await;
    let syncs0 = metric(a.addr, "marquee_auction_journal_syncs_total").await;
    let ok = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(a.secs);
    let mut clients = Vec::new();
    for c in 0..a.clients {
        let (token, ok, addr, lots) = (users[c % users.len()].1.clone(), ok.clone(), a.addr, lots.to_vec());
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while Instant::now() < stop_at {
                let (amount, key) = next_bid();
                let body = json!({ "amount": amount }).to_string();
                let path = format!("/api/lots/{}/bids", lots[i % lots.len()]);
                if let Ok((202, _)) = http(addr, "POST", &path, Some(&token), Some(&key), &body).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
    let bids1 = metric(a.addr, "marquee_auction_bids_journaled_total").await;
    let syncs1 = metric(a.addr, "marquee_auction_journal_syncs_total").await;
    let rate = ok.load(Ordering::Relaxed) as f64 / a.secs as f64;
    let group = if syncs1 > syncs0 { (bids1 - bids0) / (syncs1 - syncs0) } else { 0.0 };
    (rate, group)
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let lots = open_lots(a.addr).await;
    assert!(!lots.is_empty(), "no open lot at {}", a.addr);
    let mut users = Vec::new();
    for i in 0..a.users {
        let name = format!("bench{i}");
        let body = json!({ "name": name }).to_string();
        let (s, v) = http(a.addr, "POST", "/api/login", None, None, &body).await.expect("login");
        assert_eq!(s, 200, "{v}");
        users.push((name, v["token"].as_str().unwrap_or_default().to_owned()));
    }
    let (n, errors, push) = push_phase(&a, &users, &lots).await;
    let poll_100 = poll_phase(&a, &users[0].1, &lots, 100).await;
    let poll_1000 = poll_phase(&a, &users[0].1, &lots, 1000).await;
    let (rate, group) = throughput_phase(&a, &users, &lots).await;

    println!("## Auction: POST to outcome (ms)\n");
    println!(
        "{} users, {} lots; push phase: {n} bids at {} bids/s ({errors} not answered 202)\n",
        a.users,
        lots.len(),
        a.rate
    );
    println!("| path | n | p50 | p99 | p99.9 | max |\n|---|---|---|---|---|---|");
    println!("{}", summary("POST → pushed bid_result", push));
    println!("{}", summary("POST → polling every 100 ms", poll_100));
    println!("{}", summary("POST → polling every 1 s", poll_1000));
    println!("\n## Sustained bids/s (closed loop, {} clients, {} s, fsync on)\n", a.clients, a.secs);
    println!("{rate:.0} bids/s answered 202; mean group commit {group:.1} bids per fdatasync");
}
