//! Cells rooms: the cellular overlay (`genos-cellmesh`) under a real room.
//!
//! The overlay is a sans-IO machine; this module carries out what it asks for that is not
//! about links: joining and leaving its signaling topics (one signaling session per topic,
//! derived from the room key), announcing on them, and turning what the overlay delivers
//! back into channel messages. Links stay the room machine's: the overlay's `Connect` and
//! `Disconnect` become the machine's inputs, the machine's links become the overlay's
//! `LinkUp`/`LinkDown`, and overlay messages travel as sealed `Mesh` frames on links.
//!
//! Channel messages cross the overlay in chunks of [`CellsSettings::chunk_size`], each an
//! overlay frame signed by its origin (sealed for the room, or for the target alone when
//! directed); receivers reassemble them per origin ([`inbox`]). Messages of one sender may
//! arrive out of order relative to each other (their chunks take different paths).

mod inbox;
mod status;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos_cellmesh::{CryptoAuth, Delivery, Input as MeshInput, MeshTopic, Overlay};
use genos_crypto::{Identity, PeerId, RoomKey};
use genos_signal::{JoinRequest, SignalEvent, SignalSession, Signaling, Topic};
use tokio::sync::{mpsc, oneshot};

use self::inbox::MeshInbox;
use self::wire::{ChunkMeta, MeshPresence, topic_label};
use crate::channel::{Message, Progress};
use crate::link::reject;
use crate::reassembly::{Assembled, Pushed};
use crate::registry::{Route, deliver};
use crate::shared::Shared;
use crate::stats::bump;
use crate::wire::PROTOCOL_VERSION;
use crate::{CellsSettings, FrameError};

pub(crate) use status::StatusCell;
pub use status::{MeshStatus, missing_planned_links, planned_peers};

/// Overlay messages from links queued for the driver; links wait when it is full.
pub(crate) const MESH_INBOX: usize = 1024;
/// Sends of channels queued for the driver; senders wait when it is full.
pub(crate) const MESH_COMMANDS: usize = 64;
/// Payloads the overlay delivered, queued for reassembly; beyond it they are dropped
/// (counted as lost) rather than stall forwarding for everyone.
const DELIVERY_QUEUE: usize = 4096;
/// Topic events queued for the driver.
const TOPIC_NOTES: usize = 1024;
/// Messages whose failed delivery was reported, remembered so each is reported once.
const FAILURES_REMEMBERED: usize = 256;
/// Presence remembered per room (what the relays hold on the topics this peer follows);
/// at the bound the entry heard longest ago is forgotten.
const MAX_PRESENCE: usize = 4096;

/// What a topic's task tells the driver.
pub(crate) enum TopicNote<S: SignalSession> {
    Joined {
        topic: MeshTopic,
        session: S,
    },
    Failed {
        topic: MeshTopic,
    },
    Event {
        topic: MeshTopic,
        event: SignalEvent,
    },
}

enum TopicState<S> {
    /// Being joined; the presence to announce once joined.
    Joining {
        stop: oneshot::Sender<()>,
        announce: Option<Bytes>,
    },
    Joined {
        session: S,
        _stop: oneshot::Sender<()>,
    },
}

/// The overlay of one room and its topics; owned by the driver.
pub(crate) struct MeshLayer<S: Signaling> {
    pub(crate) overlay: Overlay<CryptoAuth>,
    signaling: Arc<S>,
    key: RoomKey,
    local: PeerId,
    topics: HashMap<MeshTopic, TopicState<S::Session>>,
    notes: mpsc::Sender<TopicNote<S::Session>>,
    deliveries: mpsc::Sender<Delivery>,
    /// When the overlay asked to be woken.
    pub(crate) wake: Option<Instant>,
    pub(crate) status: Arc<StatusCell>,
    /// The presence heard on each followed topic, with when it was last heard: what the
    /// relays store. Replayed to the overlay every `replay_interval`, as a relay would to a
    /// new subscriber, so a peer the overlay gave up on after failed setups is tried again
    /// while its presence stands (not only after its next refresh, minutes later).
    presence: HashMap<(MeshTopic, PeerId), (MeshPresence, Instant)>,
    presence_ttl: Duration,
    replay_interval: Duration,
    next_replay: Instant,
    /// Messages whose failed delivery was reported lately (their other chunks fail about
    /// together), at most [`FAILURES_REMEMBERED`], oldest forgotten first.
    failures_reported: VecDeque<(PeerId, u64)>,
}

