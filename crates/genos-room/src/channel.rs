//! Named channels: what the application sends and receives.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::registry::{Receiver, Registry};
use crate::{MAX_CHANNEL_NAME_LEN, RoomError, lock};
use bytes::Bytes;
use futures::Stream;
use genos_crypto::PeerId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_stream::wrappers::ReceiverStream;

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

/// Progress snapshots of incoming messages on one channel ([`Channel::progress`]).
pub struct ProgressStream {
    inner: ReceiverStream<Progress>,
}

impl std::fmt::Debug for ProgressStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressStream")
    }
}

impl ProgressStream {
    /// The next snapshot if one is waiting now, without waiting (for draining what is left
    /// after a message arrived).
    pub fn next_ready(&mut self) -> Option<Progress> {
        self.inner.as_mut().try_recv().ok()
    }
}

impl Stream for ProgressStream {
    type Item = Progress;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Progress>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
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
    /// Called after each chunk reaches the transport (reliable sends only).
    pub progress: Option<ProgressFn>,
    /// Send as one unreliable datagram: never chunked (at most one frame, else
    /// [`RoomError::MessageTooLarge`]), never waited for, possibly lost or reordered. For the
    /// latest state (positions, telemetry), not every state.
    pub unreliable: bool,
}

impl std::fmt::Debug for SendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOptions")
            .field("target", &self.target)
            .field("meta", &self.meta)
            .field("progress", &self.progress.is_some())
            .field("unreliable", &self.unreliable)
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

    /// Send unreliably (see [`SendOptions::unreliable`]).
    pub fn unreliable(mut self) -> Self {
        self.unreliable = true;
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
    /// (Cells rooms) the message went into the cellular overlay, which carries it on: a
    /// broadcast's `sent` lists only the peers linked directly (the rest of the room gets
    /// it through them), and a directed send's `sent` the targets it was routed towards.
    pub via_overlay: bool,
    /// The message's number (this room's, counting every send): what [`Progress::message`]
    /// and, in cells rooms, [`crate::RoomEvent::DeliveryFailed`] name it by. `None` only
    /// for a send that never got one.
    pub message: Option<u64>,
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
    /// Sends default to unreliable delivery ([`crate::Room::unreliable_channel`]).
    unreliable: bool,
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
            unreliable: false,
            receiver,
            registry,
            sender,
        })
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This channel with unreliable sends by default.
    pub(crate) fn into_unreliable(mut self) -> Self {
        self.unreliable = true;
        self
    }

    /// Whether sends default to unreliable delivery.
    pub fn is_unreliable(&self) -> bool {
        self.unreliable
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
        let mut options = options;
        options.unreliable |= self.unreliable;
        self.sender.send(&self.name, payload.into(), options).await
    }

    /// The next message; `None` once the room has left and the queue is drained.
    pub async fn recv(&self) -> Option<Message> {
        let mut receiver = self.receiver.lock().await;
        receiver.recv().await.map(|queued| queued.message)
    }

    /// Progress of incoming multi-chunk messages on this channel, from now on (replacing an
    /// earlier subscriber), as a stream. Snapshots are dropped rather than delay delivery
    /// when the subscriber lags `capacity` behind; the stream ends when the room has left.
    pub fn progress(&self, capacity: usize) -> ProgressStream {
        ProgressStream {
            inner: ReceiverStream::new(
                lock(&self.registry).subscribe_progress(&self.name, capacity),
            ),
        }
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
