//! The bounded inbox between a backend and the application, shared by the built-in backends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::SignalEvent;

/// The sending side: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    sender: mpsc::Sender<SignalEvent>,
    lagged: Arc<AtomicU64>,
}

/// What became of a pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// The inbox was full: dropped, and counted towards the next `Lagged`.
    Dropped,
    /// The application dropped the stream.
    Closed,
}

impl Inbox {
    /// An inbox of `capacity` events and the stream that drains it.
    pub(crate) fn new(capacity: usize) -> (Self, EventStream) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicU64::new(0));
        let inbox = Self {
            sender,
            lagged: lagged.clone(),
        };
        (inbox, EventStream { receiver, lagged })
    }

    /// Queues an event without waiting; a full inbox drops it and counts it.
    pub(crate) fn push(&self, event: SignalEvent) -> Pushed {
        match self.sender.try_send(event) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagged.fetch_add(1, Ordering::Relaxed);
                Pushed::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Closed,
        }
    }
}

/// The event stream of a built-in backend's session. Reports overflow as
/// [`SignalEvent::Lagged`] before the next event, and ends once the session has left and the
/// inbox is drained.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<SignalEvent>,
    lagged: Arc<AtomicU64>,
}

impl Stream for EventStream {
    type Item = SignalEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SignalEvent>> {
        let dropped = self.lagged.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            return Poll::Ready(Some(SignalEvent::Lagged { dropped }));
        }
        self.receiver.poll_recv(cx)
    }
}
