//! Whole samples from RTP packets: a bounded window ordered by sequence number, emitting a
//! frame once all its packets (same timestamp, head to marked tail) are in, and skipping a
//! frame whose packets do not come.
//!
//! webrtc's own `SampleBuilder` keeps two 65,536-slot tables per track (megabytes); this
//! window holds at most [`WINDOW`] packets.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use rtc::rtp;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

use crate::media::{Codec, ReceivedSample};

/// Packets held while waiting for a missing one.
const WINDOW: usize = 512;
/// Packets received past a gap before the frame behind it is given up (NACK retransmissions
/// arrive well within this on a live link).
const GAP_PATIENCE: usize = 96;
/// Largest frame assembled; a larger one is skipped as lost.
const MAX_FRAME: usize = crate::media::MAX_SAMPLE_SIZE;

/// Reassembles one track's frames.
pub(super) struct FrameAssembler {
    depacketizer: Box<dyn Depacketizer + Send>,
    /// Sequence number of the window's first slot.
    next_seq: Option<u16>,
    window: VecDeque<Option<rtp::Packet>>,
    /// Frames given up since the last one emitted.
    lost: u32,
    /// Timestamp of the last packet given up (to count frames, not packets).
    last_lost_timestamp: Option<u32>,
    /// Whether the last slot given up was a gap (a run of missing packets counts once).
    in_gap: bool,
}

impl FrameAssembler {
    pub(super) fn new(codec: Codec) -> Self {
        let depacketizer: Box<dyn Depacketizer + Send> = match codec {
            Codec::Opus => Box::new(OpusPacket),
            Codec::Vp8 => Box::new(Vp8Packet::default()),
        };
        Self {
            depacketizer,
            next_seq: None,
            window: VecDeque::new(),
            lost: 0,
            last_lost_timestamp: None,
            in_gap: false,
        }
    }

    /// Takes one packet; returns the frames it completed, in order.
    pub(super) fn push(&mut self, packet: rtp::Packet) -> Vec<ReceivedSample> {
        let seq = packet.header.sequence_number;
        let next = *self.next_seq.get_or_insert(seq);
        let mut offset = usize::from(seq.wrapping_sub(next));
        if offset >= 0x8000 {
            // Older than the window: a late duplicate or a frame already given up.
            return Vec::new();
        }
        if offset >= WINDOW {
            let shift = offset - (WINDOW - 1);
            if shift >= self.window.len() {
                // Past everything held: give it all up and start the window here.
                while !self.window.is_empty() {
                    self.give_up_first();
                }
                self.lost = self.lost.saturating_add(1);
                self.next_seq = Some(seq);
                offset = 0;
            } else {
                for _ in 0..shift {
                    self.give_up_first();
                }
                offset -= shift;
            }
        }
        if self.window.len() <= offset {
            self.window.resize(offset + 1, None);
        }
        if let Some(slot @ None) = self.window.get_mut(offset) {
            *slot = Some(packet);
        }
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame() {
            frames.push(frame);
        }
        frames
    }

    /// The first complete frame of the window, giving up broken ones on the way.
    fn next_frame(&mut self) -> Option<ReceivedSample> {
        loop {
            let first = self.window.front()?;
            let Some(head) = first else {
                if self.window.len() > GAP_PATIENCE {
                    self.give_up_first();
                    continue;
                }
                return None;
            };
            if !self.depacketizer.is_partition_head(&head.payload) {
                self.give_up_first();
                continue;
            }
            let timestamp = head.header.timestamp;
            let mut end = None;
            let mut broken = false;
            for (index, slot) in self.window.iter().enumerate() {
                let Some(packet) = slot else { break };
                if packet.header.timestamp != timestamp {
                    broken = true;
                    break;
                }
                if self
                    .depacketizer
                    .is_partition_tail(packet.header.marker, &packet.payload)
                {
                    end = Some(index);
                    break;
                }
            }
            match end {
                Some(last) => {
                    if let Some(frame) = self.take_frame(last, timestamp) {
                        return Some(frame);
                    }
                }
                None if broken || self.window.len() > GAP_PATIENCE => self.give_up_first(),
                None => return None,
            }
        }
    }

