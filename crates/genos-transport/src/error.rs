//! Errors of the transport layer.

/// What went wrong on a connection or channel, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Local: the message exceeds the channel's maximum message size. Nothing was sent.
    #[error("message of {size} bytes exceeds the channel limit of {limit} bytes")]
    MessageTooLarge {
        /// Size of the rejected message.
        size: usize,
        /// The channel's limit.
        limit: usize,
    },
    /// Local: the connection already has as many channels as allowed.
    #[error("connection already has the maximum of {limit} channels")]
    TooManyChannels {
        /// The limit.
        limit: usize,
    },
    /// Local: a channel label is empty or too long.
    #[error("invalid channel label: {0}")]
    InvalidLabel(String),
    /// Peer: a signaling message could not be understood or does not fit this connection.
    #[error("invalid signaling message: {0}")]
    InvalidSignal(String),
    /// The operation needs a connection that is not (or no longer) connected.
    #[error("connection is {0}")]
    NotConnected(crate::ConnectionState),
    /// The channel was closed by either side or with its connection.
    #[error("channel closed")]
    ChannelClosed,
    /// Local: the backend's configuration is unusable.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// The backend could not set up a connection (create it, make or apply an offer or
    /// answer): a fault of the local stack, or an answer the stack refuses.
    #[error("connection setup failed: {step}: {reason}")]
    Setup {
        /// The step that failed.
        step: &'static str,
        /// What the backend said.
        reason: String,
    },
    /// Local: a resource limit of the backend was reached (pending offers, sockets, ...).
    #[error("transport resource limit reached: {0}")]
    ResourceLimit(String),
    /// A TURN server answered an allocation with an error: wrong credentials (401), quota
    /// (486), ...
    #[error("TURN server {server} refused the allocation: {reason}")]
    TurnRefused {
        /// The TURN URL.
        server: String,
        /// What the server said.
        reason: String,
    },
    /// A TURN server could not be reached or did not answer in time.
    #[error("TURN server {server} unreachable: {reason}")]
    TurnUnreachable {
        /// The TURN URL.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// A media track id that is malformed or already used, or a track that was removed.
    #[error("invalid track: {0}")]
    InvalidTrack(String),
    /// A TURN URL this backend cannot use (webrtc 0.21: `turn:` over UDP only).
    #[error("unsupported TURN URL {0}: only turn: over UDP is supported")]
    TurnUnsupported(String),
}
