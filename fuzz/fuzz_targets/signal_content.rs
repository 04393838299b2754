//! The sealed signaling content decoder (base64, envelope, postcard).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_signal::nostr::fuzzing::content(data);
});
