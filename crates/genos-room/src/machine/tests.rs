//! The room machine alone, on simulated time: a small world of machines whose signals,
//! connections and channels are events in a queue. No tokio, no sleeps: minutes of room
//! life play in milliseconds, the same way every time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use genos_crypto::PeerId;
use genos_transport::{ConnectionState, Role};
use proptest::prelude::*;

use super::*;
use crate::dial::Phase;

const LATENCY: Duration = Duration::from_millis(20);
const CONNECT: Duration = Duration::from_millis(5);
const TICK: Duration = Duration::from_millis(100);

fn id(n: u16) -> PeerId {
    let mut bytes = [0u8; 32];
    bytes[..2].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 1;
    PeerId::from_bytes(bytes)
}

fn limits() -> RoomLimits {
    RoomLimits::default()
}

/// One event in the world's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scheduled {
    to: PeerId,
    input: Input,
}

/// How one pair's first attempts behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The offer or the answer is lost on the way (relays drop events under load).
    Lost,
    /// The answer arrives but the connection never opens (a hung WebRTC setup).
    Stall,
    /// The answer arrives after this much extra delay.
    LateAnswer(Duration),
    /// The answering transport connects without a signal of its own (a backend whose
    /// answerer has nothing to say).
    SilentAnswer,
}

/// Machines, a clock and a queue of inputs in flight.
struct World {
    start: Instant,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    pending: BTreeMap<usize, Scheduled>,
    machines: BTreeMap<PeerId, RoomMachine>,
    /// Faults per (offerer, answerer), applied to that many attempts.
    faults: BTreeMap<(PeerId, PeerId), (Fault, u32)>,
    /// Established links: (local, remote) -> dial.
    links: BTreeMap<(PeerId, PeerId), u64>,
    /// Links with their unreliable channel attached: (local, remote) -> dial.
    datagrams: BTreeMap<(PeerId, PeerId), u64>,
    events: BTreeMap<PeerId, Vec<RoomEvent>>,
    counters: BTreeMap<Counter, u64>,
    signals_sent: u64,
    max_actions: usize,
    /// The answering side hears of the link channel after the unreliable one (separate
    /// SCTP streams are not ordered with each other).
    datagrams_first: bool,
}

