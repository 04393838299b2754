//! Which links to hold: the plan (cell mates and bridge slots), hellos and rosters on new
//! links, lingering before closing, and the cached lists the frame path reads.

use super::*;
use crate::wire::origin_tag;

impl<A: FrameAuth> Overlay<A> {
    pub(super) fn hello_for(&self, peer: &PeerKey) -> Hello {
        let role = match self.links.get(peer).map(|link| link.role) {
            Some(LinkRole::Bridge { cell, slot }) if cell > self.my_cell => HelloRole::Bridge {
                from_cell: self.my_cell,
                to_cell: cell,
                slot,
            },
            _ => HelloRole::Intra,
        };
        Hello {
            role,
            cells: self.cells,
            known: u32::try_from(self.my_cell_size()).unwrap_or(u32::MAX),
        }
    }

    pub(super) fn on_link_up(&mut self, peer: PeerKey, now: Instant, out: &mut Vec<Output>) {
        let cell_mate = self.cells > 0 && self.cell_of(&peer) == self.my_cell;
        if !self.links.contains_key(&peer) {
            if self.links.len() >= self.config.max_links {
                out.push(Output::Disconnect(peer));
                return;
            }
            let role = if cell_mate {
                LinkRole::Intra
            } else {
                LinkRole::Unknown
            };
            self.links.insert(
                peer,
                Link {
                    up: true,
                    since: now,
                    role,
                    unwanted_since: None,
                },
            );
            self.dirty = true;
        }
        if let Some(link) = self.links.get_mut(&peer) {
            link.up = true;
            link.since = now;
        }
        self.backoff.remove(&peer);
        self.departed.remove(&peer);
        if cell_mate {
            self.learn(peer, Heard::FirstHand, now);
        }
        let hello = wire::encode_hello(&self.hello_for(&peer));
        self.send(peer, hello, out);
        // A new bridge, or a cell mate linked while the view is young (the room just
        // changed shape, and what this peer kept may have gone past the other end while it
        // was linked to neither), hears of every broadcast still kept.
        let role = self.links.get(&peer).map(|link| link.role);
        let young = self.cells_since.is_some_and(|since| {
            now.saturating_duration_since(since) < self.config.connect_timeout
        });
        if matches!(role, Some(LinkRole::Bridge { .. })) || (young && role == Some(LinkRole::Intra))
        {
            self.catch_up(peer, out);
        }
    }

    pub(super) fn on_hello(&mut self, from: PeerKey, hello: Hello, out: &mut Vec<Output>) {
        let same_view = hello.cells == self.cells;
        let role = match hello.role {
            HelloRole::Intra if same_view && self.cell_of(&from) == self.my_cell => LinkRole::Intra,
            HelloRole::Bridge {
                from_cell,
                to_cell,
                slot,
            } if same_view && to_cell == self.my_cell && from_cell != self.my_cell => {
                LinkRole::Bridge {
                    cell: from_cell,
                    slot,
                }
            }
            _ => return,
        };
        if let Some(link) = self.links.get_mut(&from) {
            // Our own plan's role wins over the peer's claim for links we opened.
            if matches!(link.role, LinkRole::Unknown | LinkRole::Intra) && link.role != role {
                link.role = role;
                self.dirty = true;
                self.link_cache = None;
                if matches!(role, LinkRole::Bridge { .. }) {
                    self.catch_up(from, out);
                }
            }
        }
        if role == LinkRole::Intra
            // Clearly behind (announce replays fill small gaps): a roster costs 32 bytes per
            // member, and while a cell forms every link would otherwise carry one.
            && usize::try_from(hello.known)
                .unwrap_or(usize::MAX)
                .saturating_mul(4)
                < self.my_cell_size().saturating_mul(3)
        {
            // Only what this peer heard itself: passing on hearsay would let cell mates
            // keep each other's departed peers alive.
            let members: Vec<PeerKey> = self
                .roster
                .heard_in(self.my_cell, self.me)
                .filter(|key| *key != from)
                .take(self.config.max_roster_message)
                .collect();
            let roster = wire::encode_roster(self.cells, self.my_cell, &members);
            self.send(from, roster, out);
        }
    }

