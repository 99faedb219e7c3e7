//! Every message the actors exchange, as plain documented types.
//!
//! Callers talk to the [`Dispatcher`](crate::Dispatcher) with [`Job`] or [`ChatJob`], [`Subscribe`],
//! [`GetReport`], [`GetRedisUse`], [`Close`] and [`RestartEndpoint`]. The Dispatcher talks to each
//! endpoint actors with `Attempt`; each answers with one `AttemptDone` (how the attempt ended:
//! finished with a report, declined, or lost to a restart). Endpoints announce health changes
//! with [`HealthReport`], which the Dispatcher folds into its admission state and forwards to
//! every subscriber.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

use actix::prelude::*;
use aoai_blaster_core::chat::{ChatCompletionChunk, ChatRequest};
pub use aoai_blaster_core::health::HealthSnapshot;
use aoai_blaster_core::health::HealthState;
use aoai_blaster_core::operation::JobRequest;
use aoai_blaster_core::retry::JobError;
use aoai_blaster_core::scheduler::AttemptEnd;
pub use aoai_blaster_core::scheduler::{ChatResult, JobResult};
use aoai_blaster_core::sse::SseEvent;

use crate::report::EndpointReport;

/// One job to run, the caller's unit of work: a request and how to run it.
///
/// `Job` (a [`JobRequest`] of any operation: chat, embeddings, responses) answers with a
/// [`JobResult`]; [`ChatJob`] (a `Job<ChatRequest>`) answers with a [`ChatResult`]. Both go
/// through the same queue, pacing and retries.
///
/// Send it to the Dispatcher and await the result:
/// `dispatcher.send(ChatJob::new(request)).await??` gives a [`ChatResult`],
/// `dispatcher.send(Job::from_request(EmbeddingsRequest::new("text"))).await??` a [`JobResult`].
///
/// Dropping the future of `send` (or a [`JobHandle`](crate::JobHandle)) before the job has
/// been sent cancels it: no request goes out. A job in flight may still finish.
#[derive(Clone)]
pub struct Job<R = JobRequest> {
    /// The request: the messages or input, and per-job options (they override the deployment's
    /// defaults).
    pub request: R,
    /// Ask for a streamed reply (chat and responses; embeddings are never streamed). Without
    /// [`Job::deltas`] the stream is assembled into the same result a non-streamed call gives.
    pub stream: bool,
    /// Receives each delta as it arrives (implies `stream`). An attempt is retried only if it
    /// failed before its first delta was delivered here.
    pub deltas: Option<Recipient<StreamDelta>>,
    /// Run only on the deployment with this `name` or, failing that, on any deployment of this
    /// `model`, if set.
    pub pin: Option<String>,
    /// A label for logs and traces (for example the batch line's `custom_id`).
    pub label: Option<String>,
    /// This job's `max_wait` (how long it may wait with no endpoint able to take it), instead
    /// of the configured one.
    pub max_wait: Option<std::time::Duration>,
    /// Keep a plain reply as the server's bytes ([`Reply::Raw`](aoai_blaster_core::operation::Reply::Raw)),
    /// reading only its usage: for callers that pass the reply on unchanged. Not for a
    /// [`ChatJob`], whose answer is a typed [`ChatResult`]. A stream is still assembled; on a
    /// Responses stream with [`Job::deltas`] every upstream event is delivered as it came
    /// ([`StreamDelta::event`]).
    pub raw_reply: bool,
}

/// One chat completion to run (see [`Job`]): answers with a [`ChatResult`].
pub type ChatJob = Job<ChatRequest>;

impl Message for Job<ChatRequest> {
    type Result = Result<ChatResult, JobError>;
}

impl Message for Job<JobRequest> {
    type Result = Result<JobResult, JobError>;
}

impl<R> fmt::Debug for Job<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("stream", &self.stream)
            .field("incremental", &self.deltas.is_some())
            .field("pin", &self.pin)
            .field("label", &self.label)
            .field("max_wait", &self.max_wait)
            .field("raw_reply", &self.raw_reply)
            .finish_non_exhaustive()
    }
}

