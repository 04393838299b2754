//! Rooms through a fallback server (`genos::serve::FallbackServer`, what `genos serve`
//! runs) on 127.0.0.1: links carried by its hub with direct links off (a 50 MiB transfer,
//! intact, with progress), signaling through its relay when the room's relays are
//! unreachable, frames that stay sealed on the wire for a peer without the password, and a
//! server restart in the middle of a transfer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use genos::serve::{FallbackServer, FallbackServerConfig};
use genos::transport::fallback::{FallbackConfig, FallbackTransport};
use genos::transport::{Connection, ConnectionEvent, DataChannel, Reliability, Role, Transport};
use genos::{Genos, GenosBuilder, PeerId, Room, RoomEvent, SendOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(60);

fn builder(room: &str, relay: &str, fallback: &str) -> GenosBuilder {
    Genos::builder("genos-fallback", room)
        .password("room secret")
        .relay(relay)
        .same_host_only()
        .fallback(fallback)
}

/// Waits until `room` has `other` as a connected peer.
async fn wait_linked(room: &Room, other: PeerId) {
    let mut events = room.events();
    tokio::time::timeout(PATIENCE, async {
        while !room.peers().contains(&other) {
            if events.next().await.is_none() {
                panic!("the room's events ended");
            }
        }
    })
    .await
    .expect("the peers linked");
}

async fn pair(room: &str, relay: &str, fallback: &str, direct: bool) -> (Room, Room) {
    let join = || async {
        let builder = builder(room, relay, fallback);
        let builder = if direct { builder } else { builder.no_direct() };
        builder.join().await.unwrap()
    };
    let alice = join().await;
    let bob = join().await;
    wait_linked(&alice, bob.local_peer()).await;
    wait_linked(&bob, alice.local_peer()).await;
    (alice, bob)
}

fn payload(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_cross_the_fallback_hub_intact_with_direct_links_off() {
    let server = FallbackServer::start(FallbackServerConfig::default())
        .await
        .unwrap();
    let (alice, bob) = pair("bulk", server.url(), server.url(), false).await;
    assert!(server.hub_stats().circuits_paired >= 1);

    let data = payload(50 << 20, 1);
    let digest = Sha256::digest(&data);
    let progress = Arc::new(Mutex::new(Vec::new()));
    let log = progress.clone();
    let options = SendOptions::default()
        .with_meta("big.bin")
        .on_progress(move |p| log.lock().unwrap().push(p.done));
    let inbox = bob.channel("files").unwrap();
    let mut incoming = inbox.progress(1 << 20);
    let send = alice.channel("files").unwrap();
    let (report, message) = tokio::join!(
        send.send_with(data, options),
        support::recv(&inbox, PATIENCE)
    );
    assert_eq!(report.unwrap().sent, vec![bob.local_peer()]);
    assert_eq!(Sha256::digest(&message.payload), digest);
    let sent = progress.lock().unwrap().clone();
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "monotonic progress");
    assert_eq!(sent.last(), Some(&(50 << 20)));
    let mut received = Vec::new();
    while let Some(p) = incoming.next_ready() {
        received.push(p.done);
    }
    assert_eq!(received.last(), Some(&(50 << 20)));
    // It all went through the hub (sealed chunks are a little larger than the data).
    assert!(server.hub_stats().bytes_forwarded > 50 << 20);
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
}

/// A port with nothing listening (bound, then let go).
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_uses_the_fallback_relay_when_no_relay_answers() {
    let server = FallbackServer::start(FallbackServerConfig::default())
        .await
        .unwrap();
    let dead = dead_url().await;
    // Direct links allowed: only signaling needs the server here.
    let (alice, bob) = pair("no-relays", &dead, server.url(), true).await;
    let report = alice.channel("chat").unwrap().send("hello").await.unwrap();
    assert_eq!(report.sent, vec![bob.local_peer()]);
    let message = support::recv(&bob.channel("chat").unwrap(), PATIENCE).await;
    assert_eq!(&message.payload[..], b"hello");
    assert_eq!(server.hub_stats().circuits_paired, 0, "the link is direct");
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
}

/// A TCP proxy in front of `target` that keeps everything the server sends to clients (the
/// direction WebSocket does not mask).
async fn tap(target: SocketAddr) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(read) = server_read.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    log.lock().unwrap().extend_from_slice(&buffer[..read]);
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_password_learns_nothing_through_the_fallback() {
    let server = FallbackServer::start(FallbackServerConfig::default())
        .await
        .unwrap();
    let addr: SocketAddr = server.url().trim_start_matches("ws://").parse().unwrap();
    let (url, seen) = tap(addr).await;
    let marker = b"the-plaintext-marker-0123456789";

    // The tap sees plaintext when there is any: a bare fallback link (no room, no seal).
    let bare = FallbackTransport::new(FallbackConfig::new(format!("{url}/link"))).unwrap();
    let (a, mut a_events) = bare.connect(Role::Offerer).await.unwrap();
    let (b, mut b_events) = bare.connect(Role::Answerer).await.unwrap();
    let Some(ConnectionEvent::Signal(offer)) = a_events.next().await else {
        panic!("no offer")
    };
    b.handle_signal(offer).await.unwrap();
    let channel = a
        .open_channel("raw", Reliability::ReliableOrdered)
        .await
        .unwrap();
    channel.send(marker.to_vec().into()).await.unwrap();
    let remote = loop {
        if let Some(ConnectionEvent::ChannelOpened(remote)) = b_events.next().await {
            break remote;
        }
    };
    assert_eq!(remote.recv().await.as_deref(), Some(&marker[..]));
    assert!(contains(&seen.lock().unwrap(), marker), "the tap works");
    a.close().await;
    seen.lock().unwrap().clear();

    // A password room through the same server, and a peer of the same app and room id
    // without the password.
    let (alice, bob) = pair("secret-room", &url, &url, false).await;
    let eve = Genos::builder("genos-fallback", "secret-room")
        .relay(&url)
        .same_host_only()
        .fallback(&url)
        .no_direct()
        .join()
        .await
        .unwrap();
    let mut eve_events = eve.events();
    for _ in 0..5 {
        alice
            .channel("chat")
            .unwrap()
            .send(&marker[..])
            .await
            .unwrap();
    }
    let inbox = bob.channel("chat").unwrap();
    for _ in 0..5 {
        assert_eq!(&support::recv(&inbox, PATIENCE).await.payload[..], marker);
    }
    // Eve's room is another room: she never meets them, and the wire never carries the text.
    let met = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(event) = eve_events.next().await {
            if matches!(event, RoomEvent::PeerJoined { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        !matches!(met, Ok(true)),
        "eve met a peer of the password room"
    );
    assert!(eve.peers().is_empty());
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() > 5 * marker.len(),
        "traffic went through the tap"
    );
    assert!(!contains(&seen, marker), "plaintext on the fallback's wire");
    for room in [alice, bob, eve] {
        room.leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_restart_mid_transfer_fails_the_send_clearly_and_a_resend_arrives_whole() {
    let server = FallbackServer::start(FallbackServerConfig::default())
        .await
        .unwrap();
    let addr: SocketAddr = server.url().trim_start_matches("ws://").parse().unwrap();
    let url = server.url().to_owned();
    let (alice, bob) = pair("restart", &url, &url, false).await;

    let data = payload(50 << 20, 7);
    let digest = Sha256::digest(&data);
    let (cut, mut cut_seen) = tokio::sync::watch::channel(0u64);
    let options = SendOptions::default().on_progress(move |p| {
        cut.send_replace(p.done);
    });
    let send = alice.channel("files").unwrap();
    let inbox = bob.channel("files").unwrap();
    let mut alice_events = alice.events();
    let sending = tokio::spawn({
        let data = data.clone();
        async move { send.send_with(data, options).await }
    });
    // Cut the server once a fifth is through, and start it again on the same port.
    cut_seen.wait_for(|done| *done > 10 << 20).await.unwrap();
    server.shutdown();
    drop(server);
    let server = loop {
        match FallbackServer::start(FallbackServerConfig::default().with_addr(addr)).await {
            Ok(server) => break server,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let report = tokio::time::timeout(PATIENCE, sending)
        .await
        .expect("the send ends")
        .unwrap();
    // Never silent: the report names bob as failed, or bob got all of it.
    match report {
        Ok(report) if report.sent.contains(&bob.local_peer()) => {
            let message = support::recv(&inbox, PATIENCE).await;
            assert_eq!(Sha256::digest(&message.payload), digest);
        }
        Ok(report) => {
            eprintln!("the cut send reports {:?}", report.failed);
            assert!(
                report
                    .failed
                    .iter()
                    .any(|(peer, _)| *peer == bob.local_peer()),
                "{report:?}"
            );
        }
        Err(error) => panic!("the send failed as a whole: {error}"),
    }
    // Nothing partial was delivered.
    assert!(futures::FutureExt::now_or_never(inbox.recv()).is_none());
    // The cut circuit ends the link (every link goes through the hub); the peers then find
    // each other again through the restarted server, and the resend arrives.
    support::wait_for(
        &mut alice_events,
        PATIENCE,
        |event| matches!(event, RoomEvent::PeerLeft { peer, .. } if *peer == bob.local_peer()),
    )
    .await;
    wait_linked(&alice, bob.local_peer()).await;
    wait_linked(&bob, alice.local_peer()).await;
    let report = tokio::time::timeout(PATIENCE, alice.channel("files").unwrap().send(data))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.sent, vec![bob.local_peer()], "{report:?}");
    let message = support::recv(&inbox, PATIENCE).await;
    assert_eq!(Sha256::digest(&message.payload), digest);
    assert!(server.hub_stats().circuits_paired >= 1);
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
}
