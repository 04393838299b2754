//! The simulated network: events, links, topics, crashes, and the tracking of broadcasts.
//!
//! Peer indices here come from the simulator's own tables (never from a message or a
//! file), so indexing by them cannot go out of range.
#![allow(clippy::indexing_slicing)]

mod engine;
mod queue;
mod traffic;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::queue::EventQueue;
use super::rng::Rng;
use super::scenario::Scenario;
use super::stats::Histogram;
use crate::keyhash::{KeyMap, key_map};
use crate::{
    Delivery, FrameAuth, Input, LinkRole, MeshTopic, Output, Overlay, OverlayConfig, PeerKey,
    SimAuth,
};

/// The simulated network: timing, link setup, loss and the relay's rules.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct NetConfig {
    /// One-way latency, microseconds.
    pub latency_us: u64,
    /// Extra random latency per message, up to this many microseconds.
    pub jitter_us: u64,
    /// Time to notice a crashed peer's links down, microseconds.
    pub detect_us: u64,
    /// One-way trips a link setup takes.
    pub setup_trips: u32,
    /// Fraction of link setups that fail.
    pub link_failure: f64,
    /// Time for a failed setup to be reported, microseconds.
    pub link_failure_us: u64,
    /// Fraction of frames and repair messages lost.
    pub loss: f64,
    /// Relays store presence (replayed to new subscribers until it expires).
    pub stored_presence: bool,
    /// Lifetime of stored presence, microseconds.
    pub presence_expiry_us: u64,
    /// Events a peer may publish per minute (0: no limit).
    pub relay_events_per_min: u32,
    /// Relay events each end of a link setup publishes.
    pub signals_per_link: u32,
    /// Setups between peers that both hold links signal through the mesh.
    pub signal_via_mesh: bool,
    /// Time for clients to reconnect after a relay restart, microseconds.
    pub relay_reconnect_us: u64,
}

impl NetConfig {
    /// Latency, jitter and crash detection delay in milliseconds; links set up in three
    /// one-way trips and never fail, nothing is lost, relays store presence for 95 s
    /// without a rate limit (the kind network of unit tests).
    pub fn new(latency_ms: u64, jitter_ms: u64, detect_ms: u64) -> Self {
        Self {
            latency_us: latency_ms * 1_000,
            jitter_us: jitter_ms * 1_000,
            detect_us: detect_ms * 1_000,
            setup_trips: 3,
            link_failure: 0.0,
            link_failure_us: 5_000_000,
            loss: 0.0,
            stored_presence: true,
            presence_expiry_us: 95_000_000,
            relay_events_per_min: 0,
            signals_per_link: 2,
            signal_via_mesh: false,
            relay_reconnect_us: 2_000_000,
        }
    }

    /// Everything from a scenario.
    pub fn from_scenario(scenario: &Scenario) -> Self {
        Self {
            latency_us: scenario.latency_ms * 1_000,
            jitter_us: scenario.jitter_ms * 1_000,
            detect_us: scenario.detect_ms * 1_000,
            setup_trips: scenario.link_setup_trips,
            link_failure: scenario.link_failure,
            link_failure_us: scenario.link_failure_ms * 1_000,
            loss: scenario.loss,
            stored_presence: scenario.stored_presence,
            presence_expiry_us: scenario.presence_expiry_s * 1_000_000,
            relay_events_per_min: scenario.relay_events_per_min,
            signals_per_link: scenario.signals_per_link,
            signal_via_mesh: scenario.signal_via_mesh,
            relay_reconnect_us: scenario.relay_reconnect_ms * 1_000,
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
        relay: bool,
    },
    /// A link setup that failed is reported to both ends.
    SetupFailed {
        a: usize,
        b: usize,
        relay: bool,
    },
    /// The relay comes back after a restart: clients resubscribe and publish again.
    RelayBack,
}

/// Which share of a peer's relay budget an event draws on. The driver splits the relay's
/// per-connection limit: a sixth for presence (announces, census, view changes), refused by
/// the relay when spent; the rest for link signaling, which the driver paces. Without the
/// split, signaling for a forming room's links spent every token and the leader's view
/// changes never reached the relay: a 3,000-peer room stayed one cell for 40 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Budget {
    Presence = 0,
    Signaling = 1,
}

impl Budget {
    /// Events per minute this share allows, of a limit of `per_min`.
    pub(super) fn share(self, per_min: u32) -> f64 {
        let presence = f64::from(per_min) / 6.0;
        match self {
            Budget::Presence => presence,
            Budget::Signaling => f64::from(per_min) - presence,
        }
    }
}

/// Tokens (signaling's may go negative: it waits) and when they were last refilled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Opening,
    Up,
}

