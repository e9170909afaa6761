//! A generator of synthetic NASDAQ TotalView-ITCH 5.0 files: realistic order flow, nothing downloaded.
//!
//! It does not model a matching engine: it writes what a feed of one would look like, consistently (every
//! execute, cancel, replace and delete names an order that rests, with at most the shares it holds), so a book
//! built from the file never meets an unknown order. The mix follows public statistics of TotalView-ITCH days:
//! adds and deletes dominate, executions are a few percent, replaces and partial cancels fewer.
//!
//! | message | share |
//! |---|---|
//! | `A` add (`F` one in ten) | 44% |
//! | `D` delete | 36% |
//! | `U` replace | 8% |
//! | `E` executed | 5.5% |
//! | `X` partial cancel | 3% |
//! | `P` hidden trade | 3% |
//! | `C` executed with price | 0.5% |
//!
//! Deletes, replaces and partial cancels mostly name recent orders (three in four among a symbol's 8 newest), as
//! on a real day where most orders live moments and a few rest for hours. The same seed gives the same file.
//! Timestamps start at 09:30 and grow by `spacing_ns` on average.
//!
//! ```
//! use marquee_feeds::itch_gen::ItchGenerator;
//! let mut g = ItchGenerator::new(7, 4, 1_000);
//! let mut file = Vec::new();
//! g.write_header(&mut file);
//! g.write_messages(&mut file, 1_000);
//! assert!(marquee_feeds::itch::looks_like_itch(&file));
//! ```

use crate::itch::encode;
use crate::synthetic::SplitMix64;

const OPEN_NS: u64 = (9 * 3600 + 30 * 60) * 1_000_000_000;

#[derive(Clone, Copy, Debug)]
struct Live {
    id: u64,
    buy: bool,
    price: u32,
    shares: u32,
}

#[derive(Clone, Debug)]
struct Sym {
    name: String,
    /// Mid price in ITCH units (1e-4), on a one-cent grid.
    mid: u32,
    live: Vec<Live>,
}

/// Writes a deterministic synthetic ITCH 5.0 order flow.
#[derive(Clone, Debug)]
pub struct ItchGenerator {
    rng: SplitMix64,
    syms: Vec<Sym>,
    next_id: u64,
    next_match: u64,
    ts: u64,
    spacing_ns: u64,
}

impl ItchGenerator {
    /// `n_symbols` symbols (`SYM0`, `SYM1`, ...; the first 50 take real tickers' names), messages
    /// `spacing_ns` apart on average.
    pub fn new(seed: u64, n_symbols: usize, spacing_ns: u64) -> ItchGenerator {
        let mut rng = SplitMix64::new(seed);
        let names = crate::SyntheticMarket::new(seed);
        let syms = (0..n_symbols.max(1))
            .map(|i| {
                let name = names.symbols().get(i).map_or_else(|| format!("SYM{i}"), |s| (*s).to_owned());
                Sym { name, mid: (1_000 + rng.below(40_000) as u32) * 100, live: Vec::new() }
            })
            .collect();
        ItchGenerator { rng, syms, next_id: 1, next_match: 1, ts: OPEN_NS, spacing_ns: spacing_ns.max(1) }
    }

    /// The symbols, in locate order (locate `i + 1`).
    pub fn symbols(&self) -> Vec<&str> {
        self.syms.iter().map(|s| s.name.as_str()).collect()
    }

    /// The system event "start of messages" and a stock directory message per symbol.
    pub fn write_header(&mut self, out: &mut Vec<u8>) {
        encode::system_event(out, self.ts, b'O');
        for (i, s) in self.syms.iter().enumerate() {
            encode::stock_directory(out, i as u16 + 1, self.ts, &s.name);
        }
    }

    /// Appends `n` order-flow messages.
    pub fn write_messages(&mut self, out: &mut Vec<u8>, n: u64) {
        for _ in 0..n {
            self.write_one(out);
        }
    }

