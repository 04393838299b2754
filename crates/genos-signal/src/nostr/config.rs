//! What a Nostr session is configured with, and the built-in relays.

use super::*;

/// Public relays used when the configuration names none. Tests always configure their own.
pub const DEFAULT_RELAYS: &[&str] = &[
    "wss://relay.damus.io",
    "wss://nos.lol",
    "wss://relay.nostr.band",
    "wss://relay.primal.net",
];

/// The relay directory used when relay discovery is on and no `directory_url` is given:
/// nostr.watch's list of relays online now (a JSON array of relay URLs).
pub const DEFAULT_RELAY_DIRECTORY: &str = "https://api.nostr.watch/v1/online";

/// Whether a session keeps an extended relay list (cached on disk, refreshed from a relay
/// directory at most once per [`NostrConfig::directory_refresh`]) and dials it in the
/// background.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayDiscovery {
    /// On when the session uses the built-in relays ([`NostrConfig::relays`] empty), off
    /// when relays are named: naming relays says which relays to use. Default.
    #[default]
    Auto,
    /// Always on: the default directory and cache fill in what is not set.
    On,
    /// Never: no cache file is read or written, no directory is contacted.
    Off,
}

/// Settings of a [`NostrSignaling`] backend. Every default is commented with its reason.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NostrConfig {
    /// Relays to connect to at once. Empty: [`DEFAULT_RELAYS`].
    pub relays: Vec<String>,
    /// Relays dialled only when none of `relays` (nor the extended list) is connected
    /// [`NostrConfig::fallback_after`] into the session, or later: a fallback server's relay
    /// (`genos serve`), for when public relays are down or refuse. Default none.
    pub fallback_relays: Vec<String>,
    /// Sessions (rooms, or a cells room's topics) that sign as the same identity in one
    /// process share each relay's connection, each with its own subscription on it, up to
    /// this many per connection; more open another connection. Default 8 (relays cap
    /// subscriptions per connection: 10 to 20 is common; the embedded relay allows 16). A
    /// shared connection runs with the settings of the session that opened it. 1: a
    /// connection per session.
    pub subscriptions_per_connection: usize,
    /// How long the session waits for a connected relay before it dials the fallback relays.
    /// Default 3 s (a reachable relay connects in well under a second; join waits up to
    /// `join_timeout`).
    pub fallback_after: Duration,
    /// A JSON file (an array of relay URLs) holding the extended relay list; read at join,
    /// dialled in the background. Default none: with discovery on, the user's cache folder
    /// (`$XDG_CACHE_HOME/genos/relays.json`, else `~/.cache/genos/relays.json`).
    pub relay_cache: Option<PathBuf>,
    /// A relay directory (http:// or https://, answering a JSON array of relay URLs) from
    /// which the extended list is refreshed in the background after join, and written to the
    /// cache. Default none: with discovery on, [`DEFAULT_RELAY_DIRECTORY`].
    pub directory_url: Option<String>,
    /// Whether the extended relay list is used where `relay_cache` and `directory_url` are
    /// not set. Default [`RelayDiscovery::Auto`]: on with the built-in relays, off with named
    /// ones. [`RelayDiscovery::Off`] also ignores explicit `relay_cache` and `directory_url`.
    pub relay_discovery: RelayDiscovery,
    /// The directory is asked again only when the cache file is older than this. Default
    /// 24 h: relay lists change slowly and directories are shared by everyone.
    pub directory_refresh: Duration,
    /// How often a session with a relay cache records what it measured of its relays
    /// (connections, failures, acknowledgement time, muting) beside the cache
    /// (`relays.health.json`), so later sessions dial the extended list's relays best first.
    /// Default 60 s (and once more after leaving).
    pub health_record_interval: Duration,
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
    /// WebSocket message cap: a larger message from a relay is read past without being
    /// buffered, dropped and counted in `RelayHealth::messages_dropped`; the connection stays.
    /// Default 256 KiB.
    pub max_relay_message: usize,
    /// Largest payload of `announce` and `send_to`. Default 16 KiB: an SDP offer with
    /// candidates is 2-6 KiB.
    pub max_message_size: usize,
    /// Events the session's inbox holds before dropping (reported as `Lagged`). Default 1024.
    pub inbox_capacity: usize,
    /// Verified-or-not events queued from all relays to the session. Default 1024.
    pub incoming_capacity: usize,
    /// Events queued per relay while it is disconnected (oldest dropped first). Default 64
    /// (per session: a connection shared by up to `subscriptions_per_connection` sessions
    /// queues that many times as much).
    /// Also the bound of the hand-over to each relay's task: a burst beyond it makes
    /// `send_to`, `announce` and `leave` wait for room (at most `publish_wait`).
    pub relay_queue: usize,
    /// How long publishing waits for room at a relay whose hand-over queue is full before
    /// dropping the event for that relay (counted in its `publish_dropped`). Default 2 s;
    /// zero drops at once.
    pub publish_wait: Duration,
    /// Queued events older than this are not sent after a reconnect. Default 60 s.
    pub queued_event_max_age: Duration,
    /// Offsets after `announce` at which presence is published again. Default none: stored
    /// presence is there for anyone who subscribes later, so a burst adds nothing.
    pub announce_burst: Vec<Duration>,
    /// Steady re-announce (refresh) interval. Default 5 min: 0.2 events per relay per peer
    /// per minute. With ephemeral presence (`stored_presence` off) set it near 60 s, as
    /// newcomers then learn of existing peers only from their refreshes.
    pub announce_interval: Duration,
    /// Publish presence as an addressable event that relays store and replace (one per peer
    /// per topic), so a newcomer learns of everyone at once from a query. Default on. Relays
    /// that refuse stored events get the same presence as an ephemeral event instead.
    pub stored_presence: bool,
    /// Lifetime of stored presence (its NIP-40 `expiration`). Default 11 min: two refreshes
    /// and a minute of slack. A peer that vanishes without leaving is offered to newcomers
    /// for at most this long; expired presence is dropped by the client whatever the relay
    /// serves.
    pub presence_ttl: Duration,
    /// Lifetime of the tombstone that replaces stored presence on leave. Default 60 s.
    pub tombstone_ttl: Duration,
    /// Stored presence events asked of each relay on (re)subscription (the filter's
    /// `limit`; relays serve the newest). Default 512. Peers beyond it are learned when they
    /// refresh, or when they hear our presence and dial us.
    pub max_stored_presence: usize,
    /// Replay guard (skew window and remembered ids).
    pub replay: ReplayGuardConfig,
}

