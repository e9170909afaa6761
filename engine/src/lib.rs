//! Marquee's data plane: topics and their rings, message bodies encoded once, fan-out with batching.
//!
//! This crate does no network IO, starts no threads, uses no async runtime and knows no protocol: it is driven by
//! a feed (which owns each topic's [`TopicWriter`]) and by a protocol session (in `marquee-protocol`), which owns a
//! connection's [`Subscriber`] and frames its batches through a [`batch::Framing`].
//!
//! The path of a message: a writer encodes it once per wire format into its topic's [`ring`] slot; it wakes each
//! subscribed connection's [`Signal`] unless already woken; the connection's [`Subscriber::drain`] copies every
//! pending message of all its topics into one [`BatchWriter`], which becomes one frame and one write.

pub mod batch;
pub mod body;
pub mod depth;
pub mod fanout;
pub mod hub;
#[cfg(all(test, loom))]
mod loom_fanout;
pub mod msgpack;
pub mod price;
pub mod ring;
mod sync;
pub mod tick;
pub mod topic;
mod zeroed;

pub use batch::{BatchWriter, Encoding, Framing, Tag};
pub use body::{EventFieldsError, Kind, check_event_fields, same_event_type, valid_event_type};
pub use depth::{
    BARS_PREFIX, BOOK_PREFIX, BookLevel, MAX_DEPTH, Side, TRADES_PREFIX, Trade, bars_topic, book_topic, trades_topic,
};
pub use fanout::{Drain, Limits, Signal, SlowConsumer, Start, SubscribeError, Subscriber};
pub use hub::{Hub, HubError};
pub use price::{ParsePriceError, Price};
pub use ring::RingConfig;
pub use tick::{TICKS_PREFIX, Tick, tick_topic};
pub use topic::{
    CreateTopicError, Engine, EngineConfig, PRIVATE_PREFIX, Position, PublishError, Topic, TopicClass, TopicId,
    TopicWriter, valid_topic_name,
};

use std::sync::atomic::{AtomicU64, Ordering};

/// Engine-wide counters for `/metrics`. Updated once per batch or per connection event, never per message.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages handed to connections (events and snapshots).
    pub deliveries: AtomicU64,
    /// Frames written.
    pub batches: AtomicU64,
    /// `gap` events sent.
    pub gaps: AtomicU64,
    /// Connections closed because a reliable topic lapped them.
    pub slow_consumer_disconnects: AtomicU64,
    /// Payload bytes written to clients.
    pub bytes_out: AtomicU64,
}

impl Metrics {
    /// Adds `n` to `counter` (Relaxed: counters order nothing).
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
