//! The QUIC adapter: moves bytes between quinn streams and a [`Session`]; all protocol meaning lives there, as on
//! WebSocket.
//!
//! One task per connection. The ALPN picks the encoding (`marquee.json/1` or `marquee.bin/1`). The client opens
//! one bidirectional stream, the control stream, and sends its ops there; the server opens one unidirectional
//! stream and writes every batch the session builds (answers, snapshots and events, in the session's order) to it
//! as one length-prefixed frame, one write per batch. Every frame on every stream is a u32 big-endian length and
//! that many bytes. Stream limits are enforced by QUIC itself (one bidirectional stream, no unidirectional ones from
//! the client); a frame whose length exceeds [`MAX_FRAME`] or that a FIN cuts short closes the connection with
//! [`ErrorCode::BadFrame`].
//!
//! Ticks of subscriptions made with `"datagrams": true` go as QUIC datagrams instead: one batch per datagram
//! (no length prefix), packed by the session up to the path's datagram size; quinn drops the oldest unsent
//! datagram when its buffer is full, so the newest values win. Reliable topics never go as datagrams.
//!
//! QUIC has no upgrade request to carry a token: a client logs in with the `auth` op on the control stream, and
//! bids with the `bid` op there. Not here: 0-RTT (off: a replayed bid must never be possible).

use crate::server::AppState;
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use marquee_engine::Encoding;
use marquee_protocol::{CloseReason, Connection, Identity, Session, SessionConfig};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// ALPN of the JSON encoding (the same objects and event arrays as on WebSocket).
pub const JSON_ALPN: &str = "marquee.json/1";
/// ALPN of the binary encoding.
pub const BINARY_ALPN: &str = "marquee.bin/1";
/// Largest client frame accepted on a stream; a longer length prefix closes the connection with
/// [`ErrorCode::BadFrame`]. (The session answers frames above its own, smaller limit with `frame_too_large`.)
pub const MAX_FRAME: usize = 1 << 20;

/// QUIC application error codes the server closes connections with. The session's close reasons keep their
/// WebSocket numbers (1001 going away, 1008 policy violation, 4000 idle, 4008 slow consumer); the rest are the
/// adapter's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 0: the client finished its control stream; nothing went wrong.
    Done,
    /// 4009: a frame longer than [`MAX_FRAME`], or cut short by the end of its stream.
    BadFrame,
    /// 4010: no control stream opened in time, or the control stream was reset.
    NoControlStream,
    /// 4012: the client took no data on its push stream for `--write-timeout` (reconnect and resume with
    /// `since`).
    WriteTimeout,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Done => 0,
            ErrorCode::BadFrame => 4009,
            ErrorCode::NoControlStream => 4010,
            ErrorCode::WriteTimeout => 4012,
        }
    }
}

/// What `GET /api/quic` tells clients.
#[derive(Debug, Clone)]
pub struct QuicInfo {
    pub addr: SocketAddr,
    /// The certificate (PEM), for clients to pin or trust.
    pub cert_pem: String,
    /// SHA-256 of the leaf certificate's DER, lowercase hex.
    pub sha256: String,
}

/// Splits a byte stream into u32-big-endian-length-prefixed frames. Pure: the adapter feeds it what it reads.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

/// A stream that broke the framing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is over the limit.
    TooLarge(usize),
}

