//! The room on the in-memory backends: each behaviour alone, deterministic enough to run
//! fast. The same behaviours run over Nostr and WebRTC in the workspace's tests/.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_crypto::{KeyParams, PeerId, SealKey};
use genos_signal::Topic;
use genos_signal::memory::{MemorySignaling, MemorySignalingConfig};
use genos_transport::memory::{MemoryTransport, MemoryTransportConfig};

use crate::room::Keys;
use crate::*;

const PATIENCE: Duration = Duration::from_secs(20);

fn config() -> RoomConfig {
    RoomConfig::new("room-tests", "lobby")
        .with_password("pw")
        .with_key_params(KeyParams::new(64, 1, 1))
}

fn id(byte: u8) -> PeerId {
    PeerId::from_bytes([byte; 32])
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

    async fn join(&self, peer: PeerId, config: RoomConfig) -> Room {
        Room::join(self.hub.clone(), self.transport.clone(), peer, config)
            .await
            .unwrap()
    }
}

/// Waits until `room` reports every peer in `peers` as joined.
async fn joined(room: &Room, events: &mut RoomEvents, peers: &[PeerId]) {
    let mut missing: Vec<PeerId> = peers.to_vec();
    tokio::time::timeout(PATIENCE, async {
        while !missing.is_empty() {
            match events.next().await {
                Some(RoomEvent::PeerJoined { peer }) => missing.retain(|p| *p != peer),
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{:?} never saw {missing:?}", room.local_peer()));
}

async fn next_event(events: &mut RoomEvents, wanted: impl Fn(&RoomEvent) -> bool) -> RoomEvent {
    tokio::time::timeout(PATIENCE, async {
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

async fn recv(channel: &Channel) -> Message {
    tokio::time::timeout(PATIENCE, channel.recv())
        .await
        .expect("no message in time")
        .expect("channel ended")
}

async fn pair(net: &Net) -> (Room, Room) {
    pair_with(net, RoomLimits::default()).await
}

/// Two rooms that have seen each other join; the second keeps `limits`.
async fn pair_with(net: &Net, limits: RoomLimits) -> (Room, Room) {
    let a = net.join(id(1), config()).await;
    let b = net.join(id(2), config().with_limits(limits)).await;
    let (mut ea, mut eb) = (a.events(), b.events());
    joined(&a, &mut ea, &[id(2)]).await;
    joined(&b, &mut eb, &[id(1)]).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_exchange_broadcast_targeted_typed_and_metadata() {
    let net = Net::new();
    let (a, b) = pair(&net).await;
    let (ca, cb) = (a.channel("chat").unwrap(), b.channel("chat").unwrap());
    for i in 0..50u32 {
        ca.send(Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..50u32 {
        let message = recv(&cb).await;
        assert_eq!(message.from, id(1));
        assert_eq!(&message.payload[..], &i.to_be_bytes(), "in order");
    }
    cb.send_to(id(1), "direct").await.unwrap();
    assert_eq!(&recv(&ca).await.payload[..], b"direct");
    let report = cb
        .send_with("with meta", SendOptions::default().with_meta("k=v"))
        .await
        .unwrap();
    assert_eq!(report.sent, vec![id(1)]);
    assert_eq!(recv(&ca).await.meta.as_deref(), Some(&b"k=v"[..]));
    assert_eq!(
        cb.send_to(id(9), "nobody").await,
        Err(RoomError::UnknownPeer(id(9)))
    );

    let ta = a.typed_channel::<(String, u64)>("typed").unwrap();
    let tb = b.typed_channel::<(String, u64)>("typed").unwrap();
    ta.send(&("x".into(), 42)).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, tb.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.value, ("x".to_owned(), 42));
    // Something that does not decode is a typed error, and the channel goes on.
    a.channel("typed")
        .unwrap()
        .send(Bytes::from_static(&[0xff]))
        .await
        .unwrap();
    let bad = tokio::time::timeout(PATIENCE, tb.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(bad, Err(RoomError::Decode { .. })));

    let rtt = a.ping(id(2)).await.unwrap();
    assert!(rtt > Duration::ZERO);
    let info = a.peer_info().await;
    assert_eq!(info.len(), 1);
    assert!(info[0].rtt.is_some());
    assert_eq!(info[0].messages_sent, 52);
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_chunked_with_monotonic_progress_on_both_sides() {
    let net = Net::new();
    let (a, b) = pair(&net).await;
    let (ca, cb) = (a.channel("file").unwrap(), b.channel("file").unwrap());
    let mut incoming = cb.progress(4096);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let options = SendOptions::default()
        .with_meta("big.bin")
        .on_progress(move |p| log.lock().unwrap().push(p.done));
    ca.send_with(payload.clone(), options).await.unwrap();
    let message = recv(&cb).await;
    assert_eq!(message.payload.len(), payload.len());
    assert!(message.payload[..] == payload[..]);
    assert_eq!(message.meta.as_deref(), Some(&b"big.bin"[..]));
    let sent = sent.lock().unwrap().clone();
    assert!(sent.len() > 40, "chunked: {} chunks", sent.len());
    assert!(sent.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(sent.last(), Some(&(payload.len() as u64)));
    let mut received = Vec::new();
    while let Some(p) = incoming.next_ready() {
        received.push(p.done);
    }
    assert!(received.len() > 40);
    assert!(received.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(received.last(), Some(&(payload.len() as u64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_data_key_is_never_heard() {
    let net = Net::new();
    let key =
        genos_crypto::RoomKey::derive("room-tests", "k", Some(b"pw"), &KeyParams::new(64, 1, 1))
            .unwrap();
    let keys = |data: SealKey| Keys {
        topic: Topic::from_bytes(key.topic()),
        signal: key.signal_key().clone(),
        data,
    };
    let limits = RoomLimits::default();
    let a = Room::join_parts(
        net.hub.clone(),
        net.transport.clone(),
        id(1),
        keys(key.data_key().clone()),
        limits,
        None,
    )
    .await
    .unwrap();
    let b = Room::join_parts(
        net.hub.clone(),
        net.transport.clone(),
        id(2),
        keys(SealKey::generate()),
        limits,
        None,
    )
    .await
    .unwrap();
    let mut ea = a.events();
    joined(&a, &mut ea, &[id(2)]).await;
    let ca = a.channel("chat").unwrap();
    b.channel("chat").unwrap().send("forged").await.unwrap();
    let event = next_event(&mut ea, |e| matches!(e, RoomEvent::FrameRejected { .. })).await;
    assert_eq!(
        event,
        RoomEvent::FrameRejected {
            peer: id(2),
            error: FrameError::Unauthentic
        }
    );
    assert!(a.stats().frames_rejected >= 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ca.recv())
            .await
            .is_err()
    );
    assert_eq!(a.stats().messages_received, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_is_seen_as_left_and_ends_the_leavers_streams() {
    let net = Net::new();
    let (a, b) = pair(&net).await;
    let mut eb = b.events();
    let mut ea = a.events();
    let ca = a.channel("chat").unwrap();
    // Sent just before leaving: still delivered, because leave waits for the goodbye ack.
    b.channel("chat")
        .unwrap()
        .send(vec![7u8; 500_000])
        .await
        .unwrap();
    b.leave().await.unwrap();
    assert_eq!(recv(&ca).await.payload.len(), 500_000);
    let left = next_event(&mut ea, |e| matches!(e, RoomEvent::PeerLeft { .. })).await;
    assert_eq!(
        left,
        RoomEvent::PeerLeft {
            peer: id(2),
            reason: LeaveReason::Left
        }
    );
    assert!(
        tokio::time::timeout(PATIENCE, async { while eb.next().await.is_some() {} })
            .await
            .is_ok()
    );
    assert_eq!(
        b.channel("chat").unwrap().send("late").await,
        Err(RoomError::Left)
    );
    assert!(a.peers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_unopened_channels_wait_within_a_bound() {
    let net = Net::new();
    let limits = RoomLimits {
        unopened_messages: 3,
        ..RoomLimits::default()
    };
    let (a, b) = pair_with(&net, limits).await;
    let ca = a.channel("later").unwrap();
    for i in 0..5u8 {
        ca.send(vec![i]).await.unwrap();
    }
    // A marker on an open channel: once it arrives, everything before it was handled.
    // Held open: a dropped handle would send the marker to the (full) unopened buffer.
    let marker = b.channel("marker").unwrap();
    a.channel("marker").unwrap().send("m").await.unwrap();
    recv(&marker).await;
    assert_eq!(b.stats().unopened_dropped, 2);
    let cb = b.channel("later").unwrap();
    for i in 0..3u8 {
        assert_eq!(&recv(&cb).await.payload[..], &[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_holds_the_sender_back() {
    let net = Net::new();
    let limits = RoomLimits {
        channel_queue_messages: 4,
        channel_queue_bytes: 64 * 1024,
        ..RoomLimits::default()
    };
    let (a, b) = pair_with(&net, limits).await;
    let cb = b.channel("bulk").unwrap();
    let ca = a.channel("bulk").unwrap();
    let sender = tokio::spawn(async move {
        for _ in 0..200 {
            ca.send(vec![1u8; 16 * 1024]).await.unwrap();
        }
    });
    // Far less than 200 x 16 KiB fits between the two applications.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sender.is_finished(), "the sender was not held back");
    // The watchdog does not mistake the stalled link for a silent peer.
    for _ in 0..200 {
        assert_eq!(recv(&cb).await.payload.len(), 16 * 1024);
    }
    tokio::time::timeout(PATIENCE, sender)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.peers(), vec![id(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_locally_and_rejected_remotely() {
    let net = Net::new();
    let small = RoomLimits {
        max_message_size: 100_000,
        ..RoomLimits::default()
    };
    let (a, b) = pair_with(&net, small).await;
    let mut eb = b.events();
    let cb = b.channel("c").unwrap();
    assert_eq!(
        cb.send(vec![0u8; 100_001]).await,
        Err(RoomError::MessageTooLarge {
            size: 100_001,
            limit: 100_000
        })
    );
    let ca = a.channel("c").unwrap();
    ca.send(vec![0u8; 300_000]).await.unwrap();
    ca.send("after").await.unwrap();
    let rejected = next_event(&mut eb, |e| matches!(e, RoomEvent::FrameRejected { .. })).await;
    assert!(matches!(
        rejected,
        RoomEvent::FrameRejected {
            error: FrameError::TooLarge { size: 300_000, .. },
            ..
        }
    ));
    assert_eq!(&recv(&cb).await.payload[..], b"after");
    assert!(b.stats().frames_rejected >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_peers_form_a_full_mesh_and_targeted_sends_reach_only_their_target() {
    let net = Net::new();
    let ids: Vec<PeerId> = (1..=8).map(id).collect();
    let mut rooms = Vec::new();
    for peer in &ids {
        rooms.push(net.join(*peer, config()).await);
    }
    for room in &rooms {
        let others: Vec<PeerId> = ids
            .iter()
            .copied()
            .filter(|p| *p != room.local_peer())
            .collect();
        joined(room, &mut room.events(), &others).await;
    }
    let channels: Vec<Channel> = rooms.iter().map(|r| r.channel("c").unwrap()).collect();
    channels[0].send_to(ids[5], "only you").await.unwrap();
    channels[0]
        .send_with(
            "you two",
            SendOptions::default().to(Target::Peers(vec![ids[6], ids[7]])),
        )
        .await
        .unwrap();
    for channel in &channels {
        channel.send("all").await.unwrap();
    }
    for (i, channel) in channels.iter().enumerate() {
        let mut expected = 7;
        if i == 5 || i == 6 || i == 7 {
            expected += 1;
        }
        let mut got = Vec::new();
        for _ in 0..expected {
            got.push(recv(channel).await);
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(200), channel.recv())
                .await
                .is_err()
        );
        let alls = got.iter().filter(|m| &m.payload[..] == b"all").count();
        assert_eq!(alls, 7, "peer {i}");
    }
    for room in &rooms {
        room.leave().await.unwrap();
    }
}

/// Sends on `channel` to `peer` until the link's unreliable channel is up (it opens just
/// after the link).
async fn until_unreliable_ready(channel: &Channel, peer: PeerId) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match channel.send_to(peer, Bytes::from_static(b"probe")).await {
                Ok(()) => return,
                Err(RoomError::NoUnreliableLink(_)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
    })
    .await
    .expect("the unreliable channel never opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreliable_channels_lose_under_loss_count_it_and_never_corrupt() {
    let net = Net {
        hub: MemorySignaling::new(MemorySignalingConfig::default()),
        transport: MemoryTransport::new(
            MemoryTransportConfig::default().with_unreliable_loss(0.3, 7),
        ),
    };
    let (a, b) = pair(&net).await;
    let (ua, ub) = (
        a.unreliable_channel("pos").unwrap(),
        b.channel("pos").unwrap(),
    );
    assert!(ua.is_unreliable());
    until_unreliable_ready(&ua, id(2)).await;
    // Drain the probes.
    while tokio::time::timeout(Duration::from_millis(100), ub.recv())
        .await
        .is_ok()
    {}
    let base = b.stats();
    // Read while sending, so the queue never fills (nothing dropped here).
    let reader = {
        let ub = ub.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(500), ub.recv()).await
            {
                assert_eq!(message.from, id(1));
                got.push(u32::from_be_bytes(message.payload[..].try_into().unwrap()));
            }
            got
        })
    };
    for i in 0..400u32 {
        let report = ua.send(i.to_be_bytes().to_vec()).await.unwrap();
        assert_eq!(report.sent, vec![id(2)]);
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let got = reader.await.unwrap();
    let stats = b.stats();
    let received = stats.datagrams_received - base.datagrams_received;
    let lost = stats.datagrams_lost - base.datagrams_lost;
    assert_eq!(stats.datagrams_dropped, 0);
    assert_eq!(received, got.len() as u64);
    assert!(lost > 60, "30% of 400 lost: {lost}");
    assert!(got.len() > 200, "{}", got.len());
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "never twice");
    // Every number up to the newest received was received or counted lost, the probes
    // before the 400 included.
    let probes = a.stats().datagrams_sent - 400;
    let newest = probes + u64::from(*sorted.last().unwrap());
    assert_eq!(
        stats.datagrams_lost + stats.datagrams_received,
        newest + 1,
        "every gap counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreliable_message_larger_than_one_frame_is_refused() {
    let net = Net::new();
    let (a, _b) = pair(&net).await;
    let ua = a.unreliable_channel("pos").unwrap();
    until_unreliable_ready(&ua, id(2)).await;
    let big = vec![0u8; 70_000];
    let error = ua.send_to(id(2), big).await.unwrap_err();
    assert!(
        matches!(error, RoomError::MessageTooLarge { .. }),
        "{error}"
    );
    // The same message goes reliably, chunked.
    let options = SendOptions::default().to(Target::Peer(id(2)));
    assert!(
        a.channel("pos")
            .unwrap()
            .send_with(vec![0u8; 70_000], options)
            .await
            .unwrap()
            .failed
            .is_empty()
    );
}
