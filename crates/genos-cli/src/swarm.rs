//! `genos swarm`: many real peers in one process join one room at once, then broadcast and
//! send to single peers at a steady rate; the report says how the room formed and how well
//! it delivered. Written against the room layer, so it runs on any backends (the command
//! uses the Nostr relay and WebRTC on 127.0.0.1).
//!
//! The room is a full mesh or a cells room ([`Topology`]). A cells room's first peer joins
//! alone and starts the room; the rest then join at once and find its view stored at the
//! relay. The room has formed when every peer agrees on the cell count and holds every
//! link its overlay plans (checked three times, 300 ms apart).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use genos::cellmesh::{OverlayConfig, cell_count, planned_links_in};
use genos::crypto::{Identity, PeerId, RoomKey};
use genos::room::{Room, RoomConfig, RoomError, RoomEvent, Topology, planned_peers};
use genos::signal::Signaling;
use genos::transport::Transport;
use rand::Rng;

/// Why a swarm run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The room layer refused something.
    #[error("room: {0}")]
    Room(#[from] RoomError),
    /// The room did not form within the limit.
    #[error("the room did not form within {limit:?}: {links} of {wanted} peer links up{detail}")]
    NotFormed {
        /// Peers short of links, one per line (cells rooms).
        detail: String,
        /// The limit.
        limit: Duration,
        /// Links (counted at both ends) up when it ran out.
        links: usize,
        /// Links wanted.
        wanted: usize,
    },
    /// Fewer than two peers.
    #[error("a swarm needs at least two peers")]
    TooFewPeers,
    /// The runtime of a peer that is to crash could not start or lost its join.
    #[error("a crashing peer's runtime: {0}")]
    Runtime(String),
    /// A plan value out of range.
    #[error("invalid plan: {0}")]
    InvalidPlan(&'static str),
}

/// What the swarm does once the room has formed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SwarmPlan {
    /// Broadcasts, each from a random peer to every other.
    pub broadcasts: usize,
    /// Directed sends, each from a random peer to another random peer.
    pub directed: usize,
    /// Sends per second (broadcasts and directed sends interleaved).
    pub rate: f64,
    /// Payload size of each send, at least 17 bytes (the probe header).
    pub payload_bytes: usize,
    /// Period over which the peers arrive (evenly spaced joins); zero: all at once.
    pub arrival: Duration,
    /// Limit on the room forming (from the last arrival).
    pub form_timeout: Duration,
    /// How long after the last send to wait for stragglers.
    pub drain_timeout: Duration,
    /// Fraction of the peers (never the first) that crash halfway through the traffic, all
    /// at once and without a goodbye; 0: none.
    pub crash: f64,
    /// (Cells rooms) The crash takes every cell mate of one peer and every peer it is linked
    /// to, so that peer is cut off from the room until the crash is noticed and it is linked
    /// again; the rest of [`Self::crash`] is drawn at random. Every peer then runs on
    /// a runtime of its own, as the victims are known only once the room formed.
    pub crash_cell: bool,
    /// How long to watch the survivors re-form after a crash.
    pub repair_timeout: Duration,
}

impl Default for SwarmPlan {
    fn default() -> Self {
        Self {
            broadcasts: 50,
            directed: 50,
            rate: 20.0,
            payload_bytes: 256,
            arrival: Duration::ZERO,
            form_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(15),
            crash: 0.0,
            crash_cell: false,
            repair_timeout: Duration::from_secs(60),
        }
    }
}

