//! The `Transport` conformance suite: one set of checks every backend must pass.
//!
//! A backend's tests implement [`Harness`] and invoke
//! [`transport_conformance!`](crate::transport_conformance), which expands to one
//! `#[tokio::test]` per check. The calling crate needs `tokio` with the `macros` and
//! `rt-multi-thread` features as a dev-dependency.
//!
//! Checks never assert on wall-clock speed; every wait is bounded by [`TIMEOUT`] only so a
//! broken backend fails instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::{
    Connection, ConnectionEvent, ConnectionState, DataChannel, Reliability, Role, Transport,
    TransportError,
};

mod media;
pub use media::*;

/// Upper bound on any single wait.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How the suite makes connections.
pub trait Harness: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Transport;

    /// A transport endpoint; two endpoints from one harness must be able to connect.
    fn transport(&self) -> impl Future<Output = Self::Backend> + Send;

    /// Bytes that can be in flight on one channel direction while the receiver does not
    /// read: send buffer plus whatever the link and the remote side buffer.
    fn max_in_flight(&self) -> usize;
}

pub type Conn<H> = <<H as Harness>::Backend as Transport>::Connection;
pub type Chan<H> = <Conn<H> as Connection>::Channel;

/// One side of a connected pair: the connection and its non-signal events.
pub struct Side<H: Harness> {
    pub conn: Conn<H>,
    pub events: mpsc::Receiver<ConnectionEvent<Chan<H>>>,
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A harness around one WebRTC transport, for tests beyond the suite that need connected
/// pairs (faults, media over time, plain connections). Its in-flight bound is a generous
/// 8 MiB: the suite's own WebRTC harness states the exact one.
#[cfg(feature = "webrtc")]
#[derive(Debug, Clone)]
pub struct WebRtcHarness(pub crate::webrtc::WebRtcTransport);

#[cfg(feature = "webrtc")]
impl Harness for WebRtcHarness {
    type Backend = crate::webrtc::WebRtcTransport;

    async fn transport(&self) -> crate::webrtc::WebRtcTransport {
        self.0.clone()
    }

