//! Publishing market data: per symbol the `ticks.*` (L1), `book.*` (top N levels) and `trades.*` (prints) topics,
//! fed by any source (ITCH, DBN, the synthetic market's order flow).
//!
//! A source calls [`MarketOut::symbol`] once per symbol (topics are created then, so a file's symbols appear as
//! the file names them), changes books through [`MarketOut::books`] and marks them with [`MarketOut::touch`],
//! or hands over ready-made levels with [`MarketOut::set_levels`] (MBP data), reports prints with
//! [`MarketOut::trade`], and calls [`MarketOut::flush`] whenever the messages due together have been applied.
//!
//! ## What goes out, and when
//! - A trade is published at once, one message per print, in source order.
//! - A book and the L1 tick are published at `flush`, once per touched symbol, with the state after every
//!   message applied since the last flush: a book is a state, not a delta, so the states in between (which no
//!   reader could tell apart from a fast burst) are never encoded. That is what keeps `--speed max` replay cost
//!   per *source message* near the cost of the book update itself.
//! - A tick goes out only when the L1 view changed (best bid/ask price or size, or a new print). Its `price` and
//!   `size` are the last print's; before the first print of a symbol, the best bid (else ask) with size 0.

use crate::book::{BookSide, Books};
use marquee_engine::{
    BookLevel, CreateTopicError, Engine, Price, PublishError, Tick, TopicWriter, Trade, book_topic, tick_topic,
    trades_topic,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Book levels per side when nothing else is configured.
pub const DEFAULT_DEPTH: usize = 10;

/// Why market data could not be published.
#[derive(Debug)]
#[non_exhaustive]
pub enum MarketError {
    /// A symbol's topic could not be created (it exists: another source owns it, or the name is invalid).
    Topic { topic: String, error: CreateTopicError },
    /// The engine refused a message.
    Publish { topic: String, error: PublishError },
}

impl fmt::Display for MarketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarketError::Topic { topic, error } => write!(f, "{topic}: {error}"),
            MarketError::Publish { topic, error } => write!(f, "{topic}: {error}"),
        }
    }
}

impl std::error::Error for MarketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MarketError::Topic { error, .. } => Some(error),
            MarketError::Publish { error, .. } => Some(error),
        }
    }
}

/// Messages published so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarketCounts {
    /// `ticks.*` messages.
    pub ticks: u64,
    /// `book.*` messages.
    pub books: u64,
    /// `trades.*` messages.
    pub trades: u64,
}

#[derive(Debug)]
struct SymbolOut {
    name: String,
    ticks: Option<TopicWriter>,
    book: TopicWriter,
    trades: TopicWriter,
    last_trade: Option<(Price, u64)>,
    last_tick: Option<Tick>,
    /// Levels handed over by an MBP source; `None` for symbols whose book is built in [`Books`].
    levels: Option<(Vec<BookLevel>, Vec<BookLevel>)>,
    /// A print since the last flush: its tick goes out even if price and size repeat the previous print.
    new_print: bool,
    /// The book changed since the last flush.
    book_dirty: bool,
    /// In `MarketOut::dirty`.
    dirty: bool,
}

/// The publishing side of a market-data source: topics, books and what changed since the last flush.
#[derive(Debug)]
pub struct MarketOut {
    engine: Arc<Engine>,
    depth: usize,
    with_ticks: bool,
    books: Books,
    symbols: Vec<SymbolOut>,
    by_name: HashMap<String, u32>,
    dirty: Vec<u32>,
    bids: Vec<BookLevel>,
    asks: Vec<BookLevel>,
    counts: MarketCounts,
    /// Apply without publishing (a replay's messages before `--start`): books change, nothing goes out.
    muted: bool,
}

impl MarketOut {
    /// Publishes into `engine`, books of `depth` levels per side (1 to [`marquee_engine::MAX_DEPTH`]).
    pub fn new(engine: Arc<Engine>, depth: usize) -> MarketOut {
        MarketOut {
            engine,
            depth: depth.clamp(1, marquee_engine::MAX_DEPTH),
            with_ticks: true,
            books: Books::new(),
            symbols: Vec::new(),
            by_name: HashMap::new(),
            dirty: Vec::new(),
            bids: Vec::new(),
            asks: Vec::new(),
            counts: MarketCounts::default(),
            muted: false,
        }
    }

    /// Leaves `ticks.*` to someone else (the synthetic market publishes its own quotes): only books and trades.
    pub fn without_ticks(mut self) -> MarketOut {
        self.with_ticks = false;
        self
    }

    /// Levels per side of every published book.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The index of `symbol`, creating its topics (and its book) the first time it is named.
    pub fn symbol(&mut self, symbol: &str) -> Result<u32, MarketError> {
        if let Some(&i) = self.by_name.get(symbol) {
            return Ok(i);
        }
        let create = |topic: String, book: bool| {
            let r =
                if book { self.engine.create_book_topic(&topic, self.depth) } else { self.engine.create_topic(&topic) };
            r.map_err(|error| MarketError::Topic { topic, error })
        };
        let ticks = if self.with_ticks { Some(create(tick_topic(symbol), false)?) } else { None };
        let book = create(book_topic(symbol), true)?;
        let trades = create(trades_topic(symbol), false)?;
        let i = self.books.add_book();
        debug_assert_eq!(i as usize, self.symbols.len());
        self.symbols.push(SymbolOut {
            name: symbol.to_owned(),
            ticks,
            book,
            trades,
            last_trade: None,
            last_tick: None,
            levels: None,
            new_print: false,
            book_dirty: false,
            dirty: false,
        });
        self.by_name.insert(symbol.to_owned(), i);
        Ok(i)
    }

