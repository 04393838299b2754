//! A joined topic on Nostr relays: what the application holds.

use super::*;

/// A session on Nostr relays. Dropping the last clone without `leave` stops it silently,
/// as a crashed peer would.
#[derive(Clone)]
pub struct NostrSession {
    pub(super) handle: Arc<Handle>,
}

/// Owned by the session's clones only (not by its tasks), so the last drop stops them.
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        stop(&self.shared);
    }
}

/// Marks the session left, stops the relay workers and the router.
pub(super) fn stop(shared: &Shared) {
    shared.left.store(true, Ordering::Release);
    let relays = shared.relays.lock().unwrap_or_else(|p| p.into_inner());
    for relay in relays.iter() {
        // Queued after any goodbye, so the goodbye goes out first.
        relay.detach();
    }
    // The router drops the inbox when it sees this, ending the event stream.
    shared.stop.notify_one();
    // The announcer may sleep a whole announce interval (60 s): wake it to end now, not
    // linger with its task after every leave.
    shared.announce_reset.notify_waiters();
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

    pub(super) fn ensure_joined(&self) -> Result<(), SignalError> {
        if self.handle.shared.left.load(Ordering::Acquire) {
            return Err(SignalError::Left);
        }
        Ok(())
    }

    pub(super) fn check_size(&self, payload: &Bytes) -> Result<(), SignalError> {
        let limit = self.handle.shared.config.max_message_size;
        if payload.len() > limit {
            return Err(SignalError::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    pub(super) fn shutdown(&self) {
        stop(&self.handle.shared);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let relays = self.relays.get_mut().unwrap_or_else(|p| p.into_inner());
        for relay in relays.iter() {
            relay.detach();
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
            + stats.dropped_overflow
            + stats.dropped_expired;
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
        let outgoing = self
            .handle
            .shared
            .build(ContentKind::Presence, None, &presence)?;
        *self
            .handle
            .shared
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(presence);
        bump(&self.handle.shared.counters.announces);
        self.handle.shared.publish(outgoing).await;
        self.handle.shared.announce_reset.notify_waiters();
        Ok(())
    }

    async fn send_to(&self, peer: PeerId, message: Bytes) -> Result<(), SignalError> {
        self.ensure_joined()?;
        self.check_size(&message)?;
        let outgoing = self
            .handle
            .shared
            .build(ContentKind::Message, Some(peer), &message)?;
        self.handle.shared.publish(outgoing).await;
        Ok(())
    }

    async fn leave(&self) -> Result<(), SignalError> {
        if self.handle.shared.left.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Ok(bye) = self.handle.shared.build(ContentKind::Bye, None, &[]) {
            self.handle.shared.publish(bye).await;
        }
        self.shutdown();
        Ok(())
    }
}

/// The event stream of a [`NostrSession`]: reports inbox overflow as [`SignalEvent::Lagged`]
/// and ends after the session leaves.
pub type NostrEvents = EventStream;
