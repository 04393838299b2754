//! The in-memory hub alone.

use futures::{FutureExt, StreamExt};

use super::*;

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes([n; 32])
}

const TOPIC: Topic = Topic::from_bytes([9; 32]);

#[tokio::test]
async fn partition_cuts_traffic_until_healed() {
    let hub = MemorySignaling::new(MemorySignalingConfig::default());
    let (a, _a_events) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
    let (_b, mut b_events) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
    hub.partition(&[&[peer(1)], &[peer(2)]]);
    a.send_to(peer(2), Bytes::from_static(b"lost"))
        .await
        .unwrap();
    assert_eq!(hub.stats().dropped_partition, 1);
    hub.heal();
    a.send_to(peer(2), Bytes::from_static(b"found"))
        .await
        .unwrap();
    let event = b_events.next().await.unwrap();
    assert_eq!(
        event,
        SignalEvent::Message {
            from: peer(1),
            payload: Bytes::from_static(b"found")
        }
    );
}

#[tokio::test]
async fn full_loss_drops_everything_and_counts() {
    let hub = MemorySignaling::new(MemorySignalingConfig::default().with_loss(1.0, 7));
    let (a, _a_events) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
    let (_b, _b_events) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
    for _ in 0..10 {
        a.send_to(peer(2), Bytes::from_static(b"x")).await.unwrap();
    }
    let stats = hub.stats();
    assert_eq!(stats.dropped_loss, 10);
    assert_eq!(stats.delivered, 0);
}

#[tokio::test]
async fn health_counts_what_a_session_published_even_when_lost() {
    let hub = MemorySignaling::new(MemorySignalingConfig::default().with_loss(1.0, 7));
    let (a, _a_events) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
    let (b, _b_events) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
    a.announce(Bytes::from_static(b"here")).await.unwrap();
    for _ in 0..3 {
        a.send_to(peer(2), Bytes::from_static(b"x")).await.unwrap();
    }
    assert_eq!(a.health().published, 4);
    assert_eq!(b.health().published, 0);
}

#[tokio::test]
async fn partial_loss_is_repeatable_for_a_seed() {
    async fn run(seed: u64) -> HubStats {
        let hub = MemorySignaling::new(MemorySignalingConfig::default().with_loss(0.3, seed));
        let (a, _a) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
        let (_b, _events) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
        for _ in 0..200 {
            a.send_to(peer(2), Bytes::from_static(b"x")).await.unwrap();
        }
        hub.stats()
    }
    let first = run(42).await;
    assert_eq!(first, run(42).await);
    assert!(
        first.dropped_loss > 20 && first.dropped_loss < 120,
        "{first:?}"
    );
    assert_eq!(
        first.dropped_loss + first.delivered + first.dropped_overflow,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn latency_delays_delivery() {
    let config =
        MemorySignalingConfig::default().with_latency(Duration::from_millis(50), Duration::ZERO);
    let hub = MemorySignaling::new(config);
    let (a, _a) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
    let (_b, mut b_events) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
    let start = tokio::time::Instant::now();
    a.send_to(peer(2), Bytes::from_static(b"late"))
        .await
        .unwrap();
    assert_eq!(
        hub.stats().delivered,
        0,
        "nothing delivered before the latency elapses"
    );
    let event = b_events.next().await.unwrap();
    assert!(matches!(event, SignalEvent::Message { .. }));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
}

#[tokio::test]
async fn topic_full_and_duplicate_join_are_refused() {
    let hub = MemorySignaling::new(MemorySignalingConfig::default().with_max_peers_per_topic(2));
    let (_a, _ae) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
    let dup = hub.join(JoinRequest::new(TOPIC, peer(1))).await;
    assert_eq!(dup.err(), Some(SignalError::AlreadyJoined));
    let (_b, _be) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
    let third = hub.join(JoinRequest::new(TOPIC, peer(3))).await;
    assert_eq!(third.err(), Some(SignalError::TopicFull { limit: 2 }));
}

#[tokio::test]
async fn dropped_session_vanishes_silently() {
    let hub = MemorySignaling::new(MemorySignalingConfig::default());
    let (a, a_events) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
    let (b, mut b_events) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
    drop((a, a_events));
    assert_eq!(hub.members(&TOPIC), 1);
    b.leave().await.unwrap();
    // No PeerGone for the vanished peer: the stream just ends.
    assert_eq!(b_events.next().await, None);
}

#[test]
fn invalid_config_is_refused() {
    let err =
        MemorySignaling::try_new(MemorySignalingConfig::default().with_loss(1.5, 0)).unwrap_err();
    assert!(matches!(err, SignalError::InvalidConfig(_)));
}

/// Stored presence outlives a crashed session until its lifetime ends, then is forgotten;
/// a full topic makes room by dropping the presence closest to expiring.
#[tokio::test(start_paused = true)]
async fn stored_presence_expires_and_is_bounded() {
    let config = MemorySignalingConfig::default()
        .with_presence_ttl(Duration::from_secs(60))
        .with_max_peers_per_topic(2);
    let hub = MemorySignaling::new(config);
    let seen_by_newcomer = |n: u8| {
        let hub = hub.clone();
        async move {
            let (session, mut events) = hub.join(JoinRequest::new(TOPIC, peer(n))).await.unwrap();
            let mut seen = Vec::new();
            while let Some(Some(SignalEvent::PeerSeen { peer, .. })) = events.next().now_or_never()
            {
                seen.push(peer);
            }
            seen.sort();
            session.leave().await.unwrap();
            seen
        }
    };
    let (a, a_events) = hub.join(JoinRequest::new(TOPIC, peer(1))).await.unwrap();
    a.announce(Bytes::from_static(b"a")).await.unwrap();
    drop((a, a_events));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        seen_by_newcomer(9).await,
        vec![peer(1)],
        "kept after the crash"
    );
    let (b, _b_events) = hub.join(JoinRequest::new(TOPIC, peer(2))).await.unwrap();
    b.announce(Bytes::from_static(b"b")).await.unwrap();
    // Full (two stored); the third presence evicts a's, the closest to expiring.
    let (c, _c_events) = hub.join(JoinRequest::new(TOPIC, peer(3))).await.unwrap();
    c.announce(Bytes::from_static(b"c")).await.unwrap();
    c.leave().await.unwrap();
    assert_eq!(
        seen_by_newcomer(9).await,
        vec![peer(2)],
        "a evicted, c left"
    );
    drop(b);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(seen_by_newcomer(9).await, Vec::<PeerId>::new(), "expired");
}
