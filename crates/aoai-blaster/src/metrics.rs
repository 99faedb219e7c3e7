//! Prometheus metrics: what the blaster counts, and a handle that renders them.
//!
//! The actors record through the [`metrics`] facade, so the numbers go to whichever recorder
//! the process installed: none (every call is a no-op), the Prometheus recorder that
//! [`MetricsHandle::install`] sets up, or one of your own. The `metrics` crate keeps **one
//! global recorder per process**: install it once, at start-up, *before* starting the
//! [`Dispatcher`](crate::Dispatcher) (each endpoint actor takes its handles when it starts).
//!
//! ```no_run
//! use aoai_blaster::metrics::{self, MetricsHandle};
//!
//! #[actix::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let handle = MetricsHandle::install()?;
//!     // Optional: serve `GET /metrics` for Prometheus (the CLI's `--metrics-addr`).
//!     let server = metrics::serve(handle.clone(), "127.0.0.1:9464")?;
//!     println!("metrics on http://{}/metrics", server.local_addr());
//!     // ... start the Dispatcher, run jobs ...
//!     print!("{}", handle.render());
//!     server.stop().await;
//!     Ok(())
//! }
//! ```
//!
//! # What is recorded
//!
//! Per endpoint (label `endpoint`: the deployment's `name`), by the endpoint actors:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `aoai_blaster_requests_total{endpoint,status}` | counter | HTTP attempts by reply class: `2xx`, `429`, `4xx`, `5xx`, `other`, `no_reply` (connection failed, timed out before the headers) |
//! | `aoai_blaster_outcomes_total{endpoint,outcome}` | counter | attempts by classified outcome: `success`, `rate_limited`, `timeout`, `connect`, `server`, `invalid_reply`, `stream_cut`, `transient_other`, `job_fatal`, `endpoint_fatal` |
//! | `aoai_blaster_rate_limited_total{endpoint}` | counter | 429 replies |
//! | `aoai_blaster_retries_total{endpoint}` | counter | attempts that were not a job's first |
//! | `aoai_blaster_declined_total{endpoint}` | counter | attempts the endpoint turned back unsent (it was cooling down or disabled) |
//! | `aoai_blaster_stale_connection_retries_total{endpoint}` | counter | requests resent at once on a fresh connection because a pooled one the server had closed failed them before any reply byte (not failures: the attempt's outcome is the resend's) |
//! | `aoai_blaster_endpoint_in_flight{endpoint}` | gauge | HTTP calls in flight |
//! | `aoai_blaster_endpoint_state{endpoint,state}` | gauge | 1 for the current state (`healthy`, `cooling`, `probing`, `disabled`), 0 for the others |
//! | `aoai_blaster_endpoint_failure_streak{endpoint}` | gauge | consecutive transient failures |
//! | `aoai_blaster_health_changes_total{endpoint,state}` | counter | health changes, by the state entered |
//! | `aoai_blaster_tokens_used_total{endpoint,kind}` | counter | tokens of successful replies (`kind`: `prompt`, `completion`) as the service reported them |
//! | `aoai_blaster_upstream_seconds{endpoint}` | histogram | duration of answered HTTP calls |
//! | `aoai_blaster_server_seconds{endpoint}` | histogram | the server's own processing time, when the reply states it (`x-sim-processing-us`, `openai-processing-ms`) |
//! | `aoai_blaster_http_overhead_seconds{endpoint}` | histogram | call duration minus the server's processing: HTTP client, connection pool and network |
//!
//! Dispatcher-wide, through the handles of [`DispatcherMetrics`] ([`DispatcherMetrics::queue`],
//! [`DispatcherMetrics::tokens_charged`], [`DispatcherMetrics::job_succeeded`]) and
//! [`job_failed`]: `aoai_blaster_queue_depth`, `aoai_blaster_in_flight`,
//! `aoai_blaster_tokens_charged_total{endpoint}`, `aoai_blaster_jobs_total{outcome}`,
//! `aoai_blaster_shared_redis` (with `shared:`: 1 through Redis, 0 on `1/N` local budgets),
//! `aoai_blaster_job_seconds`, `aoai_blaster_queue_wait_seconds` and
//! `aoai_blaster_job_overhead_seconds` (a job's whole time minus the server's processing: what
//! the blaster adds).
//!
//! Nothing secret is recorded: labels are deployment names, status classes and outcome kinds.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use aoai_blaster_core::classify::{AttemptOutcome, TransientKind};
use aoai_blaster_core::health::HealthState;
use aoai_blaster_core::operation::TokenCounts;
use aoai_blaster_core::retry::JobErrorKind;
use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets (seconds) for request and job durations: 100 µs to 2 minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets (seconds) for overheads: 5 µs to 1 second.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.1, 1.0,
];

