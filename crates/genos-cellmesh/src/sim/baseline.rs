//! The layouts the overlay is compared with, played on the same peers.
//!
//! Two layouts: a full mesh (the origin sends to everyone, nobody forwards) and the GenosRTC
//! layout (cells of 10 peers in a full mesh; cells linked to cells ±2^k; one hash-chosen
//! bridge per cell linked to every member of the neighbouring cells; frames flooded: each
//! peer forwards a frame's first copy to every neighbour but the sender). Their links are
//! fixed graphs; their broadcasts are played message by message on the simulator's latency
//! model (same one-way latency and jitter), so hops, duplicates, time to the last delivery
//! and messages per broadcast are measured the same way as the overlay's. Delivery after a
//! crash is what the same broadcasts still reach with the crashed peers silent, before any
//! repair (neither baseline has one).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::rng::Rng;
use super::stats::{Histogram, Stats};
use crate::mix::mix64;

/// A layout to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Baseline {
    /// Every peer linked to every other.
    FullMesh,
    /// GenosRTC's cells of 10 with ±2^k cell links and one bridge per cell.
    GenosRtc,
}

/// A baseline's figures.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BaselineFigures {
    /// Connections per peer.
    pub connections: Stats,
    /// Their histogram.
    pub connections_histogram: Histogram,
    /// Hops to delivery.
    pub hops: Stats,
    /// Their histogram.
    pub hops_histogram: Histogram,
    /// Extra copies received per delivery.
    pub duplicates_per_delivery: f64,
    /// Delivery ratio right after the crash.
    pub after_crash_ratio: f64,
    /// Delivery ratio with no crash (below 1 only through message loss).
    pub delivery_ratio: f64,
    /// Announces each peer hears per minute (every peer hears every announce).
    pub discovery_per_peer_per_min: f64,
    /// Time from sending to the last peer's delivery, milliseconds.
    pub time_to_full_ms: Stats,
    /// Messages sent on links per broadcast, all peers together.
    pub messages_per_broadcast: f64,
}

/// Broadcasts played per baseline (from random origins).
const SAMPLED_ORIGINS: usize = 20;

/// The latency model the baselines are played on (the overlay's run uses the same).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) base_us: u64,
    pub(crate) jitter_us: u64,
    /// Fraction of messages lost (the overlay's loss model; neither baseline repairs).
    pub(crate) loss: f64,
}

impl Baseline {
    /// Figures for `peers` peers on `latency`; `crashed` are the peers the overlay run
    /// crashed.
    pub(crate) fn figures(
        self,
        peers: usize,
        crashed: &[usize],
        seed: u64,
        latency: Latency,
    ) -> BaselineFigures {
        let graph = match self {
            Self::FullMesh => Graph::Full(peers),
            Self::GenosRtc => Graph::Adjacency(genosrtc_graph(peers, seed)),
        };
        play(&graph, crashed, seed, latency)
    }
}

/// A fixed layout: everyone linked to everyone (the origin sends, nobody forwards), or
/// adjacency lists (flooded).
enum Graph {
    Full(usize),
    Adjacency(Vec<Vec<u32>>),
}

impl Graph {
    fn len(&self) -> usize {
        match self {
            Self::Full(peers) => *peers,
            Self::Adjacency(lists) => lists.len(),
        }
    }

    fn degree(&self, node: usize) -> usize {
        match self {
            Self::Full(peers) => peers.saturating_sub(1),
            Self::Adjacency(lists) => lists.get(node).map_or(0, Vec::len),
        }
    }
}

/// What one played broadcast did.
struct Played {
    /// Live peers reached (the origin included).
    reached: usize,
    /// Hops of each first delivery.
    hops: Vec<u8>,
    messages: u64,
    /// Time of the last first delivery, microseconds.
    last_us: u64,
}

