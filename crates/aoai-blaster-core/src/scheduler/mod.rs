//! The scheduler: every decision about queued jobs, as pure code.
//!
//! It takes events with explicit instants (a job submitted, an attempt ended, an endpoint's
//! health announced, a timer fired) and answers with [`Effect`]s (send this attempt, deliver
//! this result, fail this job) plus the instant it wants to be woken at. The actix
//! `Dispatcher` is a thin shell that performs the effects; tests drive the scheduler directly,
//! with no sockets and no actors, the way governor tests its limiter.
//!
//! What it decides:
//! - **intake**: at most `queue_capacity + num_workers` jobs are held; more wait in submission
//!   order, costing nothing until room frees up (the shell's callers wait, never an OOM);
//! - **operations**: a job names its operation ([`JobRequest`]: chat, embeddings, responses);
//!   only endpoints whose `operations` hold it may take it, and a job no endpoint it may run on
//!   takes fails at once (`unsupported_operation`);
//! - **cost**: each job's input is counted once per tokenizer in use (long texts that jobs
//!   repeat are counted once, [`TokenMemo`]); its charge on an endpoint is
//!   [`crate::quota::operation_cost`]; a job larger than every eligible endpoint's
//!   whole TPM fails at once (never fits);
//! - **placement**: the [`Router`] picks among endpoints that can take the job now (health, in-
//!   flight room, not yet refused by their budget for this job); the job's cost is reserved in
//!   that endpoint's budget; when no endpoint can, the scheduler asks to be woken when one
//!   could, instead of polling;
//! - **overtaking and ageing**: jobs behind one that waits for quota may overtake it (a bounded
//!   scan, [`SCAN_LIMIT`]) until it has waited [`OVERTAKE_AGE_LIMIT`];
//! - **what follows an attempt**: settled in one place, [`RetryPolicy::decide`], for every way
//!   an attempt can end ([`AttemptEnd`]).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use aoai_blaster_core::chat::ChatRequest;
//! use aoai_blaster_core::config::BlasterConfig;
//! use aoai_blaster_core::scheduler::{Effect, JobOptions, Scheduler};
//! use rand::{SeedableRng, rngs::StdRng};
//! use serde_json::json;
//!
//! let config = BlasterConfig::from_yaml_str(
//!     "deployments:\n  - {name: east, endpoint: 'http://127.0.0.1:1/', model: gpt-4o, api_key: k}\n",
//! )
//! .unwrap();
//! let mut scheduler = Scheduler::new(&config, StdRng::seed_from_u64(7));
//! let mut effects = Vec::new();
//! let request = ChatRequest::new(vec![json!({"role": "user", "content": "hi"})]);
//! let options = JobOptions::default();
//! let wake = scheduler.submit(Instant::now(), "my job", request, options, &mut effects);
//! assert_eq!(wake, None);
//! assert!(matches!(effects[0], Effect::Send { endpoint: 0, number: 1, .. }));
//! ```

mod attempt;
mod endpoint;
mod shared;
#[cfg(test)]
mod tests;
mod waits;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

pub use attempt::{AttemptEnd, AttemptReport, ChatResult, EndpointCounters, JobOutput, JobResult};
pub use endpoint::{DEFAULT_CHARGED_COMPLETION_TOKENS, EndpointView, QuotaSharing};
pub use shared::SharedEffect;

use crate::classify::AttemptOutcome;
use crate::config::BlasterConfig;
use crate::health::{Availability, HealthSnapshot};
use crate::operation::JobRequest;
use crate::quota::{
    Cost, Refusal, Reservation, input_char_charge, input_charge_memo, operation_cost,
};
use crate::retry::RetryPolicy;
use crate::retry::{AttemptRecord, Decision, Ending, JobError, JobErrorKind, JobHistory};
use crate::strategy::Router;
use crate::tokens::TokenMemo;
use endpoint::Endpoint;
use waits::Scope;

/// Long texts whose token counts the scheduler remembers ([`TokenMemo`]).
pub const TOKEN_MEMO_TEXTS: usize = 4096;

