//! A peer on a tokio runtime of its own, so it can be killed as a crashed process would be:
//! its runtime dropped, no goodbye, no closing handshake. Included by the test files that
//! need it (each uses part of it).
#![allow(dead_code)]

use std::time::Duration;

use genos::crypto::KeyParams;
use genos::room::Topology;
use genos::signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos::{Genos, Room, RoomLimits};
use tokio::runtime::Runtime;

/// The password of the rooms these peers join.
pub(crate) const PASSWORD: &str = "pw";

/// Cheap Argon2id parameters: the tests derive the key once per peer.
pub(crate) fn key_params() -> KeyParams {
    KeyParams::new(64, 1, 1)
}

/// The test's own runtime (two workers) and an embedded relay started on it; logs go to
/// standard output when `RUST_LOG` is set.
pub(crate) fn main_and_relay() -> (Runtime, EmbeddedRelay) {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let relay = main
        .block_on(EmbeddedRelay::start(EmbeddedRelayConfig::default()))
        .unwrap();
    (main, relay)
}

pub(crate) struct Peer {
    pub(crate) runtime: Runtime,
    pub(crate) room: Room,
}

impl Peer {
    /// Joins password room `room_id` of `app` through `relay` with `topology`: a 3 s
    /// watchdog (heartbeats every 500 ms), WebRTC on this host only.
    pub(crate) fn join(relay: &str, app: &str, room_id: &str, topology: Topology) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut limits = RoomLimits::default();
        limits.peer_timeout = Duration::from_secs(3);
        limits.heartbeat_interval = Duration::from_millis(500);
        let builder = Genos::builder(app, room_id)
            .password(PASSWORD)
            .key_params(key_params())
            .relay(relay)
            .same_host_only()
            .limits(limits)
            .topology(topology);
        let room = runtime.block_on(builder.join()).unwrap();
        Self { runtime, room }
    }

    /// Leaves with a goodbye.
    pub(crate) fn leave(self) {
        let Self { runtime, room } = self;
        runtime.block_on(room.leave()).unwrap();
    }

    /// Gone as a crashed process is: every task and socket dropped at once.
    pub(crate) fn kill(self) {
        let Self { runtime, room } = self;
        runtime.shutdown_background();
        drop(room);
    }
}
