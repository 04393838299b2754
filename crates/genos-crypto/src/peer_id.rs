//! The peer identifier shared by every layer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A peer's identity: the 32 bytes of its public key (x-only secp256k1, as in Nostr).
///
/// Displayed and parsed as 64 lowercase hex characters. `Debug` shows a short prefix, which is
/// enough to tell peers apart in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId([u8; 32]);

impl PeerId {
    /// Length of a peer id in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw public-key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a peer id from a slice of exactly [`PeerId::LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParsePeerIdError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ParsePeerIdError::WrongLength(bytes.len()))?;
        Ok(Self(array))
    }

    /// The first 8 hex characters, for logs and human-facing lists.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({}…)", self.short())
    }
}

/// Why a string or slice is not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParsePeerIdError {
    /// The input did not hold exactly 32 bytes (64 hex characters).
    #[error("a peer id is 32 bytes, got {0}")]
    WrongLength(usize),
    /// The input held a character that is not hex.
    #[error("a peer id is hex, got a non-hex character")]
    NotHex,
}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParsePeerIdError::WrongLength(s.len() / 2));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParsePeerIdError::NotHex)?;
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = PeerId::from_bytes([0xab; 32]);
        assert_eq!(id.to_string().len(), 64);
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(
            "abc".parse::<PeerId>(),
            Err(ParsePeerIdError::WrongLength(1))
        );
        let not_hex = "zz".repeat(32);
        assert_eq!(not_hex.parse::<PeerId>(), Err(ParsePeerIdError::NotHex));
        assert_eq!(
            PeerId::from_slice(&[1, 2, 3]),
            Err(ParsePeerIdError::WrongLength(3))
        );
    }

    #[test]
    fn debug_is_short() {
        let id = PeerId::from_bytes([0x01; 32]);
        assert_eq!(format!("{id:?}"), "PeerId(01010101…)");
    }
}
