//! The clock the drivers run on, and the setup they share.
//!
//! A run has one start, read on two clocks: [`Instant`] to sleep by (monotonic) and the wall clock to stamp
//! ticks with. A tick's `ts` is the start's wall time plus the tick's scheduled offset, so stamps follow the
//! schedule exactly even when the thread wakes late.

use marquee_engine::{CreateTopicError, Engine, TopicWriter, tick_topic};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Longest sleep between two looks at the stop flag.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(50);

/// A tick due sooner than this is published now rather than slept for: sleeping that little costs more than it
/// is worth, and spinning would take a core from the gateway.
pub(crate) const SLEEP_MIN: Duration = Duration::from_micros(50);

/// Creates `ticks.<symbol>` for each symbol; on failure, the topic name and why.
pub(crate) fn create_topics<'a>(
    engine: &Engine,
    symbols: impl Iterator<Item = &'a str>,
) -> Result<Vec<TopicWriter>, (String, CreateTopicError)> {
    symbols
        .map(|s| {
            let topic = tick_topic(s);
            engine.create_topic(&topic).map_err(|e| (topic, e))
        })
        .collect()
}

/// `offset` file nanoseconds at `speed`, in real nanoseconds; saturates far beyond any real run.
pub(crate) fn scale(offset: i128, speed: f64) -> u64 {
    let ns = offset.max(0) as f64 / speed;
    if ns >= u64::MAX as f64 { u64::MAX } else { ns as u64 }
}

/// Wall-clock time now, in Unix nanoseconds (0 before 1970, saturating after 2262).
pub(crate) fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A run's start, on both clocks: `Instant` to sleep by, Unix time to stamp ticks with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
    unix_start_ns: i64,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock { start: Instant::now(), unix_start_ns: unix_now_ns() }
    }

    pub(crate) fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The Unix time `offset_ns` after the start.
    pub(crate) fn unix_at(&self, offset_ns: u64) -> i64 {
        self.unix_start_ns.saturating_add(i64::try_from(offset_ns).unwrap_or(i64::MAX))
    }

    /// Sleeps until `offset_ns` after the start, looking at `stop` at least every [`STOP_POLL`]. False when
    /// stopped. Returns at once when less than [`SLEEP_MIN`] remains.
    pub(crate) fn sleep_until(&self, offset_ns: u64, stop: &AtomicBool) -> bool {
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let left = offset_ns.saturating_sub(self.elapsed_ns());
            if left < SLEEP_MIN.as_nanos() as u64 {
                return true;
            }
            std::thread::sleep(Duration::from_nanos(left).min(STOP_POLL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_scale_saturates() {
        assert_eq!(scale(1_000, 2.0), 500);
        assert_eq!(scale(-5, 1.0), 0);
        assert_eq!(scale(i128::MAX, 1e-300), u64::MAX);
    }
}