impl<S: Signaling> MeshLayer<S> {
    /// The overlay for `identity` in the room of `key`, and the queue its topic tasks
    /// report to. Starts the reassembly task.
    pub(crate) fn new(
        settings: &CellsSettings,
        identity: Identity,
        key: RoomKey,
        signaling: Arc<S>,
        shared: Arc<Shared>,
    ) -> (Self, mpsc::Receiver<TopicNote<S::Session>>) {
        let local = identity.peer_id();
        let mut config = settings.overlay.clone();
        // Grows across restarts, so a restarted peer's frames are not taken for replays.
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        config.first_seq = millis << 16;
        let auth = CryptoAuth::new(identity, key.data_key().clone());
        let overlay = Overlay::new(config, key.topic(), auth, rand::random());
        let (notes, note_rx) = mpsc::channel(TOPIC_NOTES);
        let (deliveries, delivery_rx) = mpsc::channel(DELIVERY_QUEUE);
        let limits = shared.limits;
        let inbox = MeshInbox::new(
            settings.max_partial_messages,
            limits.max_partial_bytes,
            limits.max_message_size,
            settings.partial_timeout,
        );
        tokio::spawn(reassemble(delivery_rx, inbox, shared));
        let layer = Self {
            overlay,
            signaling,
            key,
            local,
            topics: HashMap::new(),
            notes,
            deliveries,
            wake: None,
            status: Arc::new(StatusCell::default()),
            presence: HashMap::new(),
            presence_ttl: settings.presence_ttl,
            replay_interval: settings.replay_interval,
            next_replay: Instant::now() + settings.replay_interval,
            failures_reported: VecDeque::new(),
        };
        (layer, note_rx)
    }

    /// The event for a directed chunk the overlay gave up (its metadata is the chunk's
    /// header), unless its message was reported already.
    pub(crate) fn delivery_failed(
        &mut self,
        peer: PeerId,
        meta: &[u8],
    ) -> Option<crate::RoomEvent> {
        let header = ChunkMeta::decode(meta)?;
        let key = (peer, header.message);
        if self.failures_reported.contains(&key) {
            return None;
        }
        if self.failures_reported.len() >= FAILURES_REMEMBERED {
            self.failures_reported.pop_front();
        }
        self.failures_reported.push_back(key);
        Some(crate::RoomEvent::DeliveryFailed {
            peer,
            channel: header.channel,
            message: header.message,
        })
    }

    /// Joins `topic` in a task that then forwards its events.
    pub(crate) fn subscribe(&mut self, topic: MeshTopic) {
        if self.topics.contains_key(&topic) {
            return;
        }
        let (stop, stopped) = oneshot::channel();
        let signal_topic = Topic::from_bytes(self.key.sub_topic(&topic_label(topic)));
        let request =
            JoinRequest::new(signal_topic, self.local).with_seal_key(self.key.signal_key().clone());
        tokio::spawn(run_topic(
            self.signaling.clone(),
            request,
            topic,
            stopped,
            self.notes.clone(),
        ));
        self.topics.insert(
            topic,
            TopicState::Joining {
                stop,
                announce: None,
            },
        );
    }

    /// Leaves `topic` (its task leaves the session).
    pub(crate) fn unsubscribe(&mut self, topic: MeshTopic) {
        self.topics.remove(&topic);
        self.presence.retain(|(t, _), _| *t != topic);
    }

    /// The presence still standing, as overlay inputs, once per replay interval (nothing
    /// in between). Forgets presence not heard for the presence lifetime.
    pub(crate) fn replay(&mut self, now: Instant) -> Vec<MeshInput> {
        if now < self.next_replay {
            return Vec::new();
        }
        self.next_replay = now + self.replay_interval;
        let ttl = self.presence_ttl;
        self.presence
            .retain(|_, (_, heard)| now.saturating_duration_since(*heard) < ttl);
        let mut inputs: Vec<MeshInput> = self
            .presence
            .iter()
            .filter(|((topic, _), (p, _))| matches!(topic, MeshTopic::Cell { .. }) && p.count == 0)
            .map(|((topic, peer), (p, _))| MeshInput::Announced {
                peer: *peer.as_bytes(),
                topic: *topic,
                cells: p.cells,
                epoch: p.epoch,
                count: p.count,
            })
            .collect();
        // The same order every time (the overlay's plan does not depend on it, its logs do).
        inputs.sort_by_key(|input| match input {
            MeshInput::Announced { peer, .. } => *peer,
            _ => [0; 32],
        });
        inputs
    }

