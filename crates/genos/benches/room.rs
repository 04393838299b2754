//! Room benchmarks on 127.0.0.1 (embedded Nostr relay + WebRTC), each beside the bare
//! transport measured in the same run.
//!
//! Run: `cargo xtask bench room` (or `cargo bench -p genos --bench room`).
//!
//! The join storms (10, 30 and 60 peers joining one password room at the same moment, three
//! runs each) and the bare-pair memory baseline each run in a child process of this binary
//! (`--storm N`, `--bare-pairs N`), so one measurement's memory does not blur the next.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{joined, percentile, room_rtt, room_throughput};

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::transport::webrtc::{WebRtcChannel, WebRtcConfig, WebRtcTransport};
use genos::transport::{Connection, ConnectionEvent, DataChannel, Reliability, Role, Transport};
use genos::{Genos, Room};

async fn bare_pair(transport: &WebRtcTransport) -> (WebRtcChannel, WebRtcChannel) {
    let (a, mut a_events) = transport.connect(Role::Offerer).await.unwrap();
    let (b, mut b_events) = transport.connect(Role::Answerer).await.unwrap();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(1);
    let b2 = b.clone();
    tokio::spawn(async move {
        while let Some(event) = a_events.next().await {
            if let ConnectionEvent::Signal(message) = event {
                let _ = b2.handle_signal(message).await;
            }
        }
    });
    let a2 = a.clone();
    tokio::spawn(async move {
        while let Some(event) = b_events.next().await {
            match event {
                ConnectionEvent::Signal(message) => {
                    let _ = a2.handle_signal(message).await;
                }
                ConnectionEvent::ChannelOpened(channel) => {
                    let _ = opened_tx.send(channel).await;
                }
                _ => {}
            }
        }
    });
    let left = a
        .open_channel("bench", Reliability::ReliableOrdered)
        .await
        .unwrap();
    let right = opened_rx.recv().await.unwrap();
    // Keep the connections alive for the process's life.
    std::mem::forget((a, b));
    (left, right)
}

async fn room_pair(relay: &str, room: &str) -> (Room, Room, Duration, Duration) {
    let start = Instant::now();
    let join = || {
        Genos::builder("genos-bench", room)
            .password("bench")
            .relay(relay)
            .same_host_only()
            .join()
    };
    let (a, b) = tokio::join!(join(), join());
    let (a, b) = (a.unwrap(), b.unwrap());
    let joined_at = start.elapsed();
    let (mut ea, mut eb) = (a.events(), b.events());
    tokio::join!(joined(&mut ea), joined(&mut eb));
    (a, b, joined_at, start.elapsed())
}

const BULK: usize = 256 << 20;

async fn bare_throughput(left: &WebRtcChannel, right: &WebRtcChannel, message: usize) -> f64 {
    let chunk = left.max_message_size();
    let payload = Bytes::from(vec![7u8; message.min(chunk)]);
    let start = Instant::now();
    let right = right.clone();
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < BULK {
            got += right.recv().await.unwrap().len();
        }
    });
    let mut sent = 0;
    while sent < BULK {
        // A "message" above the transport's size is what an application would have to chunk.
        for _ in 0..message.div_ceil(chunk) {
            left.send(payload.clone()).await.unwrap();
            sent += payload.len();
        }
    }
    reader.await.unwrap();
    BULK as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

