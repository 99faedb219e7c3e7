//! An endpoint's health: healthy, cooling down, disabled, or being probed.
//!
//! Why a state machine of its own: the failure that took the Python package down was an endpoint
//! that refused connections while its workers kept hammering it. Here every attempt's
//! [`AttemptOutcome`] moves one small, explicit state, and the Dispatcher only sends work where
//! [`EndpointHealth::availability`] allows: a 429 cools the endpoint for exactly as long as Azure
//! asked; transient failures back it off exponentially (`base × 2^(streak−1)`, capped, with
//! jitter); a run of them, or a credential or deployment problem, disables it with a reason a
//! person can act on; and after `reenable_after` (growing with each failed probe) a disabled
//! endpoint is probed with a single job and comes back when that job succeeds.
//!
//! # An honest streak
//!
//! With many requests in flight, replies finish out of order: a fast 5xx can come back before
//! the slow successes that were sent before it. Counting failures in the order they *finish*
//! makes a deployment that fails one request in five look like it failed ten in a row. So a
//! failure counts towards the streak only if its attempt was **sent after** the most recent
//! success (by send instant) was sent: the streak is the number of failures among the attempts
//! sent since the endpoint last proved it works. [`EndpointHealth::on_outcome`] therefore takes
//! the attempt's send instant as well as the current one.
//!
//! Time and randomness are inputs ([`Instant`]s, a seeded [`StdRng`]), so every transition is
//! tested exactly. The EndpointActor owns one of these, arms its timer for the instant
//! [`EndpointHealth::availability`] names, calls [`EndpointHealth::refresh`] when it fires, and
//! reports each [`HealthChange`].
//!
//! ```
//! use std::time::{Duration, Instant};
//! use rand::{SeedableRng, rngs::StdRng};
//! use aoai_blaster_core::classify::{AttemptOutcome, TransientKind};
//! use aoai_blaster_core::health::{Availability, EndpointHealth, HealthPolicy};
//!
//! let t0 = Instant::now();
//! let policy = HealthPolicy { jitter: false, ..HealthPolicy::default() }; // backoff 1 s .. 60 s
//! let mut health = EndpointHealth::new(policy, StdRng::seed_from_u64(7));
//! let timeout = AttemptOutcome::Transient(TransientKind::timeout_after(Duration::from_secs(120)));
//! health.on_outcome(t0, t0, &timeout);
//! health.on_outcome(t0, t0, &timeout);
//! // Second failure in a row: 1 s × 2.
//! assert_eq!(health.availability(t0), Availability::At(t0 + Duration::from_secs(2)));
//! health.on_outcome(t0, t0, &AttemptOutcome::Success);
//! assert_eq!(health.availability(t0), Availability::Now);
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;

use crate::classify::{AttemptOutcome, format_duration};
use crate::shared::HealthMirror;

/// How an endpoint reacts to failures. The defaults are the documented config defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// First backoff after a transient failure (`backoff_base`, default 1 s).
    pub backoff_base: Duration,
    /// Longest backoff (`backoff_max`, default 60 s); also the longest re-enable wait, unless
    /// `reenable_after` is longer.
    pub backoff_max: Duration,
    /// Transient failures in a row (see the module docs for what "in a row" means under
    /// concurrency) that disable the endpoint (`auto_disable_threshold`, default 5). `0` never
    /// disables for failures.
    pub auto_disable_threshold: u32,
    /// How long a disabled endpoint stays disabled before it is probed (`reenable_after`,
    /// default 30 s), doubled after each failed probe up to `backoff_max`. `None`: disabled for
    /// good, as in the Python package (`reenable_after: never`).
    pub reenable_after: Option<Duration>,
    /// A 429 asking for a longer wait than this disables the endpoint until the wait is over,
    /// with a reason saying so (`retry_after_cap`, default 5 min).
    pub retry_after_cap: Duration,
    /// Randomise backoffs and re-enable waits ("equal jitter": each wait is drawn uniformly
    /// between half of it and all of it), so that many clients do not come back in step.
    /// Default true. Waits a 429 names are never jittered.
    pub jitter: bool,
}

/// `reenable_after` when not configured.
pub const DEFAULT_REENABLE_AFTER: Duration = Duration::from_secs(30);

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            auto_disable_threshold: 5,
            reenable_after: Some(DEFAULT_REENABLE_AFTER),
            retry_after_cap: Duration::from_secs(300),
            jitter: true,
        }
    }
}