    pub(super) fn link_cache(&mut self) -> LinkCache {
        if let Some(cache) = self.link_cache.take() {
            return cache;
        }
        let mut cache = LinkCache::default();
        for (peer, link) in &self.links {
            if !link.up {
                continue;
            }
            cache.all.push(*peer);
            match link.role {
                LinkRole::Intra => cache.intra.push(*peer),
                LinkRole::Bridge { .. } => {
                    cache.bridges.push(*peer);
                    cache.outward.push(*peer);
                }
                LinkRole::Unknown => cache.outward.push(*peer),
            }
        }
        cache
    }

    /// Sends `message` on every up link of `kind` but `exclude`.
    pub(super) fn send_to_links(
        &mut self,
        kind: LinkKind,
        exclude: PeerKey,
        message: &Bytes,
        out: &mut Vec<Output>,
    ) {
        let cache = self.link_cache();
        let list = match kind {
            LinkKind::Intra => &cache.intra,
            LinkKind::Outward => &cache.outward,
            LinkKind::Members => &cache.intra,
            LinkKind::All => &cache.all,
        };
        let extra = if kind == LinkKind::Members {
            cache.outward.as_slice()
        } else {
            &[]
        };
        for peer in list.iter().chain(extra).filter(|peer| **peer != exclude) {
            self.metrics.forwarded += 1;
            self.send(*peer, message.clone(), out);
        }
        self.link_cache = Some(cache);
    }

    /// The members of `cell` this peer knows (itself not included).
    pub(super) fn known_members_of(&self, cell: u32) -> Vec<Member> {
        self.roster.members_of(cell).collect()
    }

    /// The holders of `other`'s `k` slots towards this peer's cell, worked out again only
    /// when the members of `other` changed.
    fn holders_towards_me(&mut self, other: u32, k: u8) -> Vec<PeerKey> {
        let version = self.roster.version_of(other);
        let to = self.my_cell;
        if let Some(cached) = self.holders.get(&other) {
            if (cached.version, cached.to, cached.k) == (version, to, k) {
                return cached.holders.clone();
            }
        }
        let holders = slot_holders(&self.known_members_of(other), other, to, k);
        self.holders.insert(
            other,
            CachedHolders {
                version,
                to,
                k,
                holders: holders.clone(),
            },
        );
        holders
    }

    /// A room forming: many peers arriving in one cell before cell 0's leader resizes.
    /// Its members open no new links meanwhile. In a one-cell room that is any cell over
    /// twice the size its members call for (a hundred arrivals stop at about ten links each,
    /// not a hundred, and two cores keep up with the setups). In a larger view it is a cell
    /// beyond what hashing skew explains, and only for six settle periods of the view: a
    /// census can be stale (posted while the cells still filled), a cell merely skewed (9 of
    /// 16 peers in one of 4 cells happens) gets no resize, and a cell waiting for a resize
    /// nobody makes never links up.
    pub(super) fn oversized(&self, now: Instant) -> bool {
        if self.cells <= 1 {
            return self.members.len() > 2 * self.expected_cell_size();
        }
        let young = self.cells_since.is_some_and(|since| {
            now.saturating_duration_since(since) < self.config.bridge_settle * 6
        });
        young && self.beyond_skew()
    }

    /// Whether this peer's cell is larger than hashing skew explains (see `oversized`).
    pub(super) fn beyond_skew(&self) -> bool {
        beyond_skew(self.members.len(), self.expected_cell_size())
    }

    /// The size this peer's cell should have: the census's room over the cell count once
    /// the view has one, else what sizing gives for this cell's members times the count.
    fn expected_cell_size(&self) -> usize {
        let members = self.members.len();
        let cells = usize::try_from(self.cells.max(1)).unwrap_or(usize::MAX);
        let census = (self.cells > 1).then(|| self.census_estimate()).flatten();
        let sizing = self.config.sizing;
        match (census, sizing) {
            (Some(room), _) => room.div_ceil(cells),
            (None, crate::Sizing::Fixed(size)) => usize::try_from(size).unwrap_or(usize::MAX),
            (None, _) => {
                let room = members.saturating_mul(cells);
                // A one-cell room its leader keeps as one cell (within the resize
                // hysteresis) is the size it should be, not an oversized cell.
                if cells == 1 && cell_count(room.saturating_mul(3) / 4, sizing) == 1 {
                    return room;
                }
                let cells = usize::try_from(cell_count(room, sizing).max(1)).unwrap_or(usize::MAX);
                room.div_ceil(cells)
            }
        }
    }

