//! What the simulator answers: authentication, routing, outages, quota, faults and the reply,
//! decided without any HTTP server (the server only carries the decision out).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::azure_error::{self, AzureError};
use crate::clock::SimClock;
use crate::config::{
    DeploymentSpec, Listener, ManagedIdentitySpec, OutageMode, OutageSpec, RemainingHeaders,
    SimConfig, TrickleEvent,
};
use crate::content::{PADDING_MAX, ReplyText, completion_length, messages_digest, padding};
use crate::faults::{Fault, outage_at, pick_fault};
use crate::quota::{self, Admitted, DeploymentLimiter, LimitKind, Rejected};
use crate::reply::{ChoiceText, Delta, ReplyMeta, Usage, completion_body, delta_event};
use crate::request::{Api, ApiRequest, ChatRequest, InvalidRequest, parse_request};
use crate::retry_after::{RetryWait, retry_headers};
use crate::stats::{Counters, FaultCounter, SimStats};
use crate::stream::{Extra, Pacing, StreamEnd, StreamPlan, padded_body, plan_stream, trickle_body};

/// The key of the main listener.
pub(crate) const SHARED_LISTENER: &str = "shared";

/// The listener a deployment is served on.
pub(crate) fn listener_key(spec: &DeploymentSpec) -> String {
    match &spec.listener {
        Listener::Shared => SHARED_LISTENER.to_owned(),
        Listener::Own => format!("own:{}", spec.name),
        Listener::Named(name) => format!("named:{name}"),
    }
}

/// A deployment's live state.
#[derive(Debug)]
pub(crate) struct DeploymentState {
    pub(crate) spec: DeploymentSpec,
    pub(crate) listener: String,
    core: Mutex<Core>,
    pub(crate) counters: Counters,
}

#[derive(Debug)]
struct Core {
    limiter: DeploymentLimiter,
    rng: StdRng,
}

/// Counts a request in flight until dropped (with the reply body, for streams).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<DeploymentState>);

impl InFlight {
    fn enter(deployment: &Arc<DeploymentState>) -> Self {
        deployment.counters.enter();
        InFlight(Arc::clone(deployment))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.leave();
    }
}

/// Which route style a request came in on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route<'a> {
    /// `/openai/deployments/{name}/{api}?api-version=...`
    Deployment {
        name: &'a str,
        api_version: Option<&'a str>,
    },
    /// `/openai/v1/{api}` (deployment in `model`).
    V1 { api_version: Option<&'a str> },
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Credentials<'a> {
    pub(crate) api_key: Option<&'a str>,
    pub(crate) bearer: Option<&'a str>,
}

/// A request as the server received it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiCall<'a> {
    pub(crate) listener: &'a str,
    pub(crate) api: Api,
    pub(crate) route: Route<'a>,
    pub(crate) credentials: Credentials<'a>,
    /// Whether it came over HTTP/2 (else HTTP/1.x).
    pub(crate) http2: bool,
    pub(crate) body: &'a [u8],
}

/// The body of a reply.
#[derive(Debug)]
pub(crate) enum Body {
    /// All at once.
    Full(Bytes),
    /// Server-sent events.
    Stream(StreamPlan),
    /// `Content-Length` of the whole body, but only the first `sent` bytes, then abort.
    Torn { body: Bytes, sent: usize },
    /// A plan that ends, sent with the `Content-Length` of all its bytes.
    Sized(StreamPlan),
}

/// What to answer, and after how long.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Body,
    /// Wait this long before sending anything.
    pub(crate) delay: Duration,
    /// Held until the reply is sent (moved into a stream body).
    pub(crate) in_flight: Option<InFlight>,
}

const JSON: &str = "application/json";

impl Decision {
    fn error(err: AzureError, request_id: &str) -> Self {
        Decision {
            status: err.status,
            headers: base_headers(JSON, request_id),
            body: Body::Full(err.body),
            delay: Duration::ZERO,
            in_flight: None,
        }
    }
}

