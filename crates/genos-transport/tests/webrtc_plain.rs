//! Connections without genos's control channel (`WebRtcConfig::plain_channel`), the shape a
//! browser library such as Trystero expects: one channel, opened by the offerer before its
//! offer, seen by both sides as an opened channel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_transport::conformance::{WebRtcHarness, accept, connect_pair, next_track};
use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos_transport::{
    Codec, Connection, ConnectionEvent, ConnectionState, DataChannel, Reliability, Role, Sample,
    TrackSpec, Transport,
};

fn plain() -> WebRtcHarness {
    WebRtcHarness(
        WebRtcTransport::new(WebRtcConfig::loopback().with_plain_channel("data")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_get_the_plain_channel_and_talk_over_it() {
    let (mut offerer, mut answerer) = connect_pair(&plain()).await;
    let ours = accept(&mut offerer).await;
    let theirs = accept(&mut answerer).await;
    for channel in [&ours, &theirs] {
        assert_eq!(channel.label(), "data");
        assert_eq!(channel.reliability(), Reliability::ReliableOrdered);
    }
    ours.send(Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(theirs.recv().await.as_deref(), Some(&b"ping"[..]));
    theirs.send(Bytes::from_static(b"pong")).await.unwrap();
    assert_eq!(ours.recv().await.as_deref(), Some(&b"pong"[..]));

    // No goodbye without the control channel: the far side's channel still ends.
    offerer.conn.close().await;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while theirs.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the answerer's channel never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offer_carries_data_channels_and_the_label_is_checked() {
    let transport = plain().0;
    let (conn, mut events) = transport.connect(Role::Offerer).await.unwrap();
    let Some(ConnectionEvent::Signal(offer)) = events.next().await else {
        panic!("no offer");
    };
    let offer: serde_json::Value = serde_json::from_slice(&offer).unwrap();
    let sdp = offer["sdp"].as_str().unwrap();
    assert_eq!(sdp.matches("m=application").count(), 1);
    assert_eq!(conn.state(), ConnectionState::Connecting);

    for label in ["", "_genos"] {
        let config = WebRtcConfig::loopback().with_plain_channel(label);
        assert!(WebRtcTransport::new(config).is_err(), "{label:?} accepted");
    }
}

// Media renegotiates through signals on a plain connection (no control channel): the
// conformance media checks pass over it, crossing offers included. (Removal has no carrier
// for its `ended`: the far side learns of it from the renegotiated SDP only.)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_carry_samples_intact_over_signals() {
    genos_transport::conformance::tracks_carry_samples_intact(&plain()).await;
}

/// Both sides add tracks at the same moment (crossing offers, settled by perfect
/// negotiation: the offerer's wins, the answerer rolls back and offers again); every track
/// arrives with its samples, and the plain channel keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_added_on_both_sides_at_once_over_signals() {
    let (mut a, mut b) = connect_pair(&plain()).await;
    let (ours, theirs) = (accept(&mut a).await, accept(&mut b).await);
    let (a_cam, b_mic, a_mic) = tokio::join!(
        a.conn.add_track(TrackSpec::new("a-cam", Codec::Vp8)),
        b.conn.add_track(TrackSpec::new("b-mic", Codec::Opus)),
        async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            a.conn.add_track(TrackSpec::new("a-mic", Codec::Opus)).await
        },
    );
    let sample = |n: u8| Sample::new(vec![n; 300], Duration::from_millis(20));
    for (track, n) in [
        (a_cam.unwrap(), 1),
        (b_mic.unwrap(), 2),
        (a_mic.unwrap(), 3),
    ] {
        tokio::spawn(async move {
            for _ in 0..50 {
                if track.write_sample(sample(n)).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let mut at_b = [next_track(&mut b).await, next_track(&mut b).await];
    at_b.sort_by(|x, y| x.id().cmp(y.id()));
    let at_a = next_track(&mut a).await;
    for (track, n) in [(&at_b[0], 1), (&at_b[1], 3), (&at_a, 2)] {
        let first = tokio::time::timeout(Duration::from_secs(30), track.recv_sample())
            .await
            .expect("no sample")
            .expect("the track ended");
        assert_eq!(&first.data[..], &[n; 300][..], "track {}", track.id());
    }
    assert_eq!(
        (at_b[0].id(), at_b[1].id(), at_a.id()),
        ("a-cam", "a-mic", "b-mic")
    );
    ours.send(Bytes::from_static(b"still here")).await.unwrap();
    assert_eq!(theirs.recv().await.as_deref(), Some(&b"still here"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_reach_the_sender_over_signals() {
    genos_transport::conformance::keyframe_requests_reach_the_sender(&plain()).await;
}
