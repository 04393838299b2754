//! # genos: peer-to-peer rooms, natively in Rust
//!
//! Peers join a room (app id + room id, optional password), find each other over the Nostr
//! relay network and connect directly over WebRTC to exchange data. No server of yours is
//! involved; a password room is end-to-end encrypted (Argon2id-derived keys,
//! XChaCha20-Poly1305 on every signaling message and every data frame).
//!
//! [`Genos::builder()`] wires the default backends ([`signal::nostr::NostrSignaling`] and
//! [`transport::webrtc::WebRtcTransport`], each behind a default feature) into a
//! [`Room`]. The layers are re-exported, each usable on its own:
//!
//! - [`crypto`]: peer identities, room keys and sealed envelopes;
//! - [`signal`]: the `Signaling` seam and its backends (Nostr, in-memory);
//! - [`transport`]: the `Transport` seam and its backends (WebRTC, in-memory);
//! - [`room`]: the session layer: presence, links, channels (generic over both seams);
//! - [`cellmesh`]: the overlay for very large rooms.
//!
//! A complete example: two peers meet over an embedded relay on this machine, say hello and
//! leave.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use genos::{Genos, RoomEvent};
//! use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
//!
//! let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default()).await?;
//! let join = || {
//!     Genos::builder("example-app", "lobby")
//!         .password("correct horse battery staple")
//!         .relay(relay.url())
//!         .same_host_only() // no public STUN: this example stays on 127.0.0.1
//!         .join()
//! };
//! let (alice, bob) = (join().await?, join().await?);
//!
//! let mut events = bob.events();
//! while let Some(event) = events.next().await {
//!     if let RoomEvent::PeerJoined { peer } = event {
//!         assert_eq!(peer, alice.local_peer());
//!         break;
//!     }
//! }
//! bob.channel("chat")?.send("hello, alice").await?;
//! let message = alice.channel("chat")?.recv().await.expect("a message");
//! assert_eq!(&message.payload[..], b"hello, alice");
//!
//! alice.leave().await?;
//! bob.leave().await?;
//! # Ok(()) }
//! ```

pub use genos_cellmesh as cellmesh;
pub use genos_crypto as crypto;
pub use genos_room as room;
pub use genos_signal as signal;
pub use genos_transport as transport;
#[cfg(feature = "trystero")]
pub use genos_trystero as trystero;

pub use genos_crypto::{Identity, PeerId};
pub use genos_room::{
    CellsSettings, Channel, LeaveReason, MeshStatus, Message, PeerInfo, Progress, Room, RoomConfig,
    RoomError, RoomEvent, RoomEvents, RoomLimits, RoomStats, RoomTrack, SendOptions, SendReport,
    Target, Topology, TrackOptions, Typed, TypedChannel,
};
pub use genos_transport::{Codec, ReceivedSample, RemoteTrack, Sample};

#[cfg(all(feature = "nostr", feature = "webrtc"))]
mod builder;
#[cfg(all(feature = "fallback", feature = "webrtc"))]
pub mod serve;
#[cfg(feature = "trystero")]
pub use builder::TrysteroBuilder;
#[cfg(all(feature = "nostr", feature = "webrtc"))]
pub use builder::{Genos, GenosBuilder, GenosError};
