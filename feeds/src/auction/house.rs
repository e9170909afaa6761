//! The auction house: lots sharded over lot workers, each the single writer of its lots and of its own journal.
//!
//! ## The path of a bid
//! 1. [`AuctionHouse::submit_bid`] (any thread) checks what can be refused without changing anything (unknown
//!    or closed lot, amount below the current minimum, an idempotency key reused with another body), records the
//!    key as pending in the index and queues the bid to the lot's worker.
//! 2. The worker takes every bid queued meanwhile, stamps them with one journal time, appends them to its
//!    journal and makes them durable with one `fdatasync` (group commit), then answers each submitter (the
//!    HTTP 202 / WebSocket ack).
//! 3. Only then it judges them, in journal order, and pushes `bid_result`, `outbid` and `lot_update`.
//! 4. When a lot's end has passed, it journals the close (and, in demo mode, a replacement lot), syncs, then
//!    pushes `lot_closed` and `won`.
//!
//! Every decision is a pure function of the journal ([`super::lot`] reads no clock), so a replay after a crash
//! reaches exactly the state the writer had, and gives every journaled bid its outcome.
//!
//! ## Threading
//! Lot `id` belongs to worker `(id - 1) % n_workers` for ever (ids are allocated so). Workers share no lock with
//! each other; they touch shared state only through per-lot view mutexes (read by `GET /api/lots`), per-bid
//! entries of the idempotency index (16 shards by key hash) and the hub's per-topic writer mutexes.
//!
//! ## Failure
//! If a journal write or sync fails, the worker answers the bids of that group `unavailable` (no 202 was sent
//! for them) and refuses everything after: what it holds in memory may be ahead of the disk.

use super::format_amount;
use super::journal::Journal;
use super::lot::{Lot, LotSpec, LotState, price_units};
use super::types::{AuctionConfig, BidAck, BidRequest, BidStatus, BidView, LotView, OpenError, SubmitError};
use super::worker::{LotWorker, demo_spec, unix_ms, unix_ns};
use marquee_engine::{Hub, Price};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

const INDEX_SHARDS: usize = 16;

/// One journal record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub(super) enum Record {
    Lot {
        spec: LotSpec,
    },
    Bid {
        lot: u64,
        bid_id: String,
        key: String,
        user: String,
        #[serde(with = "price_units")]
        amount: Price,
        ts: i64,
    },
    Close {
        lot: u64,
        ts: i64,
    },
}

pub(super) type Done = Box<dyn FnOnce(Result<BidAck, SubmitError>) + Send>;

pub(super) struct BidEntry {
    pub(super) user: String,
    pub(super) key: String,
    pub(super) lot: u64,
    pub(super) amount: Price,
    /// Set once the bid is durable.
    pub(super) bid_id: OnceLock<String>,
    pub(super) status: Mutex<BidStatus>,
}

impl BidEntry {
    pub(super) fn view(&self) -> BidView {
        let status = *self.status.lock().unwrap_or_else(|e| e.into_inner());
        let (status, reason) = match status {
            BidStatus::Pending => ("pending", None),
            BidStatus::Accepted => ("accepted", None),
            BidStatus::Rejected(r) => ("rejected", Some(r.code())),
        };
        BidView {
            bid_id: self.bid_id.get().cloned(),
            key: self.key.clone(),
            lot: self.lot.to_string(),
            user: self.user.clone(),
            amount: format_amount(self.amount),
            status,
            reason,
        }
    }

