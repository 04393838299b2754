//! Known-answer test vectors, kept as data in `tests/vectors.json` so another implementation
//! can check itself against them (docs/protocol.md explains each field).
//!
//! `GENOS_WRITE_VECTORS=1 cargo test -p genos-crypto vectors` rewrites the file; otherwise the
//! test recomputes every vector and fails on any difference.

use serde_json::{Value, json};

use crate::{Context, Identity, KeyParams, PeerId, Purpose, RoomKey, SealKey};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");

fn envelope(
    key: &SealKey,
    purpose: Purpose,
    sender: PeerId,
    extra: &[u8],
    plaintext: &[u8],
) -> Value {
    let nonce: [u8; 24] = core::array::from_fn(|i| i as u8);
    let context = Context::new(purpose, sender).with_extra(extra);
    let mut buffer = SealKey::buffer(plaintext.len());
    buffer.extend_from_slice(plaintext);
    key.seal_in_place_with_nonce(&context, &mut buffer, nonce)
        .unwrap();
    assert_eq!(key.open(&context, &buffer).unwrap(), plaintext);
    json!({
        "purpose": purpose as u8,
        "sender": sender.to_string(),
        "extra_hex": hex::encode(extra),
        "nonce_hex": hex::encode(nonce),
        "plaintext_hex": hex::encode(plaintext),
        "envelope_hex": hex::encode(&buffer),
    })
}

fn compute() -> Value {
    let sender = Identity::from_secret_bytes(&[0x01; 32]).unwrap().peer_id();
    let cases: [(&str, &str, Option<&str>, KeyParams); 3] = [
        ("my-app", "lobby", None, KeyParams::default()),
        (
            "my-app",
            "lobby",
            Some("correct horse battery staple"),
            KeyParams::default(),
        ),
        (
            "genos-vectors",
            "room-ü",
            Some("pw"),
            KeyParams::new(64, 1, 1),
        ),
    ];
    let rooms: Vec<Value> = cases
        .iter()
        .map(|(app, room, password, params)| {
            let key = RoomKey::derive(app, room, password.map(str::as_bytes), params).unwrap();
            json!({
                "app_id": app,
                "room_id": room,
                "password": password,
                "argon2id": {
                    "memory_kib": params.memory_kib,
                    "iterations": params.iterations,
                    "parallelism": params.parallelism,
                },
                "topic_hex": hex::encode(key.topic()),
                "peer_topic": { "peer": sender.to_string(), "topic_hex": hex::encode(key.peer_topic(&sender)) },
                "signal_envelope": envelope(key.signal_key(), Purpose::Signaling, sender, b"", b"{\"offer\":\"v=0\"}"),
                "data_envelope": envelope(key.data_key(), Purpose::Data, sender, b"chat", b"hello, room"),
            })
        })
        .collect();
    let signatures: Vec<Value> = [
        ([0x01u8; 32], &b""[..]),
        ([0x7f; 32], &b"a frame to forward"[..]),
    ]
    .iter()
    .map(|(secret, message)| {
        let identity = Identity::from_secret_bytes(secret).unwrap();
        let signature = identity.sign(message);
        assert!(identity.peer_id().verify(message, &signature).is_ok());
        json!({
            "secret_hex": hex::encode(secret),
            "peer_id": identity.peer_id().to_string(),
            "message_hex": hex::encode(message),
            "signature_hex": hex::encode(signature.as_bytes()),
        })
    })
    .collect();
    json!({
        "format": "genos crypto test vectors, envelope version 1",
        "rooms": rooms,
        "signatures": signatures,
    })
}

#[test]
fn vectors_match() {
    let computed = compute();
    if std::env::var_os("GENOS_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&computed).unwrap();
        std::fs::write(PATH, text + "\n").unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(
        stored, computed,
        "tests/vectors.json disagrees with the implementation"
    );
}

#[test]
fn stored_envelopes_open() {
    // Independent of `compute`: open what the file says with keys derived from its inputs.
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    for room in stored["rooms"].as_array().unwrap() {
        let params = &room["argon2id"];
        let params = KeyParams::new(
            params["memory_kib"].as_u64().unwrap() as u32,
            params["iterations"].as_u64().unwrap() as u32,
            params["parallelism"].as_u64().unwrap() as u32,
        );
        let password = room["password"].as_str().map(str::as_bytes);
        let key = RoomKey::derive(
            room["app_id"].as_str().unwrap(),
            room["room_id"].as_str().unwrap(),
            password,
            &params,
        )
        .unwrap();
        for (field, seal_key, purpose) in [
            ("signal_envelope", key.signal_key(), Purpose::Signaling),
            ("data_envelope", key.data_key(), Purpose::Data),
        ] {
            let vector = &room[field];
            let sender: PeerId = vector["sender"].as_str().unwrap().parse().unwrap();
            let extra = hex::decode(vector["extra_hex"].as_str().unwrap()).unwrap();
            let sealed = hex::decode(vector["envelope_hex"].as_str().unwrap()).unwrap();
            let context = Context::new(purpose, sender).with_extra(&extra);
            let opened = seal_key.open(&context, &sealed).unwrap();
            assert_eq!(
                hex::encode(opened),
                vector["plaintext_hex"].as_str().unwrap()
            );
        }
    }
    for vector in stored["signatures"].as_array().unwrap() {
        let peer: PeerId = vector["peer_id"].as_str().unwrap().parse().unwrap();
        let message = hex::decode(vector["message_hex"].as_str().unwrap()).unwrap();
        let signature = hex::decode(vector["signature_hex"].as_str().unwrap()).unwrap();
        let signature = crate::Signature::from_slice(&signature).unwrap();
        assert!(peer.verify(&message, &signature).is_ok());
    }
}
