//! Reassembly of application messages that came through the overlay in chunks.
//!
//! Chunks of one message travel as separate overlay frames, so they may arrive in any
//! order (repair pulls a lost one later). Each is placed at its offset; a message is whole
//! when every byte arrived. Everything is bounded: messages in progress (oldest dropped at
//! the bound), their bytes (counted at their announced size), the size of one message, and
//! how long one may wait for its missing chunks.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use genos_crypto::PeerId;

use super::wire::ChunkMeta;
use crate::FrameError;
use crate::reassembly::{Assembled, Pushed};

struct Partial {
    channel: String,
    meta: Option<Bytes>,
    buffer: Vec<u8>,
    received: u64,
    offsets: BTreeSet<u64>,
    started: Instant,
}

/// See the module docs.
pub(crate) struct MeshInbox {
    partial: HashMap<(PeerId, u64), Partial>,
    max_partial: usize,
    max_bytes: usize,
    max_message: usize,
    timeout: Duration,
    held_bytes: usize,
}

impl MeshInbox {
    pub(crate) fn new(
        max_partial: usize,
        max_bytes: usize,
        max_message: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            partial: HashMap::new(),
            max_partial: max_partial.max(1),
            max_bytes,
            max_message,
            timeout,
            held_bytes: 0,
        }
    }

    /// Takes one chunk from `origin`. Returns what came of it and how many messages in
    /// progress were dropped to make room.
    pub(crate) fn push(
        &mut self,
        origin: PeerId,
        header: ChunkMeta,
        data: Bytes,
        now: Instant,
    ) -> Result<(Pushed, usize), FrameError> {
        let total = usize::try_from(header.total).unwrap_or(usize::MAX);
        if total > self.max_message {
            return Err(FrameError::Malformed(format!(
                "overlay message of {total} bytes (limit {})",
                self.max_message
            )));
        }
        let offset = usize::try_from(header.offset).unwrap_or(usize::MAX);
        let end = offset.saturating_add(data.len());
        if end > total || (data.is_empty() && total > 0) {
            return Err(FrameError::Malformed("chunk outside its message".into()));
        }
        if offset == 0 && data.len() == total {
            let complete = Pushed::Complete(Assembled {
                channel: header.channel,
                message: header.message,
                payload: data,
                meta: header.meta.map(Bytes::from),
                chunked: false,
            });
            return Ok((complete, 0));
        }
        let key = (origin, header.message);
        let mut evicted = 0;
        if !self.partial.contains_key(&key) {
            while self.partial.len() >= self.max_partial
                || (self.held_bytes + total > self.max_bytes && !self.partial.is_empty())
            {
                self.evict_oldest();
                evicted += 1;
            }
            if self.held_bytes + total > self.max_bytes {
                return Err(FrameError::Malformed(
                    "overlay message larger than the reassembly budget".into(),
                ));
            }
            self.held_bytes += total;
            self.partial.insert(
                key,
                Partial {
                    channel: header.channel.clone(),
                    meta: None,
                    buffer: vec![0; total],
                    received: 0,
                    offsets: BTreeSet::new(),
                    started: now,
                },
            );
        }
        let Some(partial) = self.partial.get_mut(&key) else {
            return Err(FrameError::Malformed("lost partial message".into()));
        };
        if partial.channel != header.channel || partial.buffer.len() != total {
            return Err(FrameError::Malformed(
                "chunk disagrees with its message".into(),
            ));
        }
        if !partial.offsets.insert(header.offset) {
            return Err(FrameError::Malformed("chunk repeated".into()));
        }
        if let Some(meta) = header.meta {
            partial.meta = Some(Bytes::from(meta));
        }
        if let Some(place) = partial.buffer.get_mut(offset..end) {
            place.copy_from_slice(&data);
        }
        partial.received += data.len() as u64;
        if partial.received < header.total {
            let progress = Pushed::Partial {
                channel: header.channel,
                message: header.message,
                received: partial.received,
                total: header.total,
            };
            return Ok((progress, evicted));
        }
        let Some(done) = self.partial.remove(&key) else {
            return Err(FrameError::Malformed("lost partial message".into()));
        };
        self.held_bytes = self.held_bytes.saturating_sub(total);
        let complete = Pushed::Complete(Assembled {
            channel: done.channel,
            message: header.message,
            payload: Bytes::from(done.buffer),
            meta: done.meta,
            chunked: true,
        });
        Ok((complete, evicted))
    }

    /// Drops messages that waited too long for their missing chunks; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let timeout = self.timeout;
        let before = self.partial.len();
        let mut freed = 0;
        self.partial.retain(|_, partial| {
            let keep = now.saturating_duration_since(partial.started) < timeout;
            if !keep {
                freed += partial.buffer.len();
            }
            keep
        });
        self.held_bytes = self.held_bytes.saturating_sub(freed);
        before - self.partial.len()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .partial
            .iter()
            .min_by_key(|(_, partial)| partial.started)
            .map(|(key, _)| *key);
        if let Some(partial) = oldest.and_then(|key| self.partial.remove(&key)) {
            self.held_bytes = self.held_bytes.saturating_sub(partial.buffer.len());
        }
    }

    /// Messages in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn chunk(message: u64, offset: u64, total: u64) -> ChunkMeta {
        ChunkMeta {
            channel: "files".into(),
            message,
            offset,
            total,
            meta: (offset == 0).then(|| b"m".to_vec()),
            unreliable: false,
        }
    }

    #[test]
    fn chunks_in_any_order_make_the_message_once() {
        let origin = PeerId::from_bytes([1; 32]);
        let now = Instant::now();
        let mut inbox = MeshInbox::new(4, 1 << 20, 1 << 20, Duration::from_secs(5));
        let payload: Vec<u8> = (0..10u8).collect();
        let parts = [
            (6u64, &payload[6..]),
            (0, &payload[..3]),
            (3, &payload[3..6]),
        ];
        let mut outcomes = Vec::new();
        for (offset, data) in parts {
            let (got, evicted) = inbox
                .push(
                    origin,
                    chunk(9, offset, 10),
                    Bytes::copy_from_slice(data),
                    now,
                )
                .unwrap();
            assert_eq!(evicted, 0);
            outcomes.push(got);
        }
        assert!(matches!(outcomes[0], Pushed::Partial { received: 4, .. }));
        assert_eq!(
            outcomes[2],
            Pushed::Complete(Assembled {
                channel: "files".into(),
                message: 9,
                payload: Bytes::from(payload),
                meta: Some(Bytes::from_static(b"m")),
                chunked: true,
            })
        );
        assert_eq!(inbox.len(), 0);
    }

    #[test]
    fn bad_chunks_are_refused_and_bounds_drop_the_oldest() {
        let origin = PeerId::from_bytes([1; 32]);
        let now = Instant::now();
        let mut inbox = MeshInbox::new(2, 100, 50, Duration::from_secs(5));
        let data = Bytes::from_static(b"abc");
        assert!(
            inbox
                .push(origin, chunk(1, 0, 60), data.clone(), now)
                .is_err()
        );
        assert!(
            inbox
                .push(origin, chunk(1, 48, 50), data.clone(), now)
                .is_err()
        );
        inbox
            .push(origin, chunk(1, 0, 40), data.clone(), now)
            .unwrap();
        assert!(
            inbox
                .push(origin, chunk(1, 0, 40), data.clone(), now)
                .is_err()
        );
        inbox
            .push(origin, chunk(2, 0, 40), data.clone(), now)
            .unwrap();
        // A third message: over both the count and the byte budget; the oldest goes.
        let later = now + Duration::from_millis(1);
        let (_, evicted) = inbox.push(origin, chunk(3, 0, 40), data, later).unwrap();
        assert_eq!(evicted, 1);
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.expire(now + Duration::from_secs(6)), 2);
        assert_eq!(inbox.len(), 0);
    }
}
