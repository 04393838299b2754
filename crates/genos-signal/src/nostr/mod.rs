//! `NostrSignaling`: peers meet through Nostr relays, with no server of ours.
//!
//! Each join opens one WebSocket per relay (a task each, so a slow or dead relay never
//! delays the others), subscribes to the room's topic and to this peer's own topic, and
//! publishes ephemeral events whose content is sealed with the room's signaling subkey (see
//! [`wire`](self) in `docs/protocol.md`). Every incoming event is checked: id and signature,
//! kind and tag, a seal bound to the event's author and topic, dedup and replay guard. What
//! fails is dropped and counted in [`NostrStats`].
//!
//! **Relay pool.** The session connects at once, in parallel, to [`NostrConfig::relays`] (or
//! [`DEFAULT_RELAYS`] when none are given). `join` returns as soon as one relay has
//! confirmed the subscription. With an extended relay list ([`NostrConfig::relay_cache`]), it
//! then connects in the background, after a jittered delay, to more relays from that list
//! until [`NostrConfig::redundancy`] relays are active, and replaces muted ones from it.
//! Relays that refuse us (`pow:` beyond [`NostrConfig::max_pow_difficulty`],
//! `auth-required:` after AUTH, `restricted:`, `blocked:`, `CLOSED`), acknowledge events
//! slower than [`NostrConfig::slow_relay_threshold`] or fail
//! [`NostrConfig::max_consecutive_failures`] times in a row are muted; `rate-limited:` pauses
//! publishing to that relay with a growing delay; NIP-42 AUTH is answered; NIP-13 proof of
//! work is mined when a relay asks for at most the configured difficulty. Lost connections
//! come back with jittered exponential backoff and resubscribe. [`NostrSession::relays`]
//! reports each relay's health.
//!
//! **Etiquette.** Public relays have blocked and been knocked over by announce traffic from
//! browser P2P libraries. A session announces once at `announce`, then at the offsets of
//! [`NostrConfig::announce_burst`], then every [`NostrConfig::announce_interval`] (default
//! one minute: one event per relay per peer per minute in steady state), plus once after each
//! (re)subscription to a relay. [`NostrStats::published`] counts every event.

mod directory;
mod health;
mod relay;
mod wire;

#[cfg(feature = "relay")]
mod embedded;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use genos_crypto::{Identity, PeerId, ReplayError, ReplayGuard, ReplayGuardConfig, SealKey};
use nostr::prelude::*;
use tokio::sync::{Notify, mpsc};

pub use self::directory::fetch_relay_directory;
#[cfg(feature = "relay")]
pub use self::embedded::{EmbeddedRelay, EmbeddedRelayConfig};
pub use self::health::{MuteReason, RelayHealth, RelayState};
use self::relay::{Command, Incoming, Outgoing, PresenceSource, Worker};
use self::wire::{Content, ContentError, ContentKind};
use crate::inbox::{Inbox, Pushed};
use crate::{
    EventStream, JoinRequest, SignalError, SignalEvent, SignalLimits, SignalSession, Signaling,
    Topic,
};

/// Public relays used when the configuration names none. Tests always configure their own.
pub const DEFAULT_RELAYS: &[&str] = &[
    "wss://relay.damus.io",
    "wss://nos.lol",
    "wss://relay.nostr.band",
    "wss://relay.primal.net",
];

