//! The fallback server (`genos serve`): a Nostr relay and a fallback hub on one port.
//!
//! Peers configured with [`GenosBuilder::fallback`](crate::GenosBuilder::fallback) use the
//! relay for signaling when none of their relays answers, and the hub (path `/link`) for
//! links whose direct setup fails (or every link, with
//! [`GenosBuilder::no_direct`](crate::GenosBuilder::no_direct)). The server sees sealed
//! signaling and sealed room frames only: a password room stays end-to-end encrypted.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use genos::serve::{FallbackServer, FallbackServerConfig};
//!
//! let server = FallbackServer::start(FallbackServerConfig::default()).await?;
//! assert!(server.url().starts_with("ws://127.0.0.1:"));
//! assert_eq!(server.link_url(), format!("{}/link", server.url()));
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use genos_signal::nostr::{EmbeddedRelay, EmbeddedRelayConfig};
use genos_transport::fallback::{FallbackHub, FallbackHubConfig, HubStats};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::GenosError;

/// The path of the hub on a fallback server; everything else goes to the relay.
pub const LINK_PATH: &str = "/link";

/// Settings of a [`FallbackServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FallbackServerConfig {
    /// Address to listen on. Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// The relay's limits (its `addr` is not used).
    pub relay: EmbeddedRelayConfig,
    /// The hub's limits and token (its `addr` is not used).
    pub hub: FallbackHubConfig,
    /// Connections whose first request line is still being read, at once. Default 256;
    /// beyond it new connections are closed.
    pub max_pending: usize,
}

impl Default for FallbackServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay: EmbeddedRelayConfig::default(),
            hub: FallbackHubConfig::default(),
            max_pending: 256,
        }
    }
}

impl FallbackServerConfig {
    /// Listens on `addr`.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Admits only hub clients presenting `token` (relay access is the relay's own:
    /// [`EmbeddedRelayConfig::with_auth`]).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.hub = self.hub.with_token(token);
        self
    }
}

/// A running fallback server. Stops when dropped.
#[derive(Debug)]
pub struct FallbackServer {
    url: String,
    routes: Arc<Routes>,
    accept: tokio::task::AbortHandle,
}

#[derive(Debug)]
struct Routes {
    relay: EmbeddedRelay,
    hub: std::sync::Mutex<FallbackHub>,
}

/// Time a client has to send the start of its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl FallbackServer {
    /// Starts listening.
    pub async fn start(config: FallbackServerConfig) -> Result<Self, GenosError> {
        let unavailable = |e: std::io::Error| {
            GenosError::Signal(genos_signal::SignalError::Unavailable(format!(
                "fallback server: {e}"
            )))
        };
        let listener = TcpListener::bind(config.addr).await.map_err(unavailable)?;
        let addr = listener.local_addr().map_err(unavailable)?;
        let url = format!("ws://{addr}");
        let routes = Arc::new(Routes {
            relay: EmbeddedRelay::detached(&config.relay, url.clone()),
            hub: std::sync::Mutex::new(FallbackHub::new(config.hub)),
        });
        let pending = Arc::new(Semaphore::new(config.max_pending.max(1)));
        let accept = tokio::spawn(accept_loop(listener, routes.clone(), pending)).abort_handle();
        Ok(Self {
            url,
            routes,
            accept,
        })
    }

    /// The server's URL (`ws://host:port`): the relay, and the base of the hub.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The hub's URL (`ws://host:port/link`).
    pub fn link_url(&self) -> String {
        format!("{}{LINK_PATH}", self.url)
    }

    /// The hub's counters.
    pub fn hub_stats(&self) -> HubStats {
        self.routes
            .hub
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats()
    }

    /// Stops the server: no new connections, every relay connection and circuit cut.
    pub fn shutdown(&self) {
        self.accept.abort();
        self.routes.relay.shutdown();
        self.routes
            .hub
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown();
    }
}

impl Drop for FallbackServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(listener: TcpListener, routes: Arc<Routes>, pending: Arc<Semaphore>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "fallback server cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "fallback server: too many pending connections");
            continue;
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let to_hub = tokio::time::timeout(REQUEST_TIMEOUT, asks_for_hub(&stream)).await;
            drop(permit);
            match to_hub {
                Ok(Some(true)) => routes
                    .hub
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .serve(stream, peer),
                Ok(Some(false)) => routes.relay.serve(stream, peer),
                _ => tracing::debug!(%peer, "fallback server: no request"),
            }
        });
    }
}

/// Whether the request (read without consuming it) asks for the hub's path.
async fn asks_for_hub(stream: &TcpStream) -> Option<bool> {
    let wanted = format!("GET {LINK_PATH}");
    let mut buffer = [0u8; 16];
    loop {
        let read = stream.peek(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        let seen = buffer.get(..read)?;
        let compared = read.min(wanted.len());
        if seen.get(..compared) != wanted.as_bytes().get(..compared) {
            return Some(false);
        }
        if read > wanted.len() {
            // `/link` itself or `/link?...`, not `/links`.
            return Some(matches!(buffer.get(wanted.len()), Some(b' ' | b'?' | b'/')));
        }
        // Part of the request line is here: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