/// How far past jobs it cannot place now the scheduler looks for one it can (pinned jobs, and
/// small jobs overtaking a large one that waits for quota). Keeps a pump cheap.
pub const SCAN_LIMIT: usize = 64;

/// A job at the head of the queue that has waited this long is not overtaken any more: the
/// jobs behind it wait until it is placed (ageing), so large jobs are not starved by small ones.
pub const OVERTAKE_AGE_LIMIT: Duration = Duration::from_secs(10);

/// The scheduler's id for a job (also the id its attempts carry).
pub type JobId = u64;

/// What the shell attaches to a job (where its answer goes, its span, ...): the scheduler
/// keeps it and hands it back in [`Effect::Deliver`] or [`Effect::Fail`].
pub trait Payload {
    /// True when nobody waits for the job's answer any more: a job not yet sent is then
    /// dropped without a request.
    fn abandoned(&self) -> bool {
        false
    }
}

impl Payload for &str {}

/// What the shell must do after an event.
#[derive(Debug)]
pub enum Effect<P> {
    /// Send attempt `number` of `job` to `endpoint`; the shell reports its end with
    /// [`Scheduler::attempt_ended`] (exactly once).
    Send {
        /// The job.
        job: JobId,
        /// The endpoint's index in the config's `deployments`.
        endpoint: usize,
        /// 1 for the first attempt, then 2, 3, ...
        number: u32,
        /// The request.
        request: Arc<JobRequest>,
        /// Tokens charged to the endpoint's budget for it.
        tokens: u64,
    },
    /// The job succeeded: hand `result` to whoever waits for it.
    Deliver {
        /// The job's payload.
        payload: P,
        /// The result.
        result: Box<JobResult>,
    },
    /// The job failed.
    Fail {
        /// The job's payload.
        payload: P,
        /// Why, with every attempt.
        error: JobError,
        /// From submission to failure.
        total_time: Duration,
    },
    /// Something for the quotas shared through Redis (only after
    /// [`Scheduler::share_quotas`]).
    Shared(SharedEffect),
}

/// What a caller may choose per job, beside its request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// Run only on the deployment with this `name` or, failing that, on any deployment of this
    /// `model`.
    pub pin: Option<String>,
    /// This job's `max_wait`, instead of the configured one.
    pub max_wait: Option<Duration>,
}

/// A job submitted while the intake was full.
struct Submission<P> {
    id: JobId,
    payload: P,
    request: JobRequest,
    options: JobOptions,
}

/// A job the scheduler holds until its outcome is known.
struct Job<P> {
    payload: P,
    request: Arc<JobRequest>,
    pin: Option<Pin>,
    /// Estimated input tokens per tokenizer (indexed like `Scheduler::tokenizers`).
    prompt_tokens: Vec<u64>,
    history: JobHistory,
    /// The endpoint to avoid on the next attempt, if another can take it.
    avoid: Option<usize>,
    attempts_sent: u32,
    upstream_total: Duration,
    /// The attempt in flight, if any (a job has at most one).
    in_flight: Option<InFlight>,
    /// The job's own retry policy (the configured one, with its `max_wait` if it set one).
    retry: RetryPolicy,
    /// Since when no endpoint that may serve the job could take it (each cooling or disabled):
    /// `max_wait` bounds this. `None` while the job is sent, or waits only for room or quota.
    unavailable_since: Option<Instant>,
}

/// What the scheduler keeps about a job's attempt in flight.
struct InFlight {
    endpoint: usize,
    number: u32,
    reservation: Reservation,
    sent_at: Instant,
}

/// What happened when the scheduler tried to place one job.
enum Placement {
    Sent,
    Finished,
    WaitUntil(Instant),
    Busy,
}

