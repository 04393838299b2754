//! Cells rooms on the in-memory backends: the overlay under the real room code, each
//! behaviour alone. The same runs over Nostr and WebRTC in the workspace's tests/.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use genos_cellmesh::Sizing;
use genos_crypto::{Identity, KeyParams, PeerId};
use genos_signal::memory::{MemorySignaling, MemorySignalingConfig};
use genos_transport::memory::{MemoryTransport, MemoryTransportConfig};

use crate::*;

const PATIENCE: Duration = Duration::from_secs(60);

fn settings(cell: u32) -> CellsSettings {
    let mut settings = CellsSettings::default();
    settings.overlay.sizing = Sizing::Fixed(cell);
    settings.overlay.bootstrap_wait = Duration::from_millis(500);
    settings
}

fn config(identity: &Identity, settings: &CellsSettings) -> RoomConfig {
    RoomConfig::new("mesh-tests", "hall")
        .with_password("pw")
        .with_key_params(KeyParams::new(64, 1, 1))
        .with_topology(Topology::Cells(settings.clone()))
        .with_identity(identity.clone())
}

struct Net {
    hub: MemorySignaling,
    transport: MemoryTransport,
}

impl Net {
    fn new() -> Self {
        Self {
            hub: MemorySignaling::new(MemorySignalingConfig::default()),
            transport: MemoryTransport::new(MemoryTransportConfig::default()),
        }
    }

    async fn join(&self, identity: &Identity, settings: &CellsSettings) -> Room {
        let config = config(identity, settings);
        Room::join(
            self.hub.clone(),
            self.transport.clone(),
            identity.peer_id(),
            config,
        )
        .await
        .unwrap()
    }

    /// `count` peers in one room: the first finds it empty and starts it, the rest find its
    /// view stored and join at once.
    async fn start(&self, count: usize, settings: &CellsSettings) -> Vec<Room> {
        let identities: Vec<Identity> = (0..count).map(|_| Identity::generate()).collect();
        let first = self.join(&identities[0], settings).await;
        let mut events = first.events();
        tokio::time::timeout(PATIENCE, async {
            while !matches!(events.next().await, Some(RoomEvent::CellsChanged { .. })) {}
        })
        .await
        .unwrap();
        let mut rooms = vec![first];
        let rest =
            futures::future::join_all(identities[1..].iter().map(|i| self.join(i, settings)));
        rooms.extend(rest.await);
        rooms
    }
}

/// The topic (and overlay room id) every test room derives from its password.
fn topic() -> [u8; 32] {
    genos_crypto::RoomKey::derive("mesh-tests", "hall", Some(b"pw"), &KeyParams::new(64, 1, 1))
        .unwrap()
        .topic()
}

fn lacking(rooms: &[Room], cells: u32, settings: &CellsSettings) -> Vec<Vec<PeerId>> {
    crate::missing_planned_links(rooms, &topic(), cells, &settings.overlay)
}

/// Whether every room sees `cells` cells and holds every link the room's plan gives it.
fn settled(rooms: &[Room], cells: u32, settings: &CellsSettings) -> bool {
    rooms
        .iter()
        .all(|room| room.mesh_status().is_some_and(|s| s.cells == cells))
        && lacking(rooms, cells, settings).iter().all(Vec::is_empty)
}

async fn wait_settled(rooms: &[Room], cells: u32, settings: &CellsSettings) {
    tokio::time::timeout(PATIENCE, async {
        while !settled(rooms, cells, settings) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let lacking = lacking(rooms, cells, settings);
        let states: Vec<String> = rooms
            .iter()
            .zip(lacking)
            .map(|(r, lacks)| match r.mesh_status() {
                Some(s) => format!(
                    "{}: cells {} cell {} members {} intra {} slots {} bridges {} roster {} topics {} failures {} lacks {:?}",
                    r.local_peer().short(), s.cells, s.cell, s.cell_members, s.intra_links, s.bridge_slots,
                    s.bridge_links, s.roster, s.topics, s.metrics.setup_failures,
                    lacks.iter().map(PeerId::short).collect::<Vec<_>>()
                ),
                None => "no status".into(),
            })
            .collect();
        panic!("the room never settled on {cells} cells: {states:#?}")
    });
}

async fn receive(channel: &Channel, count: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < count {
        got.push(channel.recv().await.expect("channel ended"));
    }
    got
}