impl World {
    fn new() -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            seq: 0,
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            machines: BTreeMap::new(),
            faults: BTreeMap::new(),
            links: BTreeMap::new(),
            datagrams: BTreeMap::new(),
            events: BTreeMap::new(),
            counters: BTreeMap::new(),
            signals_sent: 0,
            max_actions: 0,
            datagrams_first: false,
        }
    }

    fn add(&mut self, peer: PeerId, limits: RoomLimits) {
        let seed = u64::from(peer.as_bytes()[0]) << 8 | u64::from(peer.as_bytes()[1]);
        self.machines
            .insert(peer, RoomMachine::new(peer, limits, seed));
    }

    fn schedule(&mut self, after: Duration, to: PeerId, input: Input) {
        self.seq += 1;
        let key = self.seq as usize;
        self.pending.insert(key, Scheduled { to, input });
        self.queue.push(Reverse((self.now + after, self.seq, key)));
    }

    /// Every peer hears every other's presence once (no re-announce ever).
    fn announce_all(&mut self) {
        let peers: Vec<PeerId> = self.machines.keys().copied().collect();
        for &a in &peers {
            for &b in &peers {
                if a != b {
                    self.schedule(LATENCY, b, Input::PeerSeen { peer: a });
                }
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Runs until `until` (simulated), ticking every machine every [`TICK`].
    fn run_until(&mut self, until: Duration) {
        let end = self.start + until;
        let mut next_tick = self.now + TICK;
        loop {
            let next_event = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let (at, tick) = match next_event {
                Some(at) if at <= next_tick => (at, false),
                _ => (next_tick, true),
            };
            if at > end {
                self.now = end;
                return;
            }
            self.now = at;
            if tick {
                next_tick += TICK;
                let peers: Vec<PeerId> = self.machines.keys().copied().collect();
                for peer in peers {
                    self.feed(peer, Input::Tick);
                }
            } else if let Some(Reverse((_, _, key))) = self.queue.pop() {
                if let Some(Scheduled { to, input }) = self.pending.remove(&key) {
                    self.feed(to, input);
                }
            }
        }
    }

    /// Runs until every pair of machines is linked (both sides, same attempt), or `limit`.
    fn run_until_mesh(&mut self, limit: Duration) -> Option<Duration> {
        while self.elapsed() < limit {
            let step = self.elapsed() + TICK;
            self.run_until(step);
            if self.full_mesh() {
                return Some(self.elapsed());
            }
        }
        None
    }

    fn full_mesh(&self) -> bool {
        let peers: Vec<&PeerId> = self.machines.keys().collect();
        peers.iter().all(|a| {
            peers.iter().all(|b| {
                a == b
                    || matches!(
                        (self.links.get(&(**a, **b)), self.links.get(&(**b, **a))),
                        (Some(x), Some(y)) if x == y
                    )
            })
        })
    }

    fn feed(&mut self, peer: PeerId, input: Input) {
        let Some(machine) = self.machines.get_mut(&peer) else {
            return;
        };
        let actions = machine.handle(input, self.now);
        self.max_actions = self.max_actions.max(actions.len());
        for action in actions {
            self.execute(peer, action);
        }
    }

    fn fault(&mut self, offerer: PeerId, answerer: PeerId) -> Option<Fault> {
        let entry = self.faults.get_mut(&(offerer, answerer))?;
        if entry.1 == 0 {
            return None;
        }
        entry.1 -= 1;
        Some(entry.0)
    }

    /// Plays what the driver and the other side's transport would do.
    fn execute(&mut self, local: PeerId, action: Action) {
        match action {
            Action::Signal { to, message } => {
                self.signals_sent += 1;
                let input = match message {
                    SignalMessage::Hello => Input::Hello { from: local },
                    SignalMessage::Busy { dial } => Input::Busy { from: local, dial },
                    SignalMessage::Transport { dial, payload } => Input::TransportSignal {
                        from: local,
                        dial,
                        payload: Bytes::from(payload),
                    },
                };
                self.schedule(LATENCY, to, input);
            }
            Action::Connect { peer, dial, role } => {
                self.schedule(CONNECT, local, Input::Connected { peer, dial });
                if role == Role::Offerer {
                    let offer = Input::TransportSignal {
                        from: local,
                        dial,
                        payload: Bytes::from_static(b"offer"),
                    };
                    self.schedule(CONNECT + LATENCY, peer, offer);
                }
            }
            Action::HandleSignal {
                peer,
                dial,
                payload,
            } => match &payload[..] {
                b"offer" => match self.fault(peer, local) {
                    Some(Fault::Lost) => {}
                    Some(Fault::Stall) => {
                        let answer = Input::TransportSignal {
                            from: local,
                            dial,
                            payload: Bytes::from_static(b"stalled"),
                        };
                        self.schedule(LATENCY, peer, answer);
                    }
                    Some(Fault::SilentAnswer) => {
                        let offered = Input::ChannelOffered {
                            peer: local,
                            dial,
                            opened: true,
                        };
                        self.schedule(LATENCY, peer, offered);
                        let opened = Input::ChannelOpened {
                            peer,
                            dial,
                            label: crate::wire::LINK_LABEL.to_owned(),
                        };
                        self.schedule(LATENCY * 3, local, opened);
                    }
                    fault => {
                        let extra = match fault {
                            Some(Fault::LateAnswer(extra)) => extra,
                            _ => Duration::ZERO,
                        };
                        let answer = Input::TransportSignal {
                            from: local,
                            dial,
                            payload: Bytes::from_static(b"answer"),
                        };
                        self.schedule(LATENCY + extra, peer, answer);
                        let opened = Input::ChannelOpened {
                            peer,
                            dial,
                            label: crate::wire::LINK_LABEL.to_owned(),
                        };
                        let link_after = if self.datagrams_first {
                            LATENCY * 5
                        } else {
                            LATENCY * 3
                        };
                        self.schedule(link_after + extra, local, opened);
                    }
                },
                b"answer" => {
                    let opened = Input::ChannelOffered {
                        peer,
                        dial,
                        opened: true,
                    };
                    self.schedule(LATENCY, local, opened);
                }
                _ => {}
            },
            Action::Establish { peer, dial } => {
                self.links.insert((local, peer), dial);
            }
            Action::DropChannel { .. } => {}
            Action::OpenDatagrams { peer, dial } => {
                let opened = Input::DatagramsOffered {
                    peer,
                    dial,
                    opened: true,
                };
                self.schedule(LATENCY, local, opened);
                let incoming = Input::ChannelOpened {
                    peer: local,
                    dial,
                    label: crate::wire::DATAGRAM_LABEL.to_owned(),
                };
                self.schedule(LATENCY, peer, incoming);
            }
            Action::AttachDatagrams { peer, dial } => {
                self.datagrams.insert((local, peer), dial);
            }
            Action::HoldDatagrams { .. } => {}
            Action::Retire { peer, dial, .. } => {
                if self.links.get(&(local, peer)) == Some(&dial) {
                    self.links.remove(&(local, peer));
                }
                let closed = Input::ConnectionState {
                    peer: local,
                    dial,
                    state: ConnectionState::Closed,
                };
                self.schedule(LATENCY, peer, closed);
            }
            Action::Emit(event) => self.events.entry(local).or_default().push(event),
            Action::Count(counter) => *self.counters.entry(counter).or_default() += 1,
            Action::Leave => {}
        }
    }

    fn count(&self, counter: Counter) -> u64 {
        self.counters.get(&counter).copied().unwrap_or(0)
    }

    fn joined(&self, peer: PeerId) -> BTreeSet<PeerId> {
        let mut set = BTreeSet::new();
        for event in self.events.get(&peer).into_iter().flatten() {
            match event {
                RoomEvent::PeerJoined { peer } => {
                    set.insert(*peer);
                }
                RoomEvent::PeerLeft { peer, .. } => {
                    set.remove(peer);
                }
                _ => {}
            }
        }
        set
    }

    /// Feeds the machine's view of every link: all links heard now.
    fn hear_all(&mut self) {
        let links: Vec<((PeerId, PeerId), u64)> =
            self.links.iter().map(|(k, v)| (*k, *v)).collect();
        for ((local, peer), dial) in links {
            let at = self.now;
            self.feed(local, Input::LinkHeard { peer, dial, at });
        }
    }
}

fn world(peers: u16, limits: RoomLimits) -> World {
    let mut world = World::new();
    for n in 1..=peers {
        world.add(id(n), limits);
    }
    world
}

#[test]
fn thirty_peers_joining_at_once_form_a_full_mesh_from_one_announce() {
    let mut w = world(30, limits());
    w.announce_all();
    // Heartbeats keep links alive; hear them each simulated second.
    let mut took = None;
    for _ in 0..100 {
        if let Some(t) = w.run_until_mesh(w.elapsed() + Duration::from_secs(1)) {
            took = Some(t);
            break;
        }
        w.hear_all();
    }
    let took = took.expect("a full mesh");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    for n in 1..=30 {
        assert_eq!(w.joined(id(n)).len(), 29, "peer {n} sees everyone");
    }
    // Shortly after, every link has its unreliable channel on both ends.
    w.run_until(w.elapsed() + Duration::from_millis(200));
    assert_eq!(w.datagrams, w.links, "unreliable channels on every link");
    assert_eq!(w.count(Counter::DialsFailed), 0);
    // Both sides start each pair's attempt once; an attempt answered busy is started once
    // more by its dialler.
    assert_eq!(
        w.count(Counter::DialsStarted),
        30 * 29 + w.count(Counter::DialsBusy)
    );
}

#[test]
fn an_unreliable_channel_arriving_before_the_link_is_kept_and_attached() {
    let mut w = world(6, limits());
    w.datagrams_first = true;
    w.announce_all();
    let mut formed = false;
    for _ in 0..20 {
        if w.run_until_mesh(w.elapsed() + Duration::from_secs(1))
            .is_some()
        {
            formed = true;
            break;
        }
        w.hear_all();
    }
    assert!(formed, "a full mesh");
    w.run_until(w.elapsed() + Duration::from_millis(200));
    assert_eq!(
        w.datagrams, w.links,
        "unreliable channels on both ends of every link"
    );
}

#[test]
fn a_dial_storm_beyond_the_half_open_budget_is_answered_busy_and_completes() {
    // Nineteen peers all dial the twentieth, which takes two at a time.
    let tight = RoomLimits {
        max_half_open_dials: 2,
        ..limits()
    };
    let mut w = world(19, limits());
    w.add(id(20), tight);
    w.announce_all();
    let mut done = None;
    for _ in 0..60 {
        if let Some(t) = w.run_until_mesh(w.elapsed() + Duration::from_secs(1)) {
            done = Some(t);
            break;
        }
        w.hear_all();
    }
    assert!(done.is_some(), "mesh never formed");
    assert!(w.count(Counter::DialsBusy) > 0, "the budget was hit");
    assert_eq!(w.count(Counter::DialsFailed), 0, "busy is not a failure");
    // Never more than the budget half open, on any machine, at any time: checked through
    // the planner at the end (nothing is left half open).
    for machine in w.machines.values() {
        assert_eq!(machine.planner().half_open_count(), 0);
    }
}

#[test]
fn a_lost_answer_is_retried_within_a_second_of_the_answer_timeout() {
    let (a, b) = (id(1), id(2));
    let mut w = world(2, limits());
    w.faults.insert((a, b), (Fault::Lost, 1));
    w.announce_all();
    let took = w
        .run_until_mesh(Duration::from_secs(60))
        .expect("linked after a retry");
    let timeout = limits().answer_timeout;
    assert!(took >= timeout, "the first answer was lost: {took:?}");
    assert!(
        took < timeout + Duration::from_secs(1),
        "retried at once, not after the dial timeout or a re-announce: {took:?}"
    );
    assert_eq!(
        w.count(Counter::DialsFailed),
        1,
        "the dialler gave up on it"
    );
    assert_eq!(w.joined(a), BTreeSet::from([b]));
    assert_eq!(w.joined(b), BTreeSet::from([a]));
}

#[test]
fn a_link_whose_answerer_sent_no_signal_is_kept_past_the_answer_timeout() {
    let (a, b) = (id(1), id(2));
    let mut w = world(2, limits());
    w.faults.insert((a, b), (Fault::SilentAnswer, u32::MAX));
    w.faults.insert((b, a), (Fault::SilentAnswer, u32::MAX));
    w.announce_all();
    w.run_until_mesh(Duration::from_secs(10)).expect("linked");
    // Both sides keep hearing each other (heartbeats) well past the answer timeout.
    while w.elapsed() < limits().answer_timeout * 3 {
        w.hear_all();
        let next = w.elapsed() + Duration::from_millis(500);
        w.run_until(next);
    }
    assert_eq!(
        w.count(Counter::DialsFailed),
        0,
        "a linked attempt was retried"
    );
    assert_eq!(w.joined(a), BTreeSet::from([b]));
    assert_eq!(w.joined(b), BTreeSet::from([a]));
}

#[test]
fn a_stalled_setup_is_retried_after_the_dial_timeout_without_a_new_announce() {
    let (a, b) = (id(1), id(2));
    let mut w = world(2, limits());
    w.faults.insert((a, b), (Fault::Stall, 1));
    w.announce_all();
    let took = w
        .run_until_mesh(Duration::from_secs(60))
        .expect("linked after a retry");
    let timeout = limits().dial_timeout;
    assert!(took >= timeout, "the first attempt stalled: {took:?}");
    assert!(
        took < timeout + limits().dial_cooldown + Duration::from_secs(1),
        "retried after the cooldown, not at a re-announce: {took:?}"
    );
    assert_eq!(w.count(Counter::DialsFailed), 2, "both sides saw it fail");
    assert_eq!(w.joined(a), BTreeSet::from([b]));
}

#[test]
fn a_late_answer_to_an_abandoned_attempt_is_ignored() {
    let (a, b) = (id(1), id(2));
    let mut w = world(2, limits());
    let late = limits().dial_timeout + Duration::from_secs(1);
    w.faults.insert((a, b), (Fault::LateAnswer(late), 1));
    w.announce_all();
    w.run_until_mesh(Duration::from_secs(90)).expect("linked");
    let dial = w.links[&(a, b)];
    assert_eq!(w.links[&(b, a)], dial, "both ends on the same attempt");
    // The first attempt never became a link on either side.
    assert_eq!(w.events[&a].len(), 1);
    assert_eq!(w.events[&b].len(), 1);
}

#[test]
fn the_watchdog_retires_a_silent_peer_and_the_dial_is_retried() {
    let (a, b) = (id(1), id(2));
    let mut w = world(2, limits());
    w.announce_all();
    w.run_until_mesh(Duration::from_secs(5)).expect("linked");
    // Nothing heard: both watchdogs fire after peer_timeout.
    let at = w.elapsed();
    w.run_until(at + limits().peer_timeout + Duration::from_millis(500));
    assert!(w.events[&a].contains(&RoomEvent::PeerLeft {
        peer: b,
        reason: LeaveReason::TimedOut
    }));
    // Then the lower id dials again after its cooldown: linked anew.
    let again = w.run_until_mesh(w.elapsed() + Duration::from_secs(10));
    assert!(again.is_some(), "redialled after the watchdog");
    assert_eq!(w.joined(a), BTreeSet::from([b]));
}

#[test]
fn a_peer_that_leaves_is_forgotten_until_it_returns() {
    let (a, b) = (id(1), id(2));
    let mut w = world(2, limits());
    w.announce_all();
    w.run_until_mesh(Duration::from_secs(5)).expect("linked");
    let dial = w.links[&(a, b)];
    w.feed(a, Input::LinkBye { peer: b, dial });
    assert!(w.events[&a].contains(&RoomEvent::PeerLeft {
        peer: b,
        reason: LeaveReason::Left
    }));
    assert_eq!(w.machines[&a].planner().phase(&b), None, "forgotten");
    // b is gone for good: no redial however long we wait (heartbeats from nobody).
    let machine = w.machines.remove(&b).expect("b");
    w.run_until(w.elapsed() + Duration::from_secs(30));
    assert_eq!(w.joined(a), BTreeSet::new());
    // b comes back and announces: linked again.
    w.machines.insert(b, machine);
    w.feed(b, Input::Tick);
    w.schedule(LATENCY, a, Input::PeerSeen { peer: b });
    assert!(
        w.run_until_mesh(w.elapsed() + Duration::from_secs(5))
            .is_some()
    );
    assert_ne!(w.links[&(a, b)], dial, "a new attempt");
}

#[test]
fn a_restarted_peer_replaces_its_link_with_a_new_attempt() {
    let (a, b) = (id(1), id(2));
    let mut w = world(2, limits());
    w.announce_all();
    w.run_until_mesh(Duration::from_secs(5)).expect("linked");
    let old = w.links[&(b, a)];
    // a (the offerer) restarted and dials b again with a new attempt id.
    let actions = w.machines.get_mut(&b).expect("b").handle(
        Input::TransportSignal {
            from: a,
            dial: old ^ 1,
            payload: Bytes::from_static(b"offer"),
        },
        w.now,
    );
    assert!(actions.contains(&Action::Emit(RoomEvent::PeerLeft {
        peer: a,
        reason: LeaveReason::Failed
    })));
    assert!(actions.contains(&Action::Connect {
        peer: a,
        dial: old ^ 1,
        role: Role::Answerer
    }));
    assert_eq!(w.machines[&b].attempt(&a), Some((old ^ 1, false)));
}

#[test]
fn a_failed_connection_is_retried_and_gives_up_after_the_retry_budget() {
    let (a, b) = (id(1), id(2));
    let mut m = RoomMachine::new(a, limits(), 7);
    let mut now = Instant::now();
    let mut dials = Vec::new();
    let mut out = m.handle(Input::PeerSeen { peer: b }, now);
    for _ in 0..10 {
        let Some(dial) = out.iter().find_map(|x| match x {
            Action::Connect { dial, .. } => Some(*dial),
            _ => None,
        }) else {
            break;
        };
        dials.push(dial);
        m.handle(Input::ConnectFailed { peer: b, dial }, now);
        out = Vec::new();
        for _ in 0..400 {
            now += TICK;
            out = m.handle(Input::Tick, now);
            if out.iter().any(|x| matches!(x, Action::Connect { .. })) {
                break;
            }
        }
    }
    assert_eq!(
        dials.len(),
        1 + crate::dial::MAX_AUTO_RETRIES as usize,
        "one dial and its retries, then nothing until seen again"
    );
    // Seen again (after the cooldown): dialled again.
    now += Duration::from_secs(60);
    let out = m.handle(Input::PeerSeen { peer: b }, now);
    assert!(out.iter().any(|x| matches!(x, Action::Connect { .. })));
}

#[test]
fn the_answering_side_says_hello_once_per_interval_and_nudges_after_a_failure() {
    let (low, me) = (id(1), id(2));
    let mut m = RoomMachine::new(me, limits(), 1);
    let now = Instant::now();
    let hello = Action::Signal {
        to: low,
        message: SignalMessage::Hello,
    };
    assert_eq!(
        m.handle(Input::PeerSeen { peer: low }, now),
        vec![hello.clone()]
    );
    assert!(m.handle(Input::PeerSeen { peer: low }, now).is_empty());
    // Its attempt arrives and fails: after the cooldown we nudge it again.
    let offer = Input::TransportSignal {
        from: low,
        dial: 5,
        payload: Bytes::from_static(b"offer"),
    };
    m.handle(offer, now);
    m.handle(Input::ConnectFailed { peer: low, dial: 5 }, now);
    let later = now + limits().dial_cooldown + TICK;
    assert!(m.handle(Input::Tick, later).contains(&hello));
}

#[test]
fn a_thousand_presences_at_once_do_bounded_work_in_bounded_memory() {
    let me = id(500);
    let limits = limits();
    let mut m = RoomMachine::new(me, limits, 3);
    let now = Instant::now();
    let mut most = 0;
    for n in 0..1000u16 {
        let peer = id(n);
        if peer == me {
            continue;
        }
        let out = m.handle(Input::PeerSeen { peer }, now);
        most = most.max(out.len());
    }
    let out = m.handle(Input::Tick, now);
    most = most.max(out.len());
    let (attempts, hellos, busy) = m.remembered();
    assert!(attempts <= 2 * limits.max_half_open_dials, "{attempts}");
    assert!(m.planner().len() <= limits.max_peers);
    assert!(hellos <= limits.max_peers * 2, "{hellos}");
    assert_eq!(busy, 0);
    assert!(most <= limits.max_half_open_dials * 2 + 2, "{most}");
    assert_eq!(
        m.planner().half_open_count(),
        limits.max_half_open_dials,
        "ours only"
    );
}

#[test]
fn early_signals_wait_for_their_connection_within_a_bound() {
    let (low, me) = (id(1), id(2));
    let mut m = RoomMachine::new(me, limits(), 1);
    let now = Instant::now();
    for i in 0..200u32 {
        let input = Input::TransportSignal {
            from: low,
            dial: 9,
            payload: Bytes::from(i.to_be_bytes().to_vec()),
        };
        m.handle(input, now);
    }
    assert_eq!(m.early_signals(), MAX_EARLY_SIGNALS);
    let out = m.handle(Input::Connected { peer: low, dial: 9 }, now);
    let handed: Vec<u32> = out
        .iter()
        .filter_map(|a| match a {
            Action::HandleSignal { payload, .. } => {
                Some(u32::from_be_bytes(payload[..].try_into().ok()?))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        handed,
        (0..MAX_EARLY_SIGNALS as u32).collect::<Vec<_>>(),
        "in order"
    );
}

#[test]
fn nothing_is_decided_after_leave() {
    let (a, b) = (id(1), id(2));
    let mut m = RoomMachine::new(a, limits(), 1);
    let now = Instant::now();
    assert_eq!(m.handle(Input::Leave, now), vec![Action::Leave]);
    assert!(m.handle(Input::PeerSeen { peer: b }, now).is_empty());
    assert!(m.handle(Input::Tick, now).is_empty());
}

#[test]
fn a_room_plays_the_same_every_time() {
    let play = || {
        let mut w = world(12, limits());
        w.faults.insert((id(1), id(5)), (Fault::Stall, 1));
        w.faults.insert((id(2), id(7)), (Fault::Lost, 2));
        w.announce_all();
        w.run_until(Duration::from_secs(30));
        (w.links.clone(), w.events.clone(), w.counters.clone())
    };
    assert_eq!(play(), play());
}

fn arb_input(peers: u16) -> impl Strategy<Value = Input> {
    let peer = (1..=peers).prop_map(id);
    let dial = 0..4u64;
    prop_oneof![
        peer.clone().prop_map(|peer| Input::PeerSeen { peer }),
        peer.clone().prop_map(|peer| Input::PeerGone { peer }),
        peer.clone().prop_map(|from| Input::Hello { from }),
        (peer.clone(), dial.clone()).prop_map(|(from, dial)| Input::Busy { from, dial }),
        (peer.clone(), dial.clone()).prop_map(|(from, dial)| Input::TransportSignal {
            from,
            dial,
            payload: Bytes::from_static(b"x"),
        }),
        (peer.clone(), dial.clone()).prop_map(|(peer, dial)| Input::Connected { peer, dial }),
        (peer.clone(), dial.clone()).prop_map(|(peer, dial)| Input::ConnectFailed { peer, dial }),
        (
            peer.clone(),
            dial.clone(),
            prop_oneof![
                Just(ConnectionState::Connected),
                Just(ConnectionState::Failed),
                Just(ConnectionState::Closed)
            ]
        )
            .prop_map(|(peer, dial, state)| Input::ConnectionState { peer, dial, state }),
        (peer.clone(), dial.clone(), any::<bool>()).prop_map(|(peer, dial, good)| {
            Input::ChannelOpened {
                peer,
                dial,
                label: if good {
                    crate::wire::LINK_LABEL
                } else {
                    "other"
                }
                .to_owned(),
            }
        }),
        (peer.clone(), dial.clone(), any::<bool>())
            .prop_map(|(peer, dial, opened)| Input::ChannelOffered { peer, dial, opened }),
        (peer.clone(), dial.clone(), any::<bool>())
            .prop_map(|(peer, dial, opened)| Input::DatagramsOffered { peer, dial, opened }),
        (peer.clone(), dial.clone()).prop_map(|(peer, dial)| Input::LinkBye { peer, dial }),
        (peer.clone(), dial.clone(), any::<bool>())
            .prop_map(|(peer, dial, failed)| Input::LinkEnded { peer, dial, failed }),
        Just(Input::Tick),
        Just(Input::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any order of inputs: no panic, every bound holds, every peer is in exactly one state
    /// that the planner and the attempts agree on, and joins and leaves alternate.
    #[test]
    fn any_inputs_keep_every_bound_and_one_state_per_peer(
        inputs in proptest::collection::vec((arb_input(12), 0..3_000u64), 1..300),
        leave_at in proptest::option::of(0..300usize),
    ) {
        let me = id(6);
        let limits = RoomLimits { max_peers: 5, max_half_open_dials: 2, ..limits() };
        let mut m = RoomMachine::new(me, limits, 11);
        let mut now = Instant::now();
        let mut joined = BTreeSet::new();
        let mut left = false;
        for (i, (input, advance)) in inputs.into_iter().enumerate() {
            if leave_at == Some(i) {
                prop_assert_eq!(m.handle(Input::Leave, now), vec![Action::Leave]);
                left = true;
            }
            now += Duration::from_millis(advance);
            let out = m.handle(input, now);
            if left {
                prop_assert!(out.is_empty());
            }
            for action in &out {
                match action {
                    Action::Emit(RoomEvent::PeerJoined { peer }) => {
                        prop_assert!(joined.insert(*peer), "joined twice");
                    }
                    Action::Emit(RoomEvent::PeerLeft { peer, .. }) => {
                        prop_assert!(joined.remove(peer), "left without joining");
                    }
                    Action::Connect { peer, .. } => prop_assert_ne!(*peer, me),
                    _ => {}
                }
            }
            let (attempts, hellos, busy) = m.remembered();
            prop_assert!(attempts <= limits.max_peers);
            prop_assert!(m.planner().len() <= limits.max_peers * 2);
            // The budget holds in each direction.
            prop_assert!(m.planner().half_open_count() <= 2 * limits.max_half_open_dials);
            prop_assert!(hellos <= limits.max_peers * 2);
            prop_assert!(busy <= limits.max_peers * 2);
            prop_assert!(m.early_signals() <= MAX_EARLY_SIGNALS * attempts);
            for n in 1..=12u16 {
                let peer = id(n);
                let phase = m.planner().phase(&peer);
                match m.attempt(&peer) {
                    Some((dial, true)) => prop_assert_eq!(phase, Some(Phase::Linked(dial))),
                    Some((dial, false)) => prop_assert_eq!(phase, Some(Phase::Dialing(dial))),
                    None => prop_assert!(
                        !matches!(phase, Some(Phase::Dialing(_) | Phase::Linked(_))),
                        "planner {:?} without an attempt", phase
                    ),
                }
                prop_assert_eq!(
                    joined.contains(&peer),
                    matches!(m.attempt(&peer), Some((_, true))),
                    "the application's view matches the machine's"
                );
            }
        }
    }
}
