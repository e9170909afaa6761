//! Topics: the interned registry, each topic's ring and subscriber list, and the single writer that publishes.
//!
//! Threading: the registry and each topic's subscriber list sit behind locks that only subscribe, unsubscribe and
//! topic creation take. Publishing ([`TopicWriter`]) takes no lock: it writes the ring, then notifies a cached copy
//! of the subscriber list, refreshed only when the list's version changed.

use crate::body::{EventFieldsError, Kind, TickEncoder, check_event_fields, valid_event_type};
use crate::fanout::Signal;
use crate::ring::{Bodies, Ring, RingConfig};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering, fence};
use crate::{Metrics, Tick};
use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

/// A topic's small integer id (its index in the registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u32);

/// How a topic treats a subscriber that falls behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicClass {
    /// `ticks.*`, `book.*`, `trades.*`, `bars.*` (market data): only the newest value matters; a lagging reader
    /// skips ahead and is told with a `gap`.
    Conflating,
    /// `lots.*`, `users.*` and the rest: every message matters; a reader lapped by the ring is disconnected.
    Reliable,
}

impl TopicClass {
    /// The class a topic name implies.
    pub fn of(name: &str) -> TopicClass {
        const MARKET_DATA: [&str; 4] =
            [crate::TICKS_PREFIX, crate::depth::BOOK_PREFIX, crate::depth::TRADES_PREFIX, crate::depth::BARS_PREFIX];
        if MARKET_DATA.iter().any(|p| name.starts_with(p)) { TopicClass::Conflating } else { TopicClass::Reliable }
    }
}

/// The prefix of private topics: `users.<name>` is readable only by the connection of user `<name>`.
pub const PRIVATE_PREFIX: &str = "users.";

/// A position in a topic's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub struct Position {
    /// Changes whenever the sequence restarts (a server restart, a new source).
    pub epoch: u64,
    /// 1 for the first message of the epoch, then +1 per message.
    pub seq: u64,
}

/// Engine-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Epoch for topics whose positions the engine assigns; 0 means "now in Unix milliseconds".
    pub epoch: u64,
    /// Ring size of conflating topics (`ticks.*`): many small messages.
    pub ring: RingConfig,
    /// Ring size of reliable topics (`lots.*`, `users.*`, ...): fewer, larger events (JSON fields), and one
    /// topic per user, so fewer and wider slots.
    pub reliable_ring: RingConfig,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig { epoch: 0, ring: RingConfig::default(), reliable_ring: RingConfig::RELIABLE }
    }
}

/// Why a topic could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateTopicError {
    /// The name is already registered (it has a writer).
    Exists,
    /// Empty, too long (over 128 bytes), or has characters outside `[A-Za-z0-9._-]`.
    InvalidName,
}

impl fmt::Display for CreateTopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CreateTopicError::Exists => "topic exists",
            CreateTopicError::InvalidName => "invalid topic name",
        })
    }
}

impl std::error::Error for CreateTopicError {}

