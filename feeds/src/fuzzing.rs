//! The harnesses of the fuzz targets (`fuzz/fuzz_targets/`), here so that the committed corpora also run as
//! plain tests on stable Rust (`tests/feeds_fuzz_corpus.rs`). Each takes arbitrary bytes and must not panic;
//! none asserts anything else, and none is used by the server.

use crate::itch::{self, Reader};
use crate::itch_replay::ItchBooks;
use crate::market::MarketOut;
use crate::{Replay, ReplayOptions, Speed};
use marquee_engine::{Engine, EngineConfig, RingConfig};
use std::io::Read;
use std::sync::atomic::AtomicBool;

/// Serves a byte slice in chunks of a fixed size, as a file read in pieces would.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn small_engine() -> std::sync::Arc<Engine> {
    let ring = RingConfig { capacity: 8, slot_bytes: 512 };
    Engine::new(EngineConfig { ring, reliable_ring: RingConfig { capacity: 8, slot_bytes: 1536 }, epoch: 1 })
}

/// ITCH: the first byte picks the read chunk size (1 to 256), the rest is the file.
pub fn itch(data: &[u8]) {
    let Some((&first, file)) = data.split_first() else { return };
    let mut reader = Reader::new(Chunked { data: file, chunk: usize::from(first) + 1 });
    let mut out = MarketOut::new(small_engine(), 5);
    let mut books = ItchBooks::new(&[]);
    std::hint::black_box(ItchBooks::warm(file, out.books_ref()));
    while let Some(next) = reader.next_message() {
        let Ok((_, bytes)) = next else { continue };
        if let Ok(msg) = itch::parse(bytes) {
            let _ = books.apply(&msg, &mut out, 1);
        }
    }
    let _ = out.flush(1);
}

/// A whole replay of the bytes as a file: format detection, then CSV, ITCH or DBN (plain or zstd).
pub fn dbn(data: &[u8]) {
    let path =
        std::env::temp_dir().join(format!("marquee-fuzz-{}-{:?}.bin", std::process::id(), std::thread::current().id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let mut opts = ReplayOptions::new(&path);
    opts.speed = Speed::Max;
    opts.depth = 5;
    if let Ok(r) = Replay::prepare(&small_engine(), opts) {
        let _ = r.run(&AtomicBool::new(false));
    }
    let _ = std::fs::remove_file(&path);
}

/// The auction journal's reader over a file holding `data`: a torn tail is cut, damage before the end is refused,
/// and a journal that opened takes an append.
pub fn journal(data: &[u8]) {
    let path = std::env::temp_dir().join(format!(
        "marquee-fuzz-journal-{}-{:?}.log",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok((mut j, recovered)) = crate::auction::journal::Journal::open(&path) {
        assert!(recovered.dropped_bytes as usize <= data.len());
        j.append(b"{}");
        let _ = j.commit();
    }
    let _ = std::fs::remove_file(&path);
}
