//! `Genos::builder()`: a room on the default backends.

use std::path::PathBuf;
use std::time::Duration;

use genos_crypto::{Identity, KeyParams};
use genos_room::{Room, RoomConfig, RoomLimits};
use genos_signal::nostr::{NostrConfig, NostrSignaling, RelayDiscovery};
use genos_transport::TransportError;
use genos_transport::webrtc::{IceServer, WebRtcConfig, WebRtcTransport, check_turn};

/// Entry point of the default stack.
#[derive(Debug, Clone, Copy)]
pub struct Genos;

impl Genos {
    /// Starts describing the room `room_id` of application `app_id`.
    pub fn builder(app_id: impl Into<String>, room_id: impl Into<String>) -> GenosBuilder {
        GenosBuilder {
            room: RoomConfig::new(app_id, room_id),
            relays: Vec::new(),
            nostr: NostrConfig::default(),
            webrtc: WebRtcConfig::default(),
            identity: None,
            password_text: None,
            #[cfg(feature = "fallback")]
            fallback: None,
        }
    }
}

/// What went wrong building or joining a room.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenosError {
    /// The identity file could not be read or written.
    #[error("identity: {0}")]
    Identity(#[from] genos_crypto::IdentityError),
    /// A backend's configuration is unusable.
    #[error("signaling: {0}")]
    Signal(#[from] genos_signal::SignalError),
    /// The transport's configuration is unusable.
    #[error("transport: {0}")]
    Transport(#[from] genos_transport::TransportError),
    /// Joining failed.
    #[error(transparent)]
    Room(#[from] genos_room::RoomError),
    /// Joining a Trystero room failed.
    #[cfg(feature = "trystero")]
    #[error("trystero: {0}")]
    Trystero(#[from] genos_trystero::TrysteroError),
}

enum IdentitySource {
    Given(Identity),
    File(PathBuf),
}

/// Describes a room on Nostr signaling and the WebRTC transport; [`GenosBuilder::join`]
/// joins it. Every setting has a default fit for public use: the built-in public relays,
/// a public STUN server, a fresh identity, [`RoomLimits::default`].
#[must_use]
pub struct GenosBuilder {
    room: RoomConfig,
    relays: Vec<String>,
    nostr: NostrConfig,
    webrtc: WebRtcConfig,
    identity: Option<IdentitySource>,
    /// The password as text, for the Trystero profile (Trystero's passwords are strings).
    password_text: Option<String>,
    #[cfg(feature = "fallback")]
    fallback: Option<FallbackSettings>,
}

/// Where and how links fall back (see [`GenosBuilder::fallback`]).
#[cfg(feature = "fallback")]
#[derive(Debug, Clone)]
struct FallbackSettings {
    /// Empty until [`GenosBuilder::fallback`] names the server.
    url: String,
    token: Option<String>,
    direct: bool,
    direct_timeout: Option<Duration>,
}

#[cfg(feature = "fallback")]
impl Default for FallbackSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            token: None,
            direct: true,
            direct_timeout: None,
        }
    }
}

impl std::fmt::Debug for GenosBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenosBuilder")
            .field("room", &self.room)
            .field("relays", &self.relays)
            .finish_non_exhaustive()
    }
}

