use proptest::prelude::*;

use super::*;

fn context() -> Context<'static> {
    Context::new(Purpose::Signaling, PeerId::from_bytes([7; 32]))
}

#[test]
fn round_trip_and_overhead() {
    let key = SealKey::generate();
    let sealed = key.seal(&context(), b"hello").unwrap();
    assert_eq!(sealed.len(), 5 + OVERHEAD);
    assert_eq!(sealed[0], VERSION);
    assert_eq!(sealed[1], Purpose::Signaling as u8);
    assert_eq!(key.open(&context(), &sealed).unwrap(), b"hello");
}

#[test]
fn in_place_round_trip() {
    let key = SealKey::generate();
    let mut buffer = SealKey::buffer(3);
    buffer.extend_from_slice(b"abc");
    let capacity = buffer.capacity();
    key.seal_in_place(&context(), &mut buffer).unwrap();
    assert_eq!(
        buffer.capacity(),
        capacity,
        "sealing in place must not reallocate"
    );
    let range = key.open_in_place(&context(), &mut buffer).unwrap();
    assert_eq!(&buffer[range], b"abc");
}

#[test]
fn in_place_needs_header_room() {
    let key = SealKey::generate();
    let mut short = vec![0u8; HEADER_LEN - 1];
    assert_eq!(
        key.seal_in_place(&context(), &mut short),
        Err(EnvelopeError::NoHeaderRoom {
            len: HEADER_LEN - 1
        })
    );
}

#[test]
fn every_single_bit_flip_fails_to_open() {
    let key = SealKey::generate();
    let sealed = key.seal(&context(), b"a message worth protecting").unwrap();
    for bit in 0..sealed.len() * 8 {
        let mut tampered = sealed.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert!(
            key.open(&context(), &tampered).is_err(),
            "flip of bit {bit} went unnoticed"
        );
    }
}

#[test]
fn context_mismatch_fails() {
    let key = SealKey::generate();
    let alice = PeerId::from_bytes([1; 32]);
    let bob = PeerId::from_bytes([2; 32]);
    let sealed = key
        .seal(
            &Context::new(Purpose::Data, alice).with_extra(b"chat"),
            b"hi",
        )
        .unwrap();
    let wrong_sender = Context::new(Purpose::Data, bob).with_extra(b"chat");
    assert_eq!(
        key.open(&wrong_sender, &sealed),
        Err(EnvelopeError::Unauthentic)
    );
    let wrong_extra = Context::new(Purpose::Data, alice).with_extra(b"file");
    assert_eq!(
        key.open(&wrong_extra, &sealed),
        Err(EnvelopeError::Unauthentic)
    );
    let wrong_purpose = Context::new(Purpose::Signaling, alice).with_extra(b"chat");
    assert_eq!(
        key.open(&wrong_purpose, &sealed),
        Err(EnvelopeError::PurposeMismatch {
            expected: Purpose::Signaling,
            found: Purpose::Data as u8
        })
    );
    // Rewriting the purpose byte to match does not help: it is bound in the AAD too.
    let mut relabelled = sealed.clone();
    relabelled[1] = Purpose::Signaling as u8;
    assert_eq!(
        key.open(&wrong_purpose, &relabelled),
        Err(EnvelopeError::Unauthentic)
    );
}

#[test]
fn wrong_key_fails() {
    let sealed = SealKey::generate().seal(&context(), b"x").unwrap();
    assert_eq!(
        SealKey::generate().open(&context(), &sealed),
        Err(EnvelopeError::Unauthentic)
    );
}

#[test]
fn malformed_envelopes_are_typed() {
    let key = SealKey::generate();
    assert_eq!(
        key.open(&context(), &[1, 2, 3]),
        Err(EnvelopeError::Truncated {
            len: 3,
            min: OVERHEAD
        })
    );
    let mut sealed = key.seal(&context(), b"x").unwrap();
    sealed[0] = 9;
    assert_eq!(
        key.open(&context(), &sealed),
        Err(EnvelopeError::UnsupportedVersion(9))
    );
}

