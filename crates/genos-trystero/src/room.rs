//! A Trystero room: a genos peer that browsers running Trystero 0.25 see as one of their own.
//!
//! [`TrysteroRoom::join`] subscribes to the room's and its own topic on every relay (through
//! genos-signal's [`RelayClient`]), announces itself as Trystero does (after 233 ms, 533 ms
//! and 1.3 s, then every 5.3 s), and connects to each peer it hears of over genos-transport's
//! WebRTC with Trystero's single `data` channel
//! ([`WebRtcConfig::plain_channel`](genos_transport::webrtc::WebRtcConfig::plain_channel)).
//! The lower peer id offers; the higher answers an announce with a nudge. A connected peer
//! joins once both sides sent `@_hsready` (after the password challenge in password rooms);
//! then named actions flow both ways, chunked, with metadata and progress.
//!
//! One task drives the room: it owns every peer's state and takes relay events, connection
//! events, frames and commands from bounded queues. Sending chunks happens outside it, on a
//! writer task per peer, so a slow peer holds back only its own sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos_signal::nostr::protocol::prelude::{
    Event, EventBuilder, Filter, Keys, Kind, SingleLetterTag, Tag, Timestamp,
};
use genos_signal::nostr::{NostrConfig, RelayClient, RelayEvent};
use genos_transport::webrtc::{WebRtcChannel, WebRtcConfig, WebRtcConnection, WebRtcTransport};
use genos_transport::{Connection, ConnectionEvent, DataChannel, Role, Transport};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::crypto::{SdpKey, challenge_response, room_token};
use crate::signal::SignalContent;
use crate::topic::{Topics, kind};
use crate::wire::{Chunk, Frame, Message, Payload, Pushed, Reassembler, ReassemblyLimits};
use crate::{TrysteroError, peer_id};

/// Trystero's announce schedule: these first delays, then [`TrysteroConfig::announce_interval`].
const ANNOUNCE_WARMUP: [Duration; 3] = [
    Duration::from_millis(233),
    Duration::from_millis(533),
    Duration::from_millis(1_333),
];
/// Candidates held for a peer whose offer has not arrived yet.
const MAX_EARLY_CANDIDATES: usize = 64;
/// Messages queued on one peer's writer before senders wait.
const WRITER_QUEUE: usize = 64;
/// Trystero's reserved action names.
const HS_READY: &str = "@_hsready";
const HS_DATA: &str = "@_hsdata";
const PING: &str = "@_ping";
const PONG: &str = "@_pong";
const LEAVE: &str = "@_leave";

/// Settings of a [`TrysteroRoom`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TrysteroConfig {
    /// The application id (Trystero's `appId`).
    pub app: String,
    /// The room id.
    pub room: String,
    /// The room password (Trystero's `password`); `None` for an open room.
    pub password: Option<String>,
    /// This peer's id. Default `None`: a fresh random one, as Trystero makes. Ids decide
    /// who offers (the lower one), which tests use to try both roles.
    pub peer_id: Option<String>,
    /// Relays (ws:// or wss:// URLs); at least one. Trystero's browsers must use one of them.
    pub relays: Vec<String>,
    /// WebRTC settings; the plain channel is always Trystero's `data`.
    pub webrtc: WebRtcConfig,
    /// Relay connection settings (queues, backoff, sizes); its relay list is ignored.
    pub nostr: NostrConfig,
    /// Announce period after the warm-up. Default 5,333 ms, as Trystero 0.25.4.
    pub announce_interval: Duration,
    /// How long a connected peer may take to finish the handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long an offer or answer may take to connect. Default 23 s, as Trystero.
    pub connect_timeout: Duration,
    /// Peers at once (connected or connecting). Default 64; more are not connected.
    pub max_peers: usize,
    /// Reassembly bounds per peer.
    pub limits: ReassemblyLimits,
    /// Events queued for the application. Default 1,024; beyond it progress events are
    /// dropped and the room waits for the application on everything else.
    pub events_capacity: usize,
}

