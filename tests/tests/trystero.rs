//! A genos peer in a room of browsers: headless Chromium runs Trystero 0.25 (npm) and a
//! genos `TrysteroRoom` joins the same room through the embedded relay, with real WebRTC on
//! 127.0.0.1. The browser side is `tests/browser/driver.mjs` (needs `npm ci` there and
//! Debian's chromium; `.ci/run` installs both).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use genos_signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos_transport::webrtc::WebRtcConfig;
use genos_trystero::wire::Payload;
use genos_trystero::{TrysteroConfig, TrysteroEvent, TrysteroEvents, TrysteroRoom};
use serde_json::json;

/// Lower than any id Trystero makes: genos offers.
const LOW_ID: &str = "00000000000000000000";
/// Higher than any id Trystero makes: the browser offers.
const HIGH_ID: &str = "zzzzzzzzzzzzzzzzzzzz";
const WAIT: Duration = Duration::from_secs(60);

#[path = "../browser/harness.rs"]
mod browser;
use browser::{Browser, checksum, pattern};

/// The browser driver's folder.
fn driver() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

async fn genos(
    relay: &EmbeddedRelay,
    room: &str,
    id: &str,
    password: Option<&str>,
) -> (TrysteroRoom, TrysteroEvents) {
    let mut config = TrysteroConfig::new("genos-interop", room, [relay.url()])
        .with_webrtc(WebRtcConfig::loopback())
        .with_peer_id(id);
    if let Some(password) = password {
        config = config.with_password(password);
    }
    TrysteroRoom::join(config).await.unwrap()
}

async fn next(
    events: &mut TrysteroEvents,
    wanted: impl Fn(&TrysteroEvent) -> bool,
) -> TrysteroEvent {
    tokio::time::timeout(WAIT, events.recv_matching(wanted))
        .await
        .expect("timed out waiting for a room event")
        .expect("room events ended")
}

/// The next peer to join.
async fn joined(events: &mut TrysteroEvents) -> String {
    match next(events, |e| matches!(e, TrysteroEvent::PeerJoined { .. })).await {
        TrysteroEvent::PeerJoined { peer } => peer,
        other => panic!("not a join: {other:?}"),
    }
}

async fn message(events: &mut TrysteroEvents) -> (genos_trystero::wire::Message, usize) {
    let mut progress = 0;
    loop {
        match next(events, |e| {
            matches!(
                e,
                TrysteroEvent::Message { .. } | TrysteroEvent::Progress { .. }
            )
        })
        .await
        {
            TrysteroEvent::Progress { .. } => progress += 1,
            TrysteroEvent::Message { message, .. } => return (message, progress),
            _ => unreachable!(),
        }
    }
}

