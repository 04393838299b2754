//! A channel of an in-memory connection: bounded directions, loss on unreliable channels,
//! latency.

use super::*;

/// A channel of a [`MemoryConnection`].
#[derive(Clone)]
pub struct MemoryChannel {
    pub(super) inner: Arc<ChannelEnd>,
}

impl std::fmt::Debug for MemoryChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryChannel")
            .field("label", &self.inner.label)
            .field("reliability", &self.inner.reliability)
            .finish()
    }
}

impl MemoryChannel {
    fn count_drop(&self) {
        self.inner.outbound.sender_counters.count_dropped();
    }

    /// When a message sent now is due at the receiver (None: at once).
    fn due(&self) -> Option<tokio::time::Instant> {
        let config = &self.inner.net.config;
        if config.latency.is_zero() && config.jitter.is_zero() {
            return None;
        }
        let jitter = if config.jitter.is_zero() {
            Duration::ZERO
        } else {
            lock(&self.inner.net.rng).random_range(Duration::ZERO..=config.jitter)
        };
        let due = tokio::time::Instant::now() + config.latency + jitter;
        let mut last = lock(&self.inner.outbound.last_due);
        let due = last.map_or(due, |last| due.max(last));
        *last = Some(due);
        Some(due)
    }

    /// The next message once it is due. Cancel-safe: a message waiting out its latency
    /// stays in `held`.
    async fn next_due(inbound: &mut Inbound) -> Option<Bytes> {
        if inbound.held.is_none() {
            inbound.held = Some(inbound.queue.recv().await?);
        }
        if let Some(due) = inbound.held.as_ref().and_then(|held| held.due) {
            tokio::time::sleep_until(due).await;
        }
        inbound.held.take().map(|held| held.message)
    }

    fn enqueue(&self, message: Bytes) -> Result<(), TransportError> {
        let direction = &self.inner.outbound;
        let sender = lock(&direction.sender).clone();
        let len = message.len() as u64;
        let due = self.due();
        match sender.map(|sender| sender.send(InFlight { due, message })) {
            Some(Ok(())) => {
                direction.sender_counters.count_sent(len);
                Ok(())
            }
            _ => Err(TransportError::ChannelClosed),
        }
    }
}

impl DataChannel for MemoryChannel {
    fn label(&self) -> &str {
        &self.inner.label
    }

    fn reliability(&self) -> Reliability {
        self.inner.reliability
    }

    fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    fn buffered_amount(&self) -> usize {
        self.inner.outbound.buffered()
    }

    async fn send(&self, message: Bytes) -> Result<(), TransportError> {
        let limit = self.inner.max_message_size;
        shared::check_message_size(message.len(), limit)?;
        let direction = &self.inner.outbound;
        // Fits: `normalized` keeps the budget above max_message_size + overhead, below u32.
        let permits =
            u32::try_from(cost(&message)).map_err(|_| TransportError::MessageTooLarge {
                size: message.len(),
                limit,
            })?;
        match self.inner.reliability {
            Reliability::ReliableOrdered => {
                let permit = direction
                    .budget
                    .acquire_many(permits)
                    .await
                    .map_err(|_| TransportError::ChannelClosed)?;
                permit.forget();
            }
            Reliability::UnreliableUnordered => {
                let loss = self.inner.net.config.unreliable_loss;
                if loss > 0.0 && lock(&self.inner.net.rng).random_bool(loss) {
                    self.count_drop();
                    return Ok(());
                }
                match direction.budget.try_acquire_many(permits) {
                    Ok(permit) => permit.forget(),
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        self.count_drop();
                        return Ok(());
                    }
                    Err(tokio::sync::TryAcquireError::Closed) => {
                        return Err(TransportError::ChannelClosed);
                    }
                }
            }
        }
        self.enqueue(message)
    }

    async fn recv(&self) -> Option<Bytes> {
        let mut receiver = self.inner.receiver.lock().await;
        let mut stalled = self.inner.link.stalled.subscribe();
        loop {
            while *stalled.borrow_and_update() {
                if stalled.changed().await.is_err() {
                    break;
                }
            }
            tokio::select! {
                biased;
                changed = stalled.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                in_flight = Self::next_due(&mut receiver) => {
                    let message = in_flight?;
                    let inbound = &self.inner.inbound;
                    inbound.budget.add_permits(cost(&message));
                    inbound.receiver_counters.count_received(message.len() as u64);
                    return Some(message);
                }
            }
        }
    }

    async fn close(&self) {
        self.inner.outbound.shut();
        self.inner.inbound.shut();
    }
}
