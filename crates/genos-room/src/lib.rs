//! # genos-room: the session layer
//!
//! A room is what an application joins: peers that share an app id and a room id (and a
//! password, for an end-to-end encrypted room). This layer turns the two lower seams into that
//! experience. It is generic over [`genos_signal::Signaling`] (how peers find each other) and
//! [`genos_transport::Transport`] (how they connect) and never names a concrete backend.
//!
//! **Presence and dialling.** [`Room::join`] derives the room key once (Argon2id for a
//! password room), joins the key's topic and announces. Of two peers, the lower id dials
//! ([`dial_role`]): no glare. The answering side greets a newcomer with a direct hello so
//! it is dialled at once, not at the next announcement. Dials in progress are capped, a
//! failed dial cools down (with backoff) before that peer is dialled again, and every dial
//! attempt carries an id so a new attempt cleanly replaces a stale one.
//!
//! **Links.** Each connected peer has one reliable, ordered transport channel. Every frame
//! on it is sealed with the room's data subkey (XChaCha20-Poly1305, on top of DTLS), bound to
//! sender, recipient and sequence number. Heartbeats keep it alive; a watchdog reports a
//! silent peer ([`LeaveReason::TimedOut`]) within [`RoomLimits::peer_timeout`]. Leaving
//! says goodbye and waits for each peer to confirm it read everything first.
//!
//! **Channels.** [`Room::channel`] gives a named byte channel ([`Room::typed_channel`] one
//! for serde values): send to all, one or several peers, with metadata and progress.
//! Messages of any size up to [`RoomLimits::max_message_size`] are chunked to the
//! transport's message size and reassembled within per-peer bounds. Receiving applies
//! backpressure all the way to the sender. Messages for a channel not opened yet are kept
//! within a bound, then dropped and counted. Malformed frames are rejected, counted and
//! reported ([`RoomEvent::FrameRejected`]) while the link goes on.
//!
//! The wire format is in `docs/protocol.md` §3.
//!
//! ```
//! use genos_crypto::PeerId;
//! use genos_room::dial_role;
//! use genos_transport::Role;
//!
//! let low = PeerId::from_bytes([1; 32]);
//! let high = PeerId::from_bytes([2; 32]);
//! assert_eq!(dial_role(&low, &high), Some(Role::Offerer));
//! assert_eq!(dial_role(&high, &low), Some(Role::Answerer));
//! assert_eq!(dial_role(&low, &low), None);
//! ```

mod channel;
mod config;
mod datagram;
mod dial;
mod driver;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod machine;
mod media;
mod mesh;
mod reassembly;
mod registry;
mod room;
mod router;
mod shared;
mod stats;
mod wire;

pub use channel::{
    Channel, Message, Progress, ProgressFn, ProgressStream, SendOptions, SendReport, Target, Typed,
    TypedChannel,
};
pub use config::{
    AutoSettings, CellsSettings, DEFAULT_MAX_MESSAGE_SIZE, MAX_CHANNEL_NAME_LEN, MAX_MESH_CHUNK,
    MAX_METADATA_LEN, RoomConfig, RoomLimits, Topology,
};
pub use dial::dial_role;
pub use error::{FrameError, RoomError};
pub use events::{LeaveReason, RoomEvent, RoomEvents};
pub use media::{MAX_MEDIA_LINKS, MAX_REMOTE_TRACKS, MAX_ROOM_TRACKS, RoomTrack, TrackOptions};
pub use mesh::{MeshStatus, missing_planned_links, planned_peers};
pub use room::Room;
pub use stats::{PeerInfo, RoomStats};
pub use wire::PROTOCOL_VERSION;

/// Locks a mutex, taking the data even if a panicking thread poisoned it: every structure
/// behind these locks stays consistent between statements, so poisoning carries no meaning.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
