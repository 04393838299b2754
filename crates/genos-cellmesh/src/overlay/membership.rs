//! Who is in the room and in which cell: announces, the roster, the lobby census and the
//! one view of the cell count (epoch, cells) that cell 0's leader resizes.

use super::links::beyond_skew;
use super::*;

impl<A: FrameAuth> Overlay<A> {
    pub(super) fn set_cells(&mut self, cells: u32, now: Instant, out: &mut Vec<Output>) {
        let cells = cells.max(1);
        let new_view = cells != self.cells;
        if new_view {
            // Counts of this view heard before (a newcomer's lobby replay while it listened)
            // stay: a newcomer that leads cell 0 can resize at once, not a census round later.
            self.census.keep_only((self.epoch, cells));
            // Setups that failed under the old view (a one-cell room's dial storm, say) say
            // little about the new one, whose peers are heard afresh as its topics are joined:
            // a backoff left standing would turn that once-heard presence away until the
            // next refresh, minutes on.
            self.backoff.clear();
            self.next_retry = None;
            // A bridge overdue in the old view says nothing of the new one's pairs.
            self.unbridged_since.clear();
            self.holders.clear();
        }
        self.cells = cells;
        self.cells_since = Some(now);
        self.my_cell = cell_from_seed(self.my_seeds.cell, cells);
        self.roster.recell(cells, new_view, now);
        // A live link is first-hand news in any view.
        for (peer, link) in &self.links {
            if link.up {
                self.roster.touch(peer, now);
            }
        }
        let roles: Vec<(PeerKey, LinkRole)> = self
            .links
            .keys()
            .map(|peer| {
                let role = if self.cell_of(peer) == self.my_cell {
                    LinkRole::Intra
                } else {
                    LinkRole::Unknown
                };
                (*peer, role)
            })
            .collect();
        for (peer, role) in roles {
            if let Some(link) = self.links.get_mut(&peer) {
                link.role = role;
            }
        }
        if new_view {
            // The paths broadcasts took are changing: every link hears of what this peer
            // kept, so a peer the old paths no longer reach pulls it from here.
            let up: Vec<PeerKey> = self
                .links
                .iter()
                .filter(|(_, link)| link.up)
                .map(|(peer, _)| *peer)
                .collect();
            for peer in up {
                self.catch_up(peer, out);
            }
        }
        let home = MeshTopic::Cell {
            cells,
            cell: self.my_cell,
        };
        self.subscribe(home, out);
        out.push(Output::Announce {
            topic: home,
            cells,
            epoch: self.epoch,
            count: 0,
        });
        let first_announce = self.jittered(self.config.announce_interval);
        self.next_announce = Some(now + first_announce);
        // The first census of a view comes soon (once the roster settled), so cell 0's
        // leader can size the new view from fresh counts; then every census interval.
        let settle = self.config.bridge_settle;
        let first_census = settle + self.jittered(settle);
        self.next_census = Some(now + first_census);
        self.dirty = true;
        out.push(Output::Event(OverlayEvent::CellsChanged {
            cells,
            cell: self.my_cell,
        }));
    }

    pub(super) fn cell_of(&self, peer: &PeerKey) -> u32 {
        match self.roster.get(peer) {
            Some(known) => known.cell,
            None => assign_cell(&self.room, peer, self.cells.max(1)),
        }
    }

    /// Refreshes `peer` in the roster, or adds it; `heard` says whether this is first-hand
    /// news of it (a link) or second-hand (a retry).
    pub(super) fn learn(&mut self, peer: PeerKey, heard: Heard, now: Instant) {
        if self.refresh(&peer, heard, now) {
            return;
        }
        let seeds = peer_seeds(&self.room, &peer);
        self.insert_known(peer, seeds, heard, now);
    }

    /// Refreshes `peer` if known, or adds it if its key places it in `cell` (of the current
    /// count): what a cell topic's announce or a cell mate's roster claims is checked.
    pub(super) fn learn_if_in(&mut self, peer: PeerKey, cell: u32, heard: Heard, now: Instant) {
        if self.refresh(&peer, heard, now) {
            return;
        }
        let seeds = peer_seeds(&self.room, &peer);
        if cell_from_seed(seeds.cell, self.cells.max(1)) == cell {
            self.insert_known(peer, seeds, heard, now);
        }
    }