impl GenosBuilder {
    /// Makes the room end-to-end encrypted with this password.
    pub fn password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.password_text = Some(String::from_utf8_lossy(password.as_ref()).into_owned());
        self.room = self.room.with_password(password);
        self
    }

    /// Adds a relay (ws:// or wss://). Without any, the built-in public relays are used.
    pub fn relay(mut self, url: impl Into<String>) -> Self {
        self.relays.push(url.into());
        self
    }

    /// Adds relays.
    pub fn relays<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.relays.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Uses the fallback server at `url` (`genos serve`, `ws://host:port`): its relay carries
    /// signaling when none of the room's relays answers (after
    /// [`NostrConfig::fallback_after`]), and a link whose direct setup fails (ICE failed, or
    /// not connected within [`genos_transport::failover::FailoverConfig::direct_timeout`]) is
    /// carried through its hub instead, transparently to channels. The server forwards
    /// sealed frames only. Every peer of a room that may need it must name the same server.
    #[cfg(feature = "fallback")]
    pub fn fallback(mut self, url: impl Into<String>) -> Self {
        self.fallback.get_or_insert_default().url = url.into();
        self
    }

    /// The token the fallback server's hub requires (in any order with
    /// [`GenosBuilder::fallback`], which it needs).
    #[cfg(feature = "fallback")]
    pub fn fallback_token(mut self, token: impl Into<String>) -> Self {
        self.fallback.get_or_insert_default().token = Some(token.into());
        self
    }

    /// Never tries a direct link: every link goes through the fallback server (networks that
    /// block UDP; tests). Needs [`GenosBuilder::fallback`] (joining without one fails with
    /// [`GenosError::Transport`]).
    #[cfg(feature = "fallback")]
    pub fn no_direct(mut self) -> Self {
        self.fallback.get_or_insert_default().direct = false;
        self
    }

    /// How long a direct setup may take before the link falls back (default 10 s; needs
    /// [`GenosBuilder::fallback`]).
    #[cfg(feature = "fallback")]
    pub fn fallback_after(mut self, timeout: Duration) -> Self {
        self.fallback.get_or_insert_default().direct_timeout = Some(timeout);
        self
    }

    /// Replaces the STUN/TURN servers.
    pub fn ice_servers(mut self, servers: Vec<IceServer>) -> Self {
        self.webrtc.ice_servers = servers;
        self
    }

    /// Adds a TURN server (`turn:host:port`, over UDP) with its credentials.
    pub fn turn(
        mut self,
        url: impl Into<String>,
        username: impl Into<String>,
        credential: impl Into<String>,
    ) -> Self {
        self.webrtc
            .ice_servers
            .push(IceServer::turn(url, username, credential));
        self
    }

    /// Connects through TURN only (see [`WebRtcConfig::relay_only`]): peers never learn each
    /// other's addresses. [`GenosBuilder::join`] first allocates on the TURN servers, so a
    /// wrong password or an unreachable server fails the join with
    /// [`TransportError::TurnRefused`](genos_transport::TransportError::TurnRefused) or
    /// [`TransportError::TurnUnreachable`](genos_transport::TransportError::TurnUnreachable)
    /// instead of links that never connect.
    pub fn relay_only(mut self) -> Self {
        self.webrtc.relay_only = true;
        self
    }

    /// Media congestion control (see [`WebRtcConfig::congestion_control`]): tracks are paced
    /// to a GCC bandwidth estimate, which [`genos_transport::LocalTrack::target_bitrate`]
    /// reports for an encoder to follow. Off by default.
    pub fn congestion_control(mut self) -> Self {
        self.webrtc.congestion_control = true;
        self
    }

    /// Connects on this machine only: binds 127.0.0.1 and uses no STUN/TURN server. For
    /// tests, demos and same-host peers. TURN servers added after it are kept.
    pub fn same_host_only(mut self) -> Self {
        self.webrtc = self.webrtc.same_host_only();
        self
    }

    /// How the room's peers link up: [`genos_room::Topology::FullMesh`] (default),
    /// [`genos_room::Topology::Cells`] for large rooms, or [`genos_room::Topology::Auto`]
    /// for a room that may grow large (a full mesh while small, cells above a threshold).
    /// Every peer of a room must use the same.
    pub fn topology(mut self, topology: genos_room::Topology) -> Self {
        self.room = self.room.with_topology(topology);
        self
    }

    /// Replaces the room limits.
    pub fn limits(mut self, limits: RoomLimits) -> Self {
        self.room = self.room.with_limits(limits);
        self
    }

    /// Argon2id cost (every peer of a room must use the same).
    pub fn key_params(mut self, params: KeyParams) -> Self {
        self.room = self.room.with_key_params(params);
        self
    }

    /// Joins as this identity (its public key is the peer id).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(IdentitySource::Given(identity));
        self
    }

    /// Joins as the identity stored in `path`, created (mode 0600) on first use.
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity = Some(IdentitySource::File(path.into()));
        self
    }

    /// Whether to keep an extended relay list (a cache file refreshed daily from a relay
    /// directory, dialled in the background). Default [`RelayDiscovery::Auto`]: on with the
    /// built-in relays, off when relays are named with [`GenosBuilder::relay`].
    pub fn relay_discovery(mut self, discovery: RelayDiscovery) -> Self {
        self.nostr.relay_discovery = discovery;
        self
    }

    /// Replaces the Nostr settings (relays given with [`GenosBuilder::relay`] are added).
    pub fn nostr_config(mut self, config: NostrConfig) -> Self {
        self.nostr = config;
        self
    }

    /// Replaces the WebRTC settings.
    pub fn webrtc_config(mut self, config: WebRtcConfig) -> Self {
        self.webrtc = config;
        self
    }

    /// Joins as a Trystero 0.25 peer instead of a genos one: browsers running Trystero with
    /// the same app id, room id and password, on a relay in common, see this peer as one of
    /// their own (`genos_trystero`; what is and is not compatible: `docs/trystero.md`). Keeps
    /// the relays (the built-in ones when none is given), the password and the WebRTC
    /// settings; identity, topology, limits and key parameters are genos's own and do not
    /// apply.
    #[cfg(feature = "trystero")]
    pub fn trystero(self) -> TrysteroBuilder {
        let relays = if self.relays.is_empty() && self.nostr.relays.is_empty() {
            genos_signal::nostr::DEFAULT_RELAYS
                .iter()
                .map(|url| (*url).to_owned())
                .collect()
        } else {
            let mut relays = self.nostr.relays.clone();
            relays.extend(self.relays);
            relays
        };
        let mut config =
            genos_trystero::TrysteroConfig::new(self.room.app_id(), self.room.room_id(), relays)
                .with_webrtc(self.webrtc);
        config.nostr = self.nostr;
        if let Some(password) = self.password_text {
            config = config.with_password(password);
        }
        TrysteroBuilder { config }
    }

    /// Derives the room key, joins the relays' topic and returns the room; peers arrive as
    /// [`genos_room::RoomEvent::PeerJoined`].
    pub async fn join(self) -> Result<Room, GenosError> {
        let identity = match self.identity {
            Some(IdentitySource::Given(identity)) => identity,
            Some(IdentitySource::File(path)) => Identity::load_or_generate(&path)?,
            None => Identity::generate(),
        };
        let peer = identity.peer_id();
        let room = self.room.with_identity(identity.clone());
        let mut nostr = self.nostr;
        nostr.relays.extend(self.relays);
        #[cfg(feature = "fallback")]
        if let Some(fallback) = &self.fallback {
            nostr.fallback_relays.push(fallback.url.clone());
        }
        let signaling = NostrSignaling::new(identity, nostr)?;
        if self.webrtc.relay_only {
            check_relays(&self.webrtc.ice_servers).await?;
        }
        #[cfg(feature = "fallback")]
        if let Some(fallback) = self.fallback {
            return join_with_fallback(signaling, self.webrtc, fallback, peer, room).await;
        }
        let transport = WebRtcTransport::new(self.webrtc)?;
        Ok(Room::join(signaling, transport, peer, room).await?)
    }
}