    fn max_in_flight(&self) -> usize {
        8 * 1024 * 1024
    }
}

/// Relays `events`' signals to `remote` and forwards everything else to the returned queue.
fn pump<H: Harness>(
    mut events: <H::Backend as Transport>::Events,
    remote: Conn<H>,
) -> mpsc::Receiver<ConnectionEvent<Chan<H>>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                ConnectionEvent::Signal(message) => {
                    if let Err(error) = remote.handle_signal(message).await {
                        tracing::warn!(%error, "remote refused a signal");
                    }
                }
                other => {
                    if sender.send(other).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

async fn wait_state<C: Connection>(conn: &C, wanted: ConnectionState) {
    within(&format!("connection to become {wanted}"), async {
        while conn.state() != wanted {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Connects an offerer and an answerer and waits until both are connected.
pub async fn connect_pair<H: Harness>(harness: &H) -> (Side<H>, Side<H>) {
    let (a, a_events) = harness
        .transport()
        .await
        .connect(Role::Offerer)
        .await
        .unwrap();
    let (b, b_events) = harness
        .transport()
        .await
        .connect(Role::Answerer)
        .await
        .unwrap();
    let a_queue = pump::<H>(a_events, b.clone());
    let b_queue = pump::<H>(b_events, a.clone());
    wait_state(&a, ConnectionState::Connected).await;
    wait_state(&b, ConnectionState::Connected).await;
    (
        Side {
            conn: a,
            events: a_queue,
        },
        Side {
            conn: b,
            events: b_queue,
        },
    )
}

/// Waits for the remote side's next opened channel.
pub async fn accept<H: Harness>(side: &mut Side<H>) -> Chan<H> {
    within("a channel to be opened by the remote", async {
        loop {
            match side.events.recv().await {
                Some(ConnectionEvent::ChannelOpened(channel)) => return channel,
                Some(_) => {}
                None => panic!("event stream ended before a channel opened"),
            }
        }
    })
    .await
}

/// Opens a channel on `a` and returns both ends.
pub async fn channel_pair<H: Harness>(
    a: &Side<H>,
    b: &mut Side<H>,
    label: &str,
    reliability: Reliability,
) -> (Chan<H>, Chan<H>) {
    let local = within("open_channel", a.conn.open_channel(label, reliability))
        .await
        .unwrap();
    let remote = accept(b).await;
    assert_eq!(remote.label(), label);
    assert_eq!(remote.reliability(), reliability);
    (local, remote)
}

fn numbered(i: usize, len: usize) -> Bytes {
    let mut body = vec![(i % 251) as u8; len.max(8)];
    if let Some(head) = body.get_mut(..8) {
        head.copy_from_slice(&(i as u64).to_be_bytes());
    }
    Bytes::from(body)
}

fn number_of(message: &[u8]) -> usize {
    let head: [u8; 8] = message.get(..8).unwrap().try_into().unwrap();
    let i = u64::from_be_bytes(head) as usize;
    assert!(
        message.iter().skip(8).all(|b| *b == (i % 251) as u8),
        "message {i} corrupted"
    );
    i
}

/// An offerer and an answerer reach `Connected` through their signals.
pub async fn pair_connects<H: Harness>(harness: &H) {
    let (a, b) = connect_pair(harness).await;
    assert_eq!(a.conn.role(), Role::Offerer);
    assert_eq!(b.conn.role(), Role::Answerer);
}

/// A reliable channel delivers every message once, intact, in order, both ways.
pub async fn reliable_channel_is_ordered_both_ways<H: Harness>(harness: &H) {
    const COUNT: usize = 500;
    let (a, mut b) = connect_pair(harness).await;
    let (left, right) = channel_pair(&a, &mut b, "ordered", Reliability::ReliableOrdered).await;
    let max = left.max_message_size().min(4096);
    let send = |channel: Chan<H>| async move {
        for i in 0..COUNT {
            channel.send(numbered(i, 8 + (i * 37) % max)).await.unwrap();
        }
    };
    let receive = |channel: Chan<H>| async move {
        for i in 0..COUNT {
            let message = within("an ordered message", channel.recv()).await.unwrap();
            assert_eq!(number_of(&message), i, "out of order");
            assert_eq!(message.len(), (8 + (i * 37) % max).max(8));
        }
    };
    let forward = tokio::spawn(send(left.clone()));
    let backward = tokio::spawn(send(right.clone()));
    tokio::join!(receive(right), receive(left));
    forward.await.unwrap();
    backward.await.unwrap();
}

/// A message at the size limit arrives intact; one byte more is refused, typed.
pub async fn message_size_limit_is_enforced<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let (left, right) = channel_pair(&a, &mut b, "big", Reliability::ReliableOrdered).await;
    let limit = left.max_message_size();
    assert_eq!(limit, a.conn.limits().max_message_size);
    let at_limit = numbered(7, limit);
    left.send(at_limit.clone()).await.unwrap();
    assert_eq!(
        within("the largest message", right.recv()).await,
        Some(at_limit)
    );
    assert_eq!(
        left.send(Bytes::from(vec![0u8; limit + 1])).await,
        Err(TransportError::MessageTooLarge {
            size: limit + 1,
            limit
        })
    );
    // The channel still works after the refusal.
    left.send(Bytes::from_static(b"still here")).await.unwrap();
    assert_eq!(
        within("a message after the refusal", right.recv())
            .await
            .as_deref(),
        Some(&b"still here"[..])
    );
}

/// With a receiver that does not read, reliable sends stop completing once the buffers are
/// full, the send buffer stays within its bound, and everything arrives once reading starts.
pub async fn reliable_send_applies_backpressure<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let (left, right) = channel_pair(&a, &mut b, "pressure", Reliability::ReliableOrdered).await;
    let size = left.max_message_size().min(16 * 1024);
    let total = (harness.max_in_flight() * 4 / size).max(16);
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (left, sent) = (left.clone(), sent.clone());
        tokio::spawn(async move {
            for i in 0..total {
                left.send(numbered(i, size)).await.unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Wait until the sender stops making progress (it is blocked on the full buffer).
    let send_buffer = a.conn.limits().send_buffer;
    let mut last = usize::MAX;
    within("the sender to block", async {
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let now = sent.load(Ordering::SeqCst);
            assert!(
                left.buffered_amount() <= send_buffer + size,
                "buffered {} exceeds the send buffer {send_buffer}",
                left.buffered_amount()
            );
            if now == last || now == total {
                break;
            }
            last = now;
        }
    })
    .await;
    let blocked_at = sent.load(Ordering::SeqCst);
    assert!(
        blocked_at < total,
        "all {total} sends completed without the receiver reading: no backpressure"
    );
    assert!(
        blocked_at * size <= harness.max_in_flight() + size,
        "{} bytes in flight, more than the promised {}",
        blocked_at * size,
        harness.max_in_flight()
    );
    for i in 0..total {
        let message = within("a message after backpressure", right.recv())
            .await
            .unwrap();
        assert_eq!(number_of(&message), i);
    }
    within("the sender to finish", sender).await.unwrap();
}

/// Unreliable sends never wait for a receiver that does not read; what arrives is intact and
/// never duplicated.
pub async fn unreliable_send_never_blocks<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let (left, right) = channel_pair(&a, &mut b, "lossy", Reliability::UnreliableUnordered).await;
    let size = left.max_message_size().min(16 * 1024);
    let total = (harness.max_in_flight() * 4 / size).max(16);
    within("unreliable sends to complete without a reader", async {
        for i in 0..total {
            left.send(numbered(i, size)).await.unwrap();
        }
    })
    .await;
    let mut seen = HashSet::new();
    // Read until the channel has been quiet for a while: unreliable delivery has no end marker.
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), right.recv()).await
    {
        assert_eq!(message.len(), size);
        assert!(seen.insert(number_of(&message)), "duplicate delivery");
    }
    assert!(
        !seen.is_empty(),
        "nothing arrived on the unreliable channel"
    );
    assert!(seen.len() <= total);
}

/// Closing a connection is seen by the other side; channels of both sides end.
pub async fn close_is_seen_by_remote<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let (left, right) = channel_pair(&a, &mut b, "closing", Reliability::ReliableOrdered).await;
    a.conn.close().await;
    a.conn.close().await;
    wait_state(&b.conn, ConnectionState::Closed).await;
    assert_eq!(a.conn.state(), ConnectionState::Closed);
    assert_eq!(
        within("the remote channel to end", right.recv()).await,
        None
    );
    assert_eq!(within("the local channel to end", left.recv()).await, None);
    assert!(left.send(Bytes::from_static(b"late")).await.is_err());
    let reopen = a
        .conn
        .open_channel("again", Reliability::ReliableOrdered)
        .await;
    assert!(
        matches!(reopen, Err(TransportError::NotConnected(_))),
        "{reopen:?}"
    );
}

/// Once a connection ends, both sides' event streams end too, right after reporting the
/// terminal state, so whoever drains them lets go of the connection (a room driver leaked
/// every departed link while its stream stayed open).
pub async fn event_streams_end_after_close<H: Harness>(harness: &H) {
    let (a, b) = connect_pair(harness).await;
    a.conn.close().await;
    for (mut side, name) in [(a, "closing"), (b, "remote")] {
        within(&format!("the {name} side's events to end"), async {
            let mut terminal = false;
            while let Some(event) = side.events.recv().await {
                if let ConnectionEvent::StateChanged(state) = event {
                    assert!(
                        !terminal,
                        "{name}: {state} reported after the terminal state"
                    );
                    terminal = state.is_terminal();
                }
            }
            assert!(
                terminal,
                "the {name} side's events ended without a terminal state"
            );
        })
        .await;
    }
}

/// Closing a channel delivers what was sent before, then ends it on both sides; the
/// connection and its other channels keep working.
pub async fn channel_close_ends_both_sides<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let (left, right) = channel_pair(&a, &mut b, "short", Reliability::ReliableOrdered).await;
    let (other_left, other_right) =
        channel_pair(&a, &mut b, "long", Reliability::ReliableOrdered).await;
    for i in 0..10 {
        left.send(numbered(i, 64)).await.unwrap();
    }
    // Wait until delivered so the close cannot race the data.
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(number_of(
            &within("data before close", right.recv()).await.unwrap(),
        ));
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    left.close().await;
    assert_eq!(within("the remote end to close", right.recv()).await, None);
    assert!(left.send(Bytes::from_static(b"late")).await.is_err());
    other_left.send(Bytes::from_static(b"alive")).await.unwrap();
    assert_eq!(
        within("the other channel", other_right.recv())
            .await
            .as_deref(),
        Some(&b"alive"[..])
    );
    assert_eq!(a.conn.state(), ConnectionState::Connected);
}

/// Garbage signaling input is refused with a typed error and breaks nothing.
pub async fn invalid_signal_is_refused<H: Harness>(harness: &H) {
    let (fresh, _events) = harness
        .transport()
        .await
        .connect(Role::Answerer)
        .await
        .unwrap();
    for garbage in [&b""[..], b"garbage", &[0xff; 300][..]] {
        let result = fresh.handle_signal(Bytes::copy_from_slice(garbage)).await;
        assert!(
            matches!(result, Err(TransportError::InvalidSignal(_))),
            "{result:?}"
        );
    }
    let (a, mut b) = connect_pair(harness).await;
    let result = b
        .conn
        .handle_signal(Bytes::from_static(b"{\"sdp\": 12}"))
        .await;
    assert!(
        matches!(result, Err(TransportError::InvalidSignal(_))),
        "{result:?}"
    );
    let (left, right) = channel_pair(&a, &mut b, "after", Reliability::ReliableOrdered).await;
    left.send(Bytes::from_static(b"fine")).await.unwrap();
    assert_eq!(
        within("a message", right.recv()).await.as_deref(),
        Some(&b"fine"[..])
    );
}

/// Channel labels are checked, and the channel limit is enforced, typed.
pub async fn channel_limits_are_enforced<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let empty = a.conn.open_channel("", Reliability::ReliableOrdered).await;
    assert!(
        matches!(empty, Err(TransportError::InvalidLabel(_))),
        "{empty:?}"
    );
    let limit = a.conn.limits().max_channels;
    let mut open = Vec::new();
    for i in 0..limit {
        let (local, _remote) =
            channel_pair(&a, &mut b, &format!("c{i}"), Reliability::ReliableOrdered).await;
        open.push(local);
    }
    let over = a
        .conn
        .open_channel("one-too-many", Reliability::ReliableOrdered)
        .await;
    assert_eq!(over.err(), Some(TransportError::TooManyChannels { limit }));
}

