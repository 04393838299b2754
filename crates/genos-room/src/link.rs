//! One peer's link: a sealed, sequenced frame stream over one reliable transport channel,
//! with the tasks that read it and keep it alive.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use genos_crypto::{MAX_PLAINTEXT_LEN, OVERHEAD, PeerId};
use genos_transport::{
    Connection, ConnectionStats, DataChannel, LocalTrack, TrackSpec, TransportError,
};
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, oneshot, watch};

use crate::channel::{Message, ProgressFn};
use crate::datagram::DatagramIo;
use crate::reassembly::{Pushed, Reassembler};
use crate::registry::{Route, deliver};
use crate::shared::Shared;
use crate::stats::{LinkCounters, bump};
use crate::wire::{ChunkHeader, Control, DATAGRAM_SEQ_LEN, Frame, FrameCodec, TrackAnnounce};
use crate::{FrameError, Progress, RoomError, RoomEvent, lock};

/// Control answers queued per link (pongs, goodbye acks); more are dropped and counted.
const CONTROL_QUEUE: usize = 32;

/// What a link needs from its transport, without naming the backend's types.
pub(crate) trait LinkIo: Send + Sync {
    fn send(&self, frame: Bytes) -> BoxFuture<'_, Result<(), TransportError>>;
    fn max_message_size(&self) -> usize;
    fn stats(&self) -> BoxFuture<'_, ConnectionStats>;
    fn close(&self) -> BoxFuture<'_, ()>;
    fn add_track(&self, spec: TrackSpec) -> BoxFuture<'_, Result<LocalTrack, TransportError>>;
    fn remove_track<'a>(
        &'a self,
        track: &'a LocalTrack,
    ) -> BoxFuture<'a, Result<(), TransportError>>;
}

/// A connection and its room channel.
pub(crate) struct TransportIo<C: Connection> {
    pub(crate) connection: C,
    pub(crate) channel: C::Channel,
}

impl<C: Connection> LinkIo for TransportIo<C> {
    fn send(&self, frame: Bytes) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.channel.send(frame))
    }

    fn max_message_size(&self) -> usize {
        self.channel.max_message_size()
    }

    fn stats(&self) -> BoxFuture<'_, ConnectionStats> {
        Box::pin(self.connection.stats())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.connection.close())
    }

    fn add_track(&self, spec: TrackSpec) -> BoxFuture<'_, Result<LocalTrack, TransportError>> {
        Box::pin(self.connection.add_track(spec))
    }

    fn remove_track<'a>(
        &'a self,
        track: &'a LocalTrack,
    ) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(self.connection.remove_track(track))
    }
}

/// One connected peer.
pub(crate) struct Link {
    pub(crate) peer: PeerId,
    pub(crate) dial: u64,
    io: Box<dyn LinkIo>,
    codec: FrameCodec,
    /// The unreliable channel, once open.
    datagrams: std::sync::OnceLock<Box<dyn DatagramIo>>,
    next_datagram: AtomicU64,
    /// Sequence number of the next frame we send; held while a frame is sealed and handed
    /// to the transport so frames leave in sequence order.
    send_seq: AsyncMutex<u64>,
    /// Largest frame plaintext (transport message size less the seal).
    max_plain: usize,
    epoch: Instant,
    last_heard_ms: AtomicU64,
    last_sent_ms: AtomicU64,
    /// The reader waits for the application to take a message: the peer is not silent, we
    /// are not reading.
    reader_blocked: AtomicBool,
    control: mpsc::Sender<Control>,
    /// (Cells rooms) overlay messages waiting for the writer.
    mesh: mpsc::Sender<Bytes>,
    mesh_capacity: usize,
    pings: std::sync::Mutex<HashMap<u64, oneshot::Sender<()>>>,
    bye_acked: Notify,
    ended: watch::Sender<bool>,
    pub(crate) joined_at: Instant,
    pub(crate) counters: LinkCounters,
}

