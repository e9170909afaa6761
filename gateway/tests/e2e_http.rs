//! End-to-end: the HTTP API, the embedded UI, metrics and graceful shutdown.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn e2e_http_api_symbols_quotes_health_metrics_ui() {
    let server = Server::start(&[]);
    let (status, _, body) = http_get(server.addr, "/api/symbols").await;
    assert_eq!(status, 200);
    let symbols: Vec<String> = serde_json::from_str(&body).unwrap();
    assert!(symbols.len() >= 40, "{symbols:?}");
    assert!(symbols.contains(&"AAPL".to_owned()));

    let (status, head, body) = http_get(server.addr, "/api/quotes/AAPL").await;
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"));
    let q: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (q["type"].as_str(), q["symbol"].as_str(), q["topic"].as_str()),
        (Some("tick"), Some("AAPL"), Some("ticks.AAPL"))
    );
    assert!(q["seq"].as_u64().unwrap() >= 1 && q["ts"].as_i64().unwrap() > 0 && q["price"].as_f64().unwrap() > 0.0);

    let (status, _, body) = http_get(server.addr, "/api/quotes/NOPE").await;
    assert_eq!(status, 404);
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "unknown_symbol");

    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    let (status, _, body) = http_get(server.addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, head, body) = http_get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/html") && body.contains("<html"));
    let (status, head, _) = http_get(server.addr, "/app.js").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript"), "ES modules need a JavaScript content type: {head}");
    assert_eq!(http_get(server.addr, "/nope.js").await.0, 404);

    let (status, _, metrics) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "marquee_connections",
        "marquee_subscriptions",
        "marquee_published_messages_total",
        "marquee_deliveries_total",
        "marquee_batches_total",
        "marquee_batch_size_mean",
        "marquee_gaps_total",
        "marquee_slow_consumer_disconnects_total",
        "marquee_bytes_out_total",
    ] {
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn e2e_sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut server = Server::start(&[]);
    let mut ws = connect(&server, None).await;
    send(&mut ws, json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
    events_until(&mut ws, 5, |e| e["type"] == "snapshot").await;
    let t0 = Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await.expect("close within 3 s") {
            Some(Ok(Message::Close(Some(f)))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001);
    let code = server.exits_within(t0, Duration::from_secs(2)).await;
    assert_eq!(code.code(), Some(0));
}

#[test]
fn e2e_bad_flags_and_missing_replay_file_exit_nonzero_with_a_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .args(["replay", "/no/such/file.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such/file.csv"), "{err}");
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_marquee")).args(["--ring-capacity", "1000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
}

#[tokio::test]
async fn e2e_silent_client_is_closed_with_4000_after_idle_timeout() {
    let server = Server::start(&["--ping-interval", "200ms", "--idle-timeout", "700ms"]);
    let mut ws = connect(&server, None).await;
    // Read nothing (so no pong goes back) for longer than the idle timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await.expect("close within 3 s") {
            Some(Ok(Message::Close(Some(f)))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "idle timeout");
}

/// Slowloris: a silent connection, a half-sent request head and a half-sent body are closed after the header
/// and body timeouts, and a connection left idle after its response too, so they cannot pile up.
#[tokio::test]
async fn e2e_silent_and_trickling_http_clients_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&["--header-timeout", "1s", "--body-timeout", "1s"]);
    let open = || tokio::net::TcpStream::connect(server.addr);
    let mut silent = open().await.unwrap();
    let mut half_head = open().await.unwrap();
    half_head.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut half_body = open().await.unwrap();
    let head = "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    half_body.write_all(format!("{head}{{\"na").as_bytes()).await.unwrap();
    let mut idle = open().await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let t0 = Instant::now();
    let mut answers = Vec::new();
    for (name, s) in
        [("silent", &mut silent), ("half head", &mut half_head), ("half body", &mut half_body), ("idle", &mut idle)]
    {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the {name} connection is still open after 5 s");
        answers.push(String::from_utf8_lossy(&buf).into_owned());
    }
    assert!(t0.elapsed() < Duration::from_secs(4), "closed only after {:?}", t0.elapsed());
    assert!(answers[2].starts_with("HTTP/1.1 408"), "half body: {}", answers[2]);
    assert!(answers[2].contains("\"request_timeout\""), "half body: {}", answers[2]);
    assert!(answers[3].starts_with("HTTP/1.1 200"), "idle: {}", answers[3]);
}

/// A half-sent request does not keep the process alive after SIGTERM.
#[tokio::test]
async fn e2e_sigterm_does_not_wait_for_half_sent_requests() {
    use tokio::io::AsyncWriteExt;
    let mut server = Server::start(&[]);
    let mut held = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    held.write_all(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").await.unwrap();
    let mut half_head = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half_head.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let code = server.terminate_within(Instant::now(), Duration::from_secs(5)).await;
    assert_eq!(code.code(), Some(0));
    drop((held, half_head));
}
