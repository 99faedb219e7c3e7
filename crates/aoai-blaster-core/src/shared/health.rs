//! Shared health: what one process learns about a deployment that every other process must
//! know within a second (a 429's wait, a disable no wait cures, a recovery), as Redis keys
//! with expiry.

use std::time::{Duration, Instant};

use crate::health::{CoolingCause, DisableCause, HealthChange, HealthState};

/// How often a process reads the shared health of its deployments (one round trip for all of
/// them): a note written by another process reaches it within this plus a round trip, well
/// within a second.
pub const HEALTH_POLL: Duration = Duration::from_millis(500);

/// How long a shared disable lasts when the endpoint's own has no end (`reenable_after:
/// never`): a key must not outlive a fixed configuration forever.
pub const DISABLE_TTL_MAX: Duration = Duration::from_secs(3600);

/// What one process writes for the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthNote {
    /// Azure asked for a wait (a 429's Retry-After): nobody sends before it is over. The
    /// cooling key expires with it; a longer wait already written is kept.
    Cooling {
        /// How long.
        wait: Duration,
    },
    /// The deployment refused us for a reason no wait cures (credentials, deployment not
    /// found): nobody sends until `ttl` has passed or a recovery is written.
    Disabled {
        /// Why (redacted).
        reason: String,
        /// How long the key lives.
        ttl: Duration,
    },
    /// A probe succeeded: the disable is lifted for everyone.
    Recovered,
}

impl HealthNote {
    /// The note a local health change at `now` makes, if the others must know of it: a 429
    /// cooldown (or the disable of a Retry-After beyond `retry_after_cap`), a
    /// [`DisableCause::Rejected`] disable, a recovery. Backoffs after transient failures stay
    /// local: they may be this process's network, not the deployment.
    pub fn of_change(now: Instant, change: &HealthChange) -> Option<HealthNote> {
        if change.is_recovery() {
            return Some(HealthNote::Recovered);
        }
        let left = |until: Instant| until.saturating_duration_since(now);
        match &change.to {
            HealthState::Cooling {
                until,
                cause: CoolingCause::RateLimited,
            } => Some(HealthNote::Cooling { wait: left(*until) }),
            HealthState::Disabled {
                until: Some(until),
                cause: DisableCause::RateLimited,
                ..
            } => Some(HealthNote::Cooling { wait: left(*until) }),
            HealthState::Disabled {
                reason,
                until,
                cause: DisableCause::Rejected,
            } => Some(HealthNote::Disabled {
                reason: crate::secret::redact(reason).into_owned(),
                ttl: until.map_or(DISABLE_TTL_MAX, left).min(DISABLE_TTL_MAX),
            }),
            _ => None,
        }
    }
}

/// A deployment's shared health as read from Redis: what the keys say and for how much longer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedHealth {
    /// Time left on the cooling key.
    pub cooling_for: Option<Duration>,
    /// The disable's reason and the time left on its key.
    pub disabled: Option<(String, Duration)>,
}

impl SharedHealth {
    /// The state this process should mirror at `now` (read at `now`), if any: disabled (with
    /// the other process's reason) before cooling.
    pub fn mirror(&self, now: Instant) -> Option<HealthState> {
        if let Some((reason, left)) = &self.disabled {
            return Some(HealthState::Disabled {
                reason: format!("disabled by another process: {reason}"),
                until: Some(now + *left),
                cause: DisableCause::Rejected,
            });
        }
        self.cooling_for.map(|wait| HealthState::Cooling {
            until: now + wait,
            cause: CoolingCause::RateLimited,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn change(to: HealthState) -> HealthChange {
        HealthChange {
            from: HealthState::Healthy,
            to,
        }
    }

    #[test]
    fn rate_limits_rejections_and_recoveries_are_shared_backoffs_are_not() {
        let t0 = Instant::now();
        let cooling = change(HealthState::Cooling {
            until: t0 + 7 * S,
            cause: CoolingCause::RateLimited,
        });
        assert_eq!(
            HealthNote::of_change(t0, &cooling),
            Some(HealthNote::Cooling { wait: 7 * S })
        );
        let long_429 = change(HealthState::Disabled {
            reason: "rate limited for 1h".into(),
            until: Some(t0 + 3600 * S),
            cause: DisableCause::RateLimited,
        });
        assert_eq!(
            HealthNote::of_change(t0, &long_429),
            Some(HealthNote::Cooling { wait: 3600 * S })
        );
        let key = crate::secret::Secret::new("0123456789abcdef0123");
        let rejected = change(HealthState::Disabled {
            reason: format!("401 for key {}", key.expose()),
            until: None,
            cause: DisableCause::Rejected,
        });
        assert_eq!(
            HealthNote::of_change(t0, &rejected),
            Some(HealthNote::Disabled {
                reason: "401 for key [REDACTED]".into(),
                ttl: DISABLE_TTL_MAX
            })
        );
        let backoff = change(HealthState::Cooling {
            until: t0 + S,
            cause: CoolingCause::Backoff { streak: 2 },
        });
        assert_eq!(HealthNote::of_change(t0, &backoff), None);
        let failures = change(HealthState::Disabled {
            reason: "5 failures".into(),
            until: Some(t0 + 30 * S),
            cause: DisableCause::Failures,
        });
        assert_eq!(HealthNote::of_change(t0, &failures), None);
        let recovery = HealthChange {
            from: HealthState::Probing,
            to: HealthState::Healthy,
        };
        assert_eq!(
            HealthNote::of_change(t0, &recovery),
            Some(HealthNote::Recovered)
        );
    }

    #[test]
    fn what_redis_says_is_mirrored_disable_first() {
        let t0 = Instant::now();
        assert_eq!(SharedHealth::default().mirror(t0), None);
        let cooling = SharedHealth {
            cooling_for: Some(3 * S),
            disabled: None,
        };
        assert_eq!(
            cooling.mirror(t0),
            Some(HealthState::Cooling {
                until: t0 + 3 * S,
                cause: CoolingCause::RateLimited
            })
        );
        let both = SharedHealth {
            cooling_for: Some(3 * S),
            disabled: Some(("404 deployment not found".into(), 20 * S)),
        };
        assert_eq!(
            both.mirror(t0),
            Some(HealthState::Disabled {
                reason: "disabled by another process: 404 deployment not found".into(),
                until: Some(t0 + 20 * S),
                cause: DisableCause::Rejected,
            })
        );
    }
}
