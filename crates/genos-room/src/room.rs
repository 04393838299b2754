//! The room: a handle for the application and the driver task that runs presence, dialling,
//! links and the watchdog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use genos_crypto::{PeerId, RoomKey, SealKey};
use genos_signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};
use genos_transport::{
    Connection, ConnectionEvent, ConnectionState, DataChannel, Reliability, Role, Transport,
    TransportError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::channel::{self, Registry, SendOptions, SendReport, Target};
use crate::dial::{DialPlanner, Incoming, dial_role};
use crate::link::{Link, ReaderNote, TransportIo, read_link, write_link};
use crate::stats::{Counters, bump};
use crate::wire::{FrameCodec, LINK_LABEL, PROTOCOL_VERSION, Presence, SignalMessage};
use crate::{
    Channel, LeaveReason, MAX_METADATA_LEN, PeerInfo, RoomConfig, RoomError, RoomEvent, RoomEvents,
    RoomLimits, RoomStats, TypedChannel, lock,
};

/// How often the driver checks dials, the watchdog and the dial queue.
const TICK: Duration = Duration::from_millis(200);
/// An answering peer repeats its hello to the same peer at most this often.
const HELLO_INTERVAL: Duration = Duration::from_secs(2);
/// Notes from connection and link tasks queued for the driver.
const NOTE_QUEUE: usize = 256;

/// State shared by the room handle, its channels and its tasks.
pub(crate) struct Shared {
    pub(crate) local: PeerId,
    pub(crate) limits: RoomLimits,
    data_key: SealKey,
    epoch: Instant,
    links: RwLock<HashMap<PeerId, Arc<Link>>>,
    registry: Arc<std::sync::Mutex<Registry>>,
    pub(crate) counters: Counters,
    events: std::sync::Mutex<Option<broadcast::Sender<RoomEvent>>>,
    next_message: AtomicU64,
    left: AtomicBool,
}

impl Shared {
    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub(crate) fn emit(&self, event: RoomEvent) {
        if let Some(events) = lock(&self.events).as_ref() {
            let _ = events.send(event);
        }
    }

    fn links(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PeerId, Arc<Link>>> {
        self.links
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn link(&self, peer: &PeerId) -> Option<Arc<Link>> {
        self.links().get(peer).cloned()
    }

    fn all_links(&self) -> Vec<Arc<Link>> {
        self.links().values().cloned().collect()
    }

    fn links_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PeerId, Arc<Link>>> {
        self.links
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl channel::Sender for Shared {
    fn send<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
        options: SendOptions,
    ) -> BoxFuture<'a, Result<SendReport, RoomError>> {
        Box::pin(async move {
            if self.left.load(Ordering::Relaxed) {
                return Err(RoomError::Left);
            }
            if payload.len() > self.limits.max_message_size {
                return Err(RoomError::MessageTooLarge {
                    size: payload.len(),
                    limit: self.limits.max_message_size,
                });
            }
            let meta = options.meta.as_deref();
            if let Some(meta) = meta.filter(|m| m.len() > MAX_METADATA_LEN) {
                return Err(RoomError::MetadataTooLarge {
                    size: meta.len(),
                    limit: MAX_METADATA_LEN,
                });
            }
            let targets: Vec<(PeerId, Option<Arc<Link>>)> = match options.target {
                Target::All => self
                    .all_links()
                    .into_iter()
                    .map(|l| (l.peer, Some(l)))
                    .collect(),
                Target::Peer(peer) => vec![(peer, self.link(&peer))],
                Target::Peers(mut peers) => {
                    peers.sort();
                    peers.dedup();
                    peers.into_iter().map(|p| (p, self.link(&p))).collect()
                }
            };
            let message = self.next_message.fetch_add(1, Ordering::Relaxed);
            let progress = options.progress.as_ref();
            let payload = &payload;
            let sends = targets.into_iter().map(|(peer, link)| async move {
                let result = match link {
                    Some(link) => {
                        link.send_message(channel, message, payload, meta, progress)
                            .await
                    }
                    None => Err(RoomError::UnknownPeer(peer)),
                };
                (peer, result)
            });
            let mut report = SendReport::default();
            for (peer, result) in join_all(sends).await {
                match result {
                    Ok(()) => {
                        bump(&self.counters.messages_sent, 1);
                        bump(&self.counters.bytes_sent, payload.len() as u64);
                        report.sent.push(peer);
                    }
                    Err(error) => report.failed.push((peer, error)),
                }
            }
            Ok(report)
        })
    }
}

/// The parts of a room key a room uses.
pub(crate) struct Keys {
    pub(crate) topic: Topic,
    pub(crate) signal: SealKey,
    pub(crate) data: SealKey,
}

enum Command {
    Leave(oneshot::Sender<()>),
}

struct Handle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    first_events: std::sync::Mutex<Option<broadcast::Receiver<RoomEvent>>>,
}

/// A joined room: peers, channels, events. Cheap to clone; the room leaves when
/// [`Room::leave`] is called or the last clone is dropped.
///
/// Generic backends are chosen at [`Room::join`]; the handle itself names none.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), genos_room::RoomError> {
/// use futures::StreamExt;
/// use genos_crypto::{KeyParams, PeerId};
/// use genos_room::{Room, RoomConfig, RoomEvent};
/// use genos_signal::memory::{MemoryConfig, MemorySignaling};
/// use genos_transport::memory::{MemoryTransport, MemoryTransportConfig};
///
/// let hub = MemorySignaling::new(MemoryConfig::default());
/// let transport = MemoryTransport::new(MemoryTransportConfig::default());
/// let config = RoomConfig::new("doc-app", "lobby")
///     .with_password("secret")
///     .with_key_params(KeyParams::new(64, 1, 1)); // cheap key for the example
/// let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
/// let alice = Room::join(hub.clone(), transport.clone(), a, config.clone()).await?;
/// let bob = Room::join(hub, transport, b, config).await?;
///
/// let mut events = bob.events();
/// while let Some(event) = events.next().await {
///     if let RoomEvent::PeerJoined { peer } = event {
///         assert_eq!(peer, a);
///         break;
///     }
/// }
/// let chat = bob.channel("chat")?;
/// chat.send("hello").await?;
/// let received = alice.channel("chat")?.recv().await.expect("a message");
/// assert_eq!(&received.payload[..], b"hello");
/// assert_eq!(received.from, b);
/// alice.leave().await?;
/// bob.leave().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Room {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("local_peer", &self.handle.shared.local)
            .finish()
    }
}

