//! Fuzzing entry points (feature `fuzzing`), shared by the fuzz target in `fuzz/` and the
//! crate's tests: what a remote peer's WebRTC signals do to our side of a connection.
//!
//! [`signals`] plays a script of signaling and control-channel messages against a real
//! `rtc` peer connection (webrtc's sans-IO core, the one [`crate::webrtc`] drives, with the
//! same codecs and interceptors), following the rules of
//! [`WebRtcConnection::handle_signal`](crate::webrtc::WebRtcConnection) and of the control
//! channel: the size bound, the JSON decoders, offers only to an answerer, answers only to
//! an offerer, early candidates held within their bound and applied after the remote
//! description, renegotiation offers with the polite side's rollback. Everything the SDP
//! parser, the description checks and the candidate parser make of the input runs, with no
//! sockets and no runtime. The property is "no panic, every refusal an error".
//!
//! A script is one flag byte (bit 0: we are the offerer; bit 1: we are polite and have a
//! renegotiation offer of our own pending when a control offer arrives) followed by up to
//! [`MAX_MESSAGES`] messages separated by `0xFF` (a byte JSON text never holds), each a route
//! byte (even: it came by signaling; odd: on the control channel) and the message.

use std::time::{Duration, Instant};

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::sansio::Protocol;

use crate::webrtc::MAX_SIGNAL_LEN;
use crate::webrtc::media::media_engine;
use crate::webrtc::signal::{Control, Signal};
use crate::webrtc::{CONTROL_LABEL, MAX_EARLY_CANDIDATES};

/// Messages one script delivers at most.
pub const MAX_MESSAGES: usize = 32;
/// Separates a script's messages.
pub const SEPARATOR: u8 = 0xFF;
/// Outputs drained after each message at most (the peer connection's queues are bounded by
/// what one description can ask for; this keeps a pathological one from spinning).
const MAX_DRAIN: usize = 4_096;

/// What a script reached, so a test can tell the honest path works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalStats {
    /// Messages that decoded as a signal or a control message.
    pub decoded: usize,
    /// Remote descriptions the peer connection accepted.
    pub descriptions_applied: usize,
    /// Answers we created and applied locally.
    pub answers_made: usize,
    /// Remote candidates the peer connection accepted.
    pub candidates_added: usize,
    /// Messages refused with an error (any layer).
    pub refused: usize,
}

/// Our side of the connection under test.
struct Side {
    pc: RTCPeerConnection,
    offerer: bool,
    polite: bool,
    remote_set: bool,
    early: Vec<RTCIceCandidateInit>,
    now: Instant,
    stats: SignalStats,
}

/// Plays one script; see the module docs for its format.
pub fn signals(data: &[u8]) -> SignalStats {
    let Some((&flags, rest)) = data.split_first() else {
        return SignalStats::default();
    };
    let Some(mut side) = Side::new(flags & 1 == 1, flags & 2 == 2) else {
        return SignalStats::default();
    };
    for message in rest.split(|&b| b == SEPARATOR).take(MAX_MESSAGES) {
        side.deliver(message);
        side.now += Duration::from_millis(10);
        side.drain();
    }
    side.stats
}

impl Side {
    fn new(offerer: bool, polite: bool) -> Option<Self> {
        let now = Instant::now();
        let mut pc = peer_connection(now)?;
        if offerer {
            make_offer(&mut pc, now)?;
        }
        Some(Self {
            pc,
            offerer,
            polite,
            remote_set: false,
            early: Vec::new(),
            now,
            stats: SignalStats::default(),
        })
    }

    fn deliver(&mut self, message: &[u8]) {
        let Some((&route, message)) = message.split_first() else {
            return;
        };
        if message.len() > MAX_SIGNAL_LEN {
            self.stats.refused += 1;
            return;
        }
        let outcome = if route % 2 == 0 {
            match Signal::decode(message) {
                Ok(signal) => {
                    self.stats.decoded += 1;
                    self.on_signal(signal)
                }
                Err(_) => Err(()),
            }
        } else {
            match Control::decode(message) {
                Ok(control) => {
                    self.stats.decoded += 1;
                    self.on_control(control)
                }
                Err(_) => Err(()),
            }
        };
        if outcome.is_err() {
            self.stats.refused += 1;
        }
    }

    fn on_signal(&mut self, signal: Signal) -> Result<(), ()> {
        match signal {
            Signal::Offer { sdp } if !self.offerer && !self.remote_set => {
                let offer = RTCSessionDescription::offer(sdp).map_err(drop)?;
                self.apply_remote(offer)?;
                self.answer()
            }
            Signal::Answer { sdp } if self.offerer && !self.remote_set => {
                let answer = RTCSessionDescription::answer(sdp).map_err(drop)?;
                self.apply_remote(answer)
            }
            Signal::Candidate { candidate } => {
                let init = candidate.into();
                if self.remote_set {
                    self.add_candidate(init)
                } else if self.early.len() < MAX_EARLY_CANDIDATES {
                    self.early.push(init);
                    Ok(())
                } else {
                    Err(())
                }
            }
            _ => Err(()),
        }
    }