    fn write_one(&mut self, out: &mut Vec<u8>) {
        self.ts += 1 + self.rng.below(2 * self.spacing_ns);
        let ts = self.ts;
        let si = self.rng.below(self.syms.len() as u64) as usize;
        let locate = si as u16 + 1;
        let roll = self.rng.below(100);
        let n_live = self.syms[si].live.len() as u64;
        // Keep books deep enough to have levels, and bounded.
        let add = (roll < 44 && n_live <= 400) || n_live < 20;
        if add {
            self.add(out, si, locate, ts);
            return;
        }
        let k = self.pick(si);
        let o = self.syms[si].live[k];
        match roll {
            // Also the adds of a book already 400 orders deep: it shrinks back.
            0..80 => {
                self.syms[si].live.swap_remove(k);
                encode::delete(out, locate, ts, o.id);
            }
            80..88 => {
                let id = self.next_id;
                self.next_id += 1;
                let price = self.near(si, o.buy);
                let shares = 100 * (1 + self.rng.below(10) as u32);
                self.syms[si].live[k] = Live { id, buy: o.buy, price, shares };
                encode::replace(out, locate, ts, o.id, id, shares, price);
            }
            88..91 => {
                let cut = 1 + self.rng.below(u64::from(o.shares)) as u32;
                self.shrink(si, k, cut);
                encode::cancel(out, locate, ts, o.id, cut);
            }
            _ => {
                // Executions hit the best order of a side, as a real book trades.
                let k = self.best(si, o.buy);
                let o = self.syms[si].live[k];
                let m = self.next_match;
                self.next_match += 1;
                let fill = (100 * (1 + self.rng.below(5) as u32)).min(o.shares);
                let p = self.rng.below(3);
                self.syms[si].mid = o.price;
                if p == 0 {
                    // A hidden order traded at the displayed best: a print, no book change.
                    let s = &self.syms[si];
                    encode::trade(out, locate, ts, 0, if o.buy { b'B' } else { b'S' }, 100, &s.name, o.price, m);
                    return;
                }
                self.shrink(si, k, fill);
                if p == 1 && self.rng.below(6) == 0 {
                    encode::executed_with_price(out, locate, ts, o.id, fill, m, true, o.price);
                } else {
                    encode::executed(out, locate, ts, o.id, fill, m);
                }
            }
        }
    }

    fn add(&mut self, out: &mut Vec<u8>, si: usize, locate: u16, ts: u64) {
        let buy = self.rng.below(2) == 0;
        let price = self.near(si, buy);
        let shares = 100 * (1 + self.rng.below(10) as u32);
        let id = self.next_id;
        self.next_id += 1;
        self.syms[si].live.push(Live { id, buy, price, shares });
        let mpid = (self.rng.below(10) == 0).then_some(b"GSCO");
        encode::add_order(out, locate, ts, id, if buy { b'B' } else { b'S' }, shares, &self.syms[si].name, price, mpid);
    }

    /// A price on the order's side of the mid: most within a few cents, some deeper.
    fn near(&mut self, si: usize, buy: bool) -> u32 {
        let cents = 1 + if self.rng.below(4) == 0 { self.rng.below(40) } else { self.rng.below(6) } as u32;
        let mid = self.syms[si].mid;
        if buy { mid.saturating_sub(cents * 100).max(100) } else { mid + cents * 100 }
    }

    /// The order a delete, replace or partial cancel names: three times in four one of the symbol's 8 newest
    /// (the live list keeps arrival order at its end, give or take the swaps of removals), else any. Real order
    /// flow is like that: most orders are cancelled or replaced within moments of their arrival, a few rest
    /// for long; it is also what makes a book builder's memory access local.
    fn pick(&mut self, si: usize) -> usize {
        let n = self.syms[si].live.len() as u64;
        if self.rng.below(4) == 0 { self.rng.below(n) as usize } else { (n - 1 - self.rng.below(n.min(8))) as usize }
    }

    /// The best resting order of a side (the first of the best price), else any.
    fn best(&self, si: usize, buy: bool) -> usize {
        let live = &self.syms[si].live;
        let better = |a: &Live, b: &Live| if buy { a.price > b.price } else { a.price < b.price };
        let mut at = None::<usize>;
        for (i, o) in live.iter().enumerate().filter(|(_, o)| o.buy == buy) {
            if at.is_none_or(|j| better(o, &live[j])) {
                at = Some(i);
            }
        }
        at.unwrap_or(0)
    }

    fn shrink(&mut self, si: usize, k: usize, by: u32) {
        let o = &mut self.syms[si].live[k];
        o.shares -= by.min(o.shares);
        if o.shares == 0 {
            self.syms[si].live.swap_remove(k);
        }
    }
}
