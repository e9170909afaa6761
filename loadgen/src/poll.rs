//! The polling baseline: each client GETs `/api/quotes/{symbol}` for its symbols on every interval, over one
//! keep-alive connection. Staleness of an update = the time a client first sees a new seq minus that tick's `ts`.

use crate::cli::PollArgs;
use crate::fanout::{measure_window, now_ns, progress, symbols, topics_of};
use crate::report::{Context, Latency, ScenarioResult, own_cpu_seconds};
use crate::{http1, metrics};
use anyhow::bail;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Quote {
    seq: u64,
    ts: i64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    updates: AtomicU64,
    missed: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    bytes: AtomicU64,
}

pub async fn run(a: &PollArgs, ctx: &Context) -> anyhow::Result<ScenarioResult> {
    let addr = http1::addr_of(&a.target)?;
    if a.clients as u64 + 64 > ctx.fd_limit {
        bail!("{} clients need more open files than this process may hold ({})", a.clients, ctx.fd_limit);
    }
    let syms = symbols(addr).await?;
    let shared = crate::fanout::Shared::new();
    let counters = Arc::new(Counters::default());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pb = progress(ctx, a.clients as u64, "connecting");
    let t_connect = Instant::now();
    let mut conns = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        match tokio::time::timeout(Duration::from_secs(5), http1::Conn::connect(addr)).await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => bail!("cannot connect polling client: {e:#}"),
            Err(_) => bail!("connecting a polling client timed out"),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let connect_s = t_connect.elapsed().as_secs_f64();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let paths: Vec<String> =
            topics_of(i, a.topics_per_sub, &syms).iter().map(|t| format!("/api/quotes/{}", &t[6..])).collect();
        let (shared, counters, measuring, stop) = (shared.clone(), counters.clone(), measuring.clone(), stop.clone());
        let (interval, timeout) = (a.interval, a.timeout);
        // Spread the clients' phases over the interval, as independent pollers would be.
        let offset = interval.mul_f64(i as f64 / a.clients.max(1) as f64);
        tasks.spawn(async move {
            let mut last = vec![0u64; paths.len()];
            let mut samples = Vec::with_capacity(512);
            let mut body = Vec::with_capacity(512);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for (j, path) in paths.iter().enumerate() {
                    let m = measuring.load(Ordering::Relaxed);
                    let r = tokio::time::timeout(timeout, conn.get(path, &mut body)).await;
                    let now = now_ns();
                    if m {
                        counters.requests.fetch_add(1, Ordering::Relaxed);
                    }
                    match r {
                        Ok(Ok(200)) => match serde_json::from_slice::<Quote>(&body) {
                            Ok(q) => {
                                if m {
                                    counters.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                                }
                                if q.seq > last[j] {
                                    if m && last[j] != 0 {
                                        counters.updates.fetch_add(1, Ordering::Relaxed);
                                        counters.missed.fetch_add(q.seq - last[j] - 1, Ordering::Relaxed);
                                        samples.push(((now - q.ts).max(0) / 1000) as u64);
                                    }
                                    last[j] = q.seq;
                                }
                            }
                            Err(_) => {
                                counters.errors.fetch_add(m as u64, Ordering::Relaxed);
                            }
                        },
                        Ok(Ok(_)) => {
                            counters.errors.fetch_add(m as u64, Ordering::Relaxed);
                        }
                        Ok(Err(_)) => {
                            counters.errors.fetch_add(m as u64, Ordering::Relaxed);
                            match http1::Conn::connect(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => return samples,
                            }
                        }
                        Err(_) => {
                            counters.timeouts.fetch_add(m as u64, Ordering::Relaxed);
                            match http1::Conn::connect(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => return samples,
                            }
                        }
                    }
                }
                if samples.len() >= 512 {
                    shared.record(&mut samples);
                }
            }
            samples
        });
    }
    // One interval to settle (every client has a first value), then the window.
    tokio::time::sleep(a.interval.max(Duration::from_millis(200))).await;
    let m0 = metrics::scrape(addr).await?;
    let cpu0 = own_cpu_seconds();
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    measure_window(ctx, a.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let window_s = t0.elapsed().as_secs_f64();
    let cpu1 = own_cpu_seconds();
    let m1 = metrics::scrape(addr).await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(mut s) = r {
                shared.record(&mut s);
            }
        }
    })
    .await;
    tasks.abort_all();
    let hist = shared.hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut r = ScenarioResult {
        name: format!("poll-{}ms", a.interval.as_millis()),
        params: serde_json::to_value(a)?,
        clients: a.clients,
        connect_s,
        window_s,
        deliveries: counters.updates.load(Ordering::Relaxed),
        latency_us: Latency::from_histogram(&hist),
        missed_updates: counters.missed.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        timeouts: counters.timeouts.load(Ordering::Relaxed),
        loadgen_cpu_pct: (cpu1 - cpu0) / window_s * 100.0,
        ..ScenarioResult::default()
    };
    r.deliveries_per_s = r.deliveries as f64 / window_s;
    r.requests_per_s = counters.requests.load(Ordering::Relaxed) as f64 / window_s;
    r.bytes_per_s = counters.bytes.load(Ordering::Relaxed) as f64 / window_s;
    let wanted = a.clients as f64 * a.topics_per_sub as f64 / a.interval.as_secs_f64();
    if r.requests_per_s < 0.8 * wanted {
        r.notes.push(format!(
            "asked for {wanted:.0} requests/s, achieved {:.0}: the server or loadgen saturated",
            r.requests_per_s
        ));
    }
    match m1 {
        Ok(m1) => r.server = m0.until(&m1),
        Err(e) => {
            r.notes.push(format!("the server stopped answering during the run: {e:#}"));
            ctx.failed.store(true, Ordering::Relaxed);
        }
    }
    Ok(r)
}
