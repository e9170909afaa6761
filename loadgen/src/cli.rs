//! Flags of every scenario.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Load generator for Marquee: push latency against polling and against NATS, at thousands of subscribers.
///
/// Every scenario writes a JSON report and a Markdown summary into `--out` (default `bench-results/`).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Folder for the reports.
    #[arg(long, global = true, default_value = "bench-results")]
    pub out: PathBuf,
    /// Do not draw progress bars (for logs and CI).
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// N WebSocket subscribers, each on a few tick topics: latency of every delivery (receive time minus the tick's
    /// scheduled publish time `ts`).
    Fanout(FanoutArgs),
    /// The polling baseline: N HTTP clients GET /api/quotes/{symbol} for their symbols on every interval.
    Poll(PollArgs),
    /// Open and hold N idle WebSocket connections; report the server's memory per connection.
    Idle(IdleArgs),
    /// Raw loopback TCP ping-pong (64-byte messages): the one-way latency floor of this machine.
    TcpBaseline(TcpBaselineArgs),
    /// The NATS peer: starts nats-server, publishes the same tick workload and measures N async-nats subscribers.
    Nats(NatsArgs),
    /// Auction bids: POST to the pushed outcome against polling the bid's status, and bids/s with fsync on.
    Auction(AuctionArgs),
    /// The standard comparison in one run: push (binary), push (JSON), polling at several intervals, and NATS.
    Suite(SuiteArgs),
}

/// The per-symbol topic family a fan-out subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Channel {
    /// `ticks.<SYMBOL>`.
    Ticks,
    /// `book.<SYMBOL>`.
    Book,
    /// `trades.<SYMBOL>`.
    Trades,
}

impl Channel {
    /// The topic prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Channel::Ticks => "ticks.",
            Channel::Book => "book.",
            Channel::Trades => "trades.",
        }
    }
}

/// Wire encoding of the push scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Enc {
    /// JSON text frames.
    Json,
    /// The `marquee.bin` binary encoding.
    Bin,
}

/// Transport of the push scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// QUIC, ticks on the push stream.
    Quic,
    /// QUIC, ticks as datagrams.
    QuicDatagram,
    /// The SignalR JSON hub protocol over WebSocket (`/hubs/market` on the `--target` host, skipping negotiate),
    /// as the official clients speak it: the handshake, `Subscribe`, `tick` Invocations.
    Signalr,
    /// The same with the SignalR MessagePack hub protocol (binary frames).
    SignalrMsgpack,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct FanoutArgs {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub target: String,
    /// Subscribers (one WebSocket connection each).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Tick topics per subscriber (spread evenly over the server's symbols).
    #[arg(long, default_value_t = 10)]
    pub topics_per_sub: usize,
    /// Which topic of each symbol: `ticks` (L1), `book` (order book tops) or `trades` (prints). Every
    /// delivery's latency is measured from its `ts` alike.
    #[arg(long, value_enum, default_value = "ticks")]
    pub channel: Channel,
    /// Encoding: `json` or `bin`.
    #[arg(long, value_enum, default_value = "bin")]
    pub encoding: Enc,
    /// `ws`, `quic` (ticks on the push stream), `quic-datagram` (ticks as datagrams), `signalr` (the SignalR hub
    /// over WebSocket, JSON hub protocol) or `signalr-msgpack` (MessagePack hub protocol). QUIC takes the server's UDP address and certificate from `/api/quic` on the
    /// `--target` host.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Measurement time after every subscriber is connected, e.g. `30s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub duration: Duration,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Subscribers per loadgen process; more are spread over worker processes. 0 = what the open-files limit allows.
    #[arg(long, default_value_t = 0)]
    pub per_process: usize,
    /// Internal: run as a worker process for subscribers `START:END` of `--subscribers`.
    #[arg(long, hide = true, value_parser = parse_range)]
    #[serde(skip)]
    pub worker_range: Option<std::ops::Range<usize>>,
}

