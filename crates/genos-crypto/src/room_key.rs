//! Room keys: Argon2id (salted by app and room) to a master secret, HKDF-SHA256 subkeys.

use std::fmt;
use std::future::Future;

use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{PeerId, SealKey};

const SALT_LABEL: &[u8] = b"genos/v1/room-salt";
const NO_PASSWORD_LABEL: &[u8] = b"genos/v1/no-password";
const TOPIC_INFO: &[u8] = b"genos/v1/topic";
const PEER_TOPIC_INFO: &[u8] = b"genos/v1/peer-topic";
const SUB_TOPIC_INFO: &[u8] = b"genos/v1/sub-topic/";
/// Longest label [`RoomKey::sub_topic`] takes; longer labels are cut to it.
pub const MAX_SUB_TOPIC_LABEL: usize = 64;
const SIGNAL_SEAL_INFO: &[u8] = b"genos/v1/signal-seal";
const DATA_SEAL_INFO: &[u8] = b"genos/v1/data-seal";

/// Longest app id or room id accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Argon2id cost parameters. Defaults follow OWASP's minimum for Argon2id (19 MiB, two
/// passes, one lane): about 30 ms per derivation on the machines we measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyParams {
    /// Memory in KiB. Default 19,456 (19 MiB). At least 8 × `parallelism`.
    pub memory_kib: u32,
    /// Passes over memory. Default 2.
    pub iterations: u32,
    /// Lanes. Default 1.
    pub parallelism: u32,
}

