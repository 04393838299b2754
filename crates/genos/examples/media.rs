//! Two peers on this machine: one sends an audio and a video track (synthetic encoded
//! frames: genos moves encoded media, it has no encoders) with metadata, the other receives
//! them, counts the frames and measures how long each frame took from write to read. The
//! receiver asks for a key frame midway (as after a loss); the sender sees each request
//! (and one when the receiver joined the track) where an encoder would make its next frame a
//! key frame.
//!
//! `cargo run --release -p genos --example media`
//!
//! With real media, read the frames from a file instead:
//! `genos::transport::media::files::MediaReader::open("clip.ivf")?.next_sample()?`.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::{Codec, Genos, RoomEvent, Sample, TrackOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default()).await?;
    let join = || {
        Genos::builder("media-example", "studio")
            .password("shared secret")
            .relay(relay.url())
            .same_host_only()
            .join()
    };
    let (sender, receiver) = (join().await?, join().await?);
    let mut events = receiver.events();
    while let Some(event) = events.next().await {
        if let RoomEvent::PeerJoined { .. } = event {
            break;
        }
    }
    let mic = sender
        .add_track(Codec::Opus, TrackOptions::new().with_metadata("microphone"))
        .await?;
    let camera = sender
        .add_track(Codec::Vp8, TrackOptions::new().with_metadata("camera"))
        .await?;
    println!(
        "sending tracks {} (Opus) and {} (VP8)",
        mic.id(),
        camera.id()
    );

    // Two seconds of media: Opus packets every 20 ms, VP8 frames every 33 ms; each frame
    // carries the microseconds since `start` at which it was written, to measure latency.
    let start = Instant::now();
    let stamp = |len: usize| {
        let micros = start.elapsed().as_micros() as u64;
        let mut frame = micros.to_be_bytes().to_vec();
        frame.resize(len, 0);
        frame
    };
    let send = async {
        let (mut audio_at, mut video_at) = (Duration::ZERO, Duration::ZERO);
        let mut key_frames = 0;
        while audio_at < Duration::from_secs(2) {
            if audio_at <= video_at {
                tokio::time::sleep_until((start + audio_at).into()).await;
                mic.write_sample(Sample::new(stamp(120), Duration::from_millis(20)))
                    .await?;
                audio_at += Duration::from_millis(20);
            } else {
                tokio::time::sleep_until((start + video_at).into()).await;
                // An encoder would make this frame a key frame.
                if camera.keyframe_requested().now_or_never().is_some() {
                    key_frames += 1;
                }
                camera
                    .write_sample(Sample::new(stamp(12_000), Duration::from_millis(33)))
                    .await?;
                video_at += Duration::from_millis(33);
            }
        }
        println!("key frames wanted by the receiver: {key_frames}");
        sender.remove_track(&mic).await?;
        sender.remove_track(&camera).await?;
        Ok::<_, genos::RoomError>(())
    };
    let receive = async {
        let mut readers = Vec::new();
        while readers.len() < 2 {
            match events.next().await {
                Some(RoomEvent::PeerTrack {
                    track, metadata, ..
                }) => {
                    println!(
                        "receiving {} ({}) from the sender: {}",
                        track.id(),
                        track.codec(),
                        String::from_utf8_lossy(&metadata)
                    );
                    readers.push(tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        while let Some(sample) = track.recv_sample().await {
                            if latencies.len() == 20 && track.codec() == Codec::Vp8 {
                                // As a decoder would after losing a frame.
                                let _ = track.request_keyframe();
                            }
                            let mut sent = [0u8; 8];
                            if let Some(head) = sample.data.get(..8) {
                                sent.copy_from_slice(head);
                            }
                            let sent = Duration::from_micros(u64::from_be_bytes(sent));
                            latencies.push(start.elapsed().saturating_sub(sent));
                        }
                        latencies.sort();
                        (track.codec(), latencies)
                    }));
                }
                Some(_) => {}
                None => break,
            }
        }
        readers
    };
    let (sent, readers) = tokio::join!(send, receive);
    sent?;
    for reader in readers {
        let (codec, latencies) = reader.await?;
        let median = latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default();
        println!(
            "{codec}: {} frames, write-to-read latency median {median:.1?}",
            latencies.len()
        );
    }
    sender.leave().await?;
    receiver.leave().await?;
    Ok(())
}
