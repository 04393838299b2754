//! What a session published and dropped.

use super::*;

/// Counters of one session: what it published and what it dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NostrStats {
    /// Events published (each counted once, whatever the number of relays).
    pub published: u64,
    /// Presence announcements among them.
    pub announces: u64,
    /// Events delivered to the application.
    pub delivered: u64,
    /// Copies of an event already delivered (the same message from another relay).
    pub duplicates: u64,
    /// Events with a bad id or signature, wrong kind or tag.
    pub dropped_invalid: u64,
    /// Events whose content does not open with the room key for their author.
    pub dropped_unsealed: u64,
    /// Events refused by the replay guard (too old or from the future).
    pub dropped_replay: u64,
    /// Events dropped because the application's inbox was full.
    pub dropped_overflow: u64,
    /// Stored presence (or tombstones) past their NIP-40 expiration, which some relays
    /// still serve.
    pub dropped_expired: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) published: AtomicU64,
    pub(super) announces: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) duplicates: AtomicU64,
    pub(super) dropped_invalid: AtomicU64,
    pub(super) dropped_unsealed: AtomicU64,
    pub(super) dropped_replay: AtomicU64,
    pub(super) dropped_overflow: AtomicU64,
    pub(super) dropped_expired: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> NostrStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NostrStats {
            published: get(&self.published),
            announces: get(&self.announces),
            delivered: get(&self.delivered),
            duplicates: get(&self.duplicates),
            dropped_invalid: get(&self.dropped_invalid),
            dropped_unsealed: get(&self.dropped_unsealed),
            dropped_replay: get(&self.dropped_replay),
            dropped_overflow: get(&self.dropped_overflow),
            dropped_expired: get(&self.dropped_expired),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
