//! Command-line flags (every one also readable from a `MARQUEE_*` environment variable) and their validation
//! into the typed [`Config`] the server runs with.

use anyhow::{Context, bail};
use axum::http::HeaderValue;
use clap::{Args, Parser, Subcommand};
use governor::Quota;
use marquee_engine::{Limits, RingConfig};
use marquee_feeds::md_replay::TimeBound;
use marquee_feeds::{OnError, ReplayOptions, Speed, TsUnit};
use marquee_protocol::SessionConfig;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

/// Marquee: a lock-free real-time push engine for market data and live auctions.
///
/// Without a subcommand, runs `serve`.
#[derive(Debug, Parser)]
#[command(name = "marquee", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the built-in synthetic market over HTTP and WebSocket (the default).
    Serve(ServeArgs),
    /// Serve a recorded file (CSV ticks, Databento DBN, NASDAQ ITCH 5.0) instead of the synthetic market.
    Replay(ReplayArgs),
    /// Print a token signed with the configured secret (`--auth-secret` / `MARQUEE_AUTH_SECRET`).
    Token(TokenArgs),
}

/// `marquee token [--publisher] [--name NAME]`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// A publisher token (may call `POST /api/publish` and the WebSocket `publish` op).
    #[arg(long)]
    pub publisher: bool,
    /// The token's subject (user name).
    #[arg(long, default_value = "publisher")]
    pub name: String,
    /// Validity, e.g. `24h`, `30m`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// The signing secret: the server's `--auth-secret`.
    #[arg(long, env = "MARQUEE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: String,
}