    /// Stops replaying `peer`'s presence: its link went down or its setup was given up on.
    /// The overlay then forgets the peer until it is heard again (a refresh, a new announce,
    /// a cell mate's roster). Replaying it would put a crashed peer back into every plan
    /// every `replay_interval` until its stored presence expires (11 minutes), each time
    /// costing a dial that fails and holding back the plan that routes around it.
    pub(crate) fn forget_presence(&mut self, peer: &PeerId) {
        self.presence.retain(|(_, p), _| p != peer);
    }

    fn remember(&mut self, topic: MeshTopic, peer: PeerId, presence: MeshPresence, now: Instant) {
        let key = (topic, peer);
        if !self.presence.contains_key(&key) && self.presence.len() >= MAX_PRESENCE {
            let oldest = self
                .presence
                .iter()
                .min_by_key(|(_, (_, heard))| *heard)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.presence.remove(&oldest);
            }
        }
        self.presence.insert(key, (presence, now));
    }

    /// Announces on `topic` now, or once it is joined.
    pub(crate) fn announce(&mut self, topic: MeshTopic, cells: u32, epoch: u32, count: u32) {
        let presence = MeshPresence::new(cells, epoch, count).encode();
        match self.topics.get_mut(&topic) {
            Some(TopicState::Joined { session, .. }) => spawn_announce(session.clone(), presence),
            Some(TopicState::Joining { announce, .. }) => *announce = Some(presence),
            None => tracing::debug!(?topic, "announce on a topic not joined"),
        }
    }

    /// A topic's task reported; returns the overlay input it makes, if any.
    pub(crate) fn on_note(&mut self, note: TopicNote<S::Session>) -> Option<MeshInput> {
        match note {
            TopicNote::Joined { topic, session } => {
                match self.topics.remove(&topic) {
                    Some(TopicState::Joining { stop, announce }) => {
                        if let Some(presence) = announce {
                            spawn_announce(session.clone(), presence);
                        }
                        let joined = TopicState::Joined {
                            session,
                            _stop: stop,
                        };
                        self.topics.insert(topic, joined);
                    }
                    // Unsubscribed meanwhile: the task saw its stop and leaves.
                    other => {
                        if let Some(state) = other {
                            self.topics.insert(topic, state);
                        }
                    }
                }
                None
            }
            TopicNote::Failed { topic } => {
                tracing::warn!(?topic, "could not join an overlay topic; retrying");
                // Forget it so the next subscribe (or the retry below) joins afresh.
                self.topics.remove(&topic);
                self.subscribe(topic);
                None
            }
            TopicNote::Event { topic, event } => match event {
                SignalEvent::PeerSeen { peer, presence } => {
                    let presence = MeshPresence::decode(&presence)
                        .filter(|p| p.protocol == PROTOCOL_VERSION)?;
                    if !self.topics.contains_key(&topic) {
                        return None;
                    }
                    self.remember(topic, peer, presence, Instant::now());
                    Some(MeshInput::Announced {
                        peer: *peer.as_bytes(),
                        topic,
                        cells: presence.cells,
                        epoch: presence.epoch,
                        count: presence.count,
                    })
                }
                SignalEvent::PeerGone { peer } => {
                    self.presence.remove(&(topic, peer));
                    Some(MeshInput::PeerLeft {
                        peer: *peer.as_bytes(),
                        topic,
                    })
                }
                _ => None,
            },
        }
    }

    /// Hands a payload the overlay delivered to reassembly; false if it had to be dropped.
    pub(crate) fn deliver(&self, delivery: Delivery) -> bool {
        self.deliveries.try_send(delivery).is_ok()
    }

    /// Leaves every topic.
    pub(crate) async fn leave(&mut self) {
        let sessions: Vec<S::Session> = self
            .topics
            .drain()
            .filter_map(|(_, state)| match state {
                TopicState::Joined { session, .. } => Some(session),
                TopicState::Joining { .. } => None,
            })
            .collect();
        for session in sessions {
            let _ = session.leave().await;
        }
    }

    /// Publishes the overlay's state for [`crate::Room::mesh_status`].
    pub(crate) fn publish_status(&self) {
        self.status
            .set(MeshStatus::of(&self.overlay, self.topics.len()));
    }
}

