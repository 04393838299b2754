//! Links through a fallback server beside direct WebRTC links, in the same run: room
//! throughput (64 KiB and 1 MiB messages, 256 MiB each) and small-message round trips
//! between two peers of a password room, once linked directly and once through the hub of
//! a `FallbackServer` (`--no-direct`), all on 127.0.0.1.
//!
//! Run: `cargo bench -p genos --bench fallback`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos::serve::{FallbackServer, FallbackServerConfig};
use genos::{Genos, Room, RoomEvent};

const BULK: usize = 256 << 20;

async fn room_pair(server: &FallbackServer, room: &str, direct: bool) -> (Room, Room) {
    let join = || {
        let builder = Genos::builder("genos-bench", room)
            .password("bench")
            .relay(server.url())
            .same_host_only()
            .fallback(server.url());
        let builder = if direct { builder } else { builder.no_direct() };
        builder.join()
    };
    let (a, b) = tokio::join!(join(), join());
    let (a, b) = (a.unwrap(), b.unwrap());
    let (mut ea, mut eb) = (a.events(), b.events());
    tokio::join!(joined(&mut ea), joined(&mut eb));
    (a, b)
}

async fn joined(events: &mut genos::RoomEvents) {
    while let Some(event) = events.next().await {
        if matches!(event, RoomEvent::PeerJoined { .. }) {
            return;
        }
    }
}

async fn throughput(a: &Room, b: &Room, message: usize) -> f64 {
    let tx = a.channel(&format!("bulk-{message}")).unwrap();
    let rx = b.channel(&format!("bulk-{message}")).unwrap();
    let payload = Bytes::from(vec![7u8; message]);
    let count = BULK / message;
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        for _ in 0..count {
            rx.recv().await.unwrap();
        }
    });
    let to = b.local_peer();
    for _ in 0..count {
        if let Err(error) = tx.send_to(to, payload.clone()).await {
            panic!(
                "{message}-byte send from {}: {error}; {:?}",
                a.local_peer(),
                a.stats()
            );
        }
    }
    reader.await.unwrap();
    BULK as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

async fn rtt(a: &Room, b: &Room) -> Vec<Duration> {
    let (ping, pong) = (a.channel("rtt").unwrap(), b.channel("rtt").unwrap());
    tokio::spawn(async move {
        while let Some(message) = pong.recv().await {
            if pong.send_to(message.from, message.payload).await.is_err() {
                break;
            }
        }
    });
    let to = b.local_peer();
    let mut samples = Vec::new();
    for i in 0..2000u32 {
        let start = Instant::now();
        ping.send_to(to, Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        ping.recv().await.unwrap();
        samples.push(start.elapsed());
    }
    samples
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let server = FallbackServer::start(FallbackServerConfig::default())
        .await
        .unwrap();
    let (da, db) = room_pair(&server, "direct", true).await;
    let (fa, fb) = room_pair(&server, "relayed", false).await;
    println!("direct {} relayed {}", da.local_peer(), fa.local_peer());
    assert_eq!(server.hub_stats().circuits_paired, 1, "one relayed link");
    println!("| measure | through the fallback hub | direct WebRTC | relayed / direct |");
    println!("|---|---|---|---|");
    for message in [64 << 10, 1 << 20] {
        // Alternate to share any drift between the two.
        let direct1 = throughput(&da, &db, message).await;
        let relayed1 = throughput(&fa, &fb, message).await;
        let direct2 = throughput(&da, &db, message).await;
        let relayed2 = throughput(&fa, &fb, message).await;
        let (direct, relayed) = ((direct1 + direct2) / 2.0, (relayed1 + relayed2) / 2.0);
        println!(
            "| room throughput, {} KiB messages | {relayed:.0} MiB/s | {direct:.0} MiB/s | {:.2}x |",
            message >> 10,
            relayed / direct
        );
    }
    let mut direct = rtt(&da, &db).await;
    let mut relayed = rtt(&fa, &fb).await;
    let (dm, dp) = (percentile(&mut direct, 0.5), percentile(&mut direct, 0.99));
    let (rm, rp) = (
        percentile(&mut relayed, 0.5),
        percentile(&mut relayed, 0.99),
    );
    println!(
        "| small-message RTT (2000) | median {rm:.0?} p99 {rp:.0?} | median {dm:.0?} p99 {dp:.0?} | {:.2}x median |",
        rm.as_secs_f64() / dm.as_secs_f64()
    );
    for room in [da, db, fa, fb] {
        room.leave().await.unwrap();
    }
}