impl Link {
    pub(crate) fn new(
        peer: PeerId,
        dial: u64,
        io: Box<dyn LinkIo>,
        codec: FrameCodec,
        epoch: Instant,
        mesh_queue: usize,
    ) -> (Arc<Self>, LinkQueues) {
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let mesh_capacity = mesh_queue.max(1);
        let (mesh, mesh_rx) = mpsc::channel(mesh_capacity);
        let max_plain = io
            .max_message_size()
            .saturating_sub(OVERHEAD)
            .min(MAX_PLAINTEXT_LEN);
        let now = Instant::now();
        let link = Self {
            peer,
            dial,
            io,
            codec,
            datagrams: std::sync::OnceLock::new(),
            next_datagram: AtomicU64::new(0),
            send_seq: AsyncMutex::new(0),
            max_plain,
            epoch,
            last_heard_ms: AtomicU64::new(millis(epoch, now)),
            last_sent_ms: AtomicU64::new(millis(epoch, now)),
            reader_blocked: AtomicBool::new(false),
            control,
            mesh,
            mesh_capacity,
            pings: std::sync::Mutex::new(HashMap::new()),
            bye_acked: Notify::new(),
            ended: watch::Sender::new(false),
            joined_at: now,
            counters: LinkCounters::default(),
        };
        let queues = LinkQueues {
            control: control_rx,
            mesh: mesh_rx,
        };
        (Arc::new(link), queues)
    }

    /// Queues an overlay message for the writer; false (nothing queued) when the queue is
    /// full or the message does not fit one frame.
    pub(crate) fn queue_mesh(&self, message: Bytes) -> bool {
        message.len() < self.max_plain && self.mesh.try_send(message).is_ok()
    }

    /// Overlay messages waiting to be sent.
    pub(crate) fn mesh_backlog(&self) -> usize {
        self.mesh_capacity.saturating_sub(self.mesh.capacity())
    }

    /// The most overlay messages the link queues.
    pub(crate) fn mesh_capacity(&self) -> usize {
        self.mesh_capacity
    }

    async fn send_mesh(&self, message: &[u8]) -> Result<(), RoomError> {
        self.send_sealed(|seq| self.codec.seal_mesh(seq, message))
            .await
    }