/// Flags shared by `serve` and `replay`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket (`/ws`). Port 0 picks a free port.
    #[arg(long, env = "MARQUEE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// UDP address of the QUIC gateway (port 0 picks a free port), or `off`.
    #[arg(long, env = "MARQUEE_QUIC", default_value = "127.0.0.1:8443", value_parser = parse_quic)]
    pub quic: QuicListen,
    /// TLS certificate chain (PEM) for QUIC; without it, `--tls-cert`, else (demo mode) a self-signed one made at
    /// start.
    #[arg(long, env = "MARQUEE_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM) matching `--cert`.
    #[arg(long, env = "MARQUEE_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// TLS certificate chain (PEM) for HTTP and WebSocket (`https://`, `wss://`), and for QUIC too unless `--cert`
    /// is given; without it HTTP is plain text.
    #[arg(long, env = "MARQUEE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching `--tls-cert`.
    #[arg(long, env = "MARQUEE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Synthetic market: ticks per second over all symbols.
    #[arg(long, env = "MARQUEE_TICK_RATE", default_value_t = 2000.0)]
    pub tick_rate: f64,
    /// Levels per side of the published order books (`book.<SYMBOL>`), 1 to 50.
    #[arg(long, env = "MARQUEE_DEPTH", default_value_t = 10)]
    pub depth: usize,
    /// Synthetic market: random seed (the same seed gives the same market).
    #[arg(long, env = "MARQUEE_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Messages kept per topic for resume (a power of two).
    #[arg(long, env = "MARQUEE_RING_CAPACITY", default_value_t = 4096)]
    pub ring_capacity: usize,
    /// Messages kept per reliable topic (`lots.*`, `users.*`) for resume (a power of two). A connection that
    /// falls further behind on such a topic is closed with 4008.
    #[arg(long, env = "MARQUEE_RELIABLE_RING_CAPACITY", default_value_t = 256)]
    pub reliable_ring_capacity: usize,
    /// Messages kept per private topic (`users.<name>`, one per user) for resume (a power of two).
    #[arg(long, env = "MARQUEE_USER_RING_CAPACITY", default_value_t = 64)]
    pub user_ring_capacity: usize,
    /// Most WebSocket connections held at once; 0 = as many as the open-files limit allows.
    #[arg(long, env = "MARQUEE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// SignalR negotiations not yet claimed by a transport, held apart from the connection limit (they expire
    /// after `--signalr-handshake-timeout`): a flood of negotiations cannot take the slots of live connections.
    #[arg(long, env = "MARQUEE_MAX_PENDING_NEGOTIATIONS", default_value_t = 10_000)]
    pub max_pending_negotiations: usize,
    /// Of those, how many one client address may hold.
    #[arg(long, env = "MARQUEE_MAX_PENDING_NEGOTIATIONS_PER_IP", default_value_t = 100)]
    pub max_pending_negotiations_per_ip: usize,
    /// Most topics one connection may subscribe to.
    #[arg(long, env = "MARQUEE_MAX_TOPICS", default_value_t = 256)]
    pub max_topics: usize,
    /// Unsent messages per connection beyond which its tick topics skip to the newest value (with a `gap`).
    #[arg(long, env = "MARQUEE_MAX_PENDING", default_value_t = 8192)]
    pub max_pending: u64,
    /// Largest batch (one WebSocket frame), in bytes.
    #[arg(long, env = "MARQUEE_MAX_BATCH_BYTES", default_value_t = 64 * 1024)]
    pub max_batch_bytes: usize,
    /// Interval between server pings, e.g. `15s`, `500ms`.
    #[arg(long, env = "MARQUEE_PING_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// Close a connection that sent nothing (not even a pong) for this long.
    #[arg(long, env = "MARQUEE_IDLE_TIMEOUT", default_value = "45s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Drop a connection whose socket accepts no data for this long.
    #[arg(long, env = "MARQUEE_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// Close an HTTP connection that has not sent a whole request head this long after it opened or after its
    /// last response (slow or silent clients; idle keep-alive connections).
    #[arg(long, env = "MARQUEE_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Answer 408 to a request whose body has not arrived whole within this time.
    #[arg(long, env = "MARQUEE_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Bad frames tolerated per 10 s before a connection is closed with 1008.
    #[arg(long, env = "MARQUEE_MAX_ERRORS", default_value_t = 20)]
    pub max_errors: u32,
    /// Secret that signs and checks tokens (HMAC-SHA256). Unset: a random one per run (demo mode; tokens do not
    /// survive a restart).
    #[arg(long, env = "MARQUEE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// Where the auction journal lives.
    #[arg(long, env = "MARQUEE_DATA_DIR", default_value = "marquee-data")]
    pub data_dir: PathBuf,
    /// Auction lot workers (threads, one journal each). Fixed for a data directory.
    #[arg(long, env = "MARQUEE_LOT_WORKERS", default_value_t = 2)]
    pub lot_workers: usize,
    /// Demo lots kept running (each closed one is replaced); 0 for none.
    #[arg(long, env = "MARQUEE_DEMO_LOTS", default_value_t = 6)]
    pub demo_lots: usize,
    /// How long a demo lot runs.
    #[arg(long, env = "MARQUEE_LOT_DURATION", default_value = "3m", value_parser = humantime::parse_duration)]
    pub lot_duration: Duration,
    /// Extra time between the ends of consecutive demo lots at start.
    #[arg(long, env = "MARQUEE_LOT_STAGGER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lot_stagger: Duration,
    /// Anti-sniping: a bid closer than this to a lot's end moves the end to bid time + this.
    #[arg(long, env = "MARQUEE_ANTI_SNIPE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub anti_snipe: Duration,
    /// Bids per second one user may make (token bucket; every transport together); over it: 429.
    #[arg(long, env = "MARQUEE_BID_RATE", default_value_t = 20.0)]
    pub bid_rate: f64,
    /// Bids one user may make at once (the bucket's size), refilled at `--bid-rate`.
    #[arg(long, env = "MARQUEE_BID_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub bid_burst: u32,
    /// Demo logins (`POST /api/login`) per second from one client address; over it: 429.
    #[arg(long, env = "MARQUEE_LOGIN_RATE", default_value_t = 5.0)]
    pub login_rate: f64,
    /// Demo logins one client address may make at once, refilled at `--login-rate`.
    #[arg(long, env = "MARQUEE_LOGIN_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_burst: u32,
    /// SignalR hub (`/hubs/market`): interval of the server's keep-alive Pings (SignalR clients give up after
    /// 30 s of silence by default, so keep this well under their `serverTimeoutInMilliseconds`).
    #[arg(long, env = "MARQUEE_SIGNALR_KEEP_ALIVE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub signalr_keep_alive: Duration,
    /// SignalR: close a connection that sent nothing (SignalR clients ping every 15 s) for this long.
    #[arg(long, env = "MARQUEE_SIGNALR_CLIENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub signalr_client_timeout: Duration,
    /// SignalR: time allowed from negotiate or connect to a completed handshake.
    #[arg(long, env = "MARQUEE_SIGNALR_HANDSHAKE_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub signalr_handshake_timeout: Duration,
    /// SignalR long polling: how long a poll is held open without data before it is answered empty.
    #[arg(long, env = "MARQUEE_SIGNALR_POLL_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub signalr_poll_timeout: Duration,
    /// SignalR stateful reconnect: bytes of unacknowledged messages kept per connection to send again after a
    /// dropped WebSocket (clients acknowledge about once a second; past this, topics wait and conflate). ASP.NET
    /// Core's default.
    #[arg(long, env = "MARQUEE_SIGNALR_RECONNECT_BUFFER", default_value_t = 100_000)]
    pub signalr_reconnect_buffer: usize,
    /// SignalR stateful reconnect: bytes all connections' buffers may hold together; past it, connections holding
    /// unacknowledged bytes take no new topic messages until their clients acknowledge.
    #[arg(long, env = "MARQUEE_SIGNALR_RECONNECT_BUFFER_TOTAL", default_value_t = 256 << 20)]
    pub signalr_reconnect_buffer_total: usize,
    /// Origins allowed to call the SignalR hub from the browser (CORS with credentials), comma-separated, e.g.
    /// `https://app.example.com,http://localhost:3000`. `*` alone allows any origin without credentials (browser
    /// clients must then not send any: SignalR JS `withCredentials: false`).
    #[arg(long, env = "MARQUEE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info`, `marquee=debug`.
    #[arg(long, env = "MARQUEE_LOG", default_value = "info")]
    pub log: String,
}

