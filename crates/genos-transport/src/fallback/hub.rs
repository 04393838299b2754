//! The fallback hub: pairs the two ends of each circuit and forwards their frames.
//!
//! It never reads a payload (the room layer seals them); it checks only that each message
//! is a peer frame of allowed size. Everything is bounded: connections in total and per
//! address, circuits per room tag, the wait for a partner, the time to say hello, and one
//! message in flight per direction (a slow reader slows its sender through TCP, nothing
//! piles up here).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::wire::{self, CircuitId, Frame, Hello, RoomTag};
use crate::TransportError;
use crate::shared::lock;

/// Limits and access control of a [`FallbackHub`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FallbackHubConfig {
    /// Address to listen on (for [`FallbackHub::start`]). Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// The token clients must present; `None` admits everyone. Default `None`.
    pub token: Option<String>,
    /// WebSocket connections at once. Default 4096; beyond it new ones are closed.
    pub max_connections: usize,
    /// Connections at once from one IP address. Default 256.
    pub max_per_address: usize,
    /// Circuits (waiting or paired) at once per room tag. Default 1024.
    pub max_per_room: usize,
    /// How long an end waits for its partner. Default 30 s.
    pub pair_timeout: Duration,
    /// Largest message forwarded. Default 1 MiB + 64 bytes (a full media sample).
    pub max_message_size: usize,
}

impl Default for FallbackHubConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            max_connections: 4096,
            max_per_address: 256,
            max_per_room: 1024,
            pair_timeout: Duration::from_secs(30),
            max_message_size: crate::media::MAX_SAMPLE_SIZE + 64,
        }
    }
}

impl FallbackHubConfig {
    /// Listens on `addr`.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Admits only clients presenting `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// Counters of a hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Circuits paired since start.
    pub circuits_paired: u64,
    /// Circuits live now (paired and forwarding).
    pub circuits_live: u64,
    /// Connections refused (token, quota, malformed hello, no partner in time).
    pub refused: u64,
    /// Messages forwarded.
    pub messages_forwarded: u64,
    /// Bytes forwarded.
    pub bytes_forwarded: u64,
}

/// Time a client has to say hello after the WebSocket opened.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<TcpStream>;

/// An end waiting for its partner.
struct Waiting {
    offerer: bool,
    /// Takes the partner's socket and its quota.
    partner: oneshot::Sender<(Socket, Admitted)>,
}

#[derive(Default)]
struct Book {
    connections: usize,
    per_address: HashMap<IpAddr, usize>,
    per_room: HashMap<RoomTag, usize>,
    waiting: HashMap<CircuitId, Waiting>,
}

struct HubState {
    config: FallbackHubConfig,
    book: Mutex<Book>,
    paired: AtomicU64,
    live: AtomicU64,
    refused: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    /// Set when the hub stops: every connection's task ends.
    stopped: tokio::sync::watch::Sender<bool>,
}

/// A fallback hub in this process: [`FallbackHub::start`] listens on its own port;
/// [`FallbackHub::serve`] takes connections accepted elsewhere (`genos serve` shares one
/// port between its relay and its hub). Stops when dropped.
pub struct FallbackHub {
    state: Arc<HubState>,
    url: Option<String>,
    accept: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for FallbackHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackHub")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl FallbackHub {
    /// A hub without a listener of its own: hand it connections with [`FallbackHub::serve`].
    pub fn new(config: FallbackHubConfig) -> Self {
        Self {
            state: Arc::new(HubState {
                config,
                book: Mutex::default(),
                paired: AtomicU64::new(0),
                live: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                messages: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                stopped: tokio::sync::watch::Sender::new(false),
            }),
            url: None,
            accept: None,
        }
    }

    /// Starts a hub listening on `config.addr`.
    pub async fn start(config: FallbackHubConfig) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|e| TransportError::InvalidConfig(format!("fallback hub: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TransportError::InvalidConfig(format!("fallback hub: {e}")))?;
        let mut hub = Self::new(config);
        let state = hub.state.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => serve(&state, stream, peer),
                    Err(error) => {
                        tracing::warn!(%error, "fallback hub cannot accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        hub.url = Some(format!("ws://{addr}"));
        hub.accept = Some(accept.abort_handle());
        Ok(hub)
    }

    /// The `ws://` URL of a hub made with [`FallbackHub::start`].
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Serves one TCP connection (its WebSocket upgrade not read yet).
    pub fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        serve(&self.state, stream, peer);
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HubStats {
            circuits_paired: get(&self.state.paired),
            circuits_live: get(&self.state.live),
            refused: get(&self.state.refused),
            messages_forwarded: get(&self.state.messages),
            bytes_forwarded: get(&self.state.bytes),
        }
    }
}

impl FallbackHub {
    /// Stops the hub: no new connections, and every circuit is cut (both ends see their
    /// link fail), as when its process ends.
    pub fn shutdown(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.state.stopped.send_replace(true);
    }
}

impl Drop for FallbackHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Releases a connection's quota when its task ends, however it ends.
struct Admitted {
    state: Arc<HubState>,
    address: IpAddr,
    room: Option<RoomTag>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut book = lock(&self.state.book);
        book.connections = book.connections.saturating_sub(1);
        if let Some(count) = book.per_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                book.per_address.remove(&self.address);
            }
        }
        if let Some(room) = self.room
            && let Some(count) = book.per_room.get_mut(&room)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                book.per_room.remove(&room);
            }
        }
    }
}

