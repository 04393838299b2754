//! Lazy repair, in the spirit of Plumtree: the eager path (origin cell -> bridges -> remote
//! cells) carries every broadcast once; besides it, each peer tells four links (a random
//! bridge, the cell mates one step and half a cell after it in key order, and a random cell
//! mate) the ids it accepted lately, each id in three consecutive digests. A peer that hears
//! of an id it lacks waits `repair_wait` (the eager path, backups included, usually wins),
//! then pulls the frame from a peer that offered it, and forwards what it pulled as if it
//! had come eagerly (a frame from another cell into its own cell, a frame of its own cell
//! over its bridges). A cell whose every bridge from the origin's cell died hears the ids
//! from its bridges to the other cells, so a mass crash costs a pull round trip, not the
//! seconds until the crash is noticed and the plan repaired.
//!
//! Everything is bounded: the frames kept to answer pulls (count, bytes, age), the ids
//! waited for, the ids per digest, and the answers one peer gets for one id.

use std::collections::VecDeque;

use super::*;
use crate::wire::{ShortId, origin_tag};

/// Answers one kept frame gives at most: after a mass crash a peer that got a frame early is
/// offered to (and pulled by) several cell mates that missed it; beyond this, pulls go
/// unanswered (the puller asks the next peer that offered it), which bounds what a peer
/// pulling again and again can draw.
const MAX_ANSWERS: u8 = 16;
/// Peers a missing id may be pulled from, in the order they offered it.
const MAX_SOURCES: usize = 3;
/// Pulls for one missing id at most.
const MAX_PULLS: usize = 3;

#[derive(Debug)]
struct Kept {
    message: Bytes,
    answers: u8,
}

#[derive(Debug)]
struct Wanted {
    due: Instant,
    sources: Vec<PeerKey>,
    /// Pulls sent so far.
    tries: usize,
}

/// The repair state of one peer.
#[derive(Debug)]
pub(super) struct RepairState {
    kept: KeyMap<ShortId, Kept>,
    kept_order: VecDeque<(Instant, ShortId)>,
    kept_bytes: usize,
    /// Ids accepted since the last digest, oldest first.
    fresh: Vec<ShortId>,
    /// Missing ids given up on (every pull unanswered), for debugging output.
    given_up: u64,
    /// Which of three consecutive digests this is: each goes to ring successors one
    /// further on than the one before.
    round: u8,
    /// The ids new in the last digest and in the one before: named again in the next
    /// (to other links), so a peer that missed a frame rarely misses every digest naming it.
    previous: [Vec<ShortId>; 2],
    next_digest: Option<Instant>,
    wanted: KeyMap<ShortId, Wanted>,
    /// Due times of `wanted`; entries for ids since resolved stay until their time.
    wanted_order: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

impl RepairState {
    pub(super) fn new(hash_seed: u64) -> Self {
        Self {
            kept: key_map(hash_seed),
            kept_order: VecDeque::new(),
            kept_bytes: 0,
            fresh: Vec::new(),
            given_up: 0,
            round: 0,
            previous: [Vec::new(), Vec::new()],
            next_digest: None,
            wanted: key_map(hash_seed),
            wanted_order: BinaryHeap::new(),
        }
    }

    /// The earliest time repair needs a tick.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let pull = self.wanted_order.peek().map(|Reverse((due, ..))| *due);
        self.next_digest.into_iter().chain(pull).min()
    }
}

impl<A: FrameAuth> Overlay<A> {
    /// Repair state in a line, for the simulator's debugging output.
    #[cfg(feature = "sim")]
    pub(crate) fn repair_summary(&self) -> String {
        format!(
            "kept {} wanted {} given up {} fresh {} digests {} pulls {} repaired {} dropped {} dup {}",
            self.repair.kept.len(),
            self.repair.wanted.len(),
            self.repair.given_up,
            self.repair.fresh.len(),
            self.metrics.digests_sent,
            self.metrics.pulls_sent,
            self.metrics.repaired,
            self.metrics.dropped,
            self.metrics.duplicates
        )
    }

    /// One of `list` at random (None if it is empty).
    fn random_pick(&mut self, list: &[PeerKey]) -> Option<PeerKey> {
        if list.is_empty() {
            return None;
        }
        let index = (self.random_fraction() * list.len() as f64) as usize;
        list.get(index.min(list.len() - 1)).copied()
    }

    fn repair_on(&self) -> bool {
        !self.config.digest_interval.is_zero()
    }

    /// Whether the broadcast `id` names was accepted already (an origin never heard of has
    /// nothing accepted).
    fn has_accepted(&self, id: ShortId) -> bool {
        // Digests name recent ids, almost always still kept: one lookup instead of two.
        self.repair.kept.contains_key(&id) || self.seen.check_tag(id.0, id.1).is_err()
    }

