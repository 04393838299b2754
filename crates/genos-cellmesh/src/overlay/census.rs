//! The lobby census of the current view: per cell, the member count its leader posted and
//! when it was heard. Stale counts are pruned on every tick's resize check; the oldest
//! entry's time is kept so that check costs nothing until one may be stale (a
//! 10,000-peer room holds a hundred entries in each of its 10,000 peers).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(super) struct Census {
    counts: BTreeMap<u32, (u32, Instant)>,
    /// No entry was heard before this (a lower bound: a replaced entry may have been it).
    oldest: Option<Instant>,
}

impl Census {
    pub(super) fn insert(&mut self, cell: u32, count: u32, now: Instant) {
        self.counts.insert(cell, (count, now));
        self.oldest = Some(self.oldest.map_or(now, |oldest| oldest.min(now)));
    }

    pub(super) fn clear(&mut self) {
        self.counts.clear();
        self.oldest = None;
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
        self.counts.range(..cell).next().is_some()
    }

    /// The members counted over the cells heard.
    pub(super) fn sum(&self) -> u64 {
        self.counts
            .values()
            .map(|(count, _)| u64::from(*count))
            .sum()
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
        let mut census = Census::default();
        census.insert(3, 7, start);
        census.insert(1, 5, start + Duration::from_secs(4));
        // Cell 3 heard again later: its first time no longer counts.
        census.insert(3, 8, start + Duration::from_secs(6));
        census.prune(start + Duration::from_secs(9), stale);
        assert_eq!(census.len(), 2);
        census.prune(start + Duration::from_secs(14), stale);
        assert_eq!(census.len(), 1, "cell 1 (heard at 4 s) is stale at 14 s");
        assert_eq!(census.get(3), Some((8, start + Duration::from_secs(6))));
        assert_eq!(census.sum(), 8);
        assert!(census.any_below(4) && !census.any_below(3));
        census.prune(start + Duration::from_secs(16), stale);
        assert_eq!(census.len(), 0);
        census.insert(2, 1, start + Duration::from_secs(20));
        census.clear();
        assert_eq!((census.len(), census.sum()), (0, 0));
    }
}
