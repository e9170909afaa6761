//! One lot's rules as a pure state machine: times come in as arguments (Unix ms), nothing is read from a clock,
//! so the live writer and the journal replay reach the same state from the same records.
//!
//! ## Rules
//! - A bid is judged at its journal time `ts`: the lot must be open (`starts_at <= ts < ends_at`, not closed), and
//!   the amount at least the opening price (first bid) or the high bid plus the increment.
//! - Anti-sniping: an accepted bid less than `extension` before the end moves the end to `ts + extension`.
//! - Closing: once `now >= ends_at`, the lot is `sold` to the leader when the high bid reaches the reserve, else
//!   `unsold`.
//!
//! ```
//! use marquee_feeds::auction::lot::{Judgement, Lot, LotSpec, Reject};
//! use marquee_engine::Price;
//! let spec = LotSpec { id: 7, title: "Lamp".into(), emoji: "💡".into(), opening: Price(100), reserve: Price(150),
//!     increment: Price(10), starts_at: 0, ends_at: 1_000 };
//! let mut lot = Lot::new(spec, 30);
//! assert_eq!(lot.judge("alice", Price(100), 10), Judgement::Accepted { outbid: None });
//! assert_eq!(lot.judge("bob", Price(105), 11), Judgement::Rejected(Reject::TooLow { min: Price(110) }));
//! assert_eq!(lot.judge("bob", Price(160), 990), Judgement::Accepted { outbid: Some(("alice".into(), Price(100))) });
//! assert_eq!(lot.ends_at(), 1_020); // extended: the bid came 10 ms before the end
//! let closed = lot.close(1_020);
//! assert_eq!((closed.winner.as_deref(), closed.price), (Some("bob"), Some(Price(160))));
//! ```

use marquee_engine::Price;
use serde::{Deserialize, Serialize};

/// What a lot is, as created (journaled once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotSpec {
    /// Unique over the data directory.
    pub id: u64,
    pub title: String,
    /// An emoji standing in for a picture.
    pub emoji: String,
    /// The least a first bid may be.
    #[serde(with = "price_units")]
    pub opening: Price,
    /// The least the high bid must reach for the lot to sell.
    #[serde(with = "price_units")]
    pub reserve: Price,
    /// Each bid after the first beats the high bid by at least this.
    #[serde(with = "price_units")]
    pub increment: Price,
    /// Unix ms.
    pub starts_at: i64,
    /// Unix ms, before any extension.
    pub ends_at: i64,
}

/// Prices in the journal are their integer units: exact, and independent of display rules.
pub(crate) mod price_units {
    use marquee_engine::Price;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(p: &Price, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(p.units())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Price, D::Error> {
        i64::deserialize(d).map(Price)
    }
}

/// A lot's public state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LotState {
    Scheduled,
    Open,
    Sold,
    Unsold,
}

impl LotState {
    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            LotState::Scheduled => "scheduled",
            LotState::Open => "open",
            LotState::Sold => "sold",
            LotState::Unsold => "unsold",
        }
    }
}

/// Why a bid was rejected; [`Reject::code`] is the stable code clients see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Before `starts_at`.
    NotOpenYet,
    /// At or after the end, or already closed.
    LotClosed,
    /// Below the opening price or the high bid plus the increment.
    TooLow { min: Price },
}

impl Reject {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Reject::NotOpenYet => "lot_not_open",
            Reject::LotClosed => "lot_closed",
            Reject::TooLow { .. } => "bid_too_low",
        }
    }
}

/// What became of a bid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// The bid leads; `outbid` is the previous leader and their amount, if any (the bidder themself included:
    /// raising your own bid is allowed).
    Accepted {
        outbid: Option<(String, Price)>,
    },
    Rejected(Reject),
}

/// How a lot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub state: LotState,
    pub winner: Option<String>,
    pub price: Option<Price>,
}

/// A lot and its bidding so far.
#[derive(Clone, Debug)]
pub struct Lot {
    spec: LotSpec,
    ends_at: i64,
    extension_ms: i64,
    high: Option<(Price, String)>,
    n_accepted: u64,
    /// Bids journaled for this lot, accepted or not (numbers the bid ids).
    n_bids_seen: u64,
    closed: Option<Closed>,
}

impl Lot {
    /// A lot as created; `extension_ms` is the anti-sniping window.
    pub fn new(spec: LotSpec, extension_ms: i64) -> Lot {
        Lot { ends_at: spec.ends_at, spec, extension_ms, high: None, n_accepted: 0, n_bids_seen: 0, closed: None }
    }

    pub fn spec(&self) -> &LotSpec {
        &self.spec
    }

    pub fn id(&self) -> u64 {
        self.spec.id
    }

    /// Current end (after extensions), Unix ms.
    pub fn ends_at(&self) -> i64 {
        self.ends_at
    }

    /// High bid and its bidder.
    pub fn high(&self) -> Option<(Price, &str)> {
        self.high.as_ref().map(|(p, u)| (*p, u.as_str()))
    }

    /// Accepted bids.
    pub fn n_accepted(&self) -> u64 {
        self.n_accepted
    }

