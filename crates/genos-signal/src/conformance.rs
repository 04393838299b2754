//! The `Signaling` conformance suite: one set of checks every backend must pass.
//!
//! A backend's tests implement [`Harness`] (how to make clients of one shared medium) and
//! invoke [`signaling_conformance!`](crate::signaling_conformance), which expands to one
//! `#[tokio::test]` per check. The calling crate needs `tokio` with the `macros` and
//! `rt-multi-thread` features as a dev-dependency.
//!
//! ```text
//! struct MemoryHarness;
//! impl genos_signal::conformance::Harness for MemoryHarness { ... }
//! genos_signal::signaling_conformance!(MemoryHarness);
//! ```
//!
//! Checks never depend on wall-clock speed: absence of a message is shown by a later marker
//! message arriving first, and every wait is bounded by [`TIMEOUT`] only so a broken backend
//! cannot hang the run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_crypto::PeerId;

use crate::{JoinRequest, SignalError, SignalEvent, SignalSession, Signaling, Topic};

/// Upper bound on any single wait, so a broken backend fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How the suite makes clients of one shared medium.
pub trait Harness: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Signaling;

    /// A new client of the shared medium (a new hub handle, relay connection pool, ...) and
    /// the peer id it joins as (backends that sign, like Nostr, own the identity).
    fn backend(&self) -> impl Future<Output = (Self::Backend, PeerId)> + Send;

    /// Waits until everything sent so far has reached the sessions' inboxes. The default
    /// waits half a second; backends that can tell should say so exactly.
    fn settle(&self) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(Duration::from_millis(500))
    }
}

type Session<H> = <<H as Harness>::Backend as Signaling>::Session;
type Events<H> = <<H as Harness>::Backend as Signaling>::Events;

/// A random peer id, for backends that do not sign (the in-memory hub).
pub fn random_peer() -> PeerId {
    PeerId::from_bytes(rand::random())
}

/// A topic unique to one check, so checks sharing a medium do not see each other.
pub fn test_topic(check: &str) -> Topic {
    let mut bytes = [0u8; 32];
    let salt: u64 = rand::random();
    for (i, b) in check.bytes().chain(salt.to_le_bytes()).enumerate() {
        if let Some(slot) = bytes.get_mut(i % 32) {
            *slot ^= b.wrapping_add(i as u8);
        }
    }
    Topic::from_bytes(bytes)
}

async fn join<H: Harness>(harness: &H, topic: Topic) -> (Session<H>, Events<H>) {
    let (backend, peer) = harness.backend().await;
    backend
        .join(JoinRequest::new(topic, peer))
        .await
        .expect("join")
}

/// Waits for the first event that `pick` accepts, failing on timeout or end of stream.
pub async fn wait_for<E, T>(
    events: &mut E,
    what: &str,
    mut pick: impl FnMut(SignalEvent) -> Option<T>,
) -> T
where
    E: futures::Stream<Item = SignalEvent> + Unpin,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(event) {
                    return found;
                }
            }
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn wait_message<E>(events: &mut E, from: PeerId, payload: &[u8])
where
    E: futures::Stream<Item = SignalEvent> + Unpin,
{
    wait_for(events, "a message", |event| match event {
        SignalEvent::Message {
            from: f,
            payload: p,
        } if f == from && p == payload => Some(()),
        _ => None,
    })
    .await
}

/// Two peers that announce see each other's presence, and never their own.
pub async fn presence_is_seen<H: Harness>(harness: &H) {
    let topic = test_topic("presence");
    let (a, mut a_events) = join(harness, topic).await;
    let (b, mut b_events) = join(harness, topic).await;
    a.announce(Bytes::from_static(b"presence of a"))
        .await
        .unwrap();
    b.announce(Bytes::from_static(b"presence of b"))
        .await
        .unwrap();
    let seen_by_a = wait_for(&mut a_events, "b's presence", |event| match event {
        SignalEvent::PeerSeen { peer, presence } => {
            assert_ne!(peer, a.local_peer(), "a session heard its own presence");
            Some((peer, presence))
        }
        _ => None,
    })
    .await;
    assert_eq!(
        seen_by_a,
        (b.local_peer(), Bytes::from_static(b"presence of b"))
    );
    let seen_by_b = wait_for(&mut b_events, "a's presence", |event| match event {
        SignalEvent::PeerSeen { peer, presence } if peer == a.local_peer() => Some(presence),
        SignalEvent::PeerSeen { peer, .. } => panic!("b heard unexpected presence of {peer:?}"),
        _ => None,
    })
    .await;
    assert_eq!(seen_by_b, Bytes::from_static(b"presence of a"));
}

