//! Directed payloads that arrive, or are reported lost: end-to-end acknowledgements.
//!
//! A directed frame crosses up to three peers (a cell mate or a bridge, a remote bridge
//! end), any of which may have crashed without anyone noticing yet (a room notices in
//! seconds), and forwarders keep nothing. So the origin keeps each directed payload until
//! its target acknowledges it, and sends it again after `direct_retry` (doubling, at most
//! eight times that) over more and other paths, until `direct_give_up`; then it reports
//! [`OverlayEvent::DirectFailed`].
//!
//! A resend is a new frame (new sequence number, seal and signature): forwarders drop frames
//! they have seen, so the same frame would die at the first forwarder that passed on the
//! lost copy. The payload carries a message number its resends share; the target delivers
//! each number once (a window of numbers per origin, like the window of frame ids) and
//! acknowledges every copy, so a lost ack costs a resend, never a second delivery. Acks are
//! frames too (kind `Ack`, signed by the target, sealed for the origin, routed like directed
//! frames), gathered for `ack_delay` so a stream of payloads costs one ack per batch.
//!
//! Bounds: the payloads awaiting acks span at most `direct_window` message numbers and
//! hold at most `max_unacked_bytes`; sending beyond either gives up the oldest. The span is
//! also why a target's window of delivered numbers never refuses a resend as too old: every
//! number the origin still sends lies within the window of the newest it ever sent.

use super::*;

/// Message numbers in one ack frame at most; a target owing more sends at once.
pub(super) const MAX_ACK_IDS: usize = 64;
/// Origins owed acks at once at most; at the bound every owed ack goes out at once.
const MAX_ACK_ORIGINS: usize = 256;
/// The resend interval grows to at most this multiple of `direct_retry`.
const MAX_RETRY_FACTOR: u32 = 8;

/// A directed payload awaiting its ack.
#[derive(Debug)]
struct Unacked {
    target: PeerKey,
    meta: Bytes,
    payload: Bytes,
    first_sent: Instant,
    /// Resends so far.
    resends: u32,
}

impl Unacked {
    fn bytes(&self) -> usize {
        self.meta.len() + self.payload.len()
    }
}

/// The directed-delivery state of one peer: what it sent and awaits acks for, what it
/// delivered (to deliver each message once), and the acks it owes.
#[derive(Debug)]
pub(super) struct DirectState {
    next_message: u64,
    unacked: BTreeMap<u64, Unacked>,
    unacked_bytes: usize,
    /// When each unacked message is due to be resent; entries for messages acked since
    /// stay until their time (the heap is rebuilt if they pile up).
    resend_order: BinaryHeap<Reverse<(Instant, u64)>>,
    delivered: SeenFrames,
    owed: BTreeMap<PeerKey, Vec<u64>>,
    acks_due: Option<Instant>,
}

impl DirectState {
    pub(super) fn new(config: &OverlayConfig, hash_seed: u64) -> Self {
        Self {
            next_message: config.first_seq,
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            resend_order: BinaryHeap::new(),
            delivered: SeenFrames::new(config.max_origins, config.direct_window, hash_seed),
            owed: BTreeMap::new(),
            acks_due: None,
        }
    }

    pub(super) fn next_wake(&self) -> Option<Instant> {
        let resend = self.resend_order.peek().map(|Reverse((due, _))| *due);
        [resend, self.acks_due].into_iter().flatten().min()
    }

    /// The span of message numbers kept (the window, rounded as the targets round it).
    fn span(config: &OverlayConfig) -> u64 {
        u64::from(config.direct_window.clamp(64, 65_536).div_ceil(64) * 64)
    }
}

impl<A: FrameAuth> Overlay<A> {
    /// Sends `payload` to `target` and keeps it until acknowledged.
    pub(super) fn send_direct(
        &mut self,
        target: PeerKey,
        meta: Bytes,
        payload: Bytes,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), MeshError> {
        if self.phase != Phase::Running {
            return Err(MeshError::NotRunning);
        }
        // Refused before it takes a number.
        self.check_len(&meta, &payload)?;
        let message = self.direct.next_message;
        self.direct.next_message += 1;
        let span = DirectState::span(&self.config);
        while let Some((&oldest, _)) = self.direct.unacked.first_key_value() {
            if message - oldest < span {
                break;
            }
            self.give_up_direct(oldest, out);
        }
        let entry = Unacked {
            target,
            meta,
            payload,
            first_sent: now,
            resends: 0,
        };
        self.direct.unacked_bytes += entry.bytes();
        self.direct.unacked.insert(message, entry);
        while self.direct.unacked_bytes > self.config.max_unacked_bytes
            && self.direct.unacked.len() > 1
        {
            let Some((&oldest, _)) = self.direct.unacked.first_key_value() else {
                break;
            };
            self.give_up_direct(oldest, out);
        }
        self.transmit_direct(message, now, out);
        self.schedule_resend(message, now);
        Ok(())
    }

