//! The QUIC transport of the fanout scenario: one quinn endpoint per loadgen process, one connection per
//! subscriber, the server's certificate pinned from `/api/quic/cert.pem`. Batches from the push stream and from
//! datagrams are counted by the same code as WebSocket frames.

use crate::cli::Enc;
use crate::fanout::{Shared, handle_frame};
use crate::http1;
use anyhow::Context;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_tungstenite::tungstenite::Message;

/// A client endpoint that trusts exactly the server's certificate, and the server's UDP address.
pub async fn endpoint(http: SocketAddr, enc: Enc) -> anyhow::Result<(quinn::Endpoint, SocketAddr)> {
    let mut c = http1::Conn::connect(http).await?;
    let mut body = Vec::new();
    anyhow::ensure!(c.get("/api/quic", &mut body).await? == 200, "the server runs without QUIC");
    let info: serde_json::Value = serde_json::from_slice(&body)?;
    let addr: SocketAddr = info["addr"].as_str().context("no addr in /api/quic")?.parse()?;
    anyhow::ensure!(c.get("/api/quic/cert.pem", &mut body).await? == 200, "no certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&body) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let alpn: &[u8] = if enc == Enc::Bin { b"marquee.bin/1" } else { b"marquee.json/1" };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let mut ep = quinn::Endpoint::client(SocketAddr::new(addr.ip(), 0))?;
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?)));
    Ok((ep, addr))
}

/// Connects one subscriber.
pub async fn connect(ep: &quinn::Endpoint, addr: SocketAddr) -> anyhow::Result<quinn::Connection> {
    Ok(ep.connect(addr, "localhost")?.await?)
}

fn to_message(body: Vec<u8>, enc: Enc) -> Message {
    match enc {
        Enc::Bin => Message::binary(body),
        Enc::Json => Message::text(String::from_utf8_lossy(&body).into_owned()),
    }
}

/// One subscriber: subscribe on the control stream, then count every batch (stream and datagrams) until `stop`.
pub async fn client(
    conn: quinn::Connection,
    topics: Vec<String>,
    datagrams: bool,
    enc: Enc,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let sub = serde_json::json!({"op": "subscribe", "id": 1, "topics": topics, "datagrams": datagrams}).to_string();
    let mut frame = (sub.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(sub.as_bytes());
    let control = match conn.open_bi().await {
        Ok((mut tx, _)) => tx.write_all(&frame).await.map(|()| tx).ok(),
        Err(_) => None,
    };
    let Some(_control) = control else {
        shared.disconnects.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let stream = {
        let (conn, shared, mut stop) = (conn.clone(), shared.clone(), stop.clone());
        async move {
            let mut samples = Vec::new();
            let mut acked = false;
            let read = async {
                let mut push = conn.accept_uni().await?;
                loop {
                    let mut len = [0u8; 4];
                    push.read_exact(&mut len).await?;
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    push.read_exact(&mut body).await?;
                    if handle_frame(&to_message(body, enc), &shared, &mut samples) && !acked {
                        acked = true;
                        shared.ready.fetch_add(1, Ordering::Relaxed);
                    }
                    if samples.len() >= crate::fanout::FLUSH_EVERY {
                        shared.record(&mut samples);
                    }
                }
                #[allow(unreachable_code)]
                anyhow::Ok(())
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = read => { shared.disconnects.fetch_add(1, Ordering::Relaxed); }
            }
            shared.record(&mut samples);
        }
    };
    let dgrams = {
        let (conn, shared, mut stop) = (conn.clone(), shared.clone(), stop);
        async move {
            let mut samples = Vec::new();
            let read = async {
                while let Ok(d) = conn.read_datagram().await {
                    handle_frame(&to_message(d.to_vec(), enc), &shared, &mut samples);
                    if samples.len() >= crate::fanout::FLUSH_EVERY {
                        shared.record(&mut samples);
                    }
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = read => {}
            }
            shared.record(&mut samples);
        }
    };
    tokio::join!(stream, dgrams);
    conn.close(0u32.into(), b"done");
}
