//! One direction of a room link (see `genos_room::fuzzing`): honest messages sealed and cut
//! into chunks, delivered in order, changed, misplaced, or replaced by raw bytes, and any
//! plaintext sealed with the link's key; plus the signaling and overlay payload decoders.
//! Checks that nothing panics, changed or misplaced frames never open, honest messages
//! reassemble byte for byte and reassembly stays within its bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_room::fuzzing::link_frames(data);
});
