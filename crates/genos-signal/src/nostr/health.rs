//! Per-relay health and counters, exposed to users.

use std::time::Duration;

/// Why a relay was muted (no longer used by this session).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MuteReason {
    /// The relay demands more proof of work than configured (`pow:`).
    ProofOfWork {
        /// Difficulty the relay asked for, when it said.
        required: Option<u8>,
    },
    /// The relay demands authentication we could not give (`auth-required:`).
    AuthRequired,
    /// The relay refuses our events or subscription (`restricted:`, `blocked:`, `invalid:`).
    Refused(String),
    /// The relay closed our subscription (`CLOSED`).
    SubscriptionClosed(String),
    /// The relay failed this many times in a row.
    TooManyFailures(u32),
    /// The relay's smoothed time to acknowledge events stayed above the configured limit.
    Slow(Duration),
}

/// Where a relay connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayState {
    /// Opening the WebSocket.
    Connecting,
    /// Connected and subscribed.
    Connected,
    /// Waiting before the next connection attempt.
    Backoff {
        /// Length of the wait.
        delay: Duration,
    },
    /// No longer used; see the reason.
    Muted(MuteReason),
    /// Stopped because the session left.
    Stopped,
}

/// Health and counters of one relay, as seen by one session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayHealth {
    /// The relay's URL.
    pub url: String,
    /// Current state.
    pub state: RelayState,
    /// Events published to it.
    pub events_sent: u64,
    /// Events received from it for our subscription.
    pub events_received: u64,
    /// Messages from it dropped: malformed, oversized, for another subscription, or beyond
    /// the incoming queue.
    pub messages_dropped: u64,
    /// Events it refused (`OK false`).
    pub refusals: u64,
    /// Events not published to it because its queue was full or it asked us to slow down.
    pub publish_dropped: u64,
    /// NIP-42 challenges answered.
    pub authentications: u64,
    /// Successful connections (first one and reconnections).
    pub connects: u64,
    /// Failed connection attempts and dropped connections.
    pub failures: u64,
    /// Failures since the last successful subscription.
    pub consecutive_failures: u32,
    /// Smoothed time from publishing an event to the relay's `OK`.
    pub ok_latency: Option<Duration>,
    /// Number of `OK` latency samples behind `ok_latency`.
    pub ok_samples: u64,
    /// The last error or refusal message.
    pub last_error: Option<String>,
    /// Whether our presence goes to this relay as stored events. Turns false when the relay
    /// refuses one; it then gets ephemeral presence.
    pub stores_presence: bool,
}

impl RelayHealth {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            state: RelayState::Connecting,
            events_sent: 0,
            events_received: 0,
            messages_dropped: 0,
            refusals: 0,
            publish_dropped: 0,
            authentications: 0,
            connects: 0,
            failures: 0,
            consecutive_failures: 0,
            ok_latency: None,
            ok_samples: 0,
            last_error: None,
            stores_presence: true,
        }
    }

    /// Whether the session still uses this relay.
    pub fn is_active(&self) -> bool {
        !matches!(self.state, RelayState::Muted(_) | RelayState::Stopped)
    }

    pub(crate) fn record_latency(&mut self, sample: Duration) {
        self.ok_samples += 1;
        // Exponential moving average, weight 1/4 for the new sample.
        self.ok_latency = Some(match self.ok_latency {
            Some(old) => (old * 3 + sample) / 4,
            None => sample,
        });
    }
}
