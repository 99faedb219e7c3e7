//! The HTTP side: listeners (actix-web servers), thin handlers that carry out the engine's
//! decisions, and the [`SimHandle`] that controls them.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::body::SizedStream;
use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::Stream;

use crate::clock::SimClock;
use crate::config::{ClockMode, OutageMode, SimConfig};
use crate::engine::{
    ApiCall, Body, Credentials, Decision, Engine, InFlight, Route, SHARED_LISTENER,
};
use crate::error::SimError;
use crate::request::Api;
use crate::stats::SimStats;
use crate::stream::{StreamEnd, StreamEvent, StreamPlan};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What each handler of one listener shares.
struct ListenerCtx {
    engine: Arc<Engine>,
    key: String,
}

struct Running {
    handle: ServerHandle,
    task: actix_rt::task::JoinHandle<io::Result<()>>,
}

/// One listener: its address (kept across outages), the deployments it serves, its server.
struct ListenerCtl {
    ctx: web::Data<ListenerCtx>,
    addr: SocketAddr,
    /// HTTPS when set.
    tls: Option<rustls::ServerConfig>,
    deployments: Vec<String>,
    workers: usize,
    running: tokio::sync::Mutex<Option<Running>>,
    /// Set by `SimHandle::set_refusing`; overrides the outage schedule.
    forced_refusing: Mutex<Option<bool>>,
}

impl ListenerCtl {
    fn is_shared(&self) -> bool {
        self.ctx.key == SHARED_LISTENER
    }

    fn url(&self) -> String {
        format!("{}://{}/", self.scheme(), self.addr)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Open or close the listening socket as the schedule (or a forced state) wants.
    async fn reconcile(&self) -> Result<(), SimError> {
        let forced = *self
            .forced_refusing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let refusing = forced.unwrap_or_else(|| self.ctx.engine.refuse_scheduled(&self.ctx.key));
        let mut running = self.running.lock().await;
        match (refusing, running.take()) {
            (true, Some(server)) => {
                tracing::info!(listener = %self.ctx.key, "refusing connections");
                stop_server(server).await;
            }
            (false, None) => {
                tracing::info!(listener = %self.ctx.key, "accepting connections again");
                let (server, _) =
                    launch(self.ctx.clone(), self.addr, self.workers, self.tls.clone())?;
                *running = Some(server);
            }
            (_, server) => *running = server,
        }
        Ok(())
    }

    async fn stop(&self) {
        if let Some(server) = self.running.lock().await.take() {
            stop_server(server).await;
        }
    }
}

async fn stop_server(server: Running) {
    server.handle.stop(false).await;
    // The server future ends once stopped; its result carries nothing more to report.
    let _ = server.task.await;
}

fn launch(
    ctx: web::Data<ListenerCtx>,
    addr: SocketAddr,
    workers: usize,
    tls: Option<rustls::ServerConfig>,
) -> Result<(Running, SocketAddr), SimError> {
    let bind_error = |source: io::Error| SimError::Bind {
        addr: addr.to_string(),
        source,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(ctx.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .configure(routes)
    })
    .workers(workers)
    .shutdown_timeout(1)
    .disable_signals();
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(addr, tls),
        None => server.bind(addr),
    }
    .map_err(bind_error)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| bind_error(io::Error::other("no address was bound")))?;
    let server = server.run();
    let handle = server.handle();
    let task = actix_rt::spawn(server);
    Ok((Running { handle, task }, bound))
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            web::post().to(|req, body, ctx| on_deployment(Api::Chat, req, body, ctx)),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            web::post().to(|req, body, ctx| on_deployment(Api::Embeddings, req, body, ctx)),
        )
        .route(
            "/openai/deployments/{deployment}/responses",
            web::post().to(|req, body, ctx| on_deployment(Api::Responses, req, body, ctx)),
        )
        .route(
            "/openai/v1/chat/completions",
            web::post().to(|req, body, ctx| on_v1(Api::Chat, req, body, ctx)),
        )
        .route(
            "/openai/v1/embeddings",
            web::post().to(|req, body, ctx| on_v1(Api::Embeddings, req, body, ctx)),
        )
        .route(
            "/openai/v1/responses",
            web::post().to(|req, body, ctx| on_v1(Api::Responses, req, body, ctx)),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/stats", web::get().to(stats))
        .route("/msi/token", web::get().to(msi_token))
        .default_service(web::to(not_found));
}