/// Queue, placement and retry decisions for a set of endpoints. See the module docs.
pub struct Scheduler<P> {
    endpoints: Vec<Endpoint>,
    router: Router,
    /// The distinct `tokenizer` names of the deployments.
    tokenizers: Vec<String>,
    /// Per tokenizer: whether a deployment using it paces by tokens (a `tpm_limit`, or
    /// `adaptive`, which learns one). Otherwise its count would change no decision, so the
    /// cheap character estimate stands in and its tables are never loaded.
    counted: Vec<bool>,
    token_memo: TokenMemo,
    retry: RetryPolicy,
    num_workers: usize,
    /// Jobs held at most (queued and in flight).
    capacity: usize,
    /// Jobs submitted while `capacity` was reached, oldest first.
    waiting: VecDeque<Submission<P>>,
    queue: VecDeque<JobId>,
    jobs: HashMap<JobId, Job<P>>,
    next_job: JobId,
    /// Attempts in flight over all endpoints (each endpoint counts its own).
    in_flight: usize,
    /// When each held job's `job_deadline` falls, soonest first (empty without a deadline).
    deadlines: BTreeSet<(Instant, JobId)>,
    /// Attempts still in flight of jobs that already ended (at their deadline): their ends
    /// are still accounted (in-flight counts, budget), but decide nothing.
    orphans: HashMap<(JobId, u32), InFlight>,
    /// The link to Redis, when quotas are shared ([`Scheduler::share_quotas`]).
    shared: Option<shared::SharedState>,
}

impl<P: Payload> Scheduler<P> {
    /// A scheduler for `config`'s deployments; `rng` seeds the routing strategy.
    pub fn new(config: &BlasterConfig, rng: StdRng) -> Self {
        let mut tokenizers: Vec<String> = Vec::new();
        let mut counted: Vec<bool> = Vec::new();
        for deployment in &config.deployments {
            let paces_tokens = deployment.adaptive || deployment.tpm_limit.is_some();
            match tokenizers.iter().position(|t| *t == deployment.tokenizer) {
                Some(index) => counted[index] |= paces_tokens,
                None => {
                    tokenizers.push(deployment.tokenizer.clone());
                    counted.push(paces_tokens);
                }
            }
        }
        let endpoints = config
            .deployments
            .iter()
            .map(|deployment| {
                let tokenizer = tokenizers
                    .iter()
                    .position(|t| *t == deployment.tokenizer)
                    .unwrap_or(0);
                let mut endpoint = Endpoint::new(deployment, config.rpm_window, tokenizer);
                endpoint.model_group = config
                    .deployments
                    .iter()
                    .position(|d| d.model == deployment.model)
                    .unwrap_or(0);
                endpoint
            })
            .collect();
        let weights: Vec<u32> = config.deployments.iter().map(|d| d.weight).collect();
        let priorities: Vec<i32> = config.deployments.iter().map(|d| d.priority).collect();
        Scheduler {
            endpoints,
            router: Router::new(config.strategy, &weights, &priorities, rng),
            tokenizers,
            counted,
            token_memo: TokenMemo::new(TOKEN_MEMO_TEXTS),
            retry: RetryPolicy {
                max_job_retry: config.max_job_retry,
                job_deadline: config.job_deadline,
                max_wait: config.max_wait,
            },
            num_workers: config.num_workers.max(1),
            capacity: config.queue_capacity.saturating_add(config.num_workers),
            waiting: VecDeque::new(),
            queue: VecDeque::new(),
            jobs: HashMap::new(),
            next_job: 0,
            in_flight: 0,
            deadlines: BTreeSet::new(),
            orphans: HashMap::new(),
            shared: None,
        }
    }

    /// The tokenizers whose counts pacing uses (to build their encoders early); the others
    /// are never loaded.
    pub fn counted_tokenizers(&self) -> impl Iterator<Item = &str> {
        self.tokenizers
            .iter()
            .zip(&self.counted)
            .filter(|(_, counted)| **counted)
            .map(|(tokenizer, _)| tokenizer.as_str())
    }

