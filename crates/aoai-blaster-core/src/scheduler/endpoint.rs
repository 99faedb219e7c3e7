//! The scheduler's view of one endpoint: what it needs to choose (health as last announced,
//! in-flight room, quota budget) and the counts it reports.

use std::time::{Duration, Instant};

use crate::classify::AttemptOutcome;
use crate::config::DeploymentConfig;
use crate::health::{Availability, HealthSnapshot};
use crate::operation::Operations;
use crate::quota::{
    AdaptiveBudget, QuotaBudget, QuotaFeedback, Reservation, UnlimitedBudget, WindowBudget,
};

use super::attempt::{AttemptEnd, AttemptReport, EndpointCounters};

/// Tokens charged for the reply when a request names no `max_tokens` and the deployment no
/// `max_completion_tokens` (the quota estimate Azure makes is of the same kind).
pub const DEFAULT_CHARGED_COMPLETION_TOKENS: u64 = 4096;

/// One endpoint's admission state.
pub(crate) struct Endpoint {
    pub(crate) name: String,
    pub(crate) model: String,
    /// The operations it takes.
    pub(crate) operations: Operations,
    /// The index of the first endpoint with the same `model`: a job pinned to a model may use
    /// every endpoint of its group.
    pub(crate) model_group: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) in_flight: usize,
    pub(crate) budget: Box<dyn QuotaBudget>,
    /// The configured TPM, which no job may exceed (adaptive budgets never learn above it).
    pub(crate) tpm_limit: Option<u64>,
    pub(crate) default_completion_tokens: u64,
    /// Index into the scheduler's tokenizers.
    pub(crate) tokenizer: usize,
    /// Health as the endpoint last announced it.
    pub(crate) health: HealthSnapshot,
    pub(crate) counters: EndpointCounters,
    /// When the budget said it would next have room, as its latest refusal said (cleared when
    /// a reservation succeeds): what the endpoint waits for, in reports.
    pub(crate) quota_refused_until: Option<Instant>,
    /// True when its quota is shared through Redis ([`super::Scheduler::share_quotas`]).
    pub(crate) shares_quota: bool,
}

impl Endpoint {
    pub(crate) fn new(
        deployment: &DeploymentConfig,
        rpm_window: Duration,
        tokenizer: usize,
    ) -> Self {
        let limited = deployment.rpm_limit.is_some() || deployment.tpm_limit.is_some();
        let budget: Box<dyn QuotaBudget> = if deployment.adaptive {
            Box::new(AdaptiveBudget::new(
                deployment.rpm_limit,
                deployment.tpm_limit,
                rpm_window,
            ))
        } else if limited {
            Box::new(WindowBudget::new(
                deployment.rpm_limit,
                deployment.tpm_limit,
                rpm_window,
            ))
        } else {
            Box::new(UnlimitedBudget)
        };
        Endpoint {
            name: deployment.name.clone(),
            model: deployment.model.clone(),
            operations: deployment.operations,
            model_group: 0,
            max_in_flight: deployment.max_in_flight.max(1),
            in_flight: 0,
            budget,
            tpm_limit: deployment.tpm_limit,
            default_completion_tokens: deployment
                .max_completion_tokens
                .map(u64::from)
                .unwrap_or(DEFAULT_CHARGED_COMPLETION_TOKENS),
            tokenizer,
            health: HealthSnapshot::initial(),
            counters: EndpointCounters::default(),
            quota_refused_until: None,
            shares_quota: false,
        }
    }

    pub(crate) fn availability(&self, now: Instant) -> Availability {
        self.health.state.availability(now)
    }

    /// Whether health and in-flight room allow one more attempt now.
    pub(crate) fn has_room(&self, now: Instant) -> bool {
        if self.in_flight >= self.max_in_flight {
            return false;
        }
        match self.availability(now) {
            Availability::Now => true,
            Availability::ProbeOnly => self.in_flight == 0,
            Availability::At(_) | Availability::Never => false,
        }
    }

    /// Accounts the end of an attempt on this endpoint, whatever became of its job: the health
    /// it reported, the budget (a lost attempt keeps its charge: it may have reached the
    /// service; a declined one never happened), the counts.
    pub(crate) fn account(&mut self, now: Instant, reservation: Reservation, end: &AttemptEnd) {
        match end {
            AttemptEnd::Lost => {
                self.budget
                    .settle(now, reservation, &QuotaFeedback::default());
                self.counters.lost += 1;
            }
            AttemptEnd::Declined { health } => {
                self.observe(health);
                self.budget.release(reservation);
                self.counters.requests = self.counters.requests.saturating_sub(1);
            }
            AttemptEnd::Finished(report) => {
                self.observe(&report.health);
                self.budget.settle(now, reservation, &feedback_of(report));
                self.counters.record(report);
            }
        }
    }

    /// Takes a newer announcement of the endpoint's health (an older one is ignored).
    pub(crate) fn observe(&mut self, health: &HealthSnapshot) {
        if health.generation >= self.health.generation {
            self.health.clone_from(health);
        }
    }
}

/// A read-only look at one endpoint, for reports.
#[derive(Debug, Clone, Copy)]
pub struct EndpointView<'a> {
    /// The deployment's `name`.
    pub name: &'a str,
    /// Its health as last announced.
    pub health: &'a HealthSnapshot,
    /// Attempts in flight now.
    pub in_flight: usize,
    /// Attempts it may have in flight at once (`max_in_flight`).
    pub max_in_flight: usize,
    /// When its quota budget said it would next have room, as its latest refusal said; `None`
    /// once a reservation succeeded since. The instant may have passed: see
    /// [`EndpointView::waiting_for_quota_until`].
    pub quota_refused_until: Option<Instant>,
    /// Its counts.
    pub counters: &'a EndpointCounters,
    /// Whether its quota is shared with other processes, and how it is paced now (`None`:
    /// not shared).
    pub shared_quota: Option<QuotaSharing>,
}

/// How an endpoint whose quota is shared (`shared:`) is paced now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaSharing {
    /// Through Redis, with the other processes.
    Shared,
    /// Alone, on `1/expected_processes` of the quota: Redis cannot be reached.
    Local,
}

impl QuotaSharing {
    /// `shared` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaSharing::Shared => "shared",
            QuotaSharing::Local => "local",
        }
    }
}

impl EndpointView<'_> {
    /// When the endpoint's quota has room again, if it waits for quota at `now`: its budget
    /// refused an attempt (the latest reservation tried failed) and that room lies ahead.
    pub fn waiting_for_quota_until(&self, now: Instant) -> Option<Instant> {
        self.quota_refused_until.filter(|at| *at > now)
    }
}

/// What a finished attempt tells its endpoint's budget.
fn feedback_of(report: &AttemptReport) -> QuotaFeedback {
    QuotaFeedback {
        remaining_requests: report.rate_limits.remaining_requests,
        remaining_tokens: report.rate_limits.remaining_tokens,
        rate_limited_for: match &report.outcome {
            AttemptOutcome::RateLimited { wait, .. } => Some(*wait),
            _ => None,
        },
        wait_source: match &report.outcome {
            AttemptOutcome::RateLimited { source, .. } => Some(*source),
            _ => None,
        },
        used_tokens: report.usage().map(|u| u.total_tokens),
        call_time: Some(report.elapsed),
    }
}