/// What the swarm measured. Ratios are of copies that should have arrived.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SwarmReport {
    /// Peers in the room.
    pub peers: usize,
    /// The topology the room used.
    pub topology: &'static str,
    /// Connections per peer once formed: mean and max.
    pub connections_mean: f64,
    /// See `connections_mean`.
    pub connections_max: usize,
    /// From the first join until every peer had every link it should.
    pub join_all_ms: f64,
    /// Broadcasts sent.
    pub broadcasts: usize,
    /// Broadcast copies received / (broadcasts x (peers - 1)).
    pub delivered_ratio: f64,
    /// Send-to-receive time of broadcast copies and directed sends, median and 99th
    /// percentile.
    pub delivery_p50_ms: f64,
    /// See `delivery_p50_ms`.
    pub delivery_p99_ms: f64,
    /// Directed sends made.
    pub directed: usize,
    /// Directed sends received by their target / sent.
    pub directed_delivered_ratio: f64,
    /// Copies received by a peer that was not the target (must be 0).
    pub misdelivered: usize,
    /// Signaling events each peer published per minute while the room carried traffic
    /// (after it formed): its relay footprint in steady state, per relay.
    pub relay_events_per_peer_min: f64,
    /// Signaling events each peer published to join (presence, offers, answers, candidates).
    pub relay_events_per_peer_join: f64,
    /// Resident memory of this process once the room formed, in MiB.
    pub rss_mib: f64,
    /// (Cells) cells in the room once formed (0 for a full mesh).
    pub cells: u32,
    /// (Cells) mean links crossed by the overlay frames peers received (1 for a full mesh).
    pub hops_mean: f64,
    /// The most links a peer holds in the overlay's plan for these very peers, everyone
    /// knowing everyone (`genos_cellmesh::planned_links`); peers - 1 for a full mesh.
    pub connections_planned_max: usize,
    /// (Cells) links of that plan no peer held when the room formed: bridges chosen
    /// differently (see `genos_cellmesh::planned_links_in`; a peer that missed a presence
    /// event picks another member until the next refresh).
    pub plan_links_missing: usize,
    /// Peers crashed halfway through the traffic.
    pub crashed: usize,
    /// Broadcast copies received / copies that should have arrived, of the broadcasts sent
    /// after the crash (to the survivors); `delivered_ratio` when nothing crashed.
    pub delivered_ratio_after_crash: f64,
    /// From the crash until the survivors formed again (as a room forms: for cells, one
    /// view, every cell mate linked, every cell pair bridged, no link to a crashed peer or
    /// lingering); None when nothing crashed or it did not happen within
    /// [`SwarmPlan::repair_timeout`].
    pub repaired_ms: Option<f64>,
    /// With [`SwarmPlan::crash_cell`]: the peer the crash cut off from the room (every peer
    /// it was linked to, and every cell mate, crashed); None if no peer could be.
    pub cut_off: Option<usize>,
}

impl SwarmReport {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"peers\":{},\"topology\":\"{}\",\"connections_mean\":{:.2},",
                "\"connections_max\":{},\"join_all_ms\":{:.1},\"broadcasts\":{},",
                "\"delivered_ratio\":{:.6},\"delivery_p50_ms\":{:.3},\"delivery_p99_ms\":{:.3},",
                "\"directed\":{},\"directed_delivered_ratio\":{:.6},\"misdelivered\":{},",
                "\"relay_events_per_peer_min\":{:.3},\"relay_events_per_peer_join\":{:.1},",
                "\"rss_mib\":{:.1},\"cells\":{},\"hops_mean\":{:.3},",
                "\"connections_planned_max\":{},\"plan_links_missing\":{},\"crashed\":{},",
                "\"delivered_ratio_after_crash\":{:.6},\"repaired_ms\":{},\"cut_off\":{}}}"
            ),
            self.peers,
            self.topology,
            self.connections_mean,
            self.connections_max,
            self.join_all_ms,
            self.broadcasts,
            self.delivered_ratio,
            self.delivery_p50_ms,
            self.delivery_p99_ms,
            self.directed,
            self.directed_delivered_ratio,
            self.misdelivered,
            self.relay_events_per_peer_min,
            self.relay_events_per_peer_join,
            self.rss_mib,
            self.cells,
            self.hops_mean,
            self.connections_planned_max,
            self.plan_links_missing,
            self.crashed,
            self.delivered_ratio_after_crash,
            self.repaired_ms
                .map_or_else(|| "null".to_owned(), |ms| format!("{ms:.1}")),
            self.cut_off
                .map_or_else(|| "null".to_owned(), |peer| peer.to_string()),
        )
    }
}

/// The channel the swarm's probes travel on.
const CHANNEL: &str = "swarm";
/// Probe header: kind (1), probe number (8), send time in ns since the run began (8).
const HEADER: usize = 17;
const BROADCAST: u8 = 0;
const DIRECTED: u8 = 1;

fn probe(kind: u8, number: u64, sent_ns: u64, size: usize) -> Bytes {
    let mut bytes = BytesMut::with_capacity(size.max(HEADER));
    bytes.put_u8(kind);
    bytes.put_u64(number);
    bytes.put_u64(sent_ns);
    bytes.resize(size.max(HEADER), 0);
    bytes.freeze()
}

fn read_probe(payload: &[u8]) -> Option<(u8, u64, u64)> {
    let kind = *payload.first()?;
    let number = u64::from_be_bytes(payload.get(1..9)?.try_into().ok()?);
    let sent = u64::from_be_bytes(payload.get(9..17)?.try_into().ok()?);
    Some((kind, number, sent))
}

/// Copies received, by (kind, probe number), with latencies.
#[derive(Default)]
struct Received {
    copies: HashMap<(u8, u64), HashSet<usize>>,
    latencies_ms: Vec<f64>,
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(index).copied().unwrap_or(0.0)
}

/// This process's resident memory in MiB (0 where /proc is missing).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A peer that is to crash: its room runs on a runtime of its own, so shutting that
/// runtime down stops every task of the peer at once (room, signaling, transport) with no
/// goodbye, as a killed process would. Shut down when dropped.
struct Doomed(Option<tokio::runtime::Runtime>);

