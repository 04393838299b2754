//! `FallbackTransport`: links carried through a fallback server instead of directly.
//!
//! Some pairs of peers never connect directly: UDP is blocked, or both sit behind NATs that
//! defeat ICE and no TURN server is at hand. A fallback server (`genos serve`, or a
//! [`FallbackHub`] in any process) carries their link: each end opens a WebSocket to the
//! hub, names the same random *circuit* (chosen by the offerer and sent in its offer, which
//! the room layer seals), and the hub forwards every message of one end to the other. The
//! hub learns the circuit id, an opaque room tag and the peers' addresses; it cannot read a
//! room's frames, which the room layer seals before they reach any transport.
//!
//! A connection behaves like every other backend's (the conformance suite runs against it):
//!
//! - **setup**: the offerer's one signal is the offer (circuit id); the answerer's, an answer
//!   naming the same circuit.
//!   Both report [`ConnectionState::Connected`] once the hub paired them, and
//!   [`ConnectionState::Failed`] when the hub refuses (wrong token, quota; the reason is in
//!   [`FallbackConnection::failure`]) or nobody pairs within
//!   [`FallbackConfig::pair_timeout`];
//! - **channels** are multiplexed on the WebSocket with per-channel credit: a reliable
//!   sender holds at most [`FallbackConfig::window`] bytes the receiver has not read, so one
//!   channel whose reader stalls never blocks the others, and backpressure reaches the
//!   sender; an unreliable send that finds no credit is dropped and counted. Messages are
//!   never lost or reordered while the link lives (it is TCP underneath);
//! - **tracks** travel as frames too (samples are not paced: the link is TCP);
//! - **ending**: [`Connection::close`] is seen by the remote as
//!   [`ConnectionState::Closed`]; a lost hub or WebSocket as [`ConnectionState::Failed`].
//!   Nothing is resent on a new circuit: the layer above sees the link end and redials.

mod channel;
mod hub;
mod media;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use channel::FallbackChannel;
pub use hub::{FallbackHub, FallbackHubConfig, HubStats};

use crate::media::{KeyframeRequests, LocalTrack, RemoteFeed, TrackBook, TrackSpec};
use crate::shared::{self, Counters, EventStream, lock};
use crate::{
    Connection, ConnectionEvent, ConnectionState, ConnectionStats, Reliability, Role, Transport,
    TransportError, TransportLimits,
};
use wire::{CircuitId, Frame, Hello};

/// Settings of a [`FallbackTransport`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FallbackConfig {
    /// The hub's WebSocket URL (`ws://` or `wss://`), e.g. `ws://host:7447/link` for
    /// `genos serve`.
    pub url: String,
    /// The shared token the hub requires, if any.
    pub token: Option<String>,
    /// An opaque tag the hub counts circuits by (per-room quota). Default zero.
    pub room_tag: [u8; 16],
    /// Largest message per send. Default 256 KiB, as the WebRTC backend.
    pub max_message_size: usize,
    /// Bytes of one channel direction the receiver may hold unread (the sender's credit).
    /// Default 2 MiB; raised to at least `max_message_size`.
    pub window: usize,
    /// Channels each side may have open. Default 64.
    pub max_channels: usize,
    /// How long to wait for the hub to pair the circuit (both ends there). Default 30 s.
    pub pair_timeout: Duration,
    /// Capacity of each connection's event queue. Default 256.
    pub events_capacity: usize,
}

