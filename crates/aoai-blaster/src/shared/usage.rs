//! [`RedisUse`]: what sharing the quotas cost one process in Redis, as it measured it.
//!
//! A job spends time on Redis only when no lease it could be charged to was held: it then waits
//! for one ask (give back the spent lease, ask for the next). So each ask's round trip — from
//! the Dispatcher handing it to the Redis task, queueing behind other calls included, to Redis'
//! answer — is counted as the Redis time of one job, and every other job spent none on Redis.
//! That is the per-job figure [`RedisUse::per_job_quantile`] gives.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest round trip recorded (µs); longer ones count as this.
const MAX_MICROS: u64 = 60_000_000;

/// Redis calls and ask round trips of one process's shared quotas
/// ([`Blaster::redis_use`](crate::Blaster::redis_use), [`GetRedisUse`](crate::GetRedisUse)).
#[derive(Clone, Debug)]
pub struct RedisUse {
    calls: u64,
    /// Round trips of the asks answered, in µs (two significant digits: about 20 KiB).
    asks: Histogram<u64>,
    /// Of each, the script call alone (sent to Redis → reply), in µs: the rest of a round
    /// trip is this process's own queueing (behind other calls, or a busy Dispatcher thread).
    ask_calls: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // Valid bounds (1 ≤ low, high ≥ 2·low, 2 digits): cannot fail.
    Histogram::new_with_bounds(1, MAX_MICROS, 2)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(MAX_MICROS)
        .clamp(1, MAX_MICROS)
}

fn quantile(h: &Histogram<u64>, q: f64) -> Duration {
    if h.is_empty() {
        return Duration::ZERO;
    }
    Duration::from_micros(h.value_at_quantile(q.clamp(0.0, 1.0)))
}

impl Default for RedisUse {
    fn default() -> Self {
        RedisUse {
            calls: 0,
            asks: histogram(),
            ask_calls: histogram(),
        }
    }
}

impl RedisUse {
    /// Redis calls made so far: every round trip (the ping at start, renewals, carries, probes,
    /// health notes and reads).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Asks for a lease that Redis answered (a lease, or a wait).
    pub fn asks(&self) -> u64 {
        self.asks.len()
    }

    /// The `q` quantile (0 to 1) of the asks' round trips (rounded up, by at most 1 %); zero
    /// without asks.
    pub fn ask_quantile(&self, q: f64) -> Duration {
        quantile(&self.asks, q)
    }

    /// The `q` quantile (0 to 1) of the asks' script calls alone (sent → reply; rounded up by
    /// at most 1 %): what Redis and the socket took of the round trips.
    pub fn ask_call_quantile(&self, q: f64) -> Duration {
        quantile(&self.ask_calls, q)
    }

    /// The `q` quantile (0 to 1) of the time each of `jobs` jobs spent on Redis: one ask's round
    /// trip for as many jobs as there were asks, nothing for the others (they were charged to a
    /// lease already held). `jobs` below the number of asks counts as that number.
    pub fn per_job_quantile(&self, jobs: u64, q: f64) -> Duration {
        let asks = self.asks();
        let jobs = jobs.max(asks);
        if asks == 0 {
            return Duration::ZERO;
        }
        // The rank of the quantile among the jobs, 1-based; the first `jobs - asks` are zeros.
        let rank = ((q.clamp(0.0, 1.0) * jobs as f64).ceil() as u64).clamp(1, jobs);
        let zeros = jobs - asks;
        if rank <= zeros {
            return Duration::ZERO;
        }
        self.ask_quantile((rank - zeros) as f64 / asks as f64)
    }

    pub(crate) fn set_calls(&mut self, calls: u64) {
        self.calls = calls;
    }

    /// An ask answered: its round trip from the hand-over, and the script call alone.
    pub(crate) fn record_ask(&mut self, round_trip: Duration, call: Duration) {
        self.asks.saturating_record(micros(round_trip));
        self.ask_calls.saturating_record(micros(call));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(us: u64) -> Duration {
        Duration::from_micros(us)
    }

    fn with_asks(asks: &[u64]) -> RedisUse {
        let mut usage = RedisUse::default();
        for &us in asks {
            usage.record_ask(Duration::from_micros(us), Duration::from_micros(us / 2));
        }
        usage
    }

    #[test]
    fn without_asks_no_job_spent_time_on_redis() {
        let usage = RedisUse::default();
        assert_eq!(usage.asks(), 0);
        assert_eq!(usage.per_job_quantile(1_000, 0.99), Duration::ZERO);
        assert_eq!(usage.ask_quantile(0.99), Duration::ZERO);
    }

    #[test]
    fn jobs_beyond_the_asks_count_zero() {
        // 100 jobs, 2 asks: 98 jobs spent nothing, the 99th and 100th one ask each. (Below
        // 256 µs the histogram keeps every microsecond.)
        let usage = with_asks(&[150, 250]);
        assert_eq!(usage.per_job_quantile(100, 0.5), Duration::ZERO);
        assert_eq!(usage.per_job_quantile(100, 0.98), Duration::ZERO);
        assert_eq!(usage.per_job_quantile(100, 0.99), micros(150));
        assert_eq!(usage.per_job_quantile(100, 1.0), micros(250));
    }

    #[test]
    fn as_many_asks_as_jobs_is_the_asks_own_distribution() {
        let usage = with_asks(&[60, 120, 180, 240]);
        assert_eq!(usage.per_job_quantile(4, 0.5), micros(120));
        assert_eq!(usage.per_job_quantile(4, 0.75), micros(180));
        // Fewer jobs than asks (a job that waited twice): the asks alone.
        assert_eq!(usage.per_job_quantile(2, 0.75), micros(180));
        assert_eq!(usage.ask_quantile(1.0), micros(240));
        assert_eq!(usage.ask_call_quantile(1.0), micros(120));
    }

    #[test]
    fn round_trips_are_kept_to_two_significant_digits_rounded_up() {
        let usage = with_asks(&[123_456]);
        let kept = usage.ask_quantile(1.0).as_micros();
        assert!((123_456..=124_700).contains(&kept), "{kept}");
        // Past the bound: counted at the bound, not lost.
        let usage = with_asks(&[MAX_MICROS * 2]);
        assert_eq!(usage.asks(), 1);
    }
}
