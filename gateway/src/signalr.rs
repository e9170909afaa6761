//! The SignalR hub at `/hubs/market`: negotiate, and the three SignalR transports (WebSockets, Server-Sent Events,
//! long polling) over the sans-IO [`HubSession`] of `marquee-protocol`. This module only moves bytes and
//! keeps the connection table; the hub protocol itself (handshake, hub messages, hub methods) lives in the engine,
//! and the subscriptions, batching, conflation and slow-consumer rules are the ones every gateway uses.
//!
//! A negotiated connection is an entry in [`Registry`], keyed by its secret `connectionToken`. A WebSocket takes
//! the session out of the entry and owns it (no lock per batch); Server-Sent Events and long polling leave it in
//! the entry behind a mutex, because the client's messages arrive on other requests (`POST`). Such a connection
//! also gets a small driver task for its timers and for the answers of asynchronous hub methods (bids).

use crate::auction::ApiError;
use crate::config::{Config, CorsOrigins};
use crate::server::AppState;
// The token comes as `Authorization: Bearer` or `?access_token=` (browsers cannot set headers on WebSockets and
// EventSource), as on `/ws`.
use crate::driver::{self, ConnGuard, Ended, OpResult, admit, authenticate, request_token, start_ops};
use crate::ws::{HARD_MAX_MESSAGE, Ws};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use marquee_engine::Signal;
use marquee_protocol::{CloseReason, Connection, HubSession, Identity, SessionConfig, Timers};
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio::time::{sleep, timeout};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// Where the hub lives.
pub const HUB_PATH: &str = "/hubs/market";
/// Largest body of one `POST` (SSE and long polling send); each hub message in it is also held to the session's
/// `max_frame_bytes`.
const MAX_POST_BODY: usize = 1 << 20;

/// The negotiated connections, by connection token.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<HashMap<String, Arc<Conn>>>,
}

impl Registry {
    fn get(&self, token: &str) -> Option<Arc<Conn>> {
        lock(&self.conns).get(token).cloned()
    }

    fn remove(&self, token: &str) {
        lock(&self.conns).remove(token);
    }

    /// Negotiated connections (for `/metrics`).
    pub fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    /// True when no connection is negotiated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving the other connections.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

/// One negotiated connection.
#[derive(Debug)]
struct Conn {
    token: String,
    identity: Identity,
    /// Stateful reconnect was negotiated: the session outlives a dropped WebSocket for `--signalr-client-timeout`.
    stateful: bool,
    /// The session's wake-up signal (cloned out, so waiting needs no lock).
    signal: Arc<Signal>,
    /// Wakes a waiting long poll when a newer poll or a `DELETE` ends it.
    kick: Notify,
    /// Tells a stateful connection's WebSocket that a new socket takes over (the client saw the old one fail
    /// before the server did).
    takeover: driver::Takeover,
    /// Tells the connection's driver task that its transport state changed (claimed, a poll ended, closed), so it
    /// recomputes its deadlines. One waiter: `notify_one` keeps the news until the driver looks.
    changed: Notify,
    /// Stateful reconnect: the old WebSocket parked the session (or the connection ended), for a taking-over socket.
    parked: Notify,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Option<Transport>,
    /// `None` once a WebSocket took it.
    session: Option<HubSession>,
    /// Answers of asynchronous hub methods (SSE and long polling; the driver applies them).
    ops_tx: mpsc::UnboundedSender<OpResult>,
    /// Their receiving end, taken by whichever task runs the transport (and put back when a WebSocket is parked).
    ops_rx: Option<mpsc::UnboundedReceiver<OpResult>>,
    /// Long polling: the newest poll's number; an older poll that sees another number ends with 204.
    poll_gen: u64,
    polling: bool,
    last_poll: Instant,
    posting: bool,
    /// Hub messages POSTed before any transport claimed the connection, handed to the session when one does (as
    /// ASP.NET Core buffers them in the connection's pipe until the hub starts with the first transport request).
    early: Vec<u8>,
    /// A pending-negotiation place, then a connection slot once a transport claimed the connection.
    slot: Slot,
    /// Everything, the Close message included, was handed to the transport; the connection is over.
    ended: bool,
    /// Stateful reconnect: when the WebSocket dropped and the session was put back here to wait for a new one.
    parked_at: Option<Instant>,
}

pub fn routes(config: &Config) -> Router<Arc<AppState>> {
    Router::new()
        .route(&format!("{HUB_PATH}/negotiate"), post(negotiate))
        .route(HUB_PATH, get(connect).post(send).delete(delete))
        .layer(cors(&config.cors_origins))
}

/// CORS for browser pages on other origins (`--cors-origins`). Listed origins get their exact origin echoed with
/// credentials (the SignalR JS client sends cookies and the `Authorization` header by default); `*` allows any
/// origin, as `Access-Control-Allow-Origin: *` and never with credentials (tower-http refuses to build a layer that
/// would combine them). Preflights are answered here with the hub's methods and the headers asked for; an origin
/// not allowed gets no `Access-Control-Allow-Origin`, which browsers take as a refusal.
fn cors(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(600));
    match origins {
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => layer.allow_origin(AllowOrigin::list(list.iter().cloned())).allow_credentials(true),
    }
}