impl TrysteroConfig {
    /// A room `room` of application `app` through `relays`, open (no password).
    pub fn new<I, S>(app: &str, room: &str, relays: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            app: app.to_owned(),
            room: room.to_owned(),
            password: None,
            peer_id: None,
            relays: relays.into_iter().map(Into::into).collect(),
            webrtc: WebRtcConfig::default(),
            nostr: NostrConfig::default(),
            announce_interval: Duration::from_millis(5_333),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(23),
            max_peers: 64,
            limits: ReassemblyLimits::default(),
            events_capacity: 1_024,
        }
    }

    /// Sets the room password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets this peer's id (see [`TrysteroConfig::peer_id`]).
    pub fn with_peer_id(mut self, id: impl Into<String>) -> Self {
        self.peer_id = Some(id.into());
        self
    }

    /// Sets the WebRTC settings (e.g. `WebRtcConfig::loopback()` in tests).
    pub fn with_webrtc(mut self, webrtc: WebRtcConfig) -> Self {
        self.webrtc = webrtc;
        self
    }

    fn validate(&self) -> Result<(), TrysteroError> {
        let invalid = |what: &str| Err(TrysteroError::InvalidConfig(what.to_owned()));
        if self.app.is_empty() || self.room.is_empty() {
            return invalid("app and room ids must not be empty");
        }
        if self.relays.is_empty() {
            return invalid("at least one relay");
        }
        if self
            .peer_id
            .as_deref()
            .is_some_and(|id| !peer_id::is_acceptable(id))
        {
            return invalid("a peer id is 1 to 64 visible ASCII characters");
        }
        if self.max_peers == 0 || self.events_capacity == 0 {
            return invalid("max_peers and events_capacity must be at least 1");
        }
        Ok(())
    }
}

/// What happens in a [`TrysteroRoom`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TrysteroEvent {
    /// A peer finished the handshake: messages flow.
    PeerJoined {
        /// Its Trystero peer id.
        peer: String,
    },
    /// A joined peer left (its `@_leave`, or its connection ended).
    PeerLeft {
        /// Its Trystero peer id.
        peer: String,
    },
    /// A whole message on an action.
    Message {
        /// The sender.
        peer: String,
        /// The message.
        message: Message,
    },
    /// Part of a message arrived: the sender's progress.
    Progress {
        /// The sender.
        peer: String,
        /// The action.
        action: String,
        /// 0.0 to 1.0.
        progress: f32,
    },
    /// A peer could not join: wrong password, failed handshake, failed connection.
    JoinFailed {
        /// Its Trystero peer id.
        peer: String,
        /// Why, in words.
        reason: String,
    },
}

/// The events of a room; ends after the room is left.
#[derive(Debug)]
pub struct TrysteroEvents {
    receiver: mpsc::Receiver<TrysteroEvent>,
}

impl TrysteroEvents {
    /// The next event, or `None` once the room is left.
    pub async fn recv(&mut self) -> Option<TrysteroEvent> {
        self.receiver.recv().await
    }
}

/// Who a send reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// Peers whose link took every chunk.
    pub sent: Vec<String>,
    /// Targets that are not joined peers, or whose link closed mid-message.
    pub failed: Vec<String>,
}

/// A joined Trystero room. Cheap to clone; [`TrysteroRoom::leave`] ends it for all clones.
#[derive(Debug, Clone)]
pub struct TrysteroRoom {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    self_id: String,
    token: String,
    commands: mpsc::Sender<Command>,
    /// Each action's message counter (Trystero numbers messages per action and sender).
    counters: Mutex<HashMap<String, u16>>,
}

enum Command {
    Writers {
        targets: Option<Vec<String>>,
        reply: oneshot::Sender<Vec<(String, Option<Writer>)>>,
    },
    Peers(oneshot::Sender<Vec<String>>),
    Leave(oneshot::Sender<()>),
}

type Writer = mpsc::Sender<Vec<Bytes>>;

