//! The room's wire formats: what goes over signaling, and the sealed frames on a link.
//!
//! Signaling payloads and frame headers are postcard-encoded serde enums (docs/protocol.md
//! §3). Every frame is sealed with the room's data key ([`Purpose::Data`]); the associated
//! data binds the sender, the recipient and the frame's position on the link, so a frame
//! opens only on the link, at the place, it was sealed for: tampering, replay, reordering
//! and reflection all fail to open.

use bytes::{Bytes, BytesMut};
use genos_crypto::{Context, PeerId, Purpose, SealKey};
use genos_transport::Codec;
use serde::{Deserialize, Serialize};

use crate::{FrameError, RoomError};

/// Version of the room protocol; peers announcing another version are not dialled.
pub const PROTOCOL_VERSION: u16 = 1;

/// Label of the reliable, ordered transport channel a link carries.
pub(crate) const LINK_LABEL: &str = "genos-room/1";
/// Label of a link's unreliable, unordered transport channel (unreliable room channels).
pub(crate) const DATAGRAM_LABEL: &str = "genos-room/1/u";
/// Bytes before a datagram's envelope: its sequence number, in the clear (the envelope binds
/// it).
pub(crate) const DATAGRAM_SEQ_LEN: usize = 8;

/// What a peer announces on the room's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Presence {
    pub(crate) protocol: u16,
}

impl Presence {
    pub(crate) fn current() -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
        }
    }

    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// A message addressed to one peer over signaling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SignalMessage {
    /// "I am here and you are the one to dial": sent by the answering side when it notices a
    /// peer, so a newcomer is dialled at once rather than at the next announcement.
    Hello,
    /// A transport signal of dial attempt `dial` (chosen by the offerer).
    Transport { dial: u64, payload: Vec<u8> },
    /// "Not now": the answering side refused attempt `dial` because all its half-open
    /// slots are taken; the dialler retries within a second instead of timing out.
    Busy { dial: u64 },
}

impl SignalMessage {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// A frame header as it is encoded; a chunk's data follows it.
#[derive(Debug, Serialize, Deserialize)]
enum Header<'a> {
    Heartbeat,
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Bye,
    ByeAck,
    Chunk {
        #[serde(borrow)]
        channel: &'a str,
        message: u64,
        offset: u64,
        total: u64,
        #[serde(borrow)]
        meta: Option<&'a [u8]>,
    },
    /// A whole message of an unreliable channel; its data follows.
    Datagram {
        #[serde(borrow)]
        channel: &'a str,
        message: u64,
        #[serde(borrow)]
        meta: Option<&'a [u8]>,
    },
    /// (Cells rooms) one message of the cellular overlay; its bytes follow.
    Mesh,
    /// A media track the sender is about to add to this link: its id, codec and metadata.
    Track {
        #[serde(borrow)]
        id: &'a str,
        codec: u8,
        #[serde(borrow)]
        metadata: &'a [u8],
    },
}

/// A media track announced on a link before the transport adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrackAnnounce {
    pub(crate) id: String,
    pub(crate) codec: Codec,
    pub(crate) metadata: Bytes,
}

fn codec_number(codec: Codec) -> Option<u8> {
    match codec {
        Codec::Opus => Some(0),
        Codec::Vp8 => Some(1),
        _ => None,
    }
}

fn codec_of(number: u8) -> Option<Codec> {
    match number {
        0 => Some(Codec::Opus),
        1 => Some(Codec::Vp8),
        _ => None,
    }
}

/// A frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Heartbeat,
    Ping(u64),
    Pong(u64),
    Bye,
    ByeAck,
    Chunk(Chunk),
    /// A message of the cellular overlay (cells rooms).
    Mesh(Bytes),
    /// A media track the peer is adding.
    Track(TrackAnnounce),
}

/// A message of an unreliable channel, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub(crate) seq: u64,
    pub(crate) channel: String,
    pub(crate) message: u64,
    pub(crate) meta: Option<Bytes>,
    pub(crate) data: Bytes,
}

