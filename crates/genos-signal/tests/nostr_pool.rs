//! The extended relay list: read from the cache file, refreshed from a directory served over
//! HTTP on loopback, dialled in the background, and used to replace muted relays.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use genos_crypto::Identity;
use genos_signal::nostr::{
    EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrEvents, NostrSession, NostrSignaling,
    RelayState, read_relay_cache, write_relay_cache,
};
use genos_signal::{JoinRequest, SignalSession, Signaling, Topic};
use support::deliver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(30);

fn config(relays: &[&str]) -> NostrConfig {
    let mut config = NostrConfig::with_relays(relays.iter().copied())
        .with_reconnect(Duration::from_millis(100), Duration::from_millis(500));
    config.background_delay = (Duration::from_millis(10), Duration::from_millis(50));
    config
}

async fn join(config: NostrConfig, topic: Topic) -> (NostrSession, NostrEvents) {
    let identity = Identity::generate();
    let peer = identity.peer_id();
    let backend = NostrSignaling::new(identity, config).unwrap();
    backend.join(JoinRequest::new(topic, peer)).await.unwrap()
}

async fn wait_connected(session: &NostrSession, url: &str) {
    let connected = tokio::time::timeout(TIMEOUT, async {
        loop {
            if session
                .relays()
                .iter()
                .any(|h| h.url == url && h.state == RelayState::Connected)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        connected.is_ok(),
        "{url} never connected: {:?}",
        session.relays()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_relays_are_dialled_in_the_background_and_carry_traffic() {
    // The first relay is a process, so killing it really cuts every connection.
    let mut first = support::NostrRsRelay::start().await;
    let first_url = first.url();
    let extra = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("relays.json");
    write_relay_cache(&cache, &[extra.url().to_owned()]).unwrap();
    let topic = Topic::from_bytes(rand::random());
    let (a, _a_events) = join(config(&[&first_url]).with_relay_cache(&cache), topic).await;
    let (b, mut b_events) = join(config(&[&first_url]).with_relay_cache(&cache), topic).await;
    wait_connected(&a, extra.url()).await;
    wait_connected(&b, extra.url()).await;
    first.kill();
    deliver(&a, b.local_peer(), &mut b_events, b"over the cached relay").await;
    let first_health = a.relays().into_iter().find(|h| h.url == first_url).unwrap();
    assert_ne!(
        first_health.state,
        RelayState::Connected,
        "{first_health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_relay_is_replaced_from_the_extended_list() {
    let greedy = EmbeddedRelay::start(EmbeddedRelayConfig::default().with_min_pow(40))
        .await
        .unwrap();
    let spare = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("relays.json");
    write_relay_cache(&cache, &[spare.url().to_owned()]).unwrap();
    let topic = Topic::from_bytes(rand::random());
    let mut settings = config(&[greedy.url()]).with_relay_cache(&cache);
    settings.redundancy = 1;
    let (a, _a_events) = join(settings.clone(), topic).await;
    let (b, mut b_events) = join(settings, topic).await;
    // The greedy relay subscribes fine but refuses every event: the first publish mutes it.
    a.announce(Bytes::from_static(b"here")).await.unwrap();
    b.announce(Bytes::from_static(b"here")).await.unwrap();
    wait_connected(&a, spare.url()).await;
    wait_connected(&b, spare.url()).await;
    deliver(&a, b.local_peer(), &mut b_events, b"over the replacement").await;
    let greedy_state = a
        .relays()
        .into_iter()
        .find(|h| h.url == greedy.url())
        .unwrap()
        .state;
    assert!(
        matches!(greedy_state, RelayState::Muted(_)),
        "{greedy_state:?}"
    );
}

/// Serves one HTTP response to every connection.
async fn serve_http(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/relays", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_refreshes_the_cache_and_its_relays_are_used() {
    let first = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let listed = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let directory = serve_http(format!(r#"["{}", "https://not-a-relay", 7]"#, listed.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("relays.json");
    let mut settings = config(&[first.url()]).with_relay_cache(&cache);
    settings.directory_url = Some(directory);
    let (a, _events) = join(settings, Topic::from_bytes(rand::random())).await;
    wait_connected(&a, listed.url()).await;
    assert_eq!(read_relay_cache(&cache), vec![listed.url().to_owned()]);
}

#[test]
fn a_corrupt_cache_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("relays.json");
    std::fs::write(&cache, "{ not json").unwrap();
    assert!(read_relay_cache(&cache).is_empty());
    std::fs::write(&cache, vec![b' '; 100 * 1024]).unwrap();
    assert!(read_relay_cache(&cache).is_empty());
    assert!(read_relay_cache(&dir.path().join("missing.json")).is_empty());
}
