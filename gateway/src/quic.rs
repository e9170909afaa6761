//! The QUIC adapter: moves bytes between quinn streams and a [`Session`]; all protocol meaning lives there, as on
//! WebSocket.
//!
//! One task per connection. The ALPN picks the encoding (`marquee.json/1` or `marquee.bin/1`). The client opens
//! one bidirectional stream, the control stream, and sends its ops there; the server opens one unidirectional
//! stream and writes every batch the session builds (answers, snapshots and events, in the session's order) to it
//! as one length-prefixed frame, one write per batch. Every frame on every stream is a u32 big-endian length and
//! that many bytes. Stream limits are enforced by QUIC itself (one bidirectional stream, no unidirectional ones from
//! the client); a frame whose length exceeds [`MAX_FRAME`] or that a FIN cuts short closes the connection with
//! [`ErrorCode::BadFrame`] (the framing is [`ControlCodec`], tokio-util's length-delimited codec).
//!
//! Ticks of subscriptions made with `"datagrams": true` go as QUIC datagrams instead: one batch per datagram
//! (no length prefix), packed by the session up to the path's datagram size; quinn drops the oldest unsent
//! datagram when its buffer is full, so the newest values win. Reliable topics never go as datagrams.
//!
//! QUIC has no upgrade request to carry a token: a client logs in with the `auth` op on the control stream, and
//! bids with the `bid` op there. Not here: 0-RTT (off: a replayed bid must never be possible).

use crate::driver::{self, Ended, Incoming};
use crate::server::AppState;
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{FutureExt, StreamExt};
use marquee_engine::Encoding;
use marquee_protocol::{Connection, Identity, Session, SessionConfig};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

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

/// The control stream's framing: tokio-util's [`LengthDelimitedCodec`] (a u32 big-endian length, then that many
/// bytes; a length over the limit is refused before anything is buffered for it), with typed errors. The codec
/// leaves each frame's length prefix in the buffer until the whole frame arrived (`num_skip(0)`), so a FIN right
/// after a prefix still counts as a cut frame; [`Decoder::decode`] hands back the payload alone.
#[derive(Debug)]
pub struct ControlCodec(LengthDelimitedCodec);

/// Bytes of a length prefix.
const PREFIX: usize = 4;

impl ControlCodec {
    /// Frames of at most `max` bytes (not counting the prefix).
    pub fn new(max: usize) -> ControlCodec {
        let codec = LengthDelimitedCodec::builder()
            .length_field_type::<u32>()
            .big_endian()
            .max_frame_length(max)
            // The length counts the payload; the frame split off counts the prefix too.
            .length_adjustment(PREFIX as isize)
            .num_skip(0)
            .new_codec();
        ControlCodec(codec)
    }
}

impl Default for ControlCodec {
    /// Frames of at most [`MAX_FRAME`] bytes.
    fn default() -> ControlCodec {
        ControlCodec::new(MAX_FRAME)
    }
}

/// A control stream that broke the framing, or could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix over the limit.
    TooLarge,
    /// The stream ended inside a frame, this many bytes into it (its prefix included).
    Truncated(usize),
    /// Reading the stream failed (reset, connection lost).
    Io(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> FrameError {
        FrameError::Io(e)
    }
}

impl Decoder for ControlCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.0.decode(src) {
            Ok(Some(mut frame)) => {
                frame.advance(PREFIX);
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) if e.get_ref().is_some_and(|e| e.is::<LengthDelimitedCodecError>()) => Err(FrameError::TooLarge),
            Err(e) => Err(FrameError::Io(e)),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated(src.len())),
        }
    }
}