/// The value of one query parameter (not percent-decoded: API versions need no decoding).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

fn credentials(req: &HttpRequest) -> Credentials<'_> {
    let headers = req.headers();
    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    Credentials { api_key, bearer }
}

/// `/openai/deployments/{deployment}/{api}?api-version=...`
async fn on_deployment(
    api: Api,
    req: HttpRequest,
    body: web::Bytes,
    ctx: web::Data<ListenerCtx>,
) -> HttpResponse {
    let started = Instant::now();
    let name = req.match_info().get("deployment").unwrap_or_default();
    let route = Route::Deployment {
        name,
        api_version: query_param(req.query_string(), "api-version"),
    };
    let decision = ctx.engine.call(ApiCall {
        listener: &ctx.key,
        api,
        route,
        credentials: credentials(&req),
        http2: req.version() == actix_web::http::Version::HTTP_2,
        body: &body,
    });
    respond(decision, started).await
}

/// `/openai/v1/{api}` (the deployment in `body.model`).
async fn on_v1(
    api: Api,
    req: HttpRequest,
    body: web::Bytes,
    ctx: web::Data<ListenerCtx>,
) -> HttpResponse {
    let started = Instant::now();
    let route = Route::V1 {
        api_version: query_param(req.query_string(), "api-version"),
    };
    let decision = ctx.engine.call(ApiCall {
        listener: &ctx.key,
        api,
        route,
        credentials: credentials(&req),
        http2: req.version() == actix_web::http::Version::HTTP_2,
        body: &body,
    });
    respond(decision, started).await
}

async fn respond(decision: Decision, started: Instant) -> HttpResponse {
    let processing = started.elapsed();
    let Decision {
        status,
        headers,
        body,
        delay,
        in_flight,
    } = decision;
    if !delay.is_zero() {
        actix_rt::time::sleep(delay).await;
    }
    let mut builder =
        HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (name, value) in headers {
        // Names are lowercase constants; values are ASCII we formatted ourselves.
        if let Ok(value) = HeaderValue::try_from(value) {
            builder.insert_header((HeaderName::from_static(name), value));
        }
    }
    builder.insert_header((
        HeaderName::from_static("x-sim-processing-us"),
        HeaderValue::from(u64::try_from(processing.as_micros()).unwrap_or(u64::MAX)),
    ));
    match body {
        Body::Full(bytes) => builder.body(bytes),
        Body::Stream(plan) => builder.streaming(event_stream(plan, in_flight)),
        Body::Torn { body, sent } => {
            let total = body.len() as u64;
            let event = StreamEvent {
                delay: Duration::ZERO,
                data: body.slice(..sent),
            };
            let plan = StreamPlan::new(vec![event], StreamEnd::Abort);
            builder.body(SizedStream::new(total, event_stream(plan, in_flight)))
        }
        Body::Sized(plan) => match plan.total_bytes() {
            Some(total) => builder.body(SizedStream::new(total, event_stream(plan, in_flight))),
            None => builder.streaming(event_stream(plan, in_flight)),
        },
    }
}

