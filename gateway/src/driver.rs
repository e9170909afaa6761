//! What every transport shares: admission (the connection limit and its guard), the identity of a token, the ops a
//! session hands over (bids, publishes, logins), and [`run`], the one loop that drives a session over a duplex
//! transport (native WebSocket, QUIC, SignalR over WebSocket).
//!
//! The loop owns no protocol and no timer of its own: it writes what [`Connection::poll_transmit`] returns (one
//! frame per batch, the next batch built only once that write finished), hands frames to the session, and sleeps
//! until the session's [`Connection::poll_timeout`]. Server-Sent Events and long polling, whose requests come and
//! go, drive the same session timers from `signalr.rs`.

use crate::auction::ApiError;
use crate::server::AppState;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use marquee_protocol::{AppOp, CloseReason, Connection, Identity};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio::time::timeout;

/// Counts a connection against `max_connections` while it lives (a failed upgrade or handshake included).
#[derive(Debug)]
pub(crate) struct ConnGuard(pub(crate) Arc<AppState>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits one more connection, or refuses with 503 `too_many_connections` when the server is full.
pub(crate) fn admit(state: &Arc<AppState>) -> Result<ConnGuard, ApiError> {
    let prev = state.connections.fetch_add(1, Ordering::AcqRel);
    let guard = ConnGuard(state.clone());
    if prev >= state.max_connections {
        state.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("the server holds at most {} connections", state.max_connections),
        ));
    }
    Ok(guard)
}

/// The token of a request: `Authorization: Bearer` or `?access_token=` (browsers cannot set headers on
/// WebSockets and EventSource).
pub(crate) fn request_token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    // The scheme matches without regard to case (RFC 9110), as ASP.NET Core's bearer handler does.
    let bearer = |v: &'a str| v.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| &v[7..]);
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .or(query.get("access_token").map(String::as_str))
}

/// Who a token names (its user's private topic is created on the way); an error when it does not check out.
pub(crate) fn identity_of(state: &AppState, token: &str) -> Result<Identity, ApiError> {
    let c = crate::auction::verify(state, token)?;
    crate::auction::ensure_user_topic(state, &c.sub);
    Ok(Identity { user: Some(c.sub), publisher: c.role == crate::auth::Role::Publisher })
}

/// The identity of a request: anonymous without a token.
pub(crate) fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, ApiError> {
    request_token(headers, query).map_or(Ok(Identity::default()), |token| identity_of(state, token))
}

/// The answer of an op that completes later (a bid): its id and result fields or `(code, message)`.
pub(crate) type OpResult = (u64, Result<String, (&'static str, String)>);

/// Starts the ops the session handed over; answers that take time come back on `done`.
pub(crate) fn start_ops(session: &mut impl Connection, state: &Arc<AppState>, done: &mpsc::UnboundedSender<OpResult>) {
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
            AppOp::Auth { id, token } => match identity_of(state, &token) {
                Ok(identity) => {
                    let fields = serde_json::json!({"user": identity.user}).to_string();
                    session.set_identity(identity);
                    session.handle_op_result(id, Ok(&fields));
                }
                Err(e) => session.handle_op_result(id, Err((e.code, &e.message))),
            },
            _ => {}
        }
    }
}

/// Applies the answer of an op that completed.
pub(crate) fn op_done(session: &mut impl Connection, (id, r): OpResult) {
    session.handle_op_result(id, r.as_deref().map_err(|(c, m)| (*c, m.as_str())));
}

/// What the client sent.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A frame for the session.
    Frame(Bytes),
    /// A sign of life that carries nothing for the session (a WebSocket ping or pong).
    Heard,
    /// The client went away, or broke the transport's framing; the transport closes as it must.
    Gone,
    /// The client broke the transport's rules in a way it is told about before the connection closes (a
    /// WebSocket message too large, not UTF-8, or against the protocol: 1009, 1007, 1002).
    Violation(CloseReason),
}

/// A duplex transport under [`run`]: the frames of a session of type `C` in, its batches out.
pub(crate) trait Transport<C> {
    /// Writes one batch as one frame (binary or text): the batch's own bytes, no copy made on the way.
    fn send(&mut self, frame: Bytes, binary: bool) -> impl Future<Output = Result<(), ()>> + Send;
    /// The next thing the client sent. Must be cancel safe: the loop drops it when something else happens first.
    fn recv(&mut self) -> impl Future<Output = Incoming> + Send;
    /// What the client sent that is already here, without waiting (several frames read at once are handled
    /// before the next write, so their answers leave as one batch).
    fn recv_now(&mut self) -> Option<Incoming> {
        None
    }
    /// Sends a transport-level ping ([`Connection::poll_ping`]).
    fn ping(&mut self) -> impl Future<Output = Result<(), ()>> + Send {
        async { Ok(()) }
    }
    /// Called after every turn's batch (QUIC sends the session's datagrams here).
    fn after_transmit(&mut self, session: &mut C) {
        let _ = session;
    }
    /// Writing took longer than `--write-timeout`: the transport gives the connection up its own way.
    fn write_timed_out(&mut self) {}
}

