//! What a room is and the limits it keeps.

use std::time::Duration;

use genos_cellmesh::{OverlayConfig, Sizing};
use genos_crypto::{Identity, KeyError, KeyParams, RoomKey};
use zeroize::Zeroizing;

/// Largest application message by default (256 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 << 20;
/// Longest channel name, in bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 64;
/// Largest metadata attached to one message, in bytes.
pub const MAX_METADATA_LEN: usize = 4096;

/// The room to join: app id, room id, optional password, and the limits to keep.
///
/// ```
/// use std::time::Duration;
/// use genos_room::RoomConfig;
///
/// let config = RoomConfig::new("my-app", "lobby")
///     .with_password("correct horse")
///     .with_peer_timeout(Duration::from_secs(5));
/// assert_eq!(config.app_id(), "my-app");
/// assert!(config.is_encrypted());
/// ```
#[derive(Clone)]
pub struct RoomConfig {
    pub(crate) app_id: String,
    pub(crate) room_id: String,
    pub(crate) password: Option<Zeroizing<Vec<u8>>>,
    pub(crate) key_params: KeyParams,
    pub(crate) topology: Topology,
    pub(crate) identity: Option<Identity>,
    /// Limits and timings; public so callers can tune any of them.
    pub limits: RoomLimits,
}

impl std::fmt::Debug for RoomConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomConfig")
            .field("app_id", &self.app_id)
            .field("room_id", &self.room_id)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("topology", &self.topology)
            .field("limits", &self.limits)
            .finish()
    }
}

impl RoomConfig {
    /// An open room (no password): its traffic is sealed with a key anyone who knows the app
    /// and room ids can derive, so it is obfuscated, not secret.
    pub fn new(app_id: impl Into<String>, room_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            room_id: room_id.into(),
            password: None,
            key_params: KeyParams::default(),
            topology: Topology::FullMesh,
            identity: None,
            limits: RoomLimits::default(),
        }
    }

    /// Makes the room end-to-end encrypted with a key derived from `password` (Argon2id).
    pub fn with_password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.password = Some(Zeroizing::new(password.as_ref().to_vec()));
        self
    }

    /// Argon2id cost parameters (every peer of a room must use the same).
    pub fn with_key_params(mut self, params: KeyParams) -> Self {
        self.key_params = params;
        self
    }

    /// How peers of the room link up (default [`Topology::FullMesh`]). Every peer of a room
    /// must use the same.
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// The identity this peer signs with. Required by [`Topology::Cells`] (frames other
    /// peers forward are signed by their origin); its peer id must be the one the room is
    /// joined as.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The room's topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// How long a connected peer may stay silent before it is reported as timed out.
    pub fn with_peer_timeout(mut self, timeout: Duration) -> Self {
        self.limits.peer_timeout = timeout;
        self.limits.heartbeat_interval = self.limits.heartbeat_interval.min(timeout / 4);
        self
    }

    /// Replaces all limits.
    pub fn with_limits(mut self, limits: RoomLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The application id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The room id.
    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    /// Whether the room has a password (is end-to-end encrypted).
    pub fn is_encrypted(&self) -> bool {
        self.password.is_some()
    }

    /// Derives the room key (Argon2id for a password room, on a background thread), for
    /// callers that derive it once and join several times with
    /// [`Room::join_with_key`](crate::Room::join_with_key).
    pub async fn derive_key(&self) -> Result<RoomKey, KeyError> {
        let password = self.password.as_ref().map(|p| p.as_slice());
        RoomKey::derive_async(&self.app_id, &self.room_id, password, &self.key_params).await
    }
}

/// How the peers of a room link up.
///
/// ```
/// use genos_room::{CellsSettings, RoomConfig, Topology};
///
/// let config = RoomConfig::new("my-app", "stadium")
///     .with_topology(Topology::Cells(CellsSettings::default()));
/// assert!(matches!(config.topology(), Topology::Cells(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
// Set once per join: the size of the settings variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Topology {
    /// Every peer links to every other (at most [`RoomLimits::max_peers`]): one hop, the
    /// lowest latency, for rooms up to about a hundred peers.
    #[default]
    FullMesh,
    /// The cellular mesh (`genos-cellmesh`): cells of about sqrt(N) peers, a full mesh
    /// inside each, every pair of cells joined by a few bridges; peers discover each other
    /// on per-cell signaling topics. Links per peer grow like sqrt(N); messages travel at
    /// most three hops, each signed by its origin, directed ones sealed for their target.
    Cells(CellsSettings),
    /// A full mesh while the room is small, the cellular mesh once it grows, and back,
    /// live: the overlay runs from the start and keeps the room one cell (every peer
    /// linked to every other) up to [`AutoSettings::mesh_max`] peers, then moves it to
    /// cells as [`Topology::Cells`] does, with hysteresis. Messages travel the overlay's
    /// path throughout (signed by their origin, one hop while the room is one cell), so
    /// nothing is re-routed between two layers when the shape changes.
    Auto(AutoSettings),
}

