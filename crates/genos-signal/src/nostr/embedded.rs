//! The embedded relay: "run your own relay", in-process or as `genos relay`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_relay_builder::LocalRelay;
use nostr_relay_builder::builder::{
    RateLimit, RelayBuilder, RelayBuilderNip42, RelayBuilderNip42Mode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::SignalError;

/// Limits of the embedded relay, set for signaling traffic.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddedRelayConfig {
    /// Address to listen on. Default `127.0.0.1:0` (a free port on loopback).
    pub addr: SocketAddr,
    /// Simultaneous WebSocket connections. Default 4096.
    pub max_connections: usize,
    /// Connections still in their HTTP upgrade at once. Default 256. Beyond it the oldest
    /// is closed: a flood of connections that never upgrade cannot shut out real clients
    /// (which upgrade in milliseconds), and holds at most this many tasks and sockets.
    pub max_pending_upgrades: usize,
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
            max_pending_upgrades: 256,
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

    /// Holds at most `count` connections in their HTTP upgrade (the oldest beyond it closed).
    pub fn with_max_pending_upgrades(mut self, count: usize) -> Self {
        self.max_pending_upgrades = count;
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
    upgrades: Arc<Upgrades>,
    accept: Option<tokio::task::AbortHandle>,
}

/// Largest HTTP upgrade request read before the WebSocket starts.
const MAX_UPGRADE_REQUEST: usize = 8 * 1024;
/// Time a client has to complete the HTTP upgrade.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

impl EmbeddedRelay {
    /// Starts a relay and waits until it listens.
    pub async fn start(config: EmbeddedRelayConfig) -> Result<Self, SignalError> {
        // Our own accept loop rather than `LocalRelay::run`: it turns Nagle off on every
        // connection. Signaling is many small messages in a row; with Nagle and the peer's
        // delayed ACKs each hop through the relay waited tens of milliseconds.
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|e| SignalError::Unavailable(format!("embedded relay: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SignalError::Unavailable(format!("embedded relay: {e}")))?;
        let mut relay = Self::detached(&config, format!("ws://{addr}"));
        let accept = tokio::spawn(accept_loop(
            listener,
            relay.relay.clone(),
            relay.upgrades.clone(),
        ));
        relay.accept = Some(accept.abort_handle());
        Ok(relay)
    }

    /// A relay without a listener of its own, reachable at `url`: hand it connections
    /// accepted elsewhere with [`EmbeddedRelay::serve`] (`genos serve` shares one port
    /// between its relay and its fallback hub). `config.addr` is not used.
    pub fn detached(config: &EmbeddedRelayConfig, url: impl Into<String>) -> Self {
        let mut builder = RelayBuilder::default()
            .max_connections(config.max_connections)
            .rate_limit(RateLimit {
                max_reqs: config.max_subscriptions,
                notes_per_minute: config.events_per_minute,
            });
        if let Some(difficulty) = config.min_pow {
            builder = builder.min_pow(difficulty);
        }
        if config.require_auth {
            builder = builder.nip42(RelayBuilderNip42 {
                mode: RelayBuilderNip42Mode::Both,
            });
        }
        Self {
            relay: LocalRelay::new(builder),
            url: url.into(),
            upgrades: Arc::new(Upgrades {
                pending: Mutex::default(),
                next: std::sync::atomic::AtomicU64::new(0),
                max_pending: config.max_pending_upgrades.max(1),
            }),
            accept: None,
        }
    }

    /// Serves one TCP connection whose WebSocket upgrade is not read yet.
    pub fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        admit(&self.relay, &self.upgrades, stream, peer);
    }

    /// The relay's `ws://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops accepting connections.
    pub fn shutdown(&self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        self.relay.shutdown();
    }
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Upgrades in progress, oldest first (beyond `max_pending` the oldest is closed).
#[derive(Debug)]
struct Upgrades {
    pending: Mutex<VecDeque<(u64, tokio::task::AbortHandle)>>,
    next: std::sync::atomic::AtomicU64,
    max_pending: usize,
}

async fn accept_loop(listener: TcpListener, relay: LocalRelay, upgrades: Arc<Upgrades>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => admit(&relay, &upgrades, stream, peer),
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "embedded relay cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn admit(relay: &LocalRelay, upgrades: &Arc<Upgrades>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let id = upgrades
        .next
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let relay = relay.clone();
    let registry = upgrades.clone();
    // Locked across the spawn, so the task cannot finish (and unregister) before it is
    // registered.
    let mut queue = upgrades.pending.lock().unwrap_or_else(|p| p.into_inner());
    let handshake = tokio::spawn(async move {
        let upgraded = tokio::time::timeout(UPGRADE_TIMEOUT, upgrade(stream)).await;
        registry
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(other, _)| *other != id);
        match upgraded {
            // Its own task: closing the oldest handshake must never reach a connection.
            Ok(Ok(stream)) => drop(tokio::spawn(async move {
                if let Err(error) = relay.take_connection(stream, peer).await {
                    tracing::debug!(%error, "embedded relay connection ended");
                }
            })),
            Ok(Err(error)) => tracing::debug!(%error, "refused a WebSocket upgrade"),
            Err(_) => tracing::debug!("a WebSocket upgrade timed out"),
        }
    });
    queue.push_back((id, handshake.abort_handle()));
    while queue.len() > upgrades.max_pending {
        if let Some((_, oldest)) = queue.pop_front() {
            tracing::debug!("closed the oldest pending WebSocket upgrade");
            oldest.abort();
        }
    }
}

/// Answers the HTTP upgrade of a WebSocket client (RFC 6455 §4.2) and returns the stream
/// ready for WebSocket frames.
async fn upgrade(mut stream: TcpStream) -> std::io::Result<TcpStream> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut request = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !request.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Err(invalid("closed during the upgrade"));
        }
        request.extend_from_slice(buffer.get(..read).unwrap_or_default());
        if request.len() > MAX_UPGRADE_REQUEST {
            return Err(invalid("upgrade request too large"));
        }
    }
    let text =
        std::str::from_utf8(&request).map_err(|_| invalid("upgrade request is not UTF-8"))?;
    let mut key = None;
    let mut websocket = false;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value);
        } else if name.eq_ignore_ascii_case("upgrade") && value.eq_ignore_ascii_case("websocket") {
            websocket = true;
        }
    }
    let key = key
        .filter(|_| websocket)
        .ok_or_else(|| invalid("not a WebSocket upgrade"));
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return Err(error);
        }
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(stream)
}
