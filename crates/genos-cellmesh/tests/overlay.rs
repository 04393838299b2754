//! The overlay's properties, checked on the simulator (and with real signatures and sealing
//! on a few dozen peers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use genos_cellmesh::sim::{Net, NetConfig};
use genos_cellmesh::{CryptoAuth, FrameAuth, OverlayConfig, Sizing, cell_count, planned_links};
use genos_crypto::{Identity, SealKey};
use proptest::prelude::*;

const SECOND: u64 = 1_000_000;

fn config(max_cell: u32) -> OverlayConfig {
    let mut config = OverlayConfig::default();
    config.sizing = Sizing::Auto { max_cell };
    config
}

/// Starts every peer within the first second, knowing the cell count, and runs `seconds`.
fn warm<A: FrameAuth>(net: &mut Net<A>, config: &OverlayConfig, seconds: u64) {
    let cells = cell_count(net.len(), config.sizing);
    for i in 0..net.len() {
        let at = (i as u64 * 7_919) % SECOND;
        net.start_at(at, i, Some(cells));
    }
    net.run_until(seconds * SECOND);
}

fn payload(n: u64) -> Bytes {
    let mut bytes = vec![0u8, 255, 1, 254];
    bytes.extend_from_slice(&n.to_be_bytes());
    Bytes::from(bytes)
}

