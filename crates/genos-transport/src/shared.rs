//! Pieces every backend needs alike: waiting for a connection, counting traffic.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, watch};

use crate::{ConnectionEvent, ConnectionState, ConnectionStats, TransportError};

/// The event stream of a built-in backend's connection, fed by a bounded queue. It ends
/// right after the terminal state ([`ConnectionState::Closed`] or
/// [`ConnectionState::Failed`]), or when the connection is gone: a task draining it finishes
/// and lets go of whatever it holds, even while handles to the connection live on.
#[derive(Debug)]
pub struct EventStream<C> {
    receiver: mpsc::Receiver<ConnectionEvent<C>>,
    ended: bool,
}

impl<C> EventStream<C> {
    /// A bounded event queue of `capacity` and the stream that drains it.
    pub(crate) fn new(capacity: usize) -> (mpsc::Sender<ConnectionEvent<C>>, Self) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (
            sender,
            Self {
                receiver,
                ended: false,
            },
        )
    }
}

impl<C> Stream for EventStream<C> {
    type Item = ConnectionEvent<C>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = self.receiver.poll_recv(cx);
        if let Poll::Ready(Some(ConnectionEvent::StateChanged(state))) = &next {
            if state.is_terminal() {
                self.ended = true;
                self.receiver.close();
            }
        }
        next
    }
}

/// Locks a mutex, taking the data even if a panicking thread poisoned it: the structures
/// behind these locks (maps, options) stay valid between statements.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The error of an operation on a connection that is gone.
pub(crate) fn closed() -> TransportError {
    TransportError::NotConnected(ConnectionState::Closed)
}

/// Identifies a connection by the address of its shared state (tracks remember their maker).
pub(crate) fn owner_of<T>(shared: &std::sync::Arc<T>) -> usize {
    std::sync::Arc::as_ptr(shared) as usize
}

/// Longest channel label accepted, in bytes, by every built-in backend.
pub const MAX_LABEL_LEN: usize = 1024;

/// Refuses an empty label or one longer than [`MAX_LABEL_LEN`].
pub(crate) fn check_label(label: &str) -> Result<(), TransportError> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(TransportError::InvalidLabel(format!(
            "labels are 1 to {MAX_LABEL_LEN} bytes, got {}",
            label.len()
        )));
    }
    Ok(())
}

/// Refuses a message larger than the channel's `limit`, before anything is sent.
pub(crate) fn check_message_size(len: usize, limit: usize) -> Result<(), TransportError> {
    if len > limit {
        return Err(TransportError::MessageTooLarge { size: len, limit });
    }
    Ok(())
}

/// Waits until `state` says connected; fails once it is failed or closed.
pub(crate) async fn wait_connected(
    state: &watch::Sender<ConnectionState>,
) -> Result<(), TransportError> {
    let mut state = state.subscribe();
    loop {
        let current = *state.borrow_and_update();
        match current {
            ConnectionState::Connected => return Ok(()),
            s if s.is_terminal() => return Err(TransportError::NotConnected(s)),
            _ => {}
        }
        if state.changed().await.is_err() {
            return Err(TransportError::NotConnected(ConnectionState::Closed));
        }
    }
}

/// Moves `state` to `next` unless it is final (a closed or failed connection stays so) or
/// already there; true when it changed.
pub(crate) fn advance_state(state: &watch::Sender<ConnectionState>, next: ConnectionState) -> bool {
    state.send_if_modified(|current| {
        if current.is_terminal() || *current == next {
            return false;
        }
        *current = next;
        true
    })
}

/// Traffic counters of one connection, shared by its channels.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
}

impl Counters {
    /// The counters as stats, with the backend's own buffer level and RTT.
    pub(crate) fn snapshot(&self, buffered_bytes: u64) -> ConnectionStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ConnectionStats {
            rtt: None,
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            messages_sent: get(&self.messages_sent),
            messages_received: get(&self.messages_received),
            messages_dropped: get(&self.messages_dropped),
            buffered_bytes,
        }
    }

    pub(crate) fn count_sent(&self, bytes: u64) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn count_received(&self, bytes: u64) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn count_dropped(&self) {
        self.messages_dropped.fetch_add(1, Ordering::Relaxed);
    }
}
