//! Rooms through TURN only: two peers of a password room on the embedded relay, connected
//! through a coturn server on 127.0.0.1 with the relay-only policy; and a relay-only join
//! with a wrong TURN password failing with a typed error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use futures::StreamExt;
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::transport::TransportError;
use genos::transport::turn_server::{TURN_PASSWORD, TURN_USER, TurnServer};
use genos::{Genos, GenosBuilder, GenosError};

const TIMEOUT: Duration = Duration::from_secs(60);

fn builder(relay: &str, room: &str, turn: &TurnServer, password: &str) -> GenosBuilder {
    Genos::builder("genos-tests", room)
        .password("room secret")
        .relay(relay)
        .same_host_only()
        .turn(turn.url(), TURN_USER, password)
        .relay_only()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_room_connects_and_talks_through_turn_only() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let turn = TurnServer::start().await;
    let room = format!("turn-{}", rand::random::<u32>());
    let alice = builder(relay.url(), &room, &turn, TURN_PASSWORD)
        .join()
        .await
        .unwrap();
    let bob = builder(relay.url(), &room, &turn, TURN_PASSWORD)
        .join()
        .await
        .unwrap();
    // Each side must see the other: the two ends of a link come up a little apart, more so
    // through TURN, and a message sent before the sender's end is up reaches nobody.
    for (room, other) in [(&bob, alice.local_peer()), (&alice, bob.local_peer())] {
        let mut events = room.events();
        tokio::time::timeout(TIMEOUT, async {
            while room.peers().iter().all(|peer| *peer != other) {
                match events.next().await {
                    Some(_) => {}
                    None => panic!("the room's events ended"),
                }
            }
        })
        .await
        .expect("alice and bob connected through TURN");
    }
    let text = vec![7u8; 200 * 1024];
    let report = alice
        .channel("chat")
        .unwrap()
        .send(text.clone())
        .await
        .unwrap();
    assert_eq!(report.sent, vec![bob.local_peer()], "{report:?}");
    let received = tokio::time::timeout(TIMEOUT, bob.channel("chat").unwrap().recv())
        .await
        .expect("the message through TURN")
        .unwrap();
    assert_eq!(received.from, alice.local_peer());
    assert_eq!(&received.payload[..], &text[..]);
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_join_with_a_wrong_turn_password_is_refused_at_once() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let turn = TurnServer::start().await;
    let joined = builder(relay.url(), "turn-refused", &turn, "not the password")
        .join()
        .await;
    match joined {
        Err(GenosError::Transport(TransportError::TurnRefused { server, reason })) => {
            assert_eq!(server, turn.url());
            assert!(
                reason.contains("401") || reason.to_lowercase().contains("unauthorized"),
                "{reason}"
            );
        }
        other => panic!("expected a TURN refusal, got {other:?}"),
    }
    // Relay-only with no TURN server at all is a configuration error, not a silent failure.
    let joined = Genos::builder("genos-tests", "turn-none")
        .relay(relay.url())
        .same_host_only()
        .relay_only()
        .join()
        .await;
    assert!(
        matches!(
            joined,
            Err(GenosError::Transport(TransportError::InvalidConfig(_)))
        ),
        "{joined:?}"
    );
}
