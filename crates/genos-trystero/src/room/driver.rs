//! The task that drives a Trystero room: signaling over the relays, one WebRTC connection
//! per peer, and the commands of the room's handles.

use super::link::{Link, LinkEvent};
use super::*;

/// A peer we connect (or are connected) to.
pub(super) struct Peer {
    pub(super) generation: u64,
    pub(super) conn: WebRtcConnection,
    pub(super) role: Role,
    pub(super) offer_id: Option<String>,
    pub(super) answered: bool,
    pub(super) started: Instant,
    pub(super) link: Option<Link>,
}

pub(super) struct Driver {
    pub(super) config: Arc<TrysteroConfig>,
    pub(super) self_id: String,
    pub(super) topics: Topics,
    pub(super) key: SdpKey,
    pub(super) token: String,
    pub(super) relays: Vec<RelayClient>,
    pub(super) transport: WebRtcTransport,
    pub(super) peers: HashMap<String, Peer>,
    /// Decrypted candidates that came before their peer's offer.
    pub(super) early_candidates: HashMap<String, Vec<Value>>,
    pub(super) events: mpsc::Sender<TrysteroEvent>,
    pub(super) link_events: mpsc::Sender<(String, u64, LinkEvent)>,
    pub(super) next_generation: u64,
}

impl Driver {
    pub(super) async fn run(
        mut self,
        mut relay_rx: mpsc::Receiver<RelayEvent>,
        mut link_rx: mpsc::Receiver<(String, u64, LinkEvent)>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut announces = 0usize;
        let mut next_announce = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_announce) => {
                    self.announce();
                    let delay = ANNOUNCE_WARMUP
                        .get(announces)
                        .copied()
                        .unwrap_or(self.config.announce_interval)
                        .min(self.config.announce_interval);
                    announces += 1;
                    next_announce = tokio::time::Instant::now() + delay;
                }
                Some(event) = relay_rx.recv() => self.on_relay_event(&event.event).await,
                Some((peer, generation, event)) = link_rx.recv() => {
                    self.on_link_event(peer, generation, event).await;
                }
                _ = tick.tick() => self.expire().await,
                command = commands.recv() => match command {
                    Some(Command::Writers { targets, reply }) => {
                        let _ = reply.send(self.writers(targets));
                    }
                    Some(Command::Peers(reply)) => {
                        let _ = reply.send(self.joined());
                    }
                    Some(Command::Ping { peer, reply }) => self.ping(&peer, reply),
                    Some(Command::Media { targets, reply }) => {
                        let _ = reply.send(self.media_peers(targets));
                    }
                    Some(Command::Leave(reply)) => {
                        self.leave().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.leave().await;
                        return;
                    }
                },
            }
        }
    }

    /// Sends `@_ping`; the reply goes out when the pong comes (dropped if the peer is not
    /// joined, leaves first, or has [`MAX_PINGS`] pings outstanding).
    pub(super) fn ping(&mut self, peer: &str, reply: oneshot::Sender<Instant>) {
        let token = self.token.clone();
        let Some(link) = self
            .link_mut(peer)
            .filter(|link| link.active && link.pings.len() < MAX_PINGS)
        else {
            return;
        };
        link.send_internal(&token, PING, Payload::Text(String::new()));
        link.pings.push_back(reply);
    }

    pub(super) fn joined(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(_, peer)| peer.link.as_ref().is_some_and(|link| link.active))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(super) fn writers(&self, targets: Option<Vec<String>>) -> Vec<(String, Option<Writer>)> {
        let targets = targets.unwrap_or_else(|| self.joined());
        targets
            .into_iter()
            .map(|id| {
                let writer = self
                    .peers
                    .get(&id)
                    .and_then(|peer| peer.link.as_ref())
                    .filter(|link| link.active)
                    .map(|link| link.writer.clone());
                (id, writer)
            })
            .collect()
    }

    pub(super) fn publish(&self, topic: &str, content: &SignalContent) {
        let template = EventBuilder::new(Kind::Custom(kind(topic)), content.encode())
            .tag(Tag::custom("x", [topic.to_owned()]));
        for relay in &self.relays {
            if let Err(error) = relay.publish(template.clone()) {
                tracing::debug!(%error, "cannot publish to a relay");
            }
        }
    }

    /// Our announce: to the room topic on the schedule, and as a nudge to one peer's topic.
    pub(super) fn our_announce(&self) -> SignalContent {
        SignalContent::Announce {
            peer_id: self.self_id.clone(),
            passive: false,
        }
    }

    pub(super) fn announce(&self) {
        self.publish(self.topics.room(), &self.our_announce());
    }

    pub(super) async fn on_relay_event(&mut self, event: &Event) {
        if event.verify().is_err() {
            tracing::debug!("dropping an event with a bad id or signature");
            return;
        }
        let Ok(content) = SignalContent::decode(&event.content) else {
            tracing::debug!("dropping an event that is not Trystero signaling");
            return;
        };
        let peer = content.peer_id().to_owned();
        if peer == self.self_id {
            return;
        }
        match content {
            SignalContent::Announce { .. } => self.on_announce(peer).await,
            SignalContent::Offer {
                offer_id, offer, ..
            } => self.on_offer(peer, offer_id, &offer).await,
            SignalContent::Answer {
                offer_id, answer, ..
            } => self.on_answer(&peer, offer_id.as_deref(), &answer).await,
            SignalContent::Candidate { candidate, .. } => {
                self.on_candidate(peer, &candidate).await;
            }
        }
    }

    pub(super) async fn on_announce(&mut self, peer: String) {
        if self.peers.contains_key(&peer) {
            return;
        }
        if self.self_id.as_str() > peer.as_str() {
            // The lower id offers: ask it to (Trystero's nudge).
            self.publish(&self.topics.peer(&peer), &self.our_announce());
            return;
        }
        if self.peers.len() >= self.config.max_peers {
            return;
        }
        let offer_id = peer_id::random(crate::signal::OFFER_ID_LEN);
        self.connect(peer, Role::Offerer, Some(offer_id)).await;
    }

    pub(super) async fn connect(
        &mut self,
        peer: String,
        role: Role,
        offer_id: Option<String>,
    ) -> bool {
        let (conn, mut events) = match self.transport.connect(role).await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "cannot create a connection");
                return false;
            }
        };
        self.next_generation += 1;
        let generation = self.next_generation;
        let sink = self.link_events.clone();
        let id = peer.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if sink
                    .send((id.clone(), generation, LinkEvent::Connection(event)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        self.peers.insert(
            peer,
            Peer {
                generation,
                conn,
                role,
                offer_id,
                answered: false,
                started: Instant::now(),
                link: None,
            },
        );
        true
    }

    pub(super) async fn on_offer(&mut self, peer: String, offer_id: Option<String>, offer: &str) {
        if let Some(existing) = self.peers.get(&peer) {
            let leading = existing.role == Role::Offerer && self.self_id.as_str() < peer.as_str();
            if existing.role == Role::Answerer || existing.link.is_some() || leading {
                return;
            }
            self.drop_peer(&peer, false).await;
        }
        let Some(sdp) = self.open_description(&peer, "offer", offer).await else {
            return;
        };
        if self.peers.len() >= self.config.max_peers
            || !self.connect(peer.clone(), Role::Answerer, offer_id).await
        {
            return;
        }
        self.apply_description(&peer, "offer", sdp).await;
    }

    pub(super) async fn on_answer(&mut self, peer: &str, offer_id: Option<&str>, answer: &str) {
        let awaited = self.peers.get(peer).is_some_and(|state| {
            state.role == Role::Offerer
                && !state.answered
                && offer_id.is_none_or(|id| state.offer_id.as_deref() == Some(id))
        });
        if !awaited {
            return;
        }
        let Some(sdp) = self.open_description(peer, "answer", answer).await else {
            return;
        };
        if let Some(state) = self.peers.get_mut(peer) {
            state.answered = true;
        }
        self.apply_description(peer, "answer", sdp).await;
    }

    /// Decrypts an offer or answer (`kind`) from `peer`; a wrong key is reported in
    /// Trystero's words.
    async fn open_description(&self, peer: &str, kind: &str, text: &str) -> Option<String> {
        match self.key.decrypt(text) {
            Ok(sdp) => Some(sdp),
            Err(_) => {
                self.emit(TrysteroEvent::JoinFailed {
                    peer: peer.to_owned(),
                    reason: format!("incorrect room password when decrypting {kind}"),
                })
                .await;
                None
            }
        }
    }

    /// Hands `peer`'s connection its offer or answer, then the candidates that came early.
    async fn apply_description(&mut self, peer: &str, kind: &str, sdp: String) {
        let mut signals = vec![json!({"type": kind, "sdp": sdp})];
        signals.extend(
            self.early_candidates
                .remove(peer)
                .unwrap_or_default()
                .into_iter()
                .map(candidate_signal),
        );
        self.apply(peer, signals).await;
    }

    pub(super) async fn on_candidate(&mut self, peer: String, candidate: &str) {
        let Ok(plain) = self.key.decrypt(candidate) else {
            return;
        };
        let Ok(candidate) = serde_json::from_str::<Value>(&plain) else {
            return;
        };
        let ready = self
            .peers
            .get(&peer)
            .is_some_and(|state| state.role == Role::Answerer || state.answered);
        if ready {
            self.apply(&peer, vec![candidate_signal(candidate)]).await;
        } else if self.early_candidates.len() < self.config.max_peers {
            let held = self.early_candidates.entry(peer).or_default();
            if held.len() < MAX_EARLY_CANDIDATES {
                held.push(candidate);
            }
        }
    }

    pub(super) async fn apply(&mut self, peer: &str, signals: Vec<Value>) {
        let Some(state) = self.peers.get(peer) else {
            return;
        };
        let conn = state.conn.clone();
        for signal in signals {
            let bytes = Bytes::from(signal.to_string().into_bytes());
            if let Err(error) = conn.handle_signal(bytes).await {
                tracing::debug!(%error, peer, "a signal was refused");
            }
        }
    }

    pub(super) async fn on_link_event(&mut self, peer: String, generation: u64, event: LinkEvent) {
        if self.peers.get(&peer).map(|state| state.generation) != Some(generation) {
            return;
        }
        match event {
            LinkEvent::Connection(ConnectionEvent::Signal(bytes)) => {
                self.on_local_signal(&peer, &bytes)
            }
            LinkEvent::Connection(ConnectionEvent::ChannelOpened(channel)) => {
                self.on_channel(peer, generation, channel);
            }
            LinkEvent::Connection(ConnectionEvent::StateChanged(state)) => {
                if state.is_terminal() {
                    self.drop_peer(&peer, true).await;
                }
            }
            LinkEvent::Connection(ConnectionEvent::TrackReceived(track)) => {
                self.on_track(&peer, track).await;
            }
            LinkEvent::Connection(_) => {}
            LinkEvent::Frame(frame) => self.on_frame(&peer, &frame).await,
            LinkEvent::ChannelClosed => self.drop_peer(&peer, true).await,
        }
    }

    /// Our connection's offer, answer or candidate: encrypted and sent to the peer's topic,
    /// or, once the peer joined (media renegotiation), on the link as Trystero's `@_signal`.
    pub(super) fn on_local_signal(&mut self, peer: &str, bytes: &[u8]) {
        let Ok(signal) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        let token = self.token.clone();
        if let Some(link) = self.link_mut(peer).filter(|link| link.active) {
            if let Some(signal) = super::media::to_trystero_signal(&signal) {
                link.send_internal(&token, super::media::SIGNAL, Payload::Json(signal));
            }
            return;
        }
        let Some(state) = self.peers.get(peer) else {
            return;
        };
        let self_id = self.self_id.clone();
        let offer_id = state.offer_id.clone();
        let sealed_sdp = || {
            self.key.encrypt(
                signal
                    .get("sdp")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )
        };
        let content = match signal.get("type").and_then(Value::as_str) {
            Some("offer") => SignalContent::Offer {
                peer_id: self_id,
                offer_id,
                offer: sealed_sdp(),
            },
            Some("answer") => SignalContent::Answer {
                peer_id: self_id,
                offer_id,
                answer: sealed_sdp(),
            },
            Some("candidate") => {
                let Some(candidate) = signal.get("candidate") else {
                    return;
                };
                SignalContent::Candidate {
                    peer_id: self_id,
                    offer_id,
                    candidate: self.key.encrypt(&candidate.to_string()),
                }
            }
            _ => return,
        };
        self.publish(&self.topics.peer(peer), &content);
    }

    /// Ends handshakes and setups that took too long.
    pub(super) async fn expire(&mut self) {
        let now = Instant::now();
        let connect_timeout = self.config.connect_timeout;
        let stale: Vec<(String, bool)> = self
            .peers
            .iter()
            .filter_map(|(id, peer)| match &peer.link {
                Some(link) if !link.active && now >= link.deadline => Some((id.clone(), true)),
                None if now.duration_since(peer.started) >= connect_timeout => {
                    Some((id.clone(), false))
                }
                _ => None,
            })
            .collect();
        for (peer, handshake) in stale {
            if handshake {
                self.fail(&peer, "handshake timed out").await;
            } else {
                self.drop_peer(&peer, false).await;
            }
        }
    }

    pub(super) async fn drop_peer(&mut self, peer: &str, report: bool) {
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        state.conn.close().await;
        if report && state.link.is_some_and(|link| link.active) {
            self.emit(TrysteroEvent::PeerLeft {
                peer: peer.to_owned(),
            })
            .await;
        }
    }

    pub(super) async fn leave(&mut self) {
        let token = self.token.clone();
        for peer in self.peers.values_mut() {
            if let Some(link) = peer.link.as_mut() {
                link.send_internal(&token, LEAVE, Payload::Text(String::new()));
            }
        }
        // Give the goodbyes a moment on the wire, as Trystero does (99 ms).
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (_, peer) in self.peers.drain() {
            peer.conn.close().await;
        }
        for relay in &self.relays {
            relay.stop();
        }
    }

    pub(super) async fn emit(&self, event: TrysteroEvent) {
        let _ = self.events.send(event).await;
    }
}

/// The transport's signal for a trickled candidate (`RTCIceCandidateInit` JSON).
pub(super) fn candidate_signal(candidate: Value) -> Value {
    json!({"type": "candidate", "candidate": candidate})
}
