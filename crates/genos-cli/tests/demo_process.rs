//! `genos demo` and `genos relay` run as real processes, the way a user runs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::process::Command;

use support::RelayProcess;

#[test]
fn demo_runs_and_reports_every_connection_and_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(["demo", "--peers", "4"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run genos demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Nostr relay at ws://127.0.0.1:"),
        "{stdout}"
    );
    // 4 peers: 6 pairs, each peer hears a line from each of the 3 others, and the 3
    // receivers each get the file intact.
    assert!(
        stdout.contains("summary: 4 peers, 6 connections, 12 chat lines, 3 files"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("SHA-256 ok").count(), 3, "{stdout}");
    assert_eq!(stdout.matches(" left").count(), 4, "{stdout}");
    // Quiet by default: peers leaving are expected, not errors (the embedded relay logged
    // "Broken pipe" as an ERROR before the CLI's log filter).
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn demo_refuses_a_bad_peer_count() {
    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(["demo", "--peers", "1"])
        .output()
        .expect("run genos demo");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--peers"));
}

/// `genos relay` in one process, `genos demo --relay` in another, meeting over it.
#[test]
fn demo_meets_over_a_relay_run_by_genos_relay() {
    let relay = RelayProcess::start(&[]);

    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(["demo", "--peers", "3", "--relay", &relay.url])
        .output()
        .expect("run genos demo");
    drop(relay);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("summary: 3 peers, 3 connections, 6 chat lines, 2 files"),
        "{stdout}"
    );
}

/// A relay process demanding more proof of work than genos mines is muted; the room meets
/// over the other relay (a `genos relay` process too).
#[test]
fn a_greedy_relay_process_is_muted_and_peers_meet_over_the_other() {
    let good = RelayProcess::start(&[]);
    let greedy = RelayProcess::start(&["--min-pow", "40"]);
    let (good_url, greedy_url) = (good.url.clone(), greedy.url.clone());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outcome = runtime.block_on(async {
        use bytes::Bytes;
        use futures::StreamExt;
        use genos::crypto::Identity;
        use genos::signal::nostr::{MuteReason, NostrConfig, NostrSignaling, RelayState};
        use genos::signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};

        let topic = Topic::from_bytes(rand::random());
        let join = |identity: Identity| {
            let peer = identity.peer_id();
            let config = NostrConfig::with_relays([good_url.clone(), greedy_url.clone()]);
            let backend = NostrSignaling::new(identity, config).unwrap();
            async move { backend.join(JoinRequest::new(topic, peer)).await.unwrap() }
        };
        let (a, _a_events) = join(Identity::generate()).await;
        let (b, mut b_events) = join(Identity::generate()).await;
        // b's join may have been confirmed by the greedy relay before its subscription on
        // the good one was live; ephemeral events are not stored, so say it until heard.
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                a.send_to(b.local_peer(), Bytes::from_static(b"hi"))
                    .await
                    .unwrap();
                let heard = tokio::time::timeout(std::time::Duration::from_millis(500), async {
                    loop {
                        if let Some(SignalEvent::Message { payload, .. }) = b_events.next().await {
                            return payload;
                        }
                    }
                })
                .await;
                if let Ok(payload) = heard {
                    return payload;
                }
            }
        })
        .await
        .expect("no message");
        assert_eq!(got, "hi");
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let greedy_state = a
                    .relays()
                    .into_iter()
                    .find(|h| h.url == greedy_url)
                    .map(|h| h.state);
                if let Some(RelayState::Muted(MuteReason::ProofOfWork { required })) = greedy_state
                {
                    return required;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
    });
    drop((good, greedy));
    assert_eq!(outcome.expect("the greedy relay was never muted"), Some(40));
}
