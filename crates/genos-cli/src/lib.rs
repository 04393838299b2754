//! # genos-cli: the `genos` command's building blocks
//!
//! The binary `genos` is a thin shell over this library so that its commands can be tested
//! in-process as well as run as real processes:
//!
//! - `genos demo`: three peers in one process join a password room over a Nostr relay (an
//!   embedded one unless `--relay` names another), connect over WebRTC on 127.0.0.1, meet,
//!   chat, move a file with progress, leave, and print a summary with timings ([`demo`],
//!   written against the room layer, so it runs on any backends).
//! - `genos chat`, `genos send FILE`, `genos recv`: a terminal chat and a file transfer
//!   ([`transfer`]: parts, temporary file, SHA-256 check, rename) over a room.
//! - `genos media send FILE...`, `genos media recv`: IVF/VP8 and Ogg/Opus files as media
//!   tracks of a room, paced at their timestamps, written back to files on the other side
//!   ([`media`]).
//! - `genos relay`: run your own relay (the embedded one) until Ctrl-C.
//! - `genos swarm --peers N`: N real peers in this process join one room at once over a
//!   relay (embedded unless `--relay`), WebRTC on 127.0.0.1, then broadcast and send to
//!   single peers at a rate; prints what formed and how it delivered, or one JSON object
//!   with `--json` ([`swarm`]).
//! - `genos sim [SCENARIO.toml]`: the cellular-mesh simulator ([`sim`]): thousands of
//!   simulated peers, the overlay's figures beside a full mesh and the GenosRTC layout, SVG
//!   pictures with `--out`.

pub mod demo;
pub mod media;
pub mod sim;
pub mod swarm;
pub mod transfer;