impl HealthPolicy {
    /// The backoff after the `streak`-th consecutive transient failure, before jitter:
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
        doubled(self.backoff_base, streak - 1, self.backoff_max)
    }

    /// How long a disable lasts after `failed_probes` probes in a row failed, before jitter:
    /// `reenable_after × 2^failed_probes`, capped at `backoff_max` (or at `reenable_after`
    /// itself when that is longer). `None` when `reenable_after` is `None` (never re-enabled).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use aoai_blaster_core::health::HealthPolicy;
    /// let policy = HealthPolicy::default(); // 30 s, backoff_max 60 s
    /// assert_eq!(policy.reenable_wait(0), Some(Duration::from_secs(30)));
    /// assert_eq!(policy.reenable_wait(1), Some(Duration::from_secs(60)));
    /// assert_eq!(policy.reenable_wait(9), Some(Duration::from_secs(60)));
    /// ```
    pub fn reenable_wait(&self, failed_probes: u32) -> Option<Duration> {
        self.reenable_after
            .map(|after| doubled(after, failed_probes, self.backoff_max.max(after)))
    }

    /// `wait` with this policy's jitter applied, drawing from `rng`: uniformly in
    /// `[wait − wait/2, wait]` when `jitter` is on, `wait` itself otherwise. Never longer than
    /// `wait`, so caps stay caps.
    pub fn jittered(&self, wait: Duration, rng: &mut StdRng) -> Duration {
        if !self.jitter {
            return wait;
        }
        let half = wait / 2;
        wait - half + half.mul_f64(rng.random::<f64>())
    }
}

/// `base × 2^exponent`, at most `cap`, without overflow.
fn doubled(base: Duration, exponent: u32, cap: Duration) -> Duration {
    1u32.checked_shl(exponent)
        .and_then(|factor| base.checked_mul(factor))
        .unwrap_or(cap)
        .min(cap)
}

/// Why an endpoint is disabled: which decides how it comes back, and whether waiting can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisableCause {
    /// `auto_disable_threshold` transient failures in a row, or a failed probe: the service may
    /// recover by itself. Probed after the re-enable wait.
    Failures,
    /// A 429 asked for longer than `retry_after_cap`: Azure said when, so the endpoint is
    /// healthy again, without a probe, once that time has passed.
    RateLimited,
    /// The endpoint refused us: credentials rejected (401/403, after the bearer token was
    /// refreshed once), deployment not found (404), an unexpected redirect (wrong `endpoint`).
    /// No wait cures it; the configuration must be fixed. (It is still probed after the
    /// re-enable wait, in case the key or deployment was fixed meanwhile.)
    Rejected,
}

impl DisableCause {
    /// True when waiting can bring the endpoint back by itself (failures, long rate limits);
    /// false for [`DisableCause::Rejected`], which needs a configuration fix.
    pub fn curable_by_waiting(self) -> bool {
        !matches!(self, DisableCause::Rejected)
    }

    /// A short lowercase name for reports and metrics: `failures`, `rate_limited`, `rejected`.
    pub fn name(self) -> &'static str {
        match self {
            DisableCause::Failures => "failures",
            DisableCause::RateLimited => "rate_limited",
            DisableCause::Rejected => "rejected",
        }
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
        /// What kind of problem it is (whether waiting can cure it).
        cause: DisableCause,
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

    /// The cause of a disable, `None` in any other state.
    pub fn disable_cause(&self) -> Option<DisableCause> {
        match self {
            HealthState::Disabled { cause, .. } => Some(*cause),
            _ => None,
        }
    }

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

/// The most send instants kept for the streak; beyond it the earliest-sent ones are forgotten
/// (their failures still count; one still in flight is given up on, as if lost), so memory
/// stays bounded when one attempt hangs or the endpoint keeps failing.
const MAX_TRACKED_SENDS: usize = 4096;

/// Attempts sent at one instant, since the most recent success was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SendSlot {
    /// Still in flight.
    pending: u32,
    /// Finished with a transient failure.
    failures: u32,
}

