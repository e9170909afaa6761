//! Shared writers: topics that many producers publish to (a user's private topic hears from every lot the user
//! bids on, and from any service that pushes through the publish API).
//!
//! A [`TopicWriter`] stays single-writer; the hub puts each shared topic's writer behind a mutex of its own,
//! held for one encode and one slot copy (about a microsecond). Topics do not share a lock: two producers wait
//! for each other only when they publish to the same topic at the same moment. The registry lock is taken on
//! lookups, briefly, and for writing only when a topic is created.
//!
//! Topics created elsewhere (the feed's `ticks.*`, owned by the feed thread) are not shared: publishing to them
//! through the hub is refused with [`HubError::NotShared`].
//!
//! ```
//! use marquee_engine::{Engine, EngineConfig, Hub};
//! let engine = Engine::new(EngineConfig::default());
//! let hub = Hub::new(engine.clone());
//! hub.publish_event("users.alice", "order_completed", r#"{"order":1}"#, 0).unwrap();
//! let pos = hub.publish_event("users.alice", "order_completed", r#"{"order":2}"#, 0).unwrap();
//! assert_eq!(pos.seq, 2);
//! assert_eq!(engine.topic("users.alice").unwrap().capacity(), 64); // private topics have small rings
//! let _feed_owned = engine.create_topic("ticks.AAPL").unwrap();
//! assert!(hub.publish_event("ticks.AAPL", "x", "{}", 0).is_err());
//! ```

use crate::ring::RingConfig;
use crate::topic::{CreateTopicError, Engine, PRIVATE_PREFIX, Position, PublishError, TopicWriter};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

/// Writers of shared topics, each behind its own mutex.
pub struct Hub {
    engine: Arc<Engine>,
    /// Ring size of the private topics (`users.*`) the hub creates; other topics get the engine's.
    private_ring: RingConfig,
    /// Read on every publish (lookup), written when a topic is created.
    writers: RwLock<HashMap<Box<str>, Arc<Mutex<TopicWriter>>>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.writers.read().map(|w| w.len()).unwrap_or(0);
        f.debug_struct("Hub").field("n_topics", &n).finish()
    }
}

/// Why a hub publish failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// The topic name is invalid.
    Topic(CreateTopicError),
    /// The topic exists but its writer belongs to someone else (a feed).
    NotShared,
    /// The engine refused the event.
    Publish(PublishError),
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::Topic(e) => e.fmt(f),
            HubError::NotShared => f.write_str("topic is owned by a feed"),
            HubError::Publish(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HubError {}

impl Hub {
    /// An empty hub over `engine`; private topics get [`RingConfig::PRIVATE`] rings.
    pub fn new(engine: Arc<Engine>) -> Hub {
        Hub::with_private_ring(engine, RingConfig::PRIVATE)
    }

    /// An empty hub whose private topics (`users.*`) get `private_ring`.
    pub fn with_private_ring(engine: Arc<Engine>, private_ring: RingConfig) -> Hub {
        Hub { engine, private_ring, writers: RwLock::default() }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The shared writer of `topic`, creating the topic when it does not exist yet.
    pub fn writer(&self, topic: &str) -> Result<Arc<Mutex<TopicWriter>>, HubError> {
        if let Some(w) = self.writers.read().unwrap_or_else(|e| e.into_inner()).get(topic) {
            return Ok(w.clone());
        }
        let mut writers = self.writers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = writers.get(topic) {
            return Ok(w.clone());
        }
        let created = if topic.starts_with(PRIVATE_PREFIX) {
            self.engine.create_topic_with_ring(topic, self.private_ring)
        } else {
            self.engine.create_topic(topic)
        };
        match created {
            Ok(w) => {
                let w = Arc::new(Mutex::new(w));
                writers.insert(topic.into(), w.clone());
                Ok(w)
            }
            Err(CreateTopicError::Exists) => Err(HubError::NotShared),
            Err(e) => Err(HubError::Topic(e)),
        }
    }

    /// Publishes a named event to `topic` (created when missing); see [`TopicWriter::publish_event`].
    pub fn publish_event(&self, topic: &str, ty: &str, fields: &str, ts: i64) -> Result<Position, HubError> {
        let w = self.writer(topic)?;
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        w.publish_event(ty, fields, ts).map_err(HubError::Publish)
    }
}