impl FallbackConfig {
    /// Settings for the hub at `url`, with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            room_tag: [0; 16],
            max_message_size: 256 * 1024,
            window: 2 * 1024 * 1024,
            max_channels: 64,
            pair_timeout: Duration::from_secs(30),
            events_capacity: 256,
        }
    }

    /// Presents `token` to the hub.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Tags circuits with `tag` (the hub counts circuits per tag).
    pub fn with_room_tag(mut self, tag: [u8; 16]) -> Self {
        self.room_tag = tag;
        self
    }

    /// Sets the per-channel window.
    pub fn with_window(mut self, bytes: usize) -> Self {
        self.window = bytes;
        self
    }

    /// Sets the pairing timeout.
    pub fn with_pair_timeout(mut self, timeout: Duration) -> Self {
        self.pair_timeout = timeout;
        self
    }

    fn normalized(mut self) -> Result<Self, TransportError> {
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(TransportError::InvalidConfig(format!(
                "the fallback URL must start with ws:// or wss://, got {:?}",
                self.url
            )));
        }
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.len() > wire::MAX_TOKEN)
        {
            return Err(TransportError::InvalidConfig(format!(
                "the fallback token is longer than {} bytes",
                wire::MAX_TOKEN
            )));
        }
        if self.max_message_size == 0 || self.max_channels == 0 || self.events_capacity == 0 {
            return Err(TransportError::InvalidConfig(
                "max_message_size, max_channels and events_capacity must be at least 1".into(),
            ));
        }
        self.window = self
            .window
            .max(self.max_message_size)
            .min(u32::MAX as usize);
        Ok(self)
    }

    /// The largest WebSocket message either end may send: a data frame or a media sample.
    fn max_frame(&self) -> usize {
        self.max_message_size.max(crate::media::MAX_SAMPLE_SIZE) + FRAME_HEADROOM
    }
}

/// Bytes a frame adds to its payload (type, ids, timestamps), with room to spare.
const FRAME_HEADROOM: usize = 64;
/// Frames queued for the WebSocket writer before a data send waits.
const DATA_QUEUE: usize = 64;
/// How long `close` waits to queue its goodbye before cutting the link.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Makes connections through a fallback hub. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FallbackTransport {
    config: Arc<FallbackConfig>,
}

impl FallbackTransport {
    /// A transport for the hub in `config`; refuses a URL that is not `ws://`/`wss://`.
    pub fn new(config: FallbackConfig) -> Result<Self, TransportError> {
        Ok(Self {
            config: Arc::new(config.normalized()?),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &FallbackConfig {
        &self.config
    }
}

impl Transport for FallbackTransport {
    type Connection = FallbackConnection;
    type Events = EventStream<FallbackChannel>;

    async fn connect(
        &self,
        role: Role,
    ) -> Result<(FallbackConnection, Self::Events), TransportError> {
        let (events, stream) = EventStream::new(self.config.events_capacity);
        let shared = ConnShared::new(self.config.clone(), role, events);
        if role == Role::Offerer {
            let circuit: CircuitId = rand::rng().random();
            let offer = wire::encode_offer(&circuit);
            let _ = shared.events.try_send(ConnectionEvent::Signal(offer));
            ConnShared::start(&shared, circuit);
        }
        Ok((FallbackConnection { shared }, stream))
    }
}

/// What the connection's writer sends, besides the data queue: frames that must not wait
/// behind data (opens, credits, key frame requests, track announcements). Their number is
/// bounded by the protocol: credits by the window, opens by the channel limit.
type ControlQueue = mpsc::UnboundedSender<Bytes>;

pub(crate) struct ConnShared {
    config: Arc<FallbackConfig>,
    role: Role,
    circuit: Mutex<Option<CircuitId>>,
    state: watch::Sender<ConnectionState>,
    events: mpsc::Sender<ConnectionEvent<FallbackChannel>>,
    data: mpsc::Sender<Bytes>,
    control: ControlQueue,
    /// The writer's queues until the link task takes them.
    queues: Mutex<Option<(mpsc::Receiver<Bytes>, mpsc::UnboundedReceiver<Bytes>)>>,
    /// Bytes in the data queue, not yet written to the WebSocket.
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    channels: Mutex<HashMap<u32, FallbackChannel>>,
    next_channel: AtomicU32,
    tracks: Mutex<TrackBook>,
    /// Our tracks' key frame requests, by serial.
    local_tracks: Mutex<HashMap<u32, Weak<KeyframeRequests>>>,
    /// The remote side's tracks: serial -> (id, feed).
    remote_tracks: Mutex<HashMap<u32, (String, RemoteFeed)>>,
    next_track: AtomicU32,
    failure: Mutex<Option<String>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl ConnShared {
    fn new(
        config: Arc<FallbackConfig>,
        role: Role,
        events: mpsc::Sender<ConnectionEvent<FallbackChannel>>,
    ) -> Arc<Self> {
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            config,
            role,
            circuit: Mutex::new(None),
            state: watch::Sender::new(ConnectionState::New),
            events,
            data,
            control,
            queues: Mutex::new(Some((data_rx, control_rx))),
            queued: Arc::default(),
            counters: Arc::default(),
            channels: Mutex::default(),
            // Offerers number their channels even, answerers odd: ids never collide.
            next_channel: AtomicU32::new(u32::from(role == Role::Answerer)),
            tracks: Mutex::default(),
            local_tracks: Mutex::default(),
            remote_tracks: Mutex::default(),
            next_track: AtomicU32::new(1),
            failure: Mutex::new(None),
            task: Mutex::new(None),
        })
    }

    /// Starts the link task for `circuit`.
    fn start(me: &Arc<Self>, circuit: CircuitId) {
        *lock(&me.circuit) = Some(circuit);
        me.set_state(ConnectionState::Connecting);
        let Some(queues) = lock(&me.queues).take() else {
            return;
        };
        let task = tokio::spawn(run_link(Arc::downgrade(me), circuit, queues));
        *lock(&me.task) = Some(task.abort_handle());
    }

    fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    fn set_state(&self, state: ConnectionState) {
        if shared::advance_state(&self.state, state) {
            // State changes are advisory on the queue; `state()` always has the truth.
            let _ = self.events.try_send(ConnectionEvent::StateChanged(state));
            if state.is_terminal() {
                self.end_all();
            }
        }
    }

    fn fail(&self, reason: String) {
        tracing::debug!(%reason, "fallback link failed");
        lock(&self.failure).get_or_insert(reason);
        self.set_state(ConnectionState::Failed);
    }

    /// Ends every channel and remote track (the link is gone).
    fn end_all(&self) {
        let channels: Vec<_> = lock(&self.channels).drain().map(|(_, c)| c).collect();
        for channel in channels {
            channel.inner.end();
        }
        lock(&self.remote_tracks).clear();
    }

    fn send_control(&self, frame: &Frame) {
        let _ = self.control.send(frame.encode());
    }

    /// Queues a frame behind the data already queued (so it cannot overtake it).
    async fn send_data(&self, frame: Bytes) -> Result<(), TransportError> {
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::AcqRel);
        if self.data.send(frame).await.is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(TransportError::NotConnected(self.state()));
        }
        Ok(())
    }

