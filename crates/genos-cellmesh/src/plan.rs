//! Who links to whom: bridge slots between cells.
//!
//! Every pair of cells (A, B) is joined by `k` bridge links, slot 0 to k-1. The member of A
//! holding slot j towards B is the one with the highest score for (A, B, j), not counting
//! the holders of lower slots; B's holder of slot j towards A is found alike, and the two
//! holders of slot j are linked. Scores are rendezvous hashes of a per-peer seed (bound to
//! room and key), so every peer with the same view of a cell picks the same holders, a
//! member leaving moves only its own slots, and slots spread evenly over members (about
//! k(C-1)/S per peer).

use crate::PeerKey;
use crate::mix::mix64;

/// The seed a peer's bridge scores derive from: bound to the room and the peer's key.
#[cfg(test)]
pub(crate) fn bridge_seed(room: &[u8; 32], peer: &PeerKey) -> u64 {
    crate::assign::peer_seeds(room, peer).bridge
}

/// What a score mixes with a member's seed: the same for every member of (from, to, slot),
/// so a scan over members works it out once.
fn slot_salt(from: u32, to: u32, slot: u8) -> u64 {
    mix64((u64::from(from) << 32) | u64::from(to)) ^ (u64::from(slot) << 56)
}

fn score_with(seed: u64, salt: u64) -> u64 {
    mix64(seed ^ salt)
}

/// A cell member as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) key: PeerKey,
    pub(crate) seed: u64,
}

/// The holders of slots 0..k of cell `from` towards cell `to`, in slot order; fewer than
/// `k` when the cell has fewer members.
pub(crate) fn slot_holders(members: &[Member], from: u32, to: u32, k: u8) -> Vec<PeerKey> {
    let mut holders: Vec<PeerKey> = Vec::with_capacity(usize::from(k));
    for slot in 0..k {
        let salt = slot_salt(from, to, slot);
        let best = members
            .iter()
            .filter(|member| !holders.contains(&member.key))
            .max_by_key(|member| (score_with(member.seed, salt), member.key));
        match best {
            Some(member) => holders.push(member.key),
            None => break,
        }
    }
    holders
}

/// The members outscoring `mine` on `slot` of (`from`, `to`), at most `limit` of them
/// (a scan stops at the next: most members are outscored at once).
fn outscoring(
    members: &[Member],
    mine: &Member,
    salt: u64,
    limit: usize,
    found: &mut Vec<PeerKey>,
) -> bool {
    found.clear();
    let my_score = (score_with(mine.seed, salt), mine.key);
    for member in members {
        if (score_with(member.seed, salt), member.key) > my_score {
            if found.len() == limit {
                return false;
            }
            found.push(member.key);
        }
    }
    true
}

/// The slots `me` holds in cell `my_cell` towards every other cell: (other cell, slot).
///
/// `me` holds slot j of a pair if and only if every member outscoring it there holds a
/// lower slot: so at most j of them, which for most pairs a few members disprove, and only
/// when some outscore it are the lower slots' holders worked out.
pub(crate) fn my_slots(
    members: &[Member],
    me: &PeerKey,
    my_cell: u32,
    cells: u32,
    k: u8,
) -> Vec<(u32, u8)> {
    let Some(mine) = members.iter().find(|member| member.key == *me).copied() else {
        return Vec::new();
    };
    let mut slots = Vec::new();
    let mut above = Vec::new();
    for other in (0..cells).filter(|other| *other != my_cell) {
        for slot in 0..k {
            let salt = slot_salt(my_cell, other, slot);
            if !outscoring(members, &mine, salt, usize::from(slot), &mut above) {
                continue;
            }
            let holds = above.is_empty() || {
                let lower = slot_holders(members, my_cell, other, slot);
                above.iter().all(|key| lower.contains(key))
            };
            if holds {
                slots.push((other, slot));
                // A member holds one slot of a pair at most.
                break;
            }
        }
    }
    slots
}

/// The links every peer would hold in a settled room where everyone knows everyone:
/// adjacency lists over `peers` (indices), for degree bounds and analysis.
pub fn planned_links(
    room: &[u8; 32],
    peers: &[PeerKey],
    config: &crate::OverlayConfig,
) -> Vec<Vec<usize>> {
    let cells = crate::cell_count(peers.len(), config.sizing);
    planned_links_in(room, peers, cells, config)
}

