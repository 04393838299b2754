//! Sealed envelopes: XChaCha20-Poly1305 with a versioned header and context-bound AAD.
//!
//! Wire form: `version (1) | purpose (1) | nonce (24) | ciphertext | tag (16)`.
//! Associated data: `"genos/v1/seal" (zero-padded to 16) | version | purpose | extra length |
//! 13 zero bytes | sender peer id (32)`, then the extra context zero-padded to 64 bytes when
//! there is any, so a message opens only under the same key, version, purpose, sender and
//! extra context.

use std::fmt;

use rand::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::PeerId;

/// The envelope format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the ciphertext: version, purpose, nonce.
pub const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Bytes of the authentication tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Total bytes a seal adds to a plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest plaintext one envelope carries (1 MiB). Larger payloads are chunked by the caller;
/// [`SealKey::seal`] refuses them with [`EnvelopeError::TooLarge`].
pub const MAX_PLAINTEXT_LEN: usize = 1 << 20;

const NONCE_LEN: usize = 24;
/// 16 bytes: the label fills the first quarter of the AAD block.
const AAD_LABEL: &[u8; 16] = b"genos/v1/seal\0\0\0";
/// Longest `extra` context accepted, to keep the AAD buffer on the stack.
const MAX_EXTRA_LEN: usize = 64;

/// What a sealed message is for. Part of the header and of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Purpose {
    /// Signaling messages (presence, offers, answers, candidates).
    Signaling = 1,
    /// Application data frames on channels.
    Data = 2,
    /// Frames forwarded through the cellular mesh.
    Mesh = 3,
}

impl Purpose {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Signaling),
            2 => Some(Self::Data),
            3 => Some(Self::Mesh),
            _ => None,
        }
    }
}

/// The context a message is sealed in; opening needs the same context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    purpose: Purpose,
    sender: PeerId,
    extra: &'a [u8],
}

impl Context<'static> {
    /// A context for `purpose`, sent by `sender`.
    pub fn new(purpose: Purpose, sender: PeerId) -> Self {
        Self {
            purpose,
            sender,
            extra: &[],
        }
    }
}

impl<'a> Context<'a> {
    /// Adds caller-defined context (a channel name, a recipient, a frame kind), at most 64
    /// bytes; longer context is refused at seal and open with [`EnvelopeError::ContextTooLong`].
    pub fn with_extra(self, extra: &'a [u8]) -> Context<'a> {
        Context {
            purpose: self.purpose,
            sender: self.sender,
            extra,
        }
    }

    /// The purpose.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The sender.
    pub fn sender(&self) -> PeerId {
        self.sender
    }

    /// Writes the associated data into `out` and returns it: one 64-byte block
    /// `label (16) | version | purpose | extra length | zeros (13) | sender (32)`, then, when
    /// there is extra context, a second block holding it zero-padded. Whole 64-byte blocks
    /// matter for speed: the Poly1305 AVX2 backend runs 10-25% slower over the ciphertext
    /// when the AAD before it is not a multiple of 64 bytes (measured; docs/benchmarks.md).
    fn aad<'b>(&self, out: &'b mut [u8; AAD_MAX]) -> Result<&'b [u8], EnvelopeError> {
        let extra_len = self.extra.len();
        let too_long = EnvelopeError::ContextTooLong {
            len: extra_len,
            limit: MAX_EXTRA_LEN,
        };
        if extra_len > MAX_EXTRA_LEN {
            return Err(too_long);
        }
        {
            let (first, second) = out.split_at_mut(AAD_BLOCK);
            let (label, rest) = first.split_at_mut(AAD_LABEL.len());
            label.copy_from_slice(AAD_LABEL);
            let (fields, sender) = rest.split_at_mut(AAD_BLOCK - AAD_LABEL.len() - PeerId::LEN);
            fields.fill(0);
            if let [version, purpose, len, ..] = fields {
                *version = VERSION;
                *purpose = self.purpose as u8;
                *len = extra_len as u8;
            }
            sender.copy_from_slice(self.sender.as_bytes());
            second.fill(0);
            second
                .get_mut(..extra_len)
                .ok_or(too_long)?
                .copy_from_slice(self.extra);
        }
        let len = if extra_len == 0 { AAD_BLOCK } else { AAD_MAX };
        Ok(out.get(..len).unwrap_or_default())
    }
}

