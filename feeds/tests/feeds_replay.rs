//! Replay and the synthetic driver into a real engine, read back through a subscriber as a client would.

use marquee_engine::{BatchWriter, Encoding, Engine, EngineConfig, Limits, Position, Price, Subscriber};
use marquee_feeds::{
    CsvSource, OnError, Replay, ReplayError, ReplayOptions, Speed, Synthetic, SyntheticMarket, TsUnit,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample.csv");
const HEADER: &str = "timestamp,symbol,price,size\n";

/// A file in the temp dir, removed on drop.
struct TempCsv(PathBuf);

impl TempCsv {
    fn new(name: &str, content: &str) -> TempCsv {
        let path = std::env::temp_dir().join(format!("marquee-feeds-replay-{}-{name}.csv", std::process::id()));
        std::fs::write(&path, content).unwrap();
        TempCsv(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempCsv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One delivered tick, as the JSON wire shows it.
#[derive(Clone, Debug, PartialEq)]
struct Got {
    seq: u64,
    ts: i64,
    price: Price,
    size: u64,
}

/// Subscribes to every `ticks.*` topic from its first message and returns what a client receives, by topic.
fn receive_all(engine: &Arc<Engine>) -> HashMap<String, Vec<Got>> {
    receive_all_of(engine, "ticks.", "tick")
}

/// Every message of the topics named `prefix*`, all of type `ty` (flat JSON events: ticks or trades).
fn receive_all_of(engine: &Arc<Engine>, prefix: &str, ty: &str) -> HashMap<String, Vec<Got>> {
    let limits = Limits { max_pending_messages: u64::MAX, ..Limits::default() };
    let mut sub = Subscriber::new(engine.clone(), limits);
    for name in engine.topic_names(prefix) {
        let since = Position { epoch: engine.epoch(), seq: 0 };
        sub.subscribe(engine.topic(&name).unwrap(), Some(since)).unwrap();
    }
    let mut out: HashMap<String, Vec<Got>> = HashMap::new();
    let mut batch = BatchWriter::new(Encoding::Json);
    loop {
        batch.clear();
        let drained = sub.drain(&mut batch).unwrap();
        let Some(bytes) = batch.finish() else { break };
        for ev in json_events(std::str::from_utf8(bytes).unwrap()) {
            assert_eq!(ev["type"], ty, "no gap or snapshot expected: {ev:?}");
            let got = Got {
                seq: ev["seq"].parse().unwrap(),
                ts: ev["ts"].parse().unwrap(),
                price: ev["price"].parse().unwrap(),
                size: ev["size"].parse().unwrap(),
            };
            out.entry(ev["topic"].clone()).or_default().push(got);
        }
        if !drained.more {
            break;
        }
    }
    out
}

/// Splits a JSON batch of flat events (no nesting, no `,` `:` `{` `}` inside strings) into key/value maps.
fn json_events(batch: &str) -> Vec<HashMap<String, String>> {
    let inner = batch.strip_prefix("[{").and_then(|b| b.strip_suffix("}]")).expect("a JSON array of objects");
    inner
        .split("},{")
        .map(|obj| {
            obj.split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once(':').unwrap();
                    (k.trim_matches('"').to_owned(), v.trim_matches('"').to_owned())
                })
                .collect()
        })
        .collect()
}

fn opts(path: &Path, speed: Speed) -> ReplayOptions {
    let mut o = ReplayOptions::new(path);
    o.speed = speed;
    o
}

/// Sets `stop` after `after`, on another thread.
fn stop_after(stop: &Arc<AtomicBool>, after: Duration) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        stop.store(true, Ordering::Relaxed);
    })
}

#[test]
fn replay_sample_at_max_delivers_every_row_in_order_with_exact_prices() {
    let engine = Engine::new(EngineConfig::default());
    let replay = Replay::prepare(&engine, opts(Path::new(SAMPLE), Speed::Max)).unwrap();
    assert_eq!(replay.symbols(), ["TSLA", "NVDA", "AMZN", "AAPL", "MSFT", "META"]);
    assert_eq!(engine.topic_names("ticks.").len(), 6, "topics exist before the run");
    let summary = replay.run(&AtomicBool::new(false)).unwrap();
    assert_eq!((summary.rows_published, summary.rows_skipped, summary.loops), (300, 0, 1));

    let got = receive_all(&engine);
    let mut expected: HashMap<String, Vec<(Price, u64)>> = HashMap::new();
    for row in CsvSource::open(SAMPLE, TsUnit::Auto).unwrap().map(Result::unwrap) {
        expected.entry(format!("ticks.{}", row.symbol)).or_default().push((row.tick.price, row.tick.size));
    }
    assert_eq!(got.len(), expected.len());
    for (topic, want) in &expected {
        let have = &got[topic];
        let seqs: Vec<u64> = have.iter().map(|g| g.seq).collect();
        assert_eq!(seqs, (1..=want.len() as u64).collect::<Vec<_>>(), "{topic}");
        let ticks: Vec<(Price, u64)> = have.iter().map(|g| (g.price, g.size)).collect();
        assert_eq!(&ticks, want, "{topic}");
        assert!(have.windows(2).all(|w| w[0].ts <= w[1].ts), "{topic}: ts goes forward");
    }
}