impl Doomed {
    /// A runtime of its own running `task`.
    fn spawn<F>(task: F) -> std::io::Result<(Self, tokio::task::JoinHandle<F::Output>)>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let handle = runtime.spawn(task);
        Ok((Self(Some(runtime)), handle))
    }

    fn crash(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.crash();
    }
}

/// One send of the traffic: who sent it, to whom it should arrive.
struct Sent {
    kind: u8,
    number: u64,
    /// Peers it should reach (every live peer but the origin, or the target).
    expected: Vec<usize>,
    after_crash: bool,
    /// The sending peer and when it sent, for the report of what went missing.
    origin: usize,
    sent_ns: u64,
}

/// Runs a swarm: one room per `(signaling, identity)`, all on `transport`, all with `key`
/// and `config` (limits and topology). `on_formed` is told how long the room took to form,
/// before the traffic starts. With [`SwarmPlan::crash`], the traffic is sent in two halves:
/// the first, drained, then the crash, then the second while the room repairs.
pub async fn run<S, T>(
    peers: Vec<(S, Identity)>,
    transport: T,
    key: &RoomKey,
    config: &RoomConfig,
    plan: &SwarmPlan,
    mut on_formed: impl FnMut(Duration),
) -> Result<SwarmReport, SwarmError>
where
    S: Signaling,
    T: Transport + Clone,
{
    let count = peers.len();
    if count < 2 {
        return Err(SwarmError::TooFewPeers);
    }
    if !(plan.rate > 0.0 && plan.rate.is_finite()) {
        return Err(SwarmError::InvalidPlan("rate must be a positive number"));
    }
    if !(0.0..1.0).contains(&plan.crash) {
        return Err(SwarmError::InvalidPlan(
            "crash must be a fraction in [0, 1)",
        ));
    }
    let victims = ((count as f64 * plan.crash).round() as usize).min(count - 1);
    if count - victims < 2 {
        return Err(SwarmError::InvalidPlan(
            "a crash must leave at least two peers",
        ));
    }
    let cells_settings = config.topology().cells_settings();
    let cells = cells_settings.is_some();
    if plan.crash_cell && (!cells || victims == 0) {
        return Err(SwarmError::InvalidPlan(
            "crash_cell needs a cells room and a crash",
        ));
    }
    // Never the first peer: in a cells room it starts the room alone. With `crash_cell`
    // every other peer may be a victim, chosen once the room formed.
    let doomed_set: HashSet<usize> = if plan.crash_cell {
        (1..count).collect()
    } else {
        rand::seq::index::sample(&mut rand::rng(), count - 1, victims)
            .into_iter()
            .map(|index| index + 1)
            .collect()
    };
    let join = |index: usize, (signaling, identity): (S, Identity)| {
        let config = config.clone().with_identity(identity.clone());
        let transport = transport.clone();
        let key = key.clone();
        let doomed = doomed_set.contains(&index);
        async move {
            let join = async move {
                Room::join_with_key(signaling, transport, identity.peer_id(), &key, &config).await
            };
            if !doomed {
                return join
                    .await
                    .map(|room| (room, None))
                    .map_err(SwarmError::from);
            }
            let (runtime, handle) =
                Doomed::spawn(join).map_err(|e| SwarmError::Runtime(e.to_string()))?;
            match handle.await {
                Ok(room) => Ok((room?, Some(runtime))),
                Err(e) => Err(SwarmError::Runtime(e.to_string())),
            }
        }
    };
    let start = Instant::now();
    let mut peers = peers.into_iter().enumerate();
    let mut rooms: Vec<Room> = Vec::with_capacity(count);
    let mut doomed: Vec<(usize, Doomed)> = Vec::new();
    if cells {
        // The first peer starts the room; the rest find its view stored at the relay.
        if let Some((index, first)) = peers.next() {
            let (room, _) = join(index, first).await?;
            let mut events = room.events();
            let started = tokio::time::timeout(plan.form_timeout, async {
                while let Some(event) = events.next().await {
                    if matches!(event, RoomEvent::CellsChanged { .. }) {
                        return;
                    }
                }
            });
            let _ = started.await;
            rooms.push(room);
        }
    }
    let remaining = peers.len();
    let gap = plan
        .arrival
        .checked_div(u32::try_from(remaining).unwrap_or(u32::MAX));
    let joins = futures::future::join_all(peers.enumerate().map(|(i, (index, peer))| {
        let delay = gap.unwrap_or_default() * u32::try_from(i).unwrap_or(u32::MAX);
        let join = &join;
        async move {
            tokio::time::sleep(delay).await;
            join(index, peer).await
        }
    }))
    .await;
    for joined in joins {
        let (room, runtime) = joined?;
        if let Some(runtime) = runtime {
            doomed.push((rooms.len(), runtime));
        }
        rooms.push(room);
    }

    let Formation {
        formed,
        links,
        wanted,
        detail,
        plan_gap,
    } = wait_formed(&rooms, count, config, key, plan.form_timeout).await;
    if !formed {
        for room in &rooms {
            let _ = room.leave().await;
        }
        return Err(SwarmError::NotFormed {
            detail,
            limit: plan.form_timeout,
            links,
            wanted,
        });
    }
    let join_all = start.elapsed();
    on_formed(join_all);
    let connections: Vec<usize> = rooms.iter().map(|room| room.peers().len()).collect();
    let cell_count = rooms
        .first()
        .and_then(Room::mesh_status)
        .map_or(0, |status| status.cells);
    let connections_planned_max = match &cells_settings {
        Some(settings) => {
            let keys: Vec<[u8; 32]> = rooms.iter().map(|r| *r.local_peer().as_bytes()).collect();
            planned_links_in(&key.topic(), &keys, cell_count, &settings.overlay)
                .iter()
                .map(Vec::len)
                .max()
                .unwrap_or(0)
        }
        None => count - 1,
    };
    let rss = rss_mib();
    let published = |rooms: &[Room]| -> u64 {
        rooms
            .iter()
            .map(|room| room.signal_health().published)
            .sum()
    };
    let published_at_formed = published(&rooms);
    let traffic_start = Instant::now();

    // Receivers.
    let received = Arc::new(Mutex::new(Received::default()));
    let mut readers = Vec::new();
    let mut channels = Vec::new();
    for (index, room) in rooms.iter().enumerate() {
        let channel = room.channel(CHANNEL)?;
        channels.push(channel.clone());
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            while let Some(message) = channel.recv().await {
                let Some((kind, number, sent)) = read_probe(&message.payload) else {
                    continue;
                };
                let latency_ms = nanos_since(start).saturating_sub(sent) as f64 / 1e6;
                let mut received = received.lock().unwrap_or_else(|p| p.into_inner());
                if received
                    .copies
                    .entry((kind, number))
                    .or_default()
                    .insert(index)
                {
                    received.latencies_ms.push(latency_ms);
                }
            }
        }));
    }

    // Traffic: broadcasts and directed sends interleaved at the plan's rate; with a crash,
    // in two halves around it.
    let mut traffic = Traffic {
        channels: &channels,
        ids: rooms.iter().map(Room::local_peer).collect(),
        alive: (0..count).collect(),
        pace: tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate)),
        payload_bytes: plan.payload_bytes,
        start,
        sent: Vec::new(),
        broadcasts: 0,
        directed: 0,
    };
    let mut repaired_ms = None;
    let mut cut_off = None;
    if doomed.is_empty() {
        traffic.send(plan.broadcasts, plan.directed, false).await?;
        drain(&received, &traffic.sent, plan.drain_timeout).await;
    } else {
        traffic
            .send(plan.broadcasts / 2, plan.directed / 2, false)
            .await?;
        drain(&received, &traffic.sent, plan.drain_timeout).await;
        let crashed = if plan.crash_cell {
            let (crashed, spared) = cell_victims(&rooms, victims);
            cut_off = spared;
            crashed
        } else {
            doomed.iter().map(|(index, _)| *index).collect()
        };
        let crashed_at = Instant::now();
        for (_, runtime) in doomed
            .iter_mut()
            .filter(|(index, _)| crashed.contains(index))
        {
            runtime.crash();
        }
        tracing::info!(
            at_ms = nanos_since(start) / 1_000_000,
            "crashed peers {crashed:?}"
        );
        if tracing::enabled!(tracing::Level::DEBUG) {
            log_layout(&rooms);
        }
        traffic.alive.retain(|index| !crashed.contains(index));
        let survivors: Vec<Room> = traffic
            .alive
            .iter()
            .filter_map(|i| rooms.get(*i).cloned())
            .collect();
        let (sent, repaired) = tokio::join!(
            traffic.send(
                plan.broadcasts - plan.broadcasts / 2,
                plan.directed - plan.directed / 2,
                true,
            ),
            async {
                let repair = wait_formed(
                    &survivors,
                    survivors.len(),
                    config,
                    key,
                    plan.repair_timeout,
                )
                .await;
                if !repair.formed {
                    tracing::warn!("the survivors did not re-form:{}", repair.detail);
                }
                repair.formed.then(|| crashed_at.elapsed())
            }
        );
        sent?;
        repaired_ms = repaired.map(|took| took.as_secs_f64() * 1e3);
        drain(&received, &traffic.sent, plan.drain_timeout).await;
    }
    let traffic_time = traffic_start.elapsed();
    let Traffic { alive, sent, .. } = traffic;
    let published_traffic = published(&rooms).saturating_sub(published_at_formed);
    for reader in &readers {
        reader.abort();
    }
    let received = std::mem::take(&mut *received.lock().unwrap_or_else(|p| p.into_inner()));
    let mut tally = Tally::default();
    for probe in &sent {
        let receivers = received.copies.get(&(probe.kind, probe.number));
        let got = receivers.map_or(0, |receivers| {
            probe
                .expected
                .iter()
                .filter(|index| receivers.contains(index))
                .count()
        });
        if got < probe.expected.len() {
            let missing: Vec<&usize> = probe
                .expected
                .iter()
                .filter(|index| receivers.is_none_or(|r| !r.contains(index)))
                .collect();
            tracing::warn!(
                kind = if probe.kind == BROADCAST {
                    "broadcast"
                } else {
                    "directed"
                },
                number = probe.number,
                origin = probe.origin,
                sent_ms = probe.sent_ns / 1_000_000,
                after_crash = probe.after_crash,
                "missing at peers {missing:?}"
            );
            for index in missing {
                if let Some(status) = rooms.get(*index).and_then(Room::mesh_status) {
                    tracing::debug!(peer = index, cell = status.cell, "{:?}", status.metrics);
                }
            }
        }
        if probe.kind == BROADCAST {
            tally.broadcast.add(got, probe.expected.len());
            if probe.after_crash {
                tally.after_crash.add(got, probe.expected.len());
            }
        } else {
            tally.directed.add(got, probe.expected.len());
            tally.misdelivered += receivers.map_or(0, |r| r.len()) - got;
        }
    }
    let mut latencies = received.latencies_ms;
    latencies.sort_by(f64::total_cmp);
    let live_rooms = || alive.iter().filter_map(|index| rooms.get(*index));
    let (frames, hops) = live_rooms().fold((0u64, 0u64), |(frames, hops), room| {
        let stats = room.stats();
        (frames + stats.mesh_delivered, hops + stats.mesh_hops)
    });
    for room in live_rooms() {
        let _ = room.leave().await;
    }
    drop(doomed);
    let minutes = traffic_time.as_secs_f64() / 60.0;
    Ok(SwarmReport {
        peers: count,
        topology: match config.topology() {
            Topology::Auto(_) => "auto",
            _ if cells => "cells",
            _ => "mesh",
        },
        connections_mean: connections.iter().sum::<usize>() as f64 / count as f64,
        connections_max: connections.iter().copied().max().unwrap_or(0),
        join_all_ms: join_all.as_secs_f64() * 1e3,
        broadcasts: plan.broadcasts,
        delivered_ratio: tally.broadcast.ratio(),
        delivery_p50_ms: percentile(&latencies, 0.5),
        delivery_p99_ms: percentile(&latencies, 0.99),
        directed: plan.directed,
        directed_delivered_ratio: tally.directed.ratio(),
        misdelivered: tally.misdelivered,
        relay_events_per_peer_min: if minutes > 0.0 {
            published_traffic as f64 / count as f64 / minutes
        } else {
            0.0
        },
        relay_events_per_peer_join: published_at_formed as f64 / count as f64,
        rss_mib: rss,
        cells: cell_count,
        connections_planned_max,
        plan_links_missing: plan_gap,
        hops_mean: if frames == 0 {
            1.0
        } else {
            hops as f64 / frames as f64
        },
        crashed: count - alive.len(),
        delivered_ratio_after_crash: if count == alive.len() {
            tally.broadcast.ratio()
        } else {
            tally.after_crash.ratio()
        },
        repaired_ms,
        cut_off,
    })
}

