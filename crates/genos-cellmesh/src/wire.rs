//! The bytes on a link between two overlay peers.
//!
//! Six messages, each starting with a tag byte:
//!
//! - **frame** `[1][ttl][hops][kind][origin 32][seq 8][cells 4][origin cell 4][target 32 if
//!   directed or an ack][signature 64][body]`: an application payload (kind 1 broadcast, 2
//!   directed) or an acknowledgement of directed payloads (kind 3) on its way
//!   through the mesh. The origin signs everything but `ttl` and `hops`, which forwarders
//!   change; the body is sealed by the origin (room key for broadcasts, a key only origin and
//!   target share for directed frames and acks). A directed body opens to `[message 8][meta
//!   length 4][meta][payload]`, an ack's to `[count 2][message 8]*` (see `overlay/direct.rs`).
//! - **hello** `[2][role][cells 4][from cell 4][to cell 4][slot][known 4]`: sent by both ends
//!   when a link comes up, saying what the link is for.
//! - **roster** `[3][cells 4][cell 4][count 2][peer 32]*`: the members of a cell a peer knows,
//!   so a newcomer learns its cell from the first cell mate it meets.
//!
//! - **repair** `[4]` then a frame's layout after its tag: a frame sent in answer to a pull
//!   (the receiver forwards it without a backup delay; see `overlay/repair.rs`).
//! - **digest** `[5][count 2]([origin tag 8][seq 8])*`: ids of broadcasts the sender accepted
//!   lately (an origin tag is the first 8 bytes of its key), so a peer the eager path missed
//!   learns what to pull.
//! - **pull** `[6][count 2]([origin tag 8][seq 8])*`: the ids of a digest the sender lacks.
//!
//! All integers are big-endian. Decoding checks every length and never allocates more than
//! the message holds.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{MeshError, PeerKey};

const TAG_FRAME: u8 = 1;
const TAG_HELLO: u8 = 2;
const TAG_ROSTER: u8 = 3;
const TAG_REPAIR: u8 = 4;
const TAG_DIGEST: u8 = 5;
const TAG_PULL: u8 = 6;

/// A broadcast's id in digests and pulls: (the first 8 bytes of its origin's key, sequence
/// number). 16 bytes instead of 40; the frame itself still names its origin in full and is
/// checked against it.
pub(crate) type ShortId = (u64, u64);

/// The short form of an origin's key used in [`ShortId`]s.
pub(crate) fn origin_tag(origin: &PeerKey) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(origin.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(head)
}

/// Length of a signature on a frame.
pub(crate) const SIGNATURE_LEN: usize = 64;

/// What a frame carries and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// An application payload for every peer.
    Broadcast,
    /// An application payload for one peer.
    Direct(PeerKey),
    /// Acknowledges directed payloads to the peer that sent them.
    Ack(PeerKey),
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            Self::Broadcast => 1,
            Self::Direct(_) => 2,
            Self::Ack(_) => 3,
        }
    }

    /// The peer a directed frame or an ack is for.
    pub(crate) fn target(self) -> Option<PeerKey> {
        match self {
            Self::Broadcast => None,
            Self::Direct(target) | Self::Ack(target) => Some(target),
        }
    }
}

/// The signed part of a frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameId {
    pub(crate) kind: FrameKind,
    pub(crate) origin: PeerKey,
    pub(crate) seq: u64,
    /// The cell count the origin planned with.
    pub(crate) cells: u32,
    /// The origin's cell under `cells`.
    pub(crate) origin_cell: u32,
}

impl FrameId {
    /// The signed header bytes (everything but ttl, hops and the body).
    pub(crate) fn signed_header(&self) -> [u8; 81] {
        let mut out = [0u8; 81];
        let mut buf = &mut out[..];
        buf.put_u8(self.kind.byte());
        buf.put_slice(&self.origin);
        buf.put_u64(self.seq);
        buf.put_u32(self.cells);
        buf.put_u32(self.origin_cell);
        buf.put_slice(&self.kind.target().unwrap_or([0u8; 32]));
        out
    }

