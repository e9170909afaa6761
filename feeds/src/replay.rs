//! Replaying a recorded file into an engine at the file's own pace, faster, slower, or as fast as possible.
//!
//! [`Replay::prepare`] recognises the file's format ([`FileFormat::detect`]: CSV ticks, Databento DBN, NASDAQ
//! TotalView-ITCH 5.0) and prepares that format's replay: CSV here, ITCH in [`crate::itch_replay`], DBN in
//! [`crate::dbn_replay`]; the binary formats share [`crate::md_replay`]. This module documents the CSV replay;
//! the others follow the same rules of speed, loop, stop and timestamps.
//!
//! For CSV, [`Replay::prepare`] reads the file once for its symbols and creates a `ticks.<SYMBOL>` topic for
//! each, so the server lists every symbol before the first tick; it hands back a `Send` value. [`Replay::run`] blocks the
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
use crate::market::MarketError;
use crate::md_replay::{MdOptions, MdSummary, Progress, TimeBound};
use crate::pace::{Clock, create_topics, scale, unix_now_ns};
use marquee_engine::{CreateTopicError, Engine, PublishError, TopicWriter};
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
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
    /// Only these symbols (default: empty, every symbol).
    pub symbols: Vec<String>,
    /// Skip what the file holds before this time (default: nothing skipped).
    pub start: Option<TimeBound>,
    /// End the pass at the first message at or after this time (default: the end of the file).
    pub end: Option<TimeBound>,
    /// Levels per side of published books (default [`crate::market::DEFAULT_DEPTH`]).
    pub depth: usize,
    /// Counts the messages (CSV: rows) published so far, for whoever holds a clone (default: a new counter).
    pub progress: Progress,
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
            symbols: Vec::new(),
            start: None,
            end: None,
            depth: crate::market::DEFAULT_DEPTH,
            progress: Progress::default(),
        }
    }

    fn md(&self) -> MdOptions {
        MdOptions {
            path: self.path.clone(),
            speed: self.speed,
            looped: self.looped,
            symbols: self.symbols.clone(),
            start: self.start,
            end: self.end,
            depth: self.depth,
            progress: self.progress.clone(),
        }
    }

    fn wants(&self, symbol: &str) -> bool {
        self.symbols.is_empty() || self.symbols.iter().any(|s| s == symbol)
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
    /// ITCH and DBN: what the market-data replay did (the CSV fields above stay zero).
    pub market: Option<MdSummary>,
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
    /// The file could not be read.
    Io { file: PathBuf, error: std::io::Error },
    /// None of the symbols asked for (`--symbols`) is in the file (CSV, whose symbols are read up front).
    NoSymbols { file: PathBuf, wanted: Vec<String> },
    /// The file is none of the formats a replay reads.
    UnknownFormat { file: PathBuf },
    /// ITCH or DBN market data could not be published.
    Market(MarketError),
    /// A DBN file could not be replayed.
    Dbn(crate::dbn_replay::DbnError),
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
            ReplayError::Io { file, error } => write!(f, "{}: {error}", file.display()),
            ReplayError::NoSymbols { file, wanted } => {
                write!(f, "{}: none of the symbols {} is in the file", file.display(), wanted.join(","))
            }
            ReplayError::UnknownFormat { file } => write!(
                f,
                "{}: not a file Marquee can replay: expected CSV ticks, Databento DBN (.dbn, .dbn.zst) or NASDAQ \
                 TotalView-ITCH 5.0",
                file.display()
            ),
            ReplayError::Market(e) => e.fmt(f),
            ReplayError::Dbn(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Open(e) => e.source(),
            ReplayError::Topic { error, .. } => Some(error),
            ReplayError::Publish { error, .. } => Some(error),
            ReplayError::Io { error, .. } => Some(error),
            ReplayError::Market(e) => Some(e),
            ReplayError::Dbn(e) => Some(e),
            _ => None,
        }
    }
}

impl From<OpenError> for ReplayError {
    fn from(e: OpenError) -> ReplayError {
        ReplayError::Open(e)
    }
}

/// The formats a replay reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileFormat {
    /// CSV ticks ([`crate::csv_replay`]).
    Csv,
    /// Databento Binary Encoding, plain or zstd-compressed ([`crate::dbn_replay`]).
    Dbn,
    /// NASDAQ TotalView-ITCH 5.0, length-prefixed ([`crate::itch_replay`]).
    Itch,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Csv => "CSV",
            FileFormat::Dbn => "DBN",
            FileFormat::Itch => "ITCH 5.0",
        })
    }
}

