//! What goes into the overlay and what comes out of it.

use std::time::Instant;

use bytes::Bytes;

use crate::{MeshError, PeerKey};

/// A signaling topic peers announce on (a Nostr topic in real rooms). Peers listen to their
/// own cell's topic and the topics of the cells they open bridges to, never to every peer:
/// discovery load grows like the cell size, not the room size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum MeshTopic {
    /// The room-wide topic every peer listens to. Only cell leaders post there: each its
    /// cell's size once per census interval (the census), and cell 0's leader a beacon
    /// every `beacon_interval` with the room's (epoch, cell count). About C + 15
    /// messages a minute.
    Lobby,
    /// Where the members of `cell` (out of `cells`) announce themselves.
    Cell {
        /// The cell count this topic belongs to.
        cells: u32,
        /// The cell.
        cell: u32,
    },
}

/// Something that happened to the overlay: fed to [`Overlay::handle`](crate::Overlay::handle).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// Start (once). `cells_hint` is the room's cell count when the driver knows it (a
    /// beacon it already holds); otherwise the overlay listens on the lobby first.
    Start {
        /// The cell count, if known.
        cells_hint: Option<u32>,
    },
    /// `peer` announced itself on `topic` with its cell count `cells`.
    Announced {
        /// Who announced.
        peer: PeerKey,
        /// Where.
        topic: MeshTopic,
        /// The cell count the announcer uses.
        cells: u32,
        /// The epoch of the announcer's cell count (bumped at each resize; the highest
        /// (epoch, cells) heard on the lobby is the room's).
        epoch: u32,
        /// On the lobby: the size of the announcer's cell (the census); 0 elsewhere.
        count: u32,
    },
    /// A link to `peer` is open (after our [`Output::Connect`] or the peer's).
    LinkUp {
        /// The other end.
        peer: PeerKey,
    },
    /// `peer` said goodbye on `topic` (the signaling layer saw it leave the topic). Taken
    /// as leaving the room only on the peer's own cell topic of the current view (a peer
    /// also leaves its old cell's topic when the room resizes, and the topics of cells it
    /// stops bridging to): then it is dropped from the roster and a cell mate's roster
    /// naming it does not bring it back (for `peer_timeout`); its own announce or a link
    /// from it does.
    PeerLeft {
        /// Who left.
        peer: PeerKey,
        /// The topic it left.
        topic: MeshTopic,
    },
    /// The link to `peer` closed, failed, timed out, or could not be opened.
    LinkDown {
        /// The other end.
        peer: PeerKey,
    },
    /// A message arrived on the link from `from`.
    Received {
        /// The link's other end.
        from: PeerKey,
        /// The bytes.
        message: Bytes,
    },
    /// A timer asked for with [`Output::WakeAt`] fired. Extra ticks are harmless.
    Tick,
    /// Send a payload (with metadata) to every peer in the room.
    Broadcast {
        /// Application metadata, delivered with the payload.
        meta: Bytes,
        /// The payload (any bytes).
        payload: Bytes,
    },
    /// Send a payload to one peer, routed towards its cell; only that peer can open it.
    SendTo {
        /// The recipient.
        target: PeerKey,
        /// Application metadata.
        meta: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// Send a payload to several peers: one directed frame each, sealed for each target.
    /// At most `OverlayConfig::max_targets` targets; beyond that the command fails.
    SendToMany {
        /// The recipients.
        targets: Vec<PeerKey>,
        /// Application metadata.
        meta: Bytes,
        /// The payload.
        payload: Bytes,
    },
    /// Leave: close every link and topic.
    Leave,
}

/// What the driver must do, returned by [`Overlay::handle`](crate::Overlay::handle).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Output {
    /// Listen to announces on `topic`.
    Subscribe(MeshTopic),
    /// Stop listening on `topic`.
    Unsubscribe(MeshTopic),
    /// Announce this peer on `topic`, with its cell count.
    Announce {
        /// Where.
        topic: MeshTopic,
        /// The announcer's cell count.
        cells: u32,
        /// The epoch of that cell count.
        epoch: u32,
        /// On the lobby: the size of this peer's cell (it leads it); 0 elsewhere.
        count: u32,
    },
    /// Open a link to a peer (a no-op if one is open or opening).
    Connect(PeerKey),
    /// Close the link to a peer.
    Disconnect(PeerKey),
    /// Send bytes on the link to `to`.
    Send {
        /// The link's other end.
        to: PeerKey,
        /// The bytes.
        message: Bytes,
    },
    /// Feed [`Input::Tick`] at (or after) this instant, never before: each wake is asked
    /// for once, and a tick that comes early is taken for an extra one.
    WakeAt(Instant),
    /// A payload for the application.
    Deliver(Delivery),
    /// Something worth knowing.
    Event(OverlayEvent),
}

/// A payload that reached this peer, checked and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who sent it (signature checked).
    pub origin: PeerKey,
    /// The origin's number for it, unique per origin and kind: a broadcast's frame sequence
    /// number, or a directed payload's message number (the same in every resend of it).
    pub seq: u64,
    /// Links it crossed.
    pub hops: u8,
    /// Sent to this peer only.
    pub directed: bool,
    /// Came through lazy repair (pulled after the eager path missed this peer).
    pub repaired: bool,
    /// The metadata, as sent.
    pub meta: Bytes,
    /// The payload, as sent.
    pub payload: Bytes,
}

/// Why a frame was not delivered or forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The bytes are not a valid message.
    Malformed,
    /// Larger than the configured maximum.
    TooLarge,
    /// The signature is not the origin's.
    BadSignature,
    /// The body does not open.
    Unopenable,
    /// An id older than this peer can check: refused as a possible replay.
    TooOld,
    /// The TTL is exhausted or larger than any honest origin sets.
    BadTtl,
    /// A directed frame with no way towards its target.
    Unroutable,
}

/// Events about the overlay's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlayEvent {
    /// The room now has `cells` cells and this peer is in `cell`.
    CellsChanged {
        /// Cell count.
        cells: u32,
        /// This peer's cell.
        cell: u32,
    },
    /// A frame from `from` was dropped.
    Dropped {
        /// The link it came on (this peer itself for its own commands).
        from: PeerKey,
        /// Why.
        reason: DropReason,
    },
    /// A command could not be carried out.
    CommandFailed(MeshError),
    /// A directed payload was given up: its target did not acknowledge it within
    /// `direct_give_up`, or newer payloads pushed it out of the bounds on what is kept for
    /// resending. The target may still have received it (its acks may be what was lost).
    DirectFailed {
        /// Whom it was for.
        target: PeerKey,
        /// Its message number (see [`Delivery::seq`]).
        message: u64,
        /// Its metadata, as sent (so the sender can tell which of its payloads it was).
        meta: Bytes,
    },
}
