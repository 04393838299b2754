//! The overlay state machine: `handle(input, now) -> outputs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use self::census::Census;
use self::roster::{Known, Roster};
use crate::assign::{PeerSeeds, cell_from_seed, peer_seeds};
use crate::auth::FrameAuth;
use crate::io::{Delivery, DropReason, Input, MeshTopic, Output, OverlayEvent};
use crate::keyhash::{KeyMap, key_map};
use crate::mix::mix64;
use crate::plan::{Member, my_slots, slot_holders};
use crate::seen::{Seen, SeenFrames};
use crate::wire::{self, Frame, FrameId, FrameKind, Hello, HelloRole, LinkMessage};
use crate::{MeshError, OverlayConfig, PeerKey, assign_cell, cell_count};

mod census;
mod direct;
mod frames;
mod links;
mod membership;
mod repair;
mod roster;

const SIGNING_LABEL: &[u8] = b"genos/cellmesh/v1/frame";

/// Counters of one overlay peer, for tests, the simulator and dashboards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverlayMetrics {
    /// Frames read off links.
    pub frames_received: u64,
    /// Frames already accepted before (the price of redundancy).
    pub duplicates: u64,
    /// Payloads handed to the application.
    pub delivered: u64,
    /// Frames sent on (one per link).
    pub forwarded: u64,
    /// Frames dropped, for any [`DropReason`].
    pub dropped: u64,
    /// Bytes sent on links.
    pub bytes_sent: u64,
    /// Bytes received on links.
    pub bytes_received: u64,
    /// Discovery messages heard: announces (cell topics and the lobby) and rosters.
    pub discovery_received: u64,
    /// Announces ignored because the roster was full.
    pub roster_full: u64,
    /// Digests sent (lazy repair: ids of recently accepted broadcasts).
    pub digests_sent: u64,
    /// Pulls sent for broadcasts heard of but missing.
    pub pulls_sent: u64,
    /// Frames sent in answer to pulls.
    pub repairs_sent: u64,
    /// Broadcasts this peer got through repair rather than the eager path.
    pub repaired: u64,
    /// Bytes of digests, pulls and repair answers sent (part of `bytes_sent`).
    pub repair_bytes_sent: u64,
    /// Links whose setup failed or never finished within `connect_timeout` (retried after a
    /// backoff).
    pub setup_failures: u64,
    /// Directed payloads sent again for want of an ack.
    pub direct_resent: u64,
    /// Directed payloads this peer sent that their target acknowledged.
    pub direct_acked: u64,
    /// Directed payloads given up ([`OverlayEvent::DirectFailed`]).
    pub direct_failed: u64,
    /// Directed frames and acks this peer originated with no link towards their target
    /// (a payload is sent again later; an ack is sent again when the resend comes).
    pub direct_unroutable: u64,
    /// Ack frames sent.
    pub acks_sent: u64,
}

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkRole {
    /// To a member of this peer's cell.
    Intra,
    /// A bridge to `cell`, slot `slot` of that cell pair.
    Bridge {
        /// The cell at the other end.
        cell: u32,
        /// The slot (0 forwards into its cell at once, higher slots after a delay).
        slot: u8,
    },
    /// Not known yet (an inbound link before its hello).
    Unknown,
}

/// The holders of one cell's slots towards this peer's cell (see `Overlay::holders`).
#[derive(Debug)]
struct CachedHolders {
    /// The roster's version of that cell's members.
    version: u64,
    /// This peer's cell and the slots per pair they were worked out for.
    to: u32,
    k: u8,
    holders: Vec<PeerKey>,
}

