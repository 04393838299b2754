//! The demo flow (join, meet, chat, file with progress, leave) on the in-memory backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use genos::crypto::{KeyParams, PeerId};
use genos::room::RoomConfig;
use genos::signal::memory::{MemorySignaling, MemorySignalingConfig};
use genos::transport::memory::{MemoryTransport, MemoryTransportConfig};
use genos_cli::demo::{self, DemoEvent};

fn peers(hub: &MemorySignaling, count: usize) -> Vec<(MemorySignaling, PeerId)> {
    (0..count)
        .map(|_| (hub.clone(), PeerId::from_bytes(rand::random())))
        .collect()
}

fn config() -> RoomConfig {
    RoomConfig::new("genos-tests", "demo-memory")
        .with_password("pw")
        .with_key_params(KeyParams::new(64, 1, 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_peers_meet_chat_and_share_a_file_in_full_mesh() {
    let signaling = MemorySignaling::new(MemorySignalingConfig::default());
    let transport = MemoryTransport::new(MemoryTransportConfig::default());
    let mut chats = Vec::new();
    let mut progress = Vec::new();
    let report = demo::run(
        peers(&signaling, 8),
        transport,
        config(),
        1 << 20,
        |event| match event {
            DemoEvent::Chat { peer, from, .. } => chats.push((*peer, *from)),
            DemoEvent::FileProgress { peer, percent } => progress.push((*peer, *percent)),
            _ => {}
        },
    )
    .await
    .unwrap();
    assert_eq!(report.connections, 8 * 7 / 2);
    assert_eq!(report.chat_lines, 8 * 7);
    assert_eq!(report.files_received, 7);
    // Every ordered pair exactly once.
    chats.sort();
    chats.dedup();
    assert_eq!(chats.len(), 8 * 7);
    // Each receiver reports 25, 50, 75, 100 in order.
    for receiver in progress
        .iter()
        .map(|(p, _)| *p)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let steps: Vec<u64> = progress
            .iter()
            .filter(|(p, _)| *p == receiver)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(steps, vec![25, 50, 75, 100]);
    }
    assert_eq!(signaling.stats().dropped_overflow, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_meet_despite_signaling_latency_and_jitter() {
    let config_ = MemorySignalingConfig::default()
        .with_latency(Duration::from_millis(5), Duration::from_millis(20))
        .with_loss(0.0, 11);
    let signaling = MemorySignaling::new(config_);
    let transport = MemoryTransport::new(MemoryTransportConfig::default());
    let report = demo::run(peers(&signaling, 5), transport, config(), 1000, |_| {})
        .await
        .unwrap();
    assert_eq!(report.connections, 10);
    assert_eq!(report.chat_lines, 20);
    assert_eq!(report.files_received, 4);
}