    /// Remembers an accepted broadcast (as `message`, the bytes it came in) to answer pulls
    /// and to name in the next digest.
    pub(super) fn keep_for_repair(&mut self, key: (PeerKey, u64), message: Bytes, now: Instant) {
        let tag = origin_tag(&key.0);
        let id = (tag, key.1);
        self.repair.wanted.remove(&id);
        if !self.repair_on() {
            return;
        }
        let state = &mut self.repair;
        state.kept_bytes += message.len();
        if state
            .kept
            .insert(
                id,
                Kept {
                    message,
                    answers: 0,
                },
            )
            .is_none()
        {
            state.kept_order.push_back((now, id));
        }
        self.trim_kept(now);
        let state = &mut self.repair;
        if state.fresh.len() >= self.config.max_digest_ids {
            state.fresh.remove(0);
        }
        state.fresh.push(id);
        if state.next_digest.is_none() {
            state.next_digest = Some(now + self.config.digest_interval);
        }
    }

    fn trim_kept(&mut self, now: Instant) {
        let window = self.config.repair_window;
        let state = &mut self.repair;
        while let Some((at, key)) = state.kept_order.front().copied() {
            let over = state.kept_order.len() > self.config.max_repair_frames
                || state.kept_bytes > self.config.max_repair_bytes
                || now.saturating_duration_since(at) >= window;
            if !over {
                break;
            }
            state.kept_order.pop_front();
            if let Some(kept) = state.kept.remove(&key) {
                state.kept_bytes = state.kept_bytes.saturating_sub(kept.message.len());
            }
        }
    }

    /// A digest from `from`: schedule pulls for the ids this peer lacks.
    pub(super) fn on_digest(&mut self, from: PeerKey, ids: Vec<ShortId>, now: Instant) {
        if !self.repair_on() || self.phase != Phase::Running {
            return;
        }
        let mine = origin_tag(&self.me);
        for key in ids {
            if key.0 == mine || self.has_accepted(key) {
                continue;
            }
            match self.repair.wanted.get_mut(&key) {
                Some(wanted) => {
                    if wanted.sources.len() < MAX_SOURCES && !wanted.sources.contains(&from) {
                        wanted.sources.push(from);
                    }
                }
                None => {
                    if self.repair.wanted.len() >= self.config.max_wanted {
                        continue;
                    }
                    // A little jitter spreads the pulls of a cell that missed a frame
                    // together, so the first puller's forward cancels most others.
                    let wait = self
                        .config
                        .repair_wait
                        .mul_f64(1.0 + 0.5 * self.random_fraction());
                    let due = now + wait;
                    self.repair.wanted.insert(
                        key,
                        Wanted {
                            due,
                            sources: vec![from],
                            tries: 0,
                        },
                    );
                    self.repair.wanted_order.push(Reverse((due, key.0, key.1)));
                }
            }
        }
    }

    /// A pull from `from`: answer with the frames still kept.
    pub(super) fn on_pull(&mut self, from: PeerKey, ids: Vec<ShortId>, out: &mut Vec<Output>) {
        for key in ids {
            let Some(kept) = self.repair.kept.get_mut(&key) else {
                continue;
            };
            if kept.answers >= MAX_ANSWERS {
                continue;
            }
            kept.answers += 1;
            if let Some(answer) = wire::repair_from(&kept.message) {
                self.metrics.repairs_sent += 1;
                self.metrics.repair_bytes_sent += answer.len() as u64;
                self.send(from, answer, out);
            }
        }
    }

    /// Sends the digest and the pulls that are due.
    pub(super) fn run_repair(&mut self, now: Instant, out: &mut Vec<Output>) {
        if !self.repair_on() {
            return;
        }
        self.trim_kept(now);
        if self.repair.next_digest.is_some_and(|at| now >= at) {
            let fresh = std::mem::take(&mut self.repair.fresh);
            let [older, last] = &mut self.repair.previous;
            let mut ids = std::mem::replace(older, std::mem::replace(last, fresh.clone()));
            ids.extend_from_slice(older);
            ids.extend(fresh);
            let max = self.config.max_digest_ids.max(1);
            if ids.len() > max {
                ids.drain(..ids.len() - max);
            }
            // Keep the timer going while ids still wait for their second or third digest.
            self.repair.next_digest = self
                .repair
                .previous
                .iter()
                .any(|ids| !ids.is_empty())
                .then(|| now + self.config.digest_interval);
            if !ids.is_empty() {
                self.send_digest(&ids, out);
            }
        }
        let mut pulls: Vec<(PeerKey, Vec<ShortId>)> = Vec::new();
        while let Some(Reverse((due, origin, seq))) = self.repair.wanted_order.peek().copied() {
            if due > now {
                break;
            }
            self.repair.wanted_order.pop();
            let key = (origin, seq);
            if self
                .repair
                .wanted
                .get(&key)
                .is_none_or(|wanted| wanted.due != due)
            {
                continue;
            }
            if self.has_accepted(key) {
                self.repair.wanted.remove(&key);
                continue;
            }
            let Some(wanted) = self.repair.wanted.get_mut(&key) else {
                continue;
            };
            // Ask the next peer that offered it over a link still up, then wait again.
            let links = &self.links;
            let mut source = None;
            // Three pulls at most, going round the peers that offered it (a pull or its
            // answer may be lost).
            while wanted.tries < MAX_PULLS {
                let peer = wanted
                    .sources
                    .get(wanted.tries % wanted.sources.len().max(1))
                    .copied();
                wanted.tries += 1;
                if let Some(peer) = peer.filter(|peer| links.get(peer).is_some_and(|link| link.up))
                {
                    source = Some(peer);
                    break;
                }
            }
            let Some(source) = source else {
                self.repair.wanted.remove(&key);
                self.repair.given_up += 1;
                continue;
            };
            let next = now + self.config.repair_wait;
            wanted.due = next;
            self.repair.wanted_order.push(Reverse((next, origin, seq)));
            match pulls.iter_mut().find(|(peer, _)| *peer == source) {
                Some((_, ids)) => ids.push(key),
                None => pulls.push((source, vec![key])),
            }
        }
        for (peer, ids) in pulls {
            for chunk in ids.chunks(self.config.max_digest_ids.max(1)) {
                self.metrics.pulls_sent += 1;
                let pull = wire::encode_pull(chunk);
                self.metrics.repair_bytes_sent += pull.len() as u64;
                self.send(peer, pull, out);
            }
        }
    }

