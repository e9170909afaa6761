//! The WebSocket adapter: moves bytes between a socket and its [`Session`]; all protocol meaning lives there.
//!
//! One task per connection. It writes one frame per batch (one `send`, so one flush and normally one write
//! syscall) and builds the next batch only after that write finished, so a slow socket never holds more than one
//! batch here; what piles up meanwhile stays in the topic rings, where the session conflates or disconnects.

use crate::server::AppState;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use marquee_engine::Encoding;
use marquee_protocol::{AppOp, CloseReason, Connection, Identity, Session};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::time::{MissedTickBehavior, interval, timeout};

/// The subprotocol that selects the binary encoding.
pub const BINARY_PROTOCOL: &str = "marquee.bin";
/// The subprotocol for JSON (also the default when none is asked for).
pub const JSON_PROTOCOL: &str = "marquee.json";
/// Client frames above this are refused by the WebSocket layer itself (close 1009); the session answers
/// smaller oversized frames with a `frame_too_large` error and keeps the connection.
const HARD_MAX_MESSAGE: usize = 1 << 20;

/// The token of an upgrade request: `Authorization: Bearer` or `?access_token=` (browsers cannot set headers).
pub(crate) fn upgrade_token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query.get("access_token").map(String::as_str))
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let identity = match upgrade_token(&headers, &query) {
        None => Identity::default(),
        Some(token) => match crate::auction::verify(&state, token) {
            Ok(c) => {
                crate::auction::ensure_user_topic(&state, &c.sub);
                Identity { user: Some(c.sub), publisher: c.role == crate::auth::Role::Publisher }
            }
            Err(e) => return axum::response::IntoResponse::into_response(e),
        },
    };
    let prev = state.connections.fetch_add(1, Ordering::AcqRel);
    if prev >= state.max_connections {
        state.connections.fetch_sub(1, Ordering::AcqRel);
        state.rejected.fetch_add(1, Ordering::Relaxed);
        return crate::http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            &format!("the server holds at most {} connections", state.max_connections),
        );
    }
    let guard = ConnGuard(state.clone());
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
            serve_socket(socket, &guard.0, encoding, identity).await;
            drop(guard);
        })
}

/// Decrements the connection count however the connection ends (including a failed upgrade).
#[derive(Debug)]
pub(crate) struct ConnGuard(pub(crate) Arc<AppState>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(crate) type OpResult = (u64, Result<String, (&'static str, String)>);

/// Starts the ops the session handed over (bids, publishes, logins); their answers come back on `done`. Shared
/// by the WebSocket and QUIC adapters.
pub(crate) fn start_ops(
    session: &mut impl Connection,
    state: &Arc<AppState>,
    done: &tokio::sync::mpsc::UnboundedSender<OpResult>,
) {
    while let Some(op) = session.poll_op() {
        match op {
            AppOp::Bid { id, user, lot, amount, key } => {
                let (state, done) = (state.clone(), done.clone());
                tokio::spawn(async move {
                    let r = crate::auction::submit_bid(&state, &user, &lot, &amount, &key).await;
                    let r = r
                        .map(|a| {
                            serde_json::json!({"bid_id": a.bid_id, "key": key, "replayed": a.replayed}).to_string()
                        })
                        .map_err(|e| (e.code, e.message));
                    let _ = done.send((id, r));
                });
            }
            AppOp::Publish { id, frame } => {
                let r = crate::auction::ws_publish(state, &frame).map_err(|e| (e.code, e.message));
                session.handle_op_result(id, r.as_deref().map_err(|(c, m)| (*c, m.as_str())));
            }
            AppOp::Auth { id, token } => match crate::auction::verify(state, &token) {
                Ok(c) => {
                    crate::auction::ensure_user_topic(state, &c.sub);
                    let fields = serde_json::json!({"user": c.sub}).to_string();
                    session.set_identity(Identity {
                        user: Some(c.sub),
                        publisher: c.role == crate::auth::Role::Publisher,
                    });
                    session.handle_op_result(id, Ok(&fields));
                }
                Err(e) => session.handle_op_result(id, Err((e.code, &e.message))),
            },
            _ => {}
        }
    }
}

async fn serve_socket(mut socket: WebSocket, state: &Arc<AppState>, encoding: Encoding, identity: Identity) {
    let cfg = &state.config;
    let mut session = Session::new(state.engine.clone(), encoding, cfg.session);
    session.set_identity(identity);
    let (ops_tx, mut ops_rx) = tokio::sync::mpsc::unbounded_channel::<OpResult>();
    let signal = session.signal().clone();
    let mut shutdown = state.shutdown.clone();
    let mut ping = interval(cfg.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    loop {
        if let Some(frame) = session.poll_transmit() {
            let msg = match encoding {
                Encoding::Json => match Utf8Bytes::try_from(frame.to_vec()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => unreachable!("JSON batches are built from UTF-8 pieces"),
                },
                Encoding::Binary => Message::Binary(Bytes::copy_from_slice(frame)),
            };
            match timeout(cfg.write_timeout, socket.send(msg)).await {
                Ok(Ok(())) => session.sent(),
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!("dropping a connection whose socket took no data for {:?}", cfg.write_timeout);
                    return;
                }
            }
        }
        if let Some(reason) = session.poll_close() {
            return close(socket, reason, cfg.write_timeout).await;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => session.close(CloseReason::GoingAway),
            msg = socket.recv() => if !received(msg, &mut session, state, &ops_tx, &mut last_heard) {
                return;
            },
            Some((id, r)) = ops_rx.recv() => {
                session.handle_op_result(id, r.as_deref().map_err(|(c, m)| (*c, m.as_str())));
            }
            _ = poll_fn(|cx| signal.poll_ready(cx)) => {}
            _ = ping.tick() => {
                if last_heard.elapsed() > cfg.idle_timeout {
                    session.close(CloseReason::IdleTimeout);
                } else if timeout(cfg.write_timeout, socket.send(Message::Ping(Bytes::new()))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Hands a received WebSocket message to the session (shared by the native and the SignalR WebSocket loops);
/// false when the socket is gone.
pub(crate) fn received(
    msg: Option<Result<Message, axum::Error>>,
    session: &mut impl Connection,
    state: &Arc<AppState>,
    ops_tx: &tokio::sync::mpsc::UnboundedSender<OpResult>,
    last_heard: &mut Instant,
) -> bool {
    let frame: &[u8] = match &msg {
        Some(Ok(Message::Text(t))) => t.as_bytes(),
        Some(Ok(Message::Binary(b))) => b,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
            *last_heard = Instant::now();
            return true;
        }
        Some(Ok(Message::Close(_))) | None => return false,
        Some(Err(e)) => {
            tracing::debug!("websocket read error: {e}");
            return false;
        }
    };
    *last_heard = Instant::now();
    session.handle_frame(frame, *last_heard);
    start_ops(session, state, ops_tx);
    true
}

/// Sends the close frame, then waits briefly for the client's answering close (the WebSocket closing handshake),
/// so the client reads our code and reason before the socket goes away.
pub(crate) async fn close(mut socket: WebSocket, reason: &CloseReason, write_timeout: std::time::Duration) {
    let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from(reason.reason()) };
    let patience = write_timeout.min(std::time::Duration::from_secs(1));
    if timeout(patience, socket.send(Message::Close(Some(frame)))).await.is_err() {
        return;
    }
    let _ = timeout(patience, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