fn base_headers(content_type: &'static str, request_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", content_type.to_owned()),
        ("x-request-id", request_id.to_owned()),
        ("apim-request-id", request_id.to_owned()),
    ]
}

/// The simulator's state shared by every listener and worker (no `Debug`: it holds the keys).
pub(crate) struct Engine {
    clock: SimClock,
    deployments: HashMap<String, Arc<DeploymentState>>,
    api_keys: HashSet<String>,
    bearer_tokens: HashSet<String>,
    managed_identity: Option<ManagedIdentitySpec>,
    unrouted: Counters,
    next_request: AtomicU64,
    id_prefix: u32,
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Engine {
    pub(crate) fn new(config: &SimConfig, clock: SimClock) -> Self {
        let deployments = config
            .deployments
            .iter()
            .map(|spec| {
                let limits = spec.limits(config);
                let state = DeploymentState {
                    spec: spec.clone(),
                    listener: listener_key(spec),
                    core: Mutex::new(Core {
                        limiter: DeploymentLimiter::new(limits),
                        rng: StdRng::seed_from_u64(config.seed ^ name_hash(&spec.name)),
                    }),
                    counters: Counters::default(),
                };
                (spec.name.clone(), Arc::new(state))
            })
            .collect();
        let mut bearer_tokens: HashSet<String> = config.bearer_tokens.iter().cloned().collect();
        if let Some(mi) = &config.managed_identity {
            bearer_tokens.insert(mi.access_token.clone());
        }
        Engine {
            clock,
            deployments,
            api_keys: config.api_keys.iter().cloned().collect(),
            bearer_tokens,
            managed_identity: config.managed_identity.clone(),
            unrouted: Counters::default(),
            next_request: AtomicU64::new(1),
            id_prefix: (config.seed & 0xffff_ffff) as u32,
        }
    }

    pub(crate) fn clock(&self) -> &SimClock {
        &self.clock
    }

    pub(crate) fn deployment(&self, name: &str) -> Option<&Arc<DeploymentState>> {
        self.deployments.get(name)
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            deployments: self
                .deployments
                .iter()
                .map(|(name, state)| (name.clone(), state.counters.snapshot()))
                .collect(),
            unrouted: self.unrouted.snapshot(),
        }
    }

    fn request_id(&self) -> (u64, String) {
        let number = self.next_request.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-0000-4000-8000-{:012x}", self.id_prefix, number);
        (number, id)
    }

    fn authorize(&self, credentials: Credentials<'_>) -> Result<(), AzureError> {
        if credentials
            .api_key
            .is_some_and(|key| self.api_keys.contains(key))
        {
            return Ok(());
        }
        match credentials.bearer {
            Some(token) if self.bearer_tokens.contains(token) => Ok(()),
            Some(_) => Err(azure_error::invalid_token()),
            None => Err(azure_error::invalid_key()),
        }
    }

    /// Decide the answer to a request (chat, embeddings or responses).
    pub(crate) fn call(&self, call: ApiCall<'_>) -> Decision {
        let (number, request_id) = self.request_id();
        let served_here = |name: &str| {
            self.deployments
                .get(name)
                .filter(|deployment| deployment.listener == call.listener)
        };
        let (deployment, parsed, api_version) = match call.route {
            Route::Deployment { name, api_version } => (served_here(name), None, api_version),
            Route::V1 { api_version } => {
                let parsed = parse_request(call.api, call.body);
                let deployment = parsed
                    .as_ref()
                    .ok()
                    .and_then(ApiRequest::model)
                    .and_then(served_here);
                (deployment, Some(parsed), Some(api_version.unwrap_or("v1")))
            }
        };
        let counters = deployment.map_or(&self.unrouted, |d| &d.counters);
        counters.request(call.http2);
        let in_flight = deployment.map(InFlight::enter);

        let early = || -> Result<(&Arc<DeploymentState>, &str), AzureError> {
            self.authorize(call.credentials)?;
            let api_version = api_version
                .filter(|version| !version.is_empty())
                .ok_or_else(azure_error::missing_api_version)?;
            if let Some(Err(invalid)) = &parsed {
                return Err(azure_error::bad_request(invalid));
            }
            if let Some(Ok(request)) = &parsed
                && request.model().is_none()
            {
                return Err(azure_error::missing_model());
            }
            let deployment = deployment.ok_or_else(azure_error::deployment_not_found)?;
            Ok((deployment, api_version))
        };
        let mut decision = match early() {
            Err(err) => {
                counters.status(err.status);
                Decision::error(err, &request_id)
            }
            Ok((deployment, api_version)) => {
                let request = match parsed {
                    Some(Ok(request)) => Ok(request),
                    _ => parse_request(call.api, call.body),
                };
                self.serve(deployment, api_version, request, number, &request_id)
            }
        };
        decision.in_flight = in_flight;
        decision
    }