    /// Sends (again) the kept payload `message` as a new frame.
    fn transmit_direct(&mut self, message: u64, now: Instant, out: &mut Vec<Output>) {
        let Some(entry) = self.direct.unacked.get(&message) else {
            return;
        };
        let (target, resends) = (entry.target, entry.resends);
        let plaintext = match self.plaintext(Some(message), &entry.meta, &entry.payload) {
            Ok(plaintext) => plaintext,
            Err(_) => return,
        };
        // Sealing fails only for a target key that is no key: the resends fail alike
        // until the payload is given up.
        let Ok(frame) = self.new_frame(FrameKind::Direct(target), &plaintext, now) else {
            return;
        };
        // Each resend widens the net: two paths, then three, then four.
        let resends = usize::try_from(resends).unwrap_or(usize::MAX);
        let paths = 2 + resends.min(2);
        if !self.route_direct(&frame, target, self.me, paths, resends, out) {
            self.metrics.direct_unroutable += 1;
        }
    }

    fn schedule_resend(&mut self, message: u64, now: Instant) {
        let Some(entry) = self.direct.unacked.get(&message) else {
            return;
        };
        let factor = 1u32 << entry.resends.min(MAX_RETRY_FACTOR.trailing_zeros());
        let due = (now + self.config.direct_retry * factor)
            .min(entry.first_sent + self.config.direct_give_up);
        let heap = &mut self.direct.resend_order;
        if heap.len() >= 2 * self.direct.unacked.len() + 64 {
            let unacked = &self.direct.unacked;
            heap.retain(|Reverse((_, message))| unacked.contains_key(message));
        }
        heap.push(Reverse((due.max(now), message)));
    }

    fn give_up_direct(&mut self, message: u64, out: &mut Vec<Output>) {
        if let Some(entry) = self.direct.unacked.remove(&message) {
            self.direct.unacked_bytes -= entry.bytes();
            self.metrics.direct_failed += 1;
            out.push(Output::Event(OverlayEvent::DirectFailed {
                target: entry.target,
                message,
                meta: entry.meta,
            }));
        }
    }

    /// Resends what is due, gives up what waited too long, sends the acks owed.
    pub(super) fn run_direct(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.direct.acks_due.is_some_and(|due| now >= due) {
            self.flush_acks(now, out);
        }
        while let Some(Reverse((due, message))) = self.direct.resend_order.peek().copied() {
            if due > now {
                break;
            }
            self.direct.resend_order.pop();
            let Some(entry) = self.direct.unacked.get_mut(&message) else {
                continue;
            };
            if now >= entry.first_sent + self.config.direct_give_up {
                self.give_up_direct(message, out);
                continue;
            }
            entry.resends += 1;
            self.metrics.direct_resent += 1;
            self.transmit_direct(message, now, out);
            self.schedule_resend(message, now);
        }
    }

    /// A directed frame or an ack for this peer (signature checked, id new).
    pub(super) fn on_frame_for_me(
        &mut self,
        from: PeerKey,
        frame: &Frame,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        let Some(plaintext) = self.open_sealed(frame, true) else {
            self.drop_frame(from, DropReason::Unopenable, out);
            return;
        };
        let origin = frame.id.origin;
        match frame.id.kind {
            FrameKind::Ack(_) => match wire::decode_acks(&plaintext, MAX_ACK_IDS) {
                Ok(messages) => self.on_acks(origin, &messages),
                Err(_) => self.drop_frame(from, DropReason::Malformed, out),
            },
            _ => {
                let opened = plaintext
                    .get(..8)
                    .and_then(|head| head.try_into().ok())
                    .map(u64::from_be_bytes)
                    .zip(Self::split_meta(&plaintext.slice(8.min(plaintext.len())..)));
                let Some((message, (meta, payload))) = opened else {
                    self.drop_frame(from, DropReason::Malformed, out);
                    return;
                };
                match self.direct.delivered.check(&origin, message) {
                    Ok(()) => {
                        self.direct.delivered.insert(&origin, message, now);
                        self.metrics.delivered += 1;
                        out.push(Output::Deliver(Delivery {
                            origin,
                            seq: message,
                            hops: frame.hops,
                            directed: true,
                            repaired: false,
                            meta,
                            payload,
                        }));
                        self.owe_ack(origin, message, now, out);
                    }
                    Err(Seen::Duplicate) => {
                        // A resend whose ack was lost, or a second path's copy: ack again.
                        self.metrics.duplicates += 1;
                        self.owe_ack(origin, message, now, out);
                    }
                    // Beyond any resend the origin still makes: a stale copy.
                    Err(Seen::TooOld) => self.metrics.duplicates += 1,
                }
            }
        }
    }

