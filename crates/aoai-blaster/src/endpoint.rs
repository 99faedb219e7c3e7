//! `EndpointActor`: one per deployment. It owns the HTTP clients, the auth, the cooldown timer
//! and the failure streak; it sends the request of each [`Attempt`] and answers with an
//! [`AttemptDone`]. Every decision is made by pure code from `aoai-blaster-core`
//! (`classify`, `EndpointHealth`, `StaleRetry` for a stale pooled connection); this file only
//! performs the effects.
//!
//! Each HTTP call runs as a task of its own on the actor's arbiter, not as a future of the
//! actor's context: actix polls every future of a context whenever the context wakes, which
//! would make each reply cost O(calls in flight). The task hands its result back to the actor
//! as a [`CallFinished`] message; the actor folds it into its health and reports.
//!
//! Bounds: `request_timeout` covers the whole exchange, from sending the request to the last
//! byte of the reply, streams included (`stream_idle_timeout` also bounds each silence within
//! a stream); `max_reply_bytes` caps every reply body, plain or streamed, and a reply over it
//! fails the job ([`AttemptOutcome::ReplyTooLarge`]).
//!
//! Supervision: actix's `Supervisor` restarts an actor that *stops*, not one that panics (a
//! panic unwinds through the arbiter and takes the actor and its supervisor with it). So every
//! handler runs under [`EndpointActor::guarded`], which catches a panic and stops the actor; its
//! supervisor then restarts it, [`Supervised::restarting`] answers the calls in flight as lost
//! and announces `Restarted`. A panic inside an HTTP call's task is caught there and handled the
//! same way.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use aoai_blaster_core::chat::RequestDefaults;
use aoai_blaster_core::classify::{
    ApiError, AttemptOutcome, RateLimitHeaders, TransientKind, classify, parse_rate_limit_headers,
};
use aoai_blaster_core::config::{DeploymentConfig, Timeouts};
use aoai_blaster_core::health::{Availability, EndpointHealth, HealthPolicy, HealthState};
use aoai_blaster_core::operation::{Operation, Reply};
use aoai_blaster_core::raw_reply::RawReply;
use aoai_blaster_core::scheduler::{AttemptEnd, AttemptReport};
use aoai_blaster_core::sse::{SseDecoder, StreamAssembler};
use aoai_blaster_core::stale::{Connection, SendFailure, StaleRetry};
use awc::error::{ConnectError, PayloadError, SendRequestError};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use rand::SeedableRng;

use crate::auth::Auth;
use crate::clock;
use crate::messages::{
    Attempt, AttemptDone, HealthEvent, HealthReport, HealthSnapshot, MirrorHealth, StopForRestart,
    StreamDelta,
};
use crate::metrics::{EndpointMetrics, FinishedAttempt, server_time_from_headers};

mod connection;
mod events;

use connection::Clients;

/// Largest error reply body read.
const MAX_ERROR_BYTES: usize = 1024 * 1024;

/// What an [`EndpointActor`] needs to know about its deployment.
#[derive(Debug, Clone)]
pub(crate) struct EndpointSettings {
    /// Index in the config's deployments list.
    pub(crate) index: usize,
    /// The deployment's `name` (label in logs and reports).
    pub(crate) name: String,
    /// Where each operation's requests go, indexed like [`Operation::ALL`].
    pub(crate) targets: [Target; 3],
    /// The `model` every body names (the deployment, for the v1 API).
    pub(crate) model: Option<String>,
    /// Deployment defaults merged into each request body.
    pub(crate) defaults: RequestDefaults,
    /// Request, connect and stream-idle timeouts, and `max_reply_bytes`.
    pub(crate) timeouts: Timeouts,
    /// Backoff, disable and re-enable rules.
    pub(crate) health_policy: HealthPolicy,
    /// Cooldown when a 429 names no wait.
    pub(crate) rate_limit_fallback: Duration,
    /// Connection pool size.
    pub(crate) max_connections: usize,
    /// The HTTPS clients' rustls config (which CAs are trusted: `tls.rs`).
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

/// One operation's URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The full URL (with `api-version` for the dated API).
    pub(crate) url: String,
    /// `url`, parsed once (`None` if it does not parse: each request then reports why).
    pub(crate) uri: Option<awc::http::Uri>,
}