#[test]
fn replay_paced_stamps_the_scheduled_time() {
    // Rows 1 s apart at speed 100: due every 10 ms. The third row is earlier than the second: due at once, and
    // stamped with the second's time so that ts never goes back.
    let content = format!("{HEADER}1000,A,1,1\n1001,A,2,1\n1000,A,3,1\n1003,A,4,1\n");
    let f = TempCsv::new("paced", &content);
    let engine = Engine::new(EngineConfig::default());
    let t0 = Instant::now();
    let summary = Replay::prepare(&engine, opts(f.path(), Speed::Factor(100.0))).unwrap().run(&AtomicBool::new(false));
    assert_eq!(summary.unwrap().rows_published, 4);
    assert!(t0.elapsed() >= Duration::from_millis(29), "paced, not instant: {:?}", t0.elapsed());
    let got = &receive_all(&engine)["ticks.A"];
    let offsets: Vec<i64> = got.iter().map(|g| g.ts - got[0].ts).collect();
    assert_eq!(offsets, [0, 10_000_000, 10_000_000, 30_000_000]);
}

#[test]
fn replay_loop_continues_the_schedule_and_the_seqs() {
    // One pass spans 200 ms of file time, rows 100 ms apart; at speed 100 the second pass starts 3 ms in.
    let content = format!("{HEADER}1000000,A,1,1\n1000100,A,2,1\n1000200,A,3,1\n");
    let f = TempCsv::new("loop", &content);
    let engine = Engine::new(EngineConfig::default());
    let mut o = opts(f.path(), Speed::Factor(100.0));
    o.ts_unit = TsUnit::Ms;
    o.looped = true;
    let replay = Replay::prepare(&engine, o).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop_after(&stop, Duration::from_millis(50));
    let summary = replay.run(&stop).unwrap();
    stopper.join().unwrap();
    assert!(summary.loops >= 2, "{summary:?}");
    assert_eq!(summary.rows_published, engine.n_published());
    let got = &receive_all(&engine)["ticks.A"];
    assert!(got.len() >= 7);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.seq, i as u64 + 1);
        assert_eq!(g.price, Price::from_parts(i as i64 % 3 + 1, 0));
        assert_eq!(g.ts - got[0].ts, i as i64 * 1_000_000, "row {i}");
    }
}

