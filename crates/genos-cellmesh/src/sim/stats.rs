//! Summaries of samples (a mean and percentiles; counts per value), shared by the
//! network, the baselines and the report.

use std::collections::BTreeMap;

/// Summary of a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Number of values.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Stats {
    /// Summarises `values`.
    pub fn of(values: impl Iterator<Item = f64>) -> Self {
        let mut sorted: Vec<f64> = values.collect();
        if sorted.is_empty() {
            return Self::default();
        }
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let index = ((sorted.len() - 1) as f64 * q).round() as usize;
            sorted.get(index).copied().unwrap_or(0.0)
        };
        Self {
            count: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: at(0.5),
            p99: at(0.99),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// Counts per integer value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: BTreeMap<u64, u64>,
}

impl Histogram {
    /// Counts `values`.
    pub fn from_values(values: impl Iterator<Item = u64>) -> Self {
        let mut histogram = Self::default();
        for value in values {
            histogram.add(value);
        }
        histogram
    }

    /// Counts one `value`.
    pub fn add(&mut self, value: u64) {
        self.add_many(value, 1);
    }

    /// Counts `value` `times` times.
    pub fn add_many(&mut self, value: u64, times: u64) {
        *self.counts.entry(value).or_default() += times;
    }

    /// (value, count) in increasing value.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().map(|(v, c)| (*v, *c))
    }

    /// Largest value counted.
    pub fn max(&self) -> Option<u64> {
        self.counts.keys().next_back().copied()
    }

    /// Summary statistics.
    pub fn stats(&self) -> Stats {
        let total: u64 = self.counts.values().sum();
        if total == 0 {
            return Stats::default();
        }
        let quantile = |q: f64| {
            let rank = ((total - 1) as f64 * q).round() as u64;
            let mut seen = 0;
            for (value, count) in &self.counts {
                seen += count;
                if seen > rank {
                    return *value as f64;
                }
            }
            0.0
        };
        let sum: f64 = self.counts.iter().map(|(v, c)| *v as f64 * *c as f64).sum();
        Stats {
            count: usize::try_from(total).unwrap_or(usize::MAX),
            mean: sum / total as f64,
            p50: quantile(0.5),
            p99: quantile(0.99),
            max: self.max().unwrap_or(0) as f64,
        }
    }

    /// Counts grouped into `buckets` equal ranges over `low..=high`: (low, high, count).
    pub(crate) fn bucketed(&self, low: u64, high: u64, buckets: u64) -> Vec<(u64, u64, u64)> {
        let width = ((high.saturating_sub(low) + 1).div_ceil(buckets.max(1))).max(1);
        let mut out: Vec<(u64, u64, u64)> = (0..)
            .map(|n| (low + n * width, low + (n + 1) * width - 1, 0))
            .take_while(|(start, _, _)| *start <= high)
            .collect();
        for (value, count) in &self.counts {
            let bucket = usize::try_from(value.saturating_sub(low) / width).unwrap_or(usize::MAX);
            if let Some(slot) = out.get_mut(bucket) {
                slot.2 += count;
            }
        }
        out
    }

    pub(crate) fn min(&self) -> Option<u64> {
        self.counts.keys().next().copied()
    }
}
