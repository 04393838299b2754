//! Fuzzing entry points (feature `fuzzing`), shared by the fuzz targets in `fuzz/` and the
//! crate's tests: the decoders of what a room reads from signaling and from links.
//!
//! [`link_frames`] plays a script against one direction of a link: honest messages sealed
//! and cut into chunks by the sender's codec, delivered in order, with a byte changed, at the
//! wrong place, or replaced by raw bytes, and any plaintext sealed with the link's key (an
//! authentic frame of any content, as a newer or hostile peer could send). Besides "no
//! panic" it checks that a changed or misplaced frame never opens, that an honest message is
//! reassembled byte for byte, and that reassembly never reserves more than its bound.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use genos_crypto::{PeerId, SealKey};

use crate::mesh::wire::{ChunkMeta, MeshPresence};
use crate::reassembly::{Pushed, Reassembler};
use crate::wire::{ChunkHeader, Frame, FrameCodec, Presence, SignalMessage};

/// Partial messages and bytes the script's reassembler holds at most.
const MAX_PARTIALS: usize = 4;
const MAX_PARTIAL_BYTES: usize = 64 << 10;
const MAX_MESSAGE: usize = 32 << 10;
/// Sealed honest frames waiting to be delivered at most.
const QUEUE: usize = 256;
/// Steps one script plays at most.
const MAX_STEPS: usize = 1_024;
/// Chunks one honest message is cut into at most (a tiny chunk size on a long message would
/// otherwise spend the run sealing thousands of one-byte frames that teach nothing new).
const MAX_CHUNKS: usize = 64;
/// Honest bytes one script seals at most, so every run stays short.
const SEAL_BUDGET: usize = 128 << 10;

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let len = len.min(self.data.len());
        let (taken, rest) = self.data.split_at(len);
        self.data = rest;
        taken
    }
}

/// What a script did, so a test can tell it reached reassembly.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ScriptStats {
    /// Honest messages reassembled (each checked byte for byte).
    pub honest_completed: u64,
    /// Changed or misplaced frames refused.
    pub refused: u64,
}

struct Script {
    stats: ScriptStats,
    sender: FrameCodec,
    receiver: FrameCodec,
    reassembler: Reassembler,
    /// Honest messages by (channel, message): their bytes.
    honest: HashMap<(String, u64), Vec<u8>>,
    /// Messages some frame of arbitrary content also touched: their bytes are anyone's.
    tainted: HashSet<(String, u64)>,
    /// Sealed honest frames and the sequence number each was sealed at.
    queue: VecDeque<(u64, Bytes)>,
    next_seq: u64,
    /// Honest bytes sealed so far (bounded by [`SEAL_BUDGET`]).
    sealed_bytes: usize,
}

impl Script {
    fn new() -> Self {
        let key = SealKey::from_bytes([7; 32]);
        let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
        Self {
            stats: ScriptStats::default(),
            sender: FrameCodec::new(key.clone(), a, b),
            receiver: FrameCodec::new(key, b, a),
            reassembler: Reassembler::new(MAX_PARTIALS, MAX_PARTIAL_BYTES, MAX_MESSAGE),
            honest: HashMap::new(),
            tainted: HashSet::new(),
            queue: VecDeque::new(),
            next_seq: 0,
            sealed_bytes: 0,
        }
    }

    /// Opens `sealed` as frame `seq` and hands a chunk to reassembly; `honest` says whether
    /// the frame came from the honest queue unchanged.
    fn receive(&mut self, seq: u64, sealed: Bytes, honest: bool) {
        let Ok(frame) = self.receiver.open(seq, sealed) else {
            return;
        };
        let Frame::Chunk(chunk) = frame else {
            return;
        };
        let key = (chunk.channel.clone(), chunk.message);
        if !honest {
            self.tainted.insert(key.clone());
        }
        if let Ok(Pushed::Complete(done)) = self.reassembler.push(chunk) {
            if let Some(original) = self.honest.get(&key) {
                if !self.tainted.contains(&key) {
                    self.stats.honest_completed += 1;
                    assert_eq!(
                        done.payload.as_ref(),
                        original.as_slice(),
                        "an honest message reassembled wrong"
                    );
                }
            }
        }
        assert!(
            self.reassembler.reserved() <= MAX_PARTIAL_BYTES,
            "reassembly reserved {} bytes",
            self.reassembler.reserved()
        );
    }

