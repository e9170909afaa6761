//! The auction house end to end without sockets: real lot-worker threads, real journal files in a temp dir,
//! pushes read back from the engine's topics.

use marquee_engine::{BatchWriter, Encoding, Engine, EngineConfig, Hub, Limits, Subscriber};
use marquee_feeds::auction::parse_amount;
use marquee_feeds::auction::{AuctionConfig, AuctionHouse, BidAck, BidRequest, LotView, OpenError, SubmitError};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Running {
    house: Arc<AuctionHouse>,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Running {
    fn start(config: AuctionConfig) -> Running {
        let engine = Engine::new(EngineConfig::default());
        let hub = Arc::new(Hub::new(engine.clone()));
        let (house, workers) = AuctionHouse::open(config, hub).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = workers
            .into_iter()
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || w.run(&stop))
            })
            .collect();
        Running { house, engine, stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().unwrap();
        }
    }

    fn bid(&self, user: &str, key: &str, lot: u64, amount: &str) -> Result<BidAck, SubmitError> {
        let (tx, rx) = mpsc::channel();
        let req = BidRequest { user: user.into(), key: key.into(), lot, amount: parse_amount(amount).unwrap() };
        self.house.submit_bid(req, move |r| tx.send(r).unwrap());
        rx.recv_timeout(Duration::from_secs(10)).expect("an answer within 10 s")
    }

    /// Waits until `pred` holds for the bid's status view.
    fn wait_status(&self, user: &str, key: &str, want: &str) {
        wait(|| self.house.bid(user, key).is_some_and(|b| b.status == want), &format!("{user}/{key} {want}"));
    }

    fn subscribe(&self, topic: &str) -> Subscriber {
        // Private topics exist from the first push; create it the way the gateway does at login.
        self.house.hub().writer(topic).unwrap();
        let hub_topic = self.engine.topic(topic).unwrap();
        let mut s = Subscriber::new(self.engine.clone(), Limits::default());
        s.subscribe(hub_topic, None).unwrap();
        // Take the (empty) snapshot now, so what follows arrives as live events.
        drain(&mut s);
        s
    }
}

