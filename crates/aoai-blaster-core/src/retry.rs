//! Whether a job that met an outcome is delivered, retried, or failed: decided in one place.
//!
//! Why one place: retries scattered over call sites multiply (a retry inside a retry is a retry
//! storm) and forget things, such as that a 429 is Azure asking us to wait rather than the job
//! failing, or that a job must not loop forever on an exhausted quota. Here the Dispatcher keeps a
//! [`JobHistory`] per job, records every attempt in it, and asks [`RetryPolicy::decide`] what to
//! do, for every way an attempt can end ([`Ending`]). The rules:
//!
//! - success is delivered; a job-fatal reply (400 content filter, context length, ...) fails the
//!   job at once with Azure's error;
//! - a transient failure or an endpoint-fatal reply is retried, preferably on another endpoint,
//!   while the job has counted attempts left: at most `1 + max_job_retry` of them;
//! - 429s, lost attempts (the endpoint's actor restarted mid-request) and declined ones (the
//!   endpoint was cooling when the attempt arrived) do not count; a request resent at once
//!   after a stale pooled connection ([`crate::stale`]) is one attempt, not two;
//! - a stream that fails after deltas reached the caller is not retried;
//! - `job_deadline`, when set, bounds a job's whole life, 429s included.
//!
//! When a job fails, its [`JobError`] lists what every attempt met, endpoint by endpoint.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aoai_blaster_core::classify::{AttemptOutcome, TransientKind};
//! use aoai_blaster_core::retry::{
//!     AttemptRecord, Decision, Ending, JobErrorKind, JobHistory, RetryPolicy,
//! };
//!
//! let policy = RetryPolicy { max_job_retry: 1, ..RetryPolicy::default() };
//! let t0 = Instant::now();
//! let mut history = JobHistory::new(t0);
//! let refused = AttemptOutcome::Transient(TransientKind::Connect("connection refused".into()));
//!
//! let ended = Ending::Outcome { outcome: &refused, deltas_delivered: 0 };
//!
//! history.record(AttemptRecord::from_outcome("east", &refused, Duration::from_millis(3)));
//! assert_eq!(policy.decide(&history, ended, t0), Decision::Retry { elsewhere: true });
//! history.record(AttemptRecord::from_outcome("west", &refused, Duration::from_millis(2)));
//! assert_eq!(policy.decide(&history, ended, t0), Decision::Fail(JobErrorKind::RetriesExhausted));
//!
//! let error = history.into_error(JobErrorKind::RetriesExhausted);
//! assert_eq!(
//!     error.to_string(),
//!     "retries exhausted (max_job_retry): attempt 1 on 'east': connection failed: connection refused; \
//!      attempt 2 on 'west': connection failed: connection refused"
//! );
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use crate::classify::{ApiError, AttemptOutcome, WaitSource};

/// How often and how long a job may be tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Counted attempts after the first (`max_job_retry`, default 5): a job makes at most
    /// `1 + max_job_retry` attempts that count. 429s and lost attempts do not count.
    pub max_job_retry: u32,
    /// The longest a job may live, from submission (`job_deadline`, default none).
    pub job_deadline: Option<Duration>,
    /// The longest a job keeps meeting 429s that name no wait (`max_wait`, default 5 min).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_job_retry: 5,
            job_deadline: None,
            max_wait: crate::config::DEFAULT_MAX_WAIT,
        }
    }
}

/// How an attempt ended, as far as the retry rules care: one value for every way.
#[derive(Clone, Copy, Debug)]
pub enum Ending<'a> {
    /// The endpoint sent the request and classified what came back.
    Outcome {
        /// What the attempt met.
        outcome: &'a AttemptOutcome,
        /// Stream deltas already delivered to the caller before it ended.
        deltas_delivered: u32,
    },
    /// The endpoint declined the attempt without sending it (it was cooling down or disabled
    /// when the attempt arrived): nothing happened, and nothing is recorded.
    Declined,
    /// No answer: the endpoint's actor stopped or restarted first (whether the request reached
    /// the service is unknown). Recorded, not counted.
    Lost,
}

