//! Media with Trystero peers: tracks both ways, described as Trystero describes them.
//!
//! Trystero renegotiates a connection over its `@_signal` action once the peers joined
//! (offers, answers and candidates as `{"type", "sdp"}`, a candidate's `sdp` being its JSON),
//! and announces each track just before adding it: `@_track` with `{"k": key, "s": stream
//! id, "t": track id, "m": metadata}` (or `@_stream` without `t`, for a whole stream). The
//! receiver pairs announcements with arriving tracks in order. genos does the same on a plain
//! connection, which renegotiates through signals
//! ([`WebRtcConfig::plain_channel`](genos_transport::webrtc::WebRtcConfig::plain_channel)).
//!
//! What differs: a track genos receives takes the announcement naming its id, else the oldest
//! `@_track` one, else the metadata of the latest `@_stream` (genos does not see stream ids);
//! a track's end has no message in Trystero (the renegotiated SDP says it), so genos reports
//! tracks ending only with their peer.

use std::collections::VecDeque;

use futures::future::join_all;
use genos_transport::{Codec, LocalTrack, RemoteTrack, Sample, TrackSpec};

use super::driver::Driver;
use super::*;

/// Trystero's renegotiation action.
pub(super) const SIGNAL: &str = "@_signal";
/// Trystero's announcement of a track about to be added.
pub(super) const TRACK_META: &str = "@_track";
/// Trystero's announcement of a stream about to be added.
pub(super) const STREAM_META: &str = "@_stream";
/// Track announcements held per peer until their tracks arrive; more are dropped.
const MAX_PENDING_METAS: usize = 64;
/// The stream id genos's tracks are announced under (as in their SDP `msid`).
const STREAM_ID: &str = "genos";

/// Announcements of a peer's tracks, waiting for the tracks.
#[derive(Debug, Default)]
pub(super) struct PendingMedia {
    tracks: VecDeque<Value>,
    stream: Option<Value>,
}

impl PendingMedia {
    /// An `@_track` or `@_stream` announcement arrived.
    pub(super) fn announced(&mut self, action: &str, meta: Value) {
        if action == STREAM_META {
            self.stream = Some(meta);
        } else if self.tracks.len() < MAX_PENDING_METAS {
            self.tracks.push_back(meta);
        }
    }

    /// The metadata for the arriving track `id`.
    pub(super) fn metadata_for(&mut self, id: &str) -> Option<Value> {
        let named = self
            .tracks
            .iter()
            .position(|meta| meta.get("t").and_then(Value::as_str) == Some(id));
        let meta = match named {
            Some(at) => self.tracks.remove(at),
            None => self.tracks.pop_front(),
        };
        meta.or_else(|| self.stream.clone())
            .and_then(|meta| meta.get("m").cloned())
    }
}

/// A transport signal (genos's JSON) as Trystero's `@_signal` payload.
pub(super) fn to_trystero_signal(signal: &Value) -> Option<Value> {
    match signal.get("type").and_then(Value::as_str)? {
        kind @ ("offer" | "answer") => Some(json!({"type": kind, "sdp": signal.get("sdp")?})),
        "candidate" => Some(json!({
            "type": "candidate",
            "sdp": signal.get("candidate")?.to_string(),
        })),
        _ => None,
    }
}

/// Trystero's `@_signal` payload as a transport signal.
pub(super) fn from_trystero_signal(signal: &Value) -> Option<Value> {
    let sdp = signal.get("sdp").and_then(Value::as_str)?;
    match signal.get("type").and_then(Value::as_str)? {
        kind @ ("offer" | "answer") => Some(json!({"type": kind, "sdp": sdp})),
        "candidate" => Some(driver::candidate_signal(serde_json::from_str(sdp).ok()?)),
        _ => None,
    }
}

/// A track genos sends to Trystero peers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TrysteroTrack {
    inner: Arc<TrackInner>,
}

#[derive(Debug)]
struct TrackInner {
    id: String,
    codec: Codec,
    /// Per peer: its connection and the transport track on it.
    sends: Vec<(String, WebRtcConnection, LocalTrack)>,
}

impl TrysteroTrack {
    /// The track id (its SDP `msid` track id, and the `t` of its announcement).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// The peers it reaches.
    pub fn peers(&self) -> Vec<String> {
        self.inner
            .sends
            .iter()
            .map(|(peer, _, _)| peer.clone())
            .collect()
    }

    /// Sends one encoded sample to every peer the track reaches; returns to how many it went.
    pub async fn write_sample(&self, sample: Sample) -> usize {
        let writes = self
            .inner
            .sends
            .iter()
            .map(|(_, _, track)| track.write_sample(sample.clone()));
        join_all(writes).await.iter().filter(|r| r.is_ok()).count()
    }

