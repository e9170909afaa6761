//! Starts the configured feed on its own OS thread (feeds never run on the async runtime: they sleep on a fixed
//! schedule and publish without awaiting anything).

use crate::config::Source;
use anyhow::Context;
use marquee_engine::Engine;
use marquee_feeds::{Replay, ReplaySummary, Synthetic};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::sync::oneshot;

/// A running feed; [`Feed::failed`] resolves only if the feed stops with an error.
#[derive(Debug)]
pub struct Feed {
    failed: oneshot::Receiver<anyhow::Error>,
}

impl Feed {
    /// Resolves with the feed's error; pends forever if it ends cleanly or keeps running.
    pub async fn failed(self) -> anyhow::Error {
        match self.failed.await {
            Ok(e) => e,
            Err(_) => std::future::pending().await,
        }
    }
}

/// Creates the feed's topics (so `/api/symbols` is complete before the first request) and starts its thread.
pub fn start(engine: &Arc<Engine>, source: &Source, stop: Arc<AtomicBool>) -> anyhow::Result<Feed> {
    let (tx, rx) = oneshot::channel();
    match source.clone() {
        Source::Synthetic { seed, tick_rate, depth } => {
            let synthetic =
                Synthetic::prepare_with_depth(engine, seed, depth).context("cannot start the synthetic market")?;
            std::thread::Builder::new().name("feed-synthetic".into()).spawn(move || {
                precise_sleeps();
                if let Err(e) = synthetic.run(tick_rate, &stop) {
                    let _ = tx.send(anyhow::Error::new(e).context("synthetic market stopped"));
                }
            })?;
        }
        Source::Replay(opts) => {
            let file = opts.path.clone();
            let replay = Replay::prepare(engine, *opts).with_context(|| format!("cannot replay {}", file.display()))?;
            tracing::info!("replaying {} ({})", file.display(), replay.format());
            std::thread::Builder::new().name("feed-replay".into()).spawn(move || {
                precise_sleeps();
                let t0 = std::time::Instant::now();
                match replay.run(&stop) {
                    Ok(s) => log_summary(&s, t0.elapsed()),
                    Err(e) => {
                        let _ = tx.send(anyhow::Error::new(e).context("replay stopped"));
                    }
                }
            })?;
        }
    }
    Ok(Feed { failed: rx })
}

fn log_summary(s: &ReplaySummary, took: std::time::Duration) {
    let Some(m) = &s.market else {
        tracing::info!(
            "replay finished: {} rows published, {} skipped, {} loops",
            s.rows_published,
            s.rows_skipped,
            s.loops
        );
        for e in &s.first_errors {
            tracing::warn!("skipped row: {e}");
        }
        return;
    };
    tracing::info!(
        "replay finished: {} messages in {:.3} s ({:.0} messages/s), {} malformed skipped, {} unknown-order \
         references, {} loops; published {} books, {} trades, {} ticks",
        m.messages,
        took.as_secs_f64(),
        m.messages as f64 / took.as_secs_f64().max(1e-9),
        m.skipped,
        m.book_errors,
        m.loops,
        m.published.books,
        m.published.trades,
        m.published.ticks
    );
    for e in &m.first_errors {
        tracing::warn!("skipped record: {e}");
    }
    let p = m.published;
    if p.books + p.trades + p.ticks == 0 {
        tracing::warn!(
            "the replay published nothing: do --symbols (exact, case-sensitive), --start and --end match the file?"
        );
    }
    if let Some(at) = m.truncated_at {
        tracing::warn!("the file ends inside the record at byte {at}: replay ended there");
    }
}

/// Feeds sleep until each tick's scheduled time, and `ts` is that time: Linux's default 50 µs timer slack would
/// add up to 50 µs of latency to every tick. 1 ns of slack makes the sleep end within a few µs.
fn precise_sleeps() {
    if let Err(e) = nix::sys::prctl::set_timerslack(1) {
        tracing::debug!("cannot lower the feed thread's timer slack: {e}");
    }
}
