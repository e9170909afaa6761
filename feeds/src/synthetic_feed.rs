//! Publishing the synthetic market into an engine, at a constant tick rate, until stopped.
//!
//! [`Synthetic::prepare`] creates a `ticks.<SYMBOL>` topic per symbol and publishes each one's opening quote, so
//! every topic has a last value (for snapshots and polling) before the first scheduled tick. Behind the quotes
//! runs an order flow ([`crate::synthetic_flow`]): `book.<SYMBOL>` and `trades.<SYMBOL>` get a book and a
//! print per tick. [`Synthetic::run`]
//! then blocks its thread: tick `k` is due at `start + k / tick_rate` and is stamped with that time (see
//! [`crate::replay`] on why the stamp is the scheduled time). The market itself is deterministic, so which
//! ticks go out depends on the seed only; only their timing depends on the machine.
//!
//! ```
//! use marquee_engine::{Engine, EngineConfig};
//! use marquee_feeds::Synthetic;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! let engine = Engine::new(EngineConfig::default());
//! let synthetic = Synthetic::prepare(&engine, 42).unwrap();
//! assert_eq!(engine.n_published(), 100); // an opening tick and an opening book per symbol
//! let stop = AtomicBool::new(true); // already set: `run` returns at once
//! assert_eq!(synthetic.run(1000.0, &stop).unwrap().ticks_published, 0);
//! ```

use crate::market::{DEFAULT_DEPTH, MarketError};
use crate::pace::{Clock, SLEEP_MIN, create_topics, unix_now_ns};
use crate::synthetic::SyntheticMarket;
use crate::synthetic_flow::SyntheticFlow;
use marquee_engine::{CreateTopicError, Engine, PublishError, TopicWriter};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a synthetic run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyntheticSummary {
    /// Ticks published by [`Synthetic::run`] (the opening ticks of `prepare` not included).
    pub ticks_published: u64,
    /// The most ticks published in one wake-up: 1, or a few at rates over 20 000/s (ticks due within 50 µs go
    /// together); more means the driver fell behind and caught up in a batch.
    pub max_batch: u64,
}

/// Why the synthetic market could not be prepared or stopped early.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyntheticError {
    /// A tick rate that is not finite and above zero.
    InvalidRate(f64),
    /// A symbol's topic could not be created (most likely it exists: another source owns it).
    Topic { topic: String, error: CreateTopicError },
    /// The engine refused a tick.
    Publish { topic: String, error: PublishError },
    /// A book or print of the order flow could not be published.
    Market(MarketError),
}

impl fmt::Display for SyntheticError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntheticError::InvalidRate(r) => write!(f, "invalid tick rate {r}"),
            SyntheticError::Topic { topic, error } => write!(f, "{topic}: {error}"),
            SyntheticError::Publish { topic, error } => write!(f, "{topic}: {error}"),
            SyntheticError::Market(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SyntheticError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyntheticError::InvalidRate(_) => None,
            SyntheticError::Topic { error, .. } => Some(error),
            SyntheticError::Publish { error, .. } => Some(error),
            SyntheticError::Market(e) => Some(e),
        }
    }
}

/// The synthetic market with its topics created and an opening tick on each, ready to run on any thread.
#[derive(Debug)]
pub struct Synthetic {
    market: SyntheticMarket,
    /// Indexed like [`SyntheticMarket::symbols`].
    writers: Vec<TopicWriter>,
    flow: SyntheticFlow,
}

impl Synthetic {
    /// Creates `ticks.<SYMBOL>` for every symbol of the market of `seed` and publishes each one's opening quote,
    /// so every topic has a last value before [`Synthetic::run`] starts.
    pub fn prepare(engine: &Arc<Engine>, seed: u64) -> Result<Synthetic, SyntheticError> {
        Synthetic::prepare_with_depth(engine, seed, DEFAULT_DEPTH)
    }

    /// [`Synthetic::prepare`] with books of `depth` levels per side.
    pub fn prepare_with_depth(engine: &Arc<Engine>, seed: u64, depth: usize) -> Result<Synthetic, SyntheticError> {
        let market = SyntheticMarket::new(seed);
        let mut writers = create_topics(engine, market.symbols().iter().copied())
            .map_err(|(topic, error)| SyntheticError::Topic { topic, error })?;
        let now = unix_now_ns();
        for (i, w) in writers.iter_mut().enumerate() {
            let tick = market.last(i).copied().unwrap_or_default();
            publish(w, &tick, now)?;
        }
        let opening = |i: usize| market.last(i).copied().unwrap_or_default();
        let flow = SyntheticFlow::prepare(engine, seed, depth, market.symbols(), opening, now)
            .map_err(SyntheticError::Market)?;
        Ok(Synthetic { market, writers, flow })
    }

    /// The symbols; each has its topic.
    pub fn symbols(&self) -> &[&'static str] {
        self.market.symbols()
    }

    /// Publishes `tick_rate` ticks per second (across all symbols) until `stop` is set.
    ///
    /// Tick `k` is due at `start + k / tick_rate` and carries that time as `ts`. On each wake-up every tick that
    /// is due (or due within 50 µs) is published in one batch, then the thread sleeps until the next is due. A
    /// driver that falls behind catches up in batches rather than slowing the schedule, so the lag is visible.
    pub fn run(mut self, tick_rate: f64, stop: &AtomicBool) -> Result<SyntheticSummary, SyntheticError> {
        if !(tick_rate.is_finite() && tick_rate > 0.0) {
            return Err(SyntheticError::InvalidRate(tick_rate));
        }
        let period_ns = 1e9 / tick_rate;
        let due_ns = |k: u64| (k as f64 * period_ns) as u64;
        let clock = Clock::start();
        let mut summary = SyntheticSummary::default();
        let mut k: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let horizon = clock.elapsed_ns().saturating_add(SLEEP_MIN.as_nanos() as u64);
            let mut batch = 0;
            while due_ns(k) <= horizon {
                let (i, tick) = self.market.next_tick();
                let ts = clock.unix_at(due_ns(k));
                publish(&mut self.writers[i], &tick, ts)?;
                self.flow.on_tick(i, &tick, ts).map_err(SyntheticError::Market)?;
                k += 1;
                batch += 1;
                // A long catch-up still notices the stop flag.
                if batch % 4096 == 0 && stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            summary.ticks_published += batch;
            summary.max_batch = summary.max_batch.max(batch);
            clock.sleep_until(due_ns(k), stop);
        }
        Ok(summary)
    }
}

fn publish(w: &mut TopicWriter, tick: &marquee_engine::Tick, ts: i64) -> Result<(), SyntheticError> {
    w.publish_tick(tick, ts)
        .map(drop)
        .map_err(|error| SyntheticError::Publish { topic: w.topic().name().to_owned(), error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rejects_bad_rates_and_taken_topics() {
        let engine = Engine::new(Default::default());
        let stop = AtomicBool::new(false);
        let s = Synthetic::prepare(&engine, 1).unwrap();
        assert_eq!(engine.n_published(), 100, "one opening tick and book per symbol");
        assert!(matches!(s.run(0.0, &stop), Err(SyntheticError::InvalidRate(_))));
        let e = Synthetic::prepare(&engine, 1).unwrap_err();
        assert_eq!(e.to_string(), "ticks.AAPL: topic exists");
    }
}
