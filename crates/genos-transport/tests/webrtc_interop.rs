//! Interop with an independent WebRTC stack: aiortc (Python) answers our offer and echoes
//! data-channel messages; SDP travels over its stdin and stdout. This proves our SDP, ICE,
//! DTLS and SCTP are standard. `.ci/run` installs aiortc with pip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};
use genos_transport::{
    Connection, ConnectionEvent, ConnectionState, DataChannel, Reliability, Role, Transport,
};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_answers_and_echoes() {
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

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/aiortc_echo.py");
    let mut peer = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with aiortc (pip install aiortc)");
    let mut stdin = peer.stdin.take().unwrap();
    writeln!(
        stdin,
        "{}",
        serde_json::json!({"type": "offer", "sdp": sdp})
    )
    .unwrap();
    let answer_line = tokio::task::spawn_blocking({
        let stdout = peer.stdout.take().unwrap();
        move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            line
        }
    })
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer_line).expect("aiortc's answer");
    let signal = serde_json::json!({"type": "answer", "sdp": answer["sdp"]});
    conn.handle_signal(Bytes::from(serde_json::to_vec(&signal).unwrap()))
        .await
        .unwrap();

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
    conn.close().await;
    drop(stdin);
    let _ = peer.wait();
}