impl Topology {
    /// The overlay settings this topology runs with: `None` for a full mesh, the settings
    /// for cells, and for [`Topology::Auto`] the cells settings with its sizing.
    ///
    /// ```
    /// use genos_cellmesh::{Sizing, cell_count};
    /// use genos_room::{AutoSettings, Topology};
    ///
    /// let auto = Topology::Auto(AutoSettings::default().with_mesh_max(40));
    /// let sizing = auto.cells_settings().unwrap().overlay.sizing;
    /// assert_eq!(cell_count(40, sizing), 1); // one cell: a full mesh
    /// assert!(cell_count(200, sizing) > 1); // cells
    /// assert!(Topology::FullMesh.cells_settings().is_none());
    /// ```
    pub fn cells_settings(&self) -> Option<CellsSettings> {
        match self {
            Self::FullMesh => None,
            Self::Cells(settings) => Some(settings.clone()),
            Self::Auto(auto) => Some(auto.cells_settings()),
        }
    }
}

/// Settings of a [`Topology::Auto`] room.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AutoSettings {
    /// Largest room kept as one cell, a full mesh. Default 64. The room moves to cells once
    /// the overlay's estimate passes about 4/3 of it (86 peers by default) and back to one
    /// cell below about 3/4 of it (48), so a room near the threshold does not flap. Must
    /// leave room for 4/3 of it in [`RoomLimits::max_peers`] (checked at join).
    pub mesh_max: u32,
    /// The cells room's settings once it grows; its overlay's sizing is replaced by
    /// [`Sizing::MeshFirst`] (keeping its largest cell).
    pub cells: CellsSettings,
}

impl Default for AutoSettings {
    fn default() -> Self {
        Self {
            mesh_max: 64,
            cells: CellsSettings::default(),
        }
    }
}

impl AutoSettings {
    /// Keeps the room a full mesh up to `peers` peers.
    pub fn with_mesh_max(mut self, peers: u32) -> Self {
        self.mesh_max = peers;
        self
    }

    /// The settings the overlay runs with.
    pub(crate) fn cells_settings(&self) -> CellsSettings {
        let mut cells = self.cells.clone();
        let max_cell = match cells.overlay.sizing {
            Sizing::Auto { max_cell } | Sizing::MeshFirst { max_cell, .. } => max_cell,
            Sizing::Fixed(size) => size,
            _ => 100,
        };
        cells.overlay.sizing = Sizing::MeshFirst {
            mesh_max: self.mesh_max,
            max_cell,
        };
        cells
    }

    /// Largest room the one-cell phase can reach before the overlay resizes it.
    pub(crate) fn mesh_peak(&self) -> usize {
        usize::try_from(self.mesh_max)
            .unwrap_or(usize::MAX)
            .saturating_mul(4)
            / 3
            + 1
    }
}

/// Settings of a [`Topology::Cells`] room: the overlay's, tuned for real rooms.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CellsSettings {
    /// The overlay's settings. The defaults differ from [`OverlayConfig::default`] (which
    /// suits the simulator, whose relays keep nothing) where a real signaling layer stores
    /// presence: a newcomer gets the lobby's and its cell's stored presence as it joins, so
    /// it waits 3 s (not 12 s) for a view before it assumes it is alone; announces and the
    /// census are refreshed every 5 minutes and the beacon every minute (relay
    /// citizenship: a few events per peer per hour); bridges settle after 1 s; broadcasts
    /// are kept 60 s (not 2 s) to answer pulls: a peer cut off from the room (every cell
    /// mate crashed at once, or a room changing shape re-linking over WebRTC under load) is
    /// linked again only after the crash is noticed ([`RoomLimits::peer_timeout`], 8 s) and
    /// its new links are dialled (up to [`RoomLimits::dial_timeout`], 20 s), and then pulls
    /// what it missed (still bounded by `max_repair_frames`/`max_repair_bytes`; raise the
    /// window with those timeouts);
    /// and each origin's last 1,024 frames are told from new ones (not 64: a 1 MiB message
    /// is 64 chunks, and a frame older than the window is refused, repaired ones included);
    /// directed chunks are sent again until acknowledged for 120 s (not 60 s: the same
    /// cut-off peer, whose room re-forms in 20 s to a few minutes).
    pub overlay: OverlayConfig,
    /// Payload bytes per overlay frame: larger messages are cut into chunks of this size,
    /// each signed and forwarded on its own, and reassembled by each receiver. Default
    /// 16 KiB; at most [`MAX_MESH_CHUNK`].
    pub chunk_size: usize,
    /// Overlay frames a link queues for sending; beyond it frames are dropped (counted in
    /// [`crate::RoomStats::mesh_dropped`]) and lazy repair recovers them from other peers.
    /// A sender waits while any of its links holds more than half this. Default 1,024.
    pub link_queue: usize,
    /// Messages being reassembled from overlay chunks at once, over all senders; at the
    /// bound the oldest is dropped (counted). Default 64.
    pub max_partial_messages: usize,
    /// How long a partly received message waits for its missing chunks. Default 30 s.
    pub partial_timeout: Duration,
    /// How long presence heard on an overlay topic stands without being heard again (the
    /// relays' expiry; the Nostr default is 11 minutes). Default 11 minutes.
    pub presence_ttl: Duration,
    /// How often the presence standing is handed to the overlay again, as a relay hands
    /// it to a new subscriber: a peer whose link setups failed is tried again while its
    /// presence stands. Default 5 s.
    pub replay_interval: Duration,
}

