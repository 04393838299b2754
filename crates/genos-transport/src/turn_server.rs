//! A real TURN server for tests: a coturn process on 127.0.0.1 with long-term credentials,
//! relaying between loopback addresses (features `conformance` and `webrtc`; coturn from the
//! system: `apt-get install coturn`, as `.ci/run` does).
#![allow(clippy::expect_used, clippy::panic, missing_docs)]

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::webrtc::{IceServer, check_turn};

/// The user coturn accepts.
pub const TURN_USER: &str = "genos";
/// That user's password.
pub const TURN_PASSWORD: &str = "turn secret";

/// A coturn process on a free loopback port. Killed on drop.
#[derive(Debug)]
pub struct TurnServer {
    child: Child,
    port: u16,
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .map(|addr| addr.port())
        .expect("a free UDP port on 127.0.0.1")
}

impl TurnServer {
    /// Starts coturn and waits until an allocation with the right credentials succeeds.
    ///
    /// # Panics
    /// When `turnserver` is not installed or never answers.
    pub async fn start() -> Self {
        let port = free_udp_port();
        // Relay ports from a range of its own, so servers of parallel tests do not collide.
        let low = 20_000 + (port % 200) * 100;
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--min-port={low}"),
                &format!("--max-port={}", low + 99),
                "--lt-cred-mech",
                &format!("--user={TURN_USER}:{TURN_PASSWORD}"),
                "--realm=genos.test",
                "--allow-loopback-peers",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-tcp-relay",
                "--fingerprint",
                "--log-file=stdout",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver not found: .ci/run installs coturn (apt-get install coturn)");
        let server = Self { child, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while check_turn(
            &server.ice_server(TURN_PASSWORD),
            Duration::from_millis(300),
        )
        .await
        .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "coturn never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// Its UDP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL, `turn:127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}", self.port)
    }

    /// The server as an ICE server, with [`TURN_USER`] and `password`.
    pub fn ice_server(&self, password: &str) -> IceServer {
        IceServer::turn(self.url(), TURN_USER, password)
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
