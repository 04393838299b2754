//! `WebRtcTransport`: direct, encrypted links over WebRTC data channels (webrtc 0.21).
//!
//! Each connection is one `RTCPeerConnection`. Signaling messages are small JSON documents
//! (offer, answer, trickled ICE candidates), opaque to the layers above. The offerer opens a
//! hidden control channel before its offer, so the SDP always carries an SCTP association;
//! it also carries the goodbye that lets the far side report [`ConnectionState::Closed`]
//! rather than waiting for ICE to time out.
//!
//! Bounds: every channel has a send-buffer limit (a reliable send waits below it; an
//! unreliable send that finds it full drops and counts), a bounded receive queue, a maximum
//! message size, a limit on channels per connection, a bounded event queue and a size limit
//! on signaling input.

mod channel;
mod interfaces;
mod signal;

use std::net::IpAddr;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel as RtcDataChannel, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;

use self::channel::ChannelShared;
pub use self::channel::WebRtcChannel;
pub use self::interfaces::IpFilter;
use self::signal::Signal;
use crate::shared::Counters;
use crate::{
    Connection, ConnectionEvent, ConnectionState, ConnectionStats, Reliability, Role, Transport,
    TransportError, TransportLimits,
};

/// Label of the hidden control channel.
const CONTROL_LABEL: &str = "_genos";
/// Control message: the sender is closing the connection.
const BYE: &[u8] = b"bye";
/// Longest signaling message accepted (an SDP with many candidates stays far below).
pub const MAX_SIGNAL_LEN: usize = 64 * 1024;
/// A remote that advertises no `a=max-message-size` accepts 64 KiB (RFC 8841 §6.1).
const RFC8841_DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// The remote's `a=max-message-size` (0 means "no limit": capped at ours by the caller).
fn advertised_max_message(sdp: &str) -> usize {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=max-message-size:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .map_or(RFC8841_DEFAULT_MAX_MESSAGE, |size| {
            if size == 0 { usize::MAX } else { size }
        })
}

