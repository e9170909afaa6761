//! The standard comparison in one run: start the marquee server, then push (binary), push (JSON), polling at each
//! interval, the TCP floor and the NATS peer, one after the other on the same workload; one report and a chart.

use crate::cli::{Enc, FanoutArgs, NatsArgs, PollArgs, SuiteArgs, TcpBaselineArgs};
use crate::report::{Context, ScenarioResult};
use anyhow::{Context as _, bail};
use plotters::prelude::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A marquee server started for the suite; killed on drop.
struct Server {
    child: Child,
    addr: String,
    data: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn start_server(bin: &Path, rate: f64) -> anyhow::Result<Server> {
    if !bin.exists() {
        bail!("{} not found: build it first with `cargo build --release` or pass --server-bin", bin.display());
    }
    // A fresh auction data directory per run: the server locks the one it uses.
    let data = std::env::temp_dir().join(format!("loadgen-suite-{}-{}", std::process::id(), crate::fanout::now_ns()));
    let mut child = Command::new(bin)
        .args([
            "--quic",
            "off",
            "--listen",
            "127.0.0.1:0",
            "--tick-rate",
            &rate.to_string(),
            "--log",
            "warn,marquee_gateway::server=info",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the server did not report its address within 20 s");
        };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default().to_owned();
            return Ok(Server { child, addr, data });
        }
    }
}

pub async fn run(a: &SuiteArgs, ctx: &Context) -> anyhow::Result<()> {
    const KNOWN: [&str; 5] = ["push-bin", "push-json", "poll", "tcp", "nats"];
    if let Some(bad) = a.only.iter().find(|s| !KNOWN.contains(&s.as_str())) {
        bail!("unknown scenario {bad:?} in --only; choose from {}", KNOWN.join(", "));
    }
    let wants = |s: &str| a.only.iter().any(|o| o == s);
    let server = start_server(&a.server_bin, a.rate)?;
    let mut results: Vec<ScenarioResult> = Vec::new();
    for enc in [Enc::Bin, Enc::Json] {
        if !wants(if enc == Enc::Bin { "push-bin" } else { "push-json" }) {
            continue;
        }
        let f = FanoutArgs {
            target: format!("ws://{}/ws", server.addr),
            subscribers: a.subscribers,
            topics_per_sub: a.topics_per_sub,
            channel: crate::cli::Channel::Ticks,
            encoding: enc,
            transport: crate::cli::Transport::Ws,
            duration: a.duration,
            connect_concurrency: 256,
            per_process: 0,
            worker_range: None,
        };
        eprintln!("suite: push {enc:?}, {} subscribers", a.subscribers);
        results.push(crate::fanout::run(&f, ctx).await?);
    }
    for &interval in a.poll_intervals.iter().filter(|_| wants("poll")) {
        let p = PollArgs {
            target: format!("http://{}", server.addr),
            clients: a.subscribers,
            topics_per_sub: a.topics_per_sub,
            interval,
            duration: a.duration,
            timeout: Duration::from_secs(2),
        };
        eprintln!("suite: polling every {interval:?}, {} clients", a.subscribers);
        results.push(crate::poll::run(&p, ctx).await?);
    }
    drop(server);
    if wants("tcp") {
        results.push(crate::tcp_baseline::run(&TcpBaselineArgs { samples: 20_000 })?);
    }
    let n = NatsArgs {
        subscribers: a.subscribers,
        topics_per_sub: a.topics_per_sub,
        symbols: 50,
        rate: a.rate,
        duration: a.duration,
        nats_server: a.nats_server.clone(),
        connect_concurrency: 128,
    };
    if wants("nats") {
        eprintln!("suite: NATS peer, {} subscribers", a.subscribers);
        match crate::nats::run(&n, ctx).await {
            Ok(r) => results.push(r),
            Err(e) => results.push(ScenarioResult {
                name: "nats".into(),
                notes: vec![format!("not run: {e:#}")],
                ..ScenarioResult::default()
            }),
        }
    }
    crate::report::write(ctx, "suite", &results)?;
    Ok(())
}

/// Draws the latency percentiles (p50 to max, log scale) of every result that has latencies.
pub fn chart(path: &Path, results: &[ScenarioResult]) -> anyhow::Result<()> {
    let series: Vec<&ScenarioResult> = results.iter().filter(|r| r.latency_us.count > 0).collect();
    let max = series.iter().map(|r| r.latency_us.max).max().unwrap_or(1).max(10) as f64;
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Delivery latency / staleness by percentile (µs, log scale)", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..4usize, (1f64..max * 1.5).log_scale())?;
    let labels = ["p50", "p90", "p99", "p99.9", "max"];
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|i| labels.get(*i).copied().unwrap_or("").to_owned())
        .y_desc("µs")
        .draw()?;
    for (i, r) in series.iter().enumerate() {
        let l = &r.latency_us;
        let pts: Vec<(usize, f64)> =
            [l.p50, l.p90, l.p99, l.p999, l.max].iter().enumerate().map(|(x, v)| (x, (*v).max(1) as f64)).collect();
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(r.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}