fn spawn_announce<S: SignalSession>(session: S, presence: Bytes) {
    tokio::spawn(async move {
        if let Err(error) = session.announce(presence).await {
            tracing::debug!(%error, "overlay announce failed");
        }
    });
}

/// Joins one overlay topic, reports it, forwards its events until told to stop (the
/// sender dropped), then leaves it.
async fn run_topic<S: Signaling>(
    signaling: Arc<S>,
    request: JoinRequest,
    topic: MeshTopic,
    mut stop: oneshot::Receiver<()>,
    notes: mpsc::Sender<TopicNote<S::Session>>,
) {
    let joined = tokio::select! {
        joined = signaling.join(request) => joined,
        _ = &mut stop => return,
    };
    let (session, mut events) = match joined {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, ?topic, "overlay topic join failed");
            // Give signaling a moment before the driver retries.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = notes.send(TopicNote::Failed { topic }).await;
            return;
        }
    };
    let note = TopicNote::Joined {
        topic,
        session: session.clone(),
    };
    if notes.send(note).await.is_ok() {
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(event) => {
                        if notes.send(TopicNote::Event { topic, event }).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = &mut stop => break,
            }
        }
    }
    let _ = session.leave().await;
}

/// Reassembles delivered chunks into messages and hands them to their channels.
async fn reassemble(
    mut deliveries: mpsc::Receiver<Delivery>,
    mut inbox: MeshInbox,
    shared: Arc<Shared>,
) {
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let delivery = tokio::select! {
            delivery = deliveries.recv() => match delivery {
                Some(delivery) => delivery,
                None => return,
            },
            _ = expiry.tick() => {
                let expired = inbox.expire(Instant::now());
                bump(&shared.counters.mesh_lost, expired as u64);
                continue;
            }
        };
        let origin = PeerId::from_bytes(delivery.origin);
        let counters = &shared.counters;
        bump(&counters.mesh_delivered, 1);
        bump(&counters.mesh_hops, u64::from(delivery.hops));
        let Some(header) = ChunkMeta::decode(&delivery.meta) else {
            reject(
                &shared,
                origin,
                FrameError::Malformed("overlay chunk header".into()),
            );
            continue;
        };
        let unreliable = header.unreliable;
        let assembled = inbox.push(origin, header, delivery.payload, Instant::now());
        let assembled = match assembled {
            Ok((assembled, evicted)) => {
                bump(&counters.mesh_lost, evicted as u64);
                assembled
            }
            Err(error) => {
                reject(&shared, origin, error);
                continue;
            }
        };
        match assembled {
            Pushed::Partial {
                channel,
                message,
                received,
                total,
            } => report_progress(&shared, &channel, origin, message, received, total),
            Pushed::Complete(Assembled {
                channel,
                message,
                payload,
                meta,
                chunked,
            }) => {
                let total = payload.len() as u64;
                if chunked {
                    report_progress(&shared, &channel, origin, message, total, total);
                }
                let message = Message {
                    from: origin,
                    payload,
                    meta,
                };
                if unreliable {
                    bump(&counters.datagrams_received, 1);
                } else {
                    bump(&counters.messages_received, 1);
                    bump(&counters.bytes_received, total);
                }
                hand_over(&shared, &channel, message).await;
            }
        }
    }
}

/// Tells the channel's progress subscriber, if any, without waiting for it.
fn report_progress(
    shared: &Shared,
    channel: &str,
    peer: PeerId,
    message: u64,
    done: u64,
    total: u64,
) {
    if let Some(progress) = shared.registry().progress(channel) {
        let _ = progress.try_send(Progress {
            peer,
            message,
            done,
            total,
        });
    }
}

/// Gives a message to its channel; never waits long on a slow reader (forwarding does not
/// wait for this peer's application): a full queue loses the message (counted).
async fn hand_over(shared: &Shared, channel: &str, message: Message) {
    let route = shared.registry().route(channel, &message);
    match route {
        Route::Open { sender, budget } => {
            if sender.capacity() == 0 {
                bump(&shared.counters.mesh_lost, 1);
                return;
            }
            let queue_bytes = shared.limits.channel_queue_bytes;
            if deliver(sender, budget, message, queue_bytes).await.is_err() {
                bump(&shared.counters.unopened_dropped, 1);
            }
        }
        Route::Kept => {}
        Route::Dropped => bump(&shared.counters.unopened_dropped, 1),
    }
}
