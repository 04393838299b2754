//! Media checks of the conformance suite: samples arrive whole and in order, a track's source
//! can change, removal is seen, both sides adding tracks at once completes, and data channels
//! lose nothing meanwhile.

#![allow(clippy::indexing_slicing)]

use super::*;
use crate::media::{Codec, LocalTrack, ReceivedSample, RemoteTrack, Sample, TrackSpec};

/// Waits for the next remote track (other events are skipped).
pub async fn next_track<H: Harness>(side: &mut Side<H>) -> RemoteTrack {
    within("a remote track", async {
        loop {
            match side.events.recv().await {
                Some(ConnectionEvent::TrackReceived(track)) => return track,
                Some(_) => {}
                None => panic!("event stream ended before a track arrived"),
            }
        }
    })
    .await
}

/// Waits for the next track-ended event and returns its id (other events are skipped).
pub async fn next_ended<H: Harness>(side: &mut Side<H>) -> String {
    within("a track to end", async {
        loop {
            match side.events.recv().await {
                Some(ConnectionEvent::TrackEnded { id }) => return id,
                Some(_) => {}
                None => panic!("event stream ended before a track ended"),
            }
        }
    })
    .await
}

/// Sample `n` of source `source`: a recognizable body of `len` bytes.
fn frame(source: u8, n: usize, len: usize) -> Bytes {
    let mut body = vec![source ^ (n % 251) as u8; len.max(9)];
    body[0] = source;
    body[1..9].copy_from_slice(&(n as u64).to_be_bytes());
    Bytes::from(body)
}

