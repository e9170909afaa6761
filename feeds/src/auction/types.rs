//! The auction's public types: settings, requests and answers, errors, and the views the API shows.

use super::lot::{Lot, Reject};
use super::{AmountError, format_amount};
use marquee_engine::Price;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Auction settings.
#[derive(Clone, Debug)]
pub struct AuctionConfig {
    /// Where the journals live (created when missing).
    pub data_dir: PathBuf,
    /// Lot workers (threads, each with its own journal). Fixed for a data directory.
    pub n_workers: usize,
    /// Demo lots kept running (0: none). Each closed demo lot is replaced by a new one.
    pub demo_lots: usize,
    /// How long a demo lot runs.
    pub lot_duration: Duration,
    /// Extra time between the ends of consecutive demo lots at start.
    pub stagger: Duration,
    /// Anti-sniping: an accepted bid closer than this to the end moves the end to bid time + this.
    pub anti_snipe: Duration,
}

impl Default for AuctionConfig {
    fn default() -> AuctionConfig {
        AuctionConfig {
            data_dir: PathBuf::from("marquee-data"),
            n_workers: 2,
            demo_lots: 6,
            lot_duration: Duration::from_secs(180),
            stagger: Duration::from_secs(30),
            anti_snipe: Duration::from_secs(30),
        }
    }
}

/// A bid as submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BidRequest {
    pub user: String,
    /// The client's idempotency key (scoped to the user).
    pub key: String,
    pub lot: u64,
    pub amount: Price,
}

/// A bid durably recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BidAck {
    pub bid_id: String,
    /// True when this key had already been submitted (a retry): nothing new was recorded.
    pub replayed: bool,
}

/// Why a bid was refused before it was recorded (nothing changed); [`SubmitError::code`] is the stable code.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    UnknownLot,
    LotClosed,
    LotNotOpen,
    TooLow {
        min: Price,
    },
    InvalidAmount(AmountError),
    /// The key was used before for a different lot or amount.
    KeyReused,
    /// The key's first submission is still being recorded; retry shortly.
    InProgress,
    /// The journal failed or the house is stopping.
    Unavailable,
}

impl SubmitError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SubmitError::UnknownLot => "unknown_lot",
            SubmitError::LotClosed => "lot_closed",
            SubmitError::LotNotOpen => "lot_not_open",
            SubmitError::TooLow { .. } => "bid_too_low",
            SubmitError::InvalidAmount(e) => e.code(),
            SubmitError::KeyReused => "idempotency_key_reused",
            SubmitError::InProgress => "request_in_progress",
            SubmitError::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::UnknownLot => f.write_str("no such lot"),
            SubmitError::LotClosed => f.write_str("the lot is closed"),
            SubmitError::LotNotOpen => f.write_str("the lot is not open yet"),
            SubmitError::TooLow { min } => write!(f, "the lowest acceptable bid is {}", format_amount(*min)),
            SubmitError::InvalidAmount(e) => e.fmt(f),
            SubmitError::KeyReused => f.write_str("this Idempotency-Key was used for a different bid"),
            SubmitError::InProgress => f.write_str("a request with this Idempotency-Key is still being recorded"),
            SubmitError::Unavailable => f.write_str("bids cannot be recorded right now"),
        }
    }
}

impl std::error::Error for SubmitError {}

impl From<Reject> for SubmitError {
    fn from(r: Reject) -> SubmitError {
        match r {
            Reject::NotOpenYet => SubmitError::LotNotOpen,
            Reject::LotClosed => SubmitError::LotClosed,
            Reject::TooLow { min } => SubmitError::TooLow { min },
        }
    }
}

/// A bid's outcome so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BidStatus {
    Pending,
    Accepted,
    Rejected(Reject),
}

/// A bid as `GET /api/bids/{key}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BidView {
    pub bid_id: Option<String>,
    pub key: String,
    pub lot: String,
    pub user: String,
    pub amount: String,
    /// `pending`, `accepted` or `rejected`.
    pub status: &'static str,
    /// For rejected bids: `lot_closed`, `lot_not_open` or `bid_too_low`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// A lot as `GET /api/lots` shows it and `lot_update` pushes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LotView {
    pub lot: String,
    pub title: String,
    pub emoji: String,
    pub state: &'static str,
    pub opening: String,
    pub increment: String,
    /// The least the next bid may be.
    pub min_bid: String,
    pub high_bid: Option<String>,
    pub leader: Option<String>,
    pub reserve_met: bool,
    pub bids: u64,
    /// Unix ms.
    pub starts_at: i64,
    /// Unix ms, after anti-sniping extensions.
    pub ends_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// `min_bid` as a price, for the submit-time check.
    #[serde(skip)]
    pub(super) min_units: Price,
}

impl LotView {
    pub(super) fn of(lot: &Lot, now: i64) -> LotView {
        let s = lot.spec();
        let closed = lot.closed();
        LotView {
            lot: s.id.to_string(),
            title: s.title.clone(),
            emoji: s.emoji.clone(),
            state: lot.state(now).as_str(),
            opening: format_amount(s.opening),
            increment: format_amount(s.increment),
            min_bid: format_amount(lot.min_next()),
            high_bid: lot.high().map(|(p, _)| format_amount(p)),
            leader: lot.high().map(|(_, u)| u.to_owned()),
            reserve_met: lot.high().is_some_and(|(p, _)| p >= s.reserve),
            bids: lot.n_accepted(),
            starts_at: s.starts_at,
            ends_at: lot.ends_at(),
            winner: closed.and_then(|c| c.winner.clone()),
            price: closed.and_then(|c| c.price.map(format_amount)),
            min_units: lot.min_next(),
        }
    }
}

/// Why the house could not open its data directory.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The directory was written with another number of lot workers.
    WorkerCount {
        found: usize,
        configured: usize,
    },
    /// A record passed its checksum but does not parse: written by another version, or damaged.
    BadRecord {
        path: PathBuf,
        index: usize,
        error: String,
    },
    /// Another process (or another house in this one) has the directory open.
    Locked {
        path: PathBuf,
    },
    /// A journal is damaged before its end (see [`crate::auction::journal::Damaged`]): nothing was changed.
    Damaged(crate::auction::journal::Damaged),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            OpenError::WorkerCount { found, configured } => {
                write!(f, "the data directory was written by {found} lot workers, not {configured}")
            }
            OpenError::BadRecord { path, index, error } => {
                write!(f, "{}: record {index} is unreadable: {error}", path.display())
            }
            OpenError::Locked { path } => write!(f, "{} is in use by another marquee", path.display()),
            OpenError::Damaged(d) => d.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}
