//! Traffic and measurement on the simulated network: tracked broadcasts and directed sends,
//! random choices for scenarios, health and bridge figures.
#![allow(clippy::indexing_slicing)]

use super::*;

impl<A: FrameAuth> Net<A> {
    /// Originates a tracked broadcast from peer `i` now and returns its id.
    pub fn broadcast_now(&mut self, i: usize, payload: Bytes) -> Option<(PeerKey, u64)> {
        let key = self.key(i)?;
        if !self.is_alive(i) {
            return None;
        }
        // Sending only schedules events, so tracking can start right after.
        let accepted = self.feed(
            i,
            Input::Broadcast {
                meta: Bytes::from_static(b"sim"),
                payload: payload.clone(),
            },
        );
        if !accepted {
            return None;
        }
        // The sequence number just used is the one before the overlay's next.
        let seq = self.peers[i].overlay.last_seq()?;
        let mut delivered = vec![false; self.peers.len()];
        if let Some(slot) = delivered.get_mut(i) {
            *slot = true;
        }
        let now_us = self.now;
        let eligible = self
            .peers
            .iter()
            .zip(&self.alive)
            .map(|(p, alive)| *alive && now_us.saturating_sub(p.started_at) >= self.settle_us)
            .collect();
        self.tracked.insert(
            (key, seq),
            Tracked {
                eligible,
                payload,
                corrupted: false,
                sent_at: self.now,
                delivered,
                count: 1,
                last_at: self.now,
                max_hops: 0,
                eager_last_at: self.now,
                eager_max_hops: 0,
            },
        );
        Some((key, seq))
    }

    /// Originates a tracked broadcast from a random live peer now: a settled one (see
    /// [`Net::set_settle`]; a newcomer still joining cannot send yet). None if the overlay
    /// refused (or no peer is settled).
    pub fn broadcast_from_random(&mut self, payload: Bytes) -> Option<(PeerKey, u64)> {
        let now = self.now;
        let settle = self.settle_us;
        let settled: Vec<usize> = (0..self.peers.len())
            .filter(|i| {
                let peer = &self.peers[*i];
                self.alive[*i] && now.saturating_sub(peer.started_at) >= settle
            })
            .collect();
        if settled.is_empty() {
            return None;
        }
        let pick = self.rng.below(settled.len() as u64) as usize;
        let origin = *settled.get(pick)?;
        self.broadcast_now(origin, payload)
    }

    /// Sends a directed frame from `i` to `j` now. False if the overlay refused.
    pub fn send_now(&mut self, i: usize, j: usize) -> bool {
        let Some(target) = self.key(j) else {
            return false;
        };
        self.feed(
            i,
            Input::SendTo {
                target,
                meta: Bytes::from_static(b"sim"),
                payload: Bytes::from_static(b"directed"),
            },
        )
    }

    /// Directed payloads delivered so far.
    pub fn directed_delivered(&self) -> u64 {
        self.directed_delivered
    }

    /// For a tracked broadcast: (live peers that got it, live peers, max hops, time to the
    /// last delivery in microseconds, delivered twice anywhere or altered). Hops and time
    /// count every delivery, repaired ones too; see [`Self::eager_outcome`].
    pub fn broadcast_outcome(&self, id: &(PeerKey, u64)) -> Option<(usize, usize, u8, u64, bool)> {
        let tracked = self.tracked.get(id)?;
        let twice = tracked.count >= usize::MAX / 4 || tracked.corrupted;
        let mut got = 0;
        let mut live = 0;
        for (i, alive) in self.alive.iter().enumerate() {
            if *alive && tracked.eligible.get(i).copied().unwrap_or(false) {
                live += 1;
                if tracked.delivered.get(i).copied().unwrap_or(false) {
                    got += 1;
                }
            }
        }
        Some((
            got,
            live,
            tracked.max_hops,
            tracked.last_at.saturating_sub(tracked.sent_at),
            twice,
        ))
    }

    /// For a tracked broadcast, over the deliveries of the eager path (no repair): (max
    /// hops, time to the last such delivery in microseconds).
    pub fn eager_outcome(&self, id: &(PeerKey, u64)) -> Option<(u8, u64)> {
        let tracked = self.tracked.get(id)?;
        Some((
            tracked.eager_max_hops,
            tracked.eager_last_at.saturating_sub(tracked.sent_at),
        ))
    }

    /// Forgets tracked broadcasts and the hop histogram (eager deliveries only).
    pub fn reset_tracking(&mut self) -> Histogram {
        self.tracked.clear();
        std::mem::take(&mut self.hops)
    }

    /// Random live peer.
    pub fn random_live(&mut self) -> Option<usize> {
        self.random_live_except(&[])
    }

