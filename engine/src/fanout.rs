//! Fan-out: waking connections at most once per drain, and draining all of a connection's topics into one batch.
//!
//! A [`Signal`] is the only thing a publisher touches per subscriber: a `scheduled` flag and a waker. A publish
//! sets the flag and wakes only when it was clear, so a connection that has not drained yet costs the publisher
//! one relaxed load. The connection clears the flag *before* it reads the rings, so a publish that lands during a
//! drain schedules another one: no message waits for a later publish.
//!
//! ## Lagging
//! A [`Subscriber`] bounds what it lets pile up ([`Limits`]). Conflating topics (`ticks.*`) that fall behind the
//! bound, or out of the ring, jump to their newest message and emit a `gap` naming the skipped seqs. Reliable
//! topics are never skipped: a reader lapped by the ring gets [`SlowConsumer`] and the connection is closed; the
//! client resumes with `since`.
//!
//! ```
//! use marquee_engine::{BatchWriter, Encoding, Engine, EngineConfig, Limits, Subscriber, Tick, Price};
//! let engine = Engine::new(EngineConfig::default());
//! let mut w = engine.create_topic("ticks.AAPL").unwrap();
//! let mut sub = Subscriber::new(engine.clone(), Limits::default());
//! sub.subscribe(engine.topic("ticks.AAPL").unwrap(), None).unwrap();
//! w.publish_tick(&Tick { price: Price(1), size: 1, ..Default::default() }, 0).unwrap();
//! w.publish_tick(&Tick { price: Price(2), size: 1, ..Default::default() }, 0).unwrap();
//! let mut batch = BatchWriter::new(Encoding::Json);
//! let d = sub.drain(&mut batch).unwrap();
//! assert_eq!(d.messages, 1); // the snapshot (seq 2) is the first and only message
//! assert!(std::str::from_utf8(batch.finish().unwrap()).unwrap().contains("\"type\":\"snapshot\""));
//! ```

use crate::batch::{BatchWriter, Framing, Tag};
use crate::ring::ReadOutcome;
use crate::sync::{Arc, AtomicBool, Ordering, fence};
use crate::topic::{Engine, Position, Topic, TopicClass};
use atomic_waker::AtomicWaker;
use std::fmt;
use std::task::{Context, Poll};

/// A connection's wake-up: shared between the connection and the writers of the topics it subscribes to.
///
/// The flag and the waker share one cache line (and no other signal's line), so a publish that wakes a
/// connection touches a single line of it.
#[repr(align(128))]
pub struct Signal {
    /// True from the first publish after a drain until the next drain starts.
    scheduled: AtomicBool,
    waker: AtomicWaker,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal").field("scheduled", &self.scheduled.load(Ordering::Relaxed)).finish()
    }
}

impl Default for Signal {
    fn default() -> Signal {
        Signal { scheduled: AtomicBool::new(false), waker: AtomicWaker::new() }
    }
}

impl Signal {
    /// Called by a writer after its SC fence.
    pub(crate) fn notify(&self) {
        // Relaxed is enough for the fast path: the writer's SC fence already ordered its head store before this
        // load, and a `true` here means a drain that starts after our fence is still to come.
        if self.scheduled.load(Ordering::Relaxed) {
            return;
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Marks the connection as having more to do (its batch filled up before its topics were drained).
    pub fn schedule(&self) {
        self.scheduled.store(true, Ordering::Release);
    }

    /// Marks the connection as having something to send and wakes its task: for a session that another task
    /// changed (a SignalR `POST`, a timer), where the task that sends is waiting in [`Signal::poll_ready`].
    pub fn wake(&self) {
        self.scheduled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// True when a drain is due.
    pub fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Acquire)
    }

    /// Ready when a drain is due; registers `cx`'s waker otherwise.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_scheduled() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Re-check after registering: a notify between the first check and `register` found no waker.
        if self.is_scheduled() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Clears the flag: at the start of a drain, or when the owner stops taking messages for a while (the next
    /// publish, or [`Signal::wake`], sets it again).
    pub fn clear(&self) {
        self.scheduled.store(false, Ordering::Relaxed);
        // SC fence: the ring reads that follow cannot move before the clear (pairs with the writer's fence).
        fence(Ordering::SeqCst);
    }
}

/// What a connection lets pile up before it sheds load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Topics one connection may subscribe to.
    pub max_topics: usize,
    /// Unsent messages across all topics beyond which conflating topics skip to their newest value.
    pub max_pending_messages: u64,
    /// Events in one batch (one frame, one write).
    pub max_batch_messages: usize,
    /// Bytes in one batch; also bounds what a connection has in flight, since the next batch is built only
    /// after the previous one was written.
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_topics: 256, max_pending_messages: 8192, max_batch_messages: 1024, max_batch_bytes: 64 * 1024 }
    }
}

