//! The MessagePack decoder and its translation of client hub messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_protocol::fuzzing::msgpack(data));