/// Writes `count` samples of `source` to `track`, paced like live media.
async fn play(track: &LocalTrack, source: u8, first: usize, count: usize, sizes: &[usize]) {
    for n in first..first + count {
        let len = sizes[n % sizes.len()];
        let sample = Sample::new(frame(source, n, len), Duration::from_millis(20));
        within("write_sample", track.write_sample(sample))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
}

/// Reads `count` samples.
async fn collect(track: &RemoteTrack, count: usize) -> Vec<ReceivedSample> {
    within(&format!("{count} samples on track {}", track.id()), async {
        let mut samples = Vec::with_capacity(count);
        while samples.len() < count {
            match track.recv_sample().await {
                Some(sample) => samples.push(sample),
                None => panic!("track ended after {} of {count} samples", samples.len()),
            }
        }
        samples
    })
    .await
}

/// Checks `received` are exactly samples `first..` of `source`, in order, 20 ms apart.
fn check_samples(
    received: &[ReceivedSample],
    codec: Codec,
    source: u8,
    first: usize,
    sizes: &[usize],
) {
    let step = codec.ticks(Duration::from_millis(20));
    for (i, sample) in received.iter().enumerate() {
        let n = first + i;
        assert_eq!(
            sample.data,
            frame(source, n, sizes[n % sizes.len()]),
            "{codec} sample {n} differs"
        );
        assert_eq!(sample.lost_before, 0, "{codec} lost samples before {n}");
        if let Some(previous) = i.checked_sub(1).and_then(|p| received.get(p)) {
            assert_eq!(
                sample.rtp_timestamp.wrapping_sub(previous.rtp_timestamp),
                step,
                "{codec} timestamps are not 20 ms apart at {n}"
            );
        }
    }
}

/// Adds track `id` on `from`, plays five samples of `source` and checks they reach `to` as
/// the next remote track, whole.
async fn a_new_track_delivers<H: Harness>(
    from: &Side<H>,
    to: &mut Side<H>,
    id: &str,
    codec: Codec,
    source: u8,
    size: usize,
) {
    let track = from
        .conn
        .add_track(TrackSpec::new(id, codec))
        .await
        .unwrap();
    play(&track, source, 0, 5, &[size]).await;
    let remote = next_track(to).await;
    assert_eq!(remote.id(), id);
    check_samples(&collect(&remote, 5).await, codec, source, 0, &[size]);
}

/// Audio and video samples (video frames spanning many packets) arrive whole, in order and
/// 20 ms apart in RTP time; switching what feeds a track keeps the same remote track.
pub async fn tracks_carry_samples_intact<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let audio = within(
        "add audio",
        a.conn.add_track(TrackSpec::new("mic", Codec::Opus)),
    )
    .await
    .unwrap();
    let video = within(
        "add video",
        a.conn.add_track(TrackSpec::new("cam", Codec::Vp8)),
    )
    .await
    .unwrap();
    let audio_sizes = [40, 120, 160, 80];
    let video_sizes = [12_000, 900, 3_000, 25_000, 1_100];
    let send = async {
        tokio::join!(
            play(&audio, 1, 0, 30, &audio_sizes),
            play(&video, 2, 0, 30, &video_sizes),
        );
        // Another source feeds the same tracks.
        tokio::join!(
            play(&audio, 3, 30, 10, &audio_sizes),
            play(&video, 4, 30, 10, &video_sizes),
        );
    };
    let receive = async {
        let first = next_track(&mut b).await;
        let second = next_track(&mut b).await;
        let (remote_audio, remote_video) = if first.id() == "mic" {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(remote_audio.id(), "mic");
        assert_eq!(remote_audio.codec(), Codec::Opus);
        assert_eq!(remote_video.id(), "cam");
        assert_eq!(remote_video.codec(), Codec::Vp8);
        let (audio_in, video_in) =
            tokio::join!(collect(&remote_audio, 40), collect(&remote_video, 40));
        (remote_audio, remote_video, audio_in, video_in)
    };
    let ((), (remote_audio, remote_video, audio_in, video_in)) = tokio::join!(send, receive);
    check_samples(&audio_in[..30], Codec::Opus, 1, 0, &audio_sizes);
    check_samples(&audio_in[30..], Codec::Opus, 3, 30, &audio_sizes);
    check_samples(&video_in[..30], Codec::Vp8, 2, 0, &video_sizes);
    check_samples(&video_in[30..], Codec::Vp8, 4, 30, &video_sizes);
    assert_eq!(audio.stats().samples, 40);
    assert_eq!(remote_video.stats().samples, 40);
    assert_eq!(remote_audio.stats().samples_dropped, 0);
    // The source switch made no new track.
    assert!(
        !std::iter::from_fn(|| b.events.try_recv().ok())
            .any(|event| matches!(event, ConnectionEvent::TrackReceived(_))),
        "a new remote track appeared for the same track"
    );
}

/// A receiver's key frame requests reach the sender's track (coalesced while unread), an
/// audio track refuses them, and samples keep flowing meanwhile.
pub async fn keyframe_requests_reach_the_sender<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let video = within(
        "add video",
        a.conn.add_track(TrackSpec::new("cam", Codec::Vp8)),
    )
    .await
    .unwrap();
    let audio = within(
        "add audio",
        a.conn.add_track(TrackSpec::new("mic", Codec::Opus)),
    )
    .await
    .unwrap();
    play(&video, 1, 0, 3, &[5_000]).await;
    play(&audio, 2, 0, 3, &[100]).await;
    let mut remote_video = None;
    let mut remote_audio = None;
    for _ in 0..2 {
        let track = next_track(&mut b).await;
        match track.codec() {
            Codec::Vp8 => remote_video = Some(track),
            _ => remote_audio = Some(track),
        }
    }
    let (remote_video, remote_audio) = (remote_video.unwrap(), remote_audio.unwrap());
    assert!(
        matches!(
            remote_audio.request_keyframe(),
            Err(TransportError::InvalidTrack(_))
        ),
        "an audio track took a key frame request"
    );
    assert_eq!(video.stats().keyframe_requests, 0, "a request nobody made");
    // Each request answered before the next is made reaches the sender.
    for round in 1..=3u64 {
        remote_video.request_keyframe().unwrap();
        within("a key frame request", video.keyframe_requested()).await;
        // Two requests at once may arrive as one: wait for the count, not for two wakeups.
        assert!(video.stats().keyframe_requests >= round);
    }
    assert_eq!(remote_video.stats().keyframe_requests, 3);
    assert_eq!(
        audio.stats().keyframe_requests,
        0,
        "the audio track was asked"
    );
    // Samples still flow on the track that was asked.
    play(&video, 1, 3, 3, &[5_000]).await;
    check_samples(&collect(&remote_video, 6).await, Codec::Vp8, 1, 0, &[5_000]);
}

