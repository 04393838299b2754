//! Frame authentication end to end through two real overlays (BIP-340 signatures, sealed
//! bodies): what a forwarder or an attacker on a link can and cannot do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Instant;

use bytes::Bytes;
use genos_crypto::{Identity, SealKey};
use proptest::prelude::*;

use crate::wire::{self, LinkMessage};
use crate::{
    CryptoAuth, Delivery, DropReason, FrameAuth, Input, MeshTopic, Output, Overlay, OverlayConfig,
    OverlayEvent, PeerKey,
};

struct Peer {
    overlay: Overlay<CryptoAuth>,
}

impl Peer {
    fn new(room_key: &SealKey) -> Self {
        let auth = CryptoAuth::new(Identity::generate(), room_key.clone());
        let mut overlay = Overlay::new(OverlayConfig::default(), [1; 32], auth, 5);
        overlay.handle(
            Input::Start {
                cells_hint: Some(1),
            },
            Instant::now(),
        );
        Self { overlay }
    }

    fn key(&self) -> PeerKey {
        self.overlay.me()
    }

    fn handle(&mut self, input: Input) -> Vec<Output> {
        self.overlay.handle(input, Instant::now())
    }

    /// Links this peer to `other` (one cell: an intra-cell link).
    fn link(&mut self, other: PeerKey) {
        self.handle(Input::Announced {
            peer: other,
            topic: MeshTopic::Cell { cells: 1, cell: 0 },
            cells: 1,
            epoch: 0,
            count: 0,
        });
        self.handle(Input::LinkUp { peer: other });
    }
}

/// Frames (tag 1) in `outputs` sent to `to`.
pub(crate) fn sent_to(outputs: &[Output], to: PeerKey) -> Vec<Bytes> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { to: t, message } if *t == to && message.first() == Some(&1) => {
                Some(message.clone())
            }
            _ => None,
        })
        .collect()
}

/// What `outputs` delivered.
pub(crate) fn deliveries(outputs: &[Output]) -> Vec<Delivery> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Deliver(delivery) => Some(delivery.clone()),
            _ => None,
        })
        .collect()
}

fn drops(outputs: &[Output]) -> Vec<DropReason> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Event(OverlayEvent::Dropped { reason, .. }) => Some(*reason),
            _ => None,
        })
        .collect()
}

fn pair() -> (Peer, Peer) {
    let room_key = SealKey::generate();
    let mut a = Peer::new(&room_key);
    let mut b = Peer::new(&room_key);
    a.link(b.key());
    b.link(a.key());
    (a, b)
}

fn broadcast(a: &mut Peer, to: PeerKey, payload: &'static [u8]) -> Bytes {
    let outputs = a.handle(Input::Broadcast {
        meta: Bytes::from_static(b"\x00meta\xff"),
        payload: Bytes::from_static(payload),
    });
    sent_to(&outputs, to)
        .pop()
        .expect("the broadcast goes to the cell mate")
}

#[test]
fn a_broadcast_arrives_once_with_payload_and_metadata_byte_for_byte() {
    let (mut a, mut b) = pair();
    let frame = broadcast(&mut a, b.key(), b"\x00\x01binary\xfe\xff");
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: frame.clone(),
    });
    let got = deliveries(&outputs);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].origin, a.key());
    assert_eq!(got[0].payload.as_ref(), b"\x00\x01binary\xfe\xff");
    assert_eq!(got[0].meta.as_ref(), b"\x00meta\xff");
    // The same frame again (a replay, or a second path): not delivered again.
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: frame,
    });
    assert!(deliveries(&outputs).is_empty());
    assert_eq!(b.overlay.metrics().duplicates, 1);
}

#[test]
fn a_frame_claiming_another_origin_is_dropped() {
    let (mut a, mut b) = pair();
    let frame = broadcast(&mut a, b.key(), b"hello");
    let mut forged = frame.to_vec();
    // The origin key sits after tag, ttl, hops and kind.
    forged[4..36].copy_from_slice(&b.key());
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: Bytes::from(forged),
    });
    assert!(deliveries(&outputs).is_empty());
    // Our own key as origin is taken for an echo; a third key fails the signature.
    let mut forged = frame.to_vec();
    forged[4..36].copy_from_slice(Identity::generate().peer_id().as_bytes());
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: Bytes::from(forged),
    });
    assert!(deliveries(&outputs).is_empty());
    assert_eq!(drops(&outputs), vec![DropReason::BadSignature]);
    // The genuine frame still gets through afterwards: the forgery did not poison dedup.
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: frame,
    });
    assert_eq!(deliveries(&outputs).len(), 1);
}

