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

mod support;

use genos::serve::{FallbackServer, FallbackServerConfig};
use genos::{Genos, Room};
use support::{joined, percentile, room_rtt, room_throughput};

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
    assert_eq!(server.hub_stats().circuits_paired, 1, "one relayed link");
    println!("| measure | through the fallback hub | direct WebRTC | relayed / direct |");
    println!("|---|---|---|---|");
    for message in [64 << 10, 1 << 20] {
        // Alternate to share any drift between the two.
        let direct1 = room_throughput(&da, &db, message, BULK).await;
        let relayed1 = room_throughput(&fa, &fb, message, BULK).await;
        let direct2 = room_throughput(&da, &db, message, BULK).await;
        let relayed2 = room_throughput(&fa, &fb, message, BULK).await;
        let (direct, relayed) = ((direct1 + direct2) / 2.0, (relayed1 + relayed2) / 2.0);
        println!(
            "| room throughput, {} KiB messages | {relayed:.0} MiB/s | {direct:.0} MiB/s | {:.2}x |",
            message >> 10,
            relayed / direct
        );
    }
    let mut direct = room_rtt(&da, &db).await;
    let mut relayed = room_rtt(&fa, &fb).await;
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
