//! The demo flow over a real Nostr relay (the embedded one, over WebSocket on 127.0.0.1) with
//! signaling sealed by a password room's key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use genos::crypto::{Identity, KeyParams, RoomKey};
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrSignaling};
use genos::transport::memory::{MemoryTransport, MemoryTransportConfig};
use genos_cli::demo::{self, Meeting};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_meet_over_the_embedded_relay() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let key = RoomKey::derive_async(
        "genos-tests",
        "demo",
        Some(b"secret"),
        &KeyParams::default(),
    )
    .await
    .unwrap();
    let peers: Vec<_> = (0..5)
        .map(|_| {
            let identity = Identity::generate();
            let id = identity.peer_id();
            let config = NostrConfig::with_relays([relay.url()]);
            (NostrSignaling::new(identity, config).unwrap(), id)
        })
        .collect();
    let transport = MemoryTransport::new(MemoryTransportConfig::default());
    let report = demo::run(peers, transport, Meeting::of_room(&key), |_| {})
        .await
        .unwrap();
    assert_eq!(report.connections, 10);
    assert_eq!(report.chat_lines, 20);
}
