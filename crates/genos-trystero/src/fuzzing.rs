//! Fuzzing entry point (feature `fuzzing`), shared by the fuzz target `trystero_inputs` in
//! `fuzz/` and the crate's tests: everything a Trystero peer or relay can hand us.
//!
//! [`inputs`] reads a script: its first byte picks the reassembly bounds, then each step is
//! a tag byte and a length-prefixed piece. Pieces go to the signaling content decoder, the
//! SDP cipher (also after encrypting them honestly, which must round-trip), the frame and
//! chunk decoders, and a reassembler that also receives honest messages cut by
//! [`chunk_message`](crate::wire::chunk_message) between hostile chunks. Besides "no panic"
//! it checks that honest messages come back whole, that the reassembler never holds more
//! partial messages than its bound, and that decoded frames survive re-encoding.

use bytes::Bytes;

use crate::crypto::SdpKey;
use crate::signal::SignalContent;
use crate::wire::{Chunk, Frame, Payload, Pushed, Reassembler, ReassemblyLimits, chunk_message};

/// Steps one script plays at most.
const MAX_STEPS: usize = 512;
/// The action of the honest messages.
const HONEST: &str = "honest";

/// Plays the script `data` describes; panics if a rule is broken.
pub fn inputs(data: &[u8]) {
    let Some((&bounds, mut rest)) = data.split_first() else {
        return;
    };
    let limits = ReassemblyLimits {
        max_message: 1 << (10 + usize::from(bounds % 8)),
        max_partials: 1 + usize::from(bounds >> 4),
    };
    let mut reassembler = Reassembler::new(limits);
    let key = SdpKey::derive("pw", "app", "room");
    let mut counter = 0u16;
    // Set once a hostile chunk claims the honest action: its messages are anyone's then.
    let mut tainted = false;
    for _ in 0..MAX_STEPS {
        let Some((&tag, after)) = rest.split_first() else {
            return;
        };
        let Some((&len, after)) = after.split_first() else {
            return;
        };
        let len = usize::from(len) * 4;
        let (piece, after) = after.split_at(len.min(after.len()));
        rest = after;
        let text = String::from_utf8_lossy(piece);
        match tag % 6 {
            0 => {
                if let Ok(content) = SignalContent::decode(&text) {
                    let again = SignalContent::decode(&content.encode());
                    assert_eq!(again.as_ref(), Ok(&content), "content did not round-trip");
                }
            }
            1 => {
                let _ = key.decrypt(&text);
                let sealed = key.encrypt(&text);
                assert_eq!(key.decrypt(&sealed).as_deref(), Ok(text.as_ref()));
            }
            2 => {
                // Trystero reads a presence byte other than 1 as "gone" and ignores what
                // follows a presence frame's token, so only the decoded value round-trips.
                if let Ok(frame) = Frame::decode(piece) {
                    let encoded = frame.encode();
                    assert_eq!(
                        Frame::decode(&encoded),
                        Ok(frame),
                        "a frame changed on re-encoding"
                    );
                }
            }
            3 => {
                if let Ok(chunk) = Chunk::decode(Bytes::copy_from_slice(piece)) {
                    tainted |= chunk.action == HONEST;
                    let _ = reassembler.push(chunk);
                }
            }
            _ => {
                // An honest message, pushed whole between whatever came before.
                let payload = if tag & 0x10 == 0 {
                    Payload::Binary(Bytes::copy_from_slice(piece))
                } else {
                    Payload::Text(text.into_owned())
                };
                let meta = (tag & 0x20 != 0).then(|| serde_json::json!({"n": len}));
                counter = counter.wrapping_add(1);
                let Ok(chunks) = chunk_message(HONEST, counter, payload.clone(), meta.as_ref())
                else {
                    continue;
                };
                let mut done = None;
                for chunk in chunks {
                    let decoded = Chunk::decode(chunk);
                    assert!(decoded.is_ok(), "an honest chunk did not decode");
                    let Ok(chunk) = decoded else {
                        continue;
                    };
                    if let Ok(Pushed::Complete(message)) = reassembler.push(chunk) {
                        done = Some(message);
                    }
                }
                let size = match &payload {
                    Payload::Binary(bytes) => bytes.len(),
                    Payload::Text(text) => text.len(),
                    _ => 0,
                } + meta.as_ref().map_or(0, |m| m.to_string().len());
                if size <= limits.max_message && !tainted {
                    assert!(
                        done.is_some(),
                        "an honest message within the bounds never completed"
                    );
                    let Some(message) = done else {
                        continue;
                    };
                    assert_eq!(message.action, HONEST);
                    assert_eq!(message.metadata, meta, "honest metadata came back wrong");
                    assert_eq!(
                        message.payload, payload,
                        "an honest message came back wrong"
                    );
                }
            }
        }
        assert!(reassembler.partials() <= limits.max_partials);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;

    use rand::{Rng, SeedableRng};

    #[test]
    fn the_kept_inputs_play_without_breaking_a_rule() {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/trystero_inputs");
        let mut played = 0;
        for entry in std::fs::read_dir(&dir).expect("the kept inputs") {
            super::inputs(&std::fs::read(entry.unwrap().path()).unwrap());
            played += 1;
        }
        assert!(
            played >= 10,
            "only {played} kept inputs in {}",
            dir.display()
        );
    }

    #[test]
    fn random_scripts_keep_the_rules() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let len = rng.random_range(0..2_048);
            let script: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            super::inputs(&script);
        }
    }
}