/// Reads a certificate chain and its private key (PEM): (chain, key, the chain's PEM text).
pub(crate) fn load_cert(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String)> {
    let pem = std::fs::read_to_string(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate PEM in {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("bad key in {}", key.display()))?;
    Ok((certs, key, pem))
}

/// Builds the QUIC endpoint: TLS from `config.tls` or a fresh self-signed certificate.
pub fn bind(config: &crate::Config, addr: SocketAddr) -> anyhow::Result<(quinn::Endpoint, QuicInfo)> {
    let (certs, key, cert_pem) = match &config.tls {
        Some((cert, key)) => load_cert(cert, key)?,
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
        let Ok(guard) = driver::admit(&state) else {
            incoming.refuse();
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _guard = guard;
            match incoming.await {
                Ok(conn) => serve_connection(conn, &state).await,
                Err(e) => tracing::debug!("quic handshake failed: {e}"),
            }
        });
    }
    // Tasks close their connections with 1001 on the same signal; wait for those closes to be sent.
    let _ = timeout(Duration::from_millis(1500), endpoint.wait_idle()).await;
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
    let (_control_tx, control) = match timeout(cfg.idle_timeout, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::debug!("quic connection ended before its control stream: {e}"),
        Err(_) => return close_with(&conn, ErrorCode::NoControlStream, "no control stream"),
    };
    let push = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return tracing::debug!("cannot open the push stream: {e}"),
    };
    // Datagram subscriptions only when the client accepts datagrams at all. Keep-alives and the idle timeout
    // are QUIC's own (`bind`), so the session runs no timers here.
    let datagrams = conn.max_datagram_size().is_some();
    let mut session =
        Session::new(state.engine.clone(), encoding, SessionConfig { datagrams, ..cfg.session }).length_prefixed();
    session.set_identity(Identity::default());
    let (ops_tx, mut ops_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut quic = Quic { conn, push, frames: FramedRead::new(control, ControlCodec::default()) };
    if driver::run(&mut quic, &mut session, state, &ops_tx, &mut ops_rx, None).await == Ended::Closed
        && let Some(reason) = session.poll_close()
    {
        // Finishes the push stream so the client reads the last batch, then closes with the session's code.
        let _ = quic.push.finish();
        let _ = timeout(Duration::from_secs(1), quic.push.stopped()).await;
        quic.conn.close(u32::from(reason.code()).into(), reason.reason().as_bytes());
    }
}

/// A QUIC connection as a [`driver::Transport`]: ops on the client's control stream, batches on the server's push
/// stream (each with a u32 big-endian length prefix), datagram subscriptions as datagrams.
struct Quic {
    conn: quinn::Connection,
    push: quinn::SendStream,
    frames: FramedRead<quinn::RecvStream, ControlCodec>,
}

impl Quic {
    /// What a read of the control stream means to the driver; a broken stream closes the connection here, with
    /// the code that says how it broke.
    fn incoming(&self, frame: Option<Result<BytesMut, FrameError>>) -> Incoming {
        match frame {
            Some(Ok(f)) => Incoming::Frame(f.freeze()),
            Some(Err(FrameError::TooLarge)) => {
                close_with(&self.conn, ErrorCode::BadFrame, &format!("a frame exceeds {MAX_FRAME} bytes"));
                Incoming::Gone
            }
            Some(Err(FrameError::Truncated(_))) => {
                close_with(&self.conn, ErrorCode::BadFrame, "control stream ended inside a frame");
                Incoming::Gone
            }
            Some(Err(FrameError::Io(e))) => {
                tracing::debug!("quic control stream read error: {e}");
                close_with(&self.conn, ErrorCode::NoControlStream, "control stream reset");
                Incoming::Gone
            }
            None => {
                close_with(&self.conn, ErrorCode::Done, "control stream finished");
                Incoming::Gone
            }
        }
    }
}

impl driver::Transport<Session> for Quic {
    /// The frame carries its length prefix already (the session's batch keeps room for it), and quinn keeps the
    /// bytes it is given until they are acknowledged: no copy on the way.
    async fn send(&mut self, frame: Bytes, _binary: bool) -> Result<(), ()> {
        self.push.write_chunk(frame).await.map_err(|e| tracing::debug!("quic push stream write failed: {e}"))
    }