/// `open_channel` called before the connection is up waits for it.
pub async fn open_channel_waits_for_connection<H: Harness>(harness: &H) {
    let (a, mut a_events) = harness
        .transport()
        .await
        .connect(Role::Offerer)
        .await
        .unwrap();
    let (b, b_events) = harness
        .transport()
        .await
        .connect(Role::Answerer)
        .await
        .unwrap();
    let early = {
        let a = a.clone();
        tokio::spawn(async move { a.open_channel("early", Reliability::ReliableOrdered).await })
    };
    // Only now let the handshake run.
    let mut b_side = Side::<H> {
        conn: b.clone(),
        events: pump::<H>(b_events, a.clone()),
    };
    tokio::spawn(async move {
        while let Some(event) = a_events.next().await {
            if let ConnectionEvent::Signal(message) = event {
                let _ = b.handle_signal(message).await;
            }
        }
    });
    let local = within("the early channel", early).await.unwrap().unwrap();
    let remote = accept(&mut b_side).await;
    local.send(Bytes::from_static(b"early bird")).await.unwrap();
    assert_eq!(
        within("a message", remote.recv()).await.as_deref(),
        Some(&b"early bird"[..])
    );
}

/// Stats count what was sent and received.
pub async fn stats_count_traffic<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let (left, right) = channel_pair(&a, &mut b, "counted", Reliability::ReliableOrdered).await;
    for i in 0..20 {
        left.send(numbered(i, 1000)).await.unwrap();
    }
    for _ in 0..20 {
        within("a counted message", right.recv()).await.unwrap();
    }
    let sent = a.conn.stats().await;
    let received = b.conn.stats().await;
    assert!(sent.bytes_sent >= 20_000, "{sent:?}");
    assert!(sent.messages_sent >= 20, "{sent:?}");
    assert!(received.bytes_received >= 20_000, "{received:?}");
    assert!(received.messages_received >= 20, "{received:?}");
}