/// Settings of a [`NostrSignaling`] backend. Every default is commented with its reason.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NostrConfig {
    /// Relays to connect to at once. Empty: [`DEFAULT_RELAYS`].
    pub relays: Vec<String>,
    /// A JSON file (an array of relay URLs) holding the extended relay list; read at join,
    /// dialled in the background. Default none.
    pub relay_cache: Option<PathBuf>,
    /// A relay directory (http:// or https://, answering a JSON array of relay URLs) from
    /// which the extended list is refreshed in the background after join, and written to
    /// `relay_cache` when set. Default none (no directory traffic unless asked for).
    pub directory_url: Option<String>,
    /// Relays to keep active when an extended list is available. Default 5: enough that two
    /// or three may fail without peers losing each other, few enough to be polite.
    pub redundancy: usize,
    /// Delay range before dialling the extended list, so a crowd of peers starting together
    /// does not arrive at once. Default 0.5 to 3 s.
    pub background_delay: (Duration, Duration),
    /// Time allowed to open a WebSocket. Default 5 s.
    pub connect_timeout: Duration,
    /// How long `join` waits for the first relay to confirm the subscription. Default 10 s.
    pub join_timeout: Duration,
    /// First reconnect delay; doubles per failure. Default 1 s.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay. Default 30 s (GenosRTC also caps at 30 s).
    pub reconnect_max: Duration,
    /// Failures in a row before a relay is muted. Default 8 (about three minutes of
    /// backoff).
    pub max_consecutive_failures: u32,
    /// A relay whose smoothed publish-to-`OK` time exceeds this, over at least three
    /// acknowledgements, is muted as slow. Default 5 s: signaling that slow makes joins feel
    /// broken, and other relays carry the same events.
    pub slow_relay_threshold: Duration,
    /// Largest proof-of-work difficulty mined when a relay asks. Default 16 (tens of ms).
    pub max_pow_difficulty: u8,
    /// Largest relay message handled; larger ones are dropped and counted. Default 128 KiB.
    pub max_event_size: usize,
    /// WebSocket message and frame cap; larger frames end the connection. Default 256 KiB.
    pub max_relay_message: usize,
    /// Largest payload of `announce` and `send_to`. Default 16 KiB: an SDP offer with
    /// candidates is 2-6 KiB.
    pub max_message_size: usize,
    /// Events the session's inbox holds before dropping (reported as `Lagged`). Default 1024.
    pub inbox_capacity: usize,
    /// Verified-or-not events queued from all relays to the session. Default 1024.
    pub incoming_capacity: usize,
    /// Events queued per relay while it is disconnected (oldest dropped first). Default 64.
    pub relay_queue: usize,
    /// Queued events older than this are not sent after a reconnect. Default 60 s.
    pub queued_event_max_age: Duration,
    /// Offsets after `announce` at which presence is published again. Default 2 s and 6 s.
    pub announce_burst: Vec<Duration>,
    /// Steady re-announce interval after the burst. Default 60 s: one event per relay per
    /// peer per minute.
    pub announce_interval: Duration,
    /// Replay guard (skew window and remembered ids).
    pub replay: ReplayGuardConfig,
}

impl Default for NostrConfig {
    fn default() -> Self {
        Self {
            relays: Vec::new(),
            relay_cache: None,
            directory_url: None,
            redundancy: 5,
            background_delay: (Duration::from_millis(500), Duration::from_secs(3)),
            connect_timeout: Duration::from_secs(5),
            join_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            max_consecutive_failures: 8,
            slow_relay_threshold: Duration::from_secs(5),
            max_pow_difficulty: 16,
            max_event_size: 128 * 1024,
            max_relay_message: 256 * 1024,
            max_message_size: 16 * 1024,
            inbox_capacity: 1024,
            incoming_capacity: 1024,
            relay_queue: 64,
            queued_event_max_age: Duration::from_secs(60),
            announce_burst: vec![Duration::from_secs(2), Duration::from_secs(6)],
            announce_interval: Duration::from_secs(60),
            replay: ReplayGuardConfig::default(),
        }
    }
}

