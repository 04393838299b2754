//! The async driver: feeds the room machine and carries out its actions with the real
//! signaling session and transport.
//!
//! The driver never awaits I/O in its loop: connections are created, signals handed over,
//! channels opened and connections closed by tasks it spawns, which report back as inputs.
//! Per connection, one task hands transport signals over in order, and one pumps the
//! connection's events: transport signals it emits go straight to signaling (they carry no
//! decision), state changes and opened channels come back to the machine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use genos_cellmesh::{Input as MeshInput, Output as MeshOutput, OverlayEvent};
use genos_crypto::PeerId;
use genos_signal::{SignalEvent, SignalSession, Signaling};
use genos_transport::{
    Connection, ConnectionEvent, ConnectionState, DataChannel, Reliability, RemoteTrack, Role,
    Transport, TransportError,
};
use tokio::sync::{mpsc, oneshot};

use crate::RoomEvent;
use crate::datagram::{Datagrams, read_datagrams};
use crate::link::{Link, ReaderNote, TransportIo, read_link, write_link};
use crate::machine::{Action, Counter, Input, RoomMachine};
use crate::mesh::{MeshLayer, TopicNote};
use crate::router::Router;
use crate::shared::Shared;
use crate::stats::bump;
use crate::wire::{
    DATAGRAM_LABEL, FrameCodec, LINK_LABEL, PROTOCOL_VERSION, Presence, SignalMessage,
};

/// How often the machine's timers (dial timeouts, watchdog, cooldowns) are checked.
const TICK: Duration = Duration::from_millis(100);
/// Notes from connection and link tasks queued for the driver; the tasks wait when it is
/// full.
const NOTE_QUEUE: usize = 256;
/// Signaling messages (hello, busy) queued for sending; more are dropped and counted as
/// ignored signals (the peer hears from us at the next sighting).
const SIGNAL_QUEUE: usize = 256;
/// Transport signals queued for one connection; more are dropped (counted).
const CONNECTION_SIGNALS: usize = 64;

pub(crate) type ChannelOf<T> = <<T as Transport>::Connection as Connection>::Channel;

/// What the application asks of the driver.
pub(crate) enum Command {
    Leave(oneshot::Sender<()>),
    /// (Cells rooms) link to these peers for media: a track is addressed to them and no
    /// link reaches them.
    MediaDial(Vec<PeerId>),
}

/// What connection and link tasks tell the driver.
pub(crate) enum Note<C: Connection> {
    Connected {
        peer: PeerId,
        dial: u64,
        result: Result<C, TransportError>,
    },
    State {
        peer: PeerId,
        dial: u64,
        state: ConnectionState,
    },
    Opened {
        peer: PeerId,
        dial: u64,
        channel: C::Channel,
    },
    Offered {
        peer: PeerId,
        dial: u64,
        result: Result<C::Channel, TransportError>,
    },
    DatagramsOffered {
        peer: PeerId,
        dial: u64,
        result: Result<C::Channel, TransportError>,
    },
    /// The first sample of a peer's media track arrived.
    Track { peer: PeerId, track: RemoteTrack },
    /// A peer removed a media track.
    TrackEnded { peer: PeerId, id: String },
}

/// What a link's reader tells the driver.
pub(crate) type ReaderNotes = mpsc::Receiver<(PeerId, u64, ReaderNote)>;

/// What the driver hands the room machine or the overlay next: one queue, so neither is
/// called from inside the other.
enum Work {
    Machine(Input),
    Overlay(MeshInput),
}

/// The queues of a cells room's driver.
pub(crate) struct MeshQueues<S: SignalSession> {
    /// Overlay messages read off links.
    pub(crate) inbox: mpsc::Receiver<(PeerId, Bytes)>,
    /// Sends of the room's channels.
    pub(crate) commands: mpsc::Receiver<MeshInput>,
    /// Reports of the overlay's topic tasks.
    pub(crate) topics: mpsc::Receiver<TopicNote<S>>,
}

/// A peer's current connection.
struct Conn<C> {
    dial: u64,
    connection: C,
    signals: mpsc::Sender<Bytes>,
}

