//! # genos-cli: the `genos` command's building blocks
//!
//! The binary `genos` is a thin shell over this library so that its commands can be tested
//! in-process as well as run as real processes. Commands today:
//!
//! - `genos demo`: three peers in one process meet over a Nostr relay (an embedded one unless
//!   `--relay` names another) with signaling sealed by a password room's key, connect over a
//!   transport backend, chat, and leave, with a summary of what happened and how long it took.
//!   It is written against the `Signaling` and `Transport` traits only; the demo command runs
//!   it on the Nostr and WebRTC backends (WebRTC bound to 127.0.0.1).
//! - `genos relay [--addr HOST:PORT]`: run your own relay (the embedded one) until Ctrl-C.

pub mod demo;
