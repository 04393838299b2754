//! The simulated network: events, links, topics, crashes, and the tracking of broadcasts.
//!
//! Peer indices here come from the simulator's own tables (never from a message or a
//! file), so indexing by them cannot go out of range.
#![allow(clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::report::Histogram;
use super::scenario::Scenario;
use crate::keyhash::{KeyMap, key_map};
use crate::plan::mix64;
use crate::{
    Delivery, FrameAuth, Input, LinkRole, MeshTopic, Output, Overlay, OverlayConfig, PeerKey,
    SimAuth,
};

/// The simulator's deterministic random source (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(mix64(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

/// Timing of the simulated network.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct NetConfig {
    /// One-way latency, microseconds.
    pub latency_us: u64,
    /// Extra random latency per message, up to this many microseconds.
    pub jitter_us: u64,
    /// Time to notice a crashed peer's links down, microseconds.
    pub detect_us: u64,
}

impl NetConfig {
    /// Latency, jitter and crash detection delay in milliseconds.
    pub fn new(latency_ms: u64, jitter_ms: u64, detect_ms: u64) -> Self {
        Self {
            latency_us: latency_ms * 1_000,
            jitter_us: jitter_ms * 1_000,
            detect_us: detect_ms * 1_000,
        }
    }

    /// From a scenario's milliseconds.
    pub fn from_scenario(scenario: &Scenario) -> Self {
        Self {
            latency_us: scenario.latency_ms * 1_000,
            jitter_us: scenario.jitter_ms * 1_000,
            detect_us: scenario.detect_ms * 1_000,
        }
    }
}

/// Kept small (the queue holds millions): frequent inputs get their own compact variants,
/// the rest are boxed.
#[derive(Debug)]
enum Event {
    Input {
        peer: usize,
        input: Box<Input>,
    },
    Tick {
        peer: usize,
    },
    Announced {
        to: usize,
        from: usize,
        topic: MeshTopic,
        cells: u32,
        epoch: u32,
        count: u32,
    },
    Message {
        from: usize,
        to: usize,
        message: Bytes,
    },
    Establish {
        a: usize,
        b: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Opening,
    Up,
}

struct SimPeer<A> {
    key: PeerKey,
    overlay: Overlay<A>,
    /// Started and neither crashed nor left.
    alive: bool,
    started: bool,
    /// When it started (simulated microseconds).
    started_at: u64,
    /// Crashed or left: never starts again.
    gone: bool,
    // Ordered: a crash schedules its link-downs in the same order every run.
    topics: BTreeSet<MeshTopic>,
    adjacent: BTreeSet<usize>,
}

/// What a relay keeps of an announce: (when, cells, epoch, count).
type StoredAnnounce = (u64, u32, u32, u32);

/// How complete the overlay is, from the simulator's view of links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Distinct cell counts among live peers (1 when they agree).
    pub cell_counts: usize,
    /// Pairs of live cell mates without a link.
    pub missing_intra: usize,
    /// Pairs of cells with no link between them.
    pub unbridged_pairs: usize,
    /// Fewest links between any pair of cells.
    pub min_bridges: Option<usize>,
}

/// Per-broadcast bookkeeping.
struct Tracked {
    /// Peers that should get it: alive and settled (see [`Net::set_settle`]) when it was sent.
    eligible: Vec<bool>,
    payload: Bytes,
    corrupted: bool,
    sent_at: u64,
    delivered: Vec<bool>,
    count: usize,
    last_at: u64,
    max_hops: u8,
}

/// Many overlays on a simulated network. `A` is how they sign and seal: [`SimAuth`] for
/// large runs, [`CryptoAuth`](crate::CryptoAuth) to run the real thing on a few dozen peers.
pub struct Net<A = SimAuth> {
    config: NetConfig,
    base: Instant,
    now: u64,
    seq: u64,
    /// (time, order, slot in `events`): small entries keep the heap fast.
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    events: Vec<Option<Event>>,
    free: Vec<u32>,
    /// What a relay remembers of each topic: announcer -> (time, cell count), so a new
    /// subscriber hears the recent announces at once (replaceable events with an expiry, in
    /// Nostr terms).
    announced: HashMap<MeshTopic, BTreeMap<usize, StoredAnnounce>>,
    announce_memory_us: u64,
    rng: Rng,
    peers: Vec<SimPeer<A>>,
    index: KeyMap<PeerKey, usize>,
    topics: HashMap<MeshTopic, Vec<usize>>,
    links: KeyMap<(usize, usize), LinkState>,
    tracked: KeyMap<(PeerKey, u64), Tracked>,
    hops: Histogram,
    directed_delivered: u64,
    events_processed: u64,
    settle_us: u64,
    debug: bool,
    pub(crate) event_kinds: std::collections::BTreeMap<&'static str, u64>,
}

