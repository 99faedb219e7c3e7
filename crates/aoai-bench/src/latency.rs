//! Latency percentiles (microseconds) with `hdrhistogram`.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A latency distribution from 1 µs to 10 minutes, 3 significant digits.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty distribution.
    pub fn new() -> Self {
        // Constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2 × low, 3 digits ≤ 5).
        let histogram = Histogram::new_with_bounds(1, 600_000_000, 3)
            .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    /// Records one latency (clamped to the range).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 600_000_000);
        self.histogram.saturating_record(micros);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at quantile `q` (0–1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q)
    }

    /// Mean in microseconds.
    pub fn mean_us(&self) -> f64 {
        self.histogram.mean()
    }

    /// `p50 … µs  p99 … µs  p99.9 … µs  max … µs`.
    pub fn summary(&self) -> String {
        format!(
            "p50 {} µs  p99 {} µs  p99.9 {} µs  max {} µs",
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.quantile_us(0.999),
            self.histogram.max()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut latencies = Latencies::new();
        for micros in 1..=1000u64 {
            latencies.record(Duration::from_micros(micros));
        }
        assert_eq!(latencies.count(), 1000);
        assert_eq!(latencies.quantile_us(0.5), 500);
        assert_eq!(latencies.quantile_us(0.99), 990);
        assert!((latencies.mean_us() - 500.5).abs() < 1.0);
        latencies.record(Duration::ZERO);
        assert_eq!(latencies.quantile_us(0.0), 1);
    }
}