#[derive(Debug, Clone)]
struct Link {
    up: bool,
    since: Instant,
    role: LinkRole,
    unwanted_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkKind {
    /// Cell mates.
    Intra,
    /// Bridges to other cells, and links whose role is not known: after a view change,
    /// links into what are now other cells, until the new view's bridges are up.
    Outward,
    /// Cell mates and the outward links (what an origin sends to).
    Members,
    /// Every up link.
    All,
}

#[derive(Debug, Clone, Default)]
struct LinkCache {
    intra: Vec<PeerKey>,
    bridges: Vec<PeerKey>,
    /// Bridges and links of unknown role.
    outward: Vec<PeerKey>,
    all: Vec<PeerKey>,
}

/// A peer whose link setup failed: left out of the roster (and so of every plan) until
/// `until`, however often its announce is heard (relays replay presence that outlives its
/// peer).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u8,
    until: Instant,
    /// Put back in the roster for another try (cleared when it fails again).
    retrying: bool,
    /// When it failed last.
    failed_at: Instant,
    /// When it was last heard first-hand (before the failure, or since).
    heard_at: Option<Instant>,
}

impl Backoff {
    /// Whether a retry waits for no news once the backoff ends: the first two failures,
    /// and any peer heard first-hand within one and a half announce intervals before its
    /// last failure or since (a live peer announces every interval; a crashed one, heard
    /// last before its crash, gets at most one such retry).
    fn retries_unheard(&self, announce_interval: Duration) -> bool {
        self.failures < 3
            || self
                .heard_at
                .is_some_and(|heard| heard + announce_interval.mul_f64(1.5) >= self.failed_at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Bootstrapping { until: Instant },
    Running,
    Left,
}

/// How the overlay came to know of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// Its own announce on a topic of the current view, or a link to it.
    FirstHand,
    /// A cell mate's roster, or a retry of a peer that failed setups: news that neither
    /// adds a peer for long (`hearsay_timeout`) nor refreshes a known one.
    SecondHand,
}

/// A backup bridge end's forward into its cell, waiting for its time (keyed by the frame).
#[derive(Debug)]
struct PendingForward {
    message: Bytes,
    exclude: PeerKey,
}

/// One peer's view of the cellular mesh, as a sans-IO state machine.
///
/// Feed it [`Input`]s with the current time; carry out the [`Output`]s it returns. It
/// never blocks, spawns or reads a clock, so the same code runs under the room layer and
/// in the deterministic simulator.
///
/// ```
/// use std::time::Instant;
/// use bytes::Bytes;
/// use genos_cellmesh::{CryptoAuth, Input, Output, Overlay, OverlayConfig};
/// use genos_crypto::{Identity, SealKey};
///
/// let auth = CryptoAuth::new(Identity::generate(), SealKey::generate());
/// let mut overlay = Overlay::new(OverlayConfig::default(), [7; 32], auth, 1);
/// let now = Instant::now();
/// let outputs = overlay.handle(Input::Start { cells_hint: Some(1) }, now);
/// // A one-cell room: subscribe to cell 0's topic and announce there.
/// assert!(outputs.iter().any(|o| matches!(o, Output::Subscribe(_))));
/// assert!(outputs.iter().any(|o| matches!(o, Output::Announce { .. })));
/// ```
#[derive(Debug)]
pub struct Overlay<A> {
    config: OverlayConfig,
    room: [u8; 32],
    me: PeerKey,
    my_seeds: PeerSeeds,
    auth: A,
    rng: u64,
    phase: Phase,
    cells: u32,
    my_cell: u32,
    cells_since: Option<Instant>,
    roster: Roster,
    links: KeyMap<PeerKey, Link>,
    /// Up links by role, rebuilt after any link change (the frame path reads them).
    link_cache: Option<LinkCache>,
    // Ordered: outputs come out in the same order every run (the simulator is deterministic).
    topics: BTreeSet<MeshTopic>,
    unwanted_topics: BTreeMap<MeshTopic, Instant>,
    /// The epoch of `cells`: (epoch, cells) orders views; the highest heard wins.
    epoch: u32,
    /// Best view heard while bootstrapping.
    heard_view: Option<(u32, u32)>,
    /// Lobby census of the current view: cell -> (members, when heard). At most one entry
    /// per cell.
    census: Census,
    seen: SeenFrames,
    next_seq: u64,
    /// Due times of delayed forwards by frame; cancelled ones stay until their time.
    pending_order: BinaryHeap<Reverse<(Instant, PeerKey, u64)>>,
    pending: KeyMap<(PeerKey, u64), PendingForward>,
    next_tick: Option<Instant>,
    next_announce: Option<Instant>,
    next_census: Option<Instant>,
    next_beacon: Option<Instant>,
    next_expiry: Option<Instant>,
    wake: Option<Instant>,
    dirty: bool,
    /// When the plan was last made (an oversized cell re-plans less often).
    last_replan: Option<Instant>,
    members: Vec<Member>,
    /// The roster's version of this peer's cell, the cell count and the cell `members`
    /// was read for.
    members_from: Option<(u64, u32, u32)>,
    /// The first 8 bytes of each member's key, in the members' order (see `is_member`).
    member_words: Vec<u64>,
    /// No link is due to close before this (None: none is due at all; see
    /// `close_unwanted`).
    close_due: Option<Instant>,
    is_leader: bool,
    slots: Vec<(u32, u8)>,
    /// (cells, cell) the slots were computed for.
    slots_for: (u32, u32),
    /// Per other cell, the holders of its slots towards this peer's cell, with the
    /// roster's version of its members they were worked out from (a re-plan reads every
    /// bridged cell's; most did not change since the last). At most one per cell of the
    /// view (cleared on a new one).
    holders: HashMap<u32, CachedHolders>,
    /// Lower cells this peer holds a slot towards (their holders dial) with no bridge up,
    /// since when: after `connect_timeout` this peer dials its counterpart itself (see
    /// `bridge_overdue`). At most one entry per cell.
    unbridged_since: BTreeMap<u32, Instant>,
    repair: repair::RepairState,
    direct: direct::DirectState,
    /// Peers whose link setup failed, bounded by `max_roster`.
    backoff: KeyMap<PeerKey, Backoff>,
    /// Peers that said goodbye, until when they stay out of the roster unless they announce
    /// or link again (a cell mate's roster may still name them). Bounded by `max_roster`.
    departed: KeyMap<PeerKey, Instant>,
    /// When the next of them is due to be tried again.
    next_retry: Option<Instant>,
    metrics: OverlayMetrics,
}

impl<A: FrameAuth> Overlay<A> {
    /// A peer of room `room` (32 bytes naming the room, the same for every member) that
    /// signs and seals with `auth`. `rng_seed` seeds the jitter of its timers.
    pub fn new(config: OverlayConfig, room: [u8; 32], auth: A, rng_seed: u64) -> Self {
        let me = auth.me();
        let hash_seed = mix64(rng_seed ^ 0x6a09_e667_f3bc_c908);
        Self {
            seen: SeenFrames::new(config.max_origins, config.dedup_window, hash_seed),
            direct: direct::DirectState::new(&config, hash_seed),
            next_seq: config.first_seq,
            config,
            room,
            me,
            my_seeds: peer_seeds(&room, &me),
            auth,
            rng: mix64(rng_seed ^ 0x5eed),
            phase: Phase::Idle,
            cells: 0,
            my_cell: 0,
            cells_since: None,
            roster: Roster::new(hash_seed),
            links: key_map(hash_seed),
            link_cache: None,
            topics: BTreeSet::new(),
            unwanted_topics: BTreeMap::new(),
            epoch: 0,
            heard_view: None,
            census: Census::default(),
            pending_order: BinaryHeap::new(),
            pending: key_map(hash_seed),
            next_tick: None,
            next_announce: None,
            next_census: None,
            next_beacon: None,
            next_expiry: None,
            wake: None,
            dirty: false,
            last_replan: None,
            members: Vec::new(),
            members_from: None,
            member_words: Vec::new(),
            close_due: None,
            is_leader: false,
            slots: Vec::new(),
            slots_for: (0, 0),
            holders: HashMap::new(),
            unbridged_since: BTreeMap::new(),
            repair: repair::RepairState::new(hash_seed),
            backoff: key_map(hash_seed),
            departed: key_map(hash_seed),
            next_retry: None,
            metrics: OverlayMetrics::default(),
        }
    }

