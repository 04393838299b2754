//! # genos-cellmesh: an overlay for very large rooms
//!
//! A full mesh costs every peer one connection per other peer; past about a hundred peers
//! that stops being practical. The cellular mesh groups peers into cells, a full mesh inside
//! each, and joins **every pair of cells directly** by a few bridge links, each between a
//! different pair of members. A peer holds about `S - 1 + k(C - 1)/S` links for cells of
//! `S` peers, `C` cells and `k` bridges per cell pair: about 102 at 10,000 peers, where a
//! full mesh needs 9,999.
//!
//! **Routing.** A broadcast goes from its origin to its cell, out over that cell's bridges,
//! and into every other cell: at most three hops (origin, cell mate holding the bridge,
//! bridge end, its cell mates), whatever the room's size. Of the `k` bridge ends that
//! receive it in a cell, slot 0 forwards at once and slot `j` only after `j` backup delays
//! and only if no cell mate forwarded first, so redundancy costs few duplicates. Directed
//! frames go towards the target's cell along two paths from the origin (two bridges, or the
//! target and a cell mate), never flooded. Frames carry a TTL and are deduplicated by
//! (origin, sequence number).
//!
//! **Repair.** The eager paths are fixed, so a dead bridge or a lost message would leave
//! peers without a frame until the plan is repaired. Beside them runs lazy repair, in the
//! spirit of Plumtree: every peer sends the ids it accepted lately (16 bytes each) to a
//! random bridge, the cell mates one step and half a cell after it in key order and a
//! random cell mate; a peer
//! that hears of an id it lacks waits briefly, pulls the frame from a peer that offered it
//! and forwards it on as if it had come eagerly. A 30% crash then costs a pull round trip,
//! not the seconds until the crash is noticed.
//!
//! **Trust.** Each frame is signed by its origin and its body sealed before it leaves (the
//! room's key for broadcasts, a key only origin and target share for directed frames), so
//! forwarders can neither forge nor read what is not theirs; payload and metadata arrive
//! byte for byte. Cells and bridge slots are rendezvous hashes bound to the room and the
//! peer's key, so a peer cannot pick its place without grinding keys.
//!
//! **Membership.** Peers announce themselves on their cell's topic only and listen to their
//! own cell and the cells they open bridges to. The cell count is one view per room: cell
//! leaders post their cell's size on a lobby topic everyone hears, cell 0's leader alone
//! resizes (with hysteresis) by posting a new (epoch, cell count), and everyone adopts the
//! highest view heard, so peers never split over noisy estimates. A peer hears about
//! `S + k·S/2` announces and `C + 15` lobby posts a minute, not `N`.
//!
//! The overlay is a sans-IO state machine ([`Overlay::handle`]`(input, now) -> outputs`, in
//! the style of quinn-proto and iroh-gossip): time and randomness are inputs, nothing
//! blocks, and the same code runs under the room layer or the discrete-event simulator
//! (feature `sim`, module `sim`).

mod assign;
mod auth;
mod config;
mod error;
mod io;
mod keyhash;
mod mix;
mod overlay;
mod plan;
mod seen;
mod wire;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "sim")]
pub mod sim;

#[cfg(test)]
mod tests;

/// A peer's 32-byte public key (its `genos_crypto::PeerId`).
pub type PeerKey = [u8; 32];

pub use assign::{Sizing, assign_cell, cell_count};
#[cfg(any(test, feature = "sim"))]
pub use auth::SimAuth;
pub use auth::{AuthError, CryptoAuth, FrameAuth};
pub use config::OverlayConfig;
pub use error::MeshError;
pub use io::{Delivery, DropReason, Input, MeshTopic, Output, OverlayEvent};
pub use overlay::{LinkRole, Overlay, OverlayMetrics};
pub use plan::{planned_links, planned_links_in};