impl Default for NostrConfig {
    fn default() -> Self {
        Self {
            relays: Vec::new(),
            fallback_relays: Vec::new(),
            subscriptions_per_connection: 8,
            fallback_after: Duration::from_secs(3),
            relay_cache: None,
            directory_url: None,
            relay_discovery: RelayDiscovery::Auto,
            directory_refresh: Duration::from_secs(24 * 60 * 60),
            health_record_interval: Duration::from_secs(60),
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
            publish_wait: Duration::from_secs(2),
            queued_event_max_age: Duration::from_secs(60),
            announce_burst: Vec::new(),
            announce_interval: Duration::from_secs(300),
            stored_presence: true,
            presence_ttl: Duration::from_secs(660),
            tombstone_ttl: Duration::from_secs(60),
            max_stored_presence: 512,
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

    /// Sets whether the extended relay list is used (see [`RelayDiscovery`]).
    pub fn with_relay_discovery(mut self, discovery: RelayDiscovery) -> Self {
        self.relay_discovery = discovery;
        self
    }

    fn discovery_on(&self) -> bool {
        match self.relay_discovery {
            RelayDiscovery::Auto => self.relays.is_empty(),
            RelayDiscovery::On => true,
            RelayDiscovery::Off => false,
        }
    }

    /// The extended relay list's cache file this configuration uses, if any.
    pub fn effective_relay_cache(&self) -> Option<PathBuf> {
        if self.relay_discovery == RelayDiscovery::Off {
            return None;
        }
        self.relay_cache
            .clone()
            .or_else(|| self.discovery_on().then(default_relay_cache).flatten())
    }

    /// The relay directory this configuration refreshes the extended list from, if any.
    pub fn effective_directory(&self) -> Option<String> {
        if self.relay_discovery == RelayDiscovery::Off {
            return None;
        }
        self.directory_url.clone().or_else(|| {
            self.discovery_on()
                .then(|| DEFAULT_RELAY_DIRECTORY.to_owned())
        })
    }

    /// Sets the presence refresh interval and the stored presence's lifetime.
    pub fn with_presence(mut self, refresh: Duration, ttl: Duration) -> Self {
        self.announce_interval = refresh;
        self.presence_ttl = ttl;
        self
    }

    /// Publishes presence as ephemeral events only (never stored), refreshed every
    /// `refresh`: for relays known to refuse or mishandle stored events.
    pub fn with_ephemeral_presence(mut self, refresh: Duration) -> Self {
        self.stored_presence = false;
        self.announce_interval = refresh;
        self
    }

    /// Events one relay connection queues (hand-over and offline alike): `relay_queue` for
    /// each session that may share it.
    pub(super) fn connection_queue(&self) -> usize {
        self.relay_queue
            .saturating_mul(self.subscriptions_per_connection.max(1))
            .max(1)
    }

    pub(super) fn validate(&self) -> Result<(), SignalError> {
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
        if self.stored_presence
            && (self.presence_ttl <= self.announce_interval
                || self.tombstone_ttl < Duration::from_secs(1))
        {
            return invalid(
                "presence_ttl must exceed announce_interval and tombstone_ttl be at least 1 s",
            );
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

/// `$XDG_CACHE_HOME/genos/relays.json`, else `$HOME/.cache/genos/relays.json`; none without
/// either variable.
fn default_relay_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("genos").join("relays.json"))
}