    /// This peer's key.
    pub fn me(&self) -> PeerKey {
        self.me
    }

    /// The room's cell count as this peer sees it (0 before it knows).
    pub fn cells(&self) -> u32 {
        self.cells
    }

    /// This peer's cell.
    pub fn cell(&self) -> u32 {
        self.my_cell
    }

    /// Whether this peer leads its cell (posts its size on the lobby; cell 0's leader beacons).
    pub fn is_leader(&self) -> bool {
        self.is_leader
    }

    /// Whether this peer's cell is too large for its view while the room forms: it opens
    /// no new links until cell 0's leader resizes (or the forming window, six settle
    /// periods of the view, ends).
    pub fn is_forming(&self, now: Instant) -> bool {
        self.oversized(now)
    }

    /// Peers this peer knows.
    pub fn roster_len(&self) -> usize {
        self.roster.len()
    }

    /// Open links and what they are for.
    pub fn links(&self) -> impl Iterator<Item = (PeerKey, LinkRole)> + '_ {
        self.links
            .iter()
            .filter(|(_, link)| link.up)
            .map(|(peer, link)| (*peer, link.role))
    }

    /// Open links no longer wanted (a view changed, or a plan moved on): each is closed
    /// once it has lingered `linger`.
    pub fn lingering_links(&self) -> usize {
        self.links
            .values()
            .filter(|link| link.up && link.unwanted_since.is_some())
            .count()
    }

