//! Replaying a CSV file into an engine at the file's own pace, faster, slower, or as fast as possible.
//!
//! [`Replay::prepare`] reads the file once for its symbols and creates a `ticks.<SYMBOL>` topic for each, so the
//! server lists every symbol before the first tick; it hands back a `Send` value. [`Replay::run`] blocks the
//! thread that calls it until the file ends (never, when looped) or the stop flag is set, and returns what it
//! did. The flag is read before every row and at least every 50 ms while sleeping.
//!
//! ## Timestamps
//! The `ts` of every published tick is its *scheduled* publish time in Unix nanoseconds (the wall clock when
//! `run` started plus the row's offset), not the time in the file and not the moment the publish happened. If the
//! publisher stalls, ticks go out late carrying the time they were due, so the delay shows up as latency
//! downstream instead of being hidden. At [`Speed::Max`] nothing is scheduled and `ts` is the wall clock.
//!
//! ## Replay schedule
//! Row `i` is due at `start + (ts_i - ts_0) / speed`, where `ts_0` is the first good row's timestamp. A row
//! earlier than one before it is due at once and takes the latest due time so far, so `ts` never goes back.
//! With `looped`, the file is read again from the top when it ends; the second pass starts one mean row spacing
//! after the last row of the first pass (one second when the file has a single instant), and so on. Each topic's
//! seq keeps increasing across passes.
//!
//! ## Bad rows
//! [`OnError::Skip`] counts them and keeps the first [`MAX_KEPT_ERRORS`] in the [`ReplaySummary`];
//! [`OnError::Stop`] ends the replay with [`ReplayError::Row`]. Nothing is logged: this crate has no logger.
//!
//! ```
//! use marquee_engine::{Engine, EngineConfig};
//! use marquee_feeds::{Replay, ReplayOptions, Speed};
//! use std::sync::atomic::AtomicBool;
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample.csv");
//! let engine = Engine::new(EngineConfig::default());
//! let mut opts = ReplayOptions::new(path);
//! opts.speed = Speed::Max;
//! let replay = Replay::prepare(&engine, opts).unwrap();
//! assert!(engine.topic("ticks.AAPL").is_some()); // before any tick is published
//! let summary = std::thread::spawn(move || replay.run(&AtomicBool::new(false))).join().unwrap().unwrap();
//! assert_eq!(summary.rows_published, engine.n_published());
//! ```

use crate::csv_replay::{CsvSource, OpenError, RowError, TsUnit, scan_symbols};
use crate::pace::{Clock, create_topics, scale, unix_now_ns};
use marquee_engine::{CreateTopicError, Engine, PublishError, TopicWriter};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Row errors kept in a [`ReplaySummary`] under [`OnError::Skip`].
pub const MAX_KEPT_ERRORS: usize = 10;

/// How fast a replay runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// Real time times this factor: 1 is the file's own pace, 10 is ten times faster, 0.5 half as fast.
    /// Must be finite and above zero.
    Factor(f64),
    /// As fast as the engine takes it, no sleeping.
    Max,
}

impl Default for Speed {
    fn default() -> Speed {
        Speed::Factor(1.0)
    }
}

impl Speed {
    fn is_valid(self) -> bool {
        match self {
            Speed::Factor(f) => f.is_finite() && f > 0.0,
            Speed::Max => true,
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Factor(x) => write!(f, "{x}"),
            Speed::Max => f.write_str("max"),
        }
    }
}

impl FromStr for Speed {
    type Err = crate::ParseOptionError;

    /// `max`, or a positive factor such as `1`, `10`, `0.5` (a trailing `x`, as in `10x`, is allowed).
    fn from_str(s: &str) -> Result<Speed, crate::ParseOptionError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let num = t.strip_suffix(['x', 'X']).unwrap_or(t);
        // `f64::from_str` also takes "inf" and "nan": the validity check turns those away.
        match num.parse::<f64>().map(Speed::Factor) {
            Ok(speed) if speed.is_valid() => Ok(speed),
            _ => Err(crate::ParseOptionError {
                option: "speed",
                input: s.to_owned(),
                expected: "a positive number or \"max\"",
            }),
        }
    }
}