impl Room {
    /// Joins the room described by `config` as `local_peer`, finding peers with `signaling`
    /// and connecting with `transport`. Derives the room key (Argon2id for a password room)
    /// once, joins the topic, announces, and returns; peers arrive as
    /// [`RoomEvent::PeerJoined`].
    pub async fn join<S: Signaling, T: Transport>(
        signaling: S,
        transport: T,
        local_peer: PeerId,
        config: RoomConfig,
    ) -> Result<Self, RoomError> {
        let password = config.password.as_ref().map(|p| p.as_slice());
        let key = RoomKey::derive_async(
            &config.app_id,
            &config.room_id,
            password,
            &config.key_params,
        )
        .await?;
        Self::join_with_key(signaling, transport, local_peer, &key, config.limits).await
    }

    /// Joins with a room key derived beforehand (for callers that derive it once and join
    /// several times).
    pub async fn join_with_key<S: Signaling, T: Transport>(
        signaling: S,
        transport: T,
        local_peer: PeerId,
        key: &RoomKey,
        limits: RoomLimits,
    ) -> Result<Self, RoomError> {
        let keys = Keys {
            topic: Topic::from_bytes(key.topic()),
            signal: key.signal_key().clone(),
            data: key.data_key().clone(),
        };
        Self::join_parts(signaling, transport, local_peer, keys, limits).await
    }