const AAD_BLOCK: usize = 64;
const AAD_MAX: usize = 2 * AAD_BLOCK;

/// Why an envelope could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Wrong key, wrong context (sender, extra), or the bytes were tampered with. These are
    /// deliberately indistinguishable.
    #[error("envelope does not open: wrong key or context, or tampered")]
    Unauthentic,
    /// Shorter than a header and a tag.
    #[error("envelope truncated: {len} bytes, at least {min} needed")]
    Truncated {
        /// Length received.
        len: usize,
        /// Minimum length of any envelope.
        min: usize,
    },
    /// Written by a version of the format this crate does not read.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// Sealed for another purpose than the one expected.
    #[error("envelope purpose byte {found} does not match the expected {expected:?}")]
    PurposeMismatch {
        /// The purpose the caller expected.
        expected: Purpose,
        /// The purpose byte found in the header.
        found: u8,
    },
    /// The plaintext (or the ciphertext's plaintext) exceeds [`MAX_PLAINTEXT_LEN`].
    #[error("envelope payload of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The caller's extra context is longer than allowed.
    #[error("envelope context of {len} bytes exceeds the limit of {limit}")]
    ContextTooLong {
        /// Length given.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An in-place buffer does not start with the reserved header space.
    #[error("in-place buffer of {len} bytes has no room for the {HEADER_LEN}-byte header")]
    NoHeaderRoom {
        /// Buffer length.
        len: usize,
    },
}