/// Copies that arrived of those that should have.
#[derive(Default)]
struct Ratio {
    got: usize,
    of: usize,
}

impl Ratio {
    fn add(&mut self, got: usize, of: usize) {
        self.got += got;
        self.of += of;
    }

    fn ratio(&self) -> f64 {
        if self.of == 0 {
            1.0
        } else {
            self.got as f64 / self.of as f64
        }
    }
}

#[derive(Default)]
struct Tally {
    broadcast: Ratio,
    after_crash: Ratio,
    directed: Ratio,
    misdelivered: usize,
}

/// The swarm's senders: paced sends from random live peers.
struct Traffic<'a> {
    channels: &'a [genos::room::Channel],
    ids: Vec<PeerId>,
    alive: Vec<usize>,
    pace: tokio::time::Interval,
    payload_bytes: usize,
    start: Instant,
    sent: Vec<Sent>,
    broadcasts: u64,
    directed: u64,
}

impl Traffic<'_> {
    /// Sends `broadcasts` and `directed` sends, interleaved, from random live peers.
    async fn send(
        &mut self,
        broadcasts: usize,
        directed: usize,
        after_crash: bool,
    ) -> Result<(), SwarmError> {
        let (mut b, mut d) = (0usize, 0usize);
        while b < broadcasts || d < directed {
            self.pace.tick().await;
            let (origin, target) = {
                let mut rng = rand::rng();
                let live = self.alive.len();
                let origin = rng.random_range(0..live);
                let mut target = rng.random_range(0..live - 1);
                if target >= origin {
                    target += 1;
                }
                let pick = |at: usize| self.alive.get(at).copied().unwrap_or_default();
                (pick(origin), pick(target))
            };
            let Some(channel) = self.channels.get(origin) else {
                continue;
            };
            let sent_ns = nanos_since(self.start);
            if d >= directed || (b < broadcasts && b <= d) {
                let number = self.broadcasts;
                channel
                    .send(probe(BROADCAST, number, sent_ns, self.payload_bytes))
                    .await?;
                let expected = self.alive.iter().copied().filter(|i| *i != origin);
                self.sent.push(Sent {
                    kind: BROADCAST,
                    number,
                    expected: expected.collect(),
                    after_crash,
                    origin,
                    sent_ns,
                });
                self.broadcasts += 1;
                b += 1;
            } else {
                let number = self.directed;
                let Some(to) = self.ids.get(target).copied() else {
                    continue;
                };
                channel
                    .send_to(to, probe(DIRECTED, number, sent_ns, self.payload_bytes))
                    .await?;
                self.sent.push(Sent {
                    kind: DIRECTED,
                    number,
                    expected: vec![target],
                    after_crash,
                    origin,
                    sent_ns,
                });
                self.directed += 1;
                d += 1;
            }
        }
        Ok(())
    }
}