    /// Associated data for the sealed body: binds it to this frame's kind, origin, sequence
    /// number and target (at most 64 bytes, the envelope's limit).
    pub(crate) fn body_context(&self) -> [u8; 41] {
        let mut out = [0u8; 41];
        let mut buf = &mut out[..];
        buf.put_u8(self.kind.byte());
        buf.put_u64(self.seq);
        buf.put_slice(&self.kind.target().unwrap_or([0u8; 32]));
        out
    }
}

/// A frame as read off a link (signature not yet checked).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) ttl: u8,
    pub(crate) hops: u8,
    pub(crate) id: FrameId,
    pub(crate) signature: [u8; SIGNATURE_LEN],
    pub(crate) body: Bytes,
}

impl Frame {
    /// The frame as the next hop gets it: one less TTL, one more hop, nothing else changed.
    pub(crate) fn next_hop(&self) -> Frame {
        Frame {
            ttl: self.ttl.saturating_sub(1),
            hops: self.hops.saturating_add(1),
            id: self.id,
            signature: self.signature,
            body: self.body.clone(),
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        self.encode_tagged(false)
    }

    /// The frame as a repair message (`repair`: it came through repair, so whoever gets it
    /// next counts it as repaired too and forwards it without a backup delay).
    pub(crate) fn encode_tagged(&self, repair: bool) -> Bytes {
        let target_len = if self.id.kind.target().is_some() {
            32
        } else {
            0
        };
        let mut buf =
            BytesMut::with_capacity(4 + 48 + target_len + SIGNATURE_LEN + self.body.len());
        buf.put_u8(if repair { TAG_REPAIR } else { TAG_FRAME });
        buf.put_u8(self.ttl);
        buf.put_u8(self.hops);
        buf.put_u8(self.id.kind.byte());
        buf.put_slice(&self.id.origin);
        buf.put_u64(self.id.seq);
        buf.put_u32(self.id.cells);
        buf.put_u32(self.id.origin_cell);
        if let Some(target) = self.id.kind.target() {
            buf.put_slice(&target);
        }
        buf.put_slice(&self.signature);
        buf.put_slice(&self.body);
        buf.freeze()
    }
}

/// What a link exists for, as its initiator claims in its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HelloRole {
    /// Both ends are in the same cell.
    Intra,
    /// The sender bridges its cell `from_cell` to the receiver's cell `to_cell`, in `slot`.
    Bridge {
        from_cell: u32,
        to_cell: u32,
        slot: u8,
    },
}

/// The first message on a link, from each end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) role: HelloRole,
    pub(crate) cells: u32,
    /// Cell mates the sender knows: the other end sends its roster when it knows more.
    pub(crate) known: u32,
}

/// A decoded link message.
#[derive(Debug, Clone)]
pub(crate) enum LinkMessage {
    Frame(Frame),
    Hello(Hello),
    Roster {
        cells: u32,
        cell: u32,
        members: Vec<PeerKey>,
    },
    /// A frame answering a pull.
    Repair(Frame),
    Digest(Vec<ShortId>),
    Pull(Vec<ShortId>),
}

/// A stored frame message turned into a repair answer: tag `repair`, a fresh TTL of 2 (one
/// hop to the puller, one more into its cell) and one more hop. None if `message` is not a
/// frame.
pub(crate) fn repair_from(message: &[u8]) -> Option<Bytes> {
    if !matches!(message.first(), Some(&(TAG_FRAME | TAG_REPAIR))) || message.len() < 3 {
        return None;
    }
    let mut buf = BytesMut::from(message);
    let hops = buf.get(2).copied()?.saturating_add(1);
    if let Some(head) = buf.get_mut(..3) {
        head.copy_from_slice(&[TAG_REPAIR, 2, hops]);
    }
    Some(buf.freeze())
}

fn encode_ids(tag: u8, ids: &[ShortId]) -> Bytes {
    let count = ids.len().min(usize::from(u16::MAX));
    let mut buf = BytesMut::with_capacity(3 + 16 * count);
    buf.put_u8(tag);
    buf.put_u16(u16::try_from(count).unwrap_or(u16::MAX));
    for (origin, seq) in ids.iter().take(count) {
        buf.put_u64(*origin);
        buf.put_u64(*seq);
    }
    buf.freeze()
}

pub(crate) fn encode_digest(ids: &[ShortId]) -> Bytes {
    encode_ids(TAG_DIGEST, ids)
}

pub(crate) fn encode_pull(ids: &[ShortId]) -> Bytes {
    encode_ids(TAG_PULL, ids)
}

