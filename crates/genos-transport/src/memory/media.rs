//! Media tracks between in-memory connections: samples go straight into the remote track's
//! queue, with the same events, bounds and drop-when-full behaviour as WebRTC.

use std::sync::atomic::AtomicU32;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::*;
use crate::media::{KeyframeRequests, ReceivedSample, RemoteTrack, Sample, SampleSink};
use crate::shared::closed;

/// Serials of tracks across every network, so a link's feed map never mixes two tracks.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

struct MemorySink {
    serial: u64,
    spec: TrackSpec,
    link: Arc<Link>,
    local: Weak<ConnShared>,
    remote: Weak<ConnShared>,
    /// The RTP timestamp of the next sample (random start, as RTP).
    next_timestamp: AtomicU32,
    /// Whether the remote side was told of the track (at its first sample).
    announced: tokio::sync::Mutex<bool>,
    /// Where the remote track's key frame requests land (straight in, as the link is ours).
    keyframes: Arc<KeyframeRequests>,
}

impl SampleSink for MemorySink {
    fn write<'a>(&'a self, sample: &'a Sample) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            if self.link.down.load(Ordering::Acquire) {
                return Err(closed());
            }
            let mut announced = self.announced.lock().await;
            if !*announced {
                let remote = self.remote.upgrade().ok_or_else(closed)?;
                let keyframes = Arc::downgrade(&self.keyframes);
                let request = Box::new(move || {
                    if let Some(keyframes) = keyframes.upgrade() {
                        keyframes.signal();
                    }
                });
                let (track, feed) =
                    RemoteTrack::new(self.spec.id.clone(), self.spec.codec, request);
                lock(&self.link.feeds).insert(self.serial, feed);
                if self.link.down.load(Ordering::Acquire) {
                    lock(&self.link.feeds).clear();
                    return Err(closed());
                }
                remote
                    .events
                    .send(ConnectionEvent::TrackReceived(track))
                    .await
                    .map_err(|_| closed())?;
                *announced = true;
            }
            drop(announced);
            let ticks = self.spec.codec.ticks(sample.duration);
            let rtp_timestamp = self.next_timestamp.fetch_add(ticks, Ordering::AcqRel);
            // A stalled link loses media (it is live), as a congested path would.
            if !*self.link.stalled.borrow()
                && let Some(feed) = lock(&self.link.feeds).get(&self.serial)
            {
                feed.push(ReceivedSample {
                    data: sample.data.clone(),
                    rtp_timestamp,
                    lost_before: 0,
                });
            }
            Ok(())
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        let result = if self.link.down.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        };
        futures::future::ready(result).boxed()
    }

    fn end(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async move {
            if let Some(local) = self.local.upgrade() {
                lock(&local.tracks).release();
            }
            // Ending the feed lets the reader drain what it has, then see `None`.
            let had_feed = lock(&self.link.feeds).remove(&self.serial).is_some();
            if had_feed && let Some(remote) = self.remote.upgrade() {
                let ended = ConnectionEvent::TrackEnded {
                    id: self.spec.id.clone(),
                };
                let _ = remote.events.send(ended).await;
            }
            Ok(())
        }
        .boxed()
    }
}

pub(super) fn add_track(
    me: &Arc<ConnShared>,
    spec: TrackSpec,
) -> Result<LocalTrack, TransportError> {
    let (link, side) = me.link().ok_or_else(closed)?;
    let remote = link.ends.get(1 - side).cloned().ok_or_else(closed)?;
    lock(&me.tracks).reserve(&spec)?;
    let keyframes = Arc::new(KeyframeRequests::default());
    let sink = MemorySink {
        serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
        spec: spec.clone(),
        link,
        local: Arc::downgrade(me),
        remote,
        next_timestamp: AtomicU32::new(rand::rng().random()),
        announced: tokio::sync::Mutex::new(false),
        keyframes: keyframes.clone(),
    };
    Ok(LocalTrack::new(
        shared::owner_of(me),
        spec,
        Box::new(sink),
        keyframes,
    ))
}
