//! Media tracks: what a connection sends and receives besides data channels.
//!
//! A track carries encoded samples (Opus audio frames, VP8 video frames) in one direction.
//! The sender adds a [`LocalTrack`] with [`Connection::add_track`](crate::Connection::add_track)
//! and writes samples to it; the remote side learns of it as a
//! [`ConnectionEvent::TrackReceived`](crate::ConnectionEvent::TrackReceived) carrying a
//! [`RemoteTrack`] when its first sample arrives (WebRTC knows a track only from its first
//! packet), reads whole samples from it, and sees
//! [`ConnectionEvent::TrackEnded`](crate::ConnectionEvent::TrackEnded) once the sender removes
//! it. Encoding is the caller's: genos moves encoded frames, it has no encoders.
//!
//! A video receiver that lost packets, or joined a running track, asks the sender for a key
//! frame with [`RemoteTrack::request_keyframe`] (an RTCP PLI on WebRTC); the sender learns of
//! it from [`LocalTrack::keyframe_requested`] and encodes one (genos has no encoder, so that is
//! the caller's part too).
//!
//! Media is live: a receiver that does not read loses samples rather than slowing the sender
//! (each remote track buffers [`TRACK_BUFFER`] samples; beyond that new samples are dropped
//! and counted in [`TrackStats::samples_dropped`]).
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use genos_transport::memory::MemoryTransport;
//! use genos_transport::{Codec, Connection, ConnectionEvent, Role, Sample, TrackSpec, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), genos_transport::TransportError> {
//! let net = MemoryTransport::new(Default::default());
//! let (alice, mut alice_events) = net.connect(Role::Offerer).await?;
//! let (bob, mut bob_events) = net.connect(Role::Answerer).await?;
//! let Some(ConnectionEvent::Signal(offer)) = alice_events.next().await else { unreachable!() };
//! bob.handle_signal(offer).await?;
//! let answer = loop {
//!     if let Some(ConnectionEvent::Signal(answer)) = bob_events.next().await { break answer }
//! };
//! alice.handle_signal(answer).await?;
//!
//! let mic = alice.add_track(TrackSpec::new("mic", Codec::Opus)).await?;
//! mic.write_sample(Sample::new(vec![0x78, 1, 2, 3], Duration::from_millis(20))).await?;
//! let remote = loop {
//!     if let Some(ConnectionEvent::TrackReceived(track)) = bob_events.next().await { break track }
//! };
//! assert_eq!(remote.id(), "mic");
//! let sample = remote.recv_sample().await.expect("a sample");
//! assert_eq!(&sample.data[..], &[0x78, 1, 2, 3]);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc};

use crate::TransportError;

pub mod files;

/// Samples a remote track holds for its reader; further ones are dropped and counted.
pub const TRACK_BUFFER: usize = 256;
/// Longest track id, in bytes.
pub const MAX_TRACK_ID_LEN: usize = 64;
/// Tracks one side of a connection may send at once.
pub const MAX_LIVE_TRACKS: usize = 64;
/// Track ids one side of a connection may ever use (each stays reserved for the connection's
/// lifetime); a connection that used them all must be replaced to add more tracks.
pub const MAX_TRACK_IDS: usize = 65_536;
/// Largest sample accepted by [`LocalTrack::write_sample`] (a large VP8 key frame stays below).
pub const MAX_SAMPLE_SIZE: usize = 1024 * 1024;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaKind {
    /// Sound.
    Audio,
    /// Pictures.
    Video,
}

/// The encoding of a track's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// Opus audio, 48 kHz clock; a sample is one Opus packet.
    Opus,
    /// VP8 video, 90 kHz clock; a sample is one encoded frame.
    Vp8,
}

impl Codec {
    /// Whether it encodes audio or video.
    pub fn kind(self) -> MediaKind {
        match self {
            Self::Opus => MediaKind::Audio,
            Self::Vp8 => MediaKind::Video,
        }
    }

