//! The push scenario: N WebSocket subscribers, latency of every delivery = receive time minus the tick's `ts`
//! (its *scheduled* publish time, so a stalled publisher shows up instead of hiding: no coordinated omission).

use crate::cli::{Enc, FanoutArgs};
use crate::report::{Context, Latency, ScenarioResult, new_histogram, own_cpu_seconds};
use crate::{http1, metrics};
use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use marquee_engine::codec::{RawRecords, record};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Connections per source address before the next one (127.0.0.2, .3, ...) is used; one address runs out of
/// ephemeral ports near 28,000.
const PER_SOURCE_ADDR: usize = 20_000;
/// Samples a client keeps before adding them to the shared histogram under its lock.
const FLUSH_EVERY: usize = 512;

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Counters shared by every client task of one run.
#[derive(Debug)]
pub struct Shared {
    pub hist: Mutex<Histogram<u64>>,
    /// True while the measurement window is open.
    pub measuring: AtomicBool,
    pub deliveries: AtomicU64,
    pub gaps: AtomicU64,
    pub missed: AtomicU64,
    pub disconnects: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
    pub ready: AtomicUsize,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            hist: Mutex::new(new_histogram()),
            measuring: AtomicBool::new(false),
            deliveries: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
        })
    }

    pub fn record(&self, samples: &mut Vec<u64>) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        for &s in samples.iter() {
            h.saturating_record(s.max(1));
        }
        samples.clear();
    }
}

/// Now in Unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Fetches the server's symbols (`GET /api/symbols`), failing within seconds when it is unreachable.
pub async fn symbols(http: SocketAddr) -> anyhow::Result<Vec<String>> {
    let fut = async {
        let mut c = http1::Conn::connect(http).await?;
        let mut body = Vec::new();
        let status = c.get("/api/symbols", &mut body).await?;
        anyhow::ensure!(status == 200, "GET /api/symbols returned {status}");
        Ok::<_, anyhow::Error>(serde_json::from_slice::<Vec<String>>(&body)?)
    };
    let syms = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .with_context(|| format!("no answer from {http} within 5 s"))?
        .with_context(|| format!("cannot reach the server at {http}"))?;
    if syms.is_empty() {
        bail!("the server has no symbols");
    }
    Ok(syms)
}

/// The topics of client `i`: `k` symbols spread evenly over the list.
pub fn topics_of(i: usize, k: usize, syms: &[String]) -> Vec<String> {
    (0..k.min(syms.len())).map(|j| format!("ticks.{}", syms[(i * k + j) % syms.len()])).collect()
}

/// Source address for connection `i` of `n`: all on 127.0.0.1 while they fit, else spread over 127.0.0.2...
pub fn source_addr(i: usize, n: usize) -> Option<IpAddr> {
    (n > PER_SOURCE_ADDR).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE_ADDR) as u8)))
}

/// Opens a WebSocket from `src` with small buffers (thousands of these share one process).
pub async fn connect_ws(url: &str, addr: SocketAddr, src: Option<IpAddr>, enc: Enc) -> anyhow::Result<Ws> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut req = url.into_client_request()?;
    if enc == Enc::Bin {
        req.headers_mut().insert("Sec-WebSocket-Protocol", "marquee.bin".parse()?);
    }
    let cfg = WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(stream), Some(cfg)).await?;
    Ok(ws)
}

#[derive(Deserialize)]
struct Ev<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(default)]
    ts: i64,
    #[serde(default)]
    from: u64,
    #[serde(default)]
    to: u64,
}

