//! `MemorySignaling`: an in-process hub that emulates a signaling medium.
//!
//! Every [`MemorySignaling`] clone is a client of the same hub. The hub emulates what a relay
//! network does to signaling traffic, with knobs for tests:
//!
//! - **latency** (fixed plus uniform jitter): deliveries are delayed on a timer task; at most
//!   [`MemorySignalingConfig::max_in_flight`] delayed deliveries are pending, further ones are dropped
//!   and counted in [`HubStats::dropped_in_flight`];
//! - **loss**: each delivery is dropped with probability [`MemorySignalingConfig::loss`], drawn from a
//!   seeded generator so runs are repeatable, and counted in [`HubStats::dropped_loss`];
//! - **partitions**: [`MemorySignaling::partition`] cuts all traffic between groups of peers
//!   (counted in [`HubStats::dropped_partition`]) until [`MemorySignaling::heal`].
//!
//! Presence is stored with the rules of the Nostr backend's stored presence: one presence per
//! peer per topic, replaced by each announce, expiring [`MemorySignalingConfig::presence_ttl`]
//! after it. A peer joining a topic finds every unexpired stored presence in its inbox when
//! `join` returns (no latency or loss on that answer, as on a relay). A
//! session dropped without [`SignalSession::leave`] stops silently, like a crashed peer, and
//! its presence is still offered to newcomers until it expires; `leave` removes it at once
//! (the Nostr backend replaces it with a tombstone). Unlike a relay, the hub does not ask the
//! session to refresh: [`SignalSession::announce`] once keeps presence for its lifetime.
//!
//! Bounds: payloads above [`MemorySignalingConfig::max_message_size`] are refused; a topic holds at most
//! [`MemorySignalingConfig::max_peers_per_topic`] peers; each session's inbox holds
//! [`MemorySignalingConfig::inbox_capacity`] events, overflow is dropped and reported as
//! [`SignalEvent::Lagged`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use genos_crypto::PeerId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::inbox::{Inbox, Pushed};
use crate::{
    EventStream, JoinRequest, SignalError, SignalEvent, SignalLimits, SignalSession, Signaling,
    Topic,
};

/// Knobs of a [`MemorySignaling`] hub.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemorySignalingConfig {
    /// Fixed delay added to every delivery. Default 0: delivered inline.
    pub latency: Duration,
    /// Uniform random extra delay in `[0, jitter]`. Default 0.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a delivery is lost. Default 0.
    pub loss: f64,
    /// Seed of the generator behind jitter and loss. Default 0.
    pub seed: u64,
    /// Largest payload accepted. Default 64 KiB, the size of a generous relay event.
    pub max_message_size: usize,
    /// Events a session's inbox holds before it drops. Default 1024.
    pub inbox_capacity: usize,
    /// Peers per topic. Default 4096.
    pub max_peers_per_topic: usize,
    /// Delayed deliveries pending at once across the hub. Default 65,536.
    pub max_in_flight: usize,
    /// How long a presence stays stored after its last announce. Default 11 min, as the
    /// Nostr backend's. At most `max_peers_per_topic` presences are stored per topic; when
    /// full, the one closest to expiring makes room.
    pub presence_ttl: Duration,
}

impl Default for MemorySignalingConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            seed: 0,
            max_message_size: 64 * 1024,
            inbox_capacity: 1024,
            max_peers_per_topic: 4096,
            max_in_flight: 65_536,
            presence_ttl: Duration::from_secs(660),
        }
    }
}

impl MemorySignalingConfig {
    /// Sets fixed latency and jitter.
    pub fn with_latency(mut self, latency: Duration, jitter: Duration) -> Self {
        self.latency = latency;
        self.jitter = jitter;
        self
    }

    /// Sets the loss probability and the seed of the generator.
    pub fn with_loss(mut self, loss: f64, seed: u64) -> Self {
        self.loss = loss;
        self.seed = seed;
        self
    }

    /// Sets the largest accepted payload.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets each session's inbox capacity.
    pub fn with_inbox_capacity(mut self, events: usize) -> Self {
        self.inbox_capacity = events;
        self
    }

    /// Sets how long presence stays stored after an announce.
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// Sets the per-topic peer limit.
    pub fn with_max_peers_per_topic(mut self, peers: usize) -> Self {
        self.max_peers_per_topic = peers;
        self
    }

