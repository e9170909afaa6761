//! The floor: a 64-byte ping-pong over loopback TCP between two threads (blocking sockets, no runtime). One-way
//! latency = round trip / 2. Push latency is compared against this, measured in the same run.

use crate::cli::TcpBaselineArgs;
use crate::report::{Latency, ScenarioResult, new_histogram};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

pub fn run(a: &TcpBaselineArgs) -> anyhow::Result<ScenarioResult> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf)?;
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut hist = new_histogram();
    let mut buf = [7u8; 64];
    let t0 = Instant::now();
    for i in 0..a.samples + 1000 {
        let t = Instant::now();
        c.write_all(&buf)?;
        c.read_exact(&mut buf)?;
        // The first 1,000 round trips warm up.
        if i >= 1000 {
            let one_way_ns = t.elapsed().as_nanos() as u64 / 2;
            hist.saturating_record((one_way_ns / 1000).max(1));
        }
    }
    let window_s = t0.elapsed().as_secs_f64();
    drop(c);
    let _ = echo.join();
    Ok(ScenarioResult {
        name: "tcp-baseline".into(),
        params: serde_json::to_value(a)?,
        clients: 1,
        window_s,
        deliveries: a.samples as u64,
        deliveries_per_s: a.samples as f64 / window_s,
        latency_us: Latency::from_histogram(&hist),
        notes: vec!["latency is one-way (round trip / 2) for 64-byte messages between two threads".into()],
        ..ScenarioResult::default()
    })
}