impl NostrConfig {
    /// A configuration that uses exactly these relays.
    pub fn with_relays<I, S>(relays: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            relays: relays.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Sets the inbox capacity.
    pub fn with_inbox_capacity(mut self, events: usize) -> Self {
        self.inbox_capacity = events;
        self
    }

    /// Sets the extended relay list file.
    pub fn with_relay_cache(mut self, path: impl Into<PathBuf>) -> Self {
        self.relay_cache = Some(path.into());
        self
    }

    /// Sets the reconnect backoff bounds.
    pub fn with_reconnect(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max;
        self
    }

    fn validate(&self) -> Result<(), SignalError> {
        let invalid = |what: &str| Err(SignalError::InvalidConfig(what.to_owned()));
        if self.inbox_capacity == 0 || self.incoming_capacity == 0 || self.relay_queue == 0 {
            return invalid("capacities must be at least 1");
        }
        if self.max_message_size == 0 || self.max_message_size * 2 > self.max_event_size {
            return invalid("max_event_size must be at least twice max_message_size");
        }
        if self.announce_interval.is_zero() {
            return invalid("announce_interval must not be zero");
        }
        for url in &self.relays {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(SignalError::InvalidConfig(format!(
                    "relay URL {url:?} is not ws:// or wss://"
                )));
            }
        }
        Ok(())
    }
}

/// Reads an extended relay list: a JSON array of `ws://`/`wss://` URLs, at most 64 KiB and
/// 256 entries; anything else in the file is ignored. Missing or unreadable: empty.
pub fn read_relay_cache(path: &std::path::Path) -> Vec<String> {
    const MAX_FILE: u64 = 64 * 1024;
    const MAX_ENTRIES: usize = 256;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if metadata.len() > MAX_FILE {
        tracing::warn!(path = %path.display(), "relay cache too large, ignored");
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
        tracing::warn!(path = %path.display(), "relay cache is not a JSON array, ignored");
        return Vec::new();
    };
    values
        .iter()
        .filter_map(serde_json::Value::as_str)
        .filter(|url| url.starts_with("ws://") || url.starts_with("wss://"))
        .take(MAX_ENTRIES)
        .map(str::to_owned)
        .collect()
}

