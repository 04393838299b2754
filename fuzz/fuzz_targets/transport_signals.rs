//! A remote peer's WebRTC signals and control messages against our side of a connection
//! (`genos_transport::fuzzing::signals`: the SDP parser, description checks, candidates).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_transport::fuzzing::signals(data);
});
