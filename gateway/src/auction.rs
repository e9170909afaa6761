//! The auction and publish HTTP API: login, lots, bids (202 once journaled), bid status, publish. Handlers only
//! translate HTTP to [`marquee_feeds::auction::AuctionHouse`] and [`marquee_engine::Hub`] calls, and errors to
//! stable JSON codes; every rule lives in `marquee_feeds::auction`.

use crate::auth::{Claims, Role, unix_secs, valid_user_name};
use crate::http::error;
use crate::server::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use marquee_engine::{HubError, PRIVATE_PREFIX, PublishError, TopicClass, same_event_type, valid_event_type};
use marquee_feeds::auction::{BidAck, BidRequest, SubmitError, parse_amount};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest body of a login or bid request.
const MAX_SMALL_BODY: usize = 4 * 1024;
/// Largest body of a publish request.
const MAX_PUBLISH_BODY: usize = 256 * 1024;
/// Most events in one publish call.
const MAX_PUBLISH_EVENTS: usize = 1000;
/// Tokens from `POST /api/login` last this long.
const LOGIN_TTL_SECS: i64 = 24 * 3600;
/// Event types only the auction house may publish.
const AUCTION_TYPES: &[&str] = &["bid_result", "outbid", "lot_update", "lot_closed", "won"];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/lots", get(lots))
        .route("/api/lots/{id}", get(lot))
        .route("/api/lots/{id}/bids", post(bid))
        .route("/api/bids/{key}", get(bid_status))
        .route("/api/publish", post(publish))
}

/// An API failure: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        let status = match e {
            SubmitError::UnknownLot => StatusCode::NOT_FOUND,
            SubmitError::LotClosed | SubmitError::LotNotOpen | SubmitError::TooLow { .. } => StatusCode::CONFLICT,
            SubmitError::InvalidAmount(_) => StatusCode::BAD_REQUEST,
            SubmitError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            SubmitError::InProgress => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// Checks between two sweeps of the keys whose bucket is full again.
const SWEEP_EVERY: u64 = 1024;

/// A token bucket per key (governor's keyed GCRA on a sharded map: no global lock): bids per user, shared by
/// HTTP, WebSocket, QUIC and SignalR (`--bid-rate`, `--bid-burst`), and demo logins per client address
/// (`--login-rate`, `--login-burst`).
///
/// ## Memory
///
/// A key whose bucket is full again holds no state a fresh entry would not, so every [`SWEEP_EVERY`] checks the
/// limiter drops them: it holds the keys seen within the last `burst / rate` seconds (2 s for bids by default)
/// and those of the last sweep interval, not every key ever seen.
#[derive(Debug)]
pub struct KeyedLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    /// Checks so far (only to pace the sweeps).
    checks: AtomicU64,
}

impl KeyedLimiter {
    pub fn new(quota: Quota) -> KeyedLimiter {
        KeyedLimiter { limiter: RateLimiter::keyed(quota), checks: AtomicU64::new(0) }
    }

    /// Takes one token from `key`'s bucket; false when it is empty.
    pub fn check(&self, key: &str) -> bool {
        // Relaxed: the count only spaces the sweeps out; no other memory depends on it.
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&key.to_owned()).is_ok()
    }

    /// Keys the limiter holds state for.
    pub fn n_keys(&self) -> usize {
        self.limiter.len()
    }
}

/// The bearer token's claims; 401 when missing or invalid.
pub fn authenticate(s: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "expected Bearer <token>"))?;
    verify(s, token)
}

/// Checks a token; 401 `invalid_token` when it does not verify.
pub fn verify(s: &AppState, token: &str) -> Result<Claims, ApiError> {
    s.auth
        .verify(token, unix_secs())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()))
}

/// Reads a whole request body of at most `limit` bytes: 413 `body_too_large` past it, 408 `request_timeout` when
/// the body did not arrive within `--body-timeout` (a client trickling or stalling its upload).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<tower_http::timeout::TimeoutError>() {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time".to_owned(),
                );
            }
            source = err.source();
        }
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("bodies are at most {limit} bytes"))
    })
}

async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let bytes = read_body(body, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_data() { "bad_request" } else { "bad_json" };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], serde_json::to_string(v).unwrap_or_default()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    name: String,
}