/// `marquee replay FILE`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The file, recognised by its first bytes (then its extension): CSV ticks (header
    /// `timestamp,symbol,price,size[,bid,ask,bid_size,ask_size]`), Databento DBN (`.dbn`, `.dbn.zst`; schemas
    /// mbo, mbp-1, mbp-10, trades, ohlcv-1s, ohlcv-1m) or NASDAQ TotalView-ITCH 5.0.
    pub file: PathBuf,
    /// Only these symbols, comma-separated (default: every symbol of the file).
    #[arg(long, env = "MARQUEE_SYMBOLS", value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// Skip what comes before this time: RFC 3339, a Unix time, or a time of day `09:30[:00.000]` (ITCH: the
    /// exchange's clock; DBN and CSV: UTC on the day of the first record). Books are still built from it.
    #[arg(long, env = "MARQUEE_START")]
    pub start: Option<TimeBound>,
    /// End each pass at the first message at or after this time (same forms as `--start`).
    #[arg(long, env = "MARQUEE_END")]
    pub end: Option<TimeBound>,
    /// Playback speed: `1` keeps the file's spacing, `10` is ten times faster, `max` does not wait.
    #[arg(long, env = "MARQUEE_SPEED", default_value = "1")]
    pub speed: Speed,
    /// Start over at the end of the file.
    #[arg(long = "loop", env = "MARQUEE_LOOP")]
    pub looped: bool,
    /// On a row that does not parse: `skip` it (counted) or `stop` the replay and exit non-zero.
    #[arg(long, env = "MARQUEE_ON_ERROR", default_value = "skip")]
    pub on_error: OnError,
    /// Unit of integer timestamps: `auto`, `s`, `ms`, `us` or `ns`.
    #[arg(long, env = "MARQUEE_TS_UNIT", default_value = "auto")]
    pub ts_unit: TsUnit,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `--quic`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicListen(pub Option<SocketAddr>);