    /// The RTP clock rate: timestamp units per second.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Opus => 48_000,
            Self::Vp8 => 90_000,
        }
    }

    /// The MIME type, as in SDP.
    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Opus => "audio/opus",
            Self::Vp8 => "video/VP8",
        }
    }

    /// The codec of a MIME type (case-insensitive), if genos supports it.
    pub fn from_mime_type(mime: &str) -> Option<Self> {
        [Self::Opus, Self::Vp8]
            .into_iter()
            .find(|codec| codec.mime_type().eq_ignore_ascii_case(mime))
    }

    /// RTP timestamp units in `duration`.
    pub fn ticks(self, duration: Duration) -> u32 {
        let ticks = duration.as_secs_f64() * f64::from(self.clock_rate());
        // Saturating float-to-int conversion: a duration beyond a day of ticks is nonsense.
        ticks.round() as u32
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime_type())
    }
}

/// What a new local track is: its id and codec.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackSpec {
    /// The track id the remote side sees: 1 to [`MAX_TRACK_ID_LEN`] bytes of ASCII letters,
    /// digits, `-`, `_` and `.`. Unique per connection for its lifetime: WebRTC never reports
    /// a re-added id again, so a used id is refused ([`TransportError::InvalidTrack`]).
    pub id: String,
    /// The samples' encoding.
    pub codec: Codec,
}

impl TrackSpec {
    /// A track with this id and codec.
    pub fn new(id: impl Into<String>, codec: Codec) -> Self {
        Self {
            id: id.into(),
            codec,
        }
    }

    /// Refuses an id that is empty, too long or has characters outside the allowed set (the
    /// id travels in SDP lines).
    pub fn validate(&self) -> Result<(), TransportError> {
        let id = &self.id;
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if id.is_empty() || id.len() > MAX_TRACK_ID_LEN || !id.chars().all(allowed) {
            return Err(TransportError::InvalidTrack(format!(
                "track ids are 1 to {MAX_TRACK_ID_LEN} bytes of [A-Za-z0-9._-], got {id:?}"
            )));
        }
        Ok(())
    }
}

/// One encoded frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The encoded frame.
    pub data: Bytes,
    /// How long it plays: advances the RTP timestamp of the next sample.
    pub duration: Duration,
}

impl Sample {
    /// A sample of `data` playing for `duration`.
    pub fn new(data: impl Into<Bytes>, duration: Duration) -> Self {
        Self {
            data: data.into(),
            duration,
        }
    }
}

/// One encoded frame received, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedSample {
    /// The encoded frame, as the sender wrote it.
    pub data: Bytes,
    /// Its RTP timestamp (clock of [`Codec::clock_rate`], random start).
    pub rtp_timestamp: u32,
    /// Samples lost on the way since the previous one (incomplete frames skipped).
    pub lost_before: u32,
}

/// Counters of one track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackStats {
    /// Samples written (local) or delivered to the reader's queue (remote).
    pub samples: u64,
    /// Payload bytes of those samples.
    pub bytes: u64,
    /// Remote: samples lost on the way (frames missing packets, skipped).
    pub samples_lost: u64,
    /// Remote: samples dropped because the reader's queue was full.
    pub samples_dropped: u64,
    /// Key frame requests: received from the remote side (local track), or made with
    /// [`RemoteTrack::request_keyframe`] (remote track).
    pub keyframe_requests: u64,
}

/// The track ids one side used, and how many of its tracks are live: enforces id uniqueness
/// and the bounds above.
#[derive(Debug, Default)]
pub(crate) struct TrackBook {
    used: std::collections::HashSet<String>,
    live: usize,
}

impl TrackBook {
    /// Reserves `spec`'s id and a live slot.
    pub(crate) fn reserve(&mut self, spec: &TrackSpec) -> Result<(), TransportError> {
        spec.validate()?;
        if self.live >= MAX_LIVE_TRACKS {
            return Err(TransportError::ResourceLimit(format!(
                "{MAX_LIVE_TRACKS} tracks are live on this connection"
            )));
        }
        if self.used.len() >= MAX_TRACK_IDS {
            return Err(TransportError::ResourceLimit(format!(
                "this connection used all of its {MAX_TRACK_IDS} track ids"
            )));
        }
        if !self.used.insert(spec.id.clone()) {
            return Err(TransportError::InvalidTrack(format!(
                "track id {:?} was already used on this connection",
                spec.id
            )));
        }
        self.live += 1;
        Ok(())
    }

