//! `genos media send` and `genos media recv`: media files as tracks of a room.
//!
//! The sender adds one track per file (IVF/VP8 or Ogg/Opus; the track's metadata is the
//! file name), paces each file at its own timestamps (optionally looping), and removes the
//! tracks when done. The receiver writes every track it gets to a file named after the
//! sending peer and the track id (`.ivf` or `.ogg`), finishing it when the track ends. Both
//! print a line per track every second: codec, samples, bitrate, losses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use genos::transport::media::TrackStats;
use genos::transport::media::files::{MediaFileError, MediaReader, MediaWriter};
use genos::{Codec, PeerId, RemoteTrack, Room, RoomError, RoomEvent, RoomTrack, TrackOptions};
use tokio::sync::Mutex;

/// What went wrong with a media command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        error: MediaFileError,
    },
    /// The room refused.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// The room ended before the work was done.
    #[error("the room ended")]
    RoomEnded,
}

fn file_error(path: &Path) -> impl FnOnce(MediaFileError) -> MediaError + '_ {
    move |error| MediaError::File {
        path: path.to_owned(),
        error,
    }
}

/// One track's figures for the live line and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackReport {
    /// A short name: the file (sender) or `peer/track` (receiver).
    pub name: String,
    /// The codec.
    pub codec: Codec,
    /// Samples (frames or Opus packets) sent or received.
    pub samples: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Samples lost on the way (receiver).
    pub lost: u64,
    /// Key frame requests the receivers made (sender; a file cannot answer them, genos has
    /// no encoder, so they are only counted).
    pub keyframe_requests: u64,
}

impl TrackReport {
    fn from_stats(name: String, codec: Codec, stats: TrackStats) -> Self {
        Self {
            name,
            codec,
            samples: stats.samples,
            bytes: stats.bytes,
            lost: stats.samples_lost + stats.samples_dropped,
            keyframe_requests: 0,
        }
    }

    /// The live line: codec, samples, mean bitrate over `elapsed`, losses.
    pub fn line(&self, elapsed: Duration) -> String {
        let kbits = self.bytes as f64 * 8.0 / 1000.0 / elapsed.as_secs_f64().max(1e-3);
        let mut line = format!(
            "{} [{}]: {} samples, {:.0} kbit/s, lost {}",
            self.name, self.codec, self.samples, kbits, self.lost
        );
        if self.keyframe_requests > 0 {
            line.push_str(&format!(", key frames asked {}", self.keyframe_requests));
        }
        line
    }
}

/// Sends each of `files` as a track of `room`, paced in real time (looping with `looping`),
/// reporting every second through `report`; removes the tracks at the end.
pub async fn send_files(
    room: &Room,
    files: &[PathBuf],
    looping: bool,
    report: impl Fn(&[TrackReport], Duration),
) -> Result<Vec<TrackReport>, MediaError> {
    let mut readers = Vec::new();
    for path in files {
        readers.push(MediaReader::open(path).map_err(file_error(path))?);
    }
    let mut tracks = Vec::new();
    for (path, reader) in files.iter().zip(&readers) {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let options = TrackOptions::new().with_metadata(name.clone().into_bytes());
        let track = room.add_track(reader.codec(), options).await?;
        tracks.push((name, track));
    }
    let start = Instant::now();
    let snapshot = |tracks: &[(String, RoomTrack)]| -> Vec<TrackReport> {
        tracks
            .iter()
            .map(|(name, track)| TrackReport {
                name: name.clone(),
                codec: track.codec(),
                samples: track.samples_written(),
                bytes: track.bytes_written(),
                lost: 0,
                keyframe_requests: track.keyframe_requests(),
            })
            .collect()
    };
    let playing = join_all(
        files
            .iter()
            .zip(readers)
            .zip(&tracks)
            .map(|((path, reader), (_, track))| play(path, reader, track, looping)),
    );
    tokio::pin!(playing);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let results = loop {
        tokio::select! {
            results = &mut playing => break results,
            _ = ticker.tick() => report(&snapshot(&tracks), start.elapsed()),
        }
    };
    let summary = snapshot(&tracks);
    for (_, track) in &tracks {
        room.remove_track(track).await?;
    }
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(summary)
}

