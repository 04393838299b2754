//! The router of one session: checks every incoming event (signature, kind, tag, seal,
//! replay) and hands what passes to the application's inbox.

use std::collections::HashMap;

use super::*;

/// Verifies incoming events and turns them into [`SignalEvent`]s.
pub(super) struct Router {
    pub(super) shared: Arc<Shared>,
    pub(super) guard: ReplayGuard,
    pub(super) inbox: Inbox,
    pub(super) me_tag: String,
    pub(super) stored_seen: StoredSeen,
}

/// The newest stored presence `created_at` seen per peer, so the same stored event from
/// several relays (or an older one from a slow relay) is reported once. Bounded: when full,
/// it starts over, and a peer's current presence may be reported once more.
#[derive(Default)]
pub(super) struct StoredSeen {
    newest: HashMap<PeerId, u64>,
}

impl StoredSeen {
    const CAPACITY: usize = 8192;

    /// Whether `created_at` is newer than anything seen from `peer`; remembers it if so.
    pub(super) fn is_newer(&mut self, peer: PeerId, created_at: u64) -> bool {
        match self.newest.get_mut(&peer) {
            Some(newest) if *newest >= created_at => false,
            Some(newest) => {
                *newest = created_at;
                true
            }
            None => {
                if self.newest.len() >= Self::CAPACITY {
                    self.newest.clear();
                }
                self.newest.insert(peer, created_at);
                true
            }
        }
    }
}

impl Router {
    pub(super) async fn run(mut self, mut incoming: mpsc::Receiver<Incoming>) {
        loop {
            let event = tokio::select! {
                biased;
                () = self.shared.stop.notified() => break,
                event = incoming.recv() => match event {
                    Some(Incoming { event }) => event,
                    None => break,
                },
            };
            if self.shared.left.load(Ordering::Acquire) {
                break;
            }
            if let Some(signal) = self.check(&event) {
                match self.inbox.push(signal) {
                    Pushed::Queued => bump(&self.shared.counters.delivered),
                    Pushed::Dropped => bump(&self.shared.counters.dropped_overflow),
                    Pushed::Closed => break,
                }
            }
        }
    }

    pub(super) fn check(&mut self, event: &Event) -> Option<SignalEvent> {
        let counters = &self.shared.counters;
        if event.pubkey.to_bytes() == *self.shared.peer.as_bytes() {
            return None; // our own event, echoed by the relay
        }
        let tag = event
            .tags
            .iter()
            .find(|tag| tag.kind() == "x")
            .and_then(|tag| tag.content());
        let to_room = tag == Some(self.shared.room_tag.as_str());
        if event.kind == self.shared.presence_kind && self.shared.config.stored_presence {
            return self.check_stored(event, to_room);
        }
        let to_me = tag == Some(self.me_tag.as_str());
        if event.kind != self.shared.kind || !(to_room || to_me) || event.verify().is_err() {
            bump(&counters.dropped_invalid);
            return None;
        }
        let sender = PeerId::from_bytes(event.pubkey.to_bytes());
        let content = match wire::open_content(
            &self.shared.seal,
            &self.shared.topic,
            sender,
            &event.content,
            self.shared.config.max_event_size,
        ) {
            Ok(content) => content,
            Err(ContentError::Seal | ContentError::Encoding | ContentError::Format) => {
                bump(&counters.dropped_unsealed);
                return None;
            }
        };
        let mut id = [0u8; 32];
        let (head, tail) = id.split_at_mut(16);
        head.copy_from_slice(&content.id);
        tail.copy_from_slice(sender.as_bytes().get(..16).unwrap_or(&[0; 16]));
        match self.guard.check(id, content.timestamp_ms, now_ms()) {
            Ok(()) => {}
            Err(ReplayError::Replayed) => {
                bump(&counters.duplicates);
                return None;
            }
            Err(_) => {
                bump(&counters.dropped_replay);
                return None;
            }
        }
        let payload = Bytes::from(content.payload);
        match (content.kind, to_room, content.to) {
            (ContentKind::Presence, true, None) => Some(SignalEvent::PeerSeen {
                peer: sender,
                presence: payload,
            }),
            (ContentKind::Bye, true, None) => Some(SignalEvent::PeerGone { peer: sender }),
            (ContentKind::Message, false, Some(to)) if to == self.shared.peer => {
                Some(SignalEvent::Message {
                    from: sender,
                    payload,
                })
            }
            _ => {
                bump(&counters.dropped_invalid);
                None
            }
        }
    }

    /// Checks stored presence or a tombstone: its `d` tag, its NIP-40 expiration (some relays
    /// serve expired events), a `created_at` not from the future and newer than what we have
    /// of that peer. Its content may be as old as the presence lifetime, so it bypasses the
    /// replay guard's window; the seal still binds it to its author and topic.
    fn check_stored(&mut self, event: &Event, to_room: bool) -> Option<SignalEvent> {
        let counters = &self.shared.counters;
        let room_tag = self.shared.room_tag.as_str();
        let has_d = event
            .tags
            .iter()
            .any(|tag| tag.kind() == "d" && tag.content() == Some(room_tag));
        let expires = event
            .tags
            .iter()
            .find(|tag| tag.kind() == "expiration")
            .and_then(|tag| tag.content())
            .and_then(|value| value.parse::<u64>().ok());
        let (Some(expires), true, true) = (expires, has_d, to_room) else {
            bump(&counters.dropped_invalid);
            return None;
        };
        let now_s = now_ms() / 1000;
        if expires <= now_s {
            bump(&counters.dropped_expired);
            return None;
        }
        let skew_s = self.shared.config.replay.skew_ms / 1000;
        if event.created_at.as_secs() > now_s.saturating_add(skew_s) {
            bump(&counters.dropped_replay);
            return None;
        }
        if event.verify().is_err() {
            bump(&counters.dropped_invalid);
            return None;
        }
        let sender = PeerId::from_bytes(event.pubkey.to_bytes());
        let Ok(content) = wire::open_content(
            &self.shared.seal,
            &self.shared.topic,
            sender,
            &event.content,
            self.shared.config.max_event_size,
        ) else {
            bump(&counters.dropped_unsealed);
            return None;
        };
        if content.to.is_some() || content.kind == ContentKind::Message {
            bump(&counters.dropped_invalid);
            return None;
        }
        if !self
            .stored_seen
            .is_newer(sender, event.created_at.as_secs())
        {
            bump(&counters.duplicates);
            return None;
        }
        match content.kind {
            ContentKind::Presence => Some(SignalEvent::PeerSeen {
                peer: sender,
                presence: Bytes::from(content.payload),
            }),
            _ => Some(SignalEvent::PeerGone { peer: sender }),
        }
    }
}
