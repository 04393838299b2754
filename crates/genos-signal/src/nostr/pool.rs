//! The relay pool of one session: building, sealing, signing and publishing events to every
//! relay, refreshing presence, and growing the pool from the extended relay list.

use super::*;

impl Shared {
    /// Builds, seals and signs an event. Presence and goodbye become stored presence and its
    /// tombstone (with the ephemeral form as fallback) when stored presence is on.
    pub(super) fn build(
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
        let ephemeral =
            self.sign(EventBuilder::new(self.kind, text.clone()).tag(Tag::custom("x", [tag])))?;
        let stored = to.is_none()
            && self.config.stored_presence
            && matches!(kind, ContentKind::Presence | ContentKind::Bye);
        if !stored {
            return Ok(ephemeral);
        }
        let created_at = self.next_stored_at();
        let lifetime = if kind == ContentKind::Bye {
            self.config.tombstone_ttl
        } else {
            self.config.presence_ttl
        };
        let expires = created_at.saturating_add(lifetime.as_secs().max(1));
        let template = EventBuilder::new(self.presence_kind, text)
            .tag(Tag::identifier(self.room_tag.clone()))
            .tag(Tag::custom("x", [self.room_tag.clone()]))
            .tag(Tag::expiration(Timestamp::from(expires)))
            .custom_created_at(Timestamp::from(created_at));
        let mut outgoing = self.sign(template)?;
        outgoing.fallback = Some(Box::new(ephemeral));
        Ok(outgoing)
    }

    fn sign(&self, template: EventBuilder) -> Result<Outgoing, SignalError> {
        let event = template
            .clone()
            .finalize(&self.keys)
            .map_err(|e| SignalError::Sign(e.to_string()))?;
        Ok(Outgoing {
            event: Arc::new(event),
            template: Arc::new(template),
            created: Instant::now(),
            fallback: None,
        })
    }

    /// A `created_at` for stored presence: now, or one second past the last one, because
    /// relays keep a replaced event when the new one is not strictly newer.
    fn next_stored_at(&self) -> u64 {
        let mut last = self.stored_clock.lock().unwrap_or_else(|p| p.into_inner());
        let at = Timestamp::now().as_secs().max(last.saturating_add(1));
        *last = at;
        at
    }

    /// Hands the event to every relay's task. A full hand-over queue (a burst larger than
    /// `relay_queue`, or a task busy writing) is waited on for at most `publish_wait`, all
    /// relays at once, so a burst is delivered rather than silently cut; only a relay still
    /// full after that loses the event (counted as `publish_dropped`).
    pub(super) async fn publish(&self, outgoing: Outgoing) {
        bump(&self.counters.published);
        let relays: Vec<_> = self
            .relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|relay| (relay.commands.clone(), relay.health.clone()))
            .collect();
        let wait = self.config.publish_wait;
        let handed = relays.into_iter().map(|(commands, health)| {
            let command = Command::Publish(outgoing.clone());
            async move {
                let handed = match commands.try_send(command) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(command)) => {
                        matches!(
                            tokio::time::timeout(wait, commands.send(command)).await,
                            Ok(Ok(()))
                        )
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                };
                if !handed {
                    tracing::debug!("relay queue full: event dropped");
                    health
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .publish_dropped += 1;
                }
            }
        });
        futures::future::join_all(handed).await;
    }

    pub(super) fn fresh_presence(&self) -> Option<Outgoing> {
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

    pub(super) fn active_relays(&self) -> usize {
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

    /// Relays connected and subscribed now.
    pub(super) fn connected_relays(&self) -> usize {
        let relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        relays
            .iter()
            .filter(|r| {
                let health = r.health.lock().unwrap_or_else(|p| p.into_inner());
                health.state == super::health::RelayState::Connected
            })
            .count()
    }

    pub(super) fn start_relay(self: &Arc<Self>, url: &str) {
        let me = wire::peer_tag(&self.topic, &self.peer);
        let mut filters = vec![
            Filter::new()
                .kind(self.kind)
                .custom_tags(SingleLetterTag::LOWERCASE_X, [self.room_tag.clone(), me])
                // Back by the whole skew window, not a few seconds: with our clock ahead of
                // another peer's, a tighter `since` makes relays hold back everything it
                // sends live (peers 90 s apart never met). Older events that come anyway
                // are the replay guard's to judge.
                .since(Timestamp::now() - Duration::from_millis(self.config.replay.skew_ms)),
        ];
        if self.config.stored_presence {
            filters.push(
                Filter::new()
                    .kind(self.presence_kind)
                    .custom_tags(SingleLetterTag::LOWERCASE_X, [self.room_tag.clone()])
                    .limit(self.config.max_stored_presence),
            );
        }
        let weak = Arc::downgrade(self);
        let presence: PresenceSource =
            Arc::new(move || weak.upgrade().and_then(|shared| shared.fresh_presence()));
        let sub = Sub::new(
            filters,
            self.incoming.clone(),
            self.subscribed.clone(),
            presence,
        );
        let attached = super::connections::attach(url, sub, &self.keys, &self.config);
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(attached);
    }
}

/// Re-announces on the etiquette schedule while the session lives.
pub(super) async fn announcer(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let reset_notify = strong.announce_reset.clone();
        let reset = reset_notify.notified();
        // Checked after `reset` exists, so a leave between the two still wakes us.
        if strong.left.load(Ordering::Acquire) {
            return;
        }
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

/// Every `health_record_interval`, and once more after leaving, merges what this session
/// measured of its relays into the records beside the relay cache (read by later sessions'
/// [`extend`] to pick relays by health).
pub(super) async fn record_health(shared: std::sync::Weak<Shared>, path: std::path::PathBuf) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let interval = strong.config.health_record_interval;
        drop(strong);
        tokio::time::sleep(interval).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let left = strong.left.load(Ordering::Acquire);
        let records = strong.relay_records();
        drop(strong);
        let path = path.clone();
        let written =
            tokio::task::spawn_blocking(move || super::cache::record_relays(&path, &records)).await;
        if let Ok(Err(error)) = written {
            tracing::debug!(%error, "cannot write the relay records");
        }
        if left {
            return;
        }
    }
}

