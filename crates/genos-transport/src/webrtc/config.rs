//! What a WebRTC transport is configured with: ICE servers, addresses, timeouts, buffers.

use super::*;

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
    /// Offer and use relay (TURN) candidates only: traffic always goes through a TURN server
    /// of [`WebRtcConfig::ice_servers`], and this peer's addresses never reach the other
    /// side. Default off. Only `turn:` URLs over UDP are used (webrtc 0.21 skips `turns:` and
    /// `?transport=tcp`); with none that works no candidate is gathered and connections fail
    /// after the ICE timeout, so check the server first with
    /// [`check_turn`](super::check_turn) (the facade does at join).
    pub relay_only: bool,
    /// Connections a browser library can take part in (Trystero's, for one): no hidden
    /// control channel. The offerer opens one reliable channel with this label before its
    /// offer; both sides get it as a [`ConnectionEvent::ChannelOpened`] and report
    /// [`ConnectionState::Connected`] when it opens. Without the control channel, media
    /// renegotiation travels as signals: after the first exchange, offers and answers come
    /// out as [`ConnectionEvent::Signal`]s and [`Connection::handle_signal`] takes the other
    /// side's (carry them as the application protocol does: Trystero's `@_signal`); a track's
    /// end and the goodbye have no carrier (the far side learns of a close from SCTP or
    /// ICE). Default `None` (genos's own connections).
    pub plain_channel: Option<String>,
    /// Send-side congestion control for media: webrtc's GCC estimator fed by transport-wide
    /// feedback (TWCC), with a pacer that spreads each track's packets to the estimate. The
    /// estimate is read with [`LocalTrack::target_bitrate`](crate::LocalTrack::target_bitrate),
    /// for an encoder to follow (genos has none; it does not drop samples to fit). Default
    /// off: pacing queues packets, which costs latency on paths with room to spare
    /// (docs/benchmarks.md measures both). Data channels are not paced.
    pub congestion_control: bool,
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
            relay_only: false,
            congestion_control: false,
            plain_channel: None,
        }
    }
}

impl WebRtcConfig {
    /// Turns media congestion control on or off (see [`WebRtcConfig::congestion_control`]).
    pub fn with_congestion_control(mut self, on: bool) -> Self {
        self.congestion_control = on;
        self
    }

    /// Uses `server` and only relay candidates through it (see [`WebRtcConfig::relay_only`]).
    pub fn with_relay_only(mut self, server: IceServer) -> Self {
        self.ice_servers = vec![server];
        self.relay_only = true;
        self
    }

    /// Connections without genos's control channel, whose first channel is `label` (see
    /// [`WebRtcConfig::plain_channel`]).
    pub fn with_plain_channel(mut self, label: impl Into<String>) -> Self {
        self.plain_channel = Some(label.into());
        self
    }

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

    pub(super) fn validate(&self) -> Result<(), TransportError> {
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
        if let Some(label) = &self.plain_channel {
            crate::shared::check_label(label)?;
            if label == CONTROL_LABEL {
                return invalid("the plain channel cannot use the control channel's label");
            }
        }
        // Re-resolved at every connect (interfaces come and go); checked here so a
        // configuration that can never bind fails at once.
        self.bind_addrs()?;
        Ok(())
    }
}