    /// The transport track to each peer (stats, key frame requests).
    pub fn local_tracks(&self) -> Vec<(String, LocalTrack)> {
        self.inner
            .sends
            .iter()
            .map(|(peer, _, track)| (peer.clone(), track.clone()))
            .collect()
    }
}

impl TrysteroRoom {
    /// Adds a track for `targets` (every joined peer when `None`): announced with Trystero's
    /// `@_track` (its `metadata` is what the browser's `onPeerTrack` gets), then added to each
    /// connection, which renegotiates over `@_signal`. Returns once every target agreed
    /// (peers that did not within the transport's negotiation bound are left out; see
    /// [`TrysteroTrack::peers`]).
    pub async fn add_track(
        &self,
        codec: Codec,
        metadata: Option<&Value>,
        targets: Option<Vec<String>>,
    ) -> Result<TrysteroTrack, TrysteroError> {
        let id = format!("genos-{}", peer_id::random(16));
        let key = peer_id::random(20);
        let meta = match metadata {
            Some(metadata) => json!({"k": key, "s": STREAM_ID, "t": id, "m": metadata}),
            None => json!({"k": key, "s": STREAM_ID, "t": id}),
        };
        let frames = self.frames(TRACK_META, Payload::Json(meta), None)?;
        let (reply, answer) = oneshot::channel();
        self.command(Command::Media { targets, reply }).await?;
        let peers = answer.await.map_err(|_| TrysteroError::Left)?;
        let adds = peers.into_iter().map(|(peer, writer, conn)| {
            let (frames, spec) = (frames.clone(), TrackSpec::new(id.clone(), codec));
            async move {
                // Announced first, on the link the renegotiation will take too.
                writer.send(frames).await.ok()?;
                let track = conn.add_track(spec).await.ok()?;
                match track.ready().await {
                    Ok(()) => Some((peer, conn, track)),
                    Err(error) => {
                        tracing::debug!(%error, peer, "a Trystero peer did not take a track");
                        None
                    }
                }
            }
        });
        let sends = join_all(adds).await.into_iter().flatten().collect();
        Ok(TrysteroTrack {
            inner: Arc::new(TrackInner { id, codec, sends }),
        })
    }

    /// Stops sending `track` to every peer (the renegotiated SDP tells them).
    pub async fn remove_track(&self, track: &TrysteroTrack) {
        for (peer, conn, local) in &track.inner.sends {
            if let Err(error) = conn.remove_track(local).await {
                tracing::debug!(%error, peer, "a track was not removed");
            }
        }
    }
}

impl Driver {
    /// The writer and connection of each joined peer among `targets` (all when `None`).
    pub(super) fn media_peers(
        &self,
        targets: Option<Vec<String>>,
    ) -> Vec<(String, Writer, WebRtcConnection)> {
        self.writers(targets)
            .into_iter()
            .filter_map(|(id, writer)| {
                let conn = self.peers.get(&id)?.conn.clone();
                Some((id, writer?, conn))
            })
            .collect()
    }

    /// A track of `peer` arrived: reported with the metadata its announcement gave.
    pub(super) async fn on_track(&mut self, peer: &str, track: RemoteTrack) {
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        let metadata = link.media.metadata_for(track.id());
        self.emit(TrysteroEvent::PeerTrack {
            peer: peer.to_owned(),
            track,
            metadata,
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_convert_both_ways() {
        let candidate =
            json!({"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"});
        for ours in [
            json!({"type": "offer", "sdp": "v=0"}),
            json!({"type": "answer", "sdp": "v=0"}),
            driver::candidate_signal(candidate.clone()),
        ] {
            let theirs = to_trystero_signal(&ours).unwrap();
            assert!(theirs["sdp"].is_string(), "{theirs}");
            assert_eq!(from_trystero_signal(&theirs).unwrap(), ours);
        }
        assert_eq!(
            from_trystero_signal(&json!({"type": "candidate", "sdp": "{"})),
            None
        );
        assert_eq!(
            from_trystero_signal(&json!({"type": "rollback", "sdp": ""})),
            None
        );
    }

    #[test]
    fn a_track_takes_the_announcement_naming_it_else_the_oldest_else_the_stream() {
        let mut pending = PendingMedia::default();
        pending.announced(TRACK_META, json!({"k": "a", "t": "one", "m": 1}));
        pending.announced(TRACK_META, json!({"k": "b", "t": "two", "m": 2}));
        pending.announced(STREAM_META, json!({"k": "c", "s": "s", "m": "stream"}));
        assert_eq!(pending.metadata_for("two"), Some(json!(2)));
        assert_eq!(pending.metadata_for("unnamed"), Some(json!(1)));
        assert_eq!(pending.metadata_for("more"), Some(json!("stream")));
    }
}
