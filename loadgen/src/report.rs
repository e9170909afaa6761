//! What a run measured, and how it is written: a JSON file and a Markdown summary per run (plus an SVG chart of
//! latency percentiles for the suite), each with the command, git commit, date and machine.

use crate::cli::Cli;
use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Facts about this run shared by every scenario.
#[derive(Debug, Serialize)]
pub struct Context {
    pub command: String,
    pub git_commit: String,
    pub date: String,
    pub machine: Machine,
    #[serde(skip)]
    pub out: PathBuf,
    #[serde(skip)]
    pub progress: bool,
    /// Open-files limit of this process after raising it.
    pub fd_limit: u64,
    /// Set when a scenario stopped early (server died): the report is written, the exit code is non-zero.
    #[serde(skip)]
    pub failed: AtomicBool,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
}

impl Context {
    pub fn new(cli: &Cli, fd_limit: u64) -> Context {
        let command =
            std::iter::once("loadgen".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        Context {
            command,
            git_commit,
            date,
            machine: Machine { nproc, cpu, kernel },
            out: cli.out.clone(),
            progress: !cli.no_progress,
            fd_limit,
            failed: AtomicBool::new(false),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

/// Server-side figures read from its `/metrics` over the measurement window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerSide {
    /// CPU used by the server process, in % of one core.
    pub cpu_pct: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
    /// Messages the server published per second.
    pub published_per_s: f64,
    /// Deliveries the server counted per second.
    pub deliveries_per_s: f64,
    /// Mean messages per written batch over the window.
    pub mean_batch: f64,
    /// Server CPU time per delivery it counted, in ns (CPU of the whole process, feed included, over deliveries).
    pub cpu_ns_per_delivery: f64,
}

/// One scenario's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioResult {
    /// e.g. `push-bin`, `push-json`, `poll-100ms`, `nats`, `idle`, `tcp-baseline`.
    pub name: String,
    pub params: serde_json::Value,
    /// Connections (or polling clients) that took part.
    pub clients: usize,
    /// Seconds to open and subscribe every connection.
    pub connect_s: f64,
    /// Seconds measured.
    pub window_s: f64,
    /// Deliveries (push) or new values seen (polling) in the window.
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// Latency of push deliveries, or staleness of polled values, in µs.
    pub latency_us: Latency,
    pub gaps: u64,
    /// Seqs skipped by conflation (push) or never seen by a poller.
    pub missed_updates: u64,
    pub disconnects: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Polling: requests per second.
    pub requests_per_s: f64,
    pub bytes_per_s: f64,
    /// CPU used by loadgen over the window, % of one core.
    pub loadgen_cpu_pct: f64,
    pub server: ServerSide,
    /// Idle: server memory per connection, bytes.
    pub bytes_per_connection: Option<f64>,
    /// Free-form notes (why something was skipped, what saturated).
    pub notes: Vec<String>,
}

pub fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

pub fn ser_durations<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(d.iter().map(|d| format!("{}ms", d.as_millis())))
}

/// CPU seconds (user + system) used by this process so far.
pub fn own_cpu_seconds() -> f64 {
    proc_cpu_seconds("self")
}

/// CPU seconds used so far by process `pid` (`"self"` for this one), from `/proc/<pid>/stat`.
pub fn proc_cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, after)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) as f64 / 100.0
}

/// Resident memory of process `pid` in bytes, from `/proc/<pid>/status`.
pub fn proc_rss_bytes(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
        })
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

#[derive(Serialize)]
struct Report<'a> {
    scenario: &'a str,
    #[serde(flatten)]
    context: &'a Context,
    results: &'a [ScenarioResult],
}

/// Writes `<out>/<scenario>-<date>.json` and `.md` (and `.svg` when there are several latency series).
pub fn write(ctx: &Context, scenario: &str, results: &[ScenarioResult]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&ctx.out).with_context(|| format!("cannot create {}", ctx.out.display()))?;
    let stamp = ctx.date.replace([':', '-'], "");
    let base = ctx.out.join(format!("{scenario}-{stamp}"));
    let json = serde_json::to_string_pretty(&Report { scenario, context: ctx, results })?;
    std::fs::write(base.with_extension("json"), json)?;
    let mut md = markdown(ctx, scenario, results);
    if results.iter().filter(|r| r.latency_us.count > 0).count() > 1 {
        let svg = base.with_extension("svg");
        crate::suite::chart(&svg, results)?;
        let _ = writeln!(md, "\n![latency percentiles]({})", svg.file_name().unwrap_or_default().to_string_lossy());
    }
    std::fs::write(base.with_extension("md"), &md)?;
    println!("{md}");
    println!("wrote {}.{{json,md}}", base.display());
    Ok(base)
}

/// The Markdown summary: a table row per scenario.
pub fn markdown(ctx: &Context, scenario: &str, results: &[ScenarioResult]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# loadgen {scenario}\n");
    let _ = writeln!(md, "- command: `{}`", ctx.command);
    let _ = writeln!(md, "- git commit: {}", ctx.git_commit);
    let _ = writeln!(md, "- date: {}", ctx.date);
    let _ = writeln!(
        md,
        "- machine: {} vCPU, {}, Linux {}; server and loadgen share it",
        ctx.machine.nproc, ctx.machine.cpu, ctx.machine.kernel
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| scenario | clients | deliveries/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | gaps | missed | disc. | err/timeouts | req/s | server CPU % | server CPU ns/delivery | server RSS MiB | loadgen CPU % | connect s |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let l = &r.latency_us;
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            r.name,
            r.clients,
            r.deliveries_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.gaps,
            r.missed_updates,
            r.disconnects,
            r.errors,
            r.timeouts,
            r.requests_per_s,
            r.server.cpu_pct,
            r.server.cpu_ns_per_delivery,
            r.server.rss_mib,
            r.loadgen_cpu_pct,
            r.connect_s
        );
    }
    for r in results {
        if let Some(b) = r.bytes_per_connection {
            let _ = writeln!(md, "\n{}: server memory per connection {:.0} bytes ({:.1} KiB)", r.name, b, b / 1024.0);
        }
        for n in &r.notes {
            let _ = writeln!(md, "\n- {}: {n}", r.name);
        }
    }
    md
}