/// How often the installed recorder drains histogram samples into its buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why [`MetricsHandle::install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus recorder could not be built or installed.
    #[error(
        "cannot install the Prometheus metrics recorder: {0}; another `metrics` recorder may already be installed in this process (there is one per process): install aoai-blaster's once at start-up, or render your own recorder instead"
    )]
    Install(String),
}

/// The installed Prometheus recorder: renders every metric in the text exposition format.
///
/// Cheap to clone; all clones render the same registry.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsHandle").finish_non_exhaustive()
    }
}

static INSTALLED: OnceLock<Result<MetricsHandle, String>> = OnceLock::new();

impl MetricsHandle {
    /// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls
    /// return the same handle) and starts a background thread that keeps its histograms
    /// drained. Call it before starting the [`Dispatcher`](crate::Dispatcher).
    ///
    /// Fails when another recorder was installed first.
    pub fn install() -> Result<MetricsHandle, MetricsError> {
        INSTALLED
            .get_or_init(Self::build_and_install)
            .clone()
            .map_err(MetricsError::Install)
    }

    fn build_and_install() -> Result<MetricsHandle, String> {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("overhead_seconds".into()),
                    OVERHEAD_BUCKETS,
                )
            })
            .map_err(|error| error.to_string())?;
        let prometheus = builder
            .install_recorder()
            .map_err(|error| error.to_string())?;
        describe_all();
        let upkeep = prometheus.clone();
        std::thread::Builder::new()
            .name("aoai-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .map_err(|error| format!("cannot start the upkeep thread: {error}"))?;
        Ok(MetricsHandle { prometheus })
    }

    /// Every metric, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.prometheus.render()
    }
}

// A catalogue, one `describe_*!` per metric: read top to bottom, splitting it would hide none.
fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "aoai_blaster_requests_total",
        Unit::Count,
        "HTTP attempts by endpoint and reply status class"
    );
    describe_counter!(
        "aoai_blaster_outcomes_total",
        Unit::Count,
        "Attempts by endpoint and classified outcome"
    );
    describe_counter!(
        "aoai_blaster_rate_limited_total",
        Unit::Count,
        "429 replies by endpoint"
    );
    describe_counter!(
        "aoai_blaster_retries_total",
        Unit::Count,
        "Attempts that were not their job's first"
    );
    describe_counter!(
        "aoai_blaster_stale_connection_retries_total",
        Unit::Count,
        "Requests resent on a fresh connection after a pooled one the server had closed"
    );
    describe_counter!(
        "aoai_blaster_declined_total",
        Unit::Count,
        "Attempts an endpoint turned back unsent (cooling down or disabled)"
    );
    describe_gauge!(
        "aoai_blaster_endpoint_in_flight",
        Unit::Count,
        "HTTP calls in flight per endpoint"
    );
    describe_gauge!(
        "aoai_blaster_endpoint_state",
        "1 for the endpoint's current health state, 0 for the others"
    );
    describe_gauge!(
        "aoai_blaster_endpoint_failure_streak",
        Unit::Count,
        "Consecutive transient failures per endpoint"
    );
    describe_counter!(
        "aoai_blaster_health_changes_total",
        Unit::Count,
        "Endpoint health changes, by the state entered"
    );
    describe_counter!(
        "aoai_blaster_tokens_used_total",
        Unit::Count,
        "Tokens of successful replies as the service reported them"
    );
    describe_counter!(
        "aoai_blaster_tokens_charged_total",
        Unit::Count,
        "Tokens reserved against the endpoint's quota before sending (the estimate Azure charges on arrival)"
    );
    describe_histogram!(
        "aoai_blaster_upstream_seconds",
        Unit::Seconds,
        "Duration of answered HTTP calls"
    );
    describe_histogram!(
        "aoai_blaster_server_seconds",
        Unit::Seconds,
        "The server's own processing time, when the reply states it"
    );
    describe_histogram!(
        "aoai_blaster_http_overhead_seconds",
        Unit::Seconds,
        "HTTP call duration minus the server's processing time"
    );
    describe_gauge!(
        "aoai_blaster_queue_depth",
        Unit::Count,
        "Jobs waiting in the Dispatcher's queue"
    );
    describe_gauge!(
        "aoai_blaster_shared_redis",
        Unit::Count,
        "With shared: 1 while quotas are paced through Redis, 0 while on 1/N local budgets"
    );
    describe_gauge!(
        "aoai_blaster_in_flight",
        Unit::Count,
        "Attempts in flight over all endpoints"
    );
    describe_counter!(
        "aoai_blaster_jobs_total",
        Unit::Count,
        "Finished jobs by outcome"
    );
    describe_histogram!(
        "aoai_blaster_job_seconds",
        Unit::Seconds,
        "Time from submission to result of successful jobs"
    );
    describe_histogram!(
        "aoai_blaster_queue_wait_seconds",
        Unit::Seconds,
        "Time successful jobs spent queued and between attempts"
    );
    describe_histogram!(
        "aoai_blaster_job_overhead_seconds",
        Unit::Seconds,
        "A successful job's whole time minus the server's processing: what the blaster adds"
    );
}

