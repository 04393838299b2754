//! A script of overlay inputs (see `genos_cellmesh::fuzzing`): frames, rosters, digests and
//! pulls of an honest peer delivered as they are, changed or cut short, raw bytes, link
//! changes, announces and goodbyes, time passing. Checks that nothing panics, a changed
//! frame is never delivered and nobody is impersonated.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    genos_cellmesh::fuzzing::overlay_script(data);
});
