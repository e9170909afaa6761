//! A lot worker: the single writer of its lots and of its journal file. It takes every bid queued while it was
//! syncing (group commit), answers them once durable, then judges them in journal order and pushes the outcomes;
//! it closes lots whose end passed (and, in demo mode, opens their replacements).

use super::format_amount;
use super::house::{BidEntry, Done, Record, Shared, encode, tracing_free_log, view_json};
use super::journal::Journal;
use super::lot::{Judgement, Lot, LotSpec, LotState, Reject};
use super::types::{BidAck, BidStatus, SubmitError};
use marquee_engine::Price;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Most bids one group commit takes.
const MAX_GROUP: usize = 4096;
/// How long a worker waits for bids before it looks at its lots' clocks and the stop flag again.
const IDLE_WAIT_MS: i64 = 200;

/// One lot worker: the single writer of its lots and its journal. Run it with [`LotWorker::run`] on a thread of
/// its own.
pub struct LotWorker {
    pub(super) idx: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) journal: Journal,
    pub(super) lots: BTreeMap<u64, Lot>,
    pub(super) rx: Receiver<(Arc<BidEntry>, Done)>,
    pub(super) next_lot_id: u64,
    /// Journal time of the last record: journal times never go backwards, even if the wall clock does.
    pub(super) last_ts: i64,
    /// Lots whose opening was already announced (`lot_update` with state `open`).
    pub(super) announced_open: std::collections::HashSet<u64>,
}

impl fmt::Debug for LotWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LotWorker").field("idx", &self.idx).field("n_lots", &self.lots.len()).finish()
    }
}

const DEMO_CATALOG: &[(&str, &str, i64, i64, i64)] = &[
    // title, emoji, opening, reserve, increment (whole units)
    ("Brass telescope", "🔭", 100, 180, 5),
    ("Vintage camera", "📷", 80, 120, 5),
    ("Signed guitar", "🎸", 400, 650, 25),
    ("Mantel clock", "🕰️", 60, 90, 5),
    ("Globe, 1920s", "🌍", 150, 220, 10),
    ("Chess set", "♟️", 40, 70, 2),
    ("Pocket watch", "⌚", 120, 200, 10),
    ("Typewriter", "⌨️", 90, 140, 5),
    ("Violin", "🎻", 300, 500, 20),
    ("Oil lamp", "🪔", 30, 45, 1),
];

pub(super) fn demo_spec(id: u64, starts_at: i64, duration_ms: i64) -> LotSpec {
    let (title, emoji, opening, reserve, increment) = DEMO_CATALOG[(id as usize - 1) % DEMO_CATALOG.len()];
    LotSpec {
        id,
        title: title.to_owned(),
        emoji: emoji.to_owned(),
        opening: Price::from_parts(opening, 0),
        reserve: Price::from_parts(reserve, 0),
        increment: Price::from_parts(increment, 0),
        starts_at,
        ends_at: starts_at + duration_ms,
    }
}

pub(super) fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(super) fn unix_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

impl LotWorker {
    pub(super) fn take_lot_id(&mut self) -> u64 {
        let id = self.next_lot_id;
        self.next_lot_id += self.shared.failed.len() as u64;
        id
    }

    pub(super) fn apply_lot(&mut self, spec: LotSpec) {
        let id = spec.id;
        while self.next_lot_id <= id {
            self.take_lot_id();
        }
        let lot = Lot::new(spec, self.shared.config.anti_snipe.as_millis() as i64);
        self.shared.register_lot(&lot, self.idx, self.last_ts);
        self.lots.insert(id, lot);
    }

