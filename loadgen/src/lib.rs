//! Marquee's load generator: a black-box client that measures push latency (WebSocket, JSON and binary) against
//! HTTP polling and against a NATS server, at thousands of connections, and writes reports to `bench-results/`.
//!
//! It opens no server of its own except the peers it is asked to start (`nats-server`, the `marquee` binary in
//! `suite`), targets loopback addresses only, and bounds every loop in time. It shares the engine's wire codecs
//! (`marquee_engine::codec`) instead of a second copy of the protocol.
#![forbid(unsafe_code)]

pub mod auction;
pub mod cli;
pub mod fanout;
pub mod http1;
pub mod idle;
pub mod metrics;
pub mod nats;
pub mod poll;
pub mod quic;
pub mod report;
pub mod suite;
pub mod tcp_baseline;

use anyhow::bail;
use cli::{Cli, Command};

/// Runs the chosen scenario and writes its report.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let ctx = report::Context::new(&cli, limit);
    match &cli.command {
        Command::Fanout(a) if a.worker_range.is_some() => {
            return fanout::run_worker(a, a.worker_range.clone().unwrap_or_default(), &ctx).await;
        }
        Command::Fanout(a) => {
            let r = fanout::run(a, &ctx).await?;
            report::write(&ctx, "fanout", &[r])?;
        }
        Command::Poll(a) => {
            let r = poll::run(a, &ctx).await?;
            report::write(&ctx, "poll", &[r])?;
        }
        Command::Idle(a) => {
            let r = idle::run(a, &ctx).await?;
            report::write(&ctx, "idle", &[r])?;
        }
        Command::TcpBaseline(a) => {
            let r = tcp_baseline::run(a)?;
            report::write(&ctx, "tcp-baseline", &[r])?;
        }
        Command::Nats(a) => {
            let r = nats::run(a, &ctx).await?;
            report::write(&ctx, "nats", &[r])?;
        }
        Command::Auction(a) => {
            let r = auction::run(a, &ctx).await?;
            report::write(&ctx, "auction", &r)?;
        }
        Command::Suite(a) => suite::run(a, &ctx).await?,
    }
    if ctx.failed.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("the run ended early (see above); the report has what was measured");
    }
    Ok(())
}

/// Refuses targets that are not on this machine's loopback.
pub fn check_loopback(host: &str) -> anyhow::Result<()> {
    let ok = host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    if !ok {
        bail!("target host {host:?} is not a loopback address: loadgen only loads this machine");
    }
    Ok(())
}
