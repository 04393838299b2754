//! Errors of the signaling layer.

/// What went wrong in signaling, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Local: the payload exceeds [`crate::SignalLimits::max_message_size`]. Nothing was sent.
    #[error("signaling message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The backend's limit.
        limit: usize,
    },
    /// Local: the session has left; it can no longer send.
    #[error("the signaling session has left the topic")]
    Left,
    /// Local: the topic already holds as many peers as this backend allows.
    #[error("the topic is full ({limit} peers)")]
    TopicFull {
        /// The backend's per-topic limit.
        limit: usize,
    },
    /// Local: this peer id is already joined to the topic on this backend.
    #[error("peer is already joined to this topic")]
    AlreadyJoined,
    /// Local: the backend's configuration is unusable.
    #[error("invalid signaling configuration: {0}")]
    InvalidConfig(String),
    /// Local: the message could not be encoded for the wire.
    #[error("cannot encode a signaling message: {0}")]
    Encode(String),
    /// Local: the message could not be sealed with the room's signaling key.
    #[error("cannot seal a signaling message")]
    Seal(#[source] genos_crypto::EnvelopeError),
    /// Local: the event could not be signed with this peer's key.
    #[error("cannot sign a signaling event: {0}")]
    Sign(String),
    /// Medium: no relay or hub could take the message right now.
    #[error("signaling medium unavailable: {0}")]
    Unavailable(String),
}