/// The class of an attempt's reply, the `status` label of `aoai_blaster_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 200–299.
    Success,
    /// 429.
    RateLimited,
    /// Other 400–499.
    ClientError,
    /// 500–599.
    ServerError,
    /// Any other status (1xx, 3xx).
    Other,
    /// No reply headers arrived (connection failed, timeout, credential unavailable).
    NoReply,
}

impl StatusClass {
    const ALL: [StatusClass; 6] = [
        StatusClass::Success,
        StatusClass::RateLimited,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Other,
        StatusClass::NoReply,
    ];

    /// The class of `status` (`None`: no reply).
    pub fn of(status: Option<u16>) -> StatusClass {
        match status {
            None => StatusClass::NoReply,
            Some(200..=299) => StatusClass::Success,
            Some(429) => StatusClass::RateLimited,
            Some(400..=499) => StatusClass::ClientError,
            Some(500..=599) => StatusClass::ServerError,
            Some(_) => StatusClass::Other,
        }
    }

    /// The label value: `2xx`, `429`, `4xx`, `5xx`, `other`, `no_reply`.
    pub fn label(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::RateLimited => "429",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Other => "other",
            StatusClass::NoReply => "no_reply",
        }
    }
}

/// The `outcome` label of `aoai_blaster_outcomes_total` for `outcome`.
pub fn outcome_label(outcome: &AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Success => "success",
        AttemptOutcome::RateLimited { .. } => "rate_limited",
        AttemptOutcome::Transient(TransientKind::Timeout(_)) => "timeout",
        AttemptOutcome::Transient(TransientKind::Connect(_)) => "connect",
        AttemptOutcome::Transient(TransientKind::Server(_)) => "server",
        AttemptOutcome::Transient(TransientKind::InvalidReply(_)) => "invalid_reply",
        AttemptOutcome::Transient(TransientKind::StreamCut(_)) => "stream_cut",
        AttemptOutcome::Transient(TransientKind::Other(_)) => "transient_other",
        AttemptOutcome::JobFatal(_) => "job_fatal",
        AttemptOutcome::ReplyTooLarge { .. } => "reply_too_large",
        AttemptOutcome::EndpointFatal { .. } => "endpoint_fatal",
    }
}

const OUTCOME_LABELS: [&str; 11] = [
    "success",
    "rate_limited",
    "timeout",
    "connect",
    "server",
    "invalid_reply",
    "stream_cut",
    "transient_other",
    "job_fatal",
    "reply_too_large",
    "endpoint_fatal",
];

/// The `state` label for a health state: `healthy`, `cooling`, `probing`, `disabled`.
pub fn state_label(state: &HealthState) -> &'static str {
    match state {
        HealthState::Healthy => "healthy",
        HealthState::Cooling { .. } => "cooling",
        HealthState::Probing => "probing",
        HealthState::Disabled { .. } => "disabled",
    }
}

const STATE_LABELS: [&str; 4] = ["healthy", "cooling", "probing", "disabled"];

/// One endpoint's metric handles, registered once (label lookups stay off the hot path).
///
/// Built when the endpoint actor starts, from the recorder installed at that moment.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    requests: [Counter; 6],
    outcomes: [Counter; OUTCOME_LABELS.len()],
    rate_limited: Counter,
    retries: Counter,
    stale_retries: Counter,
    declined: Counter,
    in_flight: Gauge,
    state: [Gauge; 4],
    health_changes: [Counter; 4],
    failure_streak: Gauge,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    upstream: Histogram,
    server: Histogram,
    http_overhead: Histogram,
}

