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

/// A browser page and a genos peer with id `genos_id` (which decides who offers) in room
/// `room_id` on a relay of their own, each having seen the other join.
struct Meeting {
    relay: EmbeddedRelay,
    browser: Browser,
    page: u64,
    browser_id: String,
    room: TrysteroRoom,
    events: TrysteroEvents,
}

async fn meet(room_id: &str, genos_id: &str) -> Meeting {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let mut browser = Browser::start(&driver()).await;
    let (page, browser_id) = browser.join(relay.url(), room_id, None).await;
    let (room, mut events) = genos(&relay, room_id, genos_id, None).await;
    assert_eq!(joined(&mut events).await, browser_id);
    let seen = browser.event("join", page).await;
    assert_eq!(seen["peer"], genos_id);
    Meeting {
        relay,
        browser,
        page,
        browser_id,
        room,
        events,
    }
}

/// Both sides see the join, messages of every kind cross both ways, and each side sees the
/// other leave. `genos_id` decides who offers.
async fn conversation(genos_id: &str) {
    let Meeting {
        relay: _relay,
        mut browser,
        page,
        browser_id,
        room,
        mut events,
    } = meet("lobby", genos_id).await;

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
    let Meeting {
        relay: _relay,
        mut browser,
        page,
        browser_id,
        room: _room,
        mut events,
    } = meet("exit", LOW_ID).await;
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

/// Whether a VP8 frame is a key frame (RFC 6386 §9.1: the frame tag's first bit is 0, and
/// the start code follows).
fn vp8_key_frame(frame: &[u8]) -> bool {
    frame.first().is_some_and(|tag| tag & 1 == 0) && frame.get(3..6) == Some(&[0x9d, 0x01, 0x2a])
}

/// Media between genos and a browser: the browser's fake camera and microphone reach genos
/// with Trystero's stream metadata (VP8 starting with a key frame, Opus); genos sends them
/// back on tracks of its own with metadata, which the browser's `onPeerTrack` reports and its
/// decoder decodes; a key frame genos asks for (RTCP PLI) reaches Chromium's encoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_crosses_between_genos_and_a_browser() {
    use genos_transport::{Codec, Sample};
    let Meeting {
        relay: _relay,
        mut browser,
        page,
        browser_id,
        room,
        mut events,
    } = meet("media", LOW_ID).await;

    // Browser -> genos.
    let kinds = browser
        .call(json!({"cmd": "media", "page": page, "metadata": {"from": "browser"}}))
        .await;
    assert_eq!(kinds["kinds"].as_array().map(Vec::len), Some(2), "{kinds}");
    let mut video = None;
    let mut audio = None;
    while video.is_none() || audio.is_none() {
        let TrysteroEvent::PeerTrack {
            peer,
            track,
            metadata,
        } = next(&mut events, |e| {
            matches!(e, TrysteroEvent::PeerTrack { .. })
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!(peer, browser_id);
        assert_eq!(metadata, Some(json!({"from": "browser"})));
        match track.codec() {
            Codec::Vp8 => video = Some(track),
            _ => audio = Some(track),
        }
    }
    let (video, audio) = (video.unwrap(), audio.unwrap());
    let first = tokio::time::timeout(WAIT, video.recv_sample())
        .await
        .expect("no video sample")
        .expect("the video track ended");
    assert!(
        vp8_key_frame(&first.data),
        "the first frame is not a key frame"
    );

    // genos -> browser: the browser's own media, echoed on genos's tracks.
    let genos_meta = json!({"from": "genos"});
    let camera = room
        .add_track(Codec::Vp8, Some(&genos_meta), None)
        .await
        .unwrap();
    let microphone = room
        .add_track(Codec::Opus, Some(&genos_meta), None)
        .await
        .unwrap();
    assert_eq!(camera.peers(), vec![browser_id.clone()]);
    for _ in 0..2 {
        let track = browser.event("track", page).await;
        assert_eq!(track["metadata"], genos_meta, "{track}");
        assert_eq!(track["peer"], LOW_ID);
    }
    // The echo starts mid-stream: ask the browser for a key frame so its decoder can start
    // (and pass on each request the browser makes, as a forwarding server would).
    video.request_keyframe().unwrap();
    let echo_video = tokio::spawn({
        let (video, camera) = (video.clone(), camera.clone());
        async move {
            let mut key_frames = 0;
            while let Some(sample) = video.recv_sample().await {
                key_frames += usize::from(vp8_key_frame(&sample.data));
                camera
                    .write_sample(Sample::new(sample.data, Duration::from_millis(33)))
                    .await;
            }
            key_frames
        }
    });
    let forward_requests = tokio::spawn({
        let (video, camera) = (video.clone(), camera.clone());
        async move {
            let (_, sent) = camera.local_tracks().pop().unwrap();
            loop {
                sent.keyframe_requested().await;
                let _ = video.request_keyframe();
            }
        }
    });
    let echo_audio = tokio::spawn({
        let microphone = microphone.clone();
        async move {
            while let Some(sample) = audio.recv_sample().await {
                microphone
                    .write_sample(Sample::new(sample.data, Duration::from_millis(20)))
                    .await;
            }
        }
    });
    let stats = tokio::time::timeout(WAIT, async {
        loop {
            let stats = browser
                .call(json!({"cmd": "mediaStats", "page": page}))
                .await["stats"]
                .clone();
            let enough = stats["framesDecoded"].as_u64() >= Some(30)
                && stats["audioPackets"].as_u64() >= Some(50)
                && stats["pliReceived"].as_u64() >= Some(1);
            if enough {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the browser never decoded genos's echo");
    println!("browser: {stats}");
    room.leave().await;
    forward_requests.abort();
    let key_frames = tokio::time::timeout(WAIT, echo_video)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, echo_audio)
        .await
        .unwrap()
        .unwrap();
    // The first, and at least one answering genos's request.
    assert!(key_frames >= 1, "{key_frames} key frames after the first");
}
