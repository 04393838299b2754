//! Lazy repair, in the spirit of Plumtree: the eager path (origin cell -> bridges -> remote
//! cells) carries every broadcast once; besides it, each peer tells two links (a bridge and
//! a cell mate, picked anew each time) the ids it accepted lately. A peer that hears of an id
//! it lacks waits `repair_wait` (the eager path, backups included, usually wins), then pulls
//! the frame from a peer that offered it, and forwards what it pulled as if it had come
//! eagerly (a frame from another cell into its own cell, a frame of its own cell over its
//! bridges). A cell whose every bridge from the origin's cell died hears the ids from its
//! bridges to the other cells, so a mass crash costs a pull round trip, not the seconds
//! until the crash is noticed and the plan repaired.
//!
//! Everything is bounded: the frames kept to answer pulls (count, bytes, age), the ids
//! waited for, the ids per digest, and the answers one peer gets for one id.

use std::collections::VecDeque;

use super::*;
use crate::wire::FrameKey;

/// Answers one kept frame gives at most (a peer pulling it again and again gets nothing
/// more; honest pullers ask at most three peers once each).
const MAX_ANSWERS: u8 = 4;
/// Peers a missing id may be pulled from, in the order they offered it.
const MAX_SOURCES: usize = 3;

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
    kept: KeyMap<FrameKey, Kept>,
    kept_order: VecDeque<(Instant, FrameKey)>,
    kept_bytes: usize,
    /// Ids accepted since the last digest, oldest first.
    fresh: Vec<FrameKey>,
    next_digest: Option<Instant>,
    wanted: KeyMap<FrameKey, Wanted>,
    /// Due times of `wanted`; entries for ids since resolved stay until their time.
    wanted_order: BinaryHeap<Reverse<(Instant, PeerKey, u64)>>,
}

impl RepairState {
    pub(super) fn new(hash_seed: u64) -> Self {
        Self {
            kept: key_map(hash_seed),
            kept_order: VecDeque::new(),
            kept_bytes: 0,
            fresh: Vec::new(),
            next_digest: None,
            wanted: key_map(hash_seed),
            wanted_order: BinaryHeap::new(),
        }
    }

    /// The earliest time repair needs a tick.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let pull = self.wanted_order.peek().map(|Reverse((due, ..))| *due);
        match (self.next_digest, pull) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<A: FrameAuth> Overlay<A> {
    fn repair_on(&self) -> bool {
        !self.config.digest_interval.is_zero()
    }

    /// Remembers an accepted broadcast (as `message`, the bytes it came in) to answer pulls
    /// and to name in the next digest.
    pub(super) fn keep_for_repair(
        &mut self,
        key: FrameKey,
        message: Bytes,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let _ = out;
        self.repair.wanted.remove(&key);
        if !self.repair_on() {
            return;
        }
        let state = &mut self.repair;
        state.kept_bytes += message.len();
        if state
            .kept
            .insert(
                key,
                Kept {
                    message,
                    answers: 0,
                },
            )
            .is_none()
        {
            state.kept_order.push_back((now, key));
        }
        self.trim_kept(now);
        let state = &mut self.repair;
        if state.fresh.len() >= self.config.max_digest_ids {
            state.fresh.remove(0);
        }
        state.fresh.push(key);
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
    pub(super) fn on_digest(&mut self, from: PeerKey, ids: Vec<FrameKey>, now: Instant) {
        if !self.repair_on() || self.phase != Phase::Running {
            return;
        }
        for key in ids {
            if key.0 == self.me || self.seen.check(&key.0, key.1).is_err() {
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
    pub(super) fn on_pull(&mut self, from: PeerKey, ids: Vec<FrameKey>, out: &mut Vec<Output>) {
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
            self.repair.next_digest = None;
            let ids = std::mem::take(&mut self.repair.fresh);
            if !ids.is_empty() {
                self.send_digest(&ids, out);
            }
        }
        let mut pulls: Vec<(PeerKey, Vec<FrameKey>)> = Vec::new();
        while let Some(Reverse((due, origin, seq))) = self.repair.wanted_order.peek().copied() {
            if due > now {
                break;
            }
            self.repair.wanted_order.pop();
            let key = (origin, seq);
            let Some(wanted) = self.repair.wanted.get_mut(&key) else {
                continue;
            };
            if wanted.due != due {
                continue;
            }
            if self.seen.check(&origin, seq).is_err() {
                self.repair.wanted.remove(&key);
                continue;
            }
            // Ask the next peer that offered it over a link still up, then wait again.
            let links = &self.links;
            let mut source = None;
            while let Some(peer) = wanted.sources.get(wanted.tries).copied() {
                wanted.tries += 1;
                if links.get(&peer).is_some_and(|link| link.up) {
                    source = Some(peer);
                    break;
                }
            }
            let Some(source) = source else {
                self.repair.wanted.remove(&key);
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

    /// One digest to a random bridge and a random cell mate (two of either if the other
    /// kind is missing).
    fn send_digest(&mut self, ids: &[FrameKey], out: &mut Vec<Output>) {
        let cache = self.link_cache();
        let mut targets: Vec<PeerKey> = Vec::with_capacity(2);
        let pick = |list: &[PeerKey], fraction: f64| -> Option<PeerKey> {
            let index = (fraction * list.len() as f64) as usize;
            list.get(index.min(list.len().saturating_sub(1))).copied()
        };
        let (a, b) = (self.random_fraction(), self.random_fraction());
        match (cache.bridges.is_empty(), cache.intra.is_empty()) {
            (false, false) => {
                targets.extend(pick(&cache.bridges, a));
                targets.extend(pick(&cache.intra, b));
            }
            (false, true) | (true, false) => {
                let list = if cache.bridges.is_empty() {
                    &cache.intra
                } else {
                    &cache.bridges
                };
                targets.extend(pick(list, a));
                if let Some(other) = pick(list, b).filter(|peer| !targets.contains(peer)) {
                    targets.push(other);
                }
            }
            (true, true) => {}
        }
        self.link_cache = Some(cache);
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
