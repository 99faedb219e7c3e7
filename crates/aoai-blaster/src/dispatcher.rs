//! `Dispatcher`: the one actor that holds the job queue, the routing strategy, every endpoint's
//! admission state (health mirror, in-flight count, quota budget) and the retry policy.
//!
//! A job enters through [`ChatJob`]; the bounded intake makes callers wait (never an OOM). Its
//! prompt is counted once per tokenizer in use ([`prompt_charge_memo`]: long texts that jobs
//! repeat are counted once). The Dispatcher asks the strategy ([`Router`]) for an endpoint
//! that can take the job *now*, reserves its estimated cost in that endpoint's budget
//! (configured limits: [`WindowBudget`]; learned ones: [`AdaptiveBudget`]), and sends an
//! [`Attempt`]; a budget that refuses takes the endpoint out of the choice for this job. When
//! no endpoint can, it arms one timer for the earliest moment one could, instead of polling.
//! Jobs behind one that waits for quota may overtake it (a bounded scan, [`SCAN_LIMIT`]) until
//! it has waited [`OVERTAKE_AGE_LIMIT`]. Each attempt's [`AttemptDone`] is turned, in one
//! place ([`RetryPolicy::decide`]), into a reply, a retry (preferably elsewhere) or a failure
//! that lists every attempt.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use aoai_blaster_core::chat::ChatRequest;
use aoai_blaster_core::classify::AttemptOutcome;
use aoai_blaster_core::config::BlasterConfig;
use aoai_blaster_core::health::{Availability, HealthState};
use aoai_blaster_core::quota::{
    AdaptiveBudget, Cost, QuotaBudget, QuotaFeedback, Refusal, Reservation, UnlimitedBudget,
    WindowBudget, options_cost,
};
use aoai_blaster_core::retry::{
    AttemptRecord, Decision, JobError, JobErrorKind, JobHistory, RetryPolicy,
};
use aoai_blaster_core::strategy::Router;
use aoai_blaster_core::tokens::{TokenMemo, prompt_charge_memo, tool_definitions};
use rand::SeedableRng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::auth::{AuthError, CredentialRegistry};
use crate::clock;
use crate::endpoint::{EndpointActor, EndpointSettings};
use crate::messages::{
    Attempt, AttemptDone, AttemptReport, ChatJob, ChatResult, Close, GetReport, HealthReport,
    HealthSnapshot, RestartEndpoint, StopForRestart, StreamDelta, Subscribe,
};
use crate::metrics::DispatcherMetrics;
use crate::report::{EndpointCounters, EndpointReport};

/// Tokens charged for the reply when a request names no `max_tokens` and the deployment no
/// `max_completion_tokens` (the quota estimate Azure makes is of the same kind).
pub const DEFAULT_CHARGED_COMPLETION_TOKENS: u64 = 4096;

/// Long texts whose token counts the Dispatcher remembers ([`TokenMemo`]).
pub const TOKEN_MEMO_TEXTS: usize = 4096;

/// How far past jobs it cannot place now the Dispatcher looks for one it can (pinned jobs, and
/// small jobs overtaking a large one that waits for quota). Keeps `pump` cheap.
pub const SCAN_LIMIT: usize = 64;

/// A job at the head of the queue that has waited this long is not overtaken any more: the
/// jobs behind it wait until it is placed (ageing), so large jobs are not starved by small ones.
pub const OVERTAKE_AGE_LIMIT: Duration = Duration::from_secs(10);

/// Why the Dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A deployment's credential could not be set up.
    #[error("deployment '{deployment}': {source}")]
    Auth {
        /// The deployment's name.
        deployment: String,
        /// What went wrong.
        source: AuthError,
    },
    /// The actor system could not be started.
    #[error("cannot start the actor system: {0}")]
    System(String),
}

/// Admission state of one endpoint, owned by the Dispatcher.
struct EndpointSlot {
    name: String,
    model: String,
    addr: Addr<EndpointActor>,
    max_in_flight: usize,
    in_flight: usize,
    budget: Box<dyn QuotaBudget>,
    /// The configured TPM, which no job may exceed (adaptive budgets never learn above it).
    tpm_limit: Option<u64>,
    default_completion_tokens: u64,
    /// Index into `Dispatcher::tokenizers`.
    tokenizer: usize,
    health: HealthSnapshot,
    counters: EndpointCounters,
}