pub(crate) fn encode_hello(hello: &Hello) -> Bytes {
    let mut buf = BytesMut::with_capacity(19);
    buf.put_u8(TAG_HELLO);
    let (role, from, to, slot) = match hello.role {
        HelloRole::Intra => (0, 0, 0, 0),
        HelloRole::Bridge {
            from_cell,
            to_cell,
            slot,
        } => (1, from_cell, to_cell, slot),
    };
    buf.put_u8(role);
    buf.put_u32(hello.cells);
    buf.put_u32(from);
    buf.put_u32(to);
    buf.put_u8(slot);
    buf.put_u32(hello.known);
    buf.freeze()
}

pub(crate) fn encode_roster(cells: u32, cell: u32, members: &[PeerKey]) -> Bytes {
    let count = members.len().min(usize::from(u16::MAX));
    let mut buf = BytesMut::with_capacity(11 + 32 * count);
    buf.put_u8(TAG_ROSTER);
    buf.put_u32(cells);
    buf.put_u32(cell);
    buf.put_u16(u16::try_from(count).unwrap_or(u16::MAX));
    for member in members.iter().take(count) {
        buf.put_slice(member);
    }
    buf.freeze()
}

/// A cursor over a received message that fails with `Malformed` instead of panicking.
struct Reader {
    bytes: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, len: usize) -> Result<&[u8], MeshError> {
        let end = self
            .at
            .checked_add(len)
            .ok_or(MeshError::Malformed("length"))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(MeshError::Malformed("truncated"))?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MeshError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, MeshError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, MeshError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, MeshError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, MeshError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn rest(self) -> Bytes {
        self.bytes.slice(self.at.min(self.bytes.len())..)
    }
}

/// Longest lists a link message may carry (longer ones are refused as malformed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListLimits {
    /// Peers in a roster.
    pub(crate) roster: usize,
    /// Ids in a digest or a pull.
    pub(crate) ids: usize,
}

fn decode_ids(reader: &mut Reader, max: usize) -> Result<Vec<ShortId>, MeshError> {
    let count = usize::from(reader.u16()?);
    if count > max {
        return Err(MeshError::Malformed("id list too long"));
    }
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push((reader.u64()?, reader.u64()?));
    }
    Ok(ids)
}

/// An ack's plaintext: `[count 2][message 8]*`.
pub(crate) fn encode_acks(messages: &[u64]) -> BytesMut {
    let count = messages.len().min(usize::from(u16::MAX));
    let mut buf = BytesMut::with_capacity(2 + 8 * count);
    buf.put_u16(u16::try_from(count).unwrap_or(u16::MAX));
    for message in messages.iter().take(count) {
        buf.put_u64(*message);
    }
    buf
}

/// Reads an ack's plaintext: at most `max` message numbers, nothing after them.
pub(crate) fn decode_acks(plaintext: &Bytes, max: usize) -> Result<Vec<u64>, MeshError> {
    let mut reader = Reader {
        bytes: plaintext.clone(),
        at: 0,
    };
    let count = usize::from(reader.u16()?);
    if count > max {
        return Err(MeshError::Malformed("ack list too long"));
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        messages.push(reader.u64()?);
    }
    if !reader.rest().is_empty() {
        return Err(MeshError::Malformed("bytes after the acks"));
    }
    Ok(messages)
}

