//! The `marquee.bin` client decoders (every record kind, books and trades included). Nothing may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_protocol::decode::fuzz_bin_batch(data));
