//! A replay guard for signaling: a bounded cache of seen ids plus a timestamp window.

use std::collections::{HashSet, VecDeque};

/// Limits of a [`ReplayGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayGuardConfig {
    /// Accepted clock skew either side of now, in milliseconds. Default 120,000 (two
    /// minutes): relays may hold events a little and peers' clocks drift.
    pub skew_ms: u64,
    /// Ids remembered at most. Default 16,384: at one signaling message per second per peer
    /// that is two minutes of a 100-peer room.
    pub capacity: usize,
}

impl Default for ReplayGuardConfig {
    fn default() -> Self {
        Self {
            skew_ms: 120_000,
            capacity: 16_384,
        }
    }
}

/// Why a message was refused as a possible replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The id was seen before.
    #[error("message id seen before: replay")]
    Replayed,
    /// The timestamp is older than the window (or older than an id the bounded cache had to
    /// forget).
    #[error("message timestamp {timestamp_ms} is older than the accepted floor {floor_ms}")]
    TooOld {
        /// The message's timestamp.
        timestamp_ms: u64,
        /// The oldest timestamp accepted now.
        floor_ms: u64,
    },
    /// The timestamp is further in the future than the skew allows.
    #[error("message timestamp {timestamp_ms} is ahead of now ({now_ms}) beyond the skew")]
    FromFuture {
        /// The message's timestamp.
        timestamp_ms: u64,
        /// The local clock.
        now_ms: u64,
    },
}

/// Refuses messages seen before or outside the time window, in bounded memory.
///
/// At capacity the oldest remembered id is forgotten and the floor rises to its timestamp:
/// from then on anything at or before that timestamp is refused as [`ReplayError::TooOld`],
/// so forgetting an id can never let its replay through.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    config: ReplayGuardConfig,
    order: VecDeque<(u64, [u8; 32])>,
    seen: HashSet<[u8; 32]>,
    /// Timestamps at or below this are refused (raised by eviction).
    evicted_floor: Option<u64>,
}

impl ReplayGuard {
    /// A guard with the given limits (capacity at least 1).
    pub fn new(mut config: ReplayGuardConfig) -> Self {
        config.capacity = config.capacity.max(1);
        Self {
            config,
            order: VecDeque::new(),
            seen: HashSet::new(),
            evicted_floor: None,
        }
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks a message (`id`, sender's `timestamp_ms`) at local time `now_ms`, and remembers
    /// it if accepted.
    pub fn check(
        &mut self,
        id: [u8; 32],
        timestamp_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        if timestamp_ms > now_ms.saturating_add(self.config.skew_ms) {
            return Err(ReplayError::FromFuture {
                timestamp_ms,
                now_ms,
            });
        }
        let window_floor = now_ms.saturating_sub(self.config.skew_ms);
        if timestamp_ms < window_floor {
            return Err(ReplayError::TooOld {
                timestamp_ms,
                floor_ms: window_floor,
            });
        }
        if let Some(floor) = self.evicted_floor
            && timestamp_ms <= floor
        {
            return Err(ReplayError::TooOld {
                timestamp_ms,
                floor_ms: floor.saturating_add(1),
            });
        }
        if self.seen.contains(&id) {
            return Err(ReplayError::Replayed);
        }
        self.prune(window_floor);
        while self.seen.len() >= self.config.capacity {
            let Some((timestamp, old)) = self.order.pop_front() else {
                break;
            };
            self.seen.remove(&old);
            self.evicted_floor = Some(self.evicted_floor.map_or(timestamp, |f| f.max(timestamp)));
        }
        self.seen.insert(id);
        self.order.push_back((timestamp_ms, id));
        Ok(())
    }

    /// Forgets ids whose timestamps fell out of the window (they would be refused as too old).
    fn prune(&mut self, window_floor: u64) {
        while let Some((timestamp, id)) = self.order.front().copied() {
            if timestamp >= window_floor {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> [u8; 32] {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn replay_is_refused() {
        let mut guard = ReplayGuard::new(ReplayGuardConfig::default());
        assert_eq!(guard.check(id(1), 1_000_000, 1_000_000), Ok(()));
        assert_eq!(
            guard.check(id(1), 1_000_000, 1_000_001),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn skew_window_is_enforced() {
        let mut guard = ReplayGuard::new(ReplayGuardConfig::default());
        let now = 10_000_000;
        assert!(matches!(
            guard.check(id(1), now - 120_001, now),
            Err(ReplayError::TooOld { .. })
        ));
        assert!(matches!(
            guard.check(id(2), now + 120_001, now),
            Err(ReplayError::FromFuture { .. })
        ));
        assert_eq!(guard.check(id(3), now - 120_000, now), Ok(()));
        assert_eq!(guard.check(id(4), now + 120_000, now), Ok(()));
    }

    #[test]
    fn capacity_is_bounded_and_eviction_never_admits_a_replay() {
        let config = ReplayGuardConfig {
            skew_ms: 1_000_000,
            capacity: 100,
        };
        let mut guard = ReplayGuard::new(config);
        let now = 5_000_000;
        for n in 0..1000u32 {
            guard.check(id(n), now + u64::from(n), now + 1000).unwrap();
            assert!(guard.len() <= 100);
        }
        // Every id ever accepted is still refused, whether remembered or evicted.
        for n in 0..1000u32 {
            assert!(
                guard.check(id(n), now + u64::from(n), now + 1000).is_err(),
                "{n} replayed"
            );
        }
    }

    #[test]
    fn old_entries_are_pruned() {
        let config = ReplayGuardConfig {
            skew_ms: 1_000,
            capacity: 100,
        };
        let mut guard = ReplayGuard::new(config);
        guard.check(id(1), 10_000, 10_000).unwrap();
        guard.check(id(2), 20_000, 20_000).unwrap();
        assert_eq!(
            guard.len(),
            1,
            "the first id is out of the window and forgotten"
        );
    }
}