    fn on_acks(&mut self, from: PeerKey, messages: &[u64]) {
        for message in messages {
            let ours = self
                .direct
                .unacked
                .get(message)
                .is_some_and(|entry| entry.target == from);
            if ours {
                if let Some(entry) = self.direct.unacked.remove(message) {
                    self.direct.unacked_bytes -= entry.bytes();
                    self.metrics.direct_acked += 1;
                }
            }
        }
    }

    fn owe_ack(&mut self, origin: PeerKey, message: u64, now: Instant, out: &mut Vec<Output>) {
        if !self.direct.owed.contains_key(&origin) && self.direct.owed.len() >= MAX_ACK_ORIGINS {
            self.flush_acks(now, out);
        }
        let owed = self.direct.owed.entry(origin).or_default();
        if !owed.contains(&message) {
            owed.push(message);
        }
        if owed.len() >= MAX_ACK_IDS || self.config.ack_delay.is_zero() {
            let messages = self.direct.owed.remove(&origin).unwrap_or_default();
            self.send_ack(origin, &messages, now, out);
            if self.direct.owed.is_empty() {
                self.direct.acks_due = None;
            }
            return;
        }
        if self.direct.acks_due.is_none() {
            self.direct.acks_due = Some(now + self.config.ack_delay);
        }
    }

    fn flush_acks(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.direct.acks_due = None;
        for (origin, messages) in std::mem::take(&mut self.direct.owed) {
            self.send_ack(origin, &messages, now, out);
        }
    }

    /// One ack frame to `origin`; if it is lost, the origin's resend is acked again.
    fn send_ack(&mut self, origin: PeerKey, messages: &[u64], now: Instant, out: &mut Vec<Output>) {
        let plaintext = wire::encode_acks(messages);
        // The origin's signature was good, so its key seals.
        if let Ok(frame) = self.new_frame(FrameKind::Ack(origin), &plaintext, now) {
            self.metrics.acks_sent += 1;
            if !self.route_direct(&frame, origin, self.me, 2, 0, out) {
                self.metrics.direct_unroutable += 1;
            }
        }
    }

    /// Directed payloads awaiting acknowledgement, and their bytes (payloads and metadata).
    pub fn unacked_direct(&self) -> (usize, usize) {
        (self.direct.unacked.len(), self.direct.unacked_bytes)
    }