    /// The least the next bid may be.
    pub fn min_next(&self) -> Price {
        match &self.high {
            None => self.spec.opening,
            Some((p, _)) => Price(p.units().saturating_add(self.spec.increment.units())),
        }
    }

    /// The outcome, once closed.
    pub fn closed(&self) -> Option<&Closed> {
        self.closed.as_ref()
    }

    /// State at time `now`.
    pub fn state(&self, now: i64) -> LotState {
        match &self.closed {
            Some(c) => c.state,
            None if now < self.spec.starts_at => LotState::Scheduled,
            None => LotState::Open,
        }
    }

    /// True when the lot should be closed at `now`.
    pub fn is_due(&self, now: i64) -> bool {
        self.closed.is_none() && now >= self.ends_at
    }

    /// Numbers the next bid journaled for this lot: `"<lot>-<n>"`.
    pub fn next_bid_id(&mut self) -> String {
        self.n_bids_seen += 1;
        format!("{}-{}", self.spec.id, self.n_bids_seen)
    }

    /// Counts a bid id seen in the journal (replay), so new ids continue after it.
    pub fn saw_bid_id(&mut self, bid_id: &str) {
        let n = bid_id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        self.n_bids_seen = self.n_bids_seen.max(n);
    }

    /// Judges a bid made at `ts`.
    pub fn judge(&mut self, user: &str, amount: Price, ts: i64) -> Judgement {
        if self.closed.is_some() || ts >= self.ends_at {
            return Judgement::Rejected(Reject::LotClosed);
        }
        if ts < self.spec.starts_at {
            return Judgement::Rejected(Reject::NotOpenYet);
        }
        let min = self.min_next();
        if amount < min {
            return Judgement::Rejected(Reject::TooLow { min });
        }
        let outbid = self.high.replace((amount, user.to_owned())).map(|(p, u)| (u, p));
        self.n_accepted += 1;
        if self.ends_at - ts < self.extension_ms {
            self.ends_at = ts + self.extension_ms;
        }
        Judgement::Accepted { outbid }
    }

    /// Closes the lot (idempotent: a second call returns the first outcome).
    pub fn close(&mut self, _now: i64) -> Closed {
        if let Some(c) = &self.closed {
            return c.clone();
        }
        let c = match &self.high {
            Some((p, u)) if *p >= self.spec.reserve => {
                Closed { state: LotState::Sold, winner: Some(u.clone()), price: Some(*p) }
            }
            _ => Closed { state: LotState::Unsold, winner: None, price: None },
        };
        self.closed = Some(c.clone());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot() -> Lot {
        let spec = LotSpec {
            id: 3,
            title: "Clock".into(),
            emoji: "🕰".into(),
            opening: Price(1_000),
            reserve: Price(2_000),
            increment: Price(100),
            starts_at: 100,
            ends_at: 10_000,
        };
        Lot::new(spec, 1_000)
    }

    #[test]
    fn lot_rules_open_increment_and_close() {
        let mut l = lot();
        assert_eq!(l.state(99), LotState::Scheduled);
        assert_eq!(l.judge("a", Price(5_000), 99), Judgement::Rejected(Reject::NotOpenYet));
        assert_eq!(l.judge("a", Price(999), 100), Judgement::Rejected(Reject::TooLow { min: Price(1_000) }));
        assert_eq!(l.judge("a", Price(1_000), 100), Judgement::Accepted { outbid: None });
        assert_eq!(l.judge("b", Price(1_099), 200), Judgement::Rejected(Reject::TooLow { min: Price(1_100) }));
        assert_eq!(l.judge("b", Price(1_100), 200), Judgement::Accepted { outbid: Some(("a".into(), Price(1_000))) });
        assert_eq!((l.n_accepted(), l.min_next()), (2, Price(1_200)));
        assert_eq!(l.ends_at(), 10_000, "no extension far from the end");
        assert!(!l.is_due(9_999));
        assert!(l.is_due(10_000));
        assert_eq!(l.judge("a", Price(9_000), 10_000), Judgement::Rejected(Reject::LotClosed));
        let c = l.close(10_000);
        assert_eq!(c, Closed { state: LotState::Unsold, winner: None, price: None }, "reserve not met");
        assert_eq!(l.state(10_000), LotState::Unsold);
        assert_eq!(l.judge("a", Price(9_000), 500), Judgement::Rejected(Reject::LotClosed), "closed stays closed");
    }

    #[test]
    fn lot_anti_sniping_extends_from_the_bid() {
        let mut l = lot();
        l.judge("a", Price(3_000), 9_500);
        assert_eq!(l.ends_at(), 10_500);
        l.judge("b", Price(3_100), 10_400);
        assert_eq!(l.ends_at(), 11_400);
        assert!(!l.is_due(11_000));
        let c = l.close(11_400);
        assert_eq!((c.state, c.winner.as_deref(), c.price), (LotState::Sold, Some("b"), Some(Price(3_100))));
    }

    #[test]
    fn lot_bid_ids_continue_after_replay() {
        let mut l = lot();
        assert_eq!(l.next_bid_id(), "3-1");
        l.saw_bid_id("3-9");
        assert_eq!(l.next_bid_id(), "3-10");
    }
}