impl EndpointSettings {
    /// Settings for the deployment at `index`.
    pub(crate) fn from_config(
        index: usize,
        config: &DeploymentConfig,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        let resilience = &config.resilience;
        let targets = Operation::ALL.map(|operation| {
            let url = config.url(operation);
            Target {
                uri: url.parse().ok(),
                url,
            }
        });
        Self {
            index,
            name: config.name.clone(),
            targets,
            model: config.body_model().map(str::to_owned),
            defaults: config.request_defaults(),
            timeouts: config.timeouts,
            health_policy: HealthPolicy {
                backoff_base: resilience.backoff_base,
                backoff_max: resilience.backoff_max,
                auto_disable_threshold: resilience.auto_disable_threshold,
                reenable_after: resilience.reenable_after,
                retry_after_cap: resilience.retry_after_cap,
                jitter: true,
            },
            rate_limit_fallback: resilience.rate_limit_fallback,
            max_connections: config.max_in_flight.max(1),
            tls,
        }
    }
}

/// The actor for one deployment. Start it with [`EndpointActor::start_supervised`].
pub(crate) struct EndpointActor {
    settings: Arc<EndpointSettings>,
    clients: Clients,
    auth: Auth,
    health: EndpointHealth,
    generation: u64,
    reports: Recipient<HealthReport>,
    done: Recipient<AttemptDone>,
    cooldown_timer: Option<SpawnHandle>,
    metrics: EndpointMetrics,
    /// HTTP calls in flight, by call number.
    calls: HashMap<u64, CallInFlight>,
    next_call: u64,
}

/// An HTTP call's task, and the attempt it serves.
struct CallInFlight {
    job: u64,
    number: u32,
    /// When the request was sent (the health streak counts in send order).
    sent: Instant,
    span: tracing::Span,
    task: tokio::task::JoinHandle<()>,
}

/// A call's task → its actor: the call ended (`Err`: its task panicked, with the message).
#[derive(Message)]
#[rtype(result = "()")]
struct CallFinished {
    call: u64,
    result: Result<CallResult, String>,
}

impl EndpointActor {
    /// Starts the actor under a [`Supervisor`] in `arbiter`, building its awc client there
    /// (awc's client is not `Send`). Health changes go to `reports`, the end of each attempt
    /// to `done`.
    pub(crate) fn start_supervised(
        arbiter: &ArbiterHandle,
        settings: EndpointSettings,
        auth: Auth,
        reports: Recipient<HealthReport>,
        done: Recipient<AttemptDone>,
    ) -> Addr<EndpointActor> {
        Supervisor::start_in_arbiter(arbiter, move |_ctx| {
            let clients = Clients::new(&settings);
            EndpointActor {
                metrics: EndpointMetrics::new(&settings.name),
                health: EndpointHealth::new(
                    settings.health_policy.clone(),
                    rand::rngs::StdRng::from_rng(&mut rand::rng()),
                ),
                settings: Arc::new(settings),
                clients,
                auth,
                generation: 0,
                reports,
                done,
                cooldown_timer: None,
                calls: HashMap::new(),
                next_call: 0,
            }
        })
    }

    /// Tells the Dispatcher that attempt `number` of job `job` ended.
    fn answer(&self, job: u64, number: u32, end: AttemptEnd) {
        self.done.do_send(AttemptDone {
            job,
            number,
            endpoint: self.settings.index,
            end,
        });
    }

    fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            generation: self.generation,
            state: self.health.state().clone(),
            failure_streak: self.health.failure_streak(),
        }
    }

    fn announce(&mut self, event: HealthEvent, previous: Option<HealthState>) {
        self.generation += 1;
        let report = HealthReport {
            endpoint: self.settings.name.clone(),
            index: self.settings.index,
            event,
            previous,
            health: self.snapshot(),
            at: SystemTime::now(),
        };
        self.metrics.health(
            &report.health.state,
            report.health.failure_streak,
            report.event != HealthEvent::Restarted,
        );
        match &report.health.state {
            HealthState::Disabled { reason, .. } => {
                tracing::warn!(endpoint = %report.endpoint, %reason, "endpoint disabled");
            }
            state => tracing::info!(endpoint = %report.endpoint, ?state, "endpoint health changed"),
        }
        self.reports.do_send(report);
    }

    /// Arms (or re-arms) the timer that ends a cooldown or a timed disable.
    fn arm_timer(&mut self, ctx: &mut Context<Self>, now: Instant) {
        if let Some(handle) = self.cooldown_timer.take() {
            ctx.cancel_future(handle);
        }
        let until = match self.health.state() {
            HealthState::Cooling { until, .. } => *until,
            HealthState::Disabled {
                until: Some(until), ..
            } => *until,
            _ => return,
        };
        let wait = until.saturating_duration_since(now);
        self.cooldown_timer = Some(ctx.run_later(wait, |act, ctx| {
            act.guarded(ctx, |act, ctx| {
                act.cooldown_timer = None;
                let now = clock::now();
                let previous = act.health.state().clone();
                if act.health.refresh(now).is_some() {
                    act.announce(HealthEvent::Changed, Some(previous));
                }
                act.arm_timer(ctx, now);
            });
        }));
    }

    /// Runs `work`; if it panics, logs the panic and stops the actor so that its supervisor
    /// restarts it (see the module docs). `None` after a panic.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> Option<R> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| work(self, ctx))) {
            Ok(value) => Some(value),
            Err(panic) => {
                self.panicked(ctx, &panic_message(panic.as_ref()));
                None
            }
        }
    }

    /// After a panic: stop, so that the supervisor restarts the actor.
    fn panicked(&mut self, ctx: &mut Context<Self>, message: &str) {
        tracing::error!(
            endpoint = %self.settings.name,
            panic = message,
            "endpoint actor panicked; restarting it"
        );
        ctx.stop();
    }

    /// Answers attempt `number` of job `job` as lost.
    fn lost(&self, job: u64, number: u32) {
        self.metrics.attempt_lost();
        self.answer(job, number, AttemptEnd::Lost);
    }

    fn conclude(
        &mut self,
        call: CallResult,
        sent: Instant,
        span: &tracing::Span,
        ctx: &mut Context<Self>,
    ) -> AttemptReport {
        let usage = call.reply.as_ref().and_then(Reply::usage);
        self.metrics.attempt_finished(&FinishedAttempt {
            status: call.status,
            outcome: &call.outcome,
            elapsed: call.elapsed,
            server_time: call.server_time,
            usage,
            stale_retries: call.stale_retries,
        });
        record_on_span(span, &call);
        let now = clock::now();
        let previous = self.health.state().clone();
        if self.health.on_outcome(now, sent, &call.outcome).is_some() {
            self.announce(HealthEvent::Changed, Some(previous));
            self.arm_timer(ctx, now);
        }
        AttemptReport {
            outcome: call.outcome,
            reply: call.reply,
            status: call.status,
            request_id: call.request_id,
            rate_limits: call.rate_limits,
            elapsed: call.elapsed,
            server_time: call.server_time,
            deltas_delivered: call.deltas_delivered,
            stale_retries: call.stale_retries,
            health: self.snapshot(),
        }
    }
}

impl Actor for EndpointActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.max_connections.saturating_add(64));
    }
}

impl Supervised for EndpointActor {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        // The calls in flight go with the old client: stop them and report them lost (the
        // Dispatcher requeues their jobs).
        for (_, call) in std::mem::take(&mut self.calls) {
            call.task.abort();
            self.health.on_lost(call.sent);
            self.lost(call.job, call.number);
        }
        self.cooldown_timer = None;
        self.clients = Clients::new(&self.settings);
        self.announce(HealthEvent::Restarted, None);
        self.arm_timer(ctx, clock::now());
    }
}

impl Handler<StopForRestart> for EndpointActor {
    type Result = ();