/// What a replay does with a bad row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnError {
    /// Count it, keep the first few errors, go on.
    #[default]
    Skip,
    /// End the replay with the row's error.
    Stop,
}

impl FromStr for OnError {
    type Err = crate::ParseOptionError;

    /// `skip` or `stop`.
    fn from_str(s: &str) -> Result<OnError, crate::ParseOptionError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "skip" => Ok(OnError::Skip),
            "stop" => Ok(OnError::Stop),
            _ => Err(crate::ParseOptionError { option: "on-error", input: s.to_owned(), expected: "skip or stop" }),
        }
    }
}

/// A replay's settings. Build with [`ReplayOptions::new`], then set fields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// The CSV file.
    pub path: PathBuf,
    /// Pace (default: the file's own).
    pub speed: Speed,
    /// Start over at the end of the file, until stopped (default: no).
    pub looped: bool,
    /// What to do with a bad row (default: skip).
    pub on_error: OnError,
    /// Unit of integer timestamps (default: by magnitude).
    pub ts_unit: TsUnit,
}

impl ReplayOptions {
    /// Defaults for `path`: speed 1, no loop, skip bad rows, epoch unit by magnitude.
    pub fn new(path: impl Into<PathBuf>) -> ReplayOptions {
        ReplayOptions {
            path: path.into(),
            speed: Speed::default(),
            looped: false,
            on_error: OnError::default(),
            ts_unit: TsUnit::default(),
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Ticks published, over all passes.
    pub rows_published: u64,
    /// Bad rows skipped, over all passes.
    pub rows_skipped: u64,
    /// The first [`MAX_KEPT_ERRORS`] bad rows.
    pub first_errors: Vec<RowError>,
    /// Passes that reached the end of the file (1 for a plain replay that was not stopped).
    pub loops: u64,
}

/// Why a replay could not be prepared or did not finish.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReplayError {
    /// A [`Speed::Factor`] that is not finite and above zero.
    InvalidSpeed(f64),
    /// The file could not be opened, or its header is wrong.
    Open(OpenError),
    /// The file holds no good row, so there is nothing to replay.
    NoRows { file: PathBuf },
    /// A symbol's topic could not be created (most likely it exists: another source owns it).
    Topic { topic: String, error: CreateTopicError },
    /// A bad row, under [`OnError::Stop`]; or, under either policy, a row whose symbol was not in the file when
    /// the replay was prepared (the file changed since).
    Row(RowError),
    /// The engine refused a tick.
    Publish { topic: String, line: u64, error: PublishError },
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::InvalidSpeed(x) => write!(f, "invalid speed {x}"),
            ReplayError::Open(e) => e.fmt(f),
            ReplayError::NoRows { file } => write!(f, "{}: no valid rows", file.display()),
            ReplayError::Topic { topic, error } => write!(f, "{topic}: {error}"),
            ReplayError::Row(e) => e.fmt(f),
            ReplayError::Publish { topic, line, error } => write!(f, "{topic}: line {line}: {error}"),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Open(e) => e.source(),
            ReplayError::Topic { error, .. } => Some(error),
            ReplayError::Publish { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<OpenError> for ReplayError {
    fn from(e: OpenError) -> ReplayError {
        ReplayError::Open(e)
    }
}

/// A CSV replay whose topics exist and which is ready to run on any thread.
#[derive(Debug)]
pub struct Replay {
    opts: ReplayOptions,
    /// In order of first appearance in the file.
    symbols: Vec<String>,
    writers: HashMap<String, TopicWriter>,
}

impl Replay {
    /// Checks the options, reads the file once for its symbols and creates `ticks.<SYMBOL>` for each.
    pub fn prepare(engine: &Engine, opts: ReplayOptions) -> Result<Replay, ReplayError> {
        if let Speed::Factor(x) = opts.speed {
            if !opts.speed.is_valid() {
                return Err(ReplayError::InvalidSpeed(x));
            }
        }
        let symbols = scan_symbols(&opts.path, opts.ts_unit)?;
        if symbols.is_empty() {
            return Err(ReplayError::NoRows { file: opts.path });
        }
        let writers = create_topics(engine, symbols.iter().map(String::as_str))
            .map_err(|(topic, error)| ReplayError::Topic { topic, error })?;
        let writers = symbols.iter().cloned().zip(writers).collect();
        Ok(Replay { opts, symbols, writers })
    }

    /// The file's symbols, in order of first appearance; each has its topic.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// The options this replay runs with.
    pub fn options(&self) -> &ReplayOptions {
        &self.opts
    }

    /// Publishes the file on its schedule until it ends (never, when looped) or `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) -> Result<ReplaySummary, ReplayError> {
        let clock = Clock::start();
        let mut summary = ReplaySummary::default();
        // Offsets are in file nanoseconds (before scaling by speed), i128 so that no file can overflow them.
        let mut pass_base: i128 = 0;
        let mut latest: i128 = 0;
        loop {
            let mut first_ts: Option<i64> = None;
            let mut good_rows: u64 = 0;
            for row in CsvSource::open(&self.opts.path, self.opts.ts_unit)? {
                if stop.load(Ordering::Relaxed) {
                    return Ok(summary);
                }
                let row = match row {
                    Ok(row) => row,
                    Err(e) if self.opts.on_error == OnError::Stop => return Err(ReplayError::Row(e)),
                    Err(e) => {
                        summary.rows_skipped += 1;
                        if summary.first_errors.len() < MAX_KEPT_ERRORS {
                            summary.first_errors.push(e);
                        }
                        continue;
                    }
                };
                let ts0 = *first_ts.get_or_insert(row.ts_ns);
                latest = latest.max(pass_base + i128::from(row.ts_ns) - i128::from(ts0));
                good_rows += 1;
                let ts = match self.opts.speed {
                    Speed::Max => unix_now_ns(),
                    Speed::Factor(f) => {
                        let due = scale(latest, f);
                        if !clock.sleep_until(due, stop) {
                            return Ok(summary);
                        }
                        clock.unix_at(due)
                    }
                };
                let Some(w) = self.writers.get_mut(&row.symbol) else {
                    let reason = format!("symbol: {:?} was not in the file when the replay started", row.symbol);
                    return Err(ReplayError::Row(RowError { file: self.opts.path.clone(), line: row.line, reason }));
                };
                w.publish_tick(&row.tick, ts).map_err(|error| ReplayError::Publish {
                    topic: w.topic().name().to_owned(),
                    line: row.line,
                    error,
                })?;
                summary.rows_published += 1;
            }
            summary.loops += 1;
            if !self.opts.looped || good_rows == 0 {
                return Ok(summary);
            }
            let span = latest - pass_base;
            let spacing = if span > 0 { span / i128::from(good_rows - 1).max(1) } else { 1_000_000_000 };
            pass_base = latest + spacing;
            latest = pass_base;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_speed_from_str() {
        assert_eq!("1".parse(), Ok(Speed::Factor(1.0)));
        assert_eq!("10".parse(), Ok(Speed::Factor(10.0)));
        assert_eq!(" 0.5 ".parse(), Ok(Speed::Factor(0.5)));
        assert_eq!("100x".parse(), Ok(Speed::Factor(100.0)));
        assert_eq!("MAX".parse(), Ok(Speed::Max));
        for bad in ["0", "-1", "nan", "inf", "", "fast", "1e999", "x"] {
            let e = bad.parse::<Speed>().unwrap_err();
            assert_eq!(e.to_string(), format!("invalid speed {bad:?}: expected a positive number or \"max\""));
        }
        assert_eq!(Speed::Factor(2.5).to_string(), "2.5");
        assert_eq!(Speed::Max.to_string(), "max");
    }

    #[test]
    fn replay_on_error_from_str() {
        assert_eq!("skip".parse(), Ok(OnError::Skip));
        assert_eq!("Stop".parse(), Ok(OnError::Stop));
        assert_eq!(
            "halt".parse::<OnError>().unwrap_err().to_string(),
            "invalid on-error \"halt\": expected skip or stop"
        );
    }
}
