//! Snapshots of endpoint health and counts: what `report()` returns.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use aoai_blaster_core::health::HealthState;
use aoai_blaster_core::scheduler::EndpointView;
use serde::Serialize;

/// An endpoint's state as reports, progress lines and summaries show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Takes attempts.
    #[default]
    Healthy,
    /// Waits out a cooldown (a 429's wait, or a backoff after failures).
    Cooling,
    /// Re-enabled on probation: one attempt at a time until one succeeds.
    Probing,
    /// Takes no attempts (see the report's `disabled_reason`).
    Disabled,
}

impl EndpointState {
    /// The state's name: `healthy`, `cooling`, `probing` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Cooling => "cooling",
            EndpointState::Probing => "probing",
            EndpointState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for EndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint's state and counts at the moment of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndpointReport {
    /// The deployment's `name`.
    pub name: String,
    /// Healthy, cooling, probing or disabled.
    pub state: EndpointState,
    /// When the cooldown (or a timed disable) ends.
    pub cooling_until: Option<SystemTime>,
    /// Why the endpoint is disabled.
    pub disabled_reason: Option<String>,
    /// Consecutive transient failures.
    pub failure_streak: u32,
    /// Attempts in flight now.
    pub in_flight: usize,
    /// Attempts sent.
    pub requests: u64,
    /// Successful attempts.
    pub successes: u64,
    /// 429 replies.
    pub rate_limited: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Other failures.
    pub errors: u64,
    /// Attempts lost to actor restarts.
    pub lost: u64,
    /// Supervisor restarts.
    pub restarts: u64,
    /// Prompt tokens of successful replies.
    pub prompt_tokens: u64,
    /// Completion tokens of successful replies.
    pub completion_tokens: u64,
    /// Mean duration of answered attempts.
    pub mean_latency: Option<Duration>,
}

impl EndpointReport {
    /// Builds a report from the scheduler's view of one endpoint.
    pub(crate) fn new(view: &EndpointView<'_>, now: Instant) -> Self {
        let (name, health, in_flight, counters) =
            (view.name, view.health, view.in_flight, view.counters);
        let to_wall = |at: Instant| SystemTime::now() + at.saturating_duration_since(now);
        let (state, cooling_until, disabled_reason) = match &health.state {
            HealthState::Healthy => (EndpointState::Healthy, None, None),
            HealthState::Probing => (EndpointState::Probing, None, None),
            HealthState::Cooling { until, .. } if *until <= now => {
                (EndpointState::Healthy, None, None)
            }
            HealthState::Cooling { until, .. } => {
                (EndpointState::Cooling, Some(to_wall(*until)), None)
            }
            HealthState::Disabled { reason, until, .. } => (
                EndpointState::Disabled,
                until.map(to_wall),
                Some(reason.clone()),
            ),
        };
        Self {
            name: name.to_owned(),
            state,
            cooling_until,
            disabled_reason,
            failure_streak: health.failure_streak,
            in_flight,
            requests: counters.requests,
            successes: counters.successes,
            rate_limited: counters.rate_limited,
            timeouts: counters.timeouts,
            errors: counters.errors,
            lost: counters.lost,
            restarts: counters.restarts,
            prompt_tokens: counters.prompt_tokens,
            completion_tokens: counters.completion_tokens,
            mean_latency: counters.mean_latency(),
        }
    }
}

impl fmt::Display for EndpointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} | requests {} ok {} 429 {} timeouts {} errors {} | tokens {}+{}",
            self.name,
            self.state,
            self.requests,
            self.successes,
            self.rate_limited,
            self.timeouts,
            self.errors,
            self.prompt_tokens,
            self.completion_tokens
        )?;
        if let Some(latency) = self.mean_latency {
            write!(f, " | mean {:.1} ms", latency.as_secs_f64() * 1000.0)?;
        }
        if let Some(reason) = &self.disabled_reason {
            write!(f, " | disabled: {reason}")?;
        }
        Ok(())
    }
}
