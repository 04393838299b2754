//! Media tracks on a WebRTC connection.
//!
//! - **Codecs**: Opus (PT 111) and VP8 (PT 96) are registered on every connection, with
//!   webrtc's default interceptors (NACK both ways, RTCP sender/receiver reports, TWCC
//!   feedback). A track has an explicit random SSRC.
//! - **Renegotiation** after the first exchange travels over the hidden control channel, not
//!   through signaling: adding or removing a track sends an offer there, the other side
//!   answers there. Both sides adding tracks at once is settled by *perfect negotiation*: the
//!   answerer of the first exchange is polite (rolls its own offer back, answers, then offers
//!   again), the offerer is impolite (ignores the colliding offer, its own offer wins).
//!   Exchanges are serialized per connection; a change made while one is under way is
//!   offered once it ends. Data channels are untouched by all this.
//! - **Key frame requests** ([`super::keyframe`]): a remote track's request goes out as an
//!   RTCP PLI; a PLI or FIR about a local track is handed to it.
//! - **Remote tracks** are reported at their first RTP packet (webrtc reports them no
//!   earlier); their packets are reassembled into whole samples ([`super::frames`]). webrtc
//!   produces no "ended": the remover sends `ended` over the control channel.
//! - A local track's first write waits until an exchange that includes it has completed (at
//!   most [`NEGOTIATION_TIMEOUT`]); samples written earlier would be dropped by webrtc. When
//!   the track first went out in an *answer* (a colliding offer took its transceiver), the
//!   exchange is complete for us before the other side has applied that answer and knows the
//!   track's SSRC: the offerer says `applied` once it has, and the write waits for that too
//!   (without it the first samples were lost, 1 run in ~15 under load).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use rtc::interceptor::Gcc;
use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    CongestionFeedback, configure_congestion_control, configure_nack, configure_rtcp_reports,
    configure_simulcast_extension_headers, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::rtp_transceiver::RtpSender;

use super::frames::FrameAssembler;
use super::keyframe::{self, KeyframeFeedback};
use super::signal::Control;
use super::*;
use crate::media::{
    Codec, KeyframeRequests, LocalTrack, MAX_LIVE_TRACKS, MediaKind, RemoteFeed, RemoteTrack,
    Sample, SampleSink, TrackBook, TrackSpec,
};
use crate::shared::{closed, lock};

/// How long a new track's first write waits for the remote side to agree to it.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a removed track's last samples get to leave: `write_sample` returns once a
/// packet is queued for webrtc's driver, but a removal stops the sender at once, dropping
/// what is still queued.
const REMOVAL_DRAIN: Duration = Duration::from_millis(50);
/// How long a remote track stays open after its `ended`, for packets still on the way.
const ENDED_GRACE: Duration = Duration::from_millis(250);
/// The MediaStream id every genos track is announced under.
const STREAM_ID: &str = "genos";

/// Where [`KeyframeFeedback`] sits in the chain: any place works (it only marks packets),
/// past the built-in slots.
const KEYFRAME_FEEDBACK_SLOT: usize = 20_000;

/// A remote track's feed, shared by its reader task and the `ended` handler, which takes it
/// and wakes the reader so it lets go of webrtc's track at once (no packet comes to wake it).
#[derive(Default)]
struct FeedSlot {
    feed: Mutex<Option<RemoteFeed>>,
    ended: tokio::sync::Notify,
    /// The reader owes the sender a key frame request (PLI).
    keyframe_wanted: Arc<tokio::sync::Notify>,
}

impl FeedSlot {
    fn end(&self) {
        lock(&self.feed).take();
        self.ended.notify_one();
    }
}

/// Media state of one connection.
#[derive(Default)]
pub(crate) struct Media {
    book: Mutex<TrackBook>,
    /// Held for the whole of one offer/answer step, so exchanges never interleave.
    negotiation: tokio::sync::Mutex<()>,
    /// A change is waiting for the exchange under way to end.
    wanted: AtomicBool,
    /// Counts completed exchanges and acknowledged answers; a waiting first write watches it.
    rounds: watch::Sender<u64>,
    /// Answers we sent.
    answers_sent: AtomicU64,
    /// Answers the other side says it received, as of its latest `applied`.
    answers_applied: AtomicU64,
    /// Answers we received (the number our `applied` carries).
    answers_received: AtomicU64,
    /// Remote tracks being received, by id.
    remote: Mutex<HashMap<String, Arc<FeedSlot>>>,
}

