//! Idle connections: open and hold N WebSocket connections without subscriptions, and read the server's resident
//! memory before and after to get its memory per connection.

use crate::cli::{Enc, IdleArgs};
use crate::fanout::{connect_ws, progress, source_addr};
use crate::report::{Context, ScenarioResult, own_cpu_seconds};
use crate::{http1, metrics};
use anyhow::bail;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(a: &IdleArgs, ctx: &Context) -> anyhow::Result<ScenarioResult> {
    let addr = http1::addr_of(&a.target)?;
    if a.connections as u64 + 64 > ctx.fd_limit {
        bail!(
            "{} connections need more open files than this process may hold ({}); ask for at most {}",
            a.connections,
            ctx.fd_limit,
            ctx.fd_limit.saturating_sub(64)
        );
    }
    crate::fanout::symbols(addr).await?;
    let m0 = metrics::scrape(addr).await?;
    let sem = Arc::new(tokio::sync::Semaphore::new(a.connect_concurrency.max(1)));
    let pb = progress(ctx, a.connections as u64, "connecting");
    let t0 = Instant::now();
    let cpu0 = own_cpu_seconds();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..a.connections {
        let (url, sem, n) = (a.target.clone(), sem.clone(), a.connections);
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            tokio::time::timeout(Duration::from_secs(10), connect_ws(&url, addr, source_addr(i, n), Enc::Json)).await
        });
    }
    let mut conns = Vec::with_capacity(a.connections);
    let (mut failed, mut first_err) = (0u64, None);
    while let Some(r) = set.join_next().await {
        pb.inc(1);
        match r {
            Ok(Ok(Ok(ws))) => conns.push(ws),
            Ok(Ok(Err(e))) => {
                failed += 1;
                first_err.get_or_insert(e.to_string());
            }
            _ => {
                failed += 1;
                first_err.get_or_insert("timed out".to_owned());
            }
        }
    }
    pb.finish_and_clear();
    let connect_s = t0.elapsed().as_secs_f64();
    // Let the server settle, then read its memory while everything is held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m1 = metrics::scrape(addr).await?;
    crate::fanout::measure_window(ctx, a.hold).await;
    let m2 = metrics::scrape(addr).await;
    let window_s = t0.elapsed().as_secs_f64();
    let held = conns.len();
    drop(conns);
    let per_conn = if held > 0 { (m1.rss_bytes() - m0.rss_bytes()) / held as f64 } else { 0.0 };
    let mut r = ScenarioResult {
        name: "idle".into(),
        params: serde_json::to_value(a)?,
        clients: held,
        connect_s,
        window_s,
        errors: failed,
        loadgen_cpu_pct: (own_cpu_seconds() - cpu0) / window_s * 100.0,
        server: m0.until(&m1),
        bytes_per_connection: Some(per_conn),
        ..ScenarioResult::default()
    };
    if let Some(e) = first_err {
        r.notes.push(format!("{failed} connections failed, first error: {e}"));
    }
    if let Err(e) = m2 {
        r.notes.push(format!("the server stopped answering while the connections were held: {e:#}"));
        ctx.failed.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(r)
}