/// A reliable topic lapped this connection: it must be closed, and the client resumes with `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowConsumer {
    /// The topic.
    pub topic: String,
    /// The last seq the connection received on it.
    pub last_seq: u64,
}

impl fmt::Display for SlowConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slow consumer: {} lapped after seq {}", self.topic, self.last_seq)
    }
}

impl std::error::Error for SlowConsumer {}

/// What one drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drain {
    /// Messages (events and snapshots) added to the batch.
    pub messages: u64,
    /// `gap` events added.
    pub gaps: u64,
    /// The batch filled up before every topic was drained; the signal stays scheduled.
    pub more: bool,
}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The connection is at [`Limits::max_topics`].
    TooManyTopics,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("too many topics")
    }
}

impl std::error::Error for SubscribeError {}

/// How a subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Already subscribed: nothing changed.
    Already,
    /// The next drain sends the topic's newest value as a snapshot (`recovered` as given), then live messages.
    Snapshot { recovered: bool },
    /// The next drains replay every message after `since`, then live messages.
    Replay { from_seq: u64 },
}

struct Cursor {
    topic: Arc<Topic>,
    /// Next seq to send.
    next: u64,
    /// A snapshot is owed, with this `recovered` flag.
    snapshot: Option<bool>,
    /// Drained by [`Subscriber::drain_datagrams`] instead of [`Subscriber::drain`] (conflating topics only).
    datagram: bool,
    /// The protocol's mark on this subscription, handed to its framing with every message (0 by default).
    tag: Tag,
}

/// One connection's subscriptions and read positions. Owned by the connection's task; no other thread touches it.
pub struct Subscriber {
    signal: Arc<Signal>,
    cursors: Vec<Cursor>,
    limits: Limits,
    engine: Arc<Engine>,
    /// Cursor to start the next drain at, so a full batch does not starve the later topics.
    rr: usize,
    /// The same for [`Subscriber::drain_datagrams`].
    rr_datagram: usize,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber").field("n_topics", &self.cursors.len()).finish()
    }
}

impl Subscriber {
    /// A subscriber with no topics.
    pub fn new(engine: Arc<Engine>, limits: Limits) -> Subscriber {
        Subscriber { signal: Arc::new(Signal::default()), cursors: Vec::new(), limits, engine, rr: 0, rr_datagram: 0 }
    }

    /// This connection's wake-up.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Subscribed topics.
    pub fn n_topics(&self) -> usize {
        self.cursors.len()
    }

    /// True when subscribed to `name`.
    pub fn is_subscribed(&self, name: &str) -> bool {
        self.cursors.iter().any(|c| c.topic.name() == name)
    }

    /// Room for `n` more topics?
    pub fn has_room_for(&self, n: usize) -> bool {
        self.cursors.len() + n <= self.limits.max_topics
    }

    /// Subscribes; with `since`, resumes after that position when the ring still holds everything after it.
    pub fn subscribe(&mut self, topic: Arc<Topic>, since: Option<Position>) -> Result<Start, SubscribeError> {
        if self.is_subscribed(topic.name()) {
            return Ok(Start::Already);
        }
        if !self.has_room_for(1) {
            return Err(SubscribeError::TooManyTopics);
        }
        // Register first, then read the head (in `start_for`): a publish after this point notifies us, one
        // before it is covered by the head we read.
        topic.add_subscriber(self.signal.clone());
        let start = start_for(&topic, since);
        let (next, snapshot) = match start {
            Start::Replay { from_seq } => (from_seq, None),
            Start::Snapshot { recovered } => (1, Some(recovered)),
            Start::Already => unreachable!("start_for never returns Already"),
        };
        self.cursors.push(Cursor { topic, next, snapshot, datagram: false, tag: 0 });
        self.signal.schedule();
        Ok(start)
    }

