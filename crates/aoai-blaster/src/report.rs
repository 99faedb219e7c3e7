//! Snapshots of endpoint health and counts: what `report()` returns.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use aoai_blaster_core::health::HealthState;
use aoai_blaster_core::scheduler::{EndpointCounters, EndpointView, QuotaSharing};
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
    /// Why the endpoint is cooling (`rate limited`, or the backoff after failures).
    pub cooling_cause: Option<String>,
    /// Why the endpoint is disabled.
    pub disabled_reason: Option<String>,
    /// Consecutive transient failures.
    pub failure_streak: u32,
    /// Attempts in flight now.
    pub in_flight: usize,
    /// Attempts it may have in flight at once (`max_in_flight`).
    pub max_in_flight: usize,
    /// When its quota budget has room again, while it waits for quota: the budget refused the
    /// latest attempt the scheduler tried to reserve on it, and that room lies ahead.
    pub waiting_for_quota_until: Option<SystemTime>,
    /// With `shared:`, how its quota is paced now: `shared` (through Redis) or `local` (alone
    /// on `1/expected_processes` of it, Redis away). Absent when the quota is not shared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_quota: Option<QuotaSharing>,
    /// With a shared quota, how long this process has paced it locally because Redis was away
    /// (every spell, up to the report), in seconds in JSON (`quota_local_secs`).
    #[serde(
        rename = "quota_local_secs",
        skip_serializing_if = "Option::is_none",
        serialize_with = "seconds"
    )]
    pub quota_local_for: Option<Duration>,
    /// The scheduler's counts: attempts, outcomes, tokens and latency.
    #[serde(flatten, serialize_with = "counts_fields")]
    pub counts: EndpointCounters,
}

impl EndpointReport {
    /// Builds a report from the scheduler's view of one endpoint, and the time quotas were
    /// paced locally ([`Scheduler::time_local`](aoai_blaster_core::scheduler::Scheduler::time_local)).
    pub(crate) fn new(view: &EndpointView<'_>, now: Instant, time_local: Option<Duration>) -> Self {
        let (name, health, in_flight, counters) =
            (view.name, view.health, view.in_flight, view.counters);
        let to_wall = |at: Instant| SystemTime::now() + at.saturating_duration_since(now);
        let (state, cooling_until, cooling_cause, disabled_reason) = match &health.state {
            HealthState::Healthy => (EndpointState::Healthy, None, None, None),
            HealthState::Probing => (EndpointState::Probing, None, None, None),
            HealthState::Cooling { until, .. } if *until <= now => {
                (EndpointState::Healthy, None, None, None)
            }
            HealthState::Cooling { until, cause } => (
                EndpointState::Cooling,
                Some(to_wall(*until)),
                Some(cause.to_string()),
                None,
            ),
            HealthState::Disabled { reason, until, .. } => (
                EndpointState::Disabled,
                until.map(to_wall),
                None,
                Some(reason.clone()),
            ),
        };
        Self {
            name: name.to_owned(),
            state,
            cooling_until,
            cooling_cause,
            disabled_reason,
            failure_streak: health.failure_streak,
            in_flight,
            max_in_flight: view.max_in_flight,
            waiting_for_quota_until: view.waiting_for_quota_until(now).map(to_wall),
            shared_quota: view.shared_quota,
            quota_local_for: view.shared_quota.and(time_local),
            counts: counters.clone(),
        }
    }

    /// What holds the endpoint at `now`, in words, or `None` when nothing does (it takes
    /// attempts as they come): `disabled: REASON`, `cooling until 12:00:05 UTC (rate
    /// limited)`, `probing (one attempt at a time)`, `in-flight room (8/8 in flight)` or
    /// `quota, next room in 12 s`.
    pub fn waiting_for(&self, now: SystemTime) -> Option<String> {
        match self.state {
            EndpointState::Disabled => {
                let reason = self.disabled_reason.as_deref().unwrap_or("no reason given");
                return Some(match self.cooling_until {
                    Some(until) => format!("disabled until {}: {reason}", clock_time(until)),
                    None => format!("disabled: {reason}"),
                });
            }
            EndpointState::Cooling => {
                let until = self
                    .cooling_until
                    .map_or_else(|| "?".to_owned(), clock_time);
                return Some(match &self.cooling_cause {
                    Some(cause) => format!("cooling until {until} ({cause})"),
                    None => format!("cooling until {until}"),
                });
            }
            EndpointState::Probing => return Some("probing (one attempt at a time)".to_owned()),
            EndpointState::Healthy => {}
        }
        if self.max_in_flight > 0 && self.in_flight >= self.max_in_flight {
            return Some(format!(
                "in-flight room ({}/{} in flight)",
                self.in_flight, self.max_in_flight
            ));
        }
        let until = self.waiting_for_quota_until?;
        let left = until.duration_since(now).ok()?;
        Some(format!("quota, next room in {}", seconds_up(left)))
    }

