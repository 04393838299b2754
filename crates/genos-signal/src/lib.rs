//! # genos-signal: how peers find each other
//!
//! Before two peers can open a direct connection they must learn that the other exists and
//! swap a few small messages (connection offers, answers, candidates). This crate is that
//! rendezvous, and nothing more. It does not connect peers, read application data or know
//! room secrets: every payload handed to it is opaque bytes that the room layer has already
//! sealed.
//!
//! The seam is the [`Signaling`] trait. A backend is joined to one [`Topic`] (a 32-byte value
//! derived from the room key, so the medium learns nothing about the room's name) and returns a
//! [`SignalSession`] to act with plus a stream of [`SignalEvent`]s to listen to:
//!
//! - [`SignalSession::announce`] publishes this peer's presence on the topic;
//! - [`SignalSession::send_to`] addresses a message to one peer;
//! - the event stream yields [`SignalEvent::PeerSeen`], [`SignalEvent::Message`],
//!   [`SignalEvent::PeerGone`] and, when the bounded inbox overflowed,
//!   [`SignalEvent::Lagged`];
//! - [`SignalSession::leave`] says goodbye and ends the stream.
//!
//! Backends: [`memory::MemorySignaling`], an in-process hub with knobs for latency, loss and
//! partitions, used to test the layers above alone; with the `nostr` feature,
//! `nostr::NostrSignaling`, a pool of Nostr relays (and, with `relay`, the embedded relay
//! `nostr::EmbeddedRelay`). With the `conformance` feature, `conformance` holds the suite
//! every backend must pass.
//!
//! ```
//! use bytes::Bytes;
//! use futures::StreamExt;
//! use genos_crypto::PeerId;
//! use genos_signal::memory::MemorySignaling;
//! use genos_signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), genos_signal::SignalError> {
//! let hub = MemorySignaling::new(Default::default());
//! let topic = Topic::from_bytes([1; 32]);
//! let (alice, mut alice_events) = hub.join(JoinRequest::new(topic, PeerId::from_bytes([1; 32]))).await?;
//! let (bob, _bob_events) = hub.join(JoinRequest::new(topic, PeerId::from_bytes([2; 32]))).await?;
//! bob.announce(Bytes::from_static(b"hi, I am bob")).await?;
//! match alice_events.next().await {
//!     Some(SignalEvent::PeerSeen { peer, presence }) => {
//!         assert_eq!(peer, bob.local_peer());
//!         assert_eq!(&presence[..], b"hi, I am bob");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # alice.leave().await?; Ok(()) }
//! ```

mod error;
mod event;
mod health;
mod inbox;
mod signaling;
mod topic;

pub mod memory;
#[cfg(feature = "nostr")]
pub mod nostr;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::SignalError;
pub use event::SignalEvent;
pub use health::{MediumHealth, SignalHealth};
pub use inbox::EventStream;
pub use signaling::{JoinRequest, SignalLimits, SignalSession, Signaling};
pub use topic::Topic;

pub use genos_crypto::PeerId;
