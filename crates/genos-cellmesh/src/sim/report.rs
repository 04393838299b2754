//! Figures of a run, as text and as SVG.
//!
//! Positions are indexed by the simulator's own peer indices.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::baseline::BaselineFigures;
use super::net::Net;
use super::scenario::Scenario;
use super::stats::{Histogram, Stats};

/// The overlay's figures in one run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunFigures {
    /// Links per live peer after warm-up.
    pub connections: Stats,
    /// Their histogram.
    pub connections_histogram: Histogram,
    /// Hops to delivery of the fault-free broadcasts, eager path (repaired deliveries are
    /// counted in `max_hops_with_repair` and `time_to_full_with_repair_ms`).
    pub hops: Stats,
    /// Their histogram.
    pub hops_histogram: Histogram,
    /// Most hops any eager delivery took.
    pub max_hops: u8,
    /// Most hops any delivery took, repaired ones included.
    pub max_hops_with_repair: u8,
    /// Mean fraction of live peers each fault-free broadcast reached.
    pub delivery_ratio: f64,
    /// Broadcasts that reached every live peer.
    pub fully_delivered: usize,
    /// Fault-free broadcasts sent.
    pub broadcasts: usize,
    /// Whether any peer's application got a broadcast twice (must be false).
    pub delivered_twice: bool,
    /// Extra copies received per delivery.
    pub duplicates_per_delivery: f64,
    /// Frames sent on links per fault-free broadcast, all peers together.
    pub messages_per_broadcast: f64,
    /// Time from sending to the last eager delivery (what the eager path takes without
    /// faults; a peer it missed is repaired later), milliseconds, over every broadcast.
    pub time_to_full_ms: Stats,
    /// Time from sending to the last delivery, repairs included, over the broadcasts that
    /// reached every live peer, milliseconds.
    pub time_to_full_with_repair_ms: Stats,
    /// Bytes each peer sent per second during the broadcasts.
    pub bytes_sent_per_peer_per_s: f64,
    /// Discovery messages (announces, rosters, census) each peer heard per minute.
    pub discovery_per_peer_per_min: f64,
    /// Directed sends the overlay accepted.
    pub directed_sent: usize,
    /// Directed sends delivered.
    pub directed_delivered: u64,
    /// Peers crashed.
    pub crashed: usize,
    /// Mean delivery ratio of the broadcasts sent within a second of the crash.
    pub after_crash_ratio: Option<f64>,
    /// Seconds from the crash to the first probe after which every probe reached everyone.
    pub time_to_repair_s: Option<f64>,
    /// Mean delivery ratio of the last ten probes.
    pub after_repair_ratio: Option<f64>,
    /// Cell count.
    pub cells: u32,
    /// Simulator events processed.
    pub events: u64,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
    /// Wall-clock seconds of each phase of the run.
    pub phase_seconds: Vec<(&'static str, f64)>,
    /// The churn phase, if the scenario has one.
    pub churn: Option<ChurnFigures>,
    /// Broadcasts the overlay refused in the fault-free phase (counted as failures).
    pub broadcasts_refused: usize,
    /// Directed sends the overlay refused (counted as failures).
    pub directed_refused: usize,
    /// Broadcasts sent in the first second after the crash, and how many reached every
    /// live peer within 2 s of being sent (refused ones count as sent and not complete).
    pub after_crash_sent: usize,
    /// See `after_crash_sent`.
    pub after_crash_complete: usize,
    /// Directed sends between random survivors in the first second after the crash (one
    /// beside each broadcast), and how many were delivered by the end of the crash phase
    /// (their origins resend what is not acknowledged; refused ones count as not delivered).
    pub after_crash_directed_sent: usize,
    /// See `after_crash_directed_sent`.
    pub after_crash_directed_delivered: u64,
    /// Cold start: simulated seconds until one view with every cell link and bridge up.
    pub converged_s: Option<f64>,
    /// Cold start: how complete the overlay was at the last check (the end of warm-up, or
    /// when it converged).
    pub health_after_warmup: Option<super::net::Health>,
    /// Lazy repair during the fault-free broadcasts: digests sent per peer per second.
    pub digests_per_peer_per_s: f64,
    /// Share of the bytes sent that were digests, pulls and repairs (fault-free phase).
    pub repair_byte_share: f64,
    /// Deliveries that came through repair, fault-free phase and after the crash.
    pub repaired_fault_free: u64,
    /// See `repaired_fault_free`.
    pub repaired_after_crash: u64,
    /// Relay events each peer published per minute in the quiet stretch (announces, lobby
    /// posts, link signaling).
    pub relay_events_per_peer_min: f64,
    /// The same over the warm-up (the room forming: announces, lobby posts, link
    /// signaling through the relay), per peer per minute of warm-up.
    pub relay_events_forming: f64,
    /// Relay events refused (rate limit) or lost (restart) over the run.
    pub relay_refused: u64,
    /// Messages lost on links over the run.
    pub lost_messages: u64,
    /// Link setups that failed over the run.
    pub setup_failures: u64,
    /// The crash detection delay, seconds (repair is due two seconds after it).
    pub detect_s: f64,
    /// Across the crash: (seconds after it a broadcast was sent, fraction of live peers it
    /// reached), the first second's broadcasts then one probe a second.
    pub crash_timeline: Vec<(f64, f64)>,
}