    /// Whether more than half of what may be kept for resending (the span of message
    /// numbers, `max_unacked_bytes`) awaits acknowledgement: what a driver paces its
    /// directed sends by, so the oldest are not given up.
    pub fn direct_backlog_high(&self) -> bool {
        let span = usize::try_from(DirectState::span(&self.config)).unwrap_or(usize::MAX);
        self.direct.unacked.len() > span / 2
            || self.direct.unacked_bytes > self.config.max_unacked_bytes / 2
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use genos_crypto::{Identity, SealKey};

    use super::*;
    use crate::CryptoAuth;
    use crate::tests::{deliveries, sent_to as frames_to};

    type Peer = Overlay<CryptoAuth>;

    /// Peers of one one-cell room, linked to each other, on a clock the test moves.
    fn room(count: usize, config: &OverlayConfig, t0: Instant) -> Vec<Peer> {
        let room_key = SealKey::generate();
        let mut peers: Vec<Peer> = (0..count)
            .map(|i| {
                let auth = CryptoAuth::new(Identity::generate(), room_key.clone());
                let mut peer = Overlay::new(config.clone(), [1; 32], auth, i as u64);
                peer.handle(
                    Input::Start {
                        cells_hint: Some(1),
                    },
                    t0,
                );
                peer
            })
            .collect();
        let keys: Vec<PeerKey> = peers.iter().map(Overlay::me).collect();
        for peer in &mut peers {
            let me = peer.me();
            for key in keys.iter().filter(|key| **key != me) {
                peer.handle(
                    Input::Announced {
                        peer: *key,
                        topic: MeshTopic::Cell { cells: 1, cell: 0 },
                        cells: 1,
                        epoch: 0,
                        count: 0,
                    },
                    t0,
                );
                peer.handle(Input::LinkUp { peer: *key }, t0);
            }
        }
        peers
    }

    fn frame_of(message: &Bytes) -> Frame {
        let limits = wire::ListLimits { roster: 8, ids: 8 };
        match wire::decode(message.clone(), limits) {
            Ok(LinkMessage::Frame(frame)) => frame,
            other => panic!("not a frame: {other:?}"),
        }
    }

    fn failures(outputs: &[Output]) -> Vec<u64> {
        outputs
            .iter()
            .filter_map(|output| match output {
                Output::Event(OverlayEvent::DirectFailed { message, .. }) => Some(*message),
                _ => None,
            })
            .collect()
    }

    fn send(peer: &mut Peer, target: PeerKey, payload: &'static [u8], now: Instant) -> Vec<Output> {
        peer.handle(
            Input::SendTo {
                target,
                meta: Bytes::from_static(b"m"),
                payload: Bytes::from_static(payload),
            },
            now,
        )
    }

    #[test]
    fn a_lost_payload_is_resent_as_a_new_frame_delivered_once_and_acked() {
        let t0 = Instant::now();
        let config = OverlayConfig::default();
        let mut peers = room(2, &config, t0);
        let (a, b) = (peers[0].me(), peers[1].me());
        // Every copy of the first send is lost.
        let first = frames_to(&send(&mut peers[0], b, b"hello", t0), b);
        assert_eq!(first.len(), 1);
        assert_eq!(peers[0].unacked_direct(), (1, 6));
        // Nothing before the retry time; then a resend under a new frame id.
        let early = peers[0].handle(Input::Tick, t0 + config.direct_retry / 2);
        assert!(frames_to(&early, b).is_empty());
        let resend = frames_to(&peers[0].handle(Input::Tick, t0 + config.direct_retry), b);
        assert_eq!(resend.len(), 1);
        assert_ne!(frame_of(&resend[0]).id.seq, frame_of(&first[0]).id.seq);
        assert_eq!(peers[0].metrics().direct_resent, 1);
        // The target delivers the resend, and not the first copy arriving late.
        let t1 = t0 + config.direct_retry;
        let got = deliveries(&peers[1].handle(
            Input::Received {
                from: a,
                message: resend[0].clone(),
            },
            t1,
        ));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.as_ref(), b"hello");
        assert!(got[0].directed);
        let late = peers[1].handle(
            Input::Received {
                from: a,
                message: first[0].clone(),
            },
            t1,
        );
        assert!(deliveries(&late).is_empty());
        // Both copies are acked in one frame after the ack delay.
        let acks = frames_to(&peers[1].handle(Input::Tick, t1 + config.ack_delay), a);
        assert_eq!(acks.len(), 1);
        assert!(matches!(frame_of(&acks[0]).id.kind, FrameKind::Ack(to) if to == a));
        assert_eq!(peers[1].metrics().acks_sent, 1);
        peers[0].handle(
            Input::Received {
                from: b,
                message: acks[0].clone(),
            },
            t1,
        );
        assert_eq!(peers[0].unacked_direct(), (0, 0));
        assert_eq!(peers[0].metrics().direct_acked, 1);
        // Acked: never sent again.
        for seconds in 2..90 {
            let later = peers[0].handle(Input::Tick, t0 + Duration::from_secs(seconds));
            assert!(frames_to(&later, b).is_empty());
            assert!(failures(&later).is_empty());
        }
    }

