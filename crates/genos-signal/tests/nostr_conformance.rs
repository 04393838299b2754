//! The `Signaling` conformance suite against `NostrSignaling` on a real relay over WebSocket:
//! the embedded relay (in this process) and nostr-rs-relay (an independent implementation,
//! as a separate process).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use genos_signal::PeerId;
use genos_signal::conformance::Harness;
use genos_signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig, NostrSignaling};

/// Clients of one embedded relay.
struct EmbeddedHarness {
    relay: EmbeddedRelay,
}

impl EmbeddedHarness {
    async fn start() -> Self {
        let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
            .await
            .unwrap();
        Self { relay }
    }
}

impl Harness for EmbeddedHarness {
    type Backend = NostrSignaling;

    async fn backend(&self) -> (NostrSignaling, PeerId) {
        support::client(self.relay.url())
    }
}

mod embedded {
    use super::*;
    genos_signal::signaling_conformance!(EmbeddedHarness::start().await);
}

/// Clients of one nostr-rs-relay process.
struct IndependentHarness {
    relay: support::NostrRsRelay,
}

impl Harness for IndependentHarness {
    type Backend = NostrSignaling;

    async fn backend(&self) -> (NostrSignaling, PeerId) {
        support::client(&self.relay.url())
    }
}

mod nostr_rs_relay {
    use super::*;
    genos_signal::signaling_conformance!(IndependentHarness {
        relay: support::NostrRsRelay::start().await
    });
}
