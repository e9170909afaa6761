//! Order books built from order-level data (ITCH, DBN `mbo`, the synthetic market's order flow).
//!
//! [`Books`] holds every symbol's book and one table of resting orders keyed by order id, since order-level feeds
//! name an order by id alone after its add (an ITCH execute or delete carries no symbol). It does no IO and knows
//! no wire format: sources call `add`/`execute`/`cancel`/`delete`/`replace`, publishers read [`Books::top`].
//!
//! ## Layout, and why
//! This is the replay hot path (one call per source message), so it is hand-written rather than a `BTreeMap`
//! of levels, and measured (`benches/benches/feeds_book.rs`):
//! - a side is a `Vec` of levels sorted so that the **best level is last**: activity clusters at the top of the
//!   book, so the binary search ends near the end and inserts and removals there move few elements;
//! - orders live in a slab (`Vec` plus free list) and each level threads its orders in arrival order through
//!   `prev`/`next` indices: price-time priority with O(1) removal anywhere in the queue;
//! - the id table indexes pages of consecutive ids directly ([`crate::order_ids`]): ITCH ids are dense and
//!   recent ones are the busy ones, so lookups stay in a few cache lines; sparse 64-bit ids fall back to an
//!   Fx-hashed map (ids are feed integers, not keys an attacker on a network path chooses).
//!
//! ## Edges
//! - An add for an id already resting is refused ([`BookError::DuplicateOrder`]); a reference to an unknown id
//!   is refused ([`BookError::UnknownOrder`]), e.g. a file that starts after the order was added. Neither
//!   changes any book.
//! - Executing or cancelling more than an order holds takes what it holds and removes it.
//! - Prices are any `i64` (crossed or locked books are kept as the feed says; the book does not match orders).
//!
//! ```
//! use marquee_feeds::book::{Books, BookSide};
//! use marquee_engine::{BookLevel, Price};
//! let mut books = Books::new();
//! let aapl = books.add_book();
//! books.add(aapl, 1, BookSide::Bid, Price::from_cents(18722), 300).unwrap();
//! books.add(aapl, 2, BookSide::Bid, Price::from_cents(18722), 100).unwrap();
//! books.add(aapl, 3, BookSide::Ask, Price::from_cents(18724), 200).unwrap();
//! books.execute(1, 300).unwrap(); // order 1 is filled and leaves the queue
//! let (mut bids, mut asks) = (Vec::new(), Vec::new());
//! books.top(aapl, 10, &mut bids, &mut asks);
//! assert_eq!(bids, [BookLevel { price: Price::from_cents(18722), size: 100, orders: 1 }]);
//! assert_eq!(asks[0].size, 200);
//! ```

use crate::order_ids::OrderIds;
use marquee_engine::{BookLevel, Price};
use std::fmt;

/// The side an order rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BookSide {
    /// A buy order.
    Bid,
    /// A sell order.
    Ask,
}

/// A book operation that referred to orders wrongly. The books are unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BookError {
    /// No resting order has this id.
    UnknownOrder(u64),
    /// An order with this id already rests.
    DuplicateOrder(u64),
    /// No book has this index.
    UnknownBook(u32),
}

impl fmt::Display for BookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BookError::UnknownOrder(id) => write!(f, "unknown order {id}"),
            BookError::DuplicateOrder(id) => write!(f, "order {id} already rests"),
            BookError::UnknownBook(b) => write!(f, "unknown book {b}"),
        }
    }
}

impl std::error::Error for BookError {}

