//! Media tracks in a room: one [`RoomTrack`] fans out to a transport track per targeted peer.
//!
//! Adding a track gives it a fresh id (WebRTC never reports a re-added id again). For each
//! targeted peer with a link, the track is first *announced* on the link (a sealed frame with
//! id, codec and metadata: the metadata never travels in the clear and the transport carries
//! none), then added to the peer's connection, which renegotiates. The receiving side pairs
//! the announcement with the transport's remote track and reports
//! [`RoomEvent::PeerTrack`](crate::RoomEvent::PeerTrack); a removal (or the peer leaving)
//! gives [`RoomEvent::PeerTrackEnded`](crate::RoomEvent::PeerTrackEnded). Tracks meant for
//! everyone reach peers that join later, too.
//!
//! Key frames: a receiver asks with [`RemoteTrack::request_keyframe`]; the sender learns of
//! it from [`RoomTrack::keyframe_requested`], which also returns when a peer starts receiving
//! the track (a decoder needs a key frame to begin).
//!
//! In a cells room, a track addressed to peers by name reaches those without a direct link
//! too: the room dials them for the track alone (at most [`MAX_MEDIA_LINKS`]) and both ends
//! keep that link while a track ties them, whatever the overlay plans; then the overlay
//! decides again. Tracks are never forwarded. A track to everyone reaches the peers this
//! peer is linked to (its cell and its bridges): media to a whole large room wants a
//! forwarding server, which genos does not have.
//!
//! Bounds: [`MAX_ROOM_TRACKS`] live tracks per room, metadata up to
//! [`MAX_METADATA_LEN`](crate::MAX_METADATA_LEN), and per remote peer at most
//! [`MAX_REMOTE_TRACKS`] tracks being paired (further announcements are ignored).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::join_all;
use genos_crypto::PeerId;
use genos_transport::media::MAX_LIVE_TRACKS;
use genos_transport::{Codec, LocalTrack, RemoteTrack, Sample, TrackSpec};

use crate::link::Link;
use crate::shared::Shared;
use crate::wire::TrackAnnounce;
use crate::{MAX_METADATA_LEN, RoomError, RoomEvent, Target, lock};

/// Tracks one room may send at once.
pub const MAX_ROOM_TRACKS: usize = 32;
/// Tracks of one remote peer held while waiting to pair announcement and media.
pub const MAX_REMOTE_TRACKS: usize = MAX_LIVE_TRACKS;
/// (Cells rooms) peers a room links to for media alone, beyond the overlay's links: peers a
/// track is addressed to without a direct link, and peers sending us a track over such a
/// link. Further targets are not dialled (the track does not reach them).
pub const MAX_MEDIA_LINKS: usize = 16;

/// Who a track goes to and what is said about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackOptions {
    /// The peers that receive it; [`Target::All`] includes peers that join later.
    pub target: Target,
    /// Up to [`MAX_METADATA_LEN`] bytes the receivers get with the track (sealed).
    pub metadata: Bytes,
}

