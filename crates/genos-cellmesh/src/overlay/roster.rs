//! The peers this peer knows of, with an index by cell kept in key order. Every re-plan
//! reads its own cell's members and, for each bridge slot, another cell's: reading them
//! from the index costs the cell's size, where filtering and sorting the whole roster cost
//! its size times a log on every re-plan (most of a 3,000-peer cold start's time, measured).
//! The index also keeps whether each member was heard first-hand (what a roster message
//! passes on) and a version per cell that changes with its members (what a re-plan's
//! cached bridge holders are checked against), so neither needs a lookup per member.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::PeerKey;
use crate::assign::cell_from_seed;
use crate::keyhash::{KeyMap, key_map};
use crate::plan::Member;
use crate::wire::origin_tag;

#[derive(Debug, Clone, Copy)]
pub(super) struct Known {
    pub(super) seed: u64,
    pub(super) cell_seed: u64,
    pub(super) cell: u32,
    /// When it was last heard first-hand, or when it was learned second-hand.
    pub(super) last_seen: Instant,
    /// Heard first-hand in the current view: its announce on a topic of the view, or a
    /// link to it. Second-hand news (a cell mate's roster, a retry, an older view) is
    /// not, and never refreshes `last_seen`.
    pub(super) heard: bool,
}

/// Known peers by key, and per cell their keys in order with their bridge seeds and whether
/// they were heard first-hand. The two always hold the same peers and flags: every change
/// goes through these methods.
#[derive(Debug)]
pub(super) struct Roster {
    known: KeyMap<PeerKey, Known>,
    by_cell: BTreeMap<u32, BTreeMap<InOrder, Indexed>>,
    /// Per cell with members, when its members (keys or seeds) last changed: a count of
    /// changes, so what was worked out from a cell's members (its bridge holders) is
    /// reused until they change.
    changed: BTreeMap<u32, u64>,
    changes: u64,
}

/// What the per-cell index keeps of a peer: what a re-plan and a roster message read, so
/// neither looks every member up by key (a cache miss each, in a forming cell of thousands).
#[derive(Debug, Clone, Copy)]
struct Indexed {
    seed: u64,
    heard: bool,
}

impl From<&Known> for Indexed {
    fn from(known: &Known) -> Self {
        Self {
            seed: known.seed,
            heard: known.heard,
        }
    }
}

/// A key ordered as its bytes are, compared a word first: keys are random, so the first
/// eight bytes nearly always decide, without a call to compare 32 bytes (inserting into a
/// forming cell of thousands was a seventh of a 10,000-peer cold start, measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InOrder(PeerKey);

impl InOrder {
    fn word(&self) -> u64 {
        origin_tag(&self.0)
    }
}

impl Ord for InOrder {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.word()
            .cmp(&other.word())
            .then_with(|| self.0[8..].cmp(&other.0[8..]))
    }
}