fn parse_quic(s: &str) -> Result<QuicListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(QuicListen(None));
    }
    s.parse().map(|a| QuicListen(Some(a))).map_err(|e| format!("invalid --quic {s:?} (an ip:port or `off`): {e}"))
}

/// Where ticks come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The synthetic market, with order books of `depth` levels.
    Synthetic { seed: u64, tick_rate: f64, depth: usize },
    /// A recorded file.
    Replay(Box<ReplayOptions>),
}

/// The validated configuration of one server run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// UDP address of the QUIC gateway; `None` disables it.
    pub quic: Option<SocketAddr>,
    /// Certificate chain and key files (PEM) for QUIC; `None`: a self-signed certificate per run.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// HTTP and WebSocket TLS (certificate, key): `--tls-cert/--tls-key`, else none (plain HTTP).
    pub http_tls: Option<(PathBuf, PathBuf)>,
    pub source: Source,
    pub ring: RingConfig,
    pub reliable_ring: RingConfig,
    /// Rings of `users.*`.
    pub user_ring: RingConfig,
    pub session: SessionConfig,
    /// 0 = derive from the open-files limit at start.
    pub max_connections: usize,
    pub max_pending_negotiations: usize,
    pub max_pending_negotiations_per_ip: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub log: String,
    /// `None`: demo mode, a random secret per run.
    pub auth_secret: Option<String>,
    pub auction: marquee_feeds::auction::AuctionConfig,
    /// Bids per user: `--bid-rate` per second, bursts of `--bid-burst`.
    pub bid_quota: Quota,
    /// Logins per client address: `--login-rate` per second, bursts of `--login-burst`.
    pub login_quota: Quota,
    pub signalr: SignalrConfig,
    /// Browser origins allowed on the SignalR hub.
    pub cors_origins: CorsOrigins,
}

/// Browser origins allowed to call the SignalR hub (`--cors-origins`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// These exact origins (lowercase, as browsers send them), with credentials; empty: no cross-origin page.
    List(Vec<HeaderValue>),
    /// `*`: any origin, never with credentials.
    Any,
}

/// Timers of the SignalR hub.
#[derive(Debug, Clone, Copy)]
pub struct SignalrConfig {
    pub keep_alive: Duration,
    pub client_timeout: Duration,
    pub handshake_timeout: Duration,
    pub poll_timeout: Duration,
    /// Stateful reconnect buffer, bytes, per connection and for all together.
    pub reconnect_buffer: usize,
    pub reconnect_buffer_total: usize,
}

