//! The room handle: what the application holds. Joining starts the driver (`driver.rs`),
//! which runs the room machine (`machine/`); the handle reads the shared state and the
//! router, and asks the driver to leave.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use genos_crypto::{PeerId, RoomKey, SealKey};
use genos_signal::{JoinRequest, SignalHealth, SignalSession, Signaling, Topic};
use genos_transport::{Codec, Transport};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::driver::{Command, Driver, MeshQueues};
use crate::machine::RoomMachine;
use crate::media::{RoomTrack, TrackOptions};
use crate::mesh::{MESH_COMMANDS, MESH_INBOX, MeshLayer, MeshStatus, StatusCell};
use crate::router::Router;
use crate::shared::Shared;
use crate::wire::Presence;
use crate::{
    Channel, PeerInfo, RoomConfig, RoomError, RoomEvent, RoomEvents, RoomLimits, RoomStats,
    Topology, TypedChannel, lock,
};

/// The parts of a room key a room uses.
pub(crate) struct Keys {
    pub(crate) topic: Topic,
    pub(crate) signal: SealKey,
    pub(crate) data: SealKey,
}

/// What a cells room needs to join: its settings, its identity and the room key.
pub(crate) struct CellsJoin {
    pub(crate) settings: crate::CellsSettings,
    pub(crate) identity: genos_crypto::Identity,
    pub(crate) key: RoomKey,
}