#[test]
fn size_and_context_limits_are_typed() {
    let key = SealKey::generate();
    let too_big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
    assert_eq!(
        key.seal(&context(), &too_big),
        Err(EnvelopeError::TooLarge {
            len: MAX_PLAINTEXT_LEN + 1,
            limit: MAX_PLAINTEXT_LEN
        })
    );
    let fake = vec![0u8; MAX_PLAINTEXT_LEN + 1 + OVERHEAD];
    assert!(matches!(
        key.open(&context(), &fake),
        Err(EnvelopeError::TooLarge { .. })
    ));
    let long = [0u8; 65];
    let context = context().with_extra(&long);
    assert_eq!(
        key.seal(&context, b"x"),
        Err(EnvelopeError::ContextTooLong { len: 65, limit: 64 })
    );
    let at_limit = vec![0u8; MAX_PLAINTEXT_LEN];
    let sealed = key.seal(&self::context(), &at_limit).unwrap();
    assert_eq!(
        key.open(&self::context(), &sealed).unwrap().len(),
        MAX_PLAINTEXT_LEN
    );
}

#[test]
fn nonces_never_repeat_across_a_million_seals() {
    let key = SealKey::generate();
    let mut seen = std::collections::HashSet::with_capacity(1_000_000);
    let mut buffer = Vec::with_capacity(OVERHEAD);
    for _ in 0..1_000_000 {
        buffer.clear();
        buffer.resize(HEADER_LEN, 0);
        key.seal_in_place(&context(), &mut buffer).unwrap();
        let nonce: [u8; 24] = buffer[2..HEADER_LEN].try_into().unwrap();
        assert!(seen.insert(nonce), "nonce repeated");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_payload_round_trips(payload in prop::collection::vec(any::<u8>(), 0..70_000)) {
        let key = SealKey::generate();
        let sealed = key.seal(&context(), &payload).unwrap();
        prop_assert_eq!(sealed.len(), payload.len() + OVERHEAD);
        prop_assert_eq!(key.open(&context(), &sealed).unwrap(), payload);
    }

    #[test]
    fn large_payloads_round_trip(len in 0..=MAX_PLAINTEXT_LEN, byte in any::<u8>()) {
        let key = SealKey::generate();
        let payload = vec![byte; len];
        let sealed = key.seal(&context(), &payload).unwrap();
        prop_assert_eq!(key.open(&context(), &sealed).unwrap(), payload);
    }

    #[test]
    fn truncation_never_opens(payload in prop::collection::vec(any::<u8>(), 0..512), cut in 1usize..600) {
        let key = SealKey::generate();
        let sealed = key.seal(&context(), &payload).unwrap();
        let cut = cut.min(sealed.len());
        prop_assert!(key.open(&context(), &sealed[..sealed.len() - cut]).is_err());
    }

    #[test]
    fn garbage_never_panics(garbage in prop::collection::vec(any::<u8>(), 0..2048)) {
        let key = SealKey::generate();
        prop_assert!(key.open(&context(), &garbage).is_err());
    }
}

/// Known-answer vectors: the envelope is deterministic given key, context, nonce, plaintext.
#[test]
fn seal_with_fixed_nonce_is_deterministic() {
    let key = SealKey::from_bytes([0x42; 32]);
    let mut one = SealKey::buffer(2);
    one.extend_from_slice(b"hi");
    let mut two = one.clone();
    key.seal_in_place_with_nonce(&context(), &mut one, [9; 24])
        .unwrap();
    key.seal_in_place_with_nonce(&context(), &mut two, [9; 24])
        .unwrap();
    assert_eq!(one, two);
}

#[test]
fn matches_the_reference_xchacha20poly1305() {
    use chacha20poly1305::XChaCha20Poly1305;
    use chacha20poly1305::aead::{AeadInOut, KeyInit};

    let key_bytes = [9u8; 32];
    let key = SealKey::from_bytes(key_bytes);
    let context = Context::new(Purpose::Data, PeerId::from_bytes([3; 32])).with_extra(b"x");
    for len in [0usize, 1, 63, 64, 1000, 65_536] {
        let plain = vec![5u8; len];
        let nonce = [7u8; 24];
        let mut sealed = SealKey::buffer(len);
        sealed.extend_from_slice(&plain);
        key.seal_in_place_with_nonce(&context, &mut sealed, nonce)
            .unwrap();
        let mut aad = [0u8; AAD_MAX];
        let aad = context.aad(&mut aad).unwrap();
        let mut reference = plain.clone();
        let tag = XChaCha20Poly1305::new(&key_bytes.into())
            .encrypt_inout_detached(&nonce.into(), aad, (&mut reference[..]).into())
            .unwrap();
        assert_eq!(
            &sealed[HEADER_LEN..HEADER_LEN + len],
            &reference[..],
            "len {len}"
        );
        assert_eq!(&sealed[HEADER_LEN + len..], tag.as_slice(), "len {len}");
    }
}
