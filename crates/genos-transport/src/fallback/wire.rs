//! The fallback link's frames: one binary WebSocket message each.
//!
//! A client first sends [`Hello`]; the hub answers [`HUB_PAIRED`] once the other end of the
//! circuit is there, or [`HUB_REFUSED`] with a reason and closes. From then on the hub
//! forwards every message between the two ends unchanged, and only these [`Frame`]s travel.
//! The first byte is the type; integers are big-endian; every length is checked against the
//! message before it is read.

use bytes::{BufMut, Bytes, BytesMut};

use crate::Reliability;
use crate::media::Codec;

/// Protocol version carried in [`Hello`] and in the offer.
pub(crate) const VERSION: u8 = 1;

/// A circuit's id: random, chosen by the offerer, carried in the (sealed) offer.
pub(crate) type CircuitId = [u8; 16];
/// An opaque tag the hub counts circuits by (a room's topic hash, or zero).
pub(crate) type RoomTag = [u8; 16];

const HELLO: u8 = 0x01;
/// The hub paired the circuit: frames flow from now on.
pub(crate) const HUB_PAIRED: u8 = 0x02;
/// The hub refused the circuit; the rest of the message is the reason (UTF-8).
pub(crate) const HUB_REFUSED: u8 = 0x03;

const OPEN: u8 = 0x10;
const DATA: u8 = 0x11;
const CREDIT: u8 = 0x12;
const CLOSE_CHANNEL: u8 = 0x13;
const BYE: u8 = 0x14;
/// The type byte of [`Frame::Bye`] (the writer closes the socket after it).
pub(crate) const BYE_BYTE: u8 = BYE;
const TRACK_OPEN: u8 = 0x20;
const SAMPLE: u8 = 0x21;
const TRACK_END: u8 = 0x22;
const KEYFRAME: u8 = 0x23;

/// Largest token a [`Hello`] carries.
pub(crate) const MAX_TOKEN: usize = 512;

/// A client's first message to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) circuit: CircuitId,
    pub(crate) offerer: bool,
    pub(crate) room: RoomTag,
    pub(crate) token: String,
}

impl Hello {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(36 + self.token.len());
        out.put_u8(HELLO);
        out.put_u8(VERSION);
        out.put_u8(u8::from(self.offerer));
        out.put_slice(&self.circuit);
        out.put_slice(&self.room);
        out.put_u16(u16::try_from(self.token.len()).unwrap_or(u16::MAX));
        out.put_slice(self.token.as_bytes());
        out.freeze()
    }

    pub(crate) fn decode(message: &[u8]) -> Option<Self> {
        let mut r = Reader(message);
        if r.u8()? != HELLO || r.u8()? != VERSION {
            return None;
        }
        let offerer = match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let circuit = r.array()?;
        let room = r.array()?;
        let len = usize::from(r.u16()?);
        if len > MAX_TOKEN {
            return None;
        }
        let token = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        r.0.is_empty().then_some(Self {
            circuit,
            offerer,
            room,
            token,
        })
    }
}

/// What the two ends of a paired circuit send each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The sender opened a channel.
    Open {
        id: u32,
        reliability: Reliability,
        label: String,
    },
    /// One message on a channel.
    Data { id: u32, payload: Bytes },
    /// The receiver consumed `bytes` of a channel: the sender may send that much more.
    Credit { id: u32, bytes: u32 },
    /// The channel is closed (either side).
    CloseChannel { id: u32 },
    /// The connection is closed on purpose.
    Bye,
    /// The sender added a track; samples follow.
    TrackOpen {
        serial: u32,
        codec: Codec,
        id: String,
    },
    /// One media sample.
    Sample {
        serial: u32,
        rtp_timestamp: u32,
        data: Bytes,
    },
    /// The sender removed a track.
    TrackEnd { serial: u32 },
    /// The receiver of a track asks its sender for a key frame.
    Keyframe { serial: u32 },
}