/// Joins with links that fall back to the server's hub (or always use it).
#[cfg(feature = "fallback")]
async fn join_with_fallback(
    signaling: NostrSignaling,
    webrtc: WebRtcConfig,
    settings: FallbackSettings,
    peer: genos_crypto::PeerId,
    room: RoomConfig,
) -> Result<Room, GenosError> {
    use genos_transport::failover::{FailoverConfig, FailoverTransport};
    use genos_transport::fallback::{FallbackConfig, FallbackTransport};

    if settings.url.is_empty() {
        return Err(TransportError::InvalidConfig(
            "no_direct, fallback_token and fallback_after need a fallback server URL".into(),
        )
        .into());
    }
    let key = room
        .derive_key()
        .await
        .map_err(genos_room::RoomError::from)?;
    // The hub counts circuits per room by this tag: derived from the room key, it names the
    // room to nobody who cannot join it.
    let mut tag = [0u8; 16];
    tag.copy_from_slice(key.sub_topic(b"fallback").get(..16).unwrap_or(&[0; 16]));
    let link_url = format!(
        "{}{}",
        settings.url.trim_end_matches('/'),
        crate::serve::LINK_PATH
    );
    let mut config = FallbackConfig::new(link_url).with_room_tag(tag);
    if let Some(token) = settings.token {
        config = config.with_token(token);
    }
    let fallback = FallbackTransport::new(config)?;
    let mut failover = FailoverConfig::default();
    if let Some(timeout) = settings.direct_timeout {
        failover = failover.with_direct_timeout(timeout);
    }
    if settings.direct {
        let transport = FailoverTransport::new(WebRtcTransport::new(webrtc)?, fallback, failover);
        Ok(Room::join_with_key(signaling, transport, peer, &key, &room).await?)
    } else {
        let transport: FailoverTransport<WebRtcTransport, _> =
            FailoverTransport::fallback_only(fallback, failover);
        Ok(Room::join_with_key(signaling, transport, peer, &key, &room).await?)
    }
}

/// How long a TURN server has to answer the allocation made before a relay-only join.
const TURN_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// For a relay-only join: at least one TURN server must grant an allocation.
async fn check_relays(servers: &[IceServer]) -> Result<(), GenosError> {
    let mut last = TransportError::InvalidConfig("relay-only needs a TURN server".to_owned());
    for server in servers
        .iter()
        .filter(|s| s.urls.iter().any(|url| url.starts_with("turn")))
    {
        match check_turn(server, TURN_CHECK_TIMEOUT).await {
            Ok(_) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last.into())
}

/// A Trystero room being described (see [`GenosBuilder::trystero`]).
#[cfg(feature = "trystero")]
#[derive(Debug)]
#[must_use]
pub struct TrysteroBuilder {
    config: genos_trystero::TrysteroConfig,
}

#[cfg(feature = "trystero")]
impl TrysteroBuilder {
    /// Uses this peer id instead of a random one (the lower id of two peers offers).
    pub fn peer_id(mut self, id: impl Into<String>) -> Self {
        self.config = self.config.with_peer_id(id);
        self
    }

    /// The settings so far, to change what the builder does not cover.
    pub fn config_mut(&mut self) -> &mut genos_trystero::TrysteroConfig {
        &mut self.config
    }

    /// Joins: returns once a relay took the subscription.
    pub async fn join(
        self,
    ) -> Result<(genos_trystero::TrysteroRoom, genos_trystero::TrysteroEvents), GenosError> {
        Ok(genos_trystero::TrysteroRoom::join(self.config).await?)
    }
}
