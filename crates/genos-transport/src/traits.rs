//! The `Transport` / `Connection` / `DataChannel` seam.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

use crate::TransportError;
use crate::media::{LocalTrack, RemoteTrack, TrackSpec};

/// Which side of the setup handshake a connection plays. The room layer picks roles with a
/// deterministic rule so exactly one side offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Creates the offer.
    Offerer,
    /// Waits for an offer and answers it.
    Answerer,
}

/// Delivery guarantees of a data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reliability {
    /// Every message arrives once, in order; sends wait while the send buffer is full.
    ReliableOrdered,
    /// Messages may be lost or reordered, never corrupted or duplicated; a send never waits
    /// for the remote: when the send buffer is full, the message is dropped and counted in
    /// [`ConnectionStats::messages_dropped`].
    UnreliableUnordered,
}

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Created; no signaling exchanged yet.
    New,
    /// Signaling in progress.
    Connecting,
    /// The link is up; channels can be opened.
    Connected,
    /// The link stopped answering; it may come back or fail.
    Disconnected,
    /// The link is lost for good (the peer vanished or the network failed).
    Failed,
    /// Closed by either side.
    Closed,
}

impl ConnectionState {
    /// Whether the state is final (failed or closed).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Closed)
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::New => "new",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Failed => "failed",
            Self::Closed => "closed",
        };
        f.write_str(text)
    }
}

/// Something a connection reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectionEvent<C> {
    /// Relay these opaque bytes to the remote side's [`Connection::handle_signal`].
    Signal(Bytes),
    /// The connection changed state.
    StateChanged(ConnectionState),
    /// The remote side opened a channel.
    ChannelOpened(C),
    /// The first sample of a track the remote side added arrived.
    TrackReceived(RemoteTrack),
    /// The remote side removed a track: its [`RemoteTrack::recv_sample`] ends after the
    /// samples already queued.
    TrackEnded {
        /// The track's id.
        id: String,
    },
}

/// Limits a connection enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportLimits {
    /// Largest message one `send` accepts.
    pub max_message_size: usize,
    /// Bytes a channel buffers on the sending side before a reliable send waits.
    pub send_buffer: usize,
    /// Channels one connection may open (both sides counted separately).
    pub max_channels: usize,
}

impl TransportLimits {
    /// Limits with the given values.
    pub fn new(max_message_size: usize, send_buffer: usize, max_channels: usize) -> Self {
        Self {
            max_message_size,
            send_buffer,
            max_channels,
        }
    }
}

/// Counters and measurements of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Round-trip time, when the backend measures one.
    pub rtt: Option<Duration>,
    /// Payload bytes sent on all channels.
    pub bytes_sent: u64,
    /// Payload bytes received on all channels.
    pub bytes_received: u64,
    /// Messages sent on all channels.
    pub messages_sent: u64,
    /// Messages received on all channels.
    pub messages_received: u64,
    /// Unreliable messages dropped because a send buffer was full (or lost on purpose).
    pub messages_dropped: u64,
    /// Bytes waiting in send buffers now.
    pub buffered_bytes: u64,
}

/// A way to make direct connections: WebRTC, in-memory pairs, or your own.
///
/// The contract, checked by the conformance suite:
///
/// - the two sides reach [`ConnectionState::Connected`] once every [`ConnectionEvent::Signal`]
///   of each side has been handed to the other's [`Connection::handle_signal`];
/// - signaling input that is garbage or meant for another connection gives
///   [`TransportError::InvalidSignal`] and leaves the connection usable;
/// - a reliable channel delivers every message once, intact and in order, and applies
///   backpressure: with a receiver that does not read, sends stop completing once the
///   buffers are full, and resume when it reads;
/// - messages above [`TransportLimits::max_message_size`] are refused with
///   [`TransportError::MessageTooLarge`]; at most [`TransportLimits::max_channels`] channels;
/// - closing a connection is seen by the other side as [`ConnectionState::Closed`], and the
///   channels of both sides end ([`DataChannel::recv`] returns `None`).
pub trait Transport: Send + Sync + 'static {
    /// A connection made by this transport.
    type Connection: Connection;
    /// The connection's event stream; it ends after the terminal state (closed or failed)
    /// and when the connection is dropped.
    type Events: Stream<Item = ConnectionEvent<<Self::Connection as Connection>::Channel>>
        + Send
        + Unpin
        + 'static;

    /// Starts a connection in the given role. An offerer's offer arrives as the first
    /// [`ConnectionEvent::Signal`].
    fn connect(
        &self,
        role: Role,
    ) -> impl Future<Output = Result<(Self::Connection, Self::Events), TransportError>> + Send;
}

/// One direct link to a remote peer. Cheap to clone; clones share the link.
pub trait Connection: Clone + fmt::Debug + Send + Sync + 'static {
    /// The channel type of this connection.
    type Channel: DataChannel;

    /// The role this side plays.
    fn role(&self) -> Role;

    /// The current state.
    fn state(&self) -> ConnectionState;

    /// The limits this connection enforces.
    fn limits(&self) -> TransportLimits;

    /// Feeds a signaling message that the remote side emitted.
    fn handle_signal(
        &self,
        message: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Opens a channel. Waits until the connection is connected; fails if it fails or closes
    /// first. The remote side receives a [`ConnectionEvent::ChannelOpened`].
    fn open_channel(
        &self,
        label: &str,
        reliability: Reliability,
    ) -> impl Future<Output = Result<Self::Channel, TransportError>> + Send;

    /// Current counters.
    fn stats(&self) -> impl Future<Output = ConnectionStats> + Send;

    /// Adds a media track that this side sends. Waits until the connection is connected;
    /// the remote side learns of the track from its first sample
    /// ([`ConnectionEvent::TrackReceived`]). Backends that renegotiate do so over the
    /// connection itself; both sides adding tracks at once is resolved without loss.
    ///
    /// Errors: [`TransportError::InvalidTrack`] for a bad or already used id,
    /// [`TransportError::ResourceLimit`] beyond the backend's live-track limit,
    /// [`TransportError::NotConnected`].
    fn add_track(
        &self,
        spec: TrackSpec,
    ) -> impl Future<Output = Result<LocalTrack, TransportError>> + Send;

    /// Stops sending a track; the remote side gets [`ConnectionEvent::TrackEnded`]. Writes to
    /// it fail from now on. Removing a removed track is a no-op.
    fn remove_track(
        &self,
        track: &LocalTrack,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Closes the connection and its channels; the remote side sees
    /// [`ConnectionState::Closed`]. Idempotent.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A message channel on a connection. Cheap to clone; clones share the channel.
pub trait DataChannel: Clone + fmt::Debug + Send + Sync + 'static {
    /// The label given at open.
    fn label(&self) -> &str;

    /// The channel's delivery guarantees.
    fn reliability(&self) -> Reliability;

    /// Largest message [`DataChannel::send`] accepts.
    fn max_message_size(&self) -> usize;

    /// Bytes buffered on the sending side and not yet taken by the link.
    fn buffered_amount(&self) -> usize;

    /// Sends one message. Reliable channels wait while the send buffer is full.
    fn send(&self, message: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Receives the next message; `None` once the channel is closed and drained.
    fn recv(&self) -> impl Future<Output = Option<Bytes>> + Send;

    /// Closes the channel for both sides. Idempotent.
    fn close(&self) -> impl Future<Output = ()> + Send;
}
