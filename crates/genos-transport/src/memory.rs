//! `MemoryTransport`: bounded in-process connection pairs with fault injection.
//!
//! All clones of a [`MemoryTransport`] form one network. An offerer's signal names a pending
//! connection of that network; the answerer that handles it is linked to it. Everything the
//! real transports do that the layers above depend on is emulated:
//!
//! - **bounded buffers**: each channel direction holds at most
//!   [`MemoryTransportConfig::send_buffer`] bytes, each message costing its length plus
//!   [`MESSAGE_OVERHEAD`] bytes (so the number of queued messages is bounded too). A reliable
//!   send waits for room; an unreliable send that finds no room drops the message and counts
//!   it in [`ConnectionStats::messages_dropped`];
//! - **loss** on unreliable channels, seeded: [`MemoryTransportConfig::unreliable_loss`];
//! - **latency**: each message is held for [`MemoryTransportConfig::latency`] plus a seeded
//!   uniform jitter up to [`MemoryTransportConfig::jitter`] before the receiver gets it; a
//!   message never overtakes an earlier one of its direction (jitter delays, never reorders),
//!   and a held message keeps its place in the send buffer until it is delivered;
//! - **faults**: [`MemoryConnection::fault_drop_link`] cuts the link (both sides report
//!   [`ConnectionState::Failed`]); [`MemoryConnection::fault_stall`] freezes delivery in both
//!   directions until released, so buffers fill and backpressure shows;
//! - **limits**: message size, channels per connection, pending offers, event queue.
//!
//! Connection events go through a bounded queue of
//! [`MemoryTransportConfig::events_capacity`]: signals and opened channels wait for room,
//! state changes are dropped when it is full ([`Connection::state`] always tells the truth).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::media::{LocalTrack, RemoteFeed, TrackBook, TrackSpec};
use crate::shared::{self, Counters, lock};
use crate::{
    Connection, ConnectionEvent, ConnectionState, ConnectionStats, DataChannel, Reliability, Role,
    Transport, TransportError, TransportLimits,
};

/// Bytes of send buffer each queued message costs on top of its length.
pub const MESSAGE_OVERHEAD: usize = 64;

pub use crate::shared::MAX_LABEL_LEN;

const SIGNAL_MAGIC: &[u8; 5] = b"MEMv1";
const SIGNAL_LEN: usize = SIGNAL_MAGIC.len() + 1 + 8 + 8;
const KIND_OFFER: u8 = 1;
const KIND_ANSWER: u8 = 2;

/// Knobs of a [`MemoryTransport`] network.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryTransportConfig {
    /// Largest message per send. Default 64 KiB, as WebRTC data channels.
    pub max_message_size: usize,
    /// Bytes each channel direction buffers. Default 1 MiB. Raised to at least
    /// `max_message_size + MESSAGE_OVERHEAD` so any accepted message fits.
    pub send_buffer: usize,
    /// Channels each side of a connection may open. Default 64.
    pub max_channels: usize,
    /// Capacity of each connection's event queue. Default 256.
    pub events_capacity: usize,
    /// Offers waiting for an answer across the network. Default 1024.
    pub max_pending_offers: usize,
    /// Probability in `[0, 1]` that an unreliable message is lost. Default 0.
    pub unreliable_loss: f64,
    /// Seed of the loss and jitter generator. Default 0.
    pub seed: u64,
    /// One-way delay of every message. Default 0: delivered as soon as it is sent.
    pub latency: Duration,
    /// Uniform random extra delay in `[0, jitter]` per message. Default 0.
    pub jitter: Duration,
}

impl Default for MemoryTransportConfig {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024,
            send_buffer: 1024 * 1024,
            max_channels: 64,
            events_capacity: 256,
            max_pending_offers: 1024,
            unreliable_loss: 0.0,
            seed: 0,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
        }
    }
}

