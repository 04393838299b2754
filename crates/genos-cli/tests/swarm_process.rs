//! `genos swarm` run as a real process: 30 peers join one room at once over the embedded
//! relay and WebRTC on 127.0.0.1, then broadcast and send to single peers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

fn swarm(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .arg("swarm")
        .args(args)
        .arg("--json")
        .env_remove("RUST_LOG")
        .output()
        .expect("run genos swarm");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "swarm failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

#[test]
fn thirty_peers_joining_at_once_form_a_mesh_and_deliver_everything() {
    let report = swarm(&[
        "--peers",
        "30",
        "--broadcasts",
        "40",
        "--directed",
        "40",
        "--rate",
        "100",
    ]);
    assert_eq!(report["peers"], 30, "{report}");
    assert_eq!(report["topology"], "mesh", "{report}");
    assert_eq!(report["connections_max"], 29, "{report}");
    assert_eq!(report["connections_mean"], 29.0, "{report}");
    assert_eq!(report["broadcasts"], 40, "{report}");
    assert_eq!(report["delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["directed"], 40, "{report}");
    assert_eq!(report["directed_delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["misdelivered"], 0, "{report}");
    for field in [
        "join_all_ms",
        "delivery_p50_ms",
        "delivery_p99_ms",
        "relay_events_per_peer_min",
        "relay_events_per_peer_join",
        "rss_mib",
    ] {
        let value = report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field}: {report}"));
        assert!(value.is_finite() && value >= 0.0, "{field}: {report}");
    }
    // Joining costs signaling (presence, offers, answers, candidates); carrying traffic on
    // the formed mesh costs none.
    assert!(
        report["relay_events_per_peer_join"].as_f64().unwrap() > 1.0,
        "{report}"
    );
    assert!(
        report["delivery_p99_ms"].as_f64().unwrap() >= report["delivery_p50_ms"].as_f64().unwrap()
    );
}

#[test]
fn swarm_refuses_what_it_cannot_do() {
    for args in [
        &["swarm", "--peers", "1"][..],
        &["swarm", "--peers", "129"],
        &["swarm", "--topology", "cells"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_genos"))
            .args(args)
            .output()
            .expect("run genos swarm");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--peers") || stderr.contains("--topology"),
            "{stderr}"
        );
    }
}