    /// Frees the live slot of a removed track (its id stays used).
    pub(crate) fn release(&mut self) {
        self.live = self.live.saturating_sub(1);
    }
}

#[derive(Debug, Default)]
pub(crate) struct TrackCounters {
    samples: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    dropped: AtomicU64,
    keyframes: AtomicU64,
}

impl TrackCounters {
    pub(crate) fn count(&self, bytes: usize) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_lost(&self, samples: u32) {
        self.lost.fetch_add(u64::from(samples), Ordering::Relaxed);
    }

    pub(crate) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TrackStats {
        TrackStats {
            samples: self.samples.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            samples_lost: self.lost.load(Ordering::Relaxed),
            samples_dropped: self.dropped.load(Ordering::Relaxed),
            keyframe_requests: self.keyframes.load(Ordering::Relaxed),
        }
    }
}

/// Key frame requests that reached a local track: counted, and one kept for the next
/// [`LocalTrack::keyframe_requested`] (requests while nobody waits coalesce into one).
#[derive(Debug, Default)]
pub(crate) struct KeyframeRequests {
    arrived: Notify,
    count: AtomicU64,
}

impl KeyframeRequests {
    /// The remote side asked for a key frame.
    pub(crate) fn signal(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.arrived.notify_one();
    }
}

/// How a remote track's key frame request reaches its sender (the backend's part).
pub(crate) type KeyframeRequester = Box<dyn Fn() + Send + Sync>;

/// Where a backend puts a local track's samples.
pub(crate) trait SampleSink: Send + Sync + 'static {
    /// Sends one sample (already checked for size).
    fn write<'a>(&'a self, sample: &'a Sample) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Stops the track for good and tells the remote side (called once).
    fn end(&self) -> BoxFuture<'_, Result<(), TransportError>>;

    /// Waits until samples written now reach the remote side (the track is negotiated).
    fn ready(&self) -> BoxFuture<'_, Result<(), TransportError>>;

    /// The congestion controller's send estimate for the track, in bits per second.
    fn target_bitrate(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(std::future::ready(None))
    }
}

/// A track this side sends. Cheap to clone; clones share the track.
#[derive(Clone)]
pub struct LocalTrack {
    inner: Arc<LocalInner>,
}

struct LocalInner {
    /// Identifies the connection that made it (its shared state's address).
    owner: usize,
    spec: TrackSpec,
    sink: Box<dyn SampleSink>,
    removed: AtomicBool,
    counters: TrackCounters,
    keyframes: Arc<KeyframeRequests>,
}

impl fmt::Debug for LocalTrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTrack")
            .field("id", &self.inner.spec.id)
            .field("codec", &self.inner.spec.codec)
            .finish_non_exhaustive()
    }
}

impl LocalTrack {
    /// A track fed through `sink`; the backend signals `keyframes` when the remote side asks.
    pub(crate) fn new(
        owner: usize,
        spec: TrackSpec,
        sink: Box<dyn SampleSink>,
        keyframes: Arc<KeyframeRequests>,
    ) -> Self {
        Self {
            inner: Arc::new(LocalInner {
                owner,
                spec,
                sink,
                removed: AtomicBool::new(false),
                counters: TrackCounters::default(),
                keyframes,
            }),
        }
    }

    /// The track id.
    pub fn id(&self) -> &str {
        &self.inner.spec.id
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.inner.spec.codec
    }

