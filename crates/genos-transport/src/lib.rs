//! # genos-transport: direct links between two peers
//!
//! Once signaling has introduced two peers, this layer connects them directly and carries
//! their bytes. It knows nothing of rooms, topics or other peers: a connection is one link
//! between two endpoints, set up by swapping opaque signaling messages that the layer above
//! relays for it (offers, answers and candidates, in WebRTC terms).
//!
//! The seam is a trio of traits:
//!
//! - [`Transport`] makes connections: [`Transport::connect`] with a [`Role`] returns a
//!   [`Connection`] and its stream of [`ConnectionEvent`]s. The offerer's first event is a
//!   [`ConnectionEvent::Signal`] to pass to the answerer's [`Connection::handle_signal`], and so
//!   on until both report [`ConnectionState::Connected`].
//! - [`Connection`] opens [`DataChannel`]s ([`Reliability::ReliableOrdered`] or
//!   [`Reliability::UnreliableUnordered`]); the remote side learns of each as a
//!   [`ConnectionEvent::ChannelOpened`]. It reports its state, [`ConnectionStats`] and closes.
//! - [`DataChannel`] sends with backpressure (a reliable send waits while the channel's send
//!   buffer is full) and receives whole messages up to [`TransportLimits::max_message_size`];
//!   the room layer chunks anything larger.
//!
//! Media tracks ([`media`]) ride the same connection: [`Connection::add_track`] returns a
//! [`LocalTrack`] to write encoded samples to; the remote side gets a
//! [`ConnectionEvent::TrackReceived`] with a [`RemoteTrack`] that yields whole samples, and a
//! [`ConnectionEvent::TrackEnded`] when the sender removes it.
//!
//! Backends: [`memory::MemoryTransport`], bounded in-process channel pairs with fault injection
//! (drop or stall a link), for testing the layers above alone; with the `webrtc` feature,
//! `webrtc::WebRtcTransport` (webrtc 0.21 with the fixes in `vendor/`); with the `fallback`
//! feature, `fallback::FallbackTransport`, links carried through a fallback hub over
//! WebSocket for peers that cannot connect directly, and the hub itself. [`failover`] joins
//! two backends: direct first, the fallback path when the direct setup fails. With the
//! `conformance` feature, `conformance` holds the suite every backend must pass.
//!
//! ```
//! use bytes::Bytes;
//! use futures::StreamExt;
//! use genos_transport::memory::MemoryTransport;
//! use genos_transport::{Connection, ConnectionEvent, DataChannel, Reliability, Role, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), genos_transport::TransportError> {
//! let net = MemoryTransport::new(Default::default());
//! let (alice, mut alice_events) = net.connect(Role::Offerer).await?;
//! let (bob, mut bob_events) = net.connect(Role::Answerer).await?;
//! // Relay the offer and the answer (a room does this over signaling).
//! let Some(ConnectionEvent::Signal(offer)) = alice_events.next().await else { unreachable!() };
//! bob.handle_signal(offer).await?;
//! let answer = loop {
//!     if let Some(ConnectionEvent::Signal(answer)) = bob_events.next().await { break answer }
//! };
//! alice.handle_signal(answer).await?;
//! let chat = alice.open_channel("chat", Reliability::ReliableOrdered).await?;
//! chat.send(Bytes::from_static(b"hello")).await?;
//! let remote = loop {
//!     if let Some(ConnectionEvent::ChannelOpened(channel)) = bob_events.next().await { break channel }
//! };
//! assert_eq!(remote.recv().await.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```

mod error;
mod shared;
mod traits;

pub mod media;

pub mod failover;
#[cfg(feature = "fallback")]
pub mod fallback;
pub mod memory;
#[cfg(feature = "webrtc")]
pub mod webrtc;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(all(feature = "conformance", feature = "webrtc"))]
pub mod turn_server;

pub use error::TransportError;
pub use media::{
    Codec, LocalTrack, MediaKind, ReceivedSample, RemoteTrack, Sample, TrackSpec, TrackStats,
};
pub use shared::EventStream;
pub use traits::{
    Connection, ConnectionEvent, ConnectionState, ConnectionStats, DataChannel, Reliability, Role,
    Transport, TransportLimits,
};