/// 16 bytes from the OS's random source, URL-safe base64: a connection id or token. Fails closed: without
/// randomness negotiate answers 503 `randomness_unavailable`, never with a token someone could guess.
fn random_id() -> Result<String, ApiError> {
    random_id_from(getrandom::fill)
}

fn random_id_from(fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>) -> Result<String, ApiError> {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    if let Err(e) = fill(&mut b) {
        tracing::error!("signalr: no randomness for a connection token: {e}");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "randomness_unavailable",
            "the server cannot make a secret connection token right now; try again later",
        ));
    }
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// SignalR negotiations that no transport has claimed yet: counted apart from live connections
/// (`--max-pending-negotiations`, and `--max-pending-negotiations-per-ip` per client address), so a flood of
/// negotiations cannot take the slots of connections that carry data. A negotiation holds a [`PendingGuard`]
/// until its first transport request takes a connection slot, or until it expires.
#[derive(Debug, Default)]
pub struct Pending {
    total: std::sync::atomic::AtomicUsize,
    by_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    refused: std::sync::atomic::AtomicU64,
}

impl Pending {
    /// Negotiations waiting for a transport.
    pub fn total(&self) -> usize {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Negotiations refused with `too_many_negotiations`.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One pending negotiation's place in [`Pending`]; dropped when a transport claims the connection or it expires.
#[derive(Debug)]
struct PendingGuard {
    state: Arc<AppState>,
    ip: std::net::IpAddr,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.state.pending.total.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let mut by_ip = lock(&self.state.pending.by_ip);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Takes a pending-negotiation place for `ip`, or refuses with 503 `too_many_negotiations`.
fn admit_pending(state: &Arc<AppState>, ip: std::net::IpAddr) -> Result<PendingGuard, ApiError> {
    let c = &state.config;
    let refuse = |why: String| {
        state.pending.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_negotiations", why)
    };
    {
        let mut by_ip = lock(&state.pending.by_ip);
        let n = by_ip.entry(ip).or_default();
        if *n >= c.max_pending_negotiations_per_ip {
            return Err(refuse(format!(
                "{ip} holds {n} negotiations no transport has used yet (at most {})",
                c.max_pending_negotiations_per_ip
            )));
        }
        *n += 1;
    }
    let prev = state.pending.total.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let guard = PendingGuard { state: state.clone(), ip };
    if prev >= c.max_pending_negotiations {
        return Err(refuse(format!("at most {} negotiations may wait for a transport", c.max_pending_negotiations)));
    }
    Ok(guard)
}

/// What a negotiated connection holds: a pending-negotiation place until a transport claims it, then a
/// connection slot.
#[derive(Debug)]
enum Slot {
    Pending { _place: PendingGuard },
    Live { _slot: ConnGuard },
}

impl Slot {
    /// A transport claims the connection: trade the pending place for a connection slot (503 when full; the
    /// negotiation stays pending and the client may try again).
    fn go_live(&mut self, state: &Arc<AppState>) -> Result<(), ApiError> {
        if matches!(self, Slot::Pending { .. }) {
            *self = Slot::Live { _slot: admit(state)? };
        }
        Ok(())
    }
}

fn new_session(state: &AppState, identity: &Identity) -> HubSession {
    // The session runs SignalR's timers on every transport: hub Pings, the client timeout, the handshake deadline.
    let c = &state.config;
    let timers = Timers {
        keep_alive: Some(c.signalr.keep_alive),
        idle_timeout: Some(c.signalr.client_timeout),
        handshake_timeout: Some(c.signalr.handshake_timeout),
    };
    let mut s = HubSession::new(state.engine.clone(), SessionConfig { timers, ..c.session });
    s.set_identity(identity.clone());
    s
}

/// `POST /hubs/market/negotiate?negotiateVersion=1`.
async fn negotiate(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let identity = authenticate(&state, &headers, &query)?;
    let version: u32 = query.get("negotiateVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let connection_id = random_id()?;
    // Version 0 clients use the public id as the token.
    let token = if version >= 1 { random_id()? } else { connection_id.clone() };
    let pending = admit_pending(&state, peer.ip())?;
    let mut session = new_session(&state, &identity);
    // Stateful reconnect (WebSockets only, as in ASP.NET Core): offered when the client asks.
    let stateful = query.get("useStatefulReconnect").is_some_and(|v| v == "true");
    if stateful {
        session.enable_stateful_reconnect(state.config.signalr.reconnect_buffer, state.replay_budget.clone());
    }
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let conn = Arc::new(Conn {
        token: token.clone(),
        identity,
        stateful,
        signal: session.signal().clone(),
        kick: Notify::new(),
        takeover: driver::Takeover::default(),
        changed: Notify::new(),
        parked: Notify::new(),
        inner: Mutex::new(Inner {
            transport: None,
            session: Some(session),
            ops_tx,
            ops_rx: Some(ops_rx),
            poll_gen: 0,
            polling: false,
            last_poll: now,
            posting: false,
            early: Vec::new(),
            ended: false,
            parked_at: None,
            slot: Slot::Pending { _place: pending },
        }),
    });
    lock(&state.signalr.conns).insert(token.clone(), conn.clone());
    tokio::spawn(drive(state.clone(), conn));
    let transports = serde_json::json!([
        {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
        {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
        {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
    ]);
    let mut body = serde_json::json!({
        "negotiateVersion": version.min(1),
        "connectionId": connection_id,
        "availableTransports": transports,
    });
    if version >= 1 {
        body["connectionToken"] = token.into();
    }
    if stateful {
        body["useStatefulReconnect"] = true.into();
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}

fn unknown_id() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_connection", "no connection with this id")
}

/// Looks up `?id=`: 400 without it, 404 when unknown; a token on the request must name the negotiated user.
fn find(state: &AppState, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Arc<Conn>, ApiError> {
    let Some(id) = query.get("id") else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "missing_id", "the `id` query parameter is required"));
    };
    let conn = state.signalr.get(id).ok_or_else(unknown_id)?;
    if let Some(token) = request_token(headers, query) {
        let claims = crate::auction::verify(state, token)?;
        if conn.identity.user.as_deref() != Some(claims.sub.as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_user",
                "the token names another user than the one that negotiated this connection",
            ));
        }
    }
    Ok(conn)
}

fn transport_mismatch(t: Transport) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "transport_mismatch",
        format!("this connection uses {t:?}; a transport cannot change"),
    )
}

fn conflict(message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "transport_conflict", message)
}

