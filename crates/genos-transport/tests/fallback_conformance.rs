//! The `Transport` conformance suite against links through a fallback hub on 127.0.0.1,
//! and the hub's own checks: tokens, pairing, quotas, what it forwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_transport::conformance::Harness;
use genos_transport::failover::{FailoverConfig, FailoverConnection, FailoverTransport, PathKind};
use genos_transport::fallback::{
    FallbackConfig, FallbackHub, FallbackHubConfig, FallbackTransport,
};
use genos_transport::webrtc::{IceServer, WebRtcConfig, WebRtcTransport};
use genos_transport::{
    Connection, ConnectionEvent, ConnectionState, DataChannel, Reliability, Role, Transport,
};

/// One hub per check, started on first use; a small window keeps the backpressure check quick.
struct FallbackHarness {
    hub: tokio::sync::OnceCell<(FallbackHub, FallbackTransport)>,
}

const WINDOW: usize = 512 * 1024;

impl FallbackHarness {
    fn new() -> Self {
        Self {
            hub: tokio::sync::OnceCell::new(),
        }
    }
}

async fn start_hub(config: FallbackHubConfig) -> (FallbackHub, String) {
    let hub = FallbackHub::start(config).await.unwrap();
    let url = hub.url().unwrap().to_owned();
    (hub, url)
}

impl Harness for FallbackHarness {
    type Backend = FallbackTransport;

    async fn transport(&self) -> FallbackTransport {
        let (_, transport) = self
            .hub
            .get_or_init(|| async {
                let (hub, url) = start_hub(FallbackHubConfig::default()).await;
                let config = FallbackConfig::new(url).with_window(WINDOW);
                (hub, FallbackTransport::new(config).unwrap())
            })
            .await;
        transport.clone()
    }

    fn max_in_flight(&self) -> usize {
        // The receiver's window, the writer's queue and what TCP and the hub hold.
        WINDOW + 64 * 256 * 1024 + 8 * 1024 * 1024
    }
}

genos_transport::transport_conformance!(FallbackHarness::new());

/// Connects an offerer and an answerer of `transport`s, relaying the offer.
async fn link(
    offerer: &FallbackTransport,
    answerer: &FallbackTransport,
) -> (
    genos_transport::fallback::FallbackConnection,
    genos_transport::fallback::FallbackConnection,
) {
    let (a, mut a_events) = offerer.connect(Role::Offerer).await.unwrap();
    let (b, b_events) = answerer.connect(Role::Answerer).await.unwrap();
    let Some(ConnectionEvent::Signal(offer)) = a_events.next().await else {
        panic!("no offer")
    };
    b.handle_signal(offer).await.unwrap();
    tokio::spawn(a_events.for_each(|_| async {}));
    tokio::spawn(b_events.for_each(|_| async {}));
    (a, b)
}