    pub(crate) async fn join_parts<S: Signaling, T: Transport>(
        signaling: S,
        transport: T,
        local_peer: PeerId,
        keys: Keys,
        limits: RoomLimits,
    ) -> Result<Self, RoomError> {
        let request = JoinRequest::new(keys.topic, local_peer).with_seal_key(keys.signal);
        let (session, signals) = signaling.join(request).await?;
        session.announce(Presence::current().encode()).await?;
        let (events, first_events) = broadcast::channel(limits.event_capacity.max(1));
        let shared = Arc::new(Shared {
            local: local_peer,
            limits,
            data_key: keys.data,
            epoch: Instant::now(),
            links: RwLock::new(HashMap::new()),
            registry: Arc::new(std::sync::Mutex::new(Registry::new(limits))),
            counters: Counters::default(),
            events: std::sync::Mutex::new(Some(events)),
            next_message: AtomicU64::new(0),
            left: AtomicBool::new(false),
        });
        let (commands, command_rx) = mpsc::channel(4);
        let (notes, note_rx) = mpsc::channel(NOTE_QUEUE);
        let (reader_notes, reader_rx) = mpsc::channel(NOTE_QUEUE);
        let driver = Driver::<S, T> {
            shared: shared.clone(),
            planner: DialPlanner::new(
                local_peer,
                limits.max_peers,
                limits.max_half_open_dials,
                limits.dial_cooldown,
                limits.dial_timeout,
            ),
            session,
            transport,
            attempts: HashMap::new(),
            hellos: HashMap::new(),
            notes,
            reader_notes,
        };
        tokio::spawn(driver.run(signals, command_rx, note_rx, reader_rx));
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                commands,
                first_events: std::sync::Mutex::new(Some(first_events)),
            }),
        })
    }

    /// This peer's id.
    pub fn local_peer(&self) -> PeerId {
        self.handle.shared.local
    }

    /// The room's limits.
    pub fn limits(&self) -> RoomLimits {
        self.handle.shared.limits
    }

    /// The room's events. The first call sees everything since the join; later calls see
    /// events from the moment of the call. The stream ends when the room has left.
    pub fn events(&self) -> RoomEvents {
        if let Some(first) = lock(&self.handle.first_events).take() {
            return RoomEvents::new(first);
        }
        match lock(&self.handle.shared.events).as_ref() {
            Some(sender) => RoomEvents::new(sender.subscribe()),
            None => RoomEvents::new(broadcast::channel(1).1),
        }
    }

    /// Opens (or joins) the byte channel `name`. Messages that arrived for it before it was
    /// opened are delivered first (within [`RoomLimits::unopened_messages`]).
    pub fn channel(&self, name: &str) -> Result<Channel, RoomError> {
        let shared = &self.handle.shared;
        Channel::open(name, shared.registry.clone(), shared.clone())
    }

    /// Opens a channel of serde values (postcard-encoded).
    pub fn typed_channel<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<TypedChannel<T>, RoomError> {
        self.channel(name).map(TypedChannel::new)
    }

    /// The peers connected now.
    pub fn peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .handle
            .shared
            .all_links()
            .iter()
            .map(|l| l.peer)
            .collect();
        peers.sort();
        peers
    }

    /// The connected peers with their counters.
    pub async fn peer_info(&self) -> Vec<PeerInfo> {
        let links = self.handle.shared.all_links();
        let mut infos = Vec::with_capacity(links.len());
        for link in links {
            let transport = link.stats().await;
            infos.push(
                link.counters
                    .info(link.peer, link.joined_at.elapsed(), transport),
            );
        }
        infos.sort_by_key(|info| info.peer);
        infos
    }

    /// Measures the round-trip time to `peer` over its link (a sealed ping frame).
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, RoomError> {
        let shared = &self.handle.shared;
        let link = shared.link(&peer).ok_or(RoomError::UnknownPeer(peer))?;
        link.ping(shared.limits.max_pending_pings, shared.limits.peer_timeout)
            .await
    }

    /// The room's counters.
    pub fn stats(&self) -> RoomStats {
        self.handle.shared.counters.snapshot()
    }

    /// Leaves: says goodbye to every peer and waits (up to [`RoomLimits::leave_timeout`])
    /// until each has read what was sent to it, leaves the signaling topic, closes every
    /// connection, and ends the event stream and the channels. Idempotent.
    pub async fn leave(&self) -> Result<(), RoomError> {
        let (done, left) = oneshot::channel();
        if self
            .handle
            .commands
            .send(Command::Leave(done))
            .await
            .is_ok()
        {
            let _ = left.await;
        }
        Ok(())
    }

    /// Sends `frame` to `peer` as it is, unsealed and out of sequence, as a hostile peer
    /// would. For tests of the receiving side.
    #[cfg(feature = "testing")]
    pub async fn send_raw_frame(&self, peer: PeerId, frame: Bytes) -> Result<(), RoomError> {
        let link = self
            .handle
            .shared
            .link(&peer)
            .ok_or(RoomError::UnknownPeer(peer))?;
        link.send_raw(frame).await
    }
}

type ChannelOf<T> = <<T as Transport>::Connection as Connection>::Channel;

