//! How an attempt ends (what its endpoint reports) and what a delivered job carries.

use std::time::Duration;

use crate::chat::{ChatCompletion, Usage};
use crate::classify::{AttemptOutcome, RateLimitHeaders, TransientKind};
use crate::health::HealthSnapshot;
use crate::operation::{Reply, TokenCounts};
use crate::retry::{AttemptRecord, Ending, JobError, JobErrorKind};

/// How one attempt ended: exactly one per attempt sent.
#[derive(Debug, Clone)]
pub enum AttemptEnd {
    /// The endpoint sent the request and classified what came back.
    Finished(Box<AttemptReport>),
    /// The endpoint declined the attempt without sending it (it was cooling down or disabled
    /// when the attempt arrived); `health` is its state then.
    Declined {
        /// The endpoint's health when it declined.
        health: HealthSnapshot,
    },
    /// No answer: the endpoint's actor stopped or restarted with the attempt in flight.
    Lost,
}

/// What one sent attempt met, and the endpoint's health after it.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// What happened, classified.
    pub outcome: AttemptOutcome,
    /// The reply (a completion, embeddings, a response), on success.
    pub reply: Option<Reply>,
    /// HTTP status, when a reply arrived.
    pub status: Option<u16>,
    /// Azure's request id, when a reply arrived.
    pub request_id: Option<String>,
    /// `x-ratelimit-remaining-*` as the reply stated them.
    pub rate_limits: RateLimitHeaders,
    /// Duration of the HTTP call.
    pub elapsed: Duration,
    /// The server's own processing time, when the reply stated it (`x-sim-processing-us`,
    /// `openai-processing-ms`): `elapsed` minus this is the client and network's share.
    pub server_time: Option<Duration>,
    /// Deltas already delivered to the caller (a failure after the first is not retried).
    pub deltas_delivered: u32,
    /// Times the request was resent at once on a fresh connection because a pooled one the
    /// server had closed failed it before any reply byte ([`crate::stale`]); the outcome is
    /// the resend's.
    pub stale_retries: u32,
    /// The endpoint's health after this attempt.
    pub health: HealthSnapshot,
}

impl AttemptReport {
    /// The usage the reply reported, on success.
    pub fn usage(&self) -> Option<TokenCounts> {
        self.reply.as_ref().and_then(Reply::usage)
    }

    pub(crate) fn ending(&self) -> Ending<'_> {
        Ending::Outcome {
            outcome: &self.outcome,
            deltas_delivered: self.deltas_delivered,
        }
    }
}

/// A finished job: its reply plus where and how it was obtained. A job of any operation
/// answers a `JobResult` (its [`Reply`]); a chat job a [`ChatResult`] (its completion).
#[derive(Debug, Clone)]
pub struct JobResult<R = Reply> {
    /// The reply as Azure returned it (assembled, for streams), unknown fields kept.
    pub reply: R,
    /// Name of the deployment that answered.
    pub endpoint: String,
    /// Every attempt the job made, the last one being the success.
    pub attempts: Vec<AttemptRecord>,
    /// Azure's request id of the answering call (`apim-request-id` / `x-request-id`).
    pub request_id: Option<String>,
    /// Time spent waiting in the queue and between attempts.
    pub queued_for: Duration,
    /// Duration of the successful HTTP call.
    pub upstream_time: Duration,
    /// The answering server's own processing time, when its reply stated it
    /// (`openai-processing-ms`, or the simulator's `x-sim-processing-us`).
    pub server_time: Option<Duration>,
    /// From submission to result.
    pub total_time: Duration,
}

/// A finished chat job: the whole completion (`reply`) plus where and how it was obtained.
pub type ChatResult = JobResult<ChatCompletion>;

impl JobResult {
    /// The generated text (a chat completion's first choice, a response's output text).
    pub fn text(&self) -> Option<&str> {
        self.reply.text()
    }

    /// Token usage as reported by the service.
    pub fn usage(&self) -> Option<TokenCounts> {
        self.reply.usage()
    }

    /// The result of a chat job as a [`ChatResult`]; a result of another operation is given
    /// back unchanged.
    pub fn into_chat(self) -> Result<ChatResult, Box<JobResult>> {
        match self.reply {
            Reply::Chat(completion) => Ok(JobResult {
                reply: completion,
                endpoint: self.endpoint,
                attempts: self.attempts,
                request_id: self.request_id,
                queued_for: self.queued_for,
                upstream_time: self.upstream_time,
                server_time: self.server_time,
                total_time: self.total_time,
            }),
            reply => Err(Box::new(JobResult { reply, ..self })),
        }
    }
}