impl TrackOptions {
    /// To every peer, now and later, without metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the track to `target` only.
    pub fn to(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Attaches `metadata` (e.g. a JSON description: "camera", "screen").
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// A track this peer sends into the room. Cheap to clone; clones share the track.
#[derive(Clone, Debug)]
pub struct RoomTrack {
    pub(crate) inner: Arc<TrackInner>,
}

#[derive(Debug)]
pub(crate) struct TrackInner {
    pub(crate) id: String,
    codec: Codec,
    options: TrackOptions,
    /// The transport track on each peer's link, once it is agreed.
    peers: Mutex<HashMap<PeerId, (u64, LocalTrack)>>,
    removed: AtomicBool,
    samples_written: AtomicU64,
    bytes_written: AtomicU64,
    /// A peer started receiving the track: it needs a key frame.
    peer_joined: tokio::sync::Notify,
}

impl TrackInner {
    /// The peers the track is addressed to by name (none for a track to everyone).
    pub(crate) fn named_targets(&self) -> Vec<PeerId> {
        match &self.options.target {
            Target::Peer(one) => vec![*one],
            Target::Peers(list) => list.clone(),
            _ => Vec::new(),
        }
    }

    /// Whether the track is addressed to `peer` by name.
    pub(crate) fn names(&self, peer: &PeerId) -> bool {
        match &self.options.target {
            Target::Peer(one) => one == peer,
            Target::Peers(list) => list.contains(peer),
            _ => false,
        }
    }

    /// Whether the track goes to `peer`: named, or a track to everyone.
    pub(crate) fn wants(&self, peer: &PeerId) -> bool {
        match &self.options.target {
            Target::Peer(_) | Target::Peers(_) => self.names(peer),
            _ => true,
        }
    }
}

impl RoomTrack {
    /// The track's id (fresh per add), as the receivers see it.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The codec of its samples.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// Samples written to the track so far.
    pub fn samples_written(&self) -> u64 {
        self.inner.samples_written.load(Ordering::Relaxed)
    }

    /// Payload bytes of those samples.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes_written.load(Ordering::Relaxed)
    }

    /// The peers it currently reaches.
    pub fn peers(&self) -> Vec<PeerId> {
        lock(&self.inner.peers).keys().copied().collect()
    }

    /// Waits until a peer the track reaches asks for a key frame, or a peer starts receiving
    /// it (its decoder needs one to begin); the sender should then encode its next frame as a
    /// key frame. A request that came while nobody waited is kept for the next call. Never
    /// returns when nobody asks: wait for it beside the sample loop (`tokio::select!`).
    pub async fn keyframe_requested(&self) {
        let tracks: Vec<LocalTrack> = lock(&self.inner.peers)
            .values()
            .map(|(_, track)| track.clone())
            .collect();
        if tracks.is_empty() {
            self.inner.peer_joined.notified().await;
            return;
        }
        // Not empty: `select_all` panics on no futures.
        let asked = futures::future::select_all(
            tracks
                .iter()
                .map(|track| Box::pin(track.keyframe_requested())),
        );
        tokio::select! {
            _ = asked => {}
            () = self.inner.peer_joined.notified() => {}
        }
    }

    /// Key frame requests received from the peers the track reaches now.
    pub fn keyframe_requests(&self) -> u64 {
        lock(&self.inner.peers)
            .values()
            .map(|(_, track)| track.stats().keyframe_requests)
            .sum()
    }

    /// Sends one encoded sample to every peer the track reaches; returns how many that is.
    /// Media is live: a peer whose link ended is dropped from the track, a peer joining
    /// later starts with the next sample after its link agreed to the track. Feeding the
    /// track from another source (a new file, another camera) is just writing its samples:
    /// the receivers see them on the same track.
    pub async fn write_sample(&self, sample: Sample) -> Result<usize, RoomError> {
        if self.inner.removed.load(Ordering::Acquire) {
            return Err(RoomError::TrackRemoved(self.inner.id.clone()));
        }
        self.inner.samples_written.fetch_add(1, Ordering::Relaxed);
        self.inner
            .bytes_written
            .fetch_add(sample.data.len() as u64, Ordering::Relaxed);
        let targets: Vec<(PeerId, u64, LocalTrack)> = lock(&self.inner.peers)
            .iter()
            .map(|(peer, (dial, track))| (*peer, *dial, track.clone()))
            .collect();
        let writes = targets
            .iter()
            .map(|(_, _, track)| track.write_sample(sample.clone()));
        let results = join_all(writes).await;
        let mut written = 0;
        let mut peers = lock(&self.inner.peers);
        for ((peer, dial, _), result) in targets.iter().zip(results) {
            match result {
                Ok(()) => written += 1,
                Err(error) => {
                    tracing::debug!(peer = %peer.short(), %error, "track write failed: peer dropped from the track");
                    if peers.get(peer).is_some_and(|(current, _)| current == dial) {
                        peers.remove(peer);
                    }
                }
            }
        }
        Ok(written)
    }
}

/// Announces `track` on `link` and adds it to the link's connection; once the remote side
/// agreed, writes reach that peer.
pub(crate) async fn attach(track: Arc<TrackInner>, link: Arc<Link>) {
    if track.removed.load(Ordering::Acquire) || lock(&track.peers).contains_key(&link.peer) {
        return;
    }
    let announce = TrackAnnounce {
        id: track.id.clone(),
        codec: track.codec,
        metadata: track.options.metadata.clone(),
    };
    let result = async {
        link.send_track(&announce).await?;
        let local = link
            .add_track(TrackSpec::new(track.id.clone(), track.codec))
            .await?;
        local.ready().await?;
        Ok::<_, RoomError>(local)
    }
    .await;
    match result {
        Ok(local) => {
            if track.removed.load(Ordering::Acquire) {
                let _ = link.remove_track(&local).await;
                return;
            }
            lock(&track.peers).insert(link.peer, (link.dial, local));
            track.peer_joined.notify_one();
        }
        Err(error) => {
            tracing::debug!(peer = %link.peer.short(), %error, "track not added to a link");
        }
    }
}

/// A remote peer's track: its announcement and its media, reported once both are in.
#[derive(Default)]
struct Pairing {
    announce: Option<TrackAnnounce>,
    track: Option<RemoteTrack>,
    reported: bool,
}

/// The room's media: its own tracks, and the remote ones being paired and reported.
#[derive(Default)]
pub(crate) struct RoomMedia {
    local: Mutex<Vec<Arc<TrackInner>>>,
    remote: Mutex<HashMap<PeerId, HashMap<String, Pairing>>>,
}

impl RoomMedia {
    /// Registers a new track; the caller attaches it to links.
    pub(crate) fn add(&self, codec: Codec, options: TrackOptions) -> Result<RoomTrack, RoomError> {
        if options.metadata.len() > MAX_METADATA_LEN {
            return Err(RoomError::MetadataTooLarge {
                size: options.metadata.len(),
                limit: MAX_METADATA_LEN,
            });
        }
        let mut local = lock(&self.local);
        if local.len() >= MAX_ROOM_TRACKS {
            return Err(RoomError::TooManyTracks {
                limit: MAX_ROOM_TRACKS,
            });
        }
        let inner = Arc::new(TrackInner {
            id: hex::encode(rand::random::<[u8; 8]>()),
            codec,
            options,
            peers: Mutex::new(HashMap::new()),
            removed: AtomicBool::new(false),
            samples_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            peer_joined: tokio::sync::Notify::new(),
        });
        local.push(inner.clone());
        Ok(RoomTrack { inner })
    }