fn codec_byte(codec: Codec) -> u8 {
    match codec {
        Codec::Opus => 1,
        Codec::Vp8 => 2,
    }
}

fn codec_of(byte: u8) -> Option<Codec> {
    match byte {
        1 => Some(Codec::Opus),
        2 => Some(Codec::Vp8),
        _ => None,
    }
}

impl Frame {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Self::Open {
                id,
                reliability,
                label,
            } => {
                out.reserve(6 + label.len());
                out.put_u8(OPEN);
                out.put_u32(*id);
                out.put_u8(match reliability {
                    Reliability::UnreliableUnordered => 1,
                    _ => 0,
                });
                out.put_slice(label.as_bytes());
            }
            Self::Data { id, payload } => {
                out.reserve(5 + payload.len());
                out.put_u8(DATA);
                out.put_u32(*id);
                out.put_slice(payload);
            }
            Self::Credit { id, bytes } => {
                out.put_u8(CREDIT);
                out.put_u32(*id);
                out.put_u32(*bytes);
            }
            Self::CloseChannel { id } => {
                out.put_u8(CLOSE_CHANNEL);
                out.put_u32(*id);
            }
            Self::Bye => out.put_u8(BYE),
            Self::TrackOpen { serial, codec, id } => {
                out.put_u8(TRACK_OPEN);
                out.put_u32(*serial);
                out.put_u8(codec_byte(*codec));
                out.put_slice(id.as_bytes());
            }
            Self::Sample {
                serial,
                rtp_timestamp,
                data,
            } => {
                out.reserve(9 + data.len());
                out.put_u8(SAMPLE);
                out.put_u32(*serial);
                out.put_u32(*rtp_timestamp);
                out.put_slice(data);
            }
            Self::TrackEnd { serial } => {
                out.put_u8(TRACK_END);
                out.put_u32(*serial);
            }
            Self::Keyframe { serial } => {
                out.put_u8(KEYFRAME);
                out.put_u32(*serial);
            }
        }
        out.freeze()
    }

    /// Decodes one frame; `None` for anything malformed. Payloads share `message`'s buffer.
    pub(crate) fn decode(message: &Bytes) -> Option<Self> {
        let mut r = Reader(message);
        let kind = r.u8()?;
        let frame = match kind {
            OPEN => {
                let id = r.u32()?;
                let reliability = match r.u8()? {
                    0 => Reliability::ReliableOrdered,
                    1 => Reliability::UnreliableUnordered,
                    _ => return None,
                };
                let label = std::str::from_utf8(r.rest()).ok()?.to_owned();
                Self::Open {
                    id,
                    reliability,
                    label,
                }
            }
            DATA => {
                let id = r.u32()?;
                Self::Data {
                    id,
                    payload: message.slice(5..),
                }
            }
            CREDIT => {
                let frame = Self::Credit {
                    id: r.u32()?,
                    bytes: r.u32()?,
                };
                r.end()?;
                frame
            }
            CLOSE_CHANNEL => {
                let frame = Self::CloseChannel { id: r.u32()? };
                r.end()?;
                frame
            }
            BYE => {
                r.end()?;
                Self::Bye
            }
            TRACK_OPEN => {
                let serial = r.u32()?;
                let codec = codec_of(r.u8()?)?;
                let id = std::str::from_utf8(r.rest()).ok()?.to_owned();
                Self::TrackOpen { serial, codec, id }
            }
            SAMPLE => {
                let serial = r.u32()?;
                let rtp_timestamp = r.u32()?;
                Self::Sample {
                    serial,
                    rtp_timestamp,
                    data: message.slice(9..),
                }
            }
            TRACK_END => {
                let frame = Self::TrackEnd { serial: r.u32()? };
                r.end()?;
                frame
            }
            KEYFRAME => {
                let frame = Self::Keyframe { serial: r.u32()? };
                r.end()?;
                frame
            }
            _ => return None,
        };
        Some(frame)
    }

    /// Whether a message from a client may be forwarded: the hub checks the type byte
    /// only (it cannot read payloads, which the room layer seals).
    pub(crate) fn is_peer_frame(message: &[u8]) -> bool {
        matches!(message.first(), Some(OPEN..=BYE | TRACK_OPEN..=KEYFRAME))
    }
}

