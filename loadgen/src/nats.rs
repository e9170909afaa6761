//! The NATS peer: the fan-out server to beat. Starts `nats-server` on a free loopback port, publishes the same
//! workload (ticks on `ticks.<SYMBOL>`, a constant schedule, `ts` = scheduled time) and measures N `async-nats`
//! subscribers exactly as the push scenario measures WebSocket subscribers.
//!
//! Each NATS message carries one tick in Marquee's binary record layout (the engine's codec), so a subscriber
//! decodes it as cheaply as a `marquee.bin` client does.

use crate::cli::NatsArgs;
use crate::fanout::{Shared, measure_window, now_ns, progress};
use crate::report::{Context, Latency, ScenarioResult, ServerSide, own_cpu_seconds, proc_cpu_seconds, proc_rss_bytes};
use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use marquee_engine::body::TickEncoder;
use marquee_engine::{BatchWriter, Encoding, Kind, Price, Tick};
use marquee_protocol::decode::RawRecords;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A running nats-server; killed on drop.
struct NatsServer {
    child: Child,
    url: String,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(bin: &std::path::Path) -> anyhow::Result<NatsServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {} (Debian: apt-get install -y nats-server)", bin.display()))?;
    let server = NatsServer { child, url: format!("nats://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("nats-server did not listen on port {port} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(server)
}

fn symbols(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("SYM{i:02}")).collect()
}

/// Publishes `rate` ticks/s round-robin over the symbols on a constant schedule until `stop`.
async fn publish(
    client: async_nats::Client,
    syms: Vec<String>,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<u64> {
    let encoders: Vec<TickEncoder> = syms.iter().map(|s| TickEncoder::new(&format!("ticks.{s}"), 1)).collect();
    let subjects: Vec<async_nats::Subject> = syms.iter().map(|s| format!("ticks.{s}").into()).collect();
    let mut seqs = vec![0u64; syms.len()];
    let (mut body, mut batch) = (Vec::with_capacity(128), BatchWriter::new(Encoding::Binary));
    let start_ns = now_ns();
    let start = tokio::time::Instant::now();
    let mut k: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(start + due).await;
        let elapsed = start.elapsed();
        while Duration::from_secs_f64(k as f64 / rate) <= elapsed {
            let i = (k % syms.len() as u64) as usize;
            seqs[i] += 1;
            let ts = start_ns + (k as f64 / rate * 1e9) as i64;
            let tick =
                Tick { price: Price(100_000_000_000 + (k % 1000) as i64 * 10_000_000), size: 100, ..Tick::default() };
            body.clear();
            encoders[i].encode_bin(&mut body, seqs[i], ts, &tick);
            batch.clear();
            batch.push_stored(Kind::Tick, None, 0, &[], &body);
            let frame = batch.finish().unwrap_or_default().to_vec();
            client.publish(subjects[i].clone(), frame.into()).await?;
            k += 1;
        }
    }
    client.flush().await?;
    Ok(k)
}

pub async fn run(a: &NatsArgs, ctx: &Context) -> anyhow::Result<ScenarioResult> {
    if a.subscribers as u64 + 64 > ctx.fd_limit {
        bail!("{} subscribers need more open files than this process may hold ({})", a.subscribers, ctx.fd_limit);
    }
    let server = start_server(&a.nats_server).await?;
    let pid = server.child.id().to_string();
    let syms = symbols(a.symbols.max(1));
    let shared = Shared::new();
    let stop = Arc::new(AtomicBool::new(false));
    let sem = Arc::new(tokio::sync::Semaphore::new(a.connect_concurrency.max(1)));
    let pb = progress(ctx, a.subscribers as u64, "connecting");
    let t_connect = Instant::now();
    let mut connect = tokio::task::JoinSet::new();
    for i in 0..a.subscribers {
        let (url, sem) = (server.url.clone(), sem.clone());
        let subjects = crate::fanout::topics_of(i, a.topics_per_sub, &syms);
        connect.spawn(async move {
            let _p = sem.acquire_owned().await;
            let client = async_nats::ConnectOptions::new().subscription_capacity(1 << 16).connect(url).await?;
            let mut subs = Vec::with_capacity(subjects.len());
            for s in subjects {
                subs.push(client.subscribe(s).await?);
            }
            client.flush().await?;
            Ok::<_, anyhow::Error>((client, futures_util::stream::select_all(subs)))
        });
    }
    let mut streams = Vec::with_capacity(a.subscribers);
    while let Some(r) = connect.join_next().await {
        pb.inc(1);
        match r {
            Ok(Ok(s)) => streams.push(s),
            Ok(Err(e)) => bail!("a NATS subscriber failed to connect: {e:#}"),
            Err(e) => bail!("a NATS connect task failed: {e}"),
        }
    }
    pb.finish_and_clear();
    let connect_s = t_connect.elapsed().as_secs_f64();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, mut msgs) in streams {
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.spawn(async move {
            let _keep = client;
            let mut samples = Vec::with_capacity(512);
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), msgs.next()).await else { continue };
                if !shared.measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let now = now_ns();
                for rec in RawRecords::new(&m.payload).flatten() {
                    if let Some((_, _, ts)) = rec.position() {
                        samples.push(((now - ts).max(0) / 1000) as u64);
                        shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
                shared.bytes.fetch_add(m.payload.len() as u64, Ordering::Relaxed);
                if samples.len() >= 512 {
                    shared.record(&mut samples);
                }
            }
            shared.record(&mut samples);
        });
    }
    let pub_client = async_nats::connect(&server.url).await?;
    let publisher = tokio::spawn(publish(pub_client, syms.clone(), a.rate, stop.clone()));
    // Let the schedule start, then open the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (scpu0, lcpu0) = (proc_cpu_seconds(&pid), own_cpu_seconds());
    let t0 = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    measure_window(ctx, a.duration).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let window_s = t0.elapsed().as_secs_f64();
    let (scpu1, lcpu1) = (proc_cpu_seconds(&pid), own_cpu_seconds());
    let rss = proc_rss_bytes(&pid);
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.context("publisher task")??;
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    drop(server);
    let hist = shared.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deliveries = shared.deliveries.load(Ordering::Relaxed);
    Ok(ScenarioResult {
        name: "nats".into(),
        params: serde_json::to_value(a)?,
        clients: a.subscribers,
        connect_s,
        window_s,
        deliveries,
        deliveries_per_s: deliveries as f64 / window_s,
        latency_us: Latency::from_histogram(&hist),
        bytes_per_s: shared.bytes.load(Ordering::Relaxed) as f64 / window_s,
        loadgen_cpu_pct: (lcpu1 - lcpu0) / window_s * 100.0,
        server: ServerSide {
            cpu_pct: (scpu1 - scpu0) / window_s * 100.0,
            rss_mib: rss / 1048576.0,
            published_per_s: published as f64 / (window_s + 0.5),
            ..ServerSide::default()
        },
        notes: vec!["the publisher runs inside loadgen (its CPU is in loadgen CPU %)".into()],
        ..ScenarioResult::default()
    })
}
