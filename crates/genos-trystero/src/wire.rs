//! The frames on Trystero's `data` channel.
//!
//! Every frame is wrapped for its room, since one connection can carry several rooms of an
//! app: `[1][token length: u16 BE][token]` then the payload, where the token is
//! [`crate::crypto::room_token`]. A room presence frame, `[2][1 present | 0 gone][token
//! length: u16 BE][token]`, tells the other side which rooms this connection serves.
//!
//! A room's payload is one chunk of an action message (Trystero's named channels):
//!
//! ```text
//! 0       32        34    35        36
//! | name  | counter | tag | progress | payload (at most 16,348 bytes)
//! ```
//!
//! The name is the action's UTF-8 name zero-padded to 32 bytes; the counter numbers the
//! sender's messages on that action (u16 BE, wrapping); the tag's bits say last chunk (1),
//! metadata chunk (2), binary payload (4), JSON payload (8) — neither: UTF-8 text; progress
//! is `round(255 * chunks sent / chunks)`. A message with metadata sends it first, as JSON,
//! in a chunk of its own. Trystero reserves names starting `@_` for itself (`@_hsready`,
//! `@_hsdata`, `@_ping`, `@_pong`, `@_leave`, `@_signal`, `@_stream`, `@_track`).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::TrysteroError;

/// Bytes of an action name on the wire.
pub const ACTION_NAME_LEN: usize = 32;
/// Bytes before a chunk's payload.
pub const CHUNK_HEADER_LEN: usize = 36;
/// Payload bytes of a full chunk (16 KiB with the header).
pub const CHUNK_PAYLOAD: usize = 16 * 1024 - CHUNK_HEADER_LEN;

const ROOM_FRAME: u8 = 1;
const PRESENCE_FRAME: u8 = 2;
const TAG_LAST: u8 = 1;
const TAG_META: u8 = 2;
const TAG_BINARY: u8 = 4;
const TAG_JSON: u8 = 8;

/// A frame on the `data` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// A chunk for room `token`.
    Room {
        /// The room token.
        token: &'a str,
        /// The action chunk.
        payload: &'a [u8],
    },
    /// The sender serves (or stopped serving) room `token` on this connection.
    Presence {
        /// The room token.
        token: &'a str,
        /// Whether it serves the room.
        present: bool,
    },
}

impl<'a> Frame<'a> {
    /// Reads a frame (Trystero ignores what it cannot read; this says why).
    pub fn decode(frame: &'a [u8]) -> Result<Self, TrysteroError> {
        let token = |at: usize| -> Result<(&'a str, usize), TrysteroError> {
            let Some(&[high, low]) = frame.get(at..at + 2) else {
                return Err(TrysteroError::InvalidFrame("shorter than its header"));
            };
            let len = usize::from(u16::from_be_bytes([high, low]));
            if len == 0 {
                return Err(TrysteroError::InvalidFrame("empty room token"));
            }
            let bytes = frame
                .get(at + 2..at + 2 + len)
                .ok_or(TrysteroError::InvalidFrame("room token cut short"))?;
            let text = std::str::from_utf8(bytes)
                .map_err(|_| TrysteroError::InvalidFrame("room token is not UTF-8"))?;
            Ok((text, at + 2 + len))
        };
        match frame.first() {
            Some(&ROOM_FRAME) => {
                let (token, end) = token(1)?;
                Ok(Self::Room {
                    token,
                    payload: frame.get(end..).unwrap_or_default(),
                })
            }
            Some(&PRESENCE_FRAME) => {
                let present = frame.get(1) == Some(&1);
                let (token, _) = token(2)?;
                Ok(Self::Presence { token, present })
            }
            _ => Err(TrysteroError::InvalidFrame("unknown frame type")),
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        let (token, head, payload): (&str, &[u8], &[u8]) = match self {
            Self::Room { token, payload } => (token, &[ROOM_FRAME][..], payload),
            Self::Presence { token, present } => {
                let head: &[u8] = if *present {
                    &[PRESENCE_FRAME, 1]
                } else {
                    &[PRESENCE_FRAME, 0]
                };
                (token, head, &[][..])
            }
        };
        let len = u16::try_from(token.len()).unwrap_or(u16::MAX);
        let mut out = BytesMut::with_capacity(head.len() + 2 + token.len() + payload.len());
        out.put_slice(head);
        out.put_u16(len);
        out.put_slice(token.as_bytes().get(..usize::from(len)).unwrap_or_default());
        out.put_slice(payload);
        out.freeze()
    }
}

/// What a message carries, as Trystero types it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Payload {
    /// A string (no tag bit).
    Text(String),
    /// Any other JSON value (tag bit 8).
    Json(Value),
    /// Bytes (tag bit 4).
    Binary(Bytes),
}