impl EndpointMetrics {
    /// Registers the metrics of the endpoint named `endpoint` (state `healthy`).
    pub fn new(endpoint: &str) -> Self {
        let name = endpoint.to_owned();
        let requests = StatusClass::ALL.map(|class| {
            metrics::counter!("aoai_blaster_requests_total", "endpoint" => name.clone(), "status" => class.label())
        });
        let outcomes = OUTCOME_LABELS.map(|outcome| {
            metrics::counter!("aoai_blaster_outcomes_total", "endpoint" => name.clone(), "outcome" => outcome)
        });
        let state = STATE_LABELS.map(|state| {
            metrics::gauge!("aoai_blaster_endpoint_state", "endpoint" => name.clone(), "state" => state)
        });
        let health_changes = STATE_LABELS.map(|state| {
            metrics::counter!("aoai_blaster_health_changes_total", "endpoint" => name.clone(), "state" => state)
        });
        let this = Self {
            requests,
            outcomes,
            rate_limited: metrics::counter!("aoai_blaster_rate_limited_total", "endpoint" => name.clone()),
            retries: metrics::counter!("aoai_blaster_retries_total", "endpoint" => name.clone()),
            stale_retries: metrics::counter!("aoai_blaster_stale_connection_retries_total", "endpoint" => name.clone()),
            declined: metrics::counter!("aoai_blaster_declined_total", "endpoint" => name.clone()),
            in_flight: metrics::gauge!("aoai_blaster_endpoint_in_flight", "endpoint" => name.clone()),
            state,
            health_changes,
            failure_streak: metrics::gauge!("aoai_blaster_endpoint_failure_streak", "endpoint" => name.clone()),
            prompt_tokens: metrics::counter!("aoai_blaster_tokens_used_total", "endpoint" => name.clone(), "kind" => "prompt"),
            completion_tokens: metrics::counter!("aoai_blaster_tokens_used_total", "endpoint" => name.clone(), "kind" => "completion"),
            upstream: metrics::histogram!("aoai_blaster_upstream_seconds", "endpoint" => name.clone()),
            server: metrics::histogram!("aoai_blaster_server_seconds", "endpoint" => name.clone()),
            http_overhead: metrics::histogram!("aoai_blaster_http_overhead_seconds", "endpoint" => name),
        };
        this.set_state(&HealthState::Healthy, 0);
        this
    }

    /// An attempt (number `attempt`, 1 for a job's first) starts its HTTP call.
    pub fn attempt_started(&self, attempt: u32) {
        self.in_flight.increment(1.0);
        if attempt > 1 {
            self.retries.increment(1);
        }
    }

    /// The HTTP call of an attempt ended.
    pub fn attempt_finished(&self, finished: &FinishedAttempt<'_>) {
        self.in_flight.decrement(1.0);
        let class = StatusClass::of(finished.status);
        if let Some(index) = StatusClass::ALL.iter().position(|c| *c == class) {
            self.requests[index].increment(1);
        }
        let outcome = outcome_label(finished.outcome);
        if let Some(index) = OUTCOME_LABELS.iter().position(|o| *o == outcome) {
            self.outcomes[index].increment(1);
        }
        if class == StatusClass::RateLimited {
            self.rate_limited.increment(1);
        }
        self.stale_retries
            .increment(u64::from(finished.stale_retries));
        if let Some(usage) = finished.usage {
            self.prompt_tokens.increment(usage.prompt_tokens);
            self.completion_tokens.increment(usage.completion_tokens);
        }
        if finished.status.is_some() {
            self.upstream.record(finished.elapsed.as_secs_f64());
            if let Some(server) = finished.server_time {
                self.server.record(server.as_secs_f64());
                self.http_overhead
                    .record(finished.elapsed.saturating_sub(server).as_secs_f64());
            }
        }
    }

    /// The HTTP call of an attempt was abandoned (a restart replaced the client).
    pub fn attempt_lost(&self) {
        self.in_flight.decrement(1.0);
    }

    /// The endpoint turned an attempt back without sending it.
    pub fn declined(&self) {
        self.declined.increment(1);
    }