    async fn recv(&mut self) -> Incoming {
        let frame = self.frames.next().await;
        self.incoming(frame)
    }

    fn recv_now(&mut self) -> Option<Incoming> {
        let frame = self.frames.next().now_or_never()?;
        Some(self.incoming(frame))
    }

    fn after_transmit(&mut self, session: &mut Session) {
        send_datagrams(&self.conn, session);
    }

    fn write_timed_out(&mut self) {
        close_with(&self.conn, ErrorCode::WriteTimeout, "write timeout");
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
        if let Err(e) = conn.send_datagram(d) {
            return tracing::debug!("quic datagram not sent: {e}");
        }
    }
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

    /// Feeds `chunks` to a codec as reads would, then the end of the stream: the frames, and how it ended.
    fn decode_all(codec: &mut ControlCodec, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Result<Option<BytesMut>, FrameError>) {
        let (mut buf, mut got) = (BytesMut::new(), Vec::new());
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => got.push(f.to_vec()),
                    Ok(None) => break,
                    Err(e) => return (got, Err(e)),
                }
            }
        }
        (got, codec.decode_eof(&mut buf))
    }

    #[test]
    fn quic_frames_split_at_any_chunking() {
        let wire = framed(&[b"{\"op\":\"ping\"}", b"", b"abc"]);
        for cut in 0..wire.len() {
            let (got, end) = decode_all(&mut ControlCodec::default(), &[&wire[..cut], &wire[cut..]]);
            assert_eq!(got, [b"{\"op\":\"ping\"}".to_vec(), Vec::new(), b"abc".to_vec()], "cut at {cut}");
            assert!(matches!(end, Ok(None)), "a clean end after whole frames: {end:?}");
        }
    }

    proptest::proptest! {
        /// Any frames, cut into any chunks, come out whole and in order; arbitrary bytes never panic.
        #[test]
        fn quic_control_codec_reassembles_any_chunking(
            frames in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..8),
            cuts in proptest::collection::vec(0usize..400, 0..8),
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let wire = framed(&refs);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.sort_unstable();
            let chunks: Vec<&[u8]> =
                [0].iter().chain(&cuts).zip(cuts.iter().chain([&wire.len()])).map(|(&a, &b)| &wire[a..b]).collect();
            let (got, end) = decode_all(&mut ControlCodec::default(), &chunks);
            proptest::prop_assert_eq!(got, frames);
            proptest::prop_assert!(matches!(end, Ok(None)));
            let _ = decode_all(&mut ControlCodec::new(64), &[&junk]);
        }
    }

    #[test]
    fn quic_oversized_and_truncated_frames_are_caught() {
        let (_, end) = decode_all(&mut ControlCodec::default(), &[&[0xff, 0xff, 0xff, 0xff]]);
        assert!(matches!(end, Err(FrameError::TooLarge)), "{end:?}");
        let at_limit = (MAX_FRAME as u32).to_be_bytes();
        let (got, end) = decode_all(&mut ControlCodec::default(), &[&at_limit]);
        assert!(got.is_empty() && matches!(end, Err(FrameError::Truncated(4))), "a frame of MAX_FRAME is allowed");
        let (_, end) = decode_all(&mut ControlCodec::default(), &[&[0, 0, 0, 9, b'x']]);
        assert!(matches!(end, Err(FrameError::Truncated(5))), "{end:?}");
    }

    /// tokio-util's codec strips a prefix as soon as it has read it, and its default end-of-stream check only
    /// looks at the buffer: a FIN right after a prefix would have looked like a clean end.
    #[test]
    fn quic_a_fin_right_after_a_length_prefix_is_a_cut_frame() {
        let (got, end) = decode_all(&mut ControlCodec::default(), &[&framed(&[b"ok"]), &[0, 0, 0, 9]]);
        assert_eq!(got, [b"ok".to_vec()]);
        assert!(matches!(end, Err(FrameError::Truncated(4))), "{end:?}");
    }
}
