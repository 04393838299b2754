//! Two genos peers in a Trystero room through the embedded relay and real WebRTC on
//! 127.0.0.1: join, messages of every kind both ways, password rooms, leave.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use bytes::Bytes;
use genos_signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos_transport::webrtc::WebRtcConfig;
use genos_trystero::wire::Payload;
use genos_trystero::{TrysteroConfig, TrysteroEvent, TrysteroEvents, TrysteroRoom};

async fn relay() -> EmbeddedRelay {
    EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap()
}

async fn join(
    relay: &EmbeddedRelay,
    room: &str,
    password: Option<&str>,
) -> (TrysteroRoom, TrysteroEvents) {
    let mut config = TrysteroConfig::new("genos-tests", room, [relay.url()])
        .with_webrtc(WebRtcConfig::loopback());
    if let Some(password) = password {
        config = config.with_password(password);
    }
    TrysteroRoom::join(config).await.unwrap()
}

async fn next(
    events: &mut TrysteroEvents,
    wanted: impl Fn(&TrysteroEvent) -> bool,
) -> TrysteroEvent {
    tokio::time::timeout(Duration::from_secs(60), events.recv_matching(wanted))
        .await
        .expect("timed out waiting for a room event")
        .expect("room events ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_genos_peers_meet_and_exchange_every_kind_of_message() {
    let relay = relay().await;
    let (a, mut a_events) = join(&relay, "lobby", None).await;
    let (b, mut b_events) = join(&relay, "lobby", None).await;
    let joined = next(&mut a_events, |e| {
        matches!(e, TrysteroEvent::PeerJoined { .. })
    })
    .await;
    assert_eq!(
        joined,
        TrysteroEvent::PeerJoined {
            peer: b.peer_id().to_owned()
        }
    );
    next(&mut b_events, |e| {
        matches!(e, TrysteroEvent::PeerJoined { .. })
    })
    .await;

    a.ping(b.peer_id()).await.unwrap();
    assert!(matches!(
        a.ping("nobody").await,
        Err(genos_trystero::TrysteroError::NoPeer(_))
    ));
    a.send("chat", Payload::Text("hello".into()), None, None)
        .await
        .unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let meta = serde_json::json!({"name": "blob.bin"});
    let report = b
        .send(
            "file",
            Payload::Binary(Bytes::from(body.clone())),
            Some(&meta),
            None,
        )
        .await
        .unwrap();
    assert_eq!(report.sent, vec![a.peer_id().to_owned()]);

    let TrysteroEvent::Message { peer, message } = next(&mut b_events, |e| {
        matches!(e, TrysteroEvent::Message { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(peer, a.peer_id());
    assert_eq!(message.payload, Payload::Text("hello".into()));

    let mut progress = 0;
    let message = loop {
        match next(&mut a_events, |e| {
            matches!(
                e,
                TrysteroEvent::Message { .. } | TrysteroEvent::Progress { .. }
            )
        })
        .await
        {
            TrysteroEvent::Progress { .. } => progress += 1,
            TrysteroEvent::Message { message, .. } => break message,
            _ => unreachable!(),
        }
    };
    assert!(progress > 0, "no progress before the whole file");
    assert_eq!(message.payload, Payload::Binary(Bytes::from(body)));
    assert_eq!(message.metadata, Some(meta));

    b.leave().await;
    let left = next(&mut a_events, |e| {
        matches!(e, TrysteroEvent::PeerLeft { .. })
    })
    .await;
    assert_eq!(
        left,
        TrysteroEvent::PeerLeft {
            peer: b.peer_id().to_owned()
        }
    );
    a.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_never_joins_and_says_why() {
    let relay = relay().await;
    let (_a, mut a_events) = join(&relay, "vault", Some("right")).await;
    let (_b, mut b_events) = join(&relay, "vault", Some("wrong")).await;
    // The answering side cannot open the offer and says so; the offering side hears no
    // answer. Neither ever joins.
    let wanted = |e: &TrysteroEvent| {
        matches!(
            e,
            TrysteroEvent::JoinFailed { .. } | TrysteroEvent::PeerJoined { .. }
        )
    };
    let first = tokio::select! {
        event = next(&mut a_events, wanted) => event,
        event = next(&mut b_events, wanted) => event,
    };
    let TrysteroEvent::JoinFailed { reason, .. } = first else {
        panic!("joined with a wrong password: {first:?}");
    };
    assert!(reason.contains("password"), "{reason}");
    let joined = tokio::time::timeout(Duration::from_secs(3), async {
        tokio::select! {
            event = next(&mut a_events, |e| matches!(e, TrysteroEvent::PeerJoined { .. })) => event,
            event = next(&mut b_events, |e| matches!(e, TrysteroEvent::PeerJoined { .. })) => event,
        }
    })
    .await;
    assert!(joined.is_err(), "joined with a wrong password: {joined:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_password_joins() {
    let relay = relay().await;
    let (a, mut a_events) = join(&relay, "vault", Some("s3cret")).await;
    let (b, mut b_events) = join(&relay, "vault", Some("s3cret")).await;
    next(&mut a_events, |e| {
        matches!(e, TrysteroEvent::PeerJoined { .. })
    })
    .await;
    next(&mut b_events, |e| {
        matches!(e, TrysteroEvent::PeerJoined { .. })
    })
    .await;
    a.send("x", Payload::Json(serde_json::json!([1, 2])), None, None)
        .await
        .unwrap();
    let TrysteroEvent::Message { message, .. } = next(&mut b_events, |e| {
        matches!(e, TrysteroEvent::Message { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(message.payload, Payload::Json(serde_json::json!([1, 2])));
    b.leave().await;
}

/// Scale tried, not assumed: 30 peers joining a Trystero room at once all meet each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_peers_joining_at_once_all_meet() {
    const PEERS: usize = 30;
    let relay = relay().await;
    let joins = (0..PEERS).map(|_| join(&relay, "crowd", None));
    let rooms = futures::future::join_all(joins).await;
    let mut waits = Vec::new();
    for (room, mut events) in rooms {
        waits.push(tokio::spawn(async move {
            let mut joined = std::collections::BTreeSet::new();
            while joined.len() < PEERS - 1 {
                match next(&mut events, |e| {
                    matches!(e, TrysteroEvent::PeerJoined { .. })
                })
                .await
                {
                    TrysteroEvent::PeerJoined { peer } => {
                        joined.insert(peer);
                    }
                    _ => unreachable!(),
                }
            }
            (room, events)
        }));
    }
    let mut rooms = Vec::new();
    for wait in waits {
        rooms.push(wait.await.unwrap());
    }
    // Everyone hears a broadcast from the first.
    let report = rooms[0]
        .0
        .send("all", Payload::Text("to everyone".into()), None, None)
        .await
        .unwrap();
    assert_eq!(report.sent.len(), PEERS - 1);
    for (_, events) in rooms.iter_mut().skip(1) {
        let got = next(events, |e| matches!(e, TrysteroEvent::Message { .. })).await;
        assert!(matches!(got, TrysteroEvent::Message { .. }));
    }
    for (room, _) in &rooms {
        room.leave().await;
    }
}

/// Tracks both ways between two genos peers speaking Trystero: announced with `@_track`,
/// renegotiated over `@_signal`, samples intact, the metadata with each, at the same moment
/// from both sides; a key frame request crosses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_cross_both_ways_with_their_metadata() {
    use genos_transport::{Codec, Sample};
    let relay = relay().await;
    let (a, mut a_events) = join(&relay, "media", None).await;
    let (b, mut b_events) = join(&relay, "media", None).await;
    for events in [&mut a_events, &mut b_events] {
        next(events, |e| matches!(e, TrysteroEvent::PeerJoined { .. })).await;
    }
    let (camera_meta, mic_meta) = (
        serde_json::json!({"kind": "camera"}),
        serde_json::json!("mic"),
    );
    let (camera, microphone) = tokio::join!(
        a.add_track(Codec::Vp8, Some(&camera_meta), None),
        b.add_track(Codec::Opus, Some(&mic_meta), None),
    );
    let (camera, microphone) = (camera.unwrap(), microphone.unwrap());
    assert_eq!(camera.peers(), vec![b.peer_id().to_owned()]);
    assert_eq!(microphone.peers(), vec![a.peer_id().to_owned()]);
    let frame = |n: u8| Sample::new(vec![n; 5_000], Duration::from_millis(33));
    for n in 0..5 {
        assert_eq!(camera.write_sample(frame(n)).await, 1);
        assert_eq!(microphone.write_sample(frame(100 + n)).await, 1);
    }
    for (events, from, codec, metadata, first) in [
        (
            &mut b_events,
            a.peer_id(),
            Codec::Vp8,
            serde_json::json!({"kind": "camera"}),
            0,
        ),
        (
            &mut a_events,
            b.peer_id(),
            Codec::Opus,
            serde_json::json!("mic"),
            100,
        ),
    ] {
        let TrysteroEvent::PeerTrack {
            peer,
            track,
            metadata: got,
        } = next(events, |e| matches!(e, TrysteroEvent::PeerTrack { .. })).await
        else {
            unreachable!()
        };
        assert_eq!(
            (peer.as_str(), track.codec(), got),
            (from, codec, Some(metadata))
        );
        for n in 0..5u8 {
            let sample = tokio::time::timeout(Duration::from_secs(30), track.recv_sample())
                .await
                .expect("no sample")
                .expect("the track ended");
            assert_eq!(&sample.data[..], &[first + n; 5_000][..]);
        }
        if codec == Codec::Vp8 {
            track.request_keyframe().unwrap();
            let (_, sent) = camera.local_tracks().pop().unwrap();
            tokio::time::timeout(Duration::from_secs(30), sent.keyframe_requested())
                .await
                .expect("the key frame request did not cross");
        }
    }
    a.leave().await;
    b.leave().await;
}
