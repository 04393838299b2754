//! Which frames were already accepted: a sliding window of sequence numbers per origin.
//!
//! Windows are keyed by the origin's tag (the first 8 bytes of its key, what digests and
//! pulls name a broadcast by), not the whole key: a peer hears from thousands of origins,
//! and a 32-byte key per window, with a second map from tags back to keys for the repair
//! path, was most of a 10,000-peer run's memory after its broadcasts. Two origins share a
//! window only if their keys share 64 leading bits, which takes about 2^64 key
//! generations to aim at one victim (and then costs it frames, never forges one: every
//! frame is still checked against its full key's signature).

use std::time::Instant;

use crate::PeerKey;
use crate::keyhash::{KeyMap, key_map};
use crate::wire::origin_tag;

/// Why a frame id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Accepted before.
    Duplicate,
    /// Older than the window: cannot tell, so refused (a replay could hide there).
    TooOld,
}

/// One origin's window: a ring of bits, bit `seq % len` for each of the last `len`
/// sequence numbers up to `highest`. The first word is kept here; a wider window's other
/// words are in [`SeenFrames`]'s `rest` (at the default width, 64, a window is 24 bytes
/// and a frame's check costs one lookup).
#[derive(Debug, Clone)]
struct Window {
    highest: u64,
    first: u64,
    /// When it was last used: nanoseconds since the set's first record (8 bytes, not an
    /// `Instant`'s 16).
    last_used: u64,
}

/// A window with its words beyond the first (`rest`, empty at the default width).
struct Bits<'a> {
    window: &'a mut Window,
    rest: &'a mut [u64],
}

fn ring_len(rest: &[u64]) -> u64 {
    (rest.len() as u64 + 1) * 64
}

/// The word (0 is the first, `n` is `rest[n - 1]`) and the bit of `seq`.
fn slot(rest: &[u64], seq: u64) -> (usize, u64) {
    let at = seq % ring_len(rest);
    (usize::try_from(at / 64).unwrap_or(0), 1 << (at % 64))
}

impl Window {
    /// Whether `seq` would be new here.
    fn check(&self, rest: &[u64], seq: u64) -> Result<(), Seen> {
        if seq > self.highest {
            return Ok(());
        }
        if self.highest - seq >= ring_len(rest) {
            return Err(Seen::TooOld);
        }
        let (word, bit) = slot(rest, seq);
        let word = match word {
            0 => Some(self.first),
            n => rest.get(n - 1).copied(),
        };
        if word.is_some_and(|w| w & bit != 0) {
            Err(Seen::Duplicate)
        } else {
            Ok(())
        }
    }
}