impl MemoryTransportConfig {
    /// Sets the largest message per send.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the per-direction buffer size.
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes;
        self
    }

    /// Sets the channel limit per side.
    pub fn with_max_channels(mut self, channels: usize) -> Self {
        self.max_channels = channels;
        self
    }

    /// Sets the loss probability of unreliable channels and the generator's seed.
    pub fn with_unreliable_loss(mut self, loss: f64, seed: u64) -> Self {
        self.unreliable_loss = loss;
        self.seed = seed;
        self
    }

    /// Sets the one-way delay of every message and its random extra (the jitter's
    /// generator is the loss generator, seeded with [`MemoryTransportConfig::seed`]).
    pub fn with_latency(mut self, latency: Duration, jitter: Duration) -> Self {
        self.latency = latency;
        self.jitter = jitter;
        self
    }

    /// Sets the limit on offers waiting for an answer.
    pub fn with_max_pending_offers(mut self, offers: usize) -> Self {
        self.max_pending_offers = offers;
        self
    }

    fn normalized(mut self) -> Result<Self, TransportError> {
        if !(0.0..=1.0).contains(&self.unreliable_loss) {
            return Err(TransportError::InvalidConfig(format!(
                "unreliable_loss must be within [0, 1], got {}",
                self.unreliable_loss
            )));
        }
        if self.max_message_size == 0 || self.events_capacity == 0 {
            return Err(TransportError::InvalidConfig(
                "max_message_size and events_capacity must be at least 1".into(),
            ));
        }
        if u32::try_from(self.send_buffer).is_err() {
            return Err(TransportError::InvalidConfig(
                "send_buffer must fit in 32 bits".into(),
            ));
        }
        self.send_buffer = self
            .send_buffer
            .max(self.max_message_size + MESSAGE_OVERHEAD);
        Ok(self)
    }
}

struct Network {
    config: MemoryTransportConfig,
    /// Distinguishes networks so a signal from another one is refused.
    network_id: u64,
    next_token: AtomicU64,
    pending: Mutex<HashMap<u64, Weak<ConnShared>>>,
    rng: Mutex<SmallRng>,
}

/// An in-process transport; clones share one network. See the [module docs](self).
#[derive(Clone)]
pub struct MemoryTransport {
    net: Arc<Network>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("config", &self.net.config)
            .finish()
    }
}

impl MemoryTransport {
    /// A new network. An invalid configuration is corrected (loss clamped, zero sizes
    /// raised to 1); use [`MemoryTransport::try_new`] to have it refused instead.
    pub fn new(mut config: MemoryTransportConfig) -> Self {
        config.unreliable_loss = config.unreliable_loss.clamp(0.0, 1.0);
        config.max_message_size = config.max_message_size.max(1);
        config.events_capacity = config.events_capacity.max(1);
        config.send_buffer = config.send_buffer.min(u32::MAX as usize);
        match config.clone().normalized() {
            Ok(config) => Self::build(config),
            Err(_) => Self::build(MemoryTransportConfig::default()),
        }
    }

    /// A new network, refusing an invalid configuration.
    pub fn try_new(config: MemoryTransportConfig) -> Result<Self, TransportError> {
        Ok(Self::build(config.normalized()?))
    }

    fn build(config: MemoryTransportConfig) -> Self {
        let network_id = rand::rng().random();
        let rng = SmallRng::seed_from_u64(config.seed);
        Self {
            net: Arc::new(Network {
                config,
                network_id,
                next_token: AtomicU64::new(1),
                pending: Mutex::new(HashMap::new()),
                rng: Mutex::new(rng),
            }),
        }
    }

    /// The network's configuration (after normalization).
    pub fn config(&self) -> &MemoryTransportConfig {
        &self.net.config
    }
}

struct ConnShared {
    net: Arc<Network>,
    role: Role,
    token: u64,
    state: watch::Sender<ConnectionState>,
    events: mpsc::Sender<ConnectionEvent<MemoryChannel>>,
    /// The link and this side's index in it, once paired.
    link: Mutex<Option<(Arc<Link>, usize)>>,
    channels_opened: AtomicUsize,
    counters: Arc<Counters>,
    tracks: Mutex<TrackBook>,
}

impl ConnShared {
    fn set_state(&self, state: ConnectionState) {
        let previous = self.state.send_replace(state);
        if previous != state {
            // State changes are advisory on the queue; `state()` always has the truth.
            let _ = self.events.try_send(ConnectionEvent::StateChanged(state));
        }
    }

