//! The auction journal's reader: torn tails, damage before the end, and appending after a recovery.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_feeds::fuzzing::journal(data));