struct SimPeer<A> {
    overlay: Overlay<A>,
    started: bool,
    /// When it started (simulated microseconds).
    started_at: u64,
    /// Crashed or left: never starts again.
    gone: bool,
    // Ordered: a crash schedules its link-downs in the same order every run.
    topics: BTreeSet<MeshTopic>,
    adjacent: BTreeSet<usize>,
    /// Its presence on each topic it announced on (republished after a relay restart).
    published: BTreeMap<MeshTopic, (u32, u32, u32)>,
    /// Its relay budget, one bucket per [`Budget`] share.
    buckets: [Bucket; 2],
    /// Setups it signals through the relay right now, and the connects its driver holds
    /// back until a link is up (then they signal through the mesh).
    relay_setups: u32,
    deferred: Vec<usize>,
}

/// Relay traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayCounters {
    /// Events peers published (announces, lobby posts, link signaling).
    pub published: u64,
    /// Announces the relay refused (rate limit) or lost (while restarting).
    pub refused: u64,
    /// Events delivered to subscribers (fan-out and stored replays).
    pub delivered: u64,
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
    /// The same over deliveries of the eager path only (no repair).
    eager_last_at: u64,
    eager_max_hops: u8,
}

/// Many overlays on a simulated network. `A` is how they sign and seal: [`SimAuth`] for
/// large runs, [`CryptoAuth`](crate::CryptoAuth) to run the real thing on a few dozen peers.
pub struct Net<A = SimAuth> {
    config: NetConfig,
    base: Instant,
    now: u64,
    queue: EventQueue<Event>,
    /// What a relay remembers of each topic: announcer -> (time, cell count), so a new
    /// subscriber hears the recent announces at once (replaceable events with an expiry, in
    /// Nostr terms).
    announced: HashMap<MeshTopic, BTreeMap<usize, StoredAnnounce>>,
    /// Until when the relay is down (restarting).
    relay_down_until: u64,
    relay: RelayCounters,
    /// Messages lost on links.
    lost: u64,
    rng: Rng,
    peers: Vec<SimPeer<A>>,
    /// Each peer's key by index, apart from the rest of its state: every message and
    /// announce names its sender by key, and a peer's whole state is a cache miss away.
    keys: Vec<PeerKey>,
    /// Whether each peer started and neither crashed nor left: every event asks, and
    /// apart from the rest of a peer's state it costs no cache miss of its own.
    alive: Vec<bool>,
    /// Reused for each input's outputs.
    outputs: Vec<Output>,
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
        let mut keys = Vec::with_capacity(peers);
        for i in 0..peers {
            let auth = make_auth(&mut rng);
            let key = auth.me();
            index.insert(key, i);
            keys.push(key);
            list.push(SimPeer {
                overlay: Overlay::new(overlay.clone(), room, auth, rng.next_u64()),
                started: false,
                started_at: 0,
                gone: false,
                topics: BTreeSet::new(),
                adjacent: BTreeSet::new(),
                published: BTreeMap::new(),
                buckets: [Budget::Presence, Budget::Signaling].map(|budget| Bucket {
                    tokens: budget.share(config.relay_events_per_min),
                    at: 0,
                }),
                relay_setups: 0,
                deferred: Vec::new(),
            });
        }
        Self {
            config,
            base: Instant::now(),
            now: 0,
            queue: EventQueue::new(),
            announced: HashMap::new(),
            relay_down_until: 0,
            relay: RelayCounters::default(),
            lost: 0,
            rng,
            peers: list,
            alive: vec![false; keys.len()],
            keys,
            outputs: Vec::new(),
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
        self.keys.get(i).copied()
    }

    /// Whether peer `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive.get(i).copied().unwrap_or(false)
    }

    /// Live peers.
    pub fn alive_count(&self) -> usize {
        self.alive.iter().filter(|alive| **alive).count()
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
        if !self.alive[i] {
            return;
        }
        self.alive[i] = false;
        peer.gone = true;
        let key = self.keys[i];
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
        // Leaving replaces the stored presence with a short-lived tombstone: gone for
        // newcomers at once.
        for stored in self.announced.values_mut() {
            stored.remove(&i);
        }
        if let Some(peer) = self.peers.get_mut(i) {
            self.alive[i] = false;
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

    /// Messages lost on links so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Relay traffic so far.
    pub fn relay_counters(&self) -> RelayCounters {
        self.relay
    }

    /// The relay restarts now: stored presence and subscriptions are lost; clients come
    /// back after the reconnect delay and publish their presence again.
    pub fn restart_relay(&mut self) {
        self.announced.clear();
        self.relay_down_until = self.now + self.config.relay_reconnect_us;
        self.schedule(self.relay_down_until, Event::RelayBack);
    }

    /// Peers never started yet (spares a scenario can bring in later).
    pub fn spares(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|i| self.peers.get(*i).is_some_and(|p| !p.started && !p.gone))
            .collect()
    }
}
