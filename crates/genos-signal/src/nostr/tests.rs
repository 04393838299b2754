//! Hostile input from a relay: a scripted WebSocket server sends garbage, forgeries, replays,
//! oversized events and a flood. Everything bad is dropped and counted; nothing panics; the
//! inbox stays bounded; the one good event still gets through.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::wire::{self, Content, ContentKind};
use super::*;

/// Serves one connection: waits for the REQ, then sends what `script` returns for its
/// subscription id, then reads until the client goes away.
async fn scripted_relay<F>(script: F) -> String
where
    F: FnOnce(&str) -> Vec<String> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        let subscription = loop {
            let Some(Ok(WsMessage::Text(text))) = ws.next().await else {
                return;
            };
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if value[0] == "REQ" {
                break value[1].as_str().unwrap().to_owned();
            }
        };
        for message in script(&subscription) {
            if ws.send(WsMessage::text(message)).await.is_err() {
                return;
            }
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    url
}

fn sealed_event(
    keys: &Keys,
    topic: &Topic,
    seal: &SealKey,
    kind: ContentKind,
    id: [u8; 16],
    timestamp_ms: u64,
) -> Event {
    let sender = PeerId::from_bytes(keys.public_key().to_bytes());
    let content = Content {
        version: wire::CONTENT_VERSION,
        kind,
        id,
        timestamp_ms,
        to: None,
        payload: b"presence".to_vec(),
    };
    let text = wire::seal_content(seal, topic, sender, &content).unwrap();
    EventBuilder::new(Kind::Custom(wire::kind_for(topic)), text)
        .tag(Tag::custom("x", [wire::room_tag(topic)]))
        .finalize(keys)
        .unwrap()
}

