//! The native session (JSON and binary encodings, logged in or not), frame after frame. Nothing may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_protocol::fuzzing::native_frames(data));
