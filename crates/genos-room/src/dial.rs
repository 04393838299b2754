//! Who dials whom, and when: the dial rule and a sans-IO planner for half-open dials,
//! cooldowns and retries.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use genos_crypto::PeerId;
use genos_transport::Role;

/// The role `local` plays towards `remote`: the peer with the lower id offers, the other
/// answers, so two peers that notice each other at the same moment never both dial (no
/// glare). `None` for the same id: a peer never connects to itself.
pub fn dial_role(local: &PeerId, remote: &PeerId) -> Option<Role> {
    match local.cmp(remote) {
        std::cmp::Ordering::Less => Some(Role::Offerer),
        std::cmp::Ordering::Greater => Some(Role::Answerer),
        std::cmp::Ordering::Equal => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Seen; to be dialled when a slot frees (offerer side only).
    Wanted,
    /// A dial attempt is under way (either direction).
    Dialing { dial: u64, since: Instant },
    /// The link of attempt `dial` is up.
    Linked { dial: u64 },
    /// The last attempt failed (or the peer was busy); retried at `until` on its own while
    /// the failures stay within [`MAX_AUTO_RETRIES`], else when seen again after `until`.
    Cooling { until: Instant },
}

/// Consecutive failures after which a peer is no longer retried on its own, only when it is
/// seen again (its presence, or its hello): a peer that crashed costs a few dials, not one
/// per cooldown forever.
pub(crate) const MAX_AUTO_RETRIES: u32 = 4;

#[derive(Debug, Clone, Copy)]
struct Entry {
    plan: Plan,
    failures: u32,
}

/// What the planner decided about an incoming dial attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Accept it as a new attempt (replacing `replaced`, if any).
    Accept { replaced: Option<u64> },
    /// It belongs to the attempt already under way.
    Current,
    /// Refuse: the room is full, or the peer should not be dialling us.
    Refuse,
    /// Refuse for now: every half-open slot is taken. The dialler is told, so it retries
    /// soon instead of waiting for its dial timeout.
    Busy,
}

/// Tracks every peer the room knows, sans IO: the caller passes `now` and acts on answers.
///
/// Bounds: at most `max_peers` peers wanted, dialling or linked; at most `max_half_open`
/// attempts under way; cooling entries are capped at `max_peers` too (the oldest are
/// forgotten first).
#[derive(Debug)]
pub(crate) struct DialPlanner {
    local: PeerId,
    entries: HashMap<PeerId, Entry>,
    max_peers: usize,
    max_half_open: usize,
    cooldown: Duration,
    dial_timeout: Duration,
}

impl DialPlanner {
    pub(crate) fn new(
        local: PeerId,
        max_peers: usize,
        max_half_open: usize,
        cooldown: Duration,
        dial_timeout: Duration,
    ) -> Self {
        Self {
            local,
            entries: HashMap::new(),
            max_peers: max_peers.max(1),
            max_half_open: max_half_open.max(1),
            cooldown,
            dial_timeout,
        }
    }

