//! A fast keyed hasher for maps keyed by peer keys.
//!
//! Peer keys are public keys (uniformly random bytes), so hashing them with SipHash over all
//! 32 bytes is wasted work on the hot path (every frame looks up its origin and its link).
//! This hasher folds 8-byte words through a 64-bit mixer seeded per overlay: a peer that
//! grinds keys cannot aim them at one bucket without knowing the seed.

use std::hash::{BuildHasher, Hasher};

use crate::mix::mix64;

/// Builds [`KeyHasher`]s with one secret seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHashBuilder {
    seed: u64,
}

impl KeyHashBuilder {
    pub(crate) fn new(seed: u64) -> Self {
        Self { seed: mix64(seed) }
    }
}

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { state: self.seed }
    }
}

/// Folds written bytes 8 at a time through `mix64`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHasher {
    state: u64,
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (slot, byte) in word.iter_mut().zip(chunk) {
                *slot = *byte;
            }
            self.state = mix64(self.state ^ u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.state = mix64(self.state ^ value);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }
}

/// A map keyed by peer keys (or anything hashed as bytes and integers).
pub(crate) type KeyMap<K, V> = std::collections::HashMap<K, V, KeyHashBuilder>;

pub(crate) fn key_map<K, V>(seed: u64) -> KeyMap<K, V> {
    std::collections::HashMap::with_hasher(KeyHashBuilder::new(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_hash_alike_and_seeds_differ() {
        let a = KeyHashBuilder::new(1);
        let b = KeyHashBuilder::new(2);
        let key = [7u8; 32];
        assert_eq!(a.hash_one(key), a.hash_one(key));
        assert_ne!(a.hash_one(key), b.hash_one(key));
        assert_ne!(a.hash_one([7u8; 32]), a.hash_one([8u8; 32]));
    }
}
