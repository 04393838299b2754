//! Relay connections shared by the sessions of one process.
//!
//! A bot or a server in many rooms would otherwise open one WebSocket per relay per room.
//! Sessions that sign as the same identity share a connection to each relay instead, each
//! with its own subscription on it, up to [`NostrConfig::subscriptions_per_connection`]
//! subscriptions per connection (relays cap them; a further session opens another
//! connection). A shared connection runs with the settings of the session that opened it.
//! It closes once its last session leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nostr::prelude::*;
use tokio::sync::mpsc;

use super::NostrConfig;
use super::health::RelayHealth;
use super::relay::{Command, Sub, Worker};

/// One live connection in the registry.
struct Connection {
    commands: mpsc::Sender<Command>,
    health: Arc<Mutex<RelayHealth>>,
    /// Sessions subscribed on it.
    sessions: Arc<AtomicUsize>,
}

type Registry = HashMap<(String, PublicKey), Vec<Connection>>;

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A session's place on a relay connection.
pub(crate) struct Attached {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) health: Arc<Mutex<RelayHealth>>,
    subscription: SubscriptionId,
    sessions: Arc<AtomicUsize>,
    key: (String, PublicKey),
    detached: std::sync::atomic::AtomicBool,
}

/// Puts `sub` on a connection to `url` signing as `keys`: one with room for it, or a new one.
pub(crate) fn attach(url: &str, sub: Sub, keys: &Keys, config: &Arc<NostrConfig>) -> Attached {
    let per_connection = config.subscriptions_per_connection.max(1);
    let key = (url.to_owned(), keys.public_key());
    let subscription = sub.id.clone();
    let mut registry = registry();
    let connections = registry.entry(key.clone()).or_default();
    // A muted or stopped connection's worker is gone: its queue is closed.
    connections.retain(|c| !c.commands.is_closed());
    for connection in connections.iter() {
        if connection.sessions.load(Ordering::Acquire) >= per_connection {
            continue;
        }
        // A connection whose queue is full is busy: another one is opened instead.
        if let Ok(permit) = connection.commands.try_reserve() {
            permit.send(Command::Subscribe(sub));
            connection.sessions.fetch_add(1, Ordering::AcqRel);
            return Attached {
                commands: connection.commands.clone(),
                health: connection.health.clone(),
                subscription,
                sessions: connection.sessions.clone(),
                key,
                detached: false.into(),
            };
        }
    }
    let (commands, health) = Worker::spawn(url, sub, keys.clone(), config.clone());
    let sessions = Arc::new(AtomicUsize::new(1));
    connections.push(Connection {
        commands: commands.clone(),
        health: health.clone(),
        sessions: sessions.clone(),
    });
    Attached {
        commands,
        health,
        subscription,
        sessions,
        key,
        detached: false.into(),
    }
}

impl Attached {
    /// Takes the session's subscription off the connection (queued after anything the
    /// session published, so its goodbye goes out first); the last session's detach closes
    /// the connection. Idempotent.
    pub(crate) fn detach(&self) {
        if self.detached.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut registry = registry();
        let _ = self
            .commands
            .try_send(Command::Unsubscribe(self.subscription.clone()));
        if self.sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Out of the registry under its lock, so no session attaches to it any more;
            // then told to stop.
            if let Some(connections) = registry.get_mut(&self.key) {
                connections.retain(|c| !Arc::ptr_eq(&c.sessions, &self.sessions));
                if connections.is_empty() {
                    registry.remove(&self.key);
                }
            }
            let _ = self.commands.try_send(Command::Stop);
        }
    }
}

/// Connections open now to `url` for `keys` (for tests and benchmarks).
pub(crate) fn count(url: &str, keys: &Keys) -> usize {
    registry()
        .get(&(url.to_owned(), keys.public_key()))
        .map_or(0, |c| c.iter().filter(|c| !c.commands.is_closed()).count())
}