/// `GET /hubs/market`: a WebSocket upgrade, an SSE stream (`Accept: text/event-stream`) or a long poll.
async fn connect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if let Ok(ws) = ws {
        return connect_websocket(state, headers, query, ws).await;
    }
    let conn = find(&state, &headers, &query)?;
    let sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if sse {
        return connect_sse(state, conn);
    }
    // Every poll answer says not to cache it, as ASP.NET Core's do: a proxy must never replay a poll.
    let mut resp = long_poll(state, conn).await?;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
    Ok(resp)
}

async fn connect_websocket(
    state: Arc<AppState>,
    headers: HeaderMap,
    query: HashMap<String, String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (session, ops, conn, guard) = if query.contains_key("id") {
        let conn = find(&state, &headers, &query)?;
        if conn.stateful {
            take_over(&conn).await;
        }
        let mut inner = lock(&conn.inner);
        // A stateful connection whose socket dropped takes a new one; otherwise one transport per connection.
        let resuming = conn.stateful && inner.parked_at.is_some();
        if let Some(t @ (Transport::ServerSentEvents | Transport::LongPolling)) = inner.transport {
            return Err(transport_mismatch(t));
        }
        if (inner.transport.is_some() && !resuming) || inner.ended {
            return Err(conflict("this connection already has a transport"));
        }
        inner.slot.go_live(&state)?;
        let (Some(mut session), Some(ops_rx)) = (inner.session.take(), inner.ops_rx.take()) else {
            return Err(conflict("this connection already has a transport"));
        };
        let mut early = std::mem::take(&mut inner.early);
        hand_over_early(&state, &mut session, &mut early, &inner.ops_tx);
        inner.transport = Some(Transport::WebSockets);
        inner.parked_at = None;
        conn.takeover.clear();
        let ops = (inner.ops_tx.clone(), ops_rx);
        drop(inner);
        (session, ops, Some(conn), None)
    } else {
        // `skipNegotiation: true`: no negotiate, so no entry in the registry.
        let identity = authenticate(&state, &headers, &query)?;
        let guard = admit(&state)?;
        (new_session(&state, &identity), mpsc::unbounded_channel(), None, Some(guard))
    };
    // Ends the connection however the socket ends, a failed upgrade included, unless it is parked.
    let claimed = Claimed { state: state.clone(), conn };
    Ok(ws
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(HARD_MAX_MESSAGE)
        .max_frame_size(HARD_MAX_MESSAGE)
        .on_failed_upgrade(|e| tracing::debug!("signalr websocket upgrade failed: {e}"))
        .on_upgrade(move |socket| async move {
            let (mut session, (ops_tx, mut ops_rx), mut claimed) = (session, ops, claimed);
            let conn = claimed.conn.clone();
            let over = serve_websocket(socket, &state, &mut session, &ops_tx, &mut ops_rx, conn.as_deref()).await;
            // A dropped socket keeps its session only with stateful reconnect on (negotiated, and a version-2 handshake).
            if let Some(conn) = conn.filter(|c| !over && c.stateful && session.stateful_reconnect()) {
                park(&state, &conn, session, ops_rx);
                claimed.conn = None;
            }
            drop(guard);
        }))
}