/// Plays one broadcast from `origin` message by message; `dead` peers drop what they get.
fn play_one(
    graph: &Graph,
    origin: usize,
    dead: &[bool],
    latency: Latency,
    rng: &mut Rng,
) -> Played {
    let peers = graph.len();
    let mut seen = vec![false; peers];
    let mut queue: BinaryHeap<Reverse<(u64, u32, u32, u8)>> = BinaryHeap::new();
    let mut played = Played {
        reached: 1,
        hops: Vec::new(),
        messages: 0,
        last_us: 0,
    };
    if let Some(slot) = seen.get_mut(origin) {
        *slot = true;
    }
    let mut send = |queue: &mut BinaryHeap<Reverse<(u64, u32, u32, u8)>>,
                    played: &mut Played,
                    at: u64,
                    from: usize,
                    to: usize,
                    hops: u8| {
        played.messages += 1;
        if rng.chance(latency.loss) {
            return;
        }
        let arrive = at + latency.base_us + rng.below(latency.jitter_us + 1);
        queue.push(Reverse((arrive, to as u32, from as u32, hops)));
    };
    match graph {
        Graph::Full(_) => {
            for to in (0..peers).filter(|to| *to != origin) {
                send(&mut queue, &mut played, 0, origin, to, 1);
            }
        }
        Graph::Adjacency(lists) => {
            for to in lists.get(origin).into_iter().flatten() {
                send(&mut queue, &mut played, 0, origin, *to as usize, 1);
            }
        }
    }
    while let Some(Reverse((at, node, from, hops))) = queue.pop() {
        let node = node as usize;
        if dead.get(node).copied().unwrap_or(true) {
            continue;
        }
        let Some(slot) = seen.get_mut(node) else {
            continue;
        };
        if *slot {
            continue;
        }
        *slot = true;
        played.reached += 1;
        played.hops.push(hops);
        played.last_us = played.last_us.max(at);
        if let Graph::Adjacency(lists) = graph {
            for to in lists.get(node).into_iter().flatten() {
                if *to as usize != from as usize {
                    send(
                        &mut queue,
                        &mut played,
                        at,
                        node,
                        *to as usize,
                        hops.saturating_add(1),
                    );
                }
            }
        }
    }
    played
}

fn play(graph: &Graph, crashed: &[usize], seed: u64, latency: Latency) -> BaselineFigures {
    let peers = graph.len();
    let degrees: Vec<u64> = (0..peers).map(|node| graph.degree(node) as u64).collect();
    let mut rng = Rng::new(seed ^ 0xba5e);
    let no_dead = vec![false; peers];
    let mut hops_histogram = Histogram::default();
    let mut duplicates = 0.0;
    let mut messages = 0.0;
    let mut times = Vec::new();
    let mut reached = 0.0;
    for _ in 0..SAMPLED_ORIGINS {
        let origin = rng.below(peers as u64) as usize;
        let played = play_one(graph, origin, &no_dead, latency, &mut rng);
        let deliveries = played.hops.len() as u64;
        for hops in &played.hops {
            hops_histogram.add(u64::from(*hops));
        }
        duplicates += played.messages.saturating_sub(deliveries) as f64 / deliveries.max(1) as f64;
        messages += played.messages as f64;
        reached += played.reached as f64 / peers.max(1) as f64;
        if played.reached == peers {
            times.push(played.last_us as f64 / 1_000.0);
        }
    }
    let mut dead = vec![false; peers];
    for i in crashed {
        if let Some(slot) = dead.get_mut(*i) {
            *slot = true;
        }
    }
    let live: Vec<usize> = (0..peers)
        .filter(|i| !dead.get(*i).copied().unwrap_or(true))
        .collect();
    let mut ratio = 0.0;
    for _ in 0..SAMPLED_ORIGINS {
        let Some(origin) = live.get(rng.below(live.len() as u64) as usize).copied() else {
            break;
        };
        let played = play_one(graph, origin, &dead, latency, &mut rng);
        ratio += played.reached as f64 / live.len().max(1) as f64;
    }
    BaselineFigures {
        connections: Stats::of(degrees.iter().map(|d| *d as f64)),
        connections_histogram: Histogram::from_values(degrees.iter().copied()),
        hops: hops_histogram.stats(),
        hops_histogram,
        duplicates_per_delivery: duplicates / SAMPLED_ORIGINS as f64,
        after_crash_ratio: ratio / SAMPLED_ORIGINS as f64,
        delivery_ratio: reached / SAMPLED_ORIGINS as f64,
        discovery_per_peer_per_min: 0.0,
        time_to_full_ms: Stats::of(times.into_iter()),
        messages_per_broadcast: messages / SAMPLED_ORIGINS as f64,
    }
}

