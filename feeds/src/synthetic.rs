//! A deterministic synthetic market: 50 well-known US tickers doing a random walk on a one-cent grid.
//!
//! Invariants, for every tick of every seed:
//! - the output depends on the seed only: the generator is [`SplitMix64`] with fixed arithmetic, so a seed gives
//!   the same ticks on every machine and in every future version (a golden test pins the first ticks);
//! - prices are whole cents held as [`Price`] integers, and no price goes through `f64`;
//! - `0 < bid < ask`, and the last trade is at the bid, the ask or in between;
//! - trade sizes are 1 to 1000 shares (round lots of 100, odd lots under 100, a few mixed lots); book sizes are
//!   round lots of 100 to 1000.
//!
//! The walk moves the bid by a few cents per tick (more for pricier names) and pushes back toward the listing's
//! base price once it strays more than 10% away, so prices stay plausible however long the market runs.
//!
//! ```
//! use marquee_feeds::SyntheticMarket;
//! let mut a = SyntheticMarket::new(7);
//! let mut b = SyntheticMarket::new(7);
//! for _ in 0..1000 {
//!     let (i, tick) = a.next_tick();
//!     assert_eq!((i, tick), b.next_tick());
//!     assert!(tick.bid < tick.ask);
//!     assert!(a.symbols()[i].bytes().all(|c| c.is_ascii_uppercase()));
//! }
//! ```

use marquee_engine::{Price, Tick};

/// Price units per cent.
const CENT: i64 = 10_000_000;

/// Symbol, base price in cents, relative share of the ticks.
const LISTINGS: [(&str, i64, u32); 50] = [
    ("AAPL", 18_950, 8),
    ("MSFT", 41_525, 6),
    ("NVDA", 12_140, 10),
    ("AMZN", 18_630, 6),
    ("GOOGL", 17_220, 5),
    ("META", 50_310, 5),
    ("TSLA", 24_875, 9),
    ("AVGO", 16_245, 3),
    ("JPM", 20_150, 3),
    ("V", 27_630, 2),
    ("LLY", 78_240, 2),
    ("UNH", 52_180, 2),
    ("XOM", 11_465, 2),
    ("MA", 46_190, 1),
    ("JNJ", 15_520, 2),
    ("PG", 16_690, 1),
    ("HD", 35_840, 1),
    ("COST", 85_370, 2),
    ("WMT", 6_845, 2),
    ("ABBV", 17_010, 1),
    ("CVX", 15_425, 1),
    ("MRK", 11_120, 1),
    ("KO", 6_238, 2),
    ("PEP", 16_915, 1),
    ("ADBE", 49_880, 1),
    ("CRM", 26_975, 1),
    ("NFLX", 64_890, 2),
    ("AMD", 15_870, 5),
    ("INTC", 3_042, 4),
    ("CSCO", 4_811, 2),
    ("ORCL", 13_960, 1),
    ("ACN", 33_875, 1),
    ("MCD", 28_140, 1),
    ("ABT", 10_530, 1),
    ("DIS", 10_085, 1),
    ("WFC", 5_790, 2),
    ("BAC", 3_965, 4),
    ("PFE", 2_815, 3),
    ("NKE", 7_960, 1),
    ("QCOM", 16_930, 1),
    ("TXN", 19_050, 1),
    ("IBM", 18_920, 1),
    ("CAT", 34_210, 1),
    ("GS", 46_780, 1),
    ("BA", 17_460, 2),
    ("UBER", 7_045, 2),
    ("PYPL", 6_520, 2),
    ("T", 1_792, 3),
    ("F", 1_216, 4),
    ("PLTR", 2_385, 3),
];