    /// True if `peer` is this peer or already known (then marked heard now, if this is
    /// first-hand news: second-hand news never keeps a peer in the roster).
    fn refresh(&mut self, peer: &PeerKey, heard: Heard, now: Instant) -> bool {
        if *peer == self.me {
            return true;
        }
        match heard {
            Heard::FirstHand => self.roster.touch(peer, now),
            Heard::SecondHand => self.roster.get(peer).is_some(),
        }
    }

    fn insert_known(&mut self, peer: PeerKey, seeds: PeerSeeds, heard: Heard, now: Instant) {
        if self.departed.get(&peer).is_some_and(|until| now < *until) {
            return;
        }
        if let Some(backoff) = self.backoff.get_mut(&peer) {
            if !backoff.retrying && now < backoff.until {
                if heard == Heard::FirstHand {
                    // Alive after all: retried when the backoff ends.
                    backoff.heard_at = Some(now);
                    let until = backoff.until;
                    self.retry_by(until);
                }
                return;
            }
        }
        if self.roster.len() >= self.config.max_roster {
            self.metrics.roster_full += 1;
            return;
        }
        self.roster.insert(
            peer,
            Known {
                seed: seeds.bridge,
                cell_seed: seeds.cell,
                cell: cell_from_seed(seeds.cell, self.cells.max(1)),
                last_seen: now,
                heard: heard == Heard::FirstHand,
            },
        );
        self.dirty = true;
    }

    pub(super) fn on_announce(
        &mut self,
        peer: PeerKey,
        topic: MeshTopic,
        view: (u32, u32),
        count: u32,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        self.metrics.discovery_received += 1;
        let (epoch, cells) = view;
        match topic {
            MeshTopic::Lobby => {
                if cells == 0 || cells > self.config.max_cells {
                    return;
                }
                match self.phase {
                    Phase::Bootstrapping { until } => {
                        // Hear the lobby a little longer (a replay may hold older views),
                        // then join the highest view heard, with its census so far.
                        self.heard_view = self.heard_view.max(Some(view));
                        let soon = now + self.config.bootstrap_listen;
                        if soon < until {
                            self.phase = Phase::Bootstrapping { until: soon };
                        }
                    }
                    Phase::Running if view > (self.epoch, self.cells) => {
                        // A newer view of the room (a resize, or a larger room we were split
                        // from): everyone converges on the highest.
                        self.epoch = epoch;
                        self.set_cells(cells, now, out);
                    }
                    _ => {}
                }
                // A count of the view this peer is in, or of the one it will join once it
                // has listened (kept then: see `set_cells`).
                let census_view = match self.phase {
                    Phase::Bootstrapping { .. } => self.heard_view == Some(view),
                    Phase::Running => view == (self.epoch, self.cells),
                    _ => false,
                };
                if count > 0 && census_view {
                    let cell = assign_cell(&self.room, &peer, cells);
                    self.census
                        .insert(view, cell, count.min(self.config.max_census_count), now);
                }
            }
            MeshTopic::Cell { cells: c, cell } => {
                if c != self.cells || !self.topics.contains(&topic) {
                    return;
                }
                // Its own announce: back from a goodbye, if it said one (rarely: no hash
                // of the key on every announce for nothing).
                if !self.departed.is_empty() {
                    self.departed.remove(&peer);
                }
                self.learn_if_in(peer, cell, Heard::FirstHand, now);
            }
        }
    }

    /// A peer said goodbye on its home topic: out of the roster (unless a link to it is up)
    /// and kept out of it (see `departed`).
    pub(super) fn on_peer_left(&mut self, peer: PeerKey, topic: MeshTopic, now: Instant) {
        let home = MeshTopic::Cell {
            cells: self.cells,
            cell: crate::assign_cell(&self.room, &peer, self.cells.max(1)),
        };
        if peer == self.me || topic != home {
            return;
        }
        // A live link outranks the relay: the goodbye may be stale (the peer re-joined) or
        // about to be confirmed by the link going down, which then drops it from the roster.
        if !self.links.get(&peer).is_some_and(|link| link.up) && self.roster.remove(&peer).is_some()
        {
            self.dirty = true;
        }
        if !self.departed.contains_key(&peer) && self.departed.len() >= self.config.max_roster {
            self.departed.retain(|_, until| now < *until);
            if self.departed.len() >= self.config.max_roster {
                return;
            }
        }
        self.departed.insert(peer, now + self.config.peer_timeout);
    }