    fn serve(
        &self,
        deployment: &DeploymentState,
        api_version: &str,
        request: Result<ApiRequest, InvalidRequest>,
        number: u64,
        request_id: &str,
    ) -> Decision {
        let counters = &deployment.counters;
        let spec = &deployment.spec;
        let fail = |err: AzureError| {
            counters.status(err.status);
            Decision::error(err, request_id)
        };
        let elapsed = self.clock.elapsed();
        if let Some(outage) = outage_at(&spec.outages, elapsed) {
            return outage_reply(deployment, outage, elapsed, api_version, request_id);
        }
        let request = match request {
            Ok(request) => request,
            Err(invalid) => return fail(azure_error::bad_request(&invalid)),
        };
        let (prompt_tokens, cost) = match &request {
            ApiRequest::Chat(chat) => (
                quota::estimate_prompt_tokens(chat.message_list()),
                spec.charge(chat.message_list(), chat.max_tokens, chat.n, chat.best_of),
            ),
            // Azure charges embeddings by their input tokens alone.
            ApiRequest::Embeddings(embeddings) => {
                let tokens = embeddings.input_tokens();
                (tokens, tokens)
            }
            ApiRequest::Responses(responses) => (
                quota::estimate_prompt_tokens(&responses.messages),
                spec.charge(&responses.messages, responses.max_output_tokens, 1, None),
            ),
        };
        let (admitted, draw, jitter) = match admit(deployment, elapsed, cost) {
            Ok(admitted) => admitted,
            Err(rejected) => {
                counters.refused(rejected.kind);
                let wait = RetryWait::Exact(rejected.retry_after);
                return rate_limited(deployment, request_id, api_version, rejected, wait);
            }
        };
        counters.charged(cost);
        let admission = Admission {
            deployment,
            request_id,
            number,
            admitted,
            jitter,
        };
        let fault = pick_fault(&spec.faults, request.stream(), draw);
        match (fault_reply(&admission, fault, api_version), request) {
            (Some(decision), _) => decision,
            (None, ApiRequest::Chat(chat)) => success(&admission, &chat, prompt_tokens, fault),
            (None, ApiRequest::Embeddings(embeddings)) => {
                operations::embeddings_success(&admission, &embeddings, prompt_tokens, fault)
            }
            (None, ApiRequest::Responses(responses)) => {
                operations::responses_success(&admission, &responses, prompt_tokens, fault)
            }
        }
    }