impl PartialOrd for InOrder {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Roster {
    pub(super) fn new(hash_seed: u64) -> Self {
        Self {
            known: key_map(hash_seed),
            by_cell: BTreeMap::new(),
            changed: BTreeMap::new(),
            changes: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.known.len()
    }

    pub(super) fn get(&self, peer: &PeerKey) -> Option<&Known> {
        self.known.get(peer)
    }

    /// Marks `peer` heard first-hand at `now`; false if it is not known.
    pub(super) fn touch(&mut self, peer: &PeerKey, now: Instant) -> bool {
        let Some(known) = self.known.get_mut(peer) else {
            return false;
        };
        known.last_seen = now;
        if !known.heard {
            known.heard = true;
            let cell = known.cell;
            self.mark_heard(peer, cell);
        }
        true
    }

    fn mark_heard(&mut self, peer: &PeerKey, cell: u32) {
        if let Some(indexed) = self
            .by_cell
            .get_mut(&cell)
            .and_then(|members| members.get_mut(&InOrder(*peer)))
        {
            indexed.heard = true;
        }
    }

    /// Whether `peer` is known and was heard first-hand in the current view.
    pub(super) fn heard(&self, peer: &PeerKey) -> bool {
        self.known.get(peer).is_some_and(|known| known.heard)
    }

    pub(super) fn insert(&mut self, peer: PeerKey, known: Known) {
        if let Some(old) = self.known.insert(peer, known) {
            self.unindex(&peer, old.cell);
        }
        self.by_cell
            .entry(known.cell)
            .or_default()
            .insert(InOrder(peer), Indexed::from(&known));
        self.note_change(known.cell);
    }

    fn note_change(&mut self, cell: u32) {
        self.changes += 1;
        self.changed.insert(cell, self.changes);
    }

    /// Changes whenever the members of `cell` (keys or seeds) do; 0 while it has none.
    pub(super) fn version_of(&self, cell: u32) -> u64 {
        self.changed.get(&cell).copied().unwrap_or(0)
    }

    pub(super) fn remove(&mut self, peer: &PeerKey) -> Option<Known> {
        let known = self.known.remove(peer)?;
        self.unindex(peer, known.cell);
        Some(known)
    }

    fn unindex(&mut self, peer: &PeerKey, cell: u32) {
        if let Some(members) = self.by_cell.get_mut(&cell) {
            members.remove(&InOrder(*peer));
            if members.is_empty() {
                self.by_cell.remove(&cell);
                self.changed.remove(&cell);
            } else {
                self.note_change(cell);
            }
        }
    }

    /// Keeps the peers for which `keep` returns true; it may mark each heard (and nothing
    /// else). Returns how many were removed.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&PeerKey, &mut Known) -> bool) -> usize {
        let mut gone = Vec::new();
        let mut now_heard = Vec::new();
        self.known.retain(|peer, known| {
            let was_heard = known.heard;
            let kept = keep(peer, known);
            if !kept {
                gone.push((*peer, known.cell));
            } else if known.heard && !was_heard {
                now_heard.push((*peer, known.cell));
            }
            kept
        });
        for (peer, cell) in &gone {
            self.unindex(peer, *cell);
        }
        for (peer, cell) in &now_heard {
            self.mark_heard(peer, *cell);
        }
        gone.len()
    }

    /// Places every peer in its cell of a view of `cells`. A new cell count makes everyone
    /// second-hand news as of `now`: what was heard was heard on the old view's topics,
    /// and a peer that left meanwhile may have said goodbye only where this peer no longer
    /// listens.
    pub(super) fn recell(&mut self, cells: u32, new_view: bool, now: Instant) {
        self.by_cell.clear();
        self.changed.clear();
        self.changes += 1;
        for (peer, known) in &mut self.known {
            // Already second-hand: its time keeps running (a room flipping between views
            // must not keep a departed peer for good).
            if new_view && known.heard {
                known.heard = false;
                known.last_seen = now;
            }
            known.cell = cell_from_seed(known.cell_seed, cells);
            self.by_cell
                .entry(known.cell)
                .or_default()
                .insert(InOrder(*peer), Indexed::from(&*known));
            self.changed.insert(known.cell, self.changes);
        }
        // A map keeps the size it once had: a room formed as one cell (thousands known)
        // and split leaves hundreds, and at 10,000 peers the spare room was most of the
        // simulator's memory.
        let len = self.known.len();
        if self.known.capacity() > 4 * len.max(16) {
            self.known.shrink_to(2 * len);
        }
    }

    /// The known members of `cell`, in key order.
    pub(super) fn members_of(&self, cell: u32) -> impl Iterator<Item = Member> + '_ {
        self.by_cell
            .get(&cell)
            .into_iter()
            .flat_map(|members| members.iter())
            .map(|(key, indexed)| Member {
                key: key.0,
                seed: indexed.seed,
            })
    }

