//! What the binary market-data replays (NASDAQ ITCH, Databento DBN) share: their options, their pacing by the
//! file's own timestamps, their error reports and their summary.
//!
//! ## Pacing
//! A message with source time `t` is due at `start + (t - t0) / speed` (`t0`: the first message replayed),
//! like a CSV row. Messages due within 50 µs of each other are applied together, then the touched books are
//! published once ([`crate::market`]). At [`Speed::Max`] nothing sleeps, and books go out once per
//! [`MAX_FLUSH_INTERVAL`] of replay (looked at every [`MAX_BATCH`] messages): at millions of messages a second a
//! book per batch would be a book for nearly every message, states no reader could tell apart. A published
//! message's `ts` is the due time of the last message it reflects (the wall clock at `max`).
//!
//! ## Bad records
//! A malformed record is counted, the first [`crate::replay::MAX_KEPT_ERRORS`] are kept with their byte
//! offset, and the replay goes on with the next record. A file that ends inside a record ends the replay
//! cleanly; the summary says where ([`MdSummary::truncated_at`]).

use crate::market::{MarketCounts, MarketError, MarketOut};
use crate::pace::{Clock, SLEEP_MIN, unix_now_ns};
use crate::replay::{MAX_KEPT_ERRORS, Speed};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Source messages between two looks at the clock, the stop flag and the progress counter (and, when paced
/// faster than one message per 50 µs, between two publishes of the books).
pub const MAX_BATCH: u32 = 1024;

/// At [`Speed::Max`], the books touched are published once per this much wall time.
pub const MAX_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// A malformed record of a binary file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// The file.
    pub file: PathBuf,
    /// Byte offset of the record's first byte.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: byte {}: {}", self.file.display(), self.offset, self.reason)
    }
}

impl std::error::Error for RecordError {}

/// A `--start`/`--end` bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBound {
    /// An instant: RFC 3339 or an integer Unix time. `tod_ns` is its time of day in the offset it was written
    /// with (UTC for an integer), for files whose clock is a time of day (ITCH).
    Instant { unix_ns: i64, tod_ns: i64 },
    /// `HH:MM[:SS[.fraction]]`: that time of day; for files with full timestamps (DBN, CSV), on the UTC day of
    /// the first record.
    TimeOfDay(i64),
}

const DAY_NS: i64 = 86_400_000_000_000;

impl TimeBound {
    /// The bound in a file's clock of full Unix timestamps whose first record is at `first_unix_ns`.
    pub fn unix_ns(self, first_unix_ns: i64) -> i64 {
        match self {
            TimeBound::Instant { unix_ns, .. } => unix_ns,
            TimeBound::TimeOfDay(tod) => first_unix_ns.div_euclid(DAY_NS) * DAY_NS + tod,
        }
    }

    /// The bound in a file's clock of nanoseconds since midnight (ITCH).
    pub fn tod_ns(self) -> i64 {
        match self {
            TimeBound::Instant { tod_ns, .. } => tod_ns,
            TimeBound::TimeOfDay(tod) => tod,
        }
    }
}

impl FromStr for TimeBound {
    type Err = crate::ParseOptionError;

    /// `2024-03-15T13:30:00Z` (RFC 3339, any offset), `1710509400` (Unix time, unit by magnitude as in CSV), or
    /// `09:30`, `09:30:00`, `09:30:00.250` (a time of day).
    fn from_str(s: &str) -> Result<TimeBound, crate::ParseOptionError> {
        let t = s.trim();
        let err = || crate::ParseOptionError {
            option: "time",
            input: s.to_owned(),
            expected: "RFC 3339 (2024-03-15T13:30:00Z), a Unix time, or a time of day (09:30:00.250)",
        };
        if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
            let unix_ns = dt.timestamp_nanos_opt().ok_or_else(err)?;
            let tod = dt.naive_local().time();
            let tod_ns = i64::from(chrono::Timelike::num_seconds_from_midnight(&tod)) * 1_000_000_000
                + i64::from(chrono::Timelike::nanosecond(&tod));
            return Ok(TimeBound::Instant { unix_ns, tod_ns });
        }
        if let Ok(n) = t.parse::<i64>() {
            let unix_ns = crate::csv_replay::epoch_to_ns(n, crate::TsUnit::Auto).ok_or_else(err)?;
            return Ok(TimeBound::Instant { unix_ns, tod_ns: unix_ns.rem_euclid(DAY_NS) });
        }
        let tod = chrono::NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
            .or_else(|_| chrono::NaiveTime::parse_from_str(t, "%H:%M"))
            .map_err(|_| err())?;
        Ok(TimeBound::TimeOfDay(
            i64::from(chrono::Timelike::num_seconds_from_midnight(&tod)) * 1_000_000_000
                + i64::from(chrono::Timelike::nanosecond(&tod)),
        ))
    }
}