    /// A link became a bridge (or a cell mate linked in a young view): name every
    /// broadcast still kept to it, newest first, at most `max_wanted` ids (what the far side
    /// waits for at most) in digests of `max_digest_ids`. Broadcasts sent while this cell had
    /// no bridge there (a view changed, a bridge was replaced, every cell mate crashed) were
    /// digested to nobody across; the far side pulls what it lacks and carries it into its
    /// cell, so they arrive late rather than never.
    pub(super) fn catch_up(&mut self, peer: PeerKey, out: &mut Vec<Output>) {
        if !self.repair_on() {
            return;
        }
        let mut ids: Vec<ShortId> = self
            .repair
            .kept_order
            .iter()
            .rev()
            .map(|(_, id)| *id)
            .filter(|id| self.repair.kept.contains_key(id))
            .take(self.config.max_wanted.max(1))
            .collect();
        ids.reverse();
        for chunk in ids.chunks(self.config.max_digest_ids.max(1)) {
            let message = wire::encode_digest(chunk);
            self.metrics.digests_sent += 1;
            self.metrics.repair_bytes_sent += message.len() as u64;
            self.send(peer, message, out);
        }
    }

    /// One digest to a random bridge, to the cell mates one step and half a cell on in key
    /// order (two steps and half a cell plus one in the next digest, three and half plus two
    /// in the one after: a ring with chords, so every peer hears each id from six fixed
    /// predecessors far apart and a peer that missed a frame is all but sure to hear of it),
    /// and to one cell mate at random.
    fn send_digest(&mut self, ids: &[ShortId], out: &mut Vec<Output>) {
        let cache = self.link_cache();
        let mut targets: Vec<PeerKey> = Vec::with_capacity(4);
        targets.extend(self.random_pick(&cache.bridges));
        // Drawn here to keep the order of draws (bridge, then cell mate) of every run.
        let random_mate = self.random_pick(&cache.intra);
        self.link_cache = Some(cache);
        let mine = self
            .members
            .iter()
            .position(|member| member.key == self.me)
            .unwrap_or(0);
        let count = self.members.len();
        // Two ring successors: the next cell mate in key order and the one half a cell on
        // (a chord), each the first with an up link from there. A run of neighbours that all
        // missed a frame still hears of it from across the ring.
        // Each digest goes one further than the one before (2 and half + 1, then 3 and half
        // + 2), so each id reaches six fixed successors over its three digests: a peer misses
        // it only if all six predecessors died together (a mass crash is noticed only
        // seconds later; with four, 1 in 120 live peers lost all of them in a 30% crash
        // and relied on the random picks alone).
        let shift = usize::from(self.repair.round);
        self.repair.round = (self.repair.round + 1) % 3;
        for start in [1 + shift, (count / 2).max(1) + shift] {
            for step in start..start + count {
                let Some(member) = self.members.get((mine + step) % count.max(1)) else {
                    break;
                };
                let up = member.key != self.me
                    && self
                        .links
                        .get(&member.key)
                        .is_some_and(|link| link.up && link.role == LinkRole::Intra);
                if up {
                    if !targets.contains(&member.key) {
                        targets.push(member.key);
                    }
                    break;
                }
            }
        }
        // And one cell mate at random: a peer whose ring predecessors crashed together
        // (unnoticed for seconds) still hears of what it missed.
        if let Some(peer) = random_mate.filter(|peer| !targets.contains(peer)) {
            targets.push(peer);
        }
        if targets.is_empty() {
            return;
        }
        let message = wire::encode_digest(ids);
        for peer in targets {
            self.metrics.digests_sent += 1;
            self.metrics.repair_bytes_sent += message.len() as u64;
            self.send(peer, message.clone(), out);
        }
    }
}