/// A negotiated connection a WebSocket claimed: removed from the table when dropped.
struct Claimed {
    state: Arc<AppState>,
    conn: Option<Arc<Conn>>,
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(conn) = &self.conn {
            lock(&conn.inner).ended = true;
            conn.parked.notify_waiters();
            self.state.signalr.remove(&conn.token);
        }
    }
}

/// Stateful reconnect: a new socket for a connection whose old one the server still holds (it has not seen it
/// fail yet): asks the old one to let go, and waits briefly for its session to be parked.
async fn take_over(conn: &Conn) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        // Listen before looking, so a park in between is not missed.
        let parked = conn.parked.notified();
        tokio::pin!(parked);
        parked.as_mut().enable();
        {
            let inner = lock(&conn.inner);
            if inner.transport != Some(Transport::WebSockets) || inner.parked_at.is_some() || inner.ended {
                return;
            }
        }
        conn.takeover.request();
        if tokio::time::timeout_at(deadline, parked).await.is_err() {
            return;
        }
    }
}

/// Stateful reconnect: keeps the session of a dropped WebSocket for a new one, for `--signalr-client-timeout`.
fn park(state: &Arc<AppState>, conn: &Arc<Conn>, session: HubSession, ops_rx: mpsc::UnboundedReceiver<OpResult>) {
    let at = Instant::now();
    {
        let mut inner = lock(&conn.inner);
        inner.session = Some(session);
        // Answers of bids still in flight wait in the channel for the next socket.
        inner.ops_rx = Some(ops_rx);
        inner.parked_at = Some(at);
    }
    conn.parked.notify_waiters();
    let (state, conn) = (state.clone(), conn.clone());
    tokio::spawn(async move {
        sleep(state.config.signalr.client_timeout).await;
        let mut inner = lock(&conn.inner);
        if inner.parked_at == Some(at) {
            tracing::debug!("signalr: no reconnect within the client timeout; connection dropped");
            inner.ended = true;
            inner.session = None;
            drop(inner);
            state.signalr.remove(&conn.token);
        }
    });
}

