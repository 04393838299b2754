//! The demo flow (meet over signaling, connect over transport, chat, leave) across crates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use genos::crypto::PeerId;
use genos::signal::memory::{MemoryConfig, MemorySignaling};
use genos::transport::memory::{MemoryTransport, MemoryTransportConfig};
use genos_cli::demo::{self, DemoEvent, Meeting};

fn peers(hub: &MemorySignaling, count: usize) -> Vec<(MemorySignaling, PeerId)> {
    (0..count)
        .map(|_| (hub.clone(), PeerId::from_bytes(rand::random())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_peers_meet_and_chat_in_full_mesh() {
    let signaling = MemorySignaling::new(MemoryConfig::default());
    let transport = MemoryTransport::new(MemoryTransportConfig::default());
    let mut chats = Vec::new();
    let report = demo::run(
        peers(&signaling, 8),
        transport,
        Meeting::random(),
        |event| {
            if let DemoEvent::Chat { peer, from, .. } = event {
                chats.push((*peer, *from));
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(report.connections, 8 * 7 / 2);
    assert_eq!(report.chat_lines, 8 * 7);
    // Every ordered pair exactly once.
    chats.sort();
    chats.dedup();
    assert_eq!(chats.len(), 8 * 7);
    assert_eq!(signaling.stats().dropped_overflow, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_meet_despite_signaling_latency_and_jitter() {
    let config = MemoryConfig::default()
        .with_latency(Duration::from_millis(5), Duration::from_millis(20))
        .with_loss(0.0, 11);
    let signaling = MemorySignaling::new(config);
    let transport = MemoryTransport::new(MemoryTransportConfig::default());
    let report = demo::run(peers(&signaling, 5), transport, Meeting::random(), |_| {})
        .await
        .unwrap();
    assert_eq!(report.connections, 10);
    assert_eq!(report.chat_lines, 20);
}
