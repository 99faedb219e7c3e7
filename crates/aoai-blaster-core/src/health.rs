//! An endpoint's health: healthy, cooling down, disabled, or being probed.
//!
//! Why a state machine of its own: the failure that took the Python package down was an endpoint
//! that refused connections while its workers kept hammering it. Here every attempt's
//! [`AttemptOutcome`] moves one small, explicit state, and the Dispatcher only sends work where
//! [`EndpointHealth::availability`] allows: a 429 cools the endpoint for exactly as long as Azure
//! asked; transient failures back it off exponentially (`base × 2^(streak−1)`, capped); a run of
//! them, or a credential or deployment problem, disables it with a reason a person can act on;
//! and with `reenable_after` a disabled endpoint is later probed with a single job and comes back
//! when that job succeeds.
//!
//! Time is an input ([`Instant`]), so every transition is tested with exact instants. The
//! EndpointActor owns one of these, arms its timer for the instant
//! [`EndpointHealth::availability`] names, calls [`EndpointHealth::refresh`] when it fires, and
//! reports each [`HealthChange`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aoai_blaster_core::classify::{AttemptOutcome, TransientKind};
//! use aoai_blaster_core::health::{Availability, EndpointHealth, HealthPolicy};
//!
//! let t0 = Instant::now();
//! let mut health = EndpointHealth::new(HealthPolicy::default()); // backoff 1 s .. 60 s
//! let timeout = AttemptOutcome::Transient(TransientKind::timeout_after(Duration::from_secs(120)));
//! health.on_outcome(t0, &timeout);
//! health.on_outcome(t0, &timeout);
//! // Second failure in a row: 1 s × 2.
//! assert_eq!(health.availability(t0), Availability::At(t0 + Duration::from_secs(2)));
//! health.on_outcome(t0, &AttemptOutcome::Success);
//! assert_eq!(health.availability(t0), Availability::Now);
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use crate::classify::{AttemptOutcome, format_duration};

/// How an endpoint reacts to failures. The defaults are the documented config defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// First backoff after a transient failure (`backoff_base`, default 1 s).
    pub backoff_base: Duration,
    /// Longest backoff (`backoff_max`, default 60 s).
    pub backoff_max: Duration,
    /// Consecutive transient failures that disable the endpoint (`auto_disable_threshold`,
    /// default 5). `0` never disables for failures.
    pub auto_disable_threshold: u32,
    /// How long a disabled endpoint stays disabled before it is probed (`reenable_after`,
    /// default `None`: disabled for good, as in the Python package).
    pub reenable_after: Option<Duration>,
    /// A 429 asking for a longer wait than this disables the endpoint until the wait is over,
    /// with a reason saying so (`retry_after_cap`, default 5 min).
    pub retry_after_cap: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            auto_disable_threshold: 5,
            reenable_after: None,
            retry_after_cap: Duration::from_secs(300),
        }
    }
}

impl HealthPolicy {
    /// The backoff after the `streak`-th consecutive transient failure:
    /// `min(backoff_base × 2^(streak−1), backoff_max)`; zero for a streak of 0. Never overflows.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use aoai_blaster_core::health::HealthPolicy;
    /// let policy = HealthPolicy::default();
    /// assert_eq!(policy.backoff(3), Duration::from_secs(4));
    /// assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(60));
    /// ```
    pub fn backoff(&self, streak: u32) -> Duration {
        if streak == 0 {
            return Duration::ZERO;
        }
        let doubled = 1u32
            .checked_shl(streak - 1)
            .and_then(|factor| self.backoff_base.checked_mul(factor))
            .unwrap_or(self.backoff_max);
        doubled.min(self.backoff_max)
    }
}

/// Where an endpoint stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Takes jobs.
    Healthy,
    /// Takes no jobs until `until`.
    Cooling {
        /// When the cooldown ends.
        until: Instant,
        /// Why it is cooling.
        cause: CoolingCause,
    },
    /// Takes no jobs; `reason` says why and what to fix.
    Disabled {
        /// Why, in words a person can act on.
        reason: String,
        /// When it may be tried again (`None`: never, until restarted).
        until: Option<Instant>,
    },
    /// Was disabled; takes one job at a time until one succeeds.
    Probing,
}

