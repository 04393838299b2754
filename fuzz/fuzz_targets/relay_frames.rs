//! Raw bytes from a relay's socket, read through the oversized-frame filter that sits below
//! the WebSocket parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_signal::nostr::fuzzing::relay_frames(data);
});