/// Decodes one link message. The frame body is a slice of `bytes`, not a copy.
pub(crate) fn decode(bytes: Bytes, limits: ListLimits) -> Result<LinkMessage, MeshError> {
    let mut reader = Reader { bytes, at: 0 };
    match reader.u8()? {
        TAG_DIGEST => Ok(LinkMessage::Digest(decode_ids(&mut reader, limits.ids)?)),
        TAG_PULL => Ok(LinkMessage::Pull(decode_ids(&mut reader, limits.ids)?)),
        tag @ (TAG_FRAME | TAG_REPAIR) => {
            let ttl = reader.u8()?;
            let hops = reader.u8()?;
            let kind_byte = reader.u8()?;
            let origin = reader.array::<32>()?;
            let seq = reader.u64()?;
            let cells = reader.u32()?;
            let origin_cell = reader.u32()?;
            let kind = match kind_byte {
                1 => FrameKind::Broadcast,
                2 => FrameKind::Direct(reader.array::<32>()?),
                3 => FrameKind::Ack(reader.array::<32>()?),
                _ => return Err(MeshError::Malformed("frame kind")),
            };
            let signature = reader.array::<SIGNATURE_LEN>()?;
            let frame = Frame {
                ttl,
                hops,
                id: FrameId {
                    kind,
                    origin,
                    seq,
                    cells,
                    origin_cell,
                },
                signature,
                body: reader.rest(),
            };
            Ok(if tag == TAG_REPAIR {
                LinkMessage::Repair(frame)
            } else {
                LinkMessage::Frame(frame)
            })
        }
        TAG_HELLO => {
            let role = reader.u8()?;
            let cells = reader.u32()?;
            let from_cell = reader.u32()?;
            let to_cell = reader.u32()?;
            let slot = reader.u8()?;
            let known = reader.u32()?;
            let role = match role {
                0 => HelloRole::Intra,
                1 => HelloRole::Bridge {
                    from_cell,
                    to_cell,
                    slot,
                },
                _ => return Err(MeshError::Malformed("hello role")),
            };
            Ok(LinkMessage::Hello(Hello { role, cells, known }))
        }
        TAG_ROSTER => {
            let cells = reader.u32()?;
            let cell = reader.u32()?;
            let count = usize::from(reader.u16()?);
            if count > limits.roster {
                return Err(MeshError::Malformed("roster too long"));
            }
            let mut members = Vec::with_capacity(count);
            for _ in 0..count {
                members.push(reader.array::<32>()?);
            }
            Ok(LinkMessage::Roster {
                cells,
                cell,
                members,
            })
        }
        _ => Err(MeshError::Malformed("message tag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(n: usize) -> ListLimits {
        ListLimits { roster: n, ids: n }
    }

    fn frame(kind: FrameKind, ttl: u8, hops: u8, body: &'static [u8]) -> Frame {
        Frame {
            ttl,
            hops,
            id: FrameId {
                kind,
                origin: [1; 32],
                seq: 77,
                cells: 10,
                origin_cell: 3,
            },
            signature: [5; 64],
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn frames_round_trip_with_the_body_unchanged() {
        let frame = frame(FrameKind::Direct([9; 32]), 4, 1, b"\x00\x01binary\xff");
        let LinkMessage::Frame(back) = decode(frame.encode(), limits(16)).unwrap() else {
            panic!("not a frame");
        };
        assert_eq!(back.id, frame.id);
        assert_eq!(back.body, frame.body);
        assert_eq!((back.ttl, back.hops, back.signature), (4, 1, [5; 64]));
    }

    #[test]
    fn rosters_longer_than_the_bound_are_refused() {
        let roster = encode_roster(1, 0, &[[1; 32], [2; 32], [3; 32]]);
        assert!(decode(roster.clone(), limits(3)).is_ok());
        assert!(matches!(
            decode(roster, limits(2)),
            Err(MeshError::Malformed(_))
        ));
    }

    #[test]
    fn a_repair_is_the_frame_with_a_fresh_ttl_and_one_more_hop() {
        let frame = frame(FrameKind::Broadcast, 1, 3, b"body");
        let repair = repair_from(&frame.encode()).unwrap();
        let LinkMessage::Repair(back) = decode(repair, limits(4)).unwrap() else {
            panic!("not a repair");
        };
        assert_eq!(
            (back.ttl, back.hops, back.id, back.body),
            (2, 4, frame.id, frame.body)
        );
        assert!(repair_from(&encode_digest(&[])).is_none());
    }

    #[test]
    fn digests_and_pulls_round_trip_and_are_bounded() {
        let ids = vec![(1, 9), (u64::MAX, u64::MAX)];
        let LinkMessage::Digest(back) = decode(encode_digest(&ids), limits(2)).unwrap() else {
            panic!("not a digest");
        };
        assert_eq!(back, ids);
        let LinkMessage::Pull(back) = decode(encode_pull(&ids), limits(2)).unwrap() else {
            panic!("not a pull");
        };
        assert_eq!(back, ids);
        assert!(matches!(
            decode(encode_pull(&ids), limits(1)),
            Err(MeshError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(Bytes::from(bytes), limits(8));
        }
    }
}