    pub(super) fn set_status(&self, s: BidStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

pub(super) struct LotShared {
    worker: usize,
    /// Written by the lot's worker after each change; read by the API.
    view: Mutex<LotView>,
}

type IndexShard = Mutex<HashMap<(String, String), Arc<BidEntry>>>;

pub(super) struct Shared {
    pub(super) config: AuctionConfig,
    pub(super) hub: Arc<Hub>,
    /// Written when a lot is created.
    pub(super) lots: RwLock<BTreeMap<u64, Arc<LotShared>>>,
    pub(super) index: Vec<IndexShard>,
    /// Set by a worker whose journal failed.
    pub(super) failed: Vec<AtomicBool>,
    /// Counters for `/metrics` (Relaxed: they order nothing).
    pub(super) stats: JournalStats,
}

/// What the journals did since start.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Bids made durable.
    pub bids: std::sync::atomic::AtomicU64,
    /// Group commits (one write and one `fdatasync` each).
    pub syncs: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(super) fn index_shard(&self, user: &str, key: &str) -> &IndexShard {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (user, key).hash(&mut h);
        &self.index[h.finish() as usize % INDEX_SHARDS]
    }

    pub(super) fn register_lot(&self, lot: &Lot, worker: usize, now: i64) {
        let shared = Arc::new(LotShared { worker, view: Mutex::new(LotView::of(lot, now)) });
        self.lots.write().unwrap_or_else(|e| e.into_inner()).insert(lot.id(), shared);
    }

    pub(super) fn update_view(&self, lot: &Lot, now: i64) -> LotView {
        let view = LotView::of(lot, now);
        if let Some(s) = self.lots.read().unwrap_or_else(|e| e.into_inner()).get(&lot.id()) {
            *s.view.lock().unwrap_or_else(|e| e.into_inner()) = view.clone();
        }
        view
    }

    pub(super) fn push(&self, topic: &str, ty: &str, fields: &serde_json::Value) {
        if let Err(e) = self.hub.publish_event(topic, ty, &fields.to_string(), unix_ns()) {
            tracing_free_log(&format!("cannot push {ty} to {topic}: {e}"));
        }
    }
}

/// The feeds crate has no logger; a push that fails (an event too large for a slot) is reported on stderr.
pub(super) fn tracing_free_log(msg: &str) {
    eprintln!("marquee auction: {msg}");
}

/// The auction house (see the module docs). Shared by every request handler.
pub struct AuctionHouse {
    shared: Arc<Shared>,
    /// `<data-dir>/LOCK`, locked (`flock`) for as long as the house lives: two writers on one journal would
    /// interleave their records. The kernel drops the lock when the process dies, SIGKILL included.
    _lock: std::fs::File,
    /// One queue per worker.
    senders: Vec<Sender<(Arc<BidEntry>, Done)>>,
}

impl fmt::Debug for AuctionHouse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuctionHouse").field("n_workers", &self.senders.len()).finish()
    }
}

fn journal_name(i: usize, n: usize) -> String {
    format!("lots-{i}-of-{n}.journal")
}