    /// Sends one encoded sample. The first write waits until the remote side has agreed to
    /// the track (renegotiation); later ones return once the sample is handed to the link.
    /// What feeds a track can change at any time (another file, another camera): the remote
    /// side sees the new samples on the same track.
    ///
    /// Errors: [`TransportError::MessageTooLarge`] above [`MAX_SAMPLE_SIZE`],
    /// [`TransportError::InvalidTrack`] once the track is removed,
    /// [`TransportError::NotConnected`] once the connection ended.
    pub async fn write_sample(&self, sample: Sample) -> Result<(), TransportError> {
        crate::shared::check_message_size(sample.data.len(), MAX_SAMPLE_SIZE)?;
        if self.is_removed() {
            return Err(self.removed_error());
        }
        self.inner.sink.write(&sample).await?;
        self.inner.counters.count(sample.data.len());
        Ok(())
    }

    /// Waits until the remote side has agreed to the track, so samples written from now on
    /// reach it (the first [`LocalTrack::write_sample`] waits for this too). Same errors as
    /// a write, and a [`TransportError::Setup`] when the remote side does not agree in time.
    pub async fn ready(&self) -> Result<(), TransportError> {
        if self.is_removed() {
            return Err(self.removed_error());
        }
        self.inner.sink.ready().await
    }

    /// Waits until the remote side asks for a key frame (a receiver lost packets, or started
    /// late). A request that came while nobody waited is kept: the next call returns at once
    /// (several such requests count as one). Never returns for a track nobody asks about, so
    /// wait for it beside the sample loop (`tokio::select!`); a sender without an encoder can
    /// ignore it.
    pub async fn keyframe_requested(&self) {
        self.inner.keyframes.arrived.notified().await;
    }

    /// The send-side bandwidth estimate for this track, in bits per second, for an encoder to
    /// follow: `None` unless the backend runs congestion control (WebRTC with
    /// [`WebRtcConfig::congestion_control`](crate::webrtc::WebRtcConfig::congestion_control))
    /// and has an estimate. genos itself does not drop samples to fit it.
    pub async fn target_bitrate(&self) -> Option<u64> {
        self.inner.sink.target_bitrate().await
    }

    /// Counters of samples written and key frame requests received.
    pub fn stats(&self) -> TrackStats {
        TrackStats {
            keyframe_requests: self.inner.keyframes.count.load(Ordering::Relaxed),
            ..self.inner.counters.snapshot()
        }
    }

    /// Whether [`Connection::remove_track`](crate::Connection::remove_track) removed it.
    pub fn is_removed(&self) -> bool {
        self.inner.removed.load(Ordering::Acquire)
    }

    /// Removes the track made by connection `owner`: true if this call removed it, false if
    /// it already was removed.
    pub(crate) async fn remove(&self, owner: usize) -> Result<bool, TransportError> {
        if self.inner.owner != owner {
            return Err(TransportError::InvalidTrack(format!(
                "track {:?} belongs to another connection",
                self.id()
            )));
        }
        if self.inner.removed.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        self.inner.sink.end().await?;
        Ok(true)
    }

    fn removed_error(&self) -> TransportError {
        TransportError::InvalidTrack(format!("track {:?} was removed", self.id()))
    }

    /// Whether both handles are the same track.
    pub fn same_track(&self, other: &LocalTrack) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// A track the remote side sends. Cheap to clone; clones share one sample queue. Two handles
/// are equal when they are the same track.
#[derive(Clone)]
pub struct RemoteTrack {
    inner: Arc<RemoteInner>,
}

impl PartialEq for RemoteTrack {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for RemoteTrack {}

struct RemoteInner {
    id: String,
    codec: Codec,
    samples: AsyncMutex<mpsc::Receiver<ReceivedSample>>,
    counters: Arc<TrackCounters>,
    request_keyframe: KeyframeRequester,
}

impl fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteTrack")
            .field("id", &self.inner.id)
            .field("codec", &self.inner.codec)
            .finish_non_exhaustive()
    }
}

/// The backend's end of a remote track: it pushes whole samples in, and ending it (dropping
/// it) makes the reader see `None` after the queued samples.
#[derive(Debug)]
pub(crate) struct RemoteFeed {
    samples: mpsc::Sender<ReceivedSample>,
    pub(crate) counters: Arc<TrackCounters>,
}