    /// The members of `cell` heard first-hand, with `me` in its place: all in key order.
    pub(super) fn heard_in(&self, cell: u32, me: PeerKey) -> impl Iterator<Item = PeerKey> + '_ {
        let me = InOrder(me);
        let mut heard = self
            .by_cell
            .get(&cell)
            .into_iter()
            .flat_map(|members| members.iter())
            .filter(move |(key, indexed)| indexed.heard && **key != me)
            .map(|(key, _)| *key)
            .peekable();
        let mut me = Some(me);
        std::iter::from_fn(move || {
            let next_heard = heard.peek().copied();
            match (me, next_heard) {
                (Some(mine), Some(theirs)) if theirs < mine => heard.next(),
                (Some(mine), _) => me.take().map(|_| mine),
                (None, _) => heard.next(),
            }
        })
        .map(|key| key.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn known(seed: u64, cell: u32, at: Instant) -> Known {
        Known {
            seed,
            cell_seed: seed,
            cell,
            last_seen: at,
            heard: true,
        }
    }

    fn keys(roster: &Roster, cell: u32) -> Vec<u8> {
        roster
            .members_of(cell)
            .map(|member| member.key[0])
            .collect()
    }

    #[test]
    fn keys_are_in_byte_order() {
        let mut keys: Vec<PeerKey> = (0..200u32)
            .map(|n| {
                let mut key = [0u8; 32];
                // Many share their first word: the rest must decide those.
                key[7] = (n % 3) as u8;
                key[8..12].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
                key[31] = n as u8;
                key
            })
            .collect();
        let mut in_order: Vec<InOrder> = keys.iter().copied().map(InOrder).collect();
        keys.sort();
        in_order.sort();
        assert_eq!(keys, in_order.iter().map(|key| key.0).collect::<Vec<_>>());
    }

    /// The index's heard flags agree with the roster's after any mix of changes, and
    /// `heard_in` gives what looking each member up gives.
    #[test]
    fn heard_in_agrees_with_lookups() {
        let start = Instant::now();
        let mut roster = Roster::new(3);
        let mut state = 11u64;
        let mut draw = |bound: u64| {
            state = crate::mix::mix64(state);
            state % bound
        };
        for step in 0..3_000u64 {
            let at = start + std::time::Duration::from_millis(step);
            let mut key = [0u8; 32];
            key[0] = u8::try_from(draw(60)).unwrap();
            match draw(6) {
                0 | 1 => {
                    let seed = draw(1_000);
                    roster.insert(key, known(seed, u32::try_from(seed % 3).unwrap(), at));
                    if draw(2) == 0 {
                        roster.recell(3, true, at);
                    }
                }
                2 => {
                    roster.touch(&key, at);
                }
                3 => {
                    roster.remove(&key);
                }
                4 => {
                    let flip = u8::try_from(draw(60)).unwrap();
                    roster.retain(|peer, known| {
                        if peer[0] % 7 == flip % 7 {
                            known.heard = true;
                        }
                        peer[0] != flip
                    });
                }
                _ => roster.recell(u32::try_from(draw(3) + 1).unwrap(), draw(2) == 0, at),
            }
            // This peer anywhere: first, last, among them, or one of them.
            let me = [u8::try_from(draw(62)).unwrap(); 32];
            for cell in 0..3 {
                let mut looked_up: Vec<PeerKey> = roster
                    .members_of(cell)
                    .map(|member| member.key)
                    .filter(|key| *key != me && roster.heard(key))
                    .collect();
                looked_up.push(me);
                looked_up.sort_unstable();
                let read: Vec<PeerKey> = roster.heard_in(cell, me).collect();
                assert_eq!(read, looked_up, "step {step}, cell {cell}");
            }
        }
    }

    #[test]
    fn the_index_follows_every_change() {
        let now = Instant::now();
        let mut roster = Roster::new(7);
        for (byte, cell) in [(5u8, 0u32), (1, 1), (3, 0), (2, 0)] {
            roster.insert([byte; 32], known(u64::from(byte), cell, now));
        }
        assert_eq!(keys(&roster, 0), vec![2, 3, 5]);
        assert_eq!(keys(&roster, 1), vec![1]);
        // Re-inserting in another cell moves it.
        roster.insert([3; 32], known(3, 1, now));
        assert_eq!(keys(&roster, 0), vec![2, 5]);
        assert_eq!(keys(&roster, 1), vec![1, 3]);
        assert!(roster.remove(&[5; 32]).is_some());
        assert!(roster.remove(&[5; 32]).is_none());
        assert_eq!(keys(&roster, 0), vec![2]);
        let removed = roster.retain(|key, _| key[0] != 1);
        assert_eq!(removed, 1);
        assert_eq!(keys(&roster, 1), vec![3]);
        assert_eq!(roster.len(), 2);
        // A new view places everyone by cell seed.
        roster.recell(1, true, now);
        assert_eq!(keys(&roster, 0), vec![2, 3]);
        assert!(keys(&roster, 1).is_empty());
        assert!(
            !roster.heard(&[2; 32]),
            "a new view keeps what was heard as first-hand"
        );
        assert!(roster.touch(&[2; 32], now));
        assert!(roster.heard(&[2; 32]));
        assert!(!roster.touch(&[9; 32], now));
    }
}