fn event_message(subscription: &str, event: &Event) -> String {
    RelayMessage::event(SubscriptionId::new(subscription), event.clone()).as_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_relay_input_is_dropped_and_counted() {
    const FLOOD: usize = 2000;
    let topic = Topic::from_bytes(rand::random());
    let room_key = SealKey::generate();
    let alice = Keys::generate();
    let other_key = SealKey::generate();
    let now = now_ms();

    let good = sealed_event(
        &alice,
        &topic,
        &room_key,
        ContentKind::Presence,
        [1; 16],
        now,
    );
    let replayed_content = sealed_event(
        &alice,
        &topic,
        &room_key,
        ContentKind::Presence,
        [1; 16],
        now,
    );
    let stale = sealed_event(
        &alice,
        &topic,
        &room_key,
        ContentKind::Presence,
        [2; 16],
        now - 3_600_000,
    );
    let foreign = sealed_event(
        &alice,
        &topic,
        &other_key,
        ContentKind::Presence,
        [3; 16],
        now,
    );
    let mut forged = serde_json::to_value(&good).unwrap();
    forged["sig"] = serde_json::Value::String("ab".repeat(64));
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64 + 100).to_be_bytes());
        flood.push(sealed_event(
            &alice,
            &topic,
            &room_key,
            ContentKind::Presence,
            id,
            now,
        ));
    }

    let url = scripted_relay(move |sub| {
        let mut script = vec![
            "not json at all".to_owned(),
            r#"["EVENT"]"#.to_owned(),
            format!(r#"["EVENT", "{sub}", {{"id": 5, "kind": "x"}}]"#),
            format!(r#"["EOSE", "{sub}"]"#),
            format!(r#"["EVENT", "{sub}", {forged}]"#),
            event_message(sub, &foreign),
            event_message(sub, &stale),
            event_message("someone-else", &good),
            format!(r#"["NOTICE", "{}"]"#, "x".repeat(200 * 1024)),
            event_message(sub, &good),
            event_message(sub, &replayed_content),
        ];
        script.extend(flood.iter().map(|event| event_message(sub, event)));
        script
    })
    .await;

    let me = Identity::generate();
    let peer = me.peer_id();
    let config = NostrConfig::with_relays([url]).with_inbox_capacity(64);
    let backend = NostrSignaling::new(me, config).unwrap();
    let request = JoinRequest::new(topic, peer).with_seal_key(room_key.clone());
    let (session, mut events) = backend.join(request).await.unwrap();

    // Wait until the relay's whole script has been taken in or dropped, and the router has
    // judged everything taken in. Events for our subscription: forged, foreign, stale, good,
    // replayed and the flood; plus five messages that are not events of ours at all.
    let ours = FLOOD as u64 + 5;
    let garbage = 5;
    let processed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let health = session.relays()[0].clone();
            let stats = session.stats();
            let judged = stats.delivered
                + stats.dropped_overflow
                + stats.duplicates
                + stats.dropped_invalid
                + stats.dropped_unsealed
                + stats.dropped_replay;
            if health.events_received + health.messages_dropped == ours + garbage
                && judged == health.events_received
            {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let health =
        processed.unwrap_or_else(|_| panic!("{:?} {:?}", session.stats(), session.relays()));

    let stats = session.stats();
    assert_eq!(stats.dropped_invalid, 1, "the forged signature: {stats:?}");
    assert_eq!(
        stats.dropped_unsealed, 1,
        "sealed with another key: {stats:?}"
    );
    assert_eq!(stats.dropped_replay, 1, "an hour old: {stats:?}");
    assert_eq!(stats.duplicates, 1, "the same content again: {stats:?}");
    assert_eq!(stats.delivered, 64, "the inbox bound: {stats:?}");
    assert_eq!(
        stats.dropped_overflow,
        health.events_received - 64 - 4,
        "{stats:?}"
    );
    // Beyond the bounded queue between relays and router, the flood is dropped at the relay.
    assert!(health.events_received <= ours, "{health:?}");
    assert_eq!(
        health.messages_dropped,
        garbage + (ours - health.events_received),
        "{health:?}"
    );
    let dropped = stats.dropped_overflow;

    // The first event in the inbox is the good one; the overflow is reported as Lagged.
    let first = events.next().await.unwrap();
    assert_eq!(first, SignalEvent::Lagged { dropped });
    let second = events.next().await.unwrap();
    assert_eq!(
        second,
        SignalEvent::PeerSeen {
            peer: PeerId::from_bytes(alice.public_key().to_bytes()),
            presence: Bytes::from_static(b"presence")
        }
    );
    session.leave().await.unwrap();
}

/// A relay that ignores our filter and floods valid events of another room (signed, sealed
/// for that room, half of them even of our kind): every one is dropped before the queue that
/// honest events share, so the one honest event after the flood arrives, with no overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_another_rooms_events_never_reaches_the_inbox() {
    const FLOOD: usize = 5_000;
    let topic = Topic::from_bytes(rand::random());
    let room_key = SealKey::generate();
    let other_topic = Topic::from_bytes(rand::random());
    let other_key = SealKey::generate();
    let alice = Keys::generate();
    let mallory = Keys::generate();
    let now = now_ms();
    let good = sealed_event(
        &alice,
        &topic,
        &room_key,
        ContentKind::Presence,
        [1; 16],
        now,
    );
    let flood: Vec<Event> = (0..FLOOD)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let event = sealed_event(
                &mallory,
                &other_topic,
                &other_key,
                ContentKind::Presence,
                id,
                now,
            );
            if i % 2 == 0 {
                return event;
            }
            // Our room's kind, the other room's tag.
            EventBuilder::new(Kind::Custom(wire::kind_for(&topic)), event.content)
                .tag(Tag::custom("x", [wire::room_tag(&other_topic)]))
                .finalize(&mallory)
                .unwrap()
        })
        .collect();
    let url = scripted_relay(move |sub| {
        let mut script = vec![format!(r#"["EOSE", "{sub}"]"#)];
        script.extend(flood.iter().map(|event| event_message(sub, event)));
        script.push(event_message(sub, &good));
        script
    })
    .await;

    let me = Identity::generate();
    let peer = me.peer_id();
    let config = NostrConfig::with_relays([url]).with_inbox_capacity(64);
    let backend = NostrSignaling::new(me, config).unwrap();
    let request = JoinRequest::new(topic, peer).with_seal_key(room_key);
    let (session, mut events) = backend.join(request).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("the honest event never came")
        .unwrap();
    assert_eq!(
        first,
        SignalEvent::PeerSeen {
            peer: PeerId::from_bytes(alice.public_key().to_bytes()),
            presence: Bytes::from_static(b"presence")
        }
    );
    let health = session.relays()[0].clone();
    assert_eq!(health.messages_dropped, FLOOD as u64, "{health:?}");
    assert_eq!(health.events_received, 1, "{health:?}");
    // `delivered` is counted just after the event is queued: wait for it, then check that
    // the honest event is the only one counted.
    let counted = tokio::time::timeout(Duration::from_secs(30), async {
        while session.stats().delivered == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "the delivered event was never counted");
    let stats = session.stats();
    assert_eq!(stats.delivered, 1, "{stats:?}");
    assert_eq!(stats.dropped_overflow, 0, "{stats:?}");
    session.leave().await.unwrap();
}

/// Answers every EVENT with `OK true`, but only after `delay`.
async fn sluggish_relay(delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let (replies, mut reply_rx) = tokio::sync::mpsc::channel::<String>(64);
        tokio::spawn(async move {
            while let Some(reply) = reply_rx.recv().await {
                if sink.send(WsMessage::text(reply)).await.is_err() {
                    return;
                }
            }
        });
        while let Some(Ok(WsMessage::Text(text))) = stream.next().await {
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if value[0] == "REQ" {
                let sub = value[1].as_str().unwrap().to_owned();
                replies.send(format!(r#"["EOSE","{sub}"]"#)).await.unwrap();
            } else if value[0] == "EVENT" {
                let id = value[1]["id"].as_str().unwrap().to_owned();
                let replies = replies.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = replies.send(format!(r#"["OK","{id}",true,""]"#)).await;
                });
            }
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_relay_is_muted() {
    let url = sluggish_relay(Duration::from_millis(300)).await;
    let identity = Identity::generate();
    let peer = identity.peer_id();
    let mut config = NostrConfig::with_relays([url]);
    config.slow_relay_threshold = Duration::from_millis(100);
    let backend = NostrSignaling::new(identity, config).unwrap();
    let (session, _events) = backend
        .join(JoinRequest::new(Topic::from_bytes(rand::random()), peer))
        .await
        .unwrap();
    for _ in 0..3 {
        session
            .send_to(PeerId::from_bytes([1; 32]), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let muted = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let RelayState::Muted(MuteReason::Slow(latency)) = &session.relays()[0].state {
                return *latency;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow relay was never muted");
    assert!(muted > Duration::from_millis(100), "{muted:?}");
}

fn stored_event(
    keys: &Keys,
    topic: &Topic,
    seal: &SealKey,
    kind: ContentKind,
    created_at: u64,
    expires: u64,
    payload: &[u8],
) -> Event {
    let sender = PeerId::from_bytes(keys.public_key().to_bytes());
    let content = Content {
        version: wire::CONTENT_VERSION,
        kind,
        id: rand::random(),
        timestamp_ms: created_at * 1000,
        to: None,
        payload: payload.to_vec(),
    };
    let text = wire::seal_content(seal, topic, sender, &content).unwrap();
    let room = wire::room_tag(topic);
    EventBuilder::new(Kind::Custom(wire::presence_kind_for(topic)), text)
        .tag(Tag::identifier(room.clone()))
        .tag(Tag::custom("x", [room]))
        .tag(Tag::expiration(Timestamp::from(expires)))
        .custom_created_at(Timestamp::from(created_at))
        .finalize(keys)
        .unwrap()
}

/// Stored presence from a relay: expired presence is dropped by the client (some relays
/// serve it), the same event from a second copy and an older one are not reported again, a
/// tombstone reports the peer gone, and presence without an expiration is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_presence_is_checked_for_expiry_and_freshness() {
    let topic = Topic::from_bytes(rand::random());
    let room_key = SealKey::generate();
    let (alice, bob, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
    let now = now_ms() / 1000;
    let expired = stored_event(
        &alice,
        &topic,
        &room_key,
        ContentKind::Presence,
        now - 700,
        now - 40,
        b"old",
    );
    let fresh = stored_event(
        &bob,
        &topic,
        &room_key,
        ContentKind::Presence,
        now - 100,
        now + 560,
        b"bob v2",
    );
    let older = stored_event(
        &bob,
        &topic,
        &room_key,
        ContentKind::Presence,
        now - 400,
        now + 260,
        b"bob v1",
    );
    let present = stored_event(
        &carol,
        &topic,
        &room_key,
        ContentKind::Presence,
        now - 10,
        now + 650,
        b"carol",
    );
    let tombstone = stored_event(
        &carol,
        &topic,
        &room_key,
        ContentKind::Bye,
        now - 5,
        now + 55,
        b"",
    );
    let sender = PeerId::from_bytes(alice.public_key().to_bytes());
    let content = Content {
        version: wire::CONTENT_VERSION,
        kind: ContentKind::Presence,
        id: [9; 16],
        timestamp_ms: now * 1000,
        to: None,
        payload: b"no expiry".to_vec(),
    };
    let text = wire::seal_content(&room_key, &topic, sender, &content).unwrap();
    let unexpiring = EventBuilder::new(Kind::Custom(wire::presence_kind_for(&topic)), text)
        .tag(Tag::identifier(wire::room_tag(&topic)))
        .tag(Tag::custom("x", [wire::room_tag(&topic)]))
        .finalize(&alice)
        .unwrap();
    let url = scripted_relay(move |sub| {
        vec![
            event_message(sub, &expired),
            event_message(sub, &fresh),
            event_message(sub, &fresh),
            event_message(sub, &older),
            event_message(sub, &unexpiring),
            event_message(sub, &present),
            format!(r#"["EOSE", "{sub}"]"#),
            event_message(sub, &tombstone),
        ]
    })
    .await;
    let me = Identity::generate();
    let peer = me.peer_id();
    let backend = NostrSignaling::new(me, NostrConfig::with_relays([url])).unwrap();
    let request = JoinRequest::new(topic, peer).with_seal_key(room_key);
    let (session, mut events) = backend.join(request).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("the relay's events")
            .unwrap();
        seen.push(event);
    }
    let bob_id = PeerId::from_bytes(bob.public_key().to_bytes());
    let carol_id = PeerId::from_bytes(carol.public_key().to_bytes());
    assert_eq!(
        seen,
        vec![
            SignalEvent::PeerSeen {
                peer: bob_id,
                presence: Bytes::from_static(b"bob v2")
            },
            SignalEvent::PeerSeen {
                peer: carol_id,
                presence: Bytes::from_static(b"carol")
            },
            SignalEvent::PeerGone { peer: carol_id },
        ]
    );
    let stats = session.stats();
    assert_eq!(stats.dropped_expired, 1, "{stats:?}");
    assert_eq!(
        stats.duplicates, 2,
        "the second copy and the older one: {stats:?}"
    );
    assert_eq!(stats.dropped_invalid, 1, "no expiration: {stats:?}");
    session.leave().await.unwrap();
}

/// A relay that refuses stored events (`blocked:` for addressable kinds) and acknowledges
/// everything else; reports the kind and content of every event it gets.
async fn relay_refusing_stored_events() -> (String, tokio::sync::mpsc::Receiver<(u16, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (accepted, accepted_rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        while let Some(Ok(WsMessage::Text(text))) = ws.next().await {
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            let reply = if value[0] == "REQ" {
                format!(r#"["EOSE","{}"]"#, value[1].as_str().unwrap())
            } else if value[0] == "EVENT" {
                let id = value[1]["id"].as_str().unwrap();
                let kind = value[1]["kind"].as_u64().unwrap();
                let content = value[1]["content"].as_str().unwrap().to_owned();
                let _ = accepted.send((kind as u16, content)).await;
                if kind >= 30_000 {
                    format!(r#"["OK","{id}",false,"blocked: no stored events here"]"#)
                } else {
                    format!(r#"["OK","{id}",true,""]"#)
                }
            } else {
                continue;
            };
            if ws.send(WsMessage::text(reply)).await.is_err() {
                return;
            }
        }
    });
    (url, accepted_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refusing_stored_presence_gets_ephemeral_presence() {
    let (url, mut accepted) = relay_refusing_stored_events().await;
    let identity = Identity::generate();
    let peer = identity.peer_id();
    let topic = Topic::from_bytes(rand::random());
    let backend = NostrSignaling::new(identity, NostrConfig::with_relays([url])).unwrap();
    let (session, _events) = backend.join(JoinRequest::new(topic, peer)).await.unwrap();
    // The kinds under which each presence payload reached the relay, until `payload` came
    // as an ephemeral event.
    let key = wire::fallback_key(&topic);
    let mut kinds_until_ephemeral = async |payload: &[u8]| {
        let mut kinds = Vec::new();
        loop {
            let (kind, content) = tokio::time::timeout(Duration::from_secs(20), accepted.recv())
                .await
                .expect("presence at the relay")
                .unwrap();
            let opened = wire::open_content(&key, &topic, peer, &content, 1 << 16).unwrap();
            if opened.payload == payload {
                kinds.push(kind);
                if kind == wire::kind_for(&topic) {
                    return kinds;
                }
            }
        }
    };
    session.announce(Bytes::from_static(b"here")).await.unwrap();
    // Stored first (twice when the re-announce after the subscription races the announce),
    // refused, then ephemeral.
    let kinds = kinds_until_ephemeral(b"here").await;
    let (ephemeral, stored) = kinds.split_last().unwrap();
    assert_eq!(*ephemeral, wire::kind_for(&topic));
    assert!(
        !stored.is_empty() && stored.iter().all(|k| *k == wire::presence_kind_for(&topic)),
        "{kinds:?}"
    );
    let health = &session.relays()[0];
    assert!(!health.stores_presence, "{health:?}");
    assert_eq!(health.state, RelayState::Connected, "not muted: {health:?}");
    // From now on presence goes out ephemeral at once, with no refusal first.
    session
        .announce(Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(
        kinds_until_ephemeral(b"again").await,
        [wire::kind_for(&topic)]
    );
    session.leave().await.unwrap();
}

/// A relay that passes on a ~1 MB event between honest ones (as one with a looser size cap
/// than ours would): the big one is skipped and counted, the connection stays, the honest
/// events around it arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_relay_message_is_skipped_without_losing_the_connection() {
    let topic = Topic::from_bytes(rand::random());
    let room_key = SealKey::generate();
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let now = now_ms();
    let before = sealed_event(
        &alice,
        &topic,
        &room_key,
        ContentKind::Presence,
        [1; 16],
        now,
    );
    let after = sealed_event(&bob, &topic, &room_key, ContentKind::Presence, [2; 16], now);
    let url = scripted_relay(move |sub| {
        let huge = format!(
            r#"["EVENT", "{sub}", {{"content": "{}"}}]"#,
            "x".repeat(1 << 20)
        );
        vec![
            format!(r#"["EOSE", "{sub}"]"#),
            event_message(sub, &before),
            huge.clone(),
            event_message(sub, &after),
            huge,
        ]
    })
    .await;
    let me = Identity::generate();
    let peer = me.peer_id();
    let backend = NostrSignaling::new(me, NostrConfig::with_relays([url])).unwrap();
    let request = JoinRequest::new(topic, peer).with_seal_key(room_key);
    let (session, mut events) = backend.join(request).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(SignalEvent::PeerSeen { peer, .. })) => seen.push(peer),
            Ok(Some(_)) => {}
            other => panic!("{other:?}: {:?}", session.relays()),
        }
    }
    let key = |keys: &Keys| PeerId::from_bytes(keys.public_key().to_bytes());
    assert_eq!(seen, vec![key(&alice), key(&bob)]);
    let health = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let health = session.relays()[0].clone();
            if health.messages_dropped >= 2 {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{:?}", session.relays()));
    assert_eq!(health.messages_dropped, 2, "{health:?}");
    assert_eq!(health.connects, 1, "the connection was dropped: {health:?}");
    assert_eq!(health.state, RelayState::Connected, "{health:?}");
    session.leave().await.unwrap();
}