    /// Moves a subscription to datagrams (`true`) or back to the stream. Only conflating topics (ticks, trades,
    /// bars) can go as datagrams, where loss is visible by seq and the newest value wins; books cannot (a deep
    /// book outgrows a datagram, and a book that never fits would never arrive). For any other topic, or one not
    /// subscribed, this returns false and changes nothing.
    pub fn set_datagram(&mut self, name: &str, datagram: bool) -> bool {
        let Some(c) = self.cursors.iter_mut().find(|c| c.topic.name() == name) else { return false };
        if !c.topic.datagrams() {
            return false;
        }
        c.datagram = datagram;
        self.signal.schedule();
        true
    }

    /// Moves what is pending on the datagram subscriptions into `batch`, whole messages only, while the batch
    /// with its closing byte stays within `max_bytes` (a message larger than that alone still goes, alone, and
    /// the transport drops it). A subscription more than [`Limits::max_pending_messages`] behind, or lapped,
    /// skips to its newest value with a `gap`: on datagrams the newest value wins. Leaves the signal scheduled
    /// when it found anything, so the owner calls it again until it returns an empty drain.
    pub fn drain_datagrams<F: Framing>(&mut self, batch: &mut BatchWriter<F>, max_bytes: usize) -> Drain {
        let mut d = Drain::default();
        let n = self.cursors.len();
        for i in 0..n {
            let idx = (self.rr_datagram + i) % n;
            let c = &mut self.cursors[idx];
            if c.datagram && !drain_datagram_cursor(c, batch, max_bytes, self.limits.max_pending_messages, &mut d) {
                self.rr_datagram = idx;
                d.more = true;
                break;
            }
        }
        if d.messages > 0 || d.gaps > 0 || d.more {
            self.signal.schedule();
        }
        d
    }

    /// Marks a subscription with `tag`, which the batch's framing gets with each of its messages (SignalR uses
    /// it for the stream a subscription feeds). False when not subscribed.
    pub fn set_tag(&mut self, name: &str, tag: Tag) -> bool {
        let Some(c) = self.cursors.iter_mut().find(|c| c.topic.name() == name) else { return false };
        c.tag = tag;
        true
    }

    /// A subscription's tag; `None` when not subscribed.
    pub fn tag_of(&self, name: &str) -> Option<Tag> {
        self.cursors.iter().find(|c| c.topic.name() == name).map(|c| c.tag)
    }

    /// Unsubscribes; false when not subscribed.
    pub fn unsubscribe(&mut self, name: &str) -> bool {
        let Some(i) = self.cursors.iter().position(|c| c.topic.name() == name) else { return false };
        let c = self.cursors.swap_remove(i);
        c.topic.remove_subscriber(&self.signal);
        true
    }

    /// Where each subscription stands: the last position delivered (seq 0 before the first).
    pub fn positions(&self) -> impl Iterator<Item = (&str, Position)> {
        self.cursors
            .iter()
            .map(|c| (c.topic.name(), Position { epoch: c.topic.epoch(), seq: c.next.saturating_sub(1) }))
    }

    /// Moves everything pending on all topics into `batch`, up to the batch limits.
    ///
    /// The wake flag is cleared only by a drain that finds nothing (followed by one more look, for publishes that
    /// raced with the clear). A drain that found messages leaves the connection scheduled, so its owner drains
    /// again after writing the batch. A busy connection therefore pays no fence and no flag write per batch,
    /// and publishers see its flag set and skip it with one load.
    pub fn drain<F: Framing>(&mut self, batch: &mut BatchWriter<F>) -> Result<Drain, SlowConsumer> {
        let d = self.drain_once(batch)?;
        if d.messages > 0 || d.gaps > 0 || d.more {
            if !self.signal.is_scheduled() {
                self.signal.schedule();
            }
            return Ok(d);
        }
        self.signal.clear();
        let d = self.drain_once(batch)?;
        if d.more {
            self.signal.schedule();
        }
        Ok(d)
    }

