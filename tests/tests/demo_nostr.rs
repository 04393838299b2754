//! The demo flow over a real Nostr relay (the embedded one, over WebSocket on 127.0.0.1) and
//! real WebRTC on 127.0.0.1, in a password room.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use genos::crypto::Identity;
use genos::room::RoomConfig;
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrSignaling};
use genos::transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos_cli::demo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_meet_chat_and_share_a_file_over_the_embedded_relay_and_webrtc() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
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
    let transport = WebRtcTransport::new(WebRtcConfig::loopback()).unwrap();
    let config = RoomConfig::new("genos-tests", "demo").with_password("secret");
    let report = demo::run(peers, transport, config, 2 << 20, |_| {})
        .await
        .unwrap();
    assert_eq!(report.connections, 10);
    assert_eq!(report.chat_lines, 20);
    assert_eq!(report.files_received, 4);
}
