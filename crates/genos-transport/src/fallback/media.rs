//! Media tracks on a fallback link: a track is announced once, then each sample is a frame
//! behind the data already queued. Nothing is paced or dropped on the way (the link is TCP);
//! the receiving track's queue drops and counts what its reader does not take in time, as on
//! WebRTC.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::Rng;

use super::ConnShared;
use super::wire::Frame;
use crate::media::{Codec, KeyframeRequests, ReceivedSample, RemoteTrack, Sample, SampleSink};
use crate::shared::{self, closed, lock};
use crate::{ConnectionEvent, ConnectionState, LocalTrack, TrackSpec, TransportError};

struct FallbackSink {
    serial: u32,
    spec: TrackSpec,
    conn: std::sync::Weak<ConnShared>,
    next_timestamp: AtomicU32,
}

impl FallbackSink {
    fn conn(&self) -> Result<Arc<ConnShared>, TransportError> {
        let conn = self.conn.upgrade().ok_or_else(closed)?;
        match conn.state() {
            ConnectionState::Connected => Ok(conn),
            state => Err(TransportError::NotConnected(state)),
        }
    }
}

impl SampleSink for FallbackSink {
    fn write<'a>(&'a self, sample: &'a Sample) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            let conn = self.conn()?;
            let ticks = self.spec.codec.ticks(sample.duration);
            let rtp_timestamp = self.next_timestamp.fetch_add(ticks, Ordering::AcqRel);
            let frame = Frame::Sample {
                serial: self.serial,
                rtp_timestamp,
                data: sample.data.clone(),
            };
            conn.send_data(frame.encode()).await
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        futures::future::ready(self.conn().map(drop)).boxed()
    }

    fn end(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        async move {
            let Some(conn) = self.conn.upgrade() else {
                return Ok(());
            };
            lock(&conn.tracks).release();
            lock(&conn.local_tracks).remove(&self.serial);
            if conn.state() == ConnectionState::Connected {
                let _ = conn
                    .send_data(
                        Frame::TrackEnd {
                            serial: self.serial,
                        }
                        .encode(),
                    )
                    .await;
            }
            Ok(())
        }
        .boxed()
    }
}

pub(super) fn add_track(
    conn: &Arc<ConnShared>,
    spec: TrackSpec,
) -> Result<LocalTrack, TransportError> {
    lock(&conn.tracks).reserve(&spec)?;
    let serial = conn.next_track.fetch_add(1, Ordering::Relaxed);
    let keyframes = Arc::new(KeyframeRequests::default());
    lock(&conn.local_tracks).insert(serial, Arc::downgrade(&keyframes));
    conn.send_control(&Frame::TrackOpen {
        serial,
        codec: spec.codec,
        id: spec.id.clone(),
    });
    let sink = FallbackSink {
        serial,
        spec: spec.clone(),
        conn: Arc::downgrade(conn),
        next_timestamp: AtomicU32::new(rand::rng().random()),
    };
    Ok(LocalTrack::new(
        shared::owner_of(conn),
        spec,
        Box::new(sink),
        keyframes,
    ))
}

/// The remote added a track: it is reported at once (its samples follow in order).
pub(super) async fn on_track_open(
    conn: &Arc<ConnShared>,
    serial: u32,
    codec: Codec,
    id: String,
) -> Result<(), TransportError> {
    crate::TrackSpec::new(id.clone(), codec).validate()?;
    let track = {
        let mut tracks = lock(&conn.remote_tracks);
        if tracks.contains_key(&serial) || tracks.len() >= crate::media::MAX_LIVE_TRACKS {
            return Err(TransportError::InvalidTrack(format!(
                "track serial {serial} reused or over the limit"
            )));
        }
        let control = conn.control.clone();
        let request = Box::new(move || {
            let _ = control.send(Frame::Keyframe { serial }.encode());
        });
        let (track, feed) = RemoteTrack::new(id.clone(), codec, request);
        tracks.insert(serial, (id, feed));
        track
    };
    let _ = conn
        .events
        .send(ConnectionEvent::TrackReceived(track))
        .await;
    Ok(())
}

pub(super) fn on_sample(conn: &ConnShared, serial: u32, rtp_timestamp: u32, data: Bytes) {
    if let Some((_, feed)) = lock(&conn.remote_tracks).get(&serial) {
        feed.push(ReceivedSample {
            data,
            rtp_timestamp,
            lost_before: 0,
        });
    }
}

pub(super) async fn on_track_end(conn: &ConnShared, serial: u32) {
    let ended = lock(&conn.remote_tracks).remove(&serial);
    if let Some((id, _feed)) = ended {
        let _ = conn.events.send(ConnectionEvent::TrackEnded { id }).await;
    }
}