    fn link(&self) -> Option<(Arc<Link>, usize)> {
        lock(&self.link).clone()
    }
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        lock(&self.net.pending).remove(&self.token);
        if let Some((link, _)) = lock(&self.link).take() {
            link.take_down(ConnectionState::Closed);
        }
    }
}

struct Link {
    /// The offerer's and the answerer's side.
    ends: [Weak<ConnShared>; 2],
    stalled: watch::Sender<bool>,
    directions: Mutex<Vec<Arc<Direction>>>,
    /// The remote ends of every live track, by track serial: ended with the link.
    feeds: Mutex<HashMap<u64, RemoteFeed>>,
    down: AtomicBool,
}

impl Link {
    fn take_down(&self, state: ConnectionState) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        for direction in lock(&self.directions).drain(..) {
            direction.shut();
        }
        lock(&self.feeds).clear();
        for end in &self.ends {
            if let Some(end) = end.upgrade() {
                end.set_state(state);
            }
        }
    }
}

/// One direction of a channel: a queue bounded by a byte budget.
/// A message on its way, held until `due` (the latency knobs).
struct InFlight {
    due: Option<tokio::time::Instant>,
    message: Bytes,
}

/// The receiving end of a direction. `held` keeps a message taken off the queue while it
/// waits out its latency, so a `recv` cancelled meanwhile loses nothing.
struct Inbound {
    queue: mpsc::UnboundedReceiver<InFlight>,
    held: Option<InFlight>,
}

struct Direction {
    sender: Mutex<Option<mpsc::UnboundedSender<InFlight>>>,
    /// When the last message sent this way is due: later ones are never due earlier.
    last_due: Mutex<Option<tokio::time::Instant>>,
    budget: Semaphore,
    limit: usize,
    /// Index in the link of the side that sends.
    from_side: usize,
    sender_counters: Arc<Counters>,
    receiver_counters: Arc<Counters>,
}

impl Direction {
    fn shut(&self) {
        lock(&self.sender).take();
        self.budget.close();
    }

    fn buffered(&self) -> usize {
        self.limit.saturating_sub(self.budget.available_permits())
    }
}

fn cost(message: &Bytes) -> usize {
    message.len() + MESSAGE_OVERHEAD
}

/// A connection of a [`MemoryTransport`].
#[derive(Clone)]
pub struct MemoryConnection {
    shared: Arc<ConnShared>,
}

impl std::fmt::Debug for MemoryConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryConnection")
            .field("role", &self.shared.role)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

/// The event stream of a [`MemoryConnection`].
pub type MemoryEvents = crate::EventStream<MemoryChannel>;

fn encode_signal(kind: u8, network_id: u64, token: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(SIGNAL_LEN);
    out.put_slice(SIGNAL_MAGIC);
    out.put_u8(kind);
    out.put_u64(network_id);
    out.put_u64(token);
    out.freeze()
}

fn decode_signal(mut message: Bytes) -> Result<(u8, u64, u64), TransportError> {
    if message.len() != SIGNAL_LEN || !message.starts_with(SIGNAL_MAGIC) {
        return Err(TransportError::InvalidSignal(format!(
            "not a memory-transport signal ({} bytes)",
            message.len()
        )));
    }
    message.advance(SIGNAL_MAGIC.len());
    Ok((message.get_u8(), message.get_u64(), message.get_u64()))
}

impl Transport for MemoryTransport {
    type Connection = MemoryConnection;
    type Events = MemoryEvents;