/// What to do with a job after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The attempt succeeded: hand the result to the caller.
    Deliver,
    /// Queue the job again.
    Retry {
        /// Prefer another endpoint than the last attempt's, if any can take the job (a
        /// preference, not a ban: with a single endpoint, use it).
        elsewhere: bool,
    },
    /// Give up, with this error.
    Fail(JobErrorKind),
}

impl RetryPolicy {
    /// Decides what follows the job's latest attempt, however it ended.
    ///
    /// `history` must already hold that attempt when it has an outcome or was lost (call
    /// [`JobHistory::record`] first): the job's final error lists it too. `now` is checked
    /// against `job_deadline`; a success is delivered even when it arrives after the deadline.
    /// The rules, in order:
    /// - success is delivered;
    /// - a failure after stream deltas reached the caller fails the job (it holds part of a
    ///   reply), as does a job-fatal reply (Azure's error) and a passed deadline;
    /// - 429s that named no wait, met for `max_wait` in a row, fail it (`rate_limited`);
    /// - a failure that counts (transient, endpoint-fatal) beyond `max_job_retry` fails it;
    /// - anything else is retried: elsewhere after a reply, anywhere after a lost or declined
    ///   attempt.
    pub fn decide(&self, history: &JobHistory, ending: Ending<'_>, now: Instant) -> Decision {
        let (kind, deltas_delivered) = match ending {
            Ending::Outcome {
                outcome,
                deltas_delivered,
            } => (AttemptKind::of(outcome), deltas_delivered),
            Ending::Lost => (AttemptKind::Lost, 0),
            Ending::Declined => {
                return if self.deadline_passed(history, now) {
                    Decision::Fail(JobErrorKind::DeadlineExceeded)
                } else {
                    Decision::Retry { elsewhere: false }
                };
            }
        };
        debug_assert_eq!(
            history.attempts.last().map(|a| a.kind),
            Some(kind),
            "record the attempt in the history before deciding"
        );
        if kind == AttemptKind::Success {
            return Decision::Deliver;
        }
        if deltas_delivered > 0 {
            return Decision::Fail(JobErrorKind::StreamInterrupted { deltas_delivered });
        }
        if let Ending::Outcome {
            outcome: AttemptOutcome::JobFatal(error),
            ..
        } = ending
        {
            return Decision::Fail(JobErrorKind::Rejected(error.clone()));
        }
        if let Ending::Outcome {
            outcome: AttemptOutcome::ReplyTooLarge { limit },
            ..
        } = ending
        {
            return Decision::Fail(JobErrorKind::ReplyTooLarge { limit: *limit });
        }
        if self.deadline_passed(history, now) {
            Decision::Fail(JobErrorKind::DeadlineExceeded)
        } else if kind == AttemptKind::RateLimited
            && history
                .rate_limited_since
                .is_some_and(|since| now.saturating_duration_since(since) >= self.max_wait)
        {
            Decision::Fail(JobErrorKind::RateLimited {
                max_wait: self.max_wait,
            })
        } else if kind.counts_against_retries() && history.counted_failures() > self.max_job_retry {
            Decision::Fail(JobErrorKind::RetriesExhausted)
        } else {
            Decision::Retry {
                elsewhere: kind != AttemptKind::Lost,
            }
        }
    }

    /// True when `now - started >= job_deadline`.
    pub fn deadline_passed(&self, history: &JobHistory, now: Instant) -> bool {
        self.job_deadline
            .is_some_and(|deadline| now.saturating_duration_since(history.started) >= deadline)
    }
}

/// What kind of outcome an attempt had (the part of it the retry rules need).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// A 2xx reply.
    Success,
    /// A 429 (does not count against `max_job_retry`).
    RateLimited,
    /// Timeout, connection failure, 408/5xx, unreadable reply, cut stream.
    Transient,
    /// The job was refused (4xx other than 401/403/404/429).
    JobFatal,
    /// The endpoint cannot serve (401/403/404).
    EndpointFatal,
    /// No outcome: the endpoint's actor stopped or restarted first (does not count).
    Lost,
}

