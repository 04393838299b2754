//! The delivery side of channels: open channels' queues, messages kept for channels not
//! opened yet, and the backpressure that holds a link's reader while a queue is full.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{Message, Progress, RoomLimits};

/// A queued message and the byte budget it holds until the application takes it.
pub(crate) struct Queued {
    pub(crate) message: Message,
    _budget: Option<OwnedSemaphorePermit>,
}

impl Queued {
    /// A message holding `budget` of its channel's bytes until the application takes it.
    pub(crate) fn new(message: Message, budget: OwnedSemaphorePermit) -> Self {
        Self {
            message,
            _budget: Some(budget),
        }
    }
}

pub(crate) type Receiver = Arc<AsyncMutex<mpsc::Receiver<Queued>>>;

/// Where a channel's messages go.
struct Slot {
    sender: mpsc::Sender<Queued>,
    receiver: Weak<AsyncMutex<mpsc::Receiver<Queued>>>,
    budget: Arc<Semaphore>,
    progress: Option<mpsc::Sender<Progress>>,
}

/// The delivery side: open channels and messages for channels not opened yet.
pub(crate) struct Registry {
    limits: RoomLimits,
    slots: HashMap<String, Slot>,
    unopened: VecDeque<(String, Message)>,
    unopened_bytes: usize,
    closed: bool,
}

/// Where one incoming message should go.
pub(crate) enum Route {
    /// To this open channel (after taking budget from `budget`).
    Open {
        sender: mpsc::Sender<Queued>,
        budget: Arc<Semaphore>,
    },
    /// Kept for later; nothing to do.
    Kept,
    /// Dropped (bound reached, or the room left).
    Dropped,
}

impl Registry {
    pub(crate) fn new(limits: RoomLimits) -> Self {
        Self {
            limits,
            slots: HashMap::new(),
            unopened: VecDeque::new(),
            unopened_bytes: 0,
            closed: false,
        }
    }

    /// Opens (or joins) channel `name` and moves what was kept for it into its queue.
    pub(crate) fn open(&mut self, name: &str) -> Receiver {
        if let Some(receiver) = self.slots.get(name).and_then(|s| s.receiver.upgrade()) {
            return receiver;
        }
        let (sender, receiver) = mpsc::channel(self.limits.channel_queue_messages.max(1));
        let receiver = Arc::new(AsyncMutex::new(receiver));
        let budget = Arc::new(Semaphore::new(
            self.limits
                .channel_queue_bytes
                .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)),
        ));
        let mut kept = VecDeque::new();
        for (channel, message) in std::mem::take(&mut self.unopened) {
            if channel == name {
                self.unopened_bytes -= message.payload.len();
                // Kept messages are bounded below the queue's size; no budget is taken.
                let _ = sender.try_send(Queued {
                    message,
                    _budget: None,
                });
            } else {
                kept.push_back((channel, message));
            }
        }
        self.unopened = kept;
        if !self.closed {
            self.slots.insert(
                name.to_owned(),
                Slot {
                    sender,
                    receiver: Arc::downgrade(&receiver),
                    budget,
                    progress: None,
                },
            );
        }
        receiver
    }

    /// Where a complete message for `name` goes; keeps it if the channel is not open.
    pub(crate) fn route(&mut self, name: &str, message: &Message) -> Route {
        if self.closed {
            return Route::Dropped;
        }
        if let Some(slot) = self.slots.get(name) {
            if slot.receiver.strong_count() > 0 {
                return Route::Open {
                    sender: slot.sender.clone(),
                    budget: slot.budget.clone(),
                };
            }
            self.slots.remove(name);
        }
        let size = message.payload.len();
        let limit = self
            .limits
            .unopened_messages
            .min(self.limits.channel_queue_messages);
        if self.unopened.len() >= limit || self.unopened_bytes + size > self.limits.unopened_bytes {
            return Route::Dropped;
        }
        self.unopened_bytes += size;
        self.unopened.push_back((name.to_owned(), message.clone()));
        Route::Kept
    }

    /// The progress subscriber of channel `name`, if any.
    pub(crate) fn progress(&self, name: &str) -> Option<mpsc::Sender<Progress>> {
        self.slots.get(name).and_then(|s| s.progress.clone())
    }

    pub(crate) fn subscribe_progress(
        &mut self,
        name: &str,
        capacity: usize,
    ) -> mpsc::Receiver<Progress> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        if let Some(slot) = self.slots.get_mut(name) {
            slot.progress = Some(sender);
        }
        receiver
    }

    /// The room left: every channel ends once drained, nothing more is kept.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.slots.clear();
        self.unopened.clear();
        self.unopened_bytes = 0;
    }
}

/// Hands a complete message to an open channel, waiting for queue room (backpressure).
/// Gives the message back if the channel went away meanwhile.
pub(crate) async fn deliver(
    sender: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    message: Message,
    queue_bytes: usize,
) -> Result<(), Message> {
    // Large messages take the whole budget, so one always fits.
    let cost = message
        .payload
        .len()
        .clamp(1, queue_bytes.clamp(1, Semaphore::MAX_PERMITS));
    let cost = u32::try_from(cost).unwrap_or(u32::MAX);
    let permit = tokio::select! {
        permit = budget.acquire_many_owned(cost) => match permit {
            Ok(permit) => permit,
            Err(_) => return Err(message),
        },
        () = sender.closed() => return Err(message),
    };
    sender
        .send(Queued {
            message,
            _budget: Some(permit),
        })
        .await
        .map_err(|error| error.0.message)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use genos_crypto::PeerId;

    use super::*;

    fn message(size: usize) -> Message {
        Message {
            from: PeerId::from_bytes([1; 32]),
            payload: Bytes::from(vec![0; size]),
            meta: None,
        }
    }

    #[test]
    fn unopened_messages_are_kept_within_bounds_then_handed_over() {
        let limits = RoomLimits {
            unopened_messages: 2,
            unopened_bytes: 100,
            ..RoomLimits::default()
        };
        let mut registry = Registry::new(limits);
        assert!(matches!(registry.route("a", &message(10)), Route::Kept));
        assert!(matches!(registry.route("b", &message(95)), Route::Dropped));
        assert!(matches!(registry.route("b", &message(10)), Route::Kept));
        assert!(matches!(registry.route("a", &message(1)), Route::Dropped));
        let receiver = registry.open("a");
        let mut receiver = receiver.try_lock().unwrap();
        assert_eq!(receiver.try_recv().unwrap().message.payload.len(), 10);
        assert!(receiver.try_recv().is_err());
        assert_eq!(registry.unopened.len(), 1);
        assert!(matches!(
            registry.route("a", &message(1)),
            Route::Open { .. }
        ));
        registry.close();
        assert!(matches!(registry.route("a", &message(1)), Route::Dropped));
    }

    #[test]
    fn a_dropped_channel_is_unopened_again() {
        let mut registry = Registry::new(RoomLimits::default());
        drop(registry.open("a"));
        assert!(matches!(registry.route("a", &message(1)), Route::Kept));
    }
}
