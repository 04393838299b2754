//! WebRTC transport benchmarks on 127.0.0.1: genos's settings beside the webrtc crate's own
//! ICE timing, measured in the same run.
//!
//! Run: `cargo xtask bench transport`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos_transport::webrtc::{WebRtcChannel, WebRtcConfig, WebRtcConnection, WebRtcTransport};
use genos_transport::{Connection, ConnectionEvent, DataChannel, Reliability, Role, Transport};

struct Pair {
    a: WebRtcConnection,
    b: WebRtcConnection,
    left: WebRtcChannel,
    right: WebRtcChannel,
}

/// Connects a pair and opens one reliable channel; returns it with the setup time.
async fn pair(transport: &WebRtcTransport) -> (Pair, Duration) {
    let start = Instant::now();
    let (a, mut a_events) = transport.connect(Role::Offerer).await.unwrap();
    let (b, mut b_events) = transport.connect(Role::Answerer).await.unwrap();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(1);
    {
        let b = b.clone();
        tokio::spawn(async move {
            while let Some(event) = a_events.next().await {
                if let ConnectionEvent::Signal(message) = event {
                    let _ = b.handle_signal(message).await;
                }
            }
        });
    }
    {
        let a = a.clone();
        tokio::spawn(async move {
            while let Some(event) = b_events.next().await {
                match event {
                    ConnectionEvent::Signal(message) => {
                        let _ = a.handle_signal(message).await;
                    }
                    ConnectionEvent::ChannelOpened(channel) => {
                        let _ = opened_tx.send(channel).await;
                    }
                    _ => {}
                }
            }
        });
    }
    let left = a
        .open_channel("bench", Reliability::ReliableOrdered)
        .await
        .unwrap();
    // The channel is open for traffic once a first message makes it across.
    left.send(Bytes::from_static(b"x")).await.unwrap();
    let right = opened_rx.recv().await.unwrap();
    right.recv().await.unwrap();
    let elapsed = start.elapsed();
    (Pair { a, b, left, right }, elapsed)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

async fn setup(transport: &WebRtcTransport) -> (Duration, Duration) {
    let mut samples = Vec::new();
    for _ in 0..20 {
        let (pair, elapsed) = pair(transport).await;
        samples.push(elapsed);
        pair.a.close().await;
        pair.b.close().await;
    }
    (percentile(&mut samples, 0.5), percentile(&mut samples, 0.9))
}

async fn throughput(transport: &WebRtcTransport) -> f64 {
    const TOTAL: usize = 256 * 1024 * 1024;
    let (pair, _) = pair(transport).await;
    let message = Bytes::from(vec![7u8; 64 * 1024]);
    let sender = {
        let left = pair.left.clone();
        tokio::spawn(async move {
            for _ in 0..TOTAL / message.len() {
                left.send(message.clone()).await.unwrap();
            }
        })
    };
    let start = Instant::now();
    let mut received = 0;
    while received < TOTAL {
        received += pair.right.recv().await.unwrap().len();
    }
    let elapsed = start.elapsed();
    sender.await.unwrap();
    pair.a.close().await;
    received as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

async fn rtt(transport: &WebRtcTransport) -> (Duration, Duration) {
    let (pair, _) = pair(transport).await;
    let echo = {
        let right = pair.right.clone();
        tokio::spawn(async move {
            while let Some(message) = right.recv().await {
                if right.send(message).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut samples = Vec::new();
    let ping = Bytes::from(vec![1u8; 32]);
    for _ in 0..1000 {
        let start = Instant::now();
        pair.left.send(ping.clone()).await.unwrap();
        pair.left.recv().await.unwrap();
        samples.push(start.elapsed());
    }
    pair.a.close().await;
    echo.abort();
    (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    )
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of /proc/self/stat: 12 and 13 after the name.
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// RSS per connection and idle CPU with 50 connected pairs (100 connections).
async fn idle(transport: &WebRtcTransport) -> (f64, f64) {
    let before = rss_kib();
    let mut pairs = Vec::new();
    for _ in 0..50 {
        pairs.push(pair(transport).await.0);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per_connection = (rss_kib().saturating_sub(before)) as f64 / 100.0;
    let cpu_before = cpu_time();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = (cpu_time() - cpu_before).as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0;
    for pair in &pairs {
        pair.a.close().await;
    }
    (per_connection, cpu)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let genos = WebRtcTransport::new(WebRtcConfig::loopback()).unwrap();
    let stock = WebRtcTransport::new(WebRtcConfig::loopback().with_crate_ice_timing()).unwrap();
    println!("| measure | webrtc crate ICE timing | genos settings | genos / crate |");
    println!("|---|---|---|---|");
    let (stock_median, stock_p90) = setup(&stock).await;
    let (genos_median, genos_p90) = setup(&genos).await;
    println!(
        "| setup, connect -> first message on a new channel, median of 20 | {stock_median:.1?} | {genos_median:.1?} | {:.2} |",
        genos_median.as_secs_f64() / stock_median.as_secs_f64()
    );
    println!(
        "| setup p90 | {stock_p90:.1?} | {genos_p90:.1?} | {:.2} |",
        genos_p90.as_secs_f64() / stock_p90.as_secs_f64()
    );
    let stock_tp = throughput(&stock).await;
    let genos_tp = throughput(&genos).await;
    println!(
        "| bulk 64 KiB messages, one way (MiB/s) | {stock_tp:.1} | {genos_tp:.1} | {:.2} |",
        genos_tp / stock_tp
    );
    let (stock_rtt, stock_rtt99) = rtt(&stock).await;
    let (genos_rtt, genos_rtt99) = rtt(&genos).await;
    println!(
        "| 32-byte RTT median | {stock_rtt:.1?} | {genos_rtt:.1?} | {:.2} |",
        genos_rtt.as_secs_f64() / stock_rtt.as_secs_f64()
    );
    println!(
        "| 32-byte RTT p99 | {stock_rtt99:.1?} | {genos_rtt99:.1?} | {:.2} |",
        genos_rtt99.as_secs_f64() / stock_rtt99.as_secs_f64()
    );
    let (stock_rss, stock_cpu) = idle(&stock).await;
    let (genos_rss, genos_cpu) = idle(&genos).await;
    println!(
        "| RSS per connection (KiB, 100 connections) | {stock_rss:.0} | {genos_rss:.0} | {:.2} |",
        genos_rss / stock_rss.max(1.0)
    );
    println!(
        "| idle CPU, 100 connections (% of one core) | {stock_cpu:.1} | {genos_cpu:.1} | {:.2} |",
        genos_cpu / stock_cpu.max(0.01)
    );
}
