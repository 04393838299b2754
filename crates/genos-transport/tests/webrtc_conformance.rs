//! The `Transport` conformance suite against `WebRtcTransport`: real WebRTC (ICE, DTLS, SCTP)
//! between two peer connections on 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use genos_transport::conformance::Harness;
use genos_transport::webrtc::{WebRtcConfig, WebRtcTransport};

struct LoopbackHarness {
    transport: WebRtcTransport,
}

impl LoopbackHarness {
    fn new() -> Self {
        let config = WebRtcConfig::loopback()
            .with_send_buffer(256 * 1024)
            .with_max_channels(16);
        Self {
            transport: WebRtcTransport::new(config).unwrap(),
        }
    }
}

impl Harness for LoopbackHarness {
    type Backend = WebRtcTransport;

    async fn transport(&self) -> WebRtcTransport {
        self.transport.clone()
    }

    fn max_in_flight(&self) -> usize {
        // Our send buffer, the remote SCTP receive window (1 MiB by default), webrtc's
        // driver-to-channel queue (256 messages) and our receive queue (256 messages), the
        // messages being up to 16 KiB in the check.
        256 * 1024 + 1024 * 1024 + 2 * 256 * 16 * 1024
    }
}

genos_transport::transport_conformance!(LoopbackHarness::new());