/// Removing a track ends it remotely (after its queued samples); writes to it fail; its id
/// cannot be reused; a new track works.
pub async fn removed_tracks_end_and_ids_are_not_reused<H: Harness>(harness: &H) {
    let (a, mut b) = connect_pair(harness).await;
    let track = a
        .conn
        .add_track(TrackSpec::new("one", Codec::Opus))
        .await
        .unwrap();
    play(&track, 1, 0, 3, &[100]).await;
    let remote = next_track(&mut b).await;
    check_samples(&collect(&remote, 3).await, Codec::Opus, 1, 0, &[100]);
    within("remove_track", a.conn.remove_track(&track))
        .await
        .unwrap();
    assert_eq!(next_ended(&mut b).await, "one");
    assert!(
        within("the ended track's end", remote.recv_sample())
            .await
            .is_none()
    );
    assert!(matches!(
        track
            .write_sample(Sample::new(vec![1, 2, 3], Duration::from_millis(20)))
            .await,
        Err(TransportError::InvalidTrack(_))
    ));
    // Removing twice is a no-op.
    a.conn.remove_track(&track).await.unwrap();
    assert!(matches!(
        a.conn.add_track(TrackSpec::new("one", Codec::Opus)).await,
        Err(TransportError::InvalidTrack(_))
    ));
    for bad in ["", "with space", "line\r\nbreak"] {
        assert!(matches!(
            a.conn.add_track(TrackSpec::new(bad, Codec::Vp8)).await,
            Err(TransportError::InvalidTrack(_))
        ));
    }
    a_new_track_delivers(&a, &mut b, "two", Codec::Vp8, 5, 5_000).await;
}

/// Both sides add tracks at the same moment (offers cross): every track is agreed and
/// carries its samples, and a reliable channel busy all the while loses nothing.
pub async fn tracks_added_on_both_sides_at_once<H: Harness>(harness: &H) {
    let (mut a, mut b) = connect_pair(harness).await;
    let (sender, receiver) = channel_pair(&a, &mut b, "busy", Reliability::ReliableOrdered).await;
    let messages = 400;
    let chatter = tokio::spawn(async move {
        for i in 0..messages {
            sender.send(numbered(i, 2_000)).await.unwrap();
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let listener = tokio::spawn(async move {
        for expected in 0..messages {
            let message = within("a channel message", receiver.recv()).await.unwrap();
            assert_eq!(number_of(&message), expected);
        }
    });
    // a-mic comes a moment later, while the collision is being resolved: it goes out in an
    // answer, which must be applied over there before its first sample leaves.
    let (from_a, from_b, second_from_a) = tokio::join!(
        a.conn.add_track(TrackSpec::new("a-cam", Codec::Vp8)),
        b.conn.add_track(TrackSpec::new("b-mic", Codec::Opus)),
        async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            a.conn.add_track(TrackSpec::new("a-mic", Codec::Opus)).await
        },
    );
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    let second_from_a = second_from_a.unwrap();
    tokio::join!(
        play(&from_a, 1, 0, 5, &[4_000]),
        play(&from_b, 2, 0, 5, &[90]),
        play(&second_from_a, 3, 0, 5, &[70]),
    );
    let mut at_b = [next_track(&mut b).await, next_track(&mut b).await];
    at_b.sort_by(|x, y| x.id().cmp(y.id()));
    assert_eq!(at_b[0].id(), "a-cam");
    check_samples(&collect(&at_b[0], 5).await, Codec::Vp8, 1, 0, &[4_000]);
    assert_eq!(at_b[1].id(), "a-mic");
    check_samples(&collect(&at_b[1], 5).await, Codec::Opus, 3, 0, &[70]);
    let at_a = next_track(&mut a).await;
    assert_eq!(at_a.id(), "b-mic");
    check_samples(&collect(&at_a, 5).await, Codec::Opus, 2, 0, &[90]);
    // A further track once everything settled.
    a_new_track_delivers(&a, &mut b, "a-screen", Codec::Vp8, 4, 9_000).await;
    within("the chatter", chatter).await.unwrap();
    within("the listener", listener).await.unwrap();
}
