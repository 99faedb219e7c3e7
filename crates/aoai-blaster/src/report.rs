//! Snapshots of endpoint health and counts: what `report()` returns.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use aoai_blaster_core::classify::{AttemptOutcome, TransientKind};
use aoai_blaster_core::health::HealthState;
use serde::Serialize;

use crate::messages::{AttemptReport, HealthSnapshot};

/// Running counts of one endpoint, kept by the Dispatcher.
#[derive(Debug, Clone, Default)]
pub struct EndpointCounters {
    /// Attempts sent.
    pub requests: u64,
    /// 2xx replies with a usable completion.
    pub successes: u64,
    /// 429 replies.
    pub rate_limited: u64,
    /// Timeouts (connect, reply, stream idle).
    pub timeouts: u64,
    /// Other failures: connection errors, 5xx, bad replies, 4xx.
    pub errors: u64,
    /// Attempts lost to an actor restart.
    pub lost: u64,
    /// Supervisor restarts.
    pub restarts: u64,
    /// Prompt tokens reported by successful replies.
    pub prompt_tokens: u64,
    /// Completion tokens reported by successful replies.
    pub completion_tokens: u64,
    /// Sum of the durations of answered attempts.
    pub latency_total: Duration,
    /// Number of answered attempts in `latency_total`.
    pub latency_count: u64,
}

impl EndpointCounters {
    /// Counts one finished attempt.
    pub fn record(&mut self, report: &AttemptReport) {
        match &report.outcome {
            AttemptOutcome::Success => {
                self.successes += 1;
                if let Some(usage) = report.completion.as_ref().and_then(|c| c.usage.as_ref()) {
                    self.prompt_tokens += usage.prompt_tokens;
                    self.completion_tokens += usage.completion_tokens;
                }
            }
            AttemptOutcome::RateLimited { .. } => self.rate_limited += 1,
            AttemptOutcome::Transient(TransientKind::Timeout(_)) => self.timeouts += 1,
            _ => self.errors += 1,
        }
        if report.status.is_some() {
            self.latency_total += report.elapsed;
            self.latency_count += 1;
        }
    }
}

/// An endpoint's state as reports, progress lines and summaries show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Takes attempts.
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
#[derive(Debug, Clone, Serialize)]
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
    /// Builds a report from the Dispatcher's view of one endpoint.
    pub fn new(
        name: &str,
        health: &HealthSnapshot,
        in_flight: usize,
        counters: &EndpointCounters,
        now: Instant,
    ) -> Self {
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
            HealthState::Disabled { reason, until } => (
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
            mean_latency: (counters.latency_count > 0)
                .then(|| counters.latency_total / counters.latency_count as u32),
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
