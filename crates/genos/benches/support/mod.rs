//! Helpers shared by the benchmarks.

/// A numeric field of `/proc/self/status` (Linux), e.g. `VmRSS:` in KiB or `Threads:`; 0
/// when it cannot be read.
#[allow(dead_code)] // not every bench reads memory
pub(crate) fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits for the next `PeerJoined` on `events`.
#[allow(dead_code)] // not every bench waits for peers this way
pub(crate) async fn joined(events: &mut genos::RoomEvents) {
    use futures::StreamExt;
    while let Some(event) = events.next().await {
        if matches!(event, genos::RoomEvent::PeerJoined { .. }) {
            return;
        }
    }
}

/// The `p` quantile of `samples` (sorted in place).
#[allow(dead_code)]
pub(crate) fn percentile(samples: &mut [std::time::Duration], p: f64) -> std::time::Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// Room throughput from `a` to `b`: `bulk` bytes sent with `send_to` in messages of
/// `message` bytes, in MiB/s.
#[allow(dead_code)]
pub(crate) async fn room_throughput(
    a: &genos::Room,
    b: &genos::Room,
    message: usize,
    bulk: usize,
) -> f64 {
    let tx = a.channel(&format!("bulk-{message}")).unwrap();
    let rx = b.channel(&format!("bulk-{message}")).unwrap();
    let payload = bytes::Bytes::from(vec![7u8; message]);
    let count = bulk / message;
    let start = std::time::Instant::now();
    let reader = tokio::spawn(async move {
        for _ in 0..count {
            rx.recv().await.unwrap();
        }
    });
    let to = b.local_peer();
    for _ in 0..count {
        if let Err(error) = tx.send_to(to, payload.clone()).await {
            panic!("{message}-byte send from {}: {error}", a.local_peer());
        }
    }
    reader.await.unwrap();
    bulk as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

/// Round trips of 2,000 small messages from `a`, echoed by `b`.
#[allow(dead_code)]
pub(crate) async fn room_rtt(a: &genos::Room, b: &genos::Room) -> Vec<std::time::Duration> {
    let (ping, pong) = (a.channel("rtt").unwrap(), b.channel("rtt").unwrap());
    tokio::spawn(async move {
        while let Some(message) = pong.recv().await {
            if pong.send_to(message.from, message.payload).await.is_err() {
                break;
            }
        }
    });
    let to = b.local_peer();
    let mut samples = Vec::new();
    for i in 0..2000u32 {
        let start = std::time::Instant::now();
        ping.send_to(to, bytes::Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        ping.recv().await.unwrap();
        samples.push(start.elapsed());
    }
    samples
}
