//! Smoke runs against a real server on loopback: the push, polling and idle scenarios produce reports with
//! deliveries, a latency histogram and a staleness figure. Nothing timing-dependent is asserted.

use clap::Parser;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts the marquee server in this process (a thread with its own runtime) on a free port.
fn start_server(extra: &[&str]) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    // Each server gets its own auction data directory (a directory is locked by the server that uses it).
    let data = tmp(&format!("data-{port}"));
    let data = data.to_str().unwrap();
    let quic = if extra.contains(&"--quic") { &[][..] } else { &["--quic", "off"][..] };
    let mut args = vec!["marquee", "--listen", &addr, "--data-dir", data];
    args.extend_from_slice(quic);
    args.extend_from_slice(extra);
    let config = marquee_gateway::Config::from_cli(marquee_gateway::Cli::parse_from(args)).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(marquee_gateway::run(config)).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    addr
}

fn loadgen(out: &Path, args: &[&str]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--no-progress", "--out", out.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "loadgen {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    let report = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(report.with_extension("md").exists(), "a Markdown summary beside the JSON");
    std::fs::remove_dir_all(out).unwrap();
    v
}

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("loadgen-smoke-{}-{name}", std::process::id()))
}

#[test]
fn loadgen_smoke_push_poll_idle_reports() {
    let addr = start_server(&["--tick-rate", "2000"]);
    let ws = format!("ws://{addr}/ws");
    let http = format!("http://{addr}");

    let v = loadgen(&tmp("push"), &["fanout", "--target", &ws, "--subscribers", "200", "--duration", "3s"]);
    assert_eq!(v["scenario"], "fanout");
    assert!(v["git_commit"].is_string() && v["machine"]["nproc"].as_u64().unwrap() >= 1);
    let r = &v["results"][0];
    assert_eq!(r["clients"], 200);
    assert!(r["deliveries"].as_u64().unwrap() > 0, "{r}");
    let lat = &r["latency_us"];
    assert!(lat["count"].as_u64().unwrap() > 0 && lat["p99"].as_u64().unwrap() >= lat["p50"].as_u64().unwrap());
    assert!(r["server"]["published_per_s"].as_f64().unwrap() > 0.0);

    let v = loadgen(
        &tmp("json"),
        &["fanout", "--target", &ws, "--subscribers", "20", "--encoding", "json", "--duration", "1s"],
    );
    assert!(v["results"][0]["deliveries"].as_u64().unwrap() > 0);

    let v = loadgen(
        &tmp("poll"),
        &["poll", "--target", &http, "--clients", "20", "--interval", "100ms", "--duration", "2s"],
    );
    let r = &v["results"][0];
    assert!(r["requests_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["latency_us"]["count"].as_u64().unwrap() > 0, "a polling staleness figure: {r}");
    assert!(r["missed_updates"].as_u64().unwrap() > 0, "polling at 100 ms misses ticks at 40/s per symbol");

    let v = loadgen(&tmp("idle"), &["idle", "--target", &ws, "--connections", "100", "--hold", "1s"]);
    assert_eq!(v["results"][0]["clients"], 100);
    assert!(v["results"][0]["bytes_per_connection"].is_number());
}

#[test]
fn loadgen_smoke_quic_streams_and_datagrams() {
    let addr = start_server(&["--tick-rate", "2000", "--quic", "127.0.0.1:0"]);
    let ws = format!("ws://{addr}/ws");
    for (transport, name) in [("quic", "push-quic-bin"), ("quic-datagram", "push-quic-datagram-bin")] {
        let args = ["fanout", "--target", &ws, "--transport", transport, "--subscribers", "20", "--duration", "2s"];
        let v = loadgen(&tmp(transport), &args);
        let r = &v["results"][0];
        assert_eq!((r["name"].as_str(), r["clients"].as_u64()), (Some(name), Some(20)), "{r}");
        assert!(r["deliveries"].as_u64().unwrap() > 0, "{r}");
        assert!(r["latency_us"]["count"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn loadgen_smoke_signalr() {
    let addr = start_server(&["--tick-rate", "2000"]);
    let ws = format!("ws://{addr}/ws");
    for (transport, name) in [("signalr", "push-signalr-json"), ("signalr-msgpack", "push-signalr-msgpack")] {
        let args = ["fanout", "--target", &ws, "--transport", transport, "--subscribers", "20", "--duration", "2s"];
        let v = loadgen(&tmp(transport), &args);
        let r = &v["results"][0];
        assert_eq!((r["name"].as_str(), r["clients"].as_u64()), (Some(name), Some(20)), "{r}");
        assert!(r["deliveries"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
        assert!(r["latency_us"]["count"].as_u64().unwrap() > 0, "{r}");
        assert!(r["server"]["cpu_ns_per_delivery"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn loadgen_unreachable_target_fails_fast_with_a_message() {
    let t0 = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--no-progress", "--out", tmp("none").to_str().unwrap(), "fanout", "--target", "ws://127.0.0.1:9/ws"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the server"));
    let o = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["fanout", "--target", "ws://10.0.0.1:8080/ws"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a loopback address"));
}

#[test]
fn loadgen_nats_peer_smoke() {
    // scripts/test installs nats-server (Debian package) before running the tests.
    let out = tmp("nats");
    let v = loadgen(&out, &["nats", "--subscribers", "20", "--rate", "1000", "--duration", "1s"]);
    let r = &v["results"][0];
    assert_eq!(r["name"], "nats");
    assert!(r["deliveries"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latency_us"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn loadgen_auction_smoke() {
    let addr = start_server(&["--bid-rate", "1000000", "--bid-burst", "1000000"]);
    let http = format!("http://{addr}");
    let v = loadgen(
        &tmp("auction"),
        &[
            "auction",
            "--target",
            &http,
            "--users",
            "3",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--poll-bids",
            "3",
            "--clients",
            "2",
        ],
    );
    let names: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["auction-push", "auction-poll-100ms", "auction-poll-1s", "auction-throughput"]);
    let push = &v["results"][0];
    assert!(push["latency_us"]["count"].as_u64().unwrap() > 0, "pushed bid results were timed: {push}");
    assert!(v["results"][1]["latency_us"]["count"].as_u64().unwrap() > 0);
    assert!(v["results"][3]["deliveries_per_s"].as_f64().unwrap() > 0.0);
}
