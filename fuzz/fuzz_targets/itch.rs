//! ITCH 5.0: the file reader (over input served in chunks of the size the first byte picks), the parser, and
//! the books and prints built from whatever parses. Nothing may panic, whatever the bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_feeds::fuzzing::itch(data));