/// Runs a hub WebSocket; true when the session is over (closed), false when only the socket went away.
async fn serve_websocket(
    socket: WebSocket,
    state: &Arc<AppState>,
    session: &mut HubSession,
    ops_tx: &mpsc::UnboundedSender<OpResult>,
    ops_rx: &mut mpsc::UnboundedReceiver<OpResult>,
    conn: Option<&Conn>,
) -> bool {
    let write_timeout = state.config.write_timeout;
    let mut ws = Ws::new(socket);
    // A stateful connection on a new socket: first the Sequence and what the client has not acknowledged.
    if session.handshake_done()
        && let Some(resume) = session.resume()
    {
        let binary = session.binary_frames();
        let sent = timeout(write_timeout, driver::Transport::<HubSession>::send(&mut ws, resume.into(), binary)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return false;
        }
    }
    let takeover = conn.filter(|c| c.stateful).map(|c| &c.takeover);
    match driver::run(&mut ws, session, state, ops_tx, ops_rx, takeover).await {
        Ended::Closed => {
            if let Some(reason) = session.poll_close() {
                ws.close(reason, write_timeout).await;
            }
            true
        }
        Ended::Lost => false,
        Ended::TakenOver => {
            tracing::debug!("signalr: a new socket takes this stateful connection over");
            false
        }
    }
}

/// Claims the connection for SSE or long polling; the first request decides. Hub messages POSTed before it are
/// handed to the session now, once the session knows its transport (SSE carries text only).
fn claim(state: &Arc<AppState>, conn: &Conn, transport: Transport) -> Result<bool, ApiError> {
    let mut inner = lock(&conn.inner);
    match inner.transport {
        None if !inner.ended => {
            inner.slot.go_live(state)?;
            inner.transport = Some(transport);
            let inner = &mut *inner;
            if let Some(session) = inner.session.as_mut() {
                match transport {
                    Transport::ServerSentEvents => session.set_text_only(),
                    Transport::LongPolling => session.set_inherent_keep_alive(),
                    Transport::WebSockets => {}
                }
                // The transport connected: a sign of life, which arms the session's timers.
                session.heard(Instant::now());
                hand_over_early(state, session, &mut inner.early, &inner.ops_tx);
            }
            conn.changed.notify_one();
            Ok(true)
        }
        Some(t) if t == transport && transport == Transport::LongPolling => Ok(false),
        // As ASP.NET Core: another transport than the connection's is a bad request, the same one again a conflict.
        Some(t) if t != transport => Err(transport_mismatch(t)),
        _ => Err(conflict("this connection already has a transport")),
    }
}

/// Gives the session the hub messages POSTed before its transport connected.
fn hand_over_early(
    state: &Arc<AppState>,
    session: &mut HubSession,
    early: &mut Vec<u8>,
    ops_tx: &mpsc::UnboundedSender<OpResult>,
) {
    if !early.is_empty() {
        session.handle_frame(early, Instant::now());
        start_ops(session, state, ops_tx);
        *early = Vec::new();
    }
}

/// Takes the next batch out of a shared session, framed for the transport by `frame` (one copy out of the
/// session's buffer): `Some(bytes)` to send, `None` when there is nothing yet; marks the connection ended once the
/// close (and the Close message) went out.
fn take_batch(conn: &Conn, frame: impl FnOnce(Bytes) -> Bytes) -> Result<Option<Bytes>, ()> {
    let mut inner = lock(&conn.inner);
    if inner.ended {
        return Err(());
    }
    let Some(session) = inner.session.as_mut() else { return Err(()) };
    let frame = session.poll_transmit().map(frame);
    if frame.is_some() {
        session.sent();
    }
    if session.poll_close().is_some() && frame.is_none() {
        inner.ended = true;
        return Err(());
    }
    Ok(frame)
}