    fn is_mine(&self, id: u32) -> bool {
        (id % 2 == 1) == (self.role == Role::Answerer)
    }

    /// Handles one frame from the remote side; an error fails the link.
    async fn on_frame(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Open {
                id,
                reliability,
                label,
            } => {
                if self.is_mine(id) || shared::check_label(&label).is_err() {
                    return Err(format!("bad channel open (id {id})"));
                }
                let channel = {
                    let mut channels = lock(&self.channels);
                    let theirs = channels.keys().filter(|id| !self.is_mine(**id)).count();
                    if channels.contains_key(&id) || theirs >= self.config.max_channels {
                        return Err(format!("channel {id} reused or over the limit"));
                    }
                    let channel = FallbackChannel::new(self, id, label, reliability);
                    channels.insert(id, channel.clone());
                    channel
                };
                let _ = self
                    .events
                    .send(ConnectionEvent::ChannelOpened(channel))
                    .await;
            }
            Frame::Data { id, payload } => {
                let channel = lock(&self.channels).get(&id).cloned();
                // A channel we closed may still get what was in flight: dropped.
                if let Some(channel) = channel {
                    if payload.len() > self.config.max_message_size {
                        return Err(format!("a message of {} bytes", payload.len()));
                    }
                    self.counters.count_received(payload.len() as u64);
                    channel.inner.deliver(payload)?;
                }
            }
            Frame::Credit { id, bytes } => {
                if let Some(channel) = lock(&self.channels).get(&id) {
                    channel.inner.add_credit(bytes as usize);
                }
            }
            Frame::CloseChannel { id } => {
                if let Some(channel) = lock(&self.channels).remove(&id) {
                    channel.inner.end();
                }
            }
            Frame::Bye => self.set_state(ConnectionState::Closed),
            Frame::TrackOpen { serial, codec, id } => media::on_track_open(self, serial, codec, id)
                .await
                .map_err(|e| e.to_string())?,
            Frame::Sample {
                serial,
                rtp_timestamp,
                data,
            } => media::on_sample(self, serial, rtp_timestamp, data),
            Frame::TrackEnd { serial } => media::on_track_end(self, serial).await,
            Frame::Keyframe { serial } => {
                let requests = lock(&self.local_tracks).get(&serial).cloned();
                if let Some(requests) = requests.and_then(|r| r.upgrade()) {
                    requests.signal();
                }
            }
        }
        Ok(())
    }
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// The link's life: dial the hub, present the circuit, wait to be paired, then write queued
/// frames and read the remote's until either side ends.
async fn run_link(
    shared: Weak<ConnShared>,
    circuit: CircuitId,
    (mut data, mut control): (mpsc::Receiver<Bytes>, mpsc::UnboundedReceiver<Bytes>),
) {
    let Some(me) = shared.upgrade() else { return };
    let config = me.config.clone();
    let hello = Hello {
        circuit,
        offerer: me.role == Role::Offerer,
        room: config.room_tag,
        token: config.token.clone().unwrap_or_default(),
    };
    let queued = me.queued.clone();
    drop(me);
    let paired = tokio::time::timeout(config.pair_timeout, pair(&config, hello)).await;
    let socket = match paired {
        Ok(Ok(socket)) => socket,
        Ok(Err(reason)) => return fail(&shared, reason),
        Err(_) => return fail(&shared, "the fallback hub paired nobody in time".into()),
    };
    let Some(me) = shared.upgrade() else { return };
    me.set_state(ConnectionState::Connected);
    drop(me);
    let (mut sink, mut stream) = socket.split();
    let writer = async {
        loop {
            let (frame, is_data) = tokio::select! {
                biased;
                Some(frame) = control.recv() => (frame, false),
                Some(frame) = data.recv() => (frame, true),
                else => return "the connection is gone".to_owned(),
            };
            let len = frame.len();
            let bye = frame.first() == Some(&wire::BYE_BYTE);
            let sent = sink.send(Message::Binary(frame)).await;
            if is_data {
                queued.fetch_sub(len, Ordering::AcqRel);
            }
            if let Err(error) = sent {
                return format!("fallback link lost: {error}");
            }
            if bye {
                let _ = sink.close().await;
                return "closed".to_owned();
            }
        }
    };
    let reader = async {
        while let Some(message) = stream.next().await {
            let bytes = match message {
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(error) => return format!("fallback link lost: {error}"),
            };
            let Some(frame) = Frame::decode(&bytes) else {
                return "the remote sent a malformed frame".to_owned();
            };
            let bye = frame == Frame::Bye;
            let Some(me) = shared.upgrade() else {
                return "the connection is gone".to_owned();
            };
            if let Err(reason) = me.on_frame(frame).await {
                return format!("protocol violation: {reason}");
            }
            if bye {
                return "closed by the remote".to_owned();
            }
        }
        "the fallback hub closed the link".to_owned()
    };
    let reason = tokio::select! {
        reason = writer => reason,
        reason = reader => reason,
    };
    fail(&shared, reason);
}

