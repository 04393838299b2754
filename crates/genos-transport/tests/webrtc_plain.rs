//! Connections without genos's control channel (`WebRtcConfig::plain_channel`), the shape a
//! browser library such as Trystero expects: one channel, opened by the offerer before its
//! offer, seen by both sides as an opened channel.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_transport::conformance::{WebRtcHarness, accept, connect_pair};
use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos_transport::{
    Connection, ConnectionEvent, ConnectionState, DataChannel, Reliability, Role, Transport,
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
