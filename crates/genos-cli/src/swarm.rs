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
                "\"connections_planned_max\":{}}}"
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

/// Runs a swarm: one room per `(signaling, identity)`, all on `transport`, all with `key`
/// and `config` (limits and topology). `on_formed` is told how long the room took to form,
/// before the traffic starts.
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
    let cells = matches!(config.topology(), Topology::Cells(_));
    let join = |(signaling, identity): (S, Identity)| {
        let config = config.clone().with_identity(identity.clone());
        let transport = transport.clone();
        async move { Room::join_with_key(signaling, transport, identity.peer_id(), key, &config).await }
    };
    let start = Instant::now();
    let mut peers = peers.into_iter();
    let mut rooms: Vec<Room> = Vec::with_capacity(count);
    if cells {
        // The first peer starts the room; the rest find its view stored at the relay.
        if let Some(first) = peers.next() {
            let room = join(first).await?;
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
    let joins = futures::future::join_all(peers.enumerate().map(|(i, peer)| {
        let delay = gap.unwrap_or_default() * u32::try_from(i).unwrap_or(u32::MAX);
        let join = &join;
        async move {
            tokio::time::sleep(delay).await;
            join(peer).await
        }
    }))
    .await;
    for room in joins {
        rooms.push(room?);
    }

    let (formed, links, wanted, detail) = if let Topology::Cells(settings) = config.topology() {
        // A cell count fit for the room: the overlay's leader resizes when the count is
        // wrong for every size within a third of the room's (a count at the edge of that
        // range can stand until the next census), so any count between that for half the
        // room and that for a third more is a room that formed, not one still growing.
        let sizing = settings.overlay.sizing;
        let bounds = (
            cell_count(count / 2, sizing),
            cell_count(count * 4 / 3, sizing),
        );
        form_cells(
            &rooms,
            bounds,
            &key.topic(),
            &settings.overlay,
            plan.form_timeout,
        )
        .await
    } else {
        let (formed, links, wanted) = form_mesh(&rooms, plan.form_timeout).await;
        (formed, links, wanted, String::new())
    };
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
    let connections_planned_max = match config.topology() {
        Topology::Cells(settings) => {
            let keys: Vec<[u8; 32]> = rooms.iter().map(|r| *r.local_peer().as_bytes()).collect();
            planned_links_in(&key.topic(), &keys, cell_count, &settings.overlay)
                .iter()
                .map(Vec::len)
                .max()
                .unwrap_or(0)
        }
        _ => count - 1,
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

    // Traffic: broadcasts and directed sends interleaved at the plan's rate.
    let ids: Vec<PeerId> = rooms.iter().map(Room::local_peer).collect();
    let mut targets: HashMap<u64, usize> = HashMap::new();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate));
    let (mut broadcasts, mut directed) = (0u64, 0u64);
    while (broadcasts as usize) < plan.broadcasts || (directed as usize) < plan.directed {
        pace.tick().await;
        let (origin, target) = {
            let mut rng = rand::rng();
            let origin = rng.random_range(0..count);
            let mut target = rng.random_range(0..count - 1);
            if target >= origin {
                target += 1;
            }
            (origin, target)
        };
        let Some(channel) = channels.get(origin) else {
            continue;
        };
        let broadcast_turn = (directed as usize) >= plan.directed
            || ((broadcasts as usize) < plan.broadcasts && broadcasts <= directed);
        if broadcast_turn {
            let payload = probe(
                BROADCAST,
                broadcasts,
                nanos_since(start),
                plan.payload_bytes,
            );
            channel.send(payload).await?;
            broadcasts += 1;
        } else {
            let payload = probe(DIRECTED, directed, nanos_since(start), plan.payload_bytes);
            let Some(to) = ids.get(target).copied() else {
                continue;
            };
            channel.send_to(to, payload).await?;
            targets.insert(directed, target);
            directed += 1;
        }
    }

    // Drain: until every copy is in or the limit passes.
    let expected = plan.broadcasts * (count - 1) + plan.directed;
    let drained = tokio::time::timeout(plan.drain_timeout, async {
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
    let _ = drained;
    let traffic = traffic_start.elapsed();
    let published_traffic = published(&rooms).saturating_sub(published_at_formed);
    for reader in &readers {
        reader.abort();
    }
    let received = std::mem::take(&mut *received.lock().unwrap_or_else(|p| p.into_inner()));
    let mut broadcast_copies = 0usize;
    let mut directed_hits = 0usize;
    let mut misdelivered = 0usize;
    for ((kind, number), receivers) in &received.copies {
        if *kind == BROADCAST {
            broadcast_copies += receivers.len();
        } else if let Some(target) = targets.get(number) {
            if receivers.contains(target) {
                directed_hits += 1;
            }
            misdelivered += receivers.iter().filter(|r| *r != target).count();
        }
    }
    let mut latencies = received.latencies_ms;
    latencies.sort_by(f64::total_cmp);
    let (frames, hops) = rooms.iter().fold((0u64, 0u64), |(frames, hops), room| {
        let stats = room.stats();
        (frames + stats.mesh_delivered, hops + stats.mesh_hops)
    });
    for room in &rooms {
        let _ = room.leave().await;
    }
    let ratio = |got: usize, of: usize| if of == 0 { 1.0 } else { got as f64 / of as f64 };
    let minutes = traffic.as_secs_f64() / 60.0;
    Ok(SwarmReport {
        peers: count,
        topology: if cells { "cells" } else { "mesh" },
        connections_mean: connections.iter().sum::<usize>() as f64 / count as f64,
        connections_max: connections.iter().copied().max().unwrap_or(0),
        join_all_ms: join_all.as_secs_f64() * 1e3,
        broadcasts: plan.broadcasts,
        delivered_ratio: ratio(broadcast_copies, plan.broadcasts * (count - 1)),
        delivery_p50_ms: percentile(&latencies, 0.5),
        delivery_p99_ms: percentile(&latencies, 0.99),
        directed: plan.directed,
        directed_delivered_ratio: ratio(directed_hits, plan.directed),
        misdelivered,
        relay_events_per_peer_min: if minutes > 0.0 {
            published_traffic as f64 / count as f64 / minutes
        } else {
            0.0
        },
        relay_events_per_peer_join: published_at_formed as f64 / count as f64,
        rss_mib: rss,
        cells: cell_count,
        connections_planned_max,
        hops_mean: if frames == 0 {
            1.0
        } else {
            hops as f64 / frames as f64
        },
    })
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

/// The room's cells plan as every peer should hold it: the cell count most peers see and,
/// for that count, the links of `planned_links_in` (from every peer's key, which no single
/// peer knows). A peer's own status cannot tell: the holder of a bridge slot towards a
/// smaller cell waits for a link the smaller cell may not have a member to open.
struct CellsPlan {
    cells: u32,
    agreed: bool,
    /// Per room: planned peers it lacks, and links it holds beyond the plan.
    missing: Vec<Vec<PeerId>>,
    extra: Vec<usize>,
    planned: usize,
}

impl CellsPlan {
    fn of(rooms: &[Room], bounds: (u32, u32), topic: &[u8; 32], overlay: &OverlayConfig) -> Self {
        let mut views: BTreeMap<u32, usize> = BTreeMap::new();
        for room in rooms {
            *views
                .entry(room.mesh_status().map_or(0, |s| s.cells))
                .or_default() += 1;
        }
        let cells = views
            .iter()
            .max_by_key(|(_, count)| **count)
            .map_or(0, |(cells, _)| *cells);
        let agreed = views.len() == 1 && (bounds.0..=bounds.1).contains(&cells);
        let (mut missing, mut extra, mut planned) = (Vec::new(), Vec::new(), 0);
        for (room, wanted) in rooms
            .iter()
            .zip(planned_peers(rooms, topic, cells, overlay))
        {
            let held: HashSet<PeerId> = room.peers().into_iter().collect();
            planned += wanted.len();
            // Links beyond the plan: of an earlier view, lingering a while before they close.
            extra.push(held.iter().filter(|peer| !wanted.contains(peer)).count());
            missing.push(
                wanted
                    .into_iter()
                    .filter(|peer| !held.contains(peer))
                    .collect(),
            );
        }
        Self {
            cells,
            agreed,
            missing,
            extra,
            planned,
        }
    }

    /// (planned links held, planned links + links still to close).
    fn progress(&self) -> (usize, usize) {
        let missing: usize = self.missing.iter().map(Vec::len).sum();
        let extra: usize = self.extra.iter().sum();
        (self.planned - missing, self.planned + extra)
    }

    fn formed(&self) -> bool {
        let (held, wanted) = self.progress();
        self.agreed && held == wanted
    }

    /// The peers short of planned links, one line each.
    fn lacking(&self, rooms: &[Room]) -> String {
        let mut lines = format!(
            "\n  plan for {} cells (agreed: {})",
            self.cells, self.agreed
        );
        for ((room, missing), extra) in rooms.iter().zip(&self.missing).zip(&self.extra) {
            if missing.is_empty() && *extra == 0 {
                continue;
            }
            let status = room.mesh_status().unwrap_or_default();
            let stats = room.stats();
            let missing: Vec<String> = missing.iter().map(PeerId::short).collect();
            lines.push_str(&format!(
                "\n  {}: cells {} cell {} members {} intra {} slots {} bridges {} roster {} failures {} forming {} dials {}/{} failed, refused {}, lacks {missing:?}, {extra} beyond the plan",
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
            ));
        }
        lines
    }
}

/// Waits until every peer agrees on the cell count and holds every planned link, three
/// checks in a row; returns (formed, links, wanted, what peers lack when it did not form).
async fn form_cells(
    rooms: &[Room],
    bounds: (u32, u32),
    topic: &[u8; 32],
    overlay: &OverlayConfig,
    limit: Duration,
) -> (bool, usize, usize, String) {
    let deadline = Instant::now() + limit;
    let mut streak = 0;
    loop {
        let plan = CellsPlan::of(rooms, bounds, topic, overlay);
        let (held, wanted) = plan.progress();
        streak = if plan.formed() { streak + 1 } else { 0 };
        if streak >= 3 {
            return (true, held, wanted, String::new());
        }
        if Instant::now() >= deadline {
            return (false, held, wanted, plan.lacking(rooms));
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