impl FileFormat {
    /// The format of `path`: by its first bytes (DBN's `DBN` or zstd's magic number; two ITCH records whose
    /// lengths match their types; UTF-8 text without NUL bytes for CSV), then by extension (`.dbn`, `.zst`,
    /// `.itch`, `.csv`); anything else is [`ReplayError::UnknownFormat`].
    pub fn detect(path: &Path) -> Result<FileFormat, ReplayError> {
        let io = |error| ReplayError::Io { file: path.to_owned(), error };
        let mut head = Vec::with_capacity(512);
        std::fs::File::open(path).map_err(io)?.take(512).read_to_end(&mut head).map_err(io)?;
        if head.starts_with(b"DBN") || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Ok(FileFormat::Dbn);
        }
        if crate::itch::looks_like_itch(&head) {
            return Ok(FileFormat::Itch);
        }
        let text = match std::str::from_utf8(&head) {
            Ok(_) => true,
            // A multi-byte character cut by the 512-byte window is still text.
            Err(e) => e.error_len().is_none() && head.len() == 512,
        };
        if text && !head.is_empty() && !head.contains(&0) {
            return Ok(FileFormat::Csv);
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
        if name.ends_with(".dbn") || name.ends_with(".dbn.zst") || name.ends_with(".zst") {
            Ok(FileFormat::Dbn)
        } else if name.ends_with(".itch") || name.contains(".itch") {
            Ok(FileFormat::Itch)
        } else if name.ends_with(".csv") {
            Ok(FileFormat::Csv)
        } else {
            Err(ReplayError::UnknownFormat { file: path.to_owned() })
        }
    }
}

/// A replay of any supported format, prepared and ready to run on any thread.
#[derive(Debug)]
pub struct Replay {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Csv(CsvReplay),
    Itch(Box<crate::itch_replay::ItchReplay>),
    Dbn(crate::dbn_replay::DbnReplay),
}

impl Replay {
    /// Checks the options, recognises the file's format and prepares its replay (for CSV: reads the file once
    /// for its symbols and creates `ticks.<SYMBOL>` for each).
    pub fn prepare(engine: &Arc<Engine>, opts: ReplayOptions) -> Result<Replay, ReplayError> {
        if let Speed::Factor(x) = opts.speed {
            if !opts.speed.is_valid() {
                return Err(ReplayError::InvalidSpeed(x));
            }
        }
        let inner = match FileFormat::detect(&opts.path)? {
            FileFormat::Csv => Inner::Csv(CsvReplay::prepare(engine, opts)?),
            FileFormat::Itch => Inner::Itch(Box::new(crate::itch_replay::ItchReplay::prepare(engine, opts.md())?)),
            FileFormat::Dbn => {
                Inner::Dbn(crate::dbn_replay::DbnReplay::prepare(engine, opts.md()).map_err(ReplayError::Dbn)?)
            }
        };
        Ok(Replay { inner })
    }

    /// The file's format.
    pub fn format(&self) -> FileFormat {
        match self.inner {
            Inner::Csv(_) => FileFormat::Csv,
            Inner::Itch(_) => FileFormat::Itch,
            Inner::Dbn(_) => FileFormat::Dbn,
        }
    }

    /// CSV: the file's symbols, in order of first appearance; each has its topic. ITCH and DBN create topics
    /// as the file names symbols: empty.
    pub fn symbols(&self) -> &[String] {
        match &self.inner {
            Inner::Csv(r) => &r.symbols,
            _ => &[],
        }
    }

    /// Publishes the file on its schedule until it ends (never, when looped) or `stop` is set.
    pub fn run(self, stop: &AtomicBool) -> Result<ReplaySummary, ReplayError> {
        match self.inner {
            Inner::Csv(r) => r.run(stop),
            Inner::Itch(r) => Ok(ReplaySummary { market: Some(r.run(stop)?), ..Default::default() }),
            Inner::Dbn(r) => {
                Ok(ReplaySummary { market: Some(r.run(stop).map_err(ReplayError::Dbn)?), ..Default::default() })
            }
        }
    }
}

/// A CSV replay whose topics exist.
#[derive(Debug)]
struct CsvReplay {
    opts: ReplayOptions,
    /// In order of first appearance in the file.
    symbols: Vec<String>,
    writers: HashMap<String, TopicWriter>,
}

impl CsvReplay {
    fn prepare(engine: &Engine, opts: ReplayOptions) -> Result<CsvReplay, ReplayError> {
        let mut symbols = scan_symbols(&opts.path, opts.ts_unit)?;
        if symbols.is_empty() {
            return Err(ReplayError::NoRows { file: opts.path });
        }
        symbols.retain(|s| opts.wants(s));
        if symbols.is_empty() {
            return Err(ReplayError::NoSymbols { file: opts.path, wanted: opts.symbols });
        }
        let writers = create_topics(engine, symbols.iter().map(String::as_str))
            .map_err(|(topic, error)| ReplayError::Topic { topic, error })?;
        let writers = symbols.iter().cloned().zip(writers).collect();
        Ok(CsvReplay { opts, symbols, writers })
    }

    fn run(mut self, stop: &AtomicBool) -> Result<ReplaySummary, ReplayError> {
        let clock = Clock::start();
        let mut summary = ReplaySummary::default();
        // Offsets are in file nanoseconds (before scaling by speed), i128 so that no file can overflow them.
        let mut pass_base: i128 = 0;
        let mut latest: i128 = 0;
        loop {
            let mut first_ts: Option<i64> = None;
            let mut file_first: Option<i64> = None;
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
                if !self.opts.wants(&row.symbol) {
                    continue;
                }
                let t_first = *file_first.get_or_insert(row.ts_ns);
                if self.opts.start.is_some_and(|b| row.ts_ns < b.unix_ns(t_first)) {
                    continue;
                }
                if self.opts.end.is_some_and(|b| row.ts_ns >= b.unix_ns(t_first)) {
                    break;
                }
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
                if summary.rows_published % 1024 == 0 {
                    self.opts.progress.set(summary.rows_published);
                }
            }
            summary.loops += 1;
            self.opts.progress.set(summary.rows_published);
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