    pub(super) fn replan(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.dirty = false;
        self.last_replan = Some(now);
        let my_cell = self.my_cell;
        let cells = self.cells;
        let k = self.config.bridges_per_pair;
        // In key order (the roster's index), with this peer in its place; read again only
        // when the roster's version of this cell changed (most re-plans: a remote cell's
        // member, a link, a timer).
        let members_from = (self.roster.version_of(my_cell), cells, my_cell);
        if self.members_from != Some(members_from) {
            self.members_from = Some(members_from);
            let mut members = self.known_members_of(my_cell);
            let mine = members.partition_point(|member| member.key < self.me);
            members.insert(
                mine,
                Member {
                    key: self.me,
                    seed: self.my_seeds.bridge,
                },
            );
            if members != self.members {
                self.member_words = members
                    .iter()
                    .map(|member| origin_tag(&member.key))
                    .collect();
                self.members = members;
                self.slots_for = (0, 0);
            }
        }
        // Slots depend only on this cell's members and the cell count: most re-plans (a
        // remote roster changed, a link came up) leave them as they are.
        let settled = self
            .cells_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.config.bridge_settle);
        // Only a settled peer may lead: a newcomer that has not heard its cell mates yet
        // would otherwise post a census of one (or beacon) over the real leader's.
        self.is_leader = settled
            && self
                .members
                .iter()
                .min_by_key(|member| (member.seed, member.key))
                .is_some_and(|leader| leader.key == self.me);
        if settled && self.slots_for != (cells, my_cell) {
            self.slots = my_slots(&self.members, &self.me, my_cell, cells, k);
            self.slots_for = (cells, my_cell);
        }