    /// The endpoint announced its health: `state` with `failure_streak`; `changed` is false when
    /// the state did not move (a supervisor restart re-announces it), so no change is counted.
    pub fn health(&self, state: &HealthState, failure_streak: u32, changed: bool) {
        if changed {
            let label = state_label(state);
            if let Some(index) = STATE_LABELS.iter().position(|s| *s == label) {
                self.health_changes[index].increment(1);
            }
        }
        self.set_state(state, failure_streak);
    }

    fn set_state(&self, state: &HealthState, failure_streak: u32) {
        let label = state_label(state);
        for (gauge, name) in self.state.iter().zip(STATE_LABELS) {
            gauge.set(if name == label { 1.0 } else { 0.0 });
        }
        self.failure_streak.set(f64::from(failure_streak));
    }
}

/// What [`EndpointMetrics::attempt_finished`] records about one HTTP call.
#[derive(Debug, Clone, Copy)]
pub struct FinishedAttempt<'a> {
    /// The HTTP status, when a reply arrived.
    pub status: Option<u16>,
    /// The classified outcome.
    pub outcome: &'a AttemptOutcome,
    /// Duration of the call.
    pub elapsed: Duration,
    /// The server's own processing time, when the reply stated it.
    pub server_time: Option<Duration>,
    /// Token usage of a successful reply.
    pub usage: Option<TokenCounts>,
    /// Resends on a fresh connection after a stale pooled one, within the call.
    pub stale_retries: u32,
}

/// The Dispatcher's metric handles, registered once (a label lookup per job would cost more
/// than the rest of the Dispatcher's work on it).
///
/// Built when the Dispatcher starts, from the recorder installed at that moment.
#[derive(Debug, Clone)]
pub struct DispatcherMetrics {
    queue_depth: Gauge,
    in_flight: Gauge,
    succeeded: Counter,
    job_seconds: Histogram,
    queue_wait: Histogram,
    job_overhead: Histogram,
    /// Per endpoint, in config order.
    tokens_charged: Vec<Counter>,
}

impl DispatcherMetrics {
    /// Registers the Dispatcher's metrics for endpoints named `endpoints` (config order).
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            queue_depth: metrics::gauge!("aoai_blaster_queue_depth"),
            in_flight: metrics::gauge!("aoai_blaster_in_flight"),
            succeeded: metrics::counter!("aoai_blaster_jobs_total", "outcome" => "success"),
            job_seconds: metrics::histogram!("aoai_blaster_job_seconds"),
            queue_wait: metrics::histogram!("aoai_blaster_queue_wait_seconds"),
            job_overhead: metrics::histogram!("aoai_blaster_job_overhead_seconds"),
            tokens_charged: endpoints
                .into_iter()
                .map(|endpoint| {
                    metrics::counter!("aoai_blaster_tokens_charged_total", "endpoint" => endpoint.to_owned())
                })
                .collect(),
        }
    }

    /// The number of jobs waiting in the queue, and of attempts in flight over all endpoints.
    pub fn queue(&self, queued: usize, in_flight: usize) {
        self.queue_depth.set(queued as f64);
        self.in_flight.set(in_flight as f64);
    }

    /// With `shared:`, whether quotas are paced through Redis (`true`) or alone on `1/N` of
    /// each (`false`): `aoai_blaster_shared_redis`.
    pub fn shared_link(&self, shared: bool) {
        metrics::gauge!("aoai_blaster_shared_redis").set(if shared { 1.0 } else { 0.0 });
    }

    /// `tokens` were reserved against the quota of the endpoint at `endpoint` (config order)
    /// for an attempt.
    pub fn tokens_charged(&self, endpoint: usize, tokens: u64) {
        if let Some(counter) = self.tokens_charged.get(endpoint) {
            counter.increment(tokens);
        }
    }

    /// A job succeeded after `total` (from submission), of which `queued` was spent waiting;
    /// `server_time` is the answering server's own processing time, when stated.
    pub fn job_succeeded(&self, total: Duration, queued: Duration, server_time: Option<Duration>) {
        self.succeeded.increment(1);
        self.job_seconds.record(total.as_secs_f64());
        self.queue_wait.record(queued.as_secs_f64());
        if let Some(server) = server_time {
            self.job_overhead
                .record(total.saturating_sub(server).as_secs_f64());
        }
    }
}

/// Dispatcher: a job failed with `kind`.
pub fn job_failed(kind: &JobErrorKind) {
    metrics::counter!("aoai_blaster_jobs_total", "outcome" => job_error_label(kind)).increment(1);
}

/// The `outcome` label of `aoai_blaster_jobs_total` for a failed job: the job error's own
/// stable code ([`JobErrorKind::code`]).
pub fn job_error_label(kind: &JobErrorKind) -> &'static str {
    kind.code()
}