/// Reads one frame's events into the counters; returns whether the subscribe was acknowledged in it.
fn handle_frame(msg: &Message, shared: &Shared, samples: &mut Vec<u64>) -> bool {
    let now = now_ns();
    let measuring = shared.measuring.load(Ordering::Relaxed);
    let mut acked = false;
    let (mut n, mut gaps, mut missed) = (0u64, 0u64, 0u64);
    let mut latency = |ts: i64| {
        if measuring {
            samples.push(((now - ts).max(0) / 1000) as u64);
        }
    };
    match msg {
        Message::Text(t) => match serde_json::from_str::<Vec<Ev>>(t) {
            Ok(evs) => {
                for e in evs {
                    match e.ty {
                        "tick" => {
                            n += 1;
                            latency(e.ts);
                        }
                        "gap" => {
                            gaps += 1;
                            missed += e.to.saturating_sub(e.from) + 1;
                        }
                        "ack" => acked = true,
                        "error" => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        },
        Message::Binary(b) => {
            for rec in RawRecords::new(b) {
                let Ok(rec) = rec else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                match rec.record_type {
                    record::EVENT => {
                        n += 1;
                        if let Some((_, _, ts)) = rec.position() {
                            latency(ts);
                        }
                    }
                    record::GAP => {
                        gaps += 1;
                        if let Some((from, to)) = rec.gap() {
                            missed += to.saturating_sub(from) + 1;
                        }
                    }
                    record::ACK => acked = true,
                    record::ERROR => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if measuring {
        shared.deliveries.fetch_add(n, Ordering::Relaxed);
        shared.gaps.fetch_add(gaps, Ordering::Relaxed);
        shared.missed.fetch_add(missed, Ordering::Relaxed);
        let len = match msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => 0,
        };
        shared.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
    acked
}

/// One subscriber: subscribe, then count every delivery until `stop`.
async fn client(mut ws: Ws, topics: Vec<String>, shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let sub = serde_json::json!({"op": "subscribe", "id": 1, "topics": topics}).to_string();
    if ws.send(Message::text(sub)).await.is_err() {
        shared.disconnects.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut samples = Vec::with_capacity(FLUSH_EVERY);
    let mut acked = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(m)) => {
                    if handle_frame(&m, &shared, &mut samples) && !acked {
                        acked = true;
                        shared.ready.fetch_add(1, Ordering::Relaxed);
                    }
                    if samples.len() >= FLUSH_EVERY {
                        shared.record(&mut samples);
                    }
                }
                _ => {
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    shared.record(&mut samples);
    let _ = ws.close(None).await;
}

pub fn progress(ctx: &Context, len: u64, what: &str) -> ProgressBar {
    if !ctx.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Waits `window`, ticking a progress bar.
pub async fn measure_window(ctx: &Context, window: Duration) {
    let pb = progress(ctx, window.as_secs().max(1), "measuring");
    let start = Instant::now();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(250).min(window)).await;
        pb.set_position(start.elapsed().as_secs());
    }
    pb.finish_and_clear();
}

pub async fn run(a: &FanoutArgs, ctx: &Context) -> anyhow::Result<ScenarioResult> {
    let addr = http1::addr_of(&a.target)?;
    if a.subscribers as u64 + 64 > ctx.fd_limit {
        bail!(
            "{} connections need more open files than this process may hold ({}); run several loadgen processes \
             with fewer --subscribers each",
            a.subscribers,
            ctx.fd_limit
        );
    }
    let syms = symbols(addr).await?;
    let shared = Shared::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sem = Arc::new(tokio::sync::Semaphore::new(a.connect_concurrency.max(1)));
    let pb = progress(ctx, a.subscribers as u64, "connecting");
    let t_connect = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut connect = tokio::task::JoinSet::new();
    for i in 0..a.subscribers {
        let (url, sem, enc, n) = (a.target.clone(), sem.clone(), a.encoding, a.subscribers);
        connect.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = tokio::time::timeout(Duration::from_secs(10), connect_ws(&url, addr, source_addr(i, n), enc)).await;
            (i, r)
        });
    }
    let mut failed = 0usize;
    let mut first_err = None;
    while let Some(r) = connect.join_next().await {
        pb.inc(1);
        match r {
            Ok((i, Ok(Ok(ws)))) => {
                tasks.spawn(client(ws, topics_of(i, a.topics_per_sub, &syms), shared.clone(), stop_rx.clone()));
            }
            Ok((_, Ok(Err(e)))) => {
                failed += 1;
                first_err.get_or_insert(e.to_string());
            }
            _ => {
                failed += 1;
                first_err.get_or_insert("connect timed out after 10 s".into());
            }
        }
    }
    pb.finish_and_clear();
    let connected = a.subscribers - failed;
    if connected == 0 {
        bail!("no connection succeeded: {}", first_err.unwrap_or_default());
    }
    // Wait for every subscribe to be acknowledged (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = |s: &Shared| s.ready.load(Ordering::Relaxed) + (s.disconnects.load(Ordering::Relaxed) as usize);
    while settled(&shared) < connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    let m0 = metrics::scrape(addr).await?;
    let cpu0 = own_cpu_seconds();
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    measure_window(ctx, a.duration).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window_s = t0.elapsed().as_secs_f64();
    let cpu1 = own_cpu_seconds();
    let m1 = metrics::scrape(addr).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;

    let hist = shared.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut r = ScenarioResult {
        name: format!("push-{}", if a.encoding == Enc::Bin { "bin" } else { "json" }),
        params: serde_json::to_value(a)?,
        clients: connected,
        connect_s,
        window_s,
        deliveries: shared.deliveries.load(Ordering::Relaxed),
        latency_us: Latency::from_histogram(&hist),
        gaps: shared.gaps.load(Ordering::Relaxed),
        missed_updates: shared.missed.load(Ordering::Relaxed),
        disconnects: shared.disconnects.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed) + failed as u64,
        loadgen_cpu_pct: (cpu1 - cpu0) / window_s * 100.0,
        ..ScenarioResult::default()
    };
    r.deliveries_per_s = r.deliveries as f64 / window_s;
    r.bytes_per_s = shared.bytes.load(Ordering::Relaxed) as f64 / window_s;
    if let Some(e) = first_err {
        r.notes.push(format!("{failed} connections failed, first error: {e}"));
    }
    match m1 {
        Ok(m1) => r.server = m0.until(&m1),
        Err(e) => {
            r.notes.push(format!("the server stopped answering during the run: {e:#}"));
            ctx.failed.store(true, Ordering::Relaxed);
        }
    }
    if r.disconnects > 0 {
        r.notes.push(format!("{} connections were closed by the server during the run", r.disconnects));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_topics_spread_over_symbols() {
        let syms: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
        assert_eq!(topics_of(0, 2, &syms), ["ticks.A", "ticks.B"]);
        assert_eq!(topics_of(1, 2, &syms), ["ticks.C", "ticks.A"]);
        assert_eq!(topics_of(0, 10, &syms).len(), 3, "never more topics than symbols");
    }

    #[test]
    fn fanout_source_addresses_spread_past_one_address() {
        assert_eq!(source_addr(5, 1000), None);
        assert_eq!(source_addr(5, 30_000), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(source_addr(25_000, 30_000), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))));
    }

    #[test]
    fn fanout_only_loopback_targets() {
        assert!(http1::addr_of("ws://127.0.0.1:8080/ws").is_ok());
        assert_eq!(http1::addr_of("http://localhost:80").unwrap().to_string(), "127.0.0.1:80");
        assert!(http1::addr_of("ws://192.168.1.10:8080/ws").is_err());
        assert!(http1::addr_of("http://example.com:80").is_err());
    }
}