/// One endpoint's health state machine (owned by its EndpointActor; the Dispatcher mirrors it).
///
/// Every outcome comes with two instants: `now` (when it is folded in) and `sent` (when its
/// attempt was sent); the owner also says when an attempt is sent ([`on_sent`](Self::on_sent))
/// and when one is lost ([`on_lost`](Self::on_lost)). The failure streak is counted in *send*
/// order: the failures among the attempts sent after the most recent success (by send instant),
/// up to the first of them still in flight. A fast failure that overtakes slower attempts sent
/// before it waits for them: if one of them succeeds, the failure never counts. Rules:
/// - Success (or a job-fatal reply or a reply too large: the endpoint answered): failures sent before it no longer
///   count; if none is left, a backoff ends and a probe succeeds (healthy). A success does not
///   end a 429 cooldown or a disable.
/// - Rate limited for `wait`: cooling until `now + wait` (an existing cooldown is extended, never
///   shortened); streak unchanged. A `wait` above `retry_after_cap` disables the endpoint
///   ([`DisableCause::RateLimited`]) until the wait is over, after which it is healthy again
///   without a probe.
/// - Transient, when it lengthens the streak: cooling for the jittered
///   [`HealthPolicy::backoff`] of the streak; at `auto_disable_threshold`, disabled
///   ([`DisableCause::Failures`]) with the last error in the reason, for the jittered
///   [`HealthPolicy::reenable_wait`]; then probing (one job at a time). A failed probe (an
///   attempt sent once probing began) disables again for a longer wait; a successful one makes
///   it healthy. A transient failure that does not lengthen the streak (sent before the most
///   recent success, or after an attempt still in flight) changes nothing yet.
/// - Endpoint-fatal reply (credentials, deployment): disabled ([`DisableCause::Rejected`]) with
///   its reason, for the re-enable wait.
///
/// A lost attempt (the actor restarted mid-request) tells nothing about the endpoint and should
/// not be fed in.
#[derive(Debug)]
pub struct EndpointHealth {
    policy: HealthPolicy,
    state: HealthState,
    /// Send instant of the latest-sent attempt that the endpoint answered properly.
    last_success_sent: Option<Instant>,
    /// The streak: failures sent after `last_success_sent` with no attempt in flight between
    /// them (the leading finished slots of `sends`, plus `dropped`).
    streak: u32,
    /// Attempts sent after `last_success_sent`, by send instant.
    sends: std::collections::BTreeMap<Instant, SendSlot>,
    /// Failures dropped from the front of `sends` to bound it, and the latest send among them.
    dropped: Option<(u32, Instant)>,
    /// Probes that failed in a row (each one lengthens the next disable).
    failed_probes: u32,
    /// From when attempts are probes (set when a disable for failures ends).
    probing_since: Option<Instant>,
    rng: StdRng,
}

impl EndpointHealth {
    /// A healthy endpoint with no failures; `rng` draws the jitter.
    pub fn new(policy: HealthPolicy, rng: StdRng) -> Self {
        EndpointHealth {
            policy,
            state: HealthState::Healthy,
            last_success_sent: None,
            streak: 0,
            sends: std::collections::BTreeMap::new(),
            dropped: None,
            failed_probes: 0,
            probing_since: None,
            rng,
        }
    }

    /// An attempt is sent at `sent`: until it ends, failures sent after it do not count.
    pub fn on_sent(&mut self, sent: Instant) {
        if self
            .last_success_sent
            .is_some_and(|success| sent <= success)
        {
            return;
        }
        self.sends.entry(sent).or_default().pending += 1;
        self.bound();
        self.settle();
    }

    /// An attempt sent at `sent` will never be answered (its actor restarted): it no longer
    /// holds back the failures sent after it.
    pub fn on_lost(&mut self, sent: Instant) {
        if let Some(slot) = self.sends.get_mut(&sent) {
            slot.pending = slot.pending.saturating_sub(1);
            if *slot == SendSlot::default() {
                self.sends.remove(&sent);
            }
            self.settle();
        }
    }

