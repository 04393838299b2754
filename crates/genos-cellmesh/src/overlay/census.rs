//! The lobby census of one view: per cell, the member count its leader posted and when it
//! was heard. Stale counts are pruned on every tick's resize check; the oldest entry's time
//! is kept so that check costs nothing until one may be stale (a 10,000-peer room holds a
//! hundred entries in each of its 10,000 peers). The census knows its view, so a newcomer
//! keeps the counts its lobby replay brought while it listened, for the view it then joins.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(super) struct Census {
    /// The view (epoch, cells) the counts are of.
    view: Option<(u32, u32)>,
    counts: BTreeMap<u32, (u32, Instant)>,
    /// No entry was heard before this (a lower bound: a replaced entry may have been it).
    oldest: Option<Instant>,
    /// The sum of the counts (every tick's sizing reads it).
    total: u64,
}

impl Census {
    /// Records `cell`'s count in `view`; counts of another view are dropped first.
    pub(super) fn insert(&mut self, view: (u32, u32), cell: u32, count: u32, now: Instant) {
        self.keep_only(view);
        if let Some((old, _)) = self.counts.insert(cell, (count, now)) {
            self.total -= u64::from(old);
        }
        self.total += u64::from(count);
        self.oldest = Some(self.oldest.map_or(now, |oldest| oldest.min(now)));
    }

    /// Drops every count unless they are of `view`, which the census is of from now on.
    pub(super) fn keep_only(&mut self, view: (u32, u32)) {
        if self.view != Some(view) {
            self.view = Some(view);
            self.counts.clear();
            self.oldest = None;
            self.total = 0;
        }
    }

    /// Drops the counts heard `stale` or longer ago.
    pub(super) fn prune(&mut self, now: Instant, stale: Duration) {
        if self
            .oldest
            .is_none_or(|oldest| now.saturating_duration_since(oldest) < stale)
        {
            return;
        }
        self.counts
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < stale);
        self.oldest = self.counts.values().map(|(_, at)| *at).min();
        self.total = self
            .counts
            .values()
            .map(|(count, _)| u64::from(*count))
            .sum();
    }

    pub(super) fn get(&self, cell: u32) -> Option<(u32, Instant)> {
        self.counts.get(&cell).copied()
    }

    /// How many cells were heard.
    pub(super) fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether a cell below `cell` was heard.
    pub(super) fn any_below(&self, cell: u32) -> bool {
        self.counts
            .first_key_value()
            .is_some_and(|(lowest, _)| *lowest < cell)
    }

    /// The members counted over the cells heard.
    pub(super) fn sum(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stale_counts_go_and_fresh_ones_stay() {
        let start = Instant::now();
        let stale = Duration::from_secs(10);
        let view = (1, 40);
        let mut census = Census::default();
        census.insert(view, 3, 7, start);
        census.insert(view, 1, 5, start + Duration::from_secs(4));
        // Cell 3 heard again later: its first time no longer counts.
        census.insert(view, 3, 8, start + Duration::from_secs(6));
        census.prune(start + Duration::from_secs(9), stale);
        assert_eq!(census.len(), 2);
        census.prune(start + Duration::from_secs(14), stale);
        assert_eq!(census.len(), 1, "cell 1 (heard at 4 s) is stale at 14 s");
        assert_eq!(census.get(3), Some((8, start + Duration::from_secs(6))));
        assert_eq!(census.sum(), 8);
        assert!(census.any_below(4) && !census.any_below(3));
        census.prune(start + Duration::from_secs(16), stale);
        assert_eq!(census.len(), 0);
    }

    #[test]
    fn counts_belong_to_one_view() {
        let now = Instant::now();
        let mut census = Census::default();
        census.insert((1, 40), 2, 10, now);
        census.insert((1, 40), 5, 12, now);
        census.keep_only((1, 40));
        assert_eq!(
            (census.len(), census.sum()),
            (2, 22),
            "the same view keeps its counts"
        );
        census.insert((2, 66), 0, 9, now);
        assert_eq!(
            (census.len(), census.sum()),
            (1, 9),
            "a count of a new view drops the old"
        );
        census.keep_only((3, 99));
        assert_eq!((census.len(), census.sum()), (0, 0));
    }
}
