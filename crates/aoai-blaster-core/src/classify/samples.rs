//! Outcomes the tests of several modules (health, retry, the scheduler) meet, built once.

use std::time::Duration;

use super::{ApiError, AttemptOutcome, TransientKind, WaitSource};

/// No reply within a 120 s `request_timeout`.
pub(crate) fn timeout() -> AttemptOutcome {
    AttemptOutcome::Transient(TransientKind::timeout_after(Duration::from_secs(120)))
}

/// A 429 whose `Retry-After` asks for `wait`.
pub(crate) fn rate_limited(wait: Duration) -> AttemptOutcome {
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

/// A 401: the deployment's key is wrong, so the endpoint must stop taking jobs.
pub(crate) fn unauthorized() -> AttemptOutcome {
    AttemptOutcome::EndpointFatal {
        reason: "credentials rejected (HTTP 401): check api_key for this deployment".into(),
        error: ApiError {
            status: 401,
            code: Some("401".into()),
            message: "Access denied".into(),
        },
    }
}