#[test]
fn frames_older_than_the_window_are_refused_as_replays() {
    let (mut a, mut b) = pair();
    let first = broadcast(&mut a, b.key(), b"first");
    for _ in 0..100 {
        let frame = broadcast(&mut a, b.key(), b"more");
        b.handle(Input::Received {
            from: a.key(),
            message: frame,
        });
    }
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: first,
    });
    assert!(deliveries(&outputs).is_empty());
    assert_eq!(drops(&outputs), vec![DropReason::TooOld]);
}

#[test]
fn a_raised_ttl_is_dropped_and_garbage_is_typed() {
    let (mut a, mut b) = pair();
    let mut frame = broadcast(&mut a, b.key(), b"x").to_vec();
    frame[1] = 200;
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: Bytes::from(frame),
    });
    assert_eq!(drops(&outputs), vec![DropReason::BadTtl]);
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: Bytes::from_static(b"\x01\x02"),
    });
    assert_eq!(drops(&outputs), vec![DropReason::Malformed]);
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: Bytes::from(vec![0u8; (1 << 20) + 8192]),
    });
    assert_eq!(drops(&outputs), vec![DropReason::TooLarge]);
}

#[test]
fn a_directed_frame_is_opened_by_its_target_only() {
    let room_key = SealKey::generate();
    let mut a = Peer::new(&room_key);
    let mut b = Peer::new(&room_key);
    a.link(b.key());
    b.link(a.key());
    let outputs = a.handle(Input::SendTo {
        target: b.key(),
        meta: Bytes::new(),
        payload: Bytes::from_static(b"for b only"),
    });
    let frame = sent_to(&outputs, b.key()).pop().unwrap();
    // A forwarder (another room member, same room key) holds the frame but cannot open it.
    let LinkMessage::Frame(decoded) = wire::decode(
        frame.clone(),
        wire::ListLimits {
            roster: 16,
            ids: 16,
        },
    )
    .unwrap() else {
        panic!("not a frame");
    };
    let mut eve = CryptoAuth::new(Identity::generate(), room_key);
    assert!(
        eve.open(&a.key(), true, &decoded.id.body_context(), &decoded.body)
            .is_err()
    );
    assert!(
        eve.open(&a.key(), false, &decoded.id.body_context(), &decoded.body)
            .is_err()
    );
    // The target can.
    let outputs = b.handle(Input::Received {
        from: a.key(),
        message: frame,
    });
    let got = deliveries(&outputs);
    assert_eq!(got.len(), 1);
    assert!(got[0].directed);
    assert_eq!(got[0].payload.as_ref(), b"for b only");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Changing any byte a forwarder could change never delivers different content, and
    /// changing a signed byte delivers nothing.
    #[test]
    fn a_tampered_frame_never_delivers_altered_content(position in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (mut a, mut b) = pair();
        let frame = broadcast(&mut a, b.key(), b"payload that must not change");
        let mut tampered = frame.to_vec();
        let at = position.index(tampered.len());
        tampered[at] ^= flip;
        let outputs = b.handle(Input::Received { from: a.key(), message: Bytes::from(tampered) });
        let got = deliveries(&outputs);
        // Only TTL (byte 1) and hop count (byte 2) are unsigned, for forwarders to change.
        for delivery in got {
            prop_assert!(at == 1 || at == 2, "changed byte {} still delivered", at);
            prop_assert_eq!(delivery.payload.as_ref(), b"payload that must not change");
        }
    }
}

