//! Peer identities: secp256k1 keypairs, BIP-340 Schnorr signatures, key files.

use std::fmt;
use std::io::Write;
use std::path::Path;

use rand::RngCore;
use secp256k1::{Keypair, Secp256k1, SecretKey, XOnlyPublicKey, schnorr};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{PeerId, SealKey};

/// Domain separation for what genos signs, so a genos signature is never a valid signature
/// over a Nostr event id or anything else.
const SIGNING_DOMAIN: &[u8] = b"genos/v1/sign";
/// Key files are 64 hex characters and a newline; anything much larger is not a key file.
const MAX_KEY_FILE_LEN: u64 = 256;

/// A detached BIP-340 Schnorr signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Length in bytes.
    pub const LEN: usize = 64;

    /// Wraps raw signature bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// Reads a signature from exactly 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SignatureError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| SignatureError::Malformed)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The peer id is not a valid public key (not a point on the curve).
    #[error("peer id is not a valid secp256k1 public key")]
    InvalidPeerId,
    /// The bytes are not a signature.
    #[error("malformed signature")]
    Malformed,
    /// The signature is not by this peer over this message.
    #[error("signature does not match the peer and message")]
    Mismatch,
}

/// Why an identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a valid secret key.
    #[error("key file {path} does not hold a secp256k1 secret key (64 hex characters)")]
    InvalidKeyFile {
        /// The file.
        path: String,
    },
    /// The bytes are not a valid secret key.
    #[error("not a valid secp256k1 secret key")]
    InvalidSecretKey,
}

/// A peer's signing identity. The secret is erased on drop and `Debug` shows only the id.
pub struct Identity {
    keypair: Keypair,
    peer_id: PeerId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.keypair.non_secure_erase();
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            keypair: self.keypair,
            peer_id: self.peer_id,
        }
    }
}

fn secp() -> &'static Secp256k1<secp256k1::All> {
    static CONTEXT: std::sync::OnceLock<Secp256k1<secp256k1::All>> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(Secp256k1::new)
}

fn digest(message: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(SIGNING_DOMAIN);
    hasher.update(message);
    hasher.finalize().into()
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(bytes.as_mut());
            // Fails only for zero or a value above the curve order: about 2^-128 odds.
            if let Ok(identity) = Self::from_secret_bytes(&bytes) {
                return identity;
            }
        }
    }

    /// An identity from 32 secret-key bytes (a Nostr secret key fits).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Self, IdentityError> {
        let mut secret =
            SecretKey::from_byte_array(bytes).map_err(|_| IdentityError::InvalidSecretKey)?;
        let keypair = Keypair::from_secret_key(secp(), &secret);
        secret.non_secure_erase();
        let (public, _) = keypair.x_only_public_key();
        Ok(Self {
            keypair,
            peer_id: PeerId::from_bytes(public.serialize()),
        })
    }

    /// The secret-key bytes, for handing to a Nostr client. Keep them secret.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.keypair.secret_bytes())
    }

    /// This identity's peer id (its x-only public key).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `message` (domain-separated SHA-256, then BIP-340). Deterministic: the same
    /// identity and message give the same signature.
    pub fn sign(&self, message: &[u8]) -> Signature {
        let signature = secp().sign_schnorr_no_aux_rand(&digest(message), &self.keypair);
        Signature(signature.to_byte_array())
    }

    /// Loads an identity from a key file written by [`Identity::save`].
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io {
            path: shown.clone(),
            source,
        };
        let invalid = || IdentityError::InvalidKeyFile {
            path: shown.clone(),
        };
        let metadata = std::fs::metadata(path).map_err(io)?;
        if metadata.len() > MAX_KEY_FILE_LEN {
            return Err(invalid());
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), bytes.as_mut()).map_err(|_| invalid())?;
        Self::from_secret_bytes(&bytes).map_err(|_| invalid())
    }

    /// Saves the secret key to a new file readable and writable by its owner only (0600 on
    /// Unix). Refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let mut text = Zeroizing::new(hex::encode(self.secret_bytes().as_ref()));
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads the identity at `path`, or creates and saves a new one if there is no file.
    pub fn load_or_generate(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let identity = Self::generate();
                identity.save(path)?;
                Ok(identity)
            }
            other => other,
        }
    }
}