impl Media {
    /// Ends every remote track (the connection ended).
    pub(crate) fn end_remote(&self) {
        for (_, slot) in lock(&self.remote).drain() {
            slot.end();
        }
    }
}

fn codec_parameters(codec: Codec) -> RTCRtpCodecParameters {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    match codec {
        Codec::Opus => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: codec.mime_type().to_owned(),
                clock_rate: codec.clock_rate(),
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        Codec::Vp8 => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: codec.mime_type().to_owned(),
                clock_rate: codec.clock_rate(),
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![
                    feedback("nack", ""),
                    feedback("nack", "pli"),
                    feedback("ccm", "fir"),
                ],
            },
            payload_type: 96,
        },
    }
}

fn rtp_kind(codec: Codec) -> RtpCodecKind {
    match codec.kind() {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// The codecs and interceptors every connection is built with: webrtc's defaults, or with
/// `congestion_control` the same minus the lone TWCC receiver plus GCC, its pacer and both
/// TWCC halves (webrtc's defaults would register the TWCC receiver a second time).
pub(crate) fn media_engine(
    congestion_control: bool,
) -> Result<(MediaEngine, Registry), TransportError> {
    let mut engine = MediaEngine::default();
    for codec in [Codec::Opus, Codec::Vp8] {
        engine
            .register_codec(codec_parameters(codec), rtp_kind(codec))
            .map_err(|e| setup_error("cannot register a codec", e))?;
    }
    let interceptors = |e| setup_error("cannot register the media interceptors", e);
    let registry = if congestion_control {
        let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut engine));
        configure_simulcast_extension_headers(&mut engine).map_err(interceptors)?;
        configure_congestion_control(
            registry,
            Gcc::default(),
            CongestionFeedback::Twcc,
            &mut engine,
        )
        .map_err(interceptors)?
    } else {
        register_default_interceptors(Registry::new(), &mut engine).map_err(interceptors)?
    };
    let registry = registry.with(
        Slot::Custom(KEYFRAME_FEEDBACK_SLOT),
        KeyframeFeedback::default(),
    );
    Ok((engine, registry))
}

/// The media sections of a description, one line, for trace logs.
fn media_lines(sdp: &str) -> String {
    const SHOWN: [&str; 6] = ["m=", "a=mid", "a=msid:", "a=send", "a=recv", "a=inactive"];
    sdp.lines()
        .filter(|line| SHOWN.iter().any(|start| line.starts_with(start)))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Sends a control message; false if the control channel is not there or refused it. On a
/// plain connection offers and answers go out as [`ConnectionEvent::Signal`]s instead, and
/// the rest (`applied`, `ended`) has no carrier.
async fn send_control(shared: &Shared, message: &Control) -> bool {
    if shared.is_plain() {
        let signal = match message {
            Control::Offer { sdp } => Signal::Offer { sdp: sdp.clone() },
            Control::Answer { sdp } => Signal::Answer { sdp: sdp.clone() },
            Control::Applied { .. } | Control::Ended { .. } => return false,
        };
        shared.emit_signal(&signal);
        return true;
    }
    let control = lock(&shared.control).clone();
    let Some(control) = control else {
        return false;
    };
    let Ok(bytes) = message.encode() else {
        return false;
    };
    match control.send(bytes::BytesMut::from(&bytes[..])).await {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, "control message not sent");
            false
        }
    }
}

/// Whether an offer or answer is half done (signaling state not stable).
async fn exchange_under_way(shared: &Shared) -> bool {
    shared.pc.pending_local_description().await.is_some()
        || shared.pc.pending_remote_description().await.is_some()
}

/// Offers the current set of tracks, now or once the exchange under way ends.
pub(super) async fn negotiate(shared: &Arc<Shared>) {
    let _turn = shared.media.negotiation.lock().await;
    if shared.state.borrow().is_terminal() {
        return;
    }
    if exchange_under_way(shared).await {
        shared.media.wanted.store(true, Ordering::Release);
        return;
    }
    shared.media.wanted.store(false, Ordering::Release);
    let offer = match shared.pc.create_offer(None).await {
        Ok(offer) => offer,
        Err(error) => {
            tracing::warn!(%error, "cannot create a renegotiation offer");
            return;
        }
    };
    if let Err(error) = shared.pc.set_local_description(offer.clone()).await {
        tracing::warn!(%error, "cannot apply a renegotiation offer");
        return;
    }
    tracing::trace!(role = ?shared.role, media = media_lines(&offer.sdp), "renegotiation offer sent");
    send_control(shared, &Control::Offer { sdp: offer.sdp }).await;
}

