//! Snapshots of endpoint health and counts: what `report()` returns.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use aoai_blaster_core::health::HealthState;
use aoai_blaster_core::scheduler::{EndpointCounters, EndpointView};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

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
    /// The scheduler's counts: attempts, outcomes, tokens and latency.
    #[serde(flatten, serialize_with = "counts_fields")]
    pub counts: EndpointCounters,
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
            counts: counters.clone(),
        }
    }

    /// Mean duration of answered attempts.
    pub fn mean_latency(&self) -> Option<Duration> {
        self.counts.mean_latency()
    }
}

/// The counts as the report's JSON fields: the nine counts and `mean_latency`, not the latency
/// sums (`EndpointCounters` is the scheduler's type and not `Serialize`).
fn counts_fields<S: Serializer>(
    counts: &EndpointCounters,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut json = serializer.serialize_struct("EndpointCounters", 10)?;
    json.serialize_field("requests", &counts.requests)?;
    json.serialize_field("successes", &counts.successes)?;
    json.serialize_field("rate_limited", &counts.rate_limited)?;
    json.serialize_field("timeouts", &counts.timeouts)?;
    json.serialize_field("errors", &counts.errors)?;
    json.serialize_field("lost", &counts.lost)?;
    json.serialize_field("restarts", &counts.restarts)?;
    json.serialize_field("prompt_tokens", &counts.prompt_tokens)?;
    json.serialize_field("completion_tokens", &counts.completion_tokens)?;
    json.serialize_field("mean_latency", &counts.mean_latency())?;
    json.end()
}

impl fmt::Display for EndpointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} | requests {} ok {} 429 {} timeouts {} errors {} | tokens {}+{}",
            self.name,
            self.state,
            self.counts.requests,
            self.counts.successes,
            self.counts.rate_limited,
            self.counts.timeouts,
            self.counts.errors,
            self.counts.prompt_tokens,
            self.counts.completion_tokens
        )?;
        if let Some(latency) = self.mean_latency() {
            write!(f, " | mean {:.1} ms", latency.as_secs_f64() * 1000.0)?;
        }
        if let Some(reason) = &self.disabled_reason {
            write!(f, " | disabled: {reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flattens_the_counts_and_keeps_the_field_names() {
        let report = EndpointReport {
            name: "east".into(),
            counts: EndpointCounters {
                requests: 3,
                latency_total: Duration::from_millis(30),
                latency_count: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let json = serde_json::to_value(&report).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "completion_tokens",
                "cooling_until",
                "disabled_reason",
                "errors",
                "failure_streak",
                "in_flight",
                "lost",
                "mean_latency",
                "name",
                "prompt_tokens",
                "rate_limited",
                "requests",
                "restarts",
                "state",
                "successes",
                "timeouts"
            ]
        );
        assert_eq!(json["requests"], 3);
        assert_eq!(json["mean_latency"]["nanos"], 15_000_000);
    }
}
