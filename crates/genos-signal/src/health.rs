//! A backend-neutral view of a session's signaling health, for applications and the CLI.

/// One medium a session uses (a relay, a hub), as seen by that session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediumHealth {
    /// The medium's name (a relay's URL).
    pub name: String,
    /// Whether the session can publish and receive through it now.
    pub connected: bool,
    /// Its state in words ("connected", "backoff 3.3s", "muted: ...").
    pub state: String,
    /// Events published through it.
    pub events_sent: u64,
    /// Events received through it.
    pub events_received: u64,
    /// Events it refused, or that were dropped on the way to or from it.
    pub dropped: u64,
}

/// The signaling health of one session: its media and its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalHealth {
    /// Each relay or hub the session uses or has used.
    pub media: Vec<MediumHealth>,
    /// Events this session published (presence and messages).
    pub published: u64,
    /// Events delivered to the application.
    pub delivered: u64,
    /// Events dropped on receipt (invalid, unsealed, replayed, beyond the inbox).
    pub dropped: u64,
}

impl SignalHealth {
    /// Media the session can use now.
    pub fn connected(&self) -> usize {
        self.media.iter().filter(|m| m.connected).count()
    }
}

impl MediumHealth {
    /// A medium's health (for backends).
    pub fn new(name: impl Into<String>, connected: bool, state: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            connected,
            state: state.into(),
            events_sent: 0,
            events_received: 0,
            dropped: 0,
        }
    }

    /// With these counters.
    pub fn with_counts(mut self, sent: u64, received: u64, dropped: u64) -> Self {
        self.events_sent = sent;
        self.events_received = received;
        self.dropped = dropped;
        self
    }
}

impl SignalHealth {
    /// A health report (for backends).
    pub fn new(media: Vec<MediumHealth>, published: u64, delivered: u64, dropped: u64) -> Self {
        Self {
            media,
            published,
            delivered,
            dropped,
        }
    }
}