/// A 256-bit key for sealing envelopes. Zeroized on drop; `Debug` hides it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SealKey {
    bytes: [u8; 32],
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    /// Wraps raw key bytes (from a key derivation; never a password).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// The ChaCha20-Poly1305 key and nonce of one XChaCha20-Poly1305 message: HChaCha20 of
    /// the key and the first 16 nonce bytes gives the subkey; the last 8 nonce bytes, after
    /// four zero bytes, are the nonce (draft-irtf-cfrg-xchacha). The AEAD itself is ring's
    /// (assembly, 1.7x the portable implementation here), the subkey RustCrypto's HChaCha20.
    fn cipher(&self, nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce), EnvelopeError> {
        let (head, tail) = nonce.split_at(16);
        let mut input = [0u8; 16];
        input.copy_from_slice(head);
        let mut subkey = chacha20::hchacha::<chacha20::R20>(&self.bytes.into(), &input.into());
        let mut short = [0u8; 12];
        if let Some(last) = short.get_mut(4..) {
            last.copy_from_slice(tail);
        }
        // A 32-byte key is always valid for ChaCha20-Poly1305; should ring ever disagree,
        // nothing is sealed or opened.
        let key = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice())
            .map(LessSafeKey::new)
            .map_err(|_| EnvelopeError::Unauthentic);
        subkey.as_mut_slice().zeroize();
        Ok((key?, Nonce::assume_unique_for_key(short)))
    }

    /// A buffer for [`SealKey::seal_in_place`]: `HEADER_LEN` reserved bytes, room for
    /// `plaintext_capacity` bytes of plaintext and the tag. Write the plaintext after the
    /// reserved bytes.
    pub fn buffer(plaintext_capacity: usize) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(HEADER_LEN + plaintext_capacity + TAG_LEN);
        buffer.resize(HEADER_LEN, 0);
        buffer
    }

    /// Seals `plaintext` into a new envelope.
    pub fn seal(&self, context: &Context<'_>, plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        check_len(plaintext.len())?;
        let mut buffer = Self::buffer(plaintext.len());
        buffer.extend_from_slice(plaintext);
        self.seal_in_place(context, &mut buffer)?;
        Ok(buffer)
    }

    /// Seals in place: `buffer` holds `HEADER_LEN` reserved bytes followed by the plaintext
    /// (see [`SealKey::buffer`]). On return it holds the whole envelope. The plaintext is
    /// encrypted where it lies; only the tag is appended.
    pub fn seal_in_place(
        &self,
        context: &Context<'_>,
        buffer: &mut Vec<u8>,
    ) -> Result<(), EnvelopeError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        self.seal_in_place_with_nonce(context, buffer, nonce)
    }

    /// Seals with a caller-chosen nonce: only for known-answer test vectors, never in use.
    pub(crate) fn seal_in_place_with_nonce(
        &self,
        context: &Context<'_>,
        buffer: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<(), EnvelopeError> {
        let len = buffer.len();
        let (header, body) = buffer
            .split_at_mut_checked(HEADER_LEN)
            .ok_or(EnvelopeError::NoHeaderRoom { len })?;
        check_len(body.len())?;
        let mut aad = [0u8; AAD_MAX];
        let aad = context.aad(&mut aad)?;
        let header: &mut [u8; HEADER_LEN] = header
            .try_into()
            .map_err(|_| EnvelopeError::NoHeaderRoom { len })?;
        let [version, purpose, nonce_field @ ..] = header;
        *version = VERSION;
        *purpose = context.purpose as u8;
        *nonce_field = nonce;
        let (key, nonce) = self.cipher(&nonce)?;
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), body)
            // Only fails for plaintexts beyond 256 GiB; check_len bounds far below.
            .map_err(|_| EnvelopeError::TooLarge {
                len: body.len(),
                limit: MAX_PLAINTEXT_LEN,
            })?;
        buffer.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens an envelope into a new plaintext vector.
    pub fn open(&self, context: &Context<'_>, envelope: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let mut buffer = envelope.to_vec();
        let range = self.open_in_place(context, &mut buffer)?;
        buffer.truncate(range.end);
        buffer.drain(..range.start);
        Ok(buffer)
    }

    /// Opens in place: decrypts where the ciphertext lies and returns the range of `buffer`
    /// that holds the plaintext. On error the buffer's content is unspecified.
    pub fn open_in_place(
        &self,
        context: &Context<'_>,
        buffer: &mut [u8],
    ) -> Result<std::ops::Range<usize>, EnvelopeError> {
        let len = buffer.len();
        if len < OVERHEAD {
            return Err(EnvelopeError::Truncated { len, min: OVERHEAD });
        }
        check_len(len - OVERHEAD)?;
        let (header, rest) = buffer.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(len - OVERHEAD);
        let header: &[u8; HEADER_LEN] = (&*header)
            .try_into()
            .map_err(|_| EnvelopeError::Truncated { len, min: OVERHEAD })?;
        let [version, purpose, nonce @ ..] = *header;
        if version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        if Purpose::from_byte(purpose) != Some(context.purpose) {
            return Err(EnvelopeError::PurposeMismatch {
                expected: context.purpose,
                found: purpose,
            });
        }
        let tag = Tag::try_from(&tag[..]).map_err(|_| EnvelopeError::Unauthentic)?;
        let mut aad = [0u8; AAD_MAX];
        let aad = context.aad(&mut aad)?;
        let (key, nonce) = self.cipher(&nonce)?;
        key.open_in_place_separate_tag(nonce, Aad::from(aad), tag, body, 0..)
            .map_err(|_| EnvelopeError::Unauthentic)?;
        Ok(HEADER_LEN..len - TAG_LEN)
    }
}

fn check_len(len: usize) -> Result<(), EnvelopeError> {
    if len > MAX_PLAINTEXT_LEN {
        return Err(EnvelopeError::TooLarge {
            len,
            limit: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