pub(crate) struct Driver<S: Signaling, T: Transport> {
    pub(crate) machine: RoomMachine,
    pub(crate) shared: Arc<Shared>,
    pub(crate) router: Arc<Router>,
    pub(crate) session: S::Session,
    pub(crate) transport: Arc<T>,
    conns: HashMap<PeerId, Conn<T::Connection>>,
    /// A channel reported by a task, held while the machine decides on it.
    opened: Option<(PeerId, u64, ChannelOf<T>)>,
    /// Unreliable channels that came before their link (at most one per peer).
    held_datagrams: HashMap<PeerId, (u64, ChannelOf<T>)>,
    notes: mpsc::Sender<Note<T::Connection>>,
    reader_notes: mpsc::Sender<(PeerId, u64, ReaderNote)>,
    outgoing: mpsc::Sender<(PeerId, Bytes)>,
    /// (Cells rooms) the overlay.
    mesh: Option<MeshLayer<S>>,
    /// Overlay messages a link queues (cells rooms).
    mesh_queue: usize,
    /// (Cells rooms) peers dialled for media, or whose link is held for it; at most
    /// [`crate::MAX_MEDIA_LINKS`]. Each is handed back to the overlay (as newly up) once no
    /// track ties the peers any more.
    media_links: HashSet<PeerId>,
    work: VecDeque<Work>,
}

impl<S: Signaling, T: Transport> Driver<S, T> {
    pub(crate) fn new(
        machine: RoomMachine,
        shared: Arc<Shared>,
        router: Arc<Router>,
        session: S::Session,
        transport: T,
    ) -> (Self, mpsc::Receiver<Note<T::Connection>>, ReaderNotes) {
        let (notes, note_rx) = mpsc::channel(NOTE_QUEUE);
        let (reader_notes, reader_rx) = mpsc::channel(NOTE_QUEUE);
        let (outgoing, outgoing_rx) = mpsc::channel(SIGNAL_QUEUE);
        tokio::spawn(send_signals(session.clone(), outgoing_rx));
        let driver = Self {
            machine,
            shared,
            router,
            session,
            transport: Arc::new(transport),
            conns: HashMap::new(),
            opened: None,
            held_datagrams: HashMap::new(),
            notes,
            reader_notes,
            outgoing,
            mesh: None,
            mesh_queue: 1,
            media_links: HashSet::new(),
            work: VecDeque::new(),
        };
        (driver, note_rx, reader_rx)
    }

    /// Makes this a cells room driven by `mesh`.
    pub(crate) fn with_mesh(mut self, mesh: MeshLayer<S>, link_queue: usize) -> Self {
        self.mesh = Some(mesh);
        self.mesh_queue = link_queue;
        self
    }