    /// Mean duration of answered attempts.
    pub fn mean_latency(&self) -> Option<Duration> {
        self.counts.mean_latency()
    }
}

/// A wall-clock instant as `HH:MM:SS UTC`.
pub fn clock_time(at: SystemTime) -> String {
    let seconds = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        seconds / 3600,
        (seconds % 3600) / 60,
        seconds % 60
    )
}

/// A wait in whole seconds, rounded up (`12 s`), or in minutes and seconds from two minutes on.
fn seconds_up(wait: Duration) -> String {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if seconds >= 120 {
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    } else {
        format!("{seconds} s")
    }
}

/// A duration as seconds in JSON (`quota_local_secs`), or null.
fn seconds<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

/// The counts as the report's JSON fields: the ten counts and `mean_latency`, not the latency
/// sums (`EndpointCounters` is the scheduler's type and not `Serialize`).
fn counts_fields<S: Serializer>(
    counts: &EndpointCounters,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut json = serializer.serialize_struct("EndpointCounters", 11)?;
    json.serialize_field("requests", &counts.requests)?;
    json.serialize_field("successes", &counts.successes)?;
    json.serialize_field("rate_limited", &counts.rate_limited)?;
    json.serialize_field("timeouts", &counts.timeouts)?;
    json.serialize_field("errors", &counts.errors)?;
    json.serialize_field("lost", &counts.lost)?;
    json.serialize_field("stale_retries", &counts.stale_retries)?;
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
        if let Some(waiting) = self.waiting_for(SystemTime::now()) {
            write!(f, " | {waiting}")?;
        }
        if let Some(sharing) = self.shared_quota {
            write!(f, " | quota {}", sharing.as_str())?;
        }
        if self.counts.stale_retries > 0 {
            write!(
                f,
                " | {} resent after a stale connection",
                self.counts.stale_retries
            )?;
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
                "cooling_cause",
                "cooling_until",
                "disabled_reason",
                "errors",
                "failure_streak",
                "in_flight",
                "lost",
                "max_in_flight",
                "mean_latency",
                "name",
                "prompt_tokens",
                "rate_limited",
                "requests",
                "restarts",
                "stale_retries",
                "state",
                "successes",
                "timeouts",
                "waiting_for_quota_until"
            ]
        );
        assert_eq!(json["requests"], 3);
        assert_eq!(json["mean_latency"]["nanos"], 15_000_000);
    }

    #[test]
    fn display_names_stale_connection_resends_only_when_there_were_some() {
        let mut report = EndpointReport {
            name: "east".into(),
            ..Default::default()
        };
        assert!(!report.to_string().contains("stale"), "{report}");
        report.counts.stale_retries = 2;
        assert!(
            report
                .to_string()
                .ends_with(" | 2 resent after a stale connection"),
            "{report}"
        );
    }

    #[test]
    fn waiting_for_names_what_holds_the_endpoint() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 + 2 * 60 + 5);
        let idle = EndpointReport {
            name: "east".into(),
            max_in_flight: 4,
            ..Default::default()
        };
        assert_eq!(idle.waiting_for(now), None);
        let quota = EndpointReport {
            waiting_for_quota_until: Some(now + Duration::from_millis(11_200)),
            ..idle.clone()
        };
        assert_eq!(
            quota.waiting_for(now).as_deref(),
            Some("quota, next room in 12 s")
        );
        assert_eq!(quota.waiting_for(now + Duration::from_secs(12)), None);
        let full = EndpointReport {
            in_flight: 4,
            ..quota.clone()
        };
        assert_eq!(
            full.waiting_for(now).as_deref(),
            Some("in-flight room (4/4 in flight)")
        );
        let cooling = EndpointReport {
            state: EndpointState::Cooling,
            cooling_until: Some(now + Duration::from_secs(30)),
            cooling_cause: Some("rate limited".into()),
            ..quota.clone()
        };
        assert_eq!(
            cooling.waiting_for(now).as_deref(),
            Some("cooling until 01:02:35 UTC (rate limited)")
        );
        let disabled = EndpointReport {
            state: EndpointState::Disabled,
            disabled_reason: Some("401: check api_key".into()),
            ..idle
        };
        assert_eq!(
            disabled.waiting_for(now).as_deref(),
            Some("disabled: 401: check api_key")
        );
    }
}
