//! [`RedisLink`]: whether this process paces through Redis or alone, and when to try Redis
//! again.

use std::time::{Duration, Instant};

use crate::config::SharedFallback;

/// The first wait before trying a lost Redis again; it doubles after each failed try.
pub const PROBE_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two tries of a lost Redis.
pub const PROBE_MAX: Duration = Duration::from_secs(5);

/// A change of the link, to log, count in metrics and show in the endpoint report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// Redis cannot be reached: every shared deployment now paces on `1/N` of its quota
    /// ([`super::SharedQuota::redis_lost`]).
    Lost {
        /// What failed (redacted).
        error: String,
    },
    /// Redis answers again: back to shared pacing ([`super::SharedQuota::redis_back`]).
    Restored {
        /// How long it was away.
        after: Duration,
    },
}

/// Redis could not be reached at start and `shared.fallback` is `error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "shared quotas: cannot reach Redis at {url}: {error}; start Redis (or fix shared.redis_url), \
     or set shared.fallback: local to start with 1/shared.expected_processes of each quota"
)]
pub struct RedisUnreachable {
    /// The URL without its password.
    pub url: String,
    /// What failed (redacted).
    pub error: String,
}

/// Whether this process paces through Redis (shared) or alone (local), and when to try again.
///
/// Lost mid-run, Redis is always replaced by local pacing (no job may be lost);
/// `shared.fallback` only decides whether a process may *start* without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLink {
    lost_since: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Time spent local in the spells that ended.
    local_before: Duration,
}

impl RedisLink {
    /// The link after the first attempt to reach Redis at `now`: shared on success; on failure
    /// local with `fallback: local` (the caller warns with the returned change), or the error
    /// that stops the start with `fallback: error`.
    pub fn at_start(
        now: Instant,
        reached: Result<(), String>,
        fallback: SharedFallback,
        url: &str,
    ) -> Result<(RedisLink, Option<LinkChange>), RedisUnreachable> {
        let mut link = RedisLink {
            lost_since: None,
            retry_at: None,
            backoff: PROBE_FIRST,
            local_before: Duration::ZERO,
        };
        match (reached, fallback) {
            (Ok(()), _) => Ok((link, None)),
            (Err(error), SharedFallback::Error) => Err(RedisUnreachable {
                url: url.to_owned(),
                error: crate::secret::redact(&error).into_owned(),
            }),
            (Err(error), SharedFallback::Local) => {
                let change = link.failed(now, &error);
                Ok((link, change))
            }
        }
    }

    /// True while pacing through Redis.
    pub fn is_shared(&self) -> bool {
        self.lost_since.is_none()
    }

    /// A Redis call failed at `now` (connection lost, timeout, error reply from a server that
    /// is going away). The first failure is a [`LinkChange::Lost`]; later ones while lost push
    /// the next try back (doubling, up to [`PROBE_MAX`]).
    pub fn failed(&mut self, now: Instant, error: &str) -> Option<LinkChange> {
        if self.lost_since.is_none() {
            self.lost_since = Some(now);
            self.backoff = PROBE_FIRST;
            self.retry_at = Some(now + self.backoff);
            return Some(LinkChange::Lost {
                error: crate::secret::redact(error).into_owned(),
            });
        }
        self.backoff = (self.backoff * 2).min(PROBE_MAX);
        self.retry_at = Some(now + self.backoff);
        None
    }

    /// How long this process has paced locally (Redis away) up to `now`, over every spell.
    pub fn time_local(&self, now: Instant) -> Duration {
        let current = self
            .lost_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.local_before + current
    }

    /// When to try Redis again (`None` while shared).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// A Redis call (or a try while lost) succeeded at `now`: [`LinkChange::Restored`] when it
    /// had been lost.
    pub fn succeeded(&mut self, now: Instant) -> Option<LinkChange> {
        let since = self.lost_since.take()?;
        self.retry_at = None;
        self.backoff = PROBE_FIRST;
        let after = now.saturating_duration_since(since);
        self.local_before += after;
        Some(LinkChange::Restored { after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unreachable_at_start_is_an_error_or_a_local_start() {
        let t0 = Instant::now();
        let error = RedisLink::at_start(
            t0,
            Err("connection refused".into()),
            SharedFallback::Error,
            "redis://***@cache:6379",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "shared quotas: cannot reach Redis at redis://***@cache:6379: connection refused; \
             start Redis (or fix shared.redis_url), or set shared.fallback: local to start with \
             1/shared.expected_processes of each quota"
        );
        let (link, change) = RedisLink::at_start(
            t0,
            Err("connection refused".into()),
            SharedFallback::Local,
            "redis://cache",
        )
        .unwrap();
        assert!(!link.is_shared());
        assert_eq!(
            change,
            Some(LinkChange::Lost {
                error: "connection refused".into()
            })
        );
        assert_eq!(link.retry_at(), Some(t0 + PROBE_FIRST));
        let (link, change) =
            RedisLink::at_start(t0, Ok(()), SharedFallback::Error, "redis://cache").unwrap();
        assert!(link.is_shared());
        assert_eq!((change, link.retry_at()), (None, None));
    }

    #[test]
    fn lost_then_retried_with_a_doubling_wait_then_restored() {
        let t0 = Instant::now();
        let (mut link, _) =
            RedisLink::at_start(t0, Ok(()), SharedFallback::Error, "redis://cache").unwrap();
        assert_eq!(link.succeeded(t0), None);
        assert!(matches!(
            link.failed(t0, "broken pipe"),
            Some(LinkChange::Lost { .. })
        ));
        let mut tries = Vec::new();
        let mut now = t0;
        for _ in 0..7 {
            now = link.retry_at().unwrap();
            tries.push((now - t0).as_millis());
            assert_eq!(link.failed(now, "connection refused"), None);
        }
        assert_eq!(tries, [250, 750, 1_750, 3_750, 7_750, 12_750, 17_750]);
        assert_eq!(
            link.succeeded(now + 5 * MS),
            Some(LinkChange::Restored {
                after: Duration::from_millis(17_755)
            })
        );
        assert!(link.is_shared());
        assert_eq!(link.retry_at(), None);
        assert_eq!(link.time_local(now + 9 * MS), Duration::from_millis(17_755));
        // A later loss starts again from the first wait, and its time adds up.
        link.failed(now, "reset");
        assert_eq!(link.retry_at(), Some(now + PROBE_FIRST));
        assert_eq!(
            link.time_local(now + 245 * MS),
            Duration::from_millis(18_000)
        );
    }

    #[test]
    fn errors_are_redacted() {
        let password = crate::secret::Secret::new("s3cr3t-passw0rd");
        let mut link = RedisLink::at_start(
            Instant::now(),
            Ok(()),
            SharedFallback::Error,
            "redis://cache",
        )
        .unwrap()
        .0;
        let change = link.failed(
            Instant::now(),
            &format!("auth failed: {}", password.expose()),
        );
        assert_eq!(
            change,
            Some(LinkChange::Lost {
                error: "auth failed: [REDACTED]".into()
            })
        );
    }
}
