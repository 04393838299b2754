//! Two peers on this machine: one sends a 32 MiB file-like payload with metadata and
//! progress, the other receives it and checks its SHA-256.
//!
//! `cargo run --release -p genos --example file_transfer`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use futures::StreamExt;
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::{Genos, RoomEvent, SendOptions};
use sha2::{Digest, Sha256};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default()).await?;
    let join = || {
        Genos::builder("file-transfer-example", "drop-box")
            .password("shared secret")
            .relay(relay.url())
            .same_host_only()
            .join()
    };
    let (sender, receiver) = (join().await?, join().await?);
    let mut events = sender.events();
    while let Some(event) = events.next().await {
        if let RoomEvent::PeerJoined { .. } = event {
            break;
        }
    }

    let data: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let digest = Sha256::digest(&data);
    let files = receiver.channel("files")?;
    let mut progress = files.progress(1024);
    tokio::spawn(async move {
        let mut last = 0;
        while let Some(p) = progress.next().await {
            let percent = p.done * 100 / p.total.max(1);
            if percent >= last + 25 {
                println!("received {percent}%");
                last = percent;
            }
        }
    });

    let start = Instant::now();
    let options = SendOptions::default().with_meta("example.bin");
    sender.channel("files")?.send_with(data, options).await?;
    let file = files.recv().await.ok_or("the receiver left")?;
    let elapsed = start.elapsed();
    let name = String::from_utf8_lossy(file.meta.as_deref().unwrap_or_default()).into_owned();
    assert_eq!(Sha256::digest(&file.payload), digest, "content differs");
    println!(
        "{name}: {} MiB in {elapsed:.2?} ({:.0} MiB/s), SHA-256 matches",
        file.payload.len() >> 20,
        (file.payload.len() as f64 / (1 << 20) as f64) / elapsed.as_secs_f64()
    );
    sender.leave().await?;
    receiver.leave().await?;
    Ok(())
}
