//! The auction scenario: how long from `POST /api/lots/{id}/bids` to the pushed `bid_result`, against the same
//! bid followed by polling `GET /api/bids/{key}` every 100 ms and every 1 s; and how many bids per second the
//! journal sustains with its fsync on (closed-loop clients), with the mean group-commit size from `/metrics`.
//!
//! Push latency is measured from each bid's *scheduled* send time at a constant rate (no coordinated omission).
//! The server needs its demo lots (the default) and no effective bid rate limit
//! (`--bid-rate 1000000 --bid-burst 1000000`).

use crate::cli::AuctionArgs;
use crate::report::{Context, Latency, ScenarioResult, new_histogram};
use anyhow::{Context as _, bail};
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

impl AuctionArgs {
    fn addr(&self) -> SocketAddr {
        crate::http1::addr_of(&self.target).expect("checked in run")
    }
}

fn latency_ms(name: &str, a: &AuctionArgs, v: &[f64]) -> anyhow::Result<ScenarioResult> {
    let mut h = new_histogram();
    for ms in v {
        h.saturating_record(((ms * 1000.0) as u64).max(1));
    }
    Ok(ScenarioResult {
        name: name.into(),
        params: serde_json::to_value(a)?,
        deliveries: v.len() as u64,
        latency_us: Latency::from_histogram(&h),
        ..ScenarioResult::default()
    })
}

pub async fn run(a: &AuctionArgs, _ctx: &Context) -> anyhow::Result<Vec<ScenarioResult>> {
    let addr = crate::http1::addr_of(&a.target)?;
    let lots = tokio::time::timeout(Duration::from_secs(5), open_lots(addr))
        .await
        .with_context(|| format!("no answer from {addr} within 5 s"))?;
    if lots.is_empty() {
        bail!("no open lot at {addr}");
    }
    let mut users = Vec::new();
    for i in 0..a.users {
        let name = format!("bench{i}");
        let body = json!({ "name": name }).to_string();
        let (s, v) = http(addr, "POST", "/api/login", None, None, &body).await.context("login")?;
        anyhow::ensure!(s == 200, "login returned {s}: {v}");
        users.push((name, v["token"].as_str().unwrap_or_default().to_owned()));
    }
    let (n, errors, push) = push_phase(a, &users, &lots).await;
    let poll_100 = poll_phase(a, &users[0].1, &lots, 100).await;
    let poll_1000 = poll_phase(a, &users[0].1, &lots, 1000).await;
    let (rate, group) = throughput_phase(a, &users, &lots).await;
    let mut push_r = latency_ms("auction-push", a, &push)?;
    push_r.clients = a.users;
    push_r.errors = errors;
    push_r.notes.push(format!(
        "{n} bids at {} bids/s over {} lots; latency = scheduled POST to pushed bid_result",
        a.rate,
        lots.len()
    ));
    let mut p100 = latency_ms("auction-poll-100ms", a, &poll_100)?;
    p100.notes.push("latency = POST to the first poll that is no longer pending".into());
    let p1000 = latency_ms("auction-poll-1s", a, &poll_1000)?;
    let tput = ScenarioResult {
        name: "auction-throughput".into(),
        params: serde_json::to_value(a)?,
        clients: a.clients,
        deliveries_per_s: rate,
        notes: vec![format!(
            "{rate:.0} bids/s answered 202 by {} closed-loop clients with fsync on; mean group commit {group:.1} bids per fdatasync",
            a.clients
        )],
        ..ScenarioResult::default()
    };
    Ok(vec![push_r, p100, p1000, tput])
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

/// Amounts above every earlier bid (step 100, above any increment), so bids pass the increment check on any lot.
static NEXT_AMOUNT: AtomicU64 = AtomicU64::new(10_000);
static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn next_bid() -> (String, String) {
    let amount = format!("{}.00", NEXT_AMOUNT.fetch_add(100, Ordering::Relaxed));
    let key = format!("bench-{}-{}", std::process::id(), NEXT_KEY.fetch_add(1, Ordering::Relaxed));
    (amount, key)
}

async fn open_lots(addr: SocketAddr) -> Vec<String> {
    let Ok((_, lots)) = http(addr, "GET", "/api/lots", None, None, "").await else { return Vec::new() };
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
async fn push_phase(a: &AuctionArgs, users: &[(String, String)], lots: &[String]) -> (u64, u64, Vec<f64>) {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let push_lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    for (name, token) in users {
        let url = format!("ws://{}/ws?access_token={token}", a.addr());
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else { continue };
        let sub = json!({"op":"subscribe","id":1,"topics":[format!("users.{name}")]});
        if ws.send(Message::text(sub.to_string())).await.is_err() {
            continue;
        }
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
    let n = (a.rate * a.duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / a.rate);
        tokio::time::sleep_until(due.into()).await;
        let token = users[i as usize % users.len()].1.clone();
        let lot = lots[i as usize % lots.len()].clone();
        let (sent, errors, addr) = (sent.clone(), errors.clone(), a.addr());
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
async fn poll_phase(a: &AuctionArgs, token: &str, lots: &[String], interval_ms: u64) -> Vec<f64> {
    let mut waits = Vec::new();
    for i in 0..a.poll_bids {
        let (token, lot, addr) = (token.to_owned(), lots[i % lots.len()].clone(), a.addr());
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
async fn throughput_phase(a: &AuctionArgs, users: &[(String, String)], lots: &[String]) -> (f64, f64) {
    let bids0 = metric(a.addr(), "marquee_auction_bids_journaled_total").await;
    let syncs0 = metric(a.addr(), "marquee_auction_journal_syncs_total").await;
    let ok = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + a.duration;
    let mut clients = Vec::new();
    for c in 0..a.clients {
        let (token, ok, addr, lots) = (users[c % users.len()].1.clone(), ok.clone(), a.addr(), lots.to_vec());
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
    let bids1 = metric(a.addr(), "marquee_auction_bids_journaled_total").await;
    let syncs1 = metric(a.addr(), "marquee_auction_journal_syncs_total").await;
    let rate = ok.load(Ordering::Relaxed) as f64 / a.duration.as_secs_f64();
    let group = if syncs1 > syncs0 { (bids1 - bids0) / (syncs1 - syncs0) } else { 0.0 };
    (rate, group)
}
