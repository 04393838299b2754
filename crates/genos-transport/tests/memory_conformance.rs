//! The `Transport` conformance suite against in-memory connection pairs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use genos_transport::conformance::Harness;
use genos_transport::memory::{MemoryTransport, MemoryTransportConfig};

/// One network; a small send buffer and channel limit keep the bound checks quick.
struct MemoryHarness {
    net: MemoryTransport,
}

impl MemoryHarness {
    fn new() -> Self {
        let config = MemoryTransportConfig::default()
            .with_send_buffer(256 * 1024)
            .with_max_channels(16);
        Self {
            net: MemoryTransport::new(config),
        }
    }
}

impl Harness for MemoryHarness {
    type Backend = MemoryTransport;

    async fn transport(&self) -> MemoryTransport {
        self.net.clone()
    }

    fn max_in_flight(&self) -> usize {
        // Everything unread stays in the sending direction's budget.
        self.net.config().send_buffer
    }
}

genos_transport::transport_conformance!(MemoryHarness::new());
