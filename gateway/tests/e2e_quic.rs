//! End-to-end over QUIC: the real server, a quinn client that pins the certificate from `/api/quic/cert.pem`.

mod common;

use common::*;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One QUIC connection: the control stream and the server's push stream.
struct Client {
    conn: quinn::Connection,
    control: quinn::SendStream,
    push: Option<quinn::RecvStream>,
    _endpoint: quinn::Endpoint,
}

async fn quic_addr(server: &Server) -> (SocketAddr, Value, String) {
    let (status, _, body) = http_get(server.addr, "/api/quic").await;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    let (status, _, pem) = http_get(server.addr, "/api/quic/cert.pem").await;
    assert_eq!(status, 200);
    (info["addr"].as_str().unwrap().parse().unwrap(), info, pem)
}

/// A QUIC handshake with the server, pinning its certificate; the connection or why it failed.
async fn handshake(
    server: &Server,
    alpn: &str,
) -> (quinn::Endpoint, Result<quinn::Connection, quinn::ConnectionError>) {
    let (addr, _, pem) = quic_addr(server).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let conn = tokio::time::timeout(Duration::from_secs(10), endpoint.connect(addr, "localhost").unwrap())
        .await
        .expect("handshake within 10 s");
    (endpoint, conn)
}

impl Client {
    async fn connect(server: &Server, alpn: &str) -> Client {
        let (endpoint, conn) = handshake(server, alpn).await;
        let conn = conn.expect("handshake");
        let (control, _) = conn.open_bi().await.unwrap();
        Client { conn, control, push: None, _endpoint: endpoint }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.control.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, op: Value) {
        let body = op.to_string();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body.as_bytes());
        self.send_raw(&frame).await;
    }

    /// The next batch on the push stream; panics after `secs`.
    async fn next_batch(&mut self, secs: u64) -> Vec<Value> {
        let read = async {
            if self.push.is_none() {
                self.push = Some(self.conn.accept_uni().await.expect("push stream"));
            }
            let push = self.push.as_mut().unwrap();
            let mut len = [0u8; 4];
            push.read_exact(&mut len).await.expect("length prefix");
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            push.read_exact(&mut body).await.expect("frame body");
            body
        };
        let body = tokio::time::timeout(Duration::from_secs(secs), read)
            .await
            .unwrap_or_else(|_| panic!("no batch within {secs} s"));
        let v: Value = serde_json::from_slice(&body).expect("batches are JSON");
        v.as_array().expect("every batch is a JSON array").clone()
    }

    async fn until(&mut self, secs: u64, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now()).as_secs().max(1);
            for e in self.next_batch(left).await {
                let done = pred(&e);
                out.push(e);
                if done {
                    return out;
                }
            }
        }
    }

    /// The application error code the server closed the connection with.
    async fn closed_code(&self) -> u64 {
        let e = tokio::time::timeout(Duration::from_secs(10), self.conn.closed()).await.expect("closed within 10 s");
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
            other => panic!("closed by {other}, not by the application"),
        }
    }
}

fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn e2e_quic_info_names_the_udp_address_and_fingerprint() {
    let server = Server::start(&[]);
    let (addr, info, pem) = quic_addr(&server).await;
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert_eq!(info["alpns"], json!(["marquee.json/1", "marquee.bin/1"]));
    assert_eq!(info["sha256"].as_str().unwrap().len(), 64);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let off = Server::start(&["--quic", "off"]);
    assert_eq!(http_get(off.addr, "/api/quic").await.0, 404);
}