/// What connection tasks tell the driver.
enum Note<Ch> {
    State {
        peer: PeerId,
        dial: u64,
        state: ConnectionState,
    },
    Opened {
        peer: PeerId,
        dial: u64,
        channel: Ch,
    },
    Offered {
        peer: PeerId,
        dial: u64,
        result: Result<Ch, TransportError>,
    },
}

/// One dial attempt, or the connection of a link.
struct Attempt<C> {
    dial: u64,
    connection: C,
    role: Role,
    linked: bool,
}

struct Driver<S: Signaling, T: Transport> {
    shared: Arc<Shared>,
    session: S::Session,
    transport: T,
    planner: DialPlanner,
    attempts: HashMap<PeerId, Attempt<T::Connection>>,
    hellos: HashMap<PeerId, Instant>,
    notes: mpsc::Sender<Note<ChannelOf<T>>>,
    reader_notes: mpsc::Sender<(PeerId, u64, ReaderNote)>,
}

impl<S: Signaling, T: Transport> Driver<S, T> {
    async fn run(
        mut self,
        mut signals: S::Events,
        mut commands: mpsc::Receiver<Command>,
        mut notes: mpsc::Receiver<Note<ChannelOf<T>>>,
        mut reader_notes: mpsc::Receiver<(PeerId, u64, ReaderNote)>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut signaling_open = true;
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let done = command.map(|Command::Leave(done)| done);
                    self.leave().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    // Later leave() calls find the command channel closed.
                    return;
                }
                event = signals.next(), if signaling_open => match event {
                    Some(event) => self.on_signal(event).await,
                    None => signaling_open = false,
                },
                Some(note) = notes.recv() => self.on_note(note).await,
                Some((peer, dial, note)) = reader_notes.recv() => self.on_reader(peer, dial, note).await,
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn on_signal(&mut self, event: SignalEvent) {
        match event {
            SignalEvent::PeerSeen { peer, presence } => match Presence::decode(&presence) {
                Some(p) if p.protocol == PROTOCOL_VERSION => self.noticed(peer).await,
                _ => bump(&self.shared.counters.signals_ignored, 1),
            },
            SignalEvent::Message { from, payload } => match SignalMessage::decode(&payload) {
                Some(SignalMessage::Hello)
                    if dial_role(&self.shared.local, &from) == Some(Role::Offerer) =>
                {
                    self.noticed(from).await;
                }
                Some(SignalMessage::Transport { dial, payload }) => {
                    self.on_transport_signal(from, dial, Bytes::from(payload))
                        .await;
                }
                _ => bump(&self.shared.counters.signals_ignored, 1),
            },
            SignalEvent::PeerGone { peer } => {
                self.hellos.remove(&peer);
                if self.attempts.get(&peer).is_some_and(|a| !a.linked) {
                    if let Some(attempt) = self.attempts.remove(&peer) {
                        close_later(attempt.connection, Duration::ZERO);
                    }
                    self.planner.gone(&peer);
                } else if !self.attempts.contains_key(&peer) {
                    self.planner.gone(&peer);
                }
            }
            _ => {}
        }
    }

    /// A peer announced itself or said hello.
    async fn noticed(&mut self, peer: PeerId) {
        let now = Instant::now();
        match dial_role(&self.shared.local, &peer) {
            Some(Role::Offerer) => {
                if self.planner.seen(peer, now) {
                    self.start_dials().await;
                } else {
                    bump(&self.shared.counters.peers_refused, 1);
                }
            }
            Some(Role::Answerer) => {
                if self.attempts.contains_key(&peer) {
                    return;
                }
                let recent = self
                    .hellos
                    .get(&peer)
                    .is_some_and(|at| now.duration_since(*at) < HELLO_INTERVAL);
                if recent {
                    return;
                }
                if self.hellos.len() >= self.shared.limits.max_peers.saturating_mul(2) {
                    self.hellos
                        .retain(|_, at| now.duration_since(*at) < HELLO_INTERVAL);
                }
                self.hellos.insert(peer, now);
                let hello = SignalMessage::Hello.encode();
                if let Err(error) = self.session.send_to(peer, hello).await {
                    tracing::debug!(%error, "hello not sent");
                }
            }
            None => {}
        }
    }

    async fn start_dials(&mut self) {
        loop {
            let dial = rand::random::<u64>();
            let Some(peer) = self.planner.next_dial(Instant::now(), dial) else {
                return;
            };
            self.dial(peer, Role::Offerer, dial).await;
        }
    }