/// What a binary market-data replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MdSummary {
    /// Source messages read and applied (over all passes), bad ones not included.
    pub messages: u64,
    /// Malformed records skipped.
    pub skipped: u64,
    /// The first malformed records.
    pub first_errors: Vec<RecordError>,
    /// References to orders the book does not hold (a file that starts after their add), or adds of ids
    /// already resting: counted, not applied.
    pub book_errors: u64,
    /// Where the file ended inside a record, if it did.
    pub truncated_at: Option<u64>,
    /// Messages published.
    pub published: MarketCounts,
    /// Passes that reached the end of the file.
    pub loops: u64,
}

impl MdSummary {
    /// Counts a malformed record and keeps it when there is room.
    pub fn skip(&mut self, e: RecordError) {
        self.skipped += 1;
        if self.first_errors.len() < MAX_KEPT_ERRORS {
            self.first_errors.push(e);
        }
    }
}

/// How many source messages (CSV rows) a running replay has published, for `/metrics`: stored by the replay
/// thread once per batch (never per message), read by anyone. Clones share the count.
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    /// Messages so far (behind by at most one batch).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

impl PartialEq for Progress {
    fn eq(&self, other: &Progress) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Paces a replay by source timestamps and decides when books go out.
#[derive(Debug)]
pub struct Pacer {
    speed: Speed,
    clock: Clock,
    /// Source time of the first message of this pass.
    first_src: Option<i64>,
    /// Offset of this pass in source nanoseconds (loops), and the latest offset so far.
    pass_base: i128,
    latest: i128,
    /// Messages of this pass, for the spacing of the next one.
    pass_msgs: u64,
    since_flush: u32,
    last_ts: i64,
    /// Clock time of the last publish of the books, at [`Speed::Max`].
    last_flush_ns: u64,
    /// Messages paced, over all passes; published to `progress` at each flush.
    paced: u64,
    progress: Progress,
}

impl Pacer {
    /// A pacer whose clock starts now, counting into `progress`.
    pub fn new(speed: Speed, progress: Progress) -> Pacer {
        Pacer {
            speed,
            clock: Clock::start(),
            first_src: None,
            pass_base: 0,
            latest: 0,
            pass_msgs: 0,
            since_flush: 0,
            last_ts: unix_now_ns(),
            last_flush_ns: 0,
            paced: 0,
            progress,
        }
    }