impl Config {
    /// Validates the parsed flags.
    pub fn from_cli(cli: Cli) -> anyhow::Result<Config> {
        let (serve, source) = match cli.command {
            None => (cli.serve.clone(), synthetic(&cli.serve)),
            Some(Command::Serve(s)) => {
                let src = synthetic(&s);
                (s, src)
            }
            Some(Command::Token(_)) => bail!("`marquee token` does not start a server"),
            Some(Command::Replay(r)) => {
                let mut opts = ReplayOptions::new(r.file);
                opts.speed = r.speed;
                opts.looped = r.looped;
                opts.on_error = r.on_error;
                opts.ts_unit = r.ts_unit;
                opts.symbols = r.symbols;
                opts.start = r.start;
                opts.end = r.end;
                opts.depth = r.serve.depth;
                (r.serve, Source::Replay(Box::new(opts)))
            }
        };
        if !serve.ring_capacity.is_power_of_two() || serve.ring_capacity < 2 {
            bail!("--ring-capacity must be a power of two >= 2, got {}", serve.ring_capacity);
        }
        if !serve.reliable_ring_capacity.is_power_of_two() || serve.reliable_ring_capacity < 2 {
            bail!("--reliable-ring-capacity must be a power of two >= 2, got {}", serve.reliable_ring_capacity);
        }
        if !serve.user_ring_capacity.is_power_of_two() || serve.user_ring_capacity < 2 {
            bail!("--user-ring-capacity must be a power of two >= 2, got {}", serve.user_ring_capacity);
        }
        if !(serve.tick_rate > 0.0 && serve.tick_rate <= 10_000_000.0) {
            bail!("--tick-rate must be in (0, 10000000], got {}", serve.tick_rate);
        }
        if serve.max_topics == 0 || serve.max_batch_bytes < 1024 {
            bail!("--max-topics must be >= 1 and --max-batch-bytes >= 1024");
        }
        if serve.ping_interval.is_zero() || serve.idle_timeout <= serve.ping_interval {
            bail!("--idle-timeout must be longer than --ping-interval, which must be > 0");
        }
        if serve.signalr_keep_alive.is_zero() || serve.signalr_client_timeout <= serve.signalr_keep_alive {
            bail!("--signalr-client-timeout must be longer than --signalr-keep-alive, which must be > 0");
        }
        if serve.header_timeout.is_zero() || serve.body_timeout.is_zero() {
            bail!("--header-timeout and --body-timeout must be > 0");
        }
        if serve.signalr_handshake_timeout.is_zero() || serve.signalr_poll_timeout.is_zero() {
            bail!("--signalr-handshake-timeout and --signalr-poll-timeout must be > 0");
        }
        let cors_origins = cors_origins(&serve.cors_origins)?;
        if serve.lot_workers == 0 || serve.lot_workers > 64 {
            bail!("--lot-workers must be in 1..=64, got {}", serve.lot_workers);
        }
        let login_quota = quota(serve.login_rate, serve.login_burst, "--login")?;
        let bid_quota = quota(serve.bid_rate, serve.bid_burst, "--bid")?;
        if serve.lot_duration.is_zero() {
            bail!("--lot-duration must be > 0");
        }
        if serve.auth_secret.as_deref().is_some_and(|s| s.len() < 16) {
            bail!("--auth-secret must be at least 16 bytes");
        }
        if let Source::Replay(opts) = &source {
            std::fs::metadata(&opts.path).with_context(|| format!("cannot read {}", opts.path.display()))?;
        }
        if !(1..=marquee_engine::MAX_DEPTH).contains(&serve.depth) {
            bail!("--depth must be in 1..={}, got {}", marquee_engine::MAX_DEPTH, serve.depth);
        }
        let limits = Limits {
            max_topics: serve.max_topics,
            max_pending_messages: serve.max_pending,
            max_batch_messages: 4096,
            max_batch_bytes: serve.max_batch_bytes,
        };
        Ok(Config {
            listen: serve.listen,
            quic: serve.quic.0,
            tls: serve.cert.zip(serve.key).or_else(|| serve.tls_cert.clone().zip(serve.tls_key.clone())),
            http_tls: serve.tls_cert.zip(serve.tls_key),
            source,
            ring: RingConfig { capacity: serve.ring_capacity, ..RingConfig::default() },
            reliable_ring: RingConfig { capacity: serve.reliable_ring_capacity, ..RingConfig::RELIABLE },
            user_ring: RingConfig { capacity: serve.user_ring_capacity, ..RingConfig::PRIVATE },
            session: SessionConfig { limits, max_errors: serve.max_errors, ..SessionConfig::default() },
            max_connections: serve.max_connections,
            max_pending_negotiations: serve.max_pending_negotiations,
            max_pending_negotiations_per_ip: serve.max_pending_negotiations_per_ip,
            ping_interval: serve.ping_interval,
            idle_timeout: serve.idle_timeout,
            write_timeout: serve.write_timeout,
            header_timeout: serve.header_timeout,
            body_timeout: serve.body_timeout,
            log: serve.log,
            auth_secret: serve.auth_secret,
            auction: marquee_feeds::auction::AuctionConfig {
                data_dir: serve.data_dir,
                n_workers: serve.lot_workers,
                demo_lots: serve.demo_lots,
                lot_duration: serve.lot_duration,
                stagger: serve.lot_stagger,
                anti_snipe: serve.anti_snipe,
            },
            bid_quota,
            login_quota,
            signalr: SignalrConfig {
                keep_alive: serve.signalr_keep_alive,
                client_timeout: serve.signalr_client_timeout,
                handshake_timeout: serve.signalr_handshake_timeout,
                poll_timeout: serve.signalr_poll_timeout,
                reconnect_buffer: serve.signalr_reconnect_buffer,
                reconnect_buffer_total: serve.signalr_reconnect_buffer_total,
            },
            cors_origins,
        })
    }
}