impl HealthState {
    /// A short lowercase name for reports and metrics: `healthy`, `cooling`, `disabled`,
    /// `probing`.
    pub fn name(&self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Cooling { .. } => "cooling",
            HealthState::Disabled { .. } => "disabled",
            HealthState::Probing => "probing",
        }
    }
}

impl HealthState {
    /// Whether an endpoint in this state can take a job at `now`, from the state alone (for a
    /// mirror of the state, such as the Dispatcher's). The same as
    /// [`EndpointHealth::availability`] except after a disable for a long Retry-After, where
    /// this says [`Availability::ProbeOnly`] (one job at a time) until the owner's
    /// [`EndpointHealth::refresh`] reports it healthy.
    pub fn availability(&self, now: Instant) -> Availability {
        match self {
            HealthState::Healthy => Availability::Now,
            HealthState::Probing => Availability::ProbeOnly,
            HealthState::Cooling { until, .. } if *until <= now => Availability::Now,
            HealthState::Cooling { until, .. } => Availability::At(*until),
            HealthState::Disabled { until: None, .. } => Availability::Never,
            HealthState::Disabled {
                until: Some(until), ..
            } if *until <= now => Availability::ProbeOnly,
            HealthState::Disabled {
                until: Some(until), ..
            } => Availability::At(*until),
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthState::Cooling { cause, .. } => write!(f, "cooling ({cause})"),
            HealthState::Disabled { reason, .. } => write!(f, "disabled: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// An endpoint's health at one moment, as its owner announces it: numbered so that a late
/// message cannot undo a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// Increases with every change the endpoint makes.
    pub generation: u64,
    /// The state.
    pub state: HealthState,
    /// Consecutive transient failures.
    pub failure_streak: u32,
}

impl HealthSnapshot {
    /// A healthy endpoint that has announced nothing yet.
    pub fn initial() -> HealthSnapshot {
        HealthSnapshot {
            generation: 0,
            state: HealthState::Healthy,
            failure_streak: 0,
        }
    }
}

/// Why an endpoint is cooling down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoolingCause {
    /// Azure answered 429 and asked for a wait.
    RateLimited,
    /// Backing off after `streak` consecutive transient failures.
    Backoff {
        /// Consecutive transient failures when the backoff began.
        streak: u32,
    },
}

impl fmt::Display for CoolingCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoolingCause::RateLimited => f.write_str("rate limited"),
            CoolingCause::Backoff { streak } => {
                write!(f, "backing off after {streak} consecutive failures")
            }
        }
    }
}

/// Whether an endpoint can take a job, as the Dispatcher needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Takes jobs now.
    Now,
    /// Takes one job at a time now (a probe).
    ProbeOnly,
    /// Takes jobs (or a probe) from this instant on: arm a timer.
    At(Instant),
    /// Takes no jobs, and will not without outside help.
    Never,
}

/// A state transition, as reported to the Dispatcher and to health subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthChange {
    /// The state before.
    pub from: HealthState,
    /// The state after.
    pub to: HealthState,
}

impl HealthChange {
    /// True when the endpoint just became disabled (or its disable reason or end changed).
    pub fn is_disable(&self) -> bool {
        matches!(self.to, HealthState::Disabled { .. })
    }

    /// True when a disabled or probing endpoint is back to taking jobs.
    pub fn is_recovery(&self) -> bool {
        matches!(
            self.from,
            HealthState::Disabled { .. } | HealthState::Probing
        ) && self.to == HealthState::Healthy
    }
}

impl fmt::Display for HealthChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// What a disable was for, which decides where it leads when its time is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DisableKind {
    /// Failures or a fatal reply: probe first.
    Failures,
    /// A Retry-After above the cap: Azure said when, so come back healthy.
    LongRateLimit,
}