async fn login(
    State(s): State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    body: Body,
) -> Result<Response, ApiError> {
    if !s.login_limiter.check(&peer.ip().to_string()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many logins from {}; slow down", peer.ip()),
        ));
    }
    let Login { name } = read_json(body, MAX_SMALL_BODY).await?;
    if !valid_user_name(&name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "a name is 1-32 characters of [A-Za-z0-9_-]",
        ));
    }
    // A login keeps no state: the user's private topic is made when a connection with the token opens or the
    // first message for the user is pushed, so a flood of logins costs no memory.
    let now = unix_secs();
    let token = s.auth.issue(&name, Role::User, now, LOGIN_TTL_SECS);
    Ok(json(StatusCode::OK, &serde_json::json!({ "token": token, "name": name, "expires_at": now + LOGIN_TTL_SECS })))
}

/// Creates `users.<name>` in the hub when missing.
pub fn ensure_user_topic(s: &AppState, name: &str) {
    if let Err(e) = s.hub.writer(&format!("{PRIVATE_PREFIX}{name}")) {
        tracing::warn!("cannot create users.{name}: {e}");
    }
}

async fn lots(State(s): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, &s.house.lots())
}

fn lot_id(id: &str) -> Result<u64, ApiError> {
    // Lot ids are written without leading zeros or a sign; "01" and "+1" name no lot.
    let canonical = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && (id == "0" || !id.starts_with('0'));
    canonical
        .then(|| id.parse().ok())
        .flatten()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_lot", format!("no lot {id:?}")))
}

async fn lot(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let view = s
        .house
        .lot(lot_id(&id)?)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_lot", format!("no lot {id:?}")))?;
    Ok(json(StatusCode::OK, &view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BidBody {
    amount: serde_json::Value,
}

/// `[A-Za-z0-9._:-]`, 1 to 128 bytes (a UUID fits).
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Validates and submits a bid; resolves once it is journaled (or refused). Shared by HTTP and WebSocket.
pub async fn submit_bid(s: &AppState, user: &str, lot: &str, amount: &str, key: &str) -> Result<BidAck, ApiError> {
    if !valid_key(key) {
        let msg = "an Idempotency-Key is 1-128 characters of [A-Za-z0-9._:-] (a UUID)";
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", msg));
    }
    let lot = lot_id(lot)?;
    let amount = parse_amount(amount).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    if !s.limiter.check(user) {
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many bids; slow down"));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = BidRequest { user: user.to_owned(), key: key.to_owned(), lot, amount };
    s.house.submit_bid(req, move |r| {
        let _ = tx.send(r);
    });
    match rx.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(SubmitError::Unavailable.into()),
    }
}

fn amount_text(v: &serde_json::Value) -> Result<String, ApiError> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "amount must be a decimal string like \"105.00\"",
        )),
    }
}

async fn bid(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = authenticate(&s, &headers)?;
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "missing_idempotency_key", "send an Idempotency-Key header (a UUID)")
        })?
        .to_str()
        .unwrap_or("")
        .to_owned();
    let BidBody { amount } = read_json(body, MAX_SMALL_BODY).await?;
    let amount = amount_text(&amount)?;
    let ack = submit_bid(&s, &claims.sub, &id, &amount, &key).await?;
    let body = serde_json::json!({
        "bid_id": ack.bid_id, "status_url": format!("/api/bids/{key}"), "replayed": ack.replayed,
    });
    Ok(json(StatusCode::ACCEPTED, &body))
}

async fn bid_status(
    State(s): State<Arc<AppState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = authenticate(&s, &headers)?;
    let view = s
        .house
        .bid(&claims.sub, &key)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown_bid", format!("no bid with key {key:?}")))?;
    Ok(json(StatusCode::OK, &view))
}

/// One event of a publish call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    pub topic: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