/// A request that a connection's transport let go for a new one (SignalR stateful reconnect). The request stays
/// set until the new transport claims the connection, so the running loop sees it even when it was writing at the
/// moment it was made.
#[derive(Debug, Default)]
pub(crate) struct Takeover {
    requested: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Takeover {
    /// Asks the running transport to let go.
    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// The new transport has the connection: no request is pending any more.
    pub(crate) fn clear(&self) {
        self.requested.store(false, Ordering::Release);
    }

    /// Resolves once a takeover is requested.
    async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a request in between is not missed.
            notified.as_mut().enable();
            if self.requested.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// How [`run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The session closed; the transport still has to say why ([`Connection::poll_close`]).
    Closed,
    /// The transport went away (or failed to write); the session may live on (SignalR stateful reconnect).
    Lost,
    /// `takeover` fired: a new transport takes the session over.
    TakenOver,
}

/// Drives `session` over `transport` until the session closes or the transport goes away. Shutdown closes the
/// session with 1001; `takeover`, when given, ends the loop for a new transport of the same connection.
pub(crate) async fn run<C: Connection + Send, T: Transport<C> + Send>(
    transport: &mut T,
    session: &mut C,
    state: &Arc<AppState>,
    ops_tx: &mpsc::UnboundedSender<OpResult>,
    ops_rx: &mut mpsc::UnboundedReceiver<OpResult>,
    takeover: Option<&Takeover>,
) -> Ended {
    let write_timeout = state.config.write_timeout;
    let signal = session.signal().clone();
    let mut shutdown = state.shutdown.clone();
    let never = Takeover::default();
    let takeover_or_never = takeover.unwrap_or(&never);
    // A new transport is a sign of life, and arms the session's timers.
    session.heard(Instant::now());
    // One timer for the connection's life, moved only when the session's next deadline moves (a new timer per
    // turn would cost a timer-wheel insert and removal per batch).
    let timer = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    loop {
        let binary = session.binary_frames();
        if let Some(frame) = session.poll_transmit() {
            match timeout(write_timeout, transport.send(frame, binary)).await {
                Ok(Ok(())) => session.sent(),
                Ok(Err(())) => return Ended::Lost,
                Err(_) => {
                    tracing::debug!("dropping a connection whose transport took no data for {write_timeout:?}");
                    transport.write_timed_out();
                    return Ended::Lost;
                }
            }
        }
        transport.after_transmit(session);
        if session.poll_close().is_some() {
            return Ended::Closed;
        }
        if session.poll_ping() && !matches!(timeout(write_timeout, transport.ping()).await, Ok(Ok(()))) {
            return Ended::Lost;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
            }
            armed = deadline;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => session.close(CloseReason::GoingAway),
            incoming = transport.recv() => {
                let now = Instant::now();
                let mut next = Some(incoming);
                for _ in 0..MAX_FRAMES_PER_TURN {
                    match next.take() {
                        Some(Incoming::Frame(frame)) => {
                            session.handle_frame(&frame, now);
                            start_ops(session, state, ops_tx);
                        }
                        Some(Incoming::Heard) => session.heard(now),
                        Some(Incoming::Gone) => return Ended::Lost,
                        Some(Incoming::Violation(reason)) => {
                            session.close(reason);
                            break;
                        }
                        None => break,
                    }
                    next = transport.recv_now();
                }
            }
            Some(done) = ops_rx.recv() => op_done(session, done),
            _ = poll_fn(|cx| signal.poll_ready(cx)) => {}
            _ = takeover_or_never.requested(), if takeover.is_some() => return Ended::TakenOver,
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                session.handle_timeout(Instant::now());
            }
        }
    }
}

/// Client frames handled per loop turn at most, so a client that floods its connection still gets its answers
/// written (and the task still notices shutdown).
const MAX_FRAMES_PER_TURN: usize = 64;

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How long a closing transport waits for the client to take its last words.
pub(crate) fn close_patience(write_timeout: Duration) -> Duration {
    write_timeout.min(Duration::from_secs(1))
}