    /// Marks `track` removed and forgets it; returns the transport tracks to remove.
    pub(crate) fn remove(&self, track: &RoomTrack) -> Vec<(PeerId, u64, LocalTrack)> {
        if track.inner.removed.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        lock(&self.local).retain(|t| !Arc::ptr_eq(t, &track.inner));
        lock(&track.inner.peers)
            .drain()
            .map(|(peer, (dial, local))| (peer, dial, local))
            .collect()
    }

    /// Whether media ties us to `peer`: a live track of ours addressed to it by name (not
    /// to everyone), or a track it sends us. A cells room keeps such a link even when the
    /// overlay does not want it.
    pub(crate) fn involves(&self, peer: &PeerId) -> bool {
        lock(&self.local).iter().any(|track| track.names(peer))
            || lock(&self.remote)
                .get(peer)
                .is_some_and(|tracks| !tracks.is_empty())
    }

    /// The live tracks meant for `peer`.
    pub(crate) fn tracks_for(&self, peer: &PeerId) -> Vec<Arc<TrackInner>> {
        lock(&self.local)
            .iter()
            .filter(|track| track.wants(peer))
            .cloned()
            .collect()
    }

    /// The peer announced a track.
    pub(crate) fn on_announce(&self, shared: &Shared, peer: PeerId, announce: TrackAnnounce) {
        let id = announce.id.clone();
        self.pair(shared, peer, &id, |pairing| {
            pairing.announce = Some(announce)
        });
    }

    /// The peer's track's first sample arrived.
    pub(crate) fn on_track(&self, shared: &Shared, peer: PeerId, track: RemoteTrack) {
        let id = track.id().to_owned();
        self.pair(shared, peer, &id, |pairing| pairing.track = Some(track));
    }

    fn pair(&self, shared: &Shared, peer: PeerId, id: &str, fill: impl FnOnce(&mut Pairing)) {
        let mut remote = lock(&self.remote);
        let tracks = remote.entry(peer).or_default();
        if !tracks.contains_key(id) && tracks.len() >= MAX_REMOTE_TRACKS {
            tracing::warn!(peer = %peer.short(), "too many tracks from one peer: one ignored");
            return;
        }
        let pairing = tracks.entry(id.to_owned()).or_default();
        fill(pairing);
        if pairing.reported {
            return;
        }
        if let (Some(announce), Some(track)) = (&pairing.announce, &pairing.track) {
            if announce.codec != track.codec() {
                tracing::debug!(peer = %peer.short(), "track codec differs from its announcement");
            }
            pairing.reported = true;
            shared.emit(RoomEvent::PeerTrack {
                peer,
                track: track.clone(),
                metadata: announce.metadata.clone(),
            });
        }
    }

    /// The peer removed a track.
    pub(crate) fn on_ended(&self, shared: &Shared, peer: PeerId, id: String) {
        let pairing = lock(&self.remote)
            .get_mut(&peer)
            .and_then(|tracks| tracks.remove(&id));
        if pairing.is_some_and(|p| p.reported) {
            shared.emit(RoomEvent::PeerTrackEnded { peer, id });
        }
    }

    /// The peer's link is gone: its tracks end, and ours no longer reach it.
    pub(crate) fn peer_gone(&self, shared: &Shared, peer: PeerId, dial: u64) {
        let tracks = lock(&self.remote).remove(&peer).unwrap_or_default();
        for (id, pairing) in tracks {
            if pairing.reported {
                shared.emit(RoomEvent::PeerTrackEnded { peer, id });
            }
        }
        for track in lock(&self.local).iter() {
            let mut peers = lock(&track.peers);
            if peers
                .get(&peer)
                .is_some_and(|(current, _)| *current == dial)
            {
                peers.remove(&peer);
            }
        }
    }
}