/// A piece of an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) channel: String,
    pub(crate) message: u64,
    pub(crate) offset: u64,
    pub(crate) total: u64,
    pub(crate) meta: Option<Bytes>,
    pub(crate) data: Bytes,
}

/// A control frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Heartbeat,
    Ping(u64),
    Pong(u64),
    Bye,
    ByeAck,
}

/// The chunk header to send; the data is passed beside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkHeader<'a> {
    pub(crate) channel: &'a str,
    pub(crate) message: u64,
    pub(crate) offset: u64,
    pub(crate) total: u64,
    pub(crate) meta: Option<&'a [u8]>,
}

/// Seals frames for one direction of one link.
#[derive(Clone)]
pub(crate) struct FrameCodec {
    key: SealKey,
    local: PeerId,
    remote: PeerId,
}

impl FrameCodec {
    pub(crate) fn new(key: SealKey, local: PeerId, remote: PeerId) -> Self {
        Self { key, local, remote }
    }

    /// Encodes a chunk header once: its length sizes the chunk, its bytes go into the frame.
    pub(crate) fn encode_chunk_header(header: ChunkHeader<'_>) -> Result<Vec<u8>, RoomError> {
        postcard::to_stdvec(&Header::from(header)).map_err(|e| RoomError::Encode(e.to_string()))
    }

    pub(crate) fn seal_control(&self, seq: u64, control: Control) -> Result<Bytes, RoomError> {
        let header = match control {
            Control::Heartbeat => Header::Heartbeat,
            Control::Ping(nonce) => Header::Ping { nonce },
            Control::Pong(nonce) => Header::Pong { nonce },
            Control::Bye => Header::Bye,
            Control::ByeAck => Header::ByeAck,
        };
        let buffer = SealKey::buffer(16);
        let buffer =
            postcard::to_extend(&header, buffer).map_err(|e| RoomError::Encode(e.to_string()))?;
        self.seal_buffer(seq, buffer)
    }

    /// Seals a chunk: a header from [`FrameCodec::encode_chunk_header`], then its data.
    pub(crate) fn seal_chunk(
        &self,
        seq: u64,
        encoded_header: &[u8],
        data: &[u8],
    ) -> Result<Bytes, RoomError> {
        self.seal_buffer(seq, plaintext(encoded_header, data))
    }

    /// Seals a message of the cellular overlay as frame `seq`.
    pub(crate) fn seal_mesh(&self, seq: u64, message: &[u8]) -> Result<Bytes, RoomError> {
        let header =
            postcard::to_stdvec(&Header::Mesh).map_err(|e| RoomError::Encode(e.to_string()))?;
        self.seal_buffer(seq, plaintext(&header, message))
    }

    /// Seals the announcement of a media track as frame `seq`.
    pub(crate) fn seal_track(&self, seq: u64, track: &TrackAnnounce) -> Result<Bytes, RoomError> {
        let codec = codec_number(track.codec).ok_or_else(|| {
            RoomError::Encode(format!("codec {} has no wire number", track.codec))
        })?;
        let header = Header::Track {
            id: &track.id,
            codec,
            metadata: &track.metadata,
        };
        let buffer = SealKey::buffer(track.id.len() + track.metadata.len() + 16);
        let buffer =
            postcard::to_extend(&header, buffer).map_err(|e| RoomError::Encode(e.to_string()))?;
        self.seal_buffer(seq, buffer)
    }

    /// Seals any plaintext as frame `seq`: an authentic frame this version may not read (a
    /// newer peer's frame kind). For tests and fuzzing.
    #[cfg(any(feature = "testing", feature = "fuzzing"))]
    pub(crate) fn seal_plain(&self, seq: u64, plain: &[u8]) -> Result<Bytes, RoomError> {
        self.seal_buffer(seq, plaintext(plain, &[]))
    }

    /// Seals `buffer` (reserved envelope header, then the plaintext) as frame `seq`.
    fn seal_buffer(&self, seq: u64, buffer: Vec<u8>) -> Result<Bytes, RoomError> {
        self.seal_at(&position(&self.remote, seq), buffer)
            .map(Bytes::from)
    }