/// The server's own processing time as a reply states it: `x-sim-processing-us` (the
/// simulator, microseconds) or `openai-processing-ms` (milliseconds).
pub fn server_time_from_headers(lookup: &dyn Fn(&str) -> Option<String>) -> Option<Duration> {
    if let Some(micros) = lookup("x-sim-processing-us").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_micros(micros));
    }
    lookup("openai-processing-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
}

/// A running `GET /metrics` listener (see [`serve`]).
pub struct MetricsServer {
    local_addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// The address it listens on (the chosen port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the listener (open scrapes get a second to finish).
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Serves the metrics of `handle` over HTTP at `GET /metrics` on `addr` (for example the CLI's
/// `--metrics-addr 127.0.0.1:9464`; port 0 picks a free port).
///
/// Call it inside an actix System (`#[actix::main]`, `System::new().block_on(..)`): the server
/// runs on that System with one worker thread, does not take over Ctrl-C, and stops with
/// [`MetricsServer::stop`] or when the System stops.
pub fn serve(handle: MetricsHandle, addr: impl ToSocketAddrs) -> std::io::Result<MetricsServer> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let server = HttpServer::new(move || {
        let handle = handle.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                let body = handle.render();
                async move {
                    HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4; charset=utf-8")
                        .body(body)
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)?;
    let local_addr = server.addrs().first().copied().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "the metrics listener bound no address",
        )
    })?;
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(MetricsServer { local_addr, handle })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aoai_blaster_core::classify::ApiError;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(Some(200)).label(), "2xx");
        assert_eq!(StatusClass::of(Some(204)).label(), "2xx");
        assert_eq!(StatusClass::of(Some(429)).label(), "429");
        assert_eq!(StatusClass::of(Some(400)).label(), "4xx");
        assert_eq!(StatusClass::of(Some(503)).label(), "5xx");
        assert_eq!(StatusClass::of(Some(302)).label(), "other");
        assert_eq!(StatusClass::of(None).label(), "no_reply");
    }

    #[test]
    fn every_outcome_has_a_registered_label() {
        let error = ApiError {
            status: 500,
            code: None,
            message: String::new(),
        };
        let outcomes = [
            AttemptOutcome::Success,
            AttemptOutcome::Transient(TransientKind::Timeout(String::new())),
            AttemptOutcome::Transient(TransientKind::Connect(String::new())),
            AttemptOutcome::Transient(TransientKind::Server(error.clone())),
            AttemptOutcome::Transient(TransientKind::InvalidReply(String::new())),
            AttemptOutcome::Transient(TransientKind::StreamCut(String::new())),
            AttemptOutcome::Transient(TransientKind::Other(String::new())),
            AttemptOutcome::JobFatal(error.clone()),
            AttemptOutcome::ReplyTooLarge { limit: 1 },
            AttemptOutcome::EndpointFatal {
                reason: String::new(),
                error,
            },
        ];
        let labels: Vec<&str> = outcomes.iter().map(outcome_label).collect();
        for label in &labels {
            assert!(OUTCOME_LABELS.contains(label), "{label} is not registered");
        }
        let mut distinct = labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), labels.len());
    }

    #[test]
    fn server_time_prefers_the_simulator_header() {
        let both = headers(&[
            ("x-sim-processing-us", "37"),
            ("openai-processing-ms", "12"),
        ]);
        assert_eq!(
            server_time_from_headers(&both),
            Some(Duration::from_micros(37))
        );
        let openai = headers(&[("openai-processing-ms", "12.5")]);
        assert_eq!(
            server_time_from_headers(&openai),
            Some(Duration::from_micros(12_500))
        );
        let bad = headers(&[
            ("x-sim-processing-us", "soon"),
            ("openai-processing-ms", "-1"),
        ]);
        assert_eq!(server_time_from_headers(&bad), None);
        assert_eq!(server_time_from_headers(&headers(&[])), None);
    }

    #[test]
    fn job_error_labels_are_distinct() {
        let kinds = [
            JobErrorKind::RetriesExhausted,
            JobErrorKind::AllEndpointsDisabled,
            JobErrorKind::DeadlineExceeded,
            JobErrorKind::Cancelled,
            JobErrorKind::QueueClosed,
        ];
        let mut labels: Vec<&str> = kinds.iter().map(job_error_label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), kinds.len());
    }
}