/// Largest [`CellsSettings::chunk_size`]: an overlay frame (chunk, headers, signature,
/// seals) must fit one link frame.
pub const MAX_MESH_CHUNK: usize = 48 << 10;

impl Default for CellsSettings {
    fn default() -> Self {
        let mut overlay = OverlayConfig::default();
        overlay.bootstrap_wait = Duration::from_secs(3);
        overlay.bootstrap_listen = Duration::from_millis(500);
        overlay.bridge_settle = Duration::from_secs(1);
        overlay.announce_interval = Duration::from_secs(300);
        overlay.peer_timeout = Duration::from_secs(700);
        overlay.census_interval = Duration::from_secs(300);
        overlay.beacon_interval = Duration::from_secs(60);
        overlay.repair_window = Duration::from_secs(60);
        overlay.dedup_window = 1_024;
        overlay.direct_give_up = Duration::from_secs(120);
        Self {
            overlay,
            chunk_size: 16 << 10,
            link_queue: 1024,
            max_partial_messages: 64,
            partial_timeout: Duration::from_secs(30),
            presence_ttl: Duration::from_secs(660),
            replay_interval: Duration::from_secs(5),
        }
    }
}

/// Every bound a room keeps, and its timings. Each field documents what happens at the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomLimits {
    /// Peers connected or being dialled at once. Further peers are ignored (and counted in
    /// [`crate::RoomStats::peers_refused`]) until a slot frees.
    pub max_peers: usize,
    /// Dials in progress at once ("half-open"), in each direction: ours wait for a slot;
    /// theirs beyond it are answered busy, and the dialler retries within a second.
    pub max_half_open_dials: usize,
    /// A dial that has not produced a usable link after this long is abandoned.
    pub dial_timeout: Duration,
    /// A dial whose peer has sent nothing back (no answer) after this long is abandoned and
    /// retried within a second: signaling lost the offer or the answer (relays drop events
    /// under load). Counts as a failure, so a peer that never answers is not retried forever.
    pub answer_timeout: Duration,
    /// Wait after a failed dial before dialling that peer again (doubles per failure, up to
    /// eight times this).
    pub dial_cooldown: Duration,
    /// How often a link sends a heartbeat when it has sent nothing else.
    pub heartbeat_interval: Duration,
    /// A connected peer silent for this long is reported as timed out and disconnected
    /// (unless this side is the one not reading).
    pub peer_timeout: Duration,
    /// How long `leave()` waits for each peer to acknowledge the goodbye, so data already
    /// sent reaches it.
    pub leave_timeout: Duration,
    /// Largest application message. Larger sends are refused with
    /// [`crate::RoomError::MessageTooLarge`]; larger incoming messages are rejected.
    pub max_message_size: usize,
    /// Partially received messages kept per peer; a chunk that would start another is
    /// rejected (counted).
    pub max_partial_messages: usize,
    /// Bytes of partially received messages kept per peer (counted at their announced size);
    /// a message that would exceed it is rejected (counted).
    pub max_partial_bytes: usize,
    /// Messages queued on one channel for the application; when full, the link stops reading
    /// and the sender waits (backpressure).
    pub channel_queue_messages: usize,
    /// Bytes queued on one channel for the application (at least one message always fits).
    pub channel_queue_bytes: usize,
    /// Messages kept for channels the application has not opened yet; beyond it (or beyond
    /// [`RoomLimits::unopened_bytes`]) they are dropped and counted.
    pub unopened_messages: usize,
    /// Bytes kept for channels the application has not opened yet.
    pub unopened_bytes: usize,
    /// Room events kept for a slow event reader; it then gets [`crate::RoomEvent::Lagged`].
    pub event_capacity: usize,
    /// Pings awaiting their answer per peer; more give [`crate::RoomError::TooManyPings`].
    pub max_pending_pings: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        Self {
            max_peers: 128,
            max_half_open_dials: 16,
            dial_timeout: Duration::from_secs(20),
            answer_timeout: Duration::from_secs(4),
            dial_cooldown: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(2),
            peer_timeout: Duration::from_secs(8),
            leave_timeout: Duration::from_secs(2),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_partial_messages: 32,
            max_partial_bytes: DEFAULT_MAX_MESSAGE_SIZE,
            channel_queue_messages: 256,
            channel_queue_bytes: 64 << 20,
            unopened_messages: 256,
            unopened_bytes: 16 << 20,
            event_capacity: 1024,
            max_pending_pings: 16,
        }
    }
}
