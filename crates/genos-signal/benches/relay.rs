//! Signaling benchmarks through the embedded relay, each beside a baseline from the same run:
//!
//! 1. publish-to-delivery latency of `NostrSignaling::send_to` against a raw WebSocket client
//!    publishing a pre-signed event to another raw client through the same relay;
//! 2. events published per join and per minute in steady state, against a session announcing
//!    on GenosRTC's schedule (every 2.5 s) in the same run.
//!
//! Run: `cargo xtask bench signal` (about 75 s).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use genos_crypto::Identity;
use genos_signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrSignaling};
use genos_signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};
use nostr::prelude::*;
use tokio_tungstenite::tungstenite::Message;

const SAMPLES: usize = 300;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

async fn raw_latency(url: &str) -> Vec<Duration> {
    let (mut publisher, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let (mut subscriber, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let keys = Keys::generate();
    let filter = Filter::new()
        .kind(Kind::Custom(21_000))
        .custom_tags(SingleLetterTag::LOWERCASE_X, ["raw"]);
    let req = ClientMessage::req(SubscriptionId::new("raw"), vec![filter]);
    subscriber.send(Message::text(req.as_json())).await.unwrap();
    loop {
        let Some(Ok(Message::Text(text))) = subscriber.next().await else {
            panic!()
        };
        if text.contains("EOSE") {
            break;
        }
    }
    let mut samples = Vec::new();
    for i in 0..SAMPLES {
        // Same content size as a typical sealed genos message; signed before timing.
        let event = EventBuilder::new(Kind::Custom(21_000), format!("{i:0>200}"))
            .tag(Tag::custom("x", ["raw"]))
            .finalize(&keys)
            .unwrap();
        let text = ClientMessage::event(event).as_json();
        let start = Instant::now();
        publisher.send(Message::text(text)).await.unwrap();
        loop {
            let Some(Ok(Message::Text(text))) = subscriber.next().await else {
                panic!()
            };
            if text.starts_with("[\"EVENT\"") {
                break;
            }
        }
        samples.push(start.elapsed());
    }
    samples
}

fn client(url: &str, config: NostrConfig) -> (NostrSignaling, genos_signal::PeerId) {
    let identity = Identity::generate();
    let peer = identity.peer_id();
    let mut config = config;
    config.relays = vec![url.to_owned()];
    (NostrSignaling::new(identity, config).unwrap(), peer)
}

async fn genos_latency(url: &str) -> Vec<Duration> {
    let topic = Topic::from_bytes(rand::random());
    let (a, a_peer) = client(url, NostrConfig::default());
    let (b, b_peer) = client(url, NostrConfig::default());
    let (a, _a_events) = a.join(JoinRequest::new(topic, a_peer)).await.unwrap();
    let (_b, mut b_events) = b.join(JoinRequest::new(topic, b_peer)).await.unwrap();
    let payload = Bytes::from(vec![7u8; 100]);
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        let start = Instant::now();
        a.send_to(b_peer, payload.clone()).await.unwrap();
        loop {
            if let Some(SignalEvent::Message { .. }) = b_events.next().await {
                break;
            }
        }
        samples.push(start.elapsed());
    }
    samples
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let url = relay.url().to_owned();

    let mut raw = raw_latency(&url).await;
    let mut ours = genos_latency(&url).await;
    let (raw_median, raw_p99) = (percentile(&mut raw, 0.5), percentile(&mut raw, 0.99));
    let (our_median, our_p99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    println!("| path | median | p99 | median / raw |");
    println!("|---|---|---|---|");
    println!("| raw WebSocket client, pre-signed event | {raw_median:?} | {raw_p99:?} | 1.00 |");
    println!(
        "| NostrSignaling send_to -> Message (seal, sign, verify, open) | {our_median:?} | {our_p99:?} | {:.2} |",
        our_median.as_secs_f64() / raw_median.as_secs_f64()
    );

    // Etiquette: genos defaults against GenosRTC's schedule (announce every 2.5 s) and
    // against genos's previous default (ephemeral presence: burst at 2 s and 6 s, then every
    // 60 s), over five minutes (one refresh period of the stored-presence default).
    const WINDOW: Duration = Duration::from_secs(300);
    let topic = Topic::from_bytes(rand::random());
    let mut genosrtc_like =
        NostrConfig::default().with_ephemeral_presence(Duration::from_millis(2500));
    genosrtc_like.announce_burst = Vec::new();
    let mut previous = NostrConfig::default().with_ephemeral_presence(Duration::from_secs(60));
    previous.announce_burst = vec![Duration::from_secs(2), Duration::from_secs(6)];
    let mut sessions = Vec::new();
    for config in [genosrtc_like, previous, NostrConfig::default()] {
        let (backend, peer) = client(&url, config);
        let (session, events) = backend.join(JoinRequest::new(topic, peer)).await.unwrap();
        session
            .announce(Bytes::from_static(b"presence"))
            .await
            .unwrap();
        sessions.push((session, events));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let at_join: Vec<u64> = sessions.iter().map(|(s, _)| s.stats().published).collect();
    tokio::time::sleep(WINDOW).await;
    let per_minute: Vec<f64> = sessions
        .iter()
        .zip(&at_join)
        .map(|((s, _), join)| (s.stats().published - join) as f64 / (WINDOW.as_secs_f64() / 60.0))
        .collect();
    println!();
    println!(
        "| schedule | events in the first 10 s of a join | events per relay per minute after (5 min) | ratio to GenosRTC's |"
    );
    println!("|---|---|---|---|");
    let names = [
        "GenosRTC-like: every 2.5 s",
        "genos before: ephemeral, burst 0/2/6 s, then 60 s",
        "genos default: stored presence, refreshed every 5 min",
    ];
    for ((name, join), minute) in names.iter().zip(&at_join).zip(&per_minute) {
        println!(
            "| {name} | {join} | {minute:.2} | {:.3} |",
            minute / per_minute.first().copied().unwrap_or(1.0).max(1e-9)
        );
    }
}
