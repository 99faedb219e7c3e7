//! `POST .../chat/completions`: key, body, route, room in the queue, then the job; the reply is
//! the upstream completion (or, for `stream: true`, its deltas as they come: [`crate::stream`]).

use std::time::{Duration, Instant};

use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use aoai_blaster::core::gateway::{GatewayError, Route};
use aoai_blaster::core::operation::JobRequest;
use aoai_blaster::core::operation::Reply;
use aoai_blaster::{ChatJob, ChatRequest, Job, JobError, JobErrorKind, JobResult};
use bytes::Bytes;
use serde_json::Value;

use crate::app::{authorize, refuse};
use crate::disconnect::{peer, unless_gone};
use crate::state::{Permit, State};
use crate::{metrics, reply, stream};

/// The label of these requests in metrics.
pub(crate) const ROUTE: &str = "chat";

/// The largest request body taken (long prompts, images as data URLs).
pub(crate) const MAX_BODY_BYTES: usize = 64 << 20;

/// The header naming the deployment that answered.
pub(crate) static DEPLOYMENT_HEADER: HeaderName =
    HeaderName::from_static("x-aoai-blaster-deployment");

/// The upstream's request id, passed on.
static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A request body, split into routing and the job's request.
struct Parsed {
    /// The deployment, model or alias asked for (the path's, for Azure's form).
    model: Option<String>,
    request: ChatRequest,
    stream: bool,
    /// `stream_options.include_usage`: the client wants the usage chunk.
    include_usage: bool,
}

/// Handles one chat completion request; `path_model` is the `{name}` of Azure's form.
pub(crate) async fn handle(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<State>,
    path_model: Option<String>,
) -> HttpResponse {
    let started = Instant::now();
    if let Err(error) = authorize(&request, &state) {
        return refuse(ROUTE, &error, started);
    }
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(error) => return refuse(ROUTE, &error, started),
    };
    let parsed = match parse(&bytes, path_model) {
        Ok(parsed) => parsed,
        Err(error) => return refuse(ROUTE, &error, started),
    };
    let route = match state.routes.route(parsed.model.as_deref()) {
        Ok(route) => route,
        Err(known) => {
            let model = parsed.model.as_deref().unwrap_or_default();
            return refuse(ROUTE, &GatewayError::unknown_model(model, &known), started);
        }
    };
    let Some(permit) = state.admit() else {
        let error = state.queue_full(&route).await;
        return refuse(ROUTE, &error, started);
    };
    let stream = parsed.stream.then_some(stream::StreamKind::Chat {
        include_usage: parsed.include_usage,
    });
    let job = ChatJob::new(parsed.request).into_job();
    // A completion goes back as the upstream's bytes (nothing here reads it); a stream's
    // deltas are relayed chunk by chunk.
    let job = if stream.is_some() {
        job
    } else {
        job.with_raw_reply()
    };
    let admitted = Admitted {
        state,
        route,
        permit,
        label: ROUTE,
        started,
    };
    answer(&request, admitted, job, stream).await
}

/// A request past its key, body, route and the queue's bound.
pub(crate) struct Admitted {
    pub(crate) state: web::Data<State>,
    pub(crate) route: Route,
    pub(crate) permit: Permit,
    /// The route's label in metrics.
    pub(crate) label: &'static str,
    pub(crate) started: Instant,
}

/// Sends an admitted request's job (pinned where the route pins it) and answers with its
/// result: relayed as a stream of `stream`'s kind, or as the upstream's reply.
pub(crate) async fn answer(
    request: &HttpRequest,
    admitted: Admitted,
    mut job: Job<JobRequest>,
    stream: Option<stream::StreamKind>,
) -> HttpResponse {
    let Admitted {
        state,
        route,
        permit,
        label,
        started,
    } = admitted;
    if let Route::Pin(pin) = &route {
        job = job.pinned_to(pin.clone());
    }
    let peer = peer(request);
    if let Some(kind) = stream {
        let call = stream::StreamCall {
            kind,
            state,
            route,
            peer,
            permit,
            started,
        };
        return stream::respond(call, job).await;
    }
    let answer = unless_gone(peer.as_ref(), state.dispatcher.send(job)).await;
    drop(permit);
    match answer {
        // Nobody reads this reply; the job was dropped (unsent) or runs on unheard.
        None => client_gone(label, started),
        Some(Err(_)) => refuse(label, &closing(), started),
        Some(Ok(Ok(result))) => relayed(label, &result, started),
        Some(Ok(Err(error))) => {
            let answer = job_failed(&state, &route, &error).await;
            refuse_after(label, &answer, &error, started)
        }
    }
}

/// The body, at most [`MAX_BODY_BYTES`] of it.
pub(crate) async fn read_body(body: web::Payload) -> Result<Bytes, GatewayError> {
    match body.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => Err(GatewayError::invalid_body(format!(
            "cannot read the body: {error}"
        ))),
        Err(_) => Err(GatewayError::new(
            413,
            "invalid_request_error",
            "body_too_large",
            format!("the body is larger than {} MiB", MAX_BODY_BYTES >> 20),
        )),
    }
}

/// The body as a JSON object without its `model` (for the gateway's routing), and that model;
/// `what` names the object expected.
pub(crate) fn body_model(
    bytes: &[u8],
    what: &str,
) -> Result<(Option<String>, Value), GatewayError> {
    let mut body: Value = serde_json::from_slice(bytes).map_err(|error| {
        GatewayError::invalid_body(format!("the body is not JSON ({error}); send {what}"))
    })?;
    let Some(fields) = body.as_object_mut() else {
        return Err(GatewayError::invalid_body(format!(
            "the body must be a JSON object: send {what}"
        )));
    };
    let model = match fields.remove("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(model)) => Some(model),
        Some(other) => {
            return Err(GatewayError::invalid_body(format!(
                "\"model\" must be a string naming a model or deployment, got {other}"
            )));
        }
    };
    Ok((model, body))
}