/// Candidates held while waiting for the remote description.
const MAX_EARLY_CANDIDATES: usize = 64;

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp` URLs.
    pub urls: Vec<String>,
    /// TURN username (empty for STUN).
    pub username: String,
    /// TURN credential (empty for STUN).
    pub credential: String,
}

impl IceServer {
    /// A STUN server.
    pub fn stun(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            username: String::new(),
            credential: String::new(),
        }
    }

    /// A TURN server with credentials.
    pub fn turn(
        url: impl Into<String>,
        username: impl Into<String>,
        credential: impl Into<String>,
    ) -> Self {
        Self {
            urls: vec![url.into()],
            username: username.into(),
            credential: credential.into(),
        }
    }
}

/// Settings of a [`WebRtcTransport`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebRtcConfig {
    /// STUN/TURN servers. Default: one public STUN server. Tests use none.
    pub ice_servers: Vec<IceServer>,
    /// Local UDP addresses to bind. Default `0.0.0.0:0`: every interface except loopback
    /// and link-local ones. Narrow it with [`WebRtcConfig::interfaces`] and
    /// [`WebRtcConfig::ip_filter`].
    pub udp_addrs: Vec<String>,
    /// Offer loopback addresses as candidates (same-machine peers). Default off; on in
    /// [`WebRtcConfig::loopback`]. An explicit loopback bind address needs it too.
    pub include_loopback: bool,
    /// Only these interfaces (by OS name, e.g. `eth0`) for ICE. Default empty: any.
    pub interfaces: Vec<String>,
    /// Only local IPs this predicate accepts for ICE. Default none: any.
    pub ip_filter: Option<IpFilter>,
    /// Largest message per send this side accepts, advertised in the SDP
    /// (`a=max-message-size`). Default 256 KiB. A channel's limit is the smaller of this and
    /// the remote's advertised size (64 KiB when it advertises none, RFC 8841): 256 KiB
    /// between genos peers, 64 KiB with most other stacks.
    pub max_message_size: usize,
    /// Bytes a channel buffers before a reliable send waits. Default 1 MiB.
    pub send_buffer: usize,
    /// Messages a channel's receive queue holds before reading from the link pauses.
    /// Default 256.
    pub receive_queue: usize,
    /// Channels each side may open. Default 64.
    pub max_channels: usize,
    /// Capacity of each connection's event queue. Default 256.
    pub events_capacity: usize,
    /// ICE connectivity-check interval. Default `None`: the crate's (200 ms). With the setup
    /// fixes in `vendor/` a shorter interval no longer speeds up connecting.
    pub ice_check_interval: Option<Duration>,
    /// ICE keepalive interval. Default 2 s. `None`: the crate's default.
    pub ice_keepalive: Option<Duration>,
    /// Silence after which the link reports `Disconnected`. Default 5 s.
    pub ice_disconnected_timeout: Option<Duration>,
    /// Silence after which the link reports `Failed`: the bound on noticing a peer that
    /// vanished without closing. Default 15 s.
    pub ice_failed_timeout: Option<Duration>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: vec![IceServer::stun("stun:stun.l.google.com:19302")],
            udp_addrs: vec!["0.0.0.0:0".to_owned()],
            include_loopback: false,
            interfaces: Vec::new(),
            ip_filter: None,
            max_message_size: 256 * 1024,
            send_buffer: 1024 * 1024,
            receive_queue: 256,
            max_channels: 64,
            events_capacity: 256,
            ice_check_interval: None,
            ice_keepalive: Some(Duration::from_secs(2)),
            ice_disconnected_timeout: Some(Duration::from_secs(5)),
            ice_failed_timeout: Some(Duration::from_secs(15)),
        }
    }
}

impl WebRtcConfig {
    /// Same-machine settings: bind 127.0.0.1, no STUN/TURN (nothing leaves the host).
    pub fn loopback() -> Self {
        Self::default().same_host_only()
    }

    /// Keeps every other setting but binds 127.0.0.1 only, allows loopback candidates and
    /// drops the STUN/TURN servers.
    pub fn same_host_only(mut self) -> Self {
        self.ice_servers.clear();
        self.udp_addrs = vec!["127.0.0.1:0".to_owned()];
        self.include_loopback = true;
        self
    }

    /// The webrtc crate's own ICE timing (for comparison in benchmarks).
    pub fn with_crate_ice_timing(mut self) -> Self {
        self.ice_check_interval = None;
        self.ice_keepalive = None;
        self.ice_disconnected_timeout = None;
        self.ice_failed_timeout = None;
        self
    }

    /// Sets how long silence lasts before the link reports disconnected, then failed.
    pub fn with_ice_timeouts(mut self, disconnected: Duration, failed: Duration) -> Self {
        self.ice_disconnected_timeout = Some(disconnected);
        self.ice_failed_timeout = Some(failed);
        self
    }

    /// Offers only addresses of these interfaces (by OS name) as candidates.
    pub fn with_interfaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.interfaces = names.into_iter().map(Into::into).collect();
        self
    }

    /// Offers only local IPs `filter` accepts as candidates.
    pub fn with_ip_filter(
        mut self,
        filter: impl Fn(IpAddr) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.ip_filter = Some(IpFilter::new(filter));
        self
    }

    /// Sets the UDP addresses to bind.
    pub fn with_udp_addrs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, addrs: I) -> Self {
        self.udp_addrs = addrs.into_iter().map(Into::into).collect();
        self
    }

    /// Allows (or not) loopback candidates.
    pub fn with_loopback(mut self, include: bool) -> Self {
        self.include_loopback = include;
        self
    }

    /// The addresses this configuration binds on this host now.
    pub fn bind_addrs(&self) -> Result<Vec<String>, TransportError> {
        let policy = interfaces::Policy {
            include_loopback: self.include_loopback,
            interfaces: &self.interfaces,
            ip_filter: self.ip_filter.as_ref(),
        };
        interfaces::resolve(&self.udp_addrs, &policy, &interfaces::local_addrs())
    }

    /// Sets the send buffer.
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes;
        self
    }

    /// Sets the channel limit.
    pub fn with_max_channels(mut self, channels: usize) -> Self {
        self.max_channels = channels;
        self
    }

    fn validate(&self) -> Result<(), TransportError> {
        let invalid = |what: &str| Err(TransportError::InvalidConfig(what.to_owned()));
        if self.udp_addrs.is_empty() {
            return invalid("at least one UDP address to bind");
        }
        if self.max_message_size == 0 || self.max_message_size > self.send_buffer {
            return invalid("max_message_size must be between 1 and send_buffer");
        }
        if self.receive_queue == 0 || self.events_capacity == 0 || self.max_channels == 0 {
            return invalid("queues and max_channels must be at least 1");
        }
        // Re-resolved at every connect (interfaces come and go); checked here so a
        // configuration that can never bind fails at once.
        self.bind_addrs()?;
        Ok(())
    }
}

/// The WebRTC transport. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebRtcTransport {
    config: Arc<WebRtcConfig>,
}

impl WebRtcTransport {
    /// A transport with the given settings.
    pub fn new(config: WebRtcConfig) -> Result<Self, TransportError> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// Shared by a connection's handles, its event handler and its channels.
pub(crate) struct Shared {
    role: Role,
    pub(crate) config: Arc<WebRtcConfig>,
    pc: Arc<dyn PeerConnection>,
    state: watch::Sender<ConnectionState>,
    events: mpsc::Sender<ConnectionEvent<WebRtcChannel>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) channels: Mutex<Vec<Arc<ChannelShared>>>,
    opened: AtomicUsize,
    remote_set: AtomicBool,
    /// The remote's advertised largest message (SDP `a=max-message-size`).
    pub(crate) remote_max_message: AtomicUsize,
    early_candidates: Mutex<Vec<webrtc::peer_connection::RTCIceCandidateInit>>,
    control: Mutex<Option<Arc<dyn RtcDataChannel>>>,
    closing: AtomicBool,
}

impl Shared {
    /// Moves to `state` and reports it, unless it is no change or the connection already
    /// ended (terminal states are final).
    fn set_state(&self, state: ConnectionState) {
        let changed = self.state.send_if_modified(|current| {
            let move_on = *current != state && !current.is_terminal();
            if move_on {
                *current = state;
            }
            move_on
        });
        if changed {
            let _ = self.events.try_send(ConnectionEvent::StateChanged(state));
        }
    }

    fn emit_signal(&self, signal: &Signal) {
        match signal.encode() {
            Ok(bytes) => {
                if self
                    .events
                    .try_send(ConnectionEvent::Signal(bytes))
                    .is_err()
                {
                    tracing::warn!("connection event queue full: a signaling message was dropped");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot encode a signaling message"),
        }
    }

    /// Ends every channel (their readers see `None`).
    fn end_channels(&self) {
        for channel in self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            channel.end();
        }
    }
}

/// Turns webrtc callbacks into connection events. Never blocks the driver. The peer
/// connection must exist before `Shared`, which owns it, so the handler reaches the
/// connection through a `Weak` filled in right after it is built.
struct Handler {
    slot: Arc<Mutex<std::sync::Weak<Shared>>>,
}

impl Handler {
    fn shared(&self) -> Option<Arc<Shared>> {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let Some(shared) = self.shared() else {
            return;
        };
        match event.candidate.to_json() {
            Ok(init) => shared.emit_signal(&Signal::Candidate {
                candidate: init.into(),
            }),
            Err(error) => tracing::debug!(%error, "skipping an unencodable candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let Some(shared) = self.shared() else {
            return;
        };
        let mapped = match state {
            RTCPeerConnectionState::New => ConnectionState::New,
            RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
            RTCPeerConnectionState::Connected => ConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => ConnectionState::Failed,
            RTCPeerConnectionState::Closed => ConnectionState::Closed,
            _ => return,
        };
        // `Connected` is reported once the control channel is open (see below), so that
        // channels can be opened the moment the state says so.
        if mapped != ConnectionState::Connected {
            shared.set_state(mapped);
        }
        if mapped.is_terminal() {
            shared.end_channels();
        }
    }

    async fn on_data_channel(&self, data_channel: Arc<dyn RtcDataChannel>) {
        let Some(shared) = self.shared() else {
            return;
        };
        let label = data_channel.label().await.unwrap_or_default();
        if label == CONTROL_LABEL {
            watch_control(&shared, data_channel.clone());
            *shared.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(data_channel);
            return;
        }
        let ordered = data_channel.ordered().await.unwrap_or(true);
        let retransmits = data_channel.max_retransmits().await.ok().flatten();
        let reliability = if ordered && retransmits.is_none() {
            Reliability::ReliableOrdered
        } else {
            Reliability::UnreliableUnordered
        };
        let remote_opened = shared
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if remote_opened >= shared.config.max_channels * 2 {
            tracing::warn!("remote opened more channels than allowed; closing it");
            let _ = data_channel.close().await;
            return;
        }
        let channel = WebRtcChannel::start(data_channel, label, reliability, &shared, true);
        if shared
            .events
            .try_send(ConnectionEvent::ChannelOpened(channel))
            .is_err()
        {
            tracing::warn!("connection event queue full: an opened channel was dropped");
        }
    }
}

/// Reads the control channel: its opening marks the connection usable; a goodbye or its
/// closing ends the connection.
fn watch_control(shared: &Arc<Shared>, control: Arc<dyn RtcDataChannel>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        while let Some(event) = control.poll().await {
            let Some(shared) = weak.upgrade() else { return };
            match event {
                webrtc::data_channel::DataChannelEvent::OnOpen => {
                    shared.set_state(ConnectionState::Connected);
                }
                webrtc::data_channel::DataChannelEvent::OnMessage(message)
                    if message.data.as_ref() == BYE =>
                {
                    remote_closed(&shared).await;
                    return;
                }
                webrtc::data_channel::DataChannelEvent::OnClose => {
                    remote_closed(&shared).await;
                    return;
                }
                _ => {}
            }
        }
    });
}

async fn remote_closed(shared: &Arc<Shared>) {
    if shared.closing.swap(true, Ordering::AcqRel) {
        return;
    }
    shared.set_state(ConnectionState::Closed);
    shared.end_channels();
    let _ = shared.pc.close().await;
}

/// A connection of a [`WebRtcTransport`].
#[derive(Clone)]
pub struct WebRtcConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WebRtcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcConnection")
            .field("role", &self.shared.role)
            .field("state", &*self.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

/// The event stream of a [`WebRtcConnection`].
pub type WebRtcEvents = crate::EventStream<WebRtcChannel>;

fn setup_error(step: &'static str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Setup {
        step,
        reason: error.to_string(),
    }
}

impl Transport for WebRtcTransport {
    type Connection = WebRtcConnection;
    type Events = WebRtcEvents;

    async fn connect(
        &self,
        role: Role,
    ) -> Result<(WebRtcConnection, WebRtcEvents), TransportError> {
        let config = self.config.clone();
        let (events, stream) = crate::EventStream::new(config.events_capacity);
        let ice_servers = config
            .ice_servers
            .iter()
            .map(|server| RTCIceServer {
                urls: server.urls.clone(),
                username: server.username.clone(),
                credential: server.credential.clone(),
            })
            .collect();
        let bind = config.bind_addrs()?;
        let advertised = u32::try_from(config.max_message_size).unwrap_or(u32::MAX);
        let settings = SettingEngineBuilder::new()
            .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(advertised))
            .with_include_loopback_candidate(config.include_loopback)
            .with_ice_connection_attempts(config.ice_check_interval, None)
            .with_ice_timeouts(
                config.ice_disconnected_timeout,
                config.ice_failed_timeout,
                config.ice_keepalive,
            )
            .build();
        let slot: Arc<Mutex<std::sync::Weak<Shared>>> =
            Arc::new(Mutex::new(std::sync::Weak::new()));
        let handler = Handler { slot: slot.clone() };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .build(),
            )
            .with_setting_engine(settings)
            .with_handler(Arc::new(handler))
            .with_udp_addrs(bind)
            .with_data_channel_send_buffer_limit(config.send_buffer)
            .build()
            .await
            .map_err(|e| setup_error("cannot create the peer connection", e))?;
        let initial = match role {
            Role::Offerer => ConnectionState::Connecting,
            Role::Answerer => ConnectionState::New,
        };
        let shared = Arc::new(Shared {
            role,
            config: config.clone(),
            pc: Arc::new(pc),
            state: watch::Sender::new(initial),
            events,
            counters: Arc::new(Counters::default()),
            channels: Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
            remote_set: AtomicBool::new(false),
            remote_max_message: AtomicUsize::new(RFC8841_DEFAULT_MAX_MESSAGE),
            early_candidates: Mutex::new(Vec::new()),
            control: Mutex::new(None),
            closing: AtomicBool::new(false),
        });
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&shared);
        if role == Role::Offerer {
            let control = shared
                .pc
                .create_data_channel(CONTROL_LABEL, None)
                .await
                .map_err(|e| setup_error("cannot create the control channel", e))?;
            watch_control(&shared, control.clone());
            *shared.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(control);
            let offer = shared
                .pc
                .create_offer(None)
                .await
                .map_err(|e| setup_error("cannot create an offer", e))?;
            shared
                .pc
                .set_local_description(offer.clone())
                .await
                .map_err(|e| setup_error("cannot apply the offer", e))?;
            shared.emit_signal(&Signal::Offer { sdp: offer.sdp });
        }
        Ok((WebRtcConnection { shared }, stream))
    }
}

impl WebRtcConnection {
    async fn apply_remote(&self, description: RTCSessionDescription) -> Result<(), TransportError> {
        let shared = &self.shared;
        shared
            .remote_max_message
            .store(advertised_max_message(&description.sdp), Ordering::Release);
        shared
            .pc
            .set_remote_description(description)
            .await
            .map_err(|e| {
                TransportError::InvalidSignal(format!("remote description refused: {e}"))
            })?;
        shared.remote_set.store(true, Ordering::Release);
        let early: Vec<_> = std::mem::take(
            &mut *shared
                .early_candidates
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for candidate in early {
            if let Err(error) = shared.pc.add_ice_candidate(candidate).await {
                tracing::debug!(%error, "an early candidate was refused");
            }
        }
        Ok(())
    }
}

impl Connection for WebRtcConnection {
    type Channel = WebRtcChannel;

    fn role(&self) -> Role {
        self.shared.role
    }

    fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    fn limits(&self) -> TransportLimits {
        let config = &self.shared.config;
        TransportLimits::new(
            config.max_message_size,
            config.send_buffer,
            config.max_channels,
        )
    }

    async fn handle_signal(&self, message: Bytes) -> Result<(), TransportError> {
        if message.len() > MAX_SIGNAL_LEN {
            return Err(TransportError::InvalidSignal(format!(
                "signal of {} bytes exceeds {MAX_SIGNAL_LEN}",
                message.len()
            )));
        }
        let shared = &self.shared;
        match Signal::decode(&message)? {
            Signal::Offer { sdp } => {
                if shared.role != Role::Answerer || shared.remote_set.load(Ordering::Acquire) {
                    return Err(TransportError::InvalidSignal("unexpected offer".into()));
                }
                let offer = RTCSessionDescription::offer(sdp)
                    .map_err(|e| TransportError::InvalidSignal(format!("bad offer: {e}")))?;
                shared.set_state(ConnectionState::Connecting);
                self.apply_remote(offer).await?;
                let answer =
                    shared.pc.create_answer(None).await.map_err(|e| {
                        TransportError::InvalidSignal(format!("cannot answer: {e}"))
                    })?;
                shared
                    .pc
                    .set_local_description(answer.clone())
                    .await
                    .map_err(|e| setup_error("cannot apply the answer", e))?;
                shared.emit_signal(&Signal::Answer { sdp: answer.sdp });
                Ok(())
            }
            Signal::Answer { sdp } => {
                if shared.role != Role::Offerer || shared.remote_set.load(Ordering::Acquire) {
                    return Err(TransportError::InvalidSignal("unexpected answer".into()));
                }
                let answer = RTCSessionDescription::answer(sdp)
                    .map_err(|e| TransportError::InvalidSignal(format!("bad answer: {e}")))?;
                self.apply_remote(answer).await
            }
            Signal::Candidate { candidate } => {
                let init = candidate.into();
                if shared.remote_set.load(Ordering::Acquire) {
                    shared
                        .pc
                        .add_ice_candidate(init)
                        .await
                        .map_err(|e| TransportError::InvalidSignal(format!("bad candidate: {e}")))
                } else {
                    let mut early = shared
                        .early_candidates
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if early.len() >= MAX_EARLY_CANDIDATES {
                        return Err(TransportError::InvalidSignal(
                            "too many early candidates".into(),
                        ));
                    }
                    early.push(init);
                    Ok(())
                }
            }
        }
    }

    async fn open_channel(
        &self,
        label: &str,
        reliability: Reliability,
    ) -> Result<WebRtcChannel, TransportError> {
        crate::shared::check_label(label)?;
        if label == CONTROL_LABEL {
            return Err(TransportError::InvalidLabel(format!(
                "{CONTROL_LABEL:?} is reserved for the control channel"
            )));
        }
        crate::shared::wait_connected(&self.shared.state).await?;
        let shared = &self.shared;
        let limit = shared.config.max_channels;
        if shared.opened.fetch_add(1, Ordering::AcqRel) >= limit {
            shared.opened.fetch_sub(1, Ordering::AcqRel);
            return Err(TransportError::TooManyChannels { limit });
        }
        let init = match reliability {
            Reliability::ReliableOrdered => RTCDataChannelInit::default(),
            _ => RTCDataChannelInit {
                ordered: false,
                max_retransmits: Some(0),
                ..Default::default()
            },
        };
        let data_channel = shared
            .pc
            .create_data_channel(label, Some(init))
            .await
            .map_err(|e| {
                shared.opened.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!(error = %e, "cannot open a channel");
                TransportError::NotConnected(self.state())
            })?;
        Ok(WebRtcChannel::start(
            data_channel,
            label.to_owned(),
            reliability,
            shared,
            false,
        ))
    }

    async fn stats(&self) -> ConnectionStats {
        let buffered_bytes = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|channel| channel.buffered() as u64)
            .sum();
        let mut stats = self.shared.counters.snapshot(buffered_bytes);
        // The nominated ICE candidate pair's latest round trip (from STUN checks and
        // keepalives), if it has measured one.
        let report = self
            .shared
            .pc
            .get_stats(
                std::time::Instant::now(),
                webrtc::peer_connection::StatsSelector::None,
            )
            .await;
        stats.rtt = report
            .candidate_pairs()
            .filter(|pair| pair.nominated && pair.current_round_trip_time > 0.0)
            .find_map(|pair| Duration::try_from_secs_f64(pair.current_round_trip_time).ok());
        stats
    }

    async fn close(&self) {
        let shared = &self.shared;
        if shared.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let control = shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(control) = control
            && shared.state.borrow().eq(&ConnectionState::Connected)
        {
            let _ = control.send(bytes::BytesMut::from(BYE)).await;
        }
        shared.set_state(ConnectionState::Closed);
        shared.end_channels();
        let _ = shared.pc.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_max_message_size_follows_rfc_8841() {
        assert_eq!(
            advertised_max_message("v=0\r\nm=application 9\r\n"),
            64 * 1024
        );
        assert_eq!(
            advertised_max_message("m=application 9\r\na=max-message-size:262144\r\n"),
            262_144
        );
        assert_eq!(
            advertised_max_message("a=max-message-size:0\r\n"),
            usize::MAX
        );
        assert_eq!(
            advertised_max_message("a=max-message-size:junk\r\n"),
            64 * 1024
        );
    }
}