/// `*` alone, or origins such as `https://app.example.com` (scheme, host, port; no path), lowercased.
fn cors_origins(list: &[String]) -> anyhow::Result<CorsOrigins> {
    if list.iter().any(|o| o == "*") {
        if list.len() > 1 {
            bail!("--cors-origins: `*` (any origin, without credentials) cannot be combined with listed origins");
        }
        return Ok(CorsOrigins::Any);
    }
    let origin = |o: &String| {
        let host = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")).unwrap_or_default();
        let valid = !host.is_empty() && !host.contains(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace());
        HeaderValue::from_str(&o.to_ascii_lowercase()).ok().filter(|_| valid).with_context(|| {
            format!(
                "--cors-origins: {o:?} is not an origin such as https://app.example.com (scheme, host, port; no path)"
            )
        })
    };
    list.iter().map(origin).collect::<anyhow::Result<_>>().map(CorsOrigins::List)
}

/// Longest time an emptied token bucket (bids, logins) may take to fill again (burst / rate).
const MAX_REFILL: Duration = Duration::from_secs(365 * 24 * 3600);

/// `rate` bids per second, bursts of `burst`: at most 10^9 per second (one per nanosecond), and a bucket that
/// fills within a year.
/// A token bucket from `<flag>-rate` (per second) and `<flag>-burst`; `flag` names them in errors.
fn quota(rate: f64, burst: u32, flag: &str) -> anyhow::Result<Quota> {
    let period = Duration::try_from_secs_f64(1.0 / rate).ok().filter(|p| rate > 0.0 && *p <= MAX_REFILL);
    let quota = period
        .and_then(Quota::with_period)
        .with_context(|| format!("{flag}-rate must be at most 1000000000 (one per ns) and more than 0, got {rate}"))?;
    let burst = NonZeroU32::new(burst).with_context(|| format!("{flag}-burst must be >= 1"))?;
    if quota.replenish_interval().saturating_mul(burst.get()) > MAX_REFILL {
        bail!("{flag}-burst {burst} at {flag}-rate {rate} takes over a year to refill");
    }
    Ok(quota.allow_burst(burst))
}