/// Splits the body: `model` and `stream` are for the gateway, the rest goes upstream.
fn parse(bytes: &[u8], path_model: Option<String>) -> Result<Parsed, GatewayError> {
    let what = "a chat completion request object with a \"messages\" list";
    let (body_model, mut body) = body_model(bytes, what)?;
    let Some(fields) = body.as_object_mut() else {
        return Err(GatewayError::invalid_body(what));
    };
    let stream = match fields.remove("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => {
            return Err(GatewayError::invalid_body(format!(
                "\"stream\" must be true or false, got {other}"
            )));
        }
    };
    let include_usage = fields
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let request = ChatRequest::from_body(body)
        .map_err(|error| GatewayError::invalid_body(error.to_string()))?;
    Ok(Parsed {
        model: path_model.or(body_model),
        request,
        stream,
        include_usage,
    })
}

/// Upstream time of a delivered job: every attempt's HTTP call.
pub(crate) fn upstream_time(total_time: Duration, queued_for: Duration) -> Duration {
    total_time.saturating_sub(queued_for)
}

/// The upstream body as the reply (byte for byte when the job kept it raw), with the
/// deployment, the upstream request id and the overhead.
pub(crate) fn relayed(route: &'static str, result: &JobResult, started: Instant) -> HttpResponse {
    let body = match &result.reply {
        Reply::Raw(raw) => raw.body().clone(),
        typed => match typed.to_json() {
            Ok(json) => Bytes::from(String::from(Box::<str>::from(json))),
            Err(_) => {
                let error =
                    GatewayError::new(500, "server_error", "internal", "cannot write the reply");
                return refuse(route, &error, started);
            }
        },
    };
    let mut answer = HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body);
    described(&mut answer, &result.endpoint, result.request_id.as_deref());
    let upstream = upstream_time(result.total_time, result.queued_for);
    let overhead = started.elapsed().saturating_sub(upstream);
    reply::overhead(&mut answer, overhead);
    metrics::answered(route, 200, overhead);
    answer
}

/// Names the answering deployment and the upstream request id on a reply.
pub(crate) fn described(answer: &mut HttpResponse, endpoint: &str, request_id: Option<&str>) {
    let headers = answer.headers_mut();
    if let Ok(value) = HeaderValue::from_str(endpoint) {
        headers.insert(DEPLOYMENT_HEADER.clone(), value);
    }
    if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(REQUEST_ID_HEADER.clone(), value);
    }
}

/// The error a failed job answers, with when to come back for the kinds that wait.
pub(crate) async fn job_failed(state: &State, route: &Route, error: &JobError) -> GatewayError {
    let waits = matches!(
        error.kind,
        JobErrorKind::NoEndpointAvailable { .. } | JobErrorKind::RateLimited { .. }
    );
    let wait = if waits {
        state.room_in(route, None).await
    } else {
        None
    };
    GatewayError::from_job(error, wait)
}

/// A failed job's reply: its upstream attempts are not the gateway's overhead.
pub(crate) fn refuse_after(
    route: &'static str,
    answer: &GatewayError,
    error: &JobError,
    started: Instant,
) -> HttpResponse {
    let upstream: Duration = error.attempts.iter().map(|attempt| attempt.elapsed).sum();
    let mut reply = reply::error(answer);
    let overhead = started.elapsed().saturating_sub(upstream);
    reply::overhead(&mut reply, overhead);
    metrics::answered(route, answer.status, overhead);
    reply
}

/// The reply to a client that left (no one reads it; counted as 499).
pub(crate) fn client_gone(route: &'static str, started: Instant) -> HttpResponse {
    metrics::answered(route, 499, started.elapsed());
    reply::error(&GatewayError::from_job(
        &JobError::new(JobErrorKind::Cancelled, Vec::new()),
        None,
    ))
}

/// The Dispatcher is gone: the gateway is stopping.
pub(crate) fn closing() -> GatewayError {
    GatewayError::new(503, "server_error", "closing", "the gateway is stopping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_stay_here_and_the_rest_goes_upstream() {
        let body = br#"{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": true}, "seed": 7}"#;
        let parsed = parse(body, None).unwrap();
        assert_eq!(parsed.model.as_deref(), Some("gpt-4o"));
        assert!(parsed.stream && parsed.include_usage);
        assert_eq!(parsed.request.messages.len(), 1);
        let mut keys: Vec<&str> = parsed.request.options.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["seed", "stream_options"]);
        let azure = parse(
            br#"{"model": "ignored", "messages": []}"#,
            Some("east".into()),
        )
        .unwrap();
        assert_eq!(azure.model.as_deref(), Some("east"));
        assert!(!azure.stream);
    }

    #[test]
    fn bad_bodies_are_refused_with_what_to_send() {
        let message = |body: &[u8]| parse(body, None).err().map(|e| (e.status, e.message));
        let (status, text) = message(b"{not json").unwrap();
        assert_eq!(status, 400);
        assert!(text.starts_with("the body is not JSON"), "{text}");
        assert!(message(b"[1]").unwrap().1.contains("JSON object"));
        assert!(
            message(br#"{"messages": [], "stream": "yes"}"#)
                .unwrap()
                .1
                .contains("\"stream\"")
        );
        assert!(
            message(br#"{"messages": [], "model": 4}"#)
                .unwrap()
                .1
                .contains("\"model\"")
        );
        assert!(
            message(br#"{"model": "m"}"#)
                .unwrap()
                .1
                .contains("messages")
        );
    }
}