    async fn send_sealed(
        &self,
        seal: impl FnOnce(u64) -> Result<Bytes, RoomError>,
    ) -> Result<(), RoomError> {
        let mut seq = self.send_seq.lock().await;
        let frame = seal(*seq)?;
        *seq += 1;
        self.io.send(frame).await?;
        self.last_sent_ms
            .store(millis(self.epoch, Instant::now()), Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn codec(&self) -> &FrameCodec {
        &self.codec
    }

    /// The peer was heard now (a datagram counts as much as a frame).
    pub(crate) fn heard(&self) {
        self.last_heard_ms
            .store(millis(self.epoch, Instant::now()), Ordering::Relaxed);
    }

    /// Gives the link its unreliable channel; false if it has one already.
    pub(crate) fn attach_datagrams(&self, io: Box<dyn DatagramIo>) -> bool {
        self.datagrams.set(io).is_ok()
    }

    /// Sends one message of an unreliable channel as one sealed datagram. It is refused if it
    /// does not fit one; once handed to the transport it may be lost.
    pub(crate) async fn send_datagram(
        &self,
        channel: &str,
        message: u64,
        payload: &Bytes,
        meta: Option<&[u8]>,
    ) -> Result<(), RoomError> {
        let io = self
            .datagrams
            .get()
            .ok_or(RoomError::NoUnreliableLink(self.peer))?;
        let header = FrameCodec::encode_datagram_header(channel, message, meta)?;
        let limit = io
            .max_message_size()
            .saturating_sub(OVERHEAD + DATAGRAM_SEQ_LEN + header.len())
            .min(MAX_PLAINTEXT_LEN.saturating_sub(header.len()));
        if payload.len() > limit {
            return Err(RoomError::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let seq = self.next_datagram.fetch_add(1, Ordering::Relaxed);
        let frame = self.codec.seal_datagram(seq, &header, payload)?;
        io.send(frame).await?;
        Ok(())
    }

    pub(crate) async fn send_control(&self, control: Control) -> Result<(), RoomError> {
        self.send_sealed(|seq| self.codec.seal_control(seq, control))
            .await
    }

    /// Announces a media track (id, codec, metadata) before the transport adds it.
    pub(crate) async fn send_track(&self, track: &TrackAnnounce) -> Result<(), RoomError> {
        self.send_sealed(|seq| self.codec.seal_track(seq, track))
            .await
    }

    /// Adds a media track to this link's connection.
    pub(crate) async fn add_track(&self, spec: TrackSpec) -> Result<LocalTrack, RoomError> {
        Ok(self.io.add_track(spec).await?)
    }

    /// Removes a media track from this link's connection.
    pub(crate) async fn remove_track(&self, track: &LocalTrack) -> Result<(), RoomError> {
        Ok(self.io.remove_track(track).await?)
    }

    /// Seals `plain` as the next frame whatever it holds: lets tests send a frame the peer
    /// can authenticate but not read.
    #[cfg(feature = "testing")]
    pub(crate) async fn send_plain(&self, plain: Bytes) -> Result<(), RoomError> {
        self.send_sealed(|seq| self.codec.seal_plain(seq, &plain))
            .await
    }

    /// Sends raw bytes as the next frame, unsealed: lets tests act as a hostile peer.
    #[cfg(feature = "testing")]
    pub(crate) async fn send_raw(&self, frame: Bytes) -> Result<(), RoomError> {
        let _seq = self.send_seq.lock().await;
        self.io.send(frame).await?;
        Ok(())
    }

    /// Sends one application message in as many chunks as the transport needs.
    pub(crate) async fn send_message(
        &self,
        channel: &str,
        message: u64,
        payload: &Bytes,
        meta: Option<&[u8]>,
        progress: Option<&ProgressFn>,
    ) -> Result<(), RoomError> {
        let total = payload.len();
        let mut offset = 0;
        loop {
            let header = ChunkHeader {
                channel,
                message,
                offset: offset as u64,
                total: total as u64,
                meta: if offset == 0 { meta } else { None },
            };
            let encoded = FrameCodec::encode_chunk_header(header)?;
            let room = self.max_plain.saturating_sub(encoded.len());
            if room == 0 {
                return Err(RoomError::MetadataTooLarge {
                    size: meta.map_or(0, <[u8]>::len),
                    limit: self.max_plain,
                });
            }
            let end = offset + room.min(total - offset);
            let data = payload.get(offset..end).unwrap_or_default();
            self.send_sealed(|seq| self.codec.seal_chunk(seq, &encoded, data))
                .await?;
            offset = end;
            if let Some(progress) = progress {
                progress(Progress {
                    peer: self.peer,
                    message,
                    done: offset as u64,
                    total: total as u64,
                });
            }
            if offset >= total {
                break;
            }
        }
        bump(&self.counters.messages_sent, 1);
        Ok(())
    }

    /// Measures the round trip of a ping frame.
    pub(crate) async fn ping(
        &self,
        max_pending: usize,
        wait: Duration,
    ) -> Result<Duration, RoomError> {
        let nonce: u64 = rand::random();
        let (answer, answered) = oneshot::channel();
        {
            let mut pings = lock(&self.pings);
            if pings.len() >= max_pending {
                return Err(RoomError::TooManyPings(self.peer));
            }
            pings.insert(nonce, answer);
        }
        let start = Instant::now();
        let result = match self.send_control(Control::Ping(nonce)).await {
            Ok(()) => match tokio::time::timeout(wait, answered).await {
                Ok(Ok(())) => Ok(start.elapsed()),
                _ => Err(RoomError::NoAnswer(self.peer)),
            },
            Err(error) => Err(error),
        };
        lock(&self.pings).remove(&nonce);
        if let Ok(rtt) = result {
            let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            self.counters.rtt_micros.store(micros, Ordering::Relaxed);
        }
        result
    }

    /// Says goodbye and waits (up to `wait`) for the peer to confirm it read everything
    /// before it.
    pub(crate) async fn goodbye(&self, wait: Duration) {
        let acked = self.bye_acked.notified();
        if self.send_control(Control::Bye).await.is_ok() {
            let _ = tokio::time::timeout(wait, acked).await;
        }
    }

    fn queue_control(&self, control: Control, shared: &Shared) {
        if self.control.try_send(control).is_err() {
            bump(&shared.counters.control_dropped, 1);
        }
    }

    /// When the peer was last heard; `now` while we are the ones not reading (the peer is
    /// not silent, it is held back).
    pub(crate) fn last_heard(&self, now: Instant) -> Instant {
        if self.reader_blocked.load(Ordering::Relaxed) {
            return now;
        }
        let heard = self.last_heard_ms.load(Ordering::Relaxed);
        self.epoch + Duration::from_millis(heard)
    }

    pub(crate) async fn stats(&self) -> ConnectionStats {
        self.io.stats().await
    }

    /// Stops the link's tasks and closes its connection.
    pub(crate) async fn close(&self) {
        self.ended.send_replace(true);
        self.io.close().await;
    }
}

fn millis(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// What a link's writer sends besides heartbeats.
pub(crate) struct LinkQueues {
    control: mpsc::Receiver<Control>,
    mesh: mpsc::Receiver<Bytes>,
}

/// Sends queued control answers and overlay messages, and a heartbeat whenever the link
/// has been quiet.
pub(crate) async fn write_link(link: Arc<Link>, queues: LinkQueues, heartbeat: Duration) {
    let LinkQueues {
        mut control,
        mut mesh,
    } = queues;
    let mut ended = link.ended.subscribe();
    let mut beat = tokio::time::interval(heartbeat.max(Duration::from_millis(10)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = async { ended.wait_for(|ended| *ended).await.map(|_| ()) } => break,
            next = control.recv() => {
                let Some(next) = next else { break };
                if link.send_control(next).await.is_err() {
                    break;
                }
            }
            Some(message) = mesh.recv() => {
                if link.send_mesh(&message).await.is_err() {
                    break;
                }
            }
            _ = beat.tick() => {
                let quiet = millis(link.epoch, Instant::now())
                    .saturating_sub(link.last_sent_ms.load(Ordering::Relaxed));
                if Duration::from_millis(quiet) >= heartbeat / 2
                    && link.send_control(Control::Heartbeat).await.is_err()
                {
                    break;
                }
            }
        }
    }
}

/// What a link's reader tells the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReaderNote {
    /// The peer said goodbye.
    Bye,
    /// The channel ended.
    Ended,
    /// The peer announced a media track.
    Track(TrackAnnounce),
}

/// Reads, opens and dispatches the peer's frames until the channel ends.
pub(crate) async fn read_link<C: DataChannel>(
    link: Arc<Link>,
    channel: C,
    shared: Arc<Shared>,
    notes: mpsc::Sender<(PeerId, u64, ReaderNote)>,
) {
    let limits = shared.limits;
    let mut reassembler = Reassembler::new(
        limits.max_partial_messages,
        limits.max_partial_bytes,
        limits.max_message_size,
    );
    let mut seq = 0u64;
    while let Some(sealed) = channel.recv().await {
        let frame = match link.codec.open(seq, sealed) {
            Ok(frame) => {
                seq += 1;
                frame
            }
            Err(error) => {
                // A frame that authenticated took its place in the sequence even if it
                // cannot be read (a newer peer's frame kind): the next one is sealed at the
                // next number. Only a frame that did not open leaves the number as it was.
                if error != FrameError::Unauthentic {
                    seq += 1;
                }
                reject(&shared, link.peer, error);
                continue;
            }
        };
        link.last_heard_ms
            .store(millis(link.epoch, Instant::now()), Ordering::Relaxed);
        match frame {
            Frame::Heartbeat => {}
            Frame::Ping(nonce) => link.queue_control(Control::Pong(nonce), &shared),
            Frame::Pong(nonce) => {
                if let Some(answer) = lock(&link.pings).remove(&nonce) {
                    let _ = answer.send(());
                }
            }
            Frame::Bye => {
                link.queue_control(Control::ByeAck, &shared);
                let _ = notes.send((link.peer, link.dial, ReaderNote::Bye)).await;
            }
            Frame::ByeAck => link.bye_acked.notify_one(),
            Frame::Track(announce) => {
                let _ = notes
                    .send((link.peer, link.dial, ReaderNote::Track(announce)))
                    .await;
            }
            Frame::Mesh(message) => match shared.mesh_inbox() {
                // Waits while the driver is behind: backpressure to the peer.
                Some(inbox) => {
                    let _ = inbox.send((link.peer, message)).await;
                }
                None => reject(
                    &shared,
                    link.peer,
                    FrameError::Malformed("overlay message in a full-mesh room".into()),
                ),
            },
            Frame::Chunk(chunk) => match reassembler.push(chunk) {
                Ok(Pushed::Complete(done)) => {
                    let message = Message {
                        from: link.peer,
                        payload: done.payload,
                        meta: done.meta,
                    };
                    bump(&link.counters.messages_received, 1);
                    bump(&shared.counters.messages_received, 1);
                    bump(
                        &shared.counters.bytes_received,
                        message.payload.len() as u64,
                    );
                    if done.chunked {
                        if let Some(progress) = shared.registry().progress(&done.channel) {
                            let total = message.payload.len() as u64;
                            let _ = progress.try_send(Progress {
                                peer: link.peer,
                                message: done.message,
                                done: total,
                                total,
                            });
                        }
                    }
                    hand_over(&link, &shared, &done.channel, message).await;
                }
                Ok(Pushed::Partial {
                    channel,
                    message,
                    received,
                    total,
                }) => {
                    if let Some(progress) = shared.registry().progress(&channel) {
                        let _ = progress.try_send(Progress {
                            peer: link.peer,
                            message,
                            done: received,
                            total,
                        });
                    }
                }
                Err(error) => reject(&shared, link.peer, error),
            },
        }
    }
    let _ = notes.send((link.peer, link.dial, ReaderNote::Ended)).await;
}

async fn hand_over(link: &Link, shared: &Shared, channel: &str, message: Message) {
    let mut message = message;
    // Twice at most: a channel dropped while we waited sends the message to the unopened
    // buffer on the second pass.
    for _ in 0..2 {
        let route = shared.registry().route(channel, &message);
        match route {
            Route::Open { sender, budget } => {
                link.reader_blocked.store(true, Ordering::Relaxed);
                let result =
                    deliver(sender, budget, message, shared.limits.channel_queue_bytes).await;
                link.reader_blocked.store(false, Ordering::Relaxed);
                match result {
                    Ok(()) => return,
                    Err(back) => message = back,
                }
            }
            Route::Kept => return,
            Route::Dropped => break,
        }
    }
    bump(&shared.counters.unopened_dropped, 1);
}

/// Counts and reports a frame or datagram from `peer` that was refused; the link goes on.
pub(crate) fn reject(shared: &Shared, peer: PeerId, error: FrameError) {
    tracing::debug!(peer = %peer.short(), %error, "rejected a frame");
    bump(&shared.counters.frames_rejected, 1);
    shared.emit(RoomEvent::FrameRejected { peer, error });
}