fn serve(state: &Arc<HubState>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let admitted = {
        let mut book = lock(&state.book);
        let config = &state.config;
        let from_address = book.per_address.get(&peer.ip()).copied().unwrap_or(0);
        if book.connections >= config.max_connections || from_address >= config.max_per_address {
            None
        } else {
            book.connections += 1;
            *book.per_address.entry(peer.ip()).or_default() += 1;
            Some(Admitted {
                state: state.clone(),
                address: peer.ip(),
                room: None,
            })
        }
    };
    let Some(admitted) = admitted else {
        state.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "fallback hub over its connection limits");
        drop(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await;
        }));
        return;
    };
    let mut stopped = state.stopped.subscribe();
    drop(tokio::spawn(async move {
        tokio::select! {
            () = handle(admitted, stream) => {}
            _ = stopped.wait_for(|stopped| *stopped) => {}
        }
    }));
}

async fn refuse(state: &HubState, socket: &mut Socket, reason: &str) {
    state.refused.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(reason, "fallback hub refused a circuit");
    let mut message = vec![wire::HUB_REFUSED];
    message.extend_from_slice(reason.as_bytes());
    let _ = socket.send(Message::Binary(message.into())).await;
    let _ = socket.close(None).await;
}

async fn handle(mut admitted: Admitted, stream: TcpStream) {
    let state = admitted.state.clone();
    let config = &state.config;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let opening = async {
        let mut socket = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config))
            .await
            .ok()?;
        loop {
            match socket.next().await? {
                Ok(Message::Binary(hello)) => return Some((socket, Hello::decode(&hello))),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                _ => return None,
            }
        }
    };
    let Ok(Some((mut socket, hello))) = tokio::time::timeout(HELLO_TIMEOUT, opening).await else {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Some(hello) = hello else {
        return refuse(&state, &mut socket, "malformed hello").await;
    };
    if let Some(token) = &config.token
        && !constant_time_eq(token.as_bytes(), hello.token.as_bytes())
    {
        return refuse(&state, &mut socket, "wrong token").await;
    }
    // Either we find the partner waiting (and hand it our socket), or we wait for it.
    let decision = {
        let mut book = lock(&state.book);
        match book.waiting.remove(&hello.circuit) {
            Some(partner) if partner.offerer != hello.offerer => Decision::Join(partner),
            // Two ends of the same side: neither is genuine; both go.
            Some(_) => Decision::Refuse("the circuit's other end plays the same role"),
            None if book.per_room.get(&hello.room).copied().unwrap_or(0) >= config.max_per_room => {
                Decision::Refuse("the room's circuit quota is used up")
            }
            None => {
                *book.per_room.entry(hello.room).or_default() += 1;
                admitted.room = Some(hello.room);
                let (partner, arrives) = oneshot::channel();
                let waiting = Waiting {
                    offerer: hello.offerer,
                    partner,
                };
                book.waiting.insert(hello.circuit, waiting);
                Decision::Wait(arrives)
            }
        }
    };
    match decision {
        Decision::Join(partner) => {
            if let Err((mut socket, _admitted)) = partner.partner.send((socket, admitted)) {
                refuse(&state, &mut socket, "the partner left").await;
            }
        }
        Decision::Refuse(reason) => refuse(&state, &mut socket, reason).await,
        Decision::Wait(arrives) => {
            wait_for_partner(admitted, socket, hello.circuit, arrives).await;
        }
    }
}

/// What a newly arrived end does.
enum Decision {
    /// Its partner waits: hand it our socket.
    Join(Waiting),
    /// Wait for the partner.
    Wait(oneshot::Receiver<(Socket, Admitted)>),
    Refuse(&'static str),
}

async fn wait_for_partner(
    admitted: Admitted,
    mut socket: Socket,
    circuit: CircuitId,
    arrives: oneshot::Receiver<(Socket, Admitted)>,
) {
    let state = admitted.state.clone();
    let partner = tokio::select! {
        partner = tokio::time::timeout(state.config.pair_timeout, arrives) => {
            partner.ok().and_then(Result::ok)
        }
        // A client that leaves (or talks) before pairing gives up its circuit.
        _ = socket.next() => None,
    };
    let Some((partner, partner_admitted)) = partner else {
        lock(&state.book).waiting.remove(&circuit);
        return refuse(&state, &mut socket, "no partner came in time").await;
    };
    state.paired.fetch_add(1, Ordering::Relaxed);
    state.live.fetch_add(1, Ordering::Relaxed);
    forward(&state, socket, partner).await;
    state.live.fetch_sub(1, Ordering::Relaxed);
    drop((admitted, partner_admitted));
}

/// Tells both ends they are paired, then forwards each one's frames to the other until
/// either leaves; then both are closed.
async fn forward(state: &HubState, mut a: Socket, mut b: Socket) {
    let paired = Message::Binary(vec![wire::HUB_PAIRED].into());
    if a.send(paired.clone()).await.is_err() || b.send(paired).await.is_err() {
        return;
    }
    let (mut a_sink, mut a_stream) = a.split();
    let (mut b_sink, mut b_stream) = b.split();
    tokio::select! {
        () = one_way(state, &mut a_stream, &mut b_sink) => {}
        () = one_way(state, &mut b_stream, &mut a_sink) => {}
    }
    let _ = a_sink.close().await;
    let _ = b_sink.close().await;
}

/// Forwards peer frames from one end to the other, one at a time (so a slow reader slows
/// the sender down through TCP instead of filling the hub's memory).
async fn one_way(
    state: &HubState,
    from: &mut futures::stream::SplitStream<Socket>,
    to: &mut futures::stream::SplitSink<Socket, Message>,
) {
    while let Some(Ok(message)) = from.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        if !Frame::is_peer_frame(&bytes) {
            return;
        }
        state.messages.fetch_add(1, Ordering::Relaxed);
        state.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if to.send(Message::Binary(bytes)).await.is_err() {
            return;
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