/// One endpoint's health state machine (owned by its EndpointActor; the Dispatcher mirrors it).
///
/// Rules:
/// - Success: streak 0; healthy, unless a 429 cooldown or a disable is in force (a late success
///   of a request sent earlier does not overrule them; it does end a backoff and a probe).
/// - Rate limited for `wait`: cooling until `now + wait` (an existing cooldown is extended, never
///   shortened); streak unchanged. A `wait` above `retry_after_cap` disables the endpoint until
///   the wait is over, after which it is healthy again without a probe.
/// - Transient: streak + 1 and cooling for [`HealthPolicy::backoff`]; at
///   `auto_disable_threshold` consecutive failures, disabled with the last error in the reason,
///   until `now + reenable_after`; then probing (one job at a time); a failed probe disables
///   again for another `reenable_after`, a successful one (or any reply from the endpoint)
///   makes it healthy.
/// - Job-fatal reply: the endpoint answered, so the streak resets (and a probe succeeded).
/// - Endpoint-fatal reply (credentials, deployment): disabled with its reason, until
///   `now + reenable_after`.
///
/// A lost attempt (the actor restarted mid-request) tells nothing about the endpoint and should
/// not be fed in.
#[derive(Clone, Debug)]
pub struct EndpointHealth {
    policy: HealthPolicy,
    state: HealthState,
    streak: u32,
    disable_kind: DisableKind,
}

impl EndpointHealth {
    /// A healthy endpoint with no failures.
    pub fn new(policy: HealthPolicy) -> Self {
        EndpointHealth {
            policy,
            state: HealthState::Healthy,
            streak: 0,
            disable_kind: DisableKind::Failures,
        }
    }

    /// Folds one attempt's outcome in; returns the transition if the state changed. Expired
    /// cooldowns and disables are [refreshed](Self::refresh) first, and the returned change
    /// spans both steps.
    pub fn on_outcome(&mut self, now: Instant, outcome: &AttemptOutcome) -> Option<HealthChange> {
        let before = self.state.clone();
        self.expire(now);
        match outcome {
            AttemptOutcome::Success => {
                self.streak = 0;
                if matches!(
                    self.state,
                    HealthState::Probing
                        | HealthState::Cooling {
                            cause: CoolingCause::Backoff { .. },
                            ..
                        }
                ) {
                    self.state = HealthState::Healthy;
                }
            }
            AttemptOutcome::JobFatal(_) => {
                self.streak = 0;
                if self.state == HealthState::Probing {
                    self.state = HealthState::Healthy;
                }
            }
            AttemptOutcome::RateLimited { wait, source, .. } => {
                if *wait > self.policy.retry_after_cap {
                    let reason = format!(
                        "rate limited for {} ({source}), above retry_after_cap {}",
                        format_duration(*wait),
                        format_duration(self.policy.retry_after_cap)
                    );
                    self.disable_at_least(reason, later(now, *wait), DisableKind::LongRateLimit);
                } else {
                    self.cool_at_least(later(now, *wait), CoolingCause::RateLimited);
                }
            }
            AttemptOutcome::Transient(kind) => {
                self.streak = self.streak.saturating_add(1);
                let streak = self.streak;
                let threshold = self.policy.auto_disable_threshold;
                match self.state {
                    HealthState::Disabled { .. } => {}
                    HealthState::Probing => {
                        let reason =
                            format!("probe failed ({streak} consecutive failures), last: {kind}");
                        self.disable_for_failures(now, reason);
                    }
                    _ if threshold > 0 && streak >= threshold => {
                        let reason = format!("{streak} consecutive failures, last: {kind}");
                        self.disable_for_failures(now, reason);
                    }
                    _ => {
                        let until = later(now, self.policy.backoff(streak));
                        self.cool_at_least(until, CoolingCause::Backoff { streak });
                    }
                }
            }
            AttemptOutcome::EndpointFatal { reason, .. } => {
                self.disable_for_failures(now, reason.clone());
            }
        }
        self.change_from(before)
    }

    /// Ends a cooldown or a disable whose time has come: cooling → healthy; disabled →
    /// probing (or healthy, for a disable that only waited out a long Retry-After). Returns the
    /// transition, if any. The EndpointActor calls this when the timer it armed for
    /// [`availability`](Self::availability)'s instant fires.
    pub fn refresh(&mut self, now: Instant) -> Option<HealthChange> {
        let before = self.state.clone();
        self.expire(now);
        self.change_from(before)
    }

    /// Whether the endpoint can take a job at `now` (already accounting for cooldowns and
    /// disables that have ended, even before [`refresh`](Self::refresh) is called).
    pub fn availability(&self, now: Instant) -> Availability {
        match (&self.state, self.disable_kind) {
            (
                HealthState::Disabled {
                    until: Some(until), ..
                },
                DisableKind::LongRateLimit,
            ) if *until <= now => Availability::Now,
            (state, _) => state.availability(now),
        }
    }