        // The links wanted: cell mates (every member, or in an oversized cell the ones
        // linked already) and the bridge counterparts below. Cell mates are looked up in
        // the sorted members, not hashed into a map on every re-plan.
        let oversized = self.oversized(now);
        let mut bridges: Vec<(PeerKey, LinkRole)> = Vec::new();
        let mut topics: BTreeSet<MeshTopic> = BTreeSet::new();
        topics.insert(MeshTopic::Lobby);
        topics.insert(MeshTopic::Cell {
            cells,
            cell: my_cell,
        });
        // A few cells at most: a list is quicker than a set.
        let mut accepted_from: Vec<u32> = Vec::new();
        if !settled {
            // Come back when settled.
            self.dirty = true;
        }
        let slots = if settled {
            self.slots.clone()
        } else {
            Vec::new()
        };
        self.unbridged_since
            .retain(|cell, _| slots.iter().any(|(other, _)| other == cell));
        // The cells an up bridge reaches, read once (not once per slot towards a lower cell).
        let mut bridged: Option<Vec<u32>> = None;
        for (other, slot) in slots {
            if other < my_cell {
                accepted_from.push(other);
                let bridged = bridged.get_or_insert_with(|| {
                    self.links
                        .values()
                        .filter(|link| link.up)
                        .filter_map(|link| match link.role {
                            LinkRole::Bridge { cell, .. } => Some(cell),
                            _ => None,
                        })
                        .collect()
                });
                if !self.bridge_overdue(other, bridged.contains(&other), now) {
                    continue;
                }
            }
            topics.insert(MeshTopic::Cell { cells, cell: other });
            let holders = self.holders_towards_me(other, k);
            let counterpart = holders
                .get(usize::from(slot))
                .or_else(|| holders.last())
                .copied();
            // A counterpart is a member of `other` in the roster, never a cell mate.
            if let Some(peer) = counterpart {
                if !bridges.iter().any(|(wanted, _)| *wanted == peer) {
                    bridges.push((peer, LinkRole::Bridge { cell: other, slot }));
                }
            }
        }
        // Topics linger like links: slots settle while a cell fills up, and every new
        // subscription costs a replay of the topic's recent announces.
        for topic in self.topics.clone() {
            if topics.contains(&topic) {
                self.unwanted_topics.remove(&topic);
                continue;
            }
            let stale_view = matches!(topic, MeshTopic::Cell { cells: c, .. } if c != cells);
            let since = *self.unwanted_topics.entry(topic).or_insert(now);
            if stale_view || now.saturating_duration_since(since) >= self.config.linger {
                self.unwanted_topics.remove(&topic);
                self.topics.remove(&topic);
                out.push(Output::Unsubscribe(topic));
            } else {
                // Keep re-planning until it is dropped.
                self.dirty = true;
            }
        }
        for topic in topics {
            if !self.topics.contains(&topic) {
                self.subscribe(topic, out);
                if let MeshTopic::Cell { cell, .. } = topic {
                    if cell == my_cell {
                        out.push(Output::Announce {
                            topic,
                            cells,
                            epoch: self.epoch,
                            count: 0,
                        });
                    }
                }
            }
        }
        let mut hellos = Vec::new();
        let my_slots = &self.slots;
        let members = &self.members;
        let words = &self.member_words;
        let roster = &self.roster;
        let me = self.me;
        let wanted = |peer: &PeerKey| -> Option<LinkRole> {
            let cell_mate = if oversized {
                roster.get(peer).is_some_and(|known| known.cell == my_cell)
            } else {
                *peer != me && is_member(members, words, peer)
            };
            if cell_mate {
                return Some(LinkRole::Intra);
            }
            bridges
                .iter()
                .find(|(wanted, _)| wanted == peer)
                .map(|(_, role)| *role)
        };
        let linger = self.config.linger;
        let mut close_due = self.close_due;
        for (peer, link) in &mut self.links {
            // Bridges the other cell's holders dialled, and one dialled for a slot this peer
            // holds by a holder whose own dial went nowhere (`bridge_overdue`).
            let keep_inbound = matches!(link.role, LinkRole::Bridge { cell, slot }
                if accepted_from.contains(&cell) || my_slots.contains(&(cell, slot)));
            match wanted(peer) {
                Some(role) => {
                    link.unwanted_since = None;
                    if let LinkRole::Bridge { .. } = role {
                        if link.role != role {
                            link.role = role;
                            if link.up {
                                hellos.push(*peer);
                            }
                        }
                    } else if link.role == LinkRole::Unknown {
                        link.role = role;
                    }
                }
                None if keep_inbound && link.up => link.unwanted_since = None,
                None => {
                    let since = *link.unwanted_since.get_or_insert(now);
                    close_due =
                        Some(close_due.map_or(since + linger, |due| due.min(since + linger)));
                }
            }
        }
        self.close_due = close_due;
        for peer in hellos {
            let hello = wire::encode_hello(&self.hello_for(&peer));
            self.send(peer, hello, out);
            self.catch_up(peer, out);
        }
        // An oversized cell's wanted cell mates are linked already.
        let mates = self
            .members
            .iter()
            .filter(|member| !oversized && member.key != me)
            .map(|member| (member.key, LinkRole::Intra));
        let mut to_connect: Vec<(PeerKey, LinkRole)> = mates
            .chain(bridges)
            .filter(|(peer, _)| !self.links.contains_key(peer))
            .collect();
        // Each peer dials in its own order (keys by their distance from its own): in key
        // order every newcomer's first dials, which go through the relay, went to the same
        // few cell mates, whose relay budget then answered all of them.
        to_connect.sort_by_key(|(peer, _)| xor_distance(&me, peer));
        for (peer, role) in to_connect {
            if self.links.len() >= self.config.max_links {
                break;
            }
            let due = now + self.config.connect_timeout;
            self.close_due = Some(self.close_due.map_or(due, |at| at.min(due)));
            self.links.insert(
                peer,
                Link {
                    up: false,
                    since: now,
                    role,
                    unwanted_since: None,
                },
            );
            out.push(Output::Connect(peer));
        }
    }

    /// Whether this peer, holding a slot towards the lower cell `other` (whose holder
    /// dials), has waited `connect_timeout` with no bridge to that cell up: then it dials
    /// its counterpart itself. The lower holder may be dialling a peer that crashed (its
    /// stored presence stands at the relay for minutes) while this peer, the one live
    /// member of its cell, is never dialled; it keeps re-planning until then.
    fn bridge_overdue(&mut self, other: u32, bridged: bool, now: Instant) -> bool {
        if bridged {
            self.unbridged_since.remove(&other);
            return false;
        }
        let since = *self.unbridged_since.entry(other).or_insert(now);
        if now.saturating_duration_since(since) >= self.config.connect_timeout {
            return true;
        }
        self.dirty = true;
        false
    }

    /// When `link` is due to be closed if nothing changes: lingered long enough unwanted,
    /// or a setup that never finished.
    fn close_due_of(&self, link: &Link) -> Option<Instant> {
        let unwanted = link.unwanted_since.map(|since| since + self.config.linger);
        let stuck = (!link.up).then(|| link.since + self.config.connect_timeout);
        unwanted.into_iter().chain(stuck).min()
    }

    /// Closes the links due (see `close_due_of`). Every tick asks, and in a settled room
    /// none is: `close_due` (the earliest due time, lowered wherever a link becomes
    /// unwanted or a setup starts) spares a pass over a hundred links each time.
    pub(super) fn close_unwanted(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.close_due.is_none_or(|due| now < due) {
            debug_assert!(
                self.links
                    .values()
                    .all(|link| self.close_due_of(link).is_none_or(|due| now < due)),
                "a link due to close was missed"
            );
            return;
        }
        let mut closing = Vec::new();
        let mut next: Option<Instant> = None;
        for (peer, link) in &self.links {
            let Some(due) = self.close_due_of(link) else {
                continue;
            };
            if now >= due {
                let stuck = !link.up && now >= link.since + self.config.connect_timeout;
                closing.push((*peer, stuck));
            } else {
                next = Some(next.map_or(due, |at| at.min(due)));
            }
        }
        self.close_due = next;
        for (peer, stuck) in closing {
            self.links.remove(&peer);
            if stuck {
                // A setup that never finished (the other end, which was to dial, crashed)
                // fails like one the driver reports: backed off, so a relay replaying the
                // crashed peer's stored presence does not put it back in every plan.
                self.back_off(peer, now);
            }
            self.dirty = true;
            out.push(Output::Disconnect(peer));
        }
    }
}

