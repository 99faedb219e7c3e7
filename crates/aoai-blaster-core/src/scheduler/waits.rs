//! How long jobs may wait: `job_deadline` (also for jobs in flight, whose abandoned attempts
//! are still accounted when they end), and what the errors of jobs that cannot be served say.

use std::time::{Duration, Instant};

use super::endpoint::Endpoint;
use super::{AttemptEnd, Effect, InFlight, JobId, Payload, Pin, Scheduler, allowed};
use crate::health::{Availability, HealthState};
use crate::operation::Operation;
use crate::retry::JobErrorKind;

/// The endpoints a job may run on: its pin, if any, among those that take its operation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scope {
    pub(super) pin: Option<Pin>,
    pub(super) operation: Option<Operation>,
}

impl Scope {
    /// Every endpoint.
    pub(super) const ALL: Scope = Scope {
        pin: None,
        operation: None,
    };

    /// Whether the endpoint at `index` may take the job.
    pub(super) fn allows(self, index: usize, endpoint: &Endpoint) -> bool {
        allowed(self.pin, endpoint, index)
            && self
                .operation
                .is_none_or(|op| endpoint.operations.contains(op))
    }
}

impl<P: Payload> Scheduler<P> {
    /// True when every endpoint a job of `scope` may use is cooling after a 429.
    pub(super) fn only_rate_limited(&self, scope: Scope) -> bool {
        self.endpoints.iter().enumerate().all(|(index, endpoint)| {
            !scope.allows(index, endpoint)
                || matches!(
                    endpoint.health.state,
                    HealthState::Cooling {
                        cause: crate::health::CoolingCause::RateLimited,
                        ..
                    }
                )
        })
    }

    /// `Some(reasons)` when every endpoint a job of `scope` may use is disabled for a reason no
    /// wait can cure (credentials, deployment not found).
    pub(super) fn rejections(&self, scope: Scope) -> Option<String> {
        let mut reasons = Vec::new();
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            if !scope.allows(index, endpoint) {
                continue;
            }
            match &endpoint.health.state {
                HealthState::Disabled { reason, cause, .. } if !cause.curable_by_waiting() => {
                    reasons.push(format!("{}: {reason}", endpoint.name));
                }
                _ => return None,
            }
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// Each endpoint a job of `scope` may use, with its state and for how long, for an error.
    pub(super) fn describe_unavailable(&self, scope: Scope, now: Instant) -> String {
        let mut parts = Vec::new();
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            if !scope.allows(index, endpoint) {
                continue;
            }
            let state = &endpoint.health.state;
            let part = match state.availability(now) {
                Availability::At(at) => {
                    let left = at.saturating_duration_since(now);
                    // Whole seconds: sub-second precision only clutters a message.
                    let left = Duration::from_secs(left.as_secs().max(1));
                    format!(
                        "{} {state} for another {}",
                        endpoint.name,
                        humantime::format_duration(left)
                    )
                }
                _ => format!("{} {state}", endpoint.name),
            };
            parts.push(part);
        }
        parts.join("; ")
    }

    /// Why a job of `operation` (pinned to `pin`, if set) cannot run: no endpoint it may use
    /// takes its operation. `None` when one does.
    pub(super) fn unsupported(
        &self,
        operation: Operation,
        pin: Option<Pin>,
    ) -> Option<JobErrorKind> {
        let scope = Scope {
            pin,
            operation: Some(operation),
        };
        if (0..self.endpoints.len()).any(|i| scope.allows(i, &self.endpoints[i])) {
            return None;
        }
        let offered: Vec<String> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(index, endpoint)| allowed(pin, endpoint, *index))
            .map(|(_, endpoint)| {
                let ops: Vec<&str> = endpoint.operations.iter().map(Operation::name).collect();
                format!("'{}' takes {}", endpoint.name, ops.join(", "))
            })
            .collect();
        Some(JobErrorKind::UnsupportedOperation {
            operation,
            offered: offered.join("; "),
        })
    }

    /// Settles the charge of an attempt whose job already ended, and counts what it met.
    pub(super) fn settle_orphan(&mut self, now: Instant, attempt: InFlight, end: AttemptEnd) {
        self.endpoints[attempt.endpoint].account(now, attempt.reservation, &end);
    }

    /// Fails every held job whose deadline has come, queued or in flight (an attempt in
    /// flight is abandoned: its end is still accounted when it comes); returns the next
    /// deadline.
    pub(super) fn expire(&mut self, now: Instant, effects: &mut Vec<Effect<P>>) -> Option<Instant> {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                return Some(at);
            }
            self.deadlines.pop_first();
            if let Some(attempt) = self.jobs.get_mut(&id).and_then(|j| j.in_flight.take()) {
                self.orphans.insert((id, attempt.number), attempt);
            }
            self.fail(now, id, JobErrorKind::DeadlineExceeded, effects);
        }
        None
    }

    /// When job `id`'s `job_deadline` falls, if it has one.
    pub(super) fn deadline_of(&self, id: JobId) -> Option<Instant> {
        let job = self.jobs.get(&id)?;
        job.history.started.checked_add(job.retry.job_deadline?)
    }
}