    fn drain_once<F: Framing>(&mut self, batch: &mut BatchWriter<F>) -> Result<Drain, SlowConsumer> {
        let mut d = Drain::default();
        let n = self.cursors.len();
        if n == 0 {
            return Ok(d);
        }
        let pending: u64 = self
            .cursors
            .iter()
            .filter(|c| !c.datagram)
            .map(|c| if c.snapshot.is_some() { 1 } else { c.topic.head().saturating_sub(c.next - 1) })
            .sum();
        let conflate = pending > self.limits.max_pending_messages;
        for i in 0..n {
            let idx = (self.rr + i) % n;
            if self.batch_full(batch) {
                self.rr = idx;
                d.more = true;
                break;
            }
            if !self.cursors[idx].datagram {
                drain_cursor(&mut self.cursors[idx], batch, conflate, &self.limits, &mut d)?;
            }
        }
        d.more |= self.batch_full(batch);
        Ok(d)
    }

    fn batch_full<F: Framing>(&self, batch: &BatchWriter<F>) -> bool {
        batch.len() >= self.limits.max_batch_messages || batch.n_bytes() >= self.limits.max_batch_bytes
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for c in &self.cursors {
            c.topic.remove_subscriber(&self.signal);
        }
    }
}

fn start_for(topic: &Topic, since: Option<Position>) -> Start {
    let Some(since) = since else { return Start::Snapshot { recovered: true } };
    let head = topic.head();
    if since.epoch == topic.epoch() && since.seq <= head && since.seq + 1 >= topic.oldest() {
        Start::Replay { from_seq: since.seq + 1 }
    } else {
        Start::Snapshot { recovered: false }
    }
}

fn drain_cursor<F: Framing>(
    c: &mut Cursor,
    batch: &mut BatchWriter<F>,
    conflate: bool,
    limits: &Limits,
    d: &mut Drain,
) -> Result<(), SlowConsumer> {
    let ring = &c.topic.ring;
    if let Some(recovered) = c.snapshot {
        loop {
            let head = ring.head();
            if head == 0 {
                c.next = 1;
                break;
            }
            if ring.read_into(head, Some(recovered), c.tag, batch) == ReadOutcome::Copied {
                c.next = head + 1;
                d.messages += 1;
                break;
            }
        }
        c.snapshot = None;
    }
    let conflating = c.topic.class() == TopicClass::Conflating;
    let mut may_conflate = conflate;
    loop {
        let head = ring.head();
        if c.next > head {
            return Ok(());
        }
        if batch.len() >= limits.max_batch_messages || batch.n_bytes() >= limits.max_batch_bytes {
            return Ok(());
        }
        let oldest = head.saturating_sub(ring.capacity() - 1).max(1);
        if c.next < oldest || (may_conflate && c.next < head) {
            if !conflating {
                return Err(SlowConsumer { topic: c.topic.name().to_owned(), last_seq: c.next - 1 });
            }
            batch.push_gap(c.topic.name(), c.next, head - 1);
            d.gaps += 1;
            c.next = head;
            may_conflate = false;
        }
        match ring.read_into(c.next, None, c.tag, batch) {
            ReadOutcome::Copied => {
                c.next += 1;
                d.messages += 1;
            }
            // Lapped while copying: the next turn sees `next < oldest`.
            ReadOutcome::Overwritten => {}
            // `next <= head` yet the slot holds an older seq: the source skipped this seq.
            ReadOutcome::Missing => {
                batch.push_gap(c.topic.name(), c.next, c.next);
                d.gaps += 1;
                c.next += 1;
            }
        }
    }
}

