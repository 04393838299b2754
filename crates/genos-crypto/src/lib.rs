//! # genos-crypto: the bottom layer
//!
//! Everything genos promises about secrecy and authenticity rests on this crate, and it depends
//! on no other genos crate. It holds:
//!
//! - [`PeerId`]: who a peer is. A peer id is the peer's public key, so whoever holds the id can
//!   check the peer's signatures without asking anyone.
//!
//! Room keys, sealed envelopes and signing identities land here with the crypto issue; until
//! then this crate only defines the identifier the other layers share.
//!
//! ```
//! use genos_crypto::PeerId;
//! let id = PeerId::from_bytes([7u8; 32]);
//! let text = id.to_string();
//! assert_eq!(text.parse::<PeerId>().unwrap(), id);
//! ```

mod peer_id;

pub use peer_id::{ParsePeerIdError, PeerId};