/// Whether `peer` is among `members` (sorted by key; `words` their [`origin_tag`]s, the
/// keys' first 8 bytes, ordered as the keys are): a
/// re-plan asks this for every link, and a search over the words stays in a few cache
/// lines where one over the members reads a 40-byte entry per step.
fn is_member(members: &[Member], words: &[u64], peer: &PeerKey) -> bool {
    let word = origin_tag(peer);
    let from = words.partition_point(|w| *w < word);
    words
        .get(from..)
        .unwrap_or(&[])
        .iter()
        .take_while(|w| **w == word)
        .zip(members.get(from..).unwrap_or(&[]))
        .any(|(_, member)| member.key == *peer)
}

/// `a` XOR `b`: ordered, the keys nearest `a` first, a different order for every `a`.
fn xor_distance(a: &PeerKey, b: &PeerKey) -> PeerKey {
    let mut distance = [0; 32];
    for (out, (x, y)) in distance.iter_mut().zip(a.iter().zip(b)) {
        *out = x ^ y;
    }
    distance
}

/// Whether a cell of `members` is more than hashing skew explains around `expected`: over
/// twice it plus four standard deviations (a cell's size is about binomial, spread
/// sqrt(expected)).
pub(super) fn beyond_skew(members: usize, expected: usize) -> bool {
    let expected = expected as f64;
    members as f64 > 2.0 * expected + 4.0 * expected.sqrt()
}

#[cfg(test)]
mod tests {
    use super::{Member, beyond_skew, is_member};
    use crate::wire::origin_tag;

    #[test]
    fn members_are_found_by_word_then_whole_key() {
        // Keys sharing their first word: the rest tells them apart.
        let mut keys: Vec<[u8; 32]> = (0..40u8)
            .map(|n| {
                let mut key = [0u8; 32];
                key[0] = n / 4;
                key[31] = n;
                key
            })
            .collect();
        keys.sort();
        let members: Vec<Member> = keys
            .iter()
            .filter(|key| key[31] % 3 != 0)
            .map(|key| Member { key: *key, seed: 0 })
            .collect();
        let words: Vec<u64> = members
            .iter()
            .map(|member| origin_tag(&member.key))
            .collect();
        for key in &keys {
            assert_eq!(
                is_member(&members, &words, key),
                key[31] % 3 != 0,
                "{key:?}"
            );
        }
        assert!(!is_member(&members, &words, &[255; 32]));
        assert!(!is_member(&[], &[], &keys[0]));
    }

    #[test]
    fn skew_is_told_from_a_room_forming() {
        // 9 of 16 peers hashed into one of 4 cells: skew, the cell must link up.
        assert!(!beyond_skew(9, 4));
        // 17 around 10 (100 peers in 6 cells): skew.
        assert!(!beyond_skew(17, 10));
        // 100 arrivals in a one-cell room sized for 10: forming, wait for the resize.
        assert!(beyond_skew(100, 10));
        assert!(beyond_skew(40, 10));
    }
}