impl Shared {
    /// This session's relays as records.
    fn relay_records(&self) -> Vec<super::cache::RelayRecord> {
        let seen = now_ms() / 1000;
        let relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        relays
            .iter()
            .map(|relay| {
                let health = relay.health.lock().unwrap_or_else(|p| p.into_inner());
                super::cache::RelayRecord {
                    url: health.url.clone(),
                    connects: health.connects,
                    failures: health.failures,
                    latency_ms: health
                        .ok_latency
                        .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
                    muted: matches!(health.state, super::health::RelayState::Muted(_)),
                    seen,
                }
            })
            .collect()
    }
}

/// Dials the fallback relays once no other relay is connected, `fallback_after` into the
/// session or at any later check (every second); then they stay for the session.
pub(super) async fn fall_back(shared: std::sync::Weak<Shared>, fallback: Vec<String>) {
    let Some(strong) = shared.upgrade() else {
        return;
    };
    let wait = strong.config.fallback_after;
    drop(strong);
    tokio::time::sleep(wait).await;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.left.load(Ordering::Acquire) {
            return;
        }
        if strong.connected_relays() == 0 {
            tracing::info!(relays = ?fallback, "no relay answers: using the fallback relays");
            for url in &fallback {
                strong.start_relay(url);
            }
            return;
        }
        drop(strong);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether the cache file was written less than `refresh` ago (then the directory is not
/// asked again).
fn cache_is_fresh(cache: Option<&std::path::Path>, refresh: Duration) -> bool {
    cache
        .and_then(|path| std::fs::metadata(path).ok())
        .and_then(|metadata| metadata.modified().ok())
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age < refresh)
}

/// After a jittered delay: reads the extended list from `cache`, refreshes it from
/// `directory` when the cache is older than `directory_refresh` (saving it to the cache), then
/// connects to relays from it until enough are active, and later replaces muted relays from
/// what is left of it.
pub(super) async fn extend(
    shared: std::sync::Weak<Shared>,
    initial: Vec<String>,
    cache: Option<std::path::PathBuf>,
    directory: Option<String>,
) {
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
    let mut known = cache.as_deref().map(read_relay_cache).unwrap_or_default();
    let directory =
        directory.filter(|_| !cache_is_fresh(cache.as_deref(), config.directory_refresh));
    if let Some(url) = &directory {
        match fetch_relay_directory(url, config.connect_timeout).await {
            Ok(listed) => {
                for relay in listed {
                    if !known.contains(&relay) {
                        known.push(relay);
                    }
                }
                if let Some(path) = &cache {
                    let written = path
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| write_relay_cache(path, &known));
                    if let Err(error) = written {
                        tracing::warn!(%error, path = %path.display(), "cannot write the relay cache");
                    }
                }
            }
            Err(error) => tracing::info!(%error, "relay directory refresh failed"),
        }
    }
    let mut candidates: Vec<String> = known
        .into_iter()
        .filter(|url| !initial.contains(url))
        .collect();
    // Best first, by what earlier sessions measured (list order among the untried).
    if let Some(cache) = &cache {
        let records = super::cache::read_relay_records(&super::cache::records_path(cache));
        super::cache::rank_relays(&mut candidates, &records);
    }
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