/// Ten pairs exchange data at once without interfering.
pub async fn ten_pairs_at_once<H: Harness>(harness: &H) {
    let mut tasks = Vec::new();
    for pair in 0..10usize {
        let (a, mut b) = connect_pair(harness).await;
        let (left, right) = channel_pair(&a, &mut b, "pair", Reliability::ReliableOrdered).await;
        tasks.push(tokio::spawn(async move {
            let sender = tokio::spawn({
                let left = left.clone();
                async move {
                    for i in 0..100 {
                        left.send(numbered(pair * 1000 + i, 256)).await.unwrap();
                    }
                }
            });
            for i in 0..100 {
                let message = within("pair traffic", right.recv()).await.unwrap();
                assert_eq!(number_of(&message), pair * 1000 + i);
            }
            sender.await.unwrap();
            drop((a, b));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each given a fresh harness from
/// `$harness` (an expression).
#[macro_export]
macro_rules! transport_conformance {
    ($harness:expr) => {
        $crate::transport_conformance!(@tests $harness;
            pair_connects,
            reliable_channel_is_ordered_both_ways,
            message_size_limit_is_enforced,
            reliable_send_applies_backpressure,
            unreliable_send_never_blocks,
            close_is_seen_by_remote,
            event_streams_end_after_close,
            channel_close_ends_both_sides,
            invalid_signal_is_refused,
            channel_limits_are_enforced,
            open_channel_waits_for_connection,
            stats_count_traffic,
            ten_pairs_at_once,
            tracks_carry_samples_intact,
            removed_tracks_end_and_ids_are_not_reused,
            tracks_added_on_both_sides_at_once,
            keyframe_requests_reach_the_sender,
        );
    };
    (@tests $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $harness;
                $crate::conformance::$check(&harness).await;
            }
        )*
    };
}