    /// Folds in the outcome of an attempt sent at `sent`, at `now`; returns the transition if
    /// the state changed. Expired cooldowns and disables are [refreshed](Self::refresh) first,
    /// and the returned change spans both steps.
    pub fn on_outcome(
        &mut self,
        now: Instant,
        sent: Instant,
        outcome: &AttemptOutcome,
    ) -> Option<HealthChange> {
        let before = self.state.clone();
        self.expire(now);
        match outcome {
            AttemptOutcome::Success
            | AttemptOutcome::JobFatal(_)
            | AttemptOutcome::ReplyTooLarge { .. } => {
                self.answered(sent, outcome.is_success());
            }
            AttemptOutcome::RateLimited { wait, source, .. } => {
                if *wait > self.policy.retry_after_cap {
                    let reason = format!(
                        "rate limited for {} ({source}), above retry_after_cap {}",
                        format_duration(*wait),
                        format_duration(self.policy.retry_after_cap)
                    );
                    self.disable_for_rate_limit(reason, later(now, *wait));
                } else {
                    self.cool_at_least(later(now, *wait), CoolingCause::RateLimited);
                }
            }
            AttemptOutcome::Transient(kind) => {
                let before = self.streak;
                let streak = self.count_failure(sent);
                let threshold = self.policy.auto_disable_threshold;
                match self.state {
                    HealthState::Disabled { .. } => {}
                    HealthState::Probing if self.is_probe(sent) => {
                        self.failed_probes = self.failed_probes.saturating_add(1);
                        let reason =
                            format!("probe failed ({streak} consecutive failures), last: {kind}");
                        self.disable(now, reason, DisableCause::Failures);
                    }
                    HealthState::Probing => {}
                    // Sent before the latest success or after an attempt still in flight.
                    _ if streak == before => {}
                    _ if threshold > 0 && streak >= threshold => {
                        let reason = format!("{streak} consecutive failures, last: {kind}");
                        self.disable(now, reason, DisableCause::Failures);
                    }
                    _ => {
                        let wait = self.policy.backoff(streak);
                        let wait = self.policy.jittered(wait, &mut self.rng);
                        self.cool_at_least(later(now, wait), CoolingCause::Backoff { streak });
                    }
                }
            }
            AttemptOutcome::EndpointFatal { reason, .. } => {
                if self.state == HealthState::Probing && self.is_probe(sent) {
                    self.failed_probes = self.failed_probes.saturating_add(1);
                }
                self.disable(now, reason.clone(), DisableCause::Rejected);
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

    /// Takes what another process noted about the deployment ([`HealthMirror`], read from
    /// Redis) at `now`, if it [changes](HealthMirror::changes) anything: a cooldown is
    /// lengthened, a disable with the other's reason taken by an endpoint that takes jobs
    /// ([`DisableCause::Rejected`]: probed after it, like one of our own), a rejection lifted.
    /// Returns the transition; the caller must not note it back for the others.
    pub fn mirror(&mut self, now: Instant, mirror: &HealthMirror) -> Option<HealthChange> {
        let before = self.state.clone();
        self.expire(now);
        if mirror.changes(&self.state, now) {
            match mirror {
                HealthMirror::Cooling { until } => {
                    self.cool_at_least(*until, CoolingCause::RateLimited);
                }
                HealthMirror::Disabled { reason, until } => {
                    self.state = HealthState::Disabled {
                        reason: reason.clone(),
                        until: Some(*until),
                        cause: DisableCause::Rejected,
                    };
                    self.probing_since = None;
                }
                HealthMirror::Recovered => {
                    self.state = HealthState::Healthy;
                    self.failed_probes = 0;
                    self.probing_since = None;
                }
            }
        }
        self.change_from(before)
    }

    /// Whether the endpoint can take a job at `now` (already accounting for cooldowns and
    /// disables that have ended, even before [`refresh`](Self::refresh) is called).
    pub fn availability(&self, now: Instant) -> Availability {
        match &self.state {
            HealthState::Disabled {
                until: Some(until),
                cause: DisableCause::RateLimited,
                ..
            } if *until <= now => Availability::Now,
            state => state.availability(now),
        }
    }

    /// The current state (as of the last call; see [`availability`](Self::availability) for
    /// a view at a given instant).
    pub fn state(&self) -> &HealthState {
        &self.state
    }

    /// Transient failures in a row: those among the attempts sent after the most recent
    /// success was sent.
    pub fn failure_streak(&self) -> u32 {
        self.streak
    }

    /// Probes that failed in a row since the endpoint was last healthy.
    pub fn failed_probes(&self) -> u32 {
        self.failed_probes
    }

    /// The policy in force.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The endpoint answered an attempt sent at `sent` (with a success when `success`, else
    /// with a job-fatal reply).
    fn answered(&mut self, sent: Instant, success: bool) {
        if self.last_success_sent.is_none_or(|latest| sent > latest) {
            // Everything sent up to this success is superseded by it; the streak restarts
            // with the attempts sent after it.
            self.last_success_sent = Some(sent);
            self.sends = self.sends.split_off(&sent);
            self.sends.remove(&sent);
            if self.dropped.is_some_and(|(_, latest)| latest <= sent) {
                self.dropped = None;
            }
            self.settle();
        }
        let streak_over = self.failure_streak() == 0;
        let recovered = match self.state {
            HealthState::Probing => self.is_probe(sent),
            HealthState::Cooling {
                cause: CoolingCause::Backoff { .. },
                ..
            } => success && streak_over,
            _ => false,
        };
        if recovered {
            self.state = HealthState::Healthy;
            self.failed_probes = 0;
            self.probing_since = None;
        }
    }

    /// Records a failure of an attempt sent at `sent`; returns the streak after it.
    fn count_failure(&mut self, sent: Instant) -> u32 {
        if self
            .last_success_sent
            .is_some_and(|success| sent <= success)
        {
            // Sent before the endpoint last proved it works: says nothing new.
            return self.streak;
        }
        let slot = self.sends.entry(sent).or_default();
        slot.pending = slot.pending.saturating_sub(1);
        slot.failures = slot.failures.saturating_add(1);
        self.bound();
        self.settle();
        self.streak
    }

    /// Recounts the streak: the failures of the leading slots with nothing in flight.
    fn settle(&mut self) {
        let mut streak = self.dropped.map_or(0, |(failures, _)| failures);
        for slot in self.sends.values() {
            if slot.pending > 0 {
                break;
            }
            streak = streak.saturating_add(slot.failures);
        }
        self.streak = streak;
    }

    /// Keeps at most [`MAX_TRACKED_SENDS`] slots: the earliest goes (its failures still count,
    /// an attempt of it still in flight is given up on).
    fn bound(&mut self) {
        while self.sends.len() > MAX_TRACKED_SENDS {
            let Some((sent, slot)) = self.sends.pop_first() else {
                break;
            };
            let failures = self.dropped.map_or(0, |(failures, _)| failures);
            self.dropped = Some((failures.saturating_add(slot.failures), sent));
        }
    }

    /// True when an attempt sent at `sent` was sent as a probe (once probing began).
    fn is_probe(&self, sent: Instant) -> bool {
        self.probing_since.is_none_or(|since| sent >= since)
    }

    fn expire(&mut self, now: Instant) {
        match &self.state {
            HealthState::Cooling { until, .. } if *until <= now => {
                self.state = HealthState::Healthy;
            }
            HealthState::Disabled {
                until: Some(until),
                cause,
                ..
            } if *until <= now => {
                if *cause == DisableCause::RateLimited {
                    self.state = HealthState::Healthy;
                } else {
                    self.probing_since = Some(*until);
                    self.state = HealthState::Probing;
                }
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

    /// Disabled until at least `until` for a long rate limit. A disable for failures or a
    /// rejection stays as it is (its probe will meet the rate limit if it still holds); a
    /// shorter rate-limit disable is extended.
    fn disable_for_rate_limit(&mut self, reason: String, until: Instant) {
        match &self.state {
            HealthState::Disabled {
                cause: DisableCause::Failures | DisableCause::Rejected,
                ..
            }
            | HealthState::Disabled { until: None, .. } => {}
            HealthState::Disabled {
                until: Some(current),
                ..
            } if *current >= until => {}
            _ => {
                self.state = HealthState::Disabled {
                    reason,
                    until: Some(until),
                    cause: DisableCause::RateLimited,
                };
            }
        }
    }

    /// Disabled for failures or a rejection for the jittered re-enable wait (longer after each
    /// failed probe), replacing any earlier disable: the latest reason is the one to act on.
    fn disable(&mut self, now: Instant, reason: String, cause: DisableCause) {
        let wait = self
            .policy
            .reenable_wait(self.failed_probes)
            .map(|wait| self.policy.jittered(wait, &mut self.rng));
        self.state = HealthState::Disabled {
            reason,
            until: wait.map(|wait| later(now, wait)),
            cause,
        };
        self.probing_since = None;
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
mod tests;