impl TrysteroRoom {
    /// Joins: returns once a relay took the subscription.
    pub async fn join(config: TrysteroConfig) -> Result<(Self, TrysteroEvents), TrysteroError> {
        config.validate()?;
        let config = Arc::new(config);
        let self_id = config.peer_id.clone().unwrap_or_else(peer_id::generate);
        let topics = Topics::new(&config.app, &config.room);
        let self_topic = topics.peer(&self_id);
        let transport = WebRtcTransport::new(config.webrtc.clone().with_plain_channel("data"))
            .map_err(|e| TrysteroError::Transport(e.to_string()))?;
        let keys = Keys::generate();
        let (relay_events, relay_rx) = mpsc::channel(config.nostr.incoming_capacity);
        let subscribed = Arc::new(Notify::new());
        let notified = subscribed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let filter = Filter::new()
            .kinds([
                Kind::Custom(topics.room_kind()),
                Kind::Custom(kind(&self_topic)),
            ])
            .custom_tags(
                SingleLetterTag::LOWERCASE_X,
                [topics.room().to_owned(), self_topic.clone()],
            )
            .since(Timestamp::now() - Duration::from_secs(5));
        let nostr = Arc::new(config.nostr.clone());
        let relays: Vec<RelayClient> = config
            .relays
            .iter()
            .map(|url| {
                RelayClient::start(
                    url,
                    vec![filter.clone()],
                    keys.clone(),
                    nostr.clone(),
                    relay_events.clone(),
                    subscribed.clone(),
                )
            })
            .collect();
        if tokio::time::timeout(nostr.join_timeout, notified)
            .await
            .is_err()
        {
            return Err(TrysteroError::Signal(format!(
                "no relay took the subscription within {:?}",
                nostr.join_timeout
            )));
        }
        let (events, receiver) = mpsc::channel(config.events_capacity);
        let (commands, command_rx) = mpsc::channel(64);
        let (link_events, link_rx) = mpsc::channel(1_024);
        let token = room_token(&config.app, &config.room);
        let driver = Driver {
            key: SdpKey::derive(
                config.password.as_deref().unwrap_or_default(),
                &config.app,
                &config.room,
            ),
            config,
            self_id: self_id.clone(),
            topics,
            token: token.clone(),
            relays,
            transport,
            peers: HashMap::new(),
            early_candidates: HashMap::new(),
            events,
            link_events,
            next_generation: 0,
        };
        tokio::spawn(driver.run(relay_rx, link_rx, command_rx));
        Ok((
            Self {
                inner: Arc::new(Inner {
                    self_id,
                    token,
                    commands,
                    counters: Mutex::new(HashMap::new()),
                }),
            },
            TrysteroEvents { receiver },
        ))
    }

    /// This peer's Trystero id.
    pub fn peer_id(&self) -> &str {
        &self.inner.self_id
    }

    /// The joined peers.
    pub async fn peers(&self) -> Result<Vec<String>, TrysteroError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Peers(reply)).await?;
        answer.await.map_err(|_| TrysteroError::Left)
    }

    /// Sends `payload` on `action` to `targets` (every joined peer when `None`), with
    /// optional JSON `metadata`; waits while a target's link is busy.
    pub async fn send(
        &self,
        action: &str,
        payload: Payload,
        metadata: Option<&Value>,
        targets: Option<Vec<String>>,
    ) -> Result<SendReport, TrysteroError> {
        if action.starts_with("@_") {
            return Err(TrysteroError::InvalidConfig(
                "action names starting with @_ are Trystero's own".into(),
            ));
        }
        let counter = {
            let mut counters = self
                .inner
                .counters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let counter = counters.entry(action.to_owned()).or_insert(0);
            let now = *counter;
            *counter = counter.wrapping_add(1);
            now
        };
        let frames = room_frames(&self.inner.token, action, counter, payload, metadata)?;
        let (reply, answer) = oneshot::channel();
        self.command(Command::Writers { targets, reply }).await?;
        let writers = answer.await.map_err(|_| TrysteroError::Left)?;
        let mut report = SendReport::default();
        for (peer, writer) in writers {
            let sent = match writer {
                Some(writer) => writer.send(frames.clone()).await.is_ok(),
                None => false,
            };
            if sent {
                report.sent.push(peer);
            } else {
                report.failed.push(peer);
            }
        }
        Ok(report)
    }

    /// Says `@_leave` to every peer, closes every connection and relay. Idempotent.
    pub async fn leave(&self) {
        let (reply, answer) = oneshot::channel();
        if self.command(Command::Leave(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }

    async fn command(&self, command: Command) -> Result<(), TrysteroError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| TrysteroError::Left)
    }
}