/// Writes an extended relay list (creating or replacing the file).
pub fn write_relay_cache(path: &std::path::Path, relays: &[String]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(relays).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Counters of one session: what it published and what it dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NostrStats {
    /// Events published (each counted once, whatever the number of relays).
    pub published: u64,
    /// Presence announcements among them.
    pub announces: u64,
    /// Events delivered to the application.
    pub delivered: u64,
    /// Copies of an event already delivered (the same message from another relay).
    pub duplicates: u64,
    /// Events with a bad id or signature, wrong kind or tag.
    pub dropped_invalid: u64,
    /// Events whose content does not open with the room key for their author.
    pub dropped_unsealed: u64,
    /// Events refused by the replay guard (too old or from the future).
    pub dropped_replay: u64,
    /// Events dropped because the application's inbox was full.
    pub dropped_overflow: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    announces: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_unsealed: AtomicU64,
    dropped_replay: AtomicU64,
    dropped_overflow: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NostrStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NostrStats {
            published: get(&self.published),
            announces: get(&self.announces),
            delivered: get(&self.delivered),
            duplicates: get(&self.duplicates),
            dropped_invalid: get(&self.dropped_invalid),
            dropped_unsealed: get(&self.dropped_unsealed),
            dropped_replay: get(&self.dropped_replay),
            dropped_overflow: get(&self.dropped_overflow),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The Nostr relay signaling backend. See the [module docs](self).
#[derive(Clone)]
pub struct NostrSignaling {
    identity: Arc<Identity>,
    keys: Keys,
    config: Arc<NostrConfig>,
}

impl std::fmt::Debug for NostrSignaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NostrSignaling")
            .field("peer", &self.identity.peer_id())
            .field("relays", &self.config.relays)
            .finish_non_exhaustive()
    }
}

impl NostrSignaling {
    /// A backend that signs as `identity` (its peer id is its Nostr public key).
    pub fn new(identity: Identity, config: NostrConfig) -> Result<Self, SignalError> {
        config.validate()?;
        let secret = identity.secret_bytes();
        let secret = SecretKey::from_slice(secret.as_ref())
            .map_err(|e| SignalError::InvalidConfig(format!("identity: {e}")))?;
        Ok(Self {
            identity: Arc::new(identity),
            keys: Keys::new(secret),
            config: Arc::new(config),
        })
    }

    /// The peer id this backend joins as.
    pub fn peer_id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// The configuration.
    pub fn config(&self) -> &NostrConfig {
        &self.config
    }
}

/// State shared by a session's handle, its router and its relay workers.
struct Shared {
    topic: Topic,
    peer: PeerId,
    keys: Keys,
    seal: SealKey,
    config: Arc<NostrConfig>,
    kind: Kind,
    room_tag: String,
    counters: Counters,
    presence: Mutex<Option<Bytes>>,
    announce_reset: Arc<Notify>,
    relays: Mutex<Vec<RelayHandle>>,
    left: AtomicBool,
    /// Tells the router to stop (a stored permit, so it cannot be missed).
    stop: Notify,
    incoming: mpsc::Sender<Incoming>,
    subscribed: Arc<Notify>,
}

struct RelayHandle {
    commands: mpsc::Sender<Command>,
    health: Arc<Mutex<RelayHealth>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    /// Builds, seals and signs an event.
    fn build(
        &self,
        kind: ContentKind,
        to: Option<PeerId>,
        payload: &[u8],
    ) -> Result<Outgoing, SignalError> {
        let content = Content {
            version: wire::CONTENT_VERSION,
            kind,
            id: rand::random(),
            timestamp_ms: now_ms(),
            to,
            payload: payload.to_vec(),
        };
        let text = wire::seal_content(&self.seal, &self.topic, self.peer, &content)?;
        let tag = match to {
            Some(peer) => wire::peer_tag(&self.topic, &peer),
            None => self.room_tag.clone(),
        };
        let template = EventBuilder::new(self.kind, text).tag(Tag::custom("x", [tag]));
        let event = template
            .clone()
            .finalize(&self.keys)
            .map_err(|e| SignalError::Sign(e.to_string()))?;
        Ok(Outgoing {
            event: Arc::new(event),
            template: Arc::new(template),
            created: Instant::now(),
        })
    }

    fn publish(&self, outgoing: Outgoing) {
        bump(&self.counters.published);
        let relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        for relay in relays.iter() {
            if relay
                .commands
                .try_send(Command::Publish(outgoing.clone()))
                .is_err()
            {
                tracing::debug!("relay queue full: event dropped");
                let mut health = relay.health.lock().unwrap_or_else(|p| p.into_inner());
                health.publish_dropped += 1;
            }
        }
    }

    fn fresh_presence(&self) -> Option<Outgoing> {
        if self.left.load(Ordering::Acquire) {
            return None;
        }
        let presence = self
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        bump(&self.counters.announces);
        bump(&self.counters.published);
        match self.build(ContentKind::Presence, None, &presence) {
            Ok(outgoing) => Some(outgoing),
            Err(error) => {
                tracing::warn!(%error, "cannot refresh the presence");
                None
            }
        }
    }

    fn active_relays(&self) -> usize {
        let relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        relays
            .iter()
            .filter(|r| {
                r.health
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_active()
            })
            .count()
    }

    fn start_relay(self: &Arc<Self>, url: &str) {
        let (commands, receiver) = mpsc::channel(self.config.relay_queue);
        let health = Arc::new(Mutex::new(RelayHealth::new(url)));
        let me = wire::peer_tag(&self.topic, &self.peer);
        let filter = Filter::new()
            .kind(self.kind)
            .custom_tags(SingleLetterTag::LOWERCASE_X, [self.room_tag.clone(), me])
            .since(Timestamp::now() - Duration::from_secs(10));
        let weak = Arc::downgrade(self);
        let presence: PresenceSource =
            Arc::new(move || weak.upgrade().and_then(|shared| shared.fresh_presence()));
        let worker = Worker {
            url: url.to_owned(),
            subscription: SubscriptionId::new(format!(
                "genos-{}",
                hex::encode(rand::random::<[u8; 8]>())
            )),
            filter,
            keys: self.keys.clone(),
            config: self.config.clone(),
            health: health.clone(),
            incoming: self.incoming.clone(),
            subscribed: self.subscribed.clone(),
            presence,
            commands: receiver,
        };
        tokio::spawn(worker.run());
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RelayHandle { commands, health });
    }
}

