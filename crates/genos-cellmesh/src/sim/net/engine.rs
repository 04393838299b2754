//! The event loop of the simulated network: scheduling, dispatching events to overlays,
//! carrying out their outputs (links, topics, frames) and recording deliveries.
#![allow(clippy::indexing_slicing)]

use super::*;

impl<A: FrameAuth> Net<A> {
    fn latency(&mut self) -> u64 {
        self.config.latency_us + self.rng.below(self.config.jitter_us + 1)
    }

    pub(super) fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(entry) = self.events.get_mut(slot as usize) {
                    *entry = Some(event);
                }
                slot
            }
            None => {
                self.events.push(Some(event));
                u32::try_from(self.events.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// Runs events until simulated time `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while let Some(Reverse((at, _, slot))) = self.queue.peek().copied() {
            if at > until_us {
                break;
            }
            self.queue.pop();
            let Some(event) = self.events.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            self.free.push(slot);
            self.now = at;
            self.events_processed += 1;
            self.dispatch(event);
        }
        self.now = self.now.max(until_us);
    }

    pub(super) fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    pub(super) fn dispatch(&mut self, event: Event) {
        if self.debug {
            let kind = match &event {
                Event::Tick { .. } => "tick",
                Event::Announced { .. } => "announced",
                Event::Input { input, .. } => match **input {
                    Input::LinkUp { .. } => "link up",
                    Input::LinkDown { .. } => "link down",
                    _ => "other input",
                },
                Event::Message { message, .. } => match message.first() {
                    Some(1) => "frame",
                    Some(2) => "hello",
                    Some(3) => "roster",
                    _ => "message",
                },
                Event::Establish { .. } => "establish",
            };
            *self.event_kinds.entry(kind).or_default() += 1;
        }
        match event {
            Event::Input { peer, input } => {
                if let Some(p) = self.peers.get_mut(peer) {
                    if let Input::Start { .. } = *input {
                        if p.gone || p.started {
                            return;
                        }
                        p.started = true;
                        p.alive = true;
                        p.started_at = self.now;
                    }
                    if !p.alive {
                        return;
                    }
                    self.feed(peer, *input);
                }
            }
            Event::Tick { peer } => {
                if self.is_alive(peer) {
                    self.feed(peer, Input::Tick);
                }
            }
            Event::Announced {
                to,
                from,
                topic,
                cells,
                epoch,
                count,
            } => {
                if self.is_alive(to) {
                    let peer = self.peers[from].key;
                    self.feed(
                        to,
                        Input::Announced {
                            peer,
                            topic,
                            cells,
                            epoch,
                            count,
                        },
                    );
                }
            }
            Event::Message { from, to, message } => {
                if self.links.get(&pair(from, to)) != Some(&LinkState::Up) {
                    return;
                }
                let Some(from_key) = self.peers.get(from).map(|peer| peer.key) else {
                    return;
                };
                if self.is_alive(to) {
                    self.feed(
                        to,
                        Input::Received {
                            from: from_key,
                            message,
                        },
                    );
                }
            }
            Event::Establish { a, b } => {
                if self.links.get(&pair(a, b)) != Some(&LinkState::Opening) {
                    return;
                }
                if self.is_alive(a) && self.is_alive(b) {
                    self.links.insert(pair(a, b), LinkState::Up);
                    for (me, other) in [(a, b), (b, a)] {
                        if let Some(peer) = self.peers.get_mut(me) {
                            peer.adjacent.insert(other);
                        }
                    }
                    let (ka, kb) = (self.peers[a].key, self.peers[b].key);
                    self.feed(a, Input::LinkUp { peer: kb });
                    self.feed(b, Input::LinkUp { peer: ka });
                } else {
                    self.links.remove(&pair(a, b));
                    for (me, other) in [(a, b), (b, a)] {
                        if self.is_alive(me) {
                            let key = self.peers[other].key;
                            let at = self.now + self.config.detect_us;
                            self.input_at(at, me, Input::LinkDown { peer: key });
                        }
                    }
                }
            }
        }
    }

    /// Hands `input` to peer `i` now and carries out its outputs; false if the overlay
    /// refused a command (or there is no such peer).
    pub(super) fn feed(&mut self, i: usize, input: Input) -> bool {
        let now = self.instant();
        let Some(peer) = self.peers.get_mut(i) else {
            return false;
        };
        let outputs = peer.overlay.handle(input, now);
        let mut accepted = true;
        for output in outputs {
            if matches!(output, Output::Event(crate::OverlayEvent::CommandFailed(_))) {
                accepted = false;
            }
            self.apply(i, output);
        }
        accepted
    }

    pub(super) fn apply(&mut self, i: usize, output: Output) {
        match output {
            Output::Subscribe(topic) => {
                if self.peers[i].topics.insert(topic) {
                    self.topics.entry(topic).or_default().push(i);
                    let now = self.now;
                    let memory = self.announce_memory_us;
                    let recent: Vec<(usize, u32, u32, u32)> = self
                        .announced
                        .get(&topic)
                        .into_iter()
                        .flatten()
                        .filter(|(peer, (at, ..))| **peer != i && now.saturating_sub(*at) < memory)
                        .map(|(peer, (_, cells, epoch, count))| (*peer, *cells, *epoch, *count))
                        .collect();
                    for (peer, cells, epoch, count) in recent {
                        let at = self.now + self.latency() + self.latency();
                        self.schedule(
                            at,
                            Event::Announced {
                                to: i,
                                from: peer,
                                topic,
                                cells,
                                epoch,
                                count,
                            },
                        );
                    }
                }
            }
            Output::Unsubscribe(topic) => {
                if self.peers[i].topics.remove(&topic) {
                    if let Some(list) = self.topics.get_mut(&topic) {
                        list.retain(|member| *member != i);
                    }
                }
            }
            Output::Announce {
                topic,
                cells,
                epoch,
                count,
            } => {
                self.announced
                    .entry(topic)
                    .or_default()
                    .insert(i, (self.now, cells, epoch, count));
                let subscribers = self.topics.get(&topic).cloned().unwrap_or_default();
                for subscriber in subscribers {
                    if subscriber != i {
                        // Publisher -> relay -> subscriber.
                        let at = self.now + self.latency() + self.latency();
                        self.schedule(
                            at,
                            Event::Announced {
                                to: subscriber,
                                from: i,
                                topic,
                                cells,
                                epoch,
                                count,
                            },
                        );
                    }
                }
            }
            Output::Connect(peer) => {
                let Some(&other) = self.index.get(&peer) else {
                    return;
                };
                let key = pair(i, other);
                if other == i || self.links.contains_key(&key) {
                    return;
                }
                self.links.insert(key, LinkState::Opening);
                // Offer, answer and ICE checks: about three one-way trips.
                let at = self.now + 3 * self.latency();
                self.schedule(at, Event::Establish { a: i, b: other });
            }
            Output::Disconnect(peer) => {
                let Some(&other) = self.index.get(&peer) else {
                    return;
                };
                if self.links.remove(&pair(i, other)).is_some() {
                    self.peers[i].adjacent.remove(&other);
                    self.peers[other].adjacent.remove(&i);
                    let key = self.peers[i].key;
                    let at = self.now + self.latency();
                    self.input_at(at, other, Input::LinkDown { peer: key });
                }
            }
            Output::Send { to, message } => {
                let Some(&other) = self.index.get(&to) else {
                    return;
                };
                let at = self.now + self.latency();
                self.schedule(
                    at,
                    Event::Message {
                        from: i,
                        to: other,
                        message,
                    },
                );
            }
            Output::WakeAt(when) => {
                // Rounded up: a tick a fraction of a microsecond early would find the overlay
                // not yet due, and it asks for each wake only once.
                let since = when.saturating_duration_since(self.base);
                let at = u64::try_from(since.as_micros())
                    .unwrap_or(u64::MAX)
                    .saturating_add(u64::from(since.subsec_nanos() % 1_000 != 0));
                self.input_at(at.max(self.now), i, Input::Tick);
            }
            Output::Deliver(delivery) => self.record(i, &delivery),
            Output::Event(crate::OverlayEvent::CellsChanged { cells, .. }) => {
                if std::env::var_os("GENOS_SIM_DEBUG").is_some() && self.now > 5_000_000 {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("t={} peer {i} cells -> {cells}", self.now / 1000);
                    }
                }
            }
            Output::Event(_) => {}
        }
    }

    pub(super) fn record(&mut self, i: usize, delivery: &Delivery) {
        if delivery.directed {
            self.directed_delivered += 1;
            return;
        }
        let now = self.now;
        if let Some(tracked) = self.tracked.get_mut(&(delivery.origin, delivery.seq)) {
            if delivery.payload != tracked.payload || delivery.meta.as_ref() != b"sim" {
                tracked.corrupted = true;
            }
            if let Some(seen) = tracked.delivered.get_mut(i) {
                if !*seen {
                    *seen = true;
                    tracked.count += 1;
                    tracked.last_at = now;
                    tracked.max_hops = tracked.max_hops.max(delivery.hops);
                    self.hops.add(u64::from(delivery.hops));
                } else {
                    // Delivered twice to the application: the overlay's dedup failed.
                    tracked.count = usize::MAX / 2;
                }
            }
        }
    }
}
