//! Who may originate a frame and who may read it.
//!
//! Forwarders handle frames they must neither forge nor (for directed frames) read, so the
//! overlay signs every frame with the origin's key and seals every body before it leaves
//! the origin. The overlay reaches the keys through [`FrameAuth`]; [`CryptoAuth`] is the
//! real implementation on `genos-crypto` (BIP-340 signatures, the room's key for broadcast
//! bodies, an ECDH pair key for directed bodies).

use std::collections::HashMap;

use bytes::Bytes;
use genos_crypto::{Context, Identity, PeerId, Purpose, SealKey, Signature};

use crate::PeerKey;

/// Why a frame failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The signature is not the origin's over this frame.
    #[error("bad signature")]
    BadSignature,
    /// The body does not open with the expected key (tampered, or not meant for us).
    #[error("body does not open")]
    Unopenable,
    /// The origin's key is not a valid public key.
    #[error("invalid origin key")]
    InvalidKey,
}

/// Signing and sealing for frames; the overlay calls it, never the other way round.
pub trait FrameAuth {
    /// This peer's public key (its identity in the overlay).
    fn me(&self) -> PeerKey;
    /// Signs the concatenation of `parts` as this peer.
    fn sign(&mut self, parts: &[&[u8]]) -> [u8; 64];
    /// Checks that `origin` signed the concatenation of `parts`.
    fn verify(
        &mut self,
        origin: &PeerKey,
        parts: &[&[u8]],
        signature: &[u8; 64],
    ) -> Result<(), AuthError>;
    /// Seals `plaintext` for every room member (`target` None) or for `target` only.
    /// `context` (at most 64 bytes) must be given again to open.
    fn seal(
        &mut self,
        target: Option<&PeerKey>,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, AuthError>;
    /// Opens a body sealed by `origin` for the room (`direct` false) or for this peer.
    /// (`Bytes` both ways: a scheme that seals nothing hands the body on without a copy.)
    fn open(
        &mut self,
        origin: &PeerKey,
        direct: bool,
        context: &[u8],
        sealed: &Bytes,
    ) -> Result<Bytes, AuthError>;
}

/// Pair keys cached at most; at the bound the cache is emptied (keys are re-derived).
const MAX_PAIR_KEYS: usize = 1024;

/// [`FrameAuth`] on `genos-crypto`: BIP-340 Schnorr signatures by the peer's identity,
/// broadcast bodies sealed with the room's data key, directed bodies with a key only the
/// origin and the target can derive (ECDH).
pub struct CryptoAuth {
    identity: Identity,
    room_key: SealKey,
    pair_keys: HashMap<PeerKey, SealKey>,
}

impl std::fmt::Debug for CryptoAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoAuth")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl CryptoAuth {
    /// Signs as `identity`; seals broadcasts with `room_key` (the room's data key).
    pub fn new(identity: Identity, room_key: SealKey) -> Self {
        Self {
            identity,
            room_key,
            pair_keys: HashMap::new(),
        }
    }

    fn pair_key(&mut self, peer: &PeerKey) -> Result<&SealKey, AuthError> {
        if !self.pair_keys.contains_key(peer) {
            if self.pair_keys.len() >= MAX_PAIR_KEYS {
                self.pair_keys.clear();
            }
            let key = self
                .identity
                .pair_key(&PeerId::from_bytes(*peer), b"genos/cellmesh/v1/direct")
                .map_err(|_| AuthError::InvalidKey)?;
            self.pair_keys.insert(*peer, key);
        }
        self.pair_keys.get(peer).ok_or(AuthError::InvalidKey)
    }
}

impl FrameAuth for CryptoAuth {
    fn me(&self) -> PeerKey {
        *self.identity.peer_id().as_bytes()
    }

    fn sign(&mut self, parts: &[&[u8]]) -> [u8; 64] {
        *self.identity.sign(&parts.concat()).as_bytes()
    }

    fn verify(
        &mut self,
        origin: &PeerKey,
        parts: &[&[u8]],
        signature: &[u8; 64],
    ) -> Result<(), AuthError> {
        PeerId::from_bytes(*origin)
            .verify(&parts.concat(), &Signature::from_bytes(*signature))
            .map_err(|_| AuthError::BadSignature)
    }

