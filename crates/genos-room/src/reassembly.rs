//! Putting chunked messages back together, within per-peer bounds.

use std::collections::HashMap;

use bytes::Bytes;

use crate::FrameError;
use crate::wire::Chunk;

/// A message received whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assembled {
    pub(crate) channel: String,
    pub(crate) message: u64,
    /// Whether it came in several chunks (and so had progress reported).
    pub(crate) chunked: bool,
    pub(crate) meta: Option<Bytes>,
    pub(crate) payload: Bytes,
}

/// What one chunk did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The message is complete.
    Complete(Assembled),
    /// More chunks are due: `received` of `total` bytes so far.
    Partial {
        channel: String,
        message: u64,
        received: u64,
        total: u64,
    },
}

struct Partial {
    buffer: Vec<u8>,
    total: u64,
    meta: Option<Bytes>,
}

/// The partially received messages of one peer.
///
/// Bounds: at most `max_messages` partial messages and `max_bytes` bytes (counted at their
/// announced total, reserved when the first chunk arrives, so a peer cannot make us grow
/// past the bound by lying about sizes). A chunk that breaks a rule is rejected and its
/// message forgotten.
pub(crate) struct Reassembler {
    partials: HashMap<(String, u64), Partial>,
    reserved: usize,
    max_messages: usize,
    max_bytes: usize,
    max_message_size: usize,
}

impl Reassembler {
    pub(crate) fn new(max_messages: usize, max_bytes: usize, max_message_size: usize) -> Self {
        Self {
            partials: HashMap::new(),
            reserved: 0,
            max_messages,
            max_bytes,
            max_message_size,
        }
    }

