//! Events a signaling session reports.

use bytes::Bytes;
use genos_crypto::PeerId;

/// Something that happened on the topic, as seen by one session.
///
/// A session never reports its own presence or messages back to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalEvent {
    /// A peer announced itself (for the first time, or again with possibly new presence bytes).
    PeerSeen {
        /// The announcing peer.
        peer: PeerId,
        /// The opaque presence payload it published.
        presence: Bytes,
    },
    /// A peer addressed a message to this session.
    Message {
        /// The sender.
        from: PeerId,
        /// The opaque payload.
        payload: Bytes,
    },
    /// A peer said goodbye. Peers that vanish without leaving produce no event: the room's
    /// watchdog notices them.
    PeerGone {
        /// The peer that left.
        peer: PeerId,
    },
    /// The session's bounded inbox overflowed and this many events were dropped since the
    /// last report. Signaling is best effort; the room recovers by announcing again.
    Lagged {
        /// Number of events dropped.
        dropped: u64,
    },
}
