//! `genos demo`: peers meet, connect, chat and leave, written against the seams only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos::crypto::PeerId;
use genos::room::dial_role;
use genos::signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};
use genos::transport::{Connection, ConnectionEvent, DataChannel, Reliability, Role, Transport};
use tokio::sync::mpsc;

/// The label of the demo's chat channel.
const CHAT: &str = "chat";

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The signaling backend refused something.
    #[error("signaling: {0}")]
    Signal(#[from] genos::signal::SignalError),
    /// The transport backend refused something.
    #[error("transport: {0}")]
    Transport(#[from] genos::transport::TransportError),
    /// The peers did not finish within the demo's time limit.
    #[error("the peers did not finish within {0:?}")]
    Timeout(Duration),
    /// A peer task failed unexpectedly.
    #[error("peer task failed: {0}")]
    Task(String),
}

/// What the demo reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DemoEvent {
    /// A peer joined the topic.
    Joined {
        /// The peer.
        peer: PeerId,
    },
    /// A peer saw another peer's presence.
    Saw {
        /// Who saw.
        peer: PeerId,
        /// Whom it saw.
        other: PeerId,
    },
    /// A direct connection came up (reported by the offering side).
    Connected {
        /// The offering peer.
        peer: PeerId,
        /// The answering peer.
        other: PeerId,
    },
    /// A chat line arrived.
    Chat {
        /// The receiver.
        peer: PeerId,
        /// The sender.
        from: PeerId,
        /// The text.
        text: String,
    },
    /// A peer left.
    Left {
        /// The peer.
        peer: PeerId,
    },
}

/// What the demo measured.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DemoReport {
    /// Peers that took part.
    pub peers: usize,
    /// Connections established (one per pair).
    pub connections: usize,
    /// Chat lines delivered.
    pub chat_lines: usize,
    /// Time from start until every peer had every connection.
    pub all_connected: Duration,
    /// Time from start until every peer had left.
    pub total: Duration,
}

/// Limit on the whole run, so a broken backend fails instead of hanging.
pub const DEMO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the demo's peers meet: the topic, and the signaling key when the room has one.
#[derive(Debug, Clone)]
pub struct Meeting {
    /// The rendezvous topic.
    pub topic: Topic,
    /// The room's signaling subkey, handed to backends that seal (Nostr).
    pub seal_key: Option<genos::crypto::SealKey>,
}

impl Meeting {
    /// The meeting of a room: topic and signaling key derived from app, room and password.
    pub fn of_room(key: &genos::crypto::RoomKey) -> Self {
        Self {
            topic: Topic::from_bytes(key.topic()),
            seal_key: Some(key.signal_key().clone()),
        }
    }

    /// A random topic and no key, for backends that do not seal.
    pub fn random() -> Self {
        Self {
            topic: Topic::from_bytes(rand::random()),
            seal_key: None,
        }
    }
}