/// A churn phase: peers leaving and arriving at a steady rate while broadcasts go out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChurnFigures {
    /// Peers that left (half gracefully, half crashing).
    pub departures: usize,
    /// Newcomers (no hint: they bootstrap from the lobby).
    pub arrivals: usize,
    /// Over how many simulated seconds.
    pub seconds: u64,
    /// Broadcasts sent (one a second).
    pub broadcasts: usize,
    /// Broadcasts that reached every settled live peer.
    pub complete: usize,
    /// Mean fraction of settled live peers reached (a newcomer counts from 20 s after it
    /// started).
    pub delivery_ratio: f64,
    /// The overlay right after the churn.
    pub health_after: super::net::Health,
    /// Connections per live peer right after the churn.
    pub connections_after: Stats,
}

/// A run's report: the overlay beside its baselines.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// The scenario played.
    pub scenario: Scenario,
    /// The overlay's figures.
    pub overlay: RunFigures,
    /// A full mesh on the same peers.
    pub full_mesh: BaselineFigures,
    /// The GenosRTC layout on the same peers.
    pub genosrtc: BaselineFigures,
    /// SVG of cells and bridges (small rooms only).
    pub picture: Option<String>,
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs == 0.0 {
        "-".into()
    } else {
        format!("{:.2}x", ours / theirs)
    }
}