    async fn connect(
        &self,
        role: Role,
    ) -> Result<(MemoryConnection, MemoryEvents), TransportError> {
        let net = &self.net;
        let (events, stream) = crate::EventStream::new(net.config.events_capacity);
        let token = net.next_token.fetch_add(1, Ordering::Relaxed);
        let initial = match role {
            Role::Offerer => ConnectionState::Connecting,
            Role::Answerer => ConnectionState::New,
        };
        let shared = Arc::new(ConnShared {
            net: net.clone(),
            role,
            token,
            state: watch::Sender::new(initial),
            events,
            link: Mutex::new(None),
            channels_opened: AtomicUsize::new(0),
            counters: Arc::new(Counters::default()),
            tracks: Mutex::new(TrackBook::default()),
        });
        if role == Role::Offerer {
            {
                let mut pending = lock(&net.pending);
                if pending.len() >= net.config.max_pending_offers {
                    pending.retain(|_, conn| conn.strong_count() > 0);
                }
                if pending.len() >= net.config.max_pending_offers {
                    return Err(TransportError::ResourceLimit(format!(
                        "{} offers are already waiting for an answer",
                        pending.len()
                    )));
                }
                pending.insert(token, Arc::downgrade(&shared));
            }
            let offer = encode_signal(KIND_OFFER, net.network_id, token);
            // The queue is fresh, so there is room for the offer.
            let _ = shared.events.try_send(ConnectionEvent::Signal(offer));
        }
        Ok((MemoryConnection { shared }, stream))
    }
}

impl MemoryConnection {
    /// Fault injection: cuts the link as if the network failed. Both sides report
    /// [`ConnectionState::Failed`] and their channels end.
    pub fn fault_drop_link(&self) {
        if let Some((link, _)) = self.shared.link() {
            link.take_down(ConnectionState::Failed);
        }
    }

    /// Fault injection: freezes (`true`) or releases (`false`) delivery in both directions.
    /// While frozen, buffers fill and reliable sends wait.
    pub fn fault_stall(&self, stalled: bool) {
        if let Some((link, _)) = self.shared.link() {
            link.stalled.send_replace(stalled);
        }
    }

    async fn accept_offer(&self, network_id: u64, token: u64) -> Result<(), TransportError> {
        let me = &self.shared;
        if me.role != Role::Answerer || *me.state.borrow() != ConnectionState::New {
            return Err(TransportError::InvalidSignal(
                "unexpected offer: this side is not a fresh answerer".into(),
            ));
        }
        if network_id != me.net.network_id {
            return Err(TransportError::InvalidSignal(
                "offer from another network".into(),
            ));
        }
        let offerer = lock(&me.net.pending)
            .remove(&token)
            .and_then(|weak| weak.upgrade())
            .ok_or_else(|| TransportError::InvalidSignal("offer names no pending offer".into()))?;
        let link = Arc::new(Link {
            ends: [Arc::downgrade(&offerer), Arc::downgrade(me)],
            stalled: watch::Sender::new(false),
            directions: Mutex::new(Vec::new()),
            feeds: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
        });
        *lock(&offerer.link) = Some((link.clone(), 0));
        *lock(&me.link) = Some((link, 1));
        me.set_state(ConnectionState::Connected);
        let answer = encode_signal(KIND_ANSWER, network_id, token);
        me.events
            .send(ConnectionEvent::Signal(answer))
            .await
            .map_err(|_| TransportError::NotConnected(ConnectionState::Closed))
    }

    fn accept_answer(&self, network_id: u64, token: u64) -> Result<(), TransportError> {
        let me = &self.shared;
        let expected = me.role == Role::Offerer
            && network_id == me.net.network_id
            && token == me.token
            && *me.state.borrow() == ConnectionState::Connecting;
        if !expected {
            return Err(TransportError::InvalidSignal(
                "answer does not match this connection's offer".into(),
            ));
        }
        match me.link() {
            Some((link, _)) if !link.down.load(Ordering::Acquire) => {
                me.set_state(ConnectionState::Connected);
                Ok(())
            }
            _ => Err(TransportError::InvalidSignal(
                "answer arrived but the link is gone".into(),
            )),
        }
    }
}

impl Connection for MemoryConnection {
    type Channel = MemoryChannel;

    fn role(&self) -> Role {
        self.shared.role
    }

    fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    fn limits(&self) -> TransportLimits {
        let config = &self.shared.net.config;
        TransportLimits::new(
            config.max_message_size,
            config.send_buffer,
            config.max_channels,
        )
    }

