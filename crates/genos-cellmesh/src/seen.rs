//! Which frames were already accepted: a sliding window of sequence numbers per origin.

use std::time::Instant;

use crate::PeerKey;
use crate::keyhash::{KeyMap, key_map};

/// Sequence numbers remembered below an origin's highest one.
const WINDOW: u64 = 64;

/// Why a frame id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Accepted before.
    Duplicate,
    /// Older than the window: cannot tell, so refused (a replay could hide there).
    TooOld,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    highest: u64,
    /// Bit `i` set: `highest - i` was accepted.
    mask: u64,
    last_used: Instant,
}

/// Bounded set of accepted (origin, seq) pairs.
#[derive(Debug)]
pub(crate) struct SeenFrames {
    windows: KeyMap<PeerKey, Window>,
    capacity: usize,
}

impl SeenFrames {
    pub(crate) fn new(capacity: usize, hash_seed: u64) -> Self {
        Self {
            windows: key_map(hash_seed),
            capacity: capacity.max(1),
        }
    }

    /// Whether `(origin, seq)` would be new. Checked before the (costly) signature check;
    /// only [`Self::insert`] after a good signature changes anything, so a forged frame
    /// cannot shadow the real one.
    pub(crate) fn check(&self, origin: &PeerKey, seq: u64) -> Result<(), Seen> {
        let Some(window) = self.windows.get(origin) else {
            return Ok(());
        };
        if seq > window.highest {
            return Ok(());
        }
        let age = window.highest - seq;
        if age >= WINDOW {
            return Err(Seen::TooOld);
        }
        if window.mask & (1 << age) != 0 {
            Err(Seen::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `(origin, seq)` as accepted. Call after [`Self::check`] said it is new.
    pub(crate) fn insert(&mut self, origin: &PeerKey, seq: u64, now: Instant) {
        if !self.windows.contains_key(origin) && self.windows.len() >= self.capacity {
            self.evict_least_recent();
        }
        let window = self.windows.entry(*origin).or_insert(Window {
            highest: seq,
            mask: 0,
            last_used: now,
        });
        window.last_used = now;
        if seq > window.highest {
            let shift = seq - window.highest;
            window.mask = if shift >= WINDOW {
                0
            } else {
                window.mask << shift
            };
            window.highest = seq;
        }
        let age = window.highest - seq;
        if age < WINDOW {
            window.mask |= 1 << age;
        }
    }

    fn evict_least_recent(&mut self) {
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(_, window)| window.last_used)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.windows.remove(&key);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_ids_are_refused() {
        let now = Instant::now();
        let mut seen = SeenFrames::new(2, 0);
        let a = [1; 32];
        assert_eq!(seen.check(&a, 10), Ok(()));
        seen.insert(&a, 10, now);
        assert_eq!(seen.check(&a, 10), Err(Seen::Duplicate));
        assert_eq!(seen.check(&a, 9), Ok(()));
        seen.insert(&a, 100, now);
        assert_eq!(seen.check(&a, 10), Err(Seen::TooOld));
        assert_eq!(seen.check(&a, 99), Ok(()));
        assert_eq!(seen.check(&a, 100), Err(Seen::Duplicate));
    }

    #[test]
    fn the_least_recent_origin_is_forgotten_at_the_bound() {
        let start = Instant::now();
        let mut seen = SeenFrames::new(2, 0);
        seen.insert(&[1; 32], 1, start);
        seen.insert(&[2; 32], 1, start + std::time::Duration::from_secs(1));
        seen.insert(&[3; 32], 1, start + std::time::Duration::from_secs(2));
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.check(&[1; 32], 1), Ok(()));
        assert_eq!(seen.check(&[2; 32], 1), Err(Seen::Duplicate));
    }
}
