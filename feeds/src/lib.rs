//! Marquee's sources: ticks and the auction house. This crate does no network IO, opens no sockets, starts no
//! threads and uses no async runtime; its only IO is reading the replayed file and the auction's journal files.
//! Its run loops ([`Replay::run`], [`Synthetic::run`], [`auction::LotWorker::run`]) block the thread that calls
//! them, sleeping with `std::thread::sleep` and polling a stop flag; the gateway gives each
//! one a thread of its own.
//!
//! - [`synthetic`]: a deterministic synthetic US equity market (one seed, one sequence of ticks, forever).
//! - [`csv_replay`]: a header-driven CSV tick reader with per-row errors that name the file and line.
//! - [`replay`]: publishing a CSV file into an [`Engine`] on the file's schedule, scaled by a speed factor.
//! - [`synthetic_feed`]: publishing the synthetic market into an [`Engine`] at a constant tick rate.
//! - [`auction`]: the auction house: lots, bid judging by one writer per lot, the journal (its files are this
//!   crate's only writes).
//!
//! Both drivers are split in two steps so that topics exist before any tick flows: `prepare` creates every
//! `ticks.<SYMBOL>` topic (and, for the synthetic market, publishes a first value to each); the prepared driver
//! is `Send` and moves to whatever thread calls `run`.
//!
//! Prices are [`marquee_engine::Price`] fixed-point integers throughout; no price passes through `f64`.
//!
//! [`Engine`]: marquee_engine::Engine

#![forbid(unsafe_code)]

pub mod auction;
pub mod book;
mod csv_lines;
pub mod csv_replay;
pub mod dbn_replay;
mod dbn_source;
#[doc(hidden)]
pub mod fuzzing;
pub mod itch;
pub mod itch_gen;
pub mod itch_replay;
pub mod market;
pub mod md_replay;
mod order_ids;
mod pace;
pub mod replay;
pub mod synthetic;
pub mod synthetic_feed;
pub mod synthetic_flow;

pub use csv_replay::{CsvRow, CsvSource, OpenError, RowError, TsUnit, scan_symbols};
pub use replay::{FileFormat, OnError, Replay, ReplayError, ReplayOptions, ReplaySummary, Speed};
pub use synthetic::SyntheticMarket;
pub use synthetic_feed::{Synthetic, SyntheticError, SyntheticSummary};

use std::fmt;

/// A command-line style option value that is not one of the accepted forms (`--speed fast`, `--on-error maybe`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseOptionError {
    /// The option, e.g. `speed`.
    pub option: &'static str,
    /// The rejected input.
    pub input: String,
    /// What is accepted, e.g. `a positive number or "max"`.
    pub expected: &'static str,
}

impl fmt::Display for ParseOptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: expected {}", self.option, self.input, self.expected)
    }
}

impl std::error::Error for ParseOptionError {}

#[cfg(test)]
mod tests {
    /// The drivers are prepared on the gateway's thread and run on one of their own.
    #[test]
    fn feeds_drivers_are_send() {
        fn send<T: Send>() {}
        send::<crate::Replay>();
        send::<crate::Synthetic>();
        send::<crate::CsvSource>();
    }
}
