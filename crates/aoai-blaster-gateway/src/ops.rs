//! `POST .../embeddings` and `POST .../responses`: thin routes over the library's operations.
//! Key, body, route and room in the queue as for chat ([`crate::chat`]); the reply is the
//! upstream body, byte for byte; a Responses stream's events are passed on as they come
//! ([`crate::stream`]).

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use aoai_blaster::Job;
use aoai_blaster::core::embeddings::EmbeddingsRequest;
use aoai_blaster::core::gateway::GatewayError;
use aoai_blaster::core::operation::JobRequest;
use aoai_blaster::core::responses::ResponsesRequest;
use serde_json::Value;

use crate::app::{authorize, refuse};
use crate::chat::{Admitted, answer, body_model, read_body};
use crate::state::State;
use crate::stream::StreamKind;

/// The operations these routes serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Embeddings,
    Responses,
}

impl Op {
    /// The label of its requests in metrics.
    fn route(self) -> &'static str {
        match self {
            Op::Embeddings => "embeddings",
            Op::Responses => "responses",
        }
    }

    /// The job's request from the body (`model` already taken out).
    fn request(self, body: Value) -> Result<JobRequest, GatewayError> {
        let invalid = |error: &dyn std::fmt::Display| GatewayError::invalid_body(error.to_string());
        Ok(match self {
            Op::Embeddings => EmbeddingsRequest::from_body(body)
                .map_err(|e| invalid(&e))?
                .into(),
            Op::Responses => ResponsesRequest::from_body(body)
                .map_err(|e| invalid(&e))?
                .into(),
        })
    }
}

/// Handles one embeddings or responses request; `path_model` is the `{name}` of Azure's form.
pub(crate) async fn handle(
    op: Op,
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<State>,
    path_model: Option<String>,
) -> HttpResponse {
    let started = Instant::now();
    let route_label = op.route();
    if let Err(error) = authorize(&request, &state) {
        return refuse(route_label, &error, started);
    }
    let parsed = match read_body(body).await.and_then(|bytes| parse(op, &bytes)) {
        Ok(parsed) => parsed,
        Err(error) => return refuse(route_label, &error, started),
    };
    let (body_model, job_request, stream) = parsed;
    let model = path_model.or(body_model);
    let route = match state.routes.route(model.as_deref()) {
        Ok(route) => route,
        Err(known) => {
            let model = model.as_deref().unwrap_or_default();
            let error = GatewayError::unknown_model(model, &known);
            return refuse(route_label, &error, started);
        }
    };
    let Some(permit) = state.admit() else {
        let error = state.queue_full(&route).await;
        return refuse(route_label, &error, started);
    };
    // The reply (or, streamed, each event) goes back as the upstream's bytes.
    let job = Job::new(job_request).with_raw_reply();
    let admitted = Admitted {
        state,
        route,
        permit,
        label: route_label,
        started,
    };
    answer(
        &request,
        admitted,
        job,
        stream.then_some(StreamKind::Responses),
    )
    .await
}

/// The body's `model` (for routing), the job's request and whether it asks for a stream
/// (Responses only: embeddings are never streamed).
fn parse(op: Op, bytes: &[u8]) -> Result<(Option<String>, JobRequest, bool), GatewayError> {
    let (model, mut body) = body_model(bytes, "an embeddings or responses request object")?;
    let mut stream = false;
    if let Some(fields) = body.as_object_mut() {
        match fields.remove("stream") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) if op == Op::Responses => stream = true,
            Some(Value::Bool(true)) => {
                return Err(GatewayError::invalid_body(
                    "embeddings are never streamed; send the request without \"stream\"",
                ));
            }
            Some(other) => {
                return Err(GatewayError::invalid_body(format!(
                    "\"stream\" must be true or false, got {other}"
                )));
            }
        }
    }
    Ok((model, op.request(body)?, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_may_stream_and_embeddings_may_not() {
        let (model, request, stream) = parse(
            Op::Responses,
            br#"{"model": "gpt", "input": "hi", "stream": true}"#,
        )
        .unwrap();
        assert_eq!((model.as_deref(), stream), (Some("gpt"), true));
        assert_eq!(request.operation(), aoai_blaster::Operation::Responses);
        let (_, _, plain) = parse(Op::Responses, br#"{"input": "hi", "stream": false}"#).unwrap();
        assert!(!plain);
        let refused = parse(Op::Embeddings, br#"{"input": "hi", "stream": true}"#).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(
            refused.message.contains("never streamed"),
            "{}",
            refused.message
        );
        let wrong = parse(Op::Responses, br#"{"input": "hi", "stream": "yes"}"#).unwrap_err();
        assert!(wrong.message.contains("true or false"), "{}", wrong.message);
    }
}
