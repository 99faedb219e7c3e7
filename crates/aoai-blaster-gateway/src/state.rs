//! What every request handler shares: the Dispatcher, the routes, the keys, and the count of
//! requests held (the gateway's side of the queue bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use actix::Addr;
use aoai_blaster::core::gateway::{
    Backlog, GatewayError, InboundKeys, ModelRoutes, Readiness, Route, retry_after,
};
use aoai_blaster::metrics::MetricsHandle;
use aoai_blaster::{BlasterConfig, Dispatcher, EndpointReport, EndpointState, GetReport};

/// The wait named when nothing better is known (no report, every deployment disabled for good).
const FALLBACK_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Shared by every handler, on every worker.
pub(crate) struct State {
    pub(crate) dispatcher: Addr<Dispatcher>,
    pub(crate) routes: ModelRoutes,
    pub(crate) keys: InboundKeys,
    pub(crate) metrics: MetricsHandle,
    /// Requests holding a job (queued or in flight).
    held: Arc<AtomicUsize>,
    /// The most the scheduler holds (`num_workers + queue_capacity`): beyond, a request would
    /// wait unseen in its intake, so the gateway answers 429 instead.
    capacity: usize,
    workers: usize,
}

/// One request's place among those held; given back when dropped.
pub(crate) struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl State {
    pub(crate) fn new(
        config: &BlasterConfig,
        dispatcher: Addr<Dispatcher>,
        metrics: MetricsHandle,
    ) -> Self {
        State {
            dispatcher,
            routes: ModelRoutes::new(config),
            keys: config.gateway.api_keys.clone(),
            metrics,
            held: Arc::new(AtomicUsize::new(0)),
            capacity: config.num_workers.saturating_add(config.queue_capacity),
            workers: config.num_workers,
        }
    }

    /// A place for one more request, or `None` when as many are held as the queue takes.
    pub(crate) fn admit(&self) -> Option<Permit> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.capacity).then_some(held + 1)
            })
            .ok()
            .map(|_| Permit(self.held.clone()))
    }

    /// Requests holding a job now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The 429 for a full queue, naming when the jobs ahead will be done.
    pub(crate) async fn queue_full(&self, route: &Route) -> GatewayError {
        let held = self.held.load(Ordering::Acquire);
        let wait = self.room_in(route, Some(held)).await;
        GatewayError::queue_full(held, wait.unwrap_or(FALLBACK_RETRY_AFTER))
    }

    /// When a deployment that may serve `route` will have room (after the `held` jobs ahead,
    /// when the queue was full), from the Dispatcher's report.
    pub(crate) async fn room_in(&self, route: &Route, held: Option<usize>) -> Option<Duration> {
        let reports = self.dispatcher.send(GetReport).await.ok()?;
        let now = SystemTime::now();
        let serving: Vec<&EndpointReport> = reports
            .iter()
            .filter(|report| self.routes.serves(route, &report.name))
            .collect();
        let mean_latency = mean_latency(&serving);
        let ready = serving
            .iter()
            .map(|report| readiness(report, now, mean_latency));
        let backlog = held.map(|held| Backlog {
            held,
            workers: self.workers,
            mean_latency,
        });
        retry_after(now, ready, backlog)
    }
}

/// When one endpoint could take a job, from its report.
fn readiness(report: &EndpointReport, now: SystemTime, latency: Option<Duration>) -> Readiness {
    match report.state {
        EndpointState::Disabled => report.cooling_until.map_or(Readiness::Never, Readiness::At),
        EndpointState::Cooling => report.cooling_until.map_or(Readiness::Now, Readiness::At),
        EndpointState::Healthy | EndpointState::Probing => {
            let full = report.max_in_flight > 0 && report.in_flight >= report.max_in_flight;
            let slot = full.then(|| now + latency.unwrap_or(Duration::ZERO));
            match (report.waiting_for_quota_until, slot) {
                (Some(quota), Some(slot)) => Readiness::At(quota.max(slot)),
                (Some(at), None) | (None, Some(at)) => Readiness::At(at),
                (None, None) => Readiness::Now,
            }
        }
    }
}

/// The mean duration of answered attempts over `reports`.
fn mean_latency(reports: &[&EndpointReport]) -> Option<Duration> {
    let (total, count) = reports.iter().fold((Duration::ZERO, 0u64), |(t, c), r| {
        (t + r.counts.latency_total, c + r.counts.latency_count)
    });
    (count > 0).then(|| total / u32::try_from(count).unwrap_or(u32::MAX))
}