    /// Takes a job (a request of any operation, with its per-job `options`).
    /// Returns when to wake the scheduler ([`wake`](Self::wake)), if it waits for a time.
    pub fn submit(
        &mut self,
        now: Instant,
        payload: P,
        request: impl Into<JobRequest>,
        options: JobOptions,
        effects: &mut Vec<Effect<P>>,
    ) -> Option<Instant> {
        let id = self.next_job;
        self.next_job += 1;
        let submission = Submission {
            id,
            payload,
            request: request.into(),
            options,
        };
        if self.waiting.is_empty() && self.jobs.len() < self.capacity {
            self.admit(now, submission, effects);
        } else {
            self.waiting.push_back(submission);
        }
        self.pump(now, effects)
    }

    /// Attempt `number` of `job` on `endpoint` ended as `end`. An end that matches no attempt
    /// in flight (a duplicate, or one of a job already answered) is ignored.
    pub fn attempt_ended(
        &mut self,
        now: Instant,
        job: JobId,
        number: u32,
        endpoint: usize,
        end: AttemptEnd,
        effects: &mut Vec<Effect<P>>,
    ) -> Option<Instant> {
        let attempt = self.jobs.get_mut(&job).and_then(|j| {
            j.in_flight
                .take_if(|a| a.endpoint == endpoint && a.number == number)
        });
        match attempt {
            Some(attempt) => {
                self.end_attempt(&attempt);
                self.conclude(now, job, attempt, end, effects);
            }
            None => {
                let orphan = self.orphans.remove(&(job, number))?;
                self.end_attempt(&orphan);
                self.settle_orphan(now, orphan, end);
            }
        }
        self.pump(now, effects)
    }

    /// An endpoint announced its health (`restarted`: its actor was restarted).
    pub fn health_changed(
        &mut self,
        now: Instant,
        endpoint: usize,
        health: &HealthSnapshot,
        restarted: bool,
        effects: &mut Vec<Effect<P>>,
    ) -> Option<Instant> {
        if let Some(slot) = self.endpoints.get_mut(endpoint)
            && health.generation >= slot.health.generation
        {
            slot.observe(health);
            if restarted {
                slot.counters.restarts += 1;
            }
        }
        self.pump(now, effects)
    }

    /// The instant asked for has come (or any time): place what can be placed.
    pub fn wake(&mut self, now: Instant, effects: &mut Vec<Effect<P>>) -> Option<Instant> {
        self.pump(now, effects)
    }

    /// The id the next submitted job gets (for the shell's logs and spans).
    pub fn next_job_id(&self) -> JobId {
        self.next_job
    }

    /// The payload of a job the scheduler holds (to build an attempt for [`Effect::Send`]).
    pub fn payload(&self, job: JobId) -> Option<&P> {
        self.jobs.get(&job).map(|j| &j.payload)
    }