    /// The symbol at index `i`.
    pub fn symbol_name(&self, i: u32) -> &str {
        &self.symbols[i as usize].name
    }

    /// Symbols so far, in the order they were first named.
    pub fn n_symbols(&self) -> usize {
        self.symbols.len()
    }

    /// The order books (book index = symbol index). Call [`MarketOut::touch`] for each book changed.
    pub fn books(&mut self) -> &mut Books {
        &mut self.books
    }

    /// The order books, read-only.
    pub fn books_ref(&self) -> &Books {
        &self.books
    }

    /// Marks symbol `i`'s book changed: the book (and the tick, when L1 moved) go out at the next flush.
    pub fn touch(&mut self, i: u32) {
        self.symbols[i as usize].book_dirty = true;
        self.enlist(i);
    }

    fn enlist(&mut self, i: u32) {
        let s = &mut self.symbols[i as usize];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Sets symbol `i`'s last price and size without a print (a bar's close and volume, from sources that have
    /// no trades): its tick goes out at the next flush.
    pub fn set_last(&mut self, i: u32, price: Price, size: u64) {
        let s = &mut self.symbols[i as usize];
        s.last_trade = Some((price, size));
        s.new_print = true;
        self.enlist(i);
    }

    /// Replaces symbol `i`'s levels with ready-made ones (MBP data; best first, at most [`MarketOut::depth`]
    /// kept) and marks it changed. From then on its book is these levels, not the order book.
    pub fn set_levels(&mut self, i: u32, bids: &[BookLevel], asks: &[BookLevel]) {
        let depth = self.depth;
        let s = &mut self.symbols[i as usize];
        let (b, a) = s.levels.get_or_insert_with(Default::default);
        b.clear();
        b.extend_from_slice(&bids[..bids.len().min(depth)]);
        a.clear();
        a.extend_from_slice(&asks[..asks.len().min(depth)]);
        self.touch(i);
    }

    /// The engine published into (sources create topics of their own there, e.g. `bars.*`).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// While muted, prints are not published and flushes publish nothing; what changed is still marked, so
    /// the first flush after unmuting publishes the state reached.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Publishes one trade print of symbol `i` now; its tick follows at the next flush.
    pub fn trade(&mut self, i: u32, trade: &Trade, ts: i64) -> Result<(), MarketError> {
        let s = &mut self.symbols[i as usize];
        if !self.muted {
            s.trades.publish_trade(trade, ts).map_err(|error| publish_error(&s.trades, error))?;
            self.counts.trades += 1;
        }
        s.last_trade = Some((trade.price, trade.size));
        s.new_print = true;
        self.enlist(i);
        Ok(())
    }

    /// Forgets every symbol's resting orders and ready-made levels (a looped replay starts over) and marks
    /// every book changed.
    pub fn reset_books(&mut self) {
        for i in 0..self.symbols.len() as u32 {
            self.books.clear(i);
            self.symbols[i as usize].levels = None;
            self.touch(i);
        }
    }

    /// Publishes the book and, when L1 changed, the tick of every symbol touched since the last flush.
    pub fn flush(&mut self, ts: i64) -> Result<(), MarketError> {
        if self.muted {
            return Ok(());
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let s = &mut self.symbols[i as usize];
            s.dirty = false;
            // Only the best level is needed for the tick when the book itself did not change.
            let depth = if s.book_dirty { self.depth } else { 1 };
            match &s.levels {
                Some((b, a)) => {
                    self.bids.clear();
                    self.bids.extend_from_slice(&b[..b.len().min(depth)]);
                    self.asks.clear();
                    self.asks.extend_from_slice(&a[..a.len().min(depth)]);
                }
                None => self.books.top(i, depth, &mut self.bids, &mut self.asks),
            }
            if std::mem::take(&mut s.book_dirty) {
                s.book.publish_book(&self.bids, &self.asks, ts).map_err(|error| publish_error(&s.book, error))?;
                self.counts.books += 1;
            }
            let Some(w) = s.ticks.as_mut() else { continue };
            let (bid, ask) = (self.bids.first(), self.asks.first());
            let Some((price, size)) = s.last_trade.or_else(|| bid.or(ask).map(|l| (l.price, 0))) else { continue };
            let tick = Tick {
                price,
                size,
                bid: bid.map(|l| l.price),
                ask: ask.map(|l| l.price),
                bid_size: bid.map(|l| l.size),
                ask_size: ask.map(|l| l.size),
            };
            let printed = std::mem::take(&mut s.new_print);
            if printed || s.last_tick != Some(tick) {
                w.publish_tick(&tick, ts).map_err(|error| publish_error(w, error))?;
                s.last_tick = Some(tick);
                self.counts.ticks += 1;
            }
        }
        dirty.clear();
        self.dirty = dirty;
        Ok(())
    }

    /// Messages published so far.
    pub fn counts(&self) -> MarketCounts {
        self.counts
    }

    /// The best price of one side of symbol `i`'s order book.
    pub fn best(&self, i: u32, side: BookSide) -> Option<BookLevel> {
        self.books.best(i, side)
    }
}

fn publish_error(w: &TopicWriter, error: PublishError) -> MarketError {
    MarketError::Publish { topic: w.topic().name().to_owned(), error }
}
