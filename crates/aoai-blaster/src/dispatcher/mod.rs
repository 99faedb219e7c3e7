//! `Dispatcher`: the actor in front of the [`Scheduler`], which holds the job queue, the routing
//! strategy, every endpoint's admission state and the retry policy, and makes every decision.
//!
//! The Dispatcher is a thin shell: each message becomes one scheduler event at the current
//! instant ([`clock::now`]), and the [`Effect`]s that come back are performed here: an attempt
//! goes to its endpoint actor, a result or an error to the job's caller, and one timer is armed
//! for the earliest instant the scheduler asked to be woken at (instead of polling). Endpoint
//! actors answer each attempt with an [`AttemptDone`] and announce health changes with a
//! [`HealthReport`], which is forwarded to every subscriber.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use actix::prelude::*;
use aoai_blaster_core::chat::ChatRequest;
use aoai_blaster_core::health::HealthChange;
use aoai_blaster_core::operation::JobRequest;
use aoai_blaster_core::retry::{JobError, JobErrorKind};
use aoai_blaster_core::scheduler::{
    AttemptEnd, ChatResult, Effect, JobId, JobOptions, JobOutput, JobResult, Payload, Scheduler,
};
use tokio::sync::oneshot;

use crate::clock;
use crate::messages::{
    Attempt, AttemptDone, Close, GetReport, HealthEvent, HealthReport, Job, RestartEndpoint,
    SendGate, StopForRestart, StreamDelta, Subscribe, TrackedJob,
};
use crate::metrics::DispatcherMetrics;
use crate::report::EndpointReport;

mod shared;
mod start;
#[cfg(test)]
mod tests;
pub(crate) use start::EndpointLink;
pub use start::{DispatcherSeed, StartError};

/// Where a job's result goes.
type JobReply = oneshot::Sender<Result<JobResult, JobError>>;

/// What the Dispatcher attaches to each job in the scheduler.
struct JobPayload {
    reply: JobReply,
    stream: bool,
    deltas: Option<Recipient<StreamDelta>>,
    raw_reply: bool,
    label: Option<String>,
    /// `job` span: outcome, attempts and total time are recorded on it when the job ends.
    span: tracing::Span,
    /// Shared with the job's handle (jobs from [`Blaster::submit`](crate::Blaster::submit)):
    /// marked when the first attempt goes out, or cancelled by the handle before that.
    gate: Option<SendGate>,
}

impl Payload for JobPayload {
    fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.gate.as_ref().is_some_and(SendGate::is_cancelled)
    }
}

/// The actor that queues jobs and routes them to endpoints. See the module docs.
pub struct Dispatcher {
    scheduler: Scheduler<JobPayload>,
    /// Endpoint actors, indexed like the config's deployments.
    endpoints: Vec<EndpointLink>,
    /// Reused between events: what the scheduler asks for.
    effects: Vec<Effect<JobPayload>>,
    subscribers: Vec<Recipient<HealthReport>>,
    wake: Option<(Instant, SpawnHandle)>,
    closing: bool,
    close_waiters: Vec<oneshot::Sender<()>>,
    metrics: DispatcherMetrics,
    /// Where the shared quotas' calls to Redis go (with `shared:` only).
    shared: Option<shared::SharedCalls>,
    _arbiters: Vec<Arbiter>,
}

impl Dispatcher {
    /// Runs one scheduler event (`event` gets the current instant and the effects buffer) and
    /// performs what it asks for.
    fn step(
        &mut self,
        ctx: &mut Context<Self>,
        event: impl FnOnce(
            &mut Scheduler<JobPayload>,
            Instant,
            &mut Vec<Effect<JobPayload>>,
        ) -> Option<Instant>,
    ) {
        let mut effects = std::mem::take(&mut self.effects);
        let wake = event(&mut self.scheduler, clock::now(), &mut effects);
        for effect in effects.drain(..) {
            self.perform(effect, ctx);
        }
        self.effects = effects;
        if let Some(at) = wake {
            self.arm_wake(at, ctx);
        }
        self.metrics
            .queue(self.scheduler.queued(), self.scheduler.in_flight());
        self.check_closed();
    }

