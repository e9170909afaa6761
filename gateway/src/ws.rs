//! The WebSocket adapter: moves bytes between a socket and its [`Session`]; all protocol meaning lives there, and
//! the loop is the shared [`driver::run`].
//!
//! One task per connection. It writes one frame per batch (one `send`, so one flush and normally one write
//! syscall) and builds the next batch only after that write finished, so a slow socket never holds more than one
//! batch here; what piles up meanwhile stays in the topic rings, where the session conflates or disconnects.

use crate::driver::{self, Ended, Incoming, Transport};
use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use marquee_engine::Encoding;
use marquee_protocol::{CloseReason, Connection, Session, SessionConfig, Timers};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::timeout;

/// The subprotocol that selects the binary encoding.
pub const BINARY_PROTOCOL: &str = "marquee.bin";
/// The subprotocol for JSON (also the default when none is asked for).
pub const JSON_PROTOCOL: &str = "marquee.json";
/// Client frames above this are refused by the WebSocket layer itself (close 1009); the session answers
/// smaller oversized frames with a `frame_too_large` error and keeps the connection.
pub(crate) const HARD_MAX_MESSAGE: usize = 1 << 20;

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let identity = match driver::authenticate(&state, &headers, &query) {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    let guard = match driver::admit(&state) {
        Ok(guard) => guard,
        Err(e) => return e.into_response(),
    };
    ws.protocols([BINARY_PROTOCOL, JSON_PROTOCOL])
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(HARD_MAX_MESSAGE)
        .max_frame_size(HARD_MAX_MESSAGE)
        .on_failed_upgrade(|e| tracing::debug!("websocket upgrade failed: {e}"))
        .on_upgrade(move |socket| async move {
            let encoding = match socket.protocol().map(|p| p.as_bytes()) {
                Some(p) if p == BINARY_PROTOCOL.as_bytes() => Encoding::Binary,
                _ => Encoding::Json,
            };
            let state = &guard.0;
            let cfg = &state.config;
            // WebSocket pings every `--ping-interval`; `--idle-timeout` of silence closes with 4000.
            let timers = Timers {
                keep_alive: Some(cfg.ping_interval),
                idle_timeout: Some(cfg.idle_timeout),
                ..Timers::default()
            };
            let mut session = Session::new(state.engine.clone(), encoding, SessionConfig { timers, ..cfg.session });
            session.set_identity(identity);
            let (ops_tx, mut ops_rx) = tokio::sync::mpsc::unbounded_channel();
            let mut socket = Ws::new(socket);
            if driver::run(&mut socket, &mut session, state, &ops_tx, &mut ops_rx, None).await == Ended::Closed
                && let Some(reason) = session.poll_close()
            {
                socket.close(reason, cfg.write_timeout).await;
            }
        })
}

/// A WebSocket as a [`Transport`] (also the SignalR hub's WebSocket transport).
pub(crate) struct Ws {
    socket: WebSocket,
    /// A Close arrived in [`Transport::recv_now`], whose answer [`Transport::recv`] still has to write.
    closed_by_client: bool,
}

impl<C: Connection> Transport<C> for Ws {
    async fn send(&mut self, frame: Bytes, binary: bool) -> Result<(), ()> {
        let msg = if binary {
            Message::Binary(frame)
        } else {
            // Batches are built from UTF-8 pieces (checked here, not copied); a failure would be a bug, and drops
            // the connection.
            Message::Text(Utf8Bytes::try_from(frame).map_err(|_| ())?)
        };
        self.socket.send(msg).await.map_err(|_| ())
    }

    async fn recv(&mut self) -> Incoming {
        if self.closed_by_client {
            return self.answer_close().await;
        }
        let msg = self.socket.recv().await;
        self.incoming(msg).await
    }

    fn recv_now(&mut self) -> Option<Incoming> {
        match self.socket.recv().now_or_never()? {
            // The Close needs its answer written, which cannot wait here: the next `recv` does it.
            Some(Ok(Message::Close(_))) => {
                self.closed_by_client = true;
                None
            }
            msg => self.incoming(msg).now_or_never(),
        }
    }

    async fn ping(&mut self) -> Result<(), ()> {
        self.socket.send(Message::Ping(Bytes::new())).await.map_err(|_| ())
    }
}

/// The close a read error calls for, when the client broke the WebSocket rules (RFC 6455 section 7.4.1) rather
/// than went away.
fn violation(e: axum::Error) -> Option<CloseReason> {
    let e = e.into_inner().downcast::<tungstenite::Error>().ok()?;
    match *e {
        tungstenite::Error::Capacity(c) => Some(CloseReason::MessageTooLarge(c.to_string())),
        tungstenite::Error::Utf8(_) => Some(CloseReason::InvalidPayload("a text message that is not UTF-8".into())),
        // A socket that ended without a Close is a client gone (a dropped network: SignalR stateful reconnect
        // parks the session for the next socket), not a rule broken.
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(p) => Some(CloseReason::ProtocolError(p.to_string())),
        _ => None,
    }
}

impl Ws {
    pub(crate) fn new(socket: WebSocket) -> Ws {
        Ws { socket, closed_by_client: false }
    }

    /// The WebSocket layer queued the answering Close frame; writes it out before the socket goes away, so the
    /// client sees a clean close (1000), not an abnormal one (1006).
    async fn answer_close(&mut self) -> Incoming {
        let _ = futures_util::SinkExt::flush(&mut self.socket).await;
        Incoming::Gone
    }

    /// What a received message means to the driver.
    async fn incoming(&mut self, msg: Option<Result<Message, axum::Error>>) -> Incoming {
        match msg {
            Some(Ok(Message::Text(t))) => Incoming::Frame(t.into()),
            Some(Ok(Message::Binary(b))) => Incoming::Frame(b),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Heard,
            Some(Ok(Message::Close(_))) => self.answer_close().await,
            None => Incoming::Gone,
            Some(Err(e)) => {
                tracing::debug!("websocket read error: {e}");
                violation(e).map_or(Incoming::Gone, Incoming::Violation)
            }
        }
    }

    /// Sends the close frame, then waits briefly for the client's answering close (the WebSocket closing
    /// handshake), so the client reads our code and reason before the socket goes away.
    pub(crate) async fn close(mut self, reason: &CloseReason, write_timeout: std::time::Duration) {
        let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from(reason.reason()) };
        let patience = driver::close_patience(write_timeout);
        if timeout(patience, self.socket.send(Message::Close(Some(frame)))).await.is_err() {
            return;
        }
        let _ = timeout(patience, async {
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