/// A body that sends the plan's events after their delays, then ends or aborts the connection.
fn event_stream(
    plan: StreamPlan,
    in_flight: Option<InFlight>,
) -> impl Stream<Item = Result<Bytes, io::Error>> {
    let state = (plan.into_cursor(), in_flight, false);
    futures_util::stream::unfold(state, |(mut cursor, in_flight, aborted)| async move {
        if aborted {
            return None;
        }
        if let Some(event) = cursor.next_event() {
            if !event.delay.is_zero() {
                actix_rt::time::sleep(event.delay).await;
            }
            return Some((Ok(event.data), (cursor, in_flight, false)));
        }
        match cursor.end {
            StreamEnd::Close => None,
            StreamEnd::Abort | StreamEnd::StallThenAbort(_) => {
                if let StreamEnd::StallThenAbort(stall) = cursor.end {
                    actix_rt::time::sleep(stall).await;
                }
                // Let the server flush what was sent before the connection goes down.
                tokio::task::yield_now().await;
                let error = io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "aoai-sim fault: connection dropped mid-reply",
                );
                Some((Err(error), (cursor, in_flight, true)))
            }
        }
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

async fn stats(ctx: web::Data<ListenerCtx>) -> HttpResponse {
    HttpResponse::Ok().json(ctx.engine.stats())
}

async fn msi_token(
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
    ctx: web::Data<ListenerCtx>,
) -> HttpResponse {
    let identity_header = req
        .headers()
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    let (status, body) = if ctx.key == SHARED_LISTENER {
        ctx.engine.msi_token(&query, identity_header)
    } else {
        let err = crate::azure_error::resource_not_found();
        (err.status, err.body)
    };
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
        .content_type("application/json")
        .body(body)
}

async fn not_found() -> HttpResponse {
    let err = crate::azure_error::resource_not_found();
    HttpResponse::NotFound()
        .content_type("application/json")
        .body(err.body)
}

/// A listener as the binary reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// `http://127.0.0.1:PORT/` (`https://` with `tls:`).
    pub url: String,
    /// Whether it is the shared listener.
    pub shared: bool,
    /// The deployments it serves.
    pub deployments: Vec<String>,
}

/// A running simulator: its addresses, counters, and controls. Call [`stop`](Self::stop) to
/// shut it down; dropping the handle leaves the listeners serving until the actix system ends.
///
/// ```no_run
/// # async fn demo() -> Result<(), aoai_sim::SimError> {
/// use aoai_sim::{DeploymentSpec, SimConfig};
/// let sim = aoai_sim::start(SimConfig::default().deployment(DeploymentSpec::new("gpt-4o"))).await?;
/// let url = format!("{}openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", sim.base_url());
/// // ... POST to `url` with header `api-key: sim-key` ...
/// println!("{url} served {} requests", sim.stats().deployment("gpt-4o").requests);
/// sim.stop().await;
/// # Ok(()) }
/// ```
pub struct SimHandle {
    engine: Arc<Engine>,
    /// The shared listener (also first in `listeners`).
    shared: Arc<ListenerCtl>,
    listeners: Vec<Arc<ListenerCtl>>,
    has_managed_identity: bool,
    outage_task: Option<actix_rt::task::JoinHandle<()>>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("listeners", &self.listeners())
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    fn shared(&self) -> &ListenerCtl {
        &self.shared
    }

    /// The shared listener's base URL, `http://127.0.0.1:PORT/` (with the trailing slash;
    /// `https://` with `tls:`).
    pub fn base_url(&self) -> String {
        self.shared().url()
    }

    /// The base URL of the listener serving `deployment`.
    pub fn endpoint_for(&self, deployment: &str) -> Option<String> {
        self.listener_of(deployment).map(|listener| listener.url())
    }

    /// The URL to put in `IDENTITY_ENDPOINT` when a managed identity is configured (use the
    /// configured `identity_header` as `IDENTITY_HEADER`).
    pub fn managed_identity_endpoint(&self) -> Option<String> {
        self.has_managed_identity.then(|| {
            format!(
                "{}://{}/msi/token",
                self.shared().scheme(),
                self.shared().addr
            )
        })
    }

    /// Every listener: URL and deployments, the shared one first.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.listeners
            .iter()
            .map(|listener| ListenerInfo {
                url: listener.url(),
                shared: listener.is_shared(),
                deployments: listener.deployments.clone(),
            })
            .collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.engine.stats()
    }

    pub(crate) fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// The simulator's time: since start on the real clock, or as moved by
    /// [`advance_clock`](Self::advance_clock).
    pub fn elapsed(&self) -> Duration {
        self.engine.clock().elapsed()
    }

    /// Move a manual clock (`clock: manual`) forward, then open or close listeners whose
    /// refuse outages start or end. Quota windows and outages follow at once.
    pub async fn advance_clock(&self, by: Duration) -> Result<(), SimError> {
        if !self.engine.clock().advance(by) {
            return Err(SimError::RealClock);
        }
        for listener in &self.listeners {
            if !listener.is_shared() {
                listener.reconcile().await?;
            }
        }
        Ok(())
    }

    /// Take the listener of `deployment` down (`true`: its socket is closed, connections are
    /// refused) or bring it back up on the same port (`false`). This overrides its outage
    /// schedule from now on. The deployment must have its own listener.
    pub async fn set_refusing(&self, deployment: &str, refusing: bool) -> Result<(), SimError> {
        let listener = self
            .listener_of(deployment)
            .ok_or_else(|| SimError::UnknownDeployment(deployment.to_owned()))?;
        if listener.is_shared() {
            return Err(SimError::SharedListener(deployment.to_owned()));
        }
        *listener
            .forced_refusing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(refusing);
        listener.reconcile().await
    }

    fn listener_of(&self, deployment: &str) -> Option<&ListenerCtl> {
        let key = &self.engine.deployment(deployment)?.listener;
        self.listeners
            .iter()
            .map(Arc::as_ref)
            .find(|listener| &listener.ctx.key == key)
    }

    /// Stop every listener at once (open connections are closed, hung requests dropped).
    pub async fn stop(mut self) {
        if let Some(task) = self.outage_task.take() {
            task.abort();
        }
        for listener in &self.listeners {
            listener.stop().await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(task) = self.outage_task.take() {
            task.abort();
        }
    }
}

/// Start the simulator: bind its listeners on the current actix runtime and serve until
/// [`SimHandle::stop`].
pub(crate) async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    config.validate()?;
    let clock = match config.clock {
        ClockMode::Real => SimClock::real(Instant::now()),
        ClockMode::Manual => SimClock::manual(),
    };
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    let engine = Arc::new(Engine::new(&config, clock.clone()));
    let shared_addr: SocketAddr = config
        .bind
        .parse()
        .map_err(|_| SimError::Invalid(format!("bind: {:?} is not an address", config.bind)))?;

    // Listener keys in order of first appearance, the shared one first.
    let mut keys: Vec<(String, Vec<String>)> = vec![(SHARED_LISTENER.to_owned(), Vec::new())];
    for spec in &config.deployments {
        let key = crate::engine::listener_key(spec);
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(spec.name.clone()),
            None => keys.push((key, vec![spec.name.clone()])),
        }
    }

    let mut listeners: Vec<Arc<ListenerCtl>> = Vec::with_capacity(keys.len());
    for (index, (key, deployments)) in keys.into_iter().enumerate() {
        let ctx = web::Data::new(ListenerCtx {
            engine: Arc::clone(&engine),
            key,
        });
        let want = if index == 0 {
            shared_addr
        } else {
            SocketAddr::new(shared_addr.ip(), 0)
        };
        let started = launch(ctx.clone(), want, config.workers, tls.clone());
        let (server, addr) = match started {
            Ok(started) => started,
            Err(err) => {
                for listener in &listeners {
                    listener.stop().await;
                }
                return Err(err);
            }
        };
        listeners.push(Arc::new(ListenerCtl {
            ctx,
            addr,
            tls: tls.clone(),
            deployments,
            workers: config.workers,
            running: tokio::sync::Mutex::new(Some(server)),
            forced_refusing: Mutex::new(None),
        }));
    }

    let Some(shared) = listeners.first().cloned() else {
        return Err(SimError::Invalid("no listener was created".to_owned()));
    };
    let handle = SimHandle {
        engine,
        shared,
        has_managed_identity: config.managed_identity.is_some(),
        outage_task: outage_task(&config, &clock, &listeners),
        listeners,
    };
    for listener in handle.listeners.iter().skip(1) {
        listener.reconcile().await?;
    }
    Ok(handle)
}

