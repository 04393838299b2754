//! What goes into the room machine and what comes out of it.

use std::time::Duration;

use bytes::Bytes;
use genos_crypto::PeerId;
use genos_transport::{ConnectionState, Role};

use crate::RoomEvent;
use crate::wire::SignalMessage;

/// Something that happened, fed to [`super::RoomMachine::handle`] with the time it is
/// handled at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// The peer announced itself on the room's topic with our protocol version.
    PeerSeen { peer: PeerId },
    /// (Cells rooms) the overlay no longer wants a link to the peer: close it and do not
    /// dial it again until it is wanted (seen or greeted) again.
    Unwanted { peer: PeerId },
    /// The signaling layer reports the peer gone from the topic.
    PeerGone { peer: PeerId },
    /// The peer said hello: it wants us (the lower id) to dial it.
    Hello { from: PeerId },
    /// The peer refused our attempt `dial` for now: all its half-open slots are taken.
    Busy { from: PeerId, dial: u64 },
    /// A transport signal (offer, answer, candidate) of attempt `dial` from the peer.
    TransportSignal {
        from: PeerId,
        dial: u64,
        payload: Bytes,
    },
    /// The connection of attempt `dial` exists: signals can be handed to it.
    Connected { peer: PeerId, dial: u64 },
    /// The connection of attempt `dial` could not be created.
    ConnectFailed { peer: PeerId, dial: u64 },
    /// The connection of attempt `dial` changed state.
    ConnectionState {
        peer: PeerId,
        dial: u64,
        state: ConnectionState,
    },
    /// (Answering side) the peer opened a transport channel labelled `label` on attempt
    /// `dial`.
    ChannelOpened {
        peer: PeerId,
        dial: u64,
        label: String,
    },
    /// (Dialling side) the link channel we opened on attempt `dial` is open (`opened`), or
    /// could not be opened.
    ChannelOffered {
        peer: PeerId,
        dial: u64,
        opened: bool,
    },
    /// (Dialling side) the unreliable channel we opened on link `dial` is open (`opened`),
    /// or could not be opened.
    DatagramsOffered {
        peer: PeerId,
        dial: u64,
        opened: bool,
    },
    /// The link of attempt `dial` last heard from its peer at this time (fed before each
    /// tick; a link whose reader waits on the application reports the current time).
    LinkHeard {
        peer: PeerId,
        dial: u64,
        at: std::time::Instant,
    },
    /// The peer said goodbye on link `dial`.
    LinkBye { peer: PeerId, dial: u64 },
    /// Link `dial` ended (its channel closed); `failed` when the connection failed.
    LinkEnded {
        peer: PeerId,
        dial: u64,
        failed: bool,
    },
    /// Time passed: check dial timeouts, the watchdog and cooldowns, start dials.
    Tick,
    /// The application leaves the room.
    Leave,
}

/// A counter of [`crate::RoomStats`] the machine moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Counter {
    DialsStarted,
    DialsFailed,
    DialsBusy,
    PeersRefused,
    SignalsIgnored,
}

/// What the machine decided; the driver carries it out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send `message` to `to` over signaling.
    Signal { to: PeerId, message: SignalMessage },
    /// Create the connection of attempt `dial` with `peer` in `role`; report
    /// [`Input::Connected`] or [`Input::ConnectFailed`]. The dialling side then opens the
    /// link channel and reports [`Input::ChannelOffered`].
    Connect { peer: PeerId, dial: u64, role: Role },
    /// Hand a transport signal to attempt `dial`'s connection (in order).
    HandleSignal {
        peer: PeerId,
        dial: u64,
        payload: Bytes,
    },
    /// Make the channel just reported for attempt `dial` the peer's link, and route the
    /// peer's frames through it.
    Establish { peer: PeerId, dial: u64 },
    /// (Dialling side) open link `dial`'s unreliable channel; report
    /// [`Input::DatagramsOffered`].
    OpenDatagrams { peer: PeerId, dial: u64 },
    /// Give link `dial` the unreliable channel just reported, or the one held for it.
    AttachDatagrams { peer: PeerId, dial: u64 },
    /// (Answering side) keep the unreliable channel just reported for attempt `dial` until
    /// its link is up: channels are separate SCTP streams, so the datagram channel can
    /// arrive before the link channel. Replaces one held before; dropped with the attempt.
    HoldDatagrams { peer: PeerId, dial: u64 },
    /// Close the channel just reported for attempt `dial`: it is not wanted.
    DropChannel { peer: PeerId, dial: u64 },
    /// Stop routing to attempt `dial`'s link and close its connection after `close_after`
    /// (so an acknowledgement can still leave).
    Retire {
        peer: PeerId,
        dial: u64,
        close_after: Duration,
    },
    /// Tell the application.
    Emit(RoomEvent),
    /// Move a counter by one.
    Count(Counter),
    /// Say goodbye on every link, leave signaling, close everything and stop.
    Leave,
}