    /// Starts attempt `dial` with `peer`; the planner already counts it as dialling.
    async fn dial(&mut self, peer: PeerId, role: Role, dial: u64) -> bool {
        bump(&self.shared.counters.dials_started, 1);
        let (connection, mut events) = match self.transport.connect(role).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "cannot start a connection");
                bump(&self.shared.counters.dials_failed, 1);
                self.planner.failed(peer, dial, Instant::now());
                return false;
            }
        };
        let session = self.session.clone();
        let notes = self.notes.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let note = match event {
                    ConnectionEvent::Signal(payload) => {
                        let message = SignalMessage::Transport {
                            dial,
                            payload: payload.to_vec(),
                        };
                        if let Err(error) = session.send_to(peer, message.encode()).await {
                            tracing::debug!(%error, "transport signal not relayed");
                        }
                        continue;
                    }
                    ConnectionEvent::StateChanged(state) => Note::State { peer, dial, state },
                    ConnectionEvent::ChannelOpened(channel) => Note::Opened {
                        peer,
                        dial,
                        channel,
                    },
                    _ => continue,
                };
                if notes.send(note).await.is_err() {
                    break;
                }
            }
        });
        if role == Role::Offerer {
            let (connection, notes) = (connection.clone(), self.notes.clone());
            tokio::spawn(async move {
                let result = connection
                    .open_channel(LINK_LABEL, Reliability::ReliableOrdered)
                    .await;
                let _ = notes.send(Note::Offered { peer, dial, result }).await;
            });
        }
        self.attempts.insert(
            peer,
            Attempt {
                dial,
                connection,
                role,
                linked: false,
            },
        );
        true
    }

    async fn on_transport_signal(&mut self, peer: PeerId, dial: u64, payload: Bytes) {
        if !self.current(&peer, dial) {
            // A new attempt from the peer that dials us (or one we must refuse).
            match self.planner.incoming(peer, dial, Instant::now()) {
                Incoming::Accept { .. } => {
                    if let Some(old) = self.attempts.remove(&peer) {
                        self.retire(peer, old, LeaveReason::Failed, Duration::ZERO);
                    }
                    if !self.dial(peer, Role::Answerer, dial).await {
                        return;
                    }
                }
                Incoming::Current | Incoming::Refuse => {
                    bump(&self.shared.counters.signals_ignored, 1);
                    return;
                }
            }
        }
        if let Some(attempt) = self.attempts.get(&peer) {
            if let Err(error) = attempt.connection.handle_signal(payload).await {
                tracing::debug!(%error, "bad transport signal");
                bump(&self.shared.counters.signals_ignored, 1);
            }
        }
    }

    async fn on_note(&mut self, note: Note<ChannelOf<T>>) {
        match note {
            Note::State { peer, dial, state } => {
                if state.is_terminal() && self.current(&peer, dial) {
                    let reason = match state {
                        ConnectionState::Closed => LeaveReason::Left,
                        _ => LeaveReason::Failed,
                    };
                    self.end(peer, dial, reason, Duration::ZERO);
                }
            }
            Note::Opened {
                peer,
                dial,
                channel,
            } => {
                let expected = self
                    .attempts
                    .get(&peer)
                    .is_some_and(|a| a.dial == dial && !a.linked && a.role == Role::Answerer);
                if expected && channel.label() == LINK_LABEL {
                    self.establish(peer, dial, channel);
                } else {
                    tokio::spawn(async move { channel.close().await });
                }
            }
            Note::Offered { peer, dial, result } => match result {
                Ok(channel) if self.current(&peer, dial) => self.establish(peer, dial, channel),
                Ok(channel) => {
                    tokio::spawn(async move { channel.close().await });
                }
                Err(error) => {
                    tracing::debug!(%error, "link channel did not open");
                    if self.current(&peer, dial) {
                        self.end(peer, dial, LeaveReason::Failed, Duration::ZERO);
                    }
                }
            },
        }
    }

    fn current(&self, peer: &PeerId, dial: u64) -> bool {
        self.attempts.get(peer).is_some_and(|a| a.dial == dial)
    }

    fn establish(&mut self, peer: PeerId, dial: u64, channel: ChannelOf<T>) {
        let Some(attempt) = self.attempts.get_mut(&peer) else {
            return;
        };
        if !self.planner.linked(peer, dial) {
            return;
        }
        attempt.linked = true;
        let shared = &self.shared;
        let io = TransportIo {
            connection: attempt.connection.clone(),
            channel: channel.clone(),
        };
        let codec = FrameCodec::new(shared.data_key.clone(), shared.local, peer);
        let (link, control) = Link::new(peer, dial, Box::new(io), codec, shared.epoch);
        tokio::spawn(write_link(
            link.clone(),
            control,
            shared.limits.heartbeat_interval,
        ));
        tokio::spawn(read_link(
            link.clone(),
            channel,
            shared.clone(),
            self.reader_notes.clone(),
        ));
        shared.links_mut().insert(peer, link);
        tracing::debug!(peer = %peer.short(), "peer joined");
        shared.emit(RoomEvent::PeerJoined { peer });
    }

    async fn on_reader(&mut self, peer: PeerId, dial: u64, note: ReaderNote) {
        if !self.current(&peer, dial) {
            return;
        }
        match note {
            // Keep the connection a little so our acknowledgement gets out; the leaving
            // side closes it.
            ReaderNote::Bye => self.end(
                peer,
                dial,
                LeaveReason::Left,
                self.shared.limits.leave_timeout,
            ),
            ReaderNote::Ended => {
                let failed = self
                    .attempts
                    .get(&peer)
                    .is_some_and(|a| a.connection.state() == ConnectionState::Failed);
                let reason = if failed {
                    LeaveReason::Failed
                } else {
                    LeaveReason::Left
                };
                self.end(peer, dial, reason, Duration::ZERO);
            }
        }
    }

    /// Ends attempt or link `dial` with `peer`.
    fn end(&mut self, peer: PeerId, dial: u64, reason: LeaveReason, close_after: Duration) {
        if !self.current(&peer, dial) {
            return;
        }
        if let Some(attempt) = self.attempts.remove(&peer) {
            match reason {
                LeaveReason::Left => {
                    self.planner.gone(&peer);
                }
                _ => {
                    if !attempt.linked {
                        bump(&self.shared.counters.dials_failed, 1);
                    }
                    self.planner.failed(peer, dial, Instant::now());
                }
            }
            self.retire(peer, attempt, reason, close_after);
        }
    }

    /// Removes a (possibly linked) attempt's link, reports the peer gone if it had joined,
    /// and closes the connection after `close_after`.
    fn retire(
        &mut self,
        peer: PeerId,
        attempt: Attempt<T::Connection>,
        reason: LeaveReason,
        close_after: Duration,
    ) {
        let link = {
            let mut links = self.shared.links_mut();
            match links.get(&peer) {
                Some(link) if link.dial == attempt.dial => links.remove(&peer),
                _ => None,
            }
        };
        if attempt.linked {
            tracing::debug!(peer = %peer.short(), ?reason, "peer left");
            self.shared.emit(RoomEvent::PeerLeft { peer, reason });
        }
        match link {
            Some(link) => {
                tokio::spawn(async move {
                    tokio::time::sleep(close_after).await;
                    link.close().await;
                });
            }
            None => close_later(attempt.connection, close_after),
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        for (peer, dial) in self.planner.expired(now) {
            if self.current(&peer, dial) {
                self.end(peer, dial, LeaveReason::Failed, Duration::ZERO);
            } else {
                bump(&self.shared.counters.dials_failed, 1);
                self.planner.failed(peer, dial, now);
            }
        }
        let timeout = self.shared.limits.peer_timeout;
        for link in self.shared.all_links() {
            if link.silent_for(now) > timeout {
                tracing::debug!(peer = %link.peer.short(), "peer timed out");
                self.end(link.peer, link.dial, LeaveReason::TimedOut, Duration::ZERO);
            }
        }
        self.start_dials().await;
    }

    async fn leave(&mut self) {
        let shared = self.shared.clone();
        shared.left.store(true, Ordering::Relaxed);
        let links: Vec<Arc<Link>> = shared.links_mut().drain().map(|(_, l)| l).collect();
        let wait = shared.limits.leave_timeout;
        join_all(links.iter().map(|link| link.goodbye(wait))).await;
        if let Err(error) = self.session.leave().await {
            tracing::debug!(%error, "signaling leave failed");
        }
        join_all(links.iter().map(|link| link.close())).await;
        for (_, attempt) in self.attempts.drain() {
            attempt.connection.close().await;
        }
        shared.registry().close();
        lock(&shared.events).take();
    }
}

fn close_later<C: Connection>(connection: C, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        connection.close().await;
    });
}
