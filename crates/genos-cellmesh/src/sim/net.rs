//! The simulated network and the scenario runner.
//!
//! Peer indices here come from the simulator's own tables (never from a message or a
//! file), so indexing by them cannot go out of range.
#![allow(clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::baseline::Baseline;
use super::report::{Histogram, Report, RunFigures, Stats};
use super::scenario::Scenario;
use crate::keyhash::{KeyMap, key_map};
use crate::plan::mix64;
use crate::{
    Delivery, FrameAuth, Input, LinkRole, Output, Overlay, OverlayConfig, PeerKey, SimAuth, Topic,
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
        topic: Topic,
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
    topics: BTreeSet<Topic>,
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
    announced: HashMap<Topic, BTreeMap<usize, StoredAnnounce>>,
    announce_memory_us: u64,
    rng: Rng,
    peers: Vec<SimPeer<A>>,
    index: KeyMap<PeerKey, usize>,
    topics: HashMap<Topic, Vec<usize>>,
    links: KeyMap<(usize, usize), LinkState>,
    tracked: KeyMap<(PeerKey, u64), Tracked>,
    hops: Histogram,
    directed_delivered: u64,
    events_processed: u64,
    settle_us: u64,
    debug: bool,
    event_kinds: std::collections::BTreeMap<&'static str, u64>,
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

    /// Tracks a broadcast from peer `i` sent at `at_us` and queues it. Its payload carries
    /// an id so deliveries can be matched.
    pub fn broadcast_at(&mut self, at_us: u64, i: usize, payload: Bytes) {
        self.input_at(
            at_us,
            i,
            Input::Broadcast {
                meta: Bytes::from_static(b"sim"),
                payload,
            },
        );
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
        let topics: Vec<Topic> = std::mem::take(&mut peer.topics).into_iter().collect();
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
            let topics: Vec<Topic> = std::mem::take(&mut peer.topics).into_iter().collect();
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

    fn feed(&mut self, i: usize, input: Input) {
        let now = self.instant();
        let Some(peer) = self.peers.get_mut(i) else {
            return;
        };
        let outputs = peer.overlay.handle(input, now);
        for output in outputs {
            self.apply(i, output);
        }
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
        let now = self.instant();
        let peer = self.peers.get_mut(i)?;
        if !peer.alive {
            return None;
        }
        let key = peer.key;
        let outputs = peer.overlay.handle(
            Input::Broadcast {
                meta: Bytes::from_static(b"sim"),
                payload: payload.clone(),
            },
            now,
        );
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
        for output in outputs {
            self.apply(i, output);
        }
        Some((key, seq))
    }

    /// Sends a directed frame from `i` to `j` now. False if the overlay refused.
    pub fn send_now(&mut self, i: usize, j: usize) -> bool {
        let now = self.instant();
        let Some(target) = self.key(j) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(i) else {
            return false;
        };
        let outputs = peer.overlay.handle(
            Input::SendTo {
                target,
                meta: Bytes::from_static(b"sim"),
                payload: Bytes::from_static(b"directed"),
            },
            now,
        );
        let mut ok = true;
        for output in outputs {
            if matches!(output, Output::Event(crate::OverlayEvent::CommandFailed(_))) {
                ok = false;
            }
            self.apply(i, output);
        }
        ok
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
    fn explain_missing(&self, id: &(PeerKey, u64)) {
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

fn payload(id: u64, len: usize) -> Bytes {
    let mut bytes = vec![0u8; len.max(8)];
    for (slot, byte) in bytes.iter_mut().zip(id.to_be_bytes()) {
        *slot = byte;
    }
    Bytes::from(bytes)
}

/// Plays `scenario` and reports the overlay beside its baselines.
pub fn run(scenario: &Scenario) -> Report {
    let started = Instant::now();
    let overlay_config = scenario.overlay_config();
    let mut room = [0u8; 32];
    for (slot, byte) in room.iter_mut().zip(scenario.seed.to_be_bytes()) {
        *slot = byte;
    }
    let churn_events = if scenario.churn_s > 0 {
        (scenario.peers as f64 * scenario.churn_per_minute * scenario.churn_s as f64 / 60.0).round()
            as usize
    } else {
        0
    };
    let mut net = Net::new(
        scenario.peers + churn_events,
        &overlay_config,
        room,
        NetConfig::from_scenario(scenario),
        scenario.seed,
    );
    let cells = crate::cell_count(scenario.peers, overlay_config.sizing);
    let window = scenario.join_window_ms * 1_000;
    for i in 0..scenario.peers {
        let at = net.rng.below(window + 1);
        net.start_at(at, i, scenario.warm.then_some(cells));
    }
    let second = 1_000_000u64;
    let warm_end = scenario.warmup_s * second;
    net.run_until(warm_end);
    let mut phases = vec![("join and warm-up", started.elapsed().as_secs_f64())];
    let steady_start = Instant::now();
    let mut phase_start = Instant::now();
    let _ = steady_start;

    // Fault-free broadcasts.
    if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
        tracing_health("after warm-up", &net);
    }
    // A quiet stretch to measure the discovery load of a formed overlay.
    let before_discovery = net.sum_metric(|m| m.discovery_received);
    let steady_end = warm_end + scenario.steady_s * second;
    net.run_until(steady_end);
    let discovery_per_peer_per_min = (net.sum_metric(|m| m.discovery_received) - before_discovery)
        as f64
        / net.alive_count().max(1) as f64
        / (scenario.steady_s.max(1) as f64 / 60.0);
    let warm_end = steady_end;
    let before_dup = net.sum_metric(|m| m.duplicates);
    let before_forwarded = net.sum_metric(|m| m.forwarded);
    let before_delivered = net.sum_metric(|m| m.delivered);
    let before_bytes = net.sum_metric(|m| m.bytes_sent);
    net.reset_tracking();
    let spread = (scenario.broadcast_window_s * second) / scenario.broadcasts.max(1) as u64;
    let mut ids = Vec::new();
    for n in 0..scenario.broadcasts {
        let at = warm_end + n as u64 * spread;
        net.run_until(at);
        if let Some(origin) = net.random_live() {
            if let Some(id) = net.broadcast_now(origin, payload(n as u64, scenario.payload_bytes)) {
                ids.push(id);
            }
        }
    }
    let phase_end = warm_end + scenario.broadcast_window_s * second + 5 * second;
    net.run_until(phase_end);
    let phase_seconds = (phase_end - warm_end) as f64 / second as f64;
    let live = net.alive_count().max(1) as f64;
    let mut ratio_sum = 0.0;
    let mut full = 0usize;
    let mut twice = false;
    let mut time_to_full = Vec::new();
    let mut max_hops = 0u8;
    for id in &ids {
        if let Some((got, alive, hops, time, again)) = net.broadcast_outcome(id) {
            ratio_sum += got as f64 / alive.max(1) as f64;
            if got == alive {
                full += 1;
                time_to_full.push(time as f64 / 1_000.0);
            }
            twice |= again;
            max_hops = max_hops.max(hops);
        }
    }
    if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
        for id in ids.iter().take(100) {
            net.explain_missing(id);
        }
    }
    phases.push(("fault-free broadcasts", phase_start.elapsed().as_secs_f64()));
    phase_start = Instant::now();
    let hops = net.reset_tracking();
    let delivered = net.sum_metric(|m| m.delivered) - before_delivered;
    let duplicates = net.sum_metric(|m| m.duplicates) - before_dup;
    let forwarded = net.sum_metric(|m| m.forwarded) - before_forwarded;
    let degrees = net.live_degrees();

    let mut figures = RunFigures {
        connections: Stats::of(degrees.iter().map(|d| *d as f64)),
        connections_histogram: Histogram::from_values(degrees.iter().map(|d| *d as u64)),
        hops: hops.stats(),
        hops_histogram: hops,
        max_hops,
        delivery_ratio: ratio_sum / ids.len().max(1) as f64,
        fully_delivered: full,
        broadcasts: ids.len(),
        delivered_twice: twice,
        duplicates_per_delivery: duplicates as f64 / delivered.max(1) as f64,
        messages_per_broadcast: forwarded as f64 / ids.len().max(1) as f64,
        time_to_full_ms: Stats::of(time_to_full.into_iter()),
        bytes_sent_per_peer_per_s: (net.sum_metric(|m| m.bytes_sent) - before_bytes) as f64
            / live
            / phase_seconds,
        discovery_per_peer_per_min,
        directed_sent: 0,
        directed_delivered: 0,
        crashed: 0,
        after_crash_ratio: None,
        time_to_repair_s: None,
        after_repair_ratio: None,
        cells,
        events: 0,
        wall_seconds: 0.0,
        phase_seconds: Vec::new(),
        churn: None,
    };

    // Directed sends between random pairs.
    let before_directed = net.directed_delivered();
    let mut t = phase_end;
    let mut sent = 0;
    for _ in 0..scenario.directed {
        t += 10_000;
        net.run_until(t);
        let (Some(a), Some(b)) = (net.random_live(), net.random_live()) else {
            break;
        };
        if a != b && net.send_now(a, b) {
            sent += 1;
        }
    }
    if scenario.directed > 0 {
        t += 5 * second;
        net.run_until(t);
    }
    figures.directed_sent = sent;
    phases.push(("directed sends", phase_start.elapsed().as_secs_f64()));
    phase_start = Instant::now();
    figures.directed_delivered = net.directed_delivered() - before_directed;

    let picture = (scenario.picture && scenario.peers <= 400).then(|| super::report::picture(&net));

    // Churn: peers leave (half gracefully, half crashing) and newcomers arrive without a
    // hint, at the same steady rate, while a broadcast goes out every second.
    if churn_events > 0 {
        net.set_settle(20 * second);
        let start = t;
        let step = scenario.churn_s * second / churn_events as u64;
        let mut spares = net.spares().into_iter();
        let mut ids = Vec::new();
        let mut next_broadcast = start;
        for n in 0..churn_events {
            let at = start + n as u64 * step;
            while next_broadcast <= at {
                net.run_until(next_broadcast);
                if let Some(origin) = net.random_live() {
                    if let Some(id) = net.broadcast_now(origin, payload(n as u64, 64)) {
                        ids.push(id);
                    }
                }
                next_broadcast += second;
            }
            net.run_until(at);
            if let Some(victim) = net.random_live() {
                if n % 2 == 0 {
                    net.leave(victim);
                } else {
                    net.crash(victim);
                }
            }
            if let Some(newcomer) = spares.next() {
                net.start_at(at, newcomer, None);
            }
        }
        t = start + scenario.churn_s * second + 5 * second;
        net.run_until(t);
        let outcomes: Vec<(usize, usize)> = ids
            .iter()
            .filter_map(|id| net.broadcast_outcome(id))
            .map(|(got, live, ..)| (got, live))
            .collect();
        figures.churn = Some(super::report::ChurnFigures {
            departures: churn_events,
            arrivals: churn_events,
            seconds: scenario.churn_s,
            broadcasts: outcomes.len(),
            complete: outcomes.iter().filter(|(got, live)| got == live).count(),
            delivery_ratio: outcomes
                .iter()
                .map(|(got, live)| *got as f64 / (*live).max(1) as f64)
                .sum::<f64>()
                / outcomes.len().max(1) as f64,
            health_after: net.health(),
            connections_after: Stats::of(net.live_degrees().iter().map(|d| *d as f64)),
        });
        net.reset_tracking();
        net.set_settle(0);
        phases.push(("churn", phase_start.elapsed().as_secs_f64()));
        phase_start = Instant::now();
    }

    // Crash, broadcasts right after, then probes until repaired.
    let crash_count = (scenario.peers as f64 * scenario.crash_fraction).round() as usize;
    let mut crashed = Vec::new();
    if crash_count > 0 {
        let crash_at = t;
        let mut order: Vec<usize> = (0..net.len()).collect();
        for i in (1..order.len()).rev() {
            let j = net.random_below(i + 1);
            order.swap(i, j);
        }
        crashed = order.into_iter().take(crash_count).collect();
        for i in &crashed {
            net.crash(*i);
        }
        let mut ids = Vec::new();
        let step = second / scenario.after_crash_broadcasts.max(1) as u64;
        for n in 0..scenario.after_crash_broadcasts {
            net.run_until(crash_at + n as u64 * step);
            if let Some(origin) = net.random_live() {
                if let Some(id) = net.broadcast_now(origin, payload(n as u64, 64)) {
                    ids.push(id);
                }
            }
        }
        net.run_until(crash_at + 2 * second);
        if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
            for id in &ids {
                net.explain_missing(id);
            }
        }
        let ratios: Vec<f64> = ids
            .iter()
            .filter_map(|id| net.broadcast_outcome(id))
            .map(|(got, alive, ..)| got as f64 / alive.max(1) as f64)
            .collect();
        figures.after_crash_ratio = Some(ratios.iter().sum::<f64>() / ratios.len().max(1) as f64);
        net.reset_tracking();
        let mut probes = Vec::new();
        for s in 1..=scenario.repair_s {
            let at = crash_at + s * second;
            net.run_until(at);
            if let Some(origin) = net.random_live() {
                if let Some(id) = net.broadcast_now(origin, payload(s, 64)) {
                    probes.push((s, id));
                }
            }
        }
        net.run_until(crash_at + (scenario.repair_s + 3) * second);
        let outcomes: Vec<(u64, bool, f64)> = probes
            .iter()
            .filter_map(|(s, id)| {
                net.broadcast_outcome(id)
                    .map(|(got, alive, ..)| (*s, got == alive, got as f64 / alive.max(1) as f64))
            })
            .collect();
        // Repaired: from this probe on, every probe reached every live peer.
        let mut repaired_at = None;
        for (s, all, _) in outcomes.iter().rev() {
            if *all {
                repaired_at = Some(*s);
            } else {
                break;
            }
        }
        figures.time_to_repair_s = repaired_at.map(|s| s as f64);
        if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
            tracing_health("after repair", &net);
            for (s, all, r) in &outcomes {
                if !*all {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("probe {s}: {r:.4}");
                    }
                }
            }
        }
        let tail: Vec<f64> = outcomes.iter().rev().take(10).map(|(_, _, r)| *r).collect();
        figures.after_repair_ratio = Some(tail.iter().sum::<f64>() / tail.len().max(1) as f64);
        figures.crashed = crashed.len();
    }
    if crash_count > 0 {
        phases.push(("crash and repair", phase_start.elapsed().as_secs_f64()));
    }
    phase_start = Instant::now();
    figures.events = net.events_processed();
    figures.wall_seconds = started.elapsed().as_secs_f64();

    let announces_per_min = 60.0 / overlay_config.announce_interval.as_secs_f64().max(1.0);
    let latency = super::baseline::Latency {
        base_us: scenario.latency_ms * 1_000,
        jitter_us: scenario.jitter_ms * 1_000,
    };
    let mut full_mesh =
        Baseline::FullMesh.figures(scenario.peers, &crashed, scenario.seed, latency);
    let mut genosrtc = Baseline::GenosRtc.figures(scenario.peers, &crashed, scenario.seed, latency);
    // Both hear every peer's announce.
    for baseline in [&mut full_mesh, &mut genosrtc] {
        baseline.discovery_per_peer_per_min =
            scenario.peers.saturating_sub(1) as f64 * announces_per_min;
    }
    phases.push(("baselines", phase_start.elapsed().as_secs_f64()));
    figures.phase_seconds = phases;
    figures.wall_seconds = started.elapsed().as_secs_f64();
    Report {
        scenario: scenario.clone(),
        overlay: figures,
        full_mesh,
        genosrtc,
        picture,
    }
}

#[allow(clippy::print_stderr)]
fn tracing_health<A: FrameAuth>(when: &str, net: &Net<A>) {
    eprintln!("{when}: {:?}; events {:?}", net.health(), net.event_kinds);
}
