//! Media benchmarks on 127.0.0.1: sample-in -> sample-out latency of genos tracks beside raw
//! webrtc (the same crate, RTP read straight off its track: a frame counts as arrived with its
//! marker packet, the floor any receiver can reach), then CPU and delivery with many streams.
//!
//! Run: `cargo bench -p genos-transport --bench media` (also `cargo xtask bench media`).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use genos_transport::webrtc::{WebRtcConfig, WebRtcConnection, WebRtcTransport};
use genos_transport::{
    Codec, Connection, ConnectionEvent, LocalTrack, RemoteTrack, Role, Sample, TrackSpec, Transport,
};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, SettingEngineBuilder,
};

const AUDIO: (Codec, usize, Duration) = (Codec::Opus, 120, Duration::from_millis(20));
const VIDEO: (Codec, usize, Duration) = (Codec::Vp8, 12_000, Duration::from_millis(33));

fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// A frame whose first 8 bytes are its number.
fn frame(n: u64, len: usize) -> Vec<u8> {
    let mut frame = n.to_be_bytes().to_vec();
    frame.resize(len, 0x5a);
    frame
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------- genos

/// When each (track, sample) arrived.
type Arrivals = Arc<Mutex<Vec<((usize, u64), Instant)>>>;

async fn genos_pair(congestion_control: bool) -> (WebRtcConnection, mpsc::Receiver<RemoteTrack>) {
    let config = WebRtcConfig::loopback().with_congestion_control(congestion_control);
    let transport = WebRtcTransport::new(config).unwrap();
    let (a, mut a_events) = transport.connect(Role::Offerer).await.unwrap();
    let (b, mut b_events) = transport.connect(Role::Answerer).await.unwrap();
    let (tracks, track_rx) = mpsc::channel(256);
    let to_b = b.clone();
    tokio::spawn(async move {
        while let Some(event) = a_events.next().await {
            if let ConnectionEvent::Signal(message) = event {
                let _ = to_b.handle_signal(message).await;
            }
        }
    });
    let to_a = a.clone();
    tokio::spawn(async move {
        while let Some(event) = b_events.next().await {
            match event {
                ConnectionEvent::Signal(message) => {
                    let _ = to_a.handle_signal(message).await;
                }
                ConnectionEvent::TrackReceived(track) => {
                    let _ = tracks.send(track).await;
                }
                _ => {}
            }
        }
    });
    // Keep b alive as long as the bench runs.
    std::mem::forget(b);
    (a, track_rx)
}

/// Plays `count` samples on each of `tracks` at their pace; returns the send instants by
/// (track, sample).
///
/// With `follow`, samples are sized to the first track's congestion control estimate (read
/// every 5 samples, 90% of it, at most `kind`'s size; GCC's 300 kbit/s start before the first
/// estimate), as an encoder following it would.
async fn play(
    tracks: &[LocalTrack],
    kind: (Codec, usize, Duration),
    count: u64,
    follow: bool,
) -> HashMap<(usize, u64), Instant> {
    let start = tokio::time::Instant::now();
    let mut sent = HashMap::new();
    let size_for = |bits: f64| {
        let per_sample = bits * 0.9 * kind.2.as_secs_f64() / 8.0;
        (per_sample as usize).clamp(64, kind.1)
    };
    let mut len = if follow { size_for(300_000.0) } else { kind.1 };
    for n in 0..count {
        tokio::time::sleep_until(start + kind.2 * n as u32).await;
        if follow
            && n % 5 == 0
            && let Some(bits) = tracks[0].target_bitrate().await
        {
            len = size_for(bits as f64);
        }
        for (t, track) in tracks.iter().enumerate() {
            sent.insert((t, n), Instant::now());
            track
                .write_sample(Sample::new(frame(n, len), kind.2))
                .await
                .unwrap();
        }
    }
    sent
}

/// What one genos run measured.
struct GenosRun {
    latencies: Vec<Duration>,
    delivered: f64,
    cpu_seconds: f64,
    /// The first track's congestion control estimate at the end (bits/s).
    estimate: Option<u64>,
    /// Payload bits per second the first track carried.
    sent_bits_per_second: f64,
}

/// How a run's tracks are fed.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    /// Fixed-size samples, no congestion control.
    Plain,
    /// Fixed-size samples with congestion control on: the pacer holds what exceeds the
    /// estimate.
    Paced,
    /// Congestion control on, samples sized to its estimate.
    Following,
}

