//! Media tracks in rooms end to end: the `genos` facade on the embedded Nostr relay and real
//! WebRTC on 127.0.0.1. Samples are checked byte for byte, in order, 20 ms apart in RTP time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::{
    Codec, Genos, PeerId, ReceivedSample, RemoteTrack, Room, RoomEvent, RoomEvents, Sample, Target,
    TrackOptions,
};

/// Bound on waiting for anything, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);
const FRAME: Duration = Duration::from_millis(20);

async fn join(relay: &str, room: &str) -> Room {
    Genos::builder("genos-media-e2e", room)
        .password("pw")
        .relay(relay)
        .same_host_only()
        .join()
        .await
        .unwrap()
}

async fn wait_joined(events: &mut RoomEvents, peers: &[PeerId]) {
    support::wait_joined(events, peers, PATIENCE).await;
}

/// The next `PeerTrack` event: (sender, track, metadata).
async fn next_track(events: &mut RoomEvents) -> (PeerId, RemoteTrack, Bytes) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.next().await.expect("events ended") {
                RoomEvent::PeerTrack {
                    peer,
                    track,
                    metadata,
                } => return (peer, track, metadata),
                _ => continue,
            }
        }
    })
    .await
    .expect("no track arrived")
}

async fn next_ended(events: &mut RoomEvents) -> (PeerId, String) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let RoomEvent::PeerTrackEnded { peer, id } = events.next().await.expect("ended") {
                return (peer, id);
            }
        }
    })
    .await
    .expect("no track ended")
}

fn frame(source: u8, n: usize, len: usize) -> Bytes {
    let mut body = vec![source ^ (n % 251) as u8; len.max(9)];
    body[0] = source;
    body[1..9].copy_from_slice(&(n as u64).to_be_bytes());
    Bytes::from(body)
}

