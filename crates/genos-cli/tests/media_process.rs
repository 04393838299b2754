//! `genos media send` and `genos media recv` as real processes meeting over a `genos relay`
//! process: the files written hold exactly the frames of the files sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use genos::Codec;
use genos::transport::media::files::{MediaReader, MediaWriter};
use sha2::{Digest, Sha256};
use support::{RelayProcess, finish};

/// Frames (or packets) of a file, as checksums, in order.
fn checksums(path: &Path) -> (Codec, Vec<[u8; 32]>) {
    let mut reader = MediaReader::open(path).unwrap();
    let mut sums = Vec::new();
    while let Some(sample) = reader.next_sample().unwrap() {
        sums.push(Sha256::digest(&sample.data).into());
    }
    (reader.codec(), sums)
}

#[test]
fn media_files_sent_by_one_process_are_recorded_frame_for_frame_by_another() {
    let relay = RelayProcess::start(&[]);
    let dir = std::env::temp_dir().join(format!("genos-media-{}", rand::random::<u64>()));
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    // 45 VP8 frames at 30 fps (sizes up to ~20 KB, many packets each) and 75 Opus packets
    // of 20 ms (TOC 0x78): 1.5 s each. genos carries encoded frames without decoding them.
    let video = dir.join("clip.ivf");
    let mut writer = MediaWriter::create(&video, Codec::Vp8).unwrap();
    for n in 0..45u32 {
        let len = 400 + (n as usize * 7_919) % 20_000;
        let frame: Vec<u8> = (0..len)
            .map(|i| (i as u32 ^ n.wrapping_mul(31)) as u8)
            .collect();
        writer.write_frame(&frame, n * 3000).unwrap();
    }
    writer.finish().unwrap();
    let audio = dir.join("voice.ogg");
    let mut writer = MediaWriter::create(&audio, Codec::Opus).unwrap();
    for n in 0..75u32 {
        let mut packet = vec![0x78];
        packet.extend((0..60 + n % 90).map(|i| (i ^ n) as u8));
        writer.write_frame(&packet, n * 960).unwrap();
    }
    writer.finish().unwrap();

    let room = format!("media-{}", rand::random::<u32>());
    let common = |cmd: &mut Command| {
        cmd.args([
            "--room",
            &room,
            "--password",
            "pw",
            "--relay",
            &relay.url,
            "--local",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    };
    let mut recv = Command::new(env!("CARGO_BIN_EXE_genos"));
    recv.args([
        "media",
        "recv",
        "--tracks",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    common(&mut recv);
    let recv = recv.spawn().expect("run genos media recv");
    let mut send = Command::new(env!("CARGO_BIN_EXE_genos"));
    send.args(["media", "send"]).arg(&video).arg(&audio);
    common(&mut send);
    let send = send.spawn().expect("run genos media send");
    let (sent, send_out, send_err) = finish(send, "genos media send");
    let (received, recv_out, recv_err) = finish(recv, "genos media recv");
    assert!(sent, "send failed:\n{send_out}\n{send_err}");
    assert!(received, "recv failed:\n{recv_out}\n{recv_err}");
    assert!(send_out.contains("[video/VP8]: 45 samples"), "{send_out}");
    assert!(send_out.contains("[audio/opus]: 75 samples"), "{send_out}");

    let mut written: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    written.sort();
    assert_eq!(written.len(), 2, "{written:?}\n{recv_out}");
    let recorded: Vec<_> = written.iter().map(|path| checksums(path)).collect();
    for source in [&video, &audio] {
        let (codec, sent) = checksums(source);
        let got = recorded
            .iter()
            .find(|(c, _)| *c == codec)
            .unwrap_or_else(|| panic!("no {codec} file written: {recv_out}"));
        assert_eq!(got.1.len(), sent.len(), "{codec}: frame count\n{recv_out}");
        assert!(got.1 == sent, "{codec}: frames differ");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
