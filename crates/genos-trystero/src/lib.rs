//! # genos-trystero: speaking Trystero 0.25, so a genos peer can join a room of browsers
//!
//! [Trystero](https://github.com/dmotz/trystero) is what browser apps use today for
//! serverless WebRTC rooms over public Nostr relays. Its wire protocol is not genos's: its
//! topics are SHA-1 digests written in base 36, its Nostr events carry plain JSON signaling
//! (only SDP and candidates are encrypted, with AES-GCM under an unsalted SHA-256 of the
//! password), and its peers talk over one data channel named `data` in frames of named
//! "actions". This crate is that protocol as codecs, kept apart from genos's native one so
//! neither bends to the other.
//!
//! The layer is sans-IO: every module turns bytes into typed values and back, with bounds and
//! typed errors, and nothing here opens a socket.
//!
//! - [`topic`]: the room and per-peer topics and the Nostr event kind of each.
//! - [`crypto`]: the SDP cipher ([`crypto::SdpKey`]), the room token that prefixes every
//!   frame, and the password handshake's challenge hash.
//! - [`signal`]: the JSON content of Trystero's Nostr events (announce, offer, answer,
//!   candidate), parsed by Trystero's own rules.
//! - [`wire`]: the frames on the `data` channel: room frames and room presence, action chunks
//!   (32-byte action name, 16-bit message counter, flags, progress byte) and a bounded
//!   [`wire::Reassembler`].
//! - [`peer_id`]: Trystero's 20-character peer ids.
//!
//! What is compatible and what is not is listed in `docs/trystero.md`.
//!
//! ```
//! use genos_trystero::topic::Topics;
//!
//! let topics = Topics::new("my-app", "lobby");
//! assert_eq!(topics.room(), "z564c132g302c6qki3c2z374n12711k3x245f");
//! assert_eq!(topics.room_kind(), 22_637);
//! ```

pub mod crypto;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod peer_id;
pub mod room;
pub mod signal;
pub mod topic;
pub mod wire;

pub use error::TrysteroError;
pub use room::{
    SendReport, TrysteroConfig, TrysteroEvent, TrysteroEvents, TrysteroRoom, TrysteroTrack,
};
