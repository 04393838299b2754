//! The simulator's event queue: a calendar of one-millisecond buckets over the next few
//! seconds, a small heap for the bucket being run and a heap for the far future.
//!
//! A single binary heap of all pending events (millions at 10,000 peers) cost a cache miss
//! per level on every pop: a tenth of a 10,000-peer run's time, measured. Here an event is
//! pushed onto the end of its bucket's vector and heaped only when its bucket comes up, with
//! the few hundred others of that millisecond. Events come out in exactly the order of the
//! one heap: by time, then by the order they were pushed, so a run is the same event for
//! event whichever queue plays it.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Width of a bucket, microseconds.
const BUCKET_US: u64 = 1_000;
/// Buckets in the calendar (about four seconds ahead); later events wait in `far`.
const BUCKETS: u64 = 4_096;

struct Entry<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Items by due time (microseconds), ties in push order.
pub(super) struct EventQueue<T> {
    /// Entries of bucket `cursor` and any pushed for an earlier time meanwhile.
    current: BinaryHeap<Reverse<Entry<T>>>,
    /// Bucket `b` in `(cursor, cursor + BUCKETS)` at slot `b % BUCKETS`, unordered.
    calendar: Vec<Vec<Entry<T>>>,
    in_calendar: usize,
    /// Entries due at or beyond the calendar's end when pushed.
    far: BinaryHeap<Reverse<Entry<T>>>,
    cursor: u64,
    pushed: u64,
}

impl<T> EventQueue<T> {
    pub(super) fn new() -> Self {
        Self {
            current: BinaryHeap::new(),
            calendar: (0..BUCKETS).map(|_| Vec::new()).collect(),
            in_calendar: 0,
            far: BinaryHeap::new(),
            cursor: 0,
            pushed: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.in_calendar + self.far.len()
    }

    pub(super) fn push(&mut self, at: u64, item: T) {
        self.pushed += 1;
        let entry = Entry {
            at,
            seq: self.pushed,
            item,
        };
        let bucket = at / BUCKET_US;
        if bucket <= self.cursor {
            self.current.push(Reverse(entry));
        } else if bucket < self.cursor + BUCKETS {
            if let Some(slot) = self.calendar.get_mut(slot_of(bucket)) {
                slot.push(entry);
                self.in_calendar += 1;
            }
        } else {
            self.far.push(Reverse(entry));
        }
    }

    /// The first item due at or before `until`, with its time.
    pub(super) fn pop_until(&mut self, until: u64) -> Option<(u64, T)> {
        loop {
            if let Some(Reverse(first)) = self.current.peek() {
                if first.at > until {
                    return None;
                }
                return self
                    .current
                    .pop()
                    .map(|Reverse(entry)| (entry.at, entry.item));
            }
            // The current bucket is run: on to the next that holds anything, unless it
            // starts after `until`.
            let next = if self.in_calendar > 0 {
                self.cursor + 1
            } else {
                match self.far.peek() {
                    Some(Reverse(entry)) => (entry.at / BUCKET_US).max(self.cursor + 1),
                    None => return None,
                }
            };
            if next.saturating_mul(BUCKET_US) > until {
                return None;
            }
            self.cursor = next;
            if let Some(slot) = self.calendar.get_mut(slot_of(next)) {
                // Taken, not drained: a bucket keeps no capacity from a burst (4,096 of them
                // held 1.3 GB after a 10,000-peer cold start).
                let entries = std::mem::take(slot);
                self.in_calendar -= entries.len();
                self.current.extend(entries.into_iter().map(Reverse));
            }
            while let Some(Reverse(entry)) = self.far.peek() {
                if entry.at / BUCKET_US > next {
                    break;
                }
                if let Some(entry) = self.far.pop() {
                    self.current.push(entry);
                }
            }
        }
    }
}

fn slot_of(bucket: u64) -> usize {
    usize::try_from(bucket % BUCKETS).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sim::rng::Rng;

    /// The calendar gives exactly the order of one heap of (time, push order).
    #[test]
    fn items_come_out_as_from_one_heap() {
        let mut rng = Rng::new(7);
        let mut queue = EventQueue::new();
        let mut heap = BinaryHeap::new();
        let mut now = 0u64;
        let mut pushed = 0u64;
        let mut popped = 0;
        for round in 0..2_000u64 {
            // Due now, within the millisecond, within the calendar, far beyond it.
            for _ in 0..rng.below(6) {
                let ahead = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(BUCKET_US),
                    2 => rng.below(BUCKET_US * BUCKETS),
                    _ => rng.below(BUCKET_US * BUCKETS * 3),
                };
                pushed += 1;
                queue.push(now + ahead, pushed);
                heap.push(Reverse((now + ahead, pushed)));
            }
            // Run to a time, sometimes one that falls between buckets with nothing due.
            let until = now + rng.below(if round % 50 == 0 { 20_000_000 } else { 3_000 });
            while let Some((at, item)) = queue.pop_until(until) {
                let Reverse((want_at, want_item)) = heap.pop().unwrap();
                assert_eq!((at, item), (want_at, want_item));
                assert!(at >= now);
                now = at;
                popped += 1;
            }
            assert!(heap.peek().is_none_or(|Reverse((at, _))| *at > until));
            assert_eq!(queue.len(), heap.len());
            now = until;
        }
        assert!(popped > 1_000, "{popped}");
        while let Some((at, item)) = queue.pop_until(u64::MAX) {
            assert_eq!(Reverse((at, item)), heap.pop().unwrap());
        }
        assert!(heap.is_empty());
    }
}
