//! What a room reports: peers joining and leaving, their media tracks, rejected frames.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use genos_crypto::PeerId;
use genos_transport::RemoteTrack;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::FrameError;

/// Why a peer is no longer in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It said goodbye (or closed its connection).
    Left,
    /// It stayed silent longer than [`crate::RoomLimits::peer_timeout`].
    TimedOut,
    /// The connection failed (or was replaced by a new one from the same peer).
    Failed,
}

/// Something that happened in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// A peer is connected and can be sent to.
    PeerJoined {
        /// The peer.
        peer: PeerId,
    },
    /// A peer is gone.
    PeerLeft {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A frame from a peer was rejected; the link goes on.
    FrameRejected {
        /// The sending peer.
        peer: PeerId,
        /// What was wrong.
        error: FrameError,
    },
    /// (Cells rooms) the overlay's view of the room changed: it now has `cells` cells and
    /// this peer is in `cell`.
    CellsChanged {
        /// Cells in the room.
        cells: u32,
        /// This peer's cell.
        cell: u32,
    },
    /// (Cells rooms) a message this peer sent to `peer` may not have arrived: a chunk of it
    /// went unacknowledged for the overlay's `direct_give_up` (120 s in cells rooms), or
    /// newer sends pushed it out of what is kept for resending
    /// ([`crate::RoomStats::mesh_directed_failed`] counts the chunks). The peer may still
    /// have it (its acknowledgements may be what was lost). Reported once per message.
    DeliveryFailed {
        /// The target.
        peer: PeerId,
        /// The channel it was sent on.
        channel: String,
        /// The message's number, as [`crate::SendReport::message`] and
        /// [`crate::Progress::message`] give it.
        message: u64,
    },
    /// A peer sends us a media track: read its samples from `track`.
    PeerTrack {
        /// The sending peer.
        peer: PeerId,
        /// The track; [`RemoteTrack::recv_sample`] gives its samples.
        track: RemoteTrack,
        /// What the sender said about it ([`crate::TrackOptions::metadata`]).
        metadata: Bytes,
    },
    /// A peer's track ended: it was removed, or the peer left.
    PeerTrackEnded {
        /// The sending peer.
        peer: PeerId,
        /// The track's id.
        id: String,
    },
    /// This reader fell behind and missed this many events.
    Lagged {
        /// Number of events missed.
        missed: u64,
    },
}

/// The stream of a room's events; it ends when the room has left.
pub struct RoomEvents {
    inner: BroadcastStream<RoomEvent>,
}

impl RoomEvents {
    pub(crate) fn new(receiver: broadcast::Receiver<RoomEvent>) -> Self {
        Self {
            inner: BroadcastStream::new(receiver),
        }
    }
}

impl std::fmt::Debug for RoomEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomEvents")
    }
}

impl Stream for RoomEvents {
    type Item = RoomEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomEvent>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|result| match result {
                Ok(event) => event,
                Err(BroadcastStreamRecvError::Lagged(missed)) => RoomEvent::Lagged { missed },
            })
        })
    }
}
