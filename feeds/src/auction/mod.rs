//! The auction house: lots, bids judged by one writer per lot, and a journal that loses nothing.
//!
//! No sockets, no async runtime: the gateway hands bids in with [`AuctionHouse::submit_bid`] and gets each
//! answer through a callback; outcomes are pushed as named events through the engine's [`marquee_engine::Hub`].
//! The only IO is the journal files in the data directory.
//!
//! - [`lot`]: one lot's rules, a pure state machine over journal times.
//! - [`journal`]: length-prefixed, CRC-32 checked records; group commit; torn tails dropped.
//! - [`AuctionHouse`]: the idempotency index, replay, demo lots; [`LotWorker`]s judge the bids, each on a
//!   thread the caller gives it.
//!
//! Prices are fixed-point [`marquee_engine::Price`] throughout; amounts on the API have at most two decimals.

mod house;
pub mod journal;
pub mod lot;
mod types;
mod worker;

pub use house::{AuctionHouse, JournalStats};
pub use types::{AuctionConfig, BidAck, BidRequest, BidStatus, BidView, LotView, OpenError, SubmitError};
pub use worker::LotWorker;

use marquee_engine::{ParsePriceError, Price};
use std::fmt;

/// Price units per cent: amounts have at most two decimals.
const CENT: i64 = 10_000_000;
/// The largest amount accepted (one billion).
pub const MAX_AMOUNT: Price = Price::from_parts(1_000_000_000, 0);

/// Why an amount is not a valid bid amount; [`AmountError::code`] is the stable API code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AmountError {
    /// Not a decimal number.
    NotANumber,
    /// Zero or negative.
    NotPositive,
    /// More than two decimals.
    TooPrecise,
    /// Over [`MAX_AMOUNT`].
    TooLarge,
}

impl AmountError {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            AmountError::NotANumber => "invalid_amount",
            AmountError::NotPositive => "amount_not_positive",
            AmountError::TooPrecise => "amount_too_precise",
            AmountError::TooLarge => "amount_too_large",
        }
    }
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountError::NotANumber => "amount must be a decimal number such as \"105.00\"",
            AmountError::NotPositive => "amount must be greater than zero",
            AmountError::TooPrecise => "amount has more than two decimals",
            AmountError::TooLarge => "amount is over 1000000000",
        })
    }
}

impl std::error::Error for AmountError {}

/// Parses a bid amount (`"105"`, `"105.5"`, `"105.50"`) exactly.
///
/// ```
/// use marquee_feeds::auction::{parse_amount, format_amount, AmountError};
/// let p = parse_amount("105.5").unwrap();
/// assert_eq!(format_amount(p), "105.50");
/// assert_eq!(parse_amount("1.001"), Err(AmountError::TooPrecise));
/// assert_eq!(parse_amount("-3"), Err(AmountError::NotPositive));
/// assert_eq!(parse_amount("1e3"), Err(AmountError::NotANumber));
/// assert_eq!(parse_amount(" 100"), Err(AmountError::NotANumber));
/// assert_eq!(parse_amount("+100"), Err(AmountError::NotANumber));
/// ```
pub fn parse_amount(s: &str) -> Result<Price, AmountError> {
    // Digits with at most one point: no sign, no spaces, no exponent (the price parser, which also reads files,
    // is more lenient).
    if s.is_empty()
        || s.bytes().filter(|&b| b == b'.').count() > 1
        || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(if s.starts_with('-') { AmountError::NotPositive } else { AmountError::NotANumber });
    }
    let p: Price = s.parse().map_err(|e| match e {
        ParsePriceError::TooPrecise => AmountError::TooPrecise,
        ParsePriceError::OutOfRange => AmountError::TooLarge,
        _ => AmountError::NotANumber,
    })?;
    if p.units() <= 0 {
        return Err(AmountError::NotPositive);
    }
    if p.units() % CENT != 0 {
        return Err(AmountError::TooPrecise);
    }
    if p > MAX_AMOUNT {
        return Err(AmountError::TooLarge);
    }
    Ok(p)
}

/// Formats an amount with exactly two decimals (`105.50`).
pub fn format_amount(p: Price) -> String {
    let cents = p.units() / CENT;
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}