    /// The publish time for a message of source time `src_ns`. Before sleeping for it, and every
    /// [`MAX_BATCH`] messages, publishes what the messages before it changed. `None` once `stop` is set.
    pub fn pace(&mut self, src_ns: i64, out: &mut MarketOut, stop: &AtomicBool) -> Result<Option<i64>, MarketError> {
        let t0 = *self.first_src.get_or_insert(src_ns);
        self.latest = self.latest.max(self.pass_base + i128::from(src_ns) - i128::from(t0));
        self.pass_msgs += 1;
        self.since_flush += 1;
        self.paced += 1;
        if self.since_flush >= MAX_BATCH {
            self.progress.set(self.paced);
            self.since_flush = 0;
            let now = self.clock.elapsed_ns();
            if self.speed != Speed::Max || now - self.last_flush_ns >= MAX_FLUSH_INTERVAL.as_nanos() as u64 {
                out.flush(self.last_ts)?;
                self.last_flush_ns = now;
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
        }
        let ts = match self.speed {
            Speed::Max => {
                if self.since_flush == 0 {
                    self.last_ts = unix_now_ns();
                }
                self.last_ts
            }
            Speed::Factor(f) => {
                let due = crate::pace::scale(self.latest, f);
                if due.saturating_sub(self.clock.elapsed_ns()) >= SLEEP_MIN.as_nanos() as u64 {
                    self.progress.set(self.paced);
                    out.flush(self.last_ts)?;
                    self.since_flush = 0;
                    if !self.clock.sleep_until(due, stop) {
                        return Ok(None);
                    }
                }
                self.clock.unix_at(due)
            }
        };
        self.last_ts = ts;
        Ok(Some(ts))
    }

    /// Publishes what is pending (the end of a file, or a replay that stops).
    pub fn flush(&mut self, out: &mut MarketOut) -> Result<(), MarketError> {
        self.since_flush = 0;
        self.progress.set(self.paced);
        out.flush(self.last_ts)
    }

    /// Ends a pass: the next one starts one mean message spacing after this one's last message (one second
    /// when they all share one instant), so a looped file keeps its rhythm.
    pub fn end_pass(&mut self) {
        let span = self.latest - self.pass_base;
        let n = i128::from(self.pass_msgs.saturating_sub(1).max(1));
        let spacing = if span > 0 { span / n } else { 1_000_000_000 };
        self.pass_base = self.latest + spacing;
        self.latest = self.pass_base;
        self.first_src = None;
        self.pass_msgs = 0;
    }
}

/// The options of a binary market-data replay.
#[derive(Clone, Debug, PartialEq)]
pub struct MdOptions {
    /// The file.
    pub path: PathBuf,
    /// Pace.
    pub speed: Speed,
    /// Start over at the end.
    pub looped: bool,
    /// Only these symbols (empty: all).
    pub symbols: Vec<String>,
    /// Skip messages before this time.
    pub start: Option<TimeBound>,
    /// Stop at the first message at or after this time.
    pub end: Option<TimeBound>,
    /// Book levels per side.
    pub depth: usize,
    /// Where the replay counts what it published.
    pub progress: Progress,
}

impl MdOptions {
    /// Defaults for `path`: speed 1, no loop, every symbol, the whole file, books of
    /// [`crate::market::DEFAULT_DEPTH`] levels, a new progress counter.
    pub fn new(path: impl Into<PathBuf>) -> MdOptions {
        MdOptions {
            path: path.into(),
            speed: Speed::default(),
            looped: false,
            symbols: Vec::new(),
            start: None,
            end: None,
            depth: crate::market::DEFAULT_DEPTH,
            progress: Progress::default(),
        }
    }

    /// True when `symbol` passes the `symbols` filter.
    pub fn wants(&self, symbol: &str) -> bool {
        self.symbols.is_empty() || self.symbols.iter().any(|s| s == symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md_replay_time_bounds_parse() {
        let h = 3_600_000_000_000;
        assert_eq!("09:30".parse(), Ok(TimeBound::TimeOfDay(9 * h + 30 * 60_000_000_000)));
        assert_eq!("09:30:00.5".parse::<TimeBound>().unwrap().tod_ns(), 9 * h + 1_800_000_000_000 + 500_000_000);
        let b: TimeBound = "2024-03-15T09:30:00-04:00".parse().unwrap();
        assert_eq!(b.tod_ns(), 9 * h + 30 * 60_000_000_000);
        assert_eq!(b.unix_ns(0), 1_710_509_400_000_000_000);
        assert_eq!("1710509400".parse::<TimeBound>().unwrap().unix_ns(0), 1_710_509_400_000_000_000);
        assert_eq!(TimeBound::TimeOfDay(h).unix_ns(DAY_NS * 3 + 5), DAY_NS * 3 + h);
        assert!("25:00".parse::<TimeBound>().is_err());
        assert!("soon".parse::<TimeBound>().is_err());
    }
}