/// Sends `count` broadcasts from random live peers and asserts each reached every live
/// peer exactly once, unaltered.
fn assert_broadcasts_reach_everyone<A: FrameAuth>(net: &mut Net<A>, count: u64) {
    let mut ids = Vec::new();
    for n in 0..count {
        let origin = net.random_live().unwrap();
        ids.push(
            net.broadcast_now(origin, payload(n))
                .expect("broadcast accepted"),
        );
        let at = net.now_us() + 50_000;
        net.run_until(at);
    }
    let at = net.now_us() + 3 * SECOND;
    net.run_until(at);
    for id in &ids {
        let (got, live, hops, _, twice_or_altered) = net.broadcast_outcome(id).unwrap();
        assert_eq!(live, net.alive_count(), "every live peer is expected");
        assert_eq!(got, live, "a broadcast missed {} live peers", live - got);
        assert!(!twice_or_altered, "delivered twice or altered");
        assert!(hops <= 3, "{hops} hops");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn every_broadcast_reaches_every_live_peer_exactly_once(peers in 2usize..140, seed in any::<u64>()) {
        let config = config(100);
        let mut net = Net::new(peers, &config, [3; 32], NetConfig::new(20, 20, 3_000), seed);
        warm(&mut net, &config, 12);
        let health = net.health();
        prop_assert_eq!(health.missing_intra, 0);
        prop_assert_eq!(health.unbridged_pairs, 0);
        assert_broadcasts_reach_everyone(&mut net, 5);
        // Directed sends arrive, routed (never flooded).
        let before = net.directed_delivered();
        let mut sent = 0;
        for n in 0..5 {
            let (a, b) = (n % peers, (n * 7 + 1) % peers);
            if a != b {
                prop_assert!(net.send_now(a, b));
                sent += 1;
            }
        }
        let at = net.now_us() + 3 * SECOND;
        net.run_until(at);
        prop_assert_eq!(net.directed_delivered() - before, sent);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn connections_per_peer_stay_near_the_square_root(peers in 1usize..=2_000, seed in any::<u64>()) {
        let config = OverlayConfig::default();
        let mut keys = Vec::with_capacity(peers);
        let mut rng = genos_cellmesh::sim::Rng::new(seed);
        for _ in 0..peers {
            let mut key = [0u8; 32];
            for chunk in key.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            keys.push(key);
        }
        let links = planned_links(&[9; 32], &keys, &config);
        let k = f64::from(config.bridges_per_pair);
        let root = (peers as f64).sqrt();
        let max = links.iter().map(Vec::len).max().unwrap_or(0) as f64;
        let mean = links.iter().map(Vec::len).sum::<usize>() as f64 / peers as f64;
        // Cell of ~sqrt(N) (binomial spread) plus ~k bridge slots each.
        prop_assert!(max <= 2.0 * root + 4.0 * k + 8.0, "max {} for {} peers", max, peers);
        prop_assert!(mean <= root + k + 4.0, "mean {} for {} peers", mean, peers);
        // And the planned overlay is connected.
        let mut seen = vec![false; peers];
        let mut stack = vec![0usize];
        seen[0] = true;
        while let Some(node) = stack.pop() {
            for next in &links[node] {
                if !seen[*next] {
                    seen[*next] = true;
                    stack.push(*next);
                }
            }
        }
        prop_assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn the_plan_does_not_depend_on_the_order_peers_are_known_in(peers in 2usize..300, seed in any::<u64>()) {
        let config = OverlayConfig::default();
        let mut rng = genos_cellmesh::sim::Rng::new(seed);
        let keys: Vec<[u8; 32]> = (0..peers)
            .map(|_| {
                let mut key = [0u8; 32];
                for chunk in key.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
                }
                key
            })
            .collect();
        let mut shuffled = keys.clone();
        for i in (1..shuffled.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            shuffled.swap(i, j);
        }
        let as_pairs = |keys: &[[u8; 32]]| -> HashSet<([u8; 32], [u8; 32])> {
            planned_links(&[1; 32], keys, &config)
                .iter()
                .enumerate()
                .flat_map(|(a, list)| list.iter().map(move |b| (a, *b)))
                .map(|(a, b)| (keys[a].min(keys[b]), keys[a].max(keys[b])))
                .collect()
        };
        prop_assert_eq!(as_pairs(&keys), as_pairs(&shuffled));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn losing_any_bridge_is_repaired(peers in 30usize..120, seed in any::<u64>(), pick in any::<u64>()) {
        let config = config(100);
        let mut net = Net::new(peers, &config, [5; 32], NetConfig::new(20, 20, 3_000), seed);
        warm(&mut net, &config, 12);
        let bridges: Vec<usize> = (0..peers)
            .filter(|i| !net.overlay(*i).unwrap().bridge_slots().is_empty())
            .collect();
        prop_assume!(!bridges.is_empty());
        let victim = bridges[(pick % bridges.len() as u64) as usize];
        net.crash(victim);
        let at = net.now_us() + 20 * SECOND;
        net.run_until(at);
        let health = net.health();
        prop_assert_eq!(health.missing_intra, 0);
        prop_assert_eq!(health.unbridged_pairs, 0, "{:?}", health);
        assert_broadcasts_reach_everyone(&mut net, 3);
    }
}

#[test]
fn cell_mates_agree_on_their_cell_and_on_who_holds_each_bridge_slot() {
    let config = config(100);
    let mut net = Net::new(300, &config, [8; 32], NetConfig::new(20, 20, 3_000), 42);
    warm(&mut net, &config, 12);
    let mut cells: HashMap<u32, Vec<usize>> = HashMap::new();
    for i in 0..net.len() {
        cells
            .entry(net.overlay(i).unwrap().cell())
            .or_default()
            .push(i);
    }
    let k = config.bridges_per_pair;
    let count = cell_count(300, config.sizing);
    assert_eq!(cells.len() as u32, count);
    for members in cells.values() {
        let view: Vec<_> = net.overlay(members[0]).unwrap().cell_members().collect();
        assert_eq!(
            view.len(),
            members.len(),
            "a peer's view of its cell is complete"
        );
        let mut holders: HashMap<(u32, u8), usize> = HashMap::new();
        for i in members {
            let overlay = net.overlay(*i).unwrap();
            assert_eq!(
                overlay.cell_members().collect::<Vec<_>>(),
                view,
                "same view"
            );
            for slot in overlay.bridge_slots() {
                assert!(
                    holders.insert(*slot, *i).is_none(),
                    "slot {slot:?} held twice"
                );
            }
        }
        // Every slot towards every other cell is held by exactly one member.
        assert_eq!(holders.len(), (count as usize - 1) * usize::from(k));
    }
}

#[test]
fn real_signatures_and_sealing_carry_payloads_across_cells() {
    let room_key = SealKey::generate();
    let config = config(8);
    let mut net = Net::with_auth(
        40,
        &config,
        [2; 32],
        NetConfig::new(20, 20, 3_000),
        7,
        |_| CryptoAuth::new(Identity::generate(), room_key.clone()),
    );
    warm(&mut net, &config, 12);
    assert!(cell_count(40, config.sizing) >= 5);
    assert_broadcasts_reach_everyone(&mut net, 4);
    let before = net.directed_delivered();
    for n in 0..8 {
        assert!(net.send_now(n, 39 - n));
    }
    let at = net.now_us() + 3 * SECOND;
    net.run_until(at);
    assert_eq!(net.directed_delivered() - before, 8);
}

#[test]
fn backup_bridge_ends_stay_quiet_when_the_first_one_forwards() {
    let config = config(100);
    let mut net = Net::new(400, &config, [4; 32], NetConfig::new(20, 20, 3_000), 9);
    warm(&mut net, &config, 12);
    let duplicates = net.sum_metric(|m| m.duplicates);
    let delivered = net.sum_metric(|m| m.delivered);
    assert_broadcasts_reach_everyone(&mut net, 10);
    let duplicates = net.sum_metric(|m| m.duplicates) - duplicates;
    let delivered = net.sum_metric(|m| m.delivered) - delivered;
    // Three bridge ends per cell pair: without the backup delay every peer outside the
    // origin's cell would get about three copies (two duplicates per delivery).
    let per_delivery = duplicates as f64 / delivered as f64;
    assert!(per_delivery < 0.5, "{per_delivery} duplicates per delivery");
}

#[test]
fn a_scenario_plays_the_same_way_every_time() {
    let scenario = genos_cellmesh::sim::Scenario::from_toml(
        "name = 'twice'\npeers = 150\nseed = 11\ncold_start = false\nwarmup_s = 12\nsteady_s = 5\nbroadcasts = 20\ndirected = 10\nrepair_s = 10\nafter_crash_broadcasts = 10\npicture = false",
    )
    .unwrap();
    let strip = |text: String| -> String {
        text.lines()
            .filter(|line| !line.starts_with("wall clock") && !line.starts_with("scenario"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = genos_cellmesh::sim::run(&scenario);
    let second = genos_cellmesh::sim::run(&scenario);
    assert_eq!(first.overlay.events, second.overlay.events);
    assert_eq!(strip(first.to_text()), strip(second.to_text()));
    // The fault-free goals hold at any size; right after a crash a room this small depends
    // on which peers died (see docs/benchmarks.md), so those are not asserted here.
    assert!(
        first.goals().iter().take(5).all(|(_, _, met)| *met),
        "{}",
        first.to_text()
    );
}

#[test]
fn peers_arriving_without_a_hint_converge_on_one_view_and_resize_together() {
    let config = config(100);
    let peers = 120;
    let mut net = Net::new(peers, &config, [6; 32], NetConfig::new(20, 20, 3_000), 21);
    // One newcomer every half second, none told the cell count.
    for i in 0..peers {
        net.start_at(i as u64 * SECOND / 2, i, None);
    }
    net.run_until(200 * SECOND);
    let health = net.health();
    assert_eq!(health.cell_counts, 1, "{health:?}");
    assert_eq!(health.missing_intra, 0, "{health:?}");
    assert_eq!(health.unbridged_pairs, 0, "{health:?}");
    // The census grew the room from one cell to a count right for 120 peers (within the
    // resize hysteresis: right for some room size within a third of 120).
    let cells = net.overlay(0).unwrap().cells();
    let low = cell_count(peers * 3 / 4, config.sizing);
    let high = cell_count(peers * 4 / 3, config.sizing);
    assert!(
        (low..=high).contains(&cells),
        "{cells} cells, not in {low}..={high}"
    );
    assert!(cells > 1);
    assert_broadcasts_reach_everyone(&mut net, 5);
}

#[test]
fn the_overlay_stays_whole_while_peers_come_and_go() {
    let scenario = genos_cellmesh::sim::Scenario::from_toml(
        "name = 'churn'\npeers = 200\nseed = 12\nwarmup_s = 60\nlink_failure = 0.0\nsteady_s = 0\nbroadcasts = 10\ndirected = 0\nchurn_s = 60\nchurn_per_minute = 0.2\ncrash_fraction = 0.0\npicture = false",
    )
    .unwrap();
    let report = genos_cellmesh::sim::run(&scenario);
    let churn = report.overlay.churn.as_ref().expect("a churn phase");
    assert_eq!(churn.departures, 40);
    assert!(churn.broadcasts >= 50, "{}", report.to_text());
    assert!(churn.delivery_ratio >= 0.99, "{}", report.to_text());
    assert_eq!(churn.health_after.cell_counts, 1, "{}", report.to_text());
    assert_eq!(churn.health_after.missing_intra, 0, "{}", report.to_text());
    assert_eq!(
        churn.health_after.unbridged_pairs,
        0,
        "{}",
        report.to_text()
    );
}

#[test]
fn lazy_repair_carries_every_broadcast_across_a_thirty_percent_crash() {
    // Realistic models on (stored presence, relay limits, link failures, 0.1% loss), a room
    // that has been running (no cold start, to keep the test short): 30% crash at once and
    // every broadcast sent in the next second must still reach every live peer, which the
    // fixed eager paths alone cannot do (about one cell pair in eight loses all its bridges).
    let scenario = genos_cellmesh::sim::Scenario::from_toml(
        "name = 'crash'\npeers = 200\nseed = 5\ncold_start = false\nwarmup_s = 20\nsteady_s = 0\nbroadcasts = 20\ndirected = 20\ncrash_fraction = 0.3\nafter_crash_broadcasts = 50\nrepair_s = 8\npicture = false",
    )
    .unwrap();
    let report = genos_cellmesh::sim::run(&scenario);
    let o = &report.overlay;
    assert_eq!(o.crashed, 60);
    assert_eq!(o.after_crash_sent, 50, "{}", report.to_text());
    assert_eq!(o.after_crash_complete, 50, "{}", report.to_text());
    assert!(o.repaired_after_crash > 0, "{}", report.to_text());
    // Directed sends beside them: a forwarder that died unnoticed loses its copy; the
    // origin's resends (over other paths) get every one through.
    assert!(o.after_crash_directed_sent >= 45, "{}", report.to_text());
    assert_eq!(
        o.after_crash_directed_delivered,
        o.after_crash_directed_sent as u64,
        "{}",
        report.to_text()
    );
    assert!(
        o.time_to_repair_s.is_some_and(|t| t <= o.detect_s + 2.0),
        "{}",
        report.to_text()
    );
}

/// The cell count every live peer holds (panics on a split view).
fn agreed_cells<A: FrameAuth>(net: &Net<A>) -> u32 {
    let counts: HashSet<u32> = (0..net.len())
        .filter(|i| net.is_alive(*i))
        .filter_map(|i| net.overlay(i).map(|overlay| overlay.cells()))
        .collect();
    assert_eq!(counts.len(), 1, "split view: {counts:?}");
    counts.into_iter().next().unwrap_or(0)
}

#[test]
fn a_mesh_first_room_is_a_full_mesh_until_it_outgrows_the_threshold_and_again_after_it_shrinks() {
    let mut config = OverlayConfig::default();
    config.sizing = Sizing::MeshFirst {
        mesh_max: 24,
        max_cell: 100,
    };
    let peers = 60;
    let mut net = Net::new(peers, &config, [8; 32], NetConfig::new(20, 20, 3_000), 31);
    // 30 peers, none told the cell count: past 24, but within the resize hysteresis (a
    // third), so still one cell (not an oversized cell waiting for a resize), every peer
    // linked to every other.
    for i in 0..30 {
        net.start_at(i as u64 * SECOND / 4, i, None);
    }
    net.run_until(60 * SECOND);
    assert_eq!(agreed_cells(&net), 1);
    assert_eq!(net.health().missing_intra, 0, "{:?}", net.health());
    for i in 0..30 {
        assert_eq!(net.degree(i), 29, "peer {i} is not linked to all 29 others");
    }
    assert_broadcasts_reach_everyone(&mut net, 3);
    // 30 more: 60 peers, past 4/3 of 24, so cells of about sqrt(60).
    let now = net.now_us();
    for i in 30..peers {
        net.start_at(now + (i as u64 - 30) * SECOND / 4, i, None);
    }
    net.run_until(now + 120 * SECOND);
    // Cells for about 60 peers: right for some room size within a third of 60 (the resize
    // hysteresis; the room may have resized on its way up, at 33 peers or more).
    let cells = agreed_cells(&net);
    let low = cell_count(peers * 3 / 4, config.sizing);
    let high = cell_count(peers * 4 / 3, config.sizing);
    assert!(
        cells > 1 && (low..=high).contains(&cells),
        "{cells} cells, not in {low}..={high}: {:?}",
        net.health()
    );
    let health = net.health();
    assert_eq!(health.missing_intra, 0, "{health:?}");
    assert_eq!(health.unbridged_pairs, 0, "{health:?}");
    let max_degree = net.live_degrees().into_iter().max().unwrap_or(0);
    assert!(
        max_degree < 40,
        "a cells room of 60 peers needs no {max_degree} links"
    );
    assert_broadcasts_reach_everyone(&mut net, 5);
    // 45 leave: 15 peers, under 3/4 of 24, so one cell again, a full mesh.
    for i in 15..peers {
        net.leave(i);
    }
    let now = net.now_us();
    net.run_until(now + 400 * SECOND);
    assert_eq!(agreed_cells(&net), 1, "{:?}", net.health());
    assert_eq!(net.health().missing_intra, 0, "{:?}", net.health());
    for i in 0..15 {
        assert_eq!(net.degree(i), 14, "peer {i} is not linked to all 14 others");
    }
    assert_broadcasts_reach_everyone(&mut net, 3);
}

#[test]
fn a_room_that_shrinks_to_a_few_peers_outside_cell_0_moves_to_fewer_cells() {
    let config = config(100);
    let peers = 64;
    let mut net = Net::new(peers, &config, [9; 32], NetConfig::new(20, 20, 3_000), 41);
    warm(&mut net, &config, 20);
    let cells = agreed_cells(&net);
    assert_eq!(cells, cell_count(peers, config.sizing));
    // Six survivors, none in cell 0 (its leader decides resizes) and in at most half the
    // cells (the census counts a room once 3/4 of its cells were heard): only the rule for
    // an established view's silent cells moves this room.
    let mut survivors = Vec::new();
    let mut survivor_cells = HashSet::new();
    for i in 0..peers {
        let cell = net.overlay(i).unwrap().cell();
        if survivors.len() < 6
            && cell != 0
            && (survivor_cells.contains(&cell) || survivor_cells.len() < 3)
        {
            survivors.push(i);
            survivor_cells.insert(cell);
        }
    }
    assert_eq!(survivors.len(), 6, "not enough peers outside cell 0");
    for i in 0..peers {
        if !survivors.contains(&i) {
            net.leave(i);
        }
    }
    let now = net.now_us();
    net.run_until(now + 1_000 * SECOND);
    let now_cells = agreed_cells(&net);
    assert!(now_cells < cells, "still {now_cells} cells for 6 peers");
    assert_eq!(now_cells, cell_count(6, config.sizing));
    let health = net.health();
    assert_eq!(health.missing_intra, 0, "{health:?}");
    assert_eq!(health.unbridged_pairs, 0, "{health:?}");
    assert_broadcasts_reach_everyone(&mut net, 3);
}

/// Crashes every cell mate of one peer at once, 10 s to notice (a room's heartbeat
/// timeout), broadcasts right after from both sides of the cut; returns how many of the
/// survivor's and the room's copies went missing after a minute.
fn whole_cell_crash(repair_window: std::time::Duration) -> (usize, usize) {
    let mut config = config(8);
    config.repair_window = repair_window;
    let mut net = Net::new(40, &config, [9; 32], NetConfig::new(20, 10, 10_000), 3);
    warm(&mut net, &config, 30);
    let cell_of = |net: &Net<_>, i: usize| net.overlay(i).unwrap().cell();
    let mates_of = |net: &Net<_>, i: usize| -> Vec<usize> {
        (0..net.len())
            .filter(|j| *j != i && cell_of(net, *j) == cell_of(net, i))
            .collect()
    };
    // A peer holding no bridge: every link it has goes to a cell mate.
    let survivor = (0..net.len())
        .filter(|i| net.degree(*i) == mates_of(&net, *i).len())
        .max_by_key(|i| mates_of(&net, *i).len())
        .expect("a peer without bridges");
    let mates = mates_of(&net, survivor);
    assert!(mates.len() >= 3, "a cell of {} mates", mates.len());
    for mate in &mates {
        net.crash(*mate);
    }
    // Before anyone notices: the survivor holds links only to the dead.
    let mut ids = vec![net.broadcast_now(survivor, payload(0)).unwrap()];
    for n in 1..6 {
        let origin = net
            .random_live_except(&[net.key(survivor).unwrap()])
            .unwrap();
        ids.push(net.broadcast_now(origin, payload(n)).unwrap());
        let at = net.now_us() + 50_000;
        net.run_until(at);
    }
    let at = net.now_us() + 60 * SECOND;
    net.run_until(at);
    // Re-formed: the survivor's cell is bridged to every other cell (its counterparts'
    // holders kept dialling crashed peers, whose presence the relay still stores, so the
    // survivor dialled them itself).
    let health = net.health();
    assert_eq!(
        (health.missing_intra, health.unbridged_pairs),
        (0, 0),
        "{health:?}"
    );
    let (mut at_survivor, mut elsewhere) = (0, 0);
    for (n, id) in ids.iter().enumerate() {
        let (got, live, _, _, twice_or_altered) = net.broadcast_outcome(id).unwrap();
        assert!(!twice_or_altered);
        if n == 0 {
            elsewhere += live - got;
        } else {
            at_survivor += live - got;
        }
    }
    (at_survivor, elsewhere)
}

#[test]
fn a_peer_whose_whole_cell_crashed_gets_what_was_sent_meanwhile_once_linked_again() {
    // Cells rooms keep broadcasts 60 s: the survivor, cut off until the crash is noticed
    // and it is bridged again, pulls what the room sent, and the room pulls what it sent.
    assert_eq!(whole_cell_crash(std::time::Duration::from_secs(60)), (0, 0));
    // Kept only 2 s (the overlay's default, for the simulator's quick detection), both
    // sides of the cut lose what was sent while it stood.
    let (at_survivor, elsewhere) = whole_cell_crash(std::time::Duration::from_secs(2));
    assert!(
        at_survivor > 0 && elsewhere > 0,
        "{at_survivor} {elsewhere}"
    );
}