impl RemoteFeed {
    /// Queues a sample for the reader, or drops and counts it when the queue is full.
    pub(crate) fn push(&self, sample: ReceivedSample) {
        let len = sample.data.len();
        if sample.lost_before > 0 {
            self.counters.count_lost(sample.lost_before);
        }
        match self.samples.try_send(sample) {
            Ok(()) => self.counters.count(len),
            Err(_) => self.counters.count_dropped(),
        }
    }
}

impl RemoteTrack {
    /// A remote track and the feed its backend fills; `request_keyframe` carries a key frame
    /// request to the sender.
    pub(crate) fn new(
        id: String,
        codec: Codec,
        request_keyframe: KeyframeRequester,
    ) -> (Self, RemoteFeed) {
        let (sender, receiver) = mpsc::channel(TRACK_BUFFER);
        let counters = Arc::new(TrackCounters::default());
        let track = Self {
            inner: Arc::new(RemoteInner {
                id,
                codec,
                samples: AsyncMutex::new(receiver),
                counters: counters.clone(),
                request_keyframe,
            }),
        };
        (
            track,
            RemoteFeed {
                samples: sender,
                counters,
            },
        )
    }

    /// The id the sender gave the track.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// The next whole sample; `None` once the track ended and its queue is drained.
    pub async fn recv_sample(&self) -> Option<ReceivedSample> {
        self.inner.samples.lock().await.recv().await
    }

    /// Asks the sender for a key frame, so decoding can restart after a loss (or begin, for a
    /// receiver that joined a running track). Requests made while one is on its way go as one;
    /// the sender sees it in [`LocalTrack::keyframe_requested`].
    ///
    /// Errors: [`TransportError::InvalidTrack`] for an audio track (audio has no key frames).
    pub fn request_keyframe(&self) -> Result<(), TransportError> {
        if self.codec().kind() != MediaKind::Video {
            return Err(TransportError::InvalidTrack(format!(
                "track {:?} is audio: it has no key frames",
                self.id()
            )));
        }
        self.inner
            .counters
            .keyframes
            .fetch_add(1, Ordering::Relaxed);
        (self.inner.request_keyframe)();
        Ok(())
    }

    /// Counters of samples received, lost and dropped, and key frame requests sent.
    pub fn stats(&self) -> TrackStats {
        self.inner.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_ids_that_could_break_an_sdp_line_are_refused() {
        assert!(TrackSpec::new("cam-1.v_2", Codec::Vp8).validate().is_ok());
        for bad in ["", "a b", "a\r\na=ssrc:1", "é", &"x".repeat(65)] {
            assert!(
                matches!(
                    TrackSpec::new(bad, Codec::Opus).validate(),
                    Err(TransportError::InvalidTrack(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn codecs_round_trip_their_mime_type_and_count_ticks() {
        for codec in [Codec::Opus, Codec::Vp8] {
            assert_eq!(Codec::from_mime_type(codec.mime_type()), Some(codec));
        }
        assert_eq!(Codec::from_mime_type("VIDEO/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime_type("video/H264"), None);
        assert_eq!(Codec::Opus.ticks(Duration::from_millis(20)), 960);
        assert_eq!(Codec::Vp8.ticks(Duration::from_millis(33)), 2970);
    }

    #[tokio::test]
    async fn a_full_remote_queue_drops_and_counts_instead_of_waiting() {
        let (track, feed) = RemoteTrack::new("a".into(), Codec::Opus, Box::new(|| {}));
        for n in 0..TRACK_BUFFER + 3 {
            feed.push(ReceivedSample {
                data: Bytes::from(vec![1; 10]),
                rtp_timestamp: n as u32,
                lost_before: 0,
            });
        }
        let stats = track.stats();
        assert_eq!(stats.samples, TRACK_BUFFER as u64);
        assert_eq!(stats.samples_dropped, 3);
        drop(feed);
        let mut read = 0;
        while track.recv_sample().await.is_some() {
            read += 1;
        }
        assert_eq!(read, TRACK_BUFFER);
    }
}