/// Announcing again replaces the presence others see.
pub async fn presence_can_be_updated<H: Harness>(harness: &H) {
    let topic = test_topic("presence-update");
    let (a, _a_events) = join(harness, topic).await;
    let (_b, mut b_events) = join(harness, topic).await;
    a.announce(Bytes::from_static(b"v1")).await.unwrap();
    a.announce(Bytes::from_static(b"v2")).await.unwrap();
    wait_for(&mut b_events, "the updated presence", |event| match event {
        SignalEvent::PeerSeen { presence, .. } if presence == "v2" => Some(()),
        _ => None,
    })
    .await;
}

/// A newcomer learns at once of peers that announced before it joined: presence is stored,
/// so nobody has to announce again for a newcomer to find them.
pub async fn newcomer_learns_existing_presence<H: Harness>(harness: &H) {
    let topic = test_topic("newcomer");
    let (a, _a_events) = join(harness, topic).await;
    a.announce(Bytes::from_static(b"old-timer")).await.unwrap();
    let (_b, mut b_events) = join(harness, topic).await;
    let peer = wait_for(&mut b_events, "the earlier presence", |event| match event {
        SignalEvent::PeerSeen { peer, .. } => Some(peer),
        _ => None,
    })
    .await;
    assert_eq!(peer, a.local_peer());
}

/// Everything `events` reports up to the message `marker` from `from`. The marker is sent
/// after the newcomer joined, so it comes after whatever the medium had stored for it.
async fn events_until_marker<E>(events: &mut E, from: PeerId, marker: &[u8]) -> Vec<SignalEvent>
where
    E: futures::Stream<Item = SignalEvent> + Unpin,
{
    let mut seen = Vec::new();
    wait_for(events, "the marker", |event| match &event {
        SignalEvent::Message { from: f, payload } if *f == from && payload == marker => Some(()),
        _ => {
            seen.push(event);
            None
        }
    })
    .await;
    seen
}

/// A newcomer is offered a peer's latest presence only: each announce replaces the last.
pub async fn newcomer_sees_only_the_latest_presence<H: Harness>(harness: &H) {
    let topic = test_topic("latest");
    let (a, _a_events) = join(harness, topic).await;
    a.announce(Bytes::from_static(b"v1")).await.unwrap();
    a.announce(Bytes::from_static(b"v2")).await.unwrap();
    harness.settle().await;
    // A store may take the update in after `settle` (nostr-rs-relay writes in batches; under
    // load one CI run saw only v1 half a second on): a newcomer that sees the old presence
    // alone asks again, for at most 20 s. Never both, and v2 in the end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (b, mut b_events) = join(harness, topic).await;
        a.send_to(b.local_peer(), Bytes::from_static(b"marker"))
            .await
            .unwrap();
        let seen = events_until_marker(&mut b_events, a.local_peer(), b"marker").await;
        let presences: Vec<Bytes> = seen
            .into_iter()
            .filter_map(|event| match event {
                SignalEvent::PeerSeen { peer, presence } if peer == a.local_peer() => {
                    Some(presence)
                }
                _ => None,
            })
            .collect();
        let _ = b.leave().await;
        if presences == [Bytes::from_static(b"v1")] && tokio::time::Instant::now() < deadline {
            harness.settle().await;
            continue;
        }
        assert_eq!(presences, vec![Bytes::from_static(b"v2")]);
        return;
    }
}

/// A peer that left is not offered to newcomers (its presence is gone, not just stale).
pub async fn departed_peer_is_not_offered_to_newcomers<H: Harness>(harness: &H) {
    let topic = test_topic("departed");
    let (a, _a_events) = join(harness, topic).await;
    let (witness, _witness_events) = join(harness, topic).await;
    a.announce(Bytes::from_static(b"leaving soon"))
        .await
        .unwrap();
    witness
        .announce(Bytes::from_static(b"staying"))
        .await
        .unwrap();
    harness.settle().await;
    a.leave().await.unwrap();
    harness.settle().await;
    let (b, mut b_events) = join(harness, topic).await;
    witness
        .send_to(b.local_peer(), Bytes::from_static(b"marker"))
        .await
        .unwrap();
    let seen = events_until_marker(&mut b_events, witness.local_peer(), b"marker").await;
    assert!(
        seen.iter().any(
            |e| matches!(e, SignalEvent::PeerSeen { peer, .. } if *peer == witness.local_peer())
        ),
        "the newcomer must be offered the peer that stayed: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, SignalEvent::PeerSeen { peer, .. } if *peer == a.local_peer())),
        "the newcomer was offered a peer that left: {seen:?}"
    );
}

