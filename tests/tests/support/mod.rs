//! Helpers shared by the end-to-end test files.

use std::time::Duration;

use futures::StreamExt;
use genos::{PeerId, Room, RoomEvent, RoomEvents};

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

/// Waits until every room has seen every other join, at most `patience` each.
#[allow(dead_code, reason = "not every test file joins rooms this way")]
pub(crate) async fn wait_all_joined(rooms: &[Room], patience: Duration) {
    let ids: Vec<PeerId> = rooms.iter().map(Room::local_peer).collect();
    let waits = rooms.iter().map(|room| {
        let others: Vec<PeerId> = ids
            .iter()
            .copied()
            .filter(|p| *p != room.local_peer())
            .collect();
        let mut events = room.events();
        async move { wait_joined(&mut events, &others, patience).await }
    });
    futures::future::join_all(waits).await;
}

/// Waits for the first event `wanted` accepts, at most `patience`.
#[allow(dead_code, reason = "not every test file waits this way")]
pub(crate) async fn wait_for(
    events: &mut RoomEvents,
    patience: Duration,
    wanted: impl Fn(&RoomEvent) -> bool,
) -> RoomEvent {
    tokio::time::timeout(patience, async {
        loop {
            let event = events.next().await.expect("events ended");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the event never came")
}

/// The channel's next message, at most `patience` away.
#[allow(dead_code, reason = "not every test file reads channels")]
pub(crate) async fn recv(channel: &genos::Channel, patience: Duration) -> genos::Message {
    tokio::time::timeout(patience, channel.recv())
        .await
        .expect("no message in time")
        .expect("channel ended")
}