/// Each room's peer id to its index in `rooms`.
fn peer_indices(rooms: &[Room]) -> HashMap<PeerId, usize> {
    rooms
        .iter()
        .enumerate()
        .map(|(i, room)| (room.local_peer(), i))
        .collect()
}

/// `victims` peers to crash (never the first): every cell mate of one peer and every peer
/// it holds a link to (so it is cut off from the room; the peer with the fewest such, at
/// most `victims`), then others at random. Returns them and the peer cut off.
fn cell_victims(rooms: &[Room], victims: usize) -> (HashSet<usize>, Option<usize>) {
    let index = peer_indices(rooms);
    let cell_of: Vec<Option<u32>> = rooms
        .iter()
        .map(|room| room.mesh_status().map(|status| status.cell))
        .collect();
    let around = |i: usize| -> HashSet<usize> {
        let mates = (0..rooms.len()).filter(|j| *j != i && cell_of.get(*j) == cell_of.get(i));
        let held = rooms.get(i).map(Room::peers).unwrap_or_default();
        let linked = held.iter().filter_map(|peer| index.get(peer).copied());
        mates.chain(linked).collect()
    };
    let cut_off = (1..rooms.len())
        .map(|i| (i, around(i)))
        .filter(|(_, set)| !set.contains(&0) && set.len() <= victims)
        .min_by_key(|(i, set)| (set.len(), *i));
    let (spared, mut crashed) = match cut_off {
        Some((peer, set)) => (Some(peer), set),
        None => (None, HashSet::new()),
    };
    let mut rng = rand::rng();
    while crashed.len() < victims {
        let pick = rng.random_range(1..rooms.len());
        if Some(pick) != spared {
            crashed.insert(pick);
        }
    }
    (crashed, spared)
}

