//! The overlay fuzzing harness (`genos_cellmesh::fuzzing::overlay_script`) in the test suite:
//! the kept corpus (`fuzz/seeds/overlay_inputs`, minimised from fuzzing runs) and a few
//! thousand random scripts, so a regression the fuzzer would find fails CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use genos_cellmesh::fuzzing::{overlay_script, scenario_toml};

#[test]
fn the_kept_corpus_plays_without_breaking_a_rule() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/overlay_inputs");
    let mut played = 0;
    for entry in std::fs::read_dir(&dir).expect("the kept corpus") {
        let path = entry.unwrap().path();
        overlay_script(&std::fs::read(&path).unwrap());
        played += 1;
    }
    assert!(
        played >= 10,
        "only {played} corpus entries in {}",
        dir.display()
    );
}

#[test]
fn random_scripts_play_without_breaking_a_rule() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut delivered, mut dropped) = (0, 0);
    for _ in 0..3_000 {
        let len = (next() % 2_048) as usize;
        let script: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let stats = overlay_script(&script);
        delivered += stats.delivered;
        dropped += stats.dropped;
    }
    // Random scripts reach the frame path both ways: B's frames delivered, bad ones dropped.
    assert!(delivered > 100, "{delivered} delivered");
    assert!(dropped > 100, "{dropped} dropped");
}

#[test]
fn scenario_files_and_their_mutations_parse_or_fail_cleanly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read(entry.unwrap().path()).unwrap();
        scenario_toml(&text);
        // Every byte changed in turn, and the file cut at every tenth byte.
        for at in 0..text.len() {
            let mut changed = text.clone();
            changed[at] ^= 0x5a;
            scenario_toml(&changed);
            if at % 10 == 0 {
                scenario_toml(&text[..at]);
            }
        }
        files += 1;
    }
    assert!(files >= 3, "{files} scenario files");
}