    fn on_control(&mut self, control: Control) -> Result<(), ()> {
        match control {
            Control::Offer { sdp } if self.remote_set => {
                if self.polite {
                    // Our own renegotiation offer collides: roll it back, as the polite
                    // side does, then answer theirs.
                    if let Ok(offer) = self.pc.create_offer(None) {
                        let _ = self.pc.set_local_description(self.now, offer);
                    }
                    let rollback = RTCSessionDescription::rollback(None).map_err(drop)?;
                    self.pc
                        .set_local_description(self.now, rollback)
                        .map_err(drop)?;
                }
                let offer = RTCSessionDescription::offer(sdp).map_err(drop)?;
                self.apply_remote(offer)?;
                self.answer()
            }
            Control::Answer { sdp } if self.remote_set => {
                if self.pc.pending_local_description().is_none() {
                    return Err(());
                }
                let answer = RTCSessionDescription::answer(sdp).map_err(drop)?;
                self.apply_remote(answer)
            }
            Control::Applied { .. } | Control::Ended { .. } => Ok(()),
            _ => Err(()),
        }
    }

    fn apply_remote(&mut self, description: RTCSessionDescription) -> Result<(), ()> {
        let _ = crate::webrtc::advertised_max_message(&description.sdp);
        self.pc
            .set_remote_description(self.now, description)
            .map_err(drop)?;
        self.stats.descriptions_applied += 1;
        if !self.remote_set {
            self.remote_set = true;
            for candidate in std::mem::take(&mut self.early) {
                let _ = self.add_candidate(candidate);
            }
        }
        Ok(())
    }

    fn answer(&mut self) -> Result<(), ()> {
        let answer = self.pc.create_answer(None).map_err(drop)?;
        self.pc
            .set_local_description(self.now, answer)
            .map_err(drop)?;
        self.stats.answers_made += 1;
        Ok(())
    }

    fn add_candidate(&mut self, candidate: RTCIceCandidateInit) -> Result<(), ()> {
        self.pc.add_remote_candidate(candidate).map_err(drop)?;
        self.stats.candidates_added += 1;
        Ok(())
    }

    /// Lets the peer connection act on what it was given, as the driver would.
    fn drain(&mut self) {
        let _ = self.pc.handle_timeout(self.now);
        for _ in 0..MAX_DRAIN {
            let wrote = self.pc.poll_write().is_some();
            let evented = self.pc.poll_event().is_some();
            if !wrote && !evented {
                break;
            }
        }
    }
}

