//! Call latency of a plugin as a lock-free histogram: one atomic counter per
//! power-of-two bucket of microseconds, so recording costs one `fetch_add`
//! and p50/p99 are read without stopping calls. Quantiles are the upper
//! bound of their bucket (within a factor of two, honest about it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets: `[0,1) µs`, `[1,2)`, `[2,4)` … up to about 2^38 µs (76 hours).
const BUCKETS: usize = 40;

/// Counts of calls per latency bucket.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Counts one call that took `took`.
    pub fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let index = (u64::BITS - us.leading_zeros()) as usize;
        self.buckets[index.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0 < q ≤ 1) in microseconds, as its bucket's upper
    /// bound; `None` before the first call.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(1u64 << i);
            }
        }
        Some(1u64 << (BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_recorded_calls() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(20)); // bucket [16, 32)
        }
        h.record(Duration::from_millis(3)); // [2048, 4096)
        h.record(Duration::from_millis(3));
        assert_eq!(h.quantile_us(0.5), Some(32));
        assert_eq!(h.quantile_us(0.99), Some(4096));
        h.record(Duration::from_secs(1_000_000));
        assert!(
            h.quantile_us(1.0).is_some(),
            "huge values land in the last bucket"
        );
    }
}