// The room starts as one cell (every peer linked to every other), then splits into four.
// Settled means every planned link is up; links of the one-cell view may still linger and
// bridges may be a second old, so broadcasts often go out mid-change: the overlay carries
// them over links of unknown role and names them to each new bridge (catch-up digests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cells_room_forms_cells_and_carries_broadcasts_and_directed_sends() {
    let net = Net::new();
    let settings = settings(4);
    let rooms = net.start(16, &settings).await;
    wait_settled(&rooms, 4, &settings).await;
    for room in &rooms {
        let status = room.mesh_status().unwrap();
        // Cell mates and a few bridges; never the whole room.
        assert!(status.intra_links + status.bridge_links < 15, "{status:?}");
    }

    // Every peer broadcasts a message of three chunks; every other peer gets each whole.
    let channels: Vec<Channel> = rooms.iter().map(|r| r.channel("news").unwrap()).collect();
    let payload = |i: usize| -> Vec<u8> { (0..40_000).map(|b| (b + i) as u8).collect() };
    for (i, channel) in channels.iter().enumerate() {
        let report = channel.send(payload(i)).await.unwrap();
        assert!(report.via_overlay);
    }
    for (i, channel) in channels.iter().enumerate() {
        let got = tokio::time::timeout(PATIENCE, receive(channel, 15))
            .await
            .unwrap_or_else(|_| {
                panic!("peer {i} ({:?}) missed broadcasts", rooms[i].mesh_status())
            });
        let senders: HashSet<PeerId> = got.iter().map(|m| m.from).collect();
        assert_eq!(
            senders.len(),
            15,
            "peer {i} heard from {} peers",
            senders.len()
        );
        assert!(!senders.contains(&rooms[i].local_peer()));
        for message in got {
            let sender = rooms
                .iter()
                .position(|r| r.local_peer() == message.from)
                .unwrap();
            assert_eq!(
                message.payload,
                payload(sender),
                "corrupt message from {sender}"
            );
        }
    }

    // A directed send reaches its target only.
    let secrets: Vec<Channel> = rooms.iter().map(|r| r.channel("secret").unwrap()).collect();
    let target = rooms[15].local_peer();
    secrets[1].send_to(target, "for 15 only").await.unwrap();
    let got = tokio::time::timeout(PATIENCE, receive(&secrets[15], 1))
        .await
        .expect("the directed send never arrived");
    assert_eq!(&got[0].payload[..], b"for 15 only");
    assert_eq!(got[0].from, rooms[1].local_peer());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered: u64 = rooms.iter().map(|r| r.stats().mesh_delivered).sum();
    assert!(delivered > 15 * 16 * 3);
    for (i, room) in rooms.iter().enumerate() {
        assert_eq!(room.stats().frames_rejected, 0, "peer {i}");
    }
    for room in rooms {
        room.leave().await.unwrap();
    }
}

#[tokio::test]
async fn a_cells_room_needs_the_peers_identity() {
    let net = Net::new();
    let identity = Identity::generate();
    let settings = settings(4);
    let without = RoomConfig::new("mesh-tests", "hall")
        .with_key_params(KeyParams::new(64, 1, 1))
        .with_topology(Topology::Cells(settings.clone()));
    let peer = identity.peer_id();
    let error = Room::join(net.hub.clone(), net.transport.clone(), peer, without)
        .await
        .unwrap_err();
    assert_eq!(error, RoomError::IdentityRequired);
    let other = Identity::generate().peer_id();
    let error = Room::join(
        net.hub.clone(),
        net.transport.clone(),
        other,
        config(&identity, &settings),
    )
    .await
    .unwrap_err();
    assert_eq!(error, RoomError::IdentityMismatch);
}

// A directed send whose target is gone: the overlay resends it until its give-up time, then
// the room reports the message (by the number its send report gave) as possibly undelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directed_send_to_a_peer_that_is_gone_is_reported_once() {
    let net = Net::new();
    let mut settings = settings(4);
    settings.overlay.direct_retry = Duration::from_millis(100);
    settings.overlay.direct_give_up = Duration::from_secs(1);
    let mut rooms = net.start(3, &settings).await;
    wait_settled(&rooms, 1, &settings).await;
    let channel = rooms[0].channel("notes").unwrap();
    let receiver = rooms[1].channel("notes").unwrap();
    // Delivered and acknowledged: nothing to report.
    let to = |peer: PeerId| SendOptions::default().to(Target::Peer(peer));
    let delivered = channel
        .send_with("here", to(rooms[1].local_peer()))
        .await
        .unwrap();
    assert!(delivered.message.is_some());
    let got = tokio::time::timeout(PATIENCE, receive(&receiver, 1))
        .await
        .unwrap();
    assert_eq!(&got[0].payload[..], b"here");
    // The third peer leaves; a message of three chunks to it cannot be acknowledged.
    let gone = rooms.pop().unwrap();
    let gone_peer = gone.local_peer();
    gone.leave().await.unwrap();
    let mut events = rooms[0].events();
    let report = channel
        .send_with(vec![7u8; 40_000], to(gone_peer))
        .await
        .unwrap();
    let message = report.message.unwrap();
    let failed = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.next().await {
                Some(RoomEvent::DeliveryFailed {
                    peer,
                    channel,
                    message,
                }) => return (peer, channel, message),
                Some(_) => {}
                None => panic!("the room's events ended"),
            }
        }
    })
    .await
    .expect("no DeliveryFailed event");
    assert_eq!(failed, (gone_peer, "notes".to_string(), message));
    // Once per message, though each of its three chunks was given up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rooms[0].stats().mesh_directed_failed, 3);
    let again = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            if let Some(RoomEvent::DeliveryFailed { .. }) = events.next().await {
                return;
            }
        }
    })
    .await;
    assert!(again.is_err(), "reported twice");
    assert_eq!(rooms[0].stats().mesh_directed_failed, 3);
    for room in rooms {
        room.leave().await.unwrap();
    }
}