/// Why a message was not published.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The encoded bodies do not fit the ring's slot size.
    TooLarge,
    /// A source-assigned position whose epoch is not the topic's.
    EpochMismatch { topic_epoch: u64 },
    /// A source-assigned seq not greater than the last one published.
    NotIncreasing { head: u64 },
    /// An event type name that is empty, too long, has characters outside `[A-Za-z0-9_.-]` or is one of the
    /// protocol's own types (`tick`, `snapshot`, `ack`, ...).
    InvalidEventType,
    /// Event fields that are not one JSON object, or that name a reserved member.
    InvalidFields(EventFieldsError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::TooLarge => f.write_str("message larger than a ring slot"),
            PublishError::EpochMismatch { topic_epoch } => write!(f, "epoch differs from topic epoch {topic_epoch}"),
            PublishError::NotIncreasing { head } => write!(f, "seq not after head {head}"),
            PublishError::InvalidEventType => f.write_str("invalid event type"),
            PublishError::InvalidFields(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PublishError {}

/// The engine: a registry of topics and shared counters. No IO, no threads of its own.
pub struct Engine {
    epoch: u64,
    config: EngineConfig,
    registry: RwLock<Registry>,
    metrics: Metrics,
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<Box<str>, TopicId>,
    topics: Vec<Arc<Topic>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("epoch", &self.epoch).field("n_topics", &self.n_topics()).finish()
    }
}

impl Engine {
    /// A new engine. With `config.epoch == 0` the epoch is the current Unix time in milliseconds, so it differs
    /// across restarts and stays exact in JavaScript numbers.
    pub fn new(config: EngineConfig) -> Arc<Engine> {
        let epoch = if config.epoch != 0 {
            config.epoch
        } else {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64)
        };
        Arc::new(Engine { epoch, config, registry: RwLock::default(), metrics: Metrics::default() })
    }

    /// This engine's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Shared counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Registers `name` with the engine's epoch and returns its only writer.
    pub fn create_topic(&self, name: &str) -> Result<TopicWriter, CreateTopicError> {
        self.create_topic_with_epoch(name, self.epoch)
    }

    /// Registers `name` for a source that assigns positions itself (for example another gateway through a
    /// broker), with that source's epoch; publish with [`TopicWriter::publish_tick_at`].
    pub fn create_topic_with_epoch(&self, name: &str, epoch: u64) -> Result<TopicWriter, CreateTopicError> {
        let ring = match TopicClass::of(name) {
            TopicClass::Conflating => self.config.ring,
            TopicClass::Reliable => self.config.reliable_ring,
        };
        self.create_topic_inner(name, epoch, ring, true)
    }

    /// Registers `name` with the engine's epoch and a ring of its own size (e.g. the small rings of `users.*`,
    /// one per user).
    pub fn create_topic_with_ring(&self, name: &str, ring: RingConfig) -> Result<TopicWriter, CreateTopicError> {
        self.create_topic_inner(name, self.epoch, ring, true)
    }

    /// Registers a `book.*` topic whose ring fits books of `depth` levels per side ([`crate::depth::book_ring`]).
    /// Its messages never go as datagrams: a deep book outgrows one, and a book that never fits never arrives.
    pub fn create_book_topic(&self, name: &str, depth: usize) -> Result<TopicWriter, CreateTopicError> {
        self.create_topic_inner(name, self.epoch, crate::depth::book_ring(depth), false)
    }

    /// `datagrams`: the topic's messages may go as datagrams when its class allows it (see [`Topic::datagrams`]).
    fn create_topic_inner(
        &self,
        name: &str,
        epoch: u64,
        ring: RingConfig,
        datagrams: bool,
    ) -> Result<TopicWriter, CreateTopicError> {
        if !valid_topic_name(name) {
            return Err(CreateTopicError::InvalidName);
        }
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if reg.by_name.contains_key(name) {
            return Err(CreateTopicError::Exists);
        }
        let id = TopicId(reg.topics.len() as u32);
        let topic = Arc::new(Topic {
            id,
            name: name.into(),
            class: TopicClass::of(name),
            datagrams: datagrams && TopicClass::of(name) == TopicClass::Conflating,
            epoch,
            ring: Ring::new(ring),
            subs: Mutex::new(Vec::new()),
            subs_version: AtomicU64::new(0),
        });
        reg.by_name.insert(name.into(), id);
        reg.topics.push(topic.clone());
        Ok(TopicWriter {
            topic,
            cached_subs: Vec::new(),
            cached_version: 0,
            encoder: TickEncoder::new(name, epoch),
            json: Vec::with_capacity(256),
            bin: Vec::with_capacity(128),
            msgpack: Vec::with_capacity(256),
            scratch: Vec::with_capacity(256),
        })
    }

    /// Looks a topic up by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.by_name.get(name).map(|id| reg.topics[id.0 as usize].clone())
    }

    /// Looks a topic up by id.
    pub fn topic_by_id(&self, id: TopicId) -> Option<Arc<Topic>> {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.topics.get(id.0 as usize).cloned()
    }

    /// Number of topics.
    pub fn n_topics(&self) -> usize {
        self.registry.read().unwrap_or_else(|e| e.into_inner()).topics.len()
    }

    /// Names of topics starting with `prefix`, in creation order.
    pub fn topic_names(&self, prefix: &str) -> Vec<String> {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.topics.iter().filter(|t| t.name.starts_with(prefix)).map(|t| t.name.to_string()).collect()
    }

    /// Messages published on all topics (the sum of every topic's head).
    pub fn n_published(&self) -> u64 {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.topics.iter().map(|t| t.head()).sum()
    }

    /// Current subscriptions on all topics.
    pub fn n_subscriptions(&self) -> u64 {
        let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
        reg.topics.iter().map(|t| t.n_subscribers() as u64).sum()
    }
}