/// An exchange completed: wake waiting writes, and offer what changed meanwhile.
fn exchange_done(shared: &Arc<Shared>) {
    shared.media.rounds.send_modify(|rounds| *rounds += 1);
    if shared.media.wanted.swap(false, Ordering::AcqRel) {
        let shared = shared.clone();
        tokio::spawn(async move { negotiate(&shared).await });
    }
}

/// Handles a control message other than the goodbye.
pub(super) async fn on_control(shared: &Arc<Shared>, message: &[u8]) {
    let control = match Control::decode(message) {
        Ok(control) => control,
        Err(error) => {
            tracing::debug!(%error, "ignoring a control message");
            return;
        }
    };
    match control {
        Control::Offer { sdp } => on_offer(shared, sdp).await,
        Control::Answer { sdp } => on_answer(shared, sdp).await,
        Control::Applied { answers } => {
            shared
                .media
                .answers_applied
                .fetch_max(answers, Ordering::AcqRel);
            shared.media.rounds.send_modify(|rounds| *rounds += 1);
        }
        Control::Ended { id } => {
            let slot = lock(&shared.media.remote).remove(&id);
            if let Some(slot) = slot {
                let _ = shared.events.try_send(ConnectionEvent::TrackEnded { id });
                tokio::spawn(async move {
                    tokio::time::sleep(ENDED_GRACE).await;
                    slot.end();
                });
            }
        }
    }
}

/// The answer to our renegotiation offer (from the control channel, or a plain
/// connection's signal).
pub(super) async fn on_answer(shared: &Arc<Shared>, sdp: String) {
    tracing::trace!(role = ?shared.role, media = media_lines(&sdp), "renegotiation answer received");
    let turn = shared.media.negotiation.lock().await;
    let answers = shared.media.answers_received.fetch_add(1, Ordering::AcqRel) + 1;
    if shared.pc.pending_local_description().await.is_none() {
        tracing::debug!("ignoring an answer to no offer");
        return;
    }
    let applied = match RTCSessionDescription::answer(sdp) {
        Ok(answer) => shared.pc.set_remote_description(answer).await,
        Err(error) => Err(error),
    };
    drop(turn);
    match applied {
        Ok(()) => {
            send_control(shared, &Control::Applied { answers }).await;
            exchange_done(shared);
        }
        Err(error) => tracing::warn!(%error, "renegotiation answer refused"),
    }
}

/// A renegotiation offer (from the control channel, or a plain connection's signal).
pub(super) async fn on_offer(shared: &Arc<Shared>, sdp: String) {
    tracing::trace!(role = ?shared.role, media = media_lines(&sdp), "renegotiation offer received");
    let turn = shared.media.negotiation.lock().await;
    if shared.pc.pending_local_description().await.is_some() {
        if shared.role == Role::Offerer {
            // Impolite: our own offer wins; the other side rolls back and answers it.
            tracing::debug!("offer collision: keeping ours");
            return;
        }
        // Polite: drop our offer, answer theirs, offer ours again afterwards.
        let rollback = RTCSessionDescription::rollback(None);
        let rolled = match rollback {
            Ok(rollback) => shared.pc.set_local_description(rollback).await,
            Err(error) => Err(error),
        };
        if let Err(error) = rolled {
            tracing::warn!(%error, "cannot roll our offer back");
            return;
        }
        shared.media.wanted.store(true, Ordering::Release);
    }
    let answer = async {
        let offer = RTCSessionDescription::offer(sdp)?;
        shared.pc.set_remote_description(offer).await?;
        let answer = shared.pc.create_answer(None).await?;
        // Counted before it applies: from then on a track it carries looks negotiated here.
        shared.media.answers_sent.fetch_add(1, Ordering::AcqRel);
        if let Err(error) = shared.pc.set_local_description(answer.clone()).await {
            shared.media.answers_sent.fetch_sub(1, Ordering::AcqRel);
            return Err(error);
        }
        Ok::<_, webrtc::error::Error>(answer)
    }
    .await;
    match answer {
        Ok(answer) => {
            tracing::trace!(role = ?shared.role, media = media_lines(&answer.sdp), "renegotiation answer sent");
            send_control(shared, &Control::Answer { sdp: answer.sdp }).await;
            drop(turn);
            exchange_done(shared);
        }
        Err(error) => tracing::warn!(%error, "renegotiation offer refused"),
    }
}

