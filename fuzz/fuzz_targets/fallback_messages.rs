//! What a fallback link decodes from outside: the hub's hellos, the ends' frames, the offer
//! and answer signals (`genos_transport::fuzzing::fallback_messages`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_transport::fuzzing::fallback_messages(data);
});
