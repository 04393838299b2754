//! Named channels: what the application sends and receives.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use genos_crypto::PeerId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex as AsyncMutex, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{MAX_CHANNEL_NAME_LEN, RoomError, RoomLimits, lock};

/// Whether `name` is a valid channel name.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CHANNEL_NAME_LEN
}

/// A message received on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The sender.
    pub from: PeerId,
    /// The payload, whole.
    pub payload: Bytes,
    /// Metadata the sender attached, if any.
    pub meta: Option<Bytes>,
}

/// A typed message received on a [`TypedChannel`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Typed<T> {
    /// The sender.
    pub from: PeerId,
    /// The decoded value.
    pub value: T,
    /// Metadata the sender attached, if any.
    pub meta: Option<Bytes>,
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Target {
    /// Every connected peer.
    #[default]
    All,
    /// One peer.
    Peer(PeerId),
    /// Several peers.
    Peers(Vec<PeerId>),
}

/// How far one message has come, for one peer: sent (sender side) or received (receiver
/// side). Snapshots of one message only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// The peer sending to us, or the peer we send to.
    pub peer: PeerId,
    /// The message's number (per sender).
    pub message: u64,
    /// Bytes done.
    pub done: u64,
    /// Bytes in the whole message.
    pub total: u64,
}

/// A callback that sees sending progress.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Options of one send.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct SendOptions {
    /// Recipients.
    pub target: Target,
    /// Metadata delivered with the message (at most [`crate::MAX_METADATA_LEN`] bytes).
    pub meta: Option<Bytes>,
    /// Called after each chunk reaches the transport.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOptions")
            .field("target", &self.target)
            .field("meta", &self.meta)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl SendOptions {
    /// Send to these recipients.
    pub fn to(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Attach metadata.
    pub fn with_meta(mut self, meta: impl Into<Bytes>) -> Self {
        self.meta = Some(meta.into());
        self
    }

    /// Report progress to `callback`.
    pub fn on_progress(mut self, callback: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }
}

/// What became of one send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// Peers whose link took every chunk of the message.
    pub sent: Vec<PeerId>,
    /// Peers the message could not reach, and why.
    pub failed: Vec<(PeerId, RoomError)>,
}

/// A queued message and the byte budget it holds until the application takes it.
pub(crate) struct Queued {
    message: Message,
    _budget: Option<OwnedSemaphorePermit>,
}

type Receiver = Arc<AsyncMutex<mpsc::Receiver<Queued>>>;

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
    fn open(&mut self, name: &str) -> Receiver {
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

    fn subscribe_progress(&mut self, name: &str, capacity: usize) -> mpsc::Receiver<Progress> {
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

/// The sending side a channel needs from its room.
pub(crate) trait Sender: Send + Sync {
    fn send<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
        options: SendOptions,
    ) -> futures::future::BoxFuture<'a, Result<SendReport, RoomError>>;
}

/// A named channel of a room: send bytes to all, one or several peers; receive what peers
/// send on the same name. Cheap to clone; clones share the receive queue.
///
/// Messages are delivered whole, once, in order per sender. Receiving applies backpressure:
/// while the queue is full ([`RoomLimits::channel_queue_messages`] /
/// [`RoomLimits::channel_queue_bytes`]) the links stop reading and senders wait.
#[derive(Clone)]
pub struct Channel {
    name: Arc<str>,
    receiver: Receiver,
    registry: Arc<std::sync::Mutex<Registry>>,
    sender: Arc<dyn Sender>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("name", &self.name).finish()
    }
}

impl Channel {
    pub(crate) fn open(
        name: &str,
        registry: Arc<std::sync::Mutex<Registry>>,
        sender: Arc<dyn Sender>,
    ) -> Result<Self, RoomError> {
        if !valid_name(name) {
            return Err(RoomError::InvalidChannelName(
                name.chars().take(80).collect(),
            ));
        }
        let receiver = lock(&registry).open(name);
        Ok(Self {
            name: name.into(),
            receiver,
            registry,
            sender,
        })
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends to every connected peer.
    pub async fn send(&self, payload: impl Into<Bytes>) -> Result<SendReport, RoomError> {
        self.send_with(payload, SendOptions::default()).await
    }

    /// Sends to one peer; fails with the reason if it could not be sent to it.
    pub async fn send_to(&self, peer: PeerId, payload: impl Into<Bytes>) -> Result<(), RoomError> {
        let mut report = self
            .send_with(payload, SendOptions::default().to(Target::Peer(peer)))
            .await?;
        match report.failed.pop() {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }

    /// Sends with options: recipients, metadata, progress.
    pub async fn send_with(
        &self,
        payload: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<SendReport, RoomError> {
        self.sender.send(&self.name, payload.into(), options).await
    }

    /// The next message; `None` once the room has left and the queue is drained.
    pub async fn recv(&self) -> Option<Message> {
        let mut receiver = self.receiver.lock().await;
        receiver.recv().await.map(|queued| queued.message)
    }

    /// Progress of incoming multi-chunk messages on this channel, from now on (replacing an
    /// earlier subscriber). Snapshots are dropped rather than delay delivery when the
    /// subscriber lags `capacity` behind.
    pub fn progress(&self, capacity: usize) -> mpsc::Receiver<Progress> {
        lock(&self.registry).subscribe_progress(&self.name, capacity)
    }
}

/// A channel for values of one serde type, encoded with postcard.
///
/// ```no_run
/// # async fn demo(room: genos_room::Room) -> Result<(), genos_room::RoomError> {
/// #[derive(serde::Serialize, serde::Deserialize, Debug)]
/// struct Move { x: i32, y: i32 }
///
/// let moves = room.typed_channel::<Move>("moves")?;
/// moves.send(&Move { x: 1, y: 2 }).await?;
/// while let Some(received) = moves.recv().await {
///     let received = received?; // a peer may send something that does not decode
///     println!("{} moved to {:?}", received.from.short(), received.value);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TypedChannel<T> {
    channel: Channel,
    _type: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> TypedChannel<T> {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            channel,
            _type: PhantomData,
        }
    }

    /// The underlying byte channel.
    pub fn raw(&self) -> &Channel {
        &self.channel
    }

    fn encode(value: &T) -> Result<Bytes, RoomError> {
        postcard::to_stdvec(value)
            .map(Bytes::from)
            .map_err(|e| RoomError::Encode(e.to_string()))
    }

    /// Sends a value to every connected peer.
    pub async fn send(&self, value: &T) -> Result<SendReport, RoomError> {
        self.channel.send(Self::encode(value)?).await
    }

    /// Sends a value to one peer.
    pub async fn send_to(&self, peer: PeerId, value: &T) -> Result<(), RoomError> {
        self.channel.send_to(peer, Self::encode(value)?).await
    }

    /// Sends a value with options.
    pub async fn send_with(
        &self,
        value: &T,
        options: SendOptions,
    ) -> Result<SendReport, RoomError> {
        self.channel.send_with(Self::encode(value)?, options).await
    }

    /// The next value; a message that does not decode gives [`RoomError::Decode`] (and the
    /// channel goes on). `None` once the room has left and the queue is drained.
    pub async fn recv(&self) -> Option<Result<Typed<T>, RoomError>> {
        let message = self.channel.recv().await?;
        Some(
            postcard::from_bytes::<T>(&message.payload)
                .map(|value| Typed {
                    from: message.from,
                    value,
                    meta: message.meta,
                })
                .map_err(|e| RoomError::Decode {
                    from: message.from,
                    reason: e.to_string(),
                }),
        )
    }
}

#[cfg(test)]
mod tests {
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
