//! Trystero's cryptography: the SDP cipher, the room token and the password challenge.
//!
//! Trystero encrypts only the SDP and ICE candidates it sends through relays: AES-256-GCM
//! with a 16-byte random IV under `SHA-256("password:app:room")` (an empty password when the
//! room has none, so an open room's SDP is sealed with a key anyone can derive). The wire
//! form is the IV's bytes as comma-separated decimals, `$`, then base64 of ciphertext and
//! tag. This is weaker than genos's native rooms (no salt, no key stretching, the data
//! channel is not encrypted beyond DTLS); it is reproduced exactly for compatibility.

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::TrysteroError;

/// AES-256-GCM with Trystero's 16-byte IVs.
type Cipher = AesGcm<Aes256, U16>;

/// Length of Trystero's IVs.
pub const IV_LEN: usize = 16;
/// Longest ciphertext text accepted for decryption (an SDP is a few KiB).
pub const MAX_CIPHERTEXT_LEN: usize = 64 * 1024;

/// The key a room's signaling is encrypted with.
#[derive(Clone)]
pub struct SdpKey {
    cipher: Cipher,
}

impl std::fmt::Debug for SdpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SdpKey(..)")
    }
}

impl SdpKey {
    /// The key of room `room` of `app` with `password` (empty for an open room).
    pub fn derive(password: &str, app: &str, room: &str) -> Self {
        let digest = Sha256::digest(format!("{password}:{app}:{room}").as_bytes());
        Self {
            cipher: Cipher::new(&digest),
        }
    }

    /// Encrypts `plaintext` with a fresh random IV.
    pub fn encrypt(&self, plaintext: &str) -> String {
        self.encrypt_with_iv(plaintext, rand::random())
    }

    /// Encrypts `plaintext` with `iv` (tests pin the IV to compare with Trystero).
    pub fn encrypt_with_iv(&self, plaintext: &str, iv: [u8; IV_LEN]) -> String {
        let nonce = Nonce::<U16>::from(iv);
        // Encryption into a Vec cannot fail for inputs this small.
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let iv_text: Vec<String> = iv.iter().map(u8::to_string).collect();
        format!("{}${}", iv_text.join(","), STANDARD.encode(sealed))
    }

    /// Decrypts Trystero's `IV$base64` text.
    pub fn decrypt(&self, text: &str) -> Result<String, TrysteroError> {
        if text.len() > MAX_CIPHERTEXT_LEN {
            return Err(TrysteroError::TooLarge {
                size: text.len(),
                limit: MAX_CIPHERTEXT_LEN,
            });
        }
        let (iv_text, body) = text
            .split_once('$')
            .ok_or(TrysteroError::MalformedCiphertext("no '$' after the IV"))?;
        let mut iv = [0u8; IV_LEN];
        let mut parts = iv_text.split(',');
        for slot in &mut iv {
            *slot = parts
                .next()
                .and_then(|part| part.parse().ok())
                .ok_or(TrysteroError::MalformedCiphertext("IV is not 16 bytes"))?;
        }
        if parts.next().is_some() {
            return Err(TrysteroError::MalformedCiphertext("IV is not 16 bytes"));
        }
        let sealed = STANDARD
            .decode(body)
            .map_err(|_| TrysteroError::MalformedCiphertext("not base64"))?;
        let plain = self
            .cipher
            .decrypt(&Nonce::<U16>::from(iv), sealed.as_slice())
            .map_err(|_| TrysteroError::WrongPassword)?;
        String::from_utf8(plain).map_err(|_| TrysteroError::MalformedCiphertext("not UTF-8"))
    }
}

/// The room token: hex SHA-256 of `Trystero:app:room`, the prefix of every data frame of
/// the room (one connection can carry several rooms of an app).
pub fn room_token(app: &str, room: &str) -> String {
    hex::encode(Sha256::digest(format!("Trystero:{app}:{room}").as_bytes()))
}

/// The answer to a password challenge: hex SHA-256 of `challenge:password:app:room`.
pub fn challenge_response(challenge: &str, password: &str, app: &str, room: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{challenge}:{password}:{app}:{room}").as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn counting_iv() -> [u8; IV_LEN] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn encryption_matches_trysteros() {
        // From ../shared/reference/FACTS.md: app my-app, room lobby, no password.
        let key = SdpKey::derive("", "my-app", "lobby");
        assert_eq!(
            key.encrypt_with_iv("hello", counting_iv()),
            "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15$Z2n8N6F2zAQ4H97PCosgGmqIoSnE"
        );
    }

    #[test]
    fn round_trip_and_wrong_password() {
        let key = SdpKey::derive("secret", "app", "room");
        let text = key.encrypt("v=0\r\n");
        assert_eq!(key.decrypt(&text).unwrap(), "v=0\r\n");
        let other = SdpKey::derive("guess", "app", "room");
        assert_eq!(other.decrypt(&text), Err(TrysteroError::WrongPassword));
    }

    #[test]
    fn malformed_text_is_refused_by_kind() {
        let key = SdpKey::derive("", "a", "b");
        for text in [
            "",
            "1,2$AAAA",
            "x$AAAA",
            "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16$AA",
        ] {
            assert!(matches!(
                key.decrypt(text),
                Err(TrysteroError::MalformedCiphertext(_))
            ));
        }
        let long = "0".repeat(MAX_CIPHERTEXT_LEN + 1);
        assert!(matches!(
            key.decrypt(&long),
            Err(TrysteroError::TooLarge { .. })
        ));
    }
}
