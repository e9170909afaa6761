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

use super::journal::Journal;
use super::lot::{Judgement, Lot, LotSpec, LotState, Reject, price_units};
use super::{AmountError, format_amount};
use marquee_engine::{Hub, Price};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

const INDEX_SHARDS: usize = 16;
/// Most bids one group commit takes.
const MAX_GROUP: usize = 4096;
/// How long a worker waits for bids before it looks at its lots' clocks and the stop flag again.
const IDLE_WAIT_MS: i64 = 200;

/// Auction settings.
#[derive(Clone, Debug)]
pub struct AuctionConfig {
    /// Where the journals live (created when missing).
    pub data_dir: PathBuf,
    /// Lot workers (threads, each with its own journal). Fixed for a data directory.
    pub n_workers: usize,
    /// Demo lots kept running (0: none). Each closed demo lot is replaced by a new one.
    pub demo_lots: usize,
    /// How long a demo lot runs.
    pub lot_duration: Duration,
    /// Extra time between the ends of consecutive demo lots at start.
    pub stagger: Duration,
    /// Anti-sniping: an accepted bid closer than this to the end moves the end to bid time + this.
    pub anti_snipe: Duration,
}

impl Default for AuctionConfig {
    fn default() -> AuctionConfig {
        AuctionConfig {
            data_dir: PathBuf::from("marquee-data"),
            n_workers: 2,
            demo_lots: 6,
            lot_duration: Duration::from_secs(180),
            stagger: Duration::from_secs(30),
            anti_snipe: Duration::from_secs(30),
        }
    }
}

/// A bid as submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BidRequest {
    pub user: String,
    /// The client's idempotency key (scoped to the user).
    pub key: String,
    pub lot: u64,
    pub amount: Price,
}

/// A bid durably recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BidAck {
    pub bid_id: String,
    /// True when this key had already been submitted (a retry): nothing new was recorded.
    pub replayed: bool,
}

/// Why a bid was refused before it was recorded (nothing changed); [`SubmitError::code`] is the stable code.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    UnknownLot,
    LotClosed,
    LotNotOpen,
    TooLow {
        min: Price,
    },
    InvalidAmount(AmountError),
    /// The key was used before for a different lot or amount.
    KeyReused,
    /// The key's first submission is still being recorded; retry shortly.
    InProgress,
    /// The journal failed or the house is stopping.
    Unavailable,
}

impl SubmitError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::UnknownLot => "unknown_lot",
            SubmitError::LotClosed => "lot_closed",
            SubmitError::LotNotOpen => "lot_not_open",
            SubmitError::TooLow { .. } => "bid_too_low",
            SubmitError::InvalidAmount(e) => e.code(),
            SubmitError::KeyReused => "idempotency_key_reused",
            SubmitError::InProgress => "request_in_progress",
            SubmitError::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::UnknownLot => f.write_str("no such lot"),
            SubmitError::LotClosed => f.write_str("the lot is closed"),
            SubmitError::LotNotOpen => f.write_str("the lot is not open yet"),
            SubmitError::TooLow { min } => write!(f, "the lowest acceptable bid is {}", format_amount(*min)),
            SubmitError::InvalidAmount(e) => e.fmt(f),
            SubmitError::KeyReused => f.write_str("this Idempotency-Key was used for a different bid"),
            SubmitError::InProgress => f.write_str("a request with this Idempotency-Key is still being recorded"),
            SubmitError::Unavailable => f.write_str("bids cannot be recorded right now"),
        }
    }
}

impl std::error::Error for SubmitError {}

impl From<Reject> for SubmitError {
    fn from(r: Reject) -> SubmitError {
        match r {
            Reject::NotOpenYet => SubmitError::LotNotOpen,
            Reject::LotClosed => SubmitError::LotClosed,
            Reject::TooLow { min } => SubmitError::TooLow { min },
        }
    }
}

/// A bid's outcome so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BidStatus {
    Pending,
    Accepted,
    Rejected(Reject),
}

/// A bid as `GET /api/bids/{key}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BidView {
    pub bid_id: Option<String>,
    pub key: String,
    pub lot: String,
    pub user: String,
    pub amount: String,
    /// `pending`, `accepted` or `rejected`.
    pub status: &'static str,
    /// For rejected bids: `lot_closed`, `lot_not_open` or `bid_too_low`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// A lot as `GET /api/lots` shows it and `lot_update` pushes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LotView {
    pub lot: String,
    pub title: String,
    pub emoji: String,
    pub state: &'static str,
    pub opening: String,
    pub increment: String,
    /// The least the next bid may be.
    pub min_bid: String,
    pub high_bid: Option<String>,
    pub leader: Option<String>,
    pub reserve_met: bool,
    pub bids: u64,
    /// Unix ms.
    pub starts_at: i64,
    /// Unix ms, after anti-sniping extensions.
    pub ends_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    #[serde(skip)]
    min_units: Price,
}

impl LotView {
    fn of(lot: &Lot, now: i64) -> LotView {
        let s = lot.spec();
        let closed = lot.closed();
        LotView {
            lot: s.id.to_string(),
            title: s.title.clone(),
            emoji: s.emoji.clone(),
            state: lot.state(now).as_str(),
            opening: format_amount(s.opening),
            increment: format_amount(s.increment),
            min_bid: format_amount(lot.min_next()),
            high_bid: lot.high().map(|(p, _)| format_amount(p)),
            leader: lot.high().map(|(_, u)| u.to_owned()),
            reserve_met: lot.high().is_some_and(|(p, _)| p >= s.reserve),
            bids: lot.n_accepted(),
            starts_at: s.starts_at,
            ends_at: lot.ends_at(),
            winner: closed.and_then(|c| c.winner.clone()),
            price: closed.and_then(|c| c.price.map(format_amount)),
            min_units: lot.min_next(),
        }
    }
}