impl Signaling for NostrSignaling {
    type Session = NostrSession;
    type Events = NostrEvents;

    async fn join(&self, request: JoinRequest) -> Result<(NostrSession, NostrEvents), SignalError> {
        if request.local_peer != self.identity.peer_id() {
            return Err(SignalError::InvalidConfig(
                "the join request's peer id is not this backend's identity".into(),
            ));
        }
        let topic = request.topic;
        let seal = request
            .seal_key
            .unwrap_or_else(|| wire::fallback_key(&topic));
        let (incoming, incoming_rx) = mpsc::channel(self.config.incoming_capacity);
        let (inbox, events) = Inbox::new(self.config.inbox_capacity);
        let shared = Arc::new(Shared {
            topic,
            peer: request.local_peer,
            keys: self.keys.clone(),
            seal,
            config: self.config.clone(),
            kind: Kind::Custom(wire::kind_for(&topic)),
            room_tag: wire::room_tag(&topic),
            counters: Counters::default(),
            presence: Mutex::new(None),
            announce_reset: Arc::new(Notify::new()),
            relays: Mutex::new(Vec::new()),
            left: AtomicBool::new(false),
            stop: Notify::new(),
            incoming,
            subscribed: Arc::new(Notify::new()),
        });
        let subscribed_notify = shared.subscribed.clone();
        let subscribed = subscribed_notify.notified();
        tokio::pin!(subscribed);
        subscribed.as_mut().enable();
        let initial: Vec<String> = if self.config.relays.is_empty() {
            DEFAULT_RELAYS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.config.relays.clone()
        };
        for url in &initial {
            shared.start_relay(url);
        }
        let router = Router {
            shared: shared.clone(),
            guard: ReplayGuard::new(self.config.replay),
            inbox,
            me_tag: wire::peer_tag(&topic, &request.local_peer),
        };
        tokio::spawn(router.run(incoming_rx));
        tokio::spawn(announcer(Arc::downgrade(&shared)));
        if self.config.relay_cache.is_some() || self.config.directory_url.is_some() {
            let cached = self.config.relay_cache.as_deref().map(read_relay_cache);
            tokio::spawn(extend(
                Arc::downgrade(&shared),
                initial.clone(),
                cached.unwrap_or_default(),
            ));
        }
        let session = NostrSession {
            handle: Arc::new(Handle { shared }),
        };
        if tokio::time::timeout(self.config.join_timeout, subscribed)
            .await
            .is_err()
        {
            session.shutdown();
            return Err(SignalError::Unavailable(format!(
                "no relay confirmed the subscription within {:?}",
                self.config.join_timeout
            )));
        }
        Ok((session, events))
    }
}

/// Re-announces on the etiquette schedule while the session lives.
async fn announcer(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let reset_notify = strong.announce_reset.clone();
        let reset = reset_notify.notified();
        let schedule = {
            let mut offsets = strong.config.announce_burst.clone();
            offsets.sort();
            offsets
        };
        let interval = strong.config.announce_interval;
        drop(strong);
        tokio::pin!(reset);
        let start = tokio::time::Instant::now();
        let mut next = schedule.into_iter();
        let mut steady_at = None;
        loop {
            let at = match next.next() {
                Some(offset) => start + offset,
                None => {
                    let last = steady_at.unwrap_or(tokio::time::Instant::now());
                    let at = last + interval;
                    steady_at = Some(at);
                    at
                }
            };
            tokio::select! {
                () = &mut reset => break,
                () = tokio::time::sleep_until(at) => {
                    let Some(strong) = shared.upgrade() else { return };
                    if strong.left.load(Ordering::Acquire) {
                        return;
                    }
                    if let Some(outgoing) = strong.fresh_presence() {
                        // fresh_presence counted it as published already.
                        let relays = strong.relays.lock().unwrap_or_else(|p| p.into_inner());
                        for relay in relays.iter() {
                            let _ = relay.commands.try_send(Command::Publish(outgoing.clone()));
                        }
                    }
                }
            }
        }
    }
}

