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
mod config;
mod connection;
mod frames;
mod handler;
mod interfaces;
mod keyframe;
pub(crate) mod media;
pub(crate) mod signal;
mod turn;

use std::net::IpAddr;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel as RtcDataChannel, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCSessionDescription, SettingEngineBuilder,
};

use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use rtc::peer_connection::transport::RTCDtlsRole;

use self::channel::ChannelShared;
pub use self::channel::WebRtcChannel;
pub use self::config::{IceServer, WebRtcConfig};
pub use self::connection::{WebRtcConnection, WebRtcEvents};
use self::handler::{Handler, watch_control};
pub use self::interfaces::IpFilter;
pub use self::media::NEGOTIATION_TIMEOUT;
use self::signal::Signal;
pub use self::turn::check_turn;
use crate::shared::Counters;
use crate::{
    Connection, ConnectionEvent, ConnectionState, ConnectionStats, DataChannel as _, Reliability,
    Role, Transport, TransportError, TransportLimits,
};

/// Label of the hidden control channel.
pub(crate) const CONTROL_LABEL: &str = "_genos";
/// Control message: the sender is closing the connection.
const BYE: &[u8] = b"bye";
/// Longest signaling message accepted (an SDP with many candidates stays far below).
pub const MAX_SIGNAL_LEN: usize = 64 * 1024;
/// A remote that advertises no `a=max-message-size` accepts 64 KiB (RFC 8841 §6.1).
const RFC8841_DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// The remote's `a=max-message-size` (0 means "no limit": capped at ours by the caller).
pub(crate) fn advertised_max_message(sdp: &str) -> usize {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=max-message-size:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .map_or(RFC8841_DEFAULT_MAX_MESSAGE, |size| {
            if size == 0 { usize::MAX } else { size }
        })
}

/// Candidates held while waiting for the remote description, and local candidates held
/// until our own description has gone out.
pub(crate) const MAX_EARLY_CANDIDATES: usize = 64;

/// Keeps our signals in the order a remote needs: description first, then candidates.
/// webrtc starts gathering inside `set_local_description`, so its first candidate can be
/// reported before we emit the offer or answer; such candidates wait here.
#[derive(Default)]
struct LocalSignals {
    description_sent: bool,
    held: Vec<Signal>,
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
    local_signals: Mutex<LocalSignals>,
    control: Mutex<Option<Arc<dyn RtcDataChannel>>>,
    closing: AtomicBool,
    media: media::Media,
}

impl Shared {
    /// Whether this is a plain connection (no control channel, see
    /// [`WebRtcConfig::plain_channel`]).
    pub(super) fn is_plain(&self) -> bool {
        self.config.plain_channel.is_some()
    }

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

    pub(super) fn emit_signal(&self, signal: &Signal) {
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

    /// Emits our offer or answer, then the candidates gathered before it.
    fn emit_description(&self, description: Signal) {
        let mut local = self.local_signals.lock().unwrap_or_else(|p| p.into_inner());
        self.emit_signal(&description);
        for candidate in local.held.drain(..) {
            self.emit_signal(&candidate);
        }
        local.description_sent = true;
    }

    /// Emits a local candidate, or holds it until our description has gone out. Beyond
    /// [`MAX_EARLY_CANDIDATES`] held, further ones are dropped (ICE still finds a path
    /// through those sent and peer-reflexive discovery).
    fn emit_candidate(&self, candidate: Signal) {
        let mut local = self.local_signals.lock().unwrap_or_else(|p| p.into_inner());
        if local.description_sent {
            drop(local);
            self.emit_signal(&candidate);
        } else if local.held.len() < MAX_EARLY_CANDIDATES {
            local.held.push(candidate);
        } else {
            tracing::warn!("too many candidates before our description: one was dropped");
        }
    }

    /// Hands an open channel to the layer above. The plain channel (see
    /// [`WebRtcConfig::plain_channel`]) opening is also what makes the connection usable.
    fn channel_opened(&self, channel: WebRtcChannel) {
        if self.config.plain_channel.as_deref() == Some(channel.label()) {
            self.set_state(ConnectionState::Connected);
        }
        if self
            .events
            .try_send(ConnectionEvent::ChannelOpened(channel))
            .is_err()
        {
            tracing::warn!("connection event queue full: an opened channel was dropped");
        }
    }

    /// Ends every channel and remote track (their readers see `None`).
    fn end_channels(&self) {
        self.media.end_remote();
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
        // The DTLS role is fixed by the first exchange (RFC 5763 §5) and webrtc writes the
        // answering role into every answer: an offerer, whose peer answered `active` (browsers,
        // webrtc and aiortc do) and so is the DTLS server, answers renegotiations `passive`.
        // Chromium refuses an answer that claims the other role ("Failed to set SSL role").
        let answering_role = match role {
            Role::Offerer => RTCDtlsRole::Server,
            Role::Answerer => RTCDtlsRole::Client,
        };
        let settings = SettingEngineBuilder::new()
            .with_answering_dtls_role(answering_role)
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
        let (media_engine, interceptors) = media::media_engine(config.congestion_control)?;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .with_ice_transport_policy(if config.relay_only {
                        RTCIceTransportPolicy::Relay
                    } else {
                        RTCIceTransportPolicy::All
                    })
                    .build(),
            )
            .with_setting_engine(settings)
            .with_media_engine(media_engine)
            .with_interceptor_registry(interceptors)
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
            local_signals: Mutex::new(LocalSignals::default()),
            control: Mutex::new(None),
            closing: AtomicBool::new(false),
            media: media::Media::default(),
        });
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(&shared);
        if role == Role::Offerer {
            match &config.plain_channel {
                None => {
                    let control = shared
                        .pc
                        .create_data_channel(CONTROL_LABEL, None)
                        .await
                        .map_err(|e| setup_error("cannot create the control channel", e))?;
                    watch_control(&shared, control.clone());
                    *shared.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(control);
                }
                Some(label) => {
                    let data_channel = shared
                        .pc
                        .create_data_channel(label, None)
                        .await
                        .map_err(|e| setup_error("cannot create the plain channel", e))?;
                    shared.opened.fetch_add(1, Ordering::AcqRel);
                    let channel = WebRtcChannel::start(
                        data_channel,
                        label.clone(),
                        Reliability::ReliableOrdered,
                        &shared,
                        false,
                    );
                    let weak = Arc::downgrade(&shared);
                    tokio::spawn(async move {
                        if channel.wait_open().await.is_ok() {
                            if let Some(shared) = weak.upgrade() {
                                shared.channel_opened(channel);
                            }
                        }
                    });
                }
            }
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
            shared.emit_description(Signal::Offer { sdp: offer.sdp });
        }
        Ok((WebRtcConnection { shared }, stream))
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