    /// Answer the managed-identity token endpoint (App Service protocol).
    pub(crate) fn msi_token(
        &self,
        query: &HashMap<String, String>,
        identity_header: Option<&str>,
    ) -> (u16, Bytes) {
        let reply = |status: u16, body: serde_json::Value| (status, Bytes::from(body.to_string()));
        let Some(mi) = &self.managed_identity else {
            let err = azure_error::resource_not_found();
            return (err.status, err.body);
        };
        if identity_header != Some(mi.identity_header.as_str()) {
            return reply(
                401,
                json!({"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER."}),
            );
        }
        if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
            return reply(
                400,
                json!({"statusCode": 400, "message": "api-version must be 2019-08-01 for this endpoint."}),
            );
        }
        let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
            return reply(
                400,
                json!({"statusCode": 400, "message": "The resource query parameter is required."}),
            );
        };
        let expires_on = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
            + mi.expires_in_secs;
        reply(
            200,
            json!({
                "access_token": mi.access_token,
                "expires_on": expires_on.to_string(),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": query.get("client_id").cloned().unwrap_or_default(),
            }),
        )
    }

    /// Whether a listener should refuse connections now because of a scheduled outage.
    pub(crate) fn refuse_scheduled(&self, listener: &str) -> bool {
        let elapsed = self.clock.elapsed();
        self.deployments.values().any(|deployment| {
            deployment.listener == listener
                && outage_at(&deployment.spec.outages, elapsed)
                    .is_some_and(|outage| outage.mode == OutageMode::Refuse)
        })
    }
}

/// One admitted request on its way to a reply.
struct Admission<'a> {
    deployment: &'a DeploymentState,
    request_id: &'a str,
    number: u64,
    admitted: Admitted,
    /// Added to the time to first token.
    jitter: Duration,
}

/// Check the quota and, when admitted, draw the fault and the jitter (under one lock, so the
/// seeded draws follow the admission order).
fn admit(
    deployment: &DeploymentState,
    elapsed: Duration,
    cost: u64,
) -> Result<(Admitted, f64, Duration), Rejected> {
    let mut core = deployment
        .core
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let admitted = core.limiter.check(elapsed, cost)?;
    let draw: f64 = core.rng.random();
    let jitter_ms = deployment.spec.latency.jitter_ms;
    let jitter = if jitter_ms > 0 {
        Duration::from_micros(core.rng.random_range(0..=jitter_ms * 1000))
    } else {
        Duration::ZERO
    };
    Ok((admitted, draw, jitter))
}

/// The reply of a fault that replaces the completion, if `fault` is one; faults that spoil a
/// completion (drops, cut streams) are counted here and carried out by [`success`].
fn fault_reply(
    admission: &Admission<'_>,
    fault: Option<Fault>,
    api_version: &str,
) -> Option<Decision> {
    let Admission {
        deployment,
        request_id,
        ..
    } = *admission;
    let counters = &deployment.counters;
    let fail = |err: AzureError| {
        counters.status(err.status);
        Some(Decision::error(err, request_id))
    };
    match fault? {
        Fault::Internal => fail(azure_error::internal_error()),
        Fault::Overloaded => fail(azure_error::engine_overloaded()),
        Fault::ContentFilter => {
            counters.fault(FaultCounter::ContentFilter);
            fail(azure_error::content_filtered())
        }
        Fault::Hang => {
            counters.fault(FaultCounter::Hang);
            let mut decision = Decision::error(azure_error::timeout(), request_id);
            decision.delay = Duration::from_secs(deployment.spec.faults.hang_secs);
            Some(decision)
        }
        Fault::NotJson => {
            counters.fault(FaultCounter::NotJson);
            counters.status(200);
            Some(Decision {
                status: 200,
                headers: base_headers(JSON, request_id),
                body: Body::Full(Bytes::from_static(azure_error::NOT_JSON_BODY.as_bytes())),
                delay: Duration::ZERO,
                in_flight: None,
            })
        }
        Fault::Throttled => {
            let rejected = Rejected {
                retry_after: Duration::ZERO,
                kind: LimitKind::Tokens,
                remaining_requests: admission.admitted.remaining_requests,
                remaining_tokens: 0,
            };
            let wait = RetryWait::from_secs_f64(deployment.spec.faults.retry_after());
            Some(rate_limited(
                deployment,
                request_id,
                api_version,
                rejected,
                wait,
            ))
        }
        Fault::Drop => {
            counters.fault(FaultCounter::Drop);
            None
        }
        Fault::StreamCut => {
            counters.fault(FaultCounter::StreamCut);
            None
        }
        Fault::StreamError => {
            counters.fault(FaultCounter::StreamError);
            None
        }
        Fault::StreamStall => {
            counters.fault(FaultCounter::StreamStall);
            None
        }
    }
}

