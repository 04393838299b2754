//! What genos puts in Nostr events: kind, tags and the sealed content.
//!
//! ```text
//! kind    = 20000 + (u16be(topic[0..2]) mod 10000)         (ephemeral: relays do not store it)
//! tag     = ["x", hex(topic)]                               presence and goodbye
//!         = ["x", hex(SHA-256("genos/v1/nostr-peer" || topic || peer id))]   addressed messages
//!
//! stored presence (and the tombstone that replaces it on leave):
//! kind    = 30000 + (u16be(topic[0..2]) mod 10000)         (addressable: stored, replaced)
//! tags    = ["d", hex(topic)], ["x", hex(topic)], ["expiration", unix seconds]   (NIP-40)
//! content = base64(envelope), envelope = seal(signal key, purpose Signaling,
//!           sender = event pubkey, extra = topic, postcard(Content))
//! ```
//!
//! The seal binds the content to the event's author: an event re-signed by another key does
//! not open. Dedup and replay protection use the content's random id and timestamp, so the
//! same message published to several relays (even as different events, e.g. with proof of
//! work for one relay) reaches the application once.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use genos_crypto::{Context, PeerId, Purpose, SealKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{SignalError, Topic};

/// Version of the content format.
pub(crate) const CONTENT_VERSION: u8 = 1;

/// Ephemeral event kind for a topic.
pub(crate) fn kind_for(topic: &Topic) -> u16 {
    let [a, b, ..] = *topic.as_bytes();
    20_000 + u16::from_be_bytes([a, b]) % 10_000
}

/// Addressable event kind for a topic's stored presence: relays keep the newest event per
/// (author, kind, `d` tag), so each peer has one presence per topic.
pub(crate) fn presence_kind_for(topic: &Topic) -> u16 {
    kind_for(topic) + 10_000
}

/// The tag value of the room topic.
pub(crate) fn room_tag(topic: &Topic) -> String {
    hex::encode(topic.as_bytes())
}

/// The tag value on which `peer` receives messages addressed to it.
pub(crate) fn peer_tag(topic: &Topic, peer: &PeerId) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"genos/v1/nostr-peer");
    hasher.update(topic.as_bytes());
    hasher.update(peer.as_bytes());
    hex::encode(hasher.finalize())
}

/// A seal key for topics joined without the room's signaling subkey: anyone who knows the
/// topic can open these, so this only keeps the content from being readable at a glance.
pub(crate) fn fallback_key(topic: &Topic) -> SealKey {
    let mut hasher = Sha256::new();
    hasher.update(b"genos/v1/nostr-fallback-key");
    hasher.update(topic.as_bytes());
    SealKey::from_bytes(hasher.finalize().into())
}

/// What a signaling event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ContentKind {
    Presence,
    Message,
    Bye,
}

/// The plaintext inside the seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Content {
    pub(crate) version: u8,
    pub(crate) kind: ContentKind,
    /// Random per message; the unit of dedup and replay protection.
    pub(crate) id: [u8; 16],
    /// Sender's clock, milliseconds since the Unix epoch.
    pub(crate) timestamp_ms: u64,
    /// The addressee of a message.
    pub(crate) to: Option<PeerId>,
    pub(crate) payload: Vec<u8>,
}

/// Why content could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentError {
    /// Not base64, or too large.
    Encoding,
    /// Does not open with this room's key for this author (or tampered).
    Seal,
    /// Opens, but is not a content of a version we read.
    Format,
}

pub(crate) fn seal_content(
    key: &SealKey,
    topic: &Topic,
    sender: PeerId,
    content: &Content,
) -> Result<String, SignalError> {
    let plaintext =
        postcard::to_allocvec(content).map_err(|e| SignalError::Encode(e.to_string()))?;
    let context = Context::new(Purpose::Signaling, sender).with_extra(topic.as_bytes());
    let envelope = key.seal(&context, &plaintext).map_err(SignalError::Seal)?;
    Ok(BASE64.encode(envelope))
}

pub(crate) fn open_content(
    key: &SealKey,
    topic: &Topic,
    sender: PeerId,
    text: &str,
    max_len: usize,
) -> Result<Content, ContentError> {
    // base64 is 4 characters for 3 bytes: refuse before decoding anything too large.
    if text.len() > max_len.div_ceil(3) * 4 + 4 {
        return Err(ContentError::Encoding);
    }
    let envelope = BASE64.decode(text).map_err(|_| ContentError::Encoding)?;
    let context = Context::new(Purpose::Signaling, sender).with_extra(topic.as_bytes());
    let plaintext = key
        .open(&context, &envelope)
        .map_err(|_| ContentError::Seal)?;
    let content: Content = postcard::from_bytes(&plaintext).map_err(|_| ContentError::Format)?;
    if content.version != CONTENT_VERSION {
        return Err(ContentError::Format);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> Content {
        Content {
            version: CONTENT_VERSION,
            kind: ContentKind::Message,
            id: [3; 16],
            timestamp_ms: 1_700_000_000_000,
            to: Some(PeerId::from_bytes([2; 32])),
            payload: b"offer".to_vec(),
        }
    }

    #[test]
    fn round_trip_and_author_binding() {
        let topic = Topic::from_bytes([1; 32]);
        let key = SealKey::generate();
        let alice = PeerId::from_bytes([0xa; 32]);
        let text = seal_content(&key, &topic, alice, &content()).unwrap();
        assert_eq!(
            open_content(&key, &topic, alice, &text, 1 << 16),
            Ok(content())
        );
        let mallory = PeerId::from_bytes([0xb; 32]);
        assert_eq!(
            open_content(&key, &topic, mallory, &text, 1 << 16),
            Err(ContentError::Seal)
        );
        let other_topic = Topic::from_bytes([9; 32]);
        assert_eq!(
            open_content(&key, &other_topic, alice, &text, 1 << 16),
            Err(ContentError::Seal)
        );
        assert_eq!(
            open_content(&SealKey::generate(), &topic, alice, &text, 1 << 16),
            Err(ContentError::Seal)
        );
    }

    #[test]
    fn garbage_is_typed() {
        let topic = Topic::from_bytes([1; 32]);
        let key = SealKey::generate();
        let peer = PeerId::from_bytes([0xa; 32]);
        assert_eq!(
            open_content(&key, &topic, peer, "%%%", 100),
            Err(ContentError::Encoding)
        );
        assert_eq!(
            open_content(&key, &topic, peer, &"A".repeat(1000), 100),
            Err(ContentError::Encoding)
        );
        assert_eq!(
            open_content(&key, &topic, peer, "AAAA", 100),
            Err(ContentError::Seal)
        );
    }

    #[test]
    fn kinds_are_ephemeral_or_addressable_and_tags_distinct() {
        for byte in [0u8, 0x7f, 0xff] {
            let topic = Topic::from_bytes([byte; 32]);
            assert!((20_000..30_000).contains(&kind_for(&topic)));
            assert!((30_000..40_000).contains(&presence_kind_for(&topic)));
            let peer = PeerId::from_bytes([byte; 32]);
            assert_ne!(room_tag(&topic), peer_tag(&topic, &peer));
        }
    }
}
