//! The SignalR session (JSON and MessagePack hub protocols, stateful reconnect, long polling), frame after frame.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_protocol::fuzzing::hub_frames(data));