/// A peer that vanished without leaving (a crash) is still offered to newcomers until its
/// presence expires: the medium cannot tell a crash from a quiet peer.
pub async fn crashed_peer_is_offered_until_expiry<H: Harness>(harness: &H) {
    let topic = test_topic("crashed");
    let (a, a_events) = join(harness, topic).await;
    let crashed = a.local_peer();
    a.announce(Bytes::from_static(b"about to crash"))
        .await
        .unwrap();
    harness.settle().await;
    drop((a, a_events));
    let (_b, mut b_events) = join(harness, topic).await;
    let presence = wait_for(
        &mut b_events,
        "the crashed peer's presence",
        |event| match event {
            SignalEvent::PeerSeen { peer, presence } if peer == crashed => Some(presence),
            _ => None,
        },
    )
    .await;
    assert_eq!(presence, Bytes::from_static(b"about to crash"));
}

/// A directed message reaches its addressee intact, and nobody else.
pub async fn direct_message_reaches_only_addressee<H: Harness>(harness: &H) {
    let topic = test_topic("direct");
    let (a, _a_events) = join(harness, topic).await;
    let (b, mut b_events) = join(harness, topic).await;
    let (c, mut c_events) = join(harness, topic).await;
    a.send_to(b.local_peer(), Bytes::from_static(b"for b only"))
        .await
        .unwrap();
    wait_message(&mut b_events, a.local_peer(), b"for b only").await;
    // The marker is sent after the secret: if c had been sent the secret, a backend that
    // preserves nothing may still deliver it first, so check every message up to the marker.
    a.send_to(c.local_peer(), Bytes::from_static(b"marker"))
        .await
        .unwrap();
    wait_for(&mut c_events, "the marker", |event| match event {
        SignalEvent::Message { payload, .. } if payload == "marker" => Some(()),
        SignalEvent::Message { payload, .. } => panic!("c received {payload:?} meant for b"),
        _ => None,
    })
    .await;
}

/// Sessions on different topics never see each other.
pub async fn topics_are_isolated<H: Harness>(harness: &H) {
    let one = test_topic("isolated-one");
    let two = test_topic("isolated-two");
    let (a, _a_events) = join(harness, one).await;
    let (b, mut b_events) = join(harness, two).await;
    let (c, _c_events) = join(harness, two).await;
    a.announce(Bytes::from_static(b"topic one")).await.unwrap();
    a.send_to(b.local_peer(), Bytes::from_static(b"across topics"))
        .await
        .unwrap();
    c.announce(Bytes::from_static(b"topic two")).await.unwrap();
    c.send_to(b.local_peer(), Bytes::from_static(b"marker"))
        .await
        .unwrap();
    wait_for(&mut b_events, "the marker", |event| match event {
        SignalEvent::PeerSeen { peer, .. } => {
            assert_eq!(peer, c.local_peer(), "presence leaked across topics");
            None
        }
        SignalEvent::Message { from, payload } => {
            assert_eq!(
                from,
                c.local_peer(),
                "message {payload:?} leaked across topics"
            );
            Some(())
        }
        _ => None,
    })
    .await;
}

/// Many messages arrive exactly once and intact (in any order).
pub async fn messages_arrive_exactly_once<H: Harness>(harness: &H) {
    let topic = test_topic("exactly-once");
    let (a, _a_events) = join(harness, topic).await;
    let (b, mut b_events) = join(harness, topic).await;
    // Stay below the inbox bound: this check is about delivery, not overflow.
    let count = 100.min(b.limits().inbox_capacity.saturating_sub(2));
    for i in 0..count {
        a.send_to(b.local_peer(), Bytes::from(format!("message {i}")))
            .await
            .unwrap();
    }
    a.send_to(b.local_peer(), Bytes::from_static(b"end"))
        .await
        .unwrap();
    let mut got = HashSet::new();
    let mut end_seen = false;
    while got.len() < count || !end_seen {
        wait_for(&mut b_events, "the messages", |event| match event {
            SignalEvent::Message { payload, .. } if payload == "end" => {
                end_seen = true;
                Some(())
            }
            SignalEvent::Message { payload, .. } => {
                let text = String::from_utf8(payload.to_vec()).unwrap();
                assert!(got.insert(text.clone()), "{text} delivered twice");
                Some(())
            }
            SignalEvent::Lagged { dropped } => panic!("{dropped} events dropped below the bound"),
            _ => None,
        })
        .await;
    }
    let expected: HashSet<String> = (0..count).map(|i| format!("message {i}")).collect();
    assert_eq!(got, expected);
}

/// A payload at the size limit is delivered intact; one byte more is refused, typed.
pub async fn message_size_limit_is_enforced<H: Harness>(harness: &H) {
    let topic = test_topic("size-limit");
    let (a, _a_events) = join(harness, topic).await;
    let (b, mut b_events) = join(harness, topic).await;
    let limit = a.limits().max_message_size;
    let at_limit: Bytes = (0..limit)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    a.send_to(b.local_peer(), at_limit.clone()).await.unwrap();
    wait_message(&mut b_events, a.local_peer(), &at_limit).await;
    let over = Bytes::from(vec![0u8; limit + 1]);
    assert_eq!(
        a.send_to(b.local_peer(), over.clone()).await,
        Err(SignalError::MessageTooLarge {
            size: limit + 1,
            limit
        })
    );
    assert_eq!(
        a.announce(over).await,
        Err(SignalError::MessageTooLarge {
            size: limit + 1,
            limit
        })
    );
}