/// Adds a local track and offers it.
pub(super) async fn add_track(
    shared: &Arc<Shared>,
    spec: TrackSpec,
) -> Result<LocalTrack, TransportError> {
    lock(&shared.media.book).reserve(&spec)?;
    let release = || lock(&shared.media.book).release();
    let ssrc = rand::random::<u32>();
    let description = MediaStreamTrack::new(
        STREAM_ID.to_owned(),
        spec.id.clone(),
        spec.id.clone(),
        rtp_kind(spec.codec),
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec_parameters(spec.codec).rtp_codec,
            ..Default::default()
        }],
    );
    let track = TrackLocalStaticSample::new(Instant::now(), description).map_err(|e| {
        release();
        setup_error("cannot create the track", e)
    })?;
    let track = Arc::new(track);
    let sender = shared
        .pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(|e| {
            release();
            setup_error("cannot add the track", e)
        })?;
    // Bound to the connection by now: its RTCP events flow until it is removed.
    let keyframes = Arc::new(KeyframeRequests::default());
    keyframe::watch_local_track(track.clone(), ssrc, keyframes.clone());
    negotiate(shared).await;
    let sink = WebRtcSink {
        shared: Arc::downgrade(shared),
        spec: spec.clone(),
        track,
        sender,
        ssrc,
        payload_type: Mutex::new(None),
    };
    Ok(LocalTrack::new(
        crate::shared::owner_of(shared),
        spec,
        Box::new(sink),
        keyframes,
    ))
}

struct WebRtcSink {
    shared: std::sync::Weak<Shared>,
    spec: TrackSpec,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// The negotiated payload type, once the remote side agreed to the track.
    payload_type: Mutex<Option<u8>>,
}

impl WebRtcSink {
    /// Whether an exchange that includes this track has completed, and the other side
    /// applied every answer we sent.
    async fn negotiated(&self, shared: &Shared) -> bool {
        let media = &shared.media;
        // A plain connection's peer (a browser) says no `applied`: its answers are taken as
        // applied once sent, as browsers do.
        let unapplied = !shared.is_plain()
            && media.answers_applied.load(Ordering::Acquire)
                < media.answers_sent.load(Ordering::Acquire);
        if unapplied
            || exchange_under_way(shared).await
            || shared.pc.current_remote_description().await.is_none()
        {
            return false;
        }
        let Some(local) = shared.pc.current_local_description().await else {
            return false;
        };
        let ours = format!(" {}", self.spec.id);
        local
            .sdp
            .lines()
            .any(|line| line.starts_with("a=msid:") && line.trim_end().ends_with(&ours))
    }

    /// The payload type to send with, waiting for the remote side to agree to the track.
    async fn payload_type(&self) -> Result<u8, TransportError> {
        if let Some(payload_type) = *lock(&self.payload_type) {
            return Ok(payload_type);
        }
        let deadline = tokio::time::Instant::now() + NEGOTIATION_TIMEOUT;
        loop {
            let shared = self.shared.upgrade().ok_or_else(closed)?;
            let state = *shared.state.borrow();
            if state.is_terminal() {
                return Err(TransportError::NotConnected(state));
            }
            let mut rounds = shared.media.rounds.subscribe();
            let mut states = shared.state.subscribe();
            if self.negotiated(&shared).await {
                let fallback = codec_parameters(self.spec.codec).payload_type;
                let payload_type = self
                    .sender
                    .get_parameters()
                    .await
                    .ok()
                    .and_then(|parameters| {
                        parameters
                            .rtp_parameters
                            .codecs
                            .iter()
                            .find(|codec| {
                                codec
                                    .rtp_codec
                                    .mime_type
                                    .eq_ignore_ascii_case(self.spec.codec.mime_type())
                            })
                            .map(|codec| codec.payload_type)
                    })
                    .unwrap_or(fallback);
                *lock(&self.payload_type) = Some(payload_type);
                return Ok(payload_type);
            }
            drop(shared);
            tokio::select! {
                _ = rounds.changed() => {}
                _ = states.changed() => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(TransportError::Setup {
                        step: "media negotiation",
                        reason: format!(
                            "the remote side did not agree to track {:?} within {:?}",
                            self.spec.id, NEGOTIATION_TIMEOUT
                        ),
                    });
                }
            }
        }
    }
}

