//! The `Transport` conformance suite against `WebRtcTransport`: real WebRTC (ICE, DTLS, SCTP)
//! between two peer connections on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use genos_transport::conformance::Harness;
use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};

struct LoopbackHarness {
    transport: WebRtcTransport,
}

impl LoopbackHarness {
    fn new() -> Self {
        let config = WebRtcConfig::loopback()
            .with_send_buffer(256 * 1024)
            .with_max_channels(16);
        Self {
            transport: WebRtcTransport::new(config).unwrap(),
        }
    }
}

impl Harness for LoopbackHarness {
    type Backend = WebRtcTransport;

    async fn transport(&self) -> WebRtcTransport {
        self.transport.clone()
    }

    fn max_in_flight(&self) -> usize {
        // Our send buffer; the remote SCTP receive buffer (1 MiB by default, with room for
        // reassembly: 2 MiB); then three queues of 256 messages (16 KiB in the check): webrtc's
        // driver-to-channel queue, the events webrtc retains while that queue is full, and our
        // receive queue. Measured plateau: 13.3 MiB.
        256 * 1024 + 2 * 1024 * 1024 + 3 * 256 * 16 * 1024
    }
}

genos_transport::transport_conformance!(LoopbackHarness::new());

/// Beyond the suite: WebRTC measures the round trip of the selected ICE pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_a_round_trip_time() {
    use genos_transport::Connection;
    let harness = LoopbackHarness::new();
    let (a, _b) = genos_transport::conformance::connect_pair(&harness).await;
    let rtt = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if let Some(rtt) = a.conn.stats().await.rtt {
                return rtt;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("no round-trip time was ever reported");
    assert!(rtt < std::time::Duration::from_secs(5), "{rtt:?}");
}

/// The first signal of either side is its description: webrtc starts gathering while the
/// description is applied, and a candidate sent ahead of the offer would reach a remote that
/// has no connection for it yet (and, for a peer folding candidates into its offer, replace
/// the offer). Many connections at once, as a loaded machine is where the race shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_description_comes_before_our_candidates() {
    use futures::StreamExt;
    use genos_transport::{Connection, ConnectionEvent, Role, Transport};
    let transport = WebRtcTransport::new(WebRtcConfig::loopback()).unwrap();

    async fn first_signal_type<S>(events: &mut S) -> String
    where
        S: futures::Stream<Item = ConnectionEvent<genos_transport::webrtc::WebRtcChannel>> + Unpin,
    {
        let wait = std::time::Duration::from_secs(30);
        loop {
            match tokio::time::timeout(wait, events.next()).await {
                Ok(Some(ConnectionEvent::Signal(bytes))) => {
                    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    return value["type"].as_str().unwrap().to_owned();
                }
                Ok(Some(_)) => {}
                other => panic!("no signal came: {other:?}"),
            }
        }
    }

    let pairs = futures::future::join_all((0..20).map(|_| {
        let transport = transport.clone();
        async move {
            let (offerer, mut offerer_events) = transport.connect(Role::Offerer).await.unwrap();
            let (answerer, mut answerer_events) = transport.connect(Role::Answerer).await.unwrap();
            let offer = loop {
                match offerer_events.next().await {
                    Some(ConnectionEvent::Signal(bytes)) => break bytes,
                    Some(_) => {}
                    None => panic!("the offerer ended before its offer"),
                }
            };
            let offerer_first: serde_json::Value = serde_json::from_slice(&offer).unwrap();
            answerer.handle_signal(offer).await.unwrap();
            let answerer_first = first_signal_type(&mut answerer_events).await;
            (
                offerer_first["type"].as_str().unwrap().to_owned(),
                answerer_first,
                (offerer, answerer),
            )
        }
    }))
    .await;
    for (offerer_first, answerer_first, _connections) in &pairs {
        assert_eq!(offerer_first, "offer");
        assert_eq!(answerer_first, "answer");
    }
}