impl<A> std::fmt::Debug for Net<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("peers", &self.peers.len())
            .field("now_us", &self.now)
            .finish_non_exhaustive()
    }
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    if a < b { (a, b) } else { (b, a) }
}

impl Net<SimAuth> {
    /// `peers` overlays with [`SimAuth`] keys drawn from `seed`, none started yet.
    pub fn new(
        peers: usize,
        overlay: &OverlayConfig,
        room: [u8; 32],
        config: NetConfig,
        seed: u64,
    ) -> Self {
        Self::with_auth(peers, overlay, room, config, seed, |rng| {
            let mut key = [0u8; 32];
            for chunk in key.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            SimAuth::new(key)
        })
    }
}

impl<A: FrameAuth> Net<A> {
    /// `peers` overlays signing and sealing with what `make_auth` returns (it may draw from
    /// the simulator's random source), none started yet.
    pub fn with_auth(
        peers: usize,
        overlay: &OverlayConfig,
        room: [u8; 32],
        config: NetConfig,
        seed: u64,
        mut make_auth: impl FnMut(&mut Rng) -> A,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let mut list = Vec::with_capacity(peers);
        let mut index = key_map(seed);
        for i in 0..peers {
            let auth = make_auth(&mut rng);
            let key = auth.me();
            index.insert(key, i);
            list.push(SimPeer {
                key,
                overlay: Overlay::new(overlay.clone(), room, auth, rng.next_u64()),
                alive: false,
                started: false,
                started_at: 0,
                gone: false,
                topics: BTreeSet::new(),
                adjacent: BTreeSet::new(),
            });
        }
        Self {
            config,
            base: Instant::now(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            announced: HashMap::new(),
            announce_memory_us: u64::try_from(overlay.peer_timeout.as_micros()).unwrap_or(u64::MAX),
            rng,
            peers: list,
            index,
            topics: HashMap::new(),
            links: key_map(seed),
            tracked: key_map(seed),
            hops: Histogram::default(),
            directed_delivered: 0,
            events_processed: 0,
            settle_us: 0,
            debug: std::env::var_os("GENOS_SIM_DEBUG").is_some(),
            event_kinds: std::collections::BTreeMap::new(),
        }
    }

    /// Simulated time, microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.now
    }

    /// Number of peers (alive or not).
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Peer `i`'s overlay.
    pub fn overlay(&self, i: usize) -> Option<&Overlay<A>> {
        self.peers.get(i).map(|peer| &peer.overlay)
    }

    /// Peer `i`'s key.
    pub fn key(&self, i: usize) -> Option<PeerKey> {
        self.peers.get(i).map(|peer| peer.key)
    }