/// After a jittered delay: refreshes the extended list from the directory (when configured,
/// saving it to the cache file), then connects to relays from it until enough are active,
/// and later replaces muted relays from what is left of it.
async fn extend(shared: std::sync::Weak<Shared>, initial: Vec<String>, cached: Vec<String>) {
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let config = strong.config.clone();
    drop(strong);
    let (low, high) = config.background_delay;
    let delay = if high > low {
        low + (high - low).mul_f64(rand::random::<f64>())
    } else {
        low
    };
    tokio::time::sleep(delay).await;
    let mut known = cached;
    if let Some(url) = &config.directory_url {
        match fetch_relay_directory(url, config.connect_timeout).await {
            Ok(listed) => {
                for relay in listed {
                    if !known.contains(&relay) {
                        known.push(relay);
                    }
                }
                if let Some(path) = &config.relay_cache
                    && let Err(error) = write_relay_cache(path, &known)
                {
                    tracing::warn!(%error, path = %path.display(), "cannot write the relay cache");
                }
            }
            Err(error) => tracing::info!(%error, "relay directory refresh failed"),
        }
    }
    let mut candidates: Vec<String> = known
        .into_iter()
        .filter(|url| !initial.contains(url))
        .collect();
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.left.load(Ordering::Acquire) {
            return;
        }
        while strong.active_relays() < config.redundancy && !candidates.is_empty() {
            let url = candidates.remove(0);
            tracing::debug!(%url, "dialling a relay from the extended list");
            strong.start_relay(&url);
        }
        if candidates.is_empty() {
            return;
        }
        drop(strong);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Verifies incoming events and turns them into [`SignalEvent`]s.
struct Router {
    shared: Arc<Shared>,
    guard: ReplayGuard,
    inbox: Inbox,
    me_tag: String,
}

impl Router {
    async fn run(mut self, mut incoming: mpsc::Receiver<Incoming>) {
        loop {
            let event = tokio::select! {
                biased;
                () = self.shared.stop.notified() => break,
                event = incoming.recv() => match event {
                    Some(Incoming { event }) => event,
                    None => break,
                },
            };
            if self.shared.left.load(Ordering::Acquire) {
                break;
            }
            if let Some(signal) = self.check(&event) {
                match self.inbox.push(signal) {
                    Pushed::Queued => bump(&self.shared.counters.delivered),
                    Pushed::Dropped => bump(&self.shared.counters.dropped_overflow),
                    Pushed::Closed => break,
                }
            }
        }
    }

    fn check(&mut self, event: &Event) -> Option<SignalEvent> {
        let counters = &self.shared.counters;
        if event.pubkey.to_bytes() == *self.shared.peer.as_bytes() {
            return None; // our own event, echoed by the relay
        }
        let tag = event
            .tags
            .iter()
            .find(|tag| tag.kind() == "x")
            .and_then(|tag| tag.content());
        let to_room = tag == Some(self.shared.room_tag.as_str());
        let to_me = tag == Some(self.me_tag.as_str());
        if event.kind != self.shared.kind || !(to_room || to_me) || event.verify().is_err() {
            bump(&counters.dropped_invalid);
            return None;
        }
        let sender = PeerId::from_bytes(event.pubkey.to_bytes());
        let content = match wire::open_content(
            &self.shared.seal,
            &self.shared.topic,
            sender,
            &event.content,
            self.shared.config.max_event_size,
        ) {
            Ok(content) => content,
            Err(ContentError::Seal | ContentError::Encoding | ContentError::Format) => {
                bump(&counters.dropped_unsealed);
                return None;
            }
        };
        let mut id = [0u8; 32];
        let (head, tail) = id.split_at_mut(16);
        head.copy_from_slice(&content.id);
        tail.copy_from_slice(sender.as_bytes().get(..16).unwrap_or(&[0; 16]));
        match self.guard.check(id, content.timestamp_ms, now_ms()) {
            Ok(()) => {}
            Err(ReplayError::Replayed) => {
                bump(&counters.duplicates);
                return None;
            }
            Err(_) => {
                bump(&counters.dropped_replay);
                return None;
            }
        }
        let payload = Bytes::from(content.payload);
        match (content.kind, to_room, content.to) {
            (ContentKind::Presence, true, None) => Some(SignalEvent::PeerSeen {
                peer: sender,
                presence: payload,
            }),
            (ContentKind::Bye, true, None) => Some(SignalEvent::PeerGone { peer: sender }),
            (ContentKind::Message, false, Some(to)) if to == self.shared.peer => {
                Some(SignalEvent::Message {
                    from: sender,
                    payload,
                })
            }
            _ => {
                bump(&counters.dropped_invalid);
                None
            }
        }
    }
}

/// A session on Nostr relays. Dropping the last clone without `leave` stops it silently,
/// as a crashed peer would.
#[derive(Clone)]
pub struct NostrSession {
    handle: Arc<Handle>,
}

/// Owned by the session's clones only (not by its tasks), so the last drop stops them.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        stop(&self.shared);
    }
}