    /// The current state (as of the last call; see [`availability`](Self::availability) for
    /// a view at a given instant).
    pub fn state(&self) -> &HealthState {
        &self.state
    }

    /// Consecutive transient failures (reset by any proper answer from the endpoint).
    pub fn failure_streak(&self) -> u32 {
        self.streak
    }

    /// The policy in force.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    fn expire(&mut self, now: Instant) {
        match &self.state {
            HealthState::Cooling { until, .. } if *until <= now => {
                self.state = HealthState::Healthy;
            }
            HealthState::Disabled {
                until: Some(until), ..
            } if *until <= now => {
                self.state = match self.disable_kind {
                    DisableKind::Failures => HealthState::Probing,
                    DisableKind::LongRateLimit => HealthState::Healthy,
                };
            }
            _ => {}
        }
    }

    /// Cooling until at least `until`; a disable stays in force. A backoff that does not
    /// extend a longer backoff still updates its streak.
    fn cool_at_least(&mut self, until: Instant, cause: CoolingCause) {
        match &mut self.state {
            HealthState::Disabled { .. } => {}
            HealthState::Cooling {
                until: current,
                cause: current_cause,
            } if *current >= until => {
                if let (CoolingCause::Backoff { .. }, CoolingCause::Backoff { .. }) =
                    (*current_cause, cause)
                {
                    *current_cause = cause;
                }
            }
            _ => self.state = HealthState::Cooling { until, cause },
        }
    }

    /// Disabled until at least `until`. A disable for failures stays as it is (its probe will
    /// meet the rate limit if it still holds); a shorter rate-limit disable is extended.
    fn disable_at_least(&mut self, reason: String, until: Instant, kind: DisableKind) {
        match &self.state {
            HealthState::Disabled { .. } if self.disable_kind == DisableKind::Failures => {}
            HealthState::Disabled { until: None, .. } => {}
            HealthState::Disabled {
                until: Some(current),
                ..
            } if *current >= until => {}
            _ => {
                self.state = HealthState::Disabled {
                    reason,
                    until: Some(until),
                };
                self.disable_kind = kind;
            }
        }
    }

    /// Disabled for failures (or a fatal reply) until `now + reenable_after`, replacing any
    /// earlier disable: the latest reason is the one to act on.
    fn disable_for_failures(&mut self, now: Instant, reason: String) {
        self.state = HealthState::Disabled {
            reason,
            until: self.policy.reenable_after.map(|after| later(now, after)),
        };
        self.disable_kind = DisableKind::Failures;
    }

    fn change_from(&self, before: HealthState) -> Option<HealthChange> {
        (before != self.state).then(|| HealthChange {
            from: before,
            to: self.state.clone(),
        })
    }
}