impl Report {
    /// The report as a text table (overlay, baselines, ratios) and the goals checked.
    pub fn to_text(&self) -> String {
        let o = &self.overlay;
        let f = &self.full_mesh;
        let g = &self.genosrtc;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {:?}: {} peers, {} cells, seed {}, {} events in {:.1} s",
            self.scenario.name,
            self.scenario.peers,
            o.cells,
            self.scenario.seed,
            o.events,
            o.wall_seconds
        );
        let _ = writeln!(
            s,
            "{:<34} {:>12} {:>12} {:>12} {:>10} {:>10}",
            "", "cellmesh", "full mesh", "GenosRTC", "vs full", "vs GenosRTC"
        );
        let mut row = |name: &str, ours: f64, full: f64, genos: f64| {
            // Ratios of peers reached need four decimals to tell 0.999 from 1.
            let places = if name.contains("(ratio)") { 4 } else { 2 };
            let _ = writeln!(
                s,
                "{:<34} {:>12.places$} {:>12.places$} {:>12.places$} {:>10} {:>10}",
                name,
                ours,
                full,
                genos,
                ratio(ours, full),
                ratio(ours, genos)
            );
        };
        row(
            "connections per peer, mean",
            o.connections.mean,
            f.connections.mean,
            g.connections.mean,
        );
        row(
            "connections per peer, p99",
            o.connections.p99,
            f.connections.p99,
            g.connections.p99,
        );
        row(
            "connections per peer, max",
            o.connections.max,
            f.connections.max,
            g.connections.max,
        );
        row(
            "hops to delivery, mean",
            o.hops.mean,
            f.hops.mean,
            g.hops.mean,
        );
        row("hops to delivery, p99", o.hops.p99, f.hops.p99, g.hops.p99);
        row("hops to delivery, max", o.hops.max, f.hops.max, g.hops.max);
        row(
            "duplicates per delivery",
            o.duplicates_per_delivery,
            f.duplicates_per_delivery,
            g.duplicates_per_delivery,
        );
        row(
            "messages per broadcast",
            o.messages_per_broadcast,
            f.messages_per_broadcast,
            g.messages_per_broadcast,
        );
        row(
            "time to last delivery ms, mean",
            o.time_to_full_ms.mean,
            f.time_to_full_ms.mean,
            g.time_to_full_ms.mean,
        );
        row(
            "time to last delivery ms, max",
            o.time_to_full_ms.max,
            f.time_to_full_ms.max,
            g.time_to_full_ms.max,
        );
        row(
            "discovery messages per peer per min",
            o.discovery_per_peer_per_min,
            f.discovery_per_peer_per_min,
            g.discovery_per_peer_per_min,
        );
        row(
            "delivered, no crash (ratio)",
            o.delivery_ratio,
            f.delivery_ratio,
            g.delivery_ratio,
        );
        if let Some(after) = o.after_crash_ratio {
            row(
                "delivered right after crash (ratio)",
                after,
                f.after_crash_ratio,
                g.after_crash_ratio,
            );
        }
        let _ = writeln!(
            s,
            "delivery ratio {:.4} ({} of {} broadcasts reached every live peer; delivered twice: {})",
            o.delivery_ratio, o.fully_delivered, o.broadcasts, o.delivered_twice
        );
        let _ = writeln!(
            s,
            "time to the last eager delivery ms: mean {:.0}, p99 {:.0}, max {:.0}; with repairs (complete broadcasts): mean {:.0}, p99 {:.0}, max {:.0}",
            o.time_to_full_ms.mean,
            o.time_to_full_ms.p99,
            o.time_to_full_ms.max,
            o.time_to_full_with_repair_ms.mean,
            o.time_to_full_with_repair_ms.p99,
            o.time_to_full_with_repair_ms.max
        );
        let _ = writeln!(
            s,
            "bytes sent per peer per second during the broadcasts {:.0}",
            o.bytes_sent_per_peer_per_s
        );
        let _ = writeln!(
            s,
            "directed: {} sent, {} delivered",
            o.directed_sent, o.directed_delivered
        );
        if o.crashed > 0 {
            let _ = writeln!(
                s,
                "crash of {} peers: broadcasts of the first second reached {:.4} of live peers within 2 s; every probe (one a second, each judged 2 s after) reached every live peer from {} on; last probes {:.4}; directed sends of the first second delivered {} of {}",
                o.crashed,
                o.after_crash_ratio.unwrap_or(0.0),
                o.time_to_repair_s
                    .map_or("never".into(), |t| format!("{t:.0} s after the crash")),
                o.after_repair_ratio.unwrap_or(0.0),
                o.after_crash_directed_delivered,
                o.after_crash_directed_sent
            );
        }
        if let Some(churn) = &o.churn {
            let _ = writeln!(
                s,
                "churn: {} left (half crashed) and {} arrived over {} s; broadcasts during it {:.4} delivered ({} of {} complete); after it: {} view(s), {} missing cell links, {} unbridged cell pairs, connections mean {:.1} max {:.0}",
                churn.departures,
                churn.arrivals,
                churn.seconds,
                churn.delivery_ratio,
                churn.complete,
                churn.broadcasts,
                churn.health_after.cell_counts,
                churn.health_after.missing_intra,
                churn.health_after.unbridged_pairs,
                churn.connections_after.mean,
                churn.connections_after.max
            );
        }
        let phases: Vec<String> = o
            .phase_seconds
            .iter()
            .map(|(name, seconds)| format!("{name} {seconds:.1} s"))
            .collect();
        let _ = writeln!(s, "wall clock: {}", phases.join(", "));
        let _ = writeln!(
            s,
            "lazy repair: {:.1} digests per peer per s, {:.1}% of bytes sent, {} deliveries repaired (no crash), {} after the crash",
            o.digests_per_peer_per_s,
            100.0 * o.repair_byte_share,
            o.repaired_fault_free,
            o.repaired_after_crash
        );
        let _ = writeln!(
            s,
            "relay: {:.2} events published per peer per minute while forming, {:.2} in the quiet stretch, {} refused or lost; links: {} setups failed, {} messages lost",
            o.relay_events_forming,
            o.relay_events_per_peer_min,
            o.relay_refused,
            o.setup_failures,
            o.lost_messages
        );
        if self.scenario.cold_start {
            let _ = writeln!(
                s,
                "cold start: {} peers arriving over {} s converged {}",
                self.scenario.peers,
                self.scenario.join_window_ms / 1_000,
                o.converged_s
                    .map_or("not by the end of warm-up".into(), |t| format!(
                        "after {t:.0} s{}",
                        if self.scenario.start_when_converged {
                            " (the broadcasts start then)"
                        } else {
                            ""
                        }
                    ))
            );
            if let (None, Some(health)) = (o.converged_s, &o.health_after_warmup) {
                let _ = writeln!(
                    s,
                    "at the end of warm-up: {} view(s), {} cell links missing, {} cell pairs unbridged, fewest bridges per pair {}",
                    health.cell_counts,
                    health.missing_intra,
                    health.unbridged_pairs,
                    health.min_bridges.unwrap_or(0)
                );
            }
        }
        for (name, figure, ok) in self.goals() {
            let _ = writeln!(
                s,
                "goal {:<62} {:<10} {}",
                name,
                if ok { "met" } else { "NOT MET" },
                figure
            );
        }
        s
    }

    /// Writes the SVGs into `dir` (created if missing), named after the scenario: the
    /// histograms, and the picture of cells and bridges when the run drew one. Returns the
    /// files written; an error names the path that failed.
    pub fn write_svgs(&self, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let stem: String = self
            .scenario
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut files = vec![(format!("{stem}-histograms.svg"), self.histograms_svg())];
        if let Some(picture) = &self.picture {
            files.push((format!("{stem}-cells.svg"), picture.clone()));
        }
        if !self.overlay.crash_timeline.is_empty() {
            files.push((format!("{stem}-crash.svg"), self.crash_svg()));
        }
        let mut written = Vec::new();
        for (name, svg) in files {
            let path = dir.join(name);
            std::fs::write(&path, svg)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }

    /// The goals and whether this run meets them: (goal, the run's figure, met). Refused
    /// broadcasts and directed sends count as failures; crash and churn goals appear when
    /// the scenario has those phases, the wall-clock goal when it sets one.
    pub fn goals(&self) -> Vec<(&'static str, String, bool)> {
        let o = &self.overlay;
        let sent = o.broadcasts + o.broadcasts_refused;
        let mut goals = vec![
            (
                "max connections per peer <= 150",
                format!("{:.0}", o.connections.max),
                o.connections.max <= 150.0,
            ),
            (
                "mean connections per peer <= 120",
                format!("{:.1}", o.connections.mean),
                o.connections.mean <= 120.0,
            ),
            (
                "every broadcast to every live peer (no crash)",
                format!("{} of {sent}", o.fully_delivered),
                o.fully_delivered == sent && !o.delivered_twice,
            ),
            (
                "at most 4 hops (eager path)",
                format!("{} ({} with repair)", o.max_hops, o.max_hops_with_repair),
                o.max_hops <= 4,
            ),
            (
                "duplicates per delivery <= 1",
                format!("{:.3}", o.duplicates_per_delivery),
                o.duplicates_per_delivery <= 1.0,
            ),
            (
                "time to the last delivery <= 250 ms (eager path, p99 broadcast)",
                format!(
                    "p99 {:.0} ms, max {:.0} (with repairs: p50 {:.0}, max {:.0})",
                    o.time_to_full_ms.p99,
                    o.time_to_full_ms.max,
                    o.time_to_full_with_repair_ms.p50,
                    o.time_to_full_with_repair_ms.max
                ),
                o.time_to_full_ms.count > 0 && o.time_to_full_ms.p99 <= 250.0,
            ),
        ];
        let directed = o.directed_sent + o.directed_refused;
        if directed > 0 {
            goals.push((
                "every directed send delivered",
                format!("{} of {directed}", o.directed_delivered),
                o.directed_delivered == directed as u64,
            ));
        }
        if let Some(churn) = &o.churn {
            goals.push((
                "every broadcast during churn to every settled peer",
                format!("{} of {}", churn.complete, churn.broadcasts),
                churn.complete == churn.broadcasts,
            ));
        }
        if self.scenario.cold_start {
            goals.push((
                "cold start converges (one view, every link up)",
                o.converged_s
                    .map_or("not by the end of warm-up".into(), |s| {
                        format!("after {s:.0} s")
                    }),
                o.converged_s.is_some(),
            ));
        }
        if o.crashed > 0 {
            let target = if self.scenario.crash_fraction > 0.15 {
                0.999
            } else {
                0.9999
            };
            let complete = o.after_crash_complete as f64 / o.after_crash_sent.max(1) as f64;
            goals.push((
                if target < 0.9999 {
                    ">= 99.9% of first-second broadcasts reach all (within 2 s)"
                } else {
                    ">= 99.99% of first-second broadcasts reach all (within 2 s)"
                },
                format!(
                    "{} of {} ({:.4} of peers)",
                    o.after_crash_complete,
                    o.after_crash_sent,
                    o.after_crash_ratio.unwrap_or(0.0)
                ),
                complete >= target,
            ));
            if o.after_crash_directed_sent > 0 {
                goals.push((
                    "every directed send of the first second after the crash delivered",
                    format!(
                        "{} of {}",
                        o.after_crash_directed_delivered, o.after_crash_directed_sent
                    ),
                    o.after_crash_directed_delivered == o.after_crash_directed_sent as u64,
                ));
            }
            goals.push((
                "100% from 2 s after crash detection on",
                o.time_to_repair_s
                    .map_or("never".into(), |t| format!("from {t:.0} s after the crash")),
                o.time_to_repair_s.is_some_and(|t| t <= o.detect_s + 2.0),
            ));
        }
        if self.scenario.wall_goal_s > 0 {
            goals.push((
                "wall clock of the run within its goal",
                format!(
                    "{:.1} s (goal {} s)",
                    o.wall_seconds, self.scenario.wall_goal_s
                ),
                o.wall_seconds <= self.scenario.wall_goal_s as f64,
            ));
        }
        goals
    }

    /// The goals this run missed, each with its figure (empty when all are met).
    pub fn missed_goals(&self) -> Vec<String> {
        self.goals()
            .into_iter()
            .filter(|(_, _, met)| !met)
            .map(|(name, figure, _)| format!("{name} ({figure})"))
            .collect()
    }

    /// SVG of delivery across the crash: each broadcast's share of live peers reached by the
    /// time it sent, with the detection delay marked.
    pub fn crash_svg(&self) -> String {
        let points = &self.overlay.crash_timeline;
        let (w, h, left, top) = (640.0, 300.0, 60.0, 40.0);
        let (pw, ph) = (w - left - 20.0, h - top - 40.0);
        let span = points.iter().map(|(t, _)| *t).fold(1.0, f64::max);
        let low = points
            .iter()
            .map(|(_, r)| *r)
            .fold(1.0, f64::min)
            .clamp(0.0, 0.98);
        let x = |t: f64| left + pw * t / span;
        let y = |r: f64| top + ph * (1.0 - (r - low) / (1.0 - low).max(1e-9));
        let mut s = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/>"##
        );
        let _ = write!(
            s,
            r##"<text x="10" y="18" font-size="13">{}: {} of {} peers crash at 0 s; share of live peers each broadcast reached</text>"##,
            self.scenario.name, self.overlay.crashed, self.scenario.peers
        );
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
            top + ph,
            left + pw,
            top + ph,
            top + ph
        );
        for (value, label) in [(1.0, "1"), (low, "")] {
            let label = if label.is_empty() {
                format!("{low:.3}")
            } else {
                label.to_string()
            };
            let _ = write!(
                s,
                r##"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
                left - 5.0,
                y(value) + 4.0
            );
        }
        let detect = self.overlay.detect_s;
        if detect <= span {
            let _ = write!(
                s,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1}" stroke="#c05a2a" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2}" fill="#c05a2a">crash noticed</text>"##,
                x(detect),
                top + ph,
                top - 4.0
            );
        }
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{span:.0} s</text><text x="{left}" y="{}">0 s</text>"##,
            left + pw,
            top + ph + 15.0,
            top + ph + 15.0
        );
        for (t, r) in points {
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#2a7ab9"><title>{t:.2} s: {r:.4}</title></circle>"##,
                x(*t),
                y(*r)
            );
        }
        s.push_str("</svg>");
        s
    }

    /// SVG histograms of connections and hops: the overlay beside the GenosRTC layout on a
    /// shared axis per row (a full mesh would be a single bar at N-1 connections, 1 hop).
    pub fn histograms_svg(&self) -> String {
        let rows = [
            (
                "connections per peer",
                &self.overlay.connections_histogram,
                &self.genosrtc.connections_histogram,
            ),
            (
                "hops to delivery",
                &self.overlay.hops_histogram,
                &self.genosrtc.hops_histogram,
            ),
        ];
        let (w, h) = (420.0, 210.0);
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
            w * 2.0 + 30.0,
            h * 2.0 + 50.0
        );
        s.push_str(r##"<rect width="100%" height="100%" fill="#fff"/>"##);
        let _ = write!(
            s,
            r##"<text x="10" y="16" font-size="13">{}: cellmesh (blue) and the GenosRTC layout (orange) on the same peers</text>"##,
            self.scenario.name
        );
        for (row, (what, ours, theirs)) in rows.iter().enumerate() {
            let low = ours.min().unwrap_or(0).min(theirs.min().unwrap_or(0));
            let high = ours.max().unwrap_or(0).max(theirs.max().unwrap_or(0));
            for (column, (name, histogram, colour)) in [
                ("cellmesh", *ours, "#2a7ab9"),
                ("GenosRTC", *theirs, "#c05a2a"),
            ]
            .into_iter()
            .enumerate()
            {
                let x0 = 10.0 + column as f64 * (w + 10.0);
                let y0 = 30.0 + row as f64 * (h + 10.0);
                let stats = histogram.stats();
                let _ = write!(
                    s,
                    r##"<text x="{}" y="{}" font-weight="bold">{what}: {name} (mean {:.1}, max {:.0})</text>"##,
                    x0,
                    y0 + 12.0,
                    stats.mean,
                    stats.max
                );
                let buckets = histogram.bucketed(low, high, 40);
                let top = buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
                let bar = (w - 20.0) / buckets.len().max(1) as f64;
                for (i, (from, to, count)) in buckets.iter().enumerate() {
                    let bh = (h - 55.0) * (*count as f64 / top);
                    let x = x0 + 10.0 + i as f64 * bar;
                    let y = y0 + h - 25.0 - bh;
                    let _ = write!(
                        s,
                        r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}"><title>{from}-{to}: {count}</title></rect>"##,
                        (bar - 1.0).max(1.0)
                    );
                }
                let _ = write!(
                    s,
                    r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#333"/><text x="{}" y="{}">{low}</text><text x="{}" y="{}" text-anchor="end">{high}</text>"##,
                    x0 + 10.0,
                    y0 + h - 25.0,
                    x0 + w - 10.0,
                    y0 + h - 25.0,
                    x0 + 10.0,
                    y0 + h - 10.0,
                    x0 + w - 10.0,
                    y0 + h - 10.0
                );
            }
        }
        s.push_str("</svg>");
        s
    }
}