/// GenosRTC's layout on `peers` peers: adjacency lists.
pub(crate) fn genosrtc_graph(peers: usize, seed: u64) -> Vec<Vec<u32>> {
    let cells = peers.div_ceil(10).max(1);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); cells];
    for peer in 0..peers {
        // Rendezvous assignment over the cells, as GenosRTC does (cheap hash here).
        let id = mix64(seed ^ peer as u64);
        let cell = (0..cells)
            .max_by_key(|cell| mix64(id ^ mix64(*cell as u64)))
            .unwrap_or(0);
        if let Some(list) = members.get_mut(cell) {
            list.push(peer as u32);
        }
    }
    let mut adjacency: Vec<Vec<u32>> = vec![Vec::new(); peers];
    let link = |a: u32, b: u32, adjacency: &mut Vec<Vec<u32>>| {
        if a != b {
            if let Some(list) = adjacency.get_mut(a as usize) {
                list.push(b);
            }
            if let Some(list) = adjacency.get_mut(b as usize) {
                list.push(a);
            }
        }
    };
    for list in &members {
        for (n, a) in list.iter().enumerate() {
            for b in list.iter().skip(n + 1) {
                link(*a, *b, &mut adjacency);
            }
        }
    }
    let bridges: Vec<Option<u32>> = members
        .iter()
        .enumerate()
        .map(|(cell, list)| {
            list.iter()
                .copied()
                .max_by_key(|peer| mix64(seed ^ mix64(u64::from(*peer) ^ (cell as u64) << 40)))
        })
        .collect();
    for cell in 0..cells {
        let Some(Some(bridge)) = bridges.get(cell) else {
            continue;
        };
        let mut step = 1usize;
        while step < cells {
            for neighbour in [(cell + step) % cells, (cell + cells - step % cells) % cells] {
                if neighbour == cell {
                    continue;
                }
                for member in members.get(neighbour).into_iter().flatten() {
                    link(*bridge, *member, &mut adjacency);
                }
            }
            step *= 2;
        }
    }
    for list in &mut adjacency {
        list.sort_unstable();
        list.dedup();
    }
    adjacency
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genosrtc_layout_matches_the_published_analysis() {
        // FACTS.md: at 10,000 peers about 44 connections on average, bridges up to ~260.
        let graph = genosrtc_graph(10_000, 3);
        let mean = graph.iter().map(Vec::len).sum::<usize>() as f64 / graph.len() as f64;
        let max = graph.iter().map(Vec::len).max().unwrap_or(0);
        assert!((30.0..60.0).contains(&mean), "mean {mean}");
        assert!((180..400).contains(&max), "max {max}");
    }

    #[test]
    fn played_baselines_count_what_they_send() {
        let latency = Latency {
            base_us: 20_000,
            jitter_us: 20_000,
            loss: 0.0,
        };
        let full = Baseline::FullMesh.figures(50, &[], 1, latency);
        assert_eq!(full.hops.max, 1.0);
        assert_eq!(full.duplicates_per_delivery, 0.0);
        assert_eq!(full.messages_per_broadcast, 49.0);
        assert!(full.time_to_full_ms.max <= 40.0);
        // A flood sends each first copy on to every neighbour but the sender: many
        // duplicates, and every peer reached.
        let flood = Baseline::GenosRtc.figures(200, &[], 1, latency);
        assert!(flood.duplicates_per_delivery > 5.0);
        assert_eq!(flood.time_to_full_ms.count, SAMPLED_ORIGINS);
        let crashed: Vec<usize> = (0..200).step_by(10).collect();
        let after = Baseline::GenosRtc.figures(200, &crashed, 1, latency);
        assert!(after.after_crash_ratio <= 1.0 && after.after_crash_ratio > 0.5);
    }
}
