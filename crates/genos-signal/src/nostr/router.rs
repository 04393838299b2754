//! The router of one session: checks every incoming event (signature, kind, tag, seal,
//! replay) and hands what passes to the application's inbox.

use super::*;

/// Verifies incoming events and turns them into [`SignalEvent`]s.
pub(super) struct Router {
    pub(super) shared: Arc<Shared>,
    pub(super) guard: ReplayGuard,
    pub(super) inbox: Inbox,
    pub(super) me_tag: String,
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
}
