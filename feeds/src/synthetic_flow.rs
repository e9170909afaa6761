//! Order flow behind the synthetic market's quotes: order-level books whose top is each tick's quote, and a
//! trade print per tick, published as `book.*` and `trades.*` so the default server shows live depth and a tape.
//!
//! It does not change the ticks: [`crate::SyntheticMarket`] stays the one source of prices (its golden test
//! still holds), and this flow follows it. For each tick of a symbol, in order:
//! 1. the print: the tick's last trade goes on the tape (aggressor: buyer at or above the old ask, seller at or
//!    below the old bid), and executes against the front of the resting queue it hit (price-time priority);
//! 2. the quote: orders priced through the new bid or ask are cancelled, and the best level of each side is
//!    topped up or partly cancelled to the tick's `bid_size`/`ask_size`;
//! 3. depth: each side keeps orders on the `depth` one-cent levels behind its best (1 to 3 orders each, round
//!    lots), with one random order deeper in the book cancelled and one added per tick, so depth moves too.
//!
//! Everything is driven by its own [`SplitMix64`] seeded from the market's seed: the same seed gives the same
//! books.

use crate::book::BookSide;
use crate::market::{MarketError, MarketOut};
use crate::synthetic::SplitMix64;
use marquee_engine::{Engine, Price, Side, Tick, Trade};
use std::sync::Arc;

const CENT: i64 = 10_000_000;

/// The order flow of every symbol of the synthetic market.
#[derive(Debug)]
pub struct SyntheticFlow {
    out: MarketOut,
    rng: SplitMix64,
    next_id: u64,
    /// Resting order ids per symbol (an unordered pool to pick churn from; stale ids are skipped).
    ids: Vec<Vec<u64>>,
}

impl SyntheticFlow {
    /// Creates `book.*` and `trades.*` for `symbols` and builds each book around its opening tick.
    pub fn prepare(
        engine: &Arc<Engine>,
        seed: u64,
        depth: usize,
        symbols: &[&str],
        opening: impl Fn(usize) -> Tick,
        ts: i64,
    ) -> Result<SyntheticFlow, MarketError> {
        let mut out = MarketOut::new(engine.clone(), depth).without_ticks();
        for s in symbols {
            out.symbol(s)?;
        }
        let mut flow = SyntheticFlow {
            out,
            rng: SplitMix64::new(seed ^ 0x0b00_c0de),
            next_id: 1,
            ids: vec![Vec::new(); symbols.len()],
        };
        for i in 0..symbols.len() {
            flow.quote(i, &opening(i));
        }
        flow.out.flush(ts)?;
        Ok(flow)
    }

    /// Applies one tick of symbol `i`: its print, then its quote and depth; publishes the print, the book and
    /// nothing else.
    pub fn on_tick(&mut self, i: usize, tick: &Tick, ts: i64) -> Result<(), MarketError> {
        let b = i as u32;
        let (bid, ask) = (self.out.best(b, BookSide::Bid), self.out.best(b, BookSide::Ask));
        let side = match (bid, ask) {
            (_, Some(a)) if tick.price >= a.price => Some(Side::Buy),
            (Some(bd), _) if tick.price <= bd.price => Some(Side::Sell),
            _ => None,
        };
        // The print takes liquidity from the front of the queue it hit.
        let hit = match side {
            Some(Side::Buy) => ask.map(|l| (BookSide::Ask, l)),
            Some(Side::Sell) => bid.map(|l| (BookSide::Bid, l)),
            None => None,
        };
        if let Some((book_side, level)) = hit {
            let mut left = tick.size;
            while left > 0 {
                let Some(id) = self.out.books_ref().front(b, book_side, level.price) else { break };
                let Ok(fill) = self.out.books().execute(id, left) else { break };
                left -= fill.size;
            }
        }
        self.out.trade(b, &Trade { price: tick.price, size: tick.size, side }, ts)?;
        self.quote(i, tick);
        self.out.flush(ts)
    }

    fn add(&mut self, i: usize, side: BookSide, price: Price, size: u64) {
        let id = self.next_id;
        self.next_id += 1;
        if self.out.books().add(i as u32, id, side, price, size).is_ok() {
            self.ids[i].push(id);
        }
    }

    fn lot(&mut self) -> u64 {
        100 * (1 + self.rng.below(5))
    }

    /// Moves symbol `i`'s book to the tick's quote and refreshes its depth.
    fn quote(&mut self, i: usize, tick: &Tick) {
        let b = i as u32;
        let depth = self.out.depth() as i64;
        for (side, best, size, dir) in
            [(BookSide::Bid, tick.bid, tick.bid_size, -1i64), (BookSide::Ask, tick.ask, tick.ask_size, 1i64)]
        {
            let Some(best) = best else { continue };
            let want = size.unwrap_or(100).max(1);
            // Cancel what is priced through the new best.
            while let Some(l) = self.out.best(b, side).filter(|l| (l.price.units() - best.units()) * dir < 0) {
                while let Some(id) = self.out.books_ref().front(b, side, l.price) {
                    let _ = self.out.books().delete(id);
                }
            }
            // The best level holds exactly the quoted size.
            let have = self.out.best(b, side).filter(|l| l.price == best).map_or(0, |l| l.size);
            if have < want {
                self.add(i, side, best, want - have);
            } else {
                let mut extra = have - want;
                while extra > 0 {
                    let Some(id) = self.out.books_ref().back(b, side, best) else { break };
                    let Some((.., sz)) = self.out.books_ref().order(id) else { break };
                    let _ = self.out.books().cancel(id, extra.min(sz));
                    extra -= extra.min(sz);
                }
            }
            // Depth behind the best, one cent apart.
            for k in 1..depth {
                let p = Price(best.units() + dir * k * CENT);
                if p.units() <= 0 {
                    break;
                }
                if self.out.books_ref().front(b, side, p).is_none() {
                    for _ in 0..1 + self.rng.below(3) {
                        let lot = self.lot();
                        self.add(i, side, p, lot);
                    }
                }
            }
            // Churn: one random resting order leaves (not at the best), one arrives somewhere behind the best.
            if !self.ids[i].is_empty() {
                let k = self.rng.below(self.ids[i].len() as u64) as usize;
                let id = self.ids[i].swap_remove(k);
                if self.out.books_ref().order(id).is_some_and(|(_, s, p, _)| s == side && p != best) {
                    let _ = self.out.books().delete(id);
                }
            }
            let k = 1 + self.rng.below(depth.max(2) as u64 - 1) as i64;
            let p = Price(best.units() + dir * k * CENT);
            if p.units() > 0 {
                let lot = self.lot();
                self.add(i, side, p, lot);
            }
        }
        // Forget ids that left the book, so the pool stays the size of the book.
        if self.ids[i].len() > 8 * depth as usize {
            let books = self.out.books_ref();
            self.ids[i].retain(|&id| books.order(id).is_some());
        }
        self.out.touch(b);
    }
}
