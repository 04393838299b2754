//! An open `data` channel: its writer and reader tasks, Trystero's handshake (`@_hsready`,
//! the password challenge over `@_hsdata`), and the frames it carries.

use super::driver::Driver;
use super::*;

/// What reaches the driver from a connection and its channel.
pub(super) enum LinkEvent {
    Connection(ConnectionEvent<WebRtcChannel>),
    Frame(Bytes),
    ChannelClosed,
}

/// The handshake and framing state of an open `data` channel.
pub(super) struct Link {
    pub(super) writer: Writer,
    pub(super) reassembler: Reassembler,
    /// Our challenge, while we wait for its response (password rooms, lower id).
    pub(super) challenge: Option<String>,
    pub(super) local_passed: bool,
    pub(super) remote_ready: bool,
    pub(super) active: bool,
    pub(super) deadline: Instant,
    /// The action counter of the driver's own sends (handshake, pong, leave).
    pub(super) counters: HashMap<&'static str, u16>,
    /// Our pings awaiting their pong, oldest first.
    pub(super) pings: std::collections::VecDeque<oneshot::Sender<Instant>>,
    /// The peer's track announcements, waiting for their tracks.
    pub(super) media: super::media::PendingMedia,
}

impl Driver {
    pub(super) fn on_channel(&mut self, peer: String, generation: u64, channel: WebRtcChannel) {
        let initiator = self.self_id.as_str() < peer.as_str();
        let password = self.config.password.clone();
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if channel.label() != "data" || state.link.is_some() {
            return;
        }
        let (writer, mut queue) = mpsc::channel::<Vec<Bytes>>(WRITER_QUEUE);
        let sender = channel.clone();
        tokio::spawn(async move {
            while let Some(frames) = queue.recv().await {
                for frame in frames {
                    if sender.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        });
        let sink = self.link_events.clone();
        let id = peer.clone();
        tokio::spawn(async move {
            while let Some(frame) = channel.recv().await {
                if sink
                    .send((id.clone(), generation, LinkEvent::Frame(frame)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = sink.send((id, generation, LinkEvent::ChannelClosed)).await;
        });
        let mut link = Link {
            writer,
            reassembler: Reassembler::new(self.config.limits),
            challenge: None,
            local_passed: false,
            remote_ready: false,
            active: false,
            deadline: Instant::now() + self.config.handshake_timeout,
            counters: HashMap::new(),
            pings: std::collections::VecDeque::new(),
            media: super::media::PendingMedia::default(),
        };
        let token = self.token.clone();
        let _ = link.writer.try_send(vec![
            Frame::Presence {
                token: &token,
                present: true,
            }
            .encode(),
        ]);
        match password {
            Some(_) if initiator => {
                let challenge = peer_id::random(CHALLENGE_LEN);
                link.send_internal(
                    &token,
                    HS_DATA,
                    Payload::Json(json!({"__trystero_pw": "challenge", "c": challenge})),
                );
                link.challenge = Some(challenge);
            }
            Some(_) => {}
            None => link.pass(&token),
        }
        state.link = Some(link);
    }

    pub(super) async fn on_frame(&mut self, peer: &str, frame: &[u8]) {
        let chunk = match Frame::decode(frame) {
            Ok(Frame::Room { token, payload }) if token == self.token => {
                Chunk::decode(Bytes::copy_from_slice(payload))
            }
            _ => return,
        };
        let Ok(chunk) = chunk else {
            return;
        };
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        let internal = chunk.action.starts_with("@_");
        let pushed = link.reassembler.push(chunk);
        let active = link.active;
        match pushed {
            Ok(Pushed::Complete(message)) if internal => self.on_internal(peer, message).await,
            Ok(Pushed::Complete(message)) if active => {
                self.emit(TrysteroEvent::Message {
                    peer: peer.to_owned(),
                    message,
                })
                .await;
            }
            Ok(Pushed::Progress { action, progress }) if active && !internal => {
                let _ = self.events.try_send(TrysteroEvent::Progress {
                    peer: peer.to_owned(),
                    action,
                    progress,
                });
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, peer, "a message was dropped"),
        }
    }

    /// The link of `peer`, if its channel is open.
    pub(super) fn link_mut(&mut self, peer: &str) -> Option<&mut Link> {
        self.peers
            .get_mut(peer)
            .and_then(|state| state.link.as_mut())
    }

    pub(super) async fn on_internal(&mut self, peer: &str, message: Message) {
        use super::media::{SIGNAL, STREAM_META, TRACK_META, from_trystero_signal};
        let active = self.link_mut(peer).is_some_and(|link| link.active);
        match (message.action.as_str(), &message.payload) {
            // Media renegotiation, once joined (Trystero ignores it before).
            (SIGNAL, Payload::Json(signal)) if active => {
                if let Some(signal) = from_trystero_signal(signal) {
                    self.apply(peer, vec![signal]).await;
                }
                return;
            }
            (TRACK_META | STREAM_META, Payload::Json(meta)) if active => {
                if let Some(link) = self.link_mut(peer) {
                    link.media.announced(&message.action, meta.clone());
                }
                return;
            }
            (SIGNAL | TRACK_META | STREAM_META, _) => return,
            _ => {}
        }
        let token = self.token.clone();
        let password = self.config.password.clone().unwrap_or_default();
        let (app, room) = (self.config.app.clone(), self.config.room.clone());
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        match message.action.as_str() {
            HS_READY => link.remote_ready = true,
            HS_DATA if !link.local_passed => {
                let Payload::Json(data) = &message.payload else {
                    return;
                };
                let field = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
                match (&link.challenge, field("__trystero_pw").as_deref()) {
                    (Some(challenge), Some("response")) => {
                        let expected = challenge_response(challenge, &password, &app, &room);
                        if field("h").as_deref() == Some(expected.as_str()) {
                            link.pass(&token);
                        } else {
                            self.fail(peer, "incorrect password for the room").await;
                            return;
                        }
                    }
                    (None, Some("challenge")) => {
                        let Some(challenge) = field("c") else {
                            return;
                        };
                        let response = challenge_response(&challenge, &password, &app, &room);
                        link.send_internal(
                            &token,
                            HS_DATA,
                            Payload::Json(json!({"__trystero_pw": "response", "h": response})),
                        );
                        link.pass(&token);
                    }
                    _ => {
                        self.fail(peer, "unexpected handshake message").await;
                        return;
                    }
                }
            }
            PING => link.send_internal(&token, PONG, Payload::Text(String::new())),
            PONG => {
                if let Some(reply) = link.pings.pop_front() {
                    let _ = reply.send(Instant::now());
                }
            }
            LEAVE => {
                self.drop_peer(peer, true).await;
                return;
            }
            _ => {}
        }
        if link.local_passed && link.remote_ready && !link.active {
            link.active = true;
            self.emit(TrysteroEvent::PeerJoined {
                peer: peer.to_owned(),
            })
            .await;
        }
    }

    pub(super) async fn fail(&mut self, peer: &str, reason: &str) {
        self.emit(TrysteroEvent::JoinFailed {
            peer: peer.to_owned(),
            reason: reason.to_owned(),
        })
        .await;
        self.drop_peer(peer, false).await;
    }
}

impl Link {
    /// Queues one of Trystero's own messages (never waits: they are small and rare).
    pub(super) fn send_internal(&mut self, token: &str, action: &'static str, payload: Payload) {
        let counter = next_counter(&mut self.counters, action);
        match room_frames(token, action, counter, payload, None) {
            Ok(frames) => {
                if self.writer.try_send(frames).is_err() {
                    tracing::debug!(action, "link queue full: an internal message was dropped");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot frame an internal message"),
        }
    }

    /// Our side of the handshake passed: say so.
    pub(super) fn pass(&mut self, token: &str) {
        self.local_passed = true;
        self.challenge = None;
        self.send_internal(token, HS_READY, Payload::Text(String::new()));
    }
}
