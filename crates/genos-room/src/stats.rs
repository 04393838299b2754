//! Counters of a room and of each peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use genos_crypto::PeerId;
use genos_transport::ConnectionStats;

/// What a room has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomStats {
    /// Application messages sent (one per recipient).
    pub messages_sent: u64,
    /// Application messages received whole.
    pub messages_received: u64,
    /// Payload bytes sent (per recipient).
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Frames from peers rejected (unauthentic, malformed, too large, out of order, ...).
    pub frames_rejected: u64,
    /// Messages for channels nobody opened, dropped at the bound.
    pub unopened_dropped: u64,
    /// Control answers (pong, goodbye ack) dropped because the link's control queue was full.
    pub control_dropped: u64,
    /// Dial attempts started (as offerer or answerer).
    pub dials_started: u64,
    /// Dial attempts that failed or timed out.
    pub dials_failed: u64,
    /// Dial attempts the other side refused for now (all its half-open slots taken); each
    /// is retried within a second.
    pub dials_busy: u64,
    /// Peers ignored because the room was full or dialling was saturated.
    pub peers_refused: u64,
    /// Signaling messages ignored (undecodable, wrong protocol, not ours to answer).
    pub signals_ignored: u64,
    /// Messages sent on unreliable channels (one per recipient).
    pub datagrams_sent: u64,
    /// Messages received on unreliable channels.
    pub datagrams_received: u64,
    /// Unreliable messages that never arrived (gaps in the senders' numbering; a late
    /// arrival is taken back).
    pub datagrams_lost: u64,
    /// Unreliable messages dropped here: the channel's queue was full, or the room left.
    pub datagrams_dropped: u64,
    /// (Cells rooms) overlay frames handed to the application (chunks of messages, from any
    /// origin, through any path).
    pub mesh_delivered: u64,
    /// (Cells rooms) links crossed by those frames, summed: divided by `mesh_delivered`, the
    /// mean hop count.
    pub mesh_hops: u64,
    /// (Cells rooms) overlay frames dropped because a link's send queue was full (lazy
    /// repair recovers them from other peers).
    pub mesh_dropped: u64,
    /// (Cells rooms) messages lost here: partly received when their wait ran out or the
    /// reassembly bound was reached, or their channel's queue was full.
    pub mesh_lost: u64,
    /// (Cells rooms) chunks of directed messages this peer sent that were given up: their
    /// target did not acknowledge them within the overlay's `direct_give_up` (60 s), or
    /// newer ones pushed them out of what is kept for resending. The target may still have
    /// them (its acks may be what was lost).
    pub mesh_directed_failed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_rejected: AtomicU64,
    pub(crate) unopened_dropped: AtomicU64,
    pub(crate) control_dropped: AtomicU64,
    pub(crate) dials_started: AtomicU64,
    pub(crate) dials_failed: AtomicU64,
    pub(crate) dials_busy: AtomicU64,
    pub(crate) peers_refused: AtomicU64,
    pub(crate) signals_ignored: AtomicU64,
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) datagrams_received: AtomicU64,
    pub(crate) datagrams_lost: AtomicU64,
    pub(crate) datagrams_dropped: AtomicU64,
    pub(crate) mesh_delivered: AtomicU64,
    pub(crate) mesh_hops: AtomicU64,
    pub(crate) mesh_dropped: AtomicU64,
    pub(crate) mesh_lost: AtomicU64,
    pub(crate) mesh_directed_failed: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RoomStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RoomStats {
            messages_sent: get(&self.messages_sent),
            messages_received: get(&self.messages_received),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            frames_rejected: get(&self.frames_rejected),
            unopened_dropped: get(&self.unopened_dropped),
            control_dropped: get(&self.control_dropped),
            dials_started: get(&self.dials_started),
            dials_failed: get(&self.dials_failed),
            dials_busy: get(&self.dials_busy),
            peers_refused: get(&self.peers_refused),
            signals_ignored: get(&self.signals_ignored),
            datagrams_sent: get(&self.datagrams_sent),
            datagrams_received: get(&self.datagrams_received),
            datagrams_lost: get(&self.datagrams_lost),
            datagrams_dropped: get(&self.datagrams_dropped),
            mesh_delivered: get(&self.mesh_delivered),
            mesh_hops: get(&self.mesh_hops),
            mesh_dropped: get(&self.mesh_dropped),
            mesh_lost: get(&self.mesh_lost),
            mesh_directed_failed: get(&self.mesh_directed_failed),
        }
    }
}

/// One connected peer, as seen from here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// How long the link has been up.
    pub connected_for: Duration,
    /// The last round-trip time measured by [`crate::Room::ping`], else the transport's.
    pub rtt: Option<Duration>,
    /// Application messages sent to it.
    pub messages_sent: u64,
    /// Application messages received from it.
    pub messages_received: u64,
    /// The transport's counters for the connection.
    pub transport: ConnectionStats,
}

/// Per-link counters.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    /// Last ping RTT in microseconds (0 = none yet).
    pub(crate) rtt_micros: AtomicU64,
}

impl LinkCounters {
    pub(crate) fn info(
        &self,
        peer: PeerId,
        connected_for: Duration,
        transport: ConnectionStats,
    ) -> PeerInfo {
        let rtt = match self.rtt_micros.load(Ordering::Relaxed) {
            0 => transport.rtt,
            micros => Some(Duration::from_micros(micros)),
        };
        PeerInfo {
            peer,
            connected_for,
            rtt,
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            transport,
        }
    }
}