    /// The index of the endpoint named `name`.
    pub fn endpoint_index(&self, name: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| e.name == name)
    }

    /// Every endpoint, in config order.
    pub fn endpoints(&self) -> impl Iterator<Item = EndpointView<'_>> {
        let sharing = match self.is_shared() {
            Some(true) => Some(QuotaSharing::Shared),
            Some(false) => Some(QuotaSharing::Local),
            None => None,
        };
        self.endpoints.iter().map(move |e| EndpointView {
            name: &e.name,
            health: &e.health,
            in_flight: e.in_flight,
            max_in_flight: e.max_in_flight,
            quota_refused_until: e.quota_refused_until,
            counters: &e.counters,
            shared_quota: sharing.filter(|_| e.shares_quota),
        })
    }

    /// Jobs queued (not in flight, not waiting for intake room).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Attempts in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True when the scheduler holds no job at all.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.waiting.is_empty()
    }

    /// A deployment's `name` pins to it; otherwise a `model` pins to every deployment of it.
    fn resolve_pin(&self, pin: &str) -> Option<Pin> {
        self.endpoint_index(pin).map(Pin::Endpoint).or_else(|| {
            self.endpoints
                .iter()
                .find(|e| e.model == pin)
                .map(|e| Pin::Model(e.model_group))
        })
    }

    /// Takes a job into the queue, or fails it at once (unknown pin, never fits).
    fn admit(&mut self, now: Instant, submission: Submission<P>, effects: &mut Vec<Effect<P>>) {
        let Submission {
            id,
            payload,
            request,
            options,
        } = submission;
        let pin = match options.pin {
            None => None,
            Some(name) => match self.resolve_pin(&name) {
                Some(index) => Some(index),
                None => {
                    let known: Vec<&str> = self.endpoints.iter().map(|e| e.name.as_str()).collect();
                    let kind = JobErrorKind::UnknownDeployment {
                        name,
                        known: known.join(", "),
                    };
                    effects.push(Effect::Fail {
                        payload,
                        error: JobError::new(kind, Vec::new()),
                        total_time: Duration::ZERO,
                    });
                    return;
                }
            },
        };
        let operation = request.operation();
        if let Some(kind) = self.unsupported(operation, pin) {
            effects.push(Effect::Fail {
                payload,
                error: JobError::new(kind, Vec::new()),
                total_time: Duration::ZERO,
            });
            return;
        }
        let prompt_tokens = self
            .tokenizers
            .iter()
            .zip(&self.counted)
            .map(|(tokenizer, counted)| match counted {
                true => input_charge_memo(&mut self.token_memo, tokenizer, &request),
                false => input_char_charge(&request),
            })
            .collect();
        self.jobs.insert(
            id,
            Job {
                payload,
                request: Arc::new(request),
                pin,
                prompt_tokens,
                history: JobHistory::new(now),
                avoid: None,
                attempts_sent: 0,
                upstream_total: Duration::ZERO,
                in_flight: None,
                retry: RetryPolicy {
                    max_wait: options.max_wait.unwrap_or(self.retry.max_wait),
                    ..self.retry
                },
                unavailable_since: None,
            },
        );
        if let Some(deadline) = self.deadline_of(id) {
            self.deadlines.insert((deadline, id));
        }
        if let Some((tokens, largest_capacity)) = self.never_fits(id, pin) {
            let kind = JobErrorKind::NeverFits {
                tokens,
                largest_capacity,
            };
            self.fail(now, id, kind, effects);
            return;
        }
        self.queue.push_back(id);
    }

    /// Places what can be placed, then does what the shared quotas need (nothing without them).
    fn pump(&mut self, now: Instant, effects: &mut Vec<Effect<P>>) -> Option<Instant> {
        let mut wake = self.pump_jobs(now, effects);
        if self.shared.is_none() {
            return wake;
        }
        let (at, lost) = self.shared_upkeep(now, effects);
        if lost {
            // The jobs waiting for a lease may go on the local ledger now.
            wake = self.pump_jobs(now, effects);
            let (again, _) = self.shared_upkeep(now, effects);
            return earliest(wake, again);
        }
        earliest(wake, at)
    }

    /// Moves waiting submissions in while there is room, then places what can be placed.
    fn pump_jobs(&mut self, now: Instant, effects: &mut Vec<Effect<P>>) -> Option<Instant> {
        let mut wake: Option<Instant> = self.expire(now, effects);
        loop {
            while !self.waiting.is_empty() && self.jobs.len() < self.capacity {
                let Some(submission) = self.waiting.pop_front() else {
                    break;
                };
                if !submission.payload.abandoned() {
                    self.admit(now, submission, effects);
                }
            }
            if let Some(at) = self.place_queued(now, effects) {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            // Placing may have finished jobs (failures free intake room at once).
            if self.waiting.is_empty() || self.jobs.len() >= self.capacity {
                return wake;
            }
        }
    }

    /// Places as many queued jobs as the endpoints can take now; returns the earliest instant
    /// one that could not be placed could be.
    fn place_queued(&mut self, now: Instant, effects: &mut Vec<Effect<P>>) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        let all_rejected = self.rejections(Scope::ALL);
        let all_never = || {
            self.endpoints
                .iter()
                .all(|e| matches!(e.availability(now), Availability::Never))
        };
        if all_rejected.is_some() || all_never() {
            // Nothing queued can be served without outside help: fail fast.
            let kind = match all_rejected {
                Some(reasons) => JobErrorKind::EndpointsRejected { reasons },
                None => JobErrorKind::AllEndpointsDisabled,
            };
            for id in std::mem::take(&mut self.queue) {
                self.fail(now, id, kind.clone(), effects);
            }
            return None;
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
                Some(job) => (job.pin.is_some(), job.history.started),
                None => (false, now),
            };
            if pinned || overtaking {
                match self.place(id, now, effects) {
                    Placement::Sent | Placement::Finished => {
                        self.queue.remove(index);
                        continue;
                    }
                    placement => {
                        if let Placement::WaitUntil(at) = placement {
                            earliest = Some(earliest.map_or(at, |e| e.min(at)));
                        }
                        let waited = now.saturating_duration_since(submitted);
                        if !may_overtake(&placement, pinned, waited) {
                            overtaking = false;
                        }
                    }
                }
            }
            skipped += 1;
            if skipped >= SCAN_LIMIT {
                break;
            }
            index += 1;
        }
        earliest
    }

    /// Tries to send job `id` to an endpoint now.
    fn place(&mut self, id: JobId, now: Instant, effects: &mut Vec<Effect<P>>) -> Placement {
        let Some(job) = self.jobs.get(&id) else {
            return Placement::Finished;
        };
        if job.payload.abandoned() {
            // Nobody waits for it: drop it without a request (and without an answer).
            if let Some(at) = self.deadline_of(id) {
                self.deadlines.remove(&(at, id));
            }
            self.jobs.remove(&id);
            return Placement::Finished;
        }
        let (pin, avoid) = (job.pin, job.avoid);
        let scope = Scope {
            pin,
            operation: Some(job.request.operation()),
        };
        // The wake-up must also come for the job's deadline, not only for quota.
        let deadline_at = self.deadline_of(id);
        let mut excluded = vec![false; self.endpoints.len()];
        let mut earliest: Option<Instant> = None;
        loop {
            let endpoints = &self.endpoints;
            let eligible = |i: usize, excluded: &[bool]| {
                !excluded[i] && scope.allows(i, &endpoints[i]) && endpoints[i].has_room(now)
            };
            let headroom = |i: usize| endpoints[i].budget.snapshot(now).headroom(now);
            let choice = self
                .router
                .pick(|i| eligible(i, &excluded) && Some(i) != avoid, headroom)
                .or_else(|| self.router.pick(|i| eligible(i, &excluded), headroom));
            let Some(index) = choice else { break };
            let cost = self.cost_on(id, index);
            match self.endpoints[index].budget.try_reserve(now, cost) {
                Ok(reservation) => {
                    self.endpoints[index].quota_refused_until = None;
                    self.start_attempt(id, index, reservation, cost, now, effects);
                    return Placement::Sent;
                }
                Err(Refusal::NotUntil(at)) => {
                    self.endpoints[index].quota_refused_until = Some(at);
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    excluded[index] = true;
                }
                // A lease is on its way: the answer's event places the job again.
                Err(Refusal::Pending) => excluded[index] = true,
                // `admit` rejected jobs that fit nowhere; this endpoint just is not one.
                Err(Refusal::NeverFits { .. }) => excluded[index] = true,
            }
        }
        // Nothing can take the job now: find out when something could.
        let mut available_now = false;
        let mut health_at: Option<Instant> = None;
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            if !scope.allows(index, endpoint) {
                continue;
            }
            match endpoint.availability(now) {
                Availability::Never => {}
                Availability::At(at) => health_at = Some(health_at.map_or(at, |e| e.min(at))),
                Availability::Now | Availability::ProbeOnly => available_now = true,
            }
        }
        let wait_for = if available_now {
            // Waiting for in-flight room or for quota (pacing): not unavailability.
            if let Some(job) = self.jobs.get_mut(&id) {
                job.unavailable_since = None;
            }
            earliest
        } else {
            let Some(at) = health_at else {
                self.fail(now, id, JobErrorKind::AllEndpointsDisabled, effects);
                return Placement::Finished;
            };
            let Some(job) = self.jobs.get_mut(&id) else {
                return Placement::Finished;
            };
            let max_wait = job.retry.max_wait;
            let since = *job.unavailable_since.get_or_insert(now);
            // Every endpoint the job may use rejects it (while others serve: a pinned job):
            // no wait cures that either.
            let met_unnamed_429s = job.history.rate_limited_since.is_some();
            let rejected = self.rejections(scope).is_some();
            if rejected || at.saturating_duration_since(since) > max_wait {
                // Cooling only because of 429s that named no wait, which this job met too:
                // that is the server refusing (`rate_limited`), not a missing endpoint.
                let kind = if met_unnamed_429s && !rejected && self.only_rate_limited(scope) {
                    JobErrorKind::RateLimited { max_wait }
                } else {
                    JobErrorKind::NoEndpointAvailable {
                        max_wait,
                        endpoints: self.describe_unavailable(scope, now),
                    }
                };
                self.fail(now, id, kind, effects);
                return Placement::Finished;
            }
            Some(earliest.map_or(at, |e| e.min(at)))
        };
        match wait_for {
            Some(at) => Placement::WaitUntil(deadline_at.map_or(at, |d| d.min(at))),
            None => Placement::Busy,
        }
    }

    /// `Some((tokens, largest capacity))` when the job is larger than the whole minute quota of
    /// every endpoint it may run on: it would wait forever, so it fails at once.
    fn never_fits(&self, id: JobId, pin: Option<Pin>) -> Option<(u64, u64)> {
        let scope = Scope {
            pin,
            operation: self.jobs.get(&id).map(|job| job.request.operation()),
        };
        let mut tokens = 0;
        let mut largest_capacity = 0;
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            if !scope.allows(index, endpoint) {
                continue;
            }
            let cost = self.cost_on(id, index);
            match endpoint.tpm_limit {
                Some(capacity) if cost.tokens > capacity => {
                    tokens = tokens.max(cost.tokens);
                    largest_capacity = largest_capacity.max(capacity);
                }
                _ => return None,
            }
        }
        Some((tokens, largest_capacity))
    }

    /// What job `id` is charged on endpoint `index`.
    fn cost_on(&self, id: JobId, index: usize) -> Cost {
        let Some(job) = self.jobs.get(&id) else {
            return Cost {
                requests: 1,
                tokens: 0,
            };
        };
        let endpoint = &self.endpoints[index];
        let prompt_tokens = job
            .prompt_tokens
            .get(endpoint.tokenizer)
            .copied()
            .unwrap_or(0);
        operation_cost(
            &job.request,
            prompt_tokens,
            endpoint.default_completion_tokens,
        )
    }

    /// Counts an attempt in flight (the one place that does) and asks the shell to send it.
    fn start_attempt(
        &mut self,
        id: JobId,
        index: usize,
        reservation: Reservation,
        cost: Cost,
        now: Instant,
        effects: &mut Vec<Effect<P>>,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.attempts_sent += 1;
        job.in_flight = Some(InFlight {
            endpoint: index,
            number: job.attempts_sent,
            reservation,
            sent_at: now,
        });
        let endpoint = &mut self.endpoints[index];
        endpoint.in_flight += 1;
        endpoint.counters.requests += 1;
        self.in_flight += 1;
        effects.push(Effect::Send {
            job: id,
            endpoint: index,
            number: job.attempts_sent,
            request: job.request.clone(),
            tokens: cost.tokens,
        });
    }

    /// Counts an attempt out of flight (the one place that does; `start_attempt` counts in).
    fn end_attempt(&mut self, attempt: &InFlight) {
        self.endpoints[attempt.endpoint].in_flight -= 1;
        self.in_flight -= 1;
    }

    /// Settles the attempt's charge, records it, and acts on the retry decision.
    fn conclude(
        &mut self,
        now: Instant,
        id: JobId,
        attempt: InFlight,
        end: AttemptEnd,
        effects: &mut Vec<Effect<P>>,
    ) {
        let index = attempt.endpoint;
        self.endpoints[index].account(now, attempt.reservation, &end);
        let endpoint = &self.endpoints[index];
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let (report, lost) = match end {
            AttemptEnd::Lost => {
                let elapsed = now.saturating_duration_since(attempt.sent_at);
                job.history
                    .record(AttemptRecord::lost(&endpoint.name, elapsed));
                (None, true)
            }
            AttemptEnd::Declined { .. } => {
                // Nothing was sent: as if the attempt had never been made.
                job.attempts_sent = job.attempts_sent.saturating_sub(1);
                (None, false)
            }
            AttemptEnd::Finished(report) => {
                if matches!(report.outcome, AttemptOutcome::Success) {
                    self.router.observe_latency(index, report.elapsed);
                }
                let record =
                    AttemptRecord::from_outcome(&endpoint.name, &report.outcome, report.elapsed)
                        .with_request_id(report.request_id.clone());
                job.history.record_at(now, record, &report.outcome);
                job.upstream_total += report.elapsed;
                (Some(report), false)
            }
        };
        let ending = match &report {
            Some(report) => report.ending(),
            None if lost => Ending::Lost,
            None => Ending::Declined,
        };
        match job.retry.decide(&job.history, ending, now) {
            Decision::Deliver => match report {
                Some(report) => self.deliver(now, id, index, *report, effects),
                None => self.fail(now, id, JobErrorKind::RetriesExhausted, effects),
            },
            Decision::Retry { elsewhere } => {
                if elsewhere {
                    job.avoid = Some(index);
                }
                self.queue.push_front(id);
            }
            Decision::Fail(kind) => self.fail(now, id, kind, effects),
        }
    }

    fn deliver(
        &mut self,
        now: Instant,
        id: JobId,
        index: usize,
        report: AttemptReport,
        effects: &mut Vec<Effect<P>>,
    ) {
        let Some(reply) = report.reply else {
            // A success without a reply cannot happen; fail rather than lose the job.
            self.fail(now, id, JobErrorKind::RetriesExhausted, effects);
            return;
        };
        let deadline = self.deadline_of(id);
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        if let Some(at) = deadline {
            self.deadlines.remove(&(at, id));
        }
        let total_time = now.saturating_duration_since(job.history.started);
        let result = JobResult {
            reply,
            endpoint: self.endpoints[index].name.clone(),
            attempts: job.history.attempts,
            request_id: report.request_id,
            queued_for: total_time.saturating_sub(job.upstream_total),
            upstream_time: report.elapsed,
            server_time: report.server_time,
            total_time,
        };
        effects.push(Effect::Deliver {
            payload: job.payload,
            result: Box::new(result),
        });
    }

    fn fail(&mut self, now: Instant, id: JobId, kind: JobErrorKind, effects: &mut Vec<Effect<P>>) {
        let deadline = self.deadline_of(id);
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        if let Some(at) = deadline {
            self.deadlines.remove(&(at, id));
        }
        effects.push(Effect::Fail {
            payload: job.payload,
            total_time: now.saturating_duration_since(job.history.started),
            error: job.history.into_error(kind),
        });
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The endpoints a pinned job may use: one deployment (pinned by its `name`), or every
/// deployment of one `model` (they share [`Endpoint::model_group`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    /// The endpoint at this index.
    Endpoint(usize),
    /// Every endpoint of this model group.
    Model(usize),
}

/// True when a job pinned by `pin` (or unpinned) may use `endpoint`, at `index`.
pub(crate) fn allowed(pin: Option<Pin>, endpoint: &Endpoint, index: usize) -> bool {
    match pin {
        None => true,
        Some(Pin::Endpoint(pinned)) => pinned == index,
        Some(Pin::Model(group)) => endpoint.model_group == group,
    }
}

/// Whether unpinned jobs behind a job that could not be placed may still be placed before it.
/// Not when nothing has in-flight room (no job behind it can go either), nor once it has
/// waited [`OVERTAKE_AGE_LIMIT`] (ageing: the jobs behind it wait until it is placed). A pinned
/// job waits for its own endpoint and holds nobody back.
fn may_overtake(placement: &Placement, pinned: bool, waited: Duration) -> bool {
    pinned || (!matches!(placement, Placement::Busy) && waited < OVERTAKE_AGE_LIMIT)
}