#[test]
fn replay_stop_interrupts_a_long_sleep() {
    let f = TempCsv::new("sleepy", &format!("{HEADER}0,A,1,1\n3600,A,2,1\n"));
    let engine = Engine::new(EngineConfig::default());
    let replay = Replay::prepare(&engine, opts(f.path(), Speed::Factor(1.0))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop_after(&stop, Duration::from_millis(30));
    let t0 = Instant::now();
    let summary = replay.run(&stop).unwrap();
    stopper.join().unwrap();
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
    assert_eq!((summary.rows_published, summary.loops), (1, 0));
}

#[test]
fn replay_bad_rows_skip_or_stop() {
    let mut content = String::from(HEADER);
    for i in 0..12 {
        content.push_str(&format!("{i},A,{i},1\n{i},A,x{i},1\n"));
    }
    let f = TempCsv::new("bad-rows", &content);
    let at = |line: u64, reason: &str| format!("{}:{line}: {reason}", f.path().display());

    let engine = Engine::new(EngineConfig::default());
    let summary = Replay::prepare(&engine, opts(f.path(), Speed::Max)).unwrap().run(&AtomicBool::new(false)).unwrap();
    assert_eq!((summary.rows_published, summary.rows_skipped), (12, 12));
    assert_eq!(summary.first_errors.len(), 10);
    assert_eq!(summary.first_errors[0].to_string(), at(3, "price: invalid character in price"));
    assert_eq!(summary.first_errors[9].line, 21);

    let engine = Engine::new(EngineConfig::default());
    let mut o = opts(f.path(), Speed::Max);
    o.on_error = OnError::Stop;
    let e = Replay::prepare(&engine, o).unwrap().run(&AtomicBool::new(false)).unwrap_err();
    assert!(matches!(e, ReplayError::Row(_)));
    assert_eq!(e.to_string(), at(3, "price: invalid character in price"));
    assert_eq!(engine.n_published(), 1, "the good row before it went out");
}

#[test]
fn replay_prepare_errors() {
    let engine = Engine::new(EngineConfig::default());
    let _taken = engine.create_topic("ticks.AAPL").unwrap();
    let e = Replay::prepare(&engine, opts(Path::new(SAMPLE), Speed::Max)).unwrap_err();
    assert_eq!(e.to_string(), "ticks.AAPL: topic exists");

    let f = TempCsv::new("no-rows", &format!("{HEADER}# nothing\n1,A,bad,1\n"));
    let e = Replay::prepare(&engine, opts(f.path(), Speed::Max)).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: no valid rows", f.path().display()));

    let mut o = opts(Path::new(SAMPLE), Speed::Max);
    o.symbols = vec!["XYZ".into(), "aapl".into()];
    let e = Replay::prepare(&engine, o).unwrap_err();
    assert!(e.to_string().ends_with("none of the symbols XYZ,aapl is in the file"), "{e}");

    let e = Replay::prepare(&engine, opts(Path::new(SAMPLE), Speed::Factor(-2.0))).unwrap_err();
    assert_eq!(e.to_string(), "invalid speed -2");

    let missing = std::env::temp_dir().join("marquee-feeds-replay-missing.csv");
    let e = Replay::prepare(&engine, opts(&missing, Speed::Max)).unwrap_err();
    assert!(matches!(e, ReplayError::Io { .. }) && e.to_string().starts_with(&missing.display().to_string()));

    let junk = std::env::temp_dir().join(format!("marquee-feeds-replay-{}-junk.bin", std::process::id()));
    std::fs::write(&junk, [0u8, 159, 146, 150, 0, 1, 2, 3]).unwrap();
    let e = Replay::prepare(&engine, opts(&junk, Speed::Max)).unwrap_err();
    let _ = std::fs::remove_file(&junk);
    assert!(matches!(e, ReplayError::UnknownFormat { .. }), "{e:?}");
    assert!(e.to_string().contains("expected CSV ticks, Databento DBN (.dbn, .dbn.zst) or NASDAQ"), "{e}");
}

#[test]
fn synthetic_run_follows_the_market_on_a_fixed_schedule() {
    let engine = Engine::new(EngineConfig::default());
    let synthetic = Synthetic::prepare(&engine, 3).unwrap();
    let ticks = |e: &Engine| e.topic_names("ticks.").iter().map(|t| e.topic(t).unwrap().head()).sum::<u64>();
    assert_eq!(ticks(&engine), 50, "an opening tick per symbol before the run");
    assert_eq!(engine.n_published(), 100, "and an opening book");
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop_after(&stop, Duration::from_millis(60));
    let summary = synthetic.run(2000.0, &stop).unwrap();
    stopper.join().unwrap();
    let n = summary.ticks_published;
    assert!(n >= 20, "{summary:?}");
    assert_eq!(ticks(&engine), 50 + n);
    assert_eq!(engine.n_published(), 100 + 3 * n, "each tick also makes a print and a book");

    // Same seed, same ticks: replaying the market by hand predicts every topic's content.
    let mut market = SyntheticMarket::new(3);
    let mut expected: HashMap<String, Vec<(Price, u64)>> = HashMap::new();
    for (i, sym) in market.symbols().iter().enumerate() {
        let t = market.last(i).unwrap();
        expected.entry(format!("ticks.{sym}")).or_default().push((t.price, t.size));
    }
    for _ in 0..n {
        let (i, t) = market.next_tick();
        expected.entry(format!("ticks.{}", market.symbols()[i])).or_default().push((t.price, t.size));
    }
    let got = receive_all(&engine);
    // Every tick's last trade is on the tape too, in the same order, stamped with the same time.
    let prints = receive_all_of(&engine, "trades.", "trade");
    for (topic, have) in &got {
        let tape = prints.get(&topic.replace("ticks.", "trades.")).map_or(&[][..], |v| &v[..]);
        let key = |g: &Got| (g.price, g.size, g.ts);
        assert_eq!(tape.iter().map(key).collect::<Vec<_>>(), have[1..].iter().map(key).collect::<Vec<_>>(), "{topic}");
    }
    for (topic, want) in &expected {
        let have = &got[topic];
        assert_eq!(&have.iter().map(|g| (g.price, g.size)).collect::<Vec<_>>(), want, "{topic}");
        // Tick k is stamped start + k * 500 us: gaps between one topic's ticks are whole periods.
        for w in have[1..].windows(2) {
            let gap = w[1].ts - w[0].ts;
            assert!(gap > 0 && gap % 500_000 == 0, "{topic}: {gap}");
        }
    }
}