impl AttemptKind {
    /// The kind of an outcome.
    pub fn of(outcome: &AttemptOutcome) -> AttemptKind {
        match outcome {
            AttemptOutcome::Success => AttemptKind::Success,
            AttemptOutcome::RateLimited { .. } => AttemptKind::RateLimited,
            AttemptOutcome::Transient(_) => AttemptKind::Transient,
            AttemptOutcome::JobFatal(_) | AttemptOutcome::ReplyTooLarge { .. } => {
                AttemptKind::JobFatal
            }
            AttemptOutcome::EndpointFatal { .. } => AttemptKind::EndpointFatal,
        }
    }

    /// True for the kinds that count against `max_job_retry`.
    pub fn counts_against_retries(self) -> bool {
        matches!(
            self,
            AttemptKind::Transient | AttemptKind::JobFatal | AttemptKind::EndpointFatal
        )
    }
}

/// One attempt of a job, as its history and its final error show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The endpoint's name (its label in the config).
    pub endpoint: String,
    /// What happened, in a line: `HTTP 503 ServiceUnavailable: ...`, `timeout after 2m`,
    /// `rate limited, retry after 7s (error message): ...`, `lost: ...`.
    pub outcome: String,
    /// The kind of outcome.
    pub kind: AttemptKind,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// The HTTP error reply, when the attempt got one (for a batch line's `response`).
    pub reply: Option<ApiError>,
    /// Azure's request id of the reply (`apim-request-id` / `x-request-id`), when one came.
    pub request_id: Option<String>,
}

impl AttemptRecord {
    /// The record of an attempt on `endpoint` that had `outcome` and took `elapsed`.
    pub fn from_outcome(
        endpoint: impl Into<String>,
        outcome: &AttemptOutcome,
        elapsed: Duration,
    ) -> Self {
        AttemptRecord {
            endpoint: endpoint.into(),
            outcome: outcome.to_string(),
            kind: AttemptKind::of(outcome),
            elapsed,
            reply: outcome.api_error().cloned(),
            request_id: None,
        }
    }

    /// The same record, naming Azure's request id of the reply.
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The record of an attempt lost because the endpoint's actor stopped or restarted.
    pub fn lost(endpoint: impl Into<String>, elapsed: Duration) -> Self {
        AttemptRecord {
            endpoint: endpoint.into(),
            outcome: "lost: the endpoint's actor restarted before answering".to_owned(),
            kind: AttemptKind::Lost,
            elapsed,
            reply: None,
            request_id: None,
        }
    }
}

/// Every attempt of one job so far, and when the job started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobHistory {
    /// When the job was submitted (the origin of `job_deadline`).
    pub started: Instant,
    /// The attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// When the current unbroken run of 429s that named no wait began (`None`: the last
    /// attempt was something else). Kept by [`JobHistory::record_at`].
    pub rate_limited_since: Option<Instant>,
}

impl JobHistory {
    /// An empty history for a job submitted at `started`.
    pub fn new(started: Instant) -> Self {
        JobHistory {
            started,
            attempts: Vec::new(),
            rate_limited_since: None,
        }
    }

    /// Appends an attempt ([`AttemptRecord::from_outcome`] or [`AttemptRecord::lost`]).
    pub fn record(&mut self, attempt: AttemptRecord) {
        self.attempts.push(attempt);
    }

    /// Appends the attempt that ended with `outcome` at `now`, and keeps the run of 429s that
    /// named no wait (`max_wait` bounds it: without a wait from the server, nothing says the
    /// quota will ever come back).
    pub fn record_at(&mut self, now: Instant, attempt: AttemptRecord, outcome: &AttemptOutcome) {
        let unnamed_wait = matches!(
            outcome,
            AttemptOutcome::RateLimited {
                source: WaitSource::Fallback,
                ..
            }
        );
        self.rate_limited_since = if unnamed_wait {
            Some(self.rate_limited_since.unwrap_or(now))
        } else {
            None
        };
        self.record(attempt);
    }