impl EndpointSlot {
    fn availability(&self, now: Instant) -> Availability {
        self.health.state.availability(now)
    }

    /// Whether health and in-flight room allow one more attempt now.
    fn has_room(&self, now: Instant) -> bool {
        if self.in_flight >= self.max_in_flight {
            return false;
        }
        match self.availability(now) {
            Availability::Now => true,
            Availability::ProbeOnly => self.in_flight == 0,
            Availability::At(_) | Availability::Never => false,
        }
    }
}

/// Where a job's result goes.
type JobReply = oneshot::Sender<Result<ChatResult, JobError>>;

/// A job the Dispatcher holds until its outcome is known.
struct PendingJob {
    request: Arc<ChatRequest>,
    stream: bool,
    deltas: Option<Recipient<StreamDelta>>,
    pin: Option<usize>,
    label: Option<String>,
    /// Estimated prompt tokens per tokenizer (indexed like `Dispatcher::tokenizers`).
    prompt_tokens: Vec<u64>,
    history: JobHistory,
    avoid: Option<usize>,
    attempts_sent: u32,
    reply: JobReply,
    /// `job` span: outcome, attempts and total time are recorded on it when the job ends.
    span: tracing::Span,
    submitted: Instant,
    upstream_total: Duration,
    /// The attempt in flight, if any (a job has at most one).
    in_flight: Option<InFlightAttempt>,
    _permit: OwnedSemaphorePermit,
}

/// What the Dispatcher keeps about a job's attempt in flight.
struct InFlightAttempt {
    endpoint: usize,
    number: u32,
    reservation: Reservation,
    sent_at: Instant,
}

/// What happened when the Dispatcher tried to place one job.
enum Placement {
    Sent,
    Finished,
    WaitUntil(Instant),
    Busy,
}

/// The actor that queues jobs and routes them to endpoints. See the module docs.
pub struct Dispatcher {
    slots: Vec<EndpointSlot>,
    router: Router,
    /// The distinct `tokenizer` names of the deployments.
    tokenizers: Vec<String>,
    queue: VecDeque<u64>,
    jobs: HashMap<u64, PendingJob>,
    next_job: u64,
    retry: RetryPolicy,
    num_workers: usize,
    in_flight: usize,
    intake: Arc<Semaphore>,
    /// Jobs accepted while the intake was full, oldest first: they enter the queue as room
    /// frees up. They cost nothing while they wait (no future is polled for them).
    overflow: VecDeque<(ChatJob, JobReply)>,
    subscribers: Vec<Recipient<HealthReport>>,
    wake: Option<(Instant, SpawnHandle)>,
    closing: bool,
    close_waiters: Vec<oneshot::Sender<()>>,
    metrics: DispatcherMetrics,
    /// Token counts of long texts that jobs repeat (system prompts, examples, tools).
    token_memo: TokenMemo,
    _arbiters: Vec<Arbiter>,
}

impl Dispatcher {
    /// Starts the endpoint actors (on the current arbiter, or on `endpoint_threads` arbiters of
    /// their own) and the Dispatcher, in the current actix System. Use
    /// [`Blaster`](crate::Blaster) when you are not in an actix app.
    pub fn start(config: BlasterConfig) -> Result<Addr<Dispatcher>, StartError> {
        Self::start_with_registry(config, CredentialRegistry::default())
    }

