//! Wiring: the engine, the feed thread, the HTTP router, connection limits and graceful shutdown.

use crate::auction::KeyedLimiter;
use crate::auth::Auth;
use crate::config::{Config, Source};
use crate::{auction, http, quic, signalr, ws};
use anyhow::Context;
use axum::Router;
use axum::routing::get;
use marquee_engine::{Engine, EngineConfig, Hub};
use marquee_feeds::auction::AuctionHouse;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Open files kept back from the connection budget for the listener, logs and data files.
const RESERVED_FDS: u64 = 64;

/// What every request handler and connection task shares.
#[derive(Debug)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub config: Config,
    /// Open connections (WebSocket, QUIC and SignalR).
    pub connections: AtomicUsize,
    /// Upgrades refused with 503 because `max_connections` was reached.
    pub rejected: AtomicU64,
    pub max_connections: usize,
    /// Flips to true on SIGINT/SIGTERM.
    pub shutdown: watch::Receiver<bool>,
    /// Signs and checks tokens.
    pub auth: Auth,
    /// Writers of shared topics (`lots.*`, `users.*`, published topics).
    pub hub: Arc<Hub>,
    pub house: Arc<AuctionHouse>,
    /// Bids per user.
    pub limiter: KeyedLimiter,
    /// Demo logins per client address.
    pub login_limiter: KeyedLimiter,
    /// The QUIC gateway's address and certificate; `None` with `--quic off`.
    pub quic: Option<quic::QuicInfo>,
    /// Negotiated SignalR connections.
    pub signalr: signalr::Registry,
    /// What the SignalR stateful-reconnect buffers hold together, against `--signalr-reconnect-buffer-total`.
    pub replay_budget: Arc<marquee_protocol::ReplayBudget>,
    /// SignalR negotiations no transport claimed yet, in all and per client address.
    pub pending: signalr::Pending,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let fd_limit = raise_fd_limit();
    let max_connections = match config.max_connections {
        0 => fd_limit.saturating_sub(RESERVED_FDS).max(1) as usize,
        n => n,
    };
    let engine = Engine::new(EngineConfig { epoch: 0, ring: config.ring, reliable_ring: config.reliable_ring });
    let stop = Arc::new(AtomicBool::new(false));
    let feed = crate::feed::start(&engine, &config.source, stop.clone())?;

    let auth_secret = match &config.auth_secret {
        Some(s) => s.clone(),
        None => {
            let s = crate::auth::random_secret().context("cannot generate an auth secret")?;
            tracing::warn!(
                "auth: demo mode, tokens are signed with a random secret for this run only: {s} \
                 (set --auth-secret or MARQUEE_AUTH_SECRET to keep tokens across restarts)"
            );
            s
        }
    };
    let hub = Arc::new(Hub::with_private_ring(engine.clone(), config.user_ring));
    let data_dir = config.auction.data_dir.clone();
    let (house, workers) = AuctionHouse::open(config.auction.clone(), hub.clone())
        .with_context(|| format!("cannot open the auction data in {}", data_dir.display()))?;
    let mut lot_threads = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        let stop = stop.clone();
        lot_threads.push(std::thread::Builder::new().name(format!("lot-worker-{i}")).spawn(move || w.run(&stop))?);
    }
    tracing::info!(
        "auction: {} lots in {} ({} lot workers)",
        house.lots().len(),
        data_dir.display(),
        lot_threads.len()
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let quic_endpoint = match config.quic {
        Some(udp) => Some(quic::bind(&config, udp)?),
        None => None,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        engine: engine.clone(),
        config: config.clone(),
        connections: AtomicUsize::new(0),
        rejected: AtomicU64::new(0),
        max_connections,
        shutdown: shutdown_rx,
        auth: Auth::new(auth_secret.into_bytes()),
        hub,
        house,
        limiter: KeyedLimiter::new(config.bid_quota),
        login_limiter: KeyedLimiter::new(config.login_quota),
        quic: quic_endpoint.as_ref().map(|(_, info)| info.clone()),
        signalr: signalr::Registry::default(),
        replay_budget: marquee_protocol::ReplayBudget::new(config.signalr.reconnect_buffer_total),
        pending: signalr::Pending::default(),
    });
    let quic_task = quic_endpoint.map(|(endpoint, info)| {
        let demo = if config.tls.is_none() { "self-signed for this run, " } else { "" };
        tracing::info!(
            "quic listening on {} (ALPN {} or {}; certificate {demo}sha256 {}, at /api/quic/cert.pem)",
            info.addr,
            quic::JSON_ALPN,
            quic::BINARY_ALPN,
            info.sha256
        );
        tokio::spawn(quic::serve(endpoint, state.clone()))
    });
    let app = Router::new()
        .route("/ws", get(ws::upgrade))
        .merge(auction::routes())
        .merge(quic::routes())
        .merge(signalr::routes(&config))
        .merge(http::routes())
        .with_state(state.clone());

    let source = match &config.source {
        Source::Synthetic { tick_rate, seed, depth } => {
            format!("synthetic market ({tick_rate} ticks/s, seed {seed}, books {depth} deep)")
        }
        Source::Replay(o) => format!("replay of {} at speed {}", o.path.display(), o.speed),
    };
    let (http, ws) = if config.http_tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    tracing::info!(
        "marquee listening on {http}://{addr} (WebSocket at {ws}://{addr}/ws, SignalR hub at {http}://{addr}{}); feed: {source}; {} topics; epoch {}; \
         open-files limit {fd_limit}, so up to {max_connections} connections",
        signalr::HUB_PATH,
        engine.n_topics(),
        engine.epoch()
    );

    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(config.body_timeout));
    let tls = match &config.http_tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let server = serve_http(listener, app, tls, config.header_timeout, async move {
        wait_for_signal().await;
        tracing::info!("shutting down: closing connections with 1001");
        let _ = shutdown_tx.send(true);
    });
    let mut feed_failed = None;
    tokio::select! {
        () = server => {}
        e = feed.failed() => feed_failed = Some(e),
    }
    stop.store(true, Ordering::Release);
    if let Some(e) = feed_failed {
        return Err(e);
    }
    if let Some(t) = quic_task {
        let _ = tokio::time::timeout(Duration::from_millis(1500), t).await;
    }
    // The listener is closed; give connection tasks a moment to send their 1001 close frames.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while state.connections.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long requests in flight (a poll, an SSE stream, a half-sent request) may keep running after shutdown