/// The completion (plain or streamed), spoiled by `fault` when it is a drop or a stream fault.
fn success(
    admission: &Admission<'_>,
    request: &ChatRequest,
    prompt_tokens: u64,
    fault: Option<Fault>,
) -> Decision {
    let spec = &admission.deployment.spec;
    let counters = &admission.deployment.counters;
    let digest = messages_digest(&request.messages);
    let (tokens, finish_reason) = completion_length(spec.reply_tokens, request.max_tokens);
    let choices: Vec<ChoiceText> = (0..request.n)
        .map(|index| ChoiceText {
            text: ReplyText::new(&digest, index, tokens),
            finish_reason,
        })
        .collect();
    let usage = Usage::new(prompt_tokens, tokens * request.n);
    counters.used(usage.total_tokens);
    counters.status(200);
    let meta = ReplyMeta {
        id: format!("chatcmpl-sim{:012x}", admission.number),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        model: spec.model_name().to_owned(),
    };
    let first_token = Duration::from_millis(spec.latency.ttft_ms) + admission.jitter;
    let per_token = Duration::from_millis(spec.latency.per_token_ms);
    let headers = success_headers(request.stream, admission);
    let (body, delay) = if request.stream {
        let pacing = Pacing {
            first_token,
            per_token,
        };
        let usage = request.include_usage.then_some(usage);
        let extra = stream_extra(spec, &meta);
        let mut plan = plan_stream(&meta, &choices, pacing, usage, fault, extra);
        if fault == Some(Fault::StreamStall) {
            plan.end = StreamEnd::StallThenAbort(Duration::from_secs(spec.faults.hang_secs));
        }
        (Body::Stream(plan), Duration::ZERO)
    } else {
        let body = completion_body(&meta, &choices, usage);
        let delay = first_token + per_token * u32::try_from(tokens).unwrap_or(u32::MAX);
        let body = if fault == Some(Fault::Drop) {
            let sent = body.len() / 2;
            Body::Torn { body, sent }
        } else {
            plain_body(spec, body, &choices)
        };
        (body, delay)
    };
    Decision {
        status: 200,
        headers,
        body,
        delay,
        in_flight: None,
    }
}

/// Content delta of padding in a padded stream.
const STREAM_PAD_PIECE: usize = 16 * 1024;
/// What a trickling stream sends with `event: comment`.
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// The trickle or padding of a successful stream (nothing unless configured).
fn stream_extra(spec: &DeploymentSpec, meta: &ReplyMeta) -> Extra {
    if let Some(trickle) = &spec.trickle {
        let piece = match trickle.event {
            TrickleEvent::Comment => Bytes::from_static(KEEP_ALIVE_COMMENT),
            TrickleEvent::Delta => delta_event(meta, 0, Delta::Content(" tick")),
        };
        return Extra::Trickle {
            piece,
            every: Duration::from_millis(trickle.interval_ms),
            count: trickle.pieces(),
        };
    }
    if spec.reply_bytes > 0 {
        let piece = delta_event(meta, 0, Delta::Content(padding(STREAM_PAD_PIECE)));
        return Extra::Pad {
            piece,
            bytes: spec.reply_bytes,
        };
    }
    Extra::None
}

