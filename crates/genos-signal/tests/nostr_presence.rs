//! Stored, expiring presence on real relays (the embedded one and nostr-rs-relay): a crashed
//! peer's presence stops being offered once it expires, and in steady state a peer's only
//! traffic on a relay is its presence refresh, counted at the relay by an observer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use genos_crypto::Identity;
use genos_signal::conformance::{test_topic, wait_for};
use genos_signal::nostr::{
    EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrEvents, NostrSession, NostrSignaling,
};
use genos_signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn join(config: &NostrConfig, topic: Topic) -> (NostrSession, NostrEvents) {
    let identity = Identity::generate();
    let peer = identity.peer_id();
    let backend = NostrSignaling::new(identity, config.clone()).unwrap();
    backend.join(JoinRequest::new(topic, peer)).await.unwrap()
}

/// Presence that lives `ttl`, refreshed every `refresh`.
fn short_lived(url: &str, refresh: Duration, ttl: Duration) -> NostrConfig {
    NostrConfig::with_relays([url])
        .with_reconnect(Duration::from_millis(100), Duration::from_millis(500))
        .with_presence(refresh, ttl)
}

/// A peer that crashes is offered to newcomers while its presence lives, and not after it
/// expired, whether the relay still serves it (embedded: the client drops it) or not.
async fn crashed_presence_expires(url: &str) {
    let config = short_lived(url, Duration::from_secs(2), Duration::from_secs(3));
    let topic = test_topic("expiry");
    let (witness, _witness_events) = join(&config, topic).await;
    let (crashed, crashed_events) = join(&config, topic).await;
    let crashed_peer = crashed.local_peer();
    crashed
        .announce(Bytes::from_static(b"crashing"))
        .await
        .unwrap();
    // While it lives, a newcomer is offered it.
    let (early, mut early_events) = join(&config, topic).await;
    wait_for(
        &mut early_events,
        "the live presence",
        |event| match event {
            SignalEvent::PeerSeen { peer, .. } if peer == crashed_peer => Some(()),
            _ => None,
        },
    )
    .await;
    early.leave().await.unwrap();
    drop((crashed, crashed_events));
    // Past its expiry (NIP-40 has one-second resolution), a newcomer is not.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (late, mut late_events) = join(&config, topic).await;
    witness
        .send_to(late.local_peer(), Bytes::from_static(b"marker"))
        .await
        .unwrap();
    wait_for(&mut late_events, "the marker", |event| match event {
        SignalEvent::PeerSeen { peer, .. } if peer == crashed_peer => {
            panic!("an expired presence was offered")
        }
        SignalEvent::Message { payload, .. } if payload == "marker" => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_presence_expires_on_the_embedded_relay() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    crashed_presence_expires(relay.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_presence_expires_on_nostr_rs_relay() {
    let relay = support::NostrRsRelay::start().await;
    crashed_presence_expires(&relay.url()).await;
}

/// Subscribes to everything on `topic`'s room tag and reports when each live event arrived.
async fn observe(url: &str, topic: Topic) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let request = serde_json::json!(["REQ", "observer", {"#x": [hex(topic)], "since": 0}]);
    ws.send(WsMessage::text(request.to_string())).await.unwrap();
    let (seen, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (eose, eose_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut eose = Some(eose);
        while let Some(Ok(WsMessage::Text(text))) = ws.next().await {
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if value[0] == "EOSE" {
                if let Some(eose) = eose.take() {
                    let _ = eose.send(());
                }
            } else if value[0] == "EVENT" && eose.is_none() && seen.send(Instant::now()).is_err() {
                return;
            }
        }
    });
    eose_rx.await.unwrap();
    seen_rx
}

fn hex(topic: Topic) -> String {
    topic
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Steady state on a relay: with N peers refreshing every R, an observer counts about N
/// events per R and nothing else (no re-announce bursts, no per-peer chatter). The default
/// refresh makes that 0.2 events per peer per minute; here R is shortened so the count is
/// quick, and the ratio is what is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_traffic_is_one_refresh_per_peer_per_interval() {
    const PEERS: usize = 8;
    const REFRESH: Duration = Duration::from_secs(2);
    const WINDOW: Duration = Duration::from_secs(8);
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let topic = test_topic("steady");
    let mut observed = observe(relay.url(), topic).await;
    let config = short_lived(relay.url(), REFRESH, Duration::from_secs(5));
    let mut sessions = Vec::new();
    for i in 0..PEERS {
        let (session, events) = join(&config, topic).await;
        session
            .announce(Bytes::from(format!("peer {i}")))
            .await
            .unwrap();
        sessions.push((session, events));
    }
    // The joins' announces, then a refresh period to settle into the schedule.
    let start = Instant::now() + REFRESH;
    let end = start + WINDOW;
    let mut counted = 0usize;
    while let Ok(Some(at)) = tokio::time::timeout_at(end.into(), observed.recv()).await {
        if at >= start {
            counted += 1;
        }
    }
    let periods = (WINDOW.as_secs_f64() / REFRESH.as_secs_f64()) as usize;
    // Each peer refreshes `periods` times in the window, give or take one at each edge.
    assert!(
        (PEERS * (periods - 1)..=PEERS * (periods + 1)).contains(&counted),
        "{counted} events from {PEERS} peers in {periods} refresh periods"
    );
    let published: u64 = sessions.iter().map(|(s, _)| s.stats().published).sum();
    assert!(
        published as usize >= counted,
        "{published} published, {counted} seen"
    );
    for (session, _) in &sessions {
        session.leave().await.unwrap();
    }
}

#[test]
fn the_default_refresh_is_at_most_one_event_per_five_minutes() {
    let config = NostrConfig::default();
    assert!(config.stored_presence);
    assert!(config.announce_burst.is_empty());
    let per_minute = 60.0 / config.announce_interval.as_secs_f64();
    assert!(per_minute <= 0.2, "{per_minute} events per peer per minute");
    assert!(config.presence_ttl > config.announce_interval);
}
