//! Frames: originating (sign, seal), checking (dedup, signature, TTL), delivering, and
//! forwarding (origin cell -> bridges -> remote cells, backups after a delay; directed frames
//! towards their cell).

use super::*;

impl<A: FrameAuth> Overlay<A> {
    pub(super) fn signing_parts<'a>(
        room: &'a [u8; 32],
        header: &'a [u8; 81],
        body: &'a [u8],
    ) -> [&'a [u8]; 4] {
        [SIGNING_LABEL, room.as_slice(), header.as_slice(), body]
    }

    /// The plaintext of a payload: `[message 8, directed only][meta length 4][meta][payload]`,
    /// refused if it would not fit in a frame.
    pub(super) fn plaintext(
        &self,
        message: Option<u64>,
        meta: &[u8],
        payload: &[u8],
    ) -> Result<BytesMut, MeshError> {
        let (len, meta_len) = self.check_len(meta, payload)?;
        let mut plaintext = BytesMut::with_capacity(len);
        if let Some(message) = message {
            plaintext.put_u64(message);
        }
        plaintext.put_u32(meta_len);
        plaintext.put_slice(meta);
        plaintext.put_slice(payload);
        Ok(plaintext)
    }

    /// Whether a payload and its metadata fit in a frame: (plaintext length at most, the
    /// metadata's length as sent).
    pub(super) fn check_len(&self, meta: &[u8], payload: &[u8]) -> Result<(usize, u32), MeshError> {
        let len = 12 + meta.len() + payload.len();
        let max = self.config.max_message_len.saturating_sub(256);
        if len > max {
            return Err(MeshError::TooLarge { len, max });
        }
        let meta_len = u32::try_from(meta.len()).map_err(|_| MeshError::TooLarge { len, max })?;
        Ok((len, meta_len))
    }

    /// A new frame of this peer: numbered, sealed (for the kind's target alone, if it has
    /// one), signed, and taken as seen so its echoes are dropped.
    pub(super) fn new_frame(
        &mut self,
        kind: FrameKind,
        plaintext: &[u8],
        now: Instant,
    ) -> Result<Frame, MeshError> {
        let id = FrameId {
            kind,
            origin: self.me,
            seq: self.next_seq,
            cells: self.cells,
            origin_cell: self.my_cell,
        };
        self.next_seq += 1;
        let body = Bytes::from(
            self.auth
                .seal(kind.target().as_ref(), &id.body_context(), plaintext)
                .map_err(MeshError::Auth)?,
        );
        let header = id.signed_header();
        let signature = self
            .auth
            .sign(&Self::signing_parts(&self.room, &header, &body));
        self.seen.insert(&self.me, id.seq, now);
        Ok(Frame {
            ttl: self.config.ttl,
            hops: 1,
            id,
            signature,
            body,
        })
    }

    pub(super) fn originate_broadcast(
        &mut self,
        meta: &[u8],
        payload: &[u8],
        now: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), MeshError> {
        if self.phase != Phase::Running {
            return Err(MeshError::NotRunning);
        }
        let plaintext = self.plaintext(None, meta, payload)?;
        let frame = self.new_frame(FrameKind::Broadcast, &plaintext, now)?;
        let message = frame.encode();
        self.send_to_links(LinkKind::Members, self.me, &message, out);
        self.keep_for_repair((self.me, frame.id.seq), message, now);
        Ok(())
    }

    /// A frame from `from` (`message`: its bytes); `repaired`: sent in answer to a pull.
    pub(super) fn on_frame(
        &mut self,
        from: PeerKey,
        frame: Frame,
        message: Bytes,
        repaired: bool,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        self.metrics.frames_received += 1;
        if frame.ttl == 0 || frame.ttl > self.config.ttl {
            self.drop_frame(from, DropReason::BadTtl, out);
            return;
        }
        let origin = frame.id.origin;
        let seq = frame.id.seq;
        if origin == self.me {
            self.metrics.duplicates += 1;
            return;
        }
        let header = frame.id.signed_header();
        let (auth, room) = (&mut self.auth, &self.room);
        let genuine = || {
            auth.verify(
                &origin,
                &Self::signing_parts(room, &header, &frame.body),
                &frame.signature,
            )
            .is_ok()
        };
        match self.seen.accept(&origin, seq, now, genuine) {
            Ok(true) => {}
            Ok(false) => {
                self.drop_frame(from, DropReason::BadSignature, out);
                return;
            }
            Err(Seen::Duplicate) => {
                self.metrics.duplicates += 1;
                if self.links.get(&from).map(|link| link.role) == Some(LinkRole::Intra) {
                    self.cancel_pending(&origin, seq);
                }
                return;
            }
            Err(Seen::TooOld) => {
                self.drop_frame(from, DropReason::TooOld, out);
                return;
            }
        }
        match frame.id.kind {
            FrameKind::Broadcast => {
                if repaired {
                    self.metrics.repaired += 1;
                }
                self.deliver(&frame, repaired, from, out);
                self.forward_broadcast(from, &frame, repaired, now, out);
                self.keep_for_repair((origin, seq), message, now);
            }
            FrameKind::Direct(target) | FrameKind::Ack(target) if target == self.me => {
                self.on_frame_for_me(from, &frame, now, out);
            }
            FrameKind::Direct(target) | FrameKind::Ack(target) => {
                if frame.ttl <= 1 {
                    self.drop_frame(from, DropReason::BadTtl, out);
                    return;
                }
                if !self.route_direct(&frame.next_hop(), target, from, 1, 0, out) {
                    self.drop_frame(from, DropReason::Unroutable, out);
                }
            }
        }
    }

    /// Opens a frame's sealed body (sealed for the room, or for this peer when `direct`).
    pub(super) fn open_sealed(&mut self, frame: &Frame, direct: bool) -> Option<Bytes> {
        self.auth
            .open(
                &frame.id.origin,
                direct,
                &frame.id.body_context(),
                &frame.body,
            )
            .ok()
    }

    /// Splits `[meta length 4][meta][payload]`.
    pub(super) fn split_meta(plaintext: &Bytes) -> Option<(Bytes, Bytes)> {
        let meta_len =
            usize::try_from(u32::from_be_bytes(plaintext.get(..4)?.try_into().ok()?)).ok()?;
        let meta_end = 4usize.checked_add(meta_len)?;
        if meta_end > plaintext.len() {
            return None;
        }
        Some((plaintext.slice(4..meta_end), plaintext.slice(meta_end..)))
    }

    /// Hands a broadcast to the application.
    pub(super) fn deliver(
        &mut self,
        frame: &Frame,
        repaired: bool,
        from: PeerKey,
        out: &mut Vec<Output>,
    ) {
        let opened = self
            .open_sealed(frame, false)
            .and_then(|plaintext| Self::split_meta(&plaintext));
        match opened {
            Some((meta, payload)) => {
                self.metrics.delivered += 1;
                out.push(Output::Deliver(Delivery {
                    origin: frame.id.origin,
                    seq: frame.id.seq,
                    hops: frame.hops,
                    directed: false,
                    repaired,
                    meta,
                    payload,
                }));
            }
            None => self.drop_frame(from, DropReason::Unopenable, out),
        }
    }

    /// Forwards an accepted broadcast one step along the eager path. A repaired frame (one
    /// this peer pulled) goes on as if it had come eagerly, without a backup delay.
    pub(super) fn forward_broadcast(
        &mut self,
        from: PeerKey,
        frame: &Frame,
        repaired: bool,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if frame.ttl <= 1 {
            return;
        }
        let from_role = self
            .links
            .get(&from)
            .map_or(LinkRole::Unknown, |link| link.role);
        let mut delay_slot = None;
        let kind = if frame.id.cells != self.cells {
            // Views differ (the cell count is changing): flood once; dedup and TTL bound it.
            LinkKind::All
        } else if frame.id.origin_cell == self.my_cell {
            // From our own cell: carry it out over our bridges (and links of a role not
            // known yet, into other cells while a new view's bridges form).
            let cache = self.link_cache();
            let none = cache.outward.is_empty();
            self.link_cache = Some(cache);
            if none {
                return;
            }
            LinkKind::Outward
        } else {
            match from_role {
                LinkRole::Bridge { slot, .. } if slot > 0 && !repaired => {
                    delay_slot = Some(slot);
                    LinkKind::Intra
                }
                LinkRole::Bridge { .. } | LinkRole::Unknown => LinkKind::Intra,
                // Inside our cell already: whoever sent it covers the cell.
                LinkRole::Intra => return,
            }
        };
        // What a repair brought goes on marked as repaired.
        let message = frame.next_hop().encode_tagged(repaired);
        match delay_slot {
            Some(slot) => self.schedule_forward(frame, message, from, slot, now, out),
            None => {
                self.send_to_links(kind, from, &message, out);
            }
        }
    }

    pub(super) fn schedule_forward(
        &mut self,
        frame: &Frame,
        message: Bytes,
        exclude: PeerKey,
        slot: u8,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        // The heap also holds cancelled entries until their time: bound both.
        if self.pending.len() >= self.config.max_pending_forwards
            || self.pending_order.len() >= self.config.max_pending_forwards
        {
            // At the bound: forward now (a duplicate rather than a loss).
            self.send_to_links(LinkKind::Intra, exclude, &message, out);
            return;
        }
        // A frame is accepted once, so it is scheduled at most once.
        let due = now + self.config.backup_delay * u32::from(slot);
        let key = (frame.id.origin, frame.id.seq);
        self.pending_order.push(Reverse((due, key.0, key.1)));
        self.pending
            .insert(key, PendingForward { message, exclude });
    }

    pub(super) fn cancel_pending(&mut self, origin: &PeerKey, seq: u64) {
        self.pending.remove(&(*origin, seq));
    }

    pub(super) fn run_due_forwards(&mut self, now: Instant, out: &mut Vec<Output>) {
        while let Some(Reverse((due, origin, seq))) = self.pending_order.peek().copied() {
            if due > now {
                break;
            }
            self.pending_order.pop();
            let Some(pending) = self.pending.remove(&(origin, seq)) else {
                continue;
            };
            self.send_to_links(LinkKind::Intra, pending.exclude, &pending.message, out);
        }
    }

    /// Sends a directed frame (or an ack) one step closer to `target` over up to `paths`
    /// different next hops (the origin uses two, so one lost message or dead forwarder does
    /// not lose it; the target keeps the first copy); false if there is no way. A link to
    /// the target itself comes first; the relays after it (cell mates, or bridges towards
    /// the target's cell) are taken in key order, starting `attempt` places further on, so
    /// each resend of a payload also tries forwarders the earlier copies did not.
    pub(super) fn route_direct(
        &mut self,
        frame: &Frame,
        target: PeerKey,
        from: PeerKey,
        paths: usize,
        attempt: usize,
        out: &mut Vec<Output>,
    ) -> bool {
        let up = |links: &KeyMap<PeerKey, Link>, peer: &PeerKey| {
            *peer != from && links.get(peer).is_some_and(|link| link.up)
        };
        let mut hops: Vec<PeerKey> = Vec::with_capacity(paths);
        if up(&self.links, &target) {
            hops.push(target);
        }
        let target_cell = self.cell_of(&target);
        let mut relays: Vec<PeerKey> = if target_cell == self.my_cell {
            // Cell mates relay (cells are a full mesh).
            let cache = self.link_cache();
            let mut relays: Vec<PeerKey> = cache
                .intra
                .iter()
                .filter(|peer| **peer != target && **peer != from)
                .copied()
                .collect();
            self.link_cache = Some(cache);
            relays.sort_unstable();
            relays
        } else {
            let mut bridges: Vec<PeerKey> = self
                .links
                .iter()
                .filter(|(peer, link)| {
                    link.up
                        && **peer != from
                        && **peer != target
                        && matches!(link.role, LinkRole::Bridge { cell, .. } if cell == target_cell)
                })
                .map(|(peer, _)| *peer)
                .collect();
            bridges.sort_unstable();
            let holders = slot_holders(
                &self.members,
                self.my_cell,
                target_cell,
                self.config.bridges_per_pair,
            );
            for holder in holders {
                if holder != target && up(&self.links, &holder) && !bridges.contains(&holder) {
                    bridges.push(holder);
                }
            }
            bridges
        };
        if !relays.is_empty() {
            let turn = attempt % relays.len();
            relays.rotate_left(turn);
        }
        for peer in relays {
            if hops.len() >= paths {
                break;
            }
            hops.push(peer);
        }
        hops.truncate(paths);
        if hops.is_empty() {
            return false;
        }
        let message = frame.encode();
        for peer in hops {
            self.metrics.forwarded += 1;
            self.send(peer, message.clone(), out);
        }
        true
    }
}
