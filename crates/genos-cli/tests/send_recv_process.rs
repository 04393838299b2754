//! `genos send` and `genos recv` as real processes meeting over a `genos relay` process, the
//! way two users would run them; and through a `genos serve` fallback server with direct
//! links off.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::{RelayProcess, finish};

#[test]
fn a_file_sent_by_one_process_arrives_intact_in_another() {
    let relay = RelayProcess::start(&[]);
    let url = relay.url.clone();
    let dir = std::env::temp_dir().join(format!("genos-send-recv-{}", rand::random::<u64>()));
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let source = dir.join("payload.bin");
    let data: Vec<u8> = (0..9_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&source, &data).unwrap();
    let room = format!("send-recv-{}", rand::random::<u32>());
    let common = |cmd: &mut Command| {
        cmd.args([
            "--room",
            &room,
            "--password",
            "pw",
            "--relay",
            &url,
            "--local",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    };
    let mut recv = Command::new(env!("CARGO_BIN_EXE_genos"));
    recv.arg("recv").args(["--out", out.to_str().unwrap()]);
    common(&mut recv);
    let recv = recv.spawn().expect("run genos recv");
    let mut send = Command::new(env!("CARGO_BIN_EXE_genos"));
    send.arg("send").arg(&source);
    common(&mut send);
    let send = send.spawn().expect("run genos send");

    let (sent, send_out, send_err) = finish(send, "genos send");
    let (received, recv_out, recv_err) = finish(recv, "genos recv");
    assert!(sent, "send failed:\n{send_out}\n{send_err}");
    assert!(received, "recv failed:\n{recv_out}\n{recv_err}");
    assert!(send_out.contains("stored by 1 of 1 peer(s)"), "{send_out}");
    assert!(recv_out.contains("SHA-256 ok"), "{recv_out}");
    let stored = std::fs::read(out.join("payload.bin")).unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&data));
    // Nothing but the file: the temporary part file was renamed, not left behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_crosses_a_genos_serve_process_with_direct_links_off() {
    let server = RelayProcess::serve(&["--token", "t0ken", "--report-every", "1"]);
    let url = server.url.clone();
    let dir = std::env::temp_dir().join(format!("genos-serve-{}", rand::random::<u64>()));
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let source = dir.join("payload.bin");
    let data: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&source, &data).unwrap();
    let room = format!("serve-{}", rand::random::<u32>());
    let fallback = [
        "--fallback",
        &url,
        "--fallback-token",
        "t0ken",
        "--no-direct",
        "--password",
        "pw",
    ];
    let recv = genos(
        &[&["recv", "--out", out.to_str().unwrap()][..], &fallback[..]].concat(),
        &room,
        &url,
    );
    let send = genos(
        &[&["send", source.to_str().unwrap()][..], &fallback[..]].concat(),
        &room,
        &url,
    );
    let (sent, send_out, send_err) = finish(send, "genos send");
    let (received, recv_out, recv_err) = finish(recv, "genos recv");
    assert!(sent, "send failed:\n{send_out}\n{send_err}");
    assert!(received, "recv failed:\n{recv_out}\n{recv_err}");
    assert!(recv_out.contains("SHA-256 ok"), "{recv_out}");
    let stored = std::fs::read(out.join("payload.bin")).unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&data));
    // The server carried it: its hub counts the circuit and the megabytes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let carried = loop {
        let line = server
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server reports the circuit in time");
        if line.starts_with("hub: ") && !line.contains(" 0 paired") && !line.contains(" 0 MiB") {
            break line;
        }
    };
    assert!(carried.contains("MiB forwarded"), "{carried}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory with a 256 MiB file to send (large enough to be mid-transfer when a process
/// is killed after the first part arrived).
fn big_file() -> (PathBuf, PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("genos-fail-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut data = Vec::with_capacity(256 << 20);
    for n in 0..256u32 {
        data.extend_from_slice(&n.to_be_bytes());
        data.extend_from_slice(&block[4..]);
    }
    let source = dir.join("big.bin");
    std::fs::write(&source, &data).unwrap();
    (dir, source, data)
}

fn genos(args: &[&str], room: &str, relay: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_genos"))
        .args(args)
        .args(["--room", room, "--relay", relay, "--local"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run genos")
}

/// Waits until a receiver writing into `out` has taken in at least `bytes`.
fn wait_for_bytes(out: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let part = out.join(".big.bin.genos-part");
    while std::fs::metadata(&part).map_or(true, |meta| meta.len() < bytes) {
        assert!(
            Instant::now() < deadline,
            "no part arrived in {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_killed_receiver_does_not_cost_the_others_and_is_reported() {
    let relay = RelayProcess::start(&[]);
    let (dir, source, data) = big_file();
    let (out_a, out_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&out_a).unwrap();
    std::fs::create_dir_all(&out_b).unwrap();
    let room = format!("fail-{}", rand::random::<u32>());
    let recv_a = genos(
        &["recv", "--out", out_a.to_str().unwrap()],
        &room,
        &relay.url,
    );
    let mut recv_b = genos(
        &["recv", "--out", out_b.to_str().unwrap()],
        &room,
        &relay.url,
    );
    let send = genos(
        &["send", source.to_str().unwrap(), "--peers", "2"],
        &room,
        &relay.url,
    );
    wait_for_bytes(&out_b, 1);
    recv_b.kill().unwrap();
    let _ = recv_b.wait();

    let (sent, send_out, send_err) = finish(send, "genos send");
    let (received, recv_out, recv_err) = finish(recv_a, "genos recv (a)");
    assert!(
        received,
        "the healthy receiver failed:\n{recv_out}\n{recv_err}"
    );
    let stored = std::fs::read(out_a.join("big.bin")).unwrap();
    assert!(stored == data, "the healthy receiver's file differs");
    // The sender finished for the healthy receiver, reported the killed one, and says so
    // with its exit status.
    assert!(
        !sent,
        "send succeeded although a receiver was killed:\n{send_out}"
    );
    assert!(
        send_out.contains("stored by 1 of 2 peer(s)"),
        "{send_out}\n{send_err}"
    );
    assert!(send_out.contains("FAILED"), "{send_out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a transfer of `source` into `out` and kills the sender once two parts (8 MiB)
/// arrived; checks the receiver's error and that it kept a partial file. Returns the room.
fn interrupted_transfer(relay: &str, source: &Path, out: &Path, size: u64) -> String {
    let room = format!("fail-{}", rand::random::<u32>());
    let recv = genos(&["recv", "--out", out.to_str().unwrap()], &room, relay);
    let mut send = genos(&["send", source.to_str().unwrap()], &room, relay);
    wait_for_bytes(out, 8 << 20);
    send.kill().unwrap();
    let _ = send.wait();
    let (received, recv_out, recv_err) = finish(recv, "genos recv");
    assert!(
        !received,
        "recv succeeded without a whole file:\n{recv_out}"
    );
    assert!(
        recv_err.contains("left before the file was complete"),
        "{recv_out}\n{recv_err}"
    );
    let kept = std::fs::metadata(out.join(".big.bin.genos-part"))
        .unwrap()
        .len();
    assert!(kept >= 8 << 20 && kept < size, "kept {kept} bytes");
    assert!(
        !out.join("big.bin").exists(),
        "an incomplete file took the final name"
    );
    room
}

/// Sends `source` into `out` again; returns what the receiver printed.
fn transfer_again(relay: &str, room: &str, source: &Path, out: &Path, data: &[u8]) -> String {
    let recv = genos(&["recv", "--out", out.to_str().unwrap()], room, relay);
    let send = genos(&["send", source.to_str().unwrap()], room, relay);
    let (sent, send_out, send_err) = finish(send, "genos send (again)");
    let (received, recv_out, recv_err) = finish(recv, "genos recv (again)");
    assert!(sent, "{send_out}\n{send_err}");
    assert!(received, "{recv_out}\n{recv_err}");
    assert!(
        std::fs::read(out.join("big.bin")).unwrap() == data,
        "the received file differs"
    );
    assert_eq!(
        std::fs::read_dir(out).unwrap().count(),
        1,
        "leftovers beside the file"
    );
    recv_out
}

#[test]
fn a_receiver_whose_sender_is_killed_ends_with_an_error_and_resumes_later() {
    let relay = RelayProcess::start(&[]);
    let (dir, source, data) = big_file();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let room = interrupted_transfer(&relay.url, &source, &out, data.len() as u64);
    let printed = transfer_again(&relay.url, &room, &source, &out, &data);
    assert!(printed.contains("resuming big.bin at byte"), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kept bytes that differ from the sender's are not resumed from: the sender sees their
/// digest differ and sends the whole file.
#[test]
fn a_partial_file_that_differs_is_sent_again_in_full() {
    let relay = RelayProcess::start(&[]);
    let (dir, source, data) = big_file();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let room = interrupted_transfer(&relay.url, &source, &out, data.len() as u64);
    let partial = out.join(".big.bin.genos-part");
    let mut kept = std::fs::read(&partial).unwrap();
    kept[1000] ^= 0xff;
    std::fs::write(&partial, kept).unwrap();
    let printed = transfer_again(&relay.url, &room, &source, &out, &data);
    assert!(!printed.contains("resuming"), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recv_refuses_an_output_path_that_is_not_a_directory() {
    let output = Command::new(env!("CARGO_BIN_EXE_genos"))
        .args([
            "recv",
            "--room",
            "r",
            "--local",
            "--relay",
            "ws://127.0.0.1:9",
            "--out",
            "/nonexistent/dir",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a directory"));
}
