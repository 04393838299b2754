//! A Trystero room: a genos peer that browsers running Trystero 0.25 see as one of their own.
//!
//! [`TrysteroRoom::join`] subscribes to the room's and its own topic on every relay (through
//! genos-signal's [`RelayClient`]), announces itself as Trystero does (after 233 ms, 533 ms
//! and 1.3 s, then every 5.3 s), and connects to each peer it hears of over genos-transport's
//! WebRTC with Trystero's single `data` channel
//! ([`WebRtcConfig::plain_channel`](genos_transport::webrtc::WebRtcConfig::plain_channel)).
//! The lower peer id offers; the higher answers an announce with a nudge. A connected peer
//! joins once both sides sent `@_hsready` (after the password challenge in password rooms);
//! then named actions flow both ways, chunked, with metadata and progress, and media tracks
//! with Trystero's track metadata ([`TrysteroRoom::add_track`], [`TrysteroEvent::PeerTrack`]).
//!
//! One task drives the room: it owns every peer's state and takes relay events, connection
//! events, frames and commands from bounded queues. Sending chunks happens outside it, on a
//! writer task per peer, so a slow peer holds back only its own sends.

mod config;
mod driver;
mod link;
mod media;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use genos_signal::nostr::protocol::prelude::{
    Event, EventBuilder, Filter, Keys, Kind, SingleLetterTag, Tag, Timestamp,
};
use genos_signal::nostr::{NostrConfig, RelayClient, RelayEvent};
use genos_transport::webrtc::{WebRtcChannel, WebRtcConfig, WebRtcConnection, WebRtcTransport};
use genos_transport::{Connection, ConnectionEvent, DataChannel, Role, Transport};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::crypto::{SdpKey, challenge_response, room_token};
use crate::signal::SignalContent;
use crate::topic::{Topics, kind};
use crate::wire::{Chunk, Frame, Message, Payload, Pushed, Reassembler, ReassemblyLimits};
use crate::{TrysteroError, peer_id};

pub use self::config::{SendReport, TrysteroConfig, TrysteroEvent, TrysteroEvents};
use self::driver::Driver;
pub use self::media::TrysteroTrack;

/// Trystero's announce schedule: these first delays, then [`TrysteroConfig::announce_interval`].
const ANNOUNCE_WARMUP: [Duration; 3] = [
    Duration::from_millis(233),
    Duration::from_millis(533),
    Duration::from_millis(1_333),
];
/// Candidates held for a peer whose offer has not arrived yet.
const MAX_EARLY_CANDIDATES: usize = 64;
/// Messages queued on one peer's writer before senders wait.
const WRITER_QUEUE: usize = 64;
/// Trystero's reserved action names.
const HS_READY: &str = "@_hsready";
const HS_DATA: &str = "@_hsdata";
const PING: &str = "@_ping";
const PONG: &str = "@_pong";
const LEAVE: &str = "@_leave";
/// Length of Trystero's password challenges.
const CHALLENGE_LEN: usize = 36;
/// Pings awaiting a pong from one peer at most; more fail at once.
const MAX_PINGS: usize = 16;

/// A joined Trystero room. Cheap to clone; [`TrysteroRoom::leave`] ends it for all clones.
#[derive(Debug, Clone)]
pub struct TrysteroRoom {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    self_id: String,
    token: String,
    commands: mpsc::Sender<Command>,
    /// Each action's message counter (Trystero numbers messages per action and sender).
    counters: Mutex<HashMap<String, u16>>,
}

enum Command {
    Writers {
        targets: Option<Vec<String>>,
        reply: oneshot::Sender<Vec<(String, Option<Writer>)>>,
    },
    Peers(oneshot::Sender<Vec<String>>),
    Ping {
        peer: String,
        reply: oneshot::Sender<Instant>,
    },
    /// Joined peers' writers and connections, to add a track.
    Media {
        targets: Option<Vec<String>>,
        reply: oneshot::Sender<Vec<(String, Writer, WebRtcConnection)>>,
    },
    Leave(oneshot::Sender<()>),
}

type Writer = mpsc::Sender<Vec<Bytes>>;

