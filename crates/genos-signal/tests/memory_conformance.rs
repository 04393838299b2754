//! The `Signaling` conformance suite against the in-memory hub.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use genos_signal::PeerId;
use genos_signal::conformance::{Harness, random_peer};
use genos_signal::memory::{MemorySignaling, MemorySignalingConfig};

/// Every client shares one hub; small inbox so the overflow check is quick.
struct MemoryHarness {
    hub: MemorySignaling,
}

impl MemoryHarness {
    fn new() -> Self {
        Self {
            hub: MemorySignaling::new(MemorySignalingConfig::default().with_inbox_capacity(64)),
        }
    }
}

impl Harness for MemoryHarness {
    type Backend = MemorySignaling;

    async fn backend(&self) -> (MemorySignaling, PeerId) {
        (self.hub.clone(), random_peer())
    }

    async fn settle(&self) {
        self.hub.wait_idle().await;
    }
}

genos_signal::signaling_conformance!(MemoryHarness::new());

/// With latency and jitter, the same contract holds (delivery just takes longer).
mod with_latency {
    use std::time::Duration;

    use super::*;

    struct SlowHarness {
        hub: MemorySignaling,
    }

    impl Harness for SlowHarness {
        type Backend = MemorySignaling;

        async fn backend(&self) -> (MemorySignaling, PeerId) {
            (self.hub.clone(), random_peer())
        }

        async fn settle(&self) {
            self.hub.wait_idle().await;
        }
    }

    fn slow() -> SlowHarness {
        let config = MemorySignalingConfig::default()
            .with_latency(Duration::from_millis(2), Duration::from_millis(3))
            .with_inbox_capacity(64);
        SlowHarness {
            hub: MemorySignaling::new(config),
        }
    }

    genos_signal::signaling_conformance!(slow());
}