/// A plain reply's body: as is, after a trickle of spaces, or with its first choice's content
/// padded to reach `reply_bytes`.
fn plain_body(spec: &DeploymentSpec, body: Bytes, choices: &[ChoiceText]) -> Body {
    if let Some(trickle) = &spec.trickle {
        let every = Duration::from_millis(trickle.interval_ms);
        let count = trickle.pieces();
        let plan = trickle_body(body, Bytes::from_static(b" "), every, count);
        return match count {
            Some(_) => Body::Sized(plan),
            None => Body::Stream(plan),
        };
    }
    if spec.reply_bytes > body.len() as u64 {
        // The content is plain ASCII written as is: find where it ends in the JSON.
        let content = choices
            .first()
            .map_or("", |choice| choice.text.content.as_str());
        let at = find(&body, content.as_bytes()).map_or(0, |start| start + content.len());
        let piece = Bytes::from_static(padding(PADDING_MAX).as_bytes());
        return Body::Sized(padded_body(body, at, piece, spec.reply_bytes));
    }
    Body::Full(body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn success_headers(stream: bool, admission: &Admission<'_>) -> Vec<(&'static str, String)> {
    let content_type = if stream { "text/event-stream" } else { JSON };
    let mut headers = base_headers(content_type, admission.request_id);
    let admitted = &admission.admitted;
    push_remaining(
        &mut headers,
        admission.deployment.spec.remaining_headers,
        admitted.remaining_requests,
        admitted.remaining_tokens,
    );
    headers
}

/// The `x-ratelimit-remaining-*` headers: what is left (the request header only under a
/// request limit), or `-1` in both when the deployment's remaining counts are unknown.
fn push_remaining(
    headers: &mut Vec<(&'static str, String)>,
    mode: RemainingHeaders,
    requests: Option<u64>,
    tokens: u64,
) {
    match mode {
        RemainingHeaders::Exact => {
            headers.push(("x-ratelimit-remaining-tokens", tokens.to_string()));
            if let Some(remaining) = requests {
                headers.push(("x-ratelimit-remaining-requests", remaining.to_string()));
            }
        }
        RemainingHeaders::Unknown => {
            headers.push(("x-ratelimit-remaining-tokens", "-1".to_owned()));
            headers.push(("x-ratelimit-remaining-requests", "-1".to_owned()));
        }
    }
}

/// The reply during a scheduled outage (a `refuse` listener may still let a request in while
/// it is being closed: 503 too).
fn outage_reply(
    deployment: &DeploymentState,
    outage: &OutageSpec,
    elapsed: Duration,
    api_version: &str,
    request_id: &str,
) -> Decision {
    let err = match outage.mode {
        OutageMode::Status503 | OutageMode::Refuse => azure_error::outage(),
        OutageMode::Status401 => azure_error::invalid_key(),
        OutageMode::Status403 => azure_error::permission_denied(),
        OutageMode::Status404 => azure_error::deployment_not_found(),
        OutageMode::Status429 => {
            let left = Duration::from_secs(outage.to_secs).saturating_sub(elapsed);
            let rejected = Rejected {
                retry_after: left,
                kind: LimitKind::Tokens,
                remaining_requests: None,
                remaining_tokens: 0,
            };
            let wait = RetryWait::Exact(left);
            return rate_limited(deployment, request_id, api_version, rejected, wait);
        }
    };
    deployment.counters.status(err.status);
    Decision::error(err, request_id)
}

/// A 429 with the deployment's retry headers naming `wait` (Azure's: `retry-after` in whole
/// seconds, rounded up, and `retry-after-ms`), and what is left of the quota.
fn rate_limited(
    deployment: &DeploymentState,
    request_id: &str,
    api_version: &str,
    rejected: Rejected,
    wait: RetryWait,
) -> Decision {
    let (retry_headers, retry_secs) = retry_headers(deployment.spec.retry_headers, wait);
    let err = azure_error::rate_limited(api_version, rejected.kind, retry_secs.as_deref());
    deployment.counters.status(err.status);
    let mut decision = Decision::error(err, request_id);
    decision.headers.extend(retry_headers);
    push_remaining(
        &mut decision.headers,
        deployment.spec.remaining_headers,
        rejected.remaining_requests,
        rejected.remaining_tokens,
    );
    decision
}

mod operations;
#[cfg(test)]
mod tests;