    fn handle(&mut self, _: StopForRestart, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<MirrorHealth> for EndpointActor {
    type Result = ();

    fn handle(&mut self, MirrorHealth(mirror): MirrorHealth, ctx: &mut Self::Context) {
        let now = clock::now();
        let previous = self.health.state().clone();
        if self.health.mirror(now, &mirror).is_some() {
            self.announce(HealthEvent::Mirrored, Some(previous));
            self.arm_timer(ctx, now);
        }
    }
}

impl Handler<Attempt> for EndpointActor {
    type Result = ();

    fn handle(&mut self, attempt: Attempt, ctx: &mut Self::Context) {
        let (job, number) = (attempt.job, attempt.number);
        let started = self.guarded(ctx, |act, ctx| act.start_attempt(attempt, ctx));
        // A panic before the call was registered: nobody else will answer this attempt.
        if started.is_none()
            && !self
                .calls
                .values()
                .any(|call| call.job == job && call.number == number)
        {
            self.lost(job, number);
        }
    }
}

impl EndpointActor {
    /// Declines `attempt` (cooling or disabled), or starts its HTTP call as a task.
    fn start_attempt(&mut self, attempt: Attempt, ctx: &mut Context<Self>) {
        #[cfg(feature = "test-hooks")]
        if test_hooks::take(test_hooks::Where::Handler, &self.settings.name) {
            panic!(
                "test hook: endpoint '{}' panics on purpose",
                self.settings.name
            );
        }
        #[cfg(feature = "test-hooks")]
        let panic_in_call = test_hooks::take(test_hooks::Where::Call, &self.settings.name);
        let now = clock::now();
        if matches!(
            self.health.availability(now),
            Availability::At(_) | Availability::Never
        ) {
            self.metrics.declined();
            let health = self.snapshot();
            self.answer(attempt.job, attempt.number, AttemptEnd::Declined { health });
            return;
        }
        self.metrics.attempt_started(attempt.number);
        // Names, numbers and outcomes only: never headers or bodies (they hold secrets).
        let span = tracing::debug_span!(
            parent: &attempt.job_span,
            "attempt",
            job = attempt.job,
            label = attempt.label.as_deref().unwrap_or(""),
            endpoint = %self.settings.name,
            attempt = attempt.number,
            status = tracing::field::Empty,
            outcome = tracing::field::Empty,
            upstream_us = tracing::field::Empty,
            server_us = tracing::field::Empty,
            prompt_tokens = tracing::field::Empty,
            completion_tokens = tracing::field::Empty,
        );
        let body = attempt.request.body_bytes(
            &self.settings.defaults,
            attempt.stream,
            self.settings.model.as_deref(),
        );
        let http = HttpCall {
            clients: self.clients.clone(),
            settings: self.settings.clone(),
            auth: self.auth.clone(),
            operation: attempt.request.operation(),
            body: Bytes::from(body),
            stream: attempt.stream,
            deltas: attempt.deltas,
            raw_reply: attempt.raw_reply,
            label: attempt.label,
        };
        let call = self.next_call;
        self.next_call += 1;
        // Boxed: the call's future is a few KiB, and the task wrappers below would each copy it.
        let run = Box::pin(tracing::Instrument::instrument(http.run(), span.clone()));
        #[cfg(feature = "test-hooks")]
        let run = async move {
            if panic_in_call {
                panic!("test hook: an HTTP call panics on purpose");
            }
            run.await
        };
        let actor = ctx.address();
        let task = actix_rt::spawn(async move {
            let result = AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .map_err(|panic| panic_message(panic.as_ref()));
            actor.do_send(CallFinished { call, result });
        });
        self.health.on_sent(now);
        self.calls.insert(
            call,
            CallInFlight {
                job: attempt.job,
                number: attempt.number,
                sent: now,
                span,
                task,
            },
        );
    }
}

impl Handler<CallFinished> for EndpointActor {
    type Result = ();

    fn handle(&mut self, finished: CallFinished, ctx: &mut Self::Context) {
        // A call of a client replaced by a restart was already reported lost.
        let Some(call) = self.calls.remove(&finished.call) else {
            return;
        };
        let report = match finished.result {
            Ok(result) => self.guarded(ctx, |act, ctx| {
                act.conclude(result, call.sent, &call.span, ctx)
            }),
            Err(message) => {
                self.panicked(ctx, &message);
                None
            }
        };
        match report {
            Some(report) => self.answer(
                call.job,
                call.number,
                AttemptEnd::Finished(Box::new(report)),
            ),
            None => {
                self.health.on_lost(call.sent);
                self.lost(call.job, call.number);
            }
        }
    }
}

/// A caught panic's message.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Test-only hooks (feature `test-hooks`): make an endpoint misbehave on purpose.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;

/// The result of one HTTP call, before the actor folds it into its health.
struct CallResult {
    outcome: AttemptOutcome,
    reply: Option<Reply>,
    status: Option<u16>,
    request_id: Option<String>,
    rate_limits: RateLimitHeaders,
    elapsed: Duration,
    server_time: Option<Duration>,
    deltas_delivered: u32,
    /// Resends on a fresh connection after a stale pooled one (`core::stale`).
    stale_retries: u32,
}

/// Fills the attempt span's result fields.
fn record_on_span(span: &tracing::Span, call: &CallResult) {
    if span.is_disabled() {
        return;
    }
    if let Some(status) = call.status {
        span.record("status", status);
    }
    span.record("outcome", crate::metrics::outcome_label(&call.outcome));
    span.record(
        "upstream_us",
        u64::try_from(call.elapsed.as_micros()).unwrap_or(u64::MAX),
    );
    if let Some(server) = call.server_time {
        span.record(
            "server_us",
            u64::try_from(server.as_micros()).unwrap_or(u64::MAX),
        );
    }
    if let Some(usage) = call.reply.as_ref().and_then(Reply::usage) {
        span.record("prompt_tokens", usage.prompt_tokens);
        span.record("completion_tokens", usage.completion_tokens);
    }
}

/// A send that got no reply: its outcome, and unless nothing went out (no credentials), the
/// connection it used and how far it went.
struct Unsent {
    outcome: AttemptOutcome,
    sent: Option<(Connection, SendFailure)>,
}

/// Everything one HTTP call needs; `run` performs it.
struct HttpCall {
    clients: Clients,
    settings: Arc<EndpointSettings>,
    auth: Auth,
    operation: Operation,
    body: Bytes,
    stream: bool,
    deltas: Option<Recipient<StreamDelta>>,
    raw_reply: bool,
    label: Option<String>,
}

impl CallResult {
    /// A call that has learned nothing yet.
    fn new() -> Self {
        CallResult {
            outcome: AttemptOutcome::Success,
            reply: None,
            status: None,
            request_id: None,
            rate_limits: RateLimitHeaders::default(),
            elapsed: Duration::ZERO,
            server_time: None,
            deltas_delivered: 0,
            stale_retries: 0,
        }
    }

    /// Keeps what the reply's status line and headers say.
    fn read_head(&mut self, headers: &awc::http::header::HeaderMap, status: u16) {
        let lookup = |name: &str| header_text(headers, name);
        self.status = Some(status);
        self.rate_limits = parse_rate_limit_headers(&lookup);
        self.request_id = lookup("apim-request-id").or_else(|| lookup("x-request-id"));
        self.server_time = server_time_from_headers(&lookup);
    }
}

impl HttpCall {
    async fn run(self) -> CallResult {
        let started = clock::now();
        let deadline = started
            .checked_add(self.settings.timeouts.request)
            .unwrap_or(started);
        let mut refreshed_token = false;
        let mut stale = StaleRetry::default();
        let mut connection = Connection::Pooled;
        // The request that got the reply left here (a resend's own start, so that quota
        // pacing counts it from when it left).
        let mut sent_at = started;
        loop {
            let mut result = match self.send_once(connection, deadline).await {
                Ok(result) => {
                    stale.answered();
                    result
                }
                Err(unsent) => {
                    if let Some((used, failure)) = unsent.sent
                        && stale.resend(used, failure)
                    {
                        tracing::debug!(
                            endpoint = %self.settings.name,
                            ?failure,
                            "pooled connection closed by the server; resending on a fresh one"
                        );
                        connection = Connection::Fresh;
                        sent_at = clock::now();
                        continue;
                    }
                    let mut result = CallResult::new();
                    result.outcome = unsent.outcome;
                    result
                }
            };
            result.elapsed = clock::now().saturating_duration_since(sent_at);
            result.stale_retries = stale.resent();
            // On a 401 with a bearer token, refresh the token once before giving up.
            if result.status == Some(401) && self.auth.is_refreshable() && !refreshed_token {
                refreshed_token = true;
                self.auth.invalidate();
                connection = Connection::Pooled;
                continue;
            }
            // The one gate for upstream text: what it says goes to logs, reports and output
            // files, and an error body may echo the request's headers.
            result.outcome = result.outcome.redacted();
            return result;
        }
    }

    /// One exchange on `connection`: authenticate, send, read the head, then the body (error
    /// reply, plain reply or stream), all before `deadline`. `Err` when no reply came.
    async fn send_once(
        &self,
        connection: Connection,
        deadline: Instant,
    ) -> Result<CallResult, Unsent> {
        let response = self.send(connection, deadline).await?;
        let mut result = CallResult::new();
        let status = response.status().as_u16();
        result.read_head(response.headers(), status);
        result.outcome = if !(200..300).contains(&status) {
            self.read_error_reply(status, response, deadline).await
        } else if self.stream {
            self.read_stream(response, deadline, &mut result).await
        } else {
            self.read_plain_reply(status, response, deadline, &mut result)
                .await
        };
        Ok(result)
    }

    /// Authenticates and sends the request on `connection`; the reply's head, or what went
    /// wrong.
    async fn send(
        &self,
        connection: Connection,
        deadline: Instant,
    ) -> Result<
        awc::ClientResponse<impl futures_util::Stream<Item = Result<Bytes, PayloadError>> + Unpin>,
        Unsent,
    > {
        let header = self.auth.header().await.map_err(|error| Unsent {
            outcome: AttemptOutcome::EndpointFatal {
                reason: format!(
                    "{error}; check `api_key` of deployment '{}'",
                    self.settings.name
                ),
                error: ApiError {
                    status: 401,
                    code: Some("CredentialUnavailable".into()),
                    message: error.to_string(),
                },
            },
            sent: None,
        })?;
        let timeouts = &self.settings.timeouts;
        let target = &self.settings.targets[self.operation as usize];
        let client = self.clients.get(connection, &self.settings);
        let mut request = match &target.uri {
            Some(uri) => client.post(uri.clone()),
            None => client.post(&target.url),
        };
        if connection == Connection::Fresh {
            // Not back into the pool: the fresh client's connections serve one request.
            request = request.force_close();
        }
        let sent = request
            .insert_header((
                awc::http::header::CONTENT_TYPE,
                awc::http::header::HeaderValue::from_static("application/json"),
            ))
            .insert_header((header.name, header.value.expose()))
            .timeout(time_left(deadline))
            .send_body(self.body.clone());
        // awc checks each pooled connection for the server's close with a read that tokio's
        // cooperative budget answers "pending" once spent, i.e. "alive": with over ~128 dead
        // connections in the pool a burst got a closed one. Outside the budget the check sees
        // the truth; the work is bounded (the pool, one head).
        let (sent, used) = connection::track(tokio::task::unconstrained(sent)).await;
        sent.map_err(|error| Unsent {
            outcome: AttemptOutcome::Transient(send_error(&error, timeouts)),
            sent: Some((used, connection::send_failure(&error))),
        })
    }

    /// Reads a non-2xx reply's body (capped, within the deadline) and classifies it.
    async fn read_error_reply<S>(
        &self,
        status: u16,
        response: awc::ClientResponse<S>,
        deadline: Instant,
    ) -> AttemptOutcome
    where
        S: futures_util::Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        // Error replies are rare: keep their headers for the classification.
        let headers = response.headers().clone();
        let mut response = response.timeout(time_left(deadline));
        let body = response
            .body()
            .limit(MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        classify(
            status,
            &|name: &str| header_text(&headers, name),
            &body,
            SystemTime::now(),
            self.settings.rate_limit_fallback,
        )
    }

    /// Reads a plain 2xx reply (at most `max_reply_bytes`, within the deadline) as the reply
    /// of the call's operation.
    async fn read_plain_reply<S>(
        &self,
        status: u16,
        response: awc::ClientResponse<S>,
        deadline: Instant,
        result: &mut CallResult,
    ) -> AttemptOutcome
    where
        S: futures_util::Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let limit = self.settings.timeouts.max_reply_bytes;
        let mut response = response.timeout(time_left(deadline));
        let body = match response
            .body()
            .limit(usize::try_from(limit).unwrap_or(usize::MAX))
            .await
        {
            Ok(body) => body,
            Err(PayloadError::Overflow) => return AttemptOutcome::ReplyTooLarge { limit },
            Err(error) => {
                return AttemptOutcome::Transient(body_error(&error, &self.settings.timeouts));
            }
        };
        let parsed = if self.raw_reply {
            RawReply::parse(self.operation, body.clone()).map(Reply::Raw)
        } else {
            Reply::parse(self.operation, &body)
        };
        match parsed {
            Ok(reply) => {
                result.reply = Some(reply);
                AttemptOutcome::Success
            }
            Err(error) => AttemptOutcome::Transient(TransientKind::InvalidReply(format!(
                "HTTP {status} reply is not a {} reply ({error}); body starts {:?}",
                self.operation,
                excerpt(&body)
            ))),
        }
    }

    /// Reads a 2xx stream to its `[DONE]`: each silence within `stream_idle_timeout`, the
    /// whole within the deadline, at most `max_reply_bytes` in all. Deltas go to the
    /// caller's recipient as they come; the assembled completion goes into `result`.
    async fn read_stream<S>(
        &self,
        mut response: awc::ClientResponse<S>,
        deadline: Instant,
        result: &mut CallResult,
    ) -> AttemptOutcome
    where
        S: futures_util::Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let timeouts = &self.settings.timeouts;
        let mut decoder = SseDecoder::new();
        let mut assembler = StreamAssembler::new();
        let mut received: u64 = 0;
        loop {
            let left = time_left(deadline);
            let wait = timeouts.stream_idle.min(left);
            let bytes = match tokio::time::timeout(wait, response.next()).await {
                Err(_) if wait == left => {
                    return AttemptOutcome::Transient(TransientKind::Timeout(format!(
                        "stream not complete within {}s (request_timeout)",
                        timeouts.request.as_secs_f64()
                    )));
                }
                Err(_) => {
                    return stream_cut(format!(
                        "no stream data for {}s (stream_idle_timeout)",
                        timeouts.stream_idle.as_secs_f64()
                    ));
                }
                Ok(None) => {
                    return stream_cut(match self.operation {
                        Operation::Responses => "stream ended before `response.completed`".into(),
                        _ => "stream ended before `data: [DONE]`".into(),
                    });
                }
                Ok(Some(Err(error))) => return stream_cut(format!("stream broken: {error}")),
                Ok(Some(Ok(bytes))) => bytes,
            };
            received = received.saturating_add(bytes.len() as u64);
            if received > timeouts.max_reply_bytes {
                return AttemptOutcome::ReplyTooLarge {
                    limit: timeouts.max_reply_bytes,
                };
            }
            let events = match decoder.push(&bytes) {
                Ok(events) => events,
                Err(error) => {
                    return stream_cut(format!("stream is not valid server-sent events: {error}"));
                }
            };
            for event in events {
                let end = match self.operation {
                    Operation::Responses => self.take_responses_event(event, result),
                    _ => self.take_event(&event.data, &mut assembler, result),
                };
                if let Some(end) = end {
                    return end;
                }
            }
        }
    }
}

