//! When a refused client should come back: the earliest moment room will exist, from what the
//! scheduler knows (cooldowns, quota windows, in-flight room) and the queue ahead.
//!
//! OpenAI SDKs honour `retry-after-ms` / `retry-after` on a 429 (up to a minute), so a good
//! value spares the client blind exponential backoff and the gateway a storm of early retries.

use std::time::{Duration, SystemTime};

/// The shortest wait the gateway names: shorter ones only bring the client back to a queue that
/// has not moved.
pub const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);

/// When one deployment that may serve the request could take a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// It has room now.
    Now,
    /// Not before this instant (cooldown end, quota window, a timed disable).
    At(SystemTime),
    /// Not without outside help (disabled until someone fixes it).
    Never,
}

/// The queue ahead of a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Jobs held (queued and in flight).
    pub held: usize,
    /// Jobs in flight at once (`num_workers`).
    pub workers: usize,
    /// How long an attempt takes, on average (none measured yet: `None`).
    pub mean_latency: Option<Duration>,
}

impl Backlog {
    /// How long until the jobs held now are done: `held / workers` rounds of `mean_latency`.
    fn drained_in(&self) -> Duration {
        let Some(latency) = self.mean_latency else {
            return Duration::ZERO;
        };
        let rounds = self.held.div_ceil(self.workers.max(1));
        latency.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
    }
}

/// How long a refused client should wait: until the first deployment that may serve it can
/// (`ready`), and, when the queue was full (`backlog`), until the jobs ahead are done; at least
/// [`MIN_RETRY_AFTER`]. `None` when no deployment will ever be ready.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use aoai_blaster_core::gateway::{Backlog, Readiness, retry_after};
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
/// let cooling = Readiness::At(now + Duration::from_millis(2_500));
/// let quota = Readiness::At(now + Duration::from_secs(9));
/// assert_eq!(retry_after(now, [cooling, quota], None), Some(Duration::from_millis(2_500)));
/// let queue = Backlog { held: 20, workers: 4, mean_latency: Some(Duration::from_millis(800)) };
/// assert_eq!(retry_after(now, [Readiness::Now], Some(queue)), Some(Duration::from_secs(4)));
/// assert_eq!(retry_after(now, [Readiness::Never], None), None);
/// ```
pub fn retry_after(
    now: SystemTime,
    ready: impl IntoIterator<Item = Readiness>,
    backlog: Option<Backlog>,
) -> Option<Duration> {
    let earliest = ready
        .into_iter()
        .filter_map(|readiness| match readiness {
            Readiness::Now => Some(Duration::ZERO),
            Readiness::At(at) => Some(at.duration_since(now).unwrap_or(Duration::ZERO)),
            Readiness::Never => None,
        })
        .min()?;
    let queue = backlog.map_or(Duration::ZERO, |b| b.drained_in());
    Some(earliest.max(queue).max(MIN_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_the_later_of_the_first_ready_deployment_and_the_queue() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(50);
        let at = |ms| Readiness::At(now + Duration::from_millis(ms));
        let queue = |held| Backlog {
            held,
            workers: 2,
            mean_latency: Some(Duration::from_millis(300)),
        };
        assert_eq!(
            retry_after(now, [at(4_000), Readiness::Never, at(700)], None),
            Some(Duration::from_millis(700))
        );
        assert_eq!(
            retry_after(now, [at(700)], Some(queue(5))),
            Some(Duration::from_millis(900))
        );
        assert_eq!(
            retry_after(now, [at(700)], Some(queue(2))),
            Some(Duration::from_millis(700))
        );
        // Past instants and an unmeasured latency: the floor.
        let past = Readiness::At(now - Duration::from_secs(1));
        let unmeasured = Backlog {
            mean_latency: None,
            ..queue(9)
        };
        assert_eq!(
            retry_after(now, [past], Some(unmeasured)),
            Some(MIN_RETRY_AFTER)
        );
        assert_eq!(retry_after(now, [], None), None);
    }
}