/// `now + wait`, or as far as an [`Instant`] reaches when that overflows.
fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(crate::classify::MAX_RETRY_WAIT))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{ApiError, TransientKind, WaitSource};

    const S: Duration = Duration::from_secs(1);

    fn policy() -> HealthPolicy {
        HealthPolicy {
            backoff_base: S,
            backoff_max: 8 * S,
            auto_disable_threshold: 3,
            reenable_after: Some(30 * S),
            retry_after_cap: 300 * S,
        }
    }

    fn timeout() -> AttemptOutcome {
        AttemptOutcome::Transient(TransientKind::timeout_after(120 * S))
    }

    fn limited(wait: Duration) -> AttemptOutcome {
        AttemptOutcome::RateLimited {
            wait,
            source: WaitSource::RetryAfter,
            error: ApiError {
                status: 429,
                code: Some("429".into()),
                message: "slow down".into(),
            },
        }
    }

    fn unauthorized() -> AttemptOutcome {
        AttemptOutcome::EndpointFatal {
            reason: "credentials rejected (HTTP 401): check api_key for this deployment".into(),
            error: ApiError {
                status: 401,
                code: Some("401".into()),
                message: "Access denied".into(),
            },
        }
    }

    fn rejected() -> AttemptOutcome {
        AttemptOutcome::JobFatal(ApiError {
            status: 400,
            code: Some("content_filter".into()),
            message: "filtered".into(),
        })
    }

    fn cooling(until: Instant, cause: CoolingCause) -> HealthState {
        HealthState::Cooling { until, cause }
    }

    #[test]
    fn backoff_doubles_and_caps_without_overflow() {
        let p = policy();
        let got: Vec<u64> = (0..7).map(|s| p.backoff(s).as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 8, 8, 8]);
        for streak in [31, 32, 33, 64, u32::MAX] {
            assert_eq!(p.backoff(streak), 8 * S, "streak {streak}");
        }
        let huge = HealthPolicy {
            backoff_base: Duration::MAX,
            backoff_max: Duration::MAX,
            ..policy()
        };
        assert_eq!(huge.backoff(2), Duration::MAX);
    }

    #[test]
    fn transient_failures_back_off_then_disable_with_the_last_error() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        let change = h.on_outcome(t0, &timeout()).unwrap();
        assert_eq!(change.from, HealthState::Healthy);
        assert_eq!(
            change.to,
            cooling(t0 + S, CoolingCause::Backoff { streak: 1 })
        );
        assert_eq!(h.availability(t0), Availability::At(t0 + S));
        assert_eq!(h.availability(t0 + S), Availability::Now);

        // Second failure 1 s later (the cooldown just ended): 2 s.
        let t1 = t0 + S;
        h.on_outcome(t1, &timeout()).unwrap();
        assert_eq!(
            *h.state(),
            cooling(t1 + 2 * S, CoolingCause::Backoff { streak: 2 })
        );
        assert_eq!(h.failure_streak(), 2);

        // Third: threshold 3 reached.
        let t2 = t1 + 2 * S;
        let change = h.on_outcome(t2, &timeout()).unwrap();
        assert!(change.is_disable());
        assert_eq!(
            *h.state(),
            HealthState::Disabled {
                reason: "3 consecutive failures, last: timeout after 2m".into(),
                until: Some(t2 + 30 * S),
            }
        );
        assert_eq!(h.availability(t2 + 29 * S), Availability::At(t2 + 30 * S));
        assert_eq!(h.availability(t2 + 30 * S), Availability::ProbeOnly);
    }

    #[test]
    fn a_failure_during_a_backoff_extends_it() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &timeout());
        // A second in-flight request fails at once: streak 2, until t0 + 2 s.
        h.on_outcome(t0, &timeout());
        assert_eq!(
            *h.state(),
            cooling(t0 + 2 * S, CoolingCause::Backoff { streak: 2 })
        );
    }

    #[test]
    fn probe_success_re_enables_and_probe_failure_disables_again() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        for _ in 0..3 {
            h.on_outcome(t0, &timeout());
        }
        let t1 = t0 + 30 * S;
        assert_eq!(h.refresh(t1 - Duration::from_nanos(1)), None);
        let change = h.refresh(t1).unwrap();
        assert_eq!(change.to, HealthState::Probing);
        assert_eq!(h.availability(t1), Availability::ProbeOnly);

        // The probe fails: disabled for another 30 s, from now.
        let t2 = t1 + 5 * S;
        h.on_outcome(t2, &timeout()).unwrap();
        assert_eq!(
            *h.state(),
            HealthState::Disabled {
                reason: "probe failed (4 consecutive failures), last: timeout after 2m".into(),
                until: Some(t2 + 30 * S),
            }
        );

        // The next probe succeeds.
        let t3 = t2 + 30 * S;
        let change = h.on_outcome(t3, &AttemptOutcome::Success).unwrap();
        assert_eq!(change.to, HealthState::Healthy);
        assert!(matches!(change.from, HealthState::Disabled { .. }));
        assert!(change.is_recovery());
        assert_eq!(h.failure_streak(), 0);
        assert_eq!(h.availability(t3), Availability::Now);
    }

    #[test]
    fn without_reenable_after_a_disable_is_for_good() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(HealthPolicy {
            reenable_after: None,
            ..policy()
        });
        for _ in 0..3 {
            h.on_outcome(t0, &timeout());
        }
        assert_eq!(h.availability(t0 + 1_000_000 * S), Availability::Never);
        assert_eq!(h.refresh(t0 + 1_000_000 * S), None);
        // A late success of a request sent before the disable does not overrule it.
        assert_eq!(h.on_outcome(t0 + S, &AttemptOutcome::Success), None);
        assert!(matches!(
            h.state(),
            HealthState::Disabled { until: None, .. }
        ));
    }

    #[test]
    fn threshold_zero_never_disables() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(HealthPolicy {
            auto_disable_threshold: 0,
            ..policy()
        });
        for _ in 0..100 {
            h.on_outcome(t0, &timeout());
        }
        assert_eq!(
            *h.state(),
            cooling(t0 + 8 * S, CoolingCause::Backoff { streak: 100 })
        );
    }

    #[test]
    fn rate_limits_cool_for_the_wait_and_never_shorten() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &timeout());
        let streak = h.failure_streak();
        let change = h.on_outcome(t0, &limited(7 * S)).unwrap();
        assert_eq!(change.to, cooling(t0 + 7 * S, CoolingCause::RateLimited));
        assert_eq!(h.failure_streak(), streak, "429 leaves the streak alone");
        // A shorter wait from a later reply does not shorten the cooldown.
        assert_eq!(h.on_outcome(t0 + S, &limited(2 * S)), None);
        assert_eq!(*h.state(), cooling(t0 + 7 * S, CoolingCause::RateLimited));
        // A longer one extends it.
        h.on_outcome(t0 + S, &limited(10 * S)).unwrap();
        assert_eq!(*h.state(), cooling(t0 + 11 * S, CoolingCause::RateLimited));
        // A late success does not end a 429 cooldown.
        assert_eq!(h.on_outcome(t0 + 2 * S, &AttemptOutcome::Success), None);
        assert_eq!(h.failure_streak(), 0);
        // A failure whose backoff ends earlier keeps the 429 cooldown.
        assert_eq!(h.on_outcome(t0 + 3 * S, &timeout()), None);
        let change = h.refresh(t0 + 11 * S).unwrap();
        assert_eq!(change.to, HealthState::Healthy);
    }

    #[test]
    fn a_backoff_is_ended_by_a_success() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &timeout());
        let change = h.on_outcome(t0, &AttemptOutcome::Success).unwrap();
        assert_eq!(change.to, HealthState::Healthy);
    }

    #[test]
    fn a_rate_limit_longer_than_the_cap_disables_until_it_is_over() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        let change = h.on_outcome(t0, &limited(3 * 3600 * S)).unwrap();
        assert_eq!(
            change.to,
            HealthState::Disabled {
                reason: "rate limited for 3h 0m (Retry-After), above retry_after_cap 5m".into(),
                until: Some(t0 + 3 * 3600 * S),
            }
        );
        assert_eq!(h.availability(t0 + 3 * 3600 * S), Availability::Now);
        // A mirror that only has the state lets one job through until the refresh arrives.
        assert_eq!(
            h.state().availability(t0 + 3 * 3600 * S),
            Availability::ProbeOnly
        );
        assert_eq!(
            h.state().availability(t0 + 3600 * S),
            Availability::At(t0 + 3 * 3600 * S)
        );
        // Azure said when: healthy again without a probe.
        assert_eq!(
            h.refresh(t0 + 3 * 3600 * S).unwrap().to,
            HealthState::Healthy
        );
        // Exactly the cap still only cools.
        h.on_outcome(t0 + 4 * 3600 * S, &limited(300 * S)).unwrap();
        assert!(matches!(h.state(), HealthState::Cooling { .. }));
    }

    #[test]
    fn job_fatal_resets_the_streak_and_completes_a_probe() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &timeout());
        h.on_outcome(t0, &timeout());
        assert_eq!(h.on_outcome(t0, &rejected()), None, "no state change");
        assert_eq!(h.failure_streak(), 0);
        assert_eq!(
            *h.state(),
            cooling(t0 + 2 * S, CoolingCause::Backoff { streak: 2 })
        );

        for _ in 0..3 {
            h.on_outcome(t0, &timeout());
        }
        h.refresh(t0 + 30 * S).unwrap();
        assert_eq!(*h.state(), HealthState::Probing);
        assert_eq!(
            h.on_outcome(t0 + 31 * S, &rejected()).unwrap().to,
            HealthState::Healthy
        );
    }

    #[test]
    fn endpoint_fatal_disables_with_its_reason() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        let change = h.on_outcome(t0, &unauthorized()).unwrap();
        assert_eq!(
            change.to,
            HealthState::Disabled {
                reason: "credentials rejected (HTTP 401): check api_key for this deployment".into(),
                until: Some(t0 + 30 * S),
            }
        );
        assert_eq!(h.failure_streak(), 0);
        assert_eq!(h.refresh(t0 + 30 * S).unwrap().to, HealthState::Probing);
        // The probe meets the same 401: disabled again.
        let change = h.on_outcome(t0 + 31 * S, &unauthorized()).unwrap();
        assert!(matches!(
            change.to,
            HealthState::Disabled { until: Some(u), .. } if u == t0 + 61 * S
        ));
        // A fatal reply also overrides a long rate-limit disable: the latest reason matters.
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &limited(3600 * S));
        h.on_outcome(t0, &unauthorized()).unwrap();
        assert_eq!(h.refresh(t0 + 30 * S).unwrap().to, HealthState::Probing);
    }

    #[test]
    fn late_outcomes_do_not_shake_a_disable() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &unauthorized());
        let disabled = h.state().clone();
        assert_eq!(h.on_outcome(t0 + S, &timeout()), None);
        assert_eq!(h.on_outcome(t0 + S, &limited(5 * S)), None);
        assert_eq!(h.on_outcome(t0 + S, &AttemptOutcome::Success), None);
        assert_eq!(*h.state(), disabled);
        // Nor does a 429 longer than the cap: the probe will meet it if it still holds.
        assert_eq!(h.on_outcome(t0 + S, &limited(600 * S)), None);
        assert_eq!(*h.state(), disabled);
    }

    #[test]
    fn a_longer_rate_limit_extends_a_rate_limit_disable() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &limited(600 * S));
        assert_eq!(h.on_outcome(t0 + S, &limited(400 * S)), None);
        let change = h.on_outcome(t0 + S, &limited(3600 * S)).unwrap();
        assert_eq!(
            change.to,
            HealthState::Disabled {
                reason: "rate limited for 1h 0m (Retry-After), above retry_after_cap 5m".into(),
                until: Some(t0 + 3601 * S),
            }
        );
    }

    #[test]
    fn a_rate_limit_during_a_probe_cools() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &unauthorized());
        h.refresh(t0 + 30 * S);
        let change = h.on_outcome(t0 + 31 * S, &limited(4 * S)).unwrap();
        assert_eq!(change.from, HealthState::Probing);
        assert_eq!(change.to, cooling(t0 + 35 * S, CoolingCause::RateLimited));
    }

    #[test]
    fn on_outcome_expires_first_and_reports_the_whole_change() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(policy());
        h.on_outcome(t0, &limited(5 * S));
        // The cooldown ended at t0 + 5 s; a success at t0 + 6 s reports cooling -> healthy.
        let change = h.on_outcome(t0 + 6 * S, &AttemptOutcome::Success).unwrap();
        assert_eq!(change.from, cooling(t0 + 5 * S, CoolingCause::RateLimited));
        assert_eq!(change.to, HealthState::Healthy);
    }

    #[test]
    fn huge_streaks_and_waits_do_not_overflow() {
        let t0 = Instant::now();
        let mut h = EndpointHealth::new(HealthPolicy {
            auto_disable_threshold: 0,
            reenable_after: Some(Duration::MAX),
            retry_after_cap: Duration::MAX,
            ..policy()
        });
        h.streak = u32::MAX - 1;
        h.on_outcome(t0, &timeout());
        h.on_outcome(t0, &timeout());
        assert_eq!(h.failure_streak(), u32::MAX);
        h.on_outcome(t0, &limited(Duration::MAX));
        assert!(matches!(h.availability(t0), Availability::At(until) if until > t0));
        h.on_outcome(t0, &unauthorized());
        assert!(matches!(h.availability(t0), Availability::At(until) if until > t0));
    }

    #[test]
    fn states_display_for_reports() {
        let t0 = Instant::now();
        assert_eq!(HealthState::Healthy.to_string(), "healthy");
        assert_eq!(
            cooling(t0, CoolingCause::Backoff { streak: 2 }).to_string(),
            "cooling (backing off after 2 consecutive failures)"
        );
        assert_eq!(
            HealthState::Disabled {
                reason: "r".into(),
                until: None
            }
            .to_string(),
            "disabled: r"
        );
        assert_eq!(HealthState::Probing.name(), "probing");
    }
}