    /// A link closed or failed. One that was up is taken for the peer gone (it is forgotten
    /// until it announces again). One whose setup failed is left out of the roster for a
    /// backoff (`retry_backoff`, doubling with each failure, at most `peer_timeout`)
    /// however often a relay replays its presence. The first two failures are retried when
    /// the backoff ends. After the third the peer is retried when the backoff ends only if
    /// it was heard first-hand within one and a half announce intervals before its last
    /// failure or since (a live peer announces every interval; a crashed one was heard last
    /// before it crashed), and otherwise once it is heard again after the backoff (8 s,
    /// 16 s, ...). (Waiting out `peer_timeout` after three failures left a few of 500,000
    /// cell links missing for minutes at 10,000 peers, with 2% of setups failing; waiting
    /// to hear a live peer again after its backoff left one for 40 s at 1,000.)
    ///
    /// A link this overlay no longer holds (it closed it itself) is ignored: the driver's
    /// report of that close is no news.
    pub(super) fn on_link_down(&mut self, peer: PeerKey, now: Instant) {
        let Some(link) = self.links.remove(&peer) else {
            return;
        };
        self.dirty = true;
        if link.up {
            self.roster.remove(&peer);
        } else {
            self.back_off(peer, now);
        }
    }

    /// Counts a failed link setup to `peer`, takes it out of the roster and backs it off
    /// (see `on_link_down`).
    pub(super) fn back_off(&mut self, peer: PeerKey, now: Instant) {
        self.metrics.setup_failures += 1;
        let heard = self
            .roster
            .remove(&peer)
            .filter(|known| known.heard)
            .map(|known| known.last_seen);
        if !self.backoff.contains_key(&peer) && self.backoff.len() >= self.config.max_roster {
            return;
        }
        let entry = self.backoff.entry(peer).or_insert(Backoff {
            failures: 0,
            until: now,
            retrying: false,
            failed_at: now,
            heard_at: None,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.retrying = false;
        entry.failed_at = now;
        entry.heard_at = entry.heard_at.max(heard);
        let doubling = 1u32 << (entry.failures - 1).min(16);
        let backoff = (self.config.retry_backoff * doubling).min(self.config.peer_timeout);
        entry.until = now + backoff;
        if entry.retries_unheard(self.config.announce_interval) {
            let until = entry.until;
            self.retry_by(until);
        }
    }

    /// Makes sure `retry_failed` runs by `until`.
    fn retry_by(&mut self, until: Instant) {
        self.next_retry = Some(self.next_retry.map_or(until, |at| at.min(until)));
    }

    /// Puts the peers whose backoff ended back in the roster for another try (see
    /// `on_link_down`); forgets the ones given up on whose time is over.
    pub(super) fn retry_failed(&mut self, now: Instant) {
        self.next_retry = None;
        let announce_interval = self.config.announce_interval;
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        self.backoff.retain(|peer, backoff| {
            if backoff.retrying {
                return now < backoff.until + Duration::from_secs(60);
            }
            if !backoff.retries_unheard(announce_interval) {
                // Tried again when heard again after the backoff; kept (until `expire`)
                // so the next failure doubles the wait.
                return true;
            }
            if now < backoff.until {
                next = Some(next.map_or(backoff.until, |at| at.min(backoff.until)));
                return true;
            }
            backoff.retrying = true;
            due.push(*peer);
            true
        });
        self.next_retry = next;
        for peer in due {
            self.learn(peer, Heard::SecondHand, now);
        }
        self.dirty = true;
    }

    pub(super) fn my_cell_size(&self) -> usize {
        self.members.len().max(1)
    }

    /// The members of this peer's cell heard first-hand in this view (itself included):
    /// what the census and the resize count. Second-hand members may have left (a goodbye
    /// missed); counted, they kept a shrunk room at its old cell count, or sized it back up.
    pub(super) fn counted_cell_size(&self) -> usize {
        self.members
            .iter()
            .filter(|member| member.key == self.me || self.roster.heard(&member.key))
            .count()
            .max(1)
    }

    pub(super) fn expire(&mut self, now: Instant) {
        let timeout = self.config.peer_timeout;
        self.departed.retain(|_, until| now < *until);
        // Backoffs whose time is long over (given up on, or retried without news).
        self.backoff.retain(|_, backoff| {
            now < backoff.until + timeout || (!backoff.retrying && backoff.failures < 3)
        });
        let hearsay = self.config.hearsay_timeout;
        let links = &self.links;
        let removed = self.roster.retain(|peer, known| match links.get(peer) {
            Some(link) if link.up => {
                known.last_seen = now;
                known.heard = true;
                true
            }
            // A setup under way: its outcome decides.
            Some(_) => true,
            None if known.heard => now.saturating_duration_since(known.last_seen) < timeout,
            None => now.saturating_duration_since(known.last_seen) < hearsay,
        });
        if removed > 0 {
            self.dirty = true;
        }
    }

    /// Posts this cell's size and our view on the lobby (and counts it ourselves).
    pub(super) fn post_census(&mut self, now: Instant, out: &mut Vec<Output>) {
        let count = u32::try_from(self.counted_cell_size()).unwrap_or(u32::MAX);
        self.census
            .insert((self.epoch, self.cells), self.my_cell, count, now);
        out.push(Output::Announce {
            topic: MeshTopic::Lobby,
            cells: self.cells,
            epoch: self.epoch,
            count,
        });
    }

    /// Whether this leader's last census of its cell is off by a quarter or more (two
    /// members at least) and a few settle periods old: a growing or shrinking room gets a
    /// fresh census at once rather than a census interval later (minutes, where presence
    /// is stored), and a quiet room posts none beyond the periodic one.
    pub(super) fn census_outdated(&self, now: Instant) -> bool {
        let Some((posted, at)) = self.census.get(self.my_cell) else {
            return false;
        };
        let size = u32::try_from(self.counted_cell_size()).unwrap_or(u32::MAX);
        let change = size.abs_diff(posted);
        change >= 2
            && change.saturating_mul(4) >= posted
            && now.saturating_duration_since(at) >= self.config.bridge_settle * 3
    }

    /// The room's size from the census of the current view, once 3/4 of its cells were heard.
    pub(super) fn census_estimate(&self) -> Option<usize> {
        let heard = self.census.len() as u64;
        if heard == 0 || heard * 4 < u64::from(self.cells) * 3 {
            return None;
        }
        usize::try_from(self.census_sum() * u64::from(self.cells) / heard).ok()
    }

    /// The members the census counts over the cells heard.
    fn census_sum(&self) -> u64 {
        self.census.sum()
    }

    /// Cell 0's leader alone decides resizes (one decider per view, so peers never split
    /// over noisy estimates) and announces the new view at once; everyone adopts the
    /// highest view heard on the lobby. Once a view is established (every live cell's
    /// leader has posted a census, twice over), a cell silent all that time is taken as
    /// empty: if cell 0 is, the leader of the lowest cell heard decides instead, and the
    /// estimate counts only the cells heard (a room that shrank to a few peers in a few
    /// cells must still move back to fewer cells).
    pub(super) fn resize_from_census(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(since) = self.cells_since else {
            return;
        };
        let period = self.config.census_interval;
        let stale = period.mul_f64(2.5);
        self.census.prune(now, stale);
        let established = now.saturating_duration_since(since) >= stale;
        let lowest_heard = !self.census.any_below(self.my_cell);
        if !self.is_leader || (self.my_cell != 0 && !(established && lowest_heard)) {
            return;
        }
        // A one-cell room is its leader's roster: no census needed. A room growing fast
        // outgrows its census between posts: the leader's own cell, times the cell count,
        // is an estimate of its own (noisy: it counts only beyond what hashing skew
        // explains, as for an oversized cell).
        let cells = usize::try_from(self.cells.max(1)).unwrap_or(usize::MAX);
        let counted = self.counted_cell_size();
        let own = counted.saturating_mul(cells);
        let estimate = if self.cells == 1 {
            Some(counted)
        } else {
            match self.census_estimate() {
                Some(census) if !beyond_skew(counted, census.div_ceil(cells)) => Some(census),
                Some(_) => Some(own),
                None if self.beyond_skew() => Some(own),
                None if established => usize::try_from(self.census_sum()).ok(),
                None => None,
            }
        };
        let Some(estimate) = estimate else {
            return;
        };
        let sizing = self.config.sizing;
        let target = cell_count(estimate, sizing).min(self.config.max_cells);
        // Hysteresis: move only when the current count is wrong for every room size within
        // a third of the estimate (a 10% crash must not reshuffle every cell).
        let low = cell_count(estimate.saturating_mul(3) / 4, sizing);
        let high = cell_count(estimate.saturating_mul(4) / 3, sizing);
        let wrong = self.cells < low.min(high) || self.cells > low.max(high);
        // Way off (a room forming or emptying: half as many cells again or more, or two
        // thirds): move once the view's first census is in; otherwise wait half a census
        // interval between moves. (A whole one held a room of 10,000 arriving over a
        // minute at 66 cells for 40 s after the last arrival.)
        let way_off = target.saturating_mul(2) >= self.cells.saturating_mul(3)
            || target.saturating_mul(3) <= self.cells.saturating_mul(2);
        // A one-cell room's leader counts its own roster, whole once its subscription's
        // replay is in. Its hold starts when it takes the lead, and in a room forming fast a
        // newcomer of a lower seed takes it every few seconds: at a view change's hold the
        // room grew to 4,100 peers in one cell (every announce relayed to all of them)
        // before one leader held on long enough.
        let hold = if self.cells == 1 {
            self.config.bridge_settle
        } else if way_off {
            self.config.bridge_settle * 3
        } else {
            period / 2
        };
        if wrong && now.saturating_duration_since(since) >= hold {
            self.epoch = self.epoch.saturating_add(1);
            self.set_cells(target, now, out);
            // Tell the room now (this peer may not lead cell 0 of the new view, whose leader
            // beacons from then on).
            out.push(Output::Announce {
                topic: MeshTopic::Lobby,
                cells: self.cells,
                epoch: self.epoch,
                count: 0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::time::{Duration, Instant};

    use crate::auth::SimAuth;
    use crate::{Input, MeshTopic, Output, Overlay, OverlayConfig, PeerKey};

    fn connects_to(outputs: &[Output], peer: PeerKey) -> bool {
        outputs
            .iter()
            .any(|output| matches!(output, Output::Connect(to) if *to == peer))
    }

    fn announce(peer: PeerKey) -> Input {
        Input::Announced {
            peer,
            topic: MeshTopic::Cell { cells: 1, cell: 0 },
            cells: 1,
            epoch: 0,
            count: 0,
        }
    }

    /// `me` in a one-cell room, having heard `mate` and `other` announce, linked to `mate`.
    fn one_cell(
        config: OverlayConfig,
        me: PeerKey,
        mate: PeerKey,
        other: PeerKey,
        now: Instant,
    ) -> Overlay<SimAuth> {
        let mut overlay = Overlay::new(config, [9; 32], SimAuth::new(me), 3);
        overlay.handle(
            Input::Start {
                cells_hint: Some(1),
            },
            now,
        );
        overlay.handle(announce(mate), now);
        overlay.handle(announce(other), now);
        overlay.handle(Input::LinkUp { peer: mate }, now);
        overlay
    }

    #[test]
    fn a_newcomer_joins_a_view_with_the_census_it_heard_while_listening() {
        let now = Instant::now();
        let room = [9; 32];
        let config = OverlayConfig::default();
        let mut overlay = Overlay::new(config.clone(), room, SimAuth::new([1; 32]), 3);
        overlay.handle(Input::Start { cells_hint: None }, now);
        // The lobby replay: each cell's leader of view (epoch 2, 4 cells) with its count,
        // and a leader of an older view.
        let mut leaders: Vec<(u32, PeerKey)> = Vec::new();
        for k in 2..=255u8 {
            let cell = crate::assign_cell(&room, &[k; 32], 4);
            if !leaders.iter().any(|(taken, _)| *taken == cell) {
                leaders.push((cell, [k; 32]));
            }
        }
        assert_eq!(leaders.len(), 4);
        let lobby = |peer: PeerKey, epoch: u32, cells: u32, count: u32| Input::Announced {
            peer,
            topic: MeshTopic::Lobby,
            cells,
            epoch,
            count,
        };
        for (_, leader) in &leaders {
            overlay.handle(lobby(*leader, 2, 4, 30), now);
        }
        overlay.handle(lobby([200; 32], 1, 2, 50), now);
        // Listening over, it joins the highest view heard, counts and all: a newcomer that
        // leads cell 0 can resize from them (it waited a census round before).
        overlay.handle(Input::Tick, now + config.bootstrap_wait);
        assert_eq!(overlay.cells(), 4);
        assert_eq!((overlay.census.len(), overlay.census_sum()), (4, 120));
    }

    #[test]
    fn a_peer_that_said_goodbye_stays_out_until_it_announces_again() {
        let (me, mate, gone) = ([1; 32], [2; 32], [3; 32]);
        let now = Instant::now();
        let mut overlay = one_cell(OverlayConfig::default(), me, mate, gone, now);
        assert_eq!(overlay.roster_len(), 2);
        // Leaving another topic (a cell it bridged to, its cell of an older view) is not
        // leaving the room.
        let elsewhere = MeshTopic::Cell { cells: 2, cell: 1 };
        overlay.handle(
            Input::PeerLeft {
                peer: gone,
                topic: elsewhere,
            },
            now,
        );
        assert_eq!(overlay.roster_len(), 2);
        let home = MeshTopic::Cell { cells: 1, cell: 0 };
        overlay.handle(
            Input::PeerLeft {
                peer: gone,
                topic: home,
            },
            now,
        );
        assert_eq!(overlay.roster_len(), 1);
        // A cell mate's roster still naming it (it never heard the goodbye) and a replay of
        // its old presence would bring it back; a goodbye keeps it out.
        let roster = crate::wire::encode_roster(1, 0, &[me, mate, gone]);
        let later = now + Duration::from_secs(1);
        overlay.handle(
            Input::Received {
                from: mate,
                message: roster,
            },
            later,
        );
        assert_eq!(
            overlay.roster_len(),
            1,
            "a cell mate's roster brought it back"
        );
        // Its own announce (it joined again) does.
        overlay.handle(announce(gone), later);
        assert_eq!(overlay.roster_len(), 2);
    }

    /// The members of the roster `overlay` sends `to` when `to` says hello knowing nobody.
    fn roster_sent(overlay: &mut Overlay<SimAuth>, to: PeerKey, now: Instant) -> Vec<PeerKey> {
        use crate::wire::{self, Hello, HelloRole, LinkMessage, ListLimits};
        overlay.handle(Input::LinkUp { peer: to }, now);
        let hello = wire::encode_hello(&Hello {
            role: HelloRole::Intra,
            cells: 1,
            known: 0,
        });
        let out = overlay.handle(
            Input::Received {
                from: to,
                message: hello,
            },
            now,
        );
        let limits = ListLimits {
            roster: 512,
            ids: 256,
        };
        out.into_iter()
            .find_map(|output| match output {
                Output::Send { to: peer, message } if peer == to => {
                    match wire::decode(message, limits) {
                        Ok(LinkMessage::Roster { members, .. }) => Some(members),
                        _ => None,
                    }
                }
                _ => None,
            })
            .unwrap_or_default()
    }

    fn lobby_view(from: PeerKey, epoch: u32, cells: u32) -> Input {
        Input::Announced {
            peer: from,
            topic: MeshTopic::Lobby,
            cells,
            epoch,
            count: 0,
        }
    }

    #[test]
    fn hearsay_is_never_passed_on_and_a_new_view_must_be_heard_first_hand() {
        let (me, mate, ghost, newcomer) = ([1; 32], [2; 32], [3; 32], [4; 32]);
        let (late, rumour) = ([5; 32], [6; 32]);
        // One cell whatever the count: only the views below change it.
        let config = OverlayConfig {
            sizing: crate::Sizing::Fixed(100),
            ..OverlayConfig::default()
        };
        let now = Instant::now();
        let mut overlay = one_cell(config, me, mate, ghost, now);
        // The mate's roster names a peer this one never heard: known second-hand.
        let gossip = crate::wire::encode_roster(1, 0, &[me, mate, rumour]);
        overlay.handle(
            Input::Received {
                from: mate,
                message: gossip,
            },
            now,
        );
        assert!(overlay.roster.get(&rumour).is_some());
        overlay.handle(Input::Tick, now);
        let told = roster_sent(&mut overlay, newcomer, now);
        assert!(told.contains(&ghost) && told.contains(&mate), "{told:?}");
        assert!(!told.contains(&rumour), "hearsay was passed on: {told:?}");

        // Two cells and back to one (the ghost leaves meanwhile, its goodbye unheard): all
        // that was heard in the old views is second-hand now. The mate and the newcomer
        // (linked) and `late` (announcing in the new view) count; the ghost, still known
        // (a setup to it under way), is not passed on.
        let later = now + Duration::from_secs(1);
        overlay.handle(lobby_view(mate, 1, 2), later);
        overlay.handle(lobby_view(mate, 2, 1), later);
        assert_eq!(overlay.cells(), 1);
        assert!(!overlay.roster.heard(&ghost));
        overlay.handle(announce(late), later);
        overlay.handle(Input::Tick, later + Duration::from_secs(1));
        let told = roster_sent(&mut overlay, [7; 32], later + Duration::from_secs(1));
        assert!(overlay.roster.get(&ghost).is_some());
        assert!(
            !told.contains(&ghost),
            "an old view's peer was passed on: {told:?}"
        );
        for peer in [me, mate, newcomer, late] {
            assert!(told.contains(&peer), "{peer:?} left out: {told:?}");
        }
    }

    /// An overlay in a one-cell room that heard peer `[2; 32]` announce and failed two setups
    /// to it, each retried when its backoff ended; with that peer and the second retry's time.
    fn failed_twice() -> (Overlay<SimAuth>, PeerKey, Instant) {
        let other = [2; 32];
        let mut overlay = Overlay::new(OverlayConfig::default(), [9; 32], SimAuth::new([1; 32]), 3);
        let mut now = Instant::now();
        let backoff = OverlayConfig::default().retry_backoff;
        overlay.handle(
            Input::Start {
                cells_hint: Some(1),
            },
            now,
        );
        assert!(connects_to(&overlay.handle(announce(other), now), other));
        // Two failures are retried on their own, after 2 s and 4 s.
        for wait in [backoff, backoff * 2] {
            now += Duration::from_secs(5);
            overlay.handle(Input::LinkDown { peer: other }, now);
            let before = overlay.handle(Input::Tick, now + wait / 2);
            assert!(!connects_to(&before, other), "retried before its backoff");
            now += wait;
            assert!(connects_to(&overlay.handle(Input::Tick, now), other));
        }
        (overlay, other, now)
    }

    #[test]
    fn a_peer_heard_lately_is_retried_after_each_backoff() {
        let backoff = OverlayConfig::default().retry_backoff;
        let (mut overlay, other, mut now) = failed_twice();
        // The third failure, 16 s after it was heard: left out (replays of its presence
        // ignored) for 8 s, then tried again without waiting for its next announce.
        now += Duration::from_secs(5);
        overlay.handle(Input::LinkDown { peer: other }, now);
        let replay = overlay.handle(announce(other), now + backoff);
        assert!(!connects_to(&replay, other), "a replay undid the backoff");
        let early = overlay.handle(Input::Tick, now + backoff * 3);
        assert!(!connects_to(&early, other), "retried before its backoff");
        now += backoff * 4;
        assert!(connects_to(&overlay.handle(Input::Tick, now), other));
        // A fourth failure waits twice as long.
        now += Duration::from_secs(5);
        overlay.handle(Input::LinkDown { peer: other }, now);
        let early = overlay.handle(Input::Tick, now + backoff * 6);
        assert!(
            !connects_to(&early, other),
            "the fourth backoff did not double"
        );
        let due = overlay.handle(Input::Tick, now + backoff * 8);
        assert!(connects_to(&due, other), "the fourth backoff never ended");
    }

    #[test]
    fn a_peer_unheard_for_long_is_tried_again_only_when_heard_after_its_backoff() {
        let backoff = OverlayConfig::default().retry_backoff;
        let (mut overlay, other, mut now) = failed_twice();
        // The third failure comes a minute after it was last heard (a crashed peer's
        // setups): left out for 8 s and beyond, until it is heard again; not minutes
        // later, when its presence would have expired.
        now += Duration::from_secs(60);
        overlay.handle(Input::LinkDown { peer: other }, now);
        let quiet = overlay.handle(Input::Tick, now + backoff * 5);
        assert!(
            !connects_to(&quiet, other),
            "tried again without being heard"
        );
        now += backoff * 5;
        let heard = overlay.handle(announce(other), now);
        let tick = overlay.handle(Input::Tick, now + Duration::from_secs(1));
        assert!(connects_to(&heard, other) || connects_to(&tick, other));
    }
}
