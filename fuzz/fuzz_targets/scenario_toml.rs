//! A scenario file for `genos sim` (TOML), parsed, checked and turned into overlay settings.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    genos_cellmesh::fuzzing::scenario_toml(data);
});