    /// Cuts an honest message into sealed chunks queued for delivery.
    fn queue_message(&mut self, reader: &mut Reader<'_>) {
        let channel = format!("ch{}", reader.byte() % 4);
        let message = u64::from(reader.byte() % 8);
        // Mostly short messages (a few chunks), some up to the message bound.
        let bound = if reader.byte() % 4 == 0 {
            MAX_MESSAGE + 1
        } else {
            512
        };
        let len = usize::from(reader.u16()) % bound;
        let chunk = usize::from(reader.u16() % 4_096)
            .max(1)
            .max(len.div_ceil(MAX_CHUNKS));
        if self.sealed_bytes + len > SEAL_BUDGET {
            return;
        }
        self.sealed_bytes += len;
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let key = (channel.clone(), message);
        // Reusing a (channel, message) pair is what a buggy sender does: not honest.
        if self.honest.insert(key.clone(), payload.clone()).is_some() {
            self.tainted.insert(key);
        }
        let total = payload.len() as u64;
        let mut offset = 0usize;
        loop {
            let end = (offset + chunk).min(payload.len());
            let header = ChunkHeader {
                channel: &channel,
                message,
                offset: offset as u64,
                total,
                meta: (offset == 0).then_some(&b"meta"[..]),
            };
            let Ok(encoded) = FrameCodec::encode_chunk_header(header) else {
                return;
            };
            let data = payload.get(offset..end).unwrap_or_default();
            if let Ok(sealed) = self.sender.seal_chunk(self.next_seq, &encoded, data) {
                if self.queue.len() >= QUEUE {
                    self.queue.pop_front();
                }
                self.queue.push_back((self.next_seq, sealed));
            }
            self.next_seq += 1;
            offset = end;
            if offset >= payload.len() {
                break;
            }
        }
    }

    fn step(&mut self, op: u8, reader: &mut Reader<'_>) {
        match op % 8 {
            0 => self.queue_message(reader),
            1 => {
                if let Some((seq, sealed)) = self.queue.pop_front() {
                    self.receive(seq, sealed, true);
                }
            }
            2 => {
                // One byte changed: the envelope must refuse it.
                if let Some((seq, sealed)) = self.queue.pop_front() {
                    let mut bytes = sealed.to_vec();
                    let at = usize::from(reader.u16()) % bytes.len().max(1);
                    let flip = reader.byte().max(1);
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= flip;
                    }
                    assert!(
                        self.receiver.open(seq, Bytes::from(bytes)).is_err(),
                        "a changed frame opened"
                    );
                    self.stats.refused += 1;
                }
            }
            3 => {
                // At another place on the link: a replay or a reordering.
                if let Some((seq, sealed)) = self.queue.pop_front() {
                    let other = seq.wrapping_add(u64::from(reader.byte()).max(1));
                    assert!(
                        self.receiver.open(other, sealed).is_err(),
                        "a frame opened at another place"
                    );
                    self.stats.refused += 1;
                }
            }
            4 => {
                // Any plaintext, sealed with the link's key: authentic, of any content.
                let len = usize::from(reader.u16() % 2_048);
                let plain = reader.bytes(len).to_vec();
                let seq = u64::from(reader.byte());
                if let Ok(sealed) = self.sender.seal_plain(seq, &plain) {
                    self.receive(seq, sealed, false);
                }
            }
            5 => {
                let len = usize::from(reader.u16() % 2_048);
                let raw = Bytes::copy_from_slice(reader.bytes(len));
                let seq = u64::from(reader.byte());
                self.receive(seq, raw.clone(), false);
                let _ = self.receiver.open_datagram(raw);
            }
            _ => {
                let len = usize::from(reader.byte());
                let raw = reader.bytes(len);
                let _ = Presence::decode(raw);
                let _ = SignalMessage::decode(raw);
                let _ = MeshPresence::decode(raw);
                let _ = ChunkMeta::decode(raw);
            }
        }
    }
}

/// Plays the script `data` describes (see the module docs); panics if a rule is broken.
pub fn link_frames(data: &[u8]) -> ScriptStats {
    let mut reader = Reader { data };
    let mut script = Script::new();
    for _ in 0..MAX_STEPS {
        if reader.data.is_empty() {
            break;
        }
        let op = reader.byte();
        script.step(op, &mut reader);
    }
    script.stats
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::PathBuf;

    use super::link_frames;

    #[test]
    fn the_kept_corpus_plays_without_breaking_a_rule() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/link_frames");
        let mut played = 0;
        for entry in std::fs::read_dir(&dir).expect("the kept corpus") {
            link_frames(&std::fs::read(entry.unwrap().path()).unwrap());
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
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut completed, mut refused) = (0, 0);
        for _ in 0..2_000 {
            let len = (next() % 512) as usize;
            let script: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let stats = link_frames(&script);
            completed += stats.honest_completed;
            refused += stats.refused;
        }
        // Random scripts reach both sides: honest messages reassembled, bad frames refused.
        assert!(completed > 50, "{completed} honest messages completed");
        assert!(refused > 50, "{refused} frames refused");
    }
}