fn connect_sse(state: Arc<AppState>, conn: Arc<Conn>) -> Result<Response, ApiError> {
    claim(&state, &conn, Transport::ServerSentEvents)?;
    struct Stream {
        conn: Arc<Conn>,
        state: Arc<AppState>,
        first: bool,
    }
    // The body ends (and the connection is removed) when the client goes away or the session closes.
    impl Drop for Stream {
        fn drop(&mut self) {
            lock(&self.conn.inner).ended = true;
            self.state.signalr.remove(&self.conn.token);
        }
    }
    let s = Stream { conn, state, first: true };
    let body = futures_util::stream::unfold(s, |mut s| async move {
        if s.first {
            // Some EventSource implementations report `open` only once the first bytes arrive.
            s.first = false;
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from_static(b":\r\n\r\n")), s));
        }
        let mut shutdown = s.state.shutdown.clone();
        loop {
            match take_batch(&s.conn, |b| sse_event(&b)) {
                Err(()) => return None,
                Ok(Some(event)) => return Some((Ok(event), s)),
                Ok(None) => {}
            }
            let signal = s.conn.signal.clone();
            tokio::select! {
                _ = poll_fn(|cx| signal.poll_ready(cx)) => {}
                _ = shutdown.changed() => {
                    if let Some(session) = lock(&s.conn.inner).session.as_mut() {
                        session.close(CloseReason::GoingAway);
                    }
                }
            }
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache, no-store")
        .header(header::PRAGMA, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// One SSE event: every line of the payload as a `data:` line (hub messages carry no raw newlines, but a
/// payload may in principle), then a blank line.
fn sse_event(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 16);
    for line in payload.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

async fn long_poll(state: Arc<AppState>, conn: Arc<Conn>) -> Result<Response, ApiError> {
    match claim(&state, &conn, Transport::LongPolling) {
        Err(e) => return Err(e),
        // The first poll only establishes the connection; the client ignores what it carries.
        Ok(true) => return Ok(StatusCode::OK.into_response()),
        Ok(false) => {}
    }
    let my_gen = {
        let mut inner = lock(&conn.inner);
        inner.poll_gen += 1;
        inner.polling = true;
        inner.poll_gen
    };
    // A newer poll ends this one's predecessor.
    conn.kick.notify_waiters();
    let deadline = tokio::time::Instant::now() + state.config.signalr.poll_timeout;
    let mut shutdown = state.shutdown.clone();
    let resp = loop {
        // Listen for a kick before looking, so one that comes in between is not lost.
        let kicked = conn.kick.notified();
        tokio::pin!(kicked);
        kicked.as_mut().enable();
        if lock(&conn.inner).poll_gen != my_gen {
            break StatusCode::NO_CONTENT.into_response();
        }
        match take_batch(&conn, |b| b) {
            Err(()) => break StatusCode::NO_CONTENT.into_response(),
            Ok(Some(frame)) => {
                let binary = lock(&conn.inner).session.as_ref().is_some_and(HubSession::binary_frames);
                let ct = if binary { "application/octet-stream" } else { "text/plain; charset=utf-8" };
                break ([(header::CONTENT_TYPE, ct)], frame).into_response();
            }
            Ok(None) => {}
        }
        let signal = conn.signal.clone();
        tokio::select! {
            _ = poll_fn(|cx| signal.poll_ready(cx)) => {}
            _ = kicked => {}
            _ = tokio::time::sleep_until(deadline) => break StatusCode::OK.into_response(),
            _ = shutdown.changed() => {
                if let Some(session) = lock(&conn.inner).session.as_mut() {
                    session.close(CloseReason::GoingAway);
                }
            }
        }
    };
    let mut inner = lock(&conn.inner);
    if inner.poll_gen == my_gen {
        inner.polling = false;
        inner.last_poll = Instant::now();
        conn.changed.notify_one();
    }
    let ended = inner.ended;
    drop(inner);
    if ended {
        state.signalr.remove(&conn.token);
    }
    Ok(resp)
}

/// `POST /hubs/market?id=`: the client's hub messages on SSE and long polling.
async fn send(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    let conn = find(&state, &headers, &query)?;
    {
        let mut inner = lock(&conn.inner);
        match inner.transport {
            Some(Transport::WebSockets) => {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "transport_mismatch",
                    "POST requests are not allowed for WebSocket connections",
                ));
            }
            _ if inner.ended => return Err(unknown_id()),
            _ if inner.posting => return Err(conflict("another POST for this connection is in progress")),
            _ => inner.posting = true,
        }
    }
    let bytes = crate::auction::read_body(body, MAX_POST_BODY).await;
    let mut inner = lock(&conn.inner);
    inner.posting = false;
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(e) => {
            drop(inner);
            return Err(e);
        }
    };
    if inner.transport.is_none() {
        // Before the first poll or SSE request: kept until a transport claims the connection.
        if inner.early.len() + bytes.len() > MAX_POST_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("more than {MAX_POST_BODY} bytes were sent before a transport connected"),
            ));
        }
        inner.early.extend_from_slice(&bytes);
        return Ok(StatusCode::OK.into_response());
    }
    let now = Instant::now();
    let ops_tx = inner.ops_tx.clone();
    let Some(session) = inner.session.as_mut() else { return Err(unknown_id()) };
    session.handle_frame(&bytes, now);
    start_ops(session, &state, &ops_tx);
    drop(inner);
    conn.signal.wake();
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /hubs/market?id=`: the client stops; a pending long poll ends with 204.
async fn delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let conn = find(&state, &headers, &query)?;
    {
        let mut inner = lock(&conn.inner);
        inner.ended = true;
        if let Some(s) = inner.session.as_mut() {
            s.close(CloseReason::Normal);
        }
    }
    conn.kick.notify_waiters();
    conn.changed.notify_one();
    conn.signal.wake();
    state.signalr.remove(&conn.token);
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The driver of a negotiated connection: forgets it when no transport claims it within the handshake timeout; for
/// SSE and long polling (whose session stays in the entry) it runs the session's timers (hub Pings, the client
/// timeout, the handshake deadline), gives up a transport that stopped taking data (an SSE client that stopped
/// reading, a long-poller that stopped polling), applies the answers of asynchronous hub methods, and closes on
/// shutdown. It sleeps until the next deadline; `Conn::changed` wakes it when the transport's state changes.
async fn drive(state: Arc<AppState>, conn: Arc<Conn>) {
    let cfg = state.config.signalr;
    let unclaimed_deadline = tokio::time::Instant::now() + cfg.handshake_timeout;
    // Wait for a transport; a WebSocket runs its session itself.
    loop {
        let transport = lock(&conn.inner).transport;
        match transport {
            Some(Transport::WebSockets) => return,
            Some(_) => break,
            None if lock(&conn.inner).ended => return,
            None => {
                if tokio::time::timeout_at(unclaimed_deadline, conn.changed.notified()).await.is_err() {
                    tracing::debug!("signalr: negotiated connection never connected; dropped");
                    lock(&conn.inner).ended = true;
                    state.signalr.remove(&conn.token);
                    return;
                }
            }
        }
    }
    let Some(mut ops_rx) = lock(&conn.inner).ops_rx.take() else { return };
    let mut shutdown = state.shutdown.clone();
    // When the session closed; a transport that has not delivered the Close by a write timeout later is given up.
    let mut closed_at: Option<Instant> = None;
    loop {
        let deadline = {
            let inner = lock(&conn.inner);
            if inner.ended {
                break;
            }
            let session = inner.session.as_ref();
            if closed_at.is_none() && session.is_some_and(|s| s.poll_close().is_some()) {
                closed_at = Some(Instant::now());
            }
            let give_up = closed_at.map(|at| at + state.config.write_timeout);
            let poller_gone = (inner.transport == Some(Transport::LongPolling) && !inner.polling)
                .then(|| inner.last_poll + cfg.client_timeout);
            let timers = session.and_then(|s| s.poll_timeout());
            [give_up, poller_gone, timers].into_iter().flatten().min().map(tokio::time::Instant::from_std)
        };
        tokio::select! {
            Some(done) = ops_rx.recv() => {
                if let Some(s) = lock(&conn.inner).session.as_mut() {
                    driver::op_done(s, done);
                }
                conn.signal.wake();
            }
            _ = shutdown.changed() => {
                if let Some(s) = lock(&conn.inner).session.as_mut() {
                    s.close(CloseReason::GoingAway);
                }
                conn.signal.wake();
                // Give the transport a moment to deliver the Close message.
                sleep(Duration::from_millis(500)).await;
                break;
            }
            _ = conn.changed.notified() => {}
            _ = driver::sleep_until(deadline) => {
                let now = Instant::now();
                let mut inner = lock(&conn.inner);
                if closed_at.is_some_and(|at| now >= at + state.config.write_timeout) {
                    tracing::debug!("signalr: a closed connection's transport took nothing; dropped");
                    break;
                }
                if inner.transport == Some(Transport::LongPolling)
                    && !inner.polling
                    && now >= inner.last_poll + cfg.client_timeout
                {
                    tracing::debug!("signalr: a long-polling client stopped polling; dropped");
                    break;
                }
                if let Some(s) = inner.session.as_mut() {
                    s.handle_timeout(now);
                }
                drop(inner);
                conn.signal.wake();
            }
        }
    }
    lock(&conn.inner).ended = true;
    conn.kick.notify_waiters();
    state.signalr.remove(&conn.token);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalr_connection_tokens_are_random_and_fail_closed_without_randomness() {
        let (a, b) = (random_id().unwrap(), random_id().unwrap());
        assert_eq!(a.len(), 22, "16 bytes in URL-safe base64: {a}");
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
        assert_ne!(a, b);
        // Reading /dev/urandom used to fall back to sixteen zero bytes: the same token for everyone.
        let err = random_id_from(|_| Err(getrandom::Error::UNSUPPORTED)).unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::SERVICE_UNAVAILABLE, "randomness_unavailable"));
    }
}