#[tokio::test]
async fn e2e_quic_subscribe_gets_ack_snapshot_then_increasing_seqs() {
    let server = Server::start(&["--tick-rate", "5000"]);
    let mut c = Client::connect(&server, "marquee.json/1").await;
    c.send(json!({"op":"subscribe","id":1,"topics":["ticks.AAPL","ticks.MSFT"]})).await;
    let first = c.next_batch(10).await;
    assert_eq!(first[0], json!({"type":"ack","id":1}));
    let mut last = std::collections::HashMap::new();
    let mut n_ticks = 0;
    let mut events = first[1..].to_vec();
    while n_ticks < 100 {
        for e in events.drain(..) {
            let topic = e["topic"].as_str().unwrap().to_owned();
            match e["type"].as_str().unwrap() {
                "snapshot" => assert!(last.insert(topic, seq(&e)).is_none(), "one snapshot, first"),
                "tick" => {
                    let prev = last.insert(topic.clone(), seq(&e)).expect("snapshot before ticks");
                    assert_eq!(seq(&e), prev + 1, "{topic}: seqs increase by one");
                    n_ticks += 1;
                }
                other => panic!("unexpected event {other}: {e}"),
            }
        }
        events = c.next_batch(10).await;
    }
    c.send(json!({"op":"ping","id":7})).await;
    c.until(10, |e| e == &json!({"type":"pong","id":7})).await;
}

#[tokio::test]
async fn e2e_quic_resume_with_since_after_reconnect() {
    let server = Server::start(&["--tick-rate", "2000"]);
    let mut c = Client::connect(&server, "marquee.json/1").await;
    c.send(json!({"op":"subscribe","id":1,"topics":["ticks.NVDA"]})).await;
    let evs = c.until(10, |e| e["type"] == "tick").await;
    let last = evs.last().unwrap().clone();
    c.conn.close(0u32.into(), b"bye");
    drop(c);
    let mut c = Client::connect(&server, "marquee.json/1").await;
    let since = json!({"ticks.NVDA": {"epoch": last["epoch"], "seq": last["seq"]}});
    c.send(json!({"op":"subscribe","id":2,"topics":["ticks.NVDA"],"since":since})).await;
    let evs = c.until(10, |e| e["type"] == "tick").await;
    assert_eq!(evs[0], json!({"type":"ack","id":2}));
    assert_eq!(seq(evs.last().unwrap()), seq(&last) + 1, "resume starts right after the last tick seen: {evs:?}");
}

#[tokio::test]
async fn e2e_quic_bad_input_closes_only_that_connection() {
    let server = Server::start(&[]);
    let mut good = Client::connect(&server, "marquee.json/1").await;
    good.send(json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
    good.until(10, |e| e["type"] == "ack").await;

    // Garbage inside a well-formed frame is the session's business: an error event, the connection stays.
    let mut c = Client::connect(&server, "marquee.json/1").await;
    let garbage = b"\x00\x00\x00\x05{{{{{";
    c.send_raw(garbage).await;
    let evs = c.until(10, |e| e["type"] == "error").await;
    assert_eq!(evs.last().unwrap()["code"], "bad_json");
    c.send(json!({"op":"fly","id":3})).await;
    assert_eq!(c.until(10, |e| e["type"] == "error").await.last().unwrap()["code"], "unknown_op");

    // An oversized length prefix closes the connection with 4009.
    let mut big = Client::connect(&server, "marquee.json/1").await;
    big.send_raw(&[0xff, 0xff, 0xff, 0xff]).await;
    assert_eq!(big.closed_code().await, 4009);

    // A frame cut short by the end of the stream: 4009 too.
    let mut cut = Client::connect(&server, "marquee.json/1").await;
    cut.send_raw(&[0, 0, 0, 9, b'{']).await;
    cut.control.finish().unwrap();
    assert_eq!(cut.closed_code().await, 4009);
    // Even right after a length prefix.
    let mut cut = Client::connect(&server, "marquee.json/1").await;
    cut.send_raw(&[0, 0, 0, 9]).await;
    cut.control.finish().unwrap();
    assert_eq!(cut.closed_code().await, 4009);

    // The well-behaved connection never noticed.
    good.send(json!({"op":"ping","id":9})).await;
    good.until(10, |e| e == &json!({"type":"pong","id":9})).await;
}

#[tokio::test]
async fn e2e_quic_binary_alpn_sends_binary_batches() {
    let server = Server::start(&[]);
    let mut c = Client::connect(&server, "marquee.bin/1").await;
    c.send(json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
    if c.push.is_none() {
        c.push = Some(c.conn.accept_uni().await.unwrap());
    }
    let push = c.push.as_mut().unwrap();
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), push.read_exact(&mut len)).await.unwrap().unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    push.read_exact(&mut body).await.unwrap();
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "binary encoding, not JSON");
}