fn fail(shared: &Weak<ConnShared>, reason: String) {
    if let Some(me) = shared.upgrade() {
        // A link closed on purpose is already Closed; this is a no-op then.
        me.fail(reason);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Dials the hub and waits until it pairs our circuit.
async fn pair(config: &FallbackConfig, hello: Hello) -> Result<Socket, String> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame()))
        .max_frame_size(Some(config.max_frame()));
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(config.url.as_str(), Some(ws_config), true)
            .await
            .map_err(|e| format!("cannot reach the fallback hub {}: {e}", config.url))?;
    socket
        .send(Message::Binary(hello.encode()))
        .await
        .map_err(|e| format!("fallback hub: {e}"))?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(answer))) => {
                return match answer.first() {
                    Some(&wire::HUB_PAIRED) if answer.len() == 1 => Ok(socket),
                    Some(&wire::HUB_REFUSED) => Err(format!(
                        "the fallback hub refused the circuit: {}",
                        String::from_utf8_lossy(answer.get(1..).unwrap_or_default())
                    )),
                    _ => Err("the fallback hub answered garbage".into()),
                };
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err("the fallback hub closed the link before pairing".into());
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(format!("fallback hub: {error}")),
        }
    }
}

/// One link through a fallback hub. Cheap to clone; clones share the link.
#[derive(Clone)]
pub struct FallbackConnection {
    shared: Arc<ConnShared>,
}

