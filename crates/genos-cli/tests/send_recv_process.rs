//! `genos send` and `genos recv` as real processes meeting over a `genos relay` process, the
//! way two users would run them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::process::{Command, Stdio};

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
    assert!(send_out.contains("SHA-256 verified by each"), "{send_out}");
    assert!(recv_out.contains("SHA-256 ok"), "{recv_out}");
    let stored = std::fs::read(out.join("payload.bin")).unwrap();
    assert_eq!(Sha256::digest(&stored), Sha256::digest(&data));
    // Nothing but the file: the temporary part file was renamed, not left behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
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
