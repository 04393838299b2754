//! The relay directory's answer (HTTP head, JSON array of relay URLs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_signal::nostr::fuzzing::directory(data);
});
