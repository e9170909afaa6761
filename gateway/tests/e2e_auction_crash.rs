//! The auction loses nothing: many clients bid concurrently, the server is killed with SIGKILL in the middle of
//! the stream, restarted on the same data directory, and then every bid that was answered 202 is there with a
//! final outcome, and none was applied twice.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

const BIDDERS: usize = 12;
const LOTS: u64 = 4;

/// A bid the server answered with 202.
#[derive(Clone, Debug)]
struct Acked {
    user: String,
    key: String,
    lot: u64,
    amount: String,
    bid_id: String,
}

#[tokio::test]
async fn e2e_auction_sigkill_mid_stream_loses_no_acknowledged_bid() {
    let dir = temp_data_dir("crash");
    let args = [
        "--tick-rate",
        "50",
        "--demo-lots",
        "4",
        "--lot-duration",
        "30m",
        "--bid-rate",
        "100000",
        "--bid-burst",
        "100000",
    ];
    let mut server = Server::start_in(&dir, &args);
    let addr = server.addr;
    let mut tokens = Vec::new();
    for i in 0..BIDDERS {
        tokens.push((format!("bidder{i}"), login(addr, &format!("bidder{i}")).await));
    }
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let n_acked = Arc::new(AtomicU64::new(0));
    // Amounts rise over the whole run, so most bids are accepted and some lose races (rejected): both outcomes
    // get exercised.
    let next_amount = Arc::new(AtomicU64::new(1_000));
    let mut tasks = Vec::new();
    for (b, (user, token)) in tokens.clone().into_iter().enumerate() {
        let (acked, n_acked, next_amount) = (acked.clone(), n_acked.clone(), next_amount.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let lot = (b as u64 + i) % LOTS + 1;
                let amount = format!("{}.00", next_amount.fetch_add(1, Ordering::Relaxed));
                let key = format!("{user}-{i}");
                let body = format!("{{\"amount\":\"{amount}\"}}");
                let r = tokio::time::timeout(Duration::from_secs(5), try_http(addr, &token, lot, &key, &body)).await;
                let Ok(Ok((status, v))) = r else {
                    return; // the server is gone
                };
                if status == 202 {
                    let bid_id = v["bid_id"].as_str().unwrap().to_owned();
                    acked.lock().await.push(Acked { user: user.clone(), key, lot, amount, bid_id });
                    n_acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Kill once a good number of bids went through, while every bidder is still sending.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while n_acked.load(Ordering::Relaxed) < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} bids acknowledged in 120 s",
            n_acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    server.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    drop(server);
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 300);

    let server = Server::start_in(&dir, &args);
    let addr = server.addr;
    let token_of: HashMap<String, String> = tokens.into_iter().collect();
    let mut lots_before = HashMap::new();
    for lot in 1..=LOTS {
        let (_, v) = http(addr, "GET", &format!("/api/lots/{lot}"), None, &[], None).await;
        lots_before.insert(lot, v);
    }
    let mut accepted_per_lot: HashMap<u64, u64> = HashMap::new();
    let mut max_accepted: HashMap<u64, f64> = HashMap::new();
    for a in &acked {
        let (s, v) = http(addr, "GET", &format!("/api/bids/{}", a.key), Some(&token_of[&a.user]), &[], None).await;
        assert_eq!(s, 200, "202'd bid {a:?} is missing after the restart: {v}");
        assert_eq!(v["bid_id"], a.bid_id.as_str(), "{a:?}");
        assert_eq!(
            (v["lot"].as_str(), v["amount"].as_str()),
            (Some(a.lot.to_string().as_str()), Some(a.amount.as_str()))
        );
        let status = v["status"].as_str().unwrap();
        assert!(status == "accepted" || status == "rejected", "{a:?} has no final outcome: {v}");
        if status == "accepted" {
            *accepted_per_lot.entry(a.lot).or_default() += 1;
            let amt: f64 = a.amount.parse().unwrap();
            let m = max_accepted.entry(a.lot).or_default();
            *m = m.max(amt);
        }
    }
    for lot in 1..=LOTS {
        let l = &lots_before[&lot];
        assert!(l["bids"].as_u64().unwrap() >= accepted_per_lot.get(&lot).copied().unwrap_or(0), "{l}");
        let high: f64 = l["high_bid"].as_str().map_or(0.0, |h| h.parse().unwrap());
        assert!(high >= max_accepted.get(&lot).copied().unwrap_or(0.0), "lot {lot} lost its high bid: {l}");
    }
    // Retrying every acknowledged bid is a no-op: same bid ids, no new bids on any lot.
    for a in &acked {
        let (s, v) = post_bid(addr, &token_of[&a.user], &a.lot.to_string(), &a.key, &a.amount).await;
        assert_eq!(
            (s, v["bid_id"].as_str(), v["replayed"].as_bool()),
            (202, Some(a.bid_id.as_str()), Some(true)),
            "{a:?}"
        );
    }
    for lot in 1..=LOTS {
        let (_, v) = http(addr, "GET", &format!("/api/lots/{lot}"), None, &[], None).await;
        assert_eq!(v, lots_before[&lot], "a retry changed lot {lot}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Like `post_bid`, but an error instead of a panic when the server is gone.
async fn try_http(
    addr: std::net::SocketAddr,
    token: &str,
    lot: u64,
    key: &str,
    body: &str,
) -> std::io::Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "POST /api/lots/{lot}/bids HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// A byte flipped in the middle of a journal (not a torn end) stops the start with the file and offset, and the
/// file is left as it was; cutting it where the message says lets the server start from the records before it.
#[tokio::test]
async fn e2e_auction_damaged_journal_refuses_to_start_and_names_the_offset() {
    let dir = temp_data_dir("damaged");
    let args = ["--demo-lots", "2", "--lot-duration", "30m", "--bid-rate", "100000", "--bid-burst", "100000"];
    let server = Server::start_in(&dir, &args);
    let token = login(server.addr, "alice").await;
    for i in 0..60 {
        let key = format!("00000000-0000-4000-8000-{i:012}");
        let (status, body) =
            post_bid(server.addr, &token, &(i % 2 + 1).to_string(), &key, &format!("{}.00", 1000 + 100 * i)).await;
        assert_eq!(status, 202, "{body}");
    }
    drop(server);
    let journal = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&journal).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&journal, &bytes).unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--quic", "off", "--auth-secret", TEST_SECRET])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a server on a damaged journal did not stop within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("journal {} is damaged at byte ", journal.display())), "{stderr}");
    assert_eq!(std::fs::read(&journal).unwrap(), bytes, "the damaged journal is left as it was");
    // The documented way on: cut the file at the offset the message names.
    let offset: u64 = stderr.split("is damaged at byte ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    assert!(offset <= middle as u64 && offset > 0);
    std::fs::OpenOptions::new().write(true).open(&journal).unwrap().set_len(offset).unwrap();
    let server = Server::start_in(&dir, &args);
    let (status, _, _) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
