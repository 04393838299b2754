//! Which cell a peer belongs to, and how many cells a room has.
//!
//! Every peer computes the same answer from the same inputs: the room's id, the peer's
//! public key and the number of cells. Assignment is rendezvous (highest-random-weight)
//! hashing: a peer goes to the cell whose hash of (room, peer, cell) is highest. Growing
//! from C to C+1 cells moves only the peers for which the new cell wins, about 1/(C+1) of
//! them, and each moves into the new cell. Because the hash covers the peer's public key and
//! the room, a peer cannot pick its cell without grinding keys, and a cell in one room says
//! nothing about the same peer's cell in another.

use sha2::{Digest, Sha256};

use crate::mix::mix64;

/// How many peers a cell should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sizing {
    /// Cells of about sqrt(N) peers (so about sqrt(N) cells), never larger than `max_cell`.
    Auto {
        /// Largest cell size aimed for.
        max_cell: u32,
    },
    /// Cells of about this many peers, whatever the room's size.
    Fixed(u32),
    /// One cell, that is a full mesh, while the room has at most `mesh_max` peers; above
    /// that as [`Sizing::Auto`]. With the overlay's resize hysteresis (a third either way) a
    /// room moves to cells once it passes about 4/3 of `mesh_max` and back to one cell
    /// below about 3/4 of it.
    MeshFirst {
        /// Largest room kept as one cell.
        mesh_max: u32,
        /// Largest cell size aimed for above it.
        max_cell: u32,
    },
}

impl Default for Sizing {
    fn default() -> Self {
        Self::Auto { max_cell: 100 }
    }
}

/// The number of cells for a room of `peers` peers.
///
/// ```
/// use genos_cellmesh::{Sizing, cell_count};
///
/// assert_eq!(cell_count(1, Sizing::default()), 1);
/// assert_eq!(cell_count(100, Sizing::default()), 10);
/// assert_eq!(cell_count(10_000, Sizing::default()), 100);
/// assert_eq!(cell_count(10_000, Sizing::Fixed(50)), 200);
/// let mesh_first = Sizing::MeshFirst { mesh_max: 64, max_cell: 100 };
/// assert_eq!(cell_count(64, mesh_first), 1);
/// assert_eq!(cell_count(100, mesh_first), 10);
/// ```
pub fn cell_count(peers: usize, sizing: Sizing) -> u32 {
    let peers = u64::try_from(peers.max(1)).unwrap_or(u64::MAX);
    let size = match sizing {
        Sizing::MeshFirst { mesh_max, .. } if peers <= u64::from(mesh_max) => return 1,
        Sizing::Auto { max_cell } | Sizing::MeshFirst { max_cell, .. } => {
            u64::from(integer_sqrt_ceil(peers)).min(u64::from(max_cell.max(1)))
        }
        Sizing::Fixed(size) => u64::from(size.max(1)),
    };
    u32::try_from(peers.div_ceil(size)).unwrap_or(u32::MAX)
}

fn integer_sqrt_ceil(n: u64) -> u32 {
    let mut root = (n as f64).sqrt() as u64;
    while root.saturating_mul(root) > n {
        root -= 1;
    }
    while root.saturating_mul(root) < n {
        root += 1;
    }
    u32::try_from(root).unwrap_or(u32::MAX)
}

/// The cell of `peer` (its 32-byte public key) in `room` when the room has `cells` cells.
///
/// ```
/// use genos_cellmesh::assign_cell;
///
/// let room = [7u8; 32];
/// let peer = [1u8; 32];
/// let cell = assign_cell(&room, &peer, 10);
/// assert!(cell < 10);
/// assert_eq!(cell, assign_cell(&room, &peer, 10)); // every peer computes the same
/// ```
pub fn assign_cell(room: &[u8; 32], peer: &[u8; 32], cells: u32) -> u32 {
    cell_from_seed(peer_seeds(room, peer).cell, cells)
}

/// The two per-peer seeds everything about a peer's place derives from, from one SHA-256
/// of (label, room, key): grinding a key for a place costs a hash per try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerSeeds {
    /// Seeds the cell weights.
    pub(crate) cell: u64,
    /// Seeds the bridge slot scores.
    pub(crate) bridge: u64,
}

pub(crate) fn peer_seeds(room: &[u8; 32], peer: &[u8; 32]) -> PeerSeeds {
    let mut hasher = Sha256::new();
    hasher.update(b"genos/cellmesh/v1/place");
    hasher.update(room);
    hasher.update(peer);
    let digest = hasher.finalize();
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        for (slot, byte) in bytes.iter_mut().zip(digest.iter().skip(at)) {
            *slot = *byte;
        }
        u64::from_be_bytes(bytes)
    };
    PeerSeeds {
        cell: word(0),
        bridge: word(8),
    }
}