/// One datagram cursor into `batch`; false when the batch is full (the cursor still has messages).
fn drain_datagram_cursor<F: Framing>(
    c: &mut Cursor,
    batch: &mut BatchWriter<F>,
    max_bytes: usize,
    max_pending: u64,
    d: &mut Drain,
) -> bool {
    let ring = &c.topic.ring;
    // +1: the closing `]` of a JSON batch.
    let fits = |batch: &BatchWriter<F>| batch.n_bytes() < max_bytes;
    if let Some(recovered) = c.snapshot {
        let head = ring.head();
        if head == 0 {
            c.next = 1;
            c.snapshot = None;
        } else {
            let (mark, was_empty) = (batch.mark(), batch.is_empty());
            match ring.read_into(head, Some(recovered), c.tag, batch) {
                ReadOutcome::Copied if fits(batch) || was_empty => {
                    c.next = head + 1;
                    c.snapshot = None;
                    d.messages += 1;
                }
                // Full, or overwritten while copying: the snapshot goes in the next datagram.
                _ => {
                    batch.rollback(mark);
                    return false;
                }
            }
        }
    }
    loop {
        let head = ring.head();
        if c.next > head {
            return true;
        }
        let oldest = head.saturating_sub(ring.capacity() - 1).max(1);
        let (mark, was_empty) = (batch.mark(), batch.is_empty());
        let (mut next, mut gaps) = (c.next, 0);
        if next < oldest || head - next >= max_pending {
            batch.push_gap(c.topic.name(), next, head - 1);
            (next, gaps) = (head, 1);
        }
        match ring.read_into(next, None, c.tag, batch) {
            ReadOutcome::Copied => {
                if !fits(batch) && !was_empty {
                    batch.rollback(mark);
                    return false;
                }
                c.next = next + 1;
                d.messages += 1;
                d.gaps += gaps;
            }
            // Lapped while copying: the next turn skips ahead.
            ReadOutcome::Overwritten => batch.rollback(mark),
            ReadOutcome::Missing => {
                batch.push_gap(c.topic.name(), next, next);
                if !fits(batch) && !was_empty {
                    batch.rollback(mark);
                    return false;
                }
                c.next = next + 1;
                d.gaps += gaps + 1;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Encoding, EngineConfig, Price, RingConfig, Tick};

    fn engine(cap: usize) -> Arc<Engine> {
        Engine::new(EngineConfig {
            epoch: 5,
            ring: RingConfig { capacity: cap, slot_bytes: 512 },
            reliable_ring: RingConfig { capacity: cap, slot_bytes: 512 },
        })
    }

    fn tick(p: i64) -> Tick {
        Tick { price: Price(p), size: 1, ..Default::default() }
    }

    fn drain_json(sub: &mut Subscriber) -> (Drain, Vec<serde_json::Value>) {
        let mut b = BatchWriter::new(Encoding::Json);
        let d = sub.drain(&mut b).unwrap();
        let v = b.finish().map(|f| serde_json::from_slice(f).unwrap()).unwrap_or(serde_json::json!([]));
        (d, v.as_array().unwrap().clone())
    }

    fn seqs(events: &[serde_json::Value]) -> Vec<(String, u64)> {
        events
            .iter()
            .map(|e| (e["type"].as_str().unwrap().to_owned(), e["seq"].as_u64().or(e["to"].as_u64()).unwrap()))
            .collect()
    }

    #[test]
    fn fanout_snapshot_then_live_in_order() {
        let e = engine(16);
        let mut w = e.create_topic("ticks.AAPL").unwrap();
        w.publish_tick(&tick(1), 0).unwrap();
        let mut s = Subscriber::new(e.clone(), Limits::default());
        s.subscribe(e.topic("ticks.AAPL").unwrap(), None).unwrap();
        assert!(s.signal().is_scheduled());
        w.publish_tick(&tick(2), 0).unwrap();
        let (d, ev) = drain_json(&mut s);
        assert_eq!(seqs(&ev), [("snapshot".into(), 2)]);
        assert_eq!(d.messages, 1);
        assert!(s.signal().is_scheduled(), "a drain that found work asks for another look");
        let (d, ev) = drain_json(&mut s);
        assert_eq!((d.messages, ev.len()), (0, 0));
        assert!(!s.signal().is_scheduled(), "an empty drain clears the flag");
        w.publish_tick(&tick(3), 0).unwrap();
        w.publish_tick(&tick(4), 0).unwrap();
        assert!(s.signal().is_scheduled(), "publish wakes the subscriber");
        let (_, ev) = drain_json(&mut s);
        assert_eq!(seqs(&ev), [("tick".into(), 3), ("tick".into(), 4)]);
    }

    #[test]
    fn fanout_resume_replays_exactly_the_missed_messages() {
        let e = engine(8);
        let mut w = e.create_topic("lots.7").unwrap();
        for i in 1..=6 {
            w.publish_tick(&tick(i), 0).unwrap();
        }
        let t = e.topic("lots.7").unwrap();
        let mut s = Subscriber::new(e.clone(), Limits::default());
        assert_eq!(s.subscribe(t.clone(), Some(Position { epoch: 5, seq: 3 })), Ok(Start::Replay { from_seq: 4 }));
        let (_, ev) = drain_json(&mut s);
        assert_eq!(seqs(&ev), [("tick".into(), 4), ("tick".into(), 5), ("tick".into(), 6)]);
        // Wrong epoch or too old: a snapshot marked not recovered.
        let mut s2 = Subscriber::new(e.clone(), Limits::default());
        let start = s2.subscribe(t.clone(), Some(Position { epoch: 4, seq: 3 }));
        assert_eq!(start, Ok(Start::Snapshot { recovered: false }));
        let (_, ev) = drain_json(&mut s2);
        assert_eq!(ev[0]["recovered"], false);
        for i in 7..=20 {
            w.publish_tick(&tick(i), 0).unwrap();
        }
        let mut s3 = Subscriber::new(e.clone(), Limits::default());
        assert_eq!(s3.subscribe(t, Some(Position { epoch: 5, seq: 6 })), Ok(Start::Snapshot { recovered: false }));
    }

    #[test]
    fn fanout_lagging_ticks_conflate_with_gap() {
        let e = engine(8);
        let mut w = e.create_topic("ticks.AAPL").unwrap();
        let mut s = Subscriber::new(e.clone(), Limits::default());
        s.subscribe(e.topic("ticks.AAPL").unwrap(), None).unwrap();
        drain_json(&mut s);
        for i in 1..=20 {
            w.publish_tick(&tick(i), 0).unwrap();
        }
        let (d, ev) = drain_json(&mut s);
        assert_eq!(ev[0], serde_json::json!({"type":"gap","topic":"ticks.AAPL","from":1,"to":19}));
        assert_eq!(seqs(&ev[1..]), [("tick".into(), 20)]);
        assert_eq!((d.gaps, d.messages), (1, 1));
    }

    #[test]
    fn fanout_pending_bound_conflates_before_the_ring_laps() {
        let e = engine(64);
        let mut w = e.create_topic("ticks.AAPL").unwrap();
        let limits = Limits { max_pending_messages: 4, ..Limits::default() };
        let mut s = Subscriber::new(e.clone(), limits);
        s.subscribe(e.topic("ticks.AAPL").unwrap(), None).unwrap();
        drain_json(&mut s);
        for i in 1..=10 {
            w.publish_tick(&tick(i), 0).unwrap();
        }
        let (_, ev) = drain_json(&mut s);
        assert_eq!(ev[0]["type"], "gap");
        assert_eq!(seqs(&ev[1..]), [("tick".into(), 10)]);
    }

    #[test]
    fn fanout_lapped_reliable_topic_is_a_slow_consumer() {
        let e = engine(4);
        let mut w = e.create_topic("users.alice").unwrap();
        let mut s = Subscriber::new(e.clone(), Limits::default());
        s.subscribe(e.topic("users.alice").unwrap(), None).unwrap();
        drain_json(&mut s);
        for i in 1..=3 {
            w.publish_tick(&tick(i), 0).unwrap();
        }
        let (_, ev) = drain_json(&mut s);
        assert_eq!(ev.len(), 3, "reliable topics are not conflated within the ring");
        for i in 4..=10 {
            w.publish_tick(&tick(i), 0).unwrap();
        }
        let mut b = BatchWriter::new(Encoding::Json);
        assert_eq!(s.drain(&mut b), Err(SlowConsumer { topic: "users.alice".into(), last_seq: 3 }));
    }

    #[test]
    fn fanout_events_on_a_reliable_topic_snapshot_then_live() {
        let e = engine(8);
        let mut w = e.create_topic("lots.7").unwrap();
        w.publish_event("lot_update", r#"{"high":"100"}"#, 1).unwrap();
        let mut s = Subscriber::new(e.clone(), Limits::default());
        s.subscribe(e.topic("lots.7").unwrap(), None).unwrap();
        w.publish_event("lot_update", r#"{"high":"105"}"#, 2).unwrap();
        let (_, ev) = drain_json(&mut s);
        assert_eq!((ev[0]["type"].as_str(), ev[0]["event"].as_str()), (Some("snapshot"), Some("lot_update")));
        assert_eq!((ev[0]["seq"].as_u64(), ev[0]["high"].as_str()), (Some(2), Some("105")));
        w.publish_event("lot_closed", r#"{"winner":"alice"}"#, 3).unwrap();
        w.publish_tick(&tick(1), 4).unwrap();
        let (_, ev) = drain_json(&mut s);
        assert_eq!(seqs(&ev), [("lot_closed".into(), 3), ("tick".into(), 4)]);
        assert_eq!(ev[0]["winner"], "alice");
        assert_eq!(
            w.publish_event("x", &format!("{{\"pad\":\"{}\"}}", "x".repeat(400)), 5),
            Err(crate::PublishError::TooLarge)
        );
        assert_eq!(e.topic("lots.7").unwrap().head(), 4, "a refused event takes no seq");
    }

    #[test]
    fn fanout_full_batch_stays_scheduled_and_resumes_fairly() {
        let e = engine(64);
        let mut wa = e.create_topic("lots.a").unwrap();
        let mut wb = e.create_topic("lots.b").unwrap();
        let mut s = Subscriber::new(e.clone(), Limits { max_batch_messages: 4, ..Limits::default() });
        s.subscribe(e.topic("lots.a").unwrap(), None).unwrap();
        s.subscribe(e.topic("lots.b").unwrap(), None).unwrap();
        drain_json(&mut s);
        for i in 1..=5 {
            wa.publish_tick(&tick(i), 0).unwrap();
            wb.publish_tick(&tick(i), 0).unwrap();
        }
        let mut all = Vec::new();
        for _ in 0..3 {
            let (d, ev) = drain_json(&mut s);
            assert!(ev.len() <= 4);
            all.extend(ev.into_iter().map(|e| (e["topic"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap())));
            if !d.more {
                break;
            }
            assert!(s.signal().is_scheduled());
        }
        for t in ["lots.a", "lots.b"] {
            let got: Vec<u64> = all.iter().filter(|(n, _)| n == t).map(|(_, s)| *s).collect();
            assert_eq!(got, [1, 2, 3, 4, 5], "{t}");
        }
    }

    #[test]
    fn fanout_source_assigned_positions_and_holes() {
        let e = engine(16);
        let mut w = e.create_topic_with_epoch("ticks.X", 99).unwrap();
        let mut s = Subscriber::new(e.clone(), Limits::default());
        s.subscribe(e.topic("ticks.X").unwrap(), Some(Position { epoch: 99, seq: 0 })).unwrap();
        w.publish_tick_at(Position { epoch: 99, seq: 1 }, &tick(1), 0).unwrap();
        w.publish_tick_at(Position { epoch: 99, seq: 3 }, &tick(3), 0).unwrap();
        assert_eq!(
            w.publish_tick_at(Position { epoch: 98, seq: 4 }, &tick(4), 0),
            Err(crate::PublishError::EpochMismatch { topic_epoch: 99 })
        );
        assert_eq!(
            w.publish_tick_at(Position { epoch: 99, seq: 3 }, &tick(4), 0),
            Err(crate::PublishError::NotIncreasing { head: 3 })
        );
        let (_, ev) = drain_json(&mut s);
        assert_eq!(seqs(&ev), [("tick".into(), 1), ("gap".into(), 2), ("tick".into(), 3)]);
    }

    #[test]
    fn fanout_unsubscribe_and_drop_leave_the_topic() {
        let e = engine(16);
        let _w = e.create_topic("ticks.A").unwrap();
        let t = e.topic("ticks.A").unwrap();
        let mut s = Subscriber::new(e.clone(), Limits { max_topics: 1, ..Limits::default() });
        s.subscribe(t.clone(), None).unwrap();
        assert_eq!(s.subscribe(t.clone(), None), Ok(Start::Already));
        assert_eq!(t.n_subscribers(), 1);
        assert!(s.unsubscribe("ticks.A"));
        assert_eq!(t.n_subscribers(), 0);
        s.subscribe(t.clone(), None).unwrap();
        let _w2 = e.create_topic("ticks.B").unwrap();
        assert_eq!(s.subscribe(e.topic("ticks.B").unwrap(), None), Err(SubscribeError::TooManyTopics));
        drop(s);
        assert_eq!(t.n_subscribers(), 0);
    }
}
