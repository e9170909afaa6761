//! Reads the server's `/metrics` (Prometheus text) to measure it from outside: CPU, memory, published messages,
//! deliveries and batches.

use crate::http1::Conn;
use crate::report::ServerSide;
use anyhow::Context;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    cpu_s: f64,
    rss: f64,
    published: f64,
    deliveries: f64,
    batches: f64,
}

/// One scrape; fails within 5 s if the server does not answer.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Snapshot> {
    let fut = async {
        let mut c = Conn::connect(addr).await?;
        let mut body = Vec::new();
        let status = c.get("/metrics", &mut body).await?;
        anyhow::ensure!(status == 200, "GET /metrics returned {status}");
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&body).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fut).await.context("GET /metrics timed out")??;
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Snapshot {
        at: Instant::now(),
        cpu_s: get("process_cpu_seconds_total"),
        rss: get("process_resident_memory_bytes"),
        published: get("marquee_published_messages_total"),
        deliveries: get("marquee_deliveries_total"),
        batches: get("marquee_batches_total"),
    })
}

impl Snapshot {
    pub fn rss_bytes(&self) -> f64 {
        self.rss
    }

    /// What happened between `self` (start) and `end`.
    pub fn until(&self, end: &Snapshot) -> ServerSide {
        let dt = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let batches = end.batches - self.batches;
        ServerSide {
            cpu_pct: (end.cpu_s - self.cpu_s) / dt * 100.0,
            rss_mib: end.rss / 1048576.0,
            published_per_s: (end.published - self.published) / dt,
            deliveries_per_s: (end.deliveries - self.deliveries) / dt,
            mean_batch: if batches > 0.0 { (end.deliveries - self.deliveries) / batches } else { 0.0 },
            cpu_ns_per_delivery: if end.deliveries > self.deliveries {
                (end.cpu_s - self.cpu_s) / (end.deliveries - self.deliveries) * 1e9
            } else {
                0.0
            },
        }
    }
}