async fn bare_rtt(left: &WebRtcChannel, right: &WebRtcChannel) -> Vec<Duration> {
    let echo = right.clone();
    tokio::spawn(async move {
        while let Some(message) = echo.recv().await {
            if echo.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::new();
    for i in 0..2000u32 {
        let start = Instant::now();
        left.send(Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        left.recv().await.unwrap();
        samples.push(start.elapsed());
    }
    samples
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    support::proc_status("VmRSS:")
}

/// `count` peers join one room at once; prints `mesh_ms rss_per_end_kib busy failed complete`.
async fn storm(count: usize) {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let before = rss_kib();
    let start = Instant::now();
    let mut limits = genos::RoomLimits::default();
    if let Some(n) = std::env::var("GENOS_STORM_HALF_OPEN")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        limits.max_half_open_dials = n;
    }
    if let Some(ms) = std::env::var("GENOS_STORM_ANSWER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        limits.answer_timeout = Duration::from_millis(ms);
    }
    let join = || {
        Genos::builder("genos-bench", "storm")
            .password("bench")
            .relay(relay.url())
            .same_host_only()
            .limits(limits)
            .join()
    };
    let rooms: Vec<Room> = futures::future::join_all((0..count).map(|_| join()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let deadline = start + Duration::from_secs(120);
    while rooms.iter().any(|r| r.peers().len() < count - 1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let complete = rooms.iter().all(|r| r.peers().len() == count - 1);
    // Let the links settle (heartbeats, buffers) before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ends = (count * (count - 1)) as u64;
    let per_end = rss_kib().saturating_sub(before) / ends.max(1);
    let busy: u64 = rooms.iter().map(|r| r.stats().dials_busy).sum();
    let failed: u64 = rooms.iter().map(|r| r.stats().dials_failed).sum();
    println!("{} {per_end} {busy} {failed} {complete}", took.as_millis());
    futures::future::join_all(rooms.iter().map(Room::leave)).await;
}

/// `pairs` bare WebRTC pairs; prints the resident memory per connection end in KiB.
async fn bare_pairs(pairs: usize) {
    let transport = WebRtcTransport::new(WebRtcConfig::loopback()).unwrap();
    let before = rss_kib();
    let mut kept = Vec::new();
    for _ in 0..pairs {
        kept.push(bare_pair(&transport).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "{}",
        rss_kib().saturating_sub(before) / (2 * pairs as u64).max(1)
    );
}

/// Runs this binary again with `args` and returns what it printed.
fn child(args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Join storms, three runs per size, each in its own process.
fn storms(pair_join: Duration) {
    let bare: u64 = child(&["--bare-pairs", "50"]).parse().unwrap_or(0);
    for count in [10usize, 30, 60] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let line = child(&["--storm", &count.to_string()]);
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 5 {
                println!("| {count} peers at once | run failed: {line:?} |");
                continue;
            }
            runs.push((
                fields[0].parse::<u64>().unwrap_or(0),
                fields[1].parse::<u64>().unwrap_or(0),
                fields[2].to_owned(),
                fields[3].to_owned(),
                fields[4] == "true",
            ));
        }
        let times: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.2} s", r.0 as f64 / 1000.0))
            .collect();
        let worst = runs.iter().map(|r| r.0).max().unwrap_or(0);
        let rss: Vec<String> = runs.iter().map(|r| r.1.to_string()).collect();
        let dials: Vec<String> = runs.iter().map(|r| format!("{}/{}", r.2, r.3)).collect();
        let complete = runs.iter().all(|r| r.4);
        println!(
            "| {count} peers join at once -> full mesh ({}) | {} | worst {:.0}x a pair's join | RSS per connection end {} KiB vs bare pair {bare} KiB | busy/failed dials {} |",
            if complete { "complete" } else { "INCOMPLETE" },
            times.join(", "),
            worst as f64 / pair_join.as_millis().max(1) as f64,
            rss.join(", "),
            dials.join(", "),
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(i) = args.iter().position(|a| a == "--storm") {
        let count = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(30);
        return storm(count).await;
    }
    if let Some(i) = args.iter().position(|a| a == "--bare-pairs") {
        let pairs = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(50);
        return bare_pairs(pairs).await;
    }
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let transport = WebRtcTransport::new(WebRtcConfig::loopback()).unwrap();

    let mut joins = Vec::new();
    let mut returns = Vec::new();
    for i in 0..20 {
        let (a, b, returned, elapsed) = room_pair(relay.url(), &format!("join-{i}")).await;
        joins.push(elapsed);
        returns.push(returned);
        if std::env::var_os("GENOS_BENCH_VERBOSE").is_some() {
            println!("join {i}: returned {returned:.1?}, joined {elapsed:.1?}");
        }
        a.leave().await.unwrap();
        b.leave().await.unwrap();
    }
    let median = percentile(&mut joins, 0.5);
    let pair_join = median;
    let p90 = percentile(&mut joins, 0.9);
    println!(
        "| join -> peer joined at both sides (20 pairs) | median {median:.1?} | p90 {p90:.1?} |"
    );
    let (median, p90) = (percentile(&mut returns, 0.5), percentile(&mut returns, 0.9));
    println!(
        "| of which join() returned (key, relay subscription, announce) | median {median:.1?} | p90 {p90:.1?} |"
    );

    // The storms run in child processes while this one holds no connection.
    storms(pair_join);

    let (left, right) = bare_pair(&transport).await;
    let (a, b, _, _) = room_pair(relay.url(), "bulk").await;
    for message in [64 << 10, 1 << 20] {
        // Alternate to share any drift between the two.
        let bare1 = bare_throughput(&left, &right, message).await;
        let room1 = room_throughput(&a, &b, message, BULK).await;
        let bare2 = bare_throughput(&left, &right, message).await;
        let room2 = room_throughput(&a, &b, message, BULK).await;
        let (bare, room) = ((bare1 + bare2) / 2.0, (room1 + room2) / 2.0);
        println!(
            "| throughput, {} KiB messages | room {room:.0} MiB/s | bare transport {bare:.0} MiB/s | {:.2}x |",
            message >> 10,
            room / bare
        );
    }
    let (left2, right2) = bare_pair(&transport).await;
    let mut bare = bare_rtt(&left2, &right2).await;
    let mut room = room_rtt(&a, &b).await;
    let (bm, bp) = (percentile(&mut bare, 0.5), percentile(&mut bare, 0.99));
    let (rm, rp) = (percentile(&mut room, 0.5), percentile(&mut room, 0.99));
    println!(
        "| small-message RTT (2000) | room median {rm:.0?} p99 {rp:.0?} | bare median {bm:.0?} p99 {bp:.0?} | {:.2}x median |",
        rm.as_secs_f64() / bm.as_secs_f64()
    );
    let _ = (left, right);
}