/// Each peer's cell and the peers it holds links to (by index), for debugging a run.
fn log_layout(rooms: &[Room]) {
    let index = peer_indices(rooms);
    for (i, room) in rooms.iter().enumerate() {
        let cell = room.mesh_status().map(|status| status.cell);
        let mut held: Vec<usize> = room
            .peers()
            .iter()
            .filter_map(|peer| index.get(peer).copied())
            .collect();
        held.sort_unstable();
        tracing::debug!(peer = i, ?cell, "holds {held:?}");
    }
}

/// Waits until every copy of `sent` is in or `limit` passes.
async fn drain(received: &Mutex<Received>, sent: &[Sent], limit: Duration) {
    let expected: usize = sent.iter().map(|probe| probe.expected.len()).sum();
    let _ = tokio::time::timeout(limit, async {
        loop {
            let have: usize = {
                let received = received.lock().unwrap_or_else(|p| p.into_inner());
                received.copies.values().map(HashSet::len).sum()
            };
            if have >= expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// How a room's forming ended.
struct Formation {
    formed: bool,
    /// Links up and wanted (counted at both ends; cells: cell-mate links).
    links: usize,
    wanted: usize,
    /// What peers lack, when it did not form.
    detail: String,
    /// (Cells) links of the exact plan not held.
    plan_gap: usize,
}

/// Waits until `rooms` (`count` peers) formed their topology.
async fn wait_formed(
    rooms: &[Room],
    count: usize,
    config: &RoomConfig,
    key: &RoomKey,
    limit: Duration,
) -> Formation {
    if let Some(settings) = config.topology().cells_settings() {
        // A cell count fit for the room: the overlay's leader resizes when the count is
        // wrong for every size within a third of the room's (a count at the edge of that
        // range can stand until the next census), so any count between that for half the
        // room and that for a third more is a room that formed, not one still growing.
        let sizing = settings.overlay.sizing;
        let bounds = (
            cell_count(count / 2, sizing),
            cell_count(count * 4 / 3, sizing),
        );
        form_cells(rooms, bounds, &key.topic(), &settings.overlay, limit).await
    } else {
        let (formed, links, wanted) = form_mesh(rooms, limit).await;
        Formation {
            formed,
            links,
            wanted,
            detail: String::new(),
            plan_gap: 0,
        }
    }
}

/// Waits until every room saw every other peer join; returns (formed, links, wanted).
async fn form_mesh(rooms: &[Room], limit: Duration) -> (bool, usize, usize) {
    let count = rooms.len();
    let wanted = count * (count - 1);
    let links = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let formed = futures::future::join_all(rooms.iter().map(|room| {
        let mut events = room.events();
        let links = links.clone();
        async move {
            let mut met = HashSet::new();
            while met.len() < count - 1 {
                match events.next().await {
                    Some(RoomEvent::PeerJoined { peer }) => {
                        if met.insert(peer) {
                            links.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        }
    }));
    let formed = tokio::time::timeout(limit, formed).await.is_ok();
    let links = links.load(std::sync::atomic::Ordering::Relaxed);
    (formed, links, wanted)
}

/// How far a cells room is from formed. Formed: every peer agrees on a cell count fit for
/// the room, holds a link to every cell mate (cells are a full mesh), every pair of cells is
/// bridged, and no peer holds a link outside `rooms` (to a crashed peer) or one its overlay
/// no longer wants (of an earlier view, lingering before it closes). Which members
/// bridge a pair depends on what each peer has heard (a lost presence event changes a
/// bridge choice until the next refresh, minutes later), so the exact plan
/// `planned_links_in` gives for every peer's key is reported beside it
/// (`plan_missing`), not required: delivery needs the structure, not one choice of bridges.
struct CellsPlan {
    cells: u32,
    agreed: bool,
    /// Per room: cell mates it lacks; links to peers outside the room or lingering.
    missing: Vec<Vec<PeerId>>,
    outside: Vec<usize>,
    /// Links wanted (cell mates, counted at both ends) and cell pairs not bridged.
    wanted: usize,
    unbridged: Vec<(u32, u32)>,
    /// Per room: links of the exact plan it lacks.
    plan_missing: Vec<Vec<PeerId>>,
}

impl CellsPlan {
    fn of(rooms: &[Room], bounds: (u32, u32), topic: &[u8; 32], overlay: &OverlayConfig) -> Self {
        let mut views: BTreeMap<u32, usize> = BTreeMap::new();
        let statuses: Vec<_> = rooms
            .iter()
            .map(|room| room.mesh_status().unwrap_or_default())
            .collect();
        for status in &statuses {
            *views.entry(status.cells).or_default() += 1;
        }
        let cells = views
            .iter()
            .max_by_key(|(_, count)| **count)
            .map_or(0, |(cells, _)| *cells);
        let agreed = views.len() == 1 && (bounds.0..=bounds.1).contains(&cells);
        let cell_of: HashMap<PeerId, u32> = rooms
            .iter()
            .zip(&statuses)
            .map(|(room, status)| (room.local_peer(), status.cell))
            .collect();
        let mut by_cell: BTreeMap<u32, Vec<PeerId>> = BTreeMap::new();
        for (peer, cell) in &cell_of {
            by_cell.entry(*cell).or_default().push(*peer);
        }
        let held: Vec<HashSet<PeerId>> = rooms
            .iter()
            .map(|room| room.peers().into_iter().collect())
            .collect();
        let (mut missing, mut outside, mut wanted) = (Vec::new(), Vec::new(), 0);
        let mut bridged: HashSet<(u32, u32)> = HashSet::new();
        for ((room, status), held) in rooms.iter().zip(&statuses).zip(&held) {
            let me = room.local_peer();
            let mates = by_cell.get(&status.cell).map_or(&[][..], Vec::as_slice);
            wanted += mates.len().saturating_sub(1);
            missing.push(
                mates
                    .iter()
                    .filter(|peer| **peer != me && !held.contains(peer))
                    .copied()
                    .collect(),
            );
            let beyond = held.iter().filter(|p| !cell_of.contains_key(p)).count();
            outside.push(beyond + status.lingering_links);
            for peer in held {
                if let Some(cell) = cell_of.get(peer).filter(|cell| **cell != status.cell) {
                    bridged.insert((status.cell.min(*cell), status.cell.max(*cell)));
                }
            }
        }
        let occupied: Vec<u32> = by_cell.keys().copied().collect();
        let mut unbridged = Vec::new();
        for (i, a) in occupied.iter().enumerate() {
            for b in occupied.iter().skip(i + 1) {
                if !bridged.contains(&(*a, *b)) {
                    unbridged.push((*a, *b));
                }
            }
        }
        let plan_missing = held
            .iter()
            .zip(planned_peers(rooms, topic, cells, overlay))
            .map(|(held, wanted)| wanted.into_iter().filter(|p| !held.contains(p)).collect())
            .collect();
        Self {
            cells,
            agreed,
            missing,
            outside,
            wanted,
            unbridged,
            plan_missing,
        }
    }

    /// (cell-mate links held, cell-mate links wanted + links outside the room or lingering).
    fn progress(&self) -> (usize, usize) {
        let missing: usize = self.missing.iter().map(Vec::len).sum();
        let outside: usize = self.outside.iter().sum();
        (self.wanted - missing, self.wanted + outside)
    }

    fn formed(&self) -> bool {
        let (held, wanted) = self.progress();
        self.agreed && held == wanted && self.unbridged.is_empty()
    }

    /// Links of the exact plan not held, over all peers.
    fn plan_gap(&self) -> usize {
        self.plan_missing.iter().map(Vec::len).sum()
    }

    /// What keeps the room from formed, a line per peer short of something.
    fn lacking(&self, rooms: &[Room]) -> String {
        let mut lines = format!(
            "\n  {} cells (agreed: {}), cell pairs not bridged: {:?}",
            self.cells, self.agreed, self.unbridged
        );
        for (((room, missing), outside), plan) in rooms
            .iter()
            .zip(&self.missing)
            .zip(&self.outside)
            .zip(&self.plan_missing)
        {
            if missing.is_empty() && *outside == 0 && plan.is_empty() {
                continue;
            }
            let status = room.mesh_status().unwrap_or_default();
            let stats = room.stats();
            let short = |peers: &[PeerId]| peers.iter().map(PeerId::short).collect::<Vec<_>>();
            lines.push_str(&format!(
                "\n  {}: cells {} cell {} members {} intra {} slots {} bridges {} roster {} failures {} forming {} dials {}/{} failed, refused {}, lacks cell mates {:?}, {outside} links outside the room or lingering, lacks of the exact plan {:?}",
                room.local_peer().short(),
                status.cells,
                status.cell,
                status.cell_members,
                status.intra_links,
                status.bridge_slots,
                status.bridge_links,
                status.roster,
                status.metrics.setup_failures,
                status.forming,
                stats.dials_failed,
                stats.dials_started,
                stats.peers_refused,
                short(missing),
                short(plan),
            ));
        }
        lines
    }
}

/// Waits until the room formed ([`CellsPlan`]), three checks in a row, or `limit` passes.
async fn form_cells(
    rooms: &[Room],
    bounds: (u32, u32),
    topic: &[u8; 32],
    overlay: &OverlayConfig,
    limit: Duration,
) -> Formation {
    let started = Instant::now();
    let deadline = started + limit;
    let mut streak = 0;
    let mut next_report = started + Duration::from_secs(10);
    loop {
        let plan = CellsPlan::of(rooms, bounds, topic, overlay);
        let (links, wanted) = plan.progress();
        streak = if plan.formed() { streak + 1 } else { 0 };
        if streak == 0 && Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            tracing::debug!(
                after_s = started.elapsed().as_secs(),
                "not formed yet:{}",
                plan.lacking(rooms)
            );
        }
        let done = streak >= 3;
        if done || Instant::now() >= deadline {
            return Formation {
                formed: done,
                links,
                wanted,
                detail: if done {
                    String::new()
                } else {
                    plan.lacking(rooms)
                },
                plan_gap: plan.plan_gap(),
            };
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_and_short_ones_are_refused() {
        let bytes = probe(DIRECTED, 7, 123_456, 64);
        assert_eq!(bytes.len(), 64);
        assert_eq!(read_probe(&bytes), Some((DIRECTED, 7, 123_456)));
        assert_eq!(read_probe(&bytes[..16]), None);
        assert_eq!(probe(BROADCAST, 1, 2, 3).len(), HEADER);
    }

    #[test]
    fn percentiles_of_sorted_values() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 51.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