    fn perform(&mut self, effect: Effect<JobPayload>, ctx: &mut Context<Self>) {
        match effect {
            Effect::Send {
                job,
                endpoint,
                number,
                request,
                tokens,
            } => {
                self.metrics.tokens_charged(endpoint, tokens);
                let Some(payload) = self.scheduler.payload(job) else {
                    return;
                };
                if let Some(gate) = &payload.gate
                    && !gate.mark_sent()
                {
                    // Cancelled unsent by its handle since the scheduler placed it: no
                    // request; the attempt is declined (as if never made) and the job, now
                    // abandoned, is dropped.
                    let health = self
                        .scheduler
                        .endpoints()
                        .nth(endpoint)
                        .map(|view| view.health.clone());
                    if let Some(health) = health {
                        ctx.address().do_send(AttemptDone {
                            job,
                            number,
                            endpoint,
                            end: AttemptEnd::Declined { health },
                        });
                    }
                    return;
                }
                let attempt = Attempt {
                    job,
                    number,
                    request,
                    stream: payload.stream,
                    deltas: payload.deltas.clone(),
                    raw_reply: payload.raw_reply,
                    label: payload.label.clone(),
                    job_span: payload.span.clone(),
                };
                let link = &self.endpoints[endpoint].attempts;
                // The endpoint answers with an `AttemptDone` message (exactly one per attempt);
                // a stopped actor cannot, so its attempt is lost at once.
                if link.connected() {
                    link.do_send(attempt);
                } else {
                    ctx.address().do_send(lost(job, number, endpoint));
                }
            }
            Effect::Deliver { payload, result } => {
                let result = *result;
                record_job_end(
                    &payload.span,
                    "ok",
                    result.attempts.len(),
                    result.total_time,
                );
                self.metrics.job_succeeded(
                    result.total_time,
                    result.queued_for,
                    result.server_time,
                );
                let _ = payload.reply.send(Ok(result));
            }
            Effect::Fail {
                payload,
                error,
                total_time,
            } => {
                crate::metrics::job_failed(&error.kind);
                record_job_end(
                    &payload.span,
                    error.code(),
                    error.attempts.len(),
                    total_time,
                );
                let label = payload.label.as_deref().unwrap_or("");
                tracing::debug!(label, %error, "job failed");
                let _ = payload.reply.send(Err(error));
            }
            Effect::Shared(effect) => self.perform_shared(effect),
        }
    }

    fn arm_wake(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if let Some((armed_at, handle)) = self.wake {
            if armed_at <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = at.saturating_duration_since(clock::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.wake = None;
            act.step(ctx, |s, now, fx| s.wake(now, fx));
        });
        self.wake = Some((at, handle));
    }

    fn check_closed(&mut self) {
        if self.closing && self.scheduler.is_idle() {
            for waiter in self.close_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn report(&self) -> Vec<EndpointReport> {
        let now = clock::now();
        self.scheduler
            .endpoints()
            .map(|view| EndpointReport::new(&view, now, self.scheduler.time_local(now)))
            .collect()
    }
}

fn lost(job: JobId, number: u32, endpoint: usize) -> AttemptDone {
    AttemptDone {
        job,
        number,
        endpoint,
        end: AttemptEnd::Lost,
    }
}

/// Records how a job ended on its span (names and numbers only, never content).
fn record_job_end(span: &tracing::Span, outcome: &str, attempts: usize, total: Duration) {
    span.record("outcome", outcome);
    span.record("attempts", attempts);
    span.record(
        "total_us",
        u64::try_from(total.as_micros()).unwrap_or(u64::MAX),
    );
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // With shared health, the first read of the others' notes goes out now, not with the
        // first job: a job must not be the first to learn that a deployment cools.
        if self.shared.is_some() {
            self.step(ctx, |s, now, fx| s.wake(now, fx));
        }
    }
}

impl Handler<Job<ChatRequest>> for Dispatcher {
    type Result = JobAnswer<ChatResult>;

    fn handle(&mut self, job: Job<ChatRequest>, ctx: &mut Self::Context) -> Self::Result {
        JobAnswer::new(self.accept(job.into_job(), None, ctx))
    }
}

impl Handler<Job<JobRequest>> for Dispatcher {
    type Result = JobAnswer<JobResult>;

    fn handle(&mut self, job: Job<JobRequest>, ctx: &mut Self::Context) -> Self::Result {
        JobAnswer::new(self.accept(job, None, ctx))
    }
}

impl Handler<TrackedJob> for Dispatcher {
    type Result = JobAnswer<JobResult>;

