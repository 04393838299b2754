//! Many rooms in one process: N rooms, each joined by the same two identities (a bot and its
//! counterpart), on one embedded relay and WebRTC on 127.0.0.1. Beside each other in one run:
//! a relay connection per room and session (`subscriptions_per_connection = 1`, what genos did
//! before connections were shared) and shared connections at 8 (the default) and 64
//! subscriptions per connection. Reports the time until every room's two peers are linked,
//! resident memory, relay connections, signaling events published while joining, and per
//! minute in the steady state (over `GENOS_BENCH_STEADY_SECS`, default 330 s: one presence
//! refresh interval and some slack, after the last join).
//!
//! Run: `cargo bench -p genos --bench many_rooms` (`GENOS_BENCH_ROOMS`, default 1000). Each
//! configuration runs in a child process of this binary (`--child PER_CONNECTION ROOMS`).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrSignaling};
use genos::{Genos, Identity, Room, RoomEvent};

/// Rooms joined at once.
const BATCH: usize = 50;

fn nostr(per_connection: usize) -> NostrConfig {
    let mut config = NostrConfig::default();
    config.subscriptions_per_connection = per_connection;
    config
}

async fn join(identity: &Identity, room: usize, relay: &str, per_connection: usize) -> Room {
    Genos::builder("genos-many-rooms", format!("room-{room}"))
        .identity(identity.clone())
        .nostr_config(nostr(per_connection))
        .relay(relay)
        .same_host_only()
        .join()
        .await
        .unwrap()
}

async fn linked(room: &Room) {
    let mut events = room.events();
    while room.peers().is_empty() {
        match events.next().await {
            Some(RoomEvent::PeerJoined { .. }) | Some(_) => {}
            None => panic!("room ended"),
        }
    }
}

fn published(rooms: &[Room]) -> u64 {
    rooms.iter().map(|r| r.signal_health().published).sum()
}

async fn child(per_connection: usize, count: usize) {
    let mut config = EmbeddedRelayConfig::default();
    config.max_connections = 8192;
    config.max_subscriptions = 1024;
    config.events_per_minute = 1_000_000;
    let relay = EmbeddedRelay::start(config).await.unwrap();
    let (bot, other) = (Identity::generate(), Identity::generate());
    let start = Instant::now();
    let mut rooms = Vec::with_capacity(2 * count);
    let mut first = 0;
    while first < count {
        let last = (first + BATCH).min(count);
        let joins =
            (first..last).flat_map(|room| [&bot, &other].into_iter().map(move |who| (who, room)));
        let batch: Vec<Room> = futures::future::join_all(
            joins.map(|(who, room)| join(who, room, relay.url(), per_connection)),
        )
        .await;
        futures::future::join_all(batch.iter().map(linked)).await;
        rooms.extend(batch);
        first = last;
    }
    let joined = start.elapsed();
    let rss = support::proc_status("VmRSS:") / 1024;
    let connections = [&bot, &other]
        .iter()
        .map(|who| {
            NostrSignaling::new((*who).clone(), nostr(per_connection))
                .unwrap()
                .relay_connections(relay.url())
        })
        .sum::<usize>();
    let steady: u64 = std::env::var("GENOS_BENCH_STEADY_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(330);
    let before = published(&rooms);
    tokio::time::sleep(Duration::from_secs(steady)).await;
    let per_minute = (published(&rooms) - before) as f64 * 60.0 / steady.max(1) as f64;
    let linked = rooms.iter().filter(|r| !r.peers().is_empty()).count();
    println!(
        "{} {rss} {connections} {before} {per_minute:.0} {linked}",
        joined.as_millis()
    );
    for room in rooms {
        let _ = room.leave().await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let per: usize = args[i + 1].parse().unwrap();
        let count: usize = args[i + 2].parse().unwrap();
        return runtime.block_on(child(per, count));
    }
    let count: usize = std::env::var("GENOS_BENCH_ROOMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    println!(
        "| {count} rooms x 2 peers, one process | joined (all linked) | RSS | relay connections | events published joining | events / min, steady | rooms still linked |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, per) in [
        ("a connection per room (baseline)", 1),
        ("shared, 8 per connection (default)", 8),
        ("shared, 64 per connection", 64),
    ] {
        let out = std::process::Command::new(&args[0])
            .args(["--child", &per.to_string(), &count.to_string()])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 6 {
            println!(
                "| {label} | run failed: {line:?} {} |",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            continue;
        }
        println!(
            "| {label} | {:.1} s | {} MiB | {} | {} | {} | {} of {count} |",
            fields[0].parse::<f64>().unwrap() / 1000.0,
            fields[1],
            fields[2],
            fields[3],
            fields[4],
            fields[5].parse::<usize>().unwrap() / 2
        );
    }
}
