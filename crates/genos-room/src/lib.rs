//! # genos-room: the session layer
//!
//! A room is what an application joins: peers that share an app id and a room id (and a
//! password, for an end-to-end encrypted room). This layer turns the two lower seams into that
//! experience. It is generic over [`genos_signal::Signaling`] (how peers find each other) and
//! [`genos_transport::Transport`] (how they connect) and never names a concrete backend:
//!
//! - presence: announce on the room's topic, notice peers, decide who dials whom
//!   ([`dial_role`]), relay each connection's signaling messages over the signaling session;
//! - peer lifecycle: joined, left (with a reason), a heartbeat watchdog;
//! - channels: named, framed, chunked to the transport's message size, sealed per frame with
//!   the room's data key, with progress, metadata and targets;
//! - optionally the cellular mesh of `genos-cellmesh` for very large rooms.
//!
//! Status: only [`dial_role`] is built so far; the room itself is the rooms issue. Until then
//! `genos demo` wires the seams by hand on the in-memory backends.
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

mod dial;

pub use dial::dial_role;
