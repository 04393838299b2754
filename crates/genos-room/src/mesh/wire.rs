//! What a cells room puts on the wire besides link frames: presence on the overlay's
//! topics, and the header each overlay chunk carries in the overlay's metadata field.

use bytes::Bytes;
use genos_cellmesh::MeshTopic;
use serde::{Deserialize, Serialize};

use crate::wire::PROTOCOL_VERSION;

/// What a peer announces on a lobby or cell topic: the overlay's announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MeshPresence {
    pub(crate) protocol: u16,
    pub(crate) cells: u32,
    pub(crate) epoch: u32,
    pub(crate) count: u32,
}

impl MeshPresence {
    pub(crate) fn new(cells: u32, epoch: u32, count: u32) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            cells,
            epoch,
            count,
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The header of one chunk of an application message sent through the overlay (the
/// overlay's `meta`; the chunk's bytes are its payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkMeta {
    pub(crate) channel: String,
    /// The sender's message number.
    pub(crate) message: u64,
    pub(crate) offset: u64,
    pub(crate) total: u64,
    /// The application's metadata, on the first chunk only.
    pub(crate) meta: Option<Vec<u8>>,
    /// Sent on an unreliable channel (one chunk, counted as a datagram).
    pub(crate) unreliable: bool,
}

impl ChunkMeta {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The label a topic of the overlay is derived from (with the room key, so topics of
/// different rooms never meet).
pub(crate) fn topic_label(topic: MeshTopic) -> Vec<u8> {
    match topic {
        MeshTopic::Cell { cells, cell } => format!("cellmesh/cell/{cells}/{cell}").into_bytes(),
        // The lobby, and any topic a later overlay adds.
        _ => b"cellmesh/lobby".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn presence_and_chunk_headers_round_trip_and_garbage_is_refused() {
        let presence = MeshPresence::new(10, 2, 7);
        assert_eq!(MeshPresence::decode(&presence.encode()), Some(presence));
        let chunk = ChunkMeta {
            channel: "chat".into(),
            message: 3,
            offset: 16384,
            total: 40000,
            meta: None,
            unreliable: false,
        };
        assert_eq!(ChunkMeta::decode(&chunk.encode()), Some(chunk));
        assert_eq!(ChunkMeta::decode(&[0xff; 3]), None);
        assert_eq!(MeshPresence::decode(&[]), None);
        assert_ne!(
            topic_label(MeshTopic::Lobby),
            topic_label(MeshTopic::Cell { cells: 1, cell: 0 })
        );
    }
}
