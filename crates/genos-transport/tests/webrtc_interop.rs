//! Interop with an independent WebRTC stack: aiortc (Python) answers our offer (SDP over its
//! stdin and stdout) and then (1) echoes data-channel messages, proving our SDP, ICE, DTLS and
//! SCTP standard; (2) takes part in our renegotiation over the control channel, sends its own
//! VP8 and Opus and decodes ours, proving our RTP, SRTP, codecs and frame reassembly.
//! `.ci/run` installs aiortc with pip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_transport::media::files::opus_packet_duration;
use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos_transport::{
    Codec, Connection, ConnectionEvent, ConnectionState, DataChannel, LocalTrack, Reliability,
    RemoteTrack, Role, Sample, TrackSpec, Transport,
};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to an aiortc process running `script` (in tests/interop), which answered
/// our offer; its later stdout lines come on `lines`.
struct Aiortc {
    conn: <WebRtcTransport as Transport>::Connection,
    events: <WebRtcTransport as Transport>::Events,
    lines: mpsc::UnboundedReceiver<String>,
    stdin: ChildStdin,
    process: Child,
}

impl Aiortc {
    async fn start(script: &str) -> Self {
        let transport = WebRtcTransport::new(WebRtcConfig::loopback()).unwrap();
        let (conn, mut events) = transport.connect(Role::Offerer).await.unwrap();

        // Our offer, then the trickled candidates folded into it (aiortc does not trickle).
        let offer: serde_json::Value = match events.next().await {
            Some(ConnectionEvent::Signal(bytes)) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("expected the offer, got {other:?}"),
        };
        assert_eq!(offer["type"], "offer", "our first signal must be the offer");
        let mut candidates = Vec::new();
        // Wait as long as it takes for the first candidate (a loaded machine is slow), then
        // until the candidates stop coming.
        let quiet = |candidates: &Vec<String>| {
            if candidates.is_empty() {
                TIMEOUT
            } else {
                Duration::from_millis(300)
            }
        };
        while let Ok(Some(event)) = tokio::time::timeout(quiet(&candidates), events.next()).await {
            if let ConnectionEvent::Signal(bytes) = event {
                let signal: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                if signal["type"] == "candidate" {
                    candidates.push(
                        signal["candidate"]["candidate"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    );
                }
            }
        }
        assert!(!candidates.is_empty(), "no local candidate was gathered");
        let mut sdp = offer["sdp"].as_str().unwrap().to_owned();
        for candidate in &candidates {
            let line = candidate.strip_prefix("candidate:").unwrap_or(candidate);
            sdp.push_str(&format!("a=candidate:{line}\r\n"));
        }
        sdp.push_str("a=end-of-candidates\r\n");

        let script = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut process = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiortc (pip install aiortc)");
        let mut stdin = process.stdin.take().unwrap();
        writeln!(
            stdin,
            "{}",
            serde_json::json!({"type": "offer", "sdp": sdp})
        )
        .unwrap();
        let (line_sender, mut lines) = mpsc::unbounded_channel();
        let stdout = process.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_sender.send(line).is_err() {
                    break;
                }
            }
        });
        let answer_line = tokio::time::timeout(TIMEOUT, lines.recv())
            .await
            .expect("aiortc's answer timed out")
            .expect("aiortc exited without an answer");
        let answer: serde_json::Value =
            serde_json::from_str(&answer_line).expect("aiortc's answer");
        let signal = serde_json::json!({"type": "answer", "sdp": answer["sdp"]});
        conn.handle_signal(Bytes::from(serde_json::to_vec(&signal).unwrap()))
            .await
            .unwrap();
        Self {
            conn,
            events,
            lines,
            stdin,
            process,
        }
    }

    async fn stop(mut self) {
        self.conn.close().await;
        drop(self.stdin);
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_answers_and_echoes() {
    let peer = Aiortc::start("aiortc_echo.py").await;
    let conn = &peer.conn;

    let channel = tokio::time::timeout(
        TIMEOUT,
        conn.open_channel("echo", Reliability::ReliableOrdered),
    )
    .await
    .expect("connecting to aiortc timed out")
    .unwrap();
    assert_eq!(conn.state(), ConnectionState::Connected);
    // aiortc advertises 256 KiB (a=max-message-size), as we do: the negotiated limit, and a
    // message that large crosses both stacks.
    assert_eq!(channel.max_message_size(), 256 * 1024);
    let large = Bytes::from(vec![7u8; 200_000]);
    channel.send(large.clone()).await.unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, channel.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, large);
    for i in 0..20u32 {
        let message = Bytes::from(format!("ping {i} {}", "x".repeat(i as usize * 100)));
        channel.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(TIMEOUT, channel.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    peer.stop().await;
}

/// What genos saw of one of aiortc's tracks.
#[derive(Debug, Default)]
struct Received {
    samples: usize,
    lost: u64,
    /// RTP timestamp steps that were not one frame (aiortc's rounding of its 1/30 s frame
    /// times to the 90 kHz clock may be off by one tick).
    uneven_steps: Vec<u32>,
    /// Opus packets whose duration is not 20 ms.
    odd_durations: usize,
    /// The first VP8 frame: a key frame, and its size.
    first_key_frame: Option<(u16, u16)>,
    /// VP8 key frames after the first, before and after genos asked for one (at frame
    /// [`KEY_FRAME_ASKED_AT`]); aiortc's encoder makes one every 3,000 frames on its own.
    key_frames_unasked: usize,
    key_frames_after_asking: usize,
}

/// The VP8 frame after which genos asks aiortc for a key frame (RTCP PLI).
const KEY_FRAME_ASKED_AT: usize = 15;

/// A VP8 key frame's size (RFC 6386 §9.1), None if `frame` is not a key frame.
fn vp8_key_frame_size(frame: &[u8]) -> Option<(u16, u16)> {
    let is_key = frame.first()? & 1 == 0;
    if !is_key || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let dimension =
        |at: usize| Some(u16::from_le_bytes([*frame.get(at)?, *frame.get(at + 1)?]) & 0x3fff);
    Some((dimension(6)?, dimension(8)?))
}

/// Reads aiortc's track, checks each sample and echoes it on `echo`, until the track ends or
/// `stop` fires.
async fn check_and_echo(track: RemoteTrack, echo: LocalTrack) -> Received {
    let codec = track.codec();
    let frame = match codec {
        Codec::Vp8 => Duration::from_nanos(1_000_000_000 / 30),
        _ => Duration::from_millis(20),
    };
    let one_frame = match codec {
        Codec::Vp8 => codec.clock_rate() / 30,
        _ => codec.ticks(frame),
    };
    let mut received = Received::default();
    let mut last_timestamp = None;
    while let Some(sample) = track.recv_sample().await {
        received.samples += 1;
        received.lost += u64::from(sample.lost_before);
        if let Some(last) = last_timestamp
            && sample.rtp_timestamp.wrapping_sub(last).abs_diff(one_frame) > 1
        {
            received
                .uneven_steps
                .push(sample.rtp_timestamp.wrapping_sub(last));
        }
        last_timestamp = Some(sample.rtp_timestamp);
        match codec {
            Codec::Vp8 if received.samples == 1 => {
                received.first_key_frame = vp8_key_frame_size(&sample.data);
            }
            Codec::Vp8 => {
                if vp8_key_frame_size(&sample.data).is_some() {
                    if received.samples > KEY_FRAME_ASKED_AT {
                        received.key_frames_after_asking += 1;
                    } else {
                        received.key_frames_unasked += 1;
                    }
                }
                if received.samples == KEY_FRAME_ASKED_AT {
                    track
                        .request_keyframe()
                        .expect("a video track takes requests");
                }
            }
            Codec::Opus if opus_packet_duration(&sample.data) != Some(frame) => {
                received.odd_durations += 1;
            }
            _ => {}
        }
        if echo
            .write_sample(Sample::new(sample.data, frame))
            .await
            .is_err()
        {
            break;
        }
    }
    received
}

/// aiortc and genos exchange audio and video both ways: genos adds a VP8 and an Opus track
/// (renegotiated over the control channel, which aiortc speaks), aiortc answers with its own
/// VP8 and Opus on the same transceivers; genos checks what it receives (key frame first,
/// nothing lost, one frame per RTP step, 20 ms Opus packets) and echoes every sample back;
/// aiortc decodes the echo and reports what it saw (each video frame a known shade). Midway
/// genos asks aiortc's video for a key frame (RTCP PLI), and one comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_exchanges_audio_and_video() {
    let mut peer = Aiortc::start("aiortc_media.py").await;
    let conn = peer.conn.clone();
    let (camera, microphone) = tokio::time::timeout(TIMEOUT, async {
        tokio::join!(
            conn.add_track(TrackSpec::new("g-cam", Codec::Vp8)),
            conn.add_track(TrackSpec::new("g-mic", Codec::Opus)),
        )
    })
    .await
    .expect("connecting to aiortc and adding tracks timed out");
    let (camera, microphone) = (camera.unwrap(), microphone.unwrap());

    let mut echoes = Vec::new();
    while echoes.len() < 2 {
        let event = tokio::time::timeout(TIMEOUT, peer.events.next())
            .await
            .expect("aiortc's tracks did not arrive")
            .expect("the connection ended");
        if let ConnectionEvent::TrackReceived(track) = event {
            let echo = match track.codec() {
                Codec::Vp8 => camera.clone(),
                _ => microphone.clone(),
            };
            echoes.push((track.codec(), tokio::spawn(check_and_echo(track, echo))));
        }
    }
    let report_line = tokio::time::timeout(Duration::from_secs(60), peer.lines.recv())
        .await
        .expect("aiortc did not report within 60 s")
        .expect("aiortc exited without a report");
    let report: serde_json::Value = serde_json::from_str(&report_line).unwrap();
    assert_eq!(report["type"], "report", "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(report["video"].as_u64().unwrap() >= 40, "{report}");
    assert!(report["audio"].as_u64().unwrap() >= 60, "{report}");
    // Every echoed frame decoded to the shade aiortc gave that frame: whole, in order.
    for (n, shade) in report["shades"].as_array().unwrap().iter().enumerate() {
        let expected = 20.0 + 4.0 * (n * 17 % 50) as f64;
        let decoded = shade.as_f64().unwrap();
        assert!(
            (decoded - expected).abs() <= 1.5,
            "echoed frame {n} decoded to luma {decoded}, sent {expected}: {report}"
        );
    }

    peer.conn.remove_track(&camera).await.unwrap();
    peer.conn.remove_track(&microphone).await.unwrap();
    let conn = peer.conn.clone();
    peer.stop().await;
    drop(conn);
    for (codec, echo) in echoes {
        let received = tokio::time::timeout(TIMEOUT, echo)
            .await
            .expect("a remote track did not end with the connection")
            .unwrap();
        assert!(received.samples >= 40, "{codec}: {received:?}");
        assert_eq!(received.lost, 0, "{codec}: {received:?}");
        assert_eq!(
            received.uneven_steps,
            Vec::<u32>::new(),
            "{codec}: {received:?}"
        );
        assert_eq!(received.odd_durations, 0, "{codec}: {received:?}");
        if codec == Codec::Vp8 {
            assert_eq!(received.first_key_frame, Some((320, 240)), "{received:?}");
            // aiortc answered genos's PLI with a key frame, and made none unasked.
            assert_eq!(received.key_frames_unasked, 0, "{received:?}");
            assert!(received.key_frames_after_asking >= 1, "{received:?}");
        }
    }
}