    /// Applies one journal record at open: the same decisions as live, without pushes.
    pub(super) fn replay(&mut self, rec: Record) {
        match rec {
            Record::Lot { spec } => self.apply_lot(spec),
            Record::Bid { lot, bid_id, key, user, amount, ts } => {
                self.last_ts = self.last_ts.max(ts);
                let status = match self.lots.get_mut(&lot) {
                    Some(l) => {
                        l.saw_bid_id(&bid_id);
                        match l.judge(&user, amount, ts) {
                            Judgement::Accepted { .. } => BidStatus::Accepted,
                            Judgement::Rejected(r) => BidStatus::Rejected(r),
                        }
                    }
                    None => BidStatus::Rejected(Reject::LotClosed),
                };
                let entry = BidEntry {
                    user: user.clone(),
                    key: key.clone(),
                    lot,
                    amount,
                    bid_id: OnceLock::from(bid_id),
                    status: Mutex::new(status),
                };
                let mut index = self.shared.index_shard(&user, &key).lock().unwrap_or_else(|e| e.into_inner());
                index.insert((user, key), Arc::new(entry));
            }
            Record::Close { lot, ts } => {
                self.last_ts = self.last_ts.max(ts);
                if let Some(l) = self.lots.get_mut(&lot) {
                    l.close(ts);
                }
            }
        }
    }

    fn now(&mut self) -> i64 {
        self.last_ts = self.last_ts.max(unix_ms());
        self.last_ts
    }