impl Identity {
    /// A symmetric key only this identity and `peer` can compute (ECDH on secp256k1, the
    /// shared point's x coordinate through HKDF-SHA256 with `context`), for payloads that must
    /// pass through other peers unread, such as directed frames forwarded by a mesh.
    ///
    /// ```
    /// use genos_crypto::Identity;
    ///
    /// let alice = Identity::generate();
    /// let bob = Identity::generate();
    /// let a = alice.pair_key(&bob.peer_id(), b"example").unwrap();
    /// let b = bob.pair_key(&alice.peer_id(), b"example").unwrap();
    /// let sealed = a.seal(&genos_crypto::Context::new(genos_crypto::Purpose::Data, alice.peer_id()), b"hi").unwrap();
    /// assert!(b.open(&genos_crypto::Context::new(genos_crypto::Purpose::Data, alice.peer_id()), &sealed).is_ok());
    /// ```
    pub fn pair_key(&self, peer: &PeerId, context: &[u8]) -> Result<SealKey, SignatureError> {
        let x_only = XOnlyPublicKey::from_byte_array(peer.as_bytes())
            .map_err(|_| SignatureError::InvalidPeerId)?;
        // Peer ids are x-only keys: the sign of either point is unknown, so only the shared
        // point's x coordinate is the same on both sides.
        let point = secp256k1::PublicKey::from_x_only_public_key(x_only, secp256k1::Parity::Even);
        let shared = Zeroizing::new(secp256k1::ecdh::shared_secret_point(
            &point,
            &self.keypair.secret_key(),
        ));
        let x = shared.get(..32).ok_or(SignatureError::InvalidPeerId)?;
        let (low, high) = if self.peer_id.as_bytes() <= peer.as_bytes() {
            (self.peer_id.as_bytes(), peer.as_bytes())
        } else {
            (peer.as_bytes(), self.peer_id.as_bytes())
        };
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"genos/v1/pair"), x);
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf.expand_multi_info(&[low.as_slice(), high.as_slice(), context], key.as_mut())
            .map_err(|_| SignatureError::InvalidPeerId)?;
        Ok(SealKey::from_bytes(*key))
    }
}

impl PeerId {
    /// Checks that `signature` was made by this peer over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let public = XOnlyPublicKey::from_byte_array(self.as_bytes())
            .map_err(|_| SignatureError::InvalidPeerId)?;
        let signature = schnorr::Signature::from_byte_array(signature.0);
        secp()
            .verify_schnorr(&signature, &digest(message), &public)
            .map_err(|_| SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_keys_agree_only_between_the_pair() {
        for _ in 0..8 {
            let alice = Identity::generate();
            let bob = Identity::generate();
            let eve = Identity::generate();
            let context = crate::Context::new(crate::Purpose::Data, alice.peer_id());
            let sealed = alice
                .pair_key(&bob.peer_id(), b"t")
                .unwrap()
                .seal(&context, b"secret")
                .unwrap();
            let opened = bob
                .pair_key(&alice.peer_id(), b"t")
                .unwrap()
                .open(&context, &sealed)
                .unwrap();
            assert_eq!(opened, b"secret");
            let eve_key = eve.pair_key(&alice.peer_id(), b"t").unwrap();
            assert!(eve_key.open(&context, &sealed).is_err());
            let other_context = bob.pair_key(&alice.peer_id(), b"u").unwrap();
            assert!(other_context.open(&context, &sealed).is_err());
        }
    }

    #[test]
    fn peer_id_is_the_bip340_public_key() {
        // BIP-340 test vector 0: secret key 3.
        let mut secret = [0u8; 32];
        secret[31] = 3;
        let identity = Identity::from_secret_bytes(&secret).unwrap();
        assert_eq!(
            identity.peer_id().to_string(),
            "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
        );
    }

    #[test]
    fn sign_and_verify() {
        let alice = Identity::generate();
        let signature = alice.sign(b"frame");
        assert_eq!(alice.peer_id().verify(b"frame", &signature), Ok(()));
        assert_eq!(
            alice.peer_id().verify(b"framE", &signature),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn another_key_is_rejected() {
        let alice = Identity::generate();
        let mallory = Identity::generate();
        let forged = mallory.sign(b"frame");
        assert_eq!(
            alice.peer_id().verify(b"frame", &forged),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn invalid_peer_id_is_typed() {
        // x = 0 is not on the curve.
        let nobody = PeerId::from_bytes([0; 32]);
        let signature = Identity::generate().sign(b"x");
        assert_eq!(
            nobody.verify(b"x", &signature),
            Err(SignatureError::InvalidPeerId)
        );
        assert_eq!(
            Signature::from_slice(&[1; 63]),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let identity = Identity::from_secret_bytes(&[0x11; 32]).unwrap();
        let shown = format!("{identity:?}");
        assert!(!shown.contains("1111111111"), "{shown}");
        assert!(shown.contains("peer_id"));
    }

    #[test]
    fn zero_secret_is_refused() {
        assert!(matches!(
            Identity::from_secret_bytes(&[0; 32]),
            Err(IdentityError::InvalidSecretKey)
        ));
    }

    #[test]
    fn key_file_round_trip_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.key");
        let identity = Identity::load_or_generate(&path).unwrap();
        let again = Identity::load_or_generate(&path).unwrap();
        assert_eq!(identity.peer_id(), again.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            identity.save(&path),
            Err(IdentityError::Io { .. })
        ));
    }

    #[test]
    fn bad_key_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "not hex at all").unwrap();
        assert!(matches!(
            Identity::load(&garbage),
            Err(IdentityError::InvalidKeyFile { .. })
        ));
        let huge = dir.path().join("huge.key");
        std::fs::write(&huge, vec![b'a'; 10_000]).unwrap();
        assert!(matches!(
            Identity::load(&huge),
            Err(IdentityError::InvalidKeyFile { .. })
        ));
        assert!(matches!(
            Identity::load(&dir.path().join("missing.key")),
            Err(IdentityError::Io { .. })
        ));
    }
}