    /// Attempts that count against `max_job_retry` (all failures but 429s and lost attempts).
    pub fn counted_failures(&self) -> u32 {
        let count = self
            .attempts
            .iter()
            .filter(|a| a.kind.counts_against_retries())
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The job's final error, carrying this history's attempts.
    pub fn into_error(self, kind: JobErrorKind) -> JobError {
        JobError {
            kind,
            attempts: self.attempts,
        }
    }
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobErrorKind {
    /// Azure refused the job itself (400 content filter, context length, ...): not retried.
    Rejected(ApiError),
    /// The reply was larger than `max_reply_bytes`: not retried (another attempt would get as
    /// large a reply).
    ReplyTooLarge {
        /// The `max_reply_bytes` in force, in bytes.
        limit: u64,
    },
    /// Every counted attempt failed (`1 + max_job_retry` of them).
    RetriesExhausted,
    /// Every endpoint is disabled (see each endpoint's reason in the report).
    AllEndpointsDisabled,
    /// Every endpoint rejected the requests for a reason no wait can cure (credentials,
    /// deployment not found): the config needs a fix. Queued jobs fail at once with it.
    EndpointsRejected {
        /// Each endpoint's reason, with the fix, `; `-separated.
        reasons: String,
    },
    /// No endpoint that may serve the job could take it within `max_wait` (each cooling or
    /// disabled for longer).
    NoEndpointAvailable {
        /// The `max_wait` that applied.
        max_wait: Duration,
        /// Each eligible endpoint's state and for how long, `; `-separated.
        endpoints: String,
    },
    /// The job met only 429s that named no wait for `max_wait`: the last one is its reply.
    RateLimited {
        /// The `max_wait` that applied.
        max_wait: Duration,
    },
    /// The job outlived `job_deadline`.
    DeadlineExceeded,
    /// The job's estimated cost is more than any endpoint's whole per-minute token budget.
    NeverFits {
        /// The job's estimated tokens.
        tokens: u64,
        /// The largest `tpm_limit` among the endpoints.
        largest_capacity: u64,
    },
    /// A stream failed after some of its deltas had reached the caller: not retried, since the
    /// caller already holds part of a reply.
    StreamInterrupted {
        /// Deltas delivered before the failure.
        deltas_delivered: u32,
    },
    /// The job asked for a deployment by a name no endpoint has.
    UnknownDeployment {
        /// The name asked for.
        name: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// No deployment the job may run on takes its operation (see each deployment's
    /// `operations`).
    UnsupportedOperation {
        /// The job's operation.
        operation: crate::operation::Operation,
        /// What the deployments it may run on take, e.g. `'east': chat; 'west': chat, embeddings`.
        offered: String,
    },
    /// The caller cancelled the job.
    Cancelled,
    /// The blaster stopped taking jobs (it is closing).
    QueueClosed,
}

impl JobErrorKind {
    /// A stable machine code, for a batch line's `error.code` and for metrics:
    /// `rejected`, `reply_too_large`, `retries_exhausted`, `all_endpoints_disabled`,
    /// `no_endpoint_available`, `rate_limited`, `deadline_exceeded`,
    /// `never_fits`, `stream_interrupted`, `unknown_deployment`, `unsupported_operation`,
    /// `cancelled`, `queue_closed`.
    pub fn code(&self) -> &'static str {
        match self {
            JobErrorKind::Rejected(_) => "rejected",
            JobErrorKind::ReplyTooLarge { .. } => "reply_too_large",
            JobErrorKind::RetriesExhausted => "retries_exhausted",
            JobErrorKind::AllEndpointsDisabled => "all_endpoints_disabled",
            JobErrorKind::EndpointsRejected { .. } => "endpoints_rejected",
            JobErrorKind::NoEndpointAvailable { .. } => "no_endpoint_available",
            JobErrorKind::RateLimited { .. } => "rate_limited",
            JobErrorKind::DeadlineExceeded => "deadline_exceeded",
            JobErrorKind::NeverFits { .. } => "never_fits",
            JobErrorKind::StreamInterrupted { .. } => "stream_interrupted",
            JobErrorKind::UnknownDeployment { .. } => "unknown_deployment",
            JobErrorKind::UnsupportedOperation { .. } => "unsupported_operation",
            JobErrorKind::Cancelled => "cancelled",
            JobErrorKind::QueueClosed => "queue_closed",
        }
    }
}

impl fmt::Display for JobErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobErrorKind::Rejected(error) => write!(f, "rejected: {error}"),
            JobErrorKind::ReplyTooLarge { limit } => write!(
                f,
                "reply larger than max_reply_bytes ({})",
                crate::classify::format_bytes(*limit)
            ),
            JobErrorKind::RetriesExhausted => f.write_str("retries exhausted (max_job_retry)"),
            JobErrorKind::AllEndpointsDisabled => {
                f.write_str("every endpoint is disabled (see the report for each reason)")
            }
            JobErrorKind::EndpointsRejected { reasons } => write!(
                f,
                "every endpoint rejects the requests; fix the config and run again: {reasons}"
            ),
            JobErrorKind::NoEndpointAvailable {
                max_wait,
                endpoints,
            } => write!(
                f,
                "no endpoint can take the job within max_wait ({}): {endpoints}",
                humantime::format_duration(*max_wait)
            ),
            JobErrorKind::RateLimited { max_wait } => write!(
                f,
                "rate limited: only 429s naming no wait for max_wait ({}); the quota may be \
                 spent for the day, see the last reply",
                humantime::format_duration(*max_wait)
            ),
            JobErrorKind::DeadlineExceeded => f.write_str("job_deadline exceeded"),
            JobErrorKind::NeverFits {
                tokens,
                largest_capacity,
            } => write!(
                f,
                "never fits: the job needs an estimated {tokens} tokens, more than the largest \
                 tpm_limit ({largest_capacity}); shorten the prompt or lower max_tokens"
            ),
            JobErrorKind::StreamInterrupted { deltas_delivered } => write!(
                f,
                "stream interrupted after {deltas_delivered} deltas reached the caller (not \
                 retried: the caller already holds part of the reply)"
            ),
            JobErrorKind::UnknownDeployment { name, known } => {
                write!(f, "no deployment named '{name}' (known: {known})")
            }
            JobErrorKind::UnsupportedOperation { operation, offered } => {
                write!(
                    f,
                    "no deployment this job may run on takes {operation} jobs ({offered}); add {operation} to a deployment's `operations`"
                )?;
                if *operation == crate::operation::Operation::Responses {
                    f.write_str(" (with api_version: v1: the Responses API exists only there)")?;
                }
                Ok(())
            }
            JobErrorKind::Cancelled => f.write_str("cancelled"),
            JobErrorKind::QueueClosed => f.write_str("the blaster is closing and takes no jobs"),
        }
    }
}

