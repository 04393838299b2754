//! Join time in a Trystero room: a browser joining a browser, beside genos joining a browser,
//! in one run (headless Chromium with Trystero 0.25.4 from `tests/browser/`, the embedded
//! relay, WebRTC on 127.0.0.1). Each round uses a fresh room with one browser already in it;
//! the clock runs from the join call until both sides report the other joined.
//!
//! `cargo bench -p genos-trystero --bench join [-- ROUNDS]` (needs `npm ci` in tests/browser
//! and Debian's chromium, as .ci/run installs). Results go in docs/benchmarks.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use genos_signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos_transport::webrtc::WebRtcConfig;
use genos_trystero::{TrysteroConfig, TrysteroEvent, TrysteroRoom};
use serde_json::json;

#[path = "../../../tests/browser/harness.rs"]
mod browser;
use browser::Browser;

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = ms(samples[samples.len() / 2]);
    let p90 = ms(samples[(samples.len() * 9 / 10).min(samples.len() - 1)]);
    (median, p90)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(10);
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    let mut browser = Browser::start(&folder).await;
    let (mut browser_times, mut genos_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Browser joins browser: the second page is loaded before the clock starts.
        let room = format!("b2b-{round}");
        let (first, _) = browser.join(relay.url(), &room, None).await;
        let second = browser.call(json!({"cmd": "page"})).await["page"]
            .as_u64()
            .unwrap();
        let start = Instant::now();
        browser
            .call(json!({"cmd": "join", "page": second, "relay": relay.url(),
                "app": "genos-interop", "room": room}))
            .await;
        // Both pages report the join, in either order.
        let mut seen = [false, false];
        while !(seen[0] && seen[1]) {
            let event = browser.expect(|v| v["ev"] == "join").await;
            seen[0] |= event["page"] == first;
            seen[1] |= event["page"] == second;
        }
        browser_times.push(start.elapsed());
        browser.call(json!({"cmd": "leave", "page": first})).await;
        browser.call(json!({"cmd": "leave", "page": second})).await;

        // genos joins a browser.
        let room = format!("g2b-{round}");
        let (page, _) = browser.join(relay.url(), &room, None).await;
        let start = Instant::now();
        let config = TrysteroConfig::new("genos-interop", &room, [relay.url()])
            .with_webrtc(WebRtcConfig::loopback());
        let (genos, mut events) = TrysteroRoom::join(config).await.unwrap();
        loop {
            match events.recv().await.expect("room events ended") {
                TrysteroEvent::PeerJoined { .. } => break,
                _ => continue,
            }
        }
        browser.event("join", page).await;
        genos_times.push(start.elapsed());
        genos.leave().await;
        browser.call(json!({"cmd": "leave", "page": page})).await;
    }
    let (b_median, b_p90) = stats(browser_times);
    let (g_median, g_p90) = stats(genos_times);
    println!(
        "join time in a Trystero room, {rounds} rounds each (ms, until both sides see the join):"
    );
    println!("  browser joins browser: median {b_median:.0}, p90 {b_p90:.0}");
    println!("  genos joins browser:   median {g_median:.0}, p90 {g_p90:.0}");
    println!(
        "  ratio genos / browser (median): {:.2}",
        g_median / b_median
    );
}