    /// Like [`Dispatcher::start`], with credentials built by `registry`.
    pub fn start_with_registry(
        config: BlasterConfig,
        mut registry: CredentialRegistry,
    ) -> Result<Addr<Dispatcher>, StartError> {
        let mut auths = Vec::with_capacity(config.deployments.len());
        for deployment in &config.deployments {
            let auth = registry
                .auth_for(&deployment.auth)
                .map_err(|source| StartError::Auth {
                    deployment: deployment.name.clone(),
                    source,
                })?;
            auths.push(auth);
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        // Endpoint actors on threads of their own only when asked: one thread for everything
        // costs least per job (no wake-ups across threads) and keeps up at well over 10,000
        // jobs/s.
        let threads = config.endpoint_threads.min(config.deployments.len());
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let weights: Vec<u32> = config.deployments.iter().map(|d| d.weight).collect();
        let priorities: Vec<i32> = config.deployments.iter().map(|d| d.priority).collect();
        let rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        let router = Router::new(config.strategy, &weights, &priorities, rng);
        let mut tokenizers: Vec<String> = Vec::new();
        for deployment in &config.deployments {
            if !tokenizers.contains(&deployment.tokenizer) {
                tokenizers.push(deployment.tokenizer.clone());
            }
        }
        let rpm_window = config.rpm_window;
        // Building a tokenizer's encoder takes about half a second: start it now, off the
        // actor's thread, so the first jobs do not wait for it.
        let to_build = tokenizers.clone();
        let _ = std::thread::Builder::new()
            .name("aoai-tokenizer-warm-up".into())
            .spawn(move || {
                for tokenizer in &to_build {
                    aoai_blaster_core::tokens::warm_up(tokenizer);
                }
            });
        let permits = config.queue_capacity.saturating_add(config.num_workers);
        let metrics = DispatcherMetrics::new(config.deployments.iter().map(|d| d.name.as_str()));
        Ok(Dispatcher::create(move |ctx| {
            ctx.set_mailbox_capacity(4096);
            let reports = ctx.address().recipient::<HealthReport>();
            let done = ctx.address().recipient::<AttemptDone>();
            let slots = config
                .deployments
                .iter()
                .zip(auths)
                .enumerate()
                .map(|(index, (deployment, auth))| {
                    let settings = EndpointSettings::from_config(index, deployment);
                    let arbiter = match arbiters.len() {
                        0 => Arbiter::current(),
                        n => arbiters[index % n].handle(),
                    };
                    let addr = EndpointActor::start_supervised(
                        &arbiter,
                        settings,
                        auth,
                        reports.clone(),
                        done.clone(),
                    );
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
                    let tokenizer = tokenizers
                        .iter()
                        .position(|t| *t == deployment.tokenizer)
                        .unwrap_or(0);
                    EndpointSlot {
                        name: deployment.name.clone(),
                        model: deployment.model.clone(),
                        addr,
                        max_in_flight: deployment.max_in_flight.max(1),
                        in_flight: 0,
                        budget,
                        tpm_limit: deployment.tpm_limit,
                        tokenizer,
                        default_completion_tokens: deployment
                            .max_completion_tokens
                            .map(u64::from)
                            .unwrap_or(DEFAULT_CHARGED_COMPLETION_TOKENS),
                        health: HealthSnapshot {
                            generation: 0,
                            state: HealthState::Healthy,
                            failure_streak: 0,
                        },
                        counters: EndpointCounters::default(),
                    }
                })
                .collect();
            Dispatcher {
                slots,
                router,
                tokenizers,
                queue: VecDeque::new(),
                jobs: HashMap::new(),
                next_job: 0,
                retry: RetryPolicy {
                    max_job_retry: config.max_job_retry,
                    job_deadline: config.job_deadline,
                },
                num_workers: config.num_workers.max(1),
                in_flight: 0,
                intake: Arc::new(Semaphore::new(permits)),
                overflow: VecDeque::new(),
                subscribers: Vec::new(),
                wake: None,
                closing: false,
                close_waiters: Vec::new(),
                metrics,
                token_memo: TokenMemo::new(TOKEN_MEMO_TEXTS),
                _arbiters: arbiters,
            }
        }))
    }

    fn resolve_pin(&self, pin: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.name == pin)
            .or_else(|| self.slots.iter().position(|slot| slot.model == pin))
    }

    /// Takes a job into the queue (the caller then pumps).
    fn enqueue(&mut self, job: ChatJob, reply: JobReply, permit: OwnedSemaphorePermit) {
        let now = clock::now();
        let pin = match &job.pin {
            None => None,
            Some(name) => match self.resolve_pin(name) {
                Some(index) => Some(index),
                None => {
                    let known: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
                    let _ = reply.send(Err(job_error(
                        JobErrorKind::UnknownDeployment {
                            name: name.clone(),
                            known: known.join(", "),
                        },
                        Vec::new(),
                    )));
                    return;
                }
            },
        };
        let id = self.next_job;
        self.next_job += 1;
        let span = tracing::debug_span!(
            "job",
            job = id,
            label = job.label.as_deref().unwrap_or(""),
            outcome = tracing::field::Empty,
            attempts = tracing::field::Empty,
            total_us = tracing::field::Empty,
        );
        let tools = tool_definitions(&job.request.options);
        let prompt_tokens = self
            .tokenizers
            .iter()
            .map(|tokenizer| {
                prompt_charge_memo(
                    &mut self.token_memo,
                    tokenizer,
                    &job.request.messages,
                    tools,
                )
            })
            .collect();
        self.jobs.insert(
            id,
            PendingJob {
                request: Arc::new(job.request),
                stream: job.stream || job.deltas.is_some(),
                deltas: job.deltas,
                pin,
                label: job.label,
                prompt_tokens,
                history: JobHistory::new(now),
                avoid: None,
                attempts_sent: 0,
                reply,
                span,
                submitted: now,
                upstream_total: Duration::ZERO,
                in_flight: None,
                _permit: permit,
            },
        );
        if let Some((tokens, largest_capacity)) = self.never_fits(id, pin) {
            self.finish(
                id,
                Err(JobErrorKind::NeverFits {
                    tokens,
                    largest_capacity,
                }),
            );
            return;
        }
        self.queue.push_back(id);
    }