#[tokio::test]
async fn e2e_quic_datagram_subscription_delivers_ticks_as_datagrams() {
    let server = Server::start(&["--tick-rate", "5000"]);
    let mut c = Client::connect(&server, "marquee.json/1").await;
    c.send(json!({"op":"subscribe","id":1,"topics":["ticks.AAPL","ticks.MSFT"],"datagrams":true})).await;
    assert_eq!(c.next_batch(10).await, [json!({"type":"ack","id":1})]);
    let mut last = std::collections::HashMap::new();
    let mut n_ticks = 0;
    while n_ticks < 50 {
        let d = tokio::time::timeout(Duration::from_secs(10), c.conn.read_datagram()).await.unwrap().unwrap();
        assert!(d.len() <= c.conn.max_datagram_size().unwrap());
        let evs: Vec<Value> = serde_json::from_slice(&d).expect("a datagram is one JSON array");
        for e in evs {
            let topic = e["topic"].as_str().unwrap().to_owned();
            match e["type"].as_str().unwrap() {
                "snapshot" | "gap" => {}
                "tick" => {
                    // Datagrams may be lost or reordered; within one topic, later datagrams carry newer seqs.
                    if let Some(prev) = last.insert(topic.clone(), seq(&e)) {
                        assert!(seq(&e) > prev, "{topic}: {} after {prev}", seq(&e));
                    }
                    n_ticks += 1;
                }
                other => panic!("unexpected event {other}: {e}"),
            }
        }
    }
}

#[tokio::test]
async fn e2e_quic_stalled_client_is_dropped_without_delaying_others() {
    let server = Server::start(&["--tick-rate", "20000", "--write-timeout", "1s"]);
    let (_, _, body) = http_get(server.addr, "/api/symbols").await;
    let symbols: Vec<String> = serde_json::from_str(&body).unwrap();
    let topics: Vec<String> = symbols.iter().map(|s| format!("ticks.{s}")).collect();
    // The stalled client subscribes to everything and never reads its push stream.
    let mut stalled = Client::connect(&server, "marquee.json/1").await;
    stalled.send(json!({"op":"subscribe","id":1,"topics":topics})).await;
    let mut live = Client::connect(&server, "marquee.json/1").await;
    live.send(json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
    let mut last = None;
    let mut n_ticks = 0;
    while n_ticks < 200 {
        for e in live.next_batch(10).await {
            if e["type"] == "snapshot" || e["type"] == "tick" {
                if let Some(prev) = last {
                    assert_eq!(seq(&e), prev + 1, "the live client misses nothing");
                }
                last = Some(seq(&e));
                n_ticks += 1;
            }
        }
    }
    assert_eq!(stalled.closed_code().await, 4012, "the stalled client is dropped after --write-timeout");
    live.send(json!({"op":"ping","id":2})).await;
    live.until(10, |e| e == &json!({"type":"pong","id":2})).await;
}

#[tokio::test]
async fn e2e_quic_auth_op_logs_in_for_private_topics_and_bids() {
    let server = Server::start(&[]);
    let token = login(server.addr, "alice").await;
    let mut c = Client::connect(&server, "marquee.json/1").await;
    let bid = json!({"op":"bid","id":1,"lot":"999","amount":"1.00","key":"quic-k1"});
    c.send(bid.clone()).await;
    assert_eq!(c.until(10, |e| e["type"] == "error").await.last().unwrap()["code"], "unauthorized");
    c.send(json!({"op":"auth","id":2,"access_token":"not-a-token"})).await;
    assert_eq!(c.until(10, |e| e["id"] == 2).await.last().unwrap()["code"], "invalid_token");
    c.send(json!({"op":"auth","id":3,"access_token":token})).await;
    assert_eq!(*c.until(10, |e| e["id"] == 3).await.last().unwrap(), json!({"type":"ack","id":3,"user":"alice"}));
    c.send(json!({"op":"subscribe","id":4,"topics":["users.alice"]})).await;
    assert_eq!(c.until(10, |e| e["id"] == 4).await.last().unwrap()["type"], "ack");
    c.send(bid).await;
    let answer = c.until(10, |e| e["id"] == 1).await.last().unwrap().clone();
    assert_ne!(answer["code"], "unauthorized", "the bid reached the auction house: {answer}");
}

#[tokio::test]
async fn e2e_quic_connection_limit_and_unknown_alpn_are_refused() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut first = Client::connect(&server, "marquee.json/1").await;
    first.send(json!({"op":"ping","id":1})).await;
    first.until(10, |e| e["type"] == "pong").await;
    let (_endpoint, second) = handshake(&server, "marquee.json/1").await;
    assert!(matches!(second, Err(quinn::ConnectionError::ConnectionClosed(_))), "refused at the limit: {second:?}");
    let open = Server::start(&[]);
    let (_endpoint, other) = handshake(&open, "h3").await;
    assert!(other.is_err(), "no ALPN in common: {other:?}");
}