impl<R> Job<R> {
    /// A non-streamed job for `request`.
    pub fn new(request: R) -> Self {
        Self {
            request,
            stream: false,
            deltas: None,
            pin: None,
            label: None,
            max_wait: None,
            raw_reply: false,
        }
    }

    /// Stream the reply and assemble it (same result as non-streamed).
    pub fn streamed(mut self) -> Self {
        self.stream = true;
        self
    }

    /// Stream the reply and deliver each delta to `recipient` as it arrives.
    pub fn with_deltas(mut self, recipient: Recipient<StreamDelta>) -> Self {
        self.stream = true;
        self.deltas = Some(recipient);
        self
    }

    /// Run only on the named deployment.
    pub fn pinned_to(mut self, deployment: impl Into<String>) -> Self {
        self.pin = Some(deployment.into());
        self
    }

    /// Bound this job's wait for an endpoint able to take it (see `max_wait` in the config).
    pub fn max_wait(mut self, max_wait: std::time::Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Label the job for logs (for example with a batch `custom_id`).
    pub fn labelled(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

impl Job<JobRequest> {
    /// A non-streamed job for a request of any operation (`ChatRequest`, `EmbeddingsRequest`,
    /// `ResponsesRequest`).
    pub fn from_request(request: impl Into<JobRequest>) -> Self {
        Job::new(request.into())
    }

    /// Keep the plain reply as the server's bytes (see [`Job::raw_reply`]).
    pub fn with_raw_reply(mut self) -> Self {
        self.raw_reply = true;
        self
    }
}

impl<R: Into<JobRequest>> Job<R> {
    /// The same job with its request as a [`JobRequest`].
    pub fn into_job(self) -> Job<JobRequest> {
        Job {
            request: self.request.into(),
            stream: self.stream,
            deltas: self.deltas,
            pin: self.pin,
            label: self.label,
            max_wait: self.max_wait,
            raw_reply: self.raw_reply,
        }
    }
}

/// A [`Job`] submitted through [`Blaster::submit`](crate::Blaster::submit), with the gate
/// its [`JobHandle`](crate::JobHandle) shares with the Dispatcher.
#[derive(Message)]
#[rtype(result = "Result<JobResult, JobError>")]
pub(crate) struct TrackedJob {
    pub(crate) job: Job<JobRequest>,
    pub(crate) gate: SendGate,
}

/// Whether a job's first request went out, shared by its handle and the Dispatcher: the one
/// that moves it first from "not sent" wins, so a job cancelled through
/// [`SendGate::cancel_unsent`] never sends a request, and one marked sent cannot be cancelled
/// that way. One atomic per job.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendGate(Arc<AtomicU8>);

const NOT_SENT: u8 = 0;
const SENT: u8 = 1;
const CANCELLED: u8 = 2;

impl SendGate {
    /// Before an attempt goes out: true when it may (the job was not cancelled unsent).
    pub(crate) fn mark_sent(&self) -> bool {
        match self
            .0
            .compare_exchange(NOT_SENT, SENT, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == SENT,
        }
    }

    /// Cancels the job if no request of it went out yet; true when it did so.
    pub(crate) fn cancel_unsent(&self) -> bool {
        self.0
            .compare_exchange(NOT_SENT, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// A request of the job went out.
    pub(crate) fn is_sent(&self) -> bool {
        self.0.load(Ordering::Acquire) == SENT
    }

    /// The job was cancelled before any request went out.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire) == CANCELLED
    }
}

/// One streamed delta, delivered to the job's [`Job::deltas`] recipient. A Responses stream's
/// `response.output_text.delta` arrives as a chunk with one choice (index: the output item's)
/// whose delta holds the text, and `"type": "response.output_text.delta"` among its fields.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct StreamDelta {
    /// The job's label, if it had one.
    pub label: Option<String>,
    /// Which choice this delta extends.
    pub choice: u32,
    /// The text this delta adds (empty for role-only or tool-call deltas).
    pub content: String,
    /// The whole chunk, for tool calls and other fields.
    pub chunk: Arc<ChatCompletionChunk>,
    /// With [`Job::raw_reply`] on a Responses stream: the upstream event as it came (its
    /// `event:` name and `data:` text). Every event but a failure's is delivered then, text or
    /// not (a chunk with empty text for the others), so a caller can pass the stream on.
    pub event: Option<Arc<SseEvent>>,
}

/// Dispatcher → EndpointActor: send this job's request once. The endpoint answers with one
/// [`AttemptDone`], sent to the recipient it was started with.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub(crate) struct Attempt {
    /// The Dispatcher's id for the job.
    pub(crate) job: u64,
    /// 1 for the first attempt, then 2, 3, ...
    pub(crate) number: u32,
    /// The request, shared between attempts.
    pub(crate) request: Arc<JobRequest>,
    /// Ask for a stream.
    pub(crate) stream: bool,
    /// Where deltas go, for incremental streams.
    pub(crate) deltas: Option<Recipient<StreamDelta>>,
    /// Keep a plain reply's bytes ([`Job::raw_reply`]).
    pub(crate) raw_reply: bool,
    /// The job's label for logs.
    pub(crate) label: Option<String>,
    /// The job's tracing span: the attempt's span is its child.
    pub(crate) job_span: tracing::Span,
}

/// EndpointActor → Dispatcher: attempt `number` of job `job` on endpoint `endpoint` ended.
///
/// Exactly one is sent per [`Attempt`].
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(crate) struct AttemptDone {
    /// The Dispatcher's id for the job ([`Attempt::job`]).
    pub(crate) job: u64,
    /// The attempt's number ([`Attempt::number`]).
    pub(crate) number: u32,
    /// The endpoint's index in the config's `deployments` list.
    pub(crate) endpoint: usize,
    /// How it ended.
    pub(crate) end: AttemptEnd,
}

/// What changed in an endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// The state moved (for example healthy → cooling, cooling → healthy, → disabled).
    Changed,
    /// The actor was restarted by its supervisor; its in-flight attempts were requeued.
    Restarted,
    /// The state moved to mirror what another process noted in Redis (`shared:`): a cooldown,
    /// a disable or a recovery it learned. Not written back for the others.
    Mirrored,
}

/// Dispatcher → endpoint actor: mirror what another process noted about the deployment.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub(crate) struct MirrorHealth(pub(crate) aoai_blaster_core::shared::HealthMirror);

/// A change in one endpoint's health, sent to the Dispatcher and to every subscriber.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct HealthReport {
    /// The deployment's `name`.
    pub endpoint: String,
    /// Its index in the config's `deployments` list.
    pub index: usize,
    /// What happened.
    pub event: HealthEvent,
    /// The state before, when it changed.
    pub previous: Option<HealthState>,
    /// The health now.
    pub health: HealthSnapshot,
    /// Wall-clock time of the change.
    pub at: SystemTime,
}

/// Register a recipient for every [`HealthReport`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<HealthReport>);

/// Ask the Dispatcher for a snapshot of every endpoint.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<EndpointReport>")]
pub struct GetReport;

/// Ask the Dispatcher what its shared quotas cost in Redis so far (`None` without `shared:`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Option<crate::shared::RedisUse>")]
pub struct GetRedisUse;

/// Stop taking jobs, finish the ones queued and in flight, then answer.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Close;

/// Restart one endpoint actor (fresh connections); its in-flight attempts are requeued.
#[derive(Message, Debug, Clone)]
#[rtype(result = "bool")]
pub struct RestartEndpoint(pub String);

/// Dispatcher → EndpointActor: stop now so the supervisor restarts it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct StopForRestart;
