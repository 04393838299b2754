//! The event handler webrtc calls for each peer connection: state changes, candidates,
//! channels opened by the remote, and the hidden control channel.

use super::*;

/// Turns webrtc callbacks into connection events. Never blocks the driver. The peer
/// connection must exist before `Shared`, which owns it, so the handler reaches the
/// connection through a `Weak` filled in right after it is built.
pub(super) struct Handler {
    pub(super) slot: Arc<Mutex<std::sync::Weak<Shared>>>,
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
            Ok(init) => shared.emit_candidate(Signal::Candidate {
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

    async fn on_track(&self, track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>) {
        if let Some(shared) = self.shared() {
            media::on_remote_track(&shared, track);
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
        shared.channel_opened(channel);
    }
}

/// Reads the control channel: its opening marks the connection usable; a goodbye or its
/// closing ends the connection; other messages renegotiate media (see [`media`]).
pub(super) fn watch_control(shared: &Arc<Shared>, control: Arc<dyn RtcDataChannel>) {
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
                webrtc::data_channel::DataChannelEvent::OnMessage(message) => {
                    media::on_control(&shared, &message.data).await;
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