/// A message's chunks, each wrapped in the room's frame.
fn room_frames(
    token: &str,
    action: &str,
    counter: u16,
    payload: Payload,
    metadata: Option<&Value>,
) -> Result<Vec<Bytes>, TrysteroError> {
    Ok(
        crate::wire::chunk_message(action, counter, payload, metadata)?
            .iter()
            .map(|chunk| {
                Frame::Room {
                    token,
                    payload: chunk,
                }
                .encode()
            })
            .collect(),
    )
}

/// What reaches the driver from a connection and its channel.
enum LinkEvent {
    Connection(ConnectionEvent<WebRtcChannel>),
    Frame(Bytes),
    ChannelClosed,
}

/// A peer we connect (or are connected) to.
struct Peer {
    generation: u64,
    conn: WebRtcConnection,
    role: Role,
    offer_id: Option<String>,
    answered: bool,
    started: Instant,
    link: Option<Link>,
}

/// The handshake and framing state of an open `data` channel.
struct Link {
    writer: Writer,
    reassembler: Reassembler,
    /// Our challenge, while we wait for its response (password rooms, lower id).
    challenge: Option<String>,
    local_passed: bool,
    remote_ready: bool,
    active: bool,
    deadline: Instant,
    /// The action counter of the driver's own sends (handshake, pong, leave).
    counters: HashMap<&'static str, u16>,
}

