//! End-to-end: HTTP and WebSocket over TLS (`--tls-cert/--tls-key`): the REST API over `https://`, QUIC on the same
//! certificate, a subscription over `wss://`, and a plain-text request to the TLS port gets no HTTP answer.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn e2e_https_and_wss_with_a_given_certificate() {
    let dir = temp_data_dir("tls-cert");
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = || async {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        connector.connect(name.clone(), tcp).await.expect("a TLS handshake with the given certificate")
    };

    let mut https = tls().await;
    https.write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), https.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ready\n"), "{answer}");

    // QUIC serves the same certificate when it was given none of its own.
    let mut info = tls().await;
    info.write_all(b"GET /api/quic HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), info.read_to_string(&mut answer)).await.unwrap().unwrap();
    use sha2::Digest;
    let sha256: String = sha2::Sha256::digest(ck.cert.der()).iter().map(|b| format!("{b:02x}")).collect();
    assert!(answer.contains(&sha256), "{answer}");

    let (mut wss, _) = tokio_tungstenite::client_async("ws://localhost/ws", tls().await).await.unwrap();
    let subscribe = serde_json::json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]}).to_string();
    wss.send(Message::text(subscribe)).await.unwrap();
    let snapshot = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = wss.next().await {
            if let Message::Text(t) = m
                && t.contains("\"snapshot\"")
            {
                return t.to_string();
            }
        }
        panic!("the wss connection ended before a snapshot");
    })
    .await
    .expect("a snapshot over wss within 5 s");
    assert!(snapshot.contains("ticks.AAPL"), "{snapshot}");

    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "plain text is not served on the TLS port");
    let _ = std::fs::remove_dir_all(&dir);
}
