//! The market-data message: one trade or quote update for one symbol.

use crate::Price;

/// One tick. The symbol is not stored here: it is the topic's (`ticks.AAPL` carries `AAPL`), so a writer that
/// owns the topic encodes it from there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Last trade price.
    pub price: Price,
    /// Last trade size.
    pub size: u64,
    /// Best bid, when known.
    pub bid: Option<Price>,
    /// Best ask, when known.
    pub ask: Option<Price>,
    /// Size at the best bid, when known.
    pub bid_size: Option<u64>,
    /// Size at the best ask, when known.
    pub ask_size: Option<u64>,
}

/// The prefix of every tick topic.
pub const TICKS_PREFIX: &str = "ticks.";

/// The topic name for a symbol: `ticks.AAPL`.
pub fn tick_topic(symbol: &str) -> String {
    format!("{TICKS_PREFIX}{symbol}")
}
