//! What a Trystero room is configured with, and what it reports.

use super::*;

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

    pub(super) fn validate(&self) -> Result<(), TrysteroError> {
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
    /// A joined peer's media track arrived (its first packet), with the metadata of its
    /// `@_track` (or `@_stream`) announcement.
    PeerTrack {
        /// The sender.
        peer: String,
        /// The track; [`RemoteTrack::recv_sample`](genos_transport::RemoteTrack::recv_sample)
        /// gives its samples.
        track: genos_transport::RemoteTrack,
        /// What the sender said about it.
        metadata: Option<Value>,
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
    pub(super) receiver: mpsc::Receiver<TrysteroEvent>,
}

impl TrysteroEvents {
    /// The next event, or `None` once the room is left.
    pub async fn recv(&mut self) -> Option<TrysteroEvent> {
        self.receiver.recv().await
    }

    /// The next event `wanted` accepts, skipping the others; `None` once the room is left.
    pub async fn recv_matching(
        &mut self,
        wanted: impl Fn(&TrysteroEvent) -> bool,
    ) -> Option<TrysteroEvent> {
        while let Some(event) = self.receiver.recv().await {
            if wanted(&event) {
                return Some(event);
            }
        }
        None
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
