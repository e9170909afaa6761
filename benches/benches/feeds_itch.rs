//! ITCH replay, per source message: parsing alone, parsing plus the order book (nothing published), and the
//! whole `--speed max` replay of a file (`Replay::run`: read, parse, book, prints at once, books and ticks once
//! per millisecond) into a fresh engine with no subscriber. Also the cost of encoding one 10-level `book.*`
//! message. The input is 1,000,000 messages of the generator over 50 symbols (in memory, and for the replay
//! in a file the page cache holds).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use marquee_engine::depth::{encode_book_bin, encode_book_json};
use marquee_engine::{BookLevel, Engine, EngineConfig, Price};
use marquee_feeds::itch::{self, Reader};
use marquee_feeds::itch_gen::ItchGenerator;
use marquee_feeds::itch_replay::ItchBooks;
use marquee_feeds::market::MarketOut;
use marquee_feeds::{Replay, ReplayOptions, Speed};
use std::hint::black_box;
use std::sync::atomic::AtomicBool;

const MESSAGES: u64 = 1_000_000;

fn file() -> Vec<u8> {
    let mut g = ItchGenerator::new(2024, 50, 100_000);
    let mut f = Vec::with_capacity(40 * MESSAGES as usize);
    g.write_header(&mut f);
    g.write_messages(&mut f, MESSAGES);
    f
}

/// Applies every message of `f` to muted books: the book work alone.
fn books_only(f: &[u8]) -> u64 {
    let mut out = MarketOut::new(Engine::new(EngineConfig::default()), 10);
    out.set_muted(true);
    let mut books = ItchBooks::new(&[]);
    let mut r = Reader::new(f);
    let mut n = 0u64;
    while let Some(Ok((_, bytes))) = r.next_message() {
        let Ok(msg) = itch::parse(bytes) else { continue };
        let _ = books.apply(&msg, &mut out, 1);
        n += 1;
    }
    n
}

/// The server's replay of the file at `--speed max`, into a fresh engine.
fn replay(path: &std::path::Path) -> u64 {
    let mut o = ReplayOptions::new(path);
    o.speed = Speed::Max;
    let r = Replay::prepare(&Engine::new(EngineConfig::default()), o).unwrap();
    r.run(&AtomicBool::new(false)).unwrap().market.unwrap().messages
}

fn itch(c: &mut Criterion) {
    let f = file();
    let mut g = c.benchmark_group("feeds_itch");
    g.sample_size(10);
    g.throughput(Throughput::Elements(MESSAGES));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut r = Reader::new(&f[..]);
            let mut n = 0u64;
            while let Some(Ok((_, bytes))) = r.next_message() {
                n += itch::parse(black_box(bytes)).is_ok() as u64;
            }
            n
        })
    });
    // A fresh engine and books each round (topics and order table built from empty, as a replay starts).
    g.bench_function("parse_book", |b| b.iter_batched(|| (), |()| books_only(&f), BatchSize::PerIteration));
    let path = std::env::temp_dir().join(format!("marquee-bench-{}.itch", std::process::id()));
    std::fs::write(&path, &f).unwrap();
    g.bench_function("replay_max", |b| b.iter_batched(|| (), |()| replay(&path), BatchSize::PerIteration));
    let _ = std::fs::remove_file(&path);
    g.finish();

    let side: Vec<BookLevel> = (0..10)
        .map(|i| BookLevel { price: Price::from_cents(18722 - i), size: 100 * (i as u64 + 1), orders: 3 })
        .collect();
    let asks: Vec<BookLevel> =
        side.iter().map(|l| BookLevel { price: Price(l.price.units() + 30_000_000), ..*l }).collect();
    let mut g = c.benchmark_group("feeds_book_encode");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(2048);
    g.bench_function("book10_json", |b| {
        b.iter(|| {
            buf.clear();
            encode_book_json(
                &mut buf,
                "book.AAPL",
                1_763_000_000_000,
                black_box(42),
                1_763_000_000_123_456_789,
                &side,
                &asks,
            );
        })
    });
    g.bench_function("book10_bin", |b| {
        b.iter(|| {
            buf.clear();
            encode_book_bin(
                &mut buf,
                "book.AAPL",
                1_763_000_000_000,
                black_box(42),
                1_763_000_000_123_456_789,
                &side,
                &asks,
            );
        })
    });
    g.finish();
    buf.clear();
    encode_book_json(&mut buf, "book.AAPL", 1_763_000_000_000, 42, 1_763_000_000_123_456_789, &side, &asks);
    let json = buf.len() + r#"{"type":"#.len();
    buf.clear();
    encode_book_bin(&mut buf, "book.AAPL", 1_763_000_000_000, 42, 1_763_000_000_123_456_789, &side, &asks);
    eprintln!("bytes per 10-level book.AAPL delivery: JSON {json}, binary {}", buf.len() + 8);
}

criterion_group!(benches, itch);
criterion_main!(benches);
