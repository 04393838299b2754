//! Two peers of a password room: derive the room key, seal, sign, verify, open.
//!
//! Run: `cargo run -p genos-crypto --example sealed_message`
#![allow(clippy::print_stdout)]

use genos_crypto::{Context, Identity, KeyParams, Purpose, RoomKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let params = KeyParams::default();
    // Both peers derive the same keys from app, room and password alone.
    let alice_key = RoomKey::derive("example-app", "lobby", Some(b"open sesame"), &params)?;
    let bob_key = RoomKey::derive("example-app", "lobby", Some(b"open sesame"), &params)?;
    println!("room topic: {}", hex(&alice_key.topic()));

    let alice = Identity::generate();
    let context = Context::new(Purpose::Data, alice.peer_id()).with_extra(b"chat");
    let sealed = alice_key.data_key().seal(&context, b"meet at noon")?;
    // A forwarder can check the origin without being able to read the message.
    let signature = alice.sign(&sealed);
    alice.peer_id().verify(&sealed, &signature)?;
    let opened = bob_key.data_key().open(&context, &sealed)?;
    println!(
        "bob opened {} sealed bytes from {}: {:?}",
        sealed.len(),
        alice.peer_id().short(),
        String::from_utf8_lossy(&opened)
    );

    let eve_key = RoomKey::derive("example-app", "lobby", Some(b"guess"), &params)?;
    println!(
        "eve with the wrong password: {:?}",
        eve_key.data_key().open(&context, &sealed).err()
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