/// `[A-Za-z0-9._-]`, 1 to 128 bytes.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One topic: its ring and its subscribers.
pub struct Topic {
    id: TopicId,
    name: Box<str>,
    class: TopicClass,
    /// Subscribers may take this topic as datagrams: conflating, and messages small enough for one.
    datagrams: bool,
    epoch: u64,
    pub(crate) ring: Ring,
    /// Signals of subscribed connections. Locked by subscribe/unsubscribe and by the writer only when
    /// `subs_version` moved since its last look.
    subs: Mutex<Vec<Arc<Signal>>>,
    /// Bumped (under the `subs` lock) on every change of `subs`.
    subs_version: AtomicU64,
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic").field("name", &self.name).field("head", &self.head()).finish()
    }
}

impl Topic {
    /// Interned id.
    pub fn id(&self) -> TopicId {
        self.id
    }

    /// Name, e.g. `ticks.AAPL`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Conflating or reliable.
    pub fn class(&self) -> TopicClass {
        self.class
    }

    /// The epoch of this topic's positions.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Seq of the newest message, 0 when none.
    pub fn head(&self) -> u64 {
        self.ring.head()
    }

    /// Seq of the oldest message the ring still holds (1 when it has not wrapped; 1 also when empty).
    pub fn oldest(&self) -> u64 {
        self.head().saturating_sub(self.ring.capacity() - 1).max(1)
    }

    /// True when subscribers may take the topic as QUIC datagrams: conflating topics (where loss is visible by
    /// seq and the newest value wins), except books, which can outgrow a datagram.
    pub fn datagrams(&self) -> bool {
        self.datagrams
    }

    /// Ring slots.
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// Subscribed connections.
    pub fn n_subscribers(&self) -> usize {
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The newest message as a standalone JSON event (`{"type":"tick",...}`), for the polling endpoint.
    pub fn latest_json(&self) -> Option<(u64, Vec<u8>)> {
        let mut b = crate::BatchWriter::new(crate::Encoding::Json);
        loop {
            let head = self.head();
            if head == 0 {
                return None;
            }
            if self.ring.read_into(head, None, 0, &mut b) == crate::ring::ReadOutcome::Copied {
                let bytes = b.finish()?;
                // Strip the batch's `[` `]`.
                return Some((head, bytes[1..bytes.len() - 1].to_vec()));
            }
        }
    }

    pub(crate) fn add_subscriber(&self, s: Arc<Signal>) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.push(s);
        // Release under the lock; the writer reads it after an SC fence (see `TopicWriter::notify`).
        self.subs_version.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn remove_subscriber(&self, s: &Arc<Signal>) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = subs.iter().position(|x| Arc::ptr_eq(x, s)) {
            subs.swap_remove(i);
            self.subs_version.fetch_add(1, Ordering::Release);
        }
    }
}