impl FrameReader {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `None` while one is incomplete.
    pub fn next_frame(&mut self, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else { return Ok(None) };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > max {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// True when bytes of an unfinished frame are buffered (a FIN now would cut it short).
    pub fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Builds the QUIC endpoint: TLS from `config.tls` or a fresh self-signed certificate.
pub fn bind(config: &crate::Config, addr: SocketAddr) -> anyhow::Result<(quinn::Endpoint, QuicInfo)> {
    let (certs, key, cert_pem) = match &config.tls {
        Some((cert, key)) => {
            let pem = std::fs::read_to_string(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("bad certificate PEM in {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("bad key in {}", key.display()))?;
            (certs, key, pem)
        }
        None => {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .context("cannot make a self-signed certificate")?;
            let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
                .map_err(|e| anyhow::anyhow!("self-signed key: {e}"))?;
            (vec![ck.cert.der().clone()], key, ck.cert.pem())
        }
    };
    let leaf = certs.first().context("the certificate file holds no certificate")?;
    let sha256 = Sha256::digest(leaf.as_ref()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not fit")?;
    tls.alpn_protocols = vec![JSON_ALPN.into(), BINARY_ALPN.into()];
    // No 0-RTT: early data can be replayed, and a replayed bid must never be possible.
    tls.max_early_data_size = 0;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    let mut transport = quinn::TransportConfig::default();
    // One control stream per connection; the client opens no unidirectional streams (QUIC refuses more with
    // STREAM_LIMIT_ERROR, so "too many streams" never reaches the adapter).
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    // The datagram receive buffer stays at its default although clients send no datagrams: quinn offers datagrams
    // (and lets the server send them) only when it is set.
    // The server's keep-alives play the part of WebSocket pings: a live client acknowledges them, a gone one
    // lets the idle timeout fire.
    transport.keep_alive_interval(Some(config.ping_interval));
    transport.max_idle_timeout(Some(config.idle_timeout.try_into().context("--idle-timeout too long for QUIC")?));
    server.transport_config(Arc::new(transport));
    let endpoint =
        quinn::Endpoint::server(server, addr).with_context(|| format!("cannot listen on udp {addr} (--quic)"))?;
    let addr = endpoint.local_addr()?;
    Ok((endpoint, QuicInfo { addr, cert_pem, sha256 }))
}

/// Accepts connections until shutdown.
pub async fn serve(endpoint: quinn::Endpoint, state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = shutdown.changed() => break,
        };
        let prev = state.connections.fetch_add(1, Ordering::AcqRel);
        if prev >= state.max_connections {
            state.connections.fetch_sub(1, Ordering::AcqRel);
            state.rejected.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let _guard = ConnGuard(state.clone());
            match incoming.await {
                Ok(conn) => serve_connection(conn, &state).await,
                Err(e) => tracing::debug!("quic handshake failed: {e}"),
            }
        });
    }
    // Tasks close their connections with 1001 on the same signal; wait for those closes to be sent.
    let _ = timeout(Duration::from_millis(1500), endpoint.wait_idle()).await;
}

/// Decrements the connection count however the connection ends.
struct ConnGuard(Arc<AppState>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

fn close_with(conn: &quinn::Connection, code: ErrorCode, why: &str) {
    conn.close(code.code().into(), why.as_bytes());
}

async fn serve_connection(conn: quinn::Connection, state: &Arc<AppState>) {
    let cfg = &state.config;
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .unwrap_or_default();
    let encoding = if alpn == BINARY_ALPN.as_bytes() { Encoding::Binary } else { Encoding::Json };
    let (_control_tx, mut control) = match timeout(cfg.idle_timeout, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::debug!("quic connection ended before its control stream: {e}"),
        Err(_) => return close_with(&conn, ErrorCode::NoControlStream, "no control stream"),
    };
    let mut push = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return tracing::debug!("cannot open the push stream: {e}"),
    };
    // Datagram subscriptions only when the client accepts datagrams at all.
    let datagrams = conn.max_datagram_size().is_some();
    let mut session = Session::new(state.engine.clone(), encoding, SessionConfig { datagrams, ..cfg.session });
    session.set_identity(Identity::default());
    let (ops_tx, mut ops_rx) = tokio::sync::mpsc::unbounded_channel::<crate::driver::OpResult>();
    let signal = session.signal().clone();
    let mut shutdown = state.shutdown.clone();
    let mut frames = FrameReader::default();
    let mut out = Vec::new();
    loop {
        if let Some(frame) = session.poll_transmit() {
            out.clear();
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(frame);
            match timeout(cfg.write_timeout, push.write_all(&out)).await {
                Ok(Ok(())) => session.sent(),
                Ok(Err(e)) => return tracing::debug!("quic push stream write failed: {e}"),
                Err(_) => {
                    tracing::debug!("dropping a quic connection that took no data for {:?}", cfg.write_timeout);
                    return close_with(&conn, ErrorCode::WriteTimeout, "write timeout");
                }
            }
        }
        send_datagrams(&conn, &mut session);
        if let Some(reason) = session.poll_close() {
            return close(conn, push, reason).await;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => session.close(CloseReason::GoingAway),
            chunk = control.read_chunk(64 * 1024, true) => match chunk {
                Ok(Some(chunk)) => {
                    frames.push(&chunk.bytes);
                    let now = Instant::now();
                    loop {
                        match frames.next_frame(MAX_FRAME) {
                            Ok(Some(f)) => {
                                session.handle_frame(&f, now);
                                crate::driver::start_ops(&mut session, state, &ops_tx);
                            }
                            Ok(None) => break,
                            Err(FrameError::TooLarge(n)) => {
                                let why = format!("frame of {n} bytes exceeds {MAX_FRAME}");
                                return close_with(&conn, ErrorCode::BadFrame, &why);
                            }
                        }
                    }
                }
                Ok(None) if frames.is_mid_frame() => {
                    return close_with(&conn, ErrorCode::BadFrame, "control stream ended inside a frame");
                }
                Ok(None) => return close_with(&conn, ErrorCode::Done, "control stream finished"),
                Err(e) => {
                    tracing::debug!("quic control stream read error: {e}");
                    return close_with(&conn, ErrorCode::NoControlStream, "control stream reset");
                }
            },
            Some((id, r)) = ops_rx.recv() => {
                session.handle_op_result(id, r.as_deref().map_err(|(c, m)| (*c, m.as_str())));
            }
            _ = poll_fn(|cx| signal.poll_ready(cx)) => {}
            e = conn.closed() => return tracing::debug!("quic connection closed: {e}"),
        }
    }
}

/// Datagrams built per loop turn at most, so a busy datagram feed still lets the task read its control stream;
/// the session stays scheduled when more is pending.
const MAX_DATAGRAMS_PER_TURN: usize = 64;

/// Sends the session's datagrams. Never waits: when quinn's datagram send buffer is full it drops the oldest
/// unsent ones, so the newest values win.
fn send_datagrams(conn: &quinn::Connection, session: &mut Session) {
    let Some(max) = conn.max_datagram_size() else { return };
    for _ in 0..MAX_DATAGRAMS_PER_TURN {
        let Some(d) = session.poll_datagram(max) else { return };
        // A single message larger than a datagram is dropped; the client sees the seq skip.
        if d.len() > max {
            continue;
        }
        if let Err(e) = conn.send_datagram(Bytes::copy_from_slice(d)) {
            return tracing::debug!("quic datagram not sent: {e}");
        }
    }
}

/// Finishes the push stream so the client reads the last batch, then closes with the session's code.
async fn close(conn: quinn::Connection, mut push: quinn::SendStream, reason: &CloseReason) {
    let _ = push.finish();
    let _ = timeout(Duration::from_secs(1), push.stopped()).await;
    conn.close(u32::from(reason.code()).into(), reason.reason().as_bytes());
}

/// `GET /api/quic` and `GET /api/quic/cert.pem`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/quic", get(info)).route("/api/quic/cert.pem", get(cert))
}

fn disabled() -> Response {
    crate::http::error(StatusCode::NOT_FOUND, "quic_disabled", "this server runs without QUIC (--quic off)")
}

async fn info(State(s): State<Arc<AppState>>) -> Response {
    let Some(q) = &s.quic else { return disabled() };
    let body = serde_json::json!({"addr": q.addr.to_string(), "alpns": [JSON_ALPN, BINARY_ALPN], "sha256": q.sha256});
    axum::Json(body).into_response()
}

async fn cert(State(s): State<Arc<AppState>>) -> Response {
    let Some(q) = &s.quic else { return disabled() };
    ([(header::CONTENT_TYPE, "application/x-pem-file")], q.cert_pem.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(parts: &[&[u8]]) -> Vec<u8> {
        parts.iter().flat_map(|p| (p.len() as u32).to_be_bytes().into_iter().chain(p.iter().copied())).collect()
    }

    #[test]
    fn quic_frames_split_at_any_chunking() {
        let wire = framed(&[b"{\"op\":\"ping\"}", b"", b"abc"]);
        for cut in 0..wire.len() {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for chunk in [&wire[..cut], &wire[cut..]] {
                r.push(chunk);
                while let Some(f) = r.next_frame(MAX_FRAME).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, [b"{\"op\":\"ping\"}".to_vec(), Vec::new(), b"abc".to_vec()], "cut at {cut}");
            assert!(!r.is_mid_frame());
        }
    }

    proptest::proptest! {
        /// Any frames, cut into any chunks, come out whole and in order; arbitrary bytes never panic.
        #[test]
        fn quic_frame_reader_reassembles_any_chunking(
            frames in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..8),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let wire = framed(&refs);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.sort_unstable();
            let mut r = FrameReader::default();
            let (mut got, mut at) = (Vec::new(), 0);
            for c in cuts.into_iter().chain([wire.len()]) {
                r.push(&wire[at..c]);
                at = c;
                while let Some(f) = r.next_frame(MAX_FRAME).unwrap() {
                    got.push(f);
                }
            }
            proptest::prop_assert_eq!(got, frames);
            let mut r = FrameReader::default();
            r.push(&junk);
            while let Ok(Some(_)) = r.next_frame(64) {}
        }
    }

    #[test]
    fn quic_oversized_and_truncated_frames_are_caught() {
        let mut r = FrameReader::default();
        r.push(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.next_frame(MAX_FRAME), Err(FrameError::TooLarge(u32::MAX as usize)));
        let mut r = FrameReader::default();
        r.push(&[0, 0, 0, 9, b'x']);
        assert_eq!(r.next_frame(MAX_FRAME), Ok(None));
        assert!(r.is_mid_frame());
    }
}
