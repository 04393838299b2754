//! What Trystero peers and relays hand a genos peer in a Trystero room (see
//! `genos_trystero::fuzzing`): signaling content, SDP ciphertext, data-channel frames and
//! action chunks, with honest messages reassembled between hostile chunks. Checks that
//! nothing panics, honest messages come back whole, and reassembly stays within its bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_trystero::fuzzing::inputs(data);
});