    /// Removes packets `0..=last` and joins their payloads; `None` if they do not parse.
    fn take_frame(&mut self, last: usize, timestamp: u32) -> Option<ReceivedSample> {
        let mut data = BytesMut::new();
        let mut valid = true;
        for _ in 0..=last {
            let packet = self.pop_first().flatten();
            if let Some(packet) = packet
                && valid
            {
                match self.depacketizer.depacketize(&packet.payload) {
                    Ok(part) if data.len() + part.len() <= MAX_FRAME => {
                        data.extend_from_slice(&part)
                    }
                    _ => valid = false,
                }
            }
        }
        if !valid {
            self.count_lost(timestamp);
            return None;
        }
        let lost_before = std::mem::take(&mut self.lost);
        self.last_lost_timestamp = None;
        self.in_gap = false;
        Some(ReceivedSample {
            data: Bytes::from(data),
            rtp_timestamp: timestamp,
            lost_before,
        })
    }

    fn pop_first(&mut self) -> Option<Option<rtp::Packet>> {
        let first = self.window.pop_front()?;
        self.next_seq = self.next_seq.map(|seq| seq.wrapping_add(1));
        Some(first)
    }

    /// Drops the first slot (a packet of a frame that cannot complete, or a gap).
    fn give_up_first(&mut self) {
        match self.pop_first() {
            Some(Some(packet)) => self.count_lost(packet.header.timestamp),
            // A gap: the frame it belonged to is counted when its other packets go, or, if
            // none came, as one frame lost.
            Some(None) => {
                if !self.in_gap && self.last_lost_timestamp.is_none() {
                    self.lost = self.lost.saturating_add(1);
                }
                self.in_gap = true;
            }
            None => {}
        }
    }

    fn count_lost(&mut self, timestamp: u32) {
        self.in_gap = false;
        if self.last_lost_timestamp != Some(timestamp) {
            self.lost = self.lost.saturating_add(1);
            self.last_lost_timestamp = Some(timestamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> rtp::Packet {
        rtp::Packet {
            header: rtp::header::Header {
                sequence_number: seq,
                timestamp,
                marker,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// VP8 payload descriptor as webrtc's payloader writes it (7-bit picture id); S bit on
    /// the first packet of a frame.
    fn vp8(start: bool, body: &[u8]) -> Vec<u8> {
        let mut payload = vec![if start { 0x90 } else { 0x80 }, 0x80, 0x01];
        payload.extend_from_slice(body);
        payload
    }

    #[test]
    fn a_frame_split_over_packets_comes_out_whole_even_reordered_and_across_seq_wrap() {
        let mut frames = FrameAssembler::new(Codec::Vp8);
        let parts = [
            packet(65_534, 90, false, &vp8(true, b"ab")),
            packet(0, 90, true, &vp8(false, b"ef")),
            packet(65_535, 90, false, &vp8(false, b"cd")),
        ];
        assert!(frames.push(parts[0].clone()).is_empty());
        assert!(frames.push(parts[1].clone()).is_empty());
        let out = frames.push(parts[2].clone());
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].data[..], b"abcdef");
        assert_eq!(out[0].rtp_timestamp, 90);
        assert_eq!(out[0].lost_before, 0);
        let next = frames.push(packet(1, 180, true, &vp8(true, b"g")));
        assert_eq!(&next[0].data[..], b"g");
    }

    #[test]
    fn a_frame_missing_a_packet_is_given_up_and_counted_and_later_frames_flow() {
        let mut frames = FrameAssembler::new(Codec::Vp8);
        frames.push(packet(10, 0, false, &vp8(true, b"a")));
        // seq 11 (the tail of frame 0) never comes.
        let mut out = Vec::new();
        for (seq, n) in (12u16..).zip(1..=GAP_PATIENCE as u32 + 2) {
            out.extend(frames.push(packet(seq, n * 3000, true, &vp8(true, &[n as u8]))));
        }
        assert!(!out.is_empty(), "frames after the gap never came out");
        assert_eq!(out[0].lost_before, 1);
        assert_eq!(out[0].rtp_timestamp, 3000);
        assert!(
            out.windows(2)
                .all(|w| w[0].rtp_timestamp < w[1].rtp_timestamp)
        );
    }

    #[test]
    fn duplicates_and_stale_packets_are_ignored_and_the_window_stays_bounded() {
        let mut frames = FrameAssembler::new(Codec::Opus);
        assert_eq!(frames.push(packet(5, 0, false, b"x")).len(), 1);
        assert!(frames.push(packet(5, 0, false, b"x")).is_empty());
        assert!(frames.push(packet(4, 0, false, b"y")).is_empty());
        // A jump far ahead: everything before it is given up, memory stays bounded.
        let out = frames.push(packet(5 + 10_000, 960, false, b"z"));
        assert_eq!(out.len(), 1);
        assert!(frames.window.len() <= WINDOW);
    }
}