/// Honest scripts: what a genos peer sends, for seeds and tests. Each is a complete script
/// (flag byte included).
pub fn honest_scripts() -> Vec<Vec<u8>> {
    let mut scripts = Vec::new();
    let candidates = [
        "candidate:1966762133 1 udp 2130706431 127.0.0.1 50000 typ host",
        "candidate:2 1 udp 1694498815 203.0.113.7 61000 typ srflx raddr 10.0.0.2 rport 50000",
        "candidate:3 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active",
        "candidate:4 1 udp 41885439 198.51.100.9 3478 typ relay raddr 203.0.113.7 rport 61000",
    ];
    let candidate_messages: Vec<Vec<u8>> = candidates
        .iter()
        .map(|line| {
            routed(
                SIGNALING,
                format!(
                    r#"{{"type":"candidate","candidate":{{"candidate":"{line}","sdpMid":"0","sdpMLineIndex":0}}}}"#
                ),
            )
        })
        .collect();
    // We answer an honest offer, with candidates before and after it.
    if let Some(offer) = honest_description(true) {
        let offer_message = json_signal(SIGNALING, "offer", &offer);
        let renegotiation = json_signal(CONTROL, "offer", &offer);
        let mut script = vec![0u8];
        // One candidate before the offer (held early), the rest after it.
        let (early, late) = candidate_messages.split_at(1);
        let mut messages = early.to_vec();
        messages.push(offer_message.clone());
        messages.extend(late.iter().cloned());
        messages.push(renegotiation);
        messages.push(routed(CONTROL, r#"{"type":"applied","answers":1}"#.into()));
        messages.push(routed(CONTROL, r#"{"type":"ended","id":"a1"}"#.into()));
        join(&mut script, &messages);
        scripts.push(script);
        let mut polite = vec![2u8];
        join(
            &mut polite,
            &[offer_message, json_signal(CONTROL, "offer", &offer)],
        );
        scripts.push(polite);
    }
    // We offer; an honest answer comes back.
    if let Some(answer) = honest_description(false) {
        let mut script = vec![1u8];
        let mut messages = vec![json_signal(SIGNALING, "answer", &answer)];
        messages.extend(candidate_messages.iter().cloned());
        messages.push(json_signal(CONTROL, "answer", &answer));
        join(&mut script, &messages);
        scripts.push(script);
    }
    scripts
}

/// Route bytes of a script's messages.
const SIGNALING: u8 = 0;
const CONTROL: u8 = 1;

fn routed(route: u8, message: String) -> Vec<u8> {
    let mut routed = vec![route];
    routed.extend_from_slice(message.as_bytes());
    routed
}

fn json_signal(route: u8, kind: &str, sdp: &str) -> Vec<u8> {
    let quoted = serde_json::to_string(sdp).unwrap_or_default();
    routed(route, format!(r#"{{"type":"{kind}","sdp":{quoted}}}"#))
}

fn join(script: &mut Vec<u8>, messages: &[Vec<u8>]) {
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            script.push(SEPARATOR);
        }
        script.extend_from_slice(message);
    }
}

/// A peer connection with the transport's codecs and interceptors.
fn peer_connection(now: Instant) -> Option<RTCPeerConnection> {
    let (engine, registry) = media_engine(false).ok()?;
    RTCPeerConnectionBuilder::new()
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .ok()
}

/// Makes and applies an offer as the transport does: the control channel first, so the
/// offer has SCTP.
fn make_offer(pc: &mut RTCPeerConnection, now: Instant) -> Option<RTCSessionDescription> {
    pc.create_data_channel(CONTROL_LABEL, None).ok()?;
    let offer = pc.create_offer(None).ok()?;
    pc.set_local_description(now, offer.clone()).ok()?;
    Some(offer)
}

/// An honest peer's offer, or its answer to another honest peer's offer.
fn honest_description(want_offer: bool) -> Option<String> {
    let now = Instant::now();
    let mut offerer = peer_connection(now)?;
    let made = make_offer(&mut offerer, now)?;
    if want_offer {
        return Some(made.sdp);
    }
    let mut answerer = peer_connection(now)?;
    answerer
        .set_remote_description(now, RTCSessionDescription::offer(made.sdp).ok()?)
        .ok()?;
    let answer = answerer.create_answer(None).ok()?;
    answerer.set_local_description(now, answer.clone()).ok()?;
    Some(answer.sdp)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn honest_scripts_connect_both_roles() {
        let scripts = honest_scripts();
        assert_eq!(scripts.len(), 3, "every honest script was made");
        let answering = signals(&scripts[0]);
        assert_eq!(answering.descriptions_applied, 2, "{answering:?}");
        assert_eq!(answering.answers_made, 2, "{answering:?}");
        assert!(answering.candidates_added >= 3, "{answering:?}");
        let polite = signals(&scripts[1]);
        assert_eq!(polite.descriptions_applied, 2, "{polite:?}");
        let offering = signals(&scripts[2]);
        assert_eq!(offering.descriptions_applied, 1, "{offering:?}");
        assert!(offering.candidates_added >= 3, "{offering:?}");
        // The second answer comes to no pending offer and is refused.
        assert_eq!(offering.refused, 1, "{offering:?}");
    }

    #[test]
    fn oversized_and_garbage_messages_are_refused() {
        let mut script = vec![0u8];
        script.extend(std::iter::repeat_n(b'x', MAX_SIGNAL_LEN + 2));
        script.push(SEPARATOR);
        script.extend_from_slice(b"\0{\"type\":\"offer\",\"sdp\":\"v=0\\r\\nm=x\"}");
        script.push(SEPARATOR);
        script.extend_from_slice(b"\0{\"type\":\"answer\",\"sdp\":\"\"}");
        let stats = signals(&script);
        assert_eq!(stats.refused, 3, "{stats:?}");
        assert_eq!(stats.descriptions_applied, 0);
    }

    /// Honest scripts with bytes changed, cut or repeated: no panic (the fuzz target's
    /// property, kept in every test run).
    #[test]
    fn mutated_honest_scripts_never_panic() {
        let scripts = honest_scripts();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5167);
        for round in 0..300 {
            let mut script = scripts[round % scripts.len()].clone();
            for _ in 0..rng.random_range(1..8) {
                let len = script.len();
                match rng.random_range(0..4) {
                    0 => script[rng.random_range(1..len)] = rng.random(),
                    1 => script.truncate(rng.random_range(1..len)),
                    2 => {
                        let at = rng.random_range(1..len);
                        let piece = script[at..(at + 40).min(len)].to_vec();
                        script.splice(at..at, piece);
                    }
                    _ => script[0] = rng.random(),
                }
            }
            signals(&script);
        }
    }
}

/// What one input made of the fallback link's decoders.
#[cfg(feature = "fallback")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackStats {
    /// Messages that decoded as a hello (what the hub reads first).
    pub hellos: usize,
    /// Messages that decoded as a peer frame (what an end reads from the other).
    pub frames: usize,
    /// Messages that decoded as an offer or an answer (what the room relays).
    pub signals: usize,
}

/// Feeds every message of `data` to what a fallback link decodes from outside (the hub's
/// hello, the ends' frames, the offer and answer signals). `data` is a sequence of messages,
/// each a big-endian `u16` length and that many bytes (a short tail is one more message).
/// Properties: no panic; whatever decodes re-encodes to the same bytes (one encoding per
/// meaning), and the hub forwards exactly the messages that decode as frames' types.
#[cfg(feature = "fallback")]
pub fn fallback_messages(data: &[u8]) -> FallbackStats {
    use crate::fallback::wire::{self, Frame, Hello};

    let mut stats = FallbackStats::default();
    let mut rest = data;
    while !rest.is_empty() {
        let (message, tail) = match rest {
            [high, low, tail @ ..] => {
                let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
                tail.split_at(len)
            }
            short => (short, &[][..]),
        };
        rest = tail;
        let bytes = bytes::Bytes::copy_from_slice(message);
        if let Some(hello) = Hello::decode(message) {
            assert_eq!(hello.encode(), bytes, "a hello has one encoding");
            stats.hellos += 1;
        }
        if let Some(frame) = Frame::decode(&bytes) {
            assert_eq!(frame.encode(), bytes, "a frame has one encoding");
            assert!(
                Frame::is_peer_frame(message),
                "the hub forwards every frame"
            );
            stats.frames += 1;
        }
        for circuit in [wire::decode_offer(message), wire::decode_answer(message)]
            .into_iter()
            .flatten()
        {
            stats.signals += 1;
            let again = [wire::encode_offer(&circuit), wire::encode_answer(&circuit)];
            assert!(again.iter().any(|signal| signal == &bytes));
        }
    }
    stats
}

/// Honest fallback messages in the format of [`fallback_messages`]: a hello, every frame
/// type, an offer and an answer (for the fuzz target's kept inputs and the tests).
#[cfg(feature = "fallback")]
pub fn honest_fallback_messages() -> Vec<u8> {
    use crate::fallback::wire::{self, Frame, Hello};
    use crate::{Codec, Reliability};

    let hello = Hello {
        circuit: [7; 16],
        offerer: true,
        room: [1; 16],
        token: "token".into(),
    };
    let mut messages = vec![
        hello.encode(),
        Frame::Open {
            id: 2,
            reliability: Reliability::ReliableOrdered,
            label: "genos-room/1".into(),
        }
        .encode(),
        Frame::Data {
            id: 2,
            payload: bytes::Bytes::from_static(b"sealed frame"),
        }
        .encode(),
        Frame::Credit { id: 2, bytes: 12 }.encode(),
        Frame::TrackOpen {
            serial: 1,
            codec: Codec::Vp8,
            id: "cam".into(),
        }
        .encode(),
        Frame::Sample {
            serial: 1,
            rtp_timestamp: 3000,
            data: bytes::Bytes::from_static(b"vp8"),
        }
        .encode(),
        Frame::Keyframe { serial: 1 }.encode(),
        Frame::TrackEnd { serial: 1 }.encode(),
        Frame::CloseChannel { id: 2 }.encode(),
        Frame::Bye.encode(),
    ];
    messages.push(wire::encode_offer(&[7; 16]));
    messages.push(wire::encode_answer(&[7; 16]));
    let mut out = Vec::new();
    for message in messages {
        out.extend_from_slice(
            &u16::try_from(message.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&message);
    }
    out
}

#[cfg(all(test, feature = "fallback"))]
mod fallback_tests {
    use super::*;

    #[test]
    fn honest_fallback_messages_decode_and_garbage_does_not_panic() {
        let stats = fallback_messages(&honest_fallback_messages());
        assert_eq!(stats.hellos, 1);
        assert_eq!(stats.frames, 9);
        assert_eq!(stats.signals, 2);
        for cut in 0..64 {
            let mut noisy = honest_fallback_messages();
            noisy.truncate(noisy.len() - cut);
            if let Some(byte) = noisy.get_mut(cut * 3) {
                *byte ^= 0x5a;
            }
            let _ = fallback_messages(&noisy);
        }
    }
}