/// began; WebSocket and SignalR sessions are told to close with 1001 at once.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves HTTP/1.1 (WebSocket upgrades included) on `listener` until `stop` resolves, then stops accepting and
/// gives requests in flight [`SHUTDOWN_GRACE`] to end.
///
/// A connection must send a whole request head within `header_timeout` of opening and of each response (hyper's
/// header read timeout, which starts at once and runs again while a keep-alive connection is idle), so silent
/// or trickling clients cannot hold sockets and file descriptors (slowloris). `axum::serve` offers no such
/// timeout, hence this loop.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let (closing_tx, closing) = watch::channel(false);
    let tracker = tokio_util::task::TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a little, as axum::serve
                    // does, instead of spinning.
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // No Nagle: a batch is written as soon as it is built (batching already happened in the engine); with
        // Nagle a small frame waits for the previous one's ACK, which delayed ACK can hold for 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let (app, closing, tls) = (with_peer(app.clone(), peer), closing.clone(), tls.clone());
        tracker.spawn(async move {
            match tls {
                None => serve_connection(tcp, app, header_timeout, closing).await,
                // The TLS handshake falls under the same deadline as a request head.
                Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app, header_timeout, closing).await,
                    Ok(Err(e)) => tracing::debug!("tls handshake with {peer} failed: {e}"),
                    Err(_) => tracing::debug!("tls handshake with {peer} took over {header_timeout:?}"),
                },
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::info!("shutdown: gave up on requests still in flight after {SHUTDOWN_GRACE:?}");
    }
}

/// Serves one HTTP/1.1 connection (plain or TLS) until it ends, or, once `closing` flips, until the request in
/// flight is answered (an upgraded connection has left already).
async fn serve_connection<I, S>(io: I, app: S, header_timeout: Duration, mut closing: watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("http connection ended: {e}");
    }
}

/// The TLS acceptor for HTTP and WebSocket: TLS 1.2 and 1.3 (browsers), ALPN `http/1.1`.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let (certs, key, _) = quic::load_cert(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// `app` with the client's address in every request's extensions, as `axum::extract::ConnectInfo`.
fn with_peer(
    app: Router,
    peer: std::net::SocketAddr,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    use tower::ServiceExt;
    app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        req
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Raises the soft open-files limit to the hard one; returns the limit in force.
fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot raise the open-files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    }
}