/// On the real clock, a task that opens and closes listeners when refuse outages start and end.
fn outage_task(
    config: &SimConfig,
    clock: &SimClock,
    listeners: &[Arc<ListenerCtl>],
) -> Option<actix_rt::task::JoinHandle<()>> {
    let SimClock::Real { start } = clock else {
        return None;
    };
    let transitions: BTreeSet<u64> = config
        .deployments
        .iter()
        .flat_map(|spec| &spec.outages)
        .filter(|outage| outage.mode == OutageMode::Refuse)
        .flat_map(|outage| [outage.from_secs, outage.to_secs])
        .collect();
    if transitions.is_empty() {
        return None;
    }
    let start = *start;
    let listeners: Vec<Arc<ListenerCtl>> = listeners.iter().skip(1).cloned().collect();
    Some(actix_rt::spawn(async move {
        for secs in transitions {
            let at = start + Duration::from_secs(secs);
            actix_rt::time::sleep_until(at.into()).await;
            for listener in &listeners {
                if let Err(err) = listener.reconcile().await {
                    tracing::error!(listener = %listener.ctx.key, "outage schedule: {err}");
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_finds_exact_keys() {
        let query = "x-api-version=1&api-version=2024-10-21&flag";
        assert_eq!(query_param(query, "api-version"), Some("2024-10-21"));
        assert_eq!(query_param(query, "flag"), Some(""));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(query_param("", "api-version"), None);
    }
}