/// The single writer of a topic. Not `Clone`: one writer per topic is what lets publishing skip every lock.
pub struct TopicWriter {
    topic: Arc<Topic>,
    cached_subs: Vec<Arc<Signal>>,
    cached_version: u64,
    encoder: TickEncoder,
    json: Vec<u8>,
    bin: Vec<u8>,
    msgpack: Vec<u8>,
    /// The JSON object the MessagePack body is transcoded from.
    scratch: Vec<u8>,
}

impl fmt::Debug for TopicWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicWriter").field("topic", &self.topic.name).finish()
    }
}

impl TopicWriter {
    /// The topic this writes.
    pub fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }

    /// Publishes a tick with the next seq; `ts` is the publish time in Unix ns. Returns its position.
    pub fn publish_tick(&mut self, tick: &Tick, ts: i64) -> Result<Position, PublishError> {
        let pos = Position { epoch: self.topic.epoch, seq: self.topic.head() + 1 };
        self.publish_tick_inner(pos, tick, ts)?;
        Ok(pos)
    }

    /// Publishes a tick at a position the source assigned (same epoch as the topic, seq greater than the head;
    /// seqs skipped on the way reach readers as a gap).
    pub fn publish_tick_at(&mut self, pos: Position, tick: &Tick, ts: i64) -> Result<(), PublishError> {
        if pos.epoch != self.topic.epoch {
            return Err(PublishError::EpochMismatch { topic_epoch: self.topic.epoch });
        }
        let head = self.topic.head();
        if pos.seq <= head {
            return Err(PublishError::NotIncreasing { head });
        }
        self.publish_tick_inner(pos, tick, ts)
    }

    fn publish_tick_inner(&mut self, pos: Position, tick: &Tick, ts: i64) -> Result<(), PublishError> {
        self.json.clear();
        self.bin.clear();
        self.encoder.encode_json(&mut self.json, pos.seq, ts, tick);
        self.encoder.encode_bin(&mut self.bin, pos.seq, ts, tick);
        self.msgpack.clear();
        self.encoder.encode_msgpack(&mut self.msgpack, pos.seq, ts, tick);
        self.store(pos, ts, Kind::Tick)
    }

    /// Publishes a named event with the next seq: `ty` is its type (`bid_result`, `order_completed`; see
    /// [`valid_event_type`]) and `fields` one JSON object whose members follow the standard ones (`topic`,
    /// `epoch`, `seq`, `ts`) in the event. Encoded once for both wire formats, like a tick.
    ///
    /// ```
    /// use marquee_engine::{Engine, EngineConfig, PublishError};
    /// let engine = Engine::new(EngineConfig::default());
    /// let mut w = engine.create_topic("users.alice").unwrap();
    /// let pos = w.publish_event("order_completed", r#"{"order":17}"#, 0).unwrap();
    /// assert_eq!(pos.seq, 1);
    /// let (_, json) = engine.topic("users.alice").unwrap().latest_json().unwrap();
    /// assert!(json.starts_with(br#"{"type":"order_completed","topic":"users.alice","#));
    /// assert_eq!(w.publish_event("tick", "{}", 0), Err(PublishError::InvalidEventType));
    /// ```
    pub fn publish_event(&mut self, ty: &str, fields: &str, ts: i64) -> Result<Position, PublishError> {
        if !valid_event_type(ty) {
            return Err(PublishError::InvalidEventType);
        }
        check_event_fields(fields).map_err(PublishError::InvalidFields)?;
        let pos = Position { epoch: self.topic.epoch, seq: self.topic.head() + 1 };
        let name = &self.topic.name;
        self.json.clear();
        self.bin.clear();
        crate::body::encode_event_json(&mut self.json, name, pos.epoch, pos.seq, ts, ty, fields);
        crate::body::encode_event_bin(&mut self.bin, name, pos.epoch, pos.seq, ts, ty, fields);
        self.write_encoded(pos, ts, Kind::Event)?;
        Ok(pos)
    }

    /// Publishes the top of an order book with the next seq (`bids` and `asks` best first); see [`crate::depth`].
    /// [`PublishError::TooLarge`] when the levels do not fit the topic's slots (create book topics with
    /// [`Engine::create_book_topic`]).
    pub fn publish_book(
        &mut self,
        bids: &[crate::BookLevel],
        asks: &[crate::BookLevel],
        ts: i64,
    ) -> Result<Position, PublishError> {
        let pos = Position { epoch: self.topic.epoch, seq: self.topic.head() + 1 };
        self.json.clear();
        self.bin.clear();
        let name = &self.topic.name;
        crate::depth::encode_book_json(&mut self.json, name, pos.epoch, pos.seq, ts, bids, asks);
        crate::depth::encode_book_bin(&mut self.bin, name, pos.epoch, pos.seq, ts, bids, asks);
        self.msgpack.clear();
        crate::depth::encode_book_msgpack(&mut self.msgpack, name, pos.epoch, pos.seq, ts, bids, asks);
        self.store(pos, ts, Kind::Book)?;
        Ok(pos)
    }

    /// Publishes one trade print with the next seq; see [`crate::depth`].
    pub fn publish_trade(&mut self, trade: &crate::Trade, ts: i64) -> Result<Position, PublishError> {
        let pos = Position { epoch: self.topic.epoch, seq: self.topic.head() + 1 };
        self.json.clear();
        self.bin.clear();
        let name = &self.topic.name;
        crate::depth::encode_trade_json(&mut self.json, name, pos.epoch, pos.seq, ts, trade);
        crate::depth::encode_trade_bin(&mut self.bin, name, pos.epoch, pos.seq, ts, trade);
        self.msgpack.clear();
        crate::depth::encode_trade_msgpack(&mut self.msgpack, name, pos.epoch, pos.seq, ts, trade);
        self.store(pos, ts, Kind::Trade)?;
        Ok(pos)
    }

    /// Encodes the MessagePack body from the JSON one, stores the bodies encoded in the scratch buffers at `pos`
    /// and wakes the subscribers.
    fn write_encoded(&mut self, pos: Position, ts: i64, kind: Kind) -> Result<(), PublishError> {
        self.msgpack.clear();
        // Only invalid JSON fails, and event fields were checked before they got here.
        crate::msgpack::encode_body(kind, &self.json, &mut self.scratch, &mut self.msgpack)
            .map_err(|_| PublishError::InvalidFields(crate::body::EventFieldsError::NotAnObject))?;
        self.store(pos, ts, kind)
    }

    /// Stores the three bodies in the scratch buffers at `pos` and wakes the subscribers.
    fn store(&mut self, pos: Position, ts: i64, kind: Kind) -> Result<(), PublishError> {
        let bodies = Bodies { json: &self.json, bin: &self.bin, msgpack: &self.msgpack };
        if !bodies.fit(self.topic.ring.slot_bytes()) {
            return Err(PublishError::TooLarge);
        }
        self.topic.ring.write(pos.seq, ts, kind, bodies);
        self.notify();
        Ok(())
    }

    /// Wakes every subscribed connection that is not already scheduled.
    fn notify(&mut self) {
        // SC fence between the head store (in `write`) and the loads of the version and of each signal's
        // `scheduled` flag. Pairs with the SC fence in `Signal::clear` and with the subscribe path: either the
        // connection's drain sees our new head, or we see its cleared flag / its registration.
        fence(Ordering::SeqCst);
        let v = self.topic.subs_version.load(Ordering::Acquire);
        if v != self.cached_version {
            let subs = self.topic.subs.lock().unwrap_or_else(|e| e.into_inner());
            self.cached_subs.clone_from(&subs);
            self.cached_version = self.topic.subs_version.load(Ordering::Relaxed);
        }
        for s in &self.cached_subs {
            s.notify();
        }
    }
}