impl AuctionHouse {
    /// Opens the data directory: replays every journal (cutting torn tails), closes lots whose end passed while
    /// the server was down (on the workers' first turn), and creates the demo lots in a new directory. Returns
    /// the house and its workers; run each worker on a thread of its own.
    pub fn open(config: AuctionConfig, hub: Arc<Hub>) -> Result<(Arc<AuctionHouse>, Vec<LotWorker>), OpenError> {
        let n = config.n_workers.max(1);
        let dir = config.data_dir.clone();
        let io = |path: &std::path::Path| {
            let path = path.to_owned();
            move |error| OpenError::Io { path, error }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(OpenError::Locked { path: dir }),
            Err(e) => return Err(OpenError::Io { path: lock_path, error: e.into() }),
        }
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(found) = name
                .strip_prefix("lots-")
                .and_then(|r| r.strip_suffix(".journal"))
                .and_then(|r| r.split_once("-of-"))
                .and_then(|(_, n)| n.parse::<usize>().ok())
                && found != n
            {
                return Err(OpenError::WorkerCount { found, configured: n });
            }
        }
        let shared = Arc::new(Shared {
            config: config.clone(),
            hub,
            lots: RwLock::default(),
            index: (0..INDEX_SHARDS).map(|_| Mutex::default()).collect(),
            failed: (0..n).map(|_| AtomicBool::new(false)).collect(),
            stats: JournalStats::default(),
        });
        let now = unix_ms();
        let mut workers = Vec::with_capacity(n);
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.join(journal_name(i, n));
            let (journal, recovered) = Journal::open(&path).map_err(|error| {
                match error.get_ref().and_then(|e| e.downcast_ref::<crate::auction::journal::Damaged>()) {
                    Some(damaged) => OpenError::Damaged(damaged.clone()),
                    None => io(&path)(error),
                }
            })?;
            if recovered.dropped_bytes > 0 {
                tracing_free_log(&format!(
                    "{}: dropped a torn last record ({} bytes)",
                    path.display(),
                    recovered.dropped_bytes
                ));
            }
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            let mut w = LotWorker {
                idx: i,
                shared: shared.clone(),
                journal,
                lots: BTreeMap::new(),
                rx,
                next_lot_id: i as u64 + 1,
                last_ts: 0,
                announced_open: Default::default(),
            };
            for (index, payload) in recovered.records.iter().enumerate() {
                let rec: Record = serde_json::from_slice(payload).map_err(|e| OpenError::BadRecord {
                    path: path.clone(),
                    index,
                    error: e.to_string(),
                })?;
                w.replay(rec);
            }
            let fresh = w.lots.is_empty();
            if fresh && config.demo_lots > 0 {
                let dur = config.lot_duration.as_millis() as i64;
                let stagger = config.stagger.as_millis() as i64;
                for k in (0..config.demo_lots).filter(|k| k % n == i) {
                    let spec = demo_spec(w.take_lot_id(), now, dur + k as i64 * stagger);
                    w.journal.append(&encode(&Record::Lot { spec: spec.clone() }));
                    w.apply_lot(spec);
                }
                w.journal.commit().map_err(io(&path))?;
            }
            for lot in w.lots.values() {
                let view = shared.update_view(lot, now);
                shared.push(&format!("lots.{}", lot.id()), "lot_update", &view_json(&view));
                if lot.state(now) == LotState::Open {
                    w.announced_open.insert(lot.id());
                }
            }
            workers.push(w);
        }
        Ok((Arc::new(AuctionHouse { shared, senders, _lock: lock }), workers))
    }

    /// Submits a bid. `done` is called exactly once: at once when the bid is refused or is a retry of a key
    /// already recorded, otherwise from the lot's worker once the bid is durable.
    pub fn submit_bid(&self, req: BidRequest, done: impl FnOnce(Result<BidAck, SubmitError>) + Send + 'static) {
        let shared = &self.shared;
        let Some(lot) = shared.lots.read().unwrap_or_else(|e| e.into_inner()).get(&req.lot).cloned() else {
            return done(Err(SubmitError::UnknownLot));
        };
        let index = shared.index_shard(&req.user, &req.key);
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = index.get(&(req.user.clone(), req.key.clone())).cloned() {
            drop_then(index, || {
                if e.lot != req.lot || e.amount != req.amount {
                    return done(Err(SubmitError::KeyReused));
                }
                match e.bid_id.get() {
                    Some(id) => done(Ok(BidAck { bid_id: id.clone(), replayed: true })),
                    None => done(Err(SubmitError::InProgress)),
                }
            });
            return;
        }
        if shared.failed[lot.worker].load(Ordering::Acquire) {
            return done(Err(SubmitError::Unavailable));
        }
        {
            // Refuse early what the worker would reject anyway (the view lags the lot, so it is never stricter).
            let view = lot.view.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(view.state, "sold" | "unsold") {
                return done(Err(SubmitError::LotClosed));
            }
            if unix_ms() < view.starts_at {
                return done(Err(SubmitError::LotNotOpen));
            }
            if req.amount < view.min_units {
                return done(Err(SubmitError::TooLow { min: view.min_units }));
            }
        }
        let entry = Arc::new(BidEntry {
            user: req.user.clone(),
            key: req.key.clone(),
            lot: req.lot,
            amount: req.amount,
            bid_id: OnceLock::new(),
            status: Mutex::new(BidStatus::Pending),
        });
        index.insert((req.user, req.key), entry.clone());
        drop(index);
        if let Err(mpsc::SendError((entry, done))) = self.senders[lot.worker].send((entry, Box::new(done))) {
            self.shared.forget(&entry);
            done(Err(SubmitError::Unavailable));
        }
    }

    /// The hub the house pushes through (create a user's private topic with `hub().writer("users.<name>")`).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// A bid by its user and key.
    pub fn bid(&self, user: &str, key: &str) -> Option<BidView> {
        let index = self.shared.index_shard(user, key).lock().unwrap_or_else(|e| e.into_inner());
        index.get(&(user.to_owned(), key.to_owned())).map(|e| e.view())
    }

    /// Every lot, by id.
    pub fn lots(&self) -> Vec<LotView> {
        let lots = self.shared.lots.read().unwrap_or_else(|e| e.into_inner());
        lots.values().map(|l| l.view.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }

    /// Journals that failed (a write or sync error: disk full, I/O error). Their workers refuse every bid until
    /// a restart.
    pub fn failed_journals(&self) -> usize {
        self.shared.failed.iter().filter(|f| f.load(Ordering::Acquire)).count()
    }

    /// Journal counters: bids made durable and the syncs that did it (their ratio is the mean group size).
    pub fn journal_stats(&self) -> &JournalStats {
        &self.shared.stats
    }

    /// One lot.
    pub fn lot(&self, id: u64) -> Option<LotView> {
        let lots = self.shared.lots.read().unwrap_or_else(|e| e.into_inner());
        lots.get(&id).map(|l| l.view.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Runs `f` after releasing `guard` (callbacks never run under an index lock).
fn drop_then<G, R>(guard: G, f: impl FnOnce() -> R) -> R {
    drop(guard);
    f()
}

impl Shared {
    pub(super) fn forget(&self, e: &BidEntry) {
        let mut index = self.index_shard(&e.user, &e.key).lock().unwrap_or_else(|e| e.into_inner());
        index.remove(&(e.user.clone(), e.key.clone()));
    }
}

pub(super) fn encode(r: &Record) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(r).unwrap_or_default()
}

pub(super) fn view_json(v: &LotView) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
