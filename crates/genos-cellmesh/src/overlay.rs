//! The overlay state machine: `handle(input, now) -> outputs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::assign::{cell_from_seed, peer_seeds};
use crate::auth::FrameAuth;
use crate::io::{Delivery, DropReason, Input, Output, OverlayEvent, Topic};
use crate::keyhash::{KeyMap, key_map};
use crate::plan::{Member, mix64, my_slots, slot_holders};
use crate::seen::{Seen, SeenFrames};
use crate::wire::{self, Frame, FrameId, FrameKind, Hello, HelloRole, LinkMessage};
use crate::{MeshError, OverlayConfig, PeerKey, assign_cell, cell_count};

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
    /// Bridges to other cells.
    Bridges,
    /// Cell mates and bridges (what an origin sends to).
    Members,
    /// Every up link.
    All,
}

#[derive(Debug, Clone, Default)]
struct LinkCache {
    intra: Vec<PeerKey>,
    bridges: Vec<PeerKey>,
    all: Vec<PeerKey>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    seed: u64,
    cell_seed: u64,
    cell: u32,
    last_seen: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Bootstrapping { until: Instant },
    Running,
    Left,
}

#[derive(Debug)]
struct PendingForward {
    origin: PeerKey,
    seq: u64,
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
    my_seed: u64,
    auth: A,
    rng: u64,
    phase: Phase,
    cells: u32,
    my_cell: u32,
    cells_since: Option<Instant>,
    roster: KeyMap<PeerKey, Known>,
    links: KeyMap<PeerKey, Link>,
    /// Up links by role, rebuilt after any link change (the frame path reads them).
    link_cache: Option<LinkCache>,
    // Ordered: outputs come out in the same order every run (the simulator is deterministic).
    topics: BTreeSet<Topic>,
    unwanted_topics: BTreeMap<Topic, Instant>,
    /// The epoch of `cells`: (epoch, cells) orders views; the highest heard wins.
    epoch: u32,
    /// Best view heard while bootstrapping.
    heard_view: Option<(u32, u32)>,
    /// Lobby census of the current view: cell -> (members, when heard). At most one entry
    /// per cell.
    census: BTreeMap<u32, (u32, Instant)>,
    seen: SeenFrames,
    next_seq: u64,
    pending_order: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, PendingForward>,
    pending_by_frame: KeyMap<(PeerKey, u64), u64>,
    next_pending_id: u64,
    next_tick: Option<Instant>,
    next_announce: Option<Instant>,
    next_census: Option<Instant>,
    next_beacon: Option<Instant>,
    next_expiry: Option<Instant>,
    wake: Option<Instant>,
    dirty: bool,
    members: Vec<Member>,
    is_leader: bool,
    slots: Vec<(u32, u8)>,
    /// (cells, cell) the slots were computed for.
    slots_for: (u32, u32),
    metrics: OverlayMetrics,
}