struct Driver {
    config: Arc<TrysteroConfig>,
    self_id: String,
    topics: Topics,
    key: SdpKey,
    token: String,
    relays: Vec<RelayClient>,
    transport: WebRtcTransport,
    peers: HashMap<String, Peer>,
    /// Decrypted candidates that came before their peer's offer.
    early_candidates: HashMap<String, Vec<Value>>,
    events: mpsc::Sender<TrysteroEvent>,
    link_events: mpsc::Sender<(String, u64, LinkEvent)>,
    next_generation: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut relay_rx: mpsc::Receiver<RelayEvent>,
        mut link_rx: mpsc::Receiver<(String, u64, LinkEvent)>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut announces = 0usize;
        let mut next_announce = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_announce) => {
                    self.announce();
                    let delay = ANNOUNCE_WARMUP
                        .get(announces)
                        .copied()
                        .unwrap_or(self.config.announce_interval)
                        .min(self.config.announce_interval);
                    announces += 1;
                    next_announce = tokio::time::Instant::now() + delay;
                }
                Some(event) = relay_rx.recv() => self.on_relay_event(&event.event).await,
                Some((peer, generation, event)) = link_rx.recv() => {
                    self.on_link_event(peer, generation, event).await;
                }
                _ = tick.tick() => self.expire().await,
                command = commands.recv() => match command {
                    Some(Command::Writers { targets, reply }) => {
                        let _ = reply.send(self.writers(targets));
                    }
                    Some(Command::Peers(reply)) => {
                        let _ = reply.send(self.joined());
                    }
                    Some(Command::Leave(reply)) => {
                        self.leave().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.leave().await;
                        return;
                    }
                },
            }
        }
    }

    fn joined(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, peer)| peer.link.as_ref().is_some_and(|link| link.active))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn writers(&self, targets: Option<Vec<String>>) -> Vec<(String, Option<Writer>)> {
        let targets = targets.unwrap_or_else(|| self.joined());
        targets
            .into_iter()
            .map(|id| {
                let writer = self
                    .peers
                    .get(&id)
                    .and_then(|peer| peer.link.as_ref())
                    .filter(|link| link.active)
                    .map(|link| link.writer.clone());
                (id, writer)
            })
            .collect()
    }

    fn publish(&self, topic: &str, content: &SignalContent) {
        let template = EventBuilder::new(Kind::Custom(kind(topic)), content.encode())
            .tag(Tag::custom("x", [topic.to_owned()]));
        for relay in &self.relays {
            if let Err(error) = relay.publish(template.clone()) {
                tracing::debug!(%error, "cannot publish to a relay");
            }
        }
    }

    fn announce(&self) {
        self.publish(
            self.topics.room(),
            &SignalContent::Announce {
                peer_id: self.self_id.clone(),
                passive: false,
            },
        );
    }

    async fn on_relay_event(&mut self, event: &Event) {
        if event.verify().is_err() {
            tracing::debug!("dropping an event with a bad id or signature");
            return;
        }
        let Ok(content) = SignalContent::decode(&event.content) else {
            tracing::debug!("dropping an event that is not Trystero signaling");
            return;
        };
        let peer = content.peer_id().to_owned();
        if peer == self.self_id {
            return;
        }
        match content {
            SignalContent::Announce { .. } => self.on_announce(peer).await,
            SignalContent::Offer {
                offer_id, offer, ..
            } => self.on_offer(peer, offer_id, &offer).await,
            SignalContent::Answer {
                offer_id, answer, ..
            } => self.on_answer(&peer, offer_id.as_deref(), &answer).await,
            SignalContent::Candidate { candidate, .. } => {
                self.on_candidate(peer, &candidate).await;
            }
        }
    }

    async fn on_announce(&mut self, peer: String) {
        if self.peers.contains_key(&peer) {
            return;
        }
        if self.self_id.as_str() > peer.as_str() {
            // The lower id offers: ask it to (Trystero's nudge).
            let topic = self.topics.peer(&peer);
            self.publish(
                &topic,
                &SignalContent::Announce {
                    peer_id: self.self_id.clone(),
                    passive: false,
                },
            );
            return;
        }
        if self.peers.len() >= self.config.max_peers {
            return;
        }
        let offer_id: String = peer_id::generate()
            .chars()
            .take(crate::signal::OFFER_ID_LEN)
            .collect();
        self.connect(peer, Role::Offerer, Some(offer_id)).await;
    }

    async fn connect(&mut self, peer: String, role: Role, offer_id: Option<String>) -> bool {
        let (conn, mut events) = match self.transport.connect(role).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "cannot create a connection");
                return false;
            }
        };
        self.next_generation += 1;
        let generation = self.next_generation;
        let sink = self.link_events.clone();
        let id = peer.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if sink
                    .send((id.clone(), generation, LinkEvent::Connection(event)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        self.peers.insert(
            peer,
            Peer {
                generation,
                conn,
                role,
                offer_id,
                answered: false,
                started: Instant::now(),
                link: None,
            },
        );
        true
    }

    async fn on_offer(&mut self, peer: String, offer_id: Option<String>, offer: &str) {
        if let Some(existing) = self.peers.get(&peer) {
            let leading = existing.role == Role::Offerer && self.self_id.as_str() < peer.as_str();
            if existing.role == Role::Answerer || existing.link.is_some() || leading {
                return;
            }
            self.drop_peer(&peer, false).await;
        }
        let sdp = match self.key.decrypt(offer) {
            Ok(sdp) => sdp,
            Err(_) => {
                self.emit(TrysteroEvent::JoinFailed {
                    peer,
                    reason: "incorrect room password when decrypting offer".into(),
                })
                .await;
                return;
            }
        };
        if self.peers.len() >= self.config.max_peers
            || !self.connect(peer.clone(), Role::Answerer, offer_id).await
        {
            return;
        }
        let mut signals = vec![json!({"type": "offer", "sdp": sdp})];
        for candidate in self.early_candidates.remove(&peer).unwrap_or_default() {
            signals.push(json!({"type": "candidate", "candidate": candidate}));
        }
        self.apply(&peer, signals).await;
    }

    async fn on_answer(&mut self, peer: &str, offer_id: Option<&str>, answer: &str) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        if state.role != Role::Offerer
            || state.answered
            || offer_id.is_some_and(|id| state.offer_id.as_deref() != Some(id))
        {
            return;
        }
        let sdp = match self.key.decrypt(answer) {
            Ok(sdp) => sdp,
            Err(_) => {
                self.emit(TrysteroEvent::JoinFailed {
                    peer: peer.to_owned(),
                    reason: "incorrect room password when decrypting answer".into(),
                })
                .await;
                return;
            }
        };
        state.answered = true;
        let mut signals = vec![json!({"type": "answer", "sdp": sdp})];
        for candidate in self.early_candidates.remove(peer).unwrap_or_default() {
            signals.push(json!({"type": "candidate", "candidate": candidate}));
        }
        self.apply(peer, signals).await;
    }

    async fn on_candidate(&mut self, peer: String, candidate: &str) {
        let Ok(plain) = self.key.decrypt(candidate) else {
            return;
        };
        let Ok(candidate) = serde_json::from_str::<Value>(&plain) else {
            return;
        };
        let ready = self
            .peers
            .get(&peer)
            .is_some_and(|state| state.role == Role::Answerer || state.answered);
        if ready {
            self.apply(
                &peer,
                vec![json!({"type": "candidate", "candidate": candidate})],
            )
            .await;
        } else if self.early_candidates.len() < self.config.max_peers {
            let held = self.early_candidates.entry(peer).or_default();
            if held.len() < MAX_EARLY_CANDIDATES {
                held.push(candidate);
            }
        }
    }

    async fn apply(&mut self, peer: &str, signals: Vec<Value>) {
        let Some(state) = self.peers.get(peer) else {
            return;
        };
        let conn = state.conn.clone();
        for signal in signals {
            let bytes = Bytes::from(signal.to_string().into_bytes());
            if let Err(error) = conn.handle_signal(bytes).await {
                tracing::debug!(%error, peer, "a signal was refused");
            }
        }
    }

    async fn on_link_event(&mut self, peer: String, generation: u64, event: LinkEvent) {
        if self.peers.get(&peer).map(|state| state.generation) != Some(generation) {
            return;
        }
        match event {
            LinkEvent::Connection(ConnectionEvent::Signal(bytes)) => {
                self.on_local_signal(&peer, &bytes)
            }
            LinkEvent::Connection(ConnectionEvent::ChannelOpened(channel)) => {
                self.on_channel(peer, generation, channel);
            }
            LinkEvent::Connection(ConnectionEvent::StateChanged(state)) => {
                if state.is_terminal() {
                    self.drop_peer(&peer, true).await;
                }
            }
            LinkEvent::Connection(_) => {}
            LinkEvent::Frame(frame) => self.on_frame(&peer, &frame).await,
            LinkEvent::ChannelClosed => self.drop_peer(&peer, true).await,
        }
    }

    /// Our connection's offer, answer or candidate, encrypted and sent to the peer's topic.
    fn on_local_signal(&self, peer: &str, bytes: &[u8]) {
        let Some(state) = self.peers.get(peer) else {
            return;
        };
        let Ok(signal) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        let self_id = self.self_id.clone();
        let offer_id = state.offer_id.clone();
        let content = match signal.get("type").and_then(Value::as_str) {
            Some("offer") => SignalContent::Offer {
                peer_id: self_id,
                offer_id,
                offer: self.key.encrypt(
                    signal
                        .get("sdp")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
            },
            Some("answer") => SignalContent::Answer {
                peer_id: self_id,
                offer_id,
                answer: self.key.encrypt(
                    signal
                        .get("sdp")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
            },
            Some("candidate") => {
                let Some(candidate) = signal.get("candidate") else {
                    return;
                };
                SignalContent::Candidate {
                    peer_id: self_id,
                    offer_id,
                    candidate: self.key.encrypt(&candidate.to_string()),
                }
            }
            _ => return,
        };
        self.publish(&self.topics.peer(peer), &content);
    }

    fn on_channel(&mut self, peer: String, generation: u64, channel: WebRtcChannel) {
        let initiator = self.self_id.as_str() < peer.as_str();
        let password = self.config.password.clone();
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if channel.label() != "data" || state.link.is_some() {
            return;
        }
        let (writer, mut queue) = mpsc::channel::<Vec<Bytes>>(WRITER_QUEUE);
        let sender = channel.clone();
        tokio::spawn(async move {
            while let Some(frames) = queue.recv().await {
                for frame in frames {
                    if sender.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        });
        let sink = self.link_events.clone();
        let id = peer.clone();
        tokio::spawn(async move {
            while let Some(frame) = channel.recv().await {
                if sink
                    .send((id.clone(), generation, LinkEvent::Frame(frame)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = sink.send((id, generation, LinkEvent::ChannelClosed)).await;
        });
        let mut link = Link {
            writer,
            reassembler: Reassembler::new(self.config.limits),
            challenge: None,
            local_passed: false,
            remote_ready: false,
            active: false,
            deadline: Instant::now() + self.config.handshake_timeout,
            counters: HashMap::new(),
        };
        let token = self.token.clone();
        let _ = link.writer.try_send(vec![
            Frame::Presence {
                token: &token,
                present: true,
            }
            .encode(),
        ]);
        match password {
            Some(_) if initiator => {
                // Trystero's challenges are 36 characters of its id alphabet.
                let challenge: String = (0..2)
                    .map(|_| peer_id::generate())
                    .collect::<String>()
                    .chars()
                    .take(36)
                    .collect();
                link.send_internal(
                    &token,
                    HS_DATA,
                    Payload::Json(json!({"__trystero_pw": "challenge", "c": challenge})),
                );
                link.challenge = Some(challenge);
            }
            Some(_) => {}
            None => link.pass(&token),
        }
        state.link = Some(link);
    }

    async fn on_frame(&mut self, peer: &str, frame: &[u8]) {
        let chunk = match Frame::decode(frame) {
            Ok(Frame::Room { token, payload }) if token == self.token => {
                Chunk::decode(Bytes::copy_from_slice(payload))
            }
            _ => return,
        };
        let Ok(chunk) = chunk else {
            return;
        };
        let Some(link) = self
            .peers
            .get_mut(peer)
            .and_then(|state| state.link.as_mut())
        else {
            return;
        };
        let internal = chunk.action.starts_with("@_");
        let pushed = link.reassembler.push(chunk);
        let active = link.active;
        match pushed {
            Ok(Pushed::Complete(message)) if internal => self.on_internal(peer, message).await,
            Ok(Pushed::Complete(message)) if active => {
                self.emit(TrysteroEvent::Message {
                    peer: peer.to_owned(),
                    message,
                })
                .await;
            }
            Ok(Pushed::Progress { action, progress }) if active && !internal => {
                let _ = self.events.try_send(TrysteroEvent::Progress {
                    peer: peer.to_owned(),
                    action,
                    progress,
                });
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, peer, "a message was dropped"),
        }
    }

    async fn on_internal(&mut self, peer: &str, message: Message) {
        let token = self.token.clone();
        let password = self.config.password.clone().unwrap_or_default();
        let (app, room) = (self.config.app.clone(), self.config.room.clone());
        let Some(link) = self
            .peers
            .get_mut(peer)
            .and_then(|state| state.link.as_mut())
        else {
            return;
        };
        match message.action.as_str() {
            HS_READY => link.remote_ready = true,
            HS_DATA if !link.local_passed => {
                let Payload::Json(data) = &message.payload else {
                    return;
                };
                let field = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
                match (&link.challenge, field("__trystero_pw").as_deref()) {
                    (Some(challenge), Some("response")) => {
                        let expected = challenge_response(challenge, &password, &app, &room);
                        if field("h").as_deref() == Some(expected.as_str()) {
                            link.pass(&token);
                        } else {
                            self.fail(peer, "incorrect password for the room").await;
                            return;
                        }
                    }
                    (None, Some("challenge")) => {
                        let Some(challenge) = field("c") else {
                            return;
                        };
                        let response = challenge_response(&challenge, &password, &app, &room);
                        link.send_internal(
                            &token,
                            HS_DATA,
                            Payload::Json(json!({"__trystero_pw": "response", "h": response})),
                        );
                        link.pass(&token);
                    }
                    _ => {
                        self.fail(peer, "unexpected handshake message").await;
                        return;
                    }
                }
            }
            PING => link.send_internal(&token, PONG, Payload::Text(String::new())),
            LEAVE => {
                self.drop_peer(peer, true).await;
                return;
            }
            _ => {}
        }
        if link.local_passed && link.remote_ready && !link.active {
            link.active = true;
            self.emit(TrysteroEvent::PeerJoined {
                peer: peer.to_owned(),
            })
            .await;
        }
    }

    async fn fail(&mut self, peer: &str, reason: &str) {
        self.emit(TrysteroEvent::JoinFailed {
            peer: peer.to_owned(),
            reason: reason.to_owned(),
        })
        .await;
        self.drop_peer(peer, false).await;
    }

    /// Ends handshakes and setups that took too long.
    async fn expire(&mut self) {
        let now = Instant::now();
        let connect_timeout = self.config.connect_timeout;
        let stale: Vec<(String, bool)> = self
            .peers
            .iter()
            .filter_map(|(id, peer)| match &peer.link {
                Some(link) if !link.active && now >= link.deadline => Some((id.clone(), true)),
                None if now.duration_since(peer.started) >= connect_timeout => {
                    Some((id.clone(), false))
                }
                _ => None,
            })
            .collect();
        for (peer, handshake) in stale {
            if handshake {
                self.fail(&peer, "handshake timed out").await;
            } else {
                self.drop_peer(&peer, false).await;
            }
        }
    }

    async fn drop_peer(&mut self, peer: &str, report: bool) {
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        state.conn.close().await;
        if report && state.link.is_some_and(|link| link.active) {
            self.emit(TrysteroEvent::PeerLeft {
                peer: peer.to_owned(),
            })
            .await;
        }
    }

    async fn leave(&mut self) {
        let token = self.token.clone();
        for peer in self.peers.values_mut() {
            if let Some(link) = peer.link.as_mut() {
                link.send_internal(&token, LEAVE, Payload::Text(String::new()));
            }
        }
        // Give the goodbyes a moment on the wire, as Trystero does (99 ms).
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (_, peer) in self.peers.drain() {
            peer.conn.close().await;
        }
        for relay in &self.relays {
            relay.stop();
        }
    }

    async fn emit(&self, event: TrysteroEvent) {
        let _ = self.events.send(event).await;
    }
}

impl Link {
    /// Queues one of Trystero's own messages (never waits: they are small and rare).
    fn send_internal(&mut self, token: &str, action: &'static str, payload: Payload) {
        let counter = self.counters.entry(action).or_insert(0);
        let now = *counter;
        *counter = counter.wrapping_add(1);
        match room_frames(token, action, now, payload, None) {
            Ok(frames) => {
                if self.writer.try_send(frames).is_err() {
                    tracing::debug!(action, "link queue full: an internal message was dropped");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot frame an internal message"),
        }
    }

    /// Our side of the handshake passed: say so.
    fn pass(&mut self, token: &str) {
        self.local_passed = true;
        self.challenge = None;
        self.send_internal(token, HS_READY, Payload::Text(String::new()));
    }
}