    /// Bytes reserved for partial messages now.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    pub(crate) fn push(&mut self, chunk: Chunk) -> Result<Pushed, FrameError> {
        if !crate::channel::valid_name(&chunk.channel) {
            return Err(FrameError::BadChannelName);
        }
        let limit = self.max_message_size;
        let total = usize::try_from(chunk.total)
            .ok()
            .filter(|total| *total <= limit)
            .ok_or(FrameError::TooLarge {
                size: chunk.total,
                limit,
            })?;
        let key = (chunk.channel, chunk.message);
        let Some(partial) = self.partials.get_mut(&key) else {
            return self.start(key, total, chunk.offset, chunk.meta, chunk.data);
        };
        let expected = partial.buffer.len() as u64;
        let fits = (partial.buffer.len() + chunk.data.len()) as u64 <= partial.total;
        if chunk.offset != expected || chunk.total != partial.total || !fits {
            self.forget(&key);
            return Err(FrameError::OutOfOrder {
                offset: chunk.offset,
                expected,
            });
        }
        partial.buffer.extend_from_slice(&chunk.data);
        let received = partial.buffer.len() as u64;
        if received < partial.total {
            return Ok(Pushed::Partial {
                channel: key.0,
                message: key.1,
                received,
                total: partial.total,
            });
        }
        let Some(done) = self.partials.remove(&key) else {
            return Err(FrameError::OutOfOrder {
                offset: chunk.offset,
                expected,
            });
        };
        self.reserved -= total;
        Ok(Pushed::Complete(Assembled {
            channel: key.0,
            message: key.1,
            chunked: true,
            meta: done.meta,
            payload: Bytes::from(done.buffer),
        }))
    }

    fn start(
        &mut self,
        key: (String, u64),
        total: usize,
        offset: u64,
        meta: Option<Bytes>,
        data: Bytes,
    ) -> Result<Pushed, FrameError> {
        if offset != 0 || data.len() > total {
            return Err(FrameError::OutOfOrder {
                offset,
                expected: 0,
            });
        }
        if data.len() == total {
            // Single-chunk message: delivered without a copy.
            return Ok(Pushed::Complete(Assembled {
                channel: key.0,
                message: key.1,
                chunked: false,
                meta,
                payload: data,
            }));
        }
        if self.partials.len() >= self.max_messages || self.reserved + total > self.max_bytes {
            return Err(FrameError::TooManyPartials);
        }
        let mut buffer = Vec::with_capacity(total);
        buffer.extend_from_slice(&data);
        self.reserved += total;
        let received = buffer.len() as u64;
        self.partials.insert(
            key.clone(),
            Partial {
                buffer,
                total: total as u64,
                meta,
            },
        );
        Ok(Pushed::Partial {
            channel: key.0,
            message: key.1,
            received,
            total: total as u64,
        })
    }

    fn forget(&mut self, key: &(String, u64)) {
        if let Some(partial) = self.partials.remove(key) {
            self.reserved -= partial.total as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(message: u64, offset: u64, total: u64, data: &[u8]) -> Chunk {
        Chunk {
            channel: "c".into(),
            message,
            offset,
            total,
            meta: None,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn interleaved_messages_reassemble() {
        let mut r = Reassembler::new(4, 1000, 1000);
        assert!(matches!(
            r.push(chunk(1, 0, 6, b"abc")),
            Ok(Pushed::Partial { received: 3, .. })
        ));
        assert!(matches!(
            r.push(chunk(2, 0, 4, b"xy")),
            Ok(Pushed::Partial { .. })
        ));
        let Ok(Pushed::Complete(one)) = r.push(chunk(1, 3, 6, b"def")) else {
            panic!()
        };
        assert_eq!(&one.payload[..], b"abcdef");
        let Ok(Pushed::Complete(two)) = r.push(chunk(2, 2, 4, b"zw")) else {
            panic!()
        };
        assert_eq!(&two.payload[..], b"xyzw");
        assert_eq!(r.reserved(), 0);
    }

    #[test]
    fn rule_breakers_are_rejected_and_forgotten() {
        let mut r = Reassembler::new(2, 100, 50);
        assert_eq!(
            r.push(chunk(1, 0, 51, b"a")),
            Err(FrameError::TooLarge {
                size: 51,
                limit: 50
            })
        );
        assert!(matches!(
            r.push(chunk(1, 5, 10, b"a")),
            Err(FrameError::OutOfOrder { .. })
        ));
        assert!(matches!(
            r.push(chunk(1, 0, 2, b"abc")),
            Err(FrameError::OutOfOrder { .. })
        ));
        r.push(chunk(1, 0, 10, b"a")).unwrap();
        // A gap forgets the message and frees its reservation.
        assert!(matches!(
            r.push(chunk(1, 5, 10, b"a")),
            Err(FrameError::OutOfOrder { .. })
        ));
        assert_eq!(r.reserved(), 0);
        // Overrun.
        r.push(chunk(1, 0, 10, b"a")).unwrap();
        assert!(matches!(
            r.push(chunk(1, 1, 10, &[0; 10])),
            Err(FrameError::OutOfOrder { .. })
        ));
        // Partial-message bounds.
        r.push(chunk(2, 0, 50, b"a")).unwrap();
        r.push(chunk(3, 0, 40, b"a")).unwrap();
        assert_eq!(
            r.push(chunk(4, 0, 10, b"a")),
            Err(FrameError::TooManyPartials)
        );
        let mut r = Reassembler::new(8, 60, 50);
        r.push(chunk(2, 0, 50, b"a")).unwrap();
        assert_eq!(
            r.push(chunk(3, 0, 20, b"a")),
            Err(FrameError::TooManyPartials)
        );
        // A message that fits in one chunk needs no reservation.
        assert!(matches!(
            r.push(chunk(3, 0, 1, b"a")),
            Ok(Pushed::Complete(_))
        ));
        let mut bad = chunk(9, 0, 1, b"a");
        bad.channel = String::new();
        assert_eq!(r.push(bad), Err(FrameError::BadChannelName));
    }

    proptest! {
        #[test]
        fn any_split_reassembles(data in proptest::collection::vec(any::<u8>(), 1..2000), cuts in proptest::collection::vec(1usize..300, 1..20)) {
            let mut r = Reassembler::new(1, 4096, 4096);
            let total = data.len() as u64;
            let mut offset = 0usize;
            let mut cuts = cuts.into_iter().cycle();
            loop {
                let end = (offset + cuts.next().unwrap_or(1)).min(data.len());
                let pushed = r.push(chunk(1, offset as u64, total, &data[offset..end])).unwrap();
                offset = end;
                if let Pushed::Complete(done) = pushed {
                    prop_assert_eq!(offset, data.len());
                    prop_assert_eq!(&done.payload[..], &data[..]);
                    break;
                }
                prop_assert!(offset < data.len());
            }
            prop_assert_eq!(r.reserved(), 0);
        }
    }
}