/// Leaving tells the others, ends the stream, and refuses further sends.
pub async fn leave_is_seen_and_final<H: Harness>(harness: &H) {
    let topic = test_topic("leave");
    let (a, mut a_events) = join(harness, topic).await;
    let (b, mut b_events) = join(harness, topic).await;
    // Make sure both are fully subscribed before the goodbye.
    a.send_to(b.local_peer(), Bytes::from_static(b"ready"))
        .await
        .unwrap();
    wait_message(&mut b_events, a.local_peer(), b"ready").await;
    a.leave().await.unwrap();
    a.leave().await.expect("leave is idempotent");
    let gone = wait_for(&mut b_events, "a's goodbye", |event| match event {
        SignalEvent::PeerGone { peer } => Some(peer),
        _ => None,
    })
    .await;
    assert_eq!(gone, a.local_peer());
    assert_eq!(
        a.send_to(b.local_peer(), Bytes::from_static(b"late")).await,
        Err(SignalError::Left)
    );
    assert_eq!(
        a.announce(Bytes::from_static(b"late")).await,
        Err(SignalError::Left)
    );
    let ended =
        tokio::time::timeout(TIMEOUT, async { while a_events.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the event stream must end after leave");
}

/// A full inbox drops, reports the drop as `Lagged`, and keeps what fit.
pub async fn inbox_overflow_is_reported<H: Harness>(harness: &H) {
    let topic = test_topic("overflow");
    let (a, _a_events) = join(harness, topic).await;
    let (b, mut b_events) = join(harness, topic).await;
    let capacity = b.limits().inbox_capacity;
    let extra = 10;
    for i in 0..capacity + extra {
        a.send_to(b.local_peer(), Bytes::from(format!("{i}")))
            .await
            .unwrap();
    }
    a.send_to(b.local_peer(), Bytes::from_static(b"after"))
        .await
        .unwrap();
    // Let every message reach the inbox before reading, or the reader makes room.
    harness.settle().await;
    let mut messages = 0usize;
    let mut dropped = 0u64;
    let collect = async {
        while messages as u64 + dropped < (capacity + extra + 1) as u64 {
            match b_events.next().await {
                Some(SignalEvent::Message { .. }) => messages += 1,
                Some(SignalEvent::Lagged { dropped: n }) => dropped += n,
                Some(_) => {}
                None => break,
            }
        }
    };
    tokio::time::timeout(TIMEOUT, collect)
        .await
        .expect("timed out reading the inbox");
    assert!(dropped > 0, "overflow must be reported as Lagged");
    assert!(
        messages <= capacity,
        "{messages} events queued beyond the capacity {capacity}"
    );
    assert_eq!(messages as u64 + dropped, (capacity + extra + 1) as u64);
}

/// Ten peers announcing all see each other.
pub async fn ten_peers_see_each_other<H: Harness>(harness: &H) {
    let topic = test_topic("ten");
    let mut peers = Vec::new();
    for _ in 0..10 {
        peers.push(join(harness, topic).await);
    }
    for (session, _) in &peers {
        session.announce(Bytes::from_static(b"here")).await.unwrap();
    }
    for (session, events) in &mut peers {
        let me = session.local_peer();
        let mut seen = HashSet::new();
        while seen.len() < 9 {
            let peer = wait_for(events, "nine peers", |event| match event {
                SignalEvent::PeerSeen { peer, .. } => Some(peer),
                _ => None,
            })
            .await;
            assert_ne!(peer, me);
            seen.insert(peer);
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each given a fresh harness from
/// `$harness` (an expression).
#[macro_export]
macro_rules! signaling_conformance {
    ($harness:expr) => {
        $crate::signaling_conformance!(@tests $harness;
            presence_is_seen,
            presence_can_be_updated,
            newcomer_learns_existing_presence,
            newcomer_sees_only_the_latest_presence,
            departed_peer_is_not_offered_to_newcomers,
            crashed_peer_is_offered_until_expiry,
            direct_message_reaches_only_addressee,
            topics_are_isolated,
            messages_arrive_exactly_once,
            message_size_limit_is_enforced,
            leave_is_seen_and_final,
            inbox_overflow_is_reported,
            ten_peers_see_each_other,
        );
    };
    (@tests $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $harness;
                $crate::conformance::$check(&harness).await;
            }
        )*
    };
}