impl SampleSink for WebRtcSink {
    fn write<'a>(&'a self, sample: &'a Sample) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            let payload_type = self.payload_type().await?;
            let sample = rtc::media::Sample {
                data: sample.data.clone(),
                duration: sample.duration,
                ..rtc::media::Sample::new(Instant::now())
            };
            self.track
                .write_sample(self.ssrc, payload_type, &sample, &[])
                .await
                .map_err(|error| {
                    let state = self
                        .shared
                        .upgrade()
                        .map_or(ConnectionState::Closed, |shared| *shared.state.borrow());
                    tracing::debug!(%error, "sample not written");
                    TransportError::NotConnected(state)
                })
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async move { self.payload_type().await.map(drop) }.boxed()
    }

    fn target_bitrate(&self) -> BoxFuture<'_, Option<u64>> {
        async move {
            let shared = self.shared.upgrade()?;
            if !shared.config.congestion_control {
                return None;
            }
            let report = shared
                .pc
                .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
                .await;
            let stream = report
                .outbound_rtp_streams()
                .find(|stream| stream.sent_rtp_stream_stats.rtp_stream_stats.ssrc == self.ssrc)?;
            let bits = stream.target_bitrate;
            // A float from the estimator: nonsense (NaN, negative) reads as no estimate.
            (bits.is_finite() && bits >= 1.0).then_some(bits as u64)
        }
        .boxed()
    }

    fn end(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async move {
            let Some(shared) = self.shared.upgrade() else {
                return Ok(());
            };
            lock(&shared.media.book).release();
            drop(shared);
            tokio::time::sleep(REMOVAL_DRAIN).await;
            let Some(shared) = self.shared.upgrade() else {
                return Ok(());
            };
            if let Err(error) = shared.pc.remove_track(&self.sender).await {
                tracing::debug!(%error, "removing a track from the peer connection failed");
            }
            negotiate(&shared).await;
            let ended = Control::Ended {
                id: self.spec.id.clone(),
            };
            send_control(&shared, &ended).await;
            Ok(())
        }
        .boxed()
    }
}

/// A remote track's first packet arrived: report it and feed its samples to the reader.
/// Runs outside webrtc's driver (which waits for the handler).
pub(super) fn on_remote_track(shared: &Arc<Shared>, track: Arc<dyn TrackRemote>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let id = track.track_id().await;
        tracing::trace!(%id, "remote track's first packet");
        let ssrc = track.ssrcs().await.first().copied();
        let codec = match ssrc {
            Some(ssrc) => track.codec(ssrc).await,
            None => None,
        }
        .and_then(|codec| Codec::from_mime_type(&codec.mime_type));
        let keyframe_wanted = Arc::new(tokio::sync::Notify::new());
        let slot: Option<(Arc<FeedSlot>, Codec)> = match (weak.upgrade(), codec) {
            (Some(shared), Some(codec)) => {
                let mut remote = lock(&shared.media.remote);
                if remote.len() >= MAX_LIVE_TRACKS || remote.contains_key(&id) {
                    tracing::warn!(%id, "remote track refused: too many, or its id is in use");
                    None
                } else {
                    let wanted = keyframe_wanted.clone();
                    let request = Box::new(move || wanted.notify_one());
                    let (reader, feed) = RemoteTrack::new(id.clone(), codec, request);
                    let slot = Arc::new(FeedSlot {
                        feed: Mutex::new(Some(feed)),
                        ended: tokio::sync::Notify::new(),
                        keyframe_wanted,
                    });
                    remote.insert(id.clone(), slot.clone());
                    drop(remote);
                    if shared
                        .events
                        .try_send(ConnectionEvent::TrackReceived(reader))
                        .is_err()
                    {
                        tracing::warn!("connection event queue full: a remote track was dropped");
                    }
                    Some((slot, codec))
                }
            }
            _ => None,
        };
        let Some((slot, codec)) = slot else {
            // Unknown codec or refused: drain, so webrtc's queue does not back up.
            while track.poll().await.is_some() {}
            return;
        };
        let mut frames = FrameAssembler::new(codec);
        loop {
            let event = tokio::select! {
                event = track.poll() => event,
                () = slot.ended.notified() => None,
                () = slot.keyframe_wanted.notified() => {
                    if let Some(ssrc) = ssrc
                        && let Err(error) = track.write_rtcp(keyframe::picture_loss(ssrc)).await
                    {
                        tracing::debug!(%error, "key frame request not sent");
                    }
                    continue;
                }
            };
            match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    let samples = frames.push(packet);
                    let feed = lock(&slot.feed);
                    let Some(feed) = feed.as_ref() else { break };
                    for sample in samples {
                        feed.push(sample);
                    }
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => {}
            }
        }
        lock(&slot.feed).take();
        if let Some(shared) = weak.upgrade() {
            let mut remote = lock(&shared.media.remote);
            if remote
                .get(&id)
                .is_some_and(|current| Arc::ptr_eq(current, &slot))
            {
                remote.remove(&id);
            }
        }
    });
}
