//! The layouts the overlay is compared with, computed on the same peers.
//!
//! Baselines are graphs, not protocol runs: a full mesh (the origin sends to everyone) and
//! the GenosRTC layout (cells of 10 peers in a full mesh; cells linked to cells ±2^k; one
//! hash-chosen bridge per cell linked to every member of the neighbouring cells; frames
//! flooded). Hops are breadth-first distances (what a flood achieves with equal latencies),
//! duplicates are the flood's extra copies, and delivery after a crash is what the flood
//! still reaches on the surviving graph, before any repair.

use std::collections::VecDeque;

use super::net::Rng;
use super::report::{Histogram, Stats};
use crate::plan::mix64;

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
    /// Announces each peer hears per minute (every peer hears every announce).
    pub discovery_per_peer_per_min: f64,
}

const SAMPLED_ORIGINS: usize = 20;

impl Baseline {
    /// Figures for `peers` peers; `crashed` are the peers the overlay run crashed.
    pub fn figures(self, peers: usize, crashed: &[usize], seed: u64) -> BaselineFigures {
        match self {
            Self::FullMesh => full_mesh(peers, crashed),
            Self::GenosRtc => flood_figures(&genosrtc_graph(peers, seed), crashed, seed),
        }
    }
}

fn full_mesh(peers: usize, crashed: &[usize]) -> BaselineFigures {
    let degree = peers.saturating_sub(1) as u64;
    let mut connections_histogram = Histogram::default();
    connections_histogram.add_many(degree, peers as u64);
    let mut hops_histogram = Histogram::default();
    hops_histogram.add_many(1, degree);
    let _ = crashed;
    BaselineFigures {
        connections: Stats::of(std::iter::repeat_n(degree as f64, peers)),
        connections_histogram,
        hops: Stats::of(std::iter::once(1.0)),
        hops_histogram,
        duplicates_per_delivery: 0.0,
        after_crash_ratio: 1.0,
        discovery_per_peer_per_min: 0.0,
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

/// Breadth-first distances from `origin`, skipping `dead` peers.
fn distances(adjacency: &[Vec<u32>], origin: usize, dead: &[bool]) -> Vec<Option<u32>> {
    let mut distance = vec![None; adjacency.len()];
    let mut queue = VecDeque::new();
    if let Some(slot) = distance.get_mut(origin) {
        *slot = Some(0);
        queue.push_back(origin);
    }
    while let Some(node) = queue.pop_front() {
        let next = distance.get(node).copied().flatten().unwrap_or(0) + 1;
        for neighbour in adjacency.get(node).into_iter().flatten() {
            let n = *neighbour as usize;
            if dead.get(n).copied().unwrap_or(true) {
                continue;
            }
            if let Some(slot) = distance.get_mut(n) {
                if slot.is_none() {
                    *slot = Some(next);
                    queue.push_back(n);
                }
            }
        }
    }
    distance
}

fn flood_figures(adjacency: &[Vec<u32>], crashed: &[usize], seed: u64) -> BaselineFigures {
    let peers = adjacency.len();
    let degrees: Vec<u64> = adjacency.iter().map(|list| list.len() as u64).collect();
    let mut rng = Rng::new(seed ^ 0xba5e);
    let no_dead = vec![false; peers];
    let mut hops_histogram = Histogram::default();
    let mut duplicates = 0.0;
    for _ in 0..SAMPLED_ORIGINS {
        let origin = rng.below(peers as u64) as usize;
        let distance = distances(adjacency, origin, &no_dead);
        let mut messages = degrees.get(origin).copied().unwrap_or(0);
        let mut deliveries = 0u64;
        for (node, d) in distance.iter().enumerate() {
            if let Some(d) = d {
                if node != origin {
                    hops_histogram.add(u64::from(*d));
                    deliveries += 1;
                    messages += degrees.get(node).copied().unwrap_or(1).saturating_sub(1);
                }
            }
        }
        duplicates += messages.saturating_sub(deliveries) as f64 / deliveries.max(1) as f64;
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
        let reached = distances(adjacency, origin, &dead)
            .iter()
            .filter(|d| d.is_some())
            .count();
        ratio += reached as f64 / live.len().max(1) as f64;
    }
    BaselineFigures {
        connections: Stats::of(degrees.iter().map(|d| *d as f64)),
        connections_histogram: Histogram::from_values(degrees.iter().copied()),
        hops: hops_histogram.stats(),
        hops_histogram,
        duplicates_per_delivery: duplicates / SAMPLED_ORIGINS as f64,
        after_crash_ratio: ratio / SAMPLED_ORIGINS as f64,
        discovery_per_peer_per_min: 0.0,
    }
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
}
