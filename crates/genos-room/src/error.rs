//! Errors of the room layer.

use genos_crypto::PeerId;

/// What went wrong with a room operation, and whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// Local: the room key could not be derived (bad name, password or parameters).
    #[error("room key: {0}")]
    Key(#[from] genos_crypto::KeyError),
    /// The signaling backend refused (joining, announcing or leaving).
    #[error("signaling: {0}")]
    Signal(#[from] genos_signal::SignalError),
    /// The transport refused or the link to a peer broke while sending.
    #[error("transport: {0}")]
    Transport(#[from] genos_transport::TransportError),
    /// Local: the message exceeds [`crate::RoomLimits::max_message_size`]. Nothing was sent.
    #[error("message of {size} bytes exceeds the room limit of {limit} bytes")]
    MessageTooLarge {
        /// Size of the refused message.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Local: the metadata exceeds [`crate::MAX_METADATA_LEN`]. Nothing was sent.
    #[error("metadata of {size} bytes exceeds the limit of {limit} bytes")]
    MetadataTooLarge {
        /// Size of the refused metadata.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Local: a channel name is empty or longer than [`crate::MAX_CHANNEL_NAME_LEN`].
    #[error("invalid channel name: {0}")]
    InvalidChannelName(String),
    /// Local: the addressed peer is not connected in this room.
    #[error("peer {0} is not connected in this room")]
    UnknownPeer(PeerId),
    /// Local: the link to this peer has no unreliable channel (yet, or the peer's side does
    /// not open one). Nothing was sent.
    #[error("no unreliable channel to peer {0} (yet)")]
    NoUnreliableLink(PeerId),
    /// Local: too many pings to this peer await their answer.
    #[error("too many pings awaiting an answer from {0}")]
    TooManyPings(PeerId),
    /// The peer did not answer in time (ping) or left while we waited.
    #[error("peer {0} did not answer in time")]
    NoAnswer(PeerId),
    /// Local: a typed message or a frame header could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// Local: a frame could not be sealed with the room's data key.
    #[error("cannot seal a frame")]
    Seal(#[source] genos_crypto::EnvelopeError),
    /// Peer: a typed message could not be decoded as the channel's type.
    #[error("message from {from} does not decode as the channel's type: {reason}")]
    Decode {
        /// The sender.
        from: PeerId,
        /// What the decoder said.
        reason: String,
    },
    /// Local: a cells room needs the peer's identity ([`crate::RoomConfig::with_identity`]):
    /// the frames others forward are signed by their origin.
    #[error("a cells room needs the peer's identity (RoomConfig::with_identity)")]
    IdentityRequired,
    /// Local: the identity given does not belong to the peer id the room is joined as.
    #[error("the identity does not match the local peer id")]
    IdentityMismatch,
    /// Local: a setting is out of its range.
    #[error("invalid room settings: {0}")]
    InvalidSettings(String),
    /// Local: the cellular overlay refused the send (too many targets, or the room is still
    /// finding its cells). Nothing was sent.
    #[error("the overlay refused the send: {0}")]
    Overlay(String),
    /// Local: the room has left; it can no longer send.
    #[error("the room has been left")]
    Left,
    /// Local: the track was removed; it can no longer send.
    #[error("track {0} was removed")]
    TrackRemoved(String),
    /// Local: the room already sends as many tracks as allowed.
    #[error("the room already sends the maximum of {limit} tracks")]
    TooManyTracks {
        /// The limit ([`crate::MAX_ROOM_TRACKS`]).
        limit: usize,
    },
}

/// Why a frame from a peer was rejected. The frame is dropped, the count in
/// [`crate::RoomStats::frames_rejected`] goes up, a [`crate::RoomEvent::FrameRejected`] is
/// reported and the link keeps working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame does not open with the room's data key for this sender, recipient and
    /// position (wrong password, tampering, replay or reordering).
    #[error("frame is not authentic")]
    Unauthentic,
    /// The plaintext does not decode as a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A chunk announces a message above the room's maximum message size.
    #[error("message of {size} bytes exceeds the room limit of {limit} bytes")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// A chunk does not continue its message where the previous one ended, or overruns it.
    #[error("chunk at offset {offset} does not continue its message (expected {expected})")]
    OutOfOrder {
        /// The chunk's offset.
        offset: u64,
        /// Where the message stood.
        expected: u64,
    },
    /// Starting this message would exceed the per-peer partial-message limits.
    #[error("too many partially received messages from this peer")]
    TooManyPartials,
    /// A channel name in the frame is empty or too long.
    #[error("invalid channel name in frame")]
    BadChannelName,
}
