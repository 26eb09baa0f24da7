//! Latency histogram in microseconds: log-linear buckets (exact below 128 µs,
//! then 64 sub-buckets per power of two, ≤1.6% error), lock-free recording
//! from any task, and a sparse serialized form that merges across processes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

const LINEAR: u64 = 128;
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above the linear part (up to ~2^40 µs, 12 days).
const OCTAVES: usize = 34;
const BUCKETS: usize = LINEAR as usize + OCTAVES * SUB as usize;

fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let octave = 63 - value.leading_zeros(); // >= 7
    let shift = octave - SUB_BITS;
    let sub = (value >> shift) - SUB; // 0..SUB
    let index = LINEAR as usize + (octave as usize - 7) * SUB as usize + sub as usize;
    index.min(BUCKETS - 1)
}

/// The smallest value that falls in `bucket` (what percentiles report).
fn bucket_floor(bucket: usize) -> u64 {
    if bucket < LINEAR as usize {
        return bucket as u64;
    }
    let above = bucket - LINEAR as usize;
    let octave = (above / SUB as usize) as u32 + 7;
    let sub = (above % SUB as usize) as u64;
    (SUB + sub) << (octave - SUB_BITS)
}

/// A histogram shared by every connection task of a process.
pub struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    pub fn record(&self, micros: u64) {
        self.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Histogram {
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then_some((i as u32, n))
            })
            .collect();
        Histogram {
            buckets,
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// Sparse, serializable histogram: `(bucket, count)` pairs sorted by bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Histogram {
    pub buckets: Vec<(u32, u64)>,
    pub max: u64,
}

/// Percentiles reported for a latency distribution, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Histogram {
    pub fn merge(&mut self, other: &Histogram) {
        let mut merged = std::collections::BTreeMap::new();
        for &(b, n) in self.buckets.iter().chain(other.buckets.iter()) {
            *merged.entry(b).or_insert(0) += n;
        }
        self.buckets = merged.into_iter().collect();
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|&(_, n)| n).sum()
    }

    /// The value below which `q` (0..=1) of the samples fall.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for &(b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return bucket_floor(b as usize).min(self.max);
            }
        }
        self.max
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            p50_us: self.quantile(0.50),
            p99_us: self.quantile(0.99),
            p999_us: self.quantile(0.999),
            max_us: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [0, 1, 127, 128, 129, 200, 1_000, 4_999, 65_536, 10_000_000] {
            let b = bucket_of(v);
            assert!(b >= last, "bucket order at {v}");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= v && v - floor <= v / 60 + 1, "{v} -> {floor}");
        }
    }

    #[test]
    fn percentiles_merge_across_processes() {
        let a = AtomicHistogram::default();
        let b = AtomicHistogram::default();
        for v in 1..=500 {
            a.record(v);
        }
        for v in 501..=1000 {
            b.record(v);
        }
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        let p = merged.percentiles();
        assert_eq!(p.count, 1000);
        assert!((490..=500).contains(&p.p50_us), "{p:?}");
        assert!((970..=990).contains(&p.p99_us), "{p:?}");
        assert_eq!(p.max_us, 1000);
    }
}