/// Writes samples `range` of `source`, paced like live media; returns the peers reached by
/// the last one.
async fn play(
    track: &genos::RoomTrack,
    source: u8,
    range: std::ops::Range<usize>,
    len: usize,
) -> usize {
    let mut reached = 0;
    for n in range {
        reached = track
            .write_sample(Sample::new(frame(source, n, len), FRAME))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    reached
}

async fn collect(track: &RemoteTrack, count: usize) -> Vec<ReceivedSample> {
    tokio::time::timeout(PATIENCE, async {
        let mut samples = Vec::new();
        while samples.len() < count {
            samples.push(track.recv_sample().await.expect("track ended early"));
        }
        samples
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {count} samples on {}", track.id()))
}

fn check(samples: &[ReceivedSample], codec: Codec, source: u8, first: usize, len: usize) {
    for (i, sample) in samples.iter().enumerate() {
        assert_eq!(
            sample.data,
            frame(source, first + i, len),
            "sample {i} differs"
        );
        if i > 0 {
            let step = sample
                .rtp_timestamp
                .wrapping_sub(samples[i - 1].rtp_timestamp);
            assert_eq!(
                step,
                codec.ticks(FRAME),
                "sample {i} not 20 ms after the previous"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_tracks_carry_samples_with_metadata_and_end_when_removed() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let a = join(relay.url(), "av").await;
    let b = join(relay.url(), "av").await;
    let (mut ea, mut eb) = (a.events(), b.events());
    wait_joined(&mut ea, &[b.local_peer()]).await;
    wait_joined(&mut eb, &[a.local_peer()]).await;

    let audio = a
        .add_track(Codec::Opus, TrackOptions::new().with_metadata(&b"mic"[..]))
        .await
        .unwrap();
    let video = a
        .add_track(
            Codec::Vp8,
            TrackOptions::new().with_metadata(&b"camera"[..]),
        )
        .await
        .unwrap();
    assert_ne!(audio.id(), video.id());
    assert_eq!(audio.peers(), vec![b.local_peer()]);
    // b sends audio back at the same time (both sides renegotiate at once).
    let reply = b.add_track(Codec::Opus, TrackOptions::new()).await.unwrap();

    let sending = async {
        tokio::join!(
            play(&audio, 1, 0..40, 120),
            play(&video, 2, 0..40, 18_000),
            play(&reply, 3, 0..40, 80),
        )
    };
    let receiving = async {
        let mut at_b = [next_track(&mut eb).await, next_track(&mut eb).await];
        at_b.sort_by_key(|(_, _, metadata)| metadata.clone());
        let (_, at_a, _) = next_track(&mut ea).await;
        let (from, camera, camera_meta) = at_b[0].clone();
        let (_, mic, mic_meta) = at_b[1].clone();
        assert_eq!(from, a.local_peer());
        assert_eq!(
            (&camera_meta[..], camera.id()),
            (&b"camera"[..], video.id())
        );
        assert_eq!((&mic_meta[..], mic.codec()), (&b"mic"[..], Codec::Opus));
        let samples = tokio::join!(collect(&mic, 40), collect(&camera, 40), collect(&at_a, 40));
        (mic, samples)
    };
    let (reached, (mic, (mic_in, camera_in, reply_in))) = tokio::join!(sending, receiving);
    assert_eq!(reached, (1, 1, 1));
    check(&mic_in, Codec::Opus, 1, 0, 120);
    check(&camera_in, Codec::Vp8, 2, 0, 18_000);
    check(&reply_in, Codec::Opus, 3, 0, 80);

    a.remove_track(&video).await.unwrap();
    assert_eq!(
        next_ended(&mut eb).await,
        (a.local_peer(), video.id().to_owned())
    );
    assert!(matches!(
        video.write_sample(Sample::new(vec![1; 10], FRAME)).await,
        Err(genos::RoomError::TrackRemoved(_))
    ));
    // The audio track goes on, fed from another source (a replaced microphone): b hears the
    // new source on the same track, and no new track appears.
    play(&audio, 4, 40..45, 60).await;
    check(&collect(&mic, 5).await, Codec::Opus, 4, 40, 60);
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), eb.next()).await {
        assert!(
            !matches!(event, RoomEvent::PeerTrack { .. }),
            "a new source made a new track: {event:?}"
        );
    }
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_tracks_for_everyone_and_a_targeted_track_reaches_only_its_target() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let a = join(relay.url(), "late").await;
    let b = join(relay.url(), "late").await;
    let mut ea = a.events();
    let mut eb = b.events();
    wait_joined(&mut ea, &[b.local_peer()]).await;
    let everyone = a.add_track(Codec::Opus, TrackOptions::new()).await.unwrap();
    let only_b = a
        .add_track(
            Codec::Opus,
            TrackOptions::new().to(Target::Peer(b.local_peer())),
        )
        .await
        .unwrap();
    let c = join(relay.url(), "late").await;
    let mut ec = c.events();
    wait_joined(&mut ea, &[c.local_peer()]).await;
    wait_joined(&mut ec, &[a.local_peer(), b.local_peer()]).await;
    // Keep writing until the late joiner's link agreed to the track.
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while everyone.peers().len() < 2 {
        everyone
            .write_sample(Sample::new(frame(9, n, 50), FRAME))
            .await
            .unwrap();
        n += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "c never got the track"
        );
        tokio::time::sleep(FRAME).await;
    }
    assert_eq!(only_b.peers(), vec![b.local_peer()]);
    let first = n;
    play(&everyone, 9, first..first + 10, 50).await;
    play(&only_b, 7, 0..10, 50).await;

    let (from, at_c, _) = next_track(&mut ec).await;
    assert_eq!((from, at_c.id()), (a.local_peer(), everyone.id()));
    let got = collect(&at_c, 10).await;
    check(&got, Codec::Opus, 9, first, 50);
    // b gets both; c gets no second track.
    let mut at_b = [next_track(&mut eb).await.1, next_track(&mut eb).await.1];
    at_b.sort_by_key(|t| t.id() == only_b.id());
    assert_eq!(at_b[1].id(), only_b.id());
    check(&collect(&at_b[1], 10).await, Codec::Opus, 7, 0, 50);
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(RoomEvent::PeerTrack { .. }) = ec.next().await {
                return;
            }
        }
    })
    .await;
    assert!(
        extra.is_err(),
        "the targeted track reached a peer it was not meant for"
    );

    // A peer that leaves ends its tracks for the others.
    a.leave().await.unwrap();
    let (peer, _) = next_ended(&mut ec).await;
    assert_eq!(peer, a.local_peer());
    b.leave().await.unwrap();
    c.leave().await.unwrap();
}

/// A sender learns that a peer started receiving its video (a decoder needs a key frame to
/// begin) and each key frame request a receiver makes; audio refuses requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_frame_requests_reach_the_sender_and_a_new_receiver_asks_for_one() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let a = join(relay.url(), "keyframes").await;
    let b = join(relay.url(), "keyframes").await;
    let mut ea = a.events();
    let mut eb = b.events();
    wait_joined(&mut ea, &[b.local_peer()]).await;
    let camera = a.add_track(Codec::Vp8, TrackOptions::new()).await.unwrap();
    // b's link agreeing to the track is a reason for a key frame, before b asked anything.
    tokio::time::timeout(PATIENCE, camera.keyframe_requested())
        .await
        .expect("no key frame wanted for the new receiver");
    assert_eq!(camera.peers(), vec![b.local_peer()]);
    assert_eq!(camera.keyframe_requests(), 0);
    play(&camera, 3, 0..3, 4_000).await;
    let (_, at_b, _) = next_track(&mut eb).await;
    for asked in 1..=2 {
        at_b.request_keyframe().unwrap();
        tokio::time::timeout(PATIENCE, camera.keyframe_requested())
            .await
            .expect("b's key frame request did not reach a");
        assert!(camera.keyframe_requests() >= asked);
    }
    check(&collect(&at_b, 3).await, Codec::Vp8, 3, 0, 4_000);
    let mic = a.add_track(Codec::Opus, TrackOptions::new()).await.unwrap();
    play(&mic, 4, 0..3, 80).await;
    let (_, mic_at_b, _) = next_track(&mut eb).await;
    assert!(mic_at_b.request_keyframe().is_err(), "audio took a request");
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}