impl Payload {
    fn tag(&self) -> u8 {
        match self {
            Self::Text(_) => 0,
            Self::Json(_) => TAG_JSON,
            Self::Binary(_) => TAG_BINARY,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Self::Text(text) => Bytes::from(text.into_bytes()),
            Self::Json(value) => Bytes::from(value.to_string().into_bytes()),
            Self::Binary(bytes) => bytes,
        }
    }
}

/// An action name padded for the wire.
pub fn action_name(name: &str) -> Result<[u8; ACTION_NAME_LEN], TrysteroError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > ACTION_NAME_LEN {
        return Err(TrysteroError::ActionName(bytes.len()));
    }
    let mut padded = [0u8; ACTION_NAME_LEN];
    padded
        .get_mut(..bytes.len())
        .ok_or(TrysteroError::ActionName(bytes.len()))?
        .copy_from_slice(bytes);
    Ok(padded)
}

/// Cuts one message into the chunks Trystero sends, in order.
pub fn chunk_message(
    action: &str,
    counter: u16,
    payload: Payload,
    metadata: Option<&Value>,
) -> Result<Vec<Bytes>, TrysteroError> {
    let name = action_name(action)?;
    let kind = payload.tag();
    let body = payload.into_bytes();
    let meta = metadata.map(|value| Bytes::from(value.to_string().into_bytes()));
    let body_chunks = body.len().div_ceil(CHUNK_PAYLOAD);
    let total = (body_chunks + usize::from(meta.is_some())).max(1);
    let mut pieces: Vec<Bytes> = Vec::with_capacity(total);
    if let Some(meta) = meta {
        pieces.push(meta);
    }
    let mut offset = 0;
    while offset < body.len() {
        let end = (offset + CHUNK_PAYLOAD).min(body.len());
        pieces.push(body.slice(offset..end));
        offset = end;
    }
    if pieces.is_empty() {
        pieces.push(Bytes::new());
    }
    let has_meta = metadata.is_some();
    Ok(pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let last = i + 1 == total;
            let mut tag = kind;
            if last {
                tag |= TAG_LAST;
            }
            if has_meta && i == 0 {
                tag |= TAG_META;
            }
            // JavaScript's Math.round of a non-negative value: half rounds up.
            let progress = ((i + 1) * 255 * 2 + total) / (2 * total);
            let mut chunk = BytesMut::with_capacity(CHUNK_HEADER_LEN + piece.len());
            chunk.put_slice(&name);
            chunk.put_u16(counter);
            chunk.put_u8(tag);
            chunk.put_u8(u8::try_from(progress).unwrap_or(u8::MAX));
            chunk.put_slice(&piece);
            chunk.freeze()
        })
        .collect())
}

/// One chunk read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The action's name (zero padding removed).
    pub action: String,
    /// The sender's message counter.
    pub counter: u16,
    /// The last chunk of its message.
    pub last: bool,
    /// A metadata chunk.
    pub meta: bool,
    /// The message is binary.
    pub binary: bool,
    /// The message is JSON.
    pub json: bool,
    /// The sender's progress byte (255 = done).
    pub progress: u8,
    /// The chunk's payload.
    pub payload: Bytes,
}

impl Chunk {
    /// Reads a chunk.
    pub fn decode(chunk: Bytes) -> Result<Self, TrysteroError> {
        let header = chunk
            .get(..CHUNK_HEADER_LEN)
            .ok_or(TrysteroError::InvalidFrame("chunk shorter than its header"))?;
        let (name, rest) = header.split_at(ACTION_NAME_LEN);
        let action: String = String::from_utf8_lossy(name).replace('\0', "");
        let [c0, c1, tag, progress] = rest else {
            return Err(TrysteroError::InvalidFrame("chunk shorter than its header"));
        };
        Ok(Self {
            action,
            counter: u16::from_be_bytes([*c0, *c1]),
            last: tag & TAG_LAST != 0,
            meta: tag & TAG_META != 0,
            binary: tag & TAG_BINARY != 0,
            json: tag & TAG_JSON != 0,
            progress: *progress,
            payload: chunk.slice(CHUNK_HEADER_LEN..),
        })
    }
}

