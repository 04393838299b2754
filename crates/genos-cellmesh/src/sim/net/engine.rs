//! The event loop of the simulated network: scheduling, dispatching events to overlays,
//! carrying out their outputs (links, topics, frames) and recording deliveries.
#![allow(clippy::indexing_slicing)]

use super::*;

impl<A: FrameAuth> Net<A> {
    fn latency(&mut self) -> u64 {
        self.config.latency_us + self.rng.below(self.config.jitter_us + 1)
    }

    /// Takes `n` tokens from peer `i`'s share of its relay budget for `budget` (each share
    /// refilled at its rate up to a minute's worth). Signaling waits for them (the tokens may
    /// go into debt; returns how long to wait); presence is refused when short (None).
    fn take_tokens(&mut self, i: usize, n: u32, budget: Budget) -> Option<u64> {
        let per_min = self.config.relay_events_per_min;
        if per_min == 0 {
            return Some(0);
        }
        let now = self.now;
        let share = budget.share(per_min);
        let bucket = &mut self.peers[i].buckets[budget as usize];
        let rate_per_us = share / 60e6;
        let elapsed = now.saturating_sub(bucket.at) as f64;
        bucket.tokens = (bucket.tokens + elapsed * rate_per_us).min(share);
        bucket.at = now;
        let need = f64::from(n);
        if bucket.tokens >= need {
            bucket.tokens -= need;
            return Some(0);
        }
        if budget == Budget::Presence {
            return None;
        }
        bucket.tokens -= need;
        Some((-bucket.tokens / rate_per_us).ceil() as u64)
    }

    /// A relay-signaled setup between `a` and `b` is over (up or failed).
    fn setup_over(&mut self, a: usize, b: usize, relay: bool) {
        if relay {
            for end in [a, b] {
                let peer = &mut self.peers[end];
                peer.relay_setups = peer.relay_setups.saturating_sub(1);
            }
        }
    }