    fn handle(&mut self, tracked: TrackedJob, ctx: &mut Self::Context) -> Self::Result {
        JobAnswer::new(self.accept(tracked.job, Some(tracked.gate), ctx))
    }
}

impl Dispatcher {
    /// Hands a job to the scheduler; `gate` is shared with its handle, if it has one.
    fn accept(
        &mut self,
        job: Job<JobRequest>,
        gate: Option<SendGate>,
        ctx: &mut Context<Self>,
    ) -> JobReceiver {
        if self.closing {
            let error = JobError::new(JobErrorKind::QueueClosed, Vec::new());
            let (reply, receiver) = oneshot::channel();
            let _ = reply.send(Err(error));
            return receiver;
        }
        let (reply, receiver) = oneshot::channel();
        let id = self.scheduler.next_job_id();
        let span = tracing::debug_span!(
            "job",
            job = id,
            label = job.label.as_deref().unwrap_or(""),
            outcome = tracing::field::Empty,
            attempts = tracing::field::Empty,
            total_us = tracing::field::Empty,
        );
        let payload = JobPayload {
            reply,
            stream: (job.stream || job.deltas.is_some()) && job.request.operation().streams(),
            deltas: job.deltas,
            raw_reply: job.raw_reply,
            label: job.label,
            span,
            gate,
        };
        let options = JobOptions {
            pin: job.pin,
            max_wait: job.max_wait,
        };
        let request = job.request;
        self.step(ctx, |s, now, fx| {
            s.submit(now, payload, request, options, fx)
        });
        receiver
    }
}

/// Where the Dispatcher's answer to one job arrives.
type JobReceiver = oneshot::Receiver<Result<JobResult, JobError>>;

/// The answer to a [`Job`]: relays the scheduler's result to the caller (as a [`ChatResult`]
/// for a [`ChatJob`](crate::ChatJob)), and notices when the caller stops waiting (drops the
/// `send` future), so that a job not yet sent is dropped without a request (its reply channel
/// closes: [`Payload::abandoned`]).
pub struct JobAnswer<T = ChatResult>(JobReceiver, PhantomData<fn() -> T>);

impl<T> JobAnswer<T> {
    fn new(receiver: JobReceiver) -> Self {
        JobAnswer(receiver, PhantomData)
    }
}

impl<M, T> actix::dev::MessageResponse<Dispatcher, M> for JobAnswer<T>
where
    M: Message<Result = Result<T, JobError>>,
    T: JobOutput + Send + 'static,
{
    fn handle(
        self,
        _ctx: &mut Context<Dispatcher>,
        tx: Option<actix::dev::OneshotSender<Result<T, JobError>>>,
    ) {
        let JobAnswer(mut receiver, _) = self;
        let cancelled = || Err(JobError::new(JobErrorKind::Cancelled, Vec::new()));
        // A task of its own: a waiting job costs the Dispatcher nothing until it is answered.
        actix_rt::spawn(async move {
            let Some(mut tx) = tx else {
                // `do_send`: nobody waits for the answer, but the job runs.
                let _ = receiver.await;
                return;
            };
            tokio::select! {
                result = &mut receiver => {
                    let result = result.unwrap_or_else(|_| cancelled());
                    let _ = tx.send(result.and_then(T::from_result));
                }
                () = tx.closed() => {}
            }
        });
    }
}

impl Handler<AttemptDone> for Dispatcher {
    type Result = ();

    fn handle(&mut self, done: AttemptDone, ctx: &mut Self::Context) {
        let AttemptDone {
            job,
            number,
            endpoint,
            end,
        } = done;
        self.step(ctx, |s, now, fx| {
            s.attempt_ended(now, job, number, endpoint, end, fx)
        });
    }
}

impl Handler<HealthReport> for Dispatcher {
    type Result = ();

    fn handle(&mut self, report: HealthReport, ctx: &mut Self::Context) {
        let restarted = report.event == HealthEvent::Restarted;
        // Only what the endpoint learned itself is noted for the others; a mirrored change
        // came from their note (no echo).
        let learned = match (&report.event, &report.previous) {
            (HealthEvent::Changed, Some(from)) => Some(HealthChange {
                from: from.clone(),
                to: report.health.state.clone(),
            }),
            _ => None,
        };
        self.step(ctx, |s, now, fx| {
            if let Some(change) = &learned {
                s.share_health(now, report.index, change, fx);
            }
            s.health_changed(now, report.index, &report.health, restarted, fx)
        });
        self.subscribers.retain(|s| s.connected());
        for subscriber in &self.subscribers {
            subscriber.do_send(report.clone());
        }
    }
}

impl Handler<Subscribe> for Dispatcher {
    type Result = ();

    fn handle(&mut self, Subscribe(recipient): Subscribe, _ctx: &mut Self::Context) {
        self.subscribers.push(recipient);
    }
}

impl Handler<GetReport> for Dispatcher {
    type Result = MessageResult<GetReport>;

    fn handle(&mut self, _: GetReport, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.report())
    }
}

impl Handler<RestartEndpoint> for Dispatcher {
    type Result = bool;

    fn handle(&mut self, RestartEndpoint(name): RestartEndpoint, _ctx: &mut Self::Context) -> bool {
        match self.scheduler.endpoint_index(&name) {
            Some(index) => {
                self.endpoints[index].restart.do_send(StopForRestart);
                true
            }
            None => false,
        }
    }
}

impl Handler<Close> for Dispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Close, _ctx: &mut Self::Context) -> Self::Result {
        // Jobs already accepted (waiting for intake room) are still served: close drains.
        self.closing = true;
        let (sender, receiver) = oneshot::channel();
        self.close_waiters.push(sender);
        self.check_closed();
        Box::pin(async move {
            let _ = receiver.await;
        })
    }
}