/// A message put back together.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The action it came on.
    pub action: String,
    /// Its payload.
    pub payload: Payload,
    /// Its metadata, if it had any.
    pub metadata: Option<Value>,
}

/// What one chunk did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Pushed {
    /// Part of a message: the sender's progress so far (0.0 to 1.0).
    Progress {
        /// The action.
        action: String,
        /// The sender's progress byte over 255.
        progress: f32,
    },
    /// A whole message.
    Complete(Message),
}

/// Bounds of a [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReassemblyLimits {
    /// Largest message (payload plus metadata). Default 64 MiB.
    pub max_message: usize,
    /// Messages in progress at once from one peer. Default 16; one more drops the oldest.
    pub max_partials: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_message: 64 << 20,
            max_partials: 16,
        }
    }
}

#[derive(Debug, Default)]
struct Partial {
    age: u64,
    bytes: usize,
    chunks: Vec<Bytes>,
    metadata: Option<Value>,
}

/// Puts one peer's chunks back into messages, within [`ReassemblyLimits`] (Trystero itself
/// has no bound; a message beyond the limit is dropped with a typed error and its later
/// chunks are ignored until its last one).
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    partials: HashMap<(String, u16), Partial>,
    next_age: u64,
    /// Messages dropped for size: their chunks are skipped until the last one.
    dropped: Vec<(String, u16)>,
}

impl Reassembler {
    /// A reassembler with these bounds.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Messages in progress.
    pub fn partials(&self) -> usize {
        self.partials.len()
    }

    /// Takes one chunk.
    pub fn push(&mut self, chunk: Chunk) -> Result<Pushed, TrysteroError> {
        let key = (chunk.action.clone(), chunk.counter);
        if let Some(at) = self.dropped.iter().position(|dropped| *dropped == key) {
            if chunk.last {
                self.dropped.swap_remove(at);
            }
            return Err(TrysteroError::TooLarge {
                size: self.limits.max_message + 1,
                limit: self.limits.max_message,
            });
        }
        if !self.partials.contains_key(&key) && self.partials.len() >= self.limits.max_partials {
            let oldest = self
                .partials
                .iter()
                .min_by_key(|(_, partial)| partial.age)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                self.partials.remove(&oldest);
            }
        }
        self.next_age += 1;
        let age = self.next_age;
        let partial = self.partials.entry(key.clone()).or_insert_with(|| Partial {
            age,
            ..Partial::default()
        });
        partial.bytes += chunk.payload.len();
        if partial.bytes > self.limits.max_message {
            let size = partial.bytes;
            self.partials.remove(&key);
            if !chunk.last && self.dropped.len() < self.limits.max_partials {
                self.dropped.push(key);
            }
            return Err(TrysteroError::TooLarge {
                size,
                limit: self.limits.max_message,
            });
        }
        if chunk.meta {
            let value = serde_json::from_slice(&chunk.payload)
                .map_err(|e| TrysteroError::Json(e.to_string()));
            match value {
                Ok(value) => partial.metadata = Some(value),
                Err(error) => {
                    self.partials.remove(&key);
                    return Err(error);
                }
            }
        } else {
            partial.chunks.push(chunk.payload);
        }
        if !chunk.last {
            return Ok(Pushed::Progress {
                action: chunk.action,
                progress: f32::from(chunk.progress) / 255.0,
            });
        }
        let Some(partial) = self.partials.remove(&key) else {
            return Err(TrysteroError::InvalidFrame("message vanished"));
        };
        let mut body = BytesMut::with_capacity(partial.bytes);
        for piece in partial.chunks {
            body.put_slice(&piece);
        }
        let body = body.freeze();
        let payload = if chunk.binary {
            Payload::Binary(body)
        } else if chunk.json {
            Payload::Json(
                serde_json::from_slice(&body).map_err(|e| TrysteroError::Json(e.to_string()))?,
            )
        } else {
            Payload::Text(String::from_utf8_lossy(&body).into_owned())
        };
        Ok(Pushed::Complete(Message {
            action: chunk.action,
            payload,
            metadata: partial.metadata,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn reassemble(chunks: Vec<Bytes>) -> Message {
        let mut reassembler = Reassembler::default();
        let mut done = None;
        for chunk in chunks {
            if let Pushed::Complete(message) =
                reassembler.push(Chunk::decode(chunk).unwrap()).unwrap()
            {
                done = Some(message);
            }
        }
        done.unwrap()
    }

    #[test]
    fn frames_round_trip() {
        let room = Frame::Room {
            token: "abc",
            payload: b"xyz",
        };
        assert_eq!(&room.encode()[..], b"\x01\x00\x03abcxyz");
        assert_eq!(Frame::decode(&room.encode()).unwrap(), room);
        let presence = Frame::Presence {
            token: "abc",
            present: true,
        };
        assert_eq!(&presence.encode()[..], b"\x02\x01\x00\x03abc");
        assert_eq!(Frame::decode(&presence.encode()).unwrap(), presence);
        for bad in [
            &b""[..],
            b"\x01\x00",
            b"\x01\x00\x00",
            b"\x01\x00\x09ab",
            b"\x07abc",
        ] {
            assert!(Frame::decode(bad).is_err());
        }
    }

    #[test]
    fn a_text_message_is_one_chunk_with_trysteros_header() {
        let chunks = chunk_message("chat", 7, Payload::Text("hello".into()), None).unwrap();
        assert_eq!(chunks.len(), 1);
        let chunk = &chunks[0];
        assert_eq!(&chunk[..4], b"chat");
        assert!(chunk[4..32].iter().all(|b| *b == 0));
        assert_eq!(&chunk[32..36], &[0, 7, TAG_LAST, 255]);
        assert_eq!(&chunk[36..], b"hello");
        assert_eq!(reassemble(chunks).payload, Payload::Text("hello".into()));
    }

    #[test]
    fn binary_with_metadata_spans_chunks_and_comes_back_whole() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let meta = serde_json::json!({"name": "file.bin"});
        let chunks = chunk_message(
            "file",
            1,
            Payload::Binary(Bytes::from(body.clone())),
            Some(&meta),
        )
        .unwrap();
        assert_eq!(chunks.len(), 1 + body.len().div_ceil(CHUNK_PAYLOAD));
        assert!(chunks.iter().all(|c| c.len() <= 16 * 1024));
        assert_eq!(chunks[0][34], TAG_META | TAG_BINARY);
        assert_eq!(chunks.last().unwrap()[34], TAG_LAST | TAG_BINARY);
        let message = reassemble(chunks);
        assert_eq!(message.payload, Payload::Binary(Bytes::from(body)));
        assert_eq!(message.metadata, Some(meta));
    }

    #[test]
    fn empty_and_json_messages() {
        let chunks = chunk_message("@_leave", 0, Payload::Text(String::new()), None).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), CHUNK_HEADER_LEN);
        let value = serde_json::json!({"a": [1, 2]});
        let chunks = chunk_message("x", 0, Payload::Json(value.clone()), None).unwrap();
        assert_eq!(reassemble(chunks).payload, Payload::Json(value));
        assert!(matches!(
            chunk_message(&"n".repeat(33), 0, Payload::Text(String::new()), None),
            Err(TrysteroError::ActionName(33))
        ));
    }