fn wait(mut pred: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn drain(s: &mut Subscriber) -> Vec<Value> {
    let mut b = BatchWriter::new(Encoding::Json);
    let mut out = Vec::new();
    loop {
        b.clear();
        let d = s.drain(&mut b).unwrap();
        if let Some(f) = b.finish() {
            out.extend(serde_json::from_slice::<Vec<Value>>(f).unwrap());
        }
        if d.messages == 0 && !d.more {
            return out;
        }
    }
}

/// Drains until an event of type `ty` arrived.
fn wait_event(s: &mut Subscriber, ty: &str) -> Vec<Value> {
    let mut all = Vec::new();
    wait(
        || {
            all.extend(drain(s));
            all.iter().any(|e| e["type"] == ty)
        },
        ty,
    );
    all
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("marquee-auction-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(dir: &Path) -> AuctionConfig {
    AuctionConfig { data_dir: dir.to_owned(), ..AuctionConfig::default() }
}

#[test]
fn auction_bid_flow_pushes_and_idempotency() {
    let dir = temp_dir("flow");
    let r = Running::start(config(&dir));
    let lots = r.house.lots();
    assert_eq!(lots.len(), 6, "demo lots");
    assert!(lots.iter().all(|l| l.state == "open"));
    let lot: u64 = lots[0].lot.parse().unwrap();
    let opening = lots[0].opening.clone();
    let mut alice = r.subscribe("users.alice");
    let mut bob = r.subscribe("users.bob");
    let mut lot_topic = r.subscribe(&format!("lots.{lot}"));

    let a = r.bid("alice", "k1", lot, &opening).unwrap();
    assert!(!a.replayed);
    r.wait_status("alice", "k1", "accepted");
    let ev = wait_event(&mut alice, "bid_result");
    let res = ev.iter().find(|e| e["type"] == "bid_result").unwrap();
    assert_eq!((res["status"].as_str(), res["bid_id"].as_str()), (Some("accepted"), Some(a.bid_id.as_str())));

    // Same key, same body: the same bid, nothing new. Same key, other body: refused.
    let again = r.bid("alice", "k1", lot, &opening).unwrap();
    assert_eq!((again.bid_id.as_str(), again.replayed), (a.bid_id.as_str(), true));
    assert_eq!(r.bid("alice", "k1", lot, "99999"), Err(SubmitError::KeyReused));
    // Keys are per user: bob's k1 is another bid.
    let min = r.house.lot(lot).unwrap().min_bid;
    let b = r.bid("bob", "k1", lot, &min).unwrap();
    assert_ne!(b.bid_id, a.bid_id);
    r.wait_status("bob", "k1", "accepted");
    let ev = wait_event(&mut alice, "outbid");
    let outbid = ev.iter().find(|e| e["type"] == "outbid").unwrap();
    assert_eq!((outbid["leader"].as_str(), outbid["high_bid"].as_str()), (Some("bob"), Some(min.as_str())));
    wait_event(&mut bob, "bid_result");
    let updates = wait_event(&mut lot_topic, "lot_update");
    let last = updates.iter().rev().find(|e| e["type"] == "lot_update").unwrap();
    assert!(last["bids"].as_u64().unwrap() >= 1);

    // Refused up front: nothing recorded.
    assert_eq!(r.bid("bob", "k2", 9999, "100"), Err(SubmitError::UnknownLot));
    assert!(matches!(r.bid("bob", "k3", lot, &opening), Err(SubmitError::TooLow { .. })));
    assert!(r.house.bid("bob", "k2").is_none() && r.house.bid("bob", "k3").is_none());
    assert_eq!(r.house.lot(lot).unwrap().bids, 2);
    // Two bids journaled: the retry and the refusals wrote nothing.
    let stats = r.house.journal_stats();
    assert_eq!(stats.bids.load(Ordering::Relaxed), 2);
    let syncs = stats.syncs.load(Ordering::Relaxed);
    assert!((1..=2).contains(&syncs), "{syncs}");
    r.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auction_replay_restores_lots_and_outcomes_exactly() {
    let dir = temp_dir("replay");
    let r = Running::start(config(&dir));
    let mut keys = Vec::new();
    for lot in r.house.lots() {
        let id: u64 = lot.lot.parse().unwrap();
        let mut amount = parse_amount(&lot.opening).unwrap();
        let inc = parse_amount(&lot.increment).unwrap();
        for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
            let key = format!("{id}-{i}");
            let s = marquee_feeds::auction::format_amount(amount);
            r.bid(user, &key, id, &s).unwrap();
            keys.push((user.to_string(), key));
            amount = marquee_engine::Price(amount.units() + inc.units());
        }
    }
    for (u, k) in &keys {
        wait(|| r.house.bid(u, k).is_some_and(|b| b.status != "pending"), "judged");
    }
    let before_lots: Vec<LotView> = r.house.lots();
    let before_bids: Vec<_> = keys.iter().map(|(u, k)| r.house.bid(u, k).unwrap()).collect();
    r.stop();

    let r = Running::start(config(&dir));
    assert_eq!(r.house.lots(), before_lots);
    let after_bids: Vec<_> = keys.iter().map(|(u, k)| r.house.bid(u, k).unwrap()).collect();
    assert_eq!(after_bids, before_bids);
    // A retried key after the restart is the same bid; new bids continue the numbering.
    let lot0 = &before_lots[0];
    let id0: u64 = lot0.lot.parse().unwrap();
    let first = &before_bids[0];
    let again = r.bid("alice", &keys[0].1, id0, &first.amount).unwrap();
    assert_eq!(Some(again.bid_id), first.bid_id.clone());
    let new = r.bid("dave", "new", id0, &lot0.min_bid).unwrap();
    assert_eq!(new.bid_id, format!("{id0}-4"));
    r.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auction_lot_closes_sells_to_the_leader_and_is_replaced() {
    let dir = temp_dir("close");
    let cfg = AuctionConfig {
        demo_lots: 1,
        n_workers: 1,
        lot_duration: Duration::from_millis(1500),
        anti_snipe: Duration::from_millis(10),
        ..config(&dir)
    };
    let r = Running::start(cfg.clone());
    let lot = r.house.lots()[0].clone();
    let id: u64 = lot.lot.parse().unwrap();
    let mut winner = r.subscribe("users.carol");
    let mut topic = r.subscribe(&format!("lots.{id}"));
    // A bid at the reserve or above, so the lot sells.
    r.bid("carol", "c1", id, "1000").unwrap();
    let ev = wait_event(&mut topic, "lot_closed");
    let closed = ev.iter().find(|e| e["type"] == "lot_closed").unwrap();
    assert_eq!((closed["state"].as_str(), closed["winner"].as_str()), (Some("sold"), Some("carol")));
    assert_eq!(closed["price"], "1000.00");
    let won = wait_event(&mut winner, "won");
    assert!(won.iter().any(|e| e["type"] == "won" && e["lot"] == lot.lot.as_str()));
    assert_eq!(r.bid("carol", "c2", id, "2000"), Err(SubmitError::LotClosed));
    wait(|| r.house.lots().len() == 2, "a replacement lot");
    let before = r.house.lots();
    assert_eq!(before[0].state, "sold");
    assert_eq!(before[1].state, "scheduled");
    r.stop();
    let r = Running::start(cfg);
    let after = r.house.lots();
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1].lot, before[1].lot);
    r.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auction_refuses_a_data_dir_in_use() {
    let dir = temp_dir("locked");
    let r = Running::start(config(&dir));
    let engine = Engine::new(EngineConfig::default());
    let err = AuctionHouse::open(config(&dir), Arc::new(Hub::new(engine.clone()))).expect_err("refused");
    assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    r.stop();
    // Released with the house.
    AuctionHouse::open(config(&dir), Arc::new(Hub::new(engine))).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auction_refuses_a_data_dir_written_with_another_worker_count() {
    let dir = temp_dir("workers");
    Running::start(AuctionConfig { n_workers: 2, ..config(&dir) }).stop();
    let engine = Engine::new(EngineConfig::default());
    let err = AuctionHouse::open(AuctionConfig { n_workers: 3, ..config(&dir) }, Arc::new(Hub::new(engine)))
        .expect_err("refused");
    assert!(matches!(err, OpenError::WorkerCount { found: 2, configured: 3 }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