impl Bits<'_> {
    fn set(&mut self, seq: u64, on: bool) {
        let rest = &mut *self.rest;
        let (word, bit) = slot(rest, seq);
        let word = match word {
            0 => Some(&mut self.window.first),
            n => rest.get_mut(n - 1),
        };
        if let Some(w) = word {
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// Records `seq`, moving the window up to it if it is the highest yet.
    fn record(&mut self, seq: u64, now: u64) {
        self.window.last_used = now;
        let len = ring_len(self.rest);
        let highest = self.window.highest;
        if seq > highest {
            if seq - highest >= len {
                self.window.first = 0;
                self.rest.fill(0);
            } else {
                // The slots the window moves over held ids now too old.
                for passed in highest + 1..=seq {
                    self.set(passed, false);
                }
            }
            self.window.highest = seq;
        }
        if self.window.highest - seq < len {
            self.set(seq, true);
        }
    }
}

/// The words beyond the first of `tag`'s window: none at the default width (64), where
/// `rest` stays empty and is not looked up.
fn rest_of(rest: &KeyMap<u64, Box<[u64]>>, words: usize, tag: u64) -> &[u64] {
    if words == 1 {
        return &[];
    }
    rest.get(&tag).map_or(&[], |rest| rest)
}

/// [`rest_of`], to change.
fn rest_of_mut(rest: &mut KeyMap<u64, Box<[u64]>>, words: usize, tag: u64) -> &mut [u64] {
    if words == 1 {
        return &mut [];
    }
    match rest.get_mut(&tag) {
        Some(rest) => rest,
        None => &mut [],
    }
}

/// Bounded set of accepted (origin, seq) pairs.
#[derive(Debug)]
pub(crate) struct SeenFrames {
    windows: KeyMap<u64, Window>,
    /// The words beyond the first of every window, when windows are wider than 64.
    rest: KeyMap<u64, Box<[u64]>>,
    capacity: usize,
    /// Words of each window (its length over 64).
    words: usize,
    /// What windows' use times count from.
    epoch: Option<Instant>,
}

impl SeenFrames {
    /// At most `capacity` origins, each remembering `window` sequence numbers (rounded up
    /// to a multiple of 64, 64 to 65,536).
    pub(crate) fn new(capacity: usize, window: u32, hash_seed: u64) -> Self {
        let words = usize::try_from(window.clamp(64, 65_536).div_ceil(64)).unwrap_or(1);
        Self {
            windows: key_map(hash_seed),
            rest: key_map(hash_seed),
            capacity: capacity.max(1),
            words,
            epoch: None,
        }
    }

    /// `now` as a window's use time.
    fn stamp(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether `(origin, seq)` would be new. Checked before the (costly) signature check;
    /// only [`Self::insert`] after a good signature changes anything, so a forged frame
    /// cannot shadow the real one.
    pub(crate) fn check(&self, origin: &PeerKey, seq: u64) -> Result<(), Seen> {
        self.check_tag(origin_tag(origin), seq)
    }

    /// [`Self::check`] for the origin a digest names by its tag.
    pub(crate) fn check_tag(&self, tag: u64, seq: u64) -> Result<(), Seen> {
        match self.windows.get(&tag) {
            Some(window) => window.check(rest_of(&self.rest, self.words, tag), seq),
            None => Ok(()),
        }
    }

    /// [`Self::check`], then `genuine` (the costly signature check) for a new id, then
    /// [`Self::insert`] if it said yes, with one lookup for a known origin. `Ok(false)`:
    /// new but not genuine, nothing recorded.
    pub(crate) fn accept(
        &mut self,
        origin: &PeerKey,
        seq: u64,
        now: Instant,
        genuine: impl FnOnce() -> bool,
    ) -> Result<bool, Seen> {
        let stamp = self.stamp(now);
        let tag = origin_tag(origin);
        if let Some(window) = self.windows.get_mut(&tag) {
            let rest = rest_of_mut(&mut self.rest, self.words, tag);
            window.check(rest, seq)?;
            if !genuine() {
                return Ok(false);
            }
            Bits { window, rest }.record(seq, stamp);
            return Ok(true);
        }
        if !genuine() {
            return Ok(false);
        }
        self.record(tag, seq, stamp);
        Ok(true)
    }

    /// Records `(origin, seq)` as accepted. Call after [`Self::check`] said it is new.
    pub(crate) fn insert(&mut self, origin: &PeerKey, seq: u64, now: Instant) {
        let stamp = self.stamp(now);
        self.record(origin_tag(origin), seq, stamp);
    }

    /// [`Self::insert`] by tag, at use time `stamp`.
    fn record(&mut self, tag: u64, seq: u64, stamp: u64) {
        if !self.windows.contains_key(&tag) && self.windows.len() >= self.capacity {
            self.evict_least_recent();
        }
        let window = self.windows.entry(tag).or_insert(Window {
            highest: seq,
            first: 0,
            last_used: stamp,
        });
        let rest: &mut [u64] = if self.words > 1 {
            let words = self.words - 1;
            self.rest
                .entry(tag)
                .or_insert_with(|| vec![0; words].into_boxed_slice())
        } else {
            &mut []
        };
        Bits { window, rest }.record(seq, stamp);
    }

    fn evict_least_recent(&mut self) {
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(_, window)| window.last_used)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.windows.remove(&key);
            self.rest.remove(&key);
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
        let mut seen = SeenFrames::new(2, 64, 0);
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
    fn a_wider_window_remembers_further_back_and_wraps_cleanly() {
        let now = Instant::now();
        let mut seen = SeenFrames::new(1, 1000, 0);
        let a = [1; 32];
        // Rounded up to 1,024.
        seen.insert(&a, 5, now);
        seen.insert(&a, 1_028, now);
        assert_eq!(
            seen.check(&a, 5),
            Err(Seen::Duplicate),
            "1,023 back: still known"
        );
        seen.insert(&a, 1_029, now);
        assert_eq!(seen.check(&a, 5), Err(Seen::TooOld));
        assert_eq!(seen.check(&a, 6), Ok(()));
        assert_eq!(seen.check(&a, 1_028), Err(Seen::Duplicate));
        // Accepted ids stay duplicates as the window moves over the ring, new ones are new.
        for seq in 1_030..3_000 {
            assert_eq!(seen.check(&a, seq), Ok(()), "{seq}");
            seen.insert(&a, seq, now);
            if seq % 3 == 0 && seq >= 2_028 {
                assert_eq!(seen.check(&a, seq - 1_000), Err(Seen::Duplicate));
            }
        }
        assert_eq!(seen.check(&a, 2_999 - 1_023), Err(Seen::Duplicate));
        assert_eq!(seen.check(&a, 2_999 - 1_024), Err(Seen::TooOld));
        // A jump past the whole window forgets everything below.
        seen.insert(&a, 10_000, now);
        assert_eq!(seen.check(&a, 9_000), Ok(()));
        assert_eq!(seen.check(&a, 2_999), Err(Seen::TooOld));
        // Out of order within the window: accepted once.
        seen.insert(&a, 9_500, now);
        assert_eq!(seen.check(&a, 9_500), Err(Seen::Duplicate));
        assert_eq!(seen.check(&a, 9_501), Ok(()));
    }

    #[test]
    fn accept_checks_then_asks_then_records() {
        let now = Instant::now();
        let mut seen = SeenFrames::new(4, 64, 0);
        let a = [1; 32];
        // A forged frame (not genuine) records nothing, for a new origin or a known one.
        assert_eq!(seen.accept(&a, 5, now, || false), Ok(false));
        assert_eq!(seen.check(&a, 5), Ok(()));
        assert_eq!(seen.accept(&a, 5, now, || true), Ok(true));
        assert_eq!(seen.accept(&a, 6, now, || false), Ok(false));
        assert_eq!(seen.check(&a, 6), Ok(()));
        // A duplicate or a too-old id is refused without the costly check.
        let asked = std::cell::Cell::new(false);
        let genuine = || {
            asked.set(true);
            true
        };
        assert_eq!(seen.accept(&a, 5, now, genuine), Err(Seen::Duplicate));
        assert_eq!(seen.accept(&a, 200, now, || true), Ok(true));
        assert_eq!(seen.accept(&a, 100, now, genuine), Err(Seen::TooOld));
        assert!(!asked.get());
        assert_eq!(seen.accept(&a, 199, now, genuine), Ok(true));
        assert_eq!(seen.check(&a, 199), Err(Seen::Duplicate));
    }

    #[test]
    fn a_window_is_found_by_the_tag_digests_name() {
        let now = Instant::now();
        let mut seen = SeenFrames::new(4, 64, 0);
        let a = [1; 32];
        let mut b = [2; 32];
        seen.insert(&a, 7, now);
        assert_eq!(seen.check_tag(origin_tag(&a), 7), Err(Seen::Duplicate));
        assert_eq!(seen.check_tag(origin_tag(&a), 8), Ok(()));
        assert_eq!(seen.check_tag(origin_tag(&b), 7), Ok(()));
        // A key with the same first 8 bytes shares the window (as documented).
        b[..8].copy_from_slice(&a[..8]);
        assert_eq!(seen.check(&b, 7), Err(Seen::Duplicate));
    }

    #[test]
    fn the_least_recent_origin_is_forgotten_at_the_bound() {
        let start = Instant::now();
        let mut seen = SeenFrames::new(2, 64, 0);
        seen.insert(&[1; 32], 1, start);
        seen.insert(&[2; 32], 1, start + std::time::Duration::from_secs(1));
        seen.insert(&[3; 32], 1, start + std::time::Duration::from_secs(2));
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.check(&[1; 32], 1), Ok(()));
        assert_eq!(seen.check(&[2; 32], 1), Err(Seen::Duplicate));
    }
}
