//! One WebRTC connection: signals in, channels out, stats and close.

use super::*;
use crate::media::{LocalTrack, TrackSpec};

/// A connection of a [`WebRtcTransport`].
#[derive(Clone)]
pub struct WebRtcConnection {
    pub(super) shared: Arc<Shared>,
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

impl WebRtcConnection {
    /// Whether offers and answers now renegotiate media: a plain connection (no control
    /// channel) whose first exchange is done.
    fn renegotiates_by_signal(&self) -> bool {
        self.shared.is_plain() && self.shared.remote_set.load(Ordering::Acquire)
    }

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
            // A plain connection renegotiates through signals (it has no control channel).
            Signal::Offer { sdp } if self.renegotiates_by_signal() => {
                super::media::on_offer(shared, sdp).await;
                Ok(())
            }
            Signal::Answer { sdp } if self.renegotiates_by_signal() => {
                super::media::on_answer(shared, sdp).await;
                Ok(())
            }
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
                shared.emit_description(Signal::Answer { sdp: answer.sdp });
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

    async fn add_track(&self, spec: TrackSpec) -> Result<LocalTrack, TransportError> {
        spec.validate()?;
        crate::shared::wait_connected(&self.shared.state).await?;
        media::add_track(&self.shared, spec).await
    }

    async fn remove_track(&self, track: &LocalTrack) -> Result<(), TransportError> {
        track
            .remove(crate::shared::owner_of(&self.shared))
            .await
            .map(drop)
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