struct Handle {
    shared: Arc<Shared>,
    router: Arc<Router>,
    health: Box<dyn Fn() -> SignalHealth + Send + Sync>,
    commands: mpsc::Sender<Command>,
    mesh_status: Option<Arc<StatusCell>>,
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
/// use genos_signal::memory::{MemorySignalingConfig, MemorySignaling};
/// use genos_transport::memory::{MemoryTransport, MemoryTransportConfig};
///
/// let hub = MemorySignaling::new(MemorySignalingConfig::default());
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
        let key = config.derive_key().await?;
        Self::join_with_key(signaling, transport, local_peer, &key, &config).await
    }

    /// Joins with a room key derived beforehand (for callers that derive it once and join
    /// several times); `config` gives the limits, topology and identity (its ids and
    /// password are not read again).
    pub async fn join_with_key<S: Signaling, T: Transport>(
        signaling: S,
        transport: T,
        local_peer: PeerId,
        key: &RoomKey,
        config: &RoomConfig,
    ) -> Result<Self, RoomError> {
        if let Topology::Auto(auto) = &config.topology
            && auto.mesh_peak() > config.limits.max_peers
        {
            return Err(RoomError::InvalidSettings(format!(
                "mesh_max {} needs max_peers of at least {} (4/3 of it: the room stays one \
                 cell until then)",
                auto.mesh_max,
                auto.mesh_peak()
            )));
        }
        let cells = match config.topology.cells_settings() {
            Some(settings) => {
                let identity = config.identity.clone().ok_or(RoomError::IdentityRequired)?;
                if identity.peer_id() != local_peer {
                    return Err(RoomError::IdentityMismatch);
                }
                if settings.chunk_size == 0 || settings.chunk_size > crate::MAX_MESH_CHUNK {
                    return Err(RoomError::InvalidSettings(format!(
                        "chunk_size must be 1 to {} bytes",
                        crate::MAX_MESH_CHUNK
                    )));
                }
                Some(CellsJoin {
                    settings,
                    identity,
                    key: key.clone(),
                })
            }
            None => None,
        };
        let keys = Keys {
            topic: Topic::from_bytes(key.topic()),
            signal: key.signal_key().clone(),
            data: key.data_key().clone(),
        };
        Self::join_parts(signaling, transport, local_peer, keys, config.limits, cells).await
    }

    pub(crate) async fn join_parts<S: Signaling, T: Transport>(
        signaling: S,
        transport: T,
        local_peer: PeerId,
        keys: Keys,
        limits: RoomLimits,
        cells: Option<CellsJoin>,
    ) -> Result<Self, RoomError> {
        let signaling = Arc::new(signaling);
        let request = JoinRequest::new(keys.topic, local_peer).with_seal_key(keys.signal);
        let (session, signals) = signaling.join(request).await?;
        // A cells room's peers announce on the overlay's topics only; the room's topic is
        // their inbox for dialling.
        if cells.is_none() {
            session.announce(Presence::current().encode()).await?;
        }
        let (shared, first_events) = Shared::new(local_peer, limits, keys.data);
        let shared = Arc::new(shared);
        let mut router = Router::new(shared.clone());
        let health_of = session.clone();
        let health = Box::new(move || health_of.health());
        let machine = RoomMachine::new(local_peer, limits, rand::random());
        let mut mesh_parts = None;
        if let Some(cells) = cells {
            let (inbox, inbox_rx) = mpsc::channel(MESH_INBOX);
            let (mesh_commands, commands_rx) = mpsc::channel(MESH_COMMANDS);
            shared.set_mesh_inbox(inbox);
            let (layer, topics_rx) = MeshLayer::new(
                &cells.settings,
                cells.identity,
                cells.key,
                signaling.clone(),
                shared.clone(),
            );
            router = router.with_mesh(mesh_commands, cells.settings.chunk_size);
            let queues = MeshQueues {
                inbox: inbox_rx,
                commands: commands_rx,
                topics: topics_rx,
            };
            mesh_parts = Some((layer, queues, cells.settings.link_queue));
        }
        let router = Arc::new(router);
        let (mut driver, notes, reader_notes) =
            Driver::<S, T>::new(machine, shared.clone(), router.clone(), session, transport);
        let mut mesh_status = None;
        let mut mesh_queues = None;
        if let Some((layer, queues, link_queue)) = mesh_parts {
            mesh_status = Some(layer.status.clone());
            mesh_queues = Some(queues);
            driver = driver.with_mesh(layer, link_queue);
        }
        let (commands, command_rx) = mpsc::channel(4);
        tokio::spawn(driver.run(signals, command_rx, notes, reader_notes, mesh_queues));
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                router,
                health,
                commands,
                mesh_status,
                first_events: std::sync::Mutex::new(Some(first_events)),
            }),
        })
    }

    /// (Cells rooms) the overlay's latest state: cells, links by role, roster, counters.
    /// `None` in a full-mesh room, and until the overlay's first report (100 ms).
    pub fn mesh_status(&self) -> Option<MeshStatus> {
        self.handle.mesh_status.as_ref().and_then(|cell| cell.get())
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
        match self.handle.shared.subscribe() {
            Some(receiver) => RoomEvents::new(receiver),
            None => RoomEvents::new(broadcast::channel(1).1),
        }
    }

    /// Opens (or joins) the byte channel `name`. Messages that arrived for it before it was
    /// opened are delivered first (within [`RoomLimits::unopened_messages`]).
    pub fn channel(&self, name: &str) -> Result<Channel, RoomError> {
        let handle = &self.handle;
        Channel::open(name, handle.shared.registry.clone(), handle.router.clone())
    }

    /// Opens the channel `name` with unreliable sends: each message one sealed datagram
    /// (at most one frame, never chunked, never waited for; drops and losses counted in
    /// [`RoomStats`]). It receives what peers send on `name` either way. For the latest
    /// state (game moves, telemetry) rather than every state.
    pub fn unreliable_channel(&self, name: &str) -> Result<Channel, RoomError> {
        self.channel(name).map(Channel::into_unreliable)
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
        let mut peers: Vec<PeerId> = self.handle.router.links().iter().map(|l| l.peer).collect();
        peers.sort();
        peers
    }

    /// The connected peers with their counters.
    pub async fn peer_info(&self) -> Vec<PeerInfo> {
        let links = self.handle.router.links();
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
        let limits = self.handle.shared.limits;
        let link = self
            .handle
            .router
            .link(&peer)
            .ok_or(RoomError::UnknownPeer(peer))?;
        link.ping(limits.max_pending_pings, limits.peer_timeout)
            .await
    }

    /// Starts sending a media track of `codec` to `options.target` (every peer, now and
    /// later, by default), with `options.metadata` for the receivers. Returns once every
    /// targeted peer connected now has agreed to the track (or failed to, within the
    /// transport's negotiation bound); write the encoded samples to the returned track.
    /// Receivers get [`RoomEvent::PeerTrack`](crate::RoomEvent::PeerTrack).
    ///
    /// In a cells room a track to everyone reaches the peers this peer has a direct link to
    /// (tracks are never forwarded); a track addressed to peers by name also reaches those
    /// without one: the room links to them for it (at most [`crate::MAX_MEDIA_LINKS`] such
    /// links), and the track attaches once each link is up.
    ///
    /// Errors: [`RoomError::MetadataTooLarge`], [`RoomError::TooManyTracks`],
    /// [`RoomError::Left`].
    pub async fn add_track(
        &self,
        codec: Codec,
        options: TrackOptions,
    ) -> Result<RoomTrack, RoomError> {
        if self.handle.shared.has_left() {
            return Err(RoomError::Left);
        }
        let router = &self.handle.router;
        let track = router.media.add(codec, options)?;
        let attaching = router
            .links()
            .into_iter()
            .filter(|link| track.inner.wants(&link.peer))
            .map(|link| crate::media::attach(track.inner.clone(), link));
        join_all(attaching).await;
        if self.handle.mesh_status.is_some() {
            let unlinked: Vec<PeerId> = track
                .inner
                .named_targets()
                .into_iter()
                .filter(|peer| router.link(peer).is_none())
                .collect();
            if !unlinked.is_empty() {
                // Full only while the driver is busy; the peers are then not reached.
                let _ = self
                    .handle
                    .commands
                    .send(Command::MediaDial(unlinked))
                    .await;
            }
        }
        Ok(track)
    }

    /// Stops sending `track`: every receiver gets
    /// [`RoomEvent::PeerTrackEnded`](crate::RoomEvent::PeerTrackEnded); writes to it fail
    /// from now on. Removing a removed track does nothing.
    pub async fn remove_track(&self, track: &RoomTrack) -> Result<(), RoomError> {
        let router = &self.handle.router;
        let removals = router
            .media
            .remove(track)
            .into_iter()
            .filter_map(|(peer, dial, local)| {
                let link = router.link(&peer).filter(|link| link.dial == dial)?;
                Some(async move { link.remove_track(&local).await })
            });
        for result in join_all(removals).await {
            if let Err(error) = result {
                tracing::debug!(%error, "a track was not removed from a link");
            }
        }
        Ok(())
    }

    /// How signaling is doing: each relay's state and counters, and what this peer
    /// published and received (see [`SignalHealth`]).
    pub fn signal_health(&self) -> SignalHealth {
        (self.handle.health)()
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

    /// Seals `plain` for `peer` as the next frame of the link, whatever it holds: a frame
    /// the peer authenticates but cannot read (as from a newer version). For tests of the
    /// receiving side.
    #[cfg(feature = "testing")]
    pub async fn send_sealed_frame(
        &self,
        peer: PeerId,
        plain: bytes::Bytes,
    ) -> Result<(), RoomError> {
        let link = self
            .handle
            .router
            .link(&peer)
            .ok_or(RoomError::UnknownPeer(peer))?;
        link.send_plain(plain).await
    }

    /// Sends `frame` to `peer` as it is, unsealed and out of sequence, as a hostile peer
    /// would. For tests of the receiving side.
    #[cfg(feature = "testing")]
    pub async fn send_raw_frame(&self, peer: PeerId, frame: bytes::Bytes) -> Result<(), RoomError> {
        let link = self
            .handle
            .router
            .link(&peer)
            .ok_or(RoomError::UnknownPeer(peer))?;
        link.send_raw(frame).await
    }
}
