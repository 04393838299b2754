//! The peers this peer knows of, with an index by cell kept in key order. Every re-plan
//! reads its own cell's members and, for each bridge slot, another cell's: reading them
//! from the index costs the cell's size, where filtering and sorting the whole roster cost
//! its size times a log on every re-plan (most of a 3,000-peer cold start's time, measured).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::PeerKey;
use crate::assign::cell_from_seed;
use crate::keyhash::{KeyMap, key_map};
use crate::plan::Member;

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

/// Known peers by key, and per cell their keys in order with their bridge seeds. The two
/// always hold the same peers: every change goes through these methods.
#[derive(Debug)]
pub(super) struct Roster {
    known: KeyMap<PeerKey, Known>,
    by_cell: BTreeMap<u32, BTreeMap<PeerKey, u64>>,
}

impl Roster {
    pub(super) fn new(hash_seed: u64) -> Self {
        Self {
            known: key_map(hash_seed),
            by_cell: BTreeMap::new(),
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
        match self.known.get_mut(peer) {
            Some(known) => {
                known.last_seen = now;
                known.heard = true;
                true
            }
            None => false,
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
            .insert(peer, known.seed);
    }

    pub(super) fn remove(&mut self, peer: &PeerKey) -> Option<Known> {
        let known = self.known.remove(peer)?;
        self.unindex(peer, known.cell);
        Some(known)
    }

    fn unindex(&mut self, peer: &PeerKey, cell: u32) {
        if let Some(members) = self.by_cell.get_mut(&cell) {
            members.remove(peer);
            if members.is_empty() {
                self.by_cell.remove(&cell);
            }
        }
    }

    /// Keeps the peers for which `keep` returns true; it may mark each heard.
    /// Returns how many were removed.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&PeerKey, &mut Known) -> bool) -> usize {
        let mut gone = Vec::new();
        self.known.retain(|peer, known| {
            let kept = keep(peer, known);
            if !kept {
                gone.push((*peer, known.cell));
            }
            kept
        });
        for (peer, cell) in &gone {
            self.unindex(peer, *cell);
        }
        gone.len()
    }

    /// Places every peer in its cell of a view of `cells`. A new cell count makes everyone
    /// second-hand news as of `now`: what was heard was heard on the old view's topics,
    /// and a peer that left meanwhile may have said goodbye only where this peer no longer
    /// listens.
    pub(super) fn recell(&mut self, cells: u32, new_view: bool, now: Instant) {
        self.by_cell.clear();
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
                .insert(*peer, known.seed);
        }
    }

    /// The known members of `cell`, in key order.
    pub(super) fn members_of(&self, cell: u32) -> impl Iterator<Item = Member> + '_ {
        self.by_cell
            .get(&cell)
            .into_iter()
            .flat_map(|members| members.iter())
            .map(|(key, seed)| Member {
                key: *key,
                seed: *seed,
            })
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