/// Runs one peer per signaling backend (each with the peer id it joins as) on the given
/// transport; `on_event` sees what happens as it happens.
pub async fn run<S, T>(
    peers: Vec<(S, PeerId)>,
    transport: T,
    meeting: Meeting,
    mut on_event: impl FnMut(&DemoEvent),
) -> Result<DemoReport, DemoError>
where
    S: Signaling,
    T: Transport + Clone,
{
    let start = Instant::now();
    let count = peers.len();
    let (events, mut event_rx) = mpsc::channel::<DemoEvent>(256);
    let (connected_tx, mut connected_rx) = mpsc::channel::<()>(count.max(1));
    let mut tasks = Vec::new();
    // Everyone leaves together once everyone has heard everyone: a peer that closed its
    // connections early could cut off a line still on its way to a slower peer.
    let all_heard = Arc::new(tokio::sync::Barrier::new(count));
    for (signaling, id) in peers {
        let peer = Peer {
            id,
            expected: count.saturating_sub(1),
            events: events.clone(),
            connected: connected_tx.clone(),
            all_heard: all_heard.clone(),
        };
        let transport = transport.clone();
        tasks.push(tokio::spawn(peer.run(
            signaling,
            transport,
            meeting.clone(),
        )));
    }
    let peers = count;
    drop((events, connected_tx));

    let mut report = DemoReport {
        peers,
        ..DemoReport::default()
    };
    let mut ready = 0;
    let deadline = tokio::time::Instant::now() + DEMO_TIMEOUT;
    loop {
        tokio::select! {
            event = event_rx.recv() => match event {
                Some(event) => {
                    match &event {
                        DemoEvent::Connected { .. } => report.connections += 1,
                        DemoEvent::Chat { .. } => report.chat_lines += 1,
                        _ => {}
                    }
                    on_event(&event);
                }
                None => break,
            },
            Some(()) = connected_rx.recv() => {
                ready += 1;
                if ready == peers {
                    report.all_connected = start.elapsed();
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(DemoError::Timeout(DEMO_TIMEOUT));
            }
        }
    }
    for task in tasks {
        task.await.map_err(|e| DemoError::Task(e.to_string()))??;
    }
    report.total = start.elapsed();
    Ok(report)
}

struct Peer {
    id: PeerId,
    expected: usize,
    events: mpsc::Sender<DemoEvent>,
    connected: mpsc::Sender<()>,
    all_heard: Arc<tokio::sync::Barrier>,
}

/// What a peer's helper tasks tell it.
enum Note<C> {
    /// A chat channel is open with `other`.
    Channel(PeerId, C),
    /// A chat line arrived from `other`.
    Line(PeerId, String),
}

impl Peer {
    async fn emit(&self, event: DemoEvent) {
        let _ = self.events.send(event).await;
    }

    async fn run<S: Signaling, T: Transport>(
        self,
        signaling: S,
        transport: T,
        meeting: Meeting,
    ) -> Result<(), DemoError> {
        let mut request = JoinRequest::new(meeting.topic, self.id);
        if let Some(key) = meeting.seal_key {
            request = request.with_seal_key(key);
        }
        let (session, mut signals) = signaling.join(request).await?;
        self.emit(DemoEvent::Joined { peer: self.id }).await;
        session.announce(Bytes::from_static(b"genos-demo")).await?;

        let (notes, mut note_rx) =
            mpsc::channel::<Note<<T::Connection as Connection>::Channel>>(64);
        let mut connections: HashMap<PeerId, T::Connection> = HashMap::new();
        let mut channels = BTreeMap::new();
        let mut lines = 0;
        while lines < self.expected {
            tokio::select! {
                signal = signals.next() => {
                    let Some(signal) = signal else { break };
                    match signal {
                        SignalEvent::PeerSeen { peer, .. } => {
                            self.emit(DemoEvent::Saw { peer: self.id, other: peer }).await;
                            if dial_role(&self.id, &peer) == Some(Role::Offerer)
                                && !connections.contains_key(&peer)
                            {
                                let conn = self.dial(&transport, &session, peer, Role::Offerer, &notes).await?;
                                connections.insert(peer, conn);
                            }
                        }
                        SignalEvent::Message { from, payload } => {
                            let conn = match connections.get(&from) {
                                Some(conn) => conn.clone(),
                                None => {
                                    let conn = self
                                        .dial(&transport, &session, from, Role::Answerer, &notes)
                                        .await?;
                                    connections.insert(from, conn.clone());
                                    conn
                                }
                            };
                            if let Err(error) = conn.handle_signal(payload).await {
                                tracing::warn!(%error, "dropping a bad transport signal");
                            }
                        }
                        _ => {}
                    }
                }
                Some(note) = note_rx.recv() => match note {
                    Note::Channel(other, channel) => {
                        channels.insert(other, channel.clone());
                        if channels.len() == self.expected {
                            let _ = self.connected.send(()).await;
                            for channel in channels.values() {
                                let text = format!("hello from {}", self.id.short());
                                channel.send(Bytes::from(text)).await?;
                            }
                        }
                    }
                    Note::Line(from, text) => {
                        lines += 1;
                        self.emit(DemoEvent::Chat { peer: self.id, from, text }).await;
                    }
                },
            }
        }
        self.all_heard.wait().await;
        session.leave().await?;
        for conn in connections.values() {
            conn.close().await;
        }
        self.emit(DemoEvent::Left { peer: self.id }).await;
        Ok(())
    }

    /// Starts a connection to `other` and the tasks that relay its signals and read its chat.
    async fn dial<T: Transport, S: SignalSession>(
        &self,
        transport: &T,
        session: &S,
        other: PeerId,
        role: Role,
        notes: &mpsc::Sender<Note<<T::Connection as Connection>::Channel>>,
    ) -> Result<T::Connection, DemoError> {
        let (conn, mut conn_events) = transport.connect(role).await?;
        let session = session.clone();
        let notes = notes.clone();
        let reported = self.events.clone();
        let me = self.id;
        if role == Role::Offerer {
            let (conn, notes) = (conn.clone(), notes.clone());
            tokio::spawn(async move {
                if let Ok(channel) = conn.open_channel(CHAT, Reliability::ReliableOrdered).await {
                    let _ = reported
                        .send(DemoEvent::Connected { peer: me, other })
                        .await;
                    read_chat(other, channel, notes).await;
                }
            });
        }
        tokio::spawn(async move {
            while let Some(event) = conn_events.next().await {
                match event {
                    ConnectionEvent::Signal(message) => {
                        let relayed = session.send_to(other, message).await;
                        if relayed.is_err() {
                            break;
                        }
                    }
                    ConnectionEvent::ChannelOpened(channel) => {
                        tokio::spawn(read_chat(other, channel, notes.clone()));
                    }
                    _ => {}
                }
            }
        });
        Ok(conn)
    }
}

async fn read_chat<C: DataChannel>(other: PeerId, channel: C, notes: mpsc::Sender<Note<C>>) {
    if notes
        .send(Note::Channel(other, channel.clone()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(message) = channel.recv().await {
        let text = String::from_utf8_lossy(&message).into_owned();
        if notes.send(Note::Line(other, text)).await.is_err() {
            return;
        }
    }
}