impl std::fmt::Debug for FallbackConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackConnection")
            .field("role", &self.shared.role)
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

impl FallbackConnection {
    /// Why the link failed (the hub refused, nobody paired, the hub went away), once it has.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }
}

impl Connection for FallbackConnection {
    type Channel = FallbackChannel;

    fn role(&self) -> Role {
        self.shared.role
    }

    fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    fn limits(&self) -> TransportLimits {
        let config = &self.shared.config;
        TransportLimits::new(config.max_message_size, config.window, config.max_channels)
    }

    async fn handle_signal(&self, message: Bytes) -> Result<(), TransportError> {
        let current = *lock(&self.shared.circuit);
        if self.shared.role == Role::Offerer {
            // The answer names our circuit; it carries nothing else.
            return match wire::decode_answer(&message) {
                Some(circuit) if Some(circuit) == current => Ok(()),
                _ => Err(TransportError::InvalidSignal(
                    "not an answer to this fallback offer".into(),
                )),
            };
        }
        let circuit = wire::decode_offer(&message)
            .ok_or_else(|| TransportError::InvalidSignal("not a fallback offer".into()))?;
        match current {
            Some(known) if known == circuit => Ok(()),
            Some(_) => Err(TransportError::InvalidSignal(
                "an offer for another circuit".into(),
            )),
            None if self.state().is_terminal() => Err(TransportError::NotConnected(self.state())),
            None => {
                ConnShared::start(&self.shared, circuit);
                let answer = ConnectionEvent::Signal(wire::encode_answer(&circuit));
                let _ = self.shared.events.try_send(answer);
                Ok(())
            }
        }
    }

    async fn open_channel(
        &self,
        label: &str,
        reliability: Reliability,
    ) -> Result<FallbackChannel, TransportError> {
        shared::check_label(label)?;
        shared::wait_connected(&self.shared.state).await?;
        let me = &self.shared;
        let channel = {
            let mut channels = lock(&me.channels);
            let mine = channels.keys().filter(|id| me.is_mine(**id)).count();
            if mine >= me.config.max_channels {
                return Err(TransportError::TooManyChannels {
                    limit: me.config.max_channels,
                });
            }
            let id = me.next_channel.fetch_add(2, Ordering::Relaxed);
            let channel = FallbackChannel::new(me, id, label.to_owned(), reliability);
            channels.insert(id, channel.clone());
            channel
        };
        me.send_control(&Frame::Open {
            id: channel.inner.id,
            reliability,
            label: label.to_owned(),
        });
        Ok(channel)
    }

    async fn stats(&self) -> ConnectionStats {
        let queued = self.shared.queued.load(Ordering::Acquire) as u64;
        self.shared.counters.snapshot(queued)
    }

    async fn add_track(&self, spec: TrackSpec) -> Result<LocalTrack, TransportError> {
        shared::wait_connected(&self.shared.state).await?;
        media::add_track(&self.shared, spec)
    }

    async fn remove_track(&self, track: &LocalTrack) -> Result<(), TransportError> {
        track.remove(shared::owner_of(&self.shared)).await.map(drop)
    }

    async fn close(&self) {
        let me = &self.shared;
        if me.state().is_terminal() {
            return;
        }
        let connected = me.state() == ConnectionState::Connected;
        me.set_state(ConnectionState::Closed);
        if connected {
            // Behind the data already queued, so the remote gets it all before the goodbye;
            // the writer closes the socket once it is out.
            let bye = tokio::time::timeout(CLOSE_GRACE, me.data.send(Frame::Bye.encode())).await;
            if matches!(bye, Ok(Ok(()))) {
                return;
            }
        }
        if let Some(task) = lock(&me.task).take() {
            task.abort();
        }
    }
}
