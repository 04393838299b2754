//! Helpers shared by the end-to-end test files.

use std::time::Duration;

use futures::StreamExt;
use genos::{PeerId, RoomEvent, RoomEvents};

/// Waits until every one of `peers` has joined, at most `patience`.
pub(crate) async fn wait_joined(events: &mut RoomEvents, peers: &[PeerId], patience: Duration) {
    let mut missing = peers.to_vec();
    tokio::time::timeout(patience, async {
        while !missing.is_empty() {
            if let Some(RoomEvent::PeerJoined { peer }) = events.next().await {
                missing.retain(|p| *p != peer);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never saw {missing:?} join"));
}