    /// A random live peer that is none of `spared`.
    pub fn random_live_except(&mut self, spared: &[PeerKey]) -> Option<usize> {
        let live: Vec<usize> = (0..self.peers.len())
            .filter(|i| self.is_alive(*i) && self.key(*i).is_none_or(|key| !spared.contains(&key)))
            .collect();
        if live.is_empty() {
            return None;
        }
        let pick = self.rng.below(live.len() as u64) as usize;
        live.get(pick).copied()
    }

    /// Random number below `bound`, from the simulator's source.
    pub fn random_u64_below(&mut self, bound: u64) -> u64 {
        self.rng.below(bound)
    }

    /// Random index below `n`.
    pub fn random_below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    /// Sum of a metric over live peers.
    pub fn sum_metric(&self, metric: impl Fn(&crate::OverlayMetrics) -> u64) -> u64 {
        self.peers
            .iter()
            .zip(&self.alive)
            .filter(|(_, alive)| **alive)
            .map(|(peer, _)| metric(peer.overlay.metrics()))
            .sum()
    }

    /// How complete the overlay is among live peers, from the simulator's view of links.
    pub fn health(&self) -> Health {
        let mut by_cell: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut cells_seen = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if self.alive[i] && peer.started {
                by_cell.entry(peer.overlay.cell()).or_default().push(i);
                cells_seen.insert(peer.overlay.cells());
            }
        }
        let mut health = Health {
            cell_counts: cells_seen.len(),
            ..Health::default()
        };
        for members in by_cell.values() {
            for (n, a) in members.iter().enumerate() {
                for b in members.iter().skip(n + 1) {
                    if self.links.get(&pair(*a, *b)) != Some(&LinkState::Up) {
                        health.missing_intra += 1;
                        if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
                            let knows = |x: usize, y: usize| {
                                let key = self.peers[y].overlay.me();
                                self.peers[x].overlay.cell_members().any(|m| m == key)
                            };
                            #[allow(clippy::print_stderr)]
                            {
                                eprintln!(
                                    "t={} missing cell link {a}-{b}: {:?}, members {} {}, failures {} {}",
                                    self.now / 1000,
                                    self.links.get(&pair(*a, *b)),
                                    knows(*a, *b),
                                    knows(*b, *a),
                                    self.peers[*a].overlay.metrics().setup_failures,
                                    self.peers[*b].overlay.metrics().setup_failures,
                                );
                            }
                        }
                    }
                }
            }
        }
        let mut bridges: HashMap<(u32, u32), usize> = HashMap::new();
        for ((a, b), state) in &self.links {
            if *state != LinkState::Up || !self.is_alive(*a) || !self.is_alive(*b) {
                continue;
            }
            let (ca, cb) = (self.peers[*a].overlay.cell(), self.peers[*b].overlay.cell());
            if ca != cb {
                *bridges.entry((ca.min(cb), ca.max(cb))).or_default() += 1;
            }
        }
        let cells: Vec<u32> = by_cell.keys().copied().collect();
        for (n, a) in cells.iter().enumerate() {
            for b in cells.iter().skip(n + 1) {
                let count = bridges
                    .get(&((*a).min(*b), (*a).max(*b)))
                    .copied()
                    .unwrap_or(0);
                if count == 0 {
                    health.unbridged_pairs += 1;
                }
                health.min_bridges =
                    Some(health.min_bridges.map_or(count, |m: usize| m.min(count)));
            }
        }
        health
    }

    #[allow(clippy::print_stderr)]
    pub(crate) fn explain_missing(&self, id: &(PeerKey, u64)) {
        let Some(tracked) = self.tracked.get(id) else {
            return;
        };
        let origin = self.index.get(&id.0).copied().unwrap_or(0);
        for (i, got) in tracked.delivered.iter().enumerate() {
            if !*got && self.is_alive(i) {
                let o = &self.peers[i].overlay;
                let oo = &self.peers[origin].overlay;
                let roles: Vec<String> = o
                    .links()
                    .map(|(k, r)| format!("{}:{:?}", self.index.get(&k).copied().unwrap_or(0), r))
                    .collect();
                eprintln!(
                    "missing: peer {i} {:?} seq {} tag {:x} cell {} (origin {origin} cell {}), {}, roster {}, leader {}, links {}: {}",
                    &self.keys[i][..4],
                    id.1,
                    u64::from_be_bytes(id.0[..8].try_into().unwrap_or([0; 8])),
                    o.cell(),
                    oo.cell(),
                    o.repair_summary(),
                    o.roster_len(),
                    o.is_leader(),
                    roles.len(),
                    roles.join(" ")
                );
            }
        }
    }

    /// Bridge links (either end) as (a, b) index pairs, for pictures.
    pub fn bridge_links(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, peer) in self.peers.iter().enumerate() {
            for (other, role) in peer.overlay.links() {
                if let (LinkRole::Bridge { .. }, Some(&j)) = (role, self.index.get(&other)) {
                    if i < j {
                        out.push((i, j));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