#[test]
fn a_send_to_several_peers_seals_one_frame_for_each() {
    let room_key = SealKey::generate();
    let mut a = Peer::new(&room_key);
    let mut b = Peer::new(&room_key);
    let mut c = Peer::new(&room_key);
    for other in [b.key(), c.key()] {
        a.link(other);
    }
    b.link(a.key());
    c.link(a.key());
    let outputs = a.handle(Input::SendToMany {
        targets: vec![b.key(), c.key()],
        meta: Bytes::new(),
        payload: Bytes::from_static(b"to both"),
    });
    for peer in [&mut b, &mut c] {
        let key = peer.key();
        // Each target gets its own frame directly, and the other's to relay (two paths
        // from the origin); it delivers only its own.
        let frames = sent_to(&outputs, key);
        assert_eq!(frames.len(), 2);
        let mut got = Vec::new();
        for frame in frames {
            got.extend(deliveries(&peer.handle(Input::Received {
                from: a.overlay.me(),
                message: frame,
            })));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.as_ref(), b"to both");
        assert!(got[0].directed);
    }
    let too_many = a.handle(Input::SendToMany {
        targets: vec![b.key(); 2_000],
        meta: Bytes::new(),
        payload: Bytes::new(),
    });
    assert!(too_many.iter().any(|o| matches!(
        o,
        Output::Event(OverlayEvent::CommandFailed(
            crate::MeshError::TooManyTargets { .. }
        ))
    )));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes a link carries, the overlay answers with typed drops, never a panic or
    /// a delivery.
    #[test]
    fn arbitrary_link_bytes_are_dropped_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (a, mut b) = pair();
        let outputs = b.handle(Input::Received { from: a.key(), message: Bytes::from(bytes) });
        prop_assert!(deliveries(&outputs).is_empty());
    }
}

/// Every message `outputs` sends to `to`, decoded.
fn messages_to(outputs: &[Output], to: PeerKey) -> Vec<LinkMessage> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::Send { to: t, message } if *t == to => wire::decode(
                message.clone(),
                wire::ListLimits {
                    roster: 64,
                    ids: 256,
                },
            )
            .ok(),
            _ => None,
        })
        .collect()
}

// Right after a view change a peer's links into what are now other cells have no role yet
// and its bridges are not up: its broadcasts go out over those links, and the bridge that
// comes up later is told every id still kept, so the far cell can pull what it missed.
#[test]
fn broadcasts_cross_links_of_unknown_role_and_new_bridges_hear_the_kept_ids() {
    let room_key = SealKey::generate();
    let room = [1; 32];
    // Two peers in different cells of a two-cell view, `high` in cell 1.
    let (high, low) = loop {
        let a = Identity::generate();
        let b = Identity::generate();
        let cell = |id: &Identity| crate::assign_cell(&room, id.peer_id().as_bytes(), 2);
        match (cell(&a), cell(&b)) {
            (1, 0) => break (a, b),
            (0, 1) => break (b, a),
            _ => {}
        }
    };
    let low_key = *low.peer_id().as_bytes();
    let auth = CryptoAuth::new(high, room_key);
    let mut overlay = Overlay::new(OverlayConfig::default(), room, auth, 5);
    let now = Instant::now();
    overlay.handle(
        Input::Start {
            cells_hint: Some(2),
        },
        now,
    );
    overlay.handle(
        Input::Announced {
            peer: low_key,
            topic: MeshTopic::Lobby,
            cells: 2,
            epoch: 0,
            count: 0,
        },
        now,
    );
    overlay.handle(Input::LinkUp { peer: low_key }, now);
    assert_eq!(overlay.cell(), 1);
    let outputs = overlay.handle(
        Input::Broadcast {
            meta: Bytes::new(),
            payload: Bytes::from_static(b"while bridges form"),
        },
        now,
    );
    let sent = messages_to(&outputs, low_key);
    assert!(
        sent.iter().any(|m| matches!(m, LinkMessage::Frame(_))),
        "the broadcast skipped the link of unknown role: {sent:?}"
    );
    // The link turns out to be cell 0's bridge to this cell: it hears the kept id.
    let hello = wire::encode_hello(&wire::Hello {
        role: wire::HelloRole::Bridge {
            from_cell: 0,
            to_cell: 1,
            slot: 0,
        },
        cells: 2,
        known: 1,
    });
    let outputs = overlay.handle(
        Input::Received {
            from: low_key,
            message: hello,
        },
        now,
    );
    let digests: Vec<Vec<crate::wire::ShortId>> = messages_to(&outputs, low_key)
        .into_iter()
        .filter_map(|m| match m {
            LinkMessage::Digest(ids) => Some(ids),
            _ => None,
        })
        .collect();
    let me = crate::wire::origin_tag(&overlay.me());
    assert_eq!(digests.len(), 1, "{digests:?}");
    assert_eq!(digests[0], vec![(me, overlay.last_seq().unwrap())]);
}