fn parse_range(s: &str) -> Result<std::ops::Range<usize>, String> {
    let (a, b) = s.split_once(':').ok_or("expected START:END")?;
    Ok(a.parse().map_err(|_| "bad START")?..b.parse().map_err(|_| "bad END")?)
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct PollArgs {
    /// HTTP base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Polling clients (one keep-alive connection each).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Symbols each client polls on every interval.
    #[arg(long, default_value_t = 10)]
    pub topics_per_sub: usize,
    /// Poll interval, e.g. `1s`, `100ms`, `10ms`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub interval: Duration,
    /// Measurement time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub duration: Duration,
    /// A request that takes longer than this counts as a timeout.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct IdleArgs {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub target: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 19000)]
    pub connections: usize,
    /// How long to hold them once all are open.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub hold: Duration,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct TcpBaselineArgs {
    /// Round trips to time.
    #[arg(long, default_value_t = 20000)]
    pub samples: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct NatsArgs {
    /// Subscribers (one NATS connection each).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Subjects (`ticks.<SYMBOL>`) per subscriber.
    #[arg(long, default_value_t = 10)]
    pub topics_per_sub: usize,
    /// Symbols in the workload.
    #[arg(long, default_value_t = 50)]
    pub symbols: usize,
    /// Ticks published per second over all symbols, on a constant schedule.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Measurement time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub duration: Duration,
    /// The nats-server executable (Debian: `apt-get install -y nats-server`).
    #[arg(long, default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct AuctionArgs {
    /// HTTP base URL of a server with demo lots and no effective bid limit (`--bid-rate 1000000 --bid-burst 1000000`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Bidders (each logged in, each with a WebSocket on its `users.<name>` topic).
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Bids per second in the push phase, on a constant schedule.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Length of the push phase and of the throughput phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub duration: Duration,
    /// Bids followed by polling, per polling interval.
    #[arg(long, default_value_t = 50)]
    pub poll_bids: usize,
    /// Closed-loop clients in the throughput phase.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct SuiteArgs {
    /// The marquee server binary to start (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/marquee")]
    pub server_bin: PathBuf,
    /// Subscribers (push), clients (polling) and subscribers (NATS).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Topics per subscriber or polling client.
    #[arg(long, default_value_t = 10)]
    pub topics_per_sub: usize,
    /// Ticks per second over all 50 symbols (the server's synthetic feed, and the NATS publisher).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Measurement time of each scenario.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_duration")]
    pub duration: Duration,
    /// Polling intervals to compare, comma-separated.
    #[arg(long, default_value = "1s,100ms,10ms", value_delimiter = ',', value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "report::ser_durations")]
    pub poll_intervals: Vec<Duration>,
    /// The nats-server executable; the NATS peer is reported as skipped when it is missing.
    #[arg(long, default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Scenarios to run, comma-separated, from: push-bin, push-json, poll, tcp, nats.
    #[arg(long, default_value = "push-bin,push-json,poll,tcp,nats", value_delimiter = ',')]
    pub only: Vec<String>,
}

use crate::report;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_durations_take_units() {
        let cli = Cli::parse_from(["loadgen", "suite", "--duration", "1m 30s", "--poll-intervals", "1s,100ms,2.5ms"]);
        let Command::Suite(s) = cli.command else { panic!("not the suite command") };
        assert_eq!(s.duration, Duration::from_secs(90));
        let want = [Duration::from_secs(1), Duration::from_millis(100), Duration::from_micros(2500)];
        assert_eq!(s.poll_intervals, want);
        let Command::Suite(s) = Cli::parse_from(["loadgen", "suite"]).command else { panic!("not the suite command") };
        assert_eq!(s.duration, Duration::from_secs(10));
        for bad in ["10", "soon", "10 fortnights"] {
            assert!(Cli::try_parse_from(["loadgen", "suite", "--duration", bad]).is_err(), "{bad}");
        }
    }
}
