//! # genos-cli: the `genos` command's building blocks
//!
//! The binary `genos` is a thin shell over this library so that its commands can be tested
//! in-process as well as run as real processes. Commands today:
//!
//! - `genos demo`: three peers in one process meet over a signaling backend, connect over a
//!   transport backend, chat, and leave, with a summary of what happened and how long each
//!   step took. It is written against the `Signaling` and `Transport` traits only; today it runs
//!   on the in-memory backends, and will run on the embedded Nostr relay and WebRTC once those
//!   backends exist.

pub mod demo;
