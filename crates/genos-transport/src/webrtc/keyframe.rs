//! Key frame requests over RTCP: PLI out for a remote track, PLI/FIR in for a local one.
//!
//! webrtc's interceptor chain ends inbound RTCP at its last link unless an interceptor marks
//! a packet for the application; [`KeyframeFeedback`] marks the ones that carry a PLI or FIR,
//! so they reach the local track's event queue, where [`watch_local_track`] turns them into
//! [`KeyframeRequests`] signals. Receiver reports and the rest stay with the interceptors.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::media::KeyframeRequests;

/// Whether an RTCP packet asks for a key frame.
fn asks_for_keyframe(packet: &dyn rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// A PLI for the remote stream `media_ssrc`.
pub(super) fn picture_loss(media_ssrc: u32) -> Vec<Box<dyn rtcp::Packet>> {
    vec![Box::new(PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    })]
}

/// Marks inbound RTCP that carries a key frame request for the application; passes everything
/// through unchanged otherwise.
#[derive(Default)]
pub(super) struct KeyframeFeedback {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets
                .iter()
                .any(|packet| asks_for_keyframe(packet.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Reads a local track's RTCP events until the track is unbound (removed, or the connection
/// closed) and signals each key frame request for `ssrc`.
pub(super) fn watch_local_track(
    track: Arc<dyn TrackLocal>,
    ssrc: u32,
    requests: Arc<KeyframeRequests>,
) {
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            let for_us = packets.iter().any(|packet| {
                asks_for_keyframe(packet.as_ref()) && packet.destination_ssrc().contains(&ssrc)
            });
            if for_us {
                tracing::trace!(ssrc, "key frame requested");
                requests.signal();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::receiver_report::ReceiverReport;
    use rtc::shared::TransportContext;

    fn inbound(packets: Vec<Box<dyn rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn only_key_frame_requests_are_marked_for_the_application() {
        let mut feedback = KeyframeFeedback::default();
        let report: Box<dyn rtcp::Packet> = Box::new(ReceiverReport::default());
        let fir: Box<dyn rtcp::Packet> = Box::new(FullIntraRequest::default());
        feedback.handle_read(inbound(vec![report.clone()])).unwrap();
        feedback.handle_read(inbound(picture_loss(7))).unwrap();
        feedback.handle_read(inbound(vec![report, fir])).unwrap();
        let marked: Vec<bool> = std::iter::from_fn(|| feedback.poll_read())
            .map(|msg| msg.message.has(&Attribute::DeliverToApplication))
            .collect();
        assert_eq!(marked, [false, true, true]);
    }
}