/// Writes `reader`'s samples to `track` at the pace of their durations.
async fn play(
    path: &Path,
    mut reader: MediaReader,
    track: &RoomTrack,
    looping: bool,
) -> Result<(), MediaError> {
    let start = tokio::time::Instant::now();
    let mut media_time = Duration::ZERO;
    loop {
        let sample = match reader.next_sample().map_err(file_error(path))? {
            Some(sample) => sample,
            None if looping => {
                reader = MediaReader::open(path).map_err(file_error(path))?;
                continue;
            }
            None => return Ok(()),
        };
        tokio::time::sleep_until(start + media_time).await;
        media_time += sample.duration;
        track.write_sample(sample).await?;
    }
}

/// A track being received into a file.
struct Receiving {
    name: String,
    track: RemoteTrack,
    done: bool,
}

/// Receives every track sent in `room` into files in `out` until `tracks` of them have
/// ended (or forever with `None`), reporting every second through `report`.
pub async fn receive_tracks(
    room: &Room,
    out: &Path,
    tracks: Option<usize>,
    report: impl Fn(&[TrackReport], Duration),
) -> Result<Vec<(PathBuf, TrackReport)>, MediaError> {
    let mut events = room.events();
    let start = Instant::now();
    let receiving: Arc<Mutex<Vec<Receiving>>> = Arc::default();
    let mut writers = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let snapshot = |list: &[Receiving]| -> Vec<TrackReport> {
        list.iter()
            .map(|r| TrackReport::from_stats(r.name.clone(), r.track.codec(), r.track.stats()))
            .collect()
    };
    loop {
        let finished = receiving.lock().await.iter().filter(|r| r.done).count();
        if tracks.is_some_and(|wanted| finished >= wanted) {
            break;
        }
        tokio::select! {
            event = events.next() => match event {
                Some(RoomEvent::PeerTrack { peer, track, .. }) => {
                    let (path, writer) = open_output(out, peer, &track)?;
                    let name = format!("{}/{}", peer.short(), track.id());
                    receiving.lock().await.push(Receiving { name: name.clone(), track: track.clone(), done: false });
                    let list = receiving.clone();
                    writers.push(tokio::spawn(async move {
                        let result = record(&path, writer, &track).await;
                        if let Some(entry) = list.lock().await.iter_mut().find(|r| r.name == name) {
                            entry.done = true;
                        }
                        result.map(|()| (path, TrackReport::from_stats(name, track.codec(), track.stats())))
                    }));
                }
                Some(_) => {}
                None => return Err(MediaError::RoomEnded),
            },
            _ = ticker.tick() => report(&snapshot(&receiving.lock().await), start.elapsed()),
        }
    }
    let mut written = Vec::new();
    for writer in writers {
        if writer.is_finished() {
            match writer.await {
                Ok(result) => written.push(result?),
                Err(error) => tracing::warn!(%error, "a track writer failed"),
            }
        }
    }
    Ok(written)
}

fn open_output(
    out: &Path,
    peer: PeerId,
    track: &RemoteTrack,
) -> Result<(PathBuf, MediaWriter), MediaError> {
    let extension = match track.codec() {
        Codec::Vp8 => "ivf",
        _ => "ogg",
    };
    // Track ids are [A-Za-z0-9._-] (checked by the transport): safe in a file name.
    let path = out.join(format!("{}-{}.{extension}", peer.short(), track.id()));
    let writer = MediaWriter::create(&path, track.codec()).map_err(file_error(&path))?;
    Ok((path, writer))
}

async fn record(
    path: &Path,
    mut writer: MediaWriter,
    track: &RemoteTrack,
) -> Result<(), MediaError> {
    while let Some(sample) = track.recv_sample().await {
        writer.write_sample(&sample).map_err(file_error(path))?;
    }
    writer.finish().map_err(file_error(path))
}
