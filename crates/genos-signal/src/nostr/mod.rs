//! `NostrSignaling`: peers meet through Nostr relays, with no server of ours.
//!
//! Each join uses one WebSocket per relay (a task each, so a slow or dead relay never
//! delays the others; the sessions of one identity in a process share them, a subscription
//! each, see [`NostrConfig::subscriptions_per_connection`]), subscribes to the room's topic
//! and to this peer's own topic, and
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

mod cache;
mod client;
mod config;
mod connections;
mod directory;
mod health;
mod oversize;
mod pool;
mod relay;
mod router;
mod session;
mod stats;
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

pub use self::cache::{
    RelayRecord, read_relay_cache, read_relay_records, record_relays, write_relay_cache,
};
pub use self::client::{RelayClient, RelayEvent};
pub use self::config::{DEFAULT_RELAY_DIRECTORY, DEFAULT_RELAYS, NostrConfig, RelayDiscovery};
pub use self::directory::fetch_relay_directory;
#[cfg(feature = "relay")]
pub use self::embedded::{EmbeddedRelay, EmbeddedRelayConfig};
pub use self::health::{MuteReason, RelayHealth, RelayState};
use self::pool::{announcer, extend, fall_back, record_health};
use self::relay::{Command, Incoming, Outgoing, PresenceSource, Sub, Worker};
use self::router::Router;
use self::session::Handle;
pub use self::session::{NostrEvents, NostrSession};
pub use self::stats::NostrStats;
use self::stats::{Counters, bump};
use self::wire::{Content, ContentError, ContentKind};
use crate::inbox::{Inbox, Pushed};
use crate::{
    EventStream, JoinRequest, SignalError, SignalEvent, SignalLimits, SignalSession, Signaling,
    Topic,
};
/// The `nostr` crate this backend is built on, for users of [`RelayClient`].
pub use ::nostr as protocol;

/// The Nostr relay signaling backend. See the [module docs](self).
#[derive(Clone)]
pub struct NostrSignaling {
    identity: Arc<Identity>,
    keys: Keys,
    config: Arc<NostrConfig>,
    /// The last stored presence `created_at` of this identity, shared by its sessions so a
    /// quick rejoin's presence is newer than the tombstone it replaces.
    stored_clock: Arc<Mutex<u64>>,
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
            stored_clock: Arc::new(Mutex::new(0)),
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

    /// WebSocket connections to `url` that sessions signing as this backend's identity hold
    /// open in this process (they share them: [`NostrConfig::subscriptions_per_connection`]).
    pub fn relay_connections(&self, url: &str) -> usize {
        connections::count(url, &self.keys)
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
    /// The addressable kind of stored presence.
    presence_kind: Kind,
    stored_clock: Arc<Mutex<u64>>,
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

/// The session's subscription on a (possibly shared) relay connection.
type RelayHandle = connections::Attached;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
            presence_kind: Kind::Custom(wire::presence_kind_for(&topic)),
            stored_clock: self.stored_clock.clone(),
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
            stored_seen: router::StoredSeen::default(),
        };
        tokio::spawn(router.run(incoming_rx));
        tokio::spawn(announcer(Arc::downgrade(&shared)));
        if !self.config.fallback_relays.is_empty() {
            tokio::spawn(fall_back(
                Arc::downgrade(&shared),
                self.config.fallback_relays.clone(),
            ));
        }
        let cache = self.config.effective_relay_cache();
        let directory = self.config.effective_directory();
        if let Some(cache) = &cache {
            tokio::spawn(record_health(
                Arc::downgrade(&shared),
                cache::records_path(cache),
            ));
        }
        if cache.is_some() || directory.is_some() {
            tokio::spawn(extend(
                Arc::downgrade(&shared),
                initial.clone(),
                cache,
                directory,
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

    /// Reads arbitrary bytes through the oversized-frame filter, as frames after an upgrade
    /// response, with a limit taken from the first byte; what it passes on is never more than
    /// what came in.
    pub fn relay_frames(data: &[u8]) {
        let (limit, frames) = data.split_first().unwrap_or((&0, &[]));
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        wire.extend_from_slice(frames);
        let passed = oversize::filter_all(&wire, usize::from(*limit) * 64);
        assert!(passed.len() <= wire.len(), "the filter made bytes up");
    }

    /// Parses an arbitrary answer of a relay directory (HTTP head and JSON body): at most
    /// 256 relay addresses, each a WebSocket URL.
    pub fn directory(data: &[u8]) {
        if let Ok(relays) = directory::parse_response(data) {
            assert!(relays.len() <= 256, "{} relays", relays.len());
            assert!(
                relays
                    .iter()
                    .all(|url| url.starts_with("ws://") || url.starts_with("wss://")),
                "a relay that is not a WebSocket URL"
            );
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
                super::directory(input);
            }
        }

        #[test]
        fn a_directory_answer_keeps_only_websocket_urls_within_the_bound() {
            let mut many = b"HTTP/1.1 200 OK\r\n\r\n[".to_vec();
            for n in 0..400 {
                many.extend_from_slice(format!("\"wss://r{n}.example\",").as_bytes());
            }
            many.extend_from_slice(b"\"http://no\", 7, null, \"ws://last\"]");
            let relays = super::directory::parse_response(&many).unwrap_or_default();
            assert_eq!(relays.len(), 256);
            super::directory(&many);
            for cut in (0..many.len()).step_by(97) {
                super::directory(&many[..cut]);
            }
        }
    }
}
