//! Playing a scenario: warm-up, a quiet stretch, broadcasts, directed sends, churn, a crash
//! and its repair, then the baselines; the figures of each phase.

use std::time::Instant;

use bytes::Bytes;

use super::baseline::Baseline;
use super::net::{Net, NetConfig};
use super::report::{Report, RunFigures};
use super::scenario::Scenario;
use super::stats::{Histogram, Stats};
use crate::FrameAuth;

fn payload(id: u64, len: usize) -> Bytes {
    let mut bytes = vec![0u8; len.max(8)];
    for (slot, byte) in bytes.iter_mut().zip(id.to_be_bytes()) {
        *slot = byte;
    }
    Bytes::from(bytes)
}

/// (live peers reached, live peers) of each broadcast; a refused one (None) reached nobody.
fn reached<A: FrameAuth>(
    net: &Net<A>,
    ids: &[Option<(crate::PeerKey, u64)>],
) -> Vec<(usize, usize)> {
    ids.iter().map(|id| reached_one(net, id)).collect()
}

/// (live peers reached, live peers) of one broadcast; a refused one reached nobody.
fn reached_one<A: FrameAuth>(net: &Net<A>, id: &Option<(crate::PeerKey, u64)>) -> (usize, usize) {
    id.and_then(|id| net.broadcast_outcome(&id))
        .map_or((0, 1), |(got, live, ..)| (got, live))
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
        let at = net.random_u64_below(window + 1);
        net.start_at(at, i, (!scenario.cold_start).then_some(cells));
    }
    let second = 1_000_000u64;
    let mut warm_end = scenario.warmup_s * second;
    let restart_at = (scenario.relay_restart_s > 0).then_some(scenario.relay_restart_s * second);
    // Cold start: check every 5 simulated seconds, once everyone arrived, whether the room
    // converged (one view, every cell link and bridge up).
    let mut converged_s = None;
    let mut last_health = None;
    let mut t = 0;
    let poll = 5 * second;
    while t < warm_end {
        let from = t;
        t = (t + poll).min(warm_end);
        if let Some(at) = restart_at.filter(|at| *at > from && *at <= t) {
            net.run_until(at);
            net.restart_relay();
        }
        net.run_until(t);
        if std::env::var_os("GENOS_SIM_PROGRESS").is_some() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "t={} s: {:.1} s of wall clock, {} events",
                    t / second,
                    started.elapsed().as_secs_f64(),
                    net.events_processed()
                );
            }
        }
        if scenario.cold_start && converged_s.is_none() && t >= window {
            let health = net.health();
            if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
                tracing_health(&format!("t={} s", t / second), &net);
            }
            if health.cell_counts == 1 && health.missing_intra == 0 && health.unbridged_pairs == 0 {
                converged_s = Some(t as f64 / second as f64);
            }
            last_health = Some(health);
            if scenario.start_when_converged && converged_s.is_some() {
                warm_end = t;
            }
        }
    }
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
    let before_relay = net.relay_counters().published;
    // Relay events while the room formed (every peer there from its arrival on).
    let relay_events_forming = before_relay as f64
        / scenario.peers.max(1) as f64
        / ((warm_end / second).max(1) as f64 / 60.0);
    let steady_end = warm_end + scenario.steady_s * second;
    if let Some(at) = restart_at.filter(|at| *at > warm_end && *at <= steady_end) {
        net.run_until(at);
        net.restart_relay();
    }
    net.run_until(steady_end);
    let relay_events_per_peer_min = (net.relay_counters().published - before_relay) as f64
        / net.alive_count().max(1) as f64
        / (scenario.steady_s.max(1) as f64 / 60.0);
    let discovery_per_peer_per_min = (net.sum_metric(|m| m.discovery_received) - before_discovery)
        as f64
        / net.alive_count().max(1) as f64
        / (scenario.steady_s.max(1) as f64 / 60.0);
    let warm_end = steady_end;
    let before_dup = net.sum_metric(|m| m.duplicates);
    let before_forwarded = net.sum_metric(|m| m.forwarded);
    let before_delivered = net.sum_metric(|m| m.delivered);
    let before_bytes = net.sum_metric(|m| m.bytes_sent);
    let before_repair_bytes = net.sum_metric(|m| m.repair_bytes_sent);
    let before_digests = net.sum_metric(|m| m.digests_sent);
    let before_repaired = net.sum_metric(|m| m.repaired);
    net.reset_tracking();
    let spread = (scenario.broadcast_window_s * second) / scenario.broadcasts.max(1) as u64;
    let mut ids = Vec::new();
    let mut broadcasts_refused = 0;
    for n in 0..scenario.broadcasts {
        let at = warm_end + n as u64 * spread;
        net.run_until(at);
        match net.broadcast_from_random(payload(n as u64, scenario.payload_bytes)) {
            Some(id) => ids.push(id),
            None => broadcasts_refused += 1,
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
    let mut time_to_full_eager = Vec::new();
    let mut max_hops = 0u8;
    let mut max_hops_eager = 0u8;
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
        if let Some((hops, time)) = net.eager_outcome(id) {
            max_hops_eager = max_hops_eager.max(hops);
            time_to_full_eager.push(time as f64 / 1_000.0);
        }
    }
    if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
        for id in ids.iter().take(100) {
            net.explain_missing(id);
        }
    }
    phases.push(("fault-free broadcasts", phase_start.elapsed().as_secs_f64()));
    if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
        tracing_health("after the broadcasts", &net);
    }
    phase_start = Instant::now();
    let hops = net.reset_tracking();
    let delivered = net.sum_metric(|m| m.delivered) - before_delivered;
    let duplicates = net.sum_metric(|m| m.duplicates) - before_dup;
    let forwarded = net.sum_metric(|m| m.forwarded) - before_forwarded;
    let degrees = net.live_degrees();
    let bytes_sent = net.sum_metric(|m| m.bytes_sent) - before_bytes;
    let repair_bytes = net.sum_metric(|m| m.repair_bytes_sent) - before_repair_bytes;

    let mut figures = RunFigures {
        connections: Stats::of(degrees.iter().map(|d| *d as f64)),
        connections_histogram: Histogram::from_values(degrees.iter().map(|d| *d as u64)),
        hops: hops.stats(),
        hops_histogram: hops,
        max_hops: max_hops_eager,
        max_hops_with_repair: max_hops,
        delivery_ratio: ratio_sum / ids.len().max(1) as f64,
        fully_delivered: full,
        broadcasts: ids.len(),
        delivered_twice: twice,
        duplicates_per_delivery: duplicates as f64 / delivered.max(1) as f64,
        messages_per_broadcast: forwarded as f64 / ids.len().max(1) as f64,
        time_to_full_ms: Stats::of(time_to_full_eager.into_iter()),
        time_to_full_with_repair_ms: Stats::of(time_to_full.into_iter()),
        bytes_sent_per_peer_per_s: bytes_sent as f64 / live / phase_seconds,
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
        broadcasts_refused,
        directed_refused: 0,
        after_crash_sent: 0,
        after_crash_complete: 0,
        after_crash_directed_sent: 0,
        after_crash_directed_delivered: 0,
        converged_s,
        health_after_warmup: last_health,
        digests_per_peer_per_s: (net.sum_metric(|m| m.digests_sent) - before_digests) as f64
            / live
            / phase_seconds,
        repair_byte_share: repair_bytes as f64 / bytes_sent.max(1) as f64,
        repaired_fault_free: net.sum_metric(|m| m.repaired) - before_repaired,
        repaired_after_crash: 0,
        relay_events_per_peer_min,
        relay_events_forming,
        relay_refused: 0,
        lost_messages: 0,
        setup_failures: 0,
        detect_s: scenario.detect_ms as f64 / 1_000.0,
        crash_timeline: Vec::new(),
    };

    // Directed sends between random pairs.
    let before_directed = net.directed_delivered();
    t = phase_end;
    let mut sent = 0;
    for _ in 0..scenario.directed {
        t += 10_000;
        net.run_until(t);
        let (Some(a), Some(b)) = (net.random_live(), net.random_live()) else {
            break;
        };
        if a != b {
            if net.send_now(a, b) {
                sent += 1;
            } else {
                figures.directed_refused += 1;
            }
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
            let mut origins = Vec::new();
            while next_broadcast <= at {
                net.run_until(next_broadcast);
                // A refused broadcast stays in the list as a failure.
                let id = net.broadcast_from_random(payload(n as u64, 64));
                origins.extend(id.map(|(origin, _)| origin));
                ids.push(id);
                next_broadcast += second;
            }
            net.run_until(at);
            // Not the origin of a broadcast sent this very instant: leaving would take its
            // frames down before they left (a loss of the harness, not the overlay).
            if let Some(victim) = net.random_live_except(&origins) {
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
        let outcomes = reached(&net, &ids);
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
        let before_repaired = net.sum_metric(|m| m.repaired);
        let step = second / scenario.after_crash_broadcasts.max(1) as u64;
        let directed_before = net.directed_delivered();
        for n in 0..scenario.after_crash_broadcasts {
            net.run_until(crash_at + n as u64 * step);
            ids.push(net.broadcast_from_random(payload(n as u64, 64)));
            if let (Some(a), Some(b)) = (net.random_live(), net.random_live()) {
                if a != b {
                    figures.after_crash_directed_sent += 1;
                    // A refusal counts as not delivered.
                    net.send_now(a, b);
                }
            }
        }
        // Every broadcast is judged 2 s after it was sent (the first second's as well as the
        // probes, one a second from then on): what it reached by then is what counts.
        let judge_after = 2 * second;
        let first_sent: Vec<u64> = (0..ids.len() as u64).map(|n| crash_at + n * step).collect();
        let mut first_outcomes: Vec<(usize, usize)> = vec![(0, 1); ids.len()];
        let mut probes: Vec<(u64, Option<(crate::PeerKey, u64)>)> = Vec::new();
        let mut probe_outcomes: Vec<(u64, bool, f64)> = Vec::new();
        // (when, what): a probe to send (its second) or a broadcast to judge.
        #[derive(Clone, Copy)]
        enum Step {
            Probe(u64),
            JudgeFirst(usize),
            JudgeProbe(usize),
        }
        let mut plan: Vec<(u64, Step)> = first_sent
            .iter()
            .enumerate()
            .map(|(n, sent)| (sent + judge_after, Step::JudgeFirst(n)))
            .collect();
        plan.extend((1..=scenario.repair_s).map(|s| (crash_at + s * second, Step::Probe(s))));
        plan.sort_by_key(|(at, _)| *at);
        let mut next = 0;
        while next < plan.len() {
            let Some(&(at, step)) = plan.get(next) else {
                break;
            };
            next += 1;
            net.run_until(at);
            match step {
                Step::JudgeFirst(n) => {
                    if let (Some(slot), Some(id)) = (first_outcomes.get_mut(n), ids.get(n)) {
                        *slot = reached_one(&net, id);
                    }
                }
                Step::Probe(second_after) => {
                    let id = net.broadcast_from_random(payload(second_after, 64));
                    probes.push((second_after, id));
                    let judge = (at + judge_after, Step::JudgeProbe(probes.len() - 1));
                    let place = plan.partition_point(|(when, _)| *when <= judge.0);
                    plan.insert(place.max(next), judge);
                }
                Step::JudgeProbe(n) => {
                    if let Some((second_after, id)) = probes.get(n) {
                        let (got, alive) = reached_one(&net, id);
                        probe_outcomes.push((
                            *second_after,
                            got == alive,
                            got as f64 / alive.max(1) as f64,
                        ));
                    }
                }
            }
        }
        if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
            for id in ids.iter().flatten() {
                net.explain_missing(id);
            }
        }
        figures.after_crash_directed_delivered = net.directed_delivered() - directed_before;
        figures.after_crash_sent = first_outcomes.len();
        figures.after_crash_complete = first_outcomes
            .iter()
            .filter(|(got, alive)| got == alive)
            .count();
        figures.repaired_after_crash = net.sum_metric(|m| m.repaired) - before_repaired;
        let ratios: Vec<f64> = first_outcomes
            .iter()
            .map(|(got, alive)| *got as f64 / (*alive).max(1) as f64)
            .collect();
        figures.after_crash_ratio = Some(ratios.iter().sum::<f64>() / ratios.len().max(1) as f64);
        let step_s = step as f64 / second as f64;
        figures.crash_timeline = ratios
            .iter()
            .enumerate()
            .map(|(n, ratio)| (n as f64 * step_s, *ratio))
            .collect();
        net.reset_tracking();
        figures.crash_timeline.extend(
            probe_outcomes
                .iter()
                .map(|(s, _, ratio)| (*s as f64, *ratio)),
        );
        // Repaired: from this probe on, every probe reached every live peer.
        let mut repaired_at = None;
        for (s, all, _) in probe_outcomes.iter().rev() {
            if *all {
                repaired_at = Some(*s);
            } else {
                break;
            }
        }
        figures.time_to_repair_s = repaired_at.map(|s| s as f64);
        if std::env::var_os("GENOS_SIM_DEBUG").is_some() {
            tracing_health("after repair", &net);
            for (s, all, r) in &probe_outcomes {
                if !*all {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("probe {s}: {r:.4}");
                    }
                }
            }
        }
        let tail: Vec<f64> = probe_outcomes
            .iter()
            .rev()
            .take(10)
            .map(|(_, _, r)| *r)
            .collect();
        figures.after_repair_ratio = Some(tail.iter().sum::<f64>() / tail.len().max(1) as f64);
        figures.crashed = crashed.len();
    }
    if crash_count > 0 {
        phases.push(("crash and repair", phase_start.elapsed().as_secs_f64()));
    }
    phase_start = Instant::now();
    figures.relay_refused = net.relay_counters().refused;
    figures.lost_messages = net.lost();
    figures.setup_failures = net.sum_metric(|m| m.setup_failures);
    figures.events = net.events_processed();
    figures.wall_seconds = started.elapsed().as_secs_f64();

    let announces_per_min = 60.0 / overlay_config.announce_interval.as_secs_f64().max(1.0);
    let latency = super::baseline::Latency {
        base_us: scenario.latency_ms * 1_000,
        jitter_us: scenario.jitter_ms * 1_000,
        loss: scenario.loss,
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