    fn active(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !matches!(e.plan, Plan::Cooling { .. }))
            .count()
    }

    /// Attempts under way in one direction: ours (`Offerer`) or theirs (`Answerer`).
    fn half_open(&self, role: Role) -> usize {
        self.entries
            .iter()
            .filter(|(peer, e)| {
                matches!(e.plan, Plan::Dialing { .. }) && dial_role(&self.local, peer) == Some(role)
            })
            .count()
    }

    /// A peer announced itself (or said hello). Returns false when it is refused because the
    /// room is full.
    pub(crate) fn seen(&mut self, peer: PeerId, now: Instant) -> bool {
        if dial_role(&self.local, &peer) != Some(Role::Offerer) {
            return true;
        }
        let active = self.active();
        match self.entries.get_mut(&peer) {
            Some(entry) => {
                if let Plan::Cooling { until } = entry.plan {
                    if now >= until {
                        entry.plan = Plan::Wanted;
                    }
                }
                true
            }
            None if active >= self.max_peers => false,
            None => {
                self.prune_cooling();
                self.entries.insert(
                    peer,
                    Entry {
                        plan: Plan::Wanted,
                        failures: 0,
                    },
                );
                true
            }
        }
    }

    /// The next peer to dial now, if a slot is free; it is marked as dialling `dial`.
    pub(crate) fn next_dial(&mut self, now: Instant, dial: u64) -> Option<PeerId> {
        if self.half_open(Role::Offerer) >= self.max_half_open {
            return None;
        }
        let peer = self
            .entries
            .iter()
            .filter(|(_, e)| e.plan == Plan::Wanted)
            .map(|(peer, _)| *peer)
            .min()?;
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.plan = Plan::Dialing { dial, since: now };
        }
        Some(peer)
    }

    /// A remote peer started (or continued) dial attempt `dial` towards us.
    pub(crate) fn incoming(&mut self, peer: PeerId, dial: u64, now: Instant) -> Incoming {
        if dial_role(&self.local, &peer) != Some(Role::Answerer) {
            return Incoming::Refuse;
        }
        let existing = self.entries.get(&peer).copied();
        let replaced = match existing.map(|e| e.plan) {
            Some(Plan::Dialing { dial: current, .. } | Plan::Linked { dial: current })
                if current == dial =>
            {
                return Incoming::Current;
            }
            Some(Plan::Dialing { dial: current, .. } | Plan::Linked { dial: current }) => {
                Some(current)
            }
            Some(Plan::Wanted | Plan::Cooling { .. }) => None,
            None => {
                if self.active() >= self.max_peers {
                    return Incoming::Refuse;
                }
                None
            }
        };
        let replacing_half_open = matches!(existing.map(|e| e.plan), Some(Plan::Dialing { .. }));
        if !replacing_half_open && self.half_open(Role::Answerer) >= self.max_half_open {
            return Incoming::Busy;
        }
        self.prune_cooling();
        let failures = existing.map_or(0, |e| e.failures);
        self.entries.insert(
            peer,
            Entry {
                plan: Plan::Dialing { dial, since: now },
                failures,
            },
        );
        Incoming::Accept { replaced }
    }

    /// The link of attempt `dial` is up. Returns false if the attempt is no longer current.
    pub(crate) fn linked(&mut self, peer: PeerId, dial: u64) -> bool {
        match self.entries.get_mut(&peer) {
            Some(entry) if entry.plan_dial() == Some(dial) => {
                entry.plan = Plan::Linked { dial };
                entry.failures = 0;
                true
            }
            _ => false,
        }
    }

    /// Attempt or link `dial` failed: cool down before the next attempt. Returns false if it
    /// was not current.
    pub(crate) fn failed(&mut self, peer: PeerId, dial: u64, now: Instant) -> bool {
        let cooldown = self.cooldown;
        match self.entries.get_mut(&peer) {
            Some(entry) if entry.plan_dial() == Some(dial) => {
                entry.failures = entry.failures.saturating_add(1);
                let factor = 1u32 << entry.failures.saturating_sub(1).min(3);
                entry.plan = Plan::Cooling {
                    until: now + cooldown * factor,
                };
                true
            }
            _ => false,
        }
    }

    /// Retry attempt `dial` at `until` rather than after the cooldown: the peer was busy
    /// (not a failure: `failed` false) or signaling lost a message (a failure, so a peer that
    /// never answers stops being retried). Returns false if it was not current.
    pub(crate) fn retry_at(
        &mut self,
        peer: PeerId,
        dial: u64,
        until: Instant,
        failed: bool,
    ) -> bool {
        match self.entries.get_mut(&peer) {
            Some(entry) if entry.plan_dial() == Some(dial) => {
                if failed {
                    entry.failures = entry.failures.saturating_add(1);
                }
                entry.plan = Plan::Cooling { until };
                true
            }
            _ => false,
        }
    }

    /// Peers whose cooldown ended at `now` and that are still retried on their own: an
    /// offerer's entry becomes wanted again (dialled by [`DialPlanner::next_dial`]); an
    /// answerer's entry is forgotten and returned, so the caller nudges the peer to dial.
    pub(crate) fn cooled(&mut self, now: Instant) -> Vec<PeerId> {
        let mut nudge = Vec::new();
        let local = self.local;
        self.entries.retain(|peer, entry| match entry.plan {
            Plan::Cooling { until } if now >= until && entry.failures <= MAX_AUTO_RETRIES => {
                if dial_role(&local, peer) == Some(Role::Offerer) {
                    entry.plan = Plan::Wanted;
                    true
                } else {
                    nudge.push(*peer);
                    false
                }
            }
            _ => true,
        });
        nudge.sort();
        nudge
    }

    /// What the planner holds for `peer`, for tests and checks.
    #[cfg(test)]
    pub(crate) fn phase(&self, peer: &PeerId) -> Option<Phase> {
        self.entries.get(peer).map(|e| match e.plan {
            Plan::Wanted => Phase::Wanted,
            Plan::Dialing { dial, .. } => Phase::Dialing(dial),
            Plan::Linked { dial } => Phase::Linked(dial),
            Plan::Cooling { .. } => Phase::Cooling,
        })
    }

    /// Attempts under way, for bound checks.
    #[cfg(test)]
    pub(crate) fn half_open_count(&self) -> usize {
        self.half_open(Role::Offerer) + self.half_open(Role::Answerer)
    }

    /// Entries held (each peer once), for bound checks.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the peer is still being pursued: wanted, dialled, linked, or cooling down
    /// before a retry this planner makes on its own.
    pub(crate) fn pursuing(&self, peer: &PeerId) -> bool {
        self.entries
            .get(peer)
            .is_some_and(|entry| match entry.plan {
                Plan::Cooling { .. } => entry.failures <= MAX_AUTO_RETRIES,
                _ => true,
            })
    }

    /// The peer left for good (goodbye or signaling departure): forget it.
    pub(crate) fn gone(&mut self, peer: &PeerId) -> Option<u64> {
        self.entries.remove(peer).and_then(|e| e.plan_dial())
    }

    /// Attempts older than the dial timeout; the caller abandons them and calls `failed`.
    pub(crate) fn expired(&self, now: Instant) -> Vec<(PeerId, u64)> {
        self.entries
            .iter()
            .filter_map(|(peer, e)| match e.plan {
                Plan::Dialing { dial, since } if now.duration_since(since) >= self.dial_timeout => {
                    Some((*peer, dial))
                }
                _ => None,
            })
            .collect()
    }

    fn prune_cooling(&mut self) {
        let cooling = self.entries.len() - self.active();
        if cooling < self.max_peers {
            return;
        }
        if let Some(oldest) = self
            .entries
            .iter()
            .filter_map(|(peer, e)| match e.plan {
                Plan::Cooling { until } => Some((until, *peer)),
                _ => None,
            })
            .min()
        {
            self.entries.remove(&oldest.1);
        }
    }
}

