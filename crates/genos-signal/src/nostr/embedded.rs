//! The embedded relay: "run your own relay", in-process or as `genos relay`.

use std::net::SocketAddr;

use nostr_relay_builder::LocalRelay;
use nostr_relay_builder::builder::{
    RateLimit, RelayBuilder, RelayBuilderNip42, RelayBuilderNip42Mode,
};

use crate::SignalError;

/// Limits of the embedded relay, set for signaling traffic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddedRelayConfig {
    /// Address to listen on. Default `127.0.0.1:0` (a free port on loopback).
    pub addr: SocketAddr,
    /// Simultaneous WebSocket connections. Default 4096.
    pub max_connections: usize,
    /// Events accepted per connection per minute. Default 1200: a peer's join burst plus
    /// its offers and candidates fit many times over; a flood does not.
    pub events_per_minute: u32,
    /// Open subscriptions per connection. Default 16 (a session uses one).
    pub max_subscriptions: usize,
    /// Proof of work required of every event, if any. Default none.
    pub min_pow: Option<u8>,
    /// Require NIP-42 authentication to publish and to subscribe. Default off.
    pub require_auth: bool,
}

impl Default for EmbeddedRelayConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_connections: 4096,
            events_per_minute: 1200,
            max_subscriptions: 16,
            min_pow: None,
            require_auth: false,
        }
    }
}

impl EmbeddedRelayConfig {
    /// Listens on `addr`.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Requires NIP-42 authentication to publish and subscribe.
    pub fn with_auth(mut self) -> Self {
        self.require_auth = true;
        self
    }

    /// Requires proof of work of `difficulty` on every event.
    pub fn with_min_pow(mut self, difficulty: u8) -> Self {
        self.min_pow = Some(difficulty);
        self
    }
}

/// A Nostr relay running in this process (built on `nostr-relay-builder`). Stops when
/// dropped or on [`EmbeddedRelay::shutdown`].
#[derive(Debug)]
pub struct EmbeddedRelay {
    relay: LocalRelay,
    url: String,
}

impl EmbeddedRelay {
    /// Starts a relay and waits until it listens.
    pub async fn start(config: EmbeddedRelayConfig) -> Result<Self, SignalError> {
        let mut builder = RelayBuilder::default()
            .addr(config.addr.ip())
            .max_connections(config.max_connections)
            .rate_limit(RateLimit {
                max_reqs: config.max_subscriptions,
                notes_per_minute: config.events_per_minute,
            });
        if config.addr.port() != 0 {
            builder = builder.port(config.addr.port());
        }
        if let Some(difficulty) = config.min_pow {
            builder = builder.min_pow(difficulty);
        }
        if config.require_auth {
            builder = builder.nip42(RelayBuilderNip42 {
                mode: RelayBuilderNip42Mode::Both,
            });
        }
        let relay = LocalRelay::new(builder);
        relay
            .run()
            .await
            .map_err(|e| SignalError::Unavailable(format!("embedded relay: {e}")))?;
        let url = relay.url().await.to_string();
        let url = url.trim_end_matches('/').to_owned();
        Ok(Self { relay, url })
    }

    /// The relay's `ws://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops accepting connections.
    pub fn shutdown(&self) {
        self.relay.shutdown();
    }
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        self.relay.shutdown();
    }
}