impl ChatResult {
    /// The first choice's text, if any.
    pub fn text(&self) -> Option<&str> {
        self.reply.text()
    }

    /// Token usage as reported by the service.
    pub fn usage(&self) -> Option<&Usage> {
        self.reply.usage.as_ref()
    }
}

/// What a job's caller receives: the [`JobResult`] itself, or for a chat job its
/// [`ChatResult`].
pub trait JobOutput: Sized {
    /// The caller's form of `result`.
    fn from_result(result: JobResult) -> Result<Self, JobError>;
}

impl JobOutput for JobResult {
    fn from_result(result: JobResult) -> Result<Self, JobError> {
        Ok(result)
    }
}

impl JobOutput for ChatResult {
    /// A chat job always gets a chat reply (the endpoint reads the reply of the job's own
    /// operation); anything else fails the job rather than panic.
    fn from_result(result: JobResult) -> Result<Self, JobError> {
        result.into_chat().map_err(|other| {
            let kind = JobErrorKind::UnsupportedOperation {
                operation: other.reply.operation(),
                offered: "a chat job cannot take this reply".to_owned(),
            };
            JobError::new(kind, other.attempts)
        })
    }
}

/// Running counts of one endpoint, kept by the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Requests resent at once on a fresh connection after a pooled connection the server had
    /// closed failed them before any reply byte (not failures: see [`crate::stale`]).
    pub stale_retries: u64,
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
                if let Some(usage) = report.usage() {
                    self.prompt_tokens += usage.prompt_tokens;
                    self.completion_tokens += usage.completion_tokens;
                }
            }
            AttemptOutcome::RateLimited { .. } => self.rate_limited += 1,
            AttemptOutcome::Transient(TransientKind::Timeout(_)) => self.timeouts += 1,
            _ => self.errors += 1,
        }
        self.stale_retries += u64::from(report.stale_retries);
        if report.status.is_some() {
            self.latency_total += report.elapsed;
            self.latency_count += 1;
        }
    }

    /// Mean duration of answered attempts.
    pub fn mean_latency(&self) -> Option<Duration> {
        (self.latency_count > 0)
            .then(|| self.latency_total / u32::try_from(self.latency_count).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::EmbeddingsReply;

    fn result(reply: Reply) -> JobResult {
        JobResult {
            reply,
            endpoint: "east".into(),
            attempts: Vec::new(),
            request_id: Some("req-7".into()),
            queued_for: Duration::from_millis(3),
            upstream_time: Duration::from_millis(20),
            server_time: Some(Duration::from_millis(15)),
            total_time: Duration::from_millis(25),
        }
    }

    #[test]
    fn into_chat_keeps_every_field_and_gives_other_replies_back_whole() {
        let completion: ChatCompletion = serde_json::from_str(
            r#"{"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hello"}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}"#,
        )
        .unwrap();
        let chat = result(Reply::Chat(completion)).into_chat().unwrap();
        assert_eq!(chat.text(), Some("hello"));
        assert_eq!(chat.usage().map(|u| u.completion_tokens), Some(2));
        assert_eq!(
            (chat.endpoint.as_str(), chat.request_id.as_deref()),
            ("east", Some("req-7"))
        );
        assert_eq!(
            (chat.queued_for, chat.upstream_time, chat.total_time),
            (
                Duration::from_millis(3),
                Duration::from_millis(20),
                Duration::from_millis(25)
            )
        );
        assert_eq!(chat.server_time, Some(Duration::from_millis(15)));

        let embeddings: EmbeddingsReply = serde_json::from_str(
            r#"{"object": "list", "data": [], "model": "embed",
                "usage": {"prompt_tokens": 4, "total_tokens": 4}}"#,
        )
        .unwrap();
        let other = result(Reply::Embeddings(embeddings.clone()))
            .into_chat()
            .unwrap_err();
        assert!(matches!(&other.reply, Reply::Embeddings(e) if *e == embeddings));
        assert_eq!(
            (other.endpoint.as_str(), other.total_time),
            ("east", Duration::from_millis(25))
        );
    }
}