    fn seal(
        &mut self,
        target: Option<&PeerKey>,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        let me = self.identity.peer_id();
        let context = Context::new(Purpose::Mesh, me).with_extra(context);
        let key = match target {
            Some(target) => self.pair_key(target)?,
            None => &self.room_key,
        };
        key.seal(&context, plaintext)
            .map_err(|_| AuthError::Unopenable)
    }

    fn open(
        &mut self,
        origin: &PeerKey,
        direct: bool,
        context: &[u8],
        sealed: &Bytes,
    ) -> Result<Bytes, AuthError> {
        let context = Context::new(Purpose::Mesh, PeerId::from_bytes(*origin)).with_extra(context);
        let key = if direct {
            self.pair_key(origin)?
        } else {
            &self.room_key
        };
        key.open(&context, sealed)
            .map(Bytes::from)
            .map_err(|_| AuthError::Unopenable)
    }
}

/// A stand-in for [`CryptoAuth`] in simulations of thousands of peers on one core: a 64-bit
/// keyed hash instead of a signature, bodies left in the clear. It keeps the overlay's
/// checks (a frame changed in flight or claiming another origin fails) at a cost a
/// single-core simulation of 10,000 peers can afford. Not for real rooms: anyone who knows
/// the scheme can forge it.
#[cfg(any(test, feature = "sim"))]
#[derive(Debug, Clone)]
pub struct SimAuth {
    me: PeerKey,
}

#[cfg(any(test, feature = "sim"))]
impl SimAuth {
    /// The simulated identity `me`.
    pub fn new(me: PeerKey) -> Self {
        Self { me }
    }

    /// The stand-in signature: the tag in the first 8 bytes, zeros after.
    fn signature(origin: &PeerKey, parts: &[&[u8]]) -> [u8; 64] {
        let mut signature = [0u8; 64];
        for (slot, byte) in signature
            .iter_mut()
            .zip(Self::tag(origin, parts).to_le_bytes())
        {
            *slot = byte;
        }
        signature
    }

    /// Four lanes, each mixing every fourth word: the mixes of one block do not wait on
    /// each other (one chain over a 200-byte frame was a tenth of a 10,000-peer run's
    /// broadcast time).
    fn tag(origin: &PeerKey, parts: &[&[u8]]) -> u64 {
        use crate::mix::mix64;
        let mut lanes = [
            0x9e37_79b9_7f4a_7c15u64,
            0x6a09_e667_f3bc_c908,
            0xbb67_ae85_84ca_a73b,
            0x3c6e_f372_fe94_f82b,
        ];
        let mut absorb = |bytes: &[u8]| {
            for block in bytes.chunks(32) {
                for (lane, chunk) in lanes.iter_mut().zip(block.chunks(8)) {
                    *lane = mix64(*lane ^ u64::from_le_bytes(pad8(chunk)));
                }
            }
        };
        absorb(origin);
        for part in parts {
            absorb(part);
            absorb(&(part.len() as u64).to_le_bytes());
        }
        let [a, b, c, d] = lanes;
        mix64(a ^ mix64(b ^ mix64(c ^ mix64(d))))
    }
}

#[cfg(any(test, feature = "sim"))]
fn pad8(chunk: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (slot, byte) in out.iter_mut().zip(chunk) {
        *slot = *byte;
    }
    out
}

#[cfg(any(test, feature = "sim"))]
impl FrameAuth for SimAuth {
    fn me(&self) -> PeerKey {
        self.me
    }

    fn sign(&mut self, parts: &[&[u8]]) -> [u8; 64] {
        Self::signature(&self.me, parts)
    }

    fn verify(
        &mut self,
        origin: &PeerKey,
        parts: &[&[u8]],
        signature: &[u8; 64],
    ) -> Result<(), AuthError> {
        if Self::signature(origin, parts) == *signature {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }

    fn seal(
        &mut self,
        _target: Option<&PeerKey>,
        _context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        Ok(plaintext.to_vec())
    }

    fn open(
        &mut self,
        _origin: &PeerKey,
        _direct: bool,
        _context: &[u8],
        sealed: &Bytes,
    ) -> Result<Bytes, AuthError> {
        Ok(sealed.clone())
    }
}