/// How long until `deadline` (zero once it has passed).
fn time_left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(clock::now())
}

fn stream_cut(why: String) -> AttemptOutcome {
    AttemptOutcome::Transient(TransientKind::StreamCut(why))
}

fn send_error(error: &SendRequestError, timeouts: &Timeouts) -> TransientKind {
    match error {
        SendRequestError::Timeout => TransientKind::Timeout(format!(
            "no reply headers within {}s (request_timeout)",
            timeouts.request.as_secs_f64()
        )),
        SendRequestError::Connect(ConnectError::Timeout) => TransientKind::Timeout(format!(
            "no connection within {}s (connect_timeout)",
            timeouts.connect.as_secs_f64()
        )),
        SendRequestError::Connect(error) => TransientKind::Connect(error.to_string()),
        other => TransientKind::Connect(other.to_string()),
    }
}

fn body_error(error: &awc::error::PayloadError, timeouts: &Timeouts) -> TransientKind {
    let text = error.to_string();
    if text.to_ascii_lowercase().contains("timed out") || text.contains("Timeout") {
        TransientKind::Timeout(format!(
            "reply body not complete within {}s (request_timeout)",
            timeouts.request.as_secs_f64()
        ))
    } else {
        TransientKind::InvalidReply(format!("reply body broken: {text}"))
    }
}

/// A reply header's value as text (`None` when absent or not visible ASCII).
fn header_text(headers: &awc::http::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    text.chars().filter(|c| !c.is_control()).collect()
}
