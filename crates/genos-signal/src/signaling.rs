//! The `Signaling` seam: what a room needs from peer discovery.

use std::future::Future;

use bytes::Bytes;
use futures::Stream;
use genos_crypto::{PeerId, SealKey};

use crate::{SignalError, SignalEvent, Topic};

/// What to join: one topic, as one peer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JoinRequest {
    /// The rendezvous topic (derived from the room key by the room layer).
    pub topic: Topic,
    /// The joining peer's id; every message it sends is attributed to it.
    pub local_peer: PeerId,
    /// The room's signaling subkey, for backends that seal what they put on a shared medium
    /// (Nostr). Without it such backends derive a key from the topic: obfuscation only.
    pub seal_key: Option<SealKey>,
}

impl JoinRequest {
    /// A request to join `topic` as `local_peer`.
    pub fn new(topic: Topic, local_peer: PeerId) -> Self {
        Self {
            topic,
            local_peer,
            seal_key: None,
        }
    }

    /// Hands the backend the room's signaling subkey.
    pub fn with_seal_key(mut self, key: SealKey) -> Self {
        self.seal_key = Some(key);
        self
    }
}

/// Limits a session enforces; callers size their payloads by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalLimits {
    /// Largest presence or message payload accepted, in bytes. Larger payloads are refused
    /// with [`SignalError::MessageTooLarge`] before anything is sent.
    pub max_message_size: usize,
    /// Capacity of the session's event inbox. When it is full, further events are dropped and
    /// reported as one [`SignalEvent::Lagged`].
    pub inbox_capacity: usize,
}

impl SignalLimits {
    /// Limits with the given message size and inbox capacity.
    pub fn new(max_message_size: usize, inbox_capacity: usize) -> Self {
        Self {
            max_message_size,
            inbox_capacity,
        }
    }
}

/// A peer-discovery backend: a relay pool, a server, an in-process hub, or your own.
///
/// Implement this trait (and [`SignalSession`]) to plug a new medium under genos rooms. The
/// contract, checked by the conformance suite:
///
/// - delivery is best effort and unordered; `Ok` means the medium accepted a payload, not that
///   anyone received it;
/// - a payload is delivered intact and at most once to each session (backends that fan out
///   over several relays deduplicate);
/// - only the addressee of [`SignalSession::send_to`] receives the message; sessions on other
///   topics receive nothing; a session never hears its own events;
/// - after [`SignalSession::leave`] the session refuses to send with [`SignalError::Left`], the
///   other peers receive [`SignalEvent::PeerGone`] and the event stream ends;
/// - every queue is bounded; overflow is reported as [`SignalEvent::Lagged`].
pub trait Signaling: Send + Sync + 'static {
    /// The handle to act on a joined topic.
    type Session: SignalSession;
    /// The stream of what happens on the topic. It ends after the session leaves.
    type Events: Stream<Item = SignalEvent> + Send + Unpin + 'static;

    /// Joins a topic as a peer: subscribes before returning, so nothing sent to this peer after
    /// `join` returns is missed by the backend's own doing.
    fn join(
        &self,
        request: JoinRequest,
    ) -> impl Future<Output = Result<(Self::Session, Self::Events), SignalError>> + Send;
}

/// A joined topic. Cheap to clone; all clones act for the same peer.
pub trait SignalSession: Clone + Send + Sync + 'static {
    /// This session's peer id.
    fn local_peer(&self) -> PeerId;

    /// The joined topic.
    fn topic(&self) -> Topic;

    /// The limits this session enforces.
    fn limits(&self) -> SignalLimits;

    /// Publishes this peer's presence on the topic. Calling it again replaces the presence.
    /// Backends may re-publish it on their own schedule until the session leaves (each
    /// backend documents its schedule).
    fn announce(&self, presence: Bytes) -> impl Future<Output = Result<(), SignalError>> + Send;

    /// Addresses an opaque message to one peer on the topic.
    fn send_to(
        &self,
        peer: PeerId,
        message: Bytes,
    ) -> impl Future<Output = Result<(), SignalError>> + Send;

    /// Says goodbye and leaves the topic. Idempotent.
    fn leave(&self) -> impl Future<Output = Result<(), SignalError>> + Send;

    /// The session's media (relays, hubs) and counters, for applications to show. Backends
    /// that track nothing report an empty [`crate::SignalHealth`].
    fn health(&self) -> crate::SignalHealth {
        crate::SignalHealth::default()
    }
}