    /// Moves overflow jobs into the queue while the intake has room.
    fn admit_overflow(&mut self) {
        while !self.overflow.is_empty() {
            let Ok(permit) = self.intake.clone().try_acquire_owned() else {
                return;
            };
            let Some((job, reply)) = self.overflow.pop_front() else {
                return;
            };
            if !reply.is_closed() {
                self.enqueue(job, reply, permit);
            }
        }
    }

    /// Places as many queued jobs as the endpoints can take now.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            self.admit_overflow();
            self.place_queued(ctx);
            // Placing may have finished jobs (failures free intake room at once).
            if self.overflow.is_empty() || self.intake.available_permits() == 0 {
                break;
            }
        }
        self.metrics.queue(self.queue.len(), self.in_flight);
    }

    /// The body of [`pump`](Self::pump): place what can be placed, arm the wake timer.
    fn place_queued(&mut self, ctx: &mut Context<Self>) {
        let now = clock::now();
        if self.queue.is_empty() {
            return;
        }
        if self
            .slots
            .iter()
            .all(|slot| matches!(slot.availability(now), Availability::Never))
        {
            self.fail_all_queued(JobErrorKind::AllEndpointsDisabled);
            return;
        }
        let mut earliest: Option<Instant> = None;
        let mut index = 0;
        let mut skipped = 0;
        // Ageing: once the first job that cannot be placed has waited long enough, unpinned
        // jobs behind it may not overtake it.
        let mut overtaking = true;
        while self.in_flight < self.num_workers && index < self.queue.len() {
            let id = self.queue[index];
            let (pinned, submitted) = match self.jobs.get(&id) {
                Some(job) => (job.pin.is_some(), job.submitted),
                None => (false, now),
            };
            if !pinned && !overtaking {
                index += 1;
                skipped += 1;
                if skipped >= SCAN_LIMIT {
                    break;
                }
                continue;
            }
            match self.place(id, now, ctx) {
                Placement::Sent | Placement::Finished => {
                    self.queue.remove(index);
                }
                placement => {
                    if let Placement::WaitUntil(at) = placement {
                        earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    }
                    let waited = now.saturating_duration_since(submitted);
                    if !may_overtake(&placement, pinned, waited) {
                        overtaking = false;
                    }
                    skipped += 1;
                    if skipped >= SCAN_LIMIT {
                        break;
                    }
                    index += 1;
                }
            }
        }
        if let Some(at) = earliest {
            self.arm_wake(at, ctx);
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
            act.pump(ctx);
        });
        self.wake = Some((at, handle));
    }

    /// Tries to send job `id` to an endpoint now.
    fn place(&mut self, id: u64, now: Instant, ctx: &mut Context<Self>) -> Placement {
        let Some(job) = self.jobs.get(&id) else {
            return Placement::Finished;
        };
        if job.reply.is_closed() {
            self.jobs.remove(&id);
            return Placement::Finished;
        }
        if let Some(deadline) = self.retry.job_deadline
            && now.saturating_duration_since(job.submitted) >= deadline
        {
            self.finish(id, Err(JobErrorKind::DeadlineExceeded));
            return Placement::Finished;
        }
        let pin = job.pin;
        // The timer must also fire for the job's deadline, not only for quota.
        let deadline_at = self
            .retry
            .job_deadline
            .and_then(|deadline| job.submitted.checked_add(deadline));
        let avoid = job.avoid;
        let mut excluded = vec![false; self.slots.len()];
        let mut earliest: Option<Instant> = None;
        loop {
            let slots = &self.slots;
            let eligible = |i: usize, excluded: &[bool]| {
                !excluded[i] && pin.is_none_or(|p| p == i) && slots[i].has_room(now)
            };
            let headroom = |i: usize| slots[i].budget.snapshot(now).headroom(now);
            let choice = self
                .router
                .pick(|i| eligible(i, &excluded) && Some(i) != avoid, headroom)
                .or_else(|| self.router.pick(|i| eligible(i, &excluded), headroom));
            let Some(index) = choice else { break };
            let cost = self.cost_on(id, index);
            match self.slots[index].budget.try_reserve(now, cost) {
                Ok(reservation) => {
                    self.metrics.tokens_charged(index, cost.tokens);
                    self.send_attempt(id, index, reservation, ctx);
                    return Placement::Sent;
                }
                Err(Refusal::NotUntil(at)) => {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    excluded[index] = true;
                }
                // `enqueue` rejected jobs that fit nowhere; this endpoint just is not one.
                Err(Refusal::NeverFits { .. }) => excluded[index] = true,
            }
        }
        // Nothing can take the job now: find out when something could.
        let mut usable = false;
        for (index, slot) in self.slots.iter().enumerate() {
            if pin.is_some_and(|p| p != index) {
                continue;
            }
            match slot.availability(now) {
                Availability::Never => {}
                Availability::At(at) => {
                    usable = true;
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
                Availability::Now | Availability::ProbeOnly => usable = true,
            }
        }
        if !usable {
            self.finish(id, Err(JobErrorKind::AllEndpointsDisabled));
            return Placement::Finished;
        }
        match earliest {
            Some(at) => Placement::WaitUntil(deadline_at.map_or(at, |d| d.min(at))),
            None => Placement::Busy,
        }
    }

    /// `Some((tokens, largest capacity))` when the job is larger than the whole minute quota of
    /// every endpoint it may run on: it would wait forever, so it fails at once.
    fn never_fits(&self, id: u64, pin: Option<usize>) -> Option<(u64, u64)> {
        let mut tokens = 0;
        let mut largest_capacity = 0;
        for (index, slot) in self.slots.iter().enumerate() {
            if pin.is_some_and(|p| p != index) {
                continue;
            }
            let cost = self.cost_on(id, index);
            match slot.tpm_limit {
                Some(capacity) if cost.tokens > capacity => {
                    tokens = tokens.max(cost.tokens);
                    largest_capacity = largest_capacity.max(capacity);
                }
                _ => return None,
            }
        }
        Some((tokens, largest_capacity))
    }

    fn cost_on(&self, id: u64, index: usize) -> Cost {
        let Some(job) = self.jobs.get(&id) else {
            return Cost {
                requests: 1,
                tokens: 0,
            };
        };
        let slot = &self.slots[index];
        let prompt_tokens = job.prompt_tokens.get(slot.tokenizer).copied().unwrap_or(0);
        options_cost(
            &job.request.options,
            prompt_tokens,
            slot.default_completion_tokens,
        )
    }

    fn send_attempt(
        &mut self,
        id: u64,
        index: usize,
        reservation: Reservation,
        ctx: &mut Context<Self>,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.attempts_sent += 1;
        let attempt = Attempt {
            job: id,
            number: job.attempts_sent,
            request: job.request.clone(),
            stream: job.stream,
            deltas: job.deltas.clone(),
            label: job.label.clone(),
            job_span: job.span.clone(),
        };
        let sent_at = clock::now();
        job.in_flight = Some(InFlightAttempt {
            endpoint: index,
            number: attempt.number,
            reservation,
            sent_at,
        });
        let slot = &mut self.slots[index];
        slot.in_flight += 1;
        slot.counters.requests += 1;
        self.in_flight += 1;
        // The endpoint answers with an `AttemptDone` message (exactly one per attempt).
        if slot.addr.connected() {
            slot.addr.do_send(attempt);
        } else {
            ctx.address().do_send(AttemptDone {
                job: id,
                number: job.attempts_sent,
                endpoint: index,
                report: None,
            });
        }
    }

    fn on_attempt_done(&mut self, done: AttemptDone, ctx: &mut Context<Self>) {
        let id = done.job;
        let Some(attempt) = self.jobs.get_mut(&id).and_then(|job| {
            job.in_flight
                .take_if(|a| a.endpoint == done.endpoint && a.number == done.number)
        }) else {
            // Not an attempt this Dispatcher is waiting for: nothing to account.
            return;
        };
        let now = clock::now();
        let index = attempt.endpoint;
        let reservation = attempt.reservation;
        let slot = &mut self.slots[index];
        slot.in_flight = slot.in_flight.saturating_sub(1);
        self.in_flight = self.in_flight.saturating_sub(1);
        match done.report {
            None => {
                // The actor restarted with this attempt in flight: the attempt is lost, not
                // failed. Keep the charge (it may have reached Azure).
                slot.budget
                    .settle(now, reservation, &QuotaFeedback::default());
                slot.counters.lost += 1;
                let endpoint = slot.name.clone();
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.history.record(AttemptRecord::lost(
                        &endpoint,
                        now.saturating_duration_since(attempt.sent_at),
                    ));
                    self.queue.push_front(id);
                }
            }
            Some(report) => self.on_report(id, index, reservation, report, now),
        }
        self.pump(ctx);
        self.check_closed();
    }

    fn on_report(
        &mut self,
        id: u64,
        index: usize,
        reservation: Reservation,
        report: AttemptReport,
        now: Instant,
    ) {
        let slot = &mut self.slots[index];
        if report.health.generation >= slot.health.generation {
            slot.health = report.health.clone();
        }
        if report.declined {
            slot.budget.release(reservation);
            slot.counters.requests = slot.counters.requests.saturating_sub(1);
            if let Some(job) = self.jobs.get_mut(&id) {
                job.attempts_sent = job.attempts_sent.saturating_sub(1);
                self.queue.push_front(id);
            }
            return;
        }
        let used_tokens = report
            .completion
            .as_ref()
            .and_then(|c| c.usage.as_ref())
            .map(|u| u.total_tokens);
        let feedback = QuotaFeedback {
            remaining_requests: report.rate_limits.remaining_requests,
            remaining_tokens: report.rate_limits.remaining_tokens,
            rate_limited_for: match &report.outcome {
                AttemptOutcome::RateLimited { wait, .. } => Some(*wait),
                _ => None,
            },
            used_tokens,
        };
        slot.budget.settle(now, reservation, &feedback);
        slot.counters.record(&report);
        if matches!(report.outcome, AttemptOutcome::Success) {
            self.router.observe_latency(index, report.elapsed);
        }
        let slot = &mut self.slots[index];
        let endpoint = slot.name.clone();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.history.record(
            AttemptRecord::from_outcome(&endpoint, &report.outcome, report.elapsed)
                .with_request_id(report.request_id.clone()),
        );
        job.upstream_total += report.elapsed;
        let interrupted_stream =
            report.deltas_delivered > 0 && !matches!(report.outcome, AttemptOutcome::Success);
        let decision = if interrupted_stream {
            Decision::Fail(JobErrorKind::StreamInterrupted {
                deltas_delivered: report.deltas_delivered,
            })
        } else {
            self.retry.decide(&job.history, &report.outcome, now)
        };
        match decision {
            Decision::Deliver => {
                let Some(completion) = report.completion else {
                    self.finish(id, Err(JobErrorKind::RetriesExhausted));
                    return;
                };
                let Some(job) = self.jobs.remove(&id) else {
                    return;
                };
                let total_time = now.saturating_duration_since(job.submitted);
                record_job_end(&job.span, "ok", job.history.attempts.len(), total_time);
                self.metrics.job_succeeded(
                    total_time,
                    total_time.saturating_sub(job.upstream_total),
                    report.server_time,
                );
                let result = ChatResult {
                    completion,
                    endpoint,
                    attempts: job.history.attempts,
                    request_id: report.request_id,
                    queued_for: total_time.saturating_sub(job.upstream_total),
                    upstream_time: report.elapsed,
                    server_time: report.server_time,
                    total_time,
                };
                let _ = job.reply.send(Ok(result));
            }
            Decision::Retry { .. } => {
                job.avoid = Some(index);
                self.queue.push_front(id);
            }
            Decision::Fail(kind) => self.finish(id, Err(kind)),
        }
    }

    fn finish(&mut self, id: u64, outcome: Result<ChatResult, JobErrorKind>) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        if let Err(kind) = &outcome {
            crate::metrics::job_failed(kind);
            record_job_end(
                &job.span,
                kind.code(),
                job.history.attempts.len(),
                clock::now().saturating_duration_since(job.submitted),
            );
        }
        let result = outcome.map_err(|kind| job_error(kind, job.history.attempts));
        if let Err(error) = &result {
            tracing::debug!(job = id, label = job.label.as_deref().unwrap_or(""), %error, "job failed");
        }
        let _ = job.reply.send(result);
    }

    fn fail_all_queued(&mut self, kind: JobErrorKind) {
        for id in std::mem::take(&mut self.queue) {
            self.finish(id, Err(kind.clone()));
        }
    }

    fn check_closed(&mut self) {
        if self.closing && self.jobs.is_empty() && self.overflow.is_empty() {
            for waiter in self.close_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    fn report(&self) -> Vec<EndpointReport> {
        let now = clock::now();
        self.slots
            .iter()
            .map(|slot| {
                EndpointReport::new(
                    &slot.name,
                    &slot.health,
                    slot.in_flight,
                    &slot.counters,
                    now,
                )
            })
            .collect()
    }
}

/// Whether unpinned jobs behind a job that could not be placed may still be placed before it.
/// Not when nothing has in-flight room (no job behind it can go either), nor once it has
/// waited [`OVERTAKE_AGE_LIMIT`] (ageing: the jobs behind it wait until it is placed). A pinned
/// job waits for its own endpoint and holds nobody back.
fn may_overtake(placement: &Placement, pinned: bool, waited: Duration) -> bool {
    pinned || (!matches!(placement, Placement::Busy) && waited < OVERTAKE_AGE_LIMIT)
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

fn job_error(kind: JobErrorKind, attempts: Vec<AttemptRecord>) -> JobError {
    JobError { kind, attempts }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

impl Handler<ChatJob> for Dispatcher {
    type Result = ResponseFuture<Result<ChatResult, JobError>>;

    fn handle(&mut self, job: ChatJob, ctx: &mut Self::Context) -> Self::Result {
        if self.closing {
            return Box::pin(std::future::ready(Err(job_error(
                JobErrorKind::QueueClosed,
                Vec::new(),
            ))));
        }
        let (reply, receiver) = oneshot::channel();
        let permit = if self.overflow.is_empty() {
            self.intake.clone().try_acquire_owned().ok()
        } else {
            None
        };
        match permit {
            Some(permit) => {
                self.enqueue(job, reply, permit);
                self.pump(ctx);
            }
            None => self.overflow.push_back((job, reply)),
        }
        // actix runs this future as a task of its own: a waiting job costs the Dispatcher
        // nothing until its answer is sent.
        Box::pin(async move {
            receiver
                .await
                .unwrap_or_else(|_| Err(job_error(JobErrorKind::Cancelled, Vec::new())))
        })
    }
}

impl Handler<AttemptDone> for Dispatcher {
    type Result = ();

    fn handle(&mut self, done: AttemptDone, ctx: &mut Self::Context) {
        self.on_attempt_done(done, ctx);
    }
}

impl Handler<HealthReport> for Dispatcher {
    type Result = ();

    fn handle(&mut self, report: HealthReport, ctx: &mut Self::Context) {
        if let Some(slot) = self.slots.get_mut(report.index)
            && report.health.generation >= slot.health.generation
        {
            slot.health = report.health.clone();
            if report.event == crate::messages::HealthEvent::Restarted {
                slot.counters.restarts += 1;
            }
        }
        self.subscribers.retain(|s| s.connected());
        for subscriber in &self.subscribers {
            subscriber.do_send(report.clone());
        }
        self.pump(ctx);
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
        match self.slots.iter().find(|slot| slot.name == name) {
            Some(slot) => {
                slot.addr.do_send(StopForRestart);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_jobs_overtake_a_waiting_job_until_it_has_aged() {
        let at = Instant::now();
        let waiting = Placement::WaitUntil(at);
        assert!(may_overtake(&waiting, false, Duration::ZERO));
        assert!(may_overtake(
            &waiting,
            false,
            OVERTAKE_AGE_LIMIT - Duration::from_millis(1)
        ));
        assert!(!may_overtake(&waiting, false, OVERTAKE_AGE_LIMIT));
        // No endpoint has in-flight room: nobody behind can go.
        assert!(!may_overtake(&Placement::Busy, false, Duration::ZERO));
        // A pinned job holds nobody back, however long it waited.
        assert!(may_overtake(&waiting, true, 10 * OVERTAKE_AGE_LIMIT));
        assert!(may_overtake(&Placement::Busy, true, Duration::ZERO));
    }
}