const SYMBOLS: [&str; LISTINGS.len()] = {
    let mut out = [""; LISTINGS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = LISTINGS[i].0;
        i += 1;
    }
    out
};

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny, fast generator whose output for a seed never changes.
/// Not for cryptography.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed` (any value, zero included).
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n == 0`), by multiply-shift: the bias is below `n / 2^64`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// One symbol's book: the bid and the spread in cents.
#[derive(Clone, Debug)]
struct Book {
    base: i64,
    bid: i64,
    spread: i64,
}

impl Book {
    /// The narrowest spread for this price: one cent, plus a cent per $250 of price.
    fn min_spread(&self) -> i64 {
        1 + self.bid / 25_000
    }

    /// The largest move per tick: one cent, plus a cent per $200 of price.
    fn max_step(&self) -> i64 {
        1 + self.bid / 20_000
    }
}

/// The synthetic market. Not `Sync`-shared: one driver owns it and calls [`SyntheticMarket::next_tick`].
#[derive(Clone, Debug)]
pub struct SyntheticMarket {
    rng: SplitMix64,
    books: Vec<Book>,
    last: Vec<Tick>,
    /// Running sums of the listings' weights, for picking a symbol.
    cum_weights: Vec<u64>,
}

impl SyntheticMarket {
    /// A market whose whole future is fixed by `seed`.
    pub fn new(seed: u64) -> SyntheticMarket {
        let mut rng = SplitMix64::new(seed);
        let mut total = 0;
        let cum_weights = LISTINGS
            .iter()
            .map(|&(_, _, w)| {
                total += u64::from(w);
                total
            })
            .collect();
        let mut books = Vec::with_capacity(LISTINGS.len());
        let mut last = Vec::with_capacity(LISTINGS.len());
        for &(_, base, _) in &LISTINGS {
            let mut b = Book { base, bid: base, spread: 0 };
            b.spread = b.min_spread();
            last.push(Tick {
                price: cents(b.bid),
                size: 100 * (1 + rng.below(10)),
                bid: Some(cents(b.bid)),
                ask: Some(cents(b.bid + b.spread)),
                bid_size: Some(100 * (1 + rng.below(10))),
                ask_size: Some(100 * (1 + rng.below(10))),
            });
            books.push(b);
        }
        SyntheticMarket { rng, books, last, cum_weights }
    }

    /// The tickers, `[A-Z]{1,5}`; [`SyntheticMarket::next_tick`] returns an index into this.
    pub fn symbols(&self) -> &[&'static str] {
        &SYMBOLS
    }

    /// The latest tick of symbol `index` (its opening quote before the first move); `None` past the end.
    pub fn last(&self, index: usize) -> Option<&Tick> {
        self.last.get(index)
    }

    /// The next tick: which symbol moved (an index into [`SyntheticMarket::symbols`]) and its new tick.
    /// Busier names (NVDA, AAPL, TSLA) tick more often than quiet ones, as on a real tape.
    pub fn next_tick(&mut self) -> (usize, Tick) {
        let total = self.cum_weights.last().copied().unwrap_or(1);
        let r = self.rng.below(total);
        let i = self.cum_weights.partition_point(|&c| c <= r);
        let rng = &mut self.rng;
        let b = &mut self.books[i];

        let max_step = b.max_step();
        let mut step = rng.below(2 * max_step as u64 + 1) as i64 - max_step;
        // Mean reversion outside +-10% of the base keeps the walk near a realistic level and far from zero.
        if b.bid * 10 > b.base * 11 {
            step = -step.abs();
        } else if b.bid * 10 < b.base * 9 {
            step = step.abs();
        }
        b.bid = (b.bid + step).max(1);
        // Mostly the narrowest spread; one tick in four it widens by one or two cents.
        b.spread = b.min_spread() + if rng.below(4) == 0 { 1 + rng.below(2) as i64 } else { 0 };
        let ask = b.bid + b.spread;
        let price = match rng.below(10) {
            0..=3 => b.bid,
            4..=7 => ask,
            _ if b.spread > 1 => b.bid + 1 + rng.below(b.spread as u64 - 1) as i64,
            _ => b.bid,
        };
        let size = match rng.below(10) {
            0..=5 => 100 * (1 + rng.below(10)),
            6..=8 => 1 + rng.below(99),
            _ => 100 * (1 + rng.below(5)) + 1 + rng.below(99),
        };
        let tick = Tick {
            price: cents(price),
            size,
            bid: Some(cents(b.bid)),
            ask: Some(cents(ask)),
            bid_size: Some(100 * (1 + rng.below(10))),
            ask_size: Some(100 * (1 + rng.below(10))),
        };
        self.last[i] = tick;
        (i, tick)
    }
}

fn cents(c: i64) -> Price {
    Price(c * CENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a over the fields of the first `n` ticks.
    fn fingerprint(seed: u64, n: usize) -> u64 {
        let mut m = SyntheticMarket::new(seed);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..n {
            let (i, t) = m.next_tick();
            let fields = [i as i64, t.price.0, t.size as i64, t.bid.unwrap().0, t.ask.unwrap().0];
            for v in fields.into_iter().chain([t.bid_size.unwrap() as i64, t.ask_size.unwrap() as i64]) {
                for byte in v.to_le_bytes() {
                    h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        h
    }

    #[test]
    fn synthetic_same_seed_same_ticks() {
        let (mut a, mut b) = (SyntheticMarket::new(42), SyntheticMarket::new(42));
        for _ in 0..10_000 {
            assert_eq!(a.next_tick(), b.next_tick());
        }
        assert_eq!(fingerprint(1, 5000), fingerprint(1, 5000));
    }

    #[test]
    fn synthetic_different_seed_different_ticks() {
        assert_ne!(fingerprint(1, 100), fingerprint(2, 100));
        let (mut a, mut b) = (SyntheticMarket::new(0), SyntheticMarket::new(1));
        let same = (0..1000).filter(|_| a.next_tick() == b.next_tick()).count();
        assert!(same < 50, "{same} identical ticks");
    }

    /// Regression guard: a change to the generator or the walk would silently change every seed's market.
    #[test]
    fn synthetic_sequence_is_pinned() {
        let mut m = SyntheticMarket::new(42);
        let first: Vec<(usize, String, u64)> = (0..3)
            .map(|_| {
                let (i, t) = m.next_tick();
                (i, t.price.to_string(), t.size)
            })
            .collect();
        let first: Vec<(usize, &str, u64)> = first.iter().map(|(i, p, s)| (*i, p.as_str(), *s)).collect();
        assert_eq!(first, GOLDEN_FIRST);
        assert_eq!(fingerprint(42, 1000), GOLDEN_FINGERPRINT, "{:#x}", fingerprint(42, 1000));
    }

    const GOLDEN_FIRST: [(usize, &str, u64); 3] = [(23, "169.15", 68), (7, "162.46", 600), (0, "189.5", 35)];
    const GOLDEN_FINGERPRINT: u64 = 0xe522_c3b0_c671_14a5;

    #[test]
    fn synthetic_invariants_hold_over_100k_ticks() {
        let mut m = SyntheticMarket::new(0xDEAD_BEEF);
        let mut seen = vec![0u32; m.symbols().len()];
        for _ in 0..100_000 {
            let (i, t) = m.next_tick();
            seen[i] += 1;
            let (bid, ask) = (t.bid.unwrap(), t.ask.unwrap());
            assert!(Price(0) < bid && bid < ask, "{bid} {ask}");
            assert!(bid <= t.price && t.price <= ask);
            assert_eq!(t.price.0 % CENT, 0, "on the cent grid");
            assert!((1..=1000).contains(&t.size));
            assert!([t.bid_size, t.ask_size].iter().all(|s| s.is_some_and(|s| s % 100 == 0 && s <= 1000)));
            assert_eq!(m.last(i), Some(&t));
        }
        let quiet = seen.iter().min().unwrap();
        assert!(*quiet > 100, "every symbol ticks: {seen:?}");
    }

    #[test]
    fn synthetic_symbols_are_short_uppercase_and_unique() {
        let m = SyntheticMarket::new(0);
        let syms = m.symbols();
        assert_eq!(syms.len(), 50);
        for s in syms {
            assert!((1..=5).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_uppercase()), "{s}");
        }
        let mut sorted = syms.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), syms.len());
        for i in 0..syms.len() {
            let t = m.last(i).unwrap();
            assert!(t.bid < t.ask && t.bid.is_some());
        }
        assert_eq!(m.last(syms.len()), None);
    }

    #[test]
    fn synthetic_prices_stay_near_their_base() {
        let mut m = SyntheticMarket::new(9);
        for _ in 0..200_000 {
            m.next_tick();
        }
        for (i, &(sym, base, _)) in LISTINGS.iter().enumerate() {
            let bid = m.last(i).unwrap().bid.unwrap().0 / CENT;
            assert!(bid * 10 > base * 8 && bid * 10 < base * 12, "{sym}: {bid} vs base {base}");
        }
    }
}