/// A bounds-checked cursor.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// The offer an offerer emits: magic, version, circuit id.
pub(crate) const OFFER_MAGIC: &[u8; 4] = b"GFB\0";
/// The answer an answerer emits once it took the offer (the layer above learns the answerer
/// is there before the hub pairs them): magic, version, circuit id.
pub(crate) const ANSWER_MAGIC: &[u8; 4] = b"GFA\0";

fn encode_signal(magic: &[u8; 4], circuit: &CircuitId) -> Bytes {
    let mut out = BytesMut::with_capacity(magic.len() + 1 + circuit.len());
    out.put_slice(magic);
    out.put_u8(VERSION);
    out.put_slice(circuit);
    out.freeze()
}

fn decode_signal(magic: &[u8; 4], message: &[u8]) -> Option<CircuitId> {
    let mut r = Reader(message);
    if r.take(magic.len())? != magic || r.u8()? != VERSION {
        return None;
    }
    let circuit = r.array()?;
    r.end()?;
    Some(circuit)
}

pub(crate) fn encode_offer(circuit: &CircuitId) -> Bytes {
    encode_signal(OFFER_MAGIC, circuit)
}

pub(crate) fn decode_offer(message: &[u8]) -> Option<CircuitId> {
    decode_signal(OFFER_MAGIC, message)
}

pub(crate) fn encode_answer(circuit: &CircuitId) -> Bytes {
    encode_signal(ANSWER_MAGIC, circuit)
}

pub(crate) fn decode_answer(message: &[u8]) -> Option<CircuitId> {
    decode_signal(ANSWER_MAGIC, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Open {
                id: 7,
                reliability: Reliability::UnreliableUnordered,
                label: "chat".into(),
            },
            Frame::Data {
                id: 7,
                payload: Bytes::from_static(b"hello"),
            },
            Frame::Credit { id: 7, bytes: 5 },
            Frame::CloseChannel { id: 7 },
            Frame::Bye,
            Frame::TrackOpen {
                serial: 1,
                codec: Codec::Vp8,
                id: "cam".into(),
            },
            Frame::Sample {
                serial: 1,
                rtp_timestamp: 90_000,
                data: Bytes::from_static(b"frame"),
            },
            Frame::TrackEnd { serial: 1 },
            Frame::Keyframe { serial: 1 },
        ];
        for frame in frames {
            let encoded = frame.encode();
            assert!(Frame::is_peer_frame(&encoded));
            assert_eq!(Frame::decode(&encoded), Some(frame));
        }
    }

    #[test]
    fn hello_and_offer_round_trip_and_truncations_are_refused() {
        let hello = Hello {
            circuit: [3; 16],
            offerer: true,
            room: [9; 16],
            token: "secret".into(),
        };
        let encoded = hello.encode();
        assert_eq!(Hello::decode(&encoded), Some(hello));
        for cut in 0..encoded.len() {
            assert_eq!(Hello::decode(encoded.get(..cut).unwrap()), None);
        }
        assert!(!Frame::is_peer_frame(&encoded));
        let offer = encode_offer(&[5; 16]);
        assert_eq!(decode_offer(&offer), Some([5; 16]));
        assert_eq!(decode_offer(b"garbage"), None);
        assert_eq!(decode_answer(&encode_answer(&[6; 16])), Some([6; 16]));
        assert_eq!(decode_answer(&offer), None);
        let credit = Frame::Credit { id: 1, bytes: 2 }.encode();
        for cut in 0..credit.len() {
            assert_eq!(Frame::decode(&credit.slice(..cut)), None);
        }
    }
}