/// As [`planned_links`], for a room whose peers agreed on `cells` cells (a census-driven
/// view may differ from the count automatic sizing gives for exactly these peers).
pub fn planned_links_in(
    room: &[u8; 32],
    peers: &[PeerKey],
    cells: u32,
    config: &crate::OverlayConfig,
) -> Vec<Vec<usize>> {
    let cells = cells.max(1);
    let k = config.bridges_per_pair;
    let mut by_cell: Vec<Vec<(usize, Member)>> = vec![Vec::new(); cells as usize];
    for (i, key) in peers.iter().enumerate() {
        let seeds = crate::assign::peer_seeds(room, key);
        let cell = crate::assign::cell_from_seed(seeds.cell, cells);
        if let Some(list) = by_cell.get_mut(cell as usize) {
            list.push((
                i,
                Member {
                    key: *key,
                    seed: seeds.bridge,
                },
            ));
        }
    }
    let index: std::collections::HashMap<PeerKey, usize> =
        peers.iter().enumerate().map(|(i, key)| (*key, i)).collect();
    let mut links: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); peers.len()];
    let add = |a: usize, b: usize, links: &mut Vec<std::collections::BTreeSet<usize>>| {
        if a != b {
            if let Some(set) = links.get_mut(a) {
                set.insert(b);
            }
            if let Some(set) = links.get_mut(b) {
                set.insert(a);
            }
        }
    };
    for list in &by_cell {
        for (n, (a, _)) in list.iter().enumerate() {
            for (b, _) in list.iter().skip(n + 1) {
                add(*a, *b, &mut links);
            }
        }
    }
    let members: Vec<Vec<Member>> = by_cell
        .iter()
        .map(|list| list.iter().map(|(_, member)| *member).collect())
        .collect();
    for a in 0..cells {
        for b in (a + 1)..cells {
            let (Some(ma), Some(mb)) = (members.get(a as usize), members.get(b as usize)) else {
                continue;
            };
            let ha = slot_holders(ma, a, b, k);
            let hb = slot_holders(mb, b, a, k);
            for (slot, holder) in ha.iter().enumerate() {
                // As the overlay does: slot j's holders are linked; a smaller far cell
                // gives its last holder the extra slots.
                if let Some(other) = hb.get(slot).or_else(|| hb.last()) {
                    if let (Some(x), Some(y)) = (index.get(holder), index.get(other)) {
                        add(*x, *y, &mut links);
                    }
                }
            }
        }
    }
    links
        .into_iter()
        .map(|set| set.into_iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(count: u8) -> Vec<Member> {
        (0..count)
            .map(|i| {
                let key = [i; 32];
                Member {
                    key,
                    seed: bridge_seed(&[0; 32], &key),
                }
            })
            .collect()
    }

    #[test]
    fn holders_are_distinct_and_stable_when_another_member_leaves() {
        let all = members(20);
        let holders = slot_holders(&all, 1, 2, 3);
        assert_eq!(holders.len(), 3);
        assert!(holders[0] != holders[1] && holders[1] != holders[2] && holders[0] != holders[2]);
        // A member holding no slot leaves: nothing moves.
        let bystander = all.iter().find(|m| !holders.contains(&m.key)).unwrap().key;
        let fewer: Vec<Member> = all.iter().copied().filter(|m| m.key != bystander).collect();
        assert_eq!(slot_holders(&fewer, 1, 2, 3), holders);
    }

    #[test]
    fn small_cells_give_fewer_holders() {
        assert_eq!(slot_holders(&members(2), 0, 1, 3).len(), 2);
        assert!(slot_holders(&[], 0, 1, 3).is_empty());
    }

    #[test]
    fn slots_spread_over_the_members() {
        let all = members(50);
        let mut load = vec![0usize; 50];
        for other in 1..200 {
            for holder in slot_holders(&all, 0, other, 3) {
                load[usize::from(holder[0])] += 1;
            }
        }
        // 597 slots over 50 members: about 12 each; none should carry several times that.
        assert!(load.iter().all(|l| *l <= 30), "{load:?}");
    }

    #[test]
    fn my_slots_agree_with_every_cells_holders() {
        // The pruned search finds exactly the slots the full one does, for every member.
        for (count, k) in [(1u8, 3u8), (7, 1), (30, 3), (60, 5)] {
            let all = members(count);
            for member in &all {
                let full: Vec<(u32, u8)> = (0..40u32)
                    .filter(|other| *other != 4)
                    .filter_map(|other| {
                        let holders = slot_holders(&all, 4, other, k);
                        let slot = holders.iter().position(|holder| *holder == member.key)?;
                        Some((other, u8::try_from(slot).unwrap()))
                    })
                    .collect();
                assert_eq!(my_slots(&all, &member.key, 4, 40, k), full);
            }
        }
        assert!(my_slots(&members(5), &[99; 32], 0, 10, 3).is_empty());
    }
}