    /// Seals `buffer` (reserved envelope header, then the plaintext) for the remote peer
    /// with `extra` as the context's extra part.
    fn seal_at(&self, extra: &[u8], mut buffer: Vec<u8>) -> Result<Vec<u8>, RoomError> {
        let context = Context::new(Purpose::Data, self.local).with_extra(extra);
        self.key
            .seal_in_place(&context, &mut buffer)
            .map_err(RoomError::Seal)?;
        Ok(buffer)
    }

    /// Opens what the remote peer sealed for us with `extra`; returns the plaintext.
    fn open_at(&self, extra: &[u8], mut buffer: BytesMut) -> Result<Bytes, FrameError> {
        let context = Context::new(Purpose::Data, self.remote).with_extra(extra);
        let range = self
            .key
            .open_in_place(&context, &mut buffer)
            .map_err(|_| FrameError::Unauthentic)?;
        Ok(buffer.freeze().slice(range))
    }

    /// Encodes a datagram's header once (its length bounds the payload).
    pub(crate) fn encode_datagram_header(
        channel: &str,
        message: u64,
        meta: Option<&[u8]>,
    ) -> Result<Vec<u8>, RoomError> {
        let header = Header::Datagram {
            channel,
            message,
            meta,
        };
        postcard::to_stdvec(&header).map_err(|e| RoomError::Encode(e.to_string()))
    }

    /// Seals datagram `seq`: its number in the clear, then the envelope, which binds the
    /// number, the sender and the recipient (and cannot pass for a reliable frame).
    pub(crate) fn seal_datagram(
        &self,
        seq: u64,
        encoded_header: &[u8],
        data: &[u8],
    ) -> Result<Bytes, RoomError> {
        let plain = plaintext(encoded_header, data);
        let buffer = self.seal_at(&datagram_position(&self.remote, seq), plain)?;
        let mut frame = Vec::with_capacity(DATAGRAM_SEQ_LEN + buffer.len());
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(&buffer);
        Ok(Bytes::from(frame))
    }

    /// Opens a datagram the remote peer sent to us (any sequence number; the caller checks
    /// it against replays).
    pub(crate) fn open_datagram(&self, frame: Bytes) -> Result<Datagram, FrameError> {
        let seq_bytes: [u8; DATAGRAM_SEQ_LEN] = frame
            .get(..DATAGRAM_SEQ_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(FrameError::Unauthentic)?;
        let seq = u64::from_be_bytes(seq_bytes);
        let buffer = BytesMut::from(frame.get(DATAGRAM_SEQ_LEN..).unwrap_or_default());
        let plain = self.open_at(&datagram_position(&self.local, seq), buffer)?;
        let (header, rest) = decode_header(&plain)?;
        match header {
            Header::Datagram {
                channel,
                message,
                meta,
            } => Ok(Datagram {
                seq,
                channel: channel.to_owned(),
                message,
                meta: meta.map(|m| plain.slice_ref(m)),
                data: plain.slice_ref(rest),
            }),
            _ => Err(FrameError::Malformed("not a datagram".into())),
        }
    }

    /// Opens frame number `seq` that the remote peer sent to us.
    pub(crate) fn open(&self, seq: u64, sealed: Bytes) -> Result<Frame, FrameError> {
        let buffer = match sealed.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        let plain = self.open_at(&position(&self.local, seq), buffer)?;
        let (header, rest) = decode_header(&plain)?;
        Ok(match header {
            Header::Heartbeat => Frame::Heartbeat,
            Header::Ping { nonce } => Frame::Ping(nonce),
            Header::Pong { nonce } => Frame::Pong(nonce),
            Header::Bye => Frame::Bye,
            Header::ByeAck => Frame::ByeAck,
            Header::Mesh => Frame::Mesh(plain.slice_ref(rest)),
            Header::Track {
                id,
                codec,
                metadata,
            } => {
                let codec = codec_of(codec)
                    .ok_or_else(|| FrameError::Malformed(format!("unknown codec {codec}")))?;
                if metadata.len() > crate::MAX_METADATA_LEN {
                    return Err(FrameError::Malformed("track metadata too large".into()));
                }
                if genos_transport::TrackSpec::new(id, codec)
                    .validate()
                    .is_err()
                {
                    return Err(FrameError::Malformed("bad track id".into()));
                }
                Frame::Track(TrackAnnounce {
                    id: id.to_owned(),
                    codec,
                    metadata: plain.slice_ref(metadata),
                })
            }
            Header::Datagram { .. } => {
                return Err(FrameError::Malformed(
                    "datagram on the reliable channel".into(),
                ));
            }
            Header::Chunk {
                channel,
                message,
                offset,
                total,
                meta,
            } => Frame::Chunk(Chunk {
                channel: channel.to_owned(),
                message,
                offset,
                total,
                meta: meta.map(|m| plain.slice_ref(m)),
                data: plain.slice_ref(rest),
            }),
        })
    }
}

impl<'a> From<ChunkHeader<'a>> for Header<'a> {
    fn from(h: ChunkHeader<'a>) -> Self {
        Header::Chunk {
            channel: h.channel,
            message: h.message,
            offset: h.offset,
            total: h.total,
            meta: h.meta,
        }
    }
}