/// An SVG of the overlay: cells on a circle, members around each cell's centre, intra-cell
/// links faint, bridge links coloured.
pub(crate) fn picture<A: crate::FrameAuth>(net: &Net<A>) -> String {
    let size = 900.0;
    let centre = size / 2.0;
    let mut by_cell: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for i in 0..net.len() {
        if let Some(overlay) = net.overlay(i) {
            if net.is_alive(i) {
                by_cell.entry(overlay.cell()).or_default().push(i);
            }
        }
    }
    let cells = by_cell.len().max(1) as f64;
    let ring = if cells > 1.0 { size * 0.36 } else { 0.0 };
    let cluster = (size * 0.8 / cells).clamp(30.0, size * 0.3);
    let mut position = vec![(centre, centre); net.len()];
    for (n, (_, members)) in by_cell.iter().enumerate() {
        let angle = n as f64 / cells * std::f64::consts::TAU;
        let (cx, cy) = (centre + ring * angle.cos(), centre + ring * angle.sin());
        let count = members.len().max(1) as f64;
        for (m, peer) in members.iter().enumerate() {
            let a = m as f64 / count * std::f64::consts::TAU;
            if let Some(slot) = position.get_mut(*peer) {
                *slot = (cx + cluster * 0.5 * a.cos(), cy + cluster * 0.5 * a.sin());
            }
        }
    }
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="#fff"/>"##
    );
    let bridges = net.bridge_links();
    for members in by_cell.values() {
        for (n, a) in members.iter().enumerate() {
            for b in members.iter().skip(n + 1) {
                let (pa, pb) = (position[*a], position[*b]);
                let _ = write!(
                    s,
                    r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#bbb" stroke-width="0.3"/>"##,
                    pa.0, pa.1, pb.0, pb.1
                );
            }
        }
    }
    for (a, b) in &bridges {
        let (pa, pb) = (position[*a], position[*b]);
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#d0422a" stroke-width="0.8" stroke-opacity="0.7"/>"##,
            pa.0, pa.1, pb.0, pb.1
        );
    }
    for (i, (x, y)) in position.iter().copied().enumerate() {
        if !net.is_alive(i) {
            continue;
        }
        let leader = net.overlay(i).is_some_and(|o| o.is_leader());
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="{}" fill="{}"/>"##,
            if leader { 4.0 } else { 2.5 },
            if leader { "#1b4f8a" } else { "#2a7ab9" }
        );
    }
    let _ = write!(
        s,
        r##"<text x="10" y="20">{} peers, {} cells, {} bridge links (red), intra-cell links grey, leaders dark</text></svg>"##,
        net.alive_count(),
        by_cell.len(),
        bridges.len()
    );
    s
}
