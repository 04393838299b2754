//! Everything a relay can send: relay message JSON, events, and their sealed content.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_signal::nostr::fuzzing::relay_text(data);
});