/// One journal record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
enum Record {
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

/// Why the house could not open its data directory.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The directory was written with another number of lot workers.
    WorkerCount {
        found: usize,
        configured: usize,
    },
    /// A record passed its checksum but does not parse: written by another version, or damaged.
    BadRecord {
        path: PathBuf,
        index: usize,
        error: String,
    },
    /// Another process (or another house in this one) has the directory open.
    Locked {
        path: PathBuf,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            OpenError::WorkerCount { found, configured } => {
                write!(f, "the data directory was written by {found} lot workers, not {configured}")
            }
            OpenError::BadRecord { path, index, error } => {
                write!(f, "{}: record {index} is unreadable: {error}", path.display())
            }
            OpenError::Locked { path } => write!(f, "{} is in use by another marquee", path.display()),
        }
    }
}

impl std::error::Error for OpenError {}

type Done = Box<dyn FnOnce(Result<BidAck, SubmitError>) + Send>;

struct BidEntry {
    user: String,
    key: String,
    lot: u64,
    amount: Price,
    /// Set once the bid is durable.
    bid_id: OnceLock<String>,
    status: Mutex<BidStatus>,
}

impl BidEntry {
    fn view(&self) -> BidView {
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

    fn set_status(&self, s: BidStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

struct LotShared {
    worker: usize,
    /// Written by the lot's worker after each change; read by the API.
    view: Mutex<LotView>,
}

type IndexShard = Mutex<HashMap<(String, String), Arc<BidEntry>>>;

struct Shared {
    config: AuctionConfig,
    hub: Arc<Hub>,
    /// Written when a lot is created.
    lots: RwLock<BTreeMap<u64, Arc<LotShared>>>,
    index: Vec<IndexShard>,
    /// Set by a worker whose journal failed.
    failed: Vec<AtomicBool>,
}

impl Shared {
    fn index_shard(&self, user: &str, key: &str) -> &IndexShard {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (user, key).hash(&mut h);
        &self.index[h.finish() as usize % INDEX_SHARDS]
    }

    fn register_lot(&self, lot: &Lot, worker: usize, now: i64) {
        let shared = Arc::new(LotShared { worker, view: Mutex::new(LotView::of(lot, now)) });
        self.lots.write().unwrap_or_else(|e| e.into_inner()).insert(lot.id(), shared);
    }

    fn update_view(&self, lot: &Lot, now: i64) -> LotView {
        let view = LotView::of(lot, now);
        if let Some(s) = self.lots.read().unwrap_or_else(|e| e.into_inner()).get(&lot.id()) {
            *s.view.lock().unwrap_or_else(|e| e.into_inner()) = view.clone();
        }
        view
    }

    fn push(&self, topic: &str, ty: &str, fields: &serde_json::Value) {
        if let Err(e) = self.hub.publish_event(topic, ty, &fields.to_string(), unix_ns()) {
            tracing_free_log(&format!("cannot push {ty} to {topic}: {e}"));
        }
    }
}

/// The feeds crate has no logger; a push that fails (an event too large for a slot) is reported on stderr.
fn tracing_free_log(msg: &str) {
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

/// One lot worker: the single writer of its lots and its journal. Run it with [`LotWorker::run`] on a thread of
/// its own.
pub struct LotWorker {
    idx: usize,
    shared: Arc<Shared>,
    journal: Journal,
    lots: BTreeMap<u64, Lot>,
    rx: Receiver<(Arc<BidEntry>, Done)>,
    next_lot_id: u64,
    /// Journal time of the last record: journal times never go backwards, even if the wall clock does.
    last_ts: i64,
    /// Lots whose opening was already announced (`lot_update` with state `open`).
    announced_open: std::collections::HashSet<u64>,
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

fn demo_spec(id: u64, starts_at: i64, duration_ms: i64) -> LotSpec {
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

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn unix_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
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
        });
        let now = unix_ms();
        let mut workers = Vec::with_capacity(n);
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.join(journal_name(i, n));
            let (journal, recovered) = Journal::open(&path).map_err(io(&path))?;
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
    fn forget(&self, e: &BidEntry) {
        let mut index = self.index_shard(&e.user, &e.key).lock().unwrap_or_else(|e| e.into_inner());
        index.remove(&(e.user.clone(), e.key.clone()));
    }
}

fn encode(r: &Record) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(r).unwrap_or_default()
}

fn view_json(v: &LotView) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

impl LotWorker {
    fn take_lot_id(&mut self) -> u64 {
        let id = self.next_lot_id;
        self.next_lot_id += self.shared.failed.len() as u64;
        id
    }

    fn apply_lot(&mut self, spec: LotSpec) {
        let id = spec.id;
        while self.next_lot_id <= id {
            self.take_lot_id();
        }
        let lot = Lot::new(spec, self.shared.config.anti_snipe.as_millis() as i64);
        self.shared.register_lot(&lot, self.idx, self.last_ts);
        self.lots.insert(id, lot);
    }

    /// Applies one journal record at open: the same decisions as live, without pushes.
    fn replay(&mut self, rec: Record) {
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