    /// The members of this peer's cell as of its last plan (itself included), in key order.
    pub fn cell_members(&self) -> impl Iterator<Item = PeerKey> + '_ {
        self.members.iter().map(|member| member.key)
    }

    /// The bridge slots this peer holds: (other cell, slot).
    pub fn bridge_slots(&self) -> &[(u32, u8)] {
        &self.slots
    }

    /// The sequence number of the last frame this peer originated.
    pub fn last_seq(&self) -> Option<u64> {
        (self.next_seq > self.config.first_seq).then(|| self.next_seq - 1)
    }

    /// Counters so far.
    pub fn metrics(&self) -> &OverlayMetrics {
        &self.metrics
    }

    /// Processes one input at time `now` and returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.handle_into(input, now, &mut out);
        out
    }

    /// [`Self::handle`], appending the outputs to `out`: a driver feeding millions of
    /// inputs reuses one vector instead of allocating one per input.
    pub fn handle_into(&mut self, input: Input, now: Instant, out: &mut Vec<Output>) {
        if self.phase == Phase::Left {
            return;
        }
        if !matches!(input, Input::Received { .. } | Input::Tick) {
            self.link_cache = None;
        }
        // An announce moves no timer (the tick, forwards, pulls, resends): the wake asked
        // for after the last input stands, and working the next one out again read several
        // cold cache lines on each of the millions a forming room's relays deliver.
        let timers_moved = !matches!(input, Input::Announced { .. });
        match input {
            Input::Start { cells_hint } => self.start(cells_hint, now, out),
            Input::Announced {
                peer,
                topic,
                cells,
                epoch,
                count,
            } => self.on_announce(peer, topic, (epoch, cells), count, now, out),
            Input::LinkUp { peer } => self.on_link_up(peer, now, out),
            Input::LinkDown { peer } => self.on_link_down(peer, now),
            Input::PeerLeft { peer, topic } => self.on_peer_left(peer, topic, now),
            Input::Received { from, message } => self.on_message(from, message, now, out),
            Input::Tick => {
                if self.wake.is_some_and(|wake| now >= wake) {
                    self.wake = None;
                }
                self.on_tick(now, out);
            }
            Input::Broadcast { meta, payload } => {
                let sent = self.originate_broadcast(&meta, &payload, now, out);
                self.command_result(sent, out);
            }
            Input::SendTo {
                target,
                meta,
                payload,
            } => {
                let sent = self.send_direct(target, meta, payload, now, out);
                self.command_result(sent, out);
            }
            Input::SendToMany {
                targets,
                meta,
                payload,
            } => {
                if targets.len() > self.config.max_targets {
                    out.push(Output::Event(OverlayEvent::CommandFailed(
                        MeshError::TooManyTargets {
                            count: targets.len(),
                            max: self.config.max_targets,
                        },
                    )));
                } else {
                    for target in targets {
                        let sent =
                            self.send_direct(target, meta.clone(), payload.clone(), now, out);
                        self.command_result(sent, out);
                    }
                }
            }
            Input::Leave => {
                for peer in self.links.keys() {
                    out.push(Output::Disconnect(*peer));
                }
                for topic in std::mem::take(&mut self.topics) {
                    out.push(Output::Unsubscribe(topic));
                }
                self.links.clear();
                self.phase = Phase::Left;
                return;
            }
        }
        // Alone or nearly: plan at once rather than at the next tick. Not in an oversized
        // cell, which opens no links: a newcomer there would re-plan on every one of the
        // thousands of announces a relay replays to it.
        if self.dirty
            && self.phase == Phase::Running
            && self.links.len() < 2
            && !self.oversized(now)
        {
            self.replan(now, out);
        }
        if timers_moved {
            self.schedule_wake(out);
        } else {
            debug_assert!(
                self.wanted_wake()
                    .is_none_or(|want| self.wake.is_some_and(|wake| wake <= want)),
                "an announce moved a timer"
            );
        }
    }

    /// A refused command becomes a `CommandFailed` event.
    fn command_result(&mut self, sent: Result<(), MeshError>, out: &mut Vec<Output>) {
        if let Err(error) = sent {
            out.push(Output::Event(OverlayEvent::CommandFailed(error)));
        }
    }

    fn random_fraction(&mut self) -> f64 {
        self.rng = mix64(self.rng);
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn jittered(&mut self, period: Duration) -> Duration {
        period.mul_f64(0.9 + 0.2 * self.random_fraction())
    }

    fn start(&mut self, cells_hint: Option<u32>, now: Instant, out: &mut Vec<Output>) {
        if self.phase != Phase::Idle {
            return;
        }
        self.next_tick = Some(now);
        self.subscribe(MeshTopic::Lobby, out);
        match cells_hint {
            Some(cells) => {
                self.phase = Phase::Running;
                self.set_cells(cells, now, out);
            }
            None => {
                self.phase = Phase::Bootstrapping {
                    until: now + self.config.bootstrap_wait,
                };
            }
        }
    }

    fn subscribe(&mut self, topic: MeshTopic, out: &mut Vec<Output>) {
        if self.topics.insert(topic) {
            out.push(Output::Subscribe(topic));
        }
    }

    fn send(&mut self, to: PeerKey, message: Bytes, out: &mut Vec<Output>) {
        self.metrics.bytes_sent += message.len() as u64;
        out.push(Output::Send { to, message });
    }

    fn drop_frame(&mut self, from: PeerKey, reason: DropReason, out: &mut Vec<Output>) {
        self.metrics.dropped += 1;
        out.push(Output::Event(OverlayEvent::Dropped { from, reason }));
    }

    fn on_message(&mut self, from: PeerKey, message: Bytes, now: Instant, out: &mut Vec<Output>) {
        self.metrics.bytes_received += message.len() as u64;
        if message.len() > self.config.max_message_len {
            self.drop_frame(from, DropReason::TooLarge, out);
            return;
        }
        let limits = wire::ListLimits {
            roster: self.config.max_roster_message,
            ids: self.config.max_digest_ids,
        };
        let raw = message.clone();
        let decoded = match wire::decode(message, limits) {
            Ok(decoded) => decoded,
            Err(_) => {
                self.drop_frame(from, DropReason::Malformed, out);
                return;
            }
        };
        match decoded {
            LinkMessage::Hello(hello) => self.on_hello(from, hello, out),
            LinkMessage::Roster {
                cells,
                cell,
                members,
            } => {
                self.metrics.discovery_received += 1;
                if cells == self.cells && cell == self.my_cell {
                    for member in members {
                        self.learn_if_in(member, cell, Heard::SecondHand, now);
                    }
                }
            }
            LinkMessage::Frame(frame) => self.on_frame(from, frame, raw, false, now, out),
            LinkMessage::Repair(frame) => self.on_frame(from, frame, raw, true, now, out),
            LinkMessage::Digest(ids) => self.on_digest(from, ids, now),
            LinkMessage::Pull(ids) => self.on_pull(from, ids, out),
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.run_due_forwards(now, out);
        self.run_repair(now, out);
        self.run_direct(now, out);
        if self.next_tick.is_none_or(|tick| now < tick) {
            return;
        }
        self.next_tick = Some(now + self.config.tick_interval);
        // Re-planning and expiry below may change links.
        self.link_cache = None;
        match self.phase {
            Phase::Bootstrapping { until } if now >= until => {
                self.phase = Phase::Running;
                let (epoch, cells) = self.heard_view.unwrap_or((0, 1));
                self.epoch = epoch;
                self.set_cells(cells, now, out);
            }
            Phase::Running => {}
            _ => return,
        }
        if self.next_expiry.is_none_or(|at| now >= at) {
            // Often enough for second-hand entries to go near their timeout, not only
            // every half announce interval (minutes in rooms).
            let period = (self.config.announce_interval / 2).min(self.config.hearsay_timeout / 3);
            self.next_expiry = Some(now + period);
            self.expire(now);
        }
        if self.next_announce.is_some_and(|at| now >= at) {
            let next = self.jittered(self.config.announce_interval);
            self.next_announce = Some(now + next);
            out.push(Output::Announce {
                topic: MeshTopic::Cell {
                    cells: self.cells,
                    cell: self.my_cell,
                },
                cells: self.cells,
                epoch: self.epoch,
                count: 0,
            });
        }
        // By default the beacon comes several times per bootstrap wait, so a newcomer hears
        // one live even where the signaling layer does not replay recent announces.
        if self.is_leader && self.my_cell == 0 && self.next_beacon.is_none_or(|at| now >= at) {
            let next = self.jittered(self.config.beacon_interval);
            self.next_beacon = Some(now + next);
            self.post_census(now, out);
        }
        if self.next_census.is_some_and(|at| now >= at) {
            let next = self.jittered(self.config.census_interval);
            self.next_census = Some(now + next);
            if self.is_leader {
                self.post_census(now, out);
            }
        } else if self.is_leader && self.census_outdated(now) {
            self.post_census(now, out);
        }
        self.resize_from_census(now, out);
        if self.next_retry.is_some_and(|at| now >= at) {
            self.retry_failed(now);
        }
        // An oversized cell (a room forming as one cell, about to be resized) opens no new
        // links, and each plan reads every member: plan it every few ticks, not each.
        let oversized_wait = self.oversized(now)
            && self
                .last_replan
                .is_some_and(|at| now < at + self.config.tick_interval * 4);
        if self.dirty && !oversized_wait {
            self.replan(now, out);
        }
        self.close_unwanted(now, out);
    }

    /// When this peer next needs a tick: the earliest of its timers.
    fn wanted_wake(&self) -> Option<Instant> {
        let pending = self.pending_order.peek().map(|Reverse((due, ..))| *due);
        [
            self.next_tick,
            pending,
            self.repair.next_wake(),
            self.direct.next_wake(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn schedule_wake(&mut self, out: &mut Vec<Output>) {
        if let Some(want) = self.wanted_wake() {
            if self.wake.is_none_or(|wake| want < wake) {
                self.wake = Some(want);
                out.push(Output::WakeAt(want));
            }
        }
    }
}