impl<A: FrameAuth> Overlay<A> {
    /// A peer of room `room` (32 bytes naming the room, the same for every member) that
    /// signs and seals with `auth`. `rng_seed` seeds the jitter of its timers.
    pub fn new(config: OverlayConfig, room: [u8; 32], auth: A, rng_seed: u64) -> Self {
        let me = auth.me();
        let hash_seed = mix64(rng_seed ^ 0x6a09_e667_f3bc_c908);
        Self {
            seen: SeenFrames::new(config.max_origins, hash_seed),
            next_seq: config.first_seq,
            config,
            room,
            me,
            my_seed: peer_seeds(&room, &me).bridge,
            auth,
            rng: mix64(rng_seed ^ 0x5eed),
            phase: Phase::Idle,
            cells: 0,
            my_cell: 0,
            cells_since: None,
            roster: key_map(hash_seed),
            links: key_map(hash_seed),
            link_cache: None,
            topics: BTreeSet::new(),
            unwanted_topics: BTreeMap::new(),
            epoch: 0,
            heard_view: None,
            census: BTreeMap::new(),
            pending_order: BinaryHeap::new(),
            pending: HashMap::new(),
            pending_by_frame: key_map(hash_seed),
            next_pending_id: 0,
            next_tick: None,
            next_announce: None,
            next_census: None,
            next_beacon: None,
            next_expiry: None,
            wake: None,
            dirty: false,
            members: Vec::new(),
            is_leader: false,
            slots: Vec::new(),
            slots_for: (0, 0),
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
        if self.phase == Phase::Left {
            return out;
        }
        if !matches!(input, Input::Received { .. } | Input::Tick) {
            self.link_cache = None;
        }
        match input {
            Input::Start { cells_hint } => self.start(cells_hint, now, &mut out),
            Input::Announced {
                peer,
                topic,
                cells,
                epoch,
                count,
            } => self.on_announce(peer, topic, (epoch, cells), count, now, &mut out),
            Input::LinkUp { peer } => self.on_link_up(peer, now, &mut out),
            Input::LinkDown { peer } => {
                self.links.remove(&peer);
                self.roster.remove(&peer);
                self.dirty = true;
            }
            Input::Received { from, message } => self.on_message(from, message, now, &mut out),
            Input::Tick => {
                if self.wake.is_some_and(|wake| now >= wake) {
                    self.wake = None;
                }
                self.on_tick(now, &mut out);
            }
            Input::Broadcast { meta, payload } => {
                if let Err(error) =
                    self.originate(FrameKind::Broadcast, &meta, &payload, now, &mut out)
                {
                    out.push(Output::Event(OverlayEvent::CommandFailed(error)));
                }
            }
            Input::SendTo {
                target,
                meta,
                payload,
            } => {
                if let Err(error) =
                    self.originate(FrameKind::Direct(target), &meta, &payload, now, &mut out)
                {
                    out.push(Output::Event(OverlayEvent::CommandFailed(error)));
                }
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
                        if let Err(error) = self.originate(
                            FrameKind::Direct(target),
                            &meta,
                            &payload,
                            now,
                            &mut out,
                        ) {
                            out.push(Output::Event(OverlayEvent::CommandFailed(error)));
                        }
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
                return out;
            }
        }
        if self.dirty && self.phase == Phase::Running && self.links.len() < 2 {
            // Alone or nearly: plan at once rather than at the next tick.
            self.replan(now, &mut out);
        }
        self.schedule_wake(&mut out);
        out
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
        self.subscribe(Topic::Lobby, out);
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

    fn subscribe(&mut self, topic: Topic, out: &mut Vec<Output>) {
        if self.topics.insert(topic) {
            out.push(Output::Subscribe(topic));
        }
    }

    fn set_cells(&mut self, cells: u32, now: Instant, out: &mut Vec<Output>) {
        let cells = cells.max(1);
        if cells != self.cells {
            self.census.clear();
        }
        self.cells = cells;
        self.cells_since = Some(now);
        self.my_cell = assign_cell(&self.room, &self.me, cells);
        for known in self.roster.values_mut() {
            known.cell = cell_from_seed(known.cell_seed, cells);
        }
        let roles: Vec<(PeerKey, LinkRole)> = self
            .links
            .keys()
            .map(|peer| {
                let role = if self.cell_of(peer) == self.my_cell {
                    LinkRole::Intra
                } else {
                    LinkRole::Unknown
                };
                (*peer, role)
            })
            .collect();
        for (peer, role) in roles {
            if let Some(link) = self.links.get_mut(&peer) {
                link.role = role;
            }
        }
        let home = Topic::Cell {
            cells,
            cell: self.my_cell,
        };
        self.subscribe(home, out);
        out.push(Output::Announce {
            topic: home,
            cells,
            epoch: self.epoch,
            count: 0,
        });
        let first_announce = self.jittered(self.config.announce_interval);
        self.next_announce = Some(now + first_announce);
        let first_census = self.jittered(self.config.census_interval);
        self.next_census = Some(now + first_census);
        self.dirty = true;
        out.push(Output::Event(OverlayEvent::CellsChanged {
            cells,
            cell: self.my_cell,
        }));
    }

    fn cell_of(&self, peer: &PeerKey) -> u32 {
        match self.roster.get(peer) {
            Some(known) => known.cell,
            None => assign_cell(&self.room, peer, self.cells.max(1)),
        }
    }

    fn learn(&mut self, peer: PeerKey, now: Instant) {
        if peer == self.me {
            return;
        }
        if let Some(known) = self.roster.get_mut(&peer) {
            known.last_seen = now;
            return;
        }
        if self.roster.len() >= self.config.max_roster {
            self.metrics.roster_full += 1;
            return;
        }
        let seeds = peer_seeds(&self.room, &peer);
        self.roster.insert(
            peer,
            Known {
                seed: seeds.bridge,
                cell_seed: seeds.cell,
                cell: cell_from_seed(seeds.cell, self.cells.max(1)),
                last_seen: now,
            },
        );
        self.dirty = true;
    }

    fn on_announce(
        &mut self,
        peer: PeerKey,
        topic: Topic,
        view: (u32, u32),
        count: u32,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        self.metrics.discovery_received += 1;
        let (epoch, cells) = view;
        match topic {
            Topic::Lobby => {
                if cells == 0 || cells > self.config.max_cells {
                    return;
                }
                match self.phase {
                    Phase::Bootstrapping { until } => {
                        // Hear the lobby a little longer (a replay may hold older views),
                        // then join the highest view heard.
                        self.heard_view = self.heard_view.max(Some(view));
                        let soon = now + self.config.bootstrap_listen;
                        if soon < until {
                            self.phase = Phase::Bootstrapping { until: soon };
                        }
                    }
                    Phase::Running if view > (self.epoch, self.cells) => {
                        // A newer view of the room (a resize, or a larger room we were split
                        // from): everyone converges on the highest.
                        self.epoch = epoch;
                        self.set_cells(cells, now, out);
                    }
                    _ => {}
                }
                if count > 0 && view == (self.epoch, self.cells) {
                    let cell = assign_cell(&self.room, &peer, cells);
                    self.census
                        .insert(cell, (count.min(self.config.max_census_count), now));
                }
            }
            Topic::Cell { cells: c, cell } => {
                if c != self.cells || !self.topics.contains(&topic) {
                    return;
                }
                if self.roster.contains_key(&peer) || assign_cell(&self.room, &peer, c) == cell {
                    self.learn(peer, now);
                }
            }
        }
    }

    fn my_cell_size(&self) -> usize {
        self.members.len().max(1)
    }

    fn hello_for(&self, peer: &PeerKey) -> Hello {
        let role = match self.links.get(peer).map(|link| link.role) {
            Some(LinkRole::Bridge { cell, slot }) if cell > self.my_cell => HelloRole::Bridge {
                from_cell: self.my_cell,
                to_cell: cell,
                slot,
            },
            _ => HelloRole::Intra,
        };
        Hello {
            role,
            cells: self.cells,
            known: u32::try_from(self.my_cell_size()).unwrap_or(u32::MAX),
        }
    }

    fn on_link_up(&mut self, peer: PeerKey, now: Instant, out: &mut Vec<Output>) {
        if !self.links.contains_key(&peer) {
            if self.links.len() >= self.config.max_links {
                out.push(Output::Disconnect(peer));
                return;
            }
            let role = if self.cells > 0 && self.cell_of(&peer) == self.my_cell {
                LinkRole::Intra
            } else {
                LinkRole::Unknown
            };
            self.links.insert(
                peer,
                Link {
                    up: true,
                    since: now,
                    role,
                    unwanted_since: None,
                },
            );
            self.dirty = true;
        }
        if let Some(link) = self.links.get_mut(&peer) {
            link.up = true;
            link.since = now;
        }
        if self.cells > 0 && self.cell_of(&peer) == self.my_cell {
            self.learn(peer, now);
        }
        let hello = wire::encode_hello(&self.hello_for(&peer));
        self.send(peer, hello, out);
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
        let decoded = match wire::decode(message, self.config.max_roster_message) {
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
                        if self.roster.contains_key(&member)
                            || assign_cell(&self.room, &member, cells) == cell
                        {
                            self.learn(member, now);
                        }
                    }
                }
            }
            LinkMessage::Frame(frame) => self.on_frame(from, frame, now, out),
        }
    }

    fn on_hello(&mut self, from: PeerKey, hello: Hello, out: &mut Vec<Output>) {
        let same_view = hello.cells == self.cells;
        let role = match hello.role {
            HelloRole::Intra if same_view && self.cell_of(&from) == self.my_cell => LinkRole::Intra,
            HelloRole::Bridge {
                from_cell,
                to_cell,
                slot,
            } if same_view && to_cell == self.my_cell && from_cell != self.my_cell => {
                LinkRole::Bridge {
                    cell: from_cell,
                    slot,
                }
            }
            _ => return,
        };
        if let Some(link) = self.links.get_mut(&from) {
            // Our own plan's role wins over the peer's claim for links we opened.
            if matches!(link.role, LinkRole::Unknown | LinkRole::Intra) && link.role != role {
                link.role = role;
                self.dirty = true;
                self.link_cache = None;
            }
        }
        if role == LinkRole::Intra
            // Clearly behind (announce replays fill small gaps): a roster costs 32 bytes per
            // member, and while a cell forms every link would otherwise carry one.
            && usize::try_from(hello.known)
                .unwrap_or(usize::MAX)
                .saturating_mul(4)
                < self.my_cell_size().saturating_mul(3)
        {
            let mut members: Vec<PeerKey> = self
                .members
                .iter()
                .map(|member| member.key)
                .take(self.config.max_roster_message)
                .collect();
            members.retain(|key| *key != from);
            let roster = wire::encode_roster(self.cells, self.my_cell, &members);
            self.send(from, roster, out);
        }
    }

    fn signing_parts<'a>(
        room: &'a [u8; 32],
        header: &'a [u8; 81],
        body: &'a [u8],
    ) -> [&'a [u8]; 4] {
        [SIGNING_LABEL, room.as_slice(), header.as_slice(), body]
    }

    fn originate(
        &mut self,
        kind: FrameKind,
        meta: &[u8],
        payload: &[u8],
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), MeshError> {
        if self.phase != Phase::Running {
            return Err(MeshError::NotRunning);
        }
        let len = 4 + meta.len() + payload.len();
        if len + 256 > self.config.max_message_len {
            return Err(MeshError::TooLarge {
                len,
                max: self.config.max_message_len.saturating_sub(256),
            });
        }
        let meta_len = u32::try_from(meta.len()).map_err(|_| MeshError::TooLarge {
            len,
            max: self.config.max_message_len,
        })?;
        let mut plaintext = BytesMut::with_capacity(len);
        plaintext.put_u32(meta_len);
        plaintext.put_slice(meta);
        plaintext.put_slice(payload);
        let id = FrameId {
            kind,
            origin: self.me,
            seq: self.next_seq,
            cells: self.cells,
            origin_cell: self.my_cell,
        };
        self.next_seq += 1;
        let target = match kind {
            FrameKind::Direct(target) => Some(target),
            _ => None,
        };
        let body = Bytes::from(
            self.auth
                .seal(target.as_ref(), &id.body_context(), &plaintext)
                .map_err(MeshError::Auth)?,
        );
        let header = id.signed_header();
        let signature = self
            .auth
            .sign(&Self::signing_parts(&self.room, &header, &body));
        self.seen.insert(&self.me, id.seq, now);
        let frame = Frame {
            ttl: self.config.ttl,
            hops: 1,
            id,
            signature,
            body,
        };
        match kind {
            FrameKind::Direct(target) => {
                if !self.route_direct(&frame, target, self.me, out) {
                    return Err(MeshError::Unroutable);
                }
            }
            FrameKind::Broadcast => {
                let message = frame.encode();
                self.send_to_links(LinkKind::Members, self.me, &message, out);
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, from: PeerKey, frame: Frame, now: Instant, out: &mut Vec<Output>) {
        self.metrics.frames_received += 1;
        if frame.ttl == 0 || frame.ttl > self.config.ttl {
            self.drop_frame(from, DropReason::BadTtl, out);
            return;
        }
        let origin = frame.id.origin;
        let seq = frame.id.seq;
        if origin == self.me {
            self.metrics.duplicates += 1;
            return;
        }
        match self.seen.check(&origin, seq) {
            Ok(()) => {}
            Err(Seen::Duplicate) => {
                self.metrics.duplicates += 1;
                if self.links.get(&from).map(|link| link.role) == Some(LinkRole::Intra) {
                    self.cancel_pending(&origin, seq);
                }
                return;
            }
            Err(Seen::TooOld) => {
                self.drop_frame(from, DropReason::TooOld, out);
                return;
            }
        }
        let header = frame.id.signed_header();
        if self
            .auth
            .verify(
                &origin,
                &Self::signing_parts(&self.room, &header, &frame.body),
                &frame.signature,
            )
            .is_err()
        {
            self.drop_frame(from, DropReason::BadSignature, out);
            return;
        }
        self.seen.insert(&origin, seq, now);
        match frame.id.kind {
            FrameKind::Broadcast => {
                self.deliver(&frame, false, from, out);
                self.forward_broadcast(from, &frame, now, out);
            }
            FrameKind::Direct(target) if target == self.me => {
                self.deliver(&frame, true, from, out);
            }
            FrameKind::Direct(target) => {
                if frame.ttl <= 1 {
                    self.drop_frame(from, DropReason::BadTtl, out);
                    return;
                }
                let next = Frame {
                    ttl: frame.ttl - 1,
                    hops: frame.hops.saturating_add(1),
                    ..frame
                };
                if !self.route_direct(&next, target, from, out) {
                    self.drop_frame(from, DropReason::Unroutable, out);
                }
            }
        }
    }

    fn open_body(&mut self, frame: &Frame, direct: bool) -> Option<(Bytes, Bytes)> {
        let plaintext = self
            .auth
            .open(
                &frame.id.origin,
                direct,
                &frame.id.body_context(),
                &frame.body,
            )
            .ok()?;
        let plaintext = Bytes::from(plaintext);
        let meta_len =
            usize::try_from(u32::from_be_bytes(plaintext.get(..4)?.try_into().ok()?)).ok()?;
        let meta_end = 4usize.checked_add(meta_len)?;
        if meta_end > plaintext.len() {
            return None;
        }
        Some((plaintext.slice(4..meta_end), plaintext.slice(meta_end..)))
    }

    fn deliver(&mut self, frame: &Frame, directed: bool, from: PeerKey, out: &mut Vec<Output>) {
        match self.open_body(frame, directed) {
            Some((meta, payload)) => {
                self.metrics.delivered += 1;
                out.push(Output::Deliver(Delivery {
                    origin: frame.id.origin,
                    seq: frame.id.seq,
                    hops: frame.hops,
                    directed,
                    meta,
                    payload,
                }));
            }
            None => self.drop_frame(from, DropReason::Unopenable, out),
        }
    }

    fn link_cache(&mut self) -> LinkCache {
        if let Some(cache) = self.link_cache.take() {
            return cache;
        }
        let mut cache = LinkCache::default();
        for (peer, link) in &self.links {
            if !link.up {
                continue;
            }
            cache.all.push(*peer);
            match link.role {
                LinkRole::Intra => cache.intra.push(*peer),
                LinkRole::Bridge { .. } => cache.bridges.push(*peer),
                LinkRole::Unknown => {}
            }
        }
        cache
    }

    /// Sends `message` on every up link of `kind` but `exclude`; returns how many.
    fn send_to_links(
        &mut self,
        kind: LinkKind,
        exclude: PeerKey,
        message: &Bytes,
        out: &mut Vec<Output>,
    ) -> usize {
        let cache = self.link_cache();
        let list = match kind {
            LinkKind::Intra => &cache.intra,
            LinkKind::Bridges => &cache.bridges,
            LinkKind::Members => &cache.intra,
            LinkKind::All => &cache.all,
        };
        let mut sent = 0;
        let extra = if kind == LinkKind::Members {
            cache.bridges.as_slice()
        } else {
            &[]
        };
        for peer in list.iter().chain(extra).filter(|peer| **peer != exclude) {
            sent += 1;
            self.metrics.forwarded += 1;
            self.metrics.bytes_sent += message.len() as u64;
            out.push(Output::Send {
                to: *peer,
                message: message.clone(),
            });
        }
        self.link_cache = Some(cache);
        sent
    }

    fn forward_broadcast(
        &mut self,
        from: PeerKey,
        frame: &Frame,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if frame.ttl <= 1 {
            return;
        }
        let from_role = self
            .links
            .get(&from)
            .map_or(LinkRole::Unknown, |link| link.role);
        let mut delay_slot = None;
        let kind = if frame.id.cells != self.cells {
            // Views differ (the cell count is changing): flood once; dedup and TTL bound it.
            LinkKind::All
        } else if frame.id.origin_cell == self.my_cell {
            // From our own cell: carry it out over our bridges.
            let cache = self.link_cache();
            let none = cache.bridges.is_empty();
            self.link_cache = Some(cache);
            if none {
                return;
            }
            LinkKind::Bridges
        } else {
            match from_role {
                LinkRole::Bridge { slot, .. } if slot > 0 => {
                    delay_slot = Some(slot);
                    LinkKind::Intra
                }
                LinkRole::Bridge { .. } | LinkRole::Unknown => LinkKind::Intra,
                // Inside our cell already: whoever sent it covers the cell.
                LinkRole::Intra => return,
            }
        };
        let message = Frame {
            ttl: frame.ttl - 1,
            hops: frame.hops.saturating_add(1),
            id: frame.id,
            signature: frame.signature,
            body: frame.body.clone(),
        }
        .encode();
        match delay_slot {
            Some(slot) => self.schedule_forward(frame, message, from, slot, now, out),
            None => {
                self.send_to_links(kind, from, &message, out);
            }
        }
    }

    fn schedule_forward(
        &mut self,
        frame: &Frame,
        message: Bytes,
        exclude: PeerKey,
        slot: u8,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        // The heap also holds cancelled entries until their time: bound both.
        if self.pending.len() >= self.config.max_pending_forwards
            || self.pending_order.len() >= self.config.max_pending_forwards
        {
            // At the bound: forward now (a duplicate rather than a loss).
            self.send_to_links(LinkKind::Intra, exclude, &message, out);
            return;
        }
        let id = self.next_pending_id;
        self.next_pending_id += 1;
        let due = now + self.config.backup_delay * u32::from(slot);
        self.pending_order.push(Reverse((due, id)));
        self.pending.insert(
            id,
            PendingForward {
                origin: frame.id.origin,
                seq: frame.id.seq,
                message,
                exclude,
            },
        );
        self.pending_by_frame
            .insert((frame.id.origin, frame.id.seq), id);
    }

    fn cancel_pending(&mut self, origin: &PeerKey, seq: u64) {
        if let Some(id) = self.pending_by_frame.remove(&(*origin, seq)) {
            self.pending.remove(&id);
        }
    }

    fn run_due_forwards(&mut self, now: Instant, out: &mut Vec<Output>) {
        while let Some(Reverse((due, id))) = self.pending_order.peek().copied() {
            if due > now {
                break;
            }
            self.pending_order.pop();
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            self.pending_by_frame.remove(&(pending.origin, pending.seq));
            self.send_to_links(LinkKind::Intra, pending.exclude, &pending.message, out);
        }
    }

    /// Sends a directed frame one step closer to `target`; false if there is no way.
    fn route_direct(
        &mut self,
        frame: &Frame,
        target: PeerKey,
        from: PeerKey,
        out: &mut Vec<Output>,
    ) -> bool {
        let up = |links: &KeyMap<PeerKey, Link>, peer: &PeerKey| {
            *peer != from && links.get(peer).is_some_and(|link| link.up)
        };
        let next_hop = if up(&self.links, &target) {
            Some(target)
        } else {
            let target_cell = self.cell_of(&target);
            if target_cell == self.my_cell {
                None
            } else {
                let bridge = self
                    .links
                    .iter()
                    .filter(|(peer, link)| {
                        link.up
                            && **peer != from
                            && matches!(link.role, LinkRole::Bridge { cell, .. } if cell == target_cell)
                    })
                    .map(|(peer, _)| *peer)
                    .min();
                bridge.or_else(|| {
                    slot_holders(
                        &self.members,
                        self.my_cell,
                        target_cell,
                        self.config.bridges_per_pair,
                    )
                    .into_iter()
                    .find(|holder| up(&self.links, holder))
                })
            }
        };
        match next_hop {
            Some(peer) => {
                self.metrics.forwarded += 1;
                let message = frame.encode();
                self.send(peer, message, out);
                true
            }
            None => false,
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.run_due_forwards(now, out);
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
            self.next_expiry = Some(now + self.config.announce_interval / 2);
            self.expire(now);
        }
        if self.next_announce.is_some_and(|at| now >= at) {
            let next = self.jittered(self.config.announce_interval);
            self.next_announce = Some(now + next);
            out.push(Output::Announce {
                topic: Topic::Cell {
                    cells: self.cells,
                    cell: self.my_cell,
                },
                cells: self.cells,
                epoch: self.epoch,
                count: 0,
            });
        }
        // The beacon comes several times per bootstrap wait, so a newcomer hears one live
        // even where the signaling layer does not replay recent announces.
        if self.is_leader && self.my_cell == 0 && self.next_beacon.is_none_or(|at| now >= at) {
            let next = self.jittered(self.config.bootstrap_wait / 3);
            self.next_beacon = Some(now + next);
            self.post_census(now, out);
        }
        if self.next_census.is_some_and(|at| now >= at) {
            let next = self.jittered(self.config.census_interval);
            self.next_census = Some(now + next);
            if self.is_leader {
                self.post_census(now, out);
            }
        }
        self.resize_from_census(now, out);
        if self.dirty {
            self.replan(now, out);
        }
        self.close_unwanted(now, out);
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.config.peer_timeout;
        let links = &self.links;
        let before = self.roster.len();
        self.roster.retain(|peer, known| {
            if links.get(peer).is_some_and(|link| link.up) {
                known.last_seen = now;
            }
            now.saturating_duration_since(known.last_seen) < timeout
        });
        if self.roster.len() != before {
            self.dirty = true;
        }
    }

    /// Posts this cell's size and our view on the lobby (and counts it ourselves).
    fn post_census(&mut self, now: Instant, out: &mut Vec<Output>) {
        let count = u32::try_from(self.my_cell_size()).unwrap_or(u32::MAX);
        self.census.insert(self.my_cell, (count, now));
        out.push(Output::Announce {
            topic: Topic::Lobby,
            cells: self.cells,
            epoch: self.epoch,
            count,
        });
    }

    /// The room's size from the census of the current view, once 3/4 of its cells were heard.
    fn census_estimate(&self) -> Option<usize> {
        let heard = self.census.len() as u64;
        if heard == 0 || heard * 4 < u64::from(self.cells) * 3 {
            return None;
        }
        let sum: u64 = self
            .census
            .values()
            .map(|(count, _)| u64::from(*count))
            .sum();
        usize::try_from(sum * u64::from(self.cells) / heard).ok()
    }

    /// Cell 0's leader alone decides resizes (one decider per view, so peers never split
    /// over noisy estimates) and announces the new view at once; everyone adopts the
    /// highest view heard on the lobby.
    fn resize_from_census(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(since) = self.cells_since else {
            return;
        };
        let period = self.config.census_interval;
        let stale = period.mul_f64(2.5);
        self.census
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < stale);
        if !self.is_leader || self.my_cell != 0 || now.saturating_duration_since(since) < period {
            return;
        }
        let Some(estimate) = self.census_estimate() else {
            return;
        };
        let sizing = self.config.sizing;
        let target = cell_count(estimate, sizing).min(self.config.max_cells);
        // Hysteresis: move only when the current count is wrong for every room size within
        // a third of the estimate (a 10% crash must not reshuffle every cell).
        let low = cell_count(estimate.saturating_mul(3) / 4, sizing);
        let high = cell_count(estimate.saturating_mul(4) / 3, sizing);
        if self.cells < low.min(high) || self.cells > low.max(high) {
            self.epoch = self.epoch.saturating_add(1);
            self.set_cells(target, now, out);
            // Tell the room now (this peer may not lead cell 0 of the new view, whose leader
            // beacons from then on).
            out.push(Output::Announce {
                topic: Topic::Lobby,
                cells: self.cells,
                epoch: self.epoch,
                count: 0,
            });
        }
    }

    /// The members of `cell` this peer knows (itself not included).
    fn known_members_of(&self, cell: u32) -> Vec<Member> {
        self.roster
            .iter()
            .filter(|(_, known)| known.cell == cell)
            .map(|(key, known)| Member {
                key: *key,
                seed: known.seed,
            })
            .collect()
    }

    fn replan(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.dirty = false;
        let my_cell = self.my_cell;
        let cells = self.cells;
        let k = self.config.bridges_per_pair;
        let mut members = self.known_members_of(my_cell);
        members.push(Member {
            key: self.me,
            seed: self.my_seed,
        });
        members.sort_by_key(|member| member.key);
        self.is_leader = members
            .iter()
            .min_by_key(|member| (member.seed, member.key))
            .is_some_and(|leader| leader.key == self.me);
        // Slots depend only on this cell's members and the cell count: most re-plans (a
        // remote roster changed, a link came up) leave them as they are.
        let settled = self
            .cells_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.config.bridge_settle);
        if members != self.members || self.slots_for != (cells, my_cell) {
            self.members = members;
            self.slots_for = (0, 0);
        }
        if settled && self.slots_for != (cells, my_cell) {
            self.slots = my_slots(&self.members, &self.me, my_cell, cells, k);
            self.slots_for = (cells, my_cell);
        }

        let mut wanted: HashMap<PeerKey, LinkRole> = HashMap::new();
        for member in &self.members {
            if member.key != self.me {
                wanted.insert(member.key, LinkRole::Intra);
            }
        }
        let mut topics: BTreeSet<Topic> = BTreeSet::new();
        topics.insert(Topic::Lobby);
        topics.insert(Topic::Cell {
            cells,
            cell: my_cell,
        });
        let mut accepted_from: HashSet<u32> = HashSet::new();
        if !settled {
            // Come back when settled.
            self.dirty = true;
        }
        let slots = if settled {
            self.slots.clone()
        } else {
            Vec::new()
        };
        for (other, slot) in slots {
            if other < my_cell {
                accepted_from.insert(other);
                continue;
            }
            topics.insert(Topic::Cell { cells, cell: other });
            let theirs = self.known_members_of(other);
            let holders = slot_holders(&theirs, other, my_cell, k);
            let counterpart = holders
                .get(usize::from(slot))
                .or_else(|| holders.last())
                .copied();
            if let Some(peer) = counterpart {
                wanted
                    .entry(peer)
                    .or_insert(LinkRole::Bridge { cell: other, slot });
            }
        }
        // Topics linger like links: slots settle while a cell fills up, and every new
        // subscription costs a replay of the topic's recent announces.
        for topic in self.topics.clone() {
            if topics.contains(&topic) {
                self.unwanted_topics.remove(&topic);
                continue;
            }
            let stale_view = matches!(topic, Topic::Cell { cells: c, .. } if c != cells);
            let since = *self.unwanted_topics.entry(topic).or_insert(now);
            if stale_view || now.saturating_duration_since(since) >= self.config.linger {
                self.unwanted_topics.remove(&topic);
                self.topics.remove(&topic);
                out.push(Output::Unsubscribe(topic));
            } else {
                // Keep re-planning until it is dropped.
                self.dirty = true;
            }
        }
        for topic in topics {
            if !self.topics.contains(&topic) {
                self.subscribe(topic, out);
                if let Topic::Cell { cell, .. } = topic {
                    if cell == my_cell {
                        out.push(Output::Announce {
                            topic,
                            cells,
                            epoch: self.epoch,
                            count: 0,
                        });
                    }
                }
            }
        }
        let mut hellos = Vec::new();
        for (peer, link) in &mut self.links {
            let keep_inbound =
                matches!(link.role, LinkRole::Bridge { cell, .. } if accepted_from.contains(&cell));
            match wanted.get(peer) {
                Some(role) => {
                    link.unwanted_since = None;
                    if let LinkRole::Bridge { .. } = role {
                        if link.role != *role {
                            link.role = *role;
                            if link.up {
                                hellos.push(*peer);
                            }
                        }
                    } else if link.role == LinkRole::Unknown {
                        link.role = *role;
                    }
                }
                None if keep_inbound && link.up => link.unwanted_since = None,
                None => {
                    link.unwanted_since.get_or_insert(now);
                }
            }
        }
        for peer in hellos {
            let hello = wire::encode_hello(&self.hello_for(&peer));
            self.send(peer, hello, out);
        }
        let mut to_connect: Vec<(PeerKey, LinkRole)> = wanted
            .into_iter()
            .filter(|(peer, _)| !self.links.contains_key(peer))
            .collect();
        to_connect.sort_by_key(|(peer, _)| *peer);
        for (peer, role) in to_connect {
            if self.links.len() >= self.config.max_links {
                break;
            }
            self.links.insert(
                peer,
                Link {
                    up: false,
                    since: now,
                    role,
                    unwanted_since: None,
                },
            );
            out.push(Output::Connect(peer));
        }
    }

    fn close_unwanted(&mut self, now: Instant, out: &mut Vec<Output>) {
        let linger = self.config.linger;
        let connect_timeout = self.config.connect_timeout;
        let mut closing = Vec::new();
        for (peer, link) in &self.links {
            let unwanted = link
                .unwanted_since
                .is_some_and(|since| now.saturating_duration_since(since) >= linger);
            let stuck = !link.up && now.saturating_duration_since(link.since) >= connect_timeout;
            if unwanted || stuck {
                closing.push((*peer, stuck));
            }
        }
        for (peer, stuck) in closing {
            self.links.remove(&peer);
            if stuck {
                self.roster.remove(&peer);
            }
            self.dirty = true;
            out.push(Output::Disconnect(peer));
        }
    }

    fn schedule_wake(&mut self, out: &mut Vec<Output>) {
        let pending = self.pending_order.peek().map(|Reverse((due, _))| *due);
        let want = match (self.next_tick, pending) {
            (Some(tick), Some(due)) => Some(tick.min(due)),
            (tick, due) => tick.or(due),
        };
        if let Some(want) = want {
            if self.wake.is_none_or(|wake| want < wake) {
                self.wake = Some(want);
                out.push(Output::WakeAt(want));
            }
        }
    }
}
