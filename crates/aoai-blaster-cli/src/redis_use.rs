//! What the shared quotas cost in Redis over a run (with `shared:` only), for the summary and
//! `--summary-json`: calls per job, and the time a job spent waiting on Redis (see
//! [`RedisUse`]).

use std::time::Duration;

use aoai_blaster::shared::RedisUse;
use serde::Serialize;

/// The run's Redis figures; `redis` in `--summary-json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct RedisFigures {
    /// Redis calls (round trips) of the whole run.
    pub(crate) calls: u64,
    /// Calls per job submitted.
    pub(crate) calls_per_job: f64,
    /// Asks for a lease Redis answered.
    pub(crate) asks: u64,
    /// An ask's round trip from the Dispatcher to Redis' answer, p50 / p99 / max (µs).
    pub(crate) ask_p50_us: u64,
    pub(crate) ask_p99_us: u64,
    pub(crate) ask_max_us: u64,
    /// Of an ask, the script call alone (sent → reply), p99 (µs): the rest of the round trip
    /// is this process's own queueing.
    pub(crate) ask_call_p99_us: u64,
    /// The time a job spent waiting on Redis, p99 (µs): an ask's round trip for a job that
    /// waited for a lease, nothing for one charged to a lease already held.
    pub(crate) job_p99_us: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisFigures {
    /// The figures of `usage` over `jobs` jobs.
    pub(crate) fn of(usage: &RedisUse, jobs: u64) -> Self {
        RedisFigures {
            calls: usage.calls(),
            calls_per_job: usage.calls() as f64 / jobs.max(1) as f64,
            asks: usage.asks(),
            ask_p50_us: micros(usage.ask_quantile(0.5)),
            ask_p99_us: micros(usage.ask_quantile(0.99)),
            ask_max_us: micros(usage.ask_quantile(1.0)),
            ask_call_p99_us: micros(usage.ask_call_quantile(0.99)),
            job_p99_us: micros(usage.per_job_quantile(jobs, 0.99)),
        }
    }

    /// The summary's clauses (joined by `, `).
    pub(crate) fn clauses(&self) -> Vec<String> {
        vec![
            format!(
                "Redis (shared quotas): {} calls ({:.3} per job)",
                self.calls, self.calls_per_job
            ),
            format!("time per job p99 {} µs", self.job_p99_us),
            format!(
                "{} asks, round trip p50 {} / p99 {} / max {} µs",
                self.asks, self.ask_p50_us, self.ask_p99_us, self.ask_max_us
            ),
            format!("the Redis call alone p99 {} µs", self.ask_call_p99_us),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_asks_spent_no_time_on_redis() {
        let figures = RedisFigures::of(&RedisUse::default(), 40);
        assert_eq!(figures, RedisFigures::default());
    }

    #[test]
    fn the_line_names_every_figure() {
        let figures = RedisFigures {
            calls: 30,
            calls_per_job: 0.75,
            asks: 28,
            ask_p50_us: 120,
            ask_p99_us: 290,
            ask_max_us: 410,
            ask_call_p99_us: 200,
            job_p99_us: 280,
        };
        assert_eq!(
            figures.clauses().join(", "),
            "Redis (shared quotas): 30 calls (0.750 per job), time per job p99 280 µs, \
             28 asks, round trip p50 120 / p99 290 / max 410 µs, the Redis call alone p99 200 µs"
        );
        let json = serde_json::to_value(&figures).unwrap_or_default();
        assert_eq!(json["calls"], 30);
        assert_eq!(json["job_p99_us"], 280);
    }
}
