//! `genos swarm` run as a real process: 30 peers (full mesh) and 100 peers (cells) join one
//! room over the embedded relay and WebRTC on 127.0.0.1, then broadcast and send to single
//! peers.
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
fn a_hundred_peers_form_a_cells_room_and_deliver_everything() {
    let report = swarm(&[
        "--peers",
        "100",
        "--topology",
        "cells",
        // Peers arriving over half a minute, as a room fills; the first starts it alone.
        "--arrival",
        "30",
        "--broadcasts",
        "60",
        "--directed",
        "60",
        "--rate",
        "50",
    ]);
    assert_eq!(report["peers"], 100, "{report}");
    assert_eq!(report["topology"], "cells", "{report}");
    // About sqrt(100) cells; every peer holds its cell and a few bridges, never the room.
    let cells = report["cells"].as_u64().unwrap();
    assert!((7..=14).contains(&cells), "{report}");
    let planned = report["connections_planned_max"].as_u64().unwrap();
    let max = report["connections_max"].as_u64().unwrap();
    assert!(planned < 40 && max <= planned + planned / 2, "{report}");
    assert!(report["connections_mean"].as_f64().unwrap() < 25.0, "{report}");
    assert_eq!(report["delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["directed_delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["misdelivered"], 0, "{report}");
    // Broadcasts cross cells: more than one hop on average, at most three.
    let hops = report["hops_mean"].as_f64().unwrap();
    assert!(hops > 1.0 && hops <= 3.0, "{report}");
}

#[test]
fn swarm_refuses_what_it_cannot_do() {
    for args in [
        &["swarm", "--peers", "1"][..],
        &["swarm", "--peers", "129"],
        &["swarm", "--peers", "1001", "--topology", "cells"],
        &["swarm", "--topology", "rings"],
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
