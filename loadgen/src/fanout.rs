//! The push scenario: N WebSocket subscribers, latency of every delivery = receive time minus the tick's `ts`
//! (its *scheduled* publish time, so a stalled publisher shows up instead of hiding: no coordinated omission).

use crate::cli::{Enc, FanoutArgs, Transport};
use crate::report::{Context, Latency, ScenarioResult, new_histogram, own_cpu_seconds};
use crate::{http1, metrics};
use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use marquee_protocol::decode::{RawRecords, record};
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
pub(crate) const FLUSH_EVERY: usize = 512;

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

/// The tick topics of client `i`: `k` symbols spread evenly over the list.
pub fn topics_of(i: usize, k: usize, syms: &[String]) -> Vec<String> {
    channel_topics_of(crate::cli::Channel::Ticks, i, k, syms)
}

/// The `channel` topics of client `i`: `k` symbols spread evenly over the list.
pub fn channel_topics_of(channel: crate::cli::Channel, i: usize, k: usize, syms: &[String]) -> Vec<String> {
    (0..k.min(syms.len())).map(|j| format!("{}{}", channel.prefix(), syms[(i * k + j) % syms.len()])).collect()
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

/// Reads one SignalR MessagePack frame (VarInt-framed arrays; the first starts with the JSON handshake answer);
/// returns whether the Subscribe's Completion was in it.
fn handle_msgpack_frame(msg: &Message, shared: &Shared, samples: &mut Vec<u64>) -> bool {
    use marquee_protocol::msgpack::{decode, get_varint};
    let Message::Binary(b) = msg else { return false };
    let now = now_ns();
    let measuring = shared.measuring.load(Ordering::Relaxed);
    let mut rest: &[u8] = b.strip_prefix(b"{}\x1e").unwrap_or(b);
    let (mut n, mut gaps, mut missed, mut acked) = (0u64, 0u64, 0u64, false);
    while !rest.is_empty() {
        let Ok(Some((len, head))) = get_varint(rest) else { break };
        let Some(body) = rest.get(head..head + len) else { break };
        rest = &rest[head + len..];
        let Ok((v, _)) = decode(body) else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match (v[0].as_u64(), v[3].as_str()) {
            (Some(1), Some("tick")) if v[4][0]["type"] == "tick" => {
                n += 1;
                if measuring && let Some(ts) = v[4][0]["ts"].as_i64() {
                    samples.push(((now - ts).max(0) / 1000) as u64);
                }
            }
            (Some(1), Some("gap")) => {
                gaps += 1;
                let g = &v[4][0];
                missed += g["to"].as_u64().unwrap_or(0).saturating_sub(g["from"].as_u64().unwrap_or(0)) + 1;
            }
            (Some(3), _) => acked |= v[3] == 2,
            (Some(1 | 6), _) => {}
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if measuring {
        shared.deliveries.fetch_add(n, Ordering::Relaxed);
        shared.gaps.fetch_add(gaps, Ordering::Relaxed);
        shared.missed.fetch_add(missed, Ordering::Relaxed);
        shared.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
    acked
}

/// A SignalR hub message: `tick` and `gap` Invocations carry one native event object.
#[derive(Deserialize)]
struct HubEv<'a> {
    #[serde(rename = "type", default)]
    ty: u8,
    #[serde(borrow, default)]
    target: Option<&'a str>,
    #[serde(borrow, default)]
    arguments: Option<[Ev<'a>; 1]>,
}

/// Reads one frame's events into the counters; returns whether the subscribe was acknowledged in it.
pub(crate) fn handle_frame(msg: &Message, shared: &Shared, samples: &mut Vec<u64>) -> bool {
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
        // SignalR: hub messages, each ending with 0x1E.
        Message::Text(t) if t.ends_with('\u{1e}') => {
            for m in t.split_terminator('\u{1e}') {
                match serde_json::from_str::<HubEv>(m) {
                    Ok(HubEv { ty: 1, target: Some("tick" | "book" | "trade"), arguments: Some([e]) })
                        if matches!(e.ty, "tick" | "book" | "trade") =>
                    {
                        n += 1;
                        latency(e.ts);
                    }
                    Ok(HubEv { ty: 1, target: Some("gap"), arguments: Some([e]) }) => {
                        gaps += 1;
                        missed += e.to.saturating_sub(e.from) + 1;
                    }
                    // Snapshots and other events.
                    Ok(HubEv { ty: 1, .. }) => {}
                    // The handshake answer `{}` has no type; a Completion answers the Subscribe.
                    Ok(HubEv { ty: 0 | 3 | 6, .. }) if !m.contains("\"error\"") => {
                        acked |= m.starts_with("{\"type\":3")
                    }
                    _ => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Message::Text(t) => match serde_json::from_str::<Vec<Ev>>(t) {
            Ok(evs) => {
                for e in evs {
                    match e.ty {
                        "tick" | "book" | "trade" => {
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
/// Which protocol a subscriber speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hub {
    /// Marquee's native protocol at `--target`.
    None,
    /// SignalR, JSON hub protocol.
    Json,
    /// SignalR, MessagePack hub protocol.
    Msgpack,
}

/// `[1, {}, "0", "Subscribe", [topics], []]` with its VarInt length.
fn msgpack_subscribe(topics: &[String]) -> Vec<u8> {
    fn str(out: &mut Vec<u8>, s: &str) {
        assert!(s.len() < 256, "topic names are short");
        out.extend_from_slice(&[0xd9, s.len() as u8]);
        out.extend_from_slice(s.as_bytes());
    }
    let mut m = vec![0x96, 0x01, 0x80];
    str(&mut m, "0");
    str(&mut m, "Subscribe");
    m.extend_from_slice(&[0x91, 0xdd]);
    m.extend_from_slice(&(topics.len() as u32).to_be_bytes());
    for t in topics {
        str(&mut m, t);
    }
    m.push(0x90);
    let mut out = Vec::with_capacity(m.len() + 5);
    marquee_protocol::msgpack::put_varint(&mut out, m.len());
    out.extend_from_slice(&m);
    out
}

async fn client(
    mut ws: Ws,
    topics: Vec<String>,
    hub: Hub,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let sub = match hub {
        Hub::Json => {
            let invocation =
                serde_json::json!({"type": 1, "invocationId": "0", "target": "Subscribe", "arguments": [topics]});
            Message::text(format!("{{\"protocol\":\"json\",\"version\":1}}\u{1e}{invocation}\u{1e}"))
        }
        Hub::Msgpack => {
            let mut b = b"{\"protocol\":\"messagepack\",\"version\":1}\x1e".to_vec();
            b.extend_from_slice(&msgpack_subscribe(&topics));
            Message::binary(b)
        }
        Hub::None => Message::text(serde_json::json!({"op": "subscribe", "id": 1, "topics": topics}).to_string()),
    };
    if ws.send(sub).await.is_err() {
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
                    let ack = if hub == Hub::Msgpack {
                        handle_msgpack_frame(&m, &shared, &mut samples)
                    } else {
                        handle_frame(&m, &shared, &mut samples)
                    };
                    if ack && !acked {
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

/// Connections kept back from a process's open-files budget.
const FD_RESERVE: u64 = 200;

/// One process's share of the subscribers, connected and subscribed.
struct Part {
    shared: Arc<Shared>,
    tasks: tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
    connected: usize,
    failed: usize,
    first_err: Option<String>,
    connect_s: f64,
}

/// What one process measured in the window; a worker prints it as JSON for the parent to merge.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PartResult {
    /// `(value µs, count)` of every recorded histogram bucket.
    pub hist: Vec<(u64, u64)>,
    pub connected: usize,
    pub failed: usize,
    pub first_err: Option<String>,
    pub connect_s: f64,
    pub deliveries: u64,
    pub gaps: u64,
    pub missed: u64,
    pub disconnects: u64,
    pub errors: u64,
    pub bytes: u64,
    pub cpu_s: f64,
}

async fn connect_part(a: &FanoutArgs, range: std::ops::Range<usize>, syms: &[String], ctx: &Context) -> Part {
    let addr = http1::addr_of(&a.target).expect("checked by the caller");
    let shared = Shared::new();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let sem = Arc::new(tokio::sync::Semaphore::new(a.connect_concurrency.max(1)));
    let pb = progress(ctx, range.len() as u64, "connecting");
    let t_connect = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut connect = tokio::task::JoinSet::new();
    let hub = match a.transport {
        Transport::Signalr => Hub::Json,
        Transport::SignalrMsgpack => Hub::Msgpack,
        _ => Hub::None,
    };
    if a.transport != Transport::Ws && hub == Hub::None {
        let datagrams = a.transport == Transport::QuicDatagram;
        let (ep, udp) = match crate::quic::endpoint(addr, a.encoding).await {
            Ok(e) => e,
            Err(e) => {
                let n = range.len();
                let connect_s = t_connect.elapsed().as_secs_f64();
                let first_err = Some(format!("{e:#}"));
                return Part { shared, tasks, stop, connected: 0, failed: n, first_err, connect_s };
            }
        };
        let mut quic = tokio::task::JoinSet::new();
        for i in range.clone() {
            let (ep, sem) = (ep.clone(), sem.clone());
            quic.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (i, tokio::time::timeout(Duration::from_secs(10), crate::quic::connect(&ep, udp)).await)
            });
        }
        let (mut failed, mut first_err) = (0usize, None);
        while let Some(r) = quic.join_next().await {
            pb.inc(1);
            match r {
                Ok((i, Ok(Ok(conn)))) => {
                    let topics = channel_topics_of(a.channel, i, a.topics_per_sub, syms);
                    let (shared, stop) = (shared.clone(), stop_rx.clone());
                    tasks.spawn(crate::quic::client(conn, topics, datagrams, a.encoding, shared, stop));
                }
                Ok((_, Ok(Err(e)))) => {
                    failed += 1;
                    first_err.get_or_insert(format!("{e:#}"));
                }
                _ => {
                    failed += 1;
                    first_err.get_or_insert("connect timed out after 10 s".into());
                }
            }
        }
        pb.finish_and_clear();
        return settle(shared, tasks, stop, range.len(), failed, first_err, t_connect).await;
    }
    let (url, enc) =
        if hub != Hub::None { (format!("ws://{addr}/hubs/market"), Enc::Json) } else { (a.target.clone(), a.encoding) };
    for i in range.clone() {
        let (url, sem, n) = (url.clone(), sem.clone(), a.subscribers);
        connect.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = tokio::time::timeout(Duration::from_secs(10), connect_ws(&url, addr, source_addr(i, n), enc)).await;
            (i, r)
        });
    }
    let (mut failed, mut first_err) = (0usize, None);
    while let Some(r) = connect.join_next().await {
        pb.inc(1);
        match r {
            Ok((i, Ok(Ok(ws)))) => {
                let topics = channel_topics_of(a.channel, i, a.topics_per_sub, syms);
                tasks.spawn(client(ws, topics, hub, shared.clone(), stop_rx.clone()));
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
    settle(shared, tasks, stop, range.len(), failed, first_err, t_connect).await
}

/// Waits for every connected subscriber's subscribe to be acknowledged (bounded).
async fn settle(
    shared: Arc<Shared>,
    tasks: tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
    n: usize,
    failed: usize,
    first_err: Option<String>,
    t_connect: Instant,
) -> Part {
    let connected = n - failed;
    // Wait for every subscribe to be acknowledged (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = |s: &Shared| s.ready.load(Ordering::Relaxed) + (s.disconnects.load(Ordering::Relaxed) as usize);
    while settled(&shared) < connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Part { shared, tasks, stop, connected, failed, first_err, connect_s: t_connect.elapsed().as_secs_f64() }
}

async fn measure_part(mut part: Part, a: &FanoutArgs, ctx: &Context) -> PartResult {
    let cpu0 = own_cpu_seconds();
    part.shared.measuring.store(true, Ordering::Relaxed);
    measure_window(ctx, a.duration).await;
    part.shared.measuring.store(false, Ordering::Relaxed);
    let cpu_s = own_cpu_seconds() - cpu0;
    let _ = part.stop.send(true);
    let _ =
        tokio::time::timeout(Duration::from_secs(10), async { while part.tasks.join_next().await.is_some() {} }).await;
    let sh = &part.shared;
    let hist = sh.hist.lock().unwrap_or_else(|e| e.into_inner());
    PartResult {
        hist: hist.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect(),
        connected: part.connected,
        failed: part.failed,
        first_err: part.first_err.clone(),
        connect_s: part.connect_s,
        deliveries: sh.deliveries.load(Ordering::Relaxed),
        gaps: sh.gaps.load(Ordering::Relaxed),
        missed: sh.missed.load(Ordering::Relaxed),
        disconnects: sh.disconnects.load(Ordering::Relaxed),
        errors: sh.errors.load(Ordering::Relaxed) + part.failed as u64,
        bytes: sh.bytes.load(Ordering::Relaxed),
        cpu_s,
    }
}

/// Hidden worker mode: connect `range`, print `READY`, wait for a line on stdin, measure, print the result.
pub async fn run_worker(a: &FanoutArgs, range: std::ops::Range<usize>, ctx: &Context) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let syms = symbols(http1::addr_of(&a.target)?).await?;
    let part = connect_part(a, range, &syms, ctx).await;
    println!("READY");
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin()).read_line(&mut line).await?;
    let r = measure_part(part, a, ctx).await;
    println!("RESULT {}", serde_json::to_string(&r)?);
    Ok(())
}

pub async fn run(a: &FanoutArgs, ctx: &Context) -> anyhow::Result<ScenarioResult> {
    let addr = http1::addr_of(&a.target)?;
    let syms = symbols(addr).await?;
    let per_process = match a.per_process {
        0 => ctx.fd_limit.saturating_sub(FD_RESERVE).max(1) as usize,
        n => n,
    };
    let (parts, m0, window_s, m1) = if a.subscribers <= per_process {
        let part = connect_part(a, 0..a.subscribers, &syms, ctx).await;
        if part.connected == 0 {
            bail!("no connection succeeded: {}", part.first_err.unwrap_or_default());
        }
        let m0 = metrics::scrape(addr).await?;
        let t0 = Instant::now();
        let r = measure_part(part, a, ctx).await;
        let window_s = t0.elapsed().as_secs_f64().min(a.duration.as_secs_f64() + 0.5);
        (vec![r], m0, window_s, metrics::scrape(addr).await)
    } else {
        run_processes(a, addr, per_process).await?
    };
    let mut hist = new_histogram();
    let mut m = PartResult::default();
    for p in &parts {
        for &(v, c) in &p.hist {
            hist.saturating_record_n(v.max(1), c);
        }
        m.connected += p.connected;
        m.failed += p.failed;
        m.connect_s = m.connect_s.max(p.connect_s);
        m.deliveries += p.deliveries;
        m.gaps += p.gaps;
        m.missed += p.missed;
        m.disconnects += p.disconnects;
        m.errors += p.errors;
        m.bytes += p.bytes;
        m.cpu_s += p.cpu_s;
        if m.first_err.is_none() {
            m.first_err.clone_from(&p.first_err);
        }
    }
    let mut r = ScenarioResult {
        name: format!(
            "push-{}{}",
            match a.transport {
                Transport::Ws => "",
                Transport::Quic => "quic-",
                Transport::QuicDatagram => "quic-datagram-",
                Transport::Signalr => "signalr-",
                Transport::SignalrMsgpack => "signalr-",
            },
            match a.transport {
                Transport::Signalr => "json",
                Transport::SignalrMsgpack => "msgpack",
                _ if a.encoding == Enc::Bin => "bin",
                _ => "json",
            }
        ),
        params: serde_json::to_value(a)?,
        clients: m.connected,
        connect_s: m.connect_s,
        window_s,
        deliveries: m.deliveries,
        deliveries_per_s: m.deliveries as f64 / window_s,
        latency_us: Latency::from_histogram(&hist),
        gaps: m.gaps,
        missed_updates: m.missed,
        disconnects: m.disconnects,
        errors: m.errors,
        bytes_per_s: m.bytes as f64 / window_s,
        loadgen_cpu_pct: m.cpu_s / window_s * 100.0,
        ..ScenarioResult::default()
    };
    if parts.len() > 1 {
        r.notes.push(format!("{} loadgen processes; loadgen CPU % is their sum", parts.len()));
    }
    if let Some(e) = m.first_err {
        r.notes.push(format!("{} connections failed, first error: {e}", m.failed));
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

type ProcessRun = (Vec<PartResult>, metrics::Snapshot, f64, anyhow::Result<metrics::Snapshot>);

/// More subscribers than one process may hold: worker processes (this binary, hidden `--worker-range`), each
/// connecting its share, started together on one signal.
async fn run_processes(a: &FanoutArgs, addr: SocketAddr, per: usize) -> anyhow::Result<ProcessRun> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let exe = std::env::current_exe()?;
    let n_proc = a.subscribers.div_ceil(per);
    let mut children = Vec::with_capacity(n_proc);
    for k in 0..n_proc {
        let (lo, hi) = (k * a.subscribers / n_proc, (k + 1) * a.subscribers / n_proc);
        let mut child = tokio::process::Command::new(&exe)
            .args(["--no-progress", "fanout", "--target", &a.target])
            .args(["--subscribers", &a.subscribers.to_string(), "--topics-per-sub", &a.topics_per_sub.to_string()])
            .args(["--encoding", if a.encoding == Enc::Bin { "bin" } else { "json" }])
            .args(["--channel", a.channel.prefix().trim_end_matches('.')])
            .args([
                "--transport",
                match a.transport {
                    Transport::Ws => "ws",
                    Transport::Quic => "quic",
                    Transport::QuicDatagram => "quic-datagram",
                    Transport::Signalr => "signalr",
                    Transport::SignalrMsgpack => "signalr-msgpack",
                },
            ])
            .args(["--duration", &format!("{}ms", a.duration.as_millis())])
            .args(["--connect-concurrency", &a.connect_concurrency.to_string()])
            .args(["--worker-range", &format!("{lo}:{hi}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = tokio::io::BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        let stdin = child.stdin.take().context("worker stdin")?;
        children.push((child, stdout, stdin));
    }
    eprintln!("fanout: {} subscribers over {n_proc} loadgen processes", a.subscribers);
    for (_, out, _) in &mut children {
        let line =
            tokio::time::timeout(Duration::from_secs(180), out.next_line()).await.context("worker connect")??;
        anyhow::ensure!(line.as_deref() == Some("READY"), "a worker failed to connect: {line:?}");
    }
    let m0 = metrics::scrape(addr).await?;
    let t0 = Instant::now();
    for (_, _, stdin) in &mut children {
        stdin.write_all(b"GO\n").await?;
        stdin.flush().await?;
    }
    let mut parts = Vec::with_capacity(n_proc);
    for (_, out, _) in &mut children {
        let deadline = a.duration + Duration::from_secs(30);
        let line = tokio::time::timeout(deadline, out.next_line()).await.context("worker result")??.unwrap_or_default();
        let json = line.strip_prefix("RESULT ").context("a worker ended without a result")?;
        parts.push(serde_json::from_str(json)?);
    }
    let window_s = t0.elapsed().as_secs_f64().min(a.duration.as_secs_f64() + 0.5);
    let m1 = metrics::scrape(addr).await;
    Ok((parts, m0, window_s, m1))
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