async fn wait_for(
    conn: &impl Connection,
    wanted: impl Fn(ConnectionState) -> bool,
) -> ConnectionState {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let state = conn.state();
            if wanted(state) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("state change in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_a_token_refuses_a_wrong_one_and_pairs_the_right_one() {
    let (hub, url) = start_hub(FallbackHubConfig::default().with_token("s3cret")).await;
    let right = FallbackTransport::new(FallbackConfig::new(&url).with_token("s3cret")).unwrap();
    let wrong = FallbackTransport::new(FallbackConfig::new(&url).with_token("guess")).unwrap();

    let (a, b) = link(&right, &wrong).await;
    let state = wait_for(&b, ConnectionState::is_terminal).await;
    assert_eq!(state, ConnectionState::Failed);
    assert!(
        b.failure().unwrap().contains("wrong token"),
        "{:?}",
        b.failure()
    );
    a.close().await;
    assert!(hub.stats().refused >= 1);

    let (a, b) = link(&right, &right).await;
    wait_for(&a, |s| s == ConnectionState::Connected).await;
    wait_for(&b, |s| s == ConnectionState::Connected).await;
    assert_eq!(hub.stats().circuits_paired, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_without_a_partner_fails_after_the_pair_timeout() {
    let (_hub, url) = start_hub(FallbackHubConfig::default()).await;
    let config = FallbackConfig::new(url).with_pair_timeout(Duration::from_millis(300));
    let transport = FallbackTransport::new(config).unwrap();
    let (alone, _events) = transport.connect(Role::Offerer).await.unwrap();
    assert_eq!(
        wait_for(&alone, ConnectionState::is_terminal).await,
        ConnectionState::Failed
    );
    assert!(alone.failure().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_goes_away_fails_both_ends_and_their_channels() {
    let (mut hub, url) = start_hub(FallbackHubConfig::default()).await;
    let transport = FallbackTransport::new(FallbackConfig::new(url)).unwrap();
    let (a, b) = link(&transport, &transport).await;
    let channel = a
        .open_channel("data", Reliability::ReliableOrdered)
        .await
        .unwrap();
    channel.send(Bytes::from_static(b"before")).await.unwrap();
    wait_for(&b, |s| s == ConnectionState::Connected).await;
    hub.shutdown();
    for end in [&a, &b] {
        assert_eq!(
            wait_for(end, ConnectionState::is_terminal).await,
            ConnectionState::Failed
        );
        assert!(end.failure().is_some());
    }
    assert!(channel.send(Bytes::from_static(b"after")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_refuses_connections_beyond_the_room_quota() {
    let mut config = FallbackHubConfig::default();
    config.max_per_room = 2;
    let (hub, url) = start_hub(config).await;
    let transport = FallbackTransport::new(FallbackConfig::new(url)).unwrap();
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let (conn, events) = transport.connect(Role::Offerer).await.unwrap();
        waiting.push((conn, events));
    }
    let mut failed = 0;
    for (conn, _) in &waiting {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if conn.state() == ConnectionState::Failed {
            failed += 1;
            assert!(
                conn.failure().unwrap().contains("quota"),
                "{:?}",
                conn.failure()
            );
        }
    }
    assert_eq!(failed, 1);
    assert_eq!(hub.stats().refused, 1);
}

/// The suite again through `FailoverTransport`: WebRTC first, the hub when it fails; and
/// with direct links off (`--no-direct`).
mod failover {
    use genos_transport::conformance::Harness;
    use genos_transport::failover::{FailoverConfig, FailoverTransport};
    use genos_transport::fallback::{
        FallbackConfig, FallbackHub, FallbackHubConfig, FallbackTransport,
    };
    use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};

    type Both = FailoverTransport<WebRtcTransport, FallbackTransport>;

    pub(super) struct FailoverHarness {
        direct: bool,
        hub: tokio::sync::OnceCell<(FallbackHub, Both)>,
    }

    impl FailoverHarness {
        pub(super) fn new(direct: bool) -> Self {
            Self {
                direct,
                hub: tokio::sync::OnceCell::new(),
            }
        }
    }

    impl Harness for FailoverHarness {
        type Backend = Both;

        async fn transport(&self) -> Both {
            let (_, transport) = self
                .hub
                .get_or_init(|| async {
                    let hub = FallbackHub::start(FallbackHubConfig::default())
                        .await
                        .unwrap();
                    let config = FallbackConfig::new(hub.url().unwrap()).with_window(super::WINDOW);
                    let fallback = FallbackTransport::new(config).unwrap();
                    let transport = if self.direct {
                        let direct =
                            WebRtcTransport::new(WebRtcConfig::default().same_host_only()).unwrap();
                        FailoverTransport::new(direct, fallback, FailoverConfig::default())
                    } else {
                        FailoverTransport::fallback_only(fallback, FailoverConfig::default())
                    };
                    (hub, transport)
                })
                .await;
            transport.clone()
        }

        fn max_in_flight(&self) -> usize {
            // The larger of the two paths' (WebRTC's send buffer and SCTP window are below).
            super::WINDOW + 64 * 256 * 1024 + 8 * 1024 * 1024
        }
    }

    mod direct_first {
        genos_transport::transport_conformance!(super::FailoverHarness::new(true));
    }

    mod no_direct {
        genos_transport::transport_conformance!(super::FailoverHarness::new(false));
    }
}

/// Two `FailoverTransport` ends on one hub, with the given direct backend.
async fn failover_pair(
    direct: WebRtcTransport,
    direct_timeout: Duration,
) -> (
    FallbackHub,
    FailoverConnection<WebRtcTransport, FallbackTransport>,
    FailoverConnection<WebRtcTransport, FallbackTransport>,
) {
    let (hub, url) = start_hub(FallbackHubConfig::default()).await;
    let fallback = FallbackTransport::new(FallbackConfig::new(url)).unwrap();
    let config = FailoverConfig::default().with_direct_timeout(direct_timeout);
    let transport = FailoverTransport::new(direct, fallback, config);
    let (a, a_events) = transport.connect(Role::Offerer).await.unwrap();
    let (b, b_events) = transport.connect(Role::Answerer).await.unwrap();
    relay_signals(a_events, b.clone());
    relay_signals(b_events, a.clone());
    (hub, a, b)
}

fn relay_signals<C: Connection>(
    mut events: impl futures::Stream<Item = ConnectionEvent<impl Send>> + Unpin + Send + 'static,
    remote: C,
) {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let ConnectionEvent::Signal(signal) = event {
                let _ = remote.handle_signal(signal).await;
            }
        }
    });
}

async fn exchange(
    a: &FailoverConnection<WebRtcTransport, FallbackTransport>,
    b: &FailoverConnection<WebRtcTransport, FallbackTransport>,
) {
    wait_for(a, |s| s == ConnectionState::Connected).await;
    wait_for(b, |s| s == ConnectionState::Connected).await;
    let channel = a
        .open_channel("data", Reliability::ReliableOrdered)
        .await
        .unwrap();
    channel.send(Bytes::from_static(b"through")).await.unwrap();
    assert!(a.stats().await.bytes_sent >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_direct_setup_cannot_work_takes_the_fallback_path() {
    // Relay-only through a TURN server nobody runs: ICE has no candidate, as when UDP is
    // blocked.
    let nowhere = IceServer::turn("turn:127.0.0.1:9", "user", "pass");
    let direct = WebRtcTransport::new(WebRtcConfig::default().with_relay_only(nowhere)).unwrap();
    let (hub, a, b) = failover_pair(direct, Duration::from_secs(1)).await;
    exchange(&a, &b).await;
    assert_eq!(a.path(), Some(PathKind::Fallback));
    assert_eq!(b.path(), Some(PathKind::Fallback));
    assert_eq!(hub.stats().circuits_paired, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_direct_setup_works_stays_direct() {
    let direct = WebRtcTransport::new(WebRtcConfig::default().same_host_only()).unwrap();
    let (hub, a, b) = failover_pair(direct, Duration::from_secs(20)).await;
    exchange(&a, &b).await;
    assert_eq!(a.path(), Some(PathKind::Direct));
    assert_eq!(b.path(), Some(PathKind::Direct));
    assert_eq!(hub.stats().circuits_paired, 0);
}