/// A buffer to seal in place: room for the envelope header, then `header` and `data`.
fn plaintext(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut buffer = SealKey::buffer(header.len() + data.len());
    buffer.extend_from_slice(header);
    buffer.extend_from_slice(data);
    buffer
}

/// A plaintext's header and what follows it.
fn decode_header(plain: &Bytes) -> Result<(Header<'_>, &[u8]), FrameError> {
    postcard::take_from_bytes::<Header<'_>>(plain).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The extra context of a datagram: recipient id, sequence number and a marker, so a
/// datagram never opens as a reliable frame or the other way round.
fn datagram_position(recipient: &PeerId, seq: u64) -> [u8; 41] {
    let mut extra = [0u8; 41];
    extra[..40].copy_from_slice(&position(recipient, seq));
    extra[40] = b'u';
    extra
}

/// The extra context of a frame: recipient id and sequence number.
fn position(recipient: &PeerId, seq: u64) -> [u8; 40] {
    let mut extra = [0u8; 40];
    let (id, number) = extra.split_at_mut(32);
    id.copy_from_slice(recipient.as_bytes());
    number.copy_from_slice(&seq.to_be_bytes());
    extra
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (FrameCodec, FrameCodec) {
        let key = SealKey::generate();
        let a = PeerId::from_bytes([1; 32]);
        let b = PeerId::from_bytes([2; 32]);
        (
            FrameCodec::new(key.clone(), a, b),
            FrameCodec::new(key, b, a),
        )
    }

    #[test]
    fn chunks_and_controls_round_trip() {
        let (a, b) = pair();
        let header = ChunkHeader {
            channel: "files",
            message: 7,
            offset: 0,
            total: 5,
            meta: Some(b"name=x"),
        };
        let encoded = FrameCodec::encode_chunk_header(header).unwrap();
        let sealed = a.seal_chunk(0, &encoded, b"hello").unwrap();
        let Frame::Chunk(chunk) = b.open(0, sealed).unwrap() else {
            panic!("not a chunk")
        };
        assert_eq!(chunk.channel, "files");
        assert_eq!(chunk.message, 7);
        assert_eq!(chunk.meta.as_deref(), Some(&b"name=x"[..]));
        assert_eq!(&chunk.data[..], b"hello");
        let sealed = a.seal_control(1, Control::Ping(99)).unwrap();
        assert_eq!(b.open(1, sealed).unwrap(), Frame::Ping(99));
    }

    #[test]
    fn track_announcements_round_trip_and_bad_ones_are_rejected() {
        let (a, b) = pair();
        let announce = TrackAnnounce {
            id: "0123456789abcdef".into(),
            codec: Codec::Vp8,
            metadata: Bytes::from_static(b"camera"),
        };
        let sealed = a.seal_track(0, &announce).unwrap();
        assert_eq!(b.open(0, sealed).unwrap(), Frame::Track(announce.clone()));
        // An id that could not be a track id (it would go into SDP lines).
        let bad = TrackAnnounce {
            id: "a b\r\n".into(),
            ..announce.clone()
        };
        let sealed = a.seal_track(1, &bad).unwrap();
        assert!(matches!(b.open(1, sealed), Err(FrameError::Malformed(_))));
        // Metadata over the limit.
        let big = TrackAnnounce {
            metadata: Bytes::from(vec![0; crate::MAX_METADATA_LEN + 1]),
            ..announce
        };
        let sealed = a.seal_track(2, &big).unwrap();
        assert!(matches!(b.open(2, sealed), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn a_frame_opens_only_at_its_place_for_its_recipient() {
        let (a, b) = pair();
        let sealed = a.seal_control(3, Control::Heartbeat).unwrap();
        // Replayed or reordered: another position.
        assert_eq!(b.open(4, sealed.clone()), Err(FrameError::Unauthentic));
        // Reflected back to its sender.
        assert_eq!(a.open(3, sealed.clone()), Err(FrameError::Unauthentic));
        // Another room's key.
        let other = FrameCodec::new(
            SealKey::generate(),
            PeerId::from_bytes([2; 32]),
            PeerId::from_bytes([1; 32]),
        );
        assert_eq!(other.open(3, sealed.clone()), Err(FrameError::Unauthentic));
        assert_eq!(b.open(3, sealed).unwrap(), Frame::Heartbeat);
    }

    #[test]
    fn garbage_gives_typed_errors() {
        let (_, b) = pair();
        assert_eq!(
            b.open(0, Bytes::from_static(b"junk")),
            Err(FrameError::Unauthentic)
        );
        assert_eq!(b.open(0, Bytes::new()), Err(FrameError::Unauthentic));
        assert!(SignalMessage::decode(&[0xff, 0xff, 0xff]).is_none());
        assert!(Presence::decode(&[]).is_none());
    }

    #[test]
    fn datagrams_open_once_for_their_recipient_and_never_as_frames() {
        let (a, b) = pair();
        let header = FrameCodec::encode_datagram_header("pos", 3, Some(b"m")).unwrap();
        let sealed = a.seal_datagram(9, &header, b"xyz").unwrap();
        let got = b.open_datagram(sealed.clone()).unwrap();
        assert_eq!((got.seq, got.message), (9, 3));
        assert_eq!(got.channel, "pos");
        assert_eq!(&got.data[..], b"xyz");
        assert_eq!(got.meta.as_deref(), Some(&b"m"[..]));
        // Reflected, or with its number changed, it does not open.
        assert_eq!(
            a.open_datagram(sealed.clone()),
            Err(FrameError::Unauthentic)
        );
        let mut renumbered = sealed.to_vec();
        renumbered[7] ^= 1;
        assert_eq!(
            b.open_datagram(Bytes::from(renumbered)),
            Err(FrameError::Unauthentic)
        );
        // Not a reliable frame at any position, and a frame is not a datagram.
        let body = sealed.slice(DATAGRAM_SEQ_LEN..);
        assert_eq!(b.open(9, body), Err(FrameError::Unauthentic));
        let frame = a.seal_control(0, Control::Heartbeat).unwrap();
        assert!(b.open_datagram(frame).is_err());
        assert_eq!(b.open_datagram(Bytes::new()), Err(FrameError::Unauthentic));
    }

    #[test]
    fn header_size_bound_is_exact() {
        let header = ChunkHeader {
            channel: "c",
            message: u64::MAX,
            offset: u64::MAX,
            total: u64::MAX,
            meta: None,
        };
        let (a, b) = pair();
        let encoded = FrameCodec::encode_chunk_header(header).unwrap();
        let sealed = a.seal_chunk(0, &encoded, &[]).unwrap();
        assert_eq!(sealed.len(), encoded.len() + genos_crypto::OVERHEAD);
        assert!(matches!(b.open(0, sealed), Ok(Frame::Chunk(_))));
    }
}