/// The planner's view of one peer (tests only).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Wanted,
    Dialing(u64),
    Linked(u64),
    Cooling,
}

impl Entry {
    fn plan_dial(&self) -> Option<u64> {
        match self.plan {
            Plan::Dialing { dial, .. } | Plan::Linked { dial } => Some(dial),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> PeerId {
        PeerId::from_bytes([byte; 32])
    }

    fn planner(max_peers: usize, half_open: usize) -> DialPlanner {
        DialPlanner::new(
            id(10),
            max_peers,
            half_open,
            Duration::from_secs(2),
            Duration::from_secs(20),
        )
    }

    #[test]
    fn exactly_one_side_offers() {
        for (a, b) in [(0u8, 1u8), (200, 3), (7, 255)] {
            let a = PeerId::from_bytes([a; 32]);
            let b = PeerId::from_bytes([b; 32]);
            let roles = (dial_role(&a, &b), dial_role(&b, &a));
            assert!(
                matches!(
                    roles,
                    (Some(Role::Offerer), Some(Role::Answerer))
                        | (Some(Role::Answerer), Some(Role::Offerer))
                ),
                "{roles:?}"
            );
        }
    }

    #[test]
    fn half_open_dials_are_limited() {
        let now = Instant::now();
        let mut p = planner(10, 2);
        for byte in 20..25 {
            assert!(p.seen(id(byte), now));
        }
        assert_eq!(p.next_dial(now, 1), Some(id(20)));
        assert_eq!(p.next_dial(now, 2), Some(id(21)));
        assert_eq!(p.next_dial(now, 3), None);
        assert!(p.linked(id(20), 1));
        assert_eq!(p.next_dial(now, 4), Some(id(22)));
        // Incoming attempts have a budget of their own; beyond it the dialler is told it is
        // busy.
        assert_eq!(
            p.incoming(id(5), 9, now),
            Incoming::Accept { replaced: None }
        );
        assert_eq!(
            p.incoming(id(6), 9, now),
            Incoming::Accept { replaced: None }
        );
        assert_eq!(p.incoming(id(7), 9, now), Incoming::Busy);
        assert_eq!(p.next_dial(now, 5), None, "outgoing still full");
    }

    #[test]
    fn failed_dials_cool_down_with_backoff() {
        let start = Instant::now();
        let mut p = planner(10, 4);
        p.seen(id(20), start);
        assert_eq!(p.next_dial(start, 1), Some(id(20)));
        assert!(p.failed(id(20), 1, start));
        assert!(
            !p.failed(id(20), 1, start),
            "a stale attempt is not failed twice"
        );
        p.seen(id(20), start + Duration::from_secs(1));
        assert_eq!(p.next_dial(start + Duration::from_secs(1), 2), None);
        assert!(p.cooled(start + Duration::from_secs(1)).is_empty());
        assert_eq!(p.next_dial(start + Duration::from_secs(1), 2), None);
        // Retried on its own once the cooldown is over: no new sighting needed.
        assert!(p.cooled(start + Duration::from_secs(3)).is_empty());
        assert_eq!(p.next_dial(start + Duration::from_secs(3), 2), Some(id(20)));
        assert!(p.failed(id(20), 2, start + Duration::from_secs(3)));
        // Second failure: twice the cooldown.
        p.seen(id(20), start + Duration::from_secs(6));
        assert_eq!(p.next_dial(start + Duration::from_secs(6), 3), None);
        p.seen(id(20), start + Duration::from_secs(7));
        assert_eq!(p.next_dial(start + Duration::from_secs(7), 3), Some(id(20)));
    }

    #[test]
    fn only_the_lower_id_dials_and_new_attempts_replace_old_ones() {
        let now = Instant::now();
        let mut p = planner(10, 4);
        // A higher id is ours to dial; a lower id dials us.
        assert_eq!(p.incoming(id(20), 1, now), Incoming::Refuse);
        p.seen(id(5), now);
        assert_eq!(p.next_dial(now, 7), None, "a lower id is never dialled");
        assert_eq!(
            p.incoming(id(5), 1, now),
            Incoming::Accept { replaced: None }
        );
        assert_eq!(p.incoming(id(5), 1, now), Incoming::Current);
        assert!(p.linked(id(5), 1));
        assert_eq!(
            p.incoming(id(5), 2, now),
            Incoming::Accept { replaced: Some(1) }
        );
        assert!(!p.linked(id(5), 1));
        assert!(p.linked(id(5), 2));
    }

    #[test]
    fn the_room_is_bounded_and_timeouts_expire() {
        let now = Instant::now();
        let mut p = planner(2, 4);
        assert!(p.seen(id(20), now));
        assert!(p.seen(id(21), now));
        assert!(!p.seen(id(22), now));
        assert_eq!(p.incoming(id(1), 1, now), Incoming::Refuse);
        p.next_dial(now, 1);
        assert!(p.expired(now + Duration::from_secs(19)).is_empty());
        assert_eq!(p.expired(now + Duration::from_secs(20)).len(), 1);
        assert_eq!(p.gone(&id(20)), Some(1));
        assert!(p.seen(id(22), now));
    }
}
