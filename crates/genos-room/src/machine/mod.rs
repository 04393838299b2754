//! The room as a state machine, sans IO: every decision of a room in one type.
//!
//! [`RoomMachine::handle`] takes an [`Input`] (a signal heard, a transport event, a link
//! note, an application command, a tick) and the time, and returns [`Action`]s (dial, hand a
//! signal to a connection, make or retire a link, tell the application, count). It owns no
//! socket, task or clock, and draws dial ids from a seeded generator, so tests play hours of
//! room life in milliseconds and replay it exactly. The async driver (`driver.rs`) feeds it
//! and carries its actions out.
//!
//! What it decides:
//! - **who dials**: the lower id offers ([`crate::dial_role`]); the other side greets a
//!   newcomer with a hello so it is dialled at once, not at the next announcement;
//! - **when**: within the half-open budget and the room size ([`DialPlanner`]); a refused
//!   attempt is answered `Busy` so the dialler retries in well under a second; a failed or
//!   timed-out attempt is retried after a cooldown on its own (doubling, at most
//!   [`crate::dial::MAX_AUTO_RETRIES`] times), not at the peer's next announcement;
//! - **which attempt is current**: every attempt carries an id; signals of another id start
//!   a new attempt (replacing the old) or are ignored; signals that arrive before their
//!   connection exists wait, within [`MAX_EARLY_SIGNALS`];
//! - **links**: which channel becomes a peer's link (and so where its frames go), when a
//!   link is retired (goodbye, failure, the watchdog's [`RoomLimits::peer_timeout`]);
//! - **leaving**: after [`Input::Leave`] nothing else is decided.
//!
//! Bounds: peers tracked are bounded by [`RoomLimits::max_peers`] (planner, attempts),
//! hellos remembered by twice that, early signals per attempt by [`MAX_EARLY_SIGNALS`]; the
//! actions of one input are bounded by the peers it touches.

mod io;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use genos_crypto::PeerId;
use genos_transport::{ConnectionState, Role};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::dial::{DialPlanner, Incoming, dial_role};
use crate::wire::{DATAGRAM_LABEL, LINK_LABEL, SignalMessage};
use crate::{LeaveReason, RoomEvent, RoomLimits};

pub(crate) use io::{Action, Counter, Input};

/// An answering peer repeats its hello to the same peer at most this often.
pub(crate) const HELLO_INTERVAL: Duration = Duration::from_secs(2);
/// Transport signals kept for an attempt whose connection is still being created; more
/// are dropped and counted (a real offer and its candidates are far fewer).
pub(crate) const MAX_EARLY_SIGNALS: usize = 64;
/// A dialler refused as busy, or whose offer went unanswered, retries after a random wait in
/// this range (spreads the retries of many diallers).
const QUICK_RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_millis(800));

#[derive(Debug)]
enum Stage {
    /// The connection is being created; signals wait here.
    Connecting { early: Vec<Bytes> },
    /// The connection exists; the link channel is not open yet.
    Ready,
    /// The link is up; last heard from the peer at `heard`.
    Linked { heard: Instant },
}

#[derive(Debug)]
struct Attempt {
    dial: u64,
    role: Role,
    stage: Stage,
    started: Instant,
    /// The peer sent a signal of this attempt (for an answering side, its offer).
    heard_back: bool,
    /// (Answering side) the unreliable channel came before the link channel; the driver
    /// holds it until the link is up.
    datagrams_held: bool,
}

impl Attempt {
    fn linked(&self) -> bool {
        matches!(self.stage, Stage::Linked { .. })
    }
}

/// Every decision of one room; see the module docs.
#[derive(Debug)]
pub(crate) struct RoomMachine {
    local: PeerId,
    limits: RoomLimits,
    planner: DialPlanner,
    attempts: HashMap<PeerId, Attempt>,
    hellos: HashMap<PeerId, Instant>,
    /// The last attempt refused as busy, per peer, so one attempt's many signals get one
    /// answer.
    busy_told: HashMap<PeerId, u64>,
    rng: SmallRng,
    left: bool,
    out: Vec<Action>,
}