/// Both sides see the join, messages of every kind cross both ways, and each side sees the
/// other leave. `genos_id` decides who offers.
async fn conversation(genos_id: &str) {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let mut browser = Browser::start(&driver()).await;
    let (page, browser_id) = browser.join(relay.url(), "lobby", None).await;
    let (room, mut events) = genos(&relay, "lobby", genos_id, None).await;

    assert_eq!(joined(&mut events).await, browser_id);
    let seen = browser.event("join", page).await;
    assert_eq!(seen["peer"], genos_id);

    // Pings both ways: genos answers Trystero's, and Trystero answers genos's.
    let ping = browser
        .call(json!({"cmd": "ping", "page": page, "peer": genos_id}))
        .await;
    assert!(ping["ms"].as_f64().is_some(), "{ping}");
    room.ping(&browser_id).await.unwrap();

    // Browser -> genos: text, JSON, and a binary file with metadata and progress.
    browser
        .call(json!({"cmd": "send", "page": page, "action": "chat", "data": "hello from the browser"}))
        .await;
    let (text, _) = message(&mut events).await;
    assert_eq!(text.action, "chat");
    assert_eq!(text.payload, Payload::Text("hello from the browser".into()));
    browser
        .call(json!({"cmd": "send", "page": page, "action": "chat", "data": {"n": 1, "list": [true, null]}}))
        .await;
    let (json_message, _) = message(&mut events).await;
    assert_eq!(
        json_message.payload,
        Payload::Json(json!({"n": 1, "list": [true, null]}))
    );
    browser
        .call(json!({"cmd": "send", "page": page, "action": "file", "bytes": 120_000, "metadata": {"name": "from-browser.bin"}}))
        .await;
    let (file, progress) = message(&mut events).await;
    assert_eq!(file.payload, Payload::Binary(Bytes::from(pattern(120_000))));
    assert_eq!(file.metadata, Some(json!({"name": "from-browser.bin"})));
    assert!(
        progress >= 2,
        "{progress} progress events for an 8-chunk message"
    );

    // genos -> browser.
    room.send("chat", Payload::Text("hello from genos".into()), None, None)
        .await
        .unwrap();
    let got = browser.event("message", page).await;
    assert_eq!(got["data"], "hello from genos");
    assert_eq!(got["peer"], genos_id);
    let body = pattern(150_000);
    let report = room
        .send(
            "file",
            Payload::Binary(Bytes::from(body.clone())),
            Some(&json!({"name": "from-genos.bin", "size": 150_000})),
            Some(vec![browser_id.clone()]),
        )
        .await
        .unwrap();
    assert_eq!(report.sent, vec![browser_id.clone()]);
    // Trystero reports the last chunk's progress just before the whole message.
    let progress = browser
        .expect(|v| v["ev"] == "progress" && v["action"] == "file" && v["page"] == page)
        .await;
    assert!(progress["updates"].as_u64().unwrap() >= 2, "{progress}");
    let got = browser.event("message", page).await;
    assert_eq!(got["bytes"], 150_000);
    assert_eq!(got["checksum"], checksum(&body));
    assert_eq!(
        got["metadata"],
        json!({"name": "from-genos.bin", "size": 150_000})
    );

    // genos leaves: the browser sees it.
    room.leave().await;
    let left = browser.event("leave", page).await;
    assert_eq!(left["peer"], genos_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genos_offering_to_a_browser_talks_both_ways() {
    conversation(LOW_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_offering_to_genos_talks_both_ways() {
    conversation(HIGH_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_leaving_is_seen_by_genos() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let mut browser = Browser::start(&driver()).await;
    let (page, browser_id) = browser.join(relay.url(), "exit", None).await;
    let (_room, mut events) = genos(&relay, "exit", LOW_ID, None).await;
    next(&mut events, |e| {
        matches!(e, TrysteroEvent::PeerJoined { .. })
    })
    .await;
    browser.call(json!({"cmd": "leave", "page": page})).await;
    let left = next(&mut events, |e| matches!(e, TrysteroEvent::PeerLeft { .. })).await;
    assert_eq!(left, TrysteroEvent::PeerLeft { peer: browser_id });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rooms_join_with_the_right_password_only() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let mut browser = Browser::start(&driver()).await;
    let (page, browser_id) = browser
        .join(relay.url(), "vault", Some("open sesame"))
        .await;

    // Right password: both join (genos answers, so the browser's challenge is answered).
    let (room, mut events) = genos(&relay, "vault", HIGH_ID, Some("open sesame")).await;
    assert_eq!(joined(&mut events).await, browser_id);
    assert_eq!(browser.event("join", page).await["peer"], HIGH_ID);
    room.leave().await;
    browser.event("leave", page).await;

    // Wrong password, genos offering: the browser cannot open the offer and says so; no
    // join on either side.
    let (wrong, mut wrong_events) = genos(&relay, "vault", LOW_ID, Some("guess")).await;
    let error = browser.event("error", page).await;
    assert_eq!(error["peer"], LOW_ID);
    assert!(
        error["error"].as_str().unwrap().contains("password"),
        "{error}"
    );
    let joined = tokio::time::timeout(
        Duration::from_secs(3),
        next(&mut wrong_events, |e| {
            matches!(e, TrysteroEvent::PeerJoined { .. })
        }),
    )
    .await;
    assert!(joined.is_err(), "genos joined with a wrong password");
    drop(wrong);

    // Wrong password, the browser offering: genos cannot open the offer and says so.
    let (_other, mut other_events) = genos(&relay, "vault", HIGH_ID, Some("guess")).await;
    let failed = next(&mut other_events, |e| {
        matches!(
            e,
            TrysteroEvent::JoinFailed { .. } | TrysteroEvent::PeerJoined { .. }
        )
    })
    .await;
    let TrysteroEvent::JoinFailed { peer, reason } = failed else {
        panic!("genos joined with a wrong password: {failed:?}");
    };
    assert_eq!(peer, browser_id);
    assert!(reason.contains("password"), "{reason}");
}
