//! `genos demo` run as a real process, the way the README tells a user to run it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

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