    #[test]
    fn a_lost_ack_costs_a_resend_and_an_ack_never_a_second_delivery() {
        let t0 = Instant::now();
        let config = OverlayConfig::default();
        let mut peers = room(2, &config, t0);
        let (a, b) = (peers[0].me(), peers[1].me());
        let first = frames_to(&send(&mut peers[0], b, b"once", t0), b);
        let mut delivered = 0;
        let mut now = t0;
        let mut frames = first;
        // The target gets every copy; its first two acks are lost.
        for round in 0..3 {
            for frame in &frames {
                let outputs = peers[1].handle(
                    Input::Received {
                        from: a,
                        message: frame.clone(),
                    },
                    now,
                );
                delivered += deliveries(&outputs).len();
            }
            let acks = frames_to(&peers[1].handle(Input::Tick, now + config.ack_delay), a);
            assert_eq!(acks.len(), 1, "round {round}: one ack per copy");
            if round == 2 {
                peers[0].handle(
                    Input::Received {
                        from: b,
                        message: acks[0].clone(),
                    },
                    now,
                );
                break;
            }
            // Wait for the next resend.
            let mut resent = Vec::new();
            for _ in 0..20 {
                now += config.direct_retry;
                resent = frames_to(&peers[0].handle(Input::Tick, now), b);
                if !resent.is_empty() {
                    break;
                }
            }
            assert!(!resent.is_empty(), "round {round}: resent");
            frames = resent;
        }
        assert_eq!(delivered, 1);
        assert_eq!(peers[0].unacked_direct(), (0, 0));
        assert_eq!(peers[0].metrics().direct_resent, 2);
    }

    #[test]
    fn only_the_target_acks_and_unacked_payloads_are_given_up_in_time() {
        let t0 = Instant::now();
        let config = OverlayConfig::default();
        let mut peers = room(3, &config, t0);
        let (a, b, c) = (peers[0].me(), peers[1].me(), peers[2].me());
        send(&mut peers[0], b, b"for b", t0);
        // c acks a message number of its own choosing to a: signed by c, not by b.
        let number = config.first_seq;
        let plaintext = wire::encode_acks(&[number]);
        let forged = peers[2]
            .new_frame(FrameKind::Ack(a), &plaintext, t0)
            .unwrap()
            .encode();
        peers[0].handle(
            Input::Received {
                from: c,
                message: forged,
            },
            t0,
        );
        assert_eq!(peers[0].unacked_direct().0, 1);
        // Never acked: resent (each time a new frame) until given up.
        let mut failed = Vec::new();
        let mut seconds = 0;
        while failed.is_empty() && seconds < 120 {
            seconds += 1;
            failed = failures(&peers[0].handle(Input::Tick, t0 + Duration::from_secs(seconds)));
        }
        assert_eq!(failed, vec![number]);
        assert_eq!(seconds, config.direct_give_up.as_secs());
        // 1 s, doubling to 8 s: resent at 1, 3, 7, 15, 23, ... 55 s.
        assert_eq!(peers[0].metrics().direct_resent, 9);
        assert_eq!(peers[0].metrics().direct_failed, 1);
        assert_eq!(peers[0].unacked_direct(), (0, 0));
    }

    #[test]
    fn what_is_kept_for_resending_is_bounded_by_span_and_bytes() {
        let t0 = Instant::now();
        let config = OverlayConfig {
            direct_window: 64,
            max_unacked_bytes: 1_000,
            ..OverlayConfig::default()
        };
        let mut peers = room(2, &config, t0);
        let b = peers[1].me();
        let mut failed = Vec::new();
        for _ in 0..64 {
            failed.extend(failures(&send(&mut peers[0], b, b"x", t0)));
        }
        assert!(failed.is_empty());
        // The 65th pushes the first out of the span.
        failed.extend(failures(&send(&mut peers[0], b, b"x", t0)));
        assert_eq!(failed, vec![config.first_seq]);
        assert_eq!(peers[0].unacked_direct(), (64, 128));
        // A large one pushes out as many as the byte bound needs, never itself.
        static BIG: [u8; 990] = [7; 990];
        let failed = failures(&send(&mut peers[0], b, &BIG, t0));
        assert_eq!(failed.len(), 60);
        assert_eq!(peers[0].unacked_direct(), (5, 991 + 4 * 2));
        assert!(peers[0].direct.resend_order.len() <= 2 * 5 + 64 + 1);
    }

    #[test]
    fn ack_lists_round_trip_and_are_bounded() {
        let acks = wire::encode_acks(&[1, 2, u64::MAX]).freeze();
        assert_eq!(
            wire::decode_acks(&acks, MAX_ACK_IDS).unwrap(),
            vec![1, 2, u64::MAX]
        );
        assert!(wire::decode_acks(&acks, 2).is_err());
        assert!(wire::decode_acks(&acks.slice(..acks.len() - 1), 8).is_err());
        let mut longer = acks.to_vec();
        longer.push(0);
        assert!(wire::decode_acks(&Bytes::from(longer), 8).is_err());
        assert!(wire::decode_acks(&Bytes::new(), 8).is_err());
    }
}
