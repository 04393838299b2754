//! A terminal chat room: lines you type go to everyone in the room; theirs are printed.
//!
//! `cargo run -p genos --example chat -- ROOM [RELAY_URL]` (public relays when no URL is
//! given). Run it in two terminals with the same room.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use futures::StreamExt;
use genos::{Genos, RoomEvent};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let room_id = args.next().unwrap_or_else(|| "lobby".to_owned());
    let mut builder = Genos::builder("genos-chat-example", room_id);
    if let Some(relay) = args.next() {
        builder = builder.relay(relay);
    }
    let room = builder.join().await?;
    println!(
        "you are {}; type lines, Ctrl-D to leave",
        room.local_peer().short()
    );
    let chat = room.channel("chat")?;
    let mut events = room.events();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => {
                    chat.send(line).await?;
                }
                None => break,
            },
            Some(message) = chat.recv() => {
                println!("{}: {}", message.from.short(), String::from_utf8_lossy(&message.payload));
            }
            Some(event) = events.next() => match event {
                RoomEvent::PeerJoined { peer } => println!("* {} joined", peer.short()),
                RoomEvent::PeerLeft { peer, reason } => println!("* {} left ({reason:?})", peer.short()),
                _ => {}
            },
        }
    }
    room.leave().await?;
    Ok(())
}
