//! The relay pool: a burst of sends larger than the hand-over queue is delivered whole, and
//! the extended relay list is read from the cache file, refreshed from a directory served
//! over HTTP on loopback, dialled in the background, and used to replace muted relays.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_crypto::Identity;
use genos_signal::nostr::{
    DEFAULT_RELAY_DIRECTORY, EmbeddedRelay, EmbeddedRelayConfig, NostrConfig, NostrEvents,
    NostrSession, NostrSignaling, RelayDiscovery, RelayRecord, RelayState, read_relay_cache,
    read_relay_records, record_relays, write_relay_cache,
};
use genos_signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};
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
async fn a_burst_larger_than_the_relay_queue_is_delivered_whole() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let topic = Topic::from_bytes(rand::random());
    // A hand-over queue of 2 before a burst of 200: every send beyond it must wait for room,
    // not be dropped (the burst used to lose what did not fit).
    let mut tight = config(&[relay.url()]);
    tight.relay_queue = 2;
    let (a, _a_events) = join(tight, topic).await;
    let (b, mut b_events) = join(config(&[relay.url()]), topic).await;
    let burst = 200;
    for i in 0..burst {
        a.send_to(b.local_peer(), Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    let mut received = std::collections::BTreeSet::new();
    let read = tokio::time::timeout(TIMEOUT, async {
        while received.len() < burst {
            match b_events.next().await {
                Some(SignalEvent::Message { payload, .. }) => {
                    received.insert(String::from_utf8(payload.to_vec()).unwrap());
                }
                Some(SignalEvent::Lagged { dropped }) => panic!("b's inbox dropped {dropped}"),
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    })
    .await;
    let dropped: u64 = a.relays().iter().map(|h| h.publish_dropped).sum();
    assert!(
        read.is_ok(),
        "{} of {burst} arrived; a dropped {dropped} at publishing",
        received.len()
    );
    assert_eq!(dropped, 0);
    assert_eq!(received, (0..burst).map(|i| i.to_string()).collect());
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
    serve_http_counting(body).await.0
}

/// Serves one HTTP response to every connection, counting them.
async fn serve_http_counting(body: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/relays", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
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
    (url, served)
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

/// The directory is asked at most once per `directory_refresh`: a fresh cache is used as it
/// is, a stale one is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_is_asked_at_most_once_per_refresh_period() {
    let first = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let listed = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let (directory, served) = serve_http_counting(format!(r#"["{}"]"#, listed.url())).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("nested").join("relays.json");
    let mut settings = config(&[first.url()]).with_relay_cache(&cache);
    settings.directory_url = Some(directory);
    // Each join dials the listed relay only after deciding about the directory.
    for expected in [1, 1] {
        let (session, _events) = join(settings.clone(), Topic::from_bytes(rand::random())).await;
        wait_connected(&session, listed.url()).await;
        assert_eq!(served.load(Ordering::SeqCst), expected);
        session.leave().await.unwrap();
    }
    assert_eq!(read_relay_cache(&cache), vec![listed.url().to_owned()]);
    // Two days later the cache is stale and the directory is asked again.
    let stale = std::time::SystemTime::now() - Duration::from_secs(2 * 24 * 60 * 60);
    std::fs::File::options()
        .write(true)
        .open(&cache)
        .unwrap()
        .set_modified(stale)
        .unwrap();
    let (session, _events) = join(settings, Topic::from_bytes(rand::random())).await;
    wait_connected(&session, listed.url()).await;
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[test]
fn relay_discovery_is_on_with_the_built_in_relays_and_off_with_named_ones() {
    let default = NostrConfig::default();
    assert_eq!(
        default.effective_directory().as_deref(),
        Some(DEFAULT_RELAY_DIRECTORY)
    );
    if std::env::var_os("HOME").is_some() || std::env::var_os("XDG_CACHE_HOME").is_some() {
        let cache = default.effective_relay_cache().unwrap();
        assert!(cache.ends_with("genos/relays.json"), "{}", cache.display());
    }
    let named = NostrConfig::with_relays(["ws://127.0.0.1:1"]);
    assert_eq!(named.effective_directory(), None);
    assert_eq!(named.effective_relay_cache(), None);
    let asked = named.clone().with_relay_discovery(RelayDiscovery::On);
    assert_eq!(
        asked.effective_directory().as_deref(),
        Some(DEFAULT_RELAY_DIRECTORY)
    );
    let off = NostrConfig::default()
        .with_relay_cache("/tmp/relays.json")
        .with_relay_discovery(RelayDiscovery::Off);
    assert_eq!(off.effective_directory(), None);
    assert_eq!(off.effective_relay_cache(), None);
    let explicit = named.with_relay_cache("/tmp/relays.json");
    assert_eq!(
        explicit.effective_relay_cache().as_deref(),
        Some(std::path::Path::new("/tmp/relays.json"))
    );
}

/// A port with nothing listening (bound, then let go).
async fn dead_relay_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_relay_is_used_only_when_no_relay_answers() {
    let fallback = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let with_fallback = |relays: &[&str], after: Duration| {
        let mut config = config(relays);
        config.fallback_relays = vec![fallback.url().to_owned()];
        config.fallback_after = after;
        config
    };
    let soon = Duration::from_millis(300);
    // Unreachable relays: the join succeeds through the fallback relay, and peers meet there.
    let dead = dead_relay_url().await;
    let topic = Topic::from_bytes(rand::random());
    let (a, _a_events) = join(with_fallback(&[&dead], soon), topic).await;
    let (b, mut b_events) = join(with_fallback(&[&dead], soon), topic).await;
    wait_connected(&a, fallback.url()).await;
    deliver(
        &a,
        b.local_peer(),
        &mut b_events,
        b"through the fallback relay",
    )
    .await;

    // A relay that answers (join returns once it confirmed): the fallback is never dialled.
    let live = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let after = Duration::from_secs(2);
    let (c, _c_events) = join(with_fallback(&[live.url()], after), topic).await;
    tokio::time::sleep(after + Duration::from_millis(1500)).await;
    let urls: Vec<_> = c.relays().into_iter().map(|h| h.url).collect();
    assert_eq!(urls, vec![live.url().to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_one_identity_share_relay_connections_and_keep_their_own_traffic() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let bot = NostrSignaling::new(Identity::generate(), config(&[relay.url()])).unwrap();
    let per_connection = bot.config().subscriptions_per_connection;
    let rooms = 2 * per_connection + 3;
    let topics: Vec<Topic> = (0..rooms)
        .map(|_| Topic::from_bytes(rand::random()))
        .collect();
    let mut sessions = Vec::new();
    for topic in &topics {
        let request = JoinRequest::new(*topic, bot.peer_id());
        sessions.push(bot.join(request).await.unwrap());
    }
    // Three connections for 19 rooms at 8 per connection, not 19.
    assert_eq!(
        bot.relay_connections(relay.url()),
        rooms.div_ceil(per_connection)
    );

    // Each room's traffic reaches that room's session only.
    for (i, topic) in topics.iter().enumerate().step_by(5) {
        let (guest, _guest_events) = join(config(&[relay.url()]), *topic).await;
        let (_, bot_events) = &mut sessions[i];
        deliver(
            &guest,
            bot.peer_id(),
            bot_events,
            b"to the bot in this room",
        )
        .await;
        for (j, (_, other)) in sessions.iter_mut().enumerate() {
            if j != i {
                let leaked = futures::FutureExt::now_or_never(other.next());
                assert!(
                    !matches!(leaked, Some(Some(SignalEvent::Message { .. }))),
                    "room {i}'s message reached room {j}"
                );
            }
        }
    }
    // The connections close once their last session leaves.
    for (session, _) in &sessions {
        session.leave().await.unwrap();
    }
    drop(sessions);
    let closed = tokio::time::timeout(TIMEOUT, async {
        while bot.relay_connections(relay.url()) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{} connections left",
        bot.relay_connections(relay.url())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extended_list_is_dialled_best_first_by_recorded_health() {
    let home = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let good = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let dead = dead_relay_url().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("relays.json");
    // The dead relay comes first in the list; the records say it never worked.
    write_relay_cache(&cache, &[dead.clone(), good.url().to_owned()]).unwrap();
    let record = |url: &str, connects, failures| {
        let text = serde_json::json!([{
            "url": url, "connects": connects, "failures": failures,
            "latency_ms": null, "muted": false, "seen": 1
        }]);
        serde_json::from_value::<Vec<RelayRecord>>(text).unwrap()
    };
    let records = dir.path().join("relays.health.json");
    record_relays(&records, &record(&dead, 0, 8)).unwrap();
    record_relays(&records, &record(good.url(), 3, 0)).unwrap();
    let mut config = config(&[home.url()]).with_relay_cache(&cache);
    config.redundancy = 2;
    config.health_record_interval = Duration::from_millis(100);
    let (session, _events) = join(config, Topic::from_bytes(rand::random())).await;
    wait_connected(&session, good.url()).await;
    let urls: Vec<_> = session.relays().into_iter().map(|h| h.url).collect();
    assert!(
        !urls.contains(&dead),
        "the failing relay was dialled: {urls:?}"
    );
    // And this session's own measurements are recorded for the next.
    let recorded = tokio::time::timeout(TIMEOUT, async {
        loop {
            let records = read_relay_records(&records);
            if records
                .iter()
                .any(|r| r.url == home.url() && r.connects >= 1)
            {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(recorded.is_ok(), "the session's relays were not recorded");
}
