//! # genos: peer-to-peer rooms, natively in Rust
//!
//! Peers join a room (app id + room id, optional password), find each other over a
//! signaling medium (the Nostr relay network by default) and connect directly (WebRTC by
//! default) to exchange data and media. No server of yours is involved.
//!
//! This facade re-exports the layers, each usable on its own:
//!
//! - [`crypto`]: peer identities, room keys and sealed envelopes;
//! - [`signal`]: the `Signaling` seam and its backends;
//! - [`transport`]: the `Transport` seam and its backends;
//! - [`cellmesh`]: the overlay for very large rooms;
//! - [`room`]: the session layer on top of them all.
//!
//! Status: the seams and their in-memory backends are built; `Genos::builder()` and the
//! default Nostr and WebRTC backends come with the issues that build them.
//!
//! ```
//! use genos::crypto::PeerId;
//! use genos::room::dial_role;
//! use genos::transport::Role;
//!
//! let me = PeerId::from_bytes([1; 32]);
//! let you = PeerId::from_bytes([2; 32]);
//! assert_eq!(dial_role(&me, &you), Some(Role::Offerer));
//! ```

pub use genos_cellmesh as cellmesh;
pub use genos_crypto as crypto;
pub use genos_room as room;
pub use genos_signal as signal;
pub use genos_transport as transport;
