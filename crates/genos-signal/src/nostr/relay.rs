//! One relay connection: connect with backoff, subscribe, publish, answer AUTH and proof of
//! work, honour refusals. One task per relay, so a slow or dead relay never delays another.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU8;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use nostr::prelude::*;
use rand::Rng;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::NostrConfig;
use super::health::{MuteReason, RelayHealth, RelayState};
use super::oversize::SkipOversized;

/// An event to publish, with what it takes to rebuild it with proof of work.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) event: Arc<Event>,
    pub(crate) template: Arc<EventBuilder>,
    pub(crate) created: Instant,
    /// For stored presence and tombstones: the same content as an ephemeral event, sent
    /// instead to relays that refuse stored events.
    pub(crate) fallback: Option<Box<Outgoing>>,
}

impl Outgoing {
    /// The ephemeral form of this event (itself when it has none).
    pub(crate) fn into_ephemeral(self) -> Outgoing {
        match self.fallback {
            Some(fallback) => *fallback,
            None => self,
        }
    }
}

pub(crate) enum Command {
    Publish(Outgoing),
    /// Adds a subscription to the connection (another session on the same relay).
    Subscribe(Sub),
    /// Removes a subscription; the connection closes with its last one.
    Unsubscribe(SubscriptionId),
    Stop,
}

/// One session's subscription on a (possibly shared) relay connection.
pub(crate) struct Sub {
    pub(crate) id: SubscriptionId,
    /// Live signaling since a few seconds ago, and (with stored presence) the topic's stored
    /// presence, which a `since` filter would never return.
    pub(crate) filters: Vec<Filter>,
    pub(crate) incoming: mpsc::Sender<Incoming>,
    pub(crate) subscribed: Arc<Notify>,
    pub(crate) presence: PresenceSource,
}

impl Sub {
    pub(crate) fn new(
        filters: Vec<Filter>,
        incoming: mpsc::Sender<Incoming>,
        subscribed: Arc<Notify>,
        presence: PresenceSource,
    ) -> Self {
        Self {
            id: SubscriptionId::new(format!("genos-{}", hex::encode(rand::random::<[u8; 8]>()))),
            filters,
            incoming,
            subscribed,
            presence,
        }
    }

    fn request(&self) -> String {
        ClientMessage::req(self.id.clone(), self.filters.clone()).as_json()
    }

    /// True if one of the filters' kinds and tags selects `event` (time bounds are the
    /// router's to judge: stored presence is older than the live filter's `since`).
    fn asked_for(&self, event: &Event) -> bool {
        let options = MatchEventOptions {
            id: false,
            author: false,
            kind: true,
            tags: true,
            since: false,
            until: false,
            nip50: false,
        };
        self.filters
            .iter()
            .any(|filter| filter.match_event(event, options))
    }
}

/// An event a relay delivered for our subscription, not yet verified.
#[derive(Debug)]
pub struct Incoming {
    /// The event as the relay sent it.
    pub event: Box<Event>,
}

/// Makes a freshly sealed presence event, if the session has announced.
pub(crate) type PresenceSource = Arc<dyn Fn() -> Option<Outgoing> + Send + Sync>;

pub(crate) struct Worker {
    pub(crate) url: String,
    /// The subscriptions the connection carries (one per session using it).
    subs: HashMap<SubscriptionId, Sub>,
    pub(crate) keys: Keys,
    pub(crate) config: Arc<NostrConfig>,
    pub(crate) health: Arc<Mutex<RelayHealth>>,
    pub(crate) commands: mpsc::Receiver<Command>,
}

enum Ended {
    Stop,
    Muted(MuteReason),
    Lost(String),
}

/// Per-connection protocol state.
struct Link {
    pending: VecDeque<Outgoing>,
    /// Sent events awaiting `OK`, bounded; kept to re-send after AUTH or with proof of work.
    awaiting_ok: HashMap<EventId, (Instant, Outgoing)>,
    challenge: Option<String>,
    authenticated: bool,
    /// Retries after `auth-required:`, so a relay that never accepts cannot loop us.
    auth_retries: u8,
    pow: Option<u8>,
    rate_limited_until: Option<Instant>,
    rate_backoff: Duration,
    /// The relay refused a stored event: send it ephemeral fallbacks from now on.
    stored_refused: bool,
    /// A subscription of this connection was confirmed (EOSE): the relay is connected.
    confirmed: bool,
}