    fn validate(&self) -> Result<(), SignalError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(SignalError::InvalidConfig(format!(
                "loss must be within [0, 1], got {}",
                self.loss
            )));
        }
        if self.inbox_capacity == 0 || self.max_peers_per_topic == 0 {
            return Err(SignalError::InvalidConfig(
                "inbox_capacity and max_peers_per_topic must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of what the hub did with traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Events placed in an inbox.
    pub delivered: u64,
    /// Events dropped because the addressee's inbox was full.
    pub dropped_overflow: u64,
    /// Events dropped by the loss knob.
    pub dropped_loss: u64,
    /// Events dropped because a partition separated sender and addressee.
    pub dropped_partition: u64,
    /// Events dropped because too many delayed deliveries were pending.
    pub dropped_in_flight: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    dropped_overflow: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_partition: AtomicU64,
    dropped_in_flight: AtomicU64,
    in_flight: AtomicU64,
}

struct Member {
    inbox: Inbox,
}

/// A peer's presence as the hub keeps it, past the session when it crashed.
struct StoredPresence {
    presence: Bytes,
    expires: tokio::time::Instant,
}

#[derive(Default)]
struct HubState {
    topics: HashMap<Topic, HashMap<PeerId, Member>>,
    stored: HashMap<Topic, HashMap<PeerId, StoredPresence>>,
    /// Peer -> partition group; peers in different groups cannot reach each other.
    partition: HashMap<PeerId, usize>,
}

struct Hub {
    config: MemorySignalingConfig,
    state: Mutex<HubState>,
    rng: Mutex<SmallRng>,
    counters: Counters,
}

/// An in-process signaling hub; clones share it. See the [module docs](self).
#[derive(Clone)]
pub struct MemorySignaling {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for MemorySignaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySignaling")
            .field("config", &self.hub.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A delivery that has passed the partition check: where it goes and what it carries.
struct Delivery {
    inbox: Inbox,
    event: SignalEvent,
}

impl MemorySignaling {
    /// A new, empty hub.
    ///
    /// # Panics
    /// Never; an invalid configuration is reported by [`MemorySignaling::try_new`]. This
    /// constructor clamps the loss probability into `[0, 1]` and capacities to at least 1.
    pub fn new(mut config: MemorySignalingConfig) -> Self {
        config.loss = config.loss.clamp(0.0, 1.0);
        config.inbox_capacity = config.inbox_capacity.max(1);
        config.max_peers_per_topic = config.max_peers_per_topic.max(1);
        Self::build(config)
    }

    /// A new hub, refusing an invalid configuration.
    pub fn try_new(config: MemorySignalingConfig) -> Result<Self, SignalError> {
        config.validate()?;
        Ok(Self::build(config))
    }

    fn build(config: MemorySignalingConfig) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        Self {
            hub: Arc::new(Hub {
                config,
                state: Mutex::new(HubState::default()),
                rng: Mutex::new(rng),
                counters: Counters::default(),
            }),
        }
    }

    /// The hub's configuration.
    pub fn config(&self) -> &MemorySignalingConfig {
        &self.hub.config
    }

    /// What the hub has done with traffic so far.
    pub fn stats(&self) -> HubStats {
        let c = &self.hub.counters;
        HubStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped_overflow: c.dropped_overflow.load(Ordering::Relaxed),
            dropped_loss: c.dropped_loss.load(Ordering::Relaxed),
            dropped_partition: c.dropped_partition.load(Ordering::Relaxed),
            dropped_in_flight: c.dropped_in_flight.load(Ordering::Relaxed),
        }
    }

    /// Cuts traffic between the given groups of peers. Peers in no group can still reach
    /// everyone. Replaces any earlier partition.
    pub fn partition(&self, groups: &[&[PeerId]]) {
        let mut state = self.hub.lock_state();
        state.partition.clear();
        for (index, group) in groups.iter().enumerate() {
            for peer in *group {
                state.partition.insert(*peer, index);
            }
        }
    }

    /// Removes any partition.
    pub fn heal(&self) {
        self.hub.lock_state().partition.clear();
    }

    /// Waits until no delayed delivery is pending: everything sent so far is in an inbox
    /// (or was dropped and counted).
    pub async fn wait_idle(&self) {
        while self.hub.counters.in_flight.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Number of peers currently joined to `topic`.
    pub fn members(&self, topic: &Topic) -> usize {
        self.hub
            .lock_state()
            .topics
            .get(topic)
            .map_or(0, HashMap::len)
    }
}

impl Hub {
    fn lock_state(&self) -> MutexGuard<'_, HubState> {
        // A poisoned lock only means another thread panicked mid-update of plain maps; the
        // maps stay structurally valid, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn limits(&self) -> SignalLimits {
        SignalLimits::new(self.config.max_message_size, self.config.inbox_capacity)
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), SignalError> {
        let limit = self.config.max_message_size;
        if payload.len() > limit {
            return Err(SignalError::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Builds the delivery to `to`, or counts why there is none.
    fn route(
        &self,
        state: &HubState,
        members: &HashMap<PeerId, Member>,
        from: PeerId,
        to: PeerId,
        event: SignalEvent,
    ) -> Option<Delivery> {
        let member = members.get(&to)?;
        let separated = match (state.partition.get(&from), state.partition.get(&to)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        if separated {
            self.counters
                .dropped_partition
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Delivery {
            inbox: member.inbox.clone(),
            event,
        })
    }

    /// Applies loss and latency, then places deliveries in inboxes.
    fn dispatch(self: &Arc<Self>, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let delay = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                if self.config.loss > 0.0 && rng.random_bool(self.config.loss) {
                    self.counters.dropped_loss.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let jitter = if self.config.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    self.config.jitter.mul_f64(rng.random_range(0.0..=1.0_f64))
                };
                self.config.latency + jitter
            };
            if delay.is_zero() {
                self.place(delivery);
                continue;
            }
            let pending = self.counters.in_flight.fetch_add(1, Ordering::AcqRel);
            if pending >= self.config.max_in_flight as u64 {
                self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.counters
                    .dropped_in_flight
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let hub = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                hub.place(delivery);
                hub.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    fn place(&self, delivery: Delivery) {
        let counter = match delivery.inbox.push(delivery.event) {
            Pushed::Queued => &self.counters.delivered,
            Pushed::Dropped => &self.counters.dropped_overflow,
            // The addressee left meanwhile: nobody to tell.
            Pushed::Closed => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a member; `say_goodbye` tells the others.
    fn remove(self: &Arc<Self>, topic: Topic, peer: PeerId, say_goodbye: bool) {
        let deliveries = {
            let mut state = self.lock_state();
            let Some(members) = state.topics.get_mut(&topic) else {
                return;
            };
            if members.remove(&peer).is_none() {
                return;
            }
            if say_goodbye && let Some(stored) = state.stored.get_mut(&topic) {
                // A goodbye replaces the stored presence (a tombstone on a relay).
                stored.remove(&peer);
                if stored.is_empty() {
                    state.stored.remove(&topic);
                }
            }
            let Some(members) = state.topics.get_mut(&topic) else {
                return;
            };
            let members = std::mem::take(members);
            let deliveries = if say_goodbye {
                members
                    .keys()
                    .filter_map(|other| {
                        self.route(
                            &state,
                            &members,
                            peer,
                            *other,
                            SignalEvent::PeerGone { peer },
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if members.is_empty() {
                state.topics.remove(&topic);
            } else {
                state.topics.insert(topic, members);
            }
            deliveries
        };
        self.dispatch(deliveries);
    }
}

impl Signaling for MemorySignaling {
    type Session = MemorySession;
    type Events = MemoryEvents;

    async fn join(
        &self,
        request: JoinRequest,
    ) -> Result<(MemorySession, MemoryEvents), SignalError> {
        let hub = &self.hub;
        let (inbox, events) = Inbox::new(hub.config.inbox_capacity);
        // The hub is in-process: nothing to seal against, so the seal key is not needed.
        let (topic, local_peer) = (request.topic, request.local_peer);
        let deliveries: Vec<Delivery> = {
            let mut state = hub.lock_state();
            let members = state.topics.entry(topic).or_default();
            if members.contains_key(&local_peer) {
                return Err(SignalError::AlreadyJoined);
            }
            if members.len() >= hub.config.max_peers_per_topic {
                return Err(SignalError::TopicFull {
                    limit: hub.config.max_peers_per_topic,
                });
            }
            members.insert(local_peer, Member { inbox });
            // Stored presence: tell the newcomer about every unexpired one.
            let now = tokio::time::Instant::now();
            if let Some(stored) = state.stored.get_mut(&topic) {
                stored.retain(|_, s| s.expires > now);
            }
            let state = &*state;
            let (Some(members), Some(stored)) =
                (state.topics.get(&topic), state.stored.get(&topic))
            else {
                return Ok(hub.finish_join(topic, local_peer, events));
            };
            stored
                .iter()
                .filter(|(peer, _)| **peer != local_peer)
                .filter_map(|(peer, stored)| {
                    let event = SignalEvent::PeerSeen {
                        peer: *peer,
                        presence: stored.presence.clone(),
                    };
                    hub.route(state, members, *peer, local_peer, event)
                })
                .collect()
        };
        // Stored presence is in the inbox when join returns, without latency or loss, as a
        // relay answers the stored query before it confirms the subscription.
        for delivery in deliveries {
            hub.place(delivery);
        }
        Ok(hub.finish_join(topic, local_peer, events))
    }
}

impl Hub {
    fn finish_join(
        self: &Arc<Self>,
        topic: Topic,
        peer: PeerId,
        events: MemoryEvents,
    ) -> (MemorySession, MemoryEvents) {
        let session = MemorySession {
            inner: Arc::new(SessionInner {
                hub: self.clone(),
                topic,
                peer,
                left: Mutex::new(false),
                published: AtomicU64::new(0),
            }),
        };
        (session, events)
    }

    /// Stores `peer`'s presence, making room (expired first, then the one closest to
    /// expiring) when the topic is full.
    fn store_presence(&self, state: &mut HubState, topic: Topic, peer: PeerId, presence: Bytes) {
        let now = tokio::time::Instant::now();
        let stored = state.stored.entry(topic).or_default();
        if !stored.contains_key(&peer) && stored.len() >= self.config.max_peers_per_topic {
            stored.retain(|_, s| s.expires > now);
            if stored.len() >= self.config.max_peers_per_topic
                && let Some(oldest) = stored
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(peer, _)| *peer)
            {
                stored.remove(&oldest);
            }
        }
        stored.insert(
            peer,
            StoredPresence {
                presence,
                expires: now + self.config.presence_ttl,
            },
        );
    }
}

struct SessionInner {
    hub: Arc<Hub>,
    topic: Topic,
    peer: PeerId,
    left: Mutex<bool>,
    /// Announces and messages sent (what a relay would count as published events).
    published: AtomicU64,
}

impl SessionInner {
    fn has_left(&self) -> bool {
        *self.left.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the session left; returns whether it was still joined.
    fn mark_left(&self) -> bool {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        !std::mem::replace(&mut *left, true)
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // Dropped without leave: vanish silently, as a crashed peer would.
        if self.mark_left() {
            self.hub.remove(self.topic, self.peer, false);
        }
    }
}

/// A session on a [`MemorySignaling`] hub.
#[derive(Clone)]
pub struct MemorySession {
    inner: Arc<SessionInner>,
}

impl std::fmt::Debug for MemorySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySession")
            .field("peer", &self.inner.peer)
            .field("topic", &self.inner.topic)
            .finish()
    }
}

impl MemorySession {
    /// Sends `event` from this peer to `targets` (all other members when `None`).
    fn fan_out(&self, targets: Option<PeerId>, event: SignalEvent, store_presence: Option<Bytes>) {
        let inner = &self.inner;
        let hub = &inner.hub;
        let deliveries: Vec<Delivery> = {
            let mut state = hub.lock_state();
            if let Some(presence) = store_presence {
                hub.store_presence(&mut state, inner.topic, inner.peer, presence);
            }
            let state = &*state;
            let Some(members) = state.topics.get(&inner.topic) else {
                return;
            };
            match targets {
                Some(to) if to != inner.peer => hub
                    .route(state, members, inner.peer, to, event)
                    .into_iter()
                    .collect(),
                Some(_) => Vec::new(),
                None => members
                    .keys()
                    .filter(|peer| **peer != inner.peer)
                    .filter_map(|peer| hub.route(state, members, inner.peer, *peer, event.clone()))
                    .collect(),
            }
        };
        hub.dispatch(deliveries);
    }

    fn ensure_joined(&self) -> Result<(), SignalError> {
        if self.inner.has_left() {
            Err(SignalError::Left)
        } else {
            Ok(())
        }
    }
}

impl SignalSession for MemorySession {
    fn local_peer(&self) -> PeerId {
        self.inner.peer
    }

    fn health(&self) -> crate::SignalHealth {
        let connected = self.ensure_joined().is_ok();
        let state = if connected { "connected" } else { "left" };
        let hub = crate::MediumHealth::new("memory hub", connected, state);
        let published = self.inner.published.load(Ordering::Relaxed);
        crate::SignalHealth::new(vec![hub], published, 0, 0)
    }

    fn topic(&self) -> Topic {
        self.inner.topic
    }

    fn limits(&self) -> SignalLimits {
        self.inner.hub.limits()
    }

    async fn announce(&self, presence: Bytes) -> Result<(), SignalError> {
        self.ensure_joined()?;
        self.inner.hub.check_size(&presence)?;
        let event = SignalEvent::PeerSeen {
            peer: self.inner.peer,
            presence: presence.clone(),
        };
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        self.fan_out(None, event, Some(presence));
        Ok(())
    }

    async fn send_to(&self, peer: PeerId, message: Bytes) -> Result<(), SignalError> {
        self.ensure_joined()?;
        self.inner.hub.check_size(&message)?;
        let event = SignalEvent::Message {
            from: self.inner.peer,
            payload: message,
        };
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        self.fan_out(Some(peer), event, None);
        Ok(())
    }

    async fn leave(&self) -> Result<(), SignalError> {
        if self.inner.mark_left() {
            self.inner
                .hub
                .remove(self.inner.topic, self.inner.peer, true);
        }
        Ok(())
    }
}

/// The event stream of a [`MemorySession`].
pub type MemoryEvents = EventStream;

#[cfg(test)]
mod tests;
