//! # genos-cellmesh: an overlay for very large rooms
//!
//! A full mesh costs every peer one connection per other peer; past about a hundred peers
//! that stops being practical. The cellular mesh groups peers into cells (a full mesh inside
//! each cell) joined by bridge links between cells, so connections per peer grow like
//! sqrt(N), and forwards frames between cells with a TTL and deduplication.
//!
//! This crate will be pure logic, in the style of quinn-proto and iroh-gossip: a state
//! machine `handle(input, now) -> outputs` that takes time and randomness as inputs and does
//! no I/O, driven by the room layer over real connections or by a discrete-event simulator.
//! It depends on no other genos crate: frames are sealed and signed by their origin so
//! forwarders can neither read nor forge them, through a small signing trait that the room
//! layer implements with `genos-crypto`.
//!
//! Status: the cell assignment is built ([`cell_count`], [`assign_cell`]: rendezvous hashing
//! bound to room and peer key, sqrt(N) sizing with a cap or a fixed size). The overlay state
//! machine, the bridges, routing and the simulator are the rest of the cellular-mesh issue
//! and are not built yet.

mod assign;

pub use assign::{Sizing, assign_cell, cell_count};