/// Marks the session left, stops the relay workers and the router.
fn stop(shared: &Shared) {
    shared.left.store(true, Ordering::Release);
    let relays = shared.relays.lock().unwrap_or_else(|p| p.into_inner());
    for relay in relays.iter() {
        // Queued after any goodbye, so the goodbye goes out first.
        let _ = relay.commands.try_send(Command::Stop);
    }
    // The router drops the inbox when it sees this, ending the event stream.
    shared.stop.notify_one();
}

impl std::fmt::Debug for NostrSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NostrSession")
            .field("peer", &self.handle.shared.peer)
            .field("topic", &self.handle.shared.topic)
            .finish_non_exhaustive()
    }
}

impl NostrSession {
    /// What this session published and dropped.
    pub fn stats(&self) -> NostrStats {
        self.handle.shared.counters.snapshot()
    }

    /// Health and counters of every relay this session has used.
    pub fn relays(&self) -> Vec<RelayHealth> {
        let relays = self
            .handle
            .shared
            .relays
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        relays
            .iter()
            .map(|r| r.health.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    fn ensure_joined(&self) -> Result<(), SignalError> {
        if self.handle.shared.left.load(Ordering::Acquire) {
            return Err(SignalError::Left);
        }
        Ok(())
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), SignalError> {
        let limit = self.handle.shared.config.max_message_size;
        if payload.len() > limit {
            return Err(SignalError::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    fn build(
        &self,
        kind: ContentKind,
        to: Option<PeerId>,
        payload: &[u8],
    ) -> Result<Outgoing, SignalError> {
        self.handle.shared.build(kind, to, payload)
    }

    fn shutdown(&self) {
        stop(&self.handle.shared);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let relays = self.relays.get_mut().unwrap_or_else(|p| p.into_inner());
        for relay in relays.iter() {
            let _ = relay.commands.try_send(Command::Stop);
        }
    }
}

impl SignalSession for NostrSession {
    fn local_peer(&self) -> PeerId {
        self.handle.shared.peer
    }

    fn health(&self) -> crate::SignalHealth {
        let media = self
            .relays()
            .into_iter()
            .map(|relay| {
                let state = match &relay.state {
                    RelayState::Connecting => "connecting".to_owned(),
                    RelayState::Connected => "connected".to_owned(),
                    RelayState::Backoff { delay } => format!("reconnecting in {delay:.1?}"),
                    RelayState::Muted(reason) => format!("muted: {reason:?}"),
                    RelayState::Stopped => "stopped".to_owned(),
                };
                let connected = relay.state == RelayState::Connected;
                let dropped = relay.messages_dropped + relay.refusals + relay.publish_dropped;
                crate::MediumHealth::new(relay.url, connected, state).with_counts(
                    relay.events_sent,
                    relay.events_received,
                    dropped,
                )
            })
            .collect();
        let stats = self.stats();
        let dropped = stats.dropped_invalid
            + stats.dropped_unsealed
            + stats.dropped_replay
            + stats.dropped_overflow;
        crate::SignalHealth::new(media, stats.published, stats.delivered, dropped)
    }

    fn topic(&self) -> Topic {
        self.handle.shared.topic
    }

    fn limits(&self) -> SignalLimits {
        SignalLimits::new(
            self.handle.shared.config.max_message_size,
            self.handle.shared.config.inbox_capacity,
        )
    }

    async fn announce(&self, presence: Bytes) -> Result<(), SignalError> {
        self.ensure_joined()?;
        self.check_size(&presence)?;
        let outgoing = self.build(ContentKind::Presence, None, &presence)?;
        *self
            .handle
            .shared
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(presence);
        bump(&self.handle.shared.counters.announces);
        self.handle.shared.publish(outgoing);
        self.handle.shared.announce_reset.notify_waiters();
        Ok(())
    }

    async fn send_to(&self, peer: PeerId, message: Bytes) -> Result<(), SignalError> {
        self.ensure_joined()?;
        self.check_size(&message)?;
        let outgoing = self.build(ContentKind::Message, Some(peer), &message)?;
        self.handle.shared.publish(outgoing);
        Ok(())
    }

    async fn leave(&self) -> Result<(), SignalError> {
        if self.handle.shared.left.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Ok(bye) = self.build(ContentKind::Bye, None, &[]) {
            self.handle.shared.publish(bye);
        }
        self.shutdown();
        Ok(())
    }
}

/// The event stream of a [`NostrSession`]: reports inbox overflow as [`SignalEvent::Lagged`]
/// and ends after the session leaves.
pub type NostrEvents = EventStream;

#[cfg(test)]
mod tests;

/// Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the decoders of
/// everything a relay can send us.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Parses relay text the way a relay worker does, then runs any event through the
    /// router's checks.
    pub fn relay_text(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(RelayMessage::Event { event, .. }) = RelayMessage::from_json(text) {
            let _ = event.verify();
            let topic = Topic::from_bytes([7; 32]);
            let key = wire::fallback_key(&topic);
            let sender = PeerId::from_bytes(event.pubkey.to_bytes());
            let _ = wire::open_content(&key, &topic, sender, &event.content, 1 << 17);
        }
    }

    /// Opens arbitrary content text with a fixed key, and decodes arbitrary plaintext as
    /// `Content`.
    pub fn content(data: &[u8]) {
        let topic = Topic::from_bytes([7; 32]);
        let key = wire::fallback_key(&topic);
        let sender = PeerId::from_bytes([9; 32]);
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = wire::open_content(&key, &topic, sender, text, 1 << 17);
        }
        let _ = postcard::from_bytes::<Content>(data);
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn decoders_survive_odd_input() {
            for input in [
                &b""[..],
                b"[",
                b"[\"EVENT\",\"s\",{}]",
                b"[\"EVENT\",\"s\",{\"id\":\"00\",\"pubkey\":1}]",
                &[0xff; 64][..],
                &[
                    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
                    0x0f,
                ][..],
            ] {
                super::relay_text(input);
                super::content(input);
            }
        }
    }
}