#[tokio::test]
async fn e2e_quic_sigterm_closes_connections_with_1001() {
    let mut server = Server::start(&[]);
    let mut c = Client::connect(&server, "marquee.json/1").await;
    c.send(json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
    c.until(10, |e| e["type"] == "snapshot").await;
    let status = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(c.closed_code().await, 1001);
    let code = server.exits_within(std::time::Instant::now(), Duration::from_secs(10)).await;
    assert_eq!(code.code(), Some(0));
}

#[tokio::test]
async fn e2e_quic_serves_the_certificate_given_with_cert_and_key() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = temp_data_dir("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    let (_, info, pem) = quic_addr(&server).await;
    assert_eq!(pem, ck.cert.pem());
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(ck.cert.der()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(info["sha256"], want.as_str());
    let mut c = Client::connect(&server, "marquee.json/1").await;
    c.send(json!({"op":"ping","id":1})).await;
    c.until(10, |e| e["type"] == "pong").await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn e2e_quic_carries_books_on_the_stream_and_trades_as_datagrams() {
    let server = Server::start(&["--tick-rate", "5000"]);
    let mut c = Client::connect(&server, "marquee.json/1").await;
    // Books never go as datagrams (a deep book outgrows one): the flag leaves book.AAPL on the stream.
    c.send(json!({"op":"subscribe","id":1,"topics":["book.AAPL","trades.AAPL"],"datagrams":true})).await;
    let mut books = 0;
    while books < 3 {
        for e in c.next_batch(10).await {
            if e["type"] == "book" || e["event"] == "book" {
                let (bids, asks) = (e["bids"].as_array().unwrap(), e["asks"].as_array().unwrap());
                assert!(bids[0][0].as_f64().unwrap() < asks[0][0].as_f64().unwrap(), "{e}");
                books += 1;
            } else {
                assert!(e["type"] == "ack" || e["type"] == "gap", "trades go as datagrams, not here: {e}");
            }
        }
    }
    let d = tokio::time::timeout(Duration::from_secs(10), c.conn.read_datagram()).await.unwrap().unwrap();
    let evs: Vec<Value> = serde_json::from_slice(&d).expect("a datagram is one JSON array");
    assert!(evs.iter().all(|e| e["topic"] == "trades.AAPL"), "{evs:?}");
}