/// Runs `streams` tracks of `kind` on one genos connection for `count` samples each.
async fn genos_run(
    streams: usize,
    kind: (Codec, usize, Duration),
    count: u64,
    feed: Feed,
) -> GenosRun {
    let (a, mut track_rx) = genos_pair(feed != Feed::Plain).await;
    let mut locals = Vec::new();
    for t in 0..streams {
        let track = a
            .add_track(TrackSpec::new(format!("s{t}"), kind.0))
            .await
            .unwrap();
        track.ready().await.unwrap();
        locals.push(track);
    }
    let received: Arrivals = Arc::default();
    let readers = tokio::spawn({
        let received = received.clone();
        async move {
            let mut handles = Vec::new();
            for _ in 0..streams {
                let Some(track) = track_rx.recv().await else {
                    break;
                };
                let index: usize = track.id()[1..].parse().unwrap();
                let received = received.clone();
                handles.push(tokio::spawn(async move {
                    while let Some(sample) = track.recv_sample().await {
                        let n = u64::from_be_bytes(sample.data[..8].try_into().unwrap());
                        received.lock().unwrap().push(((index, n), Instant::now()));
                    }
                }));
            }
            handles
        }
    });
    let cpu = cpu_time();
    let sent = play(&locals, kind, count, feed == Feed::Following).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = (cpu_time() - cpu).as_secs_f64();
    let sent_bits_per_second = locals.first().map_or(0.0, |track| {
        track.stats().bytes as f64 * 8.0 / (kind.2.as_secs_f64() * count as f64)
    });
    let estimate = match locals.first() {
        Some(track) => track.target_bitrate().await,
        None => None,
    };
    for track in &locals {
        a.remove_track(track).await.unwrap();
    }
    a.close().await;
    for handle in readers.await.unwrap() {
        handle.abort();
    }
    let received = received.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = received
        .iter()
        .filter_map(|(key, at)| sent.get(key).map(|s| at.saturating_duration_since(*s)))
        .collect();
    latencies.sort();
    let delivered = latencies.len() as f64 / sent.len() as f64;
    GenosRun {
        latencies,
        delivered,
        cpu_seconds: cpu,
        estimate,
        sent_bits_per_second,
    }
}

// ---------------------------------------------------------------- raw webrtc

struct RawHandler {
    candidates: mpsc::UnboundedSender<webrtc::peer_connection::RTCIceCandidateInit>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    connected: mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for RawHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.candidates.send(init);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            let _ = self.connected.send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

fn raw_codec(codec: Codec) -> (RTCRtpCodecParameters, RtpCodecKind) {
    match codec {
        Codec::Opus => (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        ),
        _ => (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                payload_type: 96,
            },
            RtpCodecKind::Video,
        ),
    }
}

struct RawPeer {
    pc: Arc<dyn PeerConnection>,
    candidates: mpsc::UnboundedReceiver<webrtc::peer_connection::RTCIceCandidateInit>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    connected: mpsc::UnboundedReceiver<()>,
}

