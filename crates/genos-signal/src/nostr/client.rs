//! One relay connection for other Nostr dialects: what [`NostrSignaling`](super::NostrSignaling)
//! uses per relay (connect with jittered backoff, resubscribe, NIP-42 AUTH, NIP-13 proof of
//! work, refusals and rate limits honoured, oversized frames skipped, bounded queues), with
//! the filters and events left to the caller. The Trystero profile (`genos-trystero`) speaks
//! Trystero's events through it.

use super::*;

/// An event a relay delivered for the client's subscription. It matched one of the
/// client's filters by kind and tags; its id and signature are **not yet verified**.
pub use self::relay::Incoming as RelayEvent;

/// A connection to one relay, kept up in the background until [`RelayClient::stop`] or drop.
#[derive(Debug)]
pub struct RelayClient {
    commands: mpsc::Sender<Command>,
    health: Arc<Mutex<RelayHealth>>,
    keys: Keys,
}

impl RelayClient {
    /// Connects to `url` and subscribes with `filters`; every event that matches one of them
    /// by kind and tags goes to `events` (dropped and counted in the health's
    /// `messages_dropped` when `events` is full). `subscribed` is notified after each
    /// (re)subscription. Events published through the client are signed with `keys`.
    /// Needs a Tokio runtime.
    pub fn start(
        url: &str,
        filters: Vec<Filter>,
        keys: Keys,
        config: Arc<NostrConfig>,
        events: mpsc::Sender<RelayEvent>,
        subscribed: Arc<Notify>,
    ) -> Self {
        let first = relay::Sub::new(filters, events, subscribed, Arc::new(|| None));
        let (commands, health) = Worker::spawn(url, first, keys.clone(), config);
        Self {
            commands,
            health,
            keys,
        }
    }

    /// Signs `template` and queues it for the relay (sent once connected; re-sent with proof
    /// of work or after AUTH when the relay asks). A full queue is an error, not a wait.
    pub fn publish(&self, template: EventBuilder) -> Result<(), SignalError> {
        let event = template
            .clone()
            .finalize(&self.keys)
            .map_err(|e| SignalError::Sign(e.to_string()))?;
        let outgoing = Outgoing {
            event: Arc::new(event),
            template: Arc::new(template),
            created: Instant::now(),
            fallback: None,
        };
        self.commands
            .try_send(Command::Publish(outgoing))
            .map_err(|_| SignalError::Unavailable("relay queue full or relay stopped".into()))
    }

    /// The relay's state and counters.
    pub fn health(&self) -> RelayHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Closes the connection for good.
    pub fn stop(&self) {
        let _ = self.commands.try_send(Command::Stop);
    }
}

impl Drop for RelayClient {
    fn drop(&mut self) {
        self.stop();
    }
}
