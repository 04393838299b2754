//! Unreliable room channels: each message one sealed datagram on the link's unreliable,
//! unordered transport channel. Never chunked, never waited for: a message that does not
//! fit one datagram is refused, a full send buffer or a full receive queue drops it (and
//! counts it), and the receiver counts the sequence numbers it never saw as lost.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use genos_transport::{DataChannel, TransportError};

use crate::FrameError;
use crate::channel::Message;
use crate::link::{Link, reject};
use crate::registry::{Queued, Route};
use crate::shared::Shared;
use crate::stats::bump;

/// Datagrams older than this many sequence numbers behind the newest are refused (they
/// cannot be told from replays).
pub(crate) const REPLAY_WINDOW: u64 = 128;

/// What a link needs of its unreliable transport channel.
pub(crate) trait DatagramIo: Send + Sync {
    fn send(&self, frame: Bytes) -> BoxFuture<'_, Result<(), TransportError>>;
    fn max_message_size(&self) -> usize;
}

/// A transport's unreliable channel, as a link's [`DatagramIo`].
pub(crate) struct Datagrams<D>(pub(crate) D);

impl<D: DataChannel> DatagramIo for Datagrams<D> {
    fn send(&self, frame: Bytes) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.0.send(frame))
    }

    fn max_message_size(&self) -> usize {
        self.0.max_message_size()
    }
}

/// Which recent sequence numbers arrived: refuses replays and counts gaps as losses.
#[derive(Debug, Default)]
pub(crate) struct ReplayWindow {
    /// One above the highest number seen (0: none yet).
    next: u64,
    /// Bit i set: number `next - 1 - i` was seen.
    seen: u128,
}

/// What the window says of one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// New; `skipped` numbers between it and the previous newest never came (yet).
    New { skipped: u64 },
    /// A number inside the window that had not come: a late (reordered) datagram.
    Late,
    /// Seen before, or too old to tell.
    Refused,
}

impl ReplayWindow {
    pub(crate) fn check(&mut self, seq: u64) -> Seen {
        if seq >= self.next {
            let skipped = seq - self.next;
            let shift = skipped.saturating_add(1);
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.next = seq.saturating_add(1);
            return Seen::New { skipped };
        }
        let back = self.next - 1 - seq;
        if back >= REPLAY_WINDOW.min(128) {
            return Seen::Refused;
        }
        let bit = 1u128 << back;
        if self.seen & bit != 0 {
            return Seen::Refused;
        }
        self.seen |= bit;
        Seen::Late
    }
}

/// Reads, opens and delivers the peer's datagrams until the channel ends.
pub(crate) async fn read_datagrams<C: DataChannel>(
    link: Arc<Link>,
    channel: C,
    shared: Arc<Shared>,
) {
    let mut window = ReplayWindow::default();
    while let Some(frame) = channel.recv().await {
        let datagram = match link.codec().open_datagram(frame) {
            Ok(datagram) => datagram,
            Err(error) => {
                reject(&shared, link.peer, error);
                continue;
            }
        };
        match window.check(datagram.seq) {
            Seen::New { skipped } => {
                // A gap may still fill with late datagrams; those are taken back below.
                bump(&shared.counters.datagrams_lost, skipped);
            }
            Seen::Late => {
                let _ = shared.counters.datagrams_lost.fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |lost| Some(lost.saturating_sub(1)),
                );
            }
            Seen::Refused => {
                reject(&shared, link.peer, FrameError::Unauthentic);
                continue;
            }
        }
        link.heard();
        let message = Message {
            from: link.peer,
            payload: datagram.data,
            meta: datagram.meta,
        };
        let size = message.payload.len();
        let route = shared.registry().route(&datagram.channel, &message);
        let delivered = match route {
            Route::Open { sender, budget } => {
                // Never wait: a full queue drops the newest, as unreliable delivery may.
                let cost = u32::try_from(size.max(1)).unwrap_or(u32::MAX);
                match budget.try_acquire_many_owned(cost) {
                    Ok(permit) => sender.try_send(Queued::new(message, permit)).is_ok(),
                    Err(_) => false,
                }
            }
            Route::Kept => true,
            Route::Dropped => false,
        };
        if delivered {
            bump(&shared.counters.datagrams_received, 1);
        } else {
            bump(&shared.counters.datagrams_dropped, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_refuses_replays_and_counts_gaps() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(0), Seen::New { skipped: 0 });
        assert_eq!(w.check(0), Seen::Refused);
        assert_eq!(w.check(3), Seen::New { skipped: 2 });
        assert_eq!(w.check(2), Seen::Late);
        assert_eq!(w.check(2), Seen::Refused);
        assert_eq!(w.check(1), Seen::Late);
        assert_eq!(w.check(500), Seen::New { skipped: 496 });
        assert_eq!(w.check(500 - 127), Seen::Late);
        assert_eq!(w.check(500 - 128), Seen::Refused, "too old to tell");
        assert_eq!(
            w.check(u64::MAX - 1),
            Seen::New {
                skipped: u64::MAX - 502
            }
        );
        assert_eq!(w.check(u64::MAX - 1), Seen::Refused);
    }
}