impl TrysteroRoom {
    /// Joins: returns once a relay took the subscription.
    pub async fn join(config: TrysteroConfig) -> Result<(Self, TrysteroEvents), TrysteroError> {
        config.validate()?;
        let config = Arc::new(config);
        let self_id = config.peer_id.clone().unwrap_or_else(peer_id::generate);
        let topics = Topics::new(&config.app, &config.room);
        let self_topic = topics.peer(&self_id);
        let transport = WebRtcTransport::new(config.webrtc.clone().with_plain_channel("data"))
            .map_err(|e| TrysteroError::Transport(e.to_string()))?;
        let keys = Keys::generate();
        let (relay_events, relay_rx) = mpsc::channel(config.nostr.incoming_capacity);
        let subscribed = Arc::new(Notify::new());
        let notified = subscribed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let filter = Filter::new()
            .kinds([
                Kind::Custom(topics.room_kind()),
                Kind::Custom(kind(&self_topic)),
            ])
            .custom_tags(
                SingleLetterTag::LOWERCASE_X,
                [topics.room().to_owned(), self_topic.clone()],
            )
            .since(Timestamp::now() - Duration::from_secs(5));
        let nostr = Arc::new(config.nostr.clone());
        let relays: Vec<RelayClient> = config
            .relays
            .iter()
            .map(|url| {
                RelayClient::start(
                    url,
                    vec![filter.clone()],
                    keys.clone(),
                    nostr.clone(),
                    relay_events.clone(),
                    subscribed.clone(),
                )
            })
            .collect();
        if tokio::time::timeout(nostr.join_timeout, notified)
            .await
            .is_err()
        {
            return Err(TrysteroError::Signal(format!(
                "no relay took the subscription within {:?}",
                nostr.join_timeout
            )));
        }
        let (events, receiver) = mpsc::channel(config.events_capacity);
        let (commands, command_rx) = mpsc::channel(64);
        let (link_events, link_rx) = mpsc::channel(1_024);
        let token = room_token(&config.app, &config.room);
        let driver = Driver {
            key: SdpKey::derive(
                config.password.as_deref().unwrap_or_default(),
                &config.app,
                &config.room,
            ),
            config,
            self_id: self_id.clone(),
            topics,
            token: token.clone(),
            relays,
            transport,
            peers: HashMap::new(),
            early_candidates: HashMap::new(),
            events,
            link_events,
            next_generation: 0,
        };
        tokio::spawn(driver.run(relay_rx, link_rx, command_rx));
        Ok((
            Self {
                inner: Arc::new(Inner {
                    self_id,
                    token,
                    commands,
                    counters: Mutex::new(HashMap::new()),
                }),
            },
            TrysteroEvents { receiver },
        ))
    }

    /// This peer's Trystero id.
    pub fn peer_id(&self) -> &str {
        &self.inner.self_id
    }

    /// The joined peers.
    pub async fn peers(&self) -> Result<Vec<String>, TrysteroError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Peers(reply)).await?;
        answer.await.map_err(|_| TrysteroError::Left)
    }

    /// Round-trip time to a joined peer (Trystero's `@_ping`, answered with `@_pong`).
    /// Fails with [`TrysteroError::NoPeer`] if `peer` is not joined or leaves first.
    pub async fn ping(&self, peer: &str) -> Result<Duration, TrysteroError> {
        let (reply, answer) = oneshot::channel();
        let start = Instant::now();
        self.command(Command::Ping {
            peer: peer.to_owned(),
            reply,
        })
        .await?;
        let answered = answer
            .await
            .map_err(|_| TrysteroError::NoPeer(peer.to_owned()))?;
        Ok(answered.saturating_duration_since(start))
    }

    /// Sends `payload` on `action` to `targets` (every joined peer when `None`), with
    /// optional JSON `metadata`; waits while a target's link is busy.
    pub async fn send(
        &self,
        action: &str,
        payload: Payload,
        metadata: Option<&Value>,
        targets: Option<Vec<String>>,
    ) -> Result<SendReport, TrysteroError> {
        if action.starts_with("@_") {
            return Err(TrysteroError::InvalidConfig(
                "action names starting with @_ are Trystero's own".into(),
            ));
        }
        let frames = self.frames(action, payload, metadata)?;
        let (reply, answer) = oneshot::channel();
        self.command(Command::Writers { targets, reply }).await?;
        let writers = answer.await.map_err(|_| TrysteroError::Left)?;
        let mut report = SendReport::default();
        for (peer, writer) in writers {
            let sent = match writer {
                Some(writer) => writer.send(frames.clone()).await.is_ok(),
                None => false,
            };
            if sent {
                report.sent.push(peer);
            } else {
                report.failed.push(peer);
            }
        }
        Ok(report)
    }

    /// Says `@_leave` to every peer, closes every connection and relay. Idempotent.
    pub async fn leave(&self) {
        let (reply, answer) = oneshot::channel();
        if self.command(Command::Leave(reply)).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// The frames of our next message on `action` (numbered by this room's counter for it).
    fn frames(
        &self,
        action: &str,
        payload: Payload,
        metadata: Option<&Value>,
    ) -> Result<Vec<Bytes>, TrysteroError> {
        let counter = next_counter(
            &mut self
                .inner
                .counters
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            action.to_owned(),
        );
        room_frames(&self.inner.token, action, counter, payload, metadata)
    }

    async fn command(&self, command: Command) -> Result<(), TrysteroError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| TrysteroError::Left)
    }
}

/// The counter of the next message on action `key` (Trystero numbers each sender's messages
/// per action, wrapping at 16 bits).
fn next_counter<K: std::hash::Hash + Eq>(counters: &mut HashMap<K, u16>, key: K) -> u16 {
    let counter = counters.entry(key).or_insert(0);
    let now = *counter;
    *counter = counter.wrapping_add(1);
    now
}

/// A message's chunks, each wrapped in the room's frame.
fn room_frames(
    token: &str,
    action: &str,
    counter: u16,
    payload: Payload,
    metadata: Option<&Value>,
) -> Result<Vec<Bytes>, TrysteroError> {
    Ok(
        crate::wire::chunk_message(action, counter, payload, metadata)?
            .iter()
            .map(|chunk| {
                Frame::Room {
                    token,
                    payload: chunk,
                }
                .encode()
            })
            .collect(),
    )
}
