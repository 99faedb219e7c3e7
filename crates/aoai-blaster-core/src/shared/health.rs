//! Shared health: what one process learns about a deployment that every other process must
//! know within a second (a 429's wait, a disable no wait cures, a recovery), as Redis keys
//! with expiry.

use std::time::{Duration, Instant};

use crate::health::{Availability, CoolingCause, DisableCause, HealthChange, HealthState};

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

/// How long the mark a recovery leaves lives: several [`HEALTH_POLL`]s and a slow call, so
/// that every process polling sees it at least once.
pub const RECOVERED_TTL: Duration = Duration::from_secs(5);

/// A shared wait that ends within this of the local one is the same wait: the key's expiry and
/// the local instant differ by a round trip, and mirroring that difference would only churn.
/// Azure names its waits in whole seconds, so nothing is lost.
pub const MIRROR_SLACK: Duration = Duration::from_millis(100);

/// A deployment's shared health as read from Redis: what the keys say and for how much longer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedHealth {
    /// Time left on the cooling key.
    pub cooling_for: Option<Duration>,
    /// The disable's reason and the time left on its key.
    pub disabled: Option<(String, Duration)>,
    /// A process's probe succeeded within the last [`RECOVERED_TTL`].
    pub recovered: bool,
}

/// What another process's note changes in this process's health of a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthMirror {
    /// Cool until `until` (another process met a 429 with this wait).
    Cooling {
        /// When the shared wait ends, on this process's clock.
        until: Instant,
    },
    /// Take no jobs until `until`: another process was refused for a reason no wait cures.
    Disabled {
        /// The other process's reason, saying so.
        reason: String,
        /// When the shared key expires, on this process's clock.
        until: Instant,
    },
    /// Another process's probe succeeded: a rejection is lifted.
    Recovered,
}

impl HealthMirror {
    /// Whether mirroring this changes an endpoint in `state` at `now`. The rules:
    /// - a cooldown only lengthens a wait (by more than [`MIRROR_SLACK`]), and a disable stays
    ///   in force (as for a 429 met locally);
    /// - a disable is taken only by an endpoint that takes jobs (healthy or cooling): one that
    ///   is disabled or probing keeps its own schedule, so the first process whose probe
    ///   succeeds lifts it for everyone, instead of all waiting for the longest disable;
    /// - a recovery lifts only a rejection (a disable for failures may be this process's own
    ///   network, and its probe will tell).
    pub fn changes(&self, state: &HealthState, now: Instant) -> bool {
        match self {
            HealthMirror::Cooling { until } => match state.availability(now) {
                Availability::Now => *until > now + MIRROR_SLACK,
                Availability::At(local) => {
                    state.disable_cause().is_none() && *until > local + MIRROR_SLACK
                }
                Availability::ProbeOnly | Availability::Never => false,
            },
            HealthMirror::Disabled { .. } => {
                matches!(state, HealthState::Healthy | HealthState::Cooling { .. })
            }
            HealthMirror::Recovered => state.disable_cause() == Some(DisableCause::Rejected),
        }
    }
}

impl SharedHealth {
    /// What this process, whose endpoint is in `local` state, should mirror at `now` (read at
    /// `now`), if anything: a disable before a recovery before a cooldown.
    pub fn mirror(&self, now: Instant, local: &HealthState) -> Option<HealthMirror> {
        let mirror = if let Some((reason, left)) = &self.disabled {
            HealthMirror::Disabled {
                reason: format!("disabled by another process: {reason}"),
                until: now + *left,
            }
        } else if self.recovered && local.disable_cause() == Some(DisableCause::Rejected) {
            HealthMirror::Recovered
        } else {
            HealthMirror::Cooling {
                until: now + self.cooling_for?,
            }
        };
        mirror.changes(local, now).then_some(mirror)
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
    fn what_redis_says_is_mirrored_disable_first_and_only_when_it_changes_something() {
        let t0 = Instant::now();
        let healthy = HealthState::Healthy;
        assert_eq!(SharedHealth::default().mirror(t0, &healthy), None);
        let cooling = SharedHealth {
            cooling_for: Some(3 * S),
            ..SharedHealth::default()
        };
        let mirrored = HealthMirror::Cooling { until: t0 + 3 * S };
        assert_eq!(cooling.mirror(t0, &healthy), Some(mirrored.clone()));
        // Our own cooldown, read back a round trip later: the same wait, nothing to do.
        let own = HealthState::Cooling {
            until: t0 + 3 * S - MIRROR_SLACK,
            cause: CoolingCause::RateLimited,
        };
        assert_eq!(cooling.mirror(t0, &own), None);
        // A shorter local wait (a backoff) is lengthened.
        let backoff = HealthState::Cooling {
            until: t0 + S,
            cause: CoolingCause::Backoff { streak: 1 },
        };
        assert_eq!(cooling.mirror(t0, &backoff), Some(mirrored));
        // A key about to expire is not worth a message.
        let ending = SharedHealth {
            cooling_for: Some(MIRROR_SLACK),
            ..SharedHealth::default()
        };
        assert_eq!(ending.mirror(t0, &healthy), None);
        let rejected = HealthState::Disabled {
            reason: "401".into(),
            until: Some(t0 + 30 * S),
            cause: DisableCause::Rejected,
        };
        assert_eq!(cooling.mirror(t0, &rejected), None);

        let both = SharedHealth {
            cooling_for: Some(3 * S),
            disabled: Some(("404 deployment not found".into(), 20 * S)),
            recovered: true,
        };
        let disabled = HealthMirror::Disabled {
            reason: "disabled by another process: 404 deployment not found".into(),
            until: t0 + 20 * S,
        };
        assert_eq!(both.mirror(t0, &healthy), Some(disabled.clone()));
        assert_eq!(both.mirror(t0, &own), Some(disabled));
        // Disabled or probing on its own evidence: keeps its own schedule.
        assert_eq!(both.mirror(t0, &rejected), None);
        assert_eq!(both.mirror(t0, &HealthState::Probing), None);
    }

    #[test]
    fn a_recovery_lifts_rejections_only() {
        let t0 = Instant::now();
        let recovered = SharedHealth {
            recovered: true,
            ..SharedHealth::default()
        };
        let rejected = HealthState::Disabled {
            reason: "disabled by another process: 401".into(),
            until: Some(t0 + 30 * S),
            cause: DisableCause::Rejected,
        };
        assert_eq!(
            recovered.mirror(t0, &rejected),
            Some(HealthMirror::Recovered)
        );
        let failures = HealthState::Disabled {
            reason: "5 failures".into(),
            until: Some(t0 + 30 * S),
            cause: DisableCause::Failures,
        };
        assert_eq!(recovered.mirror(t0, &failures), None);
        assert_eq!(recovered.mirror(t0, &HealthState::Healthy), None);
    }
}