/// A job's final error: why it failed and what each attempt met.
///
/// Its `Display` is one line: the kind, then `attempt 1 on 'east': timeout after 2m; attempt 2
/// on 'west': HTTP 503 ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}", AttemptList(attempts))]
pub struct JobError {
    /// Why the job failed.
    pub kind: JobErrorKind,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

impl JobError {
    /// An error of `kind` with these attempts.
    pub fn new(kind: JobErrorKind, attempts: Vec<AttemptRecord>) -> Self {
        JobError { kind, attempts }
    }

    /// The final HTTP error reply: Azure's refusal for [`JobErrorKind::Rejected`], otherwise the
    /// reply the last attempt got, if it got one (a 5xx, 429, 401...). `None` when the job ended
    /// without a reply (timeouts, refused connections, no attempt at all): a batch line then
    /// carries `error` instead of `response`.
    pub fn reply(&self) -> Option<&ApiError> {
        match &self.kind {
            JobErrorKind::Rejected(error) => Some(error),
            _ => self.attempts.last().and_then(|a| a.reply.as_ref()),
        }
    }

    /// The HTTP status of [`reply`](Self::reply).
    pub fn status(&self) -> Option<u16> {
        self.reply().map(|error| error.status)
    }

    /// Our stable code for the failure ([`JobErrorKind::code`]); Azure's own code, when there
    /// was a reply, is in [`reply`](Self::reply).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

struct AttemptList<'a>(&'a [AttemptRecord]);

impl fmt::Display for AttemptList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, attempt) in self.0.iter().enumerate() {
            let separator = if index == 0 { ": " } else { "; " };
            write!(
                f,
                "{separator}attempt {} on '{}': {}",
                index + 1,
                attempt.endpoint,
                attempt.outcome
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
