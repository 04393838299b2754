//! Trystero's topics: where a room's announces and a peer's signaling go on Nostr.
//!
//! A topic is SHA-1 of a path (`Trystero@app@room`, and `…@peer` for a peer's own topic)
//! with each digest byte written in base 36, concatenated without padding. Each topic is
//! published under its own ephemeral event kind: 20000 plus the sum of the topic's character
//! codes modulo 10000. Events carry the topic in an `x` tag.

use sha1::{Digest, Sha1};

/// Prefix of every Trystero topic path.
const LIBRARY: &str = "Trystero";

/// The topics of one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    path: String,
    room: String,
}

impl Topics {
    /// The topics of room `room` of application `app`.
    pub fn new(app: &str, room: &str) -> Self {
        let path = format!("{LIBRARY}@{app}@{room}");
        let room = digest_base36(&path);
        Self { path, room }
    }

    /// The room's topic: announces go here.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The event kind of the room's topic.
    pub fn room_kind(&self) -> u16 {
        kind(&self.room)
    }

    /// The topic of peer `peer_id`: offers, answers and candidates for it go here.
    pub fn peer(&self, peer_id: &str) -> String {
        digest_base36(&format!("{}@{peer_id}", self.path))
    }
}

/// The ephemeral event kind Trystero publishes `topic` under.
pub fn kind(topic: &str) -> u16 {
    let sum = topic
        .encode_utf16()
        .fold(0u32, |sum, unit| (sum + u32::from(unit)) % 10_000);
    // The sum is below 10,000, so the kind stays within 20000..30000.
    20_000 + u16::try_from(sum).unwrap_or(0)
}

/// SHA-1 of `text`, each byte in base 36 (JavaScript's `byte.toString(36)`).
fn digest_base36(text: &str) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(40);
    for byte in Sha1::digest(text.as_bytes()) {
        let digit = |value: u8| char::from(DIGITS.get(usize::from(value)).copied().unwrap_or(b'0'));
        if byte >= 36 {
            out.push(digit(byte / 36));
        }
        out.push(digit(byte % 36));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_topic_and_kind_match_trysteros() {
        // Computed by Trystero 0.25 (../shared/reference/FACTS.md, and the vectors test).
        let topics = Topics::new("my-app", "lobby");
        assert_eq!(topics.room(), "z564c132g302c6qki3c2z374n12711k3x245f");
        assert_eq!(topics.room_kind(), 22_637);
    }

    #[test]
    fn base36_bytes_are_unpadded() {
        // 0 -> "0", 35 -> "z", 36 -> "10", 255 -> "73".
        assert_eq!(kind("a"), 20_097);
        let topic = digest_base36("");
        assert!(topic.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!((20..=40).contains(&topic.len()));
    }
}