const AWAITING_OK_LIMIT: usize = 256;

fn lock(health: &Mutex<RelayHealth>) -> std::sync::MutexGuard<'_, RelayHealth> {
    health.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first number in a refusal message, e.g. the 20 of `pow: difficulty 20 required`.
fn first_number(message: &str) -> Option<u8> {
    let digits: String = message
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Worker {
    /// Starts a worker for `url` in the background with its first subscription; returns its
    /// command queue and health.
    pub(crate) fn spawn(
        url: &str,
        first: Sub,
        keys: Keys,
        config: Arc<NostrConfig>,
    ) -> (mpsc::Sender<Command>, Arc<Mutex<RelayHealth>>) {
        let (commands, receiver) = mpsc::channel(config.connection_queue());
        let health = Arc::new(Mutex::new(RelayHealth::new(url)));
        let mut subs = HashMap::new();
        subs.insert(first.id.clone(), first);
        let worker = Self {
            url: url.to_owned(),
            subs,
            keys,
            config,
            health: health.clone(),
            commands: receiver,
        };
        tokio::spawn(worker.run());
        (commands, health)
    }

    fn update(&self, f: impl FnOnce(&mut RelayHealth)) {
        f(&mut lock(&self.health));
    }

    fn set_state(&self, state: RelayState) {
        self.update(|h| h.state = state);
    }

    pub(crate) async fn run(mut self) {
        let mut link = Link {
            pending: VecDeque::new(),
            awaiting_ok: HashMap::new(),
            challenge: None,
            authenticated: false,
            auth_retries: 0,
            pow: None,
            rate_limited_until: None,
            rate_backoff: Duration::from_secs(5),
            stored_refused: false,
            confirmed: false,
        };
        loop {
            self.set_state(RelayState::Connecting);
            let ended = self.connect_and_serve(&mut link).await;
            match ended {
                Ended::Stop => {
                    self.set_state(RelayState::Stopped);
                    return;
                }
                Ended::Muted(reason) => {
                    tracing::info!(url = %self.url, ?reason, "muting relay");
                    self.set_state(RelayState::Muted(reason));
                    return;
                }
                Ended::Lost(error) => {
                    tracing::debug!(url = %self.url, %error, "relay connection lost");
                    let failures = {
                        let mut h = lock(&self.health);
                        h.failures += 1;
                        h.consecutive_failures += 1;
                        h.last_error = Some(error);
                        h.consecutive_failures
                    };
                    if failures >= self.config.max_consecutive_failures {
                        self.set_state(RelayState::Muted(MuteReason::TooManyFailures(failures)));
                        return;
                    }
                    let delay = self.backoff(failures);
                    self.set_state(RelayState::Backoff { delay });
                    if self.wait(delay, &mut link).await {
                        self.set_state(RelayState::Stopped);
                        return;
                    }
                }
            }
        }
    }

    /// Jittered exponential backoff: initial × 2^(n-1), capped, ±20%.
    fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        let base = self
            .config
            .reconnect_initial
            .saturating_mul(1 << exponent)
            .min(self.config.reconnect_max);
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    /// Waits `delay`, queueing publishes meanwhile. Returns true if told to stop.
    async fn wait(&mut self, delay: Duration, link: &mut Link) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return false,
                command = self.commands.recv() => match command {
                    Some(Command::Publish(outgoing)) => self.queue(link, outgoing),
                    Some(Command::Subscribe(sub)) => {
                        self.subs.insert(sub.id.clone(), sub);
                    }
                    // The registry stops a connection once its last session left.
                    Some(Command::Unsubscribe(id)) => {
                        self.subs.remove(&id);
                    }
                    Some(Command::Stop) | None => return true,
                },
            }
        }
    }

    fn queue(&self, link: &mut Link, outgoing: Outgoing) {
        if link.pending.len() >= self.config.connection_queue() {
            link.pending.pop_front();
            self.update(|h| h.publish_dropped += 1);
        }
        link.pending.push_back(outgoing);
    }

    /// Opens the WebSocket: TCP (Nagle off: signaling is many small latency-bound
    /// messages), TLS for wss://, then oversized messages skipped below tungstenite.
    async fn open(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<SkipOversized<MaybeTlsStream<tokio::net::TcpStream>>>,
        String,
    > {
        let request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let uri = request.uri().clone();
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            other => return Err(format!("not a WebSocket URL (scheme {other:?})")),
        };
        let host = uri.host().ok_or("no host in the URL")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let stream = if tls {
            let tls = super::directory::tls_connect(host, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            MaybeTlsStream::Rustls(tls)
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        let limit = self.config.max_relay_message;
        // The filter keeps larger messages from tungstenite; its bounds stay as a backstop.
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(limit);
        ws_config.max_frame_size = Some(limit);
        // Counted into the health as it happens.
        let health = self.health.clone();
        let on_skip = Arc::new(move || lock(&health).messages_dropped += 1);
        let filtered = SkipOversized::new(stream, limit, on_skip);
        tokio_tungstenite::client_async_with_config(request, filtered, Some(ws_config))
            .await
            .map(|(ws, _response)| ws)
            .map_err(|e| e.to_string())
    }

    async fn connect_and_serve(&mut self, link: &mut Link) -> Ended {
        let connect = self.open();
        let ws = match tokio::time::timeout(self.config.connect_timeout, connect).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => return Ended::Lost(format!("connect: {error}")),
            Err(_) => return Ended::Lost("connect: timed out".into()),
        };
        let (mut sink, mut stream) = ws.split();
        link.authenticated = false;
        link.auth_retries = 0;
        link.challenge = None;
        link.confirmed = false;
        for sub in self.subs.values() {
            if let Err(error) = sink.send(WsMessage::text(sub.request())).await {
                return Ended::Lost(format!("subscribe: {error}"));
            }
        }
        let mut keepalive = tokio::time::interval(Duration::from_secs(30));
        keepalive.tick().await;
        loop {
            let mut to_send: Vec<String> = Vec::new();
            let ended = tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Publish(outgoing)) => {
                        self.prepare(link, outgoing, &mut to_send).await;
                        None
                    }
                    Some(Command::Subscribe(sub)) => {
                        to_send.push(sub.request());
                        self.subs.insert(sub.id.clone(), sub);
                        None
                    }
                    Some(Command::Unsubscribe(id)) => {
                        if self.subs.remove(&id).is_some() {
                            to_send.push(ClientMessage::close(id).as_json());
                        }
                        None
                    }
                    Some(Command::Stop) | None => {
                        for id in self.subs.keys() {
                            let close = ClientMessage::close(id.clone());
                            let _ = sink.send(WsMessage::text(close.as_json())).await;
                        }
                        let _ = sink.close().await;
                        Some(Ended::Stop)
                    }
                },
                message = stream.next() => match message {
                    None => Some(Ended::Lost("closed by the relay".into())),
                    Some(Err(error)) => Some(Ended::Lost(format!("read: {error}"))),
                    Some(Ok(WsMessage::Text(text))) => self.handle_text(link, text.as_str(), &mut to_send).await,
                    Some(Ok(WsMessage::Close(_))) => Some(Ended::Lost("closed by the relay".into())),
                    Some(Ok(WsMessage::Binary(_))) => {
                        self.update(|h| h.messages_dropped += 1);
                        None
                    }
                    Some(Ok(_)) => None,
                },
                _ = keepalive.tick() => {
                    if let Err(error) = sink.send(WsMessage::Ping(Default::default())).await {
                        Some(Ended::Lost(format!("ping: {error}")))
                    } else {
                        None
                    }
                }
            };
            if let Some(ended) = ended {
                return ended;
            }
            for text in to_send {
                if let Err(error) = sink.send(WsMessage::text(text)).await {
                    return Ended::Lost(format!("write: {error}"));
                }
            }
        }
    }

    /// Turns an outgoing event into wire text (mining proof of work if this relay wants it).
    async fn prepare(&self, link: &mut Link, outgoing: Outgoing, to_send: &mut Vec<String>) {
        let outgoing = if link.stored_refused {
            outgoing.into_ephemeral()
        } else {
            outgoing
        };
        if let Some(until) = link.rate_limited_until {
            if Instant::now() < until {
                self.update(|h| h.publish_dropped += 1);
                return;
            }
            link.rate_limited_until = None;
        }
        let event = match link.pow.and_then(NonZeroU8::new) {
            Some(difficulty) => match self.mine(&outgoing, difficulty).await {
                Some(event) => event,
                None => {
                    self.update(|h| h.publish_dropped += 1);
                    return;
                }
            },
            None => outgoing.event.clone(),
        };
        if link.awaiting_ok.len() >= AWAITING_OK_LIMIT {
            // Relays that never answer OK (some skip ephemeral events) must not grow this.
            link.awaiting_ok.clear();
        }
        link.awaiting_ok
            .insert(event.id, (Instant::now(), outgoing));
        to_send.push(ClientMessage::event((*event).clone()).as_json());
        self.update(|h| h.events_sent += 1);
    }

    async fn mine(&self, outgoing: &Outgoing, difficulty: NonZeroU8) -> Option<Arc<Event>> {
        let template = (*outgoing.template).clone();
        let keys = self.keys.clone();
        let mined = tokio::task::spawn_blocking(move || {
            let unsigned = template
                .finalize_unsigned(keys.public_key())
                .mine(&SingleThreadPow, difficulty)
                .ok()?;
            keys.sign_event(unsigned).ok()
        })
        .await
        .ok()
        .flatten();
        mined.map(Arc::new)
    }

    fn auth_message(&self, challenge: &str) -> Option<String> {
        let event = EventBuilder::new(Kind::Authentication, "")
            .tag(Tag::custom("relay", [self.url.as_str()]))
            .tag(Tag::custom("challenge", [challenge]))
            .finalize(&self.keys)
            .ok()?;
        Some(ClientMessage::auth(event).as_json())
    }

    /// Makes sure we answered the relay's challenge before a retry; false when there is no
    /// challenge to answer or retries are used up.
    fn authenticate(&self, link: &mut Link, to_send: &mut Vec<String>) -> bool {
        const MAX_AUTH_RETRIES: u8 = 3;
        let Some(challenge) = link.challenge.clone() else {
            return false;
        };
        if link.auth_retries >= MAX_AUTH_RETRIES {
            return false;
        }
        link.auth_retries += 1;
        if !link.authenticated
            && let Some(auth) = self.auth_message(&challenge)
        {
            link.authenticated = true;
            to_send.push(auth);
            self.update(|h| h.authentications += 1);
        }
        true
    }

    async fn handle_text(
        &mut self,
        link: &mut Link,
        text: &str,
        to_send: &mut Vec<String>,
    ) -> Option<Ended> {
        if text.len() > self.config.max_event_size {
            self.update(|h| h.messages_dropped += 1);
            return None;
        }
        let Ok(message) = RelayMessage::from_json(text) else {
            self.update(|h| h.messages_dropped += 1);
            return None;
        };
        match message {
            RelayMessage::Event {
                subscription_id,
                event,
            } => {
                // Not for our subscription, or outside what we asked for (a relay that
                // ignores filters, or floods another room's events): dropped here, so it
                // never takes room in the queue that honest events share.
                let Some(sub) = self
                    .subs
                    .get(subscription_id.as_ref())
                    .filter(|sub| sub.asked_for(event.as_ref()))
                else {
                    self.update(|h| h.messages_dropped += 1);
                    return None;
                };
                let incoming = Incoming {
                    event: Box::new(event.into_owned()),
                };
                match sub.incoming.try_send(incoming) {
                    Ok(()) => self.update(|h| h.events_received += 1),
                    Err(_) => {
                        tracing::debug!(relay = %self.url, "incoming queue full: event dropped");
                        self.update(|h| h.messages_dropped += 1);
                    }
                }
                None
            }
            RelayMessage::EndOfStoredEvents(subscription_id) => {
                let sub = self.subs.get(subscription_id.as_ref())?;
                sub.subscribed.notify_waiters();
                // After every (re)subscription: be seen again.
                let presence = (sub.presence)();
                if !link.confirmed {
                    link.confirmed = true;
                    self.update(|h| {
                        h.state = RelayState::Connected;
                        h.connects += 1;
                        h.consecutive_failures = 0;
                    });
                }
                if let Some(presence) = presence {
                    self.prepare(link, presence, to_send).await;
                }
                // Then send what waited for the connection.
                let cutoff = self.config.queued_event_max_age;
                while let Some(outgoing) = link.pending.pop_front() {
                    if outgoing.created.elapsed() <= cutoff {
                        self.prepare(link, outgoing, to_send).await;
                    } else {
                        self.update(|h| h.publish_dropped += 1);
                    }
                }
                None
            }
            RelayMessage::Ok {
                event_id,
                status,
                message,
            } => {
                let sent = link.awaiting_ok.remove(&event_id);
                if status {
                    link.auth_retries = 0;
                    if let Some((at, _)) = sent {
                        let threshold = self.config.slow_relay_threshold;
                        let smoothed = {
                            let mut h = lock(&self.health);
                            h.record_latency(at.elapsed());
                            (h.ok_samples >= 3).then_some(h.ok_latency).flatten()
                        };
                        if let Some(latency) = smoothed
                            && latency > threshold
                        {
                            return Some(Ended::Muted(MuteReason::Slow(latency)));
                        }
                    }
                    return None;
                }
                self.update(|h| {
                    h.refusals += 1;
                    h.last_error = Some(message.to_string());
                });
                self.refused(link, &message, sent.map(|(_, o)| o), to_send)
                    .await
            }
            RelayMessage::Closed {
                subscription_id,
                message,
            } => {
                let request = self.subs.get(subscription_id.as_ref()).map(Sub::request)?;
                if message.starts_with("auth-required:") && self.authenticate(link, to_send) {
                    to_send.push(request);
                    return None;
                }
                if self.subs.len() > 1 {
                    // One session's subscription refused on a shared connection (a cap on
                    // subscriptions, most likely): that session loses this relay, the others
                    // keep it.
                    tracing::info!(url = %self.url, %message, "relay closed one of our subscriptions");
                    self.subs.remove(subscription_id.as_ref());
                    self.update(|h| h.refusals += 1);
                    return None;
                }
                Some(Ended::Muted(MuteReason::SubscriptionClosed(
                    message.into_owned(),
                )))
            }
            RelayMessage::Auth { challenge } => {
                let challenge = challenge.into_owned();
                if let Some(auth) = self.auth_message(&challenge) {
                    link.authenticated = true;
                    to_send.push(auth);
                    self.update(|h| h.authentications += 1);
                }
                link.challenge = Some(challenge);
                None
            }
            RelayMessage::Notice(notice) => {
                tracing::debug!(url = %self.url, %notice, "relay notice");
                None
            }
            _ => None,
        }
    }

    /// Acts on an `OK false`: retry with work or auth, slow down, or mute the relay.
    async fn refused(
        &self,
        link: &mut Link,
        message: &str,
        outgoing: Option<Outgoing>,
        to_send: &mut Vec<String>,
    ) -> Option<Ended> {
        let prefix = message.split(':').next().unwrap_or_default().trim();
        tracing::debug!(relay = %self.url, message, "relay refused an event");
        let refuses_stored = !matches!(
            prefix,
            "pow" | "auth-required" | "rate-limited" | "duplicate"
        );
        if refuses_stored && let Some(outgoing) = outgoing.as_ref().filter(|o| o.fallback.is_some())
        {
            // A relay that will not store our presence still relays ephemeral events.
            tracing::info!(relay = %self.url, message, "relay refuses stored presence: falling back to ephemeral");
            link.stored_refused = true;
            self.update(|h| h.stores_presence = false);
            self.prepare(link, outgoing.clone(), to_send).await;
            return None;
        }
        match prefix {
            "pow" => {
                let required = first_number(message);
                match required {
                    Some(d) if d <= self.config.max_pow_difficulty && link.pow != Some(d) => {
                        link.pow = Some(d);
                        if let Some(outgoing) = outgoing {
                            self.prepare(link, outgoing, to_send).await;
                        }
                        None
                    }
                    _ => Some(Ended::Muted(MuteReason::ProofOfWork { required })),
                }
            }
            "auth-required" => {
                if !self.authenticate(link, to_send) {
                    return Some(Ended::Muted(MuteReason::AuthRequired));
                }
                if let Some(outgoing) = outgoing {
                    self.prepare(link, outgoing, to_send).await;
                }
                None
            }
            "rate-limited" => {
                link.rate_limited_until = Some(Instant::now() + link.rate_backoff);
                link.rate_backoff = (link.rate_backoff * 2).min(Duration::from_secs(120));
                None
            }
            "restricted" | "blocked" => Some(Ended::Muted(MuteReason::Refused(message.to_owned()))),
            // duplicate, invalid, error, unknown: nothing to change about this relay.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_difficulty_out_of_a_refusal() {
        assert_eq!(first_number("pow: required a difficulty >= 20"), Some(20));
        assert_eq!(first_number("pow: difficulty 8 needed, got 0"), Some(8));
        assert_eq!(first_number("pow: more work please"), None);
        assert_eq!(first_number("pow: 9999"), None);
    }
}
