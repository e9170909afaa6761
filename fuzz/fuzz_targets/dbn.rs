//! Databento DBN: a whole replay (format detection, metadata, records of any schema, plain or zstd) of the
//! input as a file. Nothing may panic, whatever the bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_feeds::fuzzing::dbn(data));