    pub(crate) async fn run(
        mut self,
        mut signals: S::Events,
        mut commands: mpsc::Receiver<Command>,
        mut notes: mpsc::Receiver<Note<T::Connection>>,
        mut reader_notes: ReaderNotes,
        mesh_queues: Option<MeshQueues<S::Session>>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut signaling_open = true;
        let cells = mesh_queues.is_some();
        let (mut mesh_inbox, mut mesh_commands, mut mesh_topics) = match mesh_queues {
            Some(q) => (Some(q.inbox), Some(q.commands), Some(q.topics)),
            None => (None, None, None),
        };
        if cells {
            self.push_overlay(MeshInput::Start { cells_hint: None });
            self.run_work().await;
        }
        loop {
            let wake = self.mesh.as_ref().and_then(|m| m.wake);
            let wake_at = tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now));
            tokio::select! {
                command = commands.recv() => {
                    let done = match command {
                        Some(Command::MediaDial(peers)) => {
                            self.media_dial(peers).await;
                            continue;
                        }
                        Some(Command::Leave(done)) => Some(done),
                        None => None,
                    };
                    self.feed(Input::Leave).await;
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
                Some((peer, dial, note)) = reader_notes.recv() => {
                    let input = match note {
                        ReaderNote::Track(announce) => {
                            self.router.media.on_announce(&self.shared, peer, announce);
                            continue;
                        }
                        ReaderNote::Bye => Input::LinkBye { peer, dial },
                        ReaderNote::Ended => {
                            let failed = self.conns.get(&peer).is_some_and(|c| {
                                c.dial == dial && c.connection.state() == ConnectionState::Failed
                            });
                            Input::LinkEnded { peer, dial, failed }
                        }
                    };
                    self.feed(input).await;
                }
                Some((from, message)) = recv_some(&mut mesh_inbox), if cells => {
                    self.push_overlay(MeshInput::Received { from: *from.as_bytes(), message });
                    self.run_work().await;
                }
                Some(command) = recv_some(&mut mesh_commands), if cells => {
                    self.push_overlay(command);
                    self.run_work().await;
                }
                Some(note) = recv_some(&mut mesh_topics), if cells => {
                    let input = self.mesh.as_mut().and_then(|mesh| mesh.on_note(note));
                    if let Some(input) = input {
                        self.push_overlay(input);
                        self.run_work().await;
                    }
                }
                () = tokio::time::sleep_until(wake_at), if wake.is_some() => {
                    if let Some(mesh) = self.mesh.as_mut() {
                        mesh.wake = None;
                    }
                    self.push_overlay(MeshInput::Tick);
                    self.run_work().await;
                }
                _ = tick.tick() => {
                    self.release_media_links();
                    let now = Instant::now();
                    if let Some(mesh) = self.mesh.as_mut() {
                        mesh.publish_status();
                        for input in mesh.replay(now) {
                            self.work.push_back(Work::Overlay(input));
                        }
                    }
                    for link in self.router.links() {
                        let input = Input::LinkHeard {
                            peer: link.peer,
                            dial: link.dial,
                            at: link.last_heard(now),
                        };
                        self.feed(input).await;
                    }
                    self.feed(Input::Tick).await;
                }
            }
        }
    }

    async fn on_signal(&mut self, event: SignalEvent) {
        let input = match event {
            SignalEvent::PeerSeen { peer, presence } => match Presence::decode(&presence) {
                Some(p) if p.protocol == PROTOCOL_VERSION => Input::PeerSeen { peer },
                _ => return bump(&self.shared.counters.signals_ignored, 1),
            },
            SignalEvent::Message { from, payload } => match SignalMessage::decode(&payload) {
                Some(SignalMessage::Hello) => Input::Hello { from },
                Some(SignalMessage::Busy { dial }) => Input::Busy { from, dial },
                Some(SignalMessage::Transport { dial, payload }) => Input::TransportSignal {
                    from,
                    dial,
                    payload: Bytes::from(payload),
                },
                None => return bump(&self.shared.counters.signals_ignored, 1),
            },
            SignalEvent::PeerGone { peer } => Input::PeerGone { peer },
            SignalEvent::Lagged { dropped } => {
                tracing::debug!(dropped, "signaling inbox overflowed");
                return;
            }
            _ => return,
        };
        self.feed(input).await;
    }

    async fn on_note(&mut self, note: Note<T::Connection>) {
        let input = match note {
            Note::Track { peer, track } => {
                return self.router.media.on_track(&self.shared, peer, track);
            }
            Note::TrackEnded { peer, id } => {
                return self.router.media.on_ended(&self.shared, peer, id);
            }
            Note::Connected { peer, dial, result } => match result {
                Ok(connection) => {
                    self.adopt(peer, dial, connection);
                    Input::Connected { peer, dial }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot create a connection");
                    Input::ConnectFailed { peer, dial }
                }
            },
            Note::State { peer, dial, state } => {
                tracing::debug!(peer = %peer.short(), dial, %state, "connection state");
                Input::ConnectionState { peer, dial, state }
            }
            Note::Opened {
                peer,
                dial,
                channel,
            } => {
                let label = channel.label().to_owned();
                self.opened = Some((peer, dial, channel));
                Input::ChannelOpened { peer, dial, label }
            }
            Note::DatagramsOffered { peer, dial, result } => match result {
                Ok(channel) => {
                    self.opened = Some((peer, dial, channel));
                    Input::DatagramsOffered {
                        peer,
                        dial,
                        opened: true,
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "unreliable channel did not open");
                    Input::DatagramsOffered {
                        peer,
                        dial,
                        opened: false,
                    }
                }
            },
            Note::Offered { peer, dial, result } => match result {
                Ok(channel) => {
                    self.opened = Some((peer, dial, channel));
                    Input::ChannelOffered {
                        peer,
                        dial,
                        opened: true,
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "link channel did not open");
                    Input::ChannelOffered {
                        peer,
                        dial,
                        opened: false,
                    }
                }
            },
        };
        self.feed(input).await;
        // A channel the machine did not take is closed.
        if let Some((_, _, channel)) = self.opened.take() {
            tokio::spawn(async move { channel.close().await });
        }
    }

    /// Hands one input to the machine and carries out its actions (and whatever they lead
    /// the overlay to).
    async fn feed(&mut self, input: Input) {
        self.work.push_back(Work::Machine(input));
        self.run_work().await;
    }

    fn push_overlay(&mut self, input: MeshInput) {
        if self.mesh.is_some() {
            self.work.push_back(Work::Overlay(input));
        }
    }

    /// Runs queued inputs until none is left. Each input's outputs are carried out before
    /// the next input; the room machine and the overlay feed each other through the queue.
    async fn run_work(&mut self) {
        while let Some(work) = self.work.pop_front() {
            match work {
                Work::Machine(input) => {
                    let actions = self.machine.handle(input, Instant::now());
                    for action in actions {
                        self.execute(action).await;
                    }
                }
                Work::Overlay(input) => {
                    let Some(mesh) = self.mesh.as_mut() else {
                        continue;
                    };
                    let outputs = mesh.overlay.handle(input, Instant::now());
                    self.shared
                        .set_mesh_backpressure(mesh.overlay.direct_backlog_high());
                    for output in outputs {
                        self.carry_out(output);
                    }
                }
            }
        }
    }

    /// (Cells rooms) dials `peers` for media (a track addressed to them finds no link), as
    /// far as [`crate::MAX_MEDIA_LINKS`] allows; the track attaches once a link is up.
    async fn media_dial(&mut self, peers: Vec<PeerId>) {
        if self.mesh.is_none() {
            return;
        }
        for peer in peers {
            if self.router.link(&peer).is_some() || self.media_links.contains(&peer) {
                continue;
            }
            if self.media_links.len() >= crate::MAX_MEDIA_LINKS {
                tracing::warn!(
                    peer = %peer.short(),
                    limit = crate::MAX_MEDIA_LINKS,
                    "too many media links: a track does not reach this peer"
                );
                continue;
            }
            tracing::debug!(peer = %peer.short(), "dialling for media");
            self.media_links.insert(peer);
            self.feed(Input::PeerSeen { peer }).await;
        }
    }

    /// (Cells rooms) lets go of media links no track needs any more. Each is handed back to
    /// the overlay as newly up, so it keeps it (planned) or closes it after its linger: the
    /// overlay may have let the link go while media held it, or not have let it go yet (it
    /// takes the repeat as a fresh hello); every such link is handed back, so none depends on
    /// the driver having seen which.
    fn release_media_links(&mut self) {
        let router = &self.router;
        let released: Vec<PeerId> = self
            .media_links
            .iter()
            .filter(|peer| !router.media.involves(peer))
            .copied()
            .collect();
        for peer in released {
            self.media_links.remove(&peer);
            if self.router.link(&peer).is_some() {
                tracing::debug!(peer = %peer.short(), "media link handed back to the overlay");
                self.push_overlay(MeshInput::LinkUp {
                    peer: *peer.as_bytes(),
                });
            }
        }
    }

    /// Carries out one of the overlay's outputs.
    fn carry_out(&mut self, output: MeshOutput) {
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        match output {
            MeshOutput::Subscribe(topic) => mesh.subscribe(topic),
            MeshOutput::Unsubscribe(topic) => mesh.unsubscribe(topic),
            MeshOutput::Announce {
                topic,
                cells,
                epoch,
                count,
            } => mesh.announce(topic, cells, epoch, count),
            MeshOutput::Connect(peer) => {
                let peer = PeerId::from_bytes(peer);
                self.work.push_back(Work::Machine(Input::PeerSeen { peer }));
            }
            MeshOutput::Disconnect(peer) => {
                let peer = PeerId::from_bytes(peer);
                let room_for_it = self.media_links.contains(&peer)
                    || self.media_links.len() < crate::MAX_MEDIA_LINKS;
                if room_for_it
                    && self.router.link(&peer).is_some()
                    && self.router.media.involves(&peer)
                {
                    // Media still ties us to the peer (a track named for it, or one it sends
                    // us): the link stays, out of the overlay's hands until no track does.
                    tracing::debug!(peer = %peer.short(), "link kept for media");
                    self.media_links.insert(peer);
                    return;
                }
                // No link: the overlay gave up on a setup that never finished (the peer that
                // was to dial is gone). Replaying its presence would put it back in the plan
                // every replay interval until its stored presence expires, as for a link
                // that went down (`retire`).
                if self.router.link(&peer).is_none() {
                    mesh.forget_presence(&peer);
                }
                self.work.push_back(Work::Machine(Input::Unwanted { peer }));
            }
            MeshOutput::Send { to, message } => {
                let to = PeerId::from_bytes(to);
                let queued = self
                    .router
                    .link(&to)
                    .is_some_and(|link| link.queue_mesh(message));
                if !queued {
                    bump(&self.shared.counters.mesh_dropped, 1);
                }
            }
            MeshOutput::WakeAt(at) => {
                mesh.wake = Some(mesh.wake.map_or(at, |wake| wake.min(at)));
            }
            MeshOutput::Deliver(delivery) => {
                let handed = mesh.deliver(delivery);
                if !handed {
                    bump(&self.shared.counters.mesh_lost, 1);
                }
            }
            MeshOutput::Event(event) => match event {
                OverlayEvent::CellsChanged { cells, cell } => {
                    tracing::debug!(cells, cell, "overlay view changed");
                    self.shared.emit(RoomEvent::CellsChanged { cells, cell });
                }
                OverlayEvent::DirectFailed {
                    target,
                    message,
                    meta,
                } => {
                    let peer = PeerId::from_bytes(target);
                    tracing::debug!(peer = %peer.short(), message, "directed chunk given up");
                    bump(&self.shared.counters.mesh_directed_failed, 1);
                    if let Some(event) = mesh.delivery_failed(peer, &meta) {
                        self.shared.emit(event);
                    }
                }
                other => tracing::debug!(?other, "overlay event"),
            },
            _ => {}
        }
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::Signal { to, message } => {
                if self.outgoing.try_send((to, message.encode())).is_err() {
                    bump(&self.shared.counters.signals_ignored, 1);
                }
            }
            Action::Connect { peer, dial, role } => self.connect(peer, dial, role),
            Action::HandleSignal {
                peer,
                dial,
                payload,
            } => {
                tracing::trace!(peer = %peer.short(), dial, len = payload.len(), "signal in");
                let conn = self.conns.get(&peer).filter(|c| c.dial == dial);
                if conn.is_none_or(|c| c.signals.try_send(payload).is_err()) {
                    bump(&self.shared.counters.signals_ignored, 1);
                }
            }
            Action::Establish { peer, dial } => self.establish(peer, dial),
            Action::OpenDatagrams { peer, dial } => {
                if let Some(conn) = self.conns.get(&peer).filter(|c| c.dial == dial) {
                    let (connection, notes) = (conn.connection.clone(), self.notes.clone());
                    tokio::spawn(async move {
                        let result = connection
                            .open_channel(DATAGRAM_LABEL, Reliability::UnreliableUnordered)
                            .await;
                        let _ = notes
                            .send(Note::DatagramsOffered { peer, dial, result })
                            .await;
                    });
                }
            }
            Action::HoldDatagrams { peer, dial } => {
                if let Some((_, _, channel)) =
                    self.opened.take_if(|(p, d, _)| *p == peer && *d == dial)
                {
                    if let Some((_, old)) = self.held_datagrams.insert(peer, (dial, channel)) {
                        tokio::spawn(async move { old.close().await });
                    }
                }
            }
            Action::AttachDatagrams { peer, dial } => {
                let channel = self
                    .opened
                    .take_if(|(p, d, _)| *p == peer && *d == dial)
                    .map(|(_, _, channel)| channel)
                    .or_else(|| {
                        let (held_dial, held) = self.held_datagrams.remove(&peer)?;
                        if held_dial == dial {
                            return Some(held);
                        }
                        tokio::spawn(async move { held.close().await });
                        None
                    });
                let link = self.router.link(&peer).filter(|l| l.dial == dial);
                if let (Some(channel), Some(link)) = (channel, link) {
                    if link.attach_datagrams(Box::new(Datagrams(channel.clone()))) {
                        tokio::spawn(read_datagrams(link, channel, self.shared.clone()));
                    } else {
                        tokio::spawn(async move { channel.close().await });
                    }
                }
            }
            Action::DropChannel { .. } => {}
            Action::Retire {
                peer,
                dial,
                close_after,
            } => self.retire(peer, dial, close_after),
            Action::Emit(event) => self.shared.emit(event),
            Action::Count(counter) => {
                let counters = &self.shared.counters;
                let counter = match counter {
                    Counter::DialsStarted => &counters.dials_started,
                    Counter::DialsFailed => &counters.dials_failed,
                    Counter::DialsBusy => &counters.dials_busy,
                    Counter::PeersRefused => &counters.peers_refused,
                    Counter::SignalsIgnored => &counters.signals_ignored,
                };
                bump(counter, 1);
            }
            Action::Leave => self.leave().await,
        }
    }

    /// Creates the connection of attempt `dial` in a task; it reports back as a note.
    fn connect(&self, peer: PeerId, dial: u64, role: Role) {
        let transport = self.transport.clone();
        let notes = self.notes.clone();
        let session = self.session.clone();
        tokio::spawn(async move {
            let (connection, mut events) = match transport.connect(role).await {
                Ok(pair) => pair,
                Err(error) => {
                    let result = Err(error);
                    let _ = notes.send(Note::Connected { peer, dial, result }).await;
                    return;
                }
            };
            let result = Ok(connection.clone());
            if notes
                .send(Note::Connected { peer, dial, result })
                .await
                .is_err()
            {
                return;
            }
            if role == Role::Offerer {
                let notes = notes.clone();
                tokio::spawn(async move {
                    let result = connection
                        .open_channel(LINK_LABEL, Reliability::ReliableOrdered)
                        .await;
                    let _ = notes.send(Note::Offered { peer, dial, result }).await;
                });
            } else {
                // Not held while the events are read: the stream ends only once the
                // connection is gone, so a clone kept here kept every closed connection
                // (and this task) alive for the room's life.
                drop(connection);
            }
            while let Some(event) = events.next().await {
                let note = match event {
                    ConnectionEvent::Signal(payload) => {
                        tracing::trace!(peer = %peer.short(), dial, len = payload.len(), "signal out");
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
                    ConnectionEvent::TrackReceived(track) => Note::Track { peer, track },
                    ConnectionEvent::TrackEnded { id } => Note::TrackEnded { peer, id },
                    _ => continue,
                };
                if notes.send(note).await.is_err() {
                    break;
                }
            }
        });
    }

    /// Keeps the new connection of attempt `dial` and starts the task that hands it
    /// signals in order.
    fn adopt(&mut self, peer: PeerId, dial: u64, connection: T::Connection) {
        let (signals, mut queue) = mpsc::channel::<Bytes>(CONNECTION_SIGNALS);
        let target = connection.clone();
        tokio::spawn(async move {
            while let Some(payload) = queue.recv().await {
                if let Err(error) = target.handle_signal(payload).await {
                    tracing::debug!(%error, "bad transport signal");
                }
            }
        });
        let old = self.conns.insert(
            peer,
            Conn {
                dial,
                connection,
                signals,
            },
        );
        // The machine retires an old attempt before it starts a new one; a connection
        // still here belongs to an attempt retired before its connection existed.
        if let Some(old) = old.filter(|old| old.dial != dial) {
            close_later(old.connection, Duration::ZERO);
        }
    }

    fn establish(&mut self, peer: PeerId, dial: u64) {
        let Some((_, _, channel)) = self.opened.take_if(|(p, d, _)| *p == peer && *d == dial)
        else {
            return;
        };
        let Some(conn) = self.conns.get(&peer).filter(|c| c.dial == dial) else {
            tokio::spawn(async move { channel.close().await });
            return;
        };
        let shared = &self.shared;
        let io = TransportIo {
            connection: conn.connection.clone(),
            channel: channel.clone(),
        };
        let codec = FrameCodec::new(shared.data_key.clone(), shared.local, peer);
        let mesh_queue = self.mesh_queue;
        let (link, queues) = Link::new(peer, dial, Box::new(io), codec, shared.epoch, mesh_queue);
        tokio::spawn(write_link(
            link.clone(),
            queues,
            shared.limits.heartbeat_interval,
        ));
        tokio::spawn(read_link(
            link.clone(),
            channel,
            shared.clone(),
            self.reader_notes.clone(),
        ));
        for track in self.router.media.tracks_for(&peer) {
            tokio::spawn(crate::media::attach(track, link.clone()));
        }
        self.router.insert(link);
        self.push_overlay(MeshInput::LinkUp {
            peer: *peer.as_bytes(),
        });
        tracing::debug!(peer = %peer.short(), "peer joined");
    }

    fn retire(&mut self, peer: PeerId, dial: u64, close_after: Duration) {
        if self
            .held_datagrams
            .get(&peer)
            .is_some_and(|(held_dial, _)| *held_dial == dial)
        {
            if let Some((_, held)) = self.held_datagrams.remove(&peer) {
                tokio::spawn(async move { held.close().await });
            }
        }
        let link = self.router.remove(&peer, dial);
        if link.is_some() {
            self.router.media.peer_gone(&self.shared, peer, dial);
        }
        let conn = match self.conns.get(&peer) {
            Some(conn) if conn.dial == dial => self.conns.remove(&peer),
            _ => None,
        };
        // The overlay hears of every link that went down, and of attempts the machine gave
        // up on (not of those it replaces or retries on its own: the overlay would take
        // them for failures and back off).
        let gave_up = conn.is_some() && !self.machine.pursuing(&peer);
        if (link.is_some() || gave_up) && self.router.link(&peer).is_none() {
            if let Some(mesh) = self.mesh.as_mut() {
                mesh.forget_presence(&peer);
            }
            self.push_overlay(MeshInput::LinkDown {
                peer: *peer.as_bytes(),
            });
        }
        match (link, conn) {
            (Some(link), _) => {
                tokio::spawn(async move {
                    tokio::time::sleep(close_after).await;
                    link.close().await;
                });
            }
            (None, Some(conn)) => close_later(conn.connection, close_after),
            (None, None) => {}
        }
    }

    async fn leave(&mut self) {
        let shared = self.shared.clone();
        shared.mark_left();
        if let Some(mesh) = self.mesh.as_mut() {
            mesh.overlay.handle(MeshInput::Leave, Instant::now());
            mesh.leave().await;
        }
        let links = self.router.drain();
        let wait = shared.limits.leave_timeout;
        join_all(links.iter().map(|link| link.goodbye(wait))).await;
        if let Err(error) = self.session.leave().await {
            tracing::debug!(%error, "signaling leave failed");
        }
        join_all(links.iter().map(|link| link.close())).await;
        for (_, conn) in self.conns.drain() {
            conn.connection.close().await;
        }
        shared.close();
    }
}

/// The next item of an optional queue; pending forever without one.
async fn recv_some<M>(queue: &mut Option<mpsc::Receiver<M>>) -> Option<M> {
    match queue {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends the machine's signaling messages in order, one at a time.
async fn send_signals<S: SignalSession>(session: S, mut queue: mpsc::Receiver<(PeerId, Bytes)>) {
    while let Some((to, message)) = queue.recv().await {
        if let Err(error) = session.send_to(to, message).await {
            tracing::debug!(%error, "signal not sent");
        }
    }
}

fn close_later<C: Connection>(connection: C, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        connection.close().await;
    });
}