/// Cells whose salts (what a weight mixes with the seed) are worked out at compile time:
/// a new view places every known peer again, a rendezvous over every cell each.
const SALTED_CELLS: usize = 4_096;

static CELL_SALTS: [u64; SALTED_CELLS] = {
    let mut salts = [0u64; SALTED_CELLS];
    let mut cell = 0;
    while cell < SALTED_CELLS {
        // In bounds: the loop's own condition (a const block cannot use `get_mut`).
        #[allow(clippy::indexing_slicing)]
        {
            salts[cell] = mix64(cell as u64);
        }
        cell += 1;
    }
    salts
};

fn cell_salt(cell: u32) -> u64 {
    match CELL_SALTS.get(cell as usize) {
        Some(salt) => *salt,
        None => mix64(u64::from(cell)),
    }
}

/// Rendezvous choice among `cells` cells: the cell with the highest weight for this seed.
pub(crate) fn cell_from_seed(seed: u64, cells: u32) -> u32 {
    let mut best = (0u64, 0u32);
    for cell in 0..cells.max(1) {
        let weight = mix64(seed ^ cell_salt(cell));
        if cell == 0 || weight > best.0 {
            best = (weight, cell);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u32) -> [u8; 32] {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        key[31] = 0xa5;
        key
    }

    #[test]
    fn cells_grow_like_the_square_root_and_respect_the_cap() {
        assert_eq!(cell_count(0, Sizing::default()), 1);
        assert_eq!(cell_count(2, Sizing::default()), 1);
        assert_eq!(cell_count(1000, Sizing::default()), 32);
        assert_eq!(cell_count(50_000, Sizing::Auto { max_cell: 100 }), 500);
        assert_eq!(cell_count(10, Sizing::Fixed(0)), 10);
    }

    #[test]
    fn cells_are_balanced_at_ten_thousand_peers() {
        let room = [3u8; 32];
        let cells = cell_count(10_000, Sizing::default());
        let mut sizes = vec![0u32; cells as usize];
        for i in 0..10_000 {
            sizes[assign_cell(&room, &peer(i), cells) as usize] += 1;
        }
        let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
        // Mean 100; binomial spread (sd ~10): every cell well within 50..150.
        assert!(min >= Some(50) && max <= Some(150), "{min:?}..{max:?}");
    }

    /// The salts worked out at compile time are the weights' own, and a count beyond the
    /// table works them out as it goes: the same cells either way.
    #[test]
    fn salted_cells_place_peers_as_the_plain_rendezvous_does() {
        let plain = |seed: u64, cells: u32| {
            (0..cells)
                .max_by_key(|cell| {
                    (
                        mix64(seed ^ mix64(u64::from(*cell))),
                        std::cmp::Reverse(*cell),
                    )
                })
                .unwrap_or(0)
        };
        for seed in [0u64, 1, 0xdead_beef, u64::MAX] {
            for cells in [1u32, 2, 95, 4_096, 4_100] {
                assert_eq!(
                    cell_from_seed(seed, cells),
                    plain(seed, cells),
                    "{seed} {cells}"
                );
            }
        }
        assert_eq!(CELL_SALTS.last().copied(), Some(mix64(4_095)));
    }

    proptest! {
        // Each case hashes thousands of (peer, cell) pairs: a few dozen cases suffice.
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn one_more_cell_moves_few_peers_and_only_into_it(cells in 2u32..60, seed in any::<u8>()) {
            let room = [seed; 32];
            let peers = 1000u32;
            let mut moved = 0;
            for i in 0..peers {
                let before = assign_cell(&room, &peer(i), cells);
                let after = assign_cell(&room, &peer(i), cells + 1);
                if before != after {
                    prop_assert_eq!(after, cells, "a moved peer goes to the new cell");
                    moved += 1;
                }
            }
            // Expected peers / (cells + 1); allow generous sampling noise.
            let expected = f64::from(peers) / f64::from(cells + 1);
            prop_assert!(f64::from(moved) < expected * 1.6 + 30.0, "moved {} expected {}", moved, expected);
        }

        #[test]
        fn assignment_depends_on_room_and_key_only(room in any::<[u8; 32]>(), key in any::<[u8; 32]>(), cells in 1u32..500) {
            let cell = assign_cell(&room, &key, cells);
            prop_assert!(cell < cells);
            prop_assert_eq!(cell, assign_cell(&room, &key, cells));
        }
    }
}
