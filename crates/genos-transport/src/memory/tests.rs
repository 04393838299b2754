use futures::StreamExt;
use std::time::Duration;

use super::*;

async fn pair(
    net: &MemoryTransport,
) -> (
    MemoryConnection,
    MemoryEvents,
    MemoryConnection,
    MemoryEvents,
) {
    let (a, mut a_events) = net.connect(Role::Offerer).await.unwrap();
    let (b, mut b_events) = net.connect(Role::Answerer).await.unwrap();
    let Some(ConnectionEvent::Signal(offer)) = a_events.next().await else {
        panic!("offerer must start with a signal")
    };
    b.handle_signal(offer).await.unwrap();
    let answer = loop {
        match b_events.next().await {
            Some(ConnectionEvent::Signal(answer)) => break answer,
            Some(_) => {}
            None => panic!("answerer events ended"),
        }
    };
    a.handle_signal(answer).await.unwrap();
    (a, a_events, b, b_events)
}

async fn accept(events: &mut MemoryEvents) -> MemoryChannel {
    loop {
        match events.next().await {
            Some(ConnectionEvent::ChannelOpened(channel)) => return channel,
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
}

/// A channel `a` opens and the other side accepts: (a's end, the other end).
async fn channel(
    a: &MemoryConnection,
    remote_events: &mut MemoryEvents,
    label: &str,
    reliability: Reliability,
) -> (MemoryChannel, MemoryChannel) {
    let left = a.open_channel(label, reliability).await.unwrap();
    (left, accept(remote_events).await)
}

#[tokio::test]
async fn dropped_link_fails_both_sides_and_ends_channels() {
    let net = MemoryTransport::new(MemoryTransportConfig::default());
    let (a, _ae, b, mut be) = pair(&net).await;
    let (left, right) = channel(&a, &mut be, "x", Reliability::ReliableOrdered).await;
    b.fault_drop_link();
    assert_eq!(a.state(), ConnectionState::Failed);
    assert_eq!(b.state(), ConnectionState::Failed);
    assert_eq!(right.recv().await, None);
    assert_eq!(
        left.send(Bytes::from_static(b"x")).await,
        Err(TransportError::ChannelClosed)
    );
}

#[tokio::test(start_paused = true)]
async fn stall_holds_delivery_and_fills_the_buffer() {
    let config = MemoryTransportConfig::default()
        .with_max_message_size(1000)
        .with_send_buffer(10 * (1000 + MESSAGE_OVERHEAD));
    let net = MemoryTransport::new(config);
    let (a, _ae, b, mut be) = pair(&net).await;
    let (left, right) = channel(&a, &mut be, "x", Reliability::ReliableOrdered).await;
    b.fault_stall(true);
    for _ in 0..10 {
        left.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
    }
    assert_eq!(left.buffered_amount(), 10 * (1000 + MESSAGE_OVERHEAD));
    let blocked = tokio::time::timeout(
        Duration::from_secs(5),
        left.send(Bytes::from(vec![2u8; 1000])),
    )
    .await;
    assert!(blocked.is_err(), "the eleventh send must wait for room");
    let stalled_recv = tokio::time::timeout(Duration::from_secs(5), right.recv()).await;
    assert!(stalled_recv.is_err(), "nothing is delivered while stalled");
    b.fault_stall(false);
    assert_eq!(right.recv().await.map(|m| m.len()), Some(1000));
    left.send(Bytes::from(vec![2u8; 1000])).await.unwrap();
}

#[tokio::test]
async fn unreliable_overflow_is_dropped_and_counted() {
    let config = MemoryTransportConfig::default()
        .with_max_message_size(100)
        .with_send_buffer(4 * (100 + MESSAGE_OVERHEAD));
    let net = MemoryTransport::new(config);
    let (a, _ae, _b, mut be) = pair(&net).await;
    let (left, right) = channel(&a, &mut be, "u", Reliability::UnreliableUnordered).await;
    for _ in 0..10 {
        left.send(Bytes::from(vec![0u8; 100])).await.unwrap();
    }
    let stats = a.stats().await;
    assert_eq!(stats.messages_sent, 4);
    assert_eq!(stats.messages_dropped, 6);
    assert_eq!(stats.buffered_bytes, 4 * (100 + MESSAGE_OVERHEAD as u64));
    for _ in 0..4 {
        right.recv().await.unwrap();
    }
    assert_eq!(a.stats().await.buffered_bytes, 0);
}

#[tokio::test]
async fn unreliable_loss_is_seeded() {
    async fn dropped(seed: u64) -> u64 {
        let net =
            MemoryTransport::new(MemoryTransportConfig::default().with_unreliable_loss(0.5, seed));
        let (a, _ae, _b, mut be) = pair(&net).await;
        let (left, right) = channel(&a, &mut be, "u", Reliability::UnreliableUnordered).await;
        for _ in 0..100 {
            left.send(Bytes::from_static(b"m")).await.unwrap();
        }
        drop(right);
        a.stats().await.messages_dropped
    }
    let first = dropped(3).await;
    assert_eq!(first, dropped(3).await);
    assert!((20..80).contains(&first), "{first}");
}

#[tokio::test(start_paused = true)]
async fn latency_holds_messages_and_jitter_never_reorders() {
    let latency = Duration::from_millis(20);
    let config = MemoryTransportConfig::default().with_latency(latency, Duration::from_millis(30));
    let net = MemoryTransport::new(config);
    let (a, _ae, _b, mut be) = pair(&net).await;
    let (left, right) = channel(&a, &mut be, "l", Reliability::ReliableOrdered).await;
    let sent_at = tokio::time::Instant::now();
    for i in 0..50u8 {
        left.send(Bytes::from(vec![i])).await.unwrap();
    }
    // Held: nothing arrives before the latency, and the send buffer still counts it.
    let early = tokio::time::timeout(latency - Duration::from_millis(1), right.recv()).await;
    assert!(early.is_err(), "a message arrived before the latency");
    assert!(a.stats().await.buffered_bytes > 0);
    for i in 0..50u8 {
        assert_eq!(right.recv().await.unwrap(), Bytes::from(vec![i]));
    }
    let took = sent_at.elapsed();
    assert!(took >= latency, "{took:?}");
    assert!(took <= Duration::from_millis(50), "{took:?}");
    assert_eq!(a.stats().await.buffered_bytes, 0);
}

#[tokio::test]
async fn pending_offers_are_bounded() {
    let net = MemoryTransport::new(MemoryTransportConfig::default().with_max_pending_offers(2));
    let _one = net.connect(Role::Offerer).await.unwrap();
    let two = net.connect(Role::Offerer).await.unwrap();
    let three = net.connect(Role::Offerer).await;
    assert!(matches!(three, Err(TransportError::ResourceLimit(_))));
    drop(two);
    assert!(
        net.connect(Role::Offerer).await.is_ok(),
        "a dropped offer frees its slot"
    );
}

#[tokio::test]
async fn offer_from_another_network_is_refused() {
    let one = MemoryTransport::new(MemoryTransportConfig::default());
    let two = MemoryTransport::new(MemoryTransportConfig::default());
    let (_a, mut a_events) = one.connect(Role::Offerer).await.unwrap();
    let (b, _b_events) = two.connect(Role::Answerer).await.unwrap();
    let Some(ConnectionEvent::Signal(offer)) = a_events.next().await else {
        panic!()
    };
    assert!(matches!(
        b.handle_signal(offer.clone()).await,
        Err(TransportError::InvalidSignal(_))
    ));
    // An offerer cannot take an offer either.
    let (c, _c_events) = one.connect(Role::Offerer).await.unwrap();
    assert!(matches!(
        c.handle_signal(offer).await,
        Err(TransportError::InvalidSignal(_))
    ));
}

#[tokio::test]
async fn dropping_a_connection_closes_the_remote() {
    let net = MemoryTransport::new(MemoryTransportConfig::default());
    let (a, a_events, b, _be) = pair(&net).await;
    drop((a, a_events));
    assert_eq!(b.state(), ConnectionState::Closed);
}

#[test]
fn invalid_config_is_refused() {
    let bad = MemoryTransportConfig::default().with_unreliable_loss(2.0, 0);
    assert!(matches!(
        MemoryTransport::try_new(bad),
        Err(TransportError::InvalidConfig(_))
    ));
    let small =
        MemoryTransport::try_new(MemoryTransportConfig::default().with_send_buffer(10)).unwrap();
    assert!(small.config().send_buffer >= small.config().max_message_size + MESSAGE_OVERHEAD);
}
