//! `genos swarm` run as a real process: 30 peers (full mesh) and 100 peers (cells) join one
//! room over the embedded relay and WebRTC on 127.0.0.1, then broadcast and send to single
//! peers; 40 peers of a cells room on the in-memory backends go through a crash.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
fn a_cells_room_on_the_memory_backends_delivers_every_broadcast_through_a_crash() {
    // The room code of the WebRTC swarms, here on the in-memory backends (20 ms + up to 10 ms per
    // message, 1% of signaling lost); a quarter of the peers crash at once (no goodbye)
    // halfway through the traffic. (With `--crash-cell`, which cuts one peer off on
    // purpose, this test failed once in 8 runs after 264 s, most likely the survivors not
    // re-forming within 240 s: issue #14. The simulator test of a whole cell crashing
    // covers the fix.)
    let args = "--backend memory --peers 40 --topology cells --broadcasts 30 --directed 30 \
                --rate 50 --crash 0.25 --repair-timeout 120 --form-timeout 300";
    let report = swarm(&args.split_whitespace().collect::<Vec<_>>());
    assert_eq!(report["peers"], 40, "{report}");
    assert_eq!(report["topology"], "cells", "{report}");
    assert!(report["cells"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["crashed"], 10, "{report}");
    // Every broadcast reached every peer alive when it was sent, the ones after the crash
    // included (lazy repair pulls what a dead bridge did not forward).
    assert_eq!(report["delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["delivered_ratio_after_crash"], 1.0, "{report}");
    assert_eq!(report["misdelivered"], 0, "{report}");
    let hops = report["hops_mean"].as_f64().unwrap();
    assert!(hops > 1.0 && hops <= 3.0, "{report}");
    // The survivors re-formed: one view, every cell mate linked, every cell pair bridged,
    // no link left to a crashed peer.
    let repaired = report["repaired_ms"].as_f64();
    assert!(repaired.is_some_and(|ms| ms > 0.0), "{report}");
    // Every directed send arrived too, those right after the crash included: a forwarder
    // that died unnoticed loses its copy, and the origin resends what its target has not
    // acknowledged (0.87-1.0 of them arrived before acks existed).
    assert_eq!(report["directed_delivered_ratio"], 1.0, "{report}");
}

// About a minute in a debug build. It stalled in about half the runs of session 8 (a cell
// skewed by hashing waited for a resize that never came; a view a little small for the room
// stood until the next census); with those fixed it formed in 5 of 6 runs, the other not
// within 300 s by the exact-plan check of session 9. With the structural check of session
// 12 (one view, cell mates linked, every cell pair bridged, nothing lingering) 4 of 4.
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
        "--form-timeout",
        "300",
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
    assert!(
        report["connections_mean"].as_f64().unwrap() < 25.0,
        "{report}"
    );
    assert_eq!(report["delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["directed_delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["misdelivered"], 0, "{report}");
    // Broadcasts cross cells: more than one hop on average, at most three.
    let hops = report["hops_mean"].as_f64().unwrap();
    assert!(hops > 1.0 && hops <= 3.0, "{report}");
}

/// A nostr-rs-relay process (an independent relay implementation) on a free loopback port,
/// killed on drop. .ci/run installs it.
struct NostrRsRelay {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl NostrRsRelay {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("genos-swarm-nrr-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "[info]\nrelay_url = \"ws://127.0.0.1:{port}/\"\n\n[database]\ndata_directory = \"{data}\"\n\n\
             [network]\naddress = \"127.0.0.1\"\nport = {port}\n\n[limits]\nmessages_per_sec = 1000\n",
            data = dir.display()
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let binary = std::env::var_os("NOSTR_RS_RELAY")
            .map(PathBuf::from)
            .or_else(|| {
                let home = std::env::var_os("HOME").map(PathBuf::from)?;
                Some(home.join(".cargo/bin/nostr-rs-relay")).filter(|p| p.exists())
            })
            .unwrap_or_else(|| PathBuf::from("nostr-rs-relay"));
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .arg("--db")
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nostr-rs-relay not found: .ci/run installs it (cargo install nostr-rs-relay)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nostr-rs-relay did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

impl Drop for NostrRsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn thirty_peers_form_a_cells_room_on_an_independent_relay() {
    let relay = NostrRsRelay::start();
    let url = relay.url();
    let report = swarm(&[
        "--peers",
        "30",
        "--topology",
        "cells",
        "--broadcasts",
        "30",
        "--directed",
        "30",
        "--rate",
        "50",
        "--relay",
        &url,
    ]);
    let cells = report["cells"].as_u64().unwrap();
    assert!((4..=7).contains(&cells), "{report}");
    let planned = report["connections_planned_max"].as_u64().unwrap();
    let max = report["connections_max"].as_u64().unwrap();
    assert!(planned < 29 && max <= planned + planned / 2, "{report}");
    assert_eq!(report["delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["directed_delivered_ratio"], 1.0, "{report}");
    assert_eq!(report["misdelivered"], 0, "{report}");
}

#[test]
fn swarm_refuses_what_it_cannot_do() {
    for args in [
        &["swarm", "--peers", "1"][..],
        &["swarm", "--peers", "129"],
        &["swarm", "--peers", "1001", "--topology", "cells"],
        &["swarm", "--topology", "rings"],
        &["swarm", "--backend", "memory", "--peers", "5001"],
        &["swarm", "--backend", "memory", "--loss", "2"],
        &["swarm", "--backend", "memory", "--latency-ms=-1"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_genos"))
            .args(args)
            .output()
            .expect("run genos swarm");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            ["--peers", "--topology", "--loss", "--latency-ms"]
                .iter()
                .any(|flag| stderr.contains(flag)),
            "{stderr}"
        );
    }
}