    /// Whether peer `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.peers.get(i).is_some_and(|peer| peer.alive)
    }

    /// Live peers.
    pub fn alive_count(&self) -> usize {
        self.peers.iter().filter(|peer| peer.alive).count()
    }

    /// Events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.events_processed
    }

    /// Open links of peer `i` (simulator's view).
    pub fn degree(&self, i: usize) -> usize {
        self.peers.get(i).map_or(0, |peer| {
            peer.adjacent
                .iter()
                .filter(|other| self.links.get(&pair(i, **other)) == Some(&LinkState::Up))
                .count()
        })
    }

    /// Open links of every live peer.
    pub fn live_degrees(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|i| self.is_alive(*i))
            .map(|i| self.degree(i))
            .collect()
    }

    fn latency(&mut self) -> u64 {
        self.config.latency_us + self.rng.below(self.config.jitter_us + 1)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(entry) = self.events.get_mut(slot as usize) {
                    *entry = Some(event);
                }
                slot
            }
            None => {
                self.events.push(Some(event));
                u32::try_from(self.events.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// Queues `input` for peer `i` at simulated time `at_us`.
    pub fn input_at(&mut self, at_us: u64, i: usize, input: Input) {
        let event = match input {
            Input::Tick => Event::Tick { peer: i },
            input => Event::Input {
                peer: i,
                input: Box::new(input),
            },
        };
        self.schedule(at_us, event);
    }

    /// Starts peer `i` at `at_us`.
    pub fn start_at(&mut self, at_us: u64, i: usize, cells_hint: Option<u32>) {
        self.input_at(at_us, i, Input::Start { cells_hint });
    }

    /// Crashes peer `i` now: it goes silent; its links are noticed down after the
    /// detection delay.
    pub fn crash(&mut self, i: usize) {
        let Some(peer) = self.peers.get_mut(i) else {
            return;
        };
        if !peer.alive {
            return;
        }
        peer.alive = false;
        peer.gone = true;
        let key = peer.key;
        let adjacent: Vec<usize> = std::mem::take(&mut peer.adjacent).into_iter().collect();
        let topics: Vec<MeshTopic> = std::mem::take(&mut peer.topics).into_iter().collect();
        for topic in topics {
            if let Some(list) = self.topics.get_mut(&topic) {
                list.retain(|member| *member != i);
            }
        }
        for other in adjacent {
            self.links.remove(&pair(i, other));
            if let Some(peer) = self.peers.get_mut(other) {
                peer.adjacent.remove(&i);
            }
            let at = self.now + self.config.detect_us;
            self.input_at(at, other, Input::LinkDown { peer: key });
        }
    }

    /// Peer `i` leaves gracefully now: it closes its links (the other ends hear at once)
    /// and its topics.
    pub fn leave(&mut self, i: usize) {
        if !self.is_alive(i) {
            return;
        }
        self.feed(i, Input::Leave);
        if let Some(peer) = self.peers.get_mut(i) {
            peer.alive = false;
            peer.gone = true;
            let topics: Vec<MeshTopic> = std::mem::take(&mut peer.topics).into_iter().collect();
            for topic in topics {
                if let Some(list) = self.topics.get_mut(&topic) {
                    list.retain(|member| *member != i);
                }
            }
        }
    }

    /// From now on a broadcast counts only peers that started at least `settle_us` before
    /// it (a newcomer still joining is not expected to get it). Default 0: every live peer.
    pub fn set_settle(&mut self, settle_us: u64) {
        self.settle_us = settle_us;
    }

    /// Peers never started yet (spares a scenario can bring in later).
    pub fn spares(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|i| self.peers.get(*i).is_some_and(|p| !p.started && !p.gone))
            .collect()
    }

    /// Runs events until simulated time `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while let Some(Reverse((at, _, slot))) = self.queue.peek().copied() {
            if at > until_us {
                break;
            }
            self.queue.pop();
            let Some(event) = self.events.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            self.free.push(slot);
            self.now = at;
            self.events_processed += 1;
            self.dispatch(event);
        }
        self.now = self.now.max(until_us);
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn dispatch(&mut self, event: Event) {
        if self.debug {
            let kind = match &event {
                Event::Tick { .. } => "tick",
                Event::Announced { .. } => "announced",
                Event::Input { input, .. } => match **input {
                    Input::LinkUp { .. } => "link up",
                    Input::LinkDown { .. } => "link down",
                    _ => "other input",
                },
                Event::Message { message, .. } => match message.first() {
                    Some(1) => "frame",
                    Some(2) => "hello",
                    Some(3) => "roster",
                    _ => "message",
                },
                Event::Establish { .. } => "establish",
            };
            *self.event_kinds.entry(kind).or_default() += 1;
        }
        match event {
            Event::Input { peer, input } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    if let Input::Start { .. } = *input {
                        if p.gone || p.started {
                            return;
                        }
                        p.started = true;
                        p.alive = true;
                        p.started_at = self.now;
                    }
                    if !p.alive {
                        return;
                    }
                    self.feed(peer, *input);
                }
            }
            Event::Tick { peer } => {
                if self.is_alive(peer) {
                    self.feed(peer, Input::Tick);
                }
            }
            Event::Announced {
                to,
                from,
                topic,
                cells,
                epoch,
                count,
            } => {
                if self.is_alive(to) {
                    let peer = self.peers[from].key;
                    self.feed(
                        to,
                        Input::Announced {
                            peer,
                            topic,
                            cells,
                            epoch,
                            count,
                        },
                    );
                }
            }
            Event::Message { from, to, message } => {
                if self.links.get(&pair(from, to)) != Some(&LinkState::Up) {
                    return;
                }
                let Some(from_key) = self.peers.get(from).map(|peer| peer.key) else {
                    return;
                };
                if self.is_alive(to) {
                    self.feed(
                        to,
                        Input::Received {
                            from: from_key,
                            message,
                        },
                    );
                }
            }
            Event::Establish { a, b } => {
                if self.links.get(&pair(a, b)) != Some(&LinkState::Opening) {
                    return;
                }
                if self.is_alive(a) && self.is_alive(b) {
                    self.links.insert(pair(a, b), LinkState::Up);
                    for (me, other) in [(a, b), (b, a)] {
                        if let Some(peer) = self.peers.get_mut(me) {
                            peer.adjacent.insert(other);
                        }
                    }
                    let (ka, kb) = (self.peers[a].key, self.peers[b].key);
                    self.feed(a, Input::LinkUp { peer: kb });
                    self.feed(b, Input::LinkUp { peer: ka });
                } else {
                    self.links.remove(&pair(a, b));
                    for (me, other) in [(a, b), (b, a)] {
                        if self.is_alive(me) {
                            let key = self.peers[other].key;
                            let at = self.now + self.config.detect_us;
                            self.input_at(at, me, Input::LinkDown { peer: key });
                        }
                    }
                }
            }
        }
    }

    /// Hands `input` to peer `i` now and carries out its outputs; false if the overlay
    /// refused a command (or there is no such peer).
    fn feed(&mut self, i: usize, input: Input) -> bool {
        let now = self.instant();
        let Some(peer) = self.peers.get_mut(i) else {
            return false;
        };
        let outputs = peer.overlay.handle(input, now);
        let mut accepted = true;
        for output in outputs {
            if matches!(output, Output::Event(crate::OverlayEvent::CommandFailed(_))) {
                accepted = false;
            }
            self.apply(i, output);
        }
        accepted
    }

    fn apply(&mut self, i: usize, output: Output) {
        match output {
            Output::Subscribe(topic) => {
                if self.peers[i].topics.insert(topic) {
                    self.topics.entry(topic).or_default().push(i);
                    let now = self.now;
                    let memory = self.announce_memory_us;
                    let recent: Vec<(usize, u32, u32, u32)> = self
                        .announced
                        .get(&topic)
                        .into_iter()
                        .flatten()
                        .filter(|(peer, (at, ..))| **peer != i && now.saturating_sub(*at) < memory)
                        .map(|(peer, (_, cells, epoch, count))| (*peer, *cells, *epoch, *count))
                        .collect();
                    for (peer, cells, epoch, count) in recent {
                        let at = self.now + self.latency() + self.latency();
                        self.schedule(
                            at,
                            Event::Announced {
                                to: i,
                                from: peer,
                                topic,
                                cells,
                                epoch,
                                count,
                            },
                        );
                    }
                }
            }
            Output::Unsubscribe(topic) => {
                if self.peers[i].topics.remove(&topic) {
                    if let Some(list) = self.topics.get_mut(&topic) {
                        list.retain(|member| *member != i);
                    }
                }
            }
            Output::Announce {
                topic,
                cells,
                epoch,
                count,
            } => {
                self.announced
                    .entry(topic)
                    .or_default()
                    .insert(i, (self.now, cells, epoch, count));
                let subscribers = self.topics.get(&topic).cloned().unwrap_or_default();
                for subscriber in subscribers {
                    if subscriber != i {
                        // Publisher -> relay -> subscriber.
                        let at = self.now + self.latency() + self.latency();
                        self.schedule(
                            at,
                            Event::Announced {
                                to: subscriber,
                                from: i,
                                topic,
                                cells,
                                epoch,
                                count,
                            },
                        );
                    }
                }
            }
            Output::Connect(peer) => {
                let Some(&other) = self.index.get(&peer) else {
                    return;
                };
                let key = pair(i, other);
                if other == i || self.links.contains_key(&key) {
                    return;
                }
                self.links.insert(key, LinkState::Opening);
                // Offer, answer and ICE checks: about three one-way trips.
                let at = self.now + 3 * self.latency();
                self.schedule(at, Event::Establish { a: i, b: other });
            }
            Output::Disconnect(peer) => {
                let Some(&other) = self.index.get(&peer) else {
                    return;
                };
                if self.links.remove(&pair(i, other)).is_some() {
                    self.peers[i].adjacent.remove(&other);
                    self.peers[other].adjacent.remove(&i);
                    let key = self.peers[i].key;
                    let at = self.now + self.latency();
                    self.input_at(at, other, Input::LinkDown { peer: key });
                }
            }
            Output::Send { to, message } => {
                let Some(&other) = self.index.get(&to) else {
                    return;
                };
                let at = self.now + self.latency();
                self.schedule(
                    at,
                    Event::Message {
                        from: i,
                        to: other,
                        message,
                    },
                );
            }
            Output::WakeAt(when) => {
                let at = u64::try_from(when.saturating_duration_since(self.base).as_micros())
                    .unwrap_or(u64::MAX);
                self.input_at(at.max(self.now), i, Input::Tick);
            }
            Output::Deliver(delivery) => self.record(i, &delivery),
            Output::Event(crate::OverlayEvent::CellsChanged { cells, .. }) => {
                if std::env::var_os("GENOS_SIM_DEBUG").is_some() && self.now > 5_000_000 {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("t={} peer {i} cells -> {cells}", self.now / 1000);
                    }
                }
            }
            Output::Event(_) => {}
        }
    }

    fn record(&mut self, i: usize, delivery: &Delivery) {
        if delivery.directed {
            self.directed_delivered += 1;
            return;
        }
        let now = self.now;
        if let Some(tracked) = self.tracked.get_mut(&(delivery.origin, delivery.seq)) {
            if delivery.payload != tracked.payload || delivery.meta.as_ref() != b"sim" {
                tracked.corrupted = true;
            }
            if let Some(seen) = tracked.delivered.get_mut(i) {
                if !*seen {
                    *seen = true;
                    tracked.count += 1;
                    tracked.last_at = now;
                    tracked.max_hops = tracked.max_hops.max(delivery.hops);
                    self.hops.add(u64::from(delivery.hops));
                } else {
                    // Delivered twice to the application: the overlay's dedup failed.
                    tracked.count = usize::MAX / 2;
                }
            }
        }
    }

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
            .map(|p| p.alive && now_us.saturating_sub(p.started_at) >= self.settle_us)
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
            },
        );
        Some((key, seq))
    }

    /// Originates a tracked broadcast from a random live peer now.
    pub fn broadcast_from_random(&mut self, payload: Bytes) -> Option<(PeerKey, u64)> {
        let origin = self.random_live()?;
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
    /// last delivery in microseconds, delivered twice anywhere or altered).
    pub fn broadcast_outcome(&self, id: &(PeerKey, u64)) -> Option<(usize, usize, u8, u64, bool)> {
        let tracked = self.tracked.get(id)?;
        let twice = tracked.count >= usize::MAX / 4 || tracked.corrupted;
        let mut got = 0;
        let mut live = 0;
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.alive && tracked.eligible.get(i).copied().unwrap_or(false) {
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

    /// Forgets tracked broadcasts and the hop histogram.
    pub fn reset_tracking(&mut self) -> Histogram {
        self.tracked.clear();
        std::mem::take(&mut self.hops)
    }

    /// Random live peer.
    pub fn random_live(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.peers.len())
            .filter(|i| self.is_alive(*i))
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
            .filter(|peer| peer.alive)
            .map(|peer| metric(peer.overlay.metrics()))
            .sum()
    }

    /// How complete the overlay is among live peers, from the simulator's view of links.
    pub fn health(&self) -> Health {
        let mut by_cell: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut cells_seen = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.alive && peer.started {
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
                    "missing: peer {i} cell {} (origin {origin} cell {}), roster {}, leader {}, links {}: {}",
                    o.cell(),
                    oo.cell(),
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
