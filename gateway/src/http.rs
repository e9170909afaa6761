//! The HTTP API: symbols, the polling endpoint for quotes, health, Prometheus metrics, and the UI files.

use crate::server::AppState;
use crate::ui;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use marquee_engine::{Metrics, TICKS_PREFIX, tick_topic};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/symbols", get(symbols))
        .route("/api/quotes/{symbol}", get(quote))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(get(|uri: Uri| async move { ui::serve(uri.path()) }).fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "only GET is served here")
        }))
}

/// `GET /readyz`: 200 `ready` when the server can do all it is for, else 503 `not_ready` saying what is wrong.
/// `/healthz` only says the process answers. (A feed that fails stops the process, so it needs no check here.)
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let failed = s.house.failed_journals();
    if failed > 0 {
        let why = format!("{failed} auction journal(s) failed to write (disk full?); bids are refused until a restart");
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", &why);
    }
    if *s.shutdown.borrow() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "shutting down");
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// A JSON error: `{"error":{"code":...,"message":...}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn symbols(State(s): State<Arc<AppState>>) -> Response {
    let names: Vec<String> =
        s.engine.topic_names(TICKS_PREFIX).into_iter().map(|t| t[TICKS_PREFIX.len()..].to_owned()).collect();
    axum::Json(names).into_response()
}

/// The latest tick of a symbol, exactly as pushed on `/ws` (with `seq` and `ts`): the polling baseline.
async fn quote(State(s): State<Arc<AppState>>, Path(symbol): Path<String>) -> Response {
    let Some(topic) = s.engine.topic(&tick_topic(&symbol)) else {
        return error(StatusCode::NOT_FOUND, "unknown_symbol", &format!("no symbol {symbol:?}"));
    };
    match topic.latest_json() {
        Some((_, body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => error(StatusCode::NOT_FOUND, "no_quote", &format!("no tick for {symbol:?} yet")),
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let m = s.engine.metrics();
    let deliveries = Metrics::get(&m.deliveries);
    let batches = Metrics::get(&m.batches);
    let mean_batch = if batches == 0 { 0.0 } else { deliveries as f64 / batches as f64 };
    let journal = s.house.journal_stats();
    let replayed = match &s.config.source {
        crate::config::Source::Replay(o) => o.progress.get(),
        crate::config::Source::Synthetic { .. } => 0,
    };
    let rows: [(&str, &str, &str, f64); 20] = [
        (
            "marquee_signalr_pending_negotiations",
            "gauge",
            "SignalR negotiations no transport has claimed yet (--max-pending-negotiations bounds them).",
            s.pending.total() as f64,
        ),
        (
            "marquee_signalr_negotiations_refused_total",
            "counter",
            "SignalR negotiations refused with 503 too_many_negotiations.",
            s.pending.refused() as f64,
        ),
        (
            "marquee_signalr_reconnect_buffer_bytes",
            "gauge",
            "Bytes the SignalR stateful-reconnect buffers hold together (--signalr-reconnect-buffer-total bounds it).",
            s.replay_budget.used() as f64,
        ),
        (
            "marquee_connections",
            "gauge",
            "Open connections (WebSocket, QUIC, SignalR).",
            s.connections.load(Ordering::Relaxed) as f64,
        ),
        ("marquee_max_connections", "gauge", "Connections the server accepts.", s.max_connections as f64),
        (
            "marquee_connections_rejected_total",
            "counter",
            "Upgrades refused with 503 at the connection limit.",
            s.rejected.load(Ordering::Relaxed) as f64,
        ),
        (
            "marquee_signalr_negotiated_connections",
            "gauge",
            "SignalR connections negotiated and not yet closed (WebSockets without negotiate are not listed).",
            s.signalr.len() as f64,
        ),
        (
            "marquee_replay_messages_total",
            "counter",
            "Source messages (CSV rows, ITCH messages, DBN records) a replay has published so far; 0 for the \
             synthetic market. Updated once per batch of 1,024.",
            replayed as f64,
        ),
        (
            "marquee_subscriptions",
            "gauge",
            "Topic subscriptions over all connections.",
            s.engine.n_subscriptions() as f64,
        ),
        (
            "marquee_published_messages_total",
            "counter",
            "Messages published to all topics.",
            s.engine.n_published() as f64,
        ),
        (
            "marquee_deliveries_total",
            "counter",
            "Messages written to connections (events and snapshots).",
            deliveries as f64,
        ),
        ("marquee_batches_total", "counter", "Frames written (one batch, one write).", batches as f64),
        ("marquee_batch_size_mean", "gauge", "Mean messages per batch since start.", mean_batch),
        ("marquee_gaps_total", "counter", "Gap events sent to lagging connections.", Metrics::get(&m.gaps) as f64),
        (
            "marquee_slow_consumer_disconnects_total",
            "counter",
            "Connections closed (4008) for lagging on a reliable topic.",
            Metrics::get(&m.slow_consumer_disconnects) as f64,
        ),
        (
            "marquee_bytes_out_total",
            "counter",
            "Payload bytes written to WebSocket clients.",
            Metrics::get(&m.bytes_out) as f64,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the server process.",
            crate::procstat::cpu_seconds(),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the server process.",
            crate::procstat::resident_bytes() as f64,
        ),
        (
            "marquee_auction_bids_journaled_total",
            "counter",
            "Bids made durable in the auction journal.",
            journal.bids.load(Ordering::Relaxed) as f64,
        ),
        (
            "marquee_auction_journal_syncs_total",
            "counter",
            "Auction journal group commits (one fdatasync each).",
            journal.syncs.load(Ordering::Relaxed) as f64,
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, v) in rows {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