impl RoomMachine {
    /// A room of `local` keeping `limits`; `seed` drives dial ids and retry jitter.
    pub(crate) fn new(local: PeerId, limits: RoomLimits, seed: u64) -> Self {
        Self {
            local,
            limits,
            planner: DialPlanner::new(
                local,
                limits.max_peers,
                limits.max_half_open_dials,
                limits.dial_cooldown,
                limits.dial_timeout,
            ),
            attempts: HashMap::new(),
            hellos: HashMap::new(),
            busy_told: HashMap::new(),
            rng: SmallRng::seed_from_u64(seed),
            left: false,
            out: Vec::new(),
        }
    }

    /// Handles one input at `now`; returns what to do, in order.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        if !self.left {
            self.on_input(input, now);
        }
        std::mem::take(&mut self.out)
    }

    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::PeerSeen { peer } => self.noticed(peer, now),
            Input::Hello { from } => {
                if dial_role(&self.local, &from) == Some(Role::Offerer) {
                    self.noticed(from, now);
                } else {
                    self.count(Counter::SignalsIgnored);
                }
            }
            Input::PeerGone { peer } => self.on_gone(peer),
            Input::Unwanted { peer } => self.on_unwanted(peer, now),
            Input::Busy { from, dial } => self.on_busy(from, dial, now),
            Input::TransportSignal {
                from,
                dial,
                payload,
            } => self.on_transport_signal(from, dial, payload, now),
            Input::Connected { peer, dial } => self.on_connected(peer, dial),
            Input::ConnectFailed { peer, dial } => {
                let cause = "connection not created";
                self.end(peer, dial, LeaveReason::Failed, cause, Duration::ZERO, now);
            }
            Input::ConnectionState { peer, dial, state } => {
                if state.is_terminal() {
                    let (reason, cause) = match state {
                        ConnectionState::Closed => (LeaveReason::Left, "connection closed"),
                        _ => (LeaveReason::Failed, "connection failed"),
                    };
                    self.end(peer, dial, reason, cause, Duration::ZERO, now);
                }
            }
            Input::ChannelOpened { peer, dial, label } => {
                let answering = self
                    .attempts
                    .get(&peer)
                    .filter(|a| a.dial == dial && a.role == Role::Answerer);
                match (answering.map(Attempt::linked), label.as_str()) {
                    (Some(false), LINK_LABEL) => self.establish(peer, dial, now),
                    (Some(true), DATAGRAM_LABEL) => {
                        self.out.push(Action::AttachDatagrams { peer, dial });
                    }
                    (Some(false), DATAGRAM_LABEL) => {
                        if let Some(attempt) = self.attempts.get_mut(&peer) {
                            attempt.datagrams_held = true;
                        }
                        self.out.push(Action::HoldDatagrams { peer, dial });
                    }
                    _ => self.out.push(Action::DropChannel { peer, dial }),
                }
            }
            Input::DatagramsOffered { peer, dial, opened } => {
                let linked = self
                    .attempts
                    .get(&peer)
                    .is_some_and(|a| a.dial == dial && a.role == Role::Offerer && a.linked());
                match (linked, opened) {
                    (true, true) => self.out.push(Action::AttachDatagrams { peer, dial }),
                    (false, true) => self.out.push(Action::DropChannel { peer, dial }),
                    // The link works without it; unreliable sends to this peer are refused.
                    (_, false) => {}
                }
            }
            Input::ChannelOffered { peer, dial, opened } => {
                let expected = self
                    .attempts
                    .get(&peer)
                    .is_some_and(|a| a.dial == dial && a.role == Role::Offerer && !a.linked());
                match (expected, opened) {
                    (true, true) => self.establish(peer, dial, now),
                    (false, true) => self.out.push(Action::DropChannel { peer, dial }),
                    (true, false) => {
                        let cause = "link channel did not open";
                        self.end(peer, dial, LeaveReason::Failed, cause, Duration::ZERO, now);
                    }
                    (false, false) => {}
                }
            }
            Input::LinkHeard { peer, dial, at } => {
                if let Some(Attempt {
                    dial: current,
                    stage: Stage::Linked { heard },
                    ..
                }) = self.attempts.get_mut(&peer)
                {
                    if *current == dial && at > *heard {
                        *heard = at;
                    }
                }
            }
            // Keep the connection a little so our acknowledgement gets out; the leaving
            // side closes it.
            Input::LinkBye { peer, dial } => {
                let linger = self.limits.leave_timeout;
                self.end(peer, dial, LeaveReason::Left, "goodbye", linger, now);
            }
            Input::LinkEnded { peer, dial, failed } => {
                let reason = if failed {
                    LeaveReason::Failed
                } else {
                    LeaveReason::Left
                };
                self.end(peer, dial, reason, "link ended", Duration::ZERO, now);
            }
            Input::Tick => self.on_tick(now),
            Input::Leave => {
                self.left = true;
                self.out.push(Action::Leave);
            }
        }
    }

    /// A peer announced itself or said hello.
    fn noticed(&mut self, peer: PeerId, now: Instant) {
        match dial_role(&self.local, &peer) {
            Some(Role::Offerer) => {
                if self.planner.seen(peer, now) {
                    self.start_dials(now);
                } else {
                    self.count(Counter::PeersRefused);
                }
            }
            Some(Role::Answerer) if !self.attempts.contains_key(&peer) => self.hello(peer, now),
            Some(Role::Answerer) | None => {}
        }
    }

    /// Asks `peer` (a lower id) to dial us, at most once per [`HELLO_INTERVAL`].
    fn hello(&mut self, peer: PeerId, now: Instant) {
        let recent = |at: &Instant| now.saturating_duration_since(*at) < HELLO_INTERVAL;
        if self.hellos.get(&peer).is_some_and(recent) {
            return;
        }
        let cap = self.limits.max_peers.saturating_mul(2).max(1);
        if self.hellos.len() >= cap {
            self.hellos.retain(|_, at| recent(at));
            if self.hellos.len() >= cap {
                // A burst of newcomers: the rest say hello at their next sighting.
                self.count(Counter::PeersRefused);
                return;
            }
        }
        self.hellos.insert(peer, now);
        self.out.push(Action::Signal {
            to: peer,
            message: SignalMessage::Hello,
        });
    }

    fn on_gone(&mut self, peer: PeerId) {
        self.hellos.remove(&peer);
        self.busy_told.remove(&peer);
        match self.attempts.get(&peer) {
            // A linked peer leaves through its link (goodbye, end or watchdog).
            Some(attempt) if attempt.linked() => {}
            Some(attempt) => {
                let dial = attempt.dial;
                self.attempts.remove(&peer);
                self.planner.gone(&peer);
                self.retire(peer, dial, false, LeaveReason::Left, Duration::ZERO);
            }
            None => {
                self.planner.gone(&peer);
            }
        }
    }

    /// The overlay closed its link to `peer` (or gave up opening it).
    fn on_unwanted(&mut self, peer: PeerId, now: Instant) {
        self.hellos.remove(&peer);
        self.busy_told.remove(&peer);
        match self.attempts.get(&peer).map(|a| a.dial) {
            Some(dial) => {
                let cause = "not wanted by the overlay";
                self.end(peer, dial, LeaveReason::Left, cause, Duration::ZERO, now);
            }
            None => {
                self.planner.gone(&peer);
            }
        }
    }

    fn on_busy(&mut self, peer: PeerId, dial: u64, now: Instant) {
        let ours = self
            .attempts
            .get(&peer)
            .is_some_and(|a| a.dial == dial && a.role == Role::Offerer && !a.linked());
        if !ours {
            self.count(Counter::SignalsIgnored);
            return;
        }
        self.count(Counter::DialsBusy);
        self.retry_soon(peer, dial, false, now);
    }

    /// Abandons attempt `dial` (not linked) and dials `peer` again after a short random
    /// wait; `failed` counts it against the retry budget.
    fn retry_soon(&mut self, peer: PeerId, dial: u64, failed: bool, now: Instant) {
        self.attempts.remove(&peer);
        let wait = self.rng.random_range(QUICK_RETRY.0..=QUICK_RETRY.1);
        self.planner.retry_at(peer, dial, now + wait, failed);
        self.retire(peer, dial, false, LeaveReason::Failed, Duration::ZERO);
    }

    fn on_transport_signal(&mut self, from: PeerId, dial: u64, payload: Bytes, now: Instant) {
        if !self.current(&from, dial) {
            // A new attempt from the peer that dials us (or one we must refuse).
            match self.planner.incoming(from, dial, now) {
                Incoming::Accept { .. } => {
                    if let Some(old) = self.attempts.remove(&from) {
                        self.retire(
                            from,
                            old.dial,
                            old.linked(),
                            LeaveReason::Failed,
                            Duration::ZERO,
                        );
                    }
                    self.busy_told.remove(&from);
                    self.start_attempt(from, dial, Role::Answerer, now);
                }
                Incoming::Busy => {
                    self.count(Counter::PeersRefused);
                    if self.busy_told.get(&from) != Some(&dial) {
                        if self.busy_told.len() >= self.limits.max_peers.saturating_mul(2) {
                            self.busy_told.clear();
                        }
                        self.busy_told.insert(from, dial);
                        self.out.push(Action::Signal {
                            to: from,
                            message: SignalMessage::Busy { dial },
                        });
                    }
                    return;
                }
                Incoming::Current | Incoming::Refuse => {
                    self.count(Counter::SignalsIgnored);
                    return;
                }
            }
        }
        let Some(attempt) = self.attempts.get_mut(&from) else {
            return;
        };
        attempt.heard_back = true;
        match &mut attempt.stage {
            Stage::Connecting { early } => {
                if early.len() < MAX_EARLY_SIGNALS {
                    early.push(payload);
                } else {
                    self.count(Counter::SignalsIgnored);
                }
            }
            Stage::Ready | Stage::Linked { .. } => self.out.push(Action::HandleSignal {
                peer: from,
                dial,
                payload,
            }),
        }
    }

    fn on_connected(&mut self, peer: PeerId, dial: u64) {
        match self.attempts.get_mut(&peer) {
            Some(attempt) if attempt.dial == dial => {
                // Only a connecting attempt moves on; a repeated report changes nothing.
                if let Stage::Connecting { early } = &mut attempt.stage {
                    let early = std::mem::take(early);
                    attempt.stage = Stage::Ready;
                    self.out
                        .extend(early.into_iter().map(|payload| Action::HandleSignal {
                            peer,
                            dial,
                            payload,
                        }));
                }
            }
            // Replaced or abandoned while the connection was being created.
            _ => self.out.push(Action::Retire {
                peer,
                dial,
                close_after: Duration::ZERO,
            }),
        }
    }

    fn start_dials(&mut self, now: Instant) {
        loop {
            let dial = self.rng.random::<u64>();
            let Some(peer) = self.planner.next_dial(now, dial) else {
                return;
            };
            self.start_attempt(peer, dial, Role::Offerer, now);
        }
    }

    /// Starts attempt `dial` with `peer`; the planner already counts it as dialling.
    fn start_attempt(&mut self, peer: PeerId, dial: u64, role: Role, now: Instant) {
        self.count(Counter::DialsStarted);
        self.attempts.insert(
            peer,
            Attempt {
                dial,
                role,
                stage: Stage::Connecting { early: Vec::new() },
                started: now,
                heard_back: false,
                datagrams_held: false,
            },
        );
        self.out.push(Action::Connect { peer, dial, role });
    }

    fn establish(&mut self, peer: PeerId, dial: u64, now: Instant) {
        if !self.planner.linked(peer, dial) {
            self.out.push(Action::DropChannel { peer, dial });
            return;
        }
        if let Some(attempt) = self.attempts.get_mut(&peer) {
            attempt.stage = Stage::Linked { heard: now };
        }
        self.hellos.remove(&peer);
        self.out.push(Action::Establish { peer, dial });
        if self
            .attempts
            .get(&peer)
            .is_some_and(|a| a.role == Role::Answerer && a.datagrams_held)
        {
            self.out.push(Action::AttachDatagrams { peer, dial });
        }
        if self
            .attempts
            .get(&peer)
            .is_some_and(|a| a.role == Role::Offerer)
        {
            self.out.push(Action::OpenDatagrams { peer, dial });
        }
        self.out.push(Action::Emit(RoomEvent::PeerJoined { peer }));
    }

    fn current(&self, peer: &PeerId, dial: u64) -> bool {
        self.attempts.get(peer).is_some_and(|a| a.dial == dial)
    }

    /// Ends attempt or link `dial` with `peer`: a goodbye forgets the peer, anything else
    /// cools it down for a retry.
    #[allow(clippy::too_many_arguments)]
    fn end(
        &mut self,
        peer: PeerId,
        dial: u64,
        reason: LeaveReason,
        cause: &'static str,
        close_after: Duration,
        now: Instant,
    ) {
        if !self.current(&peer, dial) {
            return;
        }
        let Some(attempt) = self.attempts.remove(&peer) else {
            return;
        };
        let linked = attempt.linked();
        tracing::debug!(peer = %peer.short(), dial, linked, ?reason, cause, "attempt ended");
        match reason {
            LeaveReason::Left => {
                self.planner.gone(&peer);
            }
            _ => {
                if !linked {
                    self.count(Counter::DialsFailed);
                }
                self.planner.failed(peer, dial, now);
            }
        }
        self.retire(peer, dial, linked, reason, close_after);
    }

    fn retire(
        &mut self,
        peer: PeerId,
        dial: u64,
        linked: bool,
        reason: LeaveReason,
        close_after: Duration,
    ) {
        self.out.push(Action::Retire {
            peer,
            dial,
            close_after,
        });
        if linked {
            self.out
                .push(Action::Emit(RoomEvent::PeerLeft { peer, reason }));
        }
    }

    fn on_tick(&mut self, now: Instant) {
        for (peer, dial) in self.planner.expired(now) {
            if self.current(&peer, dial) {
                let cause = "dial timed out";
                self.end(peer, dial, LeaveReason::Failed, cause, Duration::ZERO, now);
            } else {
                self.count(Counter::DialsFailed);
                self.planner.failed(peer, dial, now);
            }
        }
        let answer_timeout = self.limits.answer_timeout;
        let mut unanswered: Vec<(PeerId, u64)> = self
            .attempts
            .iter()
            .filter(|(_, a)| {
                // A linked attempt was answered, whatever its backend signalled.
                a.role == Role::Offerer
                    && !a.heard_back
                    && !matches!(a.stage, Stage::Linked { .. })
                    && now.saturating_duration_since(a.started) >= answer_timeout
            })
            .map(|(peer, a)| (*peer, a.dial))
            .collect();
        unanswered.sort();
        for (peer, dial) in unanswered {
            tracing::debug!(peer = %peer.short(), dial, "no answer: retrying");
            self.count(Counter::DialsFailed);
            self.retry_soon(peer, dial, true, now);
        }
        let timeout = self.limits.peer_timeout;
        let mut silent: Vec<(PeerId, u64)> = self
            .attempts
            .iter()
            .filter_map(|(peer, a)| match a.stage {
                Stage::Linked { heard } if now.saturating_duration_since(heard) > timeout => {
                    Some((*peer, a.dial))
                }
                _ => None,
            })
            .collect();
        silent.sort();
        for (peer, dial) in silent {
            let cause = "watchdog";
            self.end(
                peer,
                dial,
                LeaveReason::TimedOut,
                cause,
                Duration::ZERO,
                now,
            );
        }
        for peer in self.planner.cooled(now) {
            if !self.attempts.contains_key(&peer) {
                self.hello(peer, now);
            }
        }
        self.start_dials(now);
    }

    /// Whether the machine still works on a link to `peer` (an attempt, or a retry it will
    /// make on its own).
    pub(crate) fn pursuing(&self, peer: &PeerId) -> bool {
        self.attempts.contains_key(peer) || self.planner.pursuing(peer)
    }

    fn count(&mut self, counter: Counter) {
        self.out.push(Action::Count(counter));
    }

    /// The attempt id and whether it is linked, per peer with an attempt (tests and checks).
    #[cfg(test)]
    pub(crate) fn attempt(&self, peer: &PeerId) -> Option<(u64, bool)> {
        self.attempts.get(peer).map(|a| (a.dial, a.linked()))
    }

    #[cfg(test)]
    pub(crate) fn planner(&self) -> &DialPlanner {
        &self.planner
    }

    #[cfg(test)]
    pub(crate) fn remembered(&self) -> (usize, usize, usize) {
        (self.attempts.len(), self.hellos.len(), self.busy_told.len())
    }

    #[cfg(test)]
    pub(crate) fn early_signals(&self) -> usize {
        self.attempts
            .values()
            .map(|a| match &a.stage {
                Stage::Connecting { early } => early.len(),
                _ => 0,
            })
            .sum()
    }
}