    async fn handle_signal(&self, message: Bytes) -> Result<(), TransportError> {
        let (kind, network_id, token) = decode_signal(message)?;
        match kind {
            KIND_OFFER => self.accept_offer(network_id, token).await,
            KIND_ANSWER => self.accept_answer(network_id, token),
            other => Err(TransportError::InvalidSignal(format!(
                "unknown signal kind {other}"
            ))),
        }
    }

    async fn open_channel(
        &self,
        label: &str,
        reliability: Reliability,
    ) -> Result<MemoryChannel, TransportError> {
        shared::check_label(label)?;
        shared::wait_connected(&self.shared.state).await?;
        let me = &self.shared;
        let limit = me.net.config.max_channels;
        if me.channels_opened.fetch_add(1, Ordering::AcqRel) >= limit {
            me.channels_opened.fetch_sub(1, Ordering::AcqRel);
            return Err(TransportError::TooManyChannels { limit });
        }
        let closed = TransportError::NotConnected(ConnectionState::Closed);
        let (link, side) = me.link().ok_or(closed.clone())?;
        let remote = link
            .ends
            .get(1 - side)
            .and_then(Weak::upgrade)
            .ok_or(closed.clone())?;
        let config = &me.net.config;
        let make = |from_side: usize, from: &Arc<Counters>, to: &Arc<Counters>| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let direction = Arc::new(Direction {
                sender: Mutex::new(Some(sender)),
                last_due: Mutex::new(None),
                budget: Semaphore::new(config.send_buffer),
                limit: config.send_buffer,
                from_side,
                sender_counters: from.clone(),
                receiver_counters: to.clone(),
            });
            (direction, receiver)
        };
        let (outbound, outbound_rx) = make(side, &me.counters, &remote.counters);
        let (inbound, inbound_rx) = make(1 - side, &remote.counters, &me.counters);
        {
            let mut directions = lock(&link.directions);
            if link.down.load(Ordering::Acquire) {
                return Err(closed);
            }
            directions.push(outbound.clone());
            directions.push(inbound.clone());
        }
        let end = |outbound: Arc<Direction>, inbound: Arc<Direction>, receiver| MemoryChannel {
            inner: Arc::new(ChannelEnd {
                label: label.to_owned(),
                reliability,
                max_message_size: config.max_message_size,
                outbound,
                inbound,
                receiver: tokio::sync::Mutex::new(Inbound {
                    queue: receiver,
                    held: None,
                }),
                link: link.clone(),
                net: me.net.clone(),
            }),
        };
        let local = end(outbound.clone(), inbound.clone(), inbound_rx);
        let remote_end = end(inbound, outbound, outbound_rx);
        if remote
            .events
            .send(ConnectionEvent::ChannelOpened(remote_end))
            .await
            .is_err()
        {
            local.close().await;
            return Err(TransportError::ChannelClosed);
        }
        Ok(local)
    }

    async fn stats(&self) -> ConnectionStats {
        let buffered_bytes = self.shared.link().map_or(0, |(link, side)| {
            lock(&link.directions)
                .iter()
                .filter(|direction| direction.from_side == side)
                .map(|direction| direction.buffered() as u64)
                .sum()
        });
        self.shared.counters.snapshot(buffered_bytes)
    }

    async fn add_track(&self, spec: TrackSpec) -> Result<LocalTrack, TransportError> {
        spec.validate()?;
        shared::wait_connected(&self.shared.state).await?;
        media::add_track(&self.shared, spec)
    }

    async fn remove_track(&self, track: &LocalTrack) -> Result<(), TransportError> {
        track.remove(shared::owner_of(&self.shared)).await.map(drop)
    }

    async fn close(&self) {
        lock(&self.shared.net.pending).remove(&self.shared.token);
        match self.shared.link() {
            Some((link, _)) => link.take_down(ConnectionState::Closed),
            None => self.shared.set_state(ConnectionState::Closed),
        }
    }
}

struct ChannelEnd {
    label: String,
    reliability: Reliability,
    max_message_size: usize,
    outbound: Arc<Direction>,
    inbound: Arc<Direction>,
    receiver: tokio::sync::Mutex<Inbound>,
    link: Arc<Link>,
    net: Arc<Network>,
}

mod channel;
mod media;
pub use self::channel::MemoryChannel;

#[cfg(test)]
mod tests;