/// What an execution took: the resting order's book, side and price, and the size taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The book (symbol) index.
    pub book: u32,
    /// The side the resting order was on.
    pub side: BookSide,
    /// Its price.
    pub price: Price,
    /// Shares taken (at most what rested).
    pub size: u64,
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Order {
    id: u64,
    book: u32,
    side: BookSide,
    price: i64,
    size: u64,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct Level {
    /// The price for bids, its negation for asks: both sides sort ascending by key with the best last.
    key: i64,
    size: u64,
    orders: u32,
    head: u32,
    tail: u32,
}

#[derive(Clone, Debug, Default)]
struct Book {
    bids: Vec<Level>,
    asks: Vec<Level>,
}

impl Book {
    fn side(&mut self, side: BookSide) -> &mut Vec<Level> {
        match side {
            BookSide::Bid => &mut self.bids,
            BookSide::Ask => &mut self.asks,
        }
    }
}

fn key(side: BookSide, price: i64) -> i64 {
    match side {
        BookSide::Bid => price,
        BookSide::Ask => price.wrapping_neg(),
    }
}

/// Every symbol's order book and the table of resting orders.
#[derive(Clone, Debug, Default)]
pub struct Books {
    books: Vec<Book>,
    slab: Vec<Order>,
    free: Vec<u32>,
    ids: OrderIds,
}

impl Books {
    /// No books, no orders.
    pub fn new() -> Books {
        Books::default()
    }

    /// Adds an empty book and returns its index (0, 1, 2, ... in call order).
    pub fn add_book(&mut self) -> u32 {
        self.books.push(Book::default());
        (self.books.len() - 1) as u32
    }

    /// Books so far.
    pub fn n_books(&self) -> usize {
        self.books.len()
    }

    /// Resting orders over all books.
    pub fn n_orders(&self) -> usize {
        self.ids.len()
    }

    /// Rests a new order at the back of its price level's queue.
    pub fn add(&mut self, book: u32, id: u64, side: BookSide, price: Price, size: u64) -> Result<(), BookError> {
        if book as usize >= self.books.len() {
            return Err(BookError::UnknownBook(book));
        }
        let slot = self.free.last().copied().unwrap_or(self.slab.len() as u32);
        if !self.ids.insert(id, slot) {
            return Err(BookError::DuplicateOrder(id));
        }
        let order = Order { id, book, side, price: price.units(), size, prev: NIL, next: NIL };
        if self.free.pop().is_some() {
            self.slab[slot as usize] = order;
        } else {
            self.slab.push(order);
        }
        let k = key(side, price.units());
        let levels = self.books[book as usize].side(side);
        let i = match levels.binary_search_by(|l| l.key.cmp(&k)) {
            Ok(i) => i,
            Err(i) => {
                levels.insert(i, Level { key: k, size: 0, orders: 0, head: NIL, tail: NIL });
                i
            }
        };
        let level = &mut levels[i];
        level.size += size;
        level.orders += 1;
        let tail = level.tail;
        level.tail = slot;
        if tail == NIL {
            level.head = slot;
        } else {
            self.slab[tail as usize].next = slot;
            self.slab[slot as usize].prev = tail;
        }
        Ok(())
    }

    /// Takes up to `size` from a resting order (an execution); the order leaves the book when nothing is left.
    pub fn execute(&mut self, id: u64, size: u64) -> Result<Fill, BookError> {
        let (o, taken) = self.reduce(id, size)?;
        Ok(Fill { book: o.book, side: o.side, price: Price(o.price), size: taken })
    }

    /// Cancels up to `size` of a resting order (a partial cancel); it leaves the book when nothing is left.
    /// Returns its book.
    pub fn cancel(&mut self, id: u64, size: u64) -> Result<u32, BookError> {
        self.reduce(id, size).map(|(o, _)| o.book)
    }

    /// Removes a resting order whole; returns its book.
    pub fn delete(&mut self, id: u64) -> Result<u32, BookError> {
        self.reduce(id, u64::MAX).map(|(o, _)| o.book)
    }

    /// Replaces an order: the old one leaves, a new one with `new_id` rests on the same side of the same book at
    /// the back of its level's queue (ITCH `U`: the replacement loses its time priority). Returns the book.
    pub fn replace(&mut self, old_id: u64, new_id: u64, price: Price, size: u64) -> Result<u32, BookError> {
        if new_id != old_id && self.ids.get(new_id).is_some() {
            return Err(BookError::DuplicateOrder(new_id));
        }
        let (o, _) = self.reduce(old_id, u64::MAX)?;
        self.add(o.book, new_id, o.side, price, size)?;
        Ok(o.book)
    }

    /// Changes an order's price and size in place of a cancel and add (DBN `Modify`): it keeps its place in the
    /// queue only when the price is the same and the size did not grow, as exchanges do.
    pub fn modify(&mut self, id: u64, price: Price, size: u64) -> Result<u32, BookError> {
        let slot = self.ids.get(id).ok_or(BookError::UnknownOrder(id))?;
        let o = self.slab[slot as usize];
        if o.price == price.units() && size <= o.size && size > 0 {
            self.reduce(id, o.size - size)?;
            return Ok(o.book);
        }
        self.reduce(id, u64::MAX)?;
        if size > 0 {
            self.add(o.book, id, o.side, price, size)?;
        }
        Ok(o.book)
    }

    /// Removes every order of one book.
    pub fn clear(&mut self, book: u32) {
        let Some(b) = self.books.get_mut(book as usize) else { return };
        let levels: Vec<Level> = b.bids.drain(..).chain(b.asks.drain(..)).collect();
        for l in levels {
            let mut at = l.head;
            while at != NIL {
                let o = self.slab[at as usize];
                self.ids.remove(o.id);
                self.free.push(at);
                at = o.next;
            }
        }
    }

    fn reduce(&mut self, id: u64, size: u64) -> Result<(Order, u64), BookError> {
        let slot = self.ids.get(id).ok_or(BookError::UnknownOrder(id))?;
        let o = self.slab[slot as usize];
        let taken = size.min(o.size);
        let k = key(o.side, o.price);
        let levels = self.books[o.book as usize].side(o.side);
        // The level exists while the order rests in it; the search starts from the best end, where most
        // activity is, and falls back to a binary search.
        let i = match levels.iter().rev().take(4).position(|l| l.key == k) {
            Some(from_end) => levels.len() - 1 - from_end,
            None => levels.binary_search_by(|l| l.key.cmp(&k)).map_err(|_| BookError::UnknownOrder(id))?,
        };
        let level = &mut levels[i];
        level.size -= taken;
        if taken < o.size {
            self.slab[slot as usize].size -= taken;
            return Ok((o, taken));
        }
        // Unlink the order from its level's queue.
        level.orders -= 1;
        if o.prev == NIL {
            level.head = o.next;
        } else {
            self.slab[o.prev as usize].next = o.next;
        }
        if o.next == NIL {
            level.tail = o.prev;
        } else {
            self.slab[o.next as usize].prev = o.prev;
        }
        if level.orders == 0 {
            levels.remove(i);
        }
        self.ids.remove(id);
        self.free.push(slot);
        Ok((o, taken))
    }

    /// Writes the best `depth` levels of each side of `book`, best first, into `bids` and `asks` (cleared first).
    pub fn top(&self, book: u32, depth: usize, bids: &mut Vec<BookLevel>, asks: &mut Vec<BookLevel>) {
        bids.clear();
        asks.clear();
        let Some(b) = self.books.get(book as usize) else { return };
        for (levels, out, side) in [(&b.bids, bids, BookSide::Bid), (&b.asks, asks, BookSide::Ask)] {
            out.extend(levels.iter().rev().take(depth).map(|l| BookLevel {
                price: Price(key(side, l.key)),
                size: l.size,
                orders: l.orders,
            }));
        }
    }

    /// The best level of one side, if any.
    pub fn best(&self, book: u32, side: BookSide) -> Option<BookLevel> {
        let b = self.books.get(book as usize)?;
        let l = match side {
            BookSide::Bid => b.bids.last()?,
            BookSide::Ask => b.asks.last()?,
        };
        Some(BookLevel { price: Price(key(side, l.key)), size: l.size, orders: l.orders })
    }

    /// Reads order `id`'s slab entry (its size; 0 when the order is unknown), for a caller that wants it in
    /// cache before the message naming it is applied: see `ItchBooks::warm`.
    pub fn peek_size(&self, id: u64) -> u64 {
        self.ids.get(id).map_or(0, |slot| self.slab[slot as usize].size)
    }

    /// The first order (next to trade) at one price level.
    pub fn front(&self, book: u32, side: BookSide, price: Price) -> Option<u64> {
        let l = self.level(book, side, price)?;
        Some(self.slab[l.head as usize].id)
    }

    /// The last order (newest) at one price level.
    pub fn back(&self, book: u32, side: BookSide, price: Price) -> Option<u64> {
        let l = self.level(book, side, price)?;
        Some(self.slab[l.tail as usize].id)
    }

    fn level(&self, book: u32, side: BookSide, price: Price) -> Option<&Level> {
        let b = self.books.get(book as usize)?;
        let levels = match side {
            BookSide::Bid => &b.bids,
            BookSide::Ask => &b.asks,
        };
        let k = key(side, price.units());
        levels.binary_search_by(|l| l.key.cmp(&k)).ok().map(|i| &levels[i])
    }

    /// The ids resting at one price level, in time priority (first is next to trade). Empty when no level.
    pub fn queue(&self, book: u32, side: BookSide, price: Price) -> Vec<u64> {
        let Some(level) = self.level(book, side, price) else { return Vec::new() };
        let mut out = Vec::new();
        let mut at = level.head;
        while at != NIL {
            out.push(self.slab[at as usize].id);
            at = self.slab[at as usize].next;
        }
        out
    }

    /// An order's book, side, price and remaining size.
    pub fn order(&self, id: u64) -> Option<(u32, BookSide, Price, u64)> {
        let o = self.slab[self.ids.get(id)? as usize];
        Some((o.book, o.side, Price(o.price), o.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(c: i64) -> Price {
        Price::from_cents(c)
    }

    #[test]
    fn book_levels_sort_best_first_and_queues_keep_time_priority() {
        let mut b = Books::new();
        let x = b.add_book();
        for (id, side, c, s) in [
            (1, BookSide::Bid, 100, 10),
            (2, BookSide::Bid, 102, 20),
            (3, BookSide::Bid, 101, 30),
            (4, BookSide::Bid, 102, 5),
            (5, BookSide::Ask, 105, 7),
            (6, BookSide::Ask, 103, 8),
        ] {
            b.add(x, id, side, p(c), s).unwrap();
        }
        let (mut bids, mut asks) = (Vec::new(), Vec::new());
        b.top(x, 2, &mut bids, &mut asks);
        assert_eq!(
            bids.iter().map(|l| (l.price, l.size, l.orders)).collect::<Vec<_>>(),
            [(p(102), 25, 2), (p(101), 30, 1)]
        );
        assert_eq!(asks.iter().map(|l| l.price).collect::<Vec<_>>(), [p(103), p(105)]);
        assert_eq!(b.queue(x, BookSide::Bid, p(102)), [2, 4]);
        b.replace(2, 9, p(102), 20).unwrap();
        assert_eq!(b.queue(x, BookSide::Bid, p(102)), [4, 9], "a replaced order goes to the back");
        assert_eq!(b.add(x, 4, BookSide::Ask, p(1), 1), Err(BookError::DuplicateOrder(4)));
        assert_eq!(b.execute(77, 1), Err(BookError::UnknownOrder(77)));
        b.clear(x);
        assert_eq!((b.n_orders(), b.best(x, BookSide::Bid)), (0, None));
    }
}