/// Publishes a batch of events (all validated before any is published). Returns `{"published":[...]}`.
pub fn publish_events(s: &AppState, events: Vec<PublishEvent>) -> Result<serde_json::Value, ApiError> {
    let bad = |code, msg: String| ApiError::new(StatusCode::BAD_REQUEST, code, msg);
    if events.is_empty() || events.len() > MAX_PUBLISH_EVENTS {
        return Err(bad("bad_request", format!("publish 1 to {MAX_PUBLISH_EVENTS} events per call")));
    }
    let slot = s.config.reliable_ring.slot_bytes;
    let mut prepared = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if !marquee_engine::topic::valid_topic_name(&e.topic) {
            return Err(bad("invalid_topic", format!("event {i}: invalid topic name {:?}", e.topic)));
        }
        if TopicClass::of(&e.topic) == TopicClass::Conflating {
            let msg = format!("event {i}: {:?} is written by the market feed", e.topic);
            return Err(ApiError::new(StatusCode::FORBIDDEN, "topic_not_shared", msg));
        }
        if !valid_event_type(&e.ty) || AUCTION_TYPES.iter().any(|r| same_event_type(r, &e.ty)) {
            return Err(bad("invalid_type", format!("event {i}: type {:?} is invalid or reserved", e.ty)));
        }
        let fields = match &e.data {
            Some(d) => format!("{{\"data\":{}}}", d.get()),
            None => "{}".to_owned(),
        };
        // The three stored bodies (JSON, binary, MessagePack) hold the fields: keep well inside one ring slot.
        if 3 * (fields.len() + e.topic.len() + e.ty.len()) + 192 > slot {
            let msg = format!("event {i}: too large for a {slot}-byte ring slot");
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", msg));
        }
        prepared.push(fields);
    }
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let mut out = Vec::with_capacity(events.len());
    for (e, fields) in events.iter().zip(&prepared) {
        match s.hub.publish_event(&e.topic, &e.ty, fields, ts) {
            Ok(pos) => out.push(serde_json::json!({"topic": e.topic, "epoch": pos.epoch, "seq": pos.seq})),
            Err(HubError::NotShared) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "topic_not_shared",
                    format!("{:?} is owned by a feed", e.topic),
                ));
            }
            Err(HubError::Publish(PublishError::TooLarge)) => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "event_too_large",
                    "event too large for a ring slot",
                ));
            }
            Err(err) => return Err(bad("bad_request", err.to_string())),
        }
    }
    Ok(serde_json::json!({ "published": out }))
}

/// Parses a publish body: one event object or an array of them.
pub fn parse_publish(bytes: &[u8]) -> Result<Vec<PublishEvent>, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let r = if first == Some(&b'[') {
        serde_json::from_slice::<Vec<PublishEvent>>(bytes)
    } else {
        serde_json::from_slice::<PublishEvent>(bytes).map(|e| vec![e])
    };
    r.map_err(|e| {
        let code = if e.is_data() { "bad_request" } else { "bad_json" };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })
}

/// Requires a publisher token.
pub fn require_publisher(claims: &Claims) -> Result<(), ApiError> {
    if claims.role == Role::Publisher {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "publishing needs a publisher token (marquee token --publisher)",
        ))
    }
}

async fn publish(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let claims = authenticate(&s, &headers)?;
    require_publisher(&claims)?;
    let bytes = read_body(body, MAX_PUBLISH_BODY).await?;
    let events = parse_publish(&bytes)?;
    Ok(json(StatusCode::OK, &publish_events(&s, events)?))
}

/// The WebSocket `publish` op: `{"op":"publish","id":n,"topic":..,"type":..,"data":..}` or with `"events":[..]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsPublish {
    #[allow(dead_code)]
    op: String,
    #[allow(dead_code)]
    id: Option<u64>,
    topic: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    events: Option<Vec<PublishEvent>>,
}

/// Carries out a WebSocket `publish` op; the `Ok` value is the ack's fields.
pub fn ws_publish(s: &AppState, frame: &[u8]) -> Result<String, ApiError> {
    let op: WsPublish = serde_json::from_slice(frame)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let events = match (op.events, op.topic, op.ty) {
        (Some(events), None, None) => events,
        (None, Some(topic), Some(ty)) => vec![PublishEvent { topic, ty, data: op.data }],
        _ => {
            let msg = "publish needs \"topic\" and \"type\" (and optional \"data\"), or \"events\"";
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg));
        }
    };
    publish_events(s, events).map(|v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn quota(period: Duration, burst: u32) -> Quota {
        Quota::with_period(period).unwrap().allow_burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn bid_limiter_allows_a_burst_per_user_then_the_rate() {
        let limiter = KeyedLimiter::new(quota(Duration::from_secs(1000), 3));
        let alice: Vec<bool> = (0..4).map(|_| limiter.check("alice")).collect();
        assert_eq!(alice, [true, true, true, false]);
        assert!(limiter.check("bob"), "alice's bids do not use bob's bucket");
    }

    /// The map of buckets used to keep every user who ever bid, for the life of the process.
    #[test]
    fn bid_limiter_forgets_users_whose_bucket_is_full_again() {
        let limiter = KeyedLimiter::new(quota(Duration::from_millis(1), 2));
        for i in 0..5000 {
            assert!(limiter.check(&format!("user-{i}")));
        }
        assert!(limiter.n_keys() > 1000, "{}", limiter.n_keys());
        // Every bucket refills within 2 ms; the next sweep drops them all.
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..SWEEP_EVERY {
            limiter.check("zed");
        }
        assert!(limiter.n_keys() <= 1, "{} users kept", limiter.n_keys());
    }
}