async fn raw_peer() -> RawPeer {
    let mut engine = MediaEngine::default();
    for codec in [Codec::Opus, Codec::Vp8] {
        let (parameters, kind) = raw_codec(codec);
        engine.register_codec(parameters, kind).unwrap();
    }
    let registry = register_default_interceptors(Registry::new(), &mut engine).unwrap();
    let (candidates, candidate_rx) = mpsc::unbounded_channel();
    let (tracks, track_rx) = mpsc::unbounded_channel();
    let (connected, connected_rx) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(RawHandler {
            candidates,
            tracks,
            connected,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    RawPeer {
        pc: Arc::new(pc),
        candidates: candidate_rx,
        tracks: track_rx,
        connected: connected_rx,
    }
}

/// Raw webrtc: one track, samples written with the same `write_sample`, frames read as RTP
/// (a frame is in with its marker packet; its number sits after the VP8 descriptor).
async fn raw_run(kind: (Codec, usize, Duration), count: u64) -> (Vec<Duration>, f64) {
    let (mut a, mut b) = (raw_peer().await, raw_peer().await);
    let (parameters, track_kind) = raw_codec(kind.0);
    let ssrc = rand::random::<u32>();
    let track = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "raw".into(),
                "raw-track".into(),
                "raw".into(),
                track_kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: parameters.rtp_codec.clone(),
                    ..Default::default()
                }],
            ),
        )
        .unwrap(),
    );
    a.pc.add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = a.pc.create_offer(None).await.unwrap();
    a.pc.set_local_description(offer.clone()).await.unwrap();
    b.pc.set_remote_description(offer).await.unwrap();
    let answer = b.pc.create_answer(None).await.unwrap();
    b.pc.set_local_description(answer.clone()).await.unwrap();
    a.pc.set_remote_description(answer).await.unwrap();
    let (a_pc, b_pc) = (a.pc.clone(), b.pc.clone());
    let mut a_candidates = std::mem::replace(&mut a.candidates, mpsc::unbounded_channel().1);
    let mut b_candidates = std::mem::replace(&mut b.candidates, mpsc::unbounded_channel().1);
    tokio::spawn(async move {
        while let Some(candidate) = a_candidates.recv().await {
            let _ = b_pc.add_ice_candidate(candidate).await;
        }
    });
    tokio::spawn(async move {
        while let Some(candidate) = b_candidates.recv().await {
            let _ = a_pc.add_ice_candidate(candidate).await;
        }
    });
    a.connected.recv().await;
    let received: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let (first_tx, mut first_rx) = mpsc::channel(1);
    {
        let received = received.clone();
        let offset = if kind.0 == Codec::Vp8 { 3 } else { 0 };
        tokio::spawn(async move {
            let Some(remote) = b.tracks.recv().await else {
                return;
            };
            let mut current = None;
            while let Some(event) = remote.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let starts = kind.0 == Codec::Opus || packet.payload[0] & 0x10 != 0;
                    // webrtc's VP8 descriptor: X and I set, a 7-bit picture id (3 bytes)
                    // below 128, a 15-bit one (4 bytes, M bit) from there.
                    let offset = if offset > 0 && packet.payload[2] & 0x80 != 0 {
                        4
                    } else {
                        offset
                    };
                    if starts && packet.payload.len() >= offset + 8 {
                        current = Some(u64::from_be_bytes(
                            packet.payload[offset..offset + 8].try_into().unwrap(),
                        ));
                    }
                    if (packet.header.marker || kind.0 == Codec::Opus)
                        && let Some(n) = current.take()
                    {
                        if n == u64::MAX {
                            let _ = first_tx.try_send(());
                        } else {
                            received.lock().unwrap().push((n, Instant::now()));
                        }
                    }
                }
            }
        });
    }
    // Prime until the receiver sees packets (webrtc reports a track at its first packet).
    let payload_type = parameters.payload_type;
    let write = |n: u64| {
        let track = track.clone();
        async move {
            let sample = rtc::media::Sample {
                data: frame(n, kind.1).into(),
                duration: kind.2,
                ..rtc::media::Sample::new(Instant::now())
            };
            track.write_sample(ssrc, payload_type, &sample, &[]).await
        }
    };
    loop {
        let _ = write(u64::MAX).await;
        if tokio::time::timeout(Duration::from_millis(50), first_rx.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    let start = tokio::time::Instant::now();
    let mut sent = HashMap::new();
    for n in 0..count {
        tokio::time::sleep_until(start + kind.2 * n as u32).await;
        sent.insert(n, Instant::now());
        write(n).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = received.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = received
        .iter()
        .filter_map(|(n, at)| sent.get(n).map(|s| at.saturating_duration_since(*s)))
        .collect();
    latencies.sort();
    let delivered = latencies.len() as f64 / count as f64;
    let _ = a.pc.close().await;
    let _ = b.pc.close().await;
    (latencies, delivered)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("## sample-in -> sample-out latency, one stream (300 samples, paced)\n");
    println!(
        "| stream | raw webrtc median | raw p99 | genos median | genos p99 | genos/raw median | delivered (raw / genos) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, kind) in [
        ("audio: Opus 120 B / 20 ms", AUDIO),
        ("video: VP8 12 KB / 33 ms", VIDEO),
    ] {
        let (raw, raw_delivered) = raw_run(kind, 300).await;
        let GenosRun {
            latencies: genos,
            delivered,
            ..
        } = genos_run(1, kind, 300, Feed::Plain).await;
        let (raw_median, genos_median) = (percentile(&raw, 0.5), percentile(&genos, 0.5));
        println!(
            "| {name} | {} | {} | {} | {} | {:.2} | {:.3} / {:.3} |",
            ms(raw_median),
            ms(percentile(&raw, 0.99)),
            ms(genos_median),
            ms(percentile(&genos, 0.99)),
            genos_median.as_secs_f64() / raw_median.as_secs_f64().max(1e-9),
            raw_delivered,
            delivered,
        );
    }
    println!("\n## many streams on one connection (3 s each): CPU and delivery\n");
    println!("| streams | CPU (% of one core) | CPU per stream (%) | delivered | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for (name, kind, streams, count) in [
        ("audio", AUDIO, 1, 150),
        ("audio", AUDIO, 32, 150),
        ("video", VIDEO, 1, 90),
        ("video", VIDEO, 8, 90),
        ("video", VIDEO, 32, 90),
        ("video", VIDEO, 64, 90),
    ] {
        let wall = kind.2.as_secs_f64() * count as f64 + 0.3;
        let GenosRun {
            latencies,
            delivered,
            cpu_seconds: cpu,
            ..
        } = genos_run(streams, kind, count, Feed::Plain).await;
        let percent = cpu / wall * 100.0;
        println!(
            "| {streams} x {name} | {percent:.1} | {:.2} | {delivered:.3} | {} | {} |",
            percent / streams as f64,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
        );
    }
    println!("\n## congestion control (GCC + pacer): one video stream, 20 s\n");
    println!(
        "| stream | feed | median | p99 | delivered | sent | CPU (% of one core) | estimate at the end |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, kind) in [
        ("VP8 12 KB / 33 ms (2.9 Mbit/s)", VIDEO),
        (
            "VP8 40 KB / 33 ms (9.7 Mbit/s)",
            (Codec::Vp8, 40_000, VIDEO.2),
        ),
    ] {
        for (feed, feed_name) in [
            (Feed::Plain, "off"),
            (Feed::Paced, "on, fixed size"),
            (Feed::Following, "on, sized to the estimate"),
        ] {
            let count = 600;
            let wall = kind.2.as_secs_f64() * count as f64 + 0.3;
            let run = genos_run(1, kind, count, feed).await;
            println!(
                "| {name} | {feed_name} | {} | {} | {:.3} | {:.2} Mbit/s | {:.1} | {} |",
                ms(percentile(&run.latencies, 0.5)),
                ms(percentile(&run.latencies, 0.99)),
                run.delivered,
                run.sent_bits_per_second / 1e6,
                run.cpu_seconds / wall * 100.0,
                run.estimate.map_or("none".to_owned(), |bits| format!(
                    "{:.2} Mbit/s",
                    bits as f64 / 1e6
                )),
            );
        }
    }
}