impl Default for KeyParams {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl KeyParams {
    /// Parameters with the given costs; checked when used.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        Self {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    fn argon2(&self) -> Result<Argon2<'static>, KeyError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| KeyError::InvalidParams(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Why a room key could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The Argon2id parameters are out of range.
    #[error("invalid key-derivation parameters: {0}")]
    InvalidParams(String),
    /// An app id or room id is empty or longer than [`MAX_NAME_LEN`].
    #[error("{what} must be 1 to {MAX_NAME_LEN} bytes, got {len}")]
    InvalidName {
        /// "app id" or "room id".
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A password was given but is empty, or longer than [`MAX_PASSWORD_LEN`]. (No password
    /// at all is `None`, not an empty one.)
    #[error("password must be 1 to {MAX_PASSWORD_LEN} bytes, got {0}")]
    InvalidPassword(usize),
    /// The background derivation could not run.
    #[error("key derivation worker failed: {0}")]
    Worker(String),
}

/// The keys of one room, derived once per join. Zeroized on drop; `Debug` hides secrets.
#[derive(Clone)]
pub struct RoomKey {
    prk: Zeroizing<[u8; 32]>,
    topic: [u8; 32],
    signal: SealKey,
    data: SealKey,
    encrypted: bool,
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomKey")
            .field("topic", &hex::encode(&self.topic[..4]))
            .field("encrypted", &self.encrypted)
            .finish_non_exhaustive()
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(KeyError::InvalidName {
            what,
            len: name.len(),
        });
    }
    Ok(())
}

/// The Argon2 salt: a labelled, length-prefixed hash of app id and room id, so
/// ("ab", "c") and ("a", "bc") never share a salt.
fn room_salt(app_id: &str, room_id: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(SALT_LABEL);
    for part in [app_id, room_id] {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

impl RoomKey {
    /// Derives the room's keys. Blocking: with a password this runs Argon2id (tens of ms).
    /// In async code use [`RoomKey::derive_async`].
    pub fn derive(
        app_id: &str,
        room_id: &str,
        password: Option<&[u8]>,
        params: &KeyParams,
    ) -> Result<Self, KeyError> {
        check_name("app id", app_id)?;
        check_name("room id", room_id)?;
        let salt = room_salt(app_id, room_id);
        let mut master = Zeroizing::new([0u8; 32]);
        match password {
            Some(password) => {
                if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
                    return Err(KeyError::InvalidPassword(password.len()));
                }
                params
                    .argon2()?
                    .hash_password_into(password, &salt, master.as_mut())
                    .map_err(|e| KeyError::InvalidParams(e.to_string()))?;
            }
            None => {
                // Same structure, no secret: anyone who knows app and room can derive it.
                let (prk, _) = Hkdf::<Sha256>::extract(Some(NO_PASSWORD_LABEL), &salt);
                master.copy_from_slice(&prk);
            }
        }
        Self::from_master(&master, password.is_some())
    }

    /// Like [`RoomKey::derive`], on a background thread so an async runtime is not blocked.
    pub fn derive_async(
        app_id: &str,
        room_id: &str,
        password: Option<&[u8]>,
        params: &KeyParams,
    ) -> impl Future<Output = Result<Self, KeyError>> + Send + 'static {
        let (app_id, room_id, params) = (app_id.to_owned(), room_id.to_owned(), *params);
        let password = password.map(|p| Zeroizing::new(p.to_vec()));
        let (sender, receiver) = futures::channel::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("genos-kdf".into())
            .spawn(move || {
                let key = Self::derive(
                    &app_id,
                    &room_id,
                    password.as_deref().map(Vec::as_slice),
                    &params,
                );
                let _ = sender.send(key);
            });
        async move {
            spawned.map_err(|e| KeyError::Worker(e.to_string()))?;
            receiver
                .await
                .map_err(|_| KeyError::Worker("the worker stopped without an answer".into()))?
        }
    }

    fn from_master(master: &[u8; 32], encrypted: bool) -> Result<Self, KeyError> {
        let hkdf = Hkdf::<Sha256>::from_prk(master)
            .map_err(|_| KeyError::Worker("master secret has the wrong length".into()))?;
        let expand = |info: &[u8]| -> Result<Zeroizing<[u8; 32]>, KeyError> {
            let mut out = Zeroizing::new([0u8; 32]);
            hkdf.expand(info, out.as_mut())
                .map_err(|_| KeyError::Worker("HKDF output length".into()))?;
            Ok(out)
        };
        let topic = *expand(TOPIC_INFO)?;
        let signal = SealKey::from_bytes(*expand(SIGNAL_SEAL_INFO)?);
        let data = SealKey::from_bytes(*expand(DATA_SEAL_INFO)?);
        Ok(Self {
            prk: Zeroizing::new(*master),
            topic,
            signal,
            data,
            encrypted,
        })
    }

    /// The room's rendezvous topic. Reveals nothing of app, room or password (it is an HKDF
    /// output), but anyone who can derive the key can compute it.
    pub fn topic(&self) -> [u8; 32] {
        self.topic
    }

    /// The topic on which `peer` receives messages addressed to it in this room.
    pub fn peer_topic(&self, peer: &PeerId) -> [u8; 32] {
        let mut info = [0u8; PEER_TOPIC_INFO.len() + PeerId::LEN];
        let (label, id) = info.split_at_mut(PEER_TOPIC_INFO.len());
        label.copy_from_slice(PEER_TOPIC_INFO);
        id.copy_from_slice(peer.as_bytes());
        let mut out = [0u8; 32];
        if let Ok(hkdf) = Hkdf::<Sha256>::from_prk(self.prk.as_ref()) {
            // 32 bytes is always a valid HKDF-SHA256 output length.
            let _ = hkdf.expand(&info, &mut out);
        }
        out
    }

    /// A topic of its own for one part of the room, named by `label` (at most
    /// [`MAX_SUB_TOPIC_LABEL`] bytes are used): large rooms split discovery over such topics
    /// (the cellular mesh's lobby and cells) so a peer hears its part, not the whole room.
    /// Like [`RoomKey::topic`], it reveals nothing of the room to whoever cannot derive the
    /// key.
    ///
    /// ```
    /// use genos_crypto::{KeyParams, RoomKey};
    ///
    /// let key = RoomKey::derive("app", "room", None, &KeyParams::default())?;
    /// assert_ne!(key.sub_topic(b"lobby"), key.topic());
    /// assert_ne!(key.sub_topic(b"lobby"), key.sub_topic(b"cell/4/1"));
    /// assert_eq!(key.sub_topic(b"lobby"), key.sub_topic(b"lobby"));
    /// # Ok::<(), genos_crypto::KeyError>(())
    /// ```
    pub fn sub_topic(&self, label: &[u8]) -> [u8; 32] {
        let label = label.get(..MAX_SUB_TOPIC_LABEL).unwrap_or(label);
        let mut info = [0u8; SUB_TOPIC_INFO.len() + MAX_SUB_TOPIC_LABEL];
        let len = SUB_TOPIC_INFO.len() + label.len();
        let (prefix, rest) = info.split_at_mut(SUB_TOPIC_INFO.len());
        prefix.copy_from_slice(SUB_TOPIC_INFO);
        if let Some(dest) = rest.get_mut(..label.len()) {
            dest.copy_from_slice(label);
        }
        let mut out = [0u8; 32];
        if let Ok(hkdf) = Hkdf::<Sha256>::from_prk(self.prk.as_ref()) {
            // 32 bytes is always a valid HKDF-SHA256 output length.
            let _ = hkdf.expand(info.get(..len).unwrap_or(&info), &mut out);
        }
        out
    }

    /// The key that seals signaling messages.
    pub fn signal_key(&self) -> &SealKey {
        &self.signal
    }

    /// The key that seals data frames.
    pub fn data_key(&self) -> &SealKey {
        &self.data
    }

    /// Whether the key came from a password (secret) or from app and room alone
    /// (obfuscation only).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, EnvelopeError, Purpose};

    fn cheap() -> KeyParams {
        KeyParams::new(64, 1, 1)
    }

    #[test]
    fn same_inputs_same_keys() {
        let a = RoomKey::derive("app", "room", Some(b"pw"), &cheap()).unwrap();
        let b = RoomKey::derive("app", "room", Some(b"pw"), &cheap()).unwrap();
        assert_eq!(a.topic(), b.topic());
        assert!(a.is_encrypted());
    }

    #[test]
    fn wrong_password_cannot_open() {
        let right = RoomKey::derive("app", "room", Some(b"right"), &cheap()).unwrap();
        let wrong = RoomKey::derive("app", "room", Some(b"wrong"), &cheap()).unwrap();
        assert_ne!(right.topic(), wrong.topic());
        let context = Context::new(Purpose::Data, PeerId::from_bytes([1; 32]));
        let sealed = right.data_key().seal(&context, b"secret").unwrap();
        assert_eq!(
            wrong.data_key().open(&context, &sealed),
            Err(EnvelopeError::Unauthentic)
        );
    }

    #[test]
    fn names_are_length_prefixed_in_the_salt() {
        assert_ne!(room_salt("ab", "c"), room_salt("a", "bc"));
        let a = RoomKey::derive("ab", "c", None, &cheap()).unwrap();
        let b = RoomKey::derive("a", "bc", None, &cheap()).unwrap();
        assert_ne!(a.topic(), b.topic());
        assert!(!a.is_encrypted());
    }

    #[test]
    fn subkeys_differ_by_purpose() {
        let key = RoomKey::derive("app", "room", None, &cheap()).unwrap();
        let context = Context::new(Purpose::Data, PeerId::from_bytes([1; 32]));
        let sealed = key.data_key().seal(&context, b"x").unwrap();
        assert_eq!(
            key.signal_key().open(&context, &sealed),
            Err(EnvelopeError::Unauthentic)
        );
        let peer = PeerId::from_bytes([2; 32]);
        assert_ne!(key.peer_topic(&peer), key.topic());
        assert_ne!(
            key.peer_topic(&peer),
            key.peer_topic(&PeerId::from_bytes([3; 32]))
        );
    }

    #[test]
    fn bad_inputs_are_typed() {
        assert!(matches!(
            RoomKey::derive("", "room", None, &cheap()),
            Err(KeyError::InvalidName { what: "app id", .. })
        ));
        let long = "r".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            RoomKey::derive("app", &long, None, &cheap()),
            Err(KeyError::InvalidName {
                what: "room id",
                ..
            })
        ));
        assert_eq!(
            RoomKey::derive("app", "room", Some(b""), &cheap()).err(),
            Some(KeyError::InvalidPassword(0))
        );
        assert!(matches!(
            RoomKey::derive("app", "room", Some(b"pw"), &KeyParams::new(1, 0, 1)),
            Err(KeyError::InvalidParams(_))
        ));
    }

    #[test]
    fn debug_hides_secrets() {
        let key = RoomKey::derive("app", "room", Some(b"pw"), &cheap()).unwrap();
        let shown = format!("{key:?}");
        assert!(
            shown.contains("RoomKey") && !shown.contains("prk"),
            "{shown}"
        );
        assert_eq!(format!("{:?}", key.data_key()), "SealKey(<redacted>)");
    }

    #[tokio::test]
    async fn async_derivation_matches_blocking() {
        let blocking = RoomKey::derive("app", "room", Some(b"pw"), &cheap()).unwrap();
        let background = RoomKey::derive_async("app", "room", Some(b"pw"), &cheap())
            .await
            .unwrap();
        assert_eq!(blocking.topic(), background.topic());
    }
}