    /// Issues the connects peer `i`'s driver held back (through the mesh if it now holds a
    /// link, else the next two through the relay).
    fn release_deferred(&mut self, i: usize) {
        if !self.alive[i] || self.peers[i].deferred.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.peers[i].deferred);
        for other in held {
            let key = self.keys[other];
            if !self.peers[other].gone {
                self.apply(i, Output::Connect(key));
            } else {
                // Gone while held back: the setup fails like any other to a dead peer.
                let at = self.now + self.config.detect_us;
                self.input_at(at, i, Input::LinkDown { peer: key });
            }
        }
    }

    fn relay_up(&self) -> bool {
        self.now >= self.relay_down_until
    }

    /// Peer `i` publishes its presence on `topic`: stored (replacing its previous one) and
    /// fanned out to the topic's subscribers, unless refused or the relay is down.
    fn publish(&mut self, i: usize, topic: MeshTopic, view: (u32, u32, u32)) {
        let (cells, epoch, count) = view;
        if !self.relay_up() || self.take_tokens(i, 1, Budget::Presence).is_none() {
            self.relay.refused += 1;
            return;
        }
        self.relay.published += 1;
        if self.config.stored_presence {
            self.announced
                .entry(topic)
                .or_default()
                .insert(i, (self.now, cells, epoch, count));
        }
        let subscribers = self.topics.get(&topic).cloned().unwrap_or_default();
        for subscriber in subscribers {
            if subscriber != i {
                // Publisher -> relay -> subscriber.
                let at = self.now + self.latency() + self.latency();
                self.relay.delivered += 1;
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

    /// The unexpired stored presence of `topic` for a new subscriber `i`.
    fn replay_stored(&mut self, i: usize, topic: MeshTopic) {
        if !self.config.stored_presence || !self.relay_up() {
            return;
        }
        let now = self.now;
        let expiry = self.config.presence_expiry_us;
        let mut recent: Vec<(u64, usize, u32, u32, u32)> = self
            .announced
            .get(&topic)
            .into_iter()
            .flatten()
            .filter(|(peer, (at, ..))| **peer != i && now.saturating_sub(*at) < expiry)
            .map(|(peer, (at, cells, epoch, count))| (*at, *peer, *cells, *epoch, *count))
            .collect();
        // Newest first, as relays answer a stored query (NIP-01). In the order peers
        // joined, every newcomer heard the same first few and dialled them first.
        recent.sort_by_key(|(at, peer, ..)| (std::cmp::Reverse(*at), *peer));
        // A stored query: one round trip, then the events.
        let at = self.now + self.latency() + self.latency();
        for (_, peer, cells, epoch, count) in recent {
            self.relay.delivered += 1;
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

    pub(super) fn schedule(&mut self, at: u64, event: Event) {
        self.queue.push(at, event);
    }

    /// Runs events until simulated time `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while let Some((at, event)) = self.queue.pop_until(until_us) {
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
                    Some(4) => "repair",
                    Some(5) => "digest",
                    Some(6) => "pull",
                    _ => "message",
                },
                Event::Establish { .. } => "establish",
                Event::SetupFailed { .. } => "setup failed",
                Event::RelayBack => "relay back",
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
                        self.alive[peer] = true;
                        p.started_at = self.now;
                    }
                    if !self.alive[peer] {
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
                    let peer = self.keys[from];
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
                let Some(from_key) = self.keys.get(from).copied() else {
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
            Event::SetupFailed { a, b, relay } => {
                self.setup_over(a, b, relay);
                if self.links.get(&pair(a, b)) != Some(&LinkState::Opening) {
                    return;
                }
                self.links.remove(&pair(a, b));
                for (me, other) in [(a, b), (b, a)] {
                    if self.is_alive(me) {
                        let key = self.keys[other];
                        self.feed(me, Input::LinkDown { peer: key });
                    }
                }
            }
            Event::RelayBack => {
                // Every live client resubscribes (nothing stored yet) and publishes its
                // presence again, which reaches the others' fresh subscriptions.
                for i in 0..self.peers.len() {
                    if !self.alive[i] {
                        continue;
                    }
                    let published: Vec<(MeshTopic, (u32, u32, u32))> = self.peers[i]
                        .published
                        .iter()
                        .map(|(topic, view)| (*topic, *view))
                        .collect();
                    for (topic, view) in published {
                        self.publish(i, topic, view);
                    }
                }
            }
            Event::Establish { a, b, relay } => {
                self.setup_over(a, b, relay);
                if self.links.get(&pair(a, b)) != Some(&LinkState::Opening) {
                    self.release_deferred(a);
                    return;
                }
                if self.is_alive(a) && self.is_alive(b) {
                    self.links.insert(pair(a, b), LinkState::Up);
                    for (me, other) in [(a, b), (b, a)] {
                        if let Some(peer) = self.peers.get_mut(me) {
                            peer.adjacent.insert(other);
                        }
                    }
                    let (ka, kb) = (self.keys[a], self.keys[b]);
                    self.feed(a, Input::LinkUp { peer: kb });
                    self.feed(b, Input::LinkUp { peer: ka });
                    self.release_deferred(a);
                    self.release_deferred(b);
                } else {
                    self.links.remove(&pair(a, b));
                    for (me, other) in [(a, b), (b, a)] {
                        if self.is_alive(me) {
                            let key = self.keys[other];
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
        // One vector for every input (taken while its outputs are carried out: an output
        // that feeds another input gets a fresh one).
        let mut outputs = std::mem::take(&mut self.outputs);
        peer.overlay.handle_into(input, now, &mut outputs);
        let mut accepted = true;
        for output in outputs.drain(..) {
            if matches!(output, Output::Event(crate::OverlayEvent::CommandFailed(_))) {
                accepted = false;
            }
            self.apply(i, output);
        }
        self.outputs = outputs;
        accepted
    }

    pub(super) fn apply(&mut self, i: usize, output: Output) {
        match output {
            Output::Subscribe(topic) => {
                if self.peers[i].topics.insert(topic) {
                    self.topics.entry(topic).or_default().push(i);
                    self.replay_stored(i, topic);
                }
            }
            Output::Unsubscribe(topic) => {
                if self.peers[i].topics.remove(&topic) {
                    if let Some(list) = self.topics.get_mut(&topic) {
                        list.retain(|member| *member != i);
                    }
                }
                self.peers[i].published.remove(&topic);
            }
            Output::Announce {
                topic,
                cells,
                epoch,
                count,
            } => {
                self.peers[i].published.insert(topic, (cells, epoch, count));
                self.publish(i, topic, (cells, epoch, count));
            }
            Output::Connect(peer) => {
                let Some(&other) = self.index.get(&peer) else {
                    return;
                };
                let key = pair(i, other);
                if other == i || self.links.contains_key(&key) {
                    return;
                }
                let via_mesh = self.config.signal_via_mesh
                    && !self.peers[i].adjacent.is_empty()
                    && !self.peers[other].adjacent.is_empty();
                // The driver signals its first links through the relay, two at a time, and
                // holds the rest back until a link is up (then they go through the mesh).
                if self.config.signal_via_mesh && !via_mesh && self.peers[i].relay_setups >= 2 {
                    if !self.peers[i].deferred.contains(&other) {
                        self.peers[i].deferred.push(other);
                    }
                    return;
                }
                self.links.insert(key, LinkState::Opening);
                let wait = if via_mesh {
                    // Offer and answer as directed frames: about two hops each way instead
                    // of publisher -> relay -> subscriber.
                    self.latency() + self.latency()
                } else {
                    let signals = self.config.signals_per_link;
                    self.relay.published += 2 * u64::from(signals);
                    self.peers[i].relay_setups += 1;
                    self.peers[other].relay_setups += 1;
                    self.take_tokens(i, signals, Budget::Signaling)
                        .unwrap_or(0)
                        .max(
                            self.take_tokens(other, signals, Budget::Signaling)
                                .unwrap_or(0),
                        )
                };
                let relay = !via_mesh;
                let mut setup = wait;
                for _ in 0..self.config.setup_trips {
                    setup += self.latency();
                }
                if self.rng.chance(self.config.link_failure) {
                    let at = self.now + wait + self.config.link_failure_us;
                    self.schedule(
                        at,
                        Event::SetupFailed {
                            a: i,
                            b: other,
                            relay,
                        },
                    );
                } else {
                    let at = self.now + setup;
                    self.schedule(
                        at,
                        Event::Establish {
                            a: i,
                            b: other,
                            relay,
                        },
                    );
                }
            }
            Output::Disconnect(peer) => {
                let Some(&other) = self.index.get(&peer) else {
                    return;
                };
                self.peers[i].deferred.retain(|held| *held != other);
                if self.links.remove(&pair(i, other)).is_some() {
                    self.peers[i].adjacent.remove(&other);
                    self.peers[other].adjacent.remove(&i);
                    let key = self.keys[i];
                    let at = self.now + self.latency();
                    self.input_at(at, other, Input::LinkDown { peer: key });
                }
            }
            Output::Send { to, message } => {
                let Some(&other) = self.index.get(&to) else {
                    return;
                };
                // Frames (1), repairs (4), digests (5) and pulls (6) may be lost.
                let lossy = matches!(message.first(), Some(1 | 4 | 5 | 6));
                if lossy && self.rng.chance(self.config.loss) {
                    self.lost += 1;
                    return;
                }
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
                    if !delivery.repaired {
                        tracked.eager_last_at = now;
                        tracked.eager_max_hops = tracked.eager_max_hops.max(delivery.hops);
                        self.hops.add(u64::from(delivery.hops));
                    }
                } else {
                    // Delivered twice to the application: the overlay's dedup failed.
                    tracked.count = usize::MAX / 2;
                }
            }
        }
    }
}