    #[test]
    fn a_message_beyond_the_limit_is_dropped_and_the_next_one_arrives() {
        let mut reassembler = Reassembler::new(ReassemblyLimits {
            max_message: 20_000,
            max_partials: 2,
        });
        let big =
            chunk_message("f", 0, Payload::Binary(Bytes::from(vec![0; 50_000])), None).unwrap();
        let mut refused = 0;
        for chunk in big {
            if reassembler.push(Chunk::decode(chunk).unwrap()).is_err() {
                refused += 1;
            }
        }
        assert_eq!(
            refused, 3,
            "the chunk crossing the bound and the two after it"
        );
        assert_eq!(reassembler.partials(), 0);
        let small = chunk_message("f", 1, Payload::Text("ok".into()), None).unwrap();
        let pushed = reassembler
            .push(Chunk::decode(small[0].clone()).unwrap())
            .unwrap();
        assert!(matches!(pushed, Pushed::Complete(_)));
    }

    #[test]
    fn partials_beyond_the_bound_drop_the_oldest() {
        let mut reassembler = Reassembler::new(ReassemblyLimits {
            max_message: 1 << 20,
            max_partials: 2,
        });
        for counter in 0..5u16 {
            let chunks = chunk_message(
                "f",
                counter,
                Payload::Binary(Bytes::from(vec![1; 40_000])),
                None,
            )
            .unwrap();
            reassembler
                .push(Chunk::decode(chunks[0].clone()).unwrap())
                .unwrap();
        }
        assert_eq!(reassembler.partials(), 2);
    }
}