    /// Judges bids and closes lots until `stop` is set (checked at least every 200 ms). Returns how many bids
    /// it judged.
    pub fn run(mut self, stop: &AtomicBool) -> u64 {
        let mut judged = 0;
        while !stop.load(Ordering::Acquire) {
            let now = self.now();
            if self.shared.failed[self.idx].load(Ordering::Acquire) {
                self.refuse_all(now);
                continue;
            }
            let due: Vec<u64> = self.lots.values().filter(|l| l.is_due(now)).map(Lot::id).collect();
            if !due.is_empty() {
                self.close_lots(&due, now);
                continue;
            }
            self.announce_openings(now);
            let next = self
                .lots
                .values()
                .filter(|l| l.closed().is_none())
                .map(|l| if l.state(now) == LotState::Scheduled { l.spec().starts_at } else { l.ends_at() })
                .min()
                .unwrap_or(i64::MAX);
            let wait = (next - now).clamp(1, IDLE_WAIT_MS) as u64;
            let first = match self.rx.recv_timeout(Duration::from_millis(wait)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            judged += group.len() as u64;
            self.handle_group(group);
        }
        judged
    }

    fn refuse_all(&mut self, _now: i64) {
        match self.rx.recv_timeout(Duration::from_millis(IDLE_WAIT_MS as u64)) {
            Ok((entry, done)) => {
                self.shared.forget(&entry);
                done(Err(SubmitError::Unavailable));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }

    fn fail(&self, e: &std::io::Error) {
        tracing_free_log(&format!("{}: journal failed, refusing bids: {e}", self.journal.path().display()));
        self.shared.failed[self.idx].store(true, Ordering::Release);
    }

    /// Group commit: journal every bid of the group, one sync, answer them all, then judge and push.
    fn handle_group(&mut self, group: Vec<(Arc<BidEntry>, Done)>) {
        let ts = self.now();
        let mut ids = Vec::with_capacity(group.len());
        for (e, _) in &group {
            let id = match self.lots.get_mut(&e.lot) {
                Some(l) => l.next_bid_id(),
                None => format!("{}-0", e.lot),
            };
            let rec = Record::Bid {
                lot: e.lot,
                bid_id: id.clone(),
                key: e.key.clone(),
                user: e.user.clone(),
                amount: e.amount,
                ts,
            };
            self.journal.append(&encode(&rec));
            ids.push(id);
        }
        if let Err(err) = self.journal.commit() {
            self.fail(&err);
            for (e, done) in group {
                self.shared.forget(&e);
                done(Err(SubmitError::Unavailable));
            }
            return;
        }
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.bids.fetch_add(group.len() as u64, Ordering::Relaxed);
        let mut judged = Vec::with_capacity(group.len());
        for ((e, done), id) in group.into_iter().zip(ids) {
            let _ = e.bid_id.set(id.clone());
            done(Ok(BidAck { bid_id: id, replayed: false }));
            judged.push(e);
        }
        for e in judged {
            self.judge(&e, ts);
        }
    }

    fn judge(&mut self, e: &BidEntry, ts: i64) {
        let Some(lot) = self.lots.get_mut(&e.lot) else { return };
        let judgement = lot.judge(&e.user, e.amount, ts);
        let bid_id = e.bid_id.get().cloned().unwrap_or_default();
        let lot_id = e.lot.to_string();
        let user_topic = format!("users.{}", e.user);
        match judgement {
            Judgement::Accepted { outbid } => {
                e.set_status(BidStatus::Accepted);
                let view = self.shared.update_view(lot, ts);
                let fields = serde_json::json!({
                    "bid_id": bid_id, "key": e.key, "lot": lot_id, "amount": format_amount(e.amount),
                    "status": "accepted",
                });
                self.shared.push(&user_topic, "bid_result", &fields);
                if let Some((prev, prev_amount)) = outbid.filter(|(u, _)| *u != e.user) {
                    let fields = serde_json::json!({
                        "lot": lot_id, "title": view.title, "your_bid": format_amount(prev_amount),
                        "high_bid": format_amount(e.amount), "leader": e.user, "min_bid": view.min_bid,
                    });
                    self.shared.push(&format!("users.{prev}"), "outbid", &fields);
                }
                self.shared.push(&format!("lots.{lot_id}"), "lot_update", &view_json(&view));
            }
            Judgement::Rejected(r) => {
                e.set_status(BidStatus::Rejected(r));
                let mut fields = serde_json::json!({
                    "bid_id": bid_id, "key": e.key, "lot": lot_id, "amount": format_amount(e.amount),
                    "status": "rejected", "reason": r.code(),
                });
                if let Reject::TooLow { min } = r {
                    fields["min_bid"] = format_amount(min).into();
                }
                self.shared.push(&user_topic, "bid_result", &fields);
            }
        }
    }

    fn close_lots(&mut self, due: &[u64], now: i64) {
        let mut new_specs = Vec::new();
        for &id in due {
            self.journal.append(&encode(&Record::Close { lot: id, ts: now }));
            if self.shared.config.demo_lots > 0 {
                // Replacements open a few seconds later, so the demo shows a scheduled lot now and then.
                let dur = self.shared.config.lot_duration.as_millis() as i64;
                let spec = demo_spec(self.take_lot_id(), now + 5_000, dur);
                self.journal.append(&encode(&Record::Lot { spec: spec.clone() }));
                new_specs.push(spec);
            }
        }
        if let Err(err) = self.journal.commit() {
            return self.fail(&err);
        }
        // Apply everything, then push: whoever sees `lot_closed` finds the replacement already listed.
        let mut closed = Vec::with_capacity(due.len());
        for &id in due {
            let Some(lot) = self.lots.get_mut(&id) else { continue };
            let outcome = lot.close(now);
            closed.push((id, outcome, self.shared.update_view(lot, now)));
        }
        let mut opened = Vec::with_capacity(new_specs.len());
        for spec in new_specs {
            let id = spec.id;
            self.apply_lot(spec);
            if let Some(lot) = self.lots.get(&id) {
                opened.push((id, self.shared.update_view(lot, now)));
            }
        }
        for (id, outcome, view) in closed {
            let lot_id = id.to_string();
            let fields = serde_json::json!({
                "lot": lot_id, "title": view.title, "state": outcome.state.as_str(), "winner": outcome.winner,
                "price": outcome.price.map(format_amount), "bids": view.bids,
            });
            self.shared.push(&format!("lots.{lot_id}"), "lot_closed", &fields);
            if let (Some(w), Some(p)) = (&outcome.winner, outcome.price) {
                let fields = serde_json::json!({ "lot": lot_id, "title": view.title, "price": format_amount(p) });
                self.shared.push(&format!("users.{w}"), "won", &fields);
            }
        }
        for (id, view) in opened {
            self.shared.push(&format!("lots.{id}"), "lot_update", &view_json(&view));
        }
    }

    fn announce_openings(&mut self, now: i64) {
        for lot in self.lots.values() {
            if lot.state(now) == LotState::Open && !self.announced_open.contains(&lot.id()) {
                self.announced_open.insert(lot.id());
                let view = self.shared.update_view(lot, now);
                self.shared.push(&format!("lots.{}", lot.id()), "lot_update", &view_json(&view));
            }
        }
    }
}
