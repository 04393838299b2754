//! `genos demo` and `genos relay` run as real processes, the way a user runs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn demo_runs_and_reports_every_connection_and_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(["demo", "--peers", "4"])
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
    // 4 peers: 6 pairs, and each peer hears a line from each of the 3 others.
    assert!(
        stdout.contains("summary: 4 peers, 6 connections, 12 chat lines"),
        "{stdout}"
    );
    assert_eq!(stdout.matches(" left").count(), 4, "{stdout}");
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut relay = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(["relay", "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run genos relay");
    let mut first_line = String::new();
    BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    assert!(
        first_line.contains(&format!("ws://127.0.0.1:{port}")),
        "{first_line}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args([
            "demo",
            "--peers",
            "3",
            "--relay",
            &format!("ws://127.0.0.1:{port}"),
        ])
        .output()
        .expect("run genos demo");
    relay.kill().unwrap();
    relay.wait().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("summary: 3 peers, 3 connections, 6 chat lines"),
        "{stdout}"
    );
}