fn synthetic(s: &ServeArgs) -> Source {
    Source::Synthetic { seed: s.seed, tick_rate: s.tick_rate, depth: s.depth }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_durations_take_units() {
        let flags = ["--ping-interval", "500ms", "--idle-timeout", "1m 30s", "--write-timeout", "1.5s"];
        let c = Config::from_cli(Cli::parse_from(["marquee"].into_iter().chain(flags))).unwrap();
        assert_eq!(c.ping_interval, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.write_timeout, Duration::from_millis(1500));
        let defaults = Config::from_cli(Cli::parse_from(["marquee"])).unwrap();
        assert_eq!((defaults.ping_interval, defaults.auction.lot_duration), (Duration::from_secs(15), 180 * SEC));
        let Some(Command::Token(t)) = Cli::parse_from(["marquee", "token", "--auth-secret", "s"]).command else {
            panic!("not the token command")
        };
        assert_eq!(t.ttl, 24 * 3600 * SEC);
        for bad in ["fast", "2", "15 parsecs", "-1s"] {
            let err =
                Cli::try_parse_from(["marquee".into(), format!("--ping-interval={bad}")]).unwrap_err().to_string();
            assert!(err.contains("--ping-interval"), "{bad}: {err}");
        }
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn config_rejects_bad_ring_capacity() {
        let cli = Cli::parse_from(["marquee", "--ring-capacity", "1000"]);
        let err = Config::from_cli(cli).unwrap_err().to_string();
        assert!(err.contains("power of two"), "{err}");
    }

    #[test]
    fn config_cors_origins_are_exact_origins_or_a_lone_star() {
        let origins = |list: &str| Config::from_cli(Cli::parse_from(["marquee", "--cors-origins", list]));
        let listed = origins("https://App.Example.com,http://localhost:3000").unwrap().cors_origins;
        let want = ["https://app.example.com", "http://localhost:3000"].map(HeaderValue::from_static);
        assert_eq!(listed, CorsOrigins::List(want.to_vec()));
        assert_eq!(origins("*").unwrap().cors_origins, CorsOrigins::Any);
        let mixed = origins("*,https://app.example.com").unwrap_err().to_string();
        assert!(mixed.contains("cannot be combined"), "{mixed}");
        for bad in ["app.example.com", "https://app.example.com/", "https://app.example.com/hub", "https://", ""] {
            let err = origins(bad).unwrap_err().to_string();
            assert!(err.contains("is not an origin"), "{bad:?}: {err}");
        }
        let none = Config::from_cli(Cli::parse_from(["marquee"])).unwrap().cors_origins;
        assert_eq!(none, CorsOrigins::List(Vec::new()));
    }

    #[test]
    fn config_bid_limits_are_validated_into_a_quota() {
        let q = |rate: &str, burst: &str| {
            let cli =
                Cli::try_parse_from(["marquee".into(), format!("--bid-rate={rate}"), format!("--bid-burst={burst}")])
                    .map_err(|e| e.to_string());
            cli.and_then(|cli| Config::from_cli(cli).map_err(|e| e.to_string())).map(|c| c.bid_quota)
        };
        let quota = q("20", "40").unwrap();
        assert_eq!((quota.replenish_interval(), quota.burst_size().get()), (Duration::from_millis(50), 40));
        assert_eq!(q("0.001", "3").unwrap().replenish_interval(), Duration::from_secs(1000));
        assert_eq!(q("1000000", "1000000").unwrap().burst_size().get(), 1_000_000);
        for (rate, burst) in [("0", "1"), ("-1", "1"), ("NaN", "1"), ("1e10", "1"), ("1e-9", "1"), ("0.001", "100000")]
        {
            let err = q(rate, burst).unwrap_err();
            assert!(err.contains("--bid-rate") || err.contains("--bid-burst"), "{rate} {burst}: {err}");
        }
        for burst in ["0", "2.5", "-3"] {
            assert!(q("20", burst).is_err(), "--bid-burst {burst}");
        }
    }

    #[test]
    fn config_quic_can_be_turned_off() {
        let on = Config::from_cli(Cli::parse_from(["marquee"])).unwrap();
        assert_eq!(on.quic, Some("127.0.0.1:8443".parse().unwrap()));
        let off = Config::from_cli(Cli::parse_from(["marquee", "--quic", "off"])).unwrap();
        assert_eq!(off.quic, None);
        assert!(Cli::try_parse_from(["marquee", "--quic", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["marquee", "--cert", "c.pem"]).is_err(), "--cert needs --key");
    }
}
