//! # genos-crypto: the bottom layer
//!
//! Everything genos promises about secrecy and authenticity rests on this crate, and it depends
//! on no other genos crate. It is usable on its own.
//!
//! - **Peer identity** ([`Identity`], [`PeerId`], [`Signature`]): every peer holds a secp256k1
//!   keypair and its id *is* its x-only public key, the same key it signs Nostr events with.
//!   Detached BIP-340 Schnorr signatures let peers that forward a frame prove nothing was
//!   forged on the way. Keys can be persisted to a file created owner-only.
//! - **Room keys** ([`RoomKey`]): from app id, room id and an optional password, Argon2id
//!   (salted by app and room) derives a master secret, and HKDF-SHA256 derives one subkey per
//!   purpose: the rendezvous topic, the signaling seal and the data seal. Without a password
//!   the same structure comes from app and room alone: that is obfuscation, not secrecy.
//! - **Sealed envelopes** ([`SealKey`], [`Context`]): XChaCha20-Poly1305 with random 24-byte
//!   nonces and a small versioned header; the associated data binds the protocol version, the
//!   purpose and the sender, so a sealed message cannot be replayed in another context. The
//!   in-place API seals a frame without copying it.
//! - **Replay guard** ([`ReplayGuard`]): a bounded cache of seen message ids plus a timestamp
//!   window, for signaling messages.
//!
//! Secrets are zeroized on drop and never printed by `Debug`.
//!
//! ```
//! use genos_crypto::{Context, Identity, KeyParams, Purpose, RoomKey};
//!
//! let alice = Identity::generate();
//! let key = RoomKey::derive("my-app", "lobby", Some(b"hunter2"), &KeyParams::default())?;
//! let context = Context::new(Purpose::Data, alice.peer_id());
//! let sealed = key.data_key().seal(&context, b"hello")?;
//! assert_eq!(key.data_key().open(&context, &sealed)?, b"hello");
//!
//! let signature = alice.sign(&sealed);
//! assert!(alice.peer_id().verify(&sealed, &signature).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod envelope;
mod identity;
mod peer_id;
mod replay;
mod room_key;

pub use envelope::{
    Context, EnvelopeError, HEADER_LEN, MAX_PLAINTEXT_LEN, OVERHEAD, Purpose, SealKey, TAG_LEN,
    VERSION,
};
pub use identity::{Identity, IdentityError, Signature, SignatureError};
pub use peer_id::{ParsePeerIdError, PeerId};
pub use replay::{ReplayError, ReplayGuard, ReplayGuardConfig};
pub use room_key::{
    KeyError, KeyParams, MAX_NAME_LEN, MAX_PASSWORD_LEN, MAX_SUB_TOPIC_LABEL, RoomKey,
};

#[cfg(test)]
mod vectors;
